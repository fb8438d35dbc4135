/* The verifier: everything the interpreter trusts, proved once at load.
 *
 * After vm_verify() succeeds: names are valid, unique identifiers; symbols
 * lie inside their segments, sorted; functions tile the code exactly; every
 * byte of code decodes to known instructions; operands are in range (slots
 * below the frame size, symbols and functions exist, jump targets are
 * instruction starts inside the same function); control never runs off the
 * end of a function; along every path the operand stack depth at each
 * instruction is the same, never below what the instruction pops, and at
 * most VM_FRAME_MAX; line entries sit on instruction starts. The
 * interpreter therefore checks none of this per instruction; it only
 * checks the frame fits the stack on each call (using max_stack).
 *
 * Failure: FL_EFORMAT with a message naming the function, the code offset
 * and the source line where known. Never crashes on any struct vm_module
 * that vm_module_decode() produced. Pure; any thread. */
#include "vm/vm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct verifier {
	struct vm_module *m;
	struct fl_err *err;
	uint8_t *start;  /* code_len flags: 1 = an instruction starts here */
	int32_t *depth;  /* code_len: stack depth on entry, -1 = not reached */
	uint32_t *work;  /* worklist of code offsets */
	size_t nwork;
};

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Names valid and unique; @names has @n entries (the array is sorted). */
static int check_names(struct verifier *v, const char **names, uint32_t n,
		       const char *what)
{
	for (uint32_t i = 0; i < n; i++)
		if (!vm_name_valid(names[i], strlen(names[i])))
			return fl_err_set(v->err, FL_EFORMAT,
					  "%s name '%.64s' is not an identifier",
					  what, names[i]);
	qsort(names, n, sizeof *names, cmp_str);
	for (uint32_t i = 1; i < n; i++)
		if (strcmp(names[i - 1], names[i]) == 0)
			return fl_err_set(v->err, FL_EFORMAT,
					  "duplicate %s name '%s'", what,
					  names[i]);
	return 0;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* No file is listed twice (the assembler's `.line N "file"` could not
 * tell the two apart). */
static int check_file_names(struct verifier *v)
{
	const struct vm_module *m = v->m;
	char **sorted;
	int rc = 0;

	if (m->nfiles < 2)
		return 0;
	sorted = malloc(m->nfiles * sizeof *sorted);
	if (sorted == NULL)
		return fl_err_set(v->err, FL_ENOMEM, "out of memory");
	memcpy(sorted, m->files, m->nfiles * sizeof *sorted);
	qsort(sorted, m->nfiles, sizeof *sorted, cmp_names);
	for (uint32_t i = 1; i < m->nfiles && rc == 0; i++)
		if (strcmp(sorted[i - 1], sorted[i]) == 0)
			rc = fl_err_set(v->err, FL_EFORMAT,
					"source file '%.200s' is listed twice",
					sorted[i]);
	free(sorted);
	return rc;
}

static int check_tables(struct verifier *v)
{
	struct vm_module *m = v->m;
	uint32_t n = m->nsyms > m->nfuncs ? m->nsyms : m->nfuncs;
	const char **names = malloc((n ? n : 1) * sizeof *names);
	uint32_t off = 0;
	int rc;

	if (names == NULL)
		return fl_err_set(v->err, FL_ENOMEM, "out of memory");
	for (uint32_t i = 0; i < m->nsyms; i++)
		names[i] = m->syms[i].name;
	rc = check_names(v, names, m->nsyms, "symbol");
	for (uint32_t i = 0; rc == 0 && i < m->nfuncs; i++)
		names[i] = m->funcs[i].name;
	if (rc == 0)
		rc = check_names(v, names, m->nfuncs, "function");
	free(names);
	if (rc)
		return rc;

	for (uint32_t i = 0; i < m->nsyms; i++) {
		const struct vm_symbol *s = &m->syms[i];
		uint32_t len = s->segment == VM_SEG_RODATA ? m->rodata_len
							   : m->data_len;
		if (s->segment > VM_SEG_DATA)
			return fl_err_set(v->err, FL_EFORMAT,
					  "symbol '%s': unknown segment %u",
					  s->name, s->segment);
		if (s->offset > len)
			return fl_err_set(v->err, FL_EFORMAT,
					  "symbol '%s': offset %u outside its "
					  "%u-byte segment",
					  s->name, s->offset, len);
		if (i > 0 && (s[-1].segment > s->segment ||
			      (s[-1].segment == s->segment &&
			       s[-1].offset > s->offset)))
			return fl_err_set(v->err, FL_EFORMAT,
					  "symbol '%s' out of order", s->name);
	}

	for (uint32_t i = 0; i < m->nfuncs; i++) {
		const struct vm_function *f = &m->funcs[i];
		if (f->code_off != off || f->code_len == 0 ||
		    f->code_len > m->code_len - off)
			return fl_err_set(v->err, FL_EFORMAT,
					  "function '%s': code range %u+%u does "
					  "not follow the previous function",
					  f->name, f->code_off, f->code_len);
		if (f->nargs > VM_FRAME_MAX ||
		    f->nlocals > VM_FRAME_MAX - f->nargs)
			return fl_err_set(v->err, FL_EFORMAT,
					  "function '%s': %u arguments + %u "
					  "locals exceed %u slots",
					  f->name, f->nargs, f->nlocals,
					  VM_FRAME_MAX);
		off += f->code_len;
	}
	if (off != m->code_len)
		return fl_err_set(v->err, FL_EFORMAT,
				  "%u bytes of code belong to no function",
				  m->code_len - off);

	/* The line table is canonical -- it starts at the first instruction,
	 * each entry changes the line or file, the file table lists each
	 * file once in order of first use -- so that every verified module
	 * disassembles to text that assembles back to the same bytes. */
	uint32_t next = 1; /* files are first named in table order */

	if (m->code_len > 0 && (m->nlines == 0 || m->lines[0].code_off != 0))
		return fl_err_set(v->err, FL_EFORMAT,
				  "the line table does not start at the first "
				  "instruction");
	for (uint32_t i = 0; i < m->nlines; i++) {
		if (m->lines[i].line == 0 || m->lines[i].code_off >= m->code_len ||
		    (i > 0 && m->lines[i].code_off <= m->lines[i - 1].code_off))
			return fl_err_set(v->err, FL_EFORMAT,
					  "line table entry %u (offset %u, line "
					  "%u) is out of order or range",
					  i, m->lines[i].code_off,
					  m->lines[i].line);
		if (m->lines[i].file > m->nfiles)
			return fl_err_set(v->err, FL_EFORMAT,
					  "line table entry %u names source "
					  "file %u of %u",
					  i, m->lines[i].file, m->nfiles);
		if (m->lines[i].file > next)
			return fl_err_set(v->err, FL_EFORMAT,
					  "line table entry %u names source "
					  "file %u before file %u",
					  i, m->lines[i].file, next);
		if (m->lines[i].file == next)
			next++;
		if (i > 0 && m->lines[i].line == m->lines[i - 1].line &&
		    m->lines[i].file == m->lines[i - 1].file)
			return fl_err_set(v->err, FL_EFORMAT,
					  "line table entries %u and %u repeat "
					  "line %u",
					  i - 1, i, m->lines[i].line);
	}
	if (next <= m->nfiles)
		return fl_err_set(v->err, FL_EFORMAT,
				  "source file %u ('%s') is not in the line "
				  "table", next, m->files[next - 1]);
	return check_file_names(v);
}

/* "FILE:LINE: error: verification failed in function 'F': WHAT", the shape
 * of every other diagnostic. check_tables() has made sure every
 * instruction has a line. */
static int insn_error(struct verifier *v, const struct vm_function *f,
		      uint32_t off, const char *fmt, const char *detail,
		      long a, long b)
{
	char what[FL_ERR_MAX];
	const char *file;
	uint32_t line = vm_module_line(v->m, off, &file);

	snprintf(what, sizeof what, fmt, detail, a, b);
	return fl_err_set(v->err, FL_EFORMAT,
			  "%s:%u: error: verification failed in function "
			  "'%s': %s",
			  file, line, f->name, what);
}

static const char *plural(long n)
{
	return n == 1 ? "" : "s";
}

/* Decode every instruction of @f and check its operand. */
static int check_operands(struct verifier *v, const struct vm_function *f)
{
	const struct vm_module *m = v->m;
	uint32_t end = f->code_off + f->code_len;
	struct vm_insn in;

	for (uint32_t off = f->code_off; off < end; off += in.size) {
		struct fl_err e;
		uint64_t x;
		if (vm_insn_decode(m->code, end, off, &in, &e))
			return insn_error(v, f, off, "%s", e.msg, 0, 0);
		v->start[off] = 1;
		x = (uint64_t)in.imm;
		switch (vm_opinfo[in.op].operand) {
		case VM_OPND_ADDR:
			if (x >= m->nsyms)
				return insn_error(v, f, off,
						  "%s: symbol %ld does not exist",
						  vm_opinfo[in.op].mnemonic,
						  (long)x, 0);
			break;
		case VM_OPND_SLOT:
			if (x >= (uint64_t)f->nargs + f->nlocals)
				return insn_error(v, f, off,
						  "%s: slot %ld outside a %ld-slot "
						  "frame",
						  vm_opinfo[in.op].mnemonic,
						  (long)x,
						  (long)(f->nargs + f->nlocals));
			break;
		case VM_OPND_COUNT:
			if (x >= VM_FRAME_MAX)
				return insn_error(v, f, off,
						  "%s: depth %ld too large",
						  vm_opinfo[in.op].mnemonic,
						  (long)x, 0);
			break;
		case VM_OPND_FUNC:
			if (x >= m->nfuncs)
				return insn_error(v, f, off,
						  "%s: function %ld does not exist",
						  vm_opinfo[in.op].mnemonic,
						  (long)x, 0);
			break;
		case VM_OPND_LABEL:
			if (x >= f->code_len)
				return insn_error(v, f, off,
						  "%s: jump to offset %ld outside "
						  "its function",
						  vm_opinfo[in.op].mnemonic,
						  (long)x, 0);
			break;
		default:
			break;
		}
	}
	return 0;
}

/* Every jump, reachable or not, lands on an instruction start: a module's
 * text form names every target with a label. */
static int check_targets(struct verifier *v, const struct vm_function *f)
{
	uint32_t end = f->code_off + f->code_len;
	struct vm_insn in;

	for (uint32_t off = f->code_off; off < end; off += in.size) {
		vm_insn_decode(v->m->code, end, off, &in, NULL);
		if (vm_opinfo[in.op].operand == VM_OPND_LABEL &&
		    !v->start[f->code_off + (uint32_t)in.imm])
			return insn_error(v, f, off,
					  "%s: jump into the middle of an "
					  "instruction (offset %ld)",
					  vm_opinfo[in.op].mnemonic,
					  (long)in.imm, 0);
	}
	return 0;
}

static int flow_to(struct verifier *v, const struct vm_function *f,
		   uint32_t from, uint32_t to, int32_t depth)
{
	if (to >= f->code_off + f->code_len)
		return insn_error(v, f, from,
				  "%s: control runs off the end of the function",
				  vm_opinfo[v->m->code[from]].mnemonic, 0, 0);
	/* check_targets() made every target an instruction start. */
	if (v->depth[to] < 0) {
		v->depth[to] = depth;
		v->work[v->nwork++] = to;
	} else if (v->depth[to] != depth) {
		return insn_error(v, f, to,
				  "%sinconsistent stack depth where paths join "
				  "(%ld vs %ld)",
				  "", (long)v->depth[to], (long)depth);
	}
	return 0;
}

/* Abstract interpretation of stack depth over @f's control flow graph. */
static int check_flow(struct verifier *v, struct vm_function *f)
{
	const struct vm_module *m = v->m;
	int32_t max = 0;
	int rc;

	v->nwork = 0;
	v->depth[f->code_off] = 0;
	v->work[v->nwork++] = f->code_off;
	while (v->nwork > 0) {
		uint32_t off = v->work[--v->nwork];
		int32_t d = v->depth[off];
		const struct vm_opinfo *oi;
		struct vm_insn in;
		int32_t pops, need;

		vm_insn_decode(m->code, m->code_len, off, &in, NULL);
		oi = &vm_opinfo[in.op];
		pops = oi->pops == VM_ARITY
			       ? (int32_t)m->funcs[in.imm].nargs
			       : oi->pops;
		need = in.op == VM_OP_PICK ? (int32_t)in.imm + 1 : pops;
		if (d < need) {
			char fmt[96];
			snprintf(fmt, sizeof fmt,
				 "stack underflow: '%%s' needs %%ld word%s, "
				 "the stack has %%ld",
				 plural(need));
			return insn_error(v, f, off, fmt, oi->mnemonic,
					  (long)need, (long)d);
		}
		d = d - pops + oi->pushes;
		if (d > VM_FRAME_MAX)
			return insn_error(v, f, off,
					  "%s: stack deeper than %ld words",
					  oi->mnemonic, VM_FRAME_MAX, 0);
		if (d > max)
			max = d;
		if (oi->operand == VM_OPND_LABEL) {
			rc = flow_to(v, f, off, f->code_off + (uint32_t)in.imm, d);
			if (rc)
				return rc;
		}
		if (!(oi->flags & VM_OPF_END)) {
			rc = flow_to(v, f, off, off + in.size, d);
			if (rc)
				return rc;
		}
	}
	f->max_stack = (uint32_t)max;
	return 0;
}

int vm_verify(struct vm_module *m, bool need_main, struct fl_err *err)
{
	struct verifier v = {.m = m, .err = err};
	size_t n = m->code_len ? m->code_len : 1;
	int rc;

	rc = check_tables(&v);
	if (rc)
		return rc;
	v.start = calloc(n, 1);
	v.depth = malloc(n * sizeof *v.depth);
	v.work = malloc(n * sizeof *v.work);
	if (v.start == NULL || v.depth == NULL || v.work == NULL) {
		rc = fl_err_set(err, FL_ENOMEM, "out of memory");
		goto out;
	}
	memset(v.depth, 0xff, n * sizeof *v.depth);
	for (uint32_t i = 0; i < m->nfuncs; i++) {
		rc = check_operands(&v, &m->funcs[i]);
		if (rc)
			goto out;
	}
	for (uint32_t i = 0; i < m->nfuncs; i++) {
		rc = check_targets(&v, &m->funcs[i]);
		if (rc)
			goto out;
	}
	for (uint32_t i = 0; i < m->nlines; i++) {
		if (!v.start[m->lines[i].code_off]) {
			rc = fl_err_set(err, FL_EFORMAT,
					"line table entry %u points into the "
					"middle of an instruction",
					i);
			goto out;
		}
	}
	for (uint32_t i = 0; i < m->nfuncs; i++) {
		rc = check_flow(&v, &m->funcs[i]);
		if (rc)
			goto out;
	}
	if (need_main) {
		int f = vm_module_find_func(m, "main");
		if (f < 0)
			rc = fl_err_set(err, FL_EFORMAT,
					"no function 'main' to start");
		else if (m->funcs[f].nargs != 0)
			rc = fl_err_set(err, FL_EFORMAT,
					"'main' takes %u argument%s; it must "
					"take none",
					m->funcs[f].nargs,
					plural(m->funcs[f].nargs));
	}
out:
	free(v.start);
	free(v.work);
	if (rc == 0) {
		free(m->depth);
		m->depth = v.depth;
	} else {
		free(v.depth);
	}
	return rc;
}
