/* SPDX-License-Identifier: MIT */
/*
 * Inflight I/O tracking: the region layout, marking on pop and clearing on
 * push (split, through the device side), resubmission order after a
 * simulated crash (re-init from the region), a crash between publishing
 * the used index and retiring the batch, corrupt regions, and the packed
 * bookkeeping against a synthetic descriptor ring.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "inflight.h"
#include "memory.h"
#include "t_helpers.h"
#include "virtq.h"

#define GPA	0x200000ull
#define MEM	(1u << 20)
#define QSIZE	16u
#define BUF_GPA	(GPA + 0x10000)

struct rig {
	int fd;
	uint8_t *view;
	struct uvh_memory *mem;
	struct uvh_vq_driver drv;
	struct uvh_vq vq;
	struct uvh_inflight_vq ifq;
	void *area;
	struct uvh_inflight_split *region;
};

static void rig_init(struct rig *r)
{
	struct uvh_mem_region mr = { GPA, MEM, 0x7f1000000000ull, 0 };
	struct uvh_vq_config cfg;
	size_t bytes = uvh_inflight_region_size(1, QSIZE, false);

	memset(r, 0, sizeof(*r));
	r->fd = t_memfd("uvh-inflight", MEM);
	r->view = mmap(NULL, MEM, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
	cr_assert_neq(r->view, MAP_FAILED);
	r->mem = uvh_memory_new(0);
	cr_assert_eq(uvh_memory_add_fd(r->mem, &mr, dup(r->fd)), 0);
	cr_assert_eq(uvh_vq_driver_init(&r->drv, QSIZE, false, false, r->view, GPA), 0);
	uvh_vq_driver_config(&r->drv, &cfg);
	cr_assert_eq(uvh_vq_init(&r->vq, &cfg, r->mem), 0);
	r->area = aligned_alloc(UVH_INFLIGHT_ALIGN, bytes);
	uvh_inflight_area_format(r->area, 1, QSIZE, false);
	r->region = uvh_inflight_queue(r->area, 0, QSIZE, false);
	cr_assert_eq(uvh_inflight_vq_init(&r->ifq, r->region, QSIZE, false), 0);
	cr_assert_eq(uvh_inflight_vq_start(&r->ifq, &r->vq), 0);
	cr_assert_eq(r->vq.inflight, &r->ifq);
	cr_assert_eq(r->region->version, 1);
	cr_assert_eq(r->region->desc_num, QSIZE);
}

static void rig_fini(struct rig *r)
{
	uvh_inflight_vq_fini(&r->ifq);
	free(r->area);
	uvh_vq_driver_free(&r->drv);
	uvh_memory_release(r->mem, NULL);
	munmap(r->view, MEM);
	close(r->fd);
}

/* A "crash": the back-end's state is gone; the front-end re-sends the
 * ring (base = used->idx, as QEMU restores it) and the same region. */
static int rig_restart(struct rig *r)
{
	struct uvh_vq_config cfg;
	uint16_t used_idx = ((struct uvh_vring_used *)r->drv.device_area)->idx;

	uvh_inflight_vq_fini(&r->ifq);
	uvh_vq_driver_config(&r->drv, &cfg);
	cfg.next_avail = used_idx;
	cr_assert_eq(uvh_vq_init(&r->vq, &cfg, r->mem), 0);
	cr_assert_eq(uvh_inflight_vq_init(&r->ifq, r->region, QSIZE, false), 0);
	return uvh_inflight_vq_start(&r->ifq, &r->vq);
}

static void add_chains(struct rig *r, unsigned int n, uintptr_t first_token)
{
	unsigned int i;

	for (i = 0; i < n; i++) {
		struct uvh_vq_buf b[2] = { { BUF_GPA + (first_token + i) * 64, 16 },
					   { BUF_GPA + (first_token + i) * 64 + 32, 16 } };

		cr_assert_eq(uvh_vq_driver_add(&r->drv, b, 1, (first_token + i) & 1,
					       (void *)(first_token + i)), 0);
	}
	uvh_vq_driver_publish(&r->drv);
}

