/* A client of a Flock VM (flock run --vm, ps, status, kill, logs, wait,
 * leave): one secure connection to a machine, authenticated as a VM user
 * with the credentials under FLOCK_HOME, used synchronously -- send a
 * request, take the frames that come back. Threads: one at a time; the
 * stdin forwarder (cl_client_stdin) posts from its own thread. */
#ifndef FLOCK_CLUSTER_CL_CLIENT_H
#define FLOCK_CLUSTER_CL_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "base/fl_error.h"
#include "cluster/cl_conf.h"
#include "cluster/net.h"

struct cl_client;

/* Which VM: @vm_arg (--vm), else FLOCK_VM, else the only credentials in
 * FLOCK_HOME. Fills @cred and @host/@port (the machine to dial). 0, or
 * FL_EINVAL (a bad address: usage) / FL_ENOENT (no credentials) with
 * @err. */
int cl_client_target(const char *vm_arg, struct cl_cred *cred,
		     struct cl_addr *where, struct fl_err *err);

/* Connect to @host:@port as @cred's user: 0; FL_EAGAIN when the machine
 * cannot be reached (69); FL_EPERM when it refused us (77). */
int cl_client_open(const struct cl_cred *cred, const char *host,
		   uint16_t port, struct cl_client **out, struct fl_err *err);
void cl_client_close(struct cl_client *c);
/* Close the connection (if still open) and dial @host:@port instead,
 * keeping the stdin forwarder and what it sent. Frames not yet taken from
 * the old connection are dropped. */
int cl_client_reopen(struct cl_client *c, const char *host, uint16_t port,
		     struct fl_err *err);

/* Send a request; its request id. 0 on failure (the connection went). */
uint64_t cl_client_send(struct cl_client *c, uint8_t type, const void *p,
			size_t n);
/* Send a frame with the given request id (INPUT). */
int cl_client_send_req(struct cl_client *c, uint8_t type, uint64_t req,
		       const void *p, size_t n);

/* Wait until everything sent is written to the socket (or it closed). */
void cl_client_flush(struct cl_client *c);

/* The next frame that came: 0 with *@h and *@p (valid until the next
 * call); FL_EPIPE when the connection closed (@err says why); FL_EAGAIN
 * after @timeout_ms (-1: none). */
int cl_client_next(struct cl_client *c, struct net_header *h,
		   const uint8_t **p, int timeout_ms, struct fl_err *err);

/* Forward this process's stdin to process @pid as INPUT records, from a
 * thread of its own, starting at sequence number @seq. */
int cl_client_stdin(struct cl_client *c, uint64_t pid, uint64_t seq);
/* The next INPUT sequence number (for a reconnect). */
uint64_t cl_client_stdin_seq(struct cl_client *c);
/* After a reconnect: send again the INPUT records from sequence number
 * @from on (what the machine says it has not had). UINT64_MAX, or the
 * first one it lacks that we no longer keep (more than 16 MiB ago). */
uint64_t cl_client_resend_input(struct cl_client *c, uint64_t from);

/* The exit status for an ERROR frame's code (SPEC section 9). */
int cl_status_for(int code);

#endif
