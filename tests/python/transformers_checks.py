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


def check_prefix_reuse_across_processes_cuts_ttft(sock, model=None):
    helper = os.path.join(TOP, "tests", "python", "ttft.py")
    env = dict(os.environ, KVSINK_SOCKET=sock)
    mid = fresh_id()
    runs = []
    for _ in range(2):
        p = subprocess.run([sys.executable, helper, MODEL, mid, DEV], env=env,
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    msg = ("TTFT first process %.2f ms (prefix %d), second %.2f ms (prefix %d of %d tokens), %s"
           % (runs[0]["ttft_ms"], runs[0]["prefix"], runs[1]["ttft_ms"], runs[1]["prefix"],
              runs[1]["prompt"], DEV))
    print(msg)
    assert runs[0]["prefix"] == 0, runs
    assert runs[1]["prefix"] >= runs[1]["prompt"] - 32, runs
    assert runs[1]["tokens"] == runs[0]["tokens"], runs
    assert runs[1]["ttft_ms"] < runs[0]["ttft_ms"], msg
    return msg


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


CHECKS = [check_16bit_generate_equals_dynamic_cache, check_bound_prefix_continues_the_same,
          check_kvsink_policy_sends_summary, check_prefix_reuse_across_processes_cuts_ttft,
          check_calibrate_finds_the_shipped_profile]


def main():
    sock = os.environ.get("KVSINK_SOCKET")
    if not sock:
        print("KVSINK_SOCKET is not set")
        return 2
    model = load_model()
    failed = 0
    for c in CHECKS:
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
