/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the vhost-user front-end. One generic "send a request, collect
 * what the spec says comes back" path driven by the request table of
 * message.h, and one thin call per request that encodes its payload and
 * decodes its reply.
 *
 * This file: the connection, the back-end channel, the generic request
 * path and negotiation. The calls per request are in frontend_calls.c,
 * reconnecting after a back-end restart in frontend_reconnect.c; what they
 * share is in frontend_internal.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "util.h"
#include "frontend_internal.h"

#define DEFAULT_TIMEOUT_MS	10000

/* ---- the back-end channel ------------------------------------------------ */

/*
 * The caller's callbacks are reached through these trampolines so that a
 * callback's own failure (reported as a NACK, the channel stays usable) can
 * be told apart from a broken channel: uvh_frontend_req_handle() returns
 * both as a negative errno.
 */
static int chan_result(struct uvh_frontend *fe, int r)
{
	if (r)
		fe->chan_handler_failed = true;
	return r;
}

static int chan_iotlb_msg(void *opaque, const struct uvh_iotlb *msg)
{
	struct uvh_frontend *fe = opaque;

	if (!fe->chan_ops->iotlb_msg)
		return chan_result(fe, -ENOSYS);
	return chan_result(fe, fe->chan_ops->iotlb_msg(fe->chan_opaque, msg));
}

static int chan_config_change(void *opaque)
{
	struct uvh_frontend *fe = opaque;

	if (!fe->chan_ops->config_change)
		return chan_result(fe, -ENOSYS);
	return chan_result(fe, fe->chan_ops->config_change(fe->chan_opaque));
}

static int chan_vring_host_notifier(void *opaque, const struct uvh_vring_area *area,
				    int fd)
{
	struct uvh_frontend *fe = opaque;

	if (!fe->chan_ops->vring_host_notifier) {
		if (fd >= 0)
			close(fd);	/* it was ours to keep or close */
		return chan_result(fe, -ENOSYS);
	}
	return chan_result(fe, fe->chan_ops->vring_host_notifier(fe->chan_opaque, area, fd));
}

static int chan_vring_call(void *opaque, uint32_t index)
{
	struct uvh_frontend *fe = opaque;

	if (!fe->chan_ops->vring_call)
		return chan_result(fe, -ENOSYS);
	return chan_result(fe, fe->chan_ops->vring_call(fe->chan_opaque, index));
}

static int chan_vring_err(void *opaque, uint32_t index)
{
	struct uvh_frontend *fe = opaque;

	if (!fe->chan_ops->vring_err)
		return chan_result(fe, -ENOSYS);
	return chan_result(fe, fe->chan_ops->vring_err(fe->chan_opaque, index));
}

static int chan_shared_object_add(void *opaque, const struct uvh_shared_object *uuid)
{
	struct uvh_frontend *fe = opaque;

	if (!fe->chan_ops->shared_object_add)
		return chan_result(fe, -ENOSYS);
	return chan_result(fe, fe->chan_ops->shared_object_add(fe->chan_opaque, uuid));
}

static int chan_shared_object_remove(void *opaque, const struct uvh_shared_object *uuid)
{
	struct uvh_frontend *fe = opaque;

	if (!fe->chan_ops->shared_object_remove)
		return chan_result(fe, -ENOSYS);
	return chan_result(fe, fe->chan_ops->shared_object_remove(fe->chan_opaque, uuid));
}

static int chan_shared_object_lookup(void *opaque, const struct uvh_shared_object *uuid,
				     int *fd)
{
	struct uvh_frontend *fe = opaque;

	*fd = -1;
	if (!fe->chan_ops->shared_object_lookup)
		return chan_result(fe, -ENOSYS);
	return chan_result(fe, fe->chan_ops->shared_object_lookup(fe->chan_opaque, uuid, fd));
}

