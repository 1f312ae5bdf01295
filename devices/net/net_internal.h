/* SPDX-License-Identifier: MIT */
/*
 * uvhost: what the virtio-net device's files share. Not installed.
 *
 *   net.c          the device: life cycle, features, config, rings, the
 *                  generic TX burst, RARP, counters
 *   net_rx.c       RX delivery into the guest's rings, every port's
 *   net_ctrl.c     the control ring
 *   net_offload.c  TX headers checked, offloads passed through or done
 *                  in software for each receiver
 *   net_state.c    the device's own state, for migration
 *   net_host.c     the glue for the device host (host/devhost.h)
 *   port_*.c       one file per port type, each a struct net_port_ops
 *   uplink.c       a switch's uplink to a wire (xdp or tap), polled by its
 *                  ports' RX rings
 *   xdp_sock.c     an AF_XDP socket, its UMEM and the XDP program (the xdp
 *                  port, an xdp uplink)
 */
#ifndef UVHOST_NET_INTERNAL_H
#define UVHOST_NET_INTERNAL_H

#include <stdatomic.h>
#include <string.h>
#include <sys/uio.h>

#include "net.h"
#include "util.h"

struct net_ring;

/*
 * A port type: what the device does with the frames its guest sends, and
 * where the frames its guest receives come from. Every op may be NULL.
 * The device does the rest: rings, the TX burst (pop, bounds, push, counts),
 * RX delivery (net_rx_*), the control ring, RARP.
 */
struct net_port_ops {
	const char *name;
	/** virtio features the port adds to the device's own, and takes away */
	uint64_t features_add, features_drop;
	/** RX rings are filled by TX bursts only (no RX work of their own):
	 *  passive engine queues (engine.h) */
	bool rx_passive;
	/** RX rings are filled by other ports' engines (under the ring's lock) */
	bool rx_shared;
	/** [control] uvh_net_create: the port's own state (a tap's fds, a
	 *  switch membership); negative errno fails the create */
	int (*open)(struct uvh_net_dev *dev, const struct uvh_net_opts *opts);
	/** [control] uvh_net_destroy (or a failed open): free the port's state,
	 *  the device's and every ring's port_priv */
	void (*close)(struct uvh_net_dev *dev);
	/** [control] features accepted (hdr_len and mrg set) */
	int (*set_features)(struct uvh_net_dev *dev);
	/** [engine] TX or RX ring @r starts (its fields set, not yet running)
	 *  / stops (still running); not called for the control ring */
	int (*start)(struct net_ring *r);
	void (*stop)(struct net_ring *r);
	/** [engine] a ring of the pair started, stopped, was enabled or
	 *  disabled (after the change) */
	void (*ring_changed)(struct net_ring *r);
	/** [engine] a TX burst: r->tch[0..n) popped, r->tlen[i] the frame's
	 *  bytes after the virtio-net header (0: already dropped). Send them
	 *  on; set tlen[i] = 0 for a frame refused (counted as a drop). NULL:
	 *  frames are consumed and counted (a sink). */
	void (*tx_burst)(struct net_ring *r, unsigned int n);
	/** [engine] before a TX burst: how many frames the port can take now
	 *  (at most UVH_NET_BURST); 0 is back-pressure: the guest's chains wait
	 *  in its ring and the burst counts as work, so the engine sweeps on
	 *  until the port drains (an AF_XDP TX ring). NULL: a whole burst. */
	unsigned int (*tx_room)(struct net_ring *r);
	/** [engine] an RX ring's own burst (frames made or read): work done */
	unsigned int (*rx_burst)(struct net_ring *r);
	/** [engine] the whole burst of a TX or RX ring, for a port with I/O of
	 *  its own in flight (tap); replaces tx_burst and rx_burst */
	unsigned int (*process)(struct net_ring *r);
};

/* The offloads a port that forwards between guests offers (net_offload.c
 * does what a receiver did not negotiate). */
#define NET_OFFLOADS	(UVH_BIT(UVH_VIRTIO_NET_F_CSUM) | UVH_BIT(UVH_VIRTIO_NET_F_GUEST_CSUM) | \
			 UVH_BIT(UVH_VIRTIO_NET_F_HOST_TSO4) | UVH_BIT(UVH_VIRTIO_NET_F_HOST_TSO6) | \
			 UVH_BIT(UVH_VIRTIO_NET_F_HOST_ECN) | UVH_BIT(UVH_VIRTIO_NET_F_GUEST_TSO4) | \
			 UVH_BIT(UVH_VIRTIO_NET_F_GUEST_TSO6) | UVH_BIT(UVH_VIRTIO_NET_F_GUEST_ECN))

