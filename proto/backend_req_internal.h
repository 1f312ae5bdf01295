/* SPDX-License-Identifier: MIT */
/*
 * uvhost: what the back-end request handler's files share. Not installed.
 *
 *   backend_req.c           one message: the table, validation, answers,
 *                           the session's life cycle
 *   backend_req_handlers.c  one handler per request
 */
#ifndef UVHOST_BACKEND_REQ_INTERNAL_H
#define UVHOST_BACKEND_REQ_INTERNAL_H

#include "backend_req.h"

#define MAX_VRING_NUM	32768u	/* virtio's largest queue size */
#define MTU_MIN		68u	/* virtio-net's smallest MTU */
#define MTU_MAX		65535u

/* Where a request names its vring. */
enum vring_field {
	IDX_NONE,
	IDX_STATE,	/* u32 index first (vring state, vring addr) */
	IDX_FILE,	/* u64 bits 0-7, bit 8 = no fd (SET_VRING_KICK/CALL/ERR) */
};

/* What a reply-body request answers when it fails. */
enum fail_reply {
	FAIL_CLOSE,	/* nothing the spec defines: close the connection */
	FAIL_EMPTY,	/* an empty reply (GET_CONFIG, POSTCOPY_ADVISE) */
	FAIL_U64,	/* u64 result: the positive errno */
	FAIL_DEVSTATE,	/* SET_DEVICE_STATE_FD: error bits | no fd */
	FAIL_INFLIGHT,	/* GET_INFLIGHT_FD: mmap_size 0, no fd */
	FAIL_CRYPTO,	/* CREATE_CRYPTO_SESSION: session id -1 */
};

/* The reply a handler prepares. */
struct reply {
	uint32_t size;
	int fd;			/* device-provided, closed after sending */
	union uvh_msg_payload body;
};

struct uvh_backend_req {
	struct uvh_endpoint ep;
	const struct uvh_backend_handler_ops *ops;
	void *dev;
	uint32_t max_queues;
	uint64_t features;		/* acked virtio features */
	uint64_t protocol_features;	/* offered & acked */
	bool protocol_negotiated;	/* SET_PROTOCOL_FEATURES accepted */
	struct uvh_backend_vring_state vrings[UVH_BACKEND_MAX_QUEUES];
	/* The guest memory map as the device accepted it, so that regions
	 * added later can be checked against it. */
	unsigned int nregions;
	struct uvh_mem_region regions[UVH_MAX_MEM_SLOTS];
	/* How many ADD_MEM_REG of the very same region are outstanding: QEMU
	 * keeps one vhost device per queue pair on one socket, and each adds
	 * (and later removes) the same regions. */
	uint16_t region_refs[UVH_MAX_MEM_SLOTS];
	struct uvh_msg msg;		/* uvh_backend_req_handle()'s buffer */
	struct reply rep;
};

struct handler {
	int (*fn)(struct uvh_backend_req *req, struct uvh_msg *msg);
	uint8_t vring;		/* enum vring_field */
	bool stopped;		/* the ring must be stopped */
	uint8_t fail;		/* enum fail_reply */
};

/*
 * (request, handler, where its vring index is, ring must be stopped,
 * answer on failure). Size, fd, gate and reply rules come from the spec
 * table of message.c; this adds what only the back-end's state knows.
 */
