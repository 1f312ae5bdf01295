/* SPDX-License-Identifier: MIT */
/*
 * Endpoint tests over real socketpairs: whole messages with fds, messages
 * assembled from many small reads, every refusal path (each asserting the
 * exact errno and that no fd leaked), the io_uring-driven receive, and the
 * send side's refusals.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <liburing.h>

#include "endpoint.h"
#include "log.h"
#include "message.h"
#include "t_fds.h"
#include "t_helpers.h"

#define MAX_RAW_FDS	T_FDS_MAX

/* Send @len bytes with @nfds fds attached, bypassing the endpoint, so a
 * test can misbehave the way a hostile peer would. */
static void raw_send(int fd, const void *buf, size_t len, const int *fds,
		     unsigned int nfds)
{
	struct t_fds_cmsg ctl;
	struct iovec iov = { .iov_base = (void *)(uintptr_t)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t r;

	cr_assert_leq(nfds, MAX_RAW_FDS);
	t_fds_attach(&mh, &ctl, fds, nfds);
	r = sendmsg(fd, &mh, MSG_NOSIGNAL);
	cr_assert_eq(r, (ssize_t)len, "raw sendmsg: %zd (%s)", r, strerror(errno));
}

static struct uvh_msg_header mkhdr(uint32_t request, uint32_t flags, uint32_t size)
{
	struct uvh_msg_header h = { .request = request, .flags = flags, .size = size };

	return h;
}

/* A wire image of one message: header then @size payload bytes. */
static size_t wire(uint8_t *buf, struct uvh_msg_header h, const void *payload)
{
	memcpy(buf, &h, sizeof(h));
	if (h.size && payload)
		memcpy(buf + sizeof(h), payload, h.size);
	else if (h.size)
		memset(buf + sizeof(h), 0xab, h.size);
	return sizeof(h) + h.size;
}

static void make_fds(int *fds, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++)
		fds[i] = t_eventfd();
}

static void close_all(int *fds, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++)
		close(fds[i]);
}

/* Slots past nfds must be -1 so a caller can close blindly. */
static void assert_fd_slots(const struct uvh_msg *m, unsigned int nfds)
{
	cr_assert_eq(m->nfds, nfds);
	for (unsigned int i = nfds; i < UVH_MSG_MAX_FDS; i++)
		cr_assert_eq(m->fds[i], -1, "slot %u = %d", i, m->fds[i]);
}

static struct uvh_msg rmsg;	/* big: keep off the test's stack */

static void poison(struct uvh_msg *m)
{
	memset(m, 0x5a, sizeof(*m));
	for (unsigned int i = 0; i < UVH_MSG_MAX_FDS; i++)
		m->fds[i] = 77;
	m->nfds = 99;
}

/* ---- whole messages ------------------------------------------------------ */

static void roundtrip(uint32_t size, unsigned int nfds)
{
	static uint8_t payload[UVH_MSG_MAX_PAYLOAD];
	struct uvh_endpoint tx, rx;
	struct uvh_msg_header h = mkhdr(UVH_REQ_SET_MEM_TABLE,
					UVH_FLAG_VERSION | UVH_FLAG_NEED_REPLY, size);
	int sv[2], fds[UVH_MSG_MAX_FDS];
	int before;

	for (uint32_t i = 0; i < size; i++)
		payload[i] = (uint8_t)(i * 7 + size);
	t_socketpair(sv);
	before = t_count_fds();
	for (unsigned int i = 0; i < nfds; i++)
		fds[i] = t_memfd("rt", 4096);
	uvh_endpoint_init(&tx, sv[0], uvh_backend_request_name);
	uvh_endpoint_init(&rx, sv[1], uvh_frontend_request_name);

	cr_assert_eq(uvh_endpoint_send(&tx, &h, payload, fds, nfds), 0);
	poison(&rmsg);
	cr_assert_eq(uvh_endpoint_recv(&rx, &rmsg), 0);
	cr_assert_eq(rmsg.hdr.request, UVH_REQ_SET_MEM_TABLE);
	cr_assert_eq(rmsg.hdr.flags, UVH_FLAG_VERSION | UVH_FLAG_NEED_REPLY);
	cr_assert_eq(rmsg.hdr.size, size);
	cr_assert_eq(memcmp(rmsg.payload.raw, payload, size), 0);
	/* The tail past size is zeroed, never stale. */
	for (uint32_t i = size; i < UVH_MSG_MAX_PAYLOAD; i++)
		cr_assert_eq(rmsg.payload.raw[i], 0);
	assert_fd_slots(&rmsg, nfds);
	for (unsigned int i = 0; i < nfds; i++) {
		cr_assert(t_same_file(rmsg.fds[i], fds[i]), "fd %u", i);
		cr_assert_neq(rmsg.fds[i], fds[i]);
		/* Received with MSG_CMSG_CLOEXEC. */
		cr_assert(fcntl(rmsg.fds[i], F_GETFD) & FD_CLOEXEC);
	}
	uvh_msg_close_fds(&rmsg);
	close_all(fds, nfds);
	uvh_endpoint_close(&tx);
	uvh_endpoint_close(&rx);
	cr_assert_eq(tx.fd, -1);
	cr_assert_eq(t_count_fds(), before - 2);
}

Test(endpoint, roundtrip_size0_1fd) { roundtrip(0, 1); }
Test(endpoint, roundtrip_size0_nofd) { roundtrip(0, 0); }
Test(endpoint, roundtrip_size8_2fds) { roundtrip(8, 2); }
Test(endpoint, roundtrip_size4096_8fds) { roundtrip(4096, 8); }

