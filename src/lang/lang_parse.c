/* The .fl parser: tokens to the AST, one file at a time, `use` included.
 *
 * Owns: the grammar (items, statements, expressions with C precedence),
 * node allocation (an arena freed with the compiler), the file table and
 * `use` (paths relative to the including file, each file once, compared by
 * realpath).
 *
 * Happy path: lang__parse_file() lexes the file, parses its items in order
 * and appends fn/const/global nodes to c->items; a `use` parses the other
 * file on the spot, so its items come before the rest of this file's.
 * Failure modes: a syntax error is reported at the offending token, then
 * the parser is in panic mode (no further reports) until it synchronises:
 * statements resynchronise after the next `;` or before a `}`, items
 * before the next `fn`/`const`/`global`/`use`. Out of memory sets c->nomem
 * and parsing winds down. Names are not resolved here (lang_gen.c).
 *
 * Nesting: each recursion of the parser passes through enter(), which
 * counts one level -- a parenthesis, an index, a call's arguments, a unary
 * operator's operand, a block -- and reports "nested too deeply (limit
 * LANG_NEST_MAX)" past the limit. The one recursion that does not,
 * binary() into a right operand of higher precedence, goes at most one
 * frame per precedence level deep by itself. So the C stack holds at most
 * a few dozen frames per level on any input. What the parser builds in a
 * loop takes no level and has no limit: a chain of binary operators (each
 * node the left operand of the next), a chain of indexes `p[i][j]`, an
 * else-if chain, lists of statements, arguments and items. The AST keeps
 * that shape (see lang_fl.h); every later pass walks those chains with
 * loops and recurses only where the parser did, so the same limit bounds
 * its depth. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "base/fl_error.h"
#include "lang/lang_fl.h"

#define USE_DEPTH_MAX 64
#define CHUNK_NODES 256

struct ps {
	struct lang_comp *c;
	uint16_t file;
	struct lang_tok *t;
	size_t n, i;
	bool panic;
	int nest; /* levels entered (enter()) */
};

/* One more level of nesting, opened by token @t; false (reported) past
 * LANG_NEST_MAX. Each successful enter() is paired with a leave(). */
static bool enter(struct ps *p, const struct lang_tok *t)
{
	if (p->nest >= LANG_NEST_MAX) {
		if (!p->panic)
			lang__error(p->c, p->file, t->line, t->col,
				  "nested too deeply (limit %d)",
				  LANG_NEST_MAX);
		p->panic = true;
		return false;
	}
	p->nest++;
	return true;
}

static void leave(struct ps *p)
{
	p->nest--;
}

struct lang_node *lang__node(struct lang_comp *c, enum lang_node_kind kind,
			 uint16_t file, uint32_t line, uint32_t col)
{
	if (c->chunk == NULL || c->chunk_used == CHUNK_NODES) {
		struct lang_node *ch = calloc(CHUNK_NODES, sizeof *ch);
		if (ch == NULL) {
			c->nomem = true;
			return NULL;
		}
		fl_buf_put(&c->arena, &ch, sizeof ch);
		if (c->arena.failed) {
			free(ch);
			c->nomem = true;
			return NULL;
		}
		c->chunk = ch;
		c->chunk_used = 0;
	}
	struct lang_node *nd = &c->chunk[c->chunk_used++];
	nd->kind = kind;
	nd->file = file;
	nd->line = line;
	nd->col = col;
	return nd;
}

int lang__add_file(struct lang_comp *c, char *path, char *src, size_t len)
{
	char *canon = realpath(path, NULL);

	if (canon == NULL)
		canon = strdup(path);
	if (canon == NULL || c->nfiles >= UINT16_MAX)
		goto fail;
	if (c->nfiles == c->capfiles) {
		size_t cap = c->capfiles ? 2 * c->capfiles : 8;
		struct lang_file *f = realloc(c->files, cap * sizeof *f);
		if (f == NULL)
			goto fail;
		c->files = f;
		c->capfiles = cap;
	}
	c->files[c->nfiles] = (struct lang_file){path, canon, src, len};
	return (int)c->nfiles++;
fail:
	free(canon);
	free(path);
	free(src);
	c->nomem = true;
	return -1;
}

