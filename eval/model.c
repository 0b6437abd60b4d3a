/* SPDX-License-Identifier: MIT */
/* LLaMA forward pass; see model.h. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/json.h"
#include "eval/model.h"
#include "eval/sinkstat.h"
#include "eval/util.h"
#include <kvsink.h>

#define MM_ROWS 8
#define MM_TILE 256

/* ---- loading ---- */

/* A token id member that may be absent, null or a list (first element). */
static int token_id(const kvs__json *root, const char *key, uint32_t vocab, uint32_t *out)
{
  const kvs__json *v = kvs__json_get(root, key);
  if (v && v->type == KVS_J_ARR && v->n > 0)
    v = v->items[0];
  if (!v || v->type == KVS_J_NULL) {
    *out = UINT32_MAX;
    return 0;
  }
  if (v->type != KVS_J_NUM || v->num < 0 || v->num >= vocab || v->num != (uint32_t)v->num)
    return -EINVAL;
  *out = (uint32_t)v->num;
  return 0;
}

int kvs__model_load_config(kvs__mcfg *c, const char *dir, char *errmsg)
{
  char path[4096], *text = NULL;
  size_t len;
  kvs__json *root = NULL;
  long v[7];
  double eps = 1e-6, theta = 10000.0; /* transformers' LlamaConfig defaults */
  static const char *const keys[] = {"vocab_size", "hidden_size", "intermediate_size",
                                     "num_hidden_layers", "num_attention_heads",
                                     "num_key_value_heads", "max_position_embeddings"};
  static const long hi[] = {1 << 22, 1 << 16, 1 << 18, 1024, 1024, 1024, 1 << 24};
  snprintf(path, sizeof path, "%s/config.json", dir);
  int r = kvs__read_file(path, 1 << 20, &text, &len);
  if (r < 0) {
    snprintf(errmsg, 256, "%.200s: %s", path, strerror(-r));
    return r;
  }
  if ((r = kvs__json_parse(text, len, &root, errmsg)) < 0)
    goto out;
  r = -EINVAL;
  const kvs__json *mt = kvs__json_get(root, "model_type");
  if (!mt || mt->type != KVS_J_STR || (strcmp(mt->str, "llama") && strcmp(mt->str, "mistral"))) {
    snprintf(errmsg, 256, "config.json: model_type is not \"llama\" or \"mistral\"");
    goto out;
  }
  for (int i = 0; i < 7; i++) {
    /* older LLaMA configs have no num_key_value_heads: one per head */
    if (i == 5 && !kvs__json_get(root, keys[i])) {
      v[5] = v[4];
      continue;
    }
    if (kvs__json_get_int(root, keys[i], 1, hi[i], &v[i]) < 0) {
      snprintf(errmsg, 256, "config.json: %s missing or out of range", keys[i]);
      goto out;
    }
  }
  c->vocab = (uint32_t)v[0];
  c->hidden = (uint32_t)v[1];
  c->inter = (uint32_t)v[2];
  c->n_layers = (uint32_t)v[3];
  c->n_heads = (uint32_t)v[4];
  c->n_kv_heads = (uint32_t)v[5];
  c->max_pos = (uint32_t)v[6];
  if (token_id(root, "bos_token_id", c->vocab, &c->bos) < 0 ||
      token_id(root, "eos_token_id", c->vocab, &c->eos) < 0) {
    snprintf(errmsg, 256, "config.json: bos_token_id / eos_token_id out of range");
    goto out;
  }
  long hd = c->hidden / c->n_heads;
  const kvs__json *hdj = kvs__json_get(root, "head_dim");
  if (hdj && hdj->type != KVS_J_NULL && kvs__json_get_int(root, "head_dim", 2, 1024, &hd) < 0) {
    snprintf(errmsg, 256, "config.json: head_dim out of range");
    goto out;
  }
  c->head_dim = (uint32_t)hd;
  if ((kvs__json_get(root, "rms_norm_eps") && kvs__json_get_num(root, "rms_norm_eps", &eps) < 0) ||
      (kvs__json_get(root, "rope_theta") && kvs__json_get_num(root, "rope_theta", &theta) < 0) ||
      !(eps > 0 && eps < 1) || !(theta > 1)) {
    snprintf(errmsg, 256, "config.json: rms_norm_eps / rope_theta out of range");
    goto out;
  }
  c->eps = (float)eps;
  c->rope_theta = (float)theta;
  /* what this forward pass does not compute is refused, not approximated */
  const kvs__json *rs = kvs__json_get(root, "rope_scaling");
  const kvs__json *act = kvs__json_get(root, "hidden_act");
  const kvs__json *ab = kvs__json_get(root, "attention_bias");
  const kvs__json *mb = kvs__json_get(root, "mlp_bias");
  if ((rs && rs->type != KVS_J_NULL) || (act && (act->type != KVS_J_STR || strcmp(act->str, "silu"))) ||
      (ab && ab->type == KVS_J_TRUE) || (mb && mb->type == KVS_J_TRUE)) {
    snprintf(errmsg, 256, "config.json: rope_scaling, a hidden_act other than silu, or biases are not supported");
    goto out;
  }
  const kvs__json *tie = kvs__json_get(root, "tie_word_embeddings");
  c->tied = tie && tie->type == KVS_J_TRUE;
  if (c->n_heads % c->n_kv_heads || c->head_dim % 2) {
    snprintf(errmsg, 256, "config.json: heads/kv heads/head_dim inconsistent");
    goto out;
  }
  r = 0;
out:
  kvs__json_free(root);
  free(text);
  return r;
}

