/* The control plane's state machine (ctl.h): commands to bytes and back,
 * applying them, snapshots.
 *
 * Entry layout, little-endian, padded with zeros to a multiple of 8:
 *   u8 version, u8 type, u16 0, u32 payload length, u64 client, u64 seq,
 *   payload (per type, below), zero padding.
 * Strings are u16 length + bytes, no NUL (fl_buf_put_str16). A member is u32 id, addr,
 * 32-byte key, u32 cpu, u64 ram, u64 disk, u32 incarnation, u8 state,
 * u8 role, u64 lost_at, u64 back_at; a user is name, 32-byte key, u8
 * admin. MEMBER_STATE: u32 id, u32 incarnation, u8 state, u8 role, u64
 * at (lost_at when it makes the member LOST, back_at when it makes a
 * LOST one ACTIVE). SUBMIT: owner, u32 machine (where it starts; an
 * older entry ends after the owner: 0, none said). A MEMBER_STATE that
 * makes a member LOST ends every process running there or submitted to
 * start there: ENDED, CTL_LOST_STATUS, lost.
 *
 * Applying: every refusal is a result (rc), never a divergence, so every
 * machine's state stays the same. Sessions: a client's last (seq, result);
 * a command of an older or equal seq is not applied again. Client 0 has
 * no session; any other client numbers its commands from 1.
 *
 * Snapshot layout: "FLKS", u16 version, vm, u64 next_pid, u32 next_member,
 * u64 applied, then counted arrays of members, users, processes (u64 pid,
 * owner, u64 client, u64 seq, u32 machine, u8 state, i32 status, u8
 * lost) and
 * sessions (u64 client, u64 seq, i32 rc, u64 value, u64 last); padded to
 * 8. The
 * decoder checks counts against the bytes left and every invariant apply
 * keeps (ids and pids increasing and below the next ones, unique names,
 * keys and clients, at most CTL_VOTERS_MAX voters, enums in range, no
 * tables before CREATE) before it replaces anything. Threads: the
 * caller's. */
#include "cluster/ctl.h"

#include <stdlib.h>
#include <string.h>

#define HEADER 24
#define SNAP_MAGIC "FLKS"

static const char *const names[CTL_CMD__END] = {
#define CTL__NAME(name, code, doc) [code] = #name,
	CTL_COMMANDS(CTL__NAME)
#undef CTL__NAME
};

const char *ctl_cmd_name(unsigned type)
{
	return type < CTL_CMD__END ? names[type] : NULL;
}

void ctl_state_init(struct ctl_state *st)
{
	memset(st, 0, sizeof *st);
	st->next_pid = 1;
	st->next_member = 1;
}

void ctl_state_close(struct ctl_state *st)
{
	free(st->members);
	free(st->users);
	free(st->procs);
	free(st->sessions);
	memset(st, 0, sizeof *st);
}

/* ---- Encoding ---- */

static void put_member(struct fl_buf *b, const struct ctl_member *m)
{
	fl_buf_put_u32(b, m->id);
	fl_buf_put_str16(b, m->addr);
	fl_buf_put(b, m->key, CTL_KEY);
	fl_buf_put_u32(b, m->cpu);
	fl_buf_put_u64(b, m->ram);
	fl_buf_put_u64(b, m->disk);
	fl_buf_put_u32(b, m->incarnation);
	fl_buf_put_u8(b, m->state);
	fl_buf_put_u8(b, m->role);
	fl_buf_put_u64(b, m->lost_at);
	fl_buf_put_u64(b, m->back_at);
}

static void put_user(struct fl_buf *b, const struct ctl_user *u)
{
	fl_buf_put_str16(b, u->name);
	fl_buf_put(b, u->key, CTL_KEY);
	fl_buf_put_u8(b, u->admin);
}

/* (A failed buffer takes no more bytes: stop, not loop.) */
static void pad8(struct fl_buf *b, size_t start)
{
	while (!fl_buf_failed(b) && (b->len - start) % 8 != 0)
		fl_buf_put_u8(b, 0);
}

