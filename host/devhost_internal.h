/* SPDX-License-Identifier: MIT */
/*
 * uvhost: what the vhost-user device host's files share: struct uvh_devhost,
 * small helpers, and the functions one file calls in another
 * (devhost.c: features, session, public API and the handler table;
 * devhost_rings.c: engines and rings; devhost_mem.c: memory
 * and dirty log; devhost_state.c: device state and inflight area).
 * Locking: see devhost.c. Not installed.
 */
#ifndef UVHOST_DEVHOST_INTERNAL_H
#define UVHOST_DEVHOST_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include "util.h"
#include "log.h"
#include "memory.h"
#include "devhost.h"

/* Internal to the library: kept out of its dynamic symbol table. */
#define UVH__DEVHOST_INTERNAL	__attribute__((visibility("hidden")))

#define MAX_ENGINES	64u

/*
 * Who owns what. "control" is the thread handling the connection's
 * requests, always under v->lock (uvh_devhost_handle()'s caller, or the
 * watching engine inside on_msg). "engine" is the thread of the engine
 * serving a ring. A field is written by its owner only; what another
 * thread reads is named with its ordering:
 *  - a running ring's state (struct uvh_devhost_queue: vq, eq, enabled,
 *    running) changes only on its engine, through uvh_engine_call(): the
 *    control thread waits for the completion, whose release/acquire pair
 *    (dispatcher.h) orders both ways, so the next request sees the change
 *    and the engine applied every earlier one, in message order;
 *  - what engines read of the session (mem, log, chan) is replaced by
 *    publishing the new object, letting every engine serving a running
 *    ring finish the burst it is in (uvh__devhost_quiesce() or a per-ring
 *    switch), and only then freeing the old one.
 */
struct uvh_devhost {
	/* fixed from uvh_devhost_new() to uvh_devhost_free() */
	char *name;
	const struct uvh_devhost_device_ops *ops;
	void *dev;
	struct uvh_engine *engines[MAX_ENGINES];
	unsigned int nengines;
	bool strict_order;
	uint32_t nq;
	struct uvh_devhost_queue *qs;

	pthread_mutex_t lock;		/* every control-path entry */
	struct uvh_backend_req *req;	/* control; NULL when not connected (relaxed reads
					 * by uvh_devhost_connected/uvh_devhost_fd) */
	bool local;			/* control: in-process session (uvh_devhost_connect_local) */

	/* watched connection (control, under lock) */
	struct uvh_engine_watch watch;
	struct uvh_engine *watcher;
	void (*on_disconnect)(struct uvh_devhost *v, int err, void *opaque);
	void *on_disconnect_opaque;

	/* session: control. Engines never read features; they get a ring's
	 * view at its start (uvh_vq_config) and LOG_ALL through the log. */
	uint64_t features;
	uint64_t protocol_features;	/* engines: relaxed load (IOTLB misses) */
	uint8_t status;			/* relaxed atomics (uvh_devhost_status) */
	struct uvh_memory *mem;		/* rings switch between bursts, then freed */
	struct uvh_dirty_log *log;	/* rings switch between bursts, then freed */
	int log_fd;
	void *inflight_base;		/* mapped while no ring runs only */
	size_t inflight_size;
	uint16_t inflight_nq, inflight_qs;
	bool inflight_packed;
	struct uvh_iotlb_cache *iotlb;	/* seqlock inside (iotlb.c) */
	/* engines: acquire load (IOTLB misses); replaced with a release
	 * store, the old one freed after uvh__devhost_quiesce() */
	struct uvh_backend_chan *chan;
	/* DEVICE_STATE: the transfer in progress, and the last verdict */
	struct uvh_state_xfer *xfer;
	uint32_t xfer_dir;
	int xfer_result;

	/* counters (relaxed atomics: read from other threads) */
	uint64_t connections, requests, mem_updates, queue_starts, queue_errors;
	uint32_t mem_regions;
	uint64_t mem_bytes;
};

