#!/bin/sh
# SPDX-License-Identifier: MIT
# The CUDA decode-attention kernels emulated on the CPU against the C
# reference (tests/kernels/attn_emu.cpp); no GPU needed, skips (77)
# without CUDA's headers (tests/kernels/emu_build.sh).
set -eu
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/kernels/emu_build.sh"
emu_build attn_emu half quant attn
"$tmp/attn_emu"
