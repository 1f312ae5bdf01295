/* SPDX-License-Identifier: MIT */
/*
 * uvhost: one vhost-user endpoint (AF_UNIX stream + SCM_RIGHTS).
 *
 * The receive side never reads past the end of the message being assembled,
 * so the stream stays at a message boundary and the fds of the next message
 * cannot be mixed up with this one's. Everything read is untrusted: the
 * header is validated as soon as it is complete, and every fd the kernel
 * hands us is either stored in the message or closed before returning.
 */
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "endpoint.h"
#include "log.h"

/* Upper bound of the fds one control buffer can hold (each takes 4 bytes). */
#define RX_FDS_BOUND	(UVH_ENDPOINT_CMSG_SPACE / sizeof(int))

static const char *req_name(const struct uvh_endpoint *ep, uint32_t request)
{
	const char *name = ep->name_of ? ep->name_of(request) : NULL;

	return name ? name : "UNKNOWN";
}

/* Name for a log line about the message being assembled: the request is
 * only known once the header is complete. */
static const char *rx_name(const struct uvh_endpoint *ep)
{
	if (ep->rx.got < UVH_MSG_HEADER_SIZE)
		return "message";
	return req_name(ep, ep->rx.msg.hdr.request);
}

static void close_fds(const int *fds, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

static void rx_reset(struct uvh_endpoint_rx *rx)
{
	unsigned int n = rx->msg.nfds;

	close_fds(rx->msg.fds, n < UVH_MSG_MAX_FDS ? n : UVH_MSG_MAX_FDS);
	for (unsigned int i = 0; i < UVH_MSG_MAX_FDS; i++)
		rx->msg.fds[i] = -1;
	rx->msg.nfds = 0;
	rx->got = 0;
	memset(&rx->msg.hdr, 0, sizeof(rx->msg.hdr));
}

/* A message handed back on error must hold nothing a caller could close. */
static void msg_clear_fds(struct uvh_msg *msg)
{
	for (unsigned int i = 0; i < UVH_MSG_MAX_FDS; i++)
		msg->fds[i] = -1;
	msg->nfds = 0;
}

void uvh_endpoint_init(struct uvh_endpoint *ep, int fd,
		       const char *(*name_of)(uint32_t request))
{
	memset(ep, 0, sizeof(*ep));
	ep->fd = fd;
	ep->nonblocking = false;
	ep->name_of = name_of;
	ep->stall_ms = UVH_ENDPOINT_STALL_MS;
	for (unsigned int i = 0; i < UVH_MSG_MAX_FDS; i++)
		ep->rx.msg.fds[i] = -1;
}

void uvh_endpoint_close(struct uvh_endpoint *ep)
{
	rx_reset(&ep->rx);
	if (ep->fd >= 0)
		close(ep->fd);
	ep->fd = -1;
}

/* Wait for @events on the socket; -1 = forever. EINTR restarts the wait
 * with what is left of the timeout. */
static int wait_for(int fd, short events, int timeout_ms)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	struct timespec start, now;
	int left = timeout_ms;

	if (timeout_ms > 0)
		clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		int r = poll(&pfd, 1, left);

		if (r > 0) {
			if (pfd.revents & POLLNVAL)
				return -EBADF;
			/* HUP/ERR count as ready: the next call reports them. */
			return 1;
		}
		if (r == 0)
			return 0;
		if (errno != EINTR)
			return -errno;
		if (timeout_ms > 0) {
			long ms;

			clock_gettime(CLOCK_MONOTONIC, &now);
			ms = (now.tv_sec - start.tv_sec) * 1000L +
			     (now.tv_nsec - start.tv_nsec) / 1000000L;
			if (ms >= timeout_ms)
				return 0;
			left = timeout_ms - (int)ms;
		}
	}
}

int uvh_endpoint_wait(struct uvh_endpoint *ep, int timeout_ms)
{
	if (ep->fd < 0)
		return -EBADF;
	return wait_for(ep->fd, POLLIN, timeout_ms < 0 ? -1 : timeout_ms);
}

/* ---- send --------------------------------------------------------------- */

