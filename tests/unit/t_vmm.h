/* SPDX-License-Identifier: MIT */
/*
 * A tiny VMM for the backend tests (and for whoever writes one): guest
 * memory in memfds, the driver side of a virtio-net device's first queue
 * pair (RX ring 0, TX ring 1) built with uvhost's driver-side virtqueues,
 * handed to any struct uvh_vhost, and frames sent and received through
 * them. No test framework in here: every call returns 0 or a negative
 * errno (with a line on stderr saying what went wrong).
 *
 * Life cycle:
 *   t_vmm_init(&v, b, &opts)       memory, eventfds (b stays the caller's)
 *   t_vmm_start(&v)                owner, features, memory table, both rings
 *                                  set up and started, RX filled
 *   t_vmm_send() ... t_vmm_flush() frames on TX (virtio-net header first)
 *   t_vmm_recv()                   a frame from RX (its buffer re-posted)
 *   t_vmm_stop(&v, bases)          get_vring_base of both rings, drained
 *   t_vmm_fini(&v)
 *
 * Memory: region 0 holds the rings, the RX buffers and a TX buffer pool;
 * t_vmm_add_region() adds one more (with a TX pool of its own, so frames
 * can be sent from it) through the backend's add_mem_region.
 */
#ifndef UVH_T_VMM_H
#define UVH_T_VMM_H

#include <stdbool.h>
#include <stdint.h>

#include "vhost.h"
#include "virtq.h"

#define T_VMM_MAX_MEM		4u
#define T_VMM_BUF		2048u	/* bytes per RX and TX buffer */
#define T_VMM_HDR		12u	/* virtio-net header (VERSION_1) */
#define T_VMM_MAX_FRAME		(T_VMM_BUF - T_VMM_HDR)
#define T_VMM_RX		0u
#define T_VMM_TX		1u

/** One memfd of guest memory at a guest-physical address. */
struct t_vmm_mem {
	int fd;			/**< -1 when unused */
	uint8_t *hva;
	uint64_t gpa;
	uint64_t size;
	uint64_t next;		/**< bump allocator (gpa) */
	uint64_t tx_pool;	/**< ring_size TX buffers (gpa), 0 = none */
	unsigned int tx_next;	/**< next TX buffer (in-order completion) */
	bool in_table;		/**< given to the backend */
};

/** One driver-side ring. */
struct t_vmm_ring {
	struct uvh_vq_driver drv;
	int kick, call;		/**< eventfds (ours) */
	uint64_t calls;		/**< call eventfd count read so far */
	uint64_t kicks;		/**< kicks written */
	bool started;
};

struct t_vmm_opts {
	bool packed;			/**< VIRTIO_F_RING_PACKED (else split) */
	bool no_event_idx;		/**< don't ack VIRTIO_F_RING_EVENT_IDX */
	uint16_t ring_size;		/**< 0 = 256 */
	uint64_t mem_gpa;		/**< region 0's gpa (0 = 1 MiB) */
	uint64_t mem_size;		/**< region 0's size (0 = 4 MiB) */
	/** Protocol features to ask for (& offered) when the backend has
	 *  set_protocol_features (user). */
	uint64_t protocol_features;
	int timeout_ms;			/**< t_vmm_recv/t_vmm_reap_tx waits (0 = 5000) */
};

struct t_vmm {
	struct uvh_vhost *b;
	struct t_vmm_opts o;
	uint16_t ring_size;
	uint64_t features;		/**< acked */
	uint64_t protocol_features;	/**< in force (user), else 0 */
	struct t_vmm_mem mem[T_VMM_MAX_MEM];
	struct t_vmm_ring ring[2];	/**< T_VMM_RX, T_VMM_TX */
	uint64_t rx_pool;		/**< ring_size RX buffers (gpa) */
	unsigned int tx_pending;	/**< sent, not yet seen used */
};

