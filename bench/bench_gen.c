/* SPDX-License-Identifier: MIT */
/*
 * uvhost-bench's traffic generator (see bench_gen.h).
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "util.h"
#include "bench_gen.h"
#include "frontend.h"
#include "message.h"
#include "net.h"

#define BG_BURST	32u
#define BG_GPA_BASE	0x40000000ull	/* not 0: a gpa/uva mix-up shows */
#define BG_PAGE		4096u
#define BG_ETHERTYPE	0x88b5		/* IEEE local experimental */
#define BG_SEQ_OFF	14u		/* frame offset of the sequence number */
#define BG_SEQ_AT	(UVH_NET_HDR_LEN + BG_SEQ_OFF)	/* ... in the buffer */
#define BG_TS_AT	(BG_SEQ_AT + 8)	/* LOOP: the send time (ns) after it */
#define BG_POISON	0xa5		/* RX buffers before the device writes them */

const char *bg_dir_name(enum bg_dir dir)
{
	static const char *const names[BG_NDIRS] = { "tx", "rx", "loop" };

	return (unsigned int)dir < BG_NDIRS ? names[dir] : "?";
}

/* Histogram bucket of @ns: exact below 16, then 16 per power of two. */
static inline unsigned int rtt_bucket(uint64_t ns)
{
	unsigned int e, b;

	if (ns < 16)
		return (unsigned int)ns;
	e = 63u - (unsigned int)__builtin_clzll(ns);
	b = (e - 3u) * 16u + (unsigned int)((ns >> (e - 4u)) & 15u);
	return b < BG_RTT_BUCKETS ? b : BG_RTT_BUCKETS - 1;
}

/* The middle of bucket @b, in ns. */
static double rtt_value(unsigned int b)
{
	unsigned int e, m;

	if (b < 16)
		return b;
	e = b / 16u + 3u;
	m = b % 16u;
	return ((double)(16u + m) + 0.5) * (double)(1ull << (e - 4u));
}

void bg_rtt_snapshot(struct bg *g, uint32_t h[BG_RTT_BUCKETS])
{
	for (unsigned int i = 0; i < BG_RTT_BUCKETS; i++)
		h[i] = atomic_load_explicit(&g->rtt[i], memory_order_relaxed);
}

double bg_rtt_percentile(const uint32_t h[BG_RTT_BUCKETS], double q)
{
	uint64_t total = 0, seen = 0, want;

	for (unsigned int i = 0; i < BG_RTT_BUCKETS; i++)
		total += h[i];
	if (!total)
		return -1;
	want = (uint64_t)(q * (double)total);
	if (want >= total)
		want = total - 1;
	for (unsigned int i = 0; i < BG_RTT_BUCKETS; i++) {
		seen += h[i];
		if (seen > want)
			return rtt_value(i) / 1e3;
	}
	return -1;
}

static size_t page_up(size_t n)
{
	return (n + BG_PAGE - 1) & ~(size_t)(BG_PAGE - 1);
}

/* The first bytes of every frame: virtio-net header, then Ethernet. */
static const uint8_t frame_head[UVH_NET_HDR_LEN + 14] = {
	[UVH_NET_HDR_LEN + 0] = 0x02, [UVH_NET_HDR_LEN + 5] = 0x02,	/* dst */
	[UVH_NET_HDR_LEN + 6] = 0x02, [UVH_NET_HDR_LEN + 11] = 0x01,	/* src */
	[UVH_NET_HDR_LEN + 12] = BG_ETHERTYPE >> 8,
	[UVH_NET_HDR_LEN + 13] = BG_ETHERTYPE & 0xff,
};

static inline uint8_t *buf_ptr(const struct bg *g, const struct bg_ring *r, unsigned int idx)
{
	return r->bufs + (size_t)idx * g->stride;
}

static inline uint64_t buf_gpa(const struct bg *g, const struct bg_ring *r, unsigned int idx)
{
	return r->bufs_gpa + (uint64_t)idx * g->stride;
}

/* ---- set-up -------------------------------------------------------------------- */

#define BG_CHECK(call, what)							\
	do {									\
		int r_ = (call);						\
		if (r_ < 0) {							\
			fprintf(stderr, "uvhost-bench: %s: %s\n", what,		\
				strerror(-r_));					\
			return r_;						\
		}								\
	} while (0)

