/* SPDX-License-Identifier: MIT */
/*
 * backend_req.c driven over a socketpair by a raw peer: hand-built
 * messages go in with sendmsg(), replies are read back raw, and a small
 * recording device stands behind the ops.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"
#include "backend_req.h"
#include "t_fds.h"
#include "t_helpers.h"

#define V		UVH_FLAG_VERSION
#define NEED		(UVH_FLAG_VERSION | UVH_FLAG_NEED_REPLY)
#define PF(name)	UVH_BIT(UVH_PROTOCOL_F_##name)
#define F_PROTO		UVH_BIT(UVH_F_PROTOCOL_FEATURES)
#define F_V1		UVH_BIT(UVH_VIRTIO_F_VERSION_1)
#define QUEUES		2u

/* ---- the recording device ------------------------------------------------ */

static struct dev {
	uint64_t offered, offered_protocol;
	int calls[UVH_REQ_MAX];
	int fail;		/* every op returns this */
	uint32_t index, num;
	uint64_t u64;
	int fd_state;		/* last fd given: 1 valid, 0 none (-1), -1 not seen */
	unsigned int nregions;
	int reply_fd;		/* GET_INFLIGHT_FD / SET_DEVICE_STATE_FD hand this out */
} D;

static void got_fd(int fd)
{
	D.fd_state = fd < 0 ? 0 : fcntl(fd, F_GETFD) >= 0 ? 1 : -2;
	if (fd >= 0)
		close(fd);
}

#define CALLED(name)	(D.calls[UVH_REQ_##name]++)

static int d_set_owner(void *dev) { (void)dev; CALLED(SET_OWNER); return D.fail; }
static int d_reset_device(void *dev) { (void)dev; CALLED(RESET_DEVICE); return D.fail; }

static int d_get_features(void *dev, uint64_t *f)
{
	(void)dev;
	CALLED(GET_FEATURES);
	*f = D.offered;
	return D.fail;
}

static int d_set_features(void *dev, uint64_t f)
{
	(void)dev;
	CALLED(SET_FEATURES);
	D.u64 = f;
	return D.fail;
}

static int d_get_protocol_features(void *dev, uint64_t *f)
{
	(void)dev;
	CALLED(GET_PROTOCOL_FEATURES);
	*f = D.offered_protocol;
	return D.fail;
}

static int d_set_protocol_features(void *dev, uint64_t f)
{
	(void)dev;
	CALLED(SET_PROTOCOL_FEATURES);
	D.u64 = f;
	return D.fail;
}

static int d_set_mem_table(void *dev, const struct uvh_mem_region *r, const int *fds,
			   unsigned int n)
{
	(void)dev;
	(void)r;
	CALLED(SET_MEM_TABLE);
	D.nregions = n;
	for (unsigned int i = 0; i < n; i++)
		got_fd(fds[i]);
	return D.fail;
}

static int d_set_log_base(void *dev, const struct uvh_dirty_log_area *log, int fd)
{
	(void)dev;
	CALLED(SET_LOG_BASE);
	D.u64 = log->mmap_size;
	got_fd(fd);
	return D.fail;
}

static int d_set_vring_num(void *dev, uint32_t index, uint32_t num)
{
	(void)dev;
	CALLED(SET_VRING_NUM);
	D.index = index;
	D.num = num;
	return D.fail;
}

static int d_set_vring_addr(void *dev, const struct uvh_vring_addr *a)
{
	(void)dev;
	CALLED(SET_VRING_ADDR);
	D.index = a->index;
	return D.fail;
}

static int d_set_vring_base(void *dev, uint32_t index, uint32_t base)
{
	(void)dev;
	CALLED(SET_VRING_BASE);
	D.index = index;
	D.num = base;
	return D.fail;
}

static int d_get_vring_base(void *dev, uint32_t index, uint32_t *base)
{
	(void)dev;
	CALLED(GET_VRING_BASE);
	D.index = index;
	*base = 0x1234;
	return D.fail;
}

static int d_set_vring_kick(void *dev, uint32_t index, int fd)
{
	(void)dev;
	CALLED(SET_VRING_KICK);
	D.index = index;
	got_fd(fd);
	return D.fail;
}

static int d_set_vring_call(void *dev, uint32_t index, int fd)
{
	(void)dev;
	CALLED(SET_VRING_CALL);
	D.index = index;
	got_fd(fd);
	return D.fail;
}

static int d_set_vring_enable(void *dev, uint32_t index, bool on)
{
	(void)dev;
	CALLED(SET_VRING_ENABLE);
	D.index = index;
	D.num = on;
	return D.fail;
}

static int d_get_config(void *dev, uint32_t offset, uint32_t size, uint32_t flags,
			uint8_t *buf)
{
	(void)dev;
	(void)flags;
	CALLED(GET_CONFIG);
	for (uint32_t i = 0; i < size; i++)
		buf[i] = (uint8_t)(offset + i);
	return D.fail;
}

static int d_get_inflight_fd(void *dev, const struct uvh_inflight *in,
			     struct uvh_inflight *out, int *fd)
{
	(void)dev;
	CALLED(GET_INFLIGHT_FD);
	if (D.fail)
		return D.fail;
	*out = *in;
	out->mmap_size = 4096;
	*fd = t_memfd("inflight", 4096);
	D.reply_fd = *fd;
	return 0;
}

static int d_set_device_state_fd(void *dev, uint32_t dir, uint32_t phase, int fd,
				 int *out_fd)
{
	(void)dev;
	(void)phase;
	CALLED(SET_DEVICE_STATE_FD);
	D.num = dir;
	got_fd(fd);
	*out_fd = -1;
	return D.fail;
}

static int d_add_mem_reg(void *dev, const struct uvh_mem_region *r, int fd)
{
	(void)dev;
	(void)r;
	CALLED(ADD_MEM_REG);
	got_fd(fd);
	return D.fail;
}

static int d_rem_mem_reg(void *dev, const struct uvh_mem_region *r)
{
	(void)dev;
	(void)r;
	CALLED(REM_MEM_REG);
	return D.fail;
}

