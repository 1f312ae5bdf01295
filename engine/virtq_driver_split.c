/* SPDX-License-Identifier: MIT */
/*
 * uvhost: split virtqueue, driver side (the guest's role).
 *
 * The free descriptor list lives in our private ids[].next_free, not in
 * the shared descriptors' next fields, so a device that scribbles on the
 * table cannot corrupt our bookkeeping. Used elements are checked (id in
 * range and in flight) before they free anything.
 *
 * Memory ordering (the other side is the device):
 *  - publish: release store of avail->idx  <->  device's acquire load.
 *  - get_used: acquire load of used->idx  <->  device's release store.
 *  - need_kick: full fence between the avail->idx store and the load of
 *    avail_event / used->flags  <->  device's fence in notify enable.
 *  - enable_cb: full fence after writing used_event / avail->flags  <->
 *    device's fence in need_call between used->idx store and their load.
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "virtq_internal.h"

/* descriptors are written as 64-bit words in the ring's byte order */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "virtio 1.x rings are little-endian");

static inline struct uvh_vring_desc *drv_desc(struct uvh_vq_driver *drv)
{
	return drv->desc;
}

static inline struct uvh_vring_avail *drv_avail(struct uvh_vq_driver *drv)
{
	return drv->driver_area;
}

static inline struct uvh_vring_used *drv_used(struct uvh_vq_driver *drv)
{
	return drv->device_area;
}

static inline uint16_t load16(const uint16_t *p)
{
	return uvh_shm_load16(p);
}

static inline void store16(uint16_t *p, uint16_t v)
{
	uvh_shm_store16(p, v);
}

int uvh_vq_driver_split_init(struct uvh_vq_driver *drv)
{
	uint16_t i;

	for (i = 0; i < drv->size; i++) {
		drv->ids[i].next_free = (uint16_t)(i + 1);
		drv->ids[i].ndesc = 0;
	}
	drv->free_head = 0;
	drv->num_free = drv->size;
	drv->avail_idx = 0;
	drv->last_used = 0;
	drv->kicked_avail = 0;
	return 0;
}

/* A descriptor as two 8-byte stores (little-endian: len, flags, next in
 * the second): the driver's stores are what limits a packet generator. */
static inline void desc_write(struct uvh_vring_desc *d, uint64_t addr, uint32_t len,
			      uint16_t flags, uint16_t next)
{
	uvh_shm_store64(&d->addr, addr);
	uvh_shm_store64(&d->len, len | (uint64_t)flags << 32 | (uint64_t)next << 48);
}

/* ndesc and last of an id as one 32-bit store (next_free is left alone:
 * it links the chain's descriptors until the chain is freed) */
static inline void id_set(struct uvh_vq_driver_id *e, uint16_t ndesc, uint16_t last)
{
	uint16_t v[2] = { ndesc, last };

	memcpy(&e->ndesc, v, sizeof(v));
}

int uvh_vq_driver_split_add(struct uvh_vq_driver *drv, const struct uvh_vq_buf *bufs,
			    unsigned int nout, unsigned int nin, void *token)
{
	struct uvh_vring_desc *desc = drv_desc(drv);
	struct uvh_vring_avail *avail = drv_avail(drv);
	struct uvh_vq_driver_id *ids = drv->ids;
	unsigned int total = nout + nin, i;
	uint16_t head, cur, prev = 0;

	if (total == 0 || total > drv->size)
		return -EINVAL;
	if (total > drv->num_free)
		return -ENOSPC;
	head = cur = drv->free_head;
	for (i = 0; i < total; i++) {
		uint16_t flags = i >= nout ? UVH_VRING_DESC_F_WRITE : 0;
		uint16_t next = ids[cur].next_free;

		if (i + 1 < total)
			flags |= UVH_VRING_DESC_F_NEXT;
		desc_write(&desc[cur], bufs[i].gpa, bufs[i].len, flags, i + 1 < total ? next : 0);
		prev = cur;
		cur = next;
	}
	/* the chain stays linked in ids[].next_free for the free on completion */
	drv->free_head = cur;
	drv->num_free = (uint16_t)(drv->num_free - total);
	drv->tokens[head] = token;
	id_set(&ids[head], (uint16_t)total, prev);
	avail->ring[drv->avail_idx & (drv->size - 1)] = head;
	drv->avail_idx++;
	return 0;
}

int uvh_vq_driver_split_add_burst(struct uvh_vq_driver *drv, const struct uvh_vq_buf *bufs,
				  unsigned int n, bool device_writable, void *const *tokens)
{
	struct uvh_vring_desc *desc = drv_desc(drv);
	uint16_t *ring = drv_avail(drv)->ring;
	struct uvh_vq_driver_id *ids = drv->ids;
	void **tok = drv->tokens;
	uint16_t flags = device_writable ? UVH_VRING_DESC_F_WRITE : 0;
	uint16_t mask = (uint16_t)(drv->size - 1), cur = drv->free_head, aidx = drv->avail_idx;
	unsigned int i;

	if (n > drv->num_free)
		return -ENOSPC;
	/* locals, not fields: the ring stores could alias them otherwise */
	for (i = 0; i < n; i++) {
		uint16_t next = ids[cur].next_free;

		desc_write(&desc[cur], bufs[i].gpa, bufs[i].len, flags, 0);
		tok[cur] = tokens[i];
		id_set(&ids[cur], 1, cur);
		ring[(uint16_t)(aidx + i) & mask] = cur;
		cur = next;
	}
	drv->free_head = cur;
	drv->num_free = (uint16_t)(drv->num_free - n);
	drv->avail_idx = (uint16_t)(aidx + n);
	return 0;
}

