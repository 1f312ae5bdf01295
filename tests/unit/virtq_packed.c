/* SPDX-License-Identifier: MIT */
/*
 * Packed virtqueues: our driver side and our device side in one process on
 * memfd guest memory (two regions, adjacent in guest-physical space but not
 * in ours, so buffers that cross them are split), exchanging random chains
 * with every byte checked on both sides, across many wrap counter flips;
 * notification suppression that never loses a kick or a call; a table of
 * hostile rings each ending in its specific error.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "inflight.h"
#include "memory.h"
#include "t_helpers.h"
#include "virtq.h"

#define R0_GPA		0x100000ull
#define R_SIZE		0x400000ull
#define R1_GPA		(R0_GPA + R_SIZE)	/* adjacent in gpa */
#define RING_GPA	R0_GPA
#define REC_AREA	8192u			/* guest bytes per record */
#define REC_TABLE	0u			/* indirect table offset in a record */
#define REC_SEG0	512u			/* first segment offset */
#define SEG_STRIDE	900u
#define SEG_MAX		800u
#define MAX_SEGS	8

/* ---- guest memory -------------------------------------------------------------- */

struct guest {
	struct uvh_memory *mem;
	int fds_before;
};

static void guest_add(struct guest *g, uint64_t gpa, uint64_t size, uint64_t uva)
{
	struct uvh_mem_region r = {
		.guest_phys_addr = gpa, .memory_size = size,
		.userspace_addr = uva, .mmap_offset = 0,
	};
	int fd = t_memfd("vq-packed", size);

	cr_assert_eq(uvh_memory_add_fd(g->mem, &r, fd), 0);
}

static void guest_init(struct guest *g)
{
	g->fds_before = t_count_fds();
	g->mem = uvh_memory_new(0);
	cr_assert_not_null(g->mem);
	guest_add(g, R0_GPA, R_SIZE, 0x7f0000000000ull);
	guest_add(g, R1_GPA, R_SIZE, 0x7f1000000000ull);
}

static void guest_fini(struct guest *g)
{
	uvh_memory_release(g->mem, NULL);
	cr_assert_eq(t_count_fds(), g->fds_before, "fd leaked");
}

static void *g2h(struct guest *g, uint64_t gpa, uint64_t len)
{
	void *p = uvh_memory_gpa_to_hva(g->mem, gpa, len, NULL);

	cr_assert_not_null(p, "gpa %#llx", (unsigned long long)gpa);
	return p;
}

/* Copy to/from guest memory through the table (ranges may cross regions). */
static void guest_write(struct guest *g, uint64_t gpa, const void *src, size_t len)
{
	struct iovec iov[4];
	int n = uvh_memory_gpa_to_iov(g->mem, gpa, len, iov, 4, NULL);
	size_t off = 0;

	cr_assert_geq(n, 0);
	for (int i = 0; i < n; off += iov[i].iov_len, i++)
		memcpy(iov[i].iov_base, (const uint8_t *)src + off, iov[i].iov_len);
}

static void guest_read(struct guest *g, uint64_t gpa, void *dst, size_t len)
{
	struct iovec iov[4];
	int n = uvh_memory_gpa_to_iov(g->mem, gpa, len, iov, 4, NULL);
	size_t off = 0;

	cr_assert_geq(n, 0);
	for (int i = 0; i < n; off += iov[i].iov_len, i++)
		memcpy((uint8_t *)dst + off, iov[i].iov_base, iov[i].iov_len);
}

/* ---- a cheap deterministic PRNG ------------------------------------------------ */

static uint64_t rng_state;

static uint32_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state >> 16);
}

static unsigned int rnd_in(unsigned int lo, unsigned int hi)	/* [lo, hi] */
{
	return lo + rnd() % (hi - lo + 1);
}

static uint8_t pattern(uint32_t seq, uint32_t j)
{
	return (uint8_t)(seq * 131u + j * 7u + 1u);
}

/* ---- one chain as the driver built it -------------------------------------------- */

struct rec {
	bool busy;
	bool indirect;
	uint32_t idx;
	uint32_t seq;
	unsigned int nout, nin;
	struct uvh_vq_buf bufs[MAX_SEGS];
	uint32_t out_len, in_len;
	uint8_t out[4 * SEG_MAX];
};

struct work {
	struct guest g;
	struct uvh_vq_driver drv;
	struct uvh_vq vq;
	struct uvh_vq_config cfg;
	struct rec *recs;
	unsigned int nrec;
	uint64_t rec_base;
	uint32_t seq;
	/* device side */
	struct uvh_vq_used *pending;
	unsigned int npending;
	/* counters */
	uint64_t submitted, completed, kicks, calls;
	unsigned int indirect_pct;
};

static void work_init(struct work *w, uint16_t size, bool event_idx, bool indirect)
{
	memset(w, 0, sizeof(*w));
	guest_init(&w->g);
	cr_assert_leq(uvh_vq_driver_area_bytes(size, true), 0x80000);
	cr_assert_eq(uvh_vq_driver_init(&w->drv, size, true, event_idx,
					g2h(&w->g, RING_GPA, uvh_vq_driver_area_bytes(size, true)),
					RING_GPA), 0);
	w->drv.indirect = indirect;
	uvh_vq_driver_config(&w->drv, &w->cfg);
	w->cfg.strict_order = true;
	cr_assert_eq(uvh_vq_init(&w->vq, &w->cfg, w->g.mem), 0);
	w->nrec = size;
	w->recs = calloc(size, sizeof(*w->recs));
	w->pending = calloc(size, sizeof(*w->pending));
	cr_assert(w->recs && w->pending);
	/* half the records below the region boundary, half above; one of
	 * them has it 2000 bytes in, inside its second segment */
	w->rec_base = R1_GPA - (uint64_t)(size / 2 + 1) * REC_AREA + (REC_AREA - 2000);
	cr_assert_geq(w->rec_base, RING_GPA + 0x80000);
	for (unsigned int i = 0; i < size; i++)
		w->recs[i].idx = i;
}

static void work_fini(struct work *w)
{
	uvh_vq_driver_free(&w->drv);
	free(w->recs);
	free(w->pending);
	guest_fini(&w->g);
}

static uint64_t rec_gpa(const struct work *w, const struct rec *r)
{
	return w->rec_base + (uint64_t)r->idx * REC_AREA;
}

static struct rec *rec_get(struct work *w)
{
	for (unsigned int n = 0; n < w->nrec; n++) {
		struct rec *r = &w->recs[rnd() % w->nrec];

		if (!r->busy)
			return r;
	}
	for (unsigned int i = 0; i < w->nrec; i++)
		if (!w->recs[i].busy)
			return &w->recs[i];
	return NULL;
}

/* Build a random chain in @r: 1-4 out, 0-4 in, random lengths and bytes. */
static void rec_fill(struct work *w, struct rec *r)
{
	uint64_t base = rec_gpa(w, r);
	uint8_t fill[SEG_MAX];
	uint32_t off = 0;

	r->seq = w->seq++;
	r->nout = rnd_in(1, 4);
	r->nin = rnd_in(0, 4);
	r->out_len = r->in_len = 0;
	for (unsigned int i = 0; i < r->nout + r->nin; i++) {
		uint32_t len = rnd_in(i == 0 ? 4 : 1, SEG_MAX);

		r->bufs[i].gpa = base + REC_SEG0 + i * SEG_STRIDE + rnd_in(0, 60);
		r->bufs[i].len = len;
		if (i < r->nout) {
			for (uint32_t j = 0; j < len; j++)
				r->out[off + j] = (uint8_t)rnd();
			if (i == 0)	/* the device finds the record by it */
				memcpy(r->out, &r->idx, sizeof(r->idx));
			guest_write(&w->g, r->bufs[i].gpa, r->out + off, len);
			off += len;
			r->out_len += len;
		} else {
			memset(fill, 0xee, len);
			guest_write(&w->g, r->bufs[i].gpa, fill, len);
			r->in_len += len;
		}
	}
	r->indirect = w->indirect_pct && rnd() % 100 < w->indirect_pct;
}

