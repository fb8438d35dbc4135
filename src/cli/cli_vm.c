/* The cluster's commands: flock new and join start a machine's daemon
 * (src/cluster/dm.h); status, ps, kill, logs, wait and leave are clients
 * of a VM (src/cluster/cl_client.h); cli_run_vm runs a program on one. */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "cluster/cl_client.h"
#include "cluster/dm.h"
#include "cluster/dm_wire.h"

static const char new_help[] =
	"usage: flock new VM_ID [--listen IP:PORT] [--advertise HOST:PORT]\n"
	"                 [--data DIR] [--provide SPEC] [--lost-after S]\n"
	"                 [--foreground]\n"
	"\n"
	"Create a Flock VM whose first machine is this one: start its daemon,\n"
	"print the VM's address and a ready-to-paste `flock join` line for\n"
	"more machines. The admin's client credentials go to FLOCK_HOME\n"
	"(default ~/.flock), so `flock run FILE --vm VM_ID@IP:PORT` works from\n"
	"this account.\n"
	"\n"
	"  VM_ID               1-64 of [a-z0-9._-]\n"
	"  --listen IP:PORT    where the daemon listens (default 0.0.0.0:7470)\n"
	"  --advertise H:PORT  the address other machines and clients dial\n"
	"                      (default: --listen, or this machine's first\n"
	"                      non-loopback IPv4 address when it listens on\n"
	"                      every address)\n"
	"  --data DIR          the machine's state: identity, token, Raft log,\n"
	"                      process logs, flock.log, flock.pid\n"
	"                      (default ~/.flock/machine)\n"
	"  --provide SPEC      what this machine gives the VM, comma-separated:\n"
	"                      cpu:N (worker cores), ram:SIZE|P% (memory for\n"
	"                      VM pages), disk:SIZE|P% (storage in --data);\n"
	"                      SIZE in B, KiB, MiB, GiB, TiB, KB, MB, GB, TB.\n"
	"                      Left out: all cores, 50% of RAM, 50% of the\n"
	"                      free disk\n"
	"  --lost-after S      seconds without a word from a machine before\n"
	"                      the VM declares it lost (while this machine\n"
	"                      leads the control plane; default 5, 0.5 to\n"
	"                      3600): its processes end 75, and it comes back\n"
	"                      as a new incarnation (docs/cluster.md)\n"
	"  --foreground        keep the daemon attached (systemd, tests); it\n"
	"                      logs to stderr\n"
	"  --debug-snapshot N  test aid: a Raft snapshot every N entries\n"
	"                      (default 1024)\n"
	"  -h, --help          show this help\n";

static const char join_help[] =
	"usage: flock join VM_ID@HOST[:PORT] [--token T] [--listen IP:PORT]\n"
	"                  [--advertise HOST:PORT] [--data DIR]\n"
	"                  [--provide SPEC] [--lost-after S] [--foreground]\n"
	"\n"
	"Add this machine's resources to a VM: start its daemon, which joins\n"
	"through the machine named (any machine of the VM). The token is the\n"
	"one `flock new` printed (--token, or FLOCK_TOKEN); a machine without\n"
	"it is refused. Options as for `flock new`.\n";

static const char client_help[] =
	"usage: flock status [--vm VM_ID@HOST[:PORT]]\n"
	"       flock ps [PID] [-v | --verbose] [--vm ...]\n"
	"       flock kill PID [--vm ...]\n"
	"       flock logs PID [--vm ...]\n"
	"       flock wait PID [--vm ...]\n"
	"       flock leave [--vm ...]\n"
	"\n"
	"  status   the VM's machines: id, address, state, role (* the leader),\n"
	"           cores, RAM used/provided, disk, threads, processes, uptime\n"
	"  ps       its processes: pid, user, state, machine, threads, memory,\n"
	"           cpu time, age, exit status; with -v and a PID, also each\n"
	"           machine the process spans: its threads and cpu there,\n"
	"           threads moved in and out (and why), pages fetched, diffs\n"
	"           sent, messages and bytes\n"
	"  kill     end a process (its status becomes 137)\n"
	"  logs     the output of a process so far (detached or finished)\n"
	"  wait     wait for a process to end; exit with its status\n"
	"  leave    take the machine named by --vm out of the VM cleanly: no\n"
	"           new processes go there, those running finish, then it\n"
	"           leaves the membership and its daemon stops\n"
	"\n"
	"The VM is --vm, else FLOCK_VM, else the only one with credentials in\n"
	"FLOCK_HOME (default ~/.flock). Statuses: 69 the VM cannot be reached,\n"
	"77 not a user of it, 64 usage (or no such process).\n";

