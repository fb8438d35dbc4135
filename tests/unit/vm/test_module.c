/* Unit tests for src/vm/vm_module.c: the .flb encoder, the defensive
 * decoder (every way a byte string can fail to be a module), and the
 * module queries (lines, functions by offset and name, segment bases).
 *
 * Modules are built in memory with tests/unit/vm/unit.h; the one test that
 * spells the format out byte by byte (test_golden_bytes) pins the layout
 * documented at the top of vm_module.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "unit.h"

#include <dirent.h>

/* ---- Fixtures ---- */

/* add3(a, b, c) = a + b + c; main calls it and branches on the result.
 * Code offsets (see the comment on each line) are relied on below. */
static struct vm_module *sample(void)
{
	static const uint8_t data[16] = {1,    2,    3, 4, 0, 0, 0, 0,
					 0xff, 0xee, 0, 0, 0, 0, 0, 0x80};
	struct vm_module *m = unit_module();

	unit_source(m, "sample.fla");
	unit_segment(m, VM_SEG_RODATA, "hello\n", 6);
	unit_segment(m, VM_SEG_DATA, data, sizeof data);
	unit_sym(m, "msg", VM_SEG_RODATA, 0);
	unit_sym(m, "msg_end", VM_SEG_RODATA, 6);
	unit_sym(m, "counter", VM_SEG_DATA, 0);
	unit_sym(m, "end", VM_SEG_DATA, 16);
	unit_func(m, "add3", 3, 0,
		  CODE(I(GET, 0), /* 0 */
		       I(GET, 1), /* 5 */
		       I(ADD),	  /* 10 */
		       I(GET, 2), /* 11 */
		       I(ADD),	  /* 16 */
		       I(RET)));  /* 17, ends at 18 */
	unit_func(m, "main", 0, 1,
		  CODE(I(PUSH, 1),  /* 18 + 0 */
		       I(PUSH, 2),  /* 9 */
		       I(PUSH, -3), /* 18 */
		       I(CALL, 0),  /* 27 */
		       I(SET, 0),   /* 32 */
		       I(PUSHA, 0), /* 37 */
		       I(DROP),	    /* 42 */
		       I(GET, 0),   /* 43 */
		       I(PUSH, 0),  /* 48 */
		       I(EQ),	    /* 57 */
		       I(JZ, 73),   /* 58 */
		       I(PUSH, 0),  /* 63 */
		       I(RET),	    /* 72 */
		       I(PUSH, 1),  /* 73 */
		       I(RET)));    /* 82, ends at 18 + 83 */
	unit_line(m, 0, 3);
	unit_line(m, 18, 10);
	unit_line(m, 18 + 63, 12);
	unit_line(m, 18 + 73, 14);
	/* the return of 0 comes from line 12 of a file the program uses */
	unit_line_file(m, 18 + 63, unit_file(m, "lib/used.fl"));
	return m;
}

static void encode(const struct vm_module *m, struct fl_buf *b)
{
	fl_buf_init(b);
	assert_int_equal(vm_module_encode(m, b), 0);
	assert_false(fl_buf_failed(b));
}

/* Byte offsets of the count fields in @m's encoding. */
struct layout {
	size_t rodata_len, data_len, nsyms, nfuncs, code_len, nfiles, nlines;
	size_t end;
	size_t sym0_name, func0_name;
};

static struct layout layout_of(const struct vm_module *m)
{
	struct layout l;
	size_t off = 8 + 2 + strlen(m->source);

	l.rodata_len = off;
	off += 4 + m->rodata_len;
	l.data_len = off;
	off += 4 + m->data_len;
	l.nsyms = off;
	off += 4;
	l.sym0_name = off;
	for (uint32_t i = 0; i < m->nsyms; i++)
		off += 2 + strlen(m->syms[i].name) + 1 + 4;
	l.nfuncs = off;
	off += 4;
	l.func0_name = off;
	for (uint32_t i = 0; i < m->nfuncs; i++)
		off += 2 + strlen(m->funcs[i].name) + 16;
	l.code_len = off;
	off += 4 + m->code_len;
	l.nfiles = off;
	off += 4;
	for (uint32_t i = 0; i < m->nfiles; i++)
		off += 2 + strlen(m->files[i]);
	l.nlines = off;
	off += 4 + 12 * (size_t)m->nlines;
	l.end = off;
	return l;
}