/* Two messages queued back to back: each read stops at its message's end,
 * so the second's fds stay with the second. */
Test(endpoint, back_to_back_messages_keep_their_fds)
{
	static uint8_t buf[2 * (12 + 16)];
	struct uvh_endpoint ep;
	int sv[2], a, b, before;
	size_t n;

	t_socketpair(sv);
	before = t_count_fds();
	a = t_eventfd();
	b = t_memfd("b", 4096);
	uvh_endpoint_init(&ep, sv[1], uvh_frontend_request_name);

	n = wire(buf, mkhdr(UVH_REQ_SET_VRING_KICK, 1, 8), "\0\0\0\0\0\0\0\0");
	raw_send(sv[0], buf, n, &a, 1);
	n = wire(buf, mkhdr(UVH_REQ_SET_LOG_BASE, 1, 16), NULL);
	raw_send(sv[0], buf, n, &b, 1);

	cr_assert_eq(uvh_endpoint_recv(&ep, &rmsg), 0);
	cr_assert_eq(rmsg.hdr.request, UVH_REQ_SET_VRING_KICK);
	assert_fd_slots(&rmsg, 1);
	cr_assert(t_same_file(rmsg.fds[0], a));
	uvh_msg_close_fds(&rmsg);

	cr_assert_eq(uvh_endpoint_recv(&ep, &rmsg), 0);
	cr_assert_eq(rmsg.hdr.request, UVH_REQ_SET_LOG_BASE);
	cr_assert_eq(rmsg.hdr.size, 16);
	cr_assert_eq(rmsg.payload.raw[15], 0xab);
	assert_fd_slots(&rmsg, 1);
	cr_assert(t_same_file(rmsg.fds[0], b));
	uvh_msg_close_fds(&rmsg);

	close(a);
	close(b);
	close(sv[0]);
	cr_assert_eq(uvh_endpoint_recv(&ep, &rmsg), -ECONNRESET);
	uvh_endpoint_close(&ep);
	cr_assert_eq(t_count_fds(), before - 2);
}

/* ---- messages in pieces -------------------------------------------------- */

/* The peer writes the message one byte at a time, fds on byte 0. The
 * endpoint is non-blocking, so every byte is a separate read. */
Test(endpoint, byte_by_byte_assembles)
{
	static uint8_t buf[12 + 40];
	struct uvh_vring_addr addr = { .index = 1, .desc_user_addr = 0x1000,
				       .used_user_addr = 0x2000,
				       .avail_user_addr = 0x3000 };
	struct uvh_endpoint ep;
	int sv[2], fds[2], before;
	size_t n;

	t_socketpair(sv);
	before = t_count_fds();
	make_fds(fds, 2);
	uvh_endpoint_init(&ep, sv[1], uvh_frontend_request_name);
	ep.nonblocking = true;

	n = wire(buf, mkhdr(UVH_REQ_SET_VRING_ADDR, 1, sizeof(addr)), &addr);
	for (size_t i = 0; i < n; i++) {
		raw_send(sv[0], buf + i, 1, fds, i == 0 ? 2 : 0);
		poison(&rmsg);
		if (i + 1 < n) {
			cr_assert_eq(uvh_endpoint_recv(&ep, &rmsg), -EAGAIN, "byte %zu", i);
			/* A partial result never exposes fds. */
			assert_fd_slots(&rmsg, 0);
		}
	}
	cr_assert_eq(uvh_endpoint_recv(&ep, &rmsg), 0);
	cr_assert_eq(rmsg.hdr.request, UVH_REQ_SET_VRING_ADDR);
	cr_assert_eq(memcmp(&rmsg.payload.addr, &addr, sizeof(addr)), 0);
	assert_fd_slots(&rmsg, 2);
	cr_assert(t_same_file(rmsg.fds[0], fds[0]));
	cr_assert(t_same_file(rmsg.fds[1], fds[1]));
	uvh_msg_close_fds(&rmsg);
	close_all(fds, 2);
	uvh_endpoint_close(&ep);
	close(sv[0]);
	cr_assert_eq(t_count_fds(), before - 2);
}

/* Same, but all the single-byte writes are queued before a blocking
 * receive: the kernel may merge them; the message must still come out. */
Test(endpoint, byte_by_byte_blocking)
{
	static uint8_t buf[12 + 8];
	struct uvh_endpoint ep;
	uint64_t v = 0x101;
	int sv[2], fd, before;
	size_t n;

	t_socketpair(sv);
	before = t_count_fds();
	fd = t_eventfd();
	uvh_endpoint_init(&ep, sv[1], uvh_frontend_request_name);
	n = wire(buf, mkhdr(UVH_REQ_SET_VRING_CALL, 1, 8), &v);
	for (size_t i = 0; i < n; i++)
		raw_send(sv[0], buf + i, 1, &fd, i == 0);
	cr_assert_eq(uvh_endpoint_recv(&ep, &rmsg), 0);
	cr_assert_eq(rmsg.payload.u64, v);
	assert_fd_slots(&rmsg, 1);
	cr_assert(t_same_file(rmsg.fds[0], fd));
	uvh_msg_close_fds(&rmsg);
	close(fd);
	uvh_endpoint_close(&ep);
	close(sv[0]);
	cr_assert_eq(t_count_fds(), before - 2);
}

/* fds riding a later byte than the header's first: refused, the fds of
 * both reads closed. @at is the byte the late fd goes with. */