extern const struct net_port_ops net_port_loopback, net_port_sink, net_port_source,
	net_port_switch, net_port_tap, net_port_xdp;

#define NET_TX_IOV	512u	/* TX burst iovecs (pop fails only a lone chain longer) */
#define NET_RX_POOL	64u	/* RX chains popped and not yet used */
#define NET_RX_IOV	1024u
#define NET_RX_USED	256u
#define NET_MAX_TX	(UVH_NET_MAX_FRAME + 18u)	/* + Ethernet header, VLAN tag */
#define NET_OUT_IOV	(NET_TX_IOV + 2u)	/* a frame rebuilt from slices + a patch */
#define NET_GSO_HDRS_MAX 160u		/* Ethernet + VLAN + IPv4 (60) + TCP (60) */
#define NET_GSO_MAX_SEGS 512u		/* more from one frame is an attack */

/* RX chains taken from the ring and not used yet (kept in pop order). */
struct net_rxpool {
	struct uvh_vq_chain ch[NET_RX_POOL];
	struct iovec iov[NET_RX_IOV];
	unsigned int head, n, iov_used;
	bool dry;			/* the ring had nothing this burst */
	unsigned int hint;		/* frames expected this burst: chains to pop */
	struct uvh_engine *self;	/* the producer's engine (NULL: none) */
	uint64_t pk, by, dr;		/* this burst's counts, published at the end */
	struct uvh_vq_used used[NET_RX_USED];
	unsigned int nused;
};

/*
 * Ownership. A ring's fields belong to the engine serving it from
 * uvh_net_queue_start() to uvh_net_queue_stop(), both run on that engine's
 * thread (or with it stopped). Exceptions: a switch's RX rings (shared)
 * are filled by other ports' engines under the ring's lock, which also
 * guards running, enabled, vq and the pool there; counters have a single
 * writer and relaxed readers. The device's features, hdr_len and mrg are
 * written by the control thread only while none of its rings runs (the
 * device host refuses SET_FEATURES changes then), so a ring's start orders them
 * before every burst; cfg, rx_mode: control thread and the ctrl ring's
 * engine (byte fields a migration reads with every ring stopped).
 */
struct net_ring {
	struct uvh_net_dev *dev;
	uint32_t index, pair;
	bool is_rx, is_ctrl;
	bool running, enabled;
	struct uvh_vq *vq;
	struct uvh_engine_queue *eq;
	struct uvh_engine *engine;
	int kick_fd, call_fd;
	/* switch: RX rings are filled by every port's TX engines; see port_switch.c */
	atomic_int lock;
	bool shared;
	atomic_bool call_pending;	/* a call for the serving engine to make */
	/* TX burst */
	struct uvh_vq_chain *tch;
	struct iovec *tiov;
	struct uvh_vq_used *tused;
	uint32_t *tlen;			/* per chain: its frame's bytes, 0 = dropped */
	struct uvh_virtio_net_hdr *thdr;	/* per chain: its header, checked
						 * (only where toff has its bit) */
	uint32_t toff;			/* this burst's frames that use an offload */
	struct iovec *oiov;		/* a frame rebuilt for one receiver */
	uint8_t *ohdr;			/* a segment's headers */
	/* RX */
	struct net_rxpool *rx;
	void *port_priv;		/* the port's per-ring state */
	/* counters: single writer (the serving engine, or the lock holder) */
	/* RX: the biggest frame its guest takes, for this producer's burst
	 * (net_rx_begin; the lock holder's, on a shared ring) */
	uint32_t max_frame;
	_Atomic uint64_t packets, bytes, drops;
	_Atomic uint64_t why[UVH_NET_DROP_REASONS];	/* drops by reason */
};

