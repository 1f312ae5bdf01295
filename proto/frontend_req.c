/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the front-end's handler of back-end requests (rust-vmm's
 * FrontendReqHandler).
 *
 * Nothing the back-end sends is trusted. A request is checked, in order,
 * for: the REPLY flag (a reply is never a request), a known id, its gating
 * protocol feature, its payload size and its fd count (fds only with
 * BACKEND_SEND_FD). It is then dispatched through a table built from one
 * X-macro list: each entry decodes the payload and calls the ops callback.
 *
 * Every fd received is either handed to a callback or closed here, on
 * every path.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frontend_req.h"
#include "log.h"

#define PF_BIT(name)	(1ull << UVH_PROTOCOL_F_##name)

struct uvh_frontend_req {
	struct uvh_frontend_req_ops ops;	/* a copy: the caller's may be on its stack */
	void *opaque;
	uint64_t protocol_features;
	/* Last: clang sees its cmsg buffer as variably sized. */
	struct uvh_endpoint ep;
};

/*
 * Decode one validated request and call its callback. Returns the
 * callback's result (or a decode error); fds it hands on are removed from
 * @msg, the rest are closed by the caller. *reply_fd is an fd to send back
 * with the reply (SHARED_OBJECT_LOOKUP only), owned by the caller.
 */
typedef int (*frontend_req_fn)(struct uvh_frontend_req *req, struct uvh_msg *msg,
			       int *reply_fd);

