/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the request tables of the vhost-user spec and the checks that
 * only need the table (size, fd count). State checks live with the roles.
 */
#include <errno.h>
#include <stddef.h>
#include <unistd.h>

#include "log.h"
#include "message.h"

#define PF(name)	UVH_PROTOCOL_F_##name
#define NOGATE		-1

/* One row: (name, size rule, min, max, fd rule, reply rule, reply min,
 * reply max, protocol feature gate, virtio feature gate). */
#define ROW(name_, size_, min_, max_, fds_, reply_, rmin_, rmax_, gate_, feat_) \
	[UVH_REQ_##name_] = { .name = #name_, .size_rule = UVH_SIZE_##size_, \
		.size_min = min_, .size_max = max_, .fd_rule = UVH_FDS_##fds_, \
		.reply_rule = UVH_REPLY_##reply_, .reply_size_min = rmin_, \
		.reply_size_max = rmax_, .gate_protocol = gate_, .gate_feature = feat_ }

static const struct uvh_request_info frontend_requests[UVH_REQ_MAX] = {
	ROW(GET_FEATURES,	EXACT, 0, 0,	NONE, BODY, 8, 8,	NOGATE, NOGATE),
	ROW(SET_FEATURES,	EXACT, 8, 8,	NONE, ACK, 0, 0,	NOGATE, NOGATE),
	ROW(SET_OWNER,		EXACT, 0, 0,	NONE, ACK, 0, 0,	NOGATE, NOGATE),
	ROW(RESET_OWNER,	EXACT, 0, 0,	NONE, ACK, 0, 0,	NOGATE, NOGATE),
	ROW(SET_MEM_TABLE,	MEM_TABLE, 8, 264, REGIONS, ACK, 0, 0,	NOGATE, NOGATE),
	/* QEMU expects an empty reply, DPDK sends one: accept 0 or a u64. */
	ROW(SET_LOG_BASE,	EXACT, 16, 16,	LOG, LOG, 0, 8,		NOGATE, NOGATE),
	/* The spec says no payload; tolerate a u64 as some senders do. */
	ROW(SET_LOG_FD,		RANGE, 0, 8,	ONE, ACK, 0, 0,		NOGATE, NOGATE),
	ROW(SET_VRING_NUM,	EXACT, 8, 8,	NONE, ACK, 0, 0,	NOGATE, NOGATE),
	ROW(SET_VRING_ADDR,	EXACT, 40, 40,	NONE, ACK, 0, 0,	NOGATE, NOGATE),
	ROW(SET_VRING_BASE,	EXACT, 8, 8,	NONE, ACK, 0, 0,	NOGATE, NOGATE),
	ROW(GET_VRING_BASE,	EXACT, 8, 8,	NONE, BODY, 8, 8,	NOGATE, NOGATE),
	ROW(SET_VRING_KICK,	EXACT, 8, 8,	VRING, ACK, 0, 0,	NOGATE, NOGATE),
	ROW(SET_VRING_CALL,	EXACT, 8, 8,	VRING, ACK, 0, 0,	NOGATE, NOGATE),
	ROW(SET_VRING_ERR,	EXACT, 8, 8,	VRING, ACK, 0, 0,	NOGATE, NOGATE),
	ROW(GET_PROTOCOL_FEATURES, EXACT, 0, 0,	NONE, BODY, 8, 8,	NOGATE, NOGATE),
	ROW(SET_PROTOCOL_FEATURES, EXACT, 8, 8,	NONE, ACK, 0, 0,	NOGATE, NOGATE),
	ROW(GET_QUEUE_NUM,	EXACT, 0, 0,	NONE, BODY, 8, 8,	PF(MQ), NOGATE),
	ROW(SET_VRING_ENABLE,	EXACT, 8, 8,	NONE, ACK, 0, 0,	NOGATE, UVH_F_PROTOCOL_FEATURES),
	ROW(SEND_RARP,		EXACT, 8, 8,	NONE, ACK, 0, 0,	PF(RARP), NOGATE),
	ROW(NET_SET_MTU,	EXACT, 8, 8,	NONE, ACK, 0, 0,	PF(NET_MTU), NOGATE),
	ROW(SET_BACKEND_REQ_FD,	EXACT, 0, 0,	ONE, ACK, 0, 0,		PF(BACKEND_REQ), NOGATE),
	ROW(IOTLB_MSG,		RANGE, UVH_IOTLB_MIN_SIZE, 32, NONE, BODY, 8, 8,
				NOGATE, UVH_VIRTIO_F_IOMMU_PLATFORM),
	ROW(SET_VRING_ENDIAN,	EXACT, 8, 8,	NONE, ACK, 0, 0,	PF(CROSS_ENDIAN), NOGATE),
	ROW(GET_CONFIG,		CONFIG, 12, 268, NONE, BODY, 12, 268,	PF(CONFIG), NOGATE),
	ROW(SET_CONFIG,		CONFIG, 12, 268, NONE, ACK, 0, 0,	PF(CONFIG), NOGATE),
	ROW(CREATE_CRYPTO_SESSION, RANGE, 8, UVH_MSG_MAX_PAYLOAD, NONE, BODY, 8,
				UVH_MSG_MAX_PAYLOAD, PF(CRYPTO_SESSION), NOGATE),
	ROW(CLOSE_CRYPTO_SESSION, EXACT, 8, 8,	NONE, ACK, 0, 0,	PF(CRYPTO_SESSION), NOGATE),
	ROW(POSTCOPY_ADVISE,	EXACT, 0, 0,	NONE, BODY, 0, 8,	PF(PAGEFAULT), NOGATE),
	ROW(POSTCOPY_LISTEN,	EXACT, 0, 0,	NONE, ACK, 0, 0,	PF(PAGEFAULT), NOGATE),
	ROW(POSTCOPY_END,	EXACT, 0, 0,	NONE, BODY, 8, 8,	PF(PAGEFAULT), NOGATE),
	ROW(GET_INFLIGHT_FD,	RANGE, UVH_INFLIGHT_MIN_SIZE, 24, NONE, BODY,
				UVH_INFLIGHT_MIN_SIZE, 24, PF(INFLIGHT_SHMFD), NOGATE),
	ROW(SET_INFLIGHT_FD,	RANGE, UVH_INFLIGHT_MIN_SIZE, 24, ONE, ACK, 0, 0,
				PF(INFLIGHT_SHMFD), NOGATE),
	ROW(GPU_SET_SOCKET,	EXACT, 0, 0,	ONE, ACK, 0, 0,		NOGATE, NOGATE),
	ROW(RESET_DEVICE,	EXACT, 0, 0,	NONE, ACK, 0, 0,	PF(RESET_DEVICE), NOGATE),
	ROW(VRING_KICK,		EXACT, 8, 8,	NONE, ACK, 0, 0,	PF(INBAND_NOTIFICATIONS), NOGATE),
	ROW(GET_MAX_MEM_SLOTS,	EXACT, 0, 0,	NONE, BODY, 8, 8,	PF(CONFIGURE_MEM_SLOTS), NOGATE),
	ROW(ADD_MEM_REG,	EXACT, 40, 40,	ONE, ACK, 0, 0,		PF(CONFIGURE_MEM_SLOTS), NOGATE),
	ROW(REM_MEM_REG,	EXACT, 40, 40,	OPTIONAL, ACK, 0, 0,	PF(CONFIGURE_MEM_SLOTS), NOGATE),
	ROW(SET_STATUS,		EXACT, 8, 8,	NONE, ACK, 0, 0,	PF(STATUS), NOGATE),
	ROW(GET_STATUS,		EXACT, 0, 0,	NONE, BODY, 8, 8,	PF(STATUS), NOGATE),
	ROW(GET_SHARED_OBJECT,	EXACT, 16, 16,	NONE, BODY, 0, 16,	PF(SHARED_OBJECT), NOGATE),
	ROW(SET_DEVICE_STATE_FD, EXACT, 8, 8,	ONE, BODY, 8, 8,	PF(DEVICE_STATE), NOGATE),
	ROW(CHECK_DEVICE_STATE,	EXACT, 0, 0,	NONE, BODY, 8, 8,	PF(DEVICE_STATE), NOGATE),
	ROW(GET_SHMEM_CONFIG,	EXACT, 0, 0,	NONE, BODY, 8, 2056,	PF(SHMEM), NOGATE),
	ROW(GET_VRING_BASE_SKIP_DRAIN, EXACT, 8, 8, NONE, BODY, 8, 8,
				PF(GET_VRING_BASE_SKIP_DRAIN), NOGATE),
};
#undef ROW

