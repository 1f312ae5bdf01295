/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the vhost-user device host. See vhost_user_dev.h.
 *
 * Locking: v->lock serialises every control-path entry (a request being
 * handled, connect, disconnect, the end of a watched connection). The
 * data path never takes it: what an engine reads of a running ring (its
 * uvh_vq, fds, enabled) is changed only on that engine's thread, through
 * uvh_engine_call().
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend_chan.h"
#include "backend_req.h"
#include "inflight.h"
#include "log.h"
#include "memory.h"
#include "state_xfer.h"
#include "vhost_user_dev.h"

#define BIT(n)		(1ull << (n))
#define MAX_ENGINES	64u

/* Protocol features the vud implements itself. */
#define VUD_PROTOCOL_FEATURES ( \
	BIT(UVH_PROTOCOL_F_LOG_SHMFD) | \
	BIT(UVH_PROTOCOL_F_REPLY_ACK) | \
	BIT(UVH_PROTOCOL_F_BACKEND_REQ) | \
	BIT(UVH_PROTOCOL_F_BACKEND_SEND_FD) | \
	BIT(UVH_PROTOCOL_F_INFLIGHT_SHMFD) | \
	BIT(UVH_PROTOCOL_F_RESET_DEVICE) | \
	BIT(UVH_PROTOCOL_F_CONFIGURE_MEM_SLOTS) | \
	BIT(UVH_PROTOCOL_F_STATUS))

struct uvh_vud {
	char *name;
	const struct uvh_vud_device_ops *ops;
	void *dev;
	struct uvh_engine *engines[MAX_ENGINES];
	unsigned int nengines;
	bool strict_order;
	uint32_t nq;
	struct uvh_vud_queue *qs;

	pthread_mutex_t lock;
	struct uvh_backend_req *req;	/* NULL when not connected */
	bool local;			/* in-process session (uvh_vud_connect_local) */

	/* watched connection */
	struct uvh_engine_watch watch;
	struct uvh_engine *watcher;
	void (*on_disconnect)(struct uvh_vud *v, int err, void *opaque);
	void *on_disconnect_opaque;

