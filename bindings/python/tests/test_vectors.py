"""Every golden vector of testdata/vectors.json through the Python binding: decode,
re-encode, JSON, ids, signatures, metering, Merkle proofs and checkpoints. The binding
calls the Rust crates, so these pass exactly when the wheel carries the same code the
Rust tests check."""

import hashlib
import json

import pytest

import tally_client as tc


def unhex(s):
    return bytes.fromhex(s)


def test_keys_derive_from_their_seeds(vectors):
    for name, k in vectors["keys"].items():
        assert tc.public_key_of_seed(unhex(k["seed"])) == k["public"], name
        assert tc.Key.from_seed(unhex(k["seed"])).public_key == k["public"]


def test_every_value_decodes_reencodes_and_round_trips_json(vectors):
    assert len(vectors["values"]) == 12
    for case in vectors["values"]:
        ty, canonical = case["type"], unhex(case["canonical"])
        again, js = tc.decode_value(ty, canonical)
        assert again == canonical, ty
        assert json.loads(js) == case["json"], ty
        assert hashlib.sha256(canonical).hexdigest() == case["sha256"], ty
        assert tc.encode_value(ty, json.dumps(case["json"])) == canonical, ty


def test_signed_values_verify_and_ids_match(vectors):
    by_type = {c["type"]: unhex(c["canonical"]) for c in vectors["values"]}
    for ty in ("SignedReceipt", "SignedAuthorization", "SignedBatchHeader", "SignedSubmission"):
        tc.verify_value(ty, by_type[ty])
    receipt = tc.Receipt.from_bytes(by_type["SignedReceipt"])
    tc.verify_receipt(receipt)
    assert receipt.id == vectors["receipt_id"]
    assert receipt.channel == vectors["channel_id"]
    k = vectors["keys"]
    model = json.loads(tc.decode_value("Authorization", by_type["Authorization"])[1])["model"]
    assert tc.channel_id(k["payer"]["public"], k["host"]["public"], model) == vectors["channel_id"]
    schedule_json = tc.decode_value("PriceSchedule", by_type["PriceSchedule"])[1]
    assert tc.Schedule.from_json(schedule_json).hash == vectors["schedule_hash"]
    assert tc.merkle_leaf_hash(by_type["SignedReceipt"]) == vectors["merkle_leaf"]
    # The fee is what the metering function gives with the schedule it names.
    tc.verify_receipt(receipt, [tc.Schedule.from_json(schedule_json)])
    assert receipt.hex() == by_type["SignedReceipt"].hex()
    assert tc.Receipt.from_json(receipt.json()) == receipt


def test_meter_vectors(vectors):
    m = vectors["meter"]
    assert tc.meter(unhex(m["input"])).hex() == m["outcome"]
    assert tc.meter(unhex(m["refused_input"])).hex() == m["refused_outcome"]
    for ty, key in (("MeterInput", "input"), ("MeterOutcome", "outcome")):
        again, js = tc.decode_value(ty, unhex(m[key]))
        assert again == unhex(m[key]) and js is None


def test_bad_encodings_fail_with_their_code(vectors):
    assert vectors["bad_encodings"]
    for case in vectors["bad_encodings"]:
        with pytest.raises(tc.DecodeError) as e:
            tc.decode_value(case["type"], unhex(case["canonical"]))
        assert e.value.code == case["error"], case["name"]


def test_bad_receipts_fail_with_their_code(vectors):
    assert vectors["bad_receipts"]
    for case in vectors["bad_receipts"]:
        with pytest.raises(tc.DecodeError) as e:
            tc.verify_value("SignedReceipt", unhex(case["canonical"]))
        assert e.value.code == case["error"], case["name"]
        with pytest.raises(tc.AuditError) as e:
            tc.verify_receipt(tc.Receipt.from_bytes(unhex(case["canonical"])))
        assert e.value.code == case["error"], case["name"]


def test_bad_json_is_refused(vectors):
    assert vectors["bad_json"]
    for case in vectors["bad_json"]:
        with pytest.raises(tc.DecodeError) as e:
            tc.encode_value(case["type"], json.dumps(case["json"]))
        assert e.value.code == "bad_json", case["name"]


