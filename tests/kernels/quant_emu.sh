#!/bin/sh
# SPDX-License-Identifier: MIT
# The CUDA quantize kernels emulated on the CPU against the C reference
# (tests/kernels/quant_emu.cpp); no GPU needed, skips (77) without CUDA's
# headers (tests/kernels/emu_build.sh).
# QUANT_EMU_CASES=N runs the first N cases of each dtype (default: all).
set -eu
. "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/kernels/emu_build.sh"
emu_build quant_emu half quant sink
"$tmp/quant_emu" ${QUANT_EMU_CASES:-}
