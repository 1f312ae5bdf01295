/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the front-end's one call per request: each encodes its payload,
 * goes through the generic request path (frontend.c), decodes its reply and
 * records into the session journal what a restarted back-end must hear
 * again (frontend_session.c).
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "frontend_internal.h"

/* ---- call helpers ------------------------------------------------------------ */

/* The usual call: lock, request, unlock (for requests without a body). */
static int fe_call(struct uvh_frontend *fe, uint32_t request, const void *payload,
		   uint32_t size, const int *fds, unsigned int nfds)
{
	int r;

	if (!fe)
		return -EINVAL;
	r = fe_lock(fe);
	if (r)
		return r;
	r = uvh__fe_request(fe, request, payload, size, fds, nfds);
	uvh_msg_close_fds(&fe->reply);
	fe_unlock(fe);
	return r;
}

/* A request whose reply body is a single u64. */
static int fe_call_u64(struct uvh_frontend *fe, uint32_t request, const void *payload,
		       uint32_t size, const int *fds, unsigned int nfds, uint64_t *out)
{
	int r;

	if (!fe || !out)
		return -EINVAL;
	r = fe_lock(fe);
	if (r)
		return r;
	r = uvh__fe_request(fe, request, payload, size, fds, nfds);
	if (r == 0)
		*out = fe->reply.payload.u64;
	uvh_msg_close_fds(&fe->reply);
	fe_unlock(fe);
	return r;
}

/* A request whose reply is a u64 verdict: 0 success, else -EIO. */
static int fe_call_verdict(struct uvh_frontend *fe, uint32_t request, const void *payload,
			   uint32_t size)
{
	uint64_t verdict = 0;
	int r = fe_call_u64(fe, request, payload, size, NULL, 0, &verdict);

	if (r == 0 && verdict) {
		UVH_WARN("front-end: %s failed in the back-end (0x%llx)",
			 uvh_frontend_request_name(request), (unsigned long long)verdict);
		return -EIO;
	}
	return r;
}

/* ---- one call per request ---------------------------------------------------- */

int uvh_frontend_set_owner(struct uvh_frontend *fe)
{
	return fe_call(fe, UVH_REQ_SET_OWNER, NULL, 0, NULL, 0);
}

/* RESET_OWNER / RESET_DEVICE: the journal forgets what the back-end did. */
static int fe_reset(struct uvh_frontend *fe, uint32_t request)
{
	int r = fe_call(fe, request, NULL, 0, NULL, 0);

	if (!r)
		fe_session_reset(fe->sess);
	return r;
}

int uvh_frontend_reset_owner(struct uvh_frontend *fe)
{
	return fe_reset(fe, UVH_REQ_RESET_OWNER);
}

int uvh_frontend_get_features(struct uvh_frontend *fe, uint64_t *features)
{
	return fe_call_u64(fe, UVH_REQ_GET_FEATURES, NULL, 0, NULL, 0, features);
}

/* SET_FEATURES / SET_PROTOCOL_FEATURES: send @value and, once the back-end
 * took it, remember it in @in_force (under the lock, like the request). */
static int fe_set_feature_word(struct uvh_frontend *fe, uint32_t request, uint64_t value,
			       uint64_t *in_force)
{
	int r = fe_lock(fe);

	if (r)
		return r;
	r = uvh__fe_request(fe, request, &value, sizeof(value), NULL, 0);
	if (r == 0) {
		*in_force = value;
		if (request == UVH_REQ_SET_FEATURES)
			fe_session_features(fe->sess, value);
		else
			fe_session_protocol_features(fe->sess, value);
	}
	fe_unlock(fe);
	return r;
}

int uvh_frontend_set_features(struct uvh_frontend *fe, uint64_t features)
{
	if (!fe)
		return -EINVAL;
	return fe_set_feature_word(fe, UVH_REQ_SET_FEATURES, features, &fe->features);
}

int uvh_frontend_get_protocol_features(struct uvh_frontend *fe, uint64_t *pf)
{
	return fe_call_u64(fe, UVH_REQ_GET_PROTOCOL_FEATURES, NULL, 0, NULL, 0, pf);
}

