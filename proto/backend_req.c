/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the back-end's request handler.
 *
 * Security model: nothing that arrives on the socket is trusted; the
 * front-end may be buggy or hostile.
 *  - Every header field, payload field and fd count is validated before a
 *    device callback sees it: size and fd rules from message.c's spec
 *    table; gates, vring indices, ring states and values here. Payload
 *    bytes past the header's size are zeroed: no stale data is ever read.
 *  - fds never leak: each received fd goes to exactly one callback or is
 *    closed, on every path. fds the device returns are closed once sent.
 *  - A bad message costs only this connection: it is NACKed (or answered
 *    with the spec's failure body) when the front-end can be told, else
 *    a negative errno makes the caller close it. Nothing aborts.
 *
 * One message, in order (every rejection logs "REQUEST_NAME: reason"):
 *  1. unknown request id                    -EPROTO, closes
 *  2. REPLY flag, bad version or flag bits  -EBADMSG, closes
 *  3. payload size -EMSGSIZE; fd count -EBADF (the fds are closed)
 *  4. protocol feature not negotiated or virtio feature not acked
 *                                           -ENOPROTOOPT
 *  5. vring index >= queues -ERANGE; ring must be stopped -EBUSY
 *  6. the handler: field values (-EINVAL, -EOVERFLOW, -ENOENT, -ENOSPC),
 *     the device call (-ENOSYS for a NULL op, or its error), ring states.
 *  7. the answer. Reply-body requests always get one: on failure the
 *     spec's failure body where it has one (GET_CONFIG: empty; u64
 *     results: the positive errno; ...), else the connection closes.
 *     Others get a u64 ack (0 or the positive errno) with REPLY_ACK
 *     negotiated and NEED_REPLY set, and then a failure keeps the
 *     connection. SET_LOG_BASE with LOG_SHMFD always gets the u64.
 *
 * Dispatch is the BACKEND_HANDLERS table (DPDK's VHOST_MESSAGE_HANDLER
 * idea): one small function per request.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"
#include "backend_req.h"
#include "log.h"

#define MAX_VRING_NUM	32768u	/* virtio's largest queue size */
#define MTU_MIN		68u	/* virtio-net's smallest MTU */
#define MTU_MAX		65535u

/* Where a request names its vring. */
enum vring_field {
	IDX_NONE,
	IDX_STATE,	/* u32 index first (vring state, vring addr) */
	IDX_FILE,	/* u64 bits 0-7, bit 8 = no fd (SET_VRING_KICK/CALL/ERR) */
};

/* What a reply-body request answers when it fails. */
enum fail_reply {
	FAIL_CLOSE,	/* nothing the spec defines: close the connection */
	FAIL_EMPTY,	/* an empty reply (GET_CONFIG, POSTCOPY_ADVISE) */
	FAIL_U64,	/* u64 result: the positive errno */
	FAIL_DEVSTATE,	/* SET_DEVICE_STATE_FD: error bits | no fd */
	FAIL_INFLIGHT,	/* GET_INFLIGHT_FD: mmap_size 0, no fd */
	FAIL_CRYPTO,	/* CREATE_CRYPTO_SESSION: session id -1 */
};

/* The reply a handler prepares. */
struct reply {
	uint32_t size;
	int fd;			/* device-provided, closed after sending */
	union uvh_msg_payload body;
};

struct uvh_backend_req {
	struct uvh_endpoint ep;
	const struct uvh_backend_handler_ops *ops;
	void *dev;
	uint32_t max_queues;
	uint64_t features;		/* acked virtio features */
	uint64_t protocol_features;	/* offered & acked */
	bool protocol_negotiated;	/* SET_PROTOCOL_FEATURES accepted */
	struct uvh_backend_vring_state vrings[UVH_BACKEND_MAX_QUEUES];
	/* The guest memory map as the device accepted it, so that regions
	 * added later can be checked against it. */
	unsigned int nregions;
	struct uvh_mem_region regions[UVH_MAX_MEM_SLOTS];
	/* How many ADD_MEM_REG of the very same region are outstanding: QEMU
	 * keeps one vhost device per queue pair on one socket, and each adds
	 * (and later removes) the same regions. */
	uint16_t region_refs[UVH_MAX_MEM_SLOTS];
	struct uvh_msg msg;		/* uvh_backend_req_handle()'s buffer */
	struct reply rep;
};

struct handler {
	int (*fn)(struct uvh_backend_req *req, struct uvh_msg *msg);
	uint8_t vring;		/* enum vring_field */
	bool stopped;		/* the ring must be stopped */
	uint8_t fail;		/* enum fail_reply */
};

