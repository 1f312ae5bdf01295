/* SPDX-License-Identifier: MIT */
/*
 * virtio-net offloads through the switch and loopback ports, in process:
 * a TSO frame passed whole to a receiver with GUEST_TSO, cut into MSS
 * segments for one without (IPv4 and IPv6, with and without TCP options),
 * partial checksums completed or passed on, the receiver's MTU kept, and
 * every header a sender had no right to send dropped and counted by
 * reason. Checksums and segments are checked against a reference written
 * here, byte by byte in network order, independent of the device's code.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"
#include "net.h"
#include "t_net.h"

#define BASE	(UVH_BIT(UVH_VIRTIO_F_VERSION_1) | UVH_BIT(UVH_VIRTIO_F_IN_ORDER) | \
		 UVH_BIT(UVH_VIRTIO_NET_F_MRG_RXBUF))
#define F(x)	UVH_BIT(UVH_VIRTIO_NET_F_##x)
#define SENDER	(BASE | F(CSUM) | F(HOST_TSO4) | F(HOST_TSO6) | F(HOST_ECN))
#define TSO_RX	(BASE | F(GUEST_CSUM) | F(GUEST_TSO4) | F(GUEST_TSO6))

static const uint8_t mac_a[6] = { 0x02, 0, 0, 0, 0, 0x0a };
static const uint8_t mac_x[6] = { 0x02, 0, 0, 0, 0, 0x99 };	/* nobody: flooded */

/* ---- the reference: RFC 1071 over network-order bytes --------------------------- */

static uint32_t ref_sum(const uint8_t *p, size_t n, uint32_t s)
{
	for (size_t i = 0; i < n; i++)
		s += (i & 1) ? p[i] : (uint32_t)p[i] << 8;
	return s;
}

static uint16_t ref_fold(uint32_t s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)s;
}

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)rd16(p) << 16 | rd16(p + 2);
}

/* The TCP pseudo-header's sum for a segment whose IP header is at @ip. */
static uint32_t ref_pseudo(const uint8_t *ip, bool v6, uint32_t l4len)
{
	uint32_t s = v6 ? ref_sum(ip + 8, 32, 0) : ref_sum(ip + 12, 8, 0);

	return s + 6 + l4len;
}

/* Is the TCP checksum of the segment (@l4 bytes from @tcp) right? */
static bool ref_tcp_ok(const uint8_t *ip, bool v6, const uint8_t *tcp, uint32_t l4len)
{
	return ref_fold(ref_sum(tcp, l4len, ref_pseudo(ip, v6, l4len))) == 0xffff;
}

/* ---- frames ------------------------------------------------------------------------ */

struct tso {
	bool v6;
	uint32_t optlen;	/* TCP options: 0 or a multiple of 4 */
	uint32_t payload;
	uint16_t mss;
	uint8_t tcpflags;
};

/* Ethernet + IP + TCP (+ options) + payload; returns the frame's length and
 * fills the header a driver would send (partial checksum, GSO). */
static uint32_t make_tso(uint8_t *f, const struct tso *t, const uint8_t dst[6],
			 const uint8_t src[6], struct uvh_virtio_net_hdr *h)
{
	uint32_t l3 = 14, l4 = l3 + (t->v6 ? 40 : 20), tcplen = 20 + t->optlen;
	uint32_t hlen = l4 + tcplen, len = hlen + t->payload, i;
	uint8_t *ip = f + l3, *tcp = f + l4;
	uint16_t ps;

	memset(f, 0, hlen);
	memcpy(f, dst, 6);
	memcpy(f + 6, src, 6);
	if (t->v6) {
		f[12] = 0x86; f[13] = 0xdd;
		ip[0] = 0x60;
		ip[4] = (uint8_t)((tcplen + t->payload) >> 8);
		ip[5] = (uint8_t)(tcplen + t->payload);
		ip[6] = 6;
		ip[7] = 64;
		for (i = 0; i < 16; i++) {
			ip[8 + i] = (uint8_t)(0x20 + i);
			ip[24 + i] = (uint8_t)(0x40 + i);
		}
	} else {
		f[12] = 0x08; f[13] = 0x00;
		ip[0] = 0x45;
		ip[2] = (uint8_t)((20 + tcplen + t->payload) >> 8);
		ip[3] = (uint8_t)(20 + tcplen + t->payload);
		ip[4] = 0x12; ip[5] = 0x34;		/* id */
		ip[6] = 0x40;				/* DF */
		ip[8] = 64;
		ip[9] = 6;
		ip[12] = 10; ip[13] = 0; ip[14] = 0; ip[15] = 1;
		ip[16] = 10; ip[17] = 0; ip[18] = 0; ip[19] = 2;
		/* left 0: a driver offloading TSO leaves it to the segmenter too */
	}
	tcp[0] = 0x9c; tcp[1] = 0x40;			/* ports */
	tcp[2] = 0x14; tcp[3] = 0x51;
	tcp[4] = 0xff; tcp[5] = 0xff; tcp[6] = 0xf0; tcp[7] = 0x00;	/* seq wraps */
	tcp[8] = 0; tcp[9] = 0; tcp[10] = 0x12; tcp[11] = 0x34;
	tcp[12] = (uint8_t)((tcplen / 4) << 4);
	tcp[13] = t->tcpflags;
	tcp[14] = 0xfa; tcp[15] = 0xf0;
	for (i = 0; i < t->optlen; i += 4) {		/* NOP NOP + a timestamp-ish word */
		tcp[20 + i] = 1; tcp[21 + i] = 1;
		tcp[22 + i] = (uint8_t)(0xa0 + i); tcp[23 + i] = 0x55;
	}
	for (i = 0; i < t->payload; i++)
		f[hlen + i] = (uint8_t)(i * 7 + i / 251);
	/* the partial checksum a driver leaves: the pseudo-header over the whole */
	ps = ref_fold(ref_pseudo(ip, t->v6, tcplen + t->payload));
	tcp[16] = (uint8_t)(ps >> 8);
	tcp[17] = (uint8_t)ps;
	memset(h, 0, sizeof(*h));
	h->flags = UVH_VIRTIO_NET_HDR_F_NEEDS_CSUM;
	h->gso_type = t->v6 ? UVH_VIRTIO_NET_HDR_GSO_TCPV6 : UVH_VIRTIO_NET_HDR_GSO_TCPV4;
	h->gso_size = t->mss;
	h->hdr_len = (uint16_t)hlen;
	h->csum_start = (uint16_t)l4;
	h->csum_offset = 16;
	return len;
}

