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


def test_split_by_layers_when_one_token_does_not_fit(sock, model_id):
    # one token of 12 layers x 4 heads x 64 is 12 KiB of K and V; an 8 KiB
    # segment takes 8 layers of 1 token, then 4 layers of 2 tokens
    m = kvsink.Model(model_id, 12, 4, 64)
    r = np.random.default_rng(6)
    k = r.standard_normal((12, 40, 4, 64)).astype(np.float16)
    v = r.standard_normal((12, 40, 4, 64)).astype(np.float16)
    with kvsink.Client(m, sock, bits=16, seg_size=8192) as c:
        assert c.info["seg_size"] == 8192
        c.put(1, 0, range(40), k, v)
        assert c.stats()["puts"] == 40 + 20
        k2, v2 = c.get(1, 0, 40)
        assert np.array_equal(k2, k) and np.array_equal(v2, v)
        k3, _ = c.get(1, 5, 30, layers=(3, 11))
        assert np.array_equal(k3, k[3:11, 5:35])


def test_device_none_or_auto_without_gpu_is_the_host_segment(sock, model_id):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present (test_cuda_tensors_* cover it)")
    m = kvsink.Model(model_id, L, H, D)
    for dev in (None, "auto", "cpu"):
        with kvsink.Client(m, sock, bits=16, device=dev) as c:
            assert c.device is None and not c.info["seg_device"]
            assert c.info["dev_seg_size"] == 0
            k, v = kv(40, seed=7)
            c.put(1, 0, range(40), torch.from_numpy(k), v)
            k2, v2 = c.get(1, 0, 40, like="torch")
            assert torch.equal(k2, torch.from_numpy(k)) and torch.equal(v2, torch.from_numpy(v))
            assert c.stats()["staged_copies"] == 0 and c.stats()["device_puts"] == 0


def test_explicit_cuda_device_without_gpu_is_a_clear_error(sock, model_id):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    m = kvsink.Model(model_id, L, H, D)
    for dev in ("cuda:0", 0, torch.device("cuda")):
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            kvsink.Client(m, sock, device=dev)
    with pytest.raises(ValueError, match="CUDA memory"):
        kvsink.Client(m, sock, device="meta")


def test_path_choice_without_a_device_segment(sock, model_id):
    # what put/get do with each kind of input when the session has only
    # the host segment: numpy and CPU tensors go as before, CUDA tensors are
    # staged through host memory, tensors without data are refused
    torch = pytest.importorskip("torch")
    m = kvsink.Model(model_id, L, H, D)
    with kvsink.Client(m, sock, bits=16) as c:
        k, v = kv(8, seed=8)
        assert c.path_for(k) == "host"
        assert c.path_for(torch.from_numpy(k)) == "host"
        assert c.path_for(torch.device("cpu")) == "host"
        assert c.path_for(torch.device("cuda", 0)) == "staged"
        assert c.path_for(torch.device("cuda", 3)) == "staged"
        meta = torch.empty(L, 8, H, D, dtype=torch.float16, device="meta")
        with pytest.raises(ValueError, match="meta"):
            c.path_for(meta)
        with pytest.raises(ValueError, match="meta"):
            c.put(1, 0, range(8), meta, meta)
        assert c.stats()["puts"] == 0  # refused before anything was sent
        c.put(1, 0, range(8), k, v)
        with pytest.raises(ValueError, match="meta"):
            c.get(1, 0, 8, device="meta")


