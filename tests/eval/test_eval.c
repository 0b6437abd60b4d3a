/* SPDX-License-Identifier: MIT */
/* Unit tests of the eval C part: JSON reader, pre-tokenizer and BPE
 * encoder, safetensors validation, corpus packing, measured sinks. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eval/corpus.h"
#include "eval/json.h"
#include "eval/safetensors.h"
#include "eval/sinkstat.h"
#include "eval/tokenizer.h"

static char tmpdir[] = "/tmp/kvs-test-eval-XXXXXX";

static void setup(void) { ck_assert_ptr_nonnull(mkdtemp(tmpdir)); }
static void teardown(void)
{
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  ck_assert_int_eq(system(cmd), 0);
  memcpy(tmpdir + strlen(tmpdir) - 6, "XXXXXX", 6);
}

static int parse(const char *s, kvs__json **j)
{
  char err[256];
  return kvs__json_parse(s, strlen(s), j, err);
}

START_TEST(json_valid)
{
  kvs__json *j;
  long v;
  double d;
  ck_assert_int_eq(parse(" {\"a\": [1, -2.5e1, true, false, null], \"b\": {\"c\": \"x\\u00e9\\ud83d\\ude00\\n\"},"
                         " \"n\": 42} ", &j), 0);
  const kvs__json *a = kvs__json_get(j, "a");
  ck_assert_ptr_nonnull(a);
  ck_assert_int_eq(a->type, KVS_J_ARR);
  ck_assert_uint_eq(a->n, 5);
  ck_assert(a->items[1]->num == -25.0);
  ck_assert_int_eq(a->items[2]->type, KVS_J_TRUE);
  ck_assert_int_eq(a->items[4]->type, KVS_J_NULL);
  const kvs__json *c = kvs__json_get(kvs__json_get(j, "b"), "c");
  ck_assert_str_eq(c->str, "x\xc3\xa9\xf0\x9f\x98\x80\n");
  ck_assert_int_eq(kvs__json_get_int(j, "n", 0, 100, &v), 0);
  ck_assert_int_eq(v, 42);
  ck_assert_int_eq(kvs__json_get_int(j, "n", 0, 10, &v), -EINVAL);
  ck_assert_int_eq(kvs__json_get_num(j, "missing", &d), -EINVAL);
  ck_assert_ptr_null(kvs__json_get(a, "a"));
  kvs__json_free(j);
}
END_TEST

START_TEST(json_invalid)
{
  static const char *const bad[] = {
    "", "{", "[1,]", "{\"a\":1,}", "01", "1.", "-", "1e", "\"abc", "\"a\nb\"", "\"\\x\"",
    "\"\\ud800\"", "\"\\udc00x\"", "\"\\u0000\"", "{\"a\" 1}", "[1 2]", "tru", "nul", "1 2",
    "{1:2}", "\"\\u12g4\"", "1e999",
  };
  kvs__json *j;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    ck_assert_msg(parse(bad[i], &j) == -EINVAL, "accepted %s", bad[i]);
  char deep[200];
  memset(deep, '[', 100);
  memset(deep + 100, ']', 100);
  ck_assert_int_eq(kvs__json_parse(deep, 200, &j, NULL), -EINVAL);
  ck_assert_int_eq(kvs__json_parse(deep + 50, 100, &j, NULL), 0);
  kvs__json_free(j);
}
END_TEST

typedef struct chunks {
  char out[512];
  size_t w;
  const char *text;
} chunks;

static void collect(void *ctx, size_t b, size_t e)
{
  chunks *c = ctx;
  memcpy(c->out + c->w, c->text + b, e - b);
  c->w += e - b;
  c->out[c->w++] = '|';
  c->out[c->w] = 0;
}

static const char *pretok(const char *s)
{
  static chunks c;
  c.w = 0;
  c.out[0] = 0;
  c.text = s;
  kvs__tok_pretokenize((const unsigned char *)s, strlen(s), collect, &c);
  return c.out;
}

START_TEST(pretokenize_rules)
{
  ck_assert_str_eq(pretok("Hello world"), "Hello| world|");
  ck_assert_str_eq(pretok("a  b"), "a| | b|");
  ck_assert_str_eq(pretok("x\n\ny"), "x|\n\n|y|");
  ck_assert_str_eq(pretok("x \n y"), "x| \n| y|");
  ck_assert_str_eq(pretok("12ab"), "1|2|ab|");
  ck_assert_str_eq(pretok(" 12"), " 1|2|");
  ck_assert_str_eq(pretok("a, b"), "a|,| b|");
  ck_assert_str_eq(pretok("end  "), "end|  |");
  ck_assert_str_eq(pretok("end "), "end| |");
  ck_assert_str_eq(pretok("!!x.."), "!!|x|..|");
  ck_assert_str_eq(pretok("caf\xc3\xa9s ok"), "caf\xc3\xa9s| ok|");
  ck_assert_str_eq(pretok(" ."), " .|");
  ck_assert_str_eq(pretok("\t x"), "\t| x|");
  ck_assert_str_eq(pretok("a\t\tb"), "a|\t\t|b|");
  ck_assert_str_eq(pretok("   "), "   |");
}
END_TEST

static const char *pretok2(const char *s)
{
  static chunks c;
  c.w = 0;
  c.out[0] = 0;
  c.text = s;
  kvs__tok_pretokenize_gpt2((const unsigned char *)s, strlen(s), collect, &c);
  return c.out;
}

/* GPT-2's regex: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
START_TEST(pretokenize_gpt2)
{
  ck_assert_str_eq(pretok2("Hello world"), "Hello| world|");
  ck_assert_str_eq(pretok2("a  b"), "a| | b|");
  ck_assert_str_eq(pretok2("x\n\ny"), "x|\n|\n|y|");
  ck_assert_str_eq(pretok2("x \n y"), "x| \n| y|");
  ck_assert_str_eq(pretok2("12ab 345"), "12|ab| 345|");
  ck_assert_str_eq(pretok2("it's they're 'sx"), "it|'s| they|'re| '|sx|");
  ck_assert_str_eq(pretok2("a, b!!"), "a|,| b|!!|");
  ck_assert_str_eq(pretok2("end  "), "end|  |");
  ck_assert_str_eq(pretok2("\t x"), "\t| x|");
  /* Unicode classes: é is a letter, — (U+2014) punctuation, ² a number,
   * U+00A0 white space (but only ' ' glues to a word) */
  ck_assert_str_eq(pretok2("caf\xc3\xa9 \xe2\x80\x94 x\xc2\xb2"), "caf\xc3\xa9| \xe2\x80\x94| x|\xc2\xb2|");
  ck_assert_str_eq(pretok2("\xc2\xa0x"), "\xc2\xa0|x|");
  /* invalid UTF-8 bytes are punctuation, one byte each */
  ck_assert_str_eq(pretok2("a\xff\xfe b"), "a|\xff\xfe| b|");
  ck_assert_str_eq(pretok2("   "), "   |");
}
END_TEST


