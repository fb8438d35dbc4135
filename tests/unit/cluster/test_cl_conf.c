/* Unit tests for src/cluster/cl_conf.c: VM ids, VM addresses
 * (VM_ID@HOST[:PORT], bracketed and bare IPv6) and --provide values are
 * parsed or refused with a message naming the bad part; the identity, token
 * and credential files round-trip through a temporary directory with mode
 * 0600, are refused when others may read them or when damaged, and a client
 * finds its only credentials among the other things FLOCK_HOME holds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cluster/cl_conf.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <sodium.h>

/* ---- Fixture: a fresh temporary directory per test ---- */

static int setup_dir(void **state)
{
	char *dir = strdup("/tmp/flock-test-conf-XXXXXX");

	if (dir == NULL || mkdtemp(dir) == NULL)
		return -1;
	*state = dir;
	return 0;
}

static int rm_one(const char *path, const struct stat *sb, int flag,
		  struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int teardown_dir(void **state)
{
	char *dir = *state;
	int rc = nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);

	free(dir);
	return rc;
}

static void write_text(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(path, mode), 0);
}

/* DIR/NAME's text; the caller frees it. */
static char *read_text(const char *dir, const char *name)
{
	char path[8192], *text = calloc(1, 65537);
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	f = fopen(path, "r");
	assert_non_null(f);
	assert_non_null(text);
	(void)fread(text, 1, 65536, f);
	fclose(f);
	return text;
}

/* Replace the line of DIR/NAME that starts with @prefix by @line (NULL:
 * remove it); the file keeps mode 0600. */
static void edit_line(const char *dir, const char *name, const char *prefix,
		      const char *line)
{
	char *text = read_text(dir, name), *out = calloc(1, 65537 + 256);
	char path[8192];
	const char *p = text;
	bool found = false;

	assert_non_null(out);
	while (*p != 0) {
		const char *eol = strchr(p, '\n');
		size_t n = eol != NULL ? (size_t)(eol - p + 1) : strlen(p);
		if (!found && strncmp(p, prefix, strlen(prefix)) == 0) {
			found = true;
			if (line != NULL) {
				strcat(out, line);
				strcat(out, "\n");
			}
		} else {
			strncat(out, p, n);
		}
		p += n;
	}
	assert_true(found);
	snprintf(path, sizeof path, "%s/%s", dir, name);
	write_text(path, out, 0600);
	free(text);
	free(out);
}

static mode_t mode_of(const char *dir, const char *name)
{
	char path[8192];
	struct stat sb;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	assert_int_equal(stat(path, &sb), 0);
	return sb.st_mode & 07777;
}

static void set_mode(const char *dir, const char *name, mode_t mode)
{
	char path[8192];

	snprintf(path, sizeof path, "%s/%s", dir, name);
	assert_int_equal(chmod(path, mode), 0);
}

/* How many entries @dir holds besides "." and "..". */
static int entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

/* ---- VM ids ---- */

static void test_vm_id(void **state)
{
	char long_id[66];

	(void)state;
	assert_true(cl_vm_id_ok("a"));
	assert_true(cl_vm_id_ok("my-vm_2.prod"));
	assert_true(cl_vm_id_ok("0"));
	memset(long_id, 'a', 64);
	long_id[64] = 0;
	assert_true(cl_vm_id_ok(long_id));
	long_id[64] = 'a';
	long_id[65] = 0;
	assert_false(cl_vm_id_ok(long_id));
	assert_false(cl_vm_id_ok(""));
	assert_false(cl_vm_id_ok("MyVM"));
	assert_false(cl_vm_id_ok("vm@host"));
	assert_false(cl_vm_id_ok("a/b"));
	assert_false(cl_vm_id_ok("a b"));
	/* An id names a file under FLOCK_HOME. */
	assert_false(cl_vm_id_ok("."));
	assert_false(cl_vm_id_ok(".."));
	assert_true(cl_vm_id_ok("..."));
}