	/* session */
	uint64_t features;
	uint64_t protocol_features;
	uint8_t status;
	struct uvh_memory *mem;
	struct uvh_dirty_log *log;
	int log_fd;
	void *inflight_base;
	size_t inflight_size;
	uint16_t inflight_nq, inflight_qs;
	bool inflight_packed;
	struct uvh_iotlb_cache *iotlb;
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

static void stat_add(uint64_t *c, uint64_t n)
{
	__atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static bool log_all(const struct uvh_vud *v)
{
	return v->features & BIT(UVH_F_LOG_ALL);
}

/* ---- running things on the engines ------------------------------------------ */

/* uvh_engine_call, retried while the inbox stays full: the control path
 * must not give up on a change the engines have to see (a memory table
 * released too early would be a use after unmap). */
static int engine_call(struct uvh_engine *e, uvh_dispatch_call_fn fn, void *arg)
{
	int ret;

	while ((ret = uvh_engine_call(e, fn, arg)) == -ENOBUFS)
		UVH_WARN("engine %s: inbox full, retrying", uvh_engine_name(e));
	return ret;
}

struct apply_ctx {
	struct uvh_vud *v;
	struct uvh_engine *e;
	void (*fn)(struct uvh_vud_queue *q, void *arg);
	void *arg;
};

static int apply_on_engine(void *engine_ctx, void *arg)
{
	struct apply_ctx *a = arg;

	(void)engine_ctx;
	for (uint32_t i = 0; i < a->v->nq; i++) {
		struct uvh_vud_queue *q = &a->v->qs[i];

		if (q->running && q->engine == a->e)
			a->fn(q, a->arg);
	}
	return 0;
}

/* Run @fn on every running ring, on the thread of the engine serving it;
 * when this returns every engine has done so. */
static void for_each_running(struct uvh_vud *v, void (*fn)(struct uvh_vud_queue *q, void *arg),
			     void *arg)
{
	for (unsigned int k = 0; k < v->nengines; k++) {
		struct apply_ctx a = { .v = v, .e = v->engines[k], .fn = fn, .arg = arg };
		bool dup = false, busy = false;

		for (unsigned int j = 0; j < k; j++)
			dup |= v->engines[j] == a.e;
		for (uint32_t i = 0; !dup && i < v->nq; i++)
			busy |= v->qs[i].running && v->qs[i].engine == a.e;
		if (!dup && busy)
			engine_call(a.e, apply_on_engine, &a);
	}
}

static bool any_running(const struct uvh_vud *v)
{
	for (uint32_t i = 0; i < v->nq; i++)
		if (v->qs[i].running)
			return true;
	return false;
}

/* ---- rings -------------------------------------------------------------------- */

static void on_queue_error(struct uvh_engine_queue *eq, enum uvh_vq_error err)
{
	struct uvh_vud_queue *q = uvh_vud_queue_of(eq);
	struct uvh_vud *v = q->vud;

	stat_add(&v->queue_errors, 1);
	UVH_ERR("%s: vring %u broken: %s", v->name, q->index, uvh_vq_strerror(err));
	if (v->ops->queue_error)
		v->ops->queue_error(v->dev, q, err);
}

static int start_on_engine(void *engine_ctx, void *arg)
{
	struct uvh_vud_queue *q = arg;
	struct uvh_vud *v = q->vud;
	int ret;

	(void)engine_ctx;
	ret = v->ops->queue_start(v->dev, q);
	if (ret)
		return ret < 0 ? ret : -EIO;
	q->running = true;
	ret = uvh_engine_add_queue(q->engine, &q->eq);
	if (ret) {
		q->running = false;
		if (v->ops->queue_stop)
			v->ops->queue_stop(v->dev, q);
	}
	return ret;
}

static int stop_on_engine(void *engine_ctx, void *arg)
{
	struct uvh_vud_queue *q = arg;
	struct uvh_vud *v = q->vud;
	int ret;

	(void)engine_ctx;
	ret = uvh_engine_remove_queue(q->engine, &q->eq);
	if (ret)
		UVH_WARN("%s: vring %u was not attached: %s", v->name, q->index, strerror(-ret));
	q->running = false;
	if (v->ops->queue_stop)
		v->ops->queue_stop(v->dev, q);
	return 0;
}

static void inflight_drop(struct uvh_vud_queue *q)
{
	struct uvh_inflight_vq *ifq = q->inflight;

	if (!ifq)
		return;
	uvh_inflight_vq_fini(ifq);
	free(ifq);
	q->inflight = NULL;
	q->vq.inflight = NULL;
}

/* Packed base: bits 0-14 avail index, 15 avail wrap; bits 16-30 used index
 * and 31 used wrap as DPDK sends them. QEMU sends the low half only: then
 * the used side equals the avail side (nothing in flight). */
static void base_to_cfg(uint32_t base, bool packed, struct uvh_vq_config *cfg)
{
	if (!packed) {
		cfg->next_avail = (uint16_t)base;
		return;
	}
	cfg->next_avail = base & 0x7fff;
	cfg->avail_wrap = base & 0x8000;
	if (base >> 16) {
		cfg->next_used = (base >> 16) & 0x7fff;
		cfg->used_wrap = base & 0x80000000u;
	} else {
		cfg->next_used = cfg->next_avail;
		cfg->used_wrap = cfg->avail_wrap;
	}
}

/*
 * [engine] A ring's IOTLB miss or access failure: tell the front-end
 * through the back-end channel (BACKEND_IOTLB_MSG). Without the channel
 * nobody can answer a miss: the ring then idles until an update comes
 * on its own.
 */
static void vud_iotlb_event(void *opaque, struct uvh_vq *vq, uint64_t iova, uint8_t perm,
			    uint8_t type)
{
	struct uvh_vud_queue *q = opaque;
	struct uvh_vud *v = q->vud;
	struct uvh_iotlb msg = { .iova = iova, .perm = perm, .type = type };
	int ret;

	(void)vq;
	if (!v->chan || !(v->protocol_features & BIT(UVH_PROTOCOL_F_BACKEND_REQ))) {
		UVH_WARN("%s: vring %u: IOTLB %s at 0x%" PRIx64 " and no back-end channel",
			 v->name, q->index, type == UVH_IOTLB_MISS ? "miss" : "access failure",
			 iova);
		return;
	}
	ret = uvh_backend_chan_iotlb_msg(v->chan, &msg);
	if (ret < 0)
		UVH_WARN("%s: vring %u: IOTLB message for 0x%" PRIx64 " not sent: %s",
			 v->name, q->index, iova, strerror(-ret));
}

static int queue_start(struct uvh_vud *v, struct uvh_vud_queue *q)
{
	bool packed = v->features & BIT(UVH_VIRTIO_F_RING_PACKED);
	struct uvh_vq_config cfg = { 0 };
	struct uvh_inflight_vq *ifq;
	int ret;

	if (!v->mem || !v->mem->nregions) {
		UVH_ERR("%s: vring %u started without a memory table", v->name, q->index);
		return -EINVAL;
	}
	if (!q->num || !q->have_addr) {
		UVH_ERR("%s: vring %u started without %s", v->name, q->index,
			q->num ? "SET_VRING_ADDR" : "SET_VRING_NUM");
		return -EINVAL;
	}
	if (q->num > UVH_VRING_MAX_SIZE || (!packed && (q->num & (q->num - 1)))) {
		UVH_ERR("%s: vring %u size %u is invalid for a %s ring", v->name, q->index,
			q->num, packed ? "packed" : "split");
		return -EINVAL;
	}
	cfg.size = (uint16_t)q->num;
	cfg.packed = packed;
	cfg.event_idx = v->features & BIT(UVH_VIRTIO_F_RING_EVENT_IDX);
	cfg.indirect = v->features & BIT(UVH_VIRTIO_F_RING_INDIRECT_DESC);
	cfg.in_order = v->features & BIT(UVH_VIRTIO_F_IN_ORDER);
	cfg.strict_order = v->strict_order;
	cfg.device_reads_only = v->ops->queue_device_reads_only &&
				v->ops->queue_device_reads_only(v->dev, q->index);
	if (v->features & BIT(UVH_VIRTIO_F_IOMMU_PLATFORM)) {
		/* SET_VRING_ADDR holds IOVAs: the ring translates them (and
		 * every descriptor address) through the IOTLB; areas not
		 * cached yet are asked for and the ring idles until then */
		if (!v->iotlb)
			v->iotlb = uvh_iotlb_new(0);
		if (!v->iotlb)
			return -ENOMEM;
		cfg.desc_gpa = q->addr.desc_user_addr;
		cfg.driver_gpa = q->addr.avail_user_addr;
		cfg.device_gpa = q->addr.used_user_addr;
		cfg.iotlb = v->iotlb;
		cfg.iotlb_miss = vud_iotlb_event;
		cfg.iotlb_opaque = q;
	} else if (v->local) {
		/* in-process: the VMM gave guest-physical addresses */
		cfg.desc_gpa = q->addr.desc_user_addr;
		cfg.driver_gpa = q->addr.avail_user_addr;
		cfg.device_gpa = q->addr.used_user_addr;
	} else if (!uvh_memory_uva_to_gpa(v->mem, q->addr.desc_user_addr, &cfg.desc_gpa) ||
	    !uvh_memory_uva_to_gpa(v->mem, q->addr.avail_user_addr, &cfg.driver_gpa) ||
	    !uvh_memory_uva_to_gpa(v->mem, q->addr.used_user_addr, &cfg.device_gpa)) {
		UVH_ERR("%s: vring %u addresses are not in guest memory", v->name, q->index);
		return -EFAULT;
	}
	base_to_cfg(q->base, packed, &cfg);
	cfg.log_used = q->addr.flags & UVH_VRING_F_LOG;
	cfg.log_used_gpa = q->addr.log_guest_addr;
	ret = uvh_vq_init(&q->vq, &cfg, v->mem);
	if (ret) {
		UVH_ERR("%s: vring %u cannot be set up: %s", v->name, q->index, strerror(-ret));
		return ret;
	}
	if (log_all(v) && v->log)
		uvh_vq_set_log(&q->vq, v->log);

	if (v->inflight_base && q->index < v->inflight_nq && q->num == v->inflight_qs &&
	    packed == v->inflight_packed) {
		ifq = calloc(1, sizeof(*ifq));
		if (!ifq)
			return -ENOMEM;
		ret = uvh_inflight_vq_init(ifq, uvh_inflight_queue(v->inflight_base, (uint16_t)q->index,
								   v->inflight_qs, packed),
					   (uint16_t)q->num, packed);
		if (!ret) {
			q->inflight = ifq;
			ret = uvh_inflight_vq_start(ifq, &q->vq);
			if (ret > 0)
				UVH_INFO("%s: vring %u resubmits %d chains", v->name, q->index, ret);
			else if (ret == -EINVAL)
				UVH_WARN("%s: vring %u inflight region was corrupt: reset",
					 v->name, q->index);
			if (ret == -ENOMEM) {
				inflight_drop(q);
				return ret;
			}
		} else {
			free(ifq);
			UVH_WARN("%s: vring %u inflight region refused (%s): not tracked",
				 v->name, q->index, strerror(-ret));
		}
	}

	memset(&q->eq, 0, sizeof(q->eq));
	q->eq.vq = &q->vq;
	q->eq.kick_fd = q->kick_fd;
	q->eq.call_fd = q->call_fd;
	q->eq.err_fd = q->err_fd;
	q->eq.process = v->ops->process;
	q->eq.on_error = on_queue_error;
	q->eq.opaque = q;
	q->eq.kick_slot = -1;
	ret = engine_call(q->engine, start_on_engine, q);
	if (ret) {
		UVH_ERR("%s: vring %u cannot start: %s", v->name, q->index, strerror(-ret));
		inflight_drop(q);
		return ret;
	}
	q->starts++;
	stat_add(&v->queue_starts, 1);
	UVH_DEBUG("%s: vring %u started on %s (size %u, base 0x%x)", v->name, q->index,
		  uvh_engine_name(q->engine), q->num, q->base);
	return 0;
}

/* Stop a running ring and remember where it stopped. */
static void queue_stop(struct uvh_vud *v, struct uvh_vud_queue *q)
{
	if (!q->running)
		return;
	engine_call(q->engine, stop_on_engine, q);
	q->base = uvh_vq_base(&q->vq);
	inflight_drop(q);
	UVH_DEBUG("%s: vring %u stopped at 0x%x", v->name, q->index, q->base);
}

static void stop_all(struct uvh_vud *v)
{
	for (uint32_t i = 0; i < v->nq; i++)
		queue_stop(v, &v->qs[i]);
}

/* Forget a ring's session state (closing its fds). */
static void queue_clear(struct uvh_vud_queue *q)
{
	close_fd(&q->kick_fd);
	close_fd(&q->call_fd);
	close_fd(&q->err_fd);
	q->num = 0;
	q->base = 0;
	q->have_addr = false;
	memset(&q->addr, 0, sizeof(q->addr));
	q->enabled = false;
	q->priv = NULL;
	memset(&q->vq, 0, sizeof(q->vq));
}

/* ---- memory --------------------------------------------------------------------- */

static void set_mem_on_queue(struct uvh_vud_queue *q, void *arg)
{
	if (uvh_vq_set_memory(&q->vq, arg))
		UVH_ERR("%s: vring %u is not in the new memory table", q->vud->name, q->index);
}

/* Put @mem in force: every engine switches its rings, then the old table
 * goes (and its mappings that @mem does not share). */
static void publish_memory(struct uvh_vud *v, struct uvh_memory *mem)
{
	struct uvh_memory *old = v->mem;
	uint64_t bytes = 0;

	for_each_running(v, set_mem_on_queue, mem);
	v->mem = mem;
	if (old)
		uvh_memory_release(old, mem);
	for (uint32_t i = 0; i < mem->nregions; i++)
		bytes += mem->regions[i].size;
	__atomic_store_n(&v->mem_regions, mem->nregions, __ATOMIC_RELAXED);
	__atomic_store_n(&v->mem_bytes, bytes, __ATOMIC_RELAXED);
	stat_add(&v->mem_updates, 1);
}

static void drop_memory(struct uvh_vud *v)
{
	/* Only once no ring runs: nothing reads the table any more. */
	if (v->mem)
		uvh_memory_release(v->mem, NULL);
	v->mem = NULL;
	__atomic_store_n(&v->mem_regions, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&v->mem_bytes, 0, __ATOMIC_RELAXED);
}

static int h_set_mem_table(void *dev, const struct uvh_mem_region *regions, const int *fds,
			   unsigned int n)
{
	struct uvh_vud *v = dev;
	struct uvh_memory *mem;
	unsigned int i;
	int ret = 0;

	mem = uvh_memory_new(0);
	if (!mem) {
		ret = -errno;
		i = 0;
		goto close_rest;
	}
	for (i = 0; i < n; i++) {
		ret = uvh_memory_add_fd(mem, &regions[i], fds[i]);	/* consumes fds[i] */
		if (ret) {
			UVH_ERR("%s: memory region %u (gpa 0x%" PRIx64 " size 0x%" PRIx64
				") refused: %s", v->name, i, regions[i].guest_phys_addr,
				regions[i].memory_size, strerror(-ret));
			i++;
			goto close_rest;
		}
	}
	publish_memory(v, mem);
	return 0;

close_rest:
	for (; i < n; i++)
		close(fds[i]);
	if (mem)
		uvh_memory_release(mem, NULL);
	return ret;
}

static int h_add_mem_reg(void *dev, const struct uvh_mem_region *region, int fd)
{
	struct uvh_vud *v = dev;
	struct uvh_memory *mem;
	int ret;

	mem = v->mem ? uvh_memory_copy(v->mem) : uvh_memory_new(0);
	if (!mem) {
		close(fd);
		return -ENOMEM;
	}
	ret = uvh_memory_add_fd(mem, region, fd);
	if (ret) {
		UVH_ERR("%s: ADD_MEM_REG gpa 0x%" PRIx64 " refused: %s", v->name,
			region->guest_phys_addr, strerror(-ret));
		uvh_memory_release(mem, v->mem);	/* only its own mappings */
		return ret;
	}
	publish_memory(v, mem);
	return 0;
}

static int h_rem_mem_reg(void *dev, const struct uvh_mem_region *region)
{
	struct uvh_vud *v = dev;
	struct uvh_memory *mem;
	int ret;

	if (!v->mem)
		return -ENOENT;
	mem = uvh_memory_copy(v->mem);
	if (!mem)
		return -ENOMEM;
	ret = uvh_memory_remove(mem, region);
	if (ret) {
		uvh_memory_release(mem, v->mem);
		return ret;
	}
	publish_memory(v, mem);
	return 0;
}

static int h_get_max_mem_slots(void *dev, uint64_t *slots)
{
	(void)dev;
	*slots = UVH_MAX_MEM_SLOTS;
	return 0;
}

/* ---- dirty log ------------------------------------------------------------------- */

static void set_log_on_queue(struct uvh_vud_queue *q, void *arg)
{
	uvh_vq_set_log(&q->vq, arg);
}

static int h_set_log_base(void *dev, const struct uvh_log *log, int fd)
{
	struct uvh_vud *v = dev;
	struct uvh_dirty_log *nl, *old = v->log;
	int ret;

	if (fd < 0)
		return -EBADF;	/* LOG_SHMFD is always offered: no fd, no log */
	nl = calloc(1, sizeof(*nl));
	if (!nl) {
		close(fd);
		return -ENOMEM;
	}
	ret = uvh_dirty_log_map(nl, fd, log->mmap_size, log->mmap_offset);
	if (ret) {
		UVH_ERR("%s: log area refused: %s", v->name, strerror(-ret));
		free(nl);
		return ret;
	}
	uvh_dirty_log_set_kick(nl, v->log_fd);
	if (log_all(v))
		for_each_running(v, set_log_on_queue, nl);
	v->log = nl;
	if (old) {
		uvh_dirty_log_unmap(old);
		free(old);
	}
	return 0;
}

static void no_op_on_queue(struct uvh_vud_queue *q, void *arg)
{
	(void)q;
	(void)arg;
}

static int h_set_log_fd(void *dev, int fd)
{
	struct uvh_vud *v = dev;
	int old = v->log_fd;

	v->log_fd = fd;
	if (v->log) {
		/* engines kick the new fd from their next push; the old one
		 * is closed only once none can be writing it */
		uvh_dirty_log_set_kick(v->log, fd);
		for_each_running(v, no_op_on_queue, NULL);
	}
	close_fd(&old);
	return 0;
}

static void log_kick(struct uvh_vud *v)
{
	if (v->log_fd >= 0 && log_all(v) && eventfd_write(v->log_fd, 1))
		UVH_WARN("%s: log fd write failed: %s", v->name, strerror(errno));
}

static void drop_log(struct uvh_vud *v)
{
	if (v->log) {
		uvh_dirty_log_unmap(v->log);
		free(v->log);
		v->log = NULL;
	}
	close_fd(&v->log_fd);
}

/* ---- features --------------------------------------------------------------------- */

static uint64_t offered_features(struct uvh_vud *v)
{
	uint64_t f = v->ops->features(v->dev);

	/* IOMMU_PLATFORM only if the device offers it: the rings then
	 * translate IOVAs through the IOTLB (misses go out on the back-end
	 * channel, which the front-end must then have set up). */
	return f | BIT(UVH_F_PROTOCOL_FEATURES) | BIT(UVH_F_LOG_ALL);
}

static int h_get_features(void *dev, uint64_t *features)
{
	*features = offered_features(dev);
	return 0;
}

static void set_enabled_on_queue(struct uvh_vud_queue *q, void *arg)
{
	bool on = arg != NULL;

	if (q->enabled == on)
		return;
	q->enabled = on;
	if (q->vud->ops->queue_enable)
		q->vud->ops->queue_enable(q->vud->dev, q, on);
}

static int h_set_features(void *dev, uint64_t features)
{
	struct uvh_vud *v = dev;
	bool had_log = log_all(v);
	int ret;

	if (v->ops->set_features) {
		ret = v->ops->set_features(v->dev, features);
		if (ret)
			return ret < 0 ? ret : -EIO;
	}
	v->features = features;
	if (had_log != log_all(v) && v->log)
		for_each_running(v, set_log_on_queue, log_all(v) ? v->log : NULL);
	/* Without PROTOCOL_FEATURES there is no SET_VRING_ENABLE: every
	 * ring is enabled now (backend_req.c does the same). */
	if (!(features & BIT(UVH_F_PROTOCOL_FEATURES))) {
		for (uint32_t i = 0; i < v->nq; i++)
			if (!v->qs[i].running)
				v->qs[i].enabled = true;
		for_each_running(v, set_enabled_on_queue, (void *)1);
	}
	return 0;
}

static int h_get_protocol_features(void *dev, uint64_t *pf)
{
	struct uvh_vud *v = dev;
	uint64_t f = VUD_PROTOCOL_FEATURES;

	if (v->ops->get_config)
		f |= BIT(UVH_PROTOCOL_F_CONFIG);
	if (v->ops->save_state && v->ops->load_state)
		f |= BIT(UVH_PROTOCOL_F_DEVICE_STATE);
	if (v->nq > 2)
		f |= BIT(UVH_PROTOCOL_F_MQ);
	if (v->ops->protocol_features)
		f |= v->ops->protocol_features(v->dev);
	*pf = f;
	return 0;
}

static int h_set_protocol_features(void *dev, uint64_t pf)
{
	struct uvh_vud *v = dev;

	v->protocol_features = pf;
	if (v->ops->set_protocol_features)
		v->ops->set_protocol_features(v->dev, pf);
	return 0;
}

static int h_set_owner(void *dev)
{
	(void)dev;
	return 0;
}

static int h_get_queue_num(void *dev, uint64_t *num)
{
	struct uvh_vud *v = dev;

	*num = v->ops->queue_num_reply ? v->ops->queue_num_reply(v->dev) : v->nq;
	return 0;
}

/* ---- vrings ------------------------------------------------------------------------ */

static int h_set_vring_num(void *dev, uint32_t index, uint32_t num)
{
	struct uvh_vud *v = dev;

	v->qs[index].num = num;
	return 0;
}

static int h_set_vring_addr(void *dev, const struct uvh_vring_addr *addr)
{
	struct uvh_vud *v = dev;
	struct uvh_vud_queue *q = &v->qs[addr->index];

	q->addr = *addr;
	q->have_addr = true;
	return 0;
}

static int h_set_vring_base(void *dev, uint32_t index, uint32_t base)
{
	struct uvh_vud *v = dev;

	v->qs[index].base = base;
	return 0;
}

static int h_get_vring_base(void *dev, uint32_t index, uint32_t *base)
{
	struct uvh_vud *v = dev;
	struct uvh_vud_queue *q = &v->qs[index];

	queue_stop(v, q);
	*base = q->base;
	/* The spec: the back-end must not signal or read this ring any more;
	 * tell the front-end the log (used ring included) is up to date. */
	log_kick(v);
	return 0;
}

static int swap_kick_on_engine(void *engine_ctx, void *arg)
{
	struct uvh_vud_queue *q = arg;
	int ret;

	(void)engine_ctx;
	/* The kick poll is armed at attach time: detach and attach again,
	 * keeping the ring's state (no re-init). */
	uvh_engine_remove_queue(q->engine, &q->eq);
	q->eq.kick_fd = q->kick_fd;
	ret = uvh_engine_add_queue(q->engine, &q->eq);
	if (ret) {
		q->running = false;
		if (q->vud->ops->queue_stop)
			q->vud->ops->queue_stop(q->vud->dev, q);
	}
	return ret;
}

static int h_set_vring_kick(void *dev, uint32_t index, int fd)
{
	struct uvh_vud *v = dev;
	struct uvh_vud_queue *q = &v->qs[index];
	int old = q->kick_fd, ret;

	q->kick_fd = fd;
	if (q->running) {
		/* A new kick fd on a running ring (QEMU does this): swap it in. */
		ret = engine_call(q->engine, swap_kick_on_engine, q);
		close_fd(&old);
		if (ret) {
			UVH_ERR("%s: vring %u kick fd swap failed: %s", v->name, index,
				strerror(-ret));
			q->base = uvh_vq_base(&q->vq);
			inflight_drop(q);
		}
		return ret;
	}
	close_fd(&old);
	ret = queue_start(v, q);
	if (ret)
		close_fd(&q->kick_fd);	/* a refused start keeps nothing */
	return ret;
}

struct fd_swap {
	struct uvh_vud_queue *q;
	int fd;
	bool err;
};

static int swap_fd_on_engine(void *engine_ctx, void *arg)
{
	struct fd_swap *s = arg;

	(void)engine_ctx;
	if (s->err)
		s->q->eq.err_fd = s->fd;
	else
		s->q->eq.call_fd = s->fd;
	return 0;
}

static int set_notify_fd(struct uvh_vud *v, uint32_t index, int fd, bool err)
{
	struct uvh_vud_queue *q = &v->qs[index];
	int *slot = err ? &q->err_fd : &q->call_fd;
	int old = *slot;
	struct fd_swap s = { .q = q, .fd = fd, .err = err };

	/* The engine may be writing the old fd right now: switch on its
	 * thread, close the old one after. */
	if (q->running)
		engine_call(q->engine, swap_fd_on_engine, &s);
	*slot = fd;
	close_fd(&old);
	return 0;
}

static int h_set_vring_call(void *dev, uint32_t index, int fd)
{
	return set_notify_fd(dev, index, fd, false);
}

static int h_set_vring_err(void *dev, uint32_t index, int fd)
{
	return set_notify_fd(dev, index, fd, true);
}

static int enable_on_engine(void *engine_ctx, void *arg)
{
	struct fd_swap *s = arg;	/* fd carries the enable bit */

	(void)engine_ctx;
	set_enabled_on_queue(s->q, s->fd ? (void *)1 : NULL);
	return 0;
}

static int h_set_vring_enable(void *dev, uint32_t index, bool enable)
{
	struct uvh_vud *v = dev;
	struct uvh_vud_queue *q = &v->qs[index];
	struct fd_swap s = { .q = q, .fd = enable };

	if (q->running)
		engine_call(q->engine, enable_on_engine, &s);
	else
		q->enabled = enable;
	return 0;
}

/* ---- device state (migration) ----------------------------------------------------- */

#define STATE_TIMEOUT_MS	10000

static void xfer_drop(struct uvh_vud *v)
{
	uvh_state_xfer_free(v->xfer);
	v->xfer = NULL;
}

static int h_set_device_state_fd(void *dev, uint32_t direction, uint32_t phase, int fd,
				 int *out_fd)
{
	struct uvh_vud *v = dev;
	uint8_t buf[4096];
	int ret;

	*out_fd = -1;	/* we use the front-end's pipe */
	if (!v->ops->save_state || !v->ops->load_state || phase != UVH_DEVICE_STATE_STOPPED) {
		close_fd(&fd);
		return -ENOSYS;
	}
	if (any_running(v)) {
		UVH_ERR("%s: device state transfer with rings running", v->name);
		close_fd(&fd);
		return -EBUSY;
	}
	xfer_drop(v);	/* a transfer the front-end gave up on */
	v->xfer_result = -EINPROGRESS;
	v->xfer_dir = direction;
	if (direction == UVH_DEVICE_STATE_SAVE) {
		ret = v->ops->save_state(v->dev, buf, sizeof(buf));
		if (ret < 0 || (size_t)ret > sizeof(buf)) {
			close_fd(&fd);
			v->xfer_result = ret < 0 ? ret : -EOVERFLOW;
			return v->xfer_result;
		}
		ret = uvh_state_xfer_save(&v->xfer, fd, buf, (size_t)ret, STATE_TIMEOUT_MS);
	} else {
		ret = uvh_state_xfer_load(&v->xfer, fd, sizeof(buf), STATE_TIMEOUT_MS);
	}
	if (ret)
		v->xfer_result = ret;
	return ret;
}

static int h_check_device_state(void *dev)
{
	struct uvh_vud *v = dev;
	const void *buf;
	size_t len;
	int ret;

	if (!v->xfer)
		return v->xfer_result ? v->xfer_result : -ENODATA;
	ret = uvh_state_xfer_finish(v->xfer, &buf, &len);
	if (!ret && v->xfer_dir == UVH_DEVICE_STATE_LOAD) {
		if (any_running(v))
			ret = -EBUSY;
		else
			ret = v->ops->load_state(v->dev, buf, len);
	}
	if (ret)
		UVH_ERR("%s: device state %s failed: %s", v->name,
			v->xfer_dir == UVH_DEVICE_STATE_SAVE ? "save" : "load", strerror(-ret));
	else
		UVH_INFO("%s: device state %s", v->name,
			 v->xfer_dir == UVH_DEVICE_STATE_SAVE ? "saved" : "loaded");
	xfer_drop(v);
	v->xfer_result = ret;
	return ret;
}

/* ---- config, net, status ---------------------------------------------------------- */

static int h_get_config(void *dev, uint32_t offset, uint32_t size, uint32_t flags, uint8_t *buf)
{
	struct uvh_vud *v = dev;

	(void)flags;
	if (!v->ops->get_config)
		return -ENOSYS;
	return v->ops->get_config(v->dev, offset, size, buf);
}

static int h_set_config(void *dev, uint32_t offset, uint32_t size, uint32_t flags,
			const uint8_t *buf)
{
	struct uvh_vud *v = dev;

	(void)flags;
	if (!v->ops->set_config)
		return -ENOSYS;
	return v->ops->set_config(v->dev, offset, size, buf);
}

static int h_send_rarp(void *dev, const uint8_t mac[6])
{
	struct uvh_vud *v = dev;

	return v->ops->send_rarp ? v->ops->send_rarp(v->dev, mac) : -ENOSYS;
}

static int h_net_set_mtu(void *dev, uint16_t mtu)
{
	struct uvh_vud *v = dev;

	return v->ops->net_set_mtu ? v->ops->net_set_mtu(v->dev, mtu) : -ENOSYS;
}

static int h_set_status(void *dev, uint8_t status)
{
	struct uvh_vud *v = dev;

	__atomic_store_n(&v->status, status, __ATOMIC_RELAXED);
	if (v->ops->set_status)
		v->ops->set_status(v->dev, status);
	return 0;
}

static int h_get_status(void *dev, uint8_t *status)
{
	struct uvh_vud *v = dev;

	*status = v->status;
	return 0;
}

/* ---- back-end channel, IOTLB ------------------------------------------------------ */

static int h_set_backend_req_fd(void *dev, int fd)
{
	struct uvh_vud *v = dev;
	struct uvh_backend_chan *chan;

	chan = uvh_backend_chan_new(fd, v->protocol_features);	/* fd taken */
	if (!chan)
		return -errno;
	uvh_backend_chan_free(v->chan);
	v->chan = chan;
	return 0;
}

static int h_iotlb_msg(void *dev, const struct uvh_iotlb *msg)
{
	struct uvh_vud *v = dev;

	int ret;

	if (!v->iotlb) {
		v->iotlb = uvh_iotlb_new(0);
		if (!v->iotlb)
			return -ENOMEM;
	}
	ret = uvh_iotlb_apply(v->iotlb, msg);
	if (ret || msg->type != UVH_IOTLB_UPDATE ||
	    !(v->features & BIT(UVH_VIRTIO_F_IOMMU_PLATFORM)))
		return ret;
	/* A ring may be waiting for this entry (it idles after a miss):
	 * make its engine sweep it, as a guest kick would. A kick that
	 * finds nothing new costs one empty burst. */
	for (uint32_t i = 0; i < v->nq; i++) {
		struct uvh_vud_queue *q = &v->qs[i];

		if (q->running && q->kick_fd >= 0 && eventfd_write(q->kick_fd, 1) < 0)
			UVH_WARN("%s: vring %u: kick after IOTLB update: %s", v->name, i,
				 strerror(errno));
	}
	return 0;
}

/* ---- inflight ---------------------------------------------------------------------- */

static void drop_inflight(struct uvh_vud *v)
{
	if (v->inflight_base)
		munmap(v->inflight_base, v->inflight_size);
	v->inflight_base = NULL;
	v->inflight_size = 0;
	v->inflight_nq = v->inflight_qs = 0;
}

static int h_get_inflight_fd(void *dev, const struct uvh_inflight *in, struct uvh_inflight *out,
			     int *fdp)
{
	struct uvh_vud *v = dev;
	bool packed = v->features & BIT(UVH_VIRTIO_F_RING_PACKED);
	size_t size;
	void *base;
	int fd;

	if (any_running(v))
		return -EBUSY;
	size = uvh_inflight_region_size(in->num_queues, in->queue_size, packed);
	if (!size)
		return -EINVAL;
	fd = memfd_create("uvhost-inflight", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size)) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	uvh_inflight_area_format(base, in->num_queues, in->queue_size, packed);
	drop_inflight(v);
	v->inflight_base = base;
	v->inflight_size = size;
	v->inflight_nq = in->num_queues;
	v->inflight_qs = in->queue_size;
	v->inflight_packed = packed;
	memset(out, 0, sizeof(*out));
	out->mmap_size = size;
	out->mmap_offset = 0;
	out->num_queues = in->num_queues;
	out->queue_size = in->queue_size;
	*fdp = fd;	/* the library closes it once sent; our mapping stays */
	return 0;
}

static int h_set_inflight_fd(void *dev, const struct uvh_inflight *in, int fd)
{
	struct uvh_vud *v = dev;
	bool packed = v->features & BIT(UVH_VIRTIO_F_RING_PACKED);
	size_t need = uvh_inflight_region_size(in->num_queues, in->queue_size, packed);
	long page = sysconf(_SC_PAGESIZE);
	struct stat st;
	void *base;
	int ret = 0;

	if (any_running(v))
		ret = -EBUSY;
	else if (fd < 0)
		ret = -EBADF;
	else if (!need || in->mmap_size < need || in->mmap_size > SIZE_MAX ||
		 in->mmap_offset % (uint64_t)page)
		ret = -EINVAL;
	else if (fstat(fd, &st))
		ret = -errno;
	else if (!S_ISREG(st.st_mode))
		ret = -EINVAL;
	else if ((uint64_t)st.st_size < in->mmap_offset ||
		 (uint64_t)st.st_size - in->mmap_offset < in->mmap_size)
		ret = -ENXIO;	/* would SIGBUS later */
	if (ret) {
		UVH_ERR("%s: inflight area refused: %s", v->name, strerror(-ret));
		if (fd >= 0)
			close(fd);
		return ret;
	}
	base = mmap(NULL, in->mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		    (off_t)in->mmap_offset);
	ret = base == MAP_FAILED ? -errno : 0;
	close(fd);
	if (ret)
		return ret;
	drop_inflight(v);
	v->inflight_base = base;
	v->inflight_size = in->mmap_size;
	v->inflight_nq = in->num_queues;
	v->inflight_qs = in->queue_size;
	v->inflight_packed = packed;
	return 0;
}

/* ---- session ------------------------------------------------------------------------ */

/* Back to a fresh device, keeping the connection (RESET_DEVICE). */
static void device_reset(struct uvh_vud *v)
{
	stop_all(v);
	for (uint32_t i = 0; i < v->nq; i++)
		queue_clear(&v->qs[i]);
	if (v->ops->reset)
		v->ops->reset(v->dev);
	v->features = 0;
	__atomic_store_n(&v->status, 0, __ATOMIC_RELAXED);
	drop_inflight(v);
	if (v->iotlb)
		uvh_iotlb_flush(v->iotlb);
}

static int h_reset_device(void *dev)
{
	device_reset(dev);
	return 0;
}

static int h_reset_owner(void *dev)
{
	device_reset(dev);
	return 0;
}

/* The whole session goes: device state and the connection's resources. */
static void session_end(struct uvh_vud *v)
{
	device_reset(v);
	drop_memory(v);
	drop_log(v);
	xfer_drop(v);
	v->xfer_result = 0;
	uvh_iotlb_free(v->iotlb);
	v->iotlb = NULL;
	uvh_backend_chan_free(v->chan);
	v->chan = NULL;
	v->protocol_features = 0;
	uvh_backend_req_free(v->req);	/* closes the socket */
	v->req = NULL;
	__atomic_store_n(&v->local, false, __ATOMIC_RELAXED);
}

static const struct uvh_backend_handler_ops vud_handler_ops = {
	.set_owner = h_set_owner,
	.reset_owner = h_reset_owner,
	.get_features = h_get_features,
	.set_features = h_set_features,
	.get_protocol_features = h_get_protocol_features,
	.set_protocol_features = h_set_protocol_features,
	.set_mem_table = h_set_mem_table,
	.set_log_base = h_set_log_base,
	.set_log_fd = h_set_log_fd,
	.set_vring_num = h_set_vring_num,
	.set_vring_addr = h_set_vring_addr,
	.set_vring_base = h_set_vring_base,
	.get_vring_base = h_get_vring_base,
	.get_vring_base_skip_drain = h_get_vring_base,	/* nothing is ever held back */
	.set_device_state_fd = h_set_device_state_fd,
	.check_device_state = h_check_device_state,
	.set_vring_kick = h_set_vring_kick,
	.set_vring_call = h_set_vring_call,
	.set_vring_err = h_set_vring_err,
	.get_queue_num = h_get_queue_num,
	.set_vring_enable = h_set_vring_enable,
	.send_rarp = h_send_rarp,
	.net_set_mtu = h_net_set_mtu,
	.set_backend_req_fd = h_set_backend_req_fd,
	.iotlb_msg = h_iotlb_msg,
	.get_config = h_get_config,
	.set_config = h_set_config,
	.get_inflight_fd = h_get_inflight_fd,
	.set_inflight_fd = h_set_inflight_fd,
	.reset_device = h_reset_device,
	.get_max_mem_slots = h_get_max_mem_slots,
	.add_mem_reg = h_add_mem_reg,
	.rem_mem_reg = h_rem_mem_reg,
	.set_status = h_set_status,
	.get_status = h_get_status,
};

/* ---- public API ---------------------------------------------------------------------- */

struct uvh_vud *uvh_vud_new(const struct uvh_vud_opts *opts)
{
	const struct uvh_vud_device_ops *ops;
	struct uvh_vud *v;
	uint32_t nq, idx;