/* Fill in a partial checksum as a guest's stack would (NEEDS_CSUM). */
static void ref_complete(uint8_t *f, uint32_t len, const struct uvh_virtio_net_hdr *h)
{
	uint16_t s;

	cr_assert_leq(h->csum_start + h->csum_offset + 2u, len);
	s = (uint16_t)~ref_fold(ref_sum(f + h->csum_start, len - h->csum_start, 0));
	f[h->csum_start + h->csum_offset] = (uint8_t)(s >> 8);
	f[h->csum_start + h->csum_offset + 1] = (uint8_t)s;
}

/*
 * Receive the segments of @orig (@t) on @rx ring 0 and check each: size,
 * IP fields and checksums, sequence numbers, flags, payload; @partial:
 * they come with NEEDS_CSUM (completed here first).
 */
static void check_segments(struct tdev *rx, const uint8_t *orig, const struct tso *t,
			   bool partial, uint32_t mtu)
{
	static struct rxframe f;
	uint32_t l3 = 14, l4 = l3 + (t->v6 ? 40 : 20), hlen = l4 + 20 + t->optlen;
	uint32_t nseg = (t->payload + t->mss - 1) / t->mss, k, off = 0, seg;
	uint32_t seq0 = rd32(orig + l4 + 4);

	for (k = 0; k < nseg; k++) {
		const uint8_t *ip = f.data + l3, *tcp = f.data + l4;

		cr_assert(recv_frame(rx, 0, &f), "segment %u of %u missing", k, nseg);
		seg = t->payload - off < t->mss ? t->payload - off : t->mss;
		cr_assert_eq(f.len, hlen + seg, "segment %u: %u bytes", k, f.len);
		cr_assert_leq(f.len, mtu + 14, "segment %u over the MTU", k);
		cr_assert_eq(f.hdr.gso_type, 0);
		if (partial) {
			cr_assert_eq(f.hdr.flags, UVH_VIRTIO_NET_HDR_F_NEEDS_CSUM);
			cr_assert_eq(f.hdr.csum_start, l4);
			cr_assert_eq(f.hdr.csum_offset, 16);
			ref_complete(f.data, f.len, &f.hdr);
		} else {
			cr_assert_eq(f.hdr.flags, 0, "segment %u: flags %u", k, f.hdr.flags);
		}
		/* everything before the IP lengths as sent */
		cr_assert_arr_eq(f.data, orig, l3 + 2);
		if (t->v6) {
			cr_assert_eq(rd16(ip + 4), 20 + t->optlen + seg);
			cr_assert_arr_eq(ip + 6, orig + l3 + 6, 34);
		} else {
			cr_assert_eq(rd16(ip + 2), 40 + t->optlen + seg);
			cr_assert_eq(rd16(ip + 4), (uint16_t)(0x1234 + k), "ids count up");
			cr_assert_eq(ref_fold(ref_sum(ip, 20, 0)), 0xffff, "IPv4 checksum %u", k);
			cr_assert_arr_eq(ip + 12, orig + l3 + 12, 8);
		}
		cr_assert_eq(rd32(tcp + 4), seq0 + off, "segment %u: seq", k);
		cr_assert_arr_eq(tcp + 8, orig + l4 + 8, 5);	/* ack, data offset */
		if (k + 1 < nseg)
			cr_assert_eq(tcp[13], t->tcpflags & ~0x09 & (k ? ~0x80 : 0xff),
				     "segment %u flags 0x%x", k, tcp[13]);
		else
			cr_assert_eq(tcp[13], t->tcpflags & (k ? ~0x80 : 0xff));
		cr_assert_arr_eq(tcp + 14, orig + l4 + 14, 2);
		cr_assert_arr_eq(tcp + 20, orig + l4 + 20, t->optlen);
		cr_assert(ref_tcp_ok(ip, t->v6, tcp, f.len - l4), "segment %u: TCP checksum", k);
		cr_assert_arr_eq(f.data + hlen, orig + hlen + off, seg, "segment %u payload", k);
		off += seg;
	}
	cr_assert_not(recv_frame(rx, 0, &f), "more than %u segments", nseg);
}

