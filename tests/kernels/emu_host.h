/* SPDX-License-Identifier: MIT */
/* For the CPU emulations of CUDA kernels (attn_emu.cpp, quant_emu.cpp):
 * CUDA's host_defines.h gives __device__ and __forceinline__ host
 * meanings; these the emulations define themselves. Include after CUDA's
 * headers. */
#ifndef KVS_TESTS_EMU_HOST_H
#define KVS_TESTS_EMU_HOST_H
#undef __global__
#define __global__
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __shared__
#define __shared__
#undef __noinline__
#define __noinline__ __attribute__((noinline))
#endif
