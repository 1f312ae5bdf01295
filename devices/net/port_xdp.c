/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the AF_XDP port. Queue pair i of the guest is bound to queue i of
 * a network interface through one AF_XDP socket with its own UMEM: our XDP
 * program (xdp_sock.c; libxdp's default one when the interface has a
 * program already) redirects the queue's frames to the socket, and the
 * socket's TX ring sends the guest's frames on the wire, bypassing the
 * kernel's stack both ways. With ours, a jumbo frame comes and goes in
 * several UMEM frames (XDP multi-buffer): the guest's MTU is the wire's.
 *
 * The UMEM is not guest memory, so every frame is copied once: wire → UMEM
 * → guest RX buffers (net_rx_put), guest TX buffers → UMEM → wire. Each
 * socket's UMEM is split in two halves with one owner each, so nothing is
 * shared between the two rings of a pair:
 *   - RX half: the guest RX ring's engine. Its frames live in the fill
 *     ring, the kernel, or the socket's RX ring; a frame read is handed
 *     back to the fill ring in the same burst.
 *   - TX half: the guest TX ring's engine. A stack of free frames; a frame
 *     sent comes back through the completion ring.
 * (Both rings of a pair are served by one engine anyway; the split keeps
 * that an accident, not a requirement.)
 *
 * Waking: the socket's fd is the RX ring's engine-queue wake_fd, polled in
 * the engine's io_uring: a sleeping engine wakes when frames arrive as it
 * does on a kick. A guest with no RX buffers leaves the frames in the
 * socket's RX ring (the kernel drops once it is full, counted); the ring is
 * then not passive, so the guest's kick when it posts buffers wakes us.
 * TX back-pressure: no free UMEM frame or TX slot leaves the guest's chains
 * in its ring (tx_room 0) until completions come back.
 *
 * No offloads: the wire wants whole frames with their checksums, and the
 * kernel hands us whole frames (no GSO metadata on an XDP frame).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"
#include "net_internal.h"
#include "xdp_sock.h"

#define XDP_STATS_EVERY	1024u	/* RX bursts between reads of the kernel's drop counters */

/* The port's own state (dev->port_priv). */
struct xdp_port {
	char iface[16];
	unsigned int ifindex;
	uint32_t max_tx;		/* biggest frame the wire takes: MTU + 18 */
	char mode[112];			/* what the kernel gave, for uvh_net_xdp_mode */
	unsigned int bursts[UVH_NET_MAX_PAIRS];	/* RX bursts per pair (stats reads) */
	struct xdp_iface prog;		/* the interface's XDP program */
	struct xdp_sock socks[];	/* one per queue pair */
};

static inline struct xdp_port *xdp_of(const struct uvh_net_dev *dev)
{
	return dev->port_priv;
}

static void xdp_close(struct uvh_net_dev *dev);