/* set_vring_err, get_queue_num and many more stay NULL on purpose. */
static const struct uvh_backend_handler_ops ops = {
	.set_owner = d_set_owner,
	.get_features = d_get_features,
	.set_features = d_set_features,
	.get_protocol_features = d_get_protocol_features,
	.set_protocol_features = d_set_protocol_features,
	.set_mem_table = d_set_mem_table,
	.set_log_base = d_set_log_base,
	.set_vring_num = d_set_vring_num,
	.set_vring_addr = d_set_vring_addr,
	.set_vring_base = d_set_vring_base,
	.get_vring_base = d_get_vring_base,
	.set_vring_kick = d_set_vring_kick,
	.set_vring_call = d_set_vring_call,
	.set_vring_enable = d_set_vring_enable,
	.get_config = d_get_config,
	.get_inflight_fd = d_get_inflight_fd,
	.set_device_state_fd = d_set_device_state_fd,
	.add_mem_reg = d_add_mem_reg,
	.rem_mem_reg = d_rem_mem_reg,
	.reset_device = d_reset_device,
};

/* ---- the raw peer ----------------------------------------------------------- */

static int peer = -1;
static struct uvh_backend_req *req;

static void setup(void)
{
	int sv[2];

	memset(&D, 0, sizeof(D));
	D.fd_state = -1;
	D.reply_fd = -1;
	D.offered = F_PROTO | F_V1 | UVH_BIT(UVH_VIRTIO_F_IOMMU_PLATFORM);
	D.offered_protocol = PF(MQ) | PF(LOG_SHMFD) | PF(REPLY_ACK) | PF(BACKEND_REQ) |
			     PF(CONFIG) | PF(INFLIGHT_SHMFD) | PF(RESET_DEVICE) |
			     PF(INBAND_NOTIFICATIONS) | PF(CONFIGURE_MEM_SLOTS) |
			     PF(DEVICE_STATE);
	t_socketpair(sv);
	peer = sv[0];
	req = uvh_backend_req_new(sv[1], &ops, &D, QUEUES);
	cr_assert_not_null(req);
	t_log_capture();
}

static void teardown(void)
{
	uvh_backend_req_free(req);
	close(peer);
}

TestSuite(backend_req, .init = setup, .fini = teardown);

static void send_raw(uint32_t id, uint32_t flags, const void *payload, uint32_t size,
		     const int *fds, unsigned int nfds)
{
	struct uvh_msg_header hdr = { .request = id, .flags = flags, .size = size };
	struct iovec iov[2] = {
		{ .iov_base = &hdr, .iov_len = sizeof(hdr) },
		{ .iov_base = (void *)payload, .iov_len = size },
	};
	struct t_fds_cmsg c;
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = size ? 2 : 1 };

	t_fds_attach(&mh, &c, fds, nfds);
	cr_assert_eq(sendmsg(peer, &mh, 0), (ssize_t)(sizeof(hdr) + size));
}

/* Send a request with @nfds fresh eventfds (our copies closed), handle it. */
static int call(uint32_t id, uint32_t flags, const void *payload, uint32_t size,
		unsigned int nfds)
{
	int fds[16] = { 0 };

	for (unsigned int i = 0; i < nfds; i++)
		fds[i] = t_eventfd();
	send_raw(id, flags, payload, size, fds, nfds);
	for (unsigned int i = 0; i < nfds; i++)
		close(fds[i]);
	return uvh_backend_req_handle(req);
}

static int call_u64(uint32_t id, uint32_t flags, uint64_t v, unsigned int nfds)
{
	return call(id, flags, &v, sizeof(v), nfds);
}

static int call_state(uint32_t id, uint32_t flags, uint32_t index, uint32_t num)
{
	struct uvh_vring_state s = { .index = index, .num = num };

	return call(id, flags, &s, sizeof(s), 0);
}

struct reply {
	struct uvh_msg_header hdr;
	union uvh_msg_payload p;
	int fd;
};

/* Read one reply if there is one (never waits: the handler ran already). */
static bool get_reply(struct reply *r)
{
	struct pollfd pfd = { .fd = peer, .events = POLLIN };
	char buf[sizeof(struct uvh_msg_header) + UVH_MSG_MAX_PAYLOAD];
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(8 * sizeof(int))];
	} c;
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = c.buf, .msg_controllen = sizeof(c.buf) };
	struct cmsghdr *cm;
	ssize_t n;

	memset(r, 0, sizeof(*r));
	r->fd = -1;
	if (poll(&pfd, 1, 0) != 1)
		return false;
	n = recvmsg(peer, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (n <= 0)
		return false;	/* EOF: no reply */
	cr_assert_geq(n, (ssize_t)sizeof(r->hdr));
	memcpy(&r->hdr, buf, sizeof(r->hdr));
	cr_assert_eq((size_t)n, sizeof(r->hdr) + r->hdr.size, "one whole reply");
	memcpy(&r->p, buf + sizeof(r->hdr), r->hdr.size);
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_type == SCM_RIGHTS)
			memcpy(&r->fd, CMSG_DATA(cm), sizeof(int));
	return true;
}

static void expect_no_reply(void)
{
	struct reply r;

	cr_assert_not(get_reply(&r), "unexpected reply to request %u", r.hdr.request);
}

/* A u64 reply (or ack) to @id with value @v. */
static void expect_u64(uint32_t id, uint64_t v)
{
	struct reply r;

	cr_assert(get_reply(&r), "no reply to %s", uvh_frontend_request_name(id));
	cr_assert_eq(r.hdr.request, id);
	cr_assert_eq(r.hdr.flags, UVH_FLAG_REPLY | UVH_FLAG_VERSION);
	cr_assert_eq(r.hdr.size, 8);
	cr_assert_eq(r.p.u64, v, "reply 0x%llx, expected 0x%llx",
		     (unsigned long long)r.p.u64, (unsigned long long)v);
	cr_assert_eq(r.fd, -1);
}

static void expect_log(const char *line)
{
	cr_assert(t_log_contains(line), "log line \"%s\" missing", line);
}

