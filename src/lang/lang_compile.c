/* The .fl compiler's driver: lang_compile(), diagnostics, and the print
 * runtime (the prelude).
 *
 * Owns: the struct lang_comp for one compilation (files, AST arena, string
 * bytes, diagnostics), collecting errors and printing them sorted by file
 * (in the order files were read), line and column, each as
 * "PATH:LINE:COL: error: MSG", the source line (a window of DIAG_LINE_MAX
 * bytes around the column when it is longer) and a caret line. Printing
 * is linear in the diagnostics and the source: one cursor walks each
 * file's lines once, and the text goes out in large writes.
 *
 * Happy path: add the main file, parse it (lang_parse.c pulls in `use`d
 * files), parse the prelude when the program calls print/eprint, then
 * generate the module (lang_gen.c). Failure modes: any diagnostic means no
 * module and FL_ESYNTAX; running out of memory anywhere gives FL_ENOMEM
 * (diagnostics so far are still printed). Runs on the caller's thread; no
 * global state. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "base/fl_error.h"
#include "lang/lang.h"
#include "lang/lang_fl.h"

#define DIAG_MSG_MAX 240 /* bytes of one message, at most */
/* A source line longer than this is shown as this many bytes around the
 * column, "..." marking each end that was cut. */
#define DIAG_LINE_MAX 100

struct lang_diag {
	uint16_t file;
	uint32_t line, col, seq;
	size_t msg; /* offset of its NUL-terminated text in c->dtext */
};

/* print(fmt, ...) lowers to $print(fd, fmt, args) where args is an
 * alloc'd array of the arguments; $print formats into a growing local
 * buffer [buf, cap, len] and writes it with one `write`, so the output of
 * one call is never split by another thread's. */
const char lang__prelude[] =
	"fn $put(st, ch) {\n"
	"    if st[2] == st[1] {\n"
	"        var nb = alloc(st[1] * 2);\n"
	"        copy(nb, st[0], st[2]);\n"
	"        free(st[0]);\n"
	"        st[0] = nb;\n"
	"        st[1] = st[1] * 2;\n"
	"    }\n"
	"    store8(st[0] + st[2], ch);\n"
	"    st[2] += 1;\n"
	"    return 0;\n"
	"}\n"
	"fn $num(st, v, base, signed) {\n"
	"    if signed && v < 0 { $put(st, '-'); v = -v; }\n"
	"    var d = alloc(24);\n"
	"    var k = 0;\n"
	"    while 1 {\n"
	"        var r = modu(v, base);\n"
	"        if r < 10 { store8(d + k, '0' + r); }\n"
	"        else { store8(d + k, 'a' + r - 10); }\n"
	"        k += 1;\n"
	"        v = divu(v, base);\n"
	"        if v == 0 { break; }\n"
	"    }\n"
	"    while k > 0 { k -= 1; $put(st, load8(d + k)); }\n"
	"    free(d);\n"
	"    return 0;\n"
	"}\n"
	"fn $print(fd, fmt, args) {\n"
	"    var st = alloc(24);\n"
	"    st[1] = 64;\n"
	"    st[0] = alloc(64);\n"
	"    var i = 0;\n"
	"    var a = 0;\n"
	"    while 1 {\n"
	"        var ch = load8(fmt + i);\n"
	"        if ch == 0 { break; }\n"
	"        i += 1;\n"
	"        if ch != '%' { $put(st, ch); continue; }\n"
	"        ch = load8(fmt + i);\n"
	"        i += 1;\n"
	"        if ch == '%' { $put(st, '%'); }\n"
	"        else if ch == 'c' { $put(st, args[a]); a += 1; }\n"
	"        else if ch == 's' {\n"
	"            var s = args[a];\n"
	"            a += 1;\n"
	"            while load8(s) != 0 { $put(st, load8(s)); s += 1; }\n"
	"        }\n"
	"        else if ch == 'd' { $num(st, args[a], 10, 1); a += 1; }\n"
	"        else if ch == 'u' { $num(st, args[a], 10, 0); a += 1; }\n"
	"        else { $num(st, args[a], 16, 0); a += 1; }\n"
	"    }\n"
	"    var n = write(fd, st[0], st[2]);\n"
	"    free(st[0]);\n"
	"    free(st);\n"
	"    free(args);\n"
	"    return n;\n"
	"}\n";

