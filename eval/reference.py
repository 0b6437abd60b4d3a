#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""PyTorch reference forward pass of an HF-layout LLaMA model.

Reads config.json and model.safetensors (parsed here with numpy, no
safetensors package needed), computes fp32 logits from the fp16 weights for
a token sequence, with K and V rounded to fp16 as the kvsink cache stores
them, and either writes them (float32 raw, [n][vocab]) or compares them with
a file written by `kvsink-eval logits`.

usage: reference.py --model DIR --tokens 0,5,7 [-o OUT] [--compare FILE --tol 1e-3]
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch


def load_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen])
    base, out = 8 + hlen, {}
    dt = {"F16": np.float16, "F32": np.float32}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, en = e["data_offsets"]
        arr = np.frombuffer(raw[base + b:base + en], dtype=dt[e["dtype"]]).reshape(e["shape"])
        out[name] = torch.from_numpy(arr.astype(np.float32))
    return out


def rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward(model_dir, tokens):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    W = load_safetensors(os.path.join(model_dir, "model.safetensors"))
    H, KVH = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg["hidden_size"]
    hd = cfg.get("head_dim", D // H)
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
    n = len(tokens)
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    freqs = torch.outer(torch.arange(n).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    x = W["model.embed_tokens.weight"][torch.tensor(tokens)]
    mask = torch.full((n, n), float("-inf")).triu(1)
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        h = rms(x, W[p + "input_layernorm.weight"], eps)
        q = (h @ W[p + "self_attn.q_proj.weight"].T).view(n, H, hd).transpose(0, 1)
        k = (h @ W[p + "self_attn.k_proj.weight"].T).view(n, KVH, hd).transpose(0, 1)
        v = (h @ W[p + "self_attn.v_proj.weight"].T).view(n, KVH, hd).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = k.half().float(), v.half().float()  # the cache holds fp16 K/V
        k = k.repeat_interleave(H // KVH, dim=0)
        v = v.repeat_interleave(H // KVH, dim=0)
        a = torch.softmax(q @ k.transpose(1, 2) / hd ** 0.5 + mask, dim=-1)
        o = (a @ v).transpose(0, 1).reshape(n, H * hd)
        x = x + o @ W[p + "self_attn.o_proj.weight"].T
        h = rms(x, W[p + "post_attention_layernorm.weight"], eps)
        g = torch.nn.functional.silu(h @ W[p + "mlp.gate_proj.weight"].T)
        x = x + (g * (h @ W[p + "mlp.up_proj.weight"].T)) @ W[p + "mlp.down_proj.weight"].T
    x = rms(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else W["lm_head.weight"]
    return x @ head.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", required=True, help="comma-separated ids")
    ap.add_argument("-o", "--out")
    ap.add_argument("--compare")
    ap.add_argument("--tol", type=float, default=1e-3)
    a = ap.parse_args()
    tokens = [int(t) for t in a.tokens.split(",") if t]
    with torch.no_grad():
        logits = forward(a.model, tokens).numpy().astype(np.float32)
    if a.out:
        logits.tofile(a.out)
    if a.compare:
        other = np.fromfile(a.compare, dtype=np.float32)
        if other.size != logits.size:
            print("size mismatch: %d vs %d" % (other.size, logits.size))
            return 1
        other = other.reshape(logits.shape)
        rel = np.abs(other - logits).max() / np.abs(logits).max()
        print("max abs diff / max abs logit = %.3g (tol %.3g)" % (rel, a.tol))
        return 0 if rel <= a.tol else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