static void negotiate(uint64_t features, uint64_t protocol)
{
	cr_assert_eq(call_u64(UVH_REQ_SET_FEATURES, V, features, 0), 0);
	if (protocol)
		cr_assert_eq(call_u64(UVH_REQ_SET_PROTOCOL_FEATURES, V, protocol, 0), 0);
	cr_assert_eq(uvh_backend_req_features(req), features);
	cr_assert_eq(uvh_backend_req_protocol_features(req), protocol);
}

static const struct uvh_backend_vring_state *ring(uint32_t i)
{
	return uvh_backend_req_vring(req, i);
}

/* ---- header-level errors: always close ------------------------------------ */

Test(backend_req, unknown_request_closes)
{
	int before = t_count_fds();

	cr_assert_eq(call(99, V, NULL, 0, 1), -EPROTO);
	expect_log("unknown request 99");
	cr_assert_eq(call(0, NEED, NULL, 0, 0), -EPROTO);
	expect_log("unknown request 0");
	expect_no_reply();
	cr_assert_eq(t_count_fds(), before, "the fd sent along was closed");
}

Test(backend_req, reply_flag_from_frontend_closes)
{
	int before = t_count_fds();

	cr_assert_eq(call(UVH_REQ_GET_FEATURES, V | UVH_FLAG_REPLY, NULL, 0, 1), -EBADMSG);
	expect_log("GET_FEATURES: REPLY flag set on a request");
	expect_no_reply();
	cr_assert_eq(D.calls[UVH_REQ_GET_FEATURES], 0);
	cr_assert_eq(t_count_fds(), before);
}

Test(backend_req, process_rejects_bad_flags)
{
	struct uvh_msg msg = { .hdr = { .request = UVH_REQ_SET_OWNER, .flags = 2 } };

	cr_assert_eq(uvh_backend_req_process(req, &msg), -EBADMSG);
	expect_log("SET_OWNER: bad version or reserved flags 0x2");
	msg.hdr.flags = V | 0x100;
	cr_assert_eq(uvh_backend_req_process(req, &msg), -EBADMSG);
	expect_log("SET_OWNER: bad version or reserved flags 0x101");
	cr_assert_eq(D.calls[UVH_REQ_SET_OWNER], 0);
}

/* ---- size and fds ------------------------------------------------------------ */

Test(backend_req, wrong_size)
{
	uint32_t half = 64;
	int before = t_count_fds();

	cr_assert_eq(call(UVH_REQ_SET_VRING_NUM, V, &half, sizeof(half), 0), -EMSGSIZE);
	expect_log("SET_VRING_NUM: payload size 4 is invalid");
	cr_assert_eq(call(UVH_REQ_SET_OWNER, V, &half, sizeof(half), 0), -EMSGSIZE);
	expect_no_reply();
	cr_assert_eq(D.calls[UVH_REQ_SET_VRING_NUM] + D.calls[UVH_REQ_SET_OWNER], 0);
	cr_assert_eq(t_count_fds(), before);
}

Test(backend_req, too_few_fds)
{
	int before = t_count_fds();

	cr_assert_eq(call_u64(UVH_REQ_SET_VRING_KICK, V, 0, 0), -EBADF);
	expect_log("SET_VRING_KICK: 0 fds attached, 1 to 1 expected");
	cr_assert_eq(call_u64(UVH_REQ_SET_LOG_FD, V, 0, 0), -EBADF);
	expect_no_reply();
	cr_assert_eq(D.calls[UVH_REQ_SET_VRING_KICK], 0);
	cr_assert_not(ring(0)->started);
	cr_assert_eq(t_count_fds(), before);
}

Test(backend_req, too_many_fds_are_closed)
{
	int before = t_count_fds();

	cr_assert_eq(call_u64(UVH_REQ_SET_VRING_CALL, V, 1, 3), -EBADF);
	expect_log("SET_VRING_CALL: 3 fds attached, 1 to 1 expected");
	/* The "no fd" bit says none may come. */
	cr_assert_eq(call_u64(UVH_REQ_SET_VRING_CALL, V, 1 | UVH_VRING_NOFD_MASK, 1), -EBADF);
	cr_assert_eq(call(UVH_REQ_SET_OWNER, V, NULL, 0, 2), -EBADF);
	expect_log("SET_OWNER: 2 fds attached, 0 to 0 expected");
	expect_no_reply();
	cr_assert_eq(D.calls[UVH_REQ_SET_VRING_CALL] + D.calls[UVH_REQ_SET_OWNER], 0);
	cr_assert_eq(t_count_fds(), before, "every fd was closed");
}

/* ---- gates ------------------------------------------------------------------ */

Test(backend_req, ungated_requests)
{
	int before = t_count_fds();

	cr_assert_eq(call(UVH_REQ_GET_QUEUE_NUM, V, NULL, 0, 0), -ENOPROTOOPT);
	expect_log("GET_QUEUE_NUM: protocol feature MQ is not negotiated");
	expect_no_reply();
	cr_assert_eq(call_state(UVH_REQ_SET_VRING_ENABLE, V, 0, 1), -ENOPROTOOPT);
	expect_log("SET_VRING_ENABLE: virtio feature bit 30 is not acked");
	cr_assert_eq(call(UVH_REQ_SET_BACKEND_REQ_FD, V, NULL, 0, 1), -ENOPROTOOPT);
	expect_log("SET_BACKEND_REQ_FD: protocol feature BACKEND_REQ is not negotiated");
	cr_assert_eq(D.calls[UVH_REQ_SET_VRING_ENABLE], 0);
	cr_assert_eq(t_count_fds(), before);
}

Test(backend_req, gates_open_after_negotiation)
{
	struct reply r;

	negotiate(F_PROTO | F_V1, PF(MQ));
	cr_assert_eq(call(UVH_REQ_GET_QUEUE_NUM, V, NULL, 0, 0), 0);
	expect_u64(UVH_REQ_GET_QUEUE_NUM, QUEUES);	/* NULL op: the declared count */
	cr_assert_eq(call_state(UVH_REQ_SET_VRING_ENABLE, V, 1, 1), 0);
	cr_assert(ring(1)->enabled);
	cr_assert_not(ring(0)->enabled);
	cr_assert_not(get_reply(&r));
}

