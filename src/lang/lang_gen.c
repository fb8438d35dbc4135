/* The .fl code generator: name resolution, constant folding and
 * instruction selection, from the AST (lang_parse.c) to a struct vm_module.
 *
 * Owns: the module layout -- one function per `fn` in item order (so calls
 * may precede definitions), one .data word per `global` (symbol = its
 * name), one .rodata symbol "$sN" per string literal (NUL-terminated);
 * frame slots (parameters 0..n-1, then one slot per `var` and two per
 * `for`, never reused); block scopes; the line table (an entry whenever
 * the source line changes); the builtin table (name -> instruction, arity
 * and result from vm_opinfo). Beyond the SPEC list the builtins include
 * ltu leu gtu geu (unsigned comparisons) and divu modu shr (unsigned
 * division and logical shift, which print's prelude needs too).
 *
 * Conventions: every expression leaves exactly one word; a statement
 * leaves none (calls used as statements are followed by `drop`; a builtin
 * whose instruction pushes nothing yields 0 when used as a value). `>>` is
 * arithmetic (sar), comparisons signed. A function ends with `push 0;
 * ret`. Constant subexpressions (literals, consts, operators on them) are
 * folded; division by a constant zero is left to the runtime except in a
 * const/global initialiser, where it is an error.
 *
 * Time and depth: linear in the AST, whatever its shape. Items and locals
 * are found by hash; each node is folded once. No pass recurses deeper
 * than the parser's nesting limit (lang_fl.h): chains of operators and
 * indexes are walked with a stack (see Chains), else-ifs and constants
 * defined through each other with loops.
 *
 * Failure modes: unknown names, duplicates, wrong argument counts,
 * break/continue outside a loop, bad assignment targets, non-constant
 * initialisers and bad print formats are reported with lang__error() and
 * generation goes on (no module is built). Out of memory sets c->nomem.
 * Data symbol operands are patched at the end, once the symbol order
 * (rodata first, then data) is known. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "lang/lang_fl.h"
#include "vm/vm.h"

#define NO_LOCAL UINT32_MAX

/* A variable in scope. Locals are a stack (g->locals) and a hash of
 * buckets, each the index of the latest local hashed there, chained
 * through @next to earlier ones: so the first match in a bucket is the
 * innermost, and the local a scope pops is always its bucket's head. */
struct local {
	const char *name;
	size_t nlen;
	uint32_t slot;
	uint32_t depth; /* block depth it was declared at */
	uint32_t next;  /* the local before it in its bucket, or NO_LOCAL */
};

struct fix {
	uint32_t pos; /* operand offset in code */
	uint32_t seg; /* enum vm_segment */
	uint32_t idx; /* index within that segment's symbols */
};

struct loop {
	struct fl_buf breaks; /* uint32_t operand positions */
	struct fl_buf conts;
	uint32_t cont_target; /* code offset, when known */
	bool cont_known;
};

struct gen {
	struct lang_comp *c;
	struct lang_node **items;
	size_t nitems;
	struct lang_node **tab; /* open addressing by name: first definition */
	size_t tabcap;        /* a power of two, > 2 * nitems */
	struct fl_buf code, lines, rodata, fixes;
	struct fl_buf rsyms; /* uint32_t offsets of "$sN" */
	uint32_t *stab;	     /* string literal -> "$sN" (see string()) */
	size_t stabcap;
	struct fl_buf funcs; /* struct vm_function (name borrowed) */
	uint32_t nglobals;
	/* line table files: c->files index -> module file index (UINT32_MAX
	 * until first used), and back */
	uint32_t *fmap;
	uint16_t *forder;
	uint32_t nmfiles;
	/* the current function */
	uint32_t fstart;
	struct fl_buf locals; /* struct local */
	uint32_t *lbuckets;   /* see struct local; NO_LOCAL when empty */
	size_t nlbuckets;     /* a power of two, >= the locals, or 0 */
	uint32_t nslots, depth;
	struct fl_buf chain; /* struct lang_node *[]: see Chains */
	struct loop *loop;
	bool noscope; /* folding a const/global initialiser */
};

/* ---- Builtins ---- */

static const struct {
	const char *name;
	enum vm_op op;
} builtins[] = {
	{"alloc", VM_OP_ALLOC},   {"galloc", VM_OP_GALLOC},
	{"free", VM_OP_FREE},     {"load8", VM_OP_LD8},
	{"load16", VM_OP_LD16},   {"load32", VM_OP_LD32},
	{"load64", VM_OP_LD64},   {"store8", VM_OP_ST8},
	{"store16", VM_OP_ST16},  {"store32", VM_OP_ST32},
	{"store64", VM_OP_ST64},  {"copy", VM_OP_COPY},
	{"fill", VM_OP_FILL},     {"join", VM_OP_JOIN},
	{"self", VM_OP_SELF},     {"yield", VM_OP_YIELD},
	{"cas", VM_OP_CAS},       {"xadd", VM_OP_XADD},
	{"xchg", VM_OP_XCHG},     {"fence", VM_OP_FENCE},
	{"wait", VM_OP_WAIT},     {"wake", VM_OP_WAKE},
	{"lock", VM_OP_LOCK},     {"unlock", VM_OP_UNLOCK},
	{"exit", VM_OP_EXIT},     {"trap", VM_OP_TRAP},
	{"write", VM_OP_WRITE},   {"read", VM_OP_READ},
	{"open", VM_OP_OPEN},     {"seek", VM_OP_SEEK},
	{"close", VM_OP_CLOSE},   {"sync", VM_OP_SYNC},
	{"stat", VM_OP_STAT},     {"mkdir", VM_OP_MKDIR},
	{"remove", VM_OP_REMOVE}, {"rename", VM_OP_RENAME},
	{"list", VM_OP_LIST},     {"setattr", VM_OP_SETATTR},
	{"clock", VM_OP_CLOCK},   {"node", VM_OP_NODE},
	{"ncpu", VM_OP_NCPU},     {"argc", VM_OP_ARGC},
	{"argv", VM_OP_ARGV},     {"ltu", VM_OP_LTU},
	{"leu", VM_OP_LEU},       {"gtu", VM_OP_GTU},
	{"geu", VM_OP_GEU},       {"divu", VM_OP_DIVU},
	{"modu", VM_OP_MODU},     {"shr", VM_OP_SHR},
};

static bool same(const char *a, size_t an, const char *b)
{
	return strlen(b) == an && memcmp(a, b, an) == 0;
}

static int builtin(const char *name, size_t n)
{
	for (size_t i = 0; i < sizeof builtins / sizeof *builtins; i++)
		if (same(name, n, builtins[i].name))
			return (int)i;
	return -1;
}

static bool is_print(const char *name, size_t n)
{
	return same(name, n, "print") || same(name, n, "eprint");
}

