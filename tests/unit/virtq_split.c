/* SPDX-License-Identifier: MIT */
/*
 * Split virtqueue: the driver side and the device side exchange random
 * workloads through memfd guest memory (two regions, buffers spanning
 * both), every byte checked both ways, across many index wraps, with and
 * without EVENT_IDX and indirect tables, with kick/call suppression
 * counted; a two-thread run with eventfds; and a table of hostile rings,
 * each asserting its specific error, on memory fenced by PROT_NONE pages.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "memory.h"
#include "t_helpers.h"
#include "virtq.h"

#define GPA_BASE	0x100000ull
#define REGION		(4ull << 20)	/* two adjacent regions of this size */
#define RING_GPA	GPA_BASE
#define SLOT_BYTES	(16u * 1024u)	/* payload room per chain */
#define MAX_SEG		8
#define IOV_POOL	256

/* ---- guest memory over one memfd, as two adjacent regions --------------- */

struct guest {
	int fd;
	uint8_t *view;		/* the driver's mapping of all of it */
	struct uvh_memory *mem;	/* the device's table (its own mappings) */
};

static void guest_init(struct guest *g)
{
	struct uvh_mem_region r;
	int k;

	g->fd = t_memfd("uvh-vq", 2 * REGION);
	g->view = mmap(NULL, 2 * REGION, PROT_READ | PROT_WRITE, MAP_SHARED, g->fd, 0);
	cr_assert_neq(g->view, MAP_FAILED);
	g->mem = uvh_memory_new(0);
	cr_assert_not_null(g->mem);
	for (k = 0; k < 2; k++) {
		r.guest_phys_addr = GPA_BASE + k * REGION;
		r.memory_size = REGION;
		r.userspace_addr = 0x7f0000000000ull + k * REGION;
		r.mmap_offset = k * REGION;
		cr_assert_eq(uvh_memory_add_fd(g->mem, &r, dup(g->fd)), 0);
	}
}

static void guest_fini(struct guest *g)
{
	uvh_memory_release(g->mem, NULL);
	munmap(g->view, 2 * REGION);
	close(g->fd);
}

static inline uint8_t *gva(struct guest *g, uint64_t gpa)
{
	return g->view + (gpa - GPA_BASE);
}

/* ---- random workload ------------------------------------------------------- */

static uint64_t rng_state;

static uint32_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)rng_state;
}

static uint8_t pattern(uint32_t seq, uint32_t off)
{
	return (uint8_t)(seq * 131u + off * 7u + (off >> 8));
}

/* What the driver gave for one chain (indexed by payload slot). */
struct chain_rec {
	uint32_t seq;
	unsigned int nout, nin;
	struct uvh_vq_buf bufs[MAX_SEG];
	uint32_t out_len, in_len;
	bool busy;
};

struct workload {
	struct guest g;
	struct uvh_vq_driver drv;
	struct uvh_vq vq;
	uint16_t size;
	bool event_idx, indirect;
	struct chain_rec *recs;		/* one per payload slot */
	uint16_t *free_slots;
	unsigned int nfree;
	uint64_t slots_gpa;
	uint32_t seq;
	/* counters */
	uint64_t done, kicks, calls, dev_sleeps, drv_sleeps;
};

static uint64_t slot_gpa(struct workload *w, unsigned int slot)
{
	return w->slots_gpa + (uint64_t)slot * SLOT_BYTES;
}

static void workload_init(struct workload *w, uint16_t size, bool event_idx, bool indirect)
{
	struct uvh_vq_config cfg;
	size_t area = uvh_vq_driver_area_bytes(size, false);
	unsigned int i;

	memset(w, 0, sizeof(*w));
	guest_init(&w->g);
	w->size = size;
	w->event_idx = event_idx;
	w->indirect = indirect;
	cr_assert_eq(uvh_vq_driver_init(&w->drv, size, false, event_idx, gva(&w->g, RING_GPA),
					 RING_GPA), 0);
	w->drv.indirect = indirect;
	/* payload slots start late in region 0 so many buffers straddle
	 * into region 1 */
	w->slots_gpa = GPA_BASE + REGION - 37 * SLOT_BYTES - 1234;
	cr_assert(RING_GPA + area < w->slots_gpa);
	cr_assert(w->slots_gpa + (uint64_t)size * SLOT_BYTES < GPA_BASE + 2 * REGION);
	w->recs = calloc(size, sizeof(*w->recs));
	w->free_slots = calloc(size, sizeof(*w->free_slots));
	for (i = 0; i < size; i++)
		w->free_slots[i] = (uint16_t)(size - 1 - i);
	w->nfree = size;
	uvh_vq_driver_config(&w->drv, &cfg);
	cfg.strict_order = true;
	cr_assert_eq(uvh_vq_init(&w->vq, &cfg, w->g.mem), 0);
}

static void workload_fini(struct workload *w)
{
	uvh_vq_driver_free(&w->drv);
	free(w->recs);
	free(w->free_slots);
	guest_fini(&w->g);
}

/*
 * Add one random chain. With indirect, a multi-buffer chain goes through an
 * indirect table placed at the end of its slot. Returns false when full.
 */
static bool driver_add_one(struct workload *w)
{
	struct chain_rec *c;
	unsigned int slot, i;
	uint64_t at;
	bool use_ind;

	if (!w->nfree)
		return false;
	slot = w->free_slots[w->nfree - 1];
	c = &w->recs[slot];
	c->seq = w->seq;
	c->nout = 1 + rnd() % 4;
	c->nin = rnd() % 5;
	c->out_len = c->in_len = 0;
	at = slot_gpa(w, slot);
	for (i = 0; i < c->nout + c->nin; i++) {
		/* mostly small, sometimes up to a few KiB */
		uint32_t len = (rnd() & 15) ? 1 + rnd() % 64 : 1 + rnd() % 3000, k;

		c->bufs[i].gpa = at;
		c->bufs[i].len = len;
		if (i < c->nout) {
			for (k = 0; k < len; k++)
				*gva(&w->g, at + k) = pattern(c->seq ^ 0x5a5a, k + i * 4096);
			c->out_len += len;
		} else {
			memset(gva(&w->g, at), 0xee, len);
			c->in_len += len;
		}
		at += len;
	}
	use_ind = w->indirect && c->nout + c->nin > 1 && (rnd() & 1);
	if (use_ind) {
		/* table after the buffers, 16-aligned or not (both paths) */
		uint64_t tbl = (at + 15) & ~15ull;
		struct uvh_vring_desc *d;
		struct uvh_vq_buf one;
		uint16_t head = w->drv.free_head;
		unsigned int total = c->nout + c->nin;

		if (rnd() & 1)
			tbl += 8;
		for (i = 0; i < total; i++) {
			struct uvh_vring_desc e = {
				.addr = c->bufs[i].gpa, .len = c->bufs[i].len,
				.flags = (uint16_t)((i >= c->nout ? UVH_VRING_DESC_F_WRITE : 0) |
						    (i + 1 < total ? UVH_VRING_DESC_F_NEXT : 0)),
				.next = (uint16_t)(i + 1),
			};
			memcpy(gva(&w->g, tbl + i * 16), &e, sizeof(e));
		}
		one.gpa = tbl;
		one.len = total * 16;
		if (uvh_vq_driver_add(&w->drv, &one, 1, 0, (void *)(uintptr_t)(slot + 1)) < 0)
			return false;
		d = (struct uvh_vring_desc *)w->drv.desc;
		d[head].flags |= UVH_VRING_DESC_F_INDIRECT;
	} else if (uvh_vq_driver_add(&w->drv, c->bufs, c->nout, c->nin,
				     (void *)(uintptr_t)(slot + 1)) < 0) {
		return false;
	}
	c->busy = true;
	w->nfree--;
	w->seq++;
	return true;
}

