/* SPDX-License-Identifier: MIT */
/*
 * Guest memory and the driver side of split and packed rings (virtio 1.x, 2.7 and 2.8).
 * Every index or flags word the device reads or writes is one atomic access: release for
 * what we publish, acquire for what the device publishes, and a seq_cst fence before each
 * notification-suppression check (the device has the mirror-image fence).
 */
#include "conform.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define A16(p) ((_Atomic uint16_t *)(void *)(p))
#define A32(p) ((_Atomic uint32_t *)(void *)(p))
#define PF_AVAIL (1u << VRING_PACKED_DESC_F_AVAIL)
#define PF_USED (1u << VRING_PACKED_DESC_F_USED)

void gmem_init(struct gmem *m, uint64_t *rng, unsigned nregions, uint64_t total)
{
	const uint64_t mb2 = 2ull << 20;

	m->fd = memfd_create("conform-guest", MFD_CLOEXEC);
	if (m->fd < 0 || ftruncate(m->fd, (off_t)total) < 0)
		fail("memfd: %m");
	m->nregions = nregions;
	/* GPAs unrelated to the mapping addresses, and a hole between the two regions,
	 * so that a back-end mixing up GPA and UVA, or region bases, reads garbage. */
	uint64_t gpa = 0, pick = rng_below(rng, 3), far = rng_below(rng, 1u << 19) * mb2;
	if (pick)
		gpa = pick == 1 ? 1ull << 32 : far;
	uint64_t off = 0;
	for (unsigned i = 0; i < nregions; i++) {
		uint64_t size = i + 1 < nregions ? total / 2 : total - off;
		m->r[i].va = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, m->fd, (off_t)off);
		if (m->r[i].va == MAP_FAILED)
			fail("mmap guest memory: %m");
		m->r[i].gpa = gpa;
		m->r[i].size = size;
		m->r[i].offset = off;
		m->r[i].used = 0;
		gpa += size + rng_below(rng, 512) * mb2;
		off += size;
	}
}

void gmem_free(struct gmem *m)
{
	for (unsigned i = 0; i < m->nregions; i++)
		munmap(m->r[i].va, m->r[i].size);
	if (m->fd >= 0)
		close(m->fd);
	m->fd = -1;
	m->nregions = 0;
}

/* Rings and buffers land in either region at random. */
void *gmem_alloc(struct gmem *m, uint64_t *rng, size_t size, size_t align, uint64_t *gpa)
{
	unsigned first = rng_below(rng, m->nregions);
	for (unsigned t = 0; t < m->nregions; t++) {
		unsigned i = (first + t) % m->nregions;
		uint64_t at = (m->r[i].used + align - 1) & ~(uint64_t)(align - 1);
		if (at + size <= m->r[i].size) {
			m->r[i].used = at + size;
			*gpa = m->r[i].gpa + at;
			return m->r[i].va + at;
		}
	}
	fail("internal: guest memory too small for %zu bytes", size);
}

void vq_init(struct vq *q, struct gmem *m, uint64_t *rng, unsigned index, uint16_t num,
	     bool packed, bool event_idx, uint32_t buf_len)
{
	uint64_t gpa;

	memset(q, 0, sizeof(*q));
	q->index = index;
	q->tx = index & 1;
	q->num = num;
	q->packed = packed;
	q->event_idx = event_idx;
	q->avail_wrap = q->used_wrap = true;
	q->buf_len = buf_len;
	q->kickfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	q->callfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (q->kickfd < 0 || q->callfd < 0)
		fail("eventfd: %m");
	/* Ring parts at their spec alignment (16/2/4, packed 16/4/4), or a page. */
	size_t al = rng_pct(rng, 50) ? 4096 : 16;
	if (packed) {
		q->pdesc = gmem_alloc(m, rng, 16u * num, al, &gpa);
		q->drv_ev = gmem_alloc(m, rng, 4, 4, &gpa);
		q->dev_ev = gmem_alloc(m, rng, 4, 4, &gpa);
	} else {
		q->desc = gmem_alloc(m, rng, 16u * num, al, &gpa);
		q->avail = gmem_alloc(m, rng, 6 + 2u * num, 2, &gpa);
		q->used = gmem_alloc(m, rng, 6 + 8u * num, 4, &gpa);
	}
	/* SET_VRING_ADDR takes front-end virtual addresses: our own mapping. */
	q->ring_uva[0] = (uintptr_t)(packed ? (void *)q->pdesc : (void *)q->desc);
	q->ring_uva[1] = (uintptr_t)(packed ? (void *)q->dev_ev : (void *)q->used);
	q->ring_uva[2] = (uintptr_t)(packed ? (void *)q->drv_ev : (void *)q->avail);
	q->slots = gmem_alloc(m, rng, (size_t)buf_len * num, 64, &q->slots_gpa);
	q->ind = gmem_alloc(m, rng, 32u * num, 16, &q->ind_gpa);
	q->freelist = calloc(num, sizeof(*q->freelist));
	q->ndesc = calloc(num, sizeof(*q->ndesc));
	q->tag = calloc(num, sizeof(*q->tag));
	if (!q->freelist || !q->ndesc || !q->tag)
		fail("out of memory");
	for (unsigned i = 0; i < num; i++)
		q->freelist[i] = (uint16_t)(num - 1 - i);
	q->nfree = num;
	q->nfreeids = num;
}

