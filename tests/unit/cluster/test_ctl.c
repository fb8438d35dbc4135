/* Unit tests for src/cluster/ctl_fsm.c, the control plane's state machine:
 * every command round-trips through its entry encoding; the entry decoder
 * refuses every malformed field with FL_EFORMAT and a message; applying
 * CREATE and the commands after it gives the expected tables, and every
 * refusal leaves them as they were; a (client, seq) applies once; the
 * session table gives way at CTL_SESSIONS_MAX; a snapshot restores to the
 * same state, and every cut or modified snapshot is refused (the target
 * untouched) or restores a state that encodes back to exactly its bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cluster/ctl.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLIENT 0x1122334455667788ull
#define SEQ 0x99aabbccddeeff00ull

/* ---- Building commands ---- */

static struct ctl_member member(const char *addr, uint8_t key)
{
	struct ctl_member m;

	memset(&m, 0, sizeof m);
	snprintf(m.addr, sizeof m.addr, "%s", addr);
	memset(m.key, key, CTL_KEY);
	m.cpu = 4;
	m.ram = 1ull << 33;
	m.disk = 1ull << 40;
	m.incarnation = 1;
	m.state = CTL_M_ACTIVE;
	m.role = CTL_VOTER;
	return m;
}

static struct ctl_user user(const char *name, uint8_t key, bool admin)
{
	struct ctl_user u;

	memset(&u, 0, sizeof u);
	snprintf(u.name, sizeof u.name, "%s", name);
	memset(u.key, key, CTL_KEY);
	u.admin = admin;
	return u;
}

static struct ctl_command cmd(unsigned type, uint64_t client, uint64_t seq)
{
	struct ctl_command c;

	memset(&c, 0, sizeof c);
	c.type = (uint8_t)type;
	c.client = client;
	c.seq = seq;
	return c;
}

static struct ctl_command create_cmd(void)
{
	struct ctl_command c = cmd(CTL_CMD_CREATE, 0, 0);

	strcpy(c.u.create.vm, "lab-1");
	c.u.create.first = member("10.0.0.1:7000", 0x01);
	c.u.create.admin = user("root", 0xa0, false); /* made admin by CREATE */
	return c;
}

/* A command of @type with every field set to something recognisable, or
 * false if this test does not know the type (a new command needs one). */
static bool sample(unsigned type, struct ctl_command *c)
{
	*c = cmd(type, CLIENT, SEQ);
	switch (type) {
	case CTL_CMD_CREATE:
		*c = create_cmd();
		c->client = CLIENT;
		c->seq = SEQ;
		c->u.create.admin.admin = true;
		return true;
	case CTL_CMD_MEMBER_ADD:
		c->u.member = member("[::1]:65535", 0x5a);
		c->u.member.id = 77;
		c->u.member.state = CTL_M_LEAVING;
		c->u.member.role = CTL_STANDBY;
		c->u.member.incarnation = 0xfeedface;
		return true;
	case CTL_CMD_MEMBER_STATE:
		c->u.mstate.id = 5;
		c->u.mstate.incarnation = 0x80000001;
		c->u.mstate.state = CTL_M_LOST;
		c->u.mstate.role = CTL_STANDBY;
		c->u.mstate.at = 0x0123456789abcdefull;
		return true;
	case CTL_CMD_USER_ADD:
		c->u.user = user("alice.b_c-9", 0x33, false);
		return true;
	case CTL_CMD_USER_REMOVE:
		strcpy(c->u.name, "alice");
		return true;
	case CTL_CMD_SUBMIT:
		strcpy(c->u.submit.owner,
		       "a234567890123456789012345678901234567890123456789012345678901234");
		c->u.submit.machine = 0x01020304;
		return true;
	case CTL_CMD_PROC_STATE:
		c->u.pstate.pid = 0x0102030405060708ull;
		c->u.pstate.machine = 3;
		c->u.pstate.state = CTL_P_ENDED;
		c->u.pstate.status = -5;
		return true;
	case CTL_CMD_BARRIER:
		return true;
	}
	return false;
}

static void assert_same_member(const struct ctl_member *a,
			       const struct ctl_member *b)
{
	assert_int_equal(a->id, b->id);
	assert_string_equal(a->addr, b->addr);
	assert_memory_equal(a->key, b->key, CTL_KEY);
	assert_int_equal(a->cpu, b->cpu);
	assert_true(a->ram == b->ram && a->disk == b->disk);
	assert_int_equal(a->incarnation, b->incarnation);
	assert_int_equal(a->state, b->state);
	assert_int_equal(a->role, b->role);
}

static void assert_same_user(const struct ctl_user *a, const struct ctl_user *b)
{
	assert_string_equal(a->name, b->name);
	assert_memory_equal(a->key, b->key, CTL_KEY);
	assert_int_equal(a->admin, b->admin);
}

static void assert_same_command(const struct ctl_command *a,
				const struct ctl_command *b)
{
	assert_int_equal(a->type, b->type);
	assert_true(a->client == b->client && a->seq == b->seq);
	switch (a->type) {
	case CTL_CMD_CREATE:
		assert_string_equal(a->u.create.vm, b->u.create.vm);
		assert_same_member(&a->u.create.first, &b->u.create.first);
		assert_same_user(&a->u.create.admin, &b->u.create.admin);
		break;
	case CTL_CMD_MEMBER_ADD:
		assert_same_member(&a->u.member, &b->u.member);
		break;
	case CTL_CMD_MEMBER_STATE:
		assert_int_equal(a->u.mstate.id, b->u.mstate.id);
		assert_int_equal(a->u.mstate.incarnation, b->u.mstate.incarnation);
		assert_int_equal(a->u.mstate.state, b->u.mstate.state);
		assert_int_equal(a->u.mstate.role, b->u.mstate.role);
		break;
	case CTL_CMD_USER_ADD:
		assert_same_user(&a->u.user, &b->u.user);
		break;
	case CTL_CMD_USER_REMOVE:
		assert_string_equal(a->u.name, b->u.name);
		break;
	case CTL_CMD_SUBMIT:
		assert_string_equal(a->u.submit.owner, b->u.submit.owner);
		assert_int_equal(a->u.submit.machine, b->u.submit.machine);
		break;
	case CTL_CMD_PROC_STATE:
		assert_true(a->u.pstate.pid == b->u.pstate.pid);
		assert_int_equal(a->u.pstate.machine, b->u.pstate.machine);
		assert_int_equal(a->u.pstate.state, b->u.pstate.state);
		assert_int_equal(a->u.pstate.status, b->u.pstate.status);
		break;
	}
}

/* The entry of @c, in a heap block of exactly its size (ASan sees any
 * read past it). */
static uint8_t *encode(const struct ctl_command *c, size_t *n)
{
	struct fl_buf b;
	uint8_t *p, *q;

	fl_buf_init(&b);
	ctl_command_encode(c, &b);
	assert_false(fl_buf_failed(&b));
	p = fl_buf_take(&b, n);
	q = malloc(*n);
	assert_non_null(q);
	memcpy(q, p, *n);
	free(p);
	return q;
}

