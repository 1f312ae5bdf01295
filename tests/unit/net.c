/* SPDX-License-Identifier: MIT */
/*
 * The virtio-net device, in process: driver-side rings (uvh_vq_driver) on
 * memfd memory stand in for a guest, the device's per-ring process()
 * is called directly. Loopback byte for byte (split and packed, merged
 * RX buffers on and off, 60..9000-byte frames, two pairs), source, sink,
 * a three-port switch, the control ring, config space, RARP, drops, and
 * a real tap when /dev/net/tun is usable.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "memory.h"
#include "message.h"
#include "net.h"
#include "t_helpers.h"
#include "vhost_user_dev.h"
#include "virtq.h"

#define GPA_BASE	0x100000ull
#define GUEST_BYTES	(48ull << 20)
#define RING_SIZE	256
#define BIT(n)		(1ull << (n))

/* ---- a guest: memfd memory, a bump allocator, rings ------------------------ */

struct guest {
	int fd;
	uint8_t *view;
	struct uvh_memory *mem;
	uint64_t next;
};

static void guest_init(struct guest *g)
{
	struct uvh_mem_region r = {
		.guest_phys_addr = GPA_BASE,
		.memory_size = GUEST_BYTES,
		.userspace_addr = 0x7f0000000000ull,
		.mmap_offset = 0,
	};

	g->fd = t_memfd("uvh-net", GUEST_BYTES);
	g->view = mmap(NULL, GUEST_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, g->fd, 0);
	cr_assert_neq(g->view, MAP_FAILED);
	g->mem = uvh_memory_new(0);
	cr_assert_not_null(g->mem);
	cr_assert_eq(uvh_memory_add_fd(g->mem, &r, dup(g->fd)), 0);
	g->next = GPA_BASE;
}

static void guest_fini(struct guest *g)
{
	uvh_memory_release(g->mem, NULL);
	munmap(g->view, GUEST_BYTES);
	close(g->fd);
}

static uint64_t galloc(struct guest *g, uint64_t len)
{
	uint64_t gpa = (g->next + 4095) & ~4095ull;

	cr_assert_leq(gpa + len, GPA_BASE + GUEST_BYTES, "guest memory exhausted");
	g->next = gpa + len;
	return gpa;
}

static inline uint8_t *gva(struct guest *g, uint64_t gpa)
{
	return g->view + (gpa - GPA_BASE);
}

struct ring {
	struct uvh_vq_driver drv;
	struct uvh_vq vq;
};

struct tdev {
	struct guest *g;
	struct uvh_net_dev *dev;
	uint64_t features;
	unsigned int nrings;
	struct ring rings[2 * 4 + 1];
};

static void tdev_init(struct tdev *t, struct guest *g, const struct uvh_net_opts *opts,
		      uint64_t features)
{
	unsigned int i;

	memset(t, 0, sizeof(*t));
	t->g = g;
	t->dev = uvh_net_create(opts);
	cr_assert_not_null(t->dev, "create: %s", strerror(errno));
	t->features = features & uvh_net_features(t->dev);
	cr_assert_eq(uvh_net_set_features(t->dev, t->features), 0);
	t->nrings = uvh_net_num_queues(t->dev);
	cr_assert_leq(t->nrings, 9);
	for (i = 0; i < t->nrings; i++) {
		struct ring *r = &t->rings[i];
		bool packed = t->features & BIT(UVH_VIRTIO_F_RING_PACKED);
		uint64_t bytes = uvh_vq_driver_area_bytes(RING_SIZE, packed);
		uint64_t gpa = galloc(g, bytes);
		struct uvh_vq_config cfg;
		struct uvh_net_binding b = { .kick_fd = -1, .call_fd = -1, .enabled = true };

		cr_assert_eq(uvh_vq_driver_init(&r->drv, RING_SIZE, packed,
						t->features & BIT(UVH_VIRTIO_F_RING_EVENT_IDX),
						gva(g, gpa), gpa), 0);
		uvh_vq_driver_config(&r->drv, &cfg);
		cfg.in_order = t->features & BIT(UVH_VIRTIO_F_IN_ORDER);
		cfg.indirect = t->features & BIT(UVH_VIRTIO_F_RING_INDIRECT_DESC);
		cr_assert_eq(uvh_vq_init(&r->vq, &cfg, g->mem), 0);
		b.vq = &r->vq;
		cr_assert_eq(uvh_net_queue_start(t->dev, i, &b), 0);
	}
}

static void tdev_fini(struct tdev *t)
{
	unsigned int i;

	for (i = 0; i < t->nrings; i++) {
		uvh_net_queue_stop(t->dev, i);
		uvh_vq_driver_free(&t->rings[i].drv);
	}
	uvh_net_destroy(t->dev);
}

/* Post @n RX buffers of @len bytes on ring @idx. */
static void post_rx(struct tdev *t, unsigned int idx, unsigned int n, uint32_t len)
{
	struct ring *r = &t->rings[idx];
	unsigned int i;

	for (i = 0; i < n; i++) {
		struct uvh_vq_buf b = { galloc(t->g, len), len };

		memset(gva(t->g, b.gpa), 0xee, len);
		cr_assert_eq(uvh_vq_driver_add(&r->drv, &b, 0, 1, (void *)(uintptr_t)b.gpa), 0);
	}
	uvh_vq_driver_publish(&r->drv);
}

