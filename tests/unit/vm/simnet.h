/* What the unit tests that carry messages between simulated machines
 * share (test_dsm_gsrc.c, tests/unit/dist/test_dist.c; test_remote.c
 * takes the generator): a seeded generator, the monotonic clock, and a
 * min-heap of messages on (due time, sequence number). Running out of
 * memory aborts the binary with a line saying so. */
#ifndef FLOCK_TESTS_UNIT_VM_SIMNET_H
#define FLOCK_TESTS_UNIT_VM_SIMNET_H

#include "unit_run.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

static inline uint64_t sim_splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint64_t sim_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A message on its way: @chan is the driver's (which layer it is for). */
struct sim_msg {
	uint64_t due, seq;
	int from, to;
	uint8_t chan;
	size_t len;
	uint8_t *bytes;
};

struct sim_heap {
	struct sim_msg *v;
	size_t n, cap;
};

static inline bool sim_before(const struct sim_msg *a, const struct sim_msg *b)
{
	return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static inline void sim_heap_push(struct sim_heap *h, struct sim_msg m)
{
	size_t i;

	if (h->n == h->cap) {
		h->cap = h->cap ? 2 * h->cap : 64;
		h->v = realloc(h->v, h->cap * sizeof *h->v);
		if (h->v == NULL)
			unit_die("out of memory");
	}
	i = h->n++;
	while (i > 0 && sim_before(&m, &h->v[(i - 1) / 2])) {
		h->v[i] = h->v[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	h->v[i] = m;
}

/* The earliest message (the heap must not be empty). */
static inline struct sim_msg sim_heap_pop(struct sim_heap *h)
{
	struct sim_msg top = h->v[0], last = h->v[--h->n];
	size_t i = 0;

	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= h->n)
			break;
		if (c + 1 < h->n && sim_before(&h->v[c + 1], &h->v[c]))
			c++;
		if (!sim_before(&h->v[c], &last))
			break;
		h->v[i] = h->v[c];
		i = c;
	}
	if (h->n > 0)
		h->v[i] = last;
	return top;
}

/* Free every message left, and the heap. */
static inline void sim_heap_close(struct sim_heap *h)
{
	while (h->n > 0)
		free(sim_heap_pop(h).bytes);
	free(h->v);
	h->v = NULL;
	h->cap = 0;
}

#endif
