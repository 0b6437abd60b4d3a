# SPDX-License-Identifier: MIT
"""kvsink: the Python client of the kvsink KV cache service (kvsinkd),
over libkvsink through ctypes. See python/README.md."""
from kvsink._lib import (KVS_EMODEL, KVS_ENAN, KVS_ERECONNECTED, KVS_ESEGMENT,  # noqa: F401
                         KVS_EVERSION)
from kvsink.attend import Table  # noqa: F401
from kvsink.client import Client, KVSinkError, Model  # noqa: F401


def bf16_to_float32(bits):
    """uint16 bfloat16 bits (numpy) as float32."""
    import numpy as np
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


__all__ = ["Client", "Model", "KVSinkError", "Table", "bf16_to_float32"]
__version__ = "0.1.0"