static void send_and_process(struct tdev *tx, const struct uvh_virtio_net_hdr *h,
			     const uint8_t *f, uint32_t len)
{
	send_frame_hdr(tx, 1, h, f, len);
	uvh_vq_driver_publish(&tx->rings[1].drv);
	cr_assert_eq(uvh_net_queue_process(tx->dev, 1), 1);
	cr_assert_eq(reap_tx(tx, 1), 1);
}

/* ---- the three ports of the issue, and a fourth ------------------------------------ */

Test(net_offload, switch_passes_tso_whole_or_segments_it_per_receiver)
{
	struct uvh_net_switch *sw = uvh_net_switch_create();
	struct uvh_net_opts o = { .type = UVH_NET_PORT_SWITCH };
	const struct tso t = { .payload = 60000, .mss = 1448, .tcpflags = 0x18 | 0x01 };
	static uint8_t frame[70000];
	static struct rxframe f;
	struct uvh_virtio_net_hdr h;
	struct uvh_net_stats st;
	struct tdev a, b, c, d;
	struct guest g;
	uint32_t len;

	guest_init(&g);
	o.sw = sw;
	o.name = "sender";
	tdev_init(&a, &g, &o, SENDER);
	o.name = "tso";
	tdev_init(&b, &g, &o, TSO_RX);
	o.name = "plain";
	tdev_init(&c, &g, &o, BASE);
	o.name = "csum";
	tdev_init(&d, &g, &o, BASE | F(GUEST_CSUM));
	cr_assert(uvh_net_features(b.dev) & F(GUEST_TSO4), "the switch offers GUEST_TSO4");
	post_rx(&b, 0, 32, 4096);
	post_rx(&c, 0, 64, 2048);
	post_rx(&d, 0, 64, 2048);

	len = make_tso(frame, &t, mac_x, mac_a, &h);
	cr_assert_eq(len, 60054);
	send_and_process(&a, &h, frame, len);

	/* the offloading receiver: whole, its GSO header with it */
	cr_assert(recv_frame(&b, 0, &f));
	cr_assert_eq(f.len, len);
	cr_assert_eq(f.hdr.gso_type, UVH_VIRTIO_NET_HDR_GSO_TCPV4);
	cr_assert_eq(f.hdr.gso_size, 1448);
	cr_assert_eq(f.hdr.flags, UVH_VIRTIO_NET_HDR_F_NEEDS_CSUM);
	cr_assert_eq(f.hdr.csum_start, 34);
	cr_assert_eq(f.hdr.csum_offset, 16);
	cr_assert_gt(f.hdr.num_buffers, 1);
	cr_assert_arr_eq(f.data, frame, len);
	cr_assert_not(recv_frame(&b, 0, &f));
	/* the plain one: 42 segments of at most 1514 bytes, checksums complete */
	check_segments(&c, frame, &t, false, 1500);
	/* GUEST_CSUM without TSO: segments, their checksums left partial */
	check_segments(&d, frame, &t, true, 1500);

	uvh_net_get_stats(a.dev, &st);
	cr_assert_eq(st.rx_packets, 1);
	cr_assert_eq(st.rx_drops, 0);
	uvh_net_get_stats(c.dev, &st);
	cr_assert_eq(st.tx_packets, 42);
	cr_assert_eq(st.tx_drops, 0);
	tdev_fini(&a);
	tdev_fini(&b);
	tdev_fini(&c);
	tdev_fini(&d);
	uvh_net_switch_destroy(sw);
	guest_fini(&g);
}

/* ---- loopback: IPv4 / IPv6, with and without TCP options ------------------------- */

static void loopback_segments(bool v6, uint32_t optlen, uint16_t mss, uint32_t payload,
			      uint8_t tcpflags, uint64_t rx_features, bool partial)
{
	struct uvh_net_opts o = { .type = UVH_NET_PORT_LOOPBACK };
	const struct tso t = { .v6 = v6, .optlen = optlen, .payload = payload, .mss = mss,
			       .tcpflags = tcpflags };
	static uint8_t frame[70000];
	struct uvh_virtio_net_hdr h;
	struct guest g;
	struct tdev a;
	uint32_t len;

	guest_init(&g);
	tdev_init(&a, &g, &o, SENDER | rx_features);
	post_rx(&a, 0, 128, 2048);
	len = make_tso(frame, &t, mac_x, mac_a, &h);
	if (tcpflags & 0x80)
		h.gso_type |= UVH_VIRTIO_NET_HDR_GSO_ECN;
	send_and_process(&a, &h, frame, len);
	check_segments(&a, frame, &t, partial, 1500);
	tdev_fini(&a);
	guest_fini(&g);
}

