"""kvsink.transformers.KVSinkCache with a real transformers model (the
shipped models/kvsink-tiny, a LlamaForCausalLM checkpoint) against a real
kvsinkd. Skips without torch + transformers (CI); tests/gpu/transformers.sh
runs it on the GPU machine. On a CPU the model runs in bfloat16, on a GPU
in float16, so that 16-bit kvsinkd storage is exact."""
import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import AutoModelForCausalLM  # noqa: E402

import kvsink  # noqa: E402
from kvsink.transformers import KVSinkCache  # noqa: E402

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.environ.get("KVSINK_TEST_MODEL", os.path.join(TOP, "models", "kvsink-tiny"))
DEV = "cuda" if torch.cuda.is_available() else "cpu"
DT = torch.float16 if DEV == "cuda" else torch.bfloat16


def profile_model_id():
    with open(os.path.join(MODEL, "kvsink.profile")) as f:
        for line in f:
            if line.startswith("model"):
                return line.split("=", 1)[1].strip()
    return None


@pytest.fixture(scope="module")
def model():
    if not os.path.exists(os.path.join(MODEL, "config.json")):
        pytest.skip("no model at %s" % MODEL)
    return AutoModelForCausalLM.from_pretrained(MODEL, torch_dtype=DT).to(DEV).eval()


def prompt(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(258, 8000, (1, n), generator=g)
    ids[0, 0] = 0  # BOS
    return ids.to(DEV)


def test_16bit_generate_equals_dynamic_cache(sock, model, model_id):
    ids = prompt(150)
    ref = model.generate(ids, max_new_tokens=24, do_sample=False)
    cache = KVSinkCache(model, sock, bits=16, policy="none", model_id=model_id)
    try:
        out = model.generate(ids, past_key_values=cache, max_new_tokens=24, do_sample=False)
        assert cache.get_seq_length() == ref.shape[1] - 1
        assert cache.client.stats()["puts"] > 0
    finally:
        cache.close()
    assert torch.equal(out, ref), (out[0, 150:].tolist(), ref[0, 150:].tolist())


def test_bound_prefix_continues_the_same(sock, model, model_id):
    ids = prompt(200, seed=1)
    first = KVSinkCache(model, sock, bits=16, policy="none", model_id=model_id)
    ref = model.generate(ids, past_key_values=first, max_new_tokens=8, do_sample=False)
    first.close()
    second = KVSinkCache(model, sock, bits=16, policy="none", model_id=model_id)
    try:
        n = second.bind_prefix(ids)
        assert n == 192  # whole blocks of 32 below 200
        out = model.generate(ids, past_key_values=second, max_new_tokens=8, do_sample=False)
    finally:
        second.close()
    assert torch.equal(out, ref)


def test_kvsink_policy_sends_summary(sock, model):
    mid = profile_model_id()
    if not mid:
        pytest.skip("model has no kvsink.profile")
    cache = KVSinkCache(model, sock, bits=2, policy="kvsink", model_id=mid)
    try:
        info = cache.client.info
        if not info["has_profile"]:
            pytest.skip("kvsinkd has no profile for %s (profiles_dir)" % mid)
        ids = prompt(300, seed=2)
        ids[0, 100] = 0  # a second document start: a sink
        model.generate(ids, past_key_values=cache, max_new_tokens=4, do_sample=False)
        assert cache.put_results["sinks"] >= 1
        assert cache.put_results["quantized"] > 0
    finally:
        cache.close()


def test_prefix_reuse_across_processes_cuts_ttft(sock, model_id):
    """Two processes, the same long prompt: the second binds the first one's
    prefix and its time to first token drops."""
    helper = os.path.join(TOP, "tests", "python", "ttft.py")
    env = dict(os.environ, KVSINK_SOCKET=sock)
    runs = []
    for _ in range(2):
        p = subprocess.run([sys.executable, helper, MODEL, model_id, DEV], env=env,
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    print("TTFT first %.2f ms (prefix %d), second %.2f ms (prefix %d of %d tokens)" % (
        runs[0]["ttft_ms"], runs[0]["prefix"], runs[1]["ttft_ms"], runs[1]["prefix"],
        runs[1]["prompt"]))
    assert runs[0]["prefix"] == 0
    assert runs[1]["prefix"] >= runs[1]["prompt"] - 32
    assert runs[1]["tokens"] == runs[0]["tokens"]
    assert runs[1]["ttft_ms"] < runs[0]["ttft_ms"]