static int chan_shmem_map(void *opaque, const struct uvh_shmem_map *map, int fd)
{
	struct uvh_frontend *fe = opaque;

	if (!fe->chan_ops->shmem_map) {
		if (fd >= 0)
			close(fd);
		return chan_result(fe, -ENOSYS);
	}
	return chan_result(fe, fe->chan_ops->shmem_map(fe->chan_opaque, map, fd));
}

static int chan_shmem_unmap(void *opaque, const struct uvh_shmem_map *map)
{
	struct uvh_frontend *fe = opaque;

	if (!fe->chan_ops->shmem_unmap)
		return chan_result(fe, -ENOSYS);
	return chan_result(fe, fe->chan_ops->shmem_unmap(fe->chan_opaque, map));
}

static const struct uvh_frontend_req_ops chan_trampolines = {
	.iotlb_msg = chan_iotlb_msg,
	.config_change = chan_config_change,
	.vring_host_notifier = chan_vring_host_notifier,
	.vring_call = chan_vring_call,
	.vring_err = chan_vring_err,
	.shared_object_add = chan_shared_object_add,
	.shared_object_remove = chan_shared_object_remove,
	.shared_object_lookup = chan_shared_object_lookup,
	.shmem_map = chan_shmem_map,
	.shmem_unmap = chan_shmem_unmap,
};

/* Serve one back-end request. A handler's failure was already NACKed and
 * leaves the channel usable; anything else closes it (the main connection
 * carries on, as QEMU does). */
static int chan_serve_one(struct uvh_frontend *fe)
{
	int r;

	fe->chan_handler_failed = false;
	r = uvh_frontend_req_handle(fe->chan);
	if (r < 0 && !fe->chan_handler_failed) {
		UVH_WARN("front-end: back-end channel failed (%s), closing it", strerror(-r));
		chan_close(fe);
		return r;
	}
	return 0;
}

/* ---- the generic request path -------------------------------------------- */

/*
 * Wait for the next message on the main socket into fe->reply, serving the
 * back-end channel meanwhile: the back-end may need an answer there before
 * it can answer us (QEMU nests its main loop for the same reason).
 */
static int fe_wait_reply(struct uvh_frontend *fe)
{
	int64_t deadline = fe->timeout_ms >= 0 ? uvh_now_ms() + fe->timeout_ms : -1;

	for (;;) {
		struct pollfd pfd[2] = {
			{ .fd = fe->ep.fd, .events = POLLIN },
			{ .fd = -1, .events = POLLIN },
		};
		int wait = -1, r;

		if (fe->chan)
			pfd[1].fd = uvh_frontend_req_fd(fe->chan);
		if (deadline >= 0) {
			int64_t left = deadline - uvh_now_ms();

			wait = left > 0 ? (int)left : 0;
		}
		r = poll(pfd, 2, wait);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -ETIMEDOUT;
		if (pfd[0].revents) {
			r = uvh_endpoint_recv(&fe->ep, &fe->reply);
			if (r != -EAGAIN)
				return r;
		}
		if (pfd[1].revents && fe->chan)
			chan_serve_one(fe);
	}
}

/* Which fds a reply may carry; the calls check the details. */
static unsigned int reply_max_fds(uint32_t request)
{
	switch (request) {
	case UVH_REQ_GET_INFLIGHT_FD:
	case UVH_REQ_POSTCOPY_ADVISE:
	case UVH_REQ_GET_SHARED_OBJECT:
	case UVH_REQ_SET_DEVICE_STATE_FD:
		return 1;
	default:
		return 0;
	}
}

