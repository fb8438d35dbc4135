/* Unit tests for the .fla assembler and the disassembler (src/lang/asm*.c):
 * module fields for small programs, one test per diagnostic kind, the
 * round trip assemble -> encode -> disasm -> assemble -> encode, and
 * hostile input (random and mutated bytes) that must only produce
 * diagnostics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lang/lang.h"

/* ---- Helpers ---- */

/* Assemble @src as "t.fla"; *@diag gets the diagnostics (caller frees). */
static int assemble_n(const char *src, size_t len, struct vm_module **m,
		      char **diag)
{
	size_t dlen = 0;
	FILE *f = open_memstream(diag, &dlen);
	int rc;

	assert_non_null(f);
	rc = asm_assemble("t.fla", src, len, m, f);
	assert_int_equal(fclose(f), 0);
	if (rc == 0)
		assert_non_null(*m);
	else
		assert_null(*m);
	return rc;
}

static int assemble(const char *src, struct vm_module **m, char **diag)
{
	return assemble_n(src, strlen(src), m, diag);
}

/* Assemble @src, which must be correct. */
static struct vm_module *ok(const char *src)
{
	struct vm_module *m = NULL;
	char *diag = NULL;
	int rc = assemble(src, &m, &diag);

	if (rc != 0)
		fprintf(stderr, "unexpected diagnostics:\n%s", diag);
	assert_int_equal(rc, 0);
	assert_string_equal(diag, "");
	free(diag);
	return m;
}

/* Assemble @src, which must fail with the diagnostic line @want among
 * exactly @count diagnostics. */
static void bad(const char *src, const char *want, int count)
{
	struct vm_module *m = NULL;
	char *diag = NULL;
	int lines = 0;

	assert_int_equal(assemble(src, &m, &diag), FL_ESYNTAX);
	if (strstr(diag, want) == NULL)
		fprintf(stderr, "wanted: %s\ngot:\n%s", want, diag);
	assert_non_null(strstr(diag, want));
	for (const char *p = diag; *p; p++)
		lines += *p == '\n';
	if (lines != count)
		fprintf(stderr, "wanted %d diagnostics, got:\n%s", count, diag);
	assert_int_equal(lines, count);
	free(diag);
}

/* The instructions of function @fi, decoded. */
static int decode(const struct vm_module *m, uint32_t fi, struct vm_insn *out,
		  int max)
{
	const struct vm_function *f = &m->funcs[fi];
	int n = 0;

	for (uint32_t off = 0; off < f->code_len; n++) {
		assert_true(n < max);
		assert_int_equal(vm_insn_decode(m->code + f->code_off,
						f->code_len, off, &out[n],
						NULL),
				 0);
		off += out[n].size;
	}
	return n;
}

static void expect_insn(const struct vm_insn *in, enum vm_op op, int64_t imm)
{
	assert_int_equal(in->op, op);
	assert_true(in->imm == imm);
}

static struct fl_buf encode(const struct vm_module *m)
{
	struct fl_buf b;

	fl_buf_init(&b);
	assert_int_equal(vm_module_encode(m, &b), 0);
	return b;
}

static char *disasm(const struct vm_module *m)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	assert_non_null(f);
	assert_int_equal(asm_disasm(m, f), 0);
	assert_int_equal(fclose(f), 0);
	return text;
}

/* Disassemble @m, assemble the text again and compare the encodings. */
static void roundtrip(const struct vm_module *m)
{
	struct fl_buf a = encode(m), b;
	struct vm_module *m2 = NULL;
	char *text = disasm(m), *diag = NULL;
	int rc = assemble(text, &m2, &diag);

	if (rc != 0)
		fprintf(stderr, "text:\n%s\ndiagnostics:\n%s", text, diag);
	assert_int_equal(rc, 0);
	/* The text names its source, so the module keeps it. */
	assert_string_equal(m2->source, m->source);
	b = encode(m2);
	if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0)
		fprintf(stderr, "round trip differs; text:\n%s", text);
	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.data, b.data, a.len);
	fl_buf_close(&a);
	fl_buf_close(&b);
	free(text);
	free(diag);
	vm_module_free(m2);
}

static const char hello[] =
    "; hello.fla\n"
    ".rodata\n"
    "msg:    .bytes \"hello, flock\\n\"      ; also .zero N, .word N\n"
    ".data\n"
    "count:  .word 0                      ; a global variable\n"
    ".text\n"
    "func main 0 1                        ; name, args, locals\n"
    "        push 1\n"
    "        push msg\n"
    "        push 13\n"
    "        write\n"
    "        drop\n"
    "        push 0\n"
    "        ret\n"
    "end\n";

/* ---- Assembling ---- */

static void test_hello(void **state)
{
	struct vm_module *m = ok(hello);
	struct vm_insn in[16];
	int n;

	(void)state;
	assert_string_equal(m->source, "t.fla");
	assert_int_equal(m->rodata_len, 13);
	assert_memory_equal(m->rodata, "hello, flock\n", 13);
	assert_int_equal(m->data_len, 8);
	assert_memory_equal(m->data, "\0\0\0\0\0\0\0\0", 8);
	assert_int_equal(m->nsyms, 2);
	assert_string_equal(m->syms[0].name, "msg");
	assert_int_equal(m->syms[0].segment, VM_SEG_RODATA);
	assert_int_equal(m->syms[0].offset, 0);
	assert_string_equal(m->syms[1].name, "count");
	assert_int_equal(m->syms[1].segment, VM_SEG_DATA);
	assert_int_equal(m->nfuncs, 1);
	assert_string_equal(m->funcs[0].name, "main");
	assert_int_equal(m->funcs[0].nargs, 0);
	assert_int_equal(m->funcs[0].nlocals, 1);
	assert_int_equal(m->funcs[0].code_off, 0);
	assert_int_equal(m->funcs[0].code_len, m->code_len);
	n = decode(m, 0, in, 16);
	assert_int_equal(n, 7);
	expect_insn(&in[0], VM_OP_PUSH, 1);
	expect_insn(&in[1], VM_OP_PUSHA, 0);
	expect_insn(&in[2], VM_OP_PUSH, 13);
	expect_insn(&in[3], VM_OP_WRITE, 0);
	expect_insn(&in[4], VM_OP_DROP, 0);
	expect_insn(&in[5], VM_OP_PUSH, 0);
	expect_insn(&in[6], VM_OP_RET, 0);
	assert_int_equal(m->code_len, 9 + 5 + 9 + 1 + 1 + 9 + 1);
	/* One line-table entry per instruction, each on its own line. */
	assert_int_equal(m->nlines, 7);
	assert_int_equal(m->lines[0].code_off, 0);
	assert_int_equal(m->lines[0].line, 8);
	assert_int_equal(m->lines[1].code_off, 9);
	assert_int_equal(m->lines[1].line, 9);
	assert_int_equal(m->lines[6].line, 14);
	vm_module_free(m);
}

