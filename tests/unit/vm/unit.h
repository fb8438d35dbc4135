/* Helpers shared by the VM unit tests: build struct vm_module values in
 * memory, the way the assembler would, without going through any front end.
 *
 * Every helper grows the module's arrays with realloc(), so the module stays
 * something vm_module_free() releases. Allocation failures abort the test
 * binary (there is nothing useful a test can do about them). Functions are
 * appended contiguously: unit_func() sets code_off to the current end of the
 * code and code_len to the size of what it appends, which is exactly what
 * the verifier requires.
 *
 * The line table comes out canonical, as the verifier also requires (it
 * starts at code offset 0 and consecutive entries differ in line): each
 * function that brings code gets an entry at its first instruction, one line
 * after the previous entry's (line 1 for the first). unit_line() changes the
 * line of an existing entry or appends one; unit_lines_each() gives every
 * instruction a line of its own, so that a diagnostic's line pins the exact
 * instruction. Tests that want a broken table edit the fields afterwards. */
#ifndef FLOCK_TESTS_UNIT_VM_UNIT_H
#define FLOCK_TESTS_UNIT_VM_UNIT_H

#include "vm/vm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One instruction for CODE(): an opcode and its operand (ignored for
 * instructions without one). */
struct unit_insn {
	enum vm_op op;
	int64_t x;
};

/* CODE(I(PUSH, 1), I(RET)) -- an instruction list for unit_func(),
 * terminated by a VM_OP__COUNT sentinel. I(NAME) or I(NAME, operand). */
#define I(...) UNIT_I_(__VA_ARGS__, 0, 0)
#define UNIT_I_(name, x, ...)                                                  \
	{                                                                      \
		VM_OP_##name, (x)                                              \
	}
#define CODE(...) ((const struct unit_insn[]){__VA_ARGS__, {VM_OP__COUNT, 0}})

static inline void *unit_grow(void *p, size_t n, size_t size)
{
	p = realloc(p, (n ? n : 1) * size);
	if (p == NULL) {
		fprintf(stderr, "unit: out of memory\n");
		abort();
	}
	return p;
}

static inline char *unit_strdup(const char *s)
{
	char *d = strdup(s);

	if (d == NULL) {
		fprintf(stderr, "unit: out of memory\n");
		abort();
	}
	return d;
}

static inline struct vm_module *unit_module(void)
{
	struct vm_module *m = vm_module_new();

	if (m == NULL) {
		fprintf(stderr, "unit: out of memory\n");
		abort();
	}
	return m;
}

static inline void unit_source(struct vm_module *m, const char *name)
{
	free(m->source);
	m->source = unit_strdup(name);
}

static inline void unit_segment(struct vm_module *m, enum vm_segment seg,
				const void *bytes, uint32_t len)
{
	uint8_t **p = seg == VM_SEG_RODATA ? &m->rodata : &m->data;
	uint32_t *n = seg == VM_SEG_RODATA ? &m->rodata_len : &m->data_len;

	*p = unit_grow(*p, len, 1);
	if (len)
		memcpy(*p, bytes, len);
	*n = len;
}

static inline uint32_t unit_sym(struct vm_module *m, const char *name,
				enum vm_segment seg, uint32_t off)
{
	m->syms = unit_grow(m->syms, m->nsyms + 1, sizeof *m->syms);
	m->syms[m->nsyms] = (struct vm_symbol){
	    .name = unit_strdup(name), .segment = (uint8_t)seg, .offset = off};
	return m->nsyms++;
}

/* From code offset @code_off on, the source line is @line: the entry at
 * @code_off gets @line if there is one (so a test can renumber the entry
 * unit_func() made), else a new entry is appended -- after the others, in
 * whatever order the test asks for. */