void ctl_command_encode(const struct ctl_command *c, struct fl_buf *out)
{
	size_t start = out->len, body;

	fl_buf_put_u8(out, CTL_VERSION);
	fl_buf_put_u8(out, c->type);
	fl_buf_put_u16(out, 0);
	fl_buf_put_u32(out, 0); /* the payload length, below */
	fl_buf_put_u64(out, c->client);
	fl_buf_put_u64(out, c->seq);
	body = out->len;
	switch (c->type) {
	case CTL_CMD_CREATE:
		fl_buf_put_str16(out, c->u.create.vm);
		put_member(out, &c->u.create.first);
		put_user(out, &c->u.create.admin);
		break;
	case CTL_CMD_MEMBER_ADD:
		put_member(out, &c->u.member);
		break;
	case CTL_CMD_MEMBER_STATE:
		fl_buf_put_u32(out, c->u.mstate.id);
		fl_buf_put_u32(out, c->u.mstate.incarnation);
		fl_buf_put_u8(out, c->u.mstate.state);
		fl_buf_put_u8(out, c->u.mstate.role);
		fl_buf_put_u64(out, c->u.mstate.at);
		break;
	case CTL_CMD_USER_ADD:
		put_user(out, &c->u.user);
		break;
	case CTL_CMD_USER_REMOVE:
		fl_buf_put_str16(out, c->u.name);
		break;
	case CTL_CMD_SUBMIT:
		fl_buf_put_str16(out, c->u.submit.owner);
		fl_buf_put_u32(out, c->u.submit.machine);
		break;
	case CTL_CMD_PROC_STATE:
		fl_buf_put_u64(out, c->u.pstate.pid);
		fl_buf_put_u32(out, c->u.pstate.machine);
		fl_buf_put_u8(out, c->u.pstate.state);
		fl_buf_put_u32(out, (uint32_t)c->u.pstate.status);
		break;
	default:
		break;
	}
	if (!fl_buf_failed(out)) {
		uint32_t n = (uint32_t)(out->len - body);
		for (int i = 0; i < 4; i++)
			out->data[start + 4 + i] = (uint8_t)(n >> (8 * i));
	}
	pad8(out, start);
}

/* ---- Decoding ---- */

struct dec {
	struct fl_reader r;
	struct fl_err *err;
	int rc;
};

static bool fail(struct dec *d, const char *what)
{
	if (d->rc == 0)
		d->rc = fl_err_set(d->err, FL_EFORMAT, "%s", what);
	return false;
}

/* A VM id or user name: 1 to 64 of [a-z0-9._-]. */
static bool name_ok(const char *s, size_t n)
{
	if (n == 0 || n > CTL_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
		      c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* An address: 1 to 255 printable ASCII bytes, no space. */
static bool addr_ok(const char *s, size_t n)
{
	if (n == 0 || n > CTL_ADDR_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] <= ' ' || s[i] > '~')
			return false;
	return true;
}

static bool get_str(struct dec *d, char *out, size_t max, bool addr,
		    const char *what)
{
	size_t n;
	const uint8_t *p = fl_get_str16(&d->r, &n);

	if (p == NULL || n > max)
		return fail(d, what);
	if (!(addr ? addr_ok((const char *)p, n) : name_ok((const char *)p, n)))
		return fail(d, what);
	memcpy(out, p, n);
	out[n] = 0;
	return true;
}

static bool get_key(struct dec *d, uint8_t key[CTL_KEY])
{
	const uint8_t *p = fl_get_bytes(&d->r, CTL_KEY);

	if (p == NULL)
		return fail(d, "key cut off");
	memcpy(key, p, CTL_KEY);
	return true;
}

static bool member_state_ok(uint8_t s)
{
	return s >= CTL_M_ACTIVE && s <= CTL_M_LOST;
}

static bool role_ok(uint8_t r)
{
	return r == CTL_VOTER || r == CTL_STANDBY;
}

static bool get_member(struct dec *d, struct ctl_member *m)
{
	memset(m, 0, sizeof *m);
	m->id = fl_get_u32(&d->r);
	if (!get_str(d, m->addr, CTL_ADDR_MAX, true, "bad member address") ||
	    !get_key(d, m->key))
		return false;
	m->cpu = fl_get_u32(&d->r);
	m->ram = fl_get_u64(&d->r);
	m->disk = fl_get_u64(&d->r);
	m->incarnation = fl_get_u32(&d->r);
	m->state = fl_get_u8(&d->r);
	m->role = fl_get_u8(&d->r);
	m->lost_at = fl_get_u64(&d->r);
	m->back_at = fl_get_u64(&d->r);
	if (d->r.failed)
		return fail(d, "member cut off");
	if (!member_state_ok(m->state) || !role_ok(m->role) || m->cpu == 0)
		return fail(d, "bad member");
	return true;
}

static bool get_user(struct dec *d, struct ctl_user *u)
{
	uint8_t admin;

	memset(u, 0, sizeof *u);
	if (!get_str(d, u->name, CTL_NAME_MAX, false, "bad user name") ||
	    !get_key(d, u->key))
		return false;
	admin = fl_get_u8(&d->r);
	if (d->r.failed || admin > 1)
		return fail(d, "bad user");
	u->admin = admin;
	return true;
}

static bool zeros(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != 0)
			return false;
	return true;
}