static void test_immediates(void **state)
{
	struct vm_module *m = ok("func f 0 0\n"
				 "push 0\n"
				 "push -1\n"
				 "push 0x7fffffffffffffff\n"
				 "push 0XFF\n"
				 "push 18446744073709551615\n"
				 "push -9223372036854775808\n"
				 "push 0xffffffffffffffff\n"
				 "push -0x10\n"
				 "push 'a'\n"
				 "push '\\n'\n"
				 "push '\\x7f'\n"
				 "push '\\''\n"
				 "push ';' ; a comment with 'quotes' and \"x\n"
				 "push 007\n"
				 "ret\n"
				 "end\n");
	struct vm_insn in[20];
	int n = decode(m, 0, in, 20);

	(void)state;
	assert_int_equal(n, 15);
	expect_insn(&in[0], VM_OP_PUSH, 0);
	expect_insn(&in[1], VM_OP_PUSH, -1);
	expect_insn(&in[2], VM_OP_PUSH, INT64_MAX);
	expect_insn(&in[3], VM_OP_PUSH, 255);
	expect_insn(&in[4], VM_OP_PUSH, -1);
	expect_insn(&in[5], VM_OP_PUSH, INT64_MIN);
	expect_insn(&in[6], VM_OP_PUSH, -1);
	expect_insn(&in[7], VM_OP_PUSH, -16);
	expect_insn(&in[8], VM_OP_PUSH, 'a');
	expect_insn(&in[9], VM_OP_PUSH, '\n');
	expect_insn(&in[10], VM_OP_PUSH, 0x7f);
	expect_insn(&in[11], VM_OP_PUSH, '\'');
	expect_insn(&in[12], VM_OP_PUSH, ';');
	expect_insn(&in[13], VM_OP_PUSH, 7);
	expect_insn(&in[14], VM_OP_RET, 0);
	vm_module_free(m);
}

static void test_operands(void **state)
{
	struct vm_module *m = ok("func main 0 2\n"
				 "top:    get 1\n"
				 "        set 0\n"
				 "        pick 65534\n"
				 "        jz done\n"
				 "        jnz top\n"
				 "        call helper\n"
				 "        spawn main\n"
				 "        jmp top\n"
				 "done:\n"
				 "        ret\n"
				 "end\n"
				 "func helper 3 0\n"
				 "a: b:   jmp b\n"
				 "end\n");
	struct vm_insn in[16];
	int n = decode(m, 0, in, 16);

	(void)state;
	assert_int_equal(n, 9);
	expect_insn(&in[0], VM_OP_GET, 1);
	expect_insn(&in[1], VM_OP_SET, 0);
	expect_insn(&in[2], VM_OP_PICK, VM_FRAME_MAX - 1);
	expect_insn(&in[3], VM_OP_JZ, 5 * 8);
	expect_insn(&in[4], VM_OP_JNZ, 0);
	expect_insn(&in[5], VM_OP_CALL, 1);
	expect_insn(&in[6], VM_OP_SPAWN, 0);
	expect_insn(&in[7], VM_OP_JMP, 0);
	expect_insn(&in[8], VM_OP_RET, 0);
	assert_int_equal(m->nfuncs, 2);
	assert_int_equal(m->funcs[0].code_len, 8 * 5 + 1);
	assert_int_equal(m->funcs[1].code_off, m->funcs[0].code_len);
	assert_int_equal(m->funcs[1].nargs, 3);
	/* Labels are offsets from the function's start. */
	n = decode(m, 1, in, 16);
	assert_int_equal(n, 1);
	expect_insn(&in[0], VM_OP_JMP, 0);
	assert_int_equal(m->code_len, m->funcs[0].code_len + 5);
	vm_module_free(m);
}

static void test_every_opcode(void **state)
{
	/* Driven by the table: each mnemonic with a fitting operand. */
	char src[8192] = "func f 0 1\nl:\n";
	struct vm_module *m;
	struct vm_insn in[VM_OP__COUNT + 1];
	int n;

	(void)state;
	for (int i = 0; i < VM_OP__COUNT; i++) {
		const char *arg = "";
		switch (vm_opinfo[i].operand) {
		case VM_OPND_NONE:
			break;
		case VM_OPND_IMM:
			arg = " -5";
			break;
		case VM_OPND_ADDR:
			arg = " d";
			break;
		case VM_OPND_SLOT:
		case VM_OPND_COUNT:
			arg = " 0";
			break;
		case VM_OPND_LABEL:
			arg = " l";
			break;
		case VM_OPND_FUNC:
			arg = " f";
			break;
		}
		snprintf(src + strlen(src), sizeof src - strlen(src),
			 "        %s%s\n", vm_opinfo[i].mnemonic, arg);
	}
	strcat(src, "end\n.rodata\nd: .bytes 1\n");
	m = ok(src);
	n = decode(m, 0, in, VM_OP__COUNT + 1);
	assert_int_equal(n, VM_OP__COUNT);
	for (int i = 0; i < n; i++)
		assert_int_equal(in[i].op, i);
	roundtrip(m);
	vm_module_free(m);
}

