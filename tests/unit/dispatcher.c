/* SPDX-License-Identifier: MIT */
/*
 * The lock-free ring (both implementations: ours and rte_ring when built
 * with DPDK) and the dispatcher built on it: completions, draining on an
 * engine-like thread, the sleep/wake handshake under a race stress.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"
#include "dispatcher.h"
#include "ring.h"
#include "t_helpers.h"

/* ---- helpers ------------------------------------------------------------ */

static void need_impl(unsigned int flags)
{
	if ((flags & UVH_RING_RTE) && !uvh_ring_rte_available())
		cr_skip_test("built without DPDK: no rte_ring implementation");
}

static struct uvh_ring *ring_new(unsigned int count, unsigned int flags)
{
	struct uvh_ring *r = uvh_ring_create(count, flags);

	cr_assert_not_null(r, "uvh_ring_create(%u, %#x): errno %d", count, flags, errno);
	cr_assert_str_eq(uvh_ring_impl_name(r), (flags & UVH_RING_RTE) ? "rte" : "uvh");
	return r;
}

/* Tiny xorshift: deterministic per thread. */
static uint32_t rnd(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/* Run a test body once per implementation. */
#define RING_TEST(name)							\
	static void name(unsigned int flags);				\
	Test(ring_uvh, name) { name(0); }				\
	Test(ring_rte, name) { need_impl(UVH_RING_RTE); name(UVH_RING_RTE); } \
	static void name(unsigned int flags)

/* ---- ring: creation ------------------------------------------------------ */

Test(ring, create_checks_arguments)
{
	struct uvh_ring *r;

	errno = 0;
	cr_assert_null(uvh_ring_create(0, 0));
	cr_assert_eq(errno, EINVAL);
	errno = 0;
	cr_assert_null(uvh_ring_create(UVH_RING_MAX_COUNT + 1, 0));
	cr_assert_eq(errno, EINVAL);
	errno = 0;
	cr_assert_null(uvh_ring_create(8, 0x80));
	cr_assert_eq(errno, EINVAL);
	if (!uvh_ring_rte_available()) {
		errno = 0;
		cr_assert_null(uvh_ring_create(8, UVH_RING_RTE));
		cr_assert_eq(errno, ENOTSUP);
	}
	uvh_ring_destroy(NULL);

	r = uvh_ring_create(UVH_RING_MAX_COUNT, 0);
	cr_assert_not_null(r);
	cr_assert_eq(uvh_ring_capacity(r), UVH_RING_MAX_COUNT);
	uvh_ring_destroy(r);
}

RING_TEST(capacity_is_rounded_up)
{
	static const unsigned int in[] = { 1, 2, 3, 100, 128, 129, 1000 };
	static const unsigned int out[] = { 1, 2, 4, 128, 128, 256, 1024 };

	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		struct uvh_ring *r = ring_new(in[i], flags);

		cr_assert_eq(uvh_ring_capacity(r), out[i], "count %u", in[i]);
		cr_assert_eq(uvh_ring_count(r), 0);
		uvh_ring_destroy(r);
	}
}

/* ---- ring: single thread ------------------------------------------------- */

RING_TEST(full_ring_refuses_with_enobufs)
{
	struct uvh_ring *r = ring_new(16, flags);
	void *objs[32], *out[32];
	unsigned int i;

	for (i = 0; i < 32; i++)
		objs[i] = (void *)(uintptr_t)(i + 1);
	for (i = 0; i < 16; i++)
		cr_assert_eq(uvh_ring_enqueue(r, objs[i]), 0, "item %u", i);
	cr_assert_eq(uvh_ring_count(r), 16);
	cr_assert_eq(uvh_ring_enqueue(r, objs[16]), -ENOBUFS);
	cr_assert_eq(uvh_ring_enqueue_burst(r, objs, 4), 0);
	cr_assert_eq(uvh_ring_count(r), 16);

	/* one freed slot takes exactly one more */
	cr_assert_eq(uvh_ring_dequeue_burst(r, out, 1), 1);
	cr_assert_eq(out[0], objs[0]);
	cr_assert_eq(uvh_ring_enqueue_burst(r, &objs[16], 4), 1);
	cr_assert_eq(uvh_ring_enqueue(r, objs[17]), -ENOBUFS);

	/* FIFO across the refusals: 2..17 */
	cr_assert_eq(uvh_ring_dequeue_burst(r, out, 32), 16);
	for (i = 0; i < 16; i++)
		cr_assert_eq(out[i], objs[i + 1], "slot %u", i);
	cr_assert_eq(uvh_ring_dequeue_burst(r, out, 32), 0);
	cr_assert_eq(uvh_ring_count(r), 0);
	uvh_ring_destroy(r);
}

