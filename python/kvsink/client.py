# SPDX-License-Identifier: MIT
"""kvsink.Client: one connection to kvsinkd for one model (a handle of
libkvsink), with numpy arrays and torch tensors in and out.

K and V are [layers][tokens][kv_heads][head_dim] in the model's 16-bit
dtype (kvsink.h); the activation summary is float32 [tokens][channels],
channels as info["sink_channels"].

Which way the bytes go (path_for() says it for a tensor):
- "device": a CUDA tensor on the GPU of the session's device segment
  (Client(..., device=...) and a daemon with a pool on that GPU): torch
  copies it into the segment on the GPU (kvs_put_device / kvs_get_device,
  no host copy; libkvsink(3) DEVICE SEGMENTS);
- "host": numpy arrays and CPU tensors, through the host segment;
- "staged": any other tensor (a CUDA tensor without a device segment: no
  device= asked, a daemon without CUDA or without a pool on that GPU, or
  a tensor on another GPU) goes through host memory and the host segment;
  stats()["staged_copies"] counts these copies. A tensor without data (the
  meta device) is refused with ValueError.
Calls larger than the segment are split into several puts / gets, by
tokens, and by layers when one token of every layer does not fit."""
import contextlib
import ctypes

import numpy as np

from kvsink import _lib as L
from kvsink import attend as _attend

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


class _CudaArray:
    """The device segment as a __cuda_array_interface__ (v3) owner, so
    torch.as_tensor wraps it without a copy and without CuPy. No stream
    key: libkvsink orders the segment (libkvsink(3) DEVICE SEGMENTS)."""

    def __init__(self, ptr, size):
        self.__cuda_array_interface__ = dict(shape=(size,), typestr="|u1", data=(ptr, False),
                                             strides=None, version=3)


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p),
                ("deleter", ctypes.c_void_p)]


_DLTENSOR_NAME = b"dltensor"
_KDL_CPU, _KDL_CUDA = 1, 2


def _dlpack_bytes(ptr, size, device_type, device_id):
    """size bytes at ptr as a torch uint8 tensor through a DLPack capsule
    (the device named, not looked up from the pointer). Returns (tensor,
    keep): keep holds the structures the tensor points to (no deleter)."""
    shape = (ctypes.c_int64 * 1)(size)
    m = _DLManagedTensor()
    m.dl_tensor.data = ptr
    m.dl_tensor.device = _DLDevice(device_type, device_id)
    m.dl_tensor.ndim = 1
    m.dl_tensor.dtype = _DLDataType(1, 8, 1)  # kDLUInt, 8 bits
    m.dl_tensor.shape = shape
    new = ctypes.pythonapi.PyCapsule_New
    new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p,
                                                   ctypes.c_void_p]
    cap = new(ctypes.addressof(m), _DLTENSOR_NAME, None)
    return torch.utils.dlpack.from_dlpack(cap), (m, shape)


def _wrap_device_segment(ptr, size, device):
    """The device segment as a torch uint8 tensor on device, wrapped in
    place: __cuda_array_interface__ (torch asks the driver which GPU the
    pointer is on), else DLPack (the GPU named). (tensor, keep)."""
    try:
        t, keep = torch.as_tensor(_CudaArray(ptr, size), device=device), None
    except (RuntimeError, TypeError, ValueError):
        t, keep = _dlpack_bytes(ptr, size, _KDL_CUDA, device.index)
    if t.data_ptr() != ptr or t.device != device or t.numel() != size:
        raise RuntimeError("torch did not wrap the device segment in place (%s)" % t.device)
    return t, keep


def _cuda_device(device):
    """device= of Client as a torch.device("cuda", i), or None for the host
    segment only. "auto": the current CUDA device when torch has one."""
    if device is None:
        return None
    if isinstance(device, str) and device == "auto":
        if torch is None or not torch.cuda.is_available():
            return None
        return torch.device("cuda", torch.cuda.current_device())
    if torch is None:
        raise RuntimeError("device=%r needs torch (the device segment is used from torch)"
                           % (device,))
    d = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    if d.type == "cpu":
        return None
    if d.type != "cuda":
        raise ValueError("device=%r: a device segment is CUDA memory (cuda, cuda:N, N, "
                         "'auto' or None)" % (device,))
    if not torch.cuda.is_available():
        raise RuntimeError("device=%r: torch sees no CUDA GPU; use device=None or 'auto' "
                           "for the host segment" % (device,))
    if d.index is None:
        d = torch.device("cuda", torch.cuda.current_device())
    if d.index >= torch.cuda.device_count():
        raise ValueError("device=%r: torch sees %d CUDA device(s)"
                         % (device, torch.cuda.device_count()))
    return d


