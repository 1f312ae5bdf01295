/* SPDX-License-Identifier: MIT */
/*
 * The engine: a driver thread (uvh_vq_driver on memfd memory) sends chains
 * to a "sink" device served by an engine; every byte is checked both ways.
 * Modes, own thread and caller's thread, kicks, calls under EVENT_IDX, a
 * mode-switching stress (no lost kick), adaptive naps at partial load and
 * sleeps on sparse traffic, sockets through io_uring recvmsg,
 * timers, queues added and removed while running, two engines, stop.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "util.h"
#include "engine.h"
#include "t_helpers.h"

#define GPA_BASE	0x40000000ull
#define MEM_SIZE	(2u << 20)
#define QSIZE		256u
#define OUT_LEN		64u
#define IN_LEN		16u
#define BUF_STRIDE	128u
#define BUF_OFF		(256u << 10)	/* buffers after the ring */
#define NBUFS		QSIZE
#define MAGIC		0x5a5aa5a5deadbeefull
#define BURST		32u

/* A small PRNG of the test's own (xorshift32; @s not 0): rand_r is taken
 * over in ThreadSanitizer builds (tests/common/t_tsan_arena.c). */
static unsigned int next_rand(unsigned int *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static void sleep_ms(unsigned int ms)
{
	usleep(ms * 1000u);
}

/* ---- a guest with one queue, and the sink device -------------------------- */

struct rig {
	int memfd;
	uint8_t *map;			/* the driver's view of guest memory */
	struct uvh_memory *mem;		/* the device's table (its own mapping) */
	struct uvh_vq_driver drv;
	struct uvh_vq vq;
	struct uvh_engine_queue q;
	int kick, call, err;
	/* sink (engine thread) */
	struct uvh_vq_chain chains[BURST];
	struct iovec iov[BURST * 4];
	struct uvh_vq_used used[BURST];
	_Atomic uint64_t processed;
	_Atomic uint64_t bad;
	_Atomic int errors_reported;
	/* driver (test thread) */
	uint16_t freebuf[NBUFS];
	unsigned int nfree;
	uint64_t sent, done, kicks, driver_bad;
	uint64_t max_latency_ns;
	uint64_t sent_at[NBUFS];
};

static void fill_out(uint8_t *p, uint64_t seq)
{
	unsigned int i;

	memcpy(p, &seq, 8);
	for (i = 8; i < OUT_LEN; i++)
		p[i] = (uint8_t)(seq * 31u + i);
}

static unsigned int sink_process(struct uvh_engine_queue *q)
{
	struct rig *r = q->opaque;
	uint8_t out[OUT_LEN];
	uint64_t seq, reply;
	unsigned int i, j, bad = 0;
	int n;

	n = uvh_vq_pop(q->vq, r->chains, BURST, r->iov, BURST * 4);
	if (n <= 0)
		return 0;
	for (i = 0; i < (unsigned int)n; i++) {
		struct uvh_vq_chain *c = &r->chains[i];

		r->used[i].id = c->id;
		r->used[i].ndesc = c->ndesc;
		r->used[i].len = 0;
		if (c->nout != 1 || c->nin != 1 || c->out_len != OUT_LEN ||
		    c->in_len != IN_LEN || c->iov[0].iov_len != OUT_LEN) {
			bad++;
			continue;
		}
		memcpy(out, c->iov[0].iov_base, OUT_LEN);
		memcpy(&seq, out, 8);
		for (j = 8; j < OUT_LEN; j++)
			if (out[j] != (uint8_t)(seq * 31u + j))
				bad++;
		reply = seq ^ MAGIC;
		memcpy(c->iov[1].iov_base, &reply, 8);
		memcpy((uint8_t *)c->iov[1].iov_base + 8, &seq, 8);
		r->used[i].len = IN_LEN;
	}
	uvh_vq_push(q->vq, r->used, (unsigned int)n);
	if (bad)
		atomic_fetch_add(&r->bad, bad);
	atomic_fetch_add(&r->processed, (uint64_t)n);
	return (unsigned int)n;
}

static void sink_error(struct uvh_engine_queue *q, enum uvh_vq_error err)
{
	struct rig *r = q->opaque;

	(void)err;
	atomic_fetch_add(&r->errors_reported, 1);
}

static void rig_init(struct rig *r, bool packed, bool event_idx)
{
	struct uvh_mem_region reg;
	struct uvh_vq_config cfg;
	unsigned int i;

	memset(r, 0, sizeof(*r));
	r->memfd = t_memfd("engine-guest", MEM_SIZE);
	r->map = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, r->memfd, 0);
	cr_assert(r->map != MAP_FAILED);
	r->mem = uvh_memory_new(0);
	cr_assert(r->mem);
	reg.guest_phys_addr = GPA_BASE;
	reg.memory_size = MEM_SIZE;
	reg.userspace_addr = (uint64_t)(uintptr_t)r->map;
	reg.mmap_offset = 0;
	cr_assert_eq(uvh_memory_add_fd(r->mem, &reg, dup(r->memfd)), 0);
	cr_assert(uvh_vq_driver_area_bytes(QSIZE, packed) <= BUF_OFF);
	cr_assert_eq(uvh_vq_driver_init(&r->drv, QSIZE, packed, event_idx, r->map, GPA_BASE), 0);
	uvh_vq_driver_config(&r->drv, &cfg);
	cr_assert_eq(uvh_vq_init(&r->vq, &cfg, r->mem), 0);
	r->kick = t_eventfd();
	r->call = t_eventfd();
	r->err = t_eventfd();
	r->q.vq = &r->vq;
	r->q.kick_fd = r->kick;
	r->q.call_fd = r->call;
	r->q.err_fd = r->err;
	r->q.process = sink_process;
	r->q.on_error = sink_error;
	r->q.opaque = r;
	for (i = 0; i < NBUFS; i++)
		r->freebuf[i] = (uint16_t)i;
	r->nfree = NBUFS;
}

static void rig_fini(struct rig *r)
{
	uvh_vq_driver_free(&r->drv);
	uvh_memory_release(r->mem, NULL);
	munmap(r->map, MEM_SIZE);
	close(r->memfd);
	close(r->kick);
	close(r->call);
	close(r->err);
}

/* Add up to @max chains (one 64-byte out, one 16-byte in buffer each). */
static unsigned int drv_add(struct rig *r, uint64_t total, unsigned int max)
{
	unsigned int n = 0;
	uint64_t now = uvh_now_ns();

	while (n < max && r->sent < total && r->nfree && uvh_vq_driver_free_slots(&r->drv) >= 2) {
		uint16_t b = r->freebuf[--r->nfree];
		uint64_t off = BUF_OFF + (uint64_t)b * BUF_STRIDE;
		struct uvh_vq_buf bufs[2] = {
			{ .gpa = GPA_BASE + off, .len = OUT_LEN },
			{ .gpa = GPA_BASE + off + OUT_LEN, .len = IN_LEN },
		};

		fill_out(r->map + off, r->sent);
		memset(r->map + off + OUT_LEN, 0, IN_LEN);
		if (uvh_vq_driver_add(&r->drv, bufs, 1, 1,
				      (void *)(uintptr_t)(((uint64_t)b << 48) | r->sent))) {
			r->nfree++;
			break;
		}
		r->sent_at[b] = now;
		r->sent++;
		n++;
	}
	if (n) {
		uvh_vq_driver_publish(&r->drv);
		if (uvh_vq_driver_need_kick(&r->drv)) {
			eventfd_write(r->kick, 1);
			r->kicks++;
		}
	}
	return n;
}

static unsigned int drv_collect(struct rig *r)
{
	void *tokens[BURST];
	uint32_t lens[BURST];
	unsigned int n, i;
	uint64_t now = uvh_now_ns();

	n = uvh_vq_driver_get_used(&r->drv, tokens, lens, BURST);
	for (i = 0; i < n; i++) {
		uint64_t t = (uint64_t)(uintptr_t)tokens[i];
		uint16_t b = (uint16_t)(t >> 48);
		uint64_t seq = t & ((1ull << 48) - 1), got[2];
		uint64_t off = BUF_OFF + (uint64_t)b * BUF_STRIDE;

		memcpy(got, r->map + off + OUT_LEN, sizeof(got));
		if (lens[i] != IN_LEN || got[0] != (seq ^ MAGIC) || got[1] != seq)
			r->driver_bad++;
		if (now - r->sent_at[b] > r->max_latency_ns)
			r->max_latency_ns = now - r->sent_at[b];
		r->freebuf[r->nfree++] = b;
		r->done++;
	}
	return n;
}