RING_TEST(bursts_keep_order_across_wraps)
{
	struct uvh_ring *r = ring_new(64, flags);
	uint32_t seed = 12345;
	uintptr_t next_in = 1, next_out = 1;
	void *buf[100];

	/* random burst sizes, fill levels crossing the end of the ring ~1000 times */
	for (int round = 0; round < 20000; round++) {
		unsigned int n = rnd(&seed) % 100, got, avail;
		unsigned int before = uvh_ring_count(r);
		unsigned int room = 64 - before;

		for (unsigned int i = 0; i < n; i++)
			buf[i] = (void *)(next_in + i);
		got = uvh_ring_enqueue_burst(r, buf, n);
		cr_assert_eq(got, n < room ? n : room, "round %d: n %u room %u got %u",
			     round, n, room, got);
		next_in += got;

		n = rnd(&seed) % 100;
		got = uvh_ring_dequeue_burst(r, buf, n);
		avail = (unsigned int)(next_in - next_out);
		cr_assert_eq(got, n < avail ? n : avail);
		for (unsigned int i = 0; i < got; i++)
			cr_assert_eq((uintptr_t)buf[i], next_out + i);
		next_out += got;
		cr_assert_eq(uvh_ring_count(r), next_in - next_out);
	}
	cr_assert_gt(next_out, 64 * 1000);
	uvh_ring_destroy(r);
}

RING_TEST(zero_length_bursts_and_null_items)
{
	struct uvh_ring *r = ring_new(4, flags);
	void *out[4] = { (void *)1 };

	cr_assert_eq(uvh_ring_enqueue_burst(r, out, 0), 0);
	cr_assert_eq(uvh_ring_dequeue_burst(r, out, 0), 0);
	cr_assert_eq(uvh_ring_dequeue_burst(r, out, 4), 0);
	/* NULL is a valid item */
	cr_assert_eq(uvh_ring_enqueue(r, NULL), 0);
	cr_assert_eq(uvh_ring_count(r), 1);
	cr_assert_eq(uvh_ring_dequeue_burst(r, out, 4), 1);
	cr_assert_null(out[0]);
	uvh_ring_destroy(r);
}

/* ---- ring: producers on threads ------------------------------------------ */

/*
 * Item: producer id (bits 56..63), the producer's enqueue-call number
 * (bits 40..55, wrapping) and its sequence number from 1 (bits 0..39).
 * The consumer checks every item once and in per-producer order, and that
 * what one call enqueued is one contiguous run: once another producer's
 * item follows a run, that call's number never shows up again.
 */
#define IT_PROD_SHIFT	56
#define IT_CALL_SHIFT	40
#define IT_CALL_MASK	0xffffull
#define IT_SEQ_MASK	((1ull << IT_CALL_SHIFT) - 1)

struct mp_ctx {
	struct uvh_ring *r;
	unsigned int id;
	unsigned int items;
	_Atomic int *go;
};

static void *item(unsigned int id, uint64_t call, uint64_t seq)
{
	return (void *)(uintptr_t)(((uint64_t)id << IT_PROD_SHIFT) |
				   ((call & IT_CALL_MASK) << IT_CALL_SHIFT) | seq);
}

