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
 * idea, backend_req_internal.h): one small function per request, in
 * backend_req_handlers.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"
#include "backend_req_internal.h"
#include "log.h"

/* ---- the dispatch table --------------------------------------------------- */

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
		return req_reject(msg, -EBADF, "%u fds attached, %u to %u expected",
			      msg->nfds, lo, hi);
	if (info->gate_protocol >= 0 &&
	    !(req->protocol_features & UVH_BIT(info->gate_protocol)))
		return req_reject(msg, -ENOPROTOOPT, "protocol feature %s is not negotiated",
			      uvh_protocol_feature_name(info->gate_protocol));
	/* SET_VRING_ENABLE needs PROTOCOL_FEATURES: acked by SET_FEATURES, or
	 * proven offered by an accepted SET_PROTOCOL_FEATURES, because QEMU
	 * enables rings before it sends SET_FEATURES. */
	if (info->gate_feature >= 0 && !(req->features & UVH_BIT(info->gate_feature)) &&
	    !(info->gate_feature == UVH_F_PROTOCOL_FEATURES && req->protocol_negotiated))
		return req_reject(msg, -ENOPROTOOPT, "virtio feature bit %d is not acked",
			      info->gate_feature);
	if (h->vring == IDX_NONE)
		return 0;
	if (h->vring == IDX_FILE) {
		if (msg->payload.u64 & ~(uint64_t)(UVH_VRING_IDX_MASK | UVH_VRING_NOFD_MASK))
			return req_reject(msg, -EINVAL, "reserved bits set in 0x%" PRIx64,
				      msg->payload.u64);
		idx = msg->payload.u64 & UVH_VRING_IDX_MASK;
	} else {
		idx = msg->payload.state.index;
	}
	if (idx >= req->max_queues)
		return req_reject(msg, -ERANGE, "vring %u is beyond the %u queues",
			      idx, req->max_queues);
	if (h->stopped && req->vrings[idx].started)
		return req_reject(msg, -EBUSY, "vring %u is started", idx);
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
		UVH_ERR("%s: cannot send the reply: %s", req_name(msg), strerror(-ret));
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
		req_reply_u64(req, code);
		break;
	case FAIL_DEVSTATE:
		code &= UVH_DEVICE_STATE_ERR_MASK;
		req_reply_u64(req, (code ? code : 1) | UVH_DEVICE_STATE_NOFD);
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
	req_reply_u64(req, (uint64_t)-ret);
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
		ret = req_reject(msg, -EBADMSG, "REPLY flag set on a request");
		goto drop;
	}
	/* The endpoint checks these too, but a message may come from elsewhere. */
	if ((flags & ~UVH_FLAG_NEED_REPLY) != UVH_FLAG_VERSION) {
		ret = req_reject(msg, -EBADMSG, "bad version or reserved flags 0x%x", flags);
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