/* ---- Names ---- */

static void err(struct gen *g, const struct lang_node *nd, const char *fmt,
		...) __attribute__((format(printf, 3, 4)));

static void err(struct gen *g, const struct lang_node *nd, const char *fmt,
		...)
{
	char msg[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	lang__error(g->c, nd->file, nd->line, nd->col, "%s", msg);
}

#define NM(nd) (int)((nd)->nlen > 60 ? 60 : (nd)->nlen), (nd)->name

static uint64_t hash(const char *p, size_t n)
{
	uint64_t h = 1469598103934665603u;

	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)p[i]) * 1099511628211u;
	return h;
}

/* Index the items by name (the first of duplicates wins) and number the
 * functions and globals in item order. */
static void index_items(struct gen *g)
{
	uint32_t nf = 0, ng = 0;

	g->tabcap = 16;
	while (g->tabcap <= 2 * g->nitems)
		g->tabcap *= 2;
	g->tab = calloc(g->tabcap, sizeof *g->tab);
	if (g->tab == NULL) {
		g->c->nomem = true;
		return;
	}
	for (size_t i = 0; i < g->nitems; i++) {
		struct lang_node *it = g->items[i];
		size_t k = hash(it->name, it->nlen) & (g->tabcap - 1);
		it->index = it->kind == FN_FUNC ? nf++ : ng;
		ng += it->kind == FN_GLOBAL;
		while (g->tab[k] != NULL &&
		       !(g->tab[k]->nlen == it->nlen &&
			 memcmp(g->tab[k]->name, it->name, it->nlen) == 0))
			k = (k + 1) & (g->tabcap - 1);
		if (g->tab[k] == NULL)
			g->tab[k] = it;
	}
}

/* The item named @name, or NULL; *@index is its function or global
 * index. */
static struct lang_node *item(struct gen *g, const char *name, size_t n,
			    uint32_t *index)
{
	if (g->tab == NULL)
		return NULL;
	size_t k = hash(name, n) & (g->tabcap - 1);
	for (; g->tab[k] != NULL; k = (k + 1) & (g->tabcap - 1)) {
		struct lang_node *it = g->tab[k];
		if (it->nlen == n && memcmp(it->name, name, n) == 0) {
			if (index != NULL)
				*index = it->index;
			return it;
		}
	}
	return NULL;
}

static uint32_t *bucket(struct gen *g, const char *name, size_t n)
{
	return &g->lbuckets[hash(name, n) & (g->nlbuckets - 1)];
}

static struct local *local(struct gen *g, const char *name, size_t n)
{
	struct local *l = (struct local *)(void *)g->locals.data;

	if (g->noscope || g->nlbuckets == 0)
		return NULL;
	for (uint32_t k = *bucket(g, name, n); k != NO_LOCAL; k = l[k].next)
		if (l[k].nlen == n && memcmp(l[k].name, name, n) == 0)
			return &l[k];
	return NULL;
}

/* At least as many buckets as locals, one more included: rehashed in
 * declaration order, so each bucket's chain stays newest first. */
static bool local_room(struct gen *g)
{
	struct local *l = (struct local *)(void *)g->locals.data;
	size_t n = g->locals.len / sizeof *l;

	if (n < g->nlbuckets)
		return true;
	size_t cap = g->nlbuckets ? 2 * g->nlbuckets : 64;
	uint32_t *b = malloc(cap * sizeof *b);
	if (b == NULL) {
		g->c->nomem = true;
		return false;
	}
	memset(b, 0xff, cap * sizeof *b); /* NO_LOCAL */
	free(g->lbuckets);
	g->lbuckets = b;
	g->nlbuckets = cap;
	for (size_t k = 0; k < n; k++) {
		uint32_t *h = bucket(g, l[k].name, l[k].nlen);
		l[k].next = *h;
		*h = (uint32_t)k;
	}
	return true;
}

static bool declare(struct gen *g, const struct lang_node *nd, uint32_t *slot)
{
	struct local *l = local(g, nd->name, nd->nlen);

	if (l != NULL && l->depth == g->depth) {
		err(g, nd, "'%.*s' is already declared in this scope", NM(nd));
		return false;
	}
	if (g->nslots >= VM_FRAME_MAX) {
		err(g, nd, "too many variables in one function");
		return false;
	}
	if (!local_room(g))
		return false;
	uint32_t *h = bucket(g, nd->name, nd->nlen);
	struct local nl = {nd->name, nd->nlen, g->nslots, g->depth, *h};
	fl_buf_put(&g->locals, &nl, sizeof nl);
	if (g->locals.failed) {
		g->c->nomem = true;
		return false;
	}
	*h = (uint32_t)(g->locals.len / sizeof nl - 1);
	*slot = g->nslots++;
	return true;
}

static void scope_close(struct gen *g)
{
	struct local *l = (struct local *)(void *)g->locals.data;
	size_t k = g->locals.len / sizeof *l;

	while (k > 0 && l[k - 1].depth == g->depth) {
		k--;
		*bucket(g, l[k].name, l[k].nlen) = l[k].next;
	}
	g->locals.len = k * sizeof *l;
	g->depth--;
}

/* ---- Emitting ---- */

static void emit(struct gen *g, const struct lang_node *nd, enum vm_op op,
		 int64_t v)
{
	size_t nl = g->lines.len / sizeof(struct vm_line);
	struct vm_line *ls = (struct vm_line *)(void *)g->lines.data;
	uint32_t line = nd->line ? nd->line : 1;
	uint32_t *file = &g->fmap[nd->file];

	if (*file == UINT32_MAX) { /* files are numbered by first use */
		g->forder[g->nmfiles] = nd->file;
		*file = ++g->nmfiles;
	}
	if (nl == 0 || ls[nl - 1].line != line || ls[nl - 1].file != *file) {
		struct vm_line e = {(uint32_t)g->code.len, line, *file};
		fl_buf_put(&g->lines, &e, sizeof e);
	}
	vm_insn_encode(&g->code, op, v);
}

static void put_u32(uint8_t *q, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		q[i] = (uint8_t)(v >> (8 * i));
}

/* A jump to be patched; returns its operand position. */
static uint32_t jump(struct gen *g, const struct lang_node *nd, enum vm_op op)
{
	emit(g, nd, op, 0);
	return (uint32_t)g->code.len - 4;
}

static void patch(struct gen *g, uint32_t pos, uint32_t target)
{
	if (!g->code.failed)
		put_u32(g->code.data + pos, target - g->fstart);
}

static uint32_t here(const struct gen *g)
{
	return (uint32_t)g->code.len;
}

static void push_addr(struct gen *g, const struct lang_node *nd, uint32_t seg,
		      uint32_t idx)
{
	emit(g, nd, VM_OP_PUSHA, 0);
	struct fix f = {(uint32_t)g->code.len - 4, seg, idx};
	fl_buf_put(&g->fixes, &f, sizeof f);
}

