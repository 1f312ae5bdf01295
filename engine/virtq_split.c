/* SPDX-License-Identifier: MIT */
/*
 * uvhost: split virtqueue, device side.
 *
 * The guest owns the descriptor table and the avail ring and may change
 * them under us at any time. So every guest value is loaded once into a
 * local (relaxed atomic loads, virtq_internal.h), checked, and only the
 * local is used:
 * a value the guest changes after the check is never seen.
 *
 * Memory ordering (the other side is the driver, usually another CPU):
 *  - pop: acquire load of avail->idx  <->  driver's release store of
 *    avail->idx after it wrote the ring entries and descriptors.
 *  - push: release store of used->idx  <->  driver's acquire load of
 *    used->idx before it reads the used elements and the buffers.
 *  - need_call: full fence between the used->idx store and the load of
 *    used_event / avail->flags  <->  driver's full fence between writing
 *    used_event (enable_cb) and re-reading used->idx.
 *  - notify enable: full fence between the avail_event / used->flags store
 *    and the re-load of avail->idx  <->  driver's full fence between the
 *    avail->idx store and the load of avail_event / used->flags.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "util.h"
#include "inflight.h"
#include "virtq_internal.h"

/* Parse results besides an iovec count. */
#define PARSE_FAIL	(-1)	/* ring broken, vq->error set */
#define PARSE_NOSPC	(-2)	/* does not fit the iovecs left in this burst */
#define PARSE_MISS	(-3)	/* an IOVA is not in the IOTLB yet: retry later */

static inline uint16_t ring_load16(const uint16_t *p)
{
	return uvh_shm_load16(p);
}

static inline void ring_store16(uint16_t *p, uint16_t v)
{
	uvh_shm_store16(p, v);
}

static inline uint16_t avail_idx_acquire(const struct uvh_vring_avail *avail)
{
	/* pairs with the driver's release store of avail->idx */
	return atomic_load_explicit((_Atomic uint16_t *)&avail->idx, memory_order_acquire);
}

static inline uint16_t *used_event_ptr(struct uvh_vq *vq)
{
	return &vq->avail->ring[vq->cfg.size];
}

static inline uint16_t *avail_event_ptr(struct uvh_vq *vq)
{
	return (uint16_t *)&vq->used->ring[vq->cfg.size];
}

/* Mark the ring broken from inside a chain walk. */
static int broken(struct uvh_vq *vq, enum uvh_vq_error err, const char *detail)
{
	uvh_vq_fail(vq, err, detail);
	return PARSE_FAIL;
}

/* One descriptor (8-byte aligned), loaded once: two 8-byte loads, the
 * second holding len, flags and next (little-endian hosts, virtq.h). */
static inline void desc_load(const struct uvh_vring_desc *src, struct uvh_vring_desc *d)
{
	uint64_t rest = uvh_shm_load64(&src->len);

	d->addr = uvh_shm_load64(&src->addr);
	d->len = (uint32_t)rest;
	d->flags = (uint16_t)(rest >> 32);
	d->next = (uint16_t)(rest >> 48);
}

/* Descriptor @i of a table that is mapped but not as one piece (it
 * spans regions) or not aligned: gather its 16 bytes. */
static int desc_load_slow(struct uvh_vq *vq, uint64_t table_gpa, uint32_t i,
			  struct uvh_vring_desc *d)
{
	struct iovec piece[sizeof(*d)];
	uint8_t raw[sizeof(*d)];
	size_t off = 0;
	int n, k;

	if (vq->cfg.iotlb)
		n = uvh_vq_iova_to_iov(vq, table_gpa + (uint64_t)i * sizeof(*d), sizeof(*d),
				       UVH_IOTLB_RO, piece, sizeof(*d));
	else
		n = uvh_memory_gpa_to_iov(vq->mem, table_gpa + (uint64_t)i * sizeof(*d),
					  sizeof(*d), piece, sizeof(*d), NULL);
	if (n < 0)
		return n;
	for (k = 0; k < n; k++) {
		const uint8_t *src = piece[k].iov_base;
		size_t j;

		for (j = 0; j < piece[k].iov_len && off < sizeof(raw); j++)
			raw[off++] = uvh_shm_load8(&src[j]);
	}
	memcpy(d, raw, sizeof(*d));
	return 0;
}

