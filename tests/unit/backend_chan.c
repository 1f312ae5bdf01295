/* SPDX-License-Identifier: MIT */
/*
 * The back-end channel, both ends: uvh_backend_chan (the back-end's sender)
 * against uvh_frontend_req (the front-end's handler) over a socketpair, and
 * each of them against a raw, hand-driven peer for the malformed cases.
 *
 * A call that waits for an ack blocks, so the handler runs in a thread
 * that serves exactly one request.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "backend_chan.h"
#include "frontend_req.h"
#include "t_fds.h"
#include "t_helpers.h"

#define PF(name)	(1ull << UVH_PROTOCOL_F_##name)
/* Every gate of the back-end table plus fd passing. */
#define PF_GATES	(PF(CONFIG) | PF(HOST_NOTIFIER) | PF(INBAND_NOTIFICATIONS) | \
			 PF(SHARED_OBJECT) | PF(SHMEM) | PF(BACKEND_REQ))
#define PF_ALL		(PF_GATES | PF(BACKEND_SEND_FD))
#define PF_ACK		(PF_ALL | PF(REPLY_ACK))

/* ---- what the front-end's ops saw ----------------------------------------- */

struct rec {
	int calls[UVH_BACKEND_REQ_MAX];
	struct uvh_iotlb iotlb;
	struct uvh_vring_area area;
	uint32_t index;
	struct uvh_shared_object uuid;
	struct uvh_shmem_map map;
	int fd;			/* fd handed to an op (the test closes it) */
	int verdict;		/* what every op returns */
	int lookup_fd;		/* a dup of it is returned by the lookup */
};

static void keep_fd(struct rec *r, int fd)
{
	if (r->fd >= 0)
		close(r->fd);
	r->fd = fd;
}

static int op_iotlb(void *o, const struct uvh_iotlb *m)
{
	struct rec *r = o;

	r->calls[UVH_BACKEND_REQ_IOTLB_MSG]++;
	r->iotlb = *m;
	return r->verdict;
}

static int op_config_change(void *o)
{
	struct rec *r = o;

	r->calls[UVH_BACKEND_REQ_CONFIG_CHANGE_MSG]++;
	return r->verdict;
}

static int op_host_notifier(void *o, const struct uvh_vring_area *a, int fd)
{
	struct rec *r = o;

	r->calls[UVH_BACKEND_REQ_VRING_HOST_NOTIFIER_MSG]++;
	r->area = *a;
	keep_fd(r, fd);
	return r->verdict;
}

static int op_vring_call(void *o, uint32_t index)
{
	struct rec *r = o;

	r->calls[UVH_BACKEND_REQ_VRING_CALL]++;
	r->index = index;
	return r->verdict;
}

static int op_vring_err(void *o, uint32_t index)
{
	struct rec *r = o;

	r->calls[UVH_BACKEND_REQ_VRING_ERR]++;
	r->index = index;
	return r->verdict;
}

static int op_obj_add(void *o, const struct uvh_shared_object *u)
{
	struct rec *r = o;

	r->calls[UVH_BACKEND_REQ_SHARED_OBJECT_ADD]++;
	r->uuid = *u;
	return r->verdict;
}

static int op_obj_remove(void *o, const struct uvh_shared_object *u)
{
	struct rec *r = o;

	r->calls[UVH_BACKEND_REQ_SHARED_OBJECT_REMOVE]++;
	r->uuid = *u;
	return r->verdict;
}

static int op_obj_lookup(void *o, const struct uvh_shared_object *u, int *fd)
{
	struct rec *r = o;

	r->calls[UVH_BACKEND_REQ_SHARED_OBJECT_LOOKUP]++;
	r->uuid = *u;
	*fd = r->lookup_fd >= 0 ? dup(r->lookup_fd) : -1;
	return r->verdict;
}

static int op_shmem_map(void *o, const struct uvh_shmem_map *m, int fd)
{
	struct rec *r = o;

	r->calls[UVH_BACKEND_REQ_SHMEM_MAP]++;
	r->map = *m;
	keep_fd(r, fd);
	return r->verdict;
}

static int op_shmem_unmap(void *o, const struct uvh_shmem_map *m)
{
	struct rec *r = o;

	r->calls[UVH_BACKEND_REQ_SHMEM_UNMAP]++;
	r->map = *m;
	return r->verdict;
}

static const struct uvh_frontend_req_ops rec_ops = {
	.iotlb_msg = op_iotlb,
	.config_change = op_config_change,
	.vring_host_notifier = op_host_notifier,
	.vring_call = op_vring_call,
	.vring_err = op_vring_err,
	.shared_object_add = op_obj_add,
	.shared_object_remove = op_obj_remove,
	.shared_object_lookup = op_obj_lookup,
	.shmem_map = op_shmem_map,
	.shmem_unmap = op_shmem_unmap,
};

/* ---- the requests and their exact payloads --------------------------------- */

static const struct uvh_iotlb the_iotlb = {
	.iova = 0x10000, .size = 0x2000, .uaddr = 0x7f0000001000ull,
	.perm = UVH_IOTLB_RW, .type = UVH_IOTLB_MISS,
};
static const struct uvh_shared_object the_uuid = { .uuid = {
	0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0,
	0x0f, 0xed, 0xcb, 0xa9, 0x87, 0x65, 0x43, 0x21 } };
static const struct uvh_shmem_map the_map = {
	.shmid = 2, .fd_offset = 0x1000, .shm_offset = 0x20000, .len = 0x3000,
	.flags = 1,
};
#define NOTIFIER_INDEX	3u
#define NOTIFIER_SIZE	4096u
#define NOTIFIER_OFFSET	0x8000u
#define CALL_INDEX	5u
#define ERR_INDEX	6u

/* Does request @id carry an fd when sent by send_request()? */
static bool sends_fd(uint32_t id)
{
	return id == UVH_BACKEND_REQ_VRING_HOST_NOTIFIER_MSG ||
	       id == UVH_BACKEND_REQ_SHMEM_MAP;
}

