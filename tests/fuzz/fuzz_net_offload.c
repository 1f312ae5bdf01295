/* SPDX-License-Identifier: MIT */
/*
 * fuzz_net_offload: a guest's TX frame, header and all, through a two-port
 * switch to another guest, with both sides' offload features from the
 * input: the header checks, pass-through, checksum completion and TSO
 * segmentation of devices/net/net_offload.c on hostile frames.
 *
 *   u8  sender features: CSUM, HOST_TSO4, HOST_TSO6, HOST_ECN (bits 0-3)
 *   u8  receiver features: GUEST_CSUM, GUEST_TSO4, GUEST_TSO6, GUEST_ECN,
 *       MTU, MRG_RXBUF (bits 0-5); a set the spec forbids is refused
 *   u8  the frame's pieces (TX buffers after the header: 1 + v % 16)
 *   u16 the receiver's MTU (68 + v % 9000)
 *   12  the virtio-net header
 *   the rest: the frame (at most 64 KiB + 18)
 *
 * Checked: the process survives (ASan: no byte outside a buffer), every
 * frame delivered fits the receiver's buffers and, without GUEST_TSO, its
 * MTU; every drop is counted under one reason.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "memory.h"
#include "net.h"
#include "util.h"
#include "virtq.h"

#define GPA_BASE	0x100000ull
#define AREA		(4u << 20)
#define RING		256u
#define RX_BUFS		128u
#define RX_BUF_LEN	2048u

static uint8_t *area;
static struct uvh_memory *mem;
static uint64_t next_gpa;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_quiet_logs();
	area = mmap(NULL, AREA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	mem = uvh_memory_new(1);
	if (area == MAP_FAILED || !mem || uvh_memory_add_host(mem, GPA_BASE, AREA, area))
		abort();
	return 0;
}

static uint64_t galloc(uint64_t len)
{
	uint64_t gpa = (next_gpa + 4095) & ~4095ull;

	if (gpa + len > GPA_BASE + AREA)
		abort();	/* the layout below fits by construction */
	next_gpa = gpa + len;
	return gpa;
}

struct port {
	struct uvh_net_dev *dev;
	struct uvh_vq_driver drv[2];
	struct uvh_vq vq[2];
};

static bool port_up(struct port *p, struct uvh_net_switch *sw, uint64_t features, uint16_t mtu)
{
	struct uvh_net_opts o = { .type = UVH_NET_PORT_SWITCH, .sw = sw, .mtu = mtu };

	p->dev = uvh_net_create(&o);
	if (!p->dev)
		abort();
	if (uvh_net_set_features(p->dev, features))
		return false;
	for (unsigned int i = 0; i < 2; i++) {
		uint64_t gpa = galloc(uvh_vq_driver_area_bytes(RING, false));
		struct uvh_net_binding b = { .vq = &p->vq[i], .kick_fd = -1, .call_fd = -1,
					     .enabled = true };
		struct uvh_vq_config cfg;

		if (uvh_vq_driver_init(&p->drv[i], RING, false, false,
				       area + (gpa - GPA_BASE), gpa))
			abort();
		uvh_vq_driver_config(&p->drv[i], &cfg);
		cfg.in_order = true;
		if (uvh_vq_init(&p->vq[i], &cfg, mem) || uvh_net_queue_start(p->dev, i, &b))
			abort();
	}
	return true;
}

static void port_down(struct port *p, bool started)
{
	for (unsigned int i = 0; started && i < 2; i++) {
		uvh_net_queue_stop(p->dev, i);
		uvh_vq_driver_free(&p->drv[i]);
	}
	uvh_net_destroy(p->dev);
}

