# SPDX-License-Identifier: MIT
"""The KVSinkCache checks, runnable without pytest (the GPU machine may
lack it): python3 transformers_checks.py, with $KVSINK_SOCKET naming a
running kvsinkd whose profiles_dir holds models/kvsink-tiny's profile.
test_transformers.py runs the same functions under pytest.

The model is the shipped models/kvsink-tiny (a LlamaForCausalLM
checkpoint; $KVSINK_TEST_MODEL for another). On a CPU it runs in
bfloat16, on a GPU in float16, so that 16-bit kvsinkd storage is exact."""
import json
import os
import subprocess
import sys
import uuid

import torch
from transformers import AutoModelForCausalLM

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(TOP, "python"))
from kvsink.transformers import KVSinkCache  # noqa: E402

MODEL = os.environ.get("KVSINK_TEST_MODEL", os.path.join(TOP, "models", "kvsink-tiny"))
DEV = "cuda" if torch.cuda.is_available() else "cpu"
DT = torch.float16 if DEV == "cuda" else torch.bfloat16


class Skip(Exception):
    pass


def load_model():
    if not os.path.exists(os.path.join(MODEL, "config.json")):
        raise Skip("no model at %s" % MODEL)
    return AutoModelForCausalLM.from_pretrained(MODEL, torch_dtype=DT).to(DEV).eval()


def fresh_id():
    return "check-" + uuid.uuid4().hex[:12]


def profile_model_id():
    try:
        with open(os.path.join(MODEL, "kvsink.profile")) as f:
            for line in f:
                if line.split("=")[0].strip() == "model":
                    return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return None