/* Add @r to the ring: through the driver API, or as one indirect slot. */
static int rec_add(struct work *w, struct rec *r)
{
	struct uvh_vring_packed_desc *ring = w->drv.desc;
	struct uvh_vring_packed_desc table[MAX_SEGS];
	uint16_t slot = w->drv.next_slot;
	uint64_t tgpa;
	struct uvh_vq_buf tb;
	int ret;

	if (!r->indirect)
		return uvh_vq_driver_add(&w->drv, r->bufs, r->nout, r->nin, r);
	/* The driver API has no indirect tables (it owns no memory for
	 * them): write the table, add it as one buffer, mark that slot
	 * INDIRECT before it is published. Alternate 16- and 4-byte aligned
	 * tables so both read paths run. */
	tgpa = ((rec_gpa(w, r) + REC_TABLE + 15) & ~15ull) + (r->seq & 1 ? 4 : 0);
	for (unsigned int i = 0; i < r->nout + r->nin; i++) {
		table[i].addr = r->bufs[i].gpa;
		table[i].len = r->bufs[i].len;
		table[i].id = 0xffff;	/* ignored inside a table */
		table[i].flags = i >= r->nout ? UVH_VRING_DESC_F_WRITE : 0;
	}
	guest_write(&w->g, tgpa, table, 16u * (r->nout + r->nin));
	tb.gpa = tgpa;
	tb.len = 16u * (r->nout + r->nin);
	ret = uvh_vq_driver_add(&w->drv, &tb, 1, 0, r);
	if (!ret)
		ring[slot].flags |= UVH_VRING_DESC_F_INDIRECT;
	return ret;
}

/* Driver side: a completed chain; check every byte. */
static void rec_done(struct work *w, struct rec *r, uint32_t len)
{
	uint8_t buf[SEG_MAX];
	uint32_t off = 0, j;

	cr_assert(r->busy);
	cr_assert_eq(len, r->seq % (r->in_len + 1), "used len");
	for (unsigned int i = 0; i < r->nout + r->nin; i++) {
		guest_read(&w->g, r->bufs[i].gpa, buf, r->bufs[i].len);
		if (i < r->nout) {
			cr_assert(memcmp(buf, r->out + off, r->bufs[i].len) == 0,
				  "device wrote into a readable buffer");
			off += r->bufs[i].len;
			continue;
		}
		for (j = 0; j < r->bufs[i].len; j++, off++) {
			uint32_t k = off - r->out_len;

			if (k < len)
				cr_assert_eq(buf[j], pattern(r->seq, k), "seq %u byte %u", r->seq, k);
			else
				cr_assert_eq(buf[j], 0xee, "seq %u byte %u past len", r->seq, k);
		}
	}
	r->busy = false;
	w->completed++;
}

/* Device side: serve one chain: check the readable bytes, write the pattern. */
static void dev_serve(struct work *w, const struct uvh_vq_chain *c)
{
	uint8_t out[4 * SEG_MAX];
	uint32_t off = 0, idx, wlen, k = 0;
	struct rec *r;
	unsigned int i;

	for (i = 0; i < c->nout; i++) {
		cr_assert_leq(off + c->iov[i].iov_len, sizeof(out));
		memcpy(out + off, c->iov[i].iov_base, c->iov[i].iov_len);
		off += (uint32_t)c->iov[i].iov_len;
	}
	cr_assert_eq(off, c->out_len);
	cr_assert_geq(off, 4);
	memcpy(&idx, out, 4);
	cr_assert_lt(idx, w->nrec);
	r = &w->recs[idx];
	cr_assert(r->busy);
	cr_assert_eq(c->out_len, r->out_len);
	cr_assert_eq(c->in_len, r->in_len);
	cr_assert_geq(c->nout, r->nout);
	cr_assert_geq(c->nin, r->nin);
	cr_assert_eq(c->ndesc, r->indirect ? 1 : r->nout + r->nin);
	cr_assert(memcmp(out, r->out, off) == 0, "readable bytes differ");
	wlen = r->seq % (r->in_len + 1);
	for (i = c->nout; i < (unsigned int)c->nout + c->nin && k < wlen; i++) {
		uint8_t *p = c->iov[i].iov_base;

		for (size_t j = 0; j < c->iov[i].iov_len && k < wlen; j++, k++)
			p[j] = pattern(r->seq, k);
	}
	w->pending[w->npending++] = (struct uvh_vq_used){ .id = c->id, .ndesc = c->ndesc,
							  .len = wlen };
}

/* Pop a burst, serve it, keep the used entries pending. */
static unsigned int dev_pop(struct work *w, unsigned int max)
{
	struct uvh_vq_chain chains[32];
	struct iovec iov[200];
	int n = uvh_vq_pop(&w->vq, chains, max, iov, 200);

	cr_assert_geq(n, 0);
	cr_assert(!uvh_vq_broken(&w->vq), "broken: %s", uvh_vq_strerror(w->vq.error));
	for (int i = 0; i < n; i++)
		dev_serve(w, &chains[i]);
	return (unsigned int)n;
}

/* Push a random subset of the pending entries, in random order. Returns the
 * number pushed; counts a call when the driver wants one. */
static unsigned int dev_push(struct work *w, bool *called)
{
	unsigned int k, i;

	*called = false;
	if (!w->npending)
		return 0;
	/* mostly in order, sometimes out of order */
	if (rnd() % 4 == 0) {
		for (i = w->npending - 1; i > 0; i--) {
			unsigned int j = rnd() % (i + 1);
			struct uvh_vq_used t = w->pending[i];

			w->pending[i] = w->pending[j];
			w->pending[j] = t;
		}
	}
	k = rnd() % 3 ? w->npending : rnd_in(1, w->npending);
	uvh_vq_push(&w->vq, w->pending, k);
	memmove(w->pending, w->pending + k, (w->npending - k) * sizeof(*w->pending));
	w->npending -= k;
	if (uvh_vq_need_call(&w->vq)) {
		w->calls++;
		*called = true;
	}
	return k;
}

/* Driver: add up to @burst new chains; publish; kick if wanted. */
static unsigned int drv_add(struct work *w, unsigned int burst, uint64_t total, bool *kicked)
{
	unsigned int added = 0;

	*kicked = false;
	while (added < burst && w->submitted < total) {
		struct rec *r = rec_get(w);
		unsigned int need;

		if (!r)
			break;
		rec_fill(w, r);
		need = r->indirect ? 1 : r->nout + r->nin;
		if (uvh_vq_driver_free_slots(&w->drv) < need) {
			cr_assert_eq(rec_add(w, r), -ENOSPC);
			w->seq--;
			break;
		}
		cr_assert_eq(rec_add(w, r), 0);
		r->busy = true;
		w->submitted++;
		added++;
	}
	if (!added)
		return 0;
	uvh_vq_driver_publish(&w->drv);
	if (uvh_vq_driver_need_kick(&w->drv)) {
		w->kicks++;
		*kicked = true;
	}
	return added;
}

