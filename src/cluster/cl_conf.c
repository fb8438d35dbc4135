/* Addresses, resource offers and the small files of machines and clients
 * (cl_conf.h). */
#include "cluster/cl_conf.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <sodium.h>

#include "base/fl_buf.h"

bool cl_vm_id_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > CTL_NAME_MAX)
		return false;
	/* An id names a file under FLOCK_HOME: not "." or "..". */
	if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
		      s[i] == '.' || s[i] == '_' || s[i] == '-'))
			return false;
	return true;
}

static bool host_ok(const char *h)
{
	size_t n = strlen(h);

	if (n == 0 || n > CL_HOST_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(isalnum((unsigned char)h[i]) || h[i] == '.' || h[i] == '-' ||
		      h[i] == ':' || h[i] == '_'))
			return false;
	return true;
}

int cl_addr_parse(const char *s, bool with_vm, struct cl_addr *a,
		  struct fl_err *err)
{
	const char *at = with_vm ? strchr(s, '@') : NULL, *hp = s, *colon;
	size_t hn;
	char *end;

	memset(a, 0, sizeof *a);
	a->port = CL_DEFAULT_PORT;
	if (with_vm) {
		if (at == NULL || (size_t)(at - s) > CTL_NAME_MAX)
			return fl_err_set(err, FL_EINVAL,
					  "'%s' is not an address VM_ID@HOST[:PORT]",
					  s);
		memcpy(a->vm, s, (size_t)(at - s));
		if (!cl_vm_id_ok(a->vm))
			return fl_err_set(err, FL_EINVAL,
					  "'%s': the VM id must be 1-64 of "
					  "[a-z0-9._-]",
					  s);
		hp = at + 1;
	}
	if (hp[0] == '[') { /* [IPv6]:PORT */
		const char *close = strchr(hp, ']');
		if (close == NULL)
			return fl_err_set(err, FL_EINVAL, "'%s': no ']' after an "
							  "IPv6 address", s);
		hn = (size_t)(close - hp - 1);
		colon = close[1] == ':' ? close + 1 : NULL;
		if (close[1] != 0 && colon == NULL)
			return fl_err_set(err, FL_EINVAL,
					  "'%s': expected ':PORT' after ']'", s);
		if (hn > CL_HOST_MAX)
			hn = CL_HOST_MAX + 1;
		else
			memcpy(a->host, hp + 1, hn);
	} else {
		colon = strrchr(hp, ':');
		if (colon != NULL && strchr(hp, ':') != colon) {
			/* a bare IPv6 address: no port */
			colon = NULL;
		}
		hn = colon != NULL ? (size_t)(colon - hp) : strlen(hp);
		if (hn <= CL_HOST_MAX)
			memcpy(a->host, hp, hn);
	}
	if (hn > CL_HOST_MAX || !host_ok(a->host))
		return fl_err_set(err, FL_EINVAL, "'%s': '%.*s' is not a host "
						  "name or address",
				  s, (int)(hn > 64 ? 64 : hn), hp + (hp[0] == '['));
	if (colon != NULL) {
		unsigned long v;
		errno = 0;
		v = strtoul(colon + 1, &end, 10);
		if (colon[1] < '0' || colon[1] > '9' || *end != 0 || errno != 0 ||
		    v == 0 || v > 65535)
			return fl_err_set(err, FL_EINVAL,
					  "'%s': the port must be 1-65535", s);
		a->port = (uint16_t)v;
	}
	return 0;
}

void cl_hostport(const char *host, uint16_t port, char *out, size_t n)
{
	if (strchr(host, ':') != NULL)
		snprintf(out, n, "[%s]:%u", host, port);
	else
		snprintf(out, n, "%s:%u", host, port);
}

/* ---- --provide ---- */

static uint64_t ram_bytes(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGE_SIZE);

	return pages > 0 && size > 0 ? (uint64_t)pages * (uint64_t)size : 0;
}

static uint64_t disk_free(const char *dir)
{
	struct statvfs v;
	char tmp[4096];

	/* --data may not exist yet: its nearest existing parent. */
	snprintf(tmp, sizeof tmp, "%s", dir);
	while (statvfs(tmp, &v) != 0) {
		char *slash = strrchr(tmp, '/');
		if (slash == NULL) {
			snprintf(tmp, sizeof tmp, ".");
			if (statvfs(tmp, &v) != 0)
				return 0;
			break;
		}
		if (slash == tmp)
			slash[1] = 0;
		else
			*slash = 0;
		if (strcmp(tmp, "/") == 0 && statvfs(tmp, &v) != 0)
			return 0;
	}
	return (uint64_t)v.f_bavail * (uint64_t)v.f_frsize;
}