/* Device: check the readable bytes, write the pattern into the writable ones. */
static uint32_t device_serve(struct workload *w, const struct uvh_vq_chain *ch)
{
	struct chain_rec *c = NULL;
	uint32_t off = 0, written, k, total = 0;
	unsigned int i, b = 0, slot;
	uint64_t gpa0;
	const uint8_t *hva0;

	/* find the record from the first readable byte's address */
	cr_assert(ch->nout >= 1);
	hva0 = ch->iov[0].iov_base;
	(void)hva0;
	for (slot = 0; slot < w->size; slot++) {
		if (!w->recs[slot].busy)
			continue;
		gpa0 = w->recs[slot].bufs[0].gpa;
		if (uvh_memory_gpa_to_hva(w->g.mem, gpa0, 1, NULL) == ch->iov[0].iov_base) {
			c = &w->recs[slot];
			break;
		}
	}
	cr_assert_not_null(c, "chain matches no buffer given");
	cr_assert_eq(ch->out_len, c->out_len);
	cr_assert_eq(ch->in_len, c->in_len);
	/* readable bytes, segment by segment against the buffers */
	for (i = 0; i < ch->nout; i++) {
		const uint8_t *p = ch->iov[i].iov_base;

		for (k = 0; k < ch->iov[i].iov_len; k++) {
			while (off >= c->bufs[b].len) {
				off = 0;
				b++;
			}
			if (p[k] != pattern(c->seq ^ 0x5a5a, off + b * 4096))
				cr_assert_fail("out byte %u of buffer %u", off, b);
			off++;
			total++;
		}
	}
	cr_assert_eq(total, c->out_len);
	written = c->in_len ? rnd() % (c->in_len + 1) : 0;
	for (i = 0, off = 0; i < ch->nin; i++) {
		uint8_t *p = ch->iov[ch->nout + i].iov_base;

		for (k = 0; k < ch->iov[ch->nout + i].iov_len && off < written; k++, off++)
			p[k] = pattern(c->seq, off);
	}
	return written;
}

static void driver_check(struct workload *w, void *token, uint32_t len)
{
	unsigned int slot = (unsigned int)(uintptr_t)token - 1, i, k;
	struct chain_rec *c;
	uint32_t off = 0;

	cr_assert_lt(slot, w->size);
	c = &w->recs[slot];
	cr_assert(c->busy);
	cr_assert_leq(len, c->in_len);
	for (i = c->nout; i < c->nout + c->nin; i++) {
		const uint8_t *p = gva(&w->g, c->bufs[i].gpa);

		for (k = 0; k < c->bufs[i].len; k++, off++) {
			if (off < len && p[k] != pattern(c->seq, off))
				cr_assert_fail("in byte %u", off);
			if (off >= len && p[k] != 0xee)
				cr_assert_fail("byte %u past the written length", off);
		}
	}
	c->busy = false;
	w->free_slots[w->nfree++] = (uint16_t)slot;
	w->done++;
}

/*
 * Lock-step run of @total chains with sleeping modelled on both sides: a
 * side that finds nothing enables notifications, re-checks, and sleeps;
 * only a kick / call wakes it. Both asleep with work left = a lost
 * notification.
 */
static void run_lockstep(struct workload *w, uint64_t total)
{
	struct uvh_vq_chain chains[32];
	struct iovec iov[IOV_POOL];
	struct uvh_vq_used used[32];
	void *tokens[64];
	uint32_t lens[64];
	bool dev_sleep = true, drv_sleep = false;	/* a device starts waiting for a kick */
	uint64_t added = 0;

	w->dev_sleeps = 1;

	while (w->done < total) {
		/* driver adds a random batch */
		{
			unsigned int want = rnd() % 12, i;
			bool any = false;

			for (i = 0; i < want && added < total; i++) {
				if (!driver_add_one(w))
					break;
				added++;
				any = true;
			}
			if (any) {
				uvh_vq_driver_publish(&w->drv);
				if (uvh_vq_driver_need_kick(&w->drv)) {
					w->kicks++;
					dev_sleep = false;
				}
				cr_assert(!dev_sleep, "kick lost: device asleep with work");
			}
		}
		/* device */
		if (!dev_sleep) {
			int n, i;

			uvh_vq_notify_disable(&w->vq);
			n = uvh_vq_pop(&w->vq, chains, 1 + rnd() % 32, iov, IOV_POOL);
			cr_assert(!uvh_vq_broken(&w->vq), "%s", uvh_vq_strerror(w->vq.error));
			for (i = 0; i < n; i++) {
				used[i].id = chains[i].id;
				used[i].ndesc = chains[i].ndesc;
				used[i].len = device_serve(w, &chains[i]);
			}
			if (n) {
				uvh_vq_push(&w->vq, used, (unsigned int)n);
				if (uvh_vq_need_call(&w->vq)) {
					w->calls++;
					drv_sleep = false;
				}
				cr_assert(!drv_sleep, "call lost: driver asleep with used chains");
			} else if (!uvh_vq_notify_enable(&w->vq)) {
				dev_sleep = true;
				w->dev_sleeps++;
			}
		}
		/* driver collects */
		if (!drv_sleep) {
			unsigned int n, i;

			uvh_vq_driver_enable_cb(&w->drv, false);
			n = uvh_vq_driver_get_used(&w->drv, tokens, lens, 1 + rnd() % 64);
			for (i = 0; i < n; i++)
				driver_check(w, tokens[i], lens[i]);
			if (!n && (added == total || !w->nfree)) {
				uvh_vq_driver_enable_cb(&w->drv, true);
				n = uvh_vq_driver_get_used(&w->drv, tokens, lens, 64);
				for (i = 0; i < n; i++)
					driver_check(w, tokens[i], lens[i]);
				if (!n) {
					drv_sleep = true;
					w->drv_sleeps++;
				}
			}
		}
		cr_assert(!(dev_sleep && drv_sleep && w->done < total &&
			    (added == total || !w->nfree)),
			  "both sides asleep with %llu chains left",
			  (unsigned long long)(total - w->done));
	}
	cr_assert_eq(w->vq.popped, total);
	cr_assert_eq(w->vq.pushed, total);
	cr_assert_eq(uvh_vq_driver_free_slots(&w->drv), w->size);
	/* suppression is exact in lock-step: one kick per device sleep, one
	 * call per driver sleep (plus the first call with EVENT_IDX) */
	cr_assert_eq(w->kicks, w->dev_sleeps - dev_sleep, "kicks %llu sleeps %llu",
		     (unsigned long long)w->kicks, (unsigned long long)w->dev_sleeps);
	cr_assert_leq(w->calls, w->drv_sleeps + 1, "calls %llu sleeps %llu",
		      (unsigned long long)w->calls, (unsigned long long)w->drv_sleeps);
	cr_assert_geq(w->calls, w->drv_sleeps - drv_sleep);
	cr_assert_lt(w->kicks, total / 2, "kicks not suppressed");
}

static void lockstep_case(uint16_t size, bool event_idx, bool indirect, uint64_t total,
			  uint64_t seed)
{
	struct workload w;

	rng_state = seed;
	workload_init(&w, size, event_idx, indirect);
	run_lockstep(&w, total);
	/* wrapped the 16-bit indexes */
	cr_assert_gt(total, 65536u);
	workload_fini(&w);
}

/*
 * uvh_vq_unpop: the last chains of a burst given back unused come again
 * from the next pop (same heads), over many laps of a small ring; every
 * chain still completes, byte-checked, and the base moves back with them.
 */
Test(virtq_split, unpop_then_pop_again)
{
	static struct workload w;
	struct uvh_vq_chain c[8], again[8];
	struct iovec iov[IOV_POOL], iov2[IOV_POOL];
	struct uvh_vq_used used[8];
	void *tok[8];
	uint32_t lens[8];
	uint64_t added = 0;

	rng_state = 31337;
	workload_init(&w, 8, false, false);
	for (int round = 0; round < 3000; round++) {
		unsigned int n, k, m, got;
		uint32_t base;

		while (rnd() % 3 && driver_add_one(&w))
			added++;
		uvh_vq_driver_publish(&w.drv);
		n = (unsigned int)uvh_vq_pop(&w.vq, c, 1 + rnd() % 8, iov, IOV_POOL);
		k = n ? rnd() % (n + 1) : 0;
		base = uvh_vq_base(&w.vq);
		cr_assert_eq(uvh_vq_unpop(&w.vq, c + n - k, k), 0);
		cr_assert_eq(uvh_vq_base(&w.vq), (uint16_t)(base - k));
		m = (unsigned int)uvh_vq_pop(&w.vq, again, k, iov2, IOV_POOL);
		cr_assert_eq(m, k);
		for (unsigned int i = 0; i < k; i++)
			cr_assert_eq(again[i].id, c[n - k + i].id);
		for (unsigned int i = 0; i < n; i++) {
			const struct uvh_vq_chain *ch = i < n - k ? &c[i] : &again[i - (n - k)];

			used[i] = (struct uvh_vq_used){ .id = ch->id, .ndesc = ch->ndesc,
							.len = device_serve(&w, ch) };
		}
		uvh_vq_push(&w.vq, used, n);
		while ((got = uvh_vq_driver_get_used(&w.drv, tok, lens, 8)) > 0)
			for (unsigned int i = 0; i < got; i++)
				driver_check(&w, tok[i], lens[i]);
	}
	cr_assert_gt(w.done, 2000);
	cr_assert_eq(uvh_vq_unpop(&w.vq, c, (unsigned int)(added - w.done) + 1u), -EINVAL);
	workload_fini(&w);
}

