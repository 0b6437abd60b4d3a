# SPDX-License-Identifier: MIT
"""Profile a Hugging Face checkpoint's attention sinks in one command:

    python -m kvsink.calibrate MODEL_DIR TEXT --out MODEL.profile

runs the model over the text (transformers, torch), writes one hidden-state
dump per context in the KVSDUMP1 format that kvsink-calibrate(1) reads
(kernels/sink.h: u32 n_layers, n_tokens, hidden, dtype; then [layer]
[token][hidden], layer l = the residual stream after decoder layer l,
taken with a forward hook on each decoder layer, since transformers'
output_hidden_states gives the last layer after the final norm), and runs
kvsink-calibrate on them. Put the profile in kvsinkd's profiles_dir; its
model id is the one KVSinkCache uses (the checkpoint directory's name)
unless --model-id says otherwise.

TEXT is split into documents at lines holding only 0x1E (eval/make-corpus.sh)
and each document is tokenized with the checkpoint's tokenizer, BOS first;
--tokens FILE takes whitespace-separated token ids instead (one stream,
e.g. from `kvsink-eval encode --docs`), for tokenizers transformers cannot
load. Contexts of --ctx tokens are cut from the stream, --contexts of them."""
import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np


def find_calibrate(explicit):
    """kvsink-calibrate: --calibrate-bin, $KVSINK_CALIBRATE, a build tree
    this source tree sits in, then $PATH."""
    cands = [explicit, os.environ.get("KVSINK_CALIBRATE")]
    top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for d in sorted(os.listdir(top)) if os.path.isdir(top) else []:
        if d.startswith("build"):
            cands.append(os.path.join(top, d, "tools", "kvsink-calibrate"))
    cands.append(shutil.which("kvsink-calibrate"))
    for c in cands:
        if c and os.access(c, os.X_OK):
            return c
    raise FileNotFoundError("kvsink-calibrate not found: pass --calibrate-bin or set KVSINK_CALIBRATE")


def write_dump(path, layers):
    """layers: [n_layers] arrays [n_tokens][hidden] float32. fp16 when every
    value fits (half the size), else fp32: massive activations can be large."""
    h = np.stack(layers)
    fits = np.abs(h).max() < 60000.0
    with open(path, "wb") as f:
        f.write(b"KVSDUMP1")
        f.write(struct.pack("<4I", h.shape[0], h.shape[1], h.shape[2], 1 if fits else 3))
        f.write(np.ascontiguousarray(h, dtype=np.float16 if fits else np.float32).tobytes())


def token_stream(args, model):
    if args.tokens:
        with open(args.tokens) as f:
            text = f.read()
        return [int(t) for t in text.translate(str.maketrans(",[]", "   ")).split()]
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    with open(args.text, "rb") as f:
        docs = [d.strip(b"\n").decode("utf-8", "replace") for d in f.read().split(b"\n\x1e\n")]
    bos = tok.bos_token_id if tok.bos_token_id is not None else model.config.bos_token_id
    ids = []
    for d in docs:
        if not d.strip():
            continue
        t = tok(d, add_special_tokens=False)["input_ids"]
        ids += ([bos] if bos is not None else []) + t
    return ids


def contexts(ids, ctx, n, bos):
    """Windows of ctx tokens, each starting at a BOS when there is one (the
    rest of a document cut by a window end is skipped, as kvsink-eval does)."""
    out, i = [], 0
    while i < len(ids) and len(out) < n:
        if bos is not None and ids[i] != bos:
            nxt = ids.index(bos, i) if bos in ids[i:] else -1
            if nxt < 0:
                break
            i = nxt
        w = ids[i:i + ctx]
        if len(w) < min(ctx, 64):
            break
        out.append(w)
        i += ctx
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m kvsink.calibrate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("text", nargs="?")
    ap.add_argument("--out", "-o", required=True, help="profile to write")
    ap.add_argument("--tokens", help="token ids instead of TEXT")
    ap.add_argument("--model-id", help="default: as KVSinkCache names the model")
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--contexts", type=int, default=4)
    ap.add_argument("--device", default=None, help="default: cuda when available")
    ap.add_argument("--ratio", help="kvsink-calibrate --ratio")
    ap.add_argument("--max-channels", help="kvsink-calibrate --max-channels")
    ap.add_argument("--max-sinks", help="kvsink-calibrate --max-sinks")
    ap.add_argument("--pfn", help="kvsink-calibrate --pfn")
    ap.add_argument("--calibrate-bin", help="path of kvsink-calibrate")
    ap.add_argument("--keep-dumps", help="write the dumps into this directory and keep them")
    a = ap.parse_args(argv)
    if not a.text and not a.tokens:
        ap.error("TEXT or --tokens is required")

    import torch
    from transformers import AutoModelForCausalLM

    from kvsink.transformers import _decoder_layers, default_model_id

    calib = find_calibrate(a.calibrate_bin)
    dev = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dt = torch.float16 if dev.startswith("cuda") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, torch_dtype=dt).to(dev).eval()
    mid = a.model_id or default_model_id(model)
    ctx = min(a.ctx, getattr(model.config, "max_position_embeddings", a.ctx))
    ids = token_stream(a, model)
    wins = contexts(ids, ctx, a.contexts, model.config.bos_token_id)
    if not wins:
        print("kvsink.calibrate: the text holds no context", file=sys.stderr)
        return 1

    layers = _decoder_layers(model)
    captured = [None] * len(layers)

    def hook(i):
        def f(module, args, output):
            h = output[0] if isinstance(output, (tuple, list)) else output
            captured[i] = h[0].float().cpu().numpy()
        return f

    hooks = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    ddir = a.keep_dumps or tempfile.mkdtemp(prefix="kvsink-calibrate.")
    os.makedirs(ddir, exist_ok=True)
    dumps = []
    try:
        with torch.no_grad():
            for k, w in enumerate(wins):
                model(torch.tensor([w], device=dev), use_cache=False)
                path = os.path.join(ddir, "context%03d.dump" % k)
                write_dump(path, captured)
                dumps.append(path)
        cmd = [calib, "--model", mid, "-o", a.out]
        for opt in ("ratio", "max_channels", "max_sinks", "pfn"):
            v = getattr(a, opt)
            if v is not None:
                cmd += ["--" + opt.replace("_", "-"), v]
        print("kvsink.calibrate: %d contexts of up to %d tokens, %d layers; %s" %
              (len(dumps), ctx, len(layers), " ".join(cmd[:5])), file=sys.stderr)
        return subprocess.call(cmd + dumps)
    finally:
        for h in hooks:
            h.remove()
        if not a.keep_dumps:
            shutil.rmtree(ddir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
