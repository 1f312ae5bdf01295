/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the switch port, an L2 learning switch between the devices that
 * share one struct uvh_net_switch.
 *
 * The switch and its RX rings. A port's RX ring is filled by the TX
 * bursts of every other port, and those run on whatever engines serve
 * them. We chose a short spinlock per RX ring over a lock-free handoff:
 *   - an SPSC handoff would have the destination engine copy from the
 *     source's TX buffers, so the source could not complete its TX chains
 *     (in order) until every destination had copied: a completion ring
 *     back per pair of engines, TX chains held across engines, and
 *     latency tied to the slowest port; or a second copy into a staging
 *     buffer, which the one-copy rule forbids;
 *   - the lock is held for one burst into one ring (pop, at most 32
 *     copies, one push, the call decision): microseconds, and contended
 *     only when two ports send to the same port at the same moment.
 *     Uncontended it costs two atomic operations per burst per
 *     destination, not per frame. We spin (no trylock-and-drop) so a busy
 *     port does not lose frames to a merely unlucky one.
 * The holder also decides the call (uvh_vq_need_call under the lock):
 * the engine that serves the RX ring never calls need_call on it, because
 * its process() never reports work. The call eventfd itself is written by
 * the serving engine (flagged, and woken through the ring's kick eventfd)
 * unless the holder is that engine: the host swaps call fds on the
 * serving engine's thread and closes the old one, so only that thread
 * may write it (see net_rx_end in net_rx.c).
 * What the serving engine still does without the lock is switching guest
 * notifications on and off (it reads the ring's avail position while a
 * holder may move it): at worst the guest kicks an RX ring once more or
 * once less, and RX kicks are not waited for by a switch port.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "net_internal.h"

#define TABLE_BITS	12
#define TABLE_SIZE	(1u << TABLE_BITS)
#define DEST_FLOOD	0xfe
#define DEST_DROP	0xff
/* The uplink's port index (in the MAC table and the destination masks):
 * the last one, which no device takes. */
#define UPLINK_PORT	(UVH_NET_SWITCH_MAX_PORTS - 1)

struct uvh_net_switch {
	pthread_mutex_t mu;			/* join/leave */
	_Atomic(struct uvh_net_dev *) ports[UVH_NET_SWITCH_MAX_PORTS];
	_Atomic unsigned int nports;
	/*
	 * MAC -> port: one 64-bit word per slot, the MAC in bits 16-63 and
	 * port + 1 in bits 0-15, so a reader sees an entry whole or not at
	 * all without a lock. Direct-mapped: a collision evicts (the frame is
	 * flooded until learned again).
	 */
	_Atomic uint64_t table[TABLE_SIZE];
	/* the wire (or NULL), set before any port joins; see uplink.c */
	struct net_uplink *uplink;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

void net_spin_lock(atomic_int *l)
{
	/* acquire: pairs with the release in net_spin_unlock of the previous holder */
	while (atomic_exchange_explicit(l, 1, memory_order_acquire)) {
		while (atomic_load_explicit(l, memory_order_relaxed))
			cpu_relax();
	}
}

void net_spin_unlock(atomic_int *l)
{
	/* release: our writes are seen by the next net_spin_lock's acquire */
	atomic_store_explicit(l, 0, memory_order_release);
}

void net_lock(struct net_ring *r)
{
	net_spin_lock(&r->lock);
}

void net_unlock(struct net_ring *r)
{
	net_spin_unlock(&r->lock);
}

static inline uint64_t mac48(const uint8_t *m)
{
	return (uint64_t)m[0] << 40 | (uint64_t)m[1] << 32 | (uint64_t)m[2] << 24 |
	       (uint64_t)m[3] << 16 | (uint64_t)m[4] << 8 | m[5];
}

static inline unsigned int mac_slot(uint64_t mac)
{
	/* a multiplicative hash: no division on the data path */
	return (unsigned int)((mac * 0x9e3779b97f4a7c15ull) >> (64 - TABLE_BITS));
}

static inline void learn(struct uvh_net_switch *sw, uint64_t mac, int port)
{
	_Atomic uint64_t *e = &sw->table[mac_slot(mac)];
	uint64_t v = mac << 16 | (uint64_t)(port + 1);

	/* write only on a change: a steady flow must not bounce the line */
	if (atomic_load_explicit(e, memory_order_relaxed) != v)
		atomic_store_explicit(e, v, memory_order_relaxed);
}

static inline int lookup(const struct uvh_net_switch *sw, uint64_t mac)
{
	uint64_t v = atomic_load_explicit(&((struct uvh_net_switch *)sw)->table[mac_slot(mac)],
					  memory_order_relaxed);

	if ((v >> 16) != mac || !(v & 0xffff))
		return -1;
	return (int)(v & 0xffff) - 1;
}

struct uvh_net_switch *uvh_net_switch_create(void)
{
	struct uvh_net_switch *sw = calloc(1, sizeof(*sw));

	if (!sw)
		return NULL;
	pthread_mutex_init(&sw->mu, NULL);
	return sw;
}

void uvh_net_switch_destroy(struct uvh_net_switch *sw)
{
	if (!sw)
		return;
	if (atomic_load(&sw->nports))
		UVH_WARN("switch destroyed with %u ports", atomic_load(&sw->nports));
	net_uplink_close(sw->uplink);
	pthread_mutex_destroy(&sw->mu);
	free(sw);
}

int uvh_net_switch_set_uplink(struct uvh_net_switch *sw, const char *spec, unsigned int queues)
{
	int err;

	if (!sw || !spec || sw->uplink)
		return -EINVAL;
	if (atomic_load(&sw->nports))
		return -EBUSY;	/* the ports' features depend on it */
	sw->uplink = net_uplink_open(spec, queues, &err);
	return sw->uplink ? 0 : err;
}

const char *uvh_net_switch_uplink_info(const struct uvh_net_switch *sw)
{
	return sw && sw->uplink ? net_uplink_info(sw->uplink) : NULL;
}

int uvh_net_switch_uplink_stats(const struct uvh_net_switch *sw, struct uvh_net_stats *st)
{
	if (!sw || !sw->uplink)
		return -ENOENT;
	net_uplink_stats(sw->uplink, st);
	return 0;
}

uint64_t net_switch_features_drop(const struct uvh_net_switch *sw)
{
	return sw->uplink ? net_uplink_features_drop(sw->uplink) : 0;
}

unsigned int uvh_net_switch_ports(const struct uvh_net_switch *sw)
{
	return atomic_load(&((struct uvh_net_switch *)sw)->nports);
}

struct uvh_net_dev *uvh_net_switch_lookup(const struct uvh_net_switch *sw, const uint8_t mac[6])
{
	int p = lookup(sw, mac48(mac));

	if (p < 0 || p >= (int)UVH_NET_SWITCH_MAX_PORTS)
		return NULL;
	return atomic_load(&((struct uvh_net_switch *)sw)->ports[p]);
}

static int switch_open(struct uvh_net_dev *dev, const struct uvh_net_opts *opts)
{
	struct uvh_net_switch *sw = opts->sw;
	unsigned int i;
	int err = -ENOSPC;

	if (!sw)
		return -EINVAL;
	pthread_mutex_lock(&sw->mu);
	for (i = 0; i < UPLINK_PORT; i++) {
		if (atomic_load(&sw->ports[i]))
			continue;
		dev->sw = sw;
		dev->port = (int)i;
		/* release: the device is complete before another port sees it */
		atomic_store_explicit(&sw->ports[i], dev, memory_order_release);
		atomic_fetch_add(&sw->nports, 1);
		err = 0;
		break;
	}
	pthread_mutex_unlock(&sw->mu);
	return err;
}

static void switch_close(struct uvh_net_dev *dev)
{
	struct uvh_net_switch *sw = dev->sw;
	unsigned int i;
	uint64_t v;

	if (!sw || dev->port < 0)
		return;
	pthread_mutex_lock(&sw->mu);
	atomic_store(&sw->ports[dev->port], NULL);
	for (i = 0; i < TABLE_SIZE; i++) {
		v = atomic_load(&sw->table[i]);
		if ((v & 0xffff) == (uint64_t)dev->port + 1)
			atomic_store(&sw->table[i], 0);
	}
	atomic_fetch_sub(&sw->nports, 1);
	dev->port = -1;
	pthread_mutex_unlock(&sw->mu);
}

/* A port's RX ring for pair @pair of another port (that pair when active
 * there, else one of its active ones). */
static struct net_ring *peer_rx(struct uvh_net_dev *peer, unsigned int pair)
{
	unsigned int active = uvh_net_active_pairs(peer);

	return &peer->rings[2 * (pair < active ? pair : pair % active)];
}

/*
 * Forward a TX burst of @n chains (r->tch, r->tlen) of a switch port:
 * learn the sources, decide each frame's port, then visit each
 * destination ring once (lock, copy its frames in order, push, unlock).
 * A frame without a whole Ethernet header is refused (tlen 0: a drop).
 */
static void switch_tx_burst(struct net_ring *r, unsigned int n)
{
	struct uvh_net_dev *dev = r->dev, *peer;
	struct uvh_net_switch *sw = dev->sw;
	uint8_t dest[UVH_NET_BURST];
	uint8_t eth[12];
	uint64_t mask = 0;
	unsigned int i;
	int p;

	for (i = 0; i < n; i++) {
		const struct uvh_vq_chain *c = &r->tch[i];

		dest[i] = DEST_DROP;
		if (!r->tlen[i])
			continue;
		if (r->tlen[i] < 14 ||
		    net_iov_read(c->iov, c->nout, dev->hdr_len, eth, 12) < 12) {
			r->tlen[i] = 0;
			net_why(r, UVH_NET_DROP_MALFORMED);
			continue;
		}
		if (!(eth[6] & 1))
			learn(sw, mac48(eth + 6), dev->port);
		if (eth[0] & 1) {
			dest[i] = DEST_FLOOD;
			mask = ~0ull;
			continue;
		}
		p = lookup(sw, mac48(eth));
		if (p < 0) {
			dest[i] = DEST_FLOOD;
			mask = ~0ull;
		} else if (p != dev->port) {	/* a port, or the uplink */
			dest[i] = (uint8_t)p;
			mask |= 1ull << p;
		}
		/* learned on the sender's own port: filtered, as a bridge does */
	}
	mask &= ~(1ull << dev->port);
	if (!sw->uplink)
		mask &= ~(1ull << UPLINK_PORT);
	while (mask) {
		struct net_ring *rx;

		p = __builtin_ctzll(mask);
		mask &= mask - 1;
		if (p == UPLINK_PORT) {
			net_uplink_send(sw->uplink, r, dest, UPLINK_PORT, DEST_FLOOD, n);
			continue;
		}
		peer = atomic_load_explicit(&sw->ports[p], memory_order_acquire);
		if (!peer)
			continue;
		rx = peer_rx(peer, r->pair);	/* once per burst and peer, not per frame */
		net_rx_begin(rx, n, r->engine);
		for (i = 0; i < n; i++) {
			if (dest[i] != (uint8_t)p && dest[i] != DEST_FLOOD)
				continue;
			net_deliver(rx, r, i);
		}
		net_rx_end(rx);
	}
}

/*
 * Frames from the wire, polled by the RX rings of every port (the uplink
 * has no engine of its own): learn their sources on the uplink, then visit
 * each destination ring once, as a TX burst does. Frames from the wire
 * carry no offloads; one over a guest's MTU is dropped there.
 */
static unsigned int switch_rx_burst(struct net_ring *r)
{
	struct uvh_net_switch *sw = r->dev->sw;
	struct iovec v[UVH_NET_BURST];
	uint8_t dest[UVH_NET_BURST];
	uint64_t mask = 0;
	unsigned int n, i;
	int p;

	if (!sw || !sw->uplink || !r->enabled)
		return 0;
	n = net_uplink_rx_begin(sw->uplink, r->pair, v, UVH_NET_BURST);
	for (i = 0; i < n; i++) {
		const uint8_t *eth = v[i].iov_base;

		dest[i] = DEST_DROP;
		if (v[i].iov_len < 14)
			continue;
		if (!(eth[6] & 1))
			learn(sw, mac48(eth + 6), UPLINK_PORT);
		p = eth[0] & 1 ? -1 : lookup(sw, mac48(eth));
		if (p < 0) {
			dest[i] = DEST_FLOOD;
			mask = ~0ull;
		} else if (p != UPLINK_PORT) {
			dest[i] = (uint8_t)p;
			mask |= 1ull << p;
		}
	}
	mask &= ~(1ull << UPLINK_PORT);
	while (mask) {
		struct uvh_net_dev *peer;
		struct net_ring *rx;

		p = __builtin_ctzll(mask);
		mask &= mask - 1;
		peer = atomic_load_explicit(&sw->ports[p], memory_order_acquire);
		if (!peer)
			continue;
		rx = peer_rx(peer, r->pair);
		net_rx_begin(rx, n, r->engine);
		for (i = 0; i < n; i++) {
			if (dest[i] != (uint8_t)p && dest[i] != DEST_FLOOD)
				continue;
			if (v[i].iov_len > rx->max_frame)
				net_drop(rx, UVH_NET_DROP_OVERSIZE, 1);
			else
				net_rx_put(rx, NULL, &v[i], 1, 0, (uint32_t)v[i].iov_len);
		}
		net_rx_end(rx);
	}
	if (n)
		net_uplink_rx_end(sw->uplink, r->pair, n);
	return n;
}

static int switch_start(struct net_ring *r)
{
	struct uvh_net_switch *sw = r->dev->sw;

	/* frames from the wire wake the engines of the rings that poll it */
	if (r->is_rx && r->eq && sw && sw->uplink)
		r->eq->wake_fd = net_uplink_wake_fd(sw->uplink, r->pair);
	return 0;
}

const struct net_port_ops net_port_switch = {
	.name = "switch",
	.features_add = NET_OFFLOADS,
	.rx_passive = true,
	.rx_shared = true,
	.open = switch_open,
	.close = switch_close,
	.start = switch_start,
	.tx_burst = switch_tx_burst,
	.rx_burst = switch_rx_burst,
};