void uvh_vq_driver_split_publish(struct uvh_vq_driver *drv)
{
	/* pairs with the device's acquire load of avail->idx: the ring
	 * entries and descriptors written before are seen with it */
	atomic_store_explicit((_Atomic uint16_t *)&drv_avail(drv)->idx, drv->avail_idx,
			      memory_order_release);
}

/* virtio's vring_need_event() */
static inline bool need_event(uint16_t event, uint16_t new_idx, uint16_t old)
{
	return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

bool uvh_vq_driver_split_need_kick(struct uvh_vq_driver *drv)
{
	struct uvh_vring_used *used = drv_used(drv);
	uint16_t old = drv->kicked_avail, new_idx = drv->avail_idx;

	drv->kicked_avail = new_idx;
	if (new_idx == old)
		return false;
	/* avail->idx store before the suppression load; pairs with the
	 * device's fence in notify enable */
	atomic_thread_fence(memory_order_seq_cst);
	if (drv->event_idx)
		return need_event(load16((uint16_t *)&used->ring[drv->size]), new_idx, old);
	return !(load16(&used->flags) & UVH_VRING_USED_F_NO_NOTIFY);
}

unsigned int uvh_vq_driver_split_get_used(struct uvh_vq_driver *drv, void **tokens,
					  uint32_t *lens, unsigned int max)
{
	struct uvh_vring_used *used = drv_used(drv);
	struct uvh_vring_avail *avail = drv_avail(drv);
	struct uvh_vq_driver_id *ids = drv->ids;
	uint16_t size = drv->size, mask = (uint16_t)(size - 1), used_idx, pending;
	uint16_t first = drv->last_used, last_used = first;
	uint16_t free_head = drv->free_head, num_free = drv->num_free;
	unsigned int n = 0;

	/* pairs with the device's release store of used->idx */
	used_idx = atomic_load_explicit((_Atomic uint16_t *)&used->idx, memory_order_acquire);
	pending = (uint16_t)(used_idx - last_used);
	if (pending > size)
		return 0;	/* a device gone wrong: take nothing */
	if (pending > max)
		pending = (uint16_t)max;
	/* The device wrote these lines: start every transfer now rather than
	 * one at a time as the loop reaches them. */
	for (unsigned int i = 0; i < pending; i += 8)
		__builtin_prefetch(&used->ring[(uint16_t)(last_used + i) & mask]);
	if (pending)
		__builtin_prefetch(&used->ring[(uint16_t)(last_used + pending - 1) & mask]);
	/* fields in locals for the loop: the stores into tokens/lens could
	 * alias them otherwise */
	for (; n < pending; n++) {
		const struct uvh_vring_used_elem *e = &used->ring[last_used & mask];
		uint32_t id = uvh_shm_load32(&e->id), len = uvh_shm_load32(&e->len);
		struct uvh_vq_driver_id *ent;

		if (id >= size || ids[id].ndesc == 0)
			break;	/* not a chain we gave: never free it */
		ent = &ids[id];
		tokens[n] = drv->tokens[id];
		if (lens)
			lens[n] = len;
		ids[ent->last].next_free = free_head;
		free_head = (uint16_t)id;
		num_free = (uint16_t)(num_free + ent->ndesc);
		ent->ndesc = 0;
		last_used++;
	}
	drv->free_head = free_head;
	drv->num_free = num_free;
	drv->last_used = last_used;
	/* Callbacks on (EVENT_IDX): used_event sits at our last position
	 * (enable_cb put it there; off, it sits one behind); keep asking
	 * for the interrupt after what we took. */
	if (n && drv->event_idx && load16(&avail->ring[size]) == first)
		store16(&avail->ring[size], last_used);
	return n;
}

void uvh_vq_driver_split_enable_cb(struct uvh_vq_driver *drv, bool enable)
{
	struct uvh_vring_avail *avail = drv_avail(drv);

	if (drv->event_idx) {
		/* flags must stay 0 with EVENT_IDX; an event one behind our
		 * position is passed only after 64k completions */
		store16(&avail->ring[drv->size],
			enable ? drv->last_used : (uint16_t)(drv->last_used - 1));
	} else {
		store16(&avail->flags, enable ? 0 : UVH_VRING_AVAIL_F_NO_INTERRUPT);
	}
	if (!enable)
		return;
	/* used_event / flags store before the caller re-reads used->idx;
	 * pairs with the device's fence in need_call */
	atomic_thread_fence(memory_order_seq_cst);
}