/* Issue request @id through the channel (@fd for those that carry one). */
static int send_request(struct uvh_backend_chan *chan, uint32_t id, int fd, int *out_fd)
{
	switch (id) {
	case UVH_BACKEND_REQ_IOTLB_MSG:
		return uvh_backend_chan_iotlb_msg(chan, &the_iotlb);
	case UVH_BACKEND_REQ_CONFIG_CHANGE_MSG:
		return uvh_backend_chan_config_change(chan);
	case UVH_BACKEND_REQ_VRING_HOST_NOTIFIER_MSG:
		return uvh_backend_chan_vring_host_notifier(chan, NOTIFIER_INDEX, fd,
							    NOTIFIER_SIZE, NOTIFIER_OFFSET);
	case UVH_BACKEND_REQ_VRING_CALL:
		return uvh_backend_chan_vring_call(chan, CALL_INDEX);
	case UVH_BACKEND_REQ_VRING_ERR:
		return uvh_backend_chan_vring_err(chan, ERR_INDEX);
	case UVH_BACKEND_REQ_SHARED_OBJECT_ADD:
		return uvh_backend_chan_shared_object_add(chan, &the_uuid);
	case UVH_BACKEND_REQ_SHARED_OBJECT_REMOVE:
		return uvh_backend_chan_shared_object_remove(chan, &the_uuid);
	case UVH_BACKEND_REQ_SHARED_OBJECT_LOOKUP:
		return uvh_backend_chan_shared_object_lookup(chan, &the_uuid, out_fd);
	case UVH_BACKEND_REQ_SHMEM_MAP:
		return uvh_backend_chan_shmem_map(chan, &the_map, fd);
	case UVH_BACKEND_REQ_SHMEM_UNMAP:
		return uvh_backend_chan_shmem_unmap(chan, &the_map);
	}
	cr_assert_fail("no request %u", id);
	return -1;
}

/* The payload send_request(@id, @fd) must put on the wire. */
static uint32_t expected_payload(uint32_t id, int fd, uint8_t *buf)
{
	struct uvh_vring_area area = {
		.u64 = NOTIFIER_INDEX | (fd < 0 ? UVH_VRING_NOFD_MASK : 0),
		.size = NOTIFIER_SIZE, .offset = NOTIFIER_OFFSET,
	};
	struct uvh_vring_state call = { .index = CALL_INDEX, .num = 0 };
	struct uvh_vring_state err = { .index = ERR_INDEX, .num = 0 };

	switch (id) {
	case UVH_BACKEND_REQ_IOTLB_MSG:
		memcpy(buf, &the_iotlb, sizeof(the_iotlb));
		return sizeof(the_iotlb);
	case UVH_BACKEND_REQ_CONFIG_CHANGE_MSG:
		return 0;
	case UVH_BACKEND_REQ_VRING_HOST_NOTIFIER_MSG:
		memcpy(buf, &area, sizeof(area));
		return sizeof(area);
	case UVH_BACKEND_REQ_VRING_CALL:
		memcpy(buf, &call, sizeof(call));
		return sizeof(call);
	case UVH_BACKEND_REQ_VRING_ERR:
		memcpy(buf, &err, sizeof(err));
		return sizeof(err);
	case UVH_BACKEND_REQ_SHARED_OBJECT_ADD:
	case UVH_BACKEND_REQ_SHARED_OBJECT_REMOVE:
	case UVH_BACKEND_REQ_SHARED_OBJECT_LOOKUP:
		memcpy(buf, &the_uuid, sizeof(the_uuid));
		return sizeof(the_uuid);
	case UVH_BACKEND_REQ_SHMEM_MAP:
	case UVH_BACKEND_REQ_SHMEM_UNMAP:
		memcpy(buf, &the_map, sizeof(the_map));
		return sizeof(the_map);
	}
	cr_assert_fail("no request %u", id);
	return 0;
}

/* What the ops recorded for @id must be exactly what was sent. */
static void assert_recorded(const struct rec *r, uint32_t id, int sent_fd)
{
	for (uint32_t i = 1; i < UVH_BACKEND_REQ_MAX; i++)
		cr_assert_eq(r->calls[i], i == id, "%s called %d times",
			     uvh_backend_request_name(i), r->calls[i]);
	switch (id) {
	case UVH_BACKEND_REQ_IOTLB_MSG:
		cr_assert(!memcmp(&r->iotlb, &the_iotlb, sizeof(the_iotlb)));
		break;
	case UVH_BACKEND_REQ_VRING_HOST_NOTIFIER_MSG:
		cr_assert_eq(r->area.u64, NOTIFIER_INDEX |
			     (sent_fd < 0 ? UVH_VRING_NOFD_MASK : 0));
		cr_assert_eq(r->area.size, NOTIFIER_SIZE);
		cr_assert_eq(r->area.offset, NOTIFIER_OFFSET);
		break;
	case UVH_BACKEND_REQ_VRING_CALL:
		cr_assert_eq(r->index, CALL_INDEX);
		break;
	case UVH_BACKEND_REQ_VRING_ERR:
		cr_assert_eq(r->index, ERR_INDEX);
		break;
	case UVH_BACKEND_REQ_SHARED_OBJECT_ADD:
	case UVH_BACKEND_REQ_SHARED_OBJECT_REMOVE:
	case UVH_BACKEND_REQ_SHARED_OBJECT_LOOKUP:
		cr_assert(!memcmp(&r->uuid, &the_uuid, sizeof(the_uuid)));
		break;
	case UVH_BACKEND_REQ_SHMEM_MAP:
	case UVH_BACKEND_REQ_SHMEM_UNMAP:
		cr_assert(!memcmp(&r->map, &the_map, sizeof(the_map)));
		break;
	default:
		break;
	}
	if (sent_fd >= 0) {
		cr_assert_geq(r->fd, 0, "no fd reached the op");
		cr_assert_neq(r->fd, sent_fd);
		cr_assert(t_same_file(r->fd, sent_fd), "the op got another file");
	} else {
		cr_assert_eq(r->fd, -1, "an fd reached the op");
	}
}

/* ---- a connected pair and a one-request server thread ---------------------- */

struct pair {
	struct uvh_backend_chan *chan;
	struct uvh_frontend_req *fr;
	struct rec rec;
	pthread_t thread;
	int served;		/* uvh_frontend_req_handle()'s result */
};

