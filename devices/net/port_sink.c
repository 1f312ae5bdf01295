/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the sink port. Every frame from the guest is read whole, copied
 * into a host buffer as a NIC's DMA or a host stack's copy would, then
 * counted and dropped; the guest's RX rings only ever get a RARP. Reading
 * the bytes is the point: a sink that only counted chains would measure
 * ring handling, not a device that consumes frames.
 */
#include <errno.h>
#include <stdlib.h>

#include "net_internal.h"

static int sink_start(struct net_ring *r)
{
	if (r->is_rx || r->port_priv)
		return 0;
	r->port_priv = malloc(NET_MAX_TX);	/* kept until the device goes */
	return r->port_priv ? 0 : -ENOMEM;
}

static void sink_tx_burst(struct net_ring *r, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++)
		if (r->tlen[i])
			net_iov_read(r->tch[i].iov, r->tch[i].nout, r->dev->hdr_len, r->port_priv,
				     r->tlen[i]);
}

static void sink_close(struct uvh_net_dev *dev)
{
	for (unsigned int i = 0; i < dev->nrings; i++) {
		free(dev->rings[i].port_priv);
		dev->rings[i].port_priv = NULL;
	}
}

const struct net_port_ops net_port_sink = {
	.name = "sink",
	.rx_passive = true,
	.start = sink_start,
	.tx_burst = sink_tx_burst,
	.close = sink_close,
};