/* Queue one frame on TX ring @idx: the header alone, then the frame (two buffers). */
static void send_frame(struct tdev *t, unsigned int idx, const uint8_t *frame, uint32_t len)
{
	struct ring *r = &t->rings[idx];
	struct uvh_vq_buf b[2];

	b[0].gpa = galloc(t->g, UVH_NET_HDR_LEN);
	b[0].len = UVH_NET_HDR_LEN;
	memset(gva(t->g, b[0].gpa), 0, UVH_NET_HDR_LEN);
	b[1].gpa = galloc(t->g, len);
	b[1].len = len;
	memcpy(gva(t->g, b[1].gpa), frame, len);
	cr_assert_eq(uvh_vq_driver_add(&r->drv, b, 2, 0, (void *)(uintptr_t)b[0].gpa), 0);
}

/* Collect every used TX chain of ring @idx; returns how many. */
static unsigned int reap_tx(struct tdev *t, unsigned int idx)
{
	void *tok[RING_SIZE];
	uint32_t lens[RING_SIZE];

	return uvh_vq_driver_get_used(&t->rings[idx].drv, tok, lens, RING_SIZE);
}

struct rxframe {
	uint8_t data[10000];
	uint32_t len;
	struct uvh_virtio_net_hdr hdr;
};

/*
 * Take the next received frame from RX ring @idx, merging buffers as
 * num_buffers says. false when none.
 */
static bool recv_frame(struct tdev *t, unsigned int idx, struct rxframe *f)
{
	struct ring *r = &t->rings[idx];
	void *tok;
	uint32_t len, nb, k;
	uint8_t *p;

	if (uvh_vq_driver_get_used(&r->drv, &tok, &len, 1) != 1)
		return false;
	cr_assert_geq(len, UVH_NET_HDR_LEN, "used length %u", len);
	p = gva(t->g, (uint64_t)(uintptr_t)tok);
	memcpy(&f->hdr, p, sizeof(f->hdr));
	nb = f->hdr.num_buffers;
	cr_assert_geq(nb, 1);
	f->len = len - UVH_NET_HDR_LEN;
	memcpy(f->data, p + UVH_NET_HDR_LEN, f->len);
	for (k = 1; k < nb; k++) {
		cr_assert_eq(uvh_vq_driver_get_used(&r->drv, &tok, &len, 1), 1,
			     "buffer %u of %u missing", k, nb);
		cr_assert_leq(f->len + len, sizeof(f->data));
		memcpy(f->data + f->len, gva(t->g, (uint64_t)(uintptr_t)tok), len);
		f->len += len;
	}
	return true;
}

static void make_frame(uint8_t *f, uint32_t len, const uint8_t dst[6], const uint8_t src[6],
		       uint32_t seed)
{
	uint32_t i;

	memcpy(f, dst, 6);
	memcpy(f + 6, src, 6);
	f[12] = 0x88;
	f[13] = 0xb5;
	for (i = 14; i < len; i++)
		f[i] = (uint8_t)(seed * 31 + i * 7);
}

static const uint8_t mac_a[6] = { 0x02, 0, 0, 0, 0, 0x0a };
static const uint8_t mac_b[6] = { 0x02, 0, 0, 0, 0, 0x0b };
static const uint8_t mac_c[6] = { 0x02, 0, 0, 0, 0, 0x0c };
static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };

#define BASE_FEATURES (BIT(UVH_VIRTIO_F_VERSION_1) | BIT(UVH_VIRTIO_F_RING_EVENT_IDX) | \
		       BIT(UVH_VIRTIO_F_IN_ORDER) | BIT(UVH_VIRTIO_NET_F_MQ) | \
		       BIT(UVH_VIRTIO_NET_F_CTRL_VQ))

/* ---- loopback ----------------------------------------------------------------- */

static void loopback_case(bool packed, bool mrg)
{
	static const uint32_t sizes[] = { 60, 61, 64, 127, 256, 1500, 1514, 1518, 2048,
					  4000, 8999, 9000, 60, 9000, 333, 1024 };
	struct uvh_net_opts o = { .type = UVH_NET_PORT_LOOPBACK, .queue_pairs = 2 };
	uint64_t features = BASE_FEATURES | (packed ? BIT(UVH_VIRTIO_F_RING_PACKED) : 0) |
			    (mrg ? BIT(UVH_VIRTIO_NET_F_MRG_RXBUF) : 0);
	static struct rxframe f;
	static uint8_t frame[9000];
	struct uvh_net_stats st;
	struct guest g;
	struct tdev t;
	unsigned int pair, round, i, n = sizeof(sizes) / sizeof(sizes[0]);
	uint64_t bytes = 0;

	guest_init(&g);
	tdev_init(&t, &g, &o, features);
	for (pair = 0; pair < 2; pair++) {
		unsigned int rx = 2 * pair, tx = 2 * pair + 1;

		for (round = 0; round < 3; round++) {
			/* merged: 1536-byte buffers, 9000 needs 6; else one big buffer each */
			post_rx(&t, rx, mrg ? 40 : n, mrg ? 1536 : 9100);
			for (i = 0; i < n; i++) {
				make_frame(frame, sizes[i], mac_b, mac_a, i + round * 100 + pair);
				send_frame(&t, tx, frame, sizes[i]);
				bytes += sizes[i];
			}
			uvh_vq_driver_publish(&t.rings[tx].drv);
			while (uvh_net_queue_process(t.dev, tx))
				;
			cr_assert_eq(reap_tx(&t, tx), n);
			for (i = 0; i < n; i++) {
				cr_assert(recv_frame(&t, rx, &f), "frame %u missing", i);
				make_frame(frame, sizes[i], mac_b, mac_a, i + round * 100 + pair);
				cr_assert_eq(f.len, sizes[i], "frame %u: %u bytes, sent %u", i,
					     f.len, sizes[i]);
				cr_assert_arr_eq(f.data, frame, sizes[i], "frame %u differs", i);
				cr_assert_eq(f.hdr.flags, 0);
				if (!mrg)
					cr_assert_eq(f.hdr.num_buffers, 1);
			}
			cr_assert_not(recv_frame(&t, rx, &f));
		}
	}
	uvh_net_get_stats(t.dev, &st);
	cr_assert_eq(st.rx_packets, 6 * n);
	cr_assert_eq(st.tx_packets, 6 * n);
	cr_assert_eq(st.rx_bytes, bytes);
	cr_assert_eq(st.tx_bytes, bytes);
	cr_assert_eq(st.tx_drops, 0);
	cr_assert_eq(st.rx_drops, 0);
	tdev_fini(&t);
	guest_fini(&g);
}