/* A size with a unit (B, KiB, ..., TB) or a percentage of @whole. */
static bool size_or_pct(const char *s, size_t n, uint64_t whole, uint64_t *out)
{
	static const struct {
		const char *unit;
		uint64_t mult;
	} units[] = {
		{"B", 1},
		{"KiB", 1ull << 10}, {"MiB", 1ull << 20},
		{"GiB", 1ull << 30}, {"TiB", 1ull << 40},
		{"KB", 1000ull},  {"MB", 1000000ull},
		{"GB", 1000000000ull}, {"TB", 1000000000000ull},
	};
	char buf[64], *end;
	unsigned long long v;

	if (n == 0 || n >= sizeof buf || s[0] < '0' || s[0] > '9')
		return false;
	memcpy(buf, s, n);
	buf[n] = 0;
	errno = 0;
	v = strtoull(buf, &end, 10);
	if (errno != 0)
		return false;
	if (strcmp(end, "%") == 0) {
		if (v == 0 || v > 100)
			return false;
		*out = (uint64_t)((unsigned __int128)whole * v / 100);
		return true;
	}
	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
		if (strcmp(end, units[i].unit) == 0) {
			if (v == 0 || v > UINT64_MAX / units[i].mult)
				return false;
			*out = v * units[i].mult;
			return true;
		}
	return false;
}

int cl_provide_default(const char *data_dir, struct cl_provide *p,
		       struct fl_err *err)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	p->cpu = ncpu > 0 ? (uint32_t)ncpu : 1;
	p->ram = ram_bytes() / 2;
	p->disk = disk_free(data_dir) / 2;
	if (p->ram == 0)
		return fl_err_set(err, FL_EIO, "cannot tell this machine's RAM");
	return 0;
}

int cl_provide_parse(const char *s, const char *data_dir,
		     struct cl_provide *p, struct fl_err *err)
{
	bool seen[3] = {false, false, false};
	const char *at = s;
	int rc = cl_provide_default(data_dir, p, err);

	if (rc)
		return rc;
	if (*s == 0)
		return fl_err_set(err, FL_EINVAL, "--provide: empty value "
						  "(expected e.g. cpu:2,ram:4GiB,"
						  "disk:10GiB)");
	while (*at != 0) {
		const char *comma = strchr(at, ','), *colon;
		size_t n = comma != NULL ? (size_t)(comma - at) : strlen(at);
		int k;

		if (n == 0)
			return fl_err_set(err, FL_EINVAL,
					  "--provide: '%.*s' has an empty part "
					  "(one ',' too many)",
					  64, s);
		colon = memchr(at, ':', n);
		if (colon == NULL)
			return fl_err_set(err, FL_EINVAL,
					  "--provide: '%.*s' is not KIND:AMOUNT "
					  "(cpu, ram or disk)",
					  (int)(n > 64 ? 64 : n), at);
		size_t kn = (size_t)(colon - at), vn = n - kn - 1;
		const char *v = colon + 1;
		if (kn == 3 && memcmp(at, "cpu", 3) == 0)
			k = 0;
		else if (kn == 3 && memcmp(at, "ram", 3) == 0)
			k = 1;
		else if (kn == 4 && memcmp(at, "disk", 4) == 0)
			k = 2;
		else
			return fl_err_set(err, FL_EINVAL,
					  "--provide: unknown resource '%.*s' "
					  "(expected cpu, ram or disk)",
					  (int)(kn > 64 ? 64 : kn), at);
		if (seen[k])
			return fl_err_set(err, FL_EINVAL,
					  "--provide: '%.*s' given twice",
					  (int)kn, at);
		seen[k] = true;
		if (k == 0) {
			char buf[16], *end;
			unsigned long c;
			if (vn == 0 || vn >= sizeof buf || v[0] < '0' || v[0] > '9')
				c = 0;
			else {
				memcpy(buf, v, vn);
				buf[vn] = 0;
				errno = 0;
				c = strtoul(buf, &end, 10);
				if (*end != 0 || errno != 0)
					c = 0;
			}
			if (c == 0 || c > 1024)
				return fl_err_set(err, FL_EINVAL,
						  "--provide: cpu:%.*s is not a "
						  "count of cores between 1 and "
						  "1024",
						  (int)(vn > 32 ? 32 : vn), v);
			p->cpu = (uint32_t)c;
		} else {
			uint64_t whole = k == 1 ? ram_bytes() : disk_free(data_dir);
			uint64_t *dst = k == 1 ? &p->ram : &p->disk;
			if (!size_or_pct(v, vn, whole, dst))
				return fl_err_set(err, FL_EINVAL,
						  "--provide: %s:%.*s is not a size "
						  "(e.g. 4GiB) or a percentage "
						  "(1%%-100%%)",
						  k == 1 ? "ram" : "disk",
						  (int)(vn > 32 ? 32 : vn), v);
		}
		at += n;
		if (*at == ',') {
			at++;
			if (*at == 0)
				return fl_err_set(err, FL_EINVAL,
						  "--provide: trailing ','");
		}
	}
	return 0;
}

