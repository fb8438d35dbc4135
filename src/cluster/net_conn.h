/* One secure connection on a libuv loop: the piece the daemon uses for
 * every machine-to-machine and client-to-machine connection. It dials (or
 * takes an accepted socket), runs the handshake of net_noise.h, and then
 * carries frames (net.h), each sealed in one record.
 *
 * On the wire:
 *   handshake   u16 length, then the message (net_hs_write's bytes), three
 *               times: initiator, responder, initiator;
 *   confirm     the responder's first record is empty: the initiator only
 *               knows the responder accepted message 3 (the token) once it
 *               opens it;
 *   frames      one record (net_seal) per frame: header and payload.
 * Each side's handshake payload (at most NET_HS_PAYLOAD_MAX bytes) travels
 * in its last message: the responder's in message 2, the initiator's in
 * message 3.
 *
 * Whatever a peer sends, the connection closes with a reason and nothing
 * else happens: a malformed, modified, replayed or oversized record or
 * frame, a handshake message out of bounds, a peer that stalls the
 * handshake (timeout), or one that goes quiet for longer than the idle
 * limit. Lengths are checked before anything is allocated.
 *
 * Callback contract: on_ready comes once, when both sides are
 * authenticated; on_frame for each frame after that, in order; on_close
 * exactly once, last, from the loop -- never from inside a call to
 * net_conn_*, so any callback may call net_conn_close() (or send) safely.
 * After net_conn_close() (or the layer closing), no on_ready or on_frame
 * comes any more. The layer owns struct net_conn and frees it right after
 * on_close returns; until then the pointer stays valid.
 *
 * SIGPIPE: libuv writes to a TCP socket with write(2), not with
 * send(MSG_NOSIGNAL), so a write after the peer's reset raises SIGPIPE on
 * Linux (test_conn pins this down). The layer never writes again after a
 * failed write, and a reset seen by the read side closes first, but one
 * such write can still happen: the process must ignore SIGPIPE (the
 * daemon's job). Memory: a peer still in the handshake can make us hold
 * one read (64 KiB) and one handshake message; an authenticated one, one
 * record (NET_RECORD_MAX) besides.
 *
 * Threads: every function and callback runs on the loop's thread. */
#ifndef FLOCK_CLUSTER_NET_CONN_H
#define FLOCK_CLUSTER_NET_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "cluster/net.h"
#include "cluster/net_noise.h"

#define NET_CONN_HANDSHAKE_MS 5000          /* default handshake timeout */
#define NET_CONN_WRITE_MAX ((size_t)64 << 20) /* default write queue cap */
#define NET_CONN_HELLO_MAX 64
#define NET_CONN_ADDR 64                    /* "[v6 address]:port" + NUL */

struct net_conn;

/* What a connection is made with; borrowed during the call (everything
 * is copied). Zero fields take the defaults. */
struct net_conn_options {
	const struct net_keypair *keys; /* our static key pair */
	const uint8_t *psk;             /* NET_KEY bytes: the token's key */
	const void *prologue;           /* both sides give the same bytes */
	size_t prologue_len;
	/* Initiator: what message 1 carries (in the clear, but bound into
	 * the transcript): what kind of peer it is. At most
	 * NET_CONN_HELLO_MAX bytes. */
	const void *hello;
	size_t hello_len;
	/* Responder: told message 1's @hello, picks the pre-shared key
	 * message 3 must prove (psk is the default until then); non-zero
	 * refuses the initiator. May be NULL. */
	int (*on_hello)(struct net_conn *c, const uint8_t *hello, size_t len,
			uint8_t psk[NET_KEY]);
	const void *payload; /* our handshake payload, may be NULL */
	size_t payload_len;  /* at most NET_HS_PAYLOAD_MAX */
	/* From the call to on_ready (dialing included); 0:
	 * NET_CONN_HANDSHAKE_MS. */
	uint32_t handshake_ms;
	/* After on_ready, close when nothing arrived for this long; 0: no
	 * limit (heartbeats keep a live peer above it). */
	uint32_t idle_ms;
	/* Sealed bytes queued and not yet written; 0: NET_CONN_WRITE_MAX. */
	size_t write_max;
	/* Dialing: a numeric address to dial from (the one we listen on,
	 * so that peers see the connection come from it); NULL: the
	 * kernel's choice, as it is when the bind fails. */
	const char *source;
};