Test(net_offload, loopback_segments_ipv4) { loopback_segments(false, 0, 1460, 30000, 0x18, 0, false); }
Test(net_offload, loopback_segments_ipv4_options_fin_last_cwr_first)
{
	loopback_segments(false, 12, 1448, 20001, 0x80 | 0x18 | 0x01, 0, false);
}
Test(net_offload, loopback_segments_ipv6) { loopback_segments(true, 0, 1440, 25000, 0x10, 0, false); }
Test(net_offload, loopback_segments_ipv6_options_partial)
{
	loopback_segments(true, 20, 1000, 7777, 0x18, F(GUEST_CSUM), true);
}
Test(net_offload, loopback_one_short_segment) { loopback_segments(false, 0, 1460, 1, 0x18, 0, false); }

/* The payload split across many small TX buffers at odd offsets: the
 * checksum's byte pairs straddle buffers. */
Test(net_offload, segments_from_scattered_odd_buffers)
{
	struct uvh_net_opts o = { .type = UVH_NET_PORT_LOOPBACK };
	const struct tso t = { .payload = 5000, .mss = 1200, .tcpflags = 0x18 };
	static uint8_t frame[70000];
	struct uvh_virtio_net_hdr h;
	struct uvh_vq_buf b[64];
	struct guest g;
	struct tdev a;
	uint32_t len, off = 0, n = 1, piece;

	guest_init(&g);
	tdev_init(&a, &g, &o, SENDER);
	post_rx(&a, 0, 32, 2048);
	len = make_tso(frame, &t, mac_x, mac_a, &h);
	b[0].gpa = galloc(&g, UVH_NET_HDR_LEN);
	b[0].len = UVH_NET_HDR_LEN;
	memcpy(gva(&g, b[0].gpa), &h, UVH_NET_HDR_LEN);
	while (off < len) {
		piece = (n * 37 + 13) % 211 + 1;	/* 1..211 bytes, mostly odd */
		if (piece > len - off || n == 63)
			piece = len - off;
		b[n].gpa = galloc(&g, piece);
		b[n].len = piece;
		memcpy(gva(&g, b[n].gpa), frame + off, piece);
		off += piece;
		n++;
	}
	cr_assert_eq(uvh_vq_driver_add(&a.rings[1].drv, b, n, 0, (void *)1), 0);
	uvh_vq_driver_publish(&a.rings[1].drv);
	cr_assert_eq(uvh_net_queue_process(a.dev, 1), 1);
	check_segments(&a, frame, &t, false, 1500);
	tdev_fini(&a);
	guest_fini(&g);
}

/* ---- partial checksums without GSO ------------------------------------------------- */

static uint32_t make_udp(uint8_t *f, uint32_t payload, struct uvh_virtio_net_hdr *h)
{
	uint32_t len = 14 + 20 + 8 + payload, i;
	uint8_t *ip = f + 14, *udp = ip + 20;
	uint16_t ps;

	memset(f, 0, 42);
	memcpy(f, mac_x, 6);
	memcpy(f + 6, mac_a, 6);
	f[12] = 0x08;
	ip[0] = 0x45;
	ip[2] = (uint8_t)((len - 14) >> 8);
	ip[3] = (uint8_t)(len - 14);
	ip[8] = 64;
	ip[9] = 17;
	ip[12] = 10; ip[15] = 1; ip[16] = 10; ip[19] = 2;
	ps = (uint16_t)~ref_fold(ref_sum(ip, 20, 0));
	ip[10] = (uint8_t)(ps >> 8);
	ip[11] = (uint8_t)ps;
	udp[0] = 0x30; udp[1] = 0x39; udp[2] = 0x10; udp[3] = 0x92;
	udp[4] = (uint8_t)((8 + payload) >> 8);
	udp[5] = (uint8_t)(8 + payload);
	for (i = 0; i < payload; i++)
		udp[8 + i] = (uint8_t)(i ^ 0x5a);
	ps = ref_fold(ref_sum(ip + 12, 8, 17 + 8 + payload));
	udp[6] = (uint8_t)(ps >> 8);
	udp[7] = (uint8_t)ps;
	memset(h, 0, sizeof(*h));
	h->flags = UVH_VIRTIO_NET_HDR_F_NEEDS_CSUM;
	h->csum_start = 34;
	h->csum_offset = 6;
	return len;
}