static void put32_at(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Decoding @p must fail with @code and a message containing @msg (if not
 * NULL), leave *out untouched, and not leak (ASan checks that). */
static void expect_decode_fails(const uint8_t *p, size_t len, int code,
				const char *msg)
{
	struct vm_module *sentinel = (struct vm_module *)(uintptr_t)0x1234;
	struct vm_module *out = sentinel;
	struct fl_err err;

	strcpy(err.msg, "unset");
	assert_int_equal(vm_module_decode(p, len, &out, &err), code);
	assert_ptr_equal(out, sentinel);
	assert_string_not_equal(err.msg, "unset");
	assert_true(err.msg[0] != 0);
	if (msg != NULL && strstr(err.msg, msg) == NULL)
		fail_msg("message '%s' does not contain '%s'", err.msg, msg);
}

static struct vm_module *decode_ok(const uint8_t *p, size_t len)
{
	struct vm_module *m = NULL;
	struct fl_err err = {{0}};
	int rc = vm_module_decode(p, len, &m, &err);

	if (rc != 0)
		fail_msg("decode failed (%d): %s", rc, err.msg);
	assert_non_null(m);
	return m;
}

static void assert_modules_equal(const struct vm_module *a,
				 const struct vm_module *b)
{
	assert_string_equal(a->source, b->source);
	assert_int_equal(a->rodata_len, b->rodata_len);
	assert_memory_equal(a->rodata, b->rodata, a->rodata_len);
	assert_int_equal(a->data_len, b->data_len);
	assert_memory_equal(a->data, b->data, a->data_len);
	assert_int_equal(a->nsyms, b->nsyms);
	for (uint32_t i = 0; i < a->nsyms; i++) {
		assert_string_equal(a->syms[i].name, b->syms[i].name);
		assert_int_equal(a->syms[i].segment, b->syms[i].segment);
		assert_int_equal(a->syms[i].offset, b->syms[i].offset);
	}
	assert_int_equal(a->nfuncs, b->nfuncs);
	for (uint32_t i = 0; i < a->nfuncs; i++) {
		assert_string_equal(a->funcs[i].name, b->funcs[i].name);
		assert_int_equal(a->funcs[i].nargs, b->funcs[i].nargs);
		assert_int_equal(a->funcs[i].nlocals, b->funcs[i].nlocals);
		assert_int_equal(a->funcs[i].code_off, b->funcs[i].code_off);
		assert_int_equal(a->funcs[i].code_len, b->funcs[i].code_len);
	}
	assert_int_equal(a->code_len, b->code_len);
	assert_memory_equal(a->code, b->code, a->code_len);
	assert_int_equal(a->nfiles, b->nfiles);
	for (uint32_t i = 0; i < a->nfiles; i++)
		assert_string_equal(a->files[i], b->files[i]);
	assert_int_equal(a->nlines, b->nlines);
	for (uint32_t i = 0; i < a->nlines; i++) {
		assert_int_equal(a->lines[i].code_off, b->lines[i].code_off);
		assert_int_equal(a->lines[i].line, b->lines[i].line);
		assert_int_equal(a->lines[i].file, b->lines[i].file);
	}
}

/* encode(m) -> decode -> same fields -> encode -> the same bytes. */
static void check_round_trip(const struct vm_module *m)
{
	struct fl_buf b1, b2;
	struct vm_module *d;

	encode(m, &b1);
	d = decode_ok(b1.data, b1.len);
	assert_modules_equal(m, d);
	encode(d, &b2);
	assert_int_equal(b1.len, b2.len);
	assert_memory_equal(b1.data, b2.data, b1.len);
	assert_int_equal(layout_of(m).end, b1.len);
	vm_module_free(d);
	fl_buf_close(&b1);
	fl_buf_close(&b2);
}

/* ---- Building and round trips ---- */

static void test_new_module_defaults(void **state)
{
	struct vm_module *m = vm_module_new();

	(void)state;
	assert_non_null(m);
	assert_string_equal(m->source, "?");
	assert_int_equal(m->rodata_len, 0);
	assert_int_equal(m->data_len, 0);
	assert_int_equal(m->nsyms, 0);
	assert_int_equal(m->nfuncs, 0);
	assert_int_equal(m->code_len, 0);
	assert_int_equal(m->nlines, 0);
	vm_module_free(m);
	vm_module_free(NULL);
}

static void test_insn_encode_decode(void **state)
{
	struct fl_buf b;
	struct vm_insn in;
	struct fl_err err;
	char want[64];

	(void)state;
	fl_buf_init(&b);
	vm_insn_encode(&b, VM_OP_PUSH, -2);
	vm_insn_encode(&b, VM_OP_JZ, 0x01020304);
	vm_insn_encode(&b, VM_OP_ADD, 99); /* operand ignored */
	assert_int_equal(b.len, 9 + 5 + 1);
	assert_int_equal(b.data[0], VM_OP_PUSH);
	assert_int_equal(b.data[1], 0xfe);
	assert_int_equal(b.data[8], 0xff);
	assert_int_equal(b.data[9], VM_OP_JZ);
	assert_int_equal(fl_load_u32(b.data + 10), 0x01020304);
	assert_int_equal(b.data[14], VM_OP_ADD);

	assert_int_equal(vm_insn_decode(b.data, b.len, 0, &in, &err), 0);
	assert_int_equal(in.op, VM_OP_PUSH);
	assert_true(in.imm == -2);
	assert_int_equal(in.size, 9);
	assert_int_equal(vm_insn_decode(b.data, b.len, 9, &in, &err), 0);
	assert_int_equal(in.op, VM_OP_JZ);
	assert_true(in.imm == 0x01020304);
	assert_int_equal(in.size, 5);
	assert_int_equal(vm_insn_decode(b.data, b.len, 14, &in, &err), 0);
	assert_int_equal(in.op, VM_OP_ADD);
	assert_true(in.imm == 0);
	assert_int_equal(in.size, 1);
	/* 4-byte operands are zero-extended. */
	b.len = 0;
	vm_insn_encode(&b, VM_OP_GET, -1);
	assert_int_equal(vm_insn_decode(b.data, b.len, 0, &in, &err), 0);
	assert_true(in.imm == 0xffffffff);
	/* Past the end, truncated, unknown. The messages say what, not
	 * where: the caller knows the function and the offset (the
	 * verifier's diagnostics add them). */
	assert_int_equal(vm_insn_decode(b.data, b.len, 5, &in, &err),
			 FL_EFORMAT);
	assert_string_equal(err.msg, "past the end of the code");
	assert_int_equal(vm_insn_decode(b.data, b.len, 99, &in, &err),
			 FL_EFORMAT);
	assert_string_equal(err.msg, "past the end of the code");
	assert_int_equal(vm_insn_decode(b.data, 4, 0, &in, &err), FL_EFORMAT);
	assert_string_equal(err.msg, "truncated get instruction");
	assert_int_equal(vm_insn_decode(b.data, 1, 0, &in, &err), FL_EFORMAT);
	assert_string_equal(err.msg, "truncated get instruction");
	b.data[0] = VM_OP__COUNT;
	assert_int_equal(vm_insn_decode(b.data, b.len, 0, &in, &err),
			 FL_EFORMAT);
	snprintf(want, sizeof want, "unknown opcode %u", VM_OP__COUNT);
	assert_string_equal(err.msg, want);
	b.data[0] = 0xff;
	assert_int_equal(vm_insn_decode(b.data, b.len, 0, &in, &err),
			 FL_EFORMAT);
	assert_string_equal(err.msg, "unknown opcode 255");
	/* Not at the start: same messages, still no offset. */
	vm_insn_encode(&b, VM_OP_PUSH, 1);
	assert_int_equal(vm_insn_decode(b.data, b.len - 1, 5, &in, &err),
			 FL_EFORMAT);
	assert_string_equal(err.msg, "truncated push instruction");
	b.data[5] = 0xfe;
	assert_int_equal(vm_insn_decode(b.data, b.len, 5, &in, &err),
			 FL_EFORMAT);
	assert_string_equal(err.msg, "unknown opcode 254");
	/* No error buffer: same verdict. */
	assert_int_equal(vm_insn_decode(b.data, b.len, 5, &in, NULL),
			 FL_EFORMAT);
	fl_buf_close(&b);
}

static void test_round_trip_sample(void **state)
{
	struct vm_module *m = sample();
	struct fl_err err;

	(void)state;
	check_round_trip(m);
	/* The fixture is a valid module, canonical line table included. */
	if (vm_verify(m, true, &err) != 0)
		fail_msg("sample: %s", err.msg);
	assert_int_equal(m->nlines, 4);
	assert_int_equal(m->lines[0].code_off, 0);
	vm_module_free(m);
}

static void test_round_trip_empty(void **state)
{
	struct vm_module *m = unit_module();

	(void)state;
	check_round_trip(m);
	unit_source(m, "");
	check_round_trip(m);
	vm_module_free(m);
}

static void test_round_trip_edge_values(void **state)
{
	struct vm_module *m = unit_module();
	char name[VM_NAME_MAX + 1], source[3000];

	(void)state;
	/* Longest names, a long source name, extreme numbers: the decoder
	 * is structural only, so none of these is its business. */
	memset(name, 'n', VM_NAME_MAX);
	name[VM_NAME_MAX] = 0;
	memset(source, 's', sizeof source - 1);
	source[sizeof source - 1] = 0;
	unit_source(m, source);
	unit_sym(m, name, VM_SEG_DATA, 0xffffffff);
	unit_func(m, name, 0xffffffff, 0xfffffffe, CODE(I(PUSH, INT64_MIN)));
	m->funcs[0].code_off = 0x7fffffff;
	unit_line(m, 0xffffffff, 0xffffffff);
	check_round_trip(m);
	vm_module_free(m);
}

static void test_golden_bytes(void **state)
{
	/* The documented layout, spelled out. */
	static const uint8_t want[] = {
	    'F',	'L', 'K', 'B', 2,    0,	  0, 0, /* magic, version, flags
							 */
	    2,		0,   'a', 'b',			/* source */
	    2,		0,   0,	  0,   'h',  'i',	/* rodata */
	    1,		0,   0,	  0,   0x7f,		/* data */
	    1,		0,   0,	  0,			/* nsyms */
	    1,		0,   's', 1,   0,    0,	  0, 0, /* "s" data+0 */
	    1,		0,   0,	  0,			/* nfuncs */
	    4,		0,   'm', 'a', 'i',  'n',	/* "main" */
	    0,		0,   0,	  0,   2,    0,	  0, 0, /* nargs 0, nlocals 2 */
	    0,		0,   0,	  0,   10,   0,	  0, 0, /* code 0+10 */
	    10,		0,   0,	  0,			/* code_len */
	    VM_OP_PUSH, 7,   0,	  0,   0,    0,	  0, 0, 0,
	    VM_OP_RET,	0,   0,	  0,   0,		/* nfiles */
	    1,		0,   0,	  0,			/* nlines */
	    0,		0,   0,	  0,   5,    0,	  0, 0, /* offset 0: line 5 */
	    0,		0,   0,	  0,			/* of the source */
	};
	struct vm_module *m = unit_module(), *d;
	struct fl_buf b;
	struct fl_err err;

	(void)state;
	unit_source(m, "ab");
	unit_segment(m, VM_SEG_RODATA, "hi", 2);
	unit_segment(m, VM_SEG_DATA, "\x7f", 1);
	unit_sym(m, "s", VM_SEG_DATA, 0);
	unit_func(m, "main", 0, 2, CODE(I(PUSH, 7), I(RET)));
	unit_line(m, 0, 5);
	encode(m, &b);
	assert_int_equal(b.len, sizeof want);
	assert_memory_equal(b.data, want, sizeof want);
	d = decode_ok(want, sizeof want);
	assert_modules_equal(m, d);
	assert_int_equal(vm_verify(d, true, &err), 0);
	assert_int_equal(d->funcs[0].max_stack, 1);
	vm_module_free(d);
	vm_module_free(m);
	fl_buf_close(&b);
}

static void test_encode_reports_memory_failure(void **state)
{
	struct vm_module *m = sample();
	struct fl_buf b;

	(void)state;
	fl_buf_init(&b);
	assert_false(fl_buf_reserve(&b, SIZE_MAX)); /* poison the buffer */
	assert_int_equal(vm_module_encode(m, &b), FL_ENOMEM);
	fl_buf_close(&b);
	vm_module_free(m);
}

static void test_encode_appends(void **state)
{
	struct vm_module *m = sample();
	struct fl_buf a, b;

	(void)state;
	encode(m, &a);
	fl_buf_init(&b);
	fl_buf_put_str(&b, "xyz");
	assert_int_equal(vm_module_encode(m, &b), 0);
	assert_int_equal(b.len, 3 + a.len);
	assert_memory_equal(b.data, "xyz", 3);
	assert_memory_equal(b.data + 3, a.data, a.len);
	fl_buf_close(&a);
	fl_buf_close(&b);
	vm_module_free(m);
}

/* ---- Decode failures ---- */

static void test_bad_magic(void **state)
{
	struct vm_module *m = sample();
	struct fl_buf b;

	(void)state;
	encode(m, &b);
	expect_decode_fails(b.data, 0, FL_EFORMAT, "bad magic");
	expect_decode_fails(b.data, 3, FL_EFORMAT, "bad magic");
	b.data[3] = 'C';
	expect_decode_fails(b.data, b.len, FL_EFORMAT, "bad magic");
	b.data[3] = 'B';
	b.data[0] = 'f';
	expect_decode_fails(b.data, b.len, FL_EFORMAT, "bad magic");
	b.data[0] = 'F';
	/* And no error buffer at all is fine. */
	struct vm_module *out = NULL;
	b.data[1] = 0;
	assert_int_equal(vm_module_decode(b.data, b.len, &out, NULL),
			 FL_EFORMAT);
	assert_null(out);
	fl_buf_close(&b);
	vm_module_free(m);
}

static void test_bad_version(void **state)
{
	static const uint16_t versions[] = {0, 1, 3, 0x100, 0xffff};
	struct vm_module *m = sample();
	struct fl_buf b;

	(void)state;
	encode(m, &b);
	for (size_t i = 0; i < sizeof versions / sizeof *versions; i++) {
		b.data[4] = (uint8_t)versions[i];
		b.data[5] = (uint8_t)(versions[i] >> 8);
		expect_decode_fails(b.data, b.len, FL_EFORMAT, "version");
	}
	fl_buf_close(&b);
	vm_module_free(m);
}

static void test_bad_flags(void **state)
{
	struct vm_module *m = sample();
	struct fl_buf b;

	(void)state;
	encode(m, &b);
	b.data[6] = 1;
	expect_decode_fails(b.data, b.len, FL_EFORMAT, "flags 0x1");
	b.data[6] = 0;
	b.data[7] = 0x80;
	expect_decode_fails(b.data, b.len, FL_EFORMAT, "flags 0x8000");
	fl_buf_close(&b);
	vm_module_free(m);
}

/* Every proper prefix of a valid module is rejected cleanly: FL_EFORMAT, no
 * module, no leak, no read past the prefix (ASan: each prefix is copied to
 * its own exactly-sized allocation). */
static void check_every_prefix(const struct vm_module *m)
{
	struct fl_buf b;

	encode(m, &b);
	for (size_t n = 0; n < b.len; n++) {
		uint8_t *p = malloc(n ? n : 1);
		assert_non_null(p);
		memcpy(p, b.data, n);
		expect_decode_fails(p, n, FL_EFORMAT, NULL);
		free(p);
	}
	/* The whole thing still decodes. */
	vm_module_free(decode_ok(b.data, b.len));
	fl_buf_close(&b);
}

static void test_truncation_every_prefix(void **state)
{
	struct vm_module *m = sample();
	struct vm_module *e = unit_module();

	(void)state;
	check_every_prefix(m);
	check_every_prefix(e);
	vm_module_free(m);
	vm_module_free(e);
}

static void test_truncation_messages(void **state)
{
	struct vm_module *m = sample();
	struct layout l = layout_of(m);
	struct fl_buf b;

	(void)state;
	encode(m, &b);
	expect_decode_fails(b.data, 7, FL_EFORMAT, "truncated module: header");
	expect_decode_fails(b.data, 9, FL_EFORMAT, "source name");
	expect_decode_fails(b.data, l.nsyms + 2, FL_EFORMAT, "symbol");
	expect_decode_fails(b.data, l.sym0_name + 3, FL_EFORMAT, "symbol");
	expect_decode_fails(b.data, l.func0_name + 7, FL_EFORMAT, "function");
	expect_decode_fails(b.data, l.nfiles + 3, FL_EFORMAT, "source file");
	expect_decode_fails(b.data, l.nfiles + 4 + 5, FL_EFORMAT,
			    "source file name");
	expect_decode_fails(b.data, l.nlines + 4 + 7, FL_EFORMAT, "line table");
	expect_decode_fails(b.data, l.nlines + 4 + 11, FL_EFORMAT,
			    "line table");
	fl_buf_close(&b);
	vm_module_free(m);
}

static void test_trailing_bytes(void **state)
{
	struct vm_module *m = sample();
	struct fl_buf b;
	size_t len;

	(void)state;
	encode(m, &b);
	len = b.len;
	fl_buf_put_u8(&b, 0);
	expect_decode_fails(b.data, b.len, FL_EFORMAT,
			    "1 unexpected bytes after the line table");
	for (int i = 0; i < 99; i++)
		fl_buf_put_u8(&b, (uint8_t)i);
	expect_decode_fails(b.data, b.len, FL_EFORMAT, "100 unexpected bytes");
	vm_module_free(decode_ok(b.data, len));
	fl_buf_close(&b);
	vm_module_free(m);
}

/* A count field claims more records than the input could hold. The decoder
 * must say so before allocating anything proportional to the count (the
 * message comes from that check; an allocation of 0xffffffff records would
 * also trip ASan's allocation-size limit). */
static void test_counts_larger_than_input(void **state)
{
	static const uint32_t bad[] = {0xffffffff, 0x80000000, 0x10000000};
	struct vm_module *m = sample();
	struct layout l = layout_of(m);
	const struct {
		size_t off;
		const char *what;
	} fields[] = {
	    {l.rodata_len, "read-only data count"},
	    {l.data_len, "data count"},
	    {l.nsyms, "symbol count"},
	    {l.nfuncs, "function count"},
	    {l.code_len, "code count"},
	    {l.nfiles, "source file count"},
	    {l.nlines, "line table entry count"},
	};
	struct fl_buf b;

	(void)state;
	encode(m, &b);
	for (size_t f = 0; f < sizeof fields / sizeof *fields; f++) {
		uint32_t orig = fl_load_u32(b.data + fields[f].off);
		for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
			put32_at(b.data + fields[f].off, bad[i]);
			expect_decode_fails(b.data, b.len, FL_EFORMAT,
					    fields[f].what);
			expect_decode_fails(b.data, b.len, FL_EFORMAT,
					    "exceeds the module's size");
		}
		/* One more record than there is: rejected one way or
		 * another, never accepted. */
		put32_at(b.data + fields[f].off, orig + 1);
		expect_decode_fails(b.data, b.len, FL_EFORMAT, NULL);
		put32_at(b.data + fields[f].off, orig);
	}
	vm_module_free(decode_ok(b.data, b.len));
	fl_buf_close(&b);
	vm_module_free(m);
}

