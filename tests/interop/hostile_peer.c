/* SPDX-License-Identifier: MIT */
/*
 * interop-hostile-peer: one front-end session that breaks the vhost-user
 * protocol in one chosen way (raw bytes on the socket, no library check in
 * the way), or a well-behaved one to prove the back-end still serves.
 * What the back-end does about it (its log, its fds, its memory) is
 * checked by hostile_peers.sh / access_control.sh; this program checks
 * what the peer sees: a NACK, the connection closed, a reply.
 *
 * usage: interop-hostile-peer PATH CASE [N]
 * Prints "hostile-peer: PASS|FAIL: ..." lines; exit 0 when all passed.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "util.h"
#include "frontend.h"
#include "listener.h"
#include "message.h"
#include "net.h"
#include "t_fds.h"
#include "virtq.h"

#define MEM_SIZE	(4u << 20)
#define QSIZE		256u
#define REPLY_MS	5000

static const char *path;
static int failed;

static void check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(bool ok, const char *fmt, ...)
{
	va_list ap;

	printf("hostile-peer: %s: ", ok ? "PASS" : "FAIL");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	if (!ok)
		failed = 1;
}

/* ---- raw messages ----------------------------------------------------------------- */

static int raw_connect(void)
{
	struct uvh_connect_opts co = { .timeout_ms = 5000 };
	int fd = uvh_connect(path, &co);

	if (fd < 0) {
		printf("hostile-peer: FAIL: connect %s: %s\n", path, strerror(-fd));
		exit(1);
	}
	return fd;
}

/* Send bytes and fds as one sendmsg (fds on the first byte). */
static int raw_send(int fd, const void *buf, size_t len, const int *fds, unsigned int nfds)
{
	struct t_fds_cmsg ctl;
	struct iovec iov = { .iov_base = (void *)(uintptr_t)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	size_t done = 0;

	t_fds_attach(&mh, &ctl, fds, nfds);
	while (done < len) {
		ssize_t r;

		iov.iov_base = (char *)(uintptr_t)buf + done;
		iov.iov_len = len - done;
		r = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (size_t)r;
		mh.msg_control = NULL;
		mh.msg_controllen = 0;
	}
	return 0;
}

/* A request with @size payload bytes from @pl (any size: no check). */
static int send_req(int fd, uint32_t req, uint32_t flags, const void *pl, uint32_t size,
		    const int *fds, unsigned int nfds)
{
	static uint8_t buf[UVH_MSG_HEADER_SIZE + 8192];
	struct uvh_msg_header h = { .request = req, .flags = UVH_FLAG_VERSION | flags,
				    .size = size };

	if (size > sizeof(buf) - UVH_MSG_HEADER_SIZE)
		return -EINVAL;
	memcpy(buf, &h, sizeof(h));
	if (size)
		memcpy(buf + UVH_MSG_HEADER_SIZE, pl, size);
	return raw_send(fd, buf, UVH_MSG_HEADER_SIZE + size, fds, nfds);
}

/* Read exactly @len bytes within @ms: 0, -ECONNRESET (closed), -ETIMEDOUT. */
static int read_full(int fd, void *buf, size_t len, int ms)
{
	size_t got = 0;
	long end = uvh_now_ms() + ms;

	while (got < len) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		long left = end - uvh_now_ms();
		ssize_t r;

		if (left <= 0)
			return -ETIMEDOUT;
		if (poll(&p, 1, (int)left) == 0)
			return -ETIMEDOUT;
		r = read(fd, (char *)buf + got, len - got);
		if (r == 0 || (r < 0 && errno == ECONNRESET))
			return -ECONNRESET;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		got += (size_t)r;
	}
	return 0;
}

/* One reply: header then payload (at most 4096 bytes kept). */
static int recv_reply(int fd, uint32_t req, void *pl, uint32_t *size)
{
	uint8_t body[UVH_MSG_MAX_PAYLOAD];
	struct uvh_msg_header h;
	int r = read_full(fd, &h, sizeof(h), REPLY_MS);

	if (r)
		return r;
	if (h.request != req || !(h.flags & UVH_FLAG_REPLY) || h.size > UVH_MSG_MAX_PAYLOAD)
		return -EPROTO;
	r = read_full(fd, body, h.size, REPLY_MS);
	if (r)
		return r;
	if (pl)
		memcpy(pl, body, h.size);
	if (size)
		*size = h.size;
	return 0;
}

/* Does the back-end close the connection within @ms? Replies are drained. */
static bool closed_within(int fd, int ms)
{
	long end = uvh_now_ms() + ms;
	char buf[4096];

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		long left = end - uvh_now_ms();
		ssize_t r;

		if (left <= 0 || poll(&p, 1, (int)left) == 0)
			return false;
		r = read(fd, buf, sizeof(buf));
		if (r == 0 || (r < 0 && errno == ECONNRESET))
			return true;
		if (r < 0 && errno != EINTR)
			return true;
	}
}

/* A raw session: fd and whether acks are on. */
struct sess {
	int fd;
	bool acks;
	uint64_t features, pf;
};

