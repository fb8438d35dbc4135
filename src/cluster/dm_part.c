/* Processes spread over the VM's machines: the daemon's side of
 * src/dist/dist.h (threads) and src/dsm/dsm_gsrc.h (global memory).
 *
 * A process starts on its origin (the machine the VM placed it on) as
 * one part per machine that serves then, in member-id order: the origin
 * makes its own part and sends every other machine PART (the module,
 * options, arguments, the machines' ids), then starts main. A machine
 * that gets PART makes its part (stdio to /dev/null: a thread that
 * reaches stdio moves to the origin) and asks for work. The parts' bytes
 * travel as PROC frames over the machines' connections (which keep order):
 * the layers' send callbacks run on the node's workers and queue them for
 * the loop thread (an async handle); the loop hands arriving ones to the
 * part. A PROC for a process this machine has no part of yet (a thief's
 * STEAL that overtook the origin's PART) waits in a bounded queue until
 * the part exists.
 *
 * The end: every part stays until all are quiet, so a home still answers
 * whatever another part asks (a thread parked on a page, say) until the
 * process is over everywhere. A part elsewhere that is quiet says so
 * (PART_QUIET); once every part and the origin's own process are quiet,
 * the origin frees its part and tells the others (PART_FREE).
 *
 * What each part did (ps -v, run --stats): a part elsewhere sends the
 * origin its counts every STATS_MS while they change (PART_STATS) and
 * with its PART_QUIET; the origin reads its own.
 *
 * A machine declared lost (dm_fail.c): the origin ends the process, 75
 * with a line naming it (a --survive process goes on without what was
 * there: dist.h, "Survive"), and counts that machine's part quiet; a
 * part whose origin was lost ends and frees itself once over.
 *
 * Runs on the loop thread, but for the send callbacks (any thread). */
#include "cluster/dm_int.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist/dist.h"
#include "dsm/dsm_gsrc.h"

enum { CH_DSM = 1, CH_DIST = 2 };
/* PROC frames kept for parts not made yet: at most this many, this
 * many bytes, this long. */
#define EARLY_MAX 1024
#define EARLY_BYTES (4u << 20)
#define EARLY_MS 10000
/* How often a part elsewhere tells the origin what it did (ps -v). */
#define STATS_MS 250

struct dm_part {
	struct dm *d;
	uint64_t pid;
	int self, origin, nparts;
	uint32_t ids[DIST_MAX_PARTS];
	/* The incarnation of each as this machine knew it when the part
	 * was made: a loss of that one or an older ends the process. */
	uint32_t incs[DIST_MAX_PARTS];
	struct vm_proc *vp;
	/* A part elsewhere owns its module, arguments and waiter. */
	struct vm_module *m;
	char **argv;
	int argc;
	pthread_t waiter;
	bool has_waiter, waited, free_asked;
	uv_async_t done;
	struct vm_gsrc *g;
	struct dist_part *dp;
	/* The origin: which parts are quiet, what each did as it last said
	 * (ps -v), and what frees its process. */
	bool quiet[DIST_MAX_PARTS];
	int nquiet;
	struct dm_pstats said[DIST_MAX_PARTS];
	/* Elsewhere: when it last told the origin, and what. */
	uint64_t stats_ms;
	struct dm_pstats told;
	void (*release)(void *arg);
	void *release_arg;
	struct dm_part *next;
};

struct dm_early {
	struct dm_early *next;
	uint64_t ms; /* when it came */
	uint64_t pid;
	uint32_t from;
	size_t len;
	uint8_t bytes[];
};

static struct dm_part *part_find(struct dm *d, uint64_t pid)
{
	for (struct dm_part *pt = d->parts; pt != NULL; pt = pt->next)
		if (pt->pid == pid)
			return pt;
	return NULL;
}

static void part_incs(struct dm *d, struct dm_part *pt)
{
	for (int i = 0; i < pt->nparts; i++) {
		const struct ctl_member *m = ctl_member_find(&d->st, pt->ids[i]);
		pt->incs[i] = pt->ids[i] == d->me.id ? d->me.incarnation
			      : m != NULL		 ? m->incarnation
						 : 0;
	}
}

