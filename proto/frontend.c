/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the vhost-user front-end. One generic "send a request, collect
 * what the spec says comes back" path driven by the request table of
 * message.h, and one thin call per request that encodes its payload and
 * decodes its reply.
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

#include "endpoint.h"
#include "frontend.h"
#include "frontend_session.h"
#include "log.h"

#define PF_BIT(name)		(1ull << UVH_PROTOCOL_F_##name)
#define DEFAULT_TIMEOUT_MS	10000

struct uvh_frontend {
	pthread_mutex_t lock;		/* one outstanding request */
	uint64_t features;		/* acked with SET_FEATURES */
	uint64_t protocol_features;	/* acked with SET_PROTOCOL_FEATURES */
	int timeout_ms;
	bool broken;
	/* The back-end channel and the caller's handlers behind it. */
	struct uvh_frontend_req *chan;
	const struct uvh_frontend_req_ops *chan_ops;
	void *chan_opaque;
	bool chan_handler_failed;
	/* uvh_frontend_reconnect(): where, and what to replay (NULL: off) */
	char *path;
	struct fe_session *sess;
	unsigned int reconnects;
	/* The reply of the request in flight (too big for the stack). */
	struct uvh_msg reply;
	/* Last: clang sees its cmsg buffer as variably sized. */
	struct uvh_endpoint ep;
};

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

static void chan_close(struct uvh_frontend *fe)
{
	if (fe->chan) {
		uvh_frontend_req_free(fe->chan);
		fe->chan = NULL;
	}
}

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

/* ---- locking and state ---------------------------------------------------- */

static int fe_lock(struct uvh_frontend *fe)
{
	/* Error-checking mutex: a channel callback calling back in gets
	 * EDEADLK instead of hanging. */
	int r = pthread_mutex_lock(&fe->lock);

	if (r)
		return -r;
	if (fe->broken) {
		pthread_mutex_unlock(&fe->lock);
		return -ENOTCONN;
	}
	return 0;
}

static void fe_unlock(struct uvh_frontend *fe)
{
	pthread_mutex_unlock(&fe->lock);
}

static int fe_break(struct uvh_frontend *fe, int err)
{
	fe->broken = true;
	return err;
}

/* A reply that does not follow the spec: drop its fds, give up on the
 * connection (the stream may no longer be in step). */
static int fe_bad_reply(struct uvh_frontend *fe, uint32_t request, const char *why)
{
	UVH_ERR("front-end: %s reply: %s", uvh_frontend_request_name(request), why);
	uvh_msg_close_fds(&fe->reply);
	return fe_break(fe, -EPROTO);
}

