/* SPDX-License-Identifier: MIT */
/*
 * uvhost: device side of a packed virtqueue (virtio 1.2, 2.8).
 *
 * One ring of descriptors shared both ways. The driver makes a chain
 * available by filling consecutive slots and writing the first slot's flags
 * last (AVAIL = its wrap counter, USED = the inverse); we give a chain back
 * by writing one used descriptor (AVAIL = USED = our used wrap counter) at
 * our used position and skipping as many slots as the chain took.
 *
 * Guest memory is hostile: every descriptor field is read once into a local,
 * checked, then used; nothing outside the memory table is dereferenced.
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "util.h"
#include "inflight.h"
#include "virtq_internal.h"

/* used descriptors are written as 64-bit words in the ring's byte order */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "virtio 1.x rings are little-endian");

#define PACKED_WRAP_BIT		15
#define PACKED_IDX_MASK		0x7fffu
#define PACKED_EVENT_FLAGS_MASK	0x3u
/* the AVAIL/USED pair of a descriptor marked used with wrap counter w */
#define PACKED_USED_FLAGS(w)	((w) ? (UVH_VRING_PACKED_DESC_F_AVAIL | \
					UVH_VRING_PACKED_DESC_F_USED) : 0)

/* ---- access to shared memory ------------------------------------------------- */

static inline uint16_t ld16(const uint16_t *p, memory_order mo)
{
	return atomic_load_explicit((const _Atomic uint16_t *)p, mo);
}

static inline uint32_t ld32(const uint32_t *p)
{
	return atomic_load_explicit((const _Atomic uint32_t *)p, memory_order_relaxed);
}

static inline uint64_t ld64(const uint64_t *p)
{
	return atomic_load_explicit((const _Atomic uint64_t *)p, memory_order_relaxed);
}

static inline void st16(uint16_t *p, uint16_t v, memory_order mo)
{
	atomic_store_explicit((_Atomic uint16_t *)p, v, mo);
}

static inline void st32(uint32_t *p, uint32_t v)
{
	atomic_store_explicit((_Atomic uint32_t *)p, v, memory_order_relaxed);
}

/* An event suppression structure as one 32-bit word: off_wrap low, flags high. */
static inline uint32_t ld_event(const struct uvh_vring_packed_event *e, memory_order mo)
{
	return atomic_load_explicit((const _Atomic uint32_t *)(const void *)e, mo);
}

static inline void st_event(struct uvh_vring_packed_event *e, uint16_t off_wrap, uint16_t flags,
			    memory_order mo)
{
	atomic_store_explicit((_Atomic uint32_t *)(void *)e,
			      (uint32_t)off_wrap | ((uint32_t)flags << 16), mo);
}

/* Available to a device whose avail wrap counter is @wrap (2.8.1). */
static inline bool desc_is_avail(uint16_t flags, bool wrap)
{
	return !!(flags & UVH_VRING_PACKED_DESC_F_AVAIL) == wrap &&
	       !!(flags & UVH_VRING_PACKED_DESC_F_USED) != wrap;
}

/* One descriptor read once from the ring or an indirect table. */
struct pdesc_val {
	uint64_t addr;
	uint32_t len;
	uint16_t id;
	uint16_t flags;
};

static inline void read_ring_desc(const struct uvh_vring_packed_desc *d, uint16_t flags,
				  struct pdesc_val *v)
{
	v->addr = ld64(&d->addr);
	v->len = ld32(&d->len);
	v->id = ld16(&d->id, memory_order_relaxed);
	v->flags = flags;
}

/* ---- setup ------------------------------------------------------------------- */

int uvh_vq_packed_map(struct uvh_vq *vq)
{
	const struct uvh_vq_config *cfg = &vq->cfg;
	void *desc, *drv, *dev;

	if (!cfg->size || cfg->size > UVH_VRING_MAX_SIZE)
		return -EINVAL;
	/* Atomic access needs natural alignment of our pointers too, and a
	 * region's gpa need not be page aligned: check the translations. */
	desc = uvh_memory_gpa_to_hva(vq->mem, cfg->desc_gpa,
				     (uint64_t)cfg->size * sizeof(struct uvh_vring_packed_desc), NULL);
	drv = uvh_memory_gpa_to_hva(vq->mem, cfg->driver_gpa,
				    sizeof(struct uvh_vring_packed_event), NULL);
	dev = uvh_memory_gpa_to_hva(vq->mem, cfg->device_gpa,
				    sizeof(struct uvh_vring_packed_event), NULL);
	if (!desc || !drv || !dev) {
		uvh_vq_fail(vq, UVH_VQ_ERR_RING_ADDR, "packed ring area not in guest memory");
		return -EFAULT;
	}
	if (((uintptr_t)desc & 15) || ((uintptr_t)drv & 3) || ((uintptr_t)dev & 3)) {
		uvh_vq_fail(vq, UVH_VQ_ERR_RING_ADDR, "packed ring area misaligned");
		return -EFAULT;
	}
	vq->pdesc = desc;
	vq->driver_event = drv;
	vq->device_event = dev;
	return 0;
}