int uvh_frontend_set_protocol_features(struct uvh_frontend *fe, uint64_t pf)
{
	if (!fe)
		return -EINVAL;
	/* Acked with the features in force before this message. */
	return fe_set_feature_word(fe, UVH_REQ_SET_PROTOCOL_FEATURES, pf,
				   &fe->protocol_features);
}

int uvh_frontend_set_mem_table(struct uvh_frontend *fe, const struct uvh_mem_region *regions,
			       const int *fds, unsigned int n)
{
	struct uvh_mem_table table;
	int r;

	if (n > UVH_MEMORY_MAX_NREGIONS || (n && (!regions || !fds)))
		return -EINVAL;
	for (unsigned int i = 0; i < n; i++)
		if (fds[i] < 0)
			return -EBADF;
	memset(&table, 0, sizeof(table));
	table.nregions = n;
	if (n)
		memcpy(table.regions, regions, n * sizeof(*regions));
	r = fe_call(fe, UVH_REQ_SET_MEM_TABLE, &table,
		    8 + (uint32_t)(n * sizeof(struct uvh_mem_region)), fds, n);
	if (!r)
		fe_session_mem_table(fe->sess, regions, fds, n);
	return r;
}

int uvh_frontend_add_mem_reg(struct uvh_frontend *fe, const struct uvh_mem_region *region, int fd)
{
	struct uvh_mem_single single = { 0 };
	int r;

	if (!region)
		return -EINVAL;
	if (fd < 0)
		return -EBADF;
	single.region = *region;
	r = fe_call(fe, UVH_REQ_ADD_MEM_REG, &single, sizeof(single), &fd, 1);
	if (!r)
		fe_session_add_mem(fe->sess, region, fd);
	return r;
}

int uvh_frontend_rem_mem_reg(struct uvh_frontend *fe, const struct uvh_mem_region *region)
{
	struct uvh_mem_single single = { 0 };
	int r;

	if (!region)
		return -EINVAL;
	single.region = *region;
	r = fe_call(fe, UVH_REQ_REM_MEM_REG, &single, sizeof(single), NULL, 0);
	if (!r)
		fe_session_rem_mem(fe->sess, region);
	return r;
}

int uvh_frontend_get_max_mem_slots(struct uvh_frontend *fe, uint64_t *slots)
{
	return fe_call_u64(fe, UVH_REQ_GET_MAX_MEM_SLOTS, NULL, 0, NULL, 0, slots);
}

int uvh_frontend_set_log_base(struct uvh_frontend *fe, const struct uvh_dirty_log_area *log, int fd)
{
	bool shmfd;
	int r;

	if (!fe || !log)
		return -EINVAL;
	r = fe_lock(fe);
	if (r)
		return r;
	/* The fd goes exactly when LOG_SHMFD is in force. */
	shmfd = fe->protocol_features & PF_BIT(LOG_SHMFD);
	if (shmfd && fd < 0)
		r = -EBADF;
	else if (!shmfd && fd >= 0)
		r = -EINVAL;
	else
		r = uvh__fe_request(fe, UVH_REQ_SET_LOG_BASE, log, sizeof(*log), &fd,
				    shmfd ? 1 : 0);
	uvh_msg_close_fds(&fe->reply);
	fe_unlock(fe);
	return r;
}

int uvh_frontend_set_log_fd(struct uvh_frontend *fe, int fd)
{
	if (fd < 0)
		return -EBADF;
	return fe_call(fe, UVH_REQ_SET_LOG_FD, NULL, 0, &fd, 1);
}

static int fe_vring_state(struct uvh_frontend *fe, uint32_t request, uint32_t index,
			  uint32_t num)
{
	struct uvh_vring_state state = { .index = index, .num = num };
	int r = fe_call(fe, request, &state, sizeof(state), NULL, 0);

	if (!r)
		fe_session_vring_state(fe->sess, request, index, num);
	return r;
}

int uvh_frontend_set_vring_num(struct uvh_frontend *fe, uint32_t index, uint32_t num)
{
	return fe_vring_state(fe, UVH_REQ_SET_VRING_NUM, index, num);
}

int uvh_frontend_set_vring_addr(struct uvh_frontend *fe, const struct uvh_vring_addr *addr)
{
	int r;

	if (!addr)
		return -EINVAL;
	r = fe_call(fe, UVH_REQ_SET_VRING_ADDR, addr, sizeof(*addr), NULL, 0);
	if (!r)
		fe_session_vring_addr(fe->sess, addr);
	return r;
}

