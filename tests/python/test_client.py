# SPDX-License-Identifier: MIT
"""kvsink.Client against a real kvsinkd (tests/python/run.sh)."""
import errno

import numpy as np
import pytest

import kvsink

L, H, D = 3, 2, 64


def kv(n, seed=0, layers=L):
    r = np.random.default_rng(seed)
    return (r.standard_normal((layers, n, H, D)).astype(np.float16),
            r.standard_normal((layers, n, H, D)).astype(np.float16))


def test_roundtrip_16bit_exact_and_chunked(sock, model_id):
    # a 1 MiB segment holds K and V of 1 MiB / (2 * 3 * 2 * 64 * 2 B) = 682
    # tokens: 3000 tokens take five puts and five gets
    m = kvsink.Model(model_id, L, H, D)
    with kvsink.Client(m, sock, bits=16, seg_size=1 << 20) as c:
        assert c.info["k_bits"] == 16 and c.info["seg_size"] == 1 << 20
        k, v = kv(3000)
        toks = np.arange(3000) % 8000
        res = c.put(7, 0, toks, k, v)
        assert res["seq_len"] == 3000
        assert c.kv_bytes(1) == L * H * D * 2
        assert c.stats()["puts"] == 5
        k2, v2 = c.get(7, 0, 3000)
        assert k2.dtype == np.float16 and k2.shape == (L, 3000, H, D)
        assert np.array_equal(k2, k) and np.array_equal(v2, v)
        assert c.stats()["gets"] == 5
        # a layer range and an offset
        k3, v3 = c.get(7, 100, 50, layers=(1, 3))
        assert np.array_equal(k3, k[1:3, 100:150]) and np.array_equal(v3, v[1:3, 100:150])


def test_4bit_is_quantized_and_close(sock, model_id):
    m = kvsink.Model(model_id, L, H, D)
    with kvsink.Client(m, sock, bits=4, policy="none") as c:
        k, v = kv(64, seed=1)
        res = c.put(1, 0, range(64), k, v)
        assert res["quantized"] == 64
        k2, v2 = c.get(1, 0, 64)
        assert not np.array_equal(k2, k)
        err = np.abs(k2.astype(np.float32) - k.astype(np.float32)).max()
        rng = float(k.max() - k.min())
        assert err < rng / 15 * 1.01, (err, rng)  # one 4-bit step at most


def test_layerwise_puts_and_float32_input(sock, model_id):
    m = kvsink.Model(model_id, L, H, D)
    with kvsink.Client(m, sock, bits=16) as c:
        k, v = kv(40, seed=2)
        for layer in range(L):
            c.put(3, 0, range(40), k[layer:layer + 1].astype(np.float32),
                  v[layer:layer + 1].astype(np.float32), layers=layer)
        k2, v2 = c.get(3, 0, 40)
        assert np.array_equal(k2, k) and np.array_equal(v2, v)


def test_prefix_shared_between_clients(sock, model_id):
    m = kvsink.Model(model_id, L, H, D)
    k, v = kv(100, seed=3)
    toks = np.arange(1000, 1100)
    with kvsink.Client(m, sock, bits=16) as a:
        a.put(1, 0, toks, k, v)
        with kvsink.Client(m, sock, bits=16) as b:
            assert b.lookup(9, toks) == 96  # whole blocks of 32
            assert b.lookup(9, np.r_[toks[:40], [5] * 60]) == 32
            assert b.lookup(9, toks, bind=True) == 96
            k2, v2 = b.get(9, 0, 96)
            assert np.array_equal(k2, k[:, :96]) and np.array_equal(v2, v[:, :96])
            # continue after the bound prefix
            b.put(9, 96, toks[96:], k[:, 96:], v[:, 96:])
            k3, _ = b.get(9, 0, 100)
            assert np.array_equal(k3, k)
            assert b.stats()["tokens_hit"] == 96 + 32 + 96
            b.release(9)
        # other settings are another space: no sharing
        with kvsink.Client(m, sock, bits=4) as d:
            assert d.lookup(9, toks) == 0


