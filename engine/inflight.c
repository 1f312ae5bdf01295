/* SPDX-License-Identifier: MIT */
/*
 * uvhost: inflight I/O tracking (vhost-user spec, "Inflight I/O tracking").
 *
 * The region outlives us (the front-end keeps the fd), so it is written in
 * the spec's order: a crash between any two steps leaves a state the
 * recovery in uvh_inflight_vq_start() can finish or roll back. The stores
 * are plain (the reader is a later incarnation of this process, not a
 * concurrent thread); compiler barriers keep them in program order.
 *
 * The front-end may scribble on the region, so every index read back from
 * it is range-checked, and every list walk is bounded by the queue size.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "inflight.h"
#include "log.h"
#include "virtq_internal.h"

_Static_assert(sizeof(struct uvh_inflight_desc_split) == 16, "DescStateSplit is 16 bytes");
_Static_assert(sizeof(struct uvh_inflight_split) == 16, "QueueRegionSplit header is 16 bytes");
_Static_assert(sizeof(struct uvh_inflight_desc_packed) == 32, "DescStatePacked is 32 bytes");
_Static_assert(sizeof(struct uvh_inflight_packed) == 32, "QueueRegionPacked header is 32 bytes");

/* Keep region stores in program order (see the top comment). */
#define region_barrier()	atomic_signal_fence(memory_order_seq_cst)

size_t uvh_inflight_queue_size(uint16_t queue_size, bool packed)
{
	size_t bytes;

	if (packed)
		bytes = sizeof(struct uvh_inflight_packed) +
			(size_t)queue_size * sizeof(struct uvh_inflight_desc_packed);
	else
		bytes = sizeof(struct uvh_inflight_split) +
			(size_t)queue_size * sizeof(struct uvh_inflight_desc_split);
	return (bytes + UVH_INFLIGHT_ALIGN - 1) & ~(size_t)(UVH_INFLIGHT_ALIGN - 1);
}

size_t uvh_inflight_region_size(uint16_t num_queues, uint16_t queue_size, bool packed)
{
	if (!num_queues || !queue_size)
		return 0;
	return (size_t)num_queues * uvh_inflight_queue_size(queue_size, packed);
}

void *uvh_inflight_queue(void *base, uint16_t index, uint16_t queue_size, bool packed)
{
	return (uint8_t *)base + (size_t)index * uvh_inflight_queue_size(queue_size, packed);
}

void uvh_inflight_area_format(void *base, uint16_t num_queues, uint16_t queue_size, bool packed)
{
	uint16_t q;

	memset(base, 0, uvh_inflight_region_size(num_queues, queue_size, packed));
	for (q = 0; q < num_queues; q++) {
		void *r = uvh_inflight_queue(base, q, queue_size, packed);

		if (packed)
			((struct uvh_inflight_packed *)r)->desc_num = queue_size;
		else
			((struct uvh_inflight_split *)r)->desc_num = queue_size;
	}
}

int uvh_inflight_vq_init(struct uvh_inflight_vq *ifq, void *region, uint16_t size, bool packed)
{
	uint16_t version, desc_num;

	if (!ifq)
		return -EINVAL;
	memset(ifq, 0, sizeof(*ifq));
	if (!region || size == 0 || size > UVH_VRING_MAX_SIZE)
		return -EINVAL;
	if (packed) {
		struct uvh_inflight_packed *r = region;

		version = r->version;
		desc_num = r->desc_num;
	} else {
		struct uvh_inflight_split *r = region;

		version = r->version;
		desc_num = r->desc_num;
	}
	if (version > UVH_INFLIGHT_VERSION) {
		UVH_ERR("inflight: unknown region version %u", version);
		return -EINVAL;
	}
	/* desc_num 0 on a never-used region is fine: we set it */
	if (version == UVH_INFLIGHT_VERSION && desc_num != size) {
		UVH_ERR("inflight: region for %u entries, queue has %u", desc_num, size);
		return -EINVAL;
	}
	ifq->region = region;
	ifq->size = size;
	ifq->packed = packed;
	ifq->counter = 1;
	ifq->resubmit = calloc(size, sizeof(*ifq->resubmit));
	ifq->id_entry = calloc(size, sizeof(*ifq->id_entry));
	if (!ifq->resubmit || !ifq->id_entry) {
		uvh_inflight_vq_fini(ifq);
		return -ENOMEM;
	}
	return 0;
}

void uvh_inflight_vq_fini(struct uvh_inflight_vq *ifq)
{
	if (!ifq)
		return;
	free(ifq->resubmit);
	free(ifq->id_entry);
	ifq->resubmit = NULL;
	ifq->id_entry = NULL;
	ifq->nresubmit = 0;
	ifq->resubmit_next = 0;
}

/* ---- ordering by counter ------------------------------------------------- */