/* ---- Chains ----
 * A chain of binary operators (`a + b + ...`, each node the left operand
 * @a of the next) or of indexes (`p[i][j]...`) is as long as the source
 * (lang_fl.h). fold() and expr() walk down it with g->chain, a stack of
 * the nodes above, and handle each node on the way back up, recursing
 * only into the other children. Each walk pushes above the stack's top as
 * it found it and leaves it so. */

static bool is_operator(const struct lang_node *nd)
{
	return nd->kind == FN_BINARY || nd->kind == FN_ANDAND ||
	       nd->kind == FN_OROR;
}

static bool chain_push(struct gen *g, struct lang_node *nd)
{
	fl_buf_put(&g->chain, &nd, sizeof nd);
	if (g->chain.failed)
		g->c->nomem = true;
	return !g->chain.failed;
}

static struct lang_node *chain_pop(struct gen *g)
{
	struct lang_node *nd;

	g->chain.len -= sizeof nd;
	memcpy(&nd, g->chain.data + g->chain.len, sizeof nd);
	return nd;
}

/* ---- Constant folding ---- */

static bool fold(struct gen *g, struct lang_node *nd, int64_t *v, bool report);

static bool fold_binary(struct gen *g, struct lang_node *nd, uint64_t a,
			uint64_t b, int64_t *v, bool report)
{
	int64_t sa = (int64_t)a, sb = (int64_t)b;
	uint64_t r;

	switch (nd->op) {
	case FT_OR: r = a | b; break;
	case FT_XOR: r = a ^ b; break;
	case FT_AND: r = a & b; break;
	case FT_EQ: r = a == b; break;
	case FT_NE: r = a != b; break;
	case FT_LT: r = sa < sb; break;
	case FT_LE: r = sa <= sb; break;
	case FT_GT: r = sa > sb; break;
	case FT_GE: r = sa >= sb; break;
	case FT_SHL: r = a << (b & 63); break;
	case FT_SHR:
		r = (uint64_t)(sa < 0 ? ~(~sa >> (b & 63)) : sa >> (b & 63));
		break;
	case FT_PLUS: r = a + b; break;
	case FT_MINUS: r = a - b; break;
	case FT_STAR: r = a * b; break;
	case FT_SLASH:
	case FT_PERCENT:
		if (b == 0) {
			if (report)
				err(g, nd, "division by zero in a constant "
					   "expression");
			return false;
		}
		if (sb == -1)
			r = nd->op == FT_SLASH ? 0 - a : 0;
		else
			r = (uint64_t)(nd->op == FT_SLASH ? sa / sb : sa % sb);
		break;
	default:
		return false;
	}
	*v = (int64_t)r;
	return true;
}

/* A constant's value. resolve_consts() has folded every constant before
 * any other fold() runs, dependencies first; one still being folded (state
 * 1) is in a cycle, reported there, and reads as 0. */
static int64_t const_value(const struct lang_node *it)
{
	return it->state == 2 && !it->bad ? it->val : 0;
}

/* One node that is not an operator. */
static bool fold_node(struct gen *g, struct lang_node *nd, int64_t *v,
		      bool report)
{
	int64_t a;

	switch (nd->kind) {
	case FN_NUM:
		*v = nd->val;
		return true;
	case FN_NAME: {
		if (local(g, nd->name, nd->nlen) != NULL)
			return false;
		struct lang_node *it = item(g, nd->name, nd->nlen, NULL);
		if (it != NULL && it->kind == FN_CONST) {
			*v = const_value(it);
			return true;
		}
		if (report) {
			if (it == NULL)
				err(g, nd, "unknown name '%.*s'", NM(nd));
			else
				err(g, nd, "'%.*s' is not a constant", NM(nd));
		}
		return false;
	}
	case FN_UNARY:
		if (!fold(g, nd->a, &a, report))
			return false;
		*v = nd->op == FT_MINUS ? (int64_t)(0 - (uint64_t)a)
		     : nd->op == FT_TILDE ? ~a
					  : a == 0;
		return true;
	default:
		if (report)
			err(g, nd, "not a constant expression");
		return false;
	}
}

/* An operator whose left operand is folded. The right one is folded here
 * too (reported even when the left one is not a constant). */
static bool fold_operator(struct gen *g, struct lang_node *nd, int64_t *v,
			  bool report)
{
	int64_t a = nd->a->cval, b;
	bool okA = nd->a->fold == LANG_FOLD_CONST;
	bool okB = fold(g, nd->b, &b, report);

	if (!okA || !okB)
		return false;
	if (nd->kind == FN_ANDAND)
		*v = a != 0 && b != 0;
	else if (nd->kind == FN_OROR)
		*v = a != 0 || b != 0;
	else
		return fold_binary(g, nd, (uint64_t)a, (uint64_t)b, v, report);
	return true;
}

static void fold_keep(struct lang_node *nd, bool ok, const int64_t *v)
{
	nd->fold = ok ? LANG_FOLD_CONST : LANG_FOLD_NOT;
	nd->cval = ok ? *v : 0;
}

/* Fold @nd to a constant. With @report, explain why not (initialisers).
 * Each node is folded once, bottom-up, and keeps the result (nd->fold):
 * expr() asks at every node, so asking again must cost nothing or a long
 * sum would fold its left operand once per '+'. A node is folded in one
 * context only -- code in its scope, or an initialiser with @report and
 * no scope -- so the kept answer is always the one wanted. */
static bool fold(struct gen *g, struct lang_node *nd, int64_t *v, bool report)
{
	struct lang_node *top = nd;
	size_t base = g->chain.len;
	int64_t r = 0;
	bool ok;

	while (nd->fold == LANG_FOLD_NOT_YET && is_operator(nd)) {
		if (!chain_push(g, nd)) {
			fold_keep(nd, false, &r); /* out of memory */
			break;
		}
		nd = nd->a;
	}
	if (nd->fold == LANG_FOLD_NOT_YET) {
		ok = fold_node(g, nd, &r, report);
		fold_keep(nd, ok, &r);
	}
	while (g->chain.len > base) {
		nd = chain_pop(g);
		ok = fold_operator(g, nd, &r, report);
		fold_keep(nd, ok, &r);
	}
	*v = top->cval;
	return top->fold == LANG_FOLD_CONST;
}

/* ---- Constants ----
 * Every constant is folded before any code, those it names first: a
 * depth-first walk of "the initialiser of A names constant B" with an
 * explicit stack (constants defined through each other can chain as long
 * as the program). A constant met again while its walk is open is in a
 * cycle. */

/* A constant being resolved (state 1) and the constants it names,
 * deps[start..end), those from @next on still to look at. */