#define ROW(name_, size_, min_, max_, fds_, reply_, rmin_, rmax_, gate_) \
	[UVH_BACKEND_REQ_##name_] = { .name = #name_, .size_rule = UVH_SIZE_##size_, \
		.size_min = min_, .size_max = max_, .fd_rule = UVH_FDS_##fds_, \
		.reply_rule = UVH_REPLY_##reply_, .reply_size_min = rmin_, \
		.reply_size_max = rmax_, .gate_protocol = gate_, .gate_feature = NOGATE }

static const struct uvh_request_info backend_requests[UVH_BACKEND_REQ_MAX] = {
	ROW(IOTLB_MSG,		RANGE, UVH_IOTLB_MIN_SIZE, 32, NONE, ACK, 0, 0, NOGATE),
	ROW(CONFIG_CHANGE_MSG,	EXACT, 0, 0,	NONE, ACK, 0, 0,	PF(CONFIG)),
	ROW(VRING_HOST_NOTIFIER_MSG, EXACT, 24, 24, OPTIONAL, ACK, 0, 0, PF(HOST_NOTIFIER)),
	ROW(VRING_CALL,		EXACT, 8, 8,	NONE, ACK, 0, 0,	PF(INBAND_NOTIFICATIONS)),
	ROW(VRING_ERR,		EXACT, 8, 8,	NONE, ACK, 0, 0,	PF(INBAND_NOTIFICATIONS)),
	ROW(SHARED_OBJECT_ADD,	EXACT, 16, 16,	NONE, ACK, 0, 0,	PF(SHARED_OBJECT)),
	ROW(SHARED_OBJECT_REMOVE, EXACT, 16, 16, NONE, ACK, 0, 0,	PF(SHARED_OBJECT)),
	ROW(SHARED_OBJECT_LOOKUP, EXACT, 16, 16, NONE, BODY, 8, 8,	PF(SHARED_OBJECT)),
	ROW(SHMEM_MAP,		EXACT, 40, 40,	ONE, ACK, 0, 0,		PF(SHMEM)),
	ROW(SHMEM_UNMAP,	EXACT, 40, 40,	NONE, ACK, 0, 0,	PF(SHMEM)),
};
#undef ROW

