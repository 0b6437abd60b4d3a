/* SPDX-License-Identifier: MIT */
/* The put (Decisions 3-6, 17, 18), in phases: validate, predict, plan,
 * reserve (with the residual rows staged), quantize, commit. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

static uint64_t res_size(uint32_t rows, uint32_t C) { return (uint64_t)rows * C * 2u * 2u; }

static void res_account(kvs__seq *q, uint64_t add, uint64_t sub)
{
  q->res_bytes = q->res_bytes + add - sub;
  q->sp->st->res_bytes = q->sp->st->res_bytes + add - sub;
}

/* One block a put needs: found in the index (pinned) or freshly claimed. */
typedef kvs__claim job;

typedef struct plan {
  uint32_t L0, L1, nb1;
  uint32_t rcap1;               /* append: residual rows of capacity needed */
  uint16_t *rk, *rv;            /* new residual buffers (owned until commit) */
  int fresh_res;
  int append;                   /* no shift: new rows go after the old ones */
} plan;

/* A put in progress. Input k / v / act point into client-writable memory:
 * every byte the store uses is copied once into its own memory and checked
 * there (Decision 17); nothing reads the input twice. */
typedef struct put {
  kvs__seq *q;
  kvs__space *sp;
  kvs__store *st;
  uint32_t start, n, lb, le, nlp, end, ntok1, G, C, nl;
  const uint32_t *tokens;
  const uint16_t *k, *v;
  const float *act;
  uint32_t act_ch;
  int kdev;                     /* k, v, act are device memory (kvs__seq_put_dev) */
  char *errmsg;
  uint8_t *pred;                /* predicted sinks of [known, known1) */
  uint8_t *fill;                /* first positions filled, [0, known1) (Decision 39) */
  uint32_t known1, npred, nfill, ndrop, limit;
  plan *pl;
  job *jobs;
  kvs__block **fresh;           /* the fresh blocks, in job order */
  uint64_t *gmask;              /* sink mask of group g0 + i (all layers share it) */
  uint32_t g0;
  uint32_t njobs, maxnb, nfresh;
  uint32_t nchain;              /* groups whose chain hash is in q->chain */
  kvs__qitem *qa;               /* dev items waiting for quantize_start */
  uint32_t nqa, nqueued;
  int queued;                   /* quantize_start called: wait before freeing */
  int feed;                     /* the backend's kernel runs and takes blocks as they come */
} put;

/* Fresh blocks whose rows all come from a device put are queued on the
 * GPU in chunks as soon as they are claimed and have slots (backend
 * quantize_start), so the kernels and the host work on later groups
 * overlap; one wait at the end (Decisions 36, 50). The backend may ask
 * for another chunk size (queue_chunk, A/B runs). */
#ifndef KVS_PUT_CHUNK
#define KVS_PUT_CHUNK 256u
#endif
/* With a feed (quantize_open, Decision 51) blocks are handed over as
 * each group is claimed: a hand-over costs no launch. Puts of fewer
 * blocks than KVS_PUT_FEED_MIN launch per chunk as before. */
#define KVS_PUT_FEED_CHUNK 32u
#define KVS_PUT_FEED_MIN 64u

static void jobs_undo(put *c)
{
  for (uint32_t i = 0; i < c->njobs; i++) {
    if (!c->jobs[i].b)
      continue;
    if (c->jobs[i].fresh)
      kvs__blk_unclaim(c->jobs[i].b);
    else
      kvs__blk_unref(c->jobs[i].b);
    c->jobs[i].b = NULL;
  }
}

static int put_validate(put *c)
{
  kvs__seq *q = c->q;
  kvs__space *sp = c->sp;
  if (c->lb > c->le || c->le > c->nl)
    return kvs__fail(c->errmsg, -EINVAL, "layer range [%u, %u) outside 0..%u", c->lb, c->le, c->nl);
  if (c->n > KVS_STORE_MAX_TOKENS)
    return kvs__fail(c->errmsg, -EINVAL, "%u tokens in one put (max %u)", c->n, KVS_STORE_MAX_TOKENS);
  if (c->n && !c->tokens)
    return kvs__fail(c->errmsg, -EINVAL, "no token ids");
  if (c->n && c->nlp && (!c->k || !c->v))
    return kvs__fail(c->errmsg, -EINVAL, "no K/V data");
  if ((uint64_t)c->start + c->n > UINT32_MAX - KVS_QBLOCK_MAX_G)
    return kvs__fail(c->errmsg, -EINVAL, "position overflow");
  for (uint32_t l = c->lb; l < c->le; l++)
    if (q->l[l].len != c->start)
      return kvs__fail(c->errmsg, -EINVAL, "start %u but layer %u holds %u tokens", c->start, l,
                  q->l[l].len);
  if (c->start > q->ntok)
    return kvs__fail(c->errmsg, -EINVAL, "start %u leaves a gap after %u known tokens", c->start,
                q->ntok);
  for (uint32_t i = 0; i < c->n && c->start + i < q->ntok; i++)
    if (q->tok[c->start + i] != c->tokens[i])
      return kvs__fail(c->errmsg, -EINVAL, "token id at position %u differs from the seq's",
                  c->start + i);
  if (c->act && sp->has_prof && c->act_ch != sp->prof.n_channels)
    return kvs__fail(c->errmsg, -EINVAL, "activation summary has %u channels, profile %u", c->act_ch,
                sp->prof.n_channels);
  if (sp->has_prof && c->act && c->n && c->start > q->known)
    return kvs__fail(c->errmsg, -EINVAL, "activation summary at %u leaves a gap after %u", c->start,
                q->known);
  return 0;
}