struct cframe {
	struct lang_node *it;
	size_t start, next, end;
};

/* Append to @deps the constants @nd names, as fold() would look them up
 * (no locals). Recurses where the parser nested. */
static void const_deps(struct gen *g, struct lang_node *nd,
		       struct fl_buf *deps)
{
	while (nd != NULL) {
		if (is_operator(nd)) {
			const_deps(g, nd->b, deps);
			nd = nd->a;
		} else if (nd->kind == FN_UNARY) {
			nd = nd->a;
		} else {
			struct lang_node *it =
				nd->kind == FN_NAME
					? item(g, nd->name, nd->nlen, NULL)
					: NULL;
			if (it != NULL && it->kind == FN_CONST)
				fl_buf_put(deps, &it, sizeof it);
			return;
		}
	}
}

static void const_open(struct gen *g, struct lang_node *it,
		       struct fl_buf *frames, struct fl_buf *deps)
{
	struct cframe f = {it, deps->len / sizeof it, deps->len / sizeof it, 0};

	it->state = 1;
	const_deps(g, it->a, deps);
	f.end = deps->len / sizeof it;
	fl_buf_put(frames, &f, sizeof f);
}

static void resolve_consts(struct gen *g)
{
	struct fl_buf frames, deps;

	fl_buf_init(&frames);
	fl_buf_init(&deps);
	for (size_t i = 0; i < g->nitems; i++) {
		struct lang_node *root = g->items[i];
		if (root->kind != FN_CONST || root->state != 0)
			continue;
		const_open(g, root, &frames, &deps);
		while (frames.len > 0 && !frames.failed && !deps.failed) {
			struct cframe *f =
				(struct cframe *)(void *)frames.data +
				(frames.len / sizeof *f - 1);
			struct lang_node **dv =
				(struct lang_node **)(void *)deps.data;
			if (f->next < f->end) {
				struct lang_node *d = dv[f->next++];
				if (d->state == 0) {
					const_open(g, d, &frames, &deps);
				} else if (d->state == 1 && !d->bad) {
					err(g, d, "constant '%.*s' depends on "
						  "itself", NM(d));
					d->bad = true;
				}
				continue;
			}
			struct lang_node *it = f->it;
			deps.len = f->start * sizeof it;
			frames.len -= sizeof *f;
			g->noscope = true;
			if (it->a == NULL || !fold(g, it->a, &it->val, true))
				it->bad = true;
			g->noscope = false;
			it->state = 2;
		}
	}
	if (frames.failed || deps.failed)
		g->c->nomem = true;
	fl_buf_close(&frames);
	fl_buf_close(&deps);
}

/* ---- Expressions ---- */

static void expr(struct gen *g, struct lang_node *nd);
static void call(struct gen *g, struct lang_node *nd, bool want);

static enum vm_op binop(int op)
{
	switch (op) {
	case FT_OR: return VM_OP_OR;
	case FT_XOR: return VM_OP_XOR;
	case FT_AND: return VM_OP_AND;
	case FT_EQ: return VM_OP_EQ;
	case FT_NE: return VM_OP_NE;
	case FT_LT: return VM_OP_LT;
	case FT_LE: return VM_OP_LE;
	case FT_GT: return VM_OP_GT;
	case FT_GE: return VM_OP_GE;
	case FT_SHL: case FT_SHL_ASSIGN: return VM_OP_SHL;
	case FT_SHR: case FT_SHR_ASSIGN: return VM_OP_SAR;
	case FT_PLUS: case FT_ADD_ASSIGN: return VM_OP_ADD;
	case FT_MINUS: case FT_SUB_ASSIGN: return VM_OP_SUB;
	case FT_STAR: case FT_MUL_ASSIGN: return VM_OP_MUL;
	case FT_SLASH: case FT_DIV_ASSIGN: return VM_OP_DIV;
	case FT_PERCENT: case FT_MOD_ASSIGN: return VM_OP_MOD;
	case FT_AND_ASSIGN: return VM_OP_AND;
	case FT_OR_ASSIGN: return VM_OP_OR;
	case FT_XOR_ASSIGN: return VM_OP_XOR;
	default: return VM_OP_ADD;
	}
}

static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325u; /* FNV-1a */

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3u;
	return h;
}

/* The rodata symbol of a string literal: identical literals share one
 * (g->stab: open addressing, symbol index + 1, 0 empty). */
static void string(struct gen *g, struct lang_node *nd)
{
	const uint8_t *p = g->c->strs.data + nd->soff;
	size_t n = nd->slen + 1;
	uint32_t nsym = (uint32_t)(g->rsyms.len / sizeof(uint32_t));
	const uint32_t *offs = (const uint32_t *)(void *)g->rsyms.data;
	size_t i;

	if (2 * (size_t)(nsym + 1) > g->stabcap) {
		size_t cap = g->stabcap ? 2 * g->stabcap : 64;
		uint32_t *t = calloc(cap, sizeof *t);
		if (t == NULL) {
			g->c->nomem = true;
			return;
		}
		for (uint32_t k = 0; k < nsym; k++) {
			uint32_t end = k + 1 < nsym ? offs[k + 1]
						    : (uint32_t)g->rodata.len;
			i = hash_bytes(g->rodata.data + offs[k],
				       end - offs[k]) & (cap - 1);
			while (t[i] != 0)
				i = (i + 1) & (cap - 1);
			t[i] = k + 1;
		}
		free(g->stab);
		g->stab = t;
		g->stabcap = cap;
	}
	for (i = hash_bytes(p, n) & (g->stabcap - 1); g->stab[i] != 0;
	     i = (i + 1) & (g->stabcap - 1)) {
		uint32_t k = g->stab[i] - 1;
		uint32_t end = k + 1 < nsym ? offs[k + 1]
					    : (uint32_t)g->rodata.len;
		if (end - offs[k] == n &&
		    memcmp(g->rodata.data + offs[k], p, n) == 0) {
			push_addr(g, nd, VM_SEG_RODATA, k);
			return;
		}
	}
	uint32_t off = (uint32_t)g->rodata.len;
	fl_buf_put(&g->rsyms, &off, sizeof off);
	fl_buf_put(&g->rodata, p, n);
	if (g->rodata.failed || g->rsyms.failed) {
		g->c->nomem = true;
		return;
	}
	g->stab[i] = nsym + 1;
	push_addr(g, nd, VM_SEG_RODATA, nsym);
}

