/* SPDX-License-Identifier: MIT */
/*
 * uvhost: one vhost-user endpoint, an AF_UNIX stream socket carrying whole
 * messages with their fds (SCM_RIGHTS).
 *
 * Receiving is a small state machine so that it can be driven either by
 * plain recvmsg() (uvh_endpoint_recv) or by io_uring (IORING_OP_RECVMSG):
 * uvh_endpoint_rx_prepare() fills a msghdr for the next read (the header
 * first, then exactly the payload, never past the message), the caller runs
 * it however it likes and hands the result to uvh_endpoint_rx_complete().
 * fds are accepted only on the read that carries the first byte of the
 * header (the spec's placement rule); fds on any other read are closed and
 * the message is refused.
 *
 * Receive errors (each logged with the request name when known):
 *   -ECONNRESET       the peer closed the socket between two messages
 *   -ENODATA          the peer closed it in the middle of a message
 *   -ETOOMANYREFS     more than UVH_MSG_MAX_FDS fds (all of them closed)
 *   -EMSGSIZE         payload size over UVH_MSG_MAX_PAYLOAD
 *   -EPROTONOSUPPORT  version bits are not 1
 *   -EBADMSG          a reserved flag bit is set
 *   -EBADFD           fds arrived on a read other than the header's first
 *   -EAGAIN           non-blocking endpoint, message not complete yet
 * After any error but -EAGAIN the connection must be closed: the stream is
 * no longer at a message boundary.
 */
#ifndef UVHOST_ENDPOINT_H
#define UVHOST_ENDPOINT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "message.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Room for the control message of one read: more than UVH_MSG_MAX_FDS so
 * that an excess can be seen (and closed) rather than silently truncated. */
#define UVH_ENDPOINT_CMSG_FDS	32u
/* CMSG_SPACE() is not an integer constant expression for clang; this is the
 * same value spelled so (the header is 8-byte aligned, 32 ints are too). */
#define UVH_ENDPOINT_CMSG_SPACE	(sizeof(struct cmsghdr) + UVH_ENDPOINT_CMSG_FDS * sizeof(int))

/** Receive-side state: the message being assembled. */
struct uvh_endpoint_rx {
	struct uvh_msg msg;		/**< header, payload and fds so far */
	uint32_t got;			/**< bytes of header + payload received */
	struct iovec iov;		/**< for rx_prepare's msghdr */
	union {
		/* Not struct cmsghdr: its flexible array member would make
		 * every struct embedding an endpoint variably sized. */
		uint64_t align;
		char buf[UVH_ENDPOINT_CMSG_SPACE];
	} cmsg;
};

/** Default of struct uvh_endpoint.stall_ms: a peer that stops for this
 *  long in the middle of a message is taken as gone. */
#define UVH_ENDPOINT_STALL_MS	5000

/** One endpoint. Plain struct so it can be embedded; use the functions. */
struct uvh_endpoint {
	int fd;			/**< the socket (owned) */
	bool nonblocking;	/**< recv returns -EAGAIN instead of waiting */
	const char *(*name_of)(uint32_t request);	/**< for log lines */
	/** Blocking endpoints: once a message has begun (a received part, or
	 *  a send the peer is not reading), how long to wait for the peer's
	 *  next move before giving up with -ETIMEDOUT (the stream is then out
	 *  of step: close it). 0 = forever. uvh_endpoint_init() sets
	 *  UVH_ENDPOINT_STALL_MS. The wait for a message's first byte is the
	 *  caller's (uvh_endpoint_wait): an idle peer is a normal one. */
	int stall_ms;
	struct uvh_endpoint_rx rx;
};

/**
 * Take ownership of a connected AF_UNIX stream socket.
 * @name_of names requests in log lines (uvh_frontend_request_name on the
 * back-end side, uvh_backend_request_name on the front-end's channel).
 */
void uvh_endpoint_init(struct uvh_endpoint *ep, int fd,
		       const char *(*name_of)(uint32_t request));
/** Close the socket and any fds of a half-received message. */
void uvh_endpoint_close(struct uvh_endpoint *ep);

/**
 * Send one message: header, payload and fds. fds go with the first byte;
 * partial writes, EINTR and EAGAIN (waits with poll) are handled.
 * The caller keeps its fds. Returns 0 or a negative errno (-EPIPE when the
 * peer is gone).
 */
int uvh_endpoint_send(struct uvh_endpoint *ep, const struct uvh_msg_header *hdr,
		      const void *payload, const int *fds, unsigned int nfds);

/**
 * Receive one whole message into @msg (which then owns the fds).
 * Blocking endpoints wait (EINTR retried); non-blocking ones return -EAGAIN
 * and keep what they have for the next call. Returns 0 or an error above.
 */
int uvh_endpoint_recv(struct uvh_endpoint *ep, struct uvh_msg *msg);

/**
 * Wait up to @timeout_ms (-1 forever) for the socket to be readable.
 * Returns 1 readable, 0 timeout, negative errno.
 */
int uvh_endpoint_wait(struct uvh_endpoint *ep, int timeout_ms);

/**
 * Fill @mh for the next read of the message being assembled. The msghdr
 * points into @ep, so @ep must stay put until rx_complete.
 */
void uvh_endpoint_rx_prepare(struct uvh_endpoint *ep, struct msghdr *mh);

/**
 * Account for a finished read of @mh (as from recvmsg(), or an io_uring
 * CQE's res): @res bytes or a negative errno. Returns 1 and fills @msg
 * when a whole message is in, 0 when more reads are needed (prepare
 * again), or a negative error above (-EAGAIN / -EINTR passed through).
 */
int uvh_endpoint_rx_complete(struct uvh_endpoint *ep, struct msghdr *mh,
			     int res, struct uvh_msg *msg);

#ifdef __cplusplus
}
#endif

#endif