/* ---- pop ----------------------------------------------------------------------- */

/* Where one chain's iovecs go and what has been seen so far. */
struct chain_ctx {
	struct uvh_vq_chain *c;
	struct iovec *iov;		/* the chain's first iovec */
	unsigned int iov_room;		/* iovecs left for it */
	uint64_t total;			/* bytes, both directions */
	bool pool_short;		/* ran out of the burst's iovecs, not of iov_max */
	bool iotlb_miss;		/* an IOVA is not cached yet: retry later */
	bool burst_start;		/* first chain of the burst: has the whole pool */
};

/* chain_add()'s translation with IOVAs (off the GPA path). Count, or a
 * uvh_vq_error with cx->iotlb_miss / pool_short telling a retry apart. */
static __attribute__((noinline)) int chain_map_iotlb(struct uvh_vq *vq, struct chain_ctx *cx,
						     uint64_t iova, uint32_t len, bool write,
						     unsigned int nseg)
{
	int r = uvh_vq_iova_to_iov(vq, iova, len, write ? UVH_IOTLB_WO : UVH_IOTLB_RO,
				   cx->iov + nseg, cx->iov_room - nseg);

	if (r >= 0)
		return r;
	if (r == -ENOBUFS) {
		cx->pool_short = !cx->burst_start;
		return -UVH_VQ_ERR_TOO_MANY_SEGMENTS;
	}
	if (r == -ENOENT) {
		cx->iotlb_miss = true;
		return -UVH_VQ_ERR_IOTLB;
	}
	return r == -EACCES ? -UVH_VQ_ERR_IOTLB : -UVH_VQ_ERR_DESC_ADDR;
}

/* Add one buffer to the chain. 0 or a uvh_vq_error. */
static enum uvh_vq_error chain_add(struct uvh_vq *vq, struct chain_ctx *cx, uint64_t gpa,
				   uint32_t len, bool write)
{
	struct uvh_vq_chain *c = cx->c;
	unsigned int nseg = (unsigned int)c->nout + c->nin;
	int r;

	if (!write && c->nin && vq->cfg.strict_order)
		return UVH_VQ_ERR_WRITE_ORDER;
	if (!len)
		return UVH_VQ_OK;
	if (gpa + len < gpa)
		return UVH_VQ_ERR_DESC_ADDR;
	cx->total += len;
	if (cx->total > UINT32_MAX)
		return UVH_VQ_ERR_LEN_OVERFLOW;
	if (unlikely(vq->cfg.iotlb != NULL)) {
		/* logged by the translation: gpa is an IOVA here */
		r = chain_map_iotlb(vq, cx, gpa, len, write, nseg);
		if (r < 0)
			return (enum uvh_vq_error)-r;
		if (nseg + (unsigned int)r > UINT16_MAX)
			return UVH_VQ_ERR_TOO_MANY_SEGMENTS;
		goto mapped_iova;
	}
	/* the common case first: the buffer lies in one region */
	if (likely(nseg < cx->iov_room)) {
		void *p = uvh_memory_gpa_to_hva(vq->mem, gpa, len, &vq->mem_hint);

		if (likely(p != NULL)) {
			cx->iov[nseg].iov_base = p;
			cx->iov[nseg].iov_len = len;
			r = 1;
			goto mapped;
		}
	}
	r = uvh_memory_gpa_to_iov(vq->mem, gpa, len, cx->iov + nseg, cx->iov_room - nseg,
				  &vq->mem_hint);
	if (r == -ENOBUFS) {
		cx->pool_short = !cx->burst_start;
		return UVH_VQ_ERR_TOO_MANY_SEGMENTS;
	}
	if (r < 0)
		return UVH_VQ_ERR_DESC_ADDR;
	if (nseg + (unsigned int)r > UINT16_MAX)
		return UVH_VQ_ERR_TOO_MANY_SEGMENTS;
mapped:
	if (write && vq->log) {
		/* also marked at push; marking here as well covers chains
		 * completed out of order, whose descriptors push can't find */
		uvh_dirty_log_mark(vq->log, gpa, len);
	}
mapped_iova:
	if (write) {
		c->nin = (uint16_t)(c->nin + r);
		c->in_len += len;
	} else {
		/* not strict: keep readable first, moving these iovecs in
		 * front of the writable ones (as split does) */
		if (c->nin)
			uvh_iov_rotate_tail(cx->iov + c->nout, c->nin + (unsigned int)r, (unsigned int)r);
		c->nout = (uint16_t)(c->nout + r);
		c->out_len += len;
	}
	return UVH_VQ_OK;
}

