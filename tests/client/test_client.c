/* SPDX-License-Identifier: MIT */
/* Unit tests of the client's socket layer (client/conn.c) against a fake
 * daemon on a socketpair: what the daemon sends is validated, a vanished
 * peer gives an error code and never SIGPIPE, an fd rides on a reply. */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/conn.h"

static kvs__conn conn;
static int peer;

static void setup(void)
{
  int sv[2];
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  memset(&conn, 0, sizeof conn);
  conn.fd = sv[0];
  conn.next_id = 1;
  peer = sv[1];
}

static void teardown(void)
{
  kvs__conn_close(&conn);
  if (peer >= 0)
    close(peer);
}

/* Queue a reply for request id on the peer side before the call. */
static void queue_rep(uint64_t id, int32_t err, const char *msg)
{
  kvs__rep rep;
  char *buf;
  size_t len;
  memset(&rep, 0, sizeof rep);
  rep.op = KVS_OP_PING;
  rep.id = id;
  rep.err = err;
  if (msg)
    snprintf(rep.errmsg, sizeof rep.errmsg, "%s", msg);
  ck_assert_int_eq(kvs__encode_rep(&rep, &buf, &len), 0);
  ck_assert_int_eq(write(peer, buf, len), (ssize_t)len);
  free(buf);
}

static int ping(void)
{
  kvs__req req;
  kvs__rep rep;
  memset(&req, 0, sizeof req);
  req.op = KVS_OP_PING;
  int r = kvs__conn_call(&conn, &req, &rep, NULL);
  kvs__rep_free(&rep);
  return r;
}

START_TEST(ok_and_ids_increase)
{
  queue_rep(1, 0, NULL);
  queue_rep(2, 0, NULL);
  ck_assert_int_eq(ping(), 0);
  ck_assert_int_eq(ping(), 0);
  ck_assert_uint_eq(conn.next_id, 3);
}
END_TEST

START_TEST(error_reply_keeps_message)
{
  queue_rep(1, -ENOSPC, "pool full");
  ck_assert_int_eq(ping(), -ENOSPC);
  ck_assert_str_eq(conn.errmsg, "pool full");
  queue_rep(2, 0, NULL); /* the connection stays usable */
  ck_assert_int_eq(ping(), 0);
}
END_TEST

START_TEST(wrong_id_is_eproto)
{
  queue_rep(7, 0, NULL);
  ck_assert_int_eq(ping(), -EPROTO);
  ck_assert_int_eq(ping(), -ENOTCONN); /* out of sync: no more calls */
}
END_TEST

START_TEST(oversized_frame_rejected)
{
  uint8_t hdr[4];
  kvs__frame_put_len(hdr, KVS_MAX_FRAME + 1);
  ck_assert_int_eq(write(peer, hdr, 4), 4);
  ck_assert_int_eq(ping(), -EBADMSG);
}
END_TEST

START_TEST(garbage_payload_rejected)
{
  uint8_t f[8] = {0, 0, 0, 4, 0xc1, 0xc1, 0xc1, 0xc1}; /* 0xc1: never used */
  ck_assert_int_eq(write(peer, f, sizeof f), (ssize_t)sizeof f);
  int r = ping();
  ck_assert_int_lt(r, 0);
  ck_assert_int_ne(r, -ENOTCONN);
}
END_TEST

START_TEST(peer_gone_no_sigpipe)
{
  signal(SIGPIPE, SIG_DFL); /* a SIGPIPE would kill the test */
  close(peer);
  peer = -1;
  int r = ping();
  ck_assert(r == -EPIPE || r == -ECONNRESET);
}
END_TEST

START_TEST(peer_closes_mid_frame)
{
  uint8_t hdr[6] = {0, 0, 0, 40, 0x81, 0xa2};
  ck_assert_int_eq(write(peer, hdr, sizeof hdr), (ssize_t)sizeof hdr);
  shutdown(peer, SHUT_WR);
  ck_assert_int_eq(ping(), -ECONNRESET);
}
END_TEST

START_TEST(fd_collected_from_first_bytes)
{
  kvs__rep rep;
  char *buf;
  size_t len;
  int pfd[2];
  ck_assert_int_eq(pipe(pfd), 0);
  memset(&rep, 0, sizeof rep);
  rep.op = KVS_OP_PING;
  rep.id = 1;
  ck_assert_int_eq(kvs__encode_rep(&rep, &buf, &len), 0);
  /* first byte with the fd, the rest in a second write */
  union { struct cmsghdr a; char b[CMSG_SPACE(sizeof(int))]; } cb;
  struct iovec iov = {.iov_base = buf, .iov_len = 1};
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.b,
                      .msg_controllen = sizeof cb.b};
  struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(cm), &pfd[0], sizeof(int));
  ck_assert_int_eq(sendmsg(peer, &mh, 0), 1);
  ck_assert_int_eq(write(peer, buf + 1, len - 1), (ssize_t)(len - 1));
  free(buf);

  kvs__req req;
  kvs__rep got;
  int fd = -1;
  memset(&req, 0, sizeof req);
  req.op = KVS_OP_PING;
  ck_assert_int_eq(kvs__conn_call(&conn, &req, &got, &fd), 0);
  kvs__rep_free(&got);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(pfd[1], "x", 1), 1); /* it is the pipe's read end */
  char c = 0;
  ck_assert_int_eq(read(fd, &c, 1), 1);
  ck_assert_int_eq(c, 'x');
  close(fd);
  close(pfd[0]);
  close(pfd[1]);
}
END_TEST