/* ---- Addresses ---- */

static void expect_addr(const char *s, bool with_vm, const char *vm,
			const char *host, uint16_t port)
{
	struct cl_addr a;
	struct fl_err err = {""};
	int rc = cl_addr_parse(s, with_vm, &a, &err);

	if (rc != 0)
		fail_msg("'%s': refused: %s", s, err.msg);
	assert_string_equal(a.vm, vm);
	assert_string_equal(a.host, host);
	assert_int_equal(a.port, port);
}

static void expect_addr_refused(const char *s, bool with_vm, const char *needle)
{
	struct cl_addr a;
	struct fl_err err = {""};
	int rc = cl_addr_parse(s, with_vm, &a, &err);

	if (rc != FL_EINVAL)
		fail_msg("'%s': rc %d, expected FL_EINVAL", s, rc);
	if (strstr(err.msg, needle) == NULL)
		fail_msg("'%s': message '%s' does not say '%s'", s, err.msg,
			 needle);
}

static void test_addr_parse(void **state)
{
	(void)state;
	expect_addr("vm@host", true, "vm", "host", CL_DEFAULT_PORT);
	expect_addr("vm@host:7000", true, "vm", "host", 7000);
	expect_addr("vm@127.0.0.1:1", true, "vm", "127.0.0.1", 1);
	expect_addr("vm@host:65535", true, "vm", "host", 65535);
	expect_addr("vm@[::1]:7470", true, "vm", "::1", 7470);
	expect_addr("vm@[::1]", true, "vm", "::1", CL_DEFAULT_PORT);
	expect_addr("vm@::1", true, "vm", "::1", CL_DEFAULT_PORT);
	expect_addr("vm@fe80::1:2", true, "vm", "fe80::1:2", CL_DEFAULT_PORT);
	expect_addr("127.0.0.2:9", false, "", "127.0.0.2", 9);
	expect_addr("localhost", false, "", "localhost", CL_DEFAULT_PORT);
	expect_addr("[::1]:80", false, "", "::1", 80);
	assert_int_equal(CL_DEFAULT_PORT, 7470);
}

static void test_addr_refused(void **state)
{
	char s[400];

	(void)state;
	expect_addr_refused("host:7000", true, "VM_ID@HOST");
	expect_addr_refused("Bad@host", true, "VM id");
	expect_addr_refused("@host", true, "VM id");
	expect_addr_refused("vm@host:0", true, "port");
	expect_addr_refused("vm@host:65536", true, "port");
	expect_addr_refused("vm@host:12x", true, "port");
	expect_addr_refused("vm@host:", true, "port");
	expect_addr_refused("vm@host:-1", true, "port");
	expect_addr_refused("vm@host:99999999999999999999", true, "port");
	expect_addr_refused("vm@[::1", true, "']'");
	expect_addr_refused("vm@[::1]x", true, "':PORT'");
	expect_addr_refused("vm@[::1]:0", true, "port");
	expect_addr_refused("vm@", true, "not a host");
	expect_addr_refused("vm@:7000", true, "not a host");
	expect_addr_refused("vm@[]:7000", true, "not a host");
	expect_addr_refused("vm@ho$t", true, "'ho$t' is not a host");
	expect_addr_refused("vm@a b", true, "not a host");
	expect_addr_refused("vm@a@b", true, "not a host");
	expect_addr_refused("", false, "not a host");
	memcpy(s, "vm@", 3);
	memset(s + 3, 'h', 300);
	s[303] = 0;
	expect_addr_refused(s, true, "not a host");
	snprintf(s + 303, sizeof s - 303, ":7000");
	expect_addr_refused(s, true, "not a host");
	s[3] = '[';
	snprintf(s + 303, sizeof s - 303, "]:7000");
	expect_addr_refused(s, true, "not a host");
	/* A 253-character name is the longest. */
	memset(s + 3, 'h', 253);
	s[256] = 0;
	expect_addr(s, true, "vm", s + 3, CL_DEFAULT_PORT);
	s[256] = 'h';
	s[257] = 0;
	expect_addr_refused(s, true, "not a host");
}