/* ---- helpers ------------------------------------------------------------ */

static const char *name_of(const struct uvh_msg *msg)
{
	return uvh_frontend_request_name(msg->hdr.request);
}

/* Log why @msg is refused and return @err. */
__attribute__((format(printf, 3, 4)))
static int reject(const struct uvh_msg *msg, int err, const char *fmt, ...)
{
	char why[192];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	UVH_ERR("%s: %s", name_of(msg), why);
	return err;
}

static int dev_result(const struct uvh_msg *msg, int ret)
{
	if (ret > 0)
		ret = -EIO;	/* not the contract; never report success */
	if (ret < 0)
		return reject(msg, ret, "device failed: %s", strerror(-ret));
	return 0;
}

static int no_op(const struct uvh_msg *msg)
{
	return reject(msg, -ENOSYS, "not implemented by the device");
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

static void reply_u64(struct uvh_backend_req *req, uint64_t v)
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
		return reject(msg, -EINVAL, "region at GPA 0x%" PRIx64 " has size 0",
			      r->guest_phys_addr);
	if (last_byte(r->guest_phys_addr, n) < r->guest_phys_addr ||
	    last_byte(r->userspace_addr, n) < r->userspace_addr ||
	    last_byte(r->mmap_offset, n) < r->mmap_offset)
		return reject(msg, -EOVERFLOW, "region at GPA 0x%" PRIx64
			      " size 0x%" PRIx64 " wraps around", r->guest_phys_addr, n);
	return 0;
}

static int check_disjoint(const struct uvh_msg *msg, const struct uvh_mem_region *a,
			  const struct uvh_mem_region *b)
{
	if (overlap(a->guest_phys_addr, a->memory_size, b->guest_phys_addr, b->memory_size))
		return reject(msg, -EINVAL, "regions at GPA 0x%" PRIx64 " and 0x%" PRIx64
			      " overlap", a->guest_phys_addr, b->guest_phys_addr);
	if (overlap(a->userspace_addr, a->memory_size, b->userspace_addr, b->memory_size))
		return reject(msg, -EINVAL, "regions at user address 0x%" PRIx64 " and 0x%"
			      PRIx64 " overlap", a->userspace_addr, b->userspace_addr);
	return 0;
}

static int check_inflight(const struct uvh_backend_req *req, const struct uvh_msg *msg,
			  const struct uvh_inflight *in)
{
	if (!in->num_queues || in->num_queues > req->max_queues ||
	    !in->queue_size || in->queue_size > MAX_VRING_NUM)
		return reject(msg, -EINVAL, "%u queues of size %u is invalid (%u queues)",
			      in->num_queues, in->queue_size, req->max_queues);
	return 0;
}

static int check_config(const struct uvh_msg *msg)
{
	const struct uvh_config *c = &msg->payload.config;

	if (!c->size || c->offset > UVH_CONFIG_MAX_SIZE ||
	    c->size > UVH_CONFIG_MAX_SIZE - c->offset)
		return reject(msg, -EINVAL, "config range %u+%u is invalid", c->offset, c->size);
	if (c->flags > UVH_CONFIG_MIGRATION)
		return reject(msg, -EINVAL, "config flags %u are unknown", c->flags);
	return 0;
}

/* ---- one handler per request -------------------------------------------- */