static void *mp_producer(void *arg)
{
	struct mp_ctx *c = arg;
	uint32_t seed = 0x9e3779b9u * (c->id + 1);
	uint64_t seq = 1, call = 0;
	void *buf[16];

	while (!atomic_load(c->go))
		;
	while (seq <= c->items) {
		unsigned int n = rnd(&seed) % 16 + 1, got;

		if (n > c->items - seq + 1)
			n = (unsigned int)(c->items - seq + 1);
		call++;
		if (n == 1 && (seed & 2)) {
			if (uvh_ring_enqueue(c->r, item(c->id, call, seq)) == 0)
				seq++;
			else
				sched_yield();
			continue;
		}
		for (unsigned int i = 0; i < n; i++)
			buf[i] = item(c->id, call, seq + i);
		/* all or part; the rest goes in a later call with a new number */
		got = uvh_ring_enqueue_burst(c->r, buf, n);
		if (got == 0)
			sched_yield();
		seq += got;
	}
	return NULL;
}

static void ring_mpsc(unsigned int flags, unsigned int nprod, unsigned int items,
		      unsigned int ring_size)
{
	struct uvh_ring *r = ring_new(ring_size, flags);
	pthread_t th[4];
	struct mp_ctx ctx[4];
	uint64_t next[4] = { 1, 1, 1, 1 };
	uint64_t last_call[4] = { ~0ull, ~0ull, ~0ull, ~0ull };
	bool closed[4] = { false };
	uint64_t total = 0, want = (uint64_t)nprod * items;
	unsigned int prev = ~0u;
	_Atomic int go = 0;
	void *buf[32];

	for (unsigned int p = 0; p < nprod; p++) {
		ctx[p] = (struct mp_ctx){ .r = r, .id = p, .items = items, .go = &go };
		cr_assert_eq(pthread_create(&th[p], NULL, mp_producer, &ctx[p]), 0);
	}
	atomic_store(&go, 1);
	while (total < want) {
		unsigned int n = uvh_ring_dequeue_burst(r, buf, 32);

		for (unsigned int i = 0; i < n; i++) {
			uint64_t v = (uint64_t)(uintptr_t)buf[i];
			unsigned int p = (unsigned int)(v >> IT_PROD_SHIFT);
			uint64_t call = (v >> IT_CALL_SHIFT) & IT_CALL_MASK;
			uint64_t seq = v & IT_SEQ_MASK;

			cr_assert_lt(p, nprod, "item %#llx: bad producer", (unsigned long long)v);
			cr_assert_eq(seq, next[p], "producer %u: got %llu, expected %llu",
				     p, (unsigned long long)seq, (unsigned long long)next[p]);
			cr_assert(!(closed[p] && call == last_call[p]),
				  "producer %u: call %llu split by another producer's item",
				  p, (unsigned long long)call);
			if (prev != ~0u && prev != p)
				closed[prev] = true;
			if (call != last_call[p]) {
				last_call[p] = call;
				closed[p] = false;
			}
			prev = p;
			next[p]++;
		}
		total += n;
		if (!n)
			sched_yield();
	}
	for (unsigned int p = 0; p < nprod; p++) {
		cr_assert_eq(pthread_join(th[p], NULL), 0);
		cr_assert_eq(next[p], (uint64_t)items + 1, "producer %u", p);
	}
	cr_assert_eq(uvh_ring_dequeue_burst(r, buf, 32), 0);
	cr_assert_eq(uvh_ring_count(r), 0);
	uvh_ring_destroy(r);
}

RING_TEST(mpsc_1_producer) { ring_mpsc(flags, 1, 200000, 64); }
RING_TEST(mpsc_2_producers) { ring_mpsc(flags, 2, 100000, 64); }
RING_TEST(mpsc_3_producers) { ring_mpsc(flags, 3, 60000, 32); }
RING_TEST(mpsc_4_producers) { ring_mpsc(flags, 4, 50000, 1024); }

/* ---- completion ---------------------------------------------------------- */

