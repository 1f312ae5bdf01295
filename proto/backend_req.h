/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the back-end's request handler (rust-vmm's BackendReqHandler /
 * VhostUserSlaveReqHandler).
 *
 * uvh_backend_req reads front-end requests from one connection, validates
 * each against the spec table of message.h and against the session state
 * (negotiated features, queue count, ring started/stopped), and calls the
 * device through struct uvh_backend_handler_ops. It sends replies and acks.
 *
 * A request that fails validation gets a NACK (u64 non-zero) where
 * REPLY_ACK allows it; otherwise the connection must be closed and
 * uvh_backend_req_handle()/process() return a negative errno with a logged
 * reason. A handler's own failure is a NACK too when acks are on.
 */
#ifndef UVHOST_BACKEND_REQ_H
#define UVHOST_BACKEND_REQ_H

#include <stdbool.h>
#include <stdint.h>

#include "endpoint.h"
#include "message.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Most queues a back-end may declare. */
#define UVH_BACKEND_MAX_QUEUES	256u

/**
 * The device behind a back-end connection: one callback per request.
 *
 * Every callback gets the @dev pointer given to uvh_backend_req_new() and
 * returns 0 or a negative errno. Payloads have been validated for size,
 * fd count, gating feature and vring index before the callback runs.
 * fds passed to a callback belong to it whatever it returns: it keeps or
 * closes them. fds a callback returns through a pointer (replies) are
 * taken only when it returns 0; the library closes them once sent. A NULL
 * callback makes the request fail with -ENOSYS, except where noted.
 */
struct uvh_backend_handler_ops {
	int (*set_owner)(void *dev);
	/** Deprecated by the spec; NULL = accepted and ignored. */
	int (*reset_owner)(void *dev);
	int (*get_features)(void *dev, uint64_t *features);
	/** Features are checked against get_features() first. Without
	 * F_PROTOCOL_FEATURES every ring is then enabled (see
	 * uvh_backend_req_vring()); set_vring_enable is not called. */
	int (*set_features)(void *dev, uint64_t features);
	int (*get_protocol_features)(void *dev, uint64_t *protocol_features);
	/** Called with the subset of the offered bits the front-end acked. */
	int (*set_protocol_features)(void *dev, uint64_t protocol_features);
	/** Regions (n <= 8) with one fd each, in region order. */
	int (*set_mem_table)(void *dev, const struct uvh_mem_region *regions,
			     const int *fds, unsigned int n);
	/** @fd is -1 unless LOG_SHMFD is negotiated. */
	int (*set_log_base)(void *dev, const struct uvh_dirty_log_area *log, int fd);
	int (*set_log_fd)(void *dev, int fd);
	int (*set_vring_num)(void *dev, uint32_t index, uint32_t num);
	int (*set_vring_addr)(void *dev, const struct uvh_vring_addr *addr);
	int (*set_vring_base)(void *dev, uint32_t index, uint32_t base);
	/** Stops the ring; *base is returned to the front-end. */
	int (*get_vring_base)(void *dev, uint32_t index, uint32_t *base);
	/** @fd is -1 when the front-end sent the "no fd" bit (poll instead). */
	int (*set_vring_kick)(void *dev, uint32_t index, int fd);
	int (*set_vring_call)(void *dev, uint32_t index, int fd);
	int (*set_vring_err)(void *dev, uint32_t index, int fd);
	/** NULL = the queue count given to uvh_backend_req_new(). */
	int (*get_queue_num)(void *dev, uint64_t *num);
	int (*set_vring_enable)(void *dev, uint32_t index, bool enable);
	int (*send_rarp)(void *dev, const uint8_t mac[6]);
	int (*net_set_mtu)(void *dev, uint16_t mtu);
	/** The back-end channel socket; see backend_chan.h. */
	int (*set_backend_req_fd)(void *dev, int fd);
	int (*iotlb_msg)(void *dev, const struct uvh_iotlb *msg);
	int (*set_vring_endian)(void *dev, uint32_t index, uint32_t endian);
	/** Fill @buf with @size bytes of config space at @offset. */
	int (*get_config)(void *dev, uint32_t offset, uint32_t size,
			  uint32_t flags, uint8_t *buf);
	int (*set_config)(void *dev, uint32_t offset, uint32_t size,
			  uint32_t flags, const uint8_t *buf);
	int (*postcopy_advise)(void *dev, int *userfault_fd);
	int (*postcopy_listen)(void *dev);
	int (*postcopy_end)(void *dev);
	/** Fill @out and return the inflight region's fd in *fd. */
	int (*get_inflight_fd)(void *dev, const struct uvh_inflight *in,
			       struct uvh_inflight *out, int *fd);
	int (*set_inflight_fd)(void *dev, const struct uvh_inflight *in, int fd);
	int (*gpu_set_socket)(void *dev, int fd);
	int (*reset_device)(void *dev);
	/** In-band kick (INBAND_NOTIFICATIONS). */
	int (*vring_kick)(void *dev, uint32_t index);
	/** NULL = UVH_MAX_MEM_SLOTS. */
	int (*get_max_mem_slots)(void *dev, uint64_t *slots);
	int (*add_mem_reg)(void *dev, const struct uvh_mem_region *region, int fd);
	int (*rem_mem_reg)(void *dev, const struct uvh_mem_region *region);
	int (*set_status)(void *dev, uint8_t status);
	int (*get_status)(void *dev, uint8_t *status);
	int (*get_shared_object)(void *dev, const struct uvh_shared_object *uuid,
				 int *fd);
	/** *out_fd = an fd for the front-end to use, or -1 (then @fd is used). */
	int (*set_device_state_fd)(void *dev, uint32_t direction, uint32_t phase,
				   int fd, int *out_fd);
	int (*check_device_state)(void *dev);
	int (*get_shmem_config)(void *dev, struct uvh_shmem_config *config);
	/** Stop without draining (suspend in-flight I/O to the inflight area). */
	int (*get_vring_base_skip_drain)(void *dev, uint32_t index, uint32_t *base);
	/** Payload of CREATE_CRYPTO_SESSION in @in; reply written to @out. */
	int (*create_crypto_session)(void *dev, const uint8_t *in, uint32_t size,
				     uint8_t *out, uint32_t *out_size);
	int (*close_crypto_session)(void *dev, uint64_t session_id);
};