/* Tokens a sequence keeps in 16 bits under KVSINK with a profile
 * (Decision 39): the first pfn positions and max_sinks more. */
static uint32_t put_budget(const kvs__space *sp)
{
  return sp->key.pfn + sp->prof.max_sinks;
}

/* Sinks of the new tokens from a copy of the activation summary, then,
 * in the put that makes the first group's flags known, the fill: the
 * budget the predicted sinks left goes to the first positions not yet
 * protected (Decision 39). Order: (1) predict over this put's summary
 * with what is left of the budget after the first pfn positions and
 * the sinks of earlier puts (largest first; a position below pfn is
 * protected already and is no candidate); (2) fill, once per sequence,
 * before any layer can quantize group 0 (it needs known >= G, which
 * this put reaches for the first time); (3) plan and quantize. After
 * the fill the budget is spent: later sinks are dropped (counted). */
static int put_predict(put *c)
{
  kvs__seq *q = c->q;
  kvs__space *sp = c->sp;
  c->known1 = q->known;
  c->limit = sp->has_prof ? q->known : UINT32_MAX;
  if (!(sp->has_prof && c->act && c->n) || c->end <= q->known)
    return 0;
  uint32_t off = q->known - c->start, m = c->end - q->known, ch = c->act_ch;
  float *a = malloc((size_t)m * ch * sizeof(*a));
  c->pred = calloc(m, 1);
  if (!a || !c->pred) {
    free(a);
    return kvs__fail(c->errmsg, -ENOMEM, "out of memory");
  }
  /* A summary in device memory comes over in one small copy (a few floats
   * a token): one rule, in one place, for both paths (Decisions 13, 22). */
  if (c->kdev) {
    int cr = kvs__backend_copy(c->st->be, a, c->act + (size_t)off * ch, (size_t)m * ch * sizeof(*a), 0);
    if (cr < 0) {
      free(a);
      return kvs__fail(c->errmsg, cr, "copying the activation summary from the device failed");
    }
  } else {
    memcpy(a, c->act + (size_t)off * ch, (size_t)m * ch * sizeof(*a));
  }
  /* Rows below pfn are protected anyway: checked, then no candidates. */
  for (uint32_t t = q->known; t < c->end && t < sp->key.pfn; t++) {
    float *r = a + (size_t)(t - q->known) * ch;
    for (uint32_t j = 0; j < ch; j++)
      if (!isfinite(r[j])) {
        free(a);
        return kvs__fail(c->errmsg, KVS_ENAN, "NaN or Inf in the activation summary");
      }
    memset(r, 0, ch * sizeof(*r));
  }
  const uint32_t B = put_budget(sp), used = sp->key.pfn + q->npred;
  uint32_t budget = B > used ? B - used : 0;
  int rc = kvs__predict_sinks(a, m, ch, sp->prof.tau, budget, c->pred);
  if (rc < 0) {
    free(a);
    return kvs__fail(c->errmsg, rc, rc == KVS_ENAN ? "NaN or Inf in the activation summary"
                                              : "sink prediction failed (out of memory)");
  }
  c->npred = (uint32_t)rc;
  uint32_t cand = 0;
  for (uint32_t t = 0; t < m; t++) {
    float mx = 0;
    for (uint32_t j = 0; j < ch; j++)
      mx = fmaxf(mx, fabsf(a[(size_t)t * ch + j]));
    cand += mx > sp->prof.tau;
  }
  free(a);
  c->ndrop = cand > c->npred ? cand - c->npred : 0;
  c->known1 = c->end;
  c->limit = c->known1;
  if (q->known < c->G && c->known1 >= c->G && used + c->npred < B) {
    /* No layer holds group 0 quantized yet (known < G kept it in the
     * residual), so flags below known may still be set. */
    uint32_t left = B - used - c->npred;
    c->fill = calloc(c->known1, 1);
    if (!c->fill)
      return kvs__fail(c->errmsg, -ENOMEM, "out of memory");
    for (uint32_t t = sp->key.pfn; t < c->known1 && left; t++) {
      int prot = t < q->known ? q->flag[t] : c->pred[t - q->known];
      if (!prot) {
        c->fill[t] = 1;
        c->nfill++;
        left--;
      }
    }
  }
  return 0;
}

