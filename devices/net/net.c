/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the virtio-net device: its life cycle, features and config
 * space, its rings' start, stop and enable, the TX burst every port
 * shares, RARP, counters. What a port does with the frames is its
 * struct net_port_ops (port_*.c); RX delivery is net_rx.c, the control
 * ring net_ctrl.c, the glue for the device host net_host.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>

#include "util.h"
#include "log.h"
#include "net_internal.h"

static _Atomic uint32_t mac_counter;

/* The port types, by enum uvh_net_port_type. */
static const struct net_port_ops *const port_types[] = {
	[UVH_NET_PORT_LOOPBACK] = &net_port_loopback,
	[UVH_NET_PORT_SINK] = &net_port_sink,
	[UVH_NET_PORT_SOURCE] = &net_port_source,
	[UVH_NET_PORT_SWITCH] = &net_port_switch,
	[UVH_NET_PORT_TAP] = &net_port_tap,
#ifdef UVH_HAVE_XDP
	[UVH_NET_PORT_XDP] = &net_port_xdp,
#else
	[UVH_NET_PORT_XDP] = NULL,	/* built without libxdp */
#endif
};

/* A ring's burst arrays (TX) or RX pool, freed and forgotten. */
static void ring_free(struct net_ring *r)
{
	free(r->tch);
	free(r->tiov);
	free(r->tused);
	free(r->tlen);
	free(r->thdr);
	free(r->oiov);
	free(r->ohdr);
	free(r->rx);
	r->tch = NULL;
	r->tiov = NULL;
	r->tused = NULL;
	r->tlen = NULL;
	r->thdr = NULL;
	r->oiov = NULL;
	r->ohdr = NULL;
	r->rx = NULL;
}

/* ---- RARP ---------------------------------------------------------------------- */

/* The pending RARP: the MAC in bits 0-47, RARP_PENDING set while one waits. */
#define RARP_PENDING	(1ull << 48)

static unsigned int rarp_deliver(struct uvh_net_dev *dev, struct uvh_engine *self)
{
	struct net_ring *rx = &dev->rings[0];
	uint64_t want = atomic_load_explicit(&dev->rarp, memory_order_relaxed);
	uint8_t f[60], mac[6];
	struct iovec v = { f, sizeof(f) };
	bool ok = false;

	if (likely(!(want & RARP_PENDING)))
		return 0;
	for (unsigned int i = 0; i < 6; i++)
		mac[i] = (uint8_t)(want >> (8 * i));
	memset(f, 0, sizeof(f));
	memset(f, 0xff, 6);
	memcpy(f + 6, mac, 6);
	f[12] = 0x80; f[13] = 0x35;		/* ETH_P_RARP */
	f[14] = 0; f[15] = 1;			/* htype Ethernet */
	f[16] = 0x08; f[17] = 0x00;		/* ptype IPv4 */
	f[18] = 6; f[19] = 4;			/* hlen, plen */
	f[20] = 0; f[21] = 3;			/* op: reverse request */
	memcpy(f + 22, mac, 6);			/* sha; spa 0 */
	memcpy(f + 32, mac, 6);			/* tha; tpa 0 */
	net_rx_begin(rx, 1, self);
	if (net_rx_room(rx))
		ok = net_rx_put(rx, NULL, &v, 1, 0, sizeof(f));
	net_rx_end(rx);
	/* done, unless a newer SEND_RARP replaced it meanwhile: that one waits */
	if (ok)
		atomic_compare_exchange_strong_explicit(&dev->rarp, &want, 0,
							memory_order_relaxed, memory_order_relaxed);
	return ok;
}

/* ---- bursts ------------------------------------------------------------------------ */

/*
 * A TX burst: pop, size each frame (a chain shorter than the header or
 * longer than the biggest frame is dropped), hand the frames to the port,
 * push every chain back (nothing written into a TX chain), count.
 */
