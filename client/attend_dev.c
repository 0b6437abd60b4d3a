/* SPDX-License-Identifier: MIT */
/* Decode attention over a GPU pool in the client's process
 * (kvs_attend_device): a device table's views, sink-row lists and
 * residual rows go to one device image per table (kvs__table_dev_upload,
 * once per kvs_table_get); each call gathers the batch's per-layer records,
 * widens q to fp32 if needed and runs the CUDA split-K kernel of
 * kernels/attn.cu on the caller's stream over the pool chunks the table
 * imported read-only. Without CUDA every entry answers -ENOTSUP. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/attend_int.h"
#include "client/client_int.h"

#ifndef HAVE_CUDA

int kvs__table_dev_upload(struct kvs_table *t)
{
  (void)t;
  return -ENOTSUP;
}
void kvs__table_dev_free(struct kvs_table *t) { (void)t; }
void kvs__attend_dev_close(struct kvs__umaps *u) { (void)u; }

int kvs_attend_device(kvs_client *c, kvs_table *const *tables, uint32_t n_seqs, uint32_t layer,
                      const void *q_dev, int q_dtype, uint32_t n_q_heads, float *out_dev,
                      float *lse_dev, void *cuda_stream)
{
  (void)tables; (void)n_seqs; (void)layer; (void)q_dev; (void)q_dtype; (void)n_q_heads;
  (void)out_dev; (void)lse_dev; (void)cuda_stream;
  if (c)
    snprintf(c->conn.errmsg, sizeof c->conn.errmsg,
             "attend_device: libkvsink was built without CUDA");
  return -ENOTSUP;
}

#else

#include <cuda_runtime_api.h>

#include "kernels/attn_io.h"
#include "kernels/cuda.h"

/* The client's scratch for kvs_attend_device, grown and kept: the batch's
 * views, q in fp32, the split-K workspace, the kernel's status word. */
struct kvs__attn_dev {
  int ordinal;
  void *buf;
  size_t cap;
  int *d_status;
  int *h_status;            /* pinned: the last call's status word */
  cudaEvent_t ev;           /* done when h_status is valid */
  int ev_live;
};

static size_t up256(size_t x) { return (x + 255u) & ~(size_t)255u; }

void kvs__table_dev_free(struct kvs_table *t)
{
  if (t && t->dimg) {
    int cur = -1;
    /* cudaFree waits for kernels still reading it */
    if (cudaGetDevice(&cur) == cudaSuccess && cur != t->ordinal) cudaSetDevice(t->ordinal);
    cudaFree(t->dimg);
    if (cur >= 0 && cur != t->ordinal) cudaSetDevice(cur);
    cudaGetLastError();
  }
  if (t) {
    free(t->dseq);
    t->dimg = NULL;
    t->dseq = NULL;
  }
}

int kvs__table_dev_upload(struct kvs_table *t)
{
  const size_t C = t->qp.channels, rowb = C * 2u;
  /* layout per layer: seq record, views, row-pointer list, residual K, V */
  size_t total = 0;
  size_t *off = calloc((size_t)t->nl * 5u + 1u, sizeof *off);
  t->dseq = calloc(t->nl ? t->nl : 1, sizeof *t->dseq);
  if (!off || !t->dseq) {
    free(off);
    return -ENOMEM;
  }
  for (uint32_t l = 0; l < t->nl; l++) {
    const tlayer *x = &t->L[l];
    size_t nrows = 0;
    for (uint32_t b = 0; b < x->nb; b++)
      nrows += (size_t)__builtin_popcountll(x->blk[b].sink_mask);
    off[5 * l] = total;
    total = up256(total + sizeof(kvs__attn_seq));
    off[5 * l + 1] = total;
    total = up256(total + (size_t)x->nb * sizeof(kvs__attn_block));
    off[5 * l + 2] = total;
    total = up256(total + nrows * sizeof(void *));
    off[5 * l + 3] = total;
    total = up256(total + (size_t)x->nres * rowb);
    off[5 * l + 4] = total;
    total = up256(total + (size_t)x->nres * rowb);
  }
  if (total == 0)
    total = 256;
  uint8_t *h = calloc(1, total);
  int cur = -1, r = 0;
  if (!h) {
    free(off);
    return -ENOMEM;
  }
  if (cudaGetDevice(&cur) != cudaSuccess || (cur != t->ordinal && cudaSetDevice(t->ordinal) != cudaSuccess)) {
    r = -ENOTSUP;
    goto out;
  }
  if (cudaMalloc(&t->dimg, total) != cudaSuccess) {
    t->dimg = NULL;
    r = -ENOMEM;
    goto out;
  }
  const uint64_t d = (uint64_t)(uintptr_t)t->dimg;
  for (uint32_t l = 0; l < t->nl; l++) {
    const tlayer *x = &t->L[l];
    const size_t *o = off + 5 * l;
    kvs__attn_block *vb = (kvs__attn_block *)(h + o[1]);
    uint64_t *rl = (uint64_t *)(h + o[2]);
    size_t ri = 0;
    for (uint32_t b = 0; b < x->nb; b++) {
      const uint32_t nr = (uint32_t)__builtin_popcountll(x->blk[b].sink_mask);
      vb[b].data = x->blk[b].data; /* device addresses already */
      vb[b].sink_mask = x->blk[b].sink_mask;
      vb[b].rows = nr ? (const uint16_t *const *)(uintptr_t)(d + o[2] + ri * sizeof(void *)) : NULL;
      for (uint32_t i = 0; i < nr; i++)
        rl[ri++] = (uint64_t)(uintptr_t)x->blk[b].rows[i];
    }
    if (x->nres) {
      memcpy(h + o[3], x->rk, (size_t)x->nres * rowb);
      memcpy(h + o[4], x->rv, (size_t)x->nres * rowb);
    }
    kvs__attn_seq s = {(const kvs__attn_block *)(uintptr_t)(d + o[1]), x->nb, x->nres,
                       (const uint16_t *)(uintptr_t)(d + o[3]), (const uint16_t *)(uintptr_t)(d + o[4])};
    memcpy(h + o[0], &s, sizeof s);
    t->dseq[l] = d + o[0];
  }
  if (cudaMemcpy(t->dimg, h, total, cudaMemcpyHostToDevice) != cudaSuccess)
    r = -EIO;
out:
  if (cur >= 0 && cur != t->ordinal)
    cudaSetDevice(cur);
  cudaGetLastError();
  free(h);
  free(off);
  return r;
}