/* Apply @c through its encoding, as Raft would hand it over. */
static struct ctl_result apply(struct ctl_state *st, const struct ctl_command *c)
{
	size_t n;
	uint8_t *p = encode(c, &n);
	struct ctl_result r = ctl_apply_entry(st, p, n);

	free(p);
	return r;
}

static void create(struct ctl_state *st)
{
	struct ctl_command c = create_cmd();

	ctl_state_init(st);
	assert_int_equal(apply(st, &c).rc, 0);
}

static uint64_t add_member(struct ctl_state *st, const char *addr, uint8_t key)
{
	struct ctl_command c = cmd(CTL_CMD_MEMBER_ADD, 0, 0);
	struct ctl_result r;

	c.u.member = member(addr, key);
	r = apply(st, &c);
	assert_int_equal(r.rc, 0);
	return r.value;
}

static struct ctl_result mstate_at(struct ctl_state *st, uint32_t id,
				   uint32_t inc, uint8_t state, uint8_t role,
				   uint64_t at)
{
	struct ctl_command c = cmd(CTL_CMD_MEMBER_STATE, 0, 0);

	c.u.mstate.id = id;
	c.u.mstate.incarnation = inc;
	c.u.mstate.state = state;
	c.u.mstate.role = role;
	c.u.mstate.at = at;
	return apply(st, &c);
}

static struct ctl_result mstate(struct ctl_state *st, uint32_t id,
				uint32_t inc, uint8_t state, uint8_t role)
{
	return mstate_at(st, id, inc, state, role, 0);
}

/* A submission to start on @machine (0: none said). */
static struct ctl_result submit_on(struct ctl_state *st, const char *owner,
				   uint64_t client, uint64_t seq,
				   uint32_t machine)
{
	struct ctl_command c = cmd(CTL_CMD_SUBMIT, client, seq);

	strcpy(c.u.submit.owner, owner);
	c.u.submit.machine = machine;
	return apply(st, &c);
}

static struct ctl_result submit(struct ctl_state *st, const char *owner,
				uint64_t client, uint64_t seq)
{
	return submit_on(st, owner, client, seq, 0);
}

static struct ctl_result pstate(struct ctl_state *st, uint64_t pid,
				uint32_t machine, uint8_t state, int32_t status)
{
	struct ctl_command c = cmd(CTL_CMD_PROC_STATE, 0, 0);

	c.u.pstate.pid = pid;
	c.u.pstate.machine = machine;
	c.u.pstate.state = state;
	c.u.pstate.status = status;
	return apply(st, &c);
}

static struct ctl_result add_user(struct ctl_state *st, const char *name,
				  uint8_t key, bool admin)
{
	struct ctl_command c = cmd(CTL_CMD_USER_ADD, 0, 0);

	c.u.user = user(name, key, admin);
	return apply(st, &c);
}

static struct ctl_result remove_user(struct ctl_state *st, const char *name)
{
	struct ctl_command c = cmd(CTL_CMD_USER_REMOVE, 0, 0);

	strcpy(c.u.name, name);
	return apply(st, &c);
}

/* ---- Comparing states: by their snapshots ---- */

static struct fl_buf snap(const struct ctl_state *st)
{
	struct fl_buf b;

	fl_buf_init(&b);
	ctl_snapshot_encode(st, &b);
	assert_false(fl_buf_failed(&b));
	assert_int_equal(b.len % 8, 0);
	return b;
}

/* The snapshot of @st with its entry counter left out: a refused command
 * is still an entry applied. */
static struct fl_buf tables(struct ctl_state *st)
{
	uint64_t applied = st->applied;
	struct fl_buf b;

	st->applied = 0;
	b = snap(st);
	st->applied = applied;
	return b;
}

static void assert_same_buf(const struct fl_buf *a, const struct fl_buf *b)
{
	assert_int_equal(a->len, b->len);
	assert_memory_equal(a->data, b->data, a->len);
}

/* @r must be a refusal with @rc that left @st's tables as @before. */
static void assert_refused(struct ctl_state *st, struct ctl_result r, int rc,
			   const struct fl_buf *before)
{
	struct fl_buf now = tables(st);

	assert_int_equal(r.rc, rc);
	assert_false(r.replay);
	assert_same_buf(before, &now);
	fl_buf_close(&now);
}

/* ---- Encoding ---- */

static void test_round_trip_every_type(void **state)
{
	(void)state;
	for (unsigned type = 1; type < CTL_CMD__END; type++) {
		struct ctl_command c, d;
		struct fl_err err;
		struct fl_buf again;
		size_t n;
		uint8_t *p;

		assert_non_null(ctl_cmd_name(type));
		if (!sample(type, &c))
			fail_msg("no sample command of type %s", ctl_cmd_name(type));
		p = encode(&c, &n);
		assert_int_equal(n % 8, 0);
		assert_true(n >= 24);
		assert_int_equal(p[0], CTL_VERSION);
		assert_int_equal(p[1], type);
		assert_int_equal(p[8], 0x88); /* client, little-endian */
		assert_int_equal(p[23], 0x99); /* seq's top byte */
		assert_int_equal(ctl_command_decode(p, n, &d, &err), 0);
		assert_same_command(&c, &d);
		fl_buf_init(&again);
		ctl_command_encode(&d, &again);
		assert_int_equal(again.len, n);
		assert_memory_equal(again.data, p, n);
		fl_buf_close(&again);
		free(p);
	}
	assert_null(ctl_cmd_name(0));
	assert_null(ctl_cmd_name(CTL_CMD__END));
	assert_string_equal(ctl_cmd_name(CTL_CMD_PROC_STATE), "PROC_STATE");
}

/* An entry with a payload written by hand: header, @len payload bytes
 * (the declared length is @declared), zeros to a multiple of 8. */
static uint8_t *raw(unsigned type, const void *payload, size_t len,
		    uint32_t declared, size_t *n)
{
	struct fl_buf b;

	fl_buf_init(&b);
	fl_buf_put_u8(&b, CTL_VERSION);
	fl_buf_put_u8(&b, (uint8_t)type);
	fl_buf_put_u16(&b, 0);
	fl_buf_put_u32(&b, declared);
	fl_buf_put_u64(&b, 1);
	fl_buf_put_u64(&b, 2);
	fl_buf_put(&b, payload, len);
	while (b.len % 8)
		fl_buf_put_u8(&b, 0);
	assert_false(fl_buf_failed(&b));
	return fl_buf_take(&b, n);
}

static void expect_refused(const uint8_t *p, size_t n, const char *msg)
{
	struct ctl_command c;
	struct fl_err err;

	strcpy(err.msg, "(none)");
	assert_int_equal(ctl_command_decode(p, n, &c, &err), FL_EFORMAT);
	if (strstr(err.msg, msg) == NULL)
		fail_msg("message '%s' lacks '%s'", err.msg, msg);
}