/* Drive @total chains through, @batch at a time; false on timeout. */
static bool drive(struct rig *r, uint64_t total, unsigned int batch, unsigned int timeout_ms)
{
	uint64_t deadline = uvh_now_ns() + (uint64_t)timeout_ms * 1000000u;

	while (r->done < total) {
		unsigned int a = 0, c;

		if (r->sent - r->done < QSIZE / 2)
			a = drv_add(r, total, batch);
		c = drv_collect(r);
		if (!a && !c) {
			if (uvh_now_ns() > deadline)
				return false;
			sched_yield();
		}
	}
	return true;
}

struct drive_job {
	struct rig *r;
	uint64_t total;
	unsigned int batch, timeout_ms;
	struct uvh_engine *stop_after;	/* stop this engine when done */
	bool ok;
	pthread_t th;
};

static void *drive_thread(void *arg)
{
	struct drive_job *j = arg;

	j->ok = drive(j->r, j->total, j->batch, j->timeout_ms);
	if (j->stop_after)
		uvh_engine_stop(j->stop_after);
	return NULL;
}

static struct uvh_engine *engine_new(const char *name, int cpu, enum uvh_engine_mode mode)
{
	struct uvh_engine_opts o = {
		.name = name, .cpu = cpu, .numa_node = -1, .mode = mode, .idle_sweeps = 64,
	};
	struct uvh_engine *e = uvh_engine_create(&o);

	cr_assert(e, "uvh_engine_create: %s", strerror(errno));
	return e;
}

static void check_rig(struct rig *r, uint64_t total)
{
	cr_assert_eq(r->done, total, "done %lu of %lu", (unsigned long)r->done,
		     (unsigned long)total);
	cr_assert_eq(atomic_load(&r->bad), 0, "device saw bad bytes");
	cr_assert_eq(r->driver_bad, 0, "driver saw bad replies");
	cr_assert_eq(atomic_load(&r->processed), total);
	cr_assert(!uvh_vq_broken(&r->vq));
}

/* Wait until the engine is asleep (its sleep count stops moving). */
static void wait_asleep(struct uvh_engine *e)
{
	struct uvh_engine_stats a, b;
	int i;

	for (i = 0; i < 200; i++) {
		uvh_engine_stats(e, &a);
		sleep_ms(5);
		uvh_engine_stats(e, &b);
		if (a.sleeps > 0 && a.sweeps == b.sweeps)
			return;
	}
	cr_assert_fail("engine never went to sleep");
}

/* All chains come back, engine in its own thread. */
static void roundtrip_thread(enum uvh_engine_mode mode, bool packed, bool event_idx)
{
	struct rig r;
	struct uvh_engine *e;
	struct uvh_engine_stats st;
	int fds;
	const uint64_t total = 20000;

	fds = t_count_fds();
	rig_init(&r, packed, event_idx);
	e = engine_new("uvh-rt", 1, mode);
	cr_assert_eq(uvh_engine_add_queue(e, &r.q), 0);
	cr_assert_eq(uvh_engine_start(e), 0);
	cr_assert(drive(&r, total / 2, 16, 5000), "timed out at %lu/%lu",
		  (unsigned long)r.done, (unsigned long)total);
	if (mode == UVH_ENGINE_EVENT)
		wait_asleep(e);	/* back-to-back chains keep it awake (spin_us) */
	cr_assert(drive(&r, total, 16, 5000), "timed out at %lu/%lu",
		  (unsigned long)r.done, (unsigned long)total);
	uvh_engine_stats(e, &st);
	cr_assert(st.running);
	cr_assert_eq(st.queues, 1);
	cr_assert(st.sweeps > 0);
	cr_assert_eq(uvh_engine_stop(e), 0);
	cr_assert_eq(uvh_engine_stop(e), -EALREADY);
	check_rig(&r, total);
	uvh_engine_stats(e, &st);
	cr_assert(!st.running);
	cr_assert(st.busy_sweeps > 0 && st.busy_ratio > 0.0 && st.busy_ratio <= 1.0);
	if (mode == UVH_ENGINE_EVENT)
		cr_assert(st.wakeups > 0 && st.kicks > 0, "event mode sleeps and is kicked");
	if (mode == UVH_ENGINE_POLL)
		cr_assert_eq(st.sleeps, 0, "poll mode never sleeps");
	cr_assert_eq(uvh_engine_remove_queue(e, &r.q), 0);
	uvh_engine_destroy(e);
	rig_fini(&r);
	cr_assert_eq(t_count_fds(), fds);
}

Test(engine, roundtrip_poll_own_thread) { roundtrip_thread(UVH_ENGINE_POLL, false, true); }
Test(engine, roundtrip_event_own_thread) { roundtrip_thread(UVH_ENGINE_EVENT, false, true); }
Test(engine, roundtrip_adaptive_own_thread) { roundtrip_thread(UVH_ENGINE_ADAPTIVE, false, true); }
Test(engine, roundtrip_event_no_event_idx) { roundtrip_thread(UVH_ENGINE_EVENT, false, false); }
Test(engine, roundtrip_packed_poll) { roundtrip_thread(UVH_ENGINE_POLL, true, true); }
Test(engine, roundtrip_packed_event) { roundtrip_thread(UVH_ENGINE_EVENT, true, true); }
Test(engine, roundtrip_packed_adaptive) { roundtrip_thread(UVH_ENGINE_ADAPTIVE, true, false); }

/* The ring's setup flags: SINGLE_ISSUER/DEFER_TASKRUN where the kernel has
 * them, and the plain fallback works the same. */
Test(engine, ring_setup_flags_and_fallback)
{
	struct uvh_engine_opts o = { .name = "uvh-flags", .cpu = 1, .numa_node = -1,
				     .mode = UVH_ENGINE_EVENT };
	struct uvh_engine_stats st;
	struct uvh_engine *e;
	struct rig r;
	int pass;

	for (pass = 0; pass < 2; pass++) {
		o.no_setup_flags = pass == 1;
		rig_init(&r, false, true);
		e = uvh_engine_create(&o);
		cr_assert(e);
		cr_assert_eq(uvh_engine_add_queue(e, &r.q), 0);
		cr_assert_eq(uvh_engine_start(e), 0);
		cr_assert(drive(&r, 3000, 16, 5000));
		uvh_engine_stats(e, &st);
		if (pass == 1)
			cr_assert_eq(st.setup_flags, 0);
		else
			cr_log_info("io_uring setup flags 0x%x", st.setup_flags);
		uvh_engine_destroy(e);
		check_rig(&r, 3000);
		rig_fini(&r);
	}
}

/* All chains come back, engine in the caller's thread (uvh_engine_run). */
static void roundtrip_caller(enum uvh_engine_mode mode)
{
	struct rig r;
	struct uvh_engine *e;
	struct drive_job j;
	cpu_set_t before, after;
	int fds;

	fds = t_count_fds();
	rig_init(&r, false, true);
	e = engine_new("uvh-run", 1, mode);
	cr_assert_eq(uvh_engine_add_queue(e, &r.q), 0);
	memset(&j, 0, sizeof(j));
	j.r = &r;
	j.total = 20000;
	j.batch = 16;
	j.timeout_ms = 5000;
	j.stop_after = e;
	cr_assert_eq(pthread_getaffinity_np(pthread_self(), sizeof(before), &before), 0);
	cr_assert_eq(pthread_create(&j.th, NULL, drive_thread, &j), 0);
	cr_assert_eq(uvh_engine_run(e), 0);	/* returns after the driver's stop */
	pthread_join(j.th, NULL);
	cr_assert(j.ok, "timed out at %lu", (unsigned long)r.done);
	check_rig(&r, j.total);
	/* The caller's placement is given back. */
	cr_assert_eq(pthread_getaffinity_np(pthread_self(), sizeof(after), &after), 0);
	cr_assert(CPU_EQUAL(&before, &after));
	/* It can run again. */
	j.total = 25000;
	j.ok = false;
	cr_assert_eq(pthread_create(&j.th, NULL, drive_thread, &j), 0);
	cr_assert_eq(uvh_engine_run(e), 0);
	pthread_join(j.th, NULL);
	cr_assert(j.ok);
	check_rig(&r, j.total);
	uvh_engine_destroy(e);
	rig_fini(&r);
	cr_assert_eq(t_count_fds(), fds);
}