static const struct lang_tok *cur(const struct ps *p)
{
	return &p->t[p->i];
}

static bool at(const struct ps *p, enum lang_tok_kind k)
{
	return p->t[p->i].kind == k;
}

static const struct lang_tok *advance(struct ps *p)
{
	const struct lang_tok *t = &p->t[p->i];
	if (t->kind != FT_EOF)
		p->i++;
	return t;
}

static bool accept(struct ps *p, enum lang_tok_kind k)
{
	if (!at(p, k))
		return false;
	advance(p);
	return true;
}

static void perr(struct ps *p, const struct lang_tok *t, const char *what)
{
	if (p->panic)
		return;
	p->panic = true;
	if (t->kind == FT_ERROR)
		return; /* the lexer has said why */
	if (t->kind == FT_EOF)
		lang__error(p->c, p->file, t->line, t->col,
			  "expected %s, found end of file", what);
	else
		lang__error(p->c, p->file, t->line, t->col,
			  "expected %s, found '%.*s'", what,
			  (int)(t->n > 40 ? 40 : t->n), t->p);
}

static bool expect(struct ps *p, enum lang_tok_kind k, const char *what)
{
	if (accept(p, k))
		return true;
	/* A missing ';' is reported just after the previous token. */
	if (k == FT_SEMI && p->i > 0 && !p->panic &&
	    cur(p)->kind != FT_ERROR &&
	    p->t[p->i - 1].line != cur(p)->line) {
		const struct lang_tok *pv = &p->t[p->i - 1];
		lang__error(p->c, p->file, pv->line, pv->col + (uint32_t)pv->n,
			  "expected ';' after '%.*s'",
			  (int)(pv->n > 40 ? 40 : pv->n), pv->p);
		/* Go on as if it were there: the next line is most likely a
		 * statement of its own, and may hold errors worth seeing. */
		return true;
	}
	perr(p, cur(p), what);
	return false;
}

static struct lang_node *mk(struct ps *p, enum lang_node_kind k,
			  const struct lang_tok *t)
{
	return lang__node(p->c, k, p->file, t->line, t->col);
}

static struct lang_node *expr(struct ps *p);

/* Comma-separated expressions up to ')'; the '(' is consumed. */
static struct lang_node *args(struct ps *p, int64_t *count)
{
	struct lang_node *head = NULL, **tail = &head;

	*count = 0;
	if (accept(p, FT_RPAREN))
		return head;
	do {
		struct lang_node *e = expr(p);
		if (e == NULL)
			return NULL;
		*tail = e;
		tail = &e->next;
		++*count;
	} while (accept(p, FT_COMMA));
	if (!expect(p, FT_RPAREN, "',' or ')'"))
		return NULL;
	return head ? head : NULL;
}

static bool same(const struct lang_tok *t, const char *s)
{
	return t->n == strlen(s) && memcmp(t->p, s, t->n) == 0;
}

static struct lang_node *call(struct ps *p, enum lang_node_kind k,
			    const struct lang_tok *name)
{
	struct lang_node *nd = mk(p, k, name);
	if (nd == NULL)
		return NULL;
	nd->name = name->p;
	nd->nlen = name->n;
	if (k == FN_CALL && (same(name, "print") || same(name, "eprint")))
		p->c->prints = true;
	if (!enter(p, advance(p) /* '(' */))
		return NULL;
	nd->a = args(p, &nd->val);
	leave(p);
	return p->panic ? NULL : nd;
}

static struct lang_node *primary(struct ps *p)
{
	const struct lang_tok *t = cur(p);
	struct lang_node *nd;