/* A SUBMIT whose payload is a string of @len bytes declared @slen long. */
static uint8_t *raw_owner(const char *s, size_t len, uint16_t slen, size_t *n)
{
	uint8_t payload[256];

	payload[0] = (uint8_t)slen;
	payload[1] = (uint8_t)(slen >> 8);
	memcpy(payload + 2, s, len);
	return raw(CTL_CMD_SUBMIT, payload, 2 + len, (uint32_t)(2 + len), n);
}

static void test_decode_refuses_malformed(void **state)
{
	struct ctl_command c;
	size_t n;
	uint8_t *p;

	(void)state;
	/* Every cut of every type, in a block of exactly the cut's size. */
	for (unsigned type = 1; type < CTL_CMD__END; type++) {
		assert_true(sample(type, &c));
		p = encode(&c, &n);
		for (size_t k = 0; k < n; k++) {
			uint8_t *q = malloc(k ? k : 1);
			memcpy(q, p, k);
			expect_refused(q, k, "");
			free(q);
		}
		/* Eight more zeros: padding is at most 7 bytes. */
		uint8_t *longer = calloc(n + 8, 1);
		memcpy(longer, p, n);
		expect_refused(longer, n + 8, "entry: bad padding");
		free(longer);
		free(p);
	}

	assert_true(sample(CTL_CMD_SUBMIT, &c));
	strcpy(c.u.submit.owner, "root"); /* 10 payload bytes, 6 of padding */
	p = encode(&c, &n);
	assert_int_equal(n, 40);
	expect_refused(p, 39, "entry of 39 bytes");
	expect_refused(p, 25, "entry of 25 bytes");
	expect_refused(p, 16, "entry of 16 bytes");
	p[0] = CTL_VERSION + 1;
	expect_refused(p, n, "entry: version 2");
	p[0] = 0;
	expect_refused(p, n, "entry: version 0");
	p[0] = CTL_VERSION;
	p[1] = 0;
	expect_refused(p, n, "entry: unknown command 0");
	p[1] = CTL_CMD__END;
	expect_refused(p, n, "entry: unknown command");
	p[1] = 255;
	expect_refused(p, n, "entry: unknown command 255");
	p[1] = CTL_CMD_SUBMIT;
	for (int i = 2; i < 4; i++) { /* the reserved u16 */
		p[i] = 0x80;
		expect_refused(p, n, "entry: bad header");
		p[i] = 0;
	}
	for (size_t i = 34; i < 40; i++) { /* the padding */
		p[i] = 1;
		expect_refused(p, n, "entry: bad padding");
		p[i] = 0;
	}
	p[4] = 17; /* the payload length, past the entry */
	expect_refused(p, n, "entry: bad header");
	p[4] = 0xff;
	p[7] = 0xff;
	expect_refused(p, n, "entry: bad header");
	p[7] = 0;
	p[4] = 11; /* a padding byte counted in: a byte after the machine */
	expect_refused(p, n, "payload of 11 bytes does not fit");
	p[4] = 7; /* the machine cut off after a byte */
	expect_refused(p, n, "payload of 7 bytes does not fit");
	p[4] = 5; /* the string's last byte left out */
	expect_refused(p, n, "bad owner name");
	p[4] = 10;
	free(p);

	/* Strings: too long, cut off (no end inside the payload), not a
	 * name. The longest name passes. */
	char s[80];
	memset(s, 'a', sizeof s);
	p = raw_owner(s, 64, 64, &n);
	assert_int_equal(ctl_command_decode(p, n, &c, NULL), 0);
	assert_int_equal(strlen(c.u.submit.owner), 64);
	assert_int_equal(c.u.submit.machine, 0); /* an older entry: none */
	free(p);
	p = raw_owner(s, 65, 65, &n);
	expect_refused(p, n, "bad owner name");
	free(p);
	p = raw_owner(s, 4, 0xffff, &n);
	expect_refused(p, n, "bad owner name");
	free(p);
	p = raw_owner(s, 4, 5, &n);
	expect_refused(p, n, "bad owner name");
	free(p);
	p = raw_owner("", 0, 0, &n);
	expect_refused(p, n, "bad owner name");
	free(p);
	const char *bad[] = {"ro\0t", "Root", "ro t", "r/ot", "\xc3\xa9t\xc3"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		p = raw_owner(bad[i], 4, 4, &n);
		expect_refused(p, n, "bad owner name");
		free(p);
	}
	p = raw_owner("root", 4, 4, &n);
	assert_int_equal(ctl_command_decode(p, n, &c, NULL), 0);
	assert_string_equal(c.u.submit.owner, "root");
	free(p);

	/* A BARRIER carries nothing. */
	p = raw(CTL_CMD_BARRIER, "\0\0\0\0\0\0\0\0", 8, 8, &n);
	expect_refused(p, n, "BARRIER payload of 8 bytes does not fit");
	free(p);
}

/* Decode @c's entry after @poke changed byte @at (from the payload's
 * start) to @v: it must be refused with @msg. */
static void refuse_poked(const struct ctl_command *c, size_t at, uint8_t v,
			 const char *msg)
{
	size_t n;
	uint8_t *p = encode(c, &n);

	assert_true(24 + at < n);
	p[24 + at] = v;
	expect_refused(p, n, msg);
	free(p);
}

static void test_decode_refuses_bad_values(void **state)
{
	struct ctl_command c;
	size_t addr;

	(void)state;
	/* A member: u32 id, u16 length + address, key, u32 cpu, u64 ram,
	 * u64 disk, u32 incarnation, u8 state, u8 role. */
	assert_true(sample(CTL_CMD_MEMBER_ADD, &c));
	addr = strlen(c.u.member.addr);
	size_t cpu = 4 + 2 + addr + CTL_KEY, st = cpu + 4 + 8 + 8 + 4;
	refuse_poked(&c, cpu, 0, "bad member"); /* cpu 4 -> 0 */
	refuse_poked(&c, st, 0, "bad member");
	refuse_poked(&c, st, CTL_M_LOST + 1, "bad member");
	refuse_poked(&c, st + 1, 0, "bad member");
	refuse_poked(&c, st + 1, CTL_STANDBY + 1, "bad member");
	refuse_poked(&c, 4 + 2, ' ', "bad member address");
	refuse_poked(&c, 4 + 2, 0x7f, "bad member address");
	refuse_poked(&c, 4 + 2, 0, "bad member address");
	refuse_poked(&c, 4, 0, "bad member address"); /* empty */

	assert_true(sample(CTL_CMD_USER_ADD, &c));
	size_t admin = 2 + strlen(c.u.user.name) + CTL_KEY;
	refuse_poked(&c, admin, 2, "bad user");
	refuse_poked(&c, 2, 'A', "bad user name");

	assert_true(sample(CTL_CMD_CREATE, &c));
	refuse_poked(&c, 2, '_' + 1, "bad VM id");

	assert_true(sample(CTL_CMD_MEMBER_STATE, &c));
	refuse_poked(&c, 8, 0, "bad member state");
	refuse_poked(&c, 8, CTL_M_LOST + 1, "bad member state");
	refuse_poked(&c, 9, 0, "bad member state");

	assert_true(sample(CTL_CMD_PROC_STATE, &c));
	refuse_poked(&c, 12, CTL_P_SUBMITTED, "bad process state");
	refuse_poked(&c, 12, CTL_P_ENDED + 1, "bad process state");
	refuse_poked(&c, 12, 0, "bad process state");
}

