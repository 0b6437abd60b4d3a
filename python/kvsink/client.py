# SPDX-License-Identifier: MIT
"""kvsink.Client: one connection to kvsinkd for one model (a handle of
libkvsink), with numpy arrays and torch tensors in and out.

K and V are [layers][tokens][kv_heads][head_dim] in the model's 16-bit
dtype (kvsink.h); the activation summary is float32 [tokens][channels],
channels as info["sink_channels"]. Tensors go through the host shared
segment; a CUDA tensor is staged through host memory (device segments
are not in kvsink.h yet), and get(..., device=...) returns tensors there.
Calls larger than the segment are split into several puts / gets."""
import ctypes

import numpy as np

from kvsink import _lib as L

try:
    import torch
except ImportError:  # numpy alone is enough
    torch = None

_POLICIES = {None: L.POLICY_DEFAULT, "default": L.POLICY_DEFAULT, "none": L.POLICY_NONE,
             "pfn": L.POLICY_PFN, "kvsink": L.POLICY_KVSINK}
_POLICY_NAMES = {v: k for k, v in _POLICIES.items() if k}


class KVSinkError(OSError):
    """A libkvsink call failed. errno: the positive code (Linux errno or
    4001.. for KVS_E*), code: the negative value the C call returned,
    strerror: kvs_strerror(code), message: the daemon's (kvs_last_error)."""

    def __init__(self, code, message="", call=""):
        name = L.lib().kvs_strerror(code).decode()
        super().__init__(-code, name)
        self.code = code
        self.message = message
        self.call = call

    def __str__(self):
        s = "%s: %s" % (self.call, self.strerror) if self.call else self.strerror
        return s + (" (%s)" % self.message if self.message and self.message != self.strerror else "")


class Model:
    """What the daemon needs to know of a model; caches of different ids never mix."""

    def __init__(self, model_id, n_layers, n_kv_heads, head_dim, dtype="float16"):
        if dtype not in ("float16", "bfloat16"):
            raise ValueError("dtype must be float16 or bfloat16")
        self.model_id, self.n_layers, self.n_kv_heads, self.head_dim, self.dtype = \
            model_id, int(n_layers), int(n_kv_heads), int(head_dim), dtype

    def __repr__(self):
        return "Model(%r, n_layers=%d, n_kv_heads=%d, head_dim=%d, dtype=%r)" % (
            self.model_id, self.n_layers, self.n_kv_heads, self.head_dim, self.dtype)


def _f32_to_bf16_bits(a):
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def _is_torch(x):
    return torch is not None and isinstance(x, torch.Tensor)


