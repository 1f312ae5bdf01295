/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the back-end's request handlers, one per request (the table is
 * BACKEND_HANDLERS in backend_req_internal.h). A handler runs after
 * backend_req.c checked the message's size, fds, gates, vring index and
 * ring state (see the security model there); it checks the field values
 * and calls the device.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"
#include "log.h"
#include "backend_req_internal.h"

/* ---- helpers ------------------------------------------------------------ */

const char *req_name(const struct uvh_msg *msg)
{
	return uvh_frontend_request_name(msg->hdr.request);
}

/* Log why @msg is refused and return @err. */
int req_reject(const struct uvh_msg *msg, int err, const char *fmt, ...)
{
	char why[192];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	UVH_ERR("%s: %s", req_name(msg), why);
	return err;
}

static int dev_result(const struct uvh_msg *msg, int ret)
{
	if (ret > 0)
		ret = -EIO;	/* not the contract; never report success */
	if (ret < 0)
		return req_reject(msg, ret, "device failed: %s", strerror(-ret));
	return 0;
}

static int no_op(const struct uvh_msg *msg)
{
	return req_reject(msg, -ENOSYS, "not implemented by the device");
}

/* Call a device op, or fail with -ENOSYS when it is NULL. The arguments
 * (and so take_fd()) are only evaluated when the op exists. */
#define DEV_CALL(req, msg, op, ...) \
	((req)->ops->op ? dev_result((msg), (req)->ops->op(__VA_ARGS__)) : no_op(msg))

/* Hand the message's fd to a callback: from now on it is the device's. */
static int take_fd(struct uvh_msg *msg)
{
	int fd = msg->nfds ? msg->fds[0] : -1;

	msg->nfds = 0;
	return fd;
}

static const int *take_fds(struct uvh_msg *msg)
{
	msg->nfds = 0;
	return msg->fds;
}

void req_reply_u64(struct uvh_backend_req *req, uint64_t v)
{
	req->rep.body.u64 = v;
	req->rep.size = sizeof(uint64_t);
}

static void stop_all_rings(struct uvh_backend_req *req)
{
	for (uint32_t i = 0; i < req->max_queues; i++) {
		req->vrings[i].started = false;
		req->vrings[i].enabled = false;
	}
}

static uint64_t last_byte(uint64_t start, uint64_t len)
{
	return start + (len - 1);
}

/* Inclusive ends so that a range ending at 2^64 does not wrap. */
static bool overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a <= last_byte(b, blen) && b <= last_byte(a, alen);
}

static int check_region(const struct uvh_msg *msg, const struct uvh_mem_region *r)
{
	uint64_t n = r->memory_size;

	if (!n)
		return req_reject(msg, -EINVAL, "region at GPA 0x%" PRIx64 " has size 0",
			      r->guest_phys_addr);
	if (last_byte(r->guest_phys_addr, n) < r->guest_phys_addr ||
	    last_byte(r->userspace_addr, n) < r->userspace_addr ||
	    last_byte(r->mmap_offset, n) < r->mmap_offset)
		return req_reject(msg, -EOVERFLOW, "region at GPA 0x%" PRIx64
			      " size 0x%" PRIx64 " wraps around", r->guest_phys_addr, n);
	return 0;
}

static int check_disjoint(const struct uvh_msg *msg, const struct uvh_mem_region *a,
			  const struct uvh_mem_region *b)
{
	if (overlap(a->guest_phys_addr, a->memory_size, b->guest_phys_addr, b->memory_size))
		return req_reject(msg, -EINVAL, "regions at GPA 0x%" PRIx64 " and 0x%" PRIx64
			      " overlap", a->guest_phys_addr, b->guest_phys_addr);
	if (overlap(a->userspace_addr, a->memory_size, b->userspace_addr, b->memory_size))
		return req_reject(msg, -EINVAL, "regions at user address 0x%" PRIx64 " and 0x%"
			      PRIx64 " overlap", a->userspace_addr, b->userspace_addr);
	return 0;
}

static int check_inflight(const struct uvh_backend_req *req, const struct uvh_msg *msg,
			  const struct uvh_inflight *in)
{
	if (!in->num_queues || in->num_queues > req->max_queues ||
	    !in->queue_size || in->queue_size > MAX_VRING_NUM)
		return req_reject(msg, -EINVAL, "%u queues of size %u is invalid (%u queues)",
			      in->num_queues, in->queue_size, req->max_queues);
	return 0;
}

