/* SPDX-License-Identifier: MIT */
/* kvsink-eval: perplexity of a LLaMA model whose KV cache lives in kvsinkd.
 *
 *   kvsink-eval ppl    --model DIR --text FILE [--socket PATH --bits B
 *                      --policy none|pfn:N|kvsink --outliers F | --no-daemon]
 *                      [--contexts N] [--ctx N] [--json] [--sinks FILE]
 *                      [--sinks-out FILE] [--profile FILE] [--v-group N]
 *                      [--piece N] [--protect FILE] [--attn-out FILE]
 *                      [--k-bits B] [--v-bits B]
 *   kvsink-eval logits --model DIR --tokens 0,5,9 -o FILE [--chunk G]
 *   kvsink-eval dump   --model DIR --text FILE -o DUMP [--contexts N] [--ctx N] [--piece N]
 *   kvsink-eval encode --model DIR --text FILE [--docs]
 *   kvsink-eval info   --model DIR
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eval/corpus.h"
#include "eval/daemonkv.h"
#include "eval/model.h"
#include "eval/sinkstat.h"
#include "eval/tokenizer.h"
#include "eval/util.h"

#define MAX_TEXT (1u << 30)
#define KVS_MAX_LAYERS_EVAL 256

typedef struct args {
  const char *model, *text, *socket, *out, *tokens, *policy, *sinks_in, *sinks_out, *profile, *nll_out;
  const char *protect, *attn_out;
  int bits, k_bits, v_bits, json, no_daemon, v_group, docs, attend, decode;
  float outliers;
  uint32_t contexts, ctx, chunk, piece;
} args;

static void usage(FILE *f)
{
  fputs("usage: kvsink-eval ppl --model DIR --text FILE [--socket PATH] [--bits B]\n"
        "                       [--policy none|pfn:N|kvsink] [--outliers F] [--no-daemon]\n"
        "                       [--contexts N] [--ctx N] [--chunk G] [--json]\n"
        "                       [--sinks FILE] [--sinks-out FILE] [--profile FILE] [--v-group N]\n"
        "                       [--nll-out FILE] [--piece N] [--protect FILE] [--attn-out FILE]\n"
        "                       [--k-bits B] [--v-bits B] [--decode [--attend]]\n"
        "       kvsink-eval logits --model DIR --tokens ID,ID,... -o FILE [--chunk G]\n"
        "       kvsink-eval dump --model DIR --text FILE -o DUMP [--contexts N] [--ctx N] [--piece N]\n"
        "       kvsink-eval encode --model DIR --text FILE [--docs [--piece N]]\n"
        "       kvsink-eval info --model DIR\n"
        "       kvsink-eval --version | --help\n"
        "Runs a LLaMA-family checkpoint over text, its KV cache in kvsinkd\n"
        "(perplexity, logits, hidden-state dumps). Exit status: 0 ok, 1 a step\n"
        "failed, 2 bad command line. See kvsink-eval(1).\n", f);
}

static int parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
  char *e;
  errno = 0;
  unsigned long v = strtoul(s, &e, 10);
  if (errno || *e || e == s || v < lo || v > hi)
    return -EINVAL;
  *out = (uint32_t)v;
  return 0;
}

static int parse_args(int argc, char **argv, args *a)
{
  static const struct option lo[] = {
    {"model", 1, 0, 'm'}, {"text", 1, 0, 't'}, {"socket", 1, 0, 's'}, {"bits", 1, 0, 'b'},
    {"policy", 1, 0, 'p'}, {"outliers", 1, 0, 'O'}, {"contexts", 1, 0, 'n'}, {"ctx", 1, 0, 'c'},
    {"chunk", 1, 0, 'g'}, {"json", 0, 0, 'j'}, {"no-daemon", 0, 0, 'N'}, {"tokens", 1, 0, 'T'},
    {"sinks", 1, 0, 'S'}, {"sinks-out", 1, 0, 'W'}, {"profile", 1, 0, 'P'},
    {"v-group", 1, 0, 'V'}, {"nll-out", 1, 0, 'L'}, {"docs", 0, 0, 'D'}, {"help", 0, 0, 'h'},
    {"piece", 1, 0, 'X'}, {"k-bits", 1, 0, 'K'}, {"v-bits", 1, 0, 'U'}, {"protect", 1, 0, 'F'}, {"attn-out", 1, 0, 'A'}, {"attend", 0, 0, 'a'}, {"decode", 0, 0, 'e'}, {0, 0, 0, 0}};
  int o;
  uint32_t u;
  memset(a, 0, sizeof *a);
  a->bits = 16;
  a->ctx = 1024;
  a->policy = "none";
  a->outliers = 0;
  optind = 2;
  while ((o = getopt_long(argc, argv, "o:", lo, NULL)) != -1) {
    switch (o) {
    case 'm': a->model = optarg; break;
    case 't': a->text = optarg; break;
    case 's': a->socket = optarg; break;
    case 'o': a->out = optarg; break;
    case 'p': a->policy = optarg; break;
    case 'T': a->tokens = optarg; break;
    case 'S': a->sinks_in = optarg; break;
    case 'W': a->sinks_out = optarg; break;
    case 'P': a->profile = optarg; break;
    case 'L': a->nll_out = optarg; break;
    case 'F': a->protect = optarg; break;
    case 'A': a->attn_out = optarg; break;
    case 'X':
      if (parse_u32(optarg, 0, 1u << 20, &a->piece) < 0 || a->piece == 1)
        goto bad;
      break;
    case 'j': a->json = 1; break;
    case 'N': a->no_daemon = 1; break;
    case 'a': a->attend = a->decode = 1; break;
    case 'e': a->decode = 1; break;
    case 'D': a->docs = 1; break;
    case 'b':
      if (parse_u32(optarg, 2, 16, &u) < 0 || (u != 2 && u != 3 && u != 4 && u != 8 && u != 16))
        goto bad;
      a->bits = (int)u;
      break;
    case 'K':
    case 'U':
      if (parse_u32(optarg, 2, 8, &u) < 0 || (u != 2 && u != 3 && u != 4 && u != 8))
        goto bad;
      *(o == 'K' ? &a->k_bits : &a->v_bits) = (int)u;
      break;
    case 'O': {
      char *e;
      a->outliers = strtof(optarg, &e);
      if (*e || e == optarg || !(a->outliers >= 0 && a->outliers <= 0.01f))
        goto bad;
      break;
    }
    case 'n': if (parse_u32(optarg, 1, 1u << 20, &a->contexts) < 0) goto bad; break;
    case 'c': if (parse_u32(optarg, 2, 1u << 20, &a->ctx) < 0) goto bad; break;
    case 'g': if (parse_u32(optarg, 1, 64, &a->chunk) < 0) goto bad; break;
    case 'V': if (parse_u32(optarg, 1, 4096, &u) < 0) goto bad; a->v_group = (int)u; break;
    case 'h': usage(stdout); exit(0);
    default: usage(stderr); return -EINVAL;
    }
    continue;
  bad:
    fprintf(stderr, "kvsink-eval: bad option value: %s\n", optarg);
    return -EINVAL;
  }
  if (optind != argc || !a->model) {
    usage(stderr);
    return -EINVAL;
  }
  return 0;
}

static int load_all(const args *a, kvs__model *m, kvs__tokenizer **tok)
{
  char err[256], path[4096];
  int r = kvs__model_load(m, a->model, err);
  if (r < 0) {
    fprintf(stderr, "kvsink-eval: %s\n", err);
    return r;
  }
  if (!tok)
    return 0;
  snprintf(path, sizeof path, "%s/tokenizer.json", a->model);
  if ((r = kvs__tok_load(tok, path, err)) < 0) {
    fprintf(stderr, "kvsink-eval: %s\n", err);
    kvs__model_free(m);
    return r;
  }
  /* checkpoints often pad the embedding beyond the tokenizer's ids */
  if (kvs__tok_vocab_size(*tok) > m->cfg.vocab) {
    fprintf(stderr, "kvsink-eval: tokenizer has %u tokens, model %u\n", kvs__tok_vocab_size(*tok),
            m->cfg.vocab);
    kvs__tok_free(*tok);
    kvs__model_free(m);
    return -EINVAL;
  }
  return 0;
}