/* ---- flock new / join ---- */

static void first_ipv4(char *out, size_t n)
{
	struct ifaddrs *ifa, *i;

	snprintf(out, n, "127.0.0.1");
	if (getifaddrs(&ifa) != 0)
		return;
	for (i = ifa; i != NULL; i = i->ifa_next) {
		struct sockaddr_in *sin = (struct sockaddr_in *)i->ifa_addr;
		if (sin == NULL || sin->sin_family != AF_INET ||
		    (ntohl(sin->sin_addr.s_addr) >> 24) == 127)
			continue;
		inet_ntop(AF_INET, &sin->sin_addr, out, (socklen_t)n);
		break;
	}
	freeifaddrs(ifa);
}

static int need(int i, int argc, char **argv, const char *cmd)
{
	if (i + 1 >= argc)
		return cli_fail(CLI_EX_USAGE, "%s: %s needs a value", cmd, argv[i]);
	return 0;
}

static int mkdir_parents(const char *dir)
{
	char *tmp = strdup(dir);
	int rc = 0;

	if (tmp == NULL)
		return -1;
	for (char *p = tmp + 1; *p != 0 && rc == 0; p++)
		if (*p == '/') {
			*p = 0;
			if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
				rc = -1;
			*p = '/';
		}
	if (rc == 0 && mkdir(tmp, 0700) != 0 && errno != EEXIST)
		rc = -1;
	free(tmp);
	return rc;
}

static void banner(const struct dm_config *cfg, const char *addr, unsigned id,
		   long pid)
{
	char token[NET_TOKEN_TEXT];
	struct fl_err err;

	if (cfg->create) {
		/* the VM's token: new, or the one a restart kept */
		if (cl_token_load(cfg->data, token, &err) != 0)
			snprintf(token, sizeof token, "?");
		printf("VM %s is up: %s (machine m%u, daemon pid %ld)\n"
		       "join more machines with:\n"
		       "  flock join %s --token %s --data DIR\n",
		       cfg->vm, addr, id, pid, addr, token);
		sodium_memzero(token, sizeof token);
	} else {
		printf("machine m%u joined VM %s: %s (daemon pid %ld)\n", id,
		       cfg->vm, addr, pid);
	}
	fflush(stdout);
}

/* flock new/join --foreground: the banner once it serves. */
static void foreground_ready(const struct dm_config *cfg, const char *addr,
			     uint32_t id, const char *err)
{
	if (err != NULL)
		fprintf(stderr, "flock: %s: %s\n", cfg->create ? "new" : "join",
			err);
	else
		banner(cfg, addr, id, (long)getpid());
}

