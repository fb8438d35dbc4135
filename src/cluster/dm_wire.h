/* The payloads of the daemon's messages (net.h's NET_MESSAGES), encoded
 * and decoded in one place. Every decoder takes hostile bytes: it checks
 * every length against what is left before reading, refuses trailing
 * bytes, and says what is wrong in @err; tests/fuzz/fuzz_wire.c runs them
 * all. Little-endian throughout. Threads: any; no state. */
#ifndef FLOCK_CLUSTER_DM_WIRE_H
#define FLOCK_CLUSTER_DM_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/fl_buf.h"
#include "base/fl_error.h"
#include "cluster/ctl.h"
#include "cluster/net_noise.h"

#define DM_ARGS_MAX 4096
#define DM_LOAD_PROCS 64

/* SUBMIT: a client's process. */
struct dm_submit {
	uint64_t client, seq; /* the submission id */
	bool detach, check;
	bool placed;           /* a machine sent it here: run it here */
	bool eager;            /* --debug-spread: spawns go where asked */
	bool survive;          /* --survive: lost threads do not end it */
	uint64_t memory;      /* 0: the machine's offer */
	uint32_t max_threads, stack_words, call_depth;
	uint32_t cpus;         /* --cpus: the cores to spread over; 0: all */
	uint64_t from;        /* the first output record wanted */
	uint32_t argc;
	char **argv;          /* decoded: owned, argc strings + NULL */
	const uint8_t *module; /* decoded: points into the payload */
	size_t module_len;
};

void dm_submit_encode(const struct dm_submit *s, struct fl_buf *out);
/* 0, or FL_EFORMAT / FL_ENOMEM with @err; on success free with
 * dm_submit_free(). */
int dm_submit_decode(const uint8_t *p, size_t n, struct dm_submit *s,
		     struct fl_err *err);
void dm_submit_free(struct dm_submit *s);

/* JOIN: a new machine's offer. */
struct dm_join {
	char addr[CTL_ADDR_MAX + 1];
	uint32_t cpu;
	uint64_t ram, disk;
};

void dm_join_encode(const struct dm_join *j, struct fl_buf *out);
int dm_join_decode(const uint8_t *p, size_t n, struct dm_join *j,
		   struct fl_err *err);

/* JOIN's reply: the new member's id and the members it should trust
 * until its Raft has caught up. */
struct dm_join_member {
	uint32_t id;
	uint8_t key[NET_KEY];
	char addr[CTL_ADDR_MAX + 1];
};

/* Encoding appends member by member: start, then one call each. */
void dm_join_reply_start(struct fl_buf *out, uint32_t id, uint32_t n);
void dm_join_reply_member(struct fl_buf *out, const struct dm_join_member *m);
/* Calls @each for every member; 0 with *@id, or FL_EFORMAT. */
int dm_join_reply_decode(const uint8_t *p, size_t n, uint32_t *id,
			 void (*each)(void *arg, const struct dm_join_member *m),
			 void *arg, struct fl_err *err);

/* PING: a machine's clock and load. */
struct dm_pload {
	uint64_t pid, threads, memory, cpu_ns, age_ms;
};
struct dm_load {
	uint64_t uptime_ms;
	uint32_t cpu_milli; /* cores busy running VM threads, in thousandths */
	uint32_t procs;
	uint64_t threads, memory;
	struct dm_pload p[DM_LOAD_PROCS];
	uint32_t np;
};

void dm_ping_encode(uint64_t clock, const struct dm_load *l,
		    struct fl_buf *out);
int dm_ping_decode(const uint8_t *p, size_t n, uint64_t *clock,
		   struct dm_load *l, struct fl_err *err);

/* PART: a process spreads to the receiver. Its machines in part order
 * (the receiver finds itself among them), which one is its origin, the
 * cores of all, then the process as a SUBMIT carries it (options,
 * arguments, module; its submission id, which must not be 0, unused). */
#define DM_PARTS_MAX 64
struct dm_part_msg {
	uint64_t pid;
	uint32_t nparts, origin, ncpu;
	uint32_t ids[DM_PARTS_MAX];
	struct dm_submit sub;
};

void dm_part_encode(const struct dm_part_msg *m, struct fl_buf *out);
/* 0, or FL_EFORMAT / FL_ENOMEM with @err (ids must be nonzero and
 * distinct, origin one of them); free with dm_submit_free(&m->sub). */
int dm_part_decode(const uint8_t *p, size_t n, struct dm_part_msg *m,
		   struct fl_err *err);

/* PART_STATS and PART_QUIET (after the pid): what one part of a process
 * did so far, for flock ps -v and flock run --stats. Machines are member
 * ids; data_to is 0 when no thread left for its data. On the wire: u16
 * the number of fields, then each as u64 in this order; a decoder takes
 * the fields it knows and skips those a newer sender appends. */
#define DM_PSTATS(X)                                                          \
	X(threads) X(memory) X(cpu_ns)                                        \
	X(moved_in) X(moved_out) X(move_bytes)                                \
	X(out_stolen) X(out_pushed) X(out_stdio) X(out_data)                  \
	X(steals) X(steals_empty) X(remote_joins)                             \
	X(data_tid) X(data_to) X(data_faults)                                 \
	X(pages_fetched) X(diffs_sent) X(diff_bytes) X(invalidations)         \
	X(atomics_served) X(syncs_served)                                     \
	X(msgs_sent) X(bytes_sent) X(msgs_recv) X(bytes_recv)                 \
	X(lazy_pages) X(lazy_fetched) X(lazy_bytes)                            \
	X(out_balance)
#define DM_PSTATS_MAX_FIELDS 1024
struct dm_pstats {
#define X(f) uint64_t f;
	DM_PSTATS(X)
#undef X
};

void dm_pstats_encode(const struct dm_pstats *s, struct fl_buf *out);
/* 0, or FL_EFORMAT with @err. */
int dm_pstats_decode(const uint8_t *p, size_t n, struct dm_pstats *s,
		     struct fl_err *err);

/* ERROR: a code and a message (not NUL-terminated on the wire). */
void dm_error_encode(int code, const char *msg, struct fl_buf *out);
int dm_error_decode(const uint8_t *p, size_t n, int *code, char *msg,
		    size_t msg_size, struct fl_err *err);

#endif
