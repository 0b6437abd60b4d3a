# SPDX-License-Identifier: MIT
"""ctypes declarations of libkvsink (include/kvsink.h) and how the library
is found.

ctypes, not a C extension: installing needs no compiler or Python headers,
libkvsink already exports exactly the public API (-export-symbols-regex
'^kvs_'), and the package works with any libkvsink of the same ABI.

Search order: $KVSINK_LIBRARY (a path), then a build tree this source tree
sits in (../../build*/client/.libs, ../../client/.libs), then the lib
directory of the prefix the package is installed under, then the system's
(ctypes.util.find_library / libkvsink.so.0 in the default paths)."""
import ctypes
import ctypes.util
import glob
import os

KVS_EVERSION = -4001
KVS_EMODEL = -4002
KVS_ESEGMENT = -4003
KVS_ENAN = -4004
KVS_ERECONNECTED = -4005
# token ids in one put or lookup (proto/proto.h KVS_MAX_TOKENS_PER_PUT; not in kvsink.h)
MAX_TOKENS_PER_PUT = 8192

DTYPE_F16 = 1
DTYPE_F32 = 3  # only for attend's query
DTYPE_BF16 = 2

POLICY_DEFAULT, POLICY_NONE, POLICY_PFN, POLICY_KVSINK = 0, 1, 2, 3


class Model(ctypes.Structure):
    _fields_ = [("model_id", ctypes.c_char_p), ("n_layers", ctypes.c_uint32),
                ("n_kv_heads", ctypes.c_uint32), ("head_dim", ctypes.c_uint32),
                ("dtype", ctypes.c_int)]


class Options(ctypes.Structure):
    _fields_ = [("seg_size", ctypes.c_size_t), ("k_bits", ctypes.c_int), ("v_bits", ctypes.c_int),
                ("policy", ctypes.c_int), ("pfn", ctypes.c_int), ("outliers", ctypes.c_float),
                ("salt", ctypes.c_uint8 * 32), ("salt_len", ctypes.c_size_t)]


class Info(ctypes.Structure):
    _fields_ = [("session", ctypes.c_uint64), ("seg_size", ctypes.c_size_t),
                ("group", ctypes.c_uint32), ("k_bits", ctypes.c_int), ("v_bits", ctypes.c_int),
                ("pfn", ctypes.c_int), ("policy", ctypes.c_int), ("outliers", ctypes.c_float),
                ("has_profile", ctypes.c_int), ("sink_layer", ctypes.c_uint32),
                ("n_sink_channels", ctypes.c_uint32), ("sink_channels", ctypes.c_uint32 * 64),
                ("v_group", ctypes.c_uint32), ("policy_fallback", ctypes.c_int),
                ("seg_device", ctypes.c_int), ("dev_seg_size", ctypes.c_size_t)]


class PutArgs(ctypes.Structure):
    _fields_ = [("seq", ctypes.c_uint64), ("start", ctypes.c_uint32),
                ("tokens", ctypes.POINTER(ctypes.c_uint32)), ("n_tokens", ctypes.c_uint32),
                ("layer_begin", ctypes.c_uint32), ("layer_end", ctypes.c_uint32),
                ("k_off", ctypes.c_size_t), ("v_off", ctypes.c_size_t),
                ("act_off", ctypes.c_size_t), ("act_channels", ctypes.c_uint32)]


class PutResult(ctypes.Structure):
    _fields_ = [("quantized", ctypes.c_uint32), ("sinks", ctypes.c_uint32),
                ("seq_len", ctypes.c_uint32)]


def _candidates():
    env = os.environ.get("KVSINK_LIBRARY")
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    top = os.path.dirname(os.path.dirname(here))
    for d in sorted(glob.glob(os.path.join(top, "build*", "client", ".libs"))) + \
            [os.path.join(top, "client", ".libs")]:
        yield os.path.join(d, "libkvsink.so.0")
    # installed by make install: <prefix>/lib/python3.X/site-packages/kvsink
    # next to <prefix>/lib/libkvsink.so.0
    parts = here.split(os.sep)
    if "lib" in parts:
        i = len(parts) - 1 - parts[::-1].index("lib")
        yield os.path.join(os.sep.join(parts[:i + 1]), "libkvsink.so.0")
    found = ctypes.util.find_library("kvsink")
    if found:
        yield found
    yield "libkvsink.so.0"