static void test_hostport(void **state)
{
	char out[CTL_ADDR_MAX + 1];

	(void)state;
	cl_hostport("10.0.0.1", 7470, out, sizeof out);
	assert_string_equal(out, "10.0.0.1:7470");
	cl_hostport("example.org", 1, out, sizeof out);
	assert_string_equal(out, "example.org:1");
	cl_hostport("::1", 7470, out, sizeof out);
	assert_string_equal(out, "[::1]:7470");
	cl_hostport("fe80::1", 65535, out, sizeof out);
	assert_string_equal(out, "[fe80::1]:65535");
}

/* ---- --provide ---- */

static uint64_t ram_total(void)
{
	return (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGE_SIZE);
}

static uint64_t free_bytes(const char *dir)
{
	struct statvfs v;

	assert_int_equal(statvfs(dir, &v), 0);
	return (uint64_t)v.f_bavail * (uint64_t)v.f_frsize;
}

/* Free space moves while other programs write: near enough. */
static void assert_near(uint64_t got, uint64_t want)
{
	uint64_t d = got > want ? got - want : want - got;

	if (d > (64ull << 20) + want / 100)
		fail_msg("%llu is not near %llu", (unsigned long long)got,
			 (unsigned long long)want);
}

static void expect_provide(const char *s, const char *dir,
			   struct cl_provide *p)
{
	struct fl_err err = {""};
	int rc = cl_provide_parse(s, dir, p, &err);

	if (rc != 0)
		fail_msg("'%s': refused: %s", s, err.msg);
}

static void expect_provide_refused(const char *s, const char *dir,
				   const char *needle)
{
	struct cl_provide p;
	struct fl_err err = {""};
	int rc = cl_provide_parse(s, dir, &p, &err);

	if (rc != FL_EINVAL)
		fail_msg("'%s': rc %d, expected FL_EINVAL", s, rc);
	if (strstr(err.msg, needle) == NULL)
		fail_msg("'%s': message '%s' does not say '%s'", s, err.msg,
			 needle);
}

static void test_provide_parse(void **state)
{
	const char *dir = *state;
	uint64_t ram = ram_total();
	uint32_t cores = (uint32_t)sysconf(_SC_NPROCESSORS_ONLN);
	struct cl_provide p;

	expect_provide("cpu:2", dir, &p);
	assert_int_equal(p.cpu, 2);
	assert_true(p.ram == ram / 2);
	assert_near(p.disk, free_bytes(dir) / 2);

	expect_provide("ram:4GiB", dir, &p);
	assert_int_equal(p.cpu, cores);
	assert_true(p.ram == 4ull << 30);
	assert_near(p.disk, free_bytes(dir) / 2);

	expect_provide("ram:50%", dir, &p);
	assert_true(p.ram == (uint64_t)((unsigned __int128)ram * 50 / 100));
	expect_provide("ram:100%", dir, &p);
	assert_true(p.ram == ram);
	expect_provide("ram:1%", dir, &p);
	assert_true(p.ram == ram / 100);

	expect_provide("disk:10GB", dir, &p);
	assert_int_equal(p.cpu, cores);
	assert_true(p.ram == ram / 2);
	assert_true(p.disk == 10000000000ull);
	expect_provide("disk:20%", dir, &p);
	assert_near(p.disk, free_bytes(dir) / 5);

	expect_provide("cpu:1,ram:1MiB,disk:1KiB", dir, &p);
	assert_int_equal(p.cpu, 1);
	assert_true(p.ram == 1048576);
	assert_true(p.disk == 1024);
	expect_provide("disk:3TB,cpu:1024,ram:7B", dir, &p);
	assert_int_equal(p.cpu, 1024);
	assert_true(p.ram == 7);
	assert_true(p.disk == 3000000000000ull);
	expect_provide("ram:2TiB,disk:5KB", dir, &p);
	assert_true(p.ram == 2ull << 40);
	assert_true(p.disk == 5000);
	expect_provide("ram:16777215TiB", dir, &p); /* the largest that fits */
	assert_true(p.ram == 16777215ull << 40);
}