static uint16_t csum16(const uint8_t *p, size_t n, uint32_t s)
{
	for (size_t i = 0; i < n; i++)
		s += (i & 1) ? p[i] : (uint32_t)p[i] << 8;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)s;
}

/*
 * TCP stream: the headers every TX buffer starts with (the sequence number
 * is set per frame). A TSO frame carries a GSO header and the partial
 * checksum a driver leaves (the pseudo-header's sum); a plain one a TCP
 * checksum nobody checks (a guest's stack would compute it: its cost, not
 * the device's).
 */
static void tcp_template(struct bg *g)
{
	uint8_t *h = g->tcp_head, *eth = h + UVH_NET_HDR_LEN, *ip = eth + 14, *tcp = ip + 20;
	uint32_t l3len = g->o.frame - 14;
	uint16_t v;

	memset(h, 0, sizeof(g->tcp_head));
	if (g->o.tso) {
		struct uvh_virtio_net_hdr vh = {
			.flags = UVH_VIRTIO_NET_HDR_F_NEEDS_CSUM,
			.gso_type = UVH_VIRTIO_NET_HDR_GSO_TCPV4,
			.hdr_len = 54, .gso_size = g->o.mss, .csum_start = 34, .csum_offset = 16,
		};
		memcpy(h, &vh, UVH_NET_HDR_LEN);
	}
	/* to a MAC nobody has: the switch floods it to the other port */
	memcpy(eth, "\x02\x00\x00\x00\x00\x99\x02\x00\x00\x00\x00\x01\x08\x00", 14);
	ip[0] = 0x45;
	ip[2] = (uint8_t)(l3len >> 8);
	ip[3] = (uint8_t)l3len;
	ip[6] = 0x40;
	ip[8] = 64;
	ip[9] = 6;
	memcpy(ip + 12, "\x0a\x00\x00\x01\x0a\x00\x00\x02", 8);
	v = (uint16_t)~csum16(ip, 20, 0);
	ip[10] = (uint8_t)(v >> 8);
	ip[11] = (uint8_t)v;
	tcp[0] = 0x9c; tcp[1] = 0x40; tcp[2] = 0x14; tcp[3] = 0x51;
	tcp[12] = 0x50;
	tcp[13] = 0x18;			/* ACK PSH */
	tcp[14] = 0xff; tcp[15] = 0xff;
	v = csum16(ip + 12, 8, 6 + l3len - 20);
	tcp[16] = (uint8_t)(v >> 8);
	tcp[17] = (uint8_t)v;
	for (unsigned int b = 0; b < g->o.qsize; b++)
		memcpy(buf_ptr(g, &g->ring[1], b), h, sizeof(g->tcp_head));
}

static int make_memory(struct bg *g)
{
	size_t area = page_up(uvh_vq_driver_area_bytes(g->o.qsize, g->o.packed));
	size_t bufs = page_up((size_t)g->o.qsize * g->stride);
	uint64_t off = 0;

	g->mem_len = 2 * (area + bufs);
	g->memfd = memfd_create("uvhost-bench-guest", MFD_CLOEXEC);
	if (g->memfd < 0)
		return -errno;
	if (ftruncate(g->memfd, (off_t)g->mem_len) < 0)
		return -errno;
	g->mem = mmap(NULL, g->mem_len, PROT_READ | PROT_WRITE, MAP_SHARED, g->memfd, 0);
	if (g->mem == MAP_FAILED) {
		g->mem = NULL;
		return -errno;
	}
	/* fault our view in now, not in the measured window */
	memset(g->mem, 0, g->mem_len);
	for (unsigned int i = 0; i < 2; i++) {
		struct bg_ring *r = &g->ring[i];
		int ret;

		ret = uvh_vq_driver_init(&r->drv, g->o.qsize, g->o.packed, g->o.event_idx,
					 g->mem + off, BG_GPA_BASE + off);
		if (ret)
			return ret;
		off += area;
		r->bufs = g->mem + off;
		r->bufs_gpa = BG_GPA_BASE + off;
		off += bufs;
		r->free = calloc(g->o.qsize, sizeof(*r->free));
		if (!r->free)
			return -ENOMEM;
		/* lowest index on top: the first bursts walk memory forwards */
		for (unsigned int b = 0; b < g->o.qsize; b++)
			r->free[b] = (uint16_t)(g->o.qsize - 1 - b);
		r->nfree = g->o.qsize;
		for (unsigned int b = 0; b < g->o.qsize; b++) {
			uint8_t *p = buf_ptr(g, r, b);

			memcpy(p, frame_head, sizeof(frame_head));
			for (uint32_t k = sizeof(frame_head) + 8; k < UVH_NET_HDR_LEN + g->o.frame; k++)
				p[k] = (uint8_t)k;
		}
		/* we poll: no interrupts, ever */
		uvh_vq_driver_enable_cb(&r->drv, false);
	}
	if (g->o.mss)
		tcp_template(g);
	/* LOOP: a frame as it must come back: what TX buffers hold, behind
	 * the header a device writes (no offload, one buffer: num_buffers 1) */
	g->expect = malloc(UVH_NET_HDR_LEN + g->o.frame);
	if (!g->expect)
		return -ENOMEM;
	memcpy(g->expect, g->ring[1].bufs, UVH_NET_HDR_LEN + g->o.frame);
	memset(g->expect, 0, UVH_NET_HDR_LEN);
	g->expect[10] = 1;
	return 0;
}

