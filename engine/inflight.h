/* SPDX-License-Identifier: MIT */
/*
 * uvhost: inflight I/O tracking (GET/SET_INFLIGHT_FD), device side.
 *
 * The inflight area is shared with the front-end, which keeps it across a
 * back-end crash or restart. It holds one region per queue, each aligned to
 * 64 bytes (as libvhost-user and DPDK lay it out), in the format of the
 * vhost-user spec's "Inflight I/O tracking" section:
 *
 *   | queue0 region | queue1 region | ... | queueN region |
 *
 * The device side marks each head it takes from the ring (with a growing
 * counter that preserves fetch order) and clears it once the used ring
 * says the chain is done. After a restart, the entries still marked are
 * the chains to hand out again, oldest counter first.
 *
 * Everything in the area is written by us but can be scribbled on by the
 * front-end, so every index read back from it is checked before use.
 *
 * Use (device side):
 *   uvh_vq_init(vq, ...);
 *   uvh_inflight_vq_init(&ifq, uvh_inflight_queue(base, i, qsize, packed), qsize, packed);
 *   uvh_inflight_vq_start(&ifq, vq);	// recovers, sets vq->inflight = &ifq
 *   ... uvh_vq_pop() hands out resubmitted chains first, then new ones ...
 *   uvh_inflight_vq_fini(&ifq);	// after the queue is stopped
 *
 * vq->inflight points to a struct uvh_inflight_vq (never to the raw region).
 */
#ifndef UVHOST_INFLIGHT_H
#define UVHOST_INFLIGHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "virtq.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Each queue region starts on this boundary within the area. */
#define UVH_INFLIGHT_ALIGN	64u
/** The only region version we know. 0 means "not initialised yet". */
#define UVH_INFLIGHT_VERSION	1u

/* ---- the spec's layout (little-endian) ------------------------------------ */

/** Per descriptor-table entry state of a split queue (16 bytes). */
struct uvh_inflight_desc_split {
	uint8_t inflight;	/**< 1 while this head is being processed */
	uint8_t padding[5];
	uint16_t next;		/**< links the last batch of used heads */
	uint64_t counter;	/**< fetch order, heads only */
};

/** Split queue region header; desc[] has desc_num (= queue size) entries. */
struct uvh_inflight_split {
	uint64_t features;	/**< 0 */
	uint16_t version;	/**< UVH_INFLIGHT_VERSION, 0 = uninitialised */
	uint16_t desc_num;	/**< queue size */
	uint16_t last_batch_head;	/**< head of the last used batch list */
	uint16_t used_idx;	/**< used->idx once the last batch was retired */
	struct uvh_inflight_desc_split desc[];
};

/** Per ring-slot state of a packed queue (32 bytes). */
struct uvh_inflight_desc_packed {
	uint8_t inflight;	/**< 1 while this chain is being processed (head) */
	uint8_t padding;
	uint16_t next;		/**< next free entry / next entry of the chain */
	uint16_t last;		/**< last entry of the chain (head) */
	uint16_t num;		/**< descriptors in the chain (head) */
	uint64_t counter;	/**< fetch order (head) */
	uint16_t id;		/**< copy of the ring descriptor: buffer id */
	uint16_t flags;		/**< copy: flags */
	uint32_t len;		/**< copy: length */
	uint64_t addr;		/**< copy: address */
};

/** Packed queue region header (32 bytes); desc[] has desc_num entries. */
struct uvh_inflight_packed {
	uint64_t features;	/**< 0 */
	uint16_t version;	/**< UVH_INFLIGHT_VERSION, 0 = uninitialised */
	uint16_t desc_num;	/**< queue size */
	uint16_t free_head;	/**< head of the free entry list */
	uint16_t old_free_head;	/**< free_head at the last completed update */
	uint16_t used_idx;	/**< device ring used index */
	uint16_t old_used_idx;	/**< used_idx at the last completed update */
	uint8_t used_wrap_counter;
	uint8_t old_used_wrap_counter;
	uint8_t padding[7];
	struct uvh_inflight_desc_packed desc[];
};

/* ---- layout helpers ---------------------------------------------------------- */

/** Bytes of one queue region (64-byte aligned) for @queue_size entries. */
size_t uvh_inflight_queue_size(uint16_t queue_size, bool packed);
/** Bytes of the whole area (GET_INFLIGHT_FD's mmap_size); 0 if a count is 0. */
size_t uvh_inflight_region_size(uint16_t num_queues, uint16_t queue_size, bool packed);
/** Region of queue @index inside the area at @base. */
void *uvh_inflight_queue(void *base, uint16_t index, uint16_t queue_size, bool packed);
/**
 * Format a fresh area (GET_INFLIGHT_FD): zero it, then each region gets
 * version 0 and desc_num = @queue_size (initialised on first use by
 * uvh_inflight_vq_init(), as libvhost-user does).
 */
void uvh_inflight_area_format(void *base, uint16_t num_queues, uint16_t queue_size, bool packed);

/* ---- per queue bookkeeping --------------------------------------------------- */

/** Our state for one queue's region. vq->inflight points to this. */
struct uvh_inflight_vq {
	void *region;		/**< struct uvh_inflight_split / _packed */
	uint16_t size;		/**< queue size (= desc_num) */
	bool packed;
	uint64_t counter;	/**< next fetch-order value */
	/* chains to hand out again after a restart, oldest first:
	 * split: head descriptor indexes; packed: head entry indexes */
	uint16_t *resubmit;
	uint16_t nresubmit;
	uint16_t resubmit_next;
	/* packed: buffer id -> head entry, for completion (size entries) */
	uint16_t *id_entry;
};