Test(net_offload, partial_checksum_completed_or_passed_on)
{
	struct uvh_net_switch *sw = uvh_net_switch_create();
	struct uvh_net_opts o = { .type = UVH_NET_PORT_SWITCH, .sw = sw };
	static uint8_t frame[2000];
	static struct rxframe f;
	struct uvh_virtio_net_hdr h;
	struct tdev a, plain, csum;
	struct guest g;
	uint32_t len;

	guest_init(&g);
	tdev_init(&a, &g, &o, SENDER);
	tdev_init(&plain, &g, &o, BASE);
	tdev_init(&csum, &g, &o, BASE | F(GUEST_CSUM));
	post_rx(&plain, 0, 4, 2048);
	post_rx(&csum, 0, 4, 2048);
	len = make_udp(frame, 1111, &h);
	send_and_process(&a, &h, frame, len);

	cr_assert(recv_frame(&plain, 0, &f));
	cr_assert_eq(f.len, len);
	cr_assert_eq(f.hdr.flags, 0);
	cr_assert_arr_eq(f.data, frame, 40, "all but the checksum as sent");
	cr_assert_arr_eq(f.data + 42, frame + 42, len - 42);
	cr_assert_eq(ref_fold(ref_sum(f.data + 34, len - 34,
				      ref_sum(f.data + 26, 8, 17 + len - 34))), 0xffff,
		     "UDP checksum complete");
	cr_assert(recv_frame(&csum, 0, &f));
	cr_assert_eq(f.hdr.flags, UVH_VIRTIO_NET_HDR_F_NEEDS_CSUM);
	cr_assert_eq(f.hdr.csum_start, 34);
	cr_assert_eq(f.hdr.csum_offset, 6);
	cr_assert_arr_eq(f.data, frame, len, "passed on untouched");
	tdev_fini(&a);
	tdev_fini(&plain);
	tdev_fini(&csum);
	uvh_net_switch_destroy(sw);
	guest_fini(&g);
}

/* ---- what a sender had no right to send ------------------------------------------- */

struct bad_case {
	const char *what;
	uint64_t sender;	/* features beyond BASE */
	uint8_t flags, gso_type;
	uint16_t gso_size, hdr_len, csum_start, csum_offset;
	enum uvh_net_drop_reason why;
	bool counted_at_receiver;
};

Test(net_offload, bad_headers_dropped_by_reason)
{
	static const struct bad_case cases[] = {
		{ "gso without HOST_TSO4", F(CSUM), 1, 1, 1448, 54, 34, 16,
		  UVH_NET_DROP_GSO_NOT_NEGOTIATED, false },
		{ "TCPV6 without HOST_TSO6", F(CSUM) | F(HOST_TSO4), 1, 4, 1448, 54, 34, 16,
		  UVH_NET_DROP_GSO_NOT_NEGOTIATED, false },
		{ "ECN without HOST_ECN", F(CSUM) | F(HOST_TSO4), 1, 0x81, 1448, 54, 34, 16,
		  UVH_NET_DROP_GSO_NOT_NEGOTIATED, false },
		{ "UFO (never offered)", F(CSUM) | F(HOST_TSO4), 1, 3, 1448, 42, 34, 6,
		  UVH_NET_DROP_GSO_NOT_NEGOTIATED, false },
		{ "NEEDS_CSUM without CSUM", 0, 1, 0, 0, 0, 34, 16,
		  UVH_NET_DROP_CSUM_NOT_NEGOTIATED, false },
		{ "gso_size 0", F(CSUM) | F(HOST_TSO4), 1, 1, 0, 54, 34, 16,
		  UVH_NET_DROP_BAD_GSO, false },
		{ "unknown gso_type", F(CSUM) | F(HOST_TSO4), 1, 7, 1448, 54, 34, 16,
		  UVH_NET_DROP_BAD_GSO, false },
		{ "TCPV4 without NEEDS_CSUM", F(CSUM) | F(HOST_TSO4), 0, 1, 1448, 54, 0, 0,
		  UVH_NET_DROP_BAD_GSO, false },
		{ "hdr_len past the frame", F(CSUM) | F(HOST_TSO4), 1, 1, 1448, 60000, 34, 16,
		  UVH_NET_DROP_BAD_GSO, false },
		{ "csum_start past the frame", F(CSUM), 1, 0, 0, 0, 4000, 16,
		  UVH_NET_DROP_BAD_CSUM, false },
		{ "csum_offset past the frame", F(CSUM), 1, 0, 0, 0, 34, 65000,
		  UVH_NET_DROP_BAD_CSUM, false },
		{ "csum field's last byte past the frame", F(CSUM), 1, 0, 0, 0, 3000, 13,
		  UVH_NET_DROP_BAD_CSUM, false },
		{ "TCPV4 on a UDP frame", F(CSUM) | F(HOST_TSO4), 1, 1, 1000, 42, 34, 6,
		  UVH_NET_DROP_BAD_GSO, true },
		{ "TCPV6 on an IPv4 frame", F(CSUM) | F(HOST_TSO6), 1, 4, 1000, 54, 34, 16,
		  UVH_NET_DROP_BAD_GSO, true },
		{ "more than 512 segments", F(CSUM) | F(HOST_TSO4), 1, 1, 4, 54, 34, 16,
		  UVH_NET_DROP_BAD_GSO, true },
	};
	struct uvh_net_opts o = { .type = UVH_NET_PORT_LOOPBACK };
	static uint8_t frame[4000];
	static struct rxframe f;
	struct uvh_virtio_net_hdr h, th;
	const struct tso t = { .payload = 2946, .mss = 1000, .tcpflags = 0x18 };
	struct uvh_net_stats st;
	struct guest g;
	unsigned int i, w;
	uint64_t sum;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct bad_case *bc = &cases[i];
		struct tdev a;
		uint32_t len;

		guest_init(&g);
		tdev_init(&a, &g, &o, BASE | bc->sender);
		post_rx(&a, 0, 8, 2048);
		if (bc->csum_offset == 6)
			len = make_udp(frame, 2958, &th);
		else
			len = make_tso(frame, &t, mac_x, mac_a, &th);
		cr_assert_eq(len, 3000, "%s", bc->what);
		memset(&h, 0, sizeof(h));
		h.flags = bc->flags;
		h.gso_type = bc->gso_type;
		h.gso_size = bc->gso_size;
		h.hdr_len = bc->hdr_len;
		h.csum_start = bc->csum_start;
		h.csum_offset = bc->csum_offset;
		send_and_process(&a, &h, frame, len);
		cr_assert_not(recv_frame(&a, 0, &f), "%s: delivered", bc->what);
		uvh_net_get_stats(a.dev, &st);
		cr_assert_eq(st.drops_by_reason[bc->why], 1, "%s: reason %s counted %llu", bc->what,
			     uvh_net_drop_reason_name(bc->why),
			     (unsigned long long)st.drops_by_reason[bc->why]);
		cr_assert_eq(bc->counted_at_receiver ? st.tx_drops : st.rx_drops, 1, "%s",
			     bc->what);
		for (w = 0, sum = 0; w < UVH_NET_DROP_REASONS; w++)
			sum += st.drops_by_reason[w];
		cr_assert_eq(sum, st.rx_drops + st.tx_drops, "%s: one reason per drop", bc->what);
		tdev_fini(&a);
		guest_fini(&g);
	}
}

