/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the vhost-user wire format.
 *
 * Every front-end -> back-end request of the current spec (ids 1-45), every
 * back-end -> front-end request (ids 1-10), every protocol feature bit
 * (0-23), the 12-byte header and every payload struct, plus one table per
 * direction describing each request: its payload size rule, the fds it may
 * or must carry, whether it always replies, and which feature gates it.
 *
 * All fields are in native byte order (the spec says so). Structs are packed
 * and their sizes asserted, because they are written to and read from the
 * socket byte for byte.
 */
#ifndef UVHOST_MESSAGE_H
#define UVHOST_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "virtio.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- header ------------------------------------------------------------ */

/** Bits 0-1 of the header flags: the protocol version, must be 1. */
#define UVH_FLAG_VERSION_MASK	0x3u
#define UVH_FLAG_VERSION	0x1u
/** Set on every reply. */
#define UVH_FLAG_REPLY		0x4u
/** Asks for a u64 ack (REPLY_ACK protocol feature). */
#define UVH_FLAG_NEED_REPLY	0x8u
/** Every other bit is reserved and rejected. */
#define UVH_FLAG_RESERVED_MASK	(~0xfu)

/** The message header. */
struct uvh_msg_header {
	uint32_t request;	/**< request id (per direction) */
	uint32_t flags;		/**< UVH_FLAG_* */
	uint32_t size;		/**< payload bytes that follow */
} __attribute__((packed));
_Static_assert(sizeof(struct uvh_msg_header) == 12, "header is 12 bytes");

#define UVH_MSG_HEADER_SIZE	12u
/** Largest payload accepted (the largest spec payload, GET_SHMEM_CONFIG's
 * reply, is 2056 bytes; rust-vmm uses the same 4 KiB limit). */
#define UVH_MSG_MAX_PAYLOAD	4096u
/** Most fds one message may carry (QEMU, libvhost-user and DPDK use 8). */
#define UVH_MSG_MAX_FDS		8u
/** Regions in one SET_MEM_TABLE message. */
#define UVH_MEMORY_MAX_NREGIONS	8u
/** Memory slots offered through CONFIGURE_MEM_SLOTS (as libvhost-user). */
#define UVH_MAX_MEM_SLOTS	509u

/* ---- vhost feature bits in the virtio feature word (virtio's own: virtio.h) */

#define UVH_F_LOG_ALL			26	/**< VHOST_F_LOG_ALL */
#define UVH_F_PROTOCOL_FEATURES		30	/**< VHOST_USER_F_PROTOCOL_FEATURES */
#define UVH_LOG_PAGE			0x1000u

/** u64 payload of SET_VRING_KICK/CALL/ERR: bits 0-7 index, bit 8 no fd. */
#define UVH_VRING_IDX_MASK	0xffu
#define UVH_VRING_NOFD_MASK	0x100u
/** vring addr flags: log used ring writes. */
#define UVH_VRING_F_LOG		0x1u

/* ---- protocol feature bits ---------------------------------------------- */

#define UVH_PROTOCOL_FEATURES(X) \
	X(MQ, 0) \
	X(LOG_SHMFD, 1) \
	X(RARP, 2) \
	X(REPLY_ACK, 3) \
	X(NET_MTU, 4) \
	X(BACKEND_REQ, 5) \
	X(CROSS_ENDIAN, 6) \
	X(CRYPTO_SESSION, 7) \
	X(PAGEFAULT, 8) \
	X(CONFIG, 9) \
	X(BACKEND_SEND_FD, 10) \
	X(HOST_NOTIFIER, 11) \
	X(INFLIGHT_SHMFD, 12) \
	X(RESET_DEVICE, 13) \
	X(INBAND_NOTIFICATIONS, 14) \
	X(CONFIGURE_MEM_SLOTS, 15) \
	X(STATUS, 16) \
	X(XEN_MMAP, 17) \
	X(SHARED_OBJECT, 18) \
	X(DEVICE_STATE, 19) \
	X(GET_VRING_BASE_INFLIGHT, 20) \
	X(GPA_ADDRESSES, 21) \
	X(SHMEM, 22) \
	X(GET_VRING_BASE_SKIP_DRAIN, 23)