Test(engine, roundtrip_poll_caller_thread) { roundtrip_caller(UVH_ENGINE_POLL); }
Test(engine, roundtrip_event_caller_thread) { roundtrip_caller(UVH_ENGINE_EVENT); }
Test(engine, roundtrip_adaptive_caller_thread) { roundtrip_caller(UVH_ENGINE_ADAPTIVE); }

/* A sleeping event-mode engine is woken by a kick, and only by it. */
Test(engine, kick_wakes_event_engine)
{
	struct rig r;
	struct uvh_engine *e;
	struct uvh_engine_stats st0, st1;
	int i;

	rig_init(&r, false, true);
	e = engine_new("uvh-kick", 1, UVH_ENGINE_EVENT);
	cr_assert_eq(uvh_engine_add_queue(e, &r.q), 0);
	cr_assert_eq(uvh_engine_start(e), 0);
	for (i = 0; i < 5; i++) {
		wait_asleep(e);
		uvh_engine_stats(e, &st0);
		cr_assert_eq(drv_add(&r, r.sent + 1, 1), 1);
		cr_assert_eq(r.kicks, (uint64_t)i + 1, "the device asked for a kick");
		cr_assert(drive(&r, r.sent, 1, 2000), "a kick did not wake the engine");
		uvh_engine_stats(e, &st1);
		cr_assert(st1.wakeups > st0.wakeups);
		cr_assert(st1.kicks > st0.kicks);
	}
	/* No kick: the engine stays asleep (no busy loop). */
	wait_asleep(e);
	uvh_engine_stats(e, &st0);
	sleep_ms(30);
	uvh_engine_stats(e, &st1);
	cr_assert_eq(st1.sweeps, st0.sweeps);
	uvh_engine_destroy(e);
	check_rig(&r, 5);
	rig_fini(&r);
}

static int pause_fn(void *ctx, void *arg)
{
	(void)ctx;
	uvh_engine_queue_pause(arg, UVH_ENGINE_PAUSE_HOST, true);
	return 0;
}

static int resume_fn(void *ctx, void *arg)
{
	(void)ctx;
	uvh_engine_queue_pause(arg, UVH_ENGINE_PAUSE_HOST, false);
	return 0;
}

/*
 * A paused queue (a started ring not yet enabled) is left alone: its
 * chains wait, kicked or not, and the engine sleeps meanwhile; resumed, it
 * is processed with no kick after the resume.
 */
Test(engine, paused_queue_waits_then_resumes)
{
	enum uvh_engine_mode modes[] = { UVH_ENGINE_EVENT, UVH_ENGINE_ADAPTIVE, UVH_ENGINE_POLL };

	for (unsigned int m = 0; m < 3; m++) {
		struct uvh_engine_stats st0, st1;
		struct uvh_engine *e;
		struct rig r;

		rig_init(&r, m == 1, true);
		r.q.paused = UVH_ENGINE_PAUSE_HOST;
		e = engine_new("uvh-pause", 1, modes[m]);
		cr_assert_eq(uvh_engine_add_queue(e, &r.q), 0);
		cr_assert_eq(uvh_engine_start(e), 0);
		cr_assert_eq(drv_add(&r, 8, 8), 8);
		eventfd_write(r.kick, 1);	/* kicked anyway */
		if (modes[m] != UVH_ENGINE_POLL)
			wait_asleep(e);
		uvh_engine_stats(e, &st0);
		sleep_ms(30);
		uvh_engine_stats(e, &st1);
		cr_assert_eq(atomic_load(&r.processed), 0, "mode %u: a paused queue was processed", m);
		if (modes[m] != UVH_ENGINE_POLL)
			cr_assert_lt(st1.sweeps - st0.sweeps, 4, "mode %u: the engine spun", m);
		cr_assert_eq(uvh_engine_call(e, resume_fn, &r.q), 0);
		cr_assert(drive(&r, 8, 8, 2000), "mode %u: the resumed queue was not processed", m);
		cr_assert_eq(uvh_engine_call(e, pause_fn, &r.q), 0);
		cr_assert_eq(drv_add(&r, 12, 4), 4);
		sleep_ms(20);
		cr_assert_eq(atomic_load(&r.processed), 8);
		cr_assert_eq(uvh_engine_call(e, resume_fn, &r.q), 0);
		cr_assert(drive(&r, 12, 4, 2000));
		uvh_engine_destroy(e);
		check_rig(&r, 12);
		rig_fini(&r);
	}
}

/* Chains on a passive queue (RX buffers waiting for frames) are not work:
 * an event engine sleeps over them and asks for no kicks; a wake-up (a
 * producer's, here a kick written by hand) still runs its process(). */
Test(engine, passive_queue_chains_are_not_work)
{
	struct uvh_engine_stats st0, st1;
	struct uvh_engine *e;
	struct rig r;

	rig_init(&r, false, false);
	r.q.passive = true;
	e = engine_new("uvh-passive", 1, UVH_ENGINE_EVENT);
	cr_assert_eq(uvh_engine_add_queue(e, &r.q), 0);
	cr_assert_eq(uvh_engine_start(e), 0);
	wait_asleep(e);
	uvh_engine_stats(e, &st0);
	cr_assert_eq(drv_add(&r, 8, 8), 8);
	cr_assert_eq(r.kicks, 0, "the driver was asked to kick a passive queue");
	sleep_ms(30);
	uvh_engine_stats(e, &st1);
	cr_assert_eq(st1.sweeps, st0.sweeps, "the engine woke for a passive queue's chains");
	cr_assert_eq(atomic_load(&r.processed), 0);
	eventfd_write(r.kick, 1);
	cr_assert(drive(&r, 8, 8, 2000), "a woken engine did not run the passive queue");
	wait_asleep(e);
	uvh_engine_destroy(e);
	check_rig(&r, 8);
	rig_fini(&r);
}

static bool wait_call(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	eventfd_t v;

	if (poll(&p, 1, timeout_ms) != 1)
		return false;
	return eventfd_read(fd, &v) == 0;
}

/* Calls follow EVENT_IDX: one per chain when asked, none when not. */
Test(engine, calls_only_when_driver_asks)
{
	struct rig r;
	struct uvh_engine *e;
	struct uvh_engine_stats st0, st1;
	eventfd_t v;
	int i;

	rig_init(&r, false, true);
	e = engine_new("uvh-call", 1, UVH_ENGINE_ADAPTIVE);
	cr_assert_eq(uvh_engine_add_queue(e, &r.q), 0);
	cr_assert_eq(uvh_engine_start(e), 0);

	/* Interrupts on: each chain is answered by a call. */
	uvh_vq_driver_enable_cb(&r.drv, true);
	for (i = 0; i < 50; i++) {
		cr_assert_eq(drv_add(&r, r.sent + 1, 1), 1);
		cr_assert(wait_call(r.call, 2000), "no call for chain %d", i);
		cr_assert_eq(drv_collect(&r), 1);
		uvh_vq_driver_enable_cb(&r.drv, true);
	}
	sleep_ms(10);	/* counters are published after the sweep's writes */
	uvh_engine_stats(e, &st0);
	cr_assert_geq(st0.calls, 50);
	cr_assert_leq(st0.calls, 51);

	/* Interrupts off: thousands of chains, no call. */
	uvh_vq_driver_enable_cb(&r.drv, false);
	eventfd_read(r.call, &v);	/* a stale one, if any */
	cr_assert(drive(&r, r.sent + 5000, 16, 5000));
	sleep_ms(10);
	uvh_engine_stats(e, &st1);
	cr_assert_leq(st1.calls - st0.calls, 1, "%lu calls with interrupts off",
		      (unsigned long)(st1.calls - st0.calls));
	cr_assert_gt(st1.calls_suppressed, st0.calls_suppressed);
	uvh_engine_destroy(e);
	check_rig(&r, 5050);
	rig_fini(&r);
}