/* The requests that only pass on nothing, their fd, or a vring's fd. */
#define PLAIN_HANDLER(op) \
static int h_##op(struct uvh_backend_req *req, struct uvh_msg *msg) \
{ \
	return DEV_CALL(req, msg, op, req->dev); \
}
#define FD_HANDLER(op) \
static int h_##op(struct uvh_backend_req *req, struct uvh_msg *msg) \
{ \
	return DEV_CALL(req, msg, op, req->dev, take_fd(msg)); \
}
#define VRING_FD_HANDLER(op) \
static int h_##op(struct uvh_backend_req *req, struct uvh_msg *msg) \
{ \
	uint32_t idx = msg->payload.u64 & UVH_VRING_IDX_MASK; \
\
	return DEV_CALL(req, msg, op, req->dev, idx, take_fd(msg)); \
}
/* And those whose reply is a u64 0 on success. */
#define U64_HANDLER(op) \
static int h_##op(struct uvh_backend_req *req, struct uvh_msg *msg) \
{ \
	int ret = DEV_CALL(req, msg, op, req->dev); \
\
	if (!ret) \
		reply_u64(req, 0); \
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

static int h_get_features(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint64_t f = 0;
	int ret = DEV_CALL(req, msg, get_features, req->dev, &f);

	if (!ret)
		reply_u64(req, f);
	return ret;
}

static int h_set_features(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint64_t want = msg->payload.u64, offered = 0;
	int ret;

	ret = DEV_CALL(req, msg, get_features, req->dev, &offered);
	if (ret)
		return ret;
	if (want & ~offered)
		return reject(msg, -EINVAL, "features 0x%" PRIx64 " were not offered",
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

static int h_reset_owner(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	int ret;

	/* Deprecated: the spec allows ignoring it. The ring states only
	 * change when the device really did something. */
	if (!req->ops->reset_owner) {
		UVH_DEBUG("%s: ignored", name_of(msg));
		return 0;
	}
	ret = DEV_CALL(req, msg, reset_owner, req->dev);
	if (!ret)
		stop_all_rings(req);
	return ret;
}

static int h_set_mem_table(struct uvh_backend_req *req, struct uvh_msg *msg)
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

static int h_set_log_base(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	const struct uvh_log *log = &msg->payload.log;

	if (!log->mmap_size || last_byte(log->mmap_offset, log->mmap_size) < log->mmap_offset)
		return reject(msg, -EINVAL, "log area 0x%" PRIx64 "+0x%" PRIx64 " is invalid",
			      log->mmap_offset, log->mmap_size);
	return DEV_CALL(req, msg, set_log_base, req->dev, log, take_fd(msg));
}

static int h_set_vring_num(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint32_t idx = msg->payload.state.index, num = msg->payload.state.num;
	bool packed = req->features & UVH_BIT(UVH_VIRTIO_F_RING_PACKED);
	int ret;

	/* Packed rings may have any size; split rings need a power of 2. */
	if (!num || num > MAX_VRING_NUM || (!packed && (num & (num - 1))))
		return reject(msg, -EINVAL, "vring %u size %u is invalid", idx, num);
	ret = DEV_CALL(req, msg, set_vring_num, req->dev, idx, num);
	if (!ret)
		req->vrings[idx].num = num;
	return ret;
}

static int h_set_vring_addr(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	const struct uvh_vring_addr *a = &msg->payload.addr;

	/* The addresses themselves are checked when the device maps them. */
	if (a->flags & ~UVH_VRING_F_LOG)
		return reject(msg, -EINVAL, "vring %u flags 0x%x are unknown", a->index, a->flags);
	return DEV_CALL(req, msg, set_vring_addr, req->dev, a);
}

static int h_set_vring_base(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint32_t idx = msg->payload.state.index, base = msg->payload.state.num;

	/* A split ring's base is a 16-bit index; bits 16-31 are reserved. */
	if (!(req->features & UVH_BIT(UVH_VIRTIO_F_RING_PACKED)) && base > 0xffff)
		return reject(msg, -EINVAL, "vring %u split base 0x%x is invalid", idx, base);
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

static int h_get_vring_base(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	return get_base(req, msg, true);
}

static int h_get_vring_base_skip_drain(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	return get_base(req, msg, false);
}

static int h_set_vring_kick(struct uvh_backend_req *req, struct uvh_msg *msg)
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
		return reject(msg, -ENOPROTOOPT, "the device does not offer F_PROTOCOL_FEATURES");
	*offered = 0;
	return DEV_CALL(req, msg, get_protocol_features, req->dev, offered);
}

static int h_get_protocol_features(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint64_t offered;
	int ret = protocol_offer(req, msg, &offered);

	if (!ret)
		reply_u64(req, offered);
	return ret;
}

static int h_set_protocol_features(struct uvh_backend_req *req, struct uvh_msg *msg)
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
			 name_of(msg), want & ~offered);
	if ((pf & UVH_BIT(UVH_PROTOCOL_F_INBAND_NOTIFICATIONS)) &&
	    (pf & inband_needs) != inband_needs)
		return reject(msg, -EINVAL, "INBAND_NOTIFICATIONS needs BACKEND_REQ and REPLY_ACK");
	ret = DEV_CALL(req, msg, set_protocol_features, req->dev, pf);
	if (!ret) {
		req->protocol_features = pf;
		req->protocol_negotiated = true;
	}
	return ret;
}

static int h_get_queue_num(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint64_t n = req->max_queues;
	int ret;

	if (req->ops->get_queue_num) {
		ret = DEV_CALL(req, msg, get_queue_num, req->dev, &n);
		if (ret)
			return ret;
		/* More would make the front-end use rings we refuse. */
		if (!n || n > req->max_queues)
			return reject(msg, -ERANGE, "device reports %" PRIu64
				      " queues, the connection has %u", n, req->max_queues);
	}
	reply_u64(req, n);
	return 0;
}

static int h_set_vring_enable(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint32_t idx = msg->payload.state.index, on = msg->payload.state.num;
	int ret;

	if (on > 1)
		return reject(msg, -EINVAL, "vring %u enable value %u is not 0 or 1", idx, on);
	ret = DEV_CALL(req, msg, set_vring_enable, req->dev, idx, on);
	if (!ret)
		req->vrings[idx].enabled = on;
	return ret;
}

static int h_send_rarp(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	return DEV_CALL(req, msg, send_rarp, req->dev, msg->payload.raw);
}

static int h_net_set_mtu(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint64_t mtu = msg->payload.u64;

	if (mtu < MTU_MIN || mtu > MTU_MAX)
		return reject(msg, -EINVAL, "MTU %" PRIu64 " is out of range", mtu);
	return DEV_CALL(req, msg, net_set_mtu, req->dev, (uint16_t)mtu);
}

static int h_iotlb_msg(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	const struct uvh_iotlb *m = &msg->payload.iotlb;	/* a 26-byte tail is zeroed */
	int ret;

	/* Misses and access failures go the other way. */
	if (m->type != UVH_IOTLB_UPDATE && m->type != UVH_IOTLB_INVALIDATE)
		return reject(msg, -EINVAL, "IOTLB type %u is not a front-end request", m->type);
	if (m->perm > UVH_IOTLB_RW)
		return reject(msg, -EINVAL, "IOTLB permission %u is unknown", m->perm);
	if (m->type == UVH_IOTLB_UPDATE &&
	    (!m->size || last_byte(m->iova, m->size) < m->iova ||
	     last_byte(m->uaddr, m->size) < m->uaddr))
		return reject(msg, -EINVAL, "IOTLB update 0x%" PRIx64 "+0x%" PRIx64
			      " is invalid", m->iova, m->size);
	ret = DEV_CALL(req, msg, iotlb_msg, req->dev, m);
	if (!ret)
		reply_u64(req, 0);
	return ret;
}

static int h_set_vring_endian(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint32_t idx = msg->payload.state.index, endian = msg->payload.state.num;

	if (endian > 1)
		return reject(msg, -EINVAL, "vring %u endianness %u is unknown", idx, endian);
	return DEV_CALL(req, msg, set_vring_endian, req->dev, idx, endian);
}

static int h_get_config(struct uvh_backend_req *req, struct uvh_msg *msg)
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

static int h_set_config(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	const struct uvh_config *c = &msg->payload.config;
	int ret = check_config(msg);

	if (ret)
		return ret;
	return DEV_CALL(req, msg, set_config, req->dev, c->offset, c->size, c->flags,
			c->region);
}

static int h_create_crypto_session(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint32_t out_size = UVH_MSG_MAX_PAYLOAD;
	int ret;

	ret = DEV_CALL(req, msg, create_crypto_session, req->dev, msg->payload.raw,
		       msg->hdr.size, req->rep.body.raw, &out_size);
	if (ret)
		return ret;
	if (out_size < sizeof(uint64_t) || out_size > UVH_MSG_MAX_PAYLOAD)
		return reject(msg, -EIO, "device reply size %u is invalid", out_size);
	req->rep.size = out_size;
	return 0;
}

static int h_close_crypto_session(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	return DEV_CALL(req, msg, close_crypto_session, req->dev, msg->payload.u64);
}

static int h_postcopy_advise(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	int fd = -1;
	int ret = DEV_CALL(req, msg, postcopy_advise, req->dev, &fd);

	if (ret)
		return ret;
	if (fd < 0)
		return reject(msg, -EIO, "the device returned no userfaultfd");
	req->rep.size = 0;
	req->rep.fd = fd;
	return 0;
}

static int h_get_inflight_fd(struct uvh_backend_req *req, struct uvh_msg *msg)
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
		return reject(msg, -EIO, "the device returned no inflight area");
	}
	req->rep.body.inflight = out;
	req->rep.size = msg->hdr.size;	/* 20 or 24, as the front-end speaks */
	req->rep.fd = fd;
	return 0;
}

