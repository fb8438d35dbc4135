/* The daemon's message payloads (dm_wire.h). */
#include "cluster/dm_wire.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* ---- SUBMIT ----
 *   u64 client, u64 seq, u8 flags (1 detach, 2 check, 4 placed, 8 spawns
 *   eager, 16 survive), u64 memory,
 *   u32 max_threads, u32 stack_words, u32 call_depth, u32 cpus, u64 from,
 *   u32 argc, argc x (u16 length, bytes), then the module to the end. */

void dm_submit_encode(const struct dm_submit *s, struct fl_buf *out)
{
	fl_buf_put_u64(out, s->client);
	fl_buf_put_u64(out, s->seq);
	fl_buf_put_u8(out, (uint8_t)((s->detach ? 1 : 0) | (s->check ? 2 : 0) |
				     (s->placed ? 4 : 0) | (s->eager ? 8 : 0) |
				     (s->survive ? 16 : 0)));
	fl_buf_put_u64(out, s->memory);
	fl_buf_put_u32(out, s->max_threads);
	fl_buf_put_u32(out, s->stack_words);
	fl_buf_put_u32(out, s->call_depth);
	fl_buf_put_u32(out, s->cpus);
	fl_buf_put_u64(out, s->from);
	fl_buf_put_u32(out, s->argc);
	for (uint32_t i = 0; i < s->argc; i++)
		fl_buf_put_str16(out, s->argv[i]);
	fl_buf_put(out, s->module, s->module_len);
}

void dm_submit_free(struct dm_submit *s)
{
	if (s->argv != NULL)
		for (uint32_t i = 0; i < s->argc; i++)
			free(s->argv[i]);
	free(s->argv);
	s->argv = NULL;
	s->argc = 0;
}

int dm_submit_decode(const uint8_t *p, size_t n, struct dm_submit *s,
		     struct fl_err *err)
{
	struct fl_reader r;
	uint8_t flags;
	uint32_t argc;

	memset(s, 0, sizeof *s);
	fl_reader_init(&r, p, n);
	s->client = fl_get_u64(&r);
	s->seq = fl_get_u64(&r);
	flags = fl_get_u8(&r);
	s->memory = fl_get_u64(&r);
	s->max_threads = fl_get_u32(&r);
	s->stack_words = fl_get_u32(&r);
	s->call_depth = fl_get_u32(&r);
	s->cpus = fl_get_u32(&r);
	s->from = fl_get_u64(&r);
	argc = fl_get_u32(&r);
	if (r.failed)
		return fl_err_set(err, FL_EFORMAT, "submission: cut short");
	if (flags & ~31u)
		return fl_err_set(err, FL_EFORMAT, "submission: unknown flags 0x%02x",
				  flags);
	s->detach = flags & 1;
	s->placed = (flags & 4) != 0;
	s->eager = (flags & 8) != 0;
	s->survive = (flags & 16) != 0;
	s->check = (flags & 2) != 0;
	if (s->client == 0 || s->seq == 0)
		return fl_err_set(err, FL_EFORMAT, "submission: no submission id");
	if (argc == 0 || argc > DM_ARGS_MAX)
		return fl_err_set(err, FL_EFORMAT,
				  "submission: %u arguments (1 to %u)", argc,
				  DM_ARGS_MAX);
	/* each argument takes at least its 2-byte length */
	if ((size_t)argc * 2 > fl_reader_left(&r))
		return fl_err_set(err, FL_EFORMAT, "submission: arguments cut short");
	s->argv = calloc((size_t)argc + 1, sizeof *s->argv);
	if (s->argv == NULL)
		return fl_err_set(err, FL_ENOMEM, "out of memory");
	for (uint32_t i = 0; i < argc; i++) {
		size_t len;
		const uint8_t *b = fl_get_str16(&r, &len);
		if (b == NULL || memchr(b, 0, len) != NULL) {
			dm_submit_free(s);
			return fl_err_set(err, FL_EFORMAT,
					  "submission: argument %u %s", i,
					  b == NULL ? "cut short" : "holds a NUL");
		}
		s->argv[i] = malloc(len + 1);
		if (s->argv[i] == NULL) {
			dm_submit_free(s);
			return fl_err_set(err, FL_ENOMEM, "out of memory");
		}
		memcpy(s->argv[i], b, len);
		s->argv[i][len] = 0;
		s->argc = i + 1;
	}
	s->module = p + r.off;
	s->module_len = fl_reader_left(&r);
	if (s->module_len == 0) {
		dm_submit_free(s);
		return fl_err_set(err, FL_EFORMAT, "submission: no module");
	}
	return 0;
}

/* ---- JOIN ----  u8 length, address, u32 cpu, u64 ram, u64 disk */

void dm_join_encode(const struct dm_join *j, struct fl_buf *out)
{
	fl_buf_put_str8(out, j->addr);
	fl_buf_put_u32(out, j->cpu);
	fl_buf_put_u64(out, j->ram);
	fl_buf_put_u64(out, j->disk);
}

static bool addr_chars(const uint8_t *a, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (a[i] <= ' ' || a[i] >= 127)
			return false;
	return true;
}