	switch (t->kind) {
	case FT_INT:
		advance(p);
		if ((nd = mk(p, FN_NUM, t)) != NULL)
			nd->val = (int64_t)t->val;
		return nd;
	case FT_STR:
		advance(p);
		if ((nd = mk(p, FN_STR, t)) != NULL) {
			nd->soff = t->soff;
			nd->slen = t->slen;
		}
		return nd;
	case FT_NAME:
		advance(p);
		if (at(p, FT_LPAREN))
			return call(p, FN_CALL, t);
		if ((nd = mk(p, FN_NAME, t)) != NULL) {
			nd->name = t->p;
			nd->nlen = t->n;
		}
		return nd;
	case FT_KW_SPAWN: {
		advance(p);
		const struct lang_tok *name = cur(p);
		if (!at(p, FT_NAME)) {
			perr(p, name, "a function name after 'spawn'");
			return NULL;
		}
		advance(p);
		if (!at(p, FT_LPAREN)) {
			perr(p, cur(p), "'('");
			return NULL;
		}
		nd = call(p, FN_SPAWN, name);
		if (nd != NULL) {
			nd->line = t->line;
			nd->col = t->col;
		}
		return nd;
	}
	case FT_LPAREN:
		advance(p);
		if (!enter(p, t))
			return NULL;
		nd = expr(p);
		leave(p);
		if (nd == NULL || !expect(p, FT_RPAREN, "')'"))
			return NULL;
		return nd;
	default:
		perr(p, t, "an expression");
		return NULL;
	}
}

static struct lang_node *postfix(struct ps *p)
{
	struct lang_node *e = primary(p);

	while (e != NULL && at(p, FT_LBRACK)) {
		const struct lang_tok *t = advance(p);
		struct lang_node *ix = mk(p, FN_INDEX, t);
		if (ix == NULL)
			return NULL;
		ix->a = e;
		if (!enter(p, t))
			return NULL;
		ix->b = expr(p);
		leave(p);
		if (ix->b == NULL || !expect(p, FT_RBRACK, "']'"))
			return NULL;
		e = ix;
	}
	return e;
}

static struct lang_node *unary(struct ps *p)
{
	const struct lang_tok *t = cur(p);
	struct lang_node *nd;

	if (t->kind == FT_MINUS || t->kind == FT_BANG || t->kind == FT_TILDE) {
		advance(p);
		if (!enter(p, t))
			return NULL;
		nd = mk(p, FN_UNARY, t);
		if (nd != NULL) {
			nd->op = t->kind;
			nd->a = unary(p);
			if (nd->a == NULL)
				nd = NULL;
		}
		leave(p);
	} else if (t->kind == FT_AND) {
		advance(p);
		const struct lang_tok *name = cur(p);
		nd = NULL;
		if (!at(p, FT_NAME)) {
			perr(p, name, "a global's name after '&'");
		} else if ((nd = mk(p, FN_ADDR, t)) != NULL) {
			advance(p);
			nd->name = name->p;
			nd->nlen = name->n;
		}
	} else {
		nd = postfix(p);
	}
	return nd;
}

static int prec(enum lang_tok_kind k)
{
	switch (k) {
	case FT_OROR: return 1;
	case FT_ANDAND: return 2;
	case FT_OR: return 3;
	case FT_XOR: return 4;
	case FT_AND: return 5;
	case FT_EQ: case FT_NE: return 6;
	case FT_LT: case FT_LE: case FT_GT: case FT_GE: return 7;
	case FT_SHL: case FT_SHR: return 8;
	case FT_PLUS: case FT_MINUS: return 9;
	case FT_STAR: case FT_SLASH: case FT_PERCENT: return 10;
	default: return 0;
	}
}

/* Operators of precedence @min and up. Left-associative: a chain
 * `a + b - c` is built in the loop, each node the left operand of the
 * next, so it takes no nesting level however long it is. A right operand
 * recurses with a higher @min (at most one frame per precedence level)
 * unless it nests through unary() or a parenthesis. */
static struct lang_node *binary(struct ps *p, int min)
{
	struct lang_node *l = unary(p);

