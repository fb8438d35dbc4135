/* The .fla assembler: text in, struct vm_module out (asm_assemble()).
 *
 * It owns the statement syntax of SPEC section 5: sections (.rodata, .data,
 * .text), data directives (.bytes, .zero, .word), functions (func NAME NARGS
 * NLOCALS ... end), labels, instructions and the .line/.source directives.
 * Instructions come only from the vm_opinfo table: a mnemonic is looked up
 * there, and when several opcodes share one (push IMM / push NAME) the
 * operand's form picks the opcode. The lexer is asm_lex.c.
 *
 * Happy path: one pass over the lines. Each line is lexed, its labels
 * defined, its statement checked completely and only then emitted: data
 * into the rodata/data buffers, instructions (with a line-table entry when
 * the source line changes) into the code buffer. Operands that name
 * something possibly defined later are emitted as zero and recorded as
 * fixups: code labels are resolved at the function's `end` (they are local
 * to it); function names, data labels (push NAME) and .word label values
 * after the last line, once every symbol is known, the symbols are sorted
 * by (segment, offset) and the rodata length -- which fixes the data
 * segment's address -- is final. Then the module is built.
 *
 * Failure modes: every problem is printed as "PATH:LINE: error: MSG" and the
 * line is skipped (labels in front of it stay defined to avoid follow-on
 * errors); assembly goes on to the end and then returns FL_ESYNTAX with no
 * module. Running out of memory stops at once with FL_ENOMEM. Segment,
 * name and frame limits from vm.h are checked here; stack depth and slot
 * ranges are vm_verify()'s business. All state lives in struct as on the
 * caller's stack; hash tables keep the work linear in the input. */
#include "lang/lang.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "lang/lang_int.h"

enum sect { SECT_RODATA = VM_SEG_RODATA, SECT_DATA = VM_SEG_DATA, SECT_TEXT };

/* ---- Name tables ---- */

/* Open-addressing hash from (name, scope) to a value. Keys borrow their
 * bytes from the input (or the static opcode table). */
struct name_ent {
	const char *p; /* NULL: empty slot */
	uint32_t n;
	uint32_t scope;
	uint32_t val;
};

struct names {
	struct name_ent *tab;
	size_t cap; /* power of two */
	size_t count;
};

static uint64_t hash(const char *p, size_t n, uint32_t scope)
{
	uint64_t h = 14695981039346656037u ^ scope;

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= 1099511628211u;
	}
	return h ^ h >> 29;
}

static struct name_ent *slot_for(struct name_ent *tab, size_t cap,
				 const char *p, size_t n, uint32_t scope)
{
	size_t i = (size_t)hash(p, n, scope) & (cap - 1);

	while (tab[i].p != NULL && !(tab[i].n == n && tab[i].scope == scope &&
				     memcmp(tab[i].p, p, n) == 0))
		i = (i + 1) & (cap - 1);
	return &tab[i];
}

static struct name_ent *names_find(const struct names *t, const char *p,
				   size_t n, uint32_t scope)
{
	struct name_ent *e;

	if (t->cap == 0)
		return NULL;
	e = slot_for(t->tab, t->cap, p, n, scope);
	return e->p != NULL ? e : NULL;
}

/* Add a key known to be absent. */
static int names_add(struct names *t, const char *p, size_t n, uint32_t scope,
		     uint32_t val)
{
	struct name_ent *e;

	if (2 * (t->count + 1) > t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 64;
		struct name_ent *tab = calloc(cap, sizeof *tab);
		if (tab == NULL)
			return FL_ENOMEM;
		for (size_t i = 0; i < t->cap; i++)
			if (t->tab[i].p != NULL)
				*slot_for(tab, cap, t->tab[i].p, t->tab[i].n,
					  t->tab[i].scope) = t->tab[i];
		free(t->tab);
		t->tab = tab;
		t->cap = cap;
	}
	e = slot_for(t->tab, t->cap, p, n, scope);
	*e = (struct name_ent){
	    .p = p, .n = (uint32_t)n, .scope = scope, .val = val};
	t->count++;
	return 0;
}

/* ---- Assembler state ---- */

struct dsym { /* a data label, in definition order */
	const char *p;
	uint32_t n;
	uint8_t seg;
	uint32_t off;
	uint32_t index; /* position in the sorted symbol table */
};

struct func {
	const char *p;
	uint32_t n;
	uint32_t nargs, nlocals;
	uint32_t code_off, code_len;
	uint32_t line;
};

enum fix_kind {
	FIX_LABEL, /* 4-byte code label offset in the current function */
	FIX_FUNC,  /* 4-byte function index */
	FIX_ADDR,  /* 4-byte data symbol index (push NAME) */
	FIX_WORD,  /* 8-byte global address of a data label (.word NAME) */
};

struct fix {
	enum fix_kind kind;
	uint8_t seg; /* FIX_WORD: segment holding the word; else the code */
	uint32_t pos;
	const char *p;
	uint32_t n;
	uint32_t line;
};

struct as {
	const char *path;
	FILE *diag;
	uint32_t nerrors;
	bool nomem;
	struct fl_buf diags; /* struct diag[] */
	struct fl_buf dtext;
	uint32_t line; /* current .fla line */
	enum sect sect;
	struct asm_line lex;

