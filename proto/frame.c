/* SPDX-License-Identifier: MIT */
/* Framing and op / policy names. */
#include <string.h>

#include "proto/proto.h"
#include "proto/internal.h"

void kvs__frame_put_len(uint8_t hdr[4], uint32_t len)
{
  hdr[0] = (uint8_t)(len >> 24);
  hdr[1] = (uint8_t)(len >> 16);
  hdr[2] = (uint8_t)(len >> 8);
  hdr[3] = (uint8_t)len;
}

uint32_t kvs__frame_get_len(const uint8_t hdr[4])
{
  return ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) |
         ((uint32_t)hdr[2] << 8) | hdr[3];
}

static const char *const op_names[KVS_OP__COUNT] = {
  [KVS_OP_HELLO] = "hello",     [KVS_OP_PUT] = "put",
  [KVS_OP_LOOKUP] = "lookup",   [KVS_OP_GET] = "get",
  [KVS_OP_RELEASE] = "release", [KVS_OP_STATS] = "stats",
  [KVS_OP_BYE] = "bye",         [KVS_OP_LIST] = "list",
  [KVS_OP_EVICT] = "evict",     [KVS_OP_RELOAD] = "reload",
  [KVS_OP_PROFILES] = "profiles", [KVS_OP_PING] = "ping",
  [KVS_OP_METRICS] = "metrics", [KVS_OP_TABLE] = "table",
  [KVS_OP_BELL] = "bell",
};

const char *kvs__op_name(kvs__op op)
{
  if ((int)op <= KVS_OP_INVALID || op >= KVS_OP__COUNT)
    return "invalid";
  return op_names[op];
}

kvs__op kvs__op_from_name(const char *s, size_t len)
{
  if (!s)
    return KVS_OP_INVALID;
  for (int i = KVS_OP_INVALID + 1; i < KVS_OP__COUNT; i++)
    if (strlen(op_names[i]) == len && memcmp(op_names[i], s, len) == 0)
      return (kvs__op)i;
  return KVS_OP_INVALID;
}

static const char *const policy_names[] = {
  [KVS_POLICY_DEFAULT] = "default", [KVS_POLICY_NONE] = "none",
  [KVS_POLICY_PFN] = "pfn",         [KVS_POLICY_KVSINK] = "kvsink",
};

const char *kvs__policy_name(int policy)
{
  if (policy < KVS_POLICY_DEFAULT || policy > KVS_POLICY_KVSINK)
    return "default";
  return policy_names[policy];
}

const char *kvs_policy_name(kvs_policy policy)
{
  return kvs__policy_name((int)policy);
}

int kvs__policy_from_name(const char *s, size_t len)
{
  for (int i = KVS_POLICY_DEFAULT; i <= KVS_POLICY_KVSINK; i++)
    if (strlen(policy_names[i]) == len && memcmp(policy_names[i], s, len) == 0)
      return i;
  return -1;
}

int kvs__bits_valid(uint32_t bits)
{
  return KVS_BITS_VALID(bits);
}