static void name(struct gen *g, struct lang_node *nd)
{
	struct local *l = local(g, nd->name, nd->nlen);
	uint32_t idx;

	if (l != NULL) {
		emit(g, nd, VM_OP_GET, l->slot);
		return;
	}
	struct lang_node *it = item(g, nd->name, nd->nlen, &idx);
	if (it != NULL && it->kind == FN_GLOBAL) {
		push_addr(g, nd, VM_SEG_DATA, idx);
		emit(g, nd, VM_OP_LD64, 0);
		return;
	}
	if (it != NULL && it->kind == FN_FUNC)
		err(g, nd, "function '%.*s' used as a value", NM(nd));
	else if (it == NULL && builtin(nd->name, nd->nlen) >= 0)
		err(g, nd, "builtin '%.*s' used as a value", NM(nd));
	else if (it == NULL)
		err(g, nd, "unknown name '%.*s'", NM(nd));
	emit(g, nd, VM_OP_PUSH, 0);
}

/* The rest of the address of p[i], p's value pushed: + 8 * i. */
static void index_offset(struct gen *g, struct lang_node *nd)
{
	int64_t i;

	if (fold(g, nd->b, &i, false)) {
		if (i != 0) {
			emit(g, nd, VM_OP_PUSH, (int64_t)((uint64_t)i * 8));
			emit(g, nd, VM_OP_ADD, 0);
		}
		return;
	}
	expr(g, nd->b);
	emit(g, nd, VM_OP_PUSH, 3);
	emit(g, nd, VM_OP_SHL, 0);
	emit(g, nd, VM_OP_ADD, 0);
}

/* addr of p[i] */
static void index_addr(struct gen *g, struct lang_node *nd)
{
	expr(g, nd->a);
	index_offset(g, nd);
}

/* The rest of a && b or a || b, a's value pushed: 0 or 1. */
static void logic(struct gen *g, struct lang_node *nd)
{
	bool and = nd->kind == FN_ANDAND;
	uint32_t j1, j2;

	j1 = jump(g, nd, and ? VM_OP_JZ : VM_OP_JNZ);
	expr(g, nd->b);
	emit(g, nd, VM_OP_PUSH, 0);
	emit(g, nd, VM_OP_NE, 0);
	j2 = jump(g, nd, VM_OP_JMP);
	patch(g, j1, here(g));
	emit(g, nd, VM_OP_PUSH, and ? 0 : 1);
	patch(g, j2, here(g));
}

/* The code of a chain node after its first child's (see Chains). */
static void chain_rest(struct gen *g, struct lang_node *nd)
{
	switch (nd->kind) {
	case FN_BINARY:
		expr(g, nd->b);
		emit(g, nd, binop(nd->op), 0);
		break;
	case FN_ANDAND:
	case FN_OROR:
		logic(g, nd);
		break;
	default: /* FN_INDEX */
		index_offset(g, nd);
		emit(g, nd, VM_OP_LD64, 0);
		break;
	}
}

/* Any expression but a chain node that is not a constant. */
static void operand(struct gen *g, struct lang_node *nd)
{
	int64_t v;
	uint32_t idx;

	if (fold(g, nd, &v, false)) {
		emit(g, nd, VM_OP_PUSH, v);
		return;
	}
	switch (nd->kind) {
	case FN_STR:
		string(g, nd);
		break;
	case FN_NAME:
		name(g, nd);
		break;
	case FN_ADDR: {
		struct lang_node *it = local(g, nd->name, nd->nlen) != NULL
					     ? NULL
					     : item(g, nd->name, nd->nlen, &idx);
		if (it != NULL && it->kind == FN_GLOBAL) {
			push_addr(g, nd, VM_SEG_DATA, idx);
			break;
		}
		if (it == NULL && local(g, nd->name, nd->nlen) == NULL &&
		    builtin(nd->name, nd->nlen) < 0)
			err(g, nd, "unknown name '%.*s'", NM(nd));
		else
			err(g, nd, "'&' needs a global, '%.*s' is not one",
			    NM(nd));
		emit(g, nd, VM_OP_PUSH, 0);
		break;
	}
	case FN_UNARY:
		expr(g, nd->a);
		if (nd->op == FT_MINUS) {
			emit(g, nd, VM_OP_NEG, 0);
		} else if (nd->op == FT_TILDE) {
			emit(g, nd, VM_OP_NOT, 0);
		} else {
			emit(g, nd, VM_OP_PUSH, 0);
			emit(g, nd, VM_OP_EQ, 0);
		}
		break;
	case FN_CALL:
	case FN_SPAWN:
		call(g, nd, true);
		break;
	default: /* out of memory in expr() */
		emit(g, nd, VM_OP_PUSH, 0);
		break;
	}
}

static void expr(struct gen *g, struct lang_node *nd)
{
	size_t base = g->chain.len;
	int64_t v;

	while ((is_operator(nd) || nd->kind == FN_INDEX) &&
	       !fold(g, nd, &v, false) && chain_push(g, nd))
		nd = nd->a;
	operand(g, nd);
	while (g->chain.len > base)
		chain_rest(g, chain_pop(g));
}

static void args(struct gen *g, struct lang_node *a)
{
	for (; a != NULL; a = a->next)
		expr(g, a);
}

/* print/eprint: $print(fd, fmt, [args...]) */
static void print(struct gen *g, struct lang_node *nd, bool want)
{
	struct lang_node *fmt = nd->a;
	int64_t want_args = 0;
	uint32_t pf;

	if (fmt == NULL || fmt->kind != FN_STR) {
		err(g, fmt ? fmt : nd,
		    "the format of '%.*s' must be a string literal", NM(nd));
		goto value;
	}
	const char *s = (const char *)g->c->strs.data + fmt->soff;
	if (memchr(s, 0, fmt->slen) != NULL) {
		err(g, fmt, "the format of '%.*s' contains a NUL byte (the "
			    "output would end there)", NM(nd));
		goto value;
	}
	for (size_t i = 0; i < fmt->slen; i++) {
		if (s[i] != '%')
			continue;
		char ch = i + 1 < fmt->slen ? s[++i] : 0;
		if (ch == 'd' || ch == 'u' || ch == 'x' || ch == 's' ||
		    ch == 'c') {
			want_args++;
		} else if (ch != '%') {
			if (ch > 0x20 && ch < 0x7f)
				err(g, fmt, "bad conversion '%%%c' in format",
				    ch);
			else
				err(g, fmt, "bad conversion in format (use "
					    "%%d %%u %%x %%s %%c or %%%%)");
			goto value;
		}
	}
	if (want_args != nd->val - 1) {
		err(g, nd, "format expects %lld argument%s, given %lld",
		    (long long)want_args, want_args == 1 ? "" : "s",
		    (long long)(nd->val - 1));
		goto value;
	}
	if (item(g, "$print", 6, &pf) == NULL)
		goto value; /* only without the prelude, after errors */
	emit(g, nd, VM_OP_PUSH, same(nd->name, nd->nlen, "print") ? 1 : 2);
	expr(g, fmt);
	emit(g, nd, VM_OP_PUSH, want_args * 8);
	emit(g, nd, VM_OP_ALLOC, 0);
	int64_t k = 0;
	for (struct lang_node *a = fmt->next; a != NULL; a = a->next, k++) {
		emit(g, nd, VM_OP_DUP, 0);
		if (k > 0) {
			emit(g, nd, VM_OP_PUSH, k * 8);
			emit(g, nd, VM_OP_ADD, 0);
		}
		expr(g, a);
		emit(g, nd, VM_OP_ST64, 0);
	}
	emit(g, nd, VM_OP_CALL, pf);
	if (!want)
		emit(g, nd, VM_OP_DROP, 0);
	return;
value:
	/* Only after an error (no module is built): still resolve the
	 * arguments so their own errors are reported. */
	args(g, nd->a);
	if (want)
		emit(g, nd, VM_OP_PUSH, 0);
}