/** Protocol feature bit numbers: UVH_PROTOCOL_F_MQ = 0, ... */
enum uvh_protocol_feature {
#define UVH_X_(name, bit) UVH_PROTOCOL_F_##name = bit,
	UVH_PROTOCOL_FEATURES(UVH_X_)
#undef UVH_X_
	UVH_PROTOCOL_F_COUNT
};

/* ---- front-end -> back-end requests ------------------------------------- */

#define UVH_FRONTEND_REQUESTS(X) \
	X(GET_FEATURES, 1) \
	X(SET_FEATURES, 2) \
	X(SET_OWNER, 3) \
	X(RESET_OWNER, 4) \
	X(SET_MEM_TABLE, 5) \
	X(SET_LOG_BASE, 6) \
	X(SET_LOG_FD, 7) \
	X(SET_VRING_NUM, 8) \
	X(SET_VRING_ADDR, 9) \
	X(SET_VRING_BASE, 10) \
	X(GET_VRING_BASE, 11) \
	X(SET_VRING_KICK, 12) \
	X(SET_VRING_CALL, 13) \
	X(SET_VRING_ERR, 14) \
	X(GET_PROTOCOL_FEATURES, 15) \
	X(SET_PROTOCOL_FEATURES, 16) \
	X(GET_QUEUE_NUM, 17) \
	X(SET_VRING_ENABLE, 18) \
	X(SEND_RARP, 19) \
	X(NET_SET_MTU, 20) \
	X(SET_BACKEND_REQ_FD, 21) \
	X(IOTLB_MSG, 22) \
	X(SET_VRING_ENDIAN, 23) \
	X(GET_CONFIG, 24) \
	X(SET_CONFIG, 25) \
	X(CREATE_CRYPTO_SESSION, 26) \
	X(CLOSE_CRYPTO_SESSION, 27) \
	X(POSTCOPY_ADVISE, 28) \
	X(POSTCOPY_LISTEN, 29) \
	X(POSTCOPY_END, 30) \
	X(GET_INFLIGHT_FD, 31) \
	X(SET_INFLIGHT_FD, 32) \
	X(GPU_SET_SOCKET, 33) \
	X(RESET_DEVICE, 34) \
	X(VRING_KICK, 35) \
	X(GET_MAX_MEM_SLOTS, 36) \
	X(ADD_MEM_REG, 37) \
	X(REM_MEM_REG, 38) \
	X(SET_STATUS, 39) \
	X(GET_STATUS, 40) \
	X(GET_SHARED_OBJECT, 41) \
	X(SET_DEVICE_STATE_FD, 42) \
	X(CHECK_DEVICE_STATE, 43) \
	X(GET_SHMEM_CONFIG, 44) \
	X(GET_VRING_BASE_SKIP_DRAIN, 45)

/** Front-end -> back-end request ids: UVH_REQ_GET_FEATURES = 1, ... */
enum uvh_frontend_request {
	UVH_REQ_NONE = 0,
#define UVH_X_(name, id) UVH_REQ_##name = id,
	UVH_FRONTEND_REQUESTS(UVH_X_)
#undef UVH_X_
	UVH_REQ_MAX	/**< one past the last id */
};

/* ---- back-end -> front-end requests ------------------------------------- */

#define UVH_BACKEND_REQUESTS(X) \
	X(IOTLB_MSG, 1) \
	X(CONFIG_CHANGE_MSG, 2) \
	X(VRING_HOST_NOTIFIER_MSG, 3) \
	X(VRING_CALL, 4) \
	X(VRING_ERR, 5) \
	X(SHARED_OBJECT_ADD, 6) \
	X(SHARED_OBJECT_REMOVE, 7) \
	X(SHARED_OBJECT_LOOKUP, 8) \
	X(SHMEM_MAP, 9) \
	X(SHMEM_UNMAP, 10)