static float elem(const kvs__st_tensor *t, uint64_t i)
{
  if (t->dtype == KVS_ST_F32) {
    float f;
    memcpy(&f, (const char *)t->data + 4 * i, 4);
    return f;
  }
  uint16_t h;
  float f;
  memcpy(&h, (const char *)t->data + 2 * i, 2);
  if (t->dtype == KVS_ST_BF16)
    kvs_bf16_to_f32(&f, &h, 1);
  else
    kvs_f16_to_f32(&f, &h, 1);
  return f;
}

/* Tensor name of shape [rows][cols] (or [rows] when cols == 0) as fp32;
 * transposed to [cols][rows] when transpose is set. */
static int fetch(const kvs__stset *st, const char *name, uint32_t rows, uint32_t cols, int transpose,
                 float **out, char *errmsg)
{
  const kvs__st_tensor *t = kvs__stset_find(st, name);
  if (!t) {
    snprintf(errmsg, 256, "checkpoint: %s missing", name);
    return -EINVAL;
  }
  if ((cols == 0 && (t->ndim != 1 || t->shape[0] != rows)) ||
      (cols != 0 && (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols))) {
    snprintf(errmsg, 256, "checkpoint: %s has the wrong shape", name);
    return -EINVAL;
  }
  size_t c = cols ? cols : 1;
  float *f = malloc((size_t)rows * c * sizeof *f);
  if (!f)
    return -ENOMEM;
  for (size_t i = 0; i < rows; i++)
    for (size_t j = 0; j < c; j++) {
      float x = elem(t, i * c + j);
      if (!isfinite(x)) {
        free(f);
        snprintf(errmsg, 256, "checkpoint: %s holds NaN/Inf", name);
        return -EINVAL;
      }
      if (transpose)
        f[j * rows + i] = x;
      else
        f[i * c + j] = x;
    }
  *out = f;
  return 0;
}

