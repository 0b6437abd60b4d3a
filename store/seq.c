/* Sequences: put (Decisions 3-6), get and lookup (Decision 7). */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

static int fail(char *errmsg, int rc, const char *fmt, ...)
{
  if (errmsg) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errmsg, KVS_MAX_ERRMSG, fmt, ap);
    va_end(ap);
  }
  return rc;
}

/* Grow *p (elements of size sz) to hold at least n; contents kept. */
static int grow(void **p, uint32_t *cap, uint32_t n, size_t sz)
{
  if (n <= *cap)
    return 0;
  uint32_t c = *cap ? *cap : 16;
  while (c < n)
    c = c > UINT32_MAX / 2 ? n : c * 2;
  void *q = realloc(*p, (size_t)c * sz);
  if (!q)
    return -ENOMEM;
  *p = q;
  *cap = c;
  return 0;
}

int kvs__seq_new(kvs__space *sp, kvs__seq **out)
{
  if (!sp || !out)
    return -EINVAL;
  kvs__seq *q = calloc(1, sizeof(*q));
  if (!q)
    return -ENOMEM;
  q->l = calloc(sp->key.n_layers, sizeof(*q->l));
  if (!q->l) {
    free(q);
    return -ENOMEM;
  }
  q->sp = sp;
  sp->refs++;
  sp->seqs++;
  kvs__store *st = sp->st;
  st->nseqs++;
  q->next = st->seqs;
  if (st->seqs)
    st->seqs->prev = q;
  st->seqs = q;
  *out = q;
  return 0;
}

void kvs__seq_free(kvs__seq *q)
{
  if (!q)
    return;
  kvs__space *sp = q->sp;
  kvs__store *st = sp->st;
  for (uint32_t l = 0; l < sp->key.n_layers; l++) {
    for (uint32_t i = 0; i < q->l[l].nblk; i++)
      kvs__blk_unref(q->l[l].blk[i]);
    free(q->l[l].blk);
    free(q->l[l].rk);
    free(q->l[l].rv);
  }
  if (q->prev)
    q->prev->next = q->next;
  else
    st->seqs = q->next;
  if (q->next)
    q->next->prev = q->prev;
  st->nseqs--;
  sp->seqs--;
  free(q->l);
  free(q->tok);
  free(q->flag);
  free(q->chain);
  free(q);
  kvs__space_unref_internal(sp);
}

uint32_t kvs__seq_len(const kvs__seq *q)
{
  uint32_t m = UINT32_MAX;
  for (uint32_t l = 0; l < q->sp->key.n_layers; l++)
    if (q->l[l].len < m)
      m = q->l[l].len;
  return m;
}

static int pfn_flag(const kvs__space *sp, uint32_t t)
{
  return sp->key.policy != KVS_POLICY_NONE && t < sp->key.pfn;
}

static int has_nonfinite(const uint16_t *x, size_t n, kvs_dtype dt)
{
  uint16_t e = dt == KVS_DTYPE_BF16 ? 0x7f80u : 0x7c00u;
  for (size_t i = 0; i < n; i++)
    if ((x[i] & e) == e)
      return 1;
  return 0;
}

/* One block a put needs: found in the index (pinned) or freshly reserved. */
typedef struct job {
  uint32_t layer, g;
  kvs__block *b;
  int fresh;
} job;

static void block_drop(kvs__store *st, kvs__block *b)
{
  if (b->data)
    kvs__pool_free(st->pool, b->data);
  for (uint32_t i = 0; i < b->n_sinks; i++)
    if (b->rows[i])
      kvs__pool_free(st->pool, b->rows[i]);
  free(b);
}

static void jobs_undo(kvs__store *st, job *jobs, uint32_t n)
{
  for (uint32_t i = 0; i < n; i++) {
    if (!jobs[i].b)
      continue;
    if (jobs[i].fresh)
      block_drop(st, jobs[i].b);
    else
      kvs__blk_unref(jobs[i].b);
  }
}

typedef struct plan {
  uint32_t L0, L1, nb1;
  uint16_t *rk, *rv;            /* new residual buffers (owned until commit) */
  int fresh_res;
  int append;                   /* no shift: new rows go after the old ones */
} plan;