/** Back-end -> front-end request ids: UVH_BACKEND_REQ_IOTLB_MSG = 1, ... */
enum uvh_backend_request {
	UVH_BACKEND_REQ_NONE = 0,
#define UVH_X_(name, id) UVH_BACKEND_REQ_##name = id,
	UVH_BACKEND_REQUESTS(UVH_X_)
#undef UVH_X_
	UVH_BACKEND_REQ_MAX	/**< one past the last id */
};

/* ---- payloads ------------------------------------------------------------ */

/** vring state: SET_VRING_NUM/BASE/ENABLE/ENDIAN, GET_VRING_BASE, VRING_KICK,
 * and the back-end's VRING_CALL/ERR. */
struct uvh_vring_state {
	uint32_t index;
	uint32_t num;
} __attribute__((packed));
_Static_assert(sizeof(struct uvh_vring_state) == 8, "vring state");

/** SET_VRING_ADDR. Addresses are front-end virtual addresses, IOVAs with
 * VIRTIO_F_IOMMU_PLATFORM, GPAs with GPA_ADDRESSES. */
struct uvh_vring_addr {
	uint32_t index;
	uint32_t flags;		/**< UVH_VRING_F_LOG */
	uint64_t desc_user_addr;
	uint64_t used_user_addr;
	uint64_t avail_user_addr;
	uint64_t log_guest_addr;
} __attribute__((packed));
_Static_assert(sizeof(struct uvh_vring_addr) == 40, "vring addr");

/** One guest memory region. */
struct uvh_mem_region {
	uint64_t guest_phys_addr;
	uint64_t memory_size;
	uint64_t userspace_addr;
	uint64_t mmap_offset;
} __attribute__((packed));
_Static_assert(sizeof(struct uvh_mem_region) == 32, "memory region");

/** SET_MEM_TABLE: nregions regions (one fd each, in order). The message may
 * be shorter than this struct: 8 + 32 * nregions bytes. */
struct uvh_mem_table {
	uint32_t nregions;
	uint32_t padding;
	struct uvh_mem_region regions[UVH_MEMORY_MAX_NREGIONS];
} __attribute__((packed));
_Static_assert(sizeof(struct uvh_mem_table) == 264, "memory table");

/** ADD_MEM_REG / REM_MEM_REG. */
struct uvh_mem_single {
	uint64_t padding;
	struct uvh_mem_region region;
} __attribute__((packed));
_Static_assert(sizeof(struct uvh_mem_single) == 40, "single region");

/** SET_LOG_BASE. */
struct uvh_dirty_log_area {
	uint64_t mmap_size;
	uint64_t mmap_offset;
} __attribute__((packed));
_Static_assert(sizeof(struct uvh_dirty_log_area) == 16, "log");

/** IOTLB perm and type values. */
enum uvh_iotlb_perm { UVH_IOTLB_NONE = 0, UVH_IOTLB_RO = 1, UVH_IOTLB_WO = 2, UVH_IOTLB_RW = 3 };
enum uvh_iotlb_type {
	UVH_IOTLB_MISS = 1, UVH_IOTLB_UPDATE = 2, UVH_IOTLB_INVALIDATE = 3,
	UVH_IOTLB_ACCESS_FAIL = 4,
};

/** IOTLB_MSG both ways. QEMU and DPDK send the C struct with its natural
 * 6-byte tail padding (32 bytes); rust-vmm sends it packed (26 bytes). We
 * send 32 and accept both. */
struct uvh_iotlb {
	uint64_t iova;
	uint64_t size;
	uint64_t uaddr;
	uint8_t perm;		/**< enum uvh_iotlb_perm */
	uint8_t type;		/**< enum uvh_iotlb_type */
	uint8_t padding[6];
} __attribute__((packed));
_Static_assert(sizeof(struct uvh_iotlb) == 32, "iotlb");
#define UVH_IOTLB_MIN_SIZE	26u