	struct fl_buf seg[2]; /* rodata, data */
	struct fl_buf code;
	bool full[3];	     /* a segment limit was already reported */
	struct fl_buf lines; /* struct vm_line[] */
	bool line_set;	     /* a .line directive is in force */
	uint32_t line_value;
	uint32_t line_file;  /* its file: 0 the source, i > 0 files[i - 1] */
	char *line_name;     /* its file when not yet in files[] */
	char **files;	     /* source files of the line table, by first use */
	uint32_t nfiles;
	char *source;

	struct fl_buf dsyms; /* struct dsym[] */
	struct names dnames;
	struct fl_buf funcs; /* struct func[] */
	struct names fnames;
	bool in_func;
	uint32_t cur;	      /* index of the open function */
	struct names labels;  /* scope: function index */
	struct fl_buf fixes;  /* struct fix[], resolved at the end */
	struct fl_buf lfixes; /* struct fix[] of the open function */

	struct names ops;	       /* mnemonic -> first opcode */
	uint8_t next_op[VM_OP__COUNT]; /* next opcode, same mnemonic */
};

#define VEC(b, type)	 ((type *)(b)->data)
#define VEC_LEN(b, type) ((b)->len / sizeof(type))

/* Diagnostics are collected and printed sorted by line at the end, since
 * names used before their definition are only checked then. */
struct diag {
	uint32_t line;
	uint32_t seq;
	size_t off; /* text in as->dtext */
	size_t len;
};