Test(completion, wait_times_out_then_sees_signal)
{
	struct uvh_completion c;
	uint64_t t0;

	uvh_completion_init(&c);
	cr_assert(!uvh_completion_done(&c));
	cr_assert_eq(uvh_completion_wait(&c, 0), -ETIMEDOUT);
	t0 = uvh_now_ms();
	cr_assert_eq(uvh_completion_wait(&c, 30), -ETIMEDOUT);
	cr_assert_geq(uvh_now_ms() - t0, 29);
	uvh_completion_signal(&c);
	cr_assert(uvh_completion_done(&c));
	cr_assert_eq(uvh_completion_wait(&c, 0), 0);
	cr_assert_eq(uvh_completion_wait(&c, -1), 0);
}

struct late_signal {
	struct uvh_completion *c;
	int *value;
};

static void *signal_later(void *arg)
{
	struct late_signal *ls = arg;
	struct timespec ts = { .tv_nsec = 20 * 1000 * 1000 };

	nanosleep(&ts, NULL);
	*ls->value = 42;	/* plain write, published by the signal */
	uvh_completion_signal(ls->c);
	return NULL;
}

Test(completion, signal_from_another_thread_wakes_sleeper)
{
	for (int i = 0; i < 3; i++) {
		struct uvh_completion c;
		int value = 0;
		struct late_signal ls = { &c, &value };
		pthread_t th;

		uvh_completion_init(&c);
		cr_assert_eq(pthread_create(&th, NULL, signal_later, &ls), 0);
		/* i == 2: no limit */
		cr_assert_eq(uvh_completion_wait(&c, i == 2 ? -1 : 5000), 0);
		cr_assert_eq(value, 42);
		pthread_join(th, NULL);
	}
}

/* ---- dispatcher: one thread ---------------------------------------------- */

static void *volatile seen_ctx;
static _Atomic unsigned int fn_calls;

/* result = 2 * arg + 1, so each poster can check it got its own answer */
static void twice_plus_one(void *engine_ctx, struct uvh_dispatch_req *req)
{
	seen_ctx = engine_ctx;
	atomic_fetch_add(&fn_calls, 1);
	if (!engine_ctx) {
		req->result = req->result == -ECANCELED ? -ECANCELED : -EINVAL;
		return;
	}
	req->result = (int)(2 * (intptr_t)req->arg + 1);
}

static void make_req(struct uvh_dispatch_req *req, struct uvh_completion *done, intptr_t arg)
{
	uvh_completion_init(done);
	*req = (struct uvh_dispatch_req){
		.fn = twice_plus_one, .arg = (void *)arg, .result = -1, .done = done,
	};
}

#define DISP_TEST(name)							\
	static void name(unsigned int flags);				\
	Test(dispatcher_uvh, name) { name(0); }				\
	Test(dispatcher_rte, name) { need_impl(UVH_RING_RTE); name(UVH_DISPATCHER_RTE); } \
	static void name(unsigned int flags)