static void refuse(uint32_t request, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Log why a request is refused, naming it. */
static void refuse(uint32_t request, int err, const char *fmt, ...)
{
	char reason[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	UVH_ERR("frontend: back-end request %s (%u) refused: %s (%s)",
		uvh_backend_request_name(request), request, reason, strerror(-err));
}

/* Hand the single fd a message carries to a callback. */
static int take_fd(struct uvh_msg *msg)
{
	int fd;

	if (msg->nfds == 0)
		return -1;
	fd = msg->fds[0];
	msg->nfds = 0;
	return fd;
}

static int handle_iotlb_msg(struct uvh_frontend_req *req, struct uvh_msg *msg,
			    int *reply_fd)
{
	struct uvh_iotlb iotlb;

	(void)reply_fd;
	/* 26 (packed) or 32 bytes: zero the tail rather than pass garbage. */
	memset(&iotlb, 0, sizeof(iotlb));
	memcpy(&iotlb, msg->payload.raw, msg->hdr.size);
	/* The back-end only reports misses and access failures. */
	if (iotlb.type != UVH_IOTLB_MISS && iotlb.type != UVH_IOTLB_ACCESS_FAIL) {
		refuse(msg->hdr.request, -EINVAL, "IOTLB type %u", iotlb.type);
		return -EINVAL;
	}
	if (iotlb.perm > UVH_IOTLB_RW) {
		refuse(msg->hdr.request, -EINVAL, "IOTLB perm %u", iotlb.perm);
		return -EINVAL;
	}
	if (!req->ops.iotlb_msg)
		return -ENOSYS;
	return req->ops.iotlb_msg(req->opaque, &iotlb);
}

static int handle_config_change(struct uvh_frontend_req *req, struct uvh_msg *msg,
				int *reply_fd)
{
	(void)msg;
	(void)reply_fd;
	if (!req->ops.config_change)
		return -ENOSYS;
	return req->ops.config_change(req->opaque);
}

static int handle_vring_host_notifier(struct uvh_frontend_req *req, struct uvh_msg *msg,
				      int *reply_fd)
{
	struct uvh_vring_area area = msg->payload.area;

	(void)reply_fd;
	if (area.u64 & ~(uint64_t)(UVH_VRING_IDX_MASK | UVH_VRING_NOFD_MASK)) {
		refuse(msg->hdr.request, -EINVAL, "reserved bits in 0x%llx",
		       (unsigned long long)area.u64);
		return -EINVAL;
	}
	if (!req->ops.vring_host_notifier)
		return -ENOSYS;
	/* validate() matched the fd to the no-fd bit. */
	return req->ops.vring_host_notifier(req->opaque, &area, take_fd(msg));
}

static int handle_vring_call(struct uvh_frontend_req *req, struct uvh_msg *msg,
			     int *reply_fd)
{
	(void)reply_fd;
	if (!req->ops.vring_call)
		return -ENOSYS;
	return req->ops.vring_call(req->opaque, msg->payload.state.index);
}

static int handle_vring_err(struct uvh_frontend_req *req, struct uvh_msg *msg,
			    int *reply_fd)
{
	(void)reply_fd;
	if (!req->ops.vring_err)
		return -ENOSYS;
	return req->ops.vring_err(req->opaque, msg->payload.state.index);
}

static int handle_shared_object_add(struct uvh_frontend_req *req, struct uvh_msg *msg,
				    int *reply_fd)
{
	(void)reply_fd;
	if (!req->ops.shared_object_add)
		return -ENOSYS;
	return req->ops.shared_object_add(req->opaque, &msg->payload.object);
}

static int handle_shared_object_remove(struct uvh_frontend_req *req, struct uvh_msg *msg,
				       int *reply_fd)
{
	(void)reply_fd;
	if (!req->ops.shared_object_remove)
		return -ENOSYS;
	return req->ops.shared_object_remove(req->opaque, &msg->payload.object);
}

static int handle_shared_object_lookup(struct uvh_frontend_req *req, struct uvh_msg *msg,
				       int *reply_fd)
{
	if (!req->ops.shared_object_lookup)
		return -ENOSYS;
	return req->ops.shared_object_lookup(req->opaque, &msg->payload.object, reply_fd);
}

/* A mapping must be non-empty and must not wrap around either space. */
static int check_shmem_range(const struct uvh_msg *msg, const struct uvh_shmem_map *map,
			     bool check_fd_offset)
{
	if (map->len == 0 || map->shm_offset + map->len < map->shm_offset ||
	    (check_fd_offset && map->fd_offset + map->len < map->fd_offset)) {
		refuse(msg->hdr.request, -EINVAL,
		       "bad range: shm_offset 0x%llx fd_offset 0x%llx len 0x%llx",
		       (unsigned long long)map->shm_offset,
		       (unsigned long long)map->fd_offset,
		       (unsigned long long)map->len);
		return -EINVAL;
	}
	return 0;
}

static int handle_shmem_map(struct uvh_frontend_req *req, struct uvh_msg *msg,
			    int *reply_fd)
{
	struct uvh_shmem_map map = msg->payload.shmem_map;
	int rc;

	(void)reply_fd;
	if (map.flags > 1) {
		refuse(msg->hdr.request, -EINVAL, "flags 0x%llx",
		       (unsigned long long)map.flags);
		return -EINVAL;
	}
	rc = check_shmem_range(msg, &map, true);
	if (rc < 0)
		return rc;
	if (!req->ops.shmem_map)
		return -ENOSYS;
	return req->ops.shmem_map(req->opaque, &map, take_fd(msg));
}

static int handle_shmem_unmap(struct uvh_frontend_req *req, struct uvh_msg *msg,
			      int *reply_fd)
{
	struct uvh_shmem_map map = msg->payload.shmem_map;
	int rc;

	(void)reply_fd;
	rc = check_shmem_range(msg, &map, false);
	if (rc < 0)
		return rc;
	if (!req->ops.shmem_unmap)
		return -ENOSYS;
	return req->ops.shmem_unmap(req->opaque, &map);
}

/* (request, handler): one line per back-end request the front-end serves. */
#define FRONTEND_REQ_HANDLERS(X) \
	X(IOTLB_MSG,			handle_iotlb_msg) \
	X(CONFIG_CHANGE_MSG,		handle_config_change) \
	X(VRING_HOST_NOTIFIER_MSG,	handle_vring_host_notifier) \
	X(VRING_CALL,			handle_vring_call) \
	X(VRING_ERR,			handle_vring_err) \
	X(SHARED_OBJECT_ADD,		handle_shared_object_add) \
	X(SHARED_OBJECT_REMOVE,		handle_shared_object_remove) \
	X(SHARED_OBJECT_LOOKUP,		handle_shared_object_lookup) \
	X(SHMEM_MAP,			handle_shmem_map) \
	X(SHMEM_UNMAP,			handle_shmem_unmap)

static const frontend_req_fn handlers[UVH_BACKEND_REQ_MAX] = {
#define UVH_X_(name, fn) [UVH_BACKEND_REQ_##name] = fn,
	FRONTEND_REQ_HANDLERS(UVH_X_)
#undef UVH_X_
};

/* Structural checks; on failure the reason is logged and an errno returned. */
static int validate(const struct uvh_frontend_req *req, const struct uvh_request_info *info,
		    const struct uvh_msg *msg)
{
	uint32_t id = msg->hdr.request;
	uint64_t pf = req->protocol_features;
	unsigned int min, max;

	if (!info || !handlers[id]) {
		refuse(id, -EBADRQC, "unknown request id");
		return -EBADRQC;
	}
	if (info->gate_protocol >= 0 && !(pf & (1ull << info->gate_protocol))) {
		refuse(id, -EOPNOTSUPP, "protocol feature %s not negotiated",
		       uvh_protocol_feature_name(info->gate_protocol));
		return -EOPNOTSUPP;
	}
	if (uvh_msg_check_size(info, msg, false) < 0) {
		refuse(id, -EMSGSIZE, "payload size %u", msg->hdr.size);
		return -EMSGSIZE;
	}
	uvh_msg_expected_fds(info, msg, pf, &min, &max);
	/* The host notifier's fd is optional in the table; the no-fd bit
	 * says which it is, and the two must agree. */
	if (id == UVH_BACKEND_REQ_VRING_HOST_NOTIFIER_MSG) {
		if (msg->payload.area.u64 & UVH_VRING_NOFD_MASK)
			max = 0;
		else
			min = 1;
	}
	if (!(pf & PF_BIT(BACKEND_SEND_FD)) && (msg->nfds > 0 || min > 0)) {
		refuse(id, -EPERM, "%s without BACKEND_SEND_FD",
		       msg->nfds ? "fds sent" : "an fd is needed");
		return -EPERM;
	}
	if (msg->nfds < min || msg->nfds > max) {
		refuse(id, -EBADF, "%u fds, expected %u to %u", msg->nfds, min, max);
		return -EBADF;
	}
	return 0;
}

/* Send the u64 verdict (0 = success, else a positive errno) and @fd. */
static int send_reply(struct uvh_frontend_req *req, uint32_t request, int rc, int fd)
{
	struct uvh_msg_header hdr = {
		.request = request,
		.flags = UVH_FLAG_REPLY | UVH_FLAG_VERSION,
		.size = sizeof(uint64_t),
	};
	uint64_t value = rc == 0 ? 0 : rc < 0 ? (uint64_t)-rc : EIO;
	int ret;

	ret = uvh_endpoint_send(&req->ep, &hdr, &value, fd >= 0 ? &fd : NULL,
				fd >= 0 ? 1 : 0);
	if (ret < 0)
		UVH_ERR("frontend: reply to back-end request %s failed: %s",
			uvh_backend_request_name(request), strerror(-ret));
	return ret;
}

static int process(struct uvh_frontend_req *req, struct uvh_msg *msg)
{
	uint32_t id = msg->hdr.request;
	const struct uvh_request_info *info = uvh_backend_request_info(id);
	bool reply;
	int reply_fd = -1;
	int rc;

	/* A reply arriving as a request means the peer lost track of the
	 * conversation: answering it would only add to the confusion. */
	if (msg->hdr.flags & UVH_FLAG_REPLY) {
		refuse(id, -EPROTO, "REPLY flag set on a request");
		uvh_msg_close_fds(msg);
		return -EPROTO;
	}
	/* SHARED_OBJECT_LOOKUP always has its reply; others an ack on demand. */
	reply = (info && info->reply_rule == UVH_REPLY_BODY) ||
		((req->protocol_features & PF_BIT(REPLY_ACK)) &&
		 (msg->hdr.flags & UVH_FLAG_NEED_REPLY));

	rc = validate(req, info, msg);
	if (rc < 0) {
		uvh_msg_close_fds(msg);
		/* With a reply due, the NACK tells the back-end and the stream
		 * is still in step; without one, the caller closes. */
		return reply ? send_reply(req, id, rc, -1) : rc;
	}

	rc = handlers[id](req, msg, &reply_fd);
	uvh_msg_close_fds(msg);
	if (rc != 0) {
		UVH_WARN("frontend: back-end request %s failed: %s",
			 info->name, rc < 0 ? strerror(-rc) : "positive return");
		if (reply_fd >= 0) {
			close(reply_fd);
			reply_fd = -1;
		}
	}
	if (reply) {
		rc = send_reply(req, id, rc, reply_fd);
	} else {
		/* The back-end asked for nothing: a failure stays here. */
		rc = 0;
	}
	if (reply_fd >= 0)
		close(reply_fd);
	return rc;
}

struct uvh_frontend_req *uvh_frontend_req_new(int fd,
					      const struct uvh_frontend_req_ops *ops,
					      void *opaque, uint64_t protocol_features)
{
	struct uvh_frontend_req *req;

	if (fd < 0) {
		errno = EBADF;
		return NULL;
	}
	req = calloc(1, sizeof(*req));
	if (!req) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	if (ops)
		req->ops = *ops;
	req->opaque = opaque;
	req->protocol_features = protocol_features;
	uvh_endpoint_init(&req->ep, fd, uvh_backend_request_name);
	return req;
}

void uvh_frontend_req_free(struct uvh_frontend_req *req)
{
	if (!req)
		return;
	uvh_endpoint_close(&req->ep);
	free(req);
}

int uvh_frontend_req_fd(const struct uvh_frontend_req *req)
{
	return req->ep.fd;
}

int uvh_frontend_req_handle(struct uvh_frontend_req *req)
{
	struct uvh_msg msg;
	int rc;

	rc = uvh_endpoint_recv(&req->ep, &msg);
	if (rc < 0)
		return rc;
	return process(req, &msg);
}