/* Per layer: new length, groups quantized, pending rows, residual bytes. */
static int put_plan(put *c)
{
  kvs__seq *q = c->q;
  kvs__store *st = c->st;
  c->pl = calloc(c->nl, sizeof(*c->pl));
  if (!c->pl)
    return kvs__fail(c->errmsg, -ENOMEM, "out of memory");
  c->maxnb = q->nchain;
  uint64_t add = 0;
  for (uint32_t l = 0; l < c->nl; l++) {
    plan *p = &c->pl[l];
    kvs__seq_layer *L = &q->l[l];
    p->L0 = L->len;
    p->L1 = l >= c->lb && l < c->le ? c->end : p->L0;
    p->nb1 = (p->L1 < c->limit ? p->L1 : c->limit) / c->G;
    if (p->nb1 < L->nblk)
      p->nb1 = L->nblk;
    uint32_t pend = p->L1 - p->nb1 * c->G;
    if (pend > st->max_pending)
      return kvs__fail(c->errmsg, -E2BIG, "layer %u would hold %u pending 16-bit tokens (max %u)", l,
                  pend, st->max_pending);
    c->njobs += p->nb1 - L->nblk;
    if (p->nb1 > c->maxnb)
      c->maxnb = p->nb1;
    if ((p->L1 == p->L0 && p->nb1 == L->nblk))
      continue;
    if (pend && p->nb1 == L->nblk) {
      /* Decode-style appends grow in place, doubling. */
      p->append = 1;
      p->rcap1 = L->rcap;
      if (pend > p->rcap1) {
        p->rcap1 = p->rcap1 ? p->rcap1 : 2u * c->G;
        while (p->rcap1 < pend)
          p->rcap1 *= 2;
        /* 2G rows in page-locked memory where the backend has it
         * (res_grow) */
        if (p->rcap1 < 2u * c->G && st->be->host_alloc)
          p->rcap1 = 2u * c->G;
        add += res_size(p->rcap1 - L->rcap, c->C);
      }
    } else {
      add += res_size(pend, c->C);
    }
  }
  /* The peak holds old and new buffers both, so the bound counts both. */
  if (add && q->res_bytes + add > st->res_seq_max)
    return kvs__fail(c->errmsg, -E2BIG,
                "16-bit residual of this sequence would take %llu bytes (max %llu)",
                (unsigned long long)(q->res_bytes + add), (unsigned long long)st->res_seq_max);
  if (add && st->res_bytes + add > st->res_max)
    return kvs__fail(c->errmsg, -ENOSPC,
                "16-bit residual of all sequences would take %llu bytes (max %llu)",
                (unsigned long long)(st->res_bytes + add), (unsigned long long)st->res_max);
  return 0;
}

/* Input row t of layer l (t >= start). */
static const uint16_t *in_row(const put *c, const uint16_t *x, uint32_t l, uint32_t t)
{
  return x + ((size_t)(l - c->lb) * c->n + (t - c->start)) * c->C;
}

/* Copy input rows [t, t + rows) of layer l (contiguous) to host dst and
 * check the copy: 0, KVS_ENAN, or -EIO when device memory could not be
 * read. Host input is copied and checked in one pass (each value loaded
 * once from the client's memory: store/rows.c). */
static int in_copy(const put *c, uint16_t *dst, const uint16_t *x, uint32_t l, uint32_t t,
                   uint32_t rows)
{
  size_t n = (size_t)rows * c->C;
  kvs_dtype dt = c->sp->qp.dtype;
  if (!c->kdev)
    return kvs__copy_finite(dst, in_row(c, x, l, t), n, dt) ? KVS_ENAN : 0;
  if (kvs__backend_copy(c->st->be, dst, in_row(c, x, l, t), n * 2u, 0) < 0)
    return -EIO;
  return kvs__has_nonfinite(dst, n, dt) ? KVS_ENAN : 0;
}

/* in_copy of K and V, with the error message. */
static int in_copy_kv(put *c, uint16_t *dk, uint16_t *dv, uint32_t l, uint32_t t, uint32_t rows)
{
  int r = in_copy(c, dk, c->k, l, t, rows);
  if (r == 0) r = in_copy(c, dv, c->v, l, t, rows);
  if (r == KVS_ENAN) return kvs__fail(c->errmsg, KVS_ENAN, "NaN or Inf in K/V");
  if (r < 0) return kvs__fail(c->errmsg, -EIO, "copy from device memory failed");
  return 0;
}

/* Grow layer L's residual to cap rows, keeping its rows [0, keep), and
 * count the new bytes. Room for 2G rows comes from page-locked memory
 * the backend's kernels read in place where there is some (a decode
 * step's residual: the step that completes the group quantizes it
 * without a copy up, store/resbuf.c), else from realloc. On failure the
 * layer is as it was. */
static int res_grow(put *c, kvs__seq_layer *L, uint32_t cap, uint32_t keep)
{
  kvs__store *st = c->st;
  const size_t rb = (size_t)c->C * 2u, bytes = (size_t)cap * rb;
  const uint32_t old = L->rcap;
  uint16_t *nk = NULL, *nv = NULL;
  int pin = 0;
  if (cap == 2u * c->G && (nk = kvs__resbuf_get(&st->resbuf, st->be, bytes)) &&
      !(nv = kvs__resbuf_get(&st->resbuf, st->be, bytes))) {
    kvs__resbuf_put(&st->resbuf, nk, bytes);
    nk = NULL;
  }
  if (nk) {
    pin = 1;
  } else if (!L->rpin) {
    /* contents kept, so a later failure leaves the seq as it was */
    nk = realloc(L->rk, bytes);
    if (!nk)
      return -ENOMEM;
    L->rk = nk;
    nv = realloc(L->rv, bytes);
    if (!nv)
      return -ENOMEM;
    L->rv = nv;
    res_account(c->q, res_size(cap - old, c->C), 0);
    L->rcap = cap;
    return 0;
  } else if (!(nk = malloc(bytes)) || !(nv = malloc(bytes))) {
    free(nk);
    return -ENOMEM;
  }
  if (keep) {
    memcpy(nk, L->rk, (size_t)keep * rb);
    memcpy(nv, L->rv, (size_t)keep * rb);
  }
  kvs__res_free(st, L, c->C);
  L->rk = nk;
  L->rv = nv;
  L->rpin = (uint32_t)pin;
  res_account(c->q, res_size(cap - old, c->C), 0);
  L->rcap = cap;
  return 0;
}

/* Copy the rows that stay 16-bit into the seq's own memory and check the
 * copy; nothing visible changes (rows past a layer's length are scratch). */