/* A device's own fd (wake_fd) wakes a sleeping engine as a kick does; a
 * self_signal queue's work never makes the engine call for it. */
static _Atomic int wake_reads;
static int wake_rd = -1;

static unsigned int wake_process(struct uvh_engine_queue *q)
{
	char b[16];
	ssize_t n = read(wake_rd, b, sizeof(b));

	if (n > 0)
		atomic_fetch_add(&wake_reads, 1);
	return sink_process(q) + (n > 0 ? (unsigned int)n : 0);
}

Test(engine, wake_fd_wakes_and_self_signal_does_not_call)
{
	struct uvh_engine *e;
	struct rig r;
	int p[2];

	cr_assert_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
	wake_rd = p[0];
	rig_init(&r, false, true);
	r.q.process = wake_process;
	r.q.wake_fd = p[0];
	r.q.self_signal = true;
	r.q.passive = true;	/* it waits on its device's fd, not on kicks */
	e = engine_new("uvh-wakefd", 1, UVH_ENGINE_EVENT);
	cr_assert_eq(uvh_engine_add_queue(e, &r.q), 0);
	cr_assert_eq(uvh_engine_start(e), 0);
	wait_asleep(e);
	cr_assert_eq(write(p[1], "x", 1), 1);
	for (int i = 0; i < 200 && !atomic_load(&wake_reads); i++)
		sleep_ms(5);
	cr_assert_eq(atomic_load(&wake_reads), 1, "the wake fd did not wake the engine");
	wait_asleep(e);
	/* interrupts asked for, chains used: still no call from the engine */
	uvh_vq_driver_enable_cb(&r.drv, true);
	cr_assert_eq(drv_add(&r, 8, 8), 8);
	cr_assert_eq(write(p[1], "y", 1), 1);	/* a passive queue is woken by its fd */
	for (int i = 0; i < 200 && r.done < 8; i++) {
		drv_collect(&r);
		sleep_ms(5);
	}
	cr_assert_eq(atomic_load(&r.processed), 8);
	cr_assert(!wait_call(r.call, 100), "the engine called for a self_signal queue");
	uvh_engine_destroy(e);
	check_rig(&r, 8);
	rig_fini(&r);
	close(p[0]);
	close(p[1]);
}

struct switcher {
	struct uvh_engine *e;
	_Atomic bool stop;
	unsigned int switches;
	pthread_t th;
};