Test(virtq_split, random_size8_plain) { lockstep_case(8, false, false, 100000, 0x1234567); }
Test(virtq_split, random_size8_event_idx) { lockstep_case(8, true, false, 100000, 0x7654321); }
Test(virtq_split, random_size256_event_idx_indirect) { lockstep_case(256, true, true, 70000, 99); }
Test(virtq_split, random_size256_plain_indirect) { lockstep_case(256, false, true, 70000, 4242); }

/* ---- two threads, eventfds ------------------------------------------------- */

struct mt {
	struct workload w;
	int kick_fd, call_fd;
	atomic_bool stop;
	uint64_t dev_served;
	const char *failure;
};

static bool wait_fd(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint64_t v;

	if (poll(&p, 1, ms) != 1)
		return false;
	return read(fd, &v, sizeof(v)) == sizeof(v);
}

static void signal_fd(int fd)
{
	uint64_t one = 1;

	cr_assert_eq(write(fd, &one, sizeof(one)), (ssize_t)sizeof(one));
}

static void *device_thread(void *arg)
{
	struct mt *m = arg;
	struct uvh_vq_chain chains[32];
	struct iovec iov[IOV_POOL];
	struct uvh_vq_used used[32];
	int n, i;

	while (!atomic_load(&m->stop)) {
		n = uvh_vq_pop(&m->w.vq, chains, 32, iov, IOV_POOL);
		if (uvh_vq_broken(&m->w.vq)) {
			m->failure = uvh_vq_strerror(m->w.vq.error);
			return NULL;
		}
		if (!n) {
			if (uvh_vq_notify_enable(&m->w.vq))
				continue;
			/* asleep: a kick must come if the driver adds */
			if (!wait_fd(m->kick_fd, 2000) && !atomic_load(&m->stop)) {
				m->failure = "device never kicked";
				return NULL;
			}
			uvh_vq_notify_disable(&m->w.vq);
			continue;
		}
		for (i = 0; i < n; i++) {
			/* no criterion asserts here: only the readable check */
			const uint8_t *p = chains[i].iov[0].iov_base;

			used[i].id = chains[i].id;
			used[i].ndesc = chains[i].ndesc;
			used[i].len = 0;
			if (chains[i].nin) {
				uint8_t *q = chains[i].iov[chains[i].nout].iov_base;

				q[0] = p[0];
				used[i].len = 1;
			}
		}
		uvh_vq_push(&m->w.vq, used, (unsigned int)n);
		m->dev_served += (uint64_t)n;
		if (uvh_vq_need_call(&m->w.vq))
			signal_fd(m->call_fd);
	}
	return NULL;
}

static void mt_case(bool event_idx)
{
	struct mt *m = calloc(1, sizeof(*m));
	struct timespec t0, t1;
	pthread_t th;
	void *tokens[64];
	uint32_t lens[64];
	uint64_t added = 0;
	int fds = t_count_fds();

	rng_state = 77;
	workload_init(&m->w, 64, event_idx, false);
	m->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	m->call_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	cr_assert(m->kick_fd >= 0 && m->call_fd >= 0);
	cr_assert_eq(pthread_create(&th, NULL, device_thread, m), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		unsigned int n, i;
		bool any = false;
		double el;

		clock_gettime(CLOCK_MONOTONIC, &t1);
		el = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
		if (el < 0.5) {
			while (driver_add_one(&m->w)) {
				added++;
				any = true;
			}
		}
		if (any) {
			uvh_vq_driver_publish(&m->w.drv);
			if (uvh_vq_driver_need_kick(&m->w.drv)) {
				m->w.kicks++;
				signal_fd(m->kick_fd);
			}
		}
		n = uvh_vq_driver_get_used(&m->w.drv, tokens, lens, 64);
		for (i = 0; i < n; i++) {
			unsigned int slot = (unsigned int)(uintptr_t)tokens[i] - 1;
			struct chain_rec *c = &m->w.recs[slot];

			cr_assert_eq(lens[i], c->nin ? 1u : 0u);
			if (c->nin)
				cr_assert_eq(*gva(&m->w.g, c->bufs[c->nout].gpa),
					     pattern(c->seq ^ 0x5a5a, 0));
			c->busy = false;
			m->w.free_slots[m->w.nfree++] = (uint16_t)slot;
			m->w.done++;
		}
		if (el >= 0.5 && m->w.done == added)
			break;
		if (n || (el < 0.5 && m->w.nfree))
			continue;
		/* nothing to do: arm the call, re-check, sleep */
		uvh_vq_driver_enable_cb(&m->w.drv, true);
		n = uvh_vq_driver_get_used(&m->w.drv, tokens, lens, 64);
		if (!n) {
			cr_assert(wait_fd(m->call_fd, 2000) || m->failure,
				  "driver never called (%llu of %llu done)",
				  (unsigned long long)m->w.done, (unsigned long long)added);
			if (m->failure)
				break;
		}
		uvh_vq_driver_enable_cb(&m->w.drv, false);
		/* collected chains (if any) are counted on the next turn */
		for (i = 0; i < n; i++) {
			unsigned int slot = (unsigned int)(uintptr_t)tokens[i] - 1;

			m->w.recs[slot].busy = false;
			m->w.free_slots[m->w.nfree++] = (uint16_t)slot;
			m->w.done++;
		}
	}
	atomic_store(&m->stop, true);
	signal_fd(m->kick_fd);
	pthread_join(th, NULL);
	cr_assert_null(m->failure, "%s", m->failure);
	cr_assert_eq(m->w.done, added);
	cr_assert_eq(m->dev_served, added);
	cr_assert_gt(added, 1000u);
	close(m->kick_fd);
	close(m->call_fd);
	workload_fini(&m->w);
	free(m);
	cr_assert_eq(t_count_fds(), fds);
}

Test(virtq_split, two_threads_event_idx) { mt_case(true); }
Test(virtq_split, two_threads_flags) { mt_case(false); }

/* ---- hostile rings ------------------------------------------------------------ */

#define PG		4096u
#define H_GPA		0x40000ull
#define H_PAGES		16u
#define H_SIZE		8u
#define H_DESC		(H_GPA)
#define H_AVAIL		(H_GPA + 0x100)
#define H_USED		(H_GPA + 0x200)
#define H_BUF		(H_GPA + 0x1000)
#define H_TBL		(H_GPA + 0x3000)	/* indirect tables */

struct hostile {
	uint8_t *reserve;	/* guard page, H_PAGES of memory, guard page */
	uint8_t *mem_hva;
	struct uvh_memory *mem;
	struct uvh_vq vq;
	struct uvh_vq_config cfg;
	struct uvh_vring_desc *desc;
	struct uvh_vring_avail *avail;
};