static void pair_open(struct pair *p, uint64_t chan_pf, uint64_t fr_pf)
{
	int sv[2];

	memset(p, 0, sizeof(*p));
	p->rec.fd = -1;
	p->rec.lookup_fd = -1;
	t_socketpair(sv);
	p->chan = uvh_backend_chan_new(sv[0], chan_pf);
	cr_assert_not_null(p->chan);
	p->fr = uvh_frontend_req_new(sv[1], &rec_ops, &p->rec, fr_pf);
	cr_assert_not_null(p->fr);
	uvh_backend_chan_set_timeout(p->chan, 3000);
}

static void pair_close(struct pair *p)
{
	uvh_backend_chan_free(p->chan);
	uvh_frontend_req_free(p->fr);
	if (p->rec.fd >= 0)
		close(p->rec.fd);
	if (p->rec.lookup_fd >= 0)
		close(p->rec.lookup_fd);
}

static void *serve_one(void *arg)
{
	struct pair *p = arg;

	p->served = uvh_frontend_req_handle(p->fr);
	return NULL;
}

static void serve_start(struct pair *p)
{
	p->served = 1;
	cr_assert_eq(pthread_create(&p->thread, NULL, serve_one, p), 0);
}

static int serve_join(struct pair *p)
{
	cr_assert_eq(pthread_join(p->thread, NULL), 0);
	return p->served;
}

static void init_log(void)
{
	t_log_capture();
}

/*
 * One request three ways: acked success, acked failure (-EIO), and with
 * no REPLY_ACK (the handler's failure stays on the front-end). Each time
 * the exact payload and fd must reach the op and no fd may leak.
 */
static void check_request(uint32_t id)
{
	static const struct { uint64_t pf; int verdict; int want; } modes[] = {
		{ PF_ACK, 0, 0 },
		{ PF_ACK, -EINVAL, -EIO },
		{ PF_ALL, -EINVAL, 0 },
		{ PF_ALL, 0, 0 },
	};

	for (unsigned int m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
		int before = t_count_fds();
		int fd = sends_fd(id) ? t_memfd("chan", 4096) : -1;
		struct pair p;
		int rc;

		pair_open(&p, modes[m].pf, modes[m].pf);
		p.rec.verdict = modes[m].verdict;
		serve_start(&p);
		rc = send_request(p.chan, id, fd, NULL);
		cr_assert_eq(serve_join(&p), 0, "%s mode %u: handler returned %d",
			     uvh_backend_request_name(id), m, p.served);
		cr_assert_eq(rc, modes[m].want, "%s mode %u: got %d, want %d",
			     uvh_backend_request_name(id), m, rc, modes[m].want);
		assert_recorded(&p.rec, id, fd);
		pair_close(&p);
		if (fd >= 0)
			close(fd);
		cr_assert_eq(t_count_fds(), before, "%s mode %u: fd leak",
			     uvh_backend_request_name(id), m);
	}
}

TestSuite(backend_chan, .init = init_log, .timeout = 20);

Test(backend_chan, iotlb_msg) { check_request(UVH_BACKEND_REQ_IOTLB_MSG); }
Test(backend_chan, config_change) { check_request(UVH_BACKEND_REQ_CONFIG_CHANGE_MSG); }
Test(backend_chan, vring_host_notifier) { check_request(UVH_BACKEND_REQ_VRING_HOST_NOTIFIER_MSG); }
Test(backend_chan, vring_call) { check_request(UVH_BACKEND_REQ_VRING_CALL); }
Test(backend_chan, vring_err) { check_request(UVH_BACKEND_REQ_VRING_ERR); }
Test(backend_chan, shared_object_add) { check_request(UVH_BACKEND_REQ_SHARED_OBJECT_ADD); }
Test(backend_chan, shared_object_remove) { check_request(UVH_BACKEND_REQ_SHARED_OBJECT_REMOVE); }
Test(backend_chan, shmem_map) { check_request(UVH_BACKEND_REQ_SHMEM_MAP); }
Test(backend_chan, shmem_unmap) { check_request(UVH_BACKEND_REQ_SHMEM_UNMAP); }

/* Removing a notifier sends no fd, so it needs no BACKEND_SEND_FD. */
Test(backend_chan, host_notifier_remove_without_send_fd)
{
	int before = t_count_fds();
	struct pair p;

	pair_open(&p, PF_GATES | PF(REPLY_ACK), PF_GATES | PF(REPLY_ACK));
	serve_start(&p);
	cr_assert_eq(uvh_backend_chan_vring_host_notifier(p.chan, NOTIFIER_INDEX, -1,
							  NOTIFIER_SIZE, NOTIFIER_OFFSET), 0);
	cr_assert_eq(serve_join(&p), 0);
	assert_recorded(&p.rec, UVH_BACKEND_REQ_VRING_HOST_NOTIFIER_MSG, -1);
	pair_close(&p);
	cr_assert_eq(t_count_fds(), before);
}

/* The lookup always waits for its reply, REPLY_ACK or not. */
Test(backend_chan, shared_object_lookup)
{
	static const uint64_t pfs[] = { PF_ACK, PF_ALL };

	for (unsigned int i = 0; i < 2; i++) {
		int before = t_count_fds();
		int obj = t_memfd("dmabuf", 4096);
		struct pair p;
		int fd = -2;

		/* Found: the object's fd comes back. */
		pair_open(&p, pfs[i], pfs[i]);
		p.rec.lookup_fd = dup(obj);
		serve_start(&p);
		cr_assert_eq(uvh_backend_chan_shared_object_lookup(p.chan, &the_uuid, &fd), 0);
		cr_assert_eq(serve_join(&p), 0);
		assert_recorded(&p.rec, UVH_BACKEND_REQ_SHARED_OBJECT_LOOKUP, -1);
		cr_assert_geq(fd, 0);
		cr_assert(t_same_file(fd, obj));
		close(fd);

		/* The handler fails: -EIO, no fd. */
		p.rec.verdict = -ENOMEM;
		serve_start(&p);
		cr_assert_eq(uvh_backend_chan_shared_object_lookup(p.chan, &the_uuid, &fd), -EIO);
		cr_assert_eq(serve_join(&p), 0);
		cr_assert_eq(fd, -1);

		/* Not found: 0 and no fd on the wire, -ENOENT here. */
		p.rec.verdict = 0;
		close(p.rec.lookup_fd);
		p.rec.lookup_fd = -1;
		serve_start(&p);
		cr_assert_eq(uvh_backend_chan_shared_object_lookup(p.chan, &the_uuid, &fd), -ENOENT);
		cr_assert_eq(serve_join(&p), 0);
		cr_assert_eq(fd, -1);
		cr_assert_eq(p.rec.calls[UVH_BACKEND_REQ_SHARED_OBJECT_LOOKUP], 3);

		pair_close(&p);
		close(obj);
		cr_assert_eq(t_count_fds(), before);
	}
}

