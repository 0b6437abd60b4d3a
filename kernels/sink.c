/* SPDX-License-Identifier: MIT */
/* Online sink prediction and the profile file (sink.h). */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kvsink.h>
#include "kernels/sink.h"

typedef struct cand { float m; uint32_t t; } cand;

static int cand_cmp(const void *a, const void *b)
{
  const cand *x = a, *y = b;
  if (x->m != y->m) return x->m > y->m ? -1 : 1; /* largest first */
  return (x->t > y->t) - (x->t < y->t);          /* then earlier token */
}

int kvs__predict_sinks(const float *act, uint32_t n, uint32_t n_ch, float tau,
                       uint32_t budget, uint8_t *flags)
{
  if (n == 0) return 0;
  if (!act || !flags || n_ch == 0) return -EINVAL;
  /* One pass over act into our own array: act may live in memory another
   * process writes, so it is read once and every bound below comes from
   * the copy, never from a second read. */
  cand *cs = malloc(sizeof *cs * n);
  if (!cs) return -ENOMEM;
  uint32_t k = 0;
  for (uint32_t t = 0; t < n; t++) {
    const float *a = act + (size_t)t * n_ch;
    float m = 0.f;
    for (uint32_t c = 0; c < n_ch; c++) {
      float x = fabsf(a[c]);
      if (!(x <= 3.4028235e38f)) { free(cs); return KVS_ENAN; } /* NaN or Inf */
      m = x > m ? x : m;
    }
    if (m > tau) cs[k++] = (cand){ m, t };
  }
  uint32_t keep = k < budget ? k : budget;
  /* more candidates than budget: keep the largest */
  if (k > keep) qsort(cs, k, sizeof *cs, cand_cmp);
  for (uint32_t i = 0; i < keep; i++) flags[cs[i].t] = 1;
  free(cs);
  return (int)keep;
}

static int perr(char *errmsg, const char *path, unsigned line, const char *fmt, ...)
{
  if (errmsg) {
    char m[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    if (line) snprintf(errmsg, 256, "%.40s:%u: %s", path, line, m);
    else snprintf(errmsg, 256, "%.40s: %s", path, m);
  }
  return -EINVAL;
}

/* Strict unsigned decimal, no sign, no spaces, value <= max. */
static int parse_u32(const char *s, uint32_t max, uint32_t *out)
{
  if (!*s) return -1;
  uint64_t v = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return -1;
    v = v * 10u + (uint64_t)(*s - '0');
    if (v > max) return -1;
  }
  *out = (uint32_t)v;
  return 0;
}

static char *trim(char *s)
{
  while (*s == ' ' || *s == '\t') s++;
  size_t n = strlen(s);
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) s[--n] = 0;
  return s;
}

enum { K_MODEL = 1, K_LAYER = 2, K_CHANNELS = 4, K_TAU = 8, K_MAX_SINKS = 16, K_PFN = 32, K_ALL = 63,
       K_OUTLIERS = 64 /* optional */ };