Test(backend_req, iotlb_needs_iommu_platform)
{
	struct uvh_iotlb m = { .iova = 0x1000, .size = 0x1000, .uaddr = 0x7000,
			       .perm = UVH_IOTLB_RW, .type = UVH_IOTLB_UPDATE };

	/* IOTLB_MSG always replies with a u64: the failure is the errno. */
	cr_assert_eq(call(UVH_REQ_IOTLB_MSG, V, &m, sizeof(m), 0), 0);
	expect_u64(UVH_REQ_IOTLB_MSG, ENOPROTOOPT);
	expect_log("IOTLB_MSG: virtio feature bit 33 is not acked");
	negotiate(F_PROTO | F_V1 | UVH_BIT(UVH_VIRTIO_F_IOMMU_PLATFORM), 0);
	/* No iotlb_msg op: -ENOSYS. A miss is not a front-end request. */
	cr_assert_eq(call(UVH_REQ_IOTLB_MSG, V, &m, sizeof(m), 0), 0);
	expect_u64(UVH_REQ_IOTLB_MSG, ENOSYS);
	m.type = UVH_IOTLB_MISS;
	cr_assert_eq(call(UVH_REQ_IOTLB_MSG, V, &m, UVH_IOTLB_MIN_SIZE, 0), 0);
	expect_u64(UVH_REQ_IOTLB_MSG, EINVAL);
	expect_log("IOTLB_MSG: IOTLB type 1 is not a front-end request");
}

Test(backend_req, protocol_features_need_f_protocol_features)
{
	D.offered = F_V1;
	cr_assert_eq(call(UVH_REQ_GET_PROTOCOL_FEATURES, V, NULL, 0, 0), -ENOPROTOOPT);
	expect_log("GET_PROTOCOL_FEATURES: the device does not offer F_PROTOCOL_FEATURES");
	expect_no_reply();
	cr_assert_eq(call_u64(UVH_REQ_SET_PROTOCOL_FEATURES, V, PF(MQ), 0), -ENOPROTOOPT);
	cr_assert_eq(uvh_backend_req_protocol_features(req), 0);
}

Test(backend_req, set_protocol_features_keeps_the_offered_subset)
{
	uint64_t want = PF(MQ) | PF(REPLY_ACK) | PF(SHMEM) | UVH_BIT(40);

	cr_assert_eq(call(UVH_REQ_GET_PROTOCOL_FEATURES, V, NULL, 0, 0), 0);
	expect_u64(UVH_REQ_GET_PROTOCOL_FEATURES, D.offered_protocol);
	cr_assert_eq(call_u64(UVH_REQ_SET_PROTOCOL_FEATURES, V, want, 0), 0);
	cr_assert_eq(uvh_backend_req_protocol_features(req), PF(MQ) | PF(REPLY_ACK));
	cr_assert_eq(D.u64, PF(MQ) | PF(REPLY_ACK), "the device sees the subset");
	expect_log("ignoring protocol features 0x10000400000 that were not offered");
}

Test(backend_req, inband_notifications_need_backend_req_and_reply_ack)
{
	uint64_t want = PF(INBAND_NOTIFICATIONS) | PF(REPLY_ACK);

	cr_assert_eq(call_u64(UVH_REQ_SET_PROTOCOL_FEATURES, V, want, 0), -EINVAL);
	expect_log("SET_PROTOCOL_FEATURES: INBAND_NOTIFICATIONS needs BACKEND_REQ and REPLY_ACK");
	cr_assert_eq(uvh_backend_req_protocol_features(req), 0);
	want |= PF(BACKEND_REQ);
	cr_assert_eq(call_u64(UVH_REQ_SET_PROTOCOL_FEATURES, V, want, 0), 0);
	cr_assert_eq(uvh_backend_req_protocol_features(req), want);
}

Test(backend_req, set_features_rejects_bits_not_offered)
{
	cr_assert_eq(call_u64(UVH_REQ_SET_FEATURES, V, F_V1 | UVH_BIT(50), 0), -EINVAL);
	expect_log("SET_FEATURES: features 0x4000000000000 were not offered");
	cr_assert_eq(D.calls[UVH_REQ_SET_FEATURES], 0);
	cr_assert_eq(uvh_backend_req_features(req), 0);
}

/* ---- vring indices and ring states ------------------------------------------ */

Test(backend_req, vring_index_beyond_queue_count)
{
	int before = t_count_fds();

	cr_assert_eq(call_state(UVH_REQ_SET_VRING_NUM, V, QUEUES, 256), -ERANGE);
	expect_log("SET_VRING_NUM: vring 2 is beyond the 2 queues");
	cr_assert_eq(call_u64(UVH_REQ_SET_VRING_KICK, V, 200, 1), -ERANGE);
	expect_log("SET_VRING_KICK: vring 200 is beyond the 2 queues");
	cr_assert_eq(call_state(UVH_REQ_GET_VRING_BASE, V, 0xffffffffu, 0), -ERANGE);
	expect_no_reply();
	cr_assert_eq(D.calls[UVH_REQ_SET_VRING_NUM] + D.calls[UVH_REQ_SET_VRING_KICK] +
		     D.calls[UVH_REQ_GET_VRING_BASE], 0);
	cr_assert_null(uvh_backend_req_vring(req, QUEUES));
	cr_assert_eq(t_count_fds(), before);
}

Test(backend_req, reserved_bits_in_vring_file_payload)
{
	int before = t_count_fds();

	cr_assert_eq(call_u64(UVH_REQ_SET_VRING_KICK, V, UVH_BIT(40), 1), -EINVAL);
	expect_log("SET_VRING_KICK: reserved bits set in 0x10000000000");
	cr_assert_eq(t_count_fds(), before);
}