static int load_corpus(const args *a, const kvs__model *m, const kvs__tokenizer *tok,
                       kvs__corpus *c)
{
  char *text;
  size_t len;
  int r;
  if (!a->text) {
    fprintf(stderr, "kvsink-eval: --text is required\n");
    return -EINVAL;
  }
  if (m->cfg.bos == UINT32_MAX) {
    fprintf(stderr, "kvsink-eval: config.json names no bos_token_id (documents start with it)\n");
    return -EINVAL;
  }
  if (a->ctx > m->cfg.max_pos) {
    fprintf(stderr, "kvsink-eval: --ctx %u exceeds the model's %u positions\n", a->ctx,
            m->cfg.max_pos);
    return -EINVAL;
  }
  if ((r = kvs__read_file(a->text, MAX_TEXT, &text, &len)) < 0) {
    fprintf(stderr, "kvsink-eval: %s: %s\n", a->text, strerror(-r));
    return r;
  }
  r = kvs__corpus_build_pieces(c, tok, (const unsigned char *)text, len, m->cfg.bos, a->ctx,
                               a->contexts, a->piece);
  free(text);
  if (r < 0)
    fprintf(stderr, "kvsink-eval: tokenizing %s: %s\n", a->text, strerror(-r));
  else if (c->n_ctx == 0) {
    fprintf(stderr, "kvsink-eval: %s holds no context\n", a->text);
    kvs__corpus_free(c);
    r = -EINVAL;
  }
  return r;
}

