/* SPDX-License-Identifier: MIT */
/*
 * uvhost: a bounded lock-free queue of pointers.
 *
 * Many producers, one consumer: the shape of an engine's inbox (the control
 * plane and other engines post, the owning engine drains). Two
 * implementations sit behind one API, chosen when the ring is created:
 *
 *  - the default, our own: producers claim slots with a CAS on a 64-bit
 *    head and publish each slot with its own sequence number, so a producer
 *    never waits for another one to finish; the consumer takes slots while
 *    their sequence says "published" and frees them by advancing its tail;
 *  - UVH_RING_RTE: DPDK's rte_ring (MP enqueue, SC dequeue) placed in memory
 *    we allocate (rte_ring_init, no EAL needed), available when uvhost is
 *    built with DPDK (meson -Ddpdk=enabled); see uvh_ring_rte_available().
 *
 * Both have the same semantics and pass the same tests:
 *  - capacity: @count rounded up to a power of two (uvh_ring_capacity());
 *  - FIFO per producer: items one producer enqueues are dequeued in that
 *    order; items of different producers interleave in claim order;
 *  - enqueue from any number of threads at once; dequeue from ONE thread at
 *    a time (callers serialise consumers themselves);
 *  - progress: no locks and no syscalls. As in any ring of this family, a
 *    producer preempted between claiming and publishing its slots holds the
 *    consumer back at those slots (other producers still proceed until the
 *    ring is full); nothing is lost or reordered.
 *
 * An enqueued item is visible to the consumer together with everything the
 * producer wrote before enqueueing it (release/acquire), so a pointer to a
 * request filled in before the enqueue can be followed safely after the
 * dequeue.
 */
#ifndef UVHOST_RING_H
#define UVHOST_RING_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/** An opaque ring. */
struct uvh_ring;

/** uvh_ring_create() flags. */
enum {
	/** Use DPDK's rte_ring (fails with ENOTSUP when not built with DPDK). */
	UVH_RING_RTE = 1u << 0,
};

/** Largest @count uvh_ring_create() accepts. */
#define UVH_RING_MAX_COUNT	(1u << 20)

/**
 * A ring holding at least @count pointers (rounded up to a power of two;
 * 1 <= @count <= UVH_RING_MAX_COUNT). @flags: 0 (our own ring) or
 * UVH_RING_RTE. Returns NULL with errno EINVAL (bad count or unknown flag),
 * ENOTSUP (UVH_RING_RTE without DPDK) or ENOMEM.
 */
struct uvh_ring *uvh_ring_create(unsigned int count, unsigned int flags);

/** Free @r (NULL is fine). Items still queued are dropped, not freed. */
void uvh_ring_destroy(struct uvh_ring *r);

/**
 * Enqueue @obj (any pointer, NULL included). Multi-producer safe.
 * Returns 0, or -ENOBUFS when the ring is full (nothing enqueued).
 */
int uvh_ring_enqueue(struct uvh_ring *r, void *obj);

/**
 * Enqueue up to @n pointers from @objs, as many as fit, in order, as one
 * contiguous run (no other producer's item lands in between). Multi-producer
 * safe. Returns how many were enqueued (0 when full or @n is 0).
 */
unsigned int uvh_ring_enqueue_burst(struct uvh_ring *r, void *const *objs, unsigned int n);

/**
 * Dequeue up to @n pointers into @objs, oldest first. Single consumer: only
 * one thread may dequeue from @r at a time. Returns how many were dequeued
 * (0 when empty).
 */
unsigned int uvh_ring_dequeue_burst(struct uvh_ring *r, void **objs, unsigned int n);

/**
 * Items in the ring: exact when no one is enqueueing or dequeueing,
 * otherwise a snapshot that may include items claimed but not yet
 * published.
 */
unsigned int uvh_ring_count(const struct uvh_ring *r);

/** The number of items @r holds when full. */
unsigned int uvh_ring_capacity(const struct uvh_ring *r);

/** "uvh" or "rte": which implementation @r uses. */
const char *uvh_ring_impl_name(const struct uvh_ring *r);

/** True when this build has the rte_ring implementation (UVH_RING_RTE). */
bool uvh_ring_rte_available(void);

#ifdef __cplusplus
}
#endif

#endif