static void test_provide_default(void **state)
{
	const char *dir = *state;
	char deep[4096];
	struct cl_provide p;
	struct fl_err err = {""};

	assert_int_equal(cl_provide_default(dir, &p, &err), 0);
	assert_int_equal(p.cpu, (uint32_t)sysconf(_SC_NPROCESSORS_ONLN));
	assert_true(p.ram == ram_total() / 2);
	assert_near(p.disk, free_bytes(dir) / 2);
	assert_true(p.disk > 0);
	/* --data need not exist yet: its nearest existing parent counts. */
	snprintf(deep, sizeof deep, "%s/not/yet/there", dir);
	assert_int_equal(cl_provide_default(deep, &p, &err), 0);
	assert_near(p.disk, free_bytes(dir) / 2);
	assert_true(p.disk > 0);
	expect_provide("disk:50%", deep, &p);
	assert_near(p.disk, free_bytes(dir) / 2);
	assert_true(p.disk > 0);
	/* A relative one that does not exist: the current directory. */
	assert_int_equal(cl_provide_default("no-such-dir-here/x", &p, &err), 0);
	assert_near(p.disk, free_bytes(".") / 2);
	assert_true(p.disk > 0);
}

static void test_provide_refused(void **state)
{
	const char *dir = *state;

	expect_provide_refused("", dir, "empty");
	expect_provide_refused("cpu", dir, "'cpu'");
	expect_provide_refused("cpu:", dir, "cpu:");
	expect_provide_refused("cpu:0", dir, "cpu:0");
	expect_provide_refused("cpu:1025", dir, "cpu:1025");
	expect_provide_refused("cpu:x", dir, "cpu:x");
	expect_provide_refused("cpu:-1", dir, "cpu:-1");
	expect_provide_refused("cpu:2x", dir, "cpu:2x");
	expect_provide_refused("cpu:99999999999999999999", dir, "cpu:9999");
	expect_provide_refused("gpu:1", dir, "'gpu'");
	expect_provide_refused("CPU:1", dir, "'CPU'");
	expect_provide_refused("ram:0", dir, "ram:0");
	expect_provide_refused("ram:0B", dir, "ram:0B");
	expect_provide_refused("ram:4", dir, "ram:4"); /* no unit */
	expect_provide_refused("ram:101%", dir, "ram:101%");
	expect_provide_refused("ram:0%", dir, "ram:0%");
	expect_provide_refused("ram:5XB", dir, "ram:5XB");
	expect_provide_refused("ram: 5GB", dir, "ram: 5GB");
	expect_provide_refused("disk:%", dir, "disk:%");
	expect_provide_refused("disk:-5GB", dir, "disk:-5GB");
	expect_provide_refused("ram:18446744073709551615GiB", dir,
			       "ram:18446744073709551615GiB");
	expect_provide_refused("ram:16777216TiB", dir, "ram:16777216TiB");
	expect_provide_refused("ram:18446744073709551616B", dir,
			       "ram:18446744073709551616B");
	expect_provide_refused("cpu:1,cpu:2", dir, "'cpu' given twice");
	expect_provide_refused("ram:1B,cpu:1,ram:2B", dir, "'ram' given twice");
	expect_provide_refused("cpu:1,", dir, "trailing ','");
	expect_provide_refused(",cpu:1", dir, "empty part");
	expect_provide_refused("cpu:1,,ram:1B", dir, "empty part");
	expect_provide_refused("cpu:1,ram", dir, "'ram'");
}

