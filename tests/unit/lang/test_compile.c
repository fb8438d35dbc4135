/* Unit tests for the .fl compiler (src/lang/lang_*.c): programs compiled,
 * verified and run on the embedded VM with their output captured; the
 * shape of generated code (constant folding, line table); one test per
 * diagnostic kind with its line:col; `use`; hostile input (random and
 * mutated bytes) that must only produce diagnostics; and big inputs, a
 * megabyte of each shape, that must compile or give the one diagnostic
 * expected, with no quadratic pass and no recursion as deep as the input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "lang/lang.h"

/* ---- Helpers ---- */

static int compile_n(const char *path, const char *src, size_t len,
		     struct vm_module **m, char **diag)
{
	size_t dlen = 0;
	FILE *f = open_memstream(diag, &dlen);
	int rc;

	assert_non_null(f);
	rc = lang_compile(path, src, len, m, f);
	assert_int_equal(fclose(f), 0);
	if (rc == 0)
		assert_non_null(*m);
	else
		assert_null(*m);
	return rc;
}

static struct vm_module *ok(const char *src)
{
	struct vm_module *m = NULL;
	char *diag = NULL;
	struct fl_err err;
	int rc = compile_n("t.fl", src, strlen(src), &m, &diag);

	if (rc != 0)
		fprintf(stderr, "unexpected diagnostics:\n%s", diag);
	assert_int_equal(rc, 0);
	assert_string_equal(diag, "");
	free(diag);
	rc = vm_verify(m, true, &err);
	if (rc != 0)
		fprintf(stderr, "verify: %s\n", err.msg);
	assert_int_equal(rc, 0);
	return m;
}

static char *slurp(FILE *f)
{
	long n;
	char *s;

	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n >= 0);
	rewind(f);
	s = calloc(1, (size_t)n + 1);
	assert_non_null(s);
	assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	return s;
}

/* Compile and run @src; its stdout must be @out (and stderr @err when not
 * NULL) and its exit status @status. */
static void run_err(const char *src, const char *out, const char *errs,
		    int status)
{
	struct vm_module *m = ok(src);
	struct vm_options o;
	FILE *fo = tmpfile(), *fe = tmpfile();
	char *argv[] = {(char *)"t.fl", NULL};
	int rc;

	assert_non_null(fo);
	assert_non_null(fe);
	vm_options_init(&o);
	o.cpus = 2;
	o.argc = 1;
	o.argv = argv;
	o.fd_out = fileno(fo);
	o.fd_err = fileno(fe);
	rc = vm_run(m, &o);
	vm_module_free(m);
	char *so = slurp(fo), *se = slurp(fe);
	if (strcmp(so, out) != 0 || rc != status)
		fprintf(stderr, "status %d, stdout:\n%s\nstderr:\n%s\n", rc,
			so, se);
	assert_string_equal(so, out);
	if (errs != NULL)
		assert_string_equal(se, errs);
	assert_int_equal(rc, status);
	free(so);
	free(se);
}

static void run(const char *src, const char *out, int status)
{
	run_err(src, out, NULL, status);
}

/* @src must fail to compile with @want among exactly @count diagnostics
 * (each is three lines: message, source, caret). */
static void bad(const char *src, const char *want, int count)
{
	struct vm_module *m = NULL;
	char *diag = NULL;
	int lines = 0;

	assert_int_equal(compile_n("t.fl", src, strlen(src), &m, &diag),
			 FL_ESYNTAX);
	if (strstr(diag, want) == NULL)
		fprintf(stderr, "wanted: %s\ngot:\n%s", want, diag);
	assert_non_null(strstr(diag, want));
	for (const char *p = diag; *p; p++)
		lines += *p == '\n';
	if (lines != 3 * count)
		fprintf(stderr, "wanted %d diagnostics, got:\n%s", count, diag);
	assert_int_equal(lines, 3 * count);
	free(diag);
}

/* ---- Programs ---- */

static void test_return_status(void **state)
{
	(void)state;
	run("fn main() { return 7; }", "", 7);
	run("fn main() { }", "", 0);
	run("fn main() { exit(4); return 1; }", "", 4);
}

static void test_arith_precedence(void **state)
{
	(void)state;
	run("fn main() { var a = 7; var b = 3;\n"
	    "print(\"%d %d %d %d %d\\n\", a + b * 2, (a + b) * 2, a / b,"
	    " a % b, -a / b);\n"
	    "print(\"%d %d %d %d\\n\", a << 2 | 1, a & 6 ^ 1, ~a, !a);\n"
	    "print(\"%d %d %d %d\\n\", a < b, a >= b, a == 7 && b != 3,"
	    " -1 >> 1);\n"
	    "print(\"%d %d\\n\", ltu(-1, 1), shr(-1, 63));\n"
	    "return 0; }",
	    "13 20 2 1 -2\n29 7 -8 0\n0 1 0 -1\n0 1\n", 0);
}

static void test_fib_forward_call(void **state)
{
	(void)state;
	run("fn main() { print(\"%d\\n\", fib(20)); return 0; }\n"
	    "fn fib(n) { if n < 2 { return n; }\n"
	    "  return fib(n - 1) + fib(n - 2); }",
	    "6765\n", 0);
}

static void test_loops(void **state)
{
	(void)state;
	run("fn main() {\n"
	    "  var s = 0;\n"
	    "  for i in 0..10 { if i == 8 { break; }\n"
	    "    if i % 2 == 1 { continue; } s += i; }\n"
	    "  var k = 0;\n"
	    "  while 1 { k += 1; if k < 5 { continue; } break; }\n"
	    "  for i in 3..3 { s = 1000; }\n"
	    "  for i in 0..3 { for j in 0..3 { if j == 1 { break; } s += 100; } }\n"
	    "  print(\"%d %d\\n\", s, k); return 0; }",
	    "312 5\n", 0);
}