/* ---- the receiver's MTU, and the features' dependencies ----------------------------- */

Test(net_offload, frame_over_receiver_mtu_dropped)
{
	struct uvh_net_opts o = { .type = UVH_NET_PORT_LOOPBACK, .mtu = 1500 };
	static uint8_t frame[9000];
	static struct rxframe f;
	struct uvh_net_stats st;
	const struct tso t = { .payload = 9000, .mss = 1600, .tcpflags = 0x18 };
	static uint8_t big[10000];
	struct uvh_virtio_net_hdr h;
	struct guest g;
	struct tdev a;

	guest_init(&g);
	tdev_init(&a, &g, &o, SENDER | F(MTU));
	post_rx(&a, 0, 32, 2048);
	memset(frame, 0x11, sizeof(frame));
	memcpy(frame, mac_x, 6);
	send_frame(&a, 1, frame, 1518);		/* a VLAN-tagged full frame: fits */
	send_frame(&a, 1, frame, 1519);
	send_frame(&a, 1, frame, 9000);
	uvh_vq_driver_publish(&a.rings[1].drv);
	cr_assert_eq(uvh_net_queue_process(a.dev, 1), 3);
	cr_assert_eq(reap_tx(&a, 1), 3);
	cr_assert(recv_frame(&a, 0, &f));
	cr_assert_eq(f.len, 1518);
	cr_assert_not(recv_frame(&a, 0, &f));
	/* an MSS the receiver's MTU cannot carry: nothing is segmented */
	send_and_process(&a, &h, big, make_tso(big, &t, mac_x, mac_a, &h));
	cr_assert_not(recv_frame(&a, 0, &f));
	uvh_net_get_stats(a.dev, &st);
	cr_assert_eq(st.drops_by_reason[UVH_NET_DROP_OVERSIZE], 3);
	cr_assert_eq(st.tx_drops, 3);
	tdev_fini(&a);

	/* without MTU negotiated the same 9000 bytes go through */
	tdev_init(&a, &g, &o, SENDER);
	post_rx(&a, 0, 8, 2048);
	send_and_process(&a, &(struct uvh_virtio_net_hdr){ 0 }, frame, 9000);
	cr_assert(recv_frame(&a, 0, &f));
	cr_assert_eq(f.len, 9000);
	tdev_fini(&a);
	guest_fini(&g);
}

