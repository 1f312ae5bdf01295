/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the back-end's channel to the front-end (rust-vmm's Backend).
 *
 * Every call builds one back-end -> front-end request, checks that the
 * negotiated protocol features allow it, sends it and, when an answer is
 * due (REPLY_ACK, or SHARED_OBJECT_LOOKUP which always has one), waits for
 * it with a deadline. The reply is as untrusted as anything else from the
 * socket: it must name our request, carry exactly REPLY|VERSION and a u64.
 *
 * Replies are received without blocking, so that one trickling in a byte
 * at a time cannot hold the caller past its timeout. After a transport error, a
 * malformed reply or a timeout the stream can no longer be trusted to sit
 * at a message boundary (a late ack would answer the next request), so the
 * channel is marked broken and every later call fails with -ENOTCONN.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"
#include "backend_chan.h"
#include "endpoint.h"
#include "log.h"

#define PF_BIT(name)	(1ull << UVH_PROTOCOL_F_##name)
#define DEFAULT_TIMEOUT_MS	5000

struct uvh_backend_chan {
	pthread_mutex_t lock;		/* one outstanding request per socket */
	uint64_t protocol_features;
	int timeout_ms;
	bool broken;
	/* Last: clang sees its cmsg buffer as variably sized. */
	struct uvh_endpoint ep;
};

/* One request as the public calls describe it. */
struct chan_req {
	uint32_t request;
	const void *payload;
	uint32_t size;
	int fd;			/* -1: none */
	int *reply_fd;		/* SHARED_OBJECT_LOOKUP's dmabuf, else NULL */
};

struct uvh_backend_chan *uvh_backend_chan_new(int fd, uint64_t protocol_features)
{
	struct uvh_backend_chan *chan;