START_TEST(default_path)
{
  setenv("KVSINK_SOCKET", "/tmp/x.sock", 1);
  ck_assert_str_eq(kvs__conn_default_path(NULL), "/tmp/x.sock");
  ck_assert_str_eq(kvs__conn_default_path("/a"), "/a");
  unsetenv("KVSINK_SOCKET");
  ck_assert_str_eq(kvs__conn_default_path(NULL), "/run/kvsink/kvsinkd.sock");
}
END_TEST

/* A reply larger than the receive buffer (read in place) followed, in the
 * same write, by a small one (left in the buffer for the next call). */
START_TEST(large_reply_then_small_one_buffered)
{
  kvs__rep rep;
  char *buf;
  size_t len;
  memset(&rep, 0, sizeof rep);
  rep.op = KVS_OP_PING;
  rep.id = 1;
  ck_assert_int_eq(kvs__encode_rep(&rep, &buf, &len), 0);
  /* one more key the decoder skips: "pad" => a 9000-byte bin */
  ck_assert(len > 5 && (uint8_t)buf[4] >= 0x80 && (uint8_t)buf[4] < 0x8f);
  size_t pad = 9000, big = len + 4 + 3 + pad;
  uint8_t *f = malloc(big);
  memcpy(f, buf, len);
  free(buf);
  f[4]++;
  uint8_t *p = f + len;
  *p++ = 0xa3;
  memcpy(p, "pad", 3);
  p += 3;
  *p++ = 0xc5;
  *p++ = (uint8_t)(pad >> 8);
  *p++ = (uint8_t)pad;
  memset(p, 0x55, pad);
  p += pad;
  kvs__frame_put_len(f, (uint32_t)(p - f - 4));
  ck_assert_uint_gt((size_t)(p - f), KVS__CONN_RBUF);
  ck_assert_int_eq(write(peer, f, (size_t)(p - f)), (ssize_t)(p - f));
  free(f);
  queue_rep(2, 0, NULL);
  ck_assert_int_eq(ping(), 0);
  ck_assert_int_eq(ping(), 0);
  ck_assert_uint_eq(conn.rpos, conn.rlen); /* nothing left over */
}
END_TEST

/* Busy-poll: a reply that comes within the spin and one that comes after
 * it (the blocking read takes over) are both received. */
static void reply_later(uint64_t id, unsigned delay_us)
{
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    usleep(delay_us);
    queue_rep(id, 0, NULL);
    _exit(0);
  }
}

START_TEST(busy_poll_then_block)
{
  conn.spin_us = 100000;
  reply_later(1, 2000);
  ck_assert_int_eq(ping(), 0);
  conn.spin_us = 200;
  reply_later(2, 50000);
  ck_assert_int_eq(ping(), 0);
  while (wait(NULL) > 0) {}
}
END_TEST

START_TEST(busy_poll_env)
{
  /* set: a number, 0 included (it turns the device requests' default
   * spin off too); anything else counts as unset */
  static const struct { const char *v; int set; uint32_t want; } c[] = {
      {"", 0, 0}, {"50", 1, 50}, {"0", 1, 0}, {"abc", 0, 0}, {"-5", 0, 0}, {"12x", 0, 0},
      {"999999999", 1, KVS__CONN_MAX_SPIN_US}};
  uint32_t us;
  for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
    setenv("KVSINK_BUSY_POLL_US", c[i].v, 1);
    us = 12345;
    ck_assert_int_eq(kvs__conn_env_spin(&us), c[i].set);
    ck_assert_uint_eq(us, c[i].want);
  }
  unsetenv("KVSINK_BUSY_POLL_US");
  us = 12345;
  ck_assert_int_eq(kvs__conn_env_spin(&us), 0);
  ck_assert_uint_eq(us, 0);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("client");
  TCase *tc = tcase_create("conn");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, ok_and_ids_increase);
  tcase_add_test(tc, error_reply_keeps_message);
  tcase_add_test(tc, wrong_id_is_eproto);
  tcase_add_test(tc, oversized_frame_rejected);
  tcase_add_test(tc, garbage_payload_rejected);
  tcase_add_test(tc, peer_gone_no_sigpipe);
  tcase_add_test(tc, peer_closes_mid_frame);
  tcase_add_test(tc, fd_collected_from_first_bytes);
  tcase_add_test(tc, default_path);
  tcase_add_test(tc, large_reply_then_small_one_buffered);
  tcase_add_test(tc, busy_poll_then_block);
  tcase_add_test(tc, busy_poll_env);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
