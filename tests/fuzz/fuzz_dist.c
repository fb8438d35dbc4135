/* libFuzzer target for the messages between a process's parts
 * (src/dist/dist.c): what another machine sends a part of a process --
 * threads, steals, joins and their replies, ends, deadlock waves, lent
 * pages asked for, sent and released, and a survive process's census
 * (an input of even size is one: dist_census.c).
 *
 * Each input gets a fresh node and process: part 1 of 3 (the origin is
 * part 0), its sends dropped. The input is a sequence of messages, each
 * a byte (the sender: modulo 3, so the part itself is among them), a
 * 2-byte length and that many bytes, delivered in order; then the
 * process is ended and freed. Nothing may crash, leak, read out of
 * bounds or hang. tests/fuzz/seeds-dist holds one valid message of each
 * kind (version 1: the type byte after it). */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist/dist.h"
#include "lang/lang.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char program[] =
	".text\n"
	"func main 0 0\n"
	"        push 0\n"
	"        ret\n"
	"end\n"
	"func f 1 0\n"
	"        get 0\n"
	"        ret\n"
	"end\n";

static struct vm_module *mod;
static int null_fd = -1;

static void drop(void *ctx, int to, const void *msg, size_t len)
{
	(void)ctx;
	(void)to;
	(void)msg;
	(void)len;
}

static void setup(void)
{
	struct fl_err err;

	if (mod != NULL)
		return;
	null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null_fd < 0 ||
	    asm_assemble("fuzz.fla", program, sizeof program - 1, &mod,
			 stderr) != 0 ||
	    vm_verify(mod, true, &err) != 0) {
		fprintf(stderr, "fuzz_dist: cannot set up\n");
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* an even-sized input: a --survive process (its census) */
	struct dist_config cfg = {.self = 1, .nparts = 3, .origin = 0,
				  .ncpu = 3, .send = drop,
				  .survive = size % 2 == 0};
	struct vm_node_options no;
	struct vm_options o;
	struct vm_node *n;
	struct vm_proc *p;
	struct dist_part *d;
	struct fl_err err;
	size_t off = 0;

	setup();
	vm_node_options_init(&no);
	no.cpus = 1;
	vm_options_init(&o);
	o.memory = 16u << 20;
	o.fd_in = o.fd_out = o.fd_err = null_fd;
	o.prog = "fuzz";
	o.survive = cfg.survive;
	if (vm_node_new(&no, &n, &err) != 0 ||
	    vm__proc_new(n, mod, &o, &p, &err) != 0 ||
	    dist_part_new(p, &cfg, &d, &err) != 0) {
		fprintf(stderr, "fuzz_dist: %s\n", err.msg);
		abort();
	}
	while (size - off >= 3) {
		int from = data[off] % 3;
		size_t len = (size_t)data[off + 1] | (size_t)data[off + 2] << 8;
		off += 3;
		if (len > size - off)
			len = size - off;
		dist_deliver(d, from, data + off, len);
		off += len;
	}
	vm_proc_kill(p, 9);
	vm_proc_wait(p);
	vm_proc_free(p);
	dist_unref(d);
	vm_node_free(n);
	return 0;
}