void kvs__attend_dev_close(struct kvs__umaps *u)
{
  kvs__attn_dev *a = u ? u->dev : NULL;
  if (!a)
    return;
  int cur = -1;
  if (cudaGetDevice(&cur) == cudaSuccess && cur != a->ordinal) cudaSetDevice(a->ordinal);
  if (a->ev_live) cudaEventDestroy(a->ev);
  cudaFree(a->buf);
  cudaFree(a->d_status);
  cudaFreeHost(a->h_status);
  if (cur >= 0 && cur != a->ordinal) cudaSetDevice(cur);
  cudaGetLastError();
  free(a);
  u->dev = NULL;
}

static int aerr(kvs_client *c, int r, const char *fmt, const char *what)
{
  snprintf(c->conn.errmsg, sizeof c->conn.errmsg, fmt, what);
  return r;
}

/* The scratch on GPU ordinal with at least bytes of buffer. */
static int scratch(kvs_client *c, int ordinal, size_t bytes, kvs__attn_dev **out)
{
  kvs__umaps *u = c->umaps;
  kvs__attn_dev *a = u->dev;
  if (a && a->ordinal != ordinal) {
    kvs__attend_dev_close(u);
    a = NULL;
  }
  if (!a) {
    if (!(a = calloc(1, sizeof *a)))
      return -ENOMEM;
    a->ordinal = ordinal;
    u->dev = a;
    if (cudaMalloc((void **)&a->d_status, sizeof(int)) != cudaSuccess ||
        cudaMemset(a->d_status, 0, sizeof(int)) != cudaSuccess ||
        cudaMallocHost((void **)&a->h_status, sizeof(int)) != cudaSuccess ||
        cudaEventCreateWithFlags(&a->ev, cudaEventDisableTiming) != cudaSuccess) {
      cudaGetLastError();
      kvs__attend_dev_close(u);
      return -ENOMEM;
    }
    a->ev_live = 1;
    *a->h_status = 0;
  }
  if (bytes > a->cap) {
    size_t cap = a->cap ? a->cap : (1u << 20);
    while (cap < bytes) cap *= 2;
    cudaFree(a->buf); /* waits for the launches that used it */
    a->buf = NULL;
    a->cap = 0;
    if (cudaMalloc(&a->buf, cap) != cudaSuccess) {
      cudaGetLastError();
      return -ENOMEM;
    }
    a->cap = cap;
  }
  *out = a;
  return 0;
}