int kvs__seq_put(kvs__seq *q, uint32_t start, const uint32_t *tokens, uint32_t n,
                 uint32_t lb, uint32_t le, const uint16_t *k, const uint16_t *v,
                 const float *act, uint32_t act_ch, kvs__put_info *info, char *errmsg)
{
  if (errmsg)
    errmsg[0] = 0;
  if (!q)
    return -EINVAL;
  kvs__space *sp = q->sp;
  kvs__store *st = sp->st;
  const uint32_t nl = sp->key.n_layers, G = sp->qp.group, C = sp->qp.channels;
  const uint32_t nlp = le - lb;

  /* Validate everything before touching anything. */
  if (lb > le || le > nl)
    return fail(errmsg, -EINVAL, "layer range [%u, %u) outside 0..%u", lb, le, nl);
  if (n > KVS_MAX_TOKENS_PER_PUT)
    return fail(errmsg, -EINVAL, "%u tokens in one put (max %u)", n, KVS_MAX_TOKENS_PER_PUT);
  if (n && !tokens)
    return fail(errmsg, -EINVAL, "no token ids");
  if (n && nlp && (!k || !v))
    return fail(errmsg, -EINVAL, "no K/V data");
  if ((uint64_t)start + n > UINT32_MAX - KVS_QBLOCK_MAX_G)
    return fail(errmsg, -EINVAL, "position overflow");
  for (uint32_t l = lb; l < le; l++)
    if (q->l[l].len != start)
      return fail(errmsg, -EINVAL, "start %u but layer %u holds %u tokens", start, l,
                  q->l[l].len);
  if (start > q->ntok)
    return fail(errmsg, -EINVAL, "start %u leaves a gap after %u known tokens", start, q->ntok);
  for (uint32_t i = 0; i < n && start + i < q->ntok; i++)
    if (q->tok[start + i] != tokens[i])
      return fail(errmsg, -EINVAL, "token id at position %u differs from the seq's",
                  start + i);
  const int ks = sp->has_prof;
  const int use_act = ks && act && n;
  if (act && ks && act_ch != sp->prof.n_channels)
    return fail(errmsg, -EINVAL, "activation summary has %u channels, profile %u", act_ch,
                sp->prof.n_channels);
  if (use_act && start > q->known)
    return fail(errmsg, -EINVAL, "activation summary at %u leaves a gap after %u", start,
                q->known);
  if (nlp && n && (has_nonfinite(k, (size_t)nlp * n * C, sp->qp.dtype) ||
                   has_nonfinite(v, (size_t)nlp * n * C, sp->qp.dtype)))
    return fail(errmsg, KVS_ENAN, "NaN or Inf in K/V");

  const uint32_t end = start + n, ntok1 = end > q->ntok ? end : q->ntok;
  uint8_t *pred = NULL;
  uint32_t known1 = q->known, npred = 0, ndrop = 0;
  int rc = 0;
  if (use_act && end > q->known) {
    uint32_t off = q->known - start, m = end - q->known;
    pred = calloc(m, 1);
    if (!pred)
      return fail(errmsg, -ENOMEM, "out of memory");
    uint32_t budget = sp->prof.max_sinks > q->npred ? sp->prof.max_sinks - q->npred : 0;
    const float *a = act + (size_t)off * act_ch;
    rc = kvs__predict_sinks(a, m, act_ch, sp->prof.tau, budget, pred);
    if (rc < 0) {
      free(pred);
      return fail(errmsg, rc, "NaN or Inf in the activation summary");
    }
    npred = (uint32_t)rc;
    rc = 0;
    uint32_t cand = 0;
    for (uint32_t t = 0; t < m; t++) {
      float mx = 0;
      for (uint32_t c = 0; c < act_ch; c++)
        mx = fmaxf(mx, fabsf(a[(size_t)t * act_ch + c]));
      cand += mx > sp->prof.tau;
    }
    ndrop = cand > npred ? cand - npred : 0;
    known1 = end;
  }
  const uint32_t limit = ks ? known1 : UINT32_MAX;

  /* Plan each layer: new length, groups quantized, pending rows. */
  plan *pl = calloc(nl, sizeof(*pl));
  job *jobs = NULL;
  uint32_t njobs = 0, maxnb = q->nchain, nfresh = 0, newsinks = 0;
  if (!pl) {
    free(pred);
    return fail(errmsg, -ENOMEM, "out of memory");
  }
  for (uint32_t l = 0; l < nl; l++) {
    plan *p = &pl[l];
    p->L0 = q->l[l].len;
    p->L1 = l >= lb && l < le ? end : p->L0;
    p->nb1 = (p->L1 < limit ? p->L1 : limit) / G;
    if (p->nb1 < q->l[l].nblk)
      p->nb1 = q->l[l].nblk;
    if (p->L1 - p->nb1 * G > q->sp->st->max_pending) {
      rc = fail(errmsg, -E2BIG, "layer %u would hold %u pending 16-bit tokens (max %u)", l,
                p->L1 - p->nb1 * G, q->sp->st->max_pending);
      goto out;
    }
    njobs += p->nb1 - q->l[l].nblk;
    if (p->nb1 > maxnb)
      maxnb = p->nb1;
  }

  /* Capacity first (no visible change): ids, flags, chain, block vectors. */
  if (grow((void **)&q->tok, &q->tokcap, ntok1, sizeof(*q->tok)) < 0 ||
      grow((void **)&q->chain, &q->chaincap, maxnb, sizeof(*q->chain)) < 0)
    goto nomem;
  {
    uint32_t fcap = q->tokcap;
    void *f = realloc(q->flag, fcap ? fcap : 1);
    if (!f)
      goto nomem;
    q->flag = f;
  }
  for (uint32_t l = 0; l < nl; l++)
    if (grow((void **)&q->l[l].blk, &q->l[l].blkcap, pl[l].nb1, sizeof(kvs__block *)) < 0)
      goto nomem;
  /* Scratch beyond ntok / nchain is invisible until the commit below. */
  for (uint32_t t = q->ntok; t < ntok1; t++) {
    q->tok[t] = tokens[t - start];
    q->flag[t] = (uint8_t)pfn_flag(sp, t);
  }
  for (uint32_t g = q->nchain; g < maxnb; g++)
    q->chain[g] = kvs__chain_next(sp, g ? &q->chain[g - 1] : NULL, &q->tok[(size_t)g * G]);

  /* New residual buffers. */
  for (uint32_t l = 0; l < nl; l++) {
    plan *p = &pl[l];
    uint32_t pend = p->L1 - p->nb1 * G;
    kvs__seq_layer *L = &q->l[l];
    if ((p->L1 == p->L0 && p->nb1 == L->nblk) || pend == 0)
      continue;
    if (p->nb1 == L->nblk) {
      /* Decode-style appends: grow in place (contents kept, so a later
       * failure leaves the seq as it was). */
      uint32_t cap = L->rcap;
      if (pend > cap) {
        cap = cap ? cap : 2u * G;
        while (cap < pend)
          cap *= 2;
        uint16_t *nk = realloc(L->rk, (size_t)cap * C * 2u);
        if (!nk)
          goto nomem;
        L->rk = nk;
        uint16_t *nv = realloc(L->rv, (size_t)cap * C * 2u);
        if (!nv)
          goto nomem;
        L->rv = nv;
        L->rcap = cap;
      }
      p->append = 1;
      continue;
    }
    p->rk = malloc((size_t)pend * C * 2u);
    p->rv = malloc((size_t)pend * C * 2u);
    p->fresh_res = 1;
    if (!p->rk || !p->rv)
      goto nomem;
  }

  jobs = calloc(njobs ? njobs : 1, sizeof(*jobs));
  if (!jobs)
    goto nomem;
  njobs = 0;
  for (uint32_t l = 0; l < nl; l++)
    for (uint32_t g = q->l[l].nblk; g < pl[l].nb1; g++)
      jobs[njobs++] = (job){.layer = l, .g = g};

  /* Pin what the index already has, so reserving cannot evict it. */
  for (uint32_t i = 0; i < njobs; i++) {
    kvs__ikey key = {q->chain[jobs[i].g], jobs[i].layer};
    kvs__block *b = kvs__index_find(st->ix, &key);
    if (b) {
      kvs__blk_ref(b);
      jobs[i].b = b;
    } else {
      nfresh++;
    }
  }
  if (kvs__index_reserve(st->ix, nfresh) < 0) {
    jobs_undo(st, jobs, njobs);
    goto nomem;
  }
  for (uint32_t i = 0; i < njobs; i++) {
    if (jobs[i].b)
      continue;
    uint64_t mask = 0;
    for (uint32_t r = 0; r < G; r++) {
      uint32_t t = jobs[i].g * G + r;
      int f = q->flag[t] || (pred && t >= q->known && pred[t - q->known]);
      mask |= (uint64_t)f << r;
    }
    uint32_t ns = (uint32_t)__builtin_popcountll(mask);
    kvs__block *b = calloc(1, sizeof(*b) + ns * sizeof(b->rows[0]));
    if (!b) {
      jobs_undo(st, jobs, njobs);
      goto nomem;
    }
    b->key = (kvs__ikey){q->chain[jobs[i].g], jobs[i].layer};
    b->sp = sp;
    b->sink_mask = mask;
    b->n_sinks = ns;
    jobs[i].b = b;
    jobs[i].fresh = 1;
    rc = kvs__store_reserve(st, sp->blk_cls, &b->data);
    for (uint32_t r = 0; rc == 0 && r < ns; r++)
      rc = kvs__store_reserve(st, sp->row_cls, (void **)&b->rows[r]);
    if (rc < 0) {
      jobs_undo(st, jobs, njobs);
      if (rc == -ENOSPC) {
        st->put_nospc++;
        rc = fail(errmsg, rc, "pool full: no block can be evicted");
      } else {
        rc = fail(errmsg, rc, "out of memory");
      }
      goto out;
    }
  }

  /* Quantize into the reserved slots; rows come from the old residual
   * (positions below L0) or from this put's input. */
  if (nfresh) {
    /* Gather each fresh block's rows into a tile, KVS_BATCH_MAX at a time. */
    const uint32_t nb = nfresh < KVS_BATCH_MAX ? nfresh : KVS_BATCH_MAX;
    const size_t tile = (size_t)G * C;
    uint16_t *gk = malloc(nb * tile * 2u), *gv = malloc(nb * tile * 2u);
    kvs__qitem *items = malloc(nb * sizeof *items);
    if (!gk || !gv || !items) {
      free(gk);
      free(gv);
      free(items);
      jobs_undo(st, jobs, njobs);
      goto nomem;
    }
    uint32_t m = 0;
    for (uint32_t i = 0; i < njobs && rc == 0; i++) {
      if (jobs[i].fresh) {
        uint32_t l = jobs[i].layer, base = q->l[l].nblk * G;
        uint16_t *tk = gk + m * tile, *tv = gv + m * tile;
        for (uint32_t r = 0; r < G; r++) {
          uint32_t t = jobs[i].g * G + r;
          const uint16_t *sk, *sv;
          if (t < pl[l].L0) {
            sk = q->l[l].rk + (size_t)(t - base) * C;
            sv = q->l[l].rv + (size_t)(t - base) * C;
          } else {
            size_t o = ((size_t)(l - lb) * n + (t - start)) * C;
            sk = k + o;
            sv = v + o;
          }
          memcpy(tk + (size_t)r * C, sk, (size_t)C * 2u);
          memcpy(tv + (size_t)r * C, sv, (size_t)C * 2u);
        }
        kvs__block *b = jobs[i].b;
        items[m++] = (kvs__qitem){tk, tv, b->sink_mask, b->data, b->rows};
      }
      if (m == nb || (m && i + 1 == njobs)) {
        rc = kvs__backend_quantize_n(st->be, &sp->qp, items, m);
        m = 0;
      }
    }
    free(items);
    free(gk);
    free(gv);
    if (rc < 0) {
      jobs_undo(st, jobs, njobs);
      rc = fail(errmsg, rc, rc == KVS_ENAN ? "NaN or Inf in K/V" : "quantization failed");
      goto out;
    }
  }

  /* Commit: nothing below can fail. */
  for (uint32_t t = q->ntok; t < ntok1; t++)
    newsinks += q->flag[t];
  if (pred)
    for (uint32_t t = q->known; t < known1; t++)
      if (pred[t - q->known] && !q->flag[t]) {
        q->flag[t] = 1;
        newsinks++;
      }
  for (uint32_t l = 0; l < nl; l++) {
    plan *p = &pl[l];
    kvs__seq_layer *L = &q->l[l];
    uint32_t pend = p->L1 - p->nb1 * G, nb0 = L->nblk;
    if (p->L1 == p->L0 && p->nb1 == nb0)
      continue;
    if (pend == 0) {
      free(L->rk);
      free(L->rv);
      L->rk = L->rv = NULL;
      L->rcap = 0;
      continue;
    }
    if (p->append) {
      for (uint32_t t = p->L0; t < p->L1; t++) {
        size_t o = ((size_t)(l - lb) * n + (t - start)) * C, d = (size_t)(t - nb0 * G) * C;
        memcpy(L->rk + d, k + o, (size_t)C * 2u);
        memcpy(L->rv + d, v + o, (size_t)C * 2u);
      }
      continue;
    }
    for (uint32_t r = 0; r < pend; r++) {
      uint32_t t = p->nb1 * G + r;
      const uint16_t *sk, *sv;
      if (t < p->L0) {
        sk = L->rk + (size_t)(t - nb0 * G) * C;
        sv = L->rv + (size_t)(t - nb0 * G) * C;
      } else {
        size_t o = ((size_t)(l - lb) * n + (t - start)) * C;
        sk = k + o;
        sv = v + o;
      }
      memcpy(p->rk + (size_t)r * C, sk, (size_t)C * 2u);
      memcpy(p->rv + (size_t)r * C, sv, (size_t)C * 2u);
    }
    free(L->rk);
    free(L->rv);
    L->rk = p->rk;
    L->rv = p->rv;
    L->rcap = pend;
    p->fresh_res = 0;
  }
  for (uint32_t i = 0; i < njobs; i++) {
    kvs__seq_layer *L = &q->l[jobs[i].layer];
    kvs__block *b = jobs[i].b;
    if (jobs[i].fresh) {
      b->refs = 1;
      kvs__blk_publish(b);
    }
    L->blk[L->nblk++] = b;
  }
  for (uint32_t l = 0; l < nl; l++)
    q->l[l].len = pl[l].L1;
  q->ntok = ntok1;
  q->known = known1;
  q->npred += npred;
  if (maxnb > q->nchain)
    q->nchain = maxnb;
  st->puts++;
  st->bytes_in += (uint64_t)nlp * n * C * 2u * 2u;
  st->sinks_found += newsinks;
  st->sinks_dropped += ndrop;
  if (info) {
    uint32_t ref = lb < nl ? lb : 0, qe = q->l[ref].nblk * G;
    info->quantized = qe > start ? (qe < end ? qe : end) - start : 0;
    info->sinks = newsinks;
    info->seq_len = kvs__seq_len(q);
  }
  rc = 0;
  goto out;

nomem:
  rc = fail(errmsg, -ENOMEM, "out of memory");
out:
  for (uint32_t l = 0; l < nl; l++)
    if (pl[l].fresh_res) {
      free(pl[l].rk);
      free(pl[l].rv);
    }
  free(pl);
  free(jobs);
  free(pred);
  return rc;
}