static int check_config(const struct uvh_msg *msg)
{
	const struct uvh_config *c = &msg->payload.config;

	if (!c->size || c->offset > UVH_CONFIG_MAX_SIZE ||
	    c->size > UVH_CONFIG_MAX_SIZE - c->offset)
		return req_reject(msg, -EINVAL, "config range %u+%u is invalid", c->offset, c->size);
	if (c->flags > UVH_CONFIG_MIGRATION)
		return req_reject(msg, -EINVAL, "config flags %u are unknown", c->flags);
	return 0;
}

/* ---- one handler per request -------------------------------------------- */

/* The requests that only pass on nothing, their fd, or a vring's fd. */
#define PLAIN_HANDLER(op) \
int h_##op(struct uvh_backend_req *req, struct uvh_msg *msg) \
{ \
	return DEV_CALL(req, msg, op, req->dev); \
}
#define FD_HANDLER(op) \
int h_##op(struct uvh_backend_req *req, struct uvh_msg *msg) \
{ \
	return DEV_CALL(req, msg, op, req->dev, take_fd(msg)); \
}
#define VRING_FD_HANDLER(op) \
int h_##op(struct uvh_backend_req *req, struct uvh_msg *msg) \
{ \
	uint32_t idx = msg->payload.u64 & UVH_VRING_IDX_MASK; \
\
	return DEV_CALL(req, msg, op, req->dev, idx, take_fd(msg)); \
}
/* And those whose reply is a u64 0 on success. */
#define U64_HANDLER(op) \
int h_##op(struct uvh_backend_req *req, struct uvh_msg *msg) \
{ \
	int ret = DEV_CALL(req, msg, op, req->dev); \
\
	if (!ret) \
		req_reply_u64(req, 0); \
	return ret; \
}

PLAIN_HANDLER(set_owner)
PLAIN_HANDLER(postcopy_listen)
FD_HANDLER(set_log_fd)
FD_HANDLER(set_backend_req_fd)
FD_HANDLER(gpu_set_socket)
VRING_FD_HANDLER(set_vring_call)
VRING_FD_HANDLER(set_vring_err)
U64_HANDLER(postcopy_end)
U64_HANDLER(check_device_state)

int h_get_features(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint64_t f = 0;
	int ret = DEV_CALL(req, msg, get_features, req->dev, &f);

	if (!ret)
		req_reply_u64(req, f);
	return ret;
}

int h_set_features(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint64_t want = msg->payload.u64, offered = 0;
	int ret;

	ret = DEV_CALL(req, msg, get_features, req->dev, &offered);
	if (ret)
		return ret;
	if (want & ~offered)
		return req_reject(msg, -EINVAL, "features 0x%" PRIx64 " were not offered",
			      want & ~offered);
	ret = DEV_CALL(req, msg, set_features, req->dev, want);
	if (ret)
		return ret;
	req->features = want;
	/* The spec: without PROTOCOL_FEATURES there is no SET_VRING_ENABLE,
	 * so every ring is enabled right away. */
	if (!(want & UVH_BIT(UVH_F_PROTOCOL_FEATURES)))
		for (uint32_t i = 0; i < req->max_queues; i++)
			req->vrings[i].enabled = true;
	return 0;
}

int h_reset_owner(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	int ret;

	/* Deprecated: the spec allows ignoring it. The ring states only
	 * change when the device really did something. */
	if (!req->ops->reset_owner) {
		UVH_DEBUG("%s: ignored", req_name(msg));
		return 0;
	}
	ret = DEV_CALL(req, msg, reset_owner, req->dev);
	if (!ret)
		stop_all_rings(req);
	return ret;
}

int h_set_mem_table(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	const struct uvh_mem_table *t = &msg->payload.mem_table;
	unsigned int n = t->nregions;	/* <= 8: size already checked */
	int ret;

	for (unsigned int i = 0; i < n; i++) {
		ret = check_region(msg, &t->regions[i]);
		for (unsigned int j = 0; !ret && j < i; j++)
			ret = check_disjoint(msg, &t->regions[j], &t->regions[i]);
		if (ret)
			return ret;
	}
	ret = DEV_CALL(req, msg, set_mem_table, req->dev, t->regions, take_fds(msg), n);
	if (!ret) {
		memcpy(req->regions, t->regions, n * sizeof(t->regions[0]));
		for (unsigned int i = 0; i < n; i++)
			req->region_refs[i] = 1;
		req->nregions = n;
	}
	return ret;
}

