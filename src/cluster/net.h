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
	X(HELLO, 1, 16, 4096,                                                 \
	  "first frame on a connection: VM id, machine id, incarnation, "    \
	  "addresses")                                                        \
	X(PING, 2, 8, 8, "heartbeat: the sender's clock, echoed by PONG")    \
	X(PONG, 3, 8, 8, "answer to PING")                                    \
	X(RAFT, 4, 1, NET_FRAME_MAX,                                          \
	  "bytes of the control plane's Raft stream between two machines")  \
	X(SUBMIT, 5, 16, NET_FRAME_MAX,                                       \
	  "a client's process: submission id, options, module")              \
	X(OUTPUT, 6, 12, 1u << 20,                                            \
	  "a process's output: stream, sequence number, bytes")              \
	X(INPUT, 7, 12, 1u << 20, "a client's stdin: sequence number, bytes") \
	X(STATUS, 8, 8, 8, "a process's end: its exit status")               \
	X(ERROR, 9, 4, 4096, "a request failed: code, message")

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