static void test_scopes(void **state)
{
	(void)state;
	run("fn main() { var x = 1; { var x = 2; x += 1; }\n"
	    "  if 1 { var x = x + 10; print(\"%d \", x); }\n"
	    "  var y; print(\"%d %d\\n\", x, y); return 0; }",
	    "11 1 0\n", 0);
}

static void test_globals_and_address(void **state)
{
	(void)state;
	run("const K = 4;\nglobal g = K * 10 + 2;\nglobal h;\n"
	    "fn bump(p) { p[0] += 1; return p[0]; }\n"
	    "fn main() { h = 5; h <<= 2; bump(&g); xadd(&h, 1);\n"
	    "  print(\"%d %d %d\\n\", g, h, load64(&g)); return 0; }",
	    "43 21 43\n", 0);
}

static void test_arrays(void **state)
{
	(void)state;
	run("fn main() { var p = alloc(80); var i = 2;\n"
	    "  for k in 0..10 { p[k] = k * k; }\n"
	    "  p[i] += 100; p[3] *= 2; p[i + 1] -= 1; p[9] /= 9;\n"
	    "  p[4] %= 5; p[5] &= 7; p[6] |= 1; p[7] ^= 1; p[8] >>= 2;\n"
	    "  for k in 0..10 { print(\"%d,\", p[k]); }\n"
	    "  free(p); print(\"\\n\"); return 0; }",
	    "0,1,104,17,1,1,37,48,16,9,\n", 0);
}

static void test_short_circuit(void **state)
{
	(void)state;
	run("global n = 0;\n"
	    "fn t(v) { n += 1; return v; }\n"
	    "fn main() { var a = t(0) && t(1); var b = t(1) || t(0);\n"
	    "  var c = t(2) && t(3); var d = t(0) || t(0);\n"
	    "  print(\"%d %d %d %d %d\\n\", a, b, c, d, n); return 0; }",
	    "0 1 1 0 6\n", 0);
}

static void test_print_formats(void **state)
{
	(void)state;
	run_err("fn main() {\n"
		"  print(\"%d %u %x %s %c %%\\n\", -5, -1, 0xbeef, \"str\","
		" 'q');\n"
		"  print(\"%d\\n\", -9223372036854775807 - 1);\n"
		"  print(\"%s\\n\", \"a long string that will make the buffer"
		" grow well past its first sixty-four bytes, twice over\");\n"
		"  eprint(\"oops %d\\n\", 3);\n"
		"  return 0; }",
		"-5 18446744073709551615 beef str q %\n"
		"-9223372036854775808\n"
		"a long string that will make the buffer grow well past its"
		" first sixty-four bytes, twice over\n",
		"oops 3\n", 0);
}

static void test_escapes_and_chars(void **state)
{
	(void)state;
	run("fn main() { var s = \"a\\tb\\x41\\\\\\\"\\'\";\n"
	    "  print(\"%s %d %d %d\\n\", s, '\\n', '\\0', 0x10);\n"
	    "  /* block\n comment */ return load8(s + 1); }",
	    "a\tbA\\\"' 10 0 16\n", 9);
}

static void test_threads(void **state)
{
	(void)state;
	run("global total = 0;\n"
	    "fn work(lo, hi) { var c = 0; for i in lo..hi { c += i; }\n"
	    "  xadd(&total, c); return c; }\n"
	    "fn main() { var t = alloc(32);\n"
	    "  for w in 0..4 { t[w] = spawn work(w * 100, (w + 1) * 100); }\n"
	    "  var s = 0; for w in 0..4 { s += join(t[w]); }\n"
	    "  print(\"%d %d\\n\", s, total); return 0; }",
	    "79800 79800\n", 0);
}