static int put_stage_residual(put *c)
{
  kvs__seq *q = c->q;
  const uint32_t C = c->C, G = c->G;
  const size_t rb = (size_t)C * 2u;
  for (uint32_t l = 0; l < c->nl; l++) {
    plan *p = &c->pl[l];
    kvs__seq_layer *L = &q->l[l];
    uint32_t pend = p->L1 - p->nb1 * G, nb0 = L->nblk;
    if ((p->L1 == p->L0 && p->nb1 == nb0) || pend == 0)
      continue;
    uint16_t *dk, *dv;
    uint32_t first;          /* first staged row that came from the input */
    if (p->append) {
      if (p->rcap1 > L->rcap && res_grow(c, L, p->rcap1, p->L0 - nb0 * G) < 0)
        return kvs__fail(c->errmsg, -ENOMEM, "out of memory");
      dk = L->rk;
      dv = L->rv;
      first = p->L0 - nb0 * G;
      int r = in_copy_kv(c, dk + (size_t)first * C, dv + (size_t)first * C, l, p->L0,
                         p->L1 - p->L0);
      if (r < 0)
        return r;
    } else {
      p->rk = malloc((size_t)pend * rb);
      p->rv = malloc((size_t)pend * rb);
      p->fresh_res = 1;
      if (!p->rk || !p->rv)
        return kvs__fail(c->errmsg, -ENOMEM, "out of memory");
      res_account(q, res_size(pend, C), 0);
      dk = p->rk;
      dv = p->rv;
      first = pend;
      for (uint32_t r = 0; r < pend && p->nb1 * G + r < p->L0; r++) {
        uint32_t t = p->nb1 * G + r;
        memcpy(dk + (size_t)r * C, L->rk + (size_t)(t - nb0 * G) * C, rb);
        memcpy(dv + (size_t)r * C, L->rv + (size_t)(t - nb0 * G) * C, rb);
      }
      /* the rows from this put are contiguous: one copy per tensor */
      uint32_t t0 = p->nb1 * G > p->L0 ? p->nb1 * G : p->L0;
      if (t0 < p->L1) {
        first = t0 - p->nb1 * G;
        int r = in_copy_kv(c, dk + (size_t)first * C, dv + (size_t)first * C, l, t0, p->L1 - t0);
        if (r < 0)
          return r;
      }
    }
  }
  return 0;
}

static int grow_seq(put *c)
{
  kvs__seq *q = c->q;
  if (kvs__grow((void **)&q->tok, &q->tokcap, c->ntok1, sizeof(*q->tok)) < 0 ||
      kvs__grow((void **)&q->chain, &q->chaincap, c->maxnb, sizeof(*q->chain)) < 0)
    return -ENOMEM;
  void *f = realloc(q->flag, q->tokcap ? q->tokcap : 1);
  if (!f)
    return -ENOMEM;
  q->flag = f;
  for (uint32_t l = 0; l < c->nl; l++)
    if (kvs__grow((void **)&q->l[l].blk, &q->l[l].blkcap, c->pl[l].nb1, sizeof(kvs__block *)) < 0)
      return -ENOMEM;
  return 0;
}

/* Input row t of layer l (t >= start). */
static const uint16_t *in_row(const put *c, const uint16_t *x, uint32_t l, uint32_t t);

/* Bit r set when f[r] (G <= 64 flags); most groups have none, found by
 * words (the per-row loop was half of a bulk put's own time). */
static uint64_t flag_bits(const uint8_t *f, uint32_t G)
{
  uint64_t any = 0, w, mask = 0;
  uint32_t r = 0;
  for (; r + 8 <= G; r += 8) {
    memcpy(&w, f + r, 8);
    any |= w;
  }
  for (; r < G; r++)
    any |= f[r];
  for (r = 0; any && r < G; r++)
    mask |= (uint64_t)(f[r] != 0) << r;
  return mask;
}

/* Queue the collected dev items (c->qa) on the backend. */
static int put_start(put *c)
{
  kvs__backend *be = c->st->be;
  c->queued = 1; /* from now on the slots may be written: wait before undo */
  const uint64_t t = kvs__prof_now(c->st);
  int rc = be->quantize_start(be, &c->sp->qp, c->qa, c->nqa);
  if (c->st->prof) {
    c->st->prof->ns[KVS_PROF_PUT_QUEUE] += kvs__prof_now(c->st) - t;
    c->st->prof->calls[KVS_PROF_PUT_QUEUE]++;
  }
  c->nqa = 0;
  return rc < 0 ? kvs__fail(c->errmsg, rc, "quantization failed") : 0;
}

/* A fresh block whose rows all come from this device put: quantized
 * from the device input, queued (quantize_start) as soon as its slots are
 * reserved when the backend can. */
static int dev_block(const put *c, const kvs__block *b)
{
  return c->kdev && b->grp->g * c->G >= c->pl[b->layer].L0;
}

static int queues(const put *c) { return c->kdev && c->st->be->quantize_start; }

/* Blocks per quantize_start call. */
static uint32_t chunk(const put *c)
{
  const uint32_t n = c->st->be->queue_chunk;
  return n && n <= KVS_BATCH_DEV_MAX ? n : c->feed ? KVS_PUT_FEED_CHUNK : KVS_PUT_CHUNK;
}