def prompt(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(258, 8000, (1, n), generator=g)
    ids[0, 0] = 0  # BOS
    return ids.to(DEV)


def check_16bit_generate_equals_dynamic_cache(sock, model):
    ids = prompt(150)
    ref = model.generate(ids, max_new_tokens=24, do_sample=False)
    cache = KVSinkCache(model, sock, bits=16, policy="none", model_id=fresh_id())
    try:
        out = model.generate(ids, past_key_values=cache, max_new_tokens=24, do_sample=False)
        assert cache.get_seq_length() == ref.shape[1] - 1, cache.get_seq_length()
        assert cache.client.stats()["puts"] > 0
    finally:
        cache.close()
    assert torch.equal(out, ref), (out[0, 150:].tolist(), ref[0, 150:].tolist())
    return "24 generated tokens identical to DynamicCache"


def check_bound_prefix_continues_the_same(sock, model):
    ids = prompt(200, seed=1)
    mid = fresh_id()
    first = KVSinkCache(model, sock, bits=16, policy="none", model_id=mid)
    try:
        ref = model.generate(ids, past_key_values=first, max_new_tokens=8, do_sample=False)
    finally:
        first.close()
    second = KVSinkCache(model, sock, bits=16, policy="none", model_id=mid)
    try:
        n = second.bind_prefix(ids)
        assert n == 192, n  # whole blocks of 32 below 200
        out = model.generate(ids, past_key_values=second, max_new_tokens=8, do_sample=False)
    finally:
        second.close()
    assert torch.equal(out, ref), (out[0, 200:].tolist(), ref[0, 200:].tolist())
    return "bound 192 tokens, same 8 tokens"


def check_kvsink_policy_sends_summary(sock, model):
    mid = profile_model_id()
    if not mid:
        raise Skip("model has no kvsink.profile")
    cache = KVSinkCache(model, sock, bits=2, policy="kvsink", model_id=mid)
    try:
        if not cache.client.info["has_profile"]:
            raise Skip("kvsinkd has no profile for %s (profiles_dir)" % mid)
        ids = prompt(300, seed=2)
        ids[0, 100] = 0  # a second document start
        model.generate(ids, past_key_values=cache, max_new_tokens=4, do_sample=False)
        r = cache.put_results
        assert r["sinks"] >= 1 and r["quantized"] > 0, r
    finally:
        cache.close()
    return "2-bit kvsink policy: %d sinks flagged, %d tokens quantized" % (r["sinks"], r["quantized"])


def check_prefix_reuse_across_processes_tiny(sock, model=None):
    helper = os.path.join(TOP, "tests", "python", "ttft.py")
    env = dict(os.environ, KVSINK_SOCKET=sock)
    mid = fresh_id()
    runs = []
    for _ in range(2):
        p = subprocess.run([sys.executable, helper, MODEL, mid, DEV], env=env,
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    # the tiny model's prefill is almost free, so its TTFT is printed, not
    # judged (the bigger model below is); the reuse itself is checked
    msg = ("tiny model TTFT (informational): first process %.2f ms (prefix %d), second %.2f ms "
           "(prefix %d of %d tokens), %s" % (runs[0]["ttft_ms"], runs[0]["prefix"],
                                             runs[1]["ttft_ms"], runs[1]["prefix"],
                                             runs[1]["prompt"], DEV))
    print(msg)
    assert runs[0]["prefix"] == 0, runs
    assert runs[1]["prefix"] >= runs[1]["prompt"] - 32, runs
    assert runs[1]["tokens"] == runs[0]["tokens"], runs
    return msg


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def check_prefix_reuse_cuts_ttft_on_a_bigger_model(sock, model=None):
    """Process A prefills and stores prompts of PROMPT tokens on a random-
    weight LLaMA (ttft_big.py: by default an 8B shape, 32 layers, hidden
    4096, 32/8 heads, fp16);
    process B binds the first 95 % (whole blocks) of prompts sharing them
    and prefills the rest. Fails only if the median TTFT with the reused
    prefix is not below the one without it."""
    if DEV != "cuda":
        raise Skip("needs a GPU (a random-weight 8B-shaped LLaMA in fp16)")
    helper = os.path.join(TOP, "tests", "python", "ttft_big.py")
    env = dict(os.environ, KVSINK_SOCKET=sock)
    mid = fresh_id()
    args = [os.environ.get("KVSINK_TTFT_RUNS", "5"), os.environ.get("KVSINK_TTFT_PROMPT", "4096")]
    n = int(args[1])
    shared = n * 95 // 100
    args += [str(shared), os.environ.get("KVSINK_TTFT_LAYERS", "32"),
             os.environ.get("KVSINK_TTFT_HIDDEN", "4096")]
    res = {}
    for role in ("store", "reuse"):  # one OS process each, one after the other
        p = subprocess.run([sys.executable, helper, role, mid] + args, env=env,
                           capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, p.stderr[-3000:]
        res[role] = json.loads(p.stdout.strip().splitlines()[-1])
    a, b = res["store"], res["reuse"]
    g = b["group"]
    want = shared // g * g
    assert all(r["prefix"] == 0 for r in a["runs"]), a["runs"]
    assert all(r["prefix"] == want for r in b["runs"]), (want, b["runs"])
    ma = _median([r["ttft_ms"] for r in a["runs"][1:]])
    mb = _median([r["ttft_ms"] for r in b["runs"][1:]])
    mp = _median([r["plain_ms"] for r in a["runs"][1:] + b["runs"][1:]])
    lines = [
        "bigger model: random-weight LlamaForCausalLM (%d layers, hidden %d, 32 query / 8 KV "
        "heads, head_dim 128, fp16) on %s; random weights: timing only, tokens meaningless"
        % (a["layers"], a["hidden"], a["gpu"]),
        "  prompt %d tokens, shared %d, prefix bound %d (whole blocks); median of %d runs "
        "after a warm-up, each process separate" % (n, shared, want, len(a["runs"]) - 1),
        "  TTFT without prefix (process A: prefill %d tokens + store): %.2f ms" % (n, ma),
        "  TTFT with prefix    (process B: bind %d, prefill %d):       %.2f ms  (%.2fx)"
        % (want, n - want, mb, ma / mb),
        "  transformers' own cache, whole prompt (no kvsink):          %.2f ms" % mp,
        "  device segment: A %s, B %s (%d MiB); B device gets %d, staged copies A %d B %d; "
        "connect A %.1f ms B %.1f ms" % (a["seg_device"], b["seg_device"],
                                         b["dev_seg_size"] >> 20, b["device_gets"],
                                         a["staged_copies"], b["staged_copies"],
                                         a["connect_ms"], b["connect_ms"]),
        "  runs A: %s" % " ".join("%.1f" % r["ttft_ms"] for r in a["runs"]),
        "  runs B: %s" % " ".join("%.1f" % r["ttft_ms"] for r in b["runs"]),
    ]
    print("\n".join(lines))
    assert mb < ma, "the reused prefix did not lower TTFT: %.2f ms vs %.2f ms" % (mb, ma)
    return "TTFT %.2f ms -> %.2f ms with %d of %d tokens reused (plain %.2f ms)" % (
        ma, mb, want, n, mp)


def check_client_device_segment(sock, model=None):
    """CUDA tensors through the device segment when kvsinkd keeps a pool on
    this GPU ($KVSINK_EXPECT_DEVICE_SEGMENT=1, set by transformers.sh for
    GPU=cuda*): bit-exact at 16 bits, nothing staged through host memory."""
    import kvsink
    if DEV != "cuda":
        raise Skip("no CUDA device")
    m = kvsink.Model(fresh_id(), 4, 8, 128)
    with kvsink.Client(m, sock, bits=16, device="cuda") as c:
        k = torch.randn(4, 1000, 8, 128, device="cuda", dtype=torch.float16)
        v = torch.randn(4, 1000, 8, 128, device="cuda", dtype=torch.float16)
        c.put(1, 0, range(1000), k, v)
        k2, v2 = c.get(1, 0, 1000, device="cuda")
        assert torch.equal(k2, k) and torch.equal(v2, v)
        st = c.stats()
        if os.environ.get("KVSINK_EXPECT_DEVICE_SEGMENT") == "1":
            assert c.info["seg_device"], ("no device segment from a kvsinkd on this GPU (a "
                                          "libkvsink built without CUDA? tests/gpu/build.sh)")
            assert st["staged_copies"] == 0 and st["device_puts"] == st["puts"], st
            assert st["device_gets"] == st["gets"], st
        return "seg_device %s (%d MiB), device puts %d gets %d, staged %d" % (
            c.info["seg_device"], c.info["dev_seg_size"] >> 20, st["device_puts"],
            st["device_gets"], st["staged_copies"])


def check_attend_on_the_gpu(sock, model=None):
    """Client.attend with CUDA queries over a table of kvsinkd's GPU pool
    (kvs_attend_device, the tensor-core kernel at 4 bits, GQA 4, head dim
    128) equals attention over what get returns, in float64 on the GPU."""
    import kvsink
    if DEV != "cuda":
        raise Skip("no CUDA device")
    L, H, D, QH, n = 2, 8, 128, 32, 1000
    m = kvsink.Model(fresh_id(), L, H, D)
    with kvsink.Client(m, sock, bits=4, policy="none", device="cuda") as c:
        k = torch.randn(L, n, H, D, device="cuda", dtype=torch.float16)
        v = torch.randn(L, n, H, D, device="cuda", dtype=torch.float16)
        c.put(1, 0, range(n), k, v)
        kg, vg = c.get(1, 0, n, device="cuda")
        q = torch.randn(2, QH, D, device="cuda", dtype=torch.float16)
        worst = 0.0
        with c.table(1) as t:
            assert t.tokens(0) == n
            out, lse = c.attend([t, t], 1, q, lse=True)
            torch.cuda.synchronize()
            assert out.is_cuda and out.dtype == torch.float32 and out.shape == (2, QH, D)
            kk, vv = kg[1].double(), vg[1].double()
            for i in range(2):
                for h in range(QH):
                    s = kk[:, h // (QH // H)] @ q[i, h].double() / D ** 0.5
                    p = torch.softmax(s, 0)
                    want = p @ vv[:, h // (QH // H)]
                    err = (out[i, h].double() - want).abs().max().item() / vv.abs().max().item()
                    worst = max(worst, err)
                    assert err < 1e-3, (i, h, err)
                    assert abs(lse[i, h].item() - torch.logsumexp(s, 0).item()) < 1e-3
        return "worst error %.3g of max|v| over 2 x %d heads" % (worst, QH)


def check_calibrate_finds_the_shipped_profile(sock=None, model=None):
    """python -m kvsink.calibrate on the shipped model (token ids from
    eval/bpe.py: transformers cannot load its tokenizer's own pre-tokenizer)
    finds what models/kvsink-tiny/kvsink.profile says: layer 4, channel 187."""
    import tempfile
    if os.path.abspath(MODEL) != os.path.join(TOP, "models", "kvsink-tiny"):
        raise Skip("the expected profile is known for models/kvsink-tiny only")
    calib = os.path.join(os.environ.get("top_builddir", TOP), "tools", "kvsink-calibrate")
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "ids"), "w") as f:
            subprocess.run([sys.executable, os.path.join(TOP, "eval", "bpe.py"), "encode", "--docs",
                            "--tokenizer", os.path.join(MODEL, "tokenizer.json"),
                            os.path.join(TOP, "eval", "testdata", "test-slice.txt")],
                           stdout=f, check=True)
        env = dict(os.environ, PYTHONPATH=os.path.join(TOP, "python"))
        p = subprocess.run([sys.executable, "-m", "kvsink.calibrate", MODEL, "--tokens",
                            os.path.join(d, "ids"), "--out", os.path.join(d, "p.profile"),
                            "--ratio", "5.5", "--calibrate-bin", calib],
                           env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        prof = dict(line.split("=", 1) for line in open(os.path.join(d, "p.profile"))
                    if "=" in line and not line.startswith("#"))
        prof = {k.strip(): v.strip() for k, v in prof.items()}
    assert prof["layer"] == "4" and prof["channels"] == "187", prof
    assert prof["model"] == "kvsink-tiny", prof
    return "profile layer %s, channels %s, tau %s (%s)" % (prof["layer"], prof["channels"],
                                                          prof["tau"], p.stderr.strip()[-120:])


CHECKS = [check_client_device_segment, check_attend_on_the_gpu,
          check_16bit_generate_equals_dynamic_cache,
          check_bound_prefix_continues_the_same, check_kvsink_policy_sends_summary,
          check_prefix_reuse_across_processes_tiny,
          check_prefix_reuse_cuts_ttft_on_a_bigger_model,
          check_calibrate_finds_the_shipped_profile]


def main():
    sock = os.environ.get("KVSINK_SOCKET")
    if not sock:
        print("KVSINK_SOCKET is not set")
        return 2
    model = load_model()
    failed = 0
    # KVSINK_CHECKS=name,name runs only those (e.g. one check on a short lease)
    only = [n for n in os.environ.get("KVSINK_CHECKS", "").split(",") if n]
    unknown = [n for n in only if n not in [c.__name__ for c in CHECKS]]
    if unknown:
        print("FAIL: KVSINK_CHECKS names no check: %s" % ", ".join(unknown))
        return 1
    for c in CHECKS:
        if only and c.__name__ not in only:
            continue
        try:
            print("PASS: %s: %s" % (c.__name__, c(sock, model)))
        except Skip as e:
            print("SKIP: %s: %s" % (c.__name__, e))
        except Exception as e:  # report every check, then fail
            failed += 1
            print("FAIL: %s: %r" % (c.__name__, e))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
