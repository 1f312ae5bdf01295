/* SPDX-License-Identifier: MIT */
/*
 * Front-end <-> back-end round trips over a real socket path: every
 * front-end call reaches a recording back-end handler with the exact
 * payload and fds, and the reply comes back. Plus the front-end's own
 * checks (bad replies, timeouts, a closed peer) against a scripted peer on
 * a socketpair.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backend_req.h"
#include "frontend.h"
#include "listener.h"
#include "log.h"
#include "message.h"
#include "t_fds.h"
#include "t_helpers.h"

#define PF(name)	(1ull << UVH_PROTOCOL_F_##name)
#define F(bit)		(1ull << (bit))

/* What the recording device offers: every protocol feature but XEN_MMAP. */
#define OFFERED_PF	(((1ull << UVH_PROTOCOL_F_COUNT) - 1) & ~PF(XEN_MMAP))
#define OFFERED_F	(F(UVH_F_PROTOCOL_FEATURES) | F(UVH_VIRTIO_F_IOMMU_PLATFORM) | \
			 F(UVH_VIRTIO_F_VERSION_1) | F(UVH_VIRTIO_F_RING_EVENT_IDX) | \
			 F(UVH_F_LOG_ALL))
#define QUEUES		4u

/* ---- the recording back-end ------------------------------------------------ */

struct rec {
	bool seen[UVH_REQ_MAX];
	uint32_t last;			/* last request handled */
	int fail;			/* every handler returns this */
	uint32_t quit_after;		/* back-end closes after this request */
	bool quit;
	uint64_t offered_features, offered_pf;
	uint64_t features, pf;		/* as set */
	uint32_t index, num;
	bool enable;
	struct uvh_vring_addr addr;
	struct uvh_mem_region regions[UVH_MEMORY_MAX_NREGIONS];
	int fds[UVH_MEMORY_MAX_NREGIONS];
	unsigned int n;
	struct uvh_mem_region region;
	struct uvh_dirty_log_area log;
	int fd;				/* last single fd received (-1 none) */
	uint8_t mac[6];
	uint16_t mtu;
	uint8_t status;
	struct uvh_iotlb iotlb;
	uint32_t cfg_offset, cfg_size, cfg_flags;
	uint8_t cfg[UVH_CONFIG_MAX_SIZE];
	struct uvh_inflight inflight;
	struct uvh_shared_object uuid;
	uint32_t direction, phase;
	bool return_state_fd;
	uint8_t crypto[64];
	uint32_t crypto_size;
	uint64_t session;
	int reply_fd;			/* fd the device hands out (dup'ed) */
	int chan_fd;			/* back-end channel socket */
	bool chan_poke;			/* GET_CONFIG first pokes the channel */
	int chan_poke_result;
};

static struct rec *seen(void *dev, uint32_t request)
{
	struct rec *rec = dev;

	rec->seen[request] = true;
	rec->last = request;
	if (request == rec->quit_after)
		rec->quit = true;
	return rec;
}

static void keep_fd(struct rec *rec, int fd)
{
	if (rec->fd >= 0)
		close(rec->fd);
	rec->fd = fd;
}

static int r_set_owner(void *dev)
{
	return seen(dev, UVH_REQ_SET_OWNER)->fail;
}

static int r_reset_owner(void *dev)
{
	return seen(dev, UVH_REQ_RESET_OWNER)->fail;
}

static int r_get_features(void *dev, uint64_t *features)
{
	struct rec *rec = seen(dev, UVH_REQ_GET_FEATURES);

	*features = rec->offered_features;
	return 0;
}

static int r_set_features(void *dev, uint64_t features)
{
	struct rec *rec = seen(dev, UVH_REQ_SET_FEATURES);

	rec->features = features;
	return rec->fail;
}

static int r_get_protocol_features(void *dev, uint64_t *pf)
{
	struct rec *rec = seen(dev, UVH_REQ_GET_PROTOCOL_FEATURES);

	*pf = rec->offered_pf;
	return 0;
}

static int r_set_protocol_features(void *dev, uint64_t pf)
{
	struct rec *rec = seen(dev, UVH_REQ_SET_PROTOCOL_FEATURES);

	rec->pf = pf;
	return rec->fail;
}

static int r_set_mem_table(void *dev, const struct uvh_mem_region *regions, const int *fds,
			   unsigned int n)
{
	struct rec *rec = seen(dev, UVH_REQ_SET_MEM_TABLE);

	rec->n = n;
	for (unsigned int i = 0; i < n; i++) {
		rec->regions[i] = regions[i];
		rec->fds[i] = fds[i];
	}
	return rec->fail;
}

static int r_set_log_base(void *dev, const struct uvh_dirty_log_area *log, int fd)
{
	struct rec *rec = seen(dev, UVH_REQ_SET_LOG_BASE);

	rec->log = *log;
	keep_fd(rec, fd);
	return rec->fail;
}

static int r_set_log_fd(void *dev, int fd)
{
	struct rec *rec = seen(dev, UVH_REQ_SET_LOG_FD);

	keep_fd(rec, fd);
	return rec->fail;
}

static int r_vring(void *dev, uint32_t request, uint32_t index, uint32_t num)
{
	struct rec *rec = seen(dev, request);

	rec->index = index;
	rec->num = num;
	return rec->fail;
}

static int r_set_vring_num(void *dev, uint32_t index, uint32_t num)
{
	return r_vring(dev, UVH_REQ_SET_VRING_NUM, index, num);
}

static int r_set_vring_addr(void *dev, const struct uvh_vring_addr *addr)
{
	struct rec *rec = seen(dev, UVH_REQ_SET_VRING_ADDR);

	rec->addr = *addr;
	return rec->fail;
}

static int r_set_vring_base(void *dev, uint32_t index, uint32_t base)
{
	return r_vring(dev, UVH_REQ_SET_VRING_BASE, index, base);
}

static int r_get_vring_base(void *dev, uint32_t index, uint32_t *base)
{
	*base = 0x1200 + index;
	return r_vring(dev, UVH_REQ_GET_VRING_BASE, index, 0);
}

static int r_get_vring_base_skip_drain(void *dev, uint32_t index, uint32_t *base)
{
	*base = 0x3400 + index;
	return r_vring(dev, UVH_REQ_GET_VRING_BASE_SKIP_DRAIN, index, 0);
}

static int r_vring_fd(void *dev, uint32_t request, uint32_t index, int fd)
{
	struct rec *rec = seen(dev, request);

	rec->index = index;
	keep_fd(rec, fd);
	return rec->fail;
}

static int r_set_vring_kick(void *dev, uint32_t index, int fd)
{
	return r_vring_fd(dev, UVH_REQ_SET_VRING_KICK, index, fd);
}

static int r_set_vring_call(void *dev, uint32_t index, int fd)
{
	return r_vring_fd(dev, UVH_REQ_SET_VRING_CALL, index, fd);
}

static int r_set_vring_err(void *dev, uint32_t index, int fd)
{
	return r_vring_fd(dev, UVH_REQ_SET_VRING_ERR, index, fd);
}

static int r_get_queue_num(void *dev, uint64_t *num)
{
	seen(dev, UVH_REQ_GET_QUEUE_NUM);
	*num = QUEUES;
	return 0;
}

static int r_set_vring_enable(void *dev, uint32_t index, bool enable)
{
	struct rec *rec = seen(dev, UVH_REQ_SET_VRING_ENABLE);

	rec->index = index;
	rec->enable = enable;
	return rec->fail;
}

static int r_send_rarp(void *dev, const uint8_t mac[6])
{
	struct rec *rec = seen(dev, UVH_REQ_SEND_RARP);

	memcpy(rec->mac, mac, 6);
	return rec->fail;
}

static int r_net_set_mtu(void *dev, uint16_t mtu)
{
	struct rec *rec = seen(dev, UVH_REQ_NET_SET_MTU);

	rec->mtu = mtu;
	return rec->fail;
}

static int r_set_backend_req_fd(void *dev, int fd)
{
	struct rec *rec = seen(dev, UVH_REQ_SET_BACKEND_REQ_FD);

	if (rec->chan_fd >= 0)
		close(rec->chan_fd);
	rec->chan_fd = fd;
	return rec->fail;
}

static int r_iotlb_msg(void *dev, const struct uvh_iotlb *msg)
{
	struct rec *rec = seen(dev, UVH_REQ_IOTLB_MSG);

	rec->iotlb = *msg;
	return rec->fail;
}

static int r_set_vring_endian(void *dev, uint32_t index, uint32_t endian)
{
	return r_vring(dev, UVH_REQ_SET_VRING_ENDIAN, index, endian);
}

/* Send a back-end request on the channel, wait for its ack (or not). */
static int chan_request(int fd, uint32_t request, uint32_t flags, const void *payload,
			uint32_t size, uint64_t *ack)
{
	struct uvh_msg_header hdr = { .request = request, .flags = flags, .size = size };
	uint8_t buf[64];
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	memcpy(buf, &hdr, sizeof(hdr));
	if (size)
		memcpy(buf + sizeof(hdr), payload, size);
	if (write(fd, buf, sizeof(hdr) + size) != (ssize_t)(sizeof(hdr) + size))
		return -errno;
	if (!ack)
		return 0;
	if (poll(&pfd, 1, 2000) != 1)
		return -ETIMEDOUT;
	if (read(fd, buf, 20) != 20)
		return -EIO;
	memcpy(&hdr, buf, sizeof(hdr));
	if (hdr.request != request || hdr.flags != (UVH_FLAG_REPLY | UVH_FLAG_VERSION) ||
	    hdr.size != 8)
		return -EPROTO;
	memcpy(ack, buf + sizeof(hdr), 8);
	return 0;
}

