"""Per-call cost of the Python SDK against the same operations in Rust, in one run.

    python bench.py [--iterations N] [--no-upstream]

Times, on a MiniLM-shaped embeddings call with an in-memory channel: `authorize` (sign a
fresh authorisation for the body) and verifying a JSON answer (both signatures, digests,
usage, the fee re-metered, the authorisation sent), through the binding
(`Channel.authorize`, `Channel.verify_json_answer`) and in Rust inside the same native
module (`tally_client::testkit::time_client_ops`, the same compiled code, called once).
Unless --no-upstream, it also starts the MiniLM upstream (bindings/testkit/upstream.py)
and measures its own p50 latency for a small embeddings request, to compare the SDK's
cost with.
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from tally_client import _native

HERE = os.path.dirname(os.path.abspath(__file__))


def per_op_us(fn, n):
    start = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - start) / n / 1000


def upstream_p50(n):
    with tempfile.TemporaryDirectory() as d:
        port_file = os.path.join(d, "port")
        python = os.environ.get("TALLY_PYTHON", sys.executable)  # one with numpy & co.
        proc = subprocess.Popen([python, os.path.join(HERE, "..", "testkit", "upstream.py"), port_file])
        try:
            while not os.path.exists(port_file):
                if proc.poll() is not None:
                    return None
                time.sleep(0.05)
            conn = http.client.HTTPConnection("127.0.0.1", int(open(port_file).read()))
            body = json.dumps({"model": "all-MiniLM-L6-v2", "input": "The quick brown fox jumps over the lazy dog, twice."})
            times = []
            for _ in range(n):
                start = time.perf_counter_ns()
                conn.request("POST", "/v1/embeddings", body, {"content-type": "application/json"})
                conn.getresponse().read()
                times.append((time.perf_counter_ns() - start) / 1000)
            return statistics.median(times)
        finally:
            proc.terminate()
            proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-upstream", action="store_true")
    args = ap.parse_args()
    n = args.iterations
    request, response, schedule, channel, host_seed = _native.bench_fixture()
    host = _native.TestHost(host_seed, "05" * 32)
    # Warm up both sides.
    _native.rust_bench(max(n // 10, 10))
    auth = channel.authorize(request)
    header = host.receipt_json(auth, schedule, request, response)
    per_op_us(lambda: channel.authorize(request), n // 10)
    # Rounds alternate binding and Rust; the best of each is reported (this machine is shared).
    runs = []
    for _ in range(args.rounds):
        py_a = per_op_us(lambda: channel.authorize(request), n)
        py_v = per_op_us(lambda: channel.verify_json_answer(request, header, response, authorization=auth), n)
        rs_a, rs_v = (x / 1000 for x in _native.rust_bench(n))
        runs.append((py_a, py_v, rs_a, rs_v))
    py_auth, py_verify, rust_auth, rust_verify = (min(r[i] for r in runs) for i in range(4))
    rows = [("authorize", py_auth, rust_auth), ("verify a JSON answer", py_verify, rust_verify)]
    print(f"tally_client (Python {sys.version.split()[0]}), best of {args.rounds} x {n} iterations, "
          f"request {len(request)} B, answer {len(response)} B")
    print(f"{'operation':<22} {'Python µs':>10} {'Rust µs':>10} {'overhead':>9}")
    for name, py, rs in rows:
        print(f"{name:<22} {py:>10.1f} {rs:>10.1f} {100 * (py - rs) / rs:>8.1f}%")
    both = py_auth + py_verify
    print(f"{'both, per call':<22} {both:>10.1f} {rust_auth + rust_verify:>10.1f}")
    if not args.no_upstream:
        p50 = upstream_p50(200)
        if p50 is not None:
            print(f"MiniLM upstream p50 {p50:.0f} µs: the SDK adds {100 * both / p50:.2f}% of it")


if __name__ == "__main__":
    main()