static unsigned int tx_process(struct net_ring *r)
{
	struct uvh_net_dev *dev = r->dev;
	const struct net_port_ops *port = dev->port_ops;
	uint64_t bytes = 0;
	unsigned int i, n, good = 0, room = UVH_NET_BURST;
	int got;

	if (port->tx_room && r->enabled) {
		room = port->tx_room(r);
		if (!room)
			return 1;	/* the port is busy: its chains wait, the engine sweeps on */
	}
	got = uvh_vq_pop(r->vq, r->tch, room, r->tiov, NET_TX_IOV);
	if (got <= 0)
		return r->pair == 0 ? rarp_deliver(dev, r->engine) : 0;
	n = (unsigned int)got;
	r->toff = 0;
	for (i = 0; i < n; i++) {
		uint32_t len = r->tch[i].out_len;
		int why;

		r->tlen[i] = 0;
		/* a host that processes a disabled ring: consumed without effect */
		if (unlikely(!r->enabled)) {
			why = UVH_NET_DROP_RING_OFF;
		} else if (unlikely(len <= dev->hdr_len || len - dev->hdr_len > NET_MAX_TX)) {
			why = UVH_NET_DROP_MALFORMED;
		} else {
			r->tlen[i] = len - dev->hdr_len;
			why = net_tx_check(r, i);
			if (likely(!why))
				continue;
			r->tlen[i] = 0;
		}
		net_why(r, why);	/* the drop itself: below */
	}
	if (port->tx_burst && r->enabled)
		port->tx_burst(r, n);
	for (i = 0; i < n; i++) {
		r->tused[i].id = r->tch[i].id;
		r->tused[i].ndesc = r->tch[i].ndesc;
		r->tused[i].len = 0;
		if (r->tlen[i]) {
			good++;
			bytes += r->tlen[i];
		}
	}
	uvh_vq_push(r->vq, r->tused, n);
	net_count(&r->packets, good);
	net_count(&r->bytes, bytes);
	if (good < n)
		net_count(&r->drops, n - good);
	if (r->pair == 0)
		rarp_deliver(dev, r->engine);
	return n;
}

unsigned int uvh_net_queue_process(struct uvh_net_dev *dev, uint32_t index)
{
	const struct net_port_ops *port = dev->port_ops;
	struct net_ring *r;
	unsigned int work = 0;

	if (unlikely(index >= dev->nrings))
		return 0;
	r = &dev->rings[index];
	if (unlikely(!r->running))
		return 0;
	if (r->is_ctrl)
		return net_ctrl_process(r);
	if (port->process)
		work = port->process(r);
	else if (!r->is_rx)
		return tx_process(r);
	else if (port->rx_burst)
		work = port->rx_burst(r);
	if (r->is_rx && index == 0)
		work += rarp_deliver(dev, r->engine);
	/* pairs with the release in net_rx_end: a producer on another engine
	 * decided the guest wants a call on this ring */
	if (r->shared && atomic_load_explicit(&r->call_pending, memory_order_relaxed) &&
	    atomic_exchange_explicit(&r->call_pending, false, memory_order_acquire)) {
		int fd = r->eq ? r->eq->call_fd : r->call_fd;

		if (fd >= 0)
			eventfd_write(fd, 1);
	}
	return work;
}

/* ---- device ------------------------------------------------------------------------ */

struct uvh_net_dev *uvh_net_create(const struct uvh_net_opts *opts)
{
	static const uint8_t zero[6];
	struct uvh_net_dev *dev;
	unsigned int pairs, i;
	uint32_t id;
	int err;

	if (!opts || (unsigned int)opts->type >= sizeof(port_types) / sizeof(port_types[0]))
		goto inval;
	if (!port_types[opts->type]) {
		errno = EOPNOTSUPP;
		return NULL;
	}
	pairs = opts->queue_pairs ? opts->queue_pairs : 1;
	if (pairs > UVH_NET_MAX_PAIRS)
		goto inval;
	if (opts->mtu && (opts->mtu < 68 || opts->mtu > UVH_NET_MAX_FRAME - 14))
		goto inval;
	if (opts->frame_size && (opts->frame_size < 60 || opts->frame_size > UVH_NET_MAX_FRAME))
		goto inval;
	dev = calloc(1, sizeof(*dev) + (2 * pairs + 1) * sizeof(dev->rings[0]));
	if (!dev)
		return NULL;
	snprintf(dev->name, sizeof(dev->name), "%s", opts->name ? opts->name : "net");
	dev->port_ops = port_types[opts->type];
	dev->max_pairs = pairs;
	dev->nrings = 2 * pairs + 1;
	atomic_init(&dev->active_pairs, 1);
	dev->hdr_len = UVH_NET_HDR_LEN;
	dev->frame_size = opts->frame_size ? opts->frame_size : 64;
	atomic_init(&dev->rx_max_frame, NET_MAX_TX);
	dev->port = -1;
	if (memcmp(opts->mac, zero, 6)) {
		memcpy(dev->cfg.mac, opts->mac, 6);
	} else {
		id = atomic_fetch_add(&mac_counter, 1) + 1;
		dev->cfg.mac[0] = 0x02; dev->cfg.mac[1] = 0x75;
		dev->cfg.mac[2] = 0x76; dev->cfg.mac[3] = 0x68;
		dev->cfg.mac[4] = (uint8_t)(id >> 8); dev->cfg.mac[5] = (uint8_t)id;
	}
	dev->cfg.status = UVH_VIRTIO_NET_S_LINK_UP;
	dev->cfg.max_virtqueue_pairs = (uint16_t)pairs;
	dev->cfg.mtu = opts->mtu ? opts->mtu : 1500;
	dev->offer_config = opts->offer_config;
	for (i = 0; i < dev->nrings; i++) {
		struct net_ring *r = &dev->rings[i];

		r->dev = dev;
		r->index = i;
		r->pair = i / 2;
		r->is_ctrl = i == 2 * pairs;
		r->is_rx = !r->is_ctrl && !(i & 1);
		r->kick_fd = r->call_fd = -1;
		atomic_init(&r->lock, 0);
		r->shared = r->is_rx && dev->port_ops->rx_shared;
	}
	if (dev->port_ops->open) {
		err = dev->port_ops->open(dev, opts);
		if (err) {
			free(dev);
			errno = -err;
			return NULL;
		}
	}
	return dev;
inval:
	errno = EINVAL;
	return NULL;
}