struct uvh_net_dev {
	char name[32];
	const struct net_port_ops *port_ops;
	uint32_t max_pairs, nrings;
	_Atomic uint32_t active_pairs;
	uint64_t features;
	bool features_set;
	uint32_t hdr_len;
	bool mrg;
	struct uvh_virtio_net_config cfg;
	bool offer_config;		/* opts.offer_config: CONFIG offered */
	/* the biggest frame the guest takes (MTU negotiated: mtu + 18), read
	 * by other ports' engines: relaxed, a new MTU may reach them late */
	_Atomic uint32_t rx_max_frame;
	_Atomic uint32_t why_logged;	/* drop reasons logged once (net_drop_log) */
	unsigned int frame_size;
	_Atomic uint64_t rarp;		/* SEND_RARP waiting: MAC | RARP_PENDING (net.c) */
	_Atomic uint64_t ctrl_cmds;
	uint8_t rx_mode;		/* CTRL_RX modes on: bit n = command n */
	struct uvh_net_switch *sw;
	int port;			/* index on the switch */
	void *port_priv;		/* the port's own state */
	struct net_ring rings[];
};


/* ---- shared helpers ------------------------------------------------------------- */

/* A counter with a single writer: a plain add published with a relaxed
 * store (no locked instruction); readers load it relaxed. */
static inline void net_count(_Atomic uint64_t *c, uint64_t v)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
			      memory_order_relaxed);
}

/* The first drop of a guest's frame for a reason its own (a header it had no
 * right to send, a frame over its MTU) is logged once per port (net.c). */
void net_drop_log(struct uvh_net_dev *dev, enum uvh_net_drop_reason why);

/* Count a drop's reason; the drop itself is counted by the caller. */
static inline void net_why(struct net_ring *r, enum uvh_net_drop_reason why)
{
	net_count(&r->why[why], 1);
	if (unlikely(!(atomic_load_explicit(&r->dev->why_logged, memory_order_relaxed) &
		       (1u << why))))
		net_drop_log(r->dev, why);
}

/* Count @n drops for @why on a ring's counters (single writer). */
static inline void net_drop(struct net_ring *r, enum uvh_net_drop_reason why, uint64_t n)
{
	net_count(&r->drops, n);
	net_count(&r->why[why], n);
}

static inline uint32_t net_rx_max_frame(const struct uvh_net_dev *dev)
{
	return atomic_load_explicit(&((struct uvh_net_dev *)dev)->rx_max_frame,
				    memory_order_relaxed);
}

/* A read position in a list of source iovecs. */
struct net_src {
	const struct iovec *iov;
	unsigned int n;
	size_t off;	/* into iov[0] */
};

static inline void net_src_init(struct net_src *s, const struct iovec *iov, unsigned int n, size_t skip)
{
	while (n && skip >= iov->iov_len) {
		skip -= iov->iov_len;
		iov++;
		n--;
	}
	s->iov = iov;
	s->n = n;
	s->off = skip;
}

/*
 * Copy @len bytes from @s into @dst (@nd iovecs) from byte @doff on. The
 * caller made sure both sides hold them (chain lengths were summed by
 * uvh_vq_pop and the source length is known).
 */
static inline void net_copy_to(struct net_src *s, const struct iovec *dst, unsigned int nd,
			   size_t doff, size_t len)
{
	size_t room, have, chunk;

	while (nd && doff >= dst->iov_len) {
		doff -= dst->iov_len;
		dst++;
		nd--;
	}
	while (len && nd && s->n) {
		room = dst->iov_len - doff;
		have = s->iov->iov_len - s->off;
		chunk = room < have ? room : have;
		if (chunk > len)
			chunk = len;
		memcpy((uint8_t *)dst->iov_base + doff, (const uint8_t *)s->iov->iov_base + s->off,
		       chunk);
		len -= chunk;
		doff += chunk;
		s->off += chunk;
		if (doff == dst->iov_len) {
			dst++;
			nd--;
			doff = 0;
		}
		if (s->off == s->iov->iov_len) {
			s->iov++;
			s->n--;
			s->off = 0;
		}
	}
}


/* net_rx.c */
/* Read (write) up to @len bytes at byte @off of @iov into (from) @buf; the bytes copied. */
size_t net_iov_read(const struct iovec *iov, unsigned int n, size_t off, void *buf, size_t len);
size_t net_iov_write(const struct iovec *iov, unsigned int n, size_t off, const void *buf,
		     size_t len);
/* Does RX ring @r take frames (running, enabled, not broken)? Its device's
 * features and header size may be read only then (see the ownership note
 * above struct net_ring). */
static inline bool net_rx_open(const struct net_ring *r)
{
	return r->running && r->enabled && !uvh_vq_broken(r->vq);
}
void net_rx_begin(struct net_ring *r, unsigned int frames, struct uvh_engine *self);
bool net_rx_put(struct net_ring *r, const struct uvh_virtio_net_hdr *hdr,
		const struct iovec *src, unsigned int nsrc, size_t skip, uint32_t len);