static void test_data(void **state)
{
	/* Data before code, code before data, sections reopened, symbols
	 * sorted by (segment, offset) and, at one offset, by definition. */
	struct vm_module *m =
	    ok(".data\n"
	       "w:      .word 1, -1, 'A', r2, w\n"
	       ".rodata\n"
	       "r1:\n"
	       "r0:     .bytes \"ab\", 10, 0, '\\\\', \"\\x00\\\"\"\n"
	       ".text\n"
	       "func main 0 0\n"
	       "        push r2\n"
	       "        push w\n"
	       "        push r0\n"
	       "        ret\n"
	       "end\n"
	       ".rodata\n"
	       "r2:     .zero 3\n"
	       "r3:\n"
	       ".data\n"
	       "        .zero 0\n"
	       "w2: w3:\n");
	vm_word ro = VM_GLOBAL_BIT + VM_PAGE_SIZE;
	struct vm_insn in[8];
	const char *names[] = {"r1", "r0", "r2", "r3", "w", "w2", "w3"};
	const uint32_t offs[] = {0, 0, 7, 10, 0, 40, 40};

	(void)state;
	assert_int_equal(m->rodata_len, 10);
	assert_memory_equal(m->rodata, "ab\n\0\\\0\"\0\0\0", 10);
	assert_int_equal(m->data_len, 40);
	assert_true(fl_load_u64(m->data) == 1);
	assert_true(fl_load_u64(m->data + 8) == UINT64_MAX);
	assert_true(fl_load_u64(m->data + 16) == 'A');
	assert_true(fl_load_u64(m->data + 24) == ro + 7);
	/* The data segment starts on the page after the read-only data. */
	assert_true(fl_load_u64(m->data + 32) == ro + VM_PAGE_SIZE);
	assert_true(vm_module_seg_base(m, VM_SEG_DATA) == ro + VM_PAGE_SIZE);
	assert_int_equal(m->nsyms, 7);
	for (int i = 0; i < 7; i++) {
		assert_string_equal(m->syms[i].name, names[i]);
		assert_int_equal(m->syms[i].offset, offs[i]);
		assert_int_equal(m->syms[i].segment, i < 4 ? 0 : 1);
	}
	assert_int_equal(decode(m, 0, in, 8), 4);
	expect_insn(&in[0], VM_OP_PUSHA, 2);
	expect_insn(&in[1], VM_OP_PUSHA, 4);
	expect_insn(&in[2], VM_OP_PUSHA, 1);
	roundtrip(m);
	vm_module_free(m);
}

static void test_lines(void **state)
{
	struct vm_module *m = ok("func main 0 0\n"     /* 1 */
				 "        push 1\n"    /* 2 */
				 "\n"		       /* 3 */
				 "        push 2\n"    /* 4 */
				 "        .line 100\n" /* 5 */
				 "        add\n"       /* 6 */
				 "        dup\n"       /* 7 */
				 ".line 100\n"	       /* 8 */
				 "        drop\n"      /* 9 */
				 ".line 7\n"	       /* 10 */
				 "        ret\n"       /* 11 */
				 "end\n"	       /* 12 */
				 "func g 0 0\n"	       /* 13 */
				 "        push 0\n"    /* 14 */
				 ".line 8\n"	       /* 15 */
				 "        ret\n"       /* 16 */
				 "end\n");
	const struct vm_line want[] = {
	    {0, 2, 0}, {9, 4, 0}, {18, 100, 0}, {21, 7, 0}, {31, 8, 0}};

	(void)state;
	/* The second .line 100 repeats the line in force, and g's first
	 * instruction keeps the sticky line 7: no entries for them. */
	assert_int_equal(m->nlines, 5);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(m->lines[i].code_off, want[i].code_off);
		assert_int_equal(m->lines[i].line, want[i].line);
	}
	assert_int_equal(vm_module_line(m, 19, NULL), 100);
	roundtrip(m);
	vm_module_free(m);
}

/* `.line N "FILE"`: lines of other source files (a .fl program's used
 * files), numbered in order of first use; a file named but never used
 * before the next `.line` does not enter the table. */
static void test_line_files(void **state)
{
	struct vm_module *m = ok("func main 0 0\n"		/* 1 */
				 "  .line 7 \"lib/a.fl\"\n"	/* 2 */
				 "  push 1\n"			/* 3 */
				 "  .line 9 \"unused.fl\"\n"	/* 4 */
				 "  .line 7 \"lib/b.fl\"\n"	/* 5 */
				 "  push 2\n"			/* 6 */
				 "  .line 7 \"lib/a.fl\"\n"	/* 7 */
				 "  add\n"			/* 8 */
				 "  .line 7\n"			/* 9 */
				 "  ret\n"			/* 10 */
				 "end\n");
	static const struct vm_line want[] = {
	    {0, 7, 1}, {9, 7, 2}, {18, 7, 1}, {19, 7, 0}};
	const char *file;

	(void)state;
	assert_int_equal(m->nfiles, 2);
	assert_string_equal(m->files[0], "lib/a.fl");
	assert_string_equal(m->files[1], "lib/b.fl");
	assert_int_equal(m->nlines, 4);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(m->lines[i].code_off, want[i].code_off);
		assert_int_equal(m->lines[i].line, want[i].line);
		assert_int_equal(m->lines[i].file, want[i].file);
	}
	assert_int_equal(vm_module_line(m, 9, &file), 7);
	assert_string_equal(file, "lib/b.fl");
	assert_int_equal(vm_module_line(m, 19, &file), 7);
	assert_string_equal(file, "t.fla");
	roundtrip(m);
	vm_module_free(m);
}

static void test_source(void **state)
{
	struct vm_module *m = ok(".source \"dir/x \\\"y\\\".fl\"\n"
				 "func main 0 0\npush 0\nret\nend\n");

	(void)state;
	assert_string_equal(m->source, "dir/x \"y\".fl");
	roundtrip(m);
	vm_module_free(m);
}

static void test_syntax_variants(void **state)
{
	/* CRLF line ends, tabs, no final newline, a label and an
	 * instruction on one line, names with . and $. */
	struct vm_module *m = ok("func\t$x.y\t0\t0\r\n"
				 ".L1:\tpush\t1\t; c\r\n"
				 "\tjmp .L1\r\n"
				 "end");

	(void)state;
	assert_string_equal(m->funcs[0].name, "$x.y");
	assert_int_equal(m->code_len, 14);
	vm_module_free(m);
}