/* ---- The machine's identity ---- */

static void identity_example(struct cl_identity *id)
{
	memset(id, 0, sizeof *id);
	snprintf(id->vm, sizeof id->vm, "test-vm");
	id->id = 3;
	id->incarnation = 4000000000u;
	net_keypair_new(&id->key);
	snprintf(id->listen, sizeof id->listen, "0.0.0.0:7470");
	snprintf(id->advertise, sizeof id->advertise, "[::1]:7470");
}

static void test_identity_round_trip(void **state)
{
	const char *dir = *state;
	struct cl_identity id, back;
	struct fl_err err = {""};

	identity_example(&id);
	assert_int_equal(cl_identity_save(dir, &id, &err), 0);
	assert_int_equal(mode_of(dir, "identity"), 0600);
	assert_int_equal(entries(dir), 1); /* no temporary file left */
	assert_int_equal(cl_identity_load(dir, &back, &err), 0);
	assert_string_equal(back.vm, "test-vm");
	assert_int_equal(back.id, 3);
	assert_true(back.incarnation == 4000000000u);
	assert_memory_equal(back.key.pub, id.key.pub, NET_KEY);
	assert_memory_equal(back.key.sec, id.key.sec, NET_KEY);
	assert_string_equal(back.listen, "0.0.0.0:7470");
	assert_string_equal(back.advertise, "[::1]:7470");

	/* Saved again (a new incarnation): replaced whole. */
	id.incarnation = 4000000001u;
	assert_int_equal(cl_identity_save(dir, &id, &err), 0);
	assert_int_equal(entries(dir), 1);
	assert_int_equal(cl_identity_load(dir, &back, &err), 0);
	assert_true(back.incarnation == 4000000001u);
}

static void test_identity_missing(void **state)
{
	const char *dir = *state;
	char sub[4096];
	struct cl_identity id;
	struct fl_err err = {""};

	assert_int_equal(cl_identity_load(dir, &id, &err), FL_ENOENT);
	snprintf(sub, sizeof sub, "%s/none", dir);
	assert_int_equal(cl_identity_load(sub, &id, &err), FL_ENOENT);
	/* Saving into a directory that is not there fails, saying where. */
	assert_int_equal(cl_identity_save(sub, &id, &err), FL_EIO);
	assert_non_null(strstr(err.msg, sub));
}

static void test_identity_readable_by_others(void **state)
{
	const char *dir = *state;
	struct cl_identity id;
	struct fl_err err = {""};

	identity_example(&id);
	assert_int_equal(cl_identity_save(dir, &id, &err), 0);
	set_mode(dir, "identity", 0640);
	assert_int_equal(cl_identity_load(dir, &id, &err), FL_EPERM);
	assert_non_null(strstr(err.msg, "chmod 600"));
	assert_non_null(strstr(err.msg, "identity"));
	set_mode(dir, "identity", 0604);
	assert_int_equal(cl_identity_load(dir, &id, &err), FL_EPERM);
	set_mode(dir, "identity", 0400);
	assert_int_equal(cl_identity_load(dir, &id, &err), 0);
}

/* Save the example, apply one edit, expect FL_EFORMAT. */
static void expect_identity_damaged(const char *dir, const char *prefix,
				    const char *line)
{
	struct cl_identity id;
	struct fl_err err = {""};

	identity_example(&id);
	assert_int_equal(cl_identity_save(dir, &id, &err), 0);
	assert_int_equal(cl_identity_load(dir, &id, &err), 0);
	edit_line(dir, "identity", prefix, line);
	if (cl_identity_load(dir, &id, &err) != FL_EFORMAT)
		fail_msg("'%s' -> '%s': not refused as damaged", prefix,
			 line != NULL ? line : "(removed)");
	assert_non_null(strstr(err.msg, "damaged"));
}