static int index_of(const struct dm_part *pt, uint32_t id)
{
	for (int i = 0; i < pt->nparts; i++)
		if (pt->ids[i] == id)
			return i;
	return -1;
}

static struct dm_link *link_to(struct dm *d, uint32_t id)
{
	struct dm_peer *pe = dm_peer_get(d, id, false);

	return pe != NULL && pe->link != NULL && pe->link->ready ? pe->link
								  : NULL;
}

/* ---- Sending (any thread) ---- */

static void part_send(struct dm_part *pt, uint8_t chan, int to,
		      const void *msg, size_t len)
{
	uint8_t head[9];

	if (to < 0 || to >= pt->nparts)
		return;
	for (int i = 0; i < 8; i++)
		head[i] = (uint8_t)(pt->pid >> (8 * i));
	head[8] = chan;
	/* ENOMEM: lost as on a machine lost, which ends the process */
	dm_sess_send(pt->d, pt->ids[to], NET_MSG_PROC, head, sizeof head, msg,
		     len);
}

static void send_dsm(void *ctx, int to, const void *msg, size_t len)
{
	part_send(ctx, CH_DSM, to, msg, len);
}

static void send_dist(void *ctx, int to, const void *msg, size_t len)
{
	part_send(ctx, CH_DIST, to, msg, len);
}

static void dsm_counters(void *ctx, uint64_t except, uint64_t *sent,
			 uint64_t *recv)
{
	struct dm_part *pt = ctx;

	dsm_gsrc_counts(pt->g, except, sent, recv);
}

/* ---- Parts ---- */

static int home_of(void *ctx, uint64_t page)
{
	struct dm_part *pt = ctx;

	/* vm_peer_home, with the origin part 0: slot 0 is its, m + 1
	 * part m's */
	return dsm_gsrc_slot_home(dsm_gsrc_page_slot(page), pt->nparts);
}

static int64_t seg_pages(uint32_t len)
{
	return ((int64_t)len + VM_PAGE_SIZE - 1) / VM_PAGE_SIZE;
}

/* Survive: threads of the process were lost (dist.h); the locks they
 * held here are taken with status 1 next. */
static void threads_lost(void *ctx, bool (*lost)(void *lctx, uint64_t tid),
			 void *lost_ctx)
{
	struct dm_part *pt = ctx;

	if (pt->g != NULL)
		dsm_gsrc_threads_lost(pt->g, lost, lost_ctx);
}

/* Give @pt->vp (made by vm__proc_new) its DSM source and its peer. */
static int part_attach(struct dm_part *pt, long ncpu, struct fl_err *err)
{
	struct vm_proc *vp = pt->vp;
	const struct vm_module *m = vp->m;
	struct dsm_gsrc_config gc = {.self = pt->self, .nodes = pt->nparts,
				     .slot = dsm_gsrc_node_slot(pt->self),
				     .home = home_of, .home_ctx = pt,
				     .send = send_dsm, .send_ctx = pt,
				     .ids = pt->ids, .robust = vp->opt.survive};
	struct dist_config dc = {.self = pt->self, .nparts = pt->nparts,
				 .pid = pt->pid, .eager = vp->opt.spread_eager,
				 .origin = pt->origin, .ncpu = ncpu,
				 .send = send_dist, .send_ctx = pt,
				 .counters = dsm_counters, .counters_ctx = pt,
				 .survive = vp->opt.survive,
				 .threads_lost = threads_lost,
				 .threads_lost_ctx = pt, .ids = pt->ids};
	int rc;

	/* The local source's segment pages are never credited back (as a
	 * global space's are not): the DSM source's stand-in charges its
	 * own. */
	vp->gs->ops->close(vp->gs);
	vp->gs = NULL;
	vm__credit(&vp->budget, (int64_t)VM_PAGE_SIZE *
				       (seg_pages(m->rodata_len) +
					seg_pages(m->data_len)));
	if ((rc = dsm_gsrc_new(vp, &gc, &pt->g, err)) != 0)
		return rc;
	vp->gs = pt->g;
	return dist_part_new(vp, &dc, &pt->dp, err);
}