static unsigned int drv_collect(struct work *w)
{
	void *tokens[64];
	uint32_t lens[64];
	unsigned int n, total = 0;

	while ((n = uvh_vq_driver_get_used(&w->drv, tokens, lens, 64)) > 0) {
		for (unsigned int i = 0; i < n; i++)
			rec_done(w, tokens[i], lens[i]);
		total += n;
	}
	return total;
}

/*
 * Both sides in one thread, scheduled at random. A side with nothing to do
 * gets drowsy; its next step re-enables notifications and re-checks, and
 * only then sleeps; the other side may run in between (the race the
 * re-check exists for). A sleeper wakes only on a kick / a call: if both
 * sleep with chains outstanding, a notification was lost.
 */
enum { AWAKE, DROWSY, ASLEEP };

static void run_workload(uint16_t size, bool event_idx, unsigned int indirect_pct,
			 uint64_t total, uint64_t seed)
{
	struct work *w = calloc(1, sizeof(*w));
	int drv = AWAKE, dev = AWAKE;
	uint64_t steps = 0, drv_sleeps = 0, dev_sleeps = 0;

	rng_state = seed;
	work_init(w, size, event_idx, indirect_pct > 0);
	w->indirect_pct = indirect_pct;
	uvh_vq_driver_enable_cb(&w->drv, false);
	uvh_vq_notify_disable(&w->vq);

	while (w->completed < total) {
		bool flag;

		if (drv == ASLEEP && dev == ASLEEP) {
			/* fine only when nothing is outstanding: new traffic
			 * wakes the driver */
			cr_assert_eq(w->submitted, w->completed, "lost notification: %llu/%llu done",
				     (unsigned long long)w->completed, (unsigned long long)total);
			drv = AWAKE;
			uvh_vq_driver_enable_cb(&w->drv, false);
		}
		cr_assert_lt(++steps, total * 50, "no progress");
		if (drv != ASLEEP && (dev == ASLEEP || rnd() % 2)) {
			unsigned int got, added;

			if (drv == DROWSY) {
				uvh_vq_driver_enable_cb(&w->drv, true);
				if (drv_collect(w)) {
					drv = AWAKE;
					uvh_vq_driver_enable_cb(&w->drv, false);
				} else {
					drv = ASLEEP;
					drv_sleeps++;
				}
				continue;
			}
			got = drv_collect(w);
			/* bursty traffic: sometimes nothing to send */
			flag = false;
			added = rnd() % 3 ? drv_add(w, rnd_in(1, 12), total, &flag) : 0;
			if (flag && dev != AWAKE) {
				dev = AWAKE;
				uvh_vq_notify_disable(&w->vq);
			}
			if (!got && !added)
				drv = DROWSY;
		} else if (dev != ASLEEP) {
			unsigned int popped, pushed;

			if (dev == DROWSY) {
				if (uvh_vq_notify_enable(&w->vq)) {
					dev = AWAKE;
					uvh_vq_notify_disable(&w->vq);
				} else {
					dev = ASLEEP;
					dev_sleeps++;
				}
				continue;
			}
			popped = dev_pop(w, rnd_in(1, 32));
			pushed = dev_push(w, &flag);
			if (flag && drv != AWAKE) {
				drv = AWAKE;
				uvh_vq_driver_enable_cb(&w->drv, false);
			}
			if (!popped && !pushed && !w->npending)
				dev = DROWSY;
		}
	}
	/* both sides did sleep, many times */
	cr_assert_gt(drv_sleeps, 100, "driver slept %llu times", (unsigned long long)drv_sleeps);
	cr_assert_gt(dev_sleeps, 100, "device slept %llu times", (unsigned long long)dev_sleeps);
	cr_assert_eq(w->submitted, total);
	cr_assert_eq(w->vq.popped, total);
	cr_assert_eq(w->vq.pushed, total);
	cr_assert_eq(uvh_vq_driver_free_slots(&w->drv), size);
	/* every notification that happened was needed, and most were not */
	cr_assert_gt(w->kicks, 0);
	cr_assert_gt(w->calls, 0);
	cr_assert_lt(w->kicks, total / 2, "kicks %llu", (unsigned long long)w->kicks);
	cr_assert_lt(w->calls, total / 2, "calls %llu", (unsigned long long)w->calls);
	/* many laps: the wrap counters flipped total/size times at least */
	cr_assert_geq(total / size, 100);
	work_fini(w);
	free(w);
}

Test(virtq_packed, random_size8)
{
	run_workload(8, false, 0, 40000, 0x1234567);
}

Test(virtq_packed, random_size8_event_idx)
{
	run_workload(8, true, 0, 40000, 0x7654321);
}

Test(virtq_packed, random_size256)
{
	run_workload(256, false, 0, 40000, 0xabcdef1);
}

Test(virtq_packed, random_size256_event_idx)
{
	run_workload(256, true, 0, 40000, 0x1fedcba);
}

Test(virtq_packed, random_size100)
{
	run_workload(100, false, 0, 40000, 0x5555);
}

Test(virtq_packed, random_size100_event_idx)
{
	run_workload(100, true, 0, 40000, 0x9999);
}

Test(virtq_packed, random_indirect)
{
	run_workload(100, true, 40, 30000, 0x4242);
	run_workload(8, false, 60, 10000, 0x2424);
}

/* ---- notification suppression, step by step ----------------------------------- */

static void add_one(struct work *w, struct rec *r)
{
	rec_fill(w, r);
	cr_assert_eq(rec_add(w, r), 0);
	r->busy = true;
	w->submitted++;
}

Test(virtq_packed, kick_suppression_event_idx)
{
	struct work *w = calloc(1, sizeof(*w));

	rng_state = 77;
	work_init(w, 32, true, false);
	/* device polling: no kick */
	uvh_vq_notify_disable(&w->vq);
	add_one(w, &w->recs[0]);
	uvh_vq_driver_publish(&w->drv);
	cr_assert_not(uvh_vq_driver_need_kick(&w->drv));
	/* device going to sleep sees the chain already there */
	cr_assert(uvh_vq_notify_enable(&w->vq));
	cr_assert_eq(dev_pop(w, 32), 1);
	/* now asleep, waiting on the next slot: the next publish kicks */
	cr_assert_not(uvh_vq_notify_enable(&w->vq));
	add_one(w, &w->recs[1]);
	uvh_vq_driver_publish(&w->drv);
	cr_assert(uvh_vq_driver_need_kick(&w->drv));
	/* the device has not caught up: a further publish needs no kick */
	add_one(w, &w->recs[2]);
	uvh_vq_driver_publish(&w->drv);
	cr_assert_not(uvh_vq_driver_need_kick(&w->drv));
	cr_assert_eq(dev_pop(w, 32), 2);
	/* calls: the driver wants one at its next used slot */
	uvh_vq_driver_enable_cb(&w->drv, true);
	cr_assert_eq(w->npending, 3);
	uvh_vq_push(&w->vq, w->pending, 1);
	cr_assert(uvh_vq_need_call(&w->vq));
	/* driver has not looked yet: its event is in the past, no call */
	uvh_vq_push(&w->vq, w->pending + 1, 1);
	cr_assert_not(uvh_vq_need_call(&w->vq));
	/* driver disables: no call either */
	uvh_vq_driver_enable_cb(&w->drv, false);
	uvh_vq_push(&w->vq, w->pending + 2, 1);
	cr_assert_not(uvh_vq_need_call(&w->vq));
	w->npending = 0;
	cr_assert_eq(drv_collect(w), 3);
	work_fini(w);
	free(w);
}

