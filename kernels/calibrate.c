/* SPDX-License-Identifier: MIT */
/* Hidden-state dump loading and offline KVSink calibration (sink.h). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kernels/half.h"
#include "kernels/sink.h"

#define DUMP_HDR 24u

static uint32_t le32(const unsigned char *b)
{
  return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

int kvs__dump_load(const char *path, kvs__dump *d, char *errmsg)
{
  char dummy[256];
  if (!errmsg) errmsg = dummy;
  if (!path || !d) return -EINVAL;
  memset(d, 0, sizeof *d);
  FILE *f = fopen(path, "rb");
  if (!f) {
    int e = errno;
    snprintf(errmsg, 256, "%.100s: %s", path, strerror(e));
    return -e;
  }
  int rc = -EINVAL;
  unsigned char hdr[DUMP_HDR];
  struct stat st;
  float *h = NULL;
  if (fstat(fileno(f), &st) || fread(hdr, 1, DUMP_HDR, f) != DUMP_HDR) {
    snprintf(errmsg, 256, "%.100s: short header", path);
    goto out;
  }
  if (memcmp(hdr, "KVSDUMP1", 8)) {
    snprintf(errmsg, 256, "%.100s: not a KVSDUMP1 file", path);
    goto out;
  }
  uint32_t L = le32(hdr + 8), T = le32(hdr + 12), H = le32(hdr + 16), dt = le32(hdr + 20);
  if (dt != 1 && dt != 3) {
    snprintf(errmsg, 256, "%.100s: dtype %u (want 1 = fp16 or 3 = fp32)", path, dt);
    goto out;
  }
  if (!L || !T || !H || L > 4096 || H > (1u << 20)) {
    snprintf(errmsg, 256, "%.100s: bad shape %u x %u x %u", path, L, T, H);
    goto out;
  }
  uint64_t n = (uint64_t)L * T * H, esz = dt == 1 ? 2u : 4u;
  if (n > ((uint64_t)1 << 34) / 4u || (uint64_t)st.st_size != DUMP_HDR + n * esz) {
    snprintf(errmsg, 256, "%.100s: size %lld does not match %u x %u x %u %s", path, (long long)st.st_size, L,
             T, H, dt == 1 ? "fp16" : "fp32");
    goto out;
  }
  h = malloc(n * sizeof(float));
  if (!h) { rc = -ENOMEM; snprintf(errmsg, 256, "%.100s: out of memory", path); goto out; }
  /* read in chunks, converting little-endian words */
  unsigned char buf[65536];
  uint64_t done = 0;
  while (done < n) {
    size_t want = (size_t)((n - done) * esz < sizeof buf ? (n - done) * esz : sizeof buf);
    if (fread(buf, 1, want, f) != want) { snprintf(errmsg, 256, "%.100s: read error", path); goto out; }
    for (size_t i = 0; i < want / esz; i++) {
      float x;
      if (dt == 1) x = kvs__f16_to_f32((uint16_t)(buf[2 * i] | buf[2 * i + 1] << 8));
      else { uint32_t u = le32(buf + 4 * i); memcpy(&x, &u, 4); }
      if (!isfinite(x)) {
        snprintf(errmsg, 256, "%.100s: NaN or Inf at element %llu", path, (unsigned long long)(done + i));
        goto out;
      }
      h[done + i] = x;
    }
    done += want / esz;
  }
  d->n_layers = L;
  d->n_tokens = T;
  d->hidden = H;
  d->h = h;
  h = NULL;
  rc = 0;
out:
  free(h);
  fclose(f);
  return rc;
}

void kvs__dump_free(kvs__dump *d)
{
  if (!d) return;
  free(d->h);
  memset(d, 0, sizeof *d);
}