static int get_u64(struct sess *s, uint32_t req, uint64_t *v)
{
	uint32_t size = 0;
	int r = send_req(s->fd, req, 0, NULL, 0, NULL, 0);

	if (!r)
		r = recv_reply(s->fd, req, v, &size);
	if (!r && size != 8)
		r = -EPROTO;
	return r;
}

/* Send with NEED_REPLY and read the ack: its value (0 ok), or -errno. */
static int64_t acked(struct sess *s, uint32_t req, const void *pl, uint32_t size,
		     const int *fds, unsigned int nfds)
{
	uint64_t ack = 0;
	uint32_t rs = 0;
	int r = send_req(s->fd, req, UVH_FLAG_NEED_REPLY, pl, size, fds, nfds);

	if (!r)
		r = recv_reply(s->fd, req, &ack, &rs);
	if (!r && rs != 8)
		r = -EPROTO;
	return r ? r : (int64_t)ack;
}

/* The usual opening (QEMU's order), REPLY_ACK plus @pf_more when offered. */
static void sess_open(struct sess *s, bool acks, uint64_t pf_more)
{
	uint64_t f = 0, pf = 0;
	int r;

	memset(s, 0, sizeof(*s));
	s->fd = raw_connect();
	r = get_u64(s, UVH_REQ_GET_FEATURES, &f);
	if (!r)
		r = get_u64(s, UVH_REQ_GET_PROTOCOL_FEATURES, &pf);
	if (r) {
		printf("hostile-peer: FAIL: opening: %s\n", strerror(-r));
		exit(1);
	}
	pf &= (acks ? UVH_BIT(UVH_PROTOCOL_F_REPLY_ACK) : 0) | pf_more;
	r = send_req(s->fd, UVH_REQ_SET_PROTOCOL_FEATURES, 0, &pf, 8, NULL, 0);
	s->pf = pf;
	s->acks = pf & UVH_BIT(UVH_PROTOCOL_F_REPLY_ACK);
	if (!r)
		r = send_req(s->fd, UVH_REQ_SET_OWNER, 0, NULL, 0, NULL, 0);
	s->features = f & (UVH_BIT(UVH_VIRTIO_F_VERSION_1) | UVH_BIT(UVH_F_PROTOCOL_FEATURES));
	if (!r)
		r = (int)(s->acks ? acked(s, UVH_REQ_SET_FEATURES, &s->features, 8, NULL, 0) :
			  send_req(s->fd, UVH_REQ_SET_FEATURES, 0, &s->features, 8, NULL, 0));
	if (r || (acks && !s->acks)) {
		printf("hostile-peer: FAIL: opening: %s\n", r ? strerror(-r) : "no REPLY_ACK");
		exit(1);
	}
}

/* Still talking? GET_FEATURES answered. */
static bool alive(struct sess *s)
{
	uint64_t f;

	return get_u64(s, UVH_REQ_GET_FEATURES, &f) == 0;
}

static int memfd_of(const char *name, size_t size)
{
	int fd = memfd_create(name, MFD_CLOEXEC);

	if (fd < 0 || ftruncate(fd, (off_t)size)) {
		perror("memfd");
		exit(1);
	}
	return fd;
}

static struct uvh_mem_region region(uint64_t gpa, uint64_t size, uint64_t uaddr)
{
	return (struct uvh_mem_region){ .guest_phys_addr = gpa, .memory_size = size,
					.userspace_addr = uaddr };
}

/* SET_MEM_TABLE of @n regions with @fds: the ack. */
static int64_t mem_table(struct sess *s, const struct uvh_mem_region *r, unsigned int n,
			 const int *fds)
{
	struct uvh_mem_table t = { .nregions = n };

	memcpy(t.regions, r, n * sizeof(*r));
	return acked(s, UVH_REQ_SET_MEM_TABLE, &t, 8 + n * (uint32_t)sizeof(*r), fds, n);
}

static int64_t vring_state(struct sess *s, uint32_t req, uint32_t idx, uint32_t num)
{
	struct uvh_vring_state st = { .index = idx, .num = num };

	return acked(s, req, &st, sizeof(st), NULL, 0);
}

static int64_t vring_file(struct sess *s, uint32_t req, uint64_t idx, int fd)
{
	return acked(s, req, &idx, 8, fd >= 0 ? &fd : NULL, fd >= 0 ? 1 : 0);
}

static void expect_nack(int64_t ack, const char *what)
{
	check(ack > 0, "%s: NACK (%" PRId64 ")", what, ack);
}

static void expect_ack(int64_t ack, const char *what)
{
	check(ack == 0, "%s: accepted (%" PRId64 ")", what, ack);
}

/* ---- cases: the framing ------------------------------------------------------------ */

static void case_trunc_header(void)
{
	struct uvh_msg_header h = { .request = UVH_REQ_GET_FEATURES, .flags = 1 };
	int fd = raw_connect();

	check(raw_send(fd, &h, 6, NULL, 0) == 0, "sent 6 of 12 header bytes, then closed");
	close(fd);
}

