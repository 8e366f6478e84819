"""The channel, key files and checks without a proxy: a stand-in host
(`tally_client._native.TestHost`, the Rust test host) signs the receipts."""

import json
import os
import stat

import pytest

import tally_client as tc
from tally_client import _native

HOST_SEED = bytes([2]) * 32
GUEST = "05" * 32
BODY = b'{"model":"m","input":"hello"}'


def schedule(min_fee="1"):
    return tc.Schedule.from_json(json.dumps({"model": "07" * 32, "min_fee": min_fee, "tiers": [
        {"from_prompt_tokens": 0, "prompt_per_mtok": 2_000_000, "cached_per_mtok": 0, "completion_per_mtok": 0}]}))


def channel(tmp_path, **kw):
    kw.setdefault("cap", 100)
    return tc.Channel(tc.Key.from_seed(bytes([1]) * 32), tc.public_key_of_seed(HOST_SEED), schedule(),
                      chain_id="tally-devnet-1", contract="cosmwasm1contract", **kw)


def answer(tokens):
    return json.dumps({"object": "list", "data": [], "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}).encode()


def test_key_files_are_the_tally_keys_format(tmp_path):
    path = tmp_path / "payer.key"
    key = tc.Key.generate(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert len(text) == 65 and text.endswith("\n")
    assert tc.Key.load(path).public_key == key.public_key == tc.public_key_of_seed(bytes.fromhex(text[:64]))
    with pytest.raises(tc.KeyFileError) as e:
        tc.Key.generate(path)
    assert e.value.code == "exists"
    os.chmod(path, 0o644)
    with pytest.raises(tc.KeyFileError) as e:
        tc.Key.load(path)
    assert e.value.code == "permissions"
    tc.Key.from_seed(bytes([9]) * 32).save(tmp_path / "saved.key")
    assert (tmp_path / "saved.key").read_text() == "09" * 32 + "\n"
    (tmp_path / "bad.key").write_text("XY" * 32)
    os.chmod(tmp_path / "bad.key", 0o600)
    with pytest.raises(tc.KeyFileError) as e:
        tc.Key.load(tmp_path / "bad.key")
    assert e.value.code == "malformed"


def test_answers_are_verified_and_totals_recorded(tmp_path):
    ch = channel(tmp_path, state=tmp_path / "c.json")
    host = _native.TestHost(HOST_SEED, GUEST)
    auth = ch.authorize(BODY)
    header = host.receipt_json(auth, schedule(), BODY, answer(7))
    r = ch.verify_json_answer(BODY, header, answer(7), authorization=auth)
    assert (r.seq, r.fee, r.channel_total, r.prompt_tokens) == (1, 14, 14, 7)
    assert tc.verify_json_answer(BODY, header, answer(7), schedule()) == r
    # Priced with a schedule that is not the channel's: refused.
    with pytest.raises(tc.ReceiptError) as e:
        tc.verify_json_answer(BODY, header, answer(7), tc.Schedule.from_json(schedule("2").json()))
    assert e.value.code == "schedule_mismatch"
    with pytest.raises(tc.ReceiptError) as e:
        ch.verify_json_answer(BODY, header, answer(8), authorization=auth)
    assert e.value.code == "response_digest"
    with pytest.raises(tc.ReceiptError) as e:
        ch.verify_json_answer(BODY, "zz", answer(7))
    assert e.value.code == "malformed_receipt"
    assert ch.status["total"] == 14


def test_the_cap_stops_authorising_once_reached(tmp_path):
    ch = channel(tmp_path, state=tmp_path / "c.json", cap=30)
    host = _native.TestHost(HOST_SEED, GUEST)
    for tokens in (7, 8):
        auth = ch.authorize(BODY)
        ch.verify_json_answer(BODY, host.receipt_json(auth, schedule(), BODY, answer(tokens)), answer(tokens), authorization=auth)
    assert ch.status["total"] == 30
    with pytest.raises(tc.ChannelError) as e:
        ch.authorize(BODY)
    assert e.value.code == "cap_reached"
    ch.close()
    # The total was saved on close: a restart refuses as well.
    with pytest.raises(tc.ChannelError) as e:
        channel(tmp_path, state=tmp_path / "c.json", cap=30).authorize(BODY)
    assert e.value.code == "cap_reached"


def test_one_state_file_one_owner(tmp_path):
    first = channel(tmp_path, state=tmp_path / "c.json")
    with pytest.raises(tc.ChannelError) as e:
        channel(tmp_path, state=tmp_path / "c.json")
    assert e.value.code == "channel_locked"
    assert "in use by another process" in str(e.value)
    first.authorize(BODY)
    first.close()
    with channel(tmp_path, state=tmp_path / "c.json", lease=32) as again:
        assert again.status["next_seq"] == 33
    with pytest.raises(tc.ChannelError) as e:
        tc.Channel(tc.Key.from_seed(bytes([3]) * 32), tc.public_key_of_seed(HOST_SEED), schedule(),
                   chain_id="tally-devnet-1", contract="cosmwasm1contract", cap=100, state=tmp_path / "c.json")
    assert e.value.code == "state_for_other_channel"
