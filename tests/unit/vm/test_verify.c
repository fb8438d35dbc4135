/* Unit tests for src/vm/vm_verify.c: a valid module passes with the right
 * max_stack, and every property the interpreter trusts is enforced, each
 * rejection with its own message.
 *
 * Each rejected module is also encoded and decoded again (when the decoder
 * accepts it) and must be rejected the same way: the verifier's real input
 * is what vm_module_decode() produces.
 *
 * Modules come from tests/unit/vm/unit.h with a canonical line table (the
 * verifier rejects any other), so every diagnostic about an instruction has
 * the shape "SOURCE:LINE: error: verification failed in function 'F': ...".
 * Tests that care which instruction was blamed give each instruction a line
 * of its own first (expect_reject_at()). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "unit.h"

/* ---- Helpers ---- */

static void verify_ok(struct vm_module *m, bool need_main)
{
	struct fl_err err = {{0}};
	int rc = vm_verify(m, need_main, &err);

	if (rc != 0)
		fail_msg("verify failed (%d): %s", rc, err.msg);
}

static void expect_msg(int rc, const struct fl_err *err, const char *msg)
{
	assert_int_equal(rc, FL_EFORMAT);
	if (strstr(err->msg, msg) == NULL)
		fail_msg("message '%s' does not contain '%s'", err->msg, msg);
}

/* vm_verify(@m) fails with FL_EFORMAT and a message containing @msg, and
 * so does the module after an encode/decode round trip. Frees @m. */
static void expect_reject(struct vm_module *m, bool need_main, const char *msg)
{
	struct fl_err err;
	struct vm_module *d = NULL;
	struct fl_buf b;

	strcpy(err.msg, "unset");
	expect_msg(vm_verify(m, need_main, &err), &err, msg);
	/* No error buffer: same verdict, no crash. */
	assert_int_equal(vm_verify(m, need_main, NULL), FL_EFORMAT);

	fl_buf_init(&b);
	assert_int_equal(vm_module_encode(m, &b), 0);
	if (vm_module_decode(b.data, b.len, &d, &err) == 0) {
		strcpy(err.msg, "unset");
		expect_msg(vm_verify(d, need_main, &err), &err, msg);
		vm_module_free(d);
	}
	fl_buf_close(&b);
	vm_module_free(m);
}

/* Like expect_reject(), and the message also contains @msg2. */
static void expect_reject2(struct vm_module *m, bool need_main, const char *msg,
			   const char *msg2)
{
	struct fl_err err;

	expect_msg(vm_verify(m, need_main, &err), &err, msg2);
	expect_reject(m, need_main, msg);
}

/* Like expect_reject(), for a complaint about the instruction at offset
 * @off from the start of function @func: every instruction gets a line of
 * its own (unit_lines_each(): module offset + 1), and the message must be
 * exactly about that line and function, followed by @what. Frees @m. */
static void expect_reject_at(struct vm_module *m, bool need_main,
			     const char *func, uint32_t off, const char *what)
{
	int f = vm_module_find_func(m, func);
	char msg[512];

	assert_true(f >= 0);
	unit_lines_each(m);
	snprintf(msg, sizeof msg,
		 "%s:%u: error: verification failed in function '%s': %s",
		 m->source, m->funcs[f].code_off + off + 1, func, what);
	expect_reject(m, need_main, msg);
}

/* A module whose only function is @name with @code. */
static struct vm_module *one(const char *name, uint32_t nargs, uint32_t nlocals,
			     const struct unit_insn *code)
{
	struct vm_module *m = unit_module();

	unit_func(m, name, nargs, nlocals, code);
	return m;
}

static struct vm_module *one_raw(const uint8_t *code, uint32_t len)
{
	struct vm_module *m = unit_module();

	unit_func_raw(m, "f", 0, 0, code, len);
	return m;
}

/* ---- Valid modules ---- */

static void test_valid_module(void **state)
{
	struct vm_module *m = unit_module();

	(void)state;
	unit_segment(m, VM_SEG_RODATA, "hello\n", 6);
	unit_segment(m, VM_SEG_DATA, "\0\0\0\0\0\0\0\0", 8);
	unit_sym(m, "msg", VM_SEG_RODATA, 0);
	unit_sym(m, "msg_end", VM_SEG_RODATA, 6); /* == segment size: ok */
	unit_sym(m, "alias", VM_SEG_RODATA, 6);	  /* same offset: ok */
	unit_sym(m, "g", VM_SEG_DATA, 0);
	unit_func(
	    m, "add3", 3, 0,
	    CODE(I(GET, 0), I(GET, 1), I(ADD), I(GET, 2), I(ADD), I(RET)));
	unit_func(m, "main", 0, 1,
		  CODE(I(PUSH, 1), I(PUSH, 2), I(PUSH, 3), I(CALL, 0),
		       I(SET, 0), I(PUSHA, 3), I(GET, 0), I(ST64), I(PUSHA, 0),
		       I(PUSH, 6), I(PUSH, 1), I(ROT), I(ROT), I(WRITE),
		       I(RET)));
	/* unit_func() put entries at both functions' first instructions;
	 * renumber the second. */
	assert_int_equal(m->nlines, 2);
	assert_int_equal(m->lines[1].code_off, 18);
	unit_line(m, 18, 5);
	verify_ok(m, true);
	assert_int_equal(m->funcs[0].max_stack, 2);
	assert_int_equal(m->funcs[1].max_stack, 3);
	/* Verifying again gives the same answer. */
	verify_ok(m, true);
	assert_int_equal(m->funcs[1].max_stack, 3);
	vm_module_free(m);
}