static void test_builtin_values(void **state)
{
	(void)state;
	/* a builtin that pushes nothing is 0 as a value; one that pushes is
	 * dropped as a statement */
	run("fn main() { var r = free(0) + 5; self(); ncpu();\n"
	    "  var p = alloc(16); fill(p, 'x', 3); store8(p + 3, 0);\n"
	    "  write(1, p, 3); return r; }",
	    "xxx", 5);
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

static void test_constant_folding(void **state)
{
	struct vm_insn in[16];
	struct vm_module *m;

	(void)state;
	m = ok("const A = 6;\nconst B = A * 7 - (1 << 3);\n"
	       "fn main() { return B / 2 + -A % 4 + (A > 5 && !0); }");
	int n = decode(m, 0, in, 16);
	assert_int_equal(n, 4); /* push 16; ret; push 0; ret */
	assert_int_equal(in[0].op, VM_OP_PUSH);
	assert_true(in[0].imm == 17 - 2 + 1);
	assert_int_equal(in[1].op, VM_OP_RET);
	vm_module_free(m);
	/* a local shadows a constant */
	run("const A = 1;\nfn main() { var A = 5; return A; }", "", 5);
}

static void test_line_table(void **state)
{
	struct vm_module *m;

	(void)state;
	m = ok("fn f() {\n  return 1;\n}\nfn main() {\n  var x = 2;\n"
	       "  x += f();\n  return x;\n}\n");
	assert_true(m->nlines >= 4);
	assert_int_equal(m->lines[0].code_off, 0);
	assert_int_equal(m->lines[0].line, 2);
	assert_int_equal(vm_module_line(m, m->funcs[1].code_off, NULL), 5);
	assert_string_equal(m->source, "t.fl");
	assert_int_equal(m->nfiles, 0);
	vm_module_free(m);
	/* print's implementation is compiled from the file "<prelude>": its
	 * lines name that file, main's name t.fl */
	m = ok("fn main() {\n  print(\"%d\\n\", 1);\n  return 0;\n}\n");
	int pf = vm_module_find_func(m, "$print"), mf = vm_module_find_func(m, "main");
	const char *file;
	size_t len;
	assert_true(pf >= 0 && mf >= 0);
	assert_int_equal(m->nfiles, 1);
	assert_string_equal(m->files[0], "<prelude>");
	assert_true(vm_module_line(m, m->funcs[pf].code_off, &file) > 0);
	assert_string_equal(file, "<prelude>");
	assert_int_equal(vm_module_line(m, m->funcs[mf].code_off, &file), 2);
	assert_string_equal(file, "t.fl");
	assert_non_null(lang_builtin_source("<prelude>", &len));
	assert_true(len > 0);
	assert_null(lang_builtin_source("t.fl", &len));
	vm_module_free(m);
}

/* A compiled module disassembles and assembles back to the same bytes. */
static void test_disasm_roundtrip(void **state)
{
	struct vm_module *m, *m2 = NULL;
	struct fl_buf a, b;
	char *text = NULL, *diag = NULL;
	size_t tlen = 0, dlen = 0;

	(void)state;
	m = ok("const K = 3;\nglobal g = K;\nglobal h;\n"
	       "fn f(x) { var s = \"str\"; return x + load8(s) + g; }\n"
	       "fn main() { h = f(1); print(\"%d %s\\n\", h, \"x\");"
	       " return 0; }\n");
	FILE *f = open_memstream(&text, &tlen);
	assert_non_null(f);
	assert_int_equal(asm_disasm(m, f), 0);
	assert_int_equal(fclose(f), 0);
	f = open_memstream(&diag, &dlen);
	assert_non_null(f);
	assert_int_equal(asm_assemble("t.fl", text, tlen, &m2, f), 0);
	assert_int_equal(fclose(f), 0);
	assert_string_equal(diag, "");
	fl_buf_init(&a);
	fl_buf_init(&b);
	assert_int_equal(vm_module_encode(m, &a), 0);
	assert_int_equal(vm_module_encode(m2, &b), 0);
	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.data, b.data, a.len);
	fl_buf_close(&a);
	fl_buf_close(&b);
	free(text);
	free(diag);
	vm_module_free(m);
	vm_module_free(m2);
}

/* ---- Diagnostics ---- */

static void test_diag_format(void **state)
{
	struct vm_module *m = NULL;
	char *diag = NULL;

	(void)state;
	assert_int_equal(compile_n("d.fl", "fn main() {\n\tvar x = y;\n}\n",
				   26, &m, &diag),
			 FL_ESYNTAX);
	assert_string_equal(diag, "d.fl:2:10: error: unknown name 'y'\n"
				  "\tvar x = y;\n"
				  "\t        ^\n");
	free(diag);
}

static void test_diag_lexical(void **state)
{
	(void)state;
	bad("fn main() { var s = \"abc; }\n", "t.fl:1:21: error: "
	    "unterminated string literal", 2);
	bad("fn main() { return 1 @ 2; }", "t.fl:1:22: error: unexpected "
	    "character '@'", 1);
	/* a run of bytes that start no token is one error */
	bad("fn main() { return 1 @#` 2; }", "t.fl:1:22: error: unexpected "
	    "character '@' (and 2 more)", 1);
	bad("fn main() { var s = \xe2\x80\x9cq\xe2\x80\x9d; }", "t.fl:1:25: "
	    "error: unexpected byte 0xe2 (and 2 more)", 2);
	bad("fn main() { return '\\q'; }", "t.fl:1:21: error: invalid "
	    "escape sequence", 1);
	bad("fn main() { return 'ab'; }", "t.fl:1:20: error: a character "
	    "literal holds exactly one character", 1);
	bad("fn main() { return 99999999999999999999; }", "t.fl:1:20: "
	    "error: number '99999999999999999999' does not fit", 1);
	bad("fn main() { return 12ab; }", "t.fl:1:20: error: malformed "
	    "number '12ab'", 1);
	bad("fn main() { return 0x; }", "malformed number '0x'", 1);
	bad("fn main() { return 0; }\n/* never closed\n", "t.fl:2:1: error: "
	    "unterminated comment", 1);
}

static void test_diag_syntax_recovery(void **state)
{
	(void)state;
	bad("fn main() {\n  var x = 1 +;\n  x = ;\n  return x\n}\n"
	    "fn g( { }\nglobal ;\nfn h() { return 0; }\n",
	    "t.fl:2:14: error: expected an expression, found ';'", 5);
	bad("fn main() {\n  var x = 1 +;\n  x = ;\n  return x\n}\n",
	    "t.fl:4:11: error: expected ';' after 'x'", 3);
	bad("fn main() {\n  var x = 1 +;\n  x = ;\n  return x\n}\n",
	    "t.fl:3:7: error: expected an expression, found ';'", 3);
	bad("fn main() { if 1 { return 0; }", "expected '}', found end of "
	    "file", 1);
	bad("return 1;\nfn main() { }", "t.fl:1:1: error: expected 'fn', "
	    "'const', 'global' or 'use', found 'return'", 1);
	bad("fn main() { return ((((1); }", "expected ')'", 1);
}

