/* SPDX-License-Identifier: MIT */
/*
 * The vhost-user wire (vhost-user.rst "Message Specification"): a 12-byte header
 * {request, flags, size}, the payload, fds as SCM_RIGHTS on the sendmsg that carries the
 * header. There are no request ids: replies come back in request order, so the pending
 * queue here is all the matching there is.
 */
#include "conform.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char *req_name(uint32_t r)
{
	static const char *const n[] = {
		[VU_GET_FEATURES] = "GET_FEATURES", [VU_SET_FEATURES] = "SET_FEATURES",
		[VU_SET_OWNER] = "SET_OWNER", [VU_SET_MEM_TABLE] = "SET_MEM_TABLE",
		[VU_SET_VRING_NUM] = "SET_VRING_NUM", [VU_SET_VRING_ADDR] = "SET_VRING_ADDR",
		[VU_SET_VRING_BASE] = "SET_VRING_BASE", [VU_GET_VRING_BASE] = "GET_VRING_BASE",
		[VU_SET_VRING_KICK] = "SET_VRING_KICK", [VU_SET_VRING_CALL] = "SET_VRING_CALL",
		[VU_GET_PROTOCOL_FEATURES] = "GET_PROTOCOL_FEATURES",
		[VU_SET_PROTOCOL_FEATURES] = "SET_PROTOCOL_FEATURES",
		[VU_GET_QUEUE_NUM] = "GET_QUEUE_NUM", [VU_SET_VRING_ENABLE] = "SET_VRING_ENABLE",
	};
	return r < sizeof(n) / sizeof(n[0]) && n[r] ? n[r] : "?";
}

static bool has_reply_body(uint32_t r)
{
	return r == VU_GET_FEATURES || r == VU_GET_PROTOCOL_FEATURES || r == VU_GET_QUEUE_NUM ||
	       r == VU_GET_VRING_BASE;
}

void vu_connect(struct vu *v, const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	uint64_t deadline = now_ns() + 5000000000ull;

	memset(v, 0, sizeof(*v));
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	v->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (v->sock < 0)
		fail("socket: %m");
	/* A daemon just started may not listen yet. */
	while (connect(v->sock, (struct sockaddr *)&a, sizeof(a)) < 0) {
		if ((errno != ECONNREFUSED && errno != ENOENT && errno != EAGAIN) ||
		    now_ns() > deadline)
			fail("connect %s: %m", path);
		nanosleep(&(struct timespec){0, 1000000}, NULL);
	}
}

void vu_close(struct vu *v)
{
	if (v->sock >= 0)
		close(v->sock);
	v->sock = -1;
}

/* The back-end hung up. Before any reply, on a reused daemon, that is the documented
 * "one front-end per port": it has not yet seen the previous session go. */
static noreturn void peer_closed(struct vu *v, const char *when)
{
	char c;
	if (v->replies == 0 && recv(v->sock, &c, 1, MSG_PEEK | MSG_DONTWAIT) <= 0)
		busy_retry();
	fail("back-end closed the connection %s (after %u replies, %u outstanding)", when,
	     v->replies, vu_outstanding(v));
}

