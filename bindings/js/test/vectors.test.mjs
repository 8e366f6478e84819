// Every golden vector of testdata/vectors.json through the wasm binding: decode,
// re-encode, JSON, ids, signatures, metering, Merkle proofs and checkpoints.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as tc from '@tally/client';
import { vectors, unhex } from './harness.mjs';

const v = vectors();
const hex = (bytes) => Buffer.from(bytes).toString('hex');
const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

function throwsCode(fn, name, code, what) {
  assert.throws(fn, (e) => {
    assert.equal(e.name, name, what);
    assert.equal(e.code, code, what);
    return true;
  });
}

test('keys derive from their seeds', () => {
  for (const [name, k] of Object.entries(v.keys)) {
    assert.equal(tc.publicKeyOfSeed(unhex(k.seed)), k.public, name);
    assert.equal(tc.Key.fromSeed(unhex(k.seed)).publicKey, k.public, name);
  }
});

test('every value decodes, re-encodes and round-trips its JSON', () => {
  assert.equal(v.values.length, 12);
  for (const c of v.values) {
    const { canonical, json } = tc.decodeValue(c.type, unhex(c.canonical));
    assert.equal(hex(canonical), c.canonical, c.type);
    assert.deepEqual(JSON.parse(json), c.json, c.type);
    assert.equal(sha256(unhex(c.canonical)), c.sha256, c.type);
    assert.equal(hex(tc.encodeValue(c.type, JSON.stringify(c.json))), c.canonical, c.type);
  }
});

test('signed values verify and ids match', () => {
  const by = Object.fromEntries(v.values.map((c) => [c.type, unhex(c.canonical)]));
  for (const ty of ['SignedReceipt', 'SignedAuthorization', 'SignedBatchHeader', 'SignedSubmission']) {
    tc.verifyValue(ty, by[ty]);
  }
  const receipt = tc.Receipt.fromHex(hex(by.SignedReceipt));
  tc.verifyReceipt(receipt, []);
  assert.equal(receipt.id, v.receipt_id);
  assert.equal(receipt.channel, v.channel_id);
  const auth = JSON.parse(tc.decodeValue('Authorization', by.Authorization).json);
  assert.equal(tc.channelId(v.keys.payer.public, v.keys.host.public, auth.model), v.channel_id);
  const schedule = tc.Schedule.fromJson(tc.decodeValue('PriceSchedule', by.PriceSchedule).json);
  assert.equal(schedule.hash, v.schedule_hash);
  assert.equal(tc.merkleLeafHash(by.SignedReceipt), v.merkle_leaf);
  tc.verifyReceipt(receipt, [schedule]);
  assert.equal(receipt.fee, 2125n);
  assert.equal(tc.Receipt.fromJson(receipt.json()).id, receipt.id);
});

test('meter vectors', () => {
  assert.equal(hex(tc.meter(unhex(v.meter.input))), v.meter.outcome);
  assert.equal(hex(tc.meter(unhex(v.meter.refused_input))), v.meter.refused_outcome);
  for (const [ty, key] of [['MeterInput', 'input'], ['MeterOutcome', 'outcome']]) {
    const d = tc.decodeValue(ty, unhex(v.meter[key]));
    assert.equal(hex(d.canonical), v.meter[key]);
    assert.equal(d.json, undefined);
  }
});

test('bad encodings fail with their code', () => {
  assert.ok(v.bad_encodings.length > 0);
  for (const c of v.bad_encodings) {
    throwsCode(() => tc.decodeValue(c.type, unhex(c.canonical)), 'DecodeError', c.error, c.name);
  }
});

test('bad receipts fail with their code', () => {
  assert.ok(v.bad_receipts.length > 0);
  for (const c of v.bad_receipts) {
    throwsCode(() => tc.verifyValue('SignedReceipt', unhex(c.canonical)), 'DecodeError', c.error, c.name);
    throwsCode(() => tc.verifyReceipt(tc.Receipt.fromHex(c.canonical), []), 'AuditError', c.error, c.name);
  }
});