Test(backend_req, set_vring_addr_on_a_started_ring)
{
	struct uvh_vring_addr a = { .index = 1, .desc_user_addr = 0x1000,
				    .used_user_addr = 0x2000, .avail_user_addr = 0x3000 };
	int before = t_count_fds();

	cr_assert_eq(call(UVH_REQ_SET_VRING_ADDR, V, &a, sizeof(a), 0), 0);
	cr_assert_eq(call_u64(UVH_REQ_SET_VRING_KICK, V, 1, 1), 0);
	cr_assert(ring(1)->started);
	/* SET_VRING_ADDR reaches the device on a started ring: QEMU sets the
	 * LOG flag so at migration start; the device decides (it refuses a
	 * move, devhost.c) */
	a.flags = UVH_VRING_F_LOG;
	cr_assert_eq(call(UVH_REQ_SET_VRING_ADDR, V, &a, sizeof(a), 0), 0);
	cr_assert_eq(D.calls[UVH_REQ_SET_VRING_ADDR], 2);
	cr_assert_eq(call_state(UVH_REQ_SET_VRING_NUM, V, 1, 256), -EBUSY);
	cr_assert_eq(call_state(UVH_REQ_SET_VRING_BASE, V, 1, 0), -EBUSY);
	/* Ring 0 is still stopped: allowed there. */
	a.index = 0;
	a.flags = 0;
	cr_assert_eq(call(UVH_REQ_SET_VRING_ADDR, V, &a, sizeof(a), 0), 0);
	cr_assert_eq(t_count_fds(), before);
}

Test(backend_req, ring_state_transitions)
{
	struct reply r;
	int before = t_count_fds();

	for (uint32_t i = 0; i < QUEUES; i++)
		cr_assert(!ring(i)->started && !ring(i)->enabled, "rings start stopped+disabled");
	negotiate(F_PROTO | F_V1, 0);
	cr_assert_not(ring(0)->enabled, "PROTOCOL_FEATURES acked: rings wait for ENABLE");

	cr_assert_eq(call_state(UVH_REQ_SET_VRING_NUM, V, 0, 256), 0);
	cr_assert_eq(ring(0)->num, 256);
	cr_assert_eq(call_u64(UVH_REQ_SET_VRING_KICK, V, 0, 1), 0);
	cr_assert_eq(D.fd_state, 1, "the device got a valid kick fd");
	cr_assert(ring(0)->started, "SET_VRING_KICK starts the ring");
	cr_assert_not(ring(1)->started);
	cr_assert_eq(call_state(UVH_REQ_SET_VRING_ENABLE, V, 0, 1), 0);
	cr_assert(ring(0)->enabled);
	cr_assert_eq(call_state(UVH_REQ_SET_VRING_ENABLE, V, 0, 2), -EINVAL);

	cr_assert_eq(call_state(UVH_REQ_GET_VRING_BASE, V, 0, 0), 0);
	cr_assert(get_reply(&r));
	cr_assert_eq(r.hdr.request, UVH_REQ_GET_VRING_BASE);
	cr_assert_eq(r.hdr.flags, UVH_FLAG_REPLY | UVH_FLAG_VERSION);
	cr_assert_eq(r.hdr.size, 8);
	cr_assert_eq(r.p.state.index, 0);
	cr_assert_eq(r.p.state.num, 0x1234);
	cr_assert_not(ring(0)->started, "GET_VRING_BASE stops the ring");
	cr_assert(ring(0)->enabled, "and leaves it enabled");

	/* The "no fd" kick: polling mode, the device gets -1. */
	cr_assert_eq(call_u64(UVH_REQ_SET_VRING_KICK, V, 1 | UVH_VRING_NOFD_MASK, 0), 0);
	cr_assert_eq(D.fd_state, 0);
	cr_assert(ring(1)->started);
	cr_assert_eq(t_count_fds(), before);
}

Test(backend_req, set_features_without_protocol_features_enables_all)
{
	negotiate(F_V1, 0);
	for (uint32_t i = 0; i < QUEUES; i++) {
		cr_assert(ring(i)->enabled);
		cr_assert_not(ring(i)->started);
	}
}

Test(backend_req, reset_device_stops_and_disables)
{
	negotiate(F_PROTO | F_V1, PF(RESET_DEVICE) | PF(REPLY_ACK));
	cr_assert_eq(call_u64(UVH_REQ_SET_VRING_KICK, V, 0, 1), 0);
	cr_assert_eq(call_state(UVH_REQ_SET_VRING_ENABLE, V, 0, 1), 0);
	cr_assert_eq(call(UVH_REQ_RESET_DEVICE, NEED, NULL, 0, 0), 0);
	expect_u64(UVH_REQ_RESET_DEVICE, 0);
	cr_assert(!ring(0)->started && !ring(0)->enabled);
	cr_assert_eq(uvh_backend_req_features(req), 0, "device state reset");
	cr_assert_eq(uvh_backend_req_protocol_features(req), PF(RESET_DEVICE) | PF(REPLY_ACK),
		     "connection state kept");
	/* RESET_OWNER with no device op is ignored. */
	cr_assert_eq(call(UVH_REQ_RESET_OWNER, V, NULL, 0, 0), 0);
}

Test(backend_req, vring_num_must_be_a_power_of_two)
{
	cr_assert_eq(call_state(UVH_REQ_SET_VRING_NUM, V, 0, 3), -EINVAL);
	expect_log("SET_VRING_NUM: vring 0 size 3 is invalid");
	cr_assert_eq(call_state(UVH_REQ_SET_VRING_NUM, V, 0, 0), -EINVAL);
	cr_assert_eq(call_state(UVH_REQ_SET_VRING_NUM, V, 0, 65536), -EINVAL);
	cr_assert_eq(D.calls[UVH_REQ_SET_VRING_NUM], 0);
	cr_assert_eq(call_state(UVH_REQ_SET_VRING_NUM, V, 1, 32768), 0);
	cr_assert_eq(D.num, 32768);
}

/* ---- memory ------------------------------------------------------------------- */