int uvh_vq_split_map(struct uvh_vq *vq)
{
	const struct uvh_vq_config *c = &vq->cfg;
	uint32_t hint = UINT32_MAX;
	void *desc, *avail, *used;
	char why[96];

	desc = uvh_memory_gpa_to_hva(vq->mem, c->desc_gpa, uvh_vring_desc_bytes(c->size, false),
				     &hint);
	avail = uvh_memory_gpa_to_hva(vq->mem, c->driver_gpa,
				      uvh_vring_driver_bytes(c->size, false), &hint);
	used = uvh_memory_gpa_to_hva(vq->mem, c->device_gpa,
				     uvh_vring_device_bytes(c->size, false), &hint);
	if (!desc || !avail || !used) {
		snprintf(why, sizeof(why), "%s not mapped",
			 !desc ? "descriptor table" : !avail ? "avail ring" : "used ring");
		vq->desc = NULL;
		vq->avail = NULL;
		vq->used = NULL;
		uvh_vq_fail(vq, UVH_VQ_ERR_RING_ADDR, why);
		return -EFAULT;
	}
	/* the spec's alignments; we also rely on them for atomic access */
	if (((uintptr_t)desc & 15) || ((uintptr_t)avail & 1) || ((uintptr_t)used & 3)) {
		vq->desc = NULL;
		vq->avail = NULL;
		vq->used = NULL;
		uvh_vq_fail(vq, UVH_VQ_ERR_RING_ADDR, "ring area misaligned");
		return -EFAULT;
	}
	vq->desc = desc;
	vq->avail = avail;
	vq->used = used;
	return 0;
}

/* An IOTLB translation error as a parse result: a miss leaves the chain
 * for a later burst; a permission failure (reported as ACCESS_FAIL by the
 * translation) or a front-end address outside memory breaks the ring. */
static int iotlb_result(struct uvh_vq *vq, int err)
{
	if (err == -ENOENT)
		return PARSE_MISS;
	if (err == -ENOBUFS)
		return PARSE_NOSPC;
	if (err == -EACCES)
		return broken(vq, UVH_VQ_ERR_IOTLB, "permission");
	return broken(vq, UVH_VQ_ERR_DESC_ADDR, "IOVA");
}

/* map_buffer() with IOVAs: out of line, off the GPA path. */
static __attribute__((noinline)) int map_buffer_iotlb(struct uvh_vq *vq,
						      const struct uvh_vring_desc *d,
						      struct iovec *iov, unsigned int pos,
						      unsigned int cap)
{
	int n;

	if (pos >= cap)
		return PARSE_NOSPC;
	n = uvh_vq_iova_to_iov(vq, d->addr, d->len,
			       (d->flags & vq->write_flag) ? UVH_IOTLB_WO : UVH_IOTLB_RO,
			       iov + pos, cap - pos);
	return n < 0 ? iotlb_result(vq, n) : n;
}

/* Translate one buffer into iov[pos..cap). Count, or PARSE_FAIL/NOSPC/MISS. */
static inline int map_buffer(struct uvh_vq *vq, const struct uvh_vring_desc *d,
			     struct iovec *iov, unsigned int pos, unsigned int cap)
{
	void *p;
	int n;

