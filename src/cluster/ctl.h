/* The control plane's replicated state machine: what every machine of a
 * VM agrees on through Raft -- the VM's identity, its members, its users
 * and its process table -- and the commands that change it.
 *
 * A command is an entry of the Raft log: a header (format, type, the
 * client id and sequence number that make it apply once) and a payload,
 * padded to a multiple of 8 bytes (libraft 0.15 can cut entries of other
 * lengths on restart). Applying is deterministic: every machine that
 * applies the same entries in the same order has the same state, and a
 * command whose (client, seq) was applied already returns the result it
 * had then, without applying again (Raft dissertation, section 6.3): a
 * client that retries after RAFT_LEADERSHIPLOST, not knowing whether its
 * first try committed, changes nothing twice. A snapshot is the whole
 * state, encoded; entries and snapshots are decoded as hostile bytes
 * (a snapshot arrives from a peer).
 *
 * Threads: a struct ctl_state belongs to the thread that runs Raft (the
 * daemon's loop thread). */
#ifndef FLOCK_CLUSTER_CTL_H
#define FLOCK_CLUSTER_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/fl_buf.h"
#include "base/fl_error.h"

#define CTL_VERSION 1
#define CTL_NAME_MAX 64      /* VM ids, user names */
#define CTL_ADDR_MAX 255     /* a member's address, host:port */
#define CTL_KEY 32           /* static public keys */
#define CTL_MEMBERS_MAX 1024
#define CTL_USERS_MAX 4096
#define CTL_VOTERS_MAX 5
#define CTL_SESSIONS_MAX 4096

/* X(name, code, what it does). Codes are part of the log's format:
 * never renumber, only append. */
#define CTL_COMMANDS(X)                                                       \
	X(CREATE, 1, "the VM's identity and its first member (flock new)")   \
	X(MEMBER_ADD, 2, "a machine joins: address, key, resources")         \
	X(MEMBER_STATE, 3, "a member's state, role or incarnation changes")  \
	X(USER_ADD, 4, "a user and their public key")                        \
	X(USER_REMOVE, 5, "a user goes")                                     \
	X(SUBMIT, 6, "a process is submitted: it gets its pid")              \
	X(PROC_STATE, 7, "a process starts on a machine, or ends")           \
	X(BARRIER, 8, "nothing: a new leader's first entry")

enum ctl_cmd {
	CTL_CMD_NONE = 0,
#define CTL__ENUM(name, code, doc) CTL_CMD_##name = code,
	CTL_COMMANDS(CTL__ENUM)
#undef CTL__ENUM
	CTL_CMD__END
};

enum ctl_member_state {
	CTL_M_ACTIVE = 1,  /* serving */
	CTL_M_LEAVING = 2, /* no new processes; going */
	CTL_M_LEFT = 3,    /* gone cleanly */
	CTL_M_LOST = 4,    /* declared lost (fenced) */
};

enum ctl_role { CTL_VOTER = 1, CTL_STANDBY = 2 };

enum ctl_proc_state {
	CTL_P_SUBMITTED = 1,
	CTL_P_RUNNING = 2,
	CTL_P_ENDED = 3,
};

struct ctl_member {
	uint32_t id;
	char addr[CTL_ADDR_MAX + 1];
	uint8_t key[CTL_KEY];
	uint32_t cpu;        /* workers */
	uint64_t ram, disk;  /* bytes */
	uint32_t incarnation;
	uint8_t state;       /* enum ctl_member_state */
	uint8_t role;        /* enum ctl_role */
	/* When it was last declared lost, and came back after (Unix ms,
	 * the leader's clock; 0: never). */
	uint64_t lost_at, back_at;
};

struct ctl_user {
	char name[CTL_NAME_MAX + 1];
	uint8_t key[CTL_KEY];
	bool admin;
};

struct ctl_proc {
	uint64_t pid;
	char owner[CTL_NAME_MAX + 1];
	uint64_t sub_client, sub_seq; /* the submission's id */
	uint32_t machine;             /* where it runs, 0 before it starts */
	uint8_t state;                /* enum ctl_proc_state */
	int32_t status;               /* ENDED: the exit status */
	/* ENDED because @machine was declared lost (status
	 * CTL_LOST_STATUS) */
	uint8_t lost;
};