static void test_diag_names(void **state)
{
	(void)state;
	bad("fn main() { return y; }", "t.fl:1:20: error: unknown name 'y'",
	    1);
	bad("fn main() { return g(1); }", "t.fl:1:20: error: unknown "
	    "function 'g'", 1);
	bad("fn f() { }\nglobal f;\nfn main() { }", "t.fl:2:8: error: 'f' "
	    "is already defined at line 1", 1);
	bad("fn main() { var a; var a; }", "t.fl:1:24: error: 'a' is "
	    "already declared in this scope", 1);
	bad("fn f(a, a) { }\nfn main() { }", "'a' is already declared", 1);
	bad("fn f(a) { return a; }\nfn main() { return f(1, 2); }",
	    "t.fl:2:20: error: 'f' takes 1 argument, given 2", 1);
	bad("fn main() { return alloc(); }", "t.fl:1:20: error: 'alloc' "
	    "takes 1 argument, given 0", 1);
	bad("fn main() { break; }", "t.fl:1:13: error: 'break' outside a "
	    "loop", 1);
	bad("fn main() { while 1 { } continue; }", "'continue' outside a "
	    "loop", 1);
	bad("const K = 1;\nfn main() { K = 2; }", "t.fl:2:13: error: cannot "
	    "assign to constant 'K'", 1);
	bad("fn main() { 1 + 2 = 3; }", "t.fl:1:13: error: cannot assign to "
	    "this expression", 1);
	bad("fn f() { }\nfn main() { f = 3; }", "cannot assign to function "
	    "'f'", 1);
	bad("fn main() { var x; return &x; }", "t.fl:1:27: error: '&' needs "
	    "a global", 1);
	bad("fn main() { return main; }", "function 'main' used as a value",
	    1);
	bad("fn alloc(n) { }\nfn main() { }", "'alloc' is a builtin", 1);
	bad("fn main(a) { }", "'main' takes no parameters", 1);
	bad("fn main() { return spawn free(0); }", "cannot spawn builtin",
	    1);
	bad("fn main() { var v = 1; return v(); }", "unknown function 'v'",
	    1);
	/* the arguments of a bad call are still checked */
	bad("fn main() { return nope(1, zz); }", "t.fl:1:28: error: unknown "
	    "name 'zz'", 2);
}

static void test_diag_constants(void **state)
{
	(void)state;
	bad("fn f() { return 1; }\nconst K = f();\nfn main() { }",
	    "t.fl:2:11: error: not a constant expression", 1);
	bad("const A = B;\nconst B = A;\nfn main() { }", "depends on itself",
	    1);
	bad("const A = 1 / 0;\nfn main() { }", "t.fl:1:13: error: division "
	    "by zero in a constant expression", 1);
	bad("global g = h;\nfn main() { }", "t.fl:1:12: error: unknown name "
	    "'h'", 1);
	bad("global g = 1;\nglobal h = g;\nfn main() { }", "'g' is not a "
	    "constant", 1);
}

static void test_diag_print(void **state)
{
	(void)state;
	bad("fn main() { var f = \"%d\"; print(f, 1); }", "t.fl:1:33: "
	    "error: the format of 'print' must be a string literal", 1);
	bad("fn main() { print(\"%d %s\\n\", 1); }", "t.fl:1:13: error: "
	    "format expects 2 arguments, given 1", 1);
	bad("fn main() { eprint(\"%q\\n\", 1); }", "bad conversion '%q'", 1);
	bad("fn main() { print(); }", "must be a string literal", 1);
	bad("fn main() { print(\"50%\"); }", "t.fl:1:19: error: bad "
	    "conversion in format", 1);
}

/* ---- use ---- */

static void write_text(const char *path, const char *s)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(s, f);
	assert_int_equal(fclose(f), 0);
}

static void test_use(void **state)
{
	char dir[] = "/tmp/fl_use_XXXXXX";
	char p[4][128];
	struct vm_module *m = NULL;
	char *diag = NULL;
	const char *main_src = "use \"lib/a.fl\";\nuse \"lib/b.fl\";\n"
			       "fn main() { return twice(3) + K; }\n";

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(p[0], sizeof p[0], "%s/lib", dir);
	assert_int_equal(mkdir(p[0], 0700), 0);
	snprintf(p[1], sizeof p[1], "%s/lib/a.fl", dir);
	write_text(p[1], "use \"b.fl\";\nfn twice(x) { return 2 * x; }\n");
	snprintf(p[2], sizeof p[2], "%s/lib/b.fl", dir);
	write_text(p[2], "use \"a.fl\";\nconst K = 10;\n");
	snprintf(p[3], sizeof p[3], "%s/main.fl", dir);
	assert_int_equal(compile_n(p[3], main_src, strlen(main_src), &m,
				   &diag),
			 0);
	assert_string_equal(diag, "");
	assert_int_equal(m->nfuncs, 2);
	free(diag);
	vm_module_free(m);
	/* errors name the used file */
	write_text(p[2], "const K = ;\n");
	assert_int_equal(compile_n(p[3], main_src, strlen(main_src), &m,
				   &diag),
			 FL_ESYNTAX);
	assert_non_null(strstr(diag, "lib/b.fl:1:11: error: expected an "
				     "expression"));
	free(diag);
	/* a missing file */
	const char *miss = "use \"nope.fl\";\nfn main() { }\n";
	assert_int_equal(compile_n(p[3], miss, strlen(miss), &m, &diag),
			 FL_ESYNTAX);
	assert_non_null(strstr(diag, "main.fl:1:5: error: cannot read "
				     "'nope.fl'"));
	free(diag);
	unlink(p[1]);
	unlink(p[2]);
	rmdir(p[0]);
	rmdir(dir);
}

/* ---- Hostile input ---- */

