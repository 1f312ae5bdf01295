/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the transfer of a device state through a pipe (DEVICE_STATE,
 * SET_DEVICE_STATE_FD / CHECK_DEVICE_STATE).
 *
 * The front-end reads (SAVE) or writes (LOAD) its end of the pipe while
 * the control thread goes on serving requests, and it sends
 * CHECK_DEVICE_STATE only once it is done: so the transfer runs on a
 * thread of its own, bounded by a timeout and cancellable, and the check
 * waits for it. The fd is closed by the transfer (the reader's EOF).
 */
#ifndef UVHOST_STATE_XFER_H
#define UVHOST_STATE_XFER_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct uvh_state_xfer;

/** Most bytes a LOAD accepts (more is an error, not a bigger buffer). */
#define UVH_STATE_XFER_MAX	65536u

/**
 * SAVE: write the @len bytes of @buf (copied) to @fd (taken: closed when
 * done or on error), then close it. *@out gets the transfer. 0, -EINVAL,
 * -ENOMEM or pthread_create's error (@fd closed then too).
 */
int uvh_state_xfer_save(struct uvh_state_xfer **out, int fd, const void *buf, size_t len,
			int timeout_ms);
/**
 * LOAD: read @fd (taken) to its EOF, at most @max (<= UVH_STATE_XFER_MAX)
 * bytes, then close it. Same returns as uvh_state_xfer_save().
 */
int uvh_state_xfer_load(struct uvh_state_xfer **out, int fd, size_t max, int timeout_ms);
/**
 * Wait for the transfer's end (at most its timeout) and return its
 * result: 0, -ETIMEDOUT, -EPIPE (SAVE: the reader went), -EFBIG (LOAD:
 * more than max bytes), -ECANCELED or an I/O error. For a LOAD, *@buf and
 * *@len (may be NULL) get the bytes read, valid until uvh_state_xfer_free().
 * May be called again: the same result.
 */
int uvh_state_xfer_finish(struct uvh_state_xfer *x, const void **buf, size_t *len);
/** Cancel a transfer still running, wait for it, free. NULL is a no-op. */
void uvh_state_xfer_free(struct uvh_state_xfer *x);

#ifdef __cplusplus
}
#endif

#endif