void vq_free(struct vq *q)
{
	if (q->kickfd >= 0)
		close(q->kickfd);
	if (q->callfd >= 0)
		close(q->callfd);
	free(q->freelist);
	free(q->ndesc);
	free(q->tag);
	memset(q, 0, sizeof(*q));
}

/* The id the next vq_add will use, or -1 when `need` descriptors do not fit. */
int vq_next_id(const struct vq *q, unsigned need)
{
	if (q->nfree < need || (q->packed && !q->nfreeids))
		return -1;
	return q->freelist[(q->packed ? q->nfreeids : q->nfree) - 1];
}

static uint16_t lin(const struct vq *q, uint16_t pos, bool wrap)
{
	return (uint16_t)(pos + (wrap ? 0 : q->num));
}

/* Is linear index e among [old, new)? (vring_need_event, modulo 2^16 or 2*num) */
static bool in_range(uint32_t e, uint32_t old, uint32_t new, uint32_t mod)
{
	return (e + mod - old) % mod < (new + mod - old) % mod;
}

int vq_add(struct vq *q, const struct seg *s, unsigned n, bool write, bool indirect, int32_t tag)
{
	unsigned need = indirect ? 1 : n;
	uint16_t wflag = write ? VRING_DESC_F_WRITE : 0;

	if (vq_next_id(q, need) < 0)
		return -1;
	if (q->packed) {
		uint16_t id = q->freelist[--q->nfreeids], first = q->next_avail, first_flags = 0;
		struct vring_packed_desc *t = (void *)(q->ind + 32u * id);
		for (unsigned i = 0; i < need; i++) {
			struct vring_packed_desc *d = &q->pdesc[q->next_avail];
			uint16_t f = (uint16_t)((q->avail_wrap ? PF_AVAIL : PF_USED) |
						(i + 1 < need ? VRING_DESC_F_NEXT : 0));
			if (indirect) {
				/* In a packed indirect table WRITE is the only flag. */
				for (unsigned j = 0; j < n; j++)
					t[j] = (struct vring_packed_desc){s[j].gpa, s[j].len, 0, wflag};
				d->addr = q->ind_gpa + 32u * id;
				d->len = 16 * n;
				f |= VRING_DESC_F_INDIRECT;
			} else {
				d->addr = s[i].gpa;
				d->len = s[i].len;
				f |= wflag;
			}
			d->id = id; /* the spec needs it in the last; every one is harmless */
			if (i == 0)
				first_flags = f;
			else
				atomic_store_explicit(A16(&d->flags), f, memory_order_relaxed);
			if (++q->next_avail == q->num) {
				q->next_avail = 0;
				q->avail_wrap = !q->avail_wrap;
			}
		}
		q->nfree = (uint16_t)(q->nfree - need);
		q->ndesc[id] = (uint16_t)need;
		q->tag[id] = tag;
		q->inflight++;
		/* Release pairs with the device's acquire of this flags word: it exposes the
		 * whole chain and the buffers it points to. */
		atomic_store_explicit(A16(&q->pdesc[first].flags), first_flags, memory_order_release);
		return id;
	}
	uint16_t idx[2] = {0, 0};
	for (unsigned i = 0; i < need; i++)
		idx[i] = q->freelist[--q->nfree];
	if (indirect) {
		struct vring_desc *t = (void *)(q->ind + 32u * idx[0]);
		for (unsigned j = 0; j < n; j++)
			t[j] = (struct vring_desc){s[j].gpa, s[j].len,
				(uint16_t)(wflag | (j + 1 < n ? VRING_DESC_F_NEXT : 0)), (uint16_t)(j + 1)};
		q->desc[idx[0]] = (struct vring_desc){q->ind_gpa + 32u * idx[0], 16 * n,
						      VRING_DESC_F_INDIRECT, 0};
	} else {
		for (unsigned i = 0; i < n; i++)
			q->desc[idx[i]] = (struct vring_desc){s[i].gpa, s[i].len,
				(uint16_t)(wflag | (i + 1 < n ? VRING_DESC_F_NEXT : 0)),
				i + 1 < n ? idx[i + 1] : 0};
	}
	q->ndesc[idx[0]] = (uint16_t)need;
	q->tag[idx[0]] = tag;
	q->inflight++;
	/* The avail ring slot is not the device's until avail->idx moves (vq_publish). */
	atomic_store_explicit(A16(&q->avail->ring[q->next_avail % q->num]), idx[0],
			      memory_order_relaxed);
	q->next_avail++;
	return idx[0];
}