int uvh_frontend_set_vring_base(struct uvh_frontend *fe, uint32_t index, uint32_t base)
{
	return fe_vring_state(fe, UVH_REQ_SET_VRING_BASE, index, base);
}

static int fe_get_vring_base(struct uvh_frontend *fe, uint32_t request, uint32_t index,
			     uint32_t *base)
{
	struct uvh_vring_state state = { .index = index };
	int r;

	if (!fe || !base)
		return -EINVAL;
	r = fe_lock(fe);
	if (r)
		return r;
	r = uvh__fe_request(fe, request, &state, sizeof(state), NULL, 0);
	if (r == 0) {
		if (fe->reply.payload.state.index != index)
			r = fe_bad_reply(fe, request, "answers another vring");
		else {
			*base = fe->reply.payload.state.num;
			fe_session_vring_stopped(fe->sess, index, *base);
		}
	}
	uvh_msg_close_fds(&fe->reply);
	fe_unlock(fe);
	return r;
}

int uvh_frontend_get_vring_base(struct uvh_frontend *fe, uint32_t index, uint32_t *base)
{
	return fe_get_vring_base(fe, UVH_REQ_GET_VRING_BASE, index, base);
}

int uvh_frontend_get_vring_base_skip_drain(struct uvh_frontend *fe, uint32_t index,
					   uint32_t *base)
{
	return fe_get_vring_base(fe, UVH_REQ_GET_VRING_BASE_SKIP_DRAIN, index, base);
}

/* SET_VRING_KICK/CALL/ERR: index in bits 0-7, the no-fd bit without one. */
static int fe_vring_fd(struct uvh_frontend *fe, uint32_t request, uint32_t index, int fd)
{
	uint64_t u64 = index;
	int r;

	if (index > UVH_VRING_IDX_MASK)
		return -EINVAL;
	if (fd < 0)
		u64 |= UVH_VRING_NOFD_MASK;
	r = fe_call(fe, request, &u64, sizeof(u64), &fd, fd < 0 ? 0 : 1);
	if (!r)
		fe_session_vring_fd(fe->sess, request, index, fd);
	return r;
}

int uvh_frontend_set_vring_kick(struct uvh_frontend *fe, uint32_t index, int fd)
{
	return fe_vring_fd(fe, UVH_REQ_SET_VRING_KICK, index, fd);
}

int uvh_frontend_set_vring_call(struct uvh_frontend *fe, uint32_t index, int fd)
{
	return fe_vring_fd(fe, UVH_REQ_SET_VRING_CALL, index, fd);
}

int uvh_frontend_set_vring_err(struct uvh_frontend *fe, uint32_t index, int fd)
{
	return fe_vring_fd(fe, UVH_REQ_SET_VRING_ERR, index, fd);
}

int uvh_frontend_set_vring_enable(struct uvh_frontend *fe, uint32_t index, bool enable)
{
	return fe_vring_state(fe, UVH_REQ_SET_VRING_ENABLE, index, enable ? 1 : 0);
}

int uvh_frontend_set_vring_endian(struct uvh_frontend *fe, uint32_t index, uint32_t endian)
{
	return fe_vring_state(fe, UVH_REQ_SET_VRING_ENDIAN, index, endian);
}

int uvh_frontend_vring_kick(struct uvh_frontend *fe, uint32_t index)
{
	return fe_vring_state(fe, UVH_REQ_VRING_KICK, index, 0);
}

int uvh_frontend_get_queue_num(struct uvh_frontend *fe, uint64_t *num)
{
	return fe_call_u64(fe, UVH_REQ_GET_QUEUE_NUM, NULL, 0, NULL, 0, num);
}