static int r_get_config(void *dev, uint32_t offset, uint32_t size, uint32_t flags,
			uint8_t *buf)
{
	struct rec *rec = seen(dev, UVH_REQ_GET_CONFIG);

	if (rec->chan_poke) {
		uint64_t ack = 1;
		int r;

		/* The front-end is now blocked on our reply: it must still
		 * serve the channel or this never returns. */
		r = chan_request(rec->chan_fd, UVH_BACKEND_REQ_CONFIG_CHANGE_MSG,
				 UVH_FLAG_VERSION | UVH_FLAG_NEED_REPLY, NULL, 0, &ack);
		rec->chan_poke_result = r ? r : (int)ack;
	}
	rec->cfg_offset = offset;
	rec->cfg_size = size;
	rec->cfg_flags = flags;
	for (uint32_t i = 0; i < size; i++)
		buf[i] = (uint8_t)((offset + i) ^ 0x5a);
	return rec->fail;
}

static int r_set_config(void *dev, uint32_t offset, uint32_t size, uint32_t flags,
			const uint8_t *buf)
{
	struct rec *rec = seen(dev, UVH_REQ_SET_CONFIG);

	rec->cfg_offset = offset;
	rec->cfg_size = size;
	rec->cfg_flags = flags;
	memcpy(rec->cfg, buf, size);
	return rec->fail;
}

static int r_postcopy_advise(void *dev, int *userfault_fd)
{
	struct rec *rec = seen(dev, UVH_REQ_POSTCOPY_ADVISE);

	if (rec->fail)
		return rec->fail;
	*userfault_fd = dup(rec->reply_fd);
	return 0;
}

static int r_postcopy_listen(void *dev)
{
	return seen(dev, UVH_REQ_POSTCOPY_LISTEN)->fail;
}

static int r_postcopy_end(void *dev)
{
	return seen(dev, UVH_REQ_POSTCOPY_END)->fail;
}

static int r_get_inflight_fd(void *dev, const struct uvh_inflight *in, struct uvh_inflight *out,
			     int *fd)
{
	struct rec *rec = seen(dev, UVH_REQ_GET_INFLIGHT_FD);

	rec->inflight = *in;
	if (rec->fail)
		return rec->fail;
	memset(out, 0, sizeof(*out));
	out->mmap_size = 0x2000;
	out->mmap_offset = 0x40;
	out->num_queues = in->num_queues;
	out->queue_size = in->queue_size;
	*fd = dup(rec->reply_fd);
	return 0;
}

static int r_set_inflight_fd(void *dev, const struct uvh_inflight *in, int fd)
{
	struct rec *rec = seen(dev, UVH_REQ_SET_INFLIGHT_FD);

	rec->inflight = *in;
	keep_fd(rec, fd);
	return rec->fail;
}

static int r_gpu_set_socket(void *dev, int fd)
{
	struct rec *rec = seen(dev, UVH_REQ_GPU_SET_SOCKET);

	keep_fd(rec, fd);
	return rec->fail;
}

static int r_reset_device(void *dev)
{
	return seen(dev, UVH_REQ_RESET_DEVICE)->fail;
}

static int r_vring_kick(void *dev, uint32_t index)
{
	return r_vring(dev, UVH_REQ_VRING_KICK, index, 0);
}

static int r_get_max_mem_slots(void *dev, uint64_t *slots)
{
	seen(dev, UVH_REQ_GET_MAX_MEM_SLOTS);
	*slots = 32;
	return 0;
}

static int r_add_mem_reg(void *dev, const struct uvh_mem_region *region, int fd)
{
	struct rec *rec = seen(dev, UVH_REQ_ADD_MEM_REG);

	rec->region = *region;
	keep_fd(rec, fd);
	return rec->fail;
}

static int r_rem_mem_reg(void *dev, const struct uvh_mem_region *region)
{
	struct rec *rec = seen(dev, UVH_REQ_REM_MEM_REG);

	rec->region = *region;
	return rec->fail;
}

static int r_set_status(void *dev, uint8_t status)
{
	struct rec *rec = seen(dev, UVH_REQ_SET_STATUS);

	rec->status = status;
	return rec->fail;
}

static int r_get_status(void *dev, uint8_t *status)
{
	struct rec *rec = seen(dev, UVH_REQ_GET_STATUS);

	*status = (uint8_t)(rec->status | 0x80);
	return rec->fail;
}

static int r_get_shared_object(void *dev, const struct uvh_shared_object *uuid, int *fd)
{
	struct rec *rec = seen(dev, UVH_REQ_GET_SHARED_OBJECT);

	rec->uuid = *uuid;
	if (rec->fail)
		return rec->fail;
	*fd = dup(rec->reply_fd);
	return 0;
}

static int r_set_device_state_fd(void *dev, uint32_t direction, uint32_t phase, int fd,
				 int *out_fd)
{
	struct rec *rec = seen(dev, UVH_REQ_SET_DEVICE_STATE_FD);

	rec->direction = direction;
	rec->phase = phase;
	keep_fd(rec, fd);
	if (rec->fail)
		return rec->fail;
	*out_fd = rec->return_state_fd ? dup(rec->reply_fd) : -1;
	return 0;
}

static int r_check_device_state(void *dev)
{
	return seen(dev, UVH_REQ_CHECK_DEVICE_STATE)->fail;
}

static int r_get_shmem_config(void *dev, struct uvh_shmem_config *config)
{
	struct rec *rec = seen(dev, UVH_REQ_GET_SHMEM_CONFIG);

	memset(config, 0, sizeof(*config));
	config->nregions = 2;
	config->memory_sizes[0] = 0x10000;
	config->memory_sizes[1] = 0x200000;
	return rec->fail;
}

static int r_create_crypto_session(void *dev, const uint8_t *in, uint32_t size, uint8_t *out,
				   uint32_t *out_size)
{
	struct rec *rec = seen(dev, UVH_REQ_CREATE_CRYPTO_SESSION);

	if (size > sizeof(rec->crypto))
		return -EINVAL;
	memcpy(rec->crypto, in, size);
	rec->crypto_size = size;
	/* The session id, as the spec's reply starts with it. */
	memset(out, 0, 16);
	out[0] = 0x77;
	out[8] = in[0];
	*out_size = 16;
	return rec->fail;
}

static int r_close_crypto_session(void *dev, uint64_t session_id)
{
	struct rec *rec = seen(dev, UVH_REQ_CLOSE_CRYPTO_SESSION);

	rec->session = session_id;
	return rec->fail;
}

static const struct uvh_backend_handler_ops recording_ops = {
	.set_owner = r_set_owner,
	.reset_owner = r_reset_owner,
	.get_features = r_get_features,
	.set_features = r_set_features,
	.get_protocol_features = r_get_protocol_features,
	.set_protocol_features = r_set_protocol_features,
	.set_mem_table = r_set_mem_table,
	.set_log_base = r_set_log_base,
	.set_log_fd = r_set_log_fd,
	.set_vring_num = r_set_vring_num,
	.set_vring_addr = r_set_vring_addr,
	.set_vring_base = r_set_vring_base,
	.get_vring_base = r_get_vring_base,
	.set_vring_kick = r_set_vring_kick,
	.set_vring_call = r_set_vring_call,
	.set_vring_err = r_set_vring_err,
	.get_queue_num = r_get_queue_num,
	.set_vring_enable = r_set_vring_enable,
	.send_rarp = r_send_rarp,
	.net_set_mtu = r_net_set_mtu,
	.set_backend_req_fd = r_set_backend_req_fd,
	.iotlb_msg = r_iotlb_msg,
	.set_vring_endian = r_set_vring_endian,
	.get_config = r_get_config,
	.set_config = r_set_config,
	.postcopy_advise = r_postcopy_advise,
	.postcopy_listen = r_postcopy_listen,
	.postcopy_end = r_postcopy_end,
	.get_inflight_fd = r_get_inflight_fd,
	.set_inflight_fd = r_set_inflight_fd,
	.gpu_set_socket = r_gpu_set_socket,
	.reset_device = r_reset_device,
	.vring_kick = r_vring_kick,
	.get_max_mem_slots = r_get_max_mem_slots,
	.add_mem_reg = r_add_mem_reg,
	.rem_mem_reg = r_rem_mem_reg,
	.set_status = r_set_status,
	.get_status = r_get_status,
	.get_shared_object = r_get_shared_object,
	.set_device_state_fd = r_set_device_state_fd,
	.check_device_state = r_check_device_state,
	.get_shmem_config = r_get_shmem_config,
	.get_vring_base_skip_drain = r_get_vring_base_skip_drain,
	.create_crypto_session = r_create_crypto_session,
	.close_crypto_session = r_close_crypto_session,
};

/* ---- a front-end connected to the recording back-end over a socket path ---- */

struct rt {
	char path[108];
	struct uvh_listener *listener;
	pthread_t thread;
	int be_result;
	struct rec rec;
	struct uvh_frontend *fe;
	int fds_before;
};

static void *backend_thread(void *arg)
{
	struct rt *rt = arg;
	struct uvh_backend_req *req;
	int fd, r;

	if (rt->listener) {
		fd = uvh_listener_accept(rt->listener, 5000);
		uvh_listener_close(rt->listener);
		rt->listener = NULL;
	} else {
		/* The back-end as the client: the front-end listens. */
		struct uvh_connect_opts copts = { .timeout_ms = 5000 };

		fd = uvh_connect(rt->path, &copts);
	}
	if (fd < 0) {
		rt->be_result = fd;
		return NULL;
	}
	req = uvh_backend_req_new(fd, &recording_ops, &rt->rec, QUEUES);
	if (!req) {
		rt->be_result = -errno;
		return NULL;
	}
	do
		r = uvh_backend_req_handle(req);
	while (r == 0 && !rt->rec.quit);
	rt->be_result = r;
	uvh_backend_req_free(req);
	return NULL;
}

