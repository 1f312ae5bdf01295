/* SPDX-License-Identifier: MIT */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "t_fds.h"
#include "t_helpers.h"

int t_count_fds(void)
{
	return t_fds_open_count();
}

void t_socketpair(int sv[2])
{
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		abort();
}

int t_memfd(const char *name, size_t size)
{
	int fd = memfd_create(name, MFD_CLOEXEC);

	if (fd < 0 || ftruncate(fd, (off_t)size))
		abort();
	return fd;
}

int t_eventfd(void)
{
	int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

	if (fd < 0)
		abort();
	return fd;
}

void t_socket_path(char *buf, size_t len, const char *tag)
{
	static int seq;

	snprintf(buf, len, "/tmp/uvh-test-%s-%d-%d.sock", tag, (int)getpid(), seq++);
	unlink(buf);
}

int t_same_file(int a, int b)
{
	struct stat sa, sb;

	if (fstat(a, &sa) || fstat(b, &sb))
		return 0;
	return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_buf[65536];
static size_t log_len;

static void capture(enum uvh_log_level level, const char *line, void *opaque)
{
	(void)level;
	(void)opaque;
	pthread_mutex_lock(&log_lock);
	size_t n = strlen(line);
	if (log_len + n + 2 < sizeof(log_buf)) {
		memcpy(log_buf + log_len, line, n);
		log_len += n;
		log_buf[log_len++] = '\n';
		log_buf[log_len] = 0;
	}
	pthread_mutex_unlock(&log_lock);
}

void t_log_capture(void)
{
	t_log_reset();
	uvh_log_set_level(UVH_LOG_DEBUG);
	uvh_log_set_sink(capture, NULL);
}

int t_log_contains(const char *needle)
{
	pthread_mutex_lock(&log_lock);
	int r = strstr(log_buf, needle) != NULL;
	pthread_mutex_unlock(&log_lock);
	return r;
}

void t_log_reset(void)
{
	pthread_mutex_lock(&log_lock);
	log_len = 0;
	log_buf[0] = 0;
	pthread_mutex_unlock(&log_lock);
}
