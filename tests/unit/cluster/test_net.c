/* Unit tests for src/cluster/net_frame.c: frames round-trip; the header
 * decoder refuses every malformed field (version, type, flags, a length
 * outside the type's bounds), asks for more on a short header, and never
 * reads past what it was given; names and counters come from the one
 * message table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cluster/net.h"

#include <stdlib.h>
#include <string.h>

static struct net_header hdr(unsigned type, uint32_t len)
{
	struct net_header h = {
		.version = NET_VERSION,
		.type = (uint8_t)type,
		.flags = 0,
		.length = len,
		.request = 0x0102030405060708ull,
		.machine = 7,
		.incarnation = 3,
	};
	return h;
}

/* The bytes of a frame of @type with @len payload bytes of 0xab. */
static uint8_t *frame(unsigned type, uint32_t len, size_t *n)
{
	struct net_header h = hdr(type, len);
	uint8_t *payload = malloc(len + 1);
	struct fl_buf b;

	assert_non_null(payload);
	memset(payload, 0xab, len);
	fl_buf_init(&b);
	net_frame_put(&b, &h, payload, len);
	free(payload);
	assert_false(fl_buf_failed(&b));
	return fl_buf_take(&b, n);
}

static void test_round_trip(void **state)
{
	struct net_header h;
	struct fl_err err;
	size_t n;
	uint8_t *b = frame(NET_MSG_PONG, 8, &n);

	(void)state;
	assert_int_equal(n, NET_HEADER_SIZE + 8);
	assert_int_equal(net_header_decode(b, n, &h, &err), 0);
	assert_int_equal(h.version, NET_VERSION);
	assert_int_equal(h.type, NET_MSG_PONG);
	assert_int_equal(h.flags, 0);
	assert_int_equal(h.length, 8);
	assert_true(h.request == 0x0102030405060708ull);
	assert_int_equal(h.machine, 7);
	assert_int_equal(h.incarnation, 3);
	/* Little-endian on the wire, whatever the host. */
	assert_int_equal(b[0], NET_VERSION);
	assert_int_equal(b[1], NET_MSG_PONG);
	assert_int_equal(b[4], 8);
	assert_int_equal(b[8], 0x08);
	assert_int_equal(b[15], 0x01);
	free(b);
}

static void test_short_header_asks_for_more(void **state)
{
	struct net_header h;
	struct fl_err err;
	size_t n;
	uint8_t *b = frame(NET_MSG_PONG, 8, &n);

	(void)state;
	for (size_t k = 0; k < NET_HEADER_SIZE; k++) {
		/* a copy of exactly k bytes: ASan sees any read past it */
		uint8_t *c = malloc(k ? k : 1);
		memcpy(c, b, k);
		assert_int_equal(net_header_decode(c, k, &h, &err), FL_EAGAIN);
		free(c);
	}
	assert_int_equal(net_header_decode(b, NET_HEADER_SIZE, &h, &err), 0);
	free(b);
}

static void expect_refused(uint8_t *b, size_t n, const char *msg)
{
	struct net_header h;
	struct fl_err err;

	assert_int_equal(net_header_decode(b, n, &h, &err), FL_EFORMAT);
	if (strstr(err.msg, msg) == NULL)
		fail_msg("message '%s' lacks '%s'", err.msg, msg);
}

static void test_bad_fields(void **state)
{
	size_t n;
	uint8_t *b = frame(NET_MSG_PONG, 8, &n);

	(void)state;
	b[0] = NET_VERSION + 1;
	expect_refused(b, n, "frame: version 2 (this machine speaks 1)");
	b[0] = NET_VERSION;
	b[1] = 0;
	expect_refused(b, n, "frame: unknown type 0");
	b[1] = NET_MSG__END;
	expect_refused(b, n, "unknown type");
	b[1] = 255;
	expect_refused(b, n, "unknown type 255");
	b[1] = NET_MSG_PONG;
	b[2] = 0x02; /* a flag nobody defined */
	expect_refused(b, n, "frame: PONG with unknown flags 0x0002");
	b[2] = 0;
	b[3] = 0x80;
	expect_refused(b, n, "unknown flags 0x8000");
	b[3] = 0;
	b[4] = 7; /* PONG carries exactly 8 bytes */
	expect_refused(b, n, "frame: PONG of 7 payload bytes (8 to 8)");
	b[4] = 9;
	expect_refused(b, n, "PONG of 9 payload bytes");
	free(b);
}

/* @b's payload length field. */
static void set_length(uint8_t *b, uint32_t len)
{
	for (int i = 0; i < 4; i++)
		b[4 + i] = (uint8_t)(len >> (8 * i));
}

static void test_length_bounds(void **state)
{
	struct net_header h;
	struct fl_err err;
	size_t n;
	uint8_t *b = frame(NET_MSG_RAFT, 5, &n);

	(void)state;
	/* A peer cannot announce more than a type allows, or more than
	 * NET_FRAME_MAX for any: refused from the header alone, before a
	 * payload is read or room made for it. */
	set_length(b, NET_FRAME_MAX + 1);
	expect_refused(b, NET_HEADER_SIZE, "RAFT of 16777217 payload bytes");
	set_length(b, UINT32_MAX);
	expect_refused(b, NET_HEADER_SIZE, "RAFT of 4294967295 payload bytes");
	set_length(b, 4); /* RAFT carries its direction and stream id */
	expect_refused(b, NET_HEADER_SIZE, "RAFT of 4 payload bytes (5 to");
	set_length(b, NET_FRAME_MAX);
	assert_int_equal(net_header_decode(b, NET_HEADER_SIZE, &h, &err), 0);
	assert_int_equal(h.length, NET_FRAME_MAX);
	free(b);
}

static void test_names_and_counters(void **state)
{
	struct net_counters c;
	struct net_header h = hdr(NET_MSG_OUTPUT, 100);

	(void)state;
	assert_string_equal(net_msg_name(NET_MSG_JOIN), "JOIN");
	assert_string_equal(net_msg_name(NET_MSG_ERROR), "ERROR");
	assert_null(net_msg_name(0));
	assert_null(net_msg_name(NET_MSG__END));
	assert_null(net_msg_name(1000));
	memset(&c, 0, sizeof c);
	net_count(&c, &h);
	net_count(&c, &h);
	assert_true(c.frames[NET_MSG_OUTPUT] == 2);
	assert_true(c.bytes[NET_MSG_OUTPUT] == 2 * (NET_HEADER_SIZE + 100));
	h.type = 200; /* not counted, not a crash */
	net_count(&c, &h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_short_header_asks_for_more),
	    cmocka_unit_test(test_bad_fields),
	    cmocka_unit_test(test_length_bounds),
	    cmocka_unit_test(test_names_and_counters),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