static void rt_start(struct rt *rt)
{
	struct uvh_connect_opts copts = { .timeout_ms = 2000 };

	signal(SIGPIPE, SIG_IGN);
	memset(rt, 0, sizeof(*rt));
	rt->fds_before = t_count_fds();
	rt->rec.offered_features = OFFERED_F;
	rt->rec.offered_pf = OFFERED_PF;
	rt->rec.fd = -1;
	rt->rec.chan_fd = -1;
	rt->rec.reply_fd = t_memfd("reply", 4096);
	for (unsigned int i = 0; i < UVH_MEMORY_MAX_NREGIONS; i++)
		rt->rec.fds[i] = -1;
	t_socket_path(rt->path, sizeof(rt->path), "roundtrip");
	cr_assert_eq(uvh_listener_open(rt->path, NULL, &rt->listener), 0);
	cr_assert_eq(pthread_create(&rt->thread, NULL, backend_thread, rt), 0);
	cr_assert_eq(uvh_frontend_connect(rt->path, &copts, &rt->fe), 0);
	uvh_frontend_set_timeout(rt->fe, 3000);
}

/*
 * Requests without an ack may still be on their way: a request with a
 * reply body behind them proves the back-end handled them.
 */
static void rt_sync(struct rt *rt)
{
	uint64_t f;

	cr_assert_eq(uvh_frontend_get_features(rt->fe, &f), 0);
}

/* Start and negotiate everything the device offers. */
static void rt_start_all(struct rt *rt)
{
	uint64_t f, pf;

	rt_start(rt);
	cr_assert_eq(uvh_frontend_negotiate(rt->fe, ~0ull, ~0ull, &f, &pf), 0);
	cr_assert_eq(f, OFFERED_F);
	cr_assert_eq(pf, OFFERED_PF);
	rt_sync(rt);
	cr_assert_eq(rt->rec.pf, OFFERED_PF);
}

static void rt_stop(struct rt *rt)
{
	uvh_frontend_free(rt->fe);
	rt->fe = NULL;
	pthread_join(rt->thread, NULL);
	if (rt->rec.fd >= 0)
		close(rt->rec.fd);
	if (rt->rec.chan_fd >= 0)
		close(rt->rec.chan_fd);
	for (unsigned int i = 0; i < rt->rec.n; i++)
		if (rt->rec.fds[i] >= 0)
			close(rt->rec.fds[i]);
	close(rt->rec.reply_fd);
	cr_assert_eq(t_count_fds(), rt->fds_before, "fd leak: %d before, %d after",
		     rt->fds_before, t_count_fds());
}

/* The fd the back-end received is @mine; close the back-end's copy. */
static void assert_got_fd(struct rt *rt, int mine)
{
	cr_assert_geq(rt->rec.fd, 0, "the back-end got no fd");
	cr_assert(t_same_file(rt->rec.fd, mine), "the back-end got another file");
	close(rt->rec.fd);
	rt->rec.fd = -1;
}

/* ---- the requests, area by area ----------------------------------------------- */

static void do_features(struct rt *rt)
{
	uint64_t v;

	cr_assert_eq(uvh_frontend_get_features(rt->fe, &v), 0);
	cr_assert_eq(v, OFFERED_F);
	cr_assert_eq(uvh_frontend_set_features(rt->fe, OFFERED_F), 0);
	cr_assert_eq(rt->rec.features, OFFERED_F);
	cr_assert_eq(uvh_frontend_get_protocol_features(rt->fe, &v), 0);
	cr_assert_eq(v, OFFERED_PF);
	cr_assert_eq(uvh_frontend_set_protocol_features(rt->fe, OFFERED_PF), 0);
	cr_assert_eq(rt->rec.pf, OFFERED_PF);
	cr_assert_eq(uvh_frontend_set_owner(rt->fe), 0);
	cr_assert_eq(rt->rec.last, UVH_REQ_SET_OWNER);
	cr_assert_eq(uvh_frontend_reset_owner(rt->fe), 0);
	cr_assert_eq(rt->rec.last, UVH_REQ_RESET_OWNER);
	cr_assert_eq(uvh_frontend_get_queue_num(rt->fe, &v), 0);
	cr_assert_eq(v, QUEUES);
}

static void do_memory(struct rt *rt)
{
	struct uvh_mem_region regions[3];
	int fds[3];
	uint64_t slots;

	for (unsigned int i = 0; i < 3; i++) {
		regions[i] = (struct uvh_mem_region){
			.guest_phys_addr = 0x100000ull * (i + 1),
			.memory_size = 0x10000ull << i,
			.userspace_addr = 0x7f0000000000ull + 0x1000000ull * i,
			.mmap_offset = 0x1000ull * i,
		};
		fds[i] = t_memfd("region", 0x10000);
	}
	cr_assert_eq(uvh_frontend_set_mem_table(rt->fe, regions, fds, 3), 0);
	cr_assert_eq(rt->rec.n, 3);
	for (unsigned int i = 0; i < 3; i++) {
		cr_assert_eq(memcmp(&rt->rec.regions[i], &regions[i], sizeof(regions[i])), 0,
			     "region %u differs", i);
		cr_assert(t_same_file(rt->rec.fds[i], fds[i]), "region %u fd", i);
		close(rt->rec.fds[i]);
		rt->rec.fds[i] = -1;
	}
	rt->rec.n = 0;

	cr_assert_eq(uvh_frontend_get_max_mem_slots(rt->fe, &slots), 0);
	cr_assert_eq(slots, 32);
	regions[0].guest_phys_addr = 0x40000000;
	regions[0].userspace_addr = 0x7f0010000000;
	cr_assert_eq(uvh_frontend_add_mem_reg(rt->fe, &regions[0], fds[1]), 0);
	cr_assert_eq(memcmp(&rt->rec.region, &regions[0], sizeof(regions[0])), 0);
	assert_got_fd(rt, fds[1]);
	memset(&rt->rec.region, 0, sizeof(rt->rec.region));
	cr_assert_eq(uvh_frontend_rem_mem_reg(rt->fe, &regions[0]), 0);
	cr_assert_eq(rt->rec.last, UVH_REQ_REM_MEM_REG);
	cr_assert_eq(memcmp(&rt->rec.region, &regions[0], sizeof(regions[0])), 0);
	cr_assert_eq(rt->rec.fd, -1);
	for (unsigned int i = 0; i < 3; i++)
		close(fds[i]);
}

static void do_log(struct rt *rt)
{
	struct uvh_dirty_log_area log = { .mmap_size = 0x8000, .mmap_offset = 0x100 };
	int shm = t_memfd("log", 0x8000), efd = t_eventfd();

	/* LOG_SHMFD is negotiated: the fd goes and a reply comes back. */
	cr_assert_eq(uvh_frontend_set_log_base(rt->fe, &log, shm), 0);
	cr_assert_eq(rt->rec.log.mmap_size, 0x8000);
	cr_assert_eq(rt->rec.log.mmap_offset, 0x100);
	assert_got_fd(rt, shm);
	cr_assert_eq(uvh_frontend_set_log_fd(rt->fe, efd), 0);
	cr_assert_eq(rt->rec.last, UVH_REQ_SET_LOG_FD);
	assert_got_fd(rt, efd);
	close(shm);
	close(efd);
}

static void do_vrings(struct rt *rt)
{
	struct uvh_vring_addr addr = {
		.index = 1, .flags = UVH_VRING_F_LOG,
		.desc_user_addr = 0x7f0000001000, .used_user_addr = 0x7f0000003000,
		.avail_user_addr = 0x7f0000002000, .log_guest_addr = 0x3000,
	};
	uint32_t base;
	int kick = t_eventfd(), call = t_eventfd(), err = t_eventfd();

	cr_assert_eq(uvh_frontend_set_vring_num(rt->fe, 1, 256), 0);
	cr_assert_eq(rt->rec.last, UVH_REQ_SET_VRING_NUM);
	cr_assert_eq(rt->rec.index, 1);
	cr_assert_eq(rt->rec.num, 256);
	cr_assert_eq(uvh_frontend_set_vring_addr(rt->fe, &addr), 0);
	cr_assert_eq(memcmp(&rt->rec.addr, &addr, sizeof(addr)), 0);
	cr_assert_eq(uvh_frontend_set_vring_base(rt->fe, 1, 0x8005), 0);
	cr_assert_eq(rt->rec.last, UVH_REQ_SET_VRING_BASE);
	cr_assert_eq(rt->rec.num, 0x8005);
	cr_assert_eq(uvh_frontend_set_vring_endian(rt->fe, 1, 1), 0);
	cr_assert_eq(rt->rec.last, UVH_REQ_SET_VRING_ENDIAN);
	cr_assert_eq(rt->rec.num, 1);

	cr_assert_eq(uvh_frontend_set_vring_call(rt->fe, 1, call), 0);
	cr_assert_eq(rt->rec.last, UVH_REQ_SET_VRING_CALL);
	assert_got_fd(rt, call);
	cr_assert_eq(uvh_frontend_set_vring_err(rt->fe, 1, err), 0);
	cr_assert_eq(rt->rec.last, UVH_REQ_SET_VRING_ERR);
	assert_got_fd(rt, err);
	cr_assert_eq(uvh_frontend_set_vring_kick(rt->fe, 1, kick), 0);
	cr_assert_eq(rt->rec.last, UVH_REQ_SET_VRING_KICK);
	cr_assert_eq(rt->rec.index, 1);
	assert_got_fd(rt, kick);
	cr_assert_eq(uvh_frontend_set_vring_enable(rt->fe, 1, true), 0);
	cr_assert_eq(rt->rec.last, UVH_REQ_SET_VRING_ENABLE);
	cr_assert(rt->rec.enable);
	cr_assert_eq(uvh_frontend_vring_kick(rt->fe, 1), 0);
	cr_assert_eq(rt->rec.last, UVH_REQ_VRING_KICK);
	cr_assert_eq(rt->rec.index, 1);
	cr_assert_eq(uvh_frontend_set_vring_enable(rt->fe, 1, false), 0);
	cr_assert_not(rt->rec.enable);

	cr_assert_eq(uvh_frontend_get_vring_base(rt->fe, 1, &base), 0);
	cr_assert_eq(rt->rec.last, UVH_REQ_GET_VRING_BASE);
	cr_assert_eq(base, 0x1201);
	/* The no-fd bit: the handler sees fd -1 (kick last, so the ring
	 * starts again for the skip-drain stop). */
	cr_assert_eq(uvh_frontend_set_vring_call(rt->fe, 2, -1), 0);
	cr_assert_eq(rt->rec.index, 2);
	cr_assert_eq(rt->rec.fd, -1);
	cr_assert_eq(uvh_frontend_set_vring_kick(rt->fe, 2, -1), 0);
	cr_assert_eq(rt->rec.last, UVH_REQ_SET_VRING_KICK);
	cr_assert_eq(rt->rec.fd, -1);
	cr_assert_eq(uvh_frontend_get_vring_base_skip_drain(rt->fe, 2, &base), 0);
	cr_assert_eq(rt->rec.last, UVH_REQ_GET_VRING_BASE_SKIP_DRAIN);
	cr_assert_eq(base, 0x3402);
	close(kick);
	close(call);
	close(err);
}

