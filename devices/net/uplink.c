/* SPDX-License-Identifier: MIT */
/*
 * uvhost: a switch's uplink, the port through which the guests on one
 * uvhost-net switch reach a wire: an AF_XDP socket per queue on a network
 * interface ("xdp:eth1", with libxdp) or a tap ("tap:tap0", the kernel's
 * stack, e.g. in a bridge). One struct net_uplink_ops per kind.
 *
 * An uplink has no guest rings, so no engine serves it of its own. Its
 * queue q is used from the switch's ports' engines:
 *   - to the wire: a guest TX burst that has frames for it puts them under
 *     the queue's tx lock (spun on, held for one burst of copies: as for an
 *     RX ring, see port_switch.c);
 *   - from the wire: the RX rings of pair q of every port poll it in their
 *     bursts under its rx lock, taken with a try (one poller at a time,
 *     nobody waits); its fd is those rings' engine-queue wake_fd, so a
 *     sleeping engine wakes when frames arrive.
 * What each lock guards is that direction's half of the queue: for xdp the
 * UMEM half and its two rings (xdp_sock.h), for a tap its read buffers.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "net_internal.h"
#ifdef UVH_HAVE_XDP
#include "xdp_sock.h"
#endif

#define TAP_READS	32u		/* frames read per poll */
#define TAP_BUF		(UVH_NET_HDR_LEN + 9216u)	/* a jumbo frame and its header */
#define TAP_IOV		64u

struct net_uplink;

/* One kind of uplink. Queue ops run under the queue's lock of their direction. */
struct net_uplink_ops {
	const char *name;
	/** virtio features the switch's ports must not offer (offloads the
	 *  uplink cannot take from a guest) */
	uint64_t features_drop;
	int (*open)(struct net_uplink *u);
	void (*close)(struct net_uplink *u);
	int (*wake_fd)(struct net_uplink *u, unsigned int q);
	/** up to @max frames from the wire into @v (iov_len 0: a bad one) */
	unsigned int (*rx_begin)(struct net_uplink *u, unsigned int q, struct iovec *v,
				 unsigned int max);
	void (*rx_end)(struct net_uplink *u, unsigned int q, unsigned int n);
	/** before a burst's frames (may be NULL): reclaim what the kernel sent */
	void (*tx_begin)(struct net_uplink *u, unsigned int q);
	/** one frame to the wire, @hdr its offloads (NULL: none); false: dropped */
	bool (*tx_put)(struct net_uplink *u, unsigned int q, const struct uvh_virtio_net_hdr *hdr,
		       const struct iovec *iov, unsigned int n, size_t skip, uint32_t len);
	void (*tx_flush)(struct net_uplink *u, unsigned int q);
};

struct uplink_tapq {
	int fd;
	unsigned int nread;
	uint8_t (*buf)[TAP_BUF];	/* TAP_READS frames as read, header first */
};

struct uplink_queue {
	atomic_int rx_lock, tx_lock;
	unsigned int rx_polls;		/* under rx_lock: polls since the kernel's drops were read */
	union {
#ifdef UVH_HAVE_XDP
		struct xdp_sock xs;
#endif
		struct uplink_tapq tap;
	};
};

struct net_uplink {
	const struct net_uplink_ops *ops;
#ifdef UVH_HAVE_XDP
	struct xdp_iface prog;		/* xdp: the interface's XDP program */
#endif
	char iface[IFNAMSIZ];
	char info[128];
	unsigned int nq;
	uint32_t max_tx;			/* the wire's MTU + 18 */
	/* counters: relaxed, several writers (each under its queue's lock) */
	_Atomic uint64_t rx_packets, rx_bytes, tx_packets, tx_bytes, tx_drops, rx_drops;
	struct uplink_queue q[];
};