static void case_trunc_payload(void)
{
	struct uvh_msg_header h = { .request = UVH_REQ_SET_FEATURES, .flags = 1, .size = 8 };
	uint8_t buf[UVH_MSG_HEADER_SIZE + 3] = { 0 };
	int fd = raw_connect();

	memcpy(buf, &h, sizeof(h));
	check(raw_send(fd, buf, sizeof(buf), NULL, 0) == 0,
	      "sent SET_FEATURES with 3 of 8 payload bytes, then closed");
	close(fd);
}

static void expect_close(int fd, const char *what)
{
	check(closed_within(fd, 3000), "%s: the back-end closed the connection", what);
	close(fd);
}

static void case_oversize(void)
{
	static uint8_t big[4097];
	int fd = raw_connect();

	send_req(fd, UVH_REQ_SET_CONFIG, 0, big, sizeof(big), NULL, 0);
	expect_close(fd, "payload size 4097");
	fd = raw_connect();
	{
		struct uvh_msg_header h = { .request = UVH_REQ_GET_FEATURES, .flags = 1,
					    .size = 0xffffffffu };
		raw_send(fd, &h, sizeof(h), NULL, 0);
	}
	expect_close(fd, "payload size 0xffffffff");
}

static void case_unknown(void)
{
	int fd = raw_connect();

	send_req(fd, 9999, 0, NULL, 0, NULL, 0);
	expect_close(fd, "request 9999");
	fd = raw_connect();
	send_req(fd, 0, 0, NULL, 0, NULL, 0);
	expect_close(fd, "request 0");
	fd = raw_connect();
	send_req(fd, UVH_REQ_GET_FEATURES, UVH_FLAG_REPLY, NULL, 0, NULL, 0);
	expect_close(fd, "REPLY flag on a request");
	fd = raw_connect();
	{
		struct uvh_msg_header h = { .request = UVH_REQ_GET_FEATURES, .flags = 2 };
		raw_send(fd, &h, sizeof(h), NULL, 0);
	}
	expect_close(fd, "protocol version 2");
}

static void case_bad_size(void)
{
	struct sess s;
	uint64_t f = UVH_BIT(UVH_VIRTIO_F_VERSION_1);
	int fd;

	/* no REPLY_ACK: nothing to say it with, so the connection goes */
	fd = raw_connect();
	send_req(fd, UVH_REQ_SET_FEATURES, 0, &f, 4, NULL, 0);
	expect_close(fd, "SET_FEATURES with a 4-byte payload, no REPLY_ACK");
	fd = raw_connect();
	send_req(fd, UVH_REQ_GET_FEATURES, 0, &f, 8, NULL, 0);
	expect_close(fd, "GET_FEATURES with an 8-byte payload");

	sess_open(&s, true, 0);
	expect_nack(acked(&s, UVH_REQ_SET_FEATURES, &f, 4, NULL, 0),
		    "SET_FEATURES with a 4-byte payload");
	{
		uint8_t twelve[12] = { 0 };

		expect_nack(acked(&s, UVH_REQ_SET_VRING_NUM, twelve, sizeof(twelve), NULL, 0),
			    "SET_VRING_NUM with a 12-byte payload");
	}
	check(alive(&s), "the connection is still usable after the NACKs");
	close(s.fd);
}

static void case_fds(void)
{
	struct sess s;
	int efd = eventfd(0, EFD_CLOEXEC), fds[40], fd;
	uint64_t f = 0;

	fd = raw_connect();
	send_req(fd, UVH_REQ_GET_FEATURES, 0, NULL, 0, &efd, 1);
	expect_close(fd, "GET_FEATURES with an fd");

	sess_open(&s, true, 0);
	f = s.features;
	expect_nack(acked(&s, UVH_REQ_SET_FEATURES, &f, 8, &efd, 1), "SET_FEATURES with an fd");
	check(alive(&s), "the connection is still usable");
	close(s.fd);

	for (unsigned int i = 0; i < 40; i++)
		fds[i] = efd;
	fd = raw_connect();
	{
		struct uvh_mem_table t = { .nregions = 1 };

		send_req(fd, UVH_REQ_SET_MEM_TABLE, 0, &t, 8 + 32, fds, 9);
	}
	expect_close(fd, "9 fds on one message");
	fd = raw_connect();
	send_req(fd, UVH_REQ_SET_OWNER, 0, NULL, 0, fds, 40);
	expect_close(fd, "40 fds on one message");
	/* fds on a later byte of the message */
	fd = raw_connect();
	{
		struct uvh_msg_header h = { .request = UVH_REQ_SET_FEATURES, .flags = 1,
					    .size = 8 };
		raw_send(fd, &h, sizeof(h), NULL, 0);
		usleep(100000);
		raw_send(fd, &f, 8, &efd, 1);
	}
	expect_close(fd, "an fd on the payload rather than the header");
	close(efd);
}

/* ---- cases: memory ---------------------------------------------------------------- */

