# SPDX-License-Identifier: MIT
"""Decode attention over the compressed cache from Python (libkvsink(3)
ATTEND): Client.table() takes a block table of a seq, Client.attend()
computes softmax(q K^T / sqrt(d)) V for one query token per sequence
straight from the quantized blocks, in this process, without a round
trip to kvsinkd and without 16-bit K/V anywhere.

Queries and results stay where they are: numpy arrays and CPU tensors
go through kvs_attend_lse (tables of a host pool); CUDA tensors through
kvs_attend_device on torch's current stream of their GPU (tables of a
GPU pool on that GPU)."""
import ctypes

import numpy as np

from kvsink import _lib as L

try:
    import torch
except ImportError:  # numpy alone is enough
    torch = None

_NP_DTYPES = {np.dtype(np.float32): L.DTYPE_F32, np.dtype(np.float16): L.DTYPE_F16,
              np.dtype(np.uint16): L.DTYPE_BF16}  # uint16: bfloat16 bits, as get() returns them


def _torch_dtypes():
    return {torch.float32: L.DTYPE_F32, torch.float16: L.DTYPE_F16,
            torch.bfloat16: L.DTYPE_BF16}


class Table(L.Closing):
    """A block table of one seq (Client.table): where its blocks of some
    layers lie in kvsinkd's pool, mapped read-only in this process. A
    snapshot: tokens put later need a new table. Close it (or use it as a
    context manager) before release(seq)."""

    def __init__(self, client, handle, seq, layer_begin, layer_end):
        self._client = client  # the pool chunks it maps are the session's
        self._t = handle
        self.seq = seq
        self.layers = range(layer_begin, layer_end)

    def tokens(self, layer):
        """Tokens the table holds in layer (0 outside its layers)."""
        return int(L.lib().kvs_table_tokens(self._handle(), int(layer)))

    def _handle(self):
        if self._t is None:
            raise ValueError("kvsink table is closed")
        return self._t

    def close(self):
        if self._t is not None:
            L.lib().kvs_table_free(self._t)
            self._t = None


def table(client, seq, layers):
    lib = L.lib()
    if not lib.has_attend:
        raise RuntimeError("this libkvsink has no attend (block tables)")
    h = client._handle()
    lb, le = client._layers(layers)
    t = ctypes.c_void_p()
    # the daemon writes the table into the host segment, which is free
    # between this package's calls; libkvsink copies it out before it returns
    with client._gpu():
        client._check(lib.kvs_table_get(h, seq, lb, le, 0, len(client._seg), ctypes.byref(t)),
                      "table")
    return Table(client, t, seq, lb, le)


def _query(q, n, head_dim):
    """q as [n][heads][head_dim] (a 2-D q: one sequence), and its kind."""
    if torch is not None and isinstance(q, torch.Tensor):
        kinds = _torch_dtypes()
        if q.dtype not in kinds:
            raise TypeError("q: float32, float16 or bfloat16, got %s" % q.dtype)
        if q.dim() == 2:
            q = q.unsqueeze(0)
        q = q.contiguous()
        kind = "cuda" if q.device.type == "cuda" else "torch"
        if kind == "torch" and q.device.type != "cpu":
            raise ValueError("q: a CPU or CUDA tensor, got %s" % q.device)
        dt = kinds[q.dtype]
    else:
        q = np.ascontiguousarray(q)
        if q.dtype not in _NP_DTYPES:
            raise TypeError("q: float32, float16 or uint16 (bfloat16 bits), got %s" % q.dtype)
        if q.ndim == 2:
            q = q[None]
        kind, dt = "numpy", _NP_DTYPES[q.dtype]
    if q.ndim != 3 or q.shape[0] != n or q.shape[2] != head_dim:
        raise ValueError("q must be [%d][n_q_heads][%d], got %s" % (n, head_dim, tuple(q.shape)))
    return q, kind, dt


def attend(client, tables, layer, q, lse):
    lib = L.lib()
    if not lib.has_attend:
        raise RuntimeError("this libkvsink has no attend")
    h = client._handle()
    one = isinstance(tables, Table)
    tabs = [tables] if one else list(tables)
    if not tabs:
        raise ValueError("attend: no table")
    arr = (ctypes.c_void_p * len(tabs))(*[t._handle() for t in tabs])
    squeeze = (q.dim() if torch is not None and isinstance(q, torch.Tensor) else np.ndim(q)) == 2
    q, kind, dt = _query(q, len(tabs), client.model.head_dim)
    nq = q.shape[1]
    if kind == "numpy":
        out = np.empty(q.shape, dtype=np.float32)
        ls = np.empty(q.shape[:2], dtype=np.float32) if lse else None
        r = lib.kvs_attend_lse(h, arr, len(tabs), int(layer), q.ctypes.data, dt, nq, out.ctypes.data,
                               ls.ctypes.data if lse else None)
    else:
        out = torch.empty(q.shape, dtype=torch.float32, device=q.device)
        ls = torch.empty(q.shape[:2], dtype=torch.float32, device=q.device) if lse else None
        if kind == "torch":
            r = lib.kvs_attend_lse(h, arr, len(tabs), int(layer), q.data_ptr(), dt, nq,
                                   out.data_ptr(), ls.data_ptr() if lse else None)
        else:
            with torch.cuda.device(q.device):
                stream = torch.cuda.current_stream(q.device).cuda_stream
                r = lib.kvs_attend_device(h, arr, len(tabs), int(layer), q.data_ptr(), dt, nq,
                                          out.data_ptr(), ls.data_ptr() if lse else None, stream)
    client._check(r, "attend")
    if squeeze:
        out = out[0]
        ls = ls[0] if lse else None
    return (out, ls) if lse else out