/* The one fd of the reply (caller owns it), or -1. */
static int fe_take_fd(struct uvh_frontend *fe)
{
	int fd = -1;

	if (fe->reply.nfds == 1) {
		fd = fe->reply.fds[0];
		fe->reply.nfds = 0;
	}
	uvh_msg_close_fds(&fe->reply);
	return fd;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the generic request path -------------------------------------------- */

/*
 * Wait for the next message on the main socket into fe->reply, serving the
 * back-end channel meanwhile: the back-end may need an answer there before
 * it can answer us (QEMU nests its main loop for the same reason).
 */
static int fe_wait_reply(struct uvh_frontend *fe)
{
	int64_t deadline = fe->timeout_ms >= 0 ? now_ms() + fe->timeout_ms : -1;

	for (;;) {
		struct pollfd pfd[2] = {
			{ .fd = fe->ep.fd, .events = POLLIN },
			{ .fd = -1, .events = POLLIN },
		};
		int wait = -1, r;

		if (fe->chan)
			pfd[1].fd = uvh_frontend_req_fd(fe->chan);
		if (deadline >= 0) {
			int64_t left = deadline - now_ms();

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

/*
 * Send @request with @size payload bytes and @nfds fds (the caller keeps
 * them), then wait for what the table says comes back. Returns 0 with a
 * body reply left in fe->reply (its fds owned there: take or close them),
 * -EIO for a NACK, -EOPNOTSUPP when the request's gate is not negotiated,
 * or a transport/protocol error (connection then broken). Called locked.
 */
static int fe_request(struct uvh_frontend *fe, uint32_t request, const void *payload,
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

/* The usual call: lock, request, unlock (for requests without a body). */
static int fe_call(struct uvh_frontend *fe, uint32_t request, const void *payload,
		   uint32_t size, const int *fds, unsigned int nfds)
{
	int r;

	if (!fe)
		return -EINVAL;
	r = fe_lock(fe);
	if (r)
		return r;
	r = fe_request(fe, request, payload, size, fds, nfds);
	uvh_msg_close_fds(&fe->reply);
	fe_unlock(fe);
	return r;
}

/* A request whose reply body is a single u64. */
static int fe_call_u64(struct uvh_frontend *fe, uint32_t request, const void *payload,
		       uint32_t size, const int *fds, unsigned int nfds, uint64_t *out)
{
	int r;

	if (!fe || !out)
		return -EINVAL;
	r = fe_lock(fe);
	if (r)
		return r;
	r = fe_request(fe, request, payload, size, fds, nfds);
	if (r == 0)
		*out = fe->reply.payload.u64;
	uvh_msg_close_fds(&fe->reply);
	fe_unlock(fe);
	return r;
}

/* A request whose reply is a u64 verdict: 0 success, else -EIO. */
static int fe_call_verdict(struct uvh_frontend *fe, uint32_t request, const void *payload,
			   uint32_t size)
{
	uint64_t verdict = 0;
	int r = fe_call_u64(fe, request, payload, size, NULL, 0, &verdict);

	if (r == 0 && verdict) {
		UVH_WARN("front-end: %s failed in the back-end (0x%llx)",
			 uvh_frontend_request_name(request), (unsigned long long)verdict);
		return -EIO;
	}
	return r;
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

/* ---- surviving a back-end restart --------------------------------------------- */

int uvh_frontend_record_session(struct uvh_frontend *fe)
{
	int r;

	if (!fe)
		return -EINVAL;
	r = pthread_mutex_lock(&fe->lock);
	if (r)
		return -r;
	if (!fe->sess)
		fe->sess = fe_session_new();
	r = fe->sess ? 0 : -ENOMEM;
	pthread_mutex_unlock(&fe->lock);
	return r;
}

int uvh_frontend_check_connection(struct uvh_frontend *fe, int timeout_ms)
{
	struct pollfd pfd;
	char byte;
	int r;

	if (!fe)
		return -EINVAL;
	r = fe_lock(fe);
	if (r)
		return r;
	pfd = (struct pollfd){ .fd = fe->ep.fd, .events = POLLIN | POLLRDHUP };
	do {
		r = poll(&pfd, 1, timeout_ms < 0 ? -1 : timeout_ms);
	} while (r < 0 && errno == EINTR);
	if (r < 0) {
		r = -errno;
	} else if (r == 0) {
		r = 0;
	} else if (pfd.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL)) {
		r = fe_break(fe, -ENOTCONN);
	} else {
		/* readable: EOF, or a message nobody asked for (left alone) */
		ssize_t n = recv(fe->ep.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);

		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			r = fe_break(fe, -ENOTCONN);
		else
			r = 0;
	}
	fe_unlock(fe);
	if (r == -ENOTCONN)
		UVH_WARN("front-end: the back-end closed the connection");
	return r;
}

/* Drop the connection (and the channel): no call may use it meanwhile. */
static void fe_disconnect(struct uvh_frontend *fe)
{
	pthread_mutex_lock(&fe->lock);
	chan_close(fe);
	uvh_msg_close_fds(&fe->reply);
	uvh_endpoint_close(&fe->ep);
	fe->broken = true;
	fe->features = 0;
	fe->protocol_features = 0;
	pthread_mutex_unlock(&fe->lock);
}

/* Connect to fe->path and make it the connection. 0 or a negative errno. */
static int fe_connect_again(struct uvh_frontend *fe, const struct uvh_connect_opts *co)
{
	int fd, flags, r;

	fd = uvh_connect(fe->path, co);
	if (fd < 0)
		return fd;
	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	pthread_mutex_lock(&fe->lock);
	uvh_endpoint_init(&fe->ep, fd, uvh_frontend_request_name);
	fe->ep.nonblocking = true;
	fe->broken = false;
	pthread_mutex_unlock(&fe->lock);
	return 0;
}

/* The peer went away mid-replay: it may have been the dying process
 * (its listening socket still queues connections for a moment). */
static bool transport_gone(int r)
{
	return r == -ECONNRESET || r == -EPIPE || r == -ENOTCONN || r == -ECONNABORTED ||
	       r == -ECONNREFUSED;
}

int uvh_frontend_reconnect(struct uvh_frontend *fe, const struct uvh_frontend_reconnect_opts *opts)
{
	static const struct uvh_frontend_reconnect_opts defaults;
	struct uvh_connect_opts co;
	int64_t deadline = 0;
	int r;

	if (!fe)
		return -EINVAL;
	if (!opts)
		opts = &defaults;
	r = pthread_mutex_lock(&fe->lock);
	if (r)
		return -r;
	r = !fe->sess || fe_session_replaying(fe->sess) ? -EOPNOTSUPP :
	    !fe->path ? -EDESTADDRREQ : 0;
	pthread_mutex_unlock(&fe->lock);
	if (r)
		return r;
	co = opts->connect;
	if (co.timeout_ms > 0)
		deadline = now_ms() + co.timeout_ms;
	for (;;) {
		fe_disconnect(fe);
		if (deadline) {
			int64_t left = deadline - now_ms();

			co.timeout_ms = left > 0 ? (int)left : 0;
		}
		r = fe_connect_again(fe, &co);
		if (!r)
			r = fe_session_replay(fe->sess, fe, opts);
		if (!r)
			break;
		if (!transport_gone(r) || (deadline && now_ms() >= deadline) ||
		    opts->connect.timeout_ms == 0 || (co.stop && *co.stop)) {
			UVH_ERR("front-end: reconnecting to %s: %s", fe->path, strerror(-r));
			fe_disconnect(fe);
			return r;
		}
		UVH_WARN("front-end: %s went away during the replay (%s); again", fe->path,
			 strerror(-r));
		poll(NULL, 0, co.initial_delay_ms > 0 ? co.initial_delay_ms : 10);
	}
	fe->reconnects++;
	UVH_INFO("front-end: reconnected to %s, session replayed", fe->path);
	return 0;
}

unsigned int uvh_frontend_reconnects(const struct uvh_frontend *fe)
{
	return fe ? fe->reconnects : 0;
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
	r = fe_request(fe, UVH_REQ_SET_BACKEND_REQ_FD, NULL, 0, &sv[1], 1);
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

/* ---- one call per request ---------------------------------------------------- */

int uvh_frontend_set_owner(struct uvh_frontend *fe)
{
	return fe_call(fe, UVH_REQ_SET_OWNER, NULL, 0, NULL, 0);
}

int uvh_frontend_reset_owner(struct uvh_frontend *fe)
{
	return fe_call(fe, UVH_REQ_RESET_OWNER, NULL, 0, NULL, 0);
}

int uvh_frontend_get_features(struct uvh_frontend *fe, uint64_t *features)
{
	return fe_call_u64(fe, UVH_REQ_GET_FEATURES, NULL, 0, NULL, 0, features);
}

/* SET_FEATURES / SET_PROTOCOL_FEATURES: send @value and, once the back-end
 * took it, remember it in @in_force (under the lock, like the request). */
static int fe_set_feature_word(struct uvh_frontend *fe, uint32_t request, uint64_t value,
			       uint64_t *in_force)
{
	int r = fe_lock(fe);

	if (r)
		return r;
	r = fe_request(fe, request, &value, sizeof(value), NULL, 0);
	if (r == 0) {
		*in_force = value;
		if (request == UVH_REQ_SET_FEATURES)
			fe_session_features(fe->sess, value);
		else
			fe_session_protocol_features(fe->sess, value);
	}
	fe_unlock(fe);
	return r;
}

int uvh_frontend_set_features(struct uvh_frontend *fe, uint64_t features)
{
	if (!fe)
		return -EINVAL;
	return fe_set_feature_word(fe, UVH_REQ_SET_FEATURES, features, &fe->features);
}

int uvh_frontend_get_protocol_features(struct uvh_frontend *fe, uint64_t *pf)
{
	return fe_call_u64(fe, UVH_REQ_GET_PROTOCOL_FEATURES, NULL, 0, NULL, 0, pf);
}

int uvh_frontend_set_protocol_features(struct uvh_frontend *fe, uint64_t pf)
{
	if (!fe)
		return -EINVAL;
	/* Acked with the features in force before this message. */
	return fe_set_feature_word(fe, UVH_REQ_SET_PROTOCOL_FEATURES, pf,
				   &fe->protocol_features);
}

int uvh_frontend_set_mem_table(struct uvh_frontend *fe, const struct uvh_mem_region *regions,
			       const int *fds, unsigned int n)
{
	struct uvh_mem_table table;
	int r;

	if (n > UVH_MEMORY_MAX_NREGIONS || (n && (!regions || !fds)))
		return -EINVAL;
	for (unsigned int i = 0; i < n; i++)
		if (fds[i] < 0)
			return -EBADF;
	memset(&table, 0, sizeof(table));
	table.nregions = n;
	if (n)
		memcpy(table.regions, regions, n * sizeof(*regions));
	r = fe_call(fe, UVH_REQ_SET_MEM_TABLE, &table,
		    8 + (uint32_t)(n * sizeof(struct uvh_mem_region)), fds, n);
	if (!r)
		fe_session_mem_table(fe->sess, regions, fds, n);
	return r;
}

int uvh_frontend_add_mem_reg(struct uvh_frontend *fe, const struct uvh_mem_region *region, int fd)
{
	struct uvh_mem_single single = { 0 };
	int r;

	if (!region)
		return -EINVAL;
	if (fd < 0)
		return -EBADF;
	single.region = *region;
	r = fe_call(fe, UVH_REQ_ADD_MEM_REG, &single, sizeof(single), &fd, 1);
	if (!r)
		fe_session_add_mem(fe->sess, region, fd);
	return r;
}

int uvh_frontend_rem_mem_reg(struct uvh_frontend *fe, const struct uvh_mem_region *region)
{
	struct uvh_mem_single single = { 0 };
	int r;

	if (!region)
		return -EINVAL;
	single.region = *region;
	r = fe_call(fe, UVH_REQ_REM_MEM_REG, &single, sizeof(single), NULL, 0);
	if (!r)
		fe_session_rem_mem(fe->sess, region);
	return r;
}

int uvh_frontend_get_max_mem_slots(struct uvh_frontend *fe, uint64_t *slots)
{
	return fe_call_u64(fe, UVH_REQ_GET_MAX_MEM_SLOTS, NULL, 0, NULL, 0, slots);
}

int uvh_frontend_set_log_base(struct uvh_frontend *fe, const struct uvh_log *log, int fd)
{
	bool shmfd;
	int r;

	if (!fe || !log)
		return -EINVAL;
	r = fe_lock(fe);
	if (r)
		return r;
	/* The fd goes exactly when LOG_SHMFD is in force. */
	shmfd = fe->protocol_features & PF_BIT(LOG_SHMFD);
	if (shmfd && fd < 0)
		r = -EBADF;
	else if (!shmfd && fd >= 0)
		r = -EINVAL;
	else
		r = fe_request(fe, UVH_REQ_SET_LOG_BASE, log, sizeof(*log), &fd, shmfd ? 1 : 0);
	uvh_msg_close_fds(&fe->reply);
	fe_unlock(fe);
	return r;
}

int uvh_frontend_set_log_fd(struct uvh_frontend *fe, int fd)
{
	if (fd < 0)
		return -EBADF;
	return fe_call(fe, UVH_REQ_SET_LOG_FD, NULL, 0, &fd, 1);
}

static int fe_vring_state(struct uvh_frontend *fe, uint32_t request, uint32_t index,
			  uint32_t num)
{
	struct uvh_vring_state state = { .index = index, .num = num };
	int r = fe_call(fe, request, &state, sizeof(state), NULL, 0);

	if (!r)
		fe_session_vring_state(fe->sess, request, index, num);
	return r;
}

int uvh_frontend_set_vring_num(struct uvh_frontend *fe, uint32_t index, uint32_t num)
{
	return fe_vring_state(fe, UVH_REQ_SET_VRING_NUM, index, num);
}

int uvh_frontend_set_vring_addr(struct uvh_frontend *fe, const struct uvh_vring_addr *addr)
{
	int r;

	if (!addr)
		return -EINVAL;
	r = fe_call(fe, UVH_REQ_SET_VRING_ADDR, addr, sizeof(*addr), NULL, 0);
	if (!r)
		fe_session_vring_addr(fe->sess, addr);
	return r;
}

int uvh_frontend_set_vring_base(struct uvh_frontend *fe, uint32_t index, uint32_t base)
{
	return fe_vring_state(fe, UVH_REQ_SET_VRING_BASE, index, base);
}

static int fe_get_vring_base(struct uvh_frontend *fe, uint32_t request, uint32_t index,
			     uint32_t *base)
{
	struct uvh_vring_state state = { .index = index };
	int r;

	if (!fe || !base)
		return -EINVAL;
	r = fe_lock(fe);
	if (r)
		return r;
	r = fe_request(fe, request, &state, sizeof(state), NULL, 0);
	if (r == 0) {
		if (fe->reply.payload.state.index != index)
			r = fe_bad_reply(fe, request, "answers another vring");
		else
			*base = fe->reply.payload.state.num;
	}
	uvh_msg_close_fds(&fe->reply);
	fe_unlock(fe);
	return r;
}

int uvh_frontend_get_vring_base(struct uvh_frontend *fe, uint32_t index, uint32_t *base)
{
	return fe_get_vring_base(fe, UVH_REQ_GET_VRING_BASE, index, base);
}

int uvh_frontend_get_vring_base_skip_drain(struct uvh_frontend *fe, uint32_t index,
					   uint32_t *base)
{
	return fe_get_vring_base(fe, UVH_REQ_GET_VRING_BASE_SKIP_DRAIN, index, base);
}

/* SET_VRING_KICK/CALL/ERR: index in bits 0-7, the no-fd bit without one. */
static int fe_vring_fd(struct uvh_frontend *fe, uint32_t request, uint32_t index, int fd)
{
	uint64_t u64 = index;
	int r;

	if (index > UVH_VRING_IDX_MASK)
		return -EINVAL;
	if (fd < 0)
		u64 |= UVH_VRING_NOFD_MASK;
	r = fe_call(fe, request, &u64, sizeof(u64), &fd, fd < 0 ? 0 : 1);
	if (!r)
		fe_session_vring_fd(fe->sess, request, index, fd);
	return r;
}

int uvh_frontend_set_vring_kick(struct uvh_frontend *fe, uint32_t index, int fd)
{
	return fe_vring_fd(fe, UVH_REQ_SET_VRING_KICK, index, fd);
}

int uvh_frontend_set_vring_call(struct uvh_frontend *fe, uint32_t index, int fd)
{
	return fe_vring_fd(fe, UVH_REQ_SET_VRING_CALL, index, fd);
}

int uvh_frontend_set_vring_err(struct uvh_frontend *fe, uint32_t index, int fd)
{
	return fe_vring_fd(fe, UVH_REQ_SET_VRING_ERR, index, fd);
}

int uvh_frontend_set_vring_enable(struct uvh_frontend *fe, uint32_t index, bool enable)
{
	return fe_vring_state(fe, UVH_REQ_SET_VRING_ENABLE, index, enable ? 1 : 0);
}

int uvh_frontend_set_vring_endian(struct uvh_frontend *fe, uint32_t index, uint32_t endian)
{
	return fe_vring_state(fe, UVH_REQ_SET_VRING_ENDIAN, index, endian);
}

int uvh_frontend_vring_kick(struct uvh_frontend *fe, uint32_t index)
{
	return fe_vring_state(fe, UVH_REQ_VRING_KICK, index, 0);
}

int uvh_frontend_get_queue_num(struct uvh_frontend *fe, uint64_t *num)
{
	return fe_call_u64(fe, UVH_REQ_GET_QUEUE_NUM, NULL, 0, NULL, 0, num);
}

int uvh_frontend_get_config(struct uvh_frontend *fe, uint32_t offset, uint32_t size,
			    uint32_t flags, uint8_t *buf)
{
	struct uvh_config cfg;
	int r;

	if (!fe || size > UVH_CONFIG_MAX_SIZE || (size && !buf))
		return -EINVAL;
	/* The request carries size zero bytes for the back-end to fill. */
	memset(&cfg, 0, sizeof(cfg));
	cfg.offset = offset;
	cfg.size = size;
	cfg.flags = flags;
	r = fe_lock(fe);
	if (r)
		return r;
	r = fe_request(fe, UVH_REQ_GET_CONFIG, &cfg, UVH_CONFIG_HEAD_SIZE + size, NULL, 0);
	if (r == 0) {
		const struct uvh_config *got = &fe->reply.payload.config;

		if (got->offset != offset || got->size != size)
			r = fe_bad_reply(fe, UVH_REQ_GET_CONFIG, "another config range");
		else if (size)
			memcpy(buf, got->region, size);
	}
	uvh_msg_close_fds(&fe->reply);
	fe_unlock(fe);
	return r;
}

int uvh_frontend_set_config(struct uvh_frontend *fe, uint32_t offset, uint32_t size,
			    uint32_t flags, const uint8_t *buf)
{
	struct uvh_config cfg;

	if (size > UVH_CONFIG_MAX_SIZE || (size && !buf))
		return -EINVAL;
	memset(&cfg, 0, sizeof(cfg));
	cfg.offset = offset;
	cfg.size = size;
	cfg.flags = flags;
	if (size)
		memcpy(cfg.region, buf, size);
	return fe_call(fe, UVH_REQ_SET_CONFIG, &cfg, UVH_CONFIG_HEAD_SIZE + size, NULL, 0);
}

int uvh_frontend_net_set_mtu(struct uvh_frontend *fe, uint16_t mtu)
{
	uint64_t u64 = mtu;

	return fe_call(fe, UVH_REQ_NET_SET_MTU, &u64, sizeof(u64), NULL, 0);
}

int uvh_frontend_send_rarp(struct uvh_frontend *fe, const uint8_t mac[6])
{
	uint8_t u64[8] = { 0 };

	if (!mac)
		return -EINVAL;
	memcpy(u64, mac, 6);
	return fe_call(fe, UVH_REQ_SEND_RARP, u64, sizeof(u64), NULL, 0);
}

int uvh_frontend_set_status(struct uvh_frontend *fe, uint8_t status)
{
	uint64_t u64 = status;
	int r = fe_call(fe, UVH_REQ_SET_STATUS, &u64, sizeof(u64), NULL, 0);

	if (!r)
		fe_session_status(fe->sess, status);
	return r;
}

int uvh_frontend_get_status(struct uvh_frontend *fe, uint8_t *status)
{
	int r;

	if (!fe || !status)
		return -EINVAL;
	r = fe_lock(fe);
	if (r)
		return r;
	r = fe_request(fe, UVH_REQ_GET_STATUS, NULL, 0, NULL, 0);
	if (r == 0) {
		if (fe->reply.payload.u64 > 0xff)
			r = fe_bad_reply(fe, UVH_REQ_GET_STATUS, "status over 8 bits");
		else
			*status = (uint8_t)fe->reply.payload.u64;
	}
	uvh_msg_close_fds(&fe->reply);
	fe_unlock(fe);
	return r;
}

int uvh_frontend_reset_device(struct uvh_frontend *fe)
{
	return fe_call(fe, UVH_REQ_RESET_DEVICE, NULL, 0, NULL, 0);
}

int uvh_frontend_get_inflight_fd(struct uvh_frontend *fe, const struct uvh_inflight *in,
				 struct uvh_inflight *out, int *fd)
{
	int r;

	if (!fe || !in || !out || !fd)
		return -EINVAL;
	*fd = -1;
	r = fe_lock(fe);
	if (r)
		return r;
	r = fe_request(fe, UVH_REQ_GET_INFLIGHT_FD, in, sizeof(*in), NULL, 0);
	if (r == 0) {
		const struct uvh_inflight *got = &fe->reply.payload.inflight;

		if (!got->mmap_size && fe->reply.nfds == 0) {
			/* No inflight area (QEMU reads it so): out zeroed, no fd. */
			memset(out, 0, sizeof(*out));
		} else if (!got->mmap_size || fe->reply.nfds != 1) {
			r = fe_bad_reply(fe, UVH_REQ_GET_INFLIGHT_FD, "area and fd disagree");
		} else {
			/* 20 (packed) or 24 bytes: the padding stays zero. */
			memset(out, 0, sizeof(*out));
			memcpy(out, got, fe->reply.hdr.size);
			*fd = fe_take_fd(fe);
			/* the area a restarted back-end gets back */
			fe_session_inflight(fe->sess, out, *fd);
		}
	}
	uvh_msg_close_fds(&fe->reply);
	fe_unlock(fe);
	return r;
}

int uvh_frontend_set_inflight_fd(struct uvh_frontend *fe, const struct uvh_inflight *in, int fd)
{
	int r;

	if (!in)
		return -EINVAL;
	if (fd < 0)
		return -EBADF;
	r = fe_call(fe, UVH_REQ_SET_INFLIGHT_FD, in, sizeof(*in), &fd, 1);
	if (!r)
		fe_session_inflight(fe->sess, in, fd);
	return r;
}

int uvh_frontend_iotlb_msg(struct uvh_frontend *fe, const struct uvh_iotlb *msg)
{
	struct uvh_iotlb m;

	if (!msg || msg->perm > UVH_IOTLB_RW ||
	    (msg->type != UVH_IOTLB_UPDATE && msg->type != UVH_IOTLB_INVALIDATE))
		return -EINVAL;
	m = *msg;
	memset(m.padding, 0, sizeof(m.padding));
	return fe_call_verdict(fe, UVH_REQ_IOTLB_MSG, &m, sizeof(m));
}

int uvh_frontend_set_device_state_fd(struct uvh_frontend *fe, uint32_t direction,
				     uint32_t phase, int fd, int *out_fd)
{
	struct uvh_device_state ds = { .direction = direction, .phase = phase };
	int r;

	if (!fe || !out_fd)
		return -EINVAL;
	*out_fd = -1;
	if ((direction != UVH_DEVICE_STATE_SAVE && direction != UVH_DEVICE_STATE_LOAD) ||
	    phase != UVH_DEVICE_STATE_STOPPED)
		return -EINVAL;
	if (fd < 0)
		return -EBADF;
	r = fe_lock(fe);
	if (r)
		return r;
	r = fe_request(fe, UVH_REQ_SET_DEVICE_STATE_FD, &ds, sizeof(ds), &fd, 1);
	if (r == 0) {
		uint64_t v = fe->reply.payload.u64;
		bool nofd = v & UVH_DEVICE_STATE_NOFD;

		if (v & ~(uint64_t)(UVH_DEVICE_STATE_ERR_MASK | UVH_DEVICE_STATE_NOFD)) {
			r = fe_bad_reply(fe, UVH_REQ_SET_DEVICE_STATE_FD, "reserved bits");
		} else if (v & UVH_DEVICE_STATE_ERR_MASK) {
			UVH_WARN("front-end: SET_DEVICE_STATE_FD failed in the back-end (%llu)",
				 (unsigned long long)(v & UVH_DEVICE_STATE_ERR_MASK));
			r = -EIO;
		} else if (fe->reply.nfds != (nofd ? 0u : 1u)) {
			r = fe_bad_reply(fe, UVH_REQ_SET_DEVICE_STATE_FD,
					 "fd does not match the no-fd bit");
		} else {
			*out_fd = fe_take_fd(fe);
		}
	}
	uvh_msg_close_fds(&fe->reply);
	fe_unlock(fe);
	return r;
}

int uvh_frontend_check_device_state(struct uvh_frontend *fe)
{
	return fe_call_verdict(fe, UVH_REQ_CHECK_DEVICE_STATE, NULL, 0);
}

/* A reply whose point is its one fd. Without one, an empty body or a
 * non-zero u64 is the back-end's refusal (-EIO); a success claimed without
 * the fd is a protocol error. */
static int fe_fd_reply(struct uvh_frontend *fe, uint32_t request, int *fd)
{
	if (fe->reply.nfds == 0 && fe->reply.hdr.size == 0) {
		UVH_WARN("front-end: %s failed in the back-end",
			 uvh_frontend_request_name(request));
		return -EIO;
	}
	if (fe->reply.hdr.size >= 8 && fe->reply.payload.u64) {
		UVH_WARN("front-end: %s failed in the back-end (0x%llx)",
			 uvh_frontend_request_name(request),
			 (unsigned long long)fe->reply.payload.u64);
		uvh_msg_close_fds(&fe->reply);
		return -EIO;
	}
	if (fe->reply.nfds != 1)
		return fe_bad_reply(fe, request, "no fd");
	*fd = fe_take_fd(fe);
	return 0;
}

int uvh_frontend_get_shared_object(struct uvh_frontend *fe,
				   const struct uvh_shared_object *uuid, int *fd)
{
	int r;

	if (!fe || !uuid || !fd)
		return -EINVAL;
	*fd = -1;
	r = fe_lock(fe);
	if (r)
		return r;
	r = fe_request(fe, UVH_REQ_GET_SHARED_OBJECT, uuid, sizeof(*uuid), NULL, 0);
	if (r == 0)
		r = fe_fd_reply(fe, UVH_REQ_GET_SHARED_OBJECT, fd);
	uvh_msg_close_fds(&fe->reply);
	fe_unlock(fe);
	return r;
}

int uvh_frontend_get_shmem_config(struct uvh_frontend *fe, struct uvh_shmem_config *config)
{
	int r;

	if (!fe || !config)
		return -EINVAL;
	r = fe_lock(fe);
	if (r)
		return r;
	r = fe_request(fe, UVH_REQ_GET_SHMEM_CONFIG, NULL, 0, NULL, 0);
	if (r == 0) {
		const struct uvh_shmem_config *got = &fe->reply.payload.shmem_config;

		if (got->nregions > UVH_SHMEM_MAX_REGIONS ||
		    fe->reply.hdr.size < 8 + 8 * got->nregions) {
			r = fe_bad_reply(fe, UVH_REQ_GET_SHMEM_CONFIG, "bad region count");
		} else {
			memset(config, 0, sizeof(*config));
			memcpy(config, got, fe->reply.hdr.size);
		}
	}
	uvh_msg_close_fds(&fe->reply);
	fe_unlock(fe);
	return r;
}

int uvh_frontend_gpu_set_socket(struct uvh_frontend *fe, int fd)
{
	if (fd < 0)
		return -EBADF;
	return fe_call(fe, UVH_REQ_GPU_SET_SOCKET, NULL, 0, &fd, 1);
}

int uvh_frontend_postcopy_advise(struct uvh_frontend *fe, int *userfault_fd)
{
	int r;

	if (!fe || !userfault_fd)
		return -EINVAL;
	*userfault_fd = -1;
	r = fe_lock(fe);
	if (r)
		return r;
	r = fe_request(fe, UVH_REQ_POSTCOPY_ADVISE, NULL, 0, NULL, 0);
	if (r == 0)
		r = fe_fd_reply(fe, UVH_REQ_POSTCOPY_ADVISE, userfault_fd);
	uvh_msg_close_fds(&fe->reply);
	fe_unlock(fe);
	return r;
}

int uvh_frontend_postcopy_listen(struct uvh_frontend *fe)
{
	return fe_call(fe, UVH_REQ_POSTCOPY_LISTEN, NULL, 0, NULL, 0);
}

int uvh_frontend_postcopy_end(struct uvh_frontend *fe)
{
	return fe_call_verdict(fe, UVH_REQ_POSTCOPY_END, NULL, 0);
}

int uvh_frontend_create_crypto_session(struct uvh_frontend *fe, const void *in,
				       uint32_t size, void *out, uint32_t *out_size)
{
	int r;

	if (!fe || !in || !out || !out_size || size < 8 || size > UVH_MSG_MAX_PAYLOAD)
		return -EINVAL;
	r = fe_lock(fe);
	if (r)
		return r;
	r = fe_request(fe, UVH_REQ_CREATE_CRYPTO_SESSION, in, size, NULL, 0);
	if (r == 0) {
		if (fe->reply.hdr.size > *out_size) {
			r = -ENOBUFS;
		} else {
			memcpy(out, fe->reply.payload.raw, fe->reply.hdr.size);
			*out_size = fe->reply.hdr.size;
		}
	}
	uvh_msg_close_fds(&fe->reply);
	fe_unlock(fe);
	return r;
}

int uvh_frontend_close_crypto_session(struct uvh_frontend *fe, uint64_t session_id)
{
	return fe_call(fe, UVH_REQ_CLOSE_CRYPTO_SESSION, &session_id, sizeof(session_id),
		       NULL, 0);
}