static void test_identity_damaged(void **state)
{
	const char *dir = *state;
	static const char *const keys[] = {
	    "vm ", "id ", "incarnation ", "public ", "secret ", "listen ",
	    "advertise ",
	};

	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
		expect_identity_damaged(dir, keys[i], NULL);
	expect_identity_damaged(dir, "public ",
				"public zz00000000000000000000000000000000000"
				"000000000000000000000");
	expect_identity_damaged(dir, "secret ", "secret 0123"); /* short */
	expect_identity_damaged(dir, "secret ",
				"secret 00000000000000000000000000000000000000"
				"000000000000000000000000"); /* 35 bytes */
	expect_identity_damaged(dir, "id ", "id 0");
	expect_identity_damaged(dir, "id ", "id x");
	expect_identity_damaged(dir, "id ", "id 4294967296");
	expect_identity_damaged(dir, "id ", "id -1");
	expect_identity_damaged(dir, "incarnation ", "incarnation 1x");
	expect_identity_damaged(dir, "vm ", "vm Not/AnId");
}

/* ---- The join token ---- */

static void test_token(void **state)
{
	const char *dir = *state;
	char token[NET_TOKEN_TEXT], back[NET_TOKEN_TEXT], path[4096];
	struct fl_err err = {""};

	assert_int_equal(cl_token_load(dir, back, &err), FL_ENOENT);
	net_token_new(token);
	assert_int_equal(cl_token_save(dir, token, &err), 0);
	assert_int_equal(mode_of(dir, "token"), 0600);
	assert_int_equal(entries(dir), 1);
	memset(back, 'x', sizeof back);
	assert_int_equal(cl_token_load(dir, back, &err), 0);
	assert_string_equal(back, token);

	set_mode(dir, "token", 0644);
	assert_int_equal(cl_token_load(dir, back, &err), FL_EPERM);
	assert_non_null(strstr(err.msg, "chmod 600"));

	snprintf(path, sizeof path, "%s/token", dir);
	write_text(path, "not-a-token\n", 0600);
	assert_int_equal(cl_token_load(dir, back, &err), FL_EFORMAT);
	assert_non_null(strstr(err.msg, "not a join token"));
	write_text(path, "", 0600);
	assert_int_equal(cl_token_load(dir, back, &err), FL_EFORMAT);
	/* The right length, a character outside URL-safe base64. */
	snprintf(back, sizeof back, "%s", token);
	back[5] = '*';
	write_text(path, back, 0600);
	assert_int_equal(cl_token_load(dir, back, &err), FL_EFORMAT);
	/* Written by hand, without the newline or with CRLF: still read. */
	write_text(path, token, 0600);
	assert_int_equal(cl_token_load(dir, back, &err), 0);
	assert_string_equal(back, token);
	snprintf(path, sizeof path, "%s/token", dir);
	{
		char crlf[NET_TOKEN_TEXT + 2];
		snprintf(crlf, sizeof crlf, "%s\r\n", token);
		write_text(path, crlf, 0600);
	}
	assert_int_equal(cl_token_load(dir, back, &err), 0);
	assert_string_equal(back, token);
}

/* ---- A client's credentials ---- */

static void cred_example(struct cl_cred *c, const char *vm)
{
	memset(c, 0, sizeof *c);
	snprintf(c->vm, sizeof c->vm, "%s", vm);
	snprintf(c->user, sizeof c->user, "admin");
	net_keypair_new(&c->key);
	randombytes_buf(c->psk, NET_KEY);
	snprintf(c->addr, sizeof c->addr, "127.0.0.1:7470");
}