static void test_limits_ok(void **state)
{
	char name[VM_NAME_MAX + 1], src[1024];
	struct vm_module *m;

	(void)state;
	memset(name, 'n', VM_NAME_MAX);
	name[VM_NAME_MAX] = 0;
	snprintf(src, sizeof src,
		 "func %s 65000 535\nget 65534\nset 0\nget 65534\nret\nend\n"
		 ".rodata\n%s: .zero 0\n",
		 name, name);
	m = ok(src);
	assert_int_equal(strlen(m->funcs[0].name), VM_NAME_MAX);
	assert_int_equal(m->funcs[0].nargs + m->funcs[0].nlocals, VM_FRAME_MAX);
	assert_string_equal(m->syms[0].name, m->funcs[0].name);
	/* The highest slot number the assembler takes is the last slot of
	 * the largest frame. */
	{
		struct vm_insn in[4];
		struct fl_err err;
		assert_int_equal(decode(m, 0, in, 4), 4);
		expect_insn(&in[0], VM_OP_GET, VM_FRAME_MAX - 1);
		expect_insn(&in[1], VM_OP_SET, 0);
		assert_int_equal(vm_verify(m, false, &err), 0);
	}
	roundtrip(m);
	vm_module_free(m);
}

static void test_empty(void **state)
{
	struct vm_module *m = ok("");

	(void)state;
	assert_int_equal(m->nfuncs, 0);
	assert_int_equal(m->nsyms, 0);
	assert_int_equal(m->code_len, 0);
	assert_int_equal(m->nlines, 0);
	roundtrip(m);
	vm_module_free(m);
	m = ok("; nothing\n\n   \n.rodata\n.data\n.text\n");
	assert_int_equal(m->rodata_len, 0);
	vm_module_free(m);
	/* Empty strings as the first bytes of a line buffer. */
	m = ok(".source \"\"\n.rodata\n.bytes \"\", 1, \"\"\n");
	assert_string_equal(m->source, "");
	assert_int_equal(m->rodata_len, 1);
	roundtrip(m);
	vm_module_free(m);
}

/* ---- Diagnostics ---- */

#define F "func main 0 0\n"

static void test_diag_instructions(void **state)
{
	(void)state;
	bad(F "ad\nend\n", "t.fla:2: error: unknown instruction 'ad'\n", 1);
	bad(F "push\nend\n", "t.fla:2: error: 'push' needs an operand\n", 1);
	bad(F "add 1\nend\n", "t.fla:2: error: 'add' takes no operand\n", 1);
	bad(F "push 1, 2\nend\n", "t.fla:2: error: 'push' takes one operand\n",
	    1);
	bad(F "get x\nend\n",
	    "t.fla:2: error: 'get' takes a slot number, not 'x'\n", 1);
	bad(F "get 'x'\nend\n",
	    "t.fla:2: error: 'get' takes a slot number, not ''x''\n", 1);
	/* Slots and pick counts: 0..VM_FRAME_MAX - 1, the most a frame or
	 * stack can hold. */
	bad(F "get -1\nend\n",
	    "t.fla:2: error: slot number '-1' out of range 0..65534\n", 1);
	bad(F "set 65535\nend\n",
	    "t.fla:2: error: slot number '65535' out of range 0..65534\n", 1);
	bad(F "get 4294967295\nend\n",
	    "t.fla:2: error: slot number '4294967295' out of range 0..65534\n",
	    1);
	bad(F "get 0x10000\nend\n",
	    "t.fla:2: error: slot number '0x10000' out of range 0..65534\n", 1);
	bad(F "pick 65535\nend\n",
	    "t.fla:2: error: count '65535' out of range 0..65534\n", 1);
	bad(F "pick 4294967295\nend\n",
	    "t.fla:2: error: count '4294967295' out of range 0..65534\n", 1);
	bad(F "pick 4294967296\nend\n",
	    "t.fla:2: error: count '4294967296' out of range 0..65534\n", 1);
	bad(F "pick -1\nend\n",
	    "t.fla:2: error: count '-1' out of range 0..65534\n", 1);
	bad(F "pick 99999999999999999999\nend\n",
	    "t.fla:2: error: count '99999999999999999999' out of range "
	    "0..65534\n",
	    1);
	bad(F "push \"s\"\nend\n",
	    "t.fla:2: error: 'push' takes an integer or a data label, not "
	    "'\"s\"'\n",
	    1);
	bad(F "jmp 3\nend\n", "t.fla:2: error: 'jmp' takes a label, not '3'\n",
	    1);
	bad(F "call 0\nend\n",
	    "t.fla:2: error: 'call' takes a function name, not '0'\n", 1);
	bad(F "push 99999999999999999999\nend\n",
	    "t.fla:2: error: immediate '99999999999999999999' out of 64-bit "
	    "range\n",
	    1);
	bad(F "push 18446744073709551616\nend\n", "out of 64-bit range\n", 1);
	bad(F "push -9223372036854775809\nend\n", "out of 64-bit range\n", 1);
	bad(F "push 0x10000000000000000\nend\n", "out of 64-bit range\n", 1);
	bad(F "push 12ab\nend\n", "t.fla:2: error: bad number '12ab'\n", 1);
	bad(F "push 0x\nend\n", "t.fla:2: error: bad number '0x'\n", 1);
	bad(F "push 1.5\nend\n", "t.fla:2: error: bad number '1.5'\n", 1);
	bad(F "push - 1\nend\n", "t.fla:2: error: unexpected character '-'\n",
	    1);
	bad("push 1\n", "t.fla:1: error: instruction outside a function\n", 1);
	bad(".rodata\nadd\n",
	    "t.fla:2: error: instruction outside a function\n", 1);
	bad(F "3: ret\nend\n",
	    "t.fla:2: error: expected an instruction or directive, not '3'\n",
	    1);
}