int kvs__seq_get(kvs__seq *q, uint32_t start, uint32_t n, uint32_t lb, uint32_t le,
                 uint16_t *k, uint16_t *v, char *errmsg)
{
  if (errmsg)
    errmsg[0] = 0;
  if (!q)
    return -EINVAL;
  kvs__space *sp = q->sp;
  kvs__store *st = sp->st;
  const uint32_t nl = sp->key.n_layers, G = sp->qp.group, C = sp->qp.channels;
  if (lb > le || le > nl)
    return fail(errmsg, -EINVAL, "layer range [%u, %u) outside 0..%u", lb, le, nl);
  if (n && le > lb && (!k || !v))
    return fail(errmsg, -EINVAL, "no output buffers");
  uint64_t end = (uint64_t)start + n;
  for (uint32_t l = lb; l < le; l++)
    if (end > q->l[l].len)
      return fail(errmsg, -EINVAL, "tokens [%u, %llu) beyond layer %u length %u", start,
                  (unsigned long long)end, l, q->l[l].len);
  /* Blocks are dequantized KVS_BATCH_MAX at a time, residual rows copied. */
  kvs__dqitem items[KVS_BATCH_MAX];
  uint32_t m = 0;
  for (uint32_t l = lb; l < le; l++) {
    const kvs__seq_layer *L = &q->l[l];
    uint32_t qend = L->nblk * G, t = start;
    while (t < end) {
      size_t o = ((size_t)(l - lb) * n + (t - start)) * C;
      if (t < qend) {
        uint32_t g = t / G, r0 = t % G, r1 = G;
        if ((uint64_t)g * G + r1 > end)
          r1 = (uint32_t)(end - (uint64_t)g * G);
        const kvs__block *b = L->blk[g];
        items[m++] = (kvs__dqitem){b->data, (const uint16_t *const *)b->rows, b->sink_mask, r0, r1,
                                   k + o, v + o};
        if (m == KVS_BATCH_MAX) {
          int rc = kvs__backend_dequantize_n(st->be, &sp->qp, items, m);
          m = 0;
          if (rc < 0)
            return fail(errmsg, rc, "dequantization failed");
        }
        t = g * G + r1;
      } else {
        size_t rows = (size_t)(end - t), ro = (size_t)(t - qend) * C;
        memcpy(k + o, L->rk + ro, rows * C * 2u);
        memcpy(v + o, L->rv + ro, rows * C * 2u);
        t = (uint32_t)end;
      }
    }
  }
  if (m) {
    int rc = kvs__backend_dequantize_n(st->be, &sp->qp, items, m);
    if (rc < 0)
      return fail(errmsg, rc, "dequantization failed");
  }
  st->gets++;
  st->bytes_out += (uint64_t)(le - lb) * n * C * 2u * 2u;
  return 0;
}