class Client(L.Closing):
    """Connect to kvsinkd (socket None: $KVSINK_SOCKET or the default path).

    bits sets k_bits and v_bits together; 0 / None / -1 take the daemon's
    defaults. policy: "none", "pfn", "kvsink" or None. salt: bytes or str
    of at most 32 bytes; clients share cached prefixes only with equal
    salts (as vLLM's cache_salt).

    device: None (host segment only), "auto" (the current CUDA device when
    torch has one), a CUDA ordinal, "cuda:N" or a torch.device: ask for a
    device segment of dev_seg_size bytes (0: seg_size) on that GPU. The
    daemon grants one when it keeps a pool on that GPU; self.device is then
    that GPU, else None and every tensor goes through the host segment
    (info["seg_device"] says which). Use the client from threads whose
    CUDA context is torch's (the default)."""

    def __init__(self, model, socket=None, *, bits=None, k_bits=None, v_bits=None, policy=None,
                 pfn=None, outliers=None, seg_size=0, salt=None, device=None, dev_seg_size=0):
        self._c = None
        self.model = model
        self.device = None
        self._dseg = None
        lib = L.lib()
        if policy not in _POLICIES:
            raise ValueError("policy must be one of none, pfn, kvsink")
        want_dev = _cuda_device(device)
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
        sp = socket.encode() if socket else None
        if want_dev is not None and not lib.has_device:
            want_dev = None  # this libkvsink predates device segments: host segment
        if want_dev is None:
            r = lib.kvs_connect(ctypes.byref(h), sp, ctypes.byref(cm), ctypes.byref(opts))
        else:
            # libkvsink names the GPU of the thread's current context: make
            # it torch's primary context of want_dev (created if need be)
            with torch.cuda.device(want_dev):
                torch.empty(1, device=want_dev)
                r = lib.kvs_connect_device(ctypes.byref(h), sp, ctypes.byref(cm),
                                           ctypes.byref(opts), int(dev_seg_size))
        if r < 0:
            raise KVSinkError(r, "connecting to %s" % (socket or "the default socket"), "connect")
        self._c = h
        self._want_dev = want_dev
        self._busy = None  # event after our last read of the device segment
        self._map_segments()
        self._stats = dict(puts=0, gets=0, lookups=0, tokens_put=0, tokens_got=0,
                           tokens_hit=0, tokens_looked_up=0, bytes_in=0, bytes_out=0,
                           sinks=0, quantized=0, staged_copies=0, device_puts=0,
                           device_gets=0)

    def _map_segments(self):
        """Views of the segments (once per session: after connect and after
        libkvsink reconnected, whose segments are new mappings)."""
        lib = L.lib()
        size = ctypes.c_size_t()
        ptr = lib.kvs_segment(self._c, ctypes.byref(size))
        self._seg = np.ctypeslib.as_array((ctypes.c_uint8 * size.value).from_address(ptr))
        self._dseg, self._dseg_keep, self.device, self._busy = None, None, None, None
        if self._want_dev is None:
            return
        dsize = ctypes.c_size_t()
        dptr = lib.kvs_device_segment(self._c, ctypes.byref(dsize))
        if not dptr or not dsize.value:
            return  # the daemon gave a host segment only: tensors are staged
        seg, self._dseg_keep = _wrap_device_segment(dptr, dsize.value, self._want_dev)
        self._dseg, self.device = seg, self._want_dev

    # ---- lifecycle ----
    def close(self):
        if self._c is not None:
            if self._busy is not None:
                self._busy.synchronize()  # no copy may read the segment after unmap
            self._seg = self._dseg = self._dseg_keep = self._busy = None
            L.lib().kvs_close(self._c)
            self._c = None

    def _check(self, r, call):
        if r < 0:
            msg = L.lib().kvs_last_error(self._c)
            if r == L.KVS_ERECONNECTED:
                self._map_segments()  # new session, new segments; the caller repeats
            raise KVSinkError(r, msg.decode(errors="replace") if msg else "", call)
        return r

    def _handle(self):
        if self._c is None:
            raise ValueError("kvsink client is closed")
        return self._c

    def _gpu(self):
        """The session's GPU current around a libkvsink call: its copies
        and a reconnect's import happen in that GPU's context."""
        if self._want_dev is None:
            return contextlib.nullcontext()
        return torch.cuda.device(self._want_dev)

    # ---- what the daemon granted ----
    @property
    def info(self):
        i = L.lib().kvs_get_info(self._handle()).contents
        return dict(session=i.session, seg_size=i.seg_size, group=i.group, k_bits=i.k_bits,
                    v_bits=i.v_bits, pfn=i.pfn, policy=_POLICY_NAMES.get(i.policy, i.policy),
                    outliers=i.outliers, has_profile=bool(i.has_profile),
                    sink_layer=i.sink_layer,
                    sink_channels=list(i.sink_channels[:i.n_sink_channels]),
                    v_group=i.v_group, policy_fallback=bool(i.policy_fallback),
                    seg_device=bool(i.seg_device), dev_seg_size=i.dev_seg_size)

    def stats(self):
        """This client's counters (calls, tokens, bytes through the segments,
        prefix hits, sinks and quantized tokens the daemon reported; calls
        through the device segment; tensors staged through host memory)."""
        return dict(self._stats)

    def ping(self):
        with self._gpu():
            self._check(L.lib().kvs_ping(self._handle()), "ping")

    def set_busy_poll(self, usec):
        """Spin up to usec microseconds for each reply before blocking
        (0 = off, at most 100000; until set, device puts and gets spin up
        to 1000 us and the rest not at all); libkvsink(3)
        kvs_set_busy_poll."""
        if not 0 <= usec <= 100000:
            raise ValueError("busy-poll of %r us: expected 0..100000" % (usec,))
        self._check(L.lib().kvs_set_busy_poll(self._handle(), usec), "set_busy_poll")

    def kv_bytes(self, n_tokens, layer_begin=0, layer_end=None):
        le = self.model.n_layers if layer_end is None else layer_end
        return L.lib().kvs_kv_bytes(self._handle(), n_tokens, layer_begin, le)

    def path_for(self, x):
        """How put/get move x (an array, a tensor or a torch.device):
        "device", "host" or "staged" (see the module text)."""
        dev = x if torch is not None and isinstance(x, torch.device) else \
            (x.device if _is_torch(x) else None)
        if dev is None or dev.type == "cpu":
            return "host"
        if dev.type == "meta":
            raise ValueError("a meta tensor has no data to move")
        if self._dseg is not None and dev == self.device:
            return "device"
        return "staged"

    # ---- conversions ----
    def _to_bits(self, x, what):
        """x as a C-contiguous uint16 numpy array of the model dtype's bits."""
        bf = self.model.dtype == "bfloat16"
        if _is_torch(x):
            if self.path_for(x) != "host":  # a GPU tensor through host memory
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

    def _torch_dtype(self):
        return torch.bfloat16 if self.model.dtype == "bfloat16" else torch.float16

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

    def _plan(self, nl, n, act_channels, seg_bytes, call, max_tokens=None):
        """Pieces (l0, l1, s, e, with_act) of nl layers x n tokens whose K, V
        (and summary, carried by the first layer piece) fit seg_bytes:
        all layers and as many tokens as fit, else as many layers as fit
        one token of and tokens for them."""
        m = self.model
        per_kv = 4 * m.n_kv_heads * m.head_dim  # K and V of one token of one layer
        per_act = 4 * act_channels
        lc = nl
        if nl and per_kv * nl + per_act > seg_bytes:
            lc = (seg_bytes - per_act) // per_kv if seg_bytes > per_act else 0
            if lc < 1:
                raise KVSinkError(-28, "one token of one layer does not fit the %d-byte "
                                  "segment" % seg_bytes, call)
        out = []
        for l0 in range(0, max(nl, 1), max(lc, 1)):
            l1 = min(nl, l0 + lc)
            act = l0 == 0 and per_act > 0
            per = per_kv * (l1 - l0) + (per_act if act else 0)
            step = max(n, 1) if per == 0 else seg_bytes // per
            if max_tokens:
                step = min(step, max_tokens)
            if step == 0:
                raise KVSinkError(-28, "one token does not fit the %d-byte segment" % seg_bytes,
                                  call)
            for s in range(0, max(n, 1), step):
                out.append((l0, l1, s, min(n, s + step), act))
        return out

    def _count_put(self, out, res, t, nbytes):
        res["quantized"] += out.quantized
        res["sinks"] += out.sinks
        res["seq_len"] = out.seq_len
        st = self._stats
        st["puts"] += 1
        st["tokens_put"] += t
        st["bytes_in"] += nbytes

    # ---- the API ----
    def put(self, seq, start, tokens, k=None, v=None, *, layers=None, act=None):
        """Store K/V of tokens [start, start + len(tokens)) for layers (None:
        all, an int, a (begin, end) pair or a range) of sequence seq.
        k, v: [layers][tokens][kv_heads][head_dim] (numpy, or torch on any
        device: CUDA tensors on the device segment's GPU go GPU to GPU);
        act: optional float32 [tokens][channels] summary. layers (lb, lb)
        with k = v = None sends only the summary. Returns dict(quantized,
        sinks, seq_len)."""
        h = self._handle()
        lb, le = self._layers(layers)
        toks = np.ascontiguousarray(np.asarray(tokens, dtype=np.int64).reshape(-1), dtype=np.uint32)
        n = len(toks)
        nl = le - lb
        m = self.model
        shape = (nl, n, m.n_kv_heads, m.head_dim)
        lead = (k, v) if nl > 0 else (act,)
        if all(self.path_for(x) == "device" for x in lead if x is not None) and \
                any(x is not None for x in lead):
            return self._put_device(h, seq, start, toks, k, v, lb, le, shape, act)
        if nl > 0:
            kb, vb = self._to_bits(k, "k"), self._to_bits(v, "v")
            if kb.size != int(np.prod(shape)) or vb.size != kb.size:
                raise ValueError("k and v must be %s, got %s and %s elements" %
                                 (shape, kb.size, vb.size))
            kb, vb = kb.reshape(shape), vb.reshape(shape)
        ab = None
        if act is not None:
            if _is_torch(act):
                if self.path_for(act) != "host":
                    self._stats["staged_copies"] += 1
                act = act.detach().float().cpu().numpy()
            ab = np.ascontiguousarray(act, dtype=np.float32).reshape(n, -1)
        ch = 0 if ab is None else ab.shape[1]
        res = dict(quantized=0, sinks=0, seq_len=0)
        args, out = L.PutArgs(), L.PutResult()
        for l0, l1, s, e, with_act in self._plan(nl, n, ch, len(self._seg), "put",
                                                      L.MAX_TOKENS_PER_PUT):
            t, cl = e - s, l1 - l0
            kvb = self.kv_bytes(t, 0, cl) if cl else 0
            c = ch if with_act else 0
            if cl:
                seg16 = self._seg[:2 * kvb].view(np.uint16)
                seg16[:kvb // 2] = kb[l0:l1, s:e].reshape(-1)
                seg16[kvb // 2:] = vb[l0:l1, s:e].reshape(-1)
            if c:
                self._seg[2 * kvb:2 * kvb + 4 * t * c].view(np.float32)[:] = ab[s:e].reshape(-1)
            self._fill_args(args, seq, start + s, toks[s:e], lb + l0, lb + l1, kvb, c)
            with self._gpu():
                self._check(L.lib().kvs_put(h, ctypes.byref(args), ctypes.byref(out)), "put")
            self._count_put(out, res, t if l0 == 0 else 0, 2 * kvb + 4 * t * c)
        self._stats["sinks"] += res["sinks"]
        self._stats["quantized"] += res["quantized"]
        return res

    @staticmethod
    def _fill_args(args, seq, start, toks, lb, le, kvb, ch):
        args.seq, args.start, args.n_tokens = seq, start, len(toks)
        args.tokens = toks.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32))
        args.layer_begin, args.layer_end = lb, le
        args.k_off, args.v_off = 0, kvb
        args.act_off, args.act_channels = 2 * kvb, ch

    def _put_device(self, h, seq, start, toks, k, v, lb, le, shape, act):
        """put through the device segment: torch copies (and rounds) K/V
        into it on the GPU, on the current stream; kvs_put_device waits for
        that stream alone (kvs_set_device_stream) before the daemon reads,
        not for the model's other streams."""
        n, nl = shape[1], shape[0]
        seg = self._dseg
        if nl > 0:
            for x, what in ((k, "k"), (v, "v")):
                if x.numel() != int(np.prod(shape)):
                    raise ValueError("%s must be %s, got %s" % (what, shape, tuple(x.shape)))
                if x.dtype != torch.int16 and not x.is_floating_point():
                    raise TypeError("%s: %s is not a floating tensor" % (what, x.dtype))
            k, v = k.detach().reshape(shape), v.detach().reshape(shape)
        ch = 0
        if act is not None:
            act = act.detach() if _is_torch(act) else torch.from_numpy(
                np.ascontiguousarray(act, dtype=np.float32))
            act = act.reshape(n, -1)
            ch = act.shape[1]
        want = self._torch_dtype()
        res = dict(quantized=0, sinks=0, seq_len=0)
        args, out = L.PutArgs(), L.PutResult()
        with torch.no_grad(), torch.cuda.device(self.device):
            stream = torch.cuda.current_stream(self.device)
            if self._busy is not None:
                stream.wait_event(self._busy)  # our reads of the segment come first
            self._check(L.lib().kvs_set_device_stream(h, ctypes.c_void_p(stream.cuda_stream)),
                        "set_device_stream")
            for l0, l1, s, e, with_act in self._plan(nl, n, ch, seg.numel(), "put",
                                                          L.MAX_TOKENS_PER_PUT):
                t, cl = e - s, l1 - l0
                kvb = cl * t * shape[2] * shape[3] * 2
                c = ch if with_act else 0
                if cl:
                    for x, off in ((k, 0), (v, kvb)):
                        dst = seg[off:off + kvb].view(torch.int16 if x.dtype == torch.int16
                                                      else want)
                        dst.view(cl, t, shape[2], shape[3]).copy_(x[l0:l1, s:e])
                if c:
                    seg[2 * kvb:2 * kvb + 4 * t * c].view(torch.float32).view(t, c).copy_(
                        act[s:e])
                self._fill_args(args, seq, start + s, toks[s:e], lb + l0, lb + l1, kvb, c)
                self._check(L.lib().kvs_put_device(h, ctypes.byref(args), ctypes.byref(out)),
                            "put")
                self._count_put(out, res, t if l0 == 0 else 0, 2 * kvb + 4 * t * c)
                self._stats["device_puts"] += 1
        self._stats["sinks"] += res["sinks"]
        self._stats["quantized"] += res["quantized"]
        return res

    def lookup(self, seq, tokens, bind=False):
        """Leading tokens of tokens that are cached (whole blocks, every
        layer). bind: attach them to seq (empty) so get/put can use them."""
        toks = np.ascontiguousarray(np.asarray(tokens, dtype=np.int64).reshape(-1), dtype=np.uint32)
        with self._gpu():
            r = self._check(L.lib().kvs_lookup(self._handle(), seq,
                                               toks.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)),
                                               len(toks), 1 if bind else 0), "lookup")
        self._stats["lookups"] += 1
        self._stats["tokens_looked_up"] += len(toks)
        self._stats["tokens_hit"] += r
        return r

    def get(self, seq, start, n_tokens, *, layers=None, like="numpy", device=None, out=None):
        """K, V of tokens [start, start + n_tokens) of layers of seq,
        dequantized: [layers][tokens][kv_heads][head_dim] in the model
        dtype. like="numpy" (float16, or uint16 bits for bfloat16) or
        "torch" (on device, default CPU). out=(k, v): torch tensors of that
        shape (views of a larger tensor, other strides, another floating
        dtype and any device allowed) to write into instead; returns them.
        On the device segment's GPU the data go GPU to GPU."""
        h = self._handle()
        lb, le = self._layers(layers)
        m = self.model
        nl = le - lb
        shape = (nl, n_tokens, m.n_kv_heads, m.head_dim)
        if out is not None:
            if torch is None or not all(_is_torch(x) for x in out) or len(out) != 2:
                raise TypeError("out must be two torch tensors")
            for x in out:
                if tuple(x.shape) != shape:
                    raise ValueError("out tensors must be %s, got %s" % (shape, tuple(x.shape)))
            target = out[0].device
        elif like == "torch" or device is not None:
            if torch is None:
                raise RuntimeError("torch is not installed")
            target = torch.device(device) if device is not None else torch.device("cpu")
            if target.type == "cuda" and target.index is None:
                target = torch.device("cuda", torch.cuda.current_device())
        else:
            target = None
        if target is not None and self.path_for(target) == "device" and \
                (out is None or self.path_for(out[1]) == "device"):
            if out is None:
                out = (torch.empty(shape, dtype=self._torch_dtype(), device=target),
                       torch.empty(shape, dtype=self._torch_dtype(), device=target))
            return self._get_device(h, seq, start, n_tokens, lb, shape, out)
        k = np.empty(shape, dtype=np.uint16)
        v = np.empty(shape, dtype=np.uint16)
        for l0, l1, s, e, _ in self._plan(nl, n_tokens, 0, len(self._seg), "get"):
            t, cl = e - s, l1 - l0
            kvb = self.kv_bytes(t, 0, cl)
            with self._gpu():
                self._check(L.lib().kvs_get(h, seq, start + s, t, lb + l0, lb + l1, 0, kvb),
                            "get")
            seg16 = self._seg[:2 * kvb].view(np.uint16)
            k[l0:l1, s:e] = seg16[:kvb // 2].reshape(cl, t, m.n_kv_heads, m.head_dim)
            v[l0:l1, s:e] = seg16[kvb // 2:].reshape(cl, t, m.n_kv_heads, m.head_dim)
            self._stats["gets"] += 1
            self._stats["tokens_got"] += t if l0 == 0 else 0  # once per token
            self._stats["bytes_out"] += 2 * kvb
        if target is None:
            if m.dtype == "float16":
                return k.view(np.float16), v.view(np.float16)
            return k, v
        want = self._torch_dtype()
        kt = torch.from_numpy(k.view(np.int16)).view(want)
        vt = torch.from_numpy(v.view(np.int16)).view(want)
        if target.type != "cpu":
            self._stats["staged_copies"] += 1
        if out is not None:
            out[0].copy_(kt)
            out[1].copy_(vt)
            return out
        if target.type != "cpu":
            kt, vt = kt.to(target), vt.to(target)
        return kt, vt

    def _get_device(self, h, seq, start, n_tokens, lb, shape, out):
        """get through the device segment: the daemon dequantizes into it
        (it replies when its writes are done), torch copies out on the GPU.
        Before the daemon writes the segment again, our copies out of it
        must be finished: an event, waited for on the host."""
        nl = shape[0]
        seg = self._dseg
        want = self._torch_dtype()
        with torch.no_grad(), torch.cuda.device(self.device):
            stream = torch.cuda.current_stream(self.device)
            if self._busy is None:
                self._busy = torch.cuda.Event()
            for l0, l1, s, e, _ in self._plan(nl, n_tokens, 0, seg.numel(), "get"):
                t, cl = e - s, l1 - l0
                kvb = cl * t * shape[2] * shape[3] * 2
                self._busy.synchronize()
                self._check(L.lib().kvs_get_device(h, seq, start + s, t, lb + l0, lb + l1, 0, kvb),
                            "get")
                for o, off in ((out[0], 0), (out[1], kvb)):
                    src = seg[off:off + kvb].view(want).view(cl, t, shape[2], shape[3])
                    o[l0:l1, s:e].copy_(src)
                self._busy.record(stream)
                self._stats["gets"] += 1
                self._stats["device_gets"] += 1
                self._stats["tokens_got"] += t if l0 == 0 else 0  # once per token
                self._stats["bytes_out"] += 2 * kvb
        return out

    # ---- attend: decode attention over the compressed cache (kvsink.attend) ----
    def table(self, seq, layers=None):
        """A block table of seq's layers (an int, a range or None: all) for
        attend(): where its blocks lie, mapped read-only in this process. A
        snapshot of what seq holds now; close it before release(seq)."""
        return _attend.table(self, seq, layers)

    def attend(self, tables, layer, q, *, lse=False):
        """Decode attention in layer for one query token per table, read
        straight from the quantized blocks (no 16-bit K/V anywhere):
        out[i][h] = softmax(q[i][h] . K^T / sqrt(head_dim)) V over what
        tables[i] holds, GQA as the model's heads say. tables: a Table or a
        list; q: [n_tables][n_q_heads][head_dim] ([n_q_heads][head_dim] with
        one Table), float32/float16 numpy (uint16: bfloat16 bits) or torch
        float32/float16/bfloat16 on the CPU, or on the GPU of a GPU pool's
        tables (run on torch's current stream there). Returns float32 out
        of q's shape, like q; with lse=True also the log of each head's
        softmax denominator ([n_tables][n_q_heads]), to merge with
        attention over tokens the tables do not hold (the step's own)."""
        return _attend.attend(self, tables, layer, q, lse)

    def release(self, seq):
        """Drop seq: its references go, its cached blocks stay."""
        with self._gpu():
            self._check(L.lib().kvs_release(self._handle(), seq), "release")
