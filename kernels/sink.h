/* SPDX-License-Identifier: MIT */
/* KVSink sink profiles, online prediction and offline calibration. */
#ifndef KVS_KERNELS_SINK_H
#define KVS_KERNELS_SINK_H

#include <stddef.h>
#include <stdint.h>

#define KVS_PROFILE_MAX_CHANNELS 64u

/* One model's profile (file format: kvsinkd.conf(5), "PROFILES"):
 *   model = <id>
 *   layer = <l_E>            hidden state after this layer (0-based)
 *   channels = c1,c2,...     C*
 *   tau = <float>
 *   max_sinks = <n>          per sequence
 *   pfn = <n>                Preserve-First-N to add
 *   outliers = <fraction>    optional: this model's default dense-and-sparse
 *                            outlier fraction (0..0.01) for sessions that do
 *                            not choose one
 * One `key = value` per line, `#` starts a comment, blank lines are
 * ignored; every key but outliers is required exactly once; unknown keys, empty or
 * repeated channels, more than KVS_PROFILE_MAX_CHANNELS channels, a
 * channel or layer above 65535, tau not finite or <= 0, and a model id
 * with blanks are errors. kvs__profile_save writes aside and renames.
 */
typedef struct kvs__profile {
  char model_id[129];
  uint32_t layer;
  uint32_t n_channels;
  uint32_t channels[KVS_PROFILE_MAX_CHANNELS];
  float tau;
  uint32_t max_sinks;
  uint32_t pfn;
  float outliers;      /* < 0: not set (the daemon's default applies) */
} kvs__profile;

/* Parse / write a profile file. Parse errors return -EINVAL with a message
 * naming the line in errmsg (256 bytes). */
int kvs__profile_load(const char *path, kvs__profile *p, char *errmsg);
int kvs__profile_save(const char *path, const kvs__profile *p);

/* Online prediction. act: float32 [n][n_ch] (summary of n tokens). Token t
 * is a candidate when max_c |act[t][c]| > tau; at most `budget` are
 * flagged, largest first (ties: earlier token). flags[t] is set to 1 for
 * flagged tokens and left alone otherwise. Returns the number flagged or
 * KVS_ENAN when act holds NaN/Inf. */
int kvs__predict_sinks(const float *act, uint32_t n, uint32_t n_ch, float tau,
                       uint32_t budget, uint8_t *flags);

/* Offline calibration from hidden-state dumps.
 * Dump file layout (little-endian), documented in kvsink-calibrate(1):
 *   char magic[8] = "KVSDUMP1"; u32 n_layers, n_tokens, hidden, dtype
 *   (1 = fp16, 3 = fp32); then data [n_layers][n_tokens][hidden], where
 *   layer l is the hidden state (residual stream) after decoder layer l. */
typedef struct kvs__dump {
  uint32_t n_layers, n_tokens, hidden;
  float *h;            /* [n_layers][n_tokens][hidden], fp32 */
} kvs__dump;

int kvs__dump_load(const char *path, kvs__dump *d, char *errmsg);
void kvs__dump_free(kvs__dump *d);

typedef struct kvs__calib_opts {
  float ratio;          /* outlier tokens: max|h| > ratio * median token's (default 8) */
  uint32_t max_outlier_tokens; /* "a few": at most this share... count per 1000 tokens (default 50) */
  uint32_t max_channels;       /* size of C* (default 8) */
  uint32_t max_sinks, pfn;     /* copied into the profile */
} kvs__calib_opts;

/* Find l_E, C* and tau. Returns 0 and fills p, or -ENOENT when the dumps
 * show no massive activations (with the reason in errmsg). Decisions:
 * - zero opts take the defaults (ratio 8, 50 per mille, 8 channels);
 *   the median and threshold are per dump (one dump = one sequence).
 * - l_E is the earliest layer whose outlier set is non-empty and few in it
 *   and in every later layer except the last one (final layers often lose
 *   the massive activations); the last layer itself may be l_E.
 * - C* candidates are all channels where outlier tokens exceed the
 *   threshold, ranked by how many do (ties: lower channel); a channel is
 *   kept while those kept cover < 90% of outlier tokens, or when it alone
 *   covers >= 90%; at most max_channels; stored in channel order.
 * - tau = sqrt(lo * hi), lo = smallest outlier token's max over C*, hi =
 *   largest other token's; lo <= hi returns -ERANGE ("overlap").
 * - On success errmsg holds a one-line summary. model_id is kept from p. */
int kvs__calibrate(const kvs__dump *dumps, size_t n_dumps, const kvs__calib_opts *o,
                   kvs__profile *p, char *errmsg);

#endif