/* ---- Files ---- */

static _Atomic unsigned tmp_seq;

/* Write @text to DIR/NAME whole: a temporary file, fsync, rename, fsync
 * of the directory. */
static int write_atomic(const char *dir, const char *name, const char *text,
			mode_t mode, struct fl_err *err)
{
	char path[4096], tmp[4200];
	size_t n = strlen(text);
	int fd, dfd;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	/* unique per call, so two threads saving at once do not share it */
	snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%u", path, (long)getpid(),
		 atomic_fetch_add(&tmp_seq, 1));
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0)
		return fl_err_set(err, FL_EIO, "%s: %s", tmp, strerror(errno));
	if (fchmod(fd, mode) != 0 || fl_write_all(fd, text, n) != n ||
	    fsync(fd) != 0) {
		int e = errno;
		close(fd);
		unlink(tmp);
		return fl_err_set(err, FL_EIO, "%s: %s", tmp, strerror(e));
	}
	close(fd);
	if (rename(tmp, path) != 0) {
		int e = errno;
		unlink(tmp);
		return fl_err_set(err, FL_EIO, "%s: %s", path, strerror(e));
	}
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}

/* Read DIR/NAME (at most 64 KiB); a secret must not be readable by
 * group or others. */
static int read_small(const char *dir, const char *name, bool secret,
		      char **out, struct fl_err *err)
{
	char path[4096];
	struct stat sb;
	uint8_t *bytes;
	size_t len;
	int rc;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	if (stat(path, &sb) != 0) {
		if (errno == ENOENT)
			return fl_err_set(err, FL_ENOENT, "%s: no such file", path);
		return fl_err_set(err, FL_EIO, "%s: %s", path, strerror(errno));
	}
	if (secret && (sb.st_mode & 077) != 0)
		return fl_err_set(err, FL_EPERM,
				  "%s: holds a secret but others may read it "
				  "(chmod 600 it)",
				  path);
	if (sb.st_size > 65536)
		return fl_err_set(err, FL_EFORMAT, "%s: too large", path);
	rc = fl_read_file(path, &bytes, &len, err);
	if (rc)
		return rc;
	*out = realloc(bytes, len + 1);
	if (*out == NULL) {
		free(bytes);
		return fl_err_set(err, FL_ENOMEM, "out of memory");
	}
	(*out)[len] = 0;
	return 0;
}

/* The value of "KEY VALUE" in @text, into @v (@n bytes): true if there. */
static bool field(const char *text, const char *key, char *v, size_t n)
{
	size_t kn = strlen(key);
	const char *p = text;

	while (p != NULL && *p != 0) {
		const char *eol = strchr(p, '\n');
		size_t ln = eol != NULL ? (size_t)(eol - p) : strlen(p);
		if (ln > kn && memcmp(p, key, kn) == 0 && p[kn] == ' ') {
			size_t vn = ln - kn - 1;
			if (vn >= n)
				return false;
			memcpy(v, p + kn + 1, vn);
			v[vn] = 0;
			return true;
		}
		p = eol != NULL ? eol + 1 : NULL;
	}
	return false;
}

static bool hex_field(const char *text, const char *key, uint8_t *out,
		      size_t n)
{
	char v[256];
	size_t got = 0;

	return field(text, key, v, sizeof v) &&
	       sodium_hex2bin(out, n, v, strlen(v), NULL, &got, NULL) == 0 &&
	       got == n;
}