int uvh_frontend_get_config(struct uvh_frontend *fe, uint32_t offset, uint32_t size,
			    uint32_t flags, uint8_t *buf)
{
	struct uvh_config cfg;
	int r;

	if (!fe || size > UVH_CONFIG_MAX_SIZE || (size && !buf))
		return -EINVAL;
	/* The request carries size zero bytes for the back-end to fill. */
	memset(&cfg, 0, sizeof(cfg));
	cfg.offset = offset;
	cfg.size = size;
	cfg.flags = flags;
	r = fe_lock(fe);
	if (r)
		return r;
	r = uvh__fe_request(fe, UVH_REQ_GET_CONFIG, &cfg, UVH_CONFIG_HEAD_SIZE + size, NULL, 0);
	if (r == 0) {
		const struct uvh_config *got = &fe->reply.payload.config;

		if (got->offset != offset || got->size != size)
			r = fe_bad_reply(fe, UVH_REQ_GET_CONFIG, "another config range");
		else if (size)
			memcpy(buf, got->region, size);
	}
	uvh_msg_close_fds(&fe->reply);
	fe_unlock(fe);
	return r;
}

int uvh_frontend_set_config(struct uvh_frontend *fe, uint32_t offset, uint32_t size,
			    uint32_t flags, const uint8_t *buf)
{
	struct uvh_config cfg;

	if (size > UVH_CONFIG_MAX_SIZE || (size && !buf))
		return -EINVAL;
	memset(&cfg, 0, sizeof(cfg));
	cfg.offset = offset;
	cfg.size = size;
	cfg.flags = flags;
	if (size)
		memcpy(cfg.region, buf, size);
	return fe_call(fe, UVH_REQ_SET_CONFIG, &cfg, UVH_CONFIG_HEAD_SIZE + size, NULL, 0);
}

int uvh_frontend_net_set_mtu(struct uvh_frontend *fe, uint16_t mtu)
{
	uint64_t u64 = mtu;

	return fe_call(fe, UVH_REQ_NET_SET_MTU, &u64, sizeof(u64), NULL, 0);
}

int uvh_frontend_send_rarp(struct uvh_frontend *fe, const uint8_t mac[6])
{
	uint8_t u64[8] = { 0 };

	if (!mac)
		return -EINVAL;
	memcpy(u64, mac, 6);
	return fe_call(fe, UVH_REQ_SEND_RARP, u64, sizeof(u64), NULL, 0);
}

int uvh_frontend_set_status(struct uvh_frontend *fe, uint8_t status)
{
	uint64_t u64 = status;
	int r = fe_call(fe, UVH_REQ_SET_STATUS, &u64, sizeof(u64), NULL, 0);

	if (!r)
		fe_session_status(fe->sess, status);
	return r;
}

int uvh_frontend_get_status(struct uvh_frontend *fe, uint8_t *status)
{
	int r;

	if (!fe || !status)
		return -EINVAL;
	r = fe_lock(fe);
	if (r)
		return r;
	r = uvh__fe_request(fe, UVH_REQ_GET_STATUS, NULL, 0, NULL, 0);
	if (r == 0) {
		if (fe->reply.payload.u64 > 0xff)
			r = fe_bad_reply(fe, UVH_REQ_GET_STATUS, "status over 8 bits");
		else
			*status = (uint8_t)fe->reply.payload.u64;
	}
	uvh_msg_close_fds(&fe->reply);
	fe_unlock(fe);
	return r;
}

int uvh_frontend_reset_device(struct uvh_frontend *fe)
{
	return fe_reset(fe, UVH_REQ_RESET_DEVICE);
}

int uvh_frontend_get_inflight_fd(struct uvh_frontend *fe, const struct uvh_inflight *in,
				 struct uvh_inflight *out, int *fd)
{
	int r;

	if (!fe || !in || !out || !fd)
		return -EINVAL;
	*fd = -1;
	r = fe_lock(fe);
	if (r)
		return r;
	r = uvh__fe_request(fe, UVH_REQ_GET_INFLIGHT_FD, in, sizeof(*in), NULL, 0);
	if (r == 0) {
		const struct uvh_inflight *got = &fe->reply.payload.inflight;

		if (!got->mmap_size && fe->reply.nfds == 0) {
			/* No inflight area (QEMU reads it so): out zeroed, no fd. */
			memset(out, 0, sizeof(*out));
		} else if (!got->mmap_size || fe->reply.nfds != 1) {
			r = fe_bad_reply(fe, UVH_REQ_GET_INFLIGHT_FD, "area and fd disagree");
		} else {
			/* 20 (packed) or 24 bytes: the padding stays zero. */
			memset(out, 0, sizeof(*out));
			memcpy(out, got, fe->reply.hdr.size);
			*fd = fe_take_fd(fe);
			/* the area a restarted back-end gets back */
			fe_session_inflight(fe->sess, out, *fd);
		}
	}
	uvh_msg_close_fds(&fe->reply);
	fe_unlock(fe);
	return r;
}