Test(net_offload, feature_dependencies_enforced)
{
	struct uvh_net_opts o = { .type = UVH_NET_PORT_LOOPBACK };
	struct uvh_net_dev *dev = uvh_net_create(&o);
	uint64_t off = uvh_net_features(dev);

	cr_assert_not_null(dev);
	cr_assert(off & F(CSUM) && off & F(GUEST_CSUM) && off & F(HOST_TSO4) &&
		  off & F(GUEST_TSO6) && off & F(GUEST_ECN));
	cr_assert_not(off & (F(GUEST_UFO) | F(HOST_UFO)), "UFO is not offered");
	cr_assert_eq(uvh_net_set_features(dev, BASE | F(GUEST_TSO4)), -EINVAL);
	cr_assert_eq(uvh_net_set_features(dev, BASE | F(HOST_TSO6)), -EINVAL);
	cr_assert_eq(uvh_net_set_features(dev, BASE | F(GUEST_CSUM) | F(GUEST_ECN)), -EINVAL);
	cr_assert_eq(uvh_net_set_features(dev, BASE | F(CSUM) | F(HOST_ECN)), -EINVAL);
	cr_assert_eq(uvh_net_set_features(dev, TSO_RX | F(GUEST_ECN)), 0);
	cr_assert_eq(uvh_net_set_features(dev, SENDER), 0);
	uvh_net_destroy(dev);
}

/* ---- a real tap: 64 KiB segments from the kernel ----------------------------------- */

/*
 * The host's stack hands the tap a TSO frame (an AF_PACKET socket with
 * PACKET_VNET_HDR sends it with its GSO header). A guest with GUEST_TSO4
 * gets it whole, GSO header and all, across merged 4 KiB buffers; a guest
 * without gets the kernel's own segments (TUNSETOFFLOAD told it not to
 * hand over GSO frames), each at most an MTU. The other way, the guest's
 * TSO frame (HOST_TSO4) reaches the host's stack whole.
 */
static void tap_gso_case(bool guest_tso)
{
	struct uvh_net_opts o = { .type = UVH_NET_PORT_TAP, .tap_name = "uvhtso%d" };
	/* 60,054 bytes: 15 buffers of 4 KiB, 42 segments */
	const struct tso t = { .payload = 60000, .mss = 1448, .tcpflags = 0x18 };
	uint64_t features = BASE | F(GUEST_CSUM) | F(CSUM) | F(HOST_TSO4) |
			    (guest_tso ? F(GUEST_TSO4) : 0);
	static uint8_t frame[70000];
	static uint8_t pkt[70000 + UVH_NET_HDR_LEN];
	static struct rxframe f;
	struct uvh_virtio_net_hdr h;
	struct sockaddr_ll sll;
	struct uvh_net_dev *probe;
	struct guest g;
	struct tdev a;
	uint32_t len, got = 0, frames = 0, i;
	int ps, one = 1;

	probe = uvh_net_create(&o);
	if (!probe) {
		cr_skip_test("no usable tap: %s", strerror(errno));
		return;
	}
	uvh_net_destroy(probe);
	ps = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(0x0800));
	if (ps < 0 || setsockopt(ps, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one))) {
		cr_skip_test("no AF_PACKET with PACKET_VNET_HDR: %s", strerror(errno));
		return;
	}
	guest_init(&g);
	tdev_init(&a, &g, &o, features);
	cr_assert_eq(!!(a.features & F(GUEST_TSO4)), guest_tso, "the tap offers GUEST_TSO4");
	cr_assert_eq(t_tap_up(uvh_net_tap_name(a.dev)), 0);
	memset(&sll, 0, sizeof(sll));
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(0x0800);
	sll.sll_ifindex = (int)if_nametoindex(uvh_net_tap_name(a.dev));
	cr_assert_gt(sll.sll_ifindex, 0);
	cr_assert_eq(bind(ps, (struct sockaddr *)&sll, sizeof(sll)), 0);
	post_rx(&a, 0, 64, 4096);
	uvh_net_queue_process(a.dev, 0);	/* reads posted */

	len = make_tso(frame, &t, mac_a, mac_x, &h);
	/* the packet socket takes the 10-byte struct virtio_net_hdr */
	memcpy(pkt, &h, 10);
	memcpy(pkt + 10, frame, len);
	cr_assert_eq(sendto(ps, pkt, 10 + len, 0, (struct sockaddr *)&sll, sizeof(sll)),
		     (ssize_t)(10 + len), "send: %s", strerror(errno));
	for (i = 0; i < 400 && got < t.payload; i++) {
		uvh_net_queue_process(a.dev, 0);
		while (recv_frame(&a, 0, &f)) {
			if (f.len < 54 || f.data[12] != 0x08)
				continue;	/* not ours */
			frames++;
			if (guest_tso) {
				cr_assert_eq(f.len, len, "whole: %u bytes", f.len);
				cr_assert_eq(f.hdr.gso_type, UVH_VIRTIO_NET_HDR_GSO_TCPV4);
				cr_assert_eq(f.hdr.gso_size, 1448);
				cr_assert(f.hdr.flags & UVH_VIRTIO_NET_HDR_F_NEEDS_CSUM);
				cr_assert_gt(f.hdr.num_buffers, 1);
				cr_assert_arr_eq(f.data, frame, 34, "headers up to TCP");
				cr_assert_arr_eq(f.data + 54, frame + 54, t.payload);
			} else {
				cr_assert_eq(f.hdr.gso_type, 0);
				cr_assert_leq(f.len, 1514, "segment of %u bytes", f.len);
				cr_assert_arr_eq(f.data + 54, frame + 54 + got, f.len - 54);
			}
			got += f.len - 54;
		}
		if (got < t.payload)
			usleep(5000);
	}
	cr_assert_eq(got, t.payload, "%u of %u payload bytes in %u frames", got, t.payload,
		     frames);
	cr_assert_eq(frames, guest_tso ? 1u : (t.payload + 1447) / 1448);

	/* guest -> host: the guest's TSO frame reaches the stack whole (the
	 * packet socket sees it with its GSO header) */
	frame[0] = 0x02;	/* another frame: a different first byte */
	send_frame_hdr(&a, 1, &h, frame, len);
	uvh_vq_driver_publish(&a.rings[1].drv);
	cr_assert_eq(uvh_net_queue_process(a.dev, 1), 1);
	for (i = 0, got = 0; i < 100 && !got; i++) {
		ssize_t n = recv(ps, pkt, sizeof(pkt), MSG_DONTWAIT);

		if (n == (ssize_t)(10 + len) && !memcmp(pkt + 10, frame, len)) {
			memcpy(&h, pkt, 10);
			cr_assert_eq(h.gso_type, UVH_VIRTIO_NET_HDR_GSO_TCPV4);
			cr_assert_eq(h.gso_size, 1448);
			got = 1;
		} else if (n < 0) {
			usleep(5000);
		}
	}
	cr_assert(got, "the guest's TSO frame did not reach the host whole");
	close(ps);
	tdev_fini(&a);
	guest_fini(&g);
}