/* ---- Applying ---- */

static void test_before_create(void **state)
{
	struct ctl_state st;
	struct ctl_command c;
	struct fl_buf before;

	(void)state;
	ctl_state_init(&st);
	before = tables(&st);
	for (unsigned type = 1; type < CTL_CMD__END; type++) {
		if (type == CTL_CMD_CREATE || type == CTL_CMD_BARRIER)
			continue;
		assert_true(sample(type, &c));
		c.client = 0;
		assert_refused(&st, apply(&st, &c), FL_ENOENT, &before);
	}
	c = cmd(CTL_CMD_BARRIER, 0, 0);
	assert_int_equal(apply(&st, &c).rc, 0);
	assert_int_equal(st.applied, CTL_CMD__END - 2);
	assert_string_equal(st.vm, "");
	/* A malformed entry is a refusal too, counted like any entry. */
	assert_int_equal(ctl_apply_entry(&st, (const uint8_t *)"x", 1).rc,
			 FL_EFORMAT);
	assert_int_equal(st.applied, CTL_CMD__END - 1);
	fl_buf_close(&before);
	ctl_state_close(&st);
}

static void test_create(void **state)
{
	struct ctl_state st;
	struct ctl_command c = create_cmd();
	struct fl_buf before;
	const struct ctl_member *m;
	const struct ctl_user *u;

	(void)state;
	create(&st);
	assert_string_equal(st.vm, "lab-1");
	assert_int_equal(st.nmembers, 1);
	m = ctl_member_find(&st, 1);
	assert_non_null(m);
	assert_string_equal(m->addr, "10.0.0.1:7000");
	assert_int_equal(m->state, CTL_M_ACTIVE);
	assert_int_equal(m->role, CTL_VOTER);
	assert_int_equal(st.next_member, 2);
	u = ctl_user_find(&st, "root");
	assert_non_null(u);
	assert_true(u->admin);
	assert_null(ctl_user_find(&st, "roo"));
	assert_null(ctl_member_find(&st, 2));
	/* A second CREATE, even of another VM, changes nothing. */
	before = tables(&st);
	assert_refused(&st, apply(&st, &c), FL_EEXIST, &before);
	strcpy(c.u.create.vm, "other");
	c.u.create.first = member("10.0.0.9:7000", 0x09);
	assert_refused(&st, apply(&st, &c), FL_EEXIST, &before);
	fl_buf_close(&before);
	ctl_state_close(&st);
}

static void test_members(void **state)
{
	struct ctl_state st;
	struct ctl_command c = cmd(CTL_CMD_MEMBER_ADD, 0, 0);
	struct fl_buf before;
	char addr[32];

	(void)state;
	create(&st);
	/* Ids increase; the first five are voters, the rest standbys. */
	for (uint32_t i = 2; i <= 8; i++) {
		snprintf(addr, sizeof addr, "10.0.0.%u:7000", i);
		assert_int_equal(add_member(&st, addr, (uint8_t)i), i);
		const struct ctl_member *m = ctl_member_find(&st, i);
		assert_non_null(m);
		assert_int_equal(m->role, i <= CTL_VOTERS_MAX ? CTL_VOTER : CTL_STANDBY);
		assert_int_equal(m->state, CTL_M_ACTIVE);
		assert_int_equal(m->incarnation, 1);
	}
	before = tables(&st);
	/* The same key, or the address of an active member: refused, and
	 * the result names the member it clashed with. */
	c.u.member = member("10.0.0.99:7000", 3);
	struct ctl_result r = apply(&st, &c);
	assert_refused(&st, r, FL_EEXIST, &before);
	assert_int_equal(r.value, 3);
	c.u.member = member("10.0.0.4:7000", 0x44);
	r = apply(&st, &c);
	assert_refused(&st, r, FL_EEXIST, &before);
	assert_int_equal(r.value, 4);
	/* Unknown member; an incarnation going back; a sixth voter. */
	assert_refused(&st, mstate(&st, 99, 5, CTL_M_ACTIVE, CTL_VOTER),
		       FL_ENOENT, &before);
	assert_refused(&st, mstate(&st, 3, 0, CTL_M_LEAVING, CTL_VOTER),
		       FL_EINVAL, &before);
	assert_refused(&st, mstate(&st, 6, 1, CTL_M_ACTIVE, CTL_VOTER),
		       FL_ENOSPC, &before);
	fl_buf_close(&before);

	/* Voter 2 is lost; standby 6 is promoted; voter 2 comes back as a
	 * new incarnation: it may not make a sixth voter. The loss and the
	 * return keep their times; a second LOST does not move the first. */
	assert_int_equal(mstate_at(&st, 2, 1, CTL_M_LOST, CTL_VOTER, 1000).rc, 0);
	assert_int_equal(mstate_at(&st, 2, 1, CTL_M_LOST, CTL_VOTER, 1500).rc, 0);
	assert_int_equal(ctl_member_find(&st, 2)->lost_at, 1000);
	assert_int_equal(ctl_member_find(&st, 2)->back_at, 0);
	assert_int_equal(mstate(&st, 6, 1, CTL_M_ACTIVE, CTL_VOTER).rc, 0);
	assert_int_equal(ctl_member_find(&st, 6)->role, CTL_VOTER);
	before = tables(&st);
	assert_refused(&st, mstate(&st, 2, 2, CTL_M_ACTIVE, CTL_VOTER),
		       FL_ENOSPC, &before);
	fl_buf_close(&before);
	struct ctl_result ok = mstate_at(&st, 2, 2, CTL_M_ACTIVE, CTL_STANDBY,
					 2000);
	assert_int_equal(ok.rc, 0);
	assert_int_equal(ok.value, 2);
	assert_int_equal(ctl_member_find(&st, 2)->lost_at, 1000);
	assert_int_equal(ctl_member_find(&st, 2)->back_at, 2000);
	assert_int_equal(ctl_member_find(&st, 2)->incarnation, 2);
	assert_int_equal(ctl_member_find(&st, 2)->role, CTL_STANDBY);
	/* A lost member's address can be taken by a new machine. */
	assert_int_equal(mstate(&st, 7, 1, CTL_M_LOST, CTL_STANDBY).rc, 0);
	assert_int_equal(add_member(&st, "10.0.0.7:7000", 0x77), 9);
	ctl_state_close(&st);
}