static void h_setup(struct hostile *h)
{
	memset(h, 0, sizeof(*h));
	/* guard pages around the guest memory: a stray access faults */
	h->reserve = mmap(NULL, (H_PAGES + 2) * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(h->reserve, MAP_FAILED);
	h->mem_hva = h->reserve + PG;
	cr_assert_eq(mprotect(h->mem_hva, H_PAGES * PG, PROT_READ | PROT_WRITE), 0);
	h->mem = uvh_memory_new(0);
	cr_assert_eq(uvh_memory_add_host(h->mem, H_GPA, H_PAGES * PG, h->mem_hva), 0);
	h->desc = (void *)(h->mem_hva + (H_DESC - H_GPA));
	h->avail = (void *)(h->mem_hva + (H_AVAIL - H_GPA));
	h->cfg.size = H_SIZE;
	h->cfg.indirect = true;
	h->cfg.strict_order = true;
	h->cfg.desc_gpa = H_DESC;
	h->cfg.driver_gpa = H_AVAIL;
	h->cfg.device_gpa = H_USED;
}

static void h_start(struct hostile *h)
{
	cr_assert_eq(uvh_vq_init(&h->vq, &h->cfg, h->mem), 0);
}

static void h_teardown(struct hostile *h)
{
	uvh_memory_release(h->mem, NULL);
	munmap(h->reserve, (H_PAGES + 2) * PG);
}

static void h_desc(struct hostile *h, unsigned int i, uint64_t addr, uint32_t len, uint16_t flags,
		   uint16_t next)
{
	h->desc[i] = (struct uvh_vring_desc){ .addr = addr, .len = len, .flags = flags,
					      .next = next };
}

static void h_tdesc(unsigned int i, struct hostile *h, uint64_t tbl, uint64_t addr, uint32_t len,
		    uint16_t flags, uint16_t next)
{
	struct uvh_vring_desc *t = (void *)(h->mem_hva + (tbl - H_GPA));

	t[i] = (struct uvh_vring_desc){ .addr = addr, .len = len, .flags = flags, .next = next };
}

static void h_avail(struct hostile *h, uint16_t idx, uint16_t head0)
{
	h->avail->ring[0] = head0;
	h->avail->idx = idx;
}

/* Pop once; expect @count chains and error @err. */
static int h_pop(struct hostile *h, unsigned int iov_max, int count, enum uvh_vq_error err)
{
	struct uvh_vq_chain chains[8];
	struct iovec iov[64];
	int n;

	t_log_capture();
	n = uvh_vq_pop(&h->vq, chains, 8, iov, iov_max);
	cr_assert_eq(n, count, "popped %d, want %d", n, count);
	cr_assert_eq(h->vq.error, err, "error %d (%s), want %d (%s)", h->vq.error,
		     uvh_vq_strerror(h->vq.error), err, uvh_vq_strerror(err));
	if (err != UVH_VQ_OK) {
		cr_assert(t_log_contains(uvh_vq_strerror(err)));
		/* broken stays broken */
		cr_assert_eq(uvh_vq_pop(&h->vq, chains, 8, iov, iov_max), 0);
		cr_assert(!uvh_vq_avail_pending(&h->vq));
		cr_assert(!uvh_vq_notify_enable(&h->vq));
	}
	t_log_reset();
	return n;
}

#define W UVH_VRING_DESC_F_WRITE
#define N UVH_VRING_DESC_F_NEXT
#define I UVH_VRING_DESC_F_INDIRECT

typedef void (*h_case_fn)(struct hostile *h);

struct h_case {
	const char *name;
	h_case_fn build;
	unsigned int iov_max;
	int count;
	enum uvh_vq_error err;
	bool no_indirect_feature;
	bool lax_order;
};

static void c_avail_jump(struct hostile *h)
{
	h_desc(h, 0, H_BUF, 10, 0, 0);
	h_avail(h, H_SIZE + 1, 0);
}

static void c_head_range(struct hostile *h) { h_avail(h, 1, H_SIZE); }

static void c_head_huge(struct hostile *h) { h_avail(h, 1, 0xffff); }

static void c_next_range(struct hostile *h)
{
	h_desc(h, 0, H_BUF, 10, N, H_SIZE);
	h_avail(h, 1, 0);
}

static void c_loop(struct hostile *h)
{
	h_desc(h, 0, H_BUF, 10, N, 1);
	h_desc(h, 1, H_BUF, 10, N, 0);
	h_avail(h, 1, 0);
}

static void c_self_loop(struct hostile *h)
{
	h_desc(h, 3, H_BUF, 10, N | W, 3);
	h_avail(h, 1, 3);
}

static void c_zero_len(struct hostile *h)
{
	/* accepted: contributes no segment */
	h_desc(h, 0, H_BUF, 0, N, 1);
	h_desc(h, 1, H_BUF, 5, 0, 0);
	h_avail(h, 1, 0);
}

static void c_huge_len(struct hostile *h)
{
	h_desc(h, 0, H_BUF, 0xffffffffu, 0, 0);
	h_avail(h, 1, 0);
}

static void c_addr_outside(struct hostile *h)
{
	h_desc(h, 0, 0x10, 16, 0, 0);
	h_avail(h, 1, 0);
}

static void c_addr_past_end(struct hostile *h)
{
	/* starts inside, one byte past the end */
	h_desc(h, 0, H_GPA + H_PAGES * PG - 16, 17, 0, 0);
	h_avail(h, 1, 0);
}

static void c_addr_wrap(struct hostile *h)
{
	h_desc(h, 0, UINT64_MAX - 10, 100, 0, 0);
	h_avail(h, 1, 0);
}

static void c_nested_indirect(struct hostile *h)
{
	h_tdesc(0, h, H_TBL, H_TBL + 0x100, 16, I, 0);
	h_desc(h, 0, H_TBL, 16, I, 0);
	h_avail(h, 1, 0);
}

static void c_ind_size0(struct hostile *h)
{
	h_desc(h, 0, H_TBL, 0, I, 0);
	h_avail(h, 1, 0);
}

static void c_ind_size17(struct hostile *h)
{
	h_desc(h, 0, H_TBL, 17, I, 0);
	h_avail(h, 1, 0);
}

static void c_ind_size24(struct hostile *h)
{
	h_desc(h, 0, H_TBL, 24, I, 0);
	h_avail(h, 1, 0);
}

static void c_ind_too_big(struct hostile *h)
{
	h_desc(h, 0, H_TBL, (UVH_VRING_MAX_SIZE + 1) * 16, I, 0);
	h_avail(h, 1, 0);
}

static void c_ind_outside(struct hostile *h)
{
	h_desc(h, 0, H_GPA + H_PAGES * PG - 16, 32, I, 0);
	h_avail(h, 1, 0);
}

static void c_ind_loop(struct hostile *h)
{
	h_tdesc(0, h, H_TBL, H_BUF, 8, N, 1);
	h_tdesc(1, h, H_TBL, H_BUF, 8, N, 0);
	h_desc(h, 0, H_TBL, 32, I, 0);
	h_avail(h, 1, 0);
}

static void c_ind_next_range(struct hostile *h)
{
	/* next 2 is inside the descriptor table, outside this table of 2 */
	h_tdesc(0, h, H_TBL, H_BUF, 8, N, 2);
	h_desc(h, 0, H_TBL, 32, I, 0);
	h_avail(h, 1, 0);
}

static void c_ind_buf_outside(struct hostile *h)
{
	h_tdesc(0, h, H_TBL, 0xdead0000ull, 8, 0, 0);
	h_desc(h, 0, H_TBL, 16, I, 0);
	h_avail(h, 1, 0);
}

static void c_write_order(struct hostile *h)
{
	h_desc(h, 0, H_BUF, 10, N | W, 1);
	h_desc(h, 1, H_BUF + 64, 10, 0, 0);
	h_avail(h, 1, 0);
}

static void c_write_order_ind(struct hostile *h)
{
	h_tdesc(0, h, H_TBL, H_BUF, 8, N | W, 1);
	h_tdesc(1, h, H_TBL, H_BUF + 64, 8, 0, 0);
	h_desc(h, 0, H_TBL, 32, I, 0);
	h_avail(h, 1, 0);
}

static void c_too_many(struct hostile *h)
{
	unsigned int i;

	for (i = 0; i < 5; i++)
		h_desc(h, i, H_BUF + i * 16, 8, (uint16_t)(i < 4 ? N : 0), (uint16_t)(i + 1));
	h_avail(h, 1, 0);
}

static void c_len_overflow(struct hostile *h)
{
	/* three 2 GiB writable buffers in a big (never touched) region */
	cr_assert_eq(uvh_memory_add_host(h->mem, 1ull << 40, 8ull << 30, (void *)(uintptr_t)PG), 0);
	h_desc(h, 0, 1ull << 40, 0x80000000u, N | W, 1);
	h_desc(h, 1, (1ull << 40) + (2ull << 30), 0x80000000u, N | W, 2);
	h_desc(h, 2, (1ull << 40) + (4ull << 30), 0x80000000u, W, 0);
	h_avail(h, 1, 0);
}

static void c_good_then_bad(struct hostile *h)
{
	h_desc(h, 0, H_BUF, 10, 0, 0);
	h_desc(h, 1, H_BUF, 10, W, 0);
	h_desc(h, 2, 0x10, 10, 0, 0);
	h->avail->ring[0] = 0;
	h->avail->ring[1] = 1;
	h->avail->ring[2] = 2;
	h->avail->idx = 3;
}

static void c_second_does_not_fit(struct hostile *h)
{
	/* 1 segment then 5: with 4 iovecs the second waits for the next burst */
	c_too_many(h);
	h_desc(h, 6, H_BUF, 8, 0, 0);
	h->avail->ring[0] = 6;
	h->avail->ring[1] = 0;
	h->avail->idx = 2;
}

static void c_lax_order(struct hostile *h) { c_write_order(h); }

static const struct h_case h_cases[] = {
	{ "avail idx jump", c_avail_jump, 64, 0, UVH_VQ_ERR_AVAIL_IDX, false, false },
	{ "head >= size", c_head_range, 64, 0, UVH_VQ_ERR_DESC_INDEX, false, false },
	{ "head 0xffff", c_head_huge, 64, 0, UVH_VQ_ERR_DESC_INDEX, false, false },
	{ "next >= size", c_next_range, 64, 0, UVH_VQ_ERR_DESC_INDEX, false, false },
	{ "loop a->b->a", c_loop, 64, 0, UVH_VQ_ERR_CHAIN_LOOP, false, false },
	{ "self loop", c_self_loop, 64, 0, UVH_VQ_ERR_CHAIN_LOOP, false, false },
	{ "zero length ok", c_zero_len, 64, 1, UVH_VQ_OK, false, false },
	{ "huge length", c_huge_len, 64, 0, UVH_VQ_ERR_DESC_ADDR, false, false },
	{ "address outside", c_addr_outside, 64, 0, UVH_VQ_ERR_DESC_ADDR, false, false },
	{ "one byte past end", c_addr_past_end, 64, 0, UVH_VQ_ERR_DESC_ADDR, false, false },
	{ "address+len wraps", c_addr_wrap, 64, 0, UVH_VQ_ERR_DESC_ADDR, false, false },
	{ "nested indirect", c_nested_indirect, 64, 0, UVH_VQ_ERR_NESTED_INDIRECT, false, false },
	{ "indirect size 0", c_ind_size0, 64, 0, UVH_VQ_ERR_INDIRECT_SIZE, false, false },
	{ "indirect size 17", c_ind_size17, 64, 0, UVH_VQ_ERR_INDIRECT_SIZE, false, false },
	{ "indirect size 24", c_ind_size24, 64, 0, UVH_VQ_ERR_INDIRECT_SIZE, false, false },
	{ "indirect too big", c_ind_too_big, 64, 0, UVH_VQ_ERR_INDIRECT_SIZE, false, false },
	{ "indirect table outside", c_ind_outside, 64, 0, UVH_VQ_ERR_DESC_ADDR, false, false },
	{ "indirect loop", c_ind_loop, 64, 0, UVH_VQ_ERR_CHAIN_LOOP, false, false },
	{ "indirect next range", c_ind_next_range, 64, 0, UVH_VQ_ERR_DESC_INDEX, false, false },
	{ "indirect buffer outside", c_ind_buf_outside, 64, 0, UVH_VQ_ERR_DESC_ADDR, false, false },
	{ "indirect w/o feature", c_ind_size17, 64, 0, UVH_VQ_ERR_INDIRECT_FEATURE, true, false },
	{ "write before read", c_write_order, 64, 0, UVH_VQ_ERR_WRITE_ORDER, false, false },
	{ "write before read ind", c_write_order_ind, 64, 0, UVH_VQ_ERR_WRITE_ORDER, false, false },
	{ "write before read lax", c_lax_order, 64, 1, UVH_VQ_OK, false, true },
	{ "too many segments", c_too_many, 4, 0, UVH_VQ_ERR_TOO_MANY_SEGMENTS, false, false },
	{ "second chain waits", c_second_does_not_fit, 4, 1, UVH_VQ_OK, false, false },
	{ "length overflow", c_len_overflow, 64, 0, UVH_VQ_ERR_LEN_OVERFLOW, false, false },
	{ "good chains then bad", c_good_then_bad, 64, 2, UVH_VQ_ERR_DESC_ADDR, false, false },
};

Test(virtq_split, hostile_table)
{
	size_t i;

	for (i = 0; i < sizeof(h_cases) / sizeof(h_cases[0]); i++) {
		const struct h_case *c = &h_cases[i];
		struct hostile h;

		cr_log_info("hostile case: %s", c->name);
		h_setup(&h);
		if (c->no_indirect_feature)
			h.cfg.indirect = false;
		if (c->lax_order)
			h.cfg.strict_order = false;
		c->build(&h);
		h_start(&h);
		h_pop(&h, c->iov_max, c->count, c->err);
		h_teardown(&h);
	}
}

Test(virtq_split, lax_order_puts_readable_first)
{
	struct uvh_vq_chain ch;
	struct iovec iov[8];
	struct hostile h;

	h_setup(&h);
	h.cfg.strict_order = false;
	h_desc(&h, 0, H_BUF, 10, N | W, 1);
	h_desc(&h, 1, H_BUF + 64, 20, N, 2);
	h_desc(&h, 2, H_BUF + 128, 30, N | W, 3);
	h_desc(&h, 3, H_BUF + 192, 40, 0, 0);
	h_avail(&h, 1, 0);
	h_start(&h);
	cr_assert_eq(uvh_vq_pop(&h.vq, &ch, 1, iov, 8), 1);
	cr_assert_eq(ch.nout, 2);
	cr_assert_eq(ch.nin, 2);
	cr_assert_eq(ch.out_len, 60);
	cr_assert_eq(ch.in_len, 40);
	/* readable in chain order, then writable in chain order */
	cr_assert_eq(ch.iov[0].iov_len, 20);
	cr_assert_eq(ch.iov[1].iov_len, 40);
	cr_assert_eq(ch.iov[2].iov_len, 10);
	cr_assert_eq(ch.iov[3].iov_len, 30);
	cr_assert_eq(ch.iov[0].iov_base, h.mem_hva + 0x1000 + 64);
	h_teardown(&h);
}

Test(virtq_split, second_chain_comes_next_burst)
{
	struct uvh_vq_chain ch[2];
	struct iovec iov[4];
	struct hostile h;

	h_setup(&h);
	c_second_does_not_fit(&h);
	h_start(&h);
	cr_assert_eq(uvh_vq_pop(&h.vq, ch, 2, iov, 4), 1);
	cr_assert_eq(ch[0].id, 6);
	cr_assert_eq(uvh_vq_pop(&h.vq, ch, 2, iov + 1, 3), 0);
	cr_assert_eq(h.vq.error, UVH_VQ_ERR_TOO_MANY_SEGMENTS);
	h_teardown(&h);
}

Test(virtq_split, ring_areas_checked_at_init)
{
	static const struct {
		uint64_t desc, avail, used;
		int ret;
	} cases[] = {
		{ 0x10, H_AVAIL, H_USED, -EFAULT },			/* desc outside */
		{ H_DESC, H_GPA + H_PAGES * PG - 8, H_USED, -EFAULT },	/* avail runs off */
		{ H_DESC, H_AVAIL, H_GPA + H_PAGES * PG - 32, -EFAULT },	/* used runs off */
		{ H_DESC + 8, H_AVAIL, H_USED, -EFAULT },		/* desc misaligned */
		{ H_DESC, H_AVAIL + 1, H_USED, -EFAULT },		/* avail misaligned */
		{ H_DESC, H_AVAIL, H_USED + 2, -EFAULT },		/* used misaligned */
		{ UINT64_MAX - 64, H_AVAIL, H_USED, -EFAULT },		/* wraps */
		{ H_DESC, H_AVAIL, H_USED, 0 },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct hostile h;

		h_setup(&h);
		h.cfg.desc_gpa = cases[i].desc;
		h.cfg.driver_gpa = cases[i].avail;
		h.cfg.device_gpa = cases[i].used;
		cr_assert_eq(uvh_vq_init(&h.vq, &h.cfg, h.mem), cases[i].ret, "case %zu", i);
		cr_assert_eq(h.vq.error, cases[i].ret ? UVH_VQ_ERR_RING_ADDR : UVH_VQ_OK);
		h_teardown(&h);
	}
}

Test(virtq_split, bad_sizes)
{
	struct hostile h;

	h_setup(&h);
	h.cfg.size = 0;
	cr_assert_eq(uvh_vq_init(&h.vq, &h.cfg, h.mem), -EINVAL);
	h.cfg.size = 6;
	cr_assert_eq(uvh_vq_init(&h.vq, &h.cfg, h.mem), -EINVAL);
	h.cfg.size = H_SIZE;
	cr_assert_eq(uvh_vq_init(&h.vq, &h.cfg, h.mem), 0);
	h_teardown(&h);
}

Test(virtq_split, indirect_table_spanning_regions)
{
	struct guest g;
	struct uvh_vq_driver drv;
	struct uvh_vq_config cfg;
	struct uvh_vq vq;
	struct uvh_vq_chain ch;
	struct iovec iov[8];
	struct uvh_vq_buf one;
	uint64_t tbl = GPA_BASE + REGION - 24;	/* entry 1 straddles */
	struct uvh_vring_desc e[3] = {
		{ .addr = GPA_BASE + 0x20000, .len = 100, .flags = N, .next = 1 },
		{ .addr = GPA_BASE + REGION - 50, .len = 100, .flags = N | W, .next = 2 },
		{ .addr = GPA_BASE + 0x30000, .len = 7, .flags = W, .next = 0 },
	};
	uint16_t head;

	guest_init(&g);
	memcpy(gva(&g, tbl), e, sizeof(e));
	cr_assert_eq(uvh_vq_driver_init(&drv, 16, false, false, gva(&g, RING_GPA), RING_GPA), 0);
	drv.indirect = true;
	uvh_vq_driver_config(&drv, &cfg);
	cr_assert_eq(uvh_vq_init(&vq, &cfg, g.mem), 0);
	head = drv.free_head;
	one.gpa = tbl;
	one.len = sizeof(e);
	cr_assert_eq(uvh_vq_driver_add(&drv, &one, 1, 0, &g), 0);
	((struct uvh_vring_desc *)drv.desc)[head].flags |= I;
	uvh_vq_driver_publish(&drv);
	cr_assert_eq(uvh_vq_pop(&vq, &ch, 1, iov, 8), 1);
	cr_assert_eq(ch.nout, 1);
	cr_assert_eq(ch.nin, 3);	/* the middle buffer splits in two */
	cr_assert_eq(ch.out_len, 100);
	cr_assert_eq(ch.in_len, 107);
	cr_assert_eq(ch.iov[1].iov_len, 50);
	cr_assert_eq(ch.iov[2].iov_len, 50);
	uvh_vq_driver_free(&drv);
	guest_fini(&g);
}

Test(virtq_split, dirty_log_marks_used_ring_and_buffers)
{
	struct guest g;
	struct uvh_vq_driver drv;
	struct uvh_vq_config cfg;
	struct uvh_vq vq;
	struct uvh_vq_chain ch;
	struct uvh_vq_used u;
	struct iovec iov[8];
	struct uvh_dirty_log log = { 0 };
	struct uvh_vq_buf b[2] = { { GPA_BASE + 0x10000, 16 }, { GPA_BASE + 0x21ff0, 0x2000 } };
	uint64_t pages = (GPA_BASE + 2 * REGION) / PG;
	int fd = t_memfd("uvh-log", pages / 8 + 1);
	uint64_t p;

	guest_init(&g);
	cr_assert_eq(uvh_dirty_log_map(&log, fd, pages / 8 + 1, 0), 0);
	cr_assert_eq(uvh_vq_driver_init(&drv, 16, false, false, gva(&g, RING_GPA), RING_GPA), 0);
	uvh_vq_driver_config(&drv, &cfg);
	cfg.log_used = true;
	cfg.log_used_gpa = drv.device_gpa;
	cr_assert_eq(uvh_vq_init(&vq, &cfg, g.mem), 0);
	cr_assert_eq(uvh_vq_driver_add(&drv, b, 1, 1, &g), 0);
	uvh_vq_driver_publish(&drv);
	uvh_vq_set_log(&vq, &log);
	cr_assert_eq(uvh_vq_pop(&vq, &ch, 1, iov, 8), 1);
	u.id = ch.id;
	u.ndesc = ch.ndesc;
	u.len = 0x11;	/* 16 bytes to page 0x121, 1 byte to page 0x122 */
	uvh_vq_push(&vq, &u, 1);
	for (p = 0; p < pages; p++) {
		bool set = log.bitmap[p / 8] & (1u << (p % 8));
		bool want = p == drv.device_gpa / PG || p == 0x121 || p == 0x122;

		cr_assert_eq(set, want, "page %#llx", (unsigned long long)p);
	}
	uvh_dirty_log_unmap(&log);
	uvh_vq_driver_free(&drv);
	guest_fini(&g);
}

Test(virtq_split, base_and_pending)
{
	struct workload w;
	struct uvh_vq_chain ch[4];
	struct iovec iov[64];

	rng_state = 5;
	workload_init(&w, 8, true, false);
	cr_assert(!uvh_vq_avail_pending(&w.vq));
	cr_assert(driver_add_one(&w));
	cr_assert(!uvh_vq_avail_pending(&w.vq));	/* not published yet */
	uvh_vq_driver_publish(&w.drv);
	cr_assert(uvh_vq_avail_pending(&w.vq));
	cr_assert(uvh_vq_notify_enable(&w.vq));		/* work there: don't sleep */
	cr_assert_eq(uvh_vq_pop(&w.vq, ch, 4, iov, 64), 1);
	cr_assert_eq(uvh_vq_base(&w.vq), 1);
	cr_assert(!uvh_vq_notify_enable(&w.vq));
	workload_fini(&w);
}

/* ---- uvh_vq_driver_add_burst ----------------------------------------------- */

/* Device side for a chain of writable buffers only (device_serve wants a
 * readable part): found by its first address, filled with the pattern. */
static uint32_t device_serve_in(struct workload *w, const struct uvh_vq_chain *ch)
{
	struct chain_rec *c = NULL;
	uint32_t written, off = 0, k;
	unsigned int slot, i;

	for (slot = 0; slot < w->size && !c; slot++)
		if (w->recs[slot].busy &&
		    uvh_memory_gpa_to_hva(w->g.mem, w->recs[slot].bufs[0].gpa, 1, NULL) ==
			    ch->iov[0].iov_base)
			c = &w->recs[slot];
	cr_assert_not_null(c, "chain matches no buffer given");
	cr_assert_eq(c->nout, 0);
	cr_assert_eq(ch->in_len, c->in_len);
	cr_assert_eq(ch->out_len, 0);
	cr_assert_eq(ch->ndesc, 1);
	written = rnd() % (c->in_len + 1);
	for (i = 0; i < ch->nin; i++) {
		uint8_t *p = ch->iov[i].iov_base;

		for (k = 0; k < ch->iov[i].iov_len && off < written; k++, off++)
			p[k] = pattern(c->seq, off);
	}
	return written;
}

/*
 * Add a burst of @k one-buffer chains (all readable or all writable) from
 * the free records. All or nothing: with fewer free descriptors than @k it
 * must fail with -ENOSPC and change nothing. Returns the chains added.
 */
static unsigned int driver_add_burst(struct workload *w, unsigned int k, bool writable)
{
	struct uvh_vq_buf bufs[48];
	void *tokens[48];
	uint16_t free_head = w->drv.free_head, num_free = w->drv.num_free;
	uint16_t avail_idx = w->drv.avail_idx;
	unsigned int i;
	int rc;

	if (k > w->nfree)
		k = w->nfree;
	for (i = 0; i < k; i++) {
		unsigned int slot = w->free_slots[w->nfree - 1 - i];
		struct chain_rec *c = &w->recs[slot];
		uint32_t len = (rnd() & 7) ? 1 + rnd() % 64 : 1 + rnd() % 3000, j;

		c->seq = w->seq + i;
		c->nout = !writable;
		c->nin = writable;
		c->bufs[0].gpa = slot_gpa(w, slot) + rnd() % 16;
		c->bufs[0].len = len;
		c->out_len = writable ? 0 : len;
		c->in_len = writable ? len : 0;
		if (writable)
			memset(gva(&w->g, c->bufs[0].gpa), 0xee, len);
		else
			for (j = 0; j < len; j++)
				*gva(&w->g, c->bufs[0].gpa + j) = pattern(c->seq ^ 0x5a5a, j);
		bufs[i] = c->bufs[0];
		tokens[i] = (void *)(uintptr_t)(slot + 1);
	}
	rc = uvh_vq_driver_add_burst(&w->drv, bufs, k, writable, tokens);
	if (k > num_free) {
		cr_assert_eq(rc, -ENOSPC);
		cr_assert_eq(w->drv.free_head, free_head);
		cr_assert_eq(w->drv.num_free, num_free);
		cr_assert_eq(w->drv.avail_idx, avail_idx);
		return 0;
	}
	cr_assert_eq(rc, 0);
	cr_assert_eq(w->drv.num_free, num_free - k);
	cr_assert_eq(w->drv.avail_idx, (uint16_t)(avail_idx + k));
	for (i = 0; i < k; i++)
		w->recs[w->free_slots[w->nfree - 1 - i]].busy = true;
	w->nfree -= k;
	w->seq += k;
	return k;
}

/*
 * Bursts of one-buffer chains mixed with random multi-buffer chains (so
 * the free list gets shuffled), completed in random order, every byte
 * checked both ways, over several wraps of the 16-bit indexes.
 */
static void burst_case(uint16_t size, bool event_idx, uint64_t total, uint64_t seed)
{
	struct uvh_vq_chain chains[32];
	struct iovec iov[IOV_POOL];
	struct uvh_vq_used used[32];
	void *tokens[64];
	uint32_t lens[64];
	uint64_t added = 0, nospc = 0, bursts = 0;
	struct workload w;

	rng_state = seed;
	workload_init(&w, size, event_idx, false);
	/* nothing to add is not an error and changes nothing */
	cr_assert_eq(uvh_vq_driver_add_burst(&w.drv, NULL, 0, false, NULL), 0);
	cr_assert_eq(w.drv.num_free, size);
	while (w.done < total) {
		unsigned int k, n, i;
		int got;

		if (added < total) {
			if (rnd() % 4 == 0) {
				added += driver_add_one(&w);
			} else {
				k = 1 + rnd() % 40;
				if (k > total - added)
					k = (unsigned int)(total - added);
				k = driver_add_burst(&w, k, rnd() & 1);
				nospc += !k;
				bursts += !!k;
				added += k;
			}
			uvh_vq_driver_publish(&w.drv);
		}
		got = uvh_vq_pop(&w.vq, chains, 1 + rnd() % 32, iov, IOV_POOL);
		cr_assert(!uvh_vq_broken(&w.vq), "%s", uvh_vq_strerror(w.vq.error));
		for (i = 0; i < (unsigned int)got; i++) {
			used[i].id = chains[i].id;
			used[i].ndesc = chains[i].ndesc;
			used[i].len = chains[i].nout ? device_serve(&w, &chains[i])
						     : device_serve_in(&w, &chains[i]);
		}
		/* sometimes out of order: frees interleave in the list */
		for (i = got > 1 && (rnd() & 1) ? (unsigned int)got - 1 : 0; i > 0; i--) {
			unsigned int j = rnd() % (i + 1);
			struct uvh_vq_used t = used[i];

			used[i] = used[j];
			used[j] = t;
		}
		if (got)
			uvh_vq_push(&w.vq, used, (unsigned int)got);
		n = uvh_vq_driver_get_used(&w.drv, tokens, lens, 1 + rnd() % 64);
		for (i = 0; i < n; i++)
			driver_check(&w, tokens[i], lens[i]);
	}
	cr_assert_eq(added, total);
	cr_assert_eq(w.vq.popped, total);
	cr_assert_eq(uvh_vq_driver_free_slots(&w.drv), size);
	cr_assert_gt(bursts, total / 64, "bursts were added");
	cr_assert_gt(nospc, 0, "the all-or-nothing refusal ran");
	cr_assert_gt(total, 65536u);	/* wrapped the 16-bit indexes */
	workload_fini(&w);
}

Test(virtq_split, add_burst_size64) { burst_case(64, false, 70000, 0xb0b0); }
Test(virtq_split, add_burst_size256_event_idx) { burst_case(256, true, 70000, 0xcafe); }

/* ---- IOTLB (VIRTIO_F_IOMMU_PLATFORM), split and packed ---------------------- */

/*
 * The driver puts IOVAs everywhere (ring areas and buffers); the cache maps
 * them onto the front-end virtual addresses of the memfd guest, at an
 * address that is neither the GPA nor the uva. Buffers cross the boundary
 * of the two memory regions.
 */
#define IO_IOVA		0x40000000ull
#define IO_RING_OFF	0x1000ull	/* ring area, from the start of guest memory */
#define IO_BUF_OFF	(REGION - 0x800)	/* buffers start here: cross the regions */
#define IO_SIZE		16

struct io_case {
	struct guest g;
	struct uvh_iotlb_cache *cache;
	struct uvh_vq_driver drv;
	struct uvh_vq vq;
	struct iovec iov[32];
	struct uvh_vq_chain ch[4];
	unsigned int misses, fails;
	uint64_t last_iova;
	uint8_t last_perm;
	int fds;
};

static void io_cb(void *opaque, struct uvh_vq *vq, uint64_t iova, uint8_t perm, uint8_t type)
{
	struct io_case *c = opaque;

	cr_assert_eq(vq, &c->vq);
	if (type == UVH_IOTLB_MISS)
		c->misses++;
	else if (type == UVH_IOTLB_ACCESS_FAIL)
		c->fails++;
	else
		cr_assert_fail("iotlb callback type %u", type);
	c->last_iova = iova;
	c->last_perm = perm;
}

static void io_map(struct io_case *c, uint64_t off, uint64_t size, uint8_t perm)
{
	struct uvh_iotlb m = {
		.iova = IO_IOVA + off, .size = size, .uaddr = 0x7f0000000000ull + off,
		.perm = perm, .type = UVH_IOTLB_UPDATE,
	};

	cr_assert_eq(uvh_iotlb_apply(c->cache, &m), 0);
}

/* Lay the ring out at IOVA IO_IOVA + IO_RING_OFF (the device not started). */
static void io_prepare(struct io_case *c, bool packed)
{
	memset(c, 0, sizeof(*c));
	c->fds = t_count_fds();
	guest_init(&c->g);
	c->cache = uvh_iotlb_new(0);
	cr_assert_not_null(c->cache);
	cr_assert_eq(uvh_vq_driver_init(&c->drv, IO_SIZE, packed, false,
					gva(&c->g, GPA_BASE + IO_RING_OFF), IO_IOVA + IO_RING_OFF), 0);
}

static int io_start(struct io_case *c)
{
	struct uvh_vq_config cfg;

	uvh_vq_driver_config(&c->drv, &cfg);
	cfg.iotlb = c->cache;
	cfg.iotlb_miss = io_cb;
	cfg.iotlb_opaque = c;
	return uvh_vq_init(&c->vq, &cfg, c->g.mem);
}

static void io_teardown(struct io_case *c)
{
	uvh_vq_driver_free(&c->drv);
	uvh_iotlb_free(c->cache);
	guest_fini(&c->g);
	cr_assert_eq(t_count_fds(), c->fds, "fd leak");
}

/* Post one chain: @rlen readable bytes at buffer offset 0 (filled with a
 * pattern), @wlen writable bytes right after. */
static void io_post(struct io_case *c, uint32_t rlen, uint32_t wlen)
{
	struct uvh_vq_buf b[2] = {
		{ .gpa = IO_IOVA + IO_BUF_OFF, .len = rlen },
		{ .gpa = IO_IOVA + IO_BUF_OFF + rlen, .len = wlen },
	};
	uint32_t i;

	for (i = 0; i < rlen; i++)
		*gva(&c->g, GPA_BASE + IO_BUF_OFF + i) = pattern(7, i);
	memset(gva(&c->g, GPA_BASE + IO_BUF_OFF + rlen), 0, wlen);
	cr_assert_eq(uvh_vq_driver_add(&c->drv, b, 1, 1, c), 0);
	uvh_vq_driver_publish(&c->drv);
}

/* Serve one popped chain: check the readable bytes, write the writable
 * ones, push; the driver sees it used and finds the bytes in its memory. */
static void io_serve(struct io_case *c, uint32_t rlen, uint32_t wlen)
{
	const struct uvh_vq_chain *ch = &c->ch[0];
	struct uvh_vq_used u;
	uint32_t off = 0, len, i;
	unsigned int k;
	void *tok;

	cr_assert_eq(ch->out_len, rlen);
	cr_assert_eq(ch->in_len, wlen);
	/* crossing the region boundary: more than one iovec each way */
	cr_assert_gt(ch->nout + ch->nin, 2);
	for (k = 0; k < ch->nout; k++) {
		const uint8_t *p = ch->iov[k].iov_base;

		for (i = 0; i < ch->iov[k].iov_len; i++, off++)
			cr_assert_eq(p[i], pattern(7, off), "readable byte %u", off);
	}
	off = 0;
	for (k = ch->nout; k < (unsigned int)ch->nout + ch->nin; k++) {
		uint8_t *p = ch->iov[k].iov_base;

		for (i = 0; i < ch->iov[k].iov_len; i++, off++)
			p[i] = pattern(9, off);
	}
	u = (struct uvh_vq_used){ .id = ch->id, .ndesc = ch->ndesc, .len = wlen };
	uvh_vq_push(&c->vq, &u, 1);
	cr_assert_eq(uvh_vq_driver_get_used(&c->drv, &tok, &len, 1), 1);
	cr_assert_eq(tok, c);
	cr_assert_eq(len, wlen);
	for (i = 0; i < wlen; i++)
		cr_assert_eq(*gva(&c->g, GPA_BASE + IO_BUF_OFF + rlen + i), pattern(9, i),
			     "written byte %u", i);
}

static int io_pop(struct io_case *c)
{
	return uvh_vq_pop(&c->vq, c->ch, 4, c->iov, 32);
}

/* Rings and buffers mapped (two entries, the boundary inside a buffer):
 * chains flow, bytes check, nothing is reported. */
static void io_flow(bool packed)
{
	struct io_case c;
	int round;

	io_prepare(&c, packed);
	io_map(&c, 0, IO_BUF_OFF + 0x100, UVH_IOTLB_RW);
	io_map(&c, IO_BUF_OFF + 0x100, 0x10000, UVH_IOTLB_RW);
	cr_assert_eq(io_start(&c), 0);
	for (round = 0; round < 3 * IO_SIZE; round++) {
		io_post(&c, 0x600, 0x700);
		cr_assert_eq(io_pop(&c), 1, "round %d", round);
		io_serve(&c, 0x600, 0x700);
	}
	cr_assert_eq(io_pop(&c), 0);
	cr_assert_not(uvh_vq_broken(&c.vq));
	cr_assert_eq(c.misses + c.fails, 0);
	io_teardown(&c);
}

/* A buffer's IOVA not cached: pop takes nothing, reports the IOVA once,
 * leaves the chain available and the ring working; after the update the
 * chain flows. */
static void io_miss(bool packed)
{
	struct io_case c;

	io_prepare(&c, packed);
	io_map(&c, 0, IO_BUF_OFF + 0x100, UVH_IOTLB_RW);
	cr_assert_eq(io_start(&c), 0);
	io_post(&c, 0x600, 0x700);
	cr_assert_eq(io_pop(&c), 0);
	cr_assert_eq(c.misses, 1);
	cr_assert_eq(c.last_iova, IO_IOVA + IO_BUF_OFF + 0x100);
	cr_assert_eq(c.last_perm, UVH_IOTLB_RO);
	cr_assert_not(uvh_vq_broken(&c.vq));
	cr_assert(uvh_vq_avail_pending(&c.vq));
	/* swept again before the answer: not asked twice */
	cr_assert_eq(io_pop(&c), 0);
	cr_assert_eq(c.misses, 1);
	/* the readable part arrives; the writable part misses next */
	io_map(&c, IO_BUF_OFF + 0x100, 0x500, UVH_IOTLB_RO);
	cr_assert_eq(io_pop(&c), 0);
	cr_assert_eq(c.misses, 2);
	cr_assert_eq(c.last_iova, IO_IOVA + IO_BUF_OFF + 0x600);
	cr_assert_eq(c.last_perm, UVH_IOTLB_WO);
	io_map(&c, IO_BUF_OFF + 0x600, 0x1000, UVH_IOTLB_WO);
	cr_assert_eq(io_pop(&c), 1);
	io_serve(&c, 0x600, 0x700);
	cr_assert_eq(c.fails, 0);
	cr_assert_not(uvh_vq_broken(&c.vq));
	io_teardown(&c);
}

/* The ring areas themselves not cached at start: no error, the miss is
 * reported, the queue idles; once the update is in, it runs. */
static void io_ring_miss(bool packed)
{
	struct io_case c;

	io_prepare(&c, packed);
	cr_assert_eq(io_start(&c), 0);
	cr_assert_not(uvh_vq_broken(&c.vq));
	cr_assert_eq(c.misses, 1);
	cr_assert_eq(c.last_iova, IO_IOVA + IO_RING_OFF);
	io_post(&c, 0x600, 0x700);
	cr_assert_not(uvh_vq_avail_pending(&c.vq));
	cr_assert_eq(io_pop(&c), 0);
	cr_assert_eq(c.misses, 1);
	io_map(&c, 0, 2 * REGION, UVH_IOTLB_RW);
	cr_assert(uvh_vq_avail_pending(&c.vq));
	cr_assert_eq(io_pop(&c), 1);
	io_serve(&c, 0x600, 0x700);
	cr_assert_eq(c.misses, 1);
	io_teardown(&c);
}

/* A writable buffer mapped read-only: the ring breaks with
 * UVH_VQ_ERR_IOTLB and the failure is reported as ACCESS_FAIL. */
static void io_perm(bool packed)
{
	struct io_case c;

	io_prepare(&c, packed);
	io_map(&c, 0, IO_BUF_OFF, UVH_IOTLB_RW);
	io_map(&c, IO_BUF_OFF, 0x10000, UVH_IOTLB_RO);
	cr_assert_eq(io_start(&c), 0);
	io_post(&c, 0x600, 0x700);
	cr_assert_eq(io_pop(&c), 0);
	cr_assert(uvh_vq_broken(&c.vq));
	cr_assert_eq(c.vq.error, UVH_VQ_ERR_IOTLB);
	cr_assert_eq(c.fails, 1);
	cr_assert_eq(c.misses, 0);
	cr_assert_eq(c.last_iova, IO_IOVA + IO_BUF_OFF + 0x600);
	cr_assert_eq(c.last_perm, UVH_IOTLB_WO);
	/* and it stays broken, even once the mapping is fixed */
	io_map(&c, IO_BUF_OFF, 0x10000, UVH_IOTLB_RW);
	cr_assert_eq(io_pop(&c), 0);
	io_teardown(&c);
}

/* A ring area mapped without the permission the device needs. */
static void io_ring_perm(bool packed)
{
	struct io_case c;

	io_prepare(&c, packed);
	io_map(&c, 0, 2 * REGION, UVH_IOTLB_RO);
	cr_assert_eq(io_start(&c), -EFAULT);
	cr_assert_eq(c.vq.error, UVH_VQ_ERR_IOTLB);
	cr_assert_eq(c.fails, 1);
	io_teardown(&c);
}

Test(virtq_split, iotlb_flow) { io_flow(false); }
Test(virtq_split, iotlb_miss_then_update) { io_miss(false); }
Test(virtq_split, iotlb_ring_miss_then_update) { io_ring_miss(false); }
Test(virtq_split, iotlb_readonly_writable_buffer) { io_perm(false); }
Test(virtq_split, iotlb_ring_permission) { io_ring_perm(false); }
Test(virtq_split, iotlb_packed_flow) { io_flow(true); }
Test(virtq_split, iotlb_packed_miss_then_update) { io_miss(true); }
Test(virtq_split, iotlb_packed_ring_miss_then_update) { io_ring_miss(true); }
Test(virtq_split, iotlb_packed_readonly_writable_buffer) { io_perm(true); }
Test(virtq_split, iotlb_packed_ring_permission) { io_ring_perm(true); }
