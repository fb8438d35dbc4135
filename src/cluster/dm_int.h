/* Inside the daemon (dm.h). Three parts:
 *   dm_main.c  start-up, Raft, proposals (any machine proposes; a
 *              follower forwards to the leader), the leader's duties
 *              (the barrier after every election, membership), timers;
 *   dm_net.c   links: connections to peers, joiners and clients, the
 *              handshake's identities, heartbeats, and the Raft
 *              transport relayed over the secure connections;
 *   dm_proc.c  what clients ask: processes on this machine's node, their
 *              output logs and streams, ps, status, kill, wait, leave.
 * Everything here runs on the loop thread, except each process's waiter
 * thread, which only calls vm_proc_wait() and uv_async_send(). */
#ifndef FLOCK_CLUSTER_DM_INT_H
#define FLOCK_CLUSTER_DM_INT_H

#include <pthread.h>
#include <stdio.h>

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include "cluster/ctl.h"
#include "cluster/ctl_raft.h"
#include "cluster/dm.h"
#include "cluster/dm_wire.h"
#include "cluster/net.h"
#include "cluster/net_conn.h"
#include "vm/vm.h"

/* What the initiator says it is, in its first handshake message. */
enum dm_kind { DM_PEER = 1, DM_CLIENT = 2, DM_JOINER = 3 };

#define DM_TICK_MS 50
#define DM_PROPOSE_MS 10000 /* a proposal that finds no leader this long */
/* The leader declares a machine lost after this long without a frame
 * from it (flock new/join --lost-after), and what its processes end
 * with. */
#define DM_LOST_AFTER_MS 5000
#define DM_LOST_STATUS 75
/* After a process's frame from another machine (a request or its
 * answer), the loop polls for DM_SPIN_NS instead of sleeping: the next
 * one (the answer to what a worker sent meanwhile, the thread's next
 * request) then finds it awake. Waking a loop asleep in epoll costs
 * several microseconds at each end of a message (the sender's write
 * wakes it, then it is scheduled), a third of a remote atomic on
 * loopback; spinning for about three loopback round trips after each
 * one took a remote xadd from 47 to 29 us. It yields the core at each
 * poll, so the threads that bring the next frame run first. */
#define DM_SPIN_NS 100000

struct dm;
struct dm_proc;
struct dm_fin;

/* A relayed Raft stream: one end of a socketpair is Raft's, this is the
 * other, whose bytes travel as RAFT frames. */
struct dm_rstream {
	struct dm_peer *peer; /* NULL once the connection went */
	uint32_t id;
	bool mine; /* our Raft opened it (dialed) */
	bool closing;
	uv_pipe_t pipe;
	struct dm_rstream *next;
};

/* Another machine of the VM. */
struct dm_peer {
	struct dm *d;
	uint32_t id;
	struct dm_link *link; /* its authenticated connection, or NULL */
	bool dialing;
	uint64_t next_dial; /* ms */
	uint32_t backoff;
	uint64_t last_heard;
	uint64_t since; /* when it was first known, or its link went */
	/* Failure (dm_fail.c): the newest incarnation its frames carried;
	 * 1 + the lost incarnation this machine acted on (0: none); a
	 * MEMBER_STATE for it in flight (the leader). */
	uint32_t heard_inc, lost_done;
	bool fail_pending;
	struct dm_load load;
	bool has_load;
	struct dm_rstream *streams;
	uint32_t next_stream;
	uint8_t key[NET_KEY]; /* from the join reply, until Raft has it */
	char addr[CTL_ADDR_MAX + 1];
	struct dm_peer *next;
};

/* One connection and what it is. */
struct dm_link {
	struct dm *d;
	struct net_conn *conn;
	bool dialed;
	int kind; /* enum dm_kind, 0 before the handshake says */
	bool ready;
	uint32_t peer_id; /* DM_PEER */
	struct dm_peer *peer;
	char user[CTL_NAME_MAX + 1]; /* DM_CLIENT */
	bool admin;
	uint8_t key[NET_KEY];
	struct dm_link *next;
};

/* A command on its way into the log. */
struct dm_prop {
	struct dm *d;
	struct ctl_command cmd;
	void (*cb)(struct dm_prop *p, struct ctl_result r);
	void *data;
	uint64_t data2;
	uint64_t deadline;
	uint64_t req; /* forwarded: the request id */
	int state;    /* DM_P_* */
	/* the leader's own judgement (a machine lost): never forwarded;
	 * FL_EAGAIN once this machine does not lead */
	bool here_only;
	struct raft_apply ra;
	struct fl_buf enc;
	struct dm_prop *next;
};
enum { DM_P_WAIT = 0, DM_P_LOCAL = 1, DM_P_REMOTE = 2 };

struct dm {
	const struct dm_config *cfg;
	uv_loop_t loop;
	uv_tcp_t listener;
	uv_timer_t tick;
	uv_idle_t spin;
	uint64_t spin_until;
	uv_signal_t sigterm, sigint;
	bool stopping;
	int exit_status;
	FILE *log;