static unsigned int pop_ids(struct rig *r, uint16_t *ids, unsigned int max)
{
	struct uvh_vq_chain ch[QSIZE];
	struct iovec iov[64];
	int n, i;

	n = uvh_vq_pop(&r->vq, ch, max, iov, 64);
	cr_assert(!uvh_vq_broken(&r->vq));
	for (i = 0; i < n; i++)
		ids[i] = ch[i].id;
	return (unsigned int)n;
}

static void push_ids(struct rig *r, const uint16_t *ids, unsigned int n)
{
	struct uvh_vq_used u[QSIZE];
	unsigned int i;

	for (i = 0; i < n; i++) {
		u[i].id = ids[i];
		u[i].ndesc = 1;
		u[i].len = 0;
	}
	uvh_vq_push(&r->vq, u, n);
}

Test(inflight, layout)
{
	uint8_t base[64];

	cr_assert_eq(sizeof(struct uvh_inflight_desc_split), 16);
	cr_assert_eq(sizeof(struct uvh_inflight_split), 16);
	cr_assert_eq(sizeof(struct uvh_inflight_desc_packed), 32);
	cr_assert_eq(sizeof(struct uvh_inflight_packed), 32);
	/* 16 + 256 * 16 = 4112 -> 4160; 32 + 256 * 32 = 8224 -> 8256 */
	cr_assert_eq(uvh_inflight_queue_size(256, false), 4160);
	cr_assert_eq(uvh_inflight_queue_size(256, true), 8256);
	cr_assert_eq(uvh_inflight_region_size(2, 256, false), 2 * 4160);
	cr_assert_eq(uvh_inflight_region_size(0, 256, false), 0);
	cr_assert_eq(uvh_inflight_region_size(2, 0, true), 0);
	cr_assert_eq((uint8_t *)uvh_inflight_queue(base, 3, 256, true) - base, 3 * 8256);
	cr_assert_eq(uvh_inflight_queue_size(1, false) % UVH_INFLIGHT_ALIGN, 0);
}

Test(inflight, mark_on_pop_clear_on_push)
{
	struct rig r;
	uint16_t ids[QSIZE], batch[2];
	unsigned int i;

	rig_init(&r);
	add_chains(&r, 6, 1);
	cr_assert_eq(pop_ids(&r, ids, QSIZE), 6);
	for (i = 0; i < 6; i++) {
		cr_assert_eq(r.region->desc[ids[i]].inflight, 1);
		if (i)
			cr_assert_gt(r.region->desc[ids[i]].counter,
				     r.region->desc[ids[i - 1]].counter);
	}
	/* out of order, one batch */
	batch[0] = ids[3];
	batch[1] = ids[1];
	push_ids(&r, batch, 2);
	cr_assert_eq(r.region->desc[ids[3]].inflight, 0);
	cr_assert_eq(r.region->desc[ids[1]].inflight, 0);
	cr_assert_eq(r.region->desc[ids[0]].inflight, 1);
	cr_assert_eq(r.region->used_idx, 2);
	cr_assert_eq(r.region->last_batch_head, ids[1]);
	cr_assert_eq(r.region->desc[ids[1]].next, ids[3]);
	rig_fini(&r);
}