static inline void stat_add(uint64_t *c, uint64_t n)
{
	__atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

static inline bool log_all(const struct uvh_devhost *v)
{
	return v->features & UVH_BIT(UVH_F_LOG_ALL);
}

/* ---- devhost_rings.c ----------------------------------------------------- */

/* Run @fn on every running ring, on the thread of the engine serving it;
 * when this returns every engine has done so. */
UVH__DEVHOST_INTERNAL void uvh__devhost_for_each_running(struct uvh_devhost *v,
						 void (*fn)(struct uvh_devhost_queue *q, void *arg),
						 void *arg);
UVH__DEVHOST_INTERNAL bool uvh__devhost_any_running(const struct uvh_devhost *v);
/* When this returns, every engine serving a running ring has finished the
 * burst it was in: what it read of an object the control thread just
 * replaced, it reads no more (a grace period, as RCU has). */
UVH__DEVHOST_INTERNAL void uvh__devhost_quiesce(struct uvh_devhost *v);
/* Stop every running ring, remembering where each stopped. */
UVH__DEVHOST_INTERNAL void uvh__devhost_stop_all(struct uvh_devhost *v);
/* Forget a ring's session state (closing its fds). */
UVH__DEVHOST_INTERNAL void uvh__devhost_queue_clear(struct uvh_devhost_queue *q);
/* [engine] Enable (@arg not NULL) or disable a running ring. */
UVH__DEVHOST_INTERNAL void uvh__devhost_set_enabled_on_queue(struct uvh_devhost_queue *q, void *arg);
UVH__DEVHOST_INTERNAL int uvh__devhost_h_set_vring_num(void *dev, uint32_t index, uint32_t num);
UVH__DEVHOST_INTERNAL int uvh__devhost_h_set_vring_addr(void *dev, const struct uvh_vring_addr *addr);
UVH__DEVHOST_INTERNAL int uvh__devhost_h_set_vring_base(void *dev, uint32_t index, uint32_t base);
UVH__DEVHOST_INTERNAL int uvh__devhost_h_get_vring_base(void *dev, uint32_t index, uint32_t *base);
UVH__DEVHOST_INTERNAL int uvh__devhost_h_set_vring_kick(void *dev, uint32_t index, int fd);
UVH__DEVHOST_INTERNAL int uvh__devhost_h_set_vring_call(void *dev, uint32_t index, int fd);
UVH__DEVHOST_INTERNAL int uvh__devhost_h_set_vring_err(void *dev, uint32_t index, int fd);
UVH__DEVHOST_INTERNAL int uvh__devhost_h_set_vring_enable(void *dev, uint32_t index, bool enable);

/* ---- devhost_mem.c ------------------------------------------------------- */

/* Drop the memory table; only once no ring runs. */
UVH__DEVHOST_INTERNAL void uvh__devhost_drop_memory(struct uvh_devhost *v);
UVH__DEVHOST_INTERNAL int uvh__devhost_h_set_mem_table(void *dev, const struct uvh_mem_region *regions,
					       const int *fds, unsigned int n);
UVH__DEVHOST_INTERNAL int uvh__devhost_h_add_mem_reg(void *dev, const struct uvh_mem_region *region,
					     int fd);
UVH__DEVHOST_INTERNAL int uvh__devhost_h_rem_mem_reg(void *dev, const struct uvh_mem_region *region);
UVH__DEVHOST_INTERNAL int uvh__devhost_h_get_max_mem_slots(void *dev, uint64_t *slots);
/* [engine] Point a running ring at the dirty log @arg (NULL: none). */
UVH__DEVHOST_INTERNAL void uvh__devhost_set_log_on_queue(struct uvh_devhost_queue *q, void *arg);
UVH__DEVHOST_INTERNAL int uvh__devhost_h_set_log_base(void *dev, const struct uvh_dirty_log_area *log, int fd);
UVH__DEVHOST_INTERNAL int uvh__devhost_h_set_log_fd(void *dev, int fd);
/* Tell the front-end the log is up to date (the log fd, under LOG_ALL). */
UVH__DEVHOST_INTERNAL void uvh__devhost_log_kick(struct uvh_devhost *v);
/* Drop the log area and the log fd. */
UVH__DEVHOST_INTERNAL void uvh__devhost_drop_log(struct uvh_devhost *v);

/* ---- devhost_state.c ----------------------------------------------------- */

/* Drop the device state transfer in progress, if any. */
UVH__DEVHOST_INTERNAL void uvh__devhost_xfer_drop(struct uvh_devhost *v);
UVH__DEVHOST_INTERNAL int uvh__devhost_h_set_device_state_fd(void *dev, uint32_t direction,
						     uint32_t phase, int fd, int *out_fd);
UVH__DEVHOST_INTERNAL int uvh__devhost_h_check_device_state(void *dev);
/* Unmap the inflight area, if any. */
UVH__DEVHOST_INTERNAL void uvh__devhost_drop_inflight(struct uvh_devhost *v);
UVH__DEVHOST_INTERNAL int uvh__devhost_h_get_inflight_fd(void *dev, const struct uvh_inflight *in,
						 struct uvh_inflight *out, int *fdp);
UVH__DEVHOST_INTERNAL int uvh__devhost_h_set_inflight_fd(void *dev, const struct uvh_inflight *in, int fd);

#endif
