/* SPDX-License-Identifier: MIT */
/*
 * conformance-offload: three front-ends, written from the specifications alone (this
 * directory's vhost-user and ring code, plain libc, no uvhost code), on one
 * `uvhost-net --mode switch` with three sockets. The sender negotiates CSUM and HOST_TSO4
 * and sends one 60,054-byte TCP/IPv4 frame with a GSO header (NEEDS_CSUM, TCPV4, gso_size
 * 1448) to an unknown MAC, so the switch floods it:
 *   - the receiver that negotiated GUEST_CSUM and GUEST_TSO4 must get it whole, its GSO
 *     header with it, across merged RX buffers;
 *   - the receiver that negotiated no offload must get 42 segments of at most 1,514 bytes,
 *     each with a valid IPv4 header checksum and TCP checksum (computed here, RFC 1071),
 *     sequence numbers in order, FIN/PSH on the last only, and the payload equal.
 * A fourth port, plain too, gets the segments as well; then it sends the same frame without
 * having negotiated HOST_TSO4: nobody may get it.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conform.h"

#define F_CSUM 0
#define F_GUEST_CSUM 1
#define F_GUEST_TSO4 7
#define F_HOST_TSO4 11
#define NPORTS 3
#define RX_NUM 256
#define RX_BUF 2048
#define TX_NUM 8
#define TX_BUF (NET_HDR_LEN + 65536)
#define PAYLOAD 60000
#define MSS 1448
#define HLEN 54 /* Ethernet 14 + IPv4 20 + TCP 20 */

static pid_t daemon_pid = -1;
static char dir[64];

/* The daemon's sockets and their directory. */
static void cleanup(void)
{
	char path[96];

	if (!dir[0])
		return;
	for (unsigned int k = 0; k <= NPORTS; k++) {
		snprintf(path, sizeof(path), "%s/s%u", dir, k);
		unlink(path);
	}
	rmdir(dir);
}

noreturn void fail(const char *fmt, ...)
{
	va_list ap;

	printf("conformance-offload: FAIL: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	if (daemon_pid > 0) {
		/* its counters (drops by reason) say what happened */
		kill(daemon_pid, SIGTERM);
		waitpid(daemon_pid, NULL, 0);
	}
	cleanup();
	exit(1);
}

noreturn void busy_retry(void)
{
	fail("the back-end closed a connection");
}

uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

struct port {
	struct gmem mem;
	struct vu vu;
	struct vq q[2];
	uint64_t features, offered;
	uint64_t rng;
};

static void up(struct port *p, unsigned k, uint64_t features)
{
	char path[96];

	p->rng = 0x5eed + k;
	gmem_init(&p->mem, &p->rng, 1, 16u << 20);
	vq_init(&p->q[0], &p->mem, &p->rng, 0, RX_NUM, false, false, RX_BUF);
	vq_init(&p->q[1], &p->mem, &p->rng, 1, TX_NUM, false, false, TX_BUF);
	snprintf(path, sizeof(path), "%s/s%u", dir, k);
	vu_connect(&p->vu, path);
	vu_send(&p->vu, VU_GET_FEATURES, false, NULL, 0, NULL, 0, 0, &p->offered);
	vu_read_all(&p->vu);
	if ((p->offered & features) != features)
		fail("port %u: offered %#llx, lacks %#llx", k, (unsigned long long)p->offered,
		     (unsigned long long)(features & ~p->offered));
	p->features = features;
	vu_send(&p->vu, VU_SET_OWNER, false, NULL, 0, NULL, 0, 0, NULL);
	vu_send(&p->vu, VU_SET_FEATURES, false, &p->features, 8, NULL, 0, 0, NULL);
	{
		struct { uint32_t n, pad; uint64_t reg[4]; } mt = {
			1, 0, {p->mem.r[0].gpa, p->mem.r[0].size, (uintptr_t)p->mem.r[0].va, 0}};
		vu_send(&p->vu, VU_SET_MEM_TABLE, false, &mt, sizeof(mt), &p->mem.fd, 1, 0, NULL);
	}
	for (uint32_t r = 0; r < 2; r++) {
		struct vq *q = &p->q[r];
		struct { uint32_t index, num; } st = {r, q->num};
		struct { uint32_t index, flags; uint64_t desc, used, avail, log; } addr = {
			r, 0, q->ring_uva[0], q->ring_uva[1], q->ring_uva[2], 0};
		uint64_t idx = r;

		vu_send(&p->vu, VU_SET_VRING_NUM, false, &st, sizeof(st), NULL, 0, r, NULL);
		vu_send(&p->vu, VU_SET_VRING_ADDR, false, &addr, sizeof(addr), NULL, 0, r, NULL);
		st.num = 0;
		vu_send(&p->vu, VU_SET_VRING_BASE, false, &st, sizeof(st), NULL, 0, r, NULL);
		vu_send(&p->vu, VU_SET_VRING_CALL, false, &idx, 8, &q->callfd, 1, r, NULL);
		/* without PROTOCOL_FEATURES a ring runs from its kick fd on (enabled) */
		vu_send(&p->vu, VU_SET_VRING_KICK, false, &idx, 8, &q->kickfd, 1, r, NULL);
	}
	for (int id; (id = vq_next_id(&p->q[0], 1)) >= 0;) {
		uint64_t gpa;

		memset(vq_slot(&p->q[0], (uint16_t)id, &gpa), 0xa5, RX_BUF);
		vq_add(&p->q[0], &(struct seg){gpa, RX_BUF}, 1, true, false, id);
	}
	vq_publish(&p->q[0]);
	vq_notify(&p->q[0], true);
}