Test(net, loopback_split_mrg) { loopback_case(false, true); }
Test(net, loopback_split_nomrg) { loopback_case(false, false); }
Test(net, loopback_packed_mrg) { loopback_case(true, true); }
Test(net, loopback_packed_nomrg) { loopback_case(true, false); }

Test(net, loopback_drops_when_rx_full)
{
	struct uvh_net_opts o = { .type = UVH_NET_PORT_LOOPBACK };
	static struct rxframe f;
	uint8_t frame[200];
	struct uvh_net_stats st;
	struct guest g;
	struct tdev t;
	unsigned int i, got = 0;

	guest_init(&g);
	tdev_init(&t, &g, &o, BASE_FEATURES);
	post_rx(&t, 0, 4, 2048);
	for (i = 0; i < 10; i++) {
		make_frame(frame, sizeof(frame), mac_b, mac_a, i);
		send_frame(&t, 1, frame, sizeof(frame));
	}
	uvh_vq_driver_publish(&t.rings[1].drv);
	cr_assert_eq(uvh_net_queue_process(t.dev, 1), 10);
	cr_assert_eq(reap_tx(&t, 1), 10, "every TX chain comes back, dropped or not");
	while (recv_frame(&t, 0, &f)) {
		make_frame(frame, sizeof(frame), mac_b, mac_a, got);
		cr_assert_arr_eq(f.data, frame, sizeof(frame));
		got++;
	}
	cr_assert_eq(got, 4);
	uvh_net_get_stats(t.dev, &st);
	cr_assert_eq(st.rx_packets, 10);
	cr_assert_eq(st.tx_packets, 4);
	cr_assert_eq(st.tx_drops, 6);

	/* without merging, a chain too small for the frame: dropped, given back empty */
	post_rx(&t, 0, 1, 100);
	send_frame(&t, 1, frame, sizeof(frame));
	uvh_vq_driver_publish(&t.rings[1].drv);
	cr_assert_eq(uvh_net_queue_process(t.dev, 1), 1);
	{
		void *tok;
		uint32_t len = 99;

		cr_assert_eq(uvh_vq_driver_get_used(&t.rings[0].drv, &tok, &len, 1), 1);
		cr_assert_eq(len, 0);
	}
	uvh_net_get_stats(t.dev, &st);
	cr_assert_eq(st.tx_drops, 7);
	tdev_fini(&t);
	guest_fini(&g);
}

Test(net, malformed_tx_and_disabled_ring)
{
	struct uvh_net_opts o = { .type = UVH_NET_PORT_LOOPBACK };
	struct uvh_net_stats st;
	struct guest g;
	struct tdev t;
	struct uvh_vq_buf b;
	uint8_t frame[64];

	guest_init(&g);
	tdev_init(&t, &g, &o, BASE_FEATURES);
	post_rx(&t, 0, 8, 2048);
	/* shorter than the header */
	b.gpa = galloc(&g, 8);
	b.len = 8;
	cr_assert_eq(uvh_vq_driver_add(&t.rings[1].drv, &b, 1, 0, NULL), 0);
	uvh_vq_driver_publish(&t.rings[1].drv);
	cr_assert_eq(uvh_net_queue_process(t.dev, 1), 1);
	cr_assert_eq(reap_tx(&t, 1), 1);
	uvh_net_get_stats(t.dev, &st);
	cr_assert_eq(st.rx_drops, 1);
	cr_assert_eq(st.tx_packets, 0);
	/* a disabled TX ring is consumed, nothing reaches RX */
	uvh_net_queue_enable(t.dev, 1, false);
	make_frame(frame, sizeof(frame), mac_b, mac_a, 1);
	send_frame(&t, 1, frame, sizeof(frame));
	uvh_vq_driver_publish(&t.rings[1].drv);
	cr_assert_eq(uvh_net_queue_process(t.dev, 1), 1);
	cr_assert_eq(reap_tx(&t, 1), 1);
	uvh_net_get_stats(t.dev, &st);
	cr_assert_eq(st.rx_drops, 2);
	cr_assert_eq(st.tx_packets, 0);
	tdev_fini(&t);
	guest_fini(&g);
}