def test_small_order_host_key_verifies_by_zip215(vectors):
    case = vectors["small_order"]
    receipt = tc.Receipt.from_hex(case["signed_receipt"])
    tc.verify_receipt(receipt)
    assert receipt.id == case["receipt_id"]
    assert receipt.host == case["host_key"]


def test_log_ids_roots_proofs_and_checkpoints(vectors):
    log = vectors["log"]
    receipts = [tc.Receipt.from_hex(r) for r in log["receipts"]]
    for r, rid, leaf in zip(receipts, log["receipt_ids"], log["leaf_hashes"]):
        tc.verify_receipt(r)
        assert r.id == rid
        assert tc.merkle_leaf_hash(r.canonical) == leaf
    for size, root in enumerate(log["roots"]):
        assert tc.merkle_root(log["leaf_hashes"][:size]) == root
    for p in log["inclusion"]:
        root = log["roots"][p["tree_size"]]
        tc.verify_inclusion_proof(log["leaf_hashes"][p["leaf_index"]], p["leaf_index"], p["tree_size"], p["hashes"], root)
        if p["hashes"]:
            bad = list(p["hashes"])
            bad[0] = "00" * 32
            with pytest.raises(tc.AuditError) as e:
                tc.verify_inclusion_proof(log["leaf_hashes"][p["leaf_index"]], p["leaf_index"], p["tree_size"], bad, root)
            assert e.value.code == "root_mismatch"
    for p in log["consistency"]:
        tc.verify_consistency_proof(p["size1"], p["size2"], p["hashes"], log["roots"][p["size1"]], log["roots"][p["size2"]])
    for p in log["consistency_errors"]:
        with pytest.raises(tc.AuditError) as e:
            tc.verify_consistency_proof(p["size1"], p["size2"], p["hashes"], p["root1"], p["root2"])
        assert e.value.code == p["error"], p["name"]
    aggregator = vectors["keys"]["aggregator"]["public"]
    assert tc.log_origin("tally-devnet-1", log["origin"].split("/", 2)[2]) == log["origin"]
    for batch in log["batches"]:
        tc.verify_value("SignedBatchHeader", unhex(batch["signed_header"]))
        header = tc.decode_value("SignedBatchHeader", unhex(batch["signed_header"]))[1]
        size = json.loads(header)["header"]["tree_size"]
        assert tc.verify_checkpoint(batch["checkpoint"], log["origin"], aggregator) == (size, log["roots"][size])
        header_bytes = tc.encode_value("BatchHeader", json.dumps(json.loads(header)["header"]))
        assert hashlib.sha256(header_bytes).hexdigest() == batch["header_hash"]
        # Every receipt of the batch's tree is included under its signed checkpoint.
        for p in log["inclusion"]:
            if p["tree_size"] == size:
                got = tc.verify_inclusion(receipts[p["leaf_index"]], p["leaf_index"], p["hashes"], batch["checkpoint"], log["origin"], aggregator)
                assert got == (size, log["roots"][size])
    for case in log["bad_checkpoints"]:
        if case["error"] is None:  # a witness cosignature beside the log's is accepted
            tc.verify_checkpoint(case["note"], log["origin"], aggregator)
            continue
        with pytest.raises(tc.AuditError) as e:
            tc.verify_checkpoint(case["note"], log["origin"], aggregator)
        assert e.value.code == case["error"], case["name"]


def test_a_jsonl_stream_reports_each_line(vectors):
    log = vectors["log"]
    good = [tc.Receipt.from_hex(r).json() for r in log["receipts"][:2]]
    bad = tc.Receipt.from_hex(vectors["bad_receipts"][0]["canonical"]).json()
    results = tc.verify_receipts_jsonl("\n".join([good[0], "", "{}", bad, good[1]]) + "\n")
    assert [(line, code) for line, _, code, _ in results] == [
        (1, None), (3, "bad_json"), (4, vectors["bad_receipts"][0]["error"]), (5, None)]
    assert results[0][1].id == log["receipt_ids"][0]