int uvh_endpoint_send(struct uvh_endpoint *ep, const struct uvh_msg_header *hdr,
		      const void *payload, const int *fds, unsigned int nfds)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(UVH_MSG_MAX_FDS * sizeof(int))];
	} ctl;
	struct uvh_msg_header h;
	size_t total, done = 0;

	if (ep->fd < 0)
		return -EBADF;
	if (!hdr || nfds > UVH_MSG_MAX_FDS || hdr->size > UVH_MSG_MAX_PAYLOAD ||
	    (hdr->size && !payload) || (nfds && !fds))
		return -EINVAL;
	for (unsigned int i = 0; i < nfds; i++)
		if (fds[i] < 0)
			return -EBADF;

	/* A copy so the iovec needs no cast away from const. */
	h = *hdr;
	total = UVH_MSG_HEADER_SIZE + h.size;
	if (nfds) {
		struct cmsghdr *c;

		memset(&ctl, 0, sizeof(ctl));
		c = (struct cmsghdr *)ctl.buf;
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
	}

	while (done < total) {
		struct msghdr mh = { 0 };
		struct iovec iov[2];
		int n = 0;
		ssize_t r;

		if (done < UVH_MSG_HEADER_SIZE) {
			iov[n].iov_base = (char *)&h + done;
			iov[n++].iov_len = UVH_MSG_HEADER_SIZE - done;
			if (h.size) {
				iov[n].iov_base = (void *)(uintptr_t)payload;
				iov[n++].iov_len = h.size;
			}
		} else {
			iov[n].iov_base = (char *)(uintptr_t)payload +
					  (done - UVH_MSG_HEADER_SIZE);
			iov[n++].iov_len = total - done;
		}
		mh.msg_iov = iov;
		mh.msg_iovlen = n;
		/* fds ride with the first header byte only (spec placement). */
		if (nfds && done == 0) {
			mh.msg_control = ctl.buf;
			mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		}

		/* never block in the kernel: a peer that stops reading is
		 * waited for stall_ms at most (below) */
		r = sendmsg(ep->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (r > 0) {
			done += (size_t)r;
			continue;
		}
		if (r == 0)
			return -EPIPE;	/* a stream never does this; don't spin */
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			int w = wait_for(ep->fd, POLLOUT, ep->stall_ms > 0 ? ep->stall_ms : -1);

			if (w < 0)
				return w;
			if (w == 0) {
				UVH_ERR("endpoint: the peer read nothing of a %s for %d ms (%zu of %zu bytes sent)",
					ep->name_of ? ep->name_of(h.request) : "message",
					ep->stall_ms, done, total);
				return -ETIMEDOUT;
			}
			continue;
		}
		if (errno == EPIPE || errno == ECONNRESET)
			return -EPIPE;
		return -errno;
	}
	return 0;
}

/* ---- receive ------------------------------------------------------------ */

/* Bytes the current read may deliver: the rest of the header, then the
 * rest of the payload. Never past the message. */
static uint32_t rx_want(const struct uvh_endpoint_rx *rx)
{
	if (rx->got < UVH_MSG_HEADER_SIZE)
		return UVH_MSG_HEADER_SIZE - rx->got;
	return UVH_MSG_HEADER_SIZE + rx->msg.hdr.size - rx->got;
}

void uvh_endpoint_rx_prepare(struct uvh_endpoint *ep, struct msghdr *mh)
{
	struct uvh_endpoint_rx *rx = &ep->rx;

	if (rx->got < UVH_MSG_HEADER_SIZE)
		rx->iov.iov_base = (char *)&rx->msg.hdr + rx->got;
	else
		rx->iov.iov_base = rx->msg.payload.raw +
				   (rx->got - UVH_MSG_HEADER_SIZE);
	rx->iov.iov_len = rx_want(rx);

	/* A stale cmsg from the previous read must never be parsed again
	 * (that would close fds twice) if a driver fails to update
	 * msg_controllen. */
	memset(&rx->cmsg.align, 0, sizeof(rx->cmsg.align));

	memset(mh, 0, sizeof(*mh));
	mh->msg_iov = &rx->iov;
	mh->msg_iovlen = 1;
	mh->msg_control = rx->cmsg.buf;
	mh->msg_controllen = sizeof(rx->cmsg.buf);
}

/*
 * Collect the SCM_RIGHTS fds of a finished read into @out (room for
 * RX_FDS_BOUND). The walk is bounds-checked by hand: the lengths come from
 * the kernel (or an io_uring CQE path) and are clamped to our buffer.
 */