int kvs_attend_device(kvs_client *c, kvs_table *const *tables, uint32_t n_seqs, uint32_t layer,
                      const void *q_dev, int q_dtype, uint32_t n_q_heads, float *out_dev,
                      float *lse_dev, void *cuda_stream)
{
  if (!c || (n_seqs && (!tables || !q_dev || !out_dev)))
    return -EINVAL;
  if (n_seqs == 0)
    return 0;
  if (!c->umaps)
    return -EINVAL;
  const kvs_table *t0 = tables[0];
  if (!t0)
    return -EINVAL;
  if (!t0->dev)
    return aerr(c, -EINVAL, "attend_device: %s", "a table of a host pool: use kvs_attend");
  if (q_dtype != KVS_DTYPE_F32 && q_dtype != KVS_DTYPE_F16 && q_dtype != KVS_DTYPE_BF16)
    return -EINVAL;
  kvs__attn_shape s = {t0->qp, t0->n_kv_heads, n_q_heads, t0->head_dim};
  if (kvs__attn_shape_check(&s) < 0)
    return -EINVAL;
  uint64_t *src = malloc(n_seqs * sizeof *src);
  if (!src)
    return -ENOMEM;
  uint32_t max_t = 0;
  int r = 0;
  for (uint32_t i = 0; i < n_seqs; i++) {
    const kvs_table *t = tables[i];
    if (!t || !t->dev || t->ordinal != t0->ordinal || memcmp(&t->qp, &t0->qp, sizeof t->qp) ||
        t->n_kv_heads != t0->n_kv_heads || layer < t->lb || layer - t->lb >= t->nl) {
      r = aerr(c, -EINVAL, "attend_device: %s",
               "tables of one GPU, shape and settings, holding the layer");
      goto done;
    }
    const tlayer *x = &t->L[layer - t->lb];
    const uint64_t T = (uint64_t)x->nb * t->qp.group + x->nres;
    if (T > UINT32_MAX) {
      r = -E2BIG;
      goto done;
    }
    if (T > max_t)
      max_t = (uint32_t)T;
    src[i] = t->dseq[layer - t->lb];
  }
  int cur = -1;
  if (cudaGetDevice(&cur) != cudaSuccess) {
    cudaGetLastError();
    r = aerr(c, -ENOTSUP, "attend_device: %s", "no usable CUDA device in this process");
    goto done;
  }
  if (cur != t0->ordinal) {
    r = aerr(c, -EINVAL, "attend_device: %s",
             "the current CUDA device is not the GPU of the tables' pool");
    goto done;
  }
  kvs__cuda_attn_plan pl;
  if ((r = kvs__cuda_attn_make_plan(&s, n_seqs, max_t, &pl)) < 0) {
    r = aerr(c, r, "attend_device: %s",
             r == -EINVAL ? "a shape the CUDA kernel does not take (kernels/cuda.h)"
                          : "cannot plan the launch");
    goto done;
  }
  const size_t nq = (size_t)n_seqs * n_q_heads * t0->head_dim;
  const size_t o_seq = 0, o_q = up256(n_seqs * sizeof(kvs__attn_seq)),
               o_ws = o_q + up256(q_dtype == KVS_DTYPE_F32 ? 0 : nq * sizeof(float)),
               need = o_ws + up256(pl.ws_bytes);
  kvs__attn_dev *a;
  if ((r = scratch(c, t0->ordinal, need, &a)) < 0) {
    r = aerr(c, r, "attend_device: %s", "no GPU memory for the scratch");
    goto done;
  }
  /* the previous call's status word, when it is in (kernel-side checks) */
  if (cudaEventQuery(a->ev) == cudaSuccess && *a->h_status) {
    r = *a->h_status;
    *a->h_status = 0;
    r = aerr(c, r < 0 ? r : -EIO, "attend_device: %s",
             "the previous call's kernel refused its input (a sequence longer than planned, "
             "an outlier channel out of range)");
    goto done;
  }
  cudaGetLastError();
  cudaStream_t st = (cudaStream_t)cuda_stream;
  uint8_t *b = a->buf;
  kvs__attn_seq *d_seqs = (kvs__attn_seq *)(b + o_seq);
  const float *qf = q_dev;
  if ((r = kvs__cuda_attn_gather(st, d_seqs, src, n_seqs)) < 0)
    goto launch_failed;
  if (q_dtype != KVS_DTYPE_F32) {
    if ((r = kvs__cuda_to_f32(st, (float *)(b + o_q), q_dev, nq, q_dtype)) < 0)
      goto launch_failed;
    qf = (const float *)(b + o_q);
  }
  kvs__cuda_ctx ctx = {.d_status = a->d_status, .stream = cuda_stream};
  if ((r = kvs__cuda_attn_decode_async(&ctx, &s, &pl, d_seqs, qf, out_dev, b + o_ws)) < 0)
    goto launch_failed;
  if (lse_dev &&
      (r = kvs__cuda_attn_lse(st, b + o_ws, n_seqs, n_q_heads, pl.splits, lse_dev)) < 0)
    goto launch_failed;
  /* the status word comes down after the kernels; the next call reads it */
  if (cudaMemcpyAsync(a->h_status, a->d_status, sizeof(int), cudaMemcpyDeviceToHost, st) !=
          cudaSuccess ||
      cudaMemsetAsync(a->d_status, 0, sizeof(int), st) != cudaSuccess ||
      cudaEventRecord(a->ev, st) != cudaSuccess) {
    r = -EIO;
    goto launch_failed;
  }
  r = 0;
  goto done;
launch_failed:
  cudaGetLastError();
  r = aerr(c, r, "attend_device: %s", "a CUDA launch failed");
done:
  free(src);
  if (r == 0)
    c->conn.errmsg[0] = '\0';
  return r;
}

#endif