/* GPT-2 bytes_to_unicode code point of byte b. */
static unsigned b2u(unsigned b)
{
  unsigned extra = 0;
  for (unsigned x = 0; x < 256; x++) {
    int printable = (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE;
    if (x == b)
      return printable ? x : 256 + extra;
    if (!printable)
      extra++;
  }
  return 0;
}

/* A tokenizer with merges: 0 "b c", 1 "a b", 2 "a bc", 3 "Ġ abc" (space+abc). */
static void write_tokenizer(const char *path, int break_merge)
{
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fprintf(f, "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":0,\"content\":\"<|bos|>\",\"special\":true},"
             "{\"id\":1,\"content\":\"<|eos|>\",\"special\":true}],\"model\":{\"type\":\"BPE\",\"vocab\":{"
             "\"<|bos|>\":0,\"<|eos|>\":1");
  for (unsigned b = 0; b < 256; b++)
    fprintf(f, ",\"\\u%04x\":%u", b2u(b), 2 + b);
  fprintf(f, ",\"bc\":258,\"ab\":259,\"abc\":260,\"\\u0120abc\":261},\"merges\":["
             "\"b c\",\"a b\",\"a bc\",\"%s\"]}}", break_merge ? "\\u0120 ab" : "\\u0120 abc");
  ck_assert_int_eq(fclose(f), 0);
}

static size_t enc(const kvs__tokenizer *t, const char *s, uint32_t *out)
{
  uint32_t *ids = NULL;
  size_t n = 0, cap = 0;
  ck_assert_int_eq(kvs__tok_encode(t, (const unsigned char *)s, strlen(s), &ids, &n, &cap), 0);
  if (n) memcpy(out, ids, n * sizeof *ids);
  free(ids);
  return n;
}

START_TEST(bpe_encode)
{
  char path[128], err[256];
  kvs__tokenizer *t;
  uint32_t ids[64];
  snprintf(path, sizeof path, "%s/tok.json", tmpdir);
  write_tokenizer(path, 0);
  ck_assert_msg(kvs__tok_load(&t, path, err) == 0, "%s", err);
  ck_assert_uint_eq(kvs__tok_vocab_size(t), 262);
  /* lowest rank first: b c before a b, then a bc */
  ck_assert_uint_eq(enc(t, "abc", ids), 1);
  ck_assert_uint_eq(ids[0], 260);
  /* equal ranks: leftmost first */
  ck_assert_uint_eq(enc(t, "abab", ids), 2);
  ck_assert_uint_eq(ids[0], 259);
  ck_assert_uint_eq(ids[1], 259);
  /* the lone space joins the next chunk and merges with it */
  ck_assert_uint_eq(enc(t, "x abc", ids), 2);
  ck_assert_uint_eq(ids[0], 2 + 'x');
  ck_assert_uint_eq(ids[1], 261);
  /* never across chunks: "ab" + "," + "c" */
  ck_assert_uint_eq(enc(t, "ab,c", ids), 3);
  ck_assert_uint_eq(ids[0], 259);
  ck_assert_uint_eq(ids[1], 2 + ',');
  ck_assert_uint_eq(ids[2], 2 + 'c');
  ck_assert_uint_eq(enc(t, "", ids), 0);
  size_t len;
  const unsigned char *b = kvs__tok_bytes(t, 261, &len);
  ck_assert_uint_eq(len, 4);
  ck_assert(!memcmp(b, " abc", 4));
  ck_assert_ptr_null(kvs__tok_bytes(t, 0, &len));
  kvs__tok_free(t);
  /* a merge that does not build the next id is refused */
  write_tokenizer(path, 1);
  ck_assert_int_eq(kvs__tok_load(&t, path, err), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "merge 3"));
}
END_TEST

