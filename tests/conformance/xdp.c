/* SPDX-License-Identifier: MIT */
/*
 * conformance-xdp: a front-end written from the specifications alone (this directory's
 * vhost-user and ring code, plain libc, no uvhost code) on `uvhost-net --mode xdp --iface A
 * --queues 2`, where A is one end of a veth pair this test makes (two queues each end,
 * IPv6 off so the kernel sends nothing of its own). The other end, B, is driven through an
 * AF_PACKET socket:
 *   - guest → wire: 64 frames of 60..1514 bytes, alternating between the two TX rings,
 *     must each reach B once, byte for byte;
 *   - wire → guest: 64 UDP/IPv4 frames of 60..1514 bytes sent on B, one flow each (the
 *     kernel spreads flows over A's two queues), must each reach one of the guest's two
 *     RX rings once, byte for byte; both queue pairs must have carried some.
 * Around it, the bad cases (each a front-end session of its own):
 *   - starved: a guest with no RX buffers while 6,000 frames arrive (more than the
 *     socket's ring holds): they wait in the socket, the kernel drops the rest, and once
 *     the guest posts buffers it gets the ones that waited; the next session (the exchange
 *     above) must find every UMEM frame back;
 *   - a frame bigger than the guest's buffers (no MRG_RXBUF, 1 KiB buffers): dropped,
 *     and the small frame after it arrives;
 *   - link down: the guest's frames are consumed (its TX ring never stalls) and dropped;
 *     link up again: they reach the wire again;
 *   - the interface deleted under the daemon: frames consumed, the daemon lives on,
 *     and exits 0 on SIGTERM (under ASan: no leak, no error).
 * The daemon's exit status is checked, and that its XDP program is gone after it.
 * Needs root (veth, XDP): exits 77 (skip) without it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conform.h"

#define NFRAMES 64
#define RX_NUM 256
#define RX_BUF 2048
#define TX_NUM 64
#define TX_BUF 2048
#define ETHERTYPE_TEST 0x88b5 /* local experimental */

static pid_t daemon_pid = -1;
static char dir[64], sock_path[96], ifa[16], ifb[16];
static const char *prog = "conformance-xdp";

static void cleanup(void)
{
	char cmd[64];

	if (ifa[0]) {
		snprintf(cmd, sizeof(cmd), "ip link del %s 2>/dev/null", ifa);
		if (system(cmd)) {
			/* gone already */
		}
	}
	if (dir[0]) {
		unlink(sock_path);
		rmdir(dir);
	}
}

/* SIGTERM the daemon; its exit status (0 unless it failed or a sanitizer spoke). */
static int stop_daemon(void)
{
	int st = 0;

	if (daemon_pid > 0) {
		kill(daemon_pid, SIGTERM);
		waitpid(daemon_pid, &st, 0);
		daemon_pid = -1;
	}
	return st;
}

noreturn void fail(const char *fmt, ...)
{
	va_list ap;

	printf("%s: FAIL: ", prog);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	stop_daemon();	/* its counters (drops by reason) say what happened */
	cleanup();
	exit(1);
}

noreturn void busy_retry(void)
{
	fail("the back-end closed the connection");
}

uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void sh(const char *fmt, ...)
{
	char cmd[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (system(cmd))
		fail("'%s' failed", cmd);
}

struct guest {
	struct gmem mem;
	struct vu vu;
	struct vq q[4]; /* RX0 TX0 RX1 TX1 */
	uint64_t rng;
	uint32_t rx_buf;
	bool mrg;
};

static void rx_post(struct guest *g, unsigned r)
{
	for (int id; (id = vq_next_id(&g->q[r], 1)) >= 0;) {
		uint64_t gpa;

		memset(vq_slot(&g->q[r], (uint16_t)id, &gpa), 0xa5, g->rx_buf);
		vq_add(&g->q[r], &(struct seg){gpa, g->rx_buf}, 1, true, false, id);
	}
	vq_publish(&g->q[r]);
	vq_notify(&g->q[r], true);
}

/* A session: features, memory, four rings; RX buffers of @rx_buf bytes posted if @post. */
static void guest_up(struct guest *g, bool packed, bool event_idx, bool mrg, uint32_t rx_buf,
		     bool post)
{
	uint64_t features = 1ull << F_VERSION_1 | 1ull << F_NET_MQ, offered;

	if (packed)
		features |= 1ull << F_RING_PACKED;
	if (event_idx)
		features |= 1ull << F_EVENT_IDX;
	if (mrg)
		features |= 1ull << F_MRG_RXBUF;
	memset(g, 0, sizeof(*g));
	g->rx_buf = rx_buf;
	g->mrg = mrg;
	g->rng = 0x5eedULL;
	gmem_init(&g->mem, &g->rng, 1, 32u << 20);
	for (unsigned r = 0; r < 4; r++) {
		bool rx = !(r & 1);

		vq_init(&g->q[r], &g->mem, &g->rng, r, rx ? RX_NUM : TX_NUM, packed, event_idx,
			rx ? rx_buf : TX_BUF);
	}
	vu_connect(&g->vu, sock_path);
	vu_send(&g->vu, VU_GET_FEATURES, false, NULL, 0, NULL, 0, 0, &offered);
	vu_read_all(&g->vu);
	if ((offered & features) != features)
		fail("offered %#llx, lacks %#llx", (unsigned long long)offered,
		     (unsigned long long)(features & ~offered));
	vu_send(&g->vu, VU_SET_OWNER, false, NULL, 0, NULL, 0, 0, NULL);
	vu_send(&g->vu, VU_SET_FEATURES, false, &features, 8, NULL, 0, 0, NULL);
	{
		struct { uint32_t n, pad; uint64_t reg[4]; } mt = {
			1, 0, {g->mem.r[0].gpa, g->mem.r[0].size, (uintptr_t)g->mem.r[0].va, 0}};
		vu_send(&g->vu, VU_SET_MEM_TABLE, false, &mt, sizeof(mt), &g->mem.fd, 1, 0, NULL);
	}
	for (uint32_t r = 0; r < 4; r++) {
		struct vq *q = &g->q[r];
		struct { uint32_t index, num; } st = {r, q->num};
		struct { uint32_t index, flags; uint64_t desc, used, avail, log; } addr = {
			r, 0, q->ring_uva[0], q->ring_uva[1], q->ring_uva[2], 0};
		uint64_t idx = r;

		vu_send(&g->vu, VU_SET_VRING_NUM, false, &st, sizeof(st), NULL, 0, r, NULL);
		vu_send(&g->vu, VU_SET_VRING_ADDR, false, &addr, sizeof(addr), NULL, 0, r, NULL);
		st.num = vq_base(q); /* packed: the wrap counter in bit 15 */
		vu_send(&g->vu, VU_SET_VRING_BASE, false, &st, sizeof(st), NULL, 0, r, NULL);
		vu_send(&g->vu, VU_SET_VRING_CALL, false, &idx, 8, &q->callfd, 1, r, NULL);
		/* without PROTOCOL_FEATURES a ring runs from its kick fd on (enabled) */
		vu_send(&g->vu, VU_SET_VRING_KICK, false, &idx, 8, &q->kickfd, 1, r, NULL);
	}
	for (unsigned r = 0; post && r < 4; r += 2)
		rx_post(g, r);
	/* replies come in request order: once this one is back, the back-end has
	 * started the rings (frames that arrive before are not this session's) */
	vu_send(&g->vu, VU_GET_FEATURES, false, NULL, 0, NULL, 0, 0, &offered);
	vu_read_all(&g->vu);
}

static void guest_down(struct guest *g)
{
	vu_close(&g->vu);
	for (unsigned r = 0; r < 4; r++)
		vq_free(&g->q[r]);
	gmem_free(&g->mem);
	usleep(100000); /* the daemon stops the rings */
}

/* Frame k's size: 60 .. 1514 over the 64 frames. */
static unsigned frame_len(unsigned k)
{
	return 60 + k * (1514 - 60) / (NFRAMES - 1);
}

static void mac_of(const char *ifname, uint8_t mac[6])
{
	char path[96];
	unsigned m[6];
	FILE *f;

	snprintf(path, sizeof(path), "/sys/class/net/%s/address", ifname);
	f = fopen(path, "r");
	if (!f || fscanf(f, "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) != 6)
		fail("cannot read %s", path);
	fclose(f);
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)m[i];
}

/* Guest → wire frame k: to B's MAC, the test ethertype, k and a pattern. */
static void make_out(uint8_t *f, unsigned k, const uint8_t dst[6])
{
	static const uint8_t src[6] = {0x02, 0x75, 0x76, 0x68, 0x00, 0x01};
	unsigned len = frame_len(k);

	memcpy(f, dst, 6);
	memcpy(f + 6, src, 6);
	f[12] = ETHERTYPE_TEST >> 8;
	f[13] = ETHERTYPE_TEST & 0xff;
	f[14] = (uint8_t)k;
	for (unsigned i = 15; i < len; i++)
		f[i] = (uint8_t)(i * 7 + k * 13);
}

/* Wire → guest frame k: UDP/IPv4 broadcast, source port 1000 + k (one flow each). */
static void make_in(uint8_t *f, unsigned k, const uint8_t src[6])
{
	unsigned len = frame_len(k), ip_len = len - 14;
	uint32_t sum = 0;

	memset(f, 0xff, 6);
	memcpy(f + 6, src, 6);
	f[12] = 0x08;
	f[13] = 0x00;
	memset(f + 14, 0, 20);
	f[14] = 0x45;
	f[16] = (uint8_t)(ip_len >> 8);
	f[17] = (uint8_t)ip_len;
	f[22] = 64;
	f[23] = 17;
	memcpy(f + 26, (uint8_t[4]){10, 99, 0, 2}, 4);
	memcpy(f + 30, (uint8_t[4]){10, 99, 0, (uint8_t)(3 + k)}, 4);
	for (int i = 14; i < 34; i += 2)
		sum += (uint32_t)f[i] << 8 | f[i + 1];
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	f[24] = (uint8_t)(~sum >> 8);
	f[25] = (uint8_t)~sum;
	f[34] = (uint8_t)((1000 + k) >> 8);
	f[35] = (uint8_t)(1000 + k);
	f[36] = 0x1f;
	f[37] = 0x90;
	f[38] = (uint8_t)((ip_len - 20) >> 8);
	f[39] = (uint8_t)(ip_len - 20);
	f[40] = f[41] = 0; /* no UDP checksum: allowed over IPv4 */
	f[42] = (uint8_t)k;
	for (unsigned i = 43; i < len; i++)
		f[i] = (uint8_t)(i * 11 + k * 5);
}

static void guest_send(struct guest *g, unsigned k, const uint8_t *frame)
{
	struct vq *q = &g->q[1 + 2 * (k & 1)];
	uint16_t id16;
	uint32_t len;
	int32_t tag;
	uint64_t gpa, end = now_ns() + 2000000000ull;
	uint8_t *b;
	int id;

	while ((id = vq_next_id(q, 1)) < 0) {
		while (vq_get(q, &id16, &len, &tag))
			;
		if (now_ns() > end)
			fail("TX ring %u: no buffer came back within 2 s", q->index);
		usleep(100);
	}
	b = vq_slot(q, (uint16_t)id, &gpa);
	memset(b, 0, NET_HDR_LEN);
	memcpy(b + NET_HDR_LEN, frame, frame_len(k));
	vq_add(q, &(struct seg){gpa, NET_HDR_LEN + frame_len(k)}, 1, false, false, id);
	vq_publish(q);
	vq_notify(q, false);
}

/* A frame from RX ring @r (buffers merged by num_buffers): its length, -1 if none. */
static int guest_recv(struct guest *g, unsigned r, uint8_t *out, size_t cap)
{
	struct vq *q = &g->q[r];
	struct virtio_net_hdr_mrg_rxbuf h;
	uint16_t id;
	uint32_t len, total;
	int32_t tag;
	uint64_t end;

	if (!vq_get(q, &id, &len, &tag))
		return -1;
	if (len == 0 && !g->mrg) {
		/* a frame too big for the buffer: the device may give the buffer back
		 * empty (uvhost does; vhost-net keeps it): nothing was received */
		rx_post(g, r);
		return -1;
	}
	if (len < NET_HDR_LEN || len > g->rx_buf)
		fail("RX ring %u: used len %u", r, len);
	memcpy(&h, vq_slot(q, id, NULL), NET_HDR_LEN);
	if (h.hdr.flags || h.hdr.gso_type)
		fail("RX ring %u: header flags %#x gso %#x for a frame from the wire", r,
		     h.hdr.flags, h.hdr.gso_type);
	total = len - NET_HDR_LEN;
	memcpy(out, vq_slot(q, id, NULL) + NET_HDR_LEN, total);
	end = now_ns() + 1000000000ull;
	if (!g->mrg)
		h.num_buffers = 1; /* not the device's to set without MRG_RXBUF */
	for (unsigned i = 1; i < h.num_buffers; i++) {
		while (!vq_get(q, &id, &len, &tag))
			if (now_ns() > end)
				fail("RX ring %u: num_buffers %u, %u came", r, h.num_buffers, i);
		if (total + len > cap)
			fail("RX ring %u: frame over %zu bytes", r, cap);
		memcpy(out + total, vq_slot(q, id, NULL), len);
		total += len;
	}
	/* the buffers go back for more */
	rx_post(g, r);
	return (int)total;
}

/* Frames of ours the guest got on either RX ring within @ms (index in @seen when given). */
static unsigned guest_drain(struct guest *g, int ms, uint8_t *buf, size_t cap)
{
	uint64_t end = now_ns() + (uint64_t)ms * 1000000u;
	unsigned n = 0;

	while (now_ns() < end) {
		bool any = false;

		for (unsigned r = 0; r < 4; r += 2)
			if (guest_recv(g, r, buf, cap) >= 0) {
				any = true;
				n++;
			}
		if (!any)
			usleep(200);
	}
	return n;
}

/* Frames of the test ethertype B received within @ms. */
static unsigned wire_count(int ps, int ms, uint8_t *buf, size_t cap)
{
	uint64_t end = now_ns() + (uint64_t)ms * 1000000u;
	unsigned n = 0;

	while (now_ns() < end) {
		struct pollfd p = {ps, POLLIN, 0};
		ssize_t got;

		if (poll(&p, 1, 20) <= 0)
			continue;
		got = recv(ps, buf, cap, MSG_DONTWAIT);
		if (got >= 14 && buf[12] == (ETHERTYPE_TEST >> 8) && buf[13] == (ETHERTYPE_TEST & 0xff))
			n++;
	}
	return n;
}

static void wire_send(int ps, const uint8_t *f, unsigned len)
{
	if (send(ps, f, len, 0) != (ssize_t)len)
		fail("send on %s: %m", ifb);
}

static void start_daemon(const char *daemon, const char *engine_mode)
{
	daemon_pid = fork();
	if (daemon_pid == 0) {
		execl(daemon, daemon, "--mode", "xdp", "--iface", ifa, "--queues", "2",
		      "--engine-mode", engine_mode, "--socket-path", sock_path, (char *)NULL);
		_exit(127);
	}
}

int main(int argc, char **argv)
{
	const char *daemon = NULL, *engine_mode = "event";
	bool packed = false;
	static struct guest g;
	static uint8_t buf[4096], want[4096];
	uint8_t mac_a[6], mac_b[6];
	bool seen[NFRAMES] = {false};
	unsigned got = 0, per_ring[2] = {0, 0}, n;
	struct sockaddr_ll ll = {.sll_family = AF_PACKET};
	uint64_t end;
	int ps, i, st;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--daemon") && i + 1 < argc)
			daemon = argv[++i];
		else if (!strcmp(argv[i], "--engine-mode") && i + 1 < argc)
			engine_mode = argv[++i];
		else if (!strcmp(argv[i], "--packed"))
			packed = true;
		else
			fail("usage: %s --daemon PATH [--engine-mode M] [--packed]", prog);
	}
	if (!daemon)
		fail("usage: %s --daemon PATH [--engine-mode M] [--packed]", prog);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (geteuid() != 0) {
		printf("%s: SKIP: needs root (veth, XDP)\n", prog);
		return 77;
	}
	snprintf(ifa, sizeof(ifa), "uvxa%u", (unsigned)getpid() % 100000);
	snprintf(ifb, sizeof(ifb), "uvxb%u", (unsigned)getpid() % 100000);
	if (system("ip link help >/dev/null 2>&1") == 32512)
		fail("no ip(8) (iproute2)");
	sh("ip link add %s numtxqueues 2 numrxqueues 2 type veth peer name %s "
	   "numtxqueues 2 numrxqueues 2", ifa, ifb);
	for (int k = 0; k < 2; k++) {
		const char *nm = k ? ifb : ifa;

		sh("sysctl -qw net.ipv6.conf.%s.disable_ipv6=1", nm);
		sh("ip link set %s up", nm);
	}
	mac_of(ifa, mac_a);
	mac_of(ifb, mac_b);
	snprintf(dir, sizeof(dir), "/tmp/uvh-xdp.XXXXXX");
	if (!mkdtemp(dir))
		fail("mkdtemp: %m");
	snprintf(sock_path, sizeof(sock_path), "%s/s", dir);
	start_daemon(daemon, engine_mode);
	ps = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
	if (ps < 0)
		fail("AF_PACKET socket: %m");
	ll.sll_protocol = htons(ETH_P_ALL);
	ll.sll_ifindex = (int)if_nametoindex(ifb);
	if (bind(ps, (struct sockaddr *)&ll, sizeof(ll)))
		fail("bind to %s: %m", ifb);

	/* starved: no RX buffers while more frames arrive than the socket holds */
	guest_up(&g, packed, true, true, RX_BUF, false);
	for (unsigned k = 0; k < 6000; k++) {
		make_in(want, k % NFRAMES, mac_b);
		wire_send(ps, want, 60);
	}
	usleep(300000);
	rx_post(&g, 0);
	rx_post(&g, 2);
	n = guest_drain(&g, 500, buf, sizeof(buf));
	/* each queue's socket holds 2 x 2,048 (its RX ring and fill ring): no more */
	if (!n || n > 2 * 2 * 2048)
		fail("starved: %u of the 6000 frames reached the guest", n);
	printf("%s: starved guest: %u of 6000 frames waited in the socket for its buffers "
	       "(the kernel dropped the rest)\n", prog, n);
	guest_down(&g);

	/* the exchange: a new session, every UMEM frame must be back */
	guest_up(&g, packed, true, true, RX_BUF, true);
	for (unsigned k = 0; k < NFRAMES; k++) {
		make_out(want, k, mac_b);
		guest_send(&g, k, want);
	}
	end = now_ns() + 5000000000ull;
	while (got < NFRAMES && now_ns() < end) {
		struct pollfd p = {ps, POLLIN, 0};
		ssize_t len;
		unsigned k;

		if (poll(&p, 1, 100) <= 0)
			continue;
		len = recv(ps, buf, sizeof(buf), 0);
		if (len < 15 || buf[12] != (ETHERTYPE_TEST >> 8) || buf[13] != (ETHERTYPE_TEST & 0xff))
			continue; /* not ours */
		k = buf[14];
		if (k >= NFRAMES)
			fail("wire: frame with index %u", k);
		if (seen[k])
			fail("wire: frame %u came twice", k);
		make_out(want, k, mac_b);
		if ((size_t)len != frame_len(k) || memcmp(buf, want, frame_len(k)))
			fail("wire: frame %u differs (%zd bytes, sent %u)", k, len, frame_len(k));
		seen[k] = true;
		got++;
	}
	if (got < NFRAMES)
		fail("wire: %u of %u frames from the guest arrived", got, NFRAMES);
	printf("%s: guest -> wire: %u frames of 60..1514 bytes over 2 TX rings, byte for byte\n",
	       prog, got);

	memset(seen, 0, sizeof(seen));
	got = 0;
	for (unsigned k = 0; k < NFRAMES; k++) {
		make_in(want, k, mac_b);
		wire_send(ps, want, frame_len(k));
	}
	end = now_ns() + 5000000000ull;
	while (got < NFRAMES && now_ns() < end) {
		bool any = false;

		for (unsigned r = 0; r < 2; r++) {
			int len = guest_recv(&g, 2 * r, buf, sizeof(buf));
			unsigned k;

			if (len < 0)
				continue;
			any = true;
			if (len < 43 || buf[12] != 0x08 || buf[13] != 0x00 || buf[23] != 17)
				continue; /* not ours (the kernel's own) */
			k = buf[42];
			if (k >= NFRAMES)
				fail("guest: frame with index %u", k);
			if (seen[k])
				fail("guest: frame %u came twice", k);
			make_in(want, k, mac_b);
			if ((unsigned)len != frame_len(k) || memcmp(buf, want, frame_len(k)))
				fail("guest: frame %u differs (%d bytes, sent %u)", k, len,
				     frame_len(k));
			seen[k] = true;
			per_ring[r]++;
			got++;
		}
		if (!any)
			usleep(200);
	}
	if (got < NFRAMES)
		fail("guest: %u of %u frames from the wire arrived", got, NFRAMES);
	if (!per_ring[0] || !per_ring[1])
		fail("guest: the frames all came on one queue pair (%u / %u)", per_ring[0],
		     per_ring[1]);
	printf("%s: wire -> guest: %u frames of 60..1514 bytes, %u on pair 0 and %u on pair 1, "
	       "byte for byte\n", prog, got, per_ring[0], per_ring[1]);

	/* link down: consumed and dropped, never stalled; up: through again */
	sh("ip link set %s down", ifa);
	for (unsigned k = 0; k < 3 * TX_NUM; k++) {
		make_out(want, k % NFRAMES, mac_b);
		guest_send(&g, k % NFRAMES, want); /* fails if the TX ring stalls */
	}
	sh("ip link set %s up", ifa);
	usleep(300000);
	wire_count(ps, 100, buf, sizeof(buf)); /* whatever was queued */
	for (unsigned k = 0; k < 16; k++) {
		make_out(want, 2 * k, mac_b);
		guest_send(&g, 2 * k, want); /* pair 0 */
	}
	n = wire_count(ps, 1500, buf, sizeof(buf));
	if (n < 16)
		fail("link up again: %u of 16 frames reached the wire", n);
	printf("%s: link down: %u frames consumed, none stalled; up again: 16 of 16 on the "
	       "wire\n", prog, 3 * TX_NUM);
	guest_down(&g);

	/* a frame bigger than the guest's buffers, then a small one */
	guest_up(&g, packed, true, false, 1024, true);
	make_in(want, 63, mac_b); /* 1514 bytes */
	wire_send(ps, want, frame_len(63));
	make_in(want, 5, mac_b);
	wire_send(ps, want, frame_len(5));
	end = now_ns() + 2000000000ull;
	for (got = 0; !got && now_ns() < end;) {
		for (unsigned r = 0; r < 4; r += 2) {
			int len = guest_recv(&g, r, buf, sizeof(buf));

			if (len < 0 || len < 43 || buf[23] != 17)
				continue;
			if (buf[42] != 5 || (unsigned)len != frame_len(5) ||
			    memcmp(buf, want, frame_len(5)))
				fail("small buffers: got frame %u (%d bytes): only frame 5 fits",
				     buf[42], len);
			got = 1;
		}
		usleep(200);
	}
	if (!got)
		fail("small buffers: the frame that fits did not arrive after the one that did not");
	printf("%s: a 1514-byte frame for 1 KiB buffers dropped, the next one delivered\n", prog);

	/* the interface goes away under the daemon */
	sh("ip link del %s", ifa);
	for (unsigned k = 0; k < 2 * TX_NUM; k++) {
		make_out(want, k % NFRAMES, mac_b);
		guest_send(&g, k % NFRAMES, want);
	}
	if (waitpid(daemon_pid, &st, WNOHANG) != 0)
		fail("the daemon died when its interface was deleted");
	printf("%s: interface deleted: %u frames consumed, the daemon lives on\n", prog,
	       2 * TX_NUM);
	guest_down(&g);
	close(ps);
	st = stop_daemon();
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		fail("the daemon's exit status is %#x", st);
	cleanup();
	printf("%s: PASS (%s ring, %s mode)\n", prog, packed ? "packed" : "split", engine_mode);
	return 0;
}