static void do_config(struct rt *rt)
{
	uint8_t buf[UVH_CONFIG_MAX_SIZE], out[UVH_CONFIG_MAX_SIZE];

	cr_assert_eq(uvh_frontend_get_config(rt->fe, 8, 24, UVH_CONFIG_WRITABLE, buf), 0);
	cr_assert_eq(rt->rec.cfg_offset, 8);
	cr_assert_eq(rt->rec.cfg_size, 24);
	cr_assert_eq(rt->rec.cfg_flags, UVH_CONFIG_WRITABLE);
	for (unsigned int i = 0; i < 24; i++)
		cr_assert_eq(buf[i], (uint8_t)((8 + i) ^ 0x5a), "config byte %u", i);
	/* The largest size too. */
	cr_assert_eq(uvh_frontend_get_config(rt->fe, 0, UVH_CONFIG_MAX_SIZE, 0, out), 0);
	cr_assert_eq(out[255], (uint8_t)(255 ^ 0x5a));

	for (unsigned int i = 0; i < 6; i++)
		buf[i] = (uint8_t)(0xa0 + i);
	cr_assert_eq(uvh_frontend_set_config(rt->fe, 4, 6, UVH_CONFIG_MIGRATION, buf), 0);
	cr_assert_eq(rt->rec.last, UVH_REQ_SET_CONFIG);
	cr_assert_eq(rt->rec.cfg_offset, 4);
	cr_assert_eq(rt->rec.cfg_size, 6);
	cr_assert_eq(rt->rec.cfg_flags, UVH_CONFIG_MIGRATION);
	cr_assert_eq(memcmp(rt->rec.cfg, buf, 6), 0);
}

static void do_net(struct rt *rt)
{
	const uint8_t mac[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };

	cr_assert_eq(uvh_frontend_send_rarp(rt->fe, mac), 0);
	cr_assert_eq(memcmp(rt->rec.mac, mac, 6), 0);
	cr_assert_eq(uvh_frontend_net_set_mtu(rt->fe, 9000), 0);
	cr_assert_eq(rt->rec.mtu, 9000);
}

static void do_status(struct rt *rt)
{
	uint8_t status = 0;

	cr_assert_eq(uvh_frontend_set_status(rt->fe, 0x0f), 0);
	cr_assert_eq(rt->rec.status, 0x0f);
	cr_assert_eq(uvh_frontend_get_status(rt->fe, &status), 0);
	cr_assert_eq(status, 0x8f);
	cr_assert_eq(uvh_frontend_reset_device(rt->fe), 0);
	cr_assert_eq(rt->rec.last, UVH_REQ_RESET_DEVICE);
	/* The reset forgot the acked features: ack them again. */
	cr_assert_eq(uvh_frontend_set_features(rt->fe, OFFERED_F), 0);
	cr_assert_eq(rt->rec.features, OFFERED_F);
}

static void do_inflight(struct rt *rt)
{
	struct uvh_inflight in = { .num_queues = 2, .queue_size = 256 }, out;
	int fd = -1;

	cr_assert_eq(uvh_frontend_get_inflight_fd(rt->fe, &in, &out, &fd), 0);
	cr_assert_eq(rt->rec.inflight.num_queues, 2);
	cr_assert_eq(rt->rec.inflight.queue_size, 256);
	cr_assert_eq(out.mmap_size, 0x2000);
	cr_assert_eq(out.mmap_offset, 0x40);
	cr_assert_eq(out.num_queues, 2);
	cr_assert_eq(out.queue_size, 256);
	cr_assert_geq(fd, 0);
	cr_assert(t_same_file(fd, rt->rec.reply_fd), "inflight fd is the device's");

	memset(&rt->rec.inflight, 0, sizeof(rt->rec.inflight));
	cr_assert_eq(uvh_frontend_set_inflight_fd(rt->fe, &out, fd), 0);
	cr_assert_eq(rt->rec.inflight.mmap_size, 0x2000);
	cr_assert_eq(rt->rec.inflight.mmap_offset, 0x40);
	cr_assert_eq(rt->rec.inflight.num_queues, 2);
	cr_assert_eq(rt->rec.inflight.queue_size, 256);
	assert_got_fd(rt, fd);
	close(fd);
}

static void do_iotlb(struct rt *rt)
{
	struct uvh_iotlb msg = {
		.iova = 0x10000, .size = 0x2000, .uaddr = 0x7f0000010000,
		.perm = UVH_IOTLB_RW, .type = UVH_IOTLB_UPDATE,
	};

	cr_assert_eq(uvh_frontend_iotlb_msg(rt->fe, &msg), 0);
	cr_assert_eq(rt->rec.iotlb.iova, 0x10000);
	cr_assert_eq(rt->rec.iotlb.size, 0x2000);
	cr_assert_eq(rt->rec.iotlb.uaddr, 0x7f0000010000);
	cr_assert_eq(rt->rec.iotlb.perm, UVH_IOTLB_RW);
	cr_assert_eq(rt->rec.iotlb.type, UVH_IOTLB_UPDATE);
	msg.type = UVH_IOTLB_INVALIDATE;
	msg.perm = UVH_IOTLB_NONE;
	cr_assert_eq(uvh_frontend_iotlb_msg(rt->fe, &msg), 0);
	cr_assert_eq(rt->rec.iotlb.type, UVH_IOTLB_INVALIDATE);
	/* The verdict is the back-end's. */
	rt->rec.fail = -EFAULT;
	cr_assert_eq(uvh_frontend_iotlb_msg(rt->fe, &msg), -EIO);
	rt->rec.fail = 0;
}

static void do_device_state(struct rt *rt)
{
	int pipefd[2], out = 7;

	cr_assert_eq(pipe(pipefd), 0);
	cr_assert_eq(uvh_frontend_set_device_state_fd(rt->fe, UVH_DEVICE_STATE_SAVE,
						      UVH_DEVICE_STATE_STOPPED, pipefd[1], &out), 0);
	cr_assert_eq(rt->rec.direction, UVH_DEVICE_STATE_SAVE);
	cr_assert_eq(rt->rec.phase, UVH_DEVICE_STATE_STOPPED);
	cr_assert_eq(out, -1);
	assert_got_fd(rt, pipefd[1]);

	rt->rec.return_state_fd = true;
	cr_assert_eq(uvh_frontend_set_device_state_fd(rt->fe, UVH_DEVICE_STATE_LOAD,
						      UVH_DEVICE_STATE_STOPPED, pipefd[0], &out), 0);
	cr_assert_eq(rt->rec.direction, UVH_DEVICE_STATE_LOAD);
	assert_got_fd(rt, pipefd[0]);
	cr_assert_geq(out, 0);
	cr_assert(t_same_file(out, rt->rec.reply_fd), "the back-end's own state fd");
	close(out);
	rt->rec.return_state_fd = false;

	cr_assert_eq(uvh_frontend_check_device_state(rt->fe), 0);
	cr_assert_eq(rt->rec.last, UVH_REQ_CHECK_DEVICE_STATE);
	rt->rec.fail = -EIO;
	cr_assert_eq(uvh_frontend_check_device_state(rt->fe), -EIO);
	rt->rec.fail = 0;
	close(pipefd[0]);
	close(pipefd[1]);
}

static void do_objects(struct rt *rt)
{
	struct uvh_shared_object uuid;
	struct uvh_shmem_config config;
	int fd = -1;

	for (unsigned int i = 0; i < 16; i++)
		uuid.uuid[i] = (uint8_t)(0x10 + i);
	cr_assert_eq(uvh_frontend_get_shared_object(rt->fe, &uuid, &fd), 0);
	cr_assert_eq(memcmp(&rt->rec.uuid, &uuid, sizeof(uuid)), 0);
	cr_assert_geq(fd, 0);
	cr_assert(t_same_file(fd, rt->rec.reply_fd), "the object's fd");
	close(fd);

	cr_assert_eq(uvh_frontend_get_shmem_config(rt->fe, &config), 0);
	cr_assert_eq(config.nregions, 2);
	cr_assert_eq(config.memory_sizes[0], 0x10000);
	cr_assert_eq(config.memory_sizes[1], 0x200000);
	cr_assert_eq(config.memory_sizes[2], 0);
}