	while (l != NULL && prec(cur(p)->kind) >= min) {
		const struct lang_tok *t = advance(p);
		int pr = prec(t->kind);
		struct lang_node *nd = mk(p, t->kind == FT_ANDAND ? FN_ANDAND
					   : t->kind == FT_OROR ? FN_OROR
								: FN_BINARY,
					t);
		if (nd == NULL)
			return NULL;
		nd->op = t->kind;
		nd->a = l;
		nd->b = binary(p, pr + 1);
		if (nd->b == NULL)
			return NULL;
		l = nd;
	}
	return l;
}

static struct lang_node *expr(struct ps *p)
{
	return binary(p, 1);
}

static struct lang_node *block(struct ps *p);
static struct lang_node *stmt(struct ps *p);

static bool is_assign(enum lang_tok_kind k)
{
	return k >= FT_ASSIGN && k <= FT_SHR_ASSIGN;
}

/* `if a {b} else if ... else {c}`: an else-if chain is built in a loop,
 * each `if` the else (c) of the one before. */
static struct lang_node *if_stmt(struct ps *p, const struct lang_tok *t)
{
	struct lang_node *head = NULL, **link = &head;

	for (;;) {
		struct lang_node *nd = mk(p, FN_IF, t);
		if (nd == NULL)
			return NULL;
		*link = nd;
		if ((nd->a = expr(p)) == NULL || (nd->b = block(p)) == NULL)
			return NULL;
		if (!accept(p, FT_KW_ELSE))
			return head;
		t = cur(p);
		if (!accept(p, FT_KW_IF))
			return (nd->c = block(p)) != NULL ? head : NULL;
		link = &nd->c;
	}
}

static struct lang_node *stmt(struct ps *p)
{
	const struct lang_tok *t = cur(p);
	struct lang_node *nd = NULL;

	switch (t->kind) {
	case FT_KW_VAR: {
		advance(p);
		const struct lang_tok *name = cur(p);
		if (!expect(p, FT_NAME, "a variable name"))
			return NULL;
		if ((nd = mk(p, FN_VAR, name)) == NULL)
			return NULL;
		nd->name = name->p;
		nd->nlen = name->n;
		/* Kept even when broken, so later uses are not unknown. */
		if (accept(p, FT_ASSIGN) && (nd->a = expr(p)) == NULL)
			return nd;
		expect(p, FT_SEMI, "';'");
		return nd;
	}
	case FT_KW_IF:
		advance(p);
		return if_stmt(p, t);
	case FT_KW_WHILE:
		advance(p);
		if ((nd = mk(p, FN_WHILE, t)) == NULL ||
		    (nd->a = expr(p)) == NULL || (nd->b = block(p)) == NULL)
			return NULL;
		return nd;
	case FT_KW_FOR: {
		advance(p);
		const struct lang_tok *name = cur(p);
		if (!expect(p, FT_NAME, "a loop variable"))
			return NULL;
		if ((nd = mk(p, FN_FOR, name)) == NULL)
			return NULL;
		nd->name = name->p;
		nd->nlen = name->n;
		if (!expect(p, FT_KW_IN, "'in'") || (nd->a = expr(p)) == NULL ||
		    !expect(p, FT_DOTDOT, "'..'") || (nd->b = expr(p)) == NULL ||
		    (nd->c = block(p)) == NULL)
			return NULL;
		return nd;
	}
	case FT_KW_BREAK:
	case FT_KW_CONTINUE:
		advance(p);
		nd = mk(p, t->kind == FT_KW_BREAK ? FN_BREAK : FN_CONTINUE, t);
		return expect(p, FT_SEMI, "';'") ? nd : NULL;
	case FT_KW_RETURN:
		advance(p);
		if ((nd = mk(p, FN_RETURN, t)) == NULL)
			return NULL;
		if (!at(p, FT_SEMI) && (nd->a = expr(p)) == NULL)
			return NULL;
		return expect(p, FT_SEMI, "';'") ? nd : NULL;
	case FT_LBRACE:
		return block(p);
	default:
		break;
	}
	struct lang_node *e = expr(p);
	if (e == NULL)
		return NULL;
	if (is_assign(cur(p)->kind)) {
		const struct lang_tok *op = advance(p);
		if ((nd = mk(p, FN_ASSIGN, op)) == NULL)
			return NULL;
		nd->op = op->kind;
		nd->a = e;
		if ((nd->b = expr(p)) == NULL)
			return NULL;
	} else {
		if ((nd = mk(p, FN_EXPR, t)) == NULL)
			return NULL;
		nd->a = e;
	}
	return expect(p, FT_SEMI, "';'") ? nd : NULL;
}