/* What @pt did so far. */
static void part_snapshot(const struct dm_part *pt, struct dm_pstats *s)
{
	struct vm_proc_info info = {0};
	struct dist_stats st = {0};
	struct dsm_stats ds = {0};

	st.data_to = -1; /* none */
	if (pt->vp != NULL)
		vm_proc_info(pt->vp, &info);
	if (pt->dp != NULL)
		dist_stats(pt->dp, &st);
	if (pt->g != NULL)
		dsm_gsrc_stats(pt->g, &ds);
	*s = (struct dm_pstats){
		.threads = info.threads,
		.memory = info.memory,
		.cpu_ns = info.cpu_ns,
		.moved_in = st.moved_in,
		.moved_out = st.moved_out,
		.move_bytes = st.move_bytes,
		.out_stolen = st.out_why[DIST_WHY_STOLEN],
		.out_pushed = st.out_why[DIST_WHY_PUSHED],
		.out_stdio = st.out_why[DIST_WHY_STDIO],
		.out_data = st.out_why[DIST_WHY_DATA],
		.out_balance = st.out_why[DIST_WHY_BALANCE],
		.steals = st.steals,
		.steals_empty = st.steals_empty,
		.remote_joins = st.remote_joins,
		.data_tid = st.data_to >= 0 ? st.data_tid : 0,
		.data_to = st.data_to >= 0 && st.data_to < pt->nparts
				   ? pt->ids[st.data_to]
				   : 0,
		.data_faults = st.data_to >= 0 ? st.data_faults : 0,
		.pages_fetched = ds.pages_fetched,
		.diffs_sent = ds.diffs_sent,
		.diff_bytes = ds.diff_bytes,
		.invalidations = ds.invalidations,
		.atomics_served = ds.atomics_served,
		.syncs_served = ds.syncs_served,
		.msgs_sent = st.msgs_sent + ds.msgs_sent,
		.bytes_sent = st.bytes_sent + ds.bytes_sent,
		.msgs_recv = st.msgs_recv + ds.msgs_recv,
		.bytes_recv = st.bytes_recv + ds.bytes_recv,
		.lazy_pages = st.lazy_pages,
		.lazy_fetched = st.lazy_fetched,
		.lazy_bytes = st.lazy_bytes,
	};
}

int dm_part_stats(const struct dm_part *pt, struct dm_pstats *out,
		  uint32_t *ids)
{
	for (int i = 0; i < pt->nparts; i++) {
		if (i == pt->self)
			part_snapshot(pt, &out[i]);
		else
			out[i] = pt->said[i];
		ids[i] = pt->ids[i];
	}
	return pt->nparts;
}

void dm_parts_load(struct dm *d, uint64_t *threads, uint64_t *memory,
		   uint64_t *cpu_ns)
{
	for (struct dm_part *pt = d->parts; pt != NULL; pt = pt->next) {
		struct vm_proc_info info;
		if (pt->self == pt->origin || pt->vp == NULL)
			continue;
		vm_proc_info(pt->vp, &info);
		*threads += info.threads;
		*memory += info.memory;
		*cpu_ns += info.cpu_ns;
	}
}

void dm_part_add_others(const struct dm_part *pt, struct vm_proc_info *info)
{
	for (int i = 0; i < pt->nparts; i++)
		if (i != pt->self) {
			info->threads += pt->said[i].threads;
			info->memory += pt->said[i].memory;
			info->cpu_ns += pt->said[i].cpu_ns;
		}
}

/* A part elsewhere: PART_STATS (or, @quiet, PART_QUIET) to the origin,
 * with its counts @s (taken just now). */
static void part_tell(struct dm_part *pt, const struct dm_pstats *s,
		      bool quiet)
{
	uint32_t to = pt->ids[pt->origin];
	struct fl_buf b;

	pt->told = *s;
	pt->stats_ms = dm_now_ms();
	fl_buf_init(&b);
	fl_buf_put_u64(&b, pt->pid);
	dm_pstats_encode(&pt->told, &b);
	if (!fl_buf_failed(&b))
		dm_sess_send(pt->d, to,
			     quiet ? NET_MSG_PART_QUIET : NET_MSG_PART_STATS,
			     NULL, 0, b.data, b.len);
	else if (quiet) /* the end matters more than its numbers */
		dm_sess_send(pt->d, to, NET_MSG_PART_QUIET, NULL, 0, &pt->pid,
			     8);
	fl_buf_close(&b);
}

