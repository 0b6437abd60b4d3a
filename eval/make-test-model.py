#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Write a small random LLaMA model in HF layout for the eval tests.

config.json, model.safetensors (fp16) and a tokenizer.json following the
kvsink tokenizer spec (eval/TOKENIZER.md), trained here on a built-in text
with a few hundred merges. Deterministic for a given --seed.

usage: make-test-model.py OUTDIR [--seed N] [--merges N]
"""
import argparse
import json
import os
import struct

import numpy as np

TEXT = """The kvsink daemon keeps a quantized, shared KV cache for LLM inference.
Clients link libkvsink and push K/V over a shared-memory segment; control
messages travel as msgpack over a Unix socket. Sink tokens are predicted from
massive activations and kept in 16-bit, everything else is stored at 2-8 bits.
int main(int argc, char **argv) { return argc > 1 ? 0 : 1; }
    def forward(self, x):  # 4 spaces, tabs\tand\r\nnewlines
1234567890 3.14159 0x1F -42 a+b=c; [x, y] {z} <|not special|> naive cafe
"""


def byte_class(c):
    if (65 <= c <= 90) or (97 <= c <= 122) or c >= 0x80:
        return "L"
    if 48 <= c <= 57:
        return "D"
    if c in (0x20, 0x09, 0x0A, 0x0D, 0x0B, 0x0C):
        return "S"
    return "P"


def word_end(b, i):
    c = byte_class(b[i])
    if c == "D":
        return i + 1
    j = i + 1
    while j < len(b) and byte_class(b[j]) == c:
        j += 1
    return j


def pretokenize(b):
    out, i, n = [], 0, len(b)
    while i < n:
        if byte_class(b[i]) != "S":
            j = word_end(b, i)
            out.append(b[i:j])
            i = j
            continue
        j = i
        while j < n and byte_class(b[j]) == "S":
            j += 1
        if j < n and b[j - 1] == 0x20:
            if j - i > 1:
                out.append(b[i:j - 1])
                i = j - 1
            else:
                e = word_end(b, j)
                out.append(b[i:e])
                i = e
        else:
            out.append(b[i:j])
            i = j
    return out


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def train_bpe(text, n_merges):
    words = [[2 + x for x in w] for w in pretokenize(text.encode())]
    tok_bytes = {2 + b: bytes([b]) for b in range(256)}
    merges = []
    for r in range(n_merges):
        counts = {}
        for w in words:
            for p in zip(w, w[1:]):
                counts[p] = counts.get(p, 0) + 1
        if counts:
            pair = max(counts, key=lambda p: (counts[p], -p[0], -p[1]))
        else:  # text exhausted: merge fresh pairs of bytes so the size is exact
            pair = (2 + (r % 256), 2 + ((r * 7 + 1) % 256))
            while any(m == pair for m in merges) or tok_bytes[pair[0]] + tok_bytes[pair[1]] in tok_bytes.values():
                pair = (pair[0], 2 + ((pair[1] - 1) % 256))
        new = 258 + r
        merges.append(pair)
        tok_bytes[new] = tok_bytes[pair[0]] + tok_bytes[pair[1]]
        for w in words:
            i = 0
            while i < len(w) - 1:
                if (w[i], w[i + 1]) == pair:
                    w[i:i + 2] = [new]
                i += 1
    return tok_bytes, merges


def write_tokenizer(path, tok_bytes, merges):
    b2u = bytes_to_unicode()
    s = lambda bb: "".join(b2u[x] for x in bb)
    vocab = {"<|bos|>": 0, "<|eos|>": 1}
    for i in sorted(tok_bytes):
        vocab[s(tok_bytes[i])] = i
    special = lambda i, c: {"id": i, "content": c, "single_word": False, "lstrip": False,
                            "rstrip": False, "normalized": False, "special": True}
    doc = {"version": "1.0", "truncation": None, "padding": None,
           "added_tokens": [special(0, "<|bos|>"), special(1, "<|eos|>")],
           "normalizer": None,
           "pre_tokenizer": {"type": "kvsink_bytes", "description": "see eval/TOKENIZER.md"},
           "post_processor": None, "decoder": {"type": "ByteLevel"},
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "byte_fallback": False,
                     "vocab": vocab,
                     "merges": [s(tok_bytes[a]) + " " + s(tok_bytes[b]) for a, b in merges]}}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)


def write_safetensors(path, tensors):
    header, off, blobs = {}, 0, []
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr.astype(np.float16)).tobytes()
        header[name] = {"dtype": "F16", "shape": list(arr.shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
        blobs.append(data)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--merges", type=int, default=254)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--full-size", action="store_true",
                    help="the shipped model's shapes (vocab 8192, hidden 384, 8 layers), for timing")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if a.full_size:
        a.merges = 8192 - 258
    tok_bytes, merges = train_bpe(TEXT, a.merges)
    write_tokenizer(os.path.join(a.out, "tokenizer.json"), tok_bytes, merges)
    V, D, F, H, KVH, HD, L = 258 + a.merges, 64, 128, 4, 2, 16, a.layers
    if a.full_size:
        D, F, H, KVH, HD, L = 384, 1024, 6, 2, 64, 8
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": V,
           "hidden_size": D, "intermediate_size": F, "num_hidden_layers": L,
           "num_attention_heads": H, "num_key_value_heads": KVH, "head_dim": HD,
           "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 1024 if a.full_size else 512,
           "bos_token_id": 0, "eos_token_id": 1, "tie_word_embeddings": a.full_size,
           "torch_dtype": "float16"}
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    rng = np.random.default_rng(a.seed)
    w = lambda o, i: rng.standard_normal((o, i)) / np.sqrt(i)
    t = {"model.embed_tokens.weight": 0.5 * rng.standard_normal((V, D)),
         "model.norm.weight": 1 + 0.1 * rng.standard_normal(D)}
    for l in range(L):
        p = "model.layers.%d." % l
        t[p + "input_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(D)
        t[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(D)
        # larger q/k so attention is peaked rather than uniform
        t[p + "self_attn.q_proj.weight"] = 2 * w(H * HD, D)
        t[p + "self_attn.k_proj.weight"] = 2 * w(KVH * HD, D)
        t[p + "self_attn.v_proj.weight"] = w(KVH * HD, D)
        t[p + "self_attn.o_proj.weight"] = w(D, H * HD)
        t[p + "mlp.gate_proj.weight"] = w(F, D)
        t[p + "mlp.up_proj.weight"] = w(F, D)
        t[p + "mlp.down_proj.weight"] = w(D, F)
    # A planted massive activation: BOS carries large values in two fixed
    # channels of the residual stream, as trained models' sink tokens do, so
    # that calibration finds (l_E = 0, C* = those channels) and the KVSink
    # path can be tested end to end.
    if not a.full_size:
        # separate LM head (the shipped model ties it: both paths get tested)
        t["lm_head.weight"] = 0.3 * rng.standard_normal((V, D)) / np.sqrt(D) * 4
        t["model.embed_tokens.weight"][0, 5] = 40.0
        t["model.embed_tokens.weight"][0, 17] = -40.0
    write_safetensors(os.path.join(a.out, "model.safetensors"), t)


if __name__ == "__main__":
    main()
