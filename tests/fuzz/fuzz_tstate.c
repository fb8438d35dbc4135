/* libFuzzer target for the thread-state decoder (src/vm/vm_tstate.c), the
 * bytes another machine sends when a thread moves.
 *
 * A fixed module is loaded into a process once; a real thread of it, with
 * local memory in several pages and a few calls deep, is encoded as the
 * base state. Each input either is decoded as it stands (first byte 0) or,
 * more usefully, patches the base state: a length to cut it to, then
 * (u16 offset, u8 byte) pairs. Whatever decodes must encode again and
 * decode to the same bytes; nothing may crash, leak or read out of
 * bounds. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lang/lang.h"
#include "vm/vm_int.h"

static const char program[] =
	"func main 0 2\n"
	"        push 100\n"
	"        alloc\n"
	"        set 0\n"
	"        push 9000\n"
	"        alloc\n"
	"        set 1\n"
	"        get 0\n"
	"        push 1\n"
	"        push 2\n"
	"        call f\n"
	"        ret\n"
	"end\n"
	"func f 3 1\n"
	"        get 0\n"
	"        get 1\n"
	"        get 2\n"
	"        add\n"
	"        st64\n"
	"        push 0\n"
	"        ret\n"
	"end\n";

static struct vm_module *mod;
static struct vm_proc *proc;
static uint8_t *base;
static size_t base_len;

static void die(const char *what)
{
	fprintf(stderr, "fuzz_tstate: %s\n", what);
	abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct vm_options o;
	struct vm_thread *t;
	struct fl_err err;
	struct fl_buf b;
	vm_word a;

	(void)argc;
	(void)argv;
	if (asm_assemble("fuzz.fla", program, sizeof program - 1, &mod,
			 stderr) != 0 ||
	    vm_verify(mod, true, &err) != 0)
		die("module");
	vm_options_init(&o);
	o.cpus = 1;
	o.memory = (uint64_t)1 << 30;
	proc = vm__proc_new(mod, &o);
	if (proc == NULL)
		die("process");
	t = vm__thread_new(proc, &proc->x.funcs[0], NULL, 0, NULL);
	if (t == NULL)
		die("thread");
	/* Local memory: a small block and a three-page block, written. */
	a = vm__heap_alloc(&t->local, 100);
	if (a == 0 || vm__heap_alloc(&t->local, 9000) == 0)
		die("alloc");
	bool nomem;
	struct vm_page *pg = vm__page_get_w(&t->local, a >> VM_PAGE_SHIFT, &nomem);
	if (pg == NULL || vm__page_bytes(pg) == NULL)
		die("page");
	memset(pg->data, 0x5a, 64);
	fl_buf_init(&b);
	if (vm__thread_encode(t, &b) != 0)
		die("encode");
	base = fl_buf_take(&b, &base_len);
	/* The encoding must round-trip. */
	struct vm_thread *c;
	if (vm__thread_decode(proc, base, base_len, &c, &err) != 0) {
		fprintf(stderr, "%s\n", err.msg);
		die("decode of the base state");
	}
	vm__thread_free(c);
	return 0;
}

static void check_roundtrip(struct vm_thread *t)
{
	struct fl_buf b1, b2;
	struct vm_thread *c;
	struct fl_err err;

	fl_buf_init(&b1);
	fl_buf_init(&b2);
	if (vm__thread_encode(t, &b1) != 0)
		die("re-encode");
	if (vm__thread_decode(proc, b1.data, b1.len, &c, &err) != 0)
		die("decode of a re-encoded state");
	if (vm__thread_encode(c, &b2) != 0 || b1.len != b2.len ||
	    memcmp(b1.data, b2.data, b1.len) != 0)
		die("encode/decode not inverse");
	vm__thread_free(c);
	fl_buf_close(&b1);
	fl_buf_close(&b2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vm_thread *t = NULL;
	struct fl_err err;
	uint8_t *buf;
	size_t len;

	if (size == 0)
		return 0;
	if (data[0] == 0) {
		buf = malloc(size);
		if (buf == NULL)
			return 0;
		memcpy(buf, data + 1, size - 1);
		len = size - 1;
	} else {
		buf = malloc(base_len);
		if (buf == NULL)
			return 0;
		memcpy(buf, base, base_len);
		len = base_len;
		if (size >= 3) {
			size_t cut = (size_t)(data[1] | data[2] << 8);
			if (cut != 0 && cut < len)
				len = cut;
		}
		for (size_t i = 3; i + 3 <= size; i += 3) {
			size_t off = (size_t)(data[i] | data[i + 1] << 8);
			if (off < len)
				buf[off] = data[i + 2];
		}
	}
	if (vm__thread_decode(proc, buf, len, &t, &err) == 0) {
		check_roundtrip(t);
		vm__thread_free(t);
	}
	free(buf);
	return 0;
}