static void do_postcopy(struct rt *rt)
{
	int fd = -1;

	cr_assert_eq(uvh_frontend_postcopy_advise(rt->fe, &fd), 0);
	cr_assert_geq(fd, 0);
	cr_assert(t_same_file(fd, rt->rec.reply_fd), "the userfaultfd");
	close(fd);
	cr_assert_eq(uvh_frontend_postcopy_listen(rt->fe), 0);
	cr_assert_eq(rt->rec.last, UVH_REQ_POSTCOPY_LISTEN);
	cr_assert_eq(uvh_frontend_postcopy_end(rt->fe), 0);
	cr_assert_eq(rt->rec.last, UVH_REQ_POSTCOPY_END);
}

static void do_crypto(struct rt *rt)
{
	uint8_t in[40], out[64];
	uint32_t out_size = sizeof(out);

	for (unsigned int i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i + 1);
	cr_assert_eq(uvh_frontend_create_crypto_session(rt->fe, in, sizeof(in), out,
							&out_size), 0);
	cr_assert_eq(rt->rec.crypto_size, sizeof(in));
	cr_assert_eq(memcmp(rt->rec.crypto, in, sizeof(in)), 0);
	cr_assert_eq(out_size, 16);
	cr_assert_eq(out[0], 0x77);
	cr_assert_eq(out[8], 1);
	cr_assert_eq(uvh_frontend_close_crypto_session(rt->fe, 0x1122334455667788ull), 0);
	cr_assert_eq(rt->rec.session, 0x1122334455667788ull);
}

static void do_gpu(struct rt *rt)
{
	int sv[2];

	t_socketpair(sv);
	cr_assert_eq(uvh_frontend_gpu_set_socket(rt->fe, sv[1]), 0);
	cr_assert_eq(rt->rec.last, UVH_REQ_GPU_SET_SOCKET);
	assert_got_fd(rt, sv[1]);
	close(sv[0]);
	close(sv[1]);
}

static const struct uvh_frontend_req_ops no_chan_ops;

static void do_backend_req(struct rt *rt)
{
	cr_assert_eq(uvh_frontend_backend_req_fd(rt->fe), -1);
	cr_assert_eq(uvh_frontend_set_backend_req(rt->fe, &no_chan_ops, NULL), 0);
	cr_assert_geq(rt->rec.chan_fd, 0);
	cr_assert_geq(uvh_frontend_backend_req_fd(rt->fe), 0);
	cr_assert_eq(uvh_frontend_set_backend_req(rt->fe, &no_chan_ops, NULL), -EALREADY);
}

/* ---- round trips ---------------------------------------------------------------- */

Test(roundtrip, negotiate)
{
	struct rt rt;
	uint64_t f = 0, pf = 0;
	const uint64_t want_pf = PF(MQ) | PF(REPLY_ACK) | PF(CONFIG) | PF(XEN_MMAP) |
				 PF(INBAND_NOTIFICATIONS) | (1ull << 40);

	rt_start(&rt);
	t_log_capture();
	/* Only offered bits are acked; PROTOCOL_FEATURES is added; the
	 * in-band notifications are dropped without BACKEND_REQ. */
	cr_assert_eq(uvh_frontend_negotiate(rt.fe, F(UVH_VIRTIO_F_VERSION_1) | F(40), want_pf,
					    &f, &pf), 0);
	cr_assert_eq(f, F(UVH_VIRTIO_F_VERSION_1) | F(UVH_F_PROTOCOL_FEATURES));
	cr_assert_eq(pf, PF(MQ) | PF(REPLY_ACK) | PF(CONFIG));
	cr_assert_eq(uvh_frontend_features(rt.fe), f);
	cr_assert_eq(uvh_frontend_protocol_features(rt.fe), pf);
	rt_sync(&rt);
	cr_assert(rt.rec.seen[UVH_REQ_SET_OWNER]);
	cr_assert_eq(rt.rec.features, f);
	cr_assert_eq(rt.rec.pf, pf);
	cr_assert(t_log_contains("MQ REPLY_ACK CONFIG"), "negotiated names logged");
	uvh_log_set_sink(NULL, NULL);
	rt_stop(&rt);
}

Test(roundtrip, negotiate_inband)
{
	struct rt rt;
	uint64_t pf = 0;
	const uint64_t want = PF(INBAND_NOTIFICATIONS) | PF(BACKEND_REQ) | PF(REPLY_ACK);

	rt_start(&rt);
	cr_assert_eq(uvh_frontend_negotiate(rt.fe, 0, want, NULL, &pf), 0);
	cr_assert_eq(pf, want);
	rt_sync(&rt);
	cr_assert_eq(rt.rec.pf, want);
	rt_stop(&rt);
}

Test(roundtrip, negotiate_without_protocol_features)
{
	struct rt rt;
	uint64_t f = 1, pf = 1;

	rt_start(&rt);
	rt.rec.offered_features = F(UVH_VIRTIO_F_VERSION_1);
	cr_assert_eq(uvh_frontend_negotiate(rt.fe, ~0ull, ~0ull, &f, &pf), 0);
	cr_assert_eq(f, F(UVH_VIRTIO_F_VERSION_1));
	cr_assert_eq(pf, 0);
	rt_sync(&rt);
	cr_assert_eq(rt.rec.features, F(UVH_VIRTIO_F_VERSION_1));
	cr_assert_not(rt.rec.seen[UVH_REQ_GET_PROTOCOL_FEATURES]);
	cr_assert_not(rt.rec.seen[UVH_REQ_SET_PROTOCOL_FEATURES]);
	/* Gated requests are refused locally. */
	cr_assert_eq(uvh_frontend_get_queue_num(rt.fe, &f), -EOPNOTSUPP);
	cr_assert_eq(uvh_frontend_set_vring_enable(rt.fe, 0, true), -EOPNOTSUPP);
	rt_stop(&rt);
}

Test(roundtrip, features)
{
	struct rt rt;

	rt_start_all(&rt);
	do_features(&rt);
	rt_stop(&rt);
}

Test(roundtrip, memory)
{
	struct rt rt;

	rt_start_all(&rt);
	do_memory(&rt);
	rt_stop(&rt);
}

Test(roundtrip, log)
{
	struct rt rt;

	rt_start_all(&rt);
	do_log(&rt);
	rt_stop(&rt);
}

Test(roundtrip, vrings)
{
	struct rt rt;

	rt_start_all(&rt);
	do_vrings(&rt);
	rt_stop(&rt);
}

Test(roundtrip, config)
{
	struct rt rt;

	rt_start_all(&rt);
	do_config(&rt);
	rt_stop(&rt);
}

Test(roundtrip, net)
{
	struct rt rt;

	rt_start_all(&rt);
	do_net(&rt);
	rt_stop(&rt);
}

Test(roundtrip, status)
{
	struct rt rt;

	rt_start_all(&rt);
	do_status(&rt);
	rt_stop(&rt);
}

Test(roundtrip, inflight)
{
	struct rt rt;

	rt_start_all(&rt);
	do_inflight(&rt);
	rt_stop(&rt);
}

Test(roundtrip, iotlb)
{
	struct rt rt;

	rt_start_all(&rt);
	do_iotlb(&rt);
	rt_stop(&rt);
}

Test(roundtrip, device_state)
{
	struct rt rt;

	rt_start_all(&rt);
	do_device_state(&rt);
	rt_stop(&rt);
}

Test(roundtrip, shared_objects)
{
	struct rt rt;

	rt_start_all(&rt);
	do_objects(&rt);
	rt_stop(&rt);
}

Test(roundtrip, postcopy)
{
	struct rt rt;

	rt_start_all(&rt);
	do_postcopy(&rt);
	rt_stop(&rt);
}

Test(roundtrip, crypto)
{
	struct rt rt;

	rt_start_all(&rt);
	do_crypto(&rt);
	rt_stop(&rt);
}

Test(roundtrip, gpu_socket)
{
	struct rt rt;

	rt_start_all(&rt);
	do_gpu(&rt);
	rt_stop(&rt);
}

Test(roundtrip, backend_req_fd)
{
	struct rt rt;

	rt_start_all(&rt);
	do_backend_req(&rt);
	rt_stop(&rt);
}

/* Every front-end request id 1..45 reaches the back-end. */
Test(roundtrip, every_request)
{
	struct rt rt;

	rt_start_all(&rt);
	do_features(&rt);
	do_memory(&rt);
	do_log(&rt);
	do_vrings(&rt);
	do_config(&rt);
	do_net(&rt);
	do_status(&rt);
	do_inflight(&rt);
	do_iotlb(&rt);
	do_device_state(&rt);
	do_objects(&rt);
	do_postcopy(&rt);
	do_crypto(&rt);
	do_gpu(&rt);
	do_backend_req(&rt);
	for (uint32_t id = 1; id < UVH_REQ_MAX; id++)
		cr_assert(rt.rec.seen[id], "%s was never exercised", uvh_frontend_request_name(id));
	rt_stop(&rt);
}

/* ---- acks ------------------------------------------------------------------------- */

Test(roundtrip, reply_ack_nack_is_eio)
{
	struct rt rt;
	int efd;

	rt_start_all(&rt);
	efd = t_eventfd();
	rt.rec.fail = -EINVAL;
	cr_assert_eq(uvh_frontend_set_vring_num(rt.fe, 0, 64), -EIO);
	cr_assert_eq(uvh_frontend_net_set_mtu(rt.fe, 1500), -EIO);
	cr_assert_eq(uvh_frontend_set_log_fd(rt.fe, efd), -EIO);
	/* The handler owned the fd and kept it. */
	assert_got_fd(&rt, efd);
	/* A NACK is not a broken connection. */
	rt.rec.fail = 0;
	cr_assert_eq(uvh_frontend_set_vring_num(rt.fe, 0, 64), 0);
	cr_assert_eq(rt.rec.num, 64);
	close(efd);
	rt_stop(&rt);
}