void lang__error(struct lang_comp *c, uint16_t file, uint32_t line, uint32_t col,
	       const char *fmt, ...)
{
	struct lang_diag d;
	char msg[DIAG_MSG_MAX];
	va_list ap;

	memset(&d, 0, sizeof d);
	d.file = file;
	d.line = line;
	d.col = col;
	d.seq = (uint32_t)c->nerrors;
	d.msg = c->dtext.len;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	c->nerrors++;
	fl_buf_put(&c->dtext, msg, strlen(msg) + 1);
	fl_buf_put(&c->diags, &d, sizeof d);
	if (c->diags.failed || c->dtext.failed)
		c->nomem = true;
}

static int cmp_diag(const void *x, const void *y)
{
	const struct lang_diag *a = x, *b = y;

	if (a->file != b->file)
		return a->file < b->file ? -1 : 1;
	if (a->line != b->line)
		return a->line < b->line ? -1 : 1;
	if (a->col != b->col)
		return a->col < b->col ? -1 : 1;
	return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* Source line @s (@len bytes, no newline) and a caret under byte @col
 * (1-based; past the end, just after it). Tabs are kept in the caret line
 * so that it lines up. */
static void show_line(struct fl_buf *out, const char *s, size_t len,
		      uint32_t col)
{
	size_t at = col > 0 ? col - 1 : 0, from = 0, to = len;

	if (at > len)
		at = len;
	if (len > DIAG_LINE_MAX) {
		from = at > DIAG_LINE_MAX / 2 ? at - DIAG_LINE_MAX / 2 : 0;
		if (from > len - DIAG_LINE_MAX)
			from = len - DIAG_LINE_MAX;
		to = from + DIAG_LINE_MAX;
		/* cut between characters, not inside a UTF-8 sequence */
		while (from < at && ((unsigned char)s[from] & 0xc0) == 0x80)
			from++;
		while (to > at && to < len &&
		       ((unsigned char)s[to] & 0xc0) == 0x80)
			to--;
	}
	if (from > 0)
		fl_buf_put_str(out, "...");
	fl_buf_put(out, s + from, to - from);
	fl_buf_put_str(out, to < len ? "...\n" : "\n");
	if (from > 0)
		fl_buf_put_str(out, "   ");
	if (fl_buf_reserve(out, at - from)) {
		for (size_t k = from; k < at; k++)
			out->data[out->len++] = s[k] == '\t' ? '\t' : ' ';
	}
	fl_buf_put_str(out, "^\n");
}

static void print_diags(struct lang_comp *c)
{
	size_t n = c->diags.len / sizeof(struct lang_diag);
	struct lang_diag *d = (struct lang_diag *)(void *)c->diags.data;
	/* Sorted, the diagnostics of a file come in line order: one cursor
	 * (line @lno, @ll bytes at @s) goes through each file once. */
	const char *s = NULL;
	size_t ll = 0;
	uint32_t lno = 0, file = UINT32_MAX;
	/* c->diag is often stderr, unbuffered: written in large pieces */
	struct fl_buf out;

	if (n == 0 || c->diag == NULL)
		return;
	qsort(d, n, sizeof *d, cmp_diag);
	fl_buf_init(&out);
	for (size_t i = 0; i < n; i++) {
		const struct lang_file *f = &c->files[d[i].file];
		const char *end = f->src + f->len;
		bool moved = d[i].file != file;
		if (moved) {
			file = d[i].file;
			s = f->src;
			lno = 1;
		}
		fl_buf_printf(&out, "%s:%u:%u: error: %s\n", f->path, d[i].line,
			      d[i].col, (const char *)c->dtext.data + d[i].msg);
		for (; lno < d[i].line && s < end; lno++) {
			const char *nl = memchr(s, '\n', (size_t)(end - s));
			s = nl != NULL ? nl + 1 : end;
			moved = true;
		}
		if (moved) {
			const char *e = memchr(s, '\n', (size_t)(end - s));
			ll = e != NULL ? (size_t)(e - s) : (size_t)(end - s);
			if (ll > 0 && s[ll - 1] == '\r')
				ll--;
		}
		show_line(&out, s, ll, d[i].col);
		if (out.failed) { /* no memory: say so, and go on */
			fputs("(out of memory printing a diagnostic)\n",
			      c->diag);
			fl_buf_close(&out);
		} else if (out.len >= 1 << 16 || i + 1 == n) {
			fwrite(out.data, 1, out.len, c->diag);
			out.len = 0;
		}
	}
	fl_buf_close(&out);
}

const char *lang_builtin_source(const char *name, size_t *len)
{
	if (strcmp(name, "<prelude>") != 0)
		return NULL;
	*len = sizeof lang__prelude - 1;
	return lang__prelude;
}

int lang_compile(const char *path, const char *src, size_t len,
		 struct vm_module **out, FILE *diag)
{
	struct lang_comp c;
	int rc = 0;

	*out = NULL;
	memset(&c, 0, sizeof c);
	c.diag = diag;
	fl_buf_init(&c.diags);
	fl_buf_init(&c.dtext);
	fl_buf_init(&c.strs);
	fl_buf_init(&c.arena);
	fl_buf_init(&c.items);
	char *p = strdup(path);
	char *s = malloc(len + 1);
	if (p == NULL || s == NULL) {
		free(p);
		free(s);
		c.nomem = true;
	} else {
		memcpy(s, src, len);
		s[len] = 0;
		if (lang__add_file(&c, p, s, len) == 0)
			lang__parse_file(&c, 0);
	}
	/* Name errors are worth reporting even after syntax errors: the parser
	 * keeps every item and `var` whose name it read. */
	if (!c.nomem) {
		/* c.prints may also count a call in a statement dropped
		 * after a syntax error: the prelude is compiled for nothing
		 * then, but no module is built anyway. */
		if (c.prints) {
			char *pp = strdup("<prelude>"); /* lang_builtin_source() */
			char *ps = strdup(lang__prelude);
			int f = (pp && ps) ? lang__add_file(&c, pp, ps,
							  strlen(ps))
					   : (free(pp), free(ps),
					      c.nomem = true, -1);
			if (f > 0)
				lang__parse_file(&c, (uint16_t)f);
		}
	}
	if (!c.nomem)
		rc = lang__generate(&c, out);
	/* Name errors found by the generator are reported too. */
	if (rc == 0 && c.nerrors > 0)
		rc = FL_ESYNTAX;
	if (c.nomem || c.strs.failed)
		rc = FL_ENOMEM;
	if (rc != 0 && *out != NULL) {
		vm_module_free(*out);
		*out = NULL;
	}
	print_diags(&c);
	for (size_t i = 0; i < c.nfiles; i++) {
		free(c.files[i].path);
		free(c.files[i].canon);
		free(c.files[i].src);
	}
	free(c.files);
	size_t nch = c.arena.len / sizeof(struct lang_node *);
	for (size_t i = 0; i < nch; i++)
		free(((struct lang_node **)(void *)c.arena.data)[i]);
	fl_buf_close(&c.arena);
	fl_buf_close(&c.diags);
	fl_buf_close(&c.dtext);
	fl_buf_close(&c.strs);
	fl_buf_close(&c.items);
	return rc;
}