static void part_unlink(struct dm *d, struct dm_part *pt)
{
	for (struct dm_part **q = &d->parts; *q != NULL; q = &(*q)->next)
		if (*q == pt) {
			*q = pt->next;
			return;
		}
}

/* Free what is left of @pt once its process was freed (or never
 * made). */
static void part_free(struct dm_part *pt)
{
	if (pt->dp != NULL) {
		struct dist_stats st;
		struct dsm_stats ds = {0};
		dist_stats(pt->dp, &st);
		if (pt->g != NULL)
			dsm_gsrc_stats(pt->g, &ds);
		dm_log(pt->d,
		       "process %" PRIu64 " part %d: threads in %" PRIu64
		       ", out %" PRIu64 " (%" PRIu64 " bytes), steals %" PRIu64
		       " (%" PRIu64 " empty), remote joins %" PRIu64
		       ", messages %" PRIu64 " out (%" PRIu64 " bytes), %" PRIu64
		       " in; memory: pages fetched %" PRIu64 ", diffs %" PRIu64
		       " (%" PRIu64 " bytes), messages %" PRIu64 " out (%" PRIu64
		       " bytes), %" PRIu64 " in (%" PRIu64 " bytes)",
		       pt->pid, pt->self, st.moved_in, st.moved_out,
		       st.move_bytes, st.steals, st.steals_empty,
		       st.remote_joins, st.msgs_sent, st.bytes_sent,
		       st.msgs_recv, ds.pages_fetched, ds.diffs_sent,
		       ds.diff_bytes, ds.msgs_sent, ds.bytes_sent, ds.msgs_recv,
		       ds.bytes_recv);
		dist_unref(pt->dp);
	}
	if (pt->g != NULL)
		dsm_gsrc_unref(pt->g);
	vm_module_free(pt->m);
	for (int i = 0; i < pt->argc; i++)
		free(pt->argv[i]);
	free(pt->argv);
	free(pt);
}

static void deliver_early(struct dm *d, struct dm_part *pt);

int dm_part_start(struct dm *d, uint64_t pid, const struct vm_module *m,
		  const struct vm_options *o, struct vm_proc **vp,
		  struct dm_part **out, struct fl_err *err)
{
	struct dm_part_msg msg = {.pid = pid};
	struct dm_part *pt;
	struct fl_buf mod, b;
	long ncpu = 0;
	int rc;