/* Queue fresh blocks [from, to) that can go (dev_block). */
static int put_queue(put *c, uint32_t from, uint32_t to)
{
  if (!queues(c))
    return 0;
  if (!c->qa && !(c->qa = malloc(chunk(c) * sizeof *c->qa)))
    return kvs__fail(c->errmsg, -ENOMEM, "out of memory");
  for (uint32_t i = from; i < to; i++) {
    kvs__block *b = c->fresh[i];
    if (!dev_block(c, b))
      continue;
    const uint32_t l = b->layer, t0 = b->grp->g * c->G;
    c->qa[c->nqa++] = (kvs__qitem){in_row(c, c->k, l, t0), in_row(c, c->v, l, t0), b->sink_mask,
                                   b->data, b->rows, 1};
    c->nqueued++;
    if (c->nqa == chunk(c)) {
      int rc = put_start(c);
      if (rc < 0)
        return rc;
    }
  }
  return 0;
}

/* Sink flags of group g's rows as a mask: the seq's, this put's
 * predicted ones and the fill. */
static uint64_t group_mask(const put *c, uint32_t g)
{
  const kvs__seq *q = c->q;
  const uint32_t G = c->G;
  uint64_t mask = flag_bits(&q->flag[(size_t)g * G], G);
  for (uint32_t r = 0; (c->pred || c->fill) && r < G; r++) {
    uint32_t t = g * G + r;
    int f = (c->pred && t >= q->known && c->pred[t - q->known]) ||
            (c->fill && t < c->known1 && c->fill[t]);
    mask |= (uint64_t)f << r;
  }
  return mask;
}

/* The chain hashes of groups [c->nchain, end) (end capped at maxnb). */
static void put_chain(put *c, uint32_t end)
{
  kvs__seq *q = c->q;
  if (end > c->maxnb)
    end = c->maxnb;
  for (uint32_t g = c->nchain; g < end; g++)
    q->chain[g] = kvs__chain_next(c->sp, g ? &q->chain[g - 1] : NULL, &q->tok[(size_t)g * c->G]);
  if (end > c->nchain)
    c->nchain = end;
}

/* put_chain timed as the chain phase; the clock after it. */
static uint64_t put_chain_lap(put *c, uint32_t end, uint64_t tp)
{
  if (c->nchain >= end || c->nchain >= c->maxnb)
    return tp;
  tp = kvs__prof_add(c->st, KVS_PROF_PUT_FIND, tp);
  put_chain(c, end);
  return kvs__prof_add(c->st, KVS_PROF_PUT_CHAIN, tp);
}

/* Slots (evicting) for fresh blocks [i, e), then their kernels queued. */
static int put_slots(put *c, uint32_t i, uint32_t e)
{
  int rc = kvs__blk_slots(c->fresh + i, e - i);
  if (rc == -ENOSPC) {
    c->st->put_nospc++;
    return kvs__fail(c->errmsg, rc, "pool full: no block can be evicted");
  }
  if (rc < 0)
    return kvs__fail(c->errmsg, rc, "out of memory");
  return put_queue(c, i, e);
}

/* Capacity, scratch ids / flags / chain, staged residuals, then the blocks:
 * hits pinned first (so reserving cannot evict them), then fresh slots. */
