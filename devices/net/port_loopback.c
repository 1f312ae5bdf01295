/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the loopback port. Every frame the guest sends on TX ring N
 * comes back on its RX ring N, copied once, in the same burst: the RX
 * ring is passive (filled by TX bursts only) and both rings of a pair are
 * served by the same engine, so no lock is taken.
 */
#include "net_internal.h"

static void loopback_tx_burst(struct net_ring *r, unsigned int n)
{
	struct net_ring *rx = &r->dev->rings[r->index - 1];
	unsigned int i;

	net_rx_begin(rx, n, r->engine);
	for (i = 0; i < n; i++) {
		if (r->tlen[i])
			net_deliver(rx, r, i);
	}
	net_rx_end(rx);
}

/*
 * The TX ring waits, untouched, while its RX ring cannot take frames (not
 * started yet, or disabled). Its frames can go nowhere else, and a
 * front-end may set the TX ring up before the RX ring with the guest
 * writing frames the instant the last message leaves: consumed then, they
 * would all be dropped. On the pair's engine (both rings' starts, stops
 * and enables run there).
 */
static void loopback_ring_changed(struct net_ring *r)
{
	struct uvh_net_dev *dev = r->dev;
	struct net_ring *rx = &dev->rings[2 * r->pair];
	struct net_ring *tx = &dev->rings[2 * r->pair + 1];

	if (tx->eq)
		uvh_engine_queue_pause(tx->eq, UVH_ENGINE_PAUSE_DEVICE,
				       !(rx->running && rx->enabled));
}

const struct net_port_ops net_port_loopback = {
	.name = "loopback",
	.features_add = NET_OFFLOADS,
	.rx_passive = true,
	.tx_burst = loopback_tx_burst,
	.ring_changed = loopback_ring_changed,
};