	if (fd < 0) {
		errno = EBADF;
		return NULL;
	}
	chan = calloc(1, sizeof(*chan));
	if (!chan) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	if (pthread_mutex_init(&chan->lock, NULL)) {
		free(chan);
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	uvh_endpoint_init(&chan->ep, fd, uvh_backend_request_name);
	/* Receive without blocking so that waiting for a reply honours the
	 * timeout even when the peer stalls mid-message. */
	chan->ep.nonblocking = true;
	chan->protocol_features = protocol_features;
	chan->timeout_ms = DEFAULT_TIMEOUT_MS;
	return chan;
}

void uvh_backend_chan_free(struct uvh_backend_chan *chan)
{
	if (!chan)
		return;
	/* The last call's thread and this one may have met only through the
	 * socket (its peer closing): the lock makes the hand-over explicit,
	 * for the reader and for ThreadSanitizer. No call may still run. */
	pthread_mutex_lock(&chan->lock);
	uvh_endpoint_close(&chan->ep);
	pthread_mutex_unlock(&chan->lock);
	pthread_mutex_destroy(&chan->lock);
	free(chan);
}

void uvh_backend_chan_set_timeout(struct uvh_backend_chan *chan, int timeout_ms)
{
	pthread_mutex_lock(&chan->lock);
	chan->timeout_ms = timeout_ms < 0 ? -1 : timeout_ms;
	pthread_mutex_unlock(&chan->lock);
}

/* Receive one whole message before the deadline (-1: none). */
static int recv_reply(struct uvh_backend_chan *chan, struct uvh_msg *msg,
		      int64_t deadline)
{
	for (;;) {
		int timeout = -1;
		int rc = uvh_endpoint_recv(&chan->ep, msg);

		if (rc != -EAGAIN)
			return rc;
		if (deadline >= 0) {
			int64_t left = deadline - uvh_now_ms();

			if (left <= 0)
				return -ETIMEDOUT;
			timeout = left > INT32_MAX ? INT32_MAX : (int)left;
		}
		rc = uvh_endpoint_wait(&chan->ep, timeout);
		if (rc == 0)
			return -ETIMEDOUT;
		if (rc < 0 && rc != -EINTR)
			return rc;
	}
}

/*
 * Check a reply against the request it answers. Acks carry no fd; the
 * lookup's reply may carry the object's fd. On success *value is the u64
 * and the fd (if any) is left in msg.
 */
static int check_reply(const struct uvh_msg *msg, uint32_t request,
		       unsigned int max_fds, uint64_t *value)
{
	const char *name = uvh_backend_request_name(request);

	if (msg->hdr.request != request) {
		UVH_ERR("backend channel: %s: reply names request %u (%s)",
			name, msg->hdr.request,
			uvh_backend_request_name(msg->hdr.request));
		return -EPROTO;
	}
	if (msg->hdr.flags != (UVH_FLAG_REPLY | UVH_FLAG_VERSION)) {
		UVH_ERR("backend channel: %s: reply flags 0x%x are not REPLY|VERSION",
			name, msg->hdr.flags);
		return -EPROTO;
	}
	if (msg->hdr.size != sizeof(uint64_t)) {
		UVH_ERR("backend channel: %s: reply size %u, want 8",
			name, msg->hdr.size);
		return -EPROTO;
	}
	if (msg->nfds > max_fds) {
		UVH_ERR("backend channel: %s: reply carries %u fds, at most %u allowed",
			name, msg->nfds, max_fds);
		return -EPROTO;
	}
	*value = msg->payload.u64;
	return 0;
}

/* Wait for and judge the answer to @rq; called with the lock held. */
static int wait_answer(struct uvh_backend_chan *chan, const struct chan_req *rq)
{
	const char *name = uvh_backend_request_name(rq->request);
	int64_t deadline = -1;
	struct uvh_msg msg;
	uint64_t value;
	int rc;

	if (chan->timeout_ms >= 0)
		deadline = uvh_now_ms() + chan->timeout_ms;
	rc = recv_reply(chan, &msg, deadline);
	if (rc == -ETIMEDOUT)
		UVH_ERR("backend channel: %s: no reply within %d ms",
			name, chan->timeout_ms);
	if (rc < 0)
		return rc;
	rc = check_reply(&msg, rq->request, rq->reply_fd ? 1 : 0, &value);
	if (rc < 0) {
		uvh_msg_close_fds(&msg);
		return rc;
	}
	if (value) {
		/* A verdict, not a protocol error: the channel stays usable. */
		UVH_WARN("backend channel: %s: front-end answered 0x%llx",
			 name, (unsigned long long)value);
		uvh_msg_close_fds(&msg);
		return -EIO;
	}
	if (rq->reply_fd) {
		/* QEMU answers a miss with 0 and no fd. */
		if (msg.nfds == 0)
			return -ENOENT;
		*rq->reply_fd = msg.fds[0];
		msg.nfds = 0;
	}
	return 0;
}

/* Check the gates, send @rq and collect its answer when one is due. */
static int chan_call(struct uvh_backend_chan *chan, const struct chan_req *rq)
{
	const struct uvh_request_info *info = uvh_backend_request_info(rq->request);
	struct uvh_msg_header hdr;
	bool answer;
	uint64_t pf;
	int rc;

	if (!chan)
		return -EINVAL;
	pf = chan->protocol_features;

	if (info->gate_protocol >= 0 && !(pf & (1ull << info->gate_protocol))) {
		UVH_ERR("backend channel: %s refused: protocol feature %s not negotiated",
			info->name, uvh_protocol_feature_name(info->gate_protocol));
		return -EOPNOTSUPP;
	}
	if (rq->fd >= 0 && !(pf & PF_BIT(BACKEND_SEND_FD))) {
		UVH_ERR("backend channel: %s refused: an fd needs BACKEND_SEND_FD",
			info->name);
		return -EOPNOTSUPP;
	}

	/* The lookup always has a reply body; the rest answer only with an
	 * ack, which REPLY_ACK lets us ask for. */
	answer = info->reply_rule == UVH_REPLY_BODY ||
		 (pf & PF_BIT(REPLY_ACK));
	hdr.request = rq->request;
	hdr.flags = UVH_FLAG_VERSION | (answer ? UVH_FLAG_NEED_REPLY : 0);
	hdr.size = rq->size;

	pthread_mutex_lock(&chan->lock);
	if (chan->broken) {
		rc = -ENOTCONN;
		goto out;
	}
	rc = uvh_endpoint_send(&chan->ep, &hdr, rq->payload,
			       rq->fd >= 0 ? &rq->fd : NULL, rq->fd >= 0 ? 1 : 0);
	if (rc < 0) {
		UVH_ERR("backend channel: %s: send failed: %s",
			info->name, strerror(-rc));
		chan->broken = true;
		goto out;
	}
	if (answer) {
		rc = wait_answer(chan, rq);
		if (rc < 0 && rc != -EIO && rc != -ENOENT)
			chan->broken = true;
	}
out:
	pthread_mutex_unlock(&chan->lock);
	return rc;
}

int uvh_backend_chan_iotlb_msg(struct uvh_backend_chan *chan, const struct uvh_iotlb *msg)
{
	struct chan_req rq = {
		.request = UVH_BACKEND_REQ_IOTLB_MSG, .payload = msg,
		.size = sizeof(*msg), .fd = -1,
	};

	if (!msg)
		return -EINVAL;
	return chan_call(chan, &rq);
}

int uvh_backend_chan_config_change(struct uvh_backend_chan *chan)
{
	struct chan_req rq = {
		.request = UVH_BACKEND_REQ_CONFIG_CHANGE_MSG, .fd = -1,
	};

	return chan_call(chan, &rq);
}

int uvh_backend_chan_vring_host_notifier(struct uvh_backend_chan *chan, uint32_t index,
					 int fd, uint64_t size, uint64_t offset)
{
	struct uvh_vring_area area = {
		.u64 = index | (fd < 0 ? UVH_VRING_NOFD_MASK : 0),
		.size = size,
		.offset = offset,
	};
	struct chan_req rq = {
		.request = UVH_BACKEND_REQ_VRING_HOST_NOTIFIER_MSG,
		.payload = &area, .size = sizeof(area), .fd = fd < 0 ? -1 : fd,
	};

	/* The index shares the u64 with the no-fd bit: 8 bits only. */
	if (index > UVH_VRING_IDX_MASK)
		return -EINVAL;
	return chan_call(chan, &rq);
}

static int vring_notify(struct uvh_backend_chan *chan, uint32_t request, uint32_t index)
{
	struct uvh_vring_state state = { .index = index, .num = 0 };
	struct chan_req rq = {
		.request = request, .payload = &state, .size = sizeof(state),
		.fd = -1,
	};

	return chan_call(chan, &rq);
}

int uvh_backend_chan_vring_call(struct uvh_backend_chan *chan, uint32_t index)
{
	return vring_notify(chan, UVH_BACKEND_REQ_VRING_CALL, index);
}

int uvh_backend_chan_vring_err(struct uvh_backend_chan *chan, uint32_t index)
{
	return vring_notify(chan, UVH_BACKEND_REQ_VRING_ERR, index);
}

static int shared_object(struct uvh_backend_chan *chan, uint32_t request,
			 const struct uvh_shared_object *uuid, int *reply_fd)
{
	struct chan_req rq = {
		.request = request, .payload = uuid, .size = sizeof(*uuid),
		.fd = -1, .reply_fd = reply_fd,
	};

	if (!uuid)
		return -EINVAL;
	return chan_call(chan, &rq);
}

int uvh_backend_chan_shared_object_add(struct uvh_backend_chan *chan,
				       const struct uvh_shared_object *uuid)
{
	return shared_object(chan, UVH_BACKEND_REQ_SHARED_OBJECT_ADD, uuid, NULL);
}

int uvh_backend_chan_shared_object_remove(struct uvh_backend_chan *chan,
					  const struct uvh_shared_object *uuid)
{
	return shared_object(chan, UVH_BACKEND_REQ_SHARED_OBJECT_REMOVE, uuid, NULL);
}

int uvh_backend_chan_shared_object_lookup(struct uvh_backend_chan *chan,
					  const struct uvh_shared_object *uuid, int *fd)
{
	if (!fd)
		return -EINVAL;
	*fd = -1;
	return shared_object(chan, UVH_BACKEND_REQ_SHARED_OBJECT_LOOKUP, uuid, fd);
}

int uvh_backend_chan_shmem_map(struct uvh_backend_chan *chan,
			       const struct uvh_shmem_map *map, int fd)
{
	struct chan_req rq = {
		.request = UVH_BACKEND_REQ_SHMEM_MAP, .payload = map,
		.size = sizeof(*map), .fd = fd,
	};

	if (!map)
		return -EINVAL;
	if (fd < 0)
		return -EBADF;
	return chan_call(chan, &rq);
}

int uvh_backend_chan_shmem_unmap(struct uvh_backend_chan *chan,
				 const struct uvh_shmem_map *map)
{
	struct chan_req rq = {
		.request = UVH_BACKEND_REQ_SHMEM_UNMAP, .payload = map,
		.size = sizeof(*map), .fd = -1,
	};

	if (!map)
		return -EINVAL;
	return chan_call(chan, &rq);
}