static const char *const protocol_feature_names[UVH_PROTOCOL_F_COUNT] = {
#define UVH_X_(name, bit) [bit] = #name,
	UVH_PROTOCOL_FEATURES(UVH_X_)
#undef UVH_X_
};

const struct uvh_request_info *uvh_frontend_request_info(uint32_t request)
{
	if (request == 0 || request >= UVH_REQ_MAX)
		return NULL;
	return &frontend_requests[request];
}

const struct uvh_request_info *uvh_backend_request_info(uint32_t request)
{
	if (request == 0 || request >= UVH_BACKEND_REQ_MAX)
		return NULL;
	return &backend_requests[request];
}

const char *uvh_frontend_request_name(uint32_t request)
{
	const struct uvh_request_info *info = uvh_frontend_request_info(request);

	return info ? info->name : "UNKNOWN";
}

const char *uvh_backend_request_name(uint32_t request)
{
	const struct uvh_request_info *info = uvh_backend_request_info(request);

	return info ? info->name : "UNKNOWN";
}

const char *uvh_protocol_feature_name(unsigned int bit)
{
	return bit < UVH_PROTOCOL_F_COUNT ? protocol_feature_names[bit] : NULL;
}

void uvh_msg_close_fds(struct uvh_msg *msg)
{
	for (unsigned int i = 0; i < msg->nfds && i < UVH_MSG_MAX_FDS; i++)
		if (msg->fds[i] >= 0)
			close(msg->fds[i]);
	msg->nfds = 0;
}