	if (unlikely(vq->cfg.iotlb != NULL))
		return map_buffer_iotlb(vq, d, iov, pos, cap);
	if (unlikely(pos >= cap))
		return PARSE_NOSPC;
	p = uvh_memory_gpa_to_hva(vq->mem, d->addr, d->len, &vq->mem_hint);
	if (likely(p)) {
		iov[pos].iov_base = p;
		iov[pos].iov_len = d->len;
		return 1;
	}
	/* not in one region: maybe across adjacent ones */
	n = uvh_memory_gpa_to_iov(vq->mem, d->addr, d->len, iov + pos, cap - pos, &vq->mem_hint);
	if (n == -ENOBUFS)
		return PARSE_NOSPC;
	if (n < 0)
		return broken(vq, UVH_VQ_ERR_DESC_ADDR, NULL);
	return n;
}

/*
 * Walk the chain at @head into @chain, its iovecs at iov[0..cap); @first is
 * the head descriptor, already loaded (once) by the caller.
 * Returns the iovecs used, PARSE_FAIL (ring broken) or PARSE_NOSPC.
 */
static int parse_chain(struct uvh_vq *vq, uint16_t head, const struct uvh_vring_desc *first,
		       struct uvh_vq_chain *chain, struct iovec *iov, unsigned int cap)
{
	const struct uvh_vring_desc *table = vq->desc;
	uint64_t table_gpa = 0, out_len = 0, in_len = 0;
	uint32_t limit = vq->cfg.size, hops = 0, idx = head;
	unsigned int nout = 0, nin = 0;
	uint16_t ndesc = 0;
	bool indirect = false, slow = false;
	struct uvh_vring_desc d;
	int n;

	for (;;) {
		if (unlikely(++hops > limit))
			return broken(vq, UVH_VQ_ERR_CHAIN_LOOP, NULL);
		if (ndesc == 0 && !indirect) {
			d = *first;
		} else if (likely(!slow)) {
			desc_load(&table[idx], &d);
		} else if ((n = desc_load_slow(vq, table_gpa, idx, &d)) < 0) {
			if (vq->cfg.iotlb)
				return iotlb_result(vq, n);
			return broken(vq, UVH_VQ_ERR_DESC_ADDR, "indirect table");
		}
		if (!indirect)
			ndesc++;

		if (unlikely(d.flags & UVH_VRING_DESC_F_INDIRECT)) {
			struct iovec probe[4];
			void *t;

			if (!vq->cfg.indirect)
				return broken(vq, UVH_VQ_ERR_INDIRECT_FEATURE, NULL);
			if (indirect)
				return broken(vq, UVH_VQ_ERR_NESTED_INDIRECT, NULL);
			if (d.len == 0 || (d.len & 15) ||
			    d.len / sizeof(d) > UVH_VRING_MAX_SIZE)
				return broken(vq, UVH_VQ_ERR_INDIRECT_SIZE, NULL);
			if (unlikely(vq->cfg.iotlb != NULL)) {
				/* one piece: index it; more: gather each entry
				 * (desc_load_slow), a miss surfacing there */
				n = uvh_vq_iova_to_iov(vq, d.addr, d.len, UVH_IOTLB_RO, probe, 4);
				if (n < 0 && n != -ENOBUFS)
					return iotlb_result(vq, n);
				t = n == 1 ? probe[0].iov_base : NULL;
			} else if (!(t = uvh_memory_gpa_to_hva(vq->mem, d.addr, d.len,
								&vq->mem_hint))) {
				/* mapped across regions (-ENOBUFS just means
				 * more than 4 pieces), or not at all */
				n = uvh_memory_gpa_to_iov(vq->mem, d.addr, d.len, probe, 4, NULL);
				if (n < 0 && n != -ENOBUFS)
					return broken(vq, UVH_VQ_ERR_DESC_ADDR, "indirect table");
			}
			/* the NEXT flag of an indirect descriptor is
			 * ignored: the table ends the chain (as QEMU does) */
			slow = !t || ((uintptr_t)t & 7);
			table = t;
			table_gpa = d.addr;
			limit = d.len / sizeof(d);
			hops = 0;
			idx = 0;
			indirect = true;
			continue;
		}

		if (likely(d.len)) {
			unsigned int used = nout + nin;

			n = map_buffer(vq, &d, iov, used, cap);
			if (unlikely(n < 0))
				return n;
			if (d.flags & vq->write_flag) {
				nin += (unsigned int)n;
				in_len += d.len;
				if (unlikely(in_len > UINT32_MAX))
					return broken(vq, UVH_VQ_ERR_LEN_OVERFLOW, NULL);
			} else {
				if (unlikely(nin)) {
					if (vq->cfg.strict_order)
						return broken(vq, UVH_VQ_ERR_WRITE_ORDER, NULL);
					/* keep readable first: move it
					 * before the writable ones */
					uvh_iov_rotate_tail(iov + nout, nin + (unsigned int)n,
							(unsigned int)n);
				}
				nout += (unsigned int)n;
				out_len += d.len;
				if (unlikely(out_len > UINT32_MAX))
					return broken(vq, UVH_VQ_ERR_LEN_OVERFLOW, NULL);
			}
		} else if (unlikely(!(d.flags & vq->write_flag) && nin &&
				    vq->cfg.strict_order)) {
			return broken(vq, UVH_VQ_ERR_WRITE_ORDER, NULL);
		}

		if (!(d.flags & UVH_VRING_DESC_F_NEXT))
			break;
		idx = d.next;
		if (unlikely(idx >= limit))
			return broken(vq, UVH_VQ_ERR_DESC_INDEX, "next");
	}
	chain->iov = iov;
	chain->nout = (uint16_t)nout;
	chain->nin = (uint16_t)nin;
	chain->out_len = (uint32_t)out_len;
	chain->in_len = (uint32_t)in_len;
	chain->id = head;
	chain->ndesc = ndesc;
	return (int)(nout + nin);
}