int kvs__model_load(kvs__model *m, const char *dir, char *errmsg)
{
  kvs__stset st;
  char name[256];
  int r;
  memset(m, 0, sizeof *m);
  if ((r = kvs__model_load_config(&m->cfg, dir, errmsg)) < 0)
    return r;
  if ((r = kvs__stset_open(&st, dir, errmsg)) < 0)
    return r;
  const kvs__mcfg *c = &m->cfg;
  uint32_t D = c->hidden, F = c->inter, QD = c->n_heads * c->head_dim,
           KD = c->n_kv_heads * c->head_dim;
  m->layers = calloc(c->n_layers, sizeof *m->layers);
  if (!m->layers) {
    r = -ENOMEM;
    goto out;
  }
  if ((r = fetch(&st, "model.embed_tokens.weight", c->vocab, D, 0, &m->embed, errmsg)) < 0 ||
      (r = fetch(&st, "model.norm.weight", D, 0, 0, &m->norm, errmsg)) < 0 ||
      (r = fetch(&st, c->tied ? "model.embed_tokens.weight" : "lm_head.weight", c->vocab, D, 1,
                 &m->lm_head_t, errmsg)) < 0)
    goto out;
  for (uint32_t l = 0; l < c->n_layers; l++) {
    kvs__mlayer *L = &m->layers[l];
    struct { const char *n; uint32_t rows, cols; int tr; float **dst; } w[] = {
      {"input_layernorm", D, 0, 0, &L->ln1},
      {"post_attention_layernorm", D, 0, 0, &L->ln2},
      {"self_attn.q_proj", QD, D, 1, &L->wq},
      {"self_attn.k_proj", KD, D, 1, &L->wk},
      {"self_attn.v_proj", KD, D, 1, &L->wv},
      {"self_attn.o_proj", D, QD, 1, &L->wo},
      {"mlp.gate_proj", F, D, 1, &L->wg},
      {"mlp.up_proj", F, D, 1, &L->wu},
      {"mlp.down_proj", D, F, 1, &L->wd},
    };
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
      snprintf(name, sizeof name, "model.layers.%u.%s.weight", l, w[i].n);
      if ((r = fetch(&st, name, w[i].rows, w[i].cols, w[i].tr, w[i].dst, errmsg)) < 0)
        goto out;
    }
  }
  /* The id names the exact weights: caches of retrained models never mix. */
  const char *base;
  size_t blen = strlen(dir);
  while (blen > 1 && dir[blen - 1] == '/')
    blen--;
  base = dir;
  for (size_t i = 0; i + 1 < blen; i++)
    if (dir[i] == '/')
      base = dir + i + 1;
  int bl = (int)(blen - (size_t)(base - dir));
  if (bl > 60)
    bl = 60;
  snprintf(m->model_id, sizeof m->model_id, "%.*s-%08llx", bl, base,
           (unsigned long long)(st.id_hash & 0xffffffffu));
  r = 0;
out:
  kvs__stset_close(&st);
  if (r < 0)
    kvs__model_free(m);
  return r;
}

void kvs__model_free(kvs__model *m)
{
  for (uint32_t l = 0; m->layers && l < m->cfg.n_layers; l++) {
    kvs__mlayer *L = &m->layers[l];
    free(L->ln1); free(L->ln2); free(L->wq); free(L->wk); free(L->wv);
    free(L->wo); free(L->wg); free(L->wu); free(L->wd);
  }
  free(m->layers);
  free(m->embed);
  free(m->lm_head_t);
  free(m->norm);
  memset(m, 0, sizeof *m);
}

/* ---- math ---- */

/* y[n][out] = x[n][in] . wt[in][out]; blocked so the accumulator tile and
 * a row of wt stay in L1 and the inner loop vectorizes. */
static void matmul(float *restrict y, const float *restrict x, const float *restrict wt,
                   size_t n, size_t in, size_t out)
{
  float acc[MM_ROWS][MM_TILE];
  for (size_t i0 = 0; i0 < n; i0 += MM_ROWS) {
    size_t ni = n - i0 < MM_ROWS ? n - i0 : MM_ROWS;
    for (size_t j0 = 0; j0 < out; j0 += MM_TILE) {
      size_t nj = out - j0 < MM_TILE ? out - j0 : MM_TILE;
      for (size_t r = 0; r < ni; r++)
        memset(acc[r], 0, nj * sizeof(float));
      for (size_t k = 0; k < in; k++) {
        const float *w = wt + k * out + j0;
        for (size_t r = 0; r < ni; r++) {
          float a = x[(i0 + r) * in + k];
          float *ac = acc[r];
          for (size_t j = 0; j < nj; j++)
            ac[j] += a * w[j];
        }
      }
      for (size_t r = 0; r < ni; r++)
        memcpy(y + (i0 + r) * out + j0, acc[r], nj * sizeof(float));
    }
  }
}

static void rmsnorm(float *y, const float *x, const float *w, size_t n, size_t d, float eps)
{
  for (size_t i = 0; i < n; i++) {
    const float *xi = x + i * d;
    float ss = 0;
    for (size_t j = 0; j < d; j++)
      ss += xi[j] * xi[j];
    float s = 1.0f / sqrtf(ss / (float)d + eps);
    for (size_t j = 0; j < d; j++)
      y[i * d + j] = xi[j] * s * w[j];
  }
}

/* HF rotate_half: pairs (i, i + hd/2), angle pos * theta^(-2i/hd) in fp32. */
static void rope(float *v, uint32_t n_heads, uint32_t hd, uint32_t pos, float theta)
{
  uint32_t half = hd / 2;
  for (uint32_t i = 0; i < half; i++) {
    float inv = 1.0f / powf(theta, (float)(2 * i) / (float)hd);
    float ang = (float)pos * inv, cs = cosf(ang), sn = sinf(ang);
    for (uint32_t h = 0; h < n_heads; h++) {
      float *x = v + (size_t)h * hd;
      float a = x[i], b = x[i + half];
      x[i] = a * cs - b * sn;
      x[i + half] = b * cs + a * sn;
    }
  }
}

