/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the bounded multi-producer ring (see ring.h).
 *
 * Our own ring. Positions are 64-bit counters that never wrap in practice;
 * slot of position p is slots[p & mask].
 *
 *  prod_head  next position a producer claims (CAS by producers)
 *  cons_seen  a cons_tail value some producer read (a lower bound of it,
 *             on the producers' line)
 *  cons_tail  next position the consumer reads; everything below is free
 *             (written by the consumer only)
 *  slot.seq   p + 1 once the producer of position p has stored the object
 *
 * Producer: read prod_head, then cons_seen (cons_tail only when that bound
 * says there is not enough room: so producers do not pull the consumer's
 * line over at every enqueue), and claim min(n, capacity - (head - tail))
 * slots with one CAS on prod_head; store the objects and publish each slot
 * by storing its seq. Producers never wait for each other: a slow one only
 * delays the consumer at its own slots.
 * Consumer: take slots in order while seq == position + 1, then move
 * cons_tail past them, which hands them back to the producers.
 *
 * A stale seq can never look published: the seq a slot holds is 0 or
 * q + 1 for an earlier position q of the same slot (q = p - k * size).
 */
#include <errno.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(UVH_HAVE_DPDK) && UVH_HAVE_DPDK
#include <rte_ring.h>
#define UVH_RING_WITH_RTE 1
#else
#define UVH_RING_WITH_RTE 0
#endif

#include "log.h"
#include "ring.h"

#define UVH_CACHE_LINE	64

struct uvh_ring_slot {
	_Atomic uint64_t seq;
	void *obj;
};

struct uvh_ring {
	/* read-mostly: both sides read these */
	uint64_t mask;
	uint32_t capacity;
	unsigned int flags;
	void *rte;		/* the rte_ring when UVH_RING_RTE */
	void *mem;		/* what free() gets for rte */

	/* producers' line */
	alignas(UVH_CACHE_LINE) _Atomic uint64_t prod_head;
	/*
	 * A cons_tail value some producer read: a lower bound of the real
	 * one. Producers look at cons_tail (the consumer's line, which moves
	 * every dequeue) only when this bound says the ring may be full.
	 */
	_Atomic uint64_t cons_seen;

	/* consumer's line */
	alignas(UVH_CACHE_LINE) _Atomic uint64_t cons_tail;

	alignas(UVH_CACHE_LINE) struct uvh_ring_slot slots[];
};

static unsigned int pow2_roundup(unsigned int v)
{
	unsigned int p = 1;

	while (p < v)
		p <<= 1;
	return p;
}

bool uvh_ring_rte_available(void)
{
	return UVH_RING_WITH_RTE;
}

#if UVH_RING_WITH_RTE
static int rte_backend_init(struct uvh_ring *r, unsigned int size)
{
	/* EXACT_SZ gives capacity == size, like ours; it needs 2 * size slots. */
	ssize_t memsize = rte_ring_get_memsize(size * 2);
	size_t alloc;
	int ret;

	if (memsize < 0)
		return (int)memsize;
	alloc = ((size_t)memsize + RTE_CACHE_LINE_SIZE - 1) & ~(size_t)(RTE_CACHE_LINE_SIZE - 1);
	r->mem = aligned_alloc(RTE_CACHE_LINE_SIZE, alloc);
	if (!r->mem)
		return -ENOMEM;
	/* rte_ring_init only formats the memory: no EAL, no memzone, no tailq. */
	ret = rte_ring_init(r->mem, "uvh_ring", size, RING_F_EXACT_SZ | RING_F_SC_DEQ);
	if (ret < 0) {
		free(r->mem);
		r->mem = NULL;
		return ret;
	}
	r->rte = r->mem;
	return 0;
}
#endif

struct uvh_ring *uvh_ring_create(unsigned int count, unsigned int flags)
{
	struct uvh_ring *r;
	unsigned int size;
	size_t bytes;
	int ret = 0;

	if (count == 0 || count > UVH_RING_MAX_COUNT || (flags & ~UVH_RING_RTE)) {
		errno = EINVAL;
		return NULL;
	}
	if ((flags & UVH_RING_RTE) && !UVH_RING_WITH_RTE) {
		errno = ENOTSUP;
		return NULL;
	}
	size = pow2_roundup(count);
	/* the rte variant keeps its slots in its own block */
	bytes = sizeof(*r) + ((flags & UVH_RING_RTE) ? 0 : size * sizeof(struct uvh_ring_slot));
	bytes = (bytes + UVH_CACHE_LINE - 1) & ~(size_t)(UVH_CACHE_LINE - 1);
	r = aligned_alloc(UVH_CACHE_LINE, bytes);
	if (!r) {
		errno = ENOMEM;
		return NULL;
	}
	memset(r, 0, bytes);
	r->mask = size - 1;
	r->capacity = size;
	r->flags = flags;
	atomic_init(&r->prod_head, 0);
	atomic_init(&r->cons_tail, 0);
	atomic_init(&r->cons_seen, 0);
	if (!(flags & UVH_RING_RTE)) {
		for (unsigned int i = 0; i < size; i++)
			atomic_init(&r->slots[i].seq, 0);
		return r;
	}
#if UVH_RING_WITH_RTE
	ret = rte_backend_init(r, size);
#endif
	if (ret < 0) {
		UVH_ERR("ring: rte_ring_init(%u): %s", size, strerror(-ret));
		free(r);
		errno = -ret;
		return NULL;
	}
	return r;
}

void uvh_ring_destroy(struct uvh_ring *r)
{
	if (!r)
		return;
	free(r->mem);
	free(r);
}

static unsigned int own_enqueue(struct uvh_ring *r, void *const *objs, unsigned int want)
{
	uint64_t head, tail;
	unsigned int n;

	/*
	 * The loads are acquire so they happen in this order: head, then the
	 * tail bound, then the claim. A successful CAS proves head was still
	 * current, and a tail read after head is at most head: the room we
	 * computed is real.
	 */
	head = atomic_load_explicit(&r->prod_head, memory_order_acquire);
	for (;;) {
		/*
		 * Acquire on cons_seen pairs with the release store of it below
		 * (by this or another producer), which came after that
		 * producer's acquire of cons_tail: so the consumer's release of
		 * cons_tail still happens before we reuse the slots it freed.
		 */
		tail = atomic_load_explicit(&r->cons_seen, memory_order_acquire);
		if (head - tail + want > r->capacity) {
			/*
			 * Pairs with the consumer's release store of cons_tail:
			 * once we see a slot as free, the consumer's read of
			 * its old object is done, so our store below cannot be
			 * seen by it.
			 */
			tail = atomic_load_explicit(&r->cons_tail, memory_order_acquire);
			/* Release: pairs with the acquire load of cons_seen above. */
			atomic_store_explicit(&r->cons_seen, tail, memory_order_release);
		}
		if (head - tail > r->capacity) {
			/* the consumer is past our head: it is stale, reload it */
			head = atomic_load_explicit(&r->prod_head, memory_order_acquire);
			continue;
		}
		n = want;
		if (n > r->capacity - (head - tail))
			n = (unsigned int)(r->capacity - (head - tail));
		if (n == 0)
			return 0;
		/*
		 * The claim orders producers among themselves only (what we
		 * publish goes through the slots' seq). Acquire on failure
		 * keeps the reloaded head before the next tail load; C11 wants
		 * the success order at least as strong.
		 */
		if (atomic_compare_exchange_weak_explicit(&r->prod_head, &head, head + n,
							  memory_order_acquire,
							  memory_order_acquire))
			break;
	}

	for (unsigned int i = 0; i < n; i++) {
		struct uvh_ring_slot *s = &r->slots[(head + i) & r->mask];

		s->obj = objs[i];
		/*
		 * Release: pairs with the consumer's acquire load of seq, so
		 * the object (and all the producer wrote before enqueueing it)
		 * is visible once seq says published.
		 */
		atomic_store_explicit(&s->seq, head + i + 1, memory_order_release);
	}
	return n;
}

static unsigned int own_dequeue(struct uvh_ring *r, void **objs, unsigned int n)
{
	/* only we write cons_tail */
	uint64_t tail = atomic_load_explicit(&r->cons_tail, memory_order_relaxed);
	unsigned int i;

	for (i = 0; i < n; i++) {
		struct uvh_ring_slot *s = &r->slots[(tail + i) & r->mask];

		/* Acquire: pairs with the producer's release store of seq. */
		if (atomic_load_explicit(&s->seq, memory_order_acquire) != tail + i + 1)
			break;
		objs[i] = s->obj;
	}
	if (i)
		/*
		 * Release: pairs with the producers' acquire load of cons_tail;
		 * our reads of the objects happen before any producer reuses
		 * these slots.
		 */
		atomic_store_explicit(&r->cons_tail, tail + i, memory_order_release);
	return i;
}

unsigned int uvh_ring_enqueue_burst(struct uvh_ring *r, void *const *objs, unsigned int n)
{
#if UVH_RING_WITH_RTE
	if (r->rte)
		return rte_ring_mp_enqueue_burst(r->rte, objs, n, NULL);
#endif
	return own_enqueue(r, objs, n);
}

int uvh_ring_enqueue(struct uvh_ring *r, void *obj)
{
	return uvh_ring_enqueue_burst(r, &obj, 1) == 1 ? 0 : -ENOBUFS;
}

unsigned int uvh_ring_dequeue_burst(struct uvh_ring *r, void **objs, unsigned int n)
{
#if UVH_RING_WITH_RTE
	if (r->rte)
		return rte_ring_sc_dequeue_burst(r->rte, objs, n, NULL);
#endif
	return own_dequeue(r, objs, n);
}

unsigned int uvh_ring_count(const struct uvh_ring *r)
{
	uint64_t tail, head;

#if UVH_RING_WITH_RTE
	if (r->rte) {
		/* rte_ring_count()'s sum with atomic loads: another thread may
		 * be moving either tail (its own loads are plain) */
		const struct rte_ring *rr = r->rte;
		uint32_t prod = __atomic_load_n(&rr->prod.tail, __ATOMIC_ACQUIRE);
		uint32_t cons = __atomic_load_n(&rr->cons.tail, __ATOMIC_ACQUIRE);
		uint32_t count = (prod - cons) & rr->mask;

		return count > rr->capacity ? rr->capacity : count;
	}
#endif
	/* tail first: a head read later is never below it (see own_enqueue) */
	tail = atomic_load_explicit(&r->cons_tail, memory_order_acquire);
	head = atomic_load_explicit(&r->prod_head, memory_order_acquire);
	if (head - tail > r->capacity)
		return r->capacity;
	return (unsigned int)(head - tail);
}

unsigned int uvh_ring_capacity(const struct uvh_ring *r)
{
	return r->capacity;
}

const char *uvh_ring_impl_name(const struct uvh_ring *r)
{
	return r->rte ? "rte" : "uvh";
}