	*out = NULL;
	/* Its machines: this one first (node() is 0 where the process
	 * started, as on one machine), then every other that serves and
	 * is reachable now. */
	msg.origin = 0;
	msg.ids[msg.nparts++] = d->me.id;
	ncpu = vm_node_workers(d->node);
	for (size_t i = 0; i < d->st.nmembers && msg.nparts < DM_PARTS_MAX;
	     i++) {
		const struct ctl_member *cm = &d->st.members[i];
		/* --cpus N: machines until they have N cores */
		if (o->cpus != 0 && ncpu >= (long)o->cpus)
			break;
		if (cm->state != CTL_M_ACTIVE || cm->id == d->me.id ||
		    link_to(d, cm->id) == NULL)
			continue;
		msg.ids[msg.nparts++] = cm->id;
		ncpu += cm->cpu;
	}
	if (msg.nparts < 2)
		return vm_proc_start(d->node, m, o, vp, err);
	pt = calloc(1, sizeof *pt);
	if (pt == NULL)
		return fl_err_set(err, FL_ENOMEM, "out of memory");
	pt->d = d;
	pt->pid = pid;
	pt->self = pt->origin = (int)msg.origin;
	pt->nparts = (int)msg.nparts;
	memcpy(pt->ids, msg.ids, sizeof pt->ids);
	part_incs(d, pt);
	if ((rc = vm__proc_new(d->node, m, o, &pt->vp, err)) != 0) {
		free(pt);
		return rc;
	}
	if ((rc = part_attach(pt, ncpu, err)) != 0) {
		vm__proc_abandon(pt->vp);
		vm_proc_free(pt->vp);
		part_free(pt);
		return rc;
	}
	/* Tell the others: the process as a submission carries it. */
	fl_buf_init(&mod);
	fl_buf_init(&b);
	msg.ncpu = (uint32_t)ncpu;
	msg.sub.client = pid; /* a submission's id, not used: nonzero */
	msg.sub.seq = 1;
	msg.sub.check = o->check;
	msg.sub.memory = o->memory;
	msg.sub.max_threads = o->max_threads;
	msg.sub.stack_words = o->stack_words;
	msg.sub.call_depth = o->max_depth;
	msg.sub.cpus = o->cpus;
	msg.sub.eager = o->spread_eager;
	msg.sub.survive = o->survive;
	msg.sub.argc = (uint32_t)o->argc;
	msg.sub.argv = o->argv;
	if (vm_module_encode(m, &mod) == 0 && !fl_buf_failed(&mod)) {
		msg.sub.module = mod.data;
		msg.sub.module_len = mod.len;
		dm_part_encode(&msg, &b);
	}
	for (int i = 0; i < pt->nparts && !fl_buf_failed(&b) && b.len > 0; i++)
		if (i != pt->self)
			dm_sess_send(d, pt->ids[i], NET_MSG_PART, NULL, 0,
				     b.data, b.len);
	rc = fl_buf_failed(&b) || b.len == 0 ? FL_ENOMEM : 0;
	fl_buf_close(&mod);
	fl_buf_close(&b);
	pt->next = d->parts;
	d->parts = pt;
	*vp = pt->vp;
	*out = pt;
	if (rc == 0)
		rc = vm__proc_start_main(pt->vp, err);
	else
		fl_err_set(err, rc, "out of memory (spreading the process)");
	if (rc != 0) {
		/* Ended before it began: the other parts (if told) end
		 * too, and the caller frees it as a process that ran. */
		vm_proc_kill(pt->vp, 70);
	}
	dm_log(d, "process %" PRIu64 " spread over %d machines", pid,
	       pt->nparts);
	deliver_early(d, pt);
	return 0;
}

/* The origin: part @i says nothing more (quiet, or its machine gone). */
static void part_quiet(struct dm_part *pt, int i)
{
	if (!pt->quiet[i]) {
		pt->quiet[i] = true;
		pt->nquiet++;
	}
}

void dm_part_origin_done(struct dm_part *pt, void (*release)(void *arg),
			 void *arg)
{
	struct dm *d = pt->d;

	pt->release = release;
	pt->release_arg = arg;
	part_quiet(pt, pt->self);
	if (pt->nquiet < pt->nparts)
		return;
	for (int i = 0; i < pt->nparts; i++)
		if (i != pt->self)
			dm_sess_send(d, pt->ids[i], NET_MSG_PART_FREE, NULL, 0,
				     &pt->pid, 8);
	part_unlink(d, pt);
	release(arg); /* frees the process */
	part_free(pt);
}

/* ---- A part elsewhere ---- */

static void *waiter_main(void *arg)
{
	struct dm_part *pt = arg;

	vm_proc_wait(pt->vp);
	uv_async_send(&pt->done);
	return NULL;
}

static void part_closed(uv_handle_t *h)
{
	part_free(h->data);
}

/* A part elsewhere whose process is quiet and whose origin said so:
 * gone. */
static void part_maybe_free(struct dm_part *pt)
{
	struct vm_proc_info info;

	if (!pt->waited || !pt->free_asked)
		return;
	part_unlink(pt->d, pt);
	vm_proc_info(pt->vp, &info);
	pt->d->cpu_done_ns += info.cpu_ns;
	vm_proc_free(pt->vp);
	pt->vp = NULL;
	uv_close((uv_handle_t *)&pt->done, part_closed);
}

static void part_done_cb(uv_async_t *a)
{
	struct dm_part *pt = a->data;
	struct dm_pstats st;

	if (pt->waited)
		return;
	pthread_join(pt->waiter, NULL);
	pt->has_waiter = false;
	pt->waited = true;
	part_snapshot(pt, &st);
	part_tell(pt, &st, true);
	part_maybe_free(pt);
}