static void hex(const uint8_t *b, size_t n, char *out)
{
	sodium_bin2hex(out, 2 * n + 1, b, n);
}

int cl_identity_save(const char *dir, const struct cl_identity *id,
		     struct fl_err *err)
{
	char text[2048], pub[65], sec[65];
	int rc;

	hex(id->key.pub, NET_KEY, pub);
	hex(id->key.sec, NET_KEY, sec);
	snprintf(text, sizeof text,
		 "# this machine's identity in its Flock VM; keep it secret\n"
		 "vm %s\nid %" PRIu32 "\nincarnation %" PRIu32
		 "\npublic %s\nsecret %s\nlisten %s\nadvertise %s\n",
		 id->vm, id->id, id->incarnation, pub, sec, id->listen,
		 id->advertise);
	rc = write_atomic(dir, "identity", text, 0600, err);
	sodium_memzero(text, sizeof text);
	sodium_memzero(sec, sizeof sec);
	return rc;
}

static bool u32_field(const char *text, const char *key, uint32_t *out)
{
	char v[32], *end;
	unsigned long long x;

	if (!field(text, key, v, sizeof v) || v[0] < '0' || v[0] > '9')
		return false;
	errno = 0;
	x = strtoull(v, &end, 10);
	if (*end != 0 || errno != 0 || x > UINT32_MAX)
		return false;
	*out = (uint32_t)x;
	return true;
}

int cl_identity_load(const char *dir, struct cl_identity *id,
		     struct fl_err *err)
{
	char *text;
	int rc = read_small(dir, "identity", true, &text, err);
	bool ok;

	if (rc)
		return rc;
	memset(id, 0, sizeof *id);
	ok = field(text, "vm", id->vm, sizeof id->vm) && cl_vm_id_ok(id->vm) &&
	     u32_field(text, "id", &id->id) && id->id != 0 &&
	     u32_field(text, "incarnation", &id->incarnation) &&
	     hex_field(text, "public", id->key.pub, NET_KEY) &&
	     hex_field(text, "secret", id->key.sec, NET_KEY) &&
	     field(text, "listen", id->listen, sizeof id->listen) &&
	     field(text, "advertise", id->advertise, sizeof id->advertise);
	sodium_memzero(text, strlen(text));
	free(text);
	if (!ok)
		return fl_err_set(err, FL_EFORMAT,
				  "%s/identity: damaged (a line is missing or "
				  "malformed)",
				  dir);
	return 0;
}

int cl_token_save(const char *dir, const char *token, struct fl_err *err)
{
	char text[NET_TOKEN_TEXT + 1];

	snprintf(text, sizeof text, "%s\n", token);
	return write_atomic(dir, "token", text, 0600, err);
}

int cl_token_load(const char *dir, char token[NET_TOKEN_TEXT],
		  struct fl_err *err)
{
	uint8_t psk[NET_KEY];
	char *text;
	size_t n;
	int rc = read_small(dir, "token", true, &text, err);

	if (rc)
		return rc;
	n = strcspn(text, "\r\n");
	text[n] = 0;
	if (n != NET_TOKEN_TEXT - 1 || net_token_psk(text, psk) != 0) {
		free(text);
		return fl_err_set(err, FL_EFORMAT, "%s/token: not a join token",
				  dir);
	}
	memcpy(token, text, NET_TOKEN_TEXT);
	sodium_memzero(text, n);
	free(text);
	return 0;
}

int cl_cred_dir(char *out, size_t n, struct fl_err *err)
{
	char home[4000];
	int rc = cl_home(home, sizeof home, err);

	if (rc)
		return rc;
	snprintf(out, n, "%s/vms", home);
	return 0;
}

int cl_home(char *out, size_t n, struct fl_err *err)
{
	const char *h = getenv("FLOCK_HOME");

	if (h != NULL && h[0] != 0) {
		snprintf(out, n, "%s", h);
		return 0;
	}
	h = getenv("HOME");
	if (h == NULL || h[0] == 0)
		return fl_err_set(err, FL_ENOENT,
				  "neither FLOCK_HOME nor HOME is set");
	snprintf(out, n, "%s/.flock", h);
	return 0;
}