static void mem_table(struct uvh_mem_table *t, unsigned int n)
{
	memset(t, 0, sizeof(*t));
	t->nregions = n;
	for (unsigned int i = 0; i < n; i++) {
		t->regions[i].guest_phys_addr = 0x100000ull * i;
		t->regions[i].memory_size = 0x100000;
		t->regions[i].userspace_addr = 0x7f0000000000ull + 0x100000ull * i;
	}
}

static int send_table(const struct uvh_mem_table *t)
{
	return call(UVH_REQ_SET_MEM_TABLE, V, t, 8 + 32 * t->nregions, t->nregions);
}

Test(backend_req, mem_table_regions_must_not_overlap)
{
	struct uvh_mem_table t;
	int before = t_count_fds();

	mem_table(&t, 3);
	t.regions[2].guest_phys_addr = 0x80000;	/* inside region 0 */
	cr_assert_eq(send_table(&t), -EINVAL);
	expect_log("SET_MEM_TABLE: regions at GPA 0x0 and 0x80000 overlap");

	mem_table(&t, 2);
	t.regions[1].userspace_addr = t.regions[0].userspace_addr + 0xfffff;
	cr_assert_eq(send_table(&t), -EINVAL);
	expect_log("overlap");

	mem_table(&t, 2);
	t.regions[1].memory_size = 0;
	cr_assert_eq(send_table(&t), -EINVAL);
	expect_log("SET_MEM_TABLE: region at GPA 0x100000 has size 0");

	mem_table(&t, 1);
	t.regions[0].guest_phys_addr = ~0ull - 0x1000;
	cr_assert_eq(send_table(&t), -EOVERFLOW);
	expect_log("wraps around");

	cr_assert_eq(D.calls[UVH_REQ_SET_MEM_TABLE], 0);
	expect_no_reply();
	cr_assert_eq(t_count_fds(), before, "the region fds were closed");

	mem_table(&t, 4);
	cr_assert_eq(send_table(&t), 0);
	cr_assert_eq(D.nregions, 4);
	cr_assert_eq(t_count_fds(), before);
}

Test(backend_req, mem_table_fd_count_follows_nregions)
{
	struct uvh_mem_table t;
	int before = t_count_fds();

	mem_table(&t, 2);
	cr_assert_eq(call(UVH_REQ_SET_MEM_TABLE, V, &t, 8 + 64, 1), -EBADF);
	cr_assert_eq(call(UVH_REQ_SET_MEM_TABLE, V, &t, 8 + 64, 3), -EBADF);
	t.nregions = 9;
	cr_assert_eq(call(UVH_REQ_SET_MEM_TABLE, V, &t, sizeof(t), 8), -EMSGSIZE);
	cr_assert_eq(t_count_fds(), before);
}

Test(backend_req, add_and_remove_regions)
{
	struct uvh_mem_table t;
	struct uvh_mem_single s = { 0 };
	int before = t_count_fds();

	negotiate(F_PROTO | F_V1, PF(CONFIGURE_MEM_SLOTS) | PF(REPLY_ACK));
	mem_table(&t, 2);
	cr_assert_eq(send_table(&t), 0);

	s.region = t.regions[1];
	s.region.guest_phys_addr = 0x180000;	/* overlaps region 1 in GPA */
	s.region.userspace_addr = 0x600000000000ull;
	cr_assert_eq(call(UVH_REQ_ADD_MEM_REG, NEED, &s, sizeof(s), 1), 0);
	expect_u64(UVH_REQ_ADD_MEM_REG, EINVAL);
	expect_log("ADD_MEM_REG: regions at GPA 0x100000 and 0x180000 overlap");
	cr_assert_eq(D.calls[UVH_REQ_ADD_MEM_REG], 0);

	s.region.guest_phys_addr = 0x200000;
	cr_assert_eq(call(UVH_REQ_ADD_MEM_REG, NEED, &s, sizeof(s), 1), 0);
	expect_u64(UVH_REQ_ADD_MEM_REG, 0);
	cr_assert_eq(D.fd_state, 1);

	/* Removing one we never added is refused; a stray fd is closed. */
	s.region.memory_size = 0x1000;
	cr_assert_eq(call(UVH_REQ_REM_MEM_REG, NEED, &s, sizeof(s), 1), 0);
	expect_u64(UVH_REQ_REM_MEM_REG, ENOENT);
	s.region.memory_size = 0x100000;
	cr_assert_eq(call(UVH_REQ_REM_MEM_REG, NEED, &s, sizeof(s), 1), 0);
	expect_u64(UVH_REQ_REM_MEM_REG, 0);
	cr_assert_eq(D.calls[UVH_REQ_REM_MEM_REG], 1);
	/* Now the same range can be added again. */
	cr_assert_eq(call(UVH_REQ_ADD_MEM_REG, NEED, &s, sizeof(s), 1), 0);
	expect_u64(UVH_REQ_ADD_MEM_REG, 0);
	cr_assert_eq(t_count_fds(), before);
}

/* QEMU runs one vhost device per queue pair on one socket: each adds, and
 * later removes, the same regions. */