static int setup_ring(struct bg *g, uint32_t index)
{
	struct bg_ring *r = &g->ring[index];
	struct uvh_vq_config cfg;
	struct uvh_vring_addr addr = {
		.index = index,
		.desc_user_addr = (uint64_t)(uintptr_t)r->drv.desc,
		.avail_user_addr = (uint64_t)(uintptr_t)r->drv.driver_area,
		.used_user_addr = (uint64_t)(uintptr_t)r->drv.device_area,
	};
	uint32_t base;

	r->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	r->call_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (r->kick_fd < 0 || r->call_fd < 0)
		return -errno;
	uvh_vq_driver_config(&r->drv, &cfg);
	/* split: next avail; packed: next avail with the wrap counter in bit 15 */
	base = cfg.next_avail;
	if (g->o.packed && cfg.avail_wrap)
		base |= 0x8000u;
	/* QEMU's order: call first, kick last (the kick starts the ring) */
	BG_CHECK(uvh_frontend_set_vring_call(g->fe, index, r->call_fd), "SET_VRING_CALL");
	BG_CHECK(uvh_frontend_set_vring_num(g->fe, index, g->o.qsize), "SET_VRING_NUM");
	BG_CHECK(uvh_frontend_set_vring_base(g->fe, index, base), "SET_VRING_BASE");
	BG_CHECK(uvh_frontend_set_vring_addr(g->fe, &addr), "SET_VRING_ADDR");
	BG_CHECK(uvh_frontend_set_vring_kick(g->fe, index, r->kick_fd), "SET_VRING_KICK");
	return 0;
}