void uvh_net_destroy(struct uvh_net_dev *dev)
{
	unsigned int i;

	if (!dev)
		return;
	for (i = 0; i < dev->nrings; i++) {
		struct net_ring *r = &dev->rings[i];

		if (r->running) {
			UVH_WARN("%s: destroyed with ring %u running", dev->name, i);
			uvh_net_queue_stop(dev, i);
		}
		ring_free(r);
	}
	if (dev->port_ops->close)
		dev->port_ops->close(dev);
	free(dev);
}

const char *uvh_net_name(const struct uvh_net_dev *dev)
{
	return dev->name;
}

uint64_t uvh_net_features(const struct uvh_net_dev *dev)
{
	uint64_t f = UVH_BIT(UVH_VIRTIO_F_VERSION_1) | UVH_BIT(UVH_VIRTIO_NET_F_MRG_RXBUF) |
		     UVH_BIT(UVH_VIRTIO_NET_F_MAC) | UVH_BIT(UVH_VIRTIO_NET_F_STATUS) |
		     UVH_BIT(UVH_VIRTIO_NET_F_MTU) | UVH_BIT(UVH_VIRTIO_NET_F_CTRL_VQ) |
		     UVH_BIT(UVH_VIRTIO_NET_F_CTRL_RX) | UVH_BIT(UVH_VIRTIO_F_RING_EVENT_IDX) |
		     UVH_BIT(UVH_VIRTIO_F_RING_INDIRECT_DESC) | UVH_BIT(UVH_VIRTIO_F_RING_PACKED) |
		     UVH_BIT(UVH_VIRTIO_F_IN_ORDER);

	if (dev->max_pairs > 1)
		f |= UVH_BIT(UVH_VIRTIO_NET_F_MQ);
	f = (f | dev->port_ops->features_add) & ~dev->port_ops->features_drop;
	if (dev->sw)
		f &= ~net_switch_features_drop(dev->sw);	/* what its uplink cannot take */
	return f;
}

/* What the guest takes: its MTU once it negotiated MTU (+ Ethernet header
 * and a VLAN tag), else the biggest frame. */
static void rx_max_frame_update(struct uvh_net_dev *dev)
{
	uint32_t max = NET_MAX_TX;

	if (dev->features & UVH_BIT(UVH_VIRTIO_NET_F_MTU))
		max = dev->cfg.mtu + 18u;
	atomic_store_explicit(&dev->rx_max_frame, max, memory_order_relaxed);
}

int uvh_net_set_features(struct uvh_net_dev *dev, uint64_t features)
{
	features &= uvh_net_features(dev);
	/* again while rings run (LOG_ALL toggled): write nothing they read */
	if (dev->features_set && features == dev->features)
		return 0;
	if (net_features_check(features)) {
		UVH_ERR("%s: features 0x%llx break the virtio-net dependencies (TSO needs "
			"the checksum offload of its direction, ECN needs TSO)", dev->name,
			(unsigned long long)features);
		return -EINVAL;
	}
	dev->features_set = true;
	dev->features = features;
	dev->mrg = !!(dev->features & UVH_BIT(UVH_VIRTIO_NET_F_MRG_RXBUF));
	dev->hdr_len = (dev->mrg || (dev->features & UVH_BIT(UVH_VIRTIO_F_VERSION_1))) ?
		       UVH_NET_HDR_LEN : 10;
	rx_max_frame_update(dev);
	return dev->port_ops->set_features ? dev->port_ops->set_features(dev) : 0;
}