typedef struct fwd_buf {
  float *x, *xn, *q, *k, *v, *att, *o, *g, *u, *logits, *kf, *vf, *sc, *act;
  uint16_t *k16, *v16, *kp, *vp;
} fwd_buf;

static void buf_free(fwd_buf *b)
{
  free(b->x); free(b->xn); free(b->q); free(b->k); free(b->v); free(b->att); free(b->o);
  free(b->g); free(b->u); free(b->logits); free(b->kf); free(b->vf); free(b->sc);
  free(b->act); free(b->k16); free(b->v16); free(b->kp); free(b->vp);
}

static int buf_init(fwd_buf *b, const kvs__mcfg *c, uint32_t G, uint32_t n)
{
  size_t D = c->hidden, QD = (size_t)c->n_heads * c->head_dim,
         KD = (size_t)c->n_kv_heads * c->head_dim;
  memset(b, 0, sizeof *b);
  b->x = malloc(G * D * 4); b->xn = malloc(G * D * 4); b->o = malloc(G * D * 4);
  b->q = malloc(G * QD * 4); b->att = malloc(G * QD * 4);
  b->k = malloc(G * KD * 4); b->v = malloc(G * KD * 4);
  b->g = malloc(G * (size_t)c->inter * 4); b->u = malloc(G * (size_t)c->inter * 4);
  b->logits = malloc(G * (size_t)c->vocab * 4);
  b->kf = malloc(n * KD * 4); b->vf = malloc(n * KD * 4);
  b->sc = malloc(n * 4);
  b->k16 = malloc(G * KD * 2); b->v16 = malloc(G * KD * 2);
  b->kp = malloc(n * KD * 2); b->vp = malloc(n * KD * 2);
  if (!b->x || !b->xn || !b->o || !b->q || !b->att || !b->k || !b->v || !b->g || !b->u ||
      !b->logits || !b->kf || !b->vf || !b->sc || !b->k16 || !b->v16 || !b->kp || !b->vp) {
    buf_free(b);
    return -ENOMEM;
  }
  return 0;
}

/* Causal attention of the chunk's queries (positions start..start+G-1)
 * over kf/vf rows 0..start+i. */
static void attend(const kvs__mcfg *c, fwd_buf *b, uint32_t start, uint32_t G, double *recv,
                   uint32_t n_ctx)
{
  uint32_t hd = c->head_dim, H = c->n_heads, rep = c->n_heads / c->n_kv_heads;
  size_t KD = (size_t)c->n_kv_heads * hd;
  float scale = 1.0f / sqrtf((float)hd);
  for (uint32_t i = 0; i < G; i++) {
    uint32_t len = start + i + 1;
    for (uint32_t h = 0; h < H; h++) {
      const float *q = b->q + ((size_t)i * H + h) * hd;
      size_t koff = (size_t)(h / rep) * hd;
      float mx = -INFINITY;
      for (uint32_t j = 0; j < len; j++) {
        const float *k = b->kf + j * KD + koff;
        float s = 0;
        for (uint32_t d = 0; d < hd; d++)
          s += q[d] * k[d];
        s *= scale;
        b->sc[j] = s;
        if (s > mx)
          mx = s;
      }
      float sum = 0;
      for (uint32_t j = 0; j < len; j++) {
        b->sc[j] = expf(b->sc[j] - mx);
        sum += b->sc[j];
      }
      float inv = 1.0f / sum;
      float *o = b->att + ((size_t)i * H + h) * hd;
      memset(o, 0, hd * sizeof *o);
      for (uint32_t j = 0; j < len; j++) {
        float a = b->sc[j] * inv;
        const float *v = b->vf + j * KD + koff;
        for (uint32_t d = 0; d < hd; d++)
          o[d] += a * v[d];
        if (recv && start + i >= j + KVS_SINK_MIN_DIST)
          recv[(size_t)h * n_ctx + j] += a;
      }
    }
  }
}

