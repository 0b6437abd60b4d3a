# SPDX-License-Identifier: MIT
"""Client.table / Client.attend (decode attention over the compressed
cache) against a real kvsinkd (tests/python/run.sh): the result is
attention over exactly the K/V a get returns."""
import errno

import numpy as np
import pytest

import kvsink

L, H, D, QH = 2, 2, 64, 4  # GQA: 2 query heads per KV head


def kv(n, seed):
    r = np.random.default_rng(seed)
    k = r.standard_normal((L, n, H, D)).astype(np.float16)
    v = r.standard_normal((L, n, H, D)).astype(np.float16)
    k[:, 0] *= 8  # a sink-like first token
    return k, v


def reference(k, v, q):
    """softmax(q K^T / sqrt(D)) V in float64 over one layer's K, V
    [tokens][H][D]; q [QH][D]: out [QH][D] and the log-denominators."""
    k, v, q = k.astype(np.float64), v.astype(np.float64), q.astype(np.float64)
    g = QH // H
    out, lse = np.empty((QH, D)), np.empty(QH)
    for h in range(QH):
        s = k[:, h // g] @ q[h] / np.sqrt(D)
        m = s.max()
        p = np.exp(s - m)
        out[h] = p @ v[:, h // g] / p.sum()
        lse[h] = m + np.log(p.sum())
    return out, lse


def close_enough(got, want, v):
    # fp32 sums in another order than float64 here
    return np.abs(got - want).max() <= 1e-4 * np.abs(v).max()


@pytest.mark.parametrize("bits", [2, 4, 16])
def test_attend_equals_attention_over_get(sock, model_id, bits):
    m = kvsink.Model(model_id, L, H, D)
    with kvsink.Client(m, sock, bits=bits, policy="none") as c:
        n = 200  # 6 blocks of 32 and an 8-token residual
        k, v = kv(n, seed=bits)
        c.put(1, 0, range(n), k, v)
        kg, vg = c.get(1, 0, n)  # what attend must see
        q = np.random.default_rng(7).standard_normal((QH, D)).astype(np.float32)
        with c.table(1) as t:
            assert t.tokens(0) == n and t.tokens(1) == n and t.tokens(2) == 0
            for layer in range(L):
                out, lse = c.attend(t, layer, q, lse=True)
                assert out.shape == (QH, D) and out.dtype == np.float32 and lse.shape == (QH,)
                want, wl = reference(kg[layer], vg[layer], q)
                assert close_enough(out, want, vg[layer]), layer
                assert np.abs(lse - wl).max() < 1e-4
            if bits != 16:
                # and not attention over the unquantized K/V: the test sees the difference
                raw, _ = reference(k[0], v[0], q)
                assert not close_enough(c.attend(t, 0, q), raw, v[0])


def test_batch_of_tables_float16_and_torch(sock, model_id):
    m = kvsink.Model(model_id, L, H, D)
    with kvsink.Client(m, sock, bits=4, policy="none") as c:
        lens = (100, 37)
        for seq, n in enumerate(lens):
            k, v = kv(n, seed=10 + seq)
            c.put(seq, 0, np.arange(n) + 1000 * seq, k, v)
        tabs = [c.table(seq) for seq in range(len(lens))]
        q = np.random.default_rng(3).standard_normal((len(lens), QH, D)).astype(np.float16)
        out = c.attend(tabs, 1, q)
        assert out.shape == (len(lens), QH, D)
        for seq, n in enumerate(lens):
            kg, vg = c.get(seq, 0, n, layers=1)
            want, _ = reference(kg[0], vg[0], q[seq].astype(np.float32))
            assert close_enough(out[seq], want, vg[0]), seq
        torch = pytest.importorskip("torch")
        qt = torch.from_numpy(q.astype(np.float32)).to(torch.bfloat16)
        ot, lt = c.attend(tabs, 1, qt, lse=True)
        assert isinstance(ot, torch.Tensor) and ot.dtype == torch.float32 and lt.shape == (2, QH)
        # bfloat16 q: the same attention as q rounded to bfloat16 in float32
        o32 = c.attend(tabs, 1, qt.float().numpy())
        assert np.abs(ot.numpy() - o32).max() <= 1e-6 * np.abs(o32).max() + 1e-7
        # the same bfloat16 bits as numpy uint16: the very same call
        ob = c.attend(tabs, 1, qt.view(torch.int16).numpy().view(np.uint16))
        assert np.array_equal(ob, ot.numpy())
        for t in tabs:
            t.close()


def test_a_table_is_a_snapshot(sock, model_id):
    m = kvsink.Model(model_id, L, H, D)
    with kvsink.Client(m, sock, bits=4, policy="none") as c:
        k, v = kv(96, seed=5)
        c.put(4, 0, range(64), k[:, :64], v[:, :64])
        t1 = c.table(4, layers=0)
        c.put(4, 64, range(64, 96), k[:, 64:], v[:, 64:])
        t2 = c.table(4)
        assert t1.tokens(0) == 64 and t1.tokens(1) == 0 and t2.tokens(0) == 96
        q = np.ones((QH, D), dtype=np.float32)
        kg, vg = c.get(4, 0, 96, layers=0)
        want64, _ = reference(kg[0, :64], vg[0, :64], q)
        assert close_enough(c.attend(t1, 0, q), want64, vg[0])
        t1.close()
        t2.close()


def test_attend_errors(sock, model_id):
    m = kvsink.Model(model_id, L, H, D)
    with kvsink.Client(m, sock, bits=4) as c:
        k, v = kv(40, seed=6)
        c.put(2, 0, range(40), k, v)
        t = c.table(2)
        q = np.zeros((QH, D), dtype=np.float32)
        with pytest.raises(ValueError):
            c.attend(t, 0, np.zeros((QH, D + 1), dtype=np.float32))  # head dim
        with pytest.raises(ValueError):
            c.attend([t, t], 0, q)  # 2 tables, 1 query
        with pytest.raises(TypeError):
            c.attend(t, 0, q.astype(np.float64))
        with pytest.raises(kvsink.KVSinkError) as e:
            c.attend(t, 0, np.zeros((3, D), dtype=np.float32))  # 3 heads over 2 KV heads
        assert e.value.errno == errno.EINVAL
        with pytest.raises(kvsink.KVSinkError) as e:
            c.table(99)  # no such seq
        assert e.value.errno in (errno.ENOENT, errno.EINVAL)
        t.close()
        with pytest.raises(ValueError):
            c.attend(t, 0, q)  # closed
        with pytest.raises(ValueError):
            t.tokens(0)
