/* The secure channel's handshake and records (net_noise.h).
 *
 * The symmetric state follows the Noise framework (rev. 34) exactly, with
 * one substitution: HMAC-BLAKE2b is replaced by keyed BLAKE2b, a PRF on
 * its own, in the HKDF. The handshake is XXpsk3: the psk modifier makes
 * every "e" token mix the ephemeral key into the key too, so message 1's
 * payload is already encrypted (and authenticates the prologue), and the
 * psk is mixed after message 3's "se".
 *
 * Hostile input: every message length is checked exactly against what the
 * pattern and the payload limit allow before anything is decrypted; a
 * peer's public key that gives an all-zero shared secret (a low-order
 * point) is refused; any failed AEAD tag fails the handshake for good.
 * Records carry a counter nonce per direction, so a replayed, dropped or
 * reordered record fails its tag; the record's length is authenticated as
 * associated data. Secrets are wiped when no longer needed.
 *
 * Records: ChaCha20-Poly1305 as in the handshake, or AES-256-GCM (Noise's
 * AESGCM: the counter big-endian in the nonce's last 8 bytes) when both
 * sides say so in the byte before their payload in messages 2 and 3
 * (NET_CIPHER_AESGCM). Those bytes are encrypted and hashed like the
 * payload, so no one between can turn the choice; message 1 has none (its
 * payload is sealed under the prologue's keys alone: the initiator's byte
 * waits for message 3, to a responder that proved its static key). */
#include "cluster/net_noise.h"

#include <string.h>

#include <sodium.h>

#define PROTOCOL "Flock_XXpsk3_25519_ChaChaPoly_BLAKE2b-keyed"
#define PSK_CONTEXT "flock join token"

int net_crypto_init(void)
{
	return sodium_init() < 0 ? FL_EIO : 0;
}

void net_keypair_new(struct net_keypair *kp)
{
	randombytes_buf(kp->sec, NET_KEY);
	crypto_scalarmult_base(kp->pub, kp->sec);
}

/* ---- Tokens ---- */

