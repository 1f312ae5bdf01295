/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the vhost-user device host's rings: running control-path
 * changes on the engines that serve the rings, a ring's life cycle
 * (start on its engine, stop, clear) and the SET/GET_VRING_* handlers.
 * See devhost.c for the locking.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>

#include "util.h"
#include "backend_chan.h"
#include "inflight.h"
#include "devhost_internal.h"

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
	struct uvh_devhost *v;
	struct uvh_engine *e;
	void (*fn)(struct uvh_devhost_queue *q, void *arg);
	void *arg;
};

static int apply_on_engine(void *engine_ctx, void *arg)
{
	struct apply_ctx *a = arg;

	(void)engine_ctx;
	for (uint32_t i = 0; i < a->v->nq; i++) {
		struct uvh_devhost_queue *q = &a->v->qs[i];

		if (q->engine == a->e && q->running)
			a->fn(q, a->arg);
	}
	return 0;
}

/* Run @fn on every running ring, on the thread of the engine serving it;
 * when this returns every engine has done so. */
void uvh__devhost_for_each_running(struct uvh_devhost *v,
			       void (*fn)(struct uvh_devhost_queue *q, void *arg), void *arg)
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

static void no_op_on_queue(struct uvh_devhost_queue *q, void *arg)
{
	(void)q;
	(void)arg;
}

void uvh__devhost_quiesce(struct uvh_devhost *v)
{
	uvh__devhost_for_each_running(v, no_op_on_queue, NULL);
}

bool uvh__devhost_any_running(const struct uvh_devhost *v)
{
	for (uint32_t i = 0; i < v->nq; i++)
		if (v->qs[i].running)
			return true;
	return false;
}

/* ---- rings -------------------------------------------------------------------- */

/* [engine] Inside the hand-over (uvh_engine_call) that the control thread
 * waits for; relaxed atomic for uvh_devhost_queue_running() from elsewhere. */
static void set_running(struct uvh_devhost_queue *q, bool on)
{
	__atomic_store_n(&q->running, on, __ATOMIC_RELAXED);
}

static void on_queue_error(struct uvh_engine_queue *eq, enum uvh_vq_error err)
{
	struct uvh_devhost_queue *q = uvh_devhost_queue_of(eq);
	struct uvh_devhost *v = q->dh;

	stat_add(&v->queue_errors, 1);
	UVH_ERR("%s: vring %u broken: %s", v->name, q->index, uvh_vq_strerror(err));
	if (v->ops->queue_error)
		v->ops->queue_error(v->dev, q, err);
}

static int start_on_engine(void *engine_ctx, void *arg)
{
	struct uvh_devhost_queue *q = arg;
	struct uvh_devhost *v = q->dh;
	int ret;

	(void)engine_ctx;
	ret = v->ops->queue_start(v->dev, q);
	if (ret)
		return ret < 0 ? ret : -EIO;
	set_running(q, true);
	ret = uvh_engine_add_queue(q->engine, &q->eq);
	if (ret) {
		set_running(q, false);
		if (v->ops->queue_stop)
			v->ops->queue_stop(v->dev, q);
	}
	return ret;
}

static int stop_on_engine(void *engine_ctx, void *arg)
{
	struct uvh_devhost_queue *q = arg;
	struct uvh_devhost *v = q->dh;
	int ret;

	(void)engine_ctx;
	ret = uvh_engine_remove_queue(q->engine, &q->eq);
	if (ret)
		UVH_WARN("%s: vring %u was not attached: %s", v->name, q->index, strerror(-ret));
	set_running(q, false);
	if (v->ops->queue_stop)
		v->ops->queue_stop(v->dev, q);
	return 0;
}

static void inflight_drop(struct uvh_devhost_queue *q)
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
static void dh_iotlb_event(void *opaque, struct uvh_vq *vq, uint64_t iova, uint8_t perm,
			    uint8_t type)
{
	struct uvh_devhost_queue *q = opaque;
	struct uvh_devhost *v = q->dh;
	struct uvh_iotlb msg = { .iova = iova, .perm = perm, .type = type };
	/* pairs with the release store in h_set_backend_req_fd: the channel
	 * is whole; it is not freed before this burst ends (quiesce) */
	struct uvh_backend_chan *chan = __atomic_load_n(&v->chan, __ATOMIC_ACQUIRE);
	uint64_t pf = __atomic_load_n(&v->protocol_features, __ATOMIC_RELAXED);
	int ret;

	(void)vq;
	if (!chan || !(pf & UVH_BIT(UVH_PROTOCOL_F_BACKEND_REQ))) {
		UVH_WARN("%s: vring %u: IOTLB %s at 0x%" PRIx64 " and no back-end channel",
			 v->name, q->index, type == UVH_IOTLB_MISS ? "miss" : "access failure",
			 iova);
		return;
	}
	ret = uvh_backend_chan_iotlb_msg(chan, &msg);
	if (ret < 0)
		UVH_WARN("%s: vring %u: IOTLB message for 0x%" PRIx64 " not sent: %s",
			 v->name, q->index, iova, strerror(-ret));
}