int uvh_frontend_set_inflight_fd(struct uvh_frontend *fe, const struct uvh_inflight *in, int fd)
{
	int r;

	if (!in)
		return -EINVAL;
	if (fd < 0)
		return -EBADF;
	r = fe_call(fe, UVH_REQ_SET_INFLIGHT_FD, in, sizeof(*in), &fd, 1);
	if (!r)
		fe_session_inflight(fe->sess, in, fd);
	return r;
}

int uvh_frontend_iotlb_msg(struct uvh_frontend *fe, const struct uvh_iotlb *msg)
{
	struct uvh_iotlb m;

	if (!msg || msg->perm > UVH_IOTLB_RW ||
	    (msg->type != UVH_IOTLB_UPDATE && msg->type != UVH_IOTLB_INVALIDATE))
		return -EINVAL;
	m = *msg;
	memset(m.padding, 0, sizeof(m.padding));
	return fe_call_verdict(fe, UVH_REQ_IOTLB_MSG, &m, sizeof(m));
}

int uvh_frontend_set_device_state_fd(struct uvh_frontend *fe, uint32_t direction,
				     uint32_t phase, int fd, int *out_fd)
{
	struct uvh_device_state ds = { .direction = direction, .phase = phase };
	int r;

	if (!fe || !out_fd)
		return -EINVAL;
	*out_fd = -1;
	if ((direction != UVH_DEVICE_STATE_SAVE && direction != UVH_DEVICE_STATE_LOAD) ||
	    phase != UVH_DEVICE_STATE_STOPPED)
		return -EINVAL;
	if (fd < 0)
		return -EBADF;
	r = fe_lock(fe);
	if (r)
		return r;
	r = uvh__fe_request(fe, UVH_REQ_SET_DEVICE_STATE_FD, &ds, sizeof(ds), &fd, 1);
	if (r == 0) {
		uint64_t v = fe->reply.payload.u64;
		bool nofd = v & UVH_DEVICE_STATE_NOFD;

		if (v & ~(uint64_t)(UVH_DEVICE_STATE_ERR_MASK | UVH_DEVICE_STATE_NOFD)) {
			r = fe_bad_reply(fe, UVH_REQ_SET_DEVICE_STATE_FD, "reserved bits");
		} else if (v & UVH_DEVICE_STATE_ERR_MASK) {
			UVH_WARN("front-end: SET_DEVICE_STATE_FD failed in the back-end (%llu)",
				 (unsigned long long)(v & UVH_DEVICE_STATE_ERR_MASK));
			r = -EIO;
		} else if (fe->reply.nfds != (nofd ? 0u : 1u)) {
			r = fe_bad_reply(fe, UVH_REQ_SET_DEVICE_STATE_FD,
					 "fd does not match the no-fd bit");
		} else {
			*out_fd = fe_take_fd(fe);
		}
	}
	uvh_msg_close_fds(&fe->reply);
	fe_unlock(fe);
	return r;
}

int uvh_frontend_check_device_state(struct uvh_frontend *fe)
{
	return fe_call_verdict(fe, UVH_REQ_CHECK_DEVICE_STATE, NULL, 0);
}

/* A reply whose point is its one fd. Without one, an empty body or a
 * non-zero u64 is the back-end's refusal (-EIO); a success claimed without
 * the fd is a protocol error. */
static int fe_fd_reply(struct uvh_frontend *fe, uint32_t request, int *fd)
{
	if (fe->reply.nfds == 0 && fe->reply.hdr.size == 0) {
		UVH_WARN("front-end: %s failed in the back-end",
			 uvh_frontend_request_name(request));
		return -EIO;
	}
	if (fe->reply.hdr.size >= 8 && fe->reply.payload.u64) {
		UVH_WARN("front-end: %s failed in the back-end (0x%llx)",
			 uvh_frontend_request_name(request),
			 (unsigned long long)fe->reply.payload.u64);
		uvh_msg_close_fds(&fe->reply);
		return -EIO;
	}
	if (fe->reply.nfds != 1)
		return fe_bad_reply(fe, request, "no fd");
	*fd = fe_take_fd(fe);
	return 0;
}