void vq_publish(struct vq *q)
{
	/* Release pairs with the device's acquire of avail->idx (packed chains were
	 * published one by one in vq_add). */
	if (!q->packed)
		atomic_store_explicit(A16(&q->avail->idx), q->next_avail, memory_order_release);
}

/* Kick if the device asks for it (or always): used->flags NO_NOTIFY, avail_event, or the
 * packed device event suppression, checked against what was made available since the
 * previous check. */
void vq_notify(struct vq *q, bool always)
{
	/* seq_cst fence pairs with the device's fence between writing its suppression field
	 * and re-reading the ring: either it sees our buffers or we see its request. */
	atomic_thread_fence(memory_order_seq_cst);
	uint16_t new = q->packed ? lin(q, q->next_avail, q->avail_wrap) : q->next_avail;
	uint16_t old = q->kick_old;
	bool need;

	q->kick_old = new;
	if (new == old && !always)
		return;
	if (always) {
		need = true;
	} else if (!q->packed) {
		if (q->event_idx)
			need = in_range(atomic_load_explicit(A16(&q->used->ring[q->num]),
							     memory_order_relaxed), old, new, 65536);
		else
			need = !(atomic_load_explicit(A16(&q->used->flags), memory_order_relaxed) &
				 VRING_USED_F_NO_NOTIFY);
	} else {
		uint32_t ev = atomic_load_explicit(A32(q->dev_ev), memory_order_relaxed);
		uint16_t off = (uint16_t)ev, flags = (uint16_t)(ev >> 16);
		switch (flags & 3) {
		case VRING_PACKED_EVENT_FLAG_ENABLE: need = true; break;
		case VRING_PACKED_EVENT_FLAG_DISABLE: need = false; break;
		case VRING_PACKED_EVENT_FLAG_DESC:
			if (!q->event_idx)
				fail("ring %u: device event flags DESC without EVENT_IDX", q->index);
			need = in_range(lin(q, off & 0x7fff, off >> 15), old, new, 2u * q->num);
			break;
		default:
			fail("ring %u: device event flags %#x is reserved", q->index, flags);
		}
	}
	if (need && write(q->kickfd, &(uint64_t){1}, 8) != 8)
		fail("kick ring %u: %m", q->index);
}

/* Packed: used when AVAIL and USED both equal our used wrap counter. (A stale descriptor
 * of the previous lap, never overwritten because it was not the head of its chain, has
 * AVAIL != USED.) */
static bool packed_used(const struct vq *q, uint16_t f)
{
	return !!(f & PF_USED) == q->used_wrap && !!(f & PF_AVAIL) == q->used_wrap;
}

bool vq_pending(struct vq *q)
{
	if (q->packed)
		return packed_used(q, atomic_load_explicit(A16(&q->pdesc[q->next_used].flags),
							   memory_order_acquire));
	return atomic_load_explicit(A16(&q->used->idx), memory_order_acquire) != q->next_used;
}

static void release_id(struct vq *q, uint16_t id, uint32_t len)
{
	if (id >= q->num || !q->ndesc[id])
		fail("ring %u: used id %u (len %u) is not in flight", q->index, id, len);
	if (q->packed) {
		q->nfree = (uint16_t)(q->nfree + q->ndesc[id]);
		q->freelist[q->nfreeids++] = id;
	} else {
		uint16_t d = id;
		for (unsigned i = 0; i < q->ndesc[id]; i++, d = q->desc[d].next)
			q->freelist[q->nfree++] = d;
	}
	q->ndesc[id] = 0;
	q->inflight--;
}