int bg_open(struct bg *g, const struct bg_opts *o)
{
	struct uvh_connect_opts co = { .timeout_ms = o->connect_timeout_ms };
	uint64_t want, feat, pf;
	struct uvh_mem_region reg;
	int ret;

	memset(g, 0, sizeof(*g));
	g->o = *o;
	g->memfd = -1;
	g->ring[0].kick_fd = g->ring[0].call_fd = -1;
	g->ring[1].kick_fd = g->ring[1].call_fd = -1;
	if (!o->qsize || o->frame < 60 || o->frame > UVH_NET_MAX_FRAME ||
	    (o->mss && (o->frame <= 54 || (!o->tso && o->frame - 54 > o->mss))) ||
	    (!o->packed && (o->qsize & (o->qsize - 1)))) {
		fprintf(stderr, "uvhost-bench: bad ring size or frame size\n");
		return -EINVAL;
	}
	g->stride = UVH_NET_HDR_LEN + o->frame <= 2048 ? 2048 :
		    (UVH_NET_HDR_LEN + o->frame + 63) & ~63u;
	ret = make_memory(g);
	if (ret) {
		fprintf(stderr, "uvhost-bench: guest memory: %s\n", strerror(-ret));
		return ret;
	}

	BG_CHECK(uvh_frontend_connect(o->socket_path, &co, &g->fe), "connect");
	uvh_frontend_set_timeout(g->fe, 10000);
	want = UVH_BIT(UVH_VIRTIO_F_VERSION_1) | UVH_BIT(UVH_F_PROTOCOL_FEATURES);
	if (o->packed)
		want |= UVH_BIT(UVH_VIRTIO_F_RING_PACKED);
	if (o->event_idx)
		want |= UVH_BIT(UVH_VIRTIO_F_RING_EVENT_IDX);
	want |= o->offloads;
	BG_CHECK(uvh_frontend_negotiate(g->fe, want, UVH_BIT(UVH_PROTOCOL_F_REPLY_ACK), &feat, &pf),
		 "negotiate");
	g->features = feat;
	if ((feat & want & ~UVH_BIT(UVH_F_PROTOCOL_FEATURES)) !=
	    (want & ~UVH_BIT(UVH_F_PROTOCOL_FEATURES))) {
		fprintf(stderr, "uvhost-bench: the back-end does not offer%s%s%s\n",
			feat & UVH_BIT(UVH_VIRTIO_F_VERSION_1) ? "" : " VERSION_1",
			o->packed && !(feat & UVH_BIT(UVH_VIRTIO_F_RING_PACKED)) ? " RING_PACKED" : "",
			o->event_idx && !(feat & UVH_BIT(UVH_VIRTIO_F_RING_EVENT_IDX)) ?
			" RING_EVENT_IDX" : "");
		return -EOPNOTSUPP;
	}
	if ((feat & o->offloads) != o->offloads) {
		fprintf(stderr, "uvhost-bench: the back-end does not offer the features %#llx\n",
			(unsigned long long)(o->offloads & ~feat));
		return -EOPNOTSUPP;
	}

	reg = (struct uvh_mem_region){
		.guest_phys_addr = BG_GPA_BASE,
		.memory_size = g->mem_len,
		.userspace_addr = (uint64_t)(uintptr_t)g->mem,
		.mmap_offset = 0,
	};
	BG_CHECK(uvh_frontend_set_mem_table(g->fe, &reg, &g->memfd, 1), "SET_MEM_TABLE");
	for (uint32_t i = 0; i < 2; i++) {
		ret = setup_ring(g, i);
		if (ret)
			return ret;
	}
	if (feat & UVH_BIT(UVH_F_PROTOCOL_FEATURES))
		for (uint32_t i = 0; i < 2; i++)
			BG_CHECK(uvh_frontend_set_vring_enable(g->fe, i, true), "SET_VRING_ENABLE");
	return 0;
}

/* ---- the generator thread ----------------------------------------------------------- */

static inline void kick(struct bg_ring *r)
{
	uint64_t one = 1;

	if (uvh_vq_driver_need_kick(&r->drv)) {
		/* a full counter (EAGAIN) still wakes the device */
		if (write(r->kick_fd, &one, sizeof(one)) == (ssize_t)sizeof(one))
			r->kicks++;
	}
}

/*
 * How many frames pacing allows now (all of @want when not paced). Paced
 * frames go in whole bursts, as a DPDK application sends them: a burst
 * leaves once the average rate has earned it.
 */
static inline unsigned int paced(const struct bg *g, uint64_t t0, uint64_t sent,
				 unsigned int want)
{
	double allowed;

	if (g->o.rate_pps <= 0 || !want)
		return want;
	allowed = (double)(uvh_now_ns() - t0) * 1e-9 * g->o.rate_pps - (double)sent;
	return allowed >= want ? want : 0;
}