/* ---- sink, source -------------------------------------------------------------------- */

Test(net, sink_counts)
{
	struct uvh_net_opts o = { .type = UVH_NET_PORT_SINK };
	uint8_t frame[1000];
	struct uvh_net_stats st;
	struct guest g;
	struct tdev t;
	unsigned int i, done = 0;

	guest_init(&g);
	tdev_init(&t, &g, &o, BASE_FEATURES | BIT(UVH_VIRTIO_F_RING_PACKED));
	for (i = 0; i < 100; i++) {
		make_frame(frame, 60 + i, mac_b, mac_a, i);
		send_frame(&t, 1, frame, 60 + i);
	}
	uvh_vq_driver_publish(&t.rings[1].drv);
	while ((i = uvh_net_queue_process(t.dev, 1)))
		done += i;
	cr_assert_eq(done, 100);
	cr_assert_eq(reap_tx(&t, 1), 100);
	uvh_net_get_stats(t.dev, &st);
	cr_assert_eq(st.rx_packets, 100);
	cr_assert_eq(st.rx_bytes, 100 * 60 + 99 * 100 / 2);
	cr_assert_eq(st.tx_packets, 0);
	tdev_fini(&t);
	guest_fini(&g);
}

static void source_case(bool mrg, unsigned int size, uint32_t buflen)
{
	struct uvh_net_opts o = { .type = UVH_NET_PORT_SOURCE, .frame_size = size };
	static struct rxframe f;
	struct uvh_net_stats st;
	struct guest g;
	struct tdev t;
	uint8_t cfg[6];
	unsigned int i, got = 0;
	uint64_t seq;

	guest_init(&g);
	tdev_init(&t, &g, &o, BASE_FEATURES | (mrg ? BIT(UVH_VIRTIO_NET_F_MRG_RXBUF) : 0));
	cr_assert_eq(uvh_net_get_config(t.dev, 0, 6, cfg), 0);
	post_rx(&t, 0, 100, buflen);
	while (uvh_net_queue_process(t.dev, 0))
		;
	while (recv_frame(&t, 0, &f)) {
		cr_assert_eq(f.len, size);
		cr_assert_arr_eq(f.data, cfg, 6, "to the guest's MAC");
		cr_assert_eq(f.data[12], 0x88);
		memcpy(&seq, f.data + 14, 8);
		cr_assert_eq(seq, got, "counter %lu, expected %u", (unsigned long)seq, got);
		for (i = 22; i < size; i++)
			cr_assert_eq(f.data[i], (uint8_t)i);
		got++;
	}
	cr_assert_eq(got, mrg ? 100 / ((size + 12 + buflen - 1) / buflen) : 100);
	uvh_net_get_stats(t.dev, &st);
	cr_assert_eq(st.tx_packets, got);
	cr_assert_eq(st.tx_bytes, (uint64_t)got * size);
	cr_assert_eq(st.tx_drops, 0, "a full ring is back-pressure, not drops");
	/* refill: the counter carries on */
	post_rx(&t, 0, 10, buflen);
	while (uvh_net_queue_process(t.dev, 0))
		;
	cr_assert(recv_frame(&t, 0, &f));
	memcpy(&seq, f.data + 14, 8);
	cr_assert_eq(seq, got);
	tdev_fini(&t);
	guest_fini(&g);
}

Test(net, source_fills_rx) { source_case(false, 128, 2048); }
Test(net, source_fills_rx_merged) { source_case(true, 4000, 1024); }

/* ---- switch ---------------------------------------------------------------------- */