/*
 * Parse one chain of a burst whose head descriptor @d the caller loaded
 * (once). PARSE_NOSPC with chains already in the burst just ends the burst;
 * with none, the chain can never fit: broken. Out of line: the pop loop's
 * fast path stays small.
 */
static __attribute__((noinline)) int burst_chain(struct uvh_vq *vq, uint16_t head,
						 struct uvh_vring_desc d,
						 struct uvh_vq_chain *chain, struct iovec *iov,
						 unsigned int cap, unsigned int taken)
{
	int n = parse_chain(vq, head, &d, chain, iov, cap);

	if (unlikely(n == PARSE_NOSPC) && taken == 0)
		uvh_vq_fail(vq, UVH_VQ_ERR_TOO_MANY_SEGMENTS, NULL);
	else if (n >= 0)
		vq->miss_reported = false;	/* progress: a new miss is news */
	return n;
}

/*
 * The fast path: take up to @lim chains from avail entry *@last on while
 * each is one direct, non-empty buffer in one region (what a packet driver
 * posts), one iovec each. Stops, taking nothing of it, at the first chain
 * that is anything else (a problem included): the full walk deals with it
 * from its own read. Few live values, so they stay in registers.
 */
static __attribute__((noinline)) unsigned int pop_simple(struct uvh_vq *vq, struct uvh_vq_chain *c,
				      struct iovec *iov, unsigned int lim, uint16_t *last)
{
	const struct uvh_memory *mem = vq->mem;
	const struct uvh_vring_desc *desc = vq->desc;
	const uint16_t *ring = vq->avail->ring;
	const uint16_t size = vq->cfg.size, mask = (uint16_t)(size - 1);
	uint16_t pos = *last;
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
		uint16_t head = ring_load16(&ring[pos & mask]);
		struct uvh_vring_desc d;
		uint64_t off;
		bool w;