Test(roundtrip, without_reply_ack_failure_is_silent)
{
	struct rt rt;
	uint64_t pf = 0, f;
	int r;

	rt_start(&rt);
	cr_assert_eq(uvh_frontend_negotiate(rt.fe, ~0ull, OFFERED_PF & ~PF(REPLY_ACK), NULL, &pf),
		     0);
	cr_assert_eq(pf & PF(REPLY_ACK), 0);
	cr_assert_eq(pf & PF(INBAND_NOTIFICATIONS), 0, "in-band needs REPLY_ACK");
	cr_assert_eq(uvh_frontend_set_vring_num(rt.fe, 0, 64), 0);
	cr_assert_eq(uvh_frontend_get_features(rt.fe, &f), 0);	/* orders the two */
	cr_assert_eq(rt.rec.pf, pf);
	cr_assert_eq(rt.rec.num, 64);
	/* Without an ack nobody hears of the failure: the call succeeds and
	 * the back-end (which cannot NACK) drops the connection. */
	rt.rec.fail = -EINVAL;
	cr_assert_eq(uvh_frontend_set_vring_num(rt.fe, 1, 128), 0);
	pthread_join(rt.thread, NULL);
	cr_assert_eq(rt.be_result, -EINVAL);
	cr_assert_eq(rt.rec.index, 1);
	cr_assert_eq(rt.rec.num, 128);
	r = uvh_frontend_get_features(rt.fe, &f);
	cr_assert(r == -EPIPE || r == -ECONNRESET, "got %d", r);
	cr_assert_eq(uvh_frontend_set_owner(rt.fe), -ENOTCONN);
	uvh_frontend_free(rt.fe);
	close(rt.rec.reply_fd);
	cr_assert_eq(t_count_fds(), rt.fds_before);
}

/* The spec's failure bodies, as our back-end sends them, read as failures
 * that keep the connection. */
Test(roundtrip, body_request_failures)
{
	struct rt rt;
	struct uvh_inflight in = { .num_queues = 1, .queue_size = 64 }, out;
	struct uvh_iotlb inval = { .type = UVH_IOTLB_INVALIDATE };
	uint8_t buf[8];
	int fd = 3, memfd;

	rt_start_all(&rt);
	memfd = t_memfd("state", 16);
	rt.rec.fail = -EPERM;
	cr_assert_eq(uvh_frontend_get_config(rt.fe, 0, 8, 0, buf), -EIO);
	cr_assert_eq(uvh_frontend_postcopy_advise(rt.fe, &fd), -EIO);
	cr_assert_eq(fd, -1);
	fd = 3;
	cr_assert_eq(uvh_frontend_get_shared_object(rt.fe, &(struct uvh_shared_object){ 0 }, &fd),
		     -EIO);
	cr_assert_eq(fd, -1);
	fd = 3;
	cr_assert_eq(uvh_frontend_set_device_state_fd(rt.fe, UVH_DEVICE_STATE_SAVE,
						      UVH_DEVICE_STATE_STOPPED, memfd, &fd), -EIO);
	cr_assert_eq(fd, -1);
	assert_got_fd(&rt, memfd);
	cr_assert_eq(uvh_frontend_iotlb_msg(rt.fe, &inval), -EIO);
	cr_assert_eq(uvh_frontend_postcopy_end(rt.fe), -EIO);
	/* No inflight area. */
	fd = 3;
	cr_assert_eq(uvh_frontend_get_inflight_fd(rt.fe, &in, &out, &fd), 0);
	cr_assert_eq(fd, -1);
	cr_assert_eq(out.mmap_size, 0);
	rt.rec.fail = 0;
	cr_assert_eq(uvh_frontend_get_config(rt.fe, 0, 8, 0, buf), 0);
	cr_assert_eq(buf[7], 7 ^ 0x5a);
	close(memfd);
	rt_stop(&rt);
}

Test(roundtrip, log_without_shmfd)
{
	struct rt rt;
	struct uvh_dirty_log_area log = { .mmap_size = 0x1000, .mmap_offset = 0 };
	uint64_t pf;
	int shm;

	rt_start(&rt);
	cr_assert_eq(uvh_frontend_negotiate(rt.fe, ~0ull, OFFERED_PF & ~PF(LOG_SHMFD), NULL, &pf),
		     0);
	shm = t_memfd("log", 0x1000);
	/* No fd may go without LOG_SHMFD; without one it is a plain
	 * request, acked as any other. */
	cr_assert_eq(uvh_frontend_set_log_base(rt.fe, &log, shm), -EINVAL);
	cr_assert_eq(uvh_frontend_set_log_base(rt.fe, &log, -1), 0);
	cr_assert_eq(rt.rec.last, UVH_REQ_SET_LOG_BASE);
	cr_assert_eq(rt.rec.log.mmap_size, 0x1000);
	cr_assert_eq(rt.rec.fd, -1);
	rt.rec.fail = -EINVAL;
	cr_assert_eq(uvh_frontend_set_log_base(rt.fe, &log, -1), -EIO);
	rt.rec.fail = 0;
	close(shm);
	rt_stop(&rt);
}

/* ---- the back-end channel ------------------------------------------------------------ */

struct chan_rec {
	struct uvh_frontend *fe;
	int reentry;			/* a call back into fe from a callback */
	int config_changes;
	uint32_t call_index;
	int calls;
	int fail;
};

static int c_config_change(void *opaque)
{
	struct chan_rec *c = opaque;

	c->config_changes++;
	return c->fail;
}

static int c_vring_call(void *opaque, uint32_t index)
{
	struct chan_rec *c = opaque;

	c->calls++;
	c->call_index = index;
	return c->fail;
}

static int c_vring_err(void *opaque, uint32_t index)
{
	struct chan_rec *c = opaque;
	uint64_t f;

	(void)index;
	c->reentry = uvh_frontend_get_features(c->fe, &f);
	return 0;
}

static const struct uvh_frontend_req_ops chan_ops = {
	.config_change = c_config_change,
	.vring_call = c_vring_call,
	.vring_err = c_vring_err,
};

Test(roundtrip, channel_served_while_waiting)
{
	struct rt rt;
	struct chan_rec c = { 0 };
	uint8_t buf[8];

	rt_start_all(&rt);
	cr_assert_eq(uvh_frontend_set_backend_req(rt.fe, &chan_ops, &c), 0);
	rt.rec.chan_poke = true;
	rt.rec.chan_poke_result = -1;
	/* The device asks on the channel before it answers GET_CONFIG. */
	cr_assert_eq(uvh_frontend_get_config(rt.fe, 0, 8, 0, buf), 0);
	cr_assert_eq(rt.rec.chan_poke_result, 0);
	cr_assert_eq(c.config_changes, 1);
	cr_assert_eq(buf[1], 1 ^ 0x5a);
	/* A callback failure is the back-end's NACK, not the front-end's. */
	c.fail = -EBUSY;
	cr_assert_eq(uvh_frontend_get_config(rt.fe, 0, 8, 0, buf), 0);
	cr_assert_neq(rt.rec.chan_poke_result, 0);
	cr_assert_eq(c.config_changes, 2);
	cr_assert_geq(uvh_frontend_backend_req_fd(rt.fe), 0);
	rt.rec.chan_poke = false;
	rt_stop(&rt);
}

Test(roundtrip, poll_backend)
{
	struct rt rt;
	struct chan_rec c = { 0 };
	struct uvh_vring_state state = { .index = 3 };
	uint64_t ack = 1;

	rt_start_all(&rt);
	cr_assert_eq(uvh_frontend_poll_backend(rt.fe, 0), -ENOTCONN);
	cr_assert_eq(uvh_frontend_set_backend_req(rt.fe, &chan_ops, &c), 0);
	/* Nothing waiting. */
	cr_assert_eq(uvh_frontend_poll_backend(rt.fe, 10), 0);
	/* The test plays the back-end on the channel (its thread is busy
	 * waiting for front-end requests). */
	cr_assert_eq(chan_request(rt.rec.chan_fd, UVH_BACKEND_REQ_VRING_CALL, UVH_FLAG_VERSION,
				  &state, sizeof(state), NULL), 0);
	cr_assert_eq(chan_request(rt.rec.chan_fd, UVH_BACKEND_REQ_VRING_CALL, UVH_FLAG_VERSION,
				  &state, sizeof(state), NULL), 0);
	cr_assert_eq(uvh_frontend_poll_backend(rt.fe, 1000), 2);
	cr_assert_eq(c.calls, 2);
	cr_assert_eq(c.call_index, 3);
	/* With an ack asked for. */
	state.index = 1;
	cr_assert_eq(chan_request(rt.rec.chan_fd, UVH_BACKEND_REQ_VRING_CALL,
				  UVH_FLAG_VERSION | UVH_FLAG_NEED_REPLY, &state, sizeof(state), NULL),
		     0);
	cr_assert_eq(uvh_frontend_poll_backend(rt.fe, 1000), 1);
	{
		struct pollfd pfd = { .fd = rt.rec.chan_fd, .events = POLLIN };
		uint8_t reply[20];

		cr_assert_eq(poll(&pfd, 1, 1000), 1);
		cr_assert_eq(read(rt.rec.chan_fd, reply, sizeof(reply)), 20);
		memcpy(&ack, reply + 12, 8);
		cr_assert_eq(ack, 0);
	}
	cr_assert_eq(c.call_index, 1);
	/* A callback calling back in is refused, not deadlocked. */
	c.fe = rt.fe;
	cr_assert_eq(chan_request(rt.rec.chan_fd, UVH_BACKEND_REQ_VRING_ERR, UVH_FLAG_VERSION,
				  &state, sizeof(state), NULL), 0);
	cr_assert_eq(uvh_frontend_poll_backend(rt.fe, 1000), 1);
	cr_assert_eq(c.reentry, -EDEADLK);
	cr_assert_eq(uvh_frontend_set_owner(rt.fe), 0);
	/* The back-end drops the channel: it is closed, the connection lives. */
	close(rt.rec.chan_fd);
	rt.rec.chan_fd = -1;
	cr_assert_lt(uvh_frontend_poll_backend(rt.fe, 1000), 0);
	cr_assert_eq(uvh_frontend_backend_req_fd(rt.fe), -1);
	cr_assert_eq(uvh_frontend_set_owner(rt.fe), 0);
	rt_stop(&rt);
}

