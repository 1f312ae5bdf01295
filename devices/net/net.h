/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the virtio-net device.
 *
 * One implementation for every hosting style. The device owns no ring and
 * no thread: a host (the vhost-user device host of devhost.h, or
 * the in-process soft backend) sets rings up (struct uvh_vq), attaches
 * them to engines and calls the device per ring:
 *
 *   uvh_net_queue_start(dev, index, &binding)   the ring runs
 *   uvh_net_queue_process(dev, index)           one burst (engine thread)
 *   uvh_net_queue_stop(dev, index)              the ring stops
 *
 * uvh_net_devhost_ops is that glue for devhost.h, ready-made.
 *
 * Rings: RX of pair N is ring 2N, TX of pair N is ring 2N+1, the control
 * ring is the last one (2 * max pairs). Both rings of a pair MUST be
 * served by the same engine (the pair's RX is filled from its TX's
 * process() without a lock; uvh_net_devhost_ops.engine_for_queue does this).
 *
 * Ports (what happens to the frames), chosen at creation:
 *   LOOPBACK  every frame the guest sends on TX N comes back on its RX N
 *   SINK      frames from the guest are read whole (copied into a host
 *             buffer, as a NIC's DMA would), counted and dropped
 *   SOURCE    the guest's RX rings are filled with generated frames of
 *             opts.frame_size bytes (Ethernet header, then a 64-bit
 *             counter); its TX is counted and dropped
 *   SWITCH    an L2 learning switch between the devices that share one
 *             struct uvh_net_switch (two: a cross-connect)
 *   TAP       a kernel tap (IFF_VNET_HDR, IFF_MULTI_QUEUE): one tap queue
 *             per pair, reads and writes through io_uring straight on
 *             guest buffers
 *
 * Frames are copied once: from the TX chain's buffers into the RX chain's
 * buffers (loopback, switch), into a host buffer (sink), or by the kernel
 * (tap).
 * The virtio-net header is 12 bytes (VERSION_1 or MRG_RXBUF; 10 for a
 * legacy driver with neither). With MRG_RXBUF a frame may span several RX
 * chains (num_buffers); without it a frame needs one chain big enough, or
 * it is dropped (counted) and the chain given back with 0 bytes.
 *
 * Counters are from the device's side: "rx" = taken from the guest's TX
 * rings, "tx" = put into the guest's RX rings.
 */
#ifndef UVHOST_NET_H
#define UVHOST_NET_H

#include <stdbool.h>
#include <stdint.h>

#include "engine.h"
#include "virtio.h"
#include "virtq.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the device ------------------------------------------------------------------ */

/** Frames per burst (per ring per process() call). */
#define UVH_NET_BURST		32u
/** Most queue pairs of one device (2N + 1 rings <= 256). */
#define UVH_NET_MAX_PAIRS	127u
/** Most ports of one switch. */
#define UVH_NET_SWITCH_MAX_PORTS	64u
/** Biggest frame (Ethernet header included, virtio-net header not). */
#define UVH_NET_MAX_FRAME	65535u

/** What the device does with frames. */
enum uvh_net_port_type {
	UVH_NET_PORT_LOOPBACK = 0,
	UVH_NET_PORT_SINK,
	UVH_NET_PORT_SOURCE,
	UVH_NET_PORT_SWITCH,
	UVH_NET_PORT_TAP,
	/** an AF_XDP socket per queue pair on a network interface (built with
	 *  libxdp; uvh_net_create fails with EOPNOTSUPP without it) */
	UVH_NET_PORT_XDP,
};

struct uvh_net_dev;
struct uvh_net_switch;

/** uvh_net_create() options; zeroed fields take the defaults. */
struct uvh_net_opts {
	enum uvh_net_port_type type;
	/** Port name for logs and stats (copied; default "net"). */
	const char *name;
	/** Queue pairs offered (1 .. UVH_NET_MAX_PAIRS; 0 = 1). With more
	 *  than one, MQ and CTRL_VQ are offered; the control ring always
	 *  exists (CTRL_VQ is always offered). */
	unsigned int queue_pairs;
	/** The guest's MAC in config space; all zeroes = 02:75:76:68:xx:xx
	 *  from a per-process counter. */
	uint8_t mac[6];
	/** MTU in config space (68 .. 65535 - 14; 0 = 1500). */
	uint16_t mtu;
	/** SOURCE: frame size in bytes without the virtio-net header
	 *  (60 .. UVH_NET_MAX_FRAME; 0 = 64). */
	unsigned int frame_size;
	/** TAP: interface name (at most 15 bytes; NULL or "" = the kernel's
	 *  choice, "tap%d"). The tap exists from uvh_net_create() on. */
	const char *tap_name;
	/** SWITCH: the switch to join (required; must outlive the device). */
	struct uvh_net_switch *sw;
	/** XDP: the network interface (required); queue pair i is bound to
	 *  its queue i, so it needs as many queues as queue_pairs. With our own
	 *  XDP program (the interface had none) frames take several UMEM frames
	 *  (multi-buffer) and the MTU in config space is the interface's when
	 *  mtu is 0; with libxdp's program it is capped to one UMEM frame. */
	const char *iface;
	/** Offer VHOST_USER_PROTOCOL_F_CONFIG through uvh_net_devhost_ops,
	 *  for front-ends that read the MAC and MTU with GET_CONFIG. Off by
	 *  default: QEMU's vhost-user-net never sends GET_CONFIG and warns
	 *  about a back-end that offers CONFIG (DPDK's vhost-user net
	 *  back-end does not offer it either). uvh_net_get_config() answers
	 *  either way. */
	bool offer_config;
};

/**
 * A new device (no ring running). NULL with errno: EINVAL (bad option,
 * SWITCH without a switch), ENOSPC (switch full), ENOMEM, or the error of
 * opening the tap (TAP: ENOENT/EPERM... when /dev/net/tun is not usable).
 */
struct uvh_net_dev *uvh_net_create(const struct uvh_net_opts *opts);

/**
 * Free @dev (NULL is a no-op). No ring may be running. A switch port
 * leaves its switch: no ring of any port of that switch may be running
 * either (another port's TX could be forwarding to this one).
 */
void uvh_net_destroy(struct uvh_net_dev *dev);

/** The port's name. */
const char *uvh_net_name(const struct uvh_net_dev *dev);
/** TAP: the interface name the kernel gave (NULL for other types). */
const char *uvh_net_tap_name(const struct uvh_net_dev *dev);
/** XDP: how the kernel runs the port ("native XDP, copy mode, need_wakeup,
 *  MTU 1500"...; NULL for other types). */
const char *uvh_net_xdp_mode(const struct uvh_net_dev *dev);

/**
 * Virtio feature bits offered: VERSION_1, MRG_RXBUF, MAC, STATUS, MTU,
 * CTRL_VQ, CTRL_RX, MQ (pairs > 1), RING_EVENT_IDX, RING_INDIRECT_DESC,
 * RING_PACKED, IN_ORDER; TAP adds CSUM, GUEST_CSUM, HOST_TSO4, HOST_TSO6,
 * HOST_ECN, GUEST_TSO4, GUEST_TSO6, GUEST_ECN (headers pass through the
 * tap both ways; the kernel hands 64 KiB segments to a guest that took
 * GUEST_TSO, read across merged buffers); LOOPBACK and SWITCH add the same
 * (a frame's header goes
 * through to a receiver that negotiated what it uses; for one that did
 * not, the device segments TSO frames and completes checksums). No
 * vhost-user bits.
 */
uint64_t uvh_net_features(const struct uvh_net_dev *dev);

/**
 * The features in force (a subset of uvh_net_features(); other bits,
 * such as vhost-user's, are ignored). Sets the header size; TAP sets the
 * tap's offloads (TUNSETOFFLOAD). May be called while rings run (the
 * virtio-net bits must then be unchanged). 0, -EINVAL for a set that
 * breaks the spec's dependencies (GUEST_TSO without GUEST_CSUM, HOST_TSO
 * without CSUM, ECN without TSO), or a TUNSETOFFLOAD error.
 */
int uvh_net_set_features(struct uvh_net_dev *dev, uint64_t features);

/** Rings: 2 * max pairs + 1 (the control ring is the last). */
uint32_t uvh_net_num_queues(const struct uvh_net_dev *dev);
/** Max queue pairs (opts.queue_pairs). */
uint32_t uvh_net_max_pairs(const struct uvh_net_dev *dev);
/** Pairs the driver uses (1 until VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET). */
uint32_t uvh_net_active_pairs(const struct uvh_net_dev *dev);

/**
 * Config space: @size bytes at @offset (struct uvh_virtio_net_config:
 * mac, status LINK_UP, max_virtqueue_pairs, mtu; bytes past it read as
 * zero). 0, or -EINVAL when offset + size passes 256.
 */
int uvh_net_get_config(const struct uvh_net_dev *dev, uint32_t offset, uint32_t size,
		       uint8_t *buf);

/**
 * SEND_RARP: queue one RARP frame (from @mac) for the guest's RX ring 0;
 * it is delivered by the next burst serving that ring. 0.
 */
int uvh_net_send_rarp(struct uvh_net_dev *dev, const uint8_t mac[6]);

/** NET_SET_MTU: 68 .. 65521 (else -EINVAL); shows in config space. */
int uvh_net_set_mtu(struct uvh_net_dev *dev, uint16_t mtu);

/** Back to a fresh device's state (features, active pairs, pending RARP). */
void uvh_net_reset(struct uvh_net_dev *dev);

/* ---- device state (migration, DEVICE_STATE) -------------------------------------- */

/** Bytes of a saved state (format version 1). */
#define UVH_NET_STATE_SIZE	48u
/** "UVNS", little-endian, first in a saved state. */
#define UVH_NET_STATE_MAGIC	0x534e5655u
#define UVH_NET_STATE_VERSION	1u

/**
 * Save the device's own state (not the rings': their bases and the inflight
 * area travel by other requests) into @buf: magic, version, length, the
 * features in force, max and active queue pairs, MAC, MTU, config status,
 * CTRL_RX modes, then a CRC-32 of all that; every field little-endian at a
 * fixed offset. Returns the bytes written (UVH_NET_STATE_SIZE) or -ENOSPC.
 * Call with every ring stopped (the state must not move meanwhile).
 */
int uvh_net_state_save(const struct uvh_net_dev *dev, void *buf, size_t size);

/**
 * Check a saved state completely, then apply it (only then: a refused one
 * leaves @dev untouched). Refusals: -EBADMSG (short/long length, bad
 * magic, checksum, reserved bytes not zero), -EPROTONOSUPPORT (version),
 * -EINVAL (a field out of range: features this device does not offer or
 * differing from the ones negotiated, pairs above this device's max or
 * active > max, multicast MAC, MTU out of 68..65521, unknown status or
 * RX mode bits). Call with every ring stopped.
 */
int uvh_net_state_load(struct uvh_net_dev *dev, const void *buf, size_t len);

/* ---- rings --------------------------------------------------------------------- */

/** How a host hands a ring to the device. */
struct uvh_net_binding {
	/** The device-side ring, initialised (uvh_vq_init); stays valid and
	 *  owned by the host until uvh_net_queue_stop(). */
	struct uvh_vq *vq;
	/** The engine queue serving it (attached right after start), or NULL
	 *  when the host does not attach it; then calls are made with
	 *  call_fd by the device itself. Its call_fd is used for calls made
	 *  from another engine (switch). The device sets its passive flag
	 *  (engine.h) for the RX rings that TX bursts fill. */
	struct uvh_engine_queue *eq;
	/** The engine that will serve this ring (NULL: none / the caller). */
	struct uvh_engine *engine;
	/** The guest's kick eventfd or -1 (not closed by the device). TAP
	 *  registers it with the ring's own io_uring so a tap completion wakes
	 *  the engine as a kick does; SWITCH: another port's engine writes it
	 *  to wake the serving engine when the guest wants a call. It must
	 *  not change while the ring runs (a new kick fd = stop, start). */
	int kick_fd;
	/** The call eventfd or -1, used only when eq is NULL (else
	 *  eq->call_fd is, read on the serving engine's thread only, so the
	 *  host may swap it there). */
	int call_fd;
	/** SET_VRING_ENABLE state (see uvh_net_queue_enable). */
	bool enabled;
};

/**
 * Ring @index starts: call on the thread of the engine that will serve
 * it (or with that engine stopped). May allocate (TAP: the ring's
 * io_uring). 0, -EINVAL (index, vq), -EBUSY (already running), -ENOMEM.
 */
int uvh_net_queue_start(struct uvh_net_dev *dev, uint32_t index,
			const struct uvh_net_binding *b);

/**
 * Ring @index stops (already detached from its engine; on the thread that
 * served it). RX chains the device held are given back (0 bytes); TAP
 * waits for its reads and writes on guest buffers to end. The vq's base
 * is then final.
 */
void uvh_net_queue_stop(struct uvh_net_dev *dev, uint32_t index);

/** SET_VRING_ENABLE on a running ring (its engine's thread). The device host
 *  never processes a disabled ring (its chains wait); a host that does
 *  gets TX consumed and dropped, and RX nothing. */
void uvh_net_queue_enable(struct uvh_net_dev *dev, uint32_t index, bool enable);

/**
 * One burst on ring @index (the engine's process()): returns the work
 * done (0 = none). Never blocks, never allocates, no lock except a
 * switch's per-RX-ring spinlock. A TX ring's burst also fills its pair's
 * RX ring (loopback) and asks for that ring's call through
 * uvh_engine_queue_signal(): hence one engine per pair. A switch port's
 * RX ring reports no work of its own (its engine never calls
 * uvh_vq_need_call on it: the producers do, under the ring's lock).
 *
 * Memory tables: RX chains held between bursts, and tap reads in flight,
 * point into the table they were popped from; a table change that
 * removes the region holding them must stop the ring first (regions the
 * new table keeps stay mapped, see memory.h).
 */
unsigned int uvh_net_queue_process(struct uvh_net_dev *dev, uint32_t index);

/* ---- counters ----------------------------------------------------------------- */

/**
 * Why a frame was dropped. Every drop counted in rx_drops or tx_drops is
 * counted once more under one reason (uvh_net_stats.drops_by_reason).
 */
enum uvh_net_drop_reason {
	/** from the guest: shorter than its header (switch: than an Ethernet
	 *  header) or longer than UVH_NET_MAX_FRAME + 18 */
	UVH_NET_DROP_MALFORMED = 0,
	/** from the guest: NEEDS_CSUM without CSUM negotiated */
	UVH_NET_DROP_CSUM_NOT_NEGOTIATED,
	/** from the guest: a gso_type without its HOST_TSO4/6 (ECN: HOST_ECN;
	 *  UFO and USO are not offered) */
	UVH_NET_DROP_GSO_NOT_NEGOTIATED,
	/** from the guest: csum_start + csum_offset past the frame */
	UVH_NET_DROP_BAD_CSUM,
	/** from the guest: an unknown gso_type, a GSO frame without NEEDS_CSUM,
	 *  gso_size 0, hdr_len past the frame, or (to be segmented) not TCP
	 *  over IPv4 / IPv6 without
	 *  extension headers, no payload, more than 512 segments */
	UVH_NET_DROP_BAD_GSO,
	/** for a guest: larger than its MTU (when it negotiated MTU), or
	 *  segments that would be */
	UVH_NET_DROP_OVERSIZE,
	/** the ring was disabled or stopped */
	UVH_NET_DROP_RING_OFF,
	/** for a guest: no RX chain, or a chain too small (no MRG_RXBUF) */
	UVH_NET_DROP_NO_BUFFER,
	/** the port refused it (tap: the kernel's write failed; xdp: the link
	 *  is down or the interface gone) */
	UVH_NET_DROP_PORT,
	/** from the wire: lost in the kernel before the port read it (xdp: the
	 *  AF_XDP RX ring or the fill ring was full, the guest not keeping up) */
	UVH_NET_DROP_WIRE_QUEUE,
	UVH_NET_DROP_REASONS
};

/** A reason's name ("malformed", "csum-not-negotiated", ...; "?" when unknown). */
const char *uvh_net_drop_reason_name(unsigned int reason);

/** Counters of one port (summed over its pairs; relaxed reads). */
struct uvh_net_stats {
	uint64_t rx_packets;	/**< frames taken from the guest's TX */
	uint64_t rx_bytes;	/**< their bytes, virtio-net header excluded */
	uint64_t rx_drops;	/**< taken but dropped: shorter than the header (switch:
				 *   than an Ethernet header), longer than
				 *   UVH_NET_MAX_FRAME + 18, ring disabled, or refused
				 *   by the tap */
	uint64_t tx_packets;	/**< frames put into the guest's RX */
	uint64_t tx_bytes;
	uint64_t tx_drops;	/**< frames for the guest that found no room (RX full,
				 *   chain too small, ring stopped or disabled) */
	uint64_t ctrl_cmds;	/**< control ring commands handled */
	/** rx_drops + tx_drops, by enum uvh_net_drop_reason */
	uint64_t drops_by_reason[UVH_NET_DROP_REASONS];
};

/** Fill @st. Safe from any thread. */
void uvh_net_get_stats(const struct uvh_net_dev *dev, struct uvh_net_stats *st);

/* ---- switch -------------------------------------------------------------------- */

/**
 * An L2 learning switch: MACs learned from source addresses (lock-free
 * table, last writer wins), unknown and broadcast/multicast destinations
 * flooded to every other port. A frame for a port goes to the RX ring of
 * the same pair index when that pair is active there, else pair 0.
 * NULL with errno ENOMEM.
 */
struct uvh_net_switch *uvh_net_switch_create(void);
/** Free (NULL is a no-op); every port must have been destroyed. */
void uvh_net_switch_destroy(struct uvh_net_switch *sw);
/** Ports on the switch. */
unsigned int uvh_net_switch_ports(const struct uvh_net_switch *sw);
/** The port a MAC was learned on (the device), or NULL (also when it was
 *  learned on the uplink). */
struct uvh_net_dev *uvh_net_switch_lookup(const struct uvh_net_switch *sw, const uint8_t mac[6]);
/**
 * Give the switch an uplink to a wire, before any port joins: @spec is
 * "xdp:IFACE" (an AF_XDP socket per queue on IFACE's queues 0..@queues-1;
 * built with libxdp, else -EOPNOTSUPP) or "tap:NAME" (a tap, made if
 * needed; the kernel's stack, e.g. in a bridge). Frames to MACs learned on
 * the wire, and unknown and broadcast ones, go out on queue (the sender's
 * pair % @queues); frames from the wire are switched to the ports like a
 * port's, polled by the ports' RX rings of that pair. The switch then has
 * UVH_NET_SWITCH_MAX_PORTS - 1 ports. With an xdp uplink the ports offer
 * no CSUM/HOST_TSO/HOST_ECN (the wire wants whole frames); a tap takes them.
 * 0, -EINVAL (bad spec, queues 0, an uplink already), -EBUSY (ports
 * joined), -ENODEV, or the error of opening it (logged).
 */
int uvh_net_switch_set_uplink(struct uvh_net_switch *sw, const char *spec, unsigned int queues);
/** "xdp eth1, 2 queues: native XDP, copy mode, need_wakeup" (NULL: none). */
const char *uvh_net_switch_uplink_info(const struct uvh_net_switch *sw);
/** The uplink's counters as a port's (rx: from the guests to the wire; tx:
 *  from the wire to the guests; drops by reason); -ENOENT without one. */
int uvh_net_switch_uplink_stats(const struct uvh_net_switch *sw, struct uvh_net_stats *st);

/* ---- vhost-user glue --------------------------------------------------------------- */

struct uvh_devhost_device_ops;
/**
 * The device ops for struct uvh_devhost (devhost.h), with the
 * struct uvh_net_dev * as opts.dev: features, protocol features (MQ,
 * RARP, NET_MTU; CONFIG only with opts.offer_config), num_queues
 * (2N + 1), queue_num_reply (N),
 * engine_for_queue (pair N on engine N % nengines, the control ring on
 * engine 0), get_config, queue_start/stop/enable, process, reset,
 * device_request (SEND_RARP, NET_SET_MTU), save_state, load_state.
 */
extern const struct uvh_devhost_device_ops uvh_net_devhost_ops;


#ifdef __cplusplus
}
#endif

#endif