/* Documented in frontend_internal.h. */
int uvh__fe_request(struct uvh_frontend *fe, uint32_t request, const void *payload,
		    uint32_t size, const int *fds, unsigned int nfds)
{
	const struct uvh_request_info *info = uvh_frontend_request_info(request);
	struct uvh_msg_header hdr = {
		.request = request,
		.flags = UVH_FLAG_VERSION,
		.size = size,
	};
	struct uvh_msg *reply = &fe->reply;
	bool want_reply = false;
	int r;

	if (!info)
		return -EINVAL;
	if (info->gate_protocol >= 0 &&
	    !(fe->protocol_features & (1ull << info->gate_protocol))) {
		UVH_DEBUG("front-end: %s needs protocol feature %s", info->name,
			  uvh_protocol_feature_name((unsigned int)info->gate_protocol));
		return -EOPNOTSUPP;
	}
	if (info->gate_feature >= 0 && !(fe->features & (1ull << info->gate_feature))) {
		UVH_DEBUG("front-end: %s needs feature bit %d", info->name, info->gate_feature);
		return -EOPNOTSUPP;
	}

	switch (info->reply_rule) {
	case UVH_REPLY_BODY:
		want_reply = true;
		break;
	case UVH_REPLY_LOG:
		/* With LOG_SHMFD the reply is mandatory, NEED_REPLY or not. */
		if (fe->protocol_features & PF_BIT(LOG_SHMFD)) {
			want_reply = true;
			break;
		}
		/* fall through */
	case UVH_REPLY_ACK:
		if (fe->protocol_features & PF_BIT(REPLY_ACK)) {
			hdr.flags |= UVH_FLAG_NEED_REPLY;
			want_reply = true;
		}
		break;
	}

	UVH_DEBUG("front-end: -> %s size %u fds %u%s", info->name, size, nfds,
		  hdr.flags & UVH_FLAG_NEED_REPLY ? " need-reply" : "");
	r = uvh_endpoint_send(&fe->ep, &hdr, payload, fds, nfds);
	if (r < 0) {
		UVH_ERR("front-end: sending %s failed: %s", info->name, strerror(-r));
		return fe_break(fe, r);
	}
	if (!want_reply)
		return 0;

	r = fe_wait_reply(fe);
	if (r == -ETIMEDOUT) {
		UVH_ERR("front-end: no reply to %s within %d ms", info->name, fe->timeout_ms);
		return fe_break(fe, r);
	}
	if (r < 0) {
		UVH_ERR("front-end: waiting for the %s reply: %s", info->name, strerror(-r));
		return fe_break(fe, r);
	}

	if (reply->hdr.request != request)
		return fe_bad_reply(fe, request, "answers another request");
	/* QEMU's rule: exactly REPLY|VERSION, nothing else. */
	if (reply->hdr.flags != (UVH_FLAG_REPLY | UVH_FLAG_VERSION))
		return fe_bad_reply(fe, request, "bad flags");
	if (reply->nfds > reply_max_fds(request))
		return fe_bad_reply(fe, request, "unexpected fds");
	/* A zero-size GET_CONFIG reply is the spec's way to fail. */
	if (request == UVH_REQ_GET_CONFIG && reply->hdr.size == 0 && reply->nfds == 0) {
		UVH_WARN("front-end: the back-end failed GET_CONFIG");
		return -EIO;
	}
	if (uvh_msg_check_size(info, reply, true))
		return fe_bad_reply(fe, request, "bad size");

	if (info->reply_rule != UVH_REPLY_BODY) {
		/* An ack, or SET_LOG_BASE's (maybe empty) reply. */
		if (reply->hdr.size == 8 && reply->payload.u64) {
			UVH_WARN("front-end: %s refused by the back-end (0x%llx)", info->name,
				 (unsigned long long)reply->payload.u64);
			return -EIO;
		}
	}
	return 0;
}

/* ---- life cycle ------------------------------------------------------------ */

struct uvh_frontend *uvh_frontend_from_fd(int fd)
{
	pthread_mutexattr_t attr;
	struct uvh_frontend *fe;
	int flags;

	if (fd < 0) {
		errno = EBADF;
		return NULL;
	}
	fe = calloc(1, sizeof(*fe));
	if (!fe) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	/* Non-blocking receives, so a back-end that stalls mid-message still
	 * hits the reply timeout; sends wait with poll (endpoint.h). */
	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
		int err = errno;