static void test_diag_names(void **state)
{
	(void)state;
	bad(F "jmp loop\nend\n",
	    "t.fla:2: error: undefined label 'loop' in function main\n", 1);
	bad(F "call foo\nend\n", "t.fla:2: error: undefined function 'foo'\n",
	    1);
	bad(".rodata\nd: .zero 1\n.text\n" F "call d\nend\n",
	    "t.fla:5: error: 'd' is a data label, not a function\n", 1);
	bad(F "spawn d\nret\nend\n.data\nd: .word 0\n",
	    "t.fla:2: error: 'd' is a data label, not a function\n", 1);
	/* A name that is both is a function to call (and data to push). */
	{
		struct vm_module *m = ok(".data\nboth: .word 0\n.text\n" F
					 "call both\npush both\nret\nend\n"
					 "func both 0 0\npush 0\nret\nend\n");
		assert_int_equal(m->nfuncs, 2);
		assert_int_equal(m->nsyms, 1);
		vm_module_free(m);
	}
	bad(F "push foo\nend\n", "t.fla:2: error: undefined data label 'foo'\n",
	    1);
	bad(F "push main\nend\n",
	    "t.fla:2: error: 'main' is a function, not a data label\n", 1);
	bad(F "x:\nx: ret\nend\n", "t.fla:3: error: duplicate label 'x'\n", 1);
	bad(".rodata\nx: .zero 1\n.data\nx:\n",
	    "t.fla:4: error: duplicate label 'x'\n", 1);
	bad(F "end\n" F "end\n", "t.fla:3: error: duplicate function 'main'\n",
	    1);
	bad(".data\n.word nope\n",
	    "t.fla:2: error: undefined data label 'nope'\n", 1);
	/* Labels are local to their function. */
	bad(F "x: ret\nend\nfunc g 0 0\njmp x\nend\n",
	    "t.fla:5: error: undefined label 'x' in function g\n", 1);
	bad(".rodata\n.text: .zero 1\n",
	    "t.fla:2: error: '.text' is a directive, not a label name\n", 1);
	bad("func .data 0 0\nend\n",
	    "t.fla:1: error: '.data' is a directive, not a function name\n", 1);
	bad("x:\n", "t.fla:1: error: label 'x' outside a function\n", 1);
	bad("func 1 0 0\nend\n",
	    "t.fla:1: error: expected a function name, not '1'\n", 1);
}

static void test_diag_long_name(void **state)
{
	char name[VM_NAME_MAX + 2], src[1024];

	(void)state;
	memset(name, 'n', VM_NAME_MAX + 1);
	name[VM_NAME_MAX + 1] = 0;
	snprintf(src, sizeof src, ".rodata\n%s:\n", name);
	bad(src, "is longer than 255 bytes", 1);
	snprintf(src, sizeof src, "func %s 0 0\nend\n", name);
	bad(src, "t.fla:1: error: function name 'nnnn", 1);
	snprintf(src, sizeof src, F "call %s\nend\n", name);
	bad(src, "is longer than 255 bytes", 1);
}

static void test_diag_structure(void **state)
{
	(void)state;
	bad("end\n", "t.fla:1: error: 'end' without 'func'\n", 1);
	bad("\n" F "ret\n",
	    "t.fla:2: error: missing 'end' for function 'main'\n", 1);
	bad(F "ret\nfunc g 0 0\nret\nend\n",
	    "t.fla:3: error: missing 'end' for function 'main'\n", 1);
	bad(F "end 1\n", "t.fla:2: error: 'end' takes no operands\n", 1);
	bad(F ".bytes \"x\"\nend\n",
	    "t.fla:2: error: data directive outside .rodata/.data\n", 1);
	bad(".word 1\n",
	    "t.fla:1: error: data directive outside .rodata/.data\n", 1);
	bad(F ".rodata\nend\n",
	    "t.fla:2: error: '.rodata' inside function 'main' (missing "
	    "'end'?)\n",
	    1);
	bad(".rodata\nfunc main 0 0\nend\n",
	    "t.fla:2: error: 'func' outside .text\n", 1);
	bad(".foo\n", "t.fla:1: error: unknown directive '.foo'\n", 1);
	bad(".text 1\n", "t.fla:1: error: '.text' takes no operands\n", 1);
	bad("func main 0\nend\n",
	    "t.fla:1: error: 'func' takes a name, the number of arguments and "
	    "the number of locals\n",
	    1);
	bad("func main x 0\nend\n",
	    "t.fla:1: error: number of arguments 'x' is not an integer in "
	    "0..65535\n",
	    1);
	bad("func main 0 -1\nend\n",
	    "t.fla:1: error: number of locals '-1' is not an integer", 1);
	bad("func main 65536 0\nend\n",
	    "t.fla:1: error: number of arguments '65536' is not an integer", 1);
	bad("func main 65535 1\nend\n",
	    "t.fla:1: error: function 'main' has 65536 arguments and locals, "
	    "more than 65535\n",
	    1);
	bad(".source \"a\"\n.source \"b\"\n",
	    "t.fla:2: error: duplicate '.source'\n", 1);
	bad(".source x\n", "t.fla:1: error: '.source' takes one string\n", 1);
	bad(".source \"a\\0b\"\n",
	    "t.fla:1: error: source name contains a NUL byte\n", 1);
	bad(F ".line 0\nend\n",
	    "t.fla:2: error: line number '0' out of range 1..4294967295\n", 1);
	bad(F ".line 4294967296\nend\n", "out of range 1..4294967295\n", 1);
	bad(F ".line\nend\n",
	    "t.fla:2: error: '.line' takes a line number and optionally a "
	    "file name\n",
	    1);
	bad(F ".line 3 4\nend\n", "'.line' takes a line number and", 1);
	bad(F ".line 3 \"a\" \"b\"\nend\n", "'.line' takes a line number",
	    1);
	bad(F ".line 3 \"\"\nend\n",
	    "t.fla:2: error: file name must be 1..4096 bytes without NUL\n", 1);
	bad(F ".line 3 \"a\\0b\"\nend\n", "file name must be 1..4096", 1);
}

