/* SPDX-License-Identifier: MIT */
/*
 * What the wire tests (conformance-xdp, conformance-uplink) share: a front-end session
 * written from the specifications alone (two queue pairs over this directory's vhost-user
 * and ring code), test frames, an AF_PACKET socket on the far side, the daemon's life.
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "wire.h"

pid_t daemon_pid = -1;
char dir[64], sock_path[96], ifa[16], ifb[16];

void cleanup(void)
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
int stop_daemon(void)
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

void sh(const char *fmt, ...)
{
	char cmd[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (system(cmd))
		fail("'%s' failed", cmd);
}

void rx_post(struct guest *g, unsigned r)
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
void guest_up(struct guest *g, const char *path, bool packed, bool event_idx, bool mrg,
	      uint32_t rx_buf, bool post)
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
	vu_connect(&g->vu, path);
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

void guest_down(struct guest *g)
{
	vu_close(&g->vu);
	for (unsigned r = 0; r < 4; r++)
		vq_free(&g->q[r]);
	gmem_free(&g->mem);
	usleep(100000); /* the daemon stops the rings */
}

/* Frame k's size: 60 .. 1514 over the 64 frames. */
unsigned frame_len(unsigned k)
{
	return 60 + k * (1514 - 60) / (NFRAMES - 1);
}

void mac_of(const char *ifname, uint8_t mac[6])
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

/* Guest → wire frame k: @dst, @src, the test ethertype, k and a pattern. */
void make_out(uint8_t *f, unsigned k, const uint8_t dst[6], const uint8_t src[6])
{
	make_out_len(f, frame_len(k), k, dst, src);
}

void make_out_len(uint8_t *f, unsigned len, unsigned k, const uint8_t dst[6],
		  const uint8_t src[6])
{
	memcpy(f, dst, 6);
	memcpy(f + 6, src, 6);
	f[12] = ETHERTYPE_TEST >> 8;
	f[13] = ETHERTYPE_TEST & 0xff;
	f[14] = (uint8_t)k;
	for (unsigned i = 15; i < len; i++)
		f[i] = (uint8_t)(i * 7 + k * 13);
}

/* Wire → guest frame k: UDP/IPv4 to @dst (NULL: broadcast), source port 1000 + k (one
 * flow each). */
void make_in(uint8_t *f, unsigned k, const uint8_t dst[6], const uint8_t src[6])
{
	unsigned len = frame_len(k), ip_len = len - 14;
	uint32_t sum = 0;

	if (dst)
		memcpy(f, dst, 6);
	else
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

void guest_send_len(struct guest *g, unsigned pair, const uint8_t *frame, unsigned len)
{
	struct vq *q = &g->q[1 + 2 * (pair & 1)];
	uint16_t id16;
	uint32_t used;
	int32_t tag;
	uint64_t gpa, end = now_ns() + 2000000000ull;
	uint8_t *b;
	int id;

	if (NET_HDR_LEN + len > TX_BUF)
		fail("a %u-byte frame does not fit a TX buffer", len);
	while ((id = vq_next_id(q, 1)) < 0) {
		while (vq_get(q, &id16, &used, &tag))
			;
		if (now_ns() > end)
			fail("TX ring %u: no buffer came back within 2 s", q->index);
		usleep(100);
	}
	b = vq_slot(q, (uint16_t)id, &gpa);
	memset(b, 0, NET_HDR_LEN);
	memcpy(b + NET_HDR_LEN, frame, len);
	vq_add(q, &(struct seg){gpa, NET_HDR_LEN + len}, 1, false, false, id);
	vq_publish(q);
	vq_notify(q, false);
}

void guest_send(struct guest *g, unsigned k, const uint8_t *frame)
{
	guest_send_len(g, k & 1, frame, frame_len(k));
}

/* A frame from RX ring @r (buffers merged by num_buffers): its length, -1 if none. */
int guest_recv(struct guest *g, unsigned r, uint8_t *out, size_t cap)
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
unsigned guest_drain(struct guest *g, int ms, uint8_t *buf, size_t cap)
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
unsigned wire_count(int ps, int ms, uint8_t *buf, size_t cap)
{
	uint64_t end = now_ns() + (uint64_t)ms * 1000000u;
	unsigned n = 0;

	for (uint64_t t = now_ns(); t < end; t = now_ns())
		if (wire_recv(ps, buf, cap, (int)((end - t) / 1000000u) + 1) >= 0)
			n++;
	return n;
}

void wire_expect(int ps, unsigned n, void (*make)(uint8_t *f, unsigned k), const char *what)
{
	static uint8_t buf[10000], want[10000];
	unsigned char seen[256] = {0};
	uint64_t end = now_ns() + 5000000000ull;
	unsigned got = 0;

	while (got < n && now_ns() < end) {
		int len = wire_recv(ps, buf, sizeof(buf), 100);
		unsigned k;

		if (len < 0)
			continue;
		k = buf[14];
		if (k >= n || seen[k]++)
			fail("%s: frame %u unknown or twice", what, k);
		make(want, k);
		if ((unsigned)len != frame_len(k) || memcmp(buf, want, frame_len(k)))
			fail("%s: frame %u differs (%d bytes, sent %u)", what, k, len, frame_len(k));
		got++;
	}
	if (got < n)
		fail("%s: %u of %u frames arrived", what, got, n);
}

int wire_recv(int ps, uint8_t *buf, size_t cap, int ms)
{
	uint64_t end = now_ns() + (uint64_t)ms * 1000000u;

	while (now_ns() < end) {
		struct pollfd p = {ps, POLLIN, 0};
		ssize_t len;

		if (poll(&p, 1, 20) <= 0)
			continue;
		len = recv(ps, buf, cap, MSG_DONTWAIT);
		if (len >= 15 && buf[12] == (ETHERTYPE_TEST >> 8) && buf[13] == (ETHERTYPE_TEST & 0xff))
			return (int)len;
	}
	return -1;
}

void wire_send(int ps, const uint8_t *f, unsigned len)
{
	if (send(ps, f, len, 0) != (ssize_t)len)
		fail("send on %s: %m", ifb);
}

void start_daemon(char *const argv[])
{
	daemon_pid = fork();
	if (daemon_pid == 0) {
		execv(argv[0], argv);
		_exit(127);
	}
}

/* An AF_PACKET socket on @ifname that sees every frame. */
int packet_socket(const char *ifname)
{
	struct sockaddr_ll ll = {.sll_family = AF_PACKET};
	int ps = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));

	if (ps < 0)
		fail("AF_PACKET socket: %m");
	ll.sll_protocol = htons(ETH_P_ALL);
	ll.sll_ifindex = (int)if_nametoindex(ifname);
	if (!ll.sll_ifindex || bind(ps, (struct sockaddr *)&ll, sizeof(ll)))
		fail("bind to %s: %m", ifname);
	return ps;
}
