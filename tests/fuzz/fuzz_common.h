/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the fuzz targets: a cursor over the input that never
 * fails (reads past the end give zeroes, so every input decodes to
 * something), synthetic fds, sending raw bytes with fds, fd counting, and
 * a log sink that keeps the library quiet while fuzzing (UVH_FUZZ_LOG=1
 * shows the lines).
 */
#ifndef UVH_FUZZ_COMMON_H
#define UVH_FUZZ_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "t_fds.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

struct fz {
	const uint8_t *p;
	size_t n;
};

static inline bool fz_empty(const struct fz *f)
{
	return f->n == 0;
}

static inline void fz_take(struct fz *f, void *out, size_t len)
{
	size_t k = len < f->n ? len : f->n;

	if (k)
		memcpy(out, f->p, k);
	if (k < len)
		memset((uint8_t *)out + k, 0, len - k);
	f->p += k;
	f->n -= k;
}

static inline uint8_t fz_u8(struct fz *f)
{
	uint8_t v;

	fz_take(f, &v, 1);
	return v;
}

static inline uint16_t fz_u16(struct fz *f)
{
	uint16_t v;

	fz_take(f, &v, 2);
	return v;
}

static inline uint32_t fz_u32(struct fz *f)
{
	uint32_t v;

	fz_take(f, &v, 4);
	return v;
}

static inline uint64_t fz_u64(struct fz *f)
{
	uint64_t v;

	fz_take(f, &v, 8);
	return v;
}

/* An fd must never leak: the count after an iteration equals the one
 * before. A leak is a crash, so the fuzzer keeps the input. */
static inline void fz_check_fds(int before, const char *target)
{
	int after = t_fds_open_count();

	if (after != before) {
		fprintf(stderr, "%s: fd leak: %d open before the input, %d after\n",
			target, before, after);
		abort();
	}
}

static inline int fz_eventfd(void)
{
	int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

	if (fd < 0)
		abort();
	return fd;
}

/* A memfd of @size bytes (sparse: nothing is allocated until written). */
static inline int fz_memfd(const char *name, uint64_t size)
{
	int fd = memfd_create(name, MFD_CLOEXEC);

	if (fd < 0 || ftruncate(fd, (off_t)size))
		abort();
	return fd;
}

static inline void fz_socketpair(int sv[2])
{
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		abort();
}

/* Write @len bytes to stream socket @fd, @nfds fds riding on the first
 * byte. Returns false when the peer is gone or the buffer is full. */
static inline bool fz_send(int fd, const void *buf, size_t len, const int *fds,
			   unsigned int nfds)
{
	struct t_fds_cmsg cbuf;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (nfds > 16)
		nfds = 16;
	t_fds_attach(&mh, &cbuf, fds, nfds);
	if (!len && !nfds)
		return true;
	/* fds need at least one byte to ride on. */
	if (!len) {
		static const uint8_t zero;

		iov.iov_base = (void *)&zero;
		iov.iov_len = 1;
	}
	while (iov.iov_len) {
		ssize_t r = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return false;
		}
		iov.iov_base = (uint8_t *)iov.iov_base + r;
		iov.iov_len -= (size_t)r;
		mh.msg_control = NULL;
		mh.msg_controllen = 0;
	}
	return true;
}

/* Read and drop whatever is waiting on @fd, closing every fd received.
 * Returns the bytes read. When @keep is not NULL, the first fd received
 * is stored there instead of being closed (if *keep is -1). */
static inline size_t fz_drain(int fd, int *keep)
{
	size_t total = 0;

	for (;;) {
		union {
			struct cmsghdr align;
			char buf[CMSG_SPACE(32 * sizeof(int))];
		} cbuf;
		uint8_t buf[8192];
		struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
		struct msghdr mh = {
			.msg_iov = &iov, .msg_iovlen = 1,
			.msg_control = cbuf.buf, .msg_controllen = sizeof(cbuf.buf),
		};
		ssize_t r = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

		if (r < 0 && errno == EINTR)
			continue;
		for (struct cmsghdr *c = r >= 0 ? CMSG_FIRSTHDR(&mh) : NULL; c;
		     c = CMSG_NXTHDR(&mh, c)) {
			unsigned int n;

			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			n = (unsigned int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			for (unsigned int i = 0; i < n; i++) {
				int rfd;

				memcpy(&rfd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
				if (keep && *keep < 0)
					*keep = rfd;
				else
					close(rfd);
			}
		}
		if (r <= 0)
			return total;
		total += (size_t)r;
	}
}

static void fz_log_sink(enum uvh_log_level level, const char *line, void *opaque)
{
	(void)level;
	(void)line;
	(void)opaque;
}

/* Quiet logs unless UVH_FUZZ_LOG is set (the fuzzer prints millions). */
static inline void fz_quiet_logs(void)
{
	if (!getenv("UVH_FUZZ_LOG"))
		uvh_log_set_sink(fz_log_sink, NULL);
	else
		uvh_log_set_level(UVH_LOG_DEBUG);
}

#endif