static void test_bad_names(void **state)
{
	struct vm_module *m;
	struct fl_buf b;
	struct layout l;
	char name[VM_NAME_MAX + 2];
	uint8_t *x;

	(void)state;
	/* A NUL inside a symbol name, a function name, the source name. */
	m = sample();
	l = layout_of(m);
	encode(m, &b);
	b.data[l.sym0_name + 2 + 1] = 0; /* "m\0g" */
	expect_decode_fails(b.data, b.len, FL_EFORMAT, "bad symbol name");
	b.data[l.sym0_name + 2 + 1] = 's';
	b.data[l.func0_name + 2] = 0; /* "\0dd3" */
	expect_decode_fails(b.data, b.len, FL_EFORMAT, "bad function name");
	b.data[l.func0_name + 2] = 'a';
	x = memchr(b.data, '.', b.len); /* "sample.fla" */
	assert_non_null(x);
	*x = 0;
	expect_decode_fails(b.data, b.len, FL_EFORMAT, "bad source name");
	*x = '.';
	vm_module_free(decode_ok(b.data, b.len));
	/* Empty names: a zero length, the name's bytes moved to the end...
	 * rather than shifting, build modules with such names directly. */
	fl_buf_close(&b);
	vm_module_free(m);

	m = unit_module();
	unit_sym(m, "", VM_SEG_DATA, 0);
	encode(m, &b);
	expect_decode_fails(b.data, b.len, FL_EFORMAT,
			    "bad symbol name (length 0)");
	fl_buf_close(&b);
	vm_module_free(m);

	m = unit_module();
	unit_func(m, "", 0, 0, CODE(I(PUSH, 0), I(RET)));
	encode(m, &b);
	expect_decode_fails(b.data, b.len, FL_EFORMAT,
			    "bad function name (length 0)");
	fl_buf_close(&b);
	vm_module_free(m);

	/* VM_NAME_MAX bytes is the limit for both kinds of name. */
	memset(name, 'a', sizeof name - 1);
	name[sizeof name - 1] = 0;
	m = unit_module();
	unit_sym(m, name, VM_SEG_DATA, 0);
	encode(m, &b);
	expect_decode_fails(b.data, b.len, FL_EFORMAT,
			    "bad symbol name (length 256)");
	fl_buf_close(&b);
	vm_module_free(m);

	m = unit_module();
	unit_func(m, name, 0, 0, CODE(I(PUSH, 0), I(RET)));
	encode(m, &b);
	expect_decode_fails(b.data, b.len, FL_EFORMAT,
			    "bad function name (length 256)");
	fl_buf_close(&b);
	name[VM_NAME_MAX] = 0;
	free(m->funcs[0].name);
	m->funcs[0].name = unit_strdup(name);
	check_round_trip(m);
	vm_module_free(m);
}

