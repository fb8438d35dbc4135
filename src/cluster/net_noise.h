/* The secure channel between machines (and between a client and a
 * machine): a handshake in the pattern of Noise XXpsk3 built from
 * libsodium's primitives, then authenticated encryption of every record.
 *
 *   -> e                       (initiator's ephemeral key)
 *   <- e, ee, s, es            (responder's ephemeral and static keys)
 *   -> s, se, psk              (initiator's static key; the VM's token)
 *
 * X25519 for the key agreements, ChaCha20-Poly1305 (IETF) for the AEAD,
 * BLAKE2b for the hash; the key derivation is Noise's HKDF with keyed
 * BLAKE2b in place of HMAC (so this is not wire-compatible with other
 * Noise implementations, nor meant to be). The pre-shared key is derived
 * from the VM's join token, which never crosses the wire; the prologue
 * (the VM's id and the protocol version) is bound into the transcript, so
 * the two sides agree on which VM they are in. Each side learns the
 * other's static public key, which the control plane pins to a machine or
 * a user. What an observer learns: that a handshake happened. What a peer
 * without the token achieves: nothing past message 3 (the responder
 * refuses it; the initiator refuses the first record the responder sends).
 *
 * Sans-I/O: the caller moves the bytes. Threads: a struct net_hs and a
 * struct net_cipher belong to one thread at a time. */
#ifndef FLOCK_CLUSTER_NET_NOISE_H
#define FLOCK_CLUSTER_NET_NOISE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/fl_buf.h"
#include "base/fl_error.h"

#include <sodium.h>

#define NET_KEY 32      /* X25519 public/secret keys, PSK, cipher keys */
#define NET_TAG 16      /* AEAD tag */
#define NET_HASH 64     /* BLAKE2b-512 */
#define NET_HS_PAYLOAD_MAX 4096
#define NET_TOKEN_TEXT 44 /* a token as text, NUL included */

struct net_keypair {
	uint8_t pub[NET_KEY];
	uint8_t sec[NET_KEY];
};

/* The ciphers a side can use for records, a byte at the head of its
 * payload in messages 2 and 3 (authenticated with them): records are
 * AES-256-GCM when both sides' processors do it in hardware (libsodium's
 * AES-NI code: half ChaCha20-Poly1305's time on a 4 KiB page), else
 * ChaCha20-Poly1305, as the handshake itself always is. Other bits are
 * left for later ciphers and ignored. */
#define NET_CIPHER_AESGCM 0x01u

/* One direction of a channel: a key and a counter nonce; with @aes, the
 * key expanded for AES-256-GCM. */
struct net_cipher {
	uint8_t k[NET_KEY];
	uint64_t n;
	bool aes;
	crypto_aead_aes256gcm_state aes_st;
};

struct net_hs {
	bool initiator;
	int step; /* messages done: 0..3 */
	bool failed;
	uint8_t ck[NET_HASH], h[NET_HASH];
	uint8_t k[NET_KEY];
	bool has_k;
	uint64_t n;
	struct net_keypair s, e;
	uint8_t rs[NET_KEY], re[NET_KEY];
	uint8_t psk[NET_KEY];
	/* Record ciphers (NET_CIPHER_*): this side's (net_hs_init: what
	 * the processor does; a test may clear it before message 2 or 3),
	 * the peer's (from its message 2 or 3). */
	uint8_t ciphers, peer_ciphers;
};

/* libsodium's set-up, once per process (any thread, any number of
 * times); 0 or FL_EIO. */
int net_crypto_init(void);

/* A new static or ephemeral key pair. */
void net_keypair_new(struct net_keypair *kp);

/* A new join token (32 random bytes) as text: URL-safe base64 without
 * padding, 43 characters. */
void net_token_new(char out[NET_TOKEN_TEXT]);
/* The handshake's pre-shared key for token @text; 0, or FL_EINVAL when
 * @text is not a token. */
int net_token_psk(const char *text, uint8_t psk[NET_KEY]);

/* The pre-shared key of the VM's clients, from the machines' @token_psk:
 * a one-way derivation, so a client (who holds it) cannot join machines
 * (which takes the token's). */
void net_client_psk(const uint8_t token_psk[NET_KEY], uint8_t out[NET_KEY]);

/* Start a handshake as @initiator with static key pair @s, pre-shared key
 * @psk and @prologue (both sides must give the same). */
void net_hs_init(struct net_hs *hs, bool initiator, const struct net_keypair *s,
		 const uint8_t psk[NET_KEY], const void *prologue, size_t plen);
/* Append the next handshake message (the initiator writes 1 and 3, the
 * responder 2), carrying @payload (at most NET_HS_PAYLOAD_MAX bytes;
 * in message 3 it is encrypted to the authenticated peer). 0, or
 * FL_EINVAL when it is not this side's turn. */
int net_hs_write(struct net_hs *hs, const void *payload, size_t plen,
		 struct fl_buf *out);
/* Change the pre-shared key before it is used (message 3): a responder
 * picks it from what message 1 says the initiator is. 0, or FL_EINVAL
 * when it is too late. */
int net_hs_set_psk(struct net_hs *hs, const uint8_t psk[NET_KEY]);
/* Take the peer's next handshake message (hostile bytes). 0 with its
 * payload appended to @payload (may be NULL when none is expected);
 * FL_EFORMAT with @err saying why it is refused. A refused handshake
 * stays failed. */
int net_hs_read(struct net_hs *hs, const uint8_t *msg, size_t n,
		struct fl_buf *payload, struct fl_err *err);
/* Both sides have all three messages. */
bool net_hs_done(const struct net_hs *hs);
/* After the handshake: the channel's two directions (AES-256-GCM if
 * both sides offered it) and the peer's static public key; the
 * handshake's secrets are wiped. */
void net_hs_split(struct net_hs *hs, struct net_cipher *send,
		  struct net_cipher *recv, uint8_t peer[NET_KEY]);

/* Seal @n bytes into a record appended to @out: a u32 length, then the
 * ciphertext and tag (the length is authenticated too). 0, or FL_ERANGE
 * when the channel has used all its nonces or @n is over NET_RECORD_MAX. */
#define NET_RECORD_MAX ((16u << 20) + 64)
int net_seal(struct net_cipher *c, const void *plain, size_t n,
	     struct fl_buf *out);
/* Open the record at @p (@len bytes available): FL_EAGAIN while it has
 * not all arrived; 0 with *@used its size and the plaintext appended to
 * @plain; FL_EFORMAT when it is malformed, modified, replayed or out of
 * order (the connection must close). */
int net_open(struct net_cipher *c, const uint8_t *p, size_t len, size_t *used,
	     struct fl_buf *plain, struct fl_err *err);

#endif
