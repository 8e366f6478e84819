"""The upstream behind `tally proxy` in the SDKs' tests: the proxy tests' MiniLM embeddings
server (attestor/tests/upstream/embeddings_server.py, reused as it is) plus a small
deterministic streaming chat model on /v1/chat/completions.

The chat model answers with the words of the last user message in reverse order, one word
per token, at most `max_tokens` (or `max_completion_tokens`) of them; `usage` counts the
words of every message as prompt tokens. Streams send one chunk per word, the usage chunk
when `stream_options.include_usage` is set (the proxy always sets it), then `[DONE]`.

Usage: python3 upstream.py PORT_FILE (as embeddings_server.py).
"""

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "attestor", "tests", "upstream"))

import embeddings_server  # noqa: E402  (loads MiniLM once)
from http.server import ThreadingHTTPServer  # noqa: E402

CHAT_MODEL = "echo-chat"


def words_of(messages):
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            out.extend(content.split())
    return out


class Handler(embeddings_server.Handler):
    def do_POST(self):
        if self.path != "/v1/chat/completions":
            return super().do_POST()
        length = int(self.headers.get("content-length") or 0)
        try:
            req = json.loads(self.rfile.read(length))
            messages = req["messages"]
        except (ValueError, KeyError, TypeError):
            self.reply(400, {"error": {"message": "expected {model, messages}", "type": "invalid_request_error"}})
            return
        prompt = len(words_of(messages)) + 2 * len(messages)
        last = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        reply = list(reversed(str(last).split()))
        limit = req.get("max_completion_tokens") or req.get("max_tokens")
        finish = "stop"
        if isinstance(limit, int) and len(reply) > limit:
            reply, finish = reply[:limit], "length"
        usage = {"prompt_tokens": prompt, "completion_tokens": len(reply), "total_tokens": prompt + len(reply)}
        created = int(time.time())
        if not req.get("stream"):
            self.reply(200, {
                "id": "chatcmpl-echo", "object": "chat.completion", "created": created, "model": CHAT_MODEL,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(reply)},
                             "finish_reason": finish}],
                "usage": usage,
            })
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()

        def event(obj):
            self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
            self.wfile.flush()

        base = {"id": "chatcmpl-echo", "object": "chat.completion.chunk", "created": created, "model": CHAT_MODEL}
        event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
        for i, w in enumerate(reply):
            event({**base, "choices": [{"index": 0, "delta": {"content": (" " if i else "") + w}, "finish_reason": None}]})
        event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if (req.get("stream_options") or {}).get("include_usage"):
            event({**base, "choices": [], "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_file = sys.argv[1]
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