static int daemon_cmd(int argc, char **argv, bool create)
{
	const char *cmd = create ? "new" : "join";
	static struct dm_config cfg;
	const char *provide = NULL, *data = NULL, *token = NULL;
	const char *listen = NULL, *advertise = NULL;
	char datadir[8200], home[4096], logs[8300];
	bool foreground = false;
	unsigned snapshot_every = 0;
	uint64_t lost_after_ms = 0;
	struct fl_err err;
	const char *pos = NULL;
	int fds[2], rc;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (cli_is_help(a)) {
			fputs(create ? new_help : join_help, stdout);
			return CLI_EX_OK;
		} else if (strcmp(a, "--foreground") == 0) {
			foreground = true;
		} else if (strcmp(a, "--debug-snapshot") == 0) {
			uint64_t v;
			if ((rc = need(i, argc, argv, cmd)))
				return rc;
			if (!cli_parse_u64(argv[++i], false, &v) || v < 2 ||
			    v > 1000000)
				return cli_fail(CLI_EX_USAGE,
						"%s: --debug-snapshot: '%s' is not a "
						"count between 2 and 1000000",
						cmd, argv[i]);
			snapshot_every = (unsigned)v;
		} else if (strcmp(a, "--lost-after") == 0) {
			char *end;
			double s;
			if ((rc = need(i, argc, argv, cmd)))
				return rc;
			s = strtod(argv[++i], &end);
			if (end == argv[i] || *end != 0 || !(s >= 0.5 && s <= 3600))
				return cli_fail(CLI_EX_USAGE,
						"%s: --lost-after: '%s' is not a number "
						"of seconds from 0.5 to 3600",
						cmd, argv[i]);
			lost_after_ms = (uint64_t)(s * 1000 + 0.5);
		} else if (strcmp(a, "--listen") == 0 || strcmp(a, "--data") == 0 ||
			   strcmp(a, "--provide") == 0 || strcmp(a, "--token") == 0 ||
			   strcmp(a, "--advertise") == 0) {
			if ((rc = need(i, argc, argv, cmd)))
				return rc;
			const char *v = argv[++i];
			if (a[2] == 'l')
				listen = v;
			else if (a[2] == 'd')
				data = v;
			else if (a[2] == 'p')
				provide = v;
			else if (a[2] == 't' && !create)
				token = v;
			else if (a[2] == 'a')
				advertise = v;
			else
				return cli_fail(CLI_EX_USAGE,
						"new: --token is for join (new makes "
						"the token)");
		} else if (a[0] == '-' && a[1] != 0) {
			return cli_fail(CLI_EX_USAGE,
					"%s: unknown option '%s' (see flock %s "
					"--help)",
					cmd, a, cmd);
		} else if (pos == NULL) {
			pos = a;
		} else {
			return cli_fail(CLI_EX_USAGE, "%s: unexpected argument '%s'",
					cmd, a);
		}
	}
	memset(&cfg, 0, sizeof cfg);
	cfg.create = create;
	cfg.join = !create;
	cfg.snapshot_every = snapshot_every;
	cfg.lost_after_ms = lost_after_ms;
	cfg.ready_fd = -1;
	if (pos == NULL)
		return cli_fail(CLI_EX_USAGE, "%s: no %s (see flock %s --help)", cmd,
				create ? "VM_ID" : "VM_ID@HOST:PORT", cmd);
	if (create) {
		if (!cl_vm_id_ok(pos))
			return cli_fail(CLI_EX_USAGE,
					"new: '%s' is not a VM id (1-64 of "
					"[a-z0-9._-])",
					pos);
		snprintf(cfg.vm, sizeof cfg.vm, "%s", pos);
	} else {
		if (cl_addr_parse(pos, true, &cfg.contact, &err) != 0)
			return cli_fail(CLI_EX_USAGE, "join: %s", err.msg);
		snprintf(cfg.vm, sizeof cfg.vm, "%s", cfg.contact.vm);
	}
	if (cl_home(home, sizeof home, &err) != 0)
		return cli_fail(CLI_EX_USAGE, "%s: %s", cmd, err.msg);
	cfg.home = home;
	if (data == NULL) {
		snprintf(datadir, sizeof datadir, "%s/machine", home);
		data = datadir;
	}
	if (data[0] == 0 || strlen(data) > 2000)
		return cli_fail(CLI_EX_USAGE, "%s: --data: %s", cmd,
				data[0] == 0 ? "empty directory name"
					     : "too long a path");
	if (data[0] != '/') {
		/* the daemon changes no directory, but keep it absolute */
		static char *abs_data;
		char cwd[2048];
		if (getcwd(cwd, sizeof cwd) == NULL ||
		    asprintf(&abs_data, "%s/%s", cwd, data) < 0)
			return cli_fail(CLI_EX_SOFTWARE, "%s: getcwd: %s", cmd,
					strerror(errno));
		data = abs_data;
	}
	cfg.data = data;
	if (provide != NULL) {
		if (cl_provide_parse(provide, data, &cfg.provide, &err) != 0)
			return cli_fail(CLI_EX_USAGE, "%s: %s", cmd, err.msg);
		cfg.provide_given = true;
	} else if (cl_provide_default(data, &cfg.provide, &err) != 0) {
		return cli_fail(CLI_EX_SOFTWARE, "%s: %s", cmd, err.msg);
	}
	{
		struct cl_addr la;
		if (listen == NULL)
			listen = "0.0.0.0";
		if (cl_addr_parse(listen, false, &la, &err) != 0)
			return cli_fail(CLI_EX_USAGE, "%s: --listen: %s", cmd, err.msg);
		cl_hostport(la.host, la.port, cfg.listen, sizeof cfg.listen);
		if (advertise != NULL) {
			struct cl_addr aa;
			if (cl_addr_parse(advertise, false, &aa, &err) != 0)
				return cli_fail(CLI_EX_USAGE, "%s: --advertise: %s",
						cmd, err.msg);
			cl_hostport(aa.host, aa.port, cfg.advertise,
				    sizeof cfg.advertise);
		} else if (strcmp(la.host, "0.0.0.0") == 0 ||
			   strcmp(la.host, "::") == 0) {
			char ip[64];
			first_ipv4(ip, sizeof ip);
			cl_hostport(ip, la.port, cfg.advertise, sizeof cfg.advertise);
		} else {
			snprintf(cfg.advertise, sizeof cfg.advertise, "%s",
				 cfg.listen);
		}
	}
	if (create) {
		net_crypto_init();
		net_token_new(cfg.token);
	} else {
		uint8_t psk[NET_KEY];
		if (token == NULL)
			token = getenv("FLOCK_TOKEN");
		if (token == NULL || token[0] == 0) {
			/* a machine that was a member already has it */
			char tp[8300];
			snprintf(tp, sizeof tp, "%s/token", data);
			if (access(tp, R_OK) != 0)
				return cli_fail(CLI_EX_USAGE,
						"join: no token (--token, or "
						"FLOCK_TOKEN; `flock new` printed "
						"it)");
		} else if (net_token_psk(token, psk) != 0) {
			return cli_fail(CLI_EX_USAGE,
					"join: the token is malformed (43 "
					"characters of A-Z a-z 0-9 - _)");
		} else {
			snprintf(cfg.token, sizeof cfg.token, "%s", token);
		}
	}
	if (mkdir_parents(data) != 0)
		return cli_fail(CLI_EX_CANTCREAT, "%s: %s: %s", cmd, data,
				strerror(errno));
	snprintf(logs, sizeof logs, "%s/logs", data);
	if (mkdir(logs, 0700) != 0 && errno != EEXIST)
		return cli_fail(CLI_EX_CANTCREAT, "%s: %s: %s", cmd, logs,
				strerror(errno));
	{
		/* one daemon per --data */
		char pidf[8300];
		FILE *f;
		long other;
		snprintf(pidf, sizeof pidf, "%s/flock.pid", data);
		f = fopen(pidf, "r");
		if (f != NULL) {
			if (fscanf(f, "%ld", &other) == 1 && other > 0 &&
			    kill((pid_t)other, 0) == 0) {
				fclose(f);
				return cli_fail(CLI_EX_USAGE,
						"%s: a daemon (pid %ld) already "
						"runs on %s",
						cmd, other, data);
			}
			fclose(f);
		}
	}
	if (pipe2(fds, O_CLOEXEC) != 0)
		return cli_fail(CLI_EX_SOFTWARE, "%s: pipe: %s", cmd, strerror(errno));
	fflush(stdout);
	fflush(stderr);
	pid_t child = foreground ? 0 : fork();
	if (child < 0)
		return cli_fail(CLI_EX_SOFTWARE, "%s: fork: %s", cmd, strerror(errno));
	if (child == 0) {
		char path[8300];
		FILE *f;
		if (!foreground) {
			int fd;
			close(fds[0]);
			setsid();
			snprintf(path, sizeof path, "%s/flock.log", data);
			fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
			int nul = open("/dev/null", O_RDWR);
			if (nul >= 0) {
				dup2(nul, 0);
				close(nul);
			}
			if (fd >= 0) {
				dup2(fd, 1);
				dup2(fd, 2);
				close(fd);
			}
			cfg.ready_fd = fds[1];
		} else {
			close(fds[0]);
			close(fds[1]);
		}
		snprintf(path, sizeof path, "%s/flock.pid", data);
		f = fopen(path, "w");
		if (f != NULL) {
			fprintf(f, "%ld\n", (long)getpid());
			fclose(f);
		}
		if (foreground)
			cfg.ready = foreground_ready;
		rc = dm_run(&cfg);
		unlink(path);
		if (foreground)
			return rc; /* through main: the sanitizers' exit checks run */
		exit(rc);
	}
	/* the starter: wait for the daemon's first line */
	close(fds[1]);
	{
		char line[1024];
		size_t n = 0;
		ssize_t k;
		while (n + 1 < sizeof line &&
		       (k = read(fds[0], line + n, sizeof line - 1 - n)) != 0) {
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0)
				break;
			n += (size_t)k;
			if (memchr(line, '\n', n) != NULL)
				break;
		}
		close(fds[0]);
		line[n] = 0;
		line[strcspn(line, "\n")] = 0;
		if (strncmp(line, "ok ", 3) != 0) {
			int status = 0;
			pid_t w = 0;
			/* its exit status says why (77, 69, ...): it exits
			 * right after the line; wait a little for it */
			for (int i = 0; i < 200 && w == 0; i++) {
				w = waitpid(child, &status, WNOHANG);
				if (w == 0)
					usleep(50000);
			}
			const char *msg = strncmp(line, "error ", 6) == 0
						  ? line + 6
						  : "the daemon stopped before it "
						    "served (see flock.log)";
			rc = w == child && WIFEXITED(status) && WEXITSTATUS(status) != 0
				     ? WEXITSTATUS(status)
				     : CLI_EX_UNAVAILABLE;
			return cli_fail(rc, "%s: %s (log: %s/flock.log)", cmd, msg,
					data);
		}
		char addr[600];
		unsigned id = 0;
		sscanf(line + 3, "%599s %u", addr, &id);
		banner(&cfg, addr, id, (long)child);
	}
	sodium_memzero(cfg.token, sizeof cfg.token);
	return CLI_EX_OK;
}

