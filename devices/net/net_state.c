/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the virtio-net device's own state, saved and loaded for a
 * migration (DEVICE_STATE). A fixed little-endian layout, every field at a
 * fixed offset, so a state is checked completely before any of it is used:
 * it comes from the front-end, hence from anyone.
 *
 *   0 magic "UVNS"   4 version   6 length (48)   8 features (u64)
 *  16 max pairs     18 active pairs   20 MAC   26 MTU   28 status
 *  30 CTRL_RX modes 31..43 reserved, zero   44 CRC-32 of bytes 0..43
 */
#include <errno.h>
#include <string.h>

#include "crc32.h"
#include "net_internal.h"

#define OFF_CRC		44u
#define STATUS_BITS	(UVH_VIRTIO_NET_S_LINK_UP | UVH_VIRTIO_NET_S_ANNOUNCE)
#define RX_MODE_BITS	0x3fu	/* CTRL_RX commands 0..5 */

_Static_assert(UVH_NET_STATE_SIZE == OFF_CRC + 4, "state layout");

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)v);
	put16(p + 2, (uint16_t)(v >> 16));
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
	return get16(p) | (uint32_t)get16(p + 2) << 16;
}

int uvh_net_state_save(const struct uvh_net_dev *dev, void *buf, size_t size)
{
	uint8_t *b = buf;

	if (size < UVH_NET_STATE_SIZE)
		return -ENOSPC;
	memset(b, 0, UVH_NET_STATE_SIZE);
	put32(b, UVH_NET_STATE_MAGIC);
	put16(b + 4, UVH_NET_STATE_VERSION);
	put16(b + 6, UVH_NET_STATE_SIZE);
	put32(b + 8, (uint32_t)dev->features);
	put32(b + 12, (uint32_t)(dev->features >> 32));
	put16(b + 16, (uint16_t)dev->max_pairs);
	put16(b + 18, (uint16_t)uvh_net_active_pairs(dev));
	memcpy(b + 20, dev->cfg.mac, 6);
	put16(b + 26, dev->cfg.mtu);
	put16(b + 28, dev->cfg.status);
	b[30] = dev->rx_mode;
	put32(b + OFF_CRC, uvh_crc32(b, OFF_CRC));
	return (int)UVH_NET_STATE_SIZE;
}

int uvh_net_state_load(struct uvh_net_dev *dev, const void *buf, size_t len)
{
	const uint8_t *b = buf;
	uint64_t features;
	uint16_t max_pairs, pairs, mtu, status;
	int ret;

	if (!b || len < 8 || get32(b) != UVH_NET_STATE_MAGIC)
		return -EBADMSG;
	if (get16(b + 4) != UVH_NET_STATE_VERSION)
		return -EPROTONOSUPPORT;
	if (get16(b + 6) != UVH_NET_STATE_SIZE || len != UVH_NET_STATE_SIZE)
		return -EBADMSG;
	if (get32(b + OFF_CRC) != uvh_crc32(b, OFF_CRC))
		return -EBADMSG;
	for (unsigned int i = 31; i < OFF_CRC; i++)
		if (b[i])
			return -EBADMSG;

	features = get32(b + 8) | (uint64_t)get32(b + 12) << 32;
	max_pairs = get16(b + 16);
	pairs = get16(b + 18);
	mtu = get16(b + 26);
	status = get16(b + 28);
	if (features & ~uvh_net_features(dev))
		return -EINVAL;		/* the source offered what we cannot do */
	if (dev->features_set && features != dev->features)
		return -EINVAL;		/* the front-end negotiated something else here */
	if (!max_pairs || max_pairs > dev->max_pairs || !pairs || pairs > max_pairs)
		return -EINVAL;
	if (b[20] & 1)
		return -EINVAL;		/* a multicast MAC is no station address */
	if (mtu < 68 || mtu > UVH_NET_MAX_FRAME - 14)
		return -EINVAL;
	if (status & ~STATUS_BITS || b[30] & ~RX_MODE_BITS)
		return -EINVAL;

	/* all checked: apply, features first (a tap may refuse them) */
	if (!dev->features_set) {
		ret = uvh_net_set_features(dev, features);
		if (ret)
			return ret;
	}
	atomic_store(&dev->active_pairs, pairs);
	memcpy(dev->cfg.mac, b + 20, 6);
	uvh_net_set_mtu(dev, mtu);	/* checked above; the MTU kept for the receivers too */
	dev->cfg.status = status;
	dev->rx_mode = b[30];
	return 0;
}
