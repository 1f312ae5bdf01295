/* SPDX-License-Identifier: MIT */
/*
 * IOTLB cache (VIRTIO_F_IOMMU_PLATFORM): iova ranges -> front-end virtual
 * addresses, kept sorted by iova and non-overlapping.
 *
 * Concurrency: updates and invalidations come from the control thread
 * while engines translate on their data paths. The entries are guarded by
 * a seqlock, not a pthread_rwlock: taking a rwlock for reading writes its
 * lock word, so every translation on every engine would pull that cache
 * line over to its core and back, and a reader could sit behind a writer
 * the scheduler preempted. A seqlock reader only reads; it retries in the
 * rare case an update ran under it. The price is that the shared entries
 * are read and written with relaxed atomics (a torn read is then defined
 * behaviour, and always thrown away), and that writers build the new list
 * in a private scratch array and copy it in. Writers are serialised by a
 * mutex (control path only).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "memory.h"

#define IOTLB_DEFAULT_ENTRIES	2048u
/* a cap on the allocation a caller can ask for */
#define IOTLB_MAX_ENTRIES	(1u << 20)

/* A shared entry: read by engines while a writer may be storing it. */
struct iotlb_slot {
	_Atomic uint64_t iova;
	_Atomic uint64_t size;
	_Atomic uint64_t uaddr;
	_Atomic uint8_t perm;
};

/* The writer's private copy of an entry. */
struct iotlb_entry {
	uint64_t iova;
	uint64_t size;		/* never 0; iova + size never wraps */
	uint64_t uaddr;
	uint8_t perm;
};

struct uvh_iotlb_cache {
	_Atomic uint32_t seq;		/* odd while a writer is copying in */
	_Atomic uint32_t n;		/* live entries in slots */
	unsigned int max;
	unsigned int evict_cursor;	/* where the next eviction looks first */
	pthread_mutex_t wlock;		/* serialises writers */
	struct iotlb_entry *cur;	/* writer's view of slots (max entries) */
	unsigned int ncur;
	struct iotlb_entry *scratch;	/* the next list being built (max + 2) */
	struct iotlb_slot *slots;	/* max entries */
};

struct uvh_iotlb_cache *uvh_iotlb_new(unsigned int max_entries)
{
	struct uvh_iotlb_cache *c;

