/* SPDX-License-Identifier: MIT */
/*
 * uvhost: driver side of a packed virtqueue (the guest's role).
 *
 * Chains go into consecutive ring slots under a buffer id taken from a
 * free-id list (next_id heads it, ids[].next_free links it). A burst of chains
 * is published with one release store: the first slot of the burst is
 * written "not available" (AVAIL = !wrap, USED = wrap) when added and
 * flipped to available by uvh_vq_driver_publish(), after every other slot.
 *
 * Packed use of the struct's split fields (unused otherwise):
 *   num_free     free ring slots
 *   avail_idx    position (slot | wrap << 15) of the first unpublished slot
 *   kicked_avail position published at the last need_kick
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "virtq_internal.h"

/* descriptors are written as 64-bit words in the ring's byte order */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "virtio 1.x rings are little-endian");

#define PACKED_WRAP_BIT		15
#define PACKED_IDX_MASK		0x7fffu
#define PACKED_AVAIL_USED	(UVH_VRING_PACKED_DESC_F_AVAIL | UVH_VRING_PACKED_DESC_F_USED)

static inline uint16_t ld16(const uint16_t *p, memory_order mo)
{
	return atomic_load_explicit((const _Atomic uint16_t *)p, mo);
}

static inline void st16(uint16_t *p, uint16_t v, memory_order mo)
{
	atomic_store_explicit((_Atomic uint16_t *)p, v, mo);
}

static inline uint16_t pos(uint16_t slot, bool wrap)
{
	return (uint16_t)(slot | ((unsigned int)wrap << PACKED_WRAP_BIT));
}

static inline struct uvh_vring_packed_desc *ring(const struct uvh_vq_driver *drv)
{
	return drv->desc;
}

static inline void st_event(void *area, uint16_t off_wrap, uint16_t flags)
{
	atomic_store_explicit((_Atomic uint32_t *)area,
			      (uint32_t)off_wrap | ((uint32_t)flags << 16), memory_order_relaxed);
}

int uvh_vq_driver_packed_init(struct uvh_vq_driver *drv)
{
	uint16_t i;

	/* Zeroed descriptors (AVAIL = USED = 0) are neither available nor
	 * used for wrap counters starting at 1. */
	memset(drv->desc, 0, uvh_vring_desc_bytes(drv->size, true));
	memset(drv->driver_area, 0, sizeof(struct uvh_vring_packed_event));
	memset(drv->device_area, 0, sizeof(struct uvh_vring_packed_event));
	drv->next_slot = 0;
	drv->last_used_slot = 0;
	drv->avail_wrap = true;
	drv->used_wrap = true;
	drv->num_free = drv->size;
	drv->avail_idx = pos(0, true);
	drv->kicked_avail = pos(0, true);
	for (i = 0; i < drv->size; i++) {
		drv->ids[i].next_free = (uint16_t)(i + 1);
		drv->ids[i].ndesc = 0;
		drv->tokens[i] = NULL;
	}
	drv->next_id = 0;
	return 0;
}

int uvh_vq_driver_packed_add(struct uvh_vq_driver *drv, const struct uvh_vq_buf *bufs,
			     unsigned int nout, unsigned int nin, void *token)
{
	struct uvh_vring_packed_desc *r = ring(drv);
	unsigned int n = nout + nin, i;
	uint16_t slot = drv->next_slot, id;
	bool wrap = drv->avail_wrap;
	/* nothing pending: this chain opens the burst and its head waits */
	bool opens = drv->avail_idx == pos(slot, wrap);

	if (!n || n > drv->size)
		return -EINVAL;
	if (n > drv->num_free || drv->next_id >= drv->size)
		return -ENOSPC;
	id = drv->next_id;
	drv->next_id = drv->ids[id].next_free;

	for (i = 0; i < n; i++) {
		struct uvh_vring_packed_desc *d = &r[slot];
		uint16_t flags = wrap ? UVH_VRING_PACKED_DESC_F_AVAIL : UVH_VRING_PACKED_DESC_F_USED;

		if (i >= nout)
			flags |= UVH_VRING_DESC_F_WRITE;
		if (i + 1 < n)
			flags |= UVH_VRING_DESC_F_NEXT;
		d->addr = bufs[i].gpa;
		d->len = bufs[i].len;
		d->id = id;
		if (i == 0 && opens)	/* written available at publish */
			flags ^= PACKED_AVAIL_USED;
		/* relaxed: the burst's first flags are released after these */
		st16(&d->flags, flags, memory_order_relaxed);
		drv->ids[id].last = slot;
		if (++slot == drv->size) {
			slot = 0;
			wrap = !wrap;
		}
	}
	drv->tokens[id] = token;
	drv->ids[id].ndesc = (uint16_t)n;
	drv->num_free = (uint16_t)(drv->num_free - n);
	drv->next_slot = slot;
	drv->avail_wrap = wrap;
	return 0;
}

