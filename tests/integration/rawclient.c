/* SPDX-License-Identifier: MIT */
/* rawclient: talk to kvsinkd with hand-made frames, for the shell tests.
 *
 *   rawclient SOCKET CMD...
 *     send JSON   encode JSON (objects, arrays, strings, numbers, true,
 *                 false, null) as msgpack and send it as one frame
 *     raw HEX     send these bytes as they are (no length header added)
 *     recv        read one frame, print it as msgpack text on one line;
 *                 an fd passed with it is printed as "fd memfd size=N seals=S"
 *     eof         expect the daemon to close the connection: prints "closed"
 *                 (exit 3 when a frame arrives instead)
 *     wait MS     sleep
 *     flood N     send N pings without reading the replies (fills the
 *                 daemon's write queue)
 * Exit 0 when every command worked, 1 usage, 2 I/O error.
 * With KVS_RAW_CAPTURE=DIR every payload sent by `send` and received by
 * `recv` is also written to DIR (the fuzz corpora come from real traffic:
 * tests/fuzz/gen-corpus.sh).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char *jp; /* JSON cursor */

static void ws(void) { while (isspace((unsigned char)*jp)) jp++; }

static int json(msgpack_packer *pk);

static int json_str(msgpack_packer *pk)
{
  const char *s = ++jp;
  while (*jp && *jp != '"') jp++;
  if (!*jp) return -1;
  msgpack_pack_str(pk, (size_t)(jp - s));
  msgpack_pack_str_body(pk, s, (size_t)(jp - s));
  jp++;
  return 0;
}

/* Count the elements of the array/object at jp without consuming it. */
static int count_items(void)
{
  int depth = 0, n = 0, any = 0, instr = 0;
  for (const char *p = jp + 1; *p; p++) {
    if (instr) { if (*p == '"') instr = 0; continue; }
    if (*p == '"') { instr = 1; any = 1; continue; }
    if (*p == '[' || *p == '{') { depth++; any = 1; continue; }
    if (*p == ']' || *p == '}') {
      if (depth-- == 0) return any ? n + 1 : 0;
      continue;
    }
    if (*p == ',' && depth == 0) n++;
    else if (!isspace((unsigned char)*p)) any = 1;
  }
  return -1;
}

static int json(msgpack_packer *pk)
{
  ws();
  if (*jp == '{' || *jp == '[') {
    int obj = *jp == '{', n = count_items();
    if (n < 0) return -1;
    if (obj) msgpack_pack_map(pk, (size_t)n); else msgpack_pack_array(pk, (size_t)n);
    jp++;
    for (int i = 0; i < n; i++) {
      ws();
      if (obj) {
        if (*jp != '"' || json_str(pk) < 0) return -1;
        ws();
        if (*jp++ != ':') return -1;
      }
      if (json(pk) < 0) return -1;
      ws();
      if (i + 1 < n && *jp++ != ',') return -1;
    }
    ws();
    jp++;
    return 0;
  }
  if (*jp == '"') return json_str(pk);
  if (strncmp(jp, "true", 4) == 0) { jp += 4; return msgpack_pack_true(pk); }
  if (strncmp(jp, "false", 5) == 0) { jp += 5; return msgpack_pack_false(pk); }
  if (strncmp(jp, "null", 4) == 0) { jp += 4; return msgpack_pack_nil(pk); }
  char *end;
  const char *s = jp;
  while (*jp && strchr("+-0123456789.eE", *jp)) jp++;
  if (jp == s) return -1;
  if (memchr(s, '.', (size_t)(jp - s)) || memchr(s, 'e', (size_t)(jp - s))) {
    double d = strtod(s, &end);
    return msgpack_pack_double(pk, d);
  }
  if (*s == '-') return msgpack_pack_int64(pk, strtoll(s, &end, 10));
  return msgpack_pack_uint64(pk, strtoull(s, &end, 10));
}

/* KVS_RAW_CAPTURE: one file per frame payload, DIR/PID-N-req|rep. */
static void capture(const void *b, size_t n, const char *what)
{
  static int count;
  const char *dir = getenv("KVS_RAW_CAPTURE");
  if (!dir || !*dir)
    return;
  char path[4096];
  snprintf(path, sizeof path, "%s/%d-%03d-%s", dir, (int)getpid(), count++, what);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(b, 1, n, f) != n || fclose(f) != 0) {
    perror(path);
    exit(2);
  }
}

static int write_all(int fd, const void *b, size_t n)
{
  const char *p = b;
  while (n) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Read exactly n bytes; the first recvmsg may carry an fd. 0 ok, 1 EOF. */
static int read_all(int fd, void *b, size_t n, int *rfd)
{
  char *p = b;
  while (n) {
    union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int) * 4)]; } cm;
    struct iovec iov = {.iov_base = p, .iov_len = n};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf,
                        .msg_controllen = sizeof cm.buf};
    ssize_t r = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno == ECONNRESET ? 1 : -1;
    if (r == 0) return 1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && rfd)
        memcpy(rfd, CMSG_DATA(c), sizeof(int));
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