/* The decoder checks structure only; what the code means is left to
 * vm_verify(). */
static void test_decode_is_structural(void **state)
{
	static const uint8_t junk[] = {0xff, 0xfe, VM_OP_PUSH, 1};
	struct vm_module *m = unit_module(), *d;
	struct fl_buf b;
	struct fl_err err;

	(void)state;
	unit_sym(m, "x-y", 9, 1000);
	unit_func_raw(m, "f", 0, 0, junk, sizeof junk);
	m->funcs[0].code_off = 5;
	unit_line(m, 100, 0);
	encode(m, &b);
	d = decode_ok(b.data, b.len);
	assert_int_equal(d->syms[0].segment, 9);
	assert_int_equal(vm_verify(d, false, &err), FL_EFORMAT);
	vm_module_free(d);
	fl_buf_close(&b);
	vm_module_free(m);
}

/* Flip bytes of a valid module at random: the decoder and the verifier
 * must fail cleanly or succeed, never crash or leak. */
static void test_decode_mutations(void **state)
{
	struct vm_module *m = sample(), *d;
	struct fl_buf b;
	uint64_t x = 88172645463325252ull;
	size_t ok = 0;

	(void)state;
	encode(m, &b);
	for (int iter = 0; iter < 20000; iter++) {
		uint8_t *p = malloc(b.len);
		struct fl_err err;
		size_t len = b.len;
		assert_non_null(p);
		memcpy(p, b.data, b.len);
		for (int k = 0; k < 1 + iter % 4; k++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			p[x % b.len] = (uint8_t)(x >> 32);
		}
		if (iter % 7 == 0)
			len = (size_t)(x >> 40) % b.len;
		d = NULL;
		if (vm_module_decode(p, len, &d, &err) == 0) {
			if (vm_verify(d, iter % 2, &err) == 0)
				ok++;
			vm_module_free(d);
		}
		free(p);
	}
	/* Some mutations (data bytes, immediates) leave a valid module. */
	assert_true(ok > 0);
	fl_buf_close(&b);
	vm_module_free(m);
}