static void case_mem(void)
{
	struct uvh_mem_region r[2];
	int mfd = memfd_of("hostile-mem", 1u << 20), small = memfd_of("hostile-small", 4096);
	int pfd[2], efd = eventfd(0, EFD_CLOEXEC), fds[2] = { mfd, mfd };
	struct sess s;

	if (pipe2(pfd, O_CLOEXEC))
		exit(1);
	sess_open(&s, true, 0);
	r[0] = region(0, 1u << 20, 0x10000000);
	r[1] = region(0x80000, 1u << 20, 0x20000000);
	expect_nack(mem_table(&s, r, 2, fds), "overlapping guest-physical ranges");
	r[1] = region(0x100000, 1u << 20, 0x10080000);
	expect_nack(mem_table(&s, r, 2, fds), "overlapping user addresses");
	r[0] = region(0, 0, 0x10000000);
	expect_nack(mem_table(&s, r, 1, fds), "a zero-sized region");
	r[0] = region(UINT64_MAX - 0xfff, 0x2000, 0x10000000);
	expect_nack(mem_table(&s, r, 1, fds), "a region wrapping past 2^64");
	r[0] = region(0, 1u << 20, 0x10000000);
	r[0].mmap_offset = UINT64_MAX - 0xfff;
	expect_nack(mem_table(&s, r, 1, fds), "an mmap offset wrapping past 2^64");
	r[0].mmap_offset = 0;
	expect_nack(mem_table(&s, r, 1, &pfd[0]), "a pipe as the region's fd");
	expect_nack(mem_table(&s, r, 1, &efd), "an eventfd as the region's fd");
	expect_nack(mem_table(&s, r, 1, &small), "a 4 KiB memfd for a 1 MiB region");
	{
		uint8_t nine[8 + 9 * 32] = { 9 };
		struct uvh_mem_table t = { .nregions = 2 };

		expect_nack(acked(&s, UVH_REQ_SET_MEM_TABLE, nine, sizeof(nine), fds, 2),
			    "nregions 9 (a 296-byte table)");
		expect_nack(acked(&s, UVH_REQ_SET_MEM_TABLE, &t, 8 + 2 * 32, fds, 1),
			    "2 regions with 1 fd");
	}
	expect_ack(mem_table(&s, r, 1, fds), "a good table after all that");
	check(alive(&s), "the connection is still usable");
	close(s.fd);
	close(mfd);
	close(small);
	close(pfd[0]);
	close(pfd[1]);
	close(efd);
}

/* ---- cases: rings ----------------------------------------------------------------- */

static void case_vring(void)
{
	int mfd = memfd_of("hostile-ring", 1u << 20), efd = eventfd(0, EFD_CLOEXEC);
	struct uvh_mem_region r = region(0, 1u << 20, 0x10000000);
	struct uvh_vring_addr a = { .index = 0 };
	uint64_t nq = 0;
	struct sess s;

	sess_open(&s, true, UVH_BIT(UVH_PROTOCOL_F_MQ));
	get_u64(&s, UVH_REQ_GET_QUEUE_NUM, &nq);
	expect_nack(vring_state(&s, UVH_REQ_SET_VRING_NUM, 200, 256), "SET_VRING_NUM vring 200");
	expect_nack(vring_state(&s, UVH_REQ_SET_VRING_NUM, 0x100, 256),
		    "SET_VRING_NUM vring 256");
	expect_nack(vring_state(&s, UVH_REQ_SET_VRING_NUM, 0, 0), "SET_VRING_NUM size 0");
	expect_nack(vring_state(&s, UVH_REQ_SET_VRING_NUM, 0, 3), "SET_VRING_NUM size 3");
	expect_nack(vring_state(&s, UVH_REQ_SET_VRING_NUM, 0, 65536),
		    "SET_VRING_NUM size 65536");
	expect_nack(vring_state(&s, UVH_REQ_SET_VRING_BASE, 0, 0x10000),
		    "SET_VRING_BASE 0x10000 on a split ring");
	expect_nack(vring_file(&s, UVH_REQ_SET_VRING_KICK, 255, efd), "SET_VRING_KICK vring 255");
	expect_nack(vring_file(&s, UVH_REQ_SET_VRING_CALL, 0x200 | 0, efd),
		    "SET_VRING_CALL with reserved bits");
	expect_ack(vring_state(&s, UVH_REQ_SET_VRING_NUM, 0, QSIZE), "SET_VRING_NUM 256");
	a.desc_user_addr = 0x10000000;
	a.avail_user_addr = 0x10001000;
	a.used_user_addr = 0x10002000;
	expect_ack(acked(&s, UVH_REQ_SET_VRING_ADDR, &a, sizeof(a), NULL, 0), "SET_VRING_ADDR");
	expect_nack(vring_file(&s, UVH_REQ_SET_VRING_KICK, 0, efd),
		    "SET_VRING_KICK before any memory table");
	expect_ack(mem_table(&s, &r, 1, &mfd), "SET_MEM_TABLE");
	a.desc_user_addr = 0x30000000;	/* in no region */
	acked(&s, UVH_REQ_SET_VRING_ADDR, &a, sizeof(a), NULL, 0);
	expect_nack(vring_file(&s, UVH_REQ_SET_VRING_KICK, 0, efd),
		    "SET_VRING_KICK with the descriptor table outside memory");
	a.desc_user_addr = 0x10000000;
	a.used_user_addr = 0x100ff000 + 0xff0;	/* straddles the region's end */
	acked(&s, UVH_REQ_SET_VRING_ADDR, &a, sizeof(a), NULL, 0);
	expect_nack(vring_file(&s, UVH_REQ_SET_VRING_KICK, 0, efd),
		    "SET_VRING_KICK with the used ring past the region's end");
	check(alive(&s), "the connection is still usable (%" PRIu64 " queue pairs)", nq);
	close(s.fd);
	close(mfd);
	close(efd);
}