static unsigned int rx_collect_fds(struct uvh_endpoint *ep, struct msghdr *mh,
				   int *out)
{
	size_t len = mh->msg_controllen, off = 0;
	const char *base = mh->msg_control;
	unsigned int n = 0;

	if (!base)
		return 0;
	if (base == ep->rx.cmsg.buf && len > sizeof(ep->rx.cmsg.buf))
		len = sizeof(ep->rx.cmsg.buf);
	else if (len > UVH_ENDPOINT_CMSG_SPACE)
		len = UVH_ENDPOINT_CMSG_SPACE;

	while (off + sizeof(struct cmsghdr) <= len) {
		struct cmsghdr c;
		size_t clen, cnt;

		memcpy(&c, base + off, sizeof(c));
		clen = c.cmsg_len;
		if (clen < CMSG_LEN(0) || clen > len - off)
			break;
		if (c.cmsg_level == SOL_SOCKET && c.cmsg_type == SCM_RIGHTS) {
			const char *data = base + off + CMSG_LEN(0);

			cnt = (clen - CMSG_LEN(0)) / sizeof(int);
			for (size_t i = 0; i < cnt && n < RX_FDS_BOUND; i++) {
				memcpy(&out[n++], data + i * sizeof(int), sizeof(int));
			}
		}
		off += CMSG_ALIGN(clen);
	}
	/* Consumed: make sure no later pass can see these fds again. */
	memset(&ep->rx.cmsg.align, 0, sizeof(ep->rx.cmsg.align));
	mh->msg_controllen = 0;
	return n;
}

/* Error exit of rx_complete: close what this read brought and what the
 * message held, start over. */
static int rx_fail(struct uvh_endpoint *ep, struct uvh_msg *msg, int *fds,
		   unsigned int nfds, int err)
{
	close_fds(fds, nfds);
	rx_reset(&ep->rx);
	msg_clear_fds(msg);
	return err;
}

static int rx_check_header(struct uvh_endpoint *ep)
{
	const struct uvh_msg_header *h = &ep->rx.msg.hdr;
	const char *name = req_name(ep, h->request);

	if ((h->flags & UVH_FLAG_VERSION_MASK) != UVH_FLAG_VERSION) {
		UVH_ERR("%s: unsupported protocol version %u (flags 0x%x)",
			name, h->flags & UVH_FLAG_VERSION_MASK, h->flags);
		return -EPROTONOSUPPORT;
	}
	if (h->flags & UVH_FLAG_RESERVED_MASK) {
		UVH_ERR("%s: reserved flag bits 0x%x set",
			name, h->flags & UVH_FLAG_RESERVED_MASK);
		return -EBADMSG;
	}
	if (h->size > UVH_MSG_MAX_PAYLOAD) {
		UVH_ERR("%s: payload size %u over the %u limit",
			name, h->size, UVH_MSG_MAX_PAYLOAD);
		return -EMSGSIZE;
	}
	return 0;
}