static int do_recv(int fd, int expect_eof)
{
  unsigned char hdr[4];
  int rfd = -1;
  int r = read_all(fd, hdr, 4, &rfd);
  if (r == 1) {
    printf(expect_eof ? "closed\n" : "eof\n");
    return expect_eof ? 0 : 2;
  }
  if (r < 0) { perror("recv"); return 2; }
  uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
  if (len > (1u << 24)) { fprintf(stderr, "frame of %u bytes\n", len); return 2; }
  char *buf = malloc(len ? len : 1);
  if (!buf || read_all(fd, buf, len, &rfd) != 0) { fprintf(stderr, "short frame\n"); return 2; }
  capture(buf, len, "rep");
  msgpack_unpacked u;
  msgpack_unpacked_init(&u);
  size_t off = 0;
  if (msgpack_unpack_next(&u, buf, len, &off) != MSGPACK_UNPACK_SUCCESS) {
    fprintf(stderr, "reply is not msgpack\n");
    return 2;
  }
  static char text[65536];
  msgpack_object_print_buffer(text, sizeof text, u.data);
  printf("%s\n", text);
  msgpack_unpacked_destroy(&u);
  free(buf);
  if (rfd >= 0) {
    struct stat st;
    int seals = fcntl(rfd, F_GET_SEALS);
    if (fstat(rfd, &st) == 0)
      printf("fd memfd size=%lld seals=%d\n", (long long)st.st_size, seals);
    close(rfd);
  }
  fflush(stdout);
  return expect_eof ? 3 : 0;
}

static int unhex(const char *s, unsigned char **out, size_t *n)
{
  size_t l = strlen(s);
  if (l % 2) return -1;
  *out = malloc(l / 2 + 1);
  for (size_t i = 0; i < l / 2; i++) {
    unsigned v;
    if (sscanf(s + 2 * i, "%2x", &v) != 1) return -1;
    (*out)[i] = (unsigned char)v;
  }
  *n = l / 2;
  return 0;
}

int main(int argc, char **argv)
{
  if (argc < 2) {
    fprintf(stderr, "usage: rawclient SOCKET [send JSON|raw HEX|recv|eof|wait MS]...\n");
    return 1;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", argv[1]);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    perror("connect");
    return 2;
  }
  for (int i = 2; i < argc; i++) {
    const char *cmd = argv[i];
    int r = 0;
    if (strcmp(cmd, "recv") == 0 || strcmp(cmd, "eof") == 0) {
      r = do_recv(fd, cmd[0] == 'e');
    } else if (strcmp(cmd, "wait") == 0 && i + 1 < argc) {
      struct timespec ts = {.tv_sec = atoi(argv[i + 1]) / 1000,
                            .tv_nsec = (long)(atoi(argv[i + 1]) % 1000) * 1000000L};
      nanosleep(&ts, NULL);
      i++;
    } else if (strcmp(cmd, "flood") == 0 && i + 1 < argc) {
      long n = atol(argv[++i]);
      for (long k = 0; k < n && r == 0; k++) {
        char b[64];
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        snprintf(b, sizeof b, "{\"op\":\"ping\",\"id\":%ld}", k + 1000);
        jp = b;
        json(&pk);
        unsigned char hdr[4] = {0, 0, 0, (unsigned char)sb.size};
        if (write_all(fd, hdr, 4) < 0 || write_all(fd, sb.data, sb.size) < 0) r = 2;
        msgpack_sbuffer_destroy(&sb);
      }
    } else if (strcmp(cmd, "send") == 0 && i + 1 < argc) {
      msgpack_sbuffer sb;
      msgpack_sbuffer_init(&sb);
      msgpack_packer pk;
      msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
      jp = argv[++i];
      if (json(&pk) < 0) {
        fprintf(stderr, "bad JSON: %s\n", argv[i]);
        return 1;
      }
      unsigned char hdr[4] = {(unsigned char)(sb.size >> 24), (unsigned char)(sb.size >> 16),
                              (unsigned char)(sb.size >> 8), (unsigned char)sb.size};
      capture(sb.data, sb.size, "req");
      if (write_all(fd, hdr, 4) < 0 || write_all(fd, sb.data, sb.size) < 0) r = 2;
      msgpack_sbuffer_destroy(&sb);
    } else if (strcmp(cmd, "raw") == 0 && i + 1 < argc) {
      unsigned char *b;
      size_t n;
      if (unhex(argv[++i], &b, &n) < 0) {
        fprintf(stderr, "bad hex\n");
        return 1;
      }
      if (write_all(fd, b, n) < 0) r = 2;
      free(b);
    } else {
      fprintf(stderr, "unknown command %s\n", cmd);
      return 1;
    }
    if (r) return r;
  }
  close(fd);
  return 0;
}