static void pin_self(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

/*
 * Switch modes every 1-4 ms, with a quiet spell of 300 ms after every 25
 * switches. A switch is a dispatcher request, which wakes a sleeping
 * engine and so would rescue a chain whose kick was lost; in the quiet
 * spells nothing rescues it, and the driver's 250 ms limit catches it
 * (normal latency is microseconds; this shared 2-core machine has shown
 * up to ~90 ms of scheduling noise under load).
 */
static void *switch_thread(void *arg)
{
	struct switcher *s = arg;
	unsigned int seed = 7;

	pin_self(0);
	while (!atomic_load(&s->stop)) {
		uvh_engine_set_mode(s->e, (enum uvh_engine_mode)(next_rand(&seed) % 3));
		s->switches++;
		if (s->switches % 25 == 0) {
			/* Quiet in a mode that sleeps. */
			uvh_engine_set_mode(s->e, s->switches % 50 ? UVH_ENGINE_EVENT
								 : UVH_ENGINE_ADAPTIVE);
			usleep(300000);
		} else {
			usleep(1000 + next_rand(&seed) % 3000);
		}
	}
	return NULL;
}

/*
 * Modes switch every few ms while the driver kicks: no chain is ever
 * stuck (a lost kick would leave one waiting until the timeout). With
 * @naps the adaptive engine naps between the bursts (short naps, and a
 * sleep after 60 us without work) instead of sleeping after 64 idle sweeps.
 */
static void mode_stress(bool packed, bool naps)
{
	struct uvh_engine_opts o = {
		.name = "uvh-stress", .cpu = 1, .numa_node = -1, .mode = UVH_ENGINE_ADAPTIVE,
		.idle_sweeps = 64,
	};
	struct uvh_engine_stats st, st2;
	struct rig r;
	struct uvh_engine *e;
	struct switcher s = { 0 };
	uint64_t end;
	unsigned int round = 0, seed = 3;

	if (naps) {
		o.idle_sweeps = 0;
		o.nap_min_us = 1;
		o.nap_max_us = 30;
		o.idle_us = 60;
	}
	rig_init(&r, packed, !naps);	/* naps: only rings without EVENT_IDX nap */
	e = uvh_engine_create(&o);
	cr_assert(e, "uvh_engine_create: %s", strerror(errno));
	cr_assert_eq(uvh_engine_add_queue(e, &r.q), 0);
	cr_assert_eq(uvh_engine_start(e), 0);
	s.e = e;
	cr_assert_eq(pthread_create(&s.th, NULL, switch_thread, &s), 0);
	pin_self(0);	/* the engine has core 1 to itself */
	end = uvh_now_ns() + 1500ull * 1000000u;
	while (uvh_now_ns() < end) {
		/* A small burst, then wait for all of it: every burst depends on
		 * its kick (or on the device seeing it before sleeping). */
		uint64_t target = r.sent + 1 + next_rand(&seed) % 8;
		unsigned int waited = 0;

		while (!drive(&r, target, 8, 250)) {
			/* Tell a lost kick (asleep with a chain waiting) from a
			 * starved engine (still sweeping): only the first fails
			 * at once; a machine too loaded to run the engine gets
			 * 5 s before that counts as a failure too. */
			uvh_engine_stats(e, &st);
			sleep_ms(250);	/* long enough for a runnable thread to run */
			uvh_engine_stats(e, &st2);
			waited += 500;
			if (st2.sweeps != st.sweeps && r.done < target && waited < 5000)
				continue;
			if (r.done >= target)
				break;
			cr_assert_fail("chain stuck in round %u: %lu/%lu; engine %s (mode %d, "
				       "%lu sweeps in 250 ms), sleeps %lu, naps %lu, kicks %lu",
				       round, (unsigned long)r.done, (unsigned long)target,
				       st2.sweeps == st.sweeps ? "asleep: lost kick" : "awake",
				       (int)st2.mode, (unsigned long)(st2.sweeps - st.sweeps),
				       (unsigned long)st2.sleeps, (unsigned long)st2.naps,
				       (unsigned long)r.kicks);
		}
		if (next_rand(&seed) % 4 == 0)
			usleep(next_rand(&seed) % 300);	/* let the engine doze off */
		round++;
	}
	atomic_store(&s.stop, true);
	pthread_join(s.th, NULL);
	cr_assert_gt(s.switches, 50);
	cr_assert_gt(round, 1000);
	uvh_engine_stats(e, &st);
	cr_assert_gt(st.sleeps, 0);
	if (naps)
		cr_assert_gt(st.naps, 0, "the adaptive spells never napped");
	uvh_engine_destroy(e);
	check_rig(&r, r.sent);
	rig_fini(&r);
}

Test(engine, no_lost_kick_mode_switch_stress) { mode_stress(false, false); }
Test(engine, no_lost_kick_mode_switch_stress_packed) { mode_stress(true, false); }
Test(engine, no_lost_kick_mode_switch_stress_naps) { mode_stress(false, true); }

/* Adaptive mode sleeps after its idle spell and comes back to polling. */
Test(engine, adaptive_sleeps_when_idle)
{
	struct rig r;
	struct uvh_engine *e;
	struct uvh_engine_stats st;

	rig_init(&r, false, true);
	e = engine_new("uvh-adapt", 1, UVH_ENGINE_ADAPTIVE);
	cr_assert_eq(uvh_engine_add_queue(e, &r.q), 0);
	cr_assert_eq(uvh_engine_start(e), 0);
	cr_assert(drive(&r, 2000, 16, 5000));
	wait_asleep(e);
	cr_assert(drive(&r, 4000, 16, 5000));
	wait_asleep(e);
	uvh_engine_stats(e, &st);
	cr_assert_geq(st.sleeps, 2);
	cr_assert_eq(st.mode, UVH_ENGINE_ADAPTIVE);
	cr_assert_eq(uvh_engine_set_mode(e, UVH_ENGINE_POLL), 0);
	cr_assert_eq(uvh_engine_get_mode(e), UVH_ENGINE_POLL);
	cr_assert_eq(uvh_engine_set_mode(e, (enum uvh_engine_mode)7), -EINVAL);
	uvh_engine_destroy(e);
	check_rig(&r, 4000);
	rig_fini(&r);
}

/*
 * A paced driver: @burst chains every @period_us (spinning in between),
 * collecting as it goes, for @bursts bursts; then waits for the rest.
 * False when a chain took more than a second.
 */
static bool drive_paced(struct rig *r, unsigned int burst, unsigned int period_us,
			unsigned int bursts)
{
	uint64_t next = uvh_now_ns(), target;
	unsigned int i;

	for (i = 0; i < bursts; i++) {
		target = r->sent + burst;
		while (r->sent < target) {
			drv_add(r, target, burst);
			drv_collect(r);
		}
		/* a driver that was held up does not catch up: the gaps are
		 * never shorter than @period_us */
		next += (uint64_t)period_us * 1000u;
		if (next < uvh_now_ns())
			next = uvh_now_ns();
		while (uvh_now_ns() < next)
			drv_collect(r);
	}
	return drive(r, r->sent, burst, 1000);
}

static struct uvh_engine *nap_engine(const char *name, bool no_nap)
{
	struct uvh_engine_opts o = {
		.name = name, .cpu = 1, .numa_node = -1, .mode = UVH_ENGINE_ADAPTIVE,
		.nap_min_us = 2, .nap_max_us = 200, .nap_batch = 64, .no_nap = no_nap,
	};
	struct uvh_engine *e = uvh_engine_create(&o);

	cr_assert(e, "uvh_engine_create: %s", strerror(errno));
	return e;
}

/*
 * Partial load (8 chains every 20 us, far below what the engine can do),
 * EVENT_IDX: the adaptive engine sleeps until a batch of chains is there
 * (avail_event set ahead), so the driver kicks once per batch, not per
 * burst, and the batch grows past one; every chain comes back intact.
 */
Test(engine, adaptive_batches_kicks_at_partial_load)
{
	struct uvh_engine_stats st;
	struct uvh_engine *e;
	struct rig r;
	const unsigned int bursts = 4000;

	pin_self(0);	/* the engine has core 1 */
	rig_init(&r, false, true);
	e = nap_engine("uvh-batch", false);
	cr_assert_eq(uvh_engine_add_queue(e, &r.q), 0);
	cr_assert_eq(uvh_engine_start(e), 0);
	cr_assert(drive_paced(&r, 8, 20, bursts), "stuck at %lu/%lu", (unsigned long)r.done,
		  (unsigned long)r.sent);
	uvh_engine_stats(e, &st);
	cr_assert_gt(st.sleeps, 0, "never slept at partial load");
	cr_assert_eq(st.naps, 0, "napped on a ring that batches kicks");
	cr_assert_lt(r.kicks, bursts / 4, "%lu kicks for %u bursts: not batched",
		     (unsigned long)r.kicks, bursts);
	uvh_engine_destroy(e);
	check_rig(&r, (uint64_t)bursts * 8);
	rig_fini(&r);
}

/*
 * Traffic that stops in the middle of a batch: the chains already sent
 * are below the kick threshold and no kick will come; the backstop timer
 * (4 latency bounds) finds them. Then, with nothing coming, the batch
 * falls back to one and the backstop goes: an idle engine sleeps without
 * a timer.
 */
Test(engine, adaptive_backstop_finds_chains_left_behind)
{
	struct uvh_engine_stats st;
	struct uvh_engine *e;
	struct rig r;
	uint64_t t0, fires;

	pin_self(0);
	rig_init(&r, false, true);
	e = nap_engine("uvh-backstop", false);	/* latency bound 200 us */
	cr_assert_eq(uvh_engine_add_queue(e, &r.q), 0);
	cr_assert_eq(uvh_engine_start(e), 0);
	cr_assert(drive_paced(&r, 8, 20, 2000));
	uvh_engine_stats(e, &st);
	cr_assert_gt(st.kick_batch, 8, "the batch did not grow (%lu)", (unsigned long)st.kick_batch);
	/* three chains, far below the batch, then silence */
	t0 = uvh_now_ns();
	cr_assert(drive(&r, r.sent + 3, 3, 1000), "chains left behind were never found");
	cr_assert_lt(uvh_now_ns() - t0, 100ull * 1000000u, "found only after %lu us",
		     (unsigned long)((uvh_now_ns() - t0) / 1000));
	sleep_ms(50);	/* the batch halves at each backstop wake-up */
	uvh_engine_stats(e, &st);
	fires = st.timer_fires;
	cr_assert_eq(st.kick_batch, 1, "idle, the batch stayed at %lu", (unsigned long)st.kick_batch);
	sleep_ms(50);
	uvh_engine_stats(e, &st);
	cr_assert_eq(st.timer_fires, fires, "the backstop kept firing on an idle engine");
	uvh_engine_destroy(e);
	check_rig(&r, r.sent);
	rig_fini(&r);
}

/*
 * The same load on a ring without EVENT_IDX: kicks cannot be batched, so
 * the engine naps between bursts with notifications off, and the driver
 * is not asked to kick. With no_nap it never naps.
 */
Test(engine, adaptive_naps_at_partial_load)
{
	struct uvh_engine_stats st;
	struct uvh_engine *e;
	struct rig r;
	const unsigned int bursts = 4000;

	pin_self(0);	/* the engine has core 1 */
	rig_init(&r, false, false);
	e = nap_engine("uvh-nap", false);
	cr_assert_eq(uvh_engine_add_queue(e, &r.q), 0);
	cr_assert_eq(uvh_engine_start(e), 0);
	cr_assert(drive_paced(&r, 8, 20, bursts), "stuck at %lu/%lu", (unsigned long)r.done,
		  (unsigned long)r.sent);
	uvh_engine_stats(e, &st);
	cr_assert_gt(st.naps, 0, "no nap at partial load");
	cr_assert_gt(st.nap_ns, st.naps * 1000u, "naps of a microsecond or less");
	cr_assert_leq(st.nap_plan_ns, 200000u, "nap planned beyond nap_max_us");
	/* a kick is only asked for by a sleep: 200 us with no chain, rare here */
	cr_assert_lt(r.kicks, bursts / 4, "%lu kicks for %u bursts", (unsigned long)r.kicks,
		     bursts);
	uvh_engine_destroy(e);
	check_rig(&r, (uint64_t)bursts * 8);
	rig_fini(&r);

	rig_init(&r, false, false);
	e = nap_engine("uvh-nonap", true);
	cr_assert_eq(uvh_engine_add_queue(e, &r.q), 0);
	cr_assert_eq(uvh_engine_start(e), 0);
	cr_assert(drive_paced(&r, 8, 20, bursts / 4));
	uvh_engine_stats(e, &st);
	cr_assert_eq(st.naps, 0);
	cr_assert_eq(st.nap_plan_ns, 0);
	uvh_engine_destroy(e);
	check_rig(&r, (uint64_t)bursts * 2);
	rig_fini(&r);
}

/*
 * Sparse traffic (a chain every 2 ms, far more than a longest nap): the
 * engine sleeps until kicked after each chain instead of napping first
 * and finding nothing; every chain is answered.
 */
Test(engine, adaptive_sleeps_on_sparse_traffic)
{
	struct uvh_engine_stats st;
	struct uvh_engine *e;
	struct rig r;
	const unsigned int chains = 30;

	pin_self(0);
	rig_init(&r, false, true);
	e = nap_engine("uvh-sparse", false);
	cr_assert_eq(uvh_engine_add_queue(e, &r.q), 0);
	cr_assert_eq(uvh_engine_start(e), 0);
	cr_assert(drive_paced(&r, 1, 2000, chains));
	uvh_engine_stats(e, &st);
	/* (half: on this shared machine the engine itself may be held up) */
	cr_assert_geq(st.sleeps, chains / 2, "%lu sleeps, %lu naps, %lu kicks for %u chains",
		      (unsigned long)st.sleeps, (unsigned long)st.naps, (unsigned long)r.kicks,
		      chains);
	cr_assert_geq(r.kicks, chains / 2, "the sleeping engine asks for kicks");
	cr_assert_lt(st.naps * 4, chains, "%lu naps for %u sparse chains",
		     (unsigned long)st.naps, chains);
	uvh_engine_destroy(e);
	check_rig(&r, chains);
	rig_fini(&r);
}

/* ---- sockets ------------------------------------------------------------------ */

#define MAX_GOT 16

struct sock_watch {
	struct uvh_engine_watch w;
	struct uvh_endpoint ep;
	pthread_mutex_t lock;
	struct uvh_msg got[MAX_GOT];
	unsigned int ngot;
	_Atomic int closed;
	_Atomic bool on_engine;
	struct uvh_engine *e;
};

static void sw_msg(struct uvh_engine_watch *w, struct uvh_msg *msg)
{
	struct sock_watch *s = w->opaque;

	atomic_store(&s->on_engine, uvh_engine_is_current(s->e));
	pthread_mutex_lock(&s->lock);
	if (s->ngot < MAX_GOT)
		s->got[s->ngot++] = *msg;	/* takes the fds */
	else
		uvh_msg_close_fds(msg);
	pthread_mutex_unlock(&s->lock);
}

static void sw_close(struct uvh_engine_watch *w, int err)
{
	struct sock_watch *s = w->opaque;

	atomic_store(&s->closed, err);
}

static unsigned int sw_count(struct sock_watch *s, unsigned int want, int timeout_ms)
{
	unsigned int n = 0;
	int i;

	for (i = 0; i < timeout_ms; i++) {
		pthread_mutex_lock(&s->lock);
		n = s->ngot;
		pthread_mutex_unlock(&s->lock);
		if (n >= want)
			break;
		sleep_ms(1);
	}
	return n;
}

static void sw_init(struct sock_watch *s, struct uvh_engine *e, int fd)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	uvh_endpoint_init(&s->ep, fd, NULL);
	s->w.ep = &s->ep;
	s->w.on_msg = sw_msg;
	s->w.on_close = sw_close;
	s->w.opaque = s;
	s->e = e;
}