static int queue_start(struct uvh_devhost *v, struct uvh_devhost_queue *q)
{
	bool packed = v->features & UVH_BIT(UVH_VIRTIO_F_RING_PACKED);
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
	cfg.event_idx = v->features & UVH_BIT(UVH_VIRTIO_F_RING_EVENT_IDX);
	cfg.indirect = v->features & UVH_BIT(UVH_VIRTIO_F_RING_INDIRECT_DESC);
	cfg.in_order = v->features & UVH_BIT(UVH_VIRTIO_F_IN_ORDER);
	cfg.strict_order = v->strict_order;
	cfg.device_reads_only = v->ops->queue_device_reads_only &&
				v->ops->queue_device_reads_only(v->dev, q->index);
	if (v->features & UVH_BIT(UVH_VIRTIO_F_IOMMU_PLATFORM)) {
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
		cfg.iotlb_miss = dh_iotlb_event;
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
	/* a started ring that is not enabled waits, untouched (see
	 * uvh__devhost_set_enabled_on_queue) */
	q->eq.paused = q->enabled ? 0 : UVH_ENGINE_PAUSE_HOST;
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
static void queue_stop(struct uvh_devhost *v, struct uvh_devhost_queue *q)
{
	if (!q->running)
		return;
	engine_call(q->engine, stop_on_engine, q);
	q->base = uvh_vq_base(&q->vq);
	inflight_drop(q);
	UVH_DEBUG("%s: vring %u stopped at 0x%x", v->name, q->index, q->base);
}

void uvh__devhost_stop_all(struct uvh_devhost *v)
{
	for (uint32_t i = 0; i < v->nq; i++)
		queue_stop(v, &v->qs[i]);
}

/* Forget a ring's session state (closing its fds). */
void uvh__devhost_queue_clear(struct uvh_devhost_queue *q)
{
	uvh_close_fd(&q->kick_fd);
	uvh_close_fd(&q->call_fd);
	uvh_close_fd(&q->err_fd);
	q->num = 0;
	q->base = 0;
	q->have_addr = false;
	memset(&q->addr, 0, sizeof(q->addr));
	q->enabled = false;
	q->priv = NULL;
	memset(&q->vq, 0, sizeof(q->vq));
}

/*
 * [engine] SET_VRING_ENABLE on a running ring. A disabled ring is not
 * processed at all: its chains wait until it is enabled, and the sweep
 * after the enable takes them whether or not the driver kicks again.
 *
 * The spec has a started but disabled ring processed "without side
 * effects", TX chains consumed and dropped. That loses frames whenever a
 * driver publishes them right after its front-end sent SET_VRING_ENABLE 1
 * (legal: a guest may write its rings the instant the message leaves),
 * since the ring memory and the socket are two channels that nothing
 * orders: the engine would see the chains before the control thread has
 * read the message. Leaving them alone has no side effect either, and is
 * what DPDK's vhost library does.
 */
void uvh__devhost_set_enabled_on_queue(struct uvh_devhost_queue *q, void *arg)
{
	bool on = arg != NULL;

	if (q->enabled == on)
		return;
	q->enabled = on;
	if (q->dh->ops->queue_enable)
		q->dh->ops->queue_enable(q->dh->dev, q, on);
	uvh_engine_queue_pause(&q->eq, UVH_ENGINE_PAUSE_HOST, !on);
}

/* ---- vrings ------------------------------------------------------------------------ */

int uvh__devhost_h_set_vring_num(void *dev, uint32_t index, uint32_t num)
{
	struct uvh_devhost *v = dev;

	v->qs[index].num = num;
	return 0;
}

/* [engine] The ring's used-ring log address follows its SET_VRING_ADDR. */
static void set_log_used_on_queue(struct uvh_devhost_queue *q, void *arg)
{
	(void)arg;
	q->vq.cfg.log_used = q->addr.flags & UVH_VRING_F_LOG;
	q->vq.cfg.log_used_gpa = q->addr.log_guest_addr;
}

int uvh__devhost_h_set_vring_addr(void *dev, const struct uvh_vring_addr *addr)
{
	struct uvh_devhost *v = dev;
	struct uvh_devhost_queue *q = &v->qs[addr->index];

	if (q->running) {
		/* QEMU turns used-ring logging on and off this way while the
		 * ring runs (migration start and end): only the LOG flag and
		 * the log address may change then, never where the ring is */
		if (addr->desc_user_addr != q->addr.desc_user_addr ||
		    addr->avail_user_addr != q->addr.avail_user_addr ||
		    addr->used_user_addr != q->addr.used_user_addr ||
		    (addr->flags & ~UVH_VRING_F_LOG) != (q->addr.flags & ~UVH_VRING_F_LOG)) {
			UVH_ERR("%s: SET_VRING_ADDR moves running vring %u", v->name, q->index);
			return -EBUSY;
		}
		q->addr = *addr;
		/* applied between two bursts, on each serving engine */
		uvh__devhost_for_each_running(v, set_log_used_on_queue, NULL);
		return 0;
	}
	q->addr = *addr;
	q->have_addr = true;
	return 0;
}

int uvh__devhost_h_set_vring_base(void *dev, uint32_t index, uint32_t base)
{
	struct uvh_devhost *v = dev;

	v->qs[index].base = base;
	return 0;
}

int uvh__devhost_h_get_vring_base(void *dev, uint32_t index, uint32_t *base)
{
	struct uvh_devhost *v = dev;
	struct uvh_devhost_queue *q = &v->qs[index];

	queue_stop(v, q);
	*base = q->base;
	/* The spec: the back-end must not signal or read this ring any more;
	 * tell the front-end the log (used ring included) is up to date. */
	uvh__devhost_log_kick(v);
	return 0;
}

static int swap_kick_on_engine(void *engine_ctx, void *arg)
{
	struct uvh_devhost_queue *q = arg;
	int ret;

	(void)engine_ctx;
	/* The kick poll is armed at attach time: detach and attach again,
	 * keeping the ring's state (no re-init). */
	uvh_engine_remove_queue(q->engine, &q->eq);
	q->eq.kick_fd = q->kick_fd;
	ret = uvh_engine_add_queue(q->engine, &q->eq);
	if (ret) {
		set_running(q, false);
		if (q->dh->ops->queue_stop)
			q->dh->ops->queue_stop(q->dh->dev, q);
	}
	return ret;
}

int uvh__devhost_h_set_vring_kick(void *dev, uint32_t index, int fd)
{
	struct uvh_devhost *v = dev;
	struct uvh_devhost_queue *q = &v->qs[index];
	int old = q->kick_fd, ret;

	q->kick_fd = fd;
	if (q->running) {
		/* A new kick fd on a running ring (QEMU does this): swap it in. */
		ret = engine_call(q->engine, swap_kick_on_engine, q);
		uvh_close_fd(&old);
		if (ret) {
			UVH_ERR("%s: vring %u kick fd swap failed: %s", v->name, index,
				strerror(-ret));
			q->base = uvh_vq_base(&q->vq);
			inflight_drop(q);
		}
		return ret;
	}
	uvh_close_fd(&old);
	ret = queue_start(v, q);
	if (ret)
		uvh_close_fd(&q->kick_fd);	/* a refused start keeps nothing */
	return ret;
}

struct fd_swap {
	struct uvh_devhost_queue *q;
	int fd;
	bool err;
};

static int swap_fd_on_engine(void *engine_ctx, void *arg)
{
	struct fd_swap *s = arg;

	(void)engine_ctx;
	if (s->err) {
		s->q->eq.err_fd = s->fd;
		return 0;
	}
	s->q->eq.call_fd = s->fd;
	/*
	 * The ring may have used buffers before this fd came (SET_VRING_KICK
	 * and ENABLE before SET_VRING_CALL, with traffic already flowing):
	 * their call went nowhere, and a driver waiting for it would wait
	 * forever. One call now; a spurious one costs the driver a look.
	 */
	if (s->fd >= 0 && s->q->vq.pushed && eventfd_write(s->fd, 1) == 0)
		s->q->eq.calls++;
	return 0;
}

static int set_notify_fd(struct uvh_devhost *v, uint32_t index, int fd, bool err)
{
	struct uvh_devhost_queue *q = &v->qs[index];
	int *slot = err ? &q->err_fd : &q->call_fd;
	int old = *slot;
	struct fd_swap s = { .q = q, .fd = fd, .err = err };

	/* The engine may be writing the old fd right now: switch on its
	 * thread, close the old one after. */
	if (q->running)
		engine_call(q->engine, swap_fd_on_engine, &s);
	*slot = fd;
	uvh_close_fd(&old);
	return 0;
}

int uvh__devhost_h_set_vring_call(void *dev, uint32_t index, int fd)
{
	return set_notify_fd(dev, index, fd, false);
}

int uvh__devhost_h_set_vring_err(void *dev, uint32_t index, int fd)
{
	return set_notify_fd(dev, index, fd, true);
}

static int enable_on_engine(void *engine_ctx, void *arg)
{
	struct fd_swap *s = arg;	/* fd carries the enable bit */

	(void)engine_ctx;
	uvh__devhost_set_enabled_on_queue(s->q, s->fd ? (void *)1 : NULL);
	return 0;
}

int uvh__devhost_h_set_vring_enable(void *dev, uint32_t index, bool enable)
{
	struct uvh_devhost *v = dev;
	struct uvh_devhost_queue *q = &v->qs[index];
	struct fd_swap s = { .q = q, .fd = enable };

	if (q->running)
		engine_call(q->engine, enable_on_engine, &s);
	else
		q->enabled = enable;
	return 0;
}