Test(virtq_packed, kick_suppression_flags)
{
	struct work *w = calloc(1, sizeof(*w));

	rng_state = 78;
	work_init(w, 32, false, false);
	add_one(w, &w->recs[0]);
	uvh_vq_driver_publish(&w->drv);
	cr_assert(uvh_vq_driver_need_kick(&w->drv));	/* enabled at start */
	cr_assert_not(uvh_vq_driver_need_kick(&w->drv));	/* nothing new */
	uvh_vq_notify_disable(&w->vq);
	add_one(w, &w->recs[1]);
	uvh_vq_driver_publish(&w->drv);
	cr_assert_not(uvh_vq_driver_need_kick(&w->drv));
	cr_assert(uvh_vq_notify_enable(&w->vq));	/* two are waiting */
	cr_assert_eq(dev_pop(w, 32), 2);
	uvh_vq_driver_enable_cb(&w->drv, false);
	uvh_vq_push(&w->vq, w->pending, 1);
	cr_assert_not(uvh_vq_need_call(&w->vq));
	uvh_vq_driver_enable_cb(&w->drv, true);
	uvh_vq_push(&w->vq, w->pending + 1, 1);
	cr_assert(uvh_vq_need_call(&w->vq));
	cr_assert_not(uvh_vq_need_call(&w->vq));	/* nothing pushed since */
	w->npending = 0;
	cr_assert_eq(drv_collect(w), 2);
	work_fini(w);
	free(w);
}

/* ---- two threads ------------------------------------------------------------------- */

struct mt {
	struct work *w;
	uint64_t total;
	atomic_bool stop;
};

static void *mt_device(void *arg)
{
	struct mt *m = arg;
	struct work *w = m->w;
	uint64_t done = 0;

	while (done < m->total && !atomic_load(&m->stop)) {
		struct uvh_vq_chain chains[32];
		struct iovec iov[256];
		int n = uvh_vq_pop(&w->vq, chains, 32, iov, 256);

		if (n <= 0) {
			if (uvh_vq_broken(&w->vq))
				break;
			sched_yield();
			continue;
		}
		for (int i = 0; i < n; i++)
			dev_serve(w, &chains[i]);
		uvh_vq_push(&w->vq, w->pending, w->npending);
		(void)uvh_vq_need_call(&w->vq);
		done += w->npending;
		w->npending = 0;
	}
	return NULL;
}

Test(virtq_packed, two_threads)
{
	struct work *w = calloc(1, sizeof(*w));
	struct mt m = { .w = w, .total = 20000 };
	pthread_t dev;
	uint64_t spins = 0;

	rng_state = 0xfeed;
	work_init(w, 64, true, false);
	/* rec_fill's writes and dev_serve's reads of the record happen in
	 * different threads: the ring's release/acquire orders them */
	cr_assert_eq(pthread_create(&dev, NULL, mt_device, &m), 0);
	while (w->completed < m.total) {
		bool kicked;
		unsigned int got = drv_collect(w);
		unsigned int added = drv_add(w, rnd_in(1, 16), m.total, &kicked);

		if (!got && !added) {
			sched_yield();
			if (++spins > 50000000ull || uvh_vq_broken(&w->vq))
				break;
		}
	}
	atomic_store(&m.stop, true);
	pthread_join(dev, NULL);
	cr_assert(!uvh_vq_broken(&w->vq));
	cr_assert_eq(w->completed, m.total);
	cr_assert_eq(uvh_vq_driver_free_slots(&w->drv), 64);
	work_fini(w);
	free(w);
}

/* ---- base encode/decode, restart mid-stream --------------------------------------- */

Test(virtq_packed, base_encoding)
{
	struct work *w = calloc(1, sizeof(*w));
	struct uvh_vq_config cfg;
	uint32_t base;

	rng_state = 99;
	work_init(w, 100, false, false);
	/* from cfg */
	cfg = w->cfg;
	cfg.next_avail = 5;
	cfg.avail_wrap = false;
	cfg.next_used = 3;
	cfg.used_wrap = true;
	cr_assert_eq(uvh_vq_init(&w->vq, &cfg, w->g.mem), 0);
	cr_assert_eq(uvh_vq_base(&w->vq), 5u | (0u << 15) | (3u << 16) | (1u << 31));
	cfg.next_avail = 99;
	cfg.avail_wrap = true;
	cfg.next_used = 0;
	cfg.used_wrap = false;
	cr_assert_eq(uvh_vq_init(&w->vq, &cfg, w->g.mem), 0);
	cr_assert_eq(uvh_vq_base(&w->vq), 99u | (1u << 15));

	/* a live ring: run, stop at a quiet point, restart from the base */
	cr_assert_eq(uvh_vq_init(&w->vq, &w->cfg, w->g.mem), 0);
	for (int round = 0; round < 7; round++) {
		bool flag;

		for (int i = 0; i < 40; i++) {
			drv_add(w, rnd_in(1, 6), UINT64_MAX, &flag);
			while (dev_pop(w, rnd_in(1, 32)))
				;
			while (w->npending)
				dev_push(w, &flag);
			drv_collect(w);
		}
		base = uvh_vq_base(&w->vq);
		cr_assert_eq(base & 0x7fff, w->drv.next_slot);
		cr_assert_eq(!!(base & 0x8000), w->drv.avail_wrap);
		cr_assert_eq((base >> 16) & 0x7fff, w->drv.last_used_slot);
		cr_assert_eq(!!(base >> 31), w->drv.used_wrap);
		/* SET_VRING_BASE's decode */
		cfg = w->cfg;
		cfg.next_avail = base & 0x7fff;
		cfg.avail_wrap = base >> 15 & 1;
		cfg.next_used = base >> 16 & 0x7fff;
		cfg.used_wrap = base >> 31;
		cr_assert_eq(uvh_vq_init(&w->vq, &cfg, w->g.mem), 0);
		cr_assert_eq(uvh_vq_base(&w->vq), base);
	}
	cr_assert_eq(w->completed, w->submitted);
	cr_assert_gt(w->submitted, 500);
	work_fini(w);
	free(w);
}

/*
 * uvh_vq_unpop: the last chains of a burst given back unused are popped
 * again, same ids and slots, across many wraps (a size of 100 slots and
 * chains of 1-8 slots); everything still completes, byte-checked.
 */
