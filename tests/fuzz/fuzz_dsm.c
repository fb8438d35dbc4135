/* libFuzzer target for the DSM's message decoder and handlers
 * (src/dsm/dsm_wire.c, dsm_home.c, dsm_cache.c): what another machine
 * sends about global memory.
 *
 * The input is a script for node 0 of 3 (pages homed at page % 3), a
 * sequence of records: u8 what, then for a message u8 sender, u16 length
 * and that many bytes, delivered as they are; for a local call, its
 * page and value bytes. A message the decoder accepts is encoded again
 * and must give the same bytes (the format is canonical). Local calls
 * (read, write, map, release, acquire, atomic, lock, unlock, wait, wake,
 * free) between the messages drive the node into states the messages
 * then meet: a fetch awaiting its page, diffs awaiting acks, notes
 * awaiting acks, callers and requests queued on words, replies waiting
 * for acks. The node's own home has a map and an allocator that depend
 * on the page (unmapped, read-only, live blocks -- some of them
 * malformed, which the core must not pass on -- frees that unmap pages
 * it does not home). Nothing may crash, leak, read out of bounds, wake a
 * caller that is not parked, or tell a caller queued twice. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsm/dsm_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define WAITS 4

static bool parked[WAITS];
static int queued[WAITS];
static int calling = -1; /* the wait of the local call running */
static struct dsm_wait waits[WAITS];

static int home3(void *ctx, uint64_t page)
{
	(void)ctx;
	return (int)(page % 3);
}

static void sent(void *ctx, int to, const void *msg, size_t len)
{
	struct dsm_msg m;

	(void)ctx;
	if (to < 1 || to > 2 || dsm__msg_decode(msg, len, &m) != 0)
		abort(); /* what we send, we must be able to read */
}

static void woken(void *ctx, struct dsm_wait *w)
{
	int i = (int)(w - waits);

	(void)ctx;
	if (i < 0 || i >= WAITS || !parked[i])
		abort();
	parked[i] = false;
	queued[i] = 0;
}

static void told_queued(void *ctx, struct dsm_wait *w)
{
	int i = (int)(w - waits);

	(void)ctx;
	if (i < 0 || i >= WAITS || (!parked[i] && i != calling) || ++queued[i] > 1)
		abort();
}

/* Node 0's home side, by page: page % 5 == 4 unmapped, == 3 read-only;
 * page % 7 == 1 keeps live blocks, page % 11 == 5 reports some the core
 * must refuse to send (overlapping). */
static enum dsm_access map0(void *ctx, uint64_t page, struct dsm_extent *live,
			    uint32_t *nlive)
{
	(void)ctx;
	*nlive = 0;
	if (page % 5 == 4)
		return DSM_MAP_NONE;
	if (page % 7 == 1) {
		live[0] = (struct dsm_extent){0, 64};
		live[1] = (struct dsm_extent){64, 8};
		live[2] = (struct dsm_extent){512, 3584};
		*nlive = 3;
	} else if (page % 11 == 5) {
		live[0] = (struct dsm_extent){0, 64};
		live[1] = (struct dsm_extent){32, 64};
		*nlive = 2;
	}
	return page % 5 == 3 ? DSM_MAP_RO : DSM_MAP_RW;
}

static enum dsm_res free0(void *ctx, uint64_t page, uint32_t off,
			  uint64_t *first, uint64_t *npages)
{
	(void)ctx;
	if (off % 16 != 0)
		return off % 16 == 8 ? DSM_NOMEM : DSM_NOTBLOCK;
	*first = page;
	*npages = 1 + page % 3; /* the next pages are not all node 0's */
	return DSM_OK;
}

static void roundtrip(const uint8_t *p, size_t n)
{
	struct dsm_msg m;
	struct fl_buf b;

	if (dsm__msg_decode(p, n, &m) != 0)
		return;
	fl_buf_init(&b);
	dsm__msg_encode(&m, &b);
	if (fl_buf_failed(&b) || b.len != n || memcmp(b.data, p, n) != 0)
		abort();
	fl_buf_close(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dsm_config cfg = {.self = 0, .nodes = 3, .home = home3,
				 .io = {.send = sent,
					.wake = woken,
					.queued = told_queued,
					.map = map0,
					.free = free0}};
	struct dsm_node *n;
	struct fl_err err;
	size_t off = 0;

	for (int i = 0; i < WAITS; i++) {
		dsm_wait_init(&waits[i], NULL);
		parked[i] = false;
		queued[i] = 0;
	}
	if (dsm_node_new(&cfg, &n, &err) != 0)
		abort();
	while (off < size) {
		uint8_t what = data[off++];
		if (what < 128) { /* a message */
			size_t len;
			int from;
			if (size - off < 3)
				break;
			from = data[off] % 4; /* 3: out of range */
			len = (size_t)data[off + 1] | (size_t)data[off + 2] << 8;
			off += 3;
			if (len > size - off)
				len = size - off;
			roundtrip(data + off, len);
			dsm_deliver(n, from, data + off, len);
			off += len;
		} else { /* a local call on page 0..7, with one of the waits */
			int wi = what % WAITS;
			struct dsm_wait *w = &waits[wi];
			uint64_t page, old, v = 0;
			enum dsm_res r = DSM_OK;
			const uint8_t *d;
			uint8_t buf[8];
			if (size - off < 2)
				break;
			page = data[off] % 8;
			v = data[off + 1];
			off += 2;
			if (parked[wi])
				continue; /* lent to the node */
			calling = wi;
			switch (((what >> 2) & 31) % 12) {
			case 0:
				r = dsm_read(n, w, page, (uint32_t)v * 8, 8, buf);
				break;
			case 1:
				r = dsm_write(n, w, page, (uint32_t)v * 8, 8, &v);
				break;
			case 2:
				r = dsm_release(n, w);
				break;
			case 3:
				r = dsm_acquire(n, w);
				break;
			case 4:
				r = dsm_atomic(n, w, page, (uint32_t)(v % 8) * 8,
					       (enum dsm_op)(v % 3), v, 1, &old);
				break;
			case 5:
			case 6:
			case 7:
			case 8:
				r = dsm_sync(n, w, page, (uint32_t)(v % 8) * 8,
					     (enum dsm_sync_op)(((what >> 2) & 31) % 12 - 5),
					     v / 8, &old);
				break;
			case 9:
				r = dsm_free(n, w, page, (uint32_t)v * 8);
				break;
			case 10:
				r = dsm_map(n, w, page, v % 2, (uint32_t)v * 4, 8, &d);
				break;
			case 11:
				r = dsm_write(n, w, page, (uint32_t)v * 16, 8, &v);
				break;
			}
			calling = -1;
			if (r == DSM_WAIT)
				parked[wi] = true;
			else
				queued[wi] = 0;
		}
	}
	dsm_node_free(n);
	return 0;
}