static inline void add(_Atomic uint64_t *c, uint64_t v)
{
	atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

/* ---- tap ------------------------------------------------------------------------ */

static int tap_open(struct net_uplink *u)
{
	for (unsigned int i = 0; i < u->nq; i++) {
		struct uplink_tapq *t = &u->q[i].tap;
		int fd = net_tap_queue_open("uplink", u->iface, O_NONBLOCK);

		if (fd < 0)
			return fd;
		t->fd = fd;
		/* the guests' offloaded frames go to the kernel with their
		 * header; the kernel hands us whole frames with their checksums
		 * (no TUNSETOFFLOAD bits): a guest may not have taken any */
		if (ioctl(fd, TUNSETOFFLOAD, 0) < 0) {
			int err = -errno;

			UVH_ERR("uplink tap:%s: TUNSETOFFLOAD: %s", u->iface, strerror(-err));
			return err;
		}
		t->buf = malloc(TAP_READS * sizeof(*t->buf));
		if (!t->buf)
			return -ENOMEM;
	}
	u->max_tx = NET_MAX_TX;		/* the kernel checks the tap's own MTU */
	snprintf(u->info, sizeof(u->info), "tap %s, %u queue%s", u->iface, u->nq,
		 u->nq > 1 ? "s" : "");
	return 0;
}

static void tap_close(struct net_uplink *u)
{
	for (unsigned int i = 0; i < u->nq; i++) {
		if (u->q[i].tap.fd > 0)
			close(u->q[i].tap.fd);
		free(u->q[i].tap.buf);
	}
}

static int tap_wake_fd(struct net_uplink *u, unsigned int q)
{
	return u->q[q].tap.fd;
}

static unsigned int tap_rx_begin(struct net_uplink *u, unsigned int q, struct iovec *v,
				 unsigned int max)
{
	struct uplink_tapq *t = &u->q[q].tap;
	unsigned int n = 0;
	ssize_t got;

	if (max > TAP_READS)
		max = TAP_READS;
	while (n < max) {
		got = read(t->fd, t->buf[n], TAP_BUF);
		if (got < 0)
			break;		/* EAGAIN: nothing more (or the tap is gone) */
		v[n].iov_base = t->buf[n] + UVH_NET_HDR_LEN;
		/* a frame as big as the buffer may have been cut: not passed on */
		v[n].iov_len = got > (ssize_t)UVH_NET_HDR_LEN + 13 && got < (ssize_t)TAP_BUF ?
			       (size_t)got - UVH_NET_HDR_LEN : 0;
		n++;
	}
	return n;
}

static void tap_rx_end(struct net_uplink *u, unsigned int q, unsigned int n)
{
	(void)u; (void)q; (void)n;	/* the buffers are ours: nothing to give back */
}

static bool tap_tx_put(struct net_uplink *u, unsigned int q, const struct uvh_virtio_net_hdr *hdr,
		       const struct iovec *iov, unsigned int n, size_t skip, uint32_t len)
{
	struct uvh_virtio_net_hdr none = { 0 };
	struct iovec w[TAP_IOV];
	unsigned int k = 1, i;
	size_t left = len;

	w[0].iov_base = (void *)(hdr ? hdr : &none);
	w[0].iov_len = UVH_NET_HDR_LEN;
	/* the header's num_buffers means nothing to the tap */
	for (i = 0; i < n && left; i++) {
		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		if (k == TAP_IOV)
			return false;
		w[k].iov_base = (uint8_t *)iov[i].iov_base + skip;
		w[k].iov_len = iov[i].iov_len - skip < left ? iov[i].iov_len - skip : left;
		left -= w[k].iov_len;
		skip = 0;
		k++;
	}
	return writev(u->q[q].tap.fd, w, (int)k) == (ssize_t)(UVH_NET_HDR_LEN + len);
}

static void tap_tx_flush(struct net_uplink *u, unsigned int q)
{
	(void)u; (void)q;	/* every write went at once */
}

static const struct net_uplink_ops uplink_tap = {
	.name = "tap",
	.open = tap_open,
	.close = tap_close,
	.wake_fd = tap_wake_fd,
	.rx_begin = tap_rx_begin,
	.rx_end = tap_rx_end,
	.tx_put = tap_tx_put,
	.tx_flush = tap_tx_flush,
};

/* ---- xdp ------------------------------------------------------------------------ */

#ifdef UVH_HAVE_XDP
static int xdp_open(struct net_uplink *u)
{
	unsigned int ifindex;
	int mtu, err;
	size_t l;

	for (unsigned int i = 0; i < u->nq; i++)
		u->q[i].xs.fd = -1;
	u->prog.prog_fd = u->prog.map_fd = -1;
	if (xdp_iface(u->iface, &ifindex, &mtu)) {
		UVH_ERR("uplink xdp:%s: no such interface", u->iface);
		return -ENODEV;
	}
	xdp_sock_quiet_libs();
	/* no frags: the switch hands the ports one buffer per frame (MTU
	 * capped to a UMEM frame) */
	err = xdp_iface_open(&u->prog, "uplink", u->iface, u->nq, false);
	if (err)
		return err;
	for (unsigned int i = 0; i < u->nq; i++) {
		err = xdp_sock_open(&u->q[i].xs, "uplink", u->iface, i, &u->prog);
		if (err)
			return err;
	}
	u->max_tx = (uint32_t)mtu + 18u < XDP_RX_MAX ? (uint32_t)mtu + 18u : XDP_RX_MAX;
	l = (size_t)snprintf(u->info, sizeof(u->info), "xdp %s, %u queue%s: ", u->iface, u->nq,
			     u->nq > 1 ? "s" : "");
	xdp_sock_describe(&u->q[0].xs, ifindex, u->info + l, sizeof(u->info) - l);
	return 0;
}

static void xdp_close(struct net_uplink *u)
{
	for (unsigned int i = 0; i < u->nq; i++)
		xdp_sock_close(&u->q[i].xs);
	xdp_iface_close(&u->prog);
}

static int xdp_wake_fd(struct net_uplink *u, unsigned int q)
{
	return u->q[q].xs.fd;
}

static unsigned int xdp_rx_begin(struct net_uplink *u, unsigned int q, struct iovec *v,
				 unsigned int max)
{
	struct xdp_sock *s = &u->q[q].xs;
	unsigned int n = xdp_sock_rx_begin(s, max);

	for (unsigned int i = 0; i < n; i++) {
		struct iovec f[XDP_MAX_FRAGS];
		uint32_t len;

		/* no frags on the uplink's sockets: one buffer a packet */
		if (xdp_sock_rx_packet(s, i, f, &len) == 1)
			v[i] = f[0];
		else
			v[i].iov_len = 0;
	}
	return n;
}

static void xdp_rx_end(struct net_uplink *u, unsigned int q, unsigned int n)
{
	xdp_sock_rx_end(&u->q[q].xs, n);
	/* the kernel's drop counters cost a syscall: now and then */
	if (++u->q[q].rx_polls % 1024 == 0) {
		uint64_t d = xdp_sock_rx_kernel_drops(&u->q[q].xs);

		if (d)
			add(&u->rx_drops, d);
	}
}

static bool xdp_tx_put(struct net_uplink *u, unsigned int q, const struct uvh_virtio_net_hdr *hdr,
		       const struct iovec *iov, unsigned int n, size_t skip, uint32_t len)
{
	/* no offloads reach us: the ports do not offer them (features_drop);
	 * no room (the kernel has not sent enough yet): dropped, as a NIC does */
	return !hdr && xdp_sock_tx_put(&u->q[q].xs, iov, n, skip, len);
}

/* Once per burst: completions reaped, a pending kick retried, a link down
 * looked at again now and then. */
static void xdp_tx_begin(struct net_uplink *u, unsigned int q)
{
	xdp_sock_tx_room(&u->q[q].xs, UVH_NET_BURST);
}

static void xdp_tx_flush(struct net_uplink *u, unsigned int q)
{
	xdp_sock_tx_flush(&u->q[q].xs);
}

static const struct net_uplink_ops uplink_xdp = {
	.name = "xdp",
	/* the wire wants whole frames with their checksums: guests must not
	 * leave checksums or segmentation to us */
	.features_drop = UVH_BIT(UVH_VIRTIO_NET_F_CSUM) | UVH_BIT(UVH_VIRTIO_NET_F_HOST_TSO4) |
			 UVH_BIT(UVH_VIRTIO_NET_F_HOST_TSO6) | UVH_BIT(UVH_VIRTIO_NET_F_HOST_ECN),
	.open = xdp_open,
	.close = xdp_close,
	.wake_fd = xdp_wake_fd,
	.rx_begin = xdp_rx_begin,
	.rx_end = xdp_rx_end,
	.tx_begin = xdp_tx_begin,
	.tx_put = xdp_tx_put,
	.tx_flush = xdp_tx_flush,
};
#endif

/* ---- the switch's side ---------------------------------------------------------------- */

struct net_uplink *net_uplink_open(const char *spec, unsigned int queues, int *err)
{
	const struct net_uplink_ops *ops = NULL;
	const char *name = strchr(spec, ':');
	struct net_uplink *u;

	*err = -EINVAL;
	if (!name || !name[1] || strlen(name + 1) >= IFNAMSIZ || !queues ||
	    queues > UVH_NET_MAX_PAIRS)
		return NULL;
	if (!strncmp(spec, "tap:", 4))
		ops = &uplink_tap;
#ifdef UVH_HAVE_XDP
	else if (!strncmp(spec, "xdp:", 4))
		ops = &uplink_xdp;
#else
	else if (!strncmp(spec, "xdp:", 4))
		*err = -EOPNOTSUPP;
#endif
	if (!ops)
		return NULL;
	u = calloc(1, sizeof(*u) + queues * sizeof(u->q[0]));
	if (!u) {
		*err = -ENOMEM;
		return NULL;
	}
	u->ops = ops;
	u->nq = queues;
	snprintf(u->iface, sizeof(u->iface), "%s", name + 1);
	*err = ops->open(u);
	if (*err) {
		net_uplink_close(u);
		return NULL;
	}
	UVH_INFO("switch uplink: %s", u->info);
	return u;
}

void net_uplink_close(struct net_uplink *u)
{
	if (!u)
		return;
	u->ops->close(u);
	free(u);
}

const char *net_uplink_info(const struct net_uplink *u)
{
	return u->info;
}

uint64_t net_uplink_features_drop(const struct net_uplink *u)
{
	return u->ops->features_drop;
}

int net_uplink_wake_fd(struct net_uplink *u, unsigned int pair)
{
	return u->ops->wake_fd(u, pair % u->nq);
}

void net_uplink_stats(const struct net_uplink *u, struct uvh_net_stats *st)
{
	struct net_uplink *m = (struct net_uplink *)u;

	memset(st, 0, sizeof(*st));
	/* the uplink's view: rx from the wire's side is what it sends on */
	st->rx_packets = atomic_load_explicit(&m->tx_packets, memory_order_relaxed);
	st->rx_bytes = atomic_load_explicit(&m->tx_bytes, memory_order_relaxed);
	st->rx_drops = atomic_load_explicit(&m->tx_drops, memory_order_relaxed);
	st->tx_packets = atomic_load_explicit(&m->rx_packets, memory_order_relaxed);
	st->tx_bytes = atomic_load_explicit(&m->rx_bytes, memory_order_relaxed);
	st->tx_drops = atomic_load_explicit(&m->rx_drops, memory_order_relaxed);
	st->drops_by_reason[UVH_NET_DROP_PORT] = st->rx_drops;
	st->drops_by_reason[UVH_NET_DROP_WIRE_QUEUE] = st->tx_drops;
}

void net_uplink_send(struct net_uplink *u, struct net_ring *tx, const uint8_t *dest, uint8_t match,
		     uint8_t flood, unsigned int n)
{
	struct uplink_queue *q = &u->q[tx->pair % u->nq];
	unsigned int qi = tx->pair % u->nq;
	uint64_t pk = 0, by = 0, dr = 0;

	net_spin_lock(&q->tx_lock);
	if (u->ops->tx_begin)
		u->ops->tx_begin(u, qi);
	for (unsigned int i = 0; i < n; i++) {
		const struct uvh_vq_chain *c = &tx->tch[i];
		uint32_t len = tx->tlen[i];

		if ((dest[i] != match && dest[i] != flood) || !len)
			continue;
		if (len > u->max_tx ||
		    !u->ops->tx_put(u, qi, tx->toff & (1u << i) ? &tx->thdr[i] : NULL, c->iov,
				    c->nout, tx->dev->hdr_len, len)) {
			dr++;
			continue;
		}
		pk++;
		by += len;
	}
	u->ops->tx_flush(u, qi);
	net_spin_unlock(&q->tx_lock);
	if (pk) {
		add(&u->tx_packets, pk);
		add(&u->tx_bytes, by);
	}
	if (dr)
		add(&u->tx_drops, dr);
}

unsigned int net_uplink_rx_begin(struct net_uplink *u, unsigned int pair, struct iovec *v,
				 unsigned int max)
{
	struct uplink_queue *q = &u->q[pair % u->nq];
	unsigned int n, i;
	uint64_t by = 0;

	/* another ring's engine is on it: it will take these frames */
	if (atomic_load_explicit(&q->rx_lock, memory_order_relaxed) ||
	    atomic_exchange_explicit(&q->rx_lock, 1, memory_order_acquire))
		return 0;
	n = u->ops->rx_begin(u, pair % u->nq, v, max);
	if (!n) {
		/* release: pairs with the acquire of the next poller */
		atomic_store_explicit(&q->rx_lock, 0, memory_order_release);
		return 0;
	}
	for (i = 0; i < n; i++)
		by += v[i].iov_len;
	add(&u->rx_packets, n);
	add(&u->rx_bytes, by);
	return n;
}

void net_uplink_rx_end(struct net_uplink *u, unsigned int pair, unsigned int n)
{
	struct uplink_queue *q = &u->q[pair % u->nq];

	u->ops->rx_end(u, pair % u->nq, n);
	atomic_store_explicit(&q->rx_lock, 0, memory_order_release);
}