Test(net, switch_learns_and_forwards)
{
	struct uvh_net_switch *sw = uvh_net_switch_create();
	struct uvh_net_opts o = { .type = UVH_NET_PORT_SWITCH };
	static struct rxframe f;
	uint8_t frame[300];
	struct uvh_net_stats st;
	struct guest g;
	struct tdev a, b, c;

	cr_assert_not_null(sw);
	o.sw = sw;
	guest_init(&g);
	o.name = "a";
	tdev_init(&a, &g, &o, BASE_FEATURES | BIT(UVH_VIRTIO_NET_F_MRG_RXBUF));
	o.name = "b";
	tdev_init(&b, &g, &o, BASE_FEATURES);
	o.name = "c";
	tdev_init(&c, &g, &o, BASE_FEATURES | BIT(UVH_VIRTIO_F_RING_PACKED));
	cr_assert_eq(uvh_net_switch_ports(sw), 3);
	post_rx(&a, 0, 16, 2048);
	post_rx(&b, 0, 16, 2048);
	post_rx(&c, 0, 16, 2048);

	/* a -> b, b unknown: flooded to b and c, a learned */
	make_frame(frame, sizeof(frame), mac_b, mac_a, 1);
	send_frame(&a, 1, frame, sizeof(frame));
	uvh_vq_driver_publish(&a.rings[1].drv);
	cr_assert_eq(uvh_net_queue_process(a.dev, 1), 1);
	cr_assert_eq(reap_tx(&a, 1), 1);
	cr_assert(recv_frame(&b, 0, &f));
	cr_assert_arr_eq(f.data, frame, sizeof(frame));
	cr_assert(recv_frame(&c, 0, &f));
	cr_assert_arr_eq(f.data, frame, sizeof(frame));
	cr_assert_not(recv_frame(&a, 0, &f), "never back to the sender");
	cr_assert_eq(uvh_net_switch_lookup(sw, mac_a), a.dev);
	cr_assert_null(uvh_net_switch_lookup(sw, mac_b));

	/* b -> a: a is known, only a gets it; b learned */
	make_frame(frame, sizeof(frame), mac_a, mac_b, 2);
	send_frame(&b, 1, frame, sizeof(frame));
	uvh_vq_driver_publish(&b.rings[1].drv);
	cr_assert_eq(uvh_net_queue_process(b.dev, 1), 1);
	cr_assert(recv_frame(&a, 0, &f));
	cr_assert_arr_eq(f.data, frame, sizeof(frame));
	cr_assert_not(recv_frame(&c, 0, &f));
	cr_assert_eq(uvh_net_switch_lookup(sw, mac_b), b.dev);

	/* a -> b now unicast, a -> broadcast to everyone else, mixed in one burst */
	make_frame(frame, sizeof(frame), mac_b, mac_a, 3);
	send_frame(&a, 1, frame, sizeof(frame));
	make_frame(frame, 100, bcast, mac_a, 4);
	send_frame(&a, 1, frame, 100);
	make_frame(frame, 120, mac_c, mac_a, 5);	/* c unknown yet: flood */
	send_frame(&a, 1, frame, 120);
	uvh_vq_driver_publish(&a.rings[1].drv);
	cr_assert_eq(uvh_net_queue_process(a.dev, 1), 3);
	cr_assert(recv_frame(&b, 0, &f));
	cr_assert_eq(f.len, sizeof(frame));
	cr_assert_eq(f.data[0], 0x02);
	cr_assert(recv_frame(&b, 0, &f));
	cr_assert_eq(f.len, 100);
	cr_assert(recv_frame(&b, 0, &f));
	cr_assert_eq(f.len, 120);
	cr_assert(recv_frame(&c, 0, &f));
	cr_assert_eq(f.len, 100, "c gets the broadcast, not a->b");
	cr_assert(recv_frame(&c, 0, &f));
	cr_assert_eq(f.len, 120);
	cr_assert_not(recv_frame(&c, 0, &f));

	uvh_net_get_stats(a.dev, &st);
	cr_assert_eq(st.rx_packets, 4);
	cr_assert_eq(st.tx_packets, 1);
	uvh_net_get_stats(b.dev, &st);
	cr_assert_eq(st.tx_packets, 4);
	tdev_fini(&a);
	tdev_fini(&b);
	tdev_fini(&c);
	cr_assert_eq(uvh_net_switch_ports(sw), 0);
	uvh_net_switch_destroy(sw);
	guest_fini(&g);
}

/* ---- control ring, config space, RARP, MTU --------------------------------------- */

static uint8_t ctrl(struct tdev *t, const uint8_t *cmd, uint32_t len)
{
	unsigned int idx = t->nrings - 1;
	struct ring *r = &t->rings[idx];
	struct uvh_vq_buf b[2];
	void *tok;
	uint32_t used;

	b[0].gpa = galloc(t->g, len);
	b[0].len = len;
	memcpy(gva(t->g, b[0].gpa), cmd, len);
	b[1].gpa = galloc(t->g, 1);
	b[1].len = 1;
	*gva(t->g, b[1].gpa) = 0x77;
	cr_assert_eq(uvh_vq_driver_add(&r->drv, b, 1, 1, NULL), 0);
	uvh_vq_driver_publish(&r->drv);
	cr_assert_eq(uvh_net_queue_process(t->dev, idx), 1);
	cr_assert_eq(uvh_vq_driver_get_used(&r->drv, &tok, &used, 1), 1);
	cr_assert_eq(used, 1);
	return *gva(t->g, b[1].gpa);
}

Test(net, ctrl_mq_pairs_and_rx_modes)
{
	struct uvh_net_opts o = { .type = UVH_NET_PORT_LOOPBACK, .queue_pairs = 4 };
	const uint8_t set2[] = { UVH_VIRTIO_NET_CTRL_MQ, UVH_VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, 2, 0 };
	const uint8_t set5[] = { UVH_VIRTIO_NET_CTRL_MQ, UVH_VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, 5, 0 };
	const uint8_t set0[] = { UVH_VIRTIO_NET_CTRL_MQ, UVH_VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, 0, 0 };
	const uint8_t promisc[] = { UVH_VIRTIO_NET_CTRL_RX, UVH_VIRTIO_NET_CTRL_RX_PROMISC, 1 };
	const uint8_t allmulti[] = { UVH_VIRTIO_NET_CTRL_RX, UVH_VIRTIO_NET_CTRL_RX_ALLMULTI, 0 };
	const uint8_t vlan[] = { UVH_VIRTIO_NET_CTRL_VLAN, 0, 1, 0 };
	const uint8_t shortcmd[] = { UVH_VIRTIO_NET_CTRL_MQ };
	struct uvh_net_stats st;
	struct guest g;
	struct tdev t;

	guest_init(&g);
	tdev_init(&t, &g, &o, BASE_FEATURES);
	cr_assert_eq(t.nrings, 9);
	cr_assert_eq(uvh_net_active_pairs(t.dev), 1);
	cr_assert_eq(ctrl(&t, set2, sizeof(set2)), UVH_VIRTIO_NET_OK);
	cr_assert_eq(uvh_net_active_pairs(t.dev), 2);
	cr_assert_eq(ctrl(&t, set5, sizeof(set5)), UVH_VIRTIO_NET_ERR);
	cr_assert_eq(ctrl(&t, set0, sizeof(set0)), UVH_VIRTIO_NET_ERR);
	cr_assert_eq(uvh_net_active_pairs(t.dev), 2);
	cr_assert_eq(ctrl(&t, promisc, sizeof(promisc)), UVH_VIRTIO_NET_OK);
	cr_assert_eq(ctrl(&t, allmulti, sizeof(allmulti)), UVH_VIRTIO_NET_OK);
	cr_assert_eq(ctrl(&t, vlan, sizeof(vlan)), UVH_VIRTIO_NET_ERR);
	cr_assert_eq(ctrl(&t, shortcmd, sizeof(shortcmd)), UVH_VIRTIO_NET_ERR);
	uvh_net_get_stats(t.dev, &st);
	cr_assert_eq(st.ctrl_cmds, 7);
	uvh_net_reset(t.dev);
	cr_assert_eq(uvh_net_active_pairs(t.dev), 1);
	tdev_fini(&t);
	guest_fini(&g);
}