def test_salt_separates_caches(sock, model_id):
    # equal salts share a prefix, different ones (or none) do not
    m = kvsink.Model(model_id, L, H, D)
    k, v = kv(64, seed=4)
    toks = np.arange(2000, 2064)
    with kvsink.Client(m, sock, bits=16, salt="tenant-a") as a:
        a.put(1, 0, toks, k, v)
        with kvsink.Client(m, sock, bits=16, salt=b"tenant-a") as same:
            assert same.lookup(2, toks, bind=True) == 64
            k2, _ = same.get(2, 0, 64)
            assert np.array_equal(k2, k)
        with kvsink.Client(m, sock, bits=16, salt="tenant-b") as other:
            assert other.lookup(2, toks) == 0
        with kvsink.Client(m, sock, bits=16) as plain:
            assert plain.lookup(2, toks) == 0
    with pytest.raises(ValueError):
        kvsink.Client(m, sock, bits=16, salt=b"x" * 33)


def test_errors_carry_errno_and_message(sock, model_id):
    m = kvsink.Model(model_id, L, H, D)
    with kvsink.Client(m, sock, bits=16) as c:
        k, v = kv(8)
        c.put(1, 0, range(8), k, v)
        with pytest.raises(kvsink.KVSinkError) as e:
            c.put(1, 3, range(8), k, v)  # not at the layer's length
        assert e.value.errno == errno.EINVAL and e.value.code == -errno.EINVAL
        assert "start" in e.value.message and "put" in str(e.value)
        assert isinstance(e.value, OSError)
        with pytest.raises(kvsink.KVSinkError) as e:
            c.get(1, 0, 9)  # beyond what is stored
        assert e.value.errno > 0
        c.release(1)
        with pytest.raises(kvsink.KVSinkError):
            c.get(1, 0, 1)
        with pytest.raises(ValueError):
            c.put(2, 0, range(8), k[:, :4], v)
        c.ping()
        c.set_busy_poll(200)  # replies read by spinning first: the same data back
        c.put(3, 0, range(8), k, v)
        kk, vv = c.get(3, 0, 8)
        assert (kk == k).all() and (vv == v).all()
        c.set_busy_poll(0)
        with pytest.raises(ValueError):
            c.set_busy_poll(100001)
    with pytest.raises(ValueError):
        c.ping()
    with pytest.raises(kvsink.KVSinkError) as e:
        kvsink.Client(m, sock + ".missing")
    assert e.value.errno in (errno.ENOENT, errno.ECONNREFUSED)


def test_bfloat16_numpy_bits(sock, model_id):
    m = kvsink.Model(model_id, L, H, D, dtype="bfloat16")
    with kvsink.Client(m, sock, bits=16) as c:
        k, v = kv(33, seed=4)
        c.put(1, 0, range(33), k.astype(np.float32), v.astype(np.float32))
        kb, vb = c.get(1, 0, 33)
        assert kb.dtype == np.uint16
        # fp16 values of this range are exact in bf16 only to 8 bits
        back = kvsink.bf16_to_float32(kb)
        assert np.abs(back - k.astype(np.float32)).max() <= np.abs(k).max() / 128


def test_torch_tensors(sock, model_id):
    torch = pytest.importorskip("torch")
    for dt, name in ((torch.float16, "float16"), (torch.bfloat16, "bfloat16")):
        m = kvsink.Model(model_id + name, L, H, D, dtype=name)
        with kvsink.Client(m, sock, bits=16) as c:
            g = torch.Generator().manual_seed(5)
            k = torch.randn(L, 50, H, D, generator=g).to(dt)
            v = torch.randn(L, 50, H, D, generator=g).to(dt)
            c.put(1, 0, torch.arange(50), k, v)
            k2, v2 = c.get(1, 0, 50, like="torch")
            assert k2.dtype == dt and torch.equal(k2, k) and torch.equal(v2, v)


def test_cuda_tensors_are_staged(sock, model_id):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    m = kvsink.Model(model_id, L, H, D)
    with kvsink.Client(m, sock, bits=16) as c:
        k = torch.randn(L, 40, H, D, device="cuda", dtype=torch.float16)
        v = torch.randn(L, 40, H, D, device="cuda", dtype=torch.float16)
        c.put(1, 0, range(40), k, v)
        k2, v2 = c.get(1, 0, 40, device="cuda")
        assert k2.is_cuda and torch.equal(k2, k) and torch.equal(v2, v)
        assert c.stats()["staged_copies"] == 3
