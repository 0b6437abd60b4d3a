/* SPDX-License-Identifier: MIT */
/* attend_device_test: kvs_attend_device against kvsinkd with a GPU pool,
 * driven by tests/gpu/attend_device.sh (GPU machines only).
 *   check GPUSOCK HOSTSOCK  at 2 and 4 bits, K/V with planted sinks (the
 *                  first 4 tokens 8x, kept 16-bit by PFN 4) and outlier
 *                  channels, 3 seqs (odd residuals, 1 to 66 blocks),
 *                  both layers, q f32 and f16: kvs_attend_device on the
 *                  GPU pool == kvs_attend_lse over the same K/V in a host
 *                  pool (the C reference), out and lse, within the bound
 *                  tests/gpu/attn_test.cu derives for CUDA vs reference
 *   isolation GPUSOCK      two salts (two spaces of one namespace): B gets
 *                  ENOENT for A's seq and none of A's chunks; A's table is
 *                  released, B fills the pool (so it reuses A's chunks,
 *                  at a new generation), and A's stale import still reads
 *                  exactly A's old bytes, never B's, and attends as before
 *   shared GPUSOCK         (daemon whose shared_namespace_uids has our uid)
 *                  table on a GPU pool -> EACCES
 *   rowrite GPUSOCK        a write into an imported chunk fails (the import
 *                  is read-only for this GPU); run in its own process
 *   quota GPUSOCK          (daemon with the default table_chunks: the pool's
 *                  chunk count) session A fills the pool taking tables and
 *                  releases; session B of another space fills it (A's
 *                  chunks get fresh allocations) and releases; A fills it
 *                  again taking tables: the chunks come back at new
 *                  generations and A runs into EDQUOT; a new session takes
 *                  a table
 * Prints PASS/FAIL lines; exit 0 when all passed, 1 otherwise, 2 when a
 * step could not run. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cuda_runtime_api.h>

#include <kvsink.h>
#include "client/attend_int.h" /* the device addresses a table holds (stale reads) */
#include "proto/blocktable.h"

enum { L = 2, H = 8, D = 128, C = H * D, QH = 32, GQ = QH / H, PFN = 4 };
#define SEG (64u << 20)
#define SCRATCH_OFF (32u << 20)
#define SCRATCH_LEN (32u << 20)
#define MAXT 4096u

static int failures;
#define PASS(...) do { printf("PASS: " __VA_ARGS__); putchar('\n'); } while (0)
#define FAILED(...) do { printf("FAIL: " __VA_ARGS__); putchar('\n'); failures++; } while (0)
#define DIE(...) do { printf("FAIL: " __VA_ARGS__); putchar('\n'); exit(2); } while (0)
#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) DIE("%s: %s", #x, cudaGetErrorString(e_)); } while (0)

static uint64_t mix(uint64_t x)
{
  x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL; x ^= x >> 33;
  return x;
}

/* uniform [-1, 1); the first PFN positions 8x (sinks, kept 16-bit);
 * K channels 5 and 300 20x at every 7th position (outliers) */
static float val(uint32_t seed, uint32_t l, uint32_t pos, uint32_t i, uint32_t kv)
{
  uint64_t x = mix(((uint64_t)seed << 44) ^ ((uint64_t)l << 36) ^ ((uint64_t)pos << 12) ^
                   ((uint64_t)i << 1) ^ kv);
  float f = (float)((double)(x >> 11) / 9007199254740992.0 * 2.0 - 1.0);
  if (pos < PFN) f *= 8.0f;
  if (!kv && (i == 5 || i == 300) && pos % 7 == 3) f *= 20.0f;
  return f;
}

static kvs_client *conn(const char *sock, int bits, const char *salt)
{
  kvs_model m = {"attend-device", L, H, D, KVS_DTYPE_F16};
  kvs_options o;
  kvs_client *c;
  kvs_options_init(&o);
  o.k_bits = o.v_bits = bits;
  o.policy = KVS_POLICY_PFN;
  o.pfn = PFN;
  o.outliers = 0.01f;
  o.seg_size = SEG;
  if (salt) {
    o.salt_len = strlen(salt);
    memcpy(o.salt, salt, o.salt_len);
  }
  int r = kvs_connect(&c, sock, &m, &o);
  if (r < 0) DIE("connect %s: %s", sock, kvs_strerror(r));
  return c;
}