static void test_max_stack(void **state)
{
	struct vm_module *m;

	(void)state;
	m = one("main", 0, 0,
		CODE(I(PUSH, 1), I(PUSH, 2), I(PUSH, 3), I(PUSH, 4), I(PUSH, 5),
		     I(DROP), I(DROP), I(DROP), I(DROP), I(RET)));
	verify_ok(m, true);
	assert_int_equal(m->funcs[0].max_stack, 5);
	vm_module_free(m);

	/* over/pick/dup grow the stack; the peak is after `pick 2`. */
	m = one("main", 0, 0,
		CODE(I(PUSH, 1), I(PUSH, 2), I(OVER), I(PICK, 2), I(ADD),
		     I(ADD), I(ADD), I(RET)));
	verify_ok(m, true);
	assert_int_equal(m->funcs[0].max_stack, 4);
	vm_module_free(m);

	/* Nothing pushed but a return value. */
	m = one("main", 0, 0, CODE(I(SELF), I(RET)));
	verify_ok(m, true);
	assert_int_equal(m->funcs[0].max_stack, 1);
	vm_module_free(m);
}

/* A counting loop: the depth at the loop head is the same on entry and
 * along the back edge. */
static void test_loop(void **state)
{
	struct vm_module *m = one("main", 0, 1,
				  CODE(I(PUSH, 10), /* 0 */
				       I(SET, 0),   /* 9 */
				       I(GET, 0),   /* 14: loop head */
				       I(JZ, 49),   /* 19 */
				       I(GET, 0),   /* 24 */
				       I(PUSH, 1),  /* 29 */
				       I(SUB),	    /* 38 */
				       I(SET, 0),   /* 39 */
				       I(JMP, 14),  /* 44 */
				       I(PUSH, 0),  /* 49 */
				       I(RET)));    /* 58 */

	(void)state;
	verify_ok(m, true);
	assert_int_equal(m->funcs[0].max_stack, 2);
	vm_module_free(m);
}

static void test_empty_module(void **state)
{
	struct vm_module *m = unit_module();
	struct fl_err err;

	(void)state;
	verify_ok(m, false);
	expect_msg(vm_verify(m, true, &err), &err,
		   "no function 'main' to start");
	vm_module_free(m);
}

/* Code after an unconditional end is never run: its operands are still
 * checked, but not its stack effect. */
static void test_unreachable_code(void **state)
{
	struct vm_module *m;

	(void)state;
	m = one("main", 0, 0, CODE(I(PUSH, 0), I(RET), I(ADD), I(DROP)));
	verify_ok(m, true);
	assert_int_equal(m->funcs[0].max_stack, 1);
	vm_module_free(m);

	m = one("main", 0, 0, CODE(I(PUSH, 0), I(RET), I(GET, 0)));
	expect_reject_at(m, true, "main", 10,
			 "get: slot 0 outside a 0-slot frame");
}

/* ---- Instructions and operands ---- */

static void test_unknown_opcode(void **state)
{
	uint8_t code[] = {VM_OP_SELF, VM_OP__COUNT, VM_OP_RET};

	char msg[128];

	(void)state;
	expect_reject(one_raw(code, sizeof code), false, "unknown opcode");
	/* The decoder's message names no offset; the verifier says where. */
	snprintf(msg, sizeof msg, "unknown opcode %u", VM_OP__COUNT);
	expect_reject_at(one_raw(code, sizeof code), false, "f", 1, msg);
	/* The function's one line, when there is one line per function. */
	snprintf(msg, sizeof msg,
		 "?:1: error: verification failed in function 'f': unknown "
		 "opcode %u",
		 VM_OP__COUNT);
	expect_reject(one_raw(code, sizeof code), false, msg);
	code[1] = 0xff;
	expect_reject_at(one_raw(code, sizeof code), false, "f", 1,
			 "unknown opcode 255");
	/* Unreachable or not, every byte must decode. */
	code[0] = VM_OP_RET;
	expect_reject_at(one_raw(code, sizeof code), false, "f", 1,
			 "unknown opcode 255");
}

static void test_truncated_instruction(void **state)
{
	static const uint8_t push[] = {VM_OP_PUSH, 1, 2, 3};
	static const uint8_t get[] = {VM_OP_SELF, VM_OP_RET, VM_OP_GET, 0};
	struct vm_module *m;

	(void)state;
	expect_reject_at(one_raw(push, sizeof push), false, "f", 0,
			 "truncated push instruction");
	expect_reject_at(one_raw(get, sizeof get), false, "f", 2,
			 "truncated get instruction");

	/* An instruction may not straddle two functions, even when the
	 * bytes after it would complete it. */
	m = unit_module();
	unit_func(m, "f", 0, 0, CODE(I(PUSH, 0), I(RET)));
	m->funcs[0].code_len = 5;
	unit_func_raw(m, "g", 0, 0, NULL, 0);
	m->funcs[1].code_off = 5;
	m->funcs[1].code_len = 5;
	expect_reject2(m, false,
		       "?:1: error: verification failed in "
		       "function 'f': ",
		       "truncated push instruction");
	m = unit_module();
	unit_func(m, "f", 0, 0, CODE(I(PUSH, 0), I(RET)));
	m->funcs[0].code_len = 5;
	unit_func_raw(m, "g", 0, 0, NULL, 0);
	m->funcs[1].code_off = 5;
	m->funcs[1].code_len = 5;
	expect_reject_at(m, false, "f", 0, "truncated push instruction");
}

static void test_symbol_out_of_range(void **state)
{
	struct vm_module *m;

	(void)state;
	m = unit_module();
	unit_segment(m, VM_SEG_DATA, "12345678", 8);
	unit_sym(m, "x", VM_SEG_DATA, 0);
	unit_func(m, "main", 0, 0, CODE(I(PUSHA, 0), I(PUSHA, 1), I(RET)));
	expect_reject_at(m, true, "main", 5, "push: symbol 1 does not exist");

	m = one("main", 0, 0, CODE(I(PUSHA, 0), I(RET)));
	expect_reject(m, true, "push: symbol 0 does not exist");

	m = one("main", 0, 0, CODE(I(PUSHA, 0xffffffff), I(RET)));
	expect_reject(m, true, "does not exist");
}