static int put_reserve(put *c)
{
  kvs__seq *q = c->q;
  kvs__space *sp = c->sp;
  const uint32_t G = c->G;
  uint64_t tp = kvs__prof_now(c->st);
  if (grow_seq(c) < 0)
    return kvs__fail(c->errmsg, -ENOMEM, "out of memory");
  /* Scratch beyond ntok / nchain is invisible until the commit. */
  if (c->ntok1 > q->ntok) {
    memcpy(&q->tok[q->ntok], &c->tokens[q->ntok - c->start], (size_t)(c->ntok1 - q->ntok) * 4u);
    memset(&q->flag[q->ntok], 0, c->ntok1 - q->ntok);
    for (uint32_t t = q->ntok; t < c->ntok1 && kvs__pfn_flag(sp, t); t++)
      q->flag[t] = 1;
  }
  /* a device put that queues its kernels hashes its groups as it claims
   * them (put_chain), so the first chunk's kernels start after its own
   * hashes, not after all of them */
  c->nchain = q->nchain;
  const int early = queues(c) && !c->st->be->queue_late;
  if (!early)
    put_chain(c, c->maxnb);
  tp = kvs__prof_add(c->st, KVS_PROF_PUT_CHAIN, tp);
  int rc = put_stage_residual(c);
  if (rc < 0)
    return rc;
  tp = kvs__prof_add(c->st, KVS_PROF_PUT_RESIDUAL, tp);

  c->jobs = malloc((c->njobs ? c->njobs : 1) * sizeof(*c->jobs));
  c->fresh = malloc((c->njobs ? c->njobs : 1) * sizeof(*c->fresh));
  c->g0 = c->maxnb;
  for (uint32_t l = 0; l < c->nl; l++)
    if (q->l[l].nblk < c->pl[l].nb1 && q->l[l].nblk < c->g0)
      c->g0 = q->l[l].nblk;
  c->gmask = malloc((c->maxnb - c->g0 + 1) * sizeof(*c->gmask));
  c->njobs = 0; /* counts the jobs laid out, which jobs_undo walks */
  if (!c->jobs || !c->fresh || !c->gmask)
    return kvs__fail(c->errmsg, -ENOMEM, "out of memory");
  for (uint32_t g = c->g0; g < c->maxnb; g++)
    c->gmask[g - c->g0] = group_mask(c, g);
  /* by group, then layer: one index probe serves a group's layers (and
   * each layer still gets its groups in order, for put_commit) */
  for (uint32_t g = c->g0; g < c->maxnb; g++)
    for (uint32_t l = 0; l < c->nl; l++)
      if (g >= q->l[l].nblk && g < c->pl[l].nb1)
        c->jobs[c->njobs++] = (job){.layer = l, .g = g};
  /* every group may file a record: room first, so that filing cannot fail */
  if (kvs__index_reserve(c->st->ix, c->maxnb - c->g0) < 0)
    return kvs__fail(c->errmsg, -ENOMEM, "out of memory");
  /* a bulk device put starts the GPU's side now (a feed), so its
   * kernel is running when the first group's blocks are handed over */
  if (early && c->st->be->quantize_open && c->njobs >= KVS_PUT_FEED_MIN) {
    c->queued = 1; /* open or not, wait before returning */
    rc = c->st->be->quantize_open(c->st->be, &sp->qp, c->njobs);
    if (rc < 0)
      return kvs__fail(c->errmsg, rc, "quantization failed");
    c->feed = rc == 1;
    tp = kvs__prof_add(c->st, KVS_PROF_PUT_NEW, tp);
  }
  const kvs__h128 none = {0, 0};
  /* index slots at random places of a large table: asked for a few
   * groups ahead, so that their cache misses overlap */
  tp = put_chain_lap(c, c->g0 + KVS_PREFETCH_AHEAD, tp);
  for (uint32_t g = c->g0; g < c->maxnb && g < c->g0 + KVS_PREFETCH_AHEAD; g++)
    kvs__grp_prefetch(c->st, q->chain[g]);
  /* One probe per group: a hit is pinned (so reserving cannot evict
   * it), a miss gets its record attached to the group at once
   * (kvs__blk_claim_run). A device put that queues reserves the slots
   * of each chunk of fresh blocks and queues its kernels as soon as the
   * chunk is claimed, so the GPU works while later groups are hashed and
   * probed (Decision 50: a later group's hit may then be evicted by an
   * earlier chunk's slots and quantized again, which costs time, not
   * correctness); other puts pin every hit first. */
  uint32_t slotted = 0;
  for (uint32_t i = 0, e; i < c->njobs; i = e) {
    const uint32_t g = c->jobs[i].g;
    for (e = i + 1; e < c->njobs && c->jobs[e].g == g; e++)
      ;
    if (g + KVS_PREFETCH_AHEAD < c->maxnb) {
      tp = put_chain_lap(c, g + KVS_PREFETCH_AHEAD + 1, tp);
      kvs__grp_prefetch(c->st, q->chain[g + KVS_PREFETCH_AHEAD]);
    }
    int taken;
    const uint64_t tg = kvs__prof_now(c->st);
    kvs__group *grp = kvs__grp_claim(sp, q->chain[g], g ? q->chain[g - 1] : none, g,
                                     &q->tok[(size_t)g * G], 0, &taken);
    if (c->st->prof)
      c->st->prof->ns[KVS_PROF_PUT_GROUP] += kvs__prof_now(c->st) - tg;
    if (!grp)
      return kvs__fail(c->errmsg, -ENOMEM, "out of memory");
    kvs__block **f = c->fresh + c->nfresh;
    rc = kvs__blk_claim_run(grp, c->jobs + i, e - i, c->gmask[g - c->g0], &f);
    c->nfresh = (uint32_t)(f - c->fresh);
    if (!grp->nblk)
      kvs__grp_release(grp);
    if (rc < 0)
      return kvs__fail(c->errmsg, rc, "out of memory");
    tp = kvs__prof_add(c->st, KVS_PROF_PUT_FIND, tp);
    if (early && c->nfresh - slotted >= chunk(c)) {
      if ((rc = put_slots(c, slotted, slotted + chunk(c))) < 0)
        return rc;
      slotted += chunk(c);
      tp = kvs__prof_add(c->st, KVS_PROF_PUT_NEW, tp);
    }
  }
  tp = put_chain_lap(c, c->maxnb, tp);
  /* Slots (evicting) of the rest, a chunk at a time: each chunk's kernels
   * are queued before the next chunk is reserved. */
  for (uint32_t i = slotted; i < c->nfresh; i += chunk(c)) {
    uint32_t e = c->nfresh - i < chunk(c) ? c->nfresh : i + chunk(c);
    if ((rc = put_slots(c, i, e)) < 0)
      return rc;
  }
  if (c->nqa && (rc = put_start(c)) < 0)
    return rc;
  kvs__prof_add(c->st, KVS_PROF_PUT_NEW, tp);
  return 0;
}

/* Quantize the fresh blocks not queued yet (put_queue), each from a tile
 * copied once (old residual rows below L0, this put's input above) and
 * checked before use, or, on the device path, straight from the device
 * input (the segment or the daemon's copy of it).
 * A batch call takes up to KVS_BATCH_MAX host tiles; a backend that reads
 * device memory takes up to KVS_BATCH_DEV_MAX blocks per call, so a bulk
 * device put is one launch and one synchronize (Decision 36). */