static void on_part(struct dm *d, const struct net_header *h,
		    const uint8_t *p)
{
	struct dm_part_msg msg;
	struct dm_part *pt;
	struct vm_options o;
	struct fl_err err;
	int rc;

	if (dm_part_decode(p, h->length, &msg, &err) != 0) {
		dm_log(d, "PART from machine %" PRIu32 ": %s", h->machine,
		       err.msg);
		return;
	}
	pt = calloc(1, sizeof *pt);
	if (pt == NULL || part_find(d, msg.pid) != NULL) {
		free(pt);
		dm_submit_free(&msg.sub);
		return;
	}
	pt->d = d;
	pt->pid = msg.pid;
	pt->nparts = (int)msg.nparts;
	pt->origin = (int)msg.origin;
	memcpy(pt->ids, msg.ids, sizeof pt->ids);
	part_incs(d, pt);
	pt->self = index_of(pt, d->me.id);
	pt->argv = msg.sub.argv; /* taken */
	pt->argc = (int)msg.sub.argc;
	msg.sub.argv = NULL;
	if (pt->self < 0 || pt->ids[pt->origin] != h->machine) {
		dm_log(d, "PART from machine %" PRIu32 ": not its origin, or "
			  "not for this machine", h->machine);
		part_free(pt);
		return;
	}
	vm_options_init(&o);
	o.check = msg.sub.check;
	o.memory = msg.sub.memory;
	o.max_threads = msg.sub.max_threads;
	o.stack_words = msg.sub.stack_words;
	o.max_depth = msg.sub.call_depth;
	o.spread_eager = msg.sub.eager;
	o.survive = msg.sub.survive;
	o.argc = pt->argc;
	o.argv = pt->argv;
	o.fd_in = o.fd_out = o.fd_err = d->null_fd;
	o.prog = "flock";
	if (vm_module_decode(msg.sub.module, msg.sub.module_len, &pt->m, &err) ||
	    vm_verify(pt->m, true, &err) ||
	    (rc = vm__proc_new(d->node, pt->m, &o, &pt->vp, &err)) != 0) {
		dm_log(d, "process %" PRIu64 " cannot spread here: %s", msg.pid,
		       err.msg);
		part_free(pt);
		return;
	}
	if (part_attach(pt, (long)msg.ncpu, &err) != 0) {
		dm_log(d, "process %" PRIu64 " cannot spread here: %s", msg.pid,
		       err.msg);
		vm__proc_abandon(pt->vp);
		vm_proc_free(pt->vp);
		part_free(pt);
		return;
	}
	uv_async_init(&d->loop, &pt->done, part_done_cb);
	pt->done.data = pt;
	if (pthread_create(&pt->waiter, NULL, waiter_main, pt) != 0) {
		vm_proc_kill(pt->vp, 70);
		waiter_main(pt);
	} else {
		pt->has_waiter = true;
	}
	pt->next = d->parts;
	d->parts = pt;
	dm_log(d, "process %" PRIu64 " has part %d of %d here", pt->pid,
	       pt->self, pt->nparts);
	deliver_early(d, pt);
}

/* ---- Receiving ---- */

static void deliver(struct dm_part *pt, uint32_t from_id, const uint8_t *p,
		    size_t n)
{
	int from = index_of(pt, from_id);

	if (from < 0 || from == pt->self || n < 9)
		return;
	if (p[8] == CH_DSM)
		dsm_gsrc_deliver(pt->g, from, p + 9, n - 9);
	else if (p[8] == CH_DIST)
		dist_deliver(pt->dp, from, p + 9, n - 9);
}

static void deliver_early(struct dm *d, struct dm_part *pt)
{
	struct dm_early **q = &d->early;

	while (*q != NULL) {
		struct dm_early *e = *q;
		if (e->pid != pt->pid) {
			q = &e->next;
			continue;
		}
		*q = e->next;
		d->nearly--;
		d->early_bytes -= e->len;
		deliver(pt, e->from, e->bytes, e->len);
		free(e);
	}
}

