/* SPDX-License-Identifier: MIT */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include "log.h"

static const char *const level_names[] = { "error", "warn", "info", "debug" };

/* -1 = not yet read from the environment. Relaxed: the level is a hint,
 * there is nothing else to order with it. */
static _Atomic int current_level = -1;
static pthread_mutex_t sink_lock = PTHREAD_MUTEX_INITIALIZER;
static uvh_log_sink current_sink;
static void *current_opaque;

static int level_from_env(void)
{
	const char *s = getenv("UVH_LOG_LEVEL");

	if (s)
		for (int i = 0; i < 4; i++)
			if (!strcmp(s, level_names[i]))
				return i;
	return UVH_LOG_INFO;
}

enum uvh_log_level uvh_log_get_level(void)
{
	int l = atomic_load_explicit(&current_level, memory_order_relaxed);

	if (l < 0) {
		l = level_from_env();
		atomic_store_explicit(&current_level, l, memory_order_relaxed);
	}
	return (enum uvh_log_level)l;
}

void uvh_log_set_level(enum uvh_log_level level)
{
	atomic_store_explicit(&current_level, (int)level, memory_order_relaxed);
}

void uvh_log_set_sink(uvh_log_sink sink, void *opaque)
{
	pthread_mutex_lock(&sink_lock);
	current_sink = sink;
	current_opaque = opaque;
	pthread_mutex_unlock(&sink_lock);
}

void uvh_vlog(enum uvh_log_level level, const char *fmt, va_list ap)
{
	char line[512];

	if ((int)level > (int)uvh_log_get_level())
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	pthread_mutex_lock(&sink_lock);
	if (current_sink)
		current_sink(level, line, current_opaque);
	else
		fprintf(stderr, "uvhost %s: %s\n", level_names[level & 3], line);
	pthread_mutex_unlock(&sink_lock);
}

void uvh_log(enum uvh_log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	uvh_vlog(level, fmt, ap);
	va_end(ap);
}
