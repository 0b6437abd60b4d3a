/* SPDX-License-Identifier: MIT */
/* libkvsink: sink profiles, prediction and calibration for applications,
 * over kernels/sink.h behind opaque handles (the kernels' structs can
 * change without breaking the library's ABI). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kvsink.h>
#include "kernels/sink.h"

struct kvs_profile { kvs__profile p; };
struct kvs_dump { kvs__dump d; };

/* the kernels write at most 256 bytes of message */
static void put_msg(char *errmsg, size_t errlen, const char *m)
{
  if (errmsg && errlen)
    snprintf(errmsg, errlen, "%s", m);
}

int kvs_profile_load(kvs_profile **out, const char *path, char *errmsg, size_t errlen)
{
  char m[256] = "";
  if (!out || !path) {
    put_msg(errmsg, errlen, "no profile path");
    return -EINVAL;
  }
  *out = NULL;
  kvs_profile *p = calloc(1, sizeof *p);
  if (!p) {
    put_msg(errmsg, errlen, "out of memory");
    return -ENOMEM;
  }
  int r = kvs__profile_load(path, &p->p, m);
  if (r < 0) {
    put_msg(errmsg, errlen, m);
    free(p);
    return r;
  }
  *out = p;
  return 0;
}

int kvs_profile_save(const kvs_profile *p, const char *path)
{
  if (!p || !path)
    return -EINVAL;
  return kvs__profile_save(path, &p->p);
}

void kvs_profile_free(kvs_profile *p) { free(p); }

const char *kvs_profile_model(const kvs_profile *p) { return p->p.model_id; }
uint32_t kvs_profile_layer(const kvs_profile *p) { return p->p.layer; }
float kvs_profile_tau(const kvs_profile *p) { return p->p.tau; }
uint32_t kvs_profile_max_sinks(const kvs_profile *p) { return p->p.max_sinks; }
uint32_t kvs_profile_pfn(const kvs_profile *p) { return p->p.pfn; }
float kvs_profile_outliers(const kvs_profile *p) { return p->p.outliers; }

const uint32_t *kvs_profile_channels(const kvs_profile *p, uint32_t *n)
{
  if (n)
    *n = p->p.n_channels;
  return p->p.channels;
}

int kvs_predict_sinks(const kvs_profile *p, const float *act, uint32_t n, uint32_t n_ch,
                      uint32_t budget, uint8_t *flags)
{
  if (!p || (n && (!act || !flags)) || n_ch != p->p.n_channels)
    return -EINVAL;
  return kvs__predict_sinks(act, n, n_ch, p->p.tau, budget, flags);
}

int kvs_dump_load(kvs_dump **out, const char *path, char *errmsg, size_t errlen)
{
  char m[256] = "";
  if (!out || !path) {
    put_msg(errmsg, errlen, "no dump path");
    return -EINVAL;
  }
  *out = NULL;
  kvs_dump *d = calloc(1, sizeof *d);
  if (!d) {
    put_msg(errmsg, errlen, "out of memory");
    return -ENOMEM;
  }
  int r = kvs__dump_load(path, &d->d, m);
  if (r < 0) {
    put_msg(errmsg, errlen, m);
    free(d);
    return r;
  }
  *out = d;
  return 0;
}

void kvs_dump_free(kvs_dump *d)
{
  if (!d)
    return;
  kvs__dump_free(&d->d);
  free(d);
}

void kvs_calib_options_init(kvs_calib_options *o)
{
  kvs_calib_options d = {8.f, 50u, 8u, 16u, 1u};
  *o = d;
}

int kvs_calibrate(kvs_profile **out, const char *model_id, const kvs_dump *const *dumps,
                  size_t n, const kvs_calib_options *o, char *errmsg, size_t errlen)
{
  char m[256] = "";
  if (!out || !model_id || !dumps || n == 0 || !o) {
    put_msg(errmsg, errlen, "calibrate: missing argument");
    return -EINVAL;
  }
  *out = NULL;
  kvs_profile *p = calloc(1, sizeof *p);
  if (strlen(model_id) >= sizeof p->p.model_id) {
    free(p);
    put_msg(errmsg, errlen, "model id longer than 128 bytes");
    return -EINVAL;
  }
  /* the kernel wants the dumps side by side (they are small headers) */
  kvs__dump *ds = calloc(n, sizeof *ds);
  if (!p || !ds) {
    free(p);
    free(ds);
    put_msg(errmsg, errlen, "out of memory");
    return -ENOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    if (!dumps[i]) {
      free(p);
      free(ds);
      put_msg(errmsg, errlen, "calibrate: NULL dump");
      return -EINVAL;
    }
    ds[i] = dumps[i]->d;
  }
  strcpy(p->p.model_id, model_id);
  p->p.outliers = -1.f;
  kvs__calib_opts ko = {o->ratio, o->max_outlier_tokens, o->max_channels, o->max_sinks, o->pfn};
  int r = kvs__calibrate(ds, n, &ko, &p->p, m);
  free(ds);
  put_msg(errmsg, errlen, m);
  if (r < 0) {
    free(p);
    return r;
  }
  *out = p;
  return 0;
}
