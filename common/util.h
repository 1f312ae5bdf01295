/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the small helpers every layer shares (bits, branch hints, the
 * monotonic clock, closing an fd once). Not installed: the library's own,
 * and its programs' and tests'.
 */
#ifndef UVHOST_UTIL_H
#define UVHOST_UTIL_H

#include <stdint.h>
#include <time.h>
#include <unistd.h>

#define UVH_BIT(n)	(1ull << (n))

#ifndef likely
#define likely(x)	__builtin_expect(!!(x), 1)
#define unlikely(x)	__builtin_expect(!!(x), 0)
#endif

/** CLOCK_MONOTONIC in nanoseconds. */
static inline uint64_t uvh_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/** CLOCK_MONOTONIC in milliseconds. */
static inline int64_t uvh_now_ms(void)
{
	return (int64_t)(uvh_now_ns() / 1000000u);
}

/** Close *@fd if open and mark it closed (-1). */
static inline void uvh_close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

#endif