static int cmd_info(const args *a)
{
  kvs__model m;
  if (load_all(a, &m, NULL) < 0)
    return 1;
  printf("model_id %s\nlayers %u\nhidden %u\nheads %u\nkv_heads %u\nhead_dim %u\nvocab %u\n",
         m.model_id, m.cfg.n_layers, m.cfg.hidden, m.cfg.n_heads, m.cfg.n_kv_heads,
         m.cfg.head_dim, m.cfg.vocab);
  kvs__model_free(&m);
  return 0;
}

static int cmd_encode(const args *a)
{
  char err[256], path[4096], *text;
  size_t len, n = 0, cap = 0;
  uint32_t *ids = NULL;
  kvs__tokenizer *tok;
  int r;
  snprintf(path, sizeof path, "%s/tokenizer.json", a->model);
  if ((r = kvs__tok_load(&tok, path, err)) < 0) {
    fprintf(stderr, "kvsink-eval: %s\n", err);
    return 1;
  }
  if (!a->text || (r = kvs__read_file(a->text, MAX_TEXT, &text, &len)) < 0) {
    fprintf(stderr, "kvsink-eval: cannot read --text\n");
    kvs__tok_free(tok);
    return 1;
  }
  if (a->docs) {
    /* the token stream ppl packs: documents with BOS in front */
    kvs__corpus c;
    kvs__mcfg cfg;
    uint32_t bos = KVS_TOK_BOS; /* bpe.py's, when there is no config.json */
    if (kvs__model_load_config(&cfg, a->model, err) == 0 && cfg.bos != UINT32_MAX)
      bos = cfg.bos;
    r = kvs__corpus_build_pieces(&c, tok, (const unsigned char *)text, len, bos,
                                 UINT32_MAX, 1, a->piece);
    for (size_t i = 0; r == 0 && i < c.n_ids; i++)
      printf(i + 1 < c.n_ids ? "%u " : "%u", c.ids[i]);
    if (r == 0)
      kvs__corpus_free(&c);
  } else {
    r = kvs__tok_encode(tok, (const unsigned char *)text, len, &ids, &n, &cap);
    for (size_t i = 0; r == 0 && i < n; i++)
      printf(i + 1 < n ? "%u " : "%u", ids[i]);
  }
  printf("\n");
  free(ids);
  free(text);
  kvs__tok_free(tok);
  return r < 0 || fflush(stdout) ? 1 : 0;
}

static int cmd_logits(const args *a)
{
  kvs__model m;
  kvs__localkv lkv;
  kvs__kvio io;
  kvs__fwd_out out = {0};
  uint32_t *tok = NULL, n = 0;
  int rc = 1;
  if (!a->tokens || !a->out) {
    usage(stderr);
    return 1;
  }
  if (load_all(a, &m, NULL) < 0)
    return 1;
  tok = malloc((strlen(a->tokens) / 2 + 1) * sizeof *tok);
  for (const char *p = a->tokens; tok && *p;) {
    char *e;
    unsigned long v = strtoul(p, &e, 10);
    if (e == p || v >= m.cfg.vocab || (*e && *e != ',')) {
      fprintf(stderr, "kvsink-eval: bad --tokens\n");
      goto out;
    }
    tok[n++] = (uint32_t)v;
    p = *e ? e + 1 : e;
  }
  if (!tok || n == 0 || kvs__localkv_init(&lkv, &m, n, &io) < 0)
    goto out;
  out.logits = malloc((size_t)n * m.cfg.vocab * sizeof(float));
  if (out.logits && kvs__model_forward(&m, tok, n, a->chunk ? a->chunk : 32, &io, &out) == 0) {
    FILE *f = fopen(a->out, "wb");
    if (f && fwrite(out.logits, sizeof(float), (size_t)n * m.cfg.vocab, f) ==
                 (size_t)n * m.cfg.vocab && fclose(f) == 0)
      rc = 0;
    else
      fprintf(stderr, "kvsink-eval: cannot write %s\n", a->out);
  }
  free(out.logits);
  kvs__localkv_free(&lkv);
out:
  free(tok);
  kvs__model_free(&m);
  return rc;
}