static void try_bytes(const char *src, size_t len)
{
	struct vm_module *m = NULL;
	char *diag = NULL;
	int rc = compile_n("t.fl", src, len, &m, &diag);

	assert_true(rc == 0 || rc == FL_ESYNTAX);
	if (rc == 0) {
		struct fl_err err;
		/* whatever compiles must verify (main may be missing) */
		assert_int_equal(vm_verify(m, false, &err), 0);
	}
	vm_module_free(m);
	free(diag);
}

static void test_random_bytes(void **state)
{
	static const char alphabet[] = "fnvarifelsewhiletforinbreakreturn"
				       "spawnconstglobaluse(){}[];,.=+-*/%<>"
				       "&|^!~'\"\\ \n0123456789xabc_";
	char buf[256];

	(void)state;
	srand(1234);
	for (int i = 0; i < 3000; i++) {
		size_t n = (size_t)(rand() % 200);
		for (size_t k = 0; k < n; k++)
			buf[k] = i % 3 == 0 ? (char)(rand() & 0xff)
					    : alphabet[rand() %
						       (sizeof alphabet - 1)];
		buf[n] = 0;
		try_bytes(buf, n);
	}
}

static void test_mutations(void **state)
{
	static const char prog[] =
		"const N = 100;\nglobal total = 0;\n"
		"fn is_prime(n) { if n < 2 { return 0; } var d = 2;\n"
		"  while d * d <= n { if n % d == 0 { return 0; } d += 1; }\n"
		"  return 1; }\n"
		"fn count(lo, hi) { var c = 0; for i in lo..hi {\n"
		"  c += is_prime(i); } xadd(&total, c); return c; }\n"
		"fn main() { var t = alloc(16); t[0] = spawn count(0, N);\n"
		"  join(t[0]); print(\"%d %s\\n\", total, \"x\"); return 0; }\n";
	char buf[sizeof prog];

	(void)state;
	try_bytes(prog, strlen(prog));
	srand(99);
	for (int i = 0; i < 2000; i++) {
		memcpy(buf, prog, sizeof prog);
		for (int k = 0; k < 1 + i % 4; k++)
			buf[rand() % (sizeof prog - 1)] = (char)(rand() % 128);
		try_bytes(buf, strlen(buf));
	}
	/* deep nesting must not overflow the C stack */
	char *deep = malloc(100001);
	assert_non_null(deep);
	memcpy(deep, "fn main() { return ", 19);
	memset(deep + 19, '(', 100000 - 19);
	deep[100000] = 0;
	try_bytes(deep, 100000);
	memset(deep + 19, '-', 100000 - 19);
	try_bytes(deep, 100000);
	for (size_t i = 19; i + 2 < 100000; i += 2)
		memcpy(deep + i, "1+", 2);
	try_bytes(deep, 100000);
	memcpy(deep, "fn main() {         ", 19);
	memset(deep + 19, '{', 100000 - 19);
	try_bytes(deep, 100000);
	free(deep);
	/* long but legal: a 5000-term sum and 2000 else-ifs */
	struct fl_buf b;
	fl_buf_init(&b);
	fl_buf_put_str(&b, "fn main() { var x = 1; var s = x");
	for (int i = 0; i < 5000; i++)
		fl_buf_put_str(&b, " + x");
	fl_buf_put_str(&b, "; if x == 0 { s = 0; }");
	for (int i = 0; i < 2000; i++)
		fl_buf_printf(&b, " else if x == %d { s += 1; }", i + 2);
	fl_buf_put_str(&b, " return s & 255; }");
	fl_buf_put_u8(&b, 0);
	assert_false(b.failed);
	run((const char *)b.data, "", 5001 & 255);
	fl_buf_close(&b);
}

/* ---- Big inputs ----
 * Sources of about a megabyte, made here. Each is big enough that a pass
 * quadratic in its size, or recursing as deep as the source is long,
 * fails visibly: a stack overflow (surely under ASan) or a run that does
 * not end. None checks a time. */

#define BIG (1 << 20)

/* The text of @b, NUL-terminated. */
static const char *big_text(struct fl_buf *b)
{
	fl_buf_put_u8(b, 0);
	assert_false(b->failed);
	return (const char *)b->data;
}

/* @n copies of @s. */
static void big_repeat(struct fl_buf *b, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		fl_buf_put_str(b, s);
}

/* Constant folding looks at each node once: expr() asks at every node of
 * a sum, and folding the left operand again each time is quadratic. */
static void test_big_sums(void **state)
{
	struct fl_buf b;
	int terms = 9999, sums = BIG / (4 * 9999);

	(void)state;
	fl_buf_init(&b);
	fl_buf_put_str(&b, "fn main() { var x = 1; var s = 0;\n");
	for (int k = 0; k < sums; k++) {
		fl_buf_put_str(&b, "s = s");
		big_repeat(&b, " + x", (size_t)terms);
		fl_buf_put_str(&b, ";\n");
	}
	fl_buf_put_str(&b, "return s & 255; }\n");
	run(big_text(&b), "", (sums * terms) & 255);
	fl_buf_close(&b);
}

/* @src fails to compile; the first diagnostic's message line is @want. */
static void big_bad(const char *src, const char *want)
{
	struct vm_module *m = NULL;
	char *diag = NULL;

	assert_int_equal(compile_n("t.fl", src, strlen(src), &m, &diag),
			 FL_ESYNTAX);
	size_t n = strcspn(diag, "\n");
	if (n != strlen(want) || memcmp(diag, want, n) != 0)
		fprintf(stderr, "wanted: %s\ngot: %.*s\n", want, (int)n, diag);
	assert_true(n == strlen(want) && memcmp(diag, want, n) == 0);
	free(diag);
}

/* A megabyte of @open, then @mid, then as many @close, after @head (which
 * opens @levels levels; the rest is one line): nested too deeply at the
 * token that opens level 257, each of ( [ { - ! ~ in @open opening one. */