static void call(struct gen *g, struct lang_node *nd, bool want)
{
	uint32_t idx;
	struct lang_node *it = item(g, nd->name, nd->nlen, &idx);
	bool spawn = nd->kind == FN_SPAWN;

	if (it != NULL && it->kind == FN_FUNC) {
		if (it->bad) /* its parameters did not parse */
			goto value;
		if (it->val != nd->val) {
			err(g, nd, "'%.*s' takes %lld argument%s, given %lld",
			    NM(nd), (long long)it->val,
			    it->val == 1 ? "" : "s", (long long)nd->val);
			goto value;
		}
		args(g, nd->a);
		emit(g, nd, spawn ? VM_OP_SPAWN : VM_OP_CALL, idx);
		if (!want)
			emit(g, nd, VM_OP_DROP, 0);
		return;
	}
	int b = it == NULL ? builtin(nd->name, nd->nlen) : -1;
	if (it != NULL) {
		err(g, nd, "'%.*s' is not a function", NM(nd));
		goto value;
	}
	if (!spawn && is_print(nd->name, nd->nlen)) {
		print(g, nd, want);
		return;
	}
	if (b < 0 && !is_print(nd->name, nd->nlen)) {
		err(g, nd, "unknown function '%.*s'", NM(nd));
		goto value;
	}
	if (spawn) {
		err(g, nd, "cannot spawn builtin '%.*s'", NM(nd));
		goto value;
	}
	const struct vm_opinfo *oi = &vm_opinfo[builtins[b].op];
	if (oi->pops != nd->val) {
		err(g, nd, "'%.*s' takes %d argument%s, given %lld", NM(nd),
		    oi->pops, oi->pops == 1 ? "" : "s", (long long)nd->val);
		goto value;
	}
	args(g, nd->a);
	emit(g, nd, builtins[b].op, 0);
	if (oi->pushes > 0 && !want)
		emit(g, nd, VM_OP_DROP, 0);
	if (oi->pushes == 0 && want)
		emit(g, nd, VM_OP_PUSH, 0);
	return;
value:
	/* Only after an error (no module is built): still resolve the
	 * arguments so their own errors are reported. */
	args(g, nd->a);
	if (want)
		emit(g, nd, VM_OP_PUSH, 0);
}

/* ---- Statements ---- */

static void stmts(struct gen *g, struct lang_node *s);

static void block(struct gen *g, struct lang_node *b)
{
	g->depth++;
	stmts(g, b->a);
	scope_close(g);
}

static void assign(struct gen *g, struct lang_node *nd)
{
	struct lang_node *lhs = nd->a;
	bool plain = nd->op == FT_ASSIGN;
	uint32_t idx;

	if (lhs->kind == FN_NAME) {
		struct local *l = local(g, lhs->name, lhs->nlen);
		if (l != NULL) {
			uint32_t slot = l->slot;
			if (!plain)
				emit(g, nd, VM_OP_GET, slot);
			expr(g, nd->b);
			if (!plain)
				emit(g, nd, binop(nd->op), 0);
			emit(g, nd, VM_OP_SET, slot);
			return;
		}
		struct lang_node *it = item(g, lhs->name, lhs->nlen, &idx);
		if (it == NULL || it->kind != FN_GLOBAL) {
			if (it == NULL && builtin(lhs->name, lhs->nlen) < 0)
				err(g, lhs, "unknown name '%.*s'", NM(lhs));
			else if (it != NULL && it->kind == FN_CONST)
				err(g, lhs, "cannot assign to constant '%.*s'",
				    NM(lhs));
			else
				err(g, lhs, "cannot assign to function '%.*s'",
				    NM(lhs));
			return;
		}
		push_addr(g, nd, VM_SEG_DATA, idx);
	} else if (lhs->kind == FN_INDEX) {
		index_addr(g, lhs);
	} else {
		const struct lang_node *at = lhs;
		/* point at the start of the expression, not its operator */
		while (at->kind == FN_BINARY || at->kind == FN_ANDAND ||
		       at->kind == FN_OROR)
			at = at->a;
		err(g, at, "cannot assign to this expression");
		return;
	}
	if (!plain) {
		emit(g, nd, VM_OP_DUP, 0);
		emit(g, nd, VM_OP_LD64, 0);
	}
	expr(g, nd->b);
	if (!plain)
		emit(g, nd, binop(nd->op), 0);
	emit(g, nd, VM_OP_ST64, 0);
}

static void loop_end(struct gen *g, struct loop *lp, uint32_t cont,
		     uint32_t end)
{
	uint32_t *p = (uint32_t *)(void *)lp->breaks.data;
	for (size_t i = 0; i < lp->breaks.len / 4; i++)
		patch(g, p[i], end);
	p = (uint32_t *)(void *)lp->conts.data;
	for (size_t i = 0; i < lp->conts.len / 4; i++)
		patch(g, p[i], cont);
	if (lp->breaks.failed || lp->conts.failed)
		g->c->nomem = true;
	fl_buf_close(&lp->breaks);
	fl_buf_close(&lp->conts);
}

/* Loops test at the bottom, so each iteration runs one conditional
 * backward jump (the VM links `i += 1; i < hi; jnz` of a for loop into one
 * superinstruction):
 *         [for: a, b -> $hi, i]
 *         jmp test
 *   top:  body
 *   cont: [for: i += 1]              <- continue
 *   test: cond (for: i < $hi)
 *         jnz top
 *   exit:                            <- break */
