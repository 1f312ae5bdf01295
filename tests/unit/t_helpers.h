/* SPDX-License-Identifier: MIT */
/* Helpers shared by the unit tests (liburing-style t_ prefix). */
#ifndef UVH_T_HELPERS_H
#define UVH_T_HELPERS_H

#include <stddef.h>
#include <stdint.h>

/** Number of open fds of this process (entries of /proc/self/fd). */
int t_count_fds(void);
/** A connected AF_UNIX stream socketpair (close-on-exec); aborts on failure. */
void t_socketpair(int sv[2]);
/** A memfd of @size bytes; aborts on failure. */
int t_memfd(const char *name, size_t size);
/** An eventfd (close-on-exec, non-blocking); aborts on failure. */
int t_eventfd(void);
/** A fresh socket path under /tmp (not created) into @buf. */
void t_socket_path(char *buf, size_t len, const char *tag);
/** (st_dev, st_ino) of an fd, to check two fds name the same file. */
int t_same_file(int a, int b);
/** Start capturing log lines (uvh_log) into a buffer; t_log_contains checks. */
void t_log_capture(void);
int t_log_contains(const char *needle);
void t_log_reset(void);

#endif