Test(net_offload, tap_hands_guest_tso_frames_whole) { tap_gso_case(true); }
Test(net_offload, tap_segments_for_a_guest_without_tso) { tap_gso_case(false); }

/*
 * With GUEST_TSO a read needs buffers for 64 KiB: a guest's whole ring is
 * soon held by the posted reads, and Linux reposts buffers only once half
 * its ring is used. Small frames, one at a time, must keep coming: a read
 * that ends keeps its unused buffers and is posted again (here the guest
 * never reposts at all).
 */
Test(net_offload, tap_reads_stay_posted_when_the_ring_runs_dry)
{
	struct uvh_net_opts o = { .type = UVH_NET_PORT_TAP, .tap_name = "uvhdry%d" };
	uint64_t features = BASE | F(GUEST_CSUM) | F(CSUM) | F(GUEST_TSO4);
	static struct rxframe f;
	uint8_t frame[100];
	struct sockaddr_ll sll;
	struct uvh_net_dev *probe;
	struct guest g;
	struct tdev a;
	int ps, i, k;

	probe = uvh_net_create(&o);
	if (!probe) {
		cr_skip_test("no usable tap: %s", strerror(errno));
		return;
	}
	uvh_net_destroy(probe);
	ps = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(0x88b5));
	if (ps < 0) {
		cr_skip_test("no AF_PACKET: %s", strerror(errno));
		return;
	}
	guest_init(&g);
	tdev_init(&a, &g, &o, features);
	cr_assert_eq(t_tap_up(uvh_net_tap_name(a.dev)), 0);
	memset(&sll, 0, sizeof(sll));
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(0x88b5);
	sll.sll_ifindex = (int)if_nametoindex(uvh_net_tap_name(a.dev));
	post_rx(&a, 0, 256, 1536);	/* the ring's worth: 5 reads of 43 and a short one */
	uvh_net_queue_process(a.dev, 0);
	memcpy(frame, mac_a, 6);
	memcpy(frame + 6, mac_x, 6);
	frame[12] = 0x88;
	frame[13] = 0xb5;
	for (k = 0; k < 40; k++) {
		bool seen = false;

		frame[14] = (uint8_t)k;
		cr_assert_eq(sendto(ps, frame, sizeof(frame), 0, (struct sockaddr *)&sll,
				    sizeof(sll)), (ssize_t)sizeof(frame));
		/* an engine runs the ring when the read ends, not on a timer:
		 * a few bursts must do (20 ms each for the kernel to deliver) */
		for (i = 0; i < 4 && !seen; i++) {
			usleep(20000);
			uvh_net_queue_process(a.dev, 0);
			while (recv_frame(&a, 0, &f))
				if (f.len == sizeof(frame) && f.data[12] == 0x88 && f.data[14] == k)
					seen = true;
		}
		cr_assert(seen, "frame %d of 40 did not come in 4 bursts (no read posted)", k);
	}
	close(ps);
	tdev_fini(&a);
	guest_fini(&g);
}