def test_get_into_out_tensors(sock, model_id):
    # out= writes into views of the caller's tensors (here a cache laid out
    # [layers][heads][tokens][dim], in float32): no extra tensors returned
    torch = pytest.importorskip("torch")
    m = kvsink.Model(model_id, L, H, D)
    with kvsink.Client(m, sock, bits=16) as c:
        k, v = kv(50, seed=9)
        c.put(1, 0, range(50), k, v)
        kc = torch.zeros(L, H, 60, D)
        vc = torch.zeros(L, H, 60, D)
        ko, vo = c.get(1, 10, 40, out=(kc[:, :, 5:45].transpose(1, 2),
                                       vc[:, :, 5:45].transpose(1, 2)))
        assert ko.data_ptr() == kc[:, :, 5:45].data_ptr()
        want_k = torch.from_numpy(k[:, 10:50].astype(np.float32)).transpose(1, 2)
        want_v = torch.from_numpy(v[:, 10:50].astype(np.float32)).transpose(1, 2)
        assert torch.equal(kc[:, :, 5:45], want_k) and torch.equal(vc[:, :, 5:45], want_v)
        assert float(kc[:, :, :5].abs().sum()) == 0 and float(kc[:, :, 45:].abs().sum()) == 0
        with pytest.raises(ValueError):
            c.get(1, 0, 40, out=(kc, vc))


def test_cuda_tensors_device_segment(sock, model_id):
    # on the GPU machine (tests/gpu/transformers.sh, kvsinkd with a pool on
    # this GPU): GPU to GPU through the device segment, nothing staged;
    # against a daemon without one the same calls are staged
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    m = kvsink.Model(model_id, L, H, D)
    with kvsink.Client(m, sock, bits=16, device="cuda", seg_size=1 << 20) as c:
        k = torch.randn(L, 3000, H, D, device="cuda", dtype=torch.float16)
        v = torch.randn(L, 3000, H, D, device="cuda", dtype=torch.float16)
        c.put(1, 0, range(3000), k, v)
        k2, v2 = c.get(1, 0, 3000, device="cuda")
        assert k2.is_cuda and torch.equal(k2, k) and torch.equal(v2, v)
        kc = torch.zeros(L, H, 3000, D, device="cuda", dtype=torch.float32)
        c.get(1, 0, 3000, out=(kc.transpose(1, 2), torch.empty_like(kc).transpose(1, 2)))
        assert torch.equal(kc, k.float().transpose(1, 2))
        st = c.stats()
        if c.info["seg_device"]:
            assert c.device == torch.device("cuda", torch.cuda.current_device())
            assert st["staged_copies"] == 0 and st["device_puts"] == st["puts"] >= 2
            assert st["device_gets"] == st["gets"]
            assert c.path_for(k) == "device" and c.path_for(k.cpu()) == "host"
        else:
            assert c.device is None and st["staged_copies"] == 4 and st["device_puts"] == 0


def test_dlpack_wrap_in_place(sock, model_id):
    # the fallback that wraps the device segment when torch cannot place a
    # __cuda_array_interface__ pointer, tried here on the host segment: the
    # tensor is the segment's memory itself (what the daemon wrote, there)
    torch = pytest.importorskip("torch")
    from kvsink import client as kc
    m = kvsink.Model(model_id, L, H, D)
    with kvsink.Client(m, sock, bits=16) as c:
        k, v = kv(10, seed=10)
        c.put(1, 0, range(10), k, v)
        c.get(1, 0, 10)  # leaves K then V at the start of the segment
        ptr = c._seg.ctypes.data
        t, keep = kc._dlpack_bytes(ptr, len(c._seg), kc._KDL_CPU, 0)
        assert t.data_ptr() == ptr and t.numel() == len(c._seg) and t.dtype == torch.uint8
        n = k.size
        assert np.array_equal(t[:2 * n].view(torch.float16).numpy(), k.reshape(-1))
        t[:2].zero_()
        assert c._seg[0] == 0 and c._seg[1] == 0
        del t, keep


def test_put_longer_than_one_request_allows(sock, model_id):
    # a put carries at most 8192 token ids: 9000 tokens that fit the segment
    # still go as two puts
    m = kvsink.Model(model_id, 1, 1, 8)
    r = np.random.default_rng(11)
    k = r.standard_normal((1, 9000, 1, 8)).astype(np.float16)
    v = r.standard_normal((1, 9000, 1, 8)).astype(np.float16)
    with kvsink.Client(m, sock, bits=16) as c:
        assert c.put(1, 0, np.arange(9000) % 8000, k, v)["seq_len"] == 9000
        assert c.stats()["puts"] == 2
        k2, v2 = c.get(1, 0, 9000)
        assert np.array_equal(k2, k) and np.array_equal(v2, v)
