#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Byte-level BPE for the kvsink test model (spec: eval/TOKENIZER.md).

  python3 eval/bpe.py train --input eval/data/train.txt --sample-mb 20 \
      --vocab 8192 --out models/kvsink-tiny/tokenizer.json
  python3 eval/bpe.py encode --tokenizer models/kvsink-tiny/tokenizer.json FILE

Standard library only, so it runs under /usr/bin/python3 here and on the
GPU machine.  Ids: 0 <|bos|>, 1 <|eos|>, 2+b byte b, 258+r merge r.
"""
import argparse
import heapq
import json
import re
import sys
from collections import Counter, defaultdict

BOS, EOS, NBASE = 0, 1, 258
DOC_SEP = b"\n\x1e\n"  # corpus document separator (eval/make-corpus.sh)

_L = rb"A-Za-z\x80-\xff"
_D = rb"0-9"
_S = rb" \t\n\r\x0b\x0c"
# Pre-tokenizer as a regex; alternation order implements the spec:
# a lone space before a non-space glues to the next class run; a longer
# whitespace run ending in such a space gives that space up; else a
# whitespace run is a chunk of its own.
CHUNK_RE = re.compile(
    rb" [" + _L + rb"]+| [" + _D + rb"]| [^" + _L + _D + _S + rb"]+"
    rb"|[" + _L + rb"]+|[" + _D + rb"]|[^" + _L + _D + _S + rb"]+"
    rb"|[" + _S + rb"]+(?= [^" + _S + rb"])|[" + _S + rb"]+")


def chunks(data):
    """Split bytes into pre-tokenizer chunks (list of bytes)."""
    return CHUNK_RE.findall(data)


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character map."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) +
          list(range(0xAE, 0x100)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


# --------------------------------------------------------------- training

def train(data, vocab_size, log=sys.stderr):
    """Learn vocab_size - 258 merges from bytes; returns [(a, b)] id pairs."""
    counts = Counter(chunks(data))
    words = [[2 + c for c in w] for w in counts]
    freqs = list(counts.values())
    pair_cnt = defaultdict(int)
    where = defaultdict(set)  # pair -> indices of words containing it
    for wi, w in enumerate(words):
        f = freqs[wi]
        for p in zip(w, w[1:]):
            pair_cnt[p] += f
            where[p].add(wi)
    heap = [(-c, p) for p, c in pair_cnt.items()]
    heapq.heapify(heap)
    merges = []
    nmerges = vocab_size - NBASE
    toks = [b"", b""] + [bytes([b]) for b in range(256)]
    have = set(toks[2:])
    banned = set()
    while len(merges) < nmerges and heap:
        negc, p = heapq.heappop(heap)
        if pair_cnt.get(p, 0) != -negc or negc == 0:
            continue  # stale heap entry
        if p in banned:
            continue
        tb = toks[p[0]] + toks[p[1]]
        if tb in have:
            # same bytes already reachable by another merge: one id each
            banned.add(p)
            continue
        have.add(tb)
        toks.append(tb)
        new = NBASE + len(merges)
        merges.append(p)
        touched = {}
        for wi in list(where.pop(p, ())):
            w = words[wi]
            f = freqs[wi]
            for q in zip(w, w[1:]):
                pair_cnt[q] -= f
                touched[q] = 1
            out = []
            i = 0
            n = len(w)
            while i < n:
                if i + 1 < n and w[i] == p[0] and w[i + 1] == p[1]:
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            words[wi] = out
            for q in zip(out, out[1:]):
                pair_cnt[q] += f
                touched[q] = 1
                where[q].add(wi)
        for q in touched:
            c = pair_cnt.get(q, 0)
            if c <= 0:
                pair_cnt.pop(q, None)
                where.pop(q, None)
            else:
                heapq.heappush(heap, (-c, q))
        if log and len(merges) % 1000 == 0:
            print("bpe: %d merges, last count %d" % (len(merges), -negc),
                  file=log, flush=True)
    return merges


def save(path, merges):
    b2u = bytes_to_unicode()
    toks = [None, None] + [bytes([b]) for b in range(256)]
    for a, b in merges:
        toks.append(toks[a] + toks[b])

    def s(t):
        return "".join(b2u[c] for c in t)
    vocab = {"<|bos|>": BOS, "<|eos|>": EOS}
    for i in range(2, len(toks)):
        key = s(toks[i])
        if key in vocab:
            raise ValueError("duplicate token %r" % toks[i])
        vocab[key] = i
    special = dict(single_word=False, lstrip=False, rstrip=False,
                   normalized=False, special=True)
    doc = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [dict(id=BOS, content="<|bos|>", **special),
                         dict(id=EOS, content="<|eos|>", **special)],
        "normalizer": None,
        "pre_tokenizer": {"type": "kvsink_bytes",
                          "description": "see eval/TOKENIZER.md"},
        "post_processor": None,
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "byte_fallback": False, "vocab": vocab,
                  "merges": ["%s %s" % (s(toks[a]), s(toks[b]))
                             for a, b in merges]},
    }
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, ensure_ascii=False, indent=None)
        fh.write("\n")


# --------------------------------------------------------------- encoding

class Tokenizer:
    def __init__(self, path):
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        u2b = {u: b for b, u in bytes_to_unicode().items()}
        vocab = doc["model"]["vocab"]
        self.ranks = {}
        self.tok_bytes = [b"", b""] + [bytes([b]) for b in range(256)]
        for r, m in enumerate(doc["model"]["merges"]):
            a, b = m.split(" ")
            ia, ib = vocab[a], vocab[b]
            self.ranks[(ia, ib)] = r
            new = NBASE + r
            if vocab["".join([a, b])] != new:
                raise ValueError("merge %d does not create id %d" % (r, new))
            self.tok_bytes.append(bytes(u2b[c] for c in a + b))
        self.vocab_size = len(self.tok_bytes)
        self.cache = {}

    def encode_chunk(self, ch):
        ids = self.cache.get(ch)
        if ids is not None:
            return ids
        w = [2 + c for c in ch]
        ranks = self.ranks
        while len(w) > 1:
            best, bi = None, -1
            for i in range(len(w) - 1):
                r = ranks.get((w[i], w[i + 1]))
                if r is not None and (best is None or r < best):
                    best, bi = r, i
            if best is None:
                break
            w[bi:bi + 2] = [NBASE + best]
        if len(self.cache) < 1 << 20:
            self.cache[ch] = w
        return w

    def encode(self, data):
        out = []
        for ch in chunks(data):
            out.extend(self.encode_chunk(ch))
        return out

    def encode_docs(self, docs):
        """Encode a list of documents (bytes), BOS at each document start."""
        out = []
        for d in docs:
            out.append(BOS)
            out.extend(self.encode(d))
        return out

    def decode(self, ids):
        return b"".join(self.tok_bytes[i] for i in ids)


def read_docs(path):
    with open(path, "rb") as fh:
        data = fh.read()
    return [d.strip(b"\n") for d in data.split(DOC_SEP) if d.strip()]


def sample_docs(path, mb):
    """Deterministic sample: every k-th document until about mb MB."""
    docs = read_docs(path)
    total = sum(len(d) for d in docs)
    k = max(1, total // (mb << 20))
    return b"\n".join(docs[::k])


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--input", required=True)
    t.add_argument("--sample-mb", type=int, default=20)
    t.add_argument("--vocab", type=int, default=8192)
    t.add_argument("--out", required=True)
    e = sub.add_parser("encode")
    e.add_argument("--tokenizer", required=True)
    e.add_argument("--docs", action="store_true",
                   help="FILE is a corpus file: split at 0x1e lines, BOS each")
    e.add_argument("file")
    a = ap.parse_args()
    if a.cmd == "train":
        data = sample_docs(a.input, a.sample_mb)
        print("bpe: training on %d bytes" % len(data), file=sys.stderr)
        save(a.out, train(data, a.vocab))
    else:
        tok = Tokenizer(a.tokenizer)
        if a.docs:
            ids = tok.encode_docs(read_docs(a.file))
        else:
            with open(a.file, "rb") as fh:
                ids = tok.encode(fh.read())
        sys.stdout.write(" ".join(map(str, ids)) + "\n")


if __name__ == "__main__":
    main()