static void late_fds(size_t at, bool early_fd)
{
	static uint8_t buf[12 + 8];
	struct uvh_endpoint ep;
	int sv[2], fds[2], before;
	size_t n;
	int r;

	t_socketpair(sv);
	before = t_count_fds();
	make_fds(fds, 2);
	uvh_endpoint_init(&ep, sv[1], uvh_frontend_request_name);
	ep.nonblocking = true;
	n = wire(buf, mkhdr(UVH_REQ_SET_VRING_KICK, 1, 8), NULL);

	raw_send(sv[0], buf, at, fds, early_fd ? 1 : 0);
	cr_assert_eq(uvh_endpoint_recv(&ep, &rmsg), -EAGAIN);
	raw_send(sv[0], buf + at, n - at, &fds[1], 1);
	r = uvh_endpoint_recv(&ep, &rmsg);
	cr_assert_eq(r, -EBADFD, "got %d", r);
	assert_fd_slots(&rmsg, 0);
	close_all(fds, 2);
	uvh_endpoint_close(&ep);
	close(sv[0]);
	cr_assert_eq(t_count_fds(), before - 2);
}

Test(endpoint, fds_on_byte1_refused) { late_fds(1, false); }
Test(endpoint, fds_mid_header_refused_both_closed) { late_fds(5, true); }
Test(endpoint, fds_on_payload_refused) { late_fds(12, false); }
Test(endpoint, fds_mid_payload_refused_both_closed) { late_fds(15, true); }

/* ---- too many fds ---------------------------------------------------------- */

static void too_many_fds(unsigned int nfds)
{
	static uint8_t buf[12 + 8];
	int fds[MAX_RAW_FDS];
	struct uvh_endpoint ep;
	int sv[2], before;
	size_t n;

	t_socketpair(sv);
	before = t_count_fds();
	make_fds(fds, nfds);
	uvh_endpoint_init(&ep, sv[1], uvh_frontend_request_name);
	n = wire(buf, mkhdr(UVH_REQ_SET_VRING_KICK, 1, 8), NULL);
	raw_send(sv[0], buf, n, fds, nfds);
	/* Only the in-flight copies remain: ours are gone. */
	close_all(fds, nfds);
	cr_assert_eq(t_count_fds(), before);
	poison(&rmsg);
	cr_assert_eq(uvh_endpoint_recv(&ep, &rmsg), -ETOOMANYREFS);
	assert_fd_slots(&rmsg, 0);
	cr_assert_eq(t_count_fds(), before);
	cr_assert_eq(ep.rx.got, 0);
	uvh_endpoint_close(&ep);
	close(sv[0]);
}

Test(endpoint, nine_fds_refused) { too_many_fds(9); }
Test(endpoint, thirty_fds_refused) { too_many_fds(30); }
/* Past the control buffer: MSG_CTRUNC. */
Test(endpoint, forty_fds_truncated_refused) { too_many_fds(40); }

/* ---- bad headers ----------------------------------------------------------- */

/* Send a header (and @extra payload bytes) with one fd, expect @err, the
 * fd closed and a log line containing @line. */
static void bad_header(struct uvh_msg_header h, size_t extra, int err,
		       const char *line)
{
	static uint8_t buf[12 + 64];
	struct uvh_endpoint ep;
	int sv[2], fd, before, r;

	memset(buf, 0, sizeof(buf));
	memcpy(buf, &h, sizeof(h));
	t_socketpair(sv);
	before = t_count_fds();
	fd = t_eventfd();
	uvh_endpoint_init(&ep, sv[1], uvh_frontend_request_name);
	t_log_capture();
	raw_send(sv[0], buf, 12 + extra, &fd, 1);
	close(fd);
	r = uvh_endpoint_recv(&ep, &rmsg);
	cr_assert_eq(r, err, "got %d (%s)", r, strerror(-r));
	assert_fd_slots(&rmsg, 0);
	cr_assert(t_log_contains(line), "log lacks \"%s\"", line);
	cr_assert_eq(t_count_fds(), before);
	uvh_log_set_sink(NULL, NULL);
	uvh_endpoint_close(&ep);
	close(sv[0]);
}

Test(endpoint, payload_over_limit)
{
	bad_header(mkhdr(UVH_REQ_SET_VRING_KICK, 1, 5000), 8, -EMSGSIZE,
		   "SET_VRING_KICK: payload size 5000 over the 4096 limit");
}

Test(endpoint, payload_huge_size)
{
	bad_header(mkhdr(UVH_REQ_SET_MEM_TABLE, 1, 0xffffffffu), 0, -EMSGSIZE,
		   "SET_MEM_TABLE: payload size 4294967295");
}

Test(endpoint, payload_at_limit_accepted)
{
	struct uvh_endpoint tx, rx;
	struct uvh_msg_header h = mkhdr(UVH_REQ_CREATE_CRYPTO_SESSION, 1,
					UVH_MSG_MAX_PAYLOAD);
	static uint8_t p[UVH_MSG_MAX_PAYLOAD];
	int sv[2];

	memset(p, 0xee, sizeof(p));
	t_socketpair(sv);
	uvh_endpoint_init(&tx, sv[0], NULL);
	uvh_endpoint_init(&rx, sv[1], NULL);
	cr_assert_eq(uvh_endpoint_send(&tx, &h, p, NULL, 0), 0);
	cr_assert_eq(uvh_endpoint_recv(&rx, &rmsg), 0);
	cr_assert_eq(rmsg.hdr.size, UVH_MSG_MAX_PAYLOAD);
	cr_assert_eq(rmsg.payload.raw[UVH_MSG_MAX_PAYLOAD - 1], 0xee);
	assert_fd_slots(&rmsg, 0);
	uvh_endpoint_close(&tx);
	uvh_endpoint_close(&rx);
}