int dm_join_decode(const uint8_t *p, size_t n, struct dm_join *j,
		   struct fl_err *err)
{
	struct fl_reader r;
	const uint8_t *a;
	size_t alen;

	memset(j, 0, sizeof *j);
	fl_reader_init(&r, p, n);
	a = fl_get_str8(&r, &alen);
	j->cpu = fl_get_u32(&r);
	j->ram = fl_get_u64(&r);
	j->disk = fl_get_u64(&r);
	if (r.failed || fl_reader_left(&r) != 0)
		return fl_err_set(err, FL_EFORMAT, "join: %s",
				  r.failed ? "cut short" : "trailing bytes");
	if (alen == 0 || !addr_chars(a, alen))
		return fl_err_set(err, FL_EFORMAT, "join: a bad address");
	if (j->cpu == 0 || j->cpu > 1024 || j->ram == 0)
		return fl_err_set(err, FL_EFORMAT,
				  "join: an offer of no cores or no memory");
	memcpy(j->addr, a, alen);
	return 0;
}

/* ---- JOIN's reply ----
 *   u32 id, u32 n, n x (u32 id, key, u8 length, address) */

void dm_join_reply_start(struct fl_buf *out, uint32_t id, uint32_t n)
{
	fl_buf_put_u32(out, id);
	fl_buf_put_u32(out, n);
}

void dm_join_reply_member(struct fl_buf *out, const struct dm_join_member *m)
{
	fl_buf_put_u32(out, m->id);
	fl_buf_put(out, m->key, NET_KEY);
	fl_buf_put_str8(out, m->addr);
}

int dm_join_reply_decode(const uint8_t *p, size_t n, uint32_t *id,
			 void (*each)(void *arg, const struct dm_join_member *m),
			 void *arg, struct fl_err *err)
{
	struct fl_reader r;
	uint32_t count;

	fl_reader_init(&r, p, n);
	*id = fl_get_u32(&r);
	count = fl_get_u32(&r);
	if (r.failed || *id == 0 || count > CTL_MEMBERS_MAX)
		return fl_err_set(err, FL_EFORMAT, "join reply: a bad header");
	for (uint32_t i = 0; i < count; i++) {
		struct dm_join_member m;
		const uint8_t *key, *a;
		size_t alen;
		memset(&m, 0, sizeof m);
		m.id = fl_get_u32(&r);
		key = fl_get_bytes(&r, NET_KEY);
		a = fl_get_str8(&r, &alen);
		if (r.failed || m.id == 0 || alen == 0 || !addr_chars(a, alen))
			return fl_err_set(err, FL_EFORMAT,
					  "join reply: member %u is malformed", i);
		memcpy(m.key, key, NET_KEY);
		memcpy(m.addr, a, alen);
		if (each != NULL)
			each(arg, &m);
	}
	if (fl_reader_left(&r) != 0)
		return fl_err_set(err, FL_EFORMAT, "join reply: trailing bytes");
	return 0;
}

/* ---- PING ----
 *   u64 clock, u64 uptime, u32 cpu (thousandths of a core busy),
 *   u32 procs, u64 threads, u64 memory,
 *   u32 np, np x (u64 pid, u64 threads, u64 memory, u64 cpu, u64 age) */

void dm_ping_encode(uint64_t clock, const struct dm_load *l,
		    struct fl_buf *out)
{
	fl_buf_put_u64(out, clock);
	fl_buf_put_u64(out, l->uptime_ms);
	fl_buf_put_u32(out, l->cpu_milli);
	fl_buf_put_u32(out, l->procs);
	fl_buf_put_u64(out, l->threads);
	fl_buf_put_u64(out, l->memory);
	fl_buf_put_u32(out, l->np);
	for (uint32_t i = 0; i < l->np && i < DM_LOAD_PROCS; i++) {
		fl_buf_put_u64(out, l->p[i].pid);
		fl_buf_put_u64(out, l->p[i].threads);
		fl_buf_put_u64(out, l->p[i].memory);
		fl_buf_put_u64(out, l->p[i].cpu_ns);
		fl_buf_put_u64(out, l->p[i].age_ms);
	}
}

int dm_ping_decode(const uint8_t *p, size_t n, uint64_t *clock,
		   struct dm_load *l, struct fl_err *err)
{
	struct fl_reader r;

	memset(l, 0, sizeof *l);
	fl_reader_init(&r, p, n);
	*clock = fl_get_u64(&r);
	l->uptime_ms = fl_get_u64(&r);
	l->cpu_milli = fl_get_u32(&r);
	l->procs = fl_get_u32(&r);
	l->threads = fl_get_u64(&r);
	l->memory = fl_get_u64(&r);
	l->np = fl_get_u32(&r);
	if (r.failed || l->np > DM_LOAD_PROCS) {
		l->np = 0;
		return fl_err_set(err, FL_EFORMAT, "heartbeat: a bad header");
	}
	for (uint32_t i = 0; i < l->np; i++) {
		l->p[i].pid = fl_get_u64(&r);
		l->p[i].threads = fl_get_u64(&r);
		l->p[i].memory = fl_get_u64(&r);
		l->p[i].cpu_ns = fl_get_u64(&r);
		l->p[i].age_ms = fl_get_u64(&r);
	}
	if (r.failed || fl_reader_left(&r) != 0) {
		l->np = 0;
		return fl_err_set(err, FL_EFORMAT, "heartbeat: %s",
				  r.failed ? "cut short" : "trailing bytes");
	}
	return 0;
}