static void loop_stmt(struct gen *g, struct lang_node *nd)
{
	struct loop lp, *outer = g->loop;
	uint32_t top, entry, cont, i = 0, hi = 0;
	bool ok = true;

	memset(&lp, 0, sizeof lp);
	fl_buf_init(&lp.breaks);
	fl_buf_init(&lp.conts);
	g->depth++;
	if (nd->kind == FN_FOR) {
		expr(g, nd->a);
		expr(g, nd->b);
		struct lang_node hid = *nd;
		hid.name = "$hi";
		hid.nlen = 3;
		ok = declare(g, &hid, &hi) && declare(g, nd, &i);
		if (ok) {
			emit(g, nd, VM_OP_SET, hi);
			emit(g, nd, VM_OP_SET, i);
		}
	}
	entry = jump(g, nd, VM_OP_JMP);
	top = here(g);
	g->loop = &lp;
	block(g, nd->kind == FN_FOR ? nd->c : nd->b);
	g->loop = outer;
	cont = here(g);
	if (nd->kind == FN_FOR && ok) {
		emit(g, nd, VM_OP_GET, i);
		emit(g, nd, VM_OP_PUSH, 1);
		emit(g, nd, VM_OP_ADD, 0);
		emit(g, nd, VM_OP_SET, i);
	}
	patch(g, entry, here(g));
	if (nd->kind == FN_WHILE)
		cont = here(g);
	if (nd->kind == FN_FOR) {
		if (ok) {
			emit(g, nd, VM_OP_GET, i);
			emit(g, nd, VM_OP_GET, hi);
			emit(g, nd, VM_OP_LT, 0);
		} else {
			emit(g, nd, VM_OP_PUSH, 0);
		}
	} else {
		expr(g, nd->a);
	}
	patch(g, jump(g, nd, VM_OP_JNZ), top);
	loop_end(g, &lp, cont, here(g));
	scope_close(g);
}

/* An else-if chain, in a loop: each branch but the last ends with a jump
 * to the end, patched when it is known. */
static void if_stmt(struct gen *g, struct lang_node *nd)
{
	struct fl_buf ends; /* uint32_t operand positions */
	uint32_t jelse, jend;

	fl_buf_init(&ends);
	for (;;) {
		expr(g, nd->a);
		jelse = jump(g, nd, VM_OP_JZ);
		block(g, nd->b);
		if (nd->c == NULL) {
			patch(g, jelse, here(g));
			break;
		}
		jend = jump(g, nd, VM_OP_JMP);
		fl_buf_put(&ends, &jend, sizeof jend);
		patch(g, jelse, here(g));
		if (nd->c->kind != FN_IF) {
			block(g, nd->c);
			break;
		}
		nd = nd->c;
	}
	for (size_t i = 0; i < ends.len / sizeof jend; i++) {
		memcpy(&jend, ends.data + i * sizeof jend, sizeof jend);
		patch(g, jend, here(g));
	}
	if (ends.failed)
		g->c->nomem = true;
	fl_buf_close(&ends);
}

static void stmt(struct gen *g, struct lang_node *nd)
{
	uint32_t slot;

	switch (nd->kind) {
	case FN_VAR:
		if (nd->a != NULL)
			expr(g, nd->a);
		else
			emit(g, nd, VM_OP_PUSH, 0);
		if (declare(g, nd, &slot))
			emit(g, nd, VM_OP_SET, slot);
		else
			emit(g, nd, VM_OP_DROP, 0);
		break;
	case FN_IF:
		if_stmt(g, nd);
		break;
	case FN_WHILE:
	case FN_FOR:
		loop_stmt(g, nd);
		break;
	case FN_BREAK:
	case FN_CONTINUE: {
		bool brk = nd->kind == FN_BREAK;
		if (g->loop == NULL) {
			err(g, nd, "'%s' outside a loop",
			    brk ? "break" : "continue");
			break;
		}
		uint32_t pos = jump(g, nd, VM_OP_JMP);
		fl_buf_put(brk ? &g->loop->breaks : &g->loop->conts, &pos,
			   sizeof pos);
		break;
	}
	case FN_RETURN:
		if (nd->a != NULL)
			expr(g, nd->a);
		else
			emit(g, nd, VM_OP_PUSH, 0);
		emit(g, nd, VM_OP_RET, 0);
		break;
	case FN_EXPR:
		if (nd->a->kind == FN_CALL || nd->a->kind == FN_SPAWN) {
			call(g, nd->a, false);
		} else {
			expr(g, nd->a);
			emit(g, nd, VM_OP_DROP, 0);
		}
		break;
	case FN_ASSIGN:
		assign(g, nd);
		break;
	case FN_BLOCK:
		block(g, nd);
		break;
	default:
		break;
	}
}

static void stmts(struct gen *g, struct lang_node *s)
{
	for (; s != NULL && !g->c->nomem; s = s->next)
		stmt(g, s);
}

static void function(struct gen *g, struct lang_node *fn)
{
	struct vm_function f;
	uint32_t slot;

	memset(&f, 0, sizeof f);
	g->fstart = here(g);
	g->nslots = 0;
	g->depth = 1; /* the locals are empty: the last function popped its */
	for (struct lang_node *p = fn->a; p != NULL; p = p->next)
		declare(g, p, &slot);
	if (fn->b != NULL)
		stmts(g, fn->b->a);
	/* the implicit `return 0`, on the line of the fn's name */
	emit(g, fn, VM_OP_PUSH, 0);
	emit(g, fn, VM_OP_RET, 0);
	f.name = (char *)fn; /* resolved to a name in build() */
	f.nargs = (uint32_t)fn->val;
	f.nlocals = g->nslots - f.nargs;
	f.code_off = g->fstart;
	f.code_len = here(g) - g->fstart;
	fl_buf_put(&g->funcs, &f, sizeof f);
	scope_close(g);
}

/* ---- Items and the module ---- */

static void check_items(struct gen *g)
{
	for (size_t i = 0; i < g->nitems; i++) {
		struct lang_node *it = g->items[i];
		struct lang_node *first = item(g, it->name, it->nlen, NULL);
		if (first != it && first->file == it->file)
			err(g, it, "'%.*s' is already defined at line %u",
			    NM(it), first->line);
		else if (first != it)
			err(g, it, "'%.*s' is already defined at %s:%u",
			    NM(it), g->c->files[first->file].path,
			    first->line);
		else if (builtin(it->name, it->nlen) >= 0 ||
			 is_print(it->name, it->nlen))
			err(g, it, "'%.*s' is a builtin", NM(it));
		else if (it->kind != FN_CONST && it->nlen > VM_NAME_MAX)
			/* functions and globals become module symbols */
			err(g, it, "name '%.40s...' is longer than %d bytes",
			    it->name, VM_NAME_MAX);
	}
}

/* The entry point: `fn main()` taking nothing. Only checked when all else
 * compiled, since a `main` that did not parse may be missing from the
 * items. */
static void check_main(struct gen *g)
{
	struct lang_node *m = item(g, "main", 4, NULL);

	if (m != NULL && m->kind == FN_FUNC && m->val != 0)
		err(g, m, "'main' takes no parameters (use argc and argv)");
	if (g->c->nerrors > 0)
		return;
	if (m == NULL || m->kind != FN_FUNC)
		lang__error(g->c, m ? m->file : 0, m ? m->line : 1,
			  m ? m->col : 1,
			  m ? "'main' must be a function"
			    : "the program has no function 'main'");
}