		close(fd);
		free(fe);
		errno = err;
		return NULL;
	}
	pthread_mutexattr_init(&attr);
	pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
	pthread_mutex_init(&fe->lock, &attr);
	pthread_mutexattr_destroy(&attr);
	uvh_endpoint_init(&fe->ep, fd, uvh_frontend_request_name);
	fe->ep.nonblocking = true;
	fe->timeout_ms = DEFAULT_TIMEOUT_MS;
	return fe;
}

int uvh_frontend_connect(const char *path, const struct uvh_connect_opts *opts,
			 struct uvh_frontend **out)
{
	struct uvh_frontend *fe;
	int fd;

	if (!path || !out)
		return -EINVAL;
	fd = uvh_connect(path, opts);
	if (fd < 0)
		return fd;
	fe = uvh_frontend_from_fd(fd);
	if (!fe)
		return -errno;
	fe->path = strdup(path);
	if (!fe->path) {
		uvh_frontend_free(fe);
		return -ENOMEM;
	}
	*out = fe;
	return 0;
}

int uvh_frontend_accept(const char *path, const struct uvh_listener_opts *opts,
			int timeout_ms, struct uvh_frontend **out)
{
	struct uvh_listener *l;
	struct uvh_frontend *fe;
	int fd, r;

	if (!path || !out)
		return -EINVAL;
	r = uvh_listener_open(path, opts, &l);
	if (r < 0)
		return r;
	fd = uvh_listener_accept(l, timeout_ms);
	uvh_listener_close(l);	/* one back-end per front-end */
	if (fd < 0)
		return fd;
	fe = uvh_frontend_from_fd(fd);
	if (!fe)
		return -errno;
	*out = fe;
	return 0;
}

void uvh_frontend_free(struct uvh_frontend *fe)
{
	if (!fe)
		return;
	chan_close(fe);
	uvh_msg_close_fds(&fe->reply);
	uvh_endpoint_close(&fe->ep);
	fe_session_free(fe->sess);
	free(fe->path);
	pthread_mutex_destroy(&fe->lock);
	free(fe);
}

int uvh_frontend_fd(const struct uvh_frontend *fe)
{
	return fe ? __atomic_load_n(&fe->ep.fd, __ATOMIC_RELAXED) : -1;
}

void uvh_frontend_set_timeout(struct uvh_frontend *fe, int timeout_ms)
{
	int r;

	if (!fe)
		return;
	/* EDEADLK: called from a channel callback, the lock is ours already. */
	r = pthread_mutex_lock(&fe->lock);
	fe->timeout_ms = timeout_ms < 0 ? -1 : timeout_ms;
	if (!r)
		pthread_mutex_unlock(&fe->lock);
}

uint64_t uvh_frontend_features(const struct uvh_frontend *fe)
{
	return fe ? fe->features : 0;
}

uint64_t uvh_frontend_protocol_features(const struct uvh_frontend *fe)
{
	return fe ? fe->protocol_features : 0;
}

/* ---- negotiation ------------------------------------------------------------ */

static void log_negotiated(uint64_t features, uint64_t pf)
{
	char names[512];
	size_t len = 0;

	names[0] = 0;
	for (unsigned int bit = 0; bit < UVH_PROTOCOL_F_COUNT; bit++) {
		const char *name = uvh_protocol_feature_name(bit);
		int n;

		if (!(pf & (1ull << bit)) || !name)
			continue;
		n = snprintf(names + len, sizeof(names) - len, "%s%s", len ? " " : "", name);
		if (n < 0 || (size_t)n >= sizeof(names) - len)
			break;
		len += (size_t)n;
	}
	UVH_INFO("front-end: negotiated features 0x%llx, protocol features 0x%llx (%s)",
		 (unsigned long long)features, (unsigned long long)pf, len ? names : "none");
}