/** GET_CONFIG / SET_CONFIG: a 12-byte head then size bytes of config. */
#define UVH_CONFIG_MAX_SIZE	256u
enum uvh_config_flags { UVH_CONFIG_WRITABLE = 0, UVH_CONFIG_MIGRATION = 1 };
struct uvh_config {
	uint32_t offset;
	uint32_t size;
	uint32_t flags;		/**< enum uvh_config_flags */
	uint8_t region[UVH_CONFIG_MAX_SIZE];
} __attribute__((packed));
#define UVH_CONFIG_HEAD_SIZE	12u
_Static_assert(sizeof(struct uvh_config) == 12 + 256, "config");

/** VRING_HOST_NOTIFIER_MSG. */
struct uvh_vring_area {
	uint64_t u64;		/**< bits 0-7 index, bit 8 no fd */
	uint64_t size;
	uint64_t offset;
} __attribute__((packed));
_Static_assert(sizeof(struct uvh_vring_area) == 24, "vring area");

/** GET/SET_INFLIGHT_FD. QEMU and DPDK send 24 bytes (natural padding),
 * rust-vmm 20 (packed): we send 24 and accept both. */
struct uvh_inflight {
	uint64_t mmap_size;
	uint64_t mmap_offset;
	uint16_t num_queues;
	uint16_t queue_size;
	uint32_t padding;
} __attribute__((packed));
_Static_assert(sizeof(struct uvh_inflight) == 24, "inflight");
#define UVH_INFLIGHT_MIN_SIZE	20u

/** Shared object UUID (first three fields big endian, as RFC 4122). */
struct uvh_shared_object {
	uint8_t uuid[16];
} __attribute__((packed));
_Static_assert(sizeof(struct uvh_shared_object) == 16, "uuid");

/** SET_DEVICE_STATE_FD. */
enum uvh_device_state_direction { UVH_DEVICE_STATE_SAVE = 0, UVH_DEVICE_STATE_LOAD = 1 };
enum uvh_device_state_phase { UVH_DEVICE_STATE_STOPPED = 0 };
struct uvh_device_state {
	uint32_t direction;
	uint32_t phase;
} __attribute__((packed));
_Static_assert(sizeof(struct uvh_device_state) == 8, "device state");
/** SET_DEVICE_STATE_FD reply: bits 0-7 error, bit 8 = no fd returned. */
#define UVH_DEVICE_STATE_ERR_MASK	0xffu
#define UVH_DEVICE_STATE_NOFD		0x100u

/** BACKEND_SHMEM_MAP / UNMAP. */
struct uvh_shmem_map {
	uint8_t shmid;
	uint8_t padding[7];
	uint64_t fd_offset;
	uint64_t shm_offset;
	uint64_t len;
	uint64_t flags;		/**< 0 read-only, 1 read-write */
} __attribute__((packed));
_Static_assert(sizeof(struct uvh_shmem_map) == 40, "shmem map");

/** GET_SHMEM_CONFIG reply. */
#define UVH_SHMEM_MAX_REGIONS	256u
struct uvh_shmem_config {
	uint32_t nregions;
	uint32_t padding;
	uint64_t memory_sizes[UVH_SHMEM_MAX_REGIONS];
} __attribute__((packed));
_Static_assert(sizeof(struct uvh_shmem_config) == 2056, "shmem config");

/** Every payload shape, for a message buffer. */
union uvh_msg_payload {
	uint64_t u64;
	struct uvh_vring_state state;
	struct uvh_vring_addr addr;
	struct uvh_mem_table mem_table;
	struct uvh_mem_single mem_single;
	struct uvh_dirty_log_area log;
	struct uvh_iotlb iotlb;
	struct uvh_config config;
	struct uvh_vring_area area;
	struct uvh_inflight inflight;
	struct uvh_shared_object object;
	struct uvh_device_state device_state;
	struct uvh_shmem_map shmem_map;
	struct uvh_shmem_config shmem_config;
	uint8_t raw[UVH_MSG_MAX_PAYLOAD];
};

