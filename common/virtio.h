/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the virtio specification's constants and ring layouts (virtio
 * 1.2): device-independent feature bits, split and packed rings, and
 * virtio-net's feature bits, header, config space and control commands.
 * The base every layer shares; it knows nothing of vhost.
 */
#ifndef UVHOST_VIRTIO_H
#define UVHOST_VIRTIO_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- device-independent feature bits (virtio 1.2, 6) ---------------------- */

#define UVH_VIRTIO_F_RING_INDIRECT_DESC	28
#define UVH_VIRTIO_F_RING_EVENT_IDX	29
#define UVH_VIRTIO_F_VERSION_1		32
#define UVH_VIRTIO_F_IOMMU_PLATFORM	33
#define UVH_VIRTIO_F_RING_PACKED	34
#define UVH_VIRTIO_F_IN_ORDER		35

/* ---- ring layouts (virtio 1.2, little-endian on every host we support) --- */

#define UVH_VRING_DESC_F_NEXT		1
#define UVH_VRING_DESC_F_WRITE		2
#define UVH_VRING_DESC_F_INDIRECT	4
#define UVH_VRING_PACKED_DESC_F_AVAIL	(1 << 7)
#define UVH_VRING_PACKED_DESC_F_USED	(1 << 15)
#define UVH_VRING_AVAIL_F_NO_INTERRUPT	1
#define UVH_VRING_USED_F_NO_NOTIFY	1
#define UVH_VRING_PACKED_EVENT_ENABLE	0
#define UVH_VRING_PACKED_EVENT_DISABLE	1
#define UVH_VRING_PACKED_EVENT_DESC	2
#define UVH_VRING_MAX_SIZE		32768u

struct uvh_vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct uvh_vring_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[];	/* size entries, then used_event */
};

struct uvh_vring_used_elem {
	uint32_t id;
	uint32_t len;
};

struct uvh_vring_used {
	uint16_t flags;
	uint16_t idx;
	struct uvh_vring_used_elem ring[];	/* size entries, then avail_event */
};

struct uvh_vring_packed_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t id;
	uint16_t flags;
};

struct uvh_vring_packed_event {
	uint16_t off_wrap;
	uint16_t flags;
};

/* ---- virtio-net constants (virtio 1.2, 5.1) ----------------------------------- */

#define UVH_VIRTIO_NET_F_CSUM			0
#define UVH_VIRTIO_NET_F_GUEST_CSUM		1
#define UVH_VIRTIO_NET_F_CTRL_GUEST_OFFLOADS	2
#define UVH_VIRTIO_NET_F_MTU			3
#define UVH_VIRTIO_NET_F_MAC			5
#define UVH_VIRTIO_NET_F_GUEST_TSO4		7
#define UVH_VIRTIO_NET_F_GUEST_TSO6		8
#define UVH_VIRTIO_NET_F_GUEST_ECN		9
#define UVH_VIRTIO_NET_F_GUEST_UFO		10
#define UVH_VIRTIO_NET_F_HOST_TSO4		11
#define UVH_VIRTIO_NET_F_HOST_TSO6		12
#define UVH_VIRTIO_NET_F_HOST_ECN		13
#define UVH_VIRTIO_NET_F_HOST_UFO		14
#define UVH_VIRTIO_NET_F_MRG_RXBUF		15
#define UVH_VIRTIO_NET_F_STATUS			16
#define UVH_VIRTIO_NET_F_CTRL_VQ		17
#define UVH_VIRTIO_NET_F_CTRL_RX		18
#define UVH_VIRTIO_NET_F_CTRL_VLAN		19
#define UVH_VIRTIO_NET_F_GUEST_ANNOUNCE		21
#define UVH_VIRTIO_NET_F_MQ			22
#define UVH_VIRTIO_NET_F_CTRL_MAC_ADDR		23

#define UVH_VIRTIO_NET_S_LINK_UP		1
#define UVH_VIRTIO_NET_S_ANNOUNCE		2

/* control ring: classes, commands, acks */
#define UVH_VIRTIO_NET_CTRL_RX			0
#define UVH_VIRTIO_NET_CTRL_RX_PROMISC		0
#define UVH_VIRTIO_NET_CTRL_RX_ALLMULTI		1
#define UVH_VIRTIO_NET_CTRL_MAC			1
#define UVH_VIRTIO_NET_CTRL_MAC_TABLE_SET	0
#define UVH_VIRTIO_NET_CTRL_MAC_ADDR_SET	1
#define UVH_VIRTIO_NET_CTRL_VLAN		2
#define UVH_VIRTIO_NET_CTRL_ANNOUNCE		3
#define UVH_VIRTIO_NET_CTRL_MQ			4
#define UVH_VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET	0
#define UVH_VIRTIO_NET_OK			0
#define UVH_VIRTIO_NET_ERR			1

/** The header in front of every frame (struct virtio_net_hdr_mrg_rxbuf). */
struct uvh_virtio_net_hdr {
	uint8_t flags;
	uint8_t gso_type;
	uint16_t hdr_len;
	uint16_t gso_size;
	uint16_t csum_start;
	uint16_t csum_offset;
	uint16_t num_buffers;	/**< MRG_RXBUF: RX chains this frame spans */
};

/* its flags and gso_type */
#define UVH_VIRTIO_NET_HDR_F_NEEDS_CSUM		1	/**< checksum from csum_start on still to do */
#define UVH_VIRTIO_NET_HDR_F_DATA_VALID		2	/**< RX: the checksum was checked */
#define UVH_VIRTIO_NET_HDR_F_RSC_INFO		4
#define UVH_VIRTIO_NET_HDR_GSO_NONE		0
#define UVH_VIRTIO_NET_HDR_GSO_TCPV4		1
#define UVH_VIRTIO_NET_HDR_GSO_UDP		3
#define UVH_VIRTIO_NET_HDR_GSO_TCPV6		4
#define UVH_VIRTIO_NET_HDR_GSO_UDP_L4		5
#define UVH_VIRTIO_NET_HDR_GSO_ECN		0x80	/**< ORed in: the frame has CWR set */

/** Its size with VERSION_1 or MRG_RXBUF. */
#define UVH_NET_HDR_LEN		12u

/** Config space (struct virtio_net_config, the part we fill). */
struct uvh_virtio_net_config {
	uint8_t mac[6];
	uint16_t status;
	uint16_t max_virtqueue_pairs;
	uint16_t mtu;
} __attribute__((packed));

#ifdef __cplusplus
}
#endif

#endif