	if (!opts || !(ops = opts->ops) || !ops->features || !ops->num_queues ||
	    !ops->queue_start || !ops->process || !opts->engines || !opts->nengines ||
	    opts->nengines > MAX_ENGINES) {
		UVH_ERR("vud: invalid options");
		errno = EINVAL;
		return NULL;
	}
	for (unsigned int k = 0; k < opts->nengines; k++)
		if (!opts->engines[k]) {
			errno = EINVAL;
			return NULL;
		}
	nq = ops->num_queues(opts->dev);
	if (!nq || nq > UVH_VUD_MAX_QUEUES) {
		UVH_ERR("vud: the device declares %u rings", nq);
		errno = EINVAL;
		return NULL;
	}
	v = calloc(1, sizeof(*v));
	if (!v)
		goto nomem;
	v->qs = calloc(nq, sizeof(*v->qs));
	v->name = strdup(opts->name ? opts->name : "vud");
	if (!v->qs || !v->name)
		goto nomem;
	v->ops = ops;
	v->dev = opts->dev;
	v->nengines = opts->nengines;
	memcpy(v->engines, opts->engines, opts->nengines * sizeof(v->engines[0]));
	v->strict_order = opts->strict_order;
	v->nq = nq;
	v->log_fd = -1;
	pthread_mutex_init(&v->lock, NULL);
	for (uint32_t i = 0; i < nq; i++) {
		struct uvh_vud_queue *q = &v->qs[i];

		q->vud = v;
		q->index = i;
		q->kick_fd = q->call_fd = q->err_fd = -1;
		idx = ops->engine_for_queue ? ops->engine_for_queue(v->dev, i, v->nengines) :
					      (i / 2) % v->nengines;
		if (idx >= v->nengines) {
			UVH_WARN("%s: engine %u for vring %u is out of range: using 0",
				 v->name, idx, i);
			idx = 0;
		}
		q->engine = v->engines[idx];
	}
	return v;

nomem:
	if (v) {
		free(v->qs);
		free(v->name);
		free(v);
	}
	errno = ENOMEM;
	return NULL;
}

void uvh_vud_free(struct uvh_vud *v)
{
	if (!v)
		return;
	uvh_vud_disconnect(v);
	pthread_mutex_destroy(&v->lock);
	free(v->qs);
	free(v->name);
	free(v);
}

int uvh_vud_connect(struct uvh_vud *v, int fd)
{
	struct uvh_backend_req *req;

	if (!v || fd < 0) {
		if (fd >= 0)
			close(fd);
		return -EINVAL;
	}
	pthread_mutex_lock(&v->lock);
	if (v->req) {
		pthread_mutex_unlock(&v->lock);
		close(fd);
		return -EBUSY;
	}
	req = uvh_backend_req_new(fd, &vud_handler_ops, v, v->nq);
	if (!req) {
		int ret = -errno;

		pthread_mutex_unlock(&v->lock);
		return ret;
	}
	v->req = req;
	stat_add(&v->connections, 1);
	pthread_mutex_unlock(&v->lock);
	UVH_INFO("%s: front-end connected", v->name);
	return 0;
}

int uvh_vud_handle(struct uvh_vud *v, int timeout_ms)
{
	struct uvh_endpoint *ep;
	int ret;

	if (!v || !v->req)
		return -ENOTCONN;
	if (v->watcher)
		return -EBUSY;
	ep = uvh_backend_req_endpoint(v->req);
	ret = uvh_endpoint_wait(ep, timeout_ms);
	if (ret <= 0)
		return ret;
	pthread_mutex_lock(&v->lock);
	ret = uvh_backend_req_handle(v->req);
	pthread_mutex_unlock(&v->lock);
	if (ret < 0)
		return ret;
	stat_add(&v->requests, 1);
	return 1;
}

/* A watched connection ended: tear it down on the watching engine. */
static void watched_end(struct uvh_vud *v, int err)
{
	void (*cb)(struct uvh_vud *, int, void *);
	void *opaque;

	pthread_mutex_lock(&v->lock);
	cb = v->on_disconnect;
	opaque = v->on_disconnect_opaque;
	v->watcher = NULL;
	if (v->req)
		session_end(v);
	pthread_mutex_unlock(&v->lock);
	UVH_INFO("%s: front-end gone (%s)", v->name, strerror(-err));
	if (cb)
		cb(v, err, opaque);
}

static void watch_on_msg(struct uvh_engine_watch *w, struct uvh_msg *msg)
{
	struct uvh_vud *v = w->opaque;
	int ret;

	pthread_mutex_lock(&v->lock);
	ret = v->req ? uvh_backend_req_process(v->req, msg) : -ENOTCONN;
	if (ret == -ENOTCONN)
		uvh_msg_close_fds(msg);
	pthread_mutex_unlock(&v->lock);
	if (ret >= 0) {
		stat_add(&v->requests, 1);
		return;
	}
	/* From inside on_msg the unwatch is immediate. */
	uvh_engine_unwatch(w->engine, w);
	watched_end(v, ret);
}

static void watch_on_close(struct uvh_engine_watch *w, int err)
{
	watched_end(w->opaque, err);
}

int uvh_vud_watch(struct uvh_vud *v, struct uvh_engine *e,
		  void (*on_disconnect)(struct uvh_vud *v, int err, void *opaque),
		  void *opaque)
{
	int ret;

	if (!v || !e)
		return -EINVAL;
	pthread_mutex_lock(&v->lock);
	if (!v->req) {
		pthread_mutex_unlock(&v->lock);
		return -ENOTCONN;
	}
	if (v->watcher) {
		pthread_mutex_unlock(&v->lock);
		return -EBUSY;
	}
	memset(&v->watch, 0, sizeof(v->watch));
	v->watch.ep = uvh_backend_req_endpoint(v->req);
	v->watch.on_msg = watch_on_msg;
	v->watch.on_close = watch_on_close;
	v->watch.opaque = v;
	v->on_disconnect = on_disconnect;
	v->on_disconnect_opaque = opaque;
	v->watcher = e;
	pthread_mutex_unlock(&v->lock);
	/* Not under the lock: the engine's first message takes it. */
	ret = uvh_engine_watch(e, &v->watch);
	if (ret) {
		pthread_mutex_lock(&v->lock);
		v->watcher = NULL;
		pthread_mutex_unlock(&v->lock);
	}
	return ret;
}

void uvh_vud_disconnect(struct uvh_vud *v)
{
	struct uvh_engine *w;

	if (!v)
		return;
	w = __atomic_load_n(&v->watcher, __ATOMIC_ACQUIRE);
	/* Unwatch before taking the lock: the engine may be inside on_msg,
	 * waiting for it. -ENOENT: the watch already ended on its own. */
	if (w && uvh_engine_unwatch(w, &v->watch) == 0) {
		pthread_mutex_lock(&v->lock);
		v->watcher = NULL;
		pthread_mutex_unlock(&v->lock);
	}
	pthread_mutex_lock(&v->lock);
	if (v->req || v->local) {
		session_end(v);
		UVH_INFO("%s: disconnected", v->name);
	}
	pthread_mutex_unlock(&v->lock);
}

bool uvh_vud_connected(const struct uvh_vud *v)
{
	return v && (__atomic_load_n(&v->req, __ATOMIC_RELAXED) != NULL ||
		     __atomic_load_n(&v->local, __ATOMIC_RELAXED));
}

/* ---- in-process sessions (the soft backend) ---------------------------------------- */

int uvh_vud_connect_local(struct uvh_vud *v)
{
	if (!v)
		return -EINVAL;
	pthread_mutex_lock(&v->lock);
	if (v->req || v->local) {
		pthread_mutex_unlock(&v->lock);
		return -EBUSY;
	}
	__atomic_store_n(&v->local, true, __ATOMIC_RELAXED);
	stat_add(&v->connections, 1);
	pthread_mutex_unlock(&v->lock);
	return 0;
}

const struct uvh_backend_handler_ops *uvh_vud_handler_ops(void)
{
	return &vud_handler_ops;
}

/* A table of host-pointer regions: the old table's fd mappings that it
 * does not keep are unmapped once no ring reads them (publish_memory). */
static int set_mem_host(struct uvh_vud *v, const struct uvh_vud_host_region *regions,
			unsigned int n, const struct uvh_memory *base)
{
	struct uvh_memory *mem = base ? uvh_memory_copy(base) : uvh_memory_new(0);
	int ret;

	if (!mem)
		return -ENOMEM;
	for (unsigned int i = 0; i < n; i++) {
		ret = uvh_memory_add_host(mem, regions[i].gpa, regions[i].size, regions[i].hva);
		if (ret) {
			UVH_ERR("%s: host region gpa 0x%" PRIx64 " size 0x%" PRIx64
				" refused: %s", v->name, regions[i].gpa, regions[i].size,
				strerror(-ret));
			uvh_memory_release(mem, base);
			return ret;
		}
	}
	publish_memory(v, mem);
	return 0;
}

int uvh_vud_set_mem_host(struct uvh_vud *v, const struct uvh_vud_host_region *regions,
			 unsigned int n)
{
	int ret;

	if (!v || (n && !regions))
		return -EINVAL;
	pthread_mutex_lock(&v->lock);
	ret = v->local ? set_mem_host(v, regions, n, NULL) : -ENOTCONN;
	pthread_mutex_unlock(&v->lock);
	return ret;
}

int uvh_vud_add_mem_host(struct uvh_vud *v, const struct uvh_vud_host_region *region)
{
	int ret;

	if (!v || !region)
		return -EINVAL;
	pthread_mutex_lock(&v->lock);
	ret = v->local ? set_mem_host(v, region, 1, v->mem) : -ENOTCONN;
	pthread_mutex_unlock(&v->lock);
	return ret;
}

int uvh_vud_local_call(struct uvh_vud *v, int (*fn)(void *dev, void *arg), void *arg)
{
	int ret;

	if (!v || !fn)
		return -EINVAL;
	pthread_mutex_lock(&v->lock);
	ret = v->local ? fn(v, arg) : -ENOTCONN;
	pthread_mutex_unlock(&v->lock);
	return ret;
}

int uvh_vud_fd(const struct uvh_vud *v)
{
	struct uvh_backend_req *req = v ? __atomic_load_n(&v->req, __ATOMIC_RELAXED) : NULL;

	return req ? uvh_backend_req_endpoint(req)->fd : -1;
}

const char *uvh_vud_name(const struct uvh_vud *v)
{
	return v->name;
}

void *uvh_vud_dev(const struct uvh_vud *v)
{
	return v->dev;
}

uint32_t uvh_vud_num_queues(const struct uvh_vud *v)
{
	return v->nq;
}

struct uvh_vud_queue *uvh_vud_queue(struct uvh_vud *v, uint32_t index)
{
	return v && index < v->nq ? &v->qs[index] : NULL;
}

struct uvh_engine *uvh_vud_queue_engine(const struct uvh_vud *v, uint32_t index)
{
	return v && index < v->nq ? v->qs[index].engine : NULL;
}

uint64_t uvh_vud_features(const struct uvh_vud *v)
{
	return __atomic_load_n(&v->features, __ATOMIC_RELAXED);
}

uint64_t uvh_vud_protocol_features(const struct uvh_vud *v)
{
	return __atomic_load_n(&v->protocol_features, __ATOMIC_RELAXED);
}

uint8_t uvh_vud_status(const struct uvh_vud *v)
{
	return __atomic_load_n(&v->status, __ATOMIC_RELAXED);
}

struct uvh_backend_chan *uvh_vud_backend_chan(struct uvh_vud *v)
{
	return v->chan;
}

void uvh_vud_stats(const struct uvh_vud *v, struct uvh_vud_stats *st)
{
	st->connections = __atomic_load_n(&v->connections, __ATOMIC_RELAXED);
	st->requests = __atomic_load_n(&v->requests, __ATOMIC_RELAXED);
	st->mem_updates = __atomic_load_n(&v->mem_updates, __ATOMIC_RELAXED);
	st->queue_starts = __atomic_load_n(&v->queue_starts, __ATOMIC_RELAXED);
	st->queue_errors = __atomic_load_n(&v->queue_errors, __ATOMIC_RELAXED);
	st->mem_regions = __atomic_load_n(&v->mem_regions, __ATOMIC_RELAXED);
	st->mem_bytes = __atomic_load_n(&v->mem_bytes, __ATOMIC_RELAXED);
}