/* Device TX: reclaim consumed chains, send a burst. Returns frames reclaimed. */
static unsigned int tx_step(struct bg *g, uint64_t t0, uint64_t *sent)
{
	struct bg_ring *r = &g->ring[1];
	struct uvh_vq_buf bufs[BG_BURST];
	void *tok[BG_BURST], *toks[BG_BURST];
	uint32_t lens[BG_BURST];
	unsigned int n, room, i;
	uint64_t ts = 0;

	n = uvh_vq_driver_get_used(&r->drv, tok, lens, BG_BURST);
	for (i = 0; i < n; i++)
		r->free[r->nfree++] = (uint16_t)((uintptr_t)tok[i] - 1);
	room = r->nfree < BG_BURST ? r->nfree : BG_BURST;
	if (g->o.dir == BG_LOOP) {
		/* never more frames on their way than RX buffers posted (each
		 * posted one is empty or holds one of them): the loopback port
		 * drops a frame that finds no RX buffer, as a NIC does. Posted,
		 * not the ring's size: the first burst goes before them. */
		uint64_t out = g->seq_tx - g->seq_rx, limit = g->rx_out;

		if (g->o.max_inflight && g->o.max_inflight < limit)
			limit = g->o.max_inflight;
		if (out >= limit)
			room = 0;
		else if (limit - out < room)
			room = (unsigned int)(limit - out);
	}
	if (g->rx_peer) {
		/* never more payload on its way than the receiver's posted
		 * buffers take, at one MSS each (segments) */
		uint64_t cap = g->rx_peer->rx_out * g->o.mss, out, one = g->o.frame - 54;

		out = g->payload_sent - g->rx_peer->payload_got;
		if (out + one > cap)
			room = 0;
		else if ((cap - out) / one < room)
			room = (unsigned int)((cap - out) / one);
	}
	room = paced(g, t0, *sent, room);
	if (!room)
		return n;
	if (g->o.dir == BG_LOOP)
		ts = uvh_now_ns();	/* one send time for the burst */
	for (i = 0; i < room; i++) {
		unsigned int idx = r->free[r->nfree - 1 - i];
		uint8_t *p = buf_ptr(g, r, idx);
		uint64_t seq = g->seq_tx + i;

		if (g->o.mss) {
			/* headers as a guest's stack writes them, its byte sequence */
			uint32_t tseq = (uint32_t)g->payload_sent;

			memcpy(p, g->tcp_head, sizeof(g->tcp_head));
			p[UVH_NET_HDR_LEN + 38] = (uint8_t)(tseq >> 24);
			p[UVH_NET_HDR_LEN + 39] = (uint8_t)(tseq >> 16);
			p[UVH_NET_HDR_LEN + 40] = (uint8_t)(tseq >> 8);
			p[UVH_NET_HDR_LEN + 41] = (uint8_t)tseq;
			g->payload_sent += g->o.frame - 54;
			bufs[i] = (struct uvh_vq_buf){ buf_gpa(g, r, idx),
						       UVH_NET_HDR_LEN + g->o.frame };
			toks[i] = (void *)(uintptr_t)(idx + 1);
			continue;
		}
		/* as a driver does per frame: header and Ethernet header, plus
		 * our sequence number */
		memcpy(p, frame_head, sizeof(frame_head));
		memcpy(p + BG_SEQ_AT, &seq, sizeof(seq));
		if (g->o.dir == BG_LOOP)
			memcpy(p + BG_TS_AT, &ts, sizeof(ts));
		bufs[i] = (struct uvh_vq_buf){ buf_gpa(g, r, idx), UVH_NET_HDR_LEN + g->o.frame };
		toks[i] = (void *)(uintptr_t)(idx + 1);
	}
	/* all or nothing; cannot fail with one descriptor per free buffer */
	if (uvh_vq_driver_add_burst(&r->drv, bufs, room, false, toks))
		return n;
	r->nfree -= room;
	g->seq_tx += room;
	uvh_vq_driver_publish(&r->drv);
	kick(r);
	*sent += room;
	return n;
}

/* LOOP: is this, byte for byte, a frame we sent? Counts lost and bad frames. */
static inline void loop_check(struct bg *g, const uint8_t *p, uint32_t len, uint64_t now,
			      uint64_t *lost, uint64_t *bad)
{
	const uint32_t after = BG_TS_AT + 8;	/* sequence and send time aside */
	uint64_t seq, ts;
	_Atomic uint32_t *b;

	/* the header but num_buffers, then the frame but sequence and time */
	if (len != UVH_NET_HDR_LEN + g->o.frame || memcmp(p, g->expect, 10) ||
	    memcmp(p + UVH_NET_HDR_LEN, g->expect + UVH_NET_HDR_LEN, BG_SEQ_AT - UVH_NET_HDR_LEN) ||
	    memcmp(p + after, g->expect + after, len - after)) {
		(*bad)++;
		return;
	}
	/* The spec: num_buffers 1 without MRG_RXBUF. Some back-ends leave it
	 * (DPDK 22.11's vhost, Linux's vhost-net before 6.14): counted apart,
	 * as a guest driver without MRG_RXBUF does not read it. */
	if (p[10] != 1 || p[11] != 0)
		g->nb_wrong++;
	memcpy(&seq, p + BG_SEQ_AT, sizeof(seq));
	if (seq < g->seq_rx) {		/* out of order or twice */
		(*bad)++;
		return;
	}
	*lost += seq - g->seq_rx;
	g->seq_rx = seq + 1;
	memcpy(&ts, p + BG_TS_AT, sizeof(ts));
	/* single writer: a relaxed load and store, read by snapshots */
	b = &g->rtt[rtt_bucket(now > ts ? now - ts : 0)];
	atomic_store_explicit(b, atomic_load_explicit(b, memory_order_relaxed) + 1,
			      memory_order_relaxed);
}