		if (unlikely(head >= size))
			break;
		desc_load(&desc[head], &d);
		if (unlikely((d.flags & (UVH_VRING_DESC_F_NEXT | UVH_VRING_DESC_F_INDIRECT)) ||
			     !d.len))
			break;
		/* inside that region, as uvh_memory_gpa_to_hva() checks it */
		off = d.addr - rgpa;
		if (unlikely(off >= rsize || d.len > rsize - off))
			break;	/* another region (the full walk finds it) or none */
		w = d.flags & vq->write_flag;
		iov[n].iov_base = rhva + off;
		iov[n].iov_len = d.len;
		c[n] = (struct uvh_vq_chain){
			.iov = &iov[n], .nout = !w, .nin = w,
			.out_len = w ? 0 : d.len, .in_len = w ? d.len : 0,
			.id = head, .ndesc = 1,
		};
		pos++;
	}
	*last = pos;
	return n;
}

int uvh_vq_split_pop(struct uvh_vq *vq, struct uvh_vq_chain *chains, unsigned int max,
		     struct iovec *iov, unsigned int iov_max)
{
	struct uvh_inflight_vq *ifq = vq->inflight;
	const struct uvh_vring_desc *desc = vq->desc;
	const uint16_t *ring = vq->avail->ring;
	const uint16_t size = vq->cfg.size, mask = (uint16_t)(size - 1);
	uint16_t avail_idx, navail, last = vq->last_avail;
	unsigned int taken = 0, iov_used = 0;
	/* once per burst: IOVAs never take the GPA fast path */
	const bool simple = ifq == NULL && vq->cfg.iotlb == NULL;
	int n;

	/* after a restart: the chains that were in flight go first */
	if (unlikely(ifq != NULL)) {
		while (taken < max && ifq->resubmit_next < ifq->nresubmit) {
			uint16_t head = ifq->resubmit[ifq->resubmit_next];
			struct uvh_vring_desc d;

			if (head >= size) {
				uvh_vq_fail(vq, UVH_VQ_ERR_DESC_INDEX, "resubmitted head");
				goto out;
			}
			desc_load(&desc[head], &d);
			n = burst_chain(vq, head, d, &chains[taken], iov + iov_used,
					iov_max - iov_used, taken);
			if (n < 0)
				goto out;
			iov_used += (unsigned int)n;
			ifq->resubmit_next++;
			taken++;
		}
	}

	avail_idx = avail_idx_acquire(vq->avail);
	navail = (uint16_t)(avail_idx - last);
	if (unlikely(navail > size)) {
		char why[64];

		snprintf(why, sizeof(why), "idx %u, last seen %u", avail_idx, last);
		uvh_vq_fail(vq, UVH_VQ_ERR_AVAIL_IDX, why);
		goto out;
	}
	vq->shadow_avail = avail_idx;
	if (navail > max - taken)
		navail = (uint16_t)(max - taken);
	while (navail) {
		uint16_t head;
		struct uvh_vring_desc d;

		if (likely(simple)) {
			unsigned int k, room = iov_max - iov_used;

			k = pop_simple(vq, chains + taken, iov + iov_used,
				       navail < room ? navail : room, &last);
			taken += k;
			iov_used += k;
			navail = (uint16_t)(navail - k);
			if (!navail)
				break;
		}
		/* anything else, every error included, one chain at a time */
		head = ring_load16(&ring[last & mask]);
		if (unlikely(head >= size)) {
			uvh_vq_fail(vq, UVH_VQ_ERR_DESC_INDEX, "head");
			break;
		}
		desc_load(&desc[head], &d);
		n = burst_chain(vq, head, d, &chains[taken], iov + iov_used, iov_max - iov_used,
				taken);
		if (unlikely(n < 0))
			break;
		if (unlikely(ifq != NULL))
			uvh_inflight_split_get(ifq, head);
		iov_used += (unsigned int)n;
		last++;
		navail--;
		taken++;
	}
	vq->last_avail = last;
out:
	vq->popped += taken;
	return (int)taken;
}

/* ---- dirty log ------------------------------------------------------------- */

/* Log the first @len bytes of the writable buffers of chain @head. This
 * re-reads the descriptors (they are not kept): anything odd just ends the
 * walk, since a guest that changed them only loses its own log accuracy. */