test('bad JSON is refused', () => {
  assert.ok(v.bad_json.length > 0);
  for (const c of v.bad_json) {
    throwsCode(() => tc.encodeValue(c.type, JSON.stringify(c.json)), 'DecodeError', 'bad_json', c.name);
  }
});

test('a small-order host key verifies by ZIP-215', () => {
  const r = tc.Receipt.fromHex(v.small_order.signed_receipt);
  tc.verifyReceipt(r, []);
  assert.equal(r.id, v.small_order.receipt_id);
});

test('log ids, roots, proofs and checkpoints', () => {
  const log = v.log;
  const receipts = log.receipts.map((r) => tc.Receipt.fromHex(r));
  receipts.forEach((r, i) => {
    tc.verifyReceipt(r, []);
    assert.equal(r.id, log.receipt_ids[i]);
    assert.equal(tc.merkleLeafHash(r.canonical()), log.leaf_hashes[i]);
  });
  log.roots.forEach((root, size) => assert.equal(tc.merkleRoot(log.leaf_hashes.slice(0, size)), root));
  for (const p of log.inclusion) {
    const root = log.roots[p.tree_size];
    const leaf = log.leaf_hashes[p.leaf_index];
    tc.verifyInclusionProof(leaf, BigInt(p.leaf_index), BigInt(p.tree_size), p.hashes, root);
    if (p.hashes.length) {
      const bad = ['00'.repeat(32), ...p.hashes.slice(1)];
      throwsCode(() => tc.verifyInclusionProof(leaf, BigInt(p.leaf_index), BigInt(p.tree_size), bad, root),
        'AuditError', 'root_mismatch');
    }
  }
  for (const p of log.consistency) {
    tc.verifyConsistencyProof(BigInt(p.size1), BigInt(p.size2), p.hashes, log.roots[p.size1], log.roots[p.size2]);
  }
  for (const p of log.consistency_errors) {
    throwsCode(() => tc.verifyConsistencyProof(BigInt(p.size1), BigInt(p.size2), p.hashes, p.root1, p.root2),
      'AuditError', p.error, p.name);
  }
  const aggregator = v.keys.aggregator.public;
  for (const b of log.batches) {
    tc.verifyValue('SignedBatchHeader', unhex(b.signed_header));
    const header = JSON.parse(tc.decodeValue('SignedBatchHeader', unhex(b.signed_header)).json).header;
    const size = header.tree_size;
    const cp = tc.verifyCheckpoint(b.checkpoint, log.origin, aggregator);
    assert.deepEqual([cp.size, cp.root], [BigInt(size), log.roots[size]]);
    assert.equal(sha256(tc.encodeValue('BatchHeader', JSON.stringify(header))), b.header_hash);
    for (const p of log.inclusion.filter((p) => p.tree_size === size)) {
      const got = tc.verifyInclusion(receipts[p.leaf_index], BigInt(p.leaf_index), p.hashes, b.checkpoint, log.origin, aggregator);
      assert.equal(got.root, log.roots[size]);
    }
  }
  for (const c of log.bad_checkpoints) {
    if (c.error === null) {
      tc.verifyCheckpoint(c.note, log.origin, aggregator); // a witness cosignature is accepted
      continue;
    }
    throwsCode(() => tc.verifyCheckpoint(c.note, log.origin, aggregator), 'AuditError', c.error, c.name);
  }
});

test('a JSON-lines stream reports each line', () => {
  const good = v.log.receipts.slice(0, 2).map((r) => tc.Receipt.fromHex(r).json());
  const bad = tc.Receipt.fromHex(v.bad_receipts[0].canonical).json();
  const results = tc.verifyReceiptsJsonl([good[0], '', '{}', bad, good[1]].join('\n') + '\n', []);
  assert.deepEqual(results.map((r) => [r.line, r.code]),
    [[1, undefined], [3, 'bad_json'], [4, v.bad_receipts[0].error], [5, undefined]]);
  assert.equal(results[0].receipt.id, v.log.receipt_ids[0]);
});