static void sw_fini(struct sock_watch *s)
{
	unsigned int i;

	for (i = 0; i < s->ngot; i++)
		uvh_msg_close_fds(&s->got[i]);
	uvh_endpoint_close(&s->ep);
	pthread_mutex_destroy(&s->lock);
}

static void socket_messages(enum uvh_engine_mode mode)
{
	struct uvh_engine *e;
	struct sock_watch s;
	struct uvh_endpoint peer;
	struct uvh_msg_header h = { .request = 1, .flags = UVH_FLAG_VERSION, .size = 8 };
	uint64_t payload;
	int sv[2], efd[3], fds;
	unsigned int i;

	fds = t_count_fds();
	e = engine_new("uvh-sock", 1, mode);
	t_socketpair(sv);
	sw_init(&s, e, sv[0]);
	uvh_endpoint_init(&peer, sv[1], NULL);
	cr_assert_eq(uvh_engine_watch(e, &s.w), 0);
	cr_assert_eq(uvh_engine_watch(e, &s.w), -EBUSY);
	cr_assert_eq(uvh_engine_start(e), 0);
	for (i = 0; i < 3; i++)
		efd[i] = t_eventfd();
	for (i = 0; i < 6; i++) {
		payload = 0x1000 + i;
		h.request = 10 + i;
		/* Every other message carries i % 3 + 1 fds. */
		cr_assert_eq(uvh_endpoint_send(&peer, &h, &payload, efd, i % 2 ? i % 3 + 1 : 0), 0);
	}
	cr_assert_eq(sw_count(&s, 6, 2000), 6);
	cr_assert(atomic_load(&s.on_engine), "callback runs on the engine's thread");
	for (i = 0; i < 6; i++) {
		struct uvh_msg *m = &s.got[i];
		unsigned int k, nf = i % 2 ? i % 3 + 1 : 0;

		cr_assert_eq(m->hdr.request, 10 + i);
		cr_assert_eq(m->hdr.size, 8);
		cr_assert_eq(m->payload.u64, 0x1000 + i);
		cr_assert_eq(m->nfds, nf);
		for (k = 0; k < nf; k++) {
			cr_assert(t_same_file(m->fds[k], efd[k]));
			cr_assert(fcntl(m->fds[k], F_GETFD) & FD_CLOEXEC, "MSG_CMSG_CLOEXEC");
		}
	}
	/* A bad header ends the watch with the endpoint's error. */
	t_log_capture();
	h.flags = 0x7;	/* version 3 */
	cr_assert_eq(uvh_endpoint_send(&peer, &h, &payload, NULL, 0), 0);
	for (i = 0; i < 2000 && !atomic_load(&s.closed); i++)
		sleep_ms(1);
	cr_assert_eq(atomic_load(&s.closed), -EPROTONOSUPPORT);
	cr_assert(t_log_contains("unsupported protocol version 3"));
	cr_assert_eq(uvh_engine_unwatch(e, &s.w), -ENOENT, "already detached");
	uvh_engine_destroy(e);
	for (i = 0; i < 3; i++)
		close(efd[i]);
	uvh_endpoint_close(&peer);
	sw_fini(&s);
	cr_assert_eq(t_count_fds(), fds);
}

Test(engine, socket_messages_with_fds_event) { socket_messages(UVH_ENGINE_EVENT); }
Test(engine, socket_messages_with_fds_poll) { socket_messages(UVH_ENGINE_POLL); }

/* The peer closing ends the watch with -ECONNRESET; no fd leaks. */
Test(engine, socket_peer_close)
{
	struct uvh_engine *e;
	struct sock_watch s;
	int sv[2], fds, i;

	fds = t_count_fds();
	e = engine_new("uvh-sock", 1, UVH_ENGINE_ADAPTIVE);
	t_socketpair(sv);
	sw_init(&s, e, sv[0]);
	cr_assert_eq(uvh_engine_start(e), 0);
	cr_assert_eq(uvh_engine_watch(e, &s.w), 0);
	close(sv[1]);
	for (i = 0; i < 2000 && !atomic_load(&s.closed); i++)
		sleep_ms(1);
	cr_assert_eq(atomic_load(&s.closed), -ECONNRESET);
	uvh_engine_destroy(e);
	sw_fini(&s);
	cr_assert_eq(t_count_fds(), fds);
}

/* Unwatch while a read is in flight; a half message stays in the endpoint
 * and plain uvh_endpoint_recv() finishes it. Watching survives a restart. */
