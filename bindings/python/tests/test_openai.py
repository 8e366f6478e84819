"""The official `openai` package → `tally proxy` (the real binary) → the MiniLM embeddings
and streaming chat upstream, through `tally_client.openai.wrap`: every answer verified,
and every way an answer can be wrong gives its documented error."""

import asyncio
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import openai
import pytest

import tally_client as tc
from tally_client.openai import _hx as hx  # the httpx the installed openai uses
from tally_client.openai import receipt_of, wrap

EMBED = "all-MiniLM-L6-v2"
CHAT = "echo-chat"


def open_channel(proxy, tmp_path, model=EMBED, name="channel.json", key=None, **kw):
    key = key or tc.Key.generate(tmp_path / f"{name}.key")
    schedule = tc.Schedule.load(proxy["models"][model]["schedule"])
    kw.setdefault("cap", 10**9)
    kw.setdefault("max_fee", 10**6)
    return tc.Channel(key, proxy["host"], schedule, chain_id=proxy["chain_id"],
                      contract=proxy["contract"], state=tmp_path / name, **kw)


def client(proxy, channel, cls=openai.OpenAI, **kw):
    return wrap(cls(base_url=proxy["proxy"] + "/v1", api_key="unused", max_retries=0), channel, **kw)


def fee(schedule_path, prompt, completion=0):
    s = json.load(open(schedule_path))
    t = s["tiers"][0]
    n = prompt * t["prompt_per_mtok"] + completion * t["completion_per_mtok"]
    return max(math.ceil(n / 1_000_000), int(s["min_fee"]))


def test_embeddings_are_paid_and_verified(proxy, tmp_path):
    channel = open_channel(proxy, tmp_path)
    seen = []
    c = client(proxy, channel, on_receipt=seen.append)
    raw = c.embeddings.with_raw_response.create(model=EMBED, input="The quick brown fox.")
    emb = raw.parse()
    assert len(emb.data[0].embedding) == 384
    r = receipt_of(raw)
    assert r is not None and r.seq == 1
    assert r.prompt_tokens == emb.usage.prompt_tokens > 0
    assert r.fee == fee(proxy["models"][EMBED]["schedule"], r.prompt_tokens)
    assert r.channel_total == r.fee
    assert seen == [r] and channel.last_receipt == r
    # The plain call is verified as well; the channel's total follows the receipts.
    again = c.embeddings.create(model=EMBED, input=["one", "two"])
    assert len(again.data) == 2
    r2 = channel.last_receipt
    assert (r2.seq, r2.channel_total) == (2, r.fee + r2.fee)
    assert channel.status["total"] == r2.channel_total
    assert r2.host == proxy["host"] and r2.schedule == tc.Schedule.load(proxy["models"][EMBED]["schedule"]).hash


def test_key_files_are_the_ones_tally_keys_writes(proxy):
    # serve.py made the host key with `tally keys new`.
    assert tc.Key.load(os.path.join(proxy["dir"], "host.key")).public_key == proxy["host"]


def test_chat_json_and_stream_are_verified(proxy, tmp_path):
    channel = open_channel(proxy, tmp_path, model=CHAT)
    c = client(proxy, channel)
    msg = [{"role": "user", "content": "one two three four"}]
    raw = c.chat.completions.with_raw_response.create(model=CHAT, messages=msg)
    answer = raw.parse()
    assert answer.choices[0].message.content == "four three two one"
    r = receipt_of(raw)
    assert (r.completion_tokens, r.finish) == (4, "stop")
    assert r.fee == fee(proxy["models"][CHAT]["schedule"], r.prompt_tokens, 4)

    stream = c.chat.completions.create(model=CHAT, messages=msg, stream=True)
    text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert text == "four three two one"
    rs = receipt_of(stream)
    assert rs is not None and rs.seq == 2 and rs.completion_tokens == 4
    assert rs.channel_total == r.fee + rs.fee
    # A limit the answer reaches: `length`, fewer tokens, still verified.
    short = c.chat.completions.create(model=CHAT, messages=msg, max_tokens=2, stream=True)
    assert "".join(ch.choices[0].delta.content or "" for ch in short if ch.choices) == "four three"
    assert (channel.last_receipt.completion_tokens, channel.last_receipt.finish) == (2, "length")