void vu_send(struct vu *v, uint32_t req, bool need_reply, const void *payload, uint32_t size,
	     const int *fds, unsigned nfds, uint32_t ring, uint64_t *out)
{
	uint8_t buf[VU_HDR_SIZE + 512];
	uint32_t hdr[3] = {req, VU_VERSION | (need_reply ? VU_NEED_REPLY : 0), size};
	union {
		char b[CMSG_SPACE(sizeof(int) * VU_MAX_REGIONS)];
		struct cmsghdr align;
	} c;
	struct iovec iov = {buf, VU_HDR_SIZE + size};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

	memcpy(buf, hdr, VU_HDR_SIZE);
	if (size)
		memcpy(buf + VU_HDR_SIZE, payload, size);
	if (nfds) {
		/* The fds travel with the first byte of the header. */
		memset(&c, 0, sizeof(c));
		mh.msg_control = c.b;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	size_t done = 0;
	while (done < iov.iov_len) {
		ssize_t n = sendmsg(v->sock, &mh, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
			peer_closed(v, "while we sent");
		if (n < 0)
			fail("send %s: %m", req_name(req));
		done += (size_t)n;
		iov.iov_base = buf + done;
		iov.iov_len -= (size_t)n;
		mh.msg_control = NULL;
		mh.msg_controllen = 0;
	}
	if (has_reply_body(req) || need_reply) {
		if (vu_outstanding(v) == sizeof(v->pend) / sizeof(v->pend[0]))
			fail("internal: too many outstanding replies");
		v->pend[v->tail++ % 256] = (struct vu_pending){req, ring, out};
	}
}

/* Read exactly n bytes within the deadline; false on EOF. */
static bool read_full(struct vu *v, void *p, size_t n, uint64_t deadline)
{
	size_t got = 0;
	while (got < n) {
		int64_t left = (int64_t)(deadline - now_ns()) / 1000000;
		struct pollfd pfd = {v->sock, POLLIN, 0};
		if (left < 0 || poll(&pfd, 1, (int)left) == 0)
			fail("reply truncated: %zu of %zu bytes within the time limit", got, n);
		ssize_t r = recv(v->sock, (char *)p + got, n - got, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0 || (r < 0 && errno == ECONNRESET))
			return false;
		if (r < 0)
			fail("recv: %m");
		got += (size_t)r;
	}
	return true;
}

/* Read one reply (waiting up to timeout_ms for it to start) and check it against the
 * oldest request that solicited one. */
bool vu_read_reply(struct vu *v, int timeout_ms)
{
	struct pollfd pfd = {v->sock, POLLIN, 0};
	uint32_t hdr[3];
	uint64_t val;

	if (poll(&pfd, 1, timeout_ms) <= 0)
		return false;
	if (!read_full(v, hdr, sizeof(hdr), now_ns() + 5000000000ull))
		peer_closed(v, "while we waited for a reply");
	if (!vu_outstanding(v))
		fail("unsolicited reply: request %u flags %#x size %u", hdr[0], hdr[1], hdr[2]);
	struct vu_pending p = v->pend[v->head++ % 256];
	const char *name = req_name(p.req);
	if (hdr[0] != p.req)
		fail("reply #%u is for request %u (%s); expected %s (ring %u)", v->replies, hdr[0],
		     req_name(hdr[0]), name, p.ring);
	if (hdr[1] != (VU_VERSION | VU_REPLY))
		fail("reply to %s has flags %#x, expected %#x", name, hdr[1], VU_VERSION | VU_REPLY);
	if (hdr[2] != 8)
		fail("reply to %s has size %u, expected 8", name, hdr[2]);
	if (!read_full(v, &val, 8, now_ns() + 5000000000ull))
		peer_closed(v, "in the middle of a reply");
	v->replies++;
	if (p.req == VU_GET_VRING_BASE && (uint32_t)val != p.ring)
		fail("GET_VRING_BASE reply is for ring %u, asked for ring %u", (uint32_t)val, p.ring);
	if (p.req == VU_GET_VRING_BASE)
		val >>= 32;
	else if (!has_reply_body(p.req) && val != 0)
		fail("back-end NACKed %s (ring %u) with %llu", name, p.ring, (unsigned long long)val);
	if (p.out)
		*p.out = val;
	return true;
}

void vu_read_all(struct vu *v)
{
	while (vu_outstanding(v)) {
		struct vu_pending p = v->pend[v->head % 256];
		if (!vu_read_reply(v, 5000))
			fail("no reply to %s (ring %u) within 5 s", req_name(p.req), p.ring);
	}
}

void vu_check_hangup(struct vu *v)
{
	struct pollfd pfd = {v->sock, POLLRDHUP, 0};
	if (poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)))
		peer_closed(v, "during traffic");
}