static int put_quantize(put *c)
{
  const uint32_t nfresh = c->nfresh - c->nqueued; /* the queued ones are on their way */
  if (!nfresh)
    return 0;
  kvs__seq *q = c->q;
  const uint32_t G = c->G, C = c->C;
  const uint32_t cap = c->kdev && c->st->be->dev_io ? KVS_BATCH_DEV_MAX : KVS_BATCH_MAX;
  const uint32_t nb = nfresh < cap ? nfresh : cap;
  const uint32_t nt = nb < KVS_BATCH_MAX ? nb : KVS_BATCH_MAX; /* host tiles */
  const size_t tile = (size_t)G * C, rb = (size_t)C * 2u;
  uint16_t *gk = NULL, *gv = NULL;
  kvs__qitem *items = malloc(nb * sizeof *items);
  int rc = 0;
  uint64_t tq = kvs__prof_now(c->st), tkern = 0;
  /* host tiles only when some block needs one (allocated on first use) */
  if (!items)
    rc = kvs__fail(c->errmsg, -ENOMEM, "out of memory");
  uint32_t m = 0, mh = 0;
  for (uint32_t i = 0; i < c->njobs && rc == 0; i++) {
    if (c->jobs[i].fresh && !(queues(c) && dev_block(c, c->jobs[i].b))) {
      uint32_t l = c->jobs[i].layer, base = q->l[l].nblk * G, t0 = c->jobs[i].g * G;
      kvs__block *b = c->jobs[i].b;
      if (c->kdev && t0 >= c->pl[l].L0) {
        /* all rows from this put, already checked on the device: quantize
         * from the daemon's device copy, no host round trip */
        items[m++] = (kvs__qitem){in_row(c, c->k, l, t0), in_row(c, c->v, l, t0), b->sink_mask,
                                  b->data, b->rows, 1};
      } else {
        /* the layer's residual holds rows [base, L0) in a row, and rows
         * past its length are scratch (put_stage_residual): with room for
         * the whole group there, the tile is made in place (a decode
         * step's G-th token: no copy of the G - 1 rows before it) */
        kvs__seq_layer *R = &q->l[l];
        int in_place = R->rk && t0 - base + G <= R->rcap;
        if (!in_place && !gk) {
          gk = malloc(nt * tile * 2u);
          gv = malloc(nt * tile * 2u);
          if (!gk || !gv) {
            rc = kvs__fail(c->errmsg, -ENOMEM, "out of memory");
            break;
          }
        }
        uint16_t *tk = in_place ? R->rk + (size_t)(t0 - base) * C : gk + mh * tile;
        uint16_t *tv = in_place ? R->rv + (size_t)(t0 - base) * C : gv + mh * tile;
        uint32_t r = c->pl[l].L0 > t0 ? c->pl[l].L0 - t0 : 0; /* rows from the residual */
        if (r > G)
          r = G;
        for (uint32_t j = 0; j < r && !in_place; j++) {
          memcpy(tk + (size_t)j * C, R->rk + (size_t)(t0 + j - base) * C, rb);
          memcpy(tv + (size_t)j * C, R->rv + (size_t)(t0 + j - base) * C, rb);
        }
        /* rows below r are residual rows, checked when they were staged */
        if (r < G && (rc = in_copy_kv(c, tk + (size_t)r * C, tv + (size_t)r * C, l, t0 + r,
                                      G - r)) < 0)
          break;
        /* a page-locked residual is read where it is (dev) */
        const int pinned = in_place && R->rpin && c->st->be->dev_io;
        items[m++] = (kvs__qitem){tk, tv, b->sink_mask, b->data, b->rows, pinned};
        mh += !pinned;
      }
    }
    if (m == nb || mh == nt || (m && i + 1 == c->njobs)) {
      uint64_t t1 = kvs__prof_now(c->st);
      rc = kvs__backend_quantize_n(c->st->be, &c->sp->qp, items, m);
      tkern += kvs__prof_now(c->st) - t1;
      m = mh = 0;
      if (rc < 0)
        rc = kvs__fail(c->errmsg, rc, rc == KVS_ENAN ? "NaN or Inf in K/V" : "quantization failed");
    }
  }
  free(items);
  free(gk);
  free(gv);
  if (c->st->prof) {
    c->st->prof->ns[KVS_PROF_PUT_ITEMS] += kvs__prof_now(c->st) - tq - tkern;
    c->st->prof->calls[KVS_PROF_PUT_ITEMS]++;
    c->st->prof->ns[KVS_PROF_PUT_KERNEL] += tkern;
    c->st->prof->calls[KVS_PROF_PUT_KERNEL]++;
  }
  return rc;
}

/* Wait for the queued blocks (put_start): their status decides too. */
static int put_wait(put *c, int rc)
{
  if (!c->queued)
    return rc;
  kvs__backend *be = c->st->be;
  uint64_t t = kvs__prof_now(c->st);
  int w = be->quantize_wait(be);
  c->queued = 0;
  if (c->st->prof) {
    c->st->prof->ns[KVS_PROF_PUT_KERNEL] += kvs__prof_now(c->st) - t;
    c->st->prof->calls[KVS_PROF_PUT_KERNEL]++;
  }
  if (rc == 0 && w < 0)
    rc = kvs__fail(c->errmsg, w, w == KVS_ENAN ? "NaN or Inf in K/V" : "quantization failed");
  return rc;
}