Test(engine, socket_unwatch_keeps_partial_message)
{
	struct uvh_engine *e;
	struct sock_watch s;
	struct uvh_msg_header h = { .request = 5, .flags = UVH_FLAG_VERSION, .size = 8 };
	struct uvh_msg m;
	uint64_t payload = 77;
	struct uvh_endpoint peer;
	int sv[2], fds;
	char raw[sizeof(h) + 8];

	fds = t_count_fds();
	e = engine_new("uvh-sock", 0, UVH_ENGINE_EVENT);
	t_socketpair(sv);
	sw_init(&s, e, sv[0]);
	uvh_endpoint_init(&peer, sv[1], NULL);
	cr_assert_eq(uvh_engine_watch(e, &s.w), 0);
	cr_assert_eq(uvh_engine_start(e), 0);
	/* Stop and start again: the watch is re-armed by the new ring. */
	cr_assert_eq(uvh_engine_stop(e), 0);
	cr_assert_eq(uvh_engine_start(e), 0);
	cr_assert_eq(uvh_endpoint_send(&peer, &h, &payload, NULL, 0), 0);
	cr_assert_eq(sw_count(&s, 1, 2000), 1);
	cr_assert_eq(s.got[0].payload.u64, 77);
	/* Half a message: the header only. */
	memcpy(raw, &h, sizeof(h));
	memcpy(raw + sizeof(h), &payload, 8);
	cr_assert_eq(write(sv[1], raw, sizeof(h)), (ssize_t)sizeof(h));
	sleep_ms(20);
	cr_assert_eq(uvh_engine_unwatch(e, &s.w), 0);
	cr_assert_eq(uvh_engine_unwatch(e, &s.w), -ENOENT);
	cr_assert_eq(write(sv[1], raw + sizeof(h), 8), 8);
	memset(&m, 0, sizeof(m));
	cr_assert_eq(uvh_endpoint_recv(&s.ep, &m), 0);
	cr_assert_eq(m.hdr.request, 5);
	cr_assert_eq(m.payload.u64, 77);
	cr_assert_eq(sw_count(&s, 2, 1), 1, "no callback after unwatch");
	uvh_engine_destroy(e);
	uvh_endpoint_close(&peer);
	sw_fini(&s);
	cr_assert_eq(t_count_fds(), fds);
}

/* ---- timers --------------------------------------------------------------------- */

struct tick {
	struct uvh_engine_timer t;
	_Atomic unsigned int n;
	unsigned int self_delete_at;
	struct uvh_engine *e;
};

static void on_tick(struct uvh_engine_timer *t)
{
	struct tick *k = t->opaque;
	unsigned int n = atomic_fetch_add(&k->n, 1) + 1;

	if (k->self_delete_at && n == k->self_delete_at)
		uvh_engine_del_timer(k->e, t);
}

static unsigned int wait_ticks(struct tick *k, unsigned int want, int timeout_ms)
{
	int i;

	for (i = 0; i < timeout_ms && atomic_load(&k->n) < want; i++)
		sleep_ms(1);
	return atomic_load(&k->n);
}

static void timers(enum uvh_engine_mode mode)
{
	/* static: a failed assertion must not leave the engine a dead stack */
	static struct tick a, b;
	struct uvh_engine *e = engine_new("uvh-timer", 0, mode);
	struct uvh_engine_stats st;
	unsigned int na, nb;
	uint64_t t0, dt;

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	a.t.opaque = &a;
	b.t.opaque = &b;
	b.self_delete_at = 3;
	b.e = e;
	cr_assert_eq(uvh_engine_add_timer(e, &a.t, 5, on_tick), 0);	/* before start */
	cr_assert_eq(uvh_engine_add_timer(e, &a.t, 5, on_tick), -EBUSY);
	cr_assert_eq(uvh_engine_add_timer(e, &b.t, 0, on_tick), -EINVAL);
	t0 = uvh_now_ns();
	cr_assert_eq(uvh_engine_start(e), 0);
	cr_assert_eq(uvh_engine_add_timer(e, &b.t, 2, on_tick), 0);	/* while running */
	na = wait_ticks(&a, 10, 3000);
	dt = uvh_now_ns() - t0;
	cr_assert_geq(na, 10, "5 ms timer fired %u times in 3 s", na);
	/* Re-armed after each expiry: never faster than its period. */
	cr_assert_leq(na, dt / 5000000u + 1, "%u expiries in %lu us", na,
		      (unsigned long)(dt / 1000));
	cr_assert_eq(wait_ticks(&b, 3, 3000), 3);
	cr_assert_eq(uvh_engine_del_timer(e, &a.t), 0);
	cr_assert_eq(uvh_engine_del_timer(e, &a.t), -ENOENT);
	na = atomic_load(&a.n);
	nb = atomic_load(&b.n);
	sleep_ms(30);
	cr_assert_eq(atomic_load(&a.n), na, "no expiry after del_timer");
	cr_assert_eq(nb, 3, "deleted itself at its third expiry");
	cr_assert_eq(atomic_load(&b.n), 3);
	uvh_engine_stats(e, &st);
	cr_assert_eq(st.timer_fires, na + nb);
	uvh_engine_destroy(e);
}

Test(engine, timers_fire_event) { timers(UVH_ENGINE_EVENT); }
Test(engine, timers_fire_poll) { timers(UVH_ENGINE_POLL); }

/* ---- queues while running ------------------------------------------------------- */

Test(engine, add_remove_queue_while_running)
{
	struct rig a, b;
	struct uvh_engine *e;
	uint16_t used_before;
	int i;

	rig_init(&a, false, true);
	rig_init(&b, true, true);
	e = engine_new("uvh-addrm", 1, UVH_ENGINE_ADAPTIVE);
	cr_assert_eq(uvh_engine_add_queue(e, &a.q), 0);
	cr_assert_eq(uvh_engine_start(e), 0);
	cr_assert(drive(&a, 3000, 16, 5000));
	/* Add b while a is being served. */
	cr_assert_eq(uvh_engine_add_queue(e, &b.q), 0);
	cr_assert_eq(uvh_engine_add_queue(e, &b.q), -EBUSY);
	cr_assert(drive(&b, 3000, 16, 5000));
	cr_assert(drive(&a, 6000, 16, 5000));
	/* Remove a: chains published afterwards are not touched. */
	cr_assert_eq(uvh_engine_remove_queue(e, &a.q), 0);
	cr_assert_eq(uvh_engine_remove_queue(e, &a.q), -ENOENT);
	used_before = a.vq.used_idx;
	cr_assert_eq(drv_add(&a, a.sent + 4, 4), 4);
	eventfd_write(a.kick, 1);
	sleep_ms(30);
	cr_assert_eq(a.vq.used_idx, used_before, "a removed queue was served");
	cr_assert_eq(drv_collect(&a), 0);
	cr_assert(drive(&b, 6000, 16, 5000));
	/* Back in: the pending chains complete. */
	cr_assert_eq(uvh_engine_add_queue(e, &a.q), 0);
	cr_assert(drive(&a, a.sent, 16, 5000));
	/* Churn: remove and add repeatedly while b runs. */
	for (i = 0; i < 50; i++) {
		cr_assert_eq(uvh_engine_remove_queue(e, &a.q), 0);
		cr_assert_eq(uvh_engine_add_queue(e, &a.q), 0);
		cr_assert(drive(&b, b.sent + 20, 16, 2000));
		cr_assert(drive(&a, a.sent + 20, 16, 2000));
	}
	uvh_engine_destroy(e);
	check_rig(&a, a.sent);
	check_rig(&b, b.sent);
	rig_fini(&a);
	rig_fini(&b);
}

/* Two engines in one process, one per core, each with its own queue. */
Test(engine, two_engines)
{
	struct rig r0, r1;
	struct uvh_engine *e0, *e1;
	struct drive_job j0 = { 0 }, j1 = { 0 };
	struct uvh_engine_stats s0, s1;

	rig_init(&r0, false, true);
	rig_init(&r1, true, true);
	e0 = engine_new("uvh-e0", 0, UVH_ENGINE_ADAPTIVE);
	e1 = engine_new("uvh-e1", 1, UVH_ENGINE_EVENT);
	cr_assert_eq(uvh_engine_add_queue(e0, &r0.q), 0);
	cr_assert_eq(uvh_engine_add_queue(e1, &r1.q), 0);
	cr_assert_eq(uvh_engine_add_queue(e1, &r0.q), -EBUSY, "a queue has one engine");
	cr_assert_eq(uvh_engine_start(e0), 0);
	cr_assert_eq(uvh_engine_start(e1), 0);
	j0.r = &r0;
	j1.r = &r1;
	j0.total = j1.total = 10000;
	j0.batch = j1.batch = 16;
	j0.timeout_ms = j1.timeout_ms = 5000;
	cr_assert_eq(pthread_create(&j0.th, NULL, drive_thread, &j0), 0);
	cr_assert_eq(pthread_create(&j1.th, NULL, drive_thread, &j1), 0);
	pthread_join(j0.th, NULL);
	pthread_join(j1.th, NULL);
	cr_assert(j0.ok && j1.ok);
	uvh_engine_stats(e0, &s0);
	uvh_engine_stats(e1, &s1);
	cr_assert_eq(s0.queues, 1);
	cr_assert_eq(s1.queues, 1);
	cr_assert_str_eq(uvh_engine_name(e0), "uvh-e0");
	uvh_engine_destroy(e0);
	uvh_engine_destroy(e1);
	check_rig(&r0, 10000);
	check_rig(&r1, 10000);
	rig_fini(&r0);
	rig_fini(&r1);
}

