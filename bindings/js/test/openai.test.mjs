// The official `openai` npm package → `tally proxy` (the real binary) → the MiniLM
// embeddings and streaming chat upstream, through `tallyFetch`: every answer verified, and
// every way an answer can be wrong gives its documented error.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import OpenAI from 'openai';
import * as tc from '@tally/client';
import { startProxy, tempDir } from './harness.mjs';

const EMBED = 'all-MiniLM-L6-v2';
const CHAT = 'echo-chat';
let proxy;

before(async () => {
  proxy = await startProxy();
});
after(async () => {
  await proxy?.stop();
});

function open(model = EMBED, { dir = tempDir('payer'), key, lease, cap = 10n ** 9n } = {}) {
  key ??= tc.generateKeyFile(join(dir, 'payer.key'));
  const schedule = tc.loadSchedule(proxy.models[model].schedule);
  const options = { chainId: proxy.chain_id, contract: proxy.contract, cap, maxFee: 10n ** 6n, lease };
  return tc.openChannel(key, proxy.host, schedule, options, join(dir, 'channel.json'));
}

function client(channel, options = {}) {
  return new OpenAI({ baseURL: `${proxy.proxy}/v1`, apiKey: 'unused', maxRetries: 0, fetch: tc.tallyFetch(channel, options) });
}

function fee(model, prompt, completion = 0) {
  const s = JSON.parse(readFileSync(proxy.models[model].schedule, 'utf8'));
  const t = s.tiers[0];
  const n = BigInt(prompt) * BigInt(t.prompt_per_mtok) + BigInt(completion) * BigInt(t.completion_per_mtok);
  const f = (n + 999_999n) / 1_000_000n;
  return f > BigInt(s.min_fee) ? f : BigInt(s.min_fee);
}

async function rejectsWith(promise, status, code) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof OpenAI.APIError, `${e}`);
    assert.equal(e.status, status);
    assert.equal(e.code, code);
    return true;
  });
}

test('embeddings are paid and verified', async () => {
  const channel = open();
  const seen = [];
  const c = client(channel, { onReceipt: (r) => seen.push(r) });
  const { data, response } = await c.embeddings.create({ model: EMBED, input: 'The quick brown fox.', encoding_format: 'float' }).withResponse();
  assert.equal(data.data[0].embedding.length, 384);
  const r = tc.receiptOf(response);
  assert.ok(r, 'the response carries its receipt');
  assert.equal(r.id, channel.lastReceipt.id);
  assert.equal(r.seq, 1n);
  assert.equal(r.promptTokens, BigInt(data.usage.prompt_tokens));
  assert.equal(r.fee, fee(EMBED, data.usage.prompt_tokens));
  assert.equal(r.channelTotal, r.fee);
  assert.equal(seen.length, 1);
  assert.equal(seen[0].id, r.id);
  const again = await c.embeddings.create({ model: EMBED, input: ['one', 'two'], encoding_format: 'float' });
  assert.equal(again.data.length, 2);
  const r2 = channel.lastReceipt;
  assert.equal(r2.seq, 2n);
  assert.equal(r2.channelTotal, r.fee + r2.fee);
  assert.equal(channel.status.total, r2.channelTotal);
  channel.close();
});

test('key files are the ones tally keys writes', () => {
  // serve.py made the host key with `tally keys new`.
  assert.equal(tc.loadKeyFile(join(proxy.dir, 'host.key')).publicKey, proxy.host);
  const dir = tempDir('keys');
  const key = tc.generateKeyFile(join(dir, 'payer.key'));
  assert.equal(statSync(join(dir, 'payer.key')).mode & 0o777, 0o600);
  const text = readFileSync(join(dir, 'payer.key'), 'utf8');
  assert.match(text, /^[0-9a-f]{64}\n$/);
  assert.equal(tc.publicKeyOfSeed(Buffer.from(text.slice(0, 64), 'hex')), key.publicKey);
  assert.throws(() => tc.saveKeyFile(join(dir, 'payer.key'), key), (e) => e.code === 'exists');
  chmodSync(join(dir, 'payer.key'), 0o644);
  assert.throws(() => tc.loadKeyFile(join(dir, 'payer.key')), (e) => e.name === 'KeyFileError' && e.code === 'permissions');
  writeFileSync(join(dir, 'bad.key'), 'XY'.repeat(32), { mode: 0o600 });
  assert.throws(() => tc.loadKeyFile(join(dir, 'bad.key')), (e) => e.code === 'malformed');
});