int ctl_command_decode(const uint8_t *p, size_t n, struct ctl_command *c,
		       struct fl_err *err)
{
	struct dec d = {.err = err};
	uint8_t version;
	uint16_t reserved;
	uint32_t len;
	size_t body_end;

	memset(c, 0, sizeof *c);
	if (n < HEADER || n % 8 != 0)
		return fl_err_set(err, FL_EFORMAT, "entry of %zu bytes", n);
	fl_reader_init(&d.r, p, n);
	version = fl_get_u8(&d.r);
	c->type = fl_get_u8(&d.r);
	reserved = fl_get_u16(&d.r);
	len = fl_get_u32(&d.r);
	c->client = fl_get_u64(&d.r);
	c->seq = fl_get_u64(&d.r);
	if (version != CTL_VERSION)
		return fl_err_set(err, FL_EFORMAT, "entry: version %u", version);
	if (ctl_cmd_name(c->type) == NULL)
		return fl_err_set(err, FL_EFORMAT, "entry: unknown command %u",
				  c->type);
	if (reserved != 0 || len > n - HEADER)
		return fl_err_set(err, FL_EFORMAT, "entry: bad header");
	body_end = HEADER + len;
	d.r.len = body_end; /* the payload, not the padding */
	switch (c->type) {
	case CTL_CMD_CREATE:
		(void)(get_str(&d, c->u.create.vm, CTL_NAME_MAX, false,
			       "bad VM id") &&
		       get_member(&d, &c->u.create.first) &&
		       get_user(&d, &c->u.create.admin));
		break;
	case CTL_CMD_MEMBER_ADD:
		get_member(&d, &c->u.member);
		break;
	case CTL_CMD_MEMBER_STATE:
		c->u.mstate.id = fl_get_u32(&d.r);
		c->u.mstate.incarnation = fl_get_u32(&d.r);
		c->u.mstate.state = fl_get_u8(&d.r);
		c->u.mstate.role = fl_get_u8(&d.r);
		c->u.mstate.at = fl_get_u64(&d.r);
		if (d.r.failed || !member_state_ok(c->u.mstate.state) ||
		    !role_ok(c->u.mstate.role))
			fail(&d, "bad member state");
		break;
	case CTL_CMD_USER_ADD:
		get_user(&d, &c->u.user);
		break;
	case CTL_CMD_USER_REMOVE:
		get_str(&d, c->u.name, CTL_NAME_MAX, false, "bad user name");
		break;
	case CTL_CMD_SUBMIT:
		if (get_str(&d, c->u.submit.owner, CTL_NAME_MAX, false,
			    "bad owner name") &&
		    fl_reader_left(&d.r) != 0) /* older entries: no machine */
			c->u.submit.machine = fl_get_u32(&d.r);
		break;
	case CTL_CMD_PROC_STATE:
		c->u.pstate.pid = fl_get_u64(&d.r);
		c->u.pstate.machine = fl_get_u32(&d.r);
		c->u.pstate.state = fl_get_u8(&d.r);
		c->u.pstate.status = (int32_t)fl_get_u32(&d.r);
		if (d.r.failed || c->u.pstate.state < CTL_P_RUNNING ||
		    c->u.pstate.state > CTL_P_ENDED)
			fail(&d, "bad process state");
		break;
	default:
		break;
	}
	if (d.rc) {
		fl_err_wrap(err, "entry: %s", ctl_cmd_name(c->type));
		return d.rc;
	}
	if (d.r.failed || fl_reader_left(&d.r) != 0)
		return fl_err_set(err, FL_EFORMAT, "entry: %s payload of %u bytes "
						  "does not fit it",
				  ctl_cmd_name(c->type), len);
	if (!zeros(p + body_end, n - body_end) || n - body_end >= 8)
		return fl_err_set(err, FL_EFORMAT, "entry: bad padding");
	return 0;
}

/* ---- Applying ---- */

const struct ctl_member *ctl_member_find(const struct ctl_state *st,
					 uint32_t id)
{
	for (size_t i = 0; i < st->nmembers; i++)
		if (st->members[i].id == id)
			return &st->members[i];
	return NULL;
}