/** Per-vring session state tracked by the request handler. */
struct uvh_backend_vring_state {
	bool started;		/**< between SET_VRING_KICK and GET_VRING_BASE */
	bool enabled;		/**< SET_VRING_ENABLE (or auto without PROTOCOL_FEATURES) */
	uint32_t num;		/**< last SET_VRING_NUM */
};

/** One back-end connection. */
struct uvh_backend_req;

/**
 * Handle requests arriving on connected socket @fd (ownership taken) for
 * the device @dev, which declares @max_queues queues (1 to
 * UVH_BACKEND_MAX_QUEUES). Returns NULL with errno set on failure (fd
 * closed).
 */
struct uvh_backend_req *uvh_backend_req_new(int fd,
					    const struct uvh_backend_handler_ops *ops,
					    void *dev, uint32_t max_queues);
/** Close the connection and free. */
void uvh_backend_req_free(struct uvh_backend_req *req);

/** The endpoint (socket fd for a poller; io_uring recvmsg driving). */
struct uvh_endpoint *uvh_backend_req_endpoint(struct uvh_backend_req *req);

/**
 * Read one request (blocking unless the endpoint is non-blocking), handle
 * it and reply. Returns 0, -EAGAIN (non-blocking, nothing complete yet) or
 * another negative errno: the connection must be closed.
 */
int uvh_backend_req_handle(struct uvh_backend_req *req);

/**
 * Handle an already received message (e.g. assembled through io_uring);
 * takes its fds. Same return convention as uvh_backend_req_handle().
 */
int uvh_backend_req_process(struct uvh_backend_req *req, struct uvh_msg *msg);

/** Virtio features the front-end acked (SET_FEATURES). */
uint64_t uvh_backend_req_features(const struct uvh_backend_req *req);
/** Protocol features in force (offered & acked). */
uint64_t uvh_backend_req_protocol_features(const struct uvh_backend_req *req);
/** Session state of vring @index (NULL when out of range). */
const struct uvh_backend_vring_state *
uvh_backend_req_vring(const struct uvh_backend_req *req, uint32_t index);

#ifdef __cplusplus
}
#endif

#endif