Test(virtq_packed, unpop_across_wraps)
{
	struct work *w = calloc(1, sizeof(*w));
	static struct uvh_vq_chain c[16], again[16];
	static struct iovec iov[16 * MAX_SEGS], iov2[16 * MAX_SEGS];
	unsigned int given_back = 0;

	rng_state = 4711;
	work_init(w, 100, false, false);
	for (int round = 0; round < 400; round++) {
		bool flag;
		int n, m, k;

		drv_add(w, rnd_in(1, 8), UINT64_MAX, &flag);
		n = uvh_vq_pop(&w->vq, c, rnd_in(1, 8), iov, 16 * MAX_SEGS);
		cr_assert_geq(n, 0);
		k = n ? (int)rnd_in(0, (unsigned int)n) : 0;
		cr_assert_eq(uvh_vq_unpop(&w->vq, c + n - k, (unsigned int)k), 0);
		given_back += (unsigned int)k;
		m = uvh_vq_pop(&w->vq, again, (unsigned int)k, iov2, 16 * MAX_SEGS);
		cr_assert_eq(m, k, "round %d: %d of %d chains popped again", round, m, k);
		for (int i = 0; i < k; i++) {
			cr_assert_eq(again[i].id, c[n - k + i].id);
			cr_assert_eq(again[i].ndesc, c[n - k + i].ndesc);
		}
		for (int i = 0; i < n - k; i++)
			dev_serve(w, &c[i]);
		for (int i = 0; i < k; i++)
			dev_serve(w, &again[i]);
		while (w->npending)
			dev_push(w, &flag);
		drv_collect(w);
	}
	/* what the last rounds left in the ring */
	for (bool flag; dev_pop(w, 32) || w->npending;) {
		while (w->npending)
			dev_push(w, &flag);
		drv_collect(w);
	}
	cr_assert_gt(given_back, 200);
	cr_assert_eq(w->completed, w->submitted);
	cr_assert_gt(w->submitted, 500);
	/* nothing in flight: nothing to give back */
	cr_assert_eq(uvh_vq_unpop(&w->vq, c, 1), -EINVAL);
	cr_assert_eq(uvh_vq_base(&w->vq) & 0x7fff, w->drv.next_slot);
	work_fini(w);
	free(w);
}

/* ---- dirty log ---------------------------------------------------------------------- */

Test(virtq_packed, dirty_log)
{
	struct work *w = calloc(1, sizeof(*w));
	uint64_t bytes = (R1_GPA + R_SIZE) / UVH_LOG_PAGE / 8;
	struct uvh_dirty_log log = { .size = bytes };
	struct rec *r;
	bool flag;

	rng_state = 5;
	work_init(w, 8, false, false);
	r = &w->recs[3];
	log.bitmap = calloc(1, bytes);
	w->cfg.log_used = true;
	w->cfg.log_used_gpa = w->cfg.desc_gpa;
	cr_assert_eq(uvh_vq_init(&w->vq, &w->cfg, w->g.mem), 0);
	uvh_vq_set_log(&w->vq, &log);
	do {
		rec_fill(w, r);
	} while (!r->nin || r->seq % (r->in_len + 1) == 0);
	cr_assert_eq(rec_add(w, r), 0);
	r->busy = true;
	uvh_vq_driver_publish(&w->drv);
	cr_assert_eq(dev_pop(w, 32), 1);
	dev_push(w, &flag);
	cr_assert_eq(w->npending, 0);
	for (unsigned int i = 0; i < r->nout + r->nin; i++) {
		uint64_t first = r->bufs[i].gpa / UVH_LOG_PAGE;
		uint64_t last = (r->bufs[i].gpa + r->bufs[i].len - 1) / UVH_LOG_PAGE;

		for (uint64_t p = first; p <= last; p++) {
			bool dirty = log.bitmap[p / 8] & (1u << (p % 8));

			if (i >= r->nout)
				cr_assert(dirty, "writable page %llu not logged", (unsigned long long)p);
		}
	}
	cr_assert(log.bitmap[(RING_GPA / UVH_LOG_PAGE) / 8] & (1u << ((RING_GPA / UVH_LOG_PAGE) % 8)),
		  "used descriptor not logged");
	cr_assert_eq(drv_collect(w), 1);
	free((void *)log.bitmap);
	work_fini(w);
	free(w);
}

/* ---- hostile rings ------------------------------------------------------------------- */

#define HOST_SIZE	8
#define DATA_GPA	(R0_GPA + 0x10000)
#define TABLE_GPA	(R0_GPA + 0x20000)
#define BIG_GPA		0x100000000ull		/* a 3 GiB sparse region */
#define BIG_SIZE	0xc0000000ull

struct hd {		/* one raw descriptor */
	uint64_t addr;
	uint32_t len;
	uint16_t id;
	uint16_t flags;
};

struct hostile {
	const char *name;
	bool indirect_feature;
	bool strict;
	bool big;			/* add the sparse 3 GiB region */
	unsigned int iov_max;
	unsigned int nring;
	struct hd ring[HOST_SIZE + 1];	/* written from slot 0, AVAIL added */
	unsigned int ntable;
	struct hd table[HOST_SIZE + 2];	/* at TABLE_GPA (+ table_off) */
	unsigned int table_off;
	int expect_popped;
	enum uvh_vq_error expect;
};

#define F_N	UVH_VRING_DESC_F_NEXT
#define F_W	UVH_VRING_DESC_F_WRITE
#define F_I	UVH_VRING_DESC_F_INDIRECT
#define D(a, l, i, f)	{ (a), (l), (i), (f) }