DISP_TEST(post_drain_budget_and_full_inbox)
{
	int fds = t_count_fds();
	struct uvh_dispatcher *d = uvh_dispatcher_create(4, flags);
	struct uvh_dispatch_req req[5];
	struct uvh_completion done[5];
	struct uvh_dispatcher_stats st;
	int ctx;

	cr_assert_not_null(d);
	cr_assert_eq(t_count_fds(), fds + 1);
	cr_assert_geq(uvh_dispatcher_wake_fd(d), 0);
	atomic_store(&fn_calls, 0);

	cr_assert_eq(uvh_dispatcher_post(d, NULL), -EINVAL);
	make_req(&req[0], &done[0], 0);
	req[0].fn = NULL;
	cr_assert_eq(uvh_dispatcher_post(d, &req[0]), -EINVAL);

	for (int i = 0; i < 5; i++)
		make_req(&req[i], &done[i], i);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(uvh_dispatcher_post(d, &req[i]), 0);
	cr_assert_eq(uvh_dispatcher_post(d, &req[4]), -ENOBUFS);
	cr_assert_eq(uvh_dispatcher_pending(d), 4);
	cr_assert(!uvh_completion_done(&done[0]));

	cr_assert_eq(uvh_dispatcher_drain(d, &ctx, 3), 3);
	cr_assert_eq(seen_ctx, &ctx);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(uvh_completion_wait(&done[i], 0), 0);
		cr_assert_eq(req[i].result, 2 * i + 1);
	}
	cr_assert(!uvh_completion_done(&done[3]));
	cr_assert_eq(req[3].result, -1);
	cr_assert_eq(uvh_dispatcher_post(d, &req[4]), 0);
	cr_assert_eq(uvh_dispatcher_drain(d, &ctx, 0), 2);
	cr_assert_eq(req[3].result, 7);
	cr_assert_eq(req[4].result, 9);
	cr_assert_eq(uvh_dispatcher_drain(d, &ctx, 0), 0);
	cr_assert_eq(atomic_load(&fn_calls), 5);

	uvh_dispatcher_get_stats(d, &st);
	cr_assert_eq(st.posted, 5);
	cr_assert_eq(st.run, 5);
	cr_assert_eq(st.wakeups, 0, "posts to an awake engine must not write the eventfd");
	uvh_dispatcher_destroy(d);
	cr_assert_eq(t_count_fds(), fds);
}

Test(dispatcher, create_checks_arguments)
{
	int fds = t_count_fds();

	errno = 0;
	cr_assert_null(uvh_dispatcher_create(16, 0x40));
	cr_assert_eq(errno, EINVAL);
	errno = 0;
	cr_assert_null(uvh_dispatcher_create(UVH_RING_MAX_COUNT + 1, 0));
	cr_assert_eq(errno, EINVAL);
	if (!uvh_ring_rte_available()) {
		errno = 0;
		cr_assert_null(uvh_dispatcher_create(16, UVH_DISPATCHER_RTE));
		cr_assert_eq(errno, ENOTSUP);
	}
	cr_assert_eq(t_count_fds(), fds);
	uvh_dispatcher_destroy(NULL);
}

static bool fd_readable(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	return poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN);
}

DISP_TEST(eventfd_written_only_when_asleep)
{
	struct uvh_dispatcher *d = uvh_dispatcher_create(16, flags);
	struct uvh_dispatch_req req[3];
	struct uvh_completion done[3];
	struct uvh_dispatcher_stats st;
	int efd, ctx;

	cr_assert_not_null(d);
	efd = uvh_dispatcher_wake_fd(d);
	for (int i = 0; i < 3; i++)
		make_req(&req[i], &done[i], i);

	/* awake: no write */
	cr_assert_eq(uvh_dispatcher_post(d, &req[0]), 0);
	cr_assert(!fd_readable(efd));
	/* a waiting request forbids sleeping */
	cr_assert_eq(uvh_dispatcher_prepare_sleep(d), -EAGAIN);
	cr_assert_eq(uvh_dispatcher_post(d, &req[1]), 0);
	cr_assert(!fd_readable(efd), "a refused sleep must be withdrawn");
	cr_assert_eq(uvh_dispatcher_drain(d, &ctx, 0), 2);

	/* asleep: the first post writes, the next one does not again */
	cr_assert_eq(uvh_dispatcher_prepare_sleep(d), 0);
	cr_assert(!fd_readable(efd));
	cr_assert_eq(uvh_dispatcher_post(d, &req[2]), 0);
	cr_assert(fd_readable(efd));
	uvh_dispatcher_get_stats(d, &st);
	cr_assert_eq(st.wakeups, 1);
	uvh_dispatcher_woke(d);
	cr_assert(!fd_readable(efd), "woke() consumes the eventfd");
	cr_assert_eq(uvh_dispatcher_drain(d, &ctx, 0), 1);
	cr_assert_eq(req[2].result, 5);

	/* kick writes regardless */
	uvh_dispatcher_kick(d);
	cr_assert(fd_readable(efd));
	uvh_dispatcher_woke(d);
	cr_assert(!fd_readable(efd));
	/* woke() on an empty eventfd is harmless */
	uvh_dispatcher_woke(d);
	uvh_dispatcher_destroy(d);
}