Test(endpoint, version_zero)
{
	bad_header(mkhdr(UVH_REQ_GET_FEATURES, 0, 0), 0, -EPROTONOSUPPORT,
		   "GET_FEATURES: unsupported protocol version 0");
}

Test(endpoint, version_two)
{
	bad_header(mkhdr(UVH_REQ_SET_FEATURES, 2 | UVH_FLAG_REPLY, 8), 8,
		   -EPROTONOSUPPORT, "SET_FEATURES: unsupported protocol version 2");
}

Test(endpoint, version_three)
{
	bad_header(mkhdr(UVH_REQ_SET_OWNER, 3, 0), 0, -EPROTONOSUPPORT,
		   "SET_OWNER: unsupported protocol version 3");
}

Test(endpoint, reserved_flag)
{
	bad_header(mkhdr(UVH_REQ_SET_OWNER, 1 | 0x10, 0), 0, -EBADMSG,
		   "SET_OWNER: reserved flag bits 0x10");
}

Test(endpoint, reserved_top_flag_unknown_request)
{
	bad_header(mkhdr(99, 1 | 0x80000000u, 0), 0, -EBADMSG,
		   "UNKNOWN: reserved flag bits 0x80000000");
}

/* ---- the peer going away ----------------------------------------------------- */

static void truncated(size_t len, bool with_fd)
{
	static uint8_t buf[12 + 8];
	struct uvh_endpoint ep;
	int sv[2], fd, before, r;

	t_socketpair(sv);
	before = t_count_fds();
	fd = t_eventfd();
	uvh_endpoint_init(&ep, sv[1], uvh_frontend_request_name);
	wire(buf, mkhdr(UVH_REQ_SET_VRING_CALL, 1, 8), NULL);
	raw_send(sv[0], buf, len, &fd, with_fd);
	close(fd);
	close(sv[0]);
	r = uvh_endpoint_recv(&ep, &rmsg);
	cr_assert_eq(r, -ENODATA, "got %d", r);
	assert_fd_slots(&rmsg, 0);
	cr_assert_eq(ep.rx.got, 0);
	cr_assert_eq(t_count_fds(), before - 1);
	uvh_endpoint_close(&ep);
	cr_assert_eq(t_count_fds(), before - 2);
}

Test(endpoint, truncated_mid_header) { truncated(5, true); }
Test(endpoint, truncated_after_header) { truncated(12, true); }
Test(endpoint, truncated_mid_payload) { truncated(15, true); }
Test(endpoint, truncated_mid_payload_nofd) { truncated(19, false); }

Test(endpoint, clean_close)
{
	struct uvh_endpoint ep;
	int sv[2], before;

	t_socketpair(sv);
	before = t_count_fds();
	uvh_endpoint_init(&ep, sv[1], uvh_frontend_request_name);
	close(sv[0]);
	poison(&rmsg);
	cr_assert_eq(uvh_endpoint_recv(&ep, &rmsg), -ECONNRESET);
	assert_fd_slots(&rmsg, 0);
	/* Readable (EOF) for wait. */
	cr_assert_eq(uvh_endpoint_wait(&ep, 0), 1);
	uvh_endpoint_close(&ep);
	cr_assert_eq(t_count_fds(), before - 2);
}

/* ---- non-blocking and waiting ------------------------------------------------ */

Test(endpoint, nonblocking_split_across_calls)
{
	static uint8_t buf[12 + 16];
	struct uvh_dirty_log_area log = { .mmap_size = 1 << 20, .mmap_offset = 4096 };
	struct uvh_endpoint ep;
	int sv[2], fd, before;
	size_t n;

	t_socketpair(sv);
	before = t_count_fds();
	fd = t_memfd("log", 1 << 20);
	uvh_endpoint_init(&ep, sv[1], uvh_frontend_request_name);
	ep.nonblocking = true;

	cr_assert_eq(uvh_endpoint_wait(&ep, 0), 0);
	cr_assert_eq(uvh_endpoint_recv(&ep, &rmsg), -EAGAIN);
	cr_assert_eq(ep.rx.got, 0);

	n = wire(buf, mkhdr(UVH_REQ_SET_LOG_BASE, 1, 16), &log);
	raw_send(sv[0], buf, 14, &fd, 1);
	cr_assert_eq(uvh_endpoint_wait(&ep, 1000), 1);
	cr_assert_eq(uvh_endpoint_recv(&ep, &rmsg), -EAGAIN);
	cr_assert_eq(ep.rx.got, 14);
	cr_assert_eq(ep.rx.msg.nfds, 1);

	raw_send(sv[0], buf + 14, n - 14, NULL, 0);
	cr_assert_eq(uvh_endpoint_recv(&ep, &rmsg), 0);
	cr_assert_eq(rmsg.hdr.request, UVH_REQ_SET_LOG_BASE);
	cr_assert_eq(rmsg.payload.log.mmap_size, 1 << 20);
	cr_assert_eq(rmsg.payload.log.mmap_offset, 4096);
	assert_fd_slots(&rmsg, 1);
	cr_assert(t_same_file(rmsg.fds[0], fd));
	uvh_msg_close_fds(&rmsg);
	close(fd);
	cr_assert_eq(uvh_endpoint_recv(&ep, &rmsg), -EAGAIN);
	uvh_endpoint_close(&ep);
	close(sv[0]);
	cr_assert_eq(t_count_fds(), before - 2);
}