int cli_new(int argc, char **argv)
{
	return daemon_cmd(argc, argv, true);
}

int cli_join(int argc, char **argv)
{
	return daemon_cmd(argc, argv, false);
}

/* ---- Clients ---- */

struct target {
	struct cl_cred cred;
	struct cl_addr where;
};

static int open_vm(const char *cmd, const char *vm, struct target *t,
		   struct cl_client **c)
{
	struct fl_err err;
	int rc = cl_client_target(vm, &t->cred, &t->where, &err);

	if (rc == FL_EINVAL)
		return cli_fail(CLI_EX_USAGE, "%s: --vm: %s", cmd, err.msg);
	if (rc == FL_EPERM)
		return cli_fail(77, "%s: %s", cmd, err.msg);
	if (rc)
		return cli_fail(77, "%s: %s", cmd, err.msg);
	rc = cl_client_open(&t->cred, t->where.host, t->where.port, c, &err);
	if (rc)
		return cli_fail(rc == FL_EPERM ? 77 : CLI_EX_UNAVAILABLE, "%s: %s",
				cmd, err.msg);
	return 0;
}

/* An ERROR frame: its line and status. */
static int error_frame(const char *cmd, const uint8_t *p, uint32_t n)
{
	char msg[1024];
	struct fl_err err;
	int code = 0;

	if (dm_error_decode(p, n, &code, msg, sizeof msg, &err) != 0)
		return cli_fail(CLI_EX_UNAVAILABLE, "%s: %s", cmd, err.msg);
	return cli_fail(cl_status_for(code), "%s: %s", cmd, msg);
}