/* ---- Queries ---- */

static void test_module_line(void **state)
{
	struct vm_module *m = sample();

	(void)state;
	assert_int_equal(vm_module_line(m, 0, NULL), 3);
	assert_int_equal(vm_module_line(m, 17, NULL), 3);
	assert_int_equal(vm_module_line(m, 18, NULL), 10);
	assert_int_equal(vm_module_line(m, 18 + 62, NULL), 10);
	assert_int_equal(vm_module_line(m, 18 + 63, NULL), 12);
	assert_int_equal(vm_module_line(m, 18 + 72, NULL), 12);
	assert_int_equal(vm_module_line(m, 18 + 73, NULL), 14);
	assert_int_equal(vm_module_line(m, 18 + 82, NULL), 14);
	assert_int_equal(vm_module_line(m, 0xffffffff, NULL), 14);
	/* Each line's file: the source, or one from the file table. */
	const char *file = NULL;
	assert_int_equal(vm_module_line(m, 18 + 62, &file), 10);
	assert_string_equal(file, "sample.fla");
	assert_int_equal(vm_module_line(m, 18 + 63, &file), 12);
	assert_string_equal(file, "lib/used.fl");
	assert_int_equal(vm_module_line(m, 18 + 73, &file), 14);
	assert_string_equal(file, "sample.fla");
	assert_string_equal(vm_module_file(m, 0), "sample.fla");
	assert_string_equal(vm_module_file(m, 1), "lib/used.fl");
	assert_string_equal(vm_module_file(m, 2), "sample.fla");
	/* Before the first entry, or no table: unknown. */
	m->lines[0].code_off = 5;
	assert_int_equal(vm_module_line(m, 4, NULL), 0);
	assert_int_equal(vm_module_line(m, 5, NULL), 3);
	m->nlines = 0;
	assert_int_equal(vm_module_line(m, 0, &file), 0);
	assert_string_equal(file, "sample.fla");
	assert_int_equal(vm_module_line(m, 50, NULL), 0);
	m->nlines = 4;
	vm_module_free(m);
}

