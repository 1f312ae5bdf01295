/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the front-end's handler of back-end-initiated requests (rust-vmm's
 * FrontendReqHandler / VhostUserMasterReqHandler), on the channel set up by
 * SET_BACKEND_REQ_FD.
 *
 * Requests are validated against the back-end table of message.h (size,
 * fds, gating protocol feature); a request that needs an fd it may not
 * carry (no BACKEND_SEND_FD) is refused. With REPLY_ACK and NEED_REPLY set
 * the result goes back as a u64 (0 = success, else a positive errno);
 * SHARED_OBJECT_LOOKUP is always answered (u64, plus the fd when found).
 *
 * Refusals (each logged with the request name and the reason):
 *   -EPROTO      the REPLY flag is set (never answered)
 *   -EBADRQC     unknown request id
 *   -EOPNOTSUPP  the gating protocol feature is not negotiated
 *   -EMSGSIZE    payload size does not fit the request
 *   -EPERM       fds sent, or an fd needed, without BACKEND_SEND_FD
 *   -EBADF       wrong fd count (e.g. an fd on a request that takes none,
 *                or a host notifier whose fd disagrees with its no-fd bit)
 * Unexpected fds are always closed. When a reply is due the refusal goes
 * back as a NACK and the channel stays usable; otherwise the errno is
 * returned and the channel must be closed. A payload the front-end cannot
 * act on (an IOTLB type other than miss/access failure, reserved bits in
 * the host notifier's u64, an empty or wrapping shmem range) fails with
 * -EINVAL like a failed callback.
 */
#ifndef UVHOST_FRONTEND_REQ_H
#define UVHOST_FRONTEND_REQ_H

#include <stdint.h>

#include "endpoint.h"
#include "message.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * What the front-end does with each back-end request. Every callback gets
 * the @opaque given to uvh_frontend_req_new() and returns 0 or a negative
 * errno (sent back as a non-zero ack when one is asked for). fds passed in
 * belong to the callback. NULL = -ENOSYS. The ops struct is copied.
 */
struct uvh_frontend_req_ops {
	/** A miss (type 1) or an access failure (type 4). */
	int (*iotlb_msg)(void *opaque, const struct uvh_iotlb *msg);
	/** The device's config space changed: re-read it with GET_CONFIG. */
	int (*config_change)(void *opaque);
	/** @fd is -1 to remove the notifier of the vring in area->u64. */
	int (*vring_host_notifier)(void *opaque, const struct uvh_vring_area *area,
				   int fd);
	int (*vring_call)(void *opaque, uint32_t index);
	int (*vring_err)(void *opaque, uint32_t index);
	int (*shared_object_add)(void *opaque, const struct uvh_shared_object *uuid);
	int (*shared_object_remove)(void *opaque, const struct uvh_shared_object *uuid);
	/**
	 * Return the object's dmabuf fd in *fd (-1 when not found, with 0
	 * returned). The channel sends the fd and then closes it, so give a
	 * dup of any fd kept elsewhere.
	 */
	int (*shared_object_lookup)(void *opaque, const struct uvh_shared_object *uuid,
				    int *fd);
	int (*shmem_map)(void *opaque, const struct uvh_shmem_map *map, int fd);
	int (*shmem_unmap)(void *opaque, const struct uvh_shmem_map *map);
};

/** The front-end's end of one back-end channel. */
struct uvh_frontend_req;

/**
 * Serve back-end requests arriving on @fd (ownership taken) with @ops.
 * @protocol_features are the negotiated ones (REPLY_ACK, BACKEND_SEND_FD and
 * the gates are taken from them). NULL with errno on failure.
 */
struct uvh_frontend_req *uvh_frontend_req_new(int fd,
					      const struct uvh_frontend_req_ops *ops,
					      void *opaque, uint64_t protocol_features);
/** Close the socket and free (NULL is ignored). */
void uvh_frontend_req_free(struct uvh_frontend_req *req);
/** The socket, for a poller. */
int uvh_frontend_req_fd(const struct uvh_frontend_req *req);
/**
 * Read and handle one request (blocking). Returns 0 when the request was
 * served: handled, or refused / failed with the verdict sent back (or not
 * asked for; failures are logged). A negative errno means the channel is
 * broken (transport error from uvh_endpoint_recv/send, or a refusal with
 * no reply due, see above) and should be freed.
 */
int uvh_frontend_req_handle(struct uvh_frontend_req *req);

#ifdef __cplusplus
}
#endif

#endif