/* Requests before SET_OWNER: QEMU itself sends GET_FEATURES and the
 * protocol features first, so they are legal; a session without any
 * SET_OWNER is served too (the spec only says it starts a session). */
static void case_no_owner(void)
{
	struct sess s = { .fd = raw_connect() };
	uint64_t f = 0, pf = 0, nq = 0;

	check(get_u64(&s, UVH_REQ_GET_FEATURES, &f) == 0, "GET_FEATURES before SET_OWNER");
	check(get_u64(&s, UVH_REQ_GET_PROTOCOL_FEATURES, &pf) == 0,
	      "GET_PROTOCOL_FEATURES before SET_OWNER");
	pf &= UVH_BIT(UVH_PROTOCOL_F_REPLY_ACK) | UVH_BIT(UVH_PROTOCOL_F_MQ);
	send_req(s.fd, UVH_REQ_SET_PROTOCOL_FEATURES, 0, &pf, 8, NULL, 0);
	s.acks = true;
	check(get_u64(&s, UVH_REQ_GET_QUEUE_NUM, &nq) == 0, "GET_QUEUE_NUM before SET_OWNER");
	f &= UVH_BIT(UVH_VIRTIO_F_VERSION_1) | UVH_BIT(UVH_F_PROTOCOL_FEATURES);
	expect_ack(acked(&s, UVH_REQ_SET_FEATURES, &f, 8, NULL, 0), "SET_FEATURES, no SET_OWNER");
	expect_ack(acked(&s, UVH_REQ_SET_OWNER, NULL, 0, NULL, 0), "SET_OWNER late");
	check(alive(&s), "the connection is still usable");
	close(s.fd);
}

/* ---- cases: floods ---------------------------------------------------------------- */

struct flood {
	int fd;
	unsigned int n;
	unsigned int acks, nacks;
	int err;
};

static void *flood_reader(void *arg)
{
	struct flood *f = arg;

	for (unsigned int i = 0; i < f->n; i++) {
		uint64_t v = 1;
		uint32_t size = 0;
		int r = recv_reply(f->fd, UVH_REQ_SET_OWNER, &v, &size);

		if (r) {
			f->err = r;
			break;
		}
		if (v == 0 && size == 8)
			f->acks++;
		else
			f->nacks++;
	}
	return NULL;
}

static void case_ack_flood(unsigned int n)
{
	struct flood f = { .n = n };
	struct sess s;
	pthread_t t;
	long t0;

	/* every request answered while the peer writes as fast as it can */
	sess_open(&s, true, 0);
	f.fd = s.fd;
	t0 = uvh_now_ms();
	pthread_create(&t, NULL, flood_reader, &f);
	for (unsigned int i = 0; i < n; i++)
		if (send_req(s.fd, UVH_REQ_SET_OWNER, UVH_FLAG_NEED_REPLY, NULL, 0, NULL, 0))
			break;
	pthread_join(t, NULL);
	check(f.acks == n && !f.err, "%u of %u REPLY_ACK requests acked in %ld ms (%s)",
	      f.acks, n, uvh_now_ms() - t0, f.err ? strerror(-f.err) : "no error");
	close(s.fd);

	/* a peer that floods and never reads its acks, then goes */
	sess_open(&s, true, 0);
	fcntl(s.fd, F_SETFL, O_NONBLOCK);
	{
		unsigned int sent = 0;
		long end = uvh_now_ms() + 3000;

		while (sent < n && uvh_now_ms() < end) {
			if (send_req(s.fd, UVH_REQ_SET_OWNER, UVH_FLAG_NEED_REPLY, NULL, 0,
				     NULL, 0))
				break;
			sent++;
		}
		check(sent > 0, "sent %u requests (until the socket was full) without reading"
		      " a single ack, then closed", sent);
	}
	close(s.fd);
}

static void case_churn(unsigned int n)
{
	long t0 = uvh_now_ms();
	unsigned int ok = 0;
	struct sess s;

	for (unsigned int i = 0; i < n; i++) {
		int fd = raw_connect();

		close(fd);
		ok++;
	}
	check(ok == n, "%u connect-and-close in %ld ms", ok, uvh_now_ms() - t0);
	sess_open(&s, false, 0);
	check(alive(&s), "a session after the churn is served");
	close(s.fd);
}

