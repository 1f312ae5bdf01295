/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the source port. The guest's RX rings are filled with made-up
 * frames of opts.frame_size bytes as fast as it posts buffers: an
 * Ethernet header (to the guest's MAC, from 02:75:76:68:ff:<pair>, a
 * local experimental ethertype), a 64-bit per-ring counter, then a fixed
 * byte pattern. Its TX is counted and dropped, as a sink's.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "net_internal.h"

/* An RX ring's generator (its port_priv), kept across restarts so the
 * counter runs on. */
struct source_ring {
	uint64_t seq;
	uint8_t frame[];
};

static int source_start(struct net_ring *r)
{
	struct uvh_net_dev *dev = r->dev;
	struct source_ring *g;
	uint8_t *f;
	unsigned int i;

	if (!r->is_rx || r->port_priv)
		return 0;
	g = malloc(sizeof(*g) + dev->frame_size);
	if (!g)
		return -ENOMEM;
	g->seq = 0;
	f = g->frame;
	memcpy(f, dev->cfg.mac, 6);		/* to the guest, so it keeps it */
	f[6] = 0x02; f[7] = 0x75; f[8] = 0x76;
	f[9] = 0x68; f[10] = 0xff; f[11] = (uint8_t)r->pair;
	f[12] = 0x88; f[13] = 0xb5;		/* local experimental ethertype */
	memset(f + 14, 0, 8);			/* the counter */
	for (i = 22; i < dev->frame_size; i++)
		f[i] = (uint8_t)i;
	r->port_priv = g;
	return 0;
}

/* Fill the RX ring with generated frames, one burst. */
static unsigned int source_rx_burst(struct net_ring *r)
{
	struct uvh_net_dev *dev = r->dev;
	struct source_ring *g = r->port_priv;
	struct iovec v = { g->frame, dev->frame_size };
	unsigned int i, sent = 0;

	if (!r->enabled)
		return 0;
	net_rx_begin(r, UVH_NET_BURST, r->engine);
	for (i = 0; i < UVH_NET_BURST; i++) {
		/* stop at an empty ring without counting drops: that is back-pressure */
		if (!net_rx_room(r))
			break;
		memcpy(g->frame + 14, &g->seq, 8);
		if (net_rx_put(r, NULL, &v, 1, 0, dev->frame_size)) {
			g->seq++;
			sent++;
		} else if (r->rx->dry) {
			/* merging ran out of chains: back-pressure too, not a drop */
			r->rx->dr--;
			break;
		}
	}
	net_rx_end(r);
	return sent;
}

static void source_close(struct uvh_net_dev *dev)
{
	for (unsigned int i = 0; i < dev->nrings; i++) {
		free(dev->rings[i].port_priv);
		dev->rings[i].port_priv = NULL;
	}
}

const struct net_port_ops net_port_source = {
	.name = "source",
	.close = source_close,
	.start = source_start,
	.rx_burst = source_rx_burst,
};