Test(inflight, resubmit_in_fetch_order_after_crash)
{
	struct rig r;
	uint16_t ids[QSIZE], again[QSIZE], batch[2];
	void *tokens[QSIZE];
	uint32_t lens[QSIZE];
	unsigned int n, i;

	rig_init(&r);
	add_chains(&r, 6, 1);
	cr_assert_eq(pop_ids(&r, ids, QSIZE), 6);
	batch[0] = ids[3];
	batch[1] = ids[1];
	push_ids(&r, batch, 2);
	cr_assert_eq(uvh_vq_driver_get_used(&r.drv, tokens, lens, QSIZE), 2);

	cr_assert_eq(rig_restart(&r), 4);
	cr_assert_eq(r.vq.last_avail, 6);	/* used 2 + 4 in flight */
	cr_assert(uvh_vq_avail_pending(&r.vq));
	/* new work arrives too; the old goes first, in fetch order */
	add_chains(&r, 2, 7);
	n = pop_ids(&r, again, QSIZE);
	cr_assert_eq(n, 6);
	cr_assert_eq(again[0], ids[0]);
	cr_assert_eq(again[1], ids[2]);
	cr_assert_eq(again[2], ids[4]);
	cr_assert_eq(again[3], ids[5]);
	/* the new chains use descriptors that are not in flight */
	for (i = 4; i < 6; i++) {
		unsigned int k;

		for (k = 0; k < 4; k++)
			cr_assert_neq(again[i], again[k], "head %u handed out twice", again[i]);
	}
	/* resubmitted ones keep their marks; new ones sort after them */
	for (i = 1; i < 6; i++)
		cr_assert_gt(r.region->desc[again[i]].counter, r.region->desc[again[i - 1]].counter);
	push_ids(&r, again, 6);
	for (i = 0; i < QSIZE; i++)
		cr_assert_eq(r.region->desc[i].inflight, 0);
	n = uvh_vq_driver_get_used(&r.drv, tokens, lens, QSIZE);
	cr_assert_eq(n, 6);
	cr_assert_eq(uvh_vq_driver_free_slots(&r.drv), QSIZE);
	/* a second restart finds nothing */
	cr_assert_eq(rig_restart(&r), 0);
	cr_assert_eq(r.vq.last_avail, 8);
	rig_fini(&r);
}

Test(inflight, crash_after_used_idx_before_retire)
{
	struct rig r;
	uint16_t ids[QSIZE];
	struct uvh_vq_used u[2];
	struct uvh_vring_used *used;
	int n;

	rig_init(&r);
	add_chains(&r, 3, 1);
	cr_assert_eq(pop_ids(&r, ids, QSIZE), 3);
	/* push ids[2] and ids[0] but "crash" before the batch is retired:
	 * the steps of uvh_vq_push up to the used->idx store */
	used = r.drv.device_area;
	u[0] = (struct uvh_vq_used){ .id = ids[2], .ndesc = 1, .len = 0 };
	u[1] = (struct uvh_vq_used){ .id = ids[0], .ndesc = 1, .len = 0 };
	used->ring[0].id = ids[2];
	used->ring[1].id = ids[0];
	uvh_inflight_split_pre_put(&r.ifq, u, 2);
	atomic_store_explicit((_Atomic uint16_t *)&used->idx, 2, memory_order_release);
	cr_assert_eq(r.region->desc[ids[0]].inflight, 1);	/* not retired yet */
	cr_assert_eq(r.region->used_idx, 0);

	n = rig_restart(&r);
	cr_assert_eq(n, 1);
	cr_assert_eq(r.ifq.resubmit[0], ids[1]);
	cr_assert_eq(r.region->used_idx, 2);
	cr_assert_eq(r.region->desc[ids[0]].inflight, 0);
	cr_assert_eq(r.region->desc[ids[2]].inflight, 0);
	rig_fini(&r);
}

Test(inflight, corrupt_regions)
{
	struct rig r;
	uint16_t ids[QSIZE];
	struct uvh_inflight_vq other;
	unsigned int i;

	rig_init(&r);
	add_chains(&r, 2, 1);
	cr_assert_eq(pop_ids(&r, ids, QSIZE), 2);
	push_ids(&r, ids, 1);
	/* the front-end scribbles: used_idx behind, batch list out of range */
	r.region->used_idx = 0;
	r.region->last_batch_head = 999;
	t_log_capture();
	cr_assert_eq(rig_restart(&r), -EINVAL);
	cr_assert(t_log_contains("out of range"));
	t_log_reset();
	/* reset: tracking starts afresh, nothing resubmitted */
	cr_assert_eq(r.vq.inflight, &r.ifq);
	cr_assert_eq(uvh_inflight_resubmit_pending(&r.ifq), 0);
	for (i = 0; i < QSIZE; i++)
		cr_assert_eq(r.region->desc[i].inflight, 0);
	cr_assert_eq(r.region->used_idx, 1);

	/* a batch bigger than the queue */
	r.region->used_idx = (uint16_t)(1 - QSIZE - 1);
	cr_assert_eq(uvh_inflight_split_resubmit(&r.ifq, 1, ids, QSIZE), -EINVAL);

	/* wrong size and unknown version are refused at init */
	cr_assert_eq(uvh_inflight_vq_init(&other, r.region, QSIZE * 2, false), -EINVAL);
	r.region->version = 2;
	cr_assert_eq(uvh_inflight_vq_init(&other, r.region, QSIZE, false), -EINVAL);
	cr_assert_eq(uvh_inflight_vq_init(&other, NULL, QSIZE, false), -EINVAL);
	r.region->version = 1;
	rig_fini(&r);
}