/* One decode step through io->attend: the cache's [0, start) as the
 * cache attends over it (output and log-denominator per head), merged
 * with the token's own 16-bit K/V (row 0 of kf/vf) the way attend()
 * weighs it, so only summation order differs from get-then-attend. */
static int attend_io(const kvs__mcfg *c, fwd_buf *b, const kvs__kvio *io, uint32_t l,
                     uint32_t start)
{
  uint32_t hd = c->head_dim, H = c->n_heads, rep = c->n_heads / c->n_kv_heads;
  float scale = 1.0f / sqrtf((float)hd);
  float *lse = malloc(sizeof(float) * H);
  if (!lse)
    return -ENOMEM;
  int r = 0;
  if (start > 0) {
    r = io->attend(io->ctx, l, start, b->q, H, b->att, lse);
  } else { /* no past: the token attends to itself alone */
    for (uint32_t h = 0; h < H; h++)
      lse[h] = -INFINITY;
    memset(b->att, 0, sizeof(float) * H * hd);
  }
  for (uint32_t h = 0; r == 0 && h < H; h++) {
    const float *q = b->q + (size_t)h * hd, *k = b->kf + (size_t)(h / rep) * hd;
    const float *v = b->vf + (size_t)(h / rep) * hd;
    float s = 0;
    for (uint32_t d = 0; d < hd; d++)
      s += q[d] * k[d];
    s *= scale;
    float mx = lse[h] > s ? lse[h] : s;
    float wp = expf(lse[h] - mx), ws = expf(s - mx), inv = 1.0f / (wp + ws);
    float *o = b->att + (size_t)h * hd;
    for (uint32_t d = 0; d < hd; d++)
      o[d] = (o[d] * wp + v[d] * ws) * inv;
  }
  free(lse);
  return r;
}

int kvs__model_forward(const kvs__model *m, const uint32_t *tokens, uint32_t n, uint32_t chunk,
                       const kvs__kvio *io, kvs__fwd_out *out)
{
  const kvs__mcfg *c = &m->cfg;
  fwd_buf b;
  int r;
  size_t D = c->hidden, F = c->inter, V = c->vocab, QD = (size_t)c->n_heads * c->head_dim,
         KD = (size_t)c->n_kv_heads * c->head_dim;
  if (n == 0 || chunk == 0 || n > c->max_pos ||
      (io->attend && (chunk != 1 || out->att_recv)))
    return -EINVAL;
  for (uint32_t t = 0; t < n; t++)
    if (tokens[t] >= c->vocab)
      return -EINVAL;
  if ((r = buf_init(&b, c, chunk, n)) < 0)
    return r;
  for (uint32_t start = 0; start < n; start += chunk) {
    uint32_t G = n - start < chunk ? n - start : chunk;
    for (uint32_t i = 0; i < G; i++)
      memcpy(b.x + i * D, m->embed + (size_t)tokens[start + i] * D, D * sizeof(float));
    for (uint32_t l = 0; l < c->n_layers; l++) {
      const kvs__mlayer *L = &m->layers[l];
      rmsnorm(b.xn, b.x, L->ln1, G, D, c->eps);
      matmul(b.q, b.xn, L->wq, G, D, QD);
      matmul(b.k, b.xn, L->wk, G, D, KD);
      matmul(b.v, b.xn, L->wv, G, D, KD);
      for (uint32_t i = 0; i < G; i++) {
        rope(b.q + i * QD, c->n_heads, c->head_dim, start + i, c->rope_theta);
        rope(b.k + i * KD, c->n_kv_heads, c->head_dim, start + i, c->rope_theta);
      }
      /* the cache holds model-dtype K/V: the chunk uses the same rounding */
      kvs_f16_from_f32(b.k16, b.k, (size_t)G * KD);
      kvs_f16_from_f32(b.v16, b.v, (size_t)G * KD);
      if (io->past_first && !io->attend && start > 0 &&
          (r = io->get(io->ctx, l, start, b.kp, b.vp)) < 0)
        goto out;
      if ((r = io->put(io->ctx, l, start, G, tokens + start, b.k16, b.v16)) < 0)
        goto out;
      if (io->attend) {
        kvs_f16_to_f32(b.kf, b.k16, KD);
        kvs_f16_to_f32(b.vf, b.v16, KD);
        if ((r = attend_io(c, &b, io, l, start)) < 0)
          goto out;
      } else {
        if (!io->past_first && start > 0 && (r = io->get(io->ctx, l, start, b.kp, b.vp)) < 0)
          goto out;
        kvs_f16_to_f32(b.kf, b.kp, (size_t)start * KD);
        kvs_f16_to_f32(b.vf, b.vp, (size_t)start * KD);
        kvs_f16_to_f32(b.kf + (size_t)start * KD, b.k16, (size_t)G * KD);
        kvs_f16_to_f32(b.vf + (size_t)start * KD, b.v16, (size_t)G * KD);
        attend(c, &b, start, G, out->att_recv ? out->att_recv + (size_t)l * c->n_heads * n : NULL,
               n);
      }
      matmul(b.o, b.att, L->wo, G, QD, D);
      for (size_t e = 0; e < G * D; e++)
        b.x[e] += b.o[e];
      rmsnorm(b.xn, b.x, L->ln2, G, D, c->eps);
      matmul(b.g, b.xn, L->wg, G, D, F);
      matmul(b.u, b.xn, L->wu, G, D, F);
      for (size_t e = 0; e < G * F; e++) {
        float g = b.g[e];
        b.g[e] = g / (1.0f + expf(-g)) * b.u[e];
      }
      matmul(b.o, b.g, L->wd, G, F, D);
      for (size_t e = 0; e < G * D; e++)
        b.x[e] += b.o[e];
      if (out->hidden)
        memcpy(out->hidden + ((size_t)l * n + start) * D, b.x, G * D * sizeof(float));
      if (io->summary && io->summary_layer == (int)l &&
          (r = io->summary(io->ctx, start, G, tokens + start, b.x)) < 0)
        goto out;
    }
    if (!out->logits && !out->nll)
      continue;
    rmsnorm(b.xn, b.x, m->norm, G, D, c->eps);
    matmul(b.logits, b.xn, m->lm_head_t, G, D, V);
    if (out->logits)
      memcpy(out->logits + (size_t)start * V, b.logits, G * V * sizeof(float));
    for (uint32_t i = 0; out->nll && i < G && start + i + 1 < n; i++) {
      const float *lg = b.logits + i * V;
      double mx = lg[0], s = 0;
      for (size_t j = 1; j < V; j++)
        if (lg[j] > mx)
          mx = lg[j];
      for (size_t j = 0; j < V; j++)
        s += exp(lg[j] - mx);
      out->nll[start + i] = mx + log(s) - lg[tokens[start + i + 1]];
    }
  }
  r = 0;
out:
  buf_free(&b);
  return r;
}

