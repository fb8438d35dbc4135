/* The disassembler: struct vm_module out as .fla text (asm_disasm()).
 *
 * It owns one promise: for any module that passes vm_verify(), assembling
 * the text (asm.c) gives back a module whose vm_module_encode() bytes are
 * identical. Everything printed is what asm_lex.c/asm.c read back:
 *   .source "NAME"
 *   .rodata / .data   symbols in table order (sorted by offset), each on
 *                     its own line at its offset, the bytes between them as
 *                     .bytes strings (\xNN for non-printables, split so that
 *                     a hex digit never follows \xNN inside one string) and
 *                     runs of zero bytes as .zero N; empty segments without
 *                     symbols are left out
 *   .text             func NAME NARGS NLOCALS ... end in table order, code
 *                     labels L<offset> where jumps land, push SYMNAME for
 *                     PUSHA, call NAME, immediates in decimal, and .line N
 *                     (.line N "FILE" for file table entries) before each
 *                     instruction where a line-table entry starts (.line is
 *                     sticky in the assembler, which adds entries only where
 *                     the line or file changes and numbers files in order
 *                     of first use, so the tables come back as they were).
 *
 * Failure modes: the module is only borrowed and never trusted beyond not
 * crashing: code that does not decode ends its function with a comment, and
 * out-of-range offsets are clamped, so unverified modules print as well as
 * they can. Write errors on @out give FL_EIO. No global state. */
#include "lang/lang.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define INDENT	    "        "
#define LINE_BUDGET 64 /* characters of string per .bytes line */

static bool is_hex(uint8_t c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
	       (c >= 'A' && c <= 'F');
}

static bool is_plain(uint8_t c)
{
	return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
}

/* Characters @c takes inside a string. */
static int cost(uint8_t c)
{
	if (is_plain(c))
		return 1;
	if (c == '"' || c == '\\' || c == '\n' || c == '\t' || c == '\r')
		return 2;
	return 4;
}

/* Write @n bytes as a string literal. A hex digit right after a \xNN
 * escape starts a new string item when @split (in a .bytes list), else is
 * escaped too, so no reader can take it as a third hex digit. */
static void quote(FILE *out, const uint8_t *p, size_t n, bool split)
{
	bool after_hex = false;

	fputc('"', out);
	for (size_t i = 0; i < n; i++) {
		uint8_t c = p[i];
		if (after_hex && is_hex(c)) {
			if (!split) {
				fprintf(out, "\\x%02x", c);
				continue;
			}
			fputs("\", \"", out);
		}
		after_hex = false;
		if (is_plain(c))
			fputc(c, out);
		else if (c == '"')
			fputs("\\\"", out);
		else if (c == '\\')
			fputs("\\\\", out);
		else if (c == '\n')
			fputs("\\n", out);
		else if (c == '\t')
			fputs("\\t", out);
		else if (c == '\r')
			fputs("\\r", out);
		else {
			fprintf(out, "\\x%02x", c);
			after_hex = true;
		}
	}
	fputc('"', out);
}

/* Zero bytes at @p, counting at most @max. */
static size_t zeros(const uint8_t *p, size_t n, size_t max)
{
	size_t z = 0;

	while (z < n && z < max && p[z] == 0)
		z++;
	return z;
}

/* Write @n data bytes as .zero and .bytes lines. */
static void put_bytes(FILE *out, const uint8_t *p, size_t n)
{
	const size_t zrun = 8;
	size_t i = 0;

	while (i < n) {
		size_t z = zeros(p + i, n - i, SIZE_MAX), j = i;
		int budget = LINE_BUDGET;

		if (z >= zrun) {
			fprintf(out, INDENT ".zero %zu\n", z);
			i += z;
			continue;
		}
		/* A chunk: ends after a newline, at the budget, or before a
		 * run of zeros worth a .zero line. */
		while (j < n && budget > 0) {
			if (j > i && p[j] == 0 &&
			    zeros(p + j, n - j, zrun) >= zrun)
				break;
			budget -= cost(p[j]);
			if (j > i && cost(p[j - 1]) == 4 && is_hex(p[j]))
				budget -= 4; /* the split: ", " */
			if (p[j++] == '\n')
				break;
		}
		fputs(INDENT ".bytes ", out);
		quote(out, p + i, j - i, true);
		fputc('\n', out);
		i = j;
	}
}

/* ---- Data ---- */

/* Symbols by (segment, offset), ties in table order. */
static int cmp_sym(const void *x, const void *y)
{
	const struct vm_symbol *p = *(const struct vm_symbol *const *)x;
	const struct vm_symbol *q = *(const struct vm_symbol *const *)y;

	if (p->segment != q->segment)
		return p->segment < q->segment ? -1 : 1;
	if (p->offset != q->offset)
		return p->offset < q->offset ? -1 : 1;
	return p < q ? -1 : p > q;
}

static void put_segment(FILE *out, const struct vm_module *m,
			const struct vm_symbol *const *order,
			enum vm_segment seg)
{
	const uint8_t *bytes = seg == VM_SEG_RODATA ? m->rodata : m->data;
	uint32_t len = seg == VM_SEG_RODATA ? m->rodata_len : m->data_len;
	uint32_t pos = 0;
	bool any = len > 0;

	for (uint32_t i = 0; i < m->nsyms; i++)
		any |= m->syms[i].segment == seg;
	if (!any)
		return;
	fputs(seg == VM_SEG_RODATA ? ".rodata\n" : ".data\n", out);
	for (uint32_t i = 0; i < m->nsyms; i++) {
		const struct vm_symbol *s = order[i];
		uint32_t off = s->offset < len ? s->offset : len;
		if (s->segment != seg)
			continue;
		if (off > pos) {
			put_bytes(out, bytes + pos, off - pos);
			pos = off;
		}
		fprintf(out, "%s:\n", s->name);
	}
	if (pos < len)
		put_bytes(out, bytes + pos, len - pos);
}