/* Read an indirect table entry @i once, aligned or not. */
static inline void read_table_desc(const uint8_t *table, unsigned int i, bool aligned,
				   struct pdesc_val *v)
{
	const struct uvh_vring_packed_desc *d =
		(const struct uvh_vring_packed_desc *)(const void *)(table + 16u * i);
	struct uvh_vring_packed_desc tmp;

	if (aligned) {
		read_ring_desc(d, ld16(&d->flags, memory_order_relaxed), v);
		return;
	}
	memcpy(&tmp, d, sizeof(tmp));
	v->addr = tmp.addr;
	v->len = tmp.len;
	v->id = tmp.id;
	v->flags = tmp.flags;
}

/* Walk an indirect table given by ring descriptor @v. */
static enum uvh_vq_error chain_indirect(struct uvh_vq *vq, struct chain_ctx *cx,
					const struct pdesc_val *v)
{
	const uint8_t *table;
	unsigned int i, n;
	bool aligned;

	if (!vq->cfg.indirect)
		return UVH_VQ_ERR_INDIRECT_FEATURE;
	if (!v->len || v->len % sizeof(struct uvh_vring_packed_desc))
		return UVH_VQ_ERR_INDIRECT_SIZE;
	n = v->len / sizeof(struct uvh_vring_packed_desc);
	/* a chain is never longer than the queue (2.8.17), indirect included */
	if (n > vq->cfg.size)
		return UVH_VQ_ERR_INDIRECT_SIZE;
	/* the table must be one contiguous mapping: we index it directly */
	if (unlikely(vq->cfg.iotlb != NULL)) {
		struct iovec piece[4];
		int r = uvh_vq_iova_to_iov(vq, v->addr, v->len, UVH_IOTLB_RO, piece, 4), k;

		if (r == -ENOENT) {
			cx->iotlb_miss = true;
			return UVH_VQ_ERR_IOTLB;
		}
		if (r == -EACCES)
			return UVH_VQ_ERR_IOTLB;
		if (r <= 0)
			return UVH_VQ_ERR_DESC_ADDR;
		for (k = 1; k < r; k++)
			if ((uint8_t *)piece[k - 1].iov_base + piece[k - 1].iov_len !=
			    piece[k].iov_base)
				return UVH_VQ_ERR_DESC_ADDR;
		table = piece[0].iov_base;
	} else {
		table = uvh_memory_gpa_to_hva(vq->mem, v->addr, v->len, &vq->mem_hint);
	}
	if (!table)
		return UVH_VQ_ERR_DESC_ADDR;
	aligned = !((uintptr_t)table & 7);
	for (i = 0; i < n; i++) {
		struct pdesc_val e;
		enum uvh_vq_error err;

		read_table_desc(table, i, aligned, &e);
		if (e.flags & UVH_VRING_DESC_F_INDIRECT)
			return UVH_VQ_ERR_NESTED_INDIRECT;
		/* NEXT means nothing inside a table: entries are consecutive */
		err = chain_add(vq, cx, e.addr, e.len, e.flags & vq->write_flag);
		if (err)
			return err;
	}
	return UVH_VQ_OK;
}