DISP_TEST(destroy_cancels_queued_requests)
{
	int fds = t_count_fds();
	struct uvh_dispatcher *d = uvh_dispatcher_create(8, flags);
	struct uvh_dispatch_req req[3];
	struct uvh_completion done[3];

	cr_assert_not_null(d);
	atomic_store(&fn_calls, 0);
	for (int i = 0; i < 3; i++) {
		make_req(&req[i], &done[i], i);
		cr_assert_eq(uvh_dispatcher_post(d, &req[i]), 0);
	}
	uvh_dispatcher_destroy(d);
	cr_assert_eq(atomic_load(&fn_calls), 3, "fn gets a chance to release");
	cr_assert_null(seen_ctx);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(uvh_completion_wait(&done[i], 0), 0);
		cr_assert_eq(req[i].result, -ECANCELED);
	}
	cr_assert_eq(t_count_fds(), fds);
}

/* ---- dispatcher: an engine-like thread ----------------------------------- */

struct engine_sim {
	struct uvh_dispatcher *d;
	_Atomic int stop;
	_Atomic int lost;	/* slept this long with requests waiting */
	pthread_t tid;
	unsigned int sleeps;
	unsigned int refused;	/* prepare_sleep found a request: the race was hit */
	unsigned int run;
};

static _Thread_local bool on_engine_thread;

/* The engine's loop: drain, and sleep on the eventfd when idle. */
static void *engine_loop(void *arg)
{
	struct engine_sim *e = arg;
	struct pollfd pfd = { .fd = uvh_dispatcher_wake_fd(e->d), .events = POLLIN };

	uint32_t seed = 99;

	on_engine_thread = true;
	while (!atomic_load(&e->stop)) {
		unsigned int n = uvh_dispatcher_drain(e->d, e, 8);

		e->run += n;
		if (n)
			continue;
		/* a queue sweep (0..~20 us) between the last drain and the sleep: posts land here */
		for (uint32_t spin = rnd(&seed) % 32768; spin; spin--)
			__asm__ volatile("" ::: "memory");
		/* and when the posters share our core, let them in right here */
		if (seed & 1)
			sched_yield();
		if (uvh_dispatcher_prepare_sleep(e->d) < 0) {
			e->refused++;
			continue;
		}
		e->sleeps++;
		/* a lost wake-up shows as a 3 s sleep with work waiting */
		if (poll(&pfd, 1, 3000) == 0 && uvh_dispatcher_pending(e->d))
			atomic_store(&e->lost, 1);
		uvh_dispatcher_woke(e->d);
	}
	return NULL;
}

static void engine_start(struct engine_sim *e, unsigned int capacity, unsigned int flags)
{
	memset(e, 0, sizeof(*e));
	e->d = uvh_dispatcher_create(capacity, flags);
	cr_assert_not_null(e->d);
	cr_assert_eq(pthread_create(&e->tid, NULL, engine_loop, e), 0);
}

static void engine_stop(struct engine_sim *e)
{
	atomic_store(&e->stop, 1);
	uvh_dispatcher_kick(e->d);
	cr_assert_eq(pthread_join(e->tid, NULL), 0);
	cr_assert_eq(atomic_load(&e->lost), 0, "the engine slept with requests waiting");
	uvh_dispatcher_destroy(e->d);
}

struct poster {
	struct engine_sim *e;
	unsigned int id;
	unsigned int count;
	int failed;
};

static void check_engine(void *engine_ctx, struct uvh_dispatch_req *req)
{
	struct engine_sim *e = engine_ctx;

	/* runs on the engine's thread, with its context */
	if (!e || !on_engine_thread) {
		req->result = -EPERM;
		return;
	}
	req->result = (int)(2 * (intptr_t)req->arg + 1);
}