static void test_diag_data(void **state)
{
	(void)state;
	bad(".rodata\n.bytes \"\\q\"\n",
	    "t.fla:2: error: bad escape '\\q' in string\n", 1);
	bad(".rodata\n.bytes \"\\x4\"\n",
	    "t.fla:2: error: bad escape '\\x4' in string", 1);
	bad(".rodata\n.bytes \"abc\n", "t.fla:2: error: unterminated string\n",
	    1);
	bad(".rodata\n.bytes \"abc\\\n",
	    "t.fla:2: error: unterminated string\n", 1);
	bad(".rodata\n.bytes ''\n", "t.fla:2: error: empty character literal\n",
	    1);
	bad(".rodata\n.bytes 'ab'\n",
	    "t.fla:2: error: character literal holds more than one character\n",
	    1);
	bad(".rodata\n.bytes 'a\n",
	    "t.fla:2: error: unterminated character literal\n", 1);
	bad(".rodata\n.bytes '\n",
	    "t.fla:2: error: unterminated character literal\n", 1);
	bad(".rodata\n.bytes '\\z'\n",
	    "t.fla:2: error: bad escape '\\z' in character literal\n", 1);
	bad(".rodata\n.bytes 256\n",
	    "t.fla:2: error: byte value '256' out of range 0..255\n", 1);
	bad(".rodata\n.bytes -1\n",
	    "t.fla:2: error: byte value '-1' out of range 0..255\n", 1);
	bad(".rodata\n.bytes\n",
	    "t.fla:2: error: '.bytes' needs at least one value\n", 1);
	bad(".rodata\n.bytes 1,\n", "t.fla:2: error: missing value after ','\n",
	    1);
	bad(".rodata\n.bytes 1 2\n",
	    "t.fla:2: error: expected ',' between values, not '2'\n", 1);
	bad(".rodata\n.bytes ,1\n",
	    "t.fla:2: error: missing value before ','\n", 1);
	bad(".rodata\n.bytes x\n",
	    "t.fla:2: error: '.bytes' takes strings and byte values, not 'x'\n",
	    1);
	bad(".data\n.word \"s\"\n",
	    "t.fla:2: error: '.word' takes integers and data labels, not "
	    "'\"s\"'\n",
	    1);
	bad(".data\n.word 18446744073709551616\n",
	    "t.fla:2: error: value '18446744073709551616' out of 64-bit "
	    "range\n",
	    1);
	bad(".data\n.zero -1\n",
	    "t.fla:2: error: '.zero' size '-1' out of range 0..268435456\n", 1);
	bad(".data\n.zero 268435457\n", "out of range 0..268435456\n", 1);
	bad(".data\n.zero\n", "t.fla:2: error: '.zero' takes one size\n", 1);
	bad(".data\n.zero 268435456\n.zero 1\n.bytes 1\n",
	    "t.fla:3: error: data exceeds the limit of 268435456 bytes\n", 1);
	bad(".rodata\n@\n", "t.fla:2: error: unexpected character '@'\n", 1);
}

static void test_diag_many(void **state)
{
	/* Every error is reported, in line order, even those found only at
	 * the end; and a bad line does not hide the rest. */
	struct vm_module *m = NULL;
	char *diag = NULL;

	(void)state;
	assert_int_equal(assemble("func main 0 0\n"
				  "call later\n"
				  "jmp nowhere\n"
				  "ad\n"
				  "x: bogus 1\n"
				  "jmp x\n"
				  "push 1\n"
				  "ret\n"
				  "end\n"
				  "end\n",
				  &m, &diag),
			 FL_ESYNTAX);
	assert_string_equal(diag,
			    "t.fla:2: error: undefined function 'later'\n"
			    "t.fla:3: error: undefined label 'nowhere' in "
			    "function main\n"
			    "t.fla:4: error: unknown instruction 'ad'\n"
			    "t.fla:5: error: unknown instruction 'bogus'\n"
			    "t.fla:10: error: 'end' without 'func'\n");
	free(diag);
}

static void test_diag_binary(void **state)
{
	/* NUL bytes and invalid UTF-8 are shown escaped; NUL and raw bytes
	 * inside strings are data. */
	const char src[] = ".rodata\n.bytes \"a\0\xff\"\n\xc3\x28\n"
			   "x\0y\n; \0 in a comment\n";
	struct vm_module *m = NULL;
	char *diag = NULL;

	(void)state;
	assert_int_equal(assemble_n(src, sizeof src - 1, &m, &diag),
			 FL_ESYNTAX);
	assert_string_equal(diag,
			    "t.fla:3: error: unexpected character '\\xc3'\n"
			    "t.fla:4: error: unexpected character '\\x00'\n");
	free(diag);
	m = NULL;
	assert_int_equal(assemble_n(src, 21, &m, &diag), 0);
	assert_int_equal(m->rodata_len, 3);
	assert_memory_equal(m->rodata, "a\0\xff", 3);
	free(diag);
	vm_module_free(m);
}

static void test_diag_long_line(void **state)
{
	/* A huge number and a long line: one short diagnostic. */
	size_t n = 200000;
	char *src = malloc(n + 32);
	struct vm_module *m = NULL;
	char *diag = NULL;

	(void)state;
	assert_non_null(src);
	strcpy(src, F "push ");
	memset(src + strlen(src), '9', n);
	strcpy(src + strlen(F "push ") + n, "\nend\n");
	assert_int_equal(assemble(src, &m, &diag), FL_ESYNTAX);
	assert_non_null(strstr(diag, "t.fla:2: error: immediate '999"));
	assert_non_null(strstr(diag, "...' out of 64-bit range\n"));
	assert_true(strlen(diag) < 200);
	free(diag);
	free(src);
}

/* ---- Round trip ---- */

static void test_roundtrip_hello(void **state)
{
	struct vm_module *m = ok(hello);
	char *text = disasm(m);

	(void)state;
	assert_non_null(strstr(text, ".source \"t.fla\"\n"));
	assert_non_null(strstr(text, "msg:\n"));
	assert_non_null(strstr(text, "        push msg\n"));
	assert_non_null(strstr(text, "func main 0 1\n"));
	free(text);
	roundtrip(m);
	vm_module_free(m);
}

