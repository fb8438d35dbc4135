/* libFuzzer target for the daemon's message payloads (src/cluster/
 * dm_wire.c): what a client sends in SUBMIT, a joining machine in JOIN,
 * a machine in its heartbeat and its join reply, anyone in ERROR, an
 * origin in PART, and a part's counts in PART_STATS and PART_QUIET.
 *
 * The first byte picks the decoder, the rest is the payload. What a
 * decoder accepts is encoded again and must decode to the same values
 * (for SUBMIT, JOIN and PING, whose encodings are canonical: the same
 * bytes; PART_STATS's too when it has as many fields as we know).
 * Nothing may crash, leak or read out of bounds. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/dm_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void count_member(void *arg, const struct dm_join_member *m)
{
	size_t *n = arg;

	if (m->id == 0 || m->addr[0] == 0)
		abort();
	(*n)++;
}

static void same(const struct fl_buf *b, const uint8_t *p, size_t n)
{
	if (fl_buf_failed(b) || b->len != n || memcmp(b->data, p, n) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fl_err err;
	struct fl_buf b;
	const uint8_t *p = data + 1;
	size_t n = size - 1;

	if (size == 0)
		return 0;
	fl_buf_init(&b);
	switch (data[0] % 7) {
	case 0: {
		struct dm_submit s;
		if (dm_submit_decode(p, n, &s, &err) != 0)
			break;
		if (s.argc == 0 || s.argv[s.argc] != NULL || s.module_len == 0)
			abort();
		dm_submit_encode(&s, &b);
		same(&b, p, n);
		dm_submit_free(&s);
		break;
	}
	case 1: {
		struct dm_join j;
		if (dm_join_decode(p, n, &j, &err) != 0)
			break;
		dm_join_encode(&j, &b);
		same(&b, p, n);
		break;
	}
	case 2: {
		uint32_t id;
		size_t members = 0;
		if (dm_join_reply_decode(p, n, &id, count_member, &members, &err) != 0)
			break;
		if (id == 0)
			abort();
		break;
	}
	case 3: {
		struct dm_load l;
		uint64_t clock;
		if (dm_ping_decode(p, n, &clock, &l, &err) != 0)
			break;
		dm_ping_encode(clock, &l, &b);
		same(&b, p, n);
		break;
	}
	case 4: {
		char msg[64];
		int code;
		if (dm_error_decode(p, n, &code, msg, sizeof msg, &err) != 0)
			break;
		for (size_t i = 0; msg[i] != 0; i++)
			if (msg[i] < ' ' || msg[i] >= 127)
				abort();
		break;
	}
	case 5: {
		struct dm_part_msg m;
		if (dm_part_decode(p, n, &m, &err) != 0)
			break;
		if (m.origin >= m.nparts || m.sub.argv[m.sub.argc] != NULL)
			abort();
		dm_part_encode(&m, &b);
		same(&b, p, n);
		dm_submit_free(&m.sub);
		break;
	}
	case 6: {
		struct dm_pstats s;
		if (dm_pstats_decode(p, n, &s, &err) != 0)
			break;
		dm_pstats_encode(&s, &b);
		if (n == b.len)
			same(&b, p, n);
		break;
	}
	}
	fl_buf_close(&b);
	return 0;
}