/* Guest memory mappings of our memfd in the back-end (it is our peer). */
static int peer_mappings(int fd, const char *name)
{
	char file[64], line[512];
	pid_t pid = 0;
	int n = 0;
	FILE *f;

	if (uvh_peer_cred(fd, &pid, NULL, NULL) || pid <= 0)
		return -1;
	snprintf(file, sizeof(file), "/proc/%d/maps", (int)pid);
	f = fopen(file, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, name))
			n++;
	fclose(f);
	return n;
}

static void case_add_mem_flood(unsigned int n)
{
	int mfd = memfd_of("hostile-flood", 4096);
	unsigned int ok = 0, nospc = 0, other = 0;
	uint64_t slots = 0;
	struct sess s;
	long t0;
	int maps, r;

	sess_open(&s, true, UVH_BIT(UVH_PROTOCOL_F_CONFIGURE_MEM_SLOTS));
	if (!(s.pf & UVH_BIT(UVH_PROTOCOL_F_CONFIGURE_MEM_SLOTS))) {
		check(false, "CONFIGURE_MEM_SLOTS is not offered");
		return;
	}
	r = get_u64(&s, UVH_REQ_GET_MAX_MEM_SLOTS, &slots);
	check(!r && slots == UVH_MAX_MEM_SLOTS, "GET_MAX_MEM_SLOTS says %" PRIu64, slots);
	t0 = uvh_now_ms();
	for (unsigned int i = 0; i < n; i++) {
		struct uvh_mem_single m = {
			.region = region((uint64_t)i << 16, 4096, 0x100000000ull + ((uint64_t)i << 16)),
		};
		int64_t a = acked(&s, UVH_REQ_ADD_MEM_REG, &m, sizeof(m), &mfd, 1);

		if (a == 0)
			ok++;
		else if (a == ENOSPC)
			nospc++;
		else if (a < 0)
			break;
		else
			other++;
	}
	maps = peer_mappings(s.fd, "hostile-flood");
	check(ok == UVH_MAX_MEM_SLOTS && nospc == n - UVH_MAX_MEM_SLOTS && !other,
	      "%u ADD_MEM_REG in %ld ms: %u accepted, %u refused with ENOSPC, %u otherwise",
	      n, uvh_now_ms() - t0, ok, nospc, other);
	check(maps >= 0 && maps <= (int)UVH_MAX_MEM_SLOTS,
	      "the back-end maps %d regions of ours (at most %u)", maps, UVH_MAX_MEM_SLOTS);
	check(alive(&s), "the connection is still usable");
	close(s.fd);
	close(mfd);
}

/* Send half a message and wait for the back-end to give up on it. */
static void case_stall(unsigned int max_s)
{
	struct uvh_msg_header h = { .request = UVH_REQ_SET_FEATURES, .flags = 1, .size = 8 };
	int fd = raw_connect();
	long t0;
	bool closed;

	raw_send(fd, &h, sizeof(h), NULL, 0);
	raw_send(fd, "\x01\x02\x03", 3, NULL, 0);
	printf("hostile-peer: stalling 3 bytes into a SET_FEATURES payload\n");
	fflush(stdout);
	t0 = uvh_now_ms();
	closed = closed_within(fd, (int)max_s * 1000);
	check(closed, "the back-end closed the stalled connection after %ld ms (limit %u s)",
	      uvh_now_ms() - t0, max_s);
	close(fd);
}

/* Connect and expect to be turned away at once, sending nothing. */
static void case_refused(void)
{
	int fd = raw_connect();
	long t0 = uvh_now_ms();
	bool closed = closed_within(fd, 3000);

	check(closed, "the back-end closed our connection after %ld ms without a word",
	      uvh_now_ms() - t0);
	close(fd);
}

/* ---- a well-behaved session (uvhost's own front-end) ---------------------------------- */

struct good {
	struct uvh_frontend *fe;
	int memfd;
	uint8_t *mem;
	struct uvh_vq_driver drv[2];
	int kick[2], call[2], err[2];
};

#define RING_AREA	(64u << 10)
#define BUF_BASE	(256u << 10)
#define BUF_STRIDE	2048u
#define FRAME		64u

static uint64_t buf_gpa(unsigned int ring, unsigned int i)
{
	return BUF_BASE + ((uint64_t)ring * QSIZE + i) * BUF_STRIDE;
}