static int xdp_open(struct uvh_net_dev *dev, const struct uvh_net_opts *opts)
{
	struct xdp_port *x;
	unsigned int i, frags;
	int err, mtu;
	uint32_t cap;
	size_t l;

	if (!opts->iface || !*opts->iface || strlen(opts->iface) >= sizeof(x->iface)) {
		UVH_ERR("%s: xdp mode needs an interface name", dev->name);
		return -EINVAL;
	}
	x = calloc(1, sizeof(*x) + dev->max_pairs * sizeof(x->socks[0]));
	if (!x)
		return -ENOMEM;
	for (i = 0; i < dev->max_pairs; i++)
		x->socks[i].fd = -1;
	x->prog.prog_fd = x->prog.map_fd = -1;	/* none yet: xdp_close closes nothing */
	snprintf(x->iface, sizeof(x->iface), "%s", opts->iface);
	dev->port_priv = x;
	if (xdp_iface(x->iface, &x->ifindex, &mtu)) {
		UVH_ERR("%s: no interface %s", dev->name, x->iface);
		err = -ENODEV;
		goto fail;
	}
	xdp_sock_quiet_libs();
	err = xdp_iface_open(&x->prog, dev->name, x->iface, dev->max_pairs, true);
	if (err)
		goto fail;
	for (i = 0; i < dev->max_pairs; i++) {
		err = xdp_sock_open(&x->socks[i], dev->name, x->iface, i, &x->prog);
		if (err)
			goto fail;
	}
	/* the guest's MTU: the wire's, and what a packet's UMEM frames hold
	 * (one without multi-buffer) */
	frags = x->prog.frags ? XDP_MAX_FRAGS - 1 : 1;
	cap = (uint32_t)mtu < frags * XDP_RX_MAX - 18u ? (uint32_t)mtu : frags * XDP_RX_MAX - 18u;
	if (cap > UVH_NET_MAX_FRAME - 14u)
		cap = UVH_NET_MAX_FRAME - 14u;
	if (dev->cfg.mtu > cap) {
		UVH_WARN("%s: MTU capped to %u (%s: MTU %d; %s)", dev->name, cap, x->iface, mtu,
			 x->prog.frags ? "the most frags a packet has" :
			 "one 4 KiB UMEM frame per packet: no XDP multi-buffer with libxdp's program");
		dev->cfg.mtu = (uint16_t)cap;
	} else if (x->prog.frags && !opts->mtu && (uint32_t)mtu > dev->cfg.mtu) {
		dev->cfg.mtu = (uint16_t)(mtu < (int)cap ? (uint32_t)mtu : cap);	/* jumbo */
	}
	/* the wire's MTU, and what a packet's UMEM frames hold (a 64 KiB MTU is
	 * not refused by the kernel's XDP check on every driver) */
	x->max_tx = (uint32_t)mtu + 18u;
	if (x->max_tx > frags * XDP_FRAME)
		x->max_tx = frags * XDP_FRAME;
	/* TX: as many UMEM frames as the wire's biggest frame takes */
	for (i = 0; i < dev->max_pairs; i++)
		x->socks[i].tx_frags = x->prog.frags ? (x->max_tx + XDP_FRAME - 1) / XDP_FRAME : 1;
	xdp_sock_describe(&x->socks[0], x->ifindex, x->mode, sizeof(x->mode));
	l = strlen(x->mode);
	snprintf(x->mode + l, sizeof(x->mode) - l, ", %s, MTU %u",
		 x->prog.frags ? "multi-buffer" : "one UMEM frame per packet", dev->cfg.mtu);
	UVH_INFO("%s: AF_XDP on %s, %u queue%s: %s", dev->name, x->iface, dev->max_pairs,
		 dev->max_pairs > 1 ? "s" : "", x->mode);
	return 0;
fail:
	xdp_close(dev);
	return err;
}

static void xdp_close(struct uvh_net_dev *dev)
{
	struct xdp_port *x = xdp_of(dev);

	if (!x)
		return;
	/* deleting the interface's last socket detaches libxdp's program; ours
	 * goes after the sockets */
	for (unsigned int i = 0; i < dev->max_pairs; i++)
		xdp_sock_close(&x->socks[i]);
	xdp_iface_close(&x->prog);
	free(x);
	dev->port_priv = NULL;
}

const char *uvh_net_xdp_mode(const struct uvh_net_dev *dev)
{
	return dev->port_ops == &net_port_xdp && xdp_of(dev) ? xdp_of(dev)->mode : NULL;
}

static inline struct xdp_sock *sock_of(const struct net_ring *r)
{
	return &xdp_of(r->dev)->socks[r->pair];
}

/* Frames the kernel dropped on this socket before we read them. */
static void rx_kernel_drops(struct net_ring *r)
{
	uint64_t d = xdp_sock_rx_kernel_drops(sock_of(r));

	if (d) {
		net_drop(r, UVH_NET_DROP_WIRE_QUEUE, d);
		if (!(atomic_load_explicit(&r->dev->why_logged, memory_order_relaxed) &
		      (1u << UVH_NET_DROP_WIRE_QUEUE)))
			net_drop_log(r->dev, UVH_NET_DROP_WIRE_QUEUE);
	}
}