test('chat JSON and streams are verified', async () => {
  const channel = open(CHAT);
  const c = client(channel);
  const messages = [{ role: 'user', content: 'one two three four' }];
  const answer = await c.chat.completions.create({ model: CHAT, messages });
  assert.equal(answer.choices[0].message.content, 'four three two one');
  const r = channel.lastReceipt;
  assert.equal(r.completionTokens, 4n);
  assert.equal(r.finish, 'stop');
  assert.equal(r.fee, fee(CHAT, Number(r.promptTokens), 4));
  const stream = await c.chat.completions.create({ model: CHAT, messages, stream: true });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
  assert.equal(text, 'four three two one');
  const rs = channel.lastReceipt;
  assert.equal(rs.seq, 2n);
  assert.equal(rs.channelTotal, r.fee + rs.fee);
  const short = await c.chat.completions.create({ model: CHAT, messages, stream: true, max_tokens: 2 });
  text = '';
  for await (const chunk of short) text += chunk.choices[0]?.delta?.content ?? '';
  assert.equal(text, 'four three');
  assert.equal(channel.lastReceipt.finish, 'length');
  channel.close();
});

/** A fetch that sends for real, then changes the answer's headers and body. */
function doctor(change) {
  return async (url, init) => {
    const response = await fetch(url, init);
    const headers = new Headers(response.headers);
    headers.delete('content-length');
    const body = new Uint8Array(await response.arrayBuffer());
    const [h, b] = change(headers, body);
    return new Response(b, { status: response.status, headers: h });
  };
}

// The receipt bundle (hex) with its host checkpoint's root altered: the receipt is no longer
// included under the checkpoint it carries, whatever the proof's length.
const tamperBundle = (hex) => {
  const v = JSON.parse(tc.decodeValue('SignedReceipt', Buffer.from(hex, 'hex')).json);
  const r = v.checkpoint.root;
  v.checkpoint.root = (r[0] === '0' ? '1' : '0') + r.slice(1);
  return Buffer.from(tc.encodeValue('SignedReceipt', JSON.stringify(v))).toString('hex');
};

test('a tampered receipt is refused', async () => {
  const tamper = doctor((h, b) => {
    h.set('x-tally-receipt', tamperBundle(h.get('x-tally-receipt')));
    return [h, b];
  });
  await rejectsWith(client(open(), { fetch: tamper }).embeddings.create({ model: EMBED, input: 'hi' }), 502, 'host_inclusion');
  const tamperStream = doctor((h, b) => {
    const text = Buffer.from(b).toString('utf8').trimEnd();
    const at = text.lastIndexOf('data: ') + 'data: '.length;
    return [h, Buffer.from(`${text.slice(0, at)}${tamperBundle(text.slice(at))}\n\n`)];
  });
  const c = client(open(CHAT), { fetch: tamperStream });
  await rejectsWith(c.chat.completions.create({ model: CHAT, messages: [{ role: 'user', content: 'a b' }], stream: true }),
    502, 'host_inclusion');
  // With throwErrors, the ReceiptError itself.
  const direct = tc.tallyFetch(open(), { fetch: tamper, throwErrors: true });
  await assert.rejects(direct(`${proxy.proxy}/v1/embeddings`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: EMBED, input: 'hi' }),
  }), (e) => e.name === 'ReceiptError' && e.code === 'host_inclusion');
});

test('a receipt for another request is refused', async () => {
  let first;
  const replay = doctor((h, b) => {
    first ??= [h, b];
    return [new Headers(first[0]), first[1]];
  });
  const channel = open();
  const c = client(channel, { fetch: replay });
  await c.embeddings.create({ model: EMBED, input: 'first' });
  await rejectsWith(c.embeddings.create({ model: EMBED, input: 'second' }), 502, 'request_digest');
  await rejectsWith(c.embeddings.create({ model: EMBED, input: 'first' }), 502, 'authorization_mismatch');
  assert.equal(channel.status.lastReceiptSeq, 1n);
});

test('a missing receipt is refused', async () => {
  const strip = doctor((h, b) => {
    h.delete('x-tally-receipt');
    return [h, b];
  });
  await rejectsWith(client(open(), { fetch: strip }).embeddings.create({ model: EMBED, input: 'hi' }), 502, 'no_receipt');
  const stripEvent = doctor((h, b) => {
    const text = Buffer.from(b).toString('utf8');
    return [h, Buffer.from(text.slice(0, text.lastIndexOf('event: tally.receipt')))];
  });
  await rejectsWith(client(open(CHAT), { fetch: stripEvent }).chat.completions.create({
    model: CHAT, messages: [{ role: 'user', content: 'x' }], stream: true }), 502, 'no_receipt');
});