static const struct hostile hostile_cases[] = {
	{ .name = "buffer id >= size", .nring = 1,
	  .ring = { D(DATA_GPA, 64, HOST_SIZE, 0) }, .expect = UVH_VQ_ERR_BUFFER_ID },
	{ .name = "buffer id 0xffff on the last of a chain", .nring = 2,
	  .ring = { D(DATA_GPA, 64, 0, F_N), D(DATA_GPA, 64, 0xffff, F_W) },
	  .expect = UVH_VQ_ERR_BUFFER_ID },
	{ .name = "chain longer than the ring (all NEXT)", .nring = HOST_SIZE,
	  .ring = { D(DATA_GPA, 8, 0, F_N), D(DATA_GPA, 8, 0, F_N), D(DATA_GPA, 8, 0, F_N),
		    D(DATA_GPA, 8, 0, F_N), D(DATA_GPA, 8, 0, F_N), D(DATA_GPA, 8, 0, F_N),
		    D(DATA_GPA, 8, 0, F_N), D(DATA_GPA, 8, 0, F_N) },
	  .expect = UVH_VQ_ERR_CHAIN_LOOP },
	{ .name = "address outside memory", .nring = 1,
	  .ring = { D(0x10000, 64, 0, 0) }, .expect = UVH_VQ_ERR_DESC_ADDR },
	{ .name = "buffer runs past the last region", .nring = 1,
	  .ring = { D(R1_GPA + R_SIZE - 16, 64, 0, 0) }, .expect = UVH_VQ_ERR_DESC_ADDR },
	{ .name = "address + len wraps", .nring = 1,
	  .ring = { D(UINT64_MAX - 10, 100, 0, 0) }, .expect = UVH_VQ_ERR_DESC_ADDR },
	{ .name = "chain length over 4 GiB", .big = true, .nring = 2,
	  .ring = { D(BIG_GPA, 0xb0000000u, 0, F_N), D(BIG_GPA, 0xb0000000u, 0, F_W) },
	  .expect = UVH_VQ_ERR_LEN_OVERFLOW },
	{ .name = "nested indirect", .indirect_feature = true, .nring = 1,
	  .ring = { D(TABLE_GPA, 32, 0, F_I) }, .ntable = 2,
	  .table = { D(DATA_GPA, 64, 0, 0), D(TABLE_GPA, 16, 0, F_I) },
	  .expect = UVH_VQ_ERR_NESTED_INDIRECT },
	{ .name = "indirect with NEXT", .indirect_feature = true, .nring = 2,
	  .ring = { D(TABLE_GPA, 16, 0, F_I | F_N), D(DATA_GPA, 64, 0, 0) }, .ntable = 1,
	  .table = { D(DATA_GPA, 64, 0, 0) }, .expect = UVH_VQ_ERR_NESTED_INDIRECT },
	{ .name = "indirect after a direct descriptor", .indirect_feature = true, .nring = 2,
	  .ring = { D(DATA_GPA, 64, 0, F_N), D(TABLE_GPA, 16, 0, F_I) }, .ntable = 1,
	  .table = { D(DATA_GPA, 64, 0, 0) }, .expect = UVH_VQ_ERR_NESTED_INDIRECT },
	{ .name = "indirect size 0", .indirect_feature = true, .nring = 1,
	  .ring = { D(TABLE_GPA, 0, 0, F_I) }, .expect = UVH_VQ_ERR_INDIRECT_SIZE },
	{ .name = "indirect size not a multiple of 16", .indirect_feature = true, .nring = 1,
	  .ring = { D(TABLE_GPA, 24, 0, F_I) }, .ntable = 2,
	  .table = { D(DATA_GPA, 64, 0, 0), D(DATA_GPA, 64, 0, 0) },
	  .expect = UVH_VQ_ERR_INDIRECT_SIZE },
	{ .name = "indirect table longer than the queue", .indirect_feature = true, .nring = 1,
	  .ring = { D(TABLE_GPA, 16 * (HOST_SIZE + 1), 0, F_I) }, .ntable = HOST_SIZE + 1,
	  .expect = UVH_VQ_ERR_INDIRECT_SIZE },
	{ .name = "indirect table outside memory", .indirect_feature = true, .nring = 1,
	  .ring = { D(0x20000, 32, 0, F_I) }, .expect = UVH_VQ_ERR_DESC_ADDR },
	{ .name = "indirect table across two regions", .indirect_feature = true, .nring = 1,
	  .ring = { D(R1_GPA - 16, 32, 0, F_I) }, .expect = UVH_VQ_ERR_DESC_ADDR },
	{ .name = "indirect entry outside memory", .indirect_feature = true, .nring = 1,
	  .ring = { D(TABLE_GPA, 32, 0, F_I) }, .ntable = 2,
	  .table = { D(DATA_GPA, 64, 0, 0), D(0x30000, 64, 0, F_W) },
	  .expect = UVH_VQ_ERR_DESC_ADDR },
	{ .name = "indirect without the feature", .nring = 1,
	  .ring = { D(TABLE_GPA, 16, 0, F_I) }, .ntable = 1, .table = { D(DATA_GPA, 64, 0, 0) },
	  .expect = UVH_VQ_ERR_INDIRECT_FEATURE },
	{ .name = "write before read (strict)", .strict = true, .nring = 2,
	  .ring = { D(DATA_GPA, 64, 0, F_W | F_N), D(DATA_GPA + 64, 64, 0, 0) },
	  .expect = UVH_VQ_ERR_WRITE_ORDER },
	{ .name = "write before read inside an indirect table (strict)", .strict = true,
	  .indirect_feature = true, .nring = 1, .ring = { D(TABLE_GPA, 32, 0, F_I) }, .ntable = 2,
	  .table = { D(DATA_GPA, 64, 0, F_W), D(DATA_GPA + 64, 64, 0, 0) },
	  .expect = UVH_VQ_ERR_WRITE_ORDER },
	{ .name = "too many segments", .iov_max = 2, .nring = 3,
	  .ring = { D(DATA_GPA, 64, 0, F_N), D(DATA_GPA, 64, 0, F_N), D(DATA_GPA, 64, 1, F_W) },
	  .expect = UVH_VQ_ERR_TOO_MANY_SEGMENTS },
	{ .name = "too many segments: a buffer split over two regions", .iov_max = 1,
	  .nring = 1, .ring = { D(R1_GPA - 8, 64, 0, 0) },
	  .expect = UVH_VQ_ERR_TOO_MANY_SEGMENTS },
	{ .name = "good chain then a bad one: the good one is returned", .nring = 2,
	  .ring = { D(DATA_GPA, 64, 3, 0), D(0x10000, 64, 4, 0) },
	  .expect_popped = 1, .expect = UVH_VQ_ERR_DESC_ADDR },
};

static void write_desc(struct guest *g, uint64_t gpa, const struct hd *h, uint16_t extra)
{
	struct uvh_vring_packed_desc d = {
		.addr = h->addr, .len = h->len, .id = h->id, .flags = (uint16_t)(h->flags | extra),
	};

	guest_write(g, gpa, &d, sizeof(d));
}

static void run_hostile(const struct hostile *hc)
{
	struct guest g;
	struct uvh_vq_driver drv;
	struct uvh_vq_config cfg;
	struct uvh_vq vq;
	struct uvh_vq_chain chains[4];
	struct iovec iov[16];
	unsigned int i;
	int n;

	guest_init(&g);
	if (hc->big)
		guest_add(&g, BIG_GPA, BIG_SIZE, 0x7f2000000000ull);
	cr_assert_eq(uvh_vq_driver_init(&drv, HOST_SIZE, true, false,
					g2h(&g, RING_GPA, uvh_vq_driver_area_bytes(HOST_SIZE, true)),
					RING_GPA), 0);
	uvh_vq_driver_config(&drv, &cfg);
	cfg.indirect = hc->indirect_feature;
	cfg.strict_order = hc->strict;
	cr_assert_eq(uvh_vq_init(&vq, &cfg, g.mem), 0, "%s", hc->name);
	for (i = 0; i < hc->ntable; i++) {
		struct hd e = hc->table[i];

		if (i >= 2 && !e.len)	/* filler entries */
			e = (struct hd){ DATA_GPA, 16, 0, 0 };
		write_desc(&g, TABLE_GPA + hc->table_off + 16u * i, &e, 0);
	}
	/* the chain's slots: every flags word with AVAIL for wrap 1 */
	for (i = 0; i < hc->nring; i++)
		write_desc(&g, cfg.desc_gpa + 16u * i, &hc->ring[i], UVH_VRING_PACKED_DESC_F_AVAIL);

	n = uvh_vq_pop(&vq, chains, 4, iov, hc->iov_max ? hc->iov_max : 16);
	cr_assert_eq(n, hc->expect_popped, "%s: popped %d", hc->name, n);
	cr_assert_eq(vq.error, hc->expect, "%s: error %s, expected %s", hc->name,
		     uvh_vq_strerror(vq.error), uvh_vq_strerror(hc->expect));
	cr_assert(uvh_vq_broken(&vq));
	/* a broken ring is never touched again */
	cr_assert_eq(uvh_vq_pop(&vq, chains, 4, iov, 16), 0);
	cr_assert_not(uvh_vq_avail_pending(&vq));
	cr_assert_not(uvh_vq_notify_enable(&vq));
	uvh_vq_driver_free(&drv);
	guest_fini(&g);
}

Test(virtq_packed, hostile_table)
{
	for (size_t i = 0; i < sizeof(hostile_cases) / sizeof(hostile_cases[0]); i++)
		run_hostile(&hostile_cases[i]);
}

/* More slots made available than the ring holds: the driver re-offers slots
 * the device still has in flight. */