struct order {
	uint64_t counter;
	uint16_t index;
};

static int order_cmp(const void *a, const void *b)
{
	const struct order *x = a, *y = b;

	if (x->counter != y->counter)
		return x->counter < y->counter ? -1 : 1;
	return x->index < y->index ? -1 : (x->index > y->index);
}

/*
 * Collect the entries whose inflight byte is set, oldest counter first,
 * into @out (up to @max); continue ifq->counter after the largest.
 * Returns the count, or -ENOMEM.
 */
static int collect_inflight(struct uvh_inflight_vq *ifq, uint16_t *out, unsigned int max)
{
	struct order *ord;
	unsigned int i, n = 0;
	uint64_t top = 0;

	ord = malloc((size_t)ifq->size * sizeof(*ord));
	if (!ord)
		return -ENOMEM;
	for (i = 0; i < ifq->size; i++) {
		uint8_t mark;
		uint64_t counter;

		if (ifq->packed) {
			struct uvh_inflight_packed *r = ifq->region;

			mark = r->desc[i].inflight;
			counter = r->desc[i].counter;
		} else {
			struct uvh_inflight_split *r = ifq->region;

			mark = r->desc[i].inflight;
			counter = r->desc[i].counter;
		}
		if (!mark)
			continue;
		ord[n].counter = counter;
		ord[n].index = (uint16_t)i;
		if (counter > top)
			top = counter;
		n++;
	}
	qsort(ord, n, sizeof(*ord), order_cmp);
	for (i = 0; i < n && i < max; i++)
		out[i] = ord[i].index;
	free(ord);
	/* new fetches must sort after everything still in flight */
	if (top != UINT64_MAX && top + 1 > ifq->counter)
		ifq->counter = top + 1;
	return (int)n;
}

/* ---- split ------------------------------------------------------------------ */

static void split_fresh(struct uvh_inflight_vq *ifq, uint16_t used_idx)
{
	struct uvh_inflight_split *r = ifq->region;

	memset(r->desc, 0, (size_t)ifq->size * sizeof(r->desc[0]));
	r->features = 0;
	r->desc_num = ifq->size;
	r->last_batch_head = 0;
	r->used_idx = used_idx;
	region_barrier();
	r->version = UVH_INFLIGHT_VERSION;
	ifq->counter = 1;
}

void uvh_inflight_split_pre_put(struct uvh_inflight_vq *ifq, const struct uvh_vq_used *used,
				unsigned int n)
{
	struct uvh_inflight_split *r = ifq->region;
	unsigned int i;

	for (i = 0; i < n; i++) {
		uint16_t id = used[i].id;

		if (id >= ifq->size)
			continue;
		r->desc[id].next = r->last_batch_head;
		r->last_batch_head = id;
	}
	region_barrier();
}

void uvh_inflight_split_post_put(struct uvh_inflight_vq *ifq, const struct uvh_vq_used *used,
				 unsigned int n, uint16_t new_used_idx)
{
	struct uvh_inflight_split *r = ifq->region;
	unsigned int i;

	/* only after used->idx is published (the caller did that) */
	region_barrier();
	for (i = 0; i < n; i++) {
		uint16_t id = used[i].id;

		if (id < ifq->size)
			r->desc[id].inflight = 0;
	}
	region_barrier();
	r->used_idx = new_used_idx;
}

int uvh_inflight_split_resubmit(struct uvh_inflight_vq *ifq, uint16_t used_ring_idx,
				uint16_t *heads, unsigned int max)
{
	struct uvh_inflight_split *r = ifq->region;
	uint16_t saved = r->used_idx;

	if (saved != used_ring_idx) {
		/* The crash hit between publishing used->idx and retiring the
		 * batch: those heads are done, clear them (spec step 1). */
		uint16_t batch = (uint16_t)(used_ring_idx - saved);
		uint16_t i = r->last_batch_head;
		uint16_t k;

		if (batch > ifq->size) {
			UVH_ERR("inflight: used idx %u vs region %u: not one batch",
				used_ring_idx, saved);
			return -EINVAL;
		}
		for (k = 0; k < batch; k++) {
			if (i >= ifq->size) {
				UVH_ERR("inflight: last batch list index %u out of range", i);
				return -EINVAL;
			}
			r->desc[i].inflight = 0;
			i = r->desc[i].next;
		}
		region_barrier();
		r->used_idx = used_ring_idx;
	}
	return collect_inflight(ifq, heads, max);
}

/* ---- packed ------------------------------------------------------------------ */