/* Parse the chain of one ring descriptor @v (direct or indirect). */
static inline enum uvh_vq_error chain_desc(struct uvh_vq *vq, struct chain_ctx *cx,
					   const struct pdesc_val *v, bool first)
{
	if (v->flags & UVH_VRING_DESC_F_INDIRECT) {
		/* an indirect descriptor is a chain on its own (2.8.19) */
		if (!first || (v->flags & UVH_VRING_DESC_F_NEXT))
			return UVH_VQ_ERR_NESTED_INDIRECT;
		return chain_indirect(vq, cx, v);
	}
	return chain_add(vq, cx, v->addr, v->len, v->flags & vq->write_flag);
}

static inline void chain_reset(struct chain_ctx *cx, struct uvh_vq_chain *c, struct iovec *iov,
			       unsigned int room, bool burst_start)
{
	cx->c = c;
	cx->iov = iov;
	cx->iov_room = room;
	cx->total = 0;
	cx->pool_short = false;
	cx->iotlb_miss = false;
	cx->burst_start = burst_start;
	c->iov = iov;
	c->nout = 0;
	c->nin = 0;
	c->out_len = 0;
	c->in_len = 0;
}

/* Slots between the used position and the avail position: chains in flight. */
static inline unsigned int slots_in_flight(const struct uvh_vq *vq)
{
	unsigned int d = (unsigned int)vq->last_avail - vq->used_slot;

	if (vq->avail_wrap != vq->used_wrap)
		d += vq->cfg.size;
	return d & 0xffffu;
}

/* Record chain @c (slots from @slot/@wrap) in the inflight region. */
static void inflight_record(struct uvh_vq *vq, uint16_t slot, uint16_t ndesc, uint16_t id)
{
	struct uvh_inflight_vq *ifq = vq->inflight;
	uint16_t i;

	/* The chain is read a second time here: a guest changing it under us
	 * only changes what is resubmitted after a restart, which is parsed
	 * and checked again then. */
	for (i = 0; i < ndesc; i++) {
		const struct uvh_vring_packed_desc *d = &vq->pdesc[slot];
		struct uvh_vring_packed_desc copy;

		copy.addr = ld64(&d->addr);
		copy.len = ld32(&d->len);
		copy.id = ld16(&d->id, memory_order_relaxed);
		copy.flags = ld16(&d->flags, memory_order_relaxed);
		uvh_inflight_packed_get(ifq, &copy, i == 0, i + 1 == ndesc, id);
		if (++slot == vq->cfg.size)
			slot = 0;
	}
}

/* Hand out one chain saved in the inflight region (after a restart). */
static int pop_resubmit(struct uvh_vq *vq, struct chain_ctx *cx)
{
	struct uvh_inflight_vq *ifq = vq->inflight;
	/* a resubmitted chain is at most the queue size; keep the stack small
	 * by checking it one descriptor at a time */
	struct uvh_vring_packed_desc saved[128];
	uint16_t entry = ifq->resubmit[ifq->resubmit_next];
	enum uvh_vq_error err = UVH_VQ_OK;
	int n, i;

	n = uvh_inflight_packed_chain(ifq, entry, saved, 128);
	if (n <= 0) {
		/* too long for us or corrupt: drop it, the front-end kept no
		 * promise we can honour */
		UVH_WARN("virtq: inflight entry %u not resubmitted", entry);
		ifq->resubmit_next++;
		return 0;
	}
	for (i = 0; i < n && !err; i++) {
		struct pdesc_val v = {
			.addr = saved[i].addr, .len = saved[i].len,
			.id = saved[i].id, .flags = saved[i].flags,
		};

		if (i + 1 < n && !(v.flags & UVH_VRING_DESC_F_NEXT))
			v.flags |= UVH_VRING_DESC_F_NEXT;
		err = chain_desc(vq, cx, &v, i == 0);
	}
	if (err) {
		if (cx->pool_short || cx->iotlb_miss)
			return -ENOBUFS;
		return uvh_vq_fail(vq, err, "inflight chain");
	}
	if (saved[n - 1].id >= vq->cfg.size)
		return uvh_vq_fail(vq, UVH_VQ_ERR_BUFFER_ID, "inflight chain");
	cx->c->id = saved[n - 1].id;
	cx->c->ndesc = (uint16_t)n;
	/* a fresh ifq after a restart does not know the id yet: push
	 * retires the entry through this map */
	ifq->id_entry[cx->c->id] = entry;
	ifq->resubmit_next++;
	return 1;
}

