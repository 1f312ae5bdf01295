/* SPDX-License-Identifier: MIT */
/*
 * uvhost: device state transfer through a pipe, on a thread (state_xfer.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "util.h"
#include "log.h"
#include "state_xfer.h"

struct uvh_state_xfer {
	pthread_t thread;
	bool joined;
	bool save;
	int fd;
	int cancel_fd;		/* eventfd: written to stop the thread */
	int timeout_ms;
	uint8_t *buf;
	size_t len, max;
	int result;
};

/* Wait until @fd is ready for @events: 0, -ETIMEDOUT, -ECANCELED. */
static int wait_fd(struct uvh_state_xfer *x, short events, int64_t deadline)
{
	struct pollfd p[2] = {
		{ .fd = x->fd, .events = events },
		{ .fd = x->cancel_fd, .events = POLLIN },
	};
	int64_t left;
	int r;

	for (;;) {
		left = deadline - uvh_now_ms();
		if (left <= 0)
			return -ETIMEDOUT;
		r = poll(p, 2, left > 1000 ? 1000 : (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (p[1].revents)
			return -ECANCELED;
		if (p[0].revents)
			return 0;	/* ready, or HUP/ERR: the next I/O says which */
	}
}

static int run_save(struct uvh_state_xfer *x, int64_t deadline)
{
	size_t done = 0;

	while (done < x->len) {
		ssize_t w = write(x->fd, x->buf + done, x->len - done);

		if (w > 0) {
			done += (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno != EAGAIN)
			return -errno;	/* EPIPE: the front-end closed its end */
		w = wait_fd(x, POLLOUT, deadline);
		if (w < 0)
			return (int)w;
	}
	return 0;
}

static int run_load(struct uvh_state_xfer *x, int64_t deadline)
{
	uint8_t spill;

	for (;;) {
		/* one byte past max is read to tell "too big" from "exactly max" */
		ssize_t r = x->len < x->max ? read(x->fd, x->buf + x->len, x->max - x->len) :
					      read(x->fd, &spill, 1);

		if (r == 0)
			return 0;	/* EOF: the front-end wrote it all */
		if (r > 0) {
			if (x->len == x->max)
				return -EFBIG;
			x->len += (size_t)r;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		r = wait_fd(x, POLLIN, deadline);
		if (r < 0)
			return (int)r;
	}
}

static void *xfer_thread(void *arg)
{
	struct uvh_state_xfer *x = arg;
	int64_t deadline = uvh_now_ms() + x->timeout_ms;

	x->result = x->save ? run_save(x, deadline) : run_load(x, deadline);
	close(x->fd);
	x->fd = -1;
	return NULL;
}

static int start(struct uvh_state_xfer **out, int fd, bool save, const void *buf, size_t len,
		 size_t max, int timeout_ms)
{
	struct uvh_state_xfer *x;
	int flags, ret;

	*out = NULL;
	if (fd < 0)
		return -EBADF;
	x = calloc(1, sizeof(*x));
	if (!x) {
		close(fd);
		return -ENOMEM;
	}
	x->fd = fd;
	x->save = save;
	x->timeout_ms = timeout_ms > 0 ? timeout_ms : 10000;
	x->max = max;
	x->len = save ? len : 0;
	x->buf = malloc(save ? (len ? len : 1) : (max ? max : 1));
	x->cancel_fd = eventfd(0, EFD_CLOEXEC);
	ret = !x->buf ? -ENOMEM : x->cancel_fd < 0 ? -errno : 0;
	/* non-blocking, so the thread waits in poll() where a cancel reaches it */
	flags = ret ? -1 : fcntl(fd, F_GETFL);
	if (!ret && (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0))
		ret = -errno;
	if (!ret && save)
		memcpy(x->buf, buf, len);
	if (!ret)
		ret = -pthread_create(&x->thread, NULL, xfer_thread, x);
	if (ret) {
		if (x->cancel_fd >= 0)
			close(x->cancel_fd);
		close(fd);
		free(x->buf);
		free(x);
		return ret;
	}
	*out = x;
	return 0;
}

int uvh_state_xfer_save(struct uvh_state_xfer **out, int fd, const void *buf, size_t len,
			int timeout_ms)
{
	if (!out || (!buf && len)) {
		if (fd >= 0)
			close(fd);
		return -EINVAL;
	}
	return start(out, fd, true, buf, len, 0, timeout_ms);
}

int uvh_state_xfer_load(struct uvh_state_xfer **out, int fd, size_t max, int timeout_ms)
{
	if (!out || max > UVH_STATE_XFER_MAX) {
		if (fd >= 0)
			close(fd);
		return -EINVAL;
	}
	return start(out, fd, false, NULL, 0, max, timeout_ms);
}

int uvh_state_xfer_finish(struct uvh_state_xfer *x, const void **buf, size_t *len)
{
	if (!x)
		return -EINVAL;
	if (!x->joined) {
		pthread_join(x->thread, NULL);
		x->joined = true;
	}
	if (buf)
		*buf = x->buf;
	if (len)
		*len = x->save ? 0 : x->len;
	return x->result;
}

void uvh_state_xfer_free(struct uvh_state_xfer *x)
{
	if (!x)
		return;
	if (!x->joined && eventfd_write(x->cancel_fd, 1))
		UVH_WARN("state transfer: cancel failed: %s", strerror(errno));
	uvh_state_xfer_finish(x, NULL, NULL);
	close(x->cancel_fd);
	free(x->buf);
	free(x);
}