/* ---- a raw peer ---------------------------------------------------------- */

static void raw_send(int sock, uint32_t request, uint32_t flags, const void *payload,
		     uint32_t size, const int *fds, unsigned int nfds)
{
	struct uvh_msg_header hdr = { .request = request, .flags = flags, .size = size };
	struct t_fds_cmsg ctl;
	struct iovec iov[2] = {
		{ .iov_base = &hdr, .iov_len = sizeof(hdr) },
		{ .iov_base = (void *)payload, .iov_len = size },
	};
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = size ? 2 : 1 };

	t_fds_attach(&mh, &ctl, fds, nfds);
	cr_assert_eq(sendmsg(sock, &mh, MSG_NOSIGNAL), (ssize_t)(sizeof(hdr) + size));
}

/* Read one message (header with its fds, then the payload). */
static void raw_recv(int sock, struct uvh_msg *msg)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(UVH_MSG_MAX_FDS * sizeof(int))];
	} ctl;
	struct iovec iov = { .iov_base = &msg->hdr, .iov_len = sizeof(msg->hdr) };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf),
	};
	struct cmsghdr *c;

	memset(msg, 0, sizeof(*msg));
	cr_assert_eq(recvmsg(sock, &mh, MSG_CMSG_CLOEXEC), (ssize_t)sizeof(msg->hdr));
	for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			msg->nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			cr_assert_leq(msg->nfds, UVH_MSG_MAX_FDS);
			memcpy(msg->fds, CMSG_DATA(c), msg->nfds * sizeof(int));
		}
	}
	cr_assert_leq(msg->hdr.size, UVH_MSG_MAX_PAYLOAD);
	if (msg->hdr.size)
		cr_assert_eq(recv(sock, msg->payload.raw, msg->hdr.size, MSG_WAITALL),
			     (ssize_t)msg->hdr.size);
}

/* Nothing is waiting on @sock. */
static void assert_nothing_sent(int sock)
{
	char c;

	cr_assert_eq(recv(sock, &c, 1, MSG_DONTWAIT), -1, "something was sent");
	cr_assert_eq(errno, EAGAIN);
}

/* A channel whose peer is a raw socket. */
static struct uvh_backend_chan *raw_chan(uint64_t pf, int *peer)
{
	struct uvh_backend_chan *chan;
	int sv[2];

	t_socketpair(sv);
	chan = uvh_backend_chan_new(sv[0], pf);
	cr_assert_not_null(chan);
	*peer = sv[1];
	return chan;
}

/* A handler whose peer is a raw socket. */
static struct uvh_frontend_req *raw_frontend(uint64_t pf, const struct uvh_frontend_req_ops *ops,
					     struct rec *r, int *peer)
{
	struct uvh_frontend_req *fr;
	int sv[2];

	memset(r, 0, sizeof(*r));
	r->fd = -1;
	r->lookup_fd = -1;
	t_socketpair(sv);
	fr = uvh_frontend_req_new(sv[1], ops, r, pf);
	cr_assert_not_null(fr);
	cr_assert_eq(uvh_frontend_req_fd(fr), sv[1]);
	*peer = sv[0];
	return fr;
}

/* Every request on the wire, byte for byte, with the right flags and fds. */
Test(backend_chan, wire_format)
{
	for (int ack = 0; ack < 2; ack++) {
		for (uint32_t id = 1; id < UVH_BACKEND_REQ_MAX; id++) {
			uint64_t pf = ack ? PF_ACK : PF_ALL;
			int before = t_count_fds();
			int fd = sends_fd(id) ? t_memfd("wire", 4096) : -1;
			bool lookup = id == UVH_BACKEND_REQ_SHARED_OBJECT_LOOKUP;
			uint8_t want[UVH_MSG_MAX_PAYLOAD];
			uint32_t want_size = expected_payload(id, fd, want);
			uint32_t want_flags = UVH_FLAG_VERSION;
			struct uvh_backend_chan *chan;
			struct uvh_msg msg;
			int peer, rc, out_fd = -1;

			if (ack || lookup) {
				want_flags |= UVH_FLAG_NEED_REPLY;
			}
			chan = raw_chan(pf, &peer);
			if (ack || lookup) {
				/* Queue the answer first: the call sends, then reads it. */
				uint64_t zero = 0;

				raw_send(peer, id, UVH_FLAG_REPLY | UVH_FLAG_VERSION, &zero, 8,
					 NULL, 0);
			}
			rc = send_request(chan, id, fd, &out_fd);
			cr_assert_eq(rc, lookup ? -ENOENT : 0, "%s: %d",
				     uvh_backend_request_name(id), rc);
			raw_recv(peer, &msg);
			cr_assert_eq(msg.hdr.request, id);
			cr_assert_eq(msg.hdr.flags, want_flags, "%s: flags 0x%x",
				     uvh_backend_request_name(id), msg.hdr.flags);
			cr_assert_eq(msg.hdr.size, want_size);
			cr_assert(!memcmp(msg.payload.raw, want, want_size), "%s payload",
				  uvh_backend_request_name(id));
			cr_assert_eq(msg.nfds, fd >= 0 ? 1u : 0u);
			if (fd >= 0)
				cr_assert(t_same_file(msg.fds[0], fd));
			uvh_msg_close_fds(&msg);
			assert_nothing_sent(peer);
			uvh_backend_chan_free(chan);
			close(peer);
			if (fd >= 0)
				close(fd);
			cr_assert_eq(t_count_fds(), before);
		}
	}
}

/* ---- back-end side refusals ----------------------------------------------- */