/* Closing an endpoint with half a message closes the fds it held. */
Test(endpoint, close_with_partial_message)
{
	static uint8_t buf[12 + 8];
	struct uvh_endpoint ep;
	int sv[2], fds[3], before;

	t_socketpair(sv);
	before = t_count_fds();
	make_fds(fds, 3);
	uvh_endpoint_init(&ep, sv[1], uvh_frontend_request_name);
	ep.nonblocking = true;
	wire(buf, mkhdr(UVH_REQ_SET_VRING_ERR, 1, 8), NULL);
	raw_send(sv[0], buf, 3, fds, 3);
	close_all(fds, 3);
	cr_assert_eq(uvh_endpoint_recv(&ep, &rmsg), -EAGAIN);
	cr_assert_eq(t_count_fds(), before + 3);
	uvh_endpoint_close(&ep);
	close(sv[0]);
	cr_assert_eq(t_count_fds(), before - 2);
}

struct delayed {
	int fd;
	int extra;
};

static void *send_later(void *arg)
{
	struct delayed *d = arg;
	struct timespec ts = { .tv_nsec = 50 * 1000 * 1000 };
	struct uvh_endpoint tx;
	struct uvh_msg_header h = mkhdr(UVH_REQ_SET_VRING_NUM, 1, 8);
	uint64_t v = 256;

	nanosleep(&ts, NULL);
	uvh_endpoint_init(&tx, d->fd, NULL);
	d->extra = uvh_endpoint_send(&tx, &h, &v, NULL, 0);
	return NULL;
}