/*
 * The fast path: take up to @lim chains while each is one direct, non-empty
 * buffer with a valid id, in the region of the last buffer (what a packet
 * driver posts), one iovec each. Stops, taking nothing of it, at the first
 * chain that is anything else (a problem included): the full walk deals
 * with it from its own read. The caller keeps @lim within the free room of
 * the ring (slots in flight) and of the iovecs.
 */
static __attribute__((noinline)) unsigned int pop_simple(struct uvh_vq *vq,
							 struct uvh_vq_chain *c,
							 struct iovec *iov, unsigned int lim)
{
	const struct uvh_memory *mem = vq->mem;
	struct uvh_vring_packed_desc *ring = vq->pdesc;
	const uint16_t size = vq->cfg.size;
	uint16_t slot = vq->last_avail;
	bool wrap = vq->avail_wrap;
	unsigned int n = 0;
	uint64_t rgpa, rsize;
	uint8_t *rhva;

	/* the region of the last buffer, in registers: most buffers are in it */
	if (unlikely(vq->mem_hint >= mem->nregions))
		return 0;	/* the full walk sets the hint */
	rgpa = mem->regions[vq->mem_hint].gpa;
	rsize = mem->regions[vq->mem_hint].size;
	rhva = mem->regions[vq->mem_hint].hva;
	for (; n < lim; n++) {
		struct pdesc_val v;
		uint16_t flags;
		uint64_t off;
		bool w;

		/* acquire: pairs with the driver's release store of the first
		 * flags of its burst (written after the rest of the burst) */
		flags = ld16(&ring[slot].flags, memory_order_acquire);
		if (!desc_is_avail(flags, wrap) ||
		    (flags & (UVH_VRING_DESC_F_NEXT | UVH_VRING_DESC_F_INDIRECT)))
			break;
		read_ring_desc(&ring[slot], flags, &v);
		if (unlikely(!v.len || v.id >= size))
			break;
		/* inside that region, as uvh_memory_gpa_to_hva() checks it */
		off = v.addr - rgpa;
		if (unlikely(off >= rsize || v.len > rsize - off))
			break;	/* another region (the full walk finds it) or none */
		w = flags & vq->write_flag;
		iov[n].iov_base = rhva + off;
		iov[n].iov_len = v.len;
		c[n] = (struct uvh_vq_chain){
			.iov = &iov[n], .nout = !w, .nin = w,
			.out_len = w ? 0 : v.len, .in_len = w ? v.len : 0,
			.id = v.id, .ndesc = 1,
		};
		if (++slot == size) {
			slot = 0;
			wrap = !wrap;
		}
	}
	vq->last_avail = slot;
	vq->avail_wrap = wrap;
	return n;
}

int uvh_vq_packed_pop(struct uvh_vq *vq, struct uvh_vq_chain *chains, unsigned int max,
		      struct iovec *iov, unsigned int iov_max)
{
	const uint16_t size = vq->cfg.size;
	struct uvh_vring_packed_desc *ring = vq->pdesc;
	unsigned int n = 0, iov_used = 0, busy;
	struct chain_ctx cx;
	/* once per burst: IOVAs never take the GPA fast path */
	const bool simple = !vq->inflight && !vq->log && !vq->cfg.iotlb;

	if (uvh_vq_broken(vq))
		return 0;

	while (vq->inflight && n < max &&
	       uvh_inflight_resubmit_pending(vq->inflight)) {
		int r;

		chain_reset(&cx, &chains[n], iov + iov_used, iov_max - iov_used, n == 0);
		r = pop_resubmit(vq, &cx);
		if (r < 0)
			return (int)n;
		if (r) {
			iov_used += (unsigned int)chains[n].nout + chains[n].nin;
			n++;
		}
	}