/* ---- the reference: RFC 1071 over network-order bytes ---- */

static uint32_t sum16(const uint8_t *b, size_t n, uint32_t s)
{
	for (size_t i = 0; i < n; i++)
		s += (i & 1) ? b[i] : (uint32_t)b[i] << 8;
	return s;
}

static uint16_t fold(uint32_t s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)s;
}

static uint16_t be16(const uint8_t *b)
{
	return (uint16_t)(b[0] << 8 | b[1]);
}

static uint32_t be32(const uint8_t *b)
{
	return (uint32_t)be16(b) << 16 | be16(b + 2);
}

static uint8_t frame[HLEN + PAYLOAD];

static void make_frame(void)
{
	uint8_t *ip = frame + 14, *tcp = ip + 20;
	uint16_t ps;

	memcpy(frame, "\x02\x00\x00\x00\x00\x99", 6); /* nobody's: flooded */
	memcpy(frame + 6, "\x02\x00\x00\x00\x00\x01", 6);
	frame[12] = 0x08;
	ip[0] = 0x45;
	ip[2] = (uint8_t)((40 + PAYLOAD) >> 8);
	ip[3] = (uint8_t)(40 + PAYLOAD);
	ip[4] = 0x43; ip[5] = 0x21; ip[6] = 0x40; ip[8] = 64; ip[9] = 6;
	memcpy(ip + 12, "\x0a\x00\x00\x01\x0a\x00\x00\x02", 8);
	tcp[0] = 0x13; tcp[1] = 0x88; tcp[2] = 0xc0; tcp[3] = 0x01;
	memcpy(tcp + 4, "\x10\x20\x30\x40", 4);
	tcp[12] = 0x50;
	tcp[13] = 0x19; /* ACK PSH FIN */
	tcp[14] = 0x20;
	for (unsigned i = 0; i < PAYLOAD; i++)
		frame[HLEN + i] = (uint8_t)(i * 13 + (i >> 9));
	/* the partial checksum a driver leaves: the pseudo-header's sum, not inverted */
	ps = fold(sum16(ip + 12, 8, 6 + 20 + PAYLOAD));
	tcp[16] = (uint8_t)(ps >> 8);
	tcp[17] = (uint8_t)ps;
}

static void tx_reclaim(struct port *p)
{
	uint16_t id;
	uint32_t len;
	int32_t tag;

	while (vq_get(&p->q[1], &id, &len, &tag))
		;
}

static void send_tso(struct port *p)
{
	struct virtio_net_hdr_mrg_rxbuf h = {0};
	uint64_t gpa;
	int id;
	uint8_t *b;

	tx_reclaim(p);
	id = vq_next_id(&p->q[1], 1);
	if (id < 0)
		fail("no TX slot");
	h.hdr.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
	h.hdr.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
	h.hdr.hdr_len = HLEN;
	h.hdr.gso_size = MSS;
	h.hdr.csum_start = 34;
	h.hdr.csum_offset = 16;
	b = vq_slot(&p->q[1], (uint16_t)id, &gpa);
	memcpy(b, &h, NET_HDR_LEN);
	memcpy(b + NET_HDR_LEN, frame, sizeof(frame));
	/* header and frame in two buffers, as Linux sends them */
	vq_add(&p->q[1], (struct seg[2]){{gpa, NET_HDR_LEN}, {gpa + NET_HDR_LEN, sizeof(frame)}},
	       2, false, false, id);
	vq_publish(&p->q[1]);
	vq_notify(&p->q[1], true);
}

