/* Unit tests for src/cluster/net_noise.c, the secure channel: a handshake
 * between two parties with the token completes, both learn each other's
 * static key and get matching keys each way; a wrong token, another VM
 * (prologue), any modified, cut or extended message, a low-order key, or
 * messages out of turn fail it for good; records open once, in order, and
 * refuse modification, replay, reordering and a changed length. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cluster/net_noise.h"

#include <stdlib.h>
#include <string.h>

struct pair {
	struct net_keypair si, sr;
	uint8_t psk[NET_KEY];
	struct net_hs i, r;
	struct fl_buf m[3]; /* the three messages */
};

static const char vm[] = "flock 1 lab";

static int setup(void **state)
{
	struct pair *p = calloc(1, sizeof *p);
	char token[NET_TOKEN_TEXT];

	if (p == NULL || net_crypto_init() != 0)
		return -1;
	net_keypair_new(&p->si);
	net_keypair_new(&p->sr);
	net_token_new(token);
	if (net_token_psk(token, p->psk) != 0)
		return -1;
	net_hs_init(&p->i, true, &p->si, p->psk, vm, sizeof vm);
	net_hs_init(&p->r, false, &p->sr, p->psk, vm, sizeof vm);
	for (int k = 0; k < 3; k++)
		fl_buf_init(&p->m[k]);
	*state = p;
	return 0;
}

static int teardown(void **state)
{
	struct pair *p = *state;

	for (int k = 0; k < 3; k++)
		fl_buf_close(&p->m[k]);
	free(p);
	return 0;
}

/* Run the handshake to the end; @pay3 goes in message 3. */
static void handshake(struct pair *p, const char *pay3, struct fl_buf *got)
{
	struct fl_err err;

	assert_int_equal(net_hs_write(&p->i, NULL, 0, &p->m[0]), 0);
	if (net_hs_read(&p->r, p->m[0].data, p->m[0].len, NULL, &err) != 0)
		fail_msg("%s", err.msg);
	assert_int_equal(net_hs_write(&p->r, NULL, 0, &p->m[1]), 0);
	if (net_hs_read(&p->i, p->m[1].data, p->m[1].len, NULL, &err) != 0)
		fail_msg("%s", err.msg);
	assert_int_equal(net_hs_write(&p->i, pay3, strlen(pay3), &p->m[2]), 0);
	if (net_hs_read(&p->r, p->m[2].data, p->m[2].len, got, &err) != 0)
		fail_msg("%s", err.msg);
}

static void test_handshake_and_records(void **state)
{
	struct pair *p = *state;
	struct net_cipher is, ir, rs, rr;
	uint8_t ipeer[NET_KEY], rpeer[NET_KEY];
	struct fl_buf got, rec, plain;
	struct fl_err err;
	size_t used;

	fl_buf_init(&got);
	handshake(p, "HELLO m2", &got);
	assert_int_equal(p->m[0].len, 32 + 16);
	/* messages 2 and 3: the ciphers' byte before the payload */
	assert_int_equal(p->m[1].len, 32 + 48 + 1 + 16);
	assert_int_equal(p->m[2].len, 48 + 1 + 8 + 16);
	assert_int_equal(got.len, 8);
	assert_memory_equal(got.data, "HELLO m2", 8);
	/* the payload does not appear in clear */
	assert_null(memmem(p->m[2].data, p->m[2].len, "HELLO", 5));
	assert_true(net_hs_done(&p->i) && net_hs_done(&p->r));
	net_hs_split(&p->i, &is, &ir, ipeer);
	net_hs_split(&p->r, &rs, &rr, rpeer);
	assert_memory_equal(ipeer, p->sr.pub, NET_KEY);
	assert_memory_equal(rpeer, p->si.pub, NET_KEY);
	assert_memory_equal(is.k, rr.k, NET_KEY);
	assert_memory_equal(ir.k, rs.k, NET_KEY);
	assert_memory_not_equal(is.k, ir.k, NET_KEY);

	/* Records both ways, in order. */
	fl_buf_init(&rec);
	fl_buf_init(&plain);
	assert_int_equal(net_seal(&is, "one", 3, &rec), 0);
	assert_int_equal(net_seal(&is, "two!", 4, &rec), 0);
	assert_int_equal(rec.len, 2 * (4 + 16) + 7);
	/* partial arrival asks for more */
	for (size_t k = 0; k < 4 + 16 + 3; k++)
		assert_int_equal(net_open(&rr, rec.data, k, &used, &plain, &err),
				 FL_EAGAIN);
	assert_int_equal(net_open(&rr, rec.data, rec.len, &used, &plain, &err), 0);
	assert_int_equal(used, 4 + 16 + 3);
	assert_int_equal(net_open(&rr, rec.data + used, rec.len - used, &used,
				  &plain, &err),
			 0);
	assert_int_equal(plain.len, 7);
	assert_memory_equal(plain.data, "onetwo!", 7);
	/* A replay of the first record: refused. */
	assert_int_equal(net_open(&rr, rec.data, rec.len, &used, &plain, &err),
			 FL_EFORMAT);
	/* An empty record into an empty buffer (the fuzzer's find). */
	struct fl_buf none;
	fl_buf_init(&none);
	rec.len = 0;
	assert_int_equal(net_seal(&is, "", 0, &rec), 0);
	assert_int_equal(net_open(&rr, rec.data, rec.len, &used, &none, &err), 0);
	assert_int_equal(none.len, 0);
	fl_buf_close(&none);
	/* The other way. */
	rec.len = plain.len = 0;
	assert_int_equal(net_seal(&rs, "back", 4, &rec), 0);
	assert_int_equal(net_open(&ir, rec.data, rec.len, &used, &plain, &err), 0);
	assert_memory_equal(plain.data, "back", 4);
	fl_buf_close(&got);
	fl_buf_close(&rec);
	fl_buf_close(&plain);
}