Test(net, ctrl_mq_refused_without_mq)
{
	struct uvh_net_opts o = { .type = UVH_NET_PORT_LOOPBACK, .queue_pairs = 2 };
	const uint8_t set2[] = { UVH_VIRTIO_NET_CTRL_MQ, UVH_VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, 2, 0 };
	struct guest g;
	struct tdev t;

	guest_init(&g);
	tdev_init(&t, &g, &o, BASE_FEATURES & ~BIT(UVH_VIRTIO_NET_F_MQ));
	cr_assert_eq(ctrl(&t, set2, sizeof(set2)), UVH_VIRTIO_NET_ERR);
	cr_assert_eq(uvh_net_active_pairs(t.dev), 1);
	tdev_fini(&t);
	guest_fini(&g);
}

Test(net, config_space_and_features)
{
	struct uvh_net_opts o = {
		.type = UVH_NET_PORT_SINK, .queue_pairs = 3, .mtu = 9000,
		.mac = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 },
	};
	const uint8_t want[12] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56,
				   1, 0,		/* status: LINK_UP */
				   3, 0,		/* max_virtqueue_pairs */
				   0x28, 0x23 };	/* mtu 9000 */
	uint8_t buf[256], zero[244];
	struct uvh_net_dev *dev = uvh_net_create(&o);
	uint64_t f;

	cr_assert_not_null(dev);
	cr_assert_eq(sizeof(struct uvh_virtio_net_config), 12);
	cr_assert_eq(sizeof(struct uvh_virtio_net_hdr), 12);
	cr_assert_eq(uvh_net_get_config(dev, 0, 256, buf), 0);
	cr_assert_arr_eq(buf, want, 12);
	memset(zero, 0, sizeof(zero));
	cr_assert_arr_eq(buf + 12, zero, sizeof(zero));
	cr_assert_eq(uvh_net_get_config(dev, 6, 2, buf), 0);
	cr_assert_eq(buf[0], 1);
	cr_assert_eq(uvh_net_get_config(dev, 250, 7, buf), -EINVAL);
	cr_assert_eq(uvh_net_get_config(dev, 257, 0, buf), -EINVAL);
	cr_assert_eq(uvh_net_set_mtu(dev, 1400), 0);
	cr_assert_eq(uvh_net_set_mtu(dev, 67), -EINVAL);
	cr_assert_eq(uvh_net_get_config(dev, 10, 2, buf), 0);
	cr_assert_eq(buf[0] | buf[1] << 8, 1400);

	f = uvh_net_features(dev);
	cr_assert(f & BIT(UVH_VIRTIO_F_VERSION_1));
	cr_assert(f & BIT(UVH_VIRTIO_NET_F_MRG_RXBUF));
	cr_assert(f & BIT(UVH_VIRTIO_NET_F_MQ));
	cr_assert(f & BIT(UVH_VIRTIO_NET_F_CTRL_VQ));
	cr_assert(f & BIT(UVH_VIRTIO_NET_F_CTRL_RX));
	cr_assert(f & BIT(UVH_VIRTIO_NET_F_MTU));
	cr_assert(f & BIT(UVH_VIRTIO_NET_F_STATUS));
	cr_assert(f & BIT(UVH_VIRTIO_NET_F_MAC));
	cr_assert(f & BIT(UVH_VIRTIO_F_RING_PACKED));
	cr_assert(f & BIT(UVH_VIRTIO_F_IN_ORDER));
	cr_assert(f & BIT(UVH_VIRTIO_F_RING_EVENT_IDX));
	cr_assert(f & BIT(UVH_VIRTIO_F_RING_INDIRECT_DESC));
	cr_assert_not(f & BIT(UVH_VIRTIO_NET_F_CSUM), "offloads only for a tap");
	cr_assert_not(f & BIT(UVH_VIRTIO_NET_F_HOST_TSO4));
	cr_assert_eq(uvh_net_num_queues(dev), 7);
	uvh_net_destroy(dev);

	/* one pair: no MQ */
	o.queue_pairs = 1;
	dev = uvh_net_create(&o);
	cr_assert_not_null(dev);
	cr_assert_not(uvh_net_features(dev) & BIT(UVH_VIRTIO_NET_F_MQ));
	cr_assert_eq(uvh_net_num_queues(dev), 3);
	uvh_net_destroy(dev);
}