/* ---- ERROR ----  i32 code, the message to the end */

void dm_error_encode(int code, const char *msg, struct fl_buf *out)
{
	size_t n = strlen(msg);

	if (n > 4000)
		n = 4000;
	fl_buf_put_u32(out, (uint32_t)code);
	fl_buf_put(out, msg, n);
}

int dm_error_decode(const uint8_t *p, size_t n, int *code, char *msg,
		    size_t msg_size, struct fl_err *err)
{
	size_t k;

	if (n < 4 || msg_size == 0)
		return fl_err_set(err, FL_EFORMAT, "error: cut short");
	*code = (int)fl_load_u32(p);
	k = n - 4;
	if (k >= msg_size)
		k = msg_size - 1;
	/* keep it printable: a peer's bytes go to a terminal */
	for (size_t i = 0; i < k; i++) {
		uint8_t c = p[4 + i];
		msg[i] = c >= ' ' && c < 127 ? (char)c : '?';
	}
	msg[k] = 0;
	return 0;
}

/* ---- PART ---- */

void dm_part_encode(const struct dm_part_msg *m, struct fl_buf *out)
{
	fl_buf_put_u64(out, m->pid);
	fl_buf_put_u32(out, m->nparts);
	fl_buf_put_u32(out, m->origin);
	fl_buf_put_u32(out, m->ncpu);
	for (uint32_t i = 0; i < m->nparts && i < DM_PARTS_MAX; i++)
		fl_buf_put_u32(out, m->ids[i]);
	dm_submit_encode(&m->sub, out);
}

int dm_part_decode(const uint8_t *p, size_t n, struct dm_part_msg *m,
		   struct fl_err *err)
{
	struct fl_reader r;

	memset(m, 0, sizeof *m);
	fl_reader_init(&r, p, n);
	m->pid = fl_get_u64(&r);
	m->nparts = fl_get_u32(&r);
	m->origin = fl_get_u32(&r);
	m->ncpu = fl_get_u32(&r);
	if (r.failed)
		return fl_err_set(err, FL_EFORMAT, "PART: truncated");
	if (m->pid == 0 || m->nparts < 2 || m->nparts > DM_PARTS_MAX ||
	    m->origin >= m->nparts || m->ncpu == 0)
		return fl_err_set(err, FL_EFORMAT,
				  "PART: pid %" PRIu64 ", %" PRIu32
				  " machines, origin %" PRIu32 ", %" PRIu32
				  " cores",
				  m->pid, m->nparts, m->origin, m->ncpu);
	for (uint32_t i = 0; i < m->nparts; i++) {
		m->ids[i] = fl_get_u32(&r);
		if (r.failed)
			return fl_err_set(err, FL_EFORMAT, "PART: truncated");
		if (m->ids[i] == 0)
			return fl_err_set(err, FL_EFORMAT, "PART: machine id 0");
		for (uint32_t j = 0; j < i; j++)
			if (m->ids[j] == m->ids[i])
				return fl_err_set(err, FL_EFORMAT,
						  "PART: machine %" PRIu32
						  " twice",
						  m->ids[i]);
	}
	return dm_submit_decode(p + r.off, n - r.off, &m->sub, err);
}

/* ---- PART_STATS ---- */

void dm_pstats_encode(const struct dm_pstats *s, struct fl_buf *out)
{
	uint16_t n = 0;

#define X(f) n++;
	DM_PSTATS(X)
#undef X
	fl_buf_put_u16(out, n);
#define X(f) fl_buf_put_u64(out, s->f);
	DM_PSTATS(X)
#undef X
}

int dm_pstats_decode(const uint8_t *p, size_t n, struct dm_pstats *s,
		     struct fl_err *err)
{
	uint64_t v[sizeof *s / 8] = {0};
	struct fl_reader r;
	uint16_t count;

	memset(s, 0, sizeof *s);
	fl_reader_init(&r, p, n);
	count = fl_get_u16(&r);
	if (r.failed || count > DM_PSTATS_MAX_FIELDS)
		return fl_err_set(err, FL_EFORMAT, "PART_STATS: %s",
				  r.failed ? "truncated" : "too many fields");
	if (fl_reader_left(&r) != (size_t)count * 8)
		return fl_err_set(err, FL_EFORMAT,
				  "PART_STATS: %" PRIu16 " fields in %zu bytes",
				  count, fl_reader_left(&r));
	for (uint16_t i = 0; i < count; i++) {
		uint64_t x = fl_get_u64(&r);
		if (i < sizeof v / sizeof v[0])
			v[i] = x;
	}
	{
		size_t i = 0;
#define X(f) s->f = v[i++];
		DM_PSTATS(X)
#undef X
	}
	return 0;
}