/* Make the put visible: nothing here can fail. */
static void put_commit(put *c, kvs__put_info *info)
{
  kvs__seq *q = c->q;
  kvs__store *st = c->st;
  uint32_t newsinks = 0;
  for (uint32_t t = q->ntok; t < c->ntok1; t++)
    newsinks += q->flag[t];
  if (c->pred)
    for (uint32_t t = q->known; t < c->known1; t++)
      if (c->pred[t - q->known] && !q->flag[t]) {
        q->flag[t] = 1;
        newsinks++;
      }
  if (c->fill)
    for (uint32_t t = 0; t < c->known1; t++)
      if (c->fill[t] && !q->flag[t]) {
        q->flag[t] = 1;
        newsinks++;
      }
  for (uint32_t l = 0; l < c->nl; l++) {
    plan *p = &c->pl[l];
    kvs__seq_layer *L = &q->l[l];
    uint32_t pend = p->L1 - p->nb1 * c->G;
    if ((p->L1 == p->L0 && p->nb1 == L->nblk) || p->append)
      continue;
    /* a decode step that completed a group: its residual buffer (room
     * for 2G rows) stays as the next group's, so the next steps neither
     * allocate nor fault it in again (it stays counted as residual) */
    if (pend == 0 && !p->rk && L->rk && L->rcap <= 2u * c->G)
      continue;
    res_account(q, 0, res_size(L->rcap, c->C));
    kvs__res_free(c->st, L, c->C);
    L->rk = p->rk;
    L->rv = p->rv;
    L->rcap = pend;
    p->rk = p->rv = NULL;
    p->fresh_res = 0;
  }
  for (uint32_t i = 0; i < c->njobs; i++) {
    kvs__seq_layer *L = &q->l[c->jobs[i].layer];
    L->blk[L->nblk++] = c->jobs[i].b;
  }
  /* filed in their groups already (kvs__blk_claim_run) */
  kvs__blk_publish_n(c->fresh, c->nfresh, q->tok);
  for (uint32_t l = 0; l < c->nl; l++)
    q->l[l].len = c->pl[l].L1;
  q->ntok = c->ntok1;
  q->known = c->known1;
  q->npred += c->npred + c->nfill;
  if (c->maxnb > q->nchain)
    q->nchain = c->maxnb;
  st->puts++;
  st->bytes_in += (uint64_t)c->nlp * c->n * c->C * 2u * 2u;
  st->sinks_found += newsinks;
  st->sinks_dropped += c->ndrop;
  if (info) {
    uint32_t ref = c->lb < c->nl ? c->lb : 0, qe = q->l[ref].nblk * c->G;
    info->quantized = qe > c->start ? (qe < c->end ? qe : c->end) - c->start : 0;
    info->sinks = newsinks;
    info->seq_len = kvs__seq_len(q);
  }
}

static void put_release(put *c)
{
  if (c->pl)
    for (uint32_t l = 0; l < c->nl; l++)
      if (c->pl[l].fresh_res) {
        if (c->pl[l].rk && c->pl[l].rv)
          res_account(c->q, 0, res_size(c->pl[l].L1 - c->pl[l].nb1 * c->G, c->C));
        free(c->pl[l].rk);
        free(c->pl[l].rv);
      }
  free(c->pl);
  free(c->jobs);
  free(c->fresh);
  free(c->gmask);
  free(c->qa);
  free(c->pred);
  free(c->fill);
}

static int seq_put(kvs__seq *q, uint32_t start, const uint32_t *tokens, uint32_t n,
                   uint32_t lb, uint32_t le, const uint16_t *k, const uint16_t *v,
                   const float *act, uint32_t act_ch, int kdev, kvs__put_info *info,
                   char *errmsg)
{
  if (errmsg)
    errmsg[0] = 0;
  if (!q)
    return -EINVAL;
  put c = {.q = q, .sp = q->sp, .st = q->sp->st, .start = start, .n = n, .lb = lb, .le = le,
           .nlp = le - lb, .end = start + n, .G = q->sp->qp.group, .C = q->sp->qp.channels,
           .nl = q->sp->key.n_layers, .tokens = tokens, .k = k, .v = v, .act = act,
           .act_ch = act_ch, .kdev = kdev, .errmsg = errmsg};
  const uint64_t t0 = kvs__prof_now(c.st);
  int rc = put_validate(&c);
  if (rc == 0 && kdev && !c.st->be->dev_io)
    rc = kvs__fail(errmsg, -EOPNOTSUPP, "the %s backend cannot read device memory",
                   c.st->be->name);
  if (rc < 0)
    return rc;
  uint64_t t = kvs__prof_add(c.st, KVS_PROF_PUT_CHECK, t0);
  c.ntok1 = c.end > q->ntok ? c.end : q->ntok;
  if ((rc = put_predict(&c)) == 0) {
    t = kvs__prof_add(c.st, KVS_PROF_PUT_PREDICT, t);
    rc = put_plan(&c);
  }
  if (rc == 0) {
    kvs__prof_add(c.st, KVS_PROF_PUT_PLAN, t);
    rc = put_reserve(&c); /* its own phases, as put_quantize */
  }
  if (rc == 0)
    rc = put_quantize(&c);
  rc = put_wait(&c, rc); /* before anything frees a slot a kernel writes */
  if (c.st->prof)
    c.st->prof->put_blocks += c.nfresh;
  if (rc == 0) {
    t = kvs__prof_now(c.st);
    put_commit(&c, info);
    kvs__prof_add(c.st, KVS_PROF_PUT_COMMIT, t);
  } else if (c.jobs) {
    jobs_undo(&c);
  }
  put_release(&c);
  kvs__prof_add(c.st, KVS_PROF_PUT, t0);
  return rc;
}


int kvs__seq_put(kvs__seq *q, uint32_t start, const uint32_t *tokens, uint32_t n,
                 uint32_t lb, uint32_t le, const uint16_t *k, const uint16_t *v,
                 const float *act, uint32_t act_ch, kvs__put_info *info, char *errmsg)
{
  return seq_put(q, start, tokens, n, lb, le, k, v, act, act_ch, 0, info, errmsg);
}

int kvs__seq_put_dev(kvs__seq *q, uint32_t start, const uint32_t *tokens, uint32_t n,
                     uint32_t lb, uint32_t le, const uint16_t *k, const uint16_t *v,
                     const float *act, uint32_t act_ch, kvs__put_info *info, char *errmsg)
{
  return seq_put(q, start, tokens, n, lb, le, k, v, act, act_ch, 1, info, errmsg);
}