/* ---- packed bookkeeping on a synthetic ring ------------------------------- */

#define PSIZE 8u

struct prig {
	struct uvh_vring_packed_desc ring[PSIZE];
	void *area;
	struct uvh_inflight_packed *region;
	struct uvh_inflight_vq ifq;
	struct uvh_vq vq;
};

static int prig_start(struct prig *p)
{
	uvh_inflight_vq_fini(&p->ifq);
	cr_assert_eq(uvh_inflight_vq_init(&p->ifq, p->region, PSIZE, true), 0);
	memset(&p->vq, 0, sizeof(p->vq));
	p->vq.cfg.size = PSIZE;
	p->vq.cfg.packed = true;
	p->vq.pdesc = p->ring;
	p->vq.used_wrap = true;
	return uvh_inflight_vq_start(&p->ifq, &p->vq);
}

static void prig_init(struct prig *p)
{
	unsigned int i;

	memset(p, 0, sizeof(*p));
	p->area = aligned_alloc(UVH_INFLIGHT_ALIGN, uvh_inflight_region_size(1, PSIZE, true));
	uvh_inflight_area_format(p->area, 1, PSIZE, true);
	p->region = uvh_inflight_queue(p->area, 0, PSIZE, true);
	/* every slot made available by the driver in wrap 1 */
	for (i = 0; i < PSIZE; i++)
		p->ring[i] = (struct uvh_vring_packed_desc){
			.addr = 0x1000 * (i + 1), .len = 100 + i, .id = (uint16_t)i,
			.flags = UVH_VRING_PACKED_DESC_F_AVAIL };
	cr_assert_eq(prig_start(p), 0);
	cr_assert_eq(p->region->version, 1);
	cr_assert_eq(p->region->free_head, 0);
}

static void prig_fini(struct prig *p)
{
	uvh_inflight_vq_fini(&p->ifq);
	free(p->area);
}

/* Take the chain of @n slots at @slot with buffer id @id. */
static uint16_t prig_get(struct prig *p, unsigned int slot, unsigned int n, uint16_t id)
{
	uint16_t head = 0;
	unsigned int k;

	for (k = 0; k < n; k++)
		head = uvh_inflight_packed_get(&p->ifq, &p->ring[slot + k], k == 0, k + 1 == n, id);
	return head;
}

static void prig_put(struct prig *p, uint16_t id, uint16_t used_idx, bool publish_flags,
		     bool retire)
{
	struct uvh_vq_used u = { .id = id, .ndesc = 1, .len = 0 };
	uint16_t old = p->region->used_idx;

	uvh_inflight_packed_pre_put(&p->ifq, &u, 1, used_idx, true);
	if (publish_flags)
		p->ring[old].flags = UVH_VRING_PACKED_DESC_F_AVAIL | UVH_VRING_PACKED_DESC_F_USED;
	if (retire)
		uvh_inflight_packed_post_put(&p->ifq, &u, 1);
}

