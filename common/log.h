/* SPDX-License-Identifier: MIT */
/*
 * uvhost: one small logger with levels.
 *
 * Every part of the library logs through uvh_log(). Lines go to stderr by
 * default; a VMM embedding the library can route them with
 * uvh_log_set_sink(). The level can also be set with UVH_LOG_LEVEL=
 * error|warn|info|debug in the environment.
 */
#ifndef UVHOST_LOG_H
#define UVHOST_LOG_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Log levels, most severe first. */
enum uvh_log_level {
	UVH_LOG_ERROR = 0,
	UVH_LOG_WARN = 1,
	UVH_LOG_INFO = 2,
	UVH_LOG_DEBUG = 3,
};

/** A sink receives each formatted line (no trailing newline). */
typedef void (*uvh_log_sink)(enum uvh_log_level level, const char *line, void *opaque);

/** Set the most verbose level that is emitted (default UVH_LOG_INFO). */
void uvh_log_set_level(enum uvh_log_level level);
/** The current level. */
enum uvh_log_level uvh_log_get_level(void);
/** Route lines to @sink (NULL restores stderr). */
void uvh_log_set_sink(uvh_log_sink sink, void *opaque);
/** Emit one line at @level when the level is enabled. */
void uvh_log(enum uvh_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/** va_list form of uvh_log(). */
void uvh_vlog(enum uvh_log_level level, const char *fmt, va_list ap);

#define UVH_ERR(...)	uvh_log(UVH_LOG_ERROR, __VA_ARGS__)
#define UVH_WARN(...)	uvh_log(UVH_LOG_WARN, __VA_ARGS__)
#define UVH_INFO(...)	uvh_log(UVH_LOG_INFO, __VA_ARGS__)
#define UVH_DEBUG(...)	uvh_log(UVH_LOG_DEBUG, __VA_ARGS__)

#ifdef __cplusplus
}
#endif

#endif