/* The status of a process whose machine was declared lost. */
#define CTL_LOST_STATUS 75

/* The last command each client had applied, and its result. */
struct ctl_session {
	uint64_t client, seq;
	int32_t rc;
	uint64_t value;
	uint64_t last; /* when it was last used: the entry's number */
};

struct ctl_state {
	char vm[CTL_NAME_MAX + 1]; /* "" before CREATE */
	uint64_t next_pid;
	uint32_t next_member;
	struct ctl_member *members;
	size_t nmembers, members_cap;
	struct ctl_user *users;
	size_t nusers, users_cap;
	struct ctl_proc *procs;
	size_t nprocs, procs_cap;
	struct ctl_session *sessions;
	size_t nsessions, sessions_cap;
	uint64_t applied; /* entries applied, for tests and status */
};

/* A command, before encoding or after decoding. */
struct ctl_command {
	uint8_t type; /* enum ctl_cmd */
	uint64_t client, seq;
	union {
		struct {
			char vm[CTL_NAME_MAX + 1];
			struct ctl_member first;
			struct ctl_user admin;
		} create;
		struct ctl_member member; /* MEMBER_ADD (id ignored) */
		struct {
			uint32_t id, incarnation;
			uint8_t state, role;
			uint64_t at; /* Unix ms: a loss's or a return's time */
		} mstate;
		struct ctl_user user; /* USER_ADD */
		char name[CTL_NAME_MAX + 1]; /* USER_REMOVE */
		struct {
			char owner[CTL_NAME_MAX + 1];
			/* the machine that starts it once it has its pid
			 * (lost before RUNNING is recorded: it ended with
			 * it); 0 in an older log's entries, which say none */
			uint32_t machine;
		} submit;
		struct {
			uint64_t pid;
			uint32_t machine;
			uint8_t state;
			int32_t status;
		} pstate;
	} u;
};

/* The result of applying a command: rc 0 or an FL_E* code (the command
 * was refused: nothing changed), and a value (the pid a SUBMIT got, the
 * id a MEMBER_ADD got). */
struct ctl_result {
	int32_t rc;
	uint64_t value;
	bool replay; /* (client, seq) was applied before: its first result */
};

const char *ctl_cmd_name(unsigned type);

void ctl_state_init(struct ctl_state *st);
void ctl_state_close(struct ctl_state *st);

/* Append the encoding of @c (padded to 8 bytes) to @out. */
void ctl_command_encode(const struct ctl_command *c, struct fl_buf *out);
/* Decode an entry (hostile): 0, or FL_EFORMAT with @err saying why. */
int ctl_command_decode(const uint8_t *p, size_t n, struct ctl_command *c,
		       struct fl_err *err);

/* Apply @c to @st; what it returned (never fails: a refusal is a result,
 * the same on every machine). A client other than 0 numbers its commands
 * from 1 (seq 0 is refused with FL_EINVAL); a seq at or below its last is
 * not applied: the last one's result comes back with replay set, an older
 * one's as FL_ERANGE with replay set. Client 0 has no session: each of
 * its commands applies. */
struct ctl_result ctl_apply(struct ctl_state *st, const struct ctl_command *c);
/* Decode and apply an entry; a malformed one is a result with
 * rc FL_EFORMAT (every machine refuses it the same way). */
struct ctl_result ctl_apply_entry(struct ctl_state *st, const uint8_t *p,
				  size_t n);

/* The whole state as a snapshot, and back (hostile: FL_EFORMAT with @err;
 * on failure @st is unchanged). Padded to 8 bytes like entries. */
void ctl_snapshot_encode(const struct ctl_state *st, struct fl_buf *out);
int ctl_snapshot_restore(struct ctl_state *st, const uint8_t *p, size_t n,
			 struct fl_err *err);

/* Lookups. */
const struct ctl_member *ctl_member_find(const struct ctl_state *st,
					 uint32_t id);
const struct ctl_user *ctl_user_find(const struct ctl_state *st,
				     const char *name);
const struct ctl_proc *ctl_proc_find(const struct ctl_state *st, uint64_t pid);

#endif