static int xdp_start(struct net_ring *r)
{
	uint64_t stale;

	if (!r->is_rx)
		return 0;
	rx_kernel_drops(r);
	/* Frames that arrived while no guest ring took them (before this
	 * session, or the previous one's tail) are dropped, not handed to the
	 * new guest: a guest starting its ring wants what arrives from now on. */
	stale = xdp_sock_rx_flush(sock_of(r));
	if (stale)
		net_drop(r, UVH_NET_DROP_RING_OFF, stale);
	/* frames arriving wake the RX ring's engine (engine.h: wake_fd) */
	if (r->eq)
		r->eq->wake_fd = sock_of(r)->fd;
	return 0;
}

/* Wire → guest: one burst from the socket's RX ring into the guest's RX ring. */
static unsigned int xdp_rx_burst(struct net_ring *r)
{
	struct xdp_sock *s = sock_of(r);
	unsigned int n, i, done = 0;

	if (++xdp_of(r->dev)->bursts[r->pair] % XDP_STATS_EVERY == 0)
		rx_kernel_drops(r);
	if (!r->enabled)
		return 0;	/* frames wait in the socket (dropped there once it is full) */
	n = xdp_sock_rx_begin(s, UVH_NET_BURST);
	if (!n) {
		/* nothing from the wire: the guest's buffers are no work, the
		 * socket is what we wait on */
		if (r->eq)
			r->eq->passive = true;
		return 0;
	}
	net_rx_begin(r, n, r->engine);
	for (i = 0; i < n; i++) {
		struct iovec v[XDP_MAX_FRAGS];
		uint32_t len;
		unsigned int nv = xdp_sock_rx_packet(s, i, v, &len);

		if (!nv) {
			net_drop(r, UVH_NET_DROP_PORT, 1);
			done++;
			continue;
		}
		/* no buffer for it: it waits in the socket for the guest's next ones */
		if (!net_rx_room(r))
			break;
		if (!net_rx_put(r, NULL, v, nv, 0, len) && r->rx->dry) {
			/* merging ran out of chains: back-pressure, not a drop */
			r->rx->dr--;
			break;
		}
		done++;
	}
	xdp_sock_rx_end(s, done);
	net_rx_end(r);
	/* frames left behind wait for the guest's buffers: its kicks are work,
	 * not the socket (still readable) */
	if (r->eq)
		r->eq->passive = done == n;
	return done;
}

static unsigned int xdp_tx_room(struct net_ring *r)
{
	return xdp_sock_tx_room(sock_of(r), UVH_NET_BURST);
}

/* Guest → wire: copy each frame into a free UMEM frame of the TX half. */
static void xdp_tx_burst(struct net_ring *r, unsigned int n)
{
	struct uvh_net_dev *dev = r->dev;
	struct xdp_sock *s = sock_of(r);
	uint32_t max = xdp_of(dev)->max_tx;

	for (unsigned int i = 0; i < n; i++) {
		const struct uvh_vq_chain *c = &r->tch[i];

		if (!r->tlen[i])
			continue;
		if (r->tlen[i] > max) {
			r->tlen[i] = 0;		/* bigger than the wire takes */
			net_why(r, UVH_NET_DROP_OVERSIZE);
		} else if (!xdp_sock_tx_put(s, c->iov, c->nout, dev->hdr_len, r->tlen[i])) {
			/* the link is down (tx_room made sure of the room otherwise) */
			r->tlen[i] = 0;
			net_why(r, UVH_NET_DROP_PORT);
		}
	}
	xdp_sock_tx_flush(s);
}

static void xdp_stop(struct net_ring *r)
{
	/* nothing of the guest's is held: frames were copied both ways */
	if (r->is_rx)
		rx_kernel_drops(r);
}

/*
 * No offloads (the wire wants whole frames with their checksums), IN_ORDER
 * kept (TX chains are completed at once, RX through net_rx).
 */
const struct net_port_ops net_port_xdp = {
	.name = "xdp",
	.open = xdp_open,
	.close = xdp_close,
	.start = xdp_start,
	.stop = xdp_stop,
	.tx_room = xdp_tx_room,
	.tx_burst = xdp_tx_burst,
	.rx_burst = xdp_rx_burst,
};
