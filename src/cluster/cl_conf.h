/* What a machine and a client of a Flock VM keep on disk, and the text
 * forms users type: VM addresses (VM_ID@HOST:PORT), resource offers
 * (--provide cpu:N,ram:SIZE|P%,disk:SIZE|P%).
 *
 * Files are small "key value" lines, written whole to a temporary file,
 * fsync'd and renamed, so a crash leaves the old one or the new one:
 *   --data/identity   the machine: VM id, member id, incarnation, its
 *                     static key pair, its listen address
 *   --data/token      the join token (mode 0600)
 *   FLOCK_HOME/vms/VM_ID  a client's credentials for one VM: user name,
 *                     key pair, the clients' pre-shared key, an address
 * Secrets are written with mode 0600 and read back only when the file is
 * not readable by others.
 *
 * Threads: any; no shared state. */
#ifndef FLOCK_CLUSTER_CL_CONF_H
#define FLOCK_CLUSTER_CL_CONF_H

#include <stdbool.h>
#include <stdint.h>

#include "base/fl_error.h"
#include "cluster/ctl.h"
#include "cluster/net_noise.h"

#define CL_DEFAULT_PORT 7470
#define CL_HOST_MAX 253

/* VM_ID@HOST:PORT, HOST a name, an IPv4 address or [IPv6]; without
 * ":PORT", CL_DEFAULT_PORT. */
struct cl_addr {
	char vm[CTL_NAME_MAX + 1];
	char host[CL_HOST_MAX + 1];
	uint16_t port;
};

/* Is @s a VM id: 1-64 of [a-z0-9._-], not "." or ".."? */
bool cl_vm_id_ok(const char *s);
/* Parse "VM_ID@HOST[:PORT]" (@with_vm) or "HOST[:PORT]"; 0, or FL_EINVAL
 * with @err naming what is wrong. */
int cl_addr_parse(const char *s, bool with_vm, struct cl_addr *a,
		  struct fl_err *err);
/* "HOST:PORT" with IPv6 hosts bracketed, into @out (CTL_ADDR_MAX + 1). */
void cl_hostport(const char *host, uint16_t port, char *out, size_t n);

/* What a machine offers the VM. Percentages are resolved against the
 * machine's RAM and the free space of --data's file system. */
struct cl_provide {
	uint32_t cpu;   /* workers */
	uint64_t ram;   /* bytes */
	uint64_t disk;  /* bytes */
};
/* Parse --provide's value; parts left out take the defaults (all cores,
 * 50% of RAM, 50% of the free disk under @data_dir). 0, or FL_EINVAL with
 * @err naming the bad part. */
int cl_provide_parse(const char *s, const char *data_dir,
		     struct cl_provide *p, struct fl_err *err);
/* The defaults alone. */
int cl_provide_default(const char *data_dir, struct cl_provide *p,
		       struct fl_err *err);

struct cl_identity {
	char vm[CTL_NAME_MAX + 1];
	uint32_t id;          /* member id */
	uint32_t incarnation; /* raised at every start */
	struct net_keypair key;
	char listen[CTL_ADDR_MAX + 1];
	char advertise[CTL_ADDR_MAX + 1]; /* what peers dial */
};

int cl_identity_save(const char *dir, const struct cl_identity *id,
		     struct fl_err *err);
/* FL_ENOENT when @dir has no identity (a new machine). */
int cl_identity_load(const char *dir, struct cl_identity *id,
		     struct fl_err *err);

int cl_token_save(const char *dir, const char *token, struct fl_err *err);
int cl_token_load(const char *dir, char token[NET_TOKEN_TEXT],
		  struct fl_err *err);

struct cl_cred {
	char vm[CTL_NAME_MAX + 1];
	char user[CTL_NAME_MAX + 1];
	struct net_keypair key;
	uint8_t psk[NET_KEY]; /* the clients' pre-shared key */
	char addr[CTL_ADDR_MAX + 1]; /* a machine to dial when none is given */
};

/* FLOCK_HOME, or ~/.flock: into @out; FL_ENOENT when neither is known. */
int cl_home(char *out, size_t n, struct fl_err *err);
/* Write @home/VM (making @home, mode 0700, if need be); FL_EINVAL when
 * @c->vm is not a VM id. */
/* Where a client's credentials live: FLOCK_HOME/vms (the @home of the
 * cl_cred_* calls below). */
int cl_cred_dir(char *out, size_t n, struct fl_err *err);
int cl_cred_save(const char *home, const struct cl_cred *c,
		 struct fl_err *err);
int cl_cred_load(const char *home, const char *vm, struct cl_cred *c,
		 struct fl_err *err);
/* The VM a client talks to when neither --vm nor FLOCK_VM names one: the
 * only credentials under @home. FL_ENOENT when there are none, FL_EEXIST
 * when there are several. */
int cl_cred_only(const char *home, struct cl_cred *c, struct fl_err *err);

#endif