/* KVSDUMP1 (kvsink-calibrate(1)): hidden states after each layer, fp16. */
static int cmd_dump(const args *a)
{
  kvs__model m;
  kvs__tokenizer *tok;
  kvs__corpus c;
  kvs__localkv lkv;
  kvs__kvio io;
  kvs__fwd_out out = {0};
  int rc = 1;
  if (!a->out) {
    usage(stderr);
    return 1;
  }
  if (load_all(a, &m, &tok) < 0)
    return 1;
  if (load_corpus(a, &m, tok, &c) < 0)
    goto out_tok;
  uint32_t L = m.cfg.n_layers, D = m.cfg.hidden, total = 0;
  for (uint32_t i = 0; i < c.n_ctx; i++)
    total += c.ctx_len[i];
  uint16_t *all = malloc((size_t)L * total * D * 2);
  out.hidden = malloc((size_t)L * a->ctx * D * sizeof(float));
  if (!all || !out.hidden || kvs__localkv_init(&lkv, &m, a->ctx, &io) < 0)
    goto out_buf;
  uint32_t at = 0;
  for (uint32_t i = 0; i < c.n_ctx; i++) {
    uint32_t n = c.ctx_len[i];
    if (kvs__model_forward(&m, c.ids + c.ctx_start[i], n, 32, &io, &out) < 0)
      goto out_lkv;
    for (uint32_t l = 0; l < L; l++)
      kvs_f16_from_f32(all + ((size_t)l * total + at) * D, out.hidden + (size_t)l * n * D,
                       (size_t)n * D);
    at += n;
  }
  FILE *f = fopen(a->out, "wb");
  uint32_t hdr[4] = {L, total, D, 1};
  if (f && fwrite("KVSDUMP1", 1, 8, f) == 8 && fwrite(hdr, 4, 4, f) == 4 &&
      fwrite(all, 2, (size_t)L * total * D, f) == (size_t)L * total * D && fclose(f) == 0) {
    fprintf(stderr, "kvsink-eval: wrote %u layers x %u tokens x %u to %s\n", L, total, D, a->out);
    rc = 0;
  } else {
    fprintf(stderr, "kvsink-eval: cannot write %s\n", a->out);
  }
out_lkv:
  kvs__localkv_free(&lkv);
out_buf:
  free(all);
  free(out.hidden);
  kvs__corpus_free(&c);
out_tok:
  kvs__tok_free(tok);
  kvs__model_free(&m);
  return rc;
}


typedef struct ppl_acc {
  double nll;
  uint64_t n_pred;
  double bits_sum;           /* sum over stored token-rows of bits per element */
  uint64_t rows;
  uint64_t measured, predicted, tp;
  uint64_t measured_bos;
  uint64_t bos;                       /* BOS tokens in the contexts */
  int have_measured;                  /* measured sinks known */
  double share[KVS_MAX_LAYERS_EVAL];  /* attention mass on measured sinks, per layer */
  double share_q;                     /* queries x heads summed into share */
} ppl_acc;

static int parse_policy(const char *s, kvs_options *o)
{
  uint32_t n;
  if (!strcmp(s, "none")) {
    o->policy = KVS_POLICY_NONE;
    o->pfn = 0;
  } else if (!strcmp(s, "kvsink")) {
    o->policy = KVS_POLICY_KVSINK;
  } else if (!strncmp(s, "pfn:", 4) && parse_u32(s + 4, 0, 1u << 20, &n) == 0) {
    o->policy = KVS_POLICY_PFN;
    o->pfn = (int)n;
  } else {
    return -EINVAL;
  }
  return 0;
}