Test(backend_chan, gate_not_negotiated)
{
	for (uint32_t id = 1; id < UVH_BACKEND_REQ_MAX; id++) {
		const struct uvh_request_info *info = uvh_backend_request_info(id);
		int before = t_count_fds();
		int fd = sends_fd(id) ? t_memfd("gate", 4096) : -1;
		/* Everything but this request's own gate. */
		uint64_t pf;
		struct uvh_backend_chan *chan;
		int peer, out_fd = -1;

		if (info->gate_protocol < 0)
			continue;	/* IOTLB_MSG has no protocol gate */
		pf = PF_ACK & ~(1ull << info->gate_protocol);
		t_log_reset();
		chan = raw_chan(pf, &peer);
		cr_assert_eq(send_request(chan, id, fd, &out_fd), -EOPNOTSUPP, "%s",
			     info->name);
		assert_nothing_sent(peer);
		cr_assert(t_log_contains(info->name), "no log line names %s", info->name);
		cr_assert_eq(out_fd, -1);
		uvh_backend_chan_free(chan);
		close(peer);
		if (fd >= 0)
			close(fd);
		cr_assert_eq(t_count_fds(), before);
	}
}

Test(backend_chan, fd_needs_send_fd)
{
	static const uint32_t ids[] = {
		UVH_BACKEND_REQ_VRING_HOST_NOTIFIER_MSG, UVH_BACKEND_REQ_SHMEM_MAP,
	};

	for (unsigned int i = 0; i < 2; i++) {
		int before = t_count_fds();
		int fd = t_memfd("nosendfd", 4096);
		struct uvh_backend_chan *chan = NULL;
		int peer;

		t_log_reset();
		chan = raw_chan(PF_GATES | PF(REPLY_ACK), &peer);
		cr_assert_eq(send_request(chan, ids[i], fd, NULL), -EOPNOTSUPP);
		assert_nothing_sent(peer);
		cr_assert(t_log_contains(uvh_backend_request_name(ids[i])));
		cr_assert(t_log_contains("BACKEND_SEND_FD"));
		uvh_backend_chan_free(chan);
		close(peer);
		close(fd);
		cr_assert_eq(t_count_fds(), before);
	}
}

Test(backend_chan, bad_arguments)
{
	int before = t_count_fds();
	struct uvh_backend_chan *chan;
	int peer, fd = -2;

	chan = raw_chan(PF_ACK, &peer);
	cr_assert_eq(uvh_backend_chan_vring_host_notifier(chan, 256, -1, 0, 0), -EINVAL);
	cr_assert_eq(uvh_backend_chan_shmem_map(chan, &the_map, -1), -EBADF);
	cr_assert_eq(uvh_backend_chan_iotlb_msg(chan, NULL), -EINVAL);
	cr_assert_eq(uvh_backend_chan_shared_object_lookup(chan, NULL, &fd), -EINVAL);
	cr_assert_eq(fd, -1);
	assert_nothing_sent(peer);
	uvh_backend_chan_free(chan);
	close(peer);
	cr_assert_null(uvh_backend_chan_new(-1, 0));
	cr_assert_eq(errno, EBADF);
	cr_assert_eq(t_count_fds(), before);
}

/*
 * Malformed acks: each is -EPROTO, closes any fd it carried, and breaks the
 * channel (-ENOTCONN afterwards, nothing more sent).
 */
Test(backend_chan, bad_ack)
{
	const uint32_t id = UVH_BACKEND_REQ_VRING_CALL;
	static const struct { uint32_t request, flags, size; bool fd; const char *why; } bad[] = {
		{ UVH_BACKEND_REQ_VRING_ERR, UVH_FLAG_REPLY | UVH_FLAG_VERSION, 8, false, "names request" },
		{ UVH_BACKEND_REQ_VRING_CALL, UVH_FLAG_VERSION, 8, false, "flags" },
		{ UVH_BACKEND_REQ_VRING_CALL, UVH_FLAG_REPLY | UVH_FLAG_VERSION |
		  UVH_FLAG_NEED_REPLY, 8, false, "flags" },
		{ UVH_BACKEND_REQ_VRING_CALL, UVH_FLAG_REPLY | UVH_FLAG_VERSION, 4, false, "size" },
		{ UVH_BACKEND_REQ_VRING_CALL, UVH_FLAG_REPLY | UVH_FLAG_VERSION, 16, false, "size" },
		{ UVH_BACKEND_REQ_VRING_CALL, UVH_FLAG_REPLY | UVH_FLAG_VERSION, 8, true, "fds" },
	};

	for (unsigned int i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int before = t_count_fds();
		uint64_t payload[2] = { 0, 0 };
		struct uvh_backend_chan *chan;
		struct uvh_msg msg;
		int peer, efd = -1;

		t_log_reset();
		chan = raw_chan(PF_ACK, &peer);
		if (bad[i].fd)
			efd = t_eventfd();
		raw_send(peer, bad[i].request, bad[i].flags, payload, bad[i].size,
			 &efd, bad[i].fd ? 1 : 0);
		if (efd >= 0)
			close(efd);	/* the channel now holds the only copy */
		cr_assert_eq(uvh_backend_chan_vring_call(chan, 1), -EPROTO, "case %u", i);
		cr_assert(t_log_contains("VRING_CALL"), "case %u", i);
		cr_assert(t_log_contains(bad[i].why), "case %u", i);
		/* The request did go out. */
		raw_recv(peer, &msg);
		cr_assert_eq(msg.hdr.request, id);
		/* Broken: nothing more is sent. */
		cr_assert_eq(uvh_backend_chan_vring_call(chan, 1), -ENOTCONN);
		assert_nothing_sent(peer);
		uvh_backend_chan_free(chan);
		close(peer);
		cr_assert_eq(t_count_fds(), before, "case %u: fd leak", i);
	}
}

/* A lookup reply with two fds is malformed: both closed. */
Test(backend_chan, lookup_reply_two_fds)
{
	int before = t_count_fds();
	struct uvh_backend_chan *chan;
	uint64_t zero = 0;
	int fds[2], peer, fd = -2;

	chan = raw_chan(PF_ACK, &peer);
	fds[0] = t_eventfd();
	fds[1] = t_eventfd();
	raw_send(peer, UVH_BACKEND_REQ_SHARED_OBJECT_LOOKUP, UVH_FLAG_REPLY | UVH_FLAG_VERSION,
		 &zero, 8, fds, 2);
	close(fds[0]);
	close(fds[1]);
	cr_assert_eq(uvh_backend_chan_shared_object_lookup(chan, &the_uuid, &fd), -EPROTO);
	cr_assert_eq(fd, -1);
	uvh_backend_chan_free(chan);
	close(peer);
	cr_assert_eq(t_count_fds(), before);
}