void net_token_new(char out[NET_TOKEN_TEXT])
{
	uint8_t raw[32];

	randombytes_buf(raw, sizeof raw);
	sodium_bin2base64(out, NET_TOKEN_TEXT, raw, sizeof raw,
			  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	sodium_memzero(raw, sizeof raw);
}

int net_token_psk(const char *text, uint8_t psk[NET_KEY])
{
	uint8_t raw[32];
	size_t n = 0;
	const char *end;

	if (strlen(text) != NET_TOKEN_TEXT - 1 ||
	    sodium_base642bin(raw, sizeof raw, text, strlen(text), NULL, &n, &end,
			      sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
	    n != sizeof raw || *end != 0)
		return FL_EINVAL;
	crypto_generichash(psk, NET_KEY, raw, sizeof raw,
			   (const uint8_t *)PSK_CONTEXT, sizeof PSK_CONTEXT - 1);
	sodium_memzero(raw, sizeof raw);
	return 0;
}

void net_client_psk(const uint8_t token_psk[NET_KEY], uint8_t out[NET_KEY])
{
	static const char ctx[] = "flock client psk";

	crypto_generichash(out, NET_KEY, (const uint8_t *)ctx, sizeof ctx - 1,
			   token_psk, NET_KEY);
}

/* ---- The symmetric state ---- */

static void mix_hash(struct net_hs *hs, const void *data, size_t n)
{
	crypto_generichash_state st;

	crypto_generichash_init(&st, NULL, 0, NET_HASH);
	crypto_generichash_update(&st, hs->h, NET_HASH);
	crypto_generichash_update(&st, data, n);
	crypto_generichash_final(&st, hs->h, NET_HASH);
}

/* HKDF(ck, ikm) with keyed BLAKE2b for HMAC: two or three outputs. */
static void hkdf(const uint8_t ck[NET_HASH], const uint8_t *ikm, size_t n,
		 uint8_t o1[NET_HASH], uint8_t o2[NET_HASH], uint8_t *o3)
{
	uint8_t t[NET_HASH], in[NET_HASH + 1];

	crypto_generichash(t, NET_HASH, ikm, n, ck, NET_HASH);
	in[0] = 1;
	crypto_generichash(o1, NET_HASH, in, 1, t, NET_HASH);
	memcpy(in, o1, NET_HASH);
	in[NET_HASH] = 2;
	crypto_generichash(o2, NET_HASH, in, NET_HASH + 1, t, NET_HASH);
	if (o3 != NULL) {
		memcpy(in, o2, NET_HASH);
		in[NET_HASH] = 3;
		crypto_generichash(o3, NET_HASH, in, NET_HASH + 1, t, NET_HASH);
	}
	sodium_memzero(t, sizeof t);
	sodium_memzero(in, sizeof in);
}

static void mix_key(struct net_hs *hs, const uint8_t *ikm, size_t n)
{
	uint8_t ck[NET_HASH], k[NET_HASH];

	hkdf(hs->ck, ikm, n, ck, k, NULL);
	memcpy(hs->ck, ck, NET_HASH);
	memcpy(hs->k, k, NET_KEY);
	hs->has_k = true;
	hs->n = 0;
	sodium_memzero(ck, sizeof ck);
	sodium_memzero(k, sizeof k);
}

static void mix_key_and_hash(struct net_hs *hs, const uint8_t *ikm, size_t n)
{
	uint8_t ck[NET_HASH], th[NET_HASH], k[NET_HASH];

	hkdf(hs->ck, ikm, n, ck, th, k);
	memcpy(hs->ck, ck, NET_HASH);
	mix_hash(hs, th, NET_HASH);
	memcpy(hs->k, k, NET_KEY);
	hs->has_k = true;
	hs->n = 0;
	sodium_memzero(ck, sizeof ck);
	sodium_memzero(th, sizeof th);
	sodium_memzero(k, sizeof k);
}

static void nonce_of(uint64_t n, uint8_t out[12])
{
	memset(out, 0, 4);
	for (int i = 0; i < 8; i++)
		out[4 + i] = (uint8_t)(n >> (8 * i));
}

/* AESGCM's nonce: 4 zero bytes, then the counter big-endian. */
static void aes_nonce_of(uint64_t n, uint8_t out[12])
{
	memset(out, 0, 4);
	for (int i = 0; i < 8; i++)
		out[4 + i] = (uint8_t)(n >> (56 - 8 * i));
}

/* EncryptAndHash: the key is always set where this runs (psk mode). */
static void encrypt_and_hash(struct net_hs *hs, const void *p, size_t n,
			     struct fl_buf *out)
{
	uint8_t nonce[12];
	unsigned long long clen;
	size_t at = out->len;

	if (!fl_buf_reserve(out, n + NET_TAG))
		return;
	nonce_of(hs->n++, nonce);
	crypto_aead_chacha20poly1305_ietf_encrypt(out->data + at, &clen, p, n,
						  hs->h, NET_HASH, NULL, nonce,
						  hs->k);
	out->len += (size_t)clen;
	mix_hash(hs, out->data + at, (size_t)clen);
}

static bool decrypt_and_hash(struct net_hs *hs, const uint8_t *c, size_t n,
			     uint8_t *plain)
{
	uint8_t nonce[12];
	unsigned long long plen;

	nonce_of(hs->n++, nonce);
	if (crypto_aead_chacha20poly1305_ietf_decrypt(plain, &plen, NULL, c, n,
						      hs->h, NET_HASH, nonce,
						      hs->k) != 0)
		return false;
	mix_hash(hs, c, n);
	return true;
}

/* A key agreement, refusing a low-order peer key (all-zero secret). */
static bool dh(const uint8_t sec[NET_KEY], const uint8_t pub[NET_KEY],
	       uint8_t out[NET_KEY])
{
	return crypto_scalarmult(out, sec, pub) == 0;
}

static bool mix_dh(struct net_hs *hs, const uint8_t sec[NET_KEY],
		   const uint8_t pub[NET_KEY])
{
	uint8_t shared[NET_KEY];
	bool ok = dh(sec, pub, shared);

	if (ok)
		mix_key(hs, shared, NET_KEY);
	sodium_memzero(shared, sizeof shared);
	return ok;
}

/* ---- The handshake ---- */

void net_hs_init(struct net_hs *hs, bool initiator, const struct net_keypair *s,
		 const uint8_t psk[NET_KEY], const void *prologue, size_t plen)
{
	memset(hs, 0, sizeof *hs);
	hs->initiator = initiator;
	hs->s = *s;
	memcpy(hs->psk, psk, NET_KEY);
	/* The name is longer than a hash: h = HASH(name). */
	crypto_generichash(hs->h, NET_HASH, (const uint8_t *)PROTOCOL,
			   sizeof PROTOCOL - 1, NULL, 0);
	memcpy(hs->ck, hs->h, NET_HASH);
	mix_hash(hs, prologue, plen);
	hs->ciphers = crypto_aead_aes256gcm_is_available() ? NET_CIPHER_AESGCM
							   : 0;
}

int net_hs_set_psk(struct net_hs *hs, const uint8_t psk[NET_KEY])
{
	/* The psk is mixed after message 3's "se" (step 2 -> 3). */
	if (hs->failed || hs->step >= 2)
		return FL_EINVAL;
	memcpy(hs->psk, psk, NET_KEY);
	return 0;
}

static bool my_turn(const struct net_hs *hs)
{
	/* messages 0 and 2 (of 0..2) are the initiator's */
	return !hs->failed && hs->step < 3 &&
	       (hs->step % 2 == 0) == hs->initiator;
}

/* The "e" token: a new ephemeral key, sent, hashed and (psk) mixed. */
static void write_e(struct net_hs *hs, struct fl_buf *out)
{
	net_keypair_new(&hs->e);
	fl_buf_put(out, hs->e.pub, NET_KEY);
	mix_hash(hs, hs->e.pub, NET_KEY);
	mix_key(hs, hs->e.pub, NET_KEY);
}

int net_hs_write(struct net_hs *hs, const void *payload, size_t plen,
		 struct fl_buf *out)
{
	if (!my_turn(hs) || plen > NET_HS_PAYLOAD_MAX)
		return FL_EINVAL;
	switch (hs->step) {
	case 0: /* -> e */
		write_e(hs, out);
		break;
	case 1: /* <- e, ee, s, es */
		write_e(hs, out);
		if (!mix_dh(hs, hs->e.sec, hs->re))
			goto fail;
		encrypt_and_hash(hs, hs->s.pub, NET_KEY, out);
		if (!mix_dh(hs, hs->s.sec, hs->re))
			goto fail;
		break;
	case 2: /* -> s, se, psk */
		encrypt_and_hash(hs, hs->s.pub, NET_KEY, out);
		if (!mix_dh(hs, hs->s.sec, hs->re))
			goto fail;
		mix_key_and_hash(hs, hs->psk, NET_KEY);
		break;
	}
	if (hs->step == 0) {
		encrypt_and_hash(hs, payload, plen, out);
	} else { /* messages 2 and 3: this side's ciphers first */
		uint8_t plain[1 + NET_HS_PAYLOAD_MAX];
		plain[0] = hs->ciphers;
		if (plen > 0)
			memcpy(plain + 1, payload, plen);
		encrypt_and_hash(hs, plain, 1 + plen, out);
		sodium_memzero(plain, 1 + plen);
	}
	if (fl_buf_failed(out))
		goto fail;
	hs->step++;
	return 0;
fail:
	hs->failed = true;
	return FL_EINVAL;
}

static int refuse(struct net_hs *hs, struct fl_err *err, const char *why)
{
	hs->failed = true;
	return fl_err_set(err, FL_EFORMAT, "handshake: message %d: %s",
			  hs->step + 1, why);
}

int net_hs_read(struct net_hs *hs, const uint8_t *msg, size_t n,
		struct fl_buf *payload, struct fl_err *err)
{
	/* Fixed parts of messages 1, 2, 3 before the payload's tag. */
	static const size_t fixed[3] = {NET_KEY, NET_KEY + NET_KEY + NET_TAG,
					NET_KEY + NET_TAG};
	uint8_t plain[NET_HS_PAYLOAD_MAX + NET_KEY];
	size_t need, at = 0, skip = 0;

	if (hs->failed)
		return fl_err_set(err, FL_EFORMAT, "handshake: already refused");
	if (my_turn(hs) || hs->step >= 3)
		return refuse(hs, err, "not the peer's turn");
	/* Messages 2 and 3: the ciphers' byte, then the payload. */
	need = fixed[hs->step] + NET_TAG + (hs->step > 0);
	if (n < need || n - need > NET_HS_PAYLOAD_MAX)
		return refuse(hs, err, "wrong length");
	if (hs->step < 2) { /* e */
		memcpy(hs->re, msg, NET_KEY);
		at = NET_KEY;
		mix_hash(hs, hs->re, NET_KEY);
		mix_key(hs, hs->re, NET_KEY);
	}
	switch (hs->step) {
	case 0:
		break;
	case 1: /* e, ee, s, es */
		if (!mix_dh(hs, hs->e.sec, hs->re))
			return refuse(hs, err, "bad ephemeral key");
		if (!decrypt_and_hash(hs, msg + at, NET_KEY + NET_TAG, hs->rs))
			return refuse(hs, err, "cannot open the static key");
		at += NET_KEY + NET_TAG;
		if (!mix_dh(hs, hs->e.sec, hs->rs))
			return refuse(hs, err, "bad static key");
		break;
	case 2: /* s, se, psk */
		if (!decrypt_and_hash(hs, msg, NET_KEY + NET_TAG, hs->rs))
			return refuse(hs, err, "cannot open the static key");
		at = NET_KEY + NET_TAG;
		if (!mix_dh(hs, hs->e.sec, hs->rs))
			return refuse(hs, err, "bad static key");
		mix_key_and_hash(hs, hs->psk, NET_KEY);
		break;
	}
	if (!decrypt_and_hash(hs, msg + at, n - at, plain))
		return refuse(hs, err, hs->step == 2 ? "refused (wrong token, "
						       "or not this VM)"
						     : "refused (not this VM, "
						       "or modified)");
	if (hs->step > 0) {
		hs->peer_ciphers = plain[0];
		skip = 1;
	}
	if (payload != NULL)
		fl_buf_put(payload, plain + skip, n - at - NET_TAG - skip);
	sodium_memzero(plain, sizeof plain);
	hs->step++;
	return 0;
}

bool net_hs_done(const struct net_hs *hs)
{
	return !hs->failed && hs->step == 3;
}

void net_hs_split(struct net_hs *hs, struct net_cipher *send,
		  struct net_cipher *recv, uint8_t peer[NET_KEY])
{
	uint8_t k1[NET_HASH], k2[NET_HASH];

	hkdf(hs->ck, NULL, 0, k1, k2, NULL);
	memcpy(hs->initiator ? send->k : recv->k, k1, NET_KEY);
	memcpy(hs->initiator ? recv->k : send->k, k2, NET_KEY);
	send->n = recv->n = 0;
	send->aes = recv->aes =
		(hs->ciphers & hs->peer_ciphers & NET_CIPHER_AESGCM) != 0;
	if (send->aes) {
		crypto_aead_aes256gcm_beforenm(&send->aes_st, send->k);
		crypto_aead_aes256gcm_beforenm(&recv->aes_st, recv->k);
	}
	memcpy(peer, hs->rs, NET_KEY);
	sodium_memzero(k1, sizeof k1);
	sodium_memzero(k2, sizeof k2);
	sodium_memzero(hs, sizeof *hs);
}

/* ---- Records ---- */

int net_seal(struct net_cipher *c, const void *plain, size_t n,
	     struct fl_buf *out)
{
	uint8_t nonce[12], len[4];
	unsigned long long clen;
	size_t at;

	if (n > NET_RECORD_MAX - NET_TAG || c->n == UINT64_MAX)
		return FL_ERANGE;
	for (int i = 0; i < 4; i++)
		len[i] = (uint8_t)((n + NET_TAG) >> (8 * i));
	fl_buf_put(out, len, 4);
	if (!fl_buf_reserve(out, n + NET_TAG))
		return FL_ENOMEM;
	at = out->len;
	if (c->aes) {
		aes_nonce_of(c->n++, nonce);
		crypto_aead_aes256gcm_encrypt_afternm(out->data + at, &clen,
						      plain, n, len, 4, NULL,
						      nonce, &c->aes_st);
	} else {
		nonce_of(c->n++, nonce);
		crypto_aead_chacha20poly1305_ietf_encrypt(
			out->data + at, &clen, plain, n, len, 4, NULL, nonce,
			c->k);
	}
	out->len += (size_t)clen;
	return 0;
}

int net_open(struct net_cipher *c, const uint8_t *p, size_t len, size_t *used,
	     struct fl_buf *plain, struct fl_err *err)
{
	uint8_t nonce[12];
	unsigned long long plen;
	uint32_t n;
	size_t at;

	if (len < 4)
		return FL_EAGAIN;
	n = fl_load_u32(p);
	if (n < NET_TAG || n > NET_RECORD_MAX)
		return fl_err_set(err, FL_EFORMAT, "record of %u bytes", n);
	if (len - 4 < n)
		return FL_EAGAIN;
	if (c->n == UINT64_MAX)
		return fl_err_set(err, FL_EFORMAT, "record: nonces used up");
	if (!fl_buf_reserve(plain, n - NET_TAG))
		return fl_err_set(err, FL_ENOMEM, "record: out of memory");
	at = plain->len;
	/* An empty record into an empty buffer: no data pointer to offset. */
	if (c->aes)
		aes_nonce_of(c->n, nonce);
	else
		nonce_of(c->n, nonce);
	if ((c->aes ? crypto_aead_aes256gcm_decrypt_afternm(
			      plain->data != NULL ? plain->data + at : nonce,
			      &plen, NULL, p + 4, n, p, 4, nonce, &c->aes_st)
		    : crypto_aead_chacha20poly1305_ietf_decrypt(
			      plain->data != NULL ? plain->data + at : nonce,
			      &plen, NULL, p + 4, n, p, 4, nonce, c->k)) != 0)
		return fl_err_set(err, FL_EFORMAT,
				  "record: refused (modified, replayed or out "
				  "of order)");
	c->n++;
	plain->len += (size_t)plen;
	*used = 4 + (size_t)n;
	return 0;
}
