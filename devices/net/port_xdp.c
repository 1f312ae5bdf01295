/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the AF_XDP port. Queue pair i of the guest is bound to queue i of
 * a network interface through one AF_XDP socket with its own UMEM: libxdp's
 * default XDP program redirects the queue's frames to the socket, and the
 * socket's TX ring sends the guest's frames on the wire, bypassing the
 * kernel's stack both ways.
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
#include <linux/if_link.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/libxdp.h>
#include <xdp/xsk.h>

#include "log.h"
#include "util.h"
#include "net_internal.h"

#define XDP_FRAME	4096u		/* one UMEM frame (aligned mode: a power of two) */
#define XDP_HALF	2048u		/* frames per half (RX, TX) */
#define XDP_RING	2048u		/* every ring of the socket */
/* The kernel puts a received frame XDP_PACKET_HEADROOM into its UMEM frame. */
#define XDP_RX_MAX	(XDP_FRAME - XDP_PACKET_HEADROOM)
#define XDP_STATS_EVERY	1024u		/* RX bursts between reads of the kernel's drop counters */
#define XDP_DOWN_RETRY_NS 100000000ull	/* a link down: try the wire again every 100 ms */

/* One queue pair's socket. */
struct xdp_sock {
	struct xsk_umem *umem;
	struct xsk_socket *xsk;
	uint8_t *area;
	int fd;
	unsigned int queue;
	/* RX half: the RX ring's engine */
	struct xsk_ring_cons rx;
	struct xsk_ring_prod fill;
	uint64_t recycle[UVH_NET_BURST];
	unsigned int bursts;
	uint64_t kernel_drops;		/* the kernel's count at the last read */
	/* TX half: the TX ring's engine */
	struct xsk_ring_prod tx;
	struct xsk_ring_cons comp;
	uint64_t free[XDP_HALF];
	unsigned int nfree;
	bool kick_pending;		/* frames in the TX ring the kernel has not taken */
	bool down;			/* the last kick said the link is down or gone */
	uint64_t down_since;
};

/* The port's own state (dev->port_priv). */
struct xdp_port {
	char iface[IF_NAMESIZE];
	unsigned int ifindex;
	uint32_t max_tx;		/* biggest frame the wire takes: MTU + 18 */
	char mode[96];			/* what the kernel gave, for uvh_net_xdp_mode */
	struct xdp_sock socks[];	/* one per queue pair */
};

static inline struct xdp_port *xdp_of(const struct uvh_net_dev *dev)
{
	return dev->port_priv;
}

/* libbpf and libxdp print to stderr by default: through our logger instead,
 * at debug level (they are chatty about a missing bpffs, which is fine). */
static int lib_print(const char *fmt, va_list ap)
{
	char buf[256];

	vsnprintf(buf, sizeof(buf), fmt, ap);
	buf[strcspn(buf, "\n")] = 0;
	UVH_DEBUG("xdp: %s", buf);
	return 0;
}

static int lib_print_bpf(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	(void)level;
	return lib_print(fmt, ap);
}

static int lib_print_xdp(enum libxdp_print_level level, const char *fmt, va_list ap)
{
	(void)level;
	return lib_print(fmt, ap);
}

static int iface_mtu(const char *name)
{
	struct ifreq ifr;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), mtu = -1;

	if (fd < 0)
		return -1;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(fd, SIOCGIFMTU, &ifr) == 0)
		mtu = ifr.ifr_mtu;
	close(fd);
	return mtu;
}

static void sock_close(struct xdp_sock *s)
{
	/* deleting the last socket of the interface detaches libxdp's program */
	if (s->xsk)
		xsk_socket__delete(s->xsk);
	if (s->umem)
		xsk_umem__delete(s->umem);
	if (s->area)
		munmap(s->area, (size_t)2 * XDP_HALF * XDP_FRAME);
	s->xsk = NULL;
	s->umem = NULL;
	s->area = NULL;
}