/* ---- stop, requests, errors ------------------------------------------------------ */

static void stop_prompt(enum uvh_engine_mode mode)
{
	struct uvh_engine *e = engine_new("uvh-stop", 1, mode);
	uint64_t t0, dt;
	int i;

	for (i = 0; i < 3; i++) {
		cr_assert_eq(uvh_engine_start(e), 0);
		cr_assert_eq(uvh_engine_start(e), -EALREADY);
		sleep_ms(20);	/* asleep, or deep in polling */
		t0 = uvh_now_ns();
		cr_assert_eq(uvh_engine_stop(e), 0);
		dt = uvh_now_ns() - t0;
		cr_assert_lt(dt, 100000000ull, "stop took %lu us", (unsigned long)(dt / 1000));
	}
	uvh_engine_destroy(e);
}

Test(engine, stop_is_prompt_event) { stop_prompt(UVH_ENGINE_EVENT); }
Test(engine, stop_is_prompt_poll) { stop_prompt(UVH_ENGINE_POLL); }
Test(engine, stop_is_prompt_adaptive) { stop_prompt(UVH_ENGINE_ADAPTIVE); }

static int on_engine_fn(void *ctx, void *arg)
{
	struct uvh_engine *e = ctx;

	*(int *)arg += 1;
	return uvh_engine_is_current(e) ? 42 : -1;
}

static void post_fn(void *ctx, struct uvh_dispatch_req *req)
{
	req->result = ctx && uvh_engine_is_current(ctx) ? 7 : -1;
}

static int stop_self(void *ctx, void *arg)
{
	(void)arg;
	return uvh_engine_stop(ctx);
}

Test(engine, call_and_post)
{
	struct uvh_engine *e = engine_new("uvh-call", 1, UVH_ENGINE_EVENT);
	struct uvh_completion done;
	struct uvh_dispatch_req req = { .fn = post_fn, .done = &done };
	int count = 0;

	/* Not running: runs right here. */
	cr_assert_eq(uvh_engine_call(e, on_engine_fn, &count), -1);
	cr_assert_eq(uvh_engine_start(e), 0);
	cr_assert_eq(uvh_engine_call(e, on_engine_fn, &count), 42);
	cr_assert_eq(count, 2);
	uvh_completion_init(&done);
	cr_assert_eq(uvh_engine_post(e, &req), 0);
	cr_assert_eq(uvh_completion_wait(&done, 2000), 0);
	cr_assert_eq(req.result, 7);
	cr_assert_eq(uvh_engine_post(e, NULL), -EINVAL);
	/* A stop asked from the engine's own thread ends the loop. */
	cr_assert_eq(uvh_engine_call(e, stop_self, NULL), 0);
	cr_assert_eq(uvh_engine_stop(e), 0);	/* reaps the thread */
	cr_assert_eq(uvh_engine_stop(e), -EALREADY);
	/* Posted while stopped: runs at the next start. */
	uvh_completion_init(&done);
	req.result = 0;
	cr_assert_eq(uvh_engine_post(e, &req), 0);
	cr_assert_eq(uvh_completion_wait(&done, 50), -ETIMEDOUT);
	cr_assert_eq(uvh_engine_start(e), 0);
	cr_assert_eq(uvh_completion_wait(&done, 2000), 0);
	cr_assert_eq(req.result, 7);
	uvh_engine_destroy(e);
}

Test(engine, bad_arguments)
{
	struct uvh_engine_opts o = { .cpu = 4096, .numa_node = -1 };
	struct uvh_engine *e;
	struct rig r;
	int fds, sv[2];

	fds = t_count_fds();
	errno = 0;
	cr_assert_null(uvh_engine_create(&o));
	cr_assert_eq(errno, EINVAL);
	o.cpu = -1;
	o.numa_node = 1000;
	cr_assert_null(uvh_engine_create(&o));
	cr_assert_eq(errno, EINVAL);
	o.numa_node = -1;
	o.mode = (enum uvh_engine_mode)9;
	cr_assert_null(uvh_engine_create(&o));
	cr_assert_eq(errno, EINVAL);
	o.mode = UVH_ENGINE_ADAPTIVE;
	o.nap_min_us = 50;	/* longer than the longest nap */
	o.nap_max_us = 20;
	cr_assert_null(uvh_engine_create(&o));
	cr_assert_eq(errno, EINVAL);
	o.nap_min_us = 0;
	o.nap_max_us = 1000001;	/* more than a second */
	cr_assert_null(uvh_engine_create(&o));
	cr_assert_eq(errno, EINVAL);
	o.nap_max_us = 0;

	e = uvh_engine_create(NULL);
	cr_assert(e);
	rig_init(&r, false, true);
	t_socketpair(sv);
	r.q.kick_fd = sv[0];	/* not an eventfd */
	cr_assert_eq(uvh_engine_add_queue(e, &r.q), -EINVAL);
	r.q.kick_fd = 1000;	/* not open */
	cr_assert_eq(uvh_engine_add_queue(e, &r.q), -EINVAL);
	r.q.kick_fd = r.kick;
	r.q.process = NULL;
	cr_assert_eq(uvh_engine_add_queue(e, &r.q), -EINVAL);
	r.q.process = sink_process;
	cr_assert_eq(uvh_engine_remove_queue(e, &r.q), -ENOENT);
	cr_assert_eq(uvh_engine_add_queue(e, &r.q), 0);
	cr_assert_eq(uvh_engine_add_queue(e, &r.q), -EBUSY);
	cr_assert_eq(uvh_engine_stop(e), -EALREADY);
	uvh_engine_destroy(e);
	cr_assert_null(r.q.engine, "destroy detaches");
	close(sv[0]);
	close(sv[1]);
	rig_fini(&r);
	cr_assert_eq(t_count_fds(), fds);
}

/* A hostile ring breaks its queue: reported once (err eventfd + callback),
 * the engine and its other queues carry on. */
Test(engine, broken_queue_reported_once)
{
	struct rig bad, good;
	struct uvh_engine *e;
	struct uvh_vring_avail *avail;
	eventfd_t v;
	uint16_t idx;

	rig_init(&bad, false, true);
	rig_init(&good, false, true);
	e = engine_new("uvh-broken", 1, UVH_ENGINE_EVENT);
	cr_assert_eq(uvh_engine_add_queue(e, &bad.q), 0);
	cr_assert_eq(uvh_engine_add_queue(e, &good.q), 0);
	cr_assert_eq(uvh_engine_start(e), 0);
	/* A head index past the ring. */
	t_log_capture();
	avail = bad.drv.driver_area;
	idx = avail->idx;
	avail->ring[idx % QSIZE] = QSIZE + 5;
	atomic_thread_fence(memory_order_seq_cst);
	avail->idx = (uint16_t)(idx + 1);
	eventfd_write(bad.kick, 1);
	cr_assert(wait_call(bad.err, 2000), "VRING_ERR not signalled");
	cr_assert(uvh_vq_broken(&bad.vq));
	cr_assert_eq(bad.vq.error, UVH_VQ_ERR_DESC_INDEX);
	eventfd_write(bad.kick, 1);
	cr_assert(drive(&good, 3000, 16, 5000));
	cr_assert_eq(atomic_load(&bad.errors_reported), 1);
	cr_assert(t_log_contains("no longer served"));
	cr_assert_neq(eventfd_read(bad.err, &v), 0, "err eventfd written once");
	uvh_engine_destroy(e);
	check_rig(&good, 3000);
	rig_fini(&bad);
	rig_fini(&good);
}
