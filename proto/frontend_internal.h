/* SPDX-License-Identifier: MIT */
/*
 * uvhost: what the front-end's files share (frontend.c, frontend_calls.c,
 * frontend_reconnect.c): struct uvh_frontend, its locking and reply
 * helpers, and the generic request path. Not installed.
 */
#ifndef UVHOST_FRONTEND_INTERNAL_H
#define UVHOST_FRONTEND_INTERNAL_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "endpoint.h"
#include "frontend.h"
#include "frontend_session.h"
#include "log.h"

/* Internal to the library: kept out of its dynamic symbol table. */
#define UVH__FE_INTERNAL	__attribute__((visibility("hidden")))

#define PF_BIT(name)		(1ull << UVH_PROTOCOL_F_##name)

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

static inline void chan_close(struct uvh_frontend *fe)
{
	if (fe->chan) {
		uvh_frontend_req_free(fe->chan);
		fe->chan = NULL;
	}
}

/* ---- locking and state ---------------------------------------------------- */

static inline int fe_lock(struct uvh_frontend *fe)
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

static inline void fe_unlock(struct uvh_frontend *fe)
{
	pthread_mutex_unlock(&fe->lock);
}

static inline int fe_break(struct uvh_frontend *fe, int err)
{
	fe->broken = true;
	return err;
}

/* A reply that does not follow the spec: drop its fds, give up on the
 * connection (the stream may no longer be in step). */
static inline int fe_bad_reply(struct uvh_frontend *fe, uint32_t request, const char *why)
{
	UVH_ERR("front-end: %s reply: %s", uvh_frontend_request_name(request), why);
	uvh_msg_close_fds(&fe->reply);
	return fe_break(fe, -EPROTO);
}

/* The one fd of the reply (caller owns it), or -1. */
static inline int fe_take_fd(struct uvh_frontend *fe)
{
	int fd = -1;

	if (fe->reply.nfds == 1) {
		fd = fe->reply.fds[0];
		fe->reply.nfds = 0;
	}
	uvh_msg_close_fds(&fe->reply);
	return fd;
}

/*
 * Send @request with @size payload bytes and @nfds fds (the caller keeps
 * them), then wait for what the table says comes back. Returns 0 with a
 * body reply left in fe->reply (its fds owned there: take or close them),
 * -EIO for a NACK, -EOPNOTSUPP when the request's gate is not negotiated,
 * or a transport/protocol error (connection then broken). Called locked.
 */
UVH__FE_INTERNAL int uvh__fe_request(struct uvh_frontend *fe, uint32_t request,
				     const void *payload, uint32_t size, const int *fds,
				     unsigned int nfds);

#endif