int cl_cred_save(const char *home, const struct cl_cred *c,
		 struct fl_err *err)
{
	char text[2048], pub[65], sec[65], psk[65];
	int rc;

	if (!cl_vm_id_ok(c->vm))
		return fl_err_set(err, FL_EINVAL, "'%s' is not a VM id", c->vm);
	{
		/* FLOCK_HOME/vms: its parent first */
		char parent[4096];
		char *slash;
		snprintf(parent, sizeof parent, "%s", home);
		slash = strrchr(parent, '/');
		if (slash != NULL && slash != parent) {
			*slash = 0;
			if (mkdir(parent, 0700) != 0 && errno != EEXIST)
				return fl_err_set(err, FL_EIO, "%s: %s", parent,
						  strerror(errno));
		}
	}
	if (mkdir(home, 0700) != 0 && errno != EEXIST)
		return fl_err_set(err, FL_EIO, "%s: %s", home, strerror(errno));
	hex(c->key.pub, NET_KEY, pub);
	hex(c->key.sec, NET_KEY, sec);
	hex(c->psk, NET_KEY, psk);
	snprintf(text, sizeof text,
		 "# credentials of a client of Flock VM %s; keep them secret\n"
		 "vm %s\nuser %s\npublic %s\nsecret %s\npsk %s\naddr %s\n",
		 c->vm, c->vm, c->user, pub, sec, psk, c->addr);
	rc = write_atomic(home, c->vm, text, 0600, err);
	sodium_memzero(text, sizeof text);
	sodium_memzero(sec, sizeof sec);
	sodium_memzero(psk, sizeof psk);
	return rc;
}

int cl_cred_load(const char *home, const char *vm, struct cl_cred *c,
		 struct fl_err *err)
{
	char *text;
	bool ok;
	int rc;

	if (!cl_vm_id_ok(vm))
		return fl_err_set(err, FL_EINVAL, "'%s' is not a VM id", vm);
	rc = read_small(home, vm, true, &text, err);
	if (rc == FL_ENOENT)
		return fl_err_set(err, FL_ENOENT,
				  "no credentials for VM %s in %s (the machine "
				  "that ran `flock new` has them)",
				  vm, home);
	if (rc)
		return rc;
	memset(c, 0, sizeof *c);
	ok = field(text, "vm", c->vm, sizeof c->vm) && strcmp(c->vm, vm) == 0 &&
	     field(text, "user", c->user, sizeof c->user) &&
	     hex_field(text, "public", c->key.pub, NET_KEY) &&
	     hex_field(text, "secret", c->key.sec, NET_KEY) &&
	     hex_field(text, "psk", c->psk, NET_KEY) &&
	     field(text, "addr", c->addr, sizeof c->addr);
	sodium_memzero(text, strlen(text));
	free(text);
	if (!ok)
		return fl_err_set(err, FL_EFORMAT, "%s/%s: damaged credentials",
				  home, vm);
	return 0;
}

int cl_cred_only(const char *home, struct cl_cred *c, struct fl_err *err)
{
	DIR *d = opendir(home);
	struct dirent *e;
	char found[CTL_NAME_MAX + 1] = "";
	int n = 0;

	if (d == NULL)
		return fl_err_set(err, FL_ENOENT,
				  "no VM named (--vm or FLOCK_VM) and no "
				  "credentials in %s",
				  home);
	while ((e = readdir(d)) != NULL) {
		struct stat sb;
		/* FLOCK_HOME also holds directories (the default --data
		 * machine/, the embedded VM's local/) and temporary files. */
		if (!cl_vm_id_ok(e->d_name) || strcmp(e->d_name, "local") == 0 ||
		    strstr(e->d_name, ".tmp.") != NULL ||
		    fstatat(dirfd(d), e->d_name, &sb, 0) != 0 ||
		    !S_ISREG(sb.st_mode))
			continue;
		if (n++ == 0)
			memcpy(found, e->d_name, strlen(e->d_name) + 1);
	}
	closedir(d);
	if (n == 0)
		return fl_err_set(err, FL_ENOENT,
				  "no VM named (--vm or FLOCK_VM) and no "
				  "credentials in %s",
				  home);
	if (n > 1)
		return fl_err_set(err, FL_EEXIST,
				  "%s holds credentials for several VMs: name "
				  "one with --vm or FLOCK_VM",
				  home);
	return cl_cred_load(home, found, c, err);
}