void dm_parts_tick(struct dm *d)
{
	uint64_t now = dm_now_ms();

	for (struct dm_part *pt = d->parts; pt != NULL; pt = pt->next) {
		struct dm_pstats s;
		if (pt->self == pt->origin || pt->waited ||
		    now - pt->stats_ms < STATS_MS)
			continue;
		part_snapshot(pt, &s);
		if (memcmp(&s, &pt->told, sizeof s) != 0)
			part_tell(pt, &s, false);
	}

	for (struct dm_early **q = &d->early; *q != NULL;) {
		struct dm_early *e = *q;
		if (now - e->ms < EARLY_MS) {
			q = &e->next;
			continue;
		}
		*q = e->next;
		d->nearly--;
		d->early_bytes -= e->len;
		free(e);
	}
}

static void on_proc(struct dm *d, const struct net_header *h,
		    const uint8_t *p)
{
	uint64_t pid = fl_load_u64(p);
	struct dm_part *pt = part_find(d, pid);
	const struct ctl_proc *cp;
	struct dm_early *e;

	if (pt != NULL) {
		deliver(pt, h->machine, p, h->length);
		return;
	}
	cp = ctl_proc_find(&d->st, pid);
	if ((cp != NULL && cp->state == CTL_P_ENDED) || d->nearly >= EARLY_MAX ||
	    d->early_bytes + h->length > EARLY_BYTES)
		return; /* over here, or too much to keep */
	e = malloc(sizeof *e + h->length);
	if (e == NULL)
		return;
	e->ms = dm_now_ms();
	e->pid = pid;
	e->from = h->machine;
	e->len = h->length;
	memcpy(e->bytes, p, h->length);
	e->next = d->early;
	d->early = e;
	d->nearly++;
	d->early_bytes += h->length;
}

void dm_part_frame(struct dm *d, const struct net_header *h, const uint8_t *p)
{
	struct dm_part *pt;
	int i;

	switch (h->type) {
	case NET_MSG_PART:
		on_part(d, h, p);
		return;
	case NET_MSG_PROC:
		on_proc(d, h, p);
		return;
	case NET_MSG_PART_STATS:
	case NET_MSG_PART_QUIET:
		pt = part_find(d, fl_load_u64(p));
		if (pt == NULL || pt->self != pt->origin ||
		    (i = index_of(pt, h->machine)) < 0 || pt->quiet[i])
			return;
		if (h->length > 8) {
			struct dm_pstats s;
			struct fl_err err;
			if (dm_pstats_decode(p + 8, h->length - 8, &s, &err) == 0)
				pt->said[i] = s;
			else
				dm_log(d, "from machine %" PRIu32 ": %s",
				       h->machine, err.msg);
		}
		if (h->type == NET_MSG_PART_STATS)
			return;
		part_quiet(pt, i);
		if (pt->release != NULL) /* the origin's own is quiet too */
			dm_part_origin_done(pt, pt->release, pt->release_arg);
		return;
	case NET_MSG_PART_FREE:
		pt = part_find(d, fl_load_u64(p));
		if (pt == NULL || pt->self == pt->origin ||
		    pt->ids[pt->origin] != h->machine)
			return;
		pt->free_asked = true;
		part_maybe_free(pt);
		return;
	}
}

/* ---- Machines lost ---- */

void dm_parts_machine_lost(struct dm *d, uint32_t id, uint32_t incarnation)
{
	struct dm_part *pt, *next;

	for (pt = d->parts; pt != NULL; pt = next) {
		int i = index_of(pt, id);
		next = pt->next;
		if (i < 0 || i == pt->self || pt->incs[i] > incarnation)
			continue; /* not there, or with a newer incarnation */
		if (pt->self == pt->origin && pt->vp != NULL &&
		    pt->vp->opt.survive) {
			dm_log(d, "process %" PRIu64 " survives the loss of "
				  "machine %" PRIu32, pt->pid, id);
			/* what it ran there is gone (ps) */
			pt->said[i].threads = 0;
			pt->said[i].memory = 0;
		} else if (pt->self == pt->origin) {
			char line[160];
			snprintf(line, sizeof line,
				 "flock: process %" PRIu64 " lost with machine m%" PRIu32
				 ", which ran some of its threads or held some "
				 "of its memory\n",
				 pt->pid, id);
			dm_log(d, "process %" PRIu64 " lost with machine %" PRIu32,
			       pt->pid, id);
			if (pt->vp != NULL)
				vm_proc_kill_line(pt->vp, DM_LOST_STATUS, line);
		} else if (i == pt->origin) {
			dm_log(d, "process %" PRIu64 ": its origin, machine "
				  "%" PRIu32 ", was lost: its part here ends",
			       pt->pid, id);
			if (pt->vp != NULL)
				vm_proc_kill(pt->vp, DM_LOST_STATUS);
		}
		/* What its threads here wait for there resumes (and faults, in
		 * a process that has ended), so the part can become quiet. */
		if (pt->g != NULL)
			dsm_gsrc_node_lost(pt->g, i);
		if (pt->dp != NULL)
			dist_part_lost(pt->dp, i);
		if (pt->self == pt->origin) {
			part_quiet(pt, i); /* it will say nothing more */
			if (pt->release != NULL) /* its process waits on that */
				dm_part_origin_done(pt, pt->release,
						    pt->release_arg);
		} else if (i == pt->origin) {
			pt->free_asked = true; /* no PART_FREE will come */
			part_maybe_free(pt);
		}
	}
}

