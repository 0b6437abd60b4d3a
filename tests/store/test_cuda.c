/* SPDX-License-Identifier: MIT */
/* The CUDA backend as the store sees it. Runs in `make check` (built only
 * with --with-cuda): without a GPU the open must fail cleanly with a
 * reason; with one, a block must round-trip exactly as the host backend
 * (the C reference) does. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "store/store.h"
#include "kernels/half.h"

kvs__backend *kvs__backend_cuda_open(int device, char *errmsg);
void kvs__backend_cuda_close(kvs__backend *b);

static int have_gpu(void)
{
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

START_TEST(bad_device_fails_cleanly)
{
  char msg[256] = "";
  ck_assert_ptr_null(kvs__backend_cuda_open(1000, msg));
  ck_assert_int_gt((int)strlen(msg), 0);
  msg[0] = 0;
  ck_assert_ptr_null(kvs__backend_cuda_open(-1, msg));
  ck_assert_int_gt((int)strlen(msg), 0);
}
END_TEST

START_TEST(open_matches_gpu_presence)
{
  char msg[256] = "";
  kvs__backend *b = kvs__backend_cuda_open(0, msg);
  if (!have_gpu()) {
    ck_assert_ptr_null(b);
    ck_assert_int_gt((int)strlen(msg), 0);
    return;
  }
  ck_assert_msg(b != NULL, "open failed: %s", msg);
  ck_assert_str_eq(b->name, "cuda");
  /* one block with a sink row, against the host backend */
  kvs__qparams p = {32, 256, 64, 2, 4, 2, 2, KVS_DTYPE_F16};
  kvs__qlayout l;
  size_t tot = kvs__qlayout_of(&p, &l), n = (size_t)p.group * p.channels;
  uint16_t *k = malloc(n * 2), *v = malloc(n * 2), *hk = malloc(n * 2), *hv = malloc(n * 2);
  uint16_t *gk = malloc(n * 2), *gv = malloc(n * 2), *hrow = malloc(kvs__sink_row_bytes(&p));
  uint8_t *hblk = malloc(tot);
  ck_assert(k && v && hk && hv && gk && gv && hrow && hblk);
  for (size_t i = 0; i < n; i++) {
    k[i] = kvs__f32_to_f16((float)((i * 2654435761u) % 1000) / 100.f - 5.f);
    v[i] = kvs__f32_to_f16((float)((i * 40503u) % 777) / 50.f - 7.f);
  }
  void *pool = NULL;
  ck_assert_int_eq(b->pool_alloc(b, tot + kvs__sink_row_bytes(&p), &pool), 0);
  uint16_t *grow = (uint16_t *)((uint8_t *)pool + tot);
  uint16_t *hrows[1] = {hrow}, *grows[1] = {grow};
  ck_assert_int_eq(kvs__backend_host.quantize(&kvs__backend_host, &p, k, v, 4, hblk, hrows), 0);
  ck_assert_int_eq(b->quantize(b, &p, k, v, 4, pool, grows), 0);
  ck_assert_int_eq(kvs__backend_host.dequantize(&kvs__backend_host, &p, hblk,
                                                (const uint16_t *const *)hrows, 1, 30, hk, hv), 0);
  ck_assert_int_eq(b->dequantize(b, &p, pool, (const uint16_t *const *)grows, 1, 30, gk, gv), 0);
  ck_assert_mem_eq(hk, gk, 29u * p.channels * 2);
  ck_assert_mem_eq(hv, gv, 29u * p.channels * 2);
  k[7] = 0x7e00; /* NaN */
  ck_assert_int_eq(b->quantize(b, &p, k, v, 4, pool, grows), KVS_ENAN);
  b->pool_free(b, pool);
  kvs__backend_cuda_close(b);
  free(k); free(v); free(hk); free(hv); free(gk); free(gv); free(hrow); free(hblk);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("cuda");
  TCase *tc = tcase_create("backend");
  tcase_add_test(tc, bad_device_fails_cleanly);
  tcase_add_test(tc, open_matches_gpu_presence);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