static void test_users(void **state)
{
	struct ctl_state st;
	struct fl_buf before;

	(void)state;
	create(&st);
	assert_int_equal(add_user(&st, "alice", 0x10, false).rc, 0);
	assert_int_equal(add_user(&st, "bob", 0x11, true).rc, 0);
	assert_int_equal(st.nusers, 3);
	before = tables(&st);
	assert_refused(&st, add_user(&st, "alice", 0x12, false), FL_EEXIST, &before);
	assert_refused(&st, add_user(&st, "carol", 0x10, false), FL_EEXIST, &before);
	assert_refused(&st, remove_user(&st, "carol"), FL_ENOENT, &before);
	fl_buf_close(&before);
	assert_int_equal(remove_user(&st, "alice").rc, 0);
	assert_null(ctl_user_find(&st, "alice"));
	assert_int_equal(remove_user(&st, "root").rc, 0);
	/* The last admin stays. */
	before = tables(&st);
	assert_refused(&st, remove_user(&st, "bob"), FL_EPERM, &before);
	fl_buf_close(&before);
	/* alice's name and key are free again. */
	assert_int_equal(add_user(&st, "alice", 0x10, false).rc, 0);
	ctl_state_close(&st);
}

static void test_processes(void **state)
{
	struct ctl_state st;
	struct fl_buf before;
	const struct ctl_proc *p;
	struct ctl_result r;

	(void)state;
	create(&st);
	add_member(&st, "10.0.0.2:7000", 2);
	add_member(&st, "10.0.0.3:7000", 3);
	assert_int_equal(mstate(&st, 3, 1, CTL_M_LEAVING, CTL_VOTER).rc, 0);
	/* pids increase from 1 */
	for (uint64_t i = 1; i <= 4; i++) {
		r = submit(&st, "root", 40, i);
		assert_int_equal(r.rc, 0);
		assert_true(r.value == i);
		p = ctl_proc_find(&st, i);
		assert_non_null(p);
		assert_int_equal(p->state, CTL_P_SUBMITTED);
		assert_string_equal(p->owner, "root");
		assert_true(p->sub_client == 40 && p->sub_seq == i);
		assert_int_equal(p->machine, 0);
	}
	assert_null(ctl_proc_find(&st, 0));
	assert_null(ctl_proc_find(&st, 5));
	before = tables(&st);
	assert_refused(&st, submit(&st, "nobody", 0, 0), FL_EPERM, &before);
	assert_refused(&st, pstate(&st, 5, 2, CTL_P_RUNNING, 0), FL_ENOENT, &before);
	assert_refused(&st, pstate(&st, 0, 2, CTL_P_RUNNING, 0), FL_ENOENT, &before);
	assert_refused(&st, pstate(&st, 1, 9, CTL_P_RUNNING, 0), FL_EINVAL, &before);
	/* a machine that is leaving takes no new process */
	assert_refused(&st, pstate(&st, 1, 3, CTL_P_RUNNING, 0), FL_EINVAL, &before);
	fl_buf_close(&before);

	r = pstate(&st, 1, 2, CTL_P_RUNNING, 0);
	assert_int_equal(r.rc, 0);
	assert_true(r.value == 1);
	p = ctl_proc_find(&st, 1);
	assert_int_equal(p->state, CTL_P_RUNNING);
	assert_int_equal(p->machine, 2);
	assert_int_equal(p->status, 0);
	before = tables(&st);
	assert_refused(&st, pstate(&st, 1, 2, CTL_P_RUNNING, 0), FL_EINVAL, &before);
	fl_buf_close(&before);
	assert_int_equal(pstate(&st, 1, 0, CTL_P_ENDED, -3).rc, 0);
	p = ctl_proc_find(&st, 1);
	assert_int_equal(p->state, CTL_P_ENDED);
	assert_int_equal(p->status, -3);
	assert_int_equal(p->machine, 2);
	/* SUBMITTED -> ENDED: it could not start */
	assert_int_equal(pstate(&st, 2, 0, CTL_P_ENDED, 75).rc, 0);
	assert_int_equal(ctl_proc_find(&st, 2)->machine, 0);
	/* Ended is final. */
	before = tables(&st);
	assert_refused(&st, pstate(&st, 1, 2, CTL_P_ENDED, 0), FL_EINVAL, &before);
	assert_refused(&st, pstate(&st, 2, 2, CTL_P_RUNNING, 0), FL_EINVAL, &before);
	fl_buf_close(&before);
	/* A removed owner's processes stay; a new pid is never reused. */
	assert_int_equal(add_user(&st, "alice", 0x10, false).rc, 0);
	assert_true(submit(&st, "alice", 0, 0).value == 5);
	assert_int_equal(remove_user(&st, "alice").rc, 0);
	assert_non_null(ctl_proc_find(&st, 5));
	assert_int_equal(submit(&st, "alice", 0, 0).rc, FL_EPERM);
	assert_true(submit(&st, "root", 0, 0).value == 6);
	ctl_state_close(&st);
}

/* A machine declared lost ends what ran there, in the same entry: no
 * process stays RUNNING on an incarnation that is gone, even when the
 * machine is back (ACTIVE again) by the time anyone asks. */
static void test_lost_machine_ends_its_processes(void **state)
{
	struct ctl_state st;
	const struct ctl_proc *p;

	(void)state;
	create(&st);
	add_member(&st, "10.0.0.2:7000", 2);
	for (uint64_t i = 1; i <= 4; i++)
		assert_int_equal(submit(&st, "root", 40, i).rc, 0);
	assert_int_equal(pstate(&st, 1, 2, CTL_P_RUNNING, 0).rc, 0);
	assert_int_equal(pstate(&st, 2, 1, CTL_P_RUNNING, 0).rc, 0);
	assert_int_equal(pstate(&st, 3, 2, CTL_P_RUNNING, 0).rc, 0);
	assert_int_equal(pstate(&st, 3, 0, CTL_P_ENDED, 0).rc, 0);
	/* to start on machine 2, which may have started it: RUNNING is
	 * not recorded yet */
	assert_int_equal(submit_on(&st, "root", 40, 5, 2).rc, 0);
	/* no machine not serving starts a process */
	assert_int_equal(submit_on(&st, "root", 40, 6, 9).rc, FL_EINVAL);
	assert_int_equal(mstate_at(&st, 2, 1, CTL_M_LOST, CTL_VOTER, 7).rc, 0);
	p = ctl_proc_find(&st, 1); /* ran there: ended, lost */
	assert_int_equal(p->state, CTL_P_ENDED);
	assert_int_equal(p->status, CTL_LOST_STATUS);
	assert_int_equal(p->lost, 1);
	assert_int_equal(p->machine, 2);
	p = ctl_proc_find(&st, 2); /* elsewhere: untouched */
	assert_int_equal(p->state, CTL_P_RUNNING);
	assert_int_equal(p->lost, 0);
	p = ctl_proc_find(&st, 3); /* ended before: as it ended */
	assert_int_equal(p->status, 0);
	assert_int_equal(p->lost, 0);
	p = ctl_proc_find(&st, 4); /* not started, no machine said: waits */
	assert_int_equal(p->state, CTL_P_SUBMITTED);
	p = ctl_proc_find(&st, 5); /* to start there: ended, lost */
	assert_int_equal(p->state, CTL_P_ENDED);
	assert_int_equal(p->status, CTL_LOST_STATUS);
	assert_int_equal(p->lost, 1);
	/* nor on a lost one */
	assert_int_equal(submit_on(&st, "root", 40, 7, 2).rc, FL_EINVAL);
	/* back as a new incarnation: what was lost stays lost, and the
	 * snapshot keeps it so */
	assert_int_equal(mstate_at(&st, 2, 2, CTL_M_ACTIVE, CTL_STANDBY, 8).rc,
			 0);
	assert_int_equal(ctl_proc_find(&st, 1)->lost, 1);
	{
		struct fl_buf b;
		struct ctl_state back;
		struct fl_err err;
		fl_buf_init(&b);
		ctl_snapshot_encode(&st, &b);
		ctl_state_init(&back);
		assert_int_equal(ctl_snapshot_restore(&back, b.data, b.len, &err),
				 0);
		assert_int_equal(ctl_proc_find(&back, 1)->lost, 1);
		assert_int_equal(ctl_proc_find(&back, 2)->lost, 0);
		ctl_state_close(&back);
		fl_buf_close(&b);
	}
	ctl_state_close(&st);
}