def test_the_async_client_is_verified_too(proxy, tmp_path):
    channel = open_channel(proxy, tmp_path, model=CHAT)

    async def run():
        c = client(proxy, channel, cls=openai.AsyncOpenAI)
        msg = [{"role": "user", "content": "alpha beta"}]
        answer = await c.chat.completions.create(model=CHAT, messages=msg)
        assert answer.choices[0].message.content == "beta alpha"
        first = channel.last_receipt
        stream = await c.chat.completions.create(model=CHAT, messages=msg, stream=True)
        text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
        assert text == "beta alpha"
        return first, receipt_of(stream)

    first, second = asyncio.run(run())
    assert (first.seq, second.seq) == (1, 2)
    embed = open_channel(proxy, tmp_path, name="embed.json")

    async def embed_once():
        c = client(proxy, embed, cls=openai.AsyncOpenAI)
        return await c.embeddings.create(model=EMBED, input="hello")

    assert len(asyncio.run(embed_once()).data[0].embedding) == 384
    assert embed.last_receipt.seq == 1


class Doctor(hx.HTTPTransport):
    """Sends for real, then changes the answer as `change(headers, body)` says."""

    def __init__(self, change):
        super().__init__()
        self.change = change

    def handle_request(self, request):
        response = super().handle_request(request)
        body = response.read()
        headers = dict(response.headers)
        headers.pop("content-length", None)
        headers.pop("transfer-encoding", None)
        headers, body = self.change(headers, body)
        return hx.Response(response.status_code, headers=headers, content=body, request=request)


def tamper_bundle(text):
    """The receipt bundle (hex) with its host checkpoint's root altered: the receipt is no
    longer included under the checkpoint it carries, whatever the proof's length."""
    _, js = tc.decode_value("SignedReceipt", bytes.fromhex(text))
    v = json.loads(js)
    root = v["checkpoint"]["root"]
    v["checkpoint"]["root"] = ("0" if root[0] != "0" else "1") + root[1:]
    return tc.encode_value("SignedReceipt", json.dumps(v)).hex()


def test_a_tampered_receipt_raises(proxy, tmp_path):
    def tamper(headers, body):
        headers["x-tally-receipt"] = tamper_bundle(headers["x-tally-receipt"])
        return headers, body

    c = client(proxy, open_channel(proxy, tmp_path), inner=Doctor(tamper))
    with pytest.raises(tc.ReceiptError) as e:
        c.embeddings.create(model=EMBED, input="hello")
    assert e.value.code == "host_inclusion"

    def tamper_stream(headers, body):
        head, _, tail = body.rpartition(b"data: ")
        return headers, head + b"data: " + tamper_bundle(tail.rstrip(b"\n").decode()).encode() + b"\n\n"

    c = client(proxy, open_channel(proxy, tmp_path, model=CHAT, name="chat.json"), inner=Doctor(tamper_stream))
    with pytest.raises(tc.ReceiptError) as e:
        list(c.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "a b"}], stream=True))
    assert e.value.code == "host_inclusion"

    def inflate_usage(headers, body):
        answer = json.loads(body)
        answer["usage"]["prompt_tokens"] += 1
        return headers, json.dumps(answer).encode()

    c = client(proxy, open_channel(proxy, tmp_path, name="usage.json"), inner=Doctor(inflate_usage))
    with pytest.raises(tc.ReceiptError) as e:
        c.embeddings.create(model=EMBED, input="hello")
    assert e.value.code == "response_digest"


def test_a_receipt_for_another_request_raises(proxy, tmp_path):
    first = {}

    def replay(headers, body):
        if not first:
            first.update(headers=headers, body=body)
        return dict(first["headers"]), first["body"]

    channel = open_channel(proxy, tmp_path)
    c = client(proxy, channel, inner=Doctor(replay))
    c.embeddings.create(model=EMBED, input="first")
    with pytest.raises(tc.ReceiptError) as e:
        c.embeddings.create(model=EMBED, input="second")
    assert e.value.code == "request_digest"
    # The same bytes again: the old receipt carries the old authorisation.
    with pytest.raises(tc.ReceiptError) as e:
        c.embeddings.create(model=EMBED, input="first")
    assert e.value.code == "authorization_mismatch"
    assert channel.status["last_receipt_seq"] == 1


def test_a_missing_receipt_raises(proxy, tmp_path):
    def strip(headers, body):
        headers.pop("x-tally-receipt")
        return headers, body

    c = client(proxy, open_channel(proxy, tmp_path), inner=Doctor(strip))
    with pytest.raises(tc.ReceiptError) as e:
        c.embeddings.create(model=EMBED, input="hello")
    assert e.value.code == "no_receipt"

    def strip_event(headers, body):
        return headers, body[: body.rindex(b"event: tally.receipt")]

    c = client(proxy, open_channel(proxy, tmp_path, model=CHAT, name="chat.json"), inner=Doctor(strip_event))
    with pytest.raises(tc.ReceiptError) as e:
        list(c.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "x"}], stream=True))
    assert e.value.code == "no_receipt"