static inline void unit_line(struct vm_module *m, uint32_t code_off,
			     uint32_t line)
{
	for (uint32_t i = 0; i < m->nlines; i++)
		if (m->lines[i].code_off == code_off) {
			m->lines[i].line = line;
			return;
		}
	m->lines = unit_grow(m->lines, m->nlines + 1, sizeof *m->lines);
	m->lines[m->nlines++] = (struct vm_line){code_off, line, 0};
}

/* Append source file @name to the line table's files; its index (> 0). */
static inline uint32_t unit_file(struct vm_module *m, const char *name)
{
	m->files = unit_grow(m->files, m->nfiles + 1, sizeof *m->files);
	m->files[m->nfiles++] = unit_strdup(name);
	return m->nfiles;
}

/* Put the line entry at @code_off (which must exist) in file @file. */
static inline void unit_line_file(struct vm_module *m, uint32_t code_off,
				  uint32_t file)
{
	for (uint32_t i = 0; i < m->nlines; i++)
		if (m->lines[i].code_off == code_off)
			m->lines[i].file = file;
}

/* The line after the last entry's: a new entry on it never repeats. */
static inline uint32_t unit_next_line(const struct vm_module *m)
{
	return m->nlines ? m->lines[m->nlines - 1].line + 1 : 1;
}

/* Append @len raw bytes of code as a new function, with a line-table entry
 * at its first byte (none when @len is 0); returns its index. */
static inline uint32_t unit_func_raw(struct vm_module *m, const char *name,
				     uint32_t nargs, uint32_t nlocals,
				     const void *code, uint32_t len)
{
	struct vm_function *f;

	m->funcs = unit_grow(m->funcs, m->nfuncs + 1, sizeof *m->funcs);
	f = &m->funcs[m->nfuncs];
	*f = (struct vm_function){.name = unit_strdup(name),
				  .nargs = nargs,
				  .nlocals = nlocals,
				  .code_off = m->code_len,
				  .code_len = len};
	m->code = unit_grow(m->code, (size_t)m->code_len + len, 1);
	if (len) {
		memcpy(m->code + m->code_len, code, len);
		unit_line(m, m->code_len, unit_next_line(m));
	}
	m->code_len += len;
	return m->nfuncs++;
}

/* Encode @code (a CODE() list) with vm_insn_encode() and append it as a new
 * function; returns its index. */
static inline uint32_t unit_func(struct vm_module *m, const char *name,
				 uint32_t nargs, uint32_t nlocals,
				 const struct unit_insn *code)
{
	struct fl_buf b;
	uint32_t i;

	fl_buf_init(&b);
	for (; code->op != VM_OP__COUNT; code++)
		vm_insn_encode(&b, code->op, code->x);
	if (fl_buf_failed(&b)) {
		fprintf(stderr, "unit: out of memory\n");
		abort();
	}
	i = unit_func_raw(m, name, nargs, nlocals, b.data, (uint32_t)b.len);
	fl_buf_close(&b);
	return i;
}

/* Replace the line table with one entry per instruction: the instruction
 * at (module) code offset X is on line X + 1. Each function's code is
 * decoded from its start up to the first byte that does not decode, which
 * gets an entry too (an unknown opcode has a line like any instruction), so
 * every instruction the verifier can complain about has its own line. The
 * function table must tile the code (the verifier's first check). */
static inline void unit_lines_each(struct vm_module *m)
{
	m->nlines = 0;
	for (uint32_t i = 0; i < m->nfuncs; i++) {
		const struct vm_function *f = &m->funcs[i];
		uint32_t end = f->code_off + f->code_len;
		struct vm_insn in;

		for (uint32_t off = f->code_off; off < end; off += in.size) {
			unit_line(m, off, off + 1);
			if (vm_insn_decode(m->code, end, off, &in, NULL))
				break;
		}
	}
}

/* Encoded size of one instruction of @op. */
static inline uint32_t unit_isize(enum vm_op op)
{
	return 1 + (uint32_t)vm_operand_size(vm_opinfo[op].operand);
}

#endif
