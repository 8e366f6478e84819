"""Starts what the SDKs' tests pay through: the test upstream (upstream.py: MiniLM
embeddings and a streaming chat model) behind the real `tally proxy` binary, with a new
host key, a price schedule per model and a journal in DIR. Writes DIR/env.json, then runs
until SIGTERM/SIGINT (and stops both children) or until a child dies (exit 1).

env.json: {"proxy": "http://127.0.0.1:PORT", "host": HEX, "chain_id", "contract",
"models": {NAME: {"id": HEX, "schedule": PATH}}, "journal": PATH}

Usage: python3 serve.py DIR [TALLY_BINARY]   (default: $TALLY_BIN, else target/debug/tally)
"""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
CHAIN_ID = "tally-devnet-1"
CONTRACT = "cosmwasm14hj2tavq8fpesdwxxcu44rty3hh90vhujrvcmstl4zr3txmfvw9s4hmalr"

# Per million tokens, in the smallest unit: 20 per prompt token for embeddings; chat
# prompt 10 and completion 30 per token; a minimum fee of 5.
SCHEDULES = {
    "all-MiniLM-L6-v2": {"min_fee": "5", "prompt": 20_000_000, "cached": 10_000_000, "completion": 0},
    "echo-chat": {"min_fee": "5", "prompt": 10_000_000, "cached": 5_000_000, "completion": 30_000_000},
}


def wait_for(path, proc, what, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path):
            return
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode} before it was ready")
        time.sleep(0.05)
    sys.exit(f"{what} was not ready after {timeout} s")


def main():
    out = os.path.abspath(sys.argv[1])
    tally = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("TALLY_BIN", os.path.join(ROOT, "target", "debug", "tally"))
    os.makedirs(out, exist_ok=True)
    key = os.path.join(out, "host.key")
    host = subprocess.run([tally, "keys", "new", key], check=True, capture_output=True, text=True).stdout.strip()
    models = {}
    for name, p in SCHEDULES.items():
        model_id = hashlib.sha256(name.encode()).hexdigest()
        path = os.path.join(out, f"{name}.schedule.json")
        with open(path, "w") as f:
            json.dump({"model": model_id, "min_fee": p["min_fee"], "tiers": [{
                "from_prompt_tokens": 0, "prompt_per_mtok": p["prompt"],
                "cached_per_mtok": p["cached"], "completion_per_mtok": p["completion"]}]}, f)
        models[name] = {"id": model_id, "schedule": path}

    port_file = os.path.join(out, "upstream.port")
    upstream = subprocess.Popen([sys.executable, os.path.join(HERE, "upstream.py"), port_file])
    children = [upstream]

    def stop(*_, code=0):
        for c in children:
            if c.poll() is None:
                c.terminate()
        for c in children:
            try:
                c.wait(timeout=10)
            except subprocess.TimeoutExpired:
                c.kill()
        sys.exit(code)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    wait_for(port_file, upstream, "the upstream")
    port = open(port_file).read().strip()
    journal = os.path.join(out, "host.journal")
    args = [tally, "proxy", "--upstream", f"http://127.0.0.1:{port}", "--listen", "127.0.0.1:0",
            "--key", key, "--journal", journal, "--chain-id", CHAIN_ID, "--contract", CONTRACT,
            "--max-output-tokens", "4096"]
    for name, m in models.items():
        args += ["--model", f"{name}={m['schedule']}"]
    log = open(os.path.join(out, "proxy.log"), "w+")
    proxy = subprocess.Popen(args, stderr=log, stdout=log)
    children.append(proxy)
    url = None
    deadline = time.time() + 60
    while url is None and time.time() < deadline:
        if proxy.poll() is not None:
            log.seek(0)
            sys.exit(f"tally proxy exited with {proxy.returncode}: {log.read()}")
        log.seek(0)
        m = re.search(r"tally proxy on (http://[0-9.]+:[0-9]+)", log.read())
        if m:
            url = m.group(1)
        else:
            time.sleep(0.05)
    if url is None:
        stop(code=1)
    env = {"proxy": url, "host": host, "chain_id": CHAIN_ID, "contract": CONTRACT,
           "models": models, "journal": journal}
    with open(os.path.join(out, "env.json.tmp"), "w") as f:
        json.dump(env, f)
    os.replace(os.path.join(out, "env.json.tmp"), os.path.join(out, "env.json"))
    while all(c.poll() is None for c in children):
        time.sleep(0.2)
    stop(code=1)


if __name__ == "__main__":
    main()