static bool item_start(enum lang_tok_kind k)
{
	return k == FT_KW_FN || k == FT_KW_CONST || k == FT_KW_GLOBAL ||
	       k == FT_KW_USE;
}

/* After a bad statement: past the next ';', or up to a '}' or an item. */
static void sync_stmt(struct ps *p)
{
	int depth = 0;

	while (!at(p, FT_EOF) && !item_start(cur(p)->kind)) {
		if (at(p, FT_LBRACE))
			depth++;
		if (at(p, FT_RBRACE)) {
			if (depth == 0)
				break;
			depth--;
		}
		if (advance(p)->kind == FT_SEMI && depth == 0)
			break;
	}
	p->panic = false;
}

static struct lang_node *block(struct ps *p)
{
	const struct lang_tok *t = cur(p);
	struct lang_node *nd, **tail;

	if (!at(p, FT_LBRACE)) {
		perr(p, t, "'{'");
		return NULL;
	}
	/* Too deep, the '{' is left for sync_stmt() to skip with its '}'. */
	if (!enter(p, t))
		return NULL;
	advance(p);
	if ((nd = mk(p, FN_BLOCK, t)) == NULL) {
		leave(p);
		return NULL;
	}
	tail = &nd->a;
	while (!at(p, FT_RBRACE) && !at(p, FT_EOF) &&
	       !item_start(cur(p)->kind) && !p->c->nomem) {
		struct lang_node *s = stmt(p);
		if (s != NULL) {
			*tail = s;
			tail = &s->next;
		}
		if (p->panic)
			sync_stmt(p);
	}
	leave(p);
	if (!expect(p, FT_RBRACE, "'}'"))
		return NULL;
	return nd;
}

static void add_item(struct ps *p, struct lang_node *nd)
{
	fl_buf_put(&p->c->items, &nd, sizeof nd);
	if (p->c->items.failed)
		p->c->nomem = true;
}

static struct lang_node *fn_item(struct ps *p)
{
	const struct lang_tok *name = cur(p);
	struct lang_node *nd, **tail;

	if (!expect(p, FT_NAME, "a function name"))
		return NULL;
	if ((nd = mk(p, FN_FUNC, name)) == NULL)
		return NULL;
	nd->name = name->p;
	nd->nlen = name->n;
	/* From here on the function is kept even when broken (bad: no
	 * arity or body checks), so calls to it are not unknown. */
	nd->bad = true;
	if (!expect(p, FT_LPAREN, "'('"))
		return nd;
	tail = &nd->a;
	if (!accept(p, FT_RPAREN)) {
		do {
			const struct lang_tok *pt = cur(p);
			if (!expect(p, FT_NAME, "a parameter name"))
				return nd;
			struct lang_node *pn = mk(p, FN_NAME, pt);
			if (pn == NULL)
				return nd;
			pn->name = pt->p;
			pn->nlen = pt->n;
			*tail = pn;
			tail = &pn->next;
			nd->val++;
		} while (accept(p, FT_COMMA));
		if (!expect(p, FT_RPAREN, "',' or ')'"))
			return nd;
	}
	nd->bad = false;
	nd->b = block(p);
	return nd;
}

static struct lang_node *data_item(struct ps *p, const struct lang_tok *t)
{
	const struct lang_tok *name = cur(p);
	bool is_const = t->kind == FT_KW_CONST;
	struct lang_node *nd;