static void test_cred_round_trip(void **state)
{
	const char *dir = *state;
	char home[4096];
	struct cl_cred c, back;
	struct fl_err err = {""};

	/* The home is made (mode 0700) when not there yet. */
	snprintf(home, sizeof home, "%s/home", dir);
	cred_example(&c, "vm1");
	assert_int_equal(cl_cred_save(home, &c, &err), 0);
	assert_int_equal(mode_of(dir, "home"), 0700);
	assert_int_equal(mode_of(home, "vm1"), 0600);
	assert_int_equal(entries(home), 1);
	assert_int_equal(cl_cred_load(home, "vm1", &back, &err), 0);
	assert_string_equal(back.vm, "vm1");
	assert_string_equal(back.user, "admin");
	assert_memory_equal(back.key.pub, c.key.pub, NET_KEY);
	assert_memory_equal(back.key.sec, c.key.sec, NET_KEY);
	assert_memory_equal(back.psk, c.psk, NET_KEY);
	assert_string_equal(back.addr, "127.0.0.1:7470");
	/* An empty address round-trips too. */
	c.addr[0] = 0;
	assert_int_equal(cl_cred_save(home, &c, &err), 0);
	assert_int_equal(cl_cred_load(home, "vm1", &back, &err), 0);
	assert_string_equal(back.addr, "");
}

static void test_cred_refused(void **state)
{
	const char *dir = *state;
	char from[4096], to[4096];
	struct cl_cred c;
	struct fl_err err = {""};

	assert_int_equal(cl_cred_load(dir, "vm1", &c, &err), FL_ENOENT);
	assert_non_null(strstr(err.msg, "vm1"));
	assert_int_equal(cl_cred_load(dir, "../etc", &c, &err), FL_EINVAL);
	assert_int_equal(cl_cred_load(dir, "..", &c, &err), FL_EINVAL);

	cred_example(&c, "vm1");
	assert_int_equal(cl_cred_save(dir, &c, &err), 0);
	set_mode(dir, "vm1", 0660);
	assert_int_equal(cl_cred_load(dir, "vm1", &c, &err), FL_EPERM);
	assert_non_null(strstr(err.msg, "chmod 600"));
	set_mode(dir, "vm1", 0600);

	/* A file under another VM's name. */
	snprintf(from, sizeof from, "%s/vm1", dir);
	snprintf(to, sizeof to, "%s/vm2", dir);
	assert_int_equal(rename(from, to), 0);
	assert_int_equal(cl_cred_load(dir, "vm2", &c, &err), FL_EFORMAT);

	cred_example(&c, "vm1");
	assert_int_equal(cl_cred_save(dir, &c, &err), 0);
	edit_line(dir, "vm1", "psk ", NULL);
	assert_int_equal(cl_cred_load(dir, "vm1", &c, &err), FL_EFORMAT);
	assert_non_null(strstr(err.msg, "damaged"));
	cred_example(&c, "vm1");
	assert_int_equal(cl_cred_save(dir, &c, &err), 0);
	edit_line(dir, "vm1", "public ", "public 12345");
	assert_int_equal(cl_cred_load(dir, "vm1", &c, &err), FL_EFORMAT);

	/* A bad VM id is not written anywhere. */
	cred_example(&c, "..");
	assert_int_equal(cl_cred_save(dir, &c, &err), FL_EINVAL);
	cred_example(&c, "a/b");
	assert_int_equal(cl_cred_save(dir, &c, &err), FL_EINVAL);
}

static void test_cred_only(void **state)
{
	const char *dir = *state;
	char path[4096];
	struct cl_cred c;
	struct fl_err err = {""};

	snprintf(path, sizeof path, "%s/none", dir);
	assert_int_equal(cl_cred_only(path, &c, &err), FL_ENOENT);
	assert_int_equal(cl_cred_only(dir, &c, &err), FL_ENOENT);
	assert_non_null(strstr(err.msg, "--vm"));

	/* What else FLOCK_HOME holds: the embedded VM's local/, the
	 * default --data machine/, a temporary file, a stray name. */
	snprintf(path, sizeof path, "%s/local", dir);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof path, "%s/machine", dir);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof path, "%s/vm9.tmp.1234", dir);
	write_text(path, "half written", 0600);
	snprintf(path, sizeof path, "%s/README", dir);
	write_text(path, "not a VM id", 0644);
	assert_int_equal(cl_cred_only(dir, &c, &err), FL_ENOENT);

	cred_example(&c, "vm1");
	assert_int_equal(cl_cred_save(dir, &c, &err), 0);
	memset(&c, 0, sizeof c);
	if (cl_cred_only(dir, &c, &err) != 0)
		fail_msg("one credential file: %s", err.msg);
	assert_string_equal(c.vm, "vm1");
	assert_string_equal(c.user, "admin");

	cred_example(&c, "vm2");
	assert_int_equal(cl_cred_save(dir, &c, &err), 0);
	assert_int_equal(cl_cred_only(dir, &c, &err), FL_EEXIST);
	assert_non_null(strstr(err.msg, "several"));
}

