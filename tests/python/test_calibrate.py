# SPDX-License-Identifier: MIT
"""kvsink.calibrate's dump writer and context cutter with the real
kvsink-calibrate (the transformers part runs in transformers_checks.py)."""
import os
import struct
import subprocess

import numpy as np

from kvsink import calibrate


def test_contexts_start_at_bos():
    ids = [0] + list(range(10, 110)) + [0] + list(range(200, 400))
    w = calibrate.contexts(ids, 64, 10, 0)
    # window 1 at 0; the rest of its document is skipped up to the next BOS
    # (101), window 2 there, then no BOS is left: two windows
    assert w[0][:2] == [0, 10] and w[1][0] == 0 and ids.index(0, 1) == 101
    assert len(w) == 2 and all(len(x) == 64 for x in w)
    assert len(calibrate.contexts(ids, 64, 1, 0)) == 1


def test_dump_and_calibrate_find_planted_sinks(tmp_path):
    top = os.environ.get("top_builddir")
    exe = os.path.join(top, "tools", "kvsink-calibrate") if top else None
    exe = calibrate.find_calibrate(exe)
    r = np.random.default_rng(0)
    dumps = []
    for k in range(2):
        layers = []
        for layer in range(4):
            h = r.standard_normal((300, 48)).astype(np.float32)
            if layer >= 2:  # massive activations on channel 5 at 3 tokens from layer 2 on
                h[[0, 97, 200], 5] = 400.0
            layers.append(h)
        p = str(tmp_path / ("d%d.dump" % k))
        calibrate.write_dump(p, layers)
        with open(p, "rb") as f:
            assert f.read(8) == b"KVSDUMP1"
            assert struct.unpack("<4I", f.read(16)) == (4, 300, 48, 1)  # fits fp16
        dumps.append(p)
    out = str(tmp_path / "p.profile")
    subprocess.run([exe, "--model", "m", "-o", out] + dumps, check=True)
    prof = dict(l.split("=", 1) for l in open(out) if "=" in l and not l.startswith("#"))
    prof = {k.strip(): v.strip() for k, v in prof.items()}
    assert prof["layer"] == "2" and prof["channels"] == "5", prof
    # beyond fp16 the dump is fp32
    calibrate.write_dump(str(tmp_path / "big.dump"), [np.full((2, 3), 1e5, np.float32)])
    with open(str(tmp_path / "big.dump"), "rb") as f:
        f.seek(8)
        assert struct.unpack("<4I", f.read(16))[3] == 3