static void test_slot_out_of_range(void **state)
{
	struct vm_module *m;

	(void)state;
	m = one("f", 1, 2,
		CODE(I(GET, 0), I(GET, 1), I(GET, 2), I(ADD), I(ADD), I(RET)));
	verify_ok(m, false);
	vm_module_free(m);

	m = one("f", 1, 2, CODE(I(GET, 3), I(RET)));
	expect_reject(m, false, "get: slot 3 outside a 3-slot frame");
	m = one("f", 1, 2, CODE(I(PUSH, 0), I(SET, 3), I(PUSH, 0), I(RET)));
	expect_reject_at(m, false, "f", 9,
			 "set: slot 3 outside a 3-slot frame");
	m = one("f", 0, 0, CODE(I(GET, 0), I(RET)));
	expect_reject(m, false, "slot 0 outside a 0-slot frame");
	m = one("f", 2, 0, CODE(I(GET, 0xffffffff), I(RET)));
	expect_reject(m, false, "outside a 2-slot frame");
}

static void test_function_out_of_range(void **state)
{
	struct vm_module *m;

	(void)state;
	m = unit_module();
	unit_func(m, "main", 0, 0, CODE(I(CALL, 1), I(RET)));
	unit_func(m, "g", 0, 0, CODE(I(CALL, 2), I(RET)));
	/* g's entry is on line 2, one after main's. */
	expect_reject(m, true,
		      "?:2: error: verification failed in function 'g': call: "
		      "function 2 does not exist");
	m = unit_module();
	unit_func(m, "main", 0, 0, CODE(I(CALL, 1), I(RET)));
	unit_func(m, "g", 0, 0, CODE(I(CALL, 2), I(RET)));
	expect_reject_at(m, true, "g", 0, "call: function 2 does not exist");

	m = one("main", 0, 0, CODE(I(SPAWN, 1), I(RET)));
	expect_reject(m, true, "spawn: function 1 does not exist");

	m = one("main", 0, 0, CODE(I(CALL, 0xffffffff), I(RET)));
	expect_reject(m, true, "does not exist");
}

static void test_jump_outside(void **state)
{
	struct vm_module *m;

	(void)state;
	/* Targets are offsets from the function's start; the code_len of the
	 * function is already outside. */
	m = one("f", 0, 0, CODE(I(JMP, 5)));
	expect_reject_at(m, false, "f", 0,
			 "jmp: jump to offset 5 outside its function");
	m = one("f", 0, 0,
		CODE(I(PUSH, 0), I(JZ, 0xffffffff), I(PUSH, 0), I(RET)));
	expect_reject(m, false, "jz: jump to offset");

	/* A target that would be inside the *module* but past this
	 * function is still outside. */
	m = unit_module();
	unit_func(m, "f", 0, 0,
		  CODE(I(PUSH, 0), I(JNZ, 24), I(PUSH, 0), I(RET)));
	unit_func(m, "g", 0, 0, CODE(I(PUSH, 0), I(RET)));
	expect_reject_at(m, false, "f", 9,
			 "jnz: jump to offset 24 outside its function");
}

static void test_jump_mid_instruction(void **state)
{
	struct vm_module *m;

	(void)state;
	m = one("f", 0, 0, CODE(I(PUSH, 1), I(JMP, 1)));
	expect_reject_at(m, false, "f", 9,
			 "jmp: jump into the middle of an instruction "
			 "(offset 1)");
	m = one("f", 0, 0, CODE(I(PUSH, 1), I(JNZ, 8), I(PUSH, 0), I(RET)));
	expect_reject(m, false, "jump into the middle of an instruction");
	/* Unreachable jumps too: the text form must name every target. */
	m = one("f", 0, 0, CODE(I(PUSH, 0), I(RET), I(JMP, 1)));
	expect_reject_at(m, false, "f", 10,
			 "jmp: jump into the middle of an instruction "
			 "(offset 1)");
	/* Into the middle of the jump itself. */
	m = one("f", 0, 0, CODE(I(JMP, 2), I(RET)));
	expect_reject(m, false,
		      "jump into the middle of an instruction "
		      "(offset 2)");
}

/* ---- Stack depth ---- */

static void test_stack_underflow(void **state)
{
	struct vm_module *m;

	(void)state;
	m = one("f", 0, 0, CODE(I(ADD), I(RET)));
	expect_reject_at(m, false, "f", 0,
			 "stack underflow: 'add' needs 2 words, the stack "
			 "has 0");
	m = one("f", 0, 0, CODE(I(PUSH, 1), I(ADD), I(RET)));
	expect_reject(m, false, "'add' needs 2 words, the stack has 1");
	m = one("f", 0, 0, CODE(I(RET)));
	expect_reject(m, false, "'ret' needs 1 word, the stack has 0");
	m = one("f", 0, 0, CODE(I(PUSH, 1), I(PUSH, 2), I(COPY), I(RET)));
	expect_reject(m, false, "'copy' needs 3 words, the stack has 2");
	/* Underflow on one path only. */
	m = one("f", 0, 0,
		CODE(I(PUSH, 1), /* 0 */
		     I(JZ, 24),	 /* 9 */
		     I(PUSH, 2), /* 14 */
		     I(RET),	 /* 23 */
		     I(DROP),	 /* 24 */
		     I(PUSH, 0), /* 25 */
		     I(RET)));
	expect_reject_at(m, false, "f", 24, "stack underflow: 'drop'");
}