/* ---- Sessions ---- */

static void test_dedupe(void **state)
{
	struct ctl_state st;
	struct fl_buf before, now;
	struct ctl_result r;

	(void)state;
	create(&st);
	r = submit(&st, "root", 9, 1);
	assert_int_equal(r.rc, 0);
	assert_true(r.value == 1);
	assert_false(r.replay);
	/* Again: the first result, and nothing else changes. */
	before = tables(&st);
	r = submit(&st, "root", 9, 1);
	assert_int_equal(r.rc, 0);
	assert_true(r.value == 1);
	assert_true(r.replay);
	now = tables(&st);
	assert_same_buf(&before, &now);
	fl_buf_close(&now);
	fl_buf_close(&before);
	assert_int_equal(st.nprocs, 1);
	/* Another client's seq 1 is its own. */
	r = submit(&st, "root", 10, 1);
	assert_true(r.value == 2 && !r.replay);
	r = submit(&st, "root", 9, 2);
	assert_true(r.value == 3 && !r.replay);
	/* An older seq than the last: refused as out of range, a replay. */
	before = tables(&st);
	r = submit(&st, "root", 9, 1);
	assert_int_equal(r.rc, FL_ERANGE);
	assert_true(r.replay);
	now = tables(&st);
	assert_same_buf(&before, &now);
	fl_buf_close(&now);
	/* seq 0 is not a sequence number: refused, no session made. */
	r = submit(&st, "root", 11, 0);
	assert_int_equal(r.rc, FL_EINVAL);
	assert_false(r.replay);
	now = tables(&st);
	assert_same_buf(&before, &now);
	fl_buf_close(&now);
	fl_buf_close(&before);
	/* A refusal is a result like another: a replay returns it. */
	r = submit(&st, "nobody", 9, 3);
	assert_int_equal(r.rc, FL_EPERM);
	r = submit(&st, "nobody", 9, 3);
	assert_int_equal(r.rc, FL_EPERM);
	assert_true(r.replay);
	/* Seqs may skip: only order matters. */
	r = submit(&st, "root", 9, 100);
	assert_true(r.value == 4 && !r.replay);
	/* A replay is still an entry applied. */
	uint64_t applied = st.applied;
	submit(&st, "root", 9, 100);
	assert_true(st.applied == applied + 1);
	/* Client 0 has no session: each of its commands applies. */
	assert_true(submit(&st, "root", 0, 5).value == 5);
	assert_true(submit(&st, "root", 0, 5).value == 6);
	ctl_state_close(&st);
}

static void test_session_eviction(void **state)
{
	struct ctl_state st;
	struct ctl_command b = cmd(CTL_CMD_BARRIER, 0, 1);
	struct ctl_result r;

	(void)state;
	create(&st);
	/* Client 1 submits; clients 2..MAX fill the table. */
	assert_true(submit(&st, "root", 1, 1).value == 1);
	assert_true(submit(&st, "root", 2, 1).value == 2);
	for (uint64_t client = 3; client <= CTL_SESSIONS_MAX; client++) {
		b.client = client;
		assert_int_equal(apply(&st, &b).rc, 0);
	}
	assert_int_equal(st.nsessions, CTL_SESSIONS_MAX);
	/* Client 1 comes back (a replay does not refresh its session), then
	 * client 2 is used: client 1 is the least recently used. */
	assert_true(submit(&st, "root", 1, 1).replay);
	assert_true(submit(&st, "root", 2, 2).value == 3);
	b.client = CTL_SESSIONS_MAX + 1;
	assert_int_equal(apply(&st, &b).rc, 0);
	assert_int_equal(st.nsessions, CTL_SESSIONS_MAX);
	/* Client 1's session went: its retry applies again (documented). */
	r = submit(&st, "root", 1, 1);
	assert_false(r.replay);
	assert_true(r.value == 4);
	/* ... and that made client 3 (the next least recent) give way. */
	b.client = 3;
	assert_false(apply(&st, &b).replay);
	/* Client 2 and the newest kept theirs. */
	assert_true(submit(&st, "root", 2, 2).replay);
	b.client = CTL_SESSIONS_MAX + 1;
	assert_true(apply(&st, &b).replay);
	assert_int_equal(st.nsessions, CTL_SESSIONS_MAX);
	ctl_state_close(&st);
}

/* ---- Snapshots ---- */

/* A state with something in every table and every state. */
static void rich(struct ctl_state *st)
{
	char addr[32];

	create(st);
	for (uint32_t i = 2; i <= 7; i++) {
		snprintf(addr, sizeof addr, "10.0.0.%u:7000", i);
		add_member(st, addr, (uint8_t)i);
	}
	assert_int_equal(mstate(st, 3, 2, CTL_M_LEAVING, CTL_VOTER).rc, 0);
	assert_int_equal(mstate(st, 4, 1, CTL_M_LOST, CTL_VOTER).rc, 0);
	assert_int_equal(mstate(st, 5, 1, CTL_M_LEFT, CTL_VOTER).rc, 0);
	assert_int_equal(add_user(st, "alice", 0x10, false).rc, 0);
	assert_int_equal(add_user(st, "bob", 0x11, true).rc, 0);
	assert_true(submit(st, "alice", 7, 1).value == 1);
	assert_true(submit(st, "bob", 8, 1).value == 2);
	/* pid 3: submitted to start on machine 2, not started yet */
	assert_true(submit_on(st, "bob", 8, 2, 2).value == 3);
	assert_int_equal(pstate(st, 1, 2, CTL_P_RUNNING, 0).rc, 0);
	assert_int_equal(pstate(st, 2, 2, CTL_P_RUNNING, 0).rc, 0);
	assert_int_equal(pstate(st, 2, 0, CTL_P_ENDED, -1).rc, 0);
	assert_int_equal(submit(st, "nobody", 9, 1).rc, FL_EPERM);
}