Test(backend_req, the_same_region_added_twice_is_counted)
{
	struct uvh_mem_single s = { 0 };
	int before = t_count_fds();

	negotiate(F_PROTO | F_V1, PF(CONFIGURE_MEM_SLOTS) | PF(REPLY_ACK));
	s.region.guest_phys_addr = 0;
	s.region.memory_size = 0x100000;
	s.region.userspace_addr = 0x7f0000000000ull;
	cr_assert_eq(call(UVH_REQ_ADD_MEM_REG, NEED, &s, sizeof(s), 1), 0);
	expect_u64(UVH_REQ_ADD_MEM_REG, 0);
	cr_assert_eq(call(UVH_REQ_ADD_MEM_REG, NEED, &s, sizeof(s), 1), 0);
	expect_u64(UVH_REQ_ADD_MEM_REG, 0);
	cr_assert_eq(D.calls[UVH_REQ_ADD_MEM_REG], 1, "mapped once");
	/* A different mmap_offset is another region, and it overlaps. */
	s.region.mmap_offset = 0x1000;
	cr_assert_eq(call(UVH_REQ_ADD_MEM_REG, NEED, &s, sizeof(s), 1), 0);
	expect_u64(UVH_REQ_ADD_MEM_REG, EINVAL);
	s.region.mmap_offset = 0;
	/* The first removal only drops a reference; the second unmaps. */
	cr_assert_eq(call(UVH_REQ_REM_MEM_REG, NEED, &s, sizeof(s), 0), 0);
	expect_u64(UVH_REQ_REM_MEM_REG, 0);
	cr_assert_eq(D.calls[UVH_REQ_REM_MEM_REG], 0);
	cr_assert_eq(call(UVH_REQ_REM_MEM_REG, NEED, &s, sizeof(s), 0), 0);
	expect_u64(UVH_REQ_REM_MEM_REG, 0);
	cr_assert_eq(D.calls[UVH_REQ_REM_MEM_REG], 1);
	cr_assert_eq(call(UVH_REQ_REM_MEM_REG, NEED, &s, sizeof(s), 0), 0);
	expect_u64(UVH_REQ_REM_MEM_REG, ENOENT);
	cr_assert_eq(t_count_fds(), before);
}

/* QEMU enables rings before SET_FEATURES: an accepted SET_PROTOCOL_FEATURES
 * is proof enough that PROTOCOL_FEATURES is offered. */
Test(backend_req, vring_enable_after_protocol_features_before_set_features)
{
	cr_assert_eq(call(UVH_REQ_GET_FEATURES, V, NULL, 0, 0), 0);
	expect_u64(UVH_REQ_GET_FEATURES, D.offered);
	cr_assert(D.offered & F_PROTO);
	cr_assert_eq(uvh_backend_req_features(req), 0, "nothing acked yet");
	cr_assert_eq(call_u64(UVH_REQ_SET_PROTOCOL_FEATURES, V, 0, 0), 0);
	cr_assert_eq(call_state(UVH_REQ_SET_VRING_ENABLE, V, 0, 1), 0);
	cr_assert(ring(0)->enabled);
}

/* ---- acks and NACKs ------------------------------------------------------------ */

Test(backend_req, nack_instead_of_close_with_reply_ack)
{
	int before = t_count_fds();

	negotiate(F_PROTO | F_V1, PF(REPLY_ACK));
	cr_assert_eq(call_state(UVH_REQ_SET_VRING_NUM, NEED, 0, 3), 0, "connection stays");
	expect_u64(UVH_REQ_SET_VRING_NUM, EINVAL);
	cr_assert_eq(call_state(UVH_REQ_SET_VRING_NUM, NEED, 5, 256), 0);
	expect_u64(UVH_REQ_SET_VRING_NUM, ERANGE);
	cr_assert_eq(call_u64(UVH_REQ_SET_VRING_KICK, NEED, 0, 2), 0);
	expect_u64(UVH_REQ_SET_VRING_KICK, EBADF);
	cr_assert_eq(call_state(UVH_REQ_SET_VRING_NUM, NEED, 0, 256), 0);
	expect_u64(UVH_REQ_SET_VRING_NUM, 0);
	/* No NEED_REPLY: no ack, and a failure closes. */
	cr_assert_eq(call_state(UVH_REQ_SET_VRING_NUM, V, 0, 256), 0);
	expect_no_reply();
	cr_assert_eq(call_state(UVH_REQ_SET_VRING_NUM, V, 0, 3), -EINVAL);
	expect_no_reply();
	/* A device failure is a NACK too. */
	D.fail = -EIO;
	cr_assert_eq(call_state(UVH_REQ_SET_VRING_NUM, NEED, 0, 256), 0);
	expect_u64(UVH_REQ_SET_VRING_NUM, EIO);
	expect_log("SET_VRING_NUM: device failed");
	cr_assert_eq(t_count_fds(), before);
}

Test(backend_req, need_reply_without_reply_ack_is_ignored)
{
	negotiate(F_PROTO | F_V1, PF(MQ));
	cr_assert_eq(call_state(UVH_REQ_SET_VRING_NUM, NEED, 0, 256), 0);
	expect_no_reply();
	cr_assert_eq(call_state(UVH_REQ_SET_VRING_NUM, NEED, 0, 3), -EINVAL);
	expect_no_reply();
}

Test(backend_req, null_op_is_enosys)
{
	int before = t_count_fds();

	cr_assert_eq(call_u64(UVH_REQ_SET_VRING_ERR, V, 0, 1), -ENOSYS);
	expect_log("SET_VRING_ERR: not implemented by the device");
	expect_no_reply();
	negotiate(F_PROTO | F_V1, PF(REPLY_ACK));
	cr_assert_eq(call_u64(UVH_REQ_SET_VRING_ERR, NEED, 1, 1), 0);
	expect_u64(UVH_REQ_SET_VRING_ERR, ENOSYS);
	cr_assert_eq(t_count_fds(), before, "the fd of the NULL op was closed");
}

Test(backend_req, body_reply_with_need_reply_gets_one_reply)
{
	negotiate(F_PROTO | F_V1, PF(REPLY_ACK));
	cr_assert_eq(call(UVH_REQ_GET_FEATURES, NEED, NULL, 0, 0), 0);
	expect_u64(UVH_REQ_GET_FEATURES, D.offered);
	expect_no_reply();
}

/* ---- replies with failure bodies and fds -------------------------------------- */