/* A descriptor as two 64-bit stores: addr, then len, id and flags in one
 * relaxed atomic store (flags are polled by the device, so they are never
 * written non-atomically; the burst's first flags are released later). */
static inline void pdesc_write(struct uvh_vring_packed_desc *d, uint64_t addr, uint32_t len,
			       uint16_t id, uint16_t flags)
{
	d->addr = addr;
	atomic_store_explicit((_Atomic uint64_t *)(void *)&d->len,
			      (uint64_t)len | (uint64_t)id << 32 | (uint64_t)flags << 48,
			      memory_order_relaxed);
}

int uvh_vq_driver_packed_add_burst(struct uvh_vq_driver *drv, const struct uvh_vq_buf *bufs,
				   unsigned int n, bool device_writable, void *const *tokens)
{
	struct uvh_vring_packed_desc *r = ring(drv);
	struct uvh_vq_driver_id *ids = drv->ids;
	void **tok = drv->tokens;
	uint16_t size = drv->size, slot = drv->next_slot, id = drv->next_id;
	uint16_t wflag = device_writable ? UVH_VRING_DESC_F_WRITE : 0;
	bool wrap = drv->avail_wrap;
	uint16_t flags = (uint16_t)(wflag | (wrap ? UVH_VRING_PACKED_DESC_F_AVAIL
					      : UVH_VRING_PACKED_DESC_F_USED));
	unsigned int i;

	if (!n)
		return 0;
	if (n > drv->num_free)
		return -ENOSPC;
	/* Every chain takes one slot and one id, and free ids >= free slots
	 * (a chain in flight holds one id and at least one slot), so the id
	 * list cannot run dry here; walked first anyway, so that even a
	 * corrupted list makes us write nothing rather than half a burst. */
	for (i = 0; i < n; i++) {
		if (id >= size)
			return -ENOSPC;
		id = ids[id].next_free;
	}
	id = drv->next_id;
	for (i = 0; i < n; i++) {
		uint16_t f = flags;

		/* nothing pending: the burst's first chain waits, written
		 * not-available, for publish to flip it with a release */
		if (i == 0 && drv->avail_idx == pos(slot, wrap))
			f ^= PACKED_AVAIL_USED;
		/* relaxed: the device reads none of these slots before the
		 * burst's first flags, released by publish */
		pdesc_write(&r[slot], bufs[i].gpa, bufs[i].len, id, f);
		tok[id] = tokens[i];
		ids[id].ndesc = 1;
		ids[id].last = slot;
		id = ids[id].next_free;
		if (++slot == size) {
			slot = 0;
			wrap = !wrap;
			flags ^= PACKED_AVAIL_USED;
		}
	}
	drv->next_id = id;
	drv->num_free = (uint16_t)(drv->num_free - n);
	drv->next_slot = slot;
	drv->avail_wrap = wrap;
	return 0;
}

void uvh_vq_driver_packed_publish(struct uvh_vq_driver *drv)
{
	struct uvh_vring_packed_desc *d;
	uint16_t flags;

	if (drv->avail_idx == pos(drv->next_slot, drv->avail_wrap))
		return;
	d = &ring(drv)[drv->avail_idx & PACKED_IDX_MASK];
	flags = ld16(&d->flags, memory_order_relaxed);
	/* release: every descriptor of the burst before its first flags;
	 * pairs with the device's acquire load of the flags in pop */
	st16(&d->flags, flags ^ PACKED_AVAIL_USED, memory_order_release);
	drv->avail_idx = pos(drv->next_slot, drv->avail_wrap);
}