Test(net, bad_options)
{
	struct uvh_net_opts o = { .type = UVH_NET_PORT_SINK };
	int fds = t_count_fds();

	o.queue_pairs = UVH_NET_MAX_PAIRS + 1;
	cr_assert_null(uvh_net_create(&o));
	cr_assert_eq(errno, EINVAL);
	o.queue_pairs = 1;
	o.mtu = 20;
	cr_assert_null(uvh_net_create(&o));
	cr_assert_eq(errno, EINVAL);
	o.mtu = 0;
	o.type = UVH_NET_PORT_SOURCE;
	o.frame_size = 59;
	cr_assert_null(uvh_net_create(&o));
	cr_assert_eq(errno, EINVAL);
	o.frame_size = 0;
	o.type = UVH_NET_PORT_SWITCH;
	cr_assert_null(uvh_net_create(&o));
	cr_assert_eq(errno, EINVAL);
	o.type = UVH_NET_PORT_TAP;
	o.tap_name = "a-name-far-too-long";
	cr_assert_null(uvh_net_create(&o));
	cr_assert_eq(errno, EINVAL);
	cr_assert_null(uvh_net_create(NULL));
	cr_assert_eq(errno, EINVAL);
	cr_assert_eq(t_count_fds(), fds);
}

Test(net, rarp_frame)
{
	struct uvh_net_opts o = { .type = UVH_NET_PORT_SINK };
	const uint8_t mac[6] = { 0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc };
	static struct rxframe f;
	struct guest g;
	struct tdev t;

	guest_init(&g);
	tdev_init(&t, &g, &o, BASE_FEATURES | BIT(UVH_VIRTIO_NET_F_MRG_RXBUF));
	cr_assert_eq(uvh_net_send_rarp(t.dev, mac), 0);
	/* no RX buffer yet: it waits */
	cr_assert_eq(uvh_net_queue_process(t.dev, 0), 0);
	post_rx(&t, 0, 2, 2048);
	cr_assert_eq(uvh_net_queue_process(t.dev, 0), 1);
	cr_assert(recv_frame(&t, 0, &f));
	cr_assert_eq(f.len, 60);
	cr_assert_arr_eq(f.data, bcast, 6);
	cr_assert_arr_eq(f.data + 6, mac, 6);
	cr_assert_eq(f.data[12], 0x80);
	cr_assert_eq(f.data[13], 0x35);
	cr_assert_eq(f.data[21], 3, "reverse request");
	cr_assert_arr_eq(f.data + 22, mac, 6);
	cr_assert_arr_eq(f.data + 32, mac, 6);
	cr_assert_eq(uvh_net_queue_process(t.dev, 0), 0, "sent once");
	tdev_fini(&t);
	guest_fini(&g);
}

Test(net, stop_returns_held_chains)
{
	struct uvh_net_opts o = { .type = UVH_NET_PORT_LOOPBACK };
	uint8_t frame[64];
	struct guest g;
	struct tdev t;
	void *tok[64];
	uint32_t lens[64];
	unsigned int n;

	guest_init(&g);
	tdev_init(&t, &g, &o, BASE_FEATURES);
	post_rx(&t, 0, 40, 2048);
	make_frame(frame, sizeof(frame), mac_b, mac_a, 0);
	send_frame(&t, 1, frame, sizeof(frame));
	uvh_vq_driver_publish(&t.rings[1].drv);
	cr_assert_eq(uvh_net_queue_process(t.dev, 1), 1);
	/* one used; the rest of the popped burst is held by the device */
	n = uvh_vq_driver_get_used(&t.rings[0].drv, tok, lens, 64);
	cr_assert_eq(n, 1);
	uvh_net_queue_stop(t.dev, 0);
	n = uvh_vq_driver_get_used(&t.rings[0].drv, tok, lens, 64);
	cr_assert_eq(n, UVH_NET_BURST - 1, "held chains given back: %u", n);
	cr_assert_eq(lens[0], 0);
	cr_assert_eq(uvh_vq_base(&t.rings[0].vq), UVH_NET_BURST);
	tdev_fini(&t);
	guest_fini(&g);
}

Test(net, vud_ops_table)
{
	struct uvh_net_opts o = { .type = UVH_NET_PORT_LOOPBACK, .queue_pairs = 3 };
	struct uvh_net_dev *dev = uvh_net_create(&o);
	const struct uvh_vud_device_ops *ops = &uvh_net_vud_ops;

	cr_assert_not_null(dev);
	cr_assert_eq(ops->num_queues(dev), 7);
	cr_assert_eq(ops->queue_num_reply(dev), 3);
	cr_assert_eq(ops->features(dev), uvh_net_features(dev));
	cr_assert_eq(ops->protocol_features(dev),
		     BIT(UVH_PROTOCOL_F_MQ) | BIT(UVH_PROTOCOL_F_RARP) | BIT(UVH_PROTOCOL_F_NET_MTU));
	cr_assert_eq(ops->engine_for_queue(dev, 0, 2), 0);
	cr_assert_eq(ops->engine_for_queue(dev, 1, 2), 0, "a pair stays together");
	cr_assert_eq(ops->engine_for_queue(dev, 2, 2), 1);
	cr_assert_eq(ops->engine_for_queue(dev, 3, 2), 1);
	cr_assert_eq(ops->engine_for_queue(dev, 4, 2), 0);
	cr_assert_eq(ops->engine_for_queue(dev, 6, 2), 0, "control ring");
	cr_assert_not_null(ops->queue_start);
	cr_assert_not_null(ops->process);
	uvh_net_destroy(dev);
}