/* A blocking endpoint over a non-blocking socket waits rather than failing. */
Test(endpoint, blocking_endpoint_nonblocking_socket_waits)
{
	struct uvh_endpoint ep;
	struct delayed d;
	pthread_t th;
	int sv[2];

	t_socketpair(sv);
	cr_assert_eq(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
	uvh_endpoint_init(&ep, sv[1], uvh_frontend_request_name);
	d.fd = sv[0];
	d.extra = -1;
	cr_assert_eq(pthread_create(&th, NULL, send_later, &d), 0);
	cr_assert_eq(uvh_endpoint_recv(&ep, &rmsg), 0);
	pthread_join(th, NULL);
	cr_assert_eq(d.extra, 0);
	cr_assert_eq(rmsg.hdr.request, UVH_REQ_SET_VRING_NUM);
	cr_assert_eq(rmsg.payload.u64, 256);
	assert_fd_slots(&rmsg, 0);
	uvh_endpoint_close(&ep);
	close(sv[0]);
}

Test(endpoint, wait_timeout_and_readable)
{
	struct uvh_endpoint ep;
	struct timespec a, b;
	int sv[2];
	long ms;

	t_socketpair(sv);
	uvh_endpoint_init(&ep, sv[1], NULL);
	clock_gettime(CLOCK_MONOTONIC, &a);
	cr_assert_eq(uvh_endpoint_wait(&ep, 30), 0);
	clock_gettime(CLOCK_MONOTONIC, &b);
	ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
	cr_assert_geq(ms, 25);
	cr_assert_eq(write(sv[0], "x", 1), 1);
	cr_assert_eq(uvh_endpoint_wait(&ep, -1), 1);
	uvh_endpoint_close(&ep);
	cr_assert_eq(uvh_endpoint_wait(&ep, 0), -EBADF);
	close(sv[0]);
}

/* ---- io_uring-driven receive ---------------------------------------------------- */

/* One message through IORING_OP_RECVMSG: prepare, submit, complete, until
 * rx_complete says it is whole (or fails). */
static int uring_recv(struct io_uring *ring, struct uvh_endpoint *ep,
		      struct uvh_msg *msg, int *reads)
{
	for (;;) {
		struct io_uring_sqe *sqe;
		struct io_uring_cqe *cqe;
		struct msghdr mh;
		int res, r;

		uvh_endpoint_rx_prepare(ep, &mh);
		sqe = io_uring_get_sqe(ring);
		cr_assert_not_null(sqe);
		io_uring_prep_recvmsg(sqe, ep->fd, &mh, MSG_CMSG_CLOEXEC);
		cr_assert_eq(io_uring_submit(ring), 1);
		cr_assert_eq(io_uring_wait_cqe(ring, &cqe), 0);
		res = cqe->res;
		io_uring_cqe_seen(ring, cqe);
		(*reads)++;
		r = uvh_endpoint_rx_complete(ep, &mh, res, msg);
		if (r != 0)
			return r;
	}
}

Test(endpoint, io_uring_receive)
{
	static uint8_t buf[12 + 16];
	struct uvh_endpoint ep;
	struct io_uring ring;
	uint64_t v = 3;
	int sv[2], fds[2], before, reads = 0;
	size_t n;

	t_socketpair(sv);
	cr_assert_eq(io_uring_queue_init(4, &ring, 0), 0);
	before = t_count_fds();
	fds[0] = t_eventfd();
	fds[1] = t_memfd("ring", 8192);
	uvh_endpoint_init(&ep, sv[1], uvh_frontend_request_name);

	/* Header and payload in separate writes, fds on the header. */
	n = wire(buf, mkhdr(UVH_REQ_SET_VRING_KICK, 1, 8), &v);
	raw_send(sv[0], buf, 12, fds, 2);
	raw_send(sv[0], buf + 12, n - 12, NULL, 0);
	cr_assert_eq(uring_recv(&ring, &ep, &rmsg, &reads), 1);
	cr_assert_eq(reads, 2);
	cr_assert_eq(rmsg.hdr.request, UVH_REQ_SET_VRING_KICK);
	cr_assert_eq(rmsg.payload.u64, 3);
	assert_fd_slots(&rmsg, 2);
	cr_assert(t_same_file(rmsg.fds[0], fds[0]));
	cr_assert(t_same_file(rmsg.fds[1], fds[1]));
	cr_assert(fcntl(rmsg.fds[0], F_GETFD) & FD_CLOEXEC);
	uvh_msg_close_fds(&rmsg);

	/* A header-only message, no fds, then a second with one fd. */
	n = wire(buf, mkhdr(UVH_REQ_GET_FEATURES, 1, 0), NULL);
	raw_send(sv[0], buf, n, NULL, 0);
	n = wire(buf, mkhdr(UVH_REQ_SET_LOG_FD, 1, 0), NULL);
	raw_send(sv[0], buf, n, &fds[0], 1);
	reads = 0;
	cr_assert_eq(uring_recv(&ring, &ep, &rmsg, &reads), 1);
	cr_assert_eq(rmsg.hdr.request, UVH_REQ_GET_FEATURES);
	assert_fd_slots(&rmsg, 0);
	cr_assert_eq(uring_recv(&ring, &ep, &rmsg, &reads), 1);
	cr_assert_eq(rmsg.hdr.request, UVH_REQ_SET_LOG_FD);
	assert_fd_slots(&rmsg, 1);
	cr_assert(t_same_file(rmsg.fds[0], fds[0]));
	uvh_msg_close_fds(&rmsg);
	cr_assert_eq(reads, 2);

	/* Refusals work the same way: fds past byte 0. */
	n = wire(buf, mkhdr(UVH_REQ_SET_VRING_CALL, 1, 8), &v);
	raw_send(sv[0], buf, 12, NULL, 0);
	raw_send(sv[0], buf + 12, n - 12, fds, 2);
	cr_assert_eq(uring_recv(&ring, &ep, &rmsg, &reads), -EBADFD);
	assert_fd_slots(&rmsg, 0);

	close_all(fds, 2);
	cr_assert_eq(t_count_fds(), before);
	/* EOF between messages. */
	close(sv[0]);
	cr_assert_eq(uring_recv(&ring, &ep, &rmsg, &reads), -ECONNRESET);
	uvh_endpoint_close(&ep);
	io_uring_queue_exit(&ring);
}

Test(endpoint, io_uring_too_many_fds)
{
	static uint8_t buf[12 + 8];
	struct uvh_endpoint ep;
	struct io_uring ring;
	int sv[2], fds[12], before, reads = 0;

	t_socketpair(sv);
	cr_assert_eq(io_uring_queue_init(4, &ring, 0), 0);
	before = t_count_fds();
	make_fds(fds, 12);
	uvh_endpoint_init(&ep, sv[1], uvh_frontend_request_name);
	raw_send(sv[0], buf, wire(buf, mkhdr(UVH_REQ_SET_VRING_KICK, 1, 8), NULL),
		 fds, 12);
	close_all(fds, 12);
	cr_assert_eq(uring_recv(&ring, &ep, &rmsg, &reads), -ETOOMANYREFS);
	cr_assert_eq(t_count_fds(), before);
	uvh_endpoint_close(&ep);
	close(sv[0]);
	io_uring_queue_exit(&ring);
}

/* A driver reporting MSG_CTRUNC (the kernel dropped fds that did not fit)
 * gets the message refused and the fds that did arrive closed. */
Test(endpoint, rx_complete_ctrunc)
{
	static uint8_t buf[12 + 8];
	struct uvh_endpoint ep;
	struct msghdr mh;
	int sv[2], fd, before, r;

	t_socketpair(sv);
	before = t_count_fds();
	fd = t_eventfd();
	uvh_endpoint_init(&ep, sv[1], NULL);
	raw_send(sv[0], buf, wire(buf, mkhdr(UVH_REQ_SET_VRING_KICK, 1, 8), NULL),
		 &fd, 1);
	close(fd);
	uvh_endpoint_rx_prepare(&ep, &mh);
	r = (int)recvmsg(sv[1], &mh, MSG_CMSG_CLOEXEC);
	cr_assert_eq(r, 12);
	cr_assert_eq(t_count_fds(), before + 1);
	mh.msg_flags |= MSG_CTRUNC;
	cr_assert_eq(uvh_endpoint_rx_complete(&ep, &mh, r, &rmsg), -ETOOMANYREFS);
	assert_fd_slots(&rmsg, 0);
	cr_assert_eq(t_count_fds(), before);
	uvh_endpoint_close(&ep);
	close(sv[0]);
}

/* rx_complete passes -EAGAIN / -EINTR through and keeps the partial
 * message; any other error resets it and closes its fds. */
Test(endpoint, rx_complete_errors)
{
	static uint8_t buf[12 + 8];
	struct uvh_endpoint ep;
	struct msghdr mh;
	int sv[2], fd, before;

	t_socketpair(sv);
	before = t_count_fds();
	fd = t_eventfd();
	uvh_endpoint_init(&ep, sv[1], NULL);
	wire(buf, mkhdr(UVH_REQ_SET_VRING_KICK, 1, 8), NULL);
	raw_send(sv[0], buf, 4, &fd, 1);
	close(fd);
	uvh_endpoint_rx_prepare(&ep, &mh);
	cr_assert_eq(uvh_endpoint_rx_complete(&ep, &mh,
		     (int)recvmsg(sv[1], &mh, MSG_CMSG_CLOEXEC), &rmsg), 0);
	cr_assert_eq(ep.rx.got, 4);
	uvh_endpoint_rx_prepare(&ep, &mh);
	cr_assert_eq(mh.msg_iov->iov_len, 8);
	cr_assert_eq(uvh_endpoint_rx_complete(&ep, &mh, -EAGAIN, &rmsg), -EAGAIN);
	cr_assert_eq(uvh_endpoint_rx_complete(&ep, &mh, -EINTR, &rmsg), -EINTR);
	cr_assert_eq(ep.rx.got, 4);
	cr_assert_eq(t_count_fds(), before + 1);
	/* A driver claiming more bytes than were asked for is refused. */
	cr_assert_eq(uvh_endpoint_rx_complete(&ep, &mh, 9, &rmsg), -EINVAL);
	cr_assert_eq(ep.rx.got, 0);
	cr_assert_eq(t_count_fds(), before);

	raw_send(sv[0], buf, 4, NULL, 0);
	uvh_endpoint_rx_prepare(&ep, &mh);
	cr_assert_eq(uvh_endpoint_rx_complete(&ep, &mh,
		     (int)recvmsg(sv[1], &mh, MSG_CMSG_CLOEXEC), &rmsg), 0);
	uvh_endpoint_rx_prepare(&ep, &mh);
	cr_assert_eq(uvh_endpoint_rx_complete(&ep, &mh, -ECONNABORTED, &rmsg),
		     -ECONNABORTED);
	cr_assert_eq(ep.rx.got, 0);
	uvh_endpoint_close(&ep);
	close(sv[0]);
	cr_assert_eq(t_count_fds(), before - 2);
}

/* ---- send side ------------------------------------------------------------------ */

Test(endpoint, send_to_closed_peer_is_epipe)
{
	struct uvh_endpoint ep;
	struct uvh_msg_header h = mkhdr(UVH_REQ_SET_VRING_NUM, 1, 8);
	uint64_t v = 1;
	int sv[2], fd;

	/* SIGPIPE at its default: a missing MSG_NOSIGNAL would kill us. */
	signal(SIGPIPE, SIG_DFL);
	t_socketpair(sv);
	fd = t_eventfd();
	uvh_endpoint_init(&ep, sv[0], NULL);
	close(sv[1]);
	cr_assert_eq(uvh_endpoint_send(&ep, &h, &v, &fd, 1), -EPIPE);
	cr_assert_eq(uvh_endpoint_send(&ep, &h, &v, NULL, 0), -EPIPE);
	close(fd);
	uvh_endpoint_close(&ep);
}

/* The peer closed with our data unread: send is -EPIPE, and the kernel
 * reports the close to recv as ECONNRESET instead of EOF. Between two
 * messages that is -ECONNRESET, mid-message -ENODATA (fds closed). */
static void closed_unread(size_t partial)
{
	static uint8_t buf[12 + 8];
	struct uvh_endpoint ep;
	struct uvh_msg_header h = mkhdr(UVH_REQ_SET_VRING_NUM, 1, 8);
	uint64_t v = 1;
	int sv[2], fd, before, r;

	signal(SIGPIPE, SIG_DFL);
	t_socketpair(sv);
	before = t_count_fds();
	fd = t_eventfd();
	uvh_endpoint_init(&ep, sv[1], uvh_frontend_request_name);
	ep.nonblocking = true;
	if (partial) {
		wire(buf, mkhdr(UVH_REQ_SET_VRING_KICK, 1, 8), NULL);
		raw_send(sv[0], buf, partial, &fd, 1);
		cr_assert_eq(uvh_endpoint_recv(&ep, &rmsg), -EAGAIN);
	}
	close(fd);
	/* Data the peer will never read. */
	cr_assert_eq(uvh_endpoint_send(&ep, &h, &v, NULL, 0), 0);
	close(sv[0]);
	cr_assert_eq(uvh_endpoint_send(&ep, &h, &v, NULL, 0), -EPIPE);
	r = uvh_endpoint_recv(&ep, &rmsg);
	cr_assert_eq(r, partial ? -ENODATA : -ECONNRESET, "got %d", r);
	assert_fd_slots(&rmsg, 0);
	cr_assert_eq(t_count_fds(), before - 1);
	uvh_endpoint_close(&ep);
}

Test(endpoint, peer_closed_unread_between_messages) { closed_unread(0); }
Test(endpoint, peer_closed_unread_mid_message) { closed_unread(6); }

Test(endpoint, send_refuses_bad_arguments_sends_nothing)
{
	struct uvh_endpoint ep;
	struct uvh_msg_header h = mkhdr(UVH_REQ_SET_MEM_TABLE, 1, 8);
	int sv[2], fds[9], bad = -1;
	static uint8_t p[8192];
	uint8_t c;

	t_socketpair(sv);
	make_fds(fds, 9);
	uvh_endpoint_init(&ep, sv[0], NULL);
	cr_assert_eq(uvh_endpoint_send(&ep, &h, p, fds, 9), -EINVAL);
	h.size = UVH_MSG_MAX_PAYLOAD + 1;
	cr_assert_eq(uvh_endpoint_send(&ep, &h, p, NULL, 0), -EINVAL);
	h.size = 8;
	cr_assert_eq(uvh_endpoint_send(&ep, &h, NULL, NULL, 0), -EINVAL);
	cr_assert_eq(uvh_endpoint_send(&ep, &h, p, &bad, 1), -EBADF);
	/* Nothing reached the peer. */
	cr_assert_eq(recv(sv[1], &c, 1, MSG_DONTWAIT), -1);
	cr_assert_eq(errno, EAGAIN);
	/* Exactly 8 is fine. */
	cr_assert_eq(uvh_endpoint_send(&ep, &h, p, fds, 8), 0);
	close_all(fds, 9);
	uvh_endpoint_close(&ep);
	close(sv[1]);
}

/* A nearly full non-blocking socket: send waits for room (EAGAIN -> poll)
 * while a reader drains, and the message arrives whole. */
static void *drain(void *arg)
{
	struct uvh_endpoint *ep = arg;
	static struct uvh_msg m;
	intptr_t n = 0;

	while (uvh_endpoint_recv(ep, &m) == 0) {
		uvh_msg_close_fds(&m);
		n++;
	}
	/* Unblock a sender stuck on a full socket: it must fail, not hang. */
	shutdown(ep->fd, SHUT_RDWR);
	return (void *)n;
}

Test(endpoint, send_waits_when_socket_full)
{
	struct uvh_endpoint tx, rx;
	static uint8_t p[UVH_MSG_MAX_PAYLOAD];
	struct uvh_msg_header h = mkhdr(UVH_REQ_CREATE_CRYPTO_SESSION, 1, sizeof(p));
	int sv[2], fd, sndbuf = 4096, sent = 0;
	pthread_t th;
	void *count;

	t_socketpair(sv);
	cr_assert_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
	cr_assert_eq(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
	fd = t_eventfd();
	uvh_endpoint_init(&tx, sv[0], NULL);
	uvh_endpoint_init(&rx, sv[1], NULL);
	cr_assert_eq(pthread_create(&th, NULL, drain, &rx), 0);
	for (int i = 0; i < 64; i++, sent++)
		cr_assert_eq(uvh_endpoint_send(&tx, &h, p, &fd, 1), 0);
	uvh_endpoint_close(&tx);
	pthread_join(th, &count);
	cr_assert_eq((intptr_t)count, sent);
	close(fd);
	uvh_endpoint_close(&rx);
}

/* ---- a peer that stops in the middle of a message ------------------------------ */

static long ms_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0->tv_sec) * 1000L + (t.tv_nsec - t0->tv_nsec) / 1000000L;
}