/* Measured-sink file: one line per context, "<index>:" then positions. */
static int sinks_write(FILE *f, uint32_t ctx, const uint8_t *flags, uint32_t n)
{
  fprintf(f, "%u:", ctx);
  for (uint32_t j = 0; j < n; j++)
    if (flags[j])
      fprintf(f, " %u", j);
  return fprintf(f, "\n") < 0 ? -EIO : 0;
}

static int sinks_read(FILE *f, uint32_t ctx, uint8_t *flags, uint32_t n)
{
  char line[1 << 16], *p, *e;
  memset(flags, 0, n);
  if (!fgets(line, sizeof line, f) || !strchr(line, '\n'))
    return -EINVAL;
  unsigned long idx = strtoul(line, &e, 10);
  if (e == line || *e != ':' || idx != ctx)
    return -EINVAL;
  for (p = e + 1;;) {
    while (*p == ' ')
      p++;
    if (*p == '\n')
      return 0;
    unsigned long j = strtoul(p, &e, 10);
    if (e == p || j >= n)
      return -EINVAL;
    flags[j] = 1;
    p = e;
  }
}

/* --attn-out: per token "ctx pos id" then, per layer and head, the
 * attention received from distant queries over the uniform share (the
 * ratios kvs__sinks_measure compares with k); tokens without distant
 * queries get 0. */
static int attn_write(FILE *f, uint32_t ci, const uint32_t *ids, const double *recv, uint32_t L,
                      uint32_t H, uint32_t n)
{
  double uni = 0;
  double *u = malloc(n * sizeof *u);
  if (!u)
    return -ENOMEM;
  for (uint32_t jj = n; jj-- > 0;) {
    if ((uint64_t)jj + KVS_SINK_MIN_DIST < n)
      uni += 1.0 / ((double)jj + KVS_SINK_MIN_DIST + 1.0);
    u[jj] = uni;
  }
  for (uint32_t j = 0; j < n; j++) {
    fprintf(f, "%u %u %u", ci, j, ids[j]);
    for (uint32_t lh = 0; lh < L * H; lh++)
      fprintf(f, " %.3g", u[j] > 0 ? recv[(size_t)lh * n + j] / u[j] : 0.0);
    fputc('\n', f);
  }
  free(u);
  return ferror(f) ? -EIO : 0;
}