Test(backend_req, get_config_failure_is_an_empty_reply)
{
	struct uvh_config c = { .offset = 4, .size = 8 };
	struct reply r;

	negotiate(F_PROTO | F_V1, PF(CONFIG));
	cr_assert_eq(call(UVH_REQ_GET_CONFIG, V, &c, 12 + 8, 0), 0);
	cr_assert(get_reply(&r));
	cr_assert_eq(r.hdr.size, 12 + 8);
	cr_assert_eq(r.p.config.offset, 4);
	cr_assert_eq(r.p.config.region[0], 4);
	cr_assert_eq(r.p.config.region[7], 11);

	D.fail = -EIO;
	cr_assert_eq(call(UVH_REQ_GET_CONFIG, V, &c, 12 + 8, 0), 0, "connection stays");
	cr_assert(get_reply(&r));
	cr_assert_eq(r.hdr.request, UVH_REQ_GET_CONFIG);
	cr_assert_eq(r.hdr.size, 0);

	c.offset = 250;	/* 250 + 8 > 256 */
	cr_assert_eq(call(UVH_REQ_GET_CONFIG, V, &c, 12 + 8, 0), 0);
	cr_assert(get_reply(&r));
	cr_assert_eq(r.hdr.size, 0);
	expect_log("GET_CONFIG: config range 250+8 is invalid");
}

Test(backend_req, get_features_failure_closes)
{
	D.fail = -EIO;
	cr_assert_eq(call(UVH_REQ_GET_FEATURES, V, NULL, 0, 0), -EIO);
	expect_log("GET_FEATURES: device failed");
	expect_no_reply();
}

Test(backend_req, get_inflight_fd_reply_carries_the_fd)
{
	struct uvh_inflight in = { .num_queues = 2, .queue_size = 256 };
	struct reply r;
	int before = t_count_fds();

	negotiate(F_PROTO | F_V1, PF(INFLIGHT_SHMFD));
	cr_assert_eq(call(UVH_REQ_GET_INFLIGHT_FD, V, &in, UVH_INFLIGHT_MIN_SIZE, 0), 0);
	cr_assert_geq(D.reply_fd, 0);
	cr_assert_eq(fcntl(D.reply_fd, F_GETFD), -1, "the device's fd was closed once sent");
	cr_assert(get_reply(&r));
	cr_assert_eq(r.hdr.size, UVH_INFLIGHT_MIN_SIZE, "answered in the request's size");
	cr_assert_eq(r.p.inflight.mmap_size, 4096);
	cr_assert_geq(r.fd, 0);
	close(r.fd);

	in.num_queues = 3;	/* more than the device has */
	cr_assert_eq(call(UVH_REQ_GET_INFLIGHT_FD, V, &in, sizeof(in), 0), 0);
	cr_assert(get_reply(&r));
	cr_assert_eq(r.hdr.size, sizeof(in));
	cr_assert_eq(r.p.inflight.mmap_size, 0, "failure: no inflight area");
	cr_assert_eq(r.fd, -1);
	cr_assert_eq(D.calls[UVH_REQ_GET_INFLIGHT_FD], 1);
	cr_assert_eq(t_count_fds(), before);
}

Test(backend_req, set_device_state_fd_without_a_returned_fd)
{
	struct uvh_device_state ds = { .direction = UVH_DEVICE_STATE_LOAD };
	int before = t_count_fds();

	negotiate(F_PROTO | F_V1, PF(DEVICE_STATE));
	cr_assert_eq(call(UVH_REQ_SET_DEVICE_STATE_FD, V, &ds, sizeof(ds), 1), 0);
	expect_u64(UVH_REQ_SET_DEVICE_STATE_FD, UVH_DEVICE_STATE_NOFD);
	cr_assert_eq(D.fd_state, 1);
	ds.phase = 1;
	cr_assert_eq(call(UVH_REQ_SET_DEVICE_STATE_FD, V, &ds, sizeof(ds), 1), 0);
	expect_u64(UVH_REQ_SET_DEVICE_STATE_FD, EINVAL | UVH_DEVICE_STATE_NOFD);
	cr_assert_eq(D.calls[UVH_REQ_SET_DEVICE_STATE_FD], 1);
	cr_assert_eq(t_count_fds(), before);
}

Test(backend_req, set_log_base_with_log_shmfd_always_replies)
{
	struct uvh_dirty_log_area log = { .mmap_size = 0x1000 };
	int before = t_count_fds();

	negotiate(F_PROTO | F_V1, PF(LOG_SHMFD));
	cr_assert_eq(call(UVH_REQ_SET_LOG_BASE, V, &log, sizeof(log), 1), 0);
	expect_u64(UVH_REQ_SET_LOG_BASE, 0);
	cr_assert_eq(D.fd_state, 1);
	cr_assert_eq(call(UVH_REQ_SET_LOG_BASE, V, &log, sizeof(log), 0), 0);
	expect_u64(UVH_REQ_SET_LOG_BASE, EBADF);
	cr_assert_eq(t_count_fds(), before);
}

/* ---- the connection itself ------------------------------------------------------ */

Test(backend_req, get_features_reply_format)
{
	struct reply r;

	cr_assert_eq(call(UVH_REQ_GET_FEATURES, V, NULL, 0, 0), 0);
	cr_assert(get_reply(&r));
	cr_assert_eq(r.hdr.request, UVH_REQ_GET_FEATURES);
	cr_assert_eq(r.hdr.flags, UVH_FLAG_REPLY | UVH_FLAG_VERSION);
	cr_assert_eq(r.hdr.size, 8);
	cr_assert_eq(r.p.u64, D.offered);
	cr_assert_eq(r.fd, -1);
}

Test(backend_req, peer_gone)
{
	close(peer);
	peer = -1;
	cr_assert_eq(uvh_backend_req_handle(req), -ECONNRESET);
}

Test(backend_req, new_rejects_bad_arguments)
{
	int sv[2], before = t_count_fds();

	t_socketpair(sv);
	errno = 0;
	cr_assert_null(uvh_backend_req_new(sv[1], &ops, &D, 0));
	cr_assert_eq(errno, EINVAL);
	cr_assert_eq(fcntl(sv[1], F_GETFD), -1, "the fd was taken and closed");
	close(sv[0]);
	t_socketpair(sv);
	cr_assert_null(uvh_backend_req_new(sv[1], &ops, &D, UVH_BACKEND_MAX_QUEUES + 1));
	close(sv[0]);
	t_socketpair(sv);
	cr_assert_null(uvh_backend_req_new(sv[1], NULL, &D, 1));
	close(sv[0]);
	cr_assert_eq(t_count_fds(), before, "each fd was taken and closed");
}
