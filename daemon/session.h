/* One client connection: framing, dispatch, the session's seqs and segment. */
#ifndef KVS_DAEMON_SESSION_H
#define KVS_DAEMON_SESSION_H

#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "daemon/devseg.h"
#include "daemon/segment.h"
#include "daemon/server.h"

typedef struct kvs__seq_slot {
  uint64_t id;
  kvs__seq *seq;
} kvs__seq_slot;

struct kvs__session {
  uv_pipe_t pipe;
  kvs__server *srv;
  kvs__session *prev, *next;
  uint64_t id;
  uid_t uid;
  pid_t pid;
  char ns[64];
  int hello_done;
  int closing;
  kvs__space *space;
  kvs__space_key key;
  kvs__segment seg;
  kvs__devseg dseg;        /* device segment; dseg.vmm.ptr 0 = none */
  kvs__store *store;       /* the pool of the session (its GPU's, else the first) */
  kvs__backend *backend;
  kvs__seq_slot *seqs;
  size_t n_seqs, cap_seqs;
  uint8_t *buf;            /* received bytes not yet consumed */
  size_t buf_len, buf_cap;
  uv_shutdown_t shutdown_req;
};

/* Accept one connection from the listener; closes it on failure. */
void kvs__session_accept(kvs__server *srv);
/* Finish replies already queued, then close (graceful stop). */
void kvs__session_shutdown(kvs__session *ss);
/* Close at once, dropping replies not yet written. */
void kvs__session_abort(kvs__session *ss);

#endif