/* TCP stream, a filled RX buffer: the start of a frame (its headers, then
 * num_buffers - 1 more buffers) or more of one. 1 when a frame starts. */
static inline unsigned int payload_check(struct bg *g, const uint8_t *p, uint32_t len,
					 uint64_t *bad)
{
	uint16_t nb = 1;

	if (g->rx_left) {
		g->rx_left--;
		g->payload_got += len;
		return 0;
	}
	if (g->features & UVH_BIT(UVH_VIRTIO_NET_F_MRG_RXBUF))
		memcpy(&nb, p + 10, 2);
	/* headers whole, IPv4 with the sender's addresses, the total length right */
	if (len < UVH_NET_HDR_LEN + 54 || !nb || p[UVH_NET_HDR_LEN + 14] != 0x45 ||
	    memcmp(p + UVH_NET_HDR_LEN + 26, "\x0a\x00\x00\x01", 4) ||
	    (nb == 1 && (uint32_t)(p[UVH_NET_HDR_LEN + 16] << 8 | p[UVH_NET_HDR_LEN + 17]) !=
			len - UVH_NET_HDR_LEN - 14)) {
		(*bad)++;
		return 0;
	}
	g->rx_left = nb - 1u;
	g->payload_got += len - UVH_NET_HDR_LEN - 54;
	return 1;
}

/* Device RX: collect filled buffers, post free ones. Returns frames received. */
static unsigned int rx_step(struct bg *g, uint64_t t0, uint64_t *posted, uint64_t *lost,
			    uint64_t *bad)
{
	struct bg_ring *r = &g->ring[0];
	uint32_t want = UVH_NET_HDR_LEN + g->o.frame;
	struct uvh_vq_buf bufs[BG_BURST];
	void *tok[BG_BURST], *toks[BG_BURST];
	uint32_t lens[BG_BURST];
	unsigned int n, room, i;

	uint64_t now = 0;

	unsigned int frames = 0;

	n = uvh_vq_driver_get_used(&r->drv, tok, lens, BG_BURST);
	if (n && g->o.dir == BG_LOOP)
		now = uvh_now_ns();	/* one arrival time for the batch */
	if (!n && g->o.dir == BG_LOOP && g->seq_rx != g->seq_tx &&
	    g->ring[1].nfree == g->o.qsize) {
		/* Every TX chain is back and frames are missing: dropped, or
		 * still inside the back-end (DPDK's io forwarding gives the TX
		 * chain back before it puts the frame on RX). Missing for 20 ms
		 * with nothing moving: dropped. Count them, or the flow control
		 * above would wait for them forever. */
		uint64_t t = uvh_now_ns();

		if (!g->stall_since) {
			g->stall_since = t;
		} else if (t - g->stall_since > 20000000u) {
			*lost += g->seq_tx - g->seq_rx;
			g->seq_rx = g->seq_tx;
			g->stall_since = 0;
		}
	} else {
		g->stall_since = 0;
	}
	g->rx_out -= n;
	for (i = 0; i < n; i++) {
		unsigned int idx = (unsigned int)((uintptr_t)tok[i] - 1);

		if (g->o.dir == BG_LOOP)
			loop_check(g, buf_ptr(g, r, idx), lens[i], now, lost, bad);
		else if (g->o.payload_rx)
			frames += payload_check(g, buf_ptr(g, r, idx), lens[i], bad);
		else if (lens[i] != want)
			(*bad)++;
		r->free[r->nfree++] = (uint16_t)idx;
	}
	if (g->o.payload_rx)
		n = frames;
	room = r->nfree < BG_BURST ? r->nfree : BG_BURST;
	/* in RX the posted buffers are the traffic: pace them */
	if (g->o.dir == BG_RX && !g->o.payload_rx)
		room = paced(g, t0, *posted, room);
	if (!room)
		return n;
	for (i = 0; i < room; i++) {
		unsigned int idx = r->free[r->nfree - 1 - i];

		/* LOOP: whatever the device does not write cannot pass */
		if (g->o.dir == BG_LOOP)
			memset(buf_ptr(g, r, idx), BG_POISON, want);
		bufs[i] = (struct uvh_vq_buf){ buf_gpa(g, r, idx), g->stride };
		toks[i] = (void *)(uintptr_t)(idx + 1);
	}
	if (uvh_vq_driver_add_burst(&r->drv, bufs, room, true, toks))
		return n;
	r->nfree -= room;
	uvh_vq_driver_publish(&r->drv);
	kick(r);
	*posted += room;
	g->rx_out += room;
	return n;
}