struct net_conn_callbacks {
	/* Both sides are authenticated: @peer is the peer's static public
	 * key, @payload its handshake payload (borrowed until return). The
	 * callback may refuse the peer with net_conn_close(). May be NULL. */
	void (*on_ready)(struct net_conn *c, const uint8_t peer[NET_KEY],
			 const uint8_t *payload, size_t len);
	/* One frame, its header already checked by net_header_decode;
	 * @payload is h->length bytes, borrowed until return. */
	void (*on_frame)(struct net_conn *c, const struct net_header *h,
			 const uint8_t *payload);
	/* Once send refused a frame with FL_EAGAIN, the write queue has
	 * drained to half its cap. May be NULL. */
	void (*on_drain)(struct net_conn *c);
	/* The connection is closed (@reason borrowed until return); the
	 * layer frees @c when this returns. */
	void (*on_close)(struct net_conn *c, const char *reason);
};

/* Dial @host (an IPv4 or IPv6 literal, or a name, resolved with
 * uv_getaddrinfo; the addresses are tried in order) at @port, and run the
 * handshake as initiator. 0 with *@out the new connection (callbacks
 * follow, on_close at least), or FL_EINVAL (bad options) / FL_ENOMEM with
 * nothing made and no callback to come. @cb is borrowed (copied). */
int net_conn_dial(uv_loop_t *loop, const char *host, uint16_t port,
		  const struct net_conn_options *opt,
		  const struct net_conn_callbacks *cb, void *user,
		  struct net_conn **out);

/* Accept the connection waiting on @server (call it from the server's
 * connection callback) and run the handshake as responder. 0 with *@out
 * as for dial, or FL_EINVAL / FL_ENOMEM / FL_EIO (uv_accept failed) with
 * nothing to come. */
int net_conn_accept(uv_stream_t *server, const struct net_conn_options *opt,
		    const struct net_conn_callbacks *cb, void *user,
		    struct net_conn **out);

/* Seal and queue one frame: @h's fields with length @len, and @payload.
 * 0; FL_EAGAIN when the write queue would pass its cap (on_drain follows
 * once it has room again); FL_EINVAL before on_ready, after close, or for
 * a frame net_header_decode would refuse; FL_ENOMEM; FL_EPIPE when the
 * write failed (the connection is closing). */
int net_conn_send(struct net_conn *c, const struct net_header *h,
		  const void *payload, size_t len);

/* From any thread, once on_ready came: seal one frame as
 * net_conn_send() does and write it to the socket now. 0 when it went;
 * 1 when the socket took only part and the rest waits for the loop
 * (call net_conn_flush() there soon: nothing else goes direct till
 * then); FL_EAGAIN when it cannot go direct (something is queued, the
 * connection is not ready or is closing, or sealing failed): send it
 * with net_conn_send() on the loop instead. @c must stay alive over the
 * call (the caller's business: it is freed after on_close). */
int net_conn_send_direct(struct net_conn *c, const struct net_header *h,
			 const void *payload, size_t len);
/* On the loop: write what direct sends left. */
void net_conn_flush(struct net_conn *c);

/* Close @c with @reason (copied); queued writes are dropped. on_close
 * follows from the loop. Closing again is a no-op. */
void net_conn_close(struct net_conn *c, const char *reason);

/* The user pointer given at dial or accept. */
void *net_conn_user(const struct net_conn *c);
/* The peer's address as text ("127.0.0.1:7100", "[::1]:7100"), or ""
 * before it is connected. */
const char *net_conn_peer(const struct net_conn *c);
/* Frames and bytes (header included) sent and received, per type; either
 * pointer may be NULL. */
void net_conn_counters(const struct net_conn *c, struct net_counters *sent,
		       struct net_counters *received);
/* Sealed bytes queued and not yet written. */
size_t net_conn_pending(const struct net_conn *c);

#endif