/* Send one request; follow redirects; return the reply in *h / *p. */
static int ask(const char *cmd, struct target *t, struct cl_client **c,
	       uint8_t type, const void *req, size_t n, struct net_header *h,
	       const uint8_t **p)
{
	struct fl_err err;
	int eagain = 0;

	for (int hops = 0; hops < 4; hops++) {
		uint64_t id = cl_client_send(*c, type, req, n);
		int rc;
		if (id == 0)
			return cli_fail(CLI_EX_UNAVAILABLE, "%s: the connection to "
							    "the VM closed", cmd);
		for (;;) {
			rc = cl_client_next(*c, h, p, 30000, &err);
			if (rc)
				return cli_fail(CLI_EX_UNAVAILABLE, "%s: %s", cmd,
						err.msg);
			if (h->request == id || h->type == NET_MSG_ERROR)
				break;
		}
		if (h->type == NET_MSG_ERROR && h->length >= 4 &&
		    fl_load_u32(*p) == FL_EAGAIN && hops < 3 && eagain++ < 50) {
			/* not yet known here (a moment behind the leader), or
			 * no leader this instant: ask again, for 5 s at most */
			usleep(100000);
			hops--;
			continue;
		}
		if (h->type != NET_MSG_REDIRECT)
			return 0;
		{
			char addr[520];
			struct cl_addr a;
			snprintf(addr, sizeof addr, "%.*s", (int)h->length,
				 (const char *)*p);
			if (cl_addr_parse(addr, false, &a, &err) != 0)
				return cli_fail(CLI_EX_UNAVAILABLE,
						"%s: a bad redirect", cmd);
			cl_client_close(*c);
			*c = NULL;
			if (cl_client_open(&t->cred, a.host, a.port, c, &err) != 0)
				return cli_fail(CLI_EX_UNAVAILABLE, "%s: %s", cmd,
						err.msg);
		}
	}
	return cli_fail(CLI_EX_UNAVAILABLE, "%s: too many redirects", cmd);
}

static bool parse_pid(const char *s, uint64_t *pid)
{
	return cli_parse_u64(s, false, pid) && *pid > 0;
}