/* A standard layout: ids shuffled, merges as lists, an added token that is
 * cut out of the text, ByteLevel pre-tokenizer. */
START_TEST(bpe_hf_layout)
{
  char path[128], err[256];
  kvs__tokenizer *t;
  uint32_t ids[64];
  snprintf(path, sizeof path, "%s/hf.json", tmpdir);
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  /* byte b has id 300 + (b * 7) % 256; merges "a b" -> 5, "ab c" -> 9, "Ġ ab" -> 7 */
  fprintf(f, "{\"added_tokens\":[{\"id\":1000,\"content\":\"<s>\",\"special\":true}],"
             "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
             "\"use_regex\":true},\"model\":{\"type\":\"BPE\",\"vocab\":{\"<s>\":1000");
  for (unsigned b = 0; b < 256; b++)
    fprintf(f, ",\"\\u%04x\":%u", b2u(b), 300 + (b * 7) % 256);
  fprintf(f, ",\"ab\":5,\"abc\":9,\"\\u0120ab\":7},\"merges\":[[\"a\",\"b\"],[\"ab\",\"c\"],[\"\\u0120\",\"ab\"]]}}");
  ck_assert_int_eq(fclose(f), 0);
  ck_assert_msg(kvs__tok_load(&t, path, err) == 0, "%s", err);
  ck_assert_uint_eq(kvs__tok_vocab_size(t), 1001);
  ck_assert_uint_eq(kvs__tok_special(t, "<s>"), 1000);
  ck_assert_uint_eq(enc(t, "abc<s> ab x", ids), 5);
  ck_assert_uint_eq(ids[0], 9);
  ck_assert_uint_eq(ids[1], 1000);
  ck_assert_uint_eq(ids[2], 7);
  ck_assert_uint_eq(ids[3], 300 + (' ' * 7) % 256);
  ck_assert_uint_eq(ids[4], 300 + ('x' * 7) % 256);
  kvs__tok_free(t);
  /* a missing byte symbol is refused */
  f = fopen(path, "w");
  fprintf(f, "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}");
  fclose(f);
  ck_assert_int_eq(kvs__tok_load(&t, path, err), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "has no token"));
}
END_TEST

