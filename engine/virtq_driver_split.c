/* SPDX-License-Identifier: MIT */
/*
 * uvhost: split virtqueue, driver side (the guest's role).
 *
 * The free descriptor list lives in our private next_free[] array, not in
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
	return *(const volatile uint16_t *)p;
}

static inline void store16(uint16_t *p, uint16_t v)
{
	*(volatile uint16_t *)p = v;
}

int uvh_vq_driver_split_init(struct uvh_vq_driver *drv)
{
	uint16_t i;

	for (i = 0; i < drv->size; i++)
		drv->next_free[i] = (uint16_t)(i + 1);
	drv->free_head = 0;
	drv->num_free = drv->size;
	drv->avail_idx = 0;
	drv->last_used = 0;
	drv->kicked_avail = 0;
	return 0;
}

int uvh_vq_driver_split_add(struct uvh_vq_driver *drv, const struct uvh_vq_buf *bufs,
			    unsigned int nout, unsigned int nin, void *token)
{
	struct uvh_vring_desc *desc = drv_desc(drv);
	struct uvh_vring_avail *avail = drv_avail(drv);
	unsigned int total = nout + nin, i;
	uint16_t head, cur, prev = 0;

	if (total == 0 || total > drv->size)
		return -EINVAL;
	if (total > drv->num_free)
		return -ENOSPC;
	head = cur = drv->free_head;
	for (i = 0; i < total; i++) {
		uint16_t flags = i >= nout ? UVH_VRING_DESC_F_WRITE : 0;

		if (i + 1 < total)
			flags |= UVH_VRING_DESC_F_NEXT;
		desc[cur].addr = bufs[i].gpa;
		desc[cur].len = bufs[i].len;
		desc[cur].flags = flags;
		desc[cur].next = (i + 1 < total) ? drv->next_free[cur] : 0;
		prev = cur;
		cur = drv->next_free[cur];
	}
	/* the chain stays linked in next_free[] for the free on completion */
	drv->free_head = cur;
	drv->num_free = (uint16_t)(drv->num_free - total);
	drv->tokens[head] = token;
	drv->chain_len[head] = (uint16_t)total;
	drv->last_desc[head] = prev;
	avail->ring[drv->avail_idx & (drv->size - 1)] = head;
	drv->avail_idx++;
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
	uint16_t mask = (uint16_t)(drv->size - 1), used_idx, pending, first = drv->last_used;
	unsigned int n = 0;

	/* pairs with the device's release store of used->idx */
	used_idx = atomic_load_explicit((_Atomic uint16_t *)&used->idx, memory_order_acquire);
	pending = (uint16_t)(used_idx - drv->last_used);
	if (pending > drv->size)
		return 0;	/* a device gone wrong: take nothing */
	while (n < max && pending) {
		const volatile struct uvh_vring_used_elem *e = &used->ring[drv->last_used & mask];
		uint32_t id = e->id, len = e->len;
		uint16_t last;

		if (id >= drv->size || drv->chain_len[id] == 0)
			break;	/* not a chain we gave: never free it */
		tokens[n] = drv->tokens[id];
		lens[n] = len;
		last = drv->last_desc[id];
		drv->next_free[last] = drv->free_head;
		drv->free_head = (uint16_t)id;
		drv->num_free = (uint16_t)(drv->num_free + drv->chain_len[id]);
		drv->chain_len[id] = 0;
		drv->tokens[id] = NULL;
		drv->last_used++;
		pending--;
		n++;
	}
	/* Callbacks on (EVENT_IDX): used_event sits at our last position
	 * (enable_cb put it there; off, it sits one behind); keep asking
	 * for the interrupt after what we took. */
	if (n && drv->event_idx && load16(&avail->ring[drv->size]) == first)
		store16(&avail->ring[drv->size], drv->last_used);
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