static void packed_fresh(struct uvh_inflight_vq *ifq, uint16_t used_idx, bool used_wrap)
{
	struct uvh_inflight_packed *r = ifq->region;
	uint16_t i;

	memset(r->desc, 0, (size_t)ifq->size * sizeof(r->desc[0]));
	/* every entry free, in order; "size" ends the list */
	for (i = 0; i < ifq->size; i++)
		r->desc[i].next = (uint16_t)(i + 1);
	r->features = 0;
	r->desc_num = ifq->size;
	r->free_head = 0;
	r->old_free_head = 0;
	r->used_idx = used_idx;
	r->old_used_idx = used_idx;
	r->used_wrap_counter = used_wrap;
	r->old_used_wrap_counter = used_wrap;
	region_barrier();
	r->version = UVH_INFLIGHT_VERSION;
	ifq->counter = 1;
}

uint16_t uvh_inflight_packed_get(struct uvh_inflight_vq *ifq, const struct uvh_vring_packed_desc *d,
				 bool first, bool last, uint16_t id)
{
	struct uvh_inflight_packed *r = ifq->region;
	uint16_t h = r->old_free_head, f = r->free_head;

	/* a scribbled region: stop tracking rather than write out of range */
	if (h >= ifq->size || f >= ifq->size)
		return UINT16_MAX;
	if (first) {
		r->desc[h].num = 0;
		r->desc[h].counter = ifq->counter++;
		region_barrier();
		r->desc[h].inflight = 1;
	}
	if (last)
		r->desc[h].last = f;
	r->desc[h].num++;
	r->desc[f].addr = d->addr;
	r->desc[f].len = d->len;
	r->desc[f].flags = d->flags;
	r->desc[f].id = d->id;
	region_barrier();
	r->free_head = r->desc[f].next;
	if (last) {
		region_barrier();
		r->old_free_head = r->free_head;
		if (id < ifq->size)
			ifq->id_entry[id] = h;
	}
	return h;
}

void uvh_inflight_packed_pre_put(struct uvh_inflight_vq *ifq, const struct uvh_vq_used *used,
				 unsigned int n, uint16_t new_used_idx, bool new_used_wrap)
{
	struct uvh_inflight_packed *r = ifq->region;
	unsigned int i;

	for (i = 0; i < n; i++) {
		uint16_t id = used[i].id, e, last;

		if (id >= ifq->size)
			continue;
		e = ifq->id_entry[id];
		if (e >= ifq->size)
			continue;
		last = r->desc[e].last;
		if (last >= ifq->size)
			continue;
		r->desc[last].next = r->free_head;
		region_barrier();
		r->free_head = e;
	}
	r->used_idx = new_used_idx;
	r->used_wrap_counter = new_used_wrap;
	region_barrier();
}

void uvh_inflight_packed_post_put(struct uvh_inflight_vq *ifq, const struct uvh_vq_used *used,
				  unsigned int n)
{
	struct uvh_inflight_packed *r = ifq->region;
	unsigned int i;

	/* only after the used flags are published (the caller did that) */
	region_barrier();
	for (i = 0; i < n; i++) {
		uint16_t id = used[i].id, e;

		if (id >= ifq->size)
			continue;
		e = ifq->id_entry[id];
		if (e < ifq->size)
			r->desc[e].inflight = 0;
	}
	region_barrier();
	r->old_free_head = r->free_head;
	r->old_used_idx = r->used_idx;
	r->old_used_wrap_counter = r->used_wrap_counter;
}

int uvh_inflight_packed_resubmit(struct uvh_inflight_vq *ifq,
				 const struct uvh_vring_packed_desc *ring,
				 uint16_t *entries, unsigned int max)
{
	struct uvh_inflight_packed *r = ifq->region;
	uint16_t i;
	unsigned int hops;

	if (r->used_idx != r->old_used_idx) {
		uint16_t old = r->old_used_idx;
		bool wrap = r->old_used_wrap_counter;
		uint16_t flags, want;

		if (old >= ifq->size) {
			UVH_ERR("inflight: old used index %u out of range", old);
			return -EINVAL;
		}
		/* Still as the driver made it available at the old used
		 * position? Then the interrupted batch was never published:
		 * roll back. Otherwise it was: commit it (spec step 1). */
		flags = uvh_shm_load16(&ring[old].flags);
		flags &= UVH_VRING_PACKED_DESC_F_AVAIL | UVH_VRING_PACKED_DESC_F_USED;
		want = wrap ? UVH_VRING_PACKED_DESC_F_AVAIL : UVH_VRING_PACKED_DESC_F_USED;
		if (flags != want) {
			r->old_free_head = r->free_head;
			r->old_used_idx = r->used_idx;
			r->old_used_wrap_counter = r->used_wrap_counter;
			region_barrier();
		}
	}
	r->free_head = r->old_free_head;
	r->used_idx = r->old_used_idx;
	r->used_wrap_counter = r->old_used_wrap_counter;
	if (r->used_idx >= ifq->size || r->free_head > ifq->size) {
		UVH_ERR("inflight: packed region indexes out of range");
		return -EINVAL;
	}
	/* whatever is on the free list is not in flight */
	for (i = r->free_head, hops = 0; i != ifq->size; i = r->desc[i].next) {
		if (i > ifq->size || ++hops > ifq->size) {
			UVH_ERR("inflight: packed free list corrupt");
			return -EINVAL;
		}
		r->desc[i].inflight = 0;
	}
	return collect_inflight(ifq, entries, max);
}