/* Zero-copy first; copy mode when the driver has none (veth, most drivers). */
static int sock_open(struct uvh_net_dev *dev, struct xdp_port *x, struct xdp_sock *s,
		     unsigned int queue, bool *zero_copy)
{
	struct xsk_umem_config uc = {
		.fill_size = XDP_RING, .comp_size = XDP_RING,
		.frame_size = XDP_FRAME, .frame_headroom = 0,
	};
	struct xsk_socket_config sc = {
		.rx_size = XDP_RING, .tx_size = XDP_RING,
		.bind_flags = XDP_USE_NEED_WAKEUP | XDP_ZEROCOPY,
	};
	size_t size = (size_t)2 * XDP_HALF * XDP_FRAME;
	uint32_t idx;
	unsigned int i;
	int err;

	s->queue = queue;
	s->area = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (s->area == MAP_FAILED) {
		s->area = NULL;
		return -ENOMEM;
	}
	err = xsk_umem__create(&s->umem, s->area, size, &s->fill, &s->comp, &uc);
	if (err) {
		UVH_ERR("%s: %s: UMEM: %s", dev->name, x->iface, strerror(-err));
		return err;
	}
	err = xsk_socket__create(&s->xsk, x->iface, queue, s->umem, &s->rx, &s->tx, &sc);
	*zero_copy = !err;
	if (err) {
		UVH_DEBUG("%s: %s queue %u: no zero-copy (%s): copy mode", dev->name, x->iface,
			  queue, strerror(-err));
		sc.bind_flags = XDP_USE_NEED_WAKEUP | XDP_COPY;
		err = xsk_socket__create(&s->xsk, x->iface, queue, s->umem, &s->rx, &s->tx, &sc);
	}
	if (err) {
		s->xsk = NULL;
		UVH_ERR("%s: %s queue %u: AF_XDP socket: %s%s", dev->name, x->iface, queue,
			strerror(-err), err == -EINVAL ? " (has the interface that many queues?)" : "");
		return err;
	}
	s->fd = xsk_socket__fd(s->xsk);
	/* the RX half goes to the kernel at once: frames are taken from now on */
	if (xsk_ring_prod__reserve(&s->fill, XDP_HALF, &idx) != XDP_HALF)
		return -EIO;
	for (i = 0; i < XDP_HALF; i++)
		*xsk_ring_prod__fill_addr(&s->fill, idx + i) = (uint64_t)i * XDP_FRAME;
	xsk_ring_prod__submit(&s->fill, XDP_HALF);
	for (i = 0; i < XDP_HALF; i++)
		s->free[i] = (uint64_t)(XDP_HALF + i) * XDP_FRAME;
	s->nfree = XDP_HALF;
	return 0;
}

static void xdp_close(struct uvh_net_dev *dev);