START_TEST(corpus_packing)
{
  char path[128], err[256];
  kvs__tokenizer *t;
  kvs__corpus c;
  snprintf(path, sizeof path, "%s/tok.json", tmpdir);
  write_tokenizer(path, 0);
  ck_assert_int_eq(kvs__tok_load(&t, path, err), 0);
  /* four documents; contexts of 4 tokens start at document starts, the
   * rest of a document cut by a context end is skipped */
  const char *text = "abc abc\n\x1e\nxy\n\x1e\nabab\n\x1e\nabc";
  ck_assert_int_eq(kvs__corpus_build(&c, t, (const unsigned char *)text, strlen(text), 0, 4, 0), 0);
  ck_assert_uint_eq(c.n_docs, 4);
  uint32_t want[] = {0, 260, 261, 0, 2 + 'x', 2 + 'y', 0, 259, 259, 0, 260};
  ck_assert_uint_eq(c.n_ids, sizeof want / sizeof want[0]);
  for (size_t i = 0; i < c.n_ids; i++)
    ck_assert_uint_eq(c.ids[i], want[i]);
  ck_assert_uint_eq(c.n_ctx, 2);
  ck_assert_uint_eq(c.ctx_start[0], 0);
  ck_assert_uint_eq(c.ctx_start[1], 6);  /* the first BOS at or after 4 */
  ck_assert_uint_eq(c.ctx_len[1], 4);
  kvs__corpus_free(&c);
  /* max contexts, and a text shorter than one context */
  ck_assert_int_eq(kvs__corpus_build(&c, t, (const unsigned char *)text, strlen(text), 0, 4, 1), 0);
  ck_assert_uint_eq(c.n_ctx, 1);
  kvs__corpus_free(&c);
  ck_assert_int_eq(kvs__corpus_build(&c, t, (const unsigned char *)"ab", 2, 0, 16, 0), 0);
  ck_assert_uint_eq(c.n_ctx, 1);
  ck_assert_uint_eq(c.ctx_len[0], 2);
  kvs__corpus_free(&c);
  /* pieces of at most 3 tokens: BOS + 2 document tokens each */
  ck_assert_int_eq(kvs__corpus_build_pieces(&c, t, (const unsigned char *)text, strlen(text), 0, 4,
                                            0, 3), 0);
  ck_assert_uint_eq(c.n_docs, 4);
  uint32_t want3[] = {0, 260, 261, 0, 2 + 'x', 2 + 'y', 0, 259, 259, 0, 260};
  ck_assert_uint_eq(c.n_ids, sizeof want3 / sizeof want3[0]);
  for (size_t i = 0; i < c.n_ids; i++)
    ck_assert_uint_eq(c.ids[i], want3[i]);
  kvs__corpus_free(&c);
  ck_assert_int_eq(kvs__corpus_build_pieces(&c, t, (const unsigned char *)text, strlen(text), 0, 4,
                                            0, 2), 0);
  uint32_t want2[] = {0, 260, 0, 261, 0, 2 + 'x', 0, 2 + 'y', 0, 259, 0, 259, 0, 260};
  ck_assert_uint_eq(c.n_ids, sizeof want2 / sizeof want2[0]);
  for (size_t i = 0; i < c.n_ids; i++)
    ck_assert_uint_eq(c.ids[i], want2[i]);
  /* every context starts at a piece's BOS */
  ck_assert_uint_eq(c.n_ctx, 3);
  ck_assert_uint_eq(c.ctx_start[1], 4);
  ck_assert_uint_eq(c.ctx_start[2], 8);
  kvs__corpus_free(&c);
  ck_assert_int_eq(kvs__corpus_build_pieces(&c, t, (const unsigned char *)text, strlen(text), 0, 4,
                                            0, 1), -EINVAL);
  kvs__tok_free(t);
}
END_TEST

static void write_st(const char *path, const char *header, size_t data_len)
{
  FILE *f = fopen(path, "wb");
  uint64_t n = strlen(header);
  unsigned char len[8];
  for (int i = 0; i < 8; i++)
    len[i] = (unsigned char)(n >> (8 * i));
  ck_assert_ptr_nonnull(f);
  fwrite(len, 1, 8, f);
  fwrite(header, 1, n, f);
  for (size_t i = 0; i < data_len; i++)
    fputc((int)(i & 0xff), f);
  ck_assert_int_eq(fclose(f), 0);
}