test('a stale seq is refused by the proxy', async () => {
  const dir = tempDir('stale');
  const key = tc.generateKeyFile(join(dir, 'payer.key'));
  let channel = open(EMBED, { dir, key, lease: 1 });
  let c = client(channel);
  await c.embeddings.create({ model: EMBED, input: 'one' });
  copyFileSync(join(dir, 'channel.json'), join(dir, 'backup.json'));
  await c.embeddings.create({ model: EMBED, input: 'two' });
  channel.close();
  copyFileSync(join(dir, 'backup.json'), join(dir, 'channel.json'));
  channel = open(EMBED, { dir, key, lease: 1 });
  c = client(channel);
  await rejectsWith(c.embeddings.create({ model: EMBED, input: 'three' }), 402, 'replayed');
  await c.embeddings.create({ model: EMBED, input: 'four' });
  channel.close();
});

test('the cap is never exceeded', async () => {
  // The proxy refuses a call the rest of the cap might not pay for (its upper estimate of
  // the prompt: body bytes + 1024 tokens), before forwarding it. The channel lowers
  // max_fee to what is left under the cap, so either code says it.
  const tiny = open(EMBED, { cap: 1000n });
  let worst;
  await assert.rejects(client(tiny).embeddings.create({ model: EMBED, input: 'ab cd' }), (e) => {
    assert.equal(e.status, 402);
    assert.ok(['fee_above_max', 'over_cap'].includes(e.code), e.code);
    worst = BigInt(/may cost (\d+)/.exec(e.message)[1]);
    return true;
  });
  assert.equal(tiny.status.total, 0n);
  tiny.close();
  const channel = open(EMBED, { cap: worst + 50n });
  const c = client(channel);
  await c.embeddings.create({ model: EMBED, input: 'ab cd' });
  assert.ok(channel.lastReceipt.channelTotal <= worst + 50n);
  await assert.rejects(c.embeddings.create({ model: EMBED, input: 'ab cd' }),
    (e) => e.status === 402 && ['fee_above_max', 'over_cap'].includes(e.code));
  channel.close();
});

const PAYER = `
import OpenAI from 'openai';
import * as tc from '@tally/client';
const [env, keyPath, state, n] = [JSON.parse(process.argv[2]), process.argv[3], process.argv[4], Number(process.argv[5])];
let channel;
try {
  channel = tc.openChannel(tc.loadKeyFile(keyPath), env.host, tc.loadSchedule(env.models['all-MiniLM-L6-v2'].schedule),
    { chainId: env.chain_id, contract: env.contract, cap: 10n ** 9n, lease: 4 }, state);
} catch (e) {
  console.log('error', e.code);
  process.exit(3);
}
const c = new OpenAI({ baseURL: env.proxy + '/v1', apiKey: 'x', maxRetries: 0, fetch: tc.tallyFetch(channel) });
for (let i = 0; i < n; i++) {
  try {
    await c.embeddings.create({ model: 'all-MiniLM-L6-v2', input: 'call ' + i });
  } catch (e) {
    console.log('refused', e.code);
    process.exit(4);
  }
  console.log('receipt', String(channel.lastReceipt.seq));
}
channel.close();
console.log('done');
`;

test('a payer killed with SIGKILL resumes without reusing a seq', async () => {
  const dir = tempDir('kill');
  const script = join(import.meta.dirname, `payer-${process.pid}.mjs`);
  writeFileSync(script, PAYER);
  const keyPath = join(dir, 'payer.key');
  tc.generateKeyFile(keyPath);
  const state = join(dir, 'channel.json');
  const env = JSON.stringify({ ...proxy, stop: undefined });
  const args = (n) => [script, env, keyPath, state, String(n)];
  const first = spawn(process.execPath, args(1000), { stdio: ['ignore', 'pipe', 'inherit'] });
  const seqs = [];
  const closed = new Promise((resolve) => first.once('close', resolve));
  await new Promise((resolve, reject) => {
    createInterface({ input: first.stdout }).on('line', (line) => {
      if (!line.startsWith('receipt ')) reject(new Error(line));
      seqs.push(BigInt(line.split(' ')[1]));
      if (seqs.length === 6) resolve();
    });
    first.once('exit', () => reject(new Error('the payer exited early')));
  });
  const second = spawnSync(process.execPath, args(1), { encoding: 'utf8', timeout: 60_000 });
  assert.equal(second.status, 3);
  assert.equal(second.stdout.trim(), 'error channel_locked');
  first.kill('SIGKILL');
  await closed;
  assert.equal(first.signalCode, 'SIGKILL');
  const again = spawnSync(process.execPath, args(3), { encoding: 'utf8', timeout: 120_000 });
  assert.equal(again.status, 0, again.stdout + again.stderr);
  const fresh = again.stdout.split('\n').filter((l) => l.startsWith('receipt')).map((l) => BigInt(l.split(' ')[1]));
  assert.equal(fresh.length, 3);
  const highest = seqs.reduce((a, b) => (a > b ? a : b));
  assert.ok(fresh.every((s) => s > highest), `${seqs} then ${fresh}`);
});
