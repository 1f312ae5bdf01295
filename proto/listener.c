/* SPDX-License-Identifier: MIT */
/*
 * uvhost: listening on and connecting to vhost-user socket paths.
 *
 * The server side binds, sets the file mode and owner, and only then calls
 * listen(): until listen() every connect() is refused, so no peer can get
 * in through the short window where the file still has the umask's mode.
 *
 * The file mode is the first gate (who may connect at all); the uid
 * allow-list is the second, checked with SO_PEERCRED on every accepted
 * connection, so a peer let in by a too wide mode still gets nothing.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "util.h"
#include "listener.h"
#include "log.h"

#define DEFAULT_MODE		0600
#define DEFAULT_BACKLOG		16
#define DEFAULT_DELAY_MS	10
#define DEFAULT_MAX_DELAY_MS	1000
/* Back-off sleeps are cut into slices so that *stop is seen promptly. */
#define STOP_POLL_MS		20

struct uvh_listener {
	int fd;
	unsigned int n_uids;
	uid_t uids[UVH_LISTENER_MAX_UIDS];
	unsigned long refused;
	/* The inode we bound, so close() never unlinks a successor's socket. */
	dev_t dev;
	ino_t ino;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

static int make_addr(const char *path, struct sockaddr_un *sa)
{
	size_t len;

	if (!path || !*path)
		return -EINVAL;
	len = strlen(path);
	if (len >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path, path, len + 1);
	return 0;
}

/*
 * Is something accepting on the socket file at @sa? 1 live, 0 stale (or
 * gone), negative errno when it cannot be told.
 */
static int socket_is_live(const struct sockaddr_un *sa)
{
	int fd, ret;

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	ret = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
	if (ret == 0)
		ret = 1;
	else if (errno == EAGAIN || errno == EINPROGRESS)
		ret = 1;	/* listening, backlog full: still live */
	else if (errno == ECONNREFUSED || errno == ENOENT)
		ret = 0;
	else
		ret = -errno;
	close(fd);
	return ret;
}

/* bind(), replacing a stale socket file once. */
static int bind_path(int fd, const struct sockaddr_un *sa)
{
	struct stat st;
	int live;

	for (int tries = 0; tries < 2; tries++) {
		if (!bind(fd, (const struct sockaddr *)sa, sizeof(*sa)))
			return 0;
		if (errno != EADDRINUSE)
			return -errno;
		if (lstat(sa->sun_path, &st)) {
			if (errno == ENOENT)
				continue;	/* removed meanwhile */
			return -errno;
		}
		if (!S_ISSOCK(st.st_mode)) {
			UVH_ERR("listener: %s exists and is not a socket", sa->sun_path);
			return -EEXIST;
		}
		live = socket_is_live(sa);
		if (live < 0)
			return live;
		if (live) {
			UVH_ERR("listener: %s is in use by a live server", sa->sun_path);
			return -EADDRINUSE;
		}
		UVH_INFO("listener: replacing stale socket %s", sa->sun_path);
		if (unlink(sa->sun_path) && errno != ENOENT)
			return -errno;
	}
	return -EADDRINUSE;
}

int uvh_listener_open(const char *path, const struct uvh_listener_opts *opts,
		      struct uvh_listener **out)
{
	static const struct uvh_listener_opts defaults;
	struct uvh_listener *l;
	struct sockaddr_un sa;
	struct stat st;
	mode_t mode;
	int ret, backlog;