/** Memory, eventfds; nothing asked of @b yet. */
int t_vmm_init(struct t_vmm *v, struct uvh_vhost *b, const struct t_vmm_opts *o);
/** Everything made by this VMM goes (rings stopped or not; @b is not closed). */
void t_vmm_fini(struct t_vmm *v);

/** set_owner, get/set_features (VERSION_1 [, EVENT_IDX][, RING_PACKED]),
 *  get/set_protocol_features where the backend has them. */
int t_vmm_negotiate(struct t_vmm *v);
/** set_mem_table with every region marked in_table (region 0 at least). */
int t_vmm_set_mem(struct t_vmm *v);
/** Lay out ring @idx and start it: num, addr, base, call, kick, enable. */
int t_vmm_start_ring(struct t_vmm *v, unsigned int idx);
/** negotiate + set_mem + both rings + RX filled with every buffer. */
int t_vmm_start(struct t_vmm *v);

/** A test frame: Ethernet header, ethertype 0x88b5, bytes from @seq. */
void t_vmm_make_frame(uint8_t *f, uint32_t len, uint32_t seq);
/** Queue a frame on TX (header + frame in one buffer of region @mem_idx's
 *  pool). Not visible until t_vmm_flush(). -ENOSPC when the ring is full. */
int t_vmm_send(struct t_vmm *v, const uint8_t *frame, uint32_t len, unsigned int mem_idx);
/** Publish ring @idx and kick it when the device asks for kicks. */
void t_vmm_flush(struct t_vmm *v, unsigned int idx);
/**
 * The next received frame (header stripped) into @buf (@max bytes), its
 * length in *len; its buffer is posted again. Waits up to the timeout on
 * the call eventfd (and re-checks the ring every few ms). -ETIMEDOUT,
 * -EPROTO (a used length shorter than the header or over @max).
 */
int t_vmm_recv(struct t_vmm *v, uint8_t *buf, uint32_t max, uint32_t *len);
/** Collect used TX chains until @n were seen in all (or the timeout):
 *  the count still missing is returned (0 = all). */
unsigned int t_vmm_reap_tx(struct t_vmm *v, unsigned int n);
/**
 * Loopback round: @n frames (sizes cycling 60 .. 1514, payloads from @seq0
 * on) sent from region @mem_idx's TX pool in bursts, each expected back on
 * RX byte for byte and in order, every TX chain given back. Adds the
 * frame bytes to *bytes (may be NULL). 0, -ETIMEDOUT (a frame or a TX
 * completion missing), -EBADMSG (a frame differs), or a send error.
 */
int t_vmm_loopback(struct t_vmm *v, unsigned int n, unsigned int mem_idx, uint32_t seq0,
		   uint64_t *bytes);
/** Read ring @idx's call eventfd into ring[idx].calls (non-blocking). */
uint64_t t_vmm_calls(struct t_vmm *v, unsigned int idx);

/** What get_vring_base must answer for ring @idx once every chain the
 *  device took is back: the driver's used position (packed: as avail and
 *  used halves, wrap bits included). */
uint32_t t_vmm_used_base(const struct t_vmm *v, unsigned int idx);
/** get_vring_base of both rings into @base[2] (may be NULL), then every
 *  chain given back is collected (RX ones are not posted again). */
int t_vmm_stop(struct t_vmm *v, uint32_t base[2]);

/** A new memfd region @idx (1 .. T_VMM_MAX_MEM - 1) at @gpa of @size,
 *  with a TX pool, given to the backend with add_mem_region. */
int t_vmm_add_region(struct t_vmm *v, unsigned int idx, uint64_t gpa, uint64_t size);
/** remove_mem_region of region @idx, then unmapped and closed. */
int t_vmm_remove_region(struct t_vmm *v, unsigned int idx);
/** Region @idx as the backend takes it. */
void t_vmm_region(const struct t_vmm *v, unsigned int idx, struct uvh_vhost_mem_region *r);
/** Our pointer to guest-physical @gpa (NULL when not in a region). */
void *t_vmm_ptr(struct t_vmm *v, uint64_t gpa, uint64_t len);

#endif