	if (!max_entries)
		max_entries = IOTLB_DEFAULT_ENTRIES;
	if (max_entries > IOTLB_MAX_ENTRIES) {
		errno = EINVAL;
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->max = max_entries;
	c->cur = calloc(max_entries, sizeof(*c->cur));
	c->scratch = calloc((size_t)max_entries + 2, sizeof(*c->scratch));
	c->slots = calloc(max_entries, sizeof(*c->slots));
	if (!c->cur || !c->scratch || !c->slots || pthread_mutex_init(&c->wlock, NULL)) {
		free(c->cur);
		free(c->scratch);
		free(c->slots);
		free(c);
		errno = ENOMEM;
		return NULL;
	}
	return c;
}

void uvh_iotlb_free(struct uvh_iotlb_cache *cache)
{
	if (!cache)
		return;
	pthread_mutex_destroy(&cache->wlock);
	free(cache->cur);
	free(cache->scratch);
	free(cache->slots);
	free(cache);
}

/*
 * Publish scratch[0..n) as the new list. Slots that already hold the right
 * entry are not stored again (an update usually moves only the tail).
 * Called with wlock held: this thread is the only one storing slots, so
 * reading them back here races with nobody.
 */
static void publish(struct uvh_iotlb_cache *c, unsigned int n)
{
	uint32_t s = atomic_load_explicit(&c->seq, memory_order_relaxed);
	unsigned int i;

	atomic_store_explicit(&c->seq, s + 1, memory_order_relaxed);
	/*
	 * Pairs with the acquire fence in uvh_iotlb_translate(): a reader that
	 * sees any slot store below also sees seq odd on its re-check.
	 */
	atomic_thread_fence(memory_order_release);
	for (i = 0; i < n; i++) {
		const struct iotlb_entry *e = &c->scratch[i];
		struct iotlb_slot *sl = &c->slots[i];

		if (atomic_load_explicit(&sl->iova, memory_order_relaxed) == e->iova &&
		    atomic_load_explicit(&sl->size, memory_order_relaxed) == e->size &&
		    atomic_load_explicit(&sl->uaddr, memory_order_relaxed) == e->uaddr &&
		    atomic_load_explicit(&sl->perm, memory_order_relaxed) == e->perm)
			continue;
		atomic_store_explicit(&sl->iova, e->iova, memory_order_relaxed);
		atomic_store_explicit(&sl->size, e->size, memory_order_relaxed);
		atomic_store_explicit(&sl->uaddr, e->uaddr, memory_order_relaxed);
		atomic_store_explicit(&sl->perm, e->perm, memory_order_relaxed);
	}
	atomic_store_explicit(&c->n, n, memory_order_relaxed);
	/* Pairs with the acquire load of seq that starts a read. */
	atomic_store_explicit(&c->seq, s + 2, memory_order_release);
	memcpy(c->cur, c->scratch, (size_t)n * sizeof(*c->cur));
	c->ncur = n;
}

static bool mergeable(const struct iotlb_entry *a, const struct iotlb_entry *b)
{
	return a->iova + a->size == b->iova && a->uaddr + a->size == b->uaddr &&
	       a->perm == b->perm;
}

/*
 * Build in scratch the list cur minus [start, end), plus @add when given
 * (merged with a neighbour it continues exactly, in iova and uaddr, with
 * the same permission). Returns the new count, or -ENOSPC when it would
 * not fit in max.
 */
static int build(struct uvh_iotlb_cache *c, uint64_t start, uint64_t end,
		 const struct iotlb_entry *add)
{
	struct iotlb_entry *out = c->scratch;
	unsigned int i, n = 0;
	bool added = !add;

	for (i = 0; i < c->ncur; i++) {
		const struct iotlb_entry *e = &c->cur[i];
		uint64_t e_end = e->iova + e->size;

		if (e_end <= start) {
			out[n++] = *e;
			continue;
		}
		if (!added) {
			out[n++] = *add;
			added = true;
		}
		if (e->iova >= end) {
			out[n++] = *e;
			continue;
		}
		/* e overlaps [start, end): keep the parts outside it, in order */
		if (e->iova < start) {
			/* goes before the added entry */
			struct iotlb_entry head = *e;

			head.size = start - e->iova;
			if (add) {
				out[n - 1] = head;
				out[n++] = *add;
			} else {
				out[n++] = head;
			}
		}
		if (e_end > end) {
			out[n] = *e;
			out[n].iova = end;
			out[n].uaddr = e->uaddr + (end - e->iova);
			out[n].size = e_end - end;
			n++;
		}
	}
	if (!added)
		out[n++] = *add;
	if (add) {
		unsigned int j, k = 0;

		for (j = 0; j < n; j++) {
			if (k && mergeable(&out[k - 1], &out[j])) {
				out[k - 1].size += out[j].size;
				continue;
			}
			out[k++] = out[j];
		}
		n = k;
	}
	return n > c->max ? -ENOSPC : (int)n;
}

/*
 * Forget one translation of cur (round robin, so no entry is favoured).
 * Called when an update would not fit; cur then differs from the slots
 * until the next publish(), which compares against the slots themselves.
 */
static bool evict_one(struct uvh_iotlb_cache *c)
{
	unsigned int i;

	if (!c->ncur)
		return false;
	i = c->evict_cursor < c->ncur ? c->evict_cursor : 0;
	memmove(&c->cur[i], &c->cur[i + 1], (c->ncur - i - 1) * sizeof(c->cur[0]));
	c->ncur--;
	c->evict_cursor = i + 1;
	return true;
}

static int update(struct uvh_iotlb_cache *c, const struct uvh_iotlb *msg)
{
	struct iotlb_entry add = {
		.iova = msg->iova, .size = msg->size, .uaddr = msg->uaddr, .perm = msg->perm,
	};
	int n;

	if (!msg->size || msg->size > UINT64_MAX - msg->iova ||
	    msg->size > UINT64_MAX - msg->uaddr ||
	    msg->perm == UVH_IOTLB_NONE || msg->perm > UVH_IOTLB_RW)
		return -EINVAL;
	/*
	 * A full cache drops older translations (a cache may always forget:
	 * a later miss asks the front-end again); refusing the update instead
	 * would leave the miss that asked for it unresolved.
	 */
	while ((n = build(c, add.iova, add.iova + add.size, &add)) < 0)
		if (!evict_one(c))
			return -ENOSPC;
	publish(c, (unsigned int)n);
	return 0;
}

static int invalidate(struct uvh_iotlb_cache *c, const struct uvh_iotlb *msg)
{
	uint64_t end;
	int n;

	if (!msg->size)
		return -EINVAL;
	/* "from iova to the end of the space" is a fair reading of a wrap */
	end = msg->size > UINT64_MAX - msg->iova ? UINT64_MAX : msg->iova + msg->size;
	n = build(c, msg->iova, end, NULL);
	if (n < 0) {
		/*
		 * Only a split can grow the list: forget the whole entry that
		 * would split. Invalidating more than asked is always safe.
		 */
		unsigned int i, k = 0;

		for (i = 0; i < c->ncur; i++) {
			const struct iotlb_entry *e = &c->cur[i];

			if (e->iova + e->size > msg->iova && e->iova < end)
				continue;
			c->scratch[k++] = *e;
		}
		n = (int)k;
	}
	publish(c, (unsigned int)n);
	return 0;
}

int uvh_iotlb_apply(struct uvh_iotlb_cache *cache, const struct uvh_iotlb *msg)
{
	int ret;

	if (!cache || !msg)
		return -EINVAL;
	pthread_mutex_lock(&cache->wlock);
	switch (msg->type) {
	case UVH_IOTLB_UPDATE:
		ret = update(cache, msg);
		break;
	case UVH_IOTLB_INVALIDATE:
		ret = invalidate(cache, msg);
		break;
	default:
		/* MISS and ACCESS_FAIL go the other way (back-end to front-end) */
		ret = -EINVAL;
		break;
	}
	pthread_mutex_unlock(&cache->wlock);
	if (ret)
		UVH_WARN("iotlb: type %u iova 0x%" PRIx64 " size 0x%" PRIx64 " perm %u refused (%s)",
			 msg->type, msg->iova, msg->size, msg->perm, strerror(-ret));
	return ret;
}

void uvh_iotlb_flush(struct uvh_iotlb_cache *cache)
{
	pthread_mutex_lock(&cache->wlock);
	publish(cache, 0);
	pthread_mutex_unlock(&cache->wlock);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#endif
}

int uvh_iotlb_translate(struct uvh_iotlb_cache *cache, uint64_t iova, uint64_t len,
			uint8_t perm, uint64_t *uva, uint64_t *contiguous)
{
	unsigned int spins = 0;
	uint32_t s1, s2 = 0;
	uint64_t e_iova = 0, e_size = 0, e_uaddr = 0;
	uint8_t e_perm = 0;
	bool hit = false;

	do {
		uint32_t lo = 0, hi;

		/* Pairs with the release store of seq that ends publish(). */
		s1 = atomic_load_explicit(&cache->seq, memory_order_acquire);
		if (s1 & 1) {
			/* a writer is copying in: wait, yielding if it was preempted */
			if (++spins > 1024)
				sched_yield();
			else
				cpu_relax();
			continue;
		}
		hi = atomic_load_explicit(&cache->n, memory_order_relaxed);
		if (hi > cache->max)
			hi = cache->max;	/* torn view: never index past the slots */
		/* last entry with iova <= @iova */
		while (lo < hi) {
			uint32_t mid = lo + (hi - lo) / 2;

			if (atomic_load_explicit(&cache->slots[mid].iova, memory_order_relaxed) <= iova)
				lo = mid + 1;
			else
				hi = mid;
		}
		hit = lo > 0;
		if (hit) {
			const struct iotlb_slot *e = &cache->slots[lo - 1];

			e_iova = atomic_load_explicit(&e->iova, memory_order_relaxed);
			e_size = atomic_load_explicit(&e->size, memory_order_relaxed);
			e_uaddr = atomic_load_explicit(&e->uaddr, memory_order_relaxed);
			e_perm = atomic_load_explicit(&e->perm, memory_order_relaxed);
		}
		/*
		 * Pairs with the release fence in publish(): if any load above
		 * saw a store of an update, the seq re-read sees it changed.
		 */
		atomic_thread_fence(memory_order_acquire);
		s2 = atomic_load_explicit(&cache->seq, memory_order_relaxed);
	} while ((s1 & 1) || s1 != s2);

	if (!hit || iova - e_iova >= e_size)
		return -ENOENT;
	if ((e_perm & perm) != perm)
		return -EACCES;
	*uva = e_uaddr + (iova - e_iova);
	*contiguous = e_size - (iova - e_iova) < len ? e_size - (iova - e_iova) : len;
	return 0;
}
