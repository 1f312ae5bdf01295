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

#include "util.h"
#include "memory.h"
#include "message.h"
#include "net.h"
#include "t_helpers.h"
#include "t_net.h"
#include "devhost.h"
#include "virtq.h"

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

#define BASE_FEATURES (UVH_BIT(UVH_VIRTIO_F_VERSION_1) | UVH_BIT(UVH_VIRTIO_F_RING_EVENT_IDX) | \
		       UVH_BIT(UVH_VIRTIO_F_IN_ORDER) | UVH_BIT(UVH_VIRTIO_NET_F_MQ) | \
		       UVH_BIT(UVH_VIRTIO_NET_F_CTRL_VQ))

/* ---- loopback ----------------------------------------------------------------- */

static void loopback_case(bool packed, bool mrg)
{
	static const uint32_t sizes[] = { 60, 61, 64, 127, 256, 1500, 1514, 1518, 2048,
					  4000, 8999, 9000, 60, 9000, 333, 1024 };
	struct uvh_net_opts o = { .type = UVH_NET_PORT_LOOPBACK, .queue_pairs = 2 };
	uint64_t features = BASE_FEATURES | (packed ? UVH_BIT(UVH_VIRTIO_F_RING_PACKED) : 0) |
			    (mrg ? UVH_BIT(UVH_VIRTIO_NET_F_MRG_RXBUF) : 0);
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

Test(net, merged_rx_first_buffer_too_small)
{
	struct uvh_net_opts o = { .type = UVH_NET_PORT_LOOPBACK };
	static struct rxframe f;
	uint8_t frame[100];
	struct uvh_net_stats st;
	struct guest g;
	struct tdev t;
	void *tok;
	uint32_t len = 7;

	guest_init(&g);
	tdev_init(&t, &g, &o, BASE_FEATURES | UVH_BIT(UVH_VIRTIO_NET_F_MRG_RXBUF));
	post_rx(&t, 0, 1, 4);		/* cannot even hold the header */
	post_rx(&t, 0, 1, 2048);
	make_frame(frame, sizeof(frame), mac_b, mac_a, 1);
	send_frame(&t, 1, frame, sizeof(frame));
	make_frame(frame, sizeof(frame), mac_b, mac_a, 2);
	send_frame(&t, 1, frame, sizeof(frame));
	uvh_vq_driver_publish(&t.rings[1].drv);
	cr_assert_eq(uvh_net_queue_process(t.dev, 1), 2);
	cr_assert_eq(uvh_vq_driver_get_used(&t.rings[0].drv, &tok, &len, 1), 1);
	cr_assert_eq(len, 0, "the 4-byte buffer goes back empty");
	cr_assert(recv_frame(&t, 0, &f));
	cr_assert_eq(f.len, sizeof(frame));
	cr_assert_arr_eq(f.data, frame, sizeof(frame), "the second frame, whole");
	uvh_net_get_stats(t.dev, &st);
	cr_assert_eq(st.tx_drops, 1);
	cr_assert_eq(st.tx_packets, 1);
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
	tdev_init(&t, &g, &o, BASE_FEATURES | UVH_BIT(UVH_VIRTIO_F_RING_PACKED));
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
	tdev_init(&t, &g, &o, BASE_FEATURES | (mrg ? UVH_BIT(UVH_VIRTIO_NET_F_MRG_RXBUF) : 0));
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
	tdev_init(&a, &g, &o, BASE_FEATURES | UVH_BIT(UVH_VIRTIO_NET_F_MRG_RXBUF));
	o.name = "b";
	tdev_init(&b, &g, &o, BASE_FEATURES);
	o.name = "c";
	tdev_init(&c, &g, &o, BASE_FEATURES | UVH_BIT(UVH_VIRTIO_F_RING_PACKED));
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
	tdev_init(&t, &g, &o, BASE_FEATURES & ~UVH_BIT(UVH_VIRTIO_NET_F_MQ));
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
	cr_assert(f & UVH_BIT(UVH_VIRTIO_F_VERSION_1));
	cr_assert(f & UVH_BIT(UVH_VIRTIO_NET_F_MRG_RXBUF));
	cr_assert(f & UVH_BIT(UVH_VIRTIO_NET_F_MQ));
	cr_assert(f & UVH_BIT(UVH_VIRTIO_NET_F_CTRL_VQ));
	cr_assert(f & UVH_BIT(UVH_VIRTIO_NET_F_CTRL_RX));
	cr_assert(f & UVH_BIT(UVH_VIRTIO_NET_F_MTU));
	cr_assert(f & UVH_BIT(UVH_VIRTIO_NET_F_STATUS));
	cr_assert(f & UVH_BIT(UVH_VIRTIO_NET_F_MAC));
	cr_assert(f & UVH_BIT(UVH_VIRTIO_F_RING_PACKED));
	cr_assert(f & UVH_BIT(UVH_VIRTIO_F_IN_ORDER));
	cr_assert(f & UVH_BIT(UVH_VIRTIO_F_RING_EVENT_IDX));
	cr_assert(f & UVH_BIT(UVH_VIRTIO_F_RING_INDIRECT_DESC));
	cr_assert_not(f & UVH_BIT(UVH_VIRTIO_NET_F_CSUM), "offloads only for a tap");
	cr_assert_not(f & UVH_BIT(UVH_VIRTIO_NET_F_HOST_TSO4));
	cr_assert_eq(uvh_net_num_queues(dev), 7);
	uvh_net_destroy(dev);

	/* one pair: no MQ */
	o.queue_pairs = 1;
	dev = uvh_net_create(&o);
	cr_assert_not_null(dev);
	cr_assert_not(uvh_net_features(dev) & UVH_BIT(UVH_VIRTIO_NET_F_MQ));
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
	tdev_init(&t, &g, &o, BASE_FEATURES | UVH_BIT(UVH_VIRTIO_NET_F_MRG_RXBUF));
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

/* Chains the RX pool took ahead and did not use go back to the ring unused
 * when it stops (the base steps back over them), not as empty packets. */
Test(net, stop_gives_held_chains_back_unused)
{
	struct uvh_net_opts o = { .type = UVH_NET_PORT_LOOPBACK };
	static uint8_t frame[9000];
	struct uvh_net_stats st;
	struct guest g;
	struct tdev t;
	void *tok[64];
	uint32_t lens[64];
	unsigned int n;

	guest_init(&g);
	tdev_init(&t, &g, &o, BASE_FEATURES | UVH_BIT(UVH_VIRTIO_NET_F_MRG_RXBUF));
	/* 3 x 1536 bytes cannot hold 9000: taken while merging, then held */
	post_rx(&t, 0, 3, 1536);
	make_frame(frame, sizeof(frame), mac_b, mac_a, 0);
	send_frame(&t, 1, frame, sizeof(frame));
	uvh_vq_driver_publish(&t.rings[1].drv);
	cr_assert_eq(uvh_net_queue_process(t.dev, 1), 1);
	cr_assert_eq(uvh_vq_driver_get_used(&t.rings[0].drv, tok, lens, 64), 0);
	uvh_net_get_stats(t.dev, &st);
	cr_assert_eq(st.tx_drops, 1);
	/* a small frame still fits in what is held */
	send_frame(&t, 1, frame, 100);
	uvh_vq_driver_publish(&t.rings[1].drv);
	cr_assert_eq(uvh_net_queue_process(t.dev, 1), 1);
	cr_assert_eq(uvh_vq_driver_get_used(&t.rings[0].drv, tok, lens, 64), 1);
	cr_assert_eq(lens[0], 112);
	uvh_net_queue_stop(t.dev, 0);
	n = uvh_vq_driver_get_used(&t.rings[0].drv, tok, lens, 64);
	cr_assert_eq(n, 0, "held chains handed back as used: %u", n);
	cr_assert_eq(uvh_vq_base(&t.rings[0].vq), 1, "the base is past the held chains");
	tdev_fini(&t);
	guest_fini(&g);
}

Test(net, dh_ops_table)
{
	struct uvh_net_opts o = { .type = UVH_NET_PORT_LOOPBACK, .queue_pairs = 3 };
	struct uvh_net_dev *dev = uvh_net_create(&o);
	const struct uvh_devhost_device_ops *ops = &uvh_net_devhost_ops;

	cr_assert_not_null(dev);
	cr_assert_eq(ops->num_queues(dev), 7);
	cr_assert_eq(ops->queue_num_reply(dev), 3);
	cr_assert_eq(ops->features(dev), uvh_net_features(dev));
	cr_assert_eq(ops->protocol_features(dev),
		     UVH_BIT(UVH_PROTOCOL_F_MQ) | UVH_BIT(UVH_PROTOCOL_F_RARP) | UVH_BIT(UVH_PROTOCOL_F_NET_MTU));
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

Test(net, tap_both_ways)
{
	struct uvh_net_opts o = { .type = UVH_NET_PORT_TAP, .tap_name = "uvhnet%d" };
	uint64_t features = BASE_FEATURES | UVH_BIT(UVH_VIRTIO_NET_F_MRG_RXBUF) |
			    UVH_BIT(UVH_VIRTIO_NET_F_GUEST_CSUM) | UVH_BIT(UVH_VIRTIO_NET_F_CSUM);
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
	cr_assert(t.features & UVH_BIT(UVH_VIRTIO_NET_F_CSUM));
	cr_assert_not(t.features & UVH_BIT(UVH_VIRTIO_F_IN_ORDER));
	if (t_tap_up(uvh_net_tap_name(t.dev))) {
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

/* ---- through engines ----------------------------------------------------------------- */

#include <sys/eventfd.h>

#include "engine.h"

struct eport {
	struct tdev t;
	struct uvh_engine_queue eq[3];
	int kick[3], call[3];
	uint64_t txbuf[RING_SIZE], rxbuf[RING_SIZE];
	unsigned int tx_inflight, next_tx;
	uint32_t expect;	/* next sequence number to receive */
};

static unsigned int eproc(struct uvh_engine_queue *q)
{
	struct tdev *t = q->opaque;

	return uvh_net_queue_process(t->dev, (uint32_t)(q - ((struct eport *)t)->eq));
}

/* Like tdev_init, but the rings are served by @e with kick and call eventfds. */
static void eport_init(struct eport *p, struct guest *g, const struct uvh_net_opts *opts,
		       uint64_t features, struct uvh_engine *e)
{
	unsigned int i;

	memset(p, 0, sizeof(*p));
	p->t.g = g;
	p->t.dev = uvh_net_create(opts);
	cr_assert_not_null(p->t.dev);
	p->t.features = features & uvh_net_features(p->t.dev);
	cr_assert_eq(uvh_net_set_features(p->t.dev, p->t.features), 0);
	p->t.nrings = 3;
	for (i = 0; i < 3; i++) {
		struct ring *r = &p->t.rings[i];
		bool packed = p->t.features & UVH_BIT(UVH_VIRTIO_F_RING_PACKED);
		uint64_t gpa = galloc(g, uvh_vq_driver_area_bytes(RING_SIZE, packed));
		struct uvh_vq_config cfg;
		struct uvh_net_binding b = { .enabled = true, .engine = e };

		cr_assert_eq(uvh_vq_driver_init(&r->drv, RING_SIZE, packed,
						p->t.features & UVH_BIT(UVH_VIRTIO_F_RING_EVENT_IDX),
						gva(g, gpa), gpa), 0);
		uvh_vq_driver_config(&r->drv, &cfg);
		cfg.in_order = p->t.features & UVH_BIT(UVH_VIRTIO_F_IN_ORDER);
		cr_assert_eq(uvh_vq_init(&r->vq, &cfg, g->mem), 0);
		p->kick[i] = t_eventfd();
		p->call[i] = t_eventfd();
		p->eq[i].vq = &r->vq;
		p->eq[i].kick_fd = p->kick[i];
		p->eq[i].call_fd = p->call[i];
		p->eq[i].err_fd = -1;
		p->eq[i].process = eproc;
		p->eq[i].opaque = &p->t;
		b.vq = &r->vq;
		b.eq = &p->eq[i];
		b.kick_fd = p->kick[i];
		b.call_fd = p->call[i];
		cr_assert_eq(uvh_net_queue_start(p->t.dev, i, &b), 0);
		cr_assert_eq(uvh_engine_add_queue(e, &p->eq[i]), 0);
	}
	for (i = 0; i < RING_SIZE; i++) {
		p->txbuf[i] = galloc(g, 2048);
		p->rxbuf[i] = galloc(g, 2048);
	}
}

static void eport_fini(struct eport *p, struct uvh_engine *e)
{
	unsigned int i;

	for (i = 0; i < 3; i++) {
		cr_assert_eq(uvh_engine_remove_queue(e, &p->eq[i]), 0);
		uvh_net_queue_stop(p->t.dev, i);
		uvh_vq_driver_free(&p->t.rings[i].drv);
		close(p->kick[i]);
		close(p->call[i]);
	}
	uvh_net_destroy(p->t.dev);
}

static uint32_t eframe_len(uint32_t seq)
{
	return 60 + (seq * 97) % 1455;
}

static void eframe(uint8_t *f, uint32_t seq, const uint8_t dst[6], const uint8_t src[6])
{
	make_frame(f, eframe_len(seq), dst, src, seq);
	memcpy(f + 14, &seq, 4);
}

static void epost_rx(struct eport *p, unsigned int n)
{
	struct ring *r = &p->t.rings[0];
	unsigned int i;

	for (i = 0; i < n; i++) {
		uintptr_t slot = 0;

		/* a free buffer: the ring's ids are free exactly when their buffers are */
		while (slot < RING_SIZE && p->rxbuf[slot] == 0)
			slot++;
		cr_assert_lt(slot, RING_SIZE);
		struct uvh_vq_buf b = { p->rxbuf[slot], 2048 };

		p->rxbuf[slot] = 0;	/* in the ring */
		cr_assert_eq(uvh_vq_driver_add(&r->drv, &b, 0, 1, (void *)(b.gpa)), 0);
	}
	uvh_vq_driver_publish(&r->drv);
	eventfd_write(p->kick[0], 1);
}

static void esend(struct eport *p, uint32_t seq, const uint8_t dst[6], const uint8_t src[6])
{
	struct ring *r = &p->t.rings[1];
	unsigned int slot = p->next_tx++ % RING_SIZE;
	struct uvh_vq_buf b = { p->txbuf[slot], UVH_NET_HDR_LEN + eframe_len(seq) };

	memset(gva(p->t.g, b.gpa), 0, UVH_NET_HDR_LEN);
	eframe(gva(p->t.g, b.gpa) + UVH_NET_HDR_LEN, seq, dst, src);
	cr_assert_eq(uvh_vq_driver_add(&r->drv, &b, 1, 0, NULL), 0);
	p->tx_inflight++;
}

/* Collect received frames, checking each; returns how many. */
static unsigned int erecv(struct eport *p)
{
	struct ring *r = &p->t.rings[0];
	static uint8_t want[2048];
	unsigned int n = 0, i;
	void *tok;
	uint32_t len;

	while (uvh_vq_driver_get_used(&r->drv, &tok, &len, 1) == 1) {
		uint8_t *b = gva(p->t.g, (uint64_t)(uintptr_t)tok);
		uint32_t seq;

		memcpy(&seq, b + UVH_NET_HDR_LEN + 14, 4);
		cr_assert_eq(seq, p->expect, "frame %u, expected %u", seq, p->expect);
		cr_assert_eq(len, UVH_NET_HDR_LEN + eframe_len(seq));
		eframe(want, seq, b + UVH_NET_HDR_LEN, b + UVH_NET_HDR_LEN + 6);
		cr_assert_arr_eq(b + UVH_NET_HDR_LEN, want, eframe_len(seq));
		p->expect++;
		for (i = 0; i < RING_SIZE; i++)
			if (p->rxbuf[i] == 0) {
				p->rxbuf[i] = (uint64_t)(uintptr_t)tok;
				break;
			}
		n++;
	}
	return n;
}

static void ereap_tx(struct eport *p)
{
	void *tok[RING_SIZE];
	uint32_t lens[RING_SIZE];

	p->tx_inflight -= uvh_vq_driver_get_used(&p->t.rings[1].drv, tok, lens, RING_SIZE);
}

static struct uvh_engine *eng_new(const char *name, enum uvh_engine_mode mode)
{
	struct uvh_engine_opts eo = { .name = name, .cpu = -1, .numa_node = -1, .mode = mode };
	struct uvh_engine *e = uvh_engine_create(&eo);

	cr_assert_not_null(e);
	return e;
}

/*
 * Two switch ports served by two engines: each engine's TX burst copies
 * into the other port's RX ring, which the other engine serves (the
 * per-RX-ring lock), while the test sends both ways at once. Every frame
 * arrives, in order, byte for byte, and the guest is called.
 */
static void switch_across_engines(enum uvh_engine_mode mode, bool packed)
{
	struct uvh_net_switch *sw = uvh_net_switch_create();
	struct uvh_net_opts o = { .type = UVH_NET_PORT_SWITCH, .sw = sw };
	uint64_t features = BASE_FEATURES | UVH_BIT(UVH_VIRTIO_NET_F_MRG_RXBUF) |
			    (packed ? UVH_BIT(UVH_VIRTIO_F_RING_PACKED) : 0);
	static struct eport a, b;
	struct uvh_engine *ea, *eb;
	const uint32_t total = 4000;
	uint32_t sent_a = 0, sent_b = 0, k;
	struct uvh_net_stats st;
	uint64_t v;
	struct guest g;
	time_t deadline;
	int fds = t_count_fds();

	ea = eng_new("net-a", mode);
	eb = eng_new("net-b", mode);
	guest_init(&g);
	o.name = "a";
	eport_init(&a, &g, &o, features, ea);
	o.name = "b";
	eport_init(&b, &g, &o, features, eb);
	uvh_vq_driver_enable_cb(&a.t.rings[0].drv, true);
	uvh_vq_driver_enable_cb(&b.t.rings[0].drv, true);
	cr_assert_eq(uvh_engine_start(ea), 0);
	cr_assert_eq(uvh_engine_start(eb), 0);
	epost_rx(&a, 128);
	epost_rx(&b, 128);
	deadline = time(NULL) + 40;
	while (a.expect < total || b.expect < total) {
		cr_assert_lt(time(NULL), deadline, "stuck: a got %u, b got %u", a.expect, b.expect);
		ereap_tx(&a);
		ereap_tx(&b);
		/* never more in flight than the peer has RX buffers for */
		for (k = 0; k < 16 && sent_a < total && sent_a - b.expect < 96; k++)
			esend(&a, sent_a++, mac_b, mac_a);
		for (k = 0; k < 16 && sent_b < total && sent_b - a.expect < 96; k++)
			esend(&b, sent_b++, mac_a, mac_b);
		uvh_vq_driver_publish(&a.t.rings[1].drv);
		uvh_vq_driver_publish(&b.t.rings[1].drv);
		eventfd_write(a.kick[1], 1);
		eventfd_write(b.kick[1], 1);
		k = erecv(&a);
		if (k)
			epost_rx(&a, k);
		k = erecv(&b);
		if (k)
			epost_rx(&b, k);
		usleep(200);
	}
	/* the RX rings were served by the other port's engine: calls were made */
	if (mode == UVH_ENGINE_EVENT) {
		cr_assert_eq(eventfd_read(a.call[0], &v), 0);
		cr_assert_gt(v, 0);
		cr_assert_eq(eventfd_read(b.call[0], &v), 0);
	}
	uvh_net_get_stats(a.t.dev, &st);
	cr_assert_eq(st.rx_packets, total);
	cr_assert_eq(st.tx_packets, total);
	cr_assert_eq(st.tx_drops, 0);
	uvh_net_get_stats(b.t.dev, &st);
	cr_assert_eq(st.tx_packets, total);
	cr_assert_eq(uvh_engine_stop(ea), 0);
	cr_assert_eq(uvh_engine_stop(eb), 0);
	eport_fini(&a, ea);
	eport_fini(&b, eb);
	uvh_engine_destroy(ea);
	uvh_engine_destroy(eb);
	uvh_net_switch_destroy(sw);
	guest_fini(&g);
	cr_assert_eq(t_count_fds(), fds);
}

Test(net, switch_across_engines_event, .timeout = 60)
{
	switch_across_engines(UVH_ENGINE_EVENT, false);
}

Test(net, switch_across_engines_poll_packed, .timeout = 60)
{
	switch_across_engines(UVH_ENGINE_POLL, true);
}

/* Loopback on one engine in event mode: kicks in, the RX call out through the engine. */
Test(net, loopback_through_engine, .timeout = 30)
{
	struct uvh_net_opts o = { .type = UVH_NET_PORT_LOOPBACK };
	static struct eport a;
	struct uvh_engine *e;
	struct uvh_engine_stats es;
	uint32_t sent = 0, k;
	uint64_t v;
	struct guest g;
	time_t deadline;
	int fds = t_count_fds();

	e = eng_new("net-l", UVH_ENGINE_EVENT);
	guest_init(&g);
	eport_init(&a, &g, &o, BASE_FEATURES | UVH_BIT(UVH_VIRTIO_F_RING_PACKED), e);
	uvh_vq_driver_enable_cb(&a.t.rings[0].drv, true);
	cr_assert_eq(uvh_engine_start(e), 0);
	epost_rx(&a, 128);
	deadline = time(NULL) + 20;
	while (a.expect < 2000) {
		cr_assert_lt(time(NULL), deadline, "stuck at %u", a.expect);
		ereap_tx(&a);
		for (k = 0; k < 32 && sent < 2000 && sent - a.expect < 96; k++)
			esend(&a, sent++, mac_a, mac_a);
		uvh_vq_driver_publish(&a.t.rings[1].drv);
		eventfd_write(a.kick[1], 1);
		k = erecv(&a);
		if (k)
			epost_rx(&a, k);
		usleep(100);
	}
	cr_assert_eq(eventfd_read(a.call[0], &v), 0, "RX called through the engine");
	uvh_engine_stats(e, &es);
	cr_assert_gt(es.calls, 0);
	cr_assert_eq(uvh_engine_stop(e), 0);
	eport_fini(&a, e);
	uvh_engine_destroy(e);
	guest_fini(&g);
	cr_assert_eq(t_count_fds(), fds);
}

/* ---- behind the vhost-user device host, with uvhost's own front-end ------------------- */

#include <pthread.h>

#include "frontend.h"

#define PF(x) UVH_BIT(UVH_PROTOCOL_F_##x)

struct vctl {
	struct uvh_devhost *dh;
	atomic_bool stop;
};

static void *vctl_thread(void *arg)
{
	struct vctl *c = arg;

	while (!atomic_load(&c->stop)) {
		int ret = uvh_devhost_handle(c->dh, 50);

		if (ret < 0 && ret != -ENOTCONN) {
			uvh_devhost_disconnect(c->dh);
			break;
		}
	}
	return NULL;
}

/*
 * Loopback through uvh_net_devhost_ops: negotiation, config space, MTU, two
 * rings started by SET_VRING_KICK, frames back byte for byte, SEND_RARP,
 * GET_VRING_BASE, disconnect. Nothing leaks.
 */
Test(net, loopback_behind_vhost_user, .timeout = 60)
{
	/* CONFIG asked for: this front-end reads the config space */
	struct uvh_net_opts no = { .type = UVH_NET_PORT_LOOPBACK, .mac = { 2, 1, 2, 3, 4, 5 },
				   .offer_config = true };
	struct uvh_engine_opts eo = { .name = "net-dh", .cpu = -1, .numa_node = -1,
				      .mode = UVH_ENGINE_EVENT };
	const size_t mem_size = 16u << 20;
	const uint8_t rarp_mac[6] = { 0x52, 0x54, 0, 1, 2, 3 };
	struct uvh_vq_driver drv[2];
	int kick[2], call[2], sv[2], memfd, fds = t_count_fds();
	struct uvh_engine *e;
	struct uvh_net_dev *dev;
	struct uvh_frontend *fe;
	struct vctl ctl = { 0 };
	pthread_t thr;
	uint8_t *map, cfg[12], want[12], frame[1500];
	uint64_t fout, pf, bufs = 0x200000;
	uint32_t i, k, base, got = 0, len;
	void *tok;
	time_t deadline;

	e = uvh_engine_create(&eo);
	cr_assert_not_null(e);
	cr_assert_eq(uvh_engine_start(e), 0);
	dev = uvh_net_create(&no);
	cr_assert_not_null(dev);
	{
		struct uvh_devhost_opts vo = { .name = "net-dh", .ops = &uvh_net_devhost_ops, .dev = dev,
					   .engines = &e, .nengines = 1 };

		ctl.dh = uvh_devhost_new(&vo);
	}
	cr_assert_not_null(ctl.dh);
	memfd = t_memfd("net-dh", mem_size);
	map = mmap(NULL, mem_size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	cr_assert_neq(map, MAP_FAILED);
	t_socketpair(sv);
	fe = uvh_frontend_from_fd(sv[0]);
	cr_assert_not_null(fe);
	uvh_frontend_set_timeout(fe, 5000);
	cr_assert_eq(uvh_devhost_connect(ctl.dh, sv[1]), 0);
	cr_assert_eq(pthread_create(&thr, NULL, vctl_thread, &ctl), 0);

	cr_assert_eq(uvh_frontend_negotiate(fe, BASE_FEATURES | UVH_BIT(UVH_VIRTIO_NET_F_MRG_RXBUF) |
					    UVH_BIT(UVH_VIRTIO_NET_F_MAC) | UVH_BIT(UVH_VIRTIO_NET_F_MTU),
					    PF(REPLY_ACK) | PF(CONFIG) | PF(RARP) | PF(NET_MTU) | PF(MQ),
					    &fout, &pf), 0);
	cr_assert(fout & UVH_BIT(UVH_VIRTIO_NET_F_MRG_RXBUF));
	cr_assert_eq(pf & (PF(RARP) | PF(NET_MTU) | PF(CONFIG)), PF(RARP) | PF(NET_MTU) | PF(CONFIG));
	{
		uint64_t qn = 0;

		cr_assert_eq(uvh_frontend_get_queue_num(fe, &qn), 0);
		cr_assert_eq(qn, 1, "GET_QUEUE_NUM answers queue pairs");
	}
	cr_assert_eq(uvh_frontend_net_set_mtu(fe, 4000), 0);
	cr_assert_eq(uvh_frontend_get_config(fe, 0, sizeof(cfg), 0, cfg), 0);
	cr_assert_eq(uvh_net_get_config(dev, 0, sizeof(want), want), 0);
	cr_assert_arr_eq(cfg, want, sizeof(cfg));
	cr_assert_arr_eq(cfg, no.mac, 6);
	cr_assert_eq(cfg[10] | cfg[11] << 8, 4000);
	{
		struct uvh_mem_region r = {
			.guest_phys_addr = 0, .memory_size = mem_size,
			.userspace_addr = (uint64_t)(uintptr_t)map, .mmap_offset = 0,
		};

		cr_assert_eq(uvh_frontend_set_mem_table(fe, &r, &memfd, 1), 0);
	}
	for (i = 0; i < 2; i++) {
		struct uvh_vring_addr a = { .index = i };

		cr_assert_eq(uvh_vq_driver_init(&drv[i], RING_SIZE, false, true,
						map + i * 0x10000, i * 0x10000), 0);
		kick[i] = t_eventfd();
		call[i] = t_eventfd();
		a.desc_user_addr = (uint64_t)(uintptr_t)drv[i].desc;
		a.avail_user_addr = (uint64_t)(uintptr_t)drv[i].driver_area;
		a.used_user_addr = (uint64_t)(uintptr_t)drv[i].device_area;
		cr_assert_eq(uvh_frontend_set_vring_num(fe, i, RING_SIZE), 0);
		cr_assert_eq(uvh_frontend_set_vring_addr(fe, &a), 0);
		cr_assert_eq(uvh_frontend_set_vring_base(fe, i, 0), 0);
		cr_assert_eq(uvh_frontend_set_vring_call(fe, i, call[i]), 0);
		cr_assert_eq(uvh_frontend_set_vring_kick(fe, i, kick[i]), 0);
		cr_assert_eq(uvh_frontend_set_vring_enable(fe, i, true), 0);
	}
	/* RX buffers, then 100 frames out */
	for (i = 0; i < 128; i++) {
		struct uvh_vq_buf b = { bufs + i * 2048, 2048 };

		cr_assert_eq(uvh_vq_driver_add(&drv[0], &b, 0, 1, (void *)(uintptr_t)b.gpa), 0);
	}
	uvh_vq_driver_publish(&drv[0]);
	eventfd_write(kick[0], 1);
	for (i = 0; i < 100; i++) {
		struct uvh_vq_buf b = { bufs + 0x100000 + i * 2048, UVH_NET_HDR_LEN + 60 + i * 10 };

		memset(map + b.gpa, 0, UVH_NET_HDR_LEN);
		make_frame(map + b.gpa + UVH_NET_HDR_LEN, 60 + i * 10, mac_b, mac_a, i);
		cr_assert_eq(uvh_vq_driver_add(&drv[1], &b, 1, 0, NULL), 0);
	}
	uvh_vq_driver_publish(&drv[1]);
	eventfd_write(kick[1], 1);
	deadline = time(NULL) + 20;
	while (got < 100) {
		cr_assert_lt(time(NULL), deadline, "%u frames back", got);
		if (uvh_vq_driver_get_used(&drv[0], &tok, &len, 1) != 1) {
			usleep(1000);
			continue;
		}
		make_frame(frame, 60 + got * 10, mac_b, mac_a, got);
		cr_assert_eq(len, UVH_NET_HDR_LEN + 60 + got * 10);
		cr_assert_eq(map[(uintptr_t)tok + 10], 1, "num_buffers");
		cr_assert_arr_eq(map + (uintptr_t)tok + UVH_NET_HDR_LEN, frame, 60 + got * 10);
		got++;
	}
	/* SEND_RARP: delivered by the next burst serving RX 0 (a kick makes one) */
	cr_assert_eq(uvh_frontend_send_rarp(fe, rarp_mac), 0);
	eventfd_write(kick[0], 1);
	deadline = time(NULL) + 20;
	while (uvh_vq_driver_get_used(&drv[0], &tok, &len, 1) != 1) {
		cr_assert_lt(time(NULL), deadline, "no RARP");
		eventfd_write(kick[0], 1);
		usleep(1000);
	}
	cr_assert_eq(len, UVH_NET_HDR_LEN + 60);
	cr_assert_arr_eq(map + (uintptr_t)tok + UVH_NET_HDR_LEN + 6, rarp_mac, 6);
	cr_assert_eq(map[(uintptr_t)tok + UVH_NET_HDR_LEN + 13], 0x35);

	/* stop: every TX chain taken; RX chains the device held go back */
	cr_assert_eq(uvh_frontend_get_vring_base(fe, 1, &base), 0);
	cr_assert_eq(base, 100);
	cr_assert_eq(uvh_frontend_get_vring_base(fe, 0, &base), 0);
	for (k = 0; uvh_vq_driver_get_used(&drv[0], &tok, &len, 1) == 1; k++)
		cr_assert_eq(len, 0);
	cr_assert_eq(base, got + 1 + k, "base %u: %u frames, RARP, %u held", base, got, k);

	uvh_frontend_free(fe);
	atomic_store(&ctl.stop, true);
	pthread_join(thr, NULL);
	uvh_devhost_free(ctl.dh);
	uvh_net_destroy(dev);
	uvh_engine_destroy(e);
	for (i = 0; i < 2; i++) {
		uvh_vq_driver_free(&drv[i]);
		close(kick[i]);
		close(call[i]);
	}
	munmap(map, mem_size);
	close(memfd);
	cr_assert_eq(t_count_fds(), fds);
}

/*
 * VHOST_USER_PROTOCOL_F_CONFIG is the device's choice: not offered by
 * default (QEMU's vhost-user-net warns about a back-end offering it and
 * never sends GET_CONFIG, so GET_CONFIG is refused before it is sent), offered
 * with opts.offer_config, and then GET_CONFIG answers the MAC.
 */
Test(net, config_offered_only_when_asked, .timeout = 30)
{
	struct uvh_engine_opts eo = { .name = "net-cfg", .cpu = -1, .numa_node = -1,
				      .mode = UVH_ENGINE_EVENT };
	int fds = t_count_fds();
	struct uvh_engine *e = uvh_engine_create(&eo);

	cr_assert_not_null(e);
	cr_assert_eq(uvh_engine_start(e), 0);
	for (int ask = 0; ask < 2; ask++) {
		struct uvh_net_opts no = { .type = UVH_NET_PORT_LOOPBACK,
					   .mac = { 2, 9, 8, 7, 6, 5 }, .offer_config = ask };
		struct uvh_net_dev *dev = uvh_net_create(&no);
		struct uvh_devhost_opts vo = { .name = "net-cfg", .ops = &uvh_net_devhost_ops,
					       .dev = dev, .engines = &e, .nengines = 1 };
		struct vctl ctl = { 0 };
		struct uvh_frontend *fe;
		uint64_t offered = 0, pf = 0;
		uint8_t cfg[6] = { 0 };
		pthread_t thr;
		int sv[2];

		cr_assert_not_null(dev);
		ctl.dh = uvh_devhost_new(&vo);
		cr_assert_not_null(ctl.dh);
		t_socketpair(sv);
		fe = uvh_frontend_from_fd(sv[0]);
		cr_assert_not_null(fe);
		uvh_frontend_set_timeout(fe, 5000);
		cr_assert_eq(uvh_devhost_connect(ctl.dh, sv[1]), 0);
		cr_assert_eq(pthread_create(&thr, NULL, vctl_thread, &ctl), 0);

		/* what a front-end wanting everything is offered */
		cr_assert_eq(uvh_frontend_negotiate(fe, BASE_FEATURES, ~0ull, NULL, &pf), 0);
		cr_assert_eq(uvh_frontend_get_protocol_features(fe, &offered), 0);
		cr_assert(offered & PF(NET_MTU), "the net device's own bits are there");
		if (ask) {
			cr_assert(offered & PF(CONFIG), "offer_config: CONFIG offered");
			cr_assert(pf & PF(CONFIG));
			cr_assert_eq(uvh_frontend_get_config(fe, 0, sizeof(cfg), 0, cfg), 0);
			cr_assert_arr_eq(cfg, no.mac, 6);
		} else {
			cr_assert_not(offered & PF(CONFIG), "CONFIG offered by default: 0x%llx",
				      (unsigned long long)offered);
			cr_assert_not(uvh_devhost_protocol_features(ctl.dh) & PF(CONFIG));
			cr_assert_eq(uvh_frontend_get_config(fe, 0, sizeof(cfg), 0, cfg),
				     -EOPNOTSUPP);
		}
		uvh_frontend_free(fe);
		atomic_store(&ctl.stop, true);
		pthread_join(thr, NULL);
		uvh_devhost_free(ctl.dh);
		uvh_net_destroy(dev);
	}
	uvh_engine_destroy(e);
	cr_assert_eq(t_count_fds(), fds);
}