/* The record cipher each pair of offers gives: AES-256-GCM only when
 * both sides offer it; records of 4 KiB both ways either way; an AES
 * record is not a ChaCha20-Poly1305 one (the choice is real). */
static void test_record_ciphers(void **state)
{
	static uint8_t page[4096], back[4096];
	struct pair *p = *state;

	if (!crypto_aead_aes256gcm_is_available())
		skip(); /* nothing to choose on this processor */
	for (size_t i = 0; i < sizeof page; i++)
		page[i] = (uint8_t)(i * 7 + 1);
	for (int offer = 0; offer < 4; offer++) {
		struct net_cipher is, ir, rs, rr;
		uint8_t peer[NET_KEY];
		struct fl_buf got, rec, plain;
		struct fl_err err;
		size_t used;
		bool aes = offer == 3;

		net_hs_init(&p->i, true, &p->si, p->psk, vm, sizeof vm);
		net_hs_init(&p->r, false, &p->sr, p->psk, vm, sizeof vm);
		assert_int_equal(p->i.ciphers, NET_CIPHER_AESGCM);
		if (!(offer & 1))
			p->i.ciphers = 0;
		if (!(offer & 2))
			p->r.ciphers = 0;
		for (int k = 0; k < 3; k++)
			p->m[k].len = 0;
		fl_buf_init(&got);
		handshake(p, "m3", &got);
		assert_int_equal(got.len, 2);
		net_hs_split(&p->i, &is, &ir, peer);
		net_hs_split(&p->r, &rs, &rr, peer);
		assert_true(is.aes == aes && ir.aes == aes && rs.aes == aes &&
			    rr.aes == aes);
		fl_buf_init(&rec);
		fl_buf_init(&plain);
		assert_int_equal(net_seal(&is, page, sizeof page, &rec), 0);
		if (aes) { /* opened as ChaCha20-Poly1305: refused */
			struct net_cipher chacha = rr;
			chacha.aes = false;
			assert_int_equal(net_open(&chacha, rec.data, rec.len,
						  &used, &plain, &err),
					 FL_EFORMAT);
		}
		assert_int_equal(net_open(&rr, rec.data, rec.len, &used, &plain,
					  &err),
				 0);
		assert_int_equal(plain.len, sizeof page);
		assert_memory_equal(plain.data, page, sizeof page);
		rec.len = plain.len = 0;
		memcpy(back, page, sizeof back);
		back[0] ^= 1;
		assert_int_equal(net_seal(&rs, back, sizeof back, &rec), 0);
		assert_int_equal(net_open(&ir, rec.data, rec.len, &used, &plain,
					  &err),
				 0);
		assert_memory_equal(plain.data, back, sizeof back);
		/* A flipped bit in the AES record is refused too. */
		rec.len = plain.len = 0;
		assert_int_equal(net_seal(&is, page, 64, &rec), 0);
		rec.data[10] ^= 0x20;
		assert_int_equal(net_open(&rr, rec.data, rec.len, &used, &plain,
					  &err),
				 FL_EFORMAT);
		fl_buf_close(&got);
		fl_buf_close(&rec);
		fl_buf_close(&plain);
	}
}