static void test_pick_depth(void **state)
{
	struct vm_module *m;

	(void)state;
	m = one("f", 0, 0, CODE(I(PUSH, 1), I(PICK, 0), I(ADD), I(RET)));
	verify_ok(m, false);
	assert_int_equal(m->funcs[0].max_stack, 2);
	vm_module_free(m);
	m = one("f", 0, 0, CODE(I(PUSH, 1), I(PUSH, 1), I(PICK, 1), I(RET)));
	verify_ok(m, false);
	vm_module_free(m);

	m = one("f", 0, 0, CODE(I(PUSH, 1), I(PICK, 1), I(RET)));
	expect_reject(m, false, "'pick' needs 2 words, the stack has 1");
	m = one("f", 0, 0, CODE(I(PICK, 0), I(RET)));
	expect_reject(m, false, "'pick' needs 1 word, the stack has 0");
	m = one("f", 0, 0, CODE(I(PUSH, 1), I(PICK, VM_FRAME_MAX), I(RET)));
	expect_reject(m, false, "pick: depth 65535 too large");
	m = one("f", 0, 0, CODE(I(PUSH, 1), I(PICK, 0xffffffff), I(RET)));
	expect_reject(m, false, "too large");
}

static void test_inconsistent_join(void **state)
{
	struct vm_module *m;

	(void)state;
	/* if (0) push 7; then push 1: the join sees depth 0 and depth 1. */
	m = one("f", 0, 0,
		CODE(I(PUSH, 0), /* 0 */
		     I(JZ, 23),	 /* 9 */
		     I(PUSH, 7), /* 14 */
		     I(PUSH, 1), /* 23: join */
		     I(RET)));
	expect_reject_at(m, false, "f", 23,
			 "inconsistent stack depth where paths join");

	/* A loop whose body leaves one word behind. */
	m = one("f", 0, 0,
		CODE(I(PUSH, 0), /* 0: head */
		     I(JMP, 0)));
	expect_reject_at(m, false, "f", 0,
			 "inconsistent stack depth where paths join (0 vs 1)");
}

static void test_falls_off_end(void **state)
{
	struct vm_module *m;

	(void)state;
	m = one("f", 0, 0, CODE(I(PUSH, 0)));
	expect_reject_at(m, false, "f", 0,
			 "push: control runs off the end of the function");
	m = one("f", 0, 0, CODE(I(PUSH, 0), I(JZ, 0)));
	expect_reject(m, false, "jz: control runs off the end");
	/* Falling into the next function is just as bad. */
	m = unit_module();
	unit_func(m, "f", 0, 0, CODE(I(PUSH, 0), I(CALL, 1)));
	unit_func(m, "g", 0, 0, CODE(I(PUSH, 0), I(RET)));
	expect_reject_at(m, false, "f", 9, "call: control runs off the end");
	/* Every ending instruction may end a function. */
	m = one("f", 0, 0, CODE(I(PUSH, 0), I(EXIT)));
	verify_ok(m, false);
	vm_module_free(m);
	m = one("f", 0, 0, CODE(I(PUSH, 0), I(TRAP)));
	verify_ok(m, false);
	vm_module_free(m);
	m = one("f", 0, 0, CODE(I(JMP, 0)));
	verify_ok(m, false);
	vm_module_free(m);
}

static void test_stack_too_deep(void **state)
{
	struct vm_module *m;
	struct fl_buf b;

	(void)state;
	/* Depth VM_FRAME_MAX is allowed... */
	fl_buf_init(&b);
	vm_insn_encode(&b, VM_OP_PUSH, 0);
	for (int i = 1; i < VM_FRAME_MAX; i++)
		vm_insn_encode(&b, VM_OP_DUP, 0);
	vm_insn_encode(&b, VM_OP_RET, 0);
	m = unit_module();
	unit_func_raw(m, "f", 0, 0, b.data, (uint32_t)b.len);
	verify_ok(m, false);
	assert_int_equal(m->funcs[0].max_stack, VM_FRAME_MAX);
	vm_module_free(m);
	/* ...one more word is not. */
	b.len--;
	vm_insn_encode(&b, VM_OP_DUP, 0);
	vm_insn_encode(&b, VM_OP_RET, 0);
	m = unit_module();
	unit_func_raw(m, "f", 0, 0, b.data, (uint32_t)b.len);
	expect_reject(m, false, "dup: stack deeper than 65535 words");
	fl_buf_close(&b);
}

static void test_call_arity(void **state)
{
	struct vm_module *m;

	(void)state;
	m = unit_module();
	unit_func(m, "f3", 3, 1, CODE(I(GET, 3), I(RET)));
	unit_func(m, "main", 0, 0,
		  CODE(I(PUSH, 1), I(PUSH, 2), I(PUSH, 3), I(CALL, 0), I(RET)));
	verify_ok(m, true);
	/* Three arguments in, one result out: the peak is 3. */
	assert_int_equal(m->funcs[1].max_stack, 3);
	vm_module_free(m);

	m = unit_module();
	unit_func(m, "f3", 3, 0, CODE(I(PUSH, 0), I(RET)));
	unit_func(m, "main", 0, 0,
		  CODE(I(PUSH, 1), I(PUSH, 2), I(CALL, 0), I(RET)));
	expect_reject_at(m, true, "main", 18,
			 "stack underflow: 'call' needs 3 words, the stack "
			 "has 2");

	/* The result counts: call then add needs another word. */
	m = unit_module();
	unit_func(m, "f1", 1, 0, CODE(I(GET, 0), I(RET)));
	unit_func(m, "main", 0, 0,
		  CODE(I(PUSH, 1), I(CALL, 0), I(ADD), I(RET)));
	expect_reject(m, true, "'add' needs 2 words, the stack has 1");

	/* spawn takes the arity the same way. */
	m = unit_module();
	unit_func(m, "w", 2, 0, CODE(I(PUSH, 0), I(RET)));
	unit_func(m, "main", 0, 0, CODE(I(PUSH, 1), I(SPAWN, 0), I(RET)));
	expect_reject(m, true, "'spawn' needs 2 words, the stack has 1");

	/* A zero-argument call needs nothing and pushes one. */
	m = unit_module();
	unit_func(m, "main", 0, 0, CODE(I(CALL, 1), I(RET)));
	unit_func(m, "z", 0, 0, CODE(I(PUSH, 0), I(RET)));
	verify_ok(m, true);
	assert_int_equal(m->funcs[0].max_stack, 1);
	vm_module_free(m);
}