static int xdp_open(struct uvh_net_dev *dev, const struct uvh_net_opts *opts)
{
	struct bpf_xdp_query_opts q = { .sz = sizeof(q) };
	struct xdp_port *x;
	struct xdp_options xo;
	socklen_t len = sizeof(xo);
	bool zero_copy = false;
	unsigned int i;
	int err, mtu;
	uint32_t cap;

	if (!opts->iface || !*opts->iface || strlen(opts->iface) >= IF_NAMESIZE) {
		UVH_ERR("%s: xdp mode needs an interface name", dev->name);
		return -EINVAL;
	}
	x = calloc(1, sizeof(*x) + dev->max_pairs * sizeof(x->socks[0]));
	if (!x)
		return -ENOMEM;
	snprintf(x->iface, sizeof(x->iface), "%s", opts->iface);
	dev->port_priv = x;
	x->ifindex = if_nametoindex(x->iface);
	mtu = iface_mtu(x->iface);
	if (!x->ifindex || mtu <= 0) {
		UVH_ERR("%s: no interface %s", dev->name, x->iface);
		err = -ENODEV;
		goto fail;
	}
	libbpf_set_print(lib_print_bpf);
	libxdp_set_print(lib_print_xdp);
	for (i = 0; i < dev->max_pairs; i++) {
		err = sock_open(dev, x, &x->socks[i], i, &zero_copy);
		if (err)
			goto fail;
	}
	/* the guest's MTU: the wire's, and what one UMEM frame holds */
	cap = (uint32_t)mtu < XDP_RX_MAX - 18u ? (uint32_t)mtu : XDP_RX_MAX - 18u;
	if (dev->cfg.mtu > cap) {
		UVH_WARN("%s: MTU capped to %u (%s: MTU %d; one %u-byte UMEM frame per packet, "
			 "no XDP multi-buffer)", dev->name, cap, x->iface, mtu, XDP_FRAME);
		dev->cfg.mtu = (uint16_t)cap;
	}
	x->max_tx = (uint32_t)mtu + 18u;
	if (bpf_xdp_query((int)x->ifindex, 0, &q))
		q.attach_mode = 0;
	if (getsockopt(x->socks[0].fd, SOL_XDP, XDP_OPTIONS, &xo, &len) == 0)
		zero_copy = xo.flags & XDP_OPTIONS_ZEROCOPY;
	snprintf(x->mode, sizeof(x->mode), "%s XDP, %s, need_wakeup, MTU %u",
		 q.attach_mode == XDP_ATTACHED_DRV ? "native" :
		 q.attach_mode == XDP_ATTACHED_SKB ? "generic (skb)" :
		 q.attach_mode == XDP_ATTACHED_HW ? "offloaded" :
		 q.attach_mode == XDP_ATTACHED_MULTI ? "multi-mode" : "unknown",
		 zero_copy ? "zero-copy" : "copy mode", dev->cfg.mtu);
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
	for (unsigned int i = 0; i < dev->max_pairs; i++)
		sock_close(&x->socks[i]);
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

static void rx_kernel_drops(struct net_ring *r, struct xdp_sock *s);

/*
 * Frames that arrived while no guest ring took them (before this session,
 * or the previous one's tail) are dropped, not handed to the new guest: a
 * guest starting its ring wants what arrives from now on, not a stale
 * queue it never asked for. Back to the fill ring, counted as ring-off.
 */
static void rx_flush_stale(struct net_ring *r, struct xdp_sock *s)
{
	uint32_t idx, fidx;
	unsigned int n, i, k;
	uint64_t dropped = 0;

	while ((n = xsk_ring_cons__peek(&s->rx, UVH_NET_BURST, &idx)) > 0) {
		for (i = k = 0; i < n; i++) {
			uint64_t a = xsk_umem__extract_addr(xsk_ring_cons__rx_desc(&s->rx, idx + i)->addr);

			if (a < (uint64_t)XDP_HALF * XDP_FRAME)
				s->recycle[k++] = a;
		}
		xsk_ring_cons__release(&s->rx, n);
		if (k && xsk_ring_prod__reserve(&s->fill, k, &fidx) == k) {
			for (i = 0; i < k; i++)
				*xsk_ring_prod__fill_addr(&s->fill, fidx + i) = s->recycle[i];
			xsk_ring_prod__submit(&s->fill, k);
		}
		dropped += n;
	}
	if (dropped)
		net_drop(r, UVH_NET_DROP_RING_OFF, dropped);
}

static int xdp_start(struct net_ring *r)
{
	if (!r->is_rx)
		return 0;
	rx_kernel_drops(r, sock_of(r));
	rx_flush_stale(r, sock_of(r));
	/* frames arriving wake the RX ring's engine (engine.h: wake_fd) */
	if (r->eq)
		r->eq->wake_fd = sock_of(r)->fd;
	return 0;
}

/* Frames the kernel dropped on this socket before we read them. */
static void rx_kernel_drops(struct net_ring *r, struct xdp_sock *s)
{
	struct xdp_statistics st;
	socklen_t len = sizeof(st);
	uint64_t now;

	if (getsockopt(s->fd, SOL_XDP, XDP_STATISTICS, &st, &len))
		return;
	now = st.rx_dropped + st.rx_ring_full;
	if (now > s->kernel_drops) {
		net_drop(r, UVH_NET_DROP_WIRE_QUEUE, now - s->kernel_drops);
		if (!(atomic_load_explicit(&r->dev->why_logged, memory_order_relaxed) &
		      (1u << UVH_NET_DROP_WIRE_QUEUE)))
			net_drop_log(r->dev, UVH_NET_DROP_WIRE_QUEUE);
	}
	s->kernel_drops = now;
}

/* Wire → guest: one burst from the socket's RX ring into the guest's RX ring. */
static unsigned int xdp_rx_burst(struct net_ring *r)
{
	struct xdp_sock *s = sock_of(r);
	uint32_t idx, fidx;
	unsigned int n, i, done = 0, nrec = 0;

	if (++s->bursts % XDP_STATS_EVERY == 0)
		rx_kernel_drops(r, s);
	if (!r->enabled)
		return 0;	/* frames wait in the socket (dropped there once it is full) */
	n = xsk_ring_cons__peek(&s->rx, UVH_NET_BURST, &idx);
	if (!n) {
		if (xsk_ring_prod__needs_wakeup(&s->fill))
			recvfrom(s->fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
		/* nothing from the wire: the guest's buffers are no work */
		r->eq->passive = true;
		return 0;
	}
	net_rx_begin(r, n, r->engine);
	for (i = 0; i < n; i++) {
		const struct xdp_desc *d = xsk_ring_cons__rx_desc(&s->rx, idx + i);
		uint64_t base = xsk_umem__extract_addr(d->addr);
		struct iovec v;

		/* the kernel wrote it, but it is ours to bound: inside the RX
		 * half (a frame outside it is not recycled: never twice in the
		 * fill ring) */
		if (base >= (uint64_t)XDP_HALF * XDP_FRAME ||
		    xsk_umem__extract_offset(d->addr) + d->len > XDP_FRAME) {
			net_drop(r, UVH_NET_DROP_PORT, 1);
			done++;
			continue;
		}
		/* no buffer for it: it waits in the socket for the guest's next ones */
		if (!net_rx_room(r))
			break;
		v.iov_base = s->area + d->addr;
		v.iov_len = d->len;
		if (!net_rx_put(r, NULL, &v, 1, 0, d->len) && r->rx->dry) {
			/* merging ran out of chains: back-pressure, not a drop */
			r->rx->dr--;
			break;
		}
		s->recycle[nrec++] = base;
		done++;
	}
	/* peek moved our cached position past all n: the frames left wait
	 * there for the next burst (without the cancel they would be skipped
	 * and their UMEM frames lost to the fill ring) */
	if (done < n)
		xsk_ring_cons__cancel(&s->rx, n - done);
	xsk_ring_cons__release(&s->rx, done);
	net_rx_end(r);
	/* the frames read go straight back to the kernel: the RX half's frames
	 * number the fill ring's size, so there is always room */
	if (nrec && xsk_ring_prod__reserve(&s->fill, nrec, &fidx) == nrec) {
		for (i = 0; i < nrec; i++)
			*xsk_ring_prod__fill_addr(&s->fill, fidx + i) = s->recycle[i];
		xsk_ring_prod__submit(&s->fill, nrec);
	}
	/* frames left behind wait for the guest's buffers: its kicks are work */
	r->eq->passive = done == n;
	return done;
}

/* Hand the TX ring to the kernel. In copy mode the kernel sends a batch per
 * call (EAGAIN: more to send), so call until it has taken them all. */
static void tx_kick(struct net_ring *r, struct xdp_sock *s)
{
	struct uvh_net_dev *dev = r->dev;
	int tries = 8;

	s->kick_pending = false;
	if (!xsk_ring_prod__needs_wakeup(&s->tx))
		return;
	while (sendto(s->fd, NULL, 0, MSG_DONTWAIT, NULL, 0) < 0) {
		if (errno == EAGAIN && --tries)
			continue;
		if (errno == EAGAIN || errno == EBUSY || errno == ENOBUFS) {
			s->kick_pending = true;	/* the driver is full: again next sweep */
		} else if (!s->down) {
			/* ENETDOWN: the link is down; ENXIO: the interface is gone */
			s->down = true;
			s->down_since = uvh_now_ns();
			UVH_WARN("%s: %s: %s: frames to the wire are dropped", dev->name,
				 xdp_of(dev)->iface, errno == ENXIO ? "the interface is gone" :
				 strerror(errno));
		}
		return;
	}
	if (s->down) {
		s->down = false;
		UVH_INFO("%s: %s: the wire takes frames again", dev->name, xdp_of(dev)->iface);
	}
}

/* Frames the kernel has sent come back free. */
static void tx_reap(struct xdp_sock *s)
{
	uint32_t idx;
	unsigned int n = xsk_ring_cons__peek(&s->comp, XDP_RING, &idx);

	for (unsigned int i = 0; i < n; i++) {
		uint64_t a = xsk_umem__extract_addr(*xsk_ring_cons__comp_addr(&s->comp, idx + i));

		/* only addresses of the TX half that are not free already */
		if (a >= (uint64_t)XDP_HALF * XDP_FRAME &&
		    a < (uint64_t)2 * XDP_HALF * XDP_FRAME && s->nfree < XDP_HALF)
			s->free[s->nfree++] = a;
	}
	if (n)
		xsk_ring_cons__release(&s->comp, n);
}

static unsigned int xdp_tx_room(struct net_ring *r)
{
	struct xdp_sock *s = sock_of(r);
	unsigned int room;

	tx_reap(s);
	if (s->down) {
		/* frames are dropped meanwhile; look at the wire now and then */
		if (uvh_now_ns() - s->down_since > XDP_DOWN_RETRY_NS) {
			s->down_since = uvh_now_ns();
			tx_kick(r, s);
		}
		return UVH_NET_BURST;
	}
	if (s->kick_pending)
		tx_kick(r, s);
	room = xsk_prod_nb_free(&s->tx, UVH_NET_BURST);
	if (room > s->nfree)
		room = s->nfree;
	if (room > UVH_NET_BURST)
		room = UVH_NET_BURST;
	if (!room)
		tx_kick(r, s);	/* completions come back once the kernel sends */
	return room;
}

/* Guest → wire: copy each frame into a free UMEM frame of the TX half. */
static void xdp_tx_burst(struct net_ring *r, unsigned int n)
{
	struct uvh_net_dev *dev = r->dev;
	struct xdp_sock *s = sock_of(r);
	/* the wire's MTU, and one UMEM frame (a 64 KiB MTU is not capped by the
	 * kernel's XDP check on every driver) */
	uint32_t max = xdp_of(dev)->max_tx < XDP_FRAME ? xdp_of(dev)->max_tx : XDP_FRAME, idx;
	unsigned int i, k = 0, want = 0;

	for (i = 0; i < n; i++) {
		if (r->tlen[i] > max) {
			r->tlen[i] = 0;		/* bigger than the wire takes */
			net_why(r, UVH_NET_DROP_OVERSIZE);
		}
		want += r->tlen[i] != 0;
	}
	if (!want)
		return;
	/* tx_room made sure of the TX slots and free frames (want <= n <= room) */
	if (s->down || want > s->nfree || xsk_ring_prod__reserve(&s->tx, want, &idx) != want) {
		for (i = 0; i < n; i++)
			if (r->tlen[i]) {
				r->tlen[i] = 0;
				net_why(r, UVH_NET_DROP_PORT);	/* the link is down */
			}
		return;
	}
	for (i = 0; i < n; i++) {
		const struct uvh_vq_chain *c = &r->tch[i];
		struct xdp_desc *d;
		uint64_t a;

		if (!r->tlen[i])
			continue;
		a = s->free[--s->nfree];
		net_iov_read(c->iov, c->nout, dev->hdr_len, s->area + a, r->tlen[i]);
		d = xsk_ring_prod__tx_desc(&s->tx, idx + k++);
		d->addr = a;
		d->len = r->tlen[i];
		d->options = 0;
	}
	xsk_ring_prod__submit(&s->tx, want);
	tx_kick(r, s);
}

static void xdp_stop(struct net_ring *r)
{
	/* nothing of the guest's is held: frames were copied both ways */
	if (r->is_rx)
		rx_kernel_drops(r, sock_of(r));
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