	if (!out)
		return -EINVAL;
	*out = NULL;
	ret = make_addr(path, &sa);
	if (ret)
		return ret;
	if (!opts)
		opts = &defaults;
	if (opts->mode & ~(mode_t)0777)
		return -EINVAL;
	if (opts->n_allow_uids > UVH_LISTENER_MAX_UIDS ||
	    (opts->n_allow_uids && !opts->allow_uids))
		return -EINVAL;
	mode = opts->mode ? opts->mode : DEFAULT_MODE;
	backlog = opts->backlog > 0 ? opts->backlog : DEFAULT_BACKLOG;

	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	memcpy(l->path, sa.sun_path, sizeof(l->path));
	l->n_uids = opts->n_allow_uids;
	if (l->n_uids)
		memcpy(l->uids, opts->allow_uids, l->n_uids * sizeof(uid_t));
	l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (l->fd < 0) {
		ret = -errno;
		free(l);
		return ret;
	}
	ret = bind_path(l->fd, &sa);
	if (ret)
		goto err_close;
	/* From here on the file is ours: remove it on any error. */
	if (chmod(path, mode) ||
	    (opts->set_owner && chown(path, opts->owner, opts->group)) ||
	    lstat(path, &st)) {
		ret = -errno;
		UVH_ERR("listener: cannot set up %s: %s", path, strerror(-ret));
		goto err_unlink;
	}
	l->dev = st.st_dev;
	l->ino = st.st_ino;
	if (listen(l->fd, backlog)) {
		ret = -errno;
		goto err_unlink;
	}
	*out = l;
	return 0;

err_unlink:
	unlink(path);
err_close:
	close(l->fd);
	free(l);
	return ret;
}

void uvh_listener_close(struct uvh_listener *l)
{
	struct stat st;

	if (!l)
		return;
	if (!lstat(l->path, &st) && st.st_dev == l->dev && st.st_ino == l->ino)
		unlink(l->path);
	close(l->fd);
	free(l);
}

int uvh_listener_fd(const struct uvh_listener *l)
{
	return l ? l->fd : -EINVAL;
}

const char *uvh_listener_path(const struct uvh_listener *l)
{
	return l ? l->path : NULL;
}

int uvh_peer_cred(int fd, pid_t *pid, uid_t *uid, gid_t *gid)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len))
		return -errno;
	if (len != sizeof(cred))
		return -EPROTO;
	if (pid)
		*pid = cred.pid;
	if (uid)
		*uid = cred.uid;
	if (gid)
		*gid = cred.gid;
	return 0;
}

bool uvh_uid_allowed(uid_t uid, const uid_t *uids, unsigned int n)
{
	if (!n)
		return true;
	for (unsigned int i = 0; i < n; i++)
		if (uids[i] == uid)
			return true;
	return false;
}

/* Close an accepted connection we will not serve, saying who and why. */
void uvh_listener_refuse(struct uvh_listener *l, int fd, const char *reason)
{
	pid_t pid = 0;
	uid_t uid = (uid_t)-1;

	uvh_peer_cred(fd, &pid, &uid, NULL);
	UVH_WARN("listener %s: refused a connection (pid %ld, uid %ld): %s", l->path,
		 (long)pid, uid == (uid_t)-1 ? -1L : (long)uid, reason);
	close(fd);
	l->refused++;
}

/*
 * The allow-list check of a freshly accepted @fd: the fd back when the
 * peer may stay, -EACCES when it was refused (and closed).
 */
static int admit(struct uvh_listener *l, int fd)
{
	uid_t uid;
	int ret;

	if (!l->n_uids)
		return fd;
	ret = uvh_peer_cred(fd, NULL, &uid, NULL);
	if (ret) {
		uvh_listener_refuse(l, fd, "no peer credentials");
		return -EACCES;
	}
	if (!uvh_uid_allowed(uid, l->uids, l->n_uids)) {
		uvh_listener_refuse(l, fd, "uid not in the allow-list");
		return -EACCES;
	}
	return fd;
}

