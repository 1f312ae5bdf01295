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
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

void net_lock(struct net_ring *r)
{
	/* acquire: pairs with the release in net_unlock of the previous holder */
	while (atomic_exchange_explicit(&r->lock, 1, memory_order_acquire)) {
		while (atomic_load_explicit(&r->lock, memory_order_relaxed))
			cpu_relax();
	}
}

void net_unlock(struct net_ring *r)
{
	/* release: our ring writes are seen by the next net_lock's acquire */
	atomic_store_explicit(&r->lock, 0, memory_order_release);
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
	pthread_mutex_destroy(&sw->mu);
	free(sw);
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
	for (i = 0; i < UVH_NET_SWITCH_MAX_PORTS; i++) {
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
	unsigned int i, active, qp;
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
		} else if (p != dev->port) {
			dest[i] = (uint8_t)p;
			mask |= 1ull << p;
		}
		/* learned on the sender's own port: filtered, as a bridge does */
	}
	mask &= ~(1ull << dev->port);
	while (mask) {
		struct net_ring *rx;

		p = __builtin_ctzll(mask);
		mask &= mask - 1;
		peer = atomic_load_explicit(&sw->ports[p], memory_order_acquire);
		if (!peer)
			continue;
		active = uvh_net_active_pairs(peer);
		/* once per burst and peer, not per frame */
		qp = r->pair < active ? r->pair : r->pair % active;
		rx = &peer->rings[2 * qp];
		net_rx_begin(rx, n, r->engine);
		for (i = 0; i < n; i++) {
			if (dest[i] != (uint8_t)p && dest[i] != DEST_FLOOD)
				continue;
			net_deliver(rx, r, i);
		}
		net_rx_end(rx);
	}
}

const struct net_port_ops net_port_switch = {
	.name = "switch",
	.features_add = NET_OFFLOADS,
	.rx_passive = true,
	.rx_shared = true,
	.open = switch_open,
	.close = switch_close,
	.tx_burst = switch_tx_burst,
};