Test(virtq_packed, hostile_reoffer_inflight_slots)
{
	struct guest g;
	struct uvh_vq_driver drv;
	struct uvh_vq_config cfg;
	struct uvh_vq vq;
	struct uvh_vq_chain chains[8];
	struct iovec iov[16];
	unsigned int i;

	guest_init(&g);
	cr_assert_eq(uvh_vq_driver_init(&drv, 4, true, false,
					g2h(&g, RING_GPA, uvh_vq_driver_area_bytes(4, true)),
					RING_GPA), 0);
	uvh_vq_driver_config(&drv, &cfg);
	cr_assert_eq(uvh_vq_init(&vq, &cfg, g.mem), 0);
	for (i = 0; i < 4; i++) {
		struct hd h = { DATA_GPA, 64, (uint16_t)i, 0 };

		write_desc(&g, cfg.desc_gpa + 16u * i, &h, UVH_VRING_PACKED_DESC_F_AVAIL);
	}
	cr_assert_eq(uvh_vq_pop(&vq, chains, 8, iov, 16), 4);
	cr_assert_eq(uvh_vq_base(&vq), 1u << 31);	/* avail lapped: wrap 0 */
	/* slot 0 again, for wrap 0, while all four are still in flight */
	{
		struct hd h = { DATA_GPA, 64, 0, 0 };

		write_desc(&g, cfg.desc_gpa, &h, UVH_VRING_PACKED_DESC_F_USED);
	}
	cr_assert_eq(uvh_vq_pop(&vq, chains, 8, iov, 16), 0);
	cr_assert_eq(vq.error, UVH_VQ_ERR_AVAIL_IDX);
	uvh_vq_driver_free(&drv);
	guest_fini(&g);
}

/* A burst that runs out of the caller's iovecs is cut, not an error. */
Test(virtq_packed, iov_pool_cuts_burst)
{
	struct work *w = calloc(1, sizeof(*w));
	struct uvh_vq_chain chains[4];
	struct iovec iov[5];
	struct uvh_vq_buf b[3] = { { DATA_GPA, 10 }, { DATA_GPA + 100, 10 }, { DATA_GPA + 200, 10 } };

	work_init(w, 16, false, false);
	cr_assert_eq(uvh_vq_driver_add(&w->drv, b, 2, 1, (void *)1), 0);
	cr_assert_eq(uvh_vq_driver_add(&w->drv, b, 1, 2, (void *)2), 0);
	uvh_vq_driver_publish(&w->drv);
	cr_assert_eq(uvh_vq_pop(&w->vq, chains, 4, iov, 5), 1);
	cr_assert_not(uvh_vq_broken(&w->vq));
	cr_assert_eq(chains[0].nout, 2);
	cr_assert_eq(chains[0].nin, 1);
	cr_assert_eq(uvh_vq_pop(&w->vq, chains, 4, iov, 5), 1);
	cr_assert_eq(chains[0].nout, 1);
	cr_assert_eq(chains[0].nin, 2);
	cr_assert_eq(chains[0].ndesc, 3);
	work_fini(w);
	free(w);
}

/* The ring areas themselves outside guest memory. */
Test(virtq_packed, ring_outside_memory)
{
	struct guest g;
	struct uvh_vq_config cfg = { .size = 8, .packed = true, .avail_wrap = true,
				     .used_wrap = true };
	struct uvh_vq vq;

	guest_init(&g);
	cfg.desc_gpa = R1_GPA + R_SIZE - 64;	/* 128 bytes needed */
	cfg.driver_gpa = R0_GPA + 0x1000;
	cfg.device_gpa = R0_GPA + 0x1040;
	cr_assert_eq(uvh_vq_init(&vq, &cfg, g.mem), -EFAULT);
	cr_assert_eq(vq.error, UVH_VQ_ERR_RING_ADDR);
	cfg.desc_gpa = R0_GPA;
	cfg.device_gpa = 0x1000;
	cr_assert_eq(uvh_vq_init(&vq, &cfg, g.mem), -EFAULT);
	cr_assert_eq(vq.error, UVH_VQ_ERR_RING_ADDR);
	cfg.device_gpa = R0_GPA + 0x1042;	/* misaligned event area */
	cr_assert_eq(uvh_vq_init(&vq, &cfg, g.mem), -EFAULT);
	cfg.device_gpa = R0_GPA + 0x1040;
	cr_assert_eq(uvh_vq_init(&vq, &cfg, g.mem), 0);
	guest_fini(&g);
}

/* ---- inflight: chains in flight at a crash are handed out again ------------------ */

Test(virtq_packed, inflight_resubmit)
{
	struct work *w = calloc(1, sizeof(*w));
	struct uvh_inflight_vq ifq = { 0 }, ifq2 = { 0 };
	void *region = calloc(1, uvh_inflight_queue_size(64, true));
	struct uvh_vq_used held[3];
	bool flag;

	rng_state = 31;
	work_init(w, 64, false, true);
	w->indirect_pct = 30;
	cr_assert_not_null(region);
	cr_assert_eq(uvh_inflight_vq_init(&ifq, region, 64, true), 0);
	cr_assert_eq(uvh_inflight_vq_start(&ifq, &w->vq), 0);
	cr_assert_eq(w->vq.inflight, &ifq);
	/* a few laps first so the crash happens mid-ring */
	for (int i = 0; i < 80; i++) {
		drv_add(w, rnd_in(1, 4), UINT64_MAX, &flag);
		while (dev_pop(w, 32))
			;
		while (w->npending)
			dev_push(w, &flag);
		drv_collect(w);
	}
	cr_assert_eq(w->completed, w->submitted);

	/* five chains taken, two of them (out of order) completed */
	w->indirect_pct = 0;
	for (int i = 0; i < 5; i++)
		add_one(w, &w->recs[i]);
	uvh_vq_driver_publish(&w->drv);
	while (dev_pop(w, 32))
		;
	cr_assert_eq(w->npending, 5);
	held[0] = w->pending[0];
	held[1] = w->pending[1];
	held[2] = w->pending[3];
	w->pending[0] = w->pending[4];
	w->pending[1] = w->pending[2];
	uvh_vq_push(&w->vq, w->pending, 2);
	w->npending = 0;
	cr_assert_eq(drv_collect(w), 2);

	/* crash: a new back-end, the same region, a base from long ago */
	cr_assert_eq(uvh_vq_init(&w->vq, &w->cfg, w->g.mem), 0);
	cr_assert_eq(uvh_inflight_vq_init(&ifq2, region, 64, true), 0);
	cr_assert_eq(uvh_inflight_vq_start(&ifq2, &w->vq), 3);
	/* the three come back, oldest first, bytes checked by dev_serve */
	cr_assert_eq(dev_pop(w, 32), 3);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(w->pending[i].id, held[i].id);
		cr_assert_eq(w->pending[i].ndesc, held[i].ndesc);
	}
	cr_assert_eq(dev_pop(w, 32), 0);
	dev_push(w, &flag);
	while (w->npending)
		dev_push(w, &flag);
	cr_assert_eq(drv_collect(w), 3);
	cr_assert_eq(uvh_vq_driver_free_slots(&w->drv), 64);
	/* and the ring goes on from there */
	for (int i = 0; i < 80; i++) {
		drv_add(w, rnd_in(1, 4), UINT64_MAX, &flag);
		while (dev_pop(w, 32))
			;
		while (w->npending)
			dev_push(w, &flag);
		drv_collect(w);
	}
	cr_assert_eq(w->completed, w->submitted);
	cr_assert_not(uvh_vq_broken(&w->vq));
	uvh_inflight_vq_fini(&ifq);
	uvh_inflight_vq_fini(&ifq2);
	free(region);
	work_fini(w);
	free(w);
}