static void test_module_line_many(void **state)
{
	struct vm_module *m = unit_module();

	(void)state;
	/* Entries every 3 bytes: exercise the binary search at scale. */
	for (uint32_t i = 0; i < 1000; i++)
		unit_line(m, 3 * i + 1, 100 + i);
	assert_int_equal(vm_module_line(m, 0, NULL), 0);
	for (uint32_t off = 1; off < 3100; off++) {
		uint32_t i = (off - 1) / 3;
		assert_int_equal(vm_module_line(m, off, NULL),
				 100 + (i < 1000 ? i : 999));
	}
	vm_module_free(m);
}

static void test_module_func_at(void **state)
{
	struct vm_module *m = sample();

	(void)state;
	assert_int_equal(vm_module_func_at(m, 0), 0);
	assert_int_equal(vm_module_func_at(m, 17), 0);
	assert_int_equal(vm_module_func_at(m, 18), 1);
	assert_int_equal(vm_module_func_at(m, 18 + 82), 1);
	assert_int_equal(vm_module_func_at(m, 18 + 83), -1);
	assert_int_equal(vm_module_func_at(m, 0xffffffff), -1);
	vm_module_free(m);
	m = unit_module();
	assert_int_equal(vm_module_func_at(m, 0), -1);
	vm_module_free(m);
}