static void log_chain_writes(struct uvh_vq *vq, uint16_t head, uint32_t len)
{
	uint64_t table_gpa = vq->cfg.desc_gpa;
	uint32_t limit = vq->cfg.size, idx = head, hops = 0;
	bool indirect = false;
	struct uvh_vring_desc d;

	while (len && idx < limit && hops++ < limit) {
		if (desc_load_slow(vq, table_gpa, idx, &d) < 0)
			return;
		if (d.flags & UVH_VRING_DESC_F_INDIRECT) {
			/* the bound pop applies: the guest may have rewritten the
			 * entry since, and 2^28 hops would stall the engine */
			if (indirect || !vq->cfg.indirect || !d.len || (d.len & 15) ||
			    d.len / sizeof(d) > UVH_VRING_MAX_SIZE)
				return;
			table_gpa = d.addr;
			limit = d.len / sizeof(d);
			idx = 0;
			hops = 0;
			indirect = true;
			continue;
		}
		if (d.flags & vq->write_flag) {
			uint32_t part = d.len < len ? d.len : len;

			uvh_dirty_log_mark(vq->log, d.addr, part);
			len -= part;
		}
		if (!(d.flags & UVH_VRING_DESC_F_NEXT))
			return;
		idx = d.next;
	}
}

/*
 * Log a write into the used ring: at log_guest_addr with VHOST_VRING_F_LOG,
 * else at the used ring's own guest-physical address when we know it (no
 * IOTLB): a front-end that sets F_LOG only with SET_VRING_ADDR on a running
 * ring (QEMU at migration start) must not lose these pages meanwhile.
 */
static void log_used(struct uvh_vq *vq, uint64_t off, uint64_t len)
{
	if (vq->cfg.log_used)
		uvh_dirty_log_mark(vq->log, vq->cfg.log_used_gpa + off, len);
	else if (!vq->cfg.iotlb)
		uvh_dirty_log_mark(vq->log, vq->cfg.device_gpa + off, len);
}

void uvh_vq_split_push(struct uvh_vq *vq, const struct uvh_vq_used *used, unsigned int n)
{
	struct uvh_inflight_vq *ifq = vq->inflight;
	uint16_t mask = (uint16_t)(vq->cfg.size - 1);
	uint16_t idx = vq->used_idx;
	unsigned int i;

	for (i = 0; i < n; i++) {
		struct uvh_vring_used_elem *e = &vq->used->ring[(uint16_t)(idx + i) & mask];

		uvh_shm_store32(&e->id, used[i].id);
		uvh_shm_store32(&e->len, used[i].len);
	}
	if (unlikely(ifq != NULL))
		uvh_inflight_split_pre_put(ifq, used, n);
	/* pairs with the driver's acquire load of used->idx: it sees the
	 * elements and the bytes written into its buffers */
	atomic_store_explicit((_Atomic uint16_t *)&vq->used->idx, (uint16_t)(idx + n),
			      memory_order_release);
	if (unlikely(vq->log != NULL)) {
		for (i = 0; i < n; i++) {
			uint16_t slot = (uint16_t)(idx + i) & mask;

			/* IOVA chains were logged when translated at pop */
			if (used[i].len && used[i].id < vq->cfg.size && !vq->cfg.iotlb)
				log_chain_writes(vq, used[i].id, used[i].len);
			log_used(vq, offsetof(struct uvh_vring_used, ring) +
				 (uint64_t)slot * sizeof(struct uvh_vring_used_elem),
				 sizeof(struct uvh_vring_used_elem));
		}
		log_used(vq, offsetof(struct uvh_vring_used, idx), sizeof(uint16_t));
	}
	if (unlikely(ifq != NULL))
		uvh_inflight_split_post_put(ifq, used, n, (uint16_t)(idx + n));
	vq->used_idx = (uint16_t)(idx + n);
	vq->pushed += n;
}