	struct cl_identity me;
	uint8_t token_psk[NET_KEY], client_psk[NET_KEY];
	uint8_t admin_pub[NET_KEY]; /* flock new: the admin's key */
	char prologue[96];
	uint64_t started_ms;

	/* Raft */
	struct raft raft;
	struct raft_io io;
	struct ctl_raft fsm;
	struct raft_uv_transport transport;
	raft_uv_accept_cb accept_cb;
	bool raft_started, raft_closed;
	struct ctl_state st;
	raft_term barrier_term; /* the term whose barrier committed */
	/* The leader's failure duties (dm_fail.c): the term it serves, since
	 * when, and when it last asked for lost processes' ends. */
	raft_term lead_term;
	uint64_t lead_ms, fail_tick_ms;
	bool self_pending; /* a MEMBER_STATE for this machine in flight */
	bool barrier_pending;
	bool change_pending; /* a membership change in flight */
	bool transfer_pending; /* a leadership transfer in flight */
	bool created;        /* flock new: CREATE proposed */
	bool ready_sent;
	uint64_t next_client; /* our proposals' client ids */

	struct dm_peer *peers;
	struct dm_link *links;
	struct dm_prop *props;
	uint64_t next_req;

	/* The node running this machine's processes. */
	struct vm_node *node;
	struct dm_proc *procs;
	/* Requests naming a pid this machine has not applied yet (dm_proc.c's
	 * defer): answered once it has, or after DM_LATER_MS. */
	struct dm_later *later;
	/* What processes that ran here did, once over (ps -v, run --stats):
	 * the newest first, DM_FINS_MAX of them at most. */
	struct dm_fin *fins;
	size_t nfins;
	/* Processes spread here or from here (dm_part.c), and what came
	 * for parts not made yet. */
	struct dm_part *parts;
	/* What the parts send each machine (dm_sess.c): a session a
	 * machine, the table under @sess_lock; @sess_async wakes the loop
	 * for what a worker could not write itself. */
	pthread_rwlock_t sess_lock;
	struct dm_sess **sess;
	size_t nsess;
	uv_async_t sess_async;
	pthread_t loop_thread; /* the one that runs @loop */
	struct dm_early *early;
	size_t nearly, early_bytes;
	int null_fd;
	bool parts_ready;
	uint64_t ram_used;
	/* cpu use: the cpu time of processes that ended, and the last
	 * sample of the total (dm_load_self) */
	uint64_t cpu_done_ns, cpu_sample_ns, cpu_sample_ms;
	uint32_t cpu_milli;
	bool leaving;
	bool leave_proposed;
	uint64_t leave_done_ms;
	struct dm_link *leave_link; /* the client waiting for leave */
	uint64_t leave_req;
};