static int put(kvs_client *c, uint64_t seq, uint32_t seed, uint32_t n)
{
  size_t sz;
  uint16_t *seg = kvs_segment(c, &sz);
  float f[C];
  uint32_t tokens[512];
  for (uint32_t s = 0; s < n; s += 512) {
    uint32_t m = n - s < 512 ? n - s : 512;
    size_t kvb = kvs_kv_bytes(c, m, 0, L);
    for (uint32_t kv = 0; kv < 2; kv++)
      for (uint32_t l = 0; l < L; l++)
        for (uint32_t t = 0; t < m; t++) {
          for (uint32_t i = 0; i < C; i++) f[i] = val(seed, l, s + t, i, kv);
          kvs_f16_from_f32(seg + (kv * kvb / 2) + ((size_t)l * m + t) * C, f, C);
        }
    for (uint32_t t = 0; t < m; t++) tokens[t] = seed * 100003u + (s + t) * 7u + 1;
    kvs_put_args a = {.seq = seq, .start = s, .tokens = tokens, .n_tokens = m,
                      .layer_begin = 0, .layer_end = L, .k_off = 0, .v_off = kvb};
    int r = kvs_put(c, &a, NULL);
    if (r < 0) return r;
  }
  return 0;
}

static kvs_table *table(kvs_client *c, uint64_t seq)
{
  kvs_table *t;
  int r = kvs_table_get(c, seq, 0, L, SCRATCH_OFF, SCRATCH_LEN, &t);
  if (r < 0) DIE("table of seq %llu: %s (%s)", (unsigned long long)seq, kvs_strerror(r), kvs_last_error(c));
  return t;
}

/* ---- check ---------------------------------------------------------- */

static const uint32_t lens[] = {1000, 77, 2100};
#define NS 3

/* K and V of seq (as get returns them: the values attention sees), layer l:
 * [n][C] 16-bit into k, v. */
static void get_kv(kvs_client *c, uint64_t seq, uint32_t n, uint32_t l, uint16_t *k, uint16_t *v)
{
  size_t sz;
  uint8_t *seg = kvs_segment(c, &sz);
  size_t kvb = kvs_kv_bytes(c, n, l, l + 1);
  int r = kvs_get(c, seq, 0, n, l, l + 1, 0, kvb);
  if (r < 0) DIE("get: %s", kvs_strerror(r));
  memcpy(k, seg, kvb);
  memcpy(v, seg + kvb, kvb);
}

/* attn_test.cu's bound for CUDA vs the C reference, for one head: the
 * kernel keeps dequantized elements in fp32 where the reference rounds them
 * to fp16 (eps = 2^-11 of each), and both sum in fp32 in other orders. */
static double head_bound(int bits, const uint16_t *k, uint32_t T, uint32_t nblk_tokens, const float *qh,
                         uint32_t j, double vmax, double *delta_out)
{
  const double eps = ldexp(1.0, -11);
  double delta = 0;
  for (uint32_t t = 0; t < T; t++) {
    double s = 0;
    for (uint32_t c = 0; c < D; c++) {
      float kf;
      kvs_f16_to_f32(&kf, &k[(size_t)t * C + j * D + c], 1);
      s += fabs((double)qh[c] * kf);
    }
    const int quant = bits != 16 && t < nblk_tokens && t >= PFN;
    double e = (quant ? eps : 0) + D * ldexp(1.0, -23);
    if (e * s / sqrt((double)D) > delta) delta = e * s / sqrt((double)D);
  }
  *delta_out = delta;
  const double sums = fmax(1e-5, 2.0 * T * ldexp(1.0, -24));
  return (exp(2 * delta) - 1) * vmax + (bits != 16 ? eps : 0) * vmax + sums * vmax;
}