int uvh_inflight_packed_chain(const struct uvh_inflight_vq *ifq, uint16_t entry,
			      struct uvh_vring_packed_desc *out, unsigned int max)
{
	const struct uvh_inflight_packed *r = ifq->region;
	uint16_t num, i = entry, k;

	if (entry >= ifq->size)
		return -EINVAL;
	num = r->desc[entry].num;
	if (num == 0 || num > ifq->size || num > max)
		return -EINVAL;
	for (k = 0; k < num; k++) {
		if (i >= ifq->size)
			return -EINVAL;
		out[k].addr = r->desc[i].addr;
		out[k].len = r->desc[i].len;
		out[k].id = r->desc[i].id;
		out[k].flags = r->desc[i].flags;
		i = r->desc[i].next;
	}
	return num;
}

/* ---- start ------------------------------------------------------------------- */

static void resubmit_none(struct uvh_inflight_vq *ifq)
{
	ifq->nresubmit = 0;
	ifq->resubmit_next = 0;
}

static int start_split(struct uvh_inflight_vq *ifq, struct uvh_vq *vq)
{
	struct uvh_inflight_split *r = ifq->region;
	uint16_t used_ring_idx;
	int n;

	/* the used ring is ours: no other writer to order against */
	used_ring_idx = atomic_load_explicit((_Atomic uint16_t *)&vq->used->idx,
					     memory_order_relaxed);
	if (r->version == 0) {
		split_fresh(ifq, vq->used_idx);
		return 0;
	}
	n = uvh_inflight_split_resubmit(ifq, used_ring_idx, ifq->resubmit, ifq->size);
	if (n < 0) {
		split_fresh(ifq, used_ring_idx);
		vq->used_idx = used_ring_idx;
		vq->last_avail = used_ring_idx;
		vq->shadow_avail = used_ring_idx;
		return n;
	}
	ifq->nresubmit = (uint16_t)n;
	/* every chain taken from the ring was either used or is still in
	 * flight, so the ring was consumed up to used idx + in flight */
	vq->used_idx = used_ring_idx;
	vq->last_avail = (uint16_t)(used_ring_idx + n);
	vq->shadow_avail = vq->last_avail;
	return n;
}

static int start_packed(struct uvh_inflight_vq *ifq, struct uvh_vq *vq)
{
	struct uvh_inflight_packed *r = ifq->region;
	uint32_t slots = 0;
	uint16_t avail;
	bool wrap;
	int n, k;

	if (r->version == 0) {
		packed_fresh(ifq, vq->used_slot, vq->used_wrap);
		return 0;
	}
	n = uvh_inflight_packed_resubmit(ifq, vq->pdesc, ifq->resubmit, ifq->size);
	if (n < 0) {
		packed_fresh(ifq, vq->used_slot, vq->used_wrap);
		return n;
	}
	/* the ring was consumed from the used position over every slot of
	 * the chains still in flight */
	for (k = 0; k < n; k++)
		slots += r->desc[ifq->resubmit[k]].num;
	if (slots > ifq->size) {
		UVH_ERR("inflight: %u slots in flight on a ring of %u", slots, ifq->size);
		packed_fresh(ifq, vq->used_slot, vq->used_wrap);
		return -EINVAL;
	}
	ifq->nresubmit = (uint16_t)n;
	vq->used_slot = r->used_idx;
	vq->used_idx = r->used_idx;
	vq->used_wrap = r->used_wrap_counter;
	avail = (uint16_t)(r->used_idx + slots);
	wrap = vq->used_wrap;
	if (avail >= ifq->size) {
		avail = (uint16_t)(avail - ifq->size);
		wrap = !wrap;
	}
	vq->last_avail = avail;
	vq->shadow_avail = avail;
	vq->avail_wrap = wrap;
	return n;
}

int uvh_inflight_vq_start(struct uvh_inflight_vq *ifq, struct uvh_vq *vq)
{
	int n;

	if (!ifq || !vq || !ifq->region || vq->cfg.size != ifq->size ||
	    vq->cfg.packed != ifq->packed)
		return -EINVAL;
	resubmit_none(ifq);
	n = ifq->packed ? start_packed(ifq, vq) : start_split(ifq, vq);
	vq->inflight = ifq;
	if (n > 0)
		UVH_INFO("inflight: %d chain(s) to resubmit", n);
	return n;
}
