/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the back-end's channel to the front-end (rust-vmm's Backend, the
 * old Slave): sends back-end -> front-end requests on the socket received
 * with SET_BACKEND_REQ_FD. With REPLY_ACK each request asks for an ack and
 * waits for it, so a call returns the front-end's verdict.
 *
 * Calls are serialised with a mutex: the spec allows one outstanding
 * request per socket, and a back-end may send from several engines.
 *
 * Every call returns 0 or a negative errno:
 *   -EOPNOTSUPP  the request's gating protocol feature is not negotiated,
 *                or an fd would be sent without BACKEND_SEND_FD (nothing
 *                is sent)
 *   -EINVAL      a NULL argument, or a vring index over 255 for the host
 *                notifier (nothing is sent)
 *   -EIO         the front-end answered with a non-zero u64 (a verdict)
 *   -ENOENT      SHARED_OBJECT_LOOKUP: the front-end answered 0 with no fd
 *   -EPROTO      the reply is malformed: another request id, flags other
 *                than REPLY|VERSION, size other than 8, unexpected fds
 *                (closed)
 *   -ETIMEDOUT   no reply within the timeout
 *   -ENOTCONN    the channel is broken (see below)
 *   other        a transport error from the endpoint (e.g. -EPIPE)
 * After -EPROTO, -ETIMEDOUT or a transport error the stream can no longer
 * be trusted to be at a message boundary, so the channel is broken and
 * every later call returns -ENOTCONN; free it.
 */
#ifndef UVHOST_BACKEND_CHAN_H
#define UVHOST_BACKEND_CHAN_H

#include <stdint.h>

#include "message.h"

#ifdef __cplusplus
extern "C" {
#endif

struct uvh_backend_chan;

/**
 * Wrap socket @fd (ownership taken, closed on failure)
 * with the negotiated @protocol_features (REPLY_ACK, BACKEND_SEND_FD, and
 * the gates: a request whose gate is not negotiated fails with -EOPNOTSUPP
 * without being sent). NULL with errno set on failure.
 */
struct uvh_backend_chan *uvh_backend_chan_new(int fd, uint64_t protocol_features);
/** Close the socket and free (NULL is ignored). */
void uvh_backend_chan_free(struct uvh_backend_chan *chan);
/** Wait at most @timeout_ms for an ack or reply (default 5000; -1 forever). */
void uvh_backend_chan_set_timeout(struct uvh_backend_chan *chan, int timeout_ms);

/** IOTLB miss (type 1) or access failure (type 4). */
int uvh_backend_chan_iotlb_msg(struct uvh_backend_chan *chan, const struct uvh_iotlb *msg);
/** Tell the front-end the config space changed (CONFIG). */
int uvh_backend_chan_config_change(struct uvh_backend_chan *chan);
/**
 * Host notifier of vring @index (<= 255): @fd (the caller keeps it) with
 * @size/@offset, or @fd -1 to remove it (sent with the no-fd bit, so it
 * needs no BACKEND_SEND_FD).
 */
int uvh_backend_chan_vring_host_notifier(struct uvh_backend_chan *chan, uint32_t index,
					 int fd, uint64_t size, uint64_t offset);
/** In-band call notification of vring @index (INBAND_NOTIFICATIONS). */
int uvh_backend_chan_vring_call(struct uvh_backend_chan *chan, uint32_t index);
/** In-band error notification of vring @index (INBAND_NOTIFICATIONS). */
int uvh_backend_chan_vring_err(struct uvh_backend_chan *chan, uint32_t index);
/** Export shared object @uuid to the front-end (SHARED_OBJECT). */
int uvh_backend_chan_shared_object_add(struct uvh_backend_chan *chan,
				       const struct uvh_shared_object *uuid);
/** Withdraw shared object @uuid (SHARED_OBJECT; only its owner may). */
int uvh_backend_chan_shared_object_remove(struct uvh_backend_chan *chan,
					  const struct uvh_shared_object *uuid);
/**
 * Look an object up; its dmabuf fd (caller owns it) in *fd, -1 on any
 * failure. Always waits for the front-end's reply, REPLY_ACK or not.
 */
int uvh_backend_chan_shared_object_lookup(struct uvh_backend_chan *chan,
					  const struct uvh_shared_object *uuid, int *fd);
/** Map @fd (the caller keeps it; -EBADF if negative) into shared memory
 * region map->shmid (SHMEM; needs BACKEND_SEND_FD). */
int uvh_backend_chan_shmem_map(struct uvh_backend_chan *chan,
			       const struct uvh_shmem_map *map, int fd);
/** Unmap the range @map describes (SHMEM; fd_offset is ignored). */
int uvh_backend_chan_shmem_unmap(struct uvh_backend_chan *chan,
				 const struct uvh_shmem_map *map);

#ifdef __cplusplus
}
#endif

#endif