/** One whole message as received or to be sent: header, payload, fds.
 * A received message owns its fds until they are handed on or closed. */
struct uvh_msg {
	struct uvh_msg_header hdr;
	union uvh_msg_payload payload;
	int fds[UVH_MSG_MAX_FDS];
	unsigned int nfds;
};

/** Close every fd a message still holds and forget them. */
void uvh_msg_close_fds(struct uvh_msg *msg);

/* ---- the request tables -------------------------------------------------- */

/** How the payload size of a request is checked. */
enum uvh_size_rule {
	UVH_SIZE_EXACT,		/**< size == size_min */
	UVH_SIZE_RANGE,		/**< size_min <= size <= size_max */
	UVH_SIZE_CONFIG,	/**< 12-byte head + head.size bytes, <= 256 */
	UVH_SIZE_MEM_TABLE,	/**< 8 + 32 * nregions, nregions <= 8 */
};

/** How many fds a request carries. */
enum uvh_fd_rule {
	UVH_FDS_NONE,		/**< none */
	UVH_FDS_ONE,		/**< exactly one */
	UVH_FDS_OPTIONAL,	/**< zero or one (REM_MEM_REG; host notifier) */
	UVH_FDS_VRING,		/**< one unless UVH_VRING_NOFD_MASK is set */
	UVH_FDS_REGIONS,	/**< one per region of the memory table */
	UVH_FDS_LOG,		/**< one when LOG_SHMFD is negotiated */
};

/** How a request is answered. */
enum uvh_reply_rule {
	UVH_REPLY_ACK,		/**< a u64 ack only when NEED_REPLY + REPLY_ACK */
	UVH_REPLY_BODY,		/**< always a reply with a body */
	UVH_REPLY_LOG,		/**< SET_LOG_BASE: a reply when LOG_SHMFD */
};

/** What the spec says of one request id. */
struct uvh_request_info {
	const char *name;		/**< the spec's name, e.g. "SET_VRING_KICK" */
	uint8_t size_rule;		/**< enum uvh_size_rule */
	uint8_t fd_rule;		/**< enum uvh_fd_rule */
	uint8_t reply_rule;		/**< enum uvh_reply_rule */
	int8_t gate_protocol;		/**< protocol feature bit, or -1 */
	int8_t gate_feature;		/**< virtio feature bit, or -1 */
	uint16_t size_min;
	uint16_t size_max;
	uint16_t reply_size_min;	/**< for UVH_REPLY_BODY */
	uint16_t reply_size_max;
};

/** Table entry of a front-end -> back-end request, NULL for an unknown id. */
const struct uvh_request_info *uvh_frontend_request_info(uint32_t request);
/** Table entry of a back-end -> front-end request, NULL for an unknown id. */
const struct uvh_request_info *uvh_backend_request_info(uint32_t request);
/** Spec name of a front-end request ("UNKNOWN" when out of range). */
const char *uvh_frontend_request_name(uint32_t request);
/** Spec name of a back-end request ("UNKNOWN" when out of range). */
const char *uvh_backend_request_name(uint32_t request);
/** Spec name of a protocol feature bit (NULL when unknown). */
const char *uvh_protocol_feature_name(unsigned int bit);

/**
 * Check a message's payload size against the rule of @info.
 * Returns 0 or -EMSGSIZE (logged naming the request). A reply is checked
 * with @reply true against the reply size rule.
 */
int uvh_msg_check_size(const struct uvh_request_info *info,
		       const struct uvh_msg *msg, bool reply);

/** The fd count a request must carry given its payload and the negotiated
 * protocol features: sets *min and *max. */
void uvh_msg_expected_fds(const struct uvh_request_info *info,
			  const struct uvh_msg *msg, uint64_t protocol_features,
			  unsigned int *min, unsigned int *max);

#ifdef __cplusplus
}
#endif

#endif