	if (!expect(p, FT_NAME, is_const ? "a constant name" : "a global name"))
		return NULL;
	if ((nd = mk(p, is_const ? FN_CONST : FN_GLOBAL, name)) == NULL)
		return NULL;
	nd->name = name->p;
	nd->nlen = name->n;
	/* Kept when broken (a == NULL and bad), so uses are not unknown. */
	if (is_const ? expect(p, FT_ASSIGN, "'='") : accept(p, FT_ASSIGN)) {
		if ((nd->a = expr(p)) == NULL)
			nd->bad = true;
	} else if (p->panic) {
		nd->bad = true;
		return nd;
	}
	if (!nd->bad)
		expect(p, FT_SEMI, "';'");
	return nd;
}

/* `use "path";` */
static void use_item(struct ps *p, const struct lang_tok *t)
{
	const struct lang_tok *s = cur(p);
	struct lang_comp *c = p->c;

	if (!expect(p, FT_STR, "a file name string"))
		return;
	if (!expect(p, FT_SEMI, "';'"))
		return;
	const char *rel = (const char *)c->strs.data + s->soff;
	const char *inc = c->files[p->file].path;
	const char *slash = strrchr(inc, '/');
	/* Relative to the including file's folder; "./" when it has none,
	 * so that no name (such as "-") reads as anything but a path. */
	if (slash == NULL) {
		inc = "./";
		slash = inc + 1;
	}
	size_t dlen = rel[0] != '/' ? (size_t)(slash - inc + 1) : 0;
	if (strlen(rel) != s->slen || s->slen == 0) {
		lang__error(c, p->file, s->line, s->col, "bad file name in 'use'");
		return;
	}
	char *path = malloc(dlen + s->slen + 1);
	if (path == NULL) {
		c->nomem = true;
		return;
	}
	memcpy(path, inc, dlen);
	memcpy(path + dlen, rel, s->slen + 1);
	char *canon = realpath(path, NULL);
	const char *key = canon != NULL ? canon : path;
	for (size_t i = 0; i < c->nfiles; i++) {
		if (strcmp(c->files[i].canon, key) == 0) {
			free(canon);
			free(path);
			return; /* included once */
		}
	}
	free(canon);
	if (c->depth >= USE_DEPTH_MAX) {
		lang__error(c, p->file, t->line, t->col,
			  "'use' nested too deeply");
		free(path);
		return;
	}
	uint8_t *src = NULL;
	size_t len = 0;
	struct fl_err err;
	int rc = fl_read_file(path, &src, &len, &err);
	if (rc == FL_ENOMEM) {
		c->nomem = true;
		free(path);
		return;
	}
	if (rc != 0) {
		lang__error(c, p->file, s->line, s->col, "cannot read '%s': %s",
			  rel, fl_strerror(rc));
		free(path);
		return;
	}
	int f = lang__add_file(c, path, (char *)src, len);
	if (f < 0)
		return;
	c->depth++;
	lang__parse_file(c, (uint16_t)f);
	c->depth--;
}

void lang__parse_file(struct lang_comp *c, uint16_t file)
{
	struct ps p = {.c = c, .file = file};

	if (!lang__lex(c, file, &p.t, &p.n)) {
		c->nomem = true;
		return;
	}
	while (!at(&p, FT_EOF) && !c->nomem) {
		const struct lang_tok *t = advance(&p);
		struct lang_node *nd = NULL;
		switch (t->kind) {
		case FT_KW_FN:
			nd = fn_item(&p);
			break;
		case FT_KW_CONST:
		case FT_KW_GLOBAL:
			nd = data_item(&p, t);
			break;
		case FT_KW_USE:
			use_item(&p, t);
			break;
		default:
			perr(&p, t, "'fn', 'const', 'global' or 'use'");
			break;
		}
		if (nd != NULL)
			add_item(&p, nd);
		if (p.panic) {
			while (!at(&p, FT_EOF) && !item_start(cur(&p)->kind))
				advance(&p);
			p.panic = false;
		}
	}
	free(p.t);
}
