/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the front-end surviving a back-end restart: recording the
 * session, noticing that the connection is gone, connecting again and
 * replaying the journal (frontend_session.c) on the new connection.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"
#include "frontend_internal.h"

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
		deadline = uvh_now_ms() + co.timeout_ms;
	for (;;) {
		fe_disconnect(fe);
		if (deadline) {
			int64_t left = deadline - uvh_now_ms();

			co.timeout_ms = left > 0 ? (int)left : 0;
		}
		r = fe_connect_again(fe, &co);
		if (!r)
			r = fe_session_replay(fe->sess, fe, opts);
		if (!r)
			break;
		if (!transport_gone(r) || (deadline && uvh_now_ms() >= deadline) ||
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