static void test_roundtrip_all_bytes(void **state)
{
	/* Every byte value, hex digits after \xNN escapes, zero runs, labels
	 * at one offset and at the segment's end, an empty rodata with a
	 * label, forward calls, jumps to the function's end. */
	char src[16384], *p = src;
	struct vm_module *m;
	char *text;

	(void)state;
	p += sprintf(p, ".source \"all\\x01\\\\bytes\"\n.data\nfirst: "
			"second:\n");
	for (int i = 0; i < 256; i++)
		p += sprintf(p, "        .bytes %d ; %d\n", i, i);
	p +=
	    sprintf(p, "        .bytes \"\\x01abc\\x7f0\\x80F\\xffz\\\"\\\\\"\n"
		       "        .zero 40\n"
		       "        .bytes 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2\n"
		       "mid:    .zero 3\n"
		       "end1:\nend2:\n"
		       ".rodata\nro:\n"
		       ".text\n"
		       "func main 0 0\n"
		       "        push second\n"
		       "        push ro\n"
		       "        call last\n"
		       "        jz out\n"
		       "        call main\n"
		       "out:\n"
		       "end\n"
		       "func last 2 3\n"
		       "again:  push -9223372036854775808\n"
		       "        .line 1\n"
		       "        jmp again\n"
		       "        .line 4294967295\n"
		       "        ret\n"
		       "end\n");
	m = ok(src);
	assert_int_equal(m->rodata_len, 0);
	assert_int_equal(m->nsyms, 6);
	assert_string_equal(m->syms[0].name, "ro");
	assert_string_equal(m->syms[1].name, "first");
	assert_string_equal(m->syms[2].name, "second");
	for (int i = 0; i < 256; i++)
		assert_int_equal(m->data[i], i);
	text = disasm(m);
	/* No line is overly long, and hex digits never follow \xNN. */
	for (char *l = text; *l;) {
		char *e = strchr(l, '\n');
		assert_non_null(e);
		assert_true(e - l < 120);
		l = e + 1;
	}
	assert_null(strstr(text, "\\x01a"));
	free(text);
	roundtrip(m);
	vm_module_free(m);
}

/* A module built by hand (as a compiler would), with the line table
 * @lines (@n entries):
 *   main:  0 push 5 / 9 jz L14 / 14 push 1 / 23 ret
 *   g(1): 24 push 2 / 33 ret */
static struct vm_module *built(const struct vm_line *lines, uint32_t n)
{
	struct vm_module *m = vm_module_new();
	struct fl_buf code;
	size_t len;

	assert_non_null(m);
	fl_buf_init(&code);
	vm_insn_encode(&code, VM_OP_PUSH, 5); /* 0 */
	vm_insn_encode(&code, VM_OP_JZ, 14);  /* 9 */
	vm_insn_encode(&code, VM_OP_PUSH, 1); /* 14 */
	vm_insn_encode(&code, VM_OP_RET, 0);  /* 23 */
	vm_insn_encode(&code, VM_OP_PUSH, 2); /* 24: g */
	vm_insn_encode(&code, VM_OP_RET, 0);  /* 33 */
	m->code = fl_buf_take(&code, &len);
	m->code_len = (uint32_t)len;
	m->nfuncs = 2;
	m->funcs = calloc(2, sizeof *m->funcs);
	assert_non_null(m->funcs);
	m->funcs[0] = (struct vm_function){
	    .name = strdup("main"), .code_off = 0, .code_len = 24};
	m->funcs[1] = (struct vm_function){
	    .name = strdup("g"), .nargs = 1, .code_off = 24, .code_len = 10};
	m->nlines = n;
	m->lines = calloc(n ? n : 1, sizeof *m->lines);
	assert_non_null(m->lines);
	memcpy(m->lines, lines, n * sizeof *lines);
	free(m->source);
	m->source = strdup("prog.fl");
	m->rodata = malloc(1);
	m->data = malloc(1);
	return m;
}

static void verify_ok(struct vm_module *m)
{
	struct fl_err err;

	if (vm_verify(m, true, &err) != 0)
		fail_msg("verify: %s", err.msg);
}

static void test_roundtrip_built(void **state)
{
	/* Line entries that jump around, code labels, a function with no
	 * line change (g's first instruction stays on line 10). */
	static const struct vm_line lines[] = {
	    {0, 10, 0}, {9, 3, 0}, {14, 10, 0}, {33, 11, 0}};
	struct vm_module *m = built(lines, 4);

	(void)state;
	verify_ok(m);
	roundtrip(m);
	vm_module_free(m);
}

/* Any canonical line table -- it starts at offset 0 and each entry changes
 * the line -- comes back from the text exactly: lines going down as well as
 * up, back to a line seen before, the extremes, an entry on every
 * instruction or only the first. */
static void test_roundtrip_line_tables(void **state)
{
	static const struct vm_line t1[] = {{0, 5, 0},  {9, 1, 0},  {14, 5, 0},
					    {23, 1, 0}, {24, 5, 0}, {33, 1, 0}};
	static const struct vm_line t2[] = {
	    {0, 4294967295u, 0}, {9, 1, 0}, {24, 4294967294u, 0}};
	static const struct vm_line t3[] = {{0, 1, 0}};
	static const struct vm_line t4[] = {{0, 3, 0}, {24, 2, 0}, {33, 3, 0}};
	static const struct {
		const struct vm_line *lines;
		uint32_t n;
	} cases[] = {{t1, 6}, {t2, 3}, {t3, 1}, {t4, 3}};

	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		struct vm_module *m = built(cases[i].lines, cases[i].n);
		verify_ok(m);
		roundtrip(m);
		vm_module_free(m);
	}
}

/* Disassemble @m and assemble the text again; the caller frees. */
static struct vm_module *reassemble(const struct vm_module *m)
{
	struct vm_module *m2 = NULL;
	char *text = disasm(m), *diag = NULL;

	if (assemble(text, &m2, &diag) != 0)
		fail_msg("text:\n%s\ndiagnostics:\n%s", text, diag);
	free(text);
	free(diag);
	return m2;
}

/* Why the verifier insists on canonical line tables: the text cannot say
 * "no line here" or "the same line again", so any other table comes back
 * different. The verifier rejects such modules; what the assembler makes of
 * their text is the canonical table, which verifies and round-trips. */
