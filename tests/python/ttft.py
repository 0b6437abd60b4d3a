# SPDX-License-Identifier: MIT
"""One process of the prefix-reuse measurement (test_transformers.py):
load MODEL, bind what kvsinkd holds of a fixed long prompt, generate one
token, print {"prefix", "prompt", "ttft_ms", "tokens"} as JSON.
Usage: ttft.py MODEL_DIR MODEL_ID cpu|cuda [PROMPT_TOKENS]"""
import json
import os
import sys
import time

import torch
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
from kvsink.transformers import KVSinkCache  # noqa: E402


def main():
    model_dir, model_id, dev = sys.argv[1:4]
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    dt = torch.float16 if dev == "cuda" else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=dt).to(dev).eval()
    n = n or min(1024, model.config.max_position_embeddings) - 8
    g = torch.Generator().manual_seed(42)
    ids = torch.randint(258, min(8000, model.config.vocab_size), (1, n), generator=g)
    ids[0, 0] = 0
    ids = ids.to(dev)
    # warm up kernels on another prompt so that the first measured run pays no start-up
    model.generate(ids[:, :64] + 1, max_new_tokens=1, do_sample=False)
    if dev == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    cache = KVSinkCache(model, None, bits=16, policy="none", model_id=model_id)
    prefix = cache.bind_prefix(ids)
    out = model.generate(ids, past_key_values=cache, max_new_tokens=1, do_sample=False)
    if dev == "cuda":
        torch.cuda.synchronize()
    ttft = (time.perf_counter() - t0) * 1000
    cache.close()
    print(json.dumps(dict(prefix=prefix, prompt=n, ttft_ms=ttft, tokens=out[0, n:].tolist())))


if __name__ == "__main__":
    main()