static void test_module_find_func(void **state)
{
	struct vm_module *m = sample();

	(void)state;
	assert_int_equal(vm_module_find_func(m, "add3"), 0);
	assert_int_equal(vm_module_find_func(m, "main"), 1);
	assert_int_equal(vm_module_find_func(m, "mai"), -1);
	assert_int_equal(vm_module_find_func(m, "main2"), -1);
	assert_int_equal(vm_module_find_func(m, "MAIN"), -1);
	assert_int_equal(vm_module_find_func(m, ""), -1);
	/* Data symbols are not functions. */
	assert_int_equal(vm_module_find_func(m, "msg"), -1);
	vm_module_free(m);
}

static void test_module_seg_base(void **state)
{
	const vm_word ro = VM_GLOBAL_BIT + VM_PAGE_SIZE;
	const struct {
		uint32_t rodata_len;
		vm_word data;
	} cases[] = {
	    {0, ro},
	    {1, ro + VM_PAGE_SIZE},
	    {VM_PAGE_SIZE - 1, ro + VM_PAGE_SIZE},
	    {VM_PAGE_SIZE, ro + VM_PAGE_SIZE},
	    {VM_PAGE_SIZE + 1, ro + 2 * VM_PAGE_SIZE},
	    {VM_SEGMENT_MAX, ro + VM_SEGMENT_MAX},
	    {0xffffffff, ro + 0x100000000ull},
	};
	struct vm_module *m = unit_module();

	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		m->rodata_len = cases[i].rodata_len;
		assert_true(vm_module_seg_base(m, VM_SEG_RODATA) == ro);
		assert_true(vm_module_seg_base(m, VM_SEG_DATA) ==
			    cases[i].data);
	}
	/* Read-only data never starts on the null page. */
	assert_true((ro & ~VM_GLOBAL_BIT) >= VM_PAGE_SIZE);
	m->rodata_len = 0;
	vm_module_free(m);
}