/* ---- Tables ---- */

static void test_functions_contiguous(void **state)
{
	struct vm_module *m;

	(void)state;
	/* A gap between functions. */
	m = unit_module();
	unit_func(m, "f", 0, 0, CODE(I(PUSH, 0), I(RET), I(SELF)));
	unit_func(m, "g", 0, 0, CODE(I(PUSH, 0), I(RET)));
	m->funcs[0].code_len = 10;
	expect_reject(m, false,
		      "function 'g': code range 11+10 does not "
		      "follow the previous function");
	/* Overlap. */
	m = unit_module();
	unit_func(m, "f", 0, 0, CODE(I(PUSH, 0), I(RET)));
	unit_func(m, "g", 0, 0, CODE(I(PUSH, 0), I(RET)));
	m->funcs[1].code_off = 9;
	expect_reject(m, false, "function 'g': code range 9+10");
	/* Not starting at 0. */
	m = one("f", 0, 0, CODE(I(SELF), I(PUSH, 0), I(RET)));
	m->funcs[0].code_off = 1;
	m->funcs[0].code_len = 10;
	expect_reject(m, false, "function 'f': code range 1+10");
	/* Empty function. */
	m = unit_module();
	unit_func_raw(m, "e", 0, 0, NULL, 0);
	unit_func(m, "g", 0, 0, CODE(I(PUSH, 0), I(RET)));
	expect_reject(m, false, "function 'e': code range 0+0");
	/* Past the end of the code (and a length that would wrap). */
	m = one("f", 0, 0, CODE(I(PUSH, 0), I(RET)));
	m->funcs[0].code_len = 11;
	expect_reject(m, false, "code range 0+11");
	m = one("f", 0, 0, CODE(I(PUSH, 0), I(RET)));
	m->funcs[0].code_len = 0xffffffff;
	expect_reject(m, false, "does not follow the previous function");
	/* Out of table order. */
	m = unit_module();
	unit_func(m, "f", 0, 0, CODE(I(PUSH, 0), I(RET)));
	unit_func(m, "g", 0, 0, CODE(I(PUSH, 1), I(RET)));
	m->funcs[0].code_off = 10;
	m->funcs[1].code_off = 0;
	expect_reject(m, false, "function 'f': code range 10+10");
}

static void test_code_not_covered(void **state)
{
	static const uint8_t code[] = {VM_OP_RET, VM_OP_RET, VM_OP_RET};
	struct vm_module *m;

	(void)state;
	m = one("f", 0, 0, CODE(I(PUSH, 0), I(RET), I(RET), I(RET), I(RET)));
	m->funcs[0].code_len = 10;
	expect_reject(m, false, "3 bytes of code belong to no function");
	m = unit_module();
	unit_func_raw(m, "f", 0, 0, code, sizeof code);
	m->nfuncs = 0;
	free(m->funcs[0].name);
	expect_reject(m, false, "3 bytes of code belong to no function");
}

static void test_frame_size(void **state)
{
	static const uint32_t ok[][2] = {
	    {VM_FRAME_MAX, 0}, {0, VM_FRAME_MAX}, {30000, 35535}};
	static const uint32_t bad[][2] = {
	    {VM_FRAME_MAX, 1},	      {0, VM_FRAME_MAX + 1}, {30000, 35536},
	    {0xffffffff, 0},	      {1, 0xffffffff},	     {0xffffffff, 1},
	    {0x80000000, 0x80000000},
	};
	struct vm_module *m;
	char msg[100];

	(void)state;
	for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
		m = one("f", ok[i][0], ok[i][1],
			CODE(I(GET, VM_FRAME_MAX - 1), I(RET)));
		verify_ok(m, false);
		vm_module_free(m);
	}
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		m = one("f", bad[i][0], bad[i][1], CODE(I(PUSH, 0), I(RET)));
		snprintf(msg, sizeof msg,
			 "function 'f': %u arguments + %u locals exceed 65535 "
			 "slots",
			 bad[i][0], bad[i][1]);
		expect_reject(m, false, msg);
	}
}

static void test_bad_identifiers(void **state)
{
	static const char *const bad[] = {
	    "1abc", "a-b", "a b", "x+",	 "\xc3\xa9t\xc3\xa9", "a\t", "9",
	    "",	    ".L1", ".",	  "a/b",
	};
	static const char *const good[] = {
	    "_", "L.1", "$x", "a.b$9_Z", "Main", "x0123456789", "_.",
	};
	struct vm_module *m;
	char msg[100];

	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		m = one(bad[i], 0, 0, CODE(I(PUSH, 0), I(RET)));
		snprintf(msg, sizeof msg,
			 "function name '%s' is not an identifier", bad[i]);
		expect_reject(m, false, msg);

		m = unit_module();
		unit_segment(m, VM_SEG_DATA, "x", 1);
		unit_sym(m, bad[i], VM_SEG_DATA, 0);
		snprintf(msg, sizeof msg,
			 "symbol name '%s' is not an identifier", bad[i]);
		expect_reject(m, false, msg);
	}
	m = unit_module();
	for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
		unit_sym(m, good[i], VM_SEG_RODATA, 0);
		snprintf(msg, sizeof msg, "f%s", good[i]);
		unit_func(m, msg, 0, 0, CODE(I(PUSH, 0), I(RET)));
	}
	verify_ok(m, false);
	vm_module_free(m);
}