static int h_set_inflight_fd(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	struct uvh_inflight in = msg->payload.inflight;
	int ret = check_inflight(req, msg, &in);

	if (ret)
		return ret;
	if (!in.mmap_size || last_byte(in.mmap_offset, in.mmap_size) < in.mmap_offset)
		return reject(msg, -EINVAL, "inflight area 0x%" PRIx64 "+0x%" PRIx64
			      " is invalid", in.mmap_offset, in.mmap_size);
	return DEV_CALL(req, msg, set_inflight_fd, req->dev, &in, take_fd(msg));
}

static int h_reset_device(struct uvh_backend_req *req, struct uvh_msg *msg)
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

static int h_vring_kick(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint32_t idx = msg->payload.state.index;
	int ret = DEV_CALL(req, msg, vring_kick, req->dev, idx);

	if (!ret)
		req->vrings[idx].started = true;
	return ret;
}

static int h_get_max_mem_slots(struct uvh_backend_req *req, struct uvh_msg *msg)
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
	reply_u64(req, n);
	return 0;
}

static int h_add_mem_reg(struct uvh_backend_req *req, struct uvh_msg *msg)
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
				return reject(msg, -ENOSPC, "region added too many times");
			req->region_refs[i]++;
			UVH_DEBUG("%s: region at GPA 0x%" PRIx64 " added again (%u times)",
				  name_of(msg), r->guest_phys_addr, req->region_refs[i]);
			return 0;	/* the caller closes the unused fd */
		}
		ret = check_disjoint(msg, &req->regions[i], r);
		if (ret)
			return ret;
	}
	if (req->nregions >= UVH_MAX_MEM_SLOTS)
		return reject(msg, -ENOSPC, "all %u memory slots are in use", UVH_MAX_MEM_SLOTS);
	ret = DEV_CALL(req, msg, add_mem_reg, req->dev, r, take_fd(msg));
	if (!ret) {
		req->region_refs[req->nregions] = 1;
		req->regions[req->nregions++] = *r;
	}
	return ret;
}