static void *poster_thread(void *arg)
{
	struct poster *p = arg;
	uint32_t seed = p->id + 7;

	for (unsigned int i = 0; i < p->count; i++) {
		struct uvh_completion done;
		intptr_t v = (intptr_t)(p->id * 1000000 + i);
		struct uvh_dispatch_req req = {
			.fn = check_engine, .arg = (void *)v, .done = &done,
		};
		int ret;

		uvh_completion_init(&done);
		/* vary the timing so posts hit the engine at every point of its loop */
		for (uint32_t spin = rnd(&seed) % 1024; spin; spin--)
			__asm__ volatile("" ::: "memory");
		while ((ret = uvh_dispatcher_post(p->e->d, &req)) == -ENOBUFS)
			sched_yield();
		if (ret) {
			p->failed = 1;
			break;
		}
		/* half the time poll for the answer: the next post comes at once */
		if (i % 2)
			for (uint32_t spin = 0; spin < 100000 && !uvh_completion_done(&done); spin++)
				sched_yield();
		if (uvh_completion_wait(&done, 2000) != 0 || req.result != 2 * v + 1) {
			p->failed = 2;
			break;
		}
	}
	return NULL;
}

static void posters_run(unsigned int flags, unsigned int nposters, unsigned int count,
			unsigned int capacity, bool check_races)
{
	struct engine_sim e;
	struct poster p[4];
	pthread_t th[4];
	struct uvh_dispatcher_stats st;

	engine_start(&e, capacity, flags);
	for (unsigned int i = 0; i < nposters; i++) {
		p[i] = (struct poster){ .e = &e, .id = i, .count = count };
		cr_assert_eq(pthread_create(&th[i], NULL, poster_thread, &p[i]), 0);
	}
	for (unsigned int i = 0; i < nposters; i++) {
		cr_assert_eq(pthread_join(th[i], NULL), 0);
		cr_assert_eq(p[i].failed, 0, "poster %u failed (%d)", i, p[i].failed);
	}
	uvh_dispatcher_get_stats(e.d, &st);
	engine_stop(&e);
	cr_assert_eq(e.run, nposters * count);
	cr_assert_eq(st.posted, nposters * count);
	/* the loop did go to sleep, posts woke it, and posts raced with sleeps */
	cr_log_info("%u sleeps, %llu wake-ups, %u sleeps refused", e.sleeps,
		    (unsigned long long)st.wakeups, e.refused);
	cr_assert_gt(e.sleeps, 0);
	cr_assert_gt(st.wakeups, 0);
	if (check_races)
		cr_assert_gt(e.refused, 0, "no post landed between a drain and a sleep");
}

/* several posters, each waiting for its answer; the engine drains and sleeps */
DISP_TEST(posters_on_threads_get_their_results) { posters_run(flags, 3, 3000, 4, false); }

/* one poster against the sleeping engine: every post races with a sleep */
DISP_TEST(no_lost_wakeup_under_sleep_post_races) { posters_run(flags, 1, 20000, 64, true); }

/* ---- uvh_dispatch_call --------------------------------------------------- */

static _Atomic int call_runs;

static int add_ten(void *engine_ctx, void *arg)
{
	struct engine_sim *e = engine_ctx;

	atomic_fetch_add(&call_runs, 1);
	if (!e || !on_engine_thread)
		return -EPERM;
	return *(int *)arg + 10;
}

static int fail_eio(void *engine_ctx, void *arg)
{
	(void)engine_ctx;
	(void)arg;
	return -EIO;
}

DISP_TEST(call_returns_fn_result)
{
	struct engine_sim e;
	int v = 5;

	engine_start(&e, 16, flags);
	atomic_store(&call_runs, 0);
	for (int i = 0; i < 100; i++) {
		v = i;
		cr_assert_eq(uvh_dispatch_call(e.d, add_ten, &v, 2000), i + 10);
	}
	cr_assert_eq(uvh_dispatch_call(e.d, fail_eio, NULL, -1), -EIO);
	cr_assert_eq(uvh_dispatch_call(e.d, NULL, NULL, -1), -EINVAL);
	cr_assert_eq(atomic_load(&call_runs), 100);
	engine_stop(&e);
}