/* The next frame on @p's RX ring (buffers merged by num_buffers): its length, or -1
 * when nothing came within @ms. */
static int recv_frame(struct port *p, uint8_t *out, size_t cap,
		      struct virtio_net_hdr_mrg_rxbuf *h, int ms)
{
	struct vq *q = &p->q[0];
	uint64_t end = now_ns() + (uint64_t)ms * 1000000u;
	uint16_t id;
	uint32_t len, total;
	int32_t tag;

	while (!vq_get(q, &id, &len, &tag)) {
		if (now_ns() > end)
			return -1;
		usleep(200);
	}
	if (len < NET_HDR_LEN || len > RX_BUF)
		fail("RX used len %u", len);
	memcpy(h, vq_slot(q, id, NULL), NET_HDR_LEN);
	total = len - NET_HDR_LEN;
	if (total > cap)
		fail("frame over %zu bytes", cap);
	memcpy(out, vq_slot(q, id, NULL) + NET_HDR_LEN, total);
	for (unsigned i = 1; i < h->num_buffers; i++) {
		while (!vq_get(q, &id, &len, &tag)) {
			if (now_ns() > end)
				fail("num_buffers %u, only %u came", h->num_buffers, i);
			usleep(100);
		}
		if (total + len > cap)
			fail("frame over %zu bytes", cap);
		memcpy(out + total, vq_slot(q, id, NULL), len);
		total += len;
	}
	return (int)total;
}

static void check_whole(struct port *p)
{
	static uint8_t got[70000];
	struct virtio_net_hdr_mrg_rxbuf h;
	int n = recv_frame(p, got, sizeof(got), &h, 5000);

	if (n < 0)
		fail("the offloading receiver got nothing");
	if (n != (int)sizeof(frame) || memcmp(got, frame, sizeof(frame)))
		fail("the offloading receiver got %d bytes, not the frame sent whole", n);
	if (h.hdr.gso_type != VIRTIO_NET_HDR_GSO_TCPV4 || h.hdr.gso_size != MSS ||
	    !(h.hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) || h.hdr.csum_start != 34 ||
	    h.hdr.csum_offset != 16)
		fail("the offloading receiver's header: flags %u gso %u size %u csum %u/%u",
		     h.hdr.flags, h.hdr.gso_type, h.hdr.gso_size, h.hdr.csum_start,
		     h.hdr.csum_offset);
	printf("conformance-offload: the GUEST_TSO4 receiver got the %zu-byte frame whole, "
	       "gso_size %u, in %u buffers\n", sizeof(frame), h.hdr.gso_size, h.num_buffers);
}

static void check_segments(struct port *p)
{
	static uint8_t got[70000];
	struct virtio_net_hdr_mrg_rxbuf h;
	unsigned nseg = (PAYLOAD + MSS - 1) / MSS, off = 0;

	for (unsigned k = 0; k < nseg; k++) {
		int n = recv_frame(p, got, sizeof(got), &h, 5000);
		unsigned seg = PAYLOAD - off < MSS ? PAYLOAD - off : MSS;
		const uint8_t *ip = got + 14, *tcp = ip + 20;

		if (n < 0)
			fail("the plain receiver got %u of %u segments", k, nseg);
		if (n > 1514 || n != (int)(HLEN + seg))
			fail("segment %u: %d bytes, want %u", k, n, HLEN + seg);
		if (h.hdr.flags || h.hdr.gso_type)
			fail("segment %u: header flags %u gso %u for a receiver without offloads", k,
			     h.hdr.flags, h.hdr.gso_type);
		if (be16(ip + 2) != 40 + seg || fold(sum16(ip, 20, 0)) != 0xffff)
			fail("segment %u: IPv4 total length %u or header checksum wrong", k,
			     be16(ip + 2));
		if (fold(sum16(tcp, 20 + seg, sum16(ip + 12, 8, 6 + 20 + seg))) != 0xffff)
			fail("segment %u: TCP checksum wrong", k);
		if (be32(tcp + 4) != be32(frame + 38) + off)
			fail("segment %u: seq %#x, want %#x", k, be32(tcp + 4), be32(frame + 38) + off);
		if ((tcp[13] & 0x09) != (k + 1 == nseg ? 0x09 : 0))
			fail("segment %u: TCP flags %#x", k, tcp[13]);
		if (memcmp(got + HLEN, frame + HLEN + off, seg))
			fail("segment %u: payload differs", k);
		off += seg;
	}
	if (recv_frame(p, got, sizeof(got), &h, 100) >= 0)
		fail("the plain receiver got more than %u segments", nseg);
	printf("conformance-offload: the plain receiver got %u segments of at most %u bytes, "
	       "checksums, sequence numbers and payload right\n", nseg, HLEN + MSS);
}