class Client:
    """Connect to kvsinkd (socket None: $KVSINK_SOCKET or the default path).

    bits sets k_bits and v_bits together; 0 / None / -1 take the daemon's
    defaults. policy: "none", "pfn", "kvsink" or None. salt: bytes or str
    of at most 32 bytes; clients share cached prefixes only with equal
    salts (as vLLM's cache_salt)."""

    def __init__(self, model, socket=None, *, bits=None, k_bits=None, v_bits=None, policy=None,
                 pfn=None, outliers=None, seg_size=0, salt=None):
        self._c = None
        self.model = model
        lib = L.lib()
        if policy not in _POLICIES:
            raise ValueError("policy must be one of none, pfn, kvsink")
        self._mid = model.model_id.encode()
        cm = L.Model(self._mid, model.n_layers, model.n_kv_heads, model.head_dim,
                     L.DTYPE_F16 if model.dtype == "float16" else L.DTYPE_BF16)
        opts = L.Options()
        lib.kvs_options_init(ctypes.byref(opts))
        opts.seg_size = int(seg_size)
        opts.k_bits = int(k_bits if k_bits is not None else (bits or 0))
        opts.v_bits = int(v_bits if v_bits is not None else (bits or 0))
        opts.policy = _POLICIES[policy]
        if pfn is not None:
            opts.pfn = int(pfn)
        if outliers is not None:
            opts.outliers = float(outliers)
        if salt is not None:  # bytes or str: sessions share only with equal salts
            sb = salt.encode() if isinstance(salt, str) else bytes(salt)
            if len(sb) > len(opts.salt):
                raise ValueError("salt: at most %d bytes" % len(opts.salt))
            ctypes.memmove(opts.salt, sb, len(sb))
            opts.salt_len = len(sb)
        h = ctypes.c_void_p()
        r = lib.kvs_connect(ctypes.byref(h), socket.encode() if socket else None,
                            ctypes.byref(cm), ctypes.byref(opts))
        if r < 0:
            raise KVSinkError(r, "connecting to %s" % (socket or "the default socket"), "connect")
        self._c = h
        size = ctypes.c_size_t()
        ptr = lib.kvs_segment(h, ctypes.byref(size))
        self._seg = np.ctypeslib.as_array((ctypes.c_uint8 * size.value).from_address(ptr))
        self._stats = dict(puts=0, gets=0, lookups=0, tokens_put=0, tokens_got=0,
                           tokens_hit=0, tokens_looked_up=0, bytes_in=0, bytes_out=0,
                           sinks=0, quantized=0, staged_copies=0)

    # ---- lifecycle ----
    def close(self):
        if self._c is not None:
            self._seg = None
            L.lib().kvs_close(self._c)
            self._c = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _check(self, r, call):
        if r < 0:
            msg = L.lib().kvs_last_error(self._c)
            raise KVSinkError(r, msg.decode(errors="replace") if msg else "", call)
        return r

    def _handle(self):
        if self._c is None:
            raise ValueError("kvsink client is closed")
        return self._c

    # ---- what the daemon granted ----
    @property
    def info(self):
        i = L.lib().kvs_get_info(self._handle()).contents
        return dict(session=i.session, seg_size=i.seg_size, group=i.group, k_bits=i.k_bits,
                    v_bits=i.v_bits, pfn=i.pfn, policy=_POLICY_NAMES.get(i.policy, i.policy),
                    outliers=i.outliers, has_profile=bool(i.has_profile),
                    sink_layer=i.sink_layer,
                    sink_channels=list(i.sink_channels[:i.n_sink_channels]))

    def stats(self):
        """This client's counters (calls, tokens, bytes through the segment,
        prefix hits, sinks and quantized tokens the daemon reported)."""
        return dict(self._stats)

    def ping(self):
        self._check(L.lib().kvs_ping(self._handle()), "ping")

    def set_busy_poll(self, usec):
        """Spin up to usec microseconds for each reply before blocking
        (0 = off, at most 100000); libkvsink(3) kvs_set_busy_poll."""
        if not 0 <= usec <= 100000:
            raise ValueError("busy-poll of %r us: expected 0..100000" % (usec,))
        self._check(L.lib().kvs_set_busy_poll(self._handle(), usec), "set_busy_poll")

    def kv_bytes(self, n_tokens, layer_begin=0, layer_end=None):
        le = self.model.n_layers if layer_end is None else layer_end
        return L.lib().kvs_kv_bytes(self._handle(), n_tokens, layer_begin, le)

    # ---- conversions ----
    def _to_bits(self, x, what):
        """x as a C-contiguous uint16 numpy array of the model dtype's bits."""
        bf = self.model.dtype == "bfloat16"
        if _is_torch(x):
            if x.is_cuda:
                self._stats["staged_copies"] += 1
            want = torch.bfloat16 if bf else torch.float16
            if x.dtype != torch.int16:  # int16: the bits already
                if not x.is_floating_point():
                    raise TypeError("%s: %s is not a floating tensor" % (what, x.dtype))
                x = x.to(want)
            return x.detach().contiguous().cpu().view(torch.int16).numpy().view(np.uint16)
        a = np.asarray(x)
        if a.dtype == np.uint16 or a.dtype == np.int16:
            return np.ascontiguousarray(a).view(np.uint16)
        if a.dtype.kind != "f":
            raise TypeError("%s: %s is not a float array" % (what, a.dtype))
        if bf:
            return _f32_to_bf16_bits(a)
        return np.ascontiguousarray(a, dtype=np.float16).view(np.uint16)

    def _layers(self, layers):
        if layers is None:
            return 0, self.model.n_layers
        if isinstance(layers, int):
            return layers, layers + 1
        if isinstance(layers, range):
            if layers.step != 1:
                raise ValueError("layers must be contiguous")
            return layers.start, layers.stop
        lb, le = layers
        return int(lb), int(le)

    def _chunk_tokens(self, n_layers, act_channels):
        """Tokens per call so that K, V and the summary fit the segment."""
        per = 2 * self.kv_bytes(1, 0, n_layers) if n_layers else 0
        per += 4 * act_channels
        if per == 0:
            return 1 << 30
        t = len(self._seg) // per
        if t == 0:
            raise KVSinkError(-28, "one token of %d layers does not fit the segment" % n_layers,
                              "put")
        return t

    # ---- the API ----
    def put(self, seq, start, tokens, k=None, v=None, *, layers=None, act=None):
        """Store K/V of tokens [start, start + len(tokens)) for layers (None:
        all, an int, a (begin, end) pair or a range) of sequence seq.
        k, v: [layers][tokens][kv_heads][head_dim]; act: optional float32
        [tokens][channels] summary. layers (lb, lb) with k = v = None
        sends only the summary. Returns dict(quantized, sinks, seq_len)."""
        h = self._handle()
        lb, le = self._layers(layers)
        toks = np.ascontiguousarray(np.asarray(tokens, dtype=np.int64).reshape(-1), dtype=np.uint32)
        n = len(toks)
        nl = le - lb
        m = self.model
        shape = (nl, n, m.n_kv_heads, m.head_dim)
        if nl > 0:
            kb, vb = self._to_bits(k, "k"), self._to_bits(v, "v")
            if kb.size != int(np.prod(shape)) or vb.size != kb.size:
                raise ValueError("k and v must be %s, got %s and %s elements" %
                                 (shape, kb.size, vb.size))
            kb, vb = kb.reshape(shape), vb.reshape(shape)
        ab = None
        if act is not None:
            if _is_torch(act):
                act = act.detach().float().cpu().numpy()
            ab = np.ascontiguousarray(act, dtype=np.float32).reshape(n, -1)
        ch = 0 if ab is None else ab.shape[1]
        step = self._chunk_tokens(nl, ch)
        res = dict(quantized=0, sinks=0, seq_len=0)
        args, out = L.PutArgs(), L.PutResult()
        for s in range(0, max(n, 1), step):
            e = min(n, s + step)
            t = e - s
            kvb = self.kv_bytes(t, lb, le) if nl else 0
            if nl:
                seg16 = self._seg[:2 * kvb].view(np.uint16)
                seg16[:kvb // 2] = kb[:, s:e].reshape(-1)
                seg16[kvb // 2:] = vb[:, s:e].reshape(-1)
            if ab is not None:
                self._seg[2 * kvb:2 * kvb + 4 * t * ch].view(np.float32)[:] = ab[s:e].reshape(-1)
            args.seq, args.start, args.n_tokens = seq, start + s, t
            args.tokens = toks[s:e].ctypes.data_as(ctypes.POINTER(ctypes.c_uint32))
            args.layer_begin, args.layer_end = lb, le
            args.k_off, args.v_off = 0, kvb
            args.act_off, args.act_channels = 2 * kvb, ch
            self._check(L.lib().kvs_put(h, ctypes.byref(args), ctypes.byref(out)), "put")
            res["quantized"] += out.quantized
            res["sinks"] += out.sinks
            res["seq_len"] = out.seq_len
            st = self._stats
            st["puts"] += 1
            st["tokens_put"] += t
            st["bytes_in"] += 2 * kvb + 4 * t * ch
        self._stats["sinks"] += res["sinks"]
        self._stats["quantized"] += res["quantized"]
        return res

    def lookup(self, seq, tokens, bind=False):
        """Leading tokens of tokens that are cached (whole blocks, every
        layer). bind: attach them to seq (empty) so get/put can use them."""
        toks = np.ascontiguousarray(np.asarray(tokens, dtype=np.int64).reshape(-1), dtype=np.uint32)
        r = self._check(L.lib().kvs_lookup(self._handle(), seq,
                                           toks.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)),
                                           len(toks), 1 if bind else 0), "lookup")
        self._stats["lookups"] += 1
        self._stats["tokens_looked_up"] += len(toks)
        self._stats["tokens_hit"] += r
        return r

    def get(self, seq, start, n_tokens, *, layers=None, like="numpy", device=None):
        """K, V of tokens [start, start + n_tokens) of layers of seq,
        dequantized: [layers][tokens][kv_heads][head_dim] in the model
        dtype. like="numpy" (float16, or uint16 bits for bfloat16) or
        "torch" (on device, default CPU)."""
        h = self._handle()
        lb, le = self._layers(layers)
        m = self.model
        nl = le - lb
        shape = (nl, n_tokens, m.n_kv_heads, m.head_dim)
        k = np.empty(shape, dtype=np.uint16)
        v = np.empty(shape, dtype=np.uint16)
        step = self._chunk_tokens(nl, 0)
        for s in range(0, n_tokens, step):
            t = min(n_tokens, s + step) - s
            kvb = self.kv_bytes(t, lb, le)
            self._check(L.lib().kvs_get(h, seq, start + s, t, lb, le, 0, kvb), "get")
            seg16 = self._seg[:2 * kvb].view(np.uint16)
            k[:, s:s + t] = seg16[:kvb // 2].reshape(nl, t, m.n_kv_heads, m.head_dim)
            v[:, s:s + t] = seg16[kvb // 2:].reshape(nl, t, m.n_kv_heads, m.head_dim)
            self._stats["gets"] += 1
            self._stats["tokens_got"] += t
            self._stats["bytes_out"] += 2 * kvb
        if like == "torch" or device is not None:
            if torch is None:
                raise RuntimeError("torch is not installed")
            want = torch.bfloat16 if m.dtype == "bfloat16" else torch.float16
            kt = torch.from_numpy(k.view(np.int16)).view(want)
            vt = torch.from_numpy(v.view(np.int16)).view(want)
            if device is not None and str(device) != "cpu":
                self._stats["staged_copies"] += 1
                kt, vt = kt.to(device), vt.to(device)
            return kt, vt
        if m.dtype == "float16":
            return k.view(np.float16), v.view(np.float16)
        return k, v

    def release(self, seq):
        """Drop seq: its references go, its cached blocks stay."""
        self._check(L.lib().kvs_release(self._handle(), seq), "release")