static void test_snapshot_round_trip(void **state)
{
	struct ctl_state a, b, c;
	struct fl_buf sa, sb, sc;
	struct fl_err err;

	(void)state;
	rich(&a);
	sa = snap(&a);
	ctl_state_init(&b);
	assert_int_equal(ctl_snapshot_restore(&b, sa.data, sa.len, &err), 0);
	sb = snap(&b);
	assert_same_buf(&sa, &sb);
	assert_true(b.applied == a.applied);
	assert_true(b.next_pid == a.next_pid);
	assert_int_equal(b.next_member, a.next_member);
	/* Onto a state that has tables of its own: replaced. */
	create(&c);
	add_member(&c, "10.9.9.9:1", 0x99);
	assert_int_equal(ctl_snapshot_restore(&c, sa.data, sa.len, &err), 0);
	sc = snap(&c);
	assert_same_buf(&sa, &sc);
	fl_buf_close(&sb);
	fl_buf_close(&sc);
	/* The restored states go on as the first: same results, same state,
	 * sessions included. */
	struct ctl_result ra = submit(&a, "bob", 8, 2), rb = submit(&b, "bob", 8, 2);
	assert_true(ra.replay && rb.replay && ra.value == 3 && rb.value == 3);
	ra = submit(&a, "alice", 7, 2);
	rb = submit(&b, "alice", 7, 2);
	assert_true(ra.rc == 0 && rb.rc == 0 && ra.value == rb.value);
	assert_int_equal(add_member(&a, "10.0.0.8:7000", 8),
			 add_member(&b, "10.0.0.8:7000", 8));
	fl_buf_close(&sa);
	sa = snap(&a);
	sb = snap(&b);
	assert_same_buf(&sa, &sb);
	fl_buf_close(&sa);
	fl_buf_close(&sb);
	/* An empty state round-trips too. */
	ctl_state_close(&c);
	ctl_state_init(&c);
	sc = snap(&c);
	assert_int_equal(ctl_snapshot_restore(&b, sc.data, sc.len, &err), 0);
	assert_string_equal(b.vm, "");
	assert_int_equal(b.nmembers, 0);
	fl_buf_close(&sc);
	ctl_state_close(&a);
	ctl_state_close(&b);
	ctl_state_close(&c);
}

/* Many members with the shortest addresses: the snapshot still restores
 * (the decoder's bound on the member count must not overestimate a
 * member's size). */
static void test_snapshot_short_addresses(void **state)
{
	struct ctl_state a, b;
	struct fl_buf sa, sb;
	struct fl_err err;
	char addr[2] = {0, 0};

	(void)state;
	create(&a);
	for (char ch = '!'; ch <= '~'; ch++) {
		addr[0] = ch;
		add_member(&a, addr, (uint8_t)ch);
	}
	sa = snap(&a);
	ctl_state_init(&b);
	if (ctl_snapshot_restore(&b, sa.data, sa.len, &err) != 0)
		fail_msg("restore: %s", err.msg);
	sb = snap(&b);
	assert_same_buf(&sa, &sb);
	fl_buf_close(&sa);
	fl_buf_close(&sb);
	ctl_state_close(&a);
	ctl_state_close(&b);
}

/* Restore @p into @st (whose snapshot is @orig): refused with FL_EFORMAT
 * and @st untouched, or accepted and @st encodes back to exactly @p.
 * Returns whether it was accepted. */
static bool restore_or_refuse(struct ctl_state *st, const struct fl_buf *orig,
			      const uint8_t *p, size_t n)
{
	struct fl_err err;
	struct fl_buf now;
	int rc;

	err.msg[0] = 0;
	rc = ctl_snapshot_restore(st, p, n, &err);
	now = snap(st);
	if (rc != 0) {
		assert_int_equal(rc, FL_EFORMAT);
		assert_true(err.msg[0] != 0);
		assert_same_buf(orig, &now);
	} else {
		assert_int_equal(now.len, n);
		assert_memory_equal(now.data, p, n);
	}
	fl_buf_close(&now);
	return rc == 0;
}

static void test_snapshot_hostile(void **state)
{
	struct ctl_state src, st;
	struct fl_buf s, orig;
	size_t accepted = 0;
	uint8_t *q;

	(void)state;
	rich(&src);
	s = snap(&src);
	create(&st); /* the target: another state, to be left untouched */
	add_member(&st, "10.9.9.9:1", 0x99);
	orig = snap(&st);
	/* Every cut, in a block of exactly its size: refused. */
	for (size_t k = 0; k < s.len; k++) {
		q = malloc(k ? k : 1);
		memcpy(q, s.data, k);
		assert_false(restore_or_refuse(&st, &orig, q, k));
		free(q);
	}
	/* Eight more zero bytes: refused. */
	q = calloc(s.len + 8, 1);
	memcpy(q, s.data, s.len);
	assert_false(restore_or_refuse(&st, &orig, q, s.len + 8));
	free(q);
	/* Every value of every byte. */
	q = malloc(s.len);
	memcpy(q, s.data, s.len);
	for (size_t i = 0; i < s.len; i++) {
		for (unsigned x = 1; x < 256; x++) {
			q[i] = (uint8_t)(s.data[i] ^ x);
			if (restore_or_refuse(&st, &orig, q, s.len)) {
				accepted++;
				/* back to the target's own state */
				assert_int_equal(ctl_snapshot_restore(
							 &st, orig.data, orig.len, NULL),
						 0);
			}
		}
		q[i] = s.data[i];
	}
	/* Counters, keys, cpu and such take any value: some are accepted. */
	assert_true(accepted > 0);
	print_message("snapshot of %zu bytes: %zu of %zu one-byte changes "
		      "accepted\n",
		      s.len, accepted, s.len * 255);
	free(q);
	fl_buf_close(&s);
	fl_buf_close(&orig);
	ctl_state_close(&src);
	ctl_state_close(&st);
}