static void *gen_main(void *arg)
{
	struct bg *g = arg;
	uint64_t t0, sent = 0, posted = 0, total = 0, lost = 0, bad = 0;
	enum bg_dir dir = g->o.dir;

	atomic_store(&g->tid, (int)gettid());
	if (g->o.cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(g->o.cpu, &set);
		g->thread_err = -pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}
	t0 = uvh_now_ns();
	/* the device's TX ring may sleep until its first kick (event mode):
	 * the spec asks for one kick after SET_VRING_KICK anyway */
	for (unsigned int i = 0; i < 4; i++) {
		struct bg *d = i < 2 ? g : g->rx_peer;
		uint64_t one = 1;

		if (d && write(d->ring[i & 1].kick_fd, &one, sizeof(one)) < 0)
			g->thread_err = -errno;
	}
	while (!atomic_load_explicit(&g->stop, memory_order_relaxed)) {
		unsigned int n = 0;

		if (g->rx_peer) {
			tx_step(g, t0, &sent);
			n = rx_step(g->rx_peer, t0, &posted, &lost, &bad);
			/* relaxed, as frames below */
			atomic_store_explicit(&g->payload, g->rx_peer->payload_got,
					      memory_order_relaxed);
			dir = BG_RX;	/* bad frames are counted */
		} else {
			if (dir != BG_RX)
				n = tx_step(g, t0, &sent);
			if (dir != BG_TX)
				n = rx_step(g, t0, &posted, &lost, &bad);
		}
		if (n) {
			total += n;
			/* relaxed: a progress counter read once a second */
			atomic_store_explicit(&g->frames, total, memory_order_relaxed);
			if (dir != BG_TX) {
				atomic_store_explicit(&g->lost, lost, memory_order_relaxed);
				atomic_store_explicit(&g->bad, bad, memory_order_relaxed);
			}
		}
	}
	return NULL;
}

void bg_pair(struct bg *tx, struct bg *rx)
{
	tx->rx_peer = rx;
}

int bg_start(struct bg *g)
{
	int ret;

	atomic_store(&g->stop, 0);
	ret = pthread_create(&g->thread, NULL, gen_main, g);
	if (ret)
		return -ret;
	g->running = true;
	return 0;
}

int bg_cpu_clock(struct bg *g, clockid_t *clk)
{
	if (!g->running)
		return -ESRCH;
	return -pthread_getcpuclockid(g->thread, clk);
}

void bg_stop(struct bg *g)
{
	if (!g->running)
		return;
	atomic_store_explicit(&g->stop, 1, memory_order_relaxed);
	pthread_join(g->thread, NULL);
	g->running = false;
}

void bg_close(struct bg *g)
{
	bg_stop(g);
	if (g->fe) {
		uint32_t base;

		/* stop the rings before the memory goes; a back-end that is
		 * already gone just fails these */
		for (uint32_t i = 0; i < 2; i++)
			if (g->ring[i].kick_fd >= 0)
				uvh_frontend_get_vring_base(g->fe, i, &base);
		uvh_frontend_free(g->fe);
		g->fe = NULL;
	}
	for (unsigned int i = 0; i < 2; i++) {
		struct bg_ring *r = &g->ring[i];

		if (r->drv.tokens)
			uvh_vq_driver_free(&r->drv);
		free(r->free);
		r->free = NULL;
		if (r->kick_fd >= 0)
			close(r->kick_fd);
		if (r->call_fd >= 0)
			close(r->call_fd);
		r->kick_fd = r->call_fd = -1;
	}
	free(g->expect);
	g->expect = NULL;
	if (g->mem)
		munmap(g->mem, g->mem_len);
	g->mem = NULL;
	if (g->memfd >= 0)
		close(g->memfd);
	g->memfd = -1;
}