static void test_records_refuse_tampering(void **state)
{
	struct pair *p = *state;
	struct net_cipher is, ir, rs, rr;
	uint8_t peer[NET_KEY];
	struct fl_buf rec, plain;
	struct fl_err err;
	size_t used;

	handshake(p, "", NULL);
	net_hs_split(&p->i, &is, &ir, peer);
	net_hs_split(&p->r, &rs, &rr, peer);
	fl_buf_init(&rec);
	fl_buf_init(&plain);
	assert_int_equal(net_seal(&is, "0123456789", 10, &rec), 0);
	assert_int_equal(net_seal(&is, "abcdefghij", 10, &rec), 0);
	/* Every byte of the first record, flipped: refused, and the
	 * receiver still expects record 0. */
	for (size_t k = 0; k < 30; k++) {
		rec.data[k] ^= 0x40;
		int rc = net_open(&rr, rec.data, rec.len, &used, &plain, &err);
		if (k < 4) /* a changed length: malformed or not all here */
			assert_true(rc == FL_EFORMAT || rc == FL_EAGAIN);
		else
			assert_int_equal(rc, FL_EFORMAT);
		rec.data[k] ^= 0x40;
	}
	assert_int_equal(rr.n, 0);
	/* Reordered: the second record first is refused. */
	assert_int_equal(net_open(&rr, rec.data + 30, 30, &used, &plain, &err),
			 FL_EFORMAT);
	/* A length past the limit is refused from the length alone. */
	uint8_t big[4] = {0xff, 0xff, 0xff, 0x7f};
	assert_int_equal(net_open(&rr, big, 4, &used, &plain, &err), FL_EFORMAT);
	uint8_t small[4] = {3, 0, 0, 0}; /* shorter than a tag */
	assert_int_equal(net_open(&rr, small, 4, &used, &plain, &err), FL_EFORMAT);
	/* In order, both open. */
	assert_int_equal(net_open(&rr, rec.data, rec.len, &used, &plain, &err), 0);
	assert_int_equal(net_open(&rr, rec.data + 30, 30, &used, &plain, &err), 0);
	assert_int_equal(plain.len, 20);
	fl_buf_close(&rec);
	fl_buf_close(&plain);
}

static void test_wrong_token_is_refused(void **state)
{
	struct pair *p = *state;
	struct net_hs r;
	uint8_t other[NET_KEY];
	struct fl_err err;
	char token[NET_TOKEN_TEXT];

	net_token_new(token);
	assert_int_equal(net_token_psk(token, other), 0);
	net_hs_init(&r, false, &p->sr, other, vm, sizeof vm);
	assert_int_equal(net_hs_write(&p->i, NULL, 0, &p->m[0]), 0);
	assert_int_equal(net_hs_read(&r, p->m[0].data, p->m[0].len, NULL, &err), 0);
	assert_int_equal(net_hs_write(&r, NULL, 0, &p->m[1]), 0);
	assert_int_equal(net_hs_read(&p->i, p->m[1].data, p->m[1].len, NULL, &err),
			 0);
	assert_int_equal(net_hs_write(&p->i, "x", 1, &p->m[2]), 0);
	assert_int_equal(net_hs_read(&r, p->m[2].data, p->m[2].len, NULL, &err),
			 FL_EFORMAT);
	assert_string_equal(err.msg, "handshake: message 3: refused (wrong "
				     "token, or not this VM)");
	assert_false(net_hs_done(&r));
	/* refused for good */
	assert_int_equal(net_hs_read(&r, p->m[2].data, p->m[2].len, NULL, &err),
			 FL_EFORMAT);
}

static void test_other_vm_is_refused(void **state)
{
	struct pair *p = *state;
	struct net_hs r;
	struct fl_err err;
	static const char other[] = "flock 1 other";

	net_hs_init(&r, false, &p->sr, p->psk, other, sizeof other);
	assert_int_equal(net_hs_write(&p->i, NULL, 0, &p->m[0]), 0);
	/* message 1's payload tag covers the prologue */
	assert_int_equal(net_hs_read(&r, p->m[0].data, p->m[0].len, NULL, &err),
			 FL_EFORMAT);
	assert_string_equal(err.msg, "handshake: message 1: refused (not this "
				     "VM, or modified)");
}

/* Every message, every byte flipped, cut short or lengthened: the side
 * that reads it refuses. */
