/* SPDX-License-Identifier: MIT */
/*
 * uvhost: a device host's control loop (uvh_devhost_serve, devhost.h):
 * take a front-end (accept, connect or a given fd), handle its requests
 * until it goes, tear the session down, take the next one. What every
 * vhost-user device daemon does, so that none has to write it again.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "listener.h"
#include "devhost.h"

#define DEF_POLL_MS	200

static const char *name(const struct uvh_devhost *v, const struct uvh_devhost_serve_opts *o)
{
	return o->name ? o->name : uvh_devhost_name(v);
}

static bool stopping(const struct uvh_devhost_serve_opts *o)
{
	return o->stop && __atomic_load_n(o->stop, __ATOMIC_RELAXED);
}

/* The front-end has closed its end: the session is over, whatever it left unread. */
static bool session_hung_up(const struct uvh_devhost *v)
{
	struct pollfd pfd = { .fd = uvh_devhost_fd(v), .events = POLLRDHUP };

	return poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/*
 * Wait up to @ms for the front-end's next request; meanwhile refuse any
 * other connection on the listener at once (the spec: one front-end per
 * socket), rather than leaving it hanging in the backlog. A newcomer is
 * looked at only after it is accepted: a front-end that closed and at
 * once connected again did so in that order, so its old session is seen
 * over then, and the newcomer becomes @next instead of being refused.
 */
static int serve_one(struct uvh_devhost *v, const struct uvh_devhost_serve_opts *o, int ms,
		     int *next)
{
	struct pollfd pfd[2] = {
		{ .fd = uvh_devhost_fd(v), .events = POLLIN },
		{ .fd = o->listener ? uvh_listener_fd(o->listener) : -1, .events = POLLIN },
	};
	int ret, fd;

	ret = poll(pfd, o->listener ? 2 : 1, ms);
	if (ret < 0)
		return errno == EINTR ? 0 : -errno;
	/* The session's own traffic first */
	if (pfd[0].revents)
		return uvh_devhost_handle(v, 0);
	if (!o->listener || !(pfd[1].revents & POLLIN))
		return 0;
	fd = uvh_listener_accept(o->listener, 0);	/* the allow-list applies */
	if (fd < 0)
		return 0;
	if (session_hung_up(v)) {
		*next = fd;
		return -ECONNRESET;
	}
	uvh_listener_refuse(o->listener, fd, "port busy: it serves one front-end at a time");
	return 0;
}

/* Serve connection @fd until it ends or a stop, then the one that came
 * as it ended, if any; every session is over on return. */
static void serve_connection(struct uvh_devhost *v, const struct uvh_devhost_serve_opts *o,
			     int fd, int ms)
{
	int ret, next;

	while (fd >= 0) {
		next = -1;
		ret = uvh_devhost_connect(v, fd);
		if (ret) {
			UVH_ERR("%s: cannot serve the connection: %s", name(v, o), strerror(-ret));
			return;
		}
		while (!stopping(o)) {
			ret = serve_one(v, o, ms, &next);
			if (ret < 0)
				break;
		}
		uvh_devhost_disconnect(v);
		if (!stopping(o))
			UVH_INFO("%s: front-end gone (%s)%s", name(v, o), strerror(-ret),
				 !o->listener && !o->client ? "" : "; ready for the next one");
		else if (next >= 0)
			close(next);
		fd = stopping(o) ? -1 : next;
		if (fd >= 0)
			UVH_INFO("%s: front-end on %s", name(v, o), o->path ? o->path : "socket");
	}
}

/* Client mode: the front-end's server must run as an allowed uid. */
static bool peer_allowed(struct uvh_devhost *v, const struct uvh_devhost_serve_opts *o, int fd)
{
	pid_t pid = 0;
	uid_t uid = 0;
	int ret;

	if (!o->n_allow_uids)
		return true;
	ret = uvh_peer_cred(fd, &pid, &uid, NULL);
	if (!ret && uvh_uid_allowed(uid, o->allow_uids, o->n_allow_uids))
		return true;
	UVH_WARN("%s: refused the front-end on %s (pid %ld, uid %ld): %s", name(v, o),
		 o->path, (long)pid, ret ? -1L : (long)uid,
		 ret ? "no peer credentials" : "uid not in the allow-list");
	return false;
}

int uvh_devhost_serve(struct uvh_devhost *v, const struct uvh_devhost_serve_opts *o)
{
	int ms = o && o->poll_ms ? (int)o->poll_ms : DEF_POLL_MS;
	struct uvh_connect_opts co = {
		.timeout_ms = -1, .initial_delay_ms = 50, .max_delay_ms = 2000,
		.stop = o ? (volatile int *)o->stop : NULL,
	};
	int fd;

	if (!v || !o || (o->fd < 0 && !o->listener && !(o->client && o->path)))
		return -EINVAL;
	if (!o->listener && !o->client) {
		serve_connection(v, o, o->fd, ms);
		return 0;
	}
	while (!stopping(o)) {
		if (o->client) {
			fd = uvh_connect(o->path, &co);
			if (fd == -ECANCELED)
				break;
			if (fd >= 0 && !peer_allowed(v, o, fd)) {
				close(fd);
				usleep((useconds_t)ms * 1000);
				continue;
			}
		} else {
			fd = uvh_listener_accept(o->listener, ms);
			if (fd == -ETIMEDOUT)
				continue;
		}
		if (fd < 0) {
			UVH_ERR("%s: %s %s: %s", name(v, o),
				o->client ? "connect to" : "accept on", o->path ? o->path : "socket",
				strerror(-fd));
			usleep((useconds_t)ms * 1000);
			continue;
		}
		UVH_INFO("%s: front-end on %s", name(v, o), o->path ? o->path : "socket");
		serve_connection(v, o, fd, ms);
	}
	return 0;
}