int kvs__space_lookup(kvs__space *sp, const uint32_t *tokens, uint32_t n, kvs__seq *bind,
                      uint32_t *cached)
{
  if (!sp || !cached || (n && !tokens))
    return -EINVAL;
  if (n > KVS_MAX_TOKENS_PER_PUT)
    return -EINVAL;
  kvs__store *st = sp->st;
  const uint32_t nl = sp->key.n_layers, G = sp->qp.group;
  if (bind) {
    if (bind->sp != sp || bind->ntok != 0)
      return -EINVAL;
    for (uint32_t l = 0; l < nl; l++)
      if (bind->l[l].len)
        return -EINVAL;
  }
  uint32_t ng = n / G, found = 0;
  kvs__h128 *ch = malloc(sizeof(*ch) * (ng ? ng : 1));
  if (!ch)
    return -ENOMEM;
  for (; found < ng; found++) {
    ch[found] = kvs__chain_next(sp, found ? &ch[found - 1] : NULL, tokens + (size_t)found * G);
    uint32_t l = 0;
    for (; l < nl; l++) {
      kvs__ikey key = {ch[found], l};
      if (!kvs__index_find(st->ix, &key))
        break;
    }
    if (l < nl)
      break;
  }
  const uint32_t hit = found * G;
  if (bind && found) {
    int rc = 0;
    if (grow((void **)&bind->tok, &bind->tokcap, hit, sizeof(*bind->tok)) < 0 ||
        grow((void **)&bind->chain, &bind->chaincap, found, sizeof(*bind->chain)) < 0)
      rc = -ENOMEM;
    if (rc == 0) {
      void *f = realloc(bind->flag, bind->tokcap);
      if (!f)
        rc = -ENOMEM;
      else
        bind->flag = f;
    }
    for (uint32_t l = 0; rc == 0 && l < nl; l++)
      if (grow((void **)&bind->l[l].blk, &bind->l[l].blkcap, found, sizeof(kvs__block *)) < 0)
        rc = -ENOMEM;
    if (rc < 0) {
      free(ch);
      return rc;
    }
    for (uint32_t l = 0; l < nl; l++) {
      kvs__seq_layer *L = &bind->l[l];
      for (uint32_t g = 0; g < found; g++) {
        kvs__ikey key = {ch[g], l};
        kvs__block *b = kvs__index_find(st->ix, &key);
        kvs__blk_ref(b);
        L->blk[g] = b;
        if (l == 0)
          for (uint32_t r = 0; r < G; r++)
            bind->flag[g * G + r] = (uint8_t)((b->sink_mask >> r) & 1u);
      }
      L->nblk = found;
      L->len = hit;
    }
    memcpy(bind->tok, tokens, (size_t)hit * sizeof(*tokens));
    memcpy(bind->chain, ch, (size_t)found * sizeof(*ch));
    bind->ntok = bind->known = hit;
    bind->nchain = found;
    bind->npred = 0;
    for (uint32_t t = 0; t < hit; t++)
      bind->npred += bind->flag[t] && !pfn_flag(sp, t);
  } else {
    /* A hit is a use: keep those blocks young. */
    for (uint32_t g = 0; g < found; g++)
      for (uint32_t l = 0; l < nl; l++) {
        kvs__ikey key = {ch[g], l};
        kvs__blk_touch(kvs__index_find(st->ix, &key));
      }
  }
  free(ch);
  st->lookups++;
  st->lookup_tokens += n;
  st->lookup_hit_tokens += hit;
  *cached = hit;
  return 0;
}
