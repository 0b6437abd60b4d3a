# SPDX-License-Identifier: MIT
"""Baselines for the kvsink GPU benchmark, same shapes as gpu_test bench:
32 layers x 8 KV heads x head dim 128, T tokens, fp16, K and V.
  (a) PyTorch fp8 cast x.to(torch.float8_e4m3fn) (and back, as dequantize)
  (b) KIVI's Triton quantizer (jy-yuan/KIVI quant/new_pack.py), keys per
      channel over groups of 32 tokens (KIVI transposes K first, counted),
      values per token over groups of 128 channels, at 2 and 4 bits.
GB/s counts the 16-bit K+V bytes handled, as gpu_test does."""
import sys

import torch

L, H, D = 32, 8, 128


def timed(fn, reps=5):
    fn()
    torch.cuda.synchronize()
    best = 1e30
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(reps):
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        best = min(best, e0.elapsed_time(e1))
    return best


def main():
    kivi = None
    if len(sys.argv) > 1:
        sys.path.insert(0, sys.argv[1])
        try:
            import new_pack as kivi
        except Exception as e:  # KIVI not brought along: fp8 only
            print("bench_ref: KIVI not importable:", e)
    dev = torch.cuda.get_device_name(0)
    print(f"bench_ref: device {dev}, torch {torch.__version__}")
    for T in (4096, 8192, 16384, 32768):
        k = torch.randn(L, H, T, D, device="cuda", dtype=torch.float16)
        v = torch.randn(L, H, T, D, device="cuda", dtype=torch.float16)
        gb = 2 * k.numel() * 2 / 1e9
        ko, vo = torch.empty_like(k), torch.empty_like(v)
        tc = timed(lambda: (ko.copy_(k), vo.copy_(v)))
        print(f"T={T:<6} {gb:.2f} GB: torch copy_ {tc:.3f} ms {gb / tc * 1e3:.0f} GB/s")
        k8, v8 = k.to(torch.float8_e4m3fn), v.to(torch.float8_e4m3fn)
        tq = timed(lambda: (k.to(torch.float8_e4m3fn), v.to(torch.float8_e4m3fn)))
        td = timed(lambda: (k8.to(torch.float16), v8.to(torch.float16)))
        print(f"T={T:<6} fp8 cast    quantize {tq:.3f} ms {gb / tq * 1e3:.0f} GB/s ({100 * tc / tq:.0f}% of copy)"
              f"  dequantize {td:.3f} ms {gb / td * 1e3:.0f} GB/s ({100 * tc / td:.0f}% of copy)")
        del k8, v8
        if kivi is not None:
            for bits in (2, 4):
                def q():
                    kt = k.transpose(2, 3).contiguous()
                    kivi.triton_quantize_and_pack_along_last_dim(kt, 32, bits)
                    kivi.triton_quantize_and_pack_along_last_dim(v, 128, bits)
                tk = timed(q, reps=3)
                print(f"T={T:<6} KIVI {bits}-bit quantize {tk:.3f} ms {gb / tk * 1e3:.0f} GB/s ({100 * tc / tk:.0f}% of copy)")
        del k, v, ko, vo
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