int kvs__profile_load(const char *path, kvs__profile *p, char *errmsg)
{
  if (!path || !p) return -EINVAL;
  FILE *f = fopen(path, "r");
  if (!f) {
    int e = errno;
    if (errmsg) snprintf(errmsg, 256, "%.100s: %s", path, strerror(e));
    return -e;
  }
  kvs__profile q;
  memset(&q, 0, sizeof q);
  q.outliers = -1.f;
  char buf[1024];
  unsigned line = 0, seen = 0;
  int rc = 0;
  while (!rc && fgets(buf, sizeof buf, f)) {
    line++;
    size_t len = strlen(buf);
    if (len == sizeof buf - 1 && buf[len - 1] != '\n') { rc = perr(errmsg, path, line, "line too long"); break; }
    if (len && buf[len - 1] == '\n') buf[--len] = 0;
    char *hash = strchr(buf, '#');
    if (hash) *hash = 0;
    char *s = trim(buf);
    if (!*s) continue;
    char *eq = strchr(s, '=');
    if (!eq) { rc = perr(errmsg, path, line, "expected 'key = value'"); break; }
    *eq = 0;
    char *key = trim(s), *val = trim(eq + 1);
    unsigned bit;
    if (!strcmp(key, "model")) bit = K_MODEL;
    else if (!strcmp(key, "layer")) bit = K_LAYER;
    else if (!strcmp(key, "channels")) bit = K_CHANNELS;
    else if (!strcmp(key, "tau")) bit = K_TAU;
    else if (!strcmp(key, "max_sinks")) bit = K_MAX_SINKS;
    else if (!strcmp(key, "pfn")) bit = K_PFN;
    else if (!strcmp(key, "outliers")) bit = K_OUTLIERS;
    else { rc = perr(errmsg, path, line, "unknown key '%.40s'", key); break; }
    if (seen & bit) { rc = perr(errmsg, path, line, "duplicate key '%s'", key); break; }
    seen |= bit;
    if (bit == K_MODEL) {
      size_t n = strlen(val);
      if (n == 0 || n >= sizeof q.model_id) { rc = perr(errmsg, path, line, "model id must be 1..128 bytes"); break; }
      for (size_t i = 0; i < n; i++)
        if (!isgraph((unsigned char)val[i])) { rc = perr(errmsg, path, line, "model id has a blank or control byte"); break; }
      if (rc) break;
      memcpy(q.model_id, val, n + 1);
    } else if (bit == K_LAYER) {
      if (parse_u32(val, 65535u, &q.layer)) rc = perr(errmsg, path, line, "layer must be an integer 0..65535");
    } else if (bit == K_MAX_SINKS) {
      if (parse_u32(val, 65536u, &q.max_sinks)) rc = perr(errmsg, path, line, "max_sinks must be an integer 0..65536");
    } else if (bit == K_PFN) {
      if (parse_u32(val, 65536u, &q.pfn)) rc = perr(errmsg, path, line, "pfn must be an integer 0..65536");
    } else if (bit == K_OUTLIERS) {
      char *end;
      errno = 0;
      float o = strtof(val, &end);
      if (!*val || *end || errno || !isfinite(o) || o < 0.f || o > 0.01f)
        rc = perr(errmsg, path, line, "outliers must be a fraction 0..0.01");
      q.outliers = o;
    } else if (bit == K_TAU) {
      char *end;
      errno = 0;
      float t = strtof(val, &end);
      if (!*val || *end || errno || !isfinite(t) || !(t > 0.f))
        rc = perr(errmsg, path, line, "tau must be a finite number > 0");
      q.tau = t;
    } else {
      size_t vn = strlen(val);
      if (vn == 0 || val[0] == ',' || val[vn - 1] == ',' || strstr(val, ",,")) {
        rc = perr(errmsg, path, line, "channels must be a comma-separated list of 1..%u integers",
                  KVS_PROFILE_MAX_CHANNELS);
        break;
      }
      char *save = NULL;
      for (char *tok = strtok_r(val, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
        uint32_t c;
        if (q.n_channels == KVS_PROFILE_MAX_CHANNELS)
          rc = perr(errmsg, path, line, "more than %u channels", KVS_PROFILE_MAX_CHANNELS);
        else if (parse_u32(trim(tok), 65535u, &c))
          rc = perr(errmsg, path, line, "channel '%.20s' is not an integer 0..65535", trim(tok));
        else {
          for (uint32_t i = 0; i < q.n_channels; i++)
            if (q.channels[i] == c) rc = perr(errmsg, path, line, "channel %u listed twice", c);
          q.channels[q.n_channels++] = c;
        }
      }
    }
  }
  if (!rc && ferror(f)) rc = perr(errmsg, path, 0, "read error");
  fclose(f);
  if (rc) return rc;
  if ((seen & K_ALL) != K_ALL) {
    static const char *names[] = { "model", "layer", "channels", "tau", "max_sinks", "pfn" };
    for (int i = 0; i < 6; i++)
      if (!(seen & (1u << i))) return perr(errmsg, path, 0, "missing key '%s'", names[i]);
  }
  *p = q;
  return 0;
}

int kvs__profile_save(const char *path, const kvs__profile *p)
{
  if (!path || !p || !p->model_id[0] || memchr(p->model_id, 0, sizeof p->model_id) == NULL) return -EINVAL;
  if (p->n_channels < 1 || p->n_channels > KVS_PROFILE_MAX_CHANNELS || !isfinite(p->tau) || !(p->tau > 0.f))
    return -EINVAL;
  for (const char *s = p->model_id; *s; s++)
    if (!isgraph((unsigned char)*s)) return -EINVAL;
  /* write aside and rename, so a reader never sees half a profile */
  char tmp[4096];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return -ENAMETOOLONG;
  FILE *f = fopen(tmp, "w");
  if (!f) return -errno;
  fprintf(f, "# kvsink sink profile (kvsinkd.conf(5), PROFILES)\n");
  fprintf(f, "model = %s\nlayer = %u\nchannels = ", p->model_id, p->layer);
  for (uint32_t i = 0; i < p->n_channels; i++) fprintf(f, "%s%u", i ? "," : "", p->channels[i]);
  fprintf(f, "\ntau = %.9g\nmax_sinks = %u\npfn = %u\n", (double)p->tau, p->max_sinks, p->pfn);
  if (p->outliers >= 0.f) fprintf(f, "outliers = %.9g\n", (double)p->outliers);
  int rc = ferror(f) ? -EIO : 0;
  if (fclose(f) && !rc) rc = -errno;
  if (!rc && rename(tmp, path)) rc = -errno;
  if (rc) remove(tmp);
  return rc;
}