static void test_duplicate_names(void **state)
{
	struct vm_module *m;

	(void)state;
	m = unit_module();
	unit_func(m, "f", 0, 0, CODE(I(PUSH, 0), I(RET)));
	unit_func(m, "main", 0, 0, CODE(I(PUSH, 0), I(RET)));
	unit_func(m, "f", 1, 0, CODE(I(PUSH, 0), I(RET)));
	expect_reject(m, true, "duplicate function name 'f'");

	m = unit_module();
	unit_segment(m, VM_SEG_RODATA, "abc", 3);
	unit_sym(m, "x", VM_SEG_RODATA, 0);
	unit_sym(m, "y", VM_SEG_RODATA, 1);
	unit_sym(m, "x", VM_SEG_RODATA, 2);
	expect_reject(m, false, "duplicate symbol name 'x'");

	/* Case matters. */
	m = unit_module();
	unit_func(m, "f", 0, 0, CODE(I(PUSH, 0), I(RET)));
	unit_func(m, "F", 0, 0, CODE(I(PUSH, 0), I(RET)));
	verify_ok(m, false);
	vm_module_free(m);
}

static void test_symbol_table(void **state)
{
	struct vm_module *m;

	(void)state;
	/* Out of order within a segment. */
	m = unit_module();
	unit_segment(m, VM_SEG_RODATA, "abcd", 4);
	unit_sym(m, "a", VM_SEG_RODATA, 3);
	unit_sym(m, "b", VM_SEG_RODATA, 2);
	expect_reject(m, false, "symbol 'b' out of order");
	/* Data before read-only data. */
	m = unit_module();
	unit_segment(m, VM_SEG_RODATA, "abcd", 4);
	unit_segment(m, VM_SEG_DATA, "abcd", 4);
	unit_sym(m, "d", VM_SEG_DATA, 0);
	unit_sym(m, "r", VM_SEG_RODATA, 0);
	expect_reject(m, false, "symbol 'r' out of order");
	/* Past the end of its segment; the end itself is fine. */
	m = unit_module();
	unit_segment(m, VM_SEG_RODATA, "abcd", 4);
	unit_sym(m, "a", VM_SEG_RODATA, 4);
	verify_ok(m, false);
	m->syms[0].offset = 5;
	expect_reject(m, false,
		      "symbol 'a': offset 5 outside its 4-byte "
		      "segment");
	m = unit_module();
	unit_segment(m, VM_SEG_RODATA, "abcdefgh", 8);
	unit_sym(m, "a", VM_SEG_DATA, 1);
	expect_reject(m, false, "offset 1 outside its 0-byte segment");
	m = unit_module();
	unit_sym(m, "a", VM_SEG_DATA, 0xffffffff);
	expect_reject(m, false, "outside its 0-byte segment");
	/* Unknown segment. */
	m = unit_module();
	unit_sym(m, "a", 2, 0);
	expect_reject(m, false, "symbol 'a': unknown segment 2");
	m = unit_module();
	unit_sym(m, "a", 255, 0);
	expect_reject(m, false, "unknown segment 255");
}

static void test_line_table(void **state)
{
	struct vm_module *m;

	(void)state;
	m = one("f", 0, 0, CODE(I(PUSH, 0), I(DUP), I(DROP), I(RET)));
	unit_line(m, 0, 1);
	unit_line(m, 9, 2);
	unit_line(m, 11, 1); /* back to an earlier line is fine */
	verify_ok(m, false);
	/* Equal and decreasing offsets. */
	m->lines[1].code_off = 0;
	expect_reject(m, false,
		      "line table entry 1 (offset 0, line 2) is out "
		      "of order or range");

	m = one("f", 0, 0, CODE(I(PUSH, 0), I(DUP), I(DROP), I(RET)));
	unit_line(m, 10, 3);
	unit_line(m, 9, 2);
	expect_reject(m, false, "line table entry 2 (offset 9, line 2)");
	/* Line 0 is not a line. */
	m = one("f", 0, 0, CODE(I(PUSH, 0), I(RET)));
	unit_line(m, 0, 0);
	expect_reject(m, false,
		      "line table entry 0 (offset 0, line 0) is out "
		      "of order or range");
	m = one("f", 0, 0, CODE(I(PUSH, 0), I(RET)));
	unit_line(m, 9, 0);
	expect_reject(m, false,
		      "line table entry 1 (offset 9, line 0) is out "
		      "of order or range");
	/* Beyond the code. */
	m = one("f", 0, 0, CODE(I(PUSH, 0), I(RET)));
	unit_line(m, 10, 2);
	expect_reject(m, false, "line table entry 1 (offset 10, line 2)");
	/* A module without code has no lines to give. */
	m = unit_module();
	unit_line(m, 0, 1);
	expect_reject(m, false,
		      "line table entry 0 (offset 0, line 1) is out of "
		      "order or range");
	/* Inside an instruction. */
	m = one("f", 0, 0, CODE(I(PUSH, 0), I(RET)));
	unit_line(m, 1, 7);
	expect_reject(m, false,
		      "line table entry 1 points into the middle of "
		      "an instruction");
}