class Closing:
    """with-statement and garbage-collection support for an object with
    close() (a client, a table): close() on exit and when it is dropped."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _declare(lib):
    P, c = ctypes.POINTER, ctypes
    sigs = {
        "kvs_strerror": (c.c_char_p, [c.c_int]),
        "kvs_options_init": (None, [P(Options)]),
        "kvs_connect": (c.c_int, [P(c.c_void_p), c.c_char_p, P(Model), P(Options)]),
        "kvs_close": (None, [c.c_void_p]),
        "kvs_get_info": (P(Info), [c.c_void_p]),
        "kvs_segment": (c.c_void_p, [c.c_void_p, P(c.c_size_t)]),
        "kvs_kv_bytes": (c.c_size_t, [c.c_void_p, c.c_uint32, c.c_uint32, c.c_uint32]),
        "kvs_put": (c.c_int, [c.c_void_p, P(PutArgs), P(PutResult)]),
        "kvs_lookup": (c.c_int, [c.c_void_p, c.c_uint64, P(c.c_uint32), c.c_uint32, c.c_int]),
        "kvs_get": (c.c_int, [c.c_void_p, c.c_uint64, c.c_uint32, c.c_uint32, c.c_uint32,
                              c.c_uint32, c.c_size_t, c.c_size_t]),
        "kvs_release": (c.c_int, [c.c_void_p, c.c_uint64]),
        "kvs_ping": (c.c_int, [c.c_void_p]),
        # device segments (libkvsink(3) DEVICE SEGMENTS)
        "kvs_connect_device": (c.c_int, [P(c.c_void_p), c.c_char_p, P(Model), P(Options),
                                         c.c_size_t]),
        "kvs_device_segment": (c.c_void_p, [c.c_void_p, P(c.c_size_t)]),
        "kvs_put_device": (c.c_int, [c.c_void_p, P(PutArgs), P(PutResult)]),
        "kvs_get_device": (c.c_int, [c.c_void_p, c.c_uint64, c.c_uint32, c.c_uint32, c.c_uint32,
                                     c.c_uint32, c.c_size_t, c.c_size_t]),
        "kvs_set_device_stream": (c.c_int, [c.c_void_p, c.c_void_p]),
        "kvs_set_busy_poll": (c.c_int, [c.c_void_p, c.c_uint]),
        "kvs_last_error": (c.c_char_p, [c.c_void_p]),
        # attend (libkvsink(3) ATTEND): block tables, decode attention
        "kvs_table_get": (c.c_int, [c.c_void_p, c.c_uint64, c.c_uint32, c.c_uint32, c.c_size_t,
                                    c.c_size_t, P(c.c_void_p)]),
        "kvs_table_free": (None, [c.c_void_p]),
        "kvs_table_tokens": (c.c_uint32, [c.c_void_p, c.c_uint32]),
        "kvs_attend_lse": (c.c_int, [c.c_void_p, P(c.c_void_p), c.c_uint32, c.c_uint32, c.c_void_p,
                                     c.c_int, c.c_uint32, c.c_void_p, c.c_void_p]),
        "kvs_attend_device": (c.c_int, [c.c_void_p, P(c.c_void_p), c.c_uint32, c.c_uint32,
                                        c.c_void_p, c.c_int, c.c_uint32, c.c_void_p, c.c_void_p,
                                        c.c_void_p]),
    }
    device = ("kvs_connect_device", "kvs_device_segment", "kvs_put_device", "kvs_get_device",
              "kvs_set_device_stream")
    attend = ("kvs_table_get", "kvs_table_free", "kvs_table_tokens", "kvs_attend_lse",
              "kvs_attend_device")
    lib.has_device = lib.has_attend = True
    for name, (res, args) in sigs.items():
        try:
            f = getattr(lib, name)
        except AttributeError:
            if name in device:
                lib.has_device = False  # a libkvsink older than device segments
            elif name in attend:
                lib.has_attend = False  # a libkvsink older than attend
            else:
                raise
            continue
        f.restype = res
        f.argtypes = args
    return lib


_lib = None


def lib():
    """The loaded libkvsink (loaded on first use)."""
    global _lib
    if _lib is None:
        tried = []
        for path in _candidates():
            try:
                _lib = _declare(ctypes.CDLL(path))
                _lib.path = path
                break
            except OSError as e:
                tried.append("%s (%s)" % (path, e))
        else:
            raise OSError("libkvsink not found; set KVSINK_LIBRARY to its path. Tried: "
                          + "; ".join(tried))
    return _lib