	busy = slots_in_flight(vq);
	while (n < max) {
		uint16_t slot, first_slot, flags;
		bool wrap;
		enum uvh_vq_error err = UVH_VQ_OK;
		struct pdesc_val v;
		unsigned int ndesc = 0;

		if (likely(simple)) {
			unsigned int k, lim = max - n, room = busy < size ? size - busy : 0;

			if (lim > iov_max - iov_used)
				lim = iov_max - iov_used;
			if (lim > room)
				lim = room;
			k = pop_simple(vq, chains + n, iov + iov_used, lim);
			n += k;
			iov_used += k;
			busy += k;
			if (n == max)
				break;
		}
		/* anything else, every error included, one chain at a time */
		slot = vq->last_avail;
		first_slot = slot;
		wrap = vq->avail_wrap;

		/* acquire: pairs with the driver's release store of the first
		 * descriptor's flags, made after the chain's addr/len/id */
		flags = ld16(&ring[slot].flags, memory_order_acquire);
		if (!desc_is_avail(flags, wrap))
			break;
		read_ring_desc(&ring[slot], flags, &v);
		chain_reset(&cx, &chains[n], iov + iov_used, iov_max - iov_used, n == 0);
		for (;;) {
			ndesc++;
			err = chain_desc(vq, &cx, &v, ndesc == 1);
			if (err)
				break;
			if (++slot == size) {
				slot = 0;
				wrap = !wrap;
			}
			if (!(v.flags & UVH_VRING_DESC_F_NEXT))
				break;
			if (ndesc >= size) {
				err = UVH_VQ_ERR_CHAIN_LOOP;
				break;
			}
			/* the rest of the chain was written before the first
			 * flags: the acquire above covers it */
			flags = ld16(&ring[slot].flags, memory_order_relaxed);
			read_ring_desc(&ring[slot], flags, &v);
		}
		if (!err && busy + ndesc > size)
			err = UVH_VQ_ERR_AVAIL_IDX;	/* more slots than the ring has */
		if (!err && v.id >= size)
			err = UVH_VQ_ERR_BUFFER_ID;
		if (err) {
			if (cx.pool_short || cx.iotlb_miss)
				break;	/* this chain goes into the next burst */
			uvh_vq_fail(vq, err, "packed chain");
			break;
		}
		cx.c->id = v.id;
		cx.c->ndesc = (uint16_t)ndesc;
		vq->miss_reported = false;	/* progress: a new miss is news */
		if (vq->inflight)
			inflight_record(vq, first_slot, (uint16_t)ndesc, v.id);
		vq->last_avail = slot;
		vq->avail_wrap = wrap;
		busy += ndesc;
		iov_used += (unsigned int)cx.c->nout + cx.c->nin;
		n++;
	}
	vq->popped += n;
	return (int)n;
}

/* ---- push ---------------------------------------------------------------------- */

/*
 * Dirty-log the writable buffers of a chain completed in order: its
 * descriptors are still in the ring at @slot (we have not written over
 * them, the driver may not touch them yet). A chain found not to match
 * (completed out of order) was marked at pop already.
 */
static void log_chain(struct uvh_vq *vq, uint16_t slot, const struct uvh_vq_used *u)
{
	const uint16_t size = vq->cfg.size;
	uint16_t i, s = slot, last = slot;

	for (i = 1; i < u->ndesc; i++)
		last = (uint16_t)(last + 1 == size ? 0 : last + 1);
	if (ld16(&vq->pdesc[last].id, memory_order_relaxed) != u->id)
		return;
	for (i = 0; i < u->ndesc; i++) {
		struct pdesc_val v;

		read_ring_desc(&vq->pdesc[s], ld16(&vq->pdesc[s].flags, memory_order_relaxed), &v);
		if (v.flags & UVH_VRING_DESC_F_INDIRECT) {
			const uint8_t *table;
			unsigned int j, n = v.len / 16;

			if (n > size)
				return;
			table = uvh_memory_gpa_to_hva(vq->mem, v.addr, v.len, &vq->mem_hint);
			if (!table)
				return;
			for (j = 0; j < n; j++) {
				struct pdesc_val e;

				read_table_desc(table, j, !((uintptr_t)table & 7), &e);
				if (e.flags & vq->write_flag)
					uvh_dirty_log_mark(vq->log, e.addr, e.len);
			}
		} else if (v.flags & vq->write_flag) {
			uvh_dirty_log_mark(vq->log, v.addr, v.len);
		}
		s = (uint16_t)(s + 1 == size ? 0 : s + 1);
	}
}