int h_set_log_base(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	const struct uvh_dirty_log_area *log = &msg->payload.log;

	if (!log->mmap_size || last_byte(log->mmap_offset, log->mmap_size) < log->mmap_offset)
		return req_reject(msg, -EINVAL, "log area 0x%" PRIx64 "+0x%" PRIx64 " is invalid",
			      log->mmap_offset, log->mmap_size);
	return DEV_CALL(req, msg, set_log_base, req->dev, log, take_fd(msg));
}

int h_set_vring_num(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint32_t idx = msg->payload.state.index, num = msg->payload.state.num;
	bool packed = req->features & UVH_BIT(UVH_VIRTIO_F_RING_PACKED);
	int ret;

	/* Packed rings may have any size; split rings need a power of 2. */
	if (!num || num > MAX_VRING_NUM || (!packed && (num & (num - 1))))
		return req_reject(msg, -EINVAL, "vring %u size %u is invalid", idx, num);
	ret = DEV_CALL(req, msg, set_vring_num, req->dev, idx, num);
	if (!ret)
		req->vrings[idx].num = num;
	return ret;
}

int h_set_vring_addr(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	const struct uvh_vring_addr *a = &msg->payload.addr;

	/* The addresses themselves are checked when the device maps them. */
	if (a->flags & ~UVH_VRING_F_LOG)
		return req_reject(msg, -EINVAL, "vring %u flags 0x%x are unknown", a->index, a->flags);
	return DEV_CALL(req, msg, set_vring_addr, req->dev, a);
}

int h_set_vring_base(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint32_t idx = msg->payload.state.index, base = msg->payload.state.num;

	/* A split ring's base is a 16-bit index; bits 16-31 are reserved. */
	if (!(req->features & UVH_BIT(UVH_VIRTIO_F_RING_PACKED)) && base > 0xffff)
		return req_reject(msg, -EINVAL, "vring %u split base 0x%x is invalid", idx, base);
	return DEV_CALL(req, msg, set_vring_base, req->dev, idx, base);
}

static int get_base(struct uvh_backend_req *req, struct uvh_msg *msg, bool drain)
{
	uint32_t idx = msg->payload.state.index, base = 0;
	int ret;

	if (drain)
		ret = DEV_CALL(req, msg, get_vring_base, req->dev, idx, &base);
	else
		ret = DEV_CALL(req, msg, get_vring_base_skip_drain, req->dev, idx, &base);
	if (ret)
		return ret;
	req->vrings[idx].started = false;
	req->rep.body.state.index = idx;
	req->rep.body.state.num = base;
	req->rep.size = sizeof(struct uvh_vring_state);
	return 0;
}

int h_get_vring_base(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	return get_base(req, msg, true);
}

int h_get_vring_base_skip_drain(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	return get_base(req, msg, false);
}

int h_set_vring_kick(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint32_t idx = msg->payload.u64 & UVH_VRING_IDX_MASK;
	int ret = DEV_CALL(req, msg, set_vring_kick, req->dev, idx, take_fd(msg));

	/* The spec: the ring starts on this message, not on a first kick. */
	if (!ret)
		req->vrings[idx].started = true;
	return ret;
}

/* The protocol features on offer; the device must offer F_PROTOCOL_FEATURES. */
static int protocol_offer(struct uvh_backend_req *req, struct uvh_msg *msg,
			  uint64_t *offered)
{
	uint64_t f = 0;
	int ret;

	ret = DEV_CALL(req, msg, get_features, req->dev, &f);
	if (ret)
		return ret;
	if (!(f & UVH_BIT(UVH_F_PROTOCOL_FEATURES)))
		return req_reject(msg, -ENOPROTOOPT, "the device does not offer F_PROTOCOL_FEATURES");
	*offered = 0;
	return DEV_CALL(req, msg, get_protocol_features, req->dev, offered);
}