DISP_TEST(call_timeout_cancels_fn)
{
	struct uvh_dispatcher *d = uvh_dispatcher_create(16, flags);
	int *arg = malloc(sizeof(*arg));
	uint64_t t0;

	/* no engine drains: the call times out and fn must never run */
	cr_assert_not_null(d);
	atomic_store(&call_runs, 0);
	*arg = 1;
	t0 = uvh_now_ms();
	cr_assert_eq(uvh_dispatch_call(d, add_ten, arg, 50), -ETIMEDOUT);
	cr_assert_geq(uvh_now_ms() - t0, 49);
	cr_assert_eq(uvh_dispatch_call(d, add_ten, arg, 0), -ETIMEDOUT);
	free(arg);	/* allowed after -ETIMEDOUT */
	cr_assert_eq(uvh_dispatcher_pending(d), 2);
	/* the engine comes back: the abandoned requests are dropped (ASan: freed) */
	cr_assert_eq(uvh_dispatcher_drain(d, d, 0), 2);
	cr_assert_eq(atomic_load(&call_runs), 0);
	uvh_dispatcher_destroy(d);
}

struct pending_call {
	struct uvh_dispatcher *d;
	int ret;
};

static void *call_forever(void *arg)
{
	struct pending_call *pc = arg;

	pc->ret = uvh_dispatch_call(pc->d, add_ten, NULL, -1);
	return NULL;
}

DISP_TEST(call_cancelled_by_destroy)
{
	struct pending_call pc = { .ret = 1 };
	pthread_t th;

	struct pollfd pfd;
	uint64_t v;

	pc.d = uvh_dispatcher_create(16, flags);
	cr_assert_not_null(pc.d);
	atomic_store(&call_runs, 0);
	/* an engine about to sleep: the call's post ends by waking it, its
	 * last touch of the dispatcher; destroying before that would free
	 * what the poster still reads */
	cr_assert_eq(uvh_dispatcher_prepare_sleep(pc.d), 0);
	cr_assert_eq(pthread_create(&th, NULL, call_forever, &pc), 0);
	pfd = (struct pollfd){ .fd = uvh_dispatcher_wake_fd(pc.d), .events = POLLIN };
	cr_assert_eq(poll(&pfd, 1, 5000), 1, "the call never woke the engine");
	cr_assert_eq(read(pfd.fd, &v, sizeof(v)), (ssize_t)sizeof(v));
	cr_assert_eq(uvh_dispatcher_pending(pc.d), 1);
	uvh_dispatcher_destroy(pc.d);
	cr_assert_eq(pthread_join(th, NULL), 0);
	cr_assert_eq(pc.ret, -ECANCELED);
	cr_assert_eq(atomic_load(&call_runs), 0);
}

DISP_TEST(call_retries_full_inbox)
{
	struct engine_sim e;
	struct uvh_dispatch_req req;
	struct uvh_completion done;
	int v = 1;

	/* fill a 1-slot inbox before the engine runs, then call */
	memset(&e, 0, sizeof(e));
	e.d = uvh_dispatcher_create(1, flags);
	cr_assert_not_null(e.d);
	make_req(&req, &done, 3);
	req.fn = check_engine;
	cr_assert_eq(uvh_dispatcher_post(e.d, &req), 0);
	cr_assert_eq(uvh_dispatch_call(e.d, add_ten, &v, 30), -ETIMEDOUT);
	cr_assert_eq(pthread_create(&e.tid, NULL, engine_loop, &e), 0);
	cr_assert_eq(uvh_dispatch_call(e.d, add_ten, &v, 2000), 11);
	cr_assert_eq(uvh_completion_wait(&done, 2000), 0);
	cr_assert_eq(req.result, 7);
	engine_stop(&e);
}