Test(inflight, packed_resubmit_order_and_chains)
{
	struct prig p;
	struct uvh_vring_packed_desc out[PSIZE];
	uint16_t a, b, c;

	prig_init(&p);
	a = prig_get(&p, 0, 2, 5);	/* slots 0-1 */
	b = prig_get(&p, 2, 1, 2);	/* slot 2 */
	c = prig_get(&p, 3, 3, 7);	/* slots 3-5 */
	cr_assert_eq(a, 0);
	cr_assert_eq(b, 2);
	cr_assert_eq(c, 3);
	cr_assert_eq(p.region->desc[a].num, 2);
	cr_assert_eq(p.region->desc[c].num, 3);
	cr_assert_eq(p.region->desc[c].last, 5);
	cr_assert_eq(p.region->old_free_head, 6);
	/* b completes, written at used slot 0 */
	prig_put(&p, 2, 1, true, true);
	cr_assert_eq(p.region->desc[b].inflight, 0);
	cr_assert_eq(p.region->free_head, b);
	cr_assert_eq(p.region->old_used_idx, 1);

	cr_assert_eq(prig_start(&p), 2);
	cr_assert_eq(p.ifq.resubmit[0], a);
	cr_assert_eq(p.ifq.resubmit[1], c);
	cr_assert_eq(uvh_inflight_packed_chain(&p.ifq, a, out, PSIZE), 2);
	cr_assert_eq(out[0].addr, 0x1000);
	cr_assert_eq(out[1].len, 101);
	cr_assert_eq(uvh_inflight_packed_chain(&p.ifq, c, out, PSIZE), 3);
	cr_assert_eq(out[2].addr, 0x6000);
	cr_assert_eq(uvh_inflight_packed_chain(&p.ifq, c, out, 2), -EINVAL);
	/* used at 1; 5 slots in flight -> next avail slot 6, same wrap */
	cr_assert_eq(p.vq.used_slot, 1);
	cr_assert_eq(p.vq.last_avail, 6);
	cr_assert(p.vq.avail_wrap);
	/* new fetches sort after the old ones */
	cr_assert_gt(p.ifq.counter, p.region->desc[c].counter);
	prig_fini(&p);
}

Test(inflight, packed_crash_mid_put_rolls_back_or_commits)
{
	struct prig p;
	uint16_t a, b;

	/* not published: rolled back, the chain is resubmitted */
	prig_init(&p);
	a = prig_get(&p, 0, 1, 3);
	b = prig_get(&p, 1, 2, 4);
	prig_put(&p, 3, 1, false, false);
	cr_assert_eq(prig_start(&p), 2);
	cr_assert_eq(p.ifq.resubmit[0], a);
	cr_assert_eq(p.ifq.resubmit[1], b);
	cr_assert_eq(p.region->used_idx, 0);
	prig_fini(&p);

	/* published (flags written) but not retired: committed */
	prig_init(&p);
	a = prig_get(&p, 0, 1, 3);
	b = prig_get(&p, 1, 2, 4);
	prig_put(&p, 3, 1, true, false);
	cr_assert_eq(prig_start(&p), 1);
	cr_assert_eq(p.ifq.resubmit[0], b);
	cr_assert_eq(p.region->used_idx, 1);
	cr_assert_eq(p.region->desc[a].inflight, 0);
	prig_fini(&p);

	/* crash in the middle of taking a chain: not in flight */
	prig_init(&p);
	uvh_inflight_packed_get(&p.ifq, &p.ring[0], true, false, 0);
	cr_assert_eq(prig_start(&p), 0);
	cr_assert_eq(p.region->free_head, 0);
	prig_fini(&p);
}

Test(inflight, packed_corrupt)
{
	struct prig p;

	prig_init(&p);
	prig_get(&p, 0, 1, 1);
	/* a free list that loops */
	p.region->desc[3].next = 2;
	p.region->desc[2].next = 3;
	p.region->old_free_head = 2;
	t_log_capture();
	cr_assert_eq(prig_start(&p), -EINVAL);
	cr_assert(t_log_contains("free list"));
	t_log_reset();
	/* reset to a fresh region */
	cr_assert_eq(p.region->free_head, 0);
	cr_assert_eq(uvh_inflight_resubmit_pending(&p.ifq), 0);
	/* a scribbled free head makes get a no-op */
	p.region->free_head = 77;
	cr_assert_eq(uvh_inflight_packed_get(&p.ifq, &p.ring[0], true, true, 0), UINT16_MAX);
	prig_fini(&p);
}