void uvh_vq_packed_push(struct uvh_vq *vq, const struct uvh_vq_used *used, unsigned int n)
{
	const uint16_t size = vq->cfg.size;
	struct uvh_vring_packed_desc *ring = vq->pdesc;
	uint16_t slot = vq->used_slot, first_slot = slot, first_flags = 0;
	bool wrap = vq->used_wrap;
	unsigned int i;

	if (!n || uvh_vq_broken(vq))
		return;
	/* IOVA chains were logged when translated at pop */
	if (vq->log && !vq->cfg.iotlb) {
		for (i = 0; i < n; i++) {
			if (!used[i].ndesc || used[i].ndesc > size)
				break;
			log_chain(vq, slot, &used[i]);
			slot = (uint16_t)(slot + used[i].ndesc);
			if (slot >= size)
				slot = (uint16_t)(slot - size);
		}
		slot = first_slot;
	}

	for (i = 0; i < n; i++) {
		struct uvh_vring_packed_desc *d = &ring[slot];
		uint16_t flags = PACKED_USED_FLAGS(wrap);
		unsigned int nd = used[i].ndesc;

		/* a zero count would write the same slot twice; ours come
		 * from pop, so this only guards against a caller's bug */
		if (!nd || nd > size)
			nd = 1;
		if (i == 0) {
			st32(&d->len, used[i].len);
			st16(&d->id, used[i].id, memory_order_relaxed);
			first_flags = flags;
		} else {
			/* len, id and flags in one store; the driver reads
			 * none of it before the first flags are released */
			atomic_store_explicit((_Atomic uint64_t *)(void *)&d->len,
					      (uint64_t)used[i].len | (uint64_t)used[i].id << 32 |
					      (uint64_t)flags << 48, memory_order_relaxed);
		}
		slot = (uint16_t)(slot + nd);
		if (slot >= size) {
			slot = (uint16_t)(slot - size);
			wrap = !wrap;
		}
	}
	if (vq->inflight)
		uvh_inflight_packed_pre_put(vq->inflight, used, n, slot, wrap);
	/* release: every used descriptor of the burst (id, len, the other
	 * flags) before the first one's flags; pairs with the acquire load
	 * of the flags in the driver's get_used, which reads on in order */
	st16(&ring[first_slot].flags, first_flags, memory_order_release);
	if (vq->inflight)
		uvh_inflight_packed_post_put(vq->inflight, used, n);

	if (vq->log) {
		uint16_t s = first_slot;
		/* the "used ring" of a packed ring is its descriptor ring: log
		 * where it really is when we know its guest-physical address
		 * (QEMU's log_guest_addr is the device event area for packed) */
		uint64_t base = !vq->cfg.iotlb ? vq->cfg.desc_gpa : vq->cfg.log_used_gpa;

		/* with an IOTLB and no F_LOG: nowhere known to log */
		for (i = 0; i < n && (!vq->cfg.iotlb || vq->cfg.log_used); i++) {
			unsigned int nd = used[i].ndesc ? used[i].ndesc : 1;

			uvh_dirty_log_mark(vq->log, base + 16u * s, 16);
			s = (uint16_t)(s + (nd > size ? 1 : nd));
			if (s >= size)
				s = (uint16_t)(s - size);
		}
	}
	vq->used_slot = slot;
	vq->used_wrap = wrap;
	vq->pushed += n;
}

/* ---- notifications --------------------------------------------------------------- */

bool uvh_vq_packed_need_call(struct uvh_vq *vq)
{
	uint16_t new_pos = (uint16_t)(vq->used_slot | ((unsigned int)vq->used_wrap << PACKED_WRAP_BIT));
	uint16_t old_pos = vq->signalled_used;
	bool old_valid = vq->signalled_used_valid;
	uint16_t old, ev, ev_flags, off_wrap;
	uint32_t e;

	vq->signalled_used = new_pos;
	vq->signalled_used_valid = true;

	/* full fence: our used descriptors before reading the driver's event
	 * suppression; pairs with the fence in the driver's enable_cb between
	 * writing its event and re-checking the ring, so one of us sees the
	 * other and no interrupt is lost */
	atomic_thread_fence(memory_order_seq_cst);
	e = ld_event(vq->driver_event, memory_order_relaxed);
	off_wrap = (uint16_t)e;
	ev_flags = (uint16_t)(e >> 16) & PACKED_EVENT_FLAGS_MASK;

	/* nothing marked used since the last call: nothing to tell */
	if ((old_valid && old_pos == new_pos) || ev_flags == UVH_VRING_PACKED_EVENT_DISABLE)
		return false;
	if (ev_flags != UVH_VRING_PACKED_EVENT_DESC || !vq->cfg.event_idx || !old_valid)
		return true;

	/* Everything relative to the current lap of the used ring: positions
	 * from the previous lap are moved back by one ring size (u16 math). */
	old = old_pos & PACKED_IDX_MASK;
	if (!!(old_pos >> PACKED_WRAP_BIT) != vq->used_wrap)
		old = (uint16_t)(old - vq->cfg.size);
	ev = off_wrap & PACKED_IDX_MASK;
	if (!!(off_wrap >> PACKED_WRAP_BIT) != vq->used_wrap)
		ev = (uint16_t)(ev - vq->cfg.size);
	/* the event slot lies in [old, new): it was marked used since the last call */
	return (uint16_t)(vq->used_slot - ev - 1) < (uint16_t)(vq->used_slot - old);
}