static char *dup_name(struct gen *g, const char *p, size_t n)
{
	char *s = strndup(p, n);
	if (s == NULL)
		g->c->nomem = true;
	return s;
}

/* The bytes of @b as a malloc'd block of at least one byte. */
static uint8_t *take(struct gen *g, struct fl_buf *b, uint32_t *len)
{
	size_t n;
	uint8_t *p = fl_buf_take(b, &n);

	if (p == NULL)
		p = malloc(1);
	if (p == NULL)
		g->c->nomem = true;
	*len = (uint32_t)n;
	return p;
}

static struct vm_module *build(struct gen *g, struct fl_buf *data)
{
	struct vm_module *m = vm_module_new();
	uint32_t nr = (uint32_t)(g->rsyms.len / 4);
	size_t nf = g->funcs.len / sizeof(struct vm_function);
	size_t nl = g->lines.len / sizeof(struct vm_line);
	if (m == NULL)
		goto nomem;
	free(m->source);
	m->source = strdup(g->c->files[0].path);
	/* patch data symbol operands: rodata symbols first */
	struct fix *fx = (struct fix *)(void *)g->fixes.data;
	for (size_t i = 0; i < g->fixes.len / sizeof *fx; i++)
		put_u32(g->code.data + fx[i].pos,
			fx[i].seg == VM_SEG_RODATA ? fx[i].idx
						   : nr + fx[i].idx);
	m->syms = calloc(nr + g->nglobals + 1, sizeof *m->syms);
	m->funcs = calloc(nf + 1, sizeof *m->funcs);
	m->lines = calloc(nl + 1, sizeof *m->lines);
	if (m->source == NULL || m->syms == NULL || m->funcs == NULL ||
	    m->lines == NULL)
		goto nomem;
	for (uint32_t i = 0; i < nr; i++) {
		char nm[32];
		snprintf(nm, sizeof nm, "$s%u", i);
		struct vm_symbol *s = &m->syms[m->nsyms++];
		s->name = dup_name(g, nm, strlen(nm));
		s->segment = VM_SEG_RODATA;
		s->offset = ((uint32_t *)(void *)g->rsyms.data)[i];
	}
	uint32_t k = 0;
	for (size_t i = 0; i < g->nitems; i++) {
		struct lang_node *it = g->items[i];
		if (it->kind != FN_GLOBAL)
			continue;
		struct vm_symbol *s = &m->syms[m->nsyms++];
		s->name = dup_name(g, it->name, it->nlen);
		s->segment = VM_SEG_DATA;
		s->offset = 8 * k++;
	}
	struct vm_function *fs = (struct vm_function *)(void *)g->funcs.data;
	for (size_t i = 0; i < nf; i++) {
		const struct lang_node *fn = (const struct lang_node *)fs[i].name;
		m->funcs[i] = fs[i];
		m->funcs[i].name = dup_name(g, fn->name, fn->nlen);
		m->nfuncs++;
	}
	if (nl > 0)
		memcpy(m->lines, g->lines.data, nl * sizeof *m->lines);
	m->nlines = (uint32_t)nl;
	m->files = calloc(g->nmfiles + 1, sizeof *m->files);
	if (m->files == NULL)
		goto nomem;
	for (uint32_t i = 0; i < g->nmfiles; i++) {
		const char *path = g->c->files[g->forder[i]].path;
		m->files[m->nfiles++] = dup_name(g, path, strlen(path));
	}
	m->rodata = take(g, &g->rodata, &m->rodata_len);
	m->data = take(g, data, &m->data_len);
	m->code = take(g, &g->code, &m->code_len);
	if (g->c->nomem)
		goto nomem;
	return m;
nomem:
	g->c->nomem = true;
	vm_module_free(m);
	return NULL;
}

int lang__generate(struct lang_comp *c, struct vm_module **out)
{
	struct gen g;
	struct fl_buf data;

	memset(&g, 0, sizeof g);
	g.c = c;
	g.items = (struct lang_node **)(void *)c->items.data;
	g.nitems = c->items.len / sizeof(struct lang_node *);
	fl_buf_init(&g.code);
	fl_buf_init(&g.lines);
	fl_buf_init(&g.rodata);
	fl_buf_init(&g.fixes);
	fl_buf_init(&g.rsyms);
	fl_buf_init(&g.funcs);
	fl_buf_init(&g.locals);
	fl_buf_init(&g.chain);
	fl_buf_init(&data);
	g.fmap = malloc((c->nfiles + 1) * sizeof *g.fmap);
	g.forder = malloc((c->nfiles + 1) * sizeof *g.forder);
	if (g.fmap == NULL || g.forder == NULL) {
		free(g.fmap);
		free(g.forder);
		c->nomem = true;
		return FL_ENOMEM;
	}
	g.fmap[0] = 0; /* the module's source */
	for (size_t i = 1; i < c->nfiles; i++)
		g.fmap[i] = UINT32_MAX;
	index_items(&g);
	check_items(&g);
	check_main(&g);
	resolve_consts(&g);
	for (size_t i = 0; i < g.nitems; i++) {
		struct lang_node *it = g.items[i];
		int64_t v = 0;
		if (it->kind == FN_GLOBAL) {
			g.noscope = true;
			if (it->a != NULL)
				fold(&g, it->a, &v, true);
			g.noscope = false;
			fl_buf_put_u64(&data, (uint64_t)v);
			g.nglobals++;
		}
	}
	for (size_t i = 0; i < g.nitems && !c->nomem; i++)
		if (g.items[i]->kind == FN_FUNC)
			function(&g, g.items[i]);
	if (g.code.failed || g.lines.failed || g.rodata.failed ||
	    g.fixes.failed || g.rsyms.failed || g.funcs.failed ||
	    g.locals.failed || data.failed)
		c->nomem = true;
	if (g.code.len > VM_SEGMENT_MAX || g.rodata.len > VM_SEGMENT_MAX ||
	    data.len > VM_SEGMENT_MAX)
		lang__error(c, 0, 1, 1, "program too large");
	if (!c->nomem && c->nerrors == 0)
		*out = build(&g, &data);
	fl_buf_close(&g.code);
	fl_buf_close(&g.lines);
	fl_buf_close(&g.rodata);
	fl_buf_close(&g.fixes);
	fl_buf_close(&g.rsyms);
	fl_buf_close(&g.funcs);
	fl_buf_close(&g.locals);
	fl_buf_close(&g.chain);
	fl_buf_close(&data);
	free(g.tab);
	free(g.lbuckets);
	free(g.fmap);
	free(g.forder);
	free(g.stab);
	return c->nomem ? FL_ENOMEM : 0;
}
