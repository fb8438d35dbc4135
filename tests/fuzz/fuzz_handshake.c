/* libFuzzer target for the secure channel (src/cluster/net_noise.c): the
 * bytes a peer that is not (yet) trusted sends. The first input byte
 * picks what reads the rest:
 *   0  a responder reading message 1,
 *   1  an initiator that sent message 1, reading message 2,
 *   2  a responder that read a real message 1 and sent 2, reading 3,
 *   3  an open channel reading records (in AES-256-GCM when bit 2 of
 *      the byte is set and the processor does it, else ChaCha20-Poly1305).
 * Nothing may crash, leak or read out of bounds; what a fuzzer can make
 * up never completes a handshake (it has not the token's key) and never
 * opens a record. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/net_noise.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct net_keypair si, sr;
static uint8_t psk[NET_KEY];
static const char vm[] = "flock 1 fuzz";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char token[NET_TOKEN_TEXT];

	(void)argc;
	(void)argv;
	if (net_crypto_init() != 0)
		abort();
	net_keypair_new(&si);
	net_keypair_new(&sr);
	net_token_new(token);
	if (net_token_psk(token, psk) != 0)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct net_hs i, r;
	struct fl_buf m, pay;
	struct fl_err err;

	if (size == 0)
		return 0;
	net_hs_init(&i, true, &si, psk, vm, sizeof vm);
	net_hs_init(&r, false, &sr, psk, vm, sizeof vm);
	fl_buf_init(&m);
	fl_buf_init(&pay);
	switch (data[0] % 4) {
	case 0:
		if (net_hs_read(&r, data + 1, size - 1, &pay, &err) == 0)
			abort(); /* made up a tag under the prologue's key */
		break;
	case 1:
		if (net_hs_write(&i, NULL, 0, &m) != 0)
			abort();
		if (net_hs_read(&i, data + 1, size - 1, &pay, &err) == 0)
			abort();
		break;
	case 2:
		if (net_hs_write(&i, NULL, 0, &m) != 0 ||
		    net_hs_read(&r, m.data, m.len, NULL, &err) != 0)
			abort();
		m.len = 0;
		if (net_hs_write(&r, NULL, 0, &m) != 0)
			abort();
		if (net_hs_read(&r, data + 1, size - 1, &pay, &err) == 0)
			abort();
		break;
	case 3: {
		struct net_cipher c;
		size_t used, off = 1;
		memset(&c, 0, sizeof c);
		memset(c.k, 0x5a, sizeof c.k);
		c.aes = (data[0] & 4) != 0 && crypto_aead_aes256gcm_is_available();
		if (c.aes)
			crypto_aead_aes256gcm_beforenm(&c.aes_st, c.k);
		while (off < size) {
			int rc = net_open(&c, data + off, size - off, &used, &pay,
					  &err);
			if (rc == 0)
				abort(); /* a forged record opened */
			if (rc != FL_EAGAIN && rc != FL_EFORMAT && rc != FL_ENOMEM)
				abort();
			break;
		}
		break;
	}
	}
	fl_buf_close(&m);
	fl_buf_close(&pay);
	return 0;
}