static int client_cmd(int argc, char **argv)
{
	const char *cmd = argv[0], *vm = NULL, *pid_arg = NULL;
	bool wants_pid = strcmp(cmd, "kill") == 0 || strcmp(cmd, "logs") == 0 ||
			 strcmp(cmd, "wait") == 0;
	bool may_pid = wants_pid || strcmp(cmd, "ps") == 0;
	bool verbose = false;
	struct target t;
	struct cl_client *c = NULL;
	struct net_header h;
	const uint8_t *p;
	uint64_t pid = 0;
	int rc;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (cli_is_help(a)) {
			fputs(client_help, stdout);
			return CLI_EX_OK;
		} else if (strcmp(a, "--vm") == 0) {
			if ((rc = need(i, argc, argv, cmd)))
				return rc;
			vm = argv[++i];
		} else if (strcmp(cmd, "ps") == 0 &&
			   (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0)) {
			verbose = true;
		} else if (a[0] == '-' && a[1] != 0) {
			return cli_fail(CLI_EX_USAGE,
					"%s: unknown option '%s' (see flock %s "
					"--help)",
					cmd, a, cmd);
		} else if (may_pid && pid_arg == NULL) {
			pid_arg = a;
		} else {
			return cli_fail(CLI_EX_USAGE, "%s: unexpected argument '%s'",
					cmd, a);
		}
	}
	if (wants_pid && pid_arg == NULL)
		return cli_fail(CLI_EX_USAGE, "%s: no PID (see flock %s --help)", cmd,
				cmd);
	if (pid_arg != NULL && !parse_pid(pid_arg, &pid))
		return cli_fail(CLI_EX_USAGE, "%s: '%s' is not a process id", cmd,
				pid_arg);
	if (verbose && pid_arg == NULL)
		return cli_fail(CLI_EX_USAGE, "ps: -v needs a PID (see flock ps "
					      "--help)");
	if ((rc = open_vm(cmd, vm, &t, &c)))
		return rc;
	if (strcmp(cmd, "status") == 0 || strcmp(cmd, "ps") == 0) {
		uint8_t type = cmd[0] == 's' ? NET_MSG_MACHINES : NET_MSG_PS;
		uint8_t req[9];
		memcpy(req, &pid, 8);
		req[8] = 1; /* verbose */
		rc = ask(cmd, &t, &c, type, req, verbose ? 9 : pid != 0 ? 8 : 0, &h,
			 &p);
		if (rc == 0 && h.type == NET_MSG_ERROR)
			rc = error_frame(cmd, p, h.length);
		else if (rc == 0)
			fwrite(p, 1, h.length, stdout);
	} else if (strcmp(cmd, "kill") == 0) {
		rc = ask(cmd, &t, &c, NET_MSG_KILL, &pid, 8, &h, &p);
		if (rc == 0 && h.type == NET_MSG_ERROR)
			rc = error_frame(cmd, p, h.length);
	} else if (strcmp(cmd, "leave") == 0) {
		struct fl_err err;
		uint64_t id = cl_client_send(c, NET_MSG_LEAVE, NULL, 0);
		rc = id == 0 ? FL_EPIPE : cl_client_next(c, &h, &p, 600000, &err);
		if (rc)
			rc = cli_fail(CLI_EX_UNAVAILABLE, "leave: %s",
				      rc == FL_EPIPE ? "the connection closed"
						     : err.msg);
		else if (h.type == NET_MSG_ERROR)
			rc = error_frame(cmd, p, h.length);
		else
			printf("the machine left VM %s\n", t.cred.vm);
	} else { /* logs, wait */
		uint8_t req[17];
		bool logs = cmd[0] == 'l';
		uint64_t next = 0;
		memcpy(req, &pid, 8);
		memset(req + 8, 0, 8);
		req[16] = 0; /* logs: what is there; wait: follow */
		rc = logs ? ask(cmd, &t, &c, NET_MSG_ATTACH, req, 17, &h, &p)
			  : ask(cmd, &t, &c, NET_MSG_WAIT, &pid, 8, &h, &p);
		for (;;) {
			struct fl_err err;
			if (rc)
				break;
			if (h.type == NET_MSG_ERROR) {
				rc = error_frame(cmd, p, h.length);
				break;
			}
			if (h.type == NET_MSG_OUTPUT) {
				uint64_t seq;
				memcpy(&seq, p + 8, 8);
				if (seq == next) {
					next++;
					fflush(stdout);
					(void)fl_write_all(p[16] == 2 ? 2 : 1, p + 17,
							   h.length - 17);
				}
			} else if (h.type == NET_MSG_STATUS) {
				int32_t status;
				memcpy(&status, p + 8, 4);
				rc = logs || status < 0 ? 0 : status;
				break;
			}
			if (cl_client_next(c, &h, &p, -1, &err) != 0) {
				rc = cli_fail(CLI_EX_UNAVAILABLE, "%s: %s", cmd,
					      err.msg);
				break;
			}
		}
	}
	cl_client_close(c);
	return rc;
}

int cli_status(int argc, char **argv) { return client_cmd(argc, argv); }
int cli_ps(int argc, char **argv) { return client_cmd(argc, argv); }
int cli_kill(int argc, char **argv) { return client_cmd(argc, argv); }
int cli_logs(int argc, char **argv) { return client_cmd(argc, argv); }
int cli_wait(int argc, char **argv) { return client_cmd(argc, argv); }
int cli_leave(int argc, char **argv) { return client_cmd(argc, argv); }