static int good_open(struct good *g, uint64_t want)
{
	struct uvh_connect_opts co = { .timeout_ms = 5000 };
	struct uvh_mem_region reg;
	uint64_t feat = 0, pf = 0;
	int r;

	memset(g, 0, sizeof(*g));
	for (int i = 0; i < 2; i++)
		g->kick[i] = g->call[i] = g->err[i] = -1;
	g->memfd = memfd_of("hostile-good", MEM_SIZE);
	g->mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, g->memfd, 0);
	if (g->mem == MAP_FAILED)
		return -errno;
	r = uvh_frontend_connect(path, &co, &g->fe);
	if (r)
		return r;
	r = uvh_frontend_negotiate(g->fe, UVH_BIT(UVH_VIRTIO_F_VERSION_1) | UVH_BIT(UVH_F_PROTOCOL_FEATURES) | want,
				   UVH_BIT(UVH_PROTOCOL_F_REPLY_ACK), &feat, &pf);
	if (r)
		return r;
	reg = region(0, MEM_SIZE, (uint64_t)(uintptr_t)g->mem);
	r = uvh_frontend_set_mem_table(g->fe, &reg, &g->memfd, 1);
	if (r)
		return r;
	for (unsigned int i = 0; i < 2; i++) {
		struct uvh_vring_addr a = { .index = i };

		r = uvh_vq_driver_init(&g->drv[i], QSIZE, false, false, g->mem + i * RING_AREA,
				       i * RING_AREA);
		if (r)
			return r;
		uvh_vq_driver_enable_cb(&g->drv[i], false);
		a.desc_user_addr = (uint64_t)(uintptr_t)g->drv[i].desc;
		a.avail_user_addr = (uint64_t)(uintptr_t)g->drv[i].driver_area;
		a.used_user_addr = (uint64_t)(uintptr_t)g->drv[i].device_area;
		g->kick[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		g->call[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		g->err[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if ((r = uvh_frontend_set_vring_call(g->fe, i, g->call[i])) ||
		    (r = uvh_frontend_set_vring_err(g->fe, i, g->err[i])) ||
		    (r = uvh_frontend_set_vring_num(g->fe, i, QSIZE)) ||
		    (r = uvh_frontend_set_vring_base(g->fe, i, 0)) ||
		    (r = uvh_frontend_set_vring_addr(g->fe, &a)))
			return r;
	}
	return 0;
}

static int good_start(struct good *g)
{
	int r;

	for (unsigned int i = 0; i < 2; i++)
		if ((r = uvh_frontend_set_vring_kick(g->fe, i, g->kick[i])) ||
		    (r = uvh_frontend_set_vring_enable(g->fe, i, true)))
			return r;
	return 0;
}

static void good_close(struct good *g)
{
	for (unsigned int i = 0; i < 2; i++) {
		uint32_t base;

		if (g->fe)
			uvh_frontend_get_vring_base(g->fe, i, &base);
		uvh_vq_driver_free(&g->drv[i]);
		if (g->kick[i] >= 0)
			close(g->kick[i]);
		if (g->call[i] >= 0)
			close(g->call[i]);
		if (g->err[i] >= 0)
			close(g->err[i]);
	}
	uvh_frontend_free(g->fe);
	if (g->mem && g->mem != MAP_FAILED)
		munmap(g->mem, MEM_SIZE);
	if (g->memfd >= 0)
		close(g->memfd);
}

static void kick(int fd)
{
	eventfd_write(fd, 1);
}

/* @n frames out on TX (ring 1), back on RX (ring 0) in loopback mode. */
static int good_round(struct good *g, unsigned int n, unsigned int round)
{
	unsigned int got = 0, sent_done = 0;
	long end = uvh_now_ms() + 5000;

	for (unsigned int i = 0; i < n; i++) {
		struct uvh_vq_buf rx = { buf_gpa(0, i), BUF_STRIDE };
		struct uvh_vq_buf tx = { buf_gpa(1, i), UVH_NET_HDR_LEN + FRAME };
		uint8_t *p = g->mem + tx.gpa;

		memset(p, 0, UVH_NET_HDR_LEN + FRAME);
		memset(p + UVH_NET_HDR_LEN, 0xff, 6);	/* broadcast */
		p[UVH_NET_HDR_LEN + 6] = 0x02;
		p[UVH_NET_HDR_LEN + 12] = 0x88;
		p[UVH_NET_HDR_LEN + 13] = 0xb5;
		p[UVH_NET_HDR_LEN + 14] = (uint8_t)i;
		p[UVH_NET_HDR_LEN + 15] = (uint8_t)round;
		if (uvh_vq_driver_add(&g->drv[0], &rx, 0, 1, (void *)(uintptr_t)(i + 1)) ||
		    uvh_vq_driver_add(&g->drv[1], &tx, 1, 0, (void *)(uintptr_t)(i + 1)))
			return -ENOSPC;
	}
	uvh_vq_driver_publish(&g->drv[0]);
	kick(g->kick[0]);
	uvh_vq_driver_publish(&g->drv[1]);
	kick(g->kick[1]);
	while ((got < n || sent_done < n) && uvh_now_ms() < end) {
		void *tok[64];
		uint32_t len[64];
		unsigned int k;

		k = uvh_vq_driver_get_used(&g->drv[1], tok, len, 64);
		sent_done += k;
		k = uvh_vq_driver_get_used(&g->drv[0], tok, len, 64);
		for (unsigned int j = 0; j < k; j++) {
			unsigned int i = (unsigned int)(uintptr_t)tok[j] - 1;
			const uint8_t *p = g->mem + buf_gpa(0, i);

			if (len[j] != UVH_NET_HDR_LEN + FRAME || p[UVH_NET_HDR_LEN + 15] != round)
				return -EBADMSG;
			got++;
		}
		if (!k)
			usleep(1000);
	}
	return got == n && sent_done == n ? 0 : -ETIMEDOUT;
}

static void case_good(unsigned int hold_s)
{
	struct good g;
	int r = good_open(&g, 0);

	if (!r)
		r = good_start(&g);
	check(!r, "a well-behaved front-end set up both rings (%s)", r ? strerror(-r) : "ok");
	if (!r) {
		r = good_round(&g, 32, 1);
		check(!r, "32 frames went out and came back (%s)", r ? strerror(-r) : "ok");
	}
	if (!r && hold_s) {
		printf("hostile-peer: holding the session for %u s\n", hold_s);
		fflush(stdout);
		sleep(hold_s);
		r = good_round(&g, 32, 2);
		check(!r, "after %u s: 32 more frames went out and came back (%s)", hold_s,
		      r ? strerror(-r) : "ok");
	}
	good_close(&g);
}

/* The guest breaks its own ring: the back-end must mark it broken and say
 * so on the VRING_ERR eventfd, and keep serving the connection. */
static void case_broken_ring(bool loop)
{
	struct uvh_vring_desc *d;
	struct uvh_vring_avail *av;
	struct pollfd p;
	uint64_t v = 0;
	struct good g;
	int r = good_open(&g, 0);

	if (!r)
		r = good_start(&g);
	check(!r, "set-up (%s)", r ? strerror(-r) : "ok");
	if (r) {
		good_close(&g);
		return;
	}
	d = g.drv[1].desc;
	av = g.drv[1].driver_area;
	if (loop) {
		/* 0 -> 1 -> 0 -> ... */
		d[0] = (struct uvh_vring_desc){ .addr = buf_gpa(1, 0), .len = 64,
						.flags = 1, .next = 1 };
		d[1] = (struct uvh_vring_desc){ .addr = buf_gpa(1, 1), .len = 64,
						.flags = 1, .next = 0 };
	} else {
		d[0] = (struct uvh_vring_desc){ .addr = 0x7fff00000000ull, .len = 64 };
	}
	av->ring[0] = 0;
	__atomic_store_n(&av->idx, 1, __ATOMIC_RELEASE);
	kick(g.kick[1]);
	p = (struct pollfd){ .fd = g.err[1], .events = POLLIN };
	r = poll(&p, 1, 3000);
	if (r > 0)
		eventfd_read(g.err[1], &v);
	check(r > 0 && v > 0, "%s: the VRING_ERR eventfd was written",
	      loop ? "a descriptor loop" : "a descriptor outside guest memory");
	{
		uint64_t f;

		check(uvh_frontend_get_features(g.fe, &f) == 0,
		      "the connection is still served after the broken ring");
	}
	good_close(&g);
}

int main(int argc, char **argv)
{
	const char *c;
	unsigned int n;

	if (argc < 3) {
		fprintf(stderr, "usage: interop-hostile-peer PATH CASE [N]\n"
			"cases: trunc-header trunc-payload oversize unknown bad-size fds mem\n"
			"       vring no-owner ack-flood [N] churn [N] add-mem-flood [N]\n"
			"       stall [MAX_S] refused good [HOLD_S] broken-loop broken-addr\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	path = argv[1];
	c = argv[2];
	n = argc > 3 ? (unsigned int)strtoul(argv[3], NULL, 0) : 0;
	if (!strcmp(c, "trunc-header"))
		case_trunc_header();
	else if (!strcmp(c, "trunc-payload"))
		case_trunc_payload();
	else if (!strcmp(c, "oversize"))
		case_oversize();
	else if (!strcmp(c, "unknown"))
		case_unknown();
	else if (!strcmp(c, "bad-size"))
		case_bad_size();
	else if (!strcmp(c, "fds"))
		case_fds();
	else if (!strcmp(c, "mem"))
		case_mem();
	else if (!strcmp(c, "vring"))
		case_vring();
	else if (!strcmp(c, "no-owner"))
		case_no_owner();
	else if (!strcmp(c, "ack-flood"))
		case_ack_flood(n ? n : 20000);
	else if (!strcmp(c, "churn"))
		case_churn(n ? n : 1000);
	else if (!strcmp(c, "add-mem-flood"))
		case_add_mem_flood(n ? n : 10000);
	else if (!strcmp(c, "stall"))
		case_stall(n ? n : 10);
	else if (!strcmp(c, "refused"))
		case_refused();
	else if (!strcmp(c, "good"))
		case_good(n);
	else if (!strcmp(c, "broken-loop"))
		case_broken_ring(true);
	else if (!strcmp(c, "broken-addr"))
		case_broken_ring(false);
	else {
		fprintf(stderr, "unknown case '%s'\n", c);
		return 2;
	}
	return failed;
}