/* virtio's vring_need_event(): did new pass event since old? */
static inline bool need_event(uint16_t event, uint16_t new_idx, uint16_t old)
{
	return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

bool uvh_vq_split_need_call(struct uvh_vq *vq)
{
	uint16_t new_idx = vq->used_idx, old = vq->signalled_used;
	bool valid = vq->signalled_used_valid;

	vq->signalled_used = new_idx;
	vq->signalled_used_valid = true;
	if (valid && new_idx == old)
		return false;	/* nothing used since the last call */
	/* used->idx store before the used_event / flags load; pairs with the
	 * driver's fence between writing used_event and re-reading used->idx */
	atomic_thread_fence(memory_order_seq_cst);
	if (vq->cfg.event_idx) {
		uint16_t event = ring_load16(used_event_ptr(vq));

		return !valid || need_event(event, new_idx, old);
	}
	return !(ring_load16(&vq->avail->flags) & UVH_VRING_AVAIL_F_NO_INTERRUPT);
}

bool uvh_vq_split_notify(struct uvh_vq *vq, bool enable)
{
	if (!enable) {
		/* With EVENT_IDX, not moving avail_event is enough: the driver
		 * kicks at most once more, when it crosses the old value. */
		if (!vq->cfg.event_idx) {
			ring_store16(&vq->used->flags, UVH_VRING_USED_F_NO_NOTIFY);
			if (unlikely(vq->log != NULL))
				log_used(vq, 0, sizeof(uint16_t));
		}
		return false;
	}
	if (vq->cfg.event_idx)
		ring_store16(avail_event_ptr(vq), vq->last_avail);
	else
		ring_store16(&vq->used->flags, 0);
	if (unlikely(vq->log != NULL))
		log_used(vq, vq->cfg.event_idx ? (uint64_t)((uint8_t *)avail_event_ptr(vq) -
							   (uint8_t *)vq->used) : 0,
			 sizeof(uint16_t));
	/* store of avail_event / flags before the avail->idx re-check; pairs
	 * with the driver's fence between its avail->idx store and its load
	 * of avail_event / used->flags: one of us sees the other */
	atomic_thread_fence(memory_order_seq_cst);
	return uvh_vq_split_avail_pending(vq);
}

bool uvh_vq_split_notify_after(struct uvh_vq *vq, unsigned int n)
{
	struct uvh_inflight_vq *ifq = vq->inflight;
	uint16_t avail;

	/* the driver kicks when its avail->idx moves past avail_event, i.e.
	 * once last_avail + n chains are there */
	ring_store16(avail_event_ptr(vq), (uint16_t)(vq->last_avail + n - 1));
	if (unlikely(vq->log != NULL))
		log_used(vq, (uint64_t)((uint8_t *)avail_event_ptr(vq) - (uint8_t *)vq->used),
			 sizeof(uint16_t));
	/* the same store-buffering pair as uvh_vq_split_notify's fence */
	atomic_thread_fence(memory_order_seq_cst);
	if (ifq && uvh_inflight_resubmit_pending(ifq))
		return true;
	avail = atomic_load_explicit((_Atomic uint16_t *)&vq->avail->idx, memory_order_relaxed);
	return (uint16_t)(avail - vq->last_avail) >= n;
}

bool uvh_vq_split_avail_pending(struct uvh_vq *vq)
{
	struct uvh_inflight_vq *ifq = vq->inflight;

	if (ifq && uvh_inflight_resubmit_pending(ifq))
		return true;
	return atomic_load_explicit((_Atomic uint16_t *)&vq->avail->idx,
				    memory_order_relaxed) != vq->last_avail;
}

int uvh_vq_split_unpop(struct uvh_vq *vq, unsigned int n)
{
	/* one avail entry per chain, and one used entry per chain given back */
	if (n > (uint16_t)(vq->last_avail - vq->used_idx))
		return -EINVAL;
	vq->last_avail = (uint16_t)(vq->last_avail - n);
	return 0;
}

uint32_t uvh_vq_split_base(const struct uvh_vq *vq)
{
	return vq->last_avail;
}