/*
 * Set-up messages have no reply here, so a port's rings start when the device gets to
 * them: a port not up yet drops what is flooded to it. The link is up for all when a
 * broadcast from port 0 has reached every other port; the copies are then drained.
 */
static void wait_links(struct port *p)
{
	static uint8_t got[70000];
	struct virtio_net_hdr_mrg_rxbuf h;
	uint64_t end = now_ns() + 10000000000ull;
	bool seen[NPORTS + 1] = {true};
	unsigned n;

	for (;;) {
		int id;
		uint64_t gpa;
		uint8_t *b;

		tx_reclaim(&p[0]);
		id = vq_next_id(&p[0].q[1], 1);
		if (id >= 0) {
			b = vq_slot(&p[0].q[1], (uint16_t)id, &gpa);
			memset(b, 0, NET_HDR_LEN + 60);
			memset(b + NET_HDR_LEN, 0xff, 6);
			memcpy(b + NET_HDR_LEN + 6, frame + 6, 6);
			b[NET_HDR_LEN + 12] = 0x88;
			b[NET_HDR_LEN + 13] = 0xb5;
			vq_add(&p[0].q[1], &(struct seg){gpa, NET_HDR_LEN + 60}, 1, false, false, id);
			vq_publish(&p[0].q[1]);
			vq_notify(&p[0].q[1], true);
		}
		n = 0;
		for (unsigned k = 1; k <= NPORTS; k++) {
			while (recv_frame(&p[k], got, sizeof(got), &h, 20) >= 0)
				seen[k] = true;
			n += seen[k];
		}
		if (n == NPORTS)
			break;
		if (now_ns() > end)
			fail("the switch's ports did not all come up within 10 s (%u of %u)", n,
			     NPORTS);
	}
	for (unsigned k = 0; k <= NPORTS; k++)
		while (recv_frame(&p[k], got, sizeof(got), &h, 50) >= 0)
			;
}

int main(int argc, char **argv)
{
	const uint64_t base = 1ull << F_VERSION_1 | 1ull << F_MRG_RXBUF;
	static struct port p[NPORTS + 1];
	char s[NPORTS + 1][80];
	struct virtio_net_hdr_mrg_rxbuf h;
	static uint8_t got[70000];

	if (argc != 3 || strcmp(argv[1], "--daemon"))
		fail("usage: conformance-offload --daemon PATH");
	setvbuf(stdout, NULL, _IOLBF, 0);
	snprintf(dir, sizeof(dir), "/tmp/uvh-offload.XXXXXX");
	if (!mkdtemp(dir))
		fail("mkdtemp: %m");
	for (unsigned k = 0; k <= NPORTS; k++)
		snprintf(s[k], sizeof(s[k]), "%s/s%u", dir, k);
	daemon_pid = fork();
	if (daemon_pid == 0) {
		execl(argv[2], argv[2], "--mode", "switch", "--engine-mode", "event",
		      "--socket-path", s[0], "--socket-path", s[1], "--socket-path", s[2],
		      "--socket-path", s[3], (char *)NULL);
		_exit(127);
	}
	make_frame();
	up(&p[0], 0, base | 1ull << F_CSUM | 1ull << F_HOST_TSO4);
	up(&p[1], 1, base | 1ull << F_GUEST_CSUM | 1ull << F_GUEST_TSO4);
	up(&p[2], 2, base);
	up(&p[3], 3, base | 1ull << F_CSUM); /* a sender without HOST_TSO4 */
	for (unsigned k = 0; k <= NPORTS; k++)
		vu_read_all(&p[k].vu);
	wait_links(p);
	send_tso(&p[0]);
	check_whole(&p[1]);
	check_segments(&p[2]);
	check_segments(&p[3]);	/* flooded there too */
	send_tso(&p[3]);
	if (recv_frame(&p[1], got, sizeof(got), &h, 300) >= 0 ||
	    recv_frame(&p[2], got, sizeof(got), &h, 100) >= 0 ||
	    recv_frame(&p[0], got, sizeof(got), &h, 100) >= 0)
		fail("a TSO frame from a sender without HOST_TSO4 was delivered");
	printf("conformance-offload: a TSO frame from a port without HOST_TSO4 reached nobody\n");
	kill(daemon_pid, SIGTERM);
	waitpid(daemon_pid, NULL, 0);
	cleanup();
	printf("conformance-offload: PASS\n");
	return 0;
}
