/* SPDX-License-Identifier: MIT */
/*
 * fuzz_message: the bytes and fds a back-end receives, through the
 * endpoint's receive state machine (proto/endpoint.c) and the request
 * tables' checks (proto/message.c), as uvh_backend_req applies them.
 *
 * Input:
 *   u8  mode        bit 0: non-blocking endpoint; bit 1: read through
 *                   rx_prepare/rx_complete one recvmsg at a time (the
 *                   io_uring path) instead of uvh_endpoint_recv
 *   u64 protocol features (for the fd rules)
 *   then chunks: u8 ctl (bits 0-4: fds to attach, up to 20), u16 len,
 *   len bytes. Each chunk is one sendmsg, its fds riding on its first byte.
 *
 * Oracles: every message the endpoint hands out keeps its contract
 * (version 1, no reserved flag, payload <= 4096, <= 8 fds, each fd open);
 * the table checks never read past the payload (ASan); no fd survives.
 */
#include <assert.h>
#include <poll.h>

#include "endpoint.h"
#include "fuzz_common.h"
#include "message.h"

#define FZ_MAX_INPUT	(64u << 10)	/* stays below the socket buffer */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_quiet_logs();
	return 0;
}

static void check_msg(const struct uvh_msg *msg, uint64_t pf)
{
	const struct uvh_request_info *info;
	unsigned int lo, hi;

	if ((msg->hdr.flags & UVH_FLAG_VERSION_MASK) != UVH_FLAG_VERSION ||
	    (msg->hdr.flags & UVH_FLAG_RESERVED_MASK) || msg->hdr.size > UVH_MSG_MAX_PAYLOAD ||
	    msg->nfds > UVH_MSG_MAX_FDS)
		abort();
	for (unsigned int i = 0; i < msg->nfds; i++)
		if (fcntl(msg->fds[i], F_GETFD) < 0)
			abort();

	/* As the back-end reads it (a request), and as a front-end would
	 * read the same bytes (a reply, or a back-end request). */
	(void)uvh_frontend_request_name(msg->hdr.request);
	(void)uvh_backend_request_name(msg->hdr.request);
	info = uvh_frontend_request_info(msg->hdr.request);
	if (info) {
		if (uvh_msg_check_size(info, msg, false) == 0) {
			uvh_msg_expected_fds(info, msg, pf, &lo, &hi);
			if (lo > hi || hi > UVH_MSG_MAX_FDS)
				abort();
		}
		(void)uvh_msg_check_size(info, msg, true);
	}
	info = uvh_backend_request_info(msg->hdr.request);
	if (info && uvh_msg_check_size(info, msg, false) == 0) {
		uvh_msg_expected_fds(info, msg, pf, &lo, &hi);
		if (lo > hi || hi > UVH_MSG_MAX_FDS)
			abort();
	}
}

/* One message through rx_prepare / recvmsg / rx_complete. */
static int recv_stepwise(struct uvh_endpoint *ep, struct uvh_msg *msg)
{
	for (;;) {
		struct msghdr mh;
		ssize_t r;
		int ret;

		uvh_endpoint_rx_prepare(ep, &mh);
		r = recvmsg(ep->fd, &mh, MSG_CMSG_CLOEXEC | (ep->nonblocking ? MSG_DONTWAIT : 0));
		ret = uvh_endpoint_rx_complete(ep, &mh, r < 0 ? -errno : (int)r, msg);
		if (ret != 0)
			return ret > 0 ? 0 : ret;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz in = { data, size > FZ_MAX_INPUT ? FZ_MAX_INPUT : size };
	static struct uvh_msg msg;
	struct uvh_endpoint ep;
	int fds_before = t_fds_open_count();
	uint8_t mode = fz_u8(&in);
	uint64_t pf = fz_u64(&in);
	int sv[2];
	int r;

	fz_socketpair(sv);
	uvh_endpoint_init(&ep, sv[1], uvh_frontend_request_name);
	if (mode & 1) {
		ep.nonblocking = true;
		fcntl(sv[1], F_SETFL, fcntl(sv[1], F_GETFL) | O_NONBLOCK);
	}

	while (!fz_empty(&in)) {
		uint8_t ctl = fz_u8(&in);
		uint16_t len = fz_u16(&in);
		unsigned int nfds = ctl & 0x1f;
		int fds[20];
		bool ok;

		if (len > in.n)
			len = (uint16_t)in.n;
		if (nfds > 20)
			nfds = 20;
		for (unsigned int i = 0; i < nfds; i++)
			fds[i] = fz_eventfd();
		ok = fz_send(sv[0], in.p, len, fds, nfds);
		for (unsigned int i = 0; i < nfds; i++)
			close(fds[i]);
		in.p += len;
		in.n -= len;
		if (!ok)
			break;
	}
	/* End of stream: a blocking read then sees the peer gone. */
	shutdown(sv[0], SHUT_WR);

	for (;;) {
		memset(&msg.hdr, 0, sizeof(msg.hdr));
		msg.nfds = 0;
		r = (mode & 2) ? recv_stepwise(&ep, &msg) : uvh_endpoint_recv(&ep, &msg);
		if (r == -EAGAIN) {
			/* Non-blocking and incomplete: everything was written,
			 * so only EOF can come next; wait for it. */
			struct pollfd p = { .fd = ep.fd, .events = POLLIN };

			if (poll(&p, 1, 1000) <= 0)
				abort();
			continue;
		}
		if (r < 0)
			break;
		check_msg(&msg, pf);
		uvh_msg_close_fds(&msg);
	}
	switch (r) {
	case -ECONNRESET: case -ENODATA: case -ETOOMANYREFS: case -EMSGSIZE:
	case -EPROTONOSUPPORT: case -EBADMSG: case -EBADFD:
		break;
	default:
		fprintf(stderr, "fuzz_message: unexpected receive error %d\n", r);
		abort();
	}
	uvh_endpoint_close(&ep);
	close(sv[0]);
	fz_check_fds(fds_before, "fuzz_message");
	return 0;
}