static int mode_check(const char *gsock, const char *hsock)
{
  const int bitss[] = {2, 4};
  for (int bi = 0; bi < 2; bi++) {
    const int bits = bitss[bi];
    char salt[16];
    snprintf(salt, sizeof salt, "chk%d-%u", bits, (unsigned)getpid());
    kvs_client *cg = conn(gsock, bits, salt), *ch = conn(hsock, bits, salt);
    const uint32_t G = kvs_get_info(cg)->group;
    for (uint32_t i = 0; i < NS; i++)
      if (put(cg, i + 1, 40 + i, lens[i]) < 0 || put(ch, i + 1, 40 + i, lens[i]) < 0)
        DIE("put %d bits seq %u: %s / %s", bits, i + 1, kvs_last_error(cg), kvs_last_error(ch));
    kvs_table *tg[NS], *th[NS];
    for (uint32_t i = 0; i < NS; i++) {
      tg[i] = table(cg, i + 1);
      th[i] = table(ch, i + 1);
      if (!tg[i]->dev) DIE("the GPU daemon's table is not of device chunks");
    }
    PASS("%d bits: tables of the GPU pool are device chunks (GPU %d), imported read-only", bits, tg[0]->ordinal);
    CK(cudaSetDevice(tg[0]->ordinal));
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    const size_t nq = (size_t)NS * QH * D;
    float *q = malloc(nq * 4), *out = malloc(nq * 4), *ref = malloc(nq * 4);
    float lse[NS * QH], lref[NS * QH];
    uint16_t *q16 = malloc(nq * 2);
    uint16_t *k = malloc((size_t)MAXT * C * 2), *v = malloc((size_t)MAXT * C * 2);
    void *dq, *dout, *dlse;
    CK(cudaMalloc(&dq, nq * 4));
    CK(cudaMalloc(&dout, nq * 4));
    CK(cudaMalloc(&dlse, NS * QH * 4));
    for (uint32_t layer = 0; layer < L; layer++)
      for (int qd = 0; qd < 2; qd++) { /* q f32, then f16 */
        for (size_t e = 0; e < nq; e++)
          q[e] = (float)((double)(mix(layer * 7919u + e + 77u * bits) >> 11) / 9007199254740992.0 * 4.0 - 2.0);
        const void *hq = q;
        int dt = KVS_DTYPE_F32;
        if (qd) {
          kvs_f16_from_f32(q16, q, nq);
          kvs_f16_to_f32(q, q16, nq); /* the values both sides see */
          hq = q16;
          dt = KVS_DTYPE_F16;
        }
        CK(cudaMemcpy(dq, hq, nq * (qd ? 2 : 4), cudaMemcpyHostToDevice));
        CK(cudaMemset(dout, 0xff, nq * 4));
        int r = kvs_attend_device(cg, tg, NS, layer, dq, dt, QH, dout, dlse, st);
        if (r < 0) DIE("kvs_attend_device: %s (%s)", kvs_strerror(r), kvs_last_error(cg));
        CK(cudaStreamSynchronize(st));
        CK(cudaMemcpy(out, dout, nq * 4, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(lse, dlse, sizeof lse, cudaMemcpyDeviceToHost));
        r = kvs_attend_lse(ch, th, NS, layer, hq, dt, QH, ref, lref);
        if (r < 0) DIE("kvs_attend_lse (host): %s", kvs_strerror(r));
        double worst = 0, worst_frac = 0;
        uint32_t bad = 0, checked = 0;
        for (uint32_t i = 0; i < NS; i++) {
          const uint32_t T = lens[i], nbt = T / G * G;
          if (kvs_table_tokens(tg[i], layer) != T || kvs_table_tokens(th[i], layer) != T)
            DIE("table tokens %u / %u, not %u", kvs_table_tokens(tg[i], layer), kvs_table_tokens(th[i], layer), T);
          get_kv(ch, i + 1, T, layer, k, v);
          for (uint32_t h = 0; h < QH; h++) {
            const uint32_t j = h / GQ;
            double vmax = 0, delta;
            for (uint32_t t = 0; t < T; t++) {
              float vf[D];
              kvs_f16_to_f32(vf, &v[(size_t)t * C + j * D], D);
              for (uint32_t c = 0; c < D; c++) vmax = fmax(vmax, fabs(vf[c]));
            }
            const float *qh = q + ((size_t)i * QH + h) * D;
            const double bound = head_bound(bits, k, T, nbt, qh, j, vmax, &delta) + 1e-30;
            for (uint32_t c = 0; c < D; c++) {
              const size_t e = ((size_t)i * QH + h) * D + c;
              const double err = fabs((double)out[e] - ref[e]);
              checked++;
              worst = fmax(worst, err / vmax);
              worst_frac = fmax(worst_frac, err / bound);
              if (!(err <= bound) && bad++ < 5)
                printf("  %d bits layer %u q%s seq %u head %u ch %u: gpu %.8g host %.8g err %.3g bound %.3g\n", bits,
                       layer, qd ? "f16" : "f32", i, h, c, out[e], ref[e], err, bound);
            }
            const double lb = delta + 4.0 * T * ldexp(1.0, -24) + fabs(lref[i * QH + h]) * ldexp(1.0, -21) + 1e-6;
            const double le = fabs((double)lse[i * QH + h] - lref[i * QH + h]);
            checked++;
            if (!(le <= lb) && bad++ < 5)
              printf("  %d bits layer %u seq %u head %u: lse gpu %.8g host %.8g err %.3g bound %.3g\n", bits, layer, i,
                     h, lse[i * QH + h], lref[i * QH + h], le, lb);
          }
        }
        if (bad || checked != NS * QH * (D + 1u))
          FAILED("%d bits layer %u q %s: %u of %u values outside the bound", bits, layer, qd ? "f16" : "f32", bad,
                 checked);
        else
          PASS("%d bits layer %u q %s: GPU pool kvs_attend_device == host pool kvs_attend_lse (out and lse, %u "
               "values) within the CUDA-vs-reference bound; worst %.3g of max|v|, %.0f%% of bound",
               bits, layer, qd ? "f16" : "f32", checked, worst, 100 * worst_frac);
      }
    /* a host table on the device path and a device table on the host path */
    int r1 = kvs_attend_device(cg, th, 1, 0, dq, KVS_DTYPE_F32, QH, dout, NULL, st);
    int r2 = kvs_attend(cg, tg, 1, 0, q, KVS_DTYPE_F32, QH, out);
    if (r1 == -EINVAL && r2 == -EINVAL)
      PASS("%d bits: a host table on kvs_attend_device and a device table on kvs_attend are refused", bits);
    else
      FAILED("%d bits: mixed paths answered %s / %s, not EINVAL", bits, kvs_strerror(r1), kvs_strerror(r2));
    CK(cudaStreamDestroy(st));
    cudaFree(dq);
    cudaFree(dout);
    cudaFree(dlse);
    for (uint32_t i = 0; i < NS; i++) {
      kvs_table_free(tg[i]);
      kvs_table_free(th[i]);
    }
    free(q); free(out); free(ref); free(q16); free(k); free(v);
    kvs_close(cg);
    kvs_close(ch);
  }
  return failures ? 1 : 0;
}

/* ---- isolation ------------------------------------------------------ */

/* The raw table the daemon left in c's scratch window. */
static const kvs__tbl_hdr *raw(kvs_client *c)
{
  size_t sz;
  return (const kvs__tbl_hdr *)((uint8_t *)kvs_segment(c, &sz) + SCRATCH_OFF);
}

static void raw_block(kvs_client *c, uint32_t layer, uint32_t b, kvs__tbl_loc *out)
{
  const uint8_t *p = (const uint8_t *)raw(c);
  const kvs__tbl_hdr *h = raw(c);
  kvs__tbl_layer Lr;
  memcpy(&Lr, p + sizeof *h + (size_t)h->n_units * sizeof(kvs__tbl_unit) + layer * sizeof Lr, sizeof Lr);
  kvs__tbl_block B;
  memcpy(&B, p + Lr.blocks + (size_t)b * sizeof B, sizeof B);
  *out = B.data;
}

static int mode_isolation(const char *sock)
{
  char sa[32], sb[32];
  snprintf(sa, sizeof sa, "iso-a-%u", (unsigned)getpid());
  snprintf(sb, sizeof sb, "iso-b-%u", (unsigned)getpid());
  kvs_client *a = conn(sock, 4, sa), *b = conn(sock, 4, sb);
  const uint32_t G = kvs_get_info(a)->group, n = 64 * G;
  if (put(a, 1, 7, n) < 0) DIE("put a: %s", kvs_last_error(a));
  kvs_table *ta = table(a, 1);
  kvs__tbl_loc la;
  raw_block(a, 1, 5, &la); /* a block of A: layer 1, block 5 */
  kvs_table *tb = NULL;
  int r = kvs_table_get(b, 1, 0, L, SCRATCH_OFF, SCRATCH_LEN, &tb);
  if (r == -ENOENT && !tb)
    PASS("another space's session gets ENOENT for A's seq");
  else
    FAILED("B's table of A's seq: %s, not ENOENT", kvs_strerror(r));
  /* B puts the same tokens in its own space: none of A's chunks */
  if (put(b, 1, 7, n) < 0) DIE("put b: %s", kvs_last_error(b));
  tb = table(b, 1);
  {
    const kvs__tbl_hdr *h = raw(b);
    const kvs__tbl_unit *u = (const kvs__tbl_unit *)(h + 1);
    int shared = 0;
    for (uint32_t i = 0; i < h->n_units; i++)
      for (uint32_t x = 0; x < ta->nmaps; x++)
        if (ta->maps[x]->unit == u[i].unit) shared++;
    if (!shared && h->n_units && ta->nmaps)
      PASS("the same tokens in two spaces lie in disjoint chunks (%u and %u units)", h->n_units, ta->nmaps);
    else
      FAILED("spaces share %d chunks (units %u / %u)", shared, h->n_units, ta->nmaps);
  }
  kvs_table_free(tb);
  if (kvs_release(b, 1) < 0) DIE("release b 1");
  /* A's block through A's import, and A's output, before */
  const uint8_t *pa = ta->L[1].blk[5].data;
  const size_t bb = (size_t)raw(a)->block_bytes;
  uint8_t *before = malloc(bb), *after = malloc(bb), *other = malloc(bb);
  CK(cudaSetDevice(ta->ordinal));
  CK(cudaMemcpy(before, pa, bb, cudaMemcpyDeviceToHost));
  float *dq, *dout, q[QH * D], out0[QH * D], out1[QH * D];
  CK(cudaMalloc((void **)&dq, sizeof q));
  CK(cudaMalloc((void **)&dout, sizeof out0));
  for (uint32_t e = 0; e < QH * D; e++) q[e] = (float)((double)(mix(e + 5) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
  CK(cudaMemcpy(dq, q, sizeof q, cudaMemcpyHostToDevice));
  if ((r = kvs_attend_device(a, &ta, 1, 1, dq, KVS_DTYPE_F32, QH, dout, NULL, NULL)) < 0)
    DIE("attend a: %s", kvs_strerror(r));
  CK(cudaMemcpy(out0, dout, sizeof out0, cudaMemcpyDeviceToHost));
  /* A lets go (its table still maps the chunks); B fills the pool */
  if (kvs_release(a, 1) < 0) DIE("release a");
  uint32_t s;
  r = 0;
  for (s = 100; s < 100000 && r == 0; s++) r = put(b, s, s, n);
  if (r != -ENOSPC) DIE("filling the pool ended with %s, not ENOSPC", kvs_strerror(r));
  /* B's tables: find A's old chunk serving B at a newer generation */
  int found = 0;
  for (uint32_t q2 = 100; q2 < s - 1 && !found; q2++) {
    kvs_table *t2;
    if ((r = kvs_table_get(b, q2, 0, L, SCRATCH_OFF, SCRATCH_LEN, &t2)) < 0) {
      if (r != -ENOENT) /* the seq whose put ran into ENOSPC may hold nothing */
        FAILED("B's table of seq %u: %s (%s)", q2, kvs_strerror(r), kvs_last_error(b));
      continue;
    }
    for (uint32_t l = 0; l < L && !found; l++)
      for (uint32_t x = 0; x < t2->L[l].nb && !found; x++) {
        kvs__tbl_loc lb;
        raw_block(b, l, x, &lb);
        if (lb.unit == la.unit) {
          found = 1;
          if (lb.gen > la.gen)
            PASS("A's chunk %u serves B now at generation %u (was %u): a fresh allocation", la.unit, lb.gen, la.gen);
          else
            FAILED("A's chunk %u serves B at the same generation %u", la.unit, lb.gen);
          /* what B's mapping of that chunk holds where A's block was */
          const uint8_t *pb = (const uint8_t *)t2->L[l].blk[x].data - lb.off + la.off;
          CK(cudaMemcpy(other, pb, bb, cudaMemcpyDeviceToHost));
        }
      }
    kvs_table_free(t2);
  }
  if (!found) FAILED("no block of B lies in A's old chunk %u", la.unit);
  CK(cudaMemcpy(after, pa, bb, cudaMemcpyDeviceToHost));
  if (memcmp(before, after, bb) == 0)
    PASS("A's stale import reads exactly A's old block after B refilled the chunk");
  else
    FAILED("A's stale import changed after the chunk was reused");
  if (found && memcmp(after, other, bb) != 0)
    PASS("A's stale import does not show what B's mapping of that chunk holds there");
  else if (found)
    FAILED("A's stale import shows B's data");
  if ((r = kvs_attend_device(a, &ta, 1, 1, dq, KVS_DTYPE_F32, QH, dout, NULL, NULL)) < 0)
    DIE("attend a after: %s", kvs_strerror(r));
  CK(cudaMemcpy(out1, dout, sizeof out1, cudaMemcpyDeviceToHost));
  /* not bit for bit: the kernel adds value-outlier corrections into shared
   * memory with atomics (1 % outliers here), so the order of those float
   * sums, and the last bits, vary from run to run. Rounding-sized
   * differences are allowed (1e-4 of the largest |out|); B's data in A's
   * blocks would move outputs by the order of max|out| itself. */
  double omax = 0, odiff = 0;
  for (uint32_t e = 0; e < QH * D; e++) {
    omax = fmax(omax, fabs((double)out0[e]));
    odiff = fmax(odiff, fabs((double)out0[e] - (double)out1[e]));
  }
  if (odiff <= 1e-4 * omax && omax > 0)
    PASS("attention through A's stale table is unchanged after the pool was refilled by B (largest "
         "difference %.3g of max|out| %.3g: float rounding)", odiff / omax, omax);
  else
    FAILED("attention through A's stale table changed: largest difference %.3g, max|out| %.3g", odiff, omax);
  kvs_table_free(ta);
  cudaFree(dq);
  cudaFree(dout);
  free(before); free(after); free(other);
  kvs_close(a);
  kvs_close(b);
  return failures ? 1 : 0;
}

static int mode_shared(const char *sock)
{
  kvs_client *c = conn(sock, 4, NULL);
  if (put(c, 1, 3, 256) < 0) DIE("put: %s", kvs_last_error(c));
  kvs_table *t = NULL;
  int r = kvs_table_get(c, 1, 0, L, SCRATCH_OFF, SCRATCH_LEN, &t);
  if (r == -EACCES && !t)
    PASS("the shared namespace gets EACCES for a table of a GPU pool");
  else
    FAILED("shared namespace table: %s, not EACCES", kvs_strerror(r));
  kvs_close(c);
  return failures ? 1 : 0;
}

static int mode_rowrite(const char *sock)
{
  kvs_client *c = conn(sock, 4, "rowrite");
  if (put(c, 1, 9, 256) < 0) DIE("put: %s", kvs_last_error(c));
  kvs_table *t = table(c, 1);
  CK(cudaSetDevice(t->ordinal));
  uint8_t buf[64] = {0x5a}, back[64];
  void *p = (void *)t->L[0].blk[0].data;
  CK(cudaMemcpy(back, p, sizeof back, cudaMemcpyDeviceToHost));
  cudaError_t e = cudaMemcpy(p, buf, sizeof buf, cudaMemcpyHostToDevice);
  if (e == cudaSuccess) {
    cudaDeviceSynchronize();
    FAILED("a write into a read-only import succeeded");
  } else {
    PASS("a write into an imported chunk fails (%s)", cudaGetErrorString(e));
  }
  return failures ? 1 : 0;
}

/* Put seqs [s0, ...) of n tokens until ENOSPC, with tables a table of
 * each (freed at once); returns the seq ENOSPC cut short. *edquot: a table
 * got EDQUOT (then it returns the seq after that one). */
static uint32_t fill_tables(kvs_client *c, uint32_t s0, uint32_t n, int tables, int *edquot)
{
  uint32_t s;
  int r = 0;
  for (s = s0; s < s0 + 100000; s++) {
    if ((r = put(c, s, s, n)) < 0) break;
    if (!tables) continue;
    kvs_table *t;
    r = kvs_table_get(c, s, 0, L, SCRATCH_OFF, SCRATCH_LEN, &t);
    if (r == -EDQUOT) {
      *edquot = 1;
      if (!strstr(kvs_last_error(c), "table_chunks")) FAILED("EDQUOT without table_chunks: %s", kvs_last_error(c));
      return s + 1;
    }
    if (r < 0) DIE("table of seq %u: %s (%s)", s, kvs_strerror(r), kvs_last_error(c));
    kvs_table_free(t);
  }
  if (r != -ENOSPC) DIE("fill ended with %s, not ENOSPC (%s)", kvs_strerror(r), kvs_last_error(c));
  return s;
}

static int mode_quota(const char *sock)
{
  char salt[32];
  snprintf(salt, sizeof salt, "quota-%u", (unsigned)getpid()); /* blocks of no earlier run */
  kvs_client *c = conn(sock, 4, salt);
  salt[0] = 'Q';
  kvs_client *b = conn(sock, 4, salt);
  const uint32_t n = 64 * kvs_get_info(c)->group;
  int edq = 0;
  uint32_t end = fill_tables(c, 1, n, 1, &edq);
  if (edq) {
    FAILED("EDQUOT in the first fill, before any chunk was passed twice (at seq %u: %s)", end - 1,
           kvs_last_error(c));
    return 1;
  }
  for (uint32_t s = 1; s <= end; s++) kvs_release(c, s); /* end: the one ENOSPC cut short */
  /* another space takes the chunks (fresh allocations), then lets go */
  uint32_t endb = fill_tables(b, 1, n, 0, &edq);
  for (uint32_t s = 1; s <= endb; s++) kvs_release(b, s);
  uint32_t end2 = fill_tables(c, end + 1, n, 1, &edq);
  if (edq)
    PASS("session A got EDQUOT at table #%u of its second fill (its chunks came back at new "
         "generations after B's fill of %u seqs)", end2 - end - 1, endb - 1);
  else
    FAILED("A's fills (%u and %u seqs) around B's (%u) never got EDQUOT", end - 1, end2 - end - 1,
           endb - 1);
  kvs_close(b);
  kvs_client *c2 = conn(sock, 4, salt);
  if (put(c2, 1, 1, 256) < 0) DIE("put c2");
  kvs_table *t = NULL;
  int r = kvs_table_get(c2, 1, 0, L, SCRATCH_OFF, SCRATCH_LEN, &t);
  if (r == 0)
    PASS("a new session takes a table after its predecessor's EDQUOT");
  else
    FAILED("a new session's table: %s (%s)", kvs_strerror(r), kvs_last_error(c2));
  kvs_table_free(t);
  kvs_close(c2);
  kvs_close(c);
  return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc == 4 && !strcmp(argv[1], "check")) return mode_check(argv[2], argv[3]);
  if (argc == 3 && !strcmp(argv[1], "isolation")) return mode_isolation(argv[2]);
  if (argc == 3 && !strcmp(argv[1], "shared")) return mode_shared(argv[2]);
  if (argc == 3 && !strcmp(argv[1], "rowrite")) return mode_rowrite(argv[2]);
  if (argc == 3 && !strcmp(argv[1], "quota")) return mode_quota(argv[2]);
  fprintf(stderr, "usage: attend_device_test check GPUSOCK HOSTSOCK | isolation|shared|rowrite|quota GPUSOCK\n");
  return 2;
}