/* ---- failures ------------------------------------------------------------------------ */

Test(roundtrip, backend_closes)
{
	struct rt rt;
	uint64_t f;
	int r;

	rt_start_all(&rt);
	rt.rec.quit_after = UVH_REQ_SET_OWNER;
	cr_assert_eq(uvh_frontend_set_owner(rt.fe), 0);	/* acked, then closed */
	pthread_join(rt.thread, NULL);
	r = uvh_frontend_get_features(rt.fe, &f);
	cr_assert_lt(r, 0);
	cr_assert_neq(r, -ENOTCONN, "the first call sees the transport error");
	cr_assert_eq(uvh_frontend_get_features(rt.fe, &f), -ENOTCONN);
	cr_assert_eq(uvh_frontend_set_vring_num(rt.fe, 0, 8), -ENOTCONN);
	uvh_frontend_free(rt.fe);
	if (rt.rec.fd >= 0)
		close(rt.rec.fd);
	close(rt.rec.reply_fd);
	cr_assert_eq(t_count_fds(), rt.fds_before);
}

Test(roundtrip, argument_checks)
{
	struct rt rt;
	struct uvh_mem_region regions[9] = { 0 };
	int fds[9];
	uint8_t buf[UVH_CONFIG_MAX_SIZE + 1] = { 0 };
	struct uvh_iotlb miss = { .type = UVH_IOTLB_MISS };
	int out, efd;

	rt_start_all(&rt);
	efd = t_eventfd();
	for (unsigned int i = 0; i < 9; i++)
		fds[i] = efd;
	cr_assert_eq(uvh_frontend_set_mem_table(rt.fe, regions, fds, 9), -EINVAL);
	fds[1] = -1;
	cr_assert_eq(uvh_frontend_set_mem_table(rt.fe, regions, fds, 2), -EBADF);
	cr_assert_eq(uvh_frontend_get_config(rt.fe, 0, UVH_CONFIG_MAX_SIZE + 1, 0, buf), -EINVAL);
	cr_assert_eq(uvh_frontend_set_config(rt.fe, 0, UVH_CONFIG_MAX_SIZE + 1, 0, buf), -EINVAL);
	cr_assert_eq(uvh_frontend_set_vring_kick(rt.fe, 256, efd), -EINVAL);
	cr_assert_eq(uvh_frontend_set_vring_call(rt.fe, 256, -1), -EINVAL);
	cr_assert_eq(uvh_frontend_set_vring_err(rt.fe, 300, efd), -EINVAL);
	cr_assert_eq(uvh_frontend_add_mem_reg(rt.fe, regions, -1), -EBADF);
	cr_assert_eq(uvh_frontend_set_log_fd(rt.fe, -1), -EBADF);
	cr_assert_eq(uvh_frontend_iotlb_msg(rt.fe, &miss), -EINVAL);
	cr_assert_eq(uvh_frontend_set_device_state_fd(rt.fe, 2, 0, efd, &out), -EINVAL);
	cr_assert_eq(uvh_frontend_set_device_state_fd(rt.fe, 0, 1, efd, &out), -EINVAL);
	cr_assert_eq(uvh_frontend_set_inflight_fd(rt.fe, &(struct uvh_inflight){ 0 }, -1), -EBADF);
	cr_assert_eq(uvh_frontend_set_log_base(rt.fe, &(struct uvh_dirty_log_area){ 0 }, -1), -EBADF);
	/* None of it reached the back-end, and the connection is fine. */
	for (uint32_t id = 1; id < UVH_REQ_MAX; id++)
		if (id != UVH_REQ_SET_OWNER && id != UVH_REQ_GET_FEATURES &&
		    id != UVH_REQ_SET_FEATURES && id != UVH_REQ_GET_PROTOCOL_FEATURES &&
		    id != UVH_REQ_SET_PROTOCOL_FEATURES)
			cr_assert_not(rt.rec.seen[id], "%s was sent", uvh_frontend_request_name(id));
	cr_assert_eq(uvh_frontend_set_vring_num(rt.fe, 0, 8), 0);
	close(efd);
	rt_stop(&rt);
}

/* ---- a scripted back-end on a socketpair ------------------------------------------------ */

/* Queue a raw message (maybe with an fd) for the front-end to read. */
static void script(int sock, uint32_t request, uint32_t flags, const void *payload,
		   uint32_t size, int fd)
{
	struct uvh_msg_header hdr = { .request = request, .flags = flags, .size = size };
	uint8_t buf[UVH_MSG_HEADER_SIZE + 512];
	struct t_fds_cmsg cmsg;
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof(hdr) + size };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	cr_assert_leq(size, 512);
	memcpy(buf, &hdr, sizeof(hdr));
	if (size)
		memcpy(buf + sizeof(hdr), payload, size);
	t_fds_attach(&mh, &cmsg, &fd, fd >= 0);
	cr_assert_eq(sendmsg(sock, &mh, 0), (ssize_t)iov.iov_len);
}

#define REPLY	(UVH_FLAG_REPLY | UVH_FLAG_VERSION)

struct scripted {
	int sv[2];
	struct uvh_frontend *fe;
	int fds_before;
};

/* A front-end on a socketpair with @pf in force (set without acks, so
 * nothing needs answering). */
static void scripted_start(struct scripted *s, uint64_t pf)
{
	signal(SIGPIPE, SIG_IGN);
	s->fds_before = t_count_fds();
	t_socketpair(s->sv);
	s->fe = uvh_frontend_from_fd(s->sv[0]);
	cr_assert_not_null(s->fe);
	uvh_frontend_set_timeout(s->fe, 2000);
	cr_assert_eq(uvh_frontend_set_features(s->fe, F(UVH_F_PROTOCOL_FEATURES) |
					       F(UVH_VIRTIO_F_IOMMU_PLATFORM)), 0);
	cr_assert_eq(uvh_frontend_set_protocol_features(s->fe, pf), 0);
}

static void scripted_stop(struct scripted *s)
{
	uvh_frontend_free(s->fe);
	close(s->sv[1]);
	cr_assert_eq(t_count_fds(), s->fds_before, "fd leak");
}

Test(roundtrip, reply_wrong_request)
{
	struct scripted s;
	uint64_t v = 1;

	scripted_start(&s, 0);
	script(s.sv[1], UVH_REQ_GET_PROTOCOL_FEATURES, REPLY, &v, 8, -1);
	cr_assert_eq(uvh_frontend_get_features(s.fe, &v), -EPROTO);
	cr_assert_eq(uvh_frontend_get_features(s.fe, &v), -ENOTCONN);
	scripted_stop(&s);
}

Test(roundtrip, reply_bad_flags)
{
	struct scripted s;
	uint64_t v = 1;

	scripted_start(&s, 0);
	script(s.sv[1], UVH_REQ_GET_FEATURES, REPLY | UVH_FLAG_NEED_REPLY, &v, 8, -1);
	cr_assert_eq(uvh_frontend_get_features(s.fe, &v), -EPROTO);
	scripted_stop(&s);

	/* A reply without the REPLY bit. */
	scripted_start(&s, 0);
	script(s.sv[1], UVH_REQ_GET_FEATURES, UVH_FLAG_VERSION, &v, 8, -1);
	cr_assert_eq(uvh_frontend_get_features(s.fe, &v), -EPROTO);
	scripted_stop(&s);
}

Test(roundtrip, reply_bad_size)
{
	struct scripted s;
	uint64_t v[2] = { 1, 2 };

	scripted_start(&s, 0);
	script(s.sv[1], UVH_REQ_GET_FEATURES, REPLY, v, 16, -1);
	cr_assert_eq(uvh_frontend_get_features(s.fe, v), -EPROTO);
	cr_assert_eq(uvh_frontend_set_owner(s.fe), -ENOTCONN);
	scripted_stop(&s);

	/* An ack must be 8 bytes. */
	scripted_start(&s, PF(REPLY_ACK));
	script(s.sv[1], UVH_REQ_SET_OWNER, REPLY, v, 4, -1);
	cr_assert_eq(uvh_frontend_set_owner(s.fe), -EPROTO);
	scripted_stop(&s);
}

Test(roundtrip, reply_unexpected_fd_closed)
{
	struct scripted s;
	uint64_t v = 0;
	int efd;

	scripted_start(&s, PF(REPLY_ACK));
	efd = t_eventfd();
	script(s.sv[1], UVH_REQ_SET_OWNER, REPLY, &v, 8, efd);
	close(efd);	/* the only copy is now in flight */
	cr_assert_eq(uvh_frontend_set_owner(s.fe), -EPROTO);
	scripted_stop(&s);	/* counts fds: the stray one was closed */
}