static int fcmp(const void *a, const void *b)
{
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

/* Median of n floats (mean of the middle two for even n); sorts a copy. */
static float median(const float *m, uint32_t n, float *tmp)
{
  memcpy(tmp, m, sizeof *m * n);
  qsort(tmp, n, sizeof *tmp, fcmp);
  return n % 2 ? tmp[n / 2] : 0.5f * (tmp[n / 2 - 1] + tmp[n / 2]);
}

static const float *row(const kvs__dump *d, uint32_t l, uint32_t t)
{
  return d->h + ((size_t)l * d->n_tokens + t) * d->hidden;
}

/* Per layer: number of outlier tokens over all dumps. thr[l * nd + i] is
 * ratio * median token max of dump i at layer l. */
static int layer_stats(const kvs__dump *ds, size_t nd, float ratio, uint32_t *count, float *thr)
{
  uint32_t L = ds[0].n_layers, maxT = 0;
  for (size_t i = 0; i < nd; i++) maxT = ds[i].n_tokens > maxT ? ds[i].n_tokens : maxT;
  float *m = malloc(sizeof *m * maxT * 2u);
  if (!m) return -ENOMEM;
  for (uint32_t l = 0; l < L; l++) {
    count[l] = 0;
    for (size_t i = 0; i < nd; i++) {
      const kvs__dump *d = &ds[i];
      for (uint32_t t = 0; t < d->n_tokens; t++) {
        const float *h = row(d, l, t);
        float x = 0.f;
        for (uint32_t c = 0; c < d->hidden; c++) x = fabsf(h[c]) > x ? fabsf(h[c]) : x;
        m[t] = x;
      }
      float th = ratio * median(m, d->n_tokens, m + maxT);
      thr[l * nd + i] = th;
      for (uint32_t t = 0; t < d->n_tokens; t++) count[l] += m[t] > th;
    }
  }
  free(m);
  return 0;
}

typedef struct chs { uint32_t c, score; } chs;

static int chs_cmp(const void *a, const void *b)
{
  const chs *x = a, *y = b;
  if (x->score != y->score) return x->score > y->score ? -1 : 1;
  return (x->c > y->c) - (x->c < y->c);
}

static float feature(const float *h, const kvs__profile *p)
{
  float x = 0.f;
  for (uint32_t j = 0; j < p->n_channels; j++) x = fabsf(h[p->channels[j]]) > x ? fabsf(h[p->channels[j]]) : x;
  return x;
}

int kvs__calibrate(const kvs__dump *dumps, size_t n_dumps, const kvs__calib_opts *o,
                   kvs__profile *p, char *errmsg)
{
  char dummy[256];
  if (!errmsg) errmsg = dummy;
  if (!dumps || !n_dumps || !o || !p) { snprintf(errmsg, 256, "no dumps"); return -EINVAL; }
  const uint32_t L = dumps[0].n_layers, H = dumps[0].hidden;
  uint64_t total = 0;
  for (size_t i = 0; i < n_dumps; i++) {
    if (dumps[i].n_layers != L || dumps[i].hidden != H || !dumps[i].n_tokens || !dumps[i].h) {
      snprintf(errmsg, 256, "dump %zu: shape differs from the first dump (%u layers, hidden %u)", i, L, H);
      return -EINVAL;
    }
    total += dumps[i].n_tokens;
  }
  const float ratio = o->ratio > 0.f ? o->ratio : 8.f;
  const uint32_t per_mille = o->max_outlier_tokens ? o->max_outlier_tokens : 50u;
  uint32_t max_ch = o->max_channels ? o->max_channels : 8u;
  if (max_ch > KVS_PROFILE_MAX_CHANNELS) max_ch = KVS_PROFILE_MAX_CHANNELS;
  const uint64_t few = total * per_mille / 1000u;

  uint32_t *count = malloc(sizeof *count * L);
  float *thr = malloc(sizeof *thr * L * n_dumps);
  chs *cs = calloc(H, sizeof *cs);
  int rc = -ENOMEM;
  if (!count || !thr || !cs || layer_stats(dumps, n_dumps, ratio, count, thr)) {
    snprintf(errmsg, 256, "out of memory");
    goto out;
  }

  /* l_E: earliest layer whose outlier set is non-empty and few there and in
   * every later layer; the last layer is exempt (final layers often lose
   * the massive activations), unless l_E would be the last layer itself. */
  int le = -1, any = 0;
  for (uint32_t l = 0; l < L; l++) any |= count[l] > 0;
  for (uint32_t l = 0; l < L && le < 0; l++) {
    int ok = count[l] > 0 && count[l] <= few;
    for (uint32_t j = l + 1; ok && j + 1 < L; j++) ok = count[j] > 0 && count[j] <= few;
    if (ok) le = (int)l;
  }
  if (le < 0) {
    rc = -ENOENT;
    if (!any)
      snprintf(errmsg, 256, "no massive activations: no token's max |h| exceeds %g x the median in any layer",
               (double)ratio);
    else
      snprintf(errmsg, 256,
               "no stable massive activations: no layer from which on every layer has 1..%llu outlier tokens "
               "(%g x median)", (unsigned long long)few, (double)ratio);
    goto out;
  }

  /* C*: channels where outlier tokens exceed the threshold, ranked by how
   * many outlier tokens do so there. A channel is kept while the ones kept
   * cover < 90% of outlier tokens, or when it alone covers >= 90% (several
   * channels that all carry every sink are one signature). */
  for (uint32_t c = 0; c < H; c++) cs[c].c = c;
  uint32_t n_out = count[le];
  for (size_t i = 0; i < n_dumps; i++) {
    float th = thr[(size_t)le * n_dumps + i];
    for (uint32_t t = 0; t < dumps[i].n_tokens; t++) {
      const float *h = row(&dumps[i], (uint32_t)le, t);
      float m = 0.f;
      for (uint32_t c = 0; c < H; c++) m = fabsf(h[c]) > m ? fabsf(h[c]) : m;
      if (!(m > th)) continue;
      for (uint32_t c = 0; c < H; c++) cs[c].score += fabsf(h[c]) > th;
    }
  }
  qsort(cs, H, sizeof *cs, chs_cmp);
  kvs__profile q;
  memset(&q, 0, sizeof q);
  q.outliers = -1.f; /* not chosen by calibration */
  q.layer = (uint32_t)le;
  q.max_sinks = o->max_sinks;
  q.pfn = o->pfn;
  uint32_t covered = 0;
  for (uint32_t j = 0; j < H && q.n_channels < max_ch && cs[j].score; j++) {
    int alone = (uint64_t)cs[j].score * 10u >= (uint64_t)n_out * 9u;
    int short_ = (uint64_t)covered * 10u < (uint64_t)n_out * 9u;
    if (!alone && !short_) break;
    q.channels[q.n_channels++] = cs[j].c;
    /* recount coverage with the channels kept so far */
    covered = 0;
    for (size_t i = 0; i < n_dumps; i++) {
      float th = thr[(size_t)le * n_dumps + i];
      for (uint32_t t = 0; t < dumps[i].n_tokens; t++)
        covered += feature(row(&dumps[i], (uint32_t)le, t), &q) > th;
    }
  }
  /* keep C* in channel order: it reads better and the daemon does not care */
  for (uint32_t a = 1; a < q.n_channels; a++)
    for (uint32_t b = a; b > 0 && q.channels[b - 1] > q.channels[b]; b--) {
      uint32_t t = q.channels[b]; q.channels[b] = q.channels[b - 1]; q.channels[b - 1] = t;
    }

  /* tau between the populations: smallest outlier token vs largest other */
  float lo = INFINITY, hi = 0.f;
  for (size_t i = 0; i < n_dumps; i++) {
    float th = thr[(size_t)le * n_dumps + i];
    for (uint32_t t = 0; t < dumps[i].n_tokens; t++) {
      const float *h = row(&dumps[i], (uint32_t)le, t);
      float m = 0.f;
      for (uint32_t c = 0; c < H; c++) m = fabsf(h[c]) > m ? fabsf(h[c]) : m;
      float x = feature(h, &q);
      if (m > th) lo = x < lo ? x : lo;
      else hi = x > hi ? x : hi;
    }
  }
  if (!(lo > hi)) {
    rc = -ERANGE;
    snprintf(errmsg, 256,
             "layer %d: outlier and normal tokens overlap on C* (smallest outlier %g <= largest other %g)", le,
             (double)lo, (double)hi);
    goto out;
  }
  q.tau = hi > 0.f ? sqrtf(lo * hi) : lo / 2.f;
  if (!(q.tau > hi && q.tau < lo)) q.tau = hi + (lo - hi) / 2.f; /* rounding at tiny gaps */
  memcpy(q.model_id, p->model_id, sizeof q.model_id);
  *p = q;
  snprintf(errmsg, 256, "layer %d, %u channels, %u outlier tokens of %llu, tau %g (between %g and %g)", le,
           q.n_channels, n_out, (unsigned long long)total, (double)q.tau, (double)hi, (double)lo);
  rc = 0;
out:
  free(count);
  free(thr);
  free(cs);
  return rc;
}