/* ---- flock run --vm ---- */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* flock run --stats: what the process did on each machine (as ps -v
 * says it), on stderr. */
static void run_stats(struct target *t, struct cl_client **c, uint64_t pid)
{
	struct net_header h;
	const uint8_t *p;
	uint8_t req[9];

	memcpy(req, &pid, 8);
	req[8] = 1;
	fflush(stdout);
	if (ask("run --stats", t, c, NET_MSG_PS, req, sizeof req, &h, &p) != 0)
		return;
	if (h.type == NET_MSG_ERROR) {
		error_frame("run --stats", p, h.length);
		return;
	}
	fprintf(stderr, "flock: stats: process %" PRIu64 "\n", pid);
	fwrite(p, 1, h.length, stderr);
}

/* The run's end: free what it holds, return @rc. */
static int run_done(struct cl_client *c, struct fl_buf *mod, int rc)
{
	fl_buf_close(mod);
	cl_client_close(c);
	return rc;
}

#define RUN_OTHERS_MAX 64

/* MACHINES' address lines into @out (at most RUN_OTHERS_MAX): how many. */
static int parse_others(const uint8_t *p, size_t n, struct cl_addr *out)
{
	int k = 0;
	size_t at = 0;

	while (at < n && k < RUN_OTHERS_MAX) {
		char line[CTL_ADDR_MAX + 1];
		struct fl_err err;
		size_t len = 0;
		while (at + len < n && p[at + len] != '\n')
			len++;
		if (len > 0 && len < sizeof line) {
			memcpy(line, p + at, len);
			line[len] = 0;
			if (cl_addr_parse(line, false, &out[k], &err) == 0)
				k++;
		}
		at += len + 1;
	}
	return k;
}

