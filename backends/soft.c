/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the soft backend [VhostSoftBackend]. The VMM's own process runs
 * a device on uvhost engines, through the device host (host/devhost.h) in
 * its in-process mode: any device with a struct uvh_devhost_device_ops
 * (opts.soft_device_ops), or for "soft:net" the virtio-net device
 * (devices/net/net.h) made here. Every op becomes a call of the device
 * host's request handler, under its lock (uvh_devhost_local_call), exactly
 * as a socket request would be handled, but with guest-physical ring
 * addresses and host-pointer memory.
 *
 * The handlers expect what uvh_backend_req validates for a socket (ring
 * index, sizes, ring stopped, feature subset): that is checked here first.
 * Handlers take the fds they are given, so the caller's fds are dup()ed:
 * the dup is the same eventfd, kicks and calls flow as the VMM set them up.
 *
 * Feature bits: the device host's offer minus VHOST_USER_F_PROTOCOL_FEATURES (a
 * wire-protocol bit, meaningless in process). As with a vhost-user front-end
 * that does not ack it, set_features enables every ring (the vhost-net
 * kernel behaviour); set_vring_enable flips the bit afterwards.
 *
 * Memory: host pointers (region fds are not used). A table change is put
 * in force under running rings between two bursts; the VMM must not remove
 * a region holding buffers the device still has (RX buffers not yet used:
 * stop the RX ring first), as devices/net/net.h says.
 *
 * suspend stops every running ring (GET_VRING_BASE: the engine is waited
 * for, the ring's base kept); resume starts the same rings again from that
 * base with the kick fd they had. A ring stopped or started by the VMM in
 * between is no longer suspended.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"
#include "vhost.h"
#include "vhost_internal.h"
#include "backend_req.h"
#include "engine.h"
#include "log.h"
#include "net.h"
#include "devhost.h"

#define MAX_ENGINES	64u
#define DEVICE_ID_NET	1u

struct soft_backend {
	struct uvh_vhost b;		/* first: the ops get a struct uvh_vhost * */
	void *dev;			/* the device hosted */
	uint32_t device_id;		/* its virtio device id, 0: unknown */
	struct uvh_net_dev *net;	/* soft:net's, made and freed here; else NULL */
	struct uvh_devhost *dh;
	struct uvh_engine *engines[MAX_ENGINES];
	unsigned int nengines;
	bool own_engines;
	uint32_t nq;
	bool owner;
	bool *suspended;		/* per ring: stopped by suspend, to restart */
	/* The table in force, to check add/remove against it. */
	struct uvh_vhost_mem_region *regions;
	unsigned int nregions;
};

static struct soft_backend *to_soft(struct uvh_vhost *b)
{
	return (struct soft_backend *)b;
}

/* ---- calling the device host's handlers ------------------------------------------------ */

enum soft_op {
	C_SET_OWNER, C_RESET_OWNER, C_GET_FEATURES, C_SET_FEATURES, C_REM_MEM_REG,
	C_GET_MAX_MEM_SLOTS, C_SET_LOG_BASE, C_SET_LOG_FD, C_SET_VRING_NUM,
	C_SET_VRING_ADDR, C_SET_VRING_BASE, C_GET_VRING_BASE, C_SET_VRING_KICK,
	C_SET_VRING_CALL, C_SET_VRING_ERR, C_SET_VRING_ENABLE, C_GET_STATUS, C_SET_STATUS,
	C_GET_CONFIG, C_SET_CONFIG, C_IOTLB_MSG, C_GET_QUEUE_NUM, C_GET_INFLIGHT_FD,
	C_SET_INFLIGHT_FD, C_SUSPEND, C_RESUME,
};

/* One handler call: what it needs, where its answer goes. */
struct soft_call {
	enum soft_op op;
	struct soft_backend *s;
	uint32_t index;
	uint32_t u32, size;
	uint64_t u64;
	int fd;			/* a dup the handler takes, or -1 */
	bool ran;		/* the handler ran (and took fd) */
	const void *in;
	void *out;
	int *fd_out;
};

#define CALL(s_, op_)	{ .op = (op_), .s = (s_), .fd = -1 }

static int suspend_locked(struct soft_backend *s, struct uvh_devhost *v)
{
	const struct uvh_backend_handler_ops *h = uvh_devhost_handler_ops();
	uint32_t base;

	for (uint32_t i = 0; i < s->nq; i++) {
		if (!uvh_devhost_queue(v, i)->running)
			continue;
		h->get_vring_base(v, i, &base);	/* stops it, keeps its base */
		s->suspended[i] = true;
	}
	return 0;
}

static int resume_locked(struct soft_backend *s, struct uvh_devhost *v)
{
	const struct uvh_backend_handler_ops *h = uvh_devhost_handler_ops();
	int ret, first = 0;

	for (uint32_t i = 0; i < s->nq; i++) {
		struct uvh_devhost_queue *q = uvh_devhost_queue(v, i);
		int fd = -1;

		if (!s->suspended[i])
			continue;
		s->suspended[i] = false;
		/* A start takes a kick fd; the ring keeps its own until then. */
		if (q->kick_fd >= 0) {
			fd = fcntl(q->kick_fd, F_DUPFD_CLOEXEC, 0);
			if (fd < 0) {
				ret = -errno;
				goto fail;
			}
		}
		ret = h->set_vring_kick(v, i, fd);
		if (ret)
			goto fail;
		continue;
fail:
		UVH_ERR("%s: vring %u cannot resume: %s", s->b.name, i, strerror(-ret));
		if (!first)
			first = ret;
	}
	return first;
}

/* Runs under the device host's lock (uvh_devhost_local_call). */
static int soft_run(void *dev, void *arg)
{
	const struct uvh_backend_handler_ops *h = uvh_devhost_handler_ops();
	struct soft_call *c = arg;
	struct uvh_devhost *v = dev;
	struct uvh_devhost_queue *q = uvh_devhost_queue(v, c->index);

	c->ran = true;
	switch (c->op) {
	case C_SET_OWNER:
		return h->set_owner(v);
	case C_RESET_OWNER:
		memset(c->s->suspended, 0, c->s->nq * sizeof(bool));
		return h->reset_owner(v);
	case C_GET_FEATURES:
		return h->get_features(v, c->out);
	case C_SET_FEATURES:
		return h->set_features(v, c->u64);
	case C_REM_MEM_REG:
		return h->rem_mem_reg(v, c->in);
	case C_GET_MAX_MEM_SLOTS:
		return h->get_max_mem_slots(v, c->out);
	case C_SET_LOG_BASE:
		return h->set_log_base(v, c->in, c->fd);
	case C_SET_LOG_FD:
		return h->set_log_fd(v, c->fd);
	case C_SET_VRING_NUM:
	case C_SET_VRING_ADDR:
	case C_SET_VRING_BASE:
		/* What the ring runs with may only change while it is stopped. */
		if (q->running) {
			UVH_ERR("%s: vring %u is running", c->s->b.name, c->index);
			return -EBUSY;
		}
		if (c->op == C_SET_VRING_NUM)
			return h->set_vring_num(v, c->index, c->u32);
		if (c->op == C_SET_VRING_BASE)
			return h->set_vring_base(v, c->index, c->u32);
		return h->set_vring_addr(v, c->in);
	case C_GET_VRING_BASE:
		c->s->suspended[c->index] = false;
		return h->get_vring_base(v, c->index, c->out);
	case C_SET_VRING_KICK:
		c->s->suspended[c->index] = false;
		return h->set_vring_kick(v, c->index, c->fd);
	case C_SET_VRING_CALL:
		return h->set_vring_call(v, c->index, c->fd);
	case C_SET_VRING_ERR:
		return h->set_vring_err(v, c->index, c->fd);
	case C_SET_VRING_ENABLE:
		return h->set_vring_enable(v, c->index, c->u32 != 0);
	case C_GET_STATUS:
		return h->get_status(v, c->out);
	case C_SET_STATUS:
		return h->set_status(v, (uint8_t)c->u32);
	case C_GET_CONFIG:
		return h->get_config(v, c->u32, c->size, 0, c->out);
	case C_SET_CONFIG:
		return h->set_config(v, c->u32, c->size, 0, c->in);
	case C_IOTLB_MSG:
		return h->iotlb_msg(v, c->in);
	case C_GET_QUEUE_NUM:
		return h->get_queue_num(v, c->out);
	case C_GET_INFLIGHT_FD: {
		struct uvh_inflight out;
		int ret = h->get_inflight_fd(v, c->in, &out, c->fd_out);

		if (!ret)
			*(uint64_t *)c->out = out.mmap_size;
		return ret;
	}
	case C_SET_INFLIGHT_FD:
		return h->set_inflight_fd(v, c->in, c->fd);
	case C_SUSPEND:
		return suspend_locked(c->s, v);
	case C_RESUME:
		return resume_locked(c->s, v);
	}
	return -EINVAL;
}

static int soft_call(struct soft_call *c)
{
	int ret;

	c->ran = false;
	ret = uvh_devhost_local_call(c->s->dh, soft_run, c);
	if (!c->ran && c->fd >= 0)
		close(c->fd);	/* never reached the handler that would take it */
	/* A handler the device lacks is an op this backend does not have. */
	return ret == -ENOSYS ? -EOPNOTSUPP : ret;
}

static int check_index(struct soft_backend *s, uint32_t index)
{
	if (index >= s->nq) {
		UVH_ERR("%s: vring %u is beyond the device's %u rings", s->b.name, index, s->nq);
		return -EINVAL;
	}
	return 0;
}

/* ---- features, owner ------------------------------------------------------------ */

static int soft_get_features(struct uvh_vhost *b, uint64_t *features)
{
	struct soft_call c = CALL(to_soft(b), C_GET_FEATURES);
	uint64_t f = 0;
	int ret;

	if (!features)
		return -EINVAL;
	c.out = &f;
	ret = soft_call(&c);
	if (!ret)
		*features = f & ~UVH_BIT(UVH_F_PROTOCOL_FEATURES);
	return ret;
}

static int soft_set_features(struct uvh_vhost *b, uint64_t features)
{
	struct soft_backend *s = to_soft(b);
	struct soft_call c = CALL(s, C_SET_FEATURES);
	uint64_t offered;
	int ret;

	ret = soft_get_features(b, &offered);
	if (!ret)
		ret = uvh__features_offered(b->name, features, offered);
	if (ret)
		return ret;
	c.u64 = features;
	return soft_call(&c);
}

static int soft_set_owner(struct uvh_vhost *b)
{
	struct soft_backend *s = to_soft(b);
	struct soft_call c = CALL(s, C_SET_OWNER);
	int ret = soft_call(&c);

	if (!ret)
		s->owner = true;
	return ret;
}

static int soft_reset_owner(struct uvh_vhost *b)
{
	struct soft_backend *s = to_soft(b);
	struct soft_call c = CALL(s, C_RESET_OWNER);
	int ret = soft_call(&c);

	if (!ret)
		s->owner = false;
	return ret;
}

/* ---- memory ------------------------------------------------------------------------ */

static int soft_set_mem_table(struct uvh_vhost *b, const struct uvh_vhost_mem_region *regions,
			      unsigned int n)
{
	struct soft_backend *s = to_soft(b);
	struct uvh_vhost_mem_region *copy = NULL;
	struct uvh_devhost_local_region *hr = NULL;
	int ret = 0;

	if (n && !regions)
		return -EINVAL;
	if (n > UVH_MAX_MEM_SLOTS) {
		UVH_ERR("%s: %u regions, at most %u", b->name, n, UVH_MAX_MEM_SLOTS);
		return -E2BIG;
	}
	ret = uvh__regions_check(b->name, regions, n, 0, NULL, NULL);
	if (ret)
		return ret;
	if (n) {
		copy = calloc(n, sizeof(*copy));
		hr = calloc(n, sizeof(*hr));
		if (!copy || !hr) {
			ret = -ENOMEM;
			goto out;
		}
	}
	for (unsigned int i = 0; i < n; i++) {
		copy[i] = regions[i];
		copy[i].fd = -1;	/* not kept: the memory is the VMM's mapping */
		hr[i].gpa = regions[i].gpa;
		hr[i].size = regions[i].size;
		hr[i].hva = regions[i].hva;
	}
	ret = uvh_devhost_set_mem_local(s->dh, hr, n);
	if (ret)
		goto out;
	free(s->regions);
	s->regions = copy;
	s->nregions = n;
	copy = NULL;
out:
	free(copy);
	free(hr);
	return ret;
}

static int soft_add_mem_region(struct uvh_vhost *b, const struct uvh_vhost_mem_region *region)
{
	struct soft_backend *s = to_soft(b);
	struct uvh_vhost_mem_region *grown;
	struct uvh_devhost_local_region hr;
	int ret;

	if (!region)
		return -EINVAL;
	ret = uvh__region_check(b->name, region);
	if (!ret)
		ret = uvh__region_disjoint(b->name, s->regions, s->nregions, region, 0);
	if (ret)
		return ret;
	if (s->nregions >= UVH_MAX_MEM_SLOTS)
		return -ENOSPC;
	ret = uvh__regions_with(s->regions, s->nregions, region, &grown);
	if (ret)
		return ret;
	grown[s->nregions].fd = -1;	/* not kept: the memory is the VMM's mapping */
	hr.gpa = region->gpa;
	hr.size = region->size;
	hr.hva = region->hva;
	ret = uvh_devhost_add_mem_local(s->dh, &hr);
	if (ret) {
		free(grown);
		return ret;
	}
	free(s->regions);
	s->regions = grown;
	s->nregions++;
	return 0;
}

static int soft_remove_mem_region(struct uvh_vhost *b,
				  const struct uvh_vhost_mem_region *region)
{
	struct soft_backend *s = to_soft(b);
	struct soft_call c = CALL(s, C_REM_MEM_REG);
	struct uvh_mem_region r = { 0 };
	int i, ret;

	if (!region)
		return -EINVAL;
	i = uvh__region_find(b->name, s->regions, s->nregions, region);
	if (i < 0)
		return i;
	/* Host regions have no front-end address: uva 0 names them. */
	r.guest_phys_addr = region->gpa;
	r.memory_size = region->size;
	c.in = &r;
	ret = soft_call(&c);
	if (ret)
		return ret;
	uvh__region_remove_at(s->regions, &s->nregions, (unsigned int)i);
	return 0;
}

static int soft_get_max_mem_slots(struct uvh_vhost *b, uint64_t *slots)
{
	struct soft_call c = CALL(to_soft(b), C_GET_MAX_MEM_SLOTS);

	if (!slots)
		return -EINVAL;
	c.out = slots;
	return soft_call(&c);
}

static int soft_set_log_base(struct uvh_vhost *b, const struct uvh_vhost_log *log)
{
	struct soft_call c = CALL(to_soft(b), C_SET_LOG_BASE);
	struct uvh_dirty_log_area l;

	if (!log)
		return -EINVAL;
	/* The device maps the bitmap itself (it may be replaced under running
	 * rings and is unmapped when the session ends): it needs the fd. */
	if (log->fd < 0) {
		UVH_ERR("%s: set_log_base needs the bitmap's fd (an hva alone is not supported)",
			b->name);
		return -EINVAL;
	}
	if (!log->size || uvh__wraps(log->fd_offset, log->size)) {
		UVH_ERR("%s: log area 0x%" PRIx64 "+0x%" PRIx64 " is invalid", b->name,
			log->fd_offset, log->size);
		return -EINVAL;
	}
	l.mmap_size = log->size;
	l.mmap_offset = log->fd_offset;
	c.in = &l;
	c.fd = uvh__dup_fd(log->fd);
	if (c.fd < 0)
		return c.fd;
	return soft_call(&c);
}

static int soft_set_log_fd(struct uvh_vhost *b, int fd)
{
	struct soft_call c = CALL(to_soft(b), C_SET_LOG_FD);

	c.fd = uvh__dup_fd(fd);
	if (fd >= 0 && c.fd < 0)
		return c.fd;
	return soft_call(&c);
}

/* ---- rings ----------------------------------------------------------------------- */

static bool packed_acked(struct soft_backend *s)
{
	return uvh_devhost_features(s->dh) & UVH_BIT(UVH_VIRTIO_F_RING_PACKED);
}

static int soft_set_vring_num(struct uvh_vhost *b, uint32_t index, uint32_t num)
{
	struct soft_backend *s = to_soft(b);
	struct soft_call c = CALL(s, C_SET_VRING_NUM);
	int ret = check_index(s, index);

	if (ret)
		return ret;
	if (!num || num > UVH__VRING_NUM_MAX || (!packed_acked(s) && (num & (num - 1)))) {
		UVH_ERR("%s: vring %u size %u is invalid", b->name, index, num);
		return -EINVAL;
	}
	c.index = index;
	c.u32 = num;
	return soft_call(&c);
}

static int soft_set_vring_addr(struct uvh_vhost *b, const struct uvh_vhost_vring_addr *addr)
{
	struct soft_backend *s = to_soft(b);
	struct soft_call c = CALL(s, C_SET_VRING_ADDR);
	struct uvh_vring_addr a;
	int ret;

	if (!addr)
		return -EINVAL;
	ret = check_index(s, addr->index);
	if (ret)
		return ret;
	if (addr->flags & ~UVH_VRING_F_LOG) {
		UVH_ERR("%s: vring %u flags 0x%x are unknown", b->name, addr->index, addr->flags);
		return -EINVAL;
	}
	/* In-process sessions take guest-physical addresses (checked against
	 * the memory table when the ring starts). */
	memset(&a, 0, sizeof(a));
	a.index = addr->index;
	a.flags = addr->flags;
	a.desc_user_addr = addr->desc_gpa;
	a.avail_user_addr = addr->avail_gpa;
	a.used_user_addr = addr->used_gpa;
	a.log_guest_addr = addr->log_gpa;
	c.index = addr->index;
	c.in = &a;
	return soft_call(&c);
}

static int soft_set_vring_base(struct uvh_vhost *b, uint32_t index, uint32_t base)
{
	struct soft_backend *s = to_soft(b);
	struct soft_call c = CALL(s, C_SET_VRING_BASE);
	int ret = check_index(s, index);

	if (ret)
		return ret;
	if (!packed_acked(s) && base > 0xffff) {
		UVH_ERR("%s: vring %u split base 0x%x is invalid", b->name, index, base);
		return -EINVAL;
	}
	c.index = index;
	c.u32 = base;
	return soft_call(&c);
}

static int soft_get_vring_base(struct uvh_vhost *b, uint32_t index, uint32_t *base)
{
	struct soft_backend *s = to_soft(b);
	struct soft_call c = CALL(s, C_GET_VRING_BASE);
	int ret = check_index(s, index);

	if (ret)
		return ret;
	if (!base)
		return -EINVAL;
	c.index = index;
	c.out = base;
	return soft_call(&c);
}

static int vring_fd(struct uvh_vhost *b, enum soft_op op, uint32_t index, int fd)
{
	struct soft_backend *s = to_soft(b);
	struct soft_call c = CALL(s, op);
	int ret = check_index(s, index);

	if (ret)
		return ret;
	c.index = index;
	c.fd = uvh__dup_fd(fd);
	if (fd >= 0 && c.fd < 0)
		return c.fd;
	return soft_call(&c);
}

static int soft_set_vring_kick(struct uvh_vhost *b, uint32_t index, int fd)
{
	return vring_fd(b, C_SET_VRING_KICK, index, fd);
}

static int soft_set_vring_call(struct uvh_vhost *b, uint32_t index, int fd)
{
	return vring_fd(b, C_SET_VRING_CALL, index, fd);
}

static int soft_set_vring_err(struct uvh_vhost *b, uint32_t index, int fd)
{
	return vring_fd(b, C_SET_VRING_ERR, index, fd);
}

static int soft_set_vring_enable(struct uvh_vhost *b, uint32_t index, bool enable)
{
	struct soft_backend *s = to_soft(b);
	struct soft_call c = CALL(s, C_SET_VRING_ENABLE);
	int ret = check_index(s, index);

	if (ret)
		return ret;
	c.index = index;
	c.u32 = enable;
	return soft_call(&c);
}

/* ---- status, config, IOTLB, queues ----------------------------------------------- */

static int soft_get_status(struct uvh_vhost *b, uint8_t *status)
{
	struct soft_call c = CALL(to_soft(b), C_GET_STATUS);

	if (!status)
		return -EINVAL;
	c.out = status;
	return soft_call(&c);
}

static int soft_set_status(struct uvh_vhost *b, uint8_t status)
{
	struct soft_call c = CALL(to_soft(b), C_SET_STATUS);

	c.u32 = status;
	return soft_call(&c);
}

static int check_config(struct uvh_vhost *b, uint32_t offset, uint32_t size, const void *buf)
{
	if (!uvh__config_range_ok(offset, size, buf)) {
		UVH_ERR("%s: config range %u+%u is invalid", b->name, offset, size);
		return -EINVAL;
	}
	return 0;
}

static int soft_get_config(struct uvh_vhost *b, uint32_t offset, uint32_t size, uint8_t *buf)
{
	struct soft_call c = CALL(to_soft(b), C_GET_CONFIG);
	int ret = check_config(b, offset, size, buf);

	if (ret)
		return ret;
	memset(buf, 0, size);
	c.u32 = offset;
	c.size = size;
	c.out = buf;
	return soft_call(&c);
}

static int soft_set_config(struct uvh_vhost *b, uint32_t offset, uint32_t size,
			   const uint8_t *buf)
{
	struct soft_call c = CALL(to_soft(b), C_SET_CONFIG);
	int ret = check_config(b, offset, size, buf);

	if (ret)
		return ret;
	c.u32 = offset;
	c.size = size;
	c.in = buf;
	return soft_call(&c);
}

static int soft_iotlb_msg(struct uvh_vhost *b, const struct uvh_iotlb *msg)
{
	struct soft_call c = CALL(to_soft(b), C_IOTLB_MSG);

	if (!msg)
		return -EINVAL;
	if ((msg->type != UVH_IOTLB_UPDATE && msg->type != UVH_IOTLB_INVALIDATE) ||
	    msg->perm > UVH_IOTLB_RW ||
	    (msg->type == UVH_IOTLB_UPDATE &&
	     (!msg->size || uvh__wraps(msg->iova, msg->size) || uvh__wraps(msg->uaddr, msg->size)))) {
		UVH_ERR("%s: IOTLB message type %u perm %u 0x%" PRIx64 "+0x%" PRIx64
			" is invalid", b->name, msg->type, msg->perm, msg->iova, msg->size);
		return -EINVAL;
	}
	c.in = msg;
	return soft_call(&c);
}

static int soft_get_queue_num(struct uvh_vhost *b, uint64_t *num)
{
	struct soft_call c = CALL(to_soft(b), C_GET_QUEUE_NUM);

	if (!num)
		return -EINVAL;
	c.out = num;
	return soft_call(&c);
}

static int soft_get_device_id(struct uvh_vhost *b, uint32_t *id)
{
	if (!id)
		return -EINVAL;
	if (!to_soft(b)->device_id)
		return -ENOTSUP;
	*id = to_soft(b)->device_id;
	return 0;
}

static int soft_suspend(struct uvh_vhost *b)
{
	struct soft_call c = CALL(to_soft(b), C_SUSPEND);

	return soft_call(&c);
}

static int soft_resume(struct uvh_vhost *b)
{
	struct soft_call c = CALL(to_soft(b), C_RESUME);

	return soft_call(&c);
}

static int check_inflight(struct soft_backend *s, uint16_t num_queues, uint16_t queue_size)
{
	if (!num_queues || num_queues > s->nq || !queue_size || queue_size > UVH__VRING_NUM_MAX) {
		UVH_ERR("%s: inflight area for %u rings of %u is invalid (%u rings)", s->b.name,
			num_queues, queue_size, s->nq);
		return -EINVAL;
	}
	return 0;
}

static int soft_get_inflight_fd(struct uvh_vhost *b, uint16_t num_queues, uint16_t queue_size,
				int *fd, uint64_t *mmap_size)
{
	struct soft_backend *s = to_soft(b);
	struct soft_call c = CALL(s, C_GET_INFLIGHT_FD);
	struct uvh_inflight in = { .num_queues = num_queues, .queue_size = queue_size };
	uint64_t size = 0;
	int out = -1, ret;

	if (!fd || !mmap_size)
		return -EINVAL;
	ret = check_inflight(s, num_queues, queue_size);
	if (ret)
		return ret;
	c.in = &in;
	c.out = &size;
	c.fd_out = &out;
	ret = soft_call(&c);
	if (ret)
		return ret;
	*fd = out;	/* the handler's fd: the caller's now (the device host keeps its mapping) */
	*mmap_size = size;
	return 0;
}

static int soft_set_inflight_fd(struct uvh_vhost *b, uint16_t num_queues, uint16_t queue_size,
				int fd, uint64_t mmap_size)
{
	struct soft_backend *s = to_soft(b);
	struct soft_call c = CALL(s, C_SET_INFLIGHT_FD);
	struct uvh_inflight in = {
		.mmap_size = mmap_size, .num_queues = num_queues, .queue_size = queue_size,
	};
	int ret = check_inflight(s, num_queues, queue_size);

	if (ret)
		return ret;
	if (fd < 0)
		return -EBADF;
	if (!mmap_size)
		return -EINVAL;
	c.in = &in;
	c.fd = uvh__dup_fd(fd);
	if (c.fd < 0)
		return c.fd;
	return soft_call(&c);
}

/* ---- life cycle -------------------------------------------------------------------- */

static void soft_free(struct soft_backend *s)
{
	/* Rings stop (engines waited for) before their engines and device go. */
	uvh_devhost_free(s->dh);
	if (s->own_engines)
		for (unsigned int i = 0; i < s->nengines; i++)
			uvh_engine_destroy(s->engines[i]);
	uvh_net_destroy(s->net);
	free(s->suspended);
	free(s->regions);
	free(s);
}

static void soft_close(struct uvh_vhost *b)
{
	soft_free(to_soft(b));
}

static const struct uvh_vhost_ops soft_ops = {
	.get_features = soft_get_features,
	.set_features = soft_set_features,
	.set_owner = soft_set_owner,
	.reset_owner = soft_reset_owner,
	.set_mem_table = soft_set_mem_table,
	.add_mem_region = soft_add_mem_region,
	.remove_mem_region = soft_remove_mem_region,
	.get_max_mem_slots = soft_get_max_mem_slots,
	.set_log_base = soft_set_log_base,
	.set_log_fd = soft_set_log_fd,
	.set_vring_num = soft_set_vring_num,
	.get_vring_num_max = uvh__get_vring_num_max,
	.set_vring_addr = soft_set_vring_addr,
	.set_vring_base = soft_set_vring_base,
	.get_vring_base = soft_get_vring_base,
	.set_vring_kick = soft_set_vring_kick,
	.set_vring_call = soft_set_vring_call,
	.set_vring_err = soft_set_vring_err,
	.set_vring_enable = soft_set_vring_enable,
	.get_status = soft_get_status,
	.set_status = soft_set_status,
	.get_config = soft_get_config,
	.set_config = soft_set_config,
	.iotlb_msg = soft_iotlb_msg,
	.get_queue_num = soft_get_queue_num,
	.get_device_id = soft_get_device_id,
	.suspend = soft_suspend,
	.resume = soft_resume,
	.get_inflight_fd = soft_get_inflight_fd,
	.set_inflight_fd = soft_set_inflight_fd,
	.close = soft_close,
};

static int make_engines(struct soft_backend *s, const struct uvh_vhost_open_opts *opts)
{
	unsigned int n = opts->soft_engines ? opts->soft_engines : 1;
	int ret;

	if (n > MAX_ENGINES)
		return -EINVAL;
	if (opts->soft_engine_list) {
		/* The caller's engines: used, never stopped or freed here. */
		for (unsigned int i = 0; i < n; i++)
			if (!opts->soft_engine_list[i])
				return -EINVAL;
		memcpy(s->engines, opts->soft_engine_list, n * sizeof(s->engines[0]));
		s->nengines = n;
		return 0;
	}
	s->own_engines = true;
	for (unsigned int i = 0; i < n; i++) {
		char name[32];
		struct uvh_engine_opts eo = {
			.name = name,
			.cpu = opts->soft_cpu > 0 ? opts->soft_cpu + (int)i : -1,
			.numa_node = -1,
			/* Polls while the guest is busy, sleeps on its kicks when
			 * idle: a VMM's device thread should not burn a core. */
			.mode = UVH_ENGINE_ADAPTIVE,
		};

		snprintf(name, sizeof(name), "uvh-soft-%u", i);
		s->engines[i] = uvh_engine_create(&eo);
		if (!s->engines[i])
			return -errno;
		s->nengines = i + 1;
		ret = uvh_engine_start(s->engines[i]);
		if (ret)
			return ret;
	}
	return 0;
}

int uvh_vhost_soft_open(const char *arg, const struct uvh_vhost_open_opts *opts,
			  struct uvh_vhost **out)
{
	static const struct uvh_vhost_open_opts defaults;
	struct uvh_net_opts loopback = { .type = UVH_NET_PORT_LOOPBACK, .name = "soft" };
	struct uvh_devhost_opts vo = { .name = "soft" };
	struct soft_backend *s;
	int ret;

	if (!arg || !out)
		return -EINVAL;
	if (!opts)
		opts = &defaults;
	if (!opts->soft_device_ops && strcmp(arg, "net")) {
		UVH_ERR("soft: unknown device '%s' ('net', or a device of the caller's "
			"through soft_device_ops)", arg);
		return -EINVAL;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->b.ops = &soft_ops;
	s->b.type = UVH_VHOST_SOFT;
	s->b.fd = -1;
	snprintf(s->b.name, sizeof(s->b.name), "soft:%s", arg);
	if (opts->soft_device_ops) {
		vo.ops = opts->soft_device_ops;
		s->dev = opts->soft_device;
		s->device_id = opts->soft_device_id;
	} else {
		s->net = uvh_net_create(opts->soft_net ? opts->soft_net : &loopback);
		if (!s->net) {
			ret = -errno;
			goto fail;
		}
		vo.ops = &uvh_net_devhost_ops;
		s->dev = s->net;
		s->device_id = DEVICE_ID_NET;
	}
	if (!vo.ops->num_queues) {
		ret = -EINVAL;
		goto fail;
	}
	s->nq = vo.ops->num_queues(s->dev);
	s->suspended = calloc(s->nq, sizeof(bool));
	if (!s->suspended) {
		ret = -ENOMEM;
		goto fail;
	}
	ret = make_engines(s, opts);
	if (ret)
		goto fail;
	vo.dev = s->dev;
	vo.engines = s->engines;
	vo.nengines = s->nengines;
	s->dh = uvh_devhost_new(&vo);
	if (!s->dh) {
		ret = -errno;
		goto fail;
	}
	ret = uvh_devhost_connect_local(s->dh);
	if (ret)
		goto fail;
	*out = &s->b;
	return 0;

fail:
	UVH_ERR("soft: cannot create the device: %s", strerror(-ret));
	soft_free(s);
	return ret;
}

struct uvh_net_dev *uvh_vhost_soft_net(struct uvh_vhost *b)
{
	return b && b->ops == &soft_ops ? to_soft(b)->net : NULL;
}

void *uvh_vhost_soft_device(struct uvh_vhost *b)
{
	return b && b->ops == &soft_ops ? to_soft(b)->dev : NULL;
}