/* ---- tap --------------------------------------------------------------------------- */

static int if_up(const char *name)
{
	struct ifreq ifr;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), ret;

	if (s < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	ret = ioctl(s, SIOCGIFFLAGS, &ifr);
	if (!ret) {
		ifr.ifr_flags |= IFF_UP;
		ret = ioctl(s, SIOCSIFFLAGS, &ifr);
	}
	ret = ret ? -errno : 0;
	close(s);
	return ret;
}

static void disable_ipv6(const char *name)
{
	char path[128];
	int fd;

	/* quiet interface: no router solicitations mixed with our frames */
	snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6", name);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (write(fd, "1", 1) < 0)
			(void)0;
		close(fd);
	}
}

Test(net, tap_both_ways)
{
	struct uvh_net_opts o = { .type = UVH_NET_PORT_TAP, .tap_name = "uvhnet%d" };
	uint64_t features = BASE_FEATURES | BIT(UVH_VIRTIO_NET_F_MRG_RXBUF) |
			    BIT(UVH_VIRTIO_NET_F_GUEST_CSUM) | BIT(UVH_VIRTIO_NET_F_CSUM);
	static struct rxframe f;
	uint8_t frame[200], buf[2048];
	struct sockaddr_ll sll;
	struct uvh_net_stats st;
	struct guest g;
	struct tdev t;
	struct uvh_net_dev *probe;
	int fds = t_count_fds(), ps, i;
	bool seen = false;
	ssize_t n;

	probe = uvh_net_create(&o);
	if (!probe) {
		cr_skip_test("no usable tap: %s", strerror(errno));
		return;
	}
	uvh_net_destroy(probe);
	cr_assert_eq(t_count_fds(), fds, "tap fds closed");
	ps = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(0x88b5));
	if (ps < 0) {
		cr_skip_test("no AF_PACKET: %s", strerror(errno));
		return;
	}
	guest_init(&g);
	tdev_init(&t, &g, &o, features);
	cr_assert(t.features & BIT(UVH_VIRTIO_NET_F_CSUM));
	cr_assert_not(t.features & BIT(UVH_VIRTIO_F_IN_ORDER));
	disable_ipv6(uvh_net_tap_name(t.dev));
	if (if_up(uvh_net_tap_name(t.dev))) {
		close(ps);
		tdev_fini(&t);
		guest_fini(&g);
		cr_skip_test("cannot bring the tap up");
		return;
	}
	memset(&sll, 0, sizeof(sll));
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(0x88b5);
	sll.sll_ifindex = (int)if_nametoindex(uvh_net_tap_name(t.dev));
	cr_assert_gt(sll.sll_ifindex, 0);
	cr_assert_eq(bind(ps, (struct sockaddr *)&sll, sizeof(sll)), 0);

	/* guest -> tap: the frame shows up on the interface */
	make_frame(frame, sizeof(frame), mac_b, mac_a, 7);
	send_frame(&t, 1, frame, sizeof(frame));
	uvh_vq_driver_publish(&t.rings[1].drv);
	cr_assert_eq(uvh_net_queue_process(t.dev, 1), 1);
	cr_assert_eq(reap_tx(&t, 1), 1);
	for (i = 0; i < 50 && !seen; i++) {
		struct pollfd pfd = { ps, POLLIN, 0 };

		if (poll(&pfd, 1, 100) <= 0)
			continue;
		n = recv(ps, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == (ssize_t)sizeof(frame) && !memcmp(buf, frame, sizeof(frame)))
			seen = true;
	}
	cr_assert(seen, "the guest's frame reached the tap interface");

	/* interface -> tap -> guest RX, with the virtio-net header in front */
	post_rx(&t, 0, 8, 2048);
	cr_assert_eq(uvh_net_queue_process(t.dev, 0), 0);	/* reads posted */
	make_frame(frame, 150, mac_a, mac_b, 9);
	cr_assert_eq(sendto(ps, frame, 150, 0, (struct sockaddr *)&sll, sizeof(sll)), 150);
	seen = false;
	for (i = 0; i < 200 && !seen; i++) {
		uvh_net_queue_process(t.dev, 0);
		while (recv_frame(&t, 0, &f)) {
			if (f.len == 150 && !memcmp(f.data, frame, 150)) {
				seen = true;
				cr_assert_eq(f.hdr.num_buffers, 1);
				cr_assert_eq(f.hdr.gso_type, 0);
			}
		}
		if (!seen)
			usleep(5000);
	}
	uvh_net_get_stats(t.dev, &st);
	cr_assert(seen, "the interface frame reached the guest: tx %lu drops %lu", (unsigned long)st.tx_packets, (unsigned long)st.tx_drops);
	uvh_net_get_stats(t.dev, &st);
	cr_assert_eq(st.rx_packets, 1);
	cr_assert_geq(st.tx_packets, 1);
	close(ps);
	tdev_fini(&t);	/* cancels the reads still posted */
	guest_fini(&g);
	cr_assert_eq(t_count_fds(), fds);
}