int h_get_protocol_features(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint64_t offered;
	int ret = protocol_offer(req, msg, &offered);

	if (!ret)
		req_reply_u64(req, offered);
	return ret;
}

int h_set_protocol_features(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	const uint64_t inband_needs = UVH_BIT(UVH_PROTOCOL_F_BACKEND_REQ) |
				      UVH_BIT(UVH_PROTOCOL_F_REPLY_ACK);
	uint64_t want = msg->payload.u64, offered, pf;
	int ret;

	ret = protocol_offer(req, msg, &offered);
	if (ret)
		return ret;
	pf = want & offered;
	if (want & ~offered)
		UVH_WARN("%s: ignoring protocol features 0x%" PRIx64 " that were not offered",
			 req_name(msg), want & ~offered);
	if ((pf & UVH_BIT(UVH_PROTOCOL_F_INBAND_NOTIFICATIONS)) &&
	    (pf & inband_needs) != inband_needs)
		return req_reject(msg, -EINVAL, "INBAND_NOTIFICATIONS needs BACKEND_REQ and REPLY_ACK");
	ret = DEV_CALL(req, msg, set_protocol_features, req->dev, pf);
	if (!ret) {
		req->protocol_features = pf;
		req->protocol_negotiated = true;
	}
	return ret;
}

int h_get_queue_num(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint64_t n = req->max_queues;
	int ret;

	if (req->ops->get_queue_num) {
		ret = DEV_CALL(req, msg, get_queue_num, req->dev, &n);
		if (ret)
			return ret;
		/* More would make the front-end use rings we refuse. */
		if (!n || n > req->max_queues)
			return req_reject(msg, -ERANGE, "device reports %" PRIu64
				      " queues, the connection has %u", n, req->max_queues);
	}
	req_reply_u64(req, n);
	return 0;
}

int h_set_vring_enable(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint32_t idx = msg->payload.state.index, on = msg->payload.state.num;
	int ret;

	if (on > 1)
		return req_reject(msg, -EINVAL, "vring %u enable value %u is not 0 or 1", idx, on);
	ret = DEV_CALL(req, msg, set_vring_enable, req->dev, idx, on);
	if (!ret)
		req->vrings[idx].enabled = on;
	return ret;
}

int h_send_rarp(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	return DEV_CALL(req, msg, send_rarp, req->dev, msg->payload.raw);
}

int h_net_set_mtu(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint64_t mtu = msg->payload.u64;

	if (mtu < MTU_MIN || mtu > MTU_MAX)
		return req_reject(msg, -EINVAL, "MTU %" PRIu64 " is out of range", mtu);
	return DEV_CALL(req, msg, net_set_mtu, req->dev, (uint16_t)mtu);
}

int h_iotlb_msg(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	const struct uvh_iotlb *m = &msg->payload.iotlb;	/* a 26-byte tail is zeroed */
	int ret;

	/* Misses and access failures go the other way. */
	if (m->type != UVH_IOTLB_UPDATE && m->type != UVH_IOTLB_INVALIDATE)
		return req_reject(msg, -EINVAL, "IOTLB type %u is not a front-end request", m->type);
	if (m->perm > UVH_IOTLB_RW)
		return req_reject(msg, -EINVAL, "IOTLB permission %u is unknown", m->perm);
	if (m->type == UVH_IOTLB_UPDATE &&
	    (!m->size || last_byte(m->iova, m->size) < m->iova ||
	     last_byte(m->uaddr, m->size) < m->uaddr))
		return req_reject(msg, -EINVAL, "IOTLB update 0x%" PRIx64 "+0x%" PRIx64
			      " is invalid", m->iova, m->size);
	ret = DEV_CALL(req, msg, iotlb_msg, req->dev, m);
	if (!ret)
		req_reply_u64(req, 0);
	return ret;
}

int h_set_vring_endian(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint32_t idx = msg->payload.state.index, endian = msg->payload.state.num;

	if (endian > 1)
		return req_reject(msg, -EINVAL, "vring %u endianness %u is unknown", idx, endian);
	return DEV_CALL(req, msg, set_vring_endian, req->dev, idx, endian);
}