uint32_t uvh_net_num_queues(const struct uvh_net_dev *dev)
{
	return dev->nrings;
}

uint32_t uvh_net_max_pairs(const struct uvh_net_dev *dev)
{
	return dev->max_pairs;
}

uint32_t uvh_net_active_pairs(const struct uvh_net_dev *dev)
{
	return atomic_load_explicit(&((struct uvh_net_dev *)dev)->active_pairs,
				    memory_order_relaxed);
}

int uvh_net_get_config(const struct uvh_net_dev *dev, uint32_t offset, uint32_t size,
		       uint8_t *buf)
{
	uint8_t space[UVH_CONFIG_MAX_SIZE];

	if (offset > UVH_CONFIG_MAX_SIZE || size > UVH_CONFIG_MAX_SIZE - offset)
		return -EINVAL;
	memset(space, 0, sizeof(space));
	/* the struct is packed little-endian, as the spec lays it out */
	memcpy(space, &dev->cfg, sizeof(dev->cfg));
	memcpy(buf, space + offset, size);
	return 0;
}

int uvh_net_send_rarp(struct uvh_net_dev *dev, const uint8_t mac[6])
{
	uint64_t v = RARP_PENDING;

	/* the MAC and the request in one word: an engine takes both or neither */
	for (unsigned int i = 0; i < 6; i++)
		v |= (uint64_t)mac[i] << (8 * i);
	atomic_store_explicit(&dev->rarp, v, memory_order_relaxed);
	return 0;
}

int uvh_net_set_mtu(struct uvh_net_dev *dev, uint16_t mtu)
{
	if (mtu < 68 || mtu > UVH_NET_MAX_FRAME - 14)
		return -EINVAL;
	dev->cfg.mtu = mtu;
	rx_max_frame_update(dev);
	return 0;
}

void uvh_net_reset(struct uvh_net_dev *dev)
{
	dev->features = 0;
	dev->features_set = false;
	dev->mrg = false;
	dev->hdr_len = UVH_NET_HDR_LEN;
	dev->rx_mode = 0;
	rx_max_frame_update(dev);
	atomic_store(&dev->active_pairs, 1);
	atomic_store(&dev->rarp, 0);
}

/* ---- rings ------------------------------------------------------------------------- */

static int ring_alloc(struct net_ring *r)
{
	if (r->is_rx) {
		if (!r->rx && !(r->rx = calloc(1, sizeof(*r->rx))))
			return -ENOMEM;
		memset(r->rx, 0, sizeof(*r->rx));
		return 0;
	}
	if (r->tch)
		return 0;
	r->tch = calloc(UVH_NET_BURST, sizeof(*r->tch));
	r->tiov = calloc(NET_TX_IOV, sizeof(*r->tiov));
	r->tused = calloc(UVH_NET_BURST, sizeof(*r->tused));
	r->tlen = calloc(UVH_NET_BURST, sizeof(*r->tlen));
	r->thdr = calloc(UVH_NET_BURST, sizeof(*r->thdr));
	r->oiov = calloc(NET_OUT_IOV, sizeof(*r->oiov));
	r->ohdr = calloc(1, NET_GSO_HDRS_MAX);
	if (r->tch && r->tiov && r->tused && r->tlen && r->thdr && r->oiov && r->ohdr)
		return 0;
	ring_free(r);
	return -ENOMEM;
}

/* A port hears of every change to a data ring's state (after it). */
static void ring_changed(struct net_ring *r)
{
	if (!r->is_ctrl && r->dev->port_ops->ring_changed)
		r->dev->port_ops->ring_changed(r);
}

int uvh_net_queue_start(struct uvh_net_dev *dev, uint32_t index, const struct uvh_net_binding *b)
{
	const struct net_port_ops *port = dev->port_ops;
	struct net_ring *r;
	int err;

	if (index >= dev->nrings || !b || !b->vq)
		return -EINVAL;
	r = &dev->rings[index];
	if (r->running)
		return -EBUSY;
	err = ring_alloc(r);
	if (err)
		return err;
	/* RX rings that TX bursts fill on demand: buffers posted there are
	 * not work for the engine, and the guest need not kick them */
	if (b->eq) {
		b->eq->passive = r->is_rx && port->rx_passive;
		/* other engines fill it and decide its calls under its lock
		 * (net_rx_end): its own bursts' work is not its used buffers */
		b->eq->self_signal = r->shared;
	}
	if (r->shared)
		net_lock(r);
	r->vq = b->vq;
	r->eq = b->eq;
	r->engine = b->engine;
	r->kick_fd = b->kick_fd;
	r->call_fd = b->call_fd;
	r->enabled = b->enabled;
	if (!r->is_ctrl && port->start) {
		err = port->start(r);
		if (err) {
			if (r->shared)
				net_unlock(r);
			return err;
		}
	}
	r->running = true;
	if (r->shared)
		net_unlock(r);
	ring_changed(r);
	return 0;
}

