/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the virtio-net control ring (VIRTIO_NET_F_CTRL_VQ): RX modes,
 * MAC filters, multiqueue pairs, announce acks. A command is read from
 * the chain's readable part; its one-byte ack goes into the last writable
 * byte. A command we do not know or that does not fit is acked
 * VIRTIO_NET_ERR and changes nothing.
 */
#include "log.h"
#include "util.h"
#include "net_internal.h"

static uint8_t ctrl_cmd(struct uvh_net_dev *dev, const struct uvh_vq_chain *c)
{
	uint8_t b[8];
	size_t got = net_iov_read(c->iov, c->nout, 0, b, sizeof(b));
	uint16_t pairs;

	if (got < 2)
		return UVH_VIRTIO_NET_ERR;
	switch (b[0]) {
	case UVH_VIRTIO_NET_CTRL_RX:
		/* promisc, allmulti, alluni, nomulti, nouni, nobcast: we filter
		 * nothing, so every mode is already in force (kept for the
		 * device state a migration carries) */
		if (b[1] <= 5 && got >= 3) {
			uint8_t bit = (uint8_t)(1u << b[1]);

			dev->rx_mode = b[2] ? (uint8_t)(dev->rx_mode | bit) :
					      (uint8_t)(dev->rx_mode & ~bit);
			return UVH_VIRTIO_NET_OK;
		}
		break;
	case UVH_VIRTIO_NET_CTRL_MAC:
		if (b[1] == UVH_VIRTIO_NET_CTRL_MAC_TABLE_SET ||
		    (b[1] == UVH_VIRTIO_NET_CTRL_MAC_ADDR_SET && got >= 8))
			return UVH_VIRTIO_NET_OK;
		break;
	case UVH_VIRTIO_NET_CTRL_MQ:
		if (b[1] != UVH_VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET || got < 4 ||
		    !(dev->features & UVH_BIT(UVH_VIRTIO_NET_F_MQ)))
			break;
		pairs = (uint16_t)(b[2] | b[3] << 8);
		if (pairs < 1 || pairs > dev->max_pairs)
			break;
		atomic_store_explicit(&dev->active_pairs, pairs, memory_order_relaxed);
		UVH_DEBUG("%s: %u queue pairs active", dev->name, pairs);
		return UVH_VIRTIO_NET_OK;
	case UVH_VIRTIO_NET_CTRL_ANNOUNCE:
		return UVH_VIRTIO_NET_OK;
	}
	return UVH_VIRTIO_NET_ERR;
}

unsigned int net_ctrl_process(struct net_ring *r)
{
	struct uvh_net_dev *dev = r->dev;
	unsigned int i, n;
	uint8_t ack;
	struct iovec v = { &ack, 1 };
	struct net_src s;
	int got;

	got = uvh_vq_pop(r->vq, r->tch, UVH_NET_BURST, r->tiov, NET_TX_IOV);
	if (got <= 0)
		return 0;
	n = (unsigned int)got;
	for (i = 0; i < n; i++) {
		const struct uvh_vq_chain *c = &r->tch[i];

		ack = ctrl_cmd(dev, c);
		r->tused[i].id = c->id;
		r->tused[i].ndesc = c->ndesc;
		r->tused[i].len = 0;
		/* the ack is the last writable byte (the spec's layout puts it alone there) */
		if (c->in_len >= 1) {
			net_src_init(&s, &v, 1, 0);
			net_copy_to(&s, c->iov + c->nout, c->nin, c->in_len - 1, 1);
			r->tused[i].len = c->in_len;
		}
	}
	uvh_vq_push(r->vq, r->tused, n);
	net_count(&dev->ctrl_cmds, n);
	return n;
}