int uvh_frontend_get_shared_object(struct uvh_frontend *fe,
				   const struct uvh_shared_object *uuid, int *fd)
{
	int r;

	if (!fe || !uuid || !fd)
		return -EINVAL;
	*fd = -1;
	r = fe_lock(fe);
	if (r)
		return r;
	r = uvh__fe_request(fe, UVH_REQ_GET_SHARED_OBJECT, uuid, sizeof(*uuid), NULL, 0);
	if (r == 0)
		r = fe_fd_reply(fe, UVH_REQ_GET_SHARED_OBJECT, fd);
	uvh_msg_close_fds(&fe->reply);
	fe_unlock(fe);
	return r;
}

int uvh_frontend_get_shmem_config(struct uvh_frontend *fe, struct uvh_shmem_config *config)
{
	int r;

	if (!fe || !config)
		return -EINVAL;
	r = fe_lock(fe);
	if (r)
		return r;
	r = uvh__fe_request(fe, UVH_REQ_GET_SHMEM_CONFIG, NULL, 0, NULL, 0);
	if (r == 0) {
		const struct uvh_shmem_config *got = &fe->reply.payload.shmem_config;

		if (got->nregions > UVH_SHMEM_MAX_REGIONS ||
		    fe->reply.hdr.size < 8 + 8 * got->nregions) {
			r = fe_bad_reply(fe, UVH_REQ_GET_SHMEM_CONFIG, "bad region count");
		} else {
			memset(config, 0, sizeof(*config));
			memcpy(config, got, fe->reply.hdr.size);
		}
	}
	uvh_msg_close_fds(&fe->reply);
	fe_unlock(fe);
	return r;
}

int uvh_frontend_gpu_set_socket(struct uvh_frontend *fe, int fd)
{
	if (fd < 0)
		return -EBADF;
	return fe_call(fe, UVH_REQ_GPU_SET_SOCKET, NULL, 0, &fd, 1);
}

int uvh_frontend_postcopy_advise(struct uvh_frontend *fe, int *userfault_fd)
{
	int r;

	if (!fe || !userfault_fd)
		return -EINVAL;
	*userfault_fd = -1;
	r = fe_lock(fe);
	if (r)
		return r;
	r = uvh__fe_request(fe, UVH_REQ_POSTCOPY_ADVISE, NULL, 0, NULL, 0);
	if (r == 0)
		r = fe_fd_reply(fe, UVH_REQ_POSTCOPY_ADVISE, userfault_fd);
	uvh_msg_close_fds(&fe->reply);
	fe_unlock(fe);
	return r;
}

int uvh_frontend_postcopy_listen(struct uvh_frontend *fe)
{
	return fe_call(fe, UVH_REQ_POSTCOPY_LISTEN, NULL, 0, NULL, 0);
}

int uvh_frontend_postcopy_end(struct uvh_frontend *fe)
{
	return fe_call_verdict(fe, UVH_REQ_POSTCOPY_END, NULL, 0);
}

int uvh_frontend_create_crypto_session(struct uvh_frontend *fe, const void *in,
				       uint32_t size, void *out, uint32_t *out_size)
{
	int r;

	if (!fe || !in || !out || !out_size || size < 8 || size > UVH_MSG_MAX_PAYLOAD)
		return -EINVAL;
	r = fe_lock(fe);
	if (r)
		return r;
	r = uvh__fe_request(fe, UVH_REQ_CREATE_CRYPTO_SESSION, in, size, NULL, 0);
	if (r == 0) {
		if (fe->reply.hdr.size > *out_size) {
			r = -ENOBUFS;
		} else {
			memcpy(out, fe->reply.payload.raw, fe->reply.hdr.size);
			*out_size = fe->reply.hdr.size;
		}
	}
	uvh_msg_close_fds(&fe->reply);
	fe_unlock(fe);
	return r;
}

int uvh_frontend_close_crypto_session(struct uvh_frontend *fe, uint64_t session_id)
{
	return fe_call(fe, UVH_REQ_CLOSE_CRYPTO_SESSION, &session_id, sizeof(session_id),
		       NULL, 0);
}