int uvh_msg_check_size(const struct uvh_request_info *info,
		       const struct uvh_msg *msg, bool reply)
{
	uint32_t size = msg->hdr.size;
	uint32_t lo = reply ? info->reply_size_min : info->size_min;
	uint32_t hi = reply ? info->reply_size_max : info->size_max;
	int rule = info->size_rule;

	/* Replies have their own bounds: a config reply follows the config
	 * rule, every other one is a range (an ack is exactly a u64). */
	if (reply && !(rule == UVH_SIZE_CONFIG && info->reply_rule == UVH_REPLY_BODY))
		rule = UVH_SIZE_RANGE;
	if (reply && info->reply_rule == UVH_REPLY_ACK)
		lo = hi = 8;
	if (size > UVH_MSG_MAX_PAYLOAD)
		goto bad;
	switch (rule) {
	case UVH_SIZE_EXACT:
		if (size != lo)
			goto bad;
		break;
	case UVH_SIZE_RANGE:
		if (size < lo || size > hi)
			goto bad;
		break;
	case UVH_SIZE_CONFIG:
		/* The head's size field must match what was actually sent. */
		if (size < UVH_CONFIG_HEAD_SIZE ||
		    msg->payload.config.size > UVH_CONFIG_MAX_SIZE ||
		    size != UVH_CONFIG_HEAD_SIZE + msg->payload.config.size)
			goto bad;
		break;
	case UVH_SIZE_MEM_TABLE:
		/* Senders give 8 + 32 * nregions bytes; tolerate the full
		 * 8-region struct as well (the unused tail is ignored). */
		if (size < 8 || msg->payload.mem_table.nregions > UVH_MEMORY_MAX_NREGIONS ||
		    size < 8 + sizeof(struct uvh_mem_region) * msg->payload.mem_table.nregions ||
		    size > sizeof(struct uvh_mem_table))
			goto bad;
		break;
	default:
		goto bad;
	}
	return 0;
bad:
	UVH_ERR("%s%s: payload size %u is invalid", info->name, reply ? " reply" : "", size);
	return -EMSGSIZE;
}

void uvh_msg_expected_fds(const struct uvh_request_info *info,
			  const struct uvh_msg *msg, uint64_t protocol_features,
			  unsigned int *min, unsigned int *max)
{
	unsigned int lo = 0, hi = 0;

	switch (info->fd_rule) {
	case UVH_FDS_ONE:
		lo = hi = 1;
		break;
	case UVH_FDS_OPTIONAL:
		hi = 1;
		break;
	case UVH_FDS_VRING:
		if (!(msg->payload.u64 & UVH_VRING_NOFD_MASK))
			lo = hi = 1;
		break;
	case UVH_FDS_REGIONS:
		/* Size already checked, so nregions <= 8. */
		lo = hi = msg->payload.mem_table.nregions;
		break;
	case UVH_FDS_LOG:
		if (protocol_features & (1ull << UVH_PROTOCOL_F_LOG_SHMFD))
			lo = hi = 1;
		break;
	default:
		break;
	}
	*min = lo;
	*max = hi;
}
