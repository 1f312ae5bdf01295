/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the back-end's channel to the front-end (rust-vmm's Backend, the
 * old Slave): sends back-end -> front-end requests on the socket received
 * with SET_BACKEND_REQ_FD. With REPLY_ACK each request asks for an ack and
 * waits for it, so a call returns the front-end's verdict.
 *
 * Calls are serialised with a mutex: the spec allows one outstanding
 * request per socket, and a back-end may send from several engines.
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
 * Wrap socket @fd (ownership taken) with the negotiated @protocol_features
 * (REPLY_ACK, BACKEND_SEND_FD, and the gates: a request whose gate is not
 * negotiated fails with -EOPNOTSUPP without being sent).
 */
struct uvh_backend_chan *uvh_backend_chan_new(int fd, uint64_t protocol_features);
void uvh_backend_chan_free(struct uvh_backend_chan *chan);
/** Wait at most @timeout_ms for an ack or reply (default 5000; -1 forever). */
void uvh_backend_chan_set_timeout(struct uvh_backend_chan *chan, int timeout_ms);

/** IOTLB miss (type 1) or access failure (type 4). */
int uvh_backend_chan_iotlb_msg(struct uvh_backend_chan *chan, const struct uvh_iotlb *msg);
/** Tell the front-end the config space changed (CONFIG). */
int uvh_backend_chan_config_change(struct uvh_backend_chan *chan);
/** Host notifier of vring @index: @fd with @size/@offset, or @fd -1 to remove. */
int uvh_backend_chan_vring_host_notifier(struct uvh_backend_chan *chan, uint32_t index,
					 int fd, uint64_t size, uint64_t offset);
/** In-band call / error notification (INBAND_NOTIFICATIONS). */
int uvh_backend_chan_vring_call(struct uvh_backend_chan *chan, uint32_t index);
int uvh_backend_chan_vring_err(struct uvh_backend_chan *chan, uint32_t index);
/** Shared objects (SHARED_OBJECT). */
int uvh_backend_chan_shared_object_add(struct uvh_backend_chan *chan,
				       const struct uvh_shared_object *uuid);
int uvh_backend_chan_shared_object_remove(struct uvh_backend_chan *chan,
					  const struct uvh_shared_object *uuid);
/** Look an object up; its dmabuf fd (caller owns it) in *fd. */
int uvh_backend_chan_shared_object_lookup(struct uvh_backend_chan *chan,
					  const struct uvh_shared_object *uuid, int *fd);
/** Map @fd into shared memory region map->shmid (SHMEM). */
int uvh_backend_chan_shmem_map(struct uvh_backend_chan *chan,
			       const struct uvh_shmem_map *map, int fd);
int uvh_backend_chan_shmem_unmap(struct uvh_backend_chan *chan,
				 const struct uvh_shmem_map *map);

#ifdef __cplusplus
}
#endif

#endif