/* Canonical: the table starts at the first instruction... */
static void test_line_table_starts_at_code(void **state)
{
	struct vm_module *m;

	(void)state;
	/* No table at all. */
	m = one("f", 0, 0, CODE(I(PUSH, 0), I(RET)));
	m->nlines = 0;
	expect_reject(m, false,
		      "the line table does not start at the first "
		      "instruction");
	/* A table that starts at a later instruction. */
	m = one("f", 0, 0, CODE(I(PUSH, 0), I(RET)));
	m->lines[0].code_off = 9;
	expect_reject(m, false,
		      "the line table does not start at the first "
		      "instruction");
	/* ...or inside the first one: still not at offset 0. */
	m = one("f", 0, 0, CODE(I(PUSH, 0), I(RET)));
	m->lines[0].code_off = 1;
	expect_reject(m, false,
		      "the line table does not start at the first "
		      "instruction");
	/* Only the first function's start counts: later functions may
	 * continue the line in force. */
	m = unit_module();
	unit_func(m, "f", 0, 0, CODE(I(PUSH, 0), I(RET)));
	unit_func(m, "g", 0, 0, CODE(I(PUSH, 1), I(RET)));
	assert_int_equal(m->nlines, 2);
	m->nlines = 1;
	verify_ok(m, false);
	assert_int_equal(vm_module_line(m, 10, NULL), 1);
	m->lines[0].code_off = 10; /* only g has a line */
	expect_reject(m, false,
		      "the line table does not start at the first "
		      "instruction");
	/* No code: no table needed (and none allowed, above). */
	m = unit_module();
	unit_segment(m, VM_SEG_DATA, "x", 1);
	unit_sym(m, "x", VM_SEG_DATA, 0);
	verify_ok(m, false);
	vm_module_free(m);
	/* The check comes before any instruction is looked at: a bad
	 * instruction is not reported while the table is wrong. */
	m = one("f", 0, 0, CODE(I(ADD), I(RET)));
	m->nlines = 0;
	expect_reject(m, false,
		      "the line table does not start at the first "
		      "instruction");
}

/* The file table: every file is named by the line table, first in table
 * order, once; entries name files that exist; the same line number in
 * another file is a change. */
static void test_line_table_files(void **state)
{
	struct vm_module *m;

	(void)state;
	m = one("f", 0, 0, CODE(I(PUSH, 0), I(DUP), I(DROP), I(RET)));
	unit_line(m, 9, 1);
	unit_line(m, 10, 2);
	unit_line(m, 11, 1);
	unit_line_file(m, 9, unit_file(m, "a.fl"));
	unit_line_file(m, 10, unit_file(m, "b.fl"));
	verify_ok(m, false); /* 1, a.fl:1 (not a repeat), b.fl:2, 1 */
	vm_module_free(m);
	/* A file index beyond the table. */
	m = one("f", 0, 0, CODE(I(PUSH, 0), I(DUP), I(DROP), I(RET)));
	unit_line(m, 9, 1);
	unit_line_file(m, 9, unit_file(m, "a.fl"));
	m->lines[0].file = 2;
	expect_reject(m, false,
		      "line table entry 0 names source file 2 of 1");
	/* b.fl named before a.fl. */
	m = one("f", 0, 0, CODE(I(PUSH, 0), I(DUP), I(DROP), I(RET)));
	unit_line(m, 9, 1);
	unit_line(m, 10, 2);
	unit_file(m, "a.fl");
	unit_file(m, "b.fl");
	m->lines[1].file = 2;
	m->lines[2].file = 1;
	expect_reject(m, false,
		      "line table entry 1 names source file 2 before file 1");

	m = one("f", 0, 0, CODE(I(PUSH, 0), I(DUP), I(RET)));
	unit_line(m, 9, 2);
	unit_line_file(m, 9, unit_file(m, "a.fl"));
	unit_file(m, "never.fl");
	expect_reject(m, false,
		      "source file 2 ('never.fl') is not in the line table");

	m = one("f", 0, 0, CODE(I(PUSH, 0), I(DUP), I(RET)));
	unit_line(m, 9, 2);
	unit_line(m, 10, 3);
	unit_line_file(m, 9, unit_file(m, "a.fl"));
	unit_line_file(m, 10, unit_file(m, "a.fl"));
	expect_reject(m, false, "source file 'a.fl' is listed twice");

	/* Same file, same line: a repeat. */
	m = one("f", 0, 0, CODE(I(PUSH, 0), I(DUP), I(RET)));
	unit_line(m, 9, 2);
	unit_line(m, 10, 2);
	unit_line_file(m, 9, unit_file(m, "a.fl"));
	unit_line_file(m, 10, 1);
	expect_reject(m, false, "line table entries 1 and 2 repeat line 2");

	/* A bad instruction on a line of another file names that file. */
	m = one("f", 0, 0, CODE(I(PUSH, 0), I(ADD), I(RET)));
	unit_line(m, 9, 4);
	unit_line_file(m, 9, unit_file(m, "lib/a.fl"));
	expect_reject(m, false,
		      "lib/a.fl:4: error: verification failed in function "
		      "'f'");
}

/* ...and consecutive entries are on different lines (an entry that does not
 * change the line says nothing, and the assembler would never write it). */
static void test_line_table_repeats(void **state)
{
	struct vm_module *m;

	(void)state;
	m = one("f", 0, 0, CODE(I(PUSH, 0), I(DUP), I(DROP), I(RET)));
	unit_line(m, 9, 1);
	expect_reject(m, false, "line table entries 0 and 1 repeat line 1");
	m = one("f", 0, 0, CODE(I(PUSH, 0), I(DUP), I(DROP), I(RET)));
	unit_line(m, 9, 5);
	unit_line(m, 10, 7);
	unit_line(m, 11, 7);
	expect_reject(m, false, "line table entries 2 and 3 repeat line 7");
	/* Across a function boundary too. */
	m = unit_module();
	unit_func(m, "f", 0, 0, CODE(I(PUSH, 0), I(RET)));
	unit_func(m, "g", 0, 0, CODE(I(PUSH, 1), I(RET)));
	unit_line(m, 10, 1);
	expect_reject(m, false, "line table entries 0 and 1 repeat line 1");
	/* The same line again later, with another in between, is fine. */
	m = one("f", 0, 0, CODE(I(PUSH, 0), I(DUP), I(DROP), I(RET)));
	unit_line(m, 9, 2);
	unit_line(m, 10, 1);
	unit_line(m, 11, 2);
	verify_ok(m, false);
	vm_module_free(m);
	/* unit_func() keeps tables canonical on its own: each function's
	 * entry is one past the last, even after a renumbering. */
	m = unit_module();
	unit_func(m, "f", 0, 0, CODE(I(PUSH, 0), I(RET)));
	unit_line(m, 0, 41);
	unit_func(m, "g", 0, 0, CODE(I(PUSH, 1), I(RET)));
	unit_func(m, "h", 0, 0, CODE(I(PUSH, 2), I(RET)));
	assert_int_equal(m->nlines, 3);
	assert_int_equal(m->lines[1].code_off, 10);
	assert_int_equal(m->lines[1].line, 42);
	assert_int_equal(m->lines[2].code_off, 20);
	assert_int_equal(m->lines[2].line, 43);
	verify_ok(m, false);
	/* And unit_lines_each() gives every instruction its own line. */
	unit_lines_each(m);
	assert_int_equal(m->nlines, 6);
	assert_int_equal(m->lines[5].code_off, 29);
	assert_int_equal(m->lines[5].line, 30);
	verify_ok(m, false);
	vm_module_free(m);
}