int cli_run_vm(const char *vm, const struct vm_module *m,
	       const struct vm_options *o, bool detach, bool resubmit,
	       bool reconnect, double *submit_s)
{
	struct target t;
	struct cl_client *c = NULL;
	struct fl_buf b, mod;
	struct net_header h;
	const uint8_t *p;
	struct dm_submit sub;
	struct timespec t_sent;
	uint64_t next = 0, pid = 0;
	int rc, tries = 0;
	bool started = false; /* we have its pid: attach, never submit again */
	bool redirected = false;
	char host[CL_HOST_MAX + 1];
	uint16_t port;
	/* The VM's machines, asked once the process started: where to go on
	 * when the machine we talk to is lost. */
	struct cl_addr others[RUN_OTHERS_MAX];
	int nothers = 0, other = 0;

	uint64_t t0 = now_ms();

	if ((rc = open_vm("run", vm, &t, &c)))
		return rc;
	snprintf(host, sizeof host, "%s", t.where.host);
	port = t.where.port;
	fl_buf_init(&mod);
	if (vm_module_encode(m, &mod) != 0 || fl_buf_failed(&mod))
		return run_done(c, &mod, cli_fail(CLI_EX_SOFTWARE, "run: out of memory"));
	memset(&sub, 0, sizeof sub);
	randombytes_buf(&sub.client, sizeof sub.client);
	sub.client |= 1;
	sub.seq = 1;
	sub.detach = detach;
	sub.check = o->check;
	sub.memory = o->memory;
	sub.max_threads = o->max_threads;
	sub.stack_words = o->stack_words;
	sub.call_depth = o->max_depth;
	sub.cpus = o->cpus;
	sub.eager = o->spread_eager;
	sub.survive = o->survive;
	sub.argc = (uint32_t)o->argc;
	sub.argv = o->argv;
	sub.module = mod.data;
	sub.module_len = mod.len;
	for (;;) {
		struct fl_err err;
		uint64_t id;
		if (!started) {
			/* The submission: the same id on every try, so the VM
			 * starts the process at most once. */
			fl_buf_init(&b);
			sub.from = next;
			dm_submit_encode(&sub, &b);
			clock_gettime(CLOCK_MONOTONIC, &t_sent);
			id = fl_buf_failed(&b) ? 0
					       : cl_client_send(c, NET_MSG_SUBMIT, b.data,
								b.len);
			fl_buf_close(&b);
		} else {
			/* Back after a lost connection: the output from the next
			 * record we lack; the machine says which input it lacks. */
			uint8_t req[17];
			memcpy(req, &pid, 8);
			memcpy(req + 8, &next, 8);
			req[16] = 1;
			id = cl_client_send(c, NET_MSG_ATTACH, req, sizeof req);
		}
		rc = id == 0 ? FL_EPIPE : 0;
		if (resubmit && rc == 0) {
			resubmit = false;
			cl_client_flush(c);
			rc = FL_EPIPE; /* as if the connection broke now */
		}
		while (rc == 0) {
			rc = cl_client_next(c, &h, &p, -1, &err);
			if (rc)
				break;
			if (h.type == NET_MSG_ERROR) {
				/* "not yet" (starting elsewhere, a machine a moment
				 * behind or just restarted): again, for 15 s at
				 * most before it started, within the reconnect
				 * budget after */
				if (h.length >= 4 && fl_load_u32(p) == FL_EAGAIN &&
				    tries < 150 &&
				    (started || now_ms() - t0 < 15000)) {
					rc = FL_EAGAIN;
					break;
				}
				return run_done(c, &mod, error_frame("run", p, h.length));
			}
			if (h.type == NET_MSG_SUBMIT && h.length == 8 && !started) {
				struct timespec now;
				clock_gettime(CLOCK_MONOTONIC, &now);
				*submit_s = (double)(now.tv_sec - t_sent.tv_sec) +
					    (double)(now.tv_nsec - t_sent.tv_nsec) / 1e9;
				memcpy(&pid, p, 8);
				started = true;
				if (detach) {
					printf("%" PRIu64 "\n", pid);
					return run_done(c, &mod, 0);
				}
				cl_client_stdin(c, pid, 0);
				{
					uint8_t addrs = 1;
					cl_client_send(c, NET_MSG_MACHINES, &addrs, 1);
				}
			} else if (h.type == NET_MSG_MACHINES) {
				nothers = parse_others(p, h.length, others);
			} else if (h.type == NET_MSG_ATTACH && h.length == 8) {
				uint64_t lacks = fl_load_u64(p), gone;
				if (lacks != UINT64_MAX &&
				    (gone = cl_client_resend_input(c, lacks)) != UINT64_MAX)
					return run_done(c, &mod,
							cli_fail(CLI_EX_UNAVAILABLE,
								 "run: process %" PRIu64
								 " lost input %" PRIu64
								 " in a reconnect",
								 pid, gone));
			} else if (h.type == NET_MSG_OUTPUT && h.length >= 17) {
				uint64_t seq = fl_load_u64(p + 8);
				if (seq == next) { /* each record once */
					next++;
					(void)fl_write_all(p[16] == 2 ? 2 : 1, p + 17,
							   h.length - 17);
				}
				if (reconnect) { /* the test aid: break it now */
					reconnect = false;
					rc = FL_EPIPE;
					break;
				}
			} else if (h.type == NET_MSG_STATUS && h.length == 12) {
				int32_t status;
				memcpy(&status, p + 8, 4);
				if (o->stats != NULL)
					run_stats(&t, &c, pid);
				return run_done(c, &mod, status & 255);
			} else if (h.type == NET_MSG_REDIRECT) {
				/* the process runs there */
				char addr[520];
				struct cl_addr a;
				snprintf(addr, sizeof addr, "%.*s", (int)h.length,
					 (const char *)p);
				if (cl_addr_parse(addr, false, &a, &err) == 0) {
					snprintf(host, sizeof host, "%s", a.host);
					port = a.port;
				}
				sub.placed = true; /* that machine runs it */
				redirected = true; /* go at once */
				rc = FL_EPIPE;
				break;
			}
		}
		/* The connection went, or the VM asked us to come back (or go
		 * elsewhere): the same submission again, or an attach once it
		 * started; output we have is skipped. */
		for (;;) {
			/* 10 s; 30 s with other machines to ask (a lost
			 * machine is declared so after --lost-after, 5 s by
			 * default, once a leader serves) */
			if (++tries > (started && nothers > 0 ? 150 : 50))
				return run_done(c, &mod,
						started ? cli_fail(CLI_EX_UNAVAILABLE,
								   "run: lost the VM while "
								   "process %" PRIu64
								   " ran (see flock logs %" PRIu64
								   ")",
								   pid, pid)
							: cli_fail(CLI_EX_UNAVAILABLE,
								   "run: lost the VM and "
								   "could not get back"));
			if (tries > 1 && !redirected)
				usleep(200000);
			/* The machine does not answer: after a few tries, the
			 * VM's others in turn (its process's end is known
			 * there if the machine was lost). */
			if (tries > 3 && !redirected && nothers > 0) {
				const struct cl_addr *a = &others[other++ % nothers];
				snprintf(host, sizeof host, "%s", a->host);
				port = a->port;
			}
			redirected = false;
			if (cl_client_reopen(c, host, port, &err) == 0)
				break;
		}
	}
}