/* The next used buffer, if the device has published one. */
bool vq_get(struct vq *q, uint16_t *id, uint32_t *len, int32_t *tag)
{
	if (q->packed) {
		struct vring_packed_desc *d = &q->pdesc[q->next_used];
		/* Acquire pairs with the device's release of the used flags: id and len
		 * are valid once we see them. */
		uint16_t f = atomic_load_explicit(A16(&d->flags), memory_order_acquire);
		if (!packed_used(q, f))
			return false;
		*id = d->id;
		*len = d->len;
		uint16_t n = *id < q->num ? q->ndesc[*id] : 0;
		release_id(q, *id, *len);
		q->next_used = (uint16_t)(q->next_used + n);
		if (q->next_used >= q->num) {
			q->next_used = (uint16_t)(q->next_used - q->num);
			q->used_wrap = !q->used_wrap;
		}
	} else {
		/* Acquire pairs with the device's release of used->idx. */
		uint16_t uidx = atomic_load_explicit(A16(&q->used->idx), memory_order_acquire);
		if (uidx == q->next_used)
			return false;
		if ((uint16_t)(uidx - q->next_used) > q->inflight)
			fail("ring %u: used->idx %u is %u ahead of %u with only %u in flight",
			     q->index, uidx, (uint16_t)(uidx - q->next_used), q->next_used,
			     q->inflight);
		struct vring_used_elem *e = &q->used->ring[q->next_used % q->num];
		if (e->id > 0xffff)
			fail("ring %u: used id %u out of range", q->index, e->id);
		*id = (uint16_t)e->id;
		*len = e->len;
		release_id(q, *id, *len);
		q->next_used++;
	}
	*tag = q->tag[*id];
	return true;
}

/* Ask for a used-buffer notification for the next used buffer; true if one is already
 * there (then no notification is owed). */
bool vq_arm(struct vq *q)
{
	if (q->packed) {
		uint32_t off = q->next_used | (uint32_t)q->used_wrap << 15;
		/* Offset and flags in one store: the device never sees DESC with a stale offset. */
		atomic_store_explicit(A32(q->drv_ev), q->event_idx ?
				      off | (uint32_t)VRING_PACKED_EVENT_FLAG_DESC << 16 :
				      (uint32_t)VRING_PACKED_EVENT_FLAG_ENABLE << 16,
				      memory_order_relaxed);
	} else if (q->event_idx) {
		atomic_store_explicit(A16(&q->avail->ring[q->num]), q->next_used,
				      memory_order_relaxed);
	} else {
		atomic_store_explicit(A16(&q->avail->flags), 0, memory_order_relaxed);
	}
	q->armed = true;
	/* seq_cst fence pairs with the device's fence between publishing used entries and
	 * reading our suppression field: either we see its entry now or it notifies. */
	atomic_thread_fence(memory_order_seq_cst);
	return vq_pending(q);
}

void vq_disarm(struct vq *q)
{
	if (q->packed)
		atomic_store_explicit(A32(q->drv_ev), (uint32_t)VRING_PACKED_EVENT_FLAG_DISABLE << 16,
				      memory_order_relaxed);
	else if (q->event_idx) /* the one index the device just passed: 64K entries away */
		atomic_store_explicit(A16(&q->avail->ring[q->num]), (uint16_t)(q->next_used - 1),
				      memory_order_relaxed);
	else
		atomic_store_explicit(A16(&q->avail->flags), VRING_AVAIL_F_NO_INTERRUPT,
				      memory_order_relaxed);
	q->armed = false;
}

uint32_t vq_base(const struct vq *q)
{
	if (!q->packed)
		return q->next_used;
	uint32_t half = q->next_used | (uint32_t)q->used_wrap << 15;
	return half | half << 16;
}

int vq_dump(const struct vq *q, char *buf, size_t size)
{
	if (q->packed) {
		uint32_t dev = atomic_load_explicit(A32(q->dev_ev), memory_order_relaxed);
		uint32_t drv = atomic_load_explicit(A32(q->drv_ev), memory_order_relaxed);
		return snprintf(buf, size, "ring %u (%s%u) packed: next_avail=%u/w%d next_used=%u/w%d "
				"inflight=%u desc[next_used].flags=%#x device_event=%#x/off%#x "
				"driver_event=%#x/off%#x%s\n", q->index, q->tx ? "TX" : "RX",
				q->index / 2, q->next_avail, q->avail_wrap, q->next_used, q->used_wrap,
				q->inflight, q->pdesc[q->next_used].flags, dev >> 16, dev & 0xffff,
				drv >> 16, drv & 0xffff, q->armed ? " armed" : "");
	}
	return snprintf(buf, size, "ring %u (%s%u) split: avail.idx=%u used.idx=%u last_used=%u "
			"inflight=%u avail.flags=%#x used.flags=%#x used_event=%u avail_event=%u%s\n",
			q->index, q->tx ? "TX" : "RX", q->index / 2, q->avail->idx, q->used->idx,
			q->next_used, q->inflight, q->avail->flags, q->used->flags,
			q->avail->ring[q->num],
			atomic_load_explicit(A16(&q->used->ring[q->num]), memory_order_relaxed),
			q->armed ? " armed" : "");
}