int h_get_config(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	const struct uvh_config *in = &msg->payload.config;
	struct uvh_config *out = &req->rep.body.config;
	int ret = check_config(msg);

	if (ret)
		return ret;
	out->offset = in->offset;
	out->size = in->size;
	out->flags = in->flags;
	memset(out->region, 0, in->size);
	ret = DEV_CALL(req, msg, get_config, req->dev, in->offset, in->size, in->flags,
		       out->region);
	if (!ret)
		req->rep.size = UVH_CONFIG_HEAD_SIZE + in->size;
	return ret;
}

int h_set_config(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	const struct uvh_config *c = &msg->payload.config;
	int ret = check_config(msg);

	if (ret)
		return ret;
	return DEV_CALL(req, msg, set_config, req->dev, c->offset, c->size, c->flags,
			c->region);
}

int h_create_crypto_session(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint32_t out_size = UVH_MSG_MAX_PAYLOAD;
	int ret;

	ret = DEV_CALL(req, msg, create_crypto_session, req->dev, msg->payload.raw,
		       msg->hdr.size, req->rep.body.raw, &out_size);
	if (ret)
		return ret;
	if (out_size < sizeof(uint64_t) || out_size > UVH_MSG_MAX_PAYLOAD)
		return req_reject(msg, -EIO, "device reply size %u is invalid", out_size);
	req->rep.size = out_size;
	return 0;
}

int h_close_crypto_session(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	return DEV_CALL(req, msg, close_crypto_session, req->dev, msg->payload.u64);
}

int h_postcopy_advise(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	int fd = -1;
	int ret = DEV_CALL(req, msg, postcopy_advise, req->dev, &fd);

	if (ret)
		return ret;
	if (fd < 0)
		return req_reject(msg, -EIO, "the device returned no userfaultfd");
	req->rep.size = 0;
	req->rep.fd = fd;
	return 0;
}

int h_get_inflight_fd(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	struct uvh_inflight in = msg->payload.inflight, out = { 0 };
	int fd = -1, ret;

	ret = check_inflight(req, msg, &in);
	if (!ret)
		ret = DEV_CALL(req, msg, get_inflight_fd, req->dev, &in, &out, &fd);
	if (ret)
		return ret;
	if (fd < 0 || !out.mmap_size) {
		if (fd >= 0)
			close(fd);
		return req_reject(msg, -EIO, "the device returned no inflight area");
	}
	req->rep.body.inflight = out;
	req->rep.size = msg->hdr.size;	/* 20 or 24, as the front-end speaks */
	req->rep.fd = fd;
	return 0;
}

int h_set_inflight_fd(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	struct uvh_inflight in = msg->payload.inflight;
	int ret = check_inflight(req, msg, &in);

	if (ret)
		return ret;
	if (!in.mmap_size || last_byte(in.mmap_offset, in.mmap_size) < in.mmap_offset)
		return req_reject(msg, -EINVAL, "inflight area 0x%" PRIx64 "+0x%" PRIx64
			      " is invalid", in.mmap_offset, in.mmap_size);
	return DEV_CALL(req, msg, set_inflight_fd, req->dev, &in, take_fd(msg));
}

int h_reset_device(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	int ret = DEV_CALL(req, msg, reset_device, req->dev);

	/* The spec: rings disabled, device state reset, ownership kept.
	 * Protocol features are connection state, not device state: the
	 * front-end does not negotiate them again. */
	if (!ret) {
		stop_all_rings(req);
		req->features = 0;
	}
	return ret;
}

int h_vring_kick(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint32_t idx = msg->payload.state.index;
	int ret = DEV_CALL(req, msg, vring_kick, req->dev, idx);

	if (!ret)
		req->vrings[idx].started = true;
	return ret;
}

int h_get_max_mem_slots(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint64_t n = UVH_MAX_MEM_SLOTS;
	int ret;

	if (req->ops->get_max_mem_slots) {
		ret = DEV_CALL(req, msg, get_max_mem_slots, req->dev, &n);
		if (ret)
			return ret;
		if (n > UVH_MAX_MEM_SLOTS)
			n = UVH_MAX_MEM_SLOTS;	/* what we track */
	}
	req_reply_u64(req, n);
	return 0;
}