static void test_name_valid(void **state)
{
	char longest[VM_NAME_MAX + 2];

	(void)state;
	assert_true(vm_name_valid("main", 4));
	assert_true(vm_name_valid("_", 1));
	assert_true(vm_name_valid("$tmp.1", 6));
	assert_true(vm_name_valid("a.b$9_Z", 7));
	/* Only @len bytes count. */
	assert_true(vm_name_valid("ab-c", 2));
	assert_false(vm_name_valid("ab-c", 3));
	assert_false(vm_name_valid("", 0));
	assert_false(vm_name_valid("x", 0));
	/* No leading digit or '.', nothing outside the identifier set. */
	assert_false(vm_name_valid("1a", 2));
	assert_false(vm_name_valid(".L1", 3));
	assert_false(vm_name_valid("a b", 3));
	assert_false(vm_name_valid("a\0b", 3));
	assert_false(vm_name_valid("\xc3\xa9", 2));
	/* At most VM_NAME_MAX bytes. */
	memset(longest, 'n', sizeof longest);
	assert_true(vm_name_valid(longest, VM_NAME_MAX));
	assert_false(vm_name_valid(longest, VM_NAME_MAX + 1));
}

/* ---- Fuzz seeds ---- */

/* The committed fuzz seeds (the .flb files in tests/fuzz/seeds/, relative to
 * the repository root, where `make unit` runs) are valid modules: they decode,
 * verify and re-encode to the same bytes. Skipped when run elsewhere. */
static void test_fuzz_seeds_are_valid(void **state)
{
	DIR *dir = opendir("tests/fuzz/seeds");
	struct dirent *e;
	int n = 0;

	(void)state;
	if (dir == NULL)
		skip();
	while ((e = readdir(dir)) != NULL) {
		char path[512];
		struct fl_err err;
		struct vm_module *m;
		struct fl_buf b;
		uint8_t *p;
		size_t len, nl = strlen(e->d_name);

		if (nl < 4 || strcmp(e->d_name + nl - 4, ".flb") != 0)
			continue;
		snprintf(path, sizeof path, "tests/fuzz/seeds/%s", e->d_name);
		if (fl_read_file(path, &p, &len, &err) != 0)
			fail_msg("%s", err.msg);
		m = NULL;
		if (vm_module_decode(p, len, &m, &err) != 0)
			fail_msg("%s: %s", path, err.msg);
		if (vm_verify(m, true, &err) != 0)
			fail_msg("%s: %s", path, err.msg);
		encode(m, &b);
		assert_int_equal(b.len, len);
		assert_memory_equal(b.data, p, len);
		fl_buf_close(&b);
		vm_module_free(m);
		free(p);
		n++;
	}
	closedir(dir);
	assert_true(n > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_new_module_defaults),
	    cmocka_unit_test(test_insn_encode_decode),
	    cmocka_unit_test(test_round_trip_sample),
	    cmocka_unit_test(test_round_trip_empty),
	    cmocka_unit_test(test_round_trip_edge_values),
	    cmocka_unit_test(test_golden_bytes),
	    cmocka_unit_test(test_encode_reports_memory_failure),
	    cmocka_unit_test(test_encode_appends),
	    cmocka_unit_test(test_bad_magic),
	    cmocka_unit_test(test_bad_version),
	    cmocka_unit_test(test_bad_flags),
	    cmocka_unit_test(test_truncation_every_prefix),
	    cmocka_unit_test(test_truncation_messages),
	    cmocka_unit_test(test_trailing_bytes),
	    cmocka_unit_test(test_counts_larger_than_input),
	    cmocka_unit_test(test_bad_names),
	    cmocka_unit_test(test_decode_is_structural),
	    cmocka_unit_test(test_decode_mutations),
	    cmocka_unit_test(test_module_line),
	    cmocka_unit_test(test_module_line_many),
	    cmocka_unit_test(test_module_func_at),
	    cmocka_unit_test(test_module_find_func),
	    cmocka_unit_test(test_module_seg_base),
	    cmocka_unit_test(test_name_valid),
	    cmocka_unit_test(test_fuzz_seeds_are_valid),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