void uvh_net_queue_stop(struct uvh_net_dev *dev, uint32_t index)
{
	struct net_ring *r;

	if (index >= dev->nrings)
		return;
	r = &dev->rings[index];
	if (!r->running)
		return;
	if (r->shared)
		net_lock(r);
	if (!r->is_ctrl && dev->port_ops->stop)
		dev->port_ops->stop(r);
	net_rx_pool_return(r);
	r->running = false;
	atomic_store(&r->call_pending, false);
	r->vq = NULL;
	r->eq = NULL;
	r->engine = NULL;
	if (r->shared)
		net_unlock(r);
	ring_changed(r);
}

void uvh_net_queue_enable(struct uvh_net_dev *dev, uint32_t index, bool enable)
{
	struct net_ring *r;

	if (index >= dev->nrings)
		return;
	r = &dev->rings[index];
	if (r->shared)
		net_lock(r);
	r->enabled = enable;
	if (r->shared)
		net_unlock(r);
	ring_changed(r);
}

void uvh_net_get_stats(const struct uvh_net_dev *dev, struct uvh_net_stats *st)
{
	unsigned int i;

	memset(st, 0, sizeof(*st));
	for (i = 0; i < dev->nrings; i++) {
		const struct net_ring *r = &dev->rings[i];
		uint64_t pk = atomic_load_explicit(&r->packets, memory_order_relaxed);
		uint64_t by = atomic_load_explicit(&r->bytes, memory_order_relaxed);
		uint64_t dr = atomic_load_explicit(&r->drops, memory_order_relaxed);

		if (r->is_ctrl)
			continue;
		for (unsigned int w = 0; w < UVH_NET_DROP_REASONS; w++)
			st->drops_by_reason[w] += atomic_load_explicit(&r->why[w],
								       memory_order_relaxed);
		if (r->is_rx) {
			st->tx_packets += pk;
			st->tx_bytes += by;
			st->tx_drops += dr;
		} else {
			st->rx_packets += pk;
			st->rx_bytes += by;
			st->rx_drops += dr;
		}
	}
	st->ctrl_cmds = atomic_load_explicit(&dev->ctrl_cmds, memory_order_relaxed);
}


void net_drop_log(struct uvh_net_dev *dev, enum uvh_net_drop_reason why)
{
	/* any thread may get here first: one of them logs */
	if (atomic_fetch_or_explicit(&dev->why_logged, 1u << why, memory_order_relaxed) &
	    (1u << why))
		return;
	if (why == UVH_NET_DROP_RING_OFF || why == UVH_NET_DROP_NO_BUFFER)
		return;		/* the guest's pace, not its fault: counted only */
	UVH_WARN("%s: dropped a frame: %s (the first; others are counted in the stats)",
		 dev->name, uvh_net_drop_reason_name(why));
}

#ifndef UVH_HAVE_XDP
const char *uvh_net_xdp_mode(const struct uvh_net_dev *dev)
{
	(void)dev;
	return NULL;	/* built without libxdp: no xdp port */
}
#endif

const char *uvh_net_drop_reason_name(unsigned int reason)
{
	static const char *const names[UVH_NET_DROP_REASONS] = {
		[UVH_NET_DROP_MALFORMED] = "malformed",
		[UVH_NET_DROP_CSUM_NOT_NEGOTIATED] = "csum-not-negotiated",
		[UVH_NET_DROP_GSO_NOT_NEGOTIATED] = "gso-not-negotiated",
		[UVH_NET_DROP_BAD_CSUM] = "bad-csum-offsets",
		[UVH_NET_DROP_BAD_GSO] = "bad-gso",
		[UVH_NET_DROP_OVERSIZE] = "over-mtu",
		[UVH_NET_DROP_RING_OFF] = "ring-off",
		[UVH_NET_DROP_NO_BUFFER] = "no-rx-buffer",
		[UVH_NET_DROP_PORT] = "port-refused",
		[UVH_NET_DROP_WIRE_QUEUE] = "wire-queue-full",
	};

	return reason < UVH_NET_DROP_REASONS ? names[reason] : "?";
}