int uvh_listener_accept(struct uvh_listener *l, int timeout_ms)
{
	struct pollfd pfd;
	int64_t deadline = 0;
	int wait_ms = timeout_ms, fd, ret;

	if (!l)
		return -EINVAL;
	if (timeout_ms > 0)
		deadline = uvh_now_ms() + timeout_ms;
	for (;;) {
		pfd.fd = l->fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		ret = poll(&pfd, 1, wait_ms);
		if (ret < 0 && errno != EINTR)
			return -errno;
		if (ret > 0) {
			/* No SOCK_NONBLOCK: the connection fd is blocking. */
			fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0) {
				fd = admit(l, fd);
				if (fd >= 0)
					return fd;
				/* refused: wait for the next one */
			} else if (errno != EAGAIN && errno != EINTR &&
				   errno != ECONNABORTED) {
				/* Someone else took it, or it was aborted:
				 * wait again; anything else is an error. */
				return -errno;
			}
		}
		if (timeout_ms < 0)
			continue;
		if (timeout_ms == 0)
			return -ETIMEDOUT;
		wait_ms = (int)(deadline - uvh_now_ms());
		if (wait_ms <= 0)
			return -ETIMEDOUT;
	}
}

int uvh_listener_refuse_pending(struct uvh_listener *l, const char *reason)
{
	int n = 0, fd;

	if (!l)
		return -EINVAL;
	for (;;) {
		/* The listening socket is non-blocking: EAGAIN = none left. */
		fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return n;
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return -errno;
		}
		uvh_listener_refuse(l, fd, reason ? reason : "busy");
		n++;
	}
}

unsigned long uvh_listener_refused(const struct uvh_listener *l)
{
	return l ? l->refused : 0;
}

/* *stop is set by another thread or a signal handler: an atomic load. */
static bool stopped(volatile int *stop)
{
	return stop && __atomic_load_n(stop, __ATOMIC_RELAXED);
}

/* Sleep @ms, waking every STOP_POLL_MS to look at *stop. */
static int backoff_sleep(int ms, volatile int *stop)
{
	while (ms > 0) {
		int slice = ms < STOP_POLL_MS ? ms : STOP_POLL_MS;
		struct timespec ts = {
			.tv_sec = slice / 1000,
			.tv_nsec = (long)(slice % 1000) * 1000000,
		};

		if (stopped(stop))
			return -ECANCELED;
		nanosleep(&ts, NULL);
		ms -= slice;
	}
	return stopped(stop) ? -ECANCELED : 0;
}

int uvh_connect(const char *path, const struct uvh_connect_opts *opts)
{
	static const struct uvh_connect_opts defaults;
	struct sockaddr_un sa;
	int64_t deadline = 0;
	int delay, max_delay, fd, ret;

	ret = make_addr(path, &sa);
	if (ret)
		return ret;
	if (!opts)
		opts = &defaults;
	delay = opts->initial_delay_ms > 0 ? opts->initial_delay_ms : DEFAULT_DELAY_MS;
	max_delay = opts->max_delay_ms > 0 ? opts->max_delay_ms : DEFAULT_MAX_DELAY_MS;
	if (delay > max_delay)
		delay = max_delay;
	if (opts->timeout_ms > 0)
		deadline = uvh_now_ms() + opts->timeout_ms;

	for (;;) {
		if (stopped(opts->stop))
			return -ECANCELED;
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		do {
			ret = connect(fd, (const struct sockaddr *)&sa, sizeof(sa));
		} while (ret && errno == EINTR);
		if (!ret)
			return fd;
		ret = -errno;
		close(fd);
		/* Only "the server is not there (yet)" is worth a retry. */
		if (ret != -ENOENT && ret != -ECONNREFUSED && ret != -EAGAIN)
			return ret;
		if (opts->timeout_ms == 0)
			return ret;
		if (opts->timeout_ms > 0) {
			int64_t left = deadline - uvh_now_ms();

			if (left <= 0) {
				UVH_ERR("connect %s: gave up after %d ms: %s", path,
					opts->timeout_ms, strerror(-ret));
				return -ETIMEDOUT;
			}
			if (delay > left)
				delay = (int)left;
		}
		ret = backoff_sleep(delay, opts->stop);
		if (ret)
			return ret;
		delay = delay > max_delay / 2 ? max_delay : delay * 2;
	}
}