static void big_nest(const char *head, const char *open, const char *mid,
		     const char *close, const char *tail, int levels)
{
	struct fl_buf b;
	size_t n = BIG / strlen(open), col = 0, line = 1, start = 0;
	char want[128];

	fl_buf_init(&b);
	fl_buf_put_str(&b, head);
	big_repeat(&b, open, n);
	fl_buf_put_str(&b, mid);
	big_repeat(&b, close, n);
	fl_buf_put_str(&b, tail);
	const char *src = big_text(&b);
	for (size_t i = 0; head[i] != 0; i++)
		if (head[i] == '\n') {
			line++;
			start = i + 1;
		}
	for (size_t i = strlen(head); col == 0; i++)
		if (strchr("([{-!~", src[i]) != NULL && ++levels > 256)
			col = i + 1 - start;
	snprintf(want, sizeof want,
		 "t.fl:%zu:%zu: error: nested too deeply (limit 256)", line,
		 col);
	big_bad(src, want);
	fl_buf_close(&b);
}

/* One limit on nesting, whatever its shape, reported where it is passed;
 * before it, a stack overflow or a limit per shape. */
static void test_big_nesting(void **state)
{
	(void)state;
	/* main's block is the first level */
	big_nest("fn main() { return ", "(", "1", ")", "; }", 1);
	big_nest("fn main() { return ", "-", "1", "", "; }", 1);
	big_nest("fn main() { return ", "!~", "1", "", "; }", 1);
	big_nest("fn main() { return ", "-(", "1", ")", "; }", 1);
	big_nest("fn f(a) { return a; }\nfn main() { return ", "f(", "1", ")",
		 "; }", 1);
	big_nest("fn main() { var p = alloc(8); return ", "p[", "0", "]", "; }",
		 1);
	big_nest("fn main() { return ", "1+(", "1", ")", "; }", 1);
	big_nest("fn main() { ", "{", "", "}", " }", 1);
	big_nest("fn main() { ", "if 1 {", "", "}", " }", 1);
	big_nest("fn main() { ", "while 0 {", "", "}", " }", 1);
	big_nest("fn main() { ", "for i in 0..1 {", "", "}", " }", 1);
	big_nest("fn f(a) { return a; }\nfn main() { var p = alloc(8); "
		 "return ", "-(f(p[", "0", "]))", "; }", 1);
	big_nest("global g = ", "(", "1", ")", ";\nfn main() { }", 0);
	big_nest("const K = ", "-(", "1", ")", ";\nfn main() { }", 0);
}

/* The deepest nesting allowed, in the shapes with the most C frames per
 * level (each level also climbs every precedence level), compiles: the
 * limit keeps the stack small enough for ASan. */
static void test_big_nesting_deepest(void **state)
{
	static const char *const shapes[][2] = {
		{"(1||1&&1|1^1&1==1<1<<1+1*", ")"},
		{"f(1||1&&1|1^1&1==1<1<<1+1*-", ")"},
		{"p[1||1&&1|1^1&1==1<1<<1+1*!", "]"},
	};
	struct fl_buf b;

	(void)state;
	for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
		int levels = 255; /* main's block is the first level */
		fl_buf_init(&b);
		fl_buf_put_str(&b, "fn f(a) { return a; }\n"
				   "fn main() { var p = alloc(8); p[0] = 0;\n"
				   "return ");
		/* `-` and `!` take a level of their own */
		if (k > 0)
			levels = 127;
		big_repeat(&b, shapes[k][0], (size_t)levels);
		fl_buf_put_str(&b, "0");
		big_repeat(&b, shapes[k][1], (size_t)levels);
		fl_buf_put_str(&b, "; }\n");
		struct vm_module *m = ok(big_text(&b));
		vm_module_free(m);
		fl_buf_close(&b);
	}
}

/* What the parser builds in a loop has no limit, and no later pass
 * recurses along it: chains of operators and indexes, else-ifs,
 * constants defined through each other. */
