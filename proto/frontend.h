/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the vhost-user front-end (rust-vmm's Frontend / VhostUserMaster):
 * every front-end request as a call.
 *
 * One request is outstanding at a time (the spec has no request ids), so
 * calls on one uvh_frontend are serialised with a mutex. When REPLY_ACK is
 * negotiated every request without a reply body asks for an ack and the
 * call returns the back-end's verdict (-EIO for a non-zero ack). While a
 * call waits for a reply, back-end channel requests are still served (the
 * deadlock QEMU avoids by nesting its main loop).
 *
 * Errors: negative errno. -EPROTO for a malformed reply (wrong request,
 * flags other than REPLY|VERSION, bad size, missing or unexpected fd, the
 * latter closed); -ETIMEDOUT when no reply comes in time; after a transport
 * or protocol error or a timeout the connection is unusable (-ENOTCONN
 * afterwards). -EIO is the back-end's refusal (a NACK or a failure reply)
 * and leaves the connection usable. A request whose gating protocol or
 * virtio feature is not in force (as set through this uvh_frontend) fails
 * with -EOPNOTSUPP without being sent; bad arguments give -EINVAL or
 * -EBADF (a required fd < 0), also without sending anything.
 */
#ifndef UVHOST_FRONTEND_H
#define UVHOST_FRONTEND_H

#include <stdbool.h>
#include <stdint.h>

#include "frontend_req.h"
#include "listener.h"
#include "message.h"

#ifdef __cplusplus
extern "C" {
#endif

struct uvh_frontend;

/** Take a connected socket @fd (ownership taken). NULL + errno on failure. */
struct uvh_frontend *uvh_frontend_from_fd(int fd);
/** Connect to a back-end listening on @path (client, with retry). */
int uvh_frontend_connect(const char *path, const struct uvh_connect_opts *opts,
			 struct uvh_frontend **out);
/** Listen on @path and accept one back-end (server), waiting @timeout_ms. */
int uvh_frontend_accept(const char *path, const struct uvh_listener_opts *opts,
			int timeout_ms, struct uvh_frontend **out);
/** Close the connection (and the back-end channel) and free. */
void uvh_frontend_free(struct uvh_frontend *fe);
/** Wait at most @timeout_ms for each reply (default 10000; -1 forever). */
void uvh_frontend_set_timeout(struct uvh_frontend *fe, int timeout_ms);
/** The connection's socket (for a poller), or -1; it changes with
 *  uvh_frontend_reconnect(). Still owned by @fe. */
int uvh_frontend_fd(const struct uvh_frontend *fe);

/* ---- surviving a back-end restart ---------------------------------------------
 *
 * A back-end may be killed and started again on the same socket path. With
 * the session recorded, the front-end notices the closed socket
 * (uvh_frontend_check_connection), connects again (retrying until the new
 * process listens) and replays the session (uvh_frontend_reconnect): the
 * very same memory fds, inflight area (SET_INFLIGHT_FD, so the new process
 * finds what the old one had in flight and hands it out again), ring
 * sizes, addresses, bases, eventfds and enable states, then a kick per
 * ring. The driver's rings are untouched meanwhile: it may keep adding
 * buffers while no back-end is there.
 */

/**
 * Start recording the session for uvh_frontend_reconnect(): from now on
 * every request the back-end accepts that sets session state is kept,
 * with a duplicate of each fd it carried (closed by uvh_frontend_free()).
 * Call it first, before uvh_frontend_negotiate(). Setting the dirty log
 * (SET_LOG_BASE/FD), config space and MTU are not recorded (not replayed).
 * 0, -EINVAL, -ENOMEM; calling it twice is a no-op.
 */
int uvh_frontend_record_session(struct uvh_frontend *fe);

/**
 * Has the back-end gone? Waits up to @timeout_ms (0: just look) for the
 * socket to close. 0 when it is still up (a message waiting is left
 * alone), -ENOTCONN when the peer closed or the connection was already
 * unusable (it is then marked so), or another negative errno.
 */
int uvh_frontend_check_connection(struct uvh_frontend *fe, int timeout_ms);

/** Options of uvh_frontend_reconnect(). Zeroed = the defaults. */
struct uvh_frontend_reconnect_opts {
	/** Retry policy while the new back-end is not listening yet. */
	struct uvh_connect_opts connect;
	/**
	 * The base to send for ring @index (SET_VRING_BASE), *base holding
	 * the last one sent. NULL sends the last one sent. A driver knows
	 * better: split rings restart at used->idx (the chains in flight
	 * are the inflight area's business), as QEMU does. Non-zero return
	 * (negative errno) aborts the replay.
	 */
	int (*vring_base)(void *opaque, uint32_t index, uint32_t *base);
	void *opaque;
};

/**
 * Drop the connection and connect again to the path of
 * uvh_frontend_connect(), then replay the recorded session. The back-end
 * channel, if one was opened, is opened again with the same ops. Call it
 * from the thread that makes the other calls. 0, or: -EOPNOTSUPP (not
 * recording), -EDESTADDRREQ (not made by uvh_frontend_connect),
 * -ENOTRECOVERABLE (a record was lost), the connect error (-ETIMEDOUT,
 * -ECANCELED...), -EPROTO (the new back-end lacks a feature in force) or a
 * replayed request's error. On failure the connection is left unusable
 * and another uvh_frontend_reconnect() may be tried.
 */
int uvh_frontend_reconnect(struct uvh_frontend *fe, const struct uvh_frontend_reconnect_opts *opts);
/** Successful uvh_frontend_reconnect() calls so far. */
unsigned int uvh_frontend_reconnects(const struct uvh_frontend *fe);

/**
 * The usual opening: SET_OWNER, GET_FEATURES, SET_FEATURES(@features &
 * offered, plus PROTOCOL_FEATURES when offered), GET/SET_PROTOCOL_FEATURES
 * (@protocol_features & offered). Results (what is in force) in the outs,
 * which may be NULL.
 */
int uvh_frontend_negotiate(struct uvh_frontend *fe, uint64_t features,
			   uint64_t protocol_features, uint64_t *features_out,
			   uint64_t *protocol_features_out);
/** Features and protocol features in force after negotiation. */
uint64_t uvh_frontend_features(const struct uvh_frontend *fe);
uint64_t uvh_frontend_protocol_features(const struct uvh_frontend *fe);

/**
 * Open the back-end channel: make a socketpair, send one end with
 * SET_BACKEND_REQ_FD (needs BACKEND_REQ), serve the other with @ops.
 * Requests are served while a call waits for a reply, and by
 * uvh_frontend_poll_backend() otherwise.
 */
int uvh_frontend_set_backend_req(struct uvh_frontend *fe,
				 const struct uvh_frontend_req_ops *ops, void *opaque);
/** The back-end channel's fd (-1 if none), for the caller's poller. */
int uvh_frontend_backend_req_fd(const struct uvh_frontend *fe);
/**
 * Wait up to @timeout_ms (-1 forever, 0 not at all) for a back-end request,
 * then serve it and every other one already waiting. Returns how many were
 * served, or a negative errno (-ENOTCONN without a channel; when the
 * channel fails it is closed and its error returned).
 *
 * Channel callbacks run with the front-end's lock held: a callback that
 * calls back into this uvh_frontend gets -EDEADLK (defer such work).
 */
int uvh_frontend_poll_backend(struct uvh_frontend *fe, int timeout_ms);

/* One call per request (spec section numbers in message.h). */
int uvh_frontend_set_owner(struct uvh_frontend *fe);
int uvh_frontend_reset_owner(struct uvh_frontend *fe);
int uvh_frontend_get_features(struct uvh_frontend *fe, uint64_t *features);
int uvh_frontend_set_features(struct uvh_frontend *fe, uint64_t features);
int uvh_frontend_get_protocol_features(struct uvh_frontend *fe, uint64_t *pf);
int uvh_frontend_set_protocol_features(struct uvh_frontend *fe, uint64_t pf);
/** @n <= 8 regions with one fd each (the caller keeps its fds). */
int uvh_frontend_set_mem_table(struct uvh_frontend *fe, const struct uvh_mem_region *regions,
			       const int *fds, unsigned int n);
int uvh_frontend_add_mem_reg(struct uvh_frontend *fe, const struct uvh_mem_region *region, int fd);
int uvh_frontend_rem_mem_reg(struct uvh_frontend *fe, const struct uvh_mem_region *region);
int uvh_frontend_get_max_mem_slots(struct uvh_frontend *fe, uint64_t *slots);
/** @fd with LOG_SHMFD (then a reply is awaited), else -1. */
int uvh_frontend_set_log_base(struct uvh_frontend *fe, const struct uvh_dirty_log_area *log, int fd);
int uvh_frontend_set_log_fd(struct uvh_frontend *fe, int fd);
int uvh_frontend_set_vring_num(struct uvh_frontend *fe, uint32_t index, uint32_t num);
int uvh_frontend_set_vring_addr(struct uvh_frontend *fe, const struct uvh_vring_addr *addr);
int uvh_frontend_set_vring_base(struct uvh_frontend *fe, uint32_t index, uint32_t base);
int uvh_frontend_get_vring_base(struct uvh_frontend *fe, uint32_t index, uint32_t *base);
int uvh_frontend_get_vring_base_skip_drain(struct uvh_frontend *fe, uint32_t index,
					   uint32_t *base);
/** @fd -1 sends the "no fd" bit (the back-end polls). */
int uvh_frontend_set_vring_kick(struct uvh_frontend *fe, uint32_t index, int fd);
int uvh_frontend_set_vring_call(struct uvh_frontend *fe, uint32_t index, int fd);
int uvh_frontend_set_vring_err(struct uvh_frontend *fe, uint32_t index, int fd);
int uvh_frontend_set_vring_enable(struct uvh_frontend *fe, uint32_t index, bool enable);
int uvh_frontend_set_vring_endian(struct uvh_frontend *fe, uint32_t index, uint32_t endian);
int uvh_frontend_vring_kick(struct uvh_frontend *fe, uint32_t index);
int uvh_frontend_get_queue_num(struct uvh_frontend *fe, uint64_t *num);
/** Reads @size (<= 256) bytes at @offset into @buf. */
int uvh_frontend_get_config(struct uvh_frontend *fe, uint32_t offset, uint32_t size,
			    uint32_t flags, uint8_t *buf);
int uvh_frontend_set_config(struct uvh_frontend *fe, uint32_t offset, uint32_t size,
			    uint32_t flags, const uint8_t *buf);
int uvh_frontend_net_set_mtu(struct uvh_frontend *fe, uint16_t mtu);
int uvh_frontend_send_rarp(struct uvh_frontend *fe, const uint8_t mac[6]);
int uvh_frontend_set_status(struct uvh_frontend *fe, uint8_t status);
int uvh_frontend_get_status(struct uvh_frontend *fe, uint8_t *status);
int uvh_frontend_reset_device(struct uvh_frontend *fe);
/**
 * The back-end's inflight region: description in @out, fd (caller owns) in
 * *fd. A reply with mmap_size 0 and no fd means the back-end has none: 0
 * is returned with @out zeroed and *fd -1 (as QEMU reads it).
 */
int uvh_frontend_get_inflight_fd(struct uvh_frontend *fe, const struct uvh_inflight *in,
				 struct uvh_inflight *out, int *fd);
int uvh_frontend_set_inflight_fd(struct uvh_frontend *fe, const struct uvh_inflight *in, int fd);
/** Update or invalidate (the reply is the back-end's u64 verdict). */
int uvh_frontend_iotlb_msg(struct uvh_frontend *fe, const struct uvh_iotlb *msg);
/**
 * Hand the back-end a device state channel @fd. *out_fd gets the fd the
 * back-end returns instead (caller owns), or -1.
 */
int uvh_frontend_set_device_state_fd(struct uvh_frontend *fe, uint32_t direction,
				     uint32_t phase, int fd, int *out_fd);
int uvh_frontend_check_device_state(struct uvh_frontend *fe);
int uvh_frontend_get_shared_object(struct uvh_frontend *fe,
				   const struct uvh_shared_object *uuid, int *fd);
int uvh_frontend_get_shmem_config(struct uvh_frontend *fe, struct uvh_shmem_config *config);
int uvh_frontend_gpu_set_socket(struct uvh_frontend *fe, int fd);
int uvh_frontend_postcopy_advise(struct uvh_frontend *fe, int *userfault_fd);
int uvh_frontend_postcopy_listen(struct uvh_frontend *fe);
int uvh_frontend_postcopy_end(struct uvh_frontend *fe);
/**
 * CREATE_CRYPTO_SESSION: send @size (8..4096) bytes of session parameters;
 * the reply (up to *out_size bytes, else -ENOBUFS) goes to @out and its
 * length to *out_size.
 */
int uvh_frontend_create_crypto_session(struct uvh_frontend *fe, const void *in,
				       uint32_t size, void *out, uint32_t *out_size);
int uvh_frontend_close_crypto_session(struct uvh_frontend *fe, uint64_t session_id);

#ifdef __cplusplus
}
#endif

#endif