static __attribute__((format(printf, 3, 4))) void
error(struct as *a, uint32_t line, const char *fmt, ...)
{
	char msg[4 * ASM_MSG_MAX];
	struct diag d = {
	    .line = line, .seq = a->nerrors++, .off = a->dtext.len};
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	d.len = (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;
	fl_buf_put(&a->dtext, msg, d.len);
	fl_buf_put(&a->diags, &d, sizeof d);
}

static int cmp_diag(const void *x, const void *y)
{
	const struct diag *p = x, *q = y;

	if (p->line != q->line)
		return p->line < q->line ? -1 : 1;
	return p->seq < q->seq ? -1 : p->seq > q->seq;
}

static void print_diags(struct as *a)
{
	struct diag *d = VEC(&a->diags, struct diag);
	size_t n = VEC_LEN(&a->diags, struct diag);

	if (a->diag == NULL || n == 0 || a->dtext.failed || a->diags.failed)
		return;
	qsort(d, n, sizeof *d, cmp_diag);
	for (size_t i = 0; i < n; i++)
		fprintf(a->diag, "%s:%u: error: %.*s\n", a->path, d[i].line,
			(int)d[i].len, (const char *)a->dtext.data + d[i].off);
}

/* Append a zeroed element to vector @b; NULL when out of memory. */
static void *push(struct as *a, struct fl_buf *b, size_t size)
{
	void *p;

	if (!fl_buf_reserve(b, size)) {
		a->nomem = true;
		return NULL;
	}
	p = b->data + b->len;
	memset(p, 0, size);
	b->len += size;
	return p;
}

static void add_name(struct as *a, struct names *t, const char *p, size_t n,
		     uint32_t scope, uint32_t val)
{
	if (names_add(t, p, n, scope, val) != 0)
		a->nomem = true;
}

static bool tok_is(const struct asm_tok *t, const char *s)
{
	return t->kind == ASM_T_NAME && t->n == strlen(s) &&
	       memcmp(t->p, s, t->n) == 0;
}

/* The decoded bytes of string token @t. */
static const char *str_bytes(const struct as *a, const struct asm_tok *t)
{
	if (a->lex.str.data == NULL)
		return "";
	return (const char *)a->lex.str.data + t->off;
}

/* Shorthand for quoting a token in a message. */
#define SHOW(buf, t) asm__show((buf), (t)->p, (t)->n)

/* @t's value as a 64-bit word (0..UINT64_MAX or -2^63..-1). */
static bool tok_word(const struct asm_tok *t, uint64_t *v)
{
	if (t->kind != ASM_T_INT || t->big)
		return false;
	if (!t->neg) {
		*v = t->mag;
		return true;
	}
	if (t->mag > (uint64_t)1 << 63)
		return false;
	*v = (uint64_t)0 - t->mag;
	return true;
}

/* @t's value if it is a plain integer in 0..@max. */
static bool tok_uint(const struct asm_tok *t, uint64_t max, uint64_t *v)
{
	if (t->kind != ASM_T_INT || t->big || (t->neg && t->mag != 0) ||
	    t->mag > max)
		return false;
	*v = t->mag;
	return true;
}

/* Room for @n more bytes in segment @s (0 rodata, 1 data, 2 code)? */
static bool room(struct as *a, int s, size_t n)
{
	static const char *const what[] = {"read-only data", "data", "code"};
	struct fl_buf *b = s == 2 ? &a->code : &a->seg[s];

	if (n <= VM_SEGMENT_MAX - b->len)
		return true;
	if (!a->full[s])
		error(a, a->line, "%s exceeds the limit of %u bytes", what[s],
		      VM_SEGMENT_MAX);
	a->full[s] = true;
	return false;
}

/* ---- Names and labels ---- */

static const char *const directives[] = {
    ".rodata", ".data", ".text", ".bytes", ".zero", ".word", ".line", ".source",
};

static bool is_directive(const struct asm_tok *t)
{
	for (size_t i = 0; i < sizeof directives / sizeof directives[0]; i++)
		if (tok_is(t, directives[i]))
			return true;
	return false;
}

/* Can @t name a label or function (@what)? Reports why not. Names that
 * go into the module (@stored: functions, data labels) must also satisfy
 * vm_name_valid(); code labels live only in the source. */
static bool check_name(struct as *a, const struct asm_tok *t, const char *what,
		       bool stored)
{
	char s[ASM_SHOW_MAX];

	if (t->kind != ASM_T_NAME) {
		error(a, a->line, "expected a %s name, not '%s'", what,
		      SHOW(s, t));
		return false;
	}
	if (t->n > VM_NAME_MAX) {
		error(a, a->line, "%s name '%s' is longer than %d bytes", what,
		      SHOW(s, t), VM_NAME_MAX);
		return false;
	}
	if (is_directive(t)) {
		error(a, a->line, "'%s' is a directive, not a %s name",
		      SHOW(s, t), what);
		return false;
	}
	if (stored && !vm_name_valid(t->p, t->n)) {
		error(a, a->line, "%s name '%s' may not start with '.'", what,
		      SHOW(s, t));
		return false;
	}
	return true;
}

static void define_label(struct as *a, const struct asm_tok *t)
{
	char s[ASM_SHOW_MAX];
	struct dsym *d;

	if (!check_name(a, t, "label", a->sect != SECT_TEXT))
		return;
	if (a->sect == SECT_TEXT) {
		uint32_t off;
		if (!a->in_func) {
			error(a, a->line, "label '%s' outside a function",
			      SHOW(s, t));
			return;
		}
		if (names_find(&a->labels, t->p, t->n, a->cur) != NULL) {
			error(a, a->line, "duplicate label '%s'", SHOW(s, t));
			return;
		}
		off = (uint32_t)a->code.len -
		      VEC(&a->funcs, struct func)[a->cur].code_off;
		add_name(a, &a->labels, t->p, t->n, a->cur, off);
		return;
	}
	if (names_find(&a->dnames, t->p, t->n, 0) != NULL) {
		error(a, a->line, "duplicate label '%s'", SHOW(s, t));
		return;
	}
	d = push(a, &a->dsyms, sizeof *d);
	if (d == NULL)
		return;
	d->p = t->p;
	d->n = (uint32_t)t->n;
	d->seg = (uint8_t)a->sect;
	d->off = (uint32_t)a->seg[a->sect].len;
	add_name(a, &a->dnames, t->p, t->n, 0,
		 (uint32_t)(VEC_LEN(&a->dsyms, struct dsym) - 1));
}

static void add_fix(struct as *a, struct fl_buf *v, enum fix_kind kind,
		    uint8_t seg, size_t pos, const struct asm_tok *t)
{
	struct fix *f = push(a, v, sizeof *f);

	if (f == NULL)
		return;
	*f = (struct fix){.kind = kind,
			  .seg = seg,
			  .pos = (uint32_t)pos,
			  .p = t->p,
			  .n = (uint32_t)t->n,
			  .line = a->line};
}

/* ---- Data directives ---- */

/* Check that t[1..nt) is a comma-separated list of at least one item. */
static bool check_list(struct as *a, const struct asm_tok *t, size_t nt)
{
	char s[ASM_SHOW_MAX], d[ASM_SHOW_MAX];

	if (nt < 2) {
		error(a, a->line, "'%s' needs at least one value", SHOW(d, t));
		return false;
	}
	for (size_t i = 1; i < nt; i++) {
		bool item = i % 2 == 1;
		bool comma = t[i].kind == ASM_T_COMMA;
		if (item && (comma || t[i].kind == ASM_T_COLON)) {
			error(a, a->line, "missing value before '%s'",
			      SHOW(s, &t[i]));
			return false;
		}
		if (!item && !comma) {
			error(a, a->line,
			      "expected ',' between values, not '%s'",
			      SHOW(s, &t[i]));
			return false;
		}
	}
	if (nt % 2 == 1) {
		error(a, a->line, "missing value after ','");
		return false;
	}
	return true;
}

static void dir_bytes(struct as *a, const struct asm_tok *t, size_t nt)
{
	char s[ASM_SHOW_MAX];
	struct fl_buf *b = &a->seg[a->sect];
	size_t total = 0;
	uint64_t v;

	if (!check_list(a, t, nt))
		return;
	for (size_t i = 1; i < nt; i += 2) {
		if (t[i].kind == ASM_T_STR) {
			total += t[i].len;
		} else if (t[i].kind == ASM_T_INT) {
			if (!tok_uint(&t[i], 255, &v)) {
				error(a, a->line,
				      "byte value '%s' out of range 0..255",
				      SHOW(s, &t[i]));
				return;
			}
			total++;
		} else {
			error(a, a->line,
			      "'.bytes' takes strings and byte values, not "
			      "'%s'",
			      SHOW(s, &t[i]));
			return;
		}
	}
	if (!room(a, a->sect, total))
		return;
	for (size_t i = 1; i < nt; i += 2) {
		if (t[i].kind == ASM_T_STR)
			fl_buf_put(b, str_bytes(a, &t[i]), t[i].len);
		else
			fl_buf_put_u8(b, (uint8_t)t[i].mag);
	}
}

static void dir_word(struct as *a, const struct asm_tok *t, size_t nt)
{
	char s[ASM_SHOW_MAX];
	struct fl_buf *b = &a->seg[a->sect];
	uint64_t v;

	if (!check_list(a, t, nt))
		return;
	for (size_t i = 1; i < nt; i += 2) {
		if (t[i].kind == ASM_T_INT) {
			if (!tok_word(&t[i], &v)) {
				error(a, a->line,
				      "value '%s' out of 64-bit range",
				      SHOW(s, &t[i]));
				return;
			}
		} else if (t[i].kind != ASM_T_NAME) {
			error(a, a->line,
			      "'.word' takes integers and data labels, not "
			      "'%s'",
			      SHOW(s, &t[i]));
			return;
		}
	}
	if (!room(a, a->sect, 8 * ((nt - 1) / 2 + 1)))
		return;
	for (size_t i = 1; i < nt; i += 2) {
		v = 0;
		if (t[i].kind == ASM_T_NAME)
			add_fix(a, &a->fixes, FIX_WORD, (uint8_t)a->sect,
				b->len, &t[i]);
		else
			tok_word(&t[i], &v);
		fl_buf_put_u64(b, v);
	}
}

static void dir_zero(struct as *a, const struct asm_tok *t, size_t nt)
{
	char s[ASM_SHOW_MAX];
	struct fl_buf *b = &a->seg[a->sect];
	uint64_t v;

	if (nt != 2) {
		error(a, a->line, "'.zero' takes one size");
		return;
	}
	if (!tok_uint(&t[1], VM_SEGMENT_MAX, &v)) {
		error(a, a->line, "'.zero' size '%s' out of range 0..%u",
		      SHOW(s, &t[1]), VM_SEGMENT_MAX);
		return;
	}
	if (v == 0 || !room(a, a->sect, (size_t)v) ||
	    !fl_buf_reserve(b, (size_t)v))
		return;
	memset(b->data + b->len, 0, (size_t)v);
	b->len += (size_t)v;
}

static void dir_section(struct as *a, const struct asm_tok *t, size_t nt)
{
	char s[ASM_SHOW_MAX], f[ASM_SHOW_MAX];
	enum sect to = tok_is(t, ".rodata") ? SECT_RODATA
		       : tok_is(t, ".data") ? SECT_DATA
					    : SECT_TEXT;

	if (nt > 1) {
		error(a, a->line, "'%s' takes no operands", SHOW(s, t));
		return;
	}
	if (a->in_func && to != SECT_TEXT) {
		const struct func *fn = &VEC(&a->funcs, struct func)[a->cur];
		error(a, a->line, "'%s' inside function '%s' (missing 'end'?)",
		      SHOW(s, t), asm__show(f, fn->p, fn->n));
		return;
	}
	a->sect = to;
}

/* `.line N` (line N of the source) or `.line N "FILE"` (of another
 * source file, e.g. one a .fl program uses). */
static void dir_line(struct as *a, const struct asm_tok *t, size_t nt)
{
	char s[ASM_SHOW_MAX];
	uint64_t v;
	const char *p;

	if ((nt != 2 && nt != 3) || (nt == 3 && t[2].kind != ASM_T_STR)) {
		error(a, a->line,
		      "'.line' takes a line number and optionally a file name");
		return;
	}
	if (!tok_uint(&t[1], UINT32_MAX, &v) || v == 0 || t[1].chr) {
		error(a, a->line, "line number '%s' out of range 1..%u",
		      SHOW(s, &t[1]), UINT32_MAX);
		return;
	}
	free(a->line_name);
	a->line_name = NULL;
	a->line_file = 0;
	if (nt == 3) {
		p = str_bytes(a, &t[2]);
		if (t[2].len == 0 || memchr(p, 0, t[2].len) != NULL ||
		    t[2].len > VM_PATH_MAX) {
			error(a, a->line,
			      "file name must be 1..%u bytes without NUL",
			      VM_PATH_MAX);
			return;
		}
		for (uint32_t i = 0; i < a->nfiles && a->line_file == 0; i++)
			if (strlen(a->files[i]) == t[2].len &&
			    memcmp(a->files[i], p, t[2].len) == 0)
				a->line_file = i + 1;
		if (a->line_file == 0) {
			/* files[] lists files in order of first use */
			a->line_name = strndup(p, t[2].len);
			if (a->line_name == NULL) {
				a->nomem = true;
				return;
			}
		}
	}
	a->line_set = true;
	a->line_value = (uint32_t)v;
}

/* The file of the pending `.line "FILE"` gets its index on first use. */
static bool use_line_file(struct as *a)
{
	char **f;

	if (a->line_name == NULL)
		return true;
	f = realloc(a->files, (a->nfiles + 1) * sizeof *f);
	if (f == NULL) {
		a->nomem = true;
		return false;
	}
	a->files = f;
	f[a->nfiles++] = a->line_name;
	a->line_name = NULL;
	a->line_file = a->nfiles;
	return true;
}

static void dir_source(struct as *a, const struct asm_tok *t, size_t nt)
{
	const char *p;

	if (nt != 2 || t[1].kind != ASM_T_STR) {
		error(a, a->line, "'.source' takes one string");
		return;
	}
	if (a->source != NULL) {
		error(a, a->line, "duplicate '.source'");
		return;
	}
	p = str_bytes(a, &t[1]);
	if (memchr(p, 0, t[1].len) != NULL) {
		error(a, a->line, "source name contains a NUL byte");
		return;
	}
	if (t[1].len > UINT16_MAX) {
		error(a, a->line, "source name is longer than %u bytes",
		      UINT16_MAX);
		return;
	}
	a->source = strndup(p, t[1].len);
	if (a->source == NULL)
		a->nomem = true;
}

static void directive(struct as *a, const struct asm_tok *t, size_t nt)
{
	char s[ASM_SHOW_MAX];
	bool data =
	    tok_is(t, ".bytes") || tok_is(t, ".word") || tok_is(t, ".zero");

	if (data && a->sect == SECT_TEXT)
		error(a, a->line, "data directive outside .rodata/.data");
	else if (tok_is(t, ".bytes"))
		dir_bytes(a, t, nt);
	else if (tok_is(t, ".word"))
		dir_word(a, t, nt);
	else if (tok_is(t, ".zero"))
		dir_zero(a, t, nt);
	else if (tok_is(t, ".rodata") || tok_is(t, ".data") ||
		 tok_is(t, ".text"))
		dir_section(a, t, nt);
	else if (tok_is(t, ".line"))
		dir_line(a, t, nt);
	else if (tok_is(t, ".source"))
		dir_source(a, t, nt);
	else
		error(a, a->line, "unknown directive '%s'", SHOW(s, t));
}

/* ---- Functions ---- */

/* Resolve the open function's labels and close it. */
static void close_func(struct as *a)
{
	struct func *fn = &VEC(&a->funcs, struct func)[a->cur];
	struct fix *f = VEC(&a->lfixes, struct fix);
	size_t n = VEC_LEN(&a->lfixes, struct fix);
	char s[ASM_SHOW_MAX], g[ASM_SHOW_MAX];

	for (size_t i = 0; i < n; i++) {
		struct name_ent *e =
		    names_find(&a->labels, f[i].p, f[i].n, a->cur);
		if (e == NULL) {
			error(a, f[i].line,
			      "undefined label '%s' in function %s",
			      asm__show(s, f[i].p, f[i].n),
			      asm__show(g, fn->p, fn->n));
			continue;
		}
		if (!a->code.failed) {
			uint8_t *q = a->code.data + f[i].pos;
			for (int k = 0; k < 4; k++)
				q[k] = (uint8_t)(e->val >> (8 * k));
		}
	}
	a->lfixes.len = 0;
	fn->code_len = (uint32_t)a->code.len - fn->code_off;
	a->in_func = false;
}

static bool func_count(struct as *a, const struct asm_tok *t, const char *what,
		       uint64_t *v)
{
	char s[ASM_SHOW_MAX];

	if (t->chr || !tok_uint(t, VM_FRAME_MAX, v)) {
		error(a, a->line,
		      "number of %s '%s' is not an integer in 0..%d", what,
		      SHOW(s, t), VM_FRAME_MAX);
		return false;
	}
	return true;
}

static void do_func(struct as *a, const struct asm_tok *t, size_t nt)
{
	char s[ASM_SHOW_MAX];
	struct func *fn;
	uint64_t nargs = 0, nlocals = 0;
	bool named;

	if (a->in_func) {
		fn = &VEC(&a->funcs, struct func)[a->cur];
		error(a, a->line, "missing 'end' for function '%s'",
		      asm__show(s, fn->p, fn->n));
		close_func(a);
	}
	if (a->sect != SECT_TEXT) {
		error(a, a->line, "'func' outside .text");
		a->sect = SECT_TEXT;
	}
	/* Open the function even when the line is bad, so that its body
	 * does not cascade into more errors. */
	fn = push(a, &a->funcs, sizeof *fn);
	if (fn == NULL)
		return;
	a->cur = (uint32_t)(VEC_LEN(&a->funcs, struct func) - 1);
	a->in_func = true;
	fn->code_off = (uint32_t)a->code.len;
	fn->line = a->line;
	fn->p = "?";
	fn->n = 1;
	if (nt < 2) {
		error(a, a->line,
		      "'func' takes a name, the number of arguments and the "
		      "number of locals");
		return;
	}
	named = check_name(a, &t[1], "function", true);
	if (t[1].kind == ASM_T_NAME) {
		fn->p = t[1].p;
		fn->n = (uint32_t)t[1].n;
	}
	if (named && names_find(&a->fnames, t[1].p, t[1].n, 0) != NULL) {
		error(a, a->line, "duplicate function '%s'", SHOW(s, &t[1]));
		named = false;
	}
	if (named)
		add_name(a, &a->fnames, t[1].p, t[1].n, 0, a->cur);
	if (nt != 4) {
		error(a, a->line,
		      "'func' takes a name, the number of arguments and the "
		      "number of locals");
		return;
	}
	if (!func_count(a, &t[2], "arguments", &nargs) ||
	    !func_count(a, &t[3], "locals", &nlocals))
		return;
	if (nargs + nlocals > VM_FRAME_MAX) {
		error(a, a->line,
		      "function '%s' has %llu arguments and locals, more than "
		      "%d",
		      SHOW(s, &t[1]), (unsigned long long)(nargs + nlocals),
		      VM_FRAME_MAX);
		return;
	}
	fn->nargs = (uint32_t)nargs;
	fn->nlocals = (uint32_t)nlocals;
}

static void do_end(struct as *a, const struct asm_tok *t, size_t nt)
{
	(void)t;
	if (!a->in_func) {
		error(a, a->line, "'end' without 'func'");
		return;
	}
	if (nt > 1)
		error(a, a->line, "'end' takes no operands");
	close_func(a);
}

/* ---- Instructions ---- */

static bool named_operand(enum vm_operand k)
{
	return k == VM_OPND_ADDR || k == VM_OPND_LABEL || k == VM_OPND_FUNC;
}

static bool accepts(enum vm_operand k, const struct asm_tok *t)
{
	switch (k) {
	case VM_OPND_NONE:
		return false;
	case VM_OPND_IMM:
		return t->kind == ASM_T_INT;
	case VM_OPND_SLOT:
	case VM_OPND_COUNT:
		return t->kind == ASM_T_INT && !t->chr;
	case VM_OPND_ADDR:
	case VM_OPND_LABEL:
	case VM_OPND_FUNC:
		return t->kind == ASM_T_NAME;
	}
	return false;
}

static const char *describe(enum vm_operand k)
{
	switch (k) {
	case VM_OPND_NONE:
		return "no operand";
	case VM_OPND_IMM:
		return "an integer";
	case VM_OPND_ADDR:
		return "a data label";
	case VM_OPND_SLOT:
		return "a slot number";
	case VM_OPND_COUNT:
		return "a count";
	case VM_OPND_LABEL:
		return "a label";
	case VM_OPND_FUNC:
		return "a function name";
	}
	return "?";
}

/* Encode @op with @v and its line-table entry; false if it did not fit. */
static bool emit(struct as *a, enum vm_op op, int64_t v)
{
	size_t size = 1 + (size_t)vm_operand_size(vm_opinfo[op].operand);
	uint32_t line = a->line_set ? a->line_value : a->line;
	size_t nl = VEC_LEN(&a->lines, struct vm_line);
	const struct vm_line *last =
		nl ? &VEC(&a->lines, struct vm_line)[nl - 1] : NULL;

	if (!room(a, 2, size) || !use_line_file(a))
		return false;
	if (last == NULL || last->line != line || last->file != a->line_file) {
		struct vm_line *l = push(a, &a->lines, sizeof *l);
		if (l == NULL)
			return false;
		l->code_off = (uint32_t)a->code.len;
		l->line = line;
		l->file = a->line_file;
	}
	vm_insn_encode(&a->code, op, v);
	return true;
}

static void insn(struct as *a, const struct asm_tok *t, size_t nt)
{
	char s[ASM_SHOW_MAX], m[ASM_SHOW_MAX];
	struct name_ent *e = names_find(&a->ops, t->p, t->n, 0);
	const struct asm_tok *o = &t[1];
	int op = -1, first;
	bool any_operand = false;
	uint64_t v = 0;
	size_t pos;

	if (e == NULL) {
		error(a, a->line, "unknown instruction '%s'", SHOW(s, t));
		return;
	}
	if (!a->in_func) {
		error(a, a->line, "instruction outside a function");
		return;
	}
	first = (int)e->val;
	SHOW(m, t);
	for (int i = first; i < VM_OP__COUNT; i = a->next_op[i]) {
		enum vm_operand k = vm_opinfo[i].operand;
		if (k != VM_OPND_NONE)
			any_operand = true;
		if (op < 0 && (nt == 1 ? k == VM_OPND_NONE : accepts(k, o)))
			op = i;
	}
	if (nt == 1 && op < 0) {
		error(a, a->line, "'%s' needs an operand", m);
		return;
	}
	if (nt > 1 && !any_operand) {
		error(a, a->line, "'%s' takes no operand", m);
		return;
	}
	if (nt > 2) {
		error(a, a->line, "'%s' takes one operand", m);
		return;
	}
	if (op < 0) {
		char want[160];
		size_t w = 0;
		want[0] = 0;
		for (int i = first; i < VM_OP__COUNT; i = a->next_op[i]) {
			enum vm_operand k = vm_opinfo[i].operand;
			if (k == VM_OPND_NONE || w >= sizeof want)
				continue;
			w += (size_t)snprintf(want + w, sizeof want - w, "%s%s",
					      w ? " or " : "", describe(k));
		}
		error(a, a->line, "'%s' takes %s, not '%s'", m, want,
		      SHOW(s, o));
		return;
	}

	switch (vm_opinfo[op].operand) {
	case VM_OPND_NONE:
		break;
	case VM_OPND_IMM:
		if (!tok_word(o, &v)) {
			error(a, a->line, "immediate '%s' out of 64-bit range",
			      SHOW(s, o));
			return;
		}
		break;
	case VM_OPND_SLOT:
	case VM_OPND_COUNT:
		if (!tok_uint(o, VM_FRAME_MAX - 1, &v)) {
			error(a, a->line, "%s '%s' out of range 0..%u",
			      vm_opinfo[op].operand == VM_OPND_SLOT
				  ? "slot number"
				  : "count",
			      SHOW(s, o), VM_FRAME_MAX - 1);
			return;
		}
		break;
	case VM_OPND_ADDR:
	case VM_OPND_LABEL:
	case VM_OPND_FUNC:
		if (o->n > VM_NAME_MAX) {
			error(a, a->line, "name '%s' is longer than %d bytes",
			      SHOW(s, o), VM_NAME_MAX);
			return;
		}
		break;
	}
	pos = a->code.len + 1;
	if (!emit(a, (enum vm_op)op, (int64_t)v))
		return;
	if (!named_operand(vm_opinfo[op].operand))
		return;
	if (vm_opinfo[op].operand == VM_OPND_LABEL)
		add_fix(a, &a->lfixes, FIX_LABEL, 0, pos, o);
	else
		add_fix(a, &a->fixes,
			vm_opinfo[op].operand == VM_OPND_FUNC ? FIX_FUNC
							      : FIX_ADDR,
			0, pos, o);
}

/* ---- Lines ---- */

static void statement(struct as *a, const struct asm_tok *t, size_t nt)
{
	char s[ASM_SHOW_MAX];
	size_t i = 0;

	while (i + 1 < nt && t[i].kind == ASM_T_NAME &&
	       t[i + 1].kind == ASM_T_COLON) {
		define_label(a, &t[i]);
		i += 2;
	}
	if (i == nt)
		return;
	t += i;
	nt -= i;
	if (t->kind != ASM_T_NAME)
		error(a, a->line,
		      "expected an instruction or directive, not '%s'",
		      SHOW(s, t));
	else if (t->p[0] == '.')
		directive(a, t, nt);
	else if (tok_is(t, "func"))
		do_func(a, t, nt);
	else if (tok_is(t, "end"))
		do_end(a, t, nt);
	else
		insn(a, t, nt);
}

/* ---- Resolution and output ---- */

static int cmp_sym(const void *x, const void *y)
{
	const struct dsym *p = *(const struct dsym *const *)x;
	const struct dsym *q = *(const struct dsym *const *)y;

	if (p->seg != q->seg)
		return p->seg < q->seg ? -1 : 1;
	if (p->off != q->off)
		return p->off < q->off ? -1 : 1;
	return p < q ? -1 : p > q; /* definition order */
}

/* Give every data symbol its index in the sorted table; the sorted order
 * is returned in *@order (caller frees). */
static void sort_syms(struct as *a, struct dsym ***order)
{
	struct dsym *d = VEC(&a->dsyms, struct dsym);
	size_t n = VEC_LEN(&a->dsyms, struct dsym);
	struct dsym **o = malloc((n ? n : 1) * sizeof *o);

	*order = o;
	if (o == NULL) {
		a->nomem = true;
		return;
	}
	for (size_t i = 0; i < n; i++)
		o[i] = &d[i];
	qsort(o, n, sizeof *o, cmp_sym);
	for (size_t i = 0; i < n; i++)
		o[i]->index = (uint32_t)i;
}

static void put_le(uint8_t *q, uint64_t v, int n)
{
	for (int k = 0; k < n; k++)
		q[k] = (uint8_t)(v >> (8 * k));
}

static void resolve(struct as *a)
{
	struct fix *f = VEC(&a->fixes, struct fix);
	size_t n = VEC_LEN(&a->fixes, struct fix);
	struct vm_module tmp = {.rodata_len = (uint32_t)a->seg[0].len};
	char s[ASM_SHOW_MAX];

	for (size_t i = 0; i < n; i++) {
		const char *name = asm__show(s, f[i].p, f[i].n);
		struct name_ent *e;
		const struct dsym *d;
		struct fl_buf *b;

		if (f[i].kind == FIX_FUNC) {
			e = names_find(&a->fnames, f[i].p, f[i].n, 0);
			if (e == NULL && names_find(&a->dnames, f[i].p, f[i].n,
						    0) != NULL)
				error(a, f[i].line,
				      "'%s' is a data label, not a function",
				      name);
			else if (e == NULL)
				error(a, f[i].line, "undefined function '%s'",
				      name);
			else if (!a->code.failed)
				put_le(a->code.data + f[i].pos, e->val, 4);
			continue;
		}
		e = names_find(&a->dnames, f[i].p, f[i].n, 0);
		if (e == NULL) {
			if (names_find(&a->fnames, f[i].p, f[i].n, 0) != NULL)
				error(a, f[i].line,
				      "'%s' is a function, not a data label",
				      name);
			else
				error(a, f[i].line, "undefined data label '%s'",
				      name);
			continue;
		}
		d = &VEC(&a->dsyms, struct dsym)[e->val];
		b = f[i].kind == FIX_ADDR ? &a->code : &a->seg[f[i].seg];
		if (b->failed)
			continue;
		if (f[i].kind == FIX_ADDR)
			put_le(b->data + f[i].pos, d->index, 4);
		else
			put_le(b->data + f[i].pos,
			       vm_module_seg_base(&tmp, d->seg) + d->off, 8);
	}
}

/* The bytes of @b as a malloc'd block of at least one byte. */
static uint8_t *take(struct as *a, struct fl_buf *b, uint32_t *len)
{
	size_t n;
	uint8_t *p;

	if (b->len == 0) {
		*len = 0;
		p = malloc(1);
	} else {
		p = fl_buf_take(b, &n);
		*len = (uint32_t)n;
	}
	if (p == NULL)
		a->nomem = true;
	return p;
}

static char *dup_name(struct as *a, const char *p, size_t n)
{
	char *s = strndup(p, n);

	if (s == NULL)
		a->nomem = true;
	return s;
}

static struct vm_module *build(struct as *a, struct dsym **order)
{
	struct vm_module *m = vm_module_new();
	size_t ns = VEC_LEN(&a->dsyms, struct dsym);
	size_t nf = VEC_LEN(&a->funcs, struct func);
	size_t nl = VEC_LEN(&a->lines, struct vm_line);

	if (m == NULL) {
		a->nomem = true;
		return NULL;
	}
	free(m->source);
	m->source = strdup(a->source != NULL ? a->source : a->path);
	m->rodata = take(a, &a->seg[0], &m->rodata_len);
	m->data = take(a, &a->seg[1], &m->data_len);
	m->code = take(a, &a->code, &m->code_len);
	m->syms = calloc(ns ? ns : 1, sizeof *m->syms);
	m->funcs = calloc(nf ? nf : 1, sizeof *m->funcs);
	m->lines = malloc((nl ? nl : 1) * sizeof *m->lines);
	if (m->source == NULL || m->syms == NULL || m->funcs == NULL ||
	    m->lines == NULL)
		a->nomem = true;
	if (a->nomem)
		goto fail;
	for (size_t i = 0; i < ns; i++) {
		struct vm_symbol *s = &m->syms[m->nsyms++];
		s->name = dup_name(a, order[i]->p, order[i]->n);
		s->segment = order[i]->seg;
		s->offset = order[i]->off;
	}
	for (size_t i = 0; i < nf; i++) {
		const struct func *fn = &VEC(&a->funcs, struct func)[i];
		struct vm_function *f = &m->funcs[m->nfuncs++];
		f->name = dup_name(a, fn->p, fn->n);
		f->nargs = fn->nargs;
		f->nlocals = fn->nlocals;
		f->code_off = fn->code_off;
		f->code_len = fn->code_len;
	}
	if (nl > 0)
		memcpy(m->lines, a->lines.data, nl * sizeof *m->lines);
	m->nlines = (uint32_t)nl;
	m->files = a->files;
	m->nfiles = a->nfiles;
	a->files = NULL;
	a->nfiles = 0;
	if (a->nomem)
		goto fail;
	return m;
fail:
	vm_module_free(m);
	return NULL;
}

static bool any_failed(const struct as *a)
{
	return a->nomem || a->seg[0].failed || a->seg[1].failed ||
	       a->code.failed || a->lines.failed || a->dsyms.failed ||
	       a->funcs.failed || a->fixes.failed || a->lfixes.failed ||
	       a->diags.failed || a->dtext.failed;
}

static void as_init(struct as *a, const char *path, FILE *diag)
{
	memset(a, 0, sizeof *a);
	a->path = path;
	a->diag = diag;
	a->sect = SECT_TEXT;
	asm__line_init(&a->lex);
	fl_buf_init(&a->seg[0]);
	fl_buf_init(&a->seg[1]);
	fl_buf_init(&a->code);
	fl_buf_init(&a->lines);
	fl_buf_init(&a->dsyms);
	fl_buf_init(&a->funcs);
	fl_buf_init(&a->fixes);
	fl_buf_init(&a->lfixes);
	fl_buf_init(&a->diags);
	fl_buf_init(&a->dtext);
	/* The mnemonic table, chaining opcodes that share a mnemonic. */
	for (int i = 0; i < VM_OP__COUNT; i++) {
		const char *mn = vm_opinfo[i].mnemonic;
		struct name_ent *e = names_find(&a->ops, mn, strlen(mn), 0);
		a->next_op[i] = VM_OP__COUNT;
		if (e == NULL) {
			add_name(a, &a->ops, mn, strlen(mn), 0, (uint32_t)i);
			continue;
		}
		int j = (int)e->val;
		while (a->next_op[j] != VM_OP__COUNT)
			j = a->next_op[j];
		a->next_op[j] = (uint8_t)i;
	}
}

static void as_close(struct as *a)
{
	asm__line_close(&a->lex);
	fl_buf_close(&a->seg[0]);
	fl_buf_close(&a->seg[1]);
	fl_buf_close(&a->code);
	fl_buf_close(&a->lines);
	fl_buf_close(&a->dsyms);
	fl_buf_close(&a->funcs);
	fl_buf_close(&a->fixes);
	fl_buf_close(&a->lfixes);
	fl_buf_close(&a->diags);
	fl_buf_close(&a->dtext);
	free(a->dnames.tab);
	free(a->fnames.tab);
	free(a->labels.tab);
	free(a->ops.tab);
	free(a->source);
	free(a->line_name);
	for (uint32_t i = 0; i < a->nfiles; i++)
		free(a->files[i]);
	free(a->files);
}

int asm_assemble(const char *path, const char *src, size_t len,
		 struct vm_module **out, FILE *diag)
{
	struct as a;
	struct dsym **order = NULL;
	char msg[ASM_MSG_MAX];
	size_t at = 0;
	int rc = 0;

	*out = NULL;
	as_init(&a, path, diag);
	while (at < len && !any_failed(&a)) {
		const char *nl = memchr(src + at, '\n', len - at);
		size_t n = nl != NULL ? (size_t)(nl - (src + at)) : len - at;

		if (a.line < UINT32_MAX)
			a.line++;
		rc = asm__lex(&a.lex, src + at, n, msg);
		if (rc == FL_ESYNTAX)
			error(&a, a.line, "%s", msg);
		else if (rc == 0)
			statement(&a, a.lex.toks, a.lex.n);
		else
			a.nomem = true;
		at += n + 1;
	}
	if (a.in_func && !any_failed(&a)) {
		const struct func *fn = &VEC(&a.funcs, struct func)[a.cur];
		error(&a, fn->line, "missing 'end' for function '%s'",
		      asm__show(msg, fn->p, fn->n));
		close_func(&a);
	}
	if (!any_failed(&a))
		sort_syms(&a, &order);
	if (!any_failed(&a))
		resolve(&a);
	if (any_failed(&a))
		rc = FL_ENOMEM;
	else if (a.nerrors > 0)
		rc = FL_ESYNTAX;
	else if ((*out = build(&a, order)) == NULL)
		rc = FL_ENOMEM;
	else
		rc = 0;
	free(order);
	print_diags(&a);
	as_close(&a);
	return rc;
}