void net_rx_end(struct net_ring *r);
bool net_rx_room(struct net_ring *r);
/* give back the pool's chains at a stop */
void net_rx_pool_return(struct net_ring *r);
/* net_offload.c */
int net_tx_check_slow(struct net_ring *r, unsigned int i);
void net_deliver_slow(struct net_ring *rx, struct net_ring *tx, unsigned int i);
/* 0, or -1 for features that break the spec's dependencies */
int net_features_check(uint64_t features);

/*
 * TX frame @i of @r (tlen set; r->toff cleared at the burst's start): check
 * its header against the features the sender negotiated: 0, or the drop
 * reason (the caller sets tlen 0). One 2-byte read when no offload is used;
 * else the header goes into thdr[i] and toff gets bit @i.
 */
static inline int net_tx_check(struct net_ring *r, unsigned int i)
{
	const struct uvh_vq_chain *c = &r->tch[i];
	struct uvh_virtio_net_hdr *h = &r->thdr[i];
	uint16_t fg;	/* flags and gso_type: zero for a frame without offloads */

	if (likely(c->nout && c->iov[0].iov_len >= 2))
		memcpy(&fg, c->iov[0].iov_base, 2);
	else
		net_iov_read(c->iov, c->nout, 0, &fg, 2);
	if (likely(!fg))
		return 0;
	h->num_buffers = 0;
	net_iov_read(c->iov, c->nout, 0, h, r->dev->hdr_len);
	r->toff |= 1u << i;
	return net_tx_check_slow(r, i);
}

/*
 * Put TX frame @i of @tx (checked, tlen > 0) into RX ring @rx (opened with
 * net_rx_begin): as it is when @rx's guest takes what its header uses,
 * else segmented or its checksum completed; a frame over @rx's guest's
 * MTU is dropped (counted on @rx).
 */
static inline void net_deliver(struct net_ring *rx, struct net_ring *tx, unsigned int i)
{
	if (likely(!(tx->toff & (1u << i)) && tx->tlen[i] <= rx->max_frame)) {
		const struct uvh_vq_chain *c = &tx->tch[i];

		net_rx_put(rx, NULL, c->iov, c->nout, tx->dev->hdr_len, tx->tlen[i]);
		return;
	}
	net_deliver_slow(rx, tx, i);
}

/* net_ctrl.c */
unsigned int net_ctrl_process(struct net_ring *r);
/* port_switch.c: the per-RX-ring spinlock of shared rings */
void net_lock(struct net_ring *r);
void net_unlock(struct net_ring *r);
/* the spinlock under them, for other shared state (a switch uplink's queue) */
void net_spin_lock(atomic_int *l);
void net_spin_unlock(atomic_int *l);
/* what a switch's ports must not offer (its uplink cannot take it) */
uint64_t net_switch_features_drop(const struct uvh_net_switch *sw);

/* port_tap.c: one queue of multi-queue tap @name ("" on the first: the
 * kernel's choice; set to the tap's name) with a UVH_NET_HDR_LEN-byte
 * virtio-net header; @flags: open(2)'s, e.g. O_NONBLOCK. The fd, or a
 * negative errno (logged, naming @who). */
int net_tap_queue_open(const char *who, char name[16], int flags);

/* uplink.c: a switch's uplink (xdp:IFACE or tap:NAME) */
struct net_uplink;
struct net_uplink *net_uplink_open(const char *spec, unsigned int queues, int *err);
void net_uplink_close(struct net_uplink *u);
const char *net_uplink_info(const struct net_uplink *u);
uint64_t net_uplink_features_drop(const struct net_uplink *u);
int net_uplink_wake_fd(struct net_uplink *u, unsigned int pair);
void net_uplink_stats(const struct net_uplink *u, struct uvh_net_stats *st);
/* a TX burst's frames whose dest[i] is @match or @flood, to the wire */
void net_uplink_send(struct net_uplink *u, struct net_ring *tx, const uint8_t *dest, uint8_t match,
		     uint8_t flood, unsigned int n);
/* frames from the wire for pair @pair's rings (0: none, or another engine
 * is on that queue); net_uplink_rx_end once they are delivered */
unsigned int net_uplink_rx_begin(struct net_uplink *u, unsigned int pair, struct iovec *v,
				 unsigned int max);
void net_uplink_rx_end(struct net_uplink *u, unsigned int pair, unsigned int n);

#endif