/* Not strict: a readable buffer after a writable one is moved in front. */
Test(virtq_packed, readable_after_writable_not_strict)
{
	struct work *w = calloc(1, sizeof(*w));
	struct uvh_vq_chain chains[2];
	struct iovec iov[8];
	struct uvh_vring_packed_desc *ring;
	struct uvh_vq_buf b[3] = { { DATA_GPA, 10 }, { DATA_GPA + 100, 20 }, { DATA_GPA + 200, 30 } };

	work_init(w, 16, false, false);
	w->cfg.strict_order = false;
	cr_assert_eq(uvh_vq_init(&w->vq, &w->cfg, w->g.mem), 0);
	ring = w->drv.desc;
	cr_assert_eq(uvh_vq_driver_add(&w->drv, b, 1, 2, (void *)1), 0);
	ring[2].flags &= (uint16_t)~UVH_VRING_DESC_F_WRITE;	/* out, in, out */
	uvh_vq_driver_publish(&w->drv);
	cr_assert_eq(uvh_vq_pop(&w->vq, chains, 2, iov, 8), 1);
	cr_assert_not(uvh_vq_broken(&w->vq));
	cr_assert_eq(chains[0].nout, 2);
	cr_assert_eq(chains[0].nin, 1);
	cr_assert_eq(chains[0].out_len, 40);
	cr_assert_eq(chains[0].in_len, 20);
	cr_assert_eq(iov[0].iov_len, 10);
	cr_assert_eq(iov[1].iov_len, 30);
	cr_assert_eq(iov[2].iov_len, 20);
	cr_assert_eq(iov[2].iov_base, g2h(&w->g, DATA_GPA + 100, 20));
	work_fini(w);
	free(w);
}

/* ---- uvh_vq_driver_add_burst ----------------------------------------------------- */

/* Device side of a chain of writable buffers only (dev_serve finds records
 * by their readable bytes): found by its first address instead. */
static void dev_serve_in(struct work *w, const struct uvh_vq_chain *c)
{
	struct rec *r = NULL;
	uint32_t wlen, k = 0;

	for (unsigned int i = 0; i < w->nrec && !r; i++)
		if (w->recs[i].busy && g2h(&w->g, w->recs[i].bufs[0].gpa, 1) == c->iov[0].iov_base)
			r = &w->recs[i];
	cr_assert_not_null(r, "chain matches no buffer given");
	cr_assert_eq(r->nout, 0);
	cr_assert_eq(c->out_len, 0);
	cr_assert_eq(c->in_len, r->in_len);
	cr_assert_eq(c->ndesc, 1);
	wlen = r->seq % (r->in_len + 1);
	for (unsigned int i = 0; i < c->nin && k < wlen; i++) {
		uint8_t *p = c->iov[i].iov_base;

		for (size_t j = 0; j < c->iov[i].iov_len && k < wlen; j++, k++)
			p[j] = pattern(r->seq, k);
	}
	w->pending[w->npending++] = (struct uvh_vq_used){ .id = c->id, .ndesc = c->ndesc,
							  .len = wlen };
}

/*
 * Add a burst of @k one-buffer chains (all readable or all writable) from
 * free records. All or nothing: with fewer free slots than @k it must fail
 * with -ENOSPC and change nothing. Returns the chains added.
 */
static unsigned int drv_add_burst(struct work *w, unsigned int k, bool writable)
{
	struct uvh_vq_buf bufs[48];
	void *tokens[48];
	struct rec *rs[48];
	uint16_t next_slot = w->drv.next_slot, num_free = w->drv.num_free;
	uint16_t next_id = w->drv.next_id;
	bool wrap = w->drv.avail_wrap;
	unsigned int i, got = 0;
	int rc;

	for (i = 0; i < k; i++) {
		struct rec *r = rec_get(w);
		uint32_t len;

		if (!r)
			break;
		r->busy = true;		/* so rec_get skips it; undone on refusal */
		r->seq = w->seq + got;
		r->indirect = false;
		r->nout = !writable;
		r->nin = writable;
		len = rnd_in(4, SEG_MAX);
		r->bufs[0].gpa = rec_gpa(w, r) + REC_SEG0 + rnd_in(0, 60);
		r->bufs[0].len = len;
		r->out_len = writable ? 0 : len;
		r->in_len = writable ? len : 0;
		if (writable) {
			memset(r->out, 0xee, len);
		} else {
			for (uint32_t j = 0; j < len; j++)
				r->out[j] = (uint8_t)rnd();
			memcpy(r->out, &r->idx, sizeof(r->idx));	/* how dev_serve finds it */
		}
		guest_write(&w->g, r->bufs[0].gpa, r->out, len);
		bufs[got] = r->bufs[0];
		tokens[got] = r;
		rs[got++] = r;
	}
	rc = uvh_vq_driver_add_burst(&w->drv, bufs, got, writable, tokens);
	if (got > num_free) {
		cr_assert_eq(rc, -ENOSPC);
		cr_assert_eq(w->drv.next_slot, next_slot);
		cr_assert_eq(w->drv.avail_wrap, wrap);
		cr_assert_eq(w->drv.num_free, num_free);
		cr_assert_eq(w->drv.next_id, next_id);
		for (i = 0; i < got; i++)
			rs[i]->busy = false;
		return 0;
	}
	cr_assert_eq(rc, 0);
	cr_assert_eq(w->drv.num_free, num_free - got);
	w->seq += got;
	w->submitted += got;
	return got;
}

/*
 * Bursts of one-buffer chains mixed with random multi-buffer chains,
 * completed in random order (ids freed out of order), every byte checked
 * both ways, over many laps of the ring.
 */
static void burst_case(uint16_t size, bool event_idx, uint64_t total, uint64_t seed)
{
	struct work *w = calloc(1, sizeof(*w));
	uint64_t nospc = 0, bursts = 0;

	cr_assert_not_null(w);
	rng_state = seed;
	work_init(w, size, event_idx, false);
	cr_assert_eq(uvh_vq_driver_add_burst(&w->drv, NULL, 0, true, NULL), 0);
	cr_assert_eq(w->drv.num_free, size);
	while (w->completed < total) {
		struct uvh_vq_chain chains[32];
		struct iovec iov[200];
		bool flag;
		int n;

		if (w->submitted < total) {
			if (rnd() % 4 == 0) {
				drv_add(w, 1, total, &flag);
			} else {
				uint64_t left = total - w->submitted;
				unsigned int k = rnd_in(1, 40);

				k = drv_add_burst(w, k < left ? k : (unsigned int)left, rnd() & 1);

				nospc += !k;
				bursts += !!k;
			}
			uvh_vq_driver_publish(&w->drv);
		}
		n = uvh_vq_pop(&w->vq, chains, rnd_in(1, 32), iov, 200);
		cr_assert(!uvh_vq_broken(&w->vq), "broken: %s", uvh_vq_strerror(w->vq.error));
		for (int i = 0; i < n; i++) {
			if (chains[i].nout)
				dev_serve(w, &chains[i]);
			else
				dev_serve_in(w, &chains[i]);
		}
		dev_push(w, &flag);
		drv_collect(w);
	}
	cr_assert_eq(w->vq.popped, w->submitted);
	cr_assert_eq(uvh_vq_driver_free_slots(&w->drv), size);
	cr_assert_gt(bursts, total / 64, "bursts were added");
	cr_assert_gt(nospc, 0, "the all-or-nothing refusal ran");
	cr_assert_geq(total / size, 100);	/* many laps: wrap counters flipped */
	work_fini(w);
	free(w);
}

Test(virtq_packed, add_burst_size64) { burst_case(64, false, 40000, 0xb0b0); }
Test(virtq_packed, add_burst_size100_event_idx) { burst_case(100, true, 40000, 0xcafe); }