int uvh_endpoint_rx_complete(struct uvh_endpoint *ep, struct msghdr *mh,
			     int res, struct uvh_msg *msg)
{
	struct uvh_endpoint_rx *rx = &ep->rx;
	int fds[RX_FDS_BOUND];
	unsigned int nfds;
	uint32_t size;
	int err;

	if (res < 0) {
		/* Nothing was consumed: keep the partial message. */
		if (res == -EAGAIN || res == -EINTR) {
			msg_clear_fds(msg);
			return res;
		}
		/* A peer that closes with our data unread shows up as
		 * ECONNRESET rather than EOF: same meaning as res == 0. */
		if (res == -ECONNRESET && rx->got == 0) {
			UVH_DEBUG("peer reset the connection");
			return rx_fail(ep, msg, NULL, 0, -ECONNRESET);
		}
		if (res == -ECONNRESET) {
			UVH_ERR("%s: peer reset mid-message (%u bytes in)",
				rx_name(ep), rx->got);
			return rx_fail(ep, msg, NULL, 0, -ENODATA);
		}
		UVH_ERR("%s: receive failed: %s", rx_name(ep), strerror(-res));
		return rx_fail(ep, msg, NULL, 0, res);
	}

	nfds = rx_collect_fds(ep, mh, fds);

	if (mh->msg_flags & MSG_CTRUNC) {
		UVH_ERR("%s: control data truncated (more than %u fds)",
			rx_name(ep), UVH_ENDPOINT_CMSG_FDS);
		return rx_fail(ep, msg, fds, nfds, -ETOOMANYREFS);
	}
	if (res == 0) {
		if (rx->got == 0) {
			UVH_DEBUG("peer closed the connection");
			return rx_fail(ep, msg, fds, nfds, -ECONNRESET);
		}
		UVH_ERR("%s: peer closed mid-message (%u bytes in)",
			rx_name(ep), rx->got);
		return rx_fail(ep, msg, fds, nfds, -ENODATA);
	}
	if ((uint32_t)res > rx_want(rx)) {
		/* Only a broken driver can report more than was asked for. */
		UVH_ERR("%s: read of %d bytes, %u expected", rx_name(ep), res,
			rx_want(rx));
		return rx_fail(ep, msg, fds, nfds, -EINVAL);
	}
	if (nfds) {
		if (rx->got != 0) {
			UVH_ERR("%s: %u fds not on the first header byte",
				rx_name(ep), nfds);
			return rx_fail(ep, msg, fds, nfds, -EBADFD);
		}
		if (nfds > UVH_MSG_MAX_FDS) {
			UVH_ERR("%u fds over the %u limit", nfds, UVH_MSG_MAX_FDS);
			return rx_fail(ep, msg, fds, nfds, -ETOOMANYREFS);
		}
		memcpy(rx->msg.fds, fds, nfds * sizeof(int));
		rx->msg.nfds = nfds;
	}

	if (rx->got < UVH_MSG_HEADER_SIZE &&
	    rx->got + (uint32_t)res >= UVH_MSG_HEADER_SIZE) {
		rx->got += (uint32_t)res;
		err = rx_check_header(ep);
		if (err)
			return rx_fail(ep, msg, NULL, 0, err);
	} else {
		rx->got += (uint32_t)res;
	}

	if (rx->got < UVH_MSG_HEADER_SIZE ||
	    rx->got < UVH_MSG_HEADER_SIZE + rx->msg.hdr.size)
		return 0;

	/* Whole message: hand it over, fds included, and start afresh. */
	size = rx->msg.hdr.size;
	msg->hdr = rx->msg.hdr;
	memcpy(msg->payload.raw, rx->msg.payload.raw, size);
	/* Zero the tail so no stale bytes of an older message are read as
	 * fields of a short one. */
	memset(msg->payload.raw + size, 0, sizeof(msg->payload.raw) - size);
	for (unsigned int i = 0; i < UVH_MSG_MAX_FDS; i++)
		msg->fds[i] = i < rx->msg.nfds ? rx->msg.fds[i] : -1;
	msg->nfds = rx->msg.nfds;
	/* The fds now belong to @msg: forget them before resetting. */
	rx->msg.nfds = 0;
	rx_reset(rx);
	return 1;
}

int uvh_endpoint_recv(struct uvh_endpoint *ep, struct uvh_msg *msg)
{
	/* never block in the kernel: the waits below are bounded once a
	 * message has begun */
	int flags = MSG_CMSG_CLOEXEC | MSG_DONTWAIT;

	if (ep->fd < 0) {
		msg_clear_fds(msg);
		return -EBADF;
	}

	for (;;) {
		struct msghdr mh;
		ssize_t r;
		int ret;

		uvh_endpoint_rx_prepare(ep, &mh);
		r = recvmsg(ep->fd, &mh, flags);
		ret = uvh_endpoint_rx_complete(ep, &mh, r < 0 ? -errno : (int)r, msg);
		if (ret == 1)
			return 0;
		if (ret == 0 || ret == -EINTR)
			continue;
		if (ret == -EAGAIN) {
			if (ep->nonblocking)
				return -EAGAIN;
			/* Before the first byte: as long as it takes (an idle
			 * peer). Mid-message: stall_ms at most, or a peer that
			 * sends half a message holds this thread forever. */
			ret = wait_for(ep->fd, POLLIN,
				       ep->rx.got && ep->stall_ms > 0 ? ep->stall_ms : -1);
			if (ret == 0) {
				UVH_ERR("endpoint: the peer stalled %u bytes into a %s for %d ms",
					ep->rx.got, ep->rx.got < UVH_MSG_HEADER_SIZE ?
					"message header" : ep->name_of ?
					ep->name_of(ep->rx.msg.hdr.request) : "message",
					ep->stall_ms);
				ret = -ETIMEDOUT;
			}
			if (ret < 0) {
				rx_reset(&ep->rx);
				msg_clear_fds(msg);
				return ret;
			}
			continue;
		}
		return ret;
	}
}
