/* kvsink-calibrate: find a model's sink profile (l_E, C*, tau) from
 * hidden-state dumps and write it for kvsinkd's profiles_dir. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/sink.h"

static void usage(FILE *f)
{
  fprintf(f,
          "usage: kvsink-calibrate [--ratio R] [--max-channels N] [--max-sinks N] [--pfn N]\n"
          "                        --model ID -o OUT.profile DUMP...\n"
          "Exit status: 0 profile written, 2 no massive activations found, 1 other errors.\n");
}

static int num(const char *s, double lo, double hi, double *out)
{
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (!*s || *end || errno || !(v >= lo && v <= hi)) return -1;
  *out = v;
  return 0;
}

int main(int argc, char **argv)
{
  static const struct option opts[] = {
    { "ratio", required_argument, NULL, 'r' },       { "max-channels", required_argument, NULL, 'c' },
    { "max-sinks", required_argument, NULL, 's' },   { "pfn", required_argument, NULL, 'p' },
    { "model", required_argument, NULL, 'm' },       { "output", required_argument, NULL, 'o' },
    { "help", no_argument, NULL, 'h' },              { NULL, 0, NULL, 0 },
  };
  kvs__calib_opts o = { 8.f, 50u, 8u, 16u, 1u };
  const char *model = NULL, *out = NULL;
  int ch;
  double v;
  while ((ch = getopt_long(argc, argv, "o:m:h", opts, NULL)) != -1) {
    switch (ch) {
    case 'r':
      if (num(optarg, 1.0, 1e6, &v)) { fprintf(stderr, "kvsink-calibrate: --ratio wants a number >= 1\n"); return 1; }
      o.ratio = (float)v;
      break;
    case 'c':
      if (num(optarg, 1, KVS_PROFILE_MAX_CHANNELS, &v) || v != (uint32_t)v) {
        fprintf(stderr, "kvsink-calibrate: --max-channels wants 1..%u\n", KVS_PROFILE_MAX_CHANNELS);
        return 1;
      }
      o.max_channels = (uint32_t)v;
      break;
    case 's':
    case 'p':
      if (num(optarg, 0, 65536, &v) || v != (uint32_t)v) {
        fprintf(stderr, "kvsink-calibrate: --%s wants an integer 0..65536\n", ch == 's' ? "max-sinks" : "pfn");
        return 1;
      }
      if (ch == 's') o.max_sinks = (uint32_t)v; else o.pfn = (uint32_t)v;
      break;
    case 'm': model = optarg; break;
    case 'o': out = optarg; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 1;
    }
  }
  if (!model || !out || optind >= argc) { usage(stderr); return 1; }
  kvs__profile p;
  memset(&p, 0, sizeof p);
  p.outliers = -1.f;
  if (strlen(model) >= sizeof p.model_id) { fprintf(stderr, "kvsink-calibrate: model id longer than 128 bytes\n"); return 1; }
  strcpy(p.model_id, model);

  size_t nd = (size_t)(argc - optind);
  kvs__dump *ds = calloc(nd, sizeof *ds);
  if (!ds) { fprintf(stderr, "kvsink-calibrate: out of memory\n"); return 1; }
  char msg[256];
  int status = 1;
  size_t loaded = 0;
  for (; loaded < nd; loaded++) {
    if (kvs__dump_load(argv[optind + (int)loaded], &ds[loaded], msg)) {
      fprintf(stderr, "kvsink-calibrate: %s\n", msg);
      goto done;
    }
  }
  int rc = kvs__calibrate(ds, nd, &o, &p, msg);
  if (rc) {
    fprintf(stderr, "kvsink-calibrate: %s\n", msg);
    status = rc == -ENOENT ? 2 : 1;
    goto done;
  }
  printf("%s\n", msg);
  rc = kvs__profile_save(out, &p);
  if (rc) {
    fprintf(stderr, "kvsink-calibrate: %s: %s\n", out, strerror(-rc));
    goto done;
  }
  status = 0;
done:
  for (size_t i = 0; i < loaded; i++) kvs__dump_free(&ds[i]);
  free(ds);
  return status;
}