static void test_big_chains(void **state)
{
	struct fl_buf b;
	size_t n;

	(void)state;
	/* x = 1+1+...: folded to one constant */
	n = BIG / 2;
	fl_buf_init(&b);
	fl_buf_put_str(&b, "fn main() { var x = 0;\nx = 1");
	big_repeat(&b, "+1", n - 1);
	fl_buf_put_str(&b, ";\nreturn x & 255; }\n");
	struct vm_module *m = ok(big_text(&b));
	struct vm_insn in[16];
	assert_int_equal(decode(m, 0, in, 16), 10);
	assert_int_equal(in[2].op, VM_OP_PUSH);
	assert_true(in[2].imm == (int64_t)n);
	vm_module_free(m);
	fl_buf_close(&b);
	/* the same with a variable: code for each term */
	fl_buf_init(&b);
	fl_buf_put_str(&b, "fn main() { var x = 1;\nx = x");
	big_repeat(&b, "+x", n - 1);
	fl_buf_put_str(&b, ";\nreturn x & 255; }\n");
	run(big_text(&b), "", (int)(n & 255));
	fl_buf_close(&b);
	/* && and || */
	fl_buf_init(&b);
	fl_buf_put_str(&b, "fn main() { var x = 1; var y = 0;\nreturn (x");
	big_repeat(&b, "&&x", BIG / 6);
	fl_buf_put_str(&b, ") + 2 * (y");
	big_repeat(&b, "||y", BIG / 6);
	fl_buf_put_str(&b, "||x); }\n");
	run(big_text(&b), "", 3);
	fl_buf_close(&b);
	/* sums in parentheses, left (((x+..+x)+x..)..) and right
	 * 1+..+(1+..+(..)), 150 levels of 3,500 terms: within the old limits
	 * of 200 levels and 10,000 terms a chain, and a stack overflow */
	n = BIG / (2 * 150);
	fl_buf_init(&b);
	fl_buf_put_str(&b, "fn main() { var x = 1;\nreturn (");
	big_repeat(&b, "(", 149);
	for (int k = 0; k < 150; k++) {
		fl_buf_put_str(&b, "x");
		big_repeat(&b, "+x", n - 1);
		fl_buf_put_str(&b, k < 149 ? ")+" : ")");
	}
	fl_buf_put_str(&b, " - (1");
	for (int k = 0; k < 150; k++) {
		big_repeat(&b, "+x", n - 1);
		fl_buf_put_str(&b, "+(1");
	}
	big_repeat(&b, ")", 151);
	fl_buf_put_str(&b, "; }\n");
	run(big_text(&b), "", -1 & 255); /* 150 n - (150 n + 1) */
	fl_buf_close(&b);
	/* p[0][0]...[0] */
	fl_buf_init(&b);
	fl_buf_put_str(&b, "fn main() { var p = alloc(16); p[0] = p; p[1] = 7;"
			   "\nreturn p");
	big_repeat(&b, "[0]", BIG / 3);
	fl_buf_put_str(&b, "[1]; }\n");
	run(big_text(&b), "", 7);
	fl_buf_close(&b);
	/* else if, 30,000 times */
	n = BIG / 36;
	fl_buf_init(&b);
	fl_buf_put_str(&b, "fn main() { var x = 1000; var s = 0;\nif x == 0 "
			   "{ s = 1; }");
	for (size_t i = 1; i < n; i++)
		fl_buf_printf(&b, " else if x == %zu { s = %zu; }", i, i & 127);
	fl_buf_put_str(&b, " else { s = 200; }\nreturn s; }\n");
	run(big_text(&b), "", 1000 & 127);
	fl_buf_close(&b);
	/* constants, each defined through the next one: resolved without
	 * recursion, in either order */
	n = BIG / 24;
	fl_buf_init(&b);
	for (size_t i = 0; i < n; i++)
		fl_buf_printf(&b, "const C%zu = C%zu + 1;\n", i, i + 1);
	fl_buf_printf(&b, "const C%zu = 0;\nfn main() { return C0 & 255; }\n",
		      n);
	run(big_text(&b), "", (int)(n & 255));
	fl_buf_close(&b);
	fl_buf_init(&b);
	fl_buf_put_str(&b, "fn main() { return C0 & 255; }\n");
	for (size_t i = 0; i < n; i++)
		fl_buf_printf(&b, "const C%zu = C%zu - 1;\n", i, i + 1);
	fl_buf_printf(&b, "const C%zu = C0;\n", n);
	big_bad(big_text(&b), "t.fl:2:7: error: constant 'C0' depends on "
			      "itself");
	fl_buf_close(&b);
}

/* The diagnostics of @src, which must fail to compile. */
static char *diags_of(const char *src, size_t len)
{
	struct vm_module *m = NULL;
	char *diag = NULL;

	assert_int_equal(compile_n("t.fl", src, len, &m, &diag), FL_ESYNTAX);
	return diag;
}

/* One diagnostic at 1-based column @col of the one-line @src: message
 * @msg, then the line, or 100 bytes of it from @from (0-based) with "..."
 * where cut, and the caret. */
static void diag_window(const char *src, size_t col, const char *msg,
			size_t from)
{
	size_t len = strlen(src), ll = strcspn(src, "\n");
	size_t to = ll > 100 ? from + 100 : ll;
	struct fl_buf want;
	char *diag = diags_of(src, len);

	fl_buf_init(&want);
	fl_buf_printf(&want, "t.fl:1:%zu: error: %s\n", col, msg);
	fl_buf_put_str(&want, from > 0 ? "..." : "");
	fl_buf_put(&want, src + from, to - from);
	fl_buf_put_str(&want, to < ll ? "...\n" : "\n");
	fl_buf_put_str(&want, from > 0 ? "   " : "");
	for (size_t k = from; k + 1 < col; k++)
		fl_buf_put_u8(&want, src[k] == '\t' ? '\t' : ' ');
	fl_buf_put_str(&want, "^\n");
	assert_string_equal(diag, big_text(&want));
	fl_buf_close(&want);
	free(diag);
}

/* A long line is shown as 100 bytes around the column, "..." marking the
 * ends cut, the caret where it belongs; shorter ones as they are. */
