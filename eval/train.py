#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Train the kvsink test model (LLaMA layout, eval/TRAINING.md).

  python3 eval/train.py --data eval/data --tokenizer models/kvsink-tiny/tokenizer.json \
      --out OUTDIR --minutes 6 [--resume OUTDIR_OF_A_PREVIOUS_RUN]

Training windows are packed from whole documents and every window starts
at a BOS token, so position 0 and each document start become attention
sinks.  Writes OUTDIR/hf/{config.json,model.safetensors,tokenizer.json}
(fp16, written by our own safetensors writer).
"""
import argparse
import json
import lzma
import math
import os
import shutil
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bpe  # noqa: E402

CONFIG = dict(vocab_size=8192, hidden_size=384, intermediate_size=1024,
              num_hidden_layers=8, num_attention_heads=6,
              num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-5,
              rope_theta=10000.0, max_position_embeddings=1024)


# ------------------------------------------------------------------ model

class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


def rope_tables(seq, hd, theta, device):
    inv = 1.0 / theta ** (torch.arange(0, hd, 2, device=device).float() / hd)
    f = torch.outer(torch.arange(seq, device=device).float(), inv)
    emb = torch.cat([f, f], -1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], -1)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, hd = c["hidden_size"], c["head_dim"]
        self.nh, self.nkv, self.hd = (c["num_attention_heads"],
                                      c["num_key_value_heads"], hd)
        self.q_proj = nn.Linear(d, self.nh * hd, bias=False)
        self.k_proj = nn.Linear(d, self.nkv * hd, bias=False)
        self.v_proj = nn.Linear(d, self.nkv * hd, bias=False)
        self.o_proj = nn.Linear(self.nh * hd, d, bias=False)

    def forward(self, x, cos, sin, want_probs=False):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        cos, sin = cos[:T].to(q.dtype), sin[:T].to(q.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.nh // self.nkv
        k = k.repeat_interleave(rep, 1)
        v = v.repeat_interleave(rep, 1)
        probs = None
        if want_probs or not hasattr(F, "scaled_dot_product_attention"):
            s = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(self.hd)
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            s = s.masked_fill(~mask, float("-inf"))
            probs = s.softmax(-1)
            y = (probs @ v.float()).to(x.dtype)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).reshape(B, T, self.nh * self.hd)
        return self.o_proj(y), probs


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, i = c["hidden_size"], c["intermediate_size"]
        self.gate_proj = nn.Linear(d, i, bias=False)
        self.up_proj = nn.Linear(d, i, bias=False)
        self.down_proj = nn.Linear(i, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"],
                                                c["rms_norm_eps"])
        self.mlp = MLP(c)

    def forward(self, x, cos, sin, want_probs=False):
        a, p = self.self_attn(self.input_layernorm(x), cos, sin, want_probs)
        x = x + a
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, p


class Inner(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(Layer(c)
                                    for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class Llama(nn.Module):
    """Tied embeddings: lm_head is model.embed_tokens."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = Inner(c)
        cos, sin = rope_tables(c["max_position_embeddings"], c["head_dim"],
                               c["rope_theta"], "cpu")
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, ids, collect=False):
        """Logits; with collect=True also per-layer hidden states and
        attention probabilities (for eval/analyze.py)."""
        x = self.model.embed_tokens(ids)
        hs, ps = [], []
        for layer in self.model.layers:
            x, p = layer(x, self.cos, self.sin, collect)
            if collect:
                hs.append(x)
                ps.append(p)
        logits = self.model.norm(x) @ self.model.embed_tokens.weight.t()
        return (logits, hs, ps) if collect else logits


def init_weights(m, c):
    std = 0.02
    for n, p in m.named_parameters():
        if p.dim() == 2:
            s = std
            if n.endswith("o_proj.weight") or n.endswith("down_proj.weight"):
                s = std / math.sqrt(2 * c["num_hidden_layers"])
            nn.init.normal_(p, 0.0, s)


# ------------------------------------------------------------ safetensors