/* The shape of every diagnostic about an instruction: "FILE:LINE: error:
 * verification failed in function 'F': WHAT". A verified line table gives
 * every instruction a line, so the verifier's other shape, with the code
 * offset in place of the line, is not reached through vm_verify(): a table
 * that would leave the failing instruction without a line is rejected first,
 * with the line-table message. */
static void test_message_shape(void **state)
{
	static const char with_line[] =
	    "prog.fla:9: error: verification failed in function 'g': "
	    "stack underflow: 'add' needs 2 words, the stack has 1";
	static const char no_start[] =
	    "the line table does not start at the first instruction";
	struct vm_module *m = unit_module();
	struct fl_err err;

	(void)state;
	unit_source(m, "prog.fla");
	unit_func(m, "main", 0, 0, CODE(I(PUSH, 0), I(RET)));
	unit_func(m, "g", 0, 0,
		  CODE(I(PUSH, 0), /* 10 + 0 */
		       I(PUSH, 1), /* 9 */
		       I(ADD),	   /* 18 */
		       I(ADD),	   /* 19 */
		       I(RET)));   /* 20 */
	unit_line(m, 0, 3);
	unit_line(m, 10, 7);
	unit_line(m, 28, 9);
	assert_int_equal(m->nlines, 3);
	assert_int_equal(vm_verify(m, true, &err), FL_EFORMAT);
	assert_string_equal(err.msg, with_line);
	/* The line in force: the failing add is after the entry at 28. */
	m->lines[2].code_off = 29;
	assert_int_equal(vm_verify(m, true, &err), FL_EFORMAT);
	assert_string_equal(err.msg, with_line);
	m->lines[2].code_off = 30;
	assert_int_equal(vm_verify(m, true, &err), FL_EFORMAT);
	assert_string_equal(err.msg,
			    "prog.fla:7: error: verification failed in "
			    "function 'g': stack underflow: 'add' needs 2 "
			    "words, the stack has 1");
	/* No line for the failing instruction (the table starts after it,
	 * or is empty): the table is what is wrong. */
	m->lines[0] = (struct vm_line){30, 9, 0};
	m->nlines = 1;
	assert_int_equal(vm_verify(m, true, &err), FL_EFORMAT);
	assert_string_equal(err.msg, no_start);
	m->nlines = 0;
	assert_int_equal(vm_verify(m, true, &err), FL_EFORMAT);
	assert_string_equal(err.msg, no_start);
	m->nlines = 1;
	vm_module_free(m);
}

static void test_main(void **state)
{
	struct vm_module *m;

	(void)state;
	m = one("start", 0, 0, CODE(I(PUSH, 0), I(RET)));
	verify_ok(m, false);
	expect_reject(m, true, "no function 'main' to start");

	m = one("main", 1, 0, CODE(I(GET, 0), I(RET)));
	verify_ok(m, false);
	expect_reject(m, true, "'main' takes 1 argument; it must take none");

	m = one("main", 3, 0, CODE(I(GET, 2), I(RET)));
	expect_reject(m, true, "'main' takes 3 arguments");

	/* Locals are fine; main need not be first. */
	m = unit_module();
	unit_func(m, "helper", 2, 0, CODE(I(GET, 1), I(RET)));
	unit_func(m, "main", 0, 7, CODE(I(GET, 6), I(RET)));
	verify_ok(m, true);
	verify_ok(m, false);
	vm_module_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_valid_module),
	    cmocka_unit_test(test_max_stack),
	    cmocka_unit_test(test_loop),
	    cmocka_unit_test(test_empty_module),
	    cmocka_unit_test(test_unreachable_code),
	    cmocka_unit_test(test_unknown_opcode),
	    cmocka_unit_test(test_truncated_instruction),
	    cmocka_unit_test(test_symbol_out_of_range),
	    cmocka_unit_test(test_slot_out_of_range),
	    cmocka_unit_test(test_function_out_of_range),
	    cmocka_unit_test(test_jump_outside),
	    cmocka_unit_test(test_jump_mid_instruction),
	    cmocka_unit_test(test_stack_underflow),
	    cmocka_unit_test(test_pick_depth),
	    cmocka_unit_test(test_inconsistent_join),
	    cmocka_unit_test(test_falls_off_end),
	    cmocka_unit_test(test_stack_too_deep),
	    cmocka_unit_test(test_call_arity),
	    cmocka_unit_test(test_functions_contiguous),
	    cmocka_unit_test(test_code_not_covered),
	    cmocka_unit_test(test_frame_size),
	    cmocka_unit_test(test_bad_identifiers),
	    cmocka_unit_test(test_duplicate_names),
	    cmocka_unit_test(test_symbol_table),
	    cmocka_unit_test(test_line_table),
	    cmocka_unit_test(test_line_table_starts_at_code),
	    cmocka_unit_test(test_line_table_repeats),
	    cmocka_unit_test(test_line_table_files),
	    cmocka_unit_test(test_message_shape),
	    cmocka_unit_test(test_main),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
