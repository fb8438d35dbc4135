/* The messages machines of a Flock VM exchange, and their framing: the
 * interface of src/cluster's transport (net_*.c). Every message type is
 * declared once, in NET_MESSAGES; the enum, the names, the size bounds the
 * decoder checks and the per-type counters are made from it.
 *
 * A frame, inside the secure channel (net_noise.h), is a fixed 24-byte
 * header and a payload, all little-endian:
 *   u8 version, u8 type, u16 flags, u32 payload length,
 *   u64 request id, u32 sender machine id, u32 sender incarnation.
 * The decoder treats every byte as hostile: an unknown version or type, a
 * flag it does not know, a length outside the type's bounds or over
 * NET_FRAME_MAX is an error, and the connection that sent it is closed --
 * nothing else. Threads: any; no state. */
#ifndef FLOCK_CLUSTER_NET_H
#define FLOCK_CLUSTER_NET_H

#include <stddef.h>
#include <stdint.h>

#include "base/fl_buf.h"
#include "base/fl_error.h"

#define NET_VERSION 1
#define NET_HEADER_SIZE 24
#define NET_FRAME_MAX (16u << 20) /* payload bytes: a module fits */

/* X(name, code, min payload, max payload, what it carries). Codes are
 * part of the wire format: never renumber, only append. */
#define NET_MESSAGES(X)                                                       \
	X(JOIN, 1, 0, 65536,                                                  \
	  "a new machine asks to join (its address, resources); the reply: " \
	  "its member id and the members")                                    \
	X(PING, 2, 8, 4096, "heartbeat: the sender's clock and load")        \
	X(PONG, 3, 8, 8, "answer to PING: the clock echoed")                 \
	X(RAFT, 4, 5, NET_FRAME_MAX,                                          \
	  "a relayed Raft stream: direction, stream id, bytes (none: it "    \
	  "closed)")                                                          \
	X(PROPOSE, 5, 0, 65536,                                               \
	  "a control-plane command for the leader; the reply: its result")   \
	X(SUBMIT, 6, 8, NET_FRAME_MAX,                                        \
	  "a client's process (submission id, options, module); the "       \
	  "reply: its pid")                                                   \
	X(OUTPUT, 7, 17, (1u << 20) + 17,                                     \
	  "a process's output: pid, sequence number, stream, bytes")         \
	X(INPUT, 8, 16, (1u << 20) + 16,                                      \
	  "a client's stdin: pid, sequence number, bytes (none: its end)")   \
	X(STATUS, 9, 12, 12, "a process's end: pid, exit status")            \
	X(ERROR, 10, 4, 4096, "a request failed: code, message")             \
	X(ATTACH, 11, 8, 17,                                                  \
	  "follow a process's output from a sequence number (logs, a run "   \
	  "that reconnects); the reply: the next input it lacks")            \
	X(WAIT, 12, 8, 8, "wait for a process's end")                        \
	X(KILL, 13, 8, 8, "end a process")                                   \
	X(PS, 14, 0, 1u << 20, "the process table; the reply: a table")     \
	X(MACHINES, 15, 0, 1u << 20,                                          \
	  "the machines; the reply: a table (asked with one byte 1: the "    \
	  "active machines' addresses, a line each)")                        \
	X(LEAVE, 16, 0, 4096, "the machine leaves the VM")                   \
	X(REDIRECT, 17, 2, 512, "ask another machine: its address")          \
	X(OK, 18, 0, 4096, "a request is done")                               \
	X(PART, 19, 24, NET_FRAME_MAX,                                        \
	  "a process spreads to the receiver: pid, its machines, options, "  \
	  "arguments, module")                                                \
	X(PROC, 20, 9, NET_FRAME_MAX,                                         \
	  "between two parts of a process: pid, channel (its global "        \
	  "memory's, its threads'), bytes")                                   \
	X(PART_QUIET, 21, 8, 16384,                                           \
	  "to the origin: the process has ended here and nothing is left; "  \
	  "pid, what the part did (dm_wire.h's PART_STATS)")                 \
	X(PART_FREE, 22, 8, 8,                                                \
	  "from the origin: every part is quiet, free this one")             \
	X(PART_STATS, 23, 10, 16384,                                          \
	  "to the origin, now and then: pid, what a part did so far")        \
	X(FENCED, 24, 4, 4,                                                   \
	  "to a machine whose incarnation was declared lost: that "          \
	  "incarnation (it drops what it ran and comes back as a new one)")  \
	X(RESUME, 25, 16, 16,                                                 \
	  "first on a connection between machines: the sender's "           \
	  "incarnation, the receiver's as the sender knows it, the last "    \
	  "part frame the sender took in (dm_sess.c)")                       \
	X(ACK, 26, 8, 8,                                                      \
	  "between machines: the last part frame the sender took in")

enum net_msg {
	NET_MSG_NONE = 0,
#define NET__ENUM(name, code, min, max, doc) NET_MSG_##name = code,
	NET_MESSAGES(NET__ENUM)
#undef NET__ENUM
	NET_MSG__END
};

/* Flags a frame may carry. */
#define NET_FLAG_REPLY 0x0001u /* answers the request id */
#define NET_FLAGS_KNOWN NET_FLAG_REPLY

struct net_header {
	uint8_t version;
	uint8_t type; /* enum net_msg */
	uint16_t flags;
	uint32_t length;
	uint64_t request;
	uint32_t machine;
	uint32_t incarnation;
};

/* The name of message type @type ("HELLO"), or NULL if unknown. */
const char *net_msg_name(unsigned type);

/* Append a frame: @h's fields (length is @len) and the payload. */
void net_frame_put(struct fl_buf *b, const struct net_header *h,
		   const void *payload, size_t len);

/* Decode the header at @p (@n bytes available). 0: a valid header, its
 * payload follows and is h->length bytes; FL_EAGAIN: fewer than
 * NET_HEADER_SIZE bytes yet; FL_EFORMAT with @err naming what is wrong. */
int net_header_decode(const uint8_t *p, size_t n, struct net_header *h,
		      struct fl_err *err);

/* Per-type counters of frames and bytes, for one connection or machine. */
struct net_counters {
	uint64_t frames[NET_MSG__END];
	uint64_t bytes[NET_MSG__END];
};

void net_count(struct net_counters *c, const struct net_header *h);

#endif