#define F(x)	UVH_BIT(UVH_VIRTIO_NET_F_##x)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint64_t tx_bits[] = { F(CSUM), F(HOST_TSO4), F(HOST_TSO6), F(HOST_ECN) };
	static const uint64_t rx_bits[] = { F(GUEST_CSUM), F(GUEST_TSO4), F(GUEST_TSO6),
					    F(GUEST_ECN), F(MTU), F(MRG_RXBUF) };
	const uint64_t base = UVH_BIT(UVH_VIRTIO_F_VERSION_1) | UVH_BIT(UVH_VIRTIO_F_IN_ORDER);
	struct fz in = { data, size };
	struct uvh_net_switch *sw = uvh_net_switch_create();
	uint64_t ftx = base, frx = base, gpa;
	uint8_t stx = fz_u8(&in), srx = fz_u8(&in), pieces = (uint8_t)(1 + fz_u8(&in) % 16);
	uint16_t mtu;
	uint8_t hdr[UVH_NET_HDR_LEN];
	struct uvh_vq_buf b[17];
	struct port tx, rx;
	struct uvh_net_stats st;
	bool tx_up, rx_up;
	size_t len, off = 0;
	unsigned int n = 1;

	if (!sw)
		abort();
	fz_take(&in, &mtu, 2);
	mtu = (uint16_t)(68 + mtu % 9000);
	fz_take(&in, hdr, sizeof(hdr));
	len = in.n < 65535u + 18u ? in.n : 65535u + 18u;
	for (unsigned int i = 0; i < 4; i++)
		ftx |= (stx >> i & 1) ? tx_bits[i] : 0;
	for (unsigned int i = 0; i < 6; i++)
		frx |= (srx >> i & 1) ? rx_bits[i] : 0;
	next_gpa = GPA_BASE;
	tx_up = port_up(&tx, sw, ftx, mtu);
	rx_up = port_up(&rx, sw, frx, mtu);
	if (!tx_up || !rx_up)
		goto out;	/* features the spec forbids: refused, nothing runs */

	for (unsigned int i = 0; i < RX_BUFS; i++) {
		struct uvh_vq_buf rb = { galloc(RX_BUF_LEN), RX_BUF_LEN };

		uvh_vq_driver_add(&rx.drv[0], &rb, 0, 1, (void *)(uintptr_t)rb.gpa);
	}
	uvh_vq_driver_publish(&rx.drv[0]);

	/* header, then the frame in pieces */
	b[0].gpa = galloc(sizeof(hdr));
	b[0].len = sizeof(hdr);
	memcpy(area + (b[0].gpa - GPA_BASE), hdr, sizeof(hdr));
	gpa = galloc(len + 1);
	memcpy(area + (gpa - GPA_BASE), in.p, len);
	for (unsigned int k = 0; k < pieces && off < len; k++) {
		size_t piece = k + 1 == pieces ? len - off : (len - off) / (pieces - k) + (k & 1);

		if (piece > len - off)
			piece = len - off;
		b[n].gpa = gpa + off;
		b[n].len = (uint32_t)piece;
		off += piece;
		n++;
	}
	if (uvh_vq_driver_add(&tx.drv[1], b, n, 0, (void *)1) == 0) {
		void *tok;
		uint32_t used;

		uvh_vq_driver_publish(&tx.drv[1]);
		uvh_net_queue_process(tx.dev, 1);
		while (uvh_vq_driver_get_used(&rx.drv[0], &tok, &used, 1) == 1) {
			struct uvh_virtio_net_hdr h;
			uint64_t frame;

			if (!used)
				continue;	/* a frame too big for one chain (no MRG_RXBUF) */
			if (used > RX_BUF_LEN || used < sizeof(h))
				abort();	/* more than the buffer holds, or no header */
			memcpy(&h, area + ((uintptr_t)tok - GPA_BASE), sizeof(h));
			frame = used;
			for (unsigned int k = 1; (frx & F(MRG_RXBUF)) && k < h.num_buffers; k++) {
				if (uvh_vq_driver_get_used(&rx.drv[0], &tok, &used, 1) != 1)
					abort();	/* num_buffers promised more */
				frame += used;
			}
			frame -= sizeof(h);
			if (frame > 65535u + 18u ||
			    (!h.gso_type && (frx & F(MTU)) && frame > mtu + 18u))
				abort();	/* over the receiver's MTU */
		}
	}
	uvh_net_get_stats(tx.dev, &st);
	{
		struct uvh_net_stats sr;
		uint64_t why = 0;

		uvh_net_get_stats(rx.dev, &sr);
		for (unsigned int w = 0; w < UVH_NET_DROP_REASONS; w++)
			why += st.drops_by_reason[w] + sr.drops_by_reason[w];
		if (why != st.rx_drops + st.tx_drops + sr.rx_drops + sr.tx_drops)
			abort();	/* a drop without its reason, or one counted twice */
	}
out:
	port_down(&tx, tx_up);
	port_down(&rx, rx_up);
	uvh_net_switch_destroy(sw);
	return 0;
}