int uvh_frontend_negotiate(struct uvh_frontend *fe, uint64_t features,
			   uint64_t protocol_features, uint64_t *features_out,
			   uint64_t *protocol_features_out)
{
	const uint64_t pf_bit = 1ull << UVH_F_PROTOCOL_FEATURES;
	uint64_t offered, acked, pf_offered = 0, pf = 0;
	int r;

	if (!fe)
		return -EINVAL;
	r = uvh_frontend_set_owner(fe);
	if (r)
		return r;
	r = uvh_frontend_get_features(fe, &offered);
	if (r)
		return r;
	acked = features & offered;
	if (offered & pf_bit)
		acked |= pf_bit;
	r = uvh_frontend_set_features(fe, acked);
	if (r)
		return r;
	if (offered & pf_bit) {
		r = uvh_frontend_get_protocol_features(fe, &pf_offered);
		if (r)
			return r;
		pf = protocol_features & pf_offered;
		/* The spec: in-band notifications need the channel and acks. */
		if ((pf & PF_BIT(INBAND_NOTIFICATIONS)) &&
		    (pf & (PF_BIT(BACKEND_REQ) | PF_BIT(REPLY_ACK))) !=
		    (PF_BIT(BACKEND_REQ) | PF_BIT(REPLY_ACK)))
			pf &= ~PF_BIT(INBAND_NOTIFICATIONS);
		r = uvh_frontend_set_protocol_features(fe, pf);
		if (r)
			return r;
	}
	log_negotiated(acked, pf);
	if (features_out)
		*features_out = acked;
	if (protocol_features_out)
		*protocol_features_out = pf;
	return 0;
}

/* ---- the back-end channel ------------------------------------------------------ */

int uvh_frontend_set_backend_req(struct uvh_frontend *fe,
				 const struct uvh_frontend_req_ops *ops, void *opaque)
{
	int sv[2], r;

	if (!fe || !ops)
		return -EINVAL;
	r = fe_lock(fe);
	if (r)
		return r;
	if (fe->chan) {
		r = -EALREADY;
		goto out;
	}
	if (!(fe->protocol_features & PF_BIT(BACKEND_REQ))) {
		r = -EOPNOTSUPP;
		goto out;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
		r = -errno;
		goto out;
	}
	fe->chan_ops = ops;
	fe->chan_opaque = opaque;
	/* Serve our end before sending the other: the back-end may use the
	 * channel before it acks. */
	fe->chan = uvh_frontend_req_new(sv[0], &chan_trampolines, fe, fe->protocol_features);
	if (!fe->chan) {
		r = -errno;
		close(sv[1]);
		goto out;
	}
	r = uvh__fe_request(fe, UVH_REQ_SET_BACKEND_REQ_FD, NULL, 0, &sv[1], 1);
	close(sv[1]);	/* the back-end has its own copy now */
	uvh_msg_close_fds(&fe->reply);
	if (r)
		chan_close(fe);
	else
		fe_session_backend_req(fe->sess, ops, opaque);
out:
	fe_unlock(fe);
	return r;
}

int uvh_frontend_backend_req_fd(const struct uvh_frontend *fe)
{
	return fe && fe->chan ? uvh_frontend_req_fd(fe->chan) : -1;
}

int uvh_frontend_poll_backend(struct uvh_frontend *fe, int timeout_ms)
{
	int served = 0, wait = timeout_ms < 0 ? -1 : timeout_ms, r;

	if (!fe)
		return -EINVAL;
	r = pthread_mutex_lock(&fe->lock);
	if (r)
		return -r;
	/* The channel lives on even when the main socket is broken. */
	while (fe->chan) {
		struct pollfd pfd = { .fd = uvh_frontend_req_fd(fe->chan), .events = POLLIN };

		r = poll(&pfd, 1, wait);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto out;
		}
		if (r == 0)
			break;
		r = chan_serve_one(fe);
		if (r < 0)
			goto out;
		served++;
		wait = 0;	/* then only what is already waiting */
	}
	r = served ? served : (fe->chan ? 0 : -ENOTCONN);
out:
	fe_unlock(fe);
	return r;
}