def test_a_stale_seq_is_refused_by_the_proxy(proxy, tmp_path):
    key = tc.Key.generate(tmp_path / "payer.key")
    state = tmp_path / "channel.json"
    channel = open_channel(proxy, tmp_path, key=key, lease=1)
    c = client(proxy, channel)
    c.embeddings.create(model=EMBED, input="one")
    shutil.copy(state, tmp_path / "backup.json")  # reserved_seq 1
    c.embeddings.create(model=EMBED, input="two")
    channel.close()
    with pytest.raises(tc.ChannelError) as e:
        channel.authorize(b"{}")
    assert e.value.code == "closed"
    shutil.copy(tmp_path / "backup.json", state)  # an old backup restored: seq 2 again
    c = client(proxy, open_channel(proxy, tmp_path, key=key, lease=1))
    with pytest.raises(openai.APIStatusError) as e:
        c.embeddings.create(model=EMBED, input="three")
    assert (e.value.status_code, e.value.code) == (402, "replayed")
    # The next seq is fresh again.
    c.embeddings.create(model=EMBED, input="four")


def test_the_cap_is_never_exceeded(proxy, tmp_path):
    # The proxy refuses a call the rest of the cap might not pay for (its upper estimate
    # of the prompt: body bytes + 1024 tokens), before forwarding it.
    tiny = open_channel(proxy, tmp_path, name="tiny.json", cap=1000)
    with pytest.raises(openai.APIStatusError) as e:
        client(proxy, tiny).embeddings.create(model=EMBED, input="ab cd")
    # The channel lowers max_fee to what is left under the cap, so either code says it.
    assert e.value.status_code == 402 and e.value.code in ("fee_above_max", "over_cap")
    assert tiny.status["total"] == 0 and tiny.last_receipt is None
    worst = int(re.search(r"may cost (\d+)", str(e.value)).group(1))
    # A cap that pays for one such call: the first is served, the second refused.
    channel = open_channel(proxy, tmp_path, cap=worst + 50)
    c = client(proxy, channel)
    c.embeddings.create(model=EMBED, input="ab cd")
    assert 0 < channel.last_receipt.channel_total <= worst + 50
    with pytest.raises(openai.APIStatusError) as e:
        c.embeddings.create(model=EMBED, input="ab cd")
    assert e.value.status_code == 402 and e.value.code in ("fee_above_max", "over_cap")
    assert channel.status["total"] == channel.last_receipt.channel_total


PAYER = textwrap.dedent("""
    import json, sys, time
    import openai
    import tally_client as tc
    from tally_client.openai import wrap
    env = json.load(open(sys.argv[1]))
    key = tc.Key.load(sys.argv[2])
    schedule = tc.Schedule.load(env["models"]["all-MiniLM-L6-v2"]["schedule"])
    try:
        channel = tc.Channel(key, env["host"], schedule, chain_id=env["chain_id"],
                             contract=env["contract"], cap=10**9, state=sys.argv[3], lease=4)
    except tc.ChannelError as e:
        print("error", e.code, flush=True)
        sys.exit(3)
    c = wrap(openai.OpenAI(base_url=env["proxy"] + "/v1", api_key="x", max_retries=0), channel)
    for i in range(int(sys.argv[4])):
        try:
            c.embeddings.create(model="all-MiniLM-L6-v2", input=f"call {i}")
        except openai.APIStatusError as e:
            print("refused", e.code, flush=True)
            sys.exit(4)
        print("receipt", channel.last_receipt.seq, flush=True)
    print("done", flush=True)
""")


def test_a_payer_killed_with_sigkill_resumes_without_reusing_a_seq(proxy, tmp_path):
    script = tmp_path / "payer.py"
    script.write_text(PAYER)
    key = tmp_path / "payer.key"
    tc.Key.generate(key)
    state = tmp_path / "channel.json"
    env_json = os.path.join(proxy["dir"], "env.json")
    args = [sys.executable, str(script), env_json, str(key), str(state)]
    first = subprocess.Popen(args + ["1000"], stdout=subprocess.PIPE, text=True)
    seqs = []
    while len(seqs) < 6:
        line = first.stdout.readline()
        assert line.startswith("receipt"), line
        seqs.append(int(line.split()[1]))
    # While it runs, a second payer on the same channel gets a clear error.
    second = subprocess.run(args + ["1"], capture_output=True, text=True, timeout=60)
    assert (second.returncode, second.stdout.split()) == (3, ["error", "channel_locked"])
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL
    rest = [line for line in first.stdout.read().split("\n") if line.startswith("receipt")]
    seqs += [int(line.split()[1]) for line in rest]
    # Restarted: every call is accepted (no `replayed`), every seq is new.
    again = subprocess.run(args + ["3"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    new = [int(line.split()[1]) for line in again.stdout.split("\n") if line.startswith("receipt")]
    assert len(new) == 3
    assert min(new) > max(seqs), (seqs, new)
    assert new == sorted(new)