/* Half a message (with an fd) and then silence, the peer still connected:
 * the read gives up after stall_ms and holds nothing. */
static void stalled(size_t len)
{
	static uint8_t buf[12 + 8];
	struct uvh_endpoint ep;
	struct timespec t0;
	int sv[2], fd, before, r;
	long ms;

	t_socketpair(sv);
	before = t_count_fds();
	fd = t_eventfd();
	uvh_endpoint_init(&ep, sv[1], uvh_frontend_request_name);
	cr_assert_eq(ep.stall_ms, UVH_ENDPOINT_STALL_MS);
	ep.stall_ms = 150;
	wire(buf, mkhdr(UVH_REQ_SET_VRING_CALL, 1, 8), NULL);
	raw_send(sv[0], buf, len, &fd, true);
	close(fd);
	t_log_capture();
	clock_gettime(CLOCK_MONOTONIC, &t0);
	r = uvh_endpoint_recv(&ep, &rmsg);
	ms = ms_since(&t0);
	cr_assert_eq(r, -ETIMEDOUT, "got %d", r);
	cr_assert(ms >= 140 && ms < 2000, "gave up after %ld ms", ms);
	cr_assert(t_log_contains("stalled"));
	assert_fd_slots(&rmsg, 0);
	cr_assert_eq(ep.rx.got, 0);
	/* the fd that came with the half message is closed: back to the pair */
	cr_assert_eq(t_count_fds(), before);
	uvh_endpoint_close(&ep);
	close(sv[0]);
	cr_assert_eq(t_count_fds(), before - 2);
}