bool uvh_vq_packed_avail_pending(struct uvh_vq *vq)
{
	uint16_t flags;

	if (uvh_vq_broken(vq))
		return false;
	/* acquire: pairs with the driver's release of the first flags */
	flags = ld16(&vq->pdesc[vq->last_avail].flags, memory_order_acquire);
	return desc_is_avail(flags, vq->avail_wrap);
}

/* The device event area is guest memory we write: log it (after the store). */
static inline void log_device_event(struct uvh_vq *vq)
{
	if (vq->log && !vq->cfg.iotlb)
		uvh_dirty_log_mark(vq->log, vq->cfg.device_gpa,
				   sizeof(struct uvh_vring_packed_event));
}

bool uvh_vq_packed_notify(struct uvh_vq *vq, bool enable)
{
	if (uvh_vq_broken(vq))
		return false;
	if (!enable) {
		st_event(vq->device_event, 0, UVH_VRING_PACKED_EVENT_DISABLE,
			 memory_order_relaxed);
		log_device_event(vq);
		return false;
	}
	if (vq->cfg.event_idx) {
		/* kick me when the slot I read next is made available */
		uint16_t off = (uint16_t)(vq->last_avail |
					  ((unsigned int)vq->avail_wrap << PACKED_WRAP_BIT));

		st_event(vq->device_event, off, UVH_VRING_PACKED_EVENT_DESC,
			 memory_order_relaxed);
	} else {
		st_event(vq->device_event, 0, UVH_VRING_PACKED_EVENT_ENABLE,
			 memory_order_relaxed);
	}
	log_device_event(vq);
	/* full fence: the event store before re-reading the ring; pairs with
	 * the fence in the driver's need_kick between publishing and reading
	 * our event, so a chain published meanwhile is either seen here or
	 * kicked */
	atomic_thread_fence(memory_order_seq_cst);
	return uvh_vq_packed_avail_pending(vq);
}

bool uvh_vq_packed_notify_after(struct uvh_vq *vq, unsigned int n)
{
	/* the descriptor n - 1 slots ahead, in its lap */
	unsigned int slot = vq->last_avail + n - 1;
	bool wrap = vq->avail_wrap;
	uint16_t flags;

	if (uvh_vq_broken(vq))
		return false;
	if (slot >= vq->cfg.size) {
		slot -= vq->cfg.size;
		wrap = !wrap;
	}
	st_event(vq->device_event, (uint16_t)(slot | ((unsigned int)wrap << PACKED_WRAP_BIT)),
		 UVH_VRING_PACKED_EVENT_DESC, memory_order_relaxed);
	log_device_event(vq);
	/* the same pair as uvh_vq_packed_notify's fence */
	atomic_thread_fence(memory_order_seq_cst);
	flags = ld16(&vq->pdesc[slot].flags, memory_order_acquire);
	return desc_is_avail(flags, wrap);
}

int uvh_vq_packed_unpop(struct uvh_vq *vq, unsigned int slots)
{
	/* the driver's descriptors there still say available: stepping back
	 * over them (and over the wrap) makes the next pop read them again */
	if (slots > slots_in_flight(vq))
		return -EINVAL;
	if (vq->last_avail >= slots) {
		vq->last_avail = (uint16_t)(vq->last_avail - slots);
	} else {
		vq->last_avail = (uint16_t)(vq->last_avail + vq->cfg.size - slots);
		vq->avail_wrap = !vq->avail_wrap;
	}
	return 0;
}

uint32_t uvh_vq_packed_base(const struct uvh_vq *vq)
{
	return (uint32_t)(vq->last_avail & PACKED_IDX_MASK) |
	       ((uint32_t)vq->avail_wrap << 15) |
	       ((uint32_t)(vq->used_slot & PACKED_IDX_MASK) << 16) |
	       ((uint32_t)vq->used_wrap << 31);
}