#define BACKEND_HANDLERS(X) \
	X(GET_FEATURES,		get_features,		NONE,	0, CLOSE) \
	X(SET_FEATURES,		set_features,		NONE,	0, CLOSE) \
	X(SET_OWNER,		set_owner,		NONE,	0, CLOSE) \
	X(RESET_OWNER,		reset_owner,		NONE,	0, CLOSE) \
	X(SET_MEM_TABLE,	set_mem_table,		NONE,	0, CLOSE) \
	X(SET_LOG_BASE,		set_log_base,		NONE,	0, CLOSE) \
	X(SET_LOG_FD,		set_log_fd,		NONE,	0, CLOSE) \
	X(SET_VRING_NUM,	set_vring_num,		STATE,	1, CLOSE) \
	X(SET_VRING_ADDR,	set_vring_addr,		STATE,	0, CLOSE) \
	X(SET_VRING_BASE,	set_vring_base,		STATE,	1, CLOSE) \
	X(GET_VRING_BASE,	get_vring_base,		STATE,	0, CLOSE) \
	X(SET_VRING_KICK,	set_vring_kick,		FILE,	0, CLOSE) \
	X(SET_VRING_CALL,	set_vring_call,		FILE,	0, CLOSE) \
	X(SET_VRING_ERR,	set_vring_err,		FILE,	0, CLOSE) \
	X(GET_PROTOCOL_FEATURES, get_protocol_features,	NONE,	0, CLOSE) \
	X(SET_PROTOCOL_FEATURES, set_protocol_features,	NONE,	0, CLOSE) \
	X(GET_QUEUE_NUM,	get_queue_num,		NONE,	0, CLOSE) \
	X(SET_VRING_ENABLE,	set_vring_enable,	STATE,	0, CLOSE) \
	X(SEND_RARP,		send_rarp,		NONE,	0, CLOSE) \
	X(NET_SET_MTU,		net_set_mtu,		NONE,	0, CLOSE) \
	X(SET_BACKEND_REQ_FD,	set_backend_req_fd,	NONE,	0, CLOSE) \
	X(IOTLB_MSG,		iotlb_msg,		NONE,	0, U64) \
	X(SET_VRING_ENDIAN,	set_vring_endian,	STATE,	1, CLOSE) \
	X(GET_CONFIG,		get_config,		NONE,	0, EMPTY) \
	X(SET_CONFIG,		set_config,		NONE,	0, CLOSE) \
	X(CREATE_CRYPTO_SESSION, create_crypto_session,	NONE,	0, CRYPTO) \
	X(CLOSE_CRYPTO_SESSION,	close_crypto_session,	NONE,	0, CLOSE) \
	X(POSTCOPY_ADVISE,	postcopy_advise,	NONE,	0, EMPTY) \
	X(POSTCOPY_LISTEN,	postcopy_listen,	NONE,	0, CLOSE) \
	X(POSTCOPY_END,		postcopy_end,		NONE,	0, U64) \
	X(GET_INFLIGHT_FD,	get_inflight_fd,	NONE,	0, INFLIGHT) \
	X(SET_INFLIGHT_FD,	set_inflight_fd,	NONE,	0, CLOSE) \
	X(GPU_SET_SOCKET,	gpu_set_socket,		NONE,	0, CLOSE) \
	X(RESET_DEVICE,		reset_device,		NONE,	0, CLOSE) \
	X(VRING_KICK,		vring_kick,		STATE,	0, CLOSE) \
	X(GET_MAX_MEM_SLOTS,	get_max_mem_slots,	NONE,	0, CLOSE) \
	X(ADD_MEM_REG,		add_mem_reg,		NONE,	0, CLOSE) \
	X(REM_MEM_REG,		rem_mem_reg,		NONE,	0, CLOSE) \
	X(SET_STATUS,		set_status,		NONE,	0, CLOSE) \
	X(GET_STATUS,		get_status,		NONE,	0, CLOSE) \
	X(GET_SHARED_OBJECT,	get_shared_object,	NONE,	0, U64) \
	X(SET_DEVICE_STATE_FD,	set_device_state_fd,	NONE,	0, DEVSTATE) \
	X(CHECK_DEVICE_STATE,	check_device_state,	NONE,	0, U64) \
	X(GET_SHMEM_CONFIG,	get_shmem_config,	NONE,	0, CLOSE) \
	X(GET_VRING_BASE_SKIP_DRAIN, get_vring_base_skip_drain, STATE, 0, CLOSE)

#define HANDLER_DECL(name, func_, ...) \
	int h_##func_(struct uvh_backend_req *req, struct uvh_msg *msg);
BACKEND_HANDLERS(HANDLER_DECL)
#undef HANDLER_DECL

/* Log why @msg is refused and return @err. */
__attribute__((format(printf, 3, 4)))
int req_reject(const struct uvh_msg *msg, int err, const char *fmt, ...);
/* The request's name, for logs. */
const char *req_name(const struct uvh_msg *msg);
/* The reply is a u64. */
void req_reply_u64(struct uvh_backend_req *req, uint64_t v);

#endif
