/* The DSM's wire format: encoding and decoding its messages (the format
 * is in dsm_int.h), and the diffs they carry.
 *
 * The decoder is the first code to see what another machine sent and
 * treats every byte as hostile: an unknown version or type, a payload
 * length outside its type's bounds, a sender or node mask beyond
 * DSM_MAX_NODES, a page number past DSM_PAGE_LIMIT, an atomic's or sync
 * op's unknown op or misaligned offset, a free's offset outside the page,
 * an unknown result code or flag, a page's unknown access or live blocks
 * that are empty, unordered, overlapping, outside the page or more than
 * the payload says, a free's page range past DSM_PAGE_LIMIT, and a diff
 * whose runs are empty, unordered, touching, overlapping or outside the
 * page, or whose lengths do not add up to the payload, are all
 * FL_EFORMAT. What it accepts encodes back to
 * the same bytes (tests/fuzz/fuzz_dsm.c holds it to that).
 *
 * Threads: any; no state. */
#include "dsm/dsm_int.h"

#include <string.h>

struct msg_info {
	const char *name;
	uint32_t min, max;
	bool to_home;
};

static const struct msg_info info[DSM_MSG_END] = {
#define DSM__INFO(name, code, min, max, home, fn, text)                        \
	[code] = {#name, min, max, home},
	DSM_MESSAGES(DSM__INFO)
#undef DSM__INFO
};

_Static_assert(DSM_HEADER_SIZE == 1 + 1 + 2 + 8 + 8 + 8, "header layout");
_Static_assert(DSM_DIFF_MAX <= 65535, "a diff's length fits a u16 frame");
_Static_assert(DSM_PAGE_MAX <= 65535, "a page's length fits a u16 frame");

uint8_t dsm__res_code(enum dsm_res r)
{
	switch (r) {
#define DSM__CODE(res, code)                                                   \
	case res:                                                             \
		return code;
	DSM_RESULTS(DSM__CODE)
#undef DSM__CODE
	default:
		return dsm__res_code(DSM_NOMEM); /* not a reply's: none fails so */
	}
}

int dsm__code_res(uint8_t code)
{
	switch (code) {
#define DSM__RES(res, c)                                                       \
	case c:                                                               \
		return res;
	DSM_RESULTS(DSM__RES)
#undef DSM__RES
	default:
		return -1;
	}
}

const char *dsm__msg_name(unsigned type)
{
	return type < DSM_MSG_END ? info[type].name : NULL;
}

bool dsm__msg_to_home(unsigned type)
{
	return info[type].to_home;
}

/* Walk and check a diff's runs; the number of changed bytes, or -1. */
static long diff_check(const uint8_t *p, size_t len)
{
	struct fl_reader r;
	uint32_t nruns, end = 0;
	long total = 0;

	fl_reader_init(&r, p, len);
	nruns = fl_get_u16(&r);
	if (r.failed || nruns == 0 || nruns > DSM_DIFF_MAX_RUNS)
		return -1;
	for (uint32_t i = 0; i < nruns; i++) {
		uint32_t off = fl_get_u16(&r);
		uint32_t n = fl_get_u16(&r);
		if (r.failed || n == 0 || off > DSM_PAGE_SIZE ||
		    n > DSM_PAGE_SIZE - off || (i > 0 && off <= end))
			return -1;
		if (fl_get_bytes(&r, n) == NULL)
			return -1;
		end = off + n;
		total += n;
	}
	return fl_reader_left(&r) == 0 ? total : -1;
}

/* Check a page's @n live blocks: nonempty, inside the page, increasing,
 * never overlapping (touching: two blocks side by side). */
static bool live_check(const uint8_t *p, uint32_t n)
{
	uint32_t end = 0;

	for (uint32_t i = 0; i < n; i++) {
		uint32_t off = fl_load_u32(p + 4 * i) & 0xffff;
		uint32_t len = fl_load_u32(p + 4 * i) >> 16;
		if (len == 0 || off >= DSM_PAGE_SIZE || len > DSM_PAGE_SIZE - off ||
		    off < end)
			return false;
		end = off + len;
	}
	return true;
}

int dsm__msg_decode(const void *p, size_t len, struct dsm_msg *m)
{
	struct fl_reader r;
	size_t plen;

	memset(m, 0, sizeof *m);
	fl_reader_init(&r, p, len);
	if (fl_get_u8(&r) != DSM_VERSION)
		return FL_EFORMAT;
	m->type = fl_get_u8(&r);
	m->from = fl_get_u16(&r);
	m->rid = fl_get_u64(&r);
	m->done = fl_get_u64(&r);
	m->page = fl_get_u64(&r);
	if (r.failed || dsm__msg_name(m->type) == NULL ||
	    m->from >= DSM_MAX_NODES || m->page >= DSM_PAGE_LIMIT)
		return FL_EFORMAT;
	plen = fl_reader_left(&r);
	if (plen < info[m->type].min || plen > info[m->type].max)
		return FL_EFORMAT;
	switch (m->type) {
	case DSM_MSG_PAGE:
		m->writers = fl_get_u64(&r);
		m->sharers = fl_get_u64(&r);
		m->dver = fl_get_u64(&r);
		m->access = fl_get_u8(&r);
		m->nlive = fl_get_u16(&r);
		m->bytes = fl_get_bytes(&r, DSM_PAGE_SIZE);
		m->nbytes = DSM_PAGE_SIZE;
		if (r.failed || (m->access != DSM_MAP_RO && m->access != DSM_MAP_RW) ||
		    m->nlive > DSM_LIVE_MAX || fl_reader_left(&r) != 4u * m->nlive)
			return FL_EFORMAT;
		m->live = fl_get_bytes(&r, 4u * m->nlive);
		if (m->nlive > 0 && (m->live == NULL || !live_check(m->live, m->nlive)))
			return FL_EFORMAT;
		break;
	case DSM_MSG_DIFF:
		m->bytes = fl_get_bytes(&r, plen);
		m->nbytes = plen;
		if (m->bytes == NULL || diff_check(m->bytes, plen) < 0)
			return FL_EFORMAT;
		break;
	case DSM_MSG_DIFF_ACK:
	case DSM_MSG_NOTE:
		m->writers = fl_get_u64(&r);
		m->dver = fl_get_u64(&r);
		break;
	case DSM_MSG_ATOMIC:
		m->op = fl_get_u8(&r);
		m->off = fl_get_u16(&r);
		m->a = fl_get_u64(&r);
		m->b = fl_get_u64(&r);
		if (m->op > DSM_XCHG || m->off % 8 != 0 ||
		    m->off > DSM_PAGE_SIZE - 8)
			return FL_EFORMAT;
		break;
	case DSM_MSG_ATOMIC_REPLY:
		m->res = fl_get_u8(&r);
		m->old = fl_get_u64(&r);
		if (dsm__code_res(m->res) < 0)
			return FL_EFORMAT;
		break;
	case DSM_MSG_SYNC:
		m->op = fl_get_u8(&r);
		m->off = fl_get_u16(&r);
		m->a = fl_get_u64(&r);
		if (m->op > DSM_WAKE || m->off % 8 != 0 ||
		    m->off > DSM_PAGE_SIZE - 8)
			return FL_EFORMAT;
		break;
	case DSM_MSG_SYNC_REPLY:
		m->res = fl_get_u8(&r);
		m->flags = fl_get_u8(&r);
		m->old = fl_get_u64(&r);
		if (dsm__code_res(m->res) < 0 || (m->flags & ~DSM_SYNC_ACK_WANTED))
			return FL_EFORMAT;
		break;
	case DSM_MSG_FREE:
		m->off = fl_get_u16(&r);
		if (m->off >= DSM_PAGE_SIZE)
			return FL_EFORMAT;
		break;
	case DSM_MSG_FREE_REPLY:
		m->res = fl_get_u8(&r);
		m->first = fl_get_u64(&r);
		m->npages = fl_get_u64(&r);
		if (dsm__code_res(m->res) < 0 || m->first >= DSM_PAGE_LIMIT ||
		    m->npages > DSM_PAGE_LIMIT - m->first)
			return FL_EFORMAT;
		break;
	default: /* GET, NOTE_ACK, UNMAPPED, QUEUED, SYNC_ACK: no payload */
		break;
	}
	/* Masks name nodes that can exist (DSM_MAX_NODES is 64: all do). */
	_Static_assert(DSM_MAX_NODES == 64, "masks are u64");
	if (r.failed || fl_reader_left(&r) != 0)
		return FL_EFORMAT;
	return 0;
}

void dsm__msg_encode(const struct dsm_msg *m, struct fl_buf *b)
{
	fl_buf_put_u8(b, DSM_VERSION);
	fl_buf_put_u8(b, m->type);
	fl_buf_put_u16(b, m->from);
	fl_buf_put_u64(b, m->rid);
	fl_buf_put_u64(b, m->done);
	fl_buf_put_u64(b, m->page);
	switch (m->type) {
	case DSM_MSG_PAGE:
		fl_buf_put_u64(b, m->writers);
		fl_buf_put_u64(b, m->sharers);
		fl_buf_put_u64(b, m->dver);
		fl_buf_put_u8(b, m->access);
		fl_buf_put_u16(b, m->nlive);
		fl_buf_put(b, m->bytes, DSM_PAGE_SIZE);
		fl_buf_put(b, m->live, 4u * m->nlive);
		break;
	case DSM_MSG_DIFF:
		fl_buf_put(b, m->bytes, m->nbytes);
		break;
	case DSM_MSG_DIFF_ACK:
	case DSM_MSG_NOTE:
		fl_buf_put_u64(b, m->writers);
		fl_buf_put_u64(b, m->dver);
		break;
	case DSM_MSG_ATOMIC:
		fl_buf_put_u8(b, m->op);
		fl_buf_put_u16(b, m->off);
		fl_buf_put_u64(b, m->a);
		fl_buf_put_u64(b, m->b);
		break;
	case DSM_MSG_ATOMIC_REPLY:
		fl_buf_put_u8(b, m->res);
		fl_buf_put_u64(b, m->old);
		break;
	case DSM_MSG_SYNC:
		fl_buf_put_u8(b, m->op);
		fl_buf_put_u16(b, m->off);
		fl_buf_put_u64(b, m->a);
		break;
	case DSM_MSG_SYNC_REPLY:
		fl_buf_put_u8(b, m->res);
		fl_buf_put_u8(b, m->flags);
		fl_buf_put_u64(b, m->old);
		break;
	case DSM_MSG_FREE:
		fl_buf_put_u16(b, m->off);
		break;
	case DSM_MSG_FREE_REPLY:
		fl_buf_put_u8(b, m->res);
		fl_buf_put_u64(b, m->first);
		fl_buf_put_u64(b, m->npages);
		break;
	default:
		break;
	}
}

/* ---- Diffs ---- */

/* Runs are exact: a byte that did not change is never sent, even inside
 * a gap that would be cheaper to send, because another node may have
 * written it (false sharing) and the home merges byte for byte. */
size_t dsm__diff_encode(const uint8_t *twin, const uint8_t *data,
			struct fl_buf *b)
{
	size_t count_at = b->len, changed = 0;
	uint32_t nruns = 0, i = 0;

	fl_buf_put_u16(b, 0); /* the count, patched below */
	while (i < DSM_PAGE_SIZE) {
		uint32_t start;
		if (twin[i] == data[i]) {
			i++;
			continue;
		}
		start = i;
		while (i < DSM_PAGE_SIZE && twin[i] != data[i])
			i++;
		fl_buf_put_u16(b, (uint16_t)start);
		fl_buf_put_u16(b, (uint16_t)(i - start));
		fl_buf_put(b, data + start, i - start);
		changed += i - start;
		nruns++;
	}
	if (!fl_buf_failed(b)) {
		b->data[count_at] = (uint8_t)nruns;
		b->data[count_at + 1] = (uint8_t)(nruns >> 8);
	}
	return changed;
}

void dsm__diff_apply(uint8_t *page, const uint8_t *runs, size_t len)
{
	struct fl_reader r;
	uint32_t nruns;

	fl_reader_init(&r, runs, len);
	nruns = fl_get_u16(&r);
	for (uint32_t i = 0; i < nruns && !r.failed; i++) {
		uint32_t off = fl_get_u16(&r);
		uint32_t n = fl_get_u16(&r);
		const uint8_t *p = fl_get_bytes(&r, n);
		if (p == NULL || off > DSM_PAGE_SIZE || n > DSM_PAGE_SIZE - off)
			return; /* the decoder refused this already */
		memcpy(page + off, p, n);
	}
}
