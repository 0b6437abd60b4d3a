#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Re-save a kvsink test model (eval/TOKENIZER.md layout) as a standard
Hugging Face checkpoint: a tokenizer.json as the tokenizers library writes
a byte-level BPE (ByteLevel pre-tokenizer with the GPT-2 regex, the
special tokens first, then the 256 byte symbols in code point order, then
one id per merge in merge order, merges as ["a", "b"] lists), the weights
in N safetensors shards with model.safetensors.index.json, in F32 (exact
from F16), BF16 or F16, tied or separate LM head.

Byte symbols move (ours: byte b is id 2 + b), so the embedding rows (and
the LM head's) are permuted to match; the forward pass is unchanged.
Writes DST/perm.txt: line i = the new id of old id i. numpy only.

  to-hf.py SRC DST [--shards N] [--dtype F32|BF16|F16] [--untied]"""
import argparse
import json
import os
import struct
import sys

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        dt = {"F16": np.float16, "F32": np.float32}[e["dtype"]]
        b, end = e["data_offsets"]
        out[name] = np.frombuffer(data[b:end], dtype=dt).reshape(e["shape"]).astype(np.float32)
    return out


def to_bytes(a, dtype):
    a = np.ascontiguousarray(a, dtype=np.float32)
    if dtype == "F32":
        return a.tobytes()
    if dtype == "F16":
        return a.astype(np.float16).tobytes()
    # BF16: the top half of the fp32 bits, rounded to nearest even
    u = a.view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16).tobytes()


def write_safetensors(path, tensors, dtype):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        b = to_bytes(tensors[name], dtype)
        header[name] = {"dtype": dtype, "shape": list(tensors[name].shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--dtype", default="F32", choices=["F32", "BF16", "F16"])
    ap.add_argument("--untied", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.dst, exist_ok=True)

    tok = json.load(open(os.path.join(a.src, "tokenizer.json")))
    vocab, merges = tok["model"]["vocab"], tok["model"]["merges"]
    nspecial = len(tok["added_tokens"])
    b2u = bytes_to_unicode()
    # the tokenizers library's alphabet order: byte symbols sorted by code point
    order = sorted(range(256), key=lambda b: b2u[b])
    perm = list(range(len(vocab)))
    for rank, b in enumerate(order):
        perm[nspecial + b] = nspecial + rank
    new_vocab = {}
    for s, i in vocab.items():
        new_vocab[s] = perm[i]
    assert sorted(new_vocab.values()) == list(range(len(vocab)))
    new_vocab = dict(sorted(new_vocab.items(), key=lambda kv: kv[1]))
    tok["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                            "use_regex": True}
    tok["post_processor"] = None
    tok["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                      "use_regex": True}
    tok["model"] = {"type": "BPE", "dropout": None, "unk_token": None,
                    "continuing_subword_prefix": None, "end_of_word_suffix": None,
                    "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                    "vocab": new_vocab, "merges": [m.split(" ") for m in merges]}
    with open(os.path.join(a.dst, "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False)
    with open(os.path.join(a.dst, "perm.txt"), "w") as f:
        f.write("".join("%d\n" % p for p in perm))

    cfg = json.load(open(os.path.join(a.src, "config.json")))
    cfg["torch_dtype"] = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}[a.dtype]
    cfg["tie_word_embeddings"] = not a.untied
    with open(os.path.join(a.dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)

    w = read_safetensors(os.path.join(a.src, "model.safetensors"))
    inv = np.argsort(np.array(perm))  # row r of the new table = old row inv[r]
    w["model.embed_tokens.weight"] = w["model.embed_tokens.weight"][inv]
    if "lm_head.weight" in w:
        w["lm_head.weight"] = w["lm_head.weight"][inv]
    elif a.untied:
        w["lm_head.weight"] = w["model.embed_tokens.weight"].copy()
    if not a.untied:
        w.pop("lm_head.weight", None)
    names = sorted(w, key=lambda n: (n.startswith("lm_head"), n))
    shards = [names[k * len(names) // a.shards:(k + 1) * len(names) // a.shards]
              for k in range(a.shards)]
    weight_map, total = {}, 0
    for k, part in enumerate(shards):
        fn = "model-%05d-of-%05d.safetensors" % (k + 1, a.shards)
        write_safetensors(os.path.join(a.dst, fn), {n: w[n] for n in part}, a.dtype)
        for n in part:
            weight_map[n] = fn
            total += w[n].size * (4 if a.dtype == "F32" else 2)
    with open(os.path.join(a.dst, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