static int h_rem_mem_reg(struct uvh_backend_req *req, struct uvh_msg *msg)
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
		return reject(msg, -ENOENT, "no region at GPA 0x%" PRIx64 " size 0x%" PRIx64,
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

static int h_set_status(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint64_t status = msg->payload.u64;

	if (status > 0xff)
		return reject(msg, -EINVAL, "status 0x%" PRIx64 " is not a u8", status);
	return DEV_CALL(req, msg, set_status, req->dev, (uint8_t)status);
}

static int h_get_status(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	uint8_t status = 0;
	int ret = DEV_CALL(req, msg, get_status, req->dev, &status);

	if (!ret)
		reply_u64(req, status);
	return ret;
}

static int h_get_shared_object(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	int fd = -1;
	int ret = DEV_CALL(req, msg, get_shared_object, req->dev, &msg->payload.object, &fd);

	if (ret)
		return ret;
	if (fd < 0)
		return reject(msg, -EIO, "the device returned no fd");
	reply_u64(req, 0);
	req->rep.fd = fd;
	return 0;
}

static int h_set_device_state_fd(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	const struct uvh_device_state *ds = &msg->payload.device_state;
	int out = -1, ret;

	if (ds->direction > UVH_DEVICE_STATE_LOAD || ds->phase != UVH_DEVICE_STATE_STOPPED)
		return reject(msg, -EINVAL, "direction %u phase %u is invalid",
			      ds->direction, ds->phase);
	ret = DEV_CALL(req, msg, set_device_state_fd, req->dev, ds->direction, ds->phase,
		       take_fd(msg), &out);
	if (ret)
		return ret;
	reply_u64(req, out >= 0 ? 0 : UVH_DEVICE_STATE_NOFD);
	req->rep.fd = out;
	return 0;
}

static int h_get_shmem_config(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	struct uvh_shmem_config *c = &req->rep.body.shmem_config;
	int ret;

	memset(c, 0, sizeof(*c));
	ret = DEV_CALL(req, msg, get_shmem_config, req->dev, c);
	if (ret)
		return ret;
	if (c->nregions > UVH_SHMEM_MAX_REGIONS)
		return reject(msg, -EIO, "device reports %u regions", c->nregions);
	req->rep.size = sizeof(*c);
	return 0;
}

/* ---- the dispatch table --------------------------------------------------- */

/*
 * (request, handler, where its vring index is, ring must be stopped,
 * answer on failure). Size, fd, gate and reply rules come from the spec
 * table of message.c; this adds what only the back-end's state knows.
 */
#define BACKEND_HANDLERS(X) \
	X(GET_FEATURES,		get_features,		NONE,	0, CLOSE) \
	X(SET_FEATURES,		set_features,		NONE,	0, CLOSE) \
	X(SET_OWNER,		set_owner,		NONE,	0, CLOSE) \
	X(RESET_OWNER,		reset_owner,		NONE,	0, CLOSE) \
	X(SET_MEM_TABLE,	set_mem_table,		NONE,	0, CLOSE) \
	X(SET_LOG_BASE,		set_log_base,		NONE,	0, CLOSE) \
	X(SET_LOG_FD,		set_log_fd,		NONE,	0, CLOSE) \
	X(SET_VRING_NUM,	set_vring_num,		STATE,	1, CLOSE) \
	X(SET_VRING_ADDR,	set_vring_addr,		STATE,	0, CLOSE) \
	X(SET_VRING_BASE,	set_vring_base,		STATE,	1, CLOSE) \
	X(GET_VRING_BASE,	get_vring_base,		STATE,	0, CLOSE) \
	X(SET_VRING_KICK,	set_vring_kick,		FILE,	0, CLOSE) \
	X(SET_VRING_CALL,	set_vring_call,		FILE,	0, CLOSE) \
	X(SET_VRING_ERR,	set_vring_err,		FILE,	0, CLOSE) \
	X(GET_PROTOCOL_FEATURES, get_protocol_features,	NONE,	0, CLOSE) \
	X(SET_PROTOCOL_FEATURES, set_protocol_features,	NONE,	0, CLOSE) \
	X(GET_QUEUE_NUM,	get_queue_num,		NONE,	0, CLOSE) \
	X(SET_VRING_ENABLE,	set_vring_enable,	STATE,	0, CLOSE) \
	X(SEND_RARP,		send_rarp,		NONE,	0, CLOSE) \
	X(NET_SET_MTU,		net_set_mtu,		NONE,	0, CLOSE) \
	X(SET_BACKEND_REQ_FD,	set_backend_req_fd,	NONE,	0, CLOSE) \
	X(IOTLB_MSG,		iotlb_msg,		NONE,	0, U64) \
	X(SET_VRING_ENDIAN,	set_vring_endian,	STATE,	1, CLOSE) \
	X(GET_CONFIG,		get_config,		NONE,	0, EMPTY) \
	X(SET_CONFIG,		set_config,		NONE,	0, CLOSE) \
	X(CREATE_CRYPTO_SESSION, create_crypto_session,	NONE,	0, CRYPTO) \
	X(CLOSE_CRYPTO_SESSION,	close_crypto_session,	NONE,	0, CLOSE) \
	X(POSTCOPY_ADVISE,	postcopy_advise,	NONE,	0, EMPTY) \
	X(POSTCOPY_LISTEN,	postcopy_listen,	NONE,	0, CLOSE) \
	X(POSTCOPY_END,		postcopy_end,		NONE,	0, U64) \
	X(GET_INFLIGHT_FD,	get_inflight_fd,	NONE,	0, INFLIGHT) \
	X(SET_INFLIGHT_FD,	set_inflight_fd,	NONE,	0, CLOSE) \
	X(GPU_SET_SOCKET,	gpu_set_socket,		NONE,	0, CLOSE) \
	X(RESET_DEVICE,		reset_device,		NONE,	0, CLOSE) \
	X(VRING_KICK,		vring_kick,		STATE,	0, CLOSE) \
	X(GET_MAX_MEM_SLOTS,	get_max_mem_slots,	NONE,	0, CLOSE) \
	X(ADD_MEM_REG,		add_mem_reg,		NONE,	0, CLOSE) \
	X(REM_MEM_REG,		rem_mem_reg,		NONE,	0, CLOSE) \
	X(SET_STATUS,		set_status,		NONE,	0, CLOSE) \
	X(GET_STATUS,		get_status,		NONE,	0, CLOSE) \
	X(GET_SHARED_OBJECT,	get_shared_object,	NONE,	0, U64) \
	X(SET_DEVICE_STATE_FD,	set_device_state_fd,	NONE,	0, DEVSTATE) \
	X(CHECK_DEVICE_STATE,	check_device_state,	NONE,	0, U64) \
	X(GET_SHMEM_CONFIG,	get_shmem_config,	NONE,	0, CLOSE) \
	X(GET_VRING_BASE_SKIP_DRAIN, get_vring_base_skip_drain, STATE, 0, CLOSE)

#define HANDLER_ROW(name, func_, vring_, stopped_, fail_) \
	[UVH_REQ_##name] = { .fn = h_##func_, .vring = IDX_##vring_, \
			     .stopped = stopped_, .fail = FAIL_##fail_ },
static const struct handler handlers[UVH_REQ_MAX] = {
	BACKEND_HANDLERS(HANDLER_ROW)
};
#undef HANDLER_ROW

#define HANDLER_COUNT(...) + 1
_Static_assert(0 BACKEND_HANDLERS(HANDLER_COUNT) == UVH_REQ_MAX - 1,
	       "one handler per front-end request");
#undef HANDLER_COUNT

/* ---- one message ---------------------------------------------------------- */

/* Steps 3 to 5: everything the table and the session state can tell. */
static int validate(struct uvh_backend_req *req, struct uvh_msg *msg,
		    const struct uvh_request_info *info, const struct handler *h)
{
	unsigned int lo, hi;
	uint32_t idx;
	int ret;

	ret = uvh_msg_check_size(info, msg, false);	/* logs the name itself */
	if (ret)
		return ret;
	uvh_msg_expected_fds(info, msg, req->protocol_features, &lo, &hi);
	if (msg->nfds < lo || msg->nfds > hi)
		return reject(msg, -EBADF, "%u fds attached, %u to %u expected",
			      msg->nfds, lo, hi);
	if (info->gate_protocol >= 0 &&
	    !(req->protocol_features & UVH_BIT(info->gate_protocol)))
		return reject(msg, -ENOPROTOOPT, "protocol feature %s is not negotiated",
			      uvh_protocol_feature_name(info->gate_protocol));
	/* SET_VRING_ENABLE needs PROTOCOL_FEATURES: acked by SET_FEATURES, or
	 * proven offered by an accepted SET_PROTOCOL_FEATURES, because QEMU
	 * enables rings before it sends SET_FEATURES. */
	if (info->gate_feature >= 0 && !(req->features & UVH_BIT(info->gate_feature)) &&
	    !(info->gate_feature == UVH_F_PROTOCOL_FEATURES && req->protocol_negotiated))
		return reject(msg, -ENOPROTOOPT, "virtio feature bit %d is not acked",
			      info->gate_feature);
	if (h->vring == IDX_NONE)
		return 0;
	if (h->vring == IDX_FILE) {
		if (msg->payload.u64 & ~(uint64_t)(UVH_VRING_IDX_MASK | UVH_VRING_NOFD_MASK))
			return reject(msg, -EINVAL, "reserved bits set in 0x%" PRIx64,
				      msg->payload.u64);
		idx = msg->payload.u64 & UVH_VRING_IDX_MASK;
	} else {
		idx = msg->payload.state.index;
	}
	if (idx >= req->max_queues)
		return reject(msg, -ERANGE, "vring %u is beyond the %u queues",
			      idx, req->max_queues);
	if (h->stopped && req->vrings[idx].started)
		return reject(msg, -EBUSY, "vring %u is started", idx);
	return 0;
}

static int send_reply(struct uvh_backend_req *req, const struct uvh_msg *msg)
{
	struct uvh_msg_header hdr = {
		.request = msg->hdr.request,
		.flags = UVH_FLAG_REPLY | UVH_FLAG_VERSION,
		.size = req->rep.size,
	};
	int fd = req->rep.fd, ret;

	req->rep.fd = -1;
	ret = uvh_endpoint_send(&req->ep, &hdr, &req->rep.body, fd >= 0 ? &fd : NULL,
				fd >= 0 ? 1 : 0);
	/* The front-end has its own copy now (or never will). */
	if (fd >= 0)
		close(fd);
	if (ret)
		UVH_ERR("%s: cannot send the reply: %s", name_of(msg), strerror(-ret));
	return ret;
}

/* A reply-body request failed with @err: the spec's failure body, if any. */
static int send_failure(struct uvh_backend_req *req, const struct uvh_msg *msg,
			const struct handler *h, int err)
{
	uint64_t code = (uint64_t)-err;
	int64_t no_session = -1;
	uint32_t n;

	req->rep.fd = -1;
	switch (h->fail) {
	case FAIL_EMPTY:
		req->rep.size = 0;
		break;
	case FAIL_U64:
		reply_u64(req, code);
		break;
	case FAIL_DEVSTATE:
		code &= UVH_DEVICE_STATE_ERR_MASK;
		reply_u64(req, (code ? code : 1) | UVH_DEVICE_STATE_NOFD);
		break;
	case FAIL_INFLIGHT:
		memset(&req->rep.body.inflight, 0, sizeof(req->rep.body.inflight));
		req->rep.size = msg->hdr.size == UVH_INFLIGHT_MIN_SIZE ?
				UVH_INFLIGHT_MIN_SIZE : sizeof(struct uvh_inflight);
		break;
	case FAIL_CRYPTO:
		/* The request echoed, its session id (the first i64) -1. */
		n = msg->hdr.size;
		if (n < sizeof(no_session) || n > UVH_MSG_MAX_PAYLOAD)
			n = sizeof(no_session);
		memcpy(req->rep.body.raw, msg->payload.raw, n);
		memcpy(req->rep.body.raw, &no_session, sizeof(no_session));
		req->rep.size = n;
		break;
	default:
		return err;
	}
	return send_reply(req, msg);
}

/* Step 7. */
static int answer(struct uvh_backend_req *req, const struct uvh_msg *msg,
		  const struct uvh_request_info *info, const struct handler *h, int ret)
{
	bool acks = (msg->hdr.flags & UVH_FLAG_NEED_REPLY) &&
		    (req->protocol_features & UVH_BIT(UVH_PROTOCOL_F_REPLY_ACK));

	if (info->reply_rule == UVH_REPLY_BODY)
		return ret ? send_failure(req, msg, h, ret) : send_reply(req, msg);
	/* SET_LOG_BASE's reply with LOG_SHMFD is required and also serves
	 * as the ack: never two replies. */
	if (info->reply_rule == UVH_REPLY_LOG &&
	    (req->protocol_features & UVH_BIT(UVH_PROTOCOL_F_LOG_SHMFD)))
		acks = true;
	if (!acks)
		return ret;
	reply_u64(req, (uint64_t)-ret);
	return send_reply(req, msg);
}

int uvh_backend_req_process(struct uvh_backend_req *req, struct uvh_msg *msg)
{
	const struct uvh_request_info *info;
	const struct handler *h = NULL;
	uint32_t flags;
	int ret;

	if (!msg)
		return -EINVAL;
	if (!req || msg->nfds > UVH_MSG_MAX_FDS) {
		ret = -EINVAL;
		goto drop;
	}
	info = uvh_frontend_request_info(msg->hdr.request);
	if (info)
		h = &handlers[msg->hdr.request];
	if (!h || !h->fn) {
		UVH_ERR("unknown request %u", msg->hdr.request);
		ret = -EPROTO;
		goto drop;
	}
	flags = msg->hdr.flags;
	if (flags & UVH_FLAG_REPLY) {
		ret = reject(msg, -EBADMSG, "REPLY flag set on a request");
		goto drop;
	}
	/* The endpoint checks these too, but a message may come from elsewhere. */
	if ((flags & ~UVH_FLAG_NEED_REPLY) != UVH_FLAG_VERSION) {
		ret = reject(msg, -EBADMSG, "bad version or reserved flags 0x%x", flags);
		goto drop;
	}
	if (msg->hdr.size < UVH_MSG_MAX_PAYLOAD)
		memset(msg->payload.raw + msg->hdr.size, 0,
		       UVH_MSG_MAX_PAYLOAD - msg->hdr.size);

	req->rep.size = 0;
	req->rep.fd = -1;
	ret = validate(req, msg, info, h);
	if (!ret)
		ret = h->fn(req, msg);
	uvh_msg_close_fds(msg);	/* whatever no callback took */
	return answer(req, msg, info, h, ret);

drop:
	uvh_msg_close_fds(msg);
	return ret;
}

int uvh_backend_req_handle(struct uvh_backend_req *req)
{
	int ret;

	if (!req)
		return -EINVAL;
	/* a started message is waited for stall_ms at most (endpoint.h) */
	ret = uvh_endpoint_recv(&req->ep, &req->msg);
	if (ret)
		return ret;
	return uvh_backend_req_process(req, &req->msg);
}

/* ---- life cycle and state ------------------------------------------------ */

struct uvh_backend_req *uvh_backend_req_new(int fd,
					    const struct uvh_backend_handler_ops *ops,
					    void *dev, uint32_t max_queues)
{
	struct uvh_backend_req *req;

	if (fd < 0 || !ops || !max_queues || max_queues > UVH_BACKEND_MAX_QUEUES) {
		UVH_ERR("backend: invalid arguments (fd %d, %u queues)", fd, max_queues);
		if (fd >= 0)
			close(fd);
		errno = EINVAL;
		return NULL;
	}
	req = calloc(1, sizeof(*req));
	if (!req) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	uvh_endpoint_init(&req->ep, fd, uvh_frontend_request_name);
	req->ops = ops;
	req->dev = dev;
	req->max_queues = max_queues;
	req->rep.fd = -1;
	/* calloc: every ring stopped and disabled, as the spec starts them. */
	return req;
}

void uvh_backend_req_free(struct uvh_backend_req *req)
{
	if (!req)
		return;
	uvh_endpoint_close(&req->ep);
	free(req);
}

struct uvh_endpoint *uvh_backend_req_endpoint(struct uvh_backend_req *req)
{
	return req ? &req->ep : NULL;
}

uint64_t uvh_backend_req_features(const struct uvh_backend_req *req)
{
	return req ? req->features : 0;
}

uint64_t uvh_backend_req_protocol_features(const struct uvh_backend_req *req)
{
	return req ? req->protocol_features : 0;
}

const struct uvh_backend_vring_state *
uvh_backend_req_vring(const struct uvh_backend_req *req, uint32_t index)
{
	if (!req || index >= req->max_queues)
		return NULL;
	return &req->vrings[index];
}
