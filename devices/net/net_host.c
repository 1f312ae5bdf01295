/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the virtio-net device as a device of the vhost-user device host
 * (host/devhost.h): uvh_net_devhost_ops maps the host's per-device ops
 * onto the net.h API, one ring of the host onto one net ring.
 */
#include <errno.h>
#include <string.h>

#include "util.h"
#include "message.h"
#include "devhost.h"
#include "net_internal.h"

static uint64_t dh_features(void *dev)
{
	return uvh_net_features(dev);
}

/* CONFIG only when asked (net.h, uvh_net_opts.offer_config): QEMU's
 * vhost-user-net reads nothing through GET_CONFIG and warns when it is
 * offered. */
static uint64_t dh_protocol_features(void *dev)
{
	struct uvh_net_dev *d = dev;
	uint64_t pf = UVH_BIT(UVH_PROTOCOL_F_MQ) | UVH_BIT(UVH_PROTOCOL_F_RARP) |
		      UVH_BIT(UVH_PROTOCOL_F_NET_MTU);

	if (d->offer_config)
		pf |= UVH_BIT(UVH_PROTOCOL_F_CONFIG);
	return pf;
}

static int dh_set_features(void *dev, uint64_t features)
{
	return uvh_net_set_features(dev, features);
}

static uint32_t dh_num_queues(void *dev)
{
	return uvh_net_num_queues(dev);
}

static uint64_t dh_queue_num_reply(void *dev)
{
	return uvh_net_max_pairs(dev);
}

static uint32_t dh_engine_for_queue(void *dev, uint32_t index, uint32_t nengines)
{
	struct uvh_net_dev *d = dev;

	if (index >= 2 * d->max_pairs || !nengines)
		return 0;	/* the control ring: rare, anywhere */
	return (index / 2) % nengines;	/* both rings of a pair together */
}

/* Transmit rings (odd, below the control ring) carry only frames to read. */
static bool dh_queue_device_reads_only(void *dev, uint32_t index)
{
	struct uvh_net_dev *d = dev;

	return index < 2 * d->max_pairs && (index & 1);
}

static int dh_get_config(void *dev, uint32_t offset, uint32_t size, uint8_t *buf)
{
	return uvh_net_get_config(dev, offset, size, buf);
}

static int dh_queue_start(void *dev, struct uvh_devhost_queue *q)
{
	struct uvh_net_dev *d = dev;
	struct uvh_net_binding b = {
		.vq = &q->vq,
		.eq = &q->eq,
		.engine = q->engine,
		.kick_fd = q->eq.kick_fd,
		.call_fd = q->eq.call_fd,
		.enabled = q->enabled,
	};
	int err = uvh_net_queue_start(d, q->index, &b);

	if (!err)
		q->priv = &d->rings[q->index];
	return err;
}

static void dh_queue_stop(void *dev, struct uvh_devhost_queue *q)
{
	uvh_net_queue_stop(dev, q->index);
	q->priv = NULL;
}

static unsigned int dh_process(struct uvh_engine_queue *eq)
{
	struct uvh_devhost_queue *q = uvh_devhost_queue_of(eq);
	struct net_ring *r = q->priv;

	if (unlikely(!r))
		return 0;
	return uvh_net_queue_process(r->dev, r->index);
}

static void dh_queue_enable(void *dev, struct uvh_devhost_queue *q, bool enable)
{
	uvh_net_queue_enable(dev, q->index, enable);
}

static void dh_reset(void *dev)
{
	uvh_net_reset(dev);
}

static int dh_device_request(void *dev, uint32_t request, const void *payload, uint32_t size)
{
	uint64_t mtu;

	switch (request) {
	case UVH_REQ_SEND_RARP:
		return size >= 6 ? uvh_net_send_rarp(dev, payload) : -EINVAL;
	case UVH_REQ_NET_SET_MTU:
		if (size < sizeof(mtu))
			return -EINVAL;
		memcpy(&mtu, payload, sizeof(mtu));
		return mtu > UINT16_MAX ? -EINVAL : uvh_net_set_mtu(dev, (uint16_t)mtu);
	}
	return -ENOSYS;
}

static int dh_save_state(void *dev, void *buf, size_t size)
{
	return uvh_net_state_save(dev, buf, size);
}

static int dh_load_state(void *dev, const void *buf, size_t len)
{
	return uvh_net_state_load(dev, buf, len);
}

const struct uvh_devhost_device_ops uvh_net_devhost_ops = {
	.features = dh_features,
	.protocol_features = dh_protocol_features,
	.set_features = dh_set_features,
	.num_queues = dh_num_queues,
	.queue_num_reply = dh_queue_num_reply,
	.engine_for_queue = dh_engine_for_queue,
	.queue_device_reads_only = dh_queue_device_reads_only,
	.get_config = dh_get_config,
	.queue_start = dh_queue_start,
	.queue_stop = dh_queue_stop,
	.process = dh_process,
	.queue_enable = dh_queue_enable,
	.reset = dh_reset,
	.device_request = dh_device_request,
	.save_state = dh_save_state,
	.load_state = dh_load_state,
};