START_TEST(safetensors_checks)
{
  char path[128], err[256];
  kvs__st st;
  snprintf(path, sizeof path, "%s/m.safetensors", tmpdir);
  write_st(path, "{\"__metadata__\":{\"format\":\"pt\"},\"w\":{\"dtype\":\"F16\",\"shape\":[2,3],"
                 "\"data_offsets\":[0,12]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
           20);
  ck_assert_msg(kvs__st_open(&st, path, err) == 0, "%s", err);
  ck_assert_uint_eq(st.n, 2);
  const kvs__st_tensor *w = kvs__st_find(&st, "w");
  ck_assert_ptr_nonnull(w);
  ck_assert_uint_eq(w->count, 6);
  ck_assert_uint_eq(w->shape[1], 3);
  ck_assert_ptr_null(kvs__st_find(&st, "nope"));
  kvs__st_close(&st);
  static const char *const bad[] = {
    "{\"w\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,14]}}",   /* size != shape */
    "{\"w\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[10,22]}}",  /* past the end */
    "{\"w\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[12,0]}}",   /* reversed */
    "{\"w\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[0,2]}}",       /* dtype */
    "{\"w\":{\"dtype\":\"F16\",\"shape\":[-1],\"data_offsets\":[0,2]}}",     /* shape */
    "{\"w\":{\"dtype\":\"F16\",\"data_offsets\":[0,2]}}",                    /* no shape */
    "[1]",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    write_st(path, bad[i], 20);
    ck_assert_msg(kvs__st_open(&st, path, err) == -EINVAL, "accepted %s", bad[i]);
  }
  /* header length larger than the file */
  FILE *f = fopen(path, "wb");
  fwrite("\xff\xff\x00\x00\x00\x00\x00\x00{}", 1, 10, f);
  fclose(f);
  ck_assert_int_eq(kvs__st_open(&st, path, err), -EINVAL);
}
END_TEST

START_TEST(measured_sinks)
{
  enum { L = 3, H = 4, N = 256 };
  static double recv[L][H][N];
  uint8_t flags[N];
  const int D = KVS_SINK_MIN_DIST, Q = KVS_SINK_MIN_QUERIES;
  /* uniform attention: every query spreads 1/(i+1) over its keys (only
   * distant queries count) */
  for (int l = 0; l < L; l++)
    for (int h = 0; h < H; h++)
      for (int i = 0; i < N; i++)
        for (int j = 0; j + D <= i; j++)
          recv[l][h][j] += 1.0 / (i + 1);
  ck_assert_uint_eq(kvs__sinks_measure(&recv[0][0][0], L, H, N, KVS_SINK_K, flags), 0);
  /* token 10 takes half of every distant query's attention in 2 heads of
   * 2 layers: 4 of the 12 heads, a third */
  for (int l = 0; l < 2; l++)
    for (int h = 0; h < 2; h++)
      for (int i = 10 + D; i < N; i++)
        recv[l][h][10] += 0.5;
  ck_assert_uint_eq(kvs__sinks_measure(&recv[0][0][0], L, H, N, KVS_SINK_K, flags), 1);
  ck_assert_uint_eq(flags[10], 1);
  /* 2 heads of 12 are not enough */
  for (int h = 0; h < 2; h++)
    for (int i = 10 + D; i < N; i++)
      recv[1][h][10] -= 0.5;
  ck_assert_uint_eq(kvs__sinks_measure(&recv[0][0][0], L, H, N, KVS_SINK_K, flags), 0);
  ck_assert_uint_eq(flags[10], 0);
  /* every head, but in one layer only: 4 of 12 heads is a sink */
  for (int h = 0; h < H; h++)
    for (int i = 20 + D; i < N; i++)
      recv[2][h][20] += 0.5;
  ck_assert_uint_eq(kvs__sinks_measure(&recv[0][0][0], L, H, N, KVS_SINK_K, flags), 1);
  ck_assert_uint_eq(flags[20], 1);
  /* near the end too few distant queries: never a sink, however strong;
   * the last token that can be one has exactly Q of them */
  int late = N - D - Q + 1, last = N - D - Q;
  for (int l = 0; l < L; l++)
    for (int h = 0; h < H; h++)
      for (int i = last + D; i < N; i++) {
        recv[l][h][late] += 0.9;
        recv[l][h][last] += 0.9;
      }
  ck_assert_uint_eq(kvs__sinks_measure(&recv[0][0][0], L, H, N, KVS_SINK_K, flags), 2);
  ck_assert_uint_eq(flags[late], 0);
  ck_assert_uint_eq(flags[last], 1);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("eval");
  TCase *tc = tcase_create("core");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, json_valid);
  tcase_add_test(tc, json_invalid);
  tcase_add_test(tc, pretokenize_rules);
  tcase_add_test(tc, bpe_encode);
  tcase_add_test(tc, pretokenize_gpt2);
  tcase_add_test(tc, bpe_hf_layout);
  tcase_add_test(tc, corpus_packing);
  tcase_add_test(tc, safetensors_checks);
  tcase_add_test(tc, measured_sinks);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