const struct ctl_user *ctl_user_find(const struct ctl_state *st,
				     const char *name)
{
	for (size_t i = 0; i < st->nusers; i++)
		if (strcmp(st->users[i].name, name) == 0)
			return &st->users[i];
	return NULL;
}

const struct ctl_proc *ctl_proc_find(const struct ctl_state *st, uint64_t pid)
{
	/* pids are given in increasing order: the table is sorted */
	size_t lo = 0, hi = st->nprocs;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (st->procs[mid].pid == pid)
			return &st->procs[mid];
		if (st->procs[mid].pid < pid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* Room for one more of an array; false when out of memory. */
static bool grow(void **a, size_t *cap, size_t n, size_t size)
{
	if (n < *cap)
		return true;
	size_t c = *cap ? 2 * *cap : 8;
	void *x = realloc(*a, c * size);
	if (x == NULL)
		return false;
	*a = x;
	*cap = c;
	return true;
}

static struct ctl_result res(int rc, uint64_t value)
{
	struct ctl_result r = {.rc = rc, .value = value};
	return r;
}

/* Does a member of @role in @state count as a voter? Those that left or
 * were lost do not: their places can be given to others. */
static bool votes(uint8_t role, uint8_t state)
{
	return role == CTL_VOTER && state != CTL_M_LEFT && state != CTL_M_LOST;
}

static size_t voters(const struct ctl_state *st)
{
	size_t n = 0;

	for (size_t i = 0; i < st->nmembers; i++)
		n += votes(st->members[i].role, st->members[i].state);
	return n;
}

/* Is @id a member that serves (a process may start or run there)? */
static bool serving(const struct ctl_state *st, uint32_t id)
{
	const struct ctl_member *m = ctl_member_find(st, id);

	return m != NULL && m->state == CTL_M_ACTIVE;
}

static struct ctl_result add_member(struct ctl_state *st, struct ctl_member m)
{
	for (size_t i = 0; i < st->nmembers; i++) {
		if (memcmp(st->members[i].key, m.key, CTL_KEY) == 0)
			return res(FL_EEXIST, st->members[i].id);
		if (strcmp(st->members[i].addr, m.addr) == 0 &&
		    st->members[i].state != CTL_M_LEFT &&
		    st->members[i].state != CTL_M_LOST)
			return res(FL_EEXIST, st->members[i].id);
	}
	if (st->nmembers >= CTL_MEMBERS_MAX)
		return res(FL_ENOSPC, 0);
	if (!grow((void **)&st->members, &st->members_cap, st->nmembers,
		  sizeof *st->members))
		return res(FL_ENOMEM, 0);
	m.id = st->next_member++;
	m.state = CTL_M_ACTIVE;
	m.lost_at = m.back_at = 0;
	m.role = voters(st) < CTL_VOTERS_MAX ? CTL_VOTER : CTL_STANDBY;
	st->members[st->nmembers++] = m;
	return res(0, m.id);
}

static struct ctl_result add_user(struct ctl_state *st, const struct ctl_user *u)
{
	for (size_t i = 0; i < st->nusers; i++)
		if (strcmp(st->users[i].name, u->name) == 0 ||
		    memcmp(st->users[i].key, u->key, CTL_KEY) == 0)
			return res(FL_EEXIST, 0);
	if (st->nusers >= CTL_USERS_MAX)
		return res(FL_ENOSPC, 0);
	if (!grow((void **)&st->users, &st->users_cap, st->nusers,
		  sizeof *st->users))
		return res(FL_ENOMEM, 0);
	st->users[st->nusers++] = *u;
	return res(0, 0);
}

/* Member @id was declared lost: what ran there ends with it. */
static void end_lost(struct ctl_state *st, uint32_t id)
{
	for (size_t i = 0; i < st->nprocs; i++) {
		struct ctl_proc *pr = &st->procs[i];
		/* SUBMITTED with a machine: it started there, or was to,
		 * and RUNNING was not recorded before the loss */
		if ((pr->state == CTL_P_RUNNING ||
		     pr->state == CTL_P_SUBMITTED) &&
		    pr->machine == id) {
			pr->state = CTL_P_ENDED;
			pr->status = CTL_LOST_STATUS;
			pr->lost = 1;
		}
	}
}

static struct ctl_result apply_one(struct ctl_state *st,
				   const struct ctl_command *c)
{
	bool created = st->vm[0] != 0;

	if (!created && c->type != CTL_CMD_CREATE && c->type != CTL_CMD_BARRIER)
		return res(FL_ENOENT, 0);
	switch (c->type) {
	case CTL_CMD_CREATE: {
		struct ctl_result r;
		if (created)
			return res(FL_EEXIST, 0);
		struct ctl_user admin = c->u.create.admin;
		admin.admin = true;
		strcpy(st->vm, c->u.create.vm);
		r = add_member(st, c->u.create.first);
		if (r.rc == 0)
			r = add_user(st, &admin);
		if (r.rc != 0) { /* all or nothing */
			st->vm[0] = 0;
			st->nmembers = st->nusers = 0;
			st->next_member = 1;
		}
		return r;
	}
	case CTL_CMD_MEMBER_ADD:
		return add_member(st, c->u.member);
	case CTL_CMD_MEMBER_STATE:
		for (size_t i = 0; i < st->nmembers; i++) {
			struct ctl_member *m = &st->members[i];
			if (m->id != c->u.mstate.id)
				continue;
			if (c->u.mstate.incarnation < m->incarnation)
				return res(FL_EINVAL, 0); /* never back */
			/* A sixth voter, whether a standby is promoted or a
			 * lost or departed voter comes back. */
			if (votes(c->u.mstate.role, c->u.mstate.state) &&
			    !votes(m->role, m->state) &&
			    voters(st) >= CTL_VOTERS_MAX)
				return res(FL_ENOSPC, 0);
			if (c->u.mstate.state == CTL_M_LOST &&
			    m->state != CTL_M_LOST) {
				m->lost_at = c->u.mstate.at;
				end_lost(st, m->id);
			}
			else if (m->state == CTL_M_LOST &&
				 c->u.mstate.state != CTL_M_LOST)
				m->back_at = c->u.mstate.at;
			m->incarnation = c->u.mstate.incarnation;
			m->state = c->u.mstate.state;
			m->role = c->u.mstate.role;
			return res(0, m->id);
		}
		return res(FL_ENOENT, 0);
	case CTL_CMD_USER_ADD:
		return add_user(st, &c->u.user);
	case CTL_CMD_USER_REMOVE: {
		size_t admins = 0, at = st->nusers;
		for (size_t i = 0; i < st->nusers; i++) {
			admins += st->users[i].admin;
			if (strcmp(st->users[i].name, c->u.name) == 0)
				at = i;
		}
		if (at == st->nusers)
			return res(FL_ENOENT, 0);
		if (st->users[at].admin && admins == 1)
			return res(FL_EPERM, 0); /* the last admin stays */
		st->users[at] = st->users[--st->nusers];
		return res(0, 0);
	}
	case CTL_CMD_SUBMIT: {
		struct ctl_proc *pr;
		if (ctl_user_find(st, c->u.submit.owner) == NULL)
			return res(FL_EPERM, 0);
		if (c->u.submit.machine != 0 && !serving(st, c->u.submit.machine))
			return res(FL_EINVAL, 0);
		if (!grow((void **)&st->procs, &st->procs_cap, st->nprocs,
			  sizeof *st->procs))
			return res(FL_ENOMEM, 0);
		pr = &st->procs[st->nprocs++];
		memset(pr, 0, sizeof *pr);
		pr->pid = st->next_pid++;
		strcpy(pr->owner, c->u.submit.owner);
		pr->sub_client = c->client;
		pr->sub_seq = c->seq;
		pr->machine = c->u.submit.machine;
		pr->state = CTL_P_SUBMITTED;
		return res(0, pr->pid);
	}
	case CTL_CMD_PROC_STATE: {
		struct ctl_proc *pr = (struct ctl_proc *)ctl_proc_find(st, c->u.pstate.pid);
		if (pr == NULL)
			return res(FL_ENOENT, 0);
		/* Only forwards, once each: SUBMITTED -> RUNNING -> ENDED, or
		 * SUBMITTED -> ENDED (it could not start). */
		if (pr->state == CTL_P_ENDED ||
		    (c->u.pstate.state == CTL_P_RUNNING && pr->state != CTL_P_SUBMITTED))
			return res(FL_EINVAL, 0);
		if (c->u.pstate.state == CTL_P_RUNNING) {
			if (!serving(st, c->u.pstate.machine))
				return res(FL_EINVAL, 0);
			pr->machine = c->u.pstate.machine;
		}
		pr->state = c->u.pstate.state;
		if (pr->state == CTL_P_ENDED)
			pr->status = c->u.pstate.status;
		return res(0, pr->pid);
	}
	case CTL_CMD_BARRIER:
		return res(0, 0);
	}
	return res(FL_EINVAL, 0);
}

/* @client's session, made when it has none. At CTL_SESSIONS_MAX the one
 * used least recently gives way (the same one on every machine: the
 * choice depends only on the log). A client whose session went, retrying
 * a command, would apply it again: sessions outlive any retry by far. */
static struct ctl_session *session_of(struct ctl_state *st, uint64_t client)
{
	size_t old = 0;

	for (size_t i = 0; i < st->nsessions; i++) {
		if (st->sessions[i].client == client)
			return &st->sessions[i];
		if (st->sessions[i].last < st->sessions[old].last)
			old = i;
	}
	if (st->nsessions >= CTL_SESSIONS_MAX) {
		st->sessions[old] = (struct ctl_session){.client = client};
		return &st->sessions[old];
	}
	if (!grow((void **)&st->sessions, &st->sessions_cap, st->nsessions,
		  sizeof *st->sessions))
		return NULL;
	st->sessions[st->nsessions] = (struct ctl_session){.client = client};
	return &st->sessions[st->nsessions++];
}

struct ctl_result ctl_apply(struct ctl_state *st, const struct ctl_command *c)
{
	struct ctl_session *s = NULL;
	struct ctl_result r;

	st->applied++;
	if (c->client != 0 && c->seq == 0)
		return res(FL_EINVAL, 0); /* sequence numbers start at 1 */
	if (c->client != 0) {
		s = session_of(st, c->client);
		if (s == NULL)
			return res(FL_ENOMEM, 0);
		if (c->seq <= s->seq) {
			/* Applied before: its result, if it is the last one. */
			r = c->seq == s->seq ? res(s->rc, s->value) : res(FL_ERANGE, 0);
			r.replay = true;
			return r;
		}
	}
	r = apply_one(st, c);
	if (s != NULL) {
		s->seq = c->seq;
		s->rc = r.rc;
		s->value = r.value;
		s->last = st->applied;
	}
	return r;
}

struct ctl_result ctl_apply_entry(struct ctl_state *st, const uint8_t *p,
				  size_t n)
{
	struct ctl_command c;
	struct fl_err err;

	if (ctl_command_decode(p, n, &c, &err) != 0) {
		st->applied++;
		return res(FL_EFORMAT, 0);
	}
	return ctl_apply(st, &c);
}

/* ---- Snapshots ---- */

void ctl_snapshot_encode(const struct ctl_state *st, struct fl_buf *out)
{
	size_t start = out->len;

	fl_buf_put(out, SNAP_MAGIC, 4);
	fl_buf_put_u16(out, CTL_VERSION);
	fl_buf_put_str16(out, st->vm);
	fl_buf_put_u64(out, st->next_pid);
	fl_buf_put_u32(out, st->next_member);
	fl_buf_put_u64(out, st->applied);
	fl_buf_put_u32(out, (uint32_t)st->nmembers);
	for (size_t i = 0; i < st->nmembers; i++)
		put_member(out, &st->members[i]);
	fl_buf_put_u32(out, (uint32_t)st->nusers);
	for (size_t i = 0; i < st->nusers; i++)
		put_user(out, &st->users[i]);
	fl_buf_put_u32(out, (uint32_t)st->nprocs);
	for (size_t i = 0; i < st->nprocs; i++) {
		const struct ctl_proc *p = &st->procs[i];
		fl_buf_put_u64(out, p->pid);
		fl_buf_put_str16(out, p->owner);
		fl_buf_put_u64(out, p->sub_client);
		fl_buf_put_u64(out, p->sub_seq);
		fl_buf_put_u32(out, p->machine);
		fl_buf_put_u8(out, p->state);
		fl_buf_put_u32(out, (uint32_t)p->status);
		fl_buf_put_u8(out, p->lost);
	}
	fl_buf_put_u32(out, (uint32_t)st->nsessions);
	for (size_t i = 0; i < st->nsessions; i++) {
		const struct ctl_session *s = &st->sessions[i];
		fl_buf_put_u64(out, s->client);
		fl_buf_put_u64(out, s->seq);
		fl_buf_put_u32(out, (uint32_t)s->rc);
		fl_buf_put_u64(out, s->value);
		fl_buf_put_u64(out, s->last);
	}
	pad8(out, start);
}

/* The fewest bytes a member, user, process and session can take: a bound
 * on a count from the bytes left must not refuse a valid snapshot (a
 * 1-byte address, a 1-byte name). */
#define MEMBER_MIN (4 + 2 + 1 + CTL_KEY + 4 + 8 + 8 + 4 + 1 + 1)
#define USER_MIN (2 + 1 + CTL_KEY + 1)
#define PROC_MIN (8 + 2 + 1 + 8 + 8 + 4 + 1 + 4 + 1)
#define SESSION_MIN (8 + 8 + 4 + 8 + 8)

static bool count_ok(struct dec *d, uint32_t n, size_t each, size_t max)
{
	return !d->r.failed && n <= max && n <= fl_reader_left(&d->r) / each;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Are the @n words at @v distinct (sorts a copy)? */
static bool distinct(const uint64_t *v, size_t n)
{
	uint64_t *c = malloc((n ? n : 1) * sizeof *c);
	bool ok = c != NULL;

	if (c == NULL)
		return false;
	memcpy(c, v, n * sizeof *c);
	qsort(c, n, sizeof *c, cmp_u64);
	for (size_t i = 1; i < n && ok; i++)
		ok = c[i] != c[i - 1];
	free(c);
	return ok;
}

/* The invariants apply keeps, so that a restored state is one apply could
 * have made. Only true invariants belong here: a check stricter than apply
 * would make a valid snapshot impossible to install. */
static bool snapshot_checks(struct dec *d, const struct ctl_state *s)
{
	size_t admins = 0;
	bool ok = true;

	if (s->next_pid == 0 || s->next_member == 0)
		return fail(d, "bad counters");
	/* Before CREATE only sessions exist. */
	if (s->vm[0] == 0 && (s->nmembers || s->nusers || s->nprocs ||
			      s->next_pid != 1 || s->next_member != 1))
		return fail(d, "tables before CREATE");
	/* Members: ids increasing (they are appended as given) and below
	 * the next one, keys unique, at most CTL_VOTERS_MAX voters. */
	for (size_t i = 0; i < s->nmembers && ok; i++) {
		const struct ctl_member *m = &s->members[i];
		ok = m->id != 0 && m->id < s->next_member &&
		     (i == 0 || m->id > s->members[i - 1].id);
		for (size_t j = 0; j < i && ok; j++)
			ok = memcmp(s->members[j].key, m->key, CTL_KEY) != 0;
	}
	if (!ok)
		return fail(d, "inconsistent members");
	if (voters(s) > CTL_VOTERS_MAX)
		return fail(d, "too many voters");
	/* Users: names and keys unique; once created, an admin. */
	for (size_t i = 0; i < s->nusers && ok; i++) {
		admins += s->users[i].admin;
		for (size_t j = i + 1; j < s->nusers && ok; j++)
			ok = strcmp(s->users[i].name, s->users[j].name) != 0 &&
			     memcmp(s->users[i].key, s->users[j].key, CTL_KEY) != 0;
	}
	if (!ok || (s->vm[0] != 0 && admins == 0))
		return fail(d, "inconsistent users");
	/* Processes: pids increasing and below the next one; a machine
	 * once started (a member id; before, the one to start it, or 0),
	 * a status only once ended. */
	for (size_t i = 0; i < s->nprocs && ok; i++) {
		const struct ctl_proc *p = &s->procs[i];
		ok = p->pid != 0 && p->pid < s->next_pid &&
		     (i == 0 || p->pid > s->procs[i - 1].pid) &&
		     p->machine < s->next_member;
		if (p->state == CTL_P_SUBMITTED)
			ok = ok && p->status == 0;
		else if (p->state == CTL_P_RUNNING)
			ok = ok && p->machine != 0 && p->status == 0;
		else
			ok = ok && p->state == CTL_P_ENDED;
		ok = ok && (p->lost == 0 ||
			    (p->lost == 1 && p->state == CTL_P_ENDED &&
			     p->status == CTL_LOST_STATUS && p->machine != 0));
	}
	if (!ok)
		return fail(d, "inconsistent processes");
	/* Sessions: a client other than 0, a seq from 1, used at or before
	 * the last entry, one a client. */
	for (size_t i = 0; i < s->nsessions && ok; i++)
		ok = s->sessions[i].client != 0 && s->sessions[i].seq != 0 &&
		     s->sessions[i].last <= s->applied;
	if (ok && s->nsessions > 1) {
		uint64_t *cl = malloc(s->nsessions * sizeof *cl);
		if (cl == NULL)
			return fail(d, "out of memory");
		for (size_t i = 0; i < s->nsessions; i++)
			cl[i] = s->sessions[i].client;
		ok = distinct(cl, s->nsessions);
		free(cl);
	}
	return ok ? true : fail(d, "inconsistent sessions");
}

int ctl_snapshot_restore(struct ctl_state *st, const uint8_t *p, size_t n,
			 struct fl_err *err)
{
	struct dec d = {.err = err};
	struct ctl_state s;
	const uint8_t *magic;
	uint32_t k;

	ctl_state_init(&s);
	fl_reader_init(&d.r, p, n);
	if (n % 8 != 0)
		return fl_err_set(err, FL_EFORMAT, "snapshot of %zu bytes", n);
	magic = fl_get_bytes(&d.r, 4);
	if (magic == NULL || memcmp(magic, SNAP_MAGIC, 4) != 0 ||
	    fl_get_u16(&d.r) != CTL_VERSION) {
		fail(&d, "bad magic or version");
		goto out;
	}
	{
		size_t len;
		const uint8_t *v = fl_get_str16(&d.r, &len);
		if (v == NULL || len > CTL_NAME_MAX ||
		    (len > 0 && !name_ok((const char *)v, len))) {
			fail(&d, "bad VM id");
			goto out;
		}
		memcpy(s.vm, v, len);
		s.vm[len] = 0;
	}
	s.next_pid = fl_get_u64(&d.r);
	s.next_member = fl_get_u32(&d.r);
	s.applied = fl_get_u64(&d.r);
	k = fl_get_u32(&d.r);
	if (!count_ok(&d, k, MEMBER_MIN, CTL_MEMBERS_MAX)) {
		fail(&d, "members cut off");
		goto out;
	}
	s.members = calloc(k ? k : 1, sizeof *s.members);
	s.members_cap = k;
	for (uint32_t i = 0; i < k && s.members; i++)
		if (!get_member(&d, &s.members[s.nmembers++]))
			goto out;
	k = fl_get_u32(&d.r);
	if (s.members == NULL || !count_ok(&d, k, USER_MIN, CTL_USERS_MAX)) {
		fail(&d, "users cut off");
		goto out;
	}
	s.users = calloc(k ? k : 1, sizeof *s.users);
	s.users_cap = k;
	for (uint32_t i = 0; i < k && s.users; i++)
		if (!get_user(&d, &s.users[s.nusers++]))
			goto out;
	k = fl_get_u32(&d.r);
	if (s.users == NULL || !count_ok(&d, k, PROC_MIN, SIZE_MAX)) {
		fail(&d, "processes cut off");
		goto out;
	}
	s.procs = calloc(k ? k : 1, sizeof *s.procs);
	s.procs_cap = k;
	for (uint32_t i = 0; i < k && s.procs; i++) {
		struct ctl_proc *pr = &s.procs[s.nprocs++];
		pr->pid = fl_get_u64(&d.r);
		if (!get_str(&d, pr->owner, CTL_NAME_MAX, false, "bad owner"))
			goto out;
		pr->sub_client = fl_get_u64(&d.r);
		pr->sub_seq = fl_get_u64(&d.r);
		pr->machine = fl_get_u32(&d.r);
		pr->state = fl_get_u8(&d.r);
		pr->status = (int32_t)fl_get_u32(&d.r);
		pr->lost = fl_get_u8(&d.r);
	}
	k = fl_get_u32(&d.r);
	if (s.procs == NULL || !count_ok(&d, k, SESSION_MIN, CTL_SESSIONS_MAX)) {
		fail(&d, "sessions cut off");
		goto out;
	}
	s.sessions = calloc(k ? k : 1, sizeof *s.sessions);
	s.sessions_cap = k;
	for (uint32_t i = 0; i < k && s.sessions; i++) {
		struct ctl_session *ss = &s.sessions[s.nsessions++];
		ss->client = fl_get_u64(&d.r);
		ss->seq = fl_get_u64(&d.r);
		ss->rc = (int32_t)fl_get_u32(&d.r);
		ss->value = fl_get_u64(&d.r);
		ss->last = fl_get_u64(&d.r);
	}
	if (s.sessions == NULL || d.r.failed) {
		fail(&d, "cut off");
		goto out;
	}
	if (fl_reader_left(&d.r) >= 8 ||
	    !zeros(p + d.r.off, fl_reader_left(&d.r))) {
		fail(&d, "trailing bytes");
		goto out;
	}
	if (!snapshot_checks(&d, &s))
		goto out;
	ctl_state_close(st);
	*st = s;
	return 0;
out:
	ctl_state_close(&s);
	if (d.rc == 0)
		fail(&d, "malformed");
	fl_err_wrap(err, "snapshot");
	return d.rc;
}