static void test_modified_messages(void **state)
{
	struct pair *p = *state;
	struct fl_err err;

	handshake(p, "payload", NULL);
	for (int m = 0; m < 3; m++) {
		struct fl_buf *b = &p->m[m];
		bool reader_is_r = m != 1;
		for (size_t k = 0; k <= b->len + 1; k++) {
			struct pair *q = calloc(1, sizeof *q);
			uint8_t *c = malloc(b->len + 2);
			size_t len = b->len;
			/* replay the honest messages before @m into a fresh
			 * pair with the same keys */
			q->si = p->si, q->sr = p->sr;
			memcpy(q->psk, p->psk, NET_KEY);
			net_hs_init(&q->i, true, &q->si, q->psk, vm, sizeof vm);
			net_hs_init(&q->r, false, &q->sr, q->psk, vm, sizeof vm);
			for (int j = 0; j < 3; j++)
				fl_buf_init(&q->m[j]);
			for (int j = 0; j < m; j++) {
				struct net_hs *w = j == 1 ? &q->r : &q->i;
				struct net_hs *rd = j == 1 ? &q->i : &q->r;
				assert_int_equal(net_hs_write(w, "payload",
							      j == 2 ? 7 : 0,
							      &q->m[j]),
						 0);
				assert_int_equal(net_hs_read(rd, q->m[j].data,
							     q->m[j].len, NULL,
							     &err),
						 0);
			}
			struct net_hs *w = m == 1 ? &q->r : &q->i;
			assert_int_equal(net_hs_write(w, "payload", m == 2 ? 7 : 0,
						      &q->m[m]),
					 0);
			memcpy(c, q->m[m].data, q->m[m].len);
			len = q->m[m].len;
			if (k < len)
				c[k] ^= 1; /* flipped */
			else if (k == len)
				len--; /* cut */
			else
				c[len++] = 0; /* lengthened */
			struct net_hs *rd = reader_is_r ? &q->r : &q->i;
			assert_int_equal(net_hs_read(rd, c, len, NULL, &err),
					 FL_EFORMAT);
			assert_false(net_hs_done(rd));
			free(c);
			for (int j = 0; j < 3; j++)
				fl_buf_close(&q->m[j]);
			free(q);
		}
	}
}

static void test_low_order_key_and_turns(void **state)
{
	struct pair *p = *state;
	uint8_t msg[48] = {0}, m2[97] = {0}; /* keys of 0: low order */
	struct fl_err err;
	struct fl_buf out;
	struct net_hs i2;

	fl_buf_init(&out);
	/* Out of turn: the responder cannot write first; an initiator that
	 * reads first refuses, for good. */
	assert_int_equal(net_hs_write(&p->r, NULL, 0, &out), FL_EINVAL);
	assert_int_equal(net_hs_read(&p->i, msg, sizeof msg, NULL, &err),
			 FL_EFORMAT);
	assert_string_equal(err.msg, "handshake: message 1: not the peer's turn");
	assert_int_equal(net_hs_write(&p->i, NULL, 0, &out), FL_EINVAL);
	/* A message 2 whose ephemeral key is a low-order point: the shared
	 * secret would be known to anyone; refused. */
	net_hs_init(&i2, true, &p->si, p->psk, vm, sizeof vm);
	assert_int_equal(net_hs_write(&i2, NULL, 0, &out), 0);
	assert_int_equal(net_hs_read(&i2, m2, sizeof m2, NULL, &err), FL_EFORMAT);
	assert_string_equal(err.msg, "handshake: message 2: bad ephemeral key");
	/* A too-large payload is not written. */
	static char big[NET_HS_PAYLOAD_MAX + 1];
	struct net_hs i3;
	net_hs_init(&i3, true, &p->si, p->psk, vm, sizeof vm);
	assert_int_equal(net_hs_write(&i3, big, sizeof big, &out), FL_EINVAL);
	fl_buf_close(&out);
}

static void test_tokens(void **state)
{
	char t[NET_TOKEN_TEXT], u[NET_TOKEN_TEXT];
	uint8_t a[NET_KEY], b[NET_KEY];

	(void)state;
	net_token_new(t);
	net_token_new(u);
	assert_int_equal(strlen(t), 43);
	assert_string_not_equal(t, u);
	for (const char *c = t; *c; c++) /* copy-paste safe */
		assert_true((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') ||
			    (*c >= '0' && *c <= '9') || *c == '-' || *c == '_');
	assert_int_equal(net_token_psk(t, a), 0);
	assert_int_equal(net_token_psk(t, b), 0);
	assert_memory_equal(a, b, NET_KEY);
	assert_int_equal(net_token_psk(u, b), 0);
	assert_memory_not_equal(a, b, NET_KEY);
	assert_int_equal(net_token_psk("", a), FL_EINVAL);
	assert_int_equal(net_token_psk("short", a), FL_EINVAL);
	t[5] = '!';
	assert_int_equal(net_token_psk(t, a), FL_EINVAL);
	char longer[NET_TOKEN_TEXT + 1];
	memcpy(longer, u, 43);
	strcpy(longer + 43, "x"); /* 44 characters */
	assert_int_equal(net_token_psk(longer, a), FL_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_handshake_and_records, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_record_ciphers, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_records_refuse_tampering, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_wrong_token_is_refused, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_other_vm_is_refused, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_modified_messages, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_low_order_key_and_turns, setup,
					    teardown),
	    cmocka_unit_test(test_tokens),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