static int cmd_ppl(const args *a)
{
  kvs__model m;
  kvs__tokenizer *tok;
  kvs__corpus c;
  kvs_profile *profp = NULL;
  kvs__localkv lkv = {0};
  kvs__daemonkv dkv = {0};
  kvs__kvio io;
  kvs__fwd_out out = {0};
  kvs_options opts;
  ppl_acc acc = {0};
  FILE *sin = NULL, *sout = NULL, *nout = NULL, *fin = NULL, *aout = NULL;
  char err[256], path[4096];
  int rc = 1, r, fp16 = a->no_daemon || a->bits == 16;
  uint8_t *measured = NULL, *force = NULL;

  kvs_options_init(&opts);
  opts.k_bits = opts.v_bits = a->bits;
  if (a->k_bits || a->v_bits) {
    /* K and V apart (experiments: which of them the damage comes from) */
    if (a->bits == 16 || a->no_daemon) {
      fprintf(stderr, "kvsink-eval: --k-bits/--v-bits need --bits 2..8 through the daemon\n");
      return 2;
    }
    if (a->k_bits)
      opts.k_bits = a->k_bits;
    if (a->v_bits)
      opts.v_bits = a->v_bits;
  }
  opts.outliers = a->outliers;
  if (parse_policy(a->policy, &opts) < 0) {
    fprintf(stderr, "kvsink-eval: --policy must be none, pfn:N or kvsink\n");
    return 2;
  }
  if (load_all(a, &m, &tok) < 0)
    return 1;
  if (load_corpus(a, &m, tok, &c) < 0)
    goto out_tok;
  snprintf(path, sizeof path, "%s/kvsink.profile", a->model);
  if (a->profile || access(path, R_OK) == 0) {
    if ((r = kvs_profile_load(&profp, a->profile ? a->profile : path, err, sizeof err)) < 0) {
      fprintf(stderr, "kvsink-eval: %s\n", err);
      goto out_c;
    }
  }
  measured = calloc(a->ctx, 1);
  force = calloc(a->ctx, 1);
  if (!measured || !force)
    goto out_c;
  if (a->decode && (fp16 || (a->chunk && a->chunk != 1))) {
    /* one token a step; 16-bit runs measure attention weights */
    fprintf(stderr, "kvsink-eval: --decode and --attend need a quantized run through the "
                    "daemon, one token a step\n");
    goto out_c;
  }
  if (a->protect && (a->no_daemon || opts.policy != KVS_POLICY_KVSINK)) {
    fprintf(stderr, "kvsink-eval: --protect needs --policy kvsink through the daemon\n");
    goto out_c;
  }
  if (a->protect && !(fin = fopen(a->protect, "r"))) {
    fprintf(stderr, "kvsink-eval: %s: %s\n", a->protect, strerror(errno));
    goto out_c;
  }
  if (a->attn_out && (!fp16 || !(aout = fopen(a->attn_out, "w")))) {
    fprintf(stderr, "kvsink-eval: --attn-out %s: %s\n", a->attn_out,
            fp16 ? strerror(errno) : "needs a 16-bit run");
    goto out_c;
  }
  if (fp16) {
    out.att_recv = malloc((size_t)m.cfg.n_layers * m.cfg.n_heads * a->ctx * sizeof(double));
    if (!out.att_recv)
      goto out_c;
  }
  if (fp16 && a->sinks_out && !(sout = fopen(a->sinks_out, "w"))) {
    fprintf(stderr, "kvsink-eval: %s: %s\n", a->sinks_out, strerror(errno));
    goto out_c;
  }
  if (!fp16 && a->sinks_in && !(sin = fopen(a->sinks_in, "r"))) {
    fprintf(stderr, "kvsink-eval: %s: %s\n", a->sinks_in, strerror(errno));
    goto out_c;
  }
  if (a->nll_out && !(nout = fopen(a->nll_out, "wb"))) {
    fprintf(stderr, "kvsink-eval: %s: %s\n", a->nll_out, strerror(errno));
    goto out_c;
  }
  out.nll = malloc(a->ctx * sizeof(double));
  if (!out.nll)
    goto out_c;
  if (a->no_daemon)
    r = kvs__localkv_init(&lkv, &m, a->ctx, &io);
  else
    r = kvs__daemonkv_init(&dkv, a->socket, &m, &opts, a->ctx, profp, &io, err);
  if (r < 0) {
    fprintf(stderr, "kvsink-eval: %s\n", a->no_daemon ? strerror(-r) : err);
    goto out_c;
  }
  if (fin) {
    if (!dkv.send_summary) {
      fprintf(stderr, "kvsink-eval: --protect: the daemon has no profile for this model\n");
      goto out_kv;
    }
    dkv.force = force;
  }
  if (a->attend)
    kvs__daemonkv_use_attend(&dkv, &io);
  io.past_first = a->decode;
  uint32_t chunk = a->decode ? 1 : a->chunk ? a->chunk : a->no_daemon ? 32 : dkv.info->group;
  if (!a->no_daemon && !a->decode && chunk != dkv.info->group)
    fprintf(stderr, "kvsink-eval: note: chunk %u differs from the daemon's group %u\n", chunk,
            dkv.info->group);
  /* storage cost of a block, from the quantizer's own accounting */
  kvs_quant_settings qp = {0};
  if (!a->no_daemon) {
    qp.group = dkv.info->group;
    qp.channels = dkv.channels;
    qp.v_group = dkv.info->v_group; /* what the daemon resolved (hello reply) */
    qp.k_bits = dkv.info->k_bits;
    qp.v_bits = dkv.info->v_bits;
    qp.outliers = dkv.info->outliers;
    qp.dtype = KVS_DTYPE_F16;
  }
  for (uint32_t ci = 0; ci < c.n_ctx; ci++) {
    uint32_t n = c.ctx_len[ci];
    const uint32_t *ids = c.ids + c.ctx_start[ci];
    if (out.att_recv)
      memset(out.att_recv, 0, (size_t)m.cfg.n_layers * m.cfg.n_heads * n * sizeof(double));
    if (fin && sinks_read(fin, ci, force, n) < 0) {
      fprintf(stderr, "kvsink-eval: %s: context %u missing or malformed\n", a->protect, ci);
      goto out_kv;
    }
    if (!a->no_daemon && (r = kvs__daemonkv_begin(&dkv)) < 0) {
      fprintf(stderr, "kvsink-eval: release: %s\n", kvs_strerror(r));
      goto out_kv;
    }
    if ((r = kvs__model_forward(&m, ids, n, chunk, &io, &out)) < 0) {
      fprintf(stderr, "kvsink-eval: context %u: %s\n", ci,
              a->no_daemon ? strerror(-r) : kvs_strerror(r));
      goto out_kv;
    }
    for (uint32_t t = 0; t + 1 < n; t++)
      acc.nll += out.nll[t];
    acc.n_pred += n - 1;
    if (nout && fwrite(out.nll, sizeof(double), n - 1, nout) != n - 1) {
      fprintf(stderr, "kvsink-eval: cannot write %s\n", a->nll_out);
      goto out_kv;
    }
    int have_measured = 0;
    if (fp16) {
      acc.measured += kvs__sinks_measure(out.att_recv, m.cfg.n_layers, m.cfg.n_heads, n,
                                         KVS_SINK_K, measured);
      have_measured = 1;
      /* share of all attention (queries x heads) that lands on sinks */
      for (uint32_t l = 0; l < m.cfg.n_layers && l < KVS_MAX_LAYERS_EVAL; l++)
        for (uint32_t h = 0; h < m.cfg.n_heads; h++)
          for (uint32_t j = 0; j < n; j++)
            if (measured[j])
              acc.share[l] += out.att_recv[((size_t)l * m.cfg.n_heads + h) * n + j];
      acc.share_q += (double)n * m.cfg.n_heads;
      if (aout && attn_write(aout, ci, ids, out.att_recv, m.cfg.n_layers, m.cfg.n_heads, n) < 0)
        goto out_kv;
      if (sout && sinks_write(sout, ci, measured, n) < 0)
        goto out_kv;
    } else if (sin) {
      if (sinks_read(sin, ci, measured, n) < 0) {
        fprintf(stderr, "kvsink-eval: %s: context %u missing or malformed\n", a->sinks_in, ci);
        goto out_kv;
      }
      for (uint32_t j = 0; j < n; j++)
        acc.measured += measured[j];
      have_measured = 1;
    }
    for (uint32_t j = 0; j < n; j++)
      acc.bos += ids[j] == m.cfg.bos;
    acc.have_measured = have_measured;
    for (uint32_t j = 0; have_measured && j < n; j++)
      acc.measured_bos += measured[j] && ids[j] == m.cfg.bos;
    if (!a->no_daemon && dkv.profile) {
      for (uint32_t j = 0; j < n; j++) {
        acc.predicted += dkv.pred[j] == 1;
        acc.tp += have_measured && dkv.pred[j] == 1 && measured[j];
      }
    }
    /* bits: full groups cost what kvs_bits_per_element says for their
     * sink rows (first N plus predicted), the tail waits in 16-bit */
    uint32_t gstep = a->no_daemon ? chunk : qp.group; /* blocks, whatever the chunk */
    for (uint32_t g0 = 0; g0 < n; g0 += gstep) {
      uint32_t rows = n - g0 < gstep ? n - g0 : gstep;
      double b = 16.0;
      if (!a->no_daemon && a->bits != 16 && rows == qp.group) {
        uint32_t ns = 0;
        for (uint32_t t = g0; t < g0 + rows; t++)
          ns += ((dkv.info->policy == KVS_POLICY_PFN || dkv.info->policy == KVS_POLICY_KVSINK) &&
                 t < (uint32_t)dkv.info->pfn) || dkv.pred[t];
        if ((r = kvs_bits_per_element(&qp, ns, &b)) < 0) {
          fprintf(stderr, "kvsink-eval: bits per element: %s\n", kvs_strerror(r));
          goto out_kv;
        }
      }
      acc.bits_sum += b * rows;
      acc.rows += rows;
    }
  }
  double ppl = exp(acc.nll / (double)acc.n_pred), bits = acc.bits_sum / (double)acc.rows;
  int scored = acc.have_measured && !a->no_daemon && dkv.profile;
  double prec = scored && acc.predicted ? (double)acc.tp / (double)acc.predicted : NAN;
  double rec = scored && acc.measured ? (double)acc.tp / (double)acc.measured : NAN;
  const char *mode = a->no_daemon ? "local" : "daemon";
  if (a->json) {
    printf("{\"mode\":\"%s\",\"policy\":\"%s\",\"bits\":%d,\"k_bits\":%d,\"v_bits\":%d,"
           "\"outliers\":%g,\"ppl\":%.4f,"
           "\"nll\":%.6f,\"tokens\":%llu,\"contexts\":%u,\"avg_bits\":%.4f,\"compression\":%.4f,"
           "\"sinks_measured\":%llu,\"sinks_measured_bos\":%llu,\"sinks_predicted\":%llu,"
           "\"sinks_daemon\":%llu,\"bos_tokens\":%llu,",
           mode, a->policy, a->bits, opts.k_bits, opts.v_bits, a->outliers, ppl, acc.nll / (double)acc.n_pred,
           (unsigned long long)acc.n_pred, c.n_ctx, bits, 16.0 / bits,
           (unsigned long long)acc.measured, (unsigned long long)acc.measured_bos,
           (unsigned long long)acc.predicted, (unsigned long long)dkv.daemon_sinks,
           (unsigned long long)acc.bos);
    if (isnan(prec))
      printf("\"precision\":null,");
    else
      printf("\"precision\":%.4f,", prec);
    if (isnan(rec))
      printf("\"recall\":null");
    else
      printf("\"recall\":%.4f", rec);
    if (acc.share_q > 0) {
      printf(",\"sink_attention\":[");
      for (uint32_t l = 0; l < m.cfg.n_layers && l < KVS_MAX_LAYERS_EVAL; l++)
        printf(l ? ",%.4f" : "%.4f", acc.share[l] / acc.share_q);
      printf("]");
    }
    printf("}\n");
  } else {
    printf("%s bits=%d policy=%s outliers=%g: ppl %.4f over %llu tokens in %u contexts; "
           "avg bits/element %.3f, compression %.2fx vs fp16\n",
           mode, a->bits, a->policy, a->outliers, ppl, (unsigned long long)acc.n_pred, c.n_ctx,
           bits, 16.0 / bits);
    printf("sinks: measured %llu (%llu at BOS), predicted %llu (daemon flagged %llu), "
           "precision %.3f, recall %.3f\n",
           (unsigned long long)acc.measured, (unsigned long long)acc.measured_bos,
           (unsigned long long)acc.predicted, (unsigned long long)dkv.daemon_sinks, prec, rec);
    if (acc.share_q > 0) {
      printf("share of attention on measured sinks per layer:");
      for (uint32_t l = 0; l < m.cfg.n_layers && l < KVS_MAX_LAYERS_EVAL; l++)
        printf(" %.3f", acc.share[l] / acc.share_q);
      printf("\n");
    }
  }
  rc = fflush(stdout) ? 1 : 0;
out_kv:
  if (a->no_daemon)
    kvs__localkv_free(&lkv);
  else
    kvs__daemonkv_close(&dkv);
out_c:
  if (sout && fclose(sout) != 0)
    rc = 1;
  if (sin)
    fclose(sin);
  if (nout && fclose(nout) != 0)
    rc = 1;
  if (aout && fclose(aout) != 0)
    rc = 1;
  if (fin)
    fclose(fin);
  kvs_profile_free(profp);
  free(force);
  free(out.nll);
  free(out.att_recv);
  free(measured);
  kvs__corpus_free(&c);
out_tok:
  kvs__tok_free(tok);
  kvs__model_free(&m);
  return rc;
}

int main(int argc, char **argv)
{
  args a;
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "--version")) {
    printf("kvsink-eval (kvsink) %s\n", kvs_version());
    return 0;
  }
  static const char *const cmds[] = {"info", "encode", "logits", "dump", "ppl"};
  int known = 0;
  for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
    known |= !strcmp(argv[1], cmds[i]);
  if (!known) {
    fprintf(stderr, "kvsink-eval: unknown command '%s'\nTry 'kvsink-eval --help'\n", argv[1]);
    return 2;
  }
  if (parse_args(argc, argv, &a) < 0)
    return 2;
  if (!strcmp(argv[1], "info"))
    return cmd_info(&a);
  if (!strcmp(argv[1], "encode"))
    return cmd_encode(&a);
  if (!strcmp(argv[1], "logits"))
    return cmd_logits(&a);
  if (!strcmp(argv[1], "dump"))
    return cmd_dump(&a);
  if (!strcmp(argv[1], "ppl"))
    return cmd_ppl(&a);
  usage(stderr);
  return 2;
}