int h_add_mem_reg(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	const struct uvh_mem_region *r = &msg->payload.mem_single.region;
	int ret = check_region(msg, r);

	if (ret)
		return ret;
	for (unsigned int i = 0; i < req->nregions; i++) {
		if (!memcmp(&req->regions[i], r, sizeof(*r))) {
			/* The same region again (one front-end device per queue
			 * pair): already mapped, count it; the fd is not needed. */
			if (req->region_refs[i] == UINT16_MAX)
				return req_reject(msg, -ENOSPC, "region added too many times");
			req->region_refs[i]++;
			UVH_DEBUG("%s: region at GPA 0x%" PRIx64 " added again (%u times)",
				  req_name(msg), r->guest_phys_addr, req->region_refs[i]);
			return 0;	/* the caller closes the unused fd */
		}
		ret = check_disjoint(msg, &req->regions[i], r);
		if (ret)
			return ret;
	}
	if (req->nregions >= UVH_MAX_MEM_SLOTS)
		return req_reject(msg, -ENOSPC, "all %u memory slots are in use", UVH_MAX_MEM_SLOTS);
	ret = DEV_CALL(req, msg, add_mem_reg, req->dev, r, take_fd(msg));
	if (!ret) {
		req->region_refs[req->nregions] = 1;
		req->regions[req->nregions++] = *r;
	}
	return ret;
}

int h_rem_mem_reg(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	const struct uvh_mem_region *r = &msg->payload.mem_single.region;
	unsigned int i;
	int ret;

	/* Identified by GPA, user address and size (the spec ignores the
	 * offset). A stray fd is closed by the caller, as the spec asks. */
	for (i = 0; i < req->nregions; i++)
		if (req->regions[i].guest_phys_addr == r->guest_phys_addr &&
		    req->regions[i].userspace_addr == r->userspace_addr &&
		    req->regions[i].memory_size == r->memory_size)
			break;
	if (i == req->nregions)
		return req_reject(msg, -ENOENT, "no region at GPA 0x%" PRIx64 " size 0x%" PRIx64,
			      r->guest_phys_addr, r->memory_size);
	if (req->region_refs[i] > 1) {
		req->region_refs[i]--;	/* another adder still uses it */
		return 0;
	}
	ret = DEV_CALL(req, msg, rem_mem_reg, req->dev, r);
	if (!ret) {
		req->nregions--;
		req->regions[i] = req->regions[req->nregions];
		req->region_refs[i] = req->region_refs[req->nregions];
	}
	return ret;
}

int h_set_status(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint64_t status = msg->payload.u64;

	if (status > 0xff)
		return req_reject(msg, -EINVAL, "status 0x%" PRIx64 " is not a u8", status);
	return DEV_CALL(req, msg, set_status, req->dev, (uint8_t)status);
}

int h_get_status(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint8_t status = 0;
	int ret = DEV_CALL(req, msg, get_status, req->dev, &status);

	if (!ret)
		req_reply_u64(req, status);
	return ret;
}

int h_get_shared_object(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	int fd = -1;
	int ret = DEV_CALL(req, msg, get_shared_object, req->dev, &msg->payload.object, &fd);

	if (ret)
		return ret;
	if (fd < 0)
		return req_reject(msg, -EIO, "the device returned no fd");
	req_reply_u64(req, 0);
	req->rep.fd = fd;
	return 0;
}

int h_set_device_state_fd(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	const struct uvh_device_state *ds = &msg->payload.device_state;
	int out = -1, ret;

	if (ds->direction > UVH_DEVICE_STATE_LOAD || ds->phase != UVH_DEVICE_STATE_STOPPED)
		return req_reject(msg, -EINVAL, "direction %u phase %u is invalid",
			      ds->direction, ds->phase);
	ret = DEV_CALL(req, msg, set_device_state_fd, req->dev, ds->direction, ds->phase,
		       take_fd(msg), &out);
	if (ret)
		return ret;
	req_reply_u64(req, out >= 0 ? 0 : UVH_DEVICE_STATE_NOFD);
	req->rep.fd = out;
	return 0;
}

int h_get_shmem_config(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	struct uvh_shmem_config *c = &req->rep.body.shmem_config;
	int ret;

	memset(c, 0, sizeof(*c));
	ret = DEV_CALL(req, msg, get_shmem_config, req->dev, c);
	if (ret)
		return ret;
	if (c->nregions > UVH_SHMEM_MAX_REGIONS)
		return req_reject(msg, -EIO, "device reports %u regions", c->nregions);
	req->rep.size = sizeof(*c);
	return 0;
}