/* ---- Code ---- */

static void put_insn(FILE *out, const struct vm_module *m,
		     const struct vm_insn *in)
{
	const struct vm_opinfo *oi = &vm_opinfo[in->op];
	uint32_t v = (uint32_t)in->imm;

	fprintf(out, INDENT "%s", oi->mnemonic);
	switch (oi->operand) {
	case VM_OPND_NONE:
		break;
	case VM_OPND_IMM:
		fprintf(out, " %" PRId64, in->imm);
		break;
	case VM_OPND_SLOT:
	case VM_OPND_COUNT:
		fprintf(out, " %" PRIu32, v);
		break;
	case VM_OPND_LABEL:
		fprintf(out, " L%" PRIu32, v);
		break;
	case VM_OPND_ADDR:
		if (v < m->nsyms)
			fprintf(out, " %s", m->syms[v].name);
		else
			fprintf(out, " ?symbol%" PRIu32, v);
		break;
	case VM_OPND_FUNC:
		if (v < m->nfuncs)
			fprintf(out, " %s", m->funcs[v].name);
		else
			fprintf(out, " ?function%" PRIu32, v);
		break;
	}
	fputc('\n', out);
}

/* Print function @f; *@li is the next line-table entry to announce. */
static void put_source_line(FILE *out, const struct asm_text *src, uint32_t n);

static int put_func(FILE *out, const struct vm_module *m,
		    const struct vm_function *f, uint32_t *li,
		    const struct asm_text *src)
{
	uint32_t start = f->code_off < m->code_len ? f->code_off : m->code_len;
	uint32_t len = f->code_len < m->code_len - start ? f->code_len
							 : m->code_len - start;
	const uint8_t *code = m->code + start;
	uint8_t *target = calloc((size_t)len + 1, 1);
	struct fl_err err;
	struct vm_insn in;
	uint32_t off;

	if (target == NULL)
		return FL_ENOMEM;
	for (off = 0; off < len; off += in.size) {
		if (vm_insn_decode(code, len, off, &in, NULL) != 0)
			break;
		if (vm_opinfo[in.op].operand == VM_OPND_LABEL &&
		    (uint64_t)in.imm <= len)
			target[in.imm] = 1;
	}

	fprintf(out, "func %s %" PRIu32 " %" PRIu32 "\n", f->name, f->nargs,
		f->nlocals);
	for (off = 0; off < len; off += in.size) {
		bool announce = false;
		uint32_t line = 0, file = 0;

		if (target[off])
			fprintf(out, "L%" PRIu32 ":\n", off);
		while (*li < m->nlines &&
		       m->lines[*li].code_off <= start + off) {
			line = m->lines[*li].line;
			file = m->lines[(*li)++].file;
			announce = true;
		}
		if (announce) {
			fprintf(out, INDENT ".line %" PRIu32, line);
			if (file > 0) {
				const char *fn = vm_module_file(m, file);
				fputc(' ', out);
				quote(out, (const uint8_t *)fn, strlen(fn),
				      false);
			}
			fputc('\n', out);
			if (src != NULL && file <= m->nfiles)
				put_source_line(out, &src[file], line);
		}
		if (vm_insn_decode(code, len, off, &in, &err) != 0) {
			fprintf(out, INDENT "; cannot decode: %s\n", err.msg);
			break;
		}
		put_insn(out, m, &in);
	}
	if (off == len && target[len])
		fprintf(out, "L%" PRIu32 ":\n", len);
	fputs("end\n", out);
	free(target);
	return 0;
}

/* Print line @n (1-based) of @src as a comment, if it exists. */
static void put_source_line(FILE *out, const struct asm_text *src, uint32_t n)
{
	const char *p = src->text, *end = src->text + src->len, *e;

	if (p == NULL)
		return;
	for (uint32_t i = 1; i < n && p < end; i++) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		p = nl ? nl + 1 : end;
	}
	if (p >= end)
		return;
	e = memchr(p, '\n', (size_t)(end - p));
	if (e == NULL)
		e = end;
	while (p < e && (*p == ' ' || *p == '\t'))
		p++;
	while (e > p && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
		e--;
	if (e == p)
		return;
	fputs(INDENT "; ", out);
	for (const char *q = p; q < e && q - p < 160; q++)
		fputc(*q == '\0' ? ' ' : *q, out);
	fputc('\n', out);
}

int asm_disasm(const struct vm_module *m, FILE *out)
{
	return asm_disasm_source(m, NULL, out);
}

int asm_disasm_source(const struct vm_module *m, const struct asm_text *texts,
		      FILE *out)
{
	const struct vm_symbol **order =
	    malloc((m->nsyms ? m->nsyms : 1) * sizeof *order);
	uint32_t li = 0;
	int rc = 0;

	if (order == NULL)
		return FL_ENOMEM;
	for (uint32_t i = 0; i < m->nsyms; i++)
		order[i] = &m->syms[i];
	qsort(order, m->nsyms, sizeof *order, cmp_sym);

	fputs(".source ", out);
	quote(out, (const uint8_t *)m->source, strlen(m->source), false);
	fputc('\n', out);
	put_segment(out, m, order, VM_SEG_RODATA);
	put_segment(out, m, order, VM_SEG_DATA);
	fputs(".text\n", out);
	for (uint32_t i = 0; i < m->nfuncs && rc == 0; i++)
		rc = put_func(out, m, &m->funcs[i], &li, texts);
	free(order);
	if (rc == 0 && (fflush(out) != 0 || ferror(out)))
		rc = FL_EIO;
	return rc;
}