def save_safetensors(path, tensors):
    """Write {name: tensor} as fp16 safetensors (sorted names)."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu", torch.float16).contiguous()
        b = t.numpy().tobytes() if hasattr(t, "numpy") else bytes(t.storage())
        header[name] = {"dtype": "F16", "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(h)))
        fh.write(h)
        for b in blobs:
            fh.write(b)


def load_safetensors(path):
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(n))
        data = fh.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        assert meta["dtype"] == "F16", meta
        a, b = meta["data_offsets"]
        t = torch.frombuffer(bytearray(data[a:b]), dtype=torch.float16)
        out[name] = t.reshape(meta["shape"])
    return out


def export_hf(model, outdir, tokenizer_path):
    os.makedirs(outdir, exist_ok=True)
    sd = {k: v for k, v in model.state_dict().items()
          if k.startswith("model.")}
    save_safetensors(os.path.join(outdir, "model.safetensors"), sd)
    cfg = dict(architectures=["LlamaForCausalLM"], model_type="llama",
               bos_token_id=0, eos_token_id=1, tie_word_embeddings=True,
               torch_dtype="float16", hidden_act="silu",
               attention_bias=False, **CONFIG)
    with open(os.path.join(outdir, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2)
        fh.write("\n")
    shutil.copyfile(tokenizer_path, os.path.join(outdir, "tokenizer.json"))


def load_hf(folder, device="cpu"):
    with open(os.path.join(folder, "config.json")) as fh:
        cfg = json.load(fh)
    c = {k: cfg[k] for k in CONFIG}
    m = Llama(c)
    sd = load_safetensors(os.path.join(folder, "model.safetensors"))
    missing, unexpected = m.load_state_dict(
        {k: v.float() for k, v in sd.items()}, strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    return m.to(device)


# ------------------------------------------------------------------- data

_TOK = None


def _init_tok(path):
    global _TOK
    _TOK = bpe.Tokenizer(path)


def _enc(doc):
    return _TOK.encode(doc)


def read_corpus(data_dir, split):
    p = os.path.join(data_dir, split + ".txt")
    if not os.path.exists(p):
        with lzma.open(p + ".xz") as fh, open(p, "wb") as out:
            shutil.copyfileobj(fh, out)
    return bpe.read_docs(p)


def tokenize(data_dir, split, tok_path, procs):
    import multiprocessing as mp
    docs = read_corpus(data_dir, split)
    nbytes = sum(len(d) for d in docs)
    with mp.Pool(procs, _init_tok, (tok_path,)) as pool:
        return pool.map(_enc, docs, chunksize=8), nbytes


def pack(docs, seq, seed=0):
    """Windows of seq+1 tokens, each starting with BOS.  Long documents
    are cut into pieces of varied length (each piece gets its own BOS), so
    windows hold several document starts; a piece that does not fit ends
    the window and its rest opens the next piece with a fresh BOS."""
    import random
    rng = random.Random(seed)
    pieces = []
    for d in docs:
        i = 0
        while i < len(d):
            n = rng.randint(seq // 8, seq)
            pieces.append(d[i:i + n])
            i += n
    rng.shuffle(pieces)
    wins, cur = [], []
    for p in pieces:
        while p:
            room = seq + 1 - len(cur)
            take = p[:room - 1]
            cur.append(bpe.BOS)
            cur.extend(take)
            p = p[len(take):]
            if len(cur) >= seq:
                cur += [bpe.BOS] * (seq + 1 - len(cur))
                wins.append(cur)
                cur = []
    return torch.tensor(wins, dtype=torch.int32)


def loss_fn(logits, tgt):
    """Next-token loss; BOS targets (window filler, document ends) are
    not predicted."""
    tgt = tgt.long().masked_fill(tgt == bpe.BOS, -100)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                           tgt.reshape(-1), ignore_index=-100)


@torch.no_grad()
def evaluate(model, wins, bs, device, dtype):
    model.eval()
    tot, n = 0.0, 0
    for i in range(0, len(wins), bs):
        w = wins[i:i + bs].to(device)
        with torch.autocast("cuda", dtype=dtype, enabled=device == "cuda"):
            logits = model(w[:, :-1])
        tgt = w[:, 1:].long()
        cnt = int((tgt != bpe.BOS).sum())
        tot += float(loss_fn(logits, tgt)) * cnt
        n += cnt
    model.train()
    return math.exp(tot / n)


# ------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(HERE, "data"))
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=6.0,
                    help="wall time from program start to end of training")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--resume", help="HF folder to start from")
    ap.add_argument("--procs", type=int, default=os.cpu_count())
    ap.add_argument("--compile", type=int, default=1)
    a = ap.parse_args()
    seq = CONFIG["max_position_embeddings"]
    dev = "cuda"
    torch.manual_seed(0)
    t0 = time.time()
    train_docs, nbytes = tokenize(a.data, "train", a.tokenizer, a.procs)
    valid_docs, _ = tokenize(a.data, "valid", a.tokenizer, a.procs)
    ntok = sum(len(d) for d in train_docs)
    print("tokenized: %d train docs, %d tokens (%.2f bytes/token est.), "
          "%d valid docs in %.0f s" % (len(train_docs), ntok,
                                       nbytes / max(ntok, 1),
                                       len(valid_docs), time.time() - t0))
    train_w = pack(train_docs, seq, seed=1)
    valid_w = pack(valid_docs, seq, seed=2)[:256]
    print("windows: %d train, %d valid" % (len(train_w), len(valid_w)))

    if a.resume:
        model = load_hf(a.resume, dev)
    else:
        model = Llama(CONFIG)
        init_weights(model, CONFIG)
        model.to(dev)
    nparam = sum(p.numel() for p in model.parameters())
    print("parameters: %d" % nparam)
    decay = [p for p in model.parameters() if p.dim() == 2]
    nodecay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": nodecay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), fused=True)
    step_fn = torch.compile(model) if a.compile else model
    budget = a.minutes * 60 - (time.time() - t0)  # minutes count from start
    warm = 200 if not a.resume else 50
    g = torch.Generator().manual_seed(3)
    perm = torch.randperm(len(train_w), generator=g)
    pos, step, seen = 0, 0, 0
    t1 = time.time()
    while True:
        el = time.time() - t1
        if el > budget:
            break
        # cosine schedule over the wall-clock budget (steps unknown ahead)
        frac = el / budget
        lr = a.lr * min(1.0, (step + 1) / warm) * (0.1 + 0.9 * 0.5 *
                                                   (1 + math.cos(math.pi * frac)))
        for gr in opt.param_groups:
            gr["lr"] = lr
        if pos + a.batch > len(perm):
            perm = torch.randperm(len(train_w), generator=g)
            pos = 0
        w = train_w[perm[pos:pos + a.batch]].to(dev, non_blocking=True)
        pos += a.batch
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = step_fn(w[:, :-1])
        loss = loss_fn(logits, w[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        seen += w.numel()
        if step % 200 == 0:
            print("step %d  loss %.3f  lr %.2e  %.0f s  %.2f epochs  %.0f tok/s"
                  % (step, loss.item(), lr, time.time() - t1,
                     seen / (len(train_w) * (seq + 1)),
                     seen / (time.time() - t1)), flush=True)
        if step % 2000 == 0:
            print("valid ppl %.2f" % evaluate(model, valid_w, 32, dev,
                                              torch.bfloat16), flush=True)
    print("trained %d steps, %d tokens, %.0f s" % (step, seen, time.time() - t1))
    print("final valid ppl (bf16 autocast) %.3f"
          % evaluate(model, valid_w, 32, dev, torch.bfloat16))
    hf = os.path.join(a.out, "hf")
    export_hf(model, hf, a.tokenizer)
    m16 = load_hf(hf, dev).half()
    print("final valid ppl (fp16 weights, fp16 compute) %.3f"
          % evaluate(m16, valid_w, 32, dev, torch.float16))


if __name__ == "__main__":
    main()
