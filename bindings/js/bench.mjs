// Per-call cost of @tally/client against the same operations in Rust compiled into the
// same wasm module, in one run (run it where @tally/client is installed):
//
//     node bench.mjs [iterations] [rounds]
//
// Times, on a MiniLM-shaped embeddings call with an in-memory channel: `authorize` and
// verifying a JSON answer (both signatures, digests, usage, the fee re-metered, the
// authorisation sent), through the binding (`Channel.authorize`, `verifyJsonAnswer`) and
// in Rust inside the wasm module (`rustBench`: tally_client::testkit::time_client_ops,
// the same compiled code, called once). Native Rust: `cargo bench -p tally-client`.
import * as tc from '@tally/client';

const n = Number(process.argv[2] ?? 2000);
const f = tc.benchFixture();
const channel = new tc.Channel(tc.Key.fromSeed(f.payerSeed), f.host, f.schedule,
  { chainId: f.chainId, contract: f.contract, cap: f.cap, maxFee: f.maxFee }, tc.memoryStore());
const host = new tc.TestHost(f.hostSeed, '05'.repeat(32));

function perOpUs(fn, count) {
  const start = process.hrtime.bigint();
  for (let i = 0; i < count; i++) fn();
  return Number(process.hrtime.bigint() - start) / count / 1000;
}

tc.rustBench(Math.max(n / 10, 10));
const auth = channel.authorize(f.request);
const header = host.receiptJson(auth, f.schedule, f.request, f.response);
perOpUs(() => channel.authorize(f.request), n / 10);
// Rounds alternate binding and Rust; the best of each is reported (the machine may be shared).
const rounds = Number(process.argv[3] ?? 5);
const runs = [];
for (let r = 0; r < rounds; r++) {
  const a = perOpUs(() => channel.authorize(f.request), n);
  const v = perOpUs(() => channel.verifyJsonAnswer(f.request, header, f.response, auth), n);
  runs.push([a, v, ...Array.from(tc.rustBench(n), (ns) => ns / 1000)]);
}
const [jsAuth, jsVerify, rustAuth, rustVerify] = [0, 1, 2, 3].map((i) => Math.min(...runs.map((r) => r[i])));
console.log(`@tally/client (Node ${process.version}, wasm), best of ${rounds} x ${n} iterations, request ${f.request.length} B, answer ${f.response.length} B`);
console.log(`${'operation'.padEnd(22)} ${'Node µs'.padStart(10)} ${'Rust µs'.padStart(10)} ${'overhead'.padStart(9)}`);
for (const [name, js, rs] of [['authorize', jsAuth, rustAuth], ['verify a JSON answer', jsVerify, rustVerify]]) {
  console.log(`${name.padEnd(22)} ${js.toFixed(1).padStart(10)} ${rs.toFixed(1).padStart(10)} ${(100 * (js - rs) / rs).toFixed(1).padStart(8)}%`);
}
console.log(`${'both, per call'.padEnd(22)} ${(jsAuth + jsVerify).toFixed(1).padStart(10)} ${(rustAuth + rustVerify).toFixed(1).padStart(10)}`);
console.log('(Rust µs: the same Rust code compiled into this wasm module)');