/* A non-zero ack is a verdict, not a protocol error: the channel stays. */
Test(backend_chan, nack_keeps_channel)
{
	int before = t_count_fds();
	struct uvh_backend_chan *chan;
	uint64_t v = ENOSPC, zero = 0;
	struct uvh_msg msg;
	int peer;

	chan = raw_chan(PF_ACK, &peer);
	raw_send(peer, UVH_BACKEND_REQ_VRING_ERR, UVH_FLAG_REPLY | UVH_FLAG_VERSION, &v, 8,
		 NULL, 0);
	cr_assert_eq(uvh_backend_chan_vring_err(chan, 2), -EIO);
	raw_send(peer, UVH_BACKEND_REQ_VRING_ERR, UVH_FLAG_REPLY | UVH_FLAG_VERSION, &zero, 8,
		 NULL, 0);
	cr_assert_eq(uvh_backend_chan_vring_err(chan, 2), 0);
	raw_recv(peer, &msg);
	raw_recv(peer, &msg);
	cr_assert_eq(msg.payload.state.index, 2);
	uvh_backend_chan_free(chan);
	close(peer);
	cr_assert_eq(t_count_fds(), before);
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

Test(backend_chan, ack_timeout)
{
	int before = t_count_fds();
	struct uvh_backend_chan *chan;
	struct uvh_msg_header half = {
		.request = UVH_BACKEND_REQ_CONFIG_CHANGE_MSG,
		.flags = UVH_FLAG_REPLY | UVH_FLAG_VERSION, .size = 8,
	};
	int64_t t0, dt;
	int peer;

	t_log_reset();
	chan = raw_chan(PF_ACK, &peer);
	uvh_backend_chan_set_timeout(chan, 100);
	/* No answer at all. */
	t0 = mono_ms();
	cr_assert_eq(uvh_backend_chan_config_change(chan), -ETIMEDOUT);
	dt = mono_ms() - t0;
	cr_assert_geq(dt, 90);
	cr_assert_lt(dt, 2000);
	cr_assert(t_log_contains("CONFIG_CHANGE_MSG"));
	cr_assert_eq(uvh_backend_chan_config_change(chan), -ENOTCONN);
	uvh_backend_chan_free(chan);
	close(peer);

	/* An answer that stops half way (header only) still times out. */
	chan = raw_chan(PF_ACK, &peer);
	uvh_backend_chan_set_timeout(chan, 100);
	cr_assert_eq(send(peer, &half, sizeof(half), 0), (ssize_t)sizeof(half));
	t0 = mono_ms();
	cr_assert_eq(uvh_backend_chan_config_change(chan), -ETIMEDOUT);
	dt = mono_ms() - t0;
	cr_assert_geq(dt, 90);
	cr_assert_lt(dt, 2000);
	uvh_backend_chan_free(chan);
	close(peer);
	cr_assert_eq(t_count_fds(), before);
}

/* The front-end going away is a transport error, not a hang. */
Test(backend_chan, peer_closed)
{
	int before = t_count_fds();
	struct uvh_backend_chan *chan;
	int peer, rc;

	chan = raw_chan(PF_ACK, &peer);
	close(peer);
	rc = uvh_backend_chan_vring_call(chan, 0);
	cr_assert(rc == -EPIPE || rc == -ECONNRESET, "got %d", rc);
	cr_assert_eq(uvh_backend_chan_vring_call(chan, 0), -ENOTCONN);
	uvh_backend_chan_free(chan);
	cr_assert_eq(t_count_fds(), before);
}

/* ---- front-end side refusals ---------------------------------------------- */

struct raw_case {
	const char *what;
	uint64_t pf;		/* negotiated on the front-end */
	uint32_t request, flags, size;
	uint64_t u64;		/* first payload word */
	unsigned int nfds;
	int want;		/* handle()'s result without an ack */
	const char *log;	/* a log line must contain it */
};

static const struct raw_case raw_cases[] = {
	{ "bad size", PF_ALL, UVH_BACKEND_REQ_VRING_CALL, 0, 4, 1, 0, -EMSGSIZE, "VRING_CALL" },
	{ "bad size with fd", PF_ALL, UVH_BACKEND_REQ_SHMEM_MAP, 0, 32, 0, 1, -EMSGSIZE, "SHMEM_MAP" },
	{ "config change with payload", PF_ALL, UVH_BACKEND_REQ_CONFIG_CHANGE_MSG, 0, 8, 0, 0,
	  -EMSGSIZE, "CONFIG_CHANGE_MSG" },
	{ "unknown id", PF_ALL, 11, 0, 8, 0, 1, -EBADRQC, "UNKNOWN (11)" },
	{ "id zero", PF_ALL, 0, 0, 0, 0, 0, -EBADRQC, "UNKNOWN (0)" },
	{ "REPLY flag", PF_ALL, UVH_BACKEND_REQ_VRING_CALL, UVH_FLAG_REPLY, 8, 1, 1, -EPROTO,
	  "VRING_CALL" },
	{ "unexpected fd", PF_ALL, UVH_BACKEND_REQ_VRING_CALL, 0, 8, 1, 1, -EBADF, "VRING_CALL" },
	{ "two fds", PF_ALL, UVH_BACKEND_REQ_SHMEM_MAP, 0, 40, 0, 2, -EBADF, "SHMEM_MAP" },
	{ "missing fd", PF_ALL, UVH_BACKEND_REQ_SHMEM_MAP, 0, 40, 0, 0, -EBADF, "SHMEM_MAP" },
	{ "fd with no-fd bit", PF_ALL, UVH_BACKEND_REQ_VRING_HOST_NOTIFIER_MSG, 0, 24,
	  UVH_VRING_NOFD_MASK | 1, 1, -EBADF, "VRING_HOST_NOTIFIER_MSG" },
	{ "notifier without fd or no-fd bit", PF_ALL, UVH_BACKEND_REQ_VRING_HOST_NOTIFIER_MSG, 0, 24,
	  1, 0, -EBADF, "VRING_HOST_NOTIFIER_MSG" },
	{ "fd without BACKEND_SEND_FD", PF_GATES, UVH_BACKEND_REQ_VRING_HOST_NOTIFIER_MSG, 0, 24,
	  1, 1, -EPERM, "BACKEND_SEND_FD" },
	{ "map without BACKEND_SEND_FD", PF_GATES, UVH_BACKEND_REQ_SHMEM_MAP, 0, 40, 0, 0, -EPERM,
	  "SHMEM_MAP" },
	{ "gate", PF_ALL & ~PF(INBAND_NOTIFICATIONS), UVH_BACKEND_REQ_VRING_ERR, 0, 8, 1, 0,
	  -EOPNOTSUPP, "INBAND_NOTIFICATIONS" },
	{ "gate with fd", PF_ALL & ~PF(SHMEM), UVH_BACKEND_REQ_SHMEM_MAP, 0, 40, 0, 1,
	  -EOPNOTSUPP, "SHMEM_MAP" },
};

/* Without an ack requested: the specific errno, fds closed, nothing sent. */
Test(backend_chan, frontend_refusals)
{
	for (unsigned int i = 0; i < sizeof(raw_cases) / sizeof(raw_cases[0]); i++) {
		const struct raw_case *c = &raw_cases[i];
		int before = t_count_fds();
		uint64_t payload[8] = { c->u64, 1, 0x1000, 0x1000, 0 };
		struct uvh_frontend_req *fr;
		int fds[2] = { -1, -1 };
		struct rec r;
		int peer, rc;

		t_log_reset();
		fr = raw_frontend(c->pf, &rec_ops, &r, &peer);
		for (unsigned int f = 0; f < c->nfds; f++)
			fds[f] = t_eventfd();
		raw_send(peer, c->request, UVH_FLAG_VERSION | c->flags, payload, c->size,
			 fds, c->nfds);
		for (unsigned int f = 0; f < c->nfds; f++)
			close(fds[f]);
		rc = uvh_frontend_req_handle(fr);
		cr_assert_eq(rc, c->want, "%s: got %d, want %d", c->what, rc, c->want);
		cr_assert(t_log_contains(c->log), "%s: no log line with %s", c->what, c->log);
		cr_assert(t_log_contains("refused"), "%s", c->what);
		for (uint32_t id = 0; id < UVH_BACKEND_REQ_MAX; id++)
			cr_assert_eq(r.calls[id], 0, "%s: an op ran", c->what);
		assert_nothing_sent(peer);
		uvh_frontend_req_free(fr);
		close(peer);
		cr_assert_eq(t_count_fds(), before, "%s: fd leak", c->what);
	}
}

/* Read an ack from the raw peer and return its value. */
static uint64_t read_ack(int peer, uint32_t request)
{
	struct uvh_msg msg;

	raw_recv(peer, &msg);
	cr_assert_eq(msg.hdr.request, request);
	cr_assert_eq(msg.hdr.flags, UVH_FLAG_REPLY | UVH_FLAG_VERSION);
	cr_assert_eq(msg.hdr.size, 8);
	cr_assert_eq(msg.nfds, 0);
	return msg.payload.u64;
}

/*
 * With an ack requested: the refusal is a NACK carrying the errno, the
 * channel stays, and the next request is served. A reply flag is never
 * answered.
 */
Test(backend_chan, frontend_refusals_nack)
{
	for (unsigned int i = 0; i < sizeof(raw_cases) / sizeof(raw_cases[0]); i++) {
		const struct raw_case *c = &raw_cases[i];
		int before = t_count_fds();
		uint64_t payload[8] = { c->u64, 1, 0x1000, 0x1000, 0 };
		struct uvh_frontend_req *fr;
		int fds[2] = { -1, -1 };
		struct rec r;
		int peer, rc;

		fr = raw_frontend(c->pf | PF(REPLY_ACK), &rec_ops, &r, &peer);
		for (unsigned int f = 0; f < c->nfds; f++)
			fds[f] = t_eventfd();
		raw_send(peer, c->request, UVH_FLAG_VERSION | UVH_FLAG_NEED_REPLY | c->flags,
			 payload, c->size, fds, c->nfds);
		for (unsigned int f = 0; f < c->nfds; f++)
			close(fds[f]);
		rc = uvh_frontend_req_handle(fr);
		if (c->flags & UVH_FLAG_REPLY) {
			cr_assert_eq(rc, -EPROTO);
			assert_nothing_sent(peer);
		} else {
			cr_assert_eq(rc, 0, "%s: got %d", c->what, rc);
			cr_assert_eq(read_ack(peer, c->request), (uint64_t)-c->want, "%s",
				     c->what);
			/* Still in step: a good request (allowed by every
			 * case's features) is served. */
			raw_send(peer, UVH_BACKEND_REQ_SHARED_OBJECT_ADD,
				 UVH_FLAG_VERSION | UVH_FLAG_NEED_REPLY, &the_uuid,
				 sizeof(the_uuid), NULL, 0);
			cr_assert_eq(uvh_frontend_req_handle(fr), 0, "%s", c->what);
			cr_assert_eq(read_ack(peer, UVH_BACKEND_REQ_SHARED_OBJECT_ADD), 0);
			cr_assert_eq(r.calls[UVH_BACKEND_REQ_SHARED_OBJECT_ADD], 1);
			cr_assert(!memcmp(&r.uuid, &the_uuid, sizeof(the_uuid)));
		}
		uvh_frontend_req_free(fr);
		close(peer);
		cr_assert_eq(t_count_fds(), before, "%s: fd leak", c->what);
	}
}

/* NEED_REPLY without REPLY_ACK negotiated: served, nothing sent back. */
Test(backend_chan, need_reply_without_reply_ack)
{
	int before = t_count_fds();
	struct uvh_vring_state st = { .index = 4 };
	struct uvh_frontend_req *fr;
	struct rec r;
	int peer;

	fr = raw_frontend(PF_ALL, &rec_ops, &r, &peer);
	raw_send(peer, UVH_BACKEND_REQ_VRING_CALL, UVH_FLAG_VERSION | UVH_FLAG_NEED_REPLY,
		 &st, sizeof(st), NULL, 0);
	cr_assert_eq(uvh_frontend_req_handle(fr), 0);
	cr_assert_eq(r.calls[UVH_BACKEND_REQ_VRING_CALL], 1);
	assert_nothing_sent(peer);
	uvh_frontend_req_free(fr);
	close(peer);
	cr_assert_eq(t_count_fds(), before);
}

/* A NULL op is -ENOSYS: a NACK, and the fd it would have taken closed. */
Test(backend_chan, null_op)
{
	static const struct uvh_frontend_req_ops none;
	int before = t_count_fds();
	struct uvh_frontend_req *fr;
	uint64_t value;
	struct rec r;
	int peer, fd;

	fr = raw_frontend(PF_ACK, &none, &r, &peer);
	fd = t_memfd("nullop", 4096);
	raw_send(peer, UVH_BACKEND_REQ_SHMEM_MAP, UVH_FLAG_VERSION | UVH_FLAG_NEED_REPLY,
		 &the_map, sizeof(the_map), &fd, 1);
	close(fd);
	cr_assert_eq(uvh_frontend_req_handle(fr), 0);
	value = read_ack(peer, UVH_BACKEND_REQ_SHMEM_MAP);
	cr_assert_eq(value, ENOSYS);
	/* The lookup always answers, even with no op. */
	raw_send(peer, UVH_BACKEND_REQ_SHARED_OBJECT_LOOKUP, UVH_FLAG_VERSION,
		 &the_uuid, sizeof(the_uuid), NULL, 0);
	cr_assert_eq(uvh_frontend_req_handle(fr), 0);
	cr_assert_eq(read_ack(peer, UVH_BACKEND_REQ_SHARED_OBJECT_LOOKUP), ENOSYS);
	uvh_frontend_req_free(fr);
	close(peer);

	/* No ops struct at all behaves the same. */
	{
		struct uvh_vring_state st = { .index = 1 };
		int sv[2];

		t_socketpair(sv);
		fr = uvh_frontend_req_new(sv[1], NULL, NULL, PF_ACK);
		cr_assert_not_null(fr);
		raw_send(sv[0], UVH_BACKEND_REQ_VRING_CALL,
			 UVH_FLAG_VERSION | UVH_FLAG_NEED_REPLY, &st, sizeof(st), NULL, 0);
		cr_assert_eq(uvh_frontend_req_handle(fr), 0);
		cr_assert_eq(read_ack(sv[0], UVH_BACKEND_REQ_VRING_CALL), ENOSYS);
		uvh_frontend_req_free(fr);
		close(sv[0]);
	}
	cr_assert_null(uvh_frontend_req_new(-1, NULL, NULL, 0));
	cr_assert_eq(errno, EBADF);
	cr_assert_eq(t_count_fds(), before);
}

/* Payloads the front-end cannot act on fail like a handler, named in the log. */
Test(backend_chan, frontend_bad_payloads)
{
	struct uvh_iotlb update = the_iotlb, perm = the_iotlb, packed = the_iotlb;
	struct uvh_vring_area area = { .u64 = 0x200 | UVH_VRING_NOFD_MASK };
	struct uvh_shmem_map empty = the_map, wrap = the_map, flags = the_map;
	int before = t_count_fds();
	struct uvh_frontend_req *fr;
	struct rec r;
	int peer;

	update.type = UVH_IOTLB_UPDATE;
	perm.perm = 4;
	empty.len = 0;
	wrap.shm_offset = UINT64_MAX - 0x10;
	flags.flags = 2;
	fr = raw_frontend(PF_ACK, &rec_ops, &r, &peer);

	struct { uint32_t id; const void *p; uint32_t size; const char *log; } bad[] = {
		{ UVH_BACKEND_REQ_IOTLB_MSG, &update, 32, "IOTLB type 2" },
		{ UVH_BACKEND_REQ_IOTLB_MSG, &perm, 32, "IOTLB perm 4" },
		{ UVH_BACKEND_REQ_VRING_HOST_NOTIFIER_MSG, &area, 24, "reserved bits" },
		{ UVH_BACKEND_REQ_SHMEM_UNMAP, &empty, 40, "bad range" },
		{ UVH_BACKEND_REQ_SHMEM_UNMAP, &wrap, 40, "bad range" },
	};
	for (unsigned int i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		t_log_reset();
		raw_send(peer, bad[i].id, UVH_FLAG_VERSION | UVH_FLAG_NEED_REPLY, bad[i].p,
			 bad[i].size, NULL, 0);
		cr_assert_eq(uvh_frontend_req_handle(fr), 0);
		cr_assert_eq(read_ack(peer, bad[i].id), EINVAL, "case %u", i);
		cr_assert(t_log_contains(bad[i].log), "case %u", i);
		cr_assert(t_log_contains(uvh_backend_request_name(bad[i].id)), "case %u", i);
	}
	/* SHMEM_MAP with bad flags: its fd is closed. */
	{
		int fd = t_memfd("flags", 4096);

		raw_send(peer, UVH_BACKEND_REQ_SHMEM_MAP, UVH_FLAG_VERSION | UVH_FLAG_NEED_REPLY,
			 &flags, sizeof(flags), &fd, 1);
		close(fd);
		cr_assert_eq(uvh_frontend_req_handle(fr), 0);
		cr_assert_eq(read_ack(peer, UVH_BACKEND_REQ_SHMEM_MAP), EINVAL);
	}
	for (uint32_t id = 0; id < UVH_BACKEND_REQ_MAX; id++)
		cr_assert_eq(r.calls[id], 0);

	/* rust-vmm's packed 26-byte IOTLB is accepted, the tail zeroed. */
	raw_send(peer, UVH_BACKEND_REQ_IOTLB_MSG, UVH_FLAG_VERSION | UVH_FLAG_NEED_REPLY,
		 &packed, UVH_IOTLB_MIN_SIZE, NULL, 0);
	cr_assert_eq(uvh_frontend_req_handle(fr), 0);
	cr_assert_eq(read_ack(peer, UVH_BACKEND_REQ_IOTLB_MSG), 0);
	cr_assert(!memcmp(&r.iotlb, &the_iotlb, sizeof(the_iotlb)));

	uvh_frontend_req_free(fr);
	close(peer);
	cr_assert_eq(t_count_fds(), before);
}

/* A back-end that hangs up: the handler reports it, no hang. */
Test(backend_chan, frontend_peer_closed)
{
	int before = t_count_fds();
	struct uvh_frontend_req *fr;
	struct rec r;
	int peer;

	fr = raw_frontend(PF_ACK, &rec_ops, &r, &peer);
	close(peer);
	cr_assert_eq(uvh_frontend_req_handle(fr), -ECONNRESET);
	uvh_frontend_req_free(fr);
	cr_assert_eq(t_count_fds(), before);
}