/**
 * Attach @region (one queue's region) for a queue of @size entries.
 * A version-0 region is initialised (fresh start); a version-1 region with
 * desc_num == @size is kept as is (restart). Allocates the bookkeeping.
 * 0, -EINVAL (bad size, unknown version, desc_num mismatch), -ENOMEM.
 */
int uvh_inflight_vq_init(struct uvh_inflight_vq *ifq, void *region, uint16_t size, bool packed);
/** Free the bookkeeping (not the region). Safe on a zeroed struct. */
void uvh_inflight_vq_fini(struct uvh_inflight_vq *ifq);

/**
 * Recover after a restart and start tracking @vq (already uvh_vq_init'ed on
 * the rings): finishes or rolls back the update a crash interrupted (the
 * spec's "When reconnecting" steps, reading the used ring / descriptor
 * ring), builds the resubmit list ordered by counter, continues the
 * counter after the largest one seen, and for split sets vq->last_avail to
 * used->idx + number of chains to resubmit (they were taken from the
 * ring already). Sets vq->inflight = @ifq.
 * Returns the number of chains to resubmit, or -EINVAL when the region is
 * corrupt (bad indexes; nothing is resubmitted, the region is reset and
 * tracking starts afresh: vq->inflight is set either way), or -ENOMEM.
 * Packed: also sets vq->used_slot/used_idx/used_wrap from the region and
 * vq->last_avail/avail_wrap to the slot after the chains in flight.
 */
int uvh_inflight_vq_start(struct uvh_inflight_vq *ifq, struct uvh_vq *vq);

/** Chains still to hand out again (uvh_vq_pop does it first). */
static inline unsigned int uvh_inflight_resubmit_pending(const struct uvh_inflight_vq *ifq)
{
	return (unsigned int)(ifq->nresubmit - ifq->resubmit_next);
}

/* ---- split, called by the device side (virtq_split.c) ------------------------ */

/** On pop: head @head (< size, checked by the caller) was taken. */
static inline void uvh_inflight_split_get(struct uvh_inflight_vq *ifq, uint16_t head)
{
	struct uvh_inflight_split *r = (struct uvh_inflight_split *)ifq->region;

	r->desc[head].counter = ifq->counter++;
	/* inflight last: a crash between the two leaves the head unmarked,
	 * and an unmarked head was never seen by the device. */
	__atomic_signal_fence(__ATOMIC_RELEASE);
	r->desc[head].inflight = 1;
}

/**
 * On push, before used->idx is published: link the batch's heads into the
 * last-batch list (ids < size, checked by the caller).
 */
void uvh_inflight_split_pre_put(struct uvh_inflight_vq *ifq, const struct uvh_vq_used *used,
				unsigned int n);
/** On push, after used->idx = @new_used_idx is published: retire the batch. */
void uvh_inflight_split_post_put(struct uvh_inflight_vq *ifq, const struct uvh_vq_used *used,
				 unsigned int n, uint16_t new_used_idx);

/**
 * After a restart: the heads to resubmit ordered by counter. Recovers the
 * last batch against @used_ring_idx (the used ring's idx now) first.
 * Fills up to @max heads into @heads, returns how many are inflight (may be
 * more than @max), or -EINVAL when the region's indexes are corrupt.
 * uvh_inflight_vq_start() calls this; exposed for tests and tools.
 */
int uvh_inflight_split_resubmit(struct uvh_inflight_vq *ifq, uint16_t used_ring_idx,
				uint16_t *heads, unsigned int max);

/* ---- packed, called by the device side (virtq_packed.c) ---------------------- */

/**
 * On pop, for each ring descriptor @d of a chain, in order: @first for the
 * chain's first descriptor, @last for its last one (both for a single).
 * On @last, @id (the buffer id, < size, checked by the caller) is mapped to
 * the chain's head entry for completion. Returns the head entry index, or
 * UINT16_MAX when the region's indexes were scribbled on (nothing written).
 */
uint16_t uvh_inflight_packed_get(struct uvh_inflight_vq *ifq, const struct uvh_vring_packed_desc *d,
				 bool first, bool last, uint16_t id);
/**
 * On push, before the first used descriptor's flags are published: return
 * the chains' entries to the free list and record the new used index/wrap.
 */
void uvh_inflight_packed_pre_put(struct uvh_inflight_vq *ifq, const struct uvh_vq_used *used,
				 unsigned int n, uint16_t new_used_idx, bool new_used_wrap);
/** On push, after the flags are published: retire the batch. */
void uvh_inflight_packed_post_put(struct uvh_inflight_vq *ifq, const struct uvh_vq_used *used,
				  unsigned int n);

/**
 * After a restart: recovers the free list / used index against the
 * descriptor ring at @ring (the spec's rollback, reading the flags at
 * old_used_idx), then fills up to @max head entry indexes ordered by
 * counter. Returns how many are inflight, or -EINVAL (corrupt region).
 */
int uvh_inflight_packed_resubmit(struct uvh_inflight_vq *ifq,
				 const struct uvh_vring_packed_desc *ring,
				 uint16_t *entries, unsigned int max);

/**
 * The saved descriptors of the chain whose head entry is @entry (from the
 * resubmit list), copied into @out (capacity @max). Returns the count, or
 * -EINVAL (num 0 or > size, an index out of range, more than @max).
 */
int uvh_inflight_packed_chain(const struct uvh_inflight_vq *ifq, uint16_t entry,
			      struct uvh_vring_packed_desc *out, unsigned int max);

#ifdef __cplusplus
}
#endif

#endif