/* Every other part of @pt's process is gone for it: what its threads
 * wait for elsewhere resumes (and faults, the process having ended). */
static void part_all_lost(struct dm_part *pt)
{
	for (int i = 0; i < pt->nparts; i++) {
		if (i == pt->self)
			continue;
		if (pt->g != NULL)
			dsm_gsrc_node_lost(pt->g, i);
		if (pt->dp != NULL)
			dist_part_lost(pt->dp, i);
	}
}

void dm_parts_fenced(struct dm *d)
{
	struct dm_part *pt, *next;

	dm_procs_fenced(d); /* the processes that began here end first */
	for (pt = d->parts; pt != NULL; pt = next) {
		next = pt->next;
		if (pt->self != pt->origin && pt->vp != NULL)
			vm_proc_kill(pt->vp, DM_LOST_STATUS);
		part_all_lost(pt);
		if (pt->self == pt->origin) {
			/* dm_proc's, ended above; the other machines ended
			 * their parts as they heard of the loss: none will say
			 * it is quiet */
			for (int i = 0; i < pt->nparts; i++)
				if (i != pt->self)
					part_quiet(pt, i);
			if (pt->release != NULL)
				dm_part_origin_done(pt, pt->release,
						    pt->release_arg);
			continue;
		}
		pt->free_asked = true;
		part_maybe_free(pt);
	}
}

/* ---- Life ---- */

int dm_parts_init(struct dm *d, struct fl_err *err)
{
	d->null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (d->null_fd < 0)
		return fl_err_set(err, FL_EIO, "/dev/null: %s", strerror(errno));
	d->loop_thread = pthread_self();
	if (dm_sess_init(d) != 0)
		return fl_err_set(err, FL_EIO, "cannot make an async handle");
	d->parts_ready = true;
	return 0;
}

void dm_parts_close(struct dm *d)
{
	uint64_t until = dm_now_ms() + 10000;
	bool waiting = true;

	if (!d->parts_ready)
		return;
	/* Parts elsewhere: end them and wait for their ends. */
	for (struct dm_part *pt = d->parts; pt != NULL; pt = pt->next)
		if (pt->self != pt->origin && pt->vp != NULL)
			vm_proc_kill(pt->vp, 70);
	while (waiting && dm_now_ms() < until) {
		waiting = false;
		for (struct dm_part *pt = d->parts; pt != NULL; pt = pt->next)
			waiting |= pt->self != pt->origin && !pt->waited;
		if (waiting)
			uv_run(&d->loop, UV_RUN_ONCE);
	}
	while (d->parts != NULL) {
		struct dm_part *pt = d->parts;
		if (pt->self == pt->origin) {
			/* its process is dm_proc.c's, freed there */
			part_unlink(d, pt);
			part_free(pt);
			continue;
		}
		if (!pt->waited) { /* cannot free a part still running */
			dm_log(d, "process %" PRIu64 "'s part did not end",
			       pt->pid);
			part_unlink(d, pt);
			continue;
		}
		pt->free_asked = true;
		part_maybe_free(pt);
	}
	while (d->early != NULL) {
		struct dm_early *e = d->early;
		d->early = e->next;
		free(e);
	}
	close(d->null_fd);
}
