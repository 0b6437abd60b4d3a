# SPDX-License-Identifier: MIT
"""One process of the prefix-reuse TTFT measurement on a model whose
prefill costs something (transformers_checks.py runs two of them):
a LlamaForCausalLM built here from a LlamaConfig with random weights
(seeded: both processes build the same model; nothing is downloaded),
fp16 on the GPU, GQA (32 query heads, 8 KV heads, head_dim 128); by
default the shape of an 8B LLaMA (32 layers, hidden 4096, MLP 14336):
on a smaller one the 24 per-layer puts and Python's per-layer overhead
cost about what a 4k-token prefill does, and the reuse cannot show.

Usage: ttft_big.py store|reuse MODEL_ID [RUNS [PROMPT [SHARED [LAYERS [HIDDEN]]]]]
  store: prompts new to kvsinkd; each is prefilled whole and stored
  reuse: each prompt shares its first SHARED tokens with store's prompt of
         the same run and has another tail; the cached prefix (whole
         blocks) is bound and only the rest is prefilled
Run 0 is a warm-up (not counted). For each run it measures the time to
first token with a KVSinkCache (cache created, prefix bound, generate()
of one token, GPU synchronized), and the same prompt with transformers'
own cache ("plain"). Prints one JSON line. Random weights make the tokens
meaningless but the timing real (the work does not depend on the values)."""
import json
import os
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import kvsink  # noqa: E402
from kvsink.transformers import KVSinkCache  # noqa: E402

VOCAB = 32000


def build_model(layers, hidden=4096):
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden,
                      intermediate_size=256 * round(hidden * 3.5 / 256),
                      num_hidden_layers=layers, num_attention_heads=32, num_key_value_heads=8,
                      head_dim=128, max_position_embeddings=8192, tie_word_embeddings=False)
    torch.manual_seed(0)
    torch.cuda.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    try:
        with torch.device("cuda"):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    return model.eval()


def prompt(run, role, n, shared):
    g = torch.Generator().manual_seed(1000 + run)
    head = torch.randint(100, VOCAB, (shared,), generator=g)
    g = torch.Generator().manual_seed(5000 + 2 * run + (role == "reuse"))
    tail = torch.randint(100, VOCAB, (n - shared,), generator=g)
    return torch.cat([head, tail]).unsqueeze(0).cuda()


def timed(fn):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    r = fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1000, r


def main():
    role, model_id = sys.argv[1:3]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 4096
    shared = int(sys.argv[5]) if len(sys.argv) > 5 else n * 95 // 100
    layers = int(sys.argv[6]) if len(sys.argv) > 6 else 32
    hidden = int(sys.argv[7]) if len(sys.argv) > 7 else 4096
    if role not in ("store", "reuse"):
        raise SystemExit("role: store or reuse")
    model = build_model(layers, hidden)
    gen = dict(max_new_tokens=1, do_sample=False, pad_token_id=0)
    km = kvsink.Model(model_id, layers, 8, 128, "float16")
    # one connection per process, as a server keeps it; its device segment
    # holds a whole prompt's K/V so that a prefix comes in one get
    seg = 2 * n * layers * 8 * 128 * 2
    t_conn, client = timed(lambda: kvsink.Client(km, None, bits=16, policy="none",
                                                 device=torch.cuda.current_device(),
                                                 dev_seg_size=seg))
    out = []
    for run in range(runs + 1):
        ids = prompt(run, role, n, shared)
        mask = torch.ones_like(ids)
        plain_ms, _ = timed(lambda: model.generate(ids, attention_mask=mask, **gen))
        state = {}

        def with_kvsink():
            cache = KVSinkCache(model, client=client, bits=16, policy="none")
            state["cache"] = cache
            state["prefix"] = cache.bind_prefix(ids)
            return model.generate(ids, attention_mask=mask, past_key_values=cache, **gen)

        ttft_ms, _ = timed(with_kvsink)
        state["cache"].close()
        out.append(dict(run=run, prefix=state["prefix"], ttft_ms=ttft_ms, plain_ms=plain_ms))
    st = client.stats()
    print(json.dumps(dict(role=role, prompt=n, shared=shared, layers=layers, hidden=hidden, runs=out,
                          connect_ms=t_conn, seg_device=client.info["seg_device"],
                          dev_seg_size=client.info["dev_seg_size"], group=client.info["group"],
                          device_puts=st["device_puts"], device_gets=st["device_gets"],
                          staged_copies=st["staged_copies"], gpu=torch.cuda.get_device_name())))
    client.close()


if __name__ == "__main__":
    main()