/* Snapshots that decode but break an invariant apply keeps. */
static void test_snapshot_invariants(void **state)
{
	struct ctl_state a, st;
	struct fl_buf s, orig;

	(void)state;
	ctl_state_init(&st);
	orig = snap(&st);

	/* Two members with one key. */
	create(&a);
	add_member(&a, "10.0.0.2:7000", 2);
	memset(a.members[1].key, 0x01, CTL_KEY);
	s = snap(&a);
	assert_false(restore_or_refuse(&st, &orig, s.data, s.len));
	fl_buf_close(&s);
	ctl_state_close(&a);

	/* Tables before CREATE. */
	create(&a);
	a.vm[0] = 0;
	s = snap(&a);
	assert_false(restore_or_refuse(&st, &orig, s.data, s.len));
	fl_buf_close(&s);
	ctl_state_close(&a);

	/* Six voters. */
	create(&a);
	char addr[32];
	for (uint32_t i = 2; i <= 6; i++) {
		snprintf(addr, sizeof addr, "10.0.0.%u:7000", i);
		add_member(&a, addr, (uint8_t)i);
	}
	a.members[5].role = CTL_VOTER;
	s = snap(&a);
	assert_false(restore_or_refuse(&st, &orig, s.data, s.len));
	fl_buf_close(&s);
	a.members[5].role = CTL_STANDBY;
	s = snap(&a);
	assert_true(restore_or_refuse(&st, &orig, s.data, s.len));
	assert_int_equal(ctl_snapshot_restore(&st, orig.data, orig.len, NULL), 0);
	fl_buf_close(&s);
	ctl_state_close(&a);

	/* One change to a rich state each, made by hand: refused. */
	for (int k = 0;; k++) {
		rich(&a);
		switch (k) {
		case 0: /* processes out of order */
			a.procs[0].pid = 2;
			a.procs[1].pid = 1;
			break;
		case 1: /* one pid twice */
			a.procs[1].pid = 1;
			break;
		case 2: /* a pid not given yet */
			a.procs[2].pid = a.next_pid;
			break;
		case 3: /* a status before it started */
			a.procs[2].status = 1;
			break;
		case 4: /* running nowhere */
			a.procs[0].machine = 0;
			break;
		case 5: /* a status before it ended */
			a.procs[0].status = 1;
			break;
		case 6: /* a machine that is no member */
			a.procs[1].machine = a.next_member;
			break;
		case 7: /* no admin */
			for (size_t i = 0; i < a.nusers; i++)
				a.users[i].admin = false;
			break;
		case 8: /* two users, one name */
			strcpy(a.users[1].name, a.users[0].name);
			break;
		case 9: /* two users, one key */
			memcpy(a.users[1].key, a.users[0].key, CTL_KEY);
			break;
		case 10: /* members out of order */
			a.members[1].id = 3;
			a.members[2].id = 2;
			break;
		case 11: /* a member id not given yet */
			a.members[a.nmembers - 1].id = a.next_member;
			break;
		case 12: /* two sessions of one client */
			a.sessions[1].client = a.sessions[0].client;
			break;
		case 13: /* a session with seq 0 */
			a.sessions[0].seq = 0;
			break;
		case 14: /* a session of client 0 */
			a.sessions[0].client = 0;
			break;
		case 15: /* a session used after the last entry */
			a.sessions[0].last = a.applied + 1;
			break;
		case 16: /* counters at 0 */
			a.next_pid = 0;
			break;
		default:
			ctl_state_close(&a);
			goto done;
		}
		s = snap(&a);
		if (restore_or_refuse(&st, &orig, s.data, s.len))
			fail_msg("change %d was accepted", k);
		fl_buf_close(&s);
		ctl_state_close(&a);
	}
done:
	fl_buf_close(&orig);
	ctl_state_close(&st);
}

/* ---- Fuzz seeds ---- */

/* The committed seeds (tests/fuzz/seeds-ctl, relative to the repository,
 * where make runs the tests), written by tests/fuzz/make_ctl_seeds.py from
 * the documented layout: each entry decodes and encodes back to its bytes,
 * and applied in order they all succeed; each snapshot restores and
 * encodes back to its bytes. */
static void test_fuzz_seeds_are_valid(void **state)
{
	static const char *const order[] = {
	    "entry-create",    "entry-member-add", "entry-member-state",
	    "entry-user-add",  "entry-user-remove", "entry-submit",
	    "entry-proc-state", "entry-barrier",
	};
	struct ctl_state st, snapst;
	struct fl_err err;
	char path[512];
	size_t nsnap = 0, nentries = 0;
	DIR *dir;
	struct dirent *e;

	(void)state;
	ctl_state_init(&st);
	for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
		struct ctl_command c;
		uint8_t *p;
		size_t n;
		snprintf(path, sizeof path, "tests/fuzz/seeds-ctl/%s", order[i]);
		if (fl_read_file(path, &p, &n, &err) != 0)
			fail_msg("%s", err.msg);
		if (ctl_command_decode(p, n, &c, &err) != 0)
			fail_msg("%s: %s", path, err.msg);
		uint8_t *again = encode(&c, &n);
		assert_memory_equal(again, p, n);
		free(again);
		struct ctl_result r = ctl_apply_entry(&st, p, n);
		if (r.rc != 0)
			fail_msg("%s: applied: %s", path, fl_strerror(r.rc));
		free(p);
	}
	ctl_state_close(&st);
	dir = opendir("tests/fuzz/seeds-ctl");
	assert_non_null(dir);
	while ((e = readdir(dir)) != NULL) {
		uint8_t *p;
		size_t n;
		if (e->d_name[0] == '.')
			continue;
		nentries += strncmp(e->d_name, "entry-", 6) == 0;
		if (strncmp(e->d_name, "snap-", 5) != 0)
			continue;
		snprintf(path, sizeof path, "tests/fuzz/seeds-ctl/%s", e->d_name);
		if (fl_read_file(path, &p, &n, &err) != 0)
			fail_msg("%s", err.msg);
		ctl_state_init(&snapst);
		if (ctl_snapshot_restore(&snapst, p, n, &err) != 0)
			fail_msg("%s: %s", path, err.msg);
		struct fl_buf b = snap(&snapst);
		assert_int_equal(b.len, n);
		assert_memory_equal(b.data, p, n);
		fl_buf_close(&b);
		ctl_state_close(&snapst);
		free(p);
		nsnap++;
	}
	closedir(dir);
	assert_int_equal(nentries, sizeof order / sizeof *order);
	assert_int_equal(nentries, CTL_CMD__END - 1); /* one of each type */
	assert_true(nsnap >= 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip_every_type),
	    cmocka_unit_test(test_decode_refuses_malformed),
	    cmocka_unit_test(test_decode_refuses_bad_values),
	    cmocka_unit_test(test_before_create),
	    cmocka_unit_test(test_create),
	    cmocka_unit_test(test_members),
	    cmocka_unit_test(test_users),
	    cmocka_unit_test(test_processes),
	    cmocka_unit_test(test_lost_machine_ends_its_processes),
	    cmocka_unit_test(test_dedupe),
	    cmocka_unit_test(test_session_eviction),
	    cmocka_unit_test(test_snapshot_round_trip),
	    cmocka_unit_test(test_snapshot_short_addresses),
	    cmocka_unit_test(test_snapshot_hostile),
	    cmocka_unit_test(test_snapshot_invariants),
	    cmocka_unit_test(test_fuzz_seeds_are_valid),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