static void test_noncanonical_lines_rejected(void **state)
{
	static const struct vm_line repeat[] = {{0, 10, 0}, {9, 10, 0}, {14, 3, 0}};
	static const struct vm_line late[] = {{9, 3, 0}, {14, 4, 0}};
	struct vm_module *m, *m2;
	struct fl_buf a, b;
	struct fl_err err;

	(void)state;
	/* An entry that repeats the line in force... */
	m = built(repeat, 3);
	assert_int_equal(vm_verify(m, true, &err), FL_EFORMAT);
	assert_string_equal(err.msg,
			    "line table entries 0 and 1 repeat line 10");
	m2 = reassemble(m);
	a = encode(m);
	b = encode(m2);
	assert_true(a.len != b.len || memcmp(a.data, b.data, a.len) != 0);
	/* ...is dropped. */
	assert_int_equal(m2->nlines, 2);
	assert_int_equal(m2->lines[0].code_off, 0);
	assert_int_equal(m2->lines[0].line, 10);
	assert_int_equal(m2->lines[1].code_off, 14);
	assert_int_equal(m2->lines[1].line, 3);
	verify_ok(m2);
	roundtrip(m2);
	fl_buf_close(&a);
	fl_buf_close(&b);
	vm_module_free(m);
	vm_module_free(m2);

	/* A table that starts after the first instruction, or none at all:
	 * the text's first instructions get the line they are written on. */
	for (uint32_t n = 0; n <= 2; n += 2) {
		m = built(late, n);
		assert_int_equal(vm_verify(m, true, &err), FL_EFORMAT);
		assert_string_equal(err.msg, "the line table does not start "
					     "at the first instruction");
		m2 = reassemble(m);
		a = encode(m);
		b = encode(m2);
		assert_true(a.len != b.len ||
			    memcmp(a.data, b.data, a.len) != 0);
		assert_true(m2->nlines > 0);
		assert_int_equal(m2->lines[0].code_off, 0);
		verify_ok(m2);
		roundtrip(m2);
		fl_buf_close(&a);
		fl_buf_close(&b);
		vm_module_free(m);
		vm_module_free(m2);
	}
}

static void test_disasm_write_error(void **state)
{
	struct vm_module *m = ok(hello);
	FILE *f = fopen("/dev/full", "w");

	(void)state;
	if (f == NULL) {
		vm_module_free(m);
		skip();
	}
	assert_int_equal(asm_disasm(m, f), FL_EIO);
	fclose(f);
	vm_module_free(m);
}

/* ---- Hostile input ---- */

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Assemble hostile @src: diagnostics or a module, never a crash or a
 * leak; whatever assembles must also survive the round trip. Returns
 * whether it assembled. */
static bool must_not_crash(const char *src, size_t len)
{
	struct vm_module *m = NULL;
	int rc = asm_assemble("f.fla", src, len, &m, NULL);

	assert_true(rc == 0 || rc == FL_ESYNTAX);
	assert_true((rc == 0) == (m != NULL));
	if (m != NULL)
		roundtrip(m);
	vm_module_free(m);
	return rc == 0;
}

static void test_random_bytes(void **state)
{
	uint64_t s = 0x9e3779b97f4a7c15u;
	char buf[512];

	(void)state;
	for (int round = 0; round < 2000; round++) {
		size_t n = rnd(&s) % sizeof buf;
		for (size_t i = 0; i < n; i++)
			buf[i] = (char)rnd(&s);
		must_not_crash(buf, n);
	}
}

static void test_mutations(void **state)
{
	/* Mutate a program that uses every construct: byte flips, insertions
	 * of syntax characters, truncations. */
	static const char base[] =
	    ".source \"m.fla\"\n.rodata\nmsg: .bytes \"hi\\n\\x00\", 1, "
	    "'c'\nz: .zero 3\n.data\nw: .word 1, msg, -2\n.text\n"
	    "func main 0 2\nl: push msg\n get 1\n pick 0\n .line 9\n"
	    " jz l\n call f\n ret\nend\nfunc f 1 0\n push 'x'\n ret\n"
	    "end\n";
	static const char syms[] = "\"':;,.\\\n x0-$\0";
	uint64_t s = 42;
	char buf[sizeof base + 8];
	int good = 0;

	(void)state;
	assert_true(must_not_crash(base, sizeof base - 1));
	for (int round = 0; round < 5000; round++) {
		size_t n = sizeof base - 1;
		memcpy(buf, base, n);
		for (int k = 0; k < 3; k++) {
			size_t at = rnd(&s) % n;
			switch (rnd(&s) % 3) {
			case 0:
				buf[at] = (char)rnd(&s);
				break;
			case 1:
				buf[at] = syms[rnd(&s) % (sizeof syms - 1)];
				break;
			case 2:
				n = at;
				break;
			}
			if (n == 0)
				break;
		}
		good += must_not_crash(buf, n);
	}
	/* Both paths were exercised. */
	assert_true(good > 100 && good < 4900);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hello),
	    cmocka_unit_test(test_immediates),
	    cmocka_unit_test(test_operands),
	    cmocka_unit_test(test_every_opcode),
	    cmocka_unit_test(test_data),
	    cmocka_unit_test(test_lines),
	    cmocka_unit_test(test_line_files),
	    cmocka_unit_test(test_source),
	    cmocka_unit_test(test_syntax_variants),
	    cmocka_unit_test(test_limits_ok),
	    cmocka_unit_test(test_empty),
	    cmocka_unit_test(test_diag_instructions),
	    cmocka_unit_test(test_diag_names),
	    cmocka_unit_test(test_diag_long_name),
	    cmocka_unit_test(test_diag_structure),
	    cmocka_unit_test(test_diag_data),
	    cmocka_unit_test(test_diag_many),
	    cmocka_unit_test(test_diag_binary),
	    cmocka_unit_test(test_diag_long_line),
	    cmocka_unit_test(test_roundtrip_hello),
	    cmocka_unit_test(test_roundtrip_all_bytes),
	    cmocka_unit_test(test_roundtrip_built),
	    cmocka_unit_test(test_roundtrip_line_tables),
	    cmocka_unit_test(test_noncanonical_lines_rejected),
	    cmocka_unit_test(test_disasm_write_error),
	    cmocka_unit_test(test_random_bytes),
	    cmocka_unit_test(test_mutations),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