/* ---- FLOCK_HOME ---- */

static void test_home(void **state)
{
	const char *fh = getenv("FLOCK_HOME"), *h = getenv("HOME");
	char *saved_fh = fh != NULL ? strdup(fh) : NULL;
	char *saved_h = h != NULL ? strdup(h) : NULL;
	char out[4096];
	struct fl_err err = {""};

	(void)state;
	setenv("FLOCK_HOME", "/srv/flock", 1);
	setenv("HOME", "/home/ann", 1);
	assert_int_equal(cl_home(out, sizeof out, &err), 0);
	assert_string_equal(out, "/srv/flock");
	unsetenv("FLOCK_HOME");
	assert_int_equal(cl_home(out, sizeof out, &err), 0);
	assert_string_equal(out, "/home/ann/.flock");
	setenv("FLOCK_HOME", "", 1);
	assert_int_equal(cl_home(out, sizeof out, &err), 0);
	assert_string_equal(out, "/home/ann/.flock");
	unsetenv("FLOCK_HOME");
	unsetenv("HOME");
	assert_int_equal(cl_home(out, sizeof out, &err), FL_ENOENT);
	assert_non_null(strstr(err.msg, "HOME"));
	setenv("HOME", "", 1);
	assert_int_equal(cl_home(out, sizeof out, &err), FL_ENOENT);

	if (saved_fh != NULL)
		setenv("FLOCK_HOME", saved_fh, 1);
	else
		unsetenv("FLOCK_HOME");
	if (saved_h != NULL)
		setenv("HOME", saved_h, 1);
	else
		unsetenv("HOME");
	free(saved_fh);
	free(saved_h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_vm_id),
	    cmocka_unit_test(test_addr_parse),
	    cmocka_unit_test(test_addr_refused),
	    cmocka_unit_test(test_hostport),
	    cmocka_unit_test_setup_teardown(test_provide_parse, setup_dir,
					    teardown_dir),
	    cmocka_unit_test_setup_teardown(test_provide_default, setup_dir,
					    teardown_dir),
	    cmocka_unit_test_setup_teardown(test_provide_refused, setup_dir,
					    teardown_dir),
	    cmocka_unit_test_setup_teardown(test_identity_round_trip, setup_dir,
					    teardown_dir),
	    cmocka_unit_test_setup_teardown(test_identity_missing, setup_dir,
					    teardown_dir),
	    cmocka_unit_test_setup_teardown(test_identity_readable_by_others,
					    setup_dir, teardown_dir),
	    cmocka_unit_test_setup_teardown(test_identity_damaged, setup_dir,
					    teardown_dir),
	    cmocka_unit_test_setup_teardown(test_token, setup_dir, teardown_dir),
	    cmocka_unit_test_setup_teardown(test_cred_round_trip, setup_dir,
					    teardown_dir),
	    cmocka_unit_test_setup_teardown(test_cred_refused, setup_dir,
					    teardown_dir),
	    cmocka_unit_test_setup_teardown(test_cred_only, setup_dir,
					    teardown_dir),
	    cmocka_unit_test(test_home),
	};

	if (net_crypto_init() != 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
