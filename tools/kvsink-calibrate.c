/* SPDX-License-Identifier: MIT */
/* kvsink-calibrate: find a model's sink profile (l_E, C*, tau) from
 * hidden-state dumps and write it for kvsinkd's profiles_dir. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kvsink.h>
#include "tools/cli.h"

static const char prog[] = "kvsink-calibrate";

/* no massive activations (or they overlap the ordinary tokens): nothing
 * to write, which a script may want to tell from a failure */
#define EXIT_NO_SINKS 4

static void help(void)
{
  printf("usage: kvsink-calibrate [OPTION]... --model ID -o OUT.profile DUMP...\n"
         "Find a model's attention-sink profile (emergence layer, outlier channels,\n"
         "threshold) from hidden-state dumps, one sequence per DUMP, and write it\n"
         "for kvsinkd's profiles_dir.\n"
         "\n"
         "  -m, --model ID          model id clients send in hello (required)\n"
         "  -o, --output FILE       where to write the profile (required)\n"
         "      --ratio R           outlier token: max|h| > R x the median token's (default 8)\n"
         "      --max-channels N    at most N outlier channels, 1..64 (default 8)\n"
         "      --max-sinks N       predicted sinks per sequence, into the profile (default 16)\n"
         "      --pfn N             Preserve-First-N, into the profile (default 1)\n"
         "  -h, --help              this text\n"
         "  -V, --version           version\n"
         "\n"
         "Exit status: 0 profile written, 1 error, 2 bad command line,\n"
         "4 no massive activations found (nothing written).\n"
         "Dump and profile formats: kvsink-calibrate(1), kvsinkd.conf(5).\n");
}

int main(int argc, char **argv)
{
  static const struct option opts[] = {
    {"ratio", required_argument, NULL, 'r'},     {"max-channels", required_argument, NULL, 'c'},
    {"max-sinks", required_argument, NULL, 's'}, {"pfn", required_argument, NULL, 'p'},
    {"model", required_argument, NULL, 'm'},     {"output", required_argument, NULL, 'o'},
    {"help", no_argument, NULL, 'h'},            {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
  };
  kvs_calib_options o;
  kvs_calib_options_init(&o);
  const char *model = NULL, *out = NULL;
  argv[0] = (char *)prog; /* getopt names the program in its messages */
  int ch;
  long v;
  while ((ch = getopt_long(argc, argv, "o:m:hV", opts, NULL)) != -1) {
    switch (ch) {
    case 'r': {
      char *end;
      errno = 0;
      double d = strtod(optarg, &end);
      if (!*optarg || *end || errno || !(d >= 1.0 && d <= 1e6))
        return kvs__cli_usage_error(prog, "--ratio wants a number 1..1e6, not '%s'", optarg);
      o.ratio = (float)d;
      break;
    }
    case 'c':
      if (kvs__cli_long(optarg, 1, 64, &v))
        return kvs__cli_usage_error(prog, "--max-channels wants 1..64, not '%s'", optarg);
      o.max_channels = (uint32_t)v;
      break;
    case 's':
    case 'p':
      if (kvs__cli_long(optarg, 0, 65536, &v))
        return kvs__cli_usage_error(prog, "--%s wants an integer 0..65536, not '%s'",
                                    ch == 's' ? "max-sinks" : "pfn", optarg);
      if (ch == 's')
        o.max_sinks = (uint32_t)v;
      else
        o.pfn = (uint32_t)v;
      break;
    case 'm': model = optarg; break;
    case 'o': out = optarg; break;
    case 'h': help(); return KVS__EXIT_OK;
    case 'V': kvs__cli_version(prog); return KVS__EXIT_OK;
    default: return kvs__cli_usage_error(prog, NULL); /* getopt named the option */
    }
  }
  if (!model)
    return kvs__cli_usage_error(prog, "--model ID is required");
  if (!out)
    return kvs__cli_usage_error(prog, "-o OUT.profile is required");
  if (optind >= argc)
    return kvs__cli_usage_error(prog, "no DUMP file given");

  size_t nd = (size_t)(argc - optind), loaded = 0;
  kvs_dump **ds = calloc(nd, sizeof *ds);
  kvs_profile *p = NULL;
  char msg[256];
  int status = KVS__EXIT_FAIL;
  if (!ds) {
    fprintf(stderr, "%s: out of memory\n", prog);
    return KVS__EXIT_FAIL;
  }
  for (; loaded < nd; loaded++) {
    if (kvs_dump_load(&ds[loaded], argv[optind + (int)loaded], msg, sizeof msg) < 0) {
      fprintf(stderr, "%s: %s\n", prog, msg);
      goto done;
    }
  }
  int rc = kvs_calibrate(&p, model, (const kvs_dump *const *)ds, nd, &o, msg, sizeof msg);
  if (rc < 0) {
    fprintf(stderr, "%s: %s\n", prog, msg);
    status = rc == -ENOENT || rc == -ERANGE ? EXIT_NO_SINKS : KVS__EXIT_FAIL;
    goto done;
  }
  printf("%s\n", msg);
  rc = kvs_profile_save(p, out);
  if (rc < 0) {
    fprintf(stderr, "%s: %s: %s\n", prog, out, strerror(-rc));
    goto done;
  }
  status = KVS__EXIT_OK;
done:
  for (size_t i = 0; i < loaded; i++)
    kvs_dump_free(ds[i]);
  free(ds);
  kvs_profile_free(p);
  return status;
}
