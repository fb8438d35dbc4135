/* The daemon of a machine of a Flock VM (flock new, flock join): one
 * process whose libuv loop thread owns every socket, Raft and the timers,
 * and whose node runtime (vm.h) runs the VM's threads on its workers; the
 * two meet through queues and uv_async_send. docs/cluster.md describes
 * what it does; dm_int.h how. */
#ifndef FLOCK_CLUSTER_DM_H
#define FLOCK_CLUSTER_DM_H

#include <stdbool.h>
#include <stdint.h>

#include "cluster/cl_conf.h"

struct dm_config {
	const char *data;     /* --data: the machine's directory (exists) */
	bool create;          /* flock new: a new VM */
	bool join;            /* flock join: a machine new to the VM */
	char vm[CTL_NAME_MAX + 1];
	char listen[CTL_ADDR_MAX + 1];   /* HOST:PORT to bind */
	char advertise[CTL_ADDR_MAX + 1]; /* HOST:PORT peers dial */
	struct cl_addr contact; /* join: a machine of the VM */
	char token[NET_TOKEN_TEXT];     /* new: made; join: given */
	struct cl_provide provide;
	bool provide_given; /* restart: the offer changes only when given */
	/* Once it serves (or failed to): a line for the starter on
	 * @ready_fd ("ok ...\n" or "error MESSAGE\n"), then it is closed;
	 * -1: none. */
	int ready_fd;
	/* Or, when set, this is called instead (flock new --foreground). */
	void (*ready)(const struct dm_config *cfg, const char *addr,
		      uint32_t id, const char *err);
	const char *home; /* flock new: where the admin's credentials go */
	unsigned snapshot_every; /* test aid: a Raft snapshot every N entries
				    (0: 1024) */
	/* --lost-after: ms without a frame before a machine is declared lost
	 * (this machine's rule while it leads); 0: DM_LOST_AFTER_MS. */
	uint64_t lost_after_ms;
};

/* Run the daemon until SIGTERM/SIGINT or `flock leave`: 0, or an exit
 * status after a line on stderr saying why it could not start or went
 * down. */
int dm_run(const struct dm_config *cfg);

#endif