/* dm_main.c */
uint64_t dm_now_ms(void);
/* A process's frame came: poll a while (DM_SPIN_NS). */
void dm_spin(struct dm *d);
void dm_log(struct dm *d, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Propose @c (its client id and seq set by the caller, or 0 for a fresh
 * pair); @cb runs once with the result, rc FL_EAGAIN when no leader took
 * it within DM_PROPOSE_MS. */
void dm_propose(struct dm *d, const struct ctl_command *c,
		void (*cb)(struct dm_prop *p, struct ctl_result r), void *data,
		uint64_t data2);
/* dm_propose, as the leader: FL_EAGAIN once this machine does not lead,
 * never forwarded to another. */
void dm_propose_here(struct dm *d, const struct ctl_command *c,
		     void (*cb)(struct dm_prop *p, struct ctl_result r),
		     uint64_t data2);
bool dm_is_leader(struct dm *d);
/* The leader's id, 0 when none is known. */
uint32_t dm_leader(struct dm *d);
/* A follower's PROPOSE arrived from @l (the leader's side). */
void dm_on_propose(struct dm *d, struct dm_link *l, const struct net_header *h,
		   const uint8_t *p);
/* The reply to one of our forwarded proposals. */
void dm_on_propose_reply(struct dm *d, const struct net_header *h,
			 const uint8_t *p);
/* @peer's connection went: forwarded proposals through it go back to
 * waiting. */
void dm_props_peer_lost(struct dm *d, uint32_t peer);
/* Once the daemon serves: the ready line for the starter. */
void dm_ready(struct dm *d, const char *err);
void dm_stop(struct dm *d, int status);

/* dm_net.c */
int dm_net_start(struct dm *d, struct fl_err *err);
void dm_net_tick(struct dm *d);
void dm_net_close(struct dm *d);
void dm_transport_init(struct dm *d);
struct dm_peer *dm_peer_get(struct dm *d, uint32_t id, bool make);
int dm_send(struct dm_link *l, uint8_t type, uint16_t flags, uint64_t req,
	    const void *p, size_t n);
int dm_send_error(struct dm_link *l, uint8_t type, uint64_t req, int code,
		  const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Join the VM through cfg->contact: 0 with d->me filled, or an error. */
int dm_join(struct dm *d, struct fl_err *err);
/* Our load, as a heartbeat carries it. */
void dm_load_self(struct dm *d, struct dm_load *l);

/* dm_sess.c: the part layer's frames to machine @to, once and in order
 * across broken connections (from any thread). */
struct dm_sess;
/* Whether frames of @type travel in sessions. */
bool dm_sess_type(uint8_t type);
/* Send @head then @p (copied) to @to: 0, FL_ENOMEM, or FL_EPIPE when @to
 * was declared lost (dropped). It waits while the link is down. */
int dm_sess_send(struct dm *d, uint32_t to, uint8_t type, const void *head,
		 size_t head_len, const void *p, size_t n);
/* The loop: @l to a machine is ready (RESUME goes out first), went, or
 * has room again. */
void dm_sess_ready(struct dm *d, struct dm_link *l);
void dm_sess_detach(struct dm *d, uint32_t id);
void dm_sess_drain(struct dm *d, uint32_t id);
/* The loop: RESUME and ACK from @l; a session's frame from @l: true to
 * take it in, false to drop it (had it already; or out of order, and
 * @l closing). */
void dm_sess_resume(struct dm *d, struct dm_link *l,
		    const struct net_header *h, const uint8_t *p);
void dm_sess_ack(struct dm *d, struct dm_link *l, const struct net_header *h,
		 const uint8_t *p);
bool dm_sess_take(struct dm *d, struct dm_link *l, const struct net_header *h);
/* The loop: machine @id's @incarnation (or older) was declared lost;
 * this machine came back as a new incarnation; acknowledge what came. */
void dm_sess_lost(struct dm *d, uint32_t id, uint32_t incarnation);
void dm_sess_fenced(struct dm *d);
void dm_sess_tick(struct dm *d);
/* Frames to @id kept until it acknowledges them (tests/unit/cluster/
 * test_sess.c checks that none stay once acknowledged). */
size_t dm_sess_kept(struct dm *d, uint32_t id);
/* The loop's wake-up (the table's lock is made with @d); the end, once
 * the loop and the node's workers are gone. */
int dm_sess_init(struct dm *d);
void dm_sess_close(struct dm *d);

/* dm_fail.c */
void dm_fail_tick(struct dm *d);
/* A peer's frame: false when it comes from an incarnation declared lost
 * (dropped, the link told FENCED and closing). */
bool dm_fail_frame_ok(struct dm *d, struct dm_link *l,
		      const struct net_header *h);
/* FENCED from @l: if it names this incarnation, end everything and come
 * back as the next. */
void dm_fail_fenced(struct dm *d, struct dm_link *l, const uint8_t *p);

/* dm_part.c */
struct dm_part;
int dm_parts_init(struct dm *d, struct fl_err *err);
void dm_parts_close(struct dm *d);
/* Drop frames kept too long for parts never made. */
void dm_parts_tick(struct dm *d);
/* Machine @id's @incarnation (and every older one) was declared lost:
 * end the processes here that had parts there (the origin's: 75 and a
 * line naming it) and the parts here of processes whose origin it was;
 * what waits on it resumes. Parts with a newer incarnation of it stay. */
void dm_parts_machine_lost(struct dm *d, uint32_t id, uint32_t incarnation);
/* This machine was fenced: end every process and part it runs (75). */
void dm_parts_fenced(struct dm *d);
/* dm_proc.c's half: the processes it started here. */
void dm_procs_fenced(struct dm *d);
/* Start @m as process @pid with options @o: spread over every machine
 * that serves (*@part its part here), or on this machine alone (*@part
 * NULL) when it is the only one. 0 with *@vp, or an error. */
int dm_part_start(struct dm *d, uint64_t pid, const struct vm_module *m,
		  const struct vm_options *o, struct vm_proc **vp,
		  struct dm_part **part, struct fl_err *err);
/* The origin's process is quiet: @release(@arg) frees it once every
 * other part is quiet too (now, or when the last says so). */
void dm_part_origin_done(struct dm_part *pt, void (*release)(void *arg),
			 void *arg);
/* What each part of @pt's process did so far (the others' as they last
 * said), in part order, with its machine's id: the count of parts. */
int dm_part_stats(const struct dm_part *pt, struct dm_pstats *out,
		  uint32_t *ids);
/* Add the threads, memory and cpu time of the parts here of processes
 * from elsewhere. */
void dm_parts_load(struct dm *d, uint64_t *threads, uint64_t *memory,
		   uint64_t *cpu_ns);
/* Add the other parts' threads, memory and cpu time to @info. */
void dm_part_add_others(const struct dm_part *pt, struct vm_proc_info *info);
/* PART, PROC, PART_QUIET, PART_FREE and PART_STATS from a peer. */
void dm_part_frame(struct dm *d, const struct net_header *h, const uint8_t *p);

/* dm_proc.c */
void dm_client_frame(struct dm_link *l, const struct net_header *h,
		     const uint8_t *p);
void dm_client_gone(struct dm_link *l);
void dm_client_drain(struct dm_link *l);
void dm_procs_tick(struct dm *d);
void dm_procs_close(struct dm *d);
/* Table text of machines (flock status) and processes (flock ps). */
void dm_status_text(struct dm *d, struct fl_buf *out);

#endif