static void test_diag_long_line(void **state)
{
	static const char msg[] = "expected an expression, found ';'";
	struct fl_buf b;
	size_t n;

	(void)state;
	/* a megabyte on one line, the error at its end: its last 100 bytes */
	fl_buf_init(&b);
	fl_buf_put_str(&b, "fn main() { var x = 1; ");
	big_repeat(&b, "x = x + 1; ", BIG / 11);
	fl_buf_put_str(&b, "return x +; }");
	n = b.len;
	diag_window(big_text(&b), n - 2, msg, n - 100);
	fl_buf_close(&b);
	/* in the middle: 50 bytes before the column, cut at both ends; a
	 * tab stays a tab under the window */
	fl_buf_init(&b);
	fl_buf_put_str(&b, "fn main() { var x = 1;");
	big_repeat(&b, " x = x +\t1;", 1000);
	fl_buf_put_str(&b, " x = x +;");
	n = b.len;
	big_repeat(&b, " x = x + 1;", 1000);
	fl_buf_put_str(&b, " return 0; }");
	diag_window(big_text(&b), n, msg, n - 1 - 50);
	fl_buf_close(&b);
	/* near the start: from the start, cut at the end */
	fl_buf_init(&b);
	fl_buf_put_str(&b, "fn main() { var x = (;");
	big_repeat(&b, " x = x + 1;", 100);
	fl_buf_put_str(&b, " return 0; }");
	diag_window(big_text(&b), 22, msg, 0);
	fl_buf_close(&b);
	/* 100 bytes are shown whole; 101 are cut */
	for (size_t len = 100; len <= 101; len++) {
		static const char head[] = "fn main() { var x = 1;";
		static const char tail[] = "return x +; }";
		fl_buf_init(&b);
		fl_buf_put_str(&b, head);
		big_repeat(&b, " ", len - strlen(head) - strlen(tail));
		fl_buf_put_str(&b, tail);
		diag_window(big_text(&b), len - 2, msg, len - 100);
		fl_buf_close(&b);
	}
	/* a window does not cut a UTF-8 character: the end moves back to
	 * before the e-acute whose second byte is the 101st shown */
	fl_buf_init(&b);
	fl_buf_put_str(&b, "fn main() { var x = 1;");
	big_repeat(&b, " ", 60);
	fl_buf_put_str(&b, "x +;"); /* the ';' 50 bytes into the window */
	big_repeat(&b, " ", 45);
	fl_buf_put_str(&b, "// \xc3\xa9t\xc3\xa9\n}");
	char *diag = diags_of(big_text(&b), b.len - 1);
	fl_buf_close(&b);
	fl_buf_init(&b);
	fl_buf_put_str(&b, "x +;");
	big_repeat(&b, " ", 45);
	fl_buf_put_str(&b, "// ...\n");
	assert_non_null(strstr(diag, big_text(&b)));
	free(diag);
	fl_buf_close(&b);
}

/* Every error is reported, and printing them is linear: each diagnostic
 * used to look for its line from the start of the file. */
static void test_big_errors(void **state)
{
	struct fl_buf b;
	size_t n = BIG / 4, lines = 0;
	char last[64];

	(void)state;
	fl_buf_init(&b);
	fl_buf_put_str(&b, "fn main() {\n");
	big_repeat(&b, "zz;\n", n);
	fl_buf_put_str(&b, "}\n");
	char *diag = diags_of(big_text(&b), b.len - 1);
	for (const char *p = diag; *p; p++)
		lines += *p == '\n';
	assert_int_equal(lines, 3 * n);
	snprintf(last, sizeof last,
		 "t.fl:%zu:1: error: unknown name 'zz'\nzz;\n^\n", n + 1);
	assert_string_equal(diag + strlen(diag) - strlen(last), last);
	free(diag);
	fl_buf_close(&b);
	/* a megabyte of stray bytes is one error */
	fl_buf_init(&b);
	fl_buf_put_str(&b, "fn main() {\n");
	big_repeat(&b, "@#$`?\\", BIG / 6);
	fl_buf_put_str(&b, "\n}\n");
	char want[80];
	snprintf(want, sizeof want, "t.fl:2:1: error: unexpected character "
		 "'@' (and %d more)", BIG / 6 * 6 - 1);
	bad(big_text(&b), want, 1);
	fl_buf_close(&b);
}

/* Locals are found by hash: looking through all those in scope made a
 * function with tens of thousands of them quadratic (declaring each, and
 * each use of an early one). Shadowing still finds the innermost. */
static void test_big_locals(void **state)
{
	struct fl_buf b;
	size_t n = 40000;

	(void)state;
	fl_buf_init(&b);
	fl_buf_put_str(&b, "fn main() { var s = 0;\n");
	for (size_t i = 0; i < n; i++)
		fl_buf_printf(&b, "var v%zu = %zu;\n", i, i);
	big_repeat(&b, "s += v1;\n", n);
	fl_buf_put_str(&b, "{ var v1 = 1000; s += v1; { var v1 = 5; s += v1; }"
			   " s += v1; }\n");
	fl_buf_printf(&b, "return (s + v1 + v%zu) & 255; }\n", n - 1);
	run(big_text(&b), "", (int)((n + 2005 + 1 + n - 1) & 255));
	fl_buf_close(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_return_status),
	    cmocka_unit_test(test_arith_precedence),
	    cmocka_unit_test(test_fib_forward_call),
	    cmocka_unit_test(test_loops),
	    cmocka_unit_test(test_scopes),
	    cmocka_unit_test(test_globals_and_address),
	    cmocka_unit_test(test_arrays),
	    cmocka_unit_test(test_short_circuit),
	    cmocka_unit_test(test_print_formats),
	    cmocka_unit_test(test_escapes_and_chars),
	    cmocka_unit_test(test_threads),
	    cmocka_unit_test(test_builtin_values),
	    cmocka_unit_test(test_constant_folding),
	    cmocka_unit_test(test_line_table),
	    cmocka_unit_test(test_disasm_roundtrip),
	    cmocka_unit_test(test_diag_format),
	    cmocka_unit_test(test_diag_lexical),
	    cmocka_unit_test(test_diag_syntax_recovery),
	    cmocka_unit_test(test_diag_names),
	    cmocka_unit_test(test_diag_constants),
	    cmocka_unit_test(test_diag_print),
	    cmocka_unit_test(test_use),
	    cmocka_unit_test(test_random_bytes),
	    cmocka_unit_test(test_mutations),
	    cmocka_unit_test(test_big_sums),
	    cmocka_unit_test(test_big_nesting),
	    cmocka_unit_test(test_big_nesting_deepest),
	    cmocka_unit_test(test_big_chains),
	    cmocka_unit_test(test_diag_long_line),
	    cmocka_unit_test(test_big_errors),
	    cmocka_unit_test(test_big_locals),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