bool uvh_vq_driver_packed_need_kick(struct uvh_vq_driver *drv)
{
	uint16_t new_pos = drv->avail_idx, old_pos = drv->kicked_avail;
	uint16_t now = new_pos & PACKED_IDX_MASK, old, ev, off_wrap, flags;
	bool wrap = new_pos >> PACKED_WRAP_BIT;
	uint32_t e;

	drv->kicked_avail = new_pos;
	/* full fence: our published flags before reading the device's event;
	 * pairs with the fence in the device's notify_enable between writing
	 * its event and re-checking the ring */
	atomic_thread_fence(memory_order_seq_cst);
	e = atomic_load_explicit((const _Atomic uint32_t *)drv->device_area, memory_order_relaxed);
	off_wrap = (uint16_t)e;
	flags = (uint16_t)(e >> 16) & 3u;
	if (old_pos == new_pos || flags == UVH_VRING_PACKED_EVENT_DISABLE)
		return false;
	if (flags != UVH_VRING_PACKED_EVENT_DESC || !drv->event_idx)
		return true;
	/* relative to the current lap; earlier-lap positions move back a ring */
	old = old_pos & PACKED_IDX_MASK;
	if ((bool)(old_pos >> PACKED_WRAP_BIT) != wrap)
		old = (uint16_t)(old - drv->size);
	ev = off_wrap & PACKED_IDX_MASK;
	if ((bool)(off_wrap >> PACKED_WRAP_BIT) != wrap)
		ev = (uint16_t)(ev - drv->size);
	/* kick when the slot the device waits on was published in [old, now) */
	return (uint16_t)(now - ev - 1) < (uint16_t)(now - old);
}

unsigned int uvh_vq_driver_packed_get_used(struct uvh_vq_driver *drv, void **tokens,
					   uint32_t *lens, unsigned int max)
{
	struct uvh_vring_packed_desc *r = ring(drv);
	struct uvh_vq_driver_id *ids = drv->ids;
	uint16_t size = drv->size, slot = drv->last_used_slot, next_id = drv->next_id;
	uint16_t num_free = drv->num_free;
	bool wrap = drv->used_wrap;
	unsigned int n = 0;

	/* fields in locals for the loop: the stores into tokens/lens could
	 * alias them otherwise */
	while (n < max) {
		struct uvh_vring_packed_desc *d = &r[slot];
		uint16_t flags, id, nd;
		uint32_t len;

		/* acquire: pairs with the device's release of the first flags
		 * of its burst in push; the later ones were written before */
		flags = ld16(&d->flags, memory_order_acquire);
		if (!!(flags & UVH_VRING_PACKED_DESC_F_AVAIL) != wrap ||
		    !!(flags & UVH_VRING_PACKED_DESC_F_USED) != wrap)
			break;
		id = ld16(&d->id, memory_order_relaxed);
		len = atomic_load_explicit((const _Atomic uint32_t *)&d->len, memory_order_relaxed);
		if (id >= size || !ids[id].ndesc) {
			UVH_WARN("virtq driver: device used unknown buffer id %u", id);
			break;
		}
		nd = ids[id].ndesc;
		tokens[n] = drv->tokens[id];
		if (lens)
			lens[n] = len;
		n++;
		ids[id].ndesc = 0;
		ids[id].next_free = next_id;
		next_id = id;
		num_free = (uint16_t)(num_free + nd);
		slot = (uint16_t)(slot + nd);
		if (slot >= size) {
			slot = (uint16_t)(slot - size);
			wrap = !wrap;
		}
	}
	drv->last_used_slot = slot;
	drv->used_wrap = wrap;
	drv->next_id = next_id;
	drv->num_free = num_free;
	return n;
}

void uvh_vq_driver_packed_enable_cb(struct uvh_vq_driver *drv, bool enable)
{
	if (!enable) {
		st_event(drv->driver_area, 0, UVH_VRING_PACKED_EVENT_DISABLE);
		return;
	}
	if (drv->event_idx)	/* call me when the next used slot is written */
		st_event(drv->driver_area, pos(drv->last_used_slot, drv->used_wrap),
			 UVH_VRING_PACKED_EVENT_DESC);
	else
		st_event(drv->driver_area, 0, UVH_VRING_PACKED_EVENT_ENABLE);
	/* full fence: the event before the caller re-checks the used ring;
	 * pairs with the fence in the device's need_call between its used
	 * descriptors and reading our event */
	atomic_thread_fence(memory_order_seq_cst);
}