Test(roundtrip, reply_ack_values)
{
	struct scripted s;
	uint64_t v = 0;

	scripted_start(&s, PF(REPLY_ACK));
	script(s.sv[1], UVH_REQ_SET_VRING_NUM, REPLY, &v, 8, -1);
	cr_assert_eq(uvh_frontend_set_vring_num(s.fe, 0, 8), 0);
	v = 22;
	script(s.sv[1], UVH_REQ_SET_VRING_NUM, REPLY, &v, 8, -1);
	cr_assert_eq(uvh_frontend_set_vring_num(s.fe, 0, 8), -EIO);
	/* Still usable after a NACK. */
	v = 0;
	script(s.sv[1], UVH_REQ_SET_VRING_NUM, REPLY, &v, 8, -1);
	cr_assert_eq(uvh_frontend_set_vring_num(s.fe, 0, 8), 0);
	scripted_stop(&s);
}

Test(roundtrip, get_config_replies)
{
	struct scripted s;
	struct uvh_config cfg = { .offset = 4, .size = 4, .region = { 1, 2, 3, 4 } };
	uint8_t buf[4];

	/* Zero size: the back-end's failure, the connection survives. */
	scripted_start(&s, PF(CONFIG));
	script(s.sv[1], UVH_REQ_GET_CONFIG, REPLY, NULL, 0, -1);
	cr_assert_eq(uvh_frontend_get_config(s.fe, 4, 4, 0, buf), -EIO);
	script(s.sv[1], UVH_REQ_GET_CONFIG, REPLY, &cfg, 16, -1);
	cr_assert_eq(uvh_frontend_get_config(s.fe, 4, 4, 0, buf), 0);
	cr_assert_eq(buf[3], 4);
	/* Another range than asked for. */
	cfg.offset = 0;
	script(s.sv[1], UVH_REQ_GET_CONFIG, REPLY, &cfg, 16, -1);
	cr_assert_eq(uvh_frontend_get_config(s.fe, 4, 4, 0, buf), -EPROTO);
	scripted_stop(&s);
}

Test(roundtrip, fd_replies)
{
	struct scripted s;
	struct uvh_inflight in = { .num_queues = 1, .queue_size = 64 }, out;
	uint64_t v;
	int fd = 5, memfd;

	/* No inflight area: mmap_size 0 and no fd. */
	scripted_start(&s, PF(INFLIGHT_SHMFD));
	script(s.sv[1], UVH_REQ_GET_INFLIGHT_FD, REPLY, &in, 24, -1);
	memset(&out, 0xff, sizeof(out));
	cr_assert_eq(uvh_frontend_get_inflight_fd(s.fe, &in, &out, &fd), 0);
	cr_assert_eq(fd, -1);
	cr_assert_eq(out.mmap_size, 0);
	cr_assert_eq(out.num_queues, 0);
	/* An area claimed without its fd. */
	in.mmap_size = 4096;
	script(s.sv[1], UVH_REQ_GET_INFLIGHT_FD, REPLY, &in, 24, -1);
	cr_assert_eq(uvh_frontend_get_inflight_fd(s.fe, &in, &out, &fd), -EPROTO);
	cr_assert_eq(fd, -1);
	scripted_stop(&s);

	/* The packed 20-byte form is accepted. */
	scripted_start(&s, PF(INFLIGHT_SHMFD));
	memfd = t_memfd("inflight", 4096);
	in.mmap_size = 4096;
	script(s.sv[1], UVH_REQ_GET_INFLIGHT_FD, REPLY, &in, 20, memfd);
	cr_assert_eq(uvh_frontend_get_inflight_fd(s.fe, &in, &out, &fd), 0);
	cr_assert(t_same_file(fd, memfd));
	cr_assert_eq(out.mmap_size, 4096);
	cr_assert_eq(out.queue_size, 64);
	close(fd);
	close(memfd);
	scripted_stop(&s);

	/* SET_DEVICE_STATE_FD: the no-fd bit with an fd. */
	scripted_start(&s, PF(DEVICE_STATE));
	memfd = t_memfd("state", 16);
	v = UVH_DEVICE_STATE_NOFD;
	script(s.sv[1], UVH_REQ_SET_DEVICE_STATE_FD, REPLY, &v, 8, memfd);
	cr_assert_eq(uvh_frontend_set_device_state_fd(s.fe, 0, 0, memfd, &fd), -EPROTO);
	cr_assert_eq(fd, -1);
	close(memfd);
	scripted_stop(&s);

	/* An error code: -EIO, still connected. */
	scripted_start(&s, PF(DEVICE_STATE));
	memfd = t_memfd("state", 16);
	v = UVH_DEVICE_STATE_NOFD | 5;
	script(s.sv[1], UVH_REQ_SET_DEVICE_STATE_FD, REPLY, &v, 8, -1);
	cr_assert_eq(uvh_frontend_set_device_state_fd(s.fe, 0, 0, memfd, &fd), -EIO);
	v = 0;
	script(s.sv[1], UVH_REQ_CHECK_DEVICE_STATE, REPLY, &v, 8, -1);
	cr_assert_eq(uvh_frontend_check_device_state(s.fe), 0);
	close(memfd);
	scripted_stop(&s);

	/* GET_SHARED_OBJECT: a u64 failure without an fd. */
	scripted_start(&s, PF(SHARED_OBJECT));
	v = 2;
	script(s.sv[1], UVH_REQ_GET_SHARED_OBJECT, REPLY, &v, 8, -1);
	cr_assert_eq(uvh_frontend_get_shared_object(s.fe, &(struct uvh_shared_object){ 0 }, &fd),
		     -EIO);
	cr_assert_eq(fd, -1);
	scripted_stop(&s);
}

Test(roundtrip, gated_requests_not_sent)
{
	struct scripted s;
	uint64_t v;
	uint8_t b;
	char c;

	scripted_start(&s, 0);
	/* Drain what set-up sent. */
	while (recv(s.sv[1], &c, 1, MSG_DONTWAIT) == 1)
		;
	cr_assert_eq(uvh_frontend_get_queue_num(s.fe, &v), -EOPNOTSUPP);
	cr_assert_eq(uvh_frontend_get_status(s.fe, &b), -EOPNOTSUPP);
	cr_assert_eq(uvh_frontend_reset_device(s.fe), -EOPNOTSUPP);
	cr_assert_eq(uvh_frontend_set_backend_req(s.fe, &chan_ops, NULL), -EOPNOTSUPP);
	cr_assert_eq(recv(s.sv[1], &c, 1, MSG_DONTWAIT), -1);
	cr_assert_eq(errno, EAGAIN);
	scripted_stop(&s);
}

Test(roundtrip, timeout)
{
	struct scripted s;
	uint64_t v;

	scripted_start(&s, 0);
	uvh_frontend_set_timeout(s.fe, 100);
	cr_assert_eq(uvh_frontend_get_features(s.fe, &v), -ETIMEDOUT);
	cr_assert_eq(uvh_frontend_get_features(s.fe, &v), -ENOTCONN);
	scripted_stop(&s);
}

Test(roundtrip, timeout_mid_message)
{
	struct scripted s;
	uint32_t half[2] = { UVH_REQ_GET_FEATURES, REPLY };
	uint64_t v;

	/* A header cut short: the non-blocking receive still times out. */
	scripted_start(&s, 0);
	uvh_frontend_set_timeout(s.fe, 100);
	cr_assert_eq(write(s.sv[1], half, sizeof(half)), (ssize_t)sizeof(half));
	cr_assert_eq(uvh_frontend_get_features(s.fe, &v), -ETIMEDOUT);
	scripted_stop(&s);
}

Test(roundtrip, peer_gone)
{
	struct scripted s;
	uint64_t v;
	int r;

	scripted_start(&s, 0);
	close(s.sv[1]);
	r = uvh_frontend_get_features(s.fe, &v);
	cr_assert(r == -EPIPE || r == -ECONNRESET, "got %d", r);
	cr_assert_eq(uvh_frontend_get_features(s.fe, &v), -ENOTCONN);
	uvh_frontend_free(s.fe);
	cr_assert_eq(t_count_fds(), s.fds_before);
}

Test(roundtrip, accept_role)
{
	struct rt rt;
	uint64_t f = 0;

	/* The front-end listens, the back-end connects. */
	signal(SIGPIPE, SIG_IGN);
	memset(&rt, 0, sizeof(rt));
	rt.fds_before = t_count_fds();
	rt.rec.offered_features = OFFERED_F;
	rt.rec.offered_pf = OFFERED_PF;
	rt.rec.fd = -1;
	rt.rec.chan_fd = -1;
	rt.rec.reply_fd = t_memfd("reply", 4096);
	t_socket_path(rt.path, sizeof(rt.path), "fe-accept");
	cr_assert_eq(pthread_create(&rt.thread, NULL, backend_thread, &rt), 0);
	cr_assert_eq(uvh_frontend_accept(rt.path, NULL, 5000, &rt.fe), 0);
	/* One back-end per front-end: the listening socket is gone. */
	cr_assert_eq(access(rt.path, F_OK), -1);
	cr_assert_eq(uvh_frontend_negotiate(rt.fe, ~0ull, ~0ull, &f, NULL), 0);
	cr_assert_eq(f, OFFERED_F);
	do_net(&rt);
	rt_stop(&rt);
}

Test(roundtrip, accept_timeout)
{
	char path[108];
	struct uvh_frontend *fe = NULL;
	int before = t_count_fds();

	/* Nobody connects: the listener is gone afterwards. */
	t_socket_path(path, sizeof(path), "fe-accept");
	cr_assert_eq(uvh_frontend_accept(path, NULL, 50, &fe), -ETIMEDOUT);
	cr_assert_null(fe);
	cr_assert_eq(access(path, F_OK), -1);
	cr_assert_eq(uvh_frontend_from_fd(-1), NULL);
	cr_assert_eq(errno, EBADF);
	cr_assert_eq(t_count_fds(), before);
}