Test(endpoint, stalled_mid_header_times_out) { stalled(5); }
Test(endpoint, stalled_mid_payload_times_out) { stalled(15); }

/* An idle peer (nothing sent) is no stall: only a started message is bounded. */
Test(endpoint, idle_peer_is_waited_for)
{
	struct uvh_endpoint ep;
	int sv[2];

	t_socketpair(sv);
	uvh_endpoint_init(&ep, sv[1], uvh_frontend_request_name);
	ep.stall_ms = 50;
	cr_assert_eq(uvh_endpoint_wait(&ep, 200), 0);	/* nothing, and no error */
	cr_assert_eq(ep.rx.got, 0);
	uvh_endpoint_close(&ep);
	close(sv[0]);
}

/* A peer that reads nothing: sends fill the socket, then one gives up
 * after stall_ms instead of blocking forever. */
Test(endpoint, peer_not_reading_send_times_out)
{
	static uint8_t payload[4096];
	struct uvh_endpoint ep;
	struct uvh_msg_header h = mkhdr(UVH_REQ_SET_CONFIG, 0, sizeof(payload));
	struct timespec t0;
	int sv[2], r = 0, sent = 0;

	t_socketpair(sv);
	uvh_endpoint_init(&ep, sv[1], uvh_frontend_request_name);
	ep.stall_ms = 100;
	t_log_capture();
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (sent < 100000 && (r = uvh_endpoint_send(&ep, &h, payload, NULL, 0)) == 0)
		sent++;
	cr_assert_eq(r, -ETIMEDOUT, "got %d after %d messages", r, sent);
	cr_assert(sent > 0);
	cr_assert(ms_since(&t0) < 5000);
	cr_assert(t_log_contains("read nothing"));
	uvh_endpoint_close(&ep);
	close(sv[0]);
}
