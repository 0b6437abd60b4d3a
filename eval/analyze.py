#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Sink and massive-activation statistics of an HF folder (eval/TRAINING.md).

  python3 eval/analyze.py --model models/kvsink-tiny --text eval/data/valid.txt

Packs held-out documents (BOS at each start) into contexts of 1024 tokens
holding several documents, runs the model with the shipped fp16 weights and
prints per layer (residual stream after the layer):
  - sink_pos0 / sink_doc: max|h| of position 0 / of the other document-start
    tokens, over the median token's max|h| (massive activations);
  - channels: the channels holding the largest |h| at document starts;
  - attn_sink: attention mass on sink keys (position 0 and document starts
    at or before the query), averaged over heads and query positions;
    attn_pos0: the part of it on position 0 alone; uniform: what causal
    uniform attention would give to the same keys.
Then the validation perplexity on the same contexts.
Runs on CPU (torch 1.13 here) or CUDA.
"""
import argparse
import math
import os
import sys
from collections import Counter

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bpe  # noqa: E402
import train  # noqa: E402


def contexts(tok, path, seq, n, max_doc):
    """n windows of seq tokens: documents cut to at most max_doc tokens
    (so several fit), packed whole, each starting with BOS."""
    docs = bpe.read_docs(path)
    wins, cur = [], []
    for d in docs:
        ids = [bpe.BOS] + tok.encode(d[:max_doc * 8])[:max_doc - 1]
        if len(cur) + len(ids) > seq:
            if len(cur) < seq:
                # fill the tail with the start of this document
                cur += ids[:seq - len(cur)]
            wins.append(cur)
            cur = []
            if len(wins) == n:
                break
        cur += ids
    return torch.tensor(wins, dtype=torch.long)


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/kvsink-tiny")
    ap.add_argument("--text", default=os.path.join(HERE, "data", "valid.txt"))
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--ppl-windows", type=int, default=64)
    ap.add_argument("--max-doc", type=int, default=300)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available()
                    else "cpu")
    a = ap.parse_args()
    dev = a.device
    tok = bpe.Tokenizer(os.path.join(a.model, "tokenizer.json"))
    model = train.load_hf(a.model, dev)
    if dev == "cuda":
        model = model.half()  # fp16 weights and compute, as shipped
    # CPU: fp16 weights (exactly as shipped) computed in fp32
    model.eval()
    seq = model.c["max_position_embeddings"]
    wins = contexts(tok, a.text, seq, max(a.windows, a.ppl_windows),
                    a.max_doc)
    L = model.c["num_hidden_layers"]
    ratio0 = [[] for _ in range(L)]
    ratiod = [[] for _ in range(L)]
    chans = [Counter() for _ in range(L)]
    share = [[] for _ in range(L)]
    share0 = [[] for _ in range(L)]
    uni = []
    ndoc = 0
    for w in wins[:a.windows]:
        ids = w[None].to(dev)
        _, hs, ps = model(ids, collect=True)
        sink = (w == bpe.BOS).to(dev)
        sink[0] = True
        ndoc += int(sink.sum())
        T = len(w)
        causal = torch.ones(T, T, dtype=torch.bool, device=dev).tril()
        sinkmask = causal & sink[None, :]
        uni.append(float((sinkmask.sum(1).float() /
                          causal.sum(1).float())[1:].mean()))
        for li in range(L):
            h = hs[li][0].float().abs()             # T x d
            m = h.max(-1).values                    # T
            med = m.median()
            ratio0[li].append(float(m[0] / med))
            docs = sink.clone()
            docs[0] = False
            if docs.any():
                ratiod[li].append(float(m[docs].mean() / med))
            for t in sink.nonzero().flatten().tolist():
                chans[li][int(h[t].argmax())] += 1
            p = ps[li][0].float()                   # heads x T x T
            on = (p * sinkmask[None]).sum(-1)       # heads x T
            share[li].append(float(on[:, 1:].mean()))
            share0[li].append(float(p[:, 1:, 0].mean()))
    print("model %s, %d contexts of %d tokens, %.1f document starts each, "
          "device %s" % (a.model, a.windows, seq, ndoc / a.windows, dev))
    print("layer  sink_pos0  sink_doc  top channels (count)       "
          "attn_sink  attn_pos0  uniform")
    u = sum(uni) / len(uni)
    for li in range(L):
        def avg(x):
            return sum(x) / len(x) if x else float("nan")
        top = ", ".join("%d(%d)" % kv for kv in chans[li].most_common(3))
        print("%5d  %8.1fx  %7.1fx  %-26s %8.3f  %9.3f  %7.3f"
              % (li, avg(ratio0[li]), avg(ratiod[li]), top, avg(share[li]),
                 avg(share0[li]), u))
    tot, n = 0.0, 0
    for i in range(0, min(len(wins), a.ppl_windows), 4):
        w = wins[i:i + 4].to(dev)
        logits = model(w[:, :-1]).float()
        tgt = w[:, 1:]
        cnt = int((tgt != bpe.BOS).sum())
        tot += float(train.loss_fn(logits, tgt)) * cnt
        n += cnt
    print("validation perplexity (fp16 weights): %.3f over %d tokens"
          % (math.exp(tot / n), n))


if __name__ == "__main__":
    main()