/* ---- local fp16 cache ---- */

static int local_put(void *ctx, uint32_t layer, uint32_t start, uint32_t n,
                     const uint32_t *tokens, const uint16_t *k, const uint16_t *v)
{
  kvs__localkv *l = ctx;
  (void)tokens;
  if (layer >= l->n_layers || start > l->max_tokens || n > l->max_tokens - start)
    return -EINVAL;
  size_t off = ((size_t)layer * l->max_tokens + start) * l->channels;
  memcpy(l->k + off, k, (size_t)n * l->channels * 2);
  memcpy(l->v + off, v, (size_t)n * l->channels * 2);
  return 0;
}

static int local_get(void *ctx, uint32_t layer, uint32_t n, uint16_t *k, uint16_t *v)
{
  kvs__localkv *l = ctx;
  if (layer >= l->n_layers || n > l->max_tokens)
    return -EINVAL;
  size_t off = (size_t)layer * l->max_tokens * l->channels;
  memcpy(k, l->k + off, (size_t)n * l->channels * 2);
  memcpy(v, l->v + off, (size_t)n * l->channels * 2);
  return 0;
}

int kvs__localkv_init(kvs__localkv *l, const kvs__model *m, uint32_t max_tokens, kvs__kvio *io)
{
  l->n_layers = m->cfg.n_layers;
  l->channels = m->cfg.n_kv_heads * m->cfg.head_dim;
  l->max_tokens = max_tokens;
  size_t sz = (size_t)l->n_layers * max_tokens * l->channels * 2;
  l->k = malloc(sz);
  l->v = malloc(sz);
  if (!l->k || !l->v) {
    kvs__localkv_free(l);
    return -ENOMEM;
  }
  memset(io, 0, sizeof *io);
  io->ctx = l;
  io->put = local_put;
  io->get = local_get;
  io->summary_layer = -1;
  return 0;
}

void kvs__localkv_free(kvs__localkv *l)
{
  free(l->k);
  free(l->v);
  l->k = l->v = NULL;
}
