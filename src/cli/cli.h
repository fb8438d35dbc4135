/* The flock command line: one file per subcommand, declared once in
 * CLI_COMMANDS. The CLI parses flags, loads programs and prints; the work
 * is done by lang/ and vm/. Exit statuses follow SPEC section 9. */
#ifndef FLOCK_CLI_CLI_H
#define FLOCK_CLI_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "vm/vm.h"

enum {
	CLI_EX_OK = 0,
	CLI_EX_USAGE = 64,     /* bad command line */
	CLI_EX_DATAERR = 65,   /* did not compile / failed verification */
	CLI_EX_NOINPUT = 66,   /* input file missing or unreadable */
	CLI_EX_UNAVAILABLE = 69, /* the VM could not be reached */
	CLI_EX_SOFTWARE = 70,  /* runtime error */
	CLI_EX_CANTCREAT = 73, /* output file cannot be written */
};

/* X(name, summary) -- every subcommand; cli_NAME(argc, argv) implements
 * it, with argv[0] the command name. */
#define CLI_COMMANDS(X)                                                       \
	X(run, "compile if needed and run a program on the embedded VM")      \
	X(build, "compile a program to a bytecode module (.flb)")             \
	X(disasm, "print a module as assembly that `flock build` accepts")   \
	X(new, "create a VM whose first machine is this one")                \
	X(join, "add this machine to a VM")                                  \
	X(status, "the VM's machines")                                       \
	X(ps, "the VM's processes")                                          \
	X(kill, "end a process of the VM")                                   \
	X(logs, "the output of a process of the VM")                         \
	X(wait, "wait for a process of the VM to end")                       \
	X(leave, "take a machine out of its VM")

#define CLI__DECL(name, summary) int cli_##name(int argc, char **argv);
CLI_COMMANDS(CLI__DECL)
#undef CLI__DECL

/* Print "flock: MSG" on stderr; returns @status for `return cli_fail(..)`. */
int cli_fail(int status, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* True when @arg is -h or --help. */
bool cli_is_help(const char *arg);

/* Load FILE (.fla assembled, .flb decoded; .fl not yet) and verify it.
 * Returns 0 and a module the caller frees with vm_module_free(), or an exit
 * status after printing diagnostics. */
int cli_load(const char *path, struct vm_module **out);

/* Run @m on the VM @vm (--vm; NULL: FLOCK_VM or the only credentials):
 * stream its output, exit with its status; with @detach print its pid.
 * @resubmit (a test aid): drop the first connection once the submission
 * is written, and submit again; @reconnect (another): drop the
 * connection after the first output record, and attach again. *@submit_s: seconds from sending the
 * submission to its answer (a control-plane commit). */
int cli_run_vm(const char *vm, const struct vm_module *m,
	       const struct vm_options *o, bool detach, bool resubmit,
	       bool reconnect, double *submit_s);

/* Parse an unsigned decimal count, or a size with a unit when @size
 * (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB). False if malformed. */
bool cli_parse_u64(const char *s, bool size, uint64_t *out);

#endif
