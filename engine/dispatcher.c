/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the dispatcher (see dispatcher.h).
 *
 * Sleep handshake (no lost wake-up). Two variables: the inbox (the ring's
 * indexes) and `sleeping`.
 *
 *	engine (prepare_sleep)          poster (post)
 *	sleeping = 1                    enqueue(req)
 *	fence(seq_cst)     <- pairs ->  fence(seq_cst)
 *	inbox empty? sleep : undo       sleeping? write eventfd
 *
 * With a seq_cst fence between each side's store and its load, at least one
 * side sees the other's store: either the engine sees the request and does
 * not sleep, or the poster sees the engine asleep and writes the eventfd
 * (which the engine's io_uring poll is armed on). Only the poster that
 * turns `sleeping` from 1 to 0 writes, so a burst of posts to a sleeping
 * engine costs one write. A write that lands after the engine already woke
 * leaves the eventfd readable; the engine's next sleep ends at once and
 * uvh_dispatcher_woke() consumes it: one spurious wake-up, never a lost one.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "util.h"
#include "dispatcher.h"
#include "log.h"
#include "ring.h"

#define DRAIN_BATCH	32

struct uvh_dispatcher {
	struct uvh_ring *ring;
	int efd;

	/* written by posters and the owner around sleeps only */
	alignas(64) _Atomic uint32_t sleeping;
	_Atomic uint64_t wakeups;

	alignas(64) _Atomic uint64_t posted;

	/* owner-only writes */
	alignas(64) _Atomic uint64_t run;
};

/* ---- completion -------------------------------------------------------- */

enum {
	COMP_PENDING = 0,
	COMP_WAITING = 1,	/* pending and a waiter sleeps (or is about to) on the futex */
	COMP_DONE = 2,
};

void uvh_completion_init(struct uvh_completion *c)
{
	atomic_store_explicit(&c->state, COMP_PENDING, memory_order_relaxed);
}

void uvh_completion_signal(struct uvh_completion *c)
{
	/*
	 * Release: pairs with the waiter's acquire loads of state, publishing
	 * what we wrote before (the request's result) to the waiter.
	 */
	uint32_t old = atomic_exchange_explicit(&c->state, COMP_DONE, memory_order_release);

	/*
	 * Only a waiter that announced itself sleeps on the futex. (The waiter
	 * may already have seen DONE and freed @c: a wake on a stale address is
	 * harmless, futex users tolerate spurious wake-ups.)
	 */
	if (old == COMP_WAITING)
		syscall(SYS_futex, &c->state, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

bool uvh_completion_done(const struct uvh_completion *c)
{
	/* Acquire: pairs with the release exchange in uvh_completion_signal(). */
	return atomic_load_explicit(&c->state, memory_order_acquire) == COMP_DONE;
}

/* Wait until @deadline (ns, CLOCK_MONOTONIC; 0: forever). */
static int completion_wait_until(struct uvh_completion *c, uint64_t deadline)
{
	for (;;) {
		/* Acquire: pairs with the release exchange in signal(). */
		uint32_t s = atomic_load_explicit(&c->state, memory_order_acquire);
		struct timespec ts, *tsp = NULL;

		if (s == COMP_DONE)
			return 0;
		if (s == COMP_PENDING &&
		    !atomic_compare_exchange_strong_explicit(&c->state, &s, COMP_WAITING,
							     memory_order_acquire,
							     memory_order_acquire))
			continue;	/* signalled meanwhile (s is DONE) */
		if (deadline) {
			if (uvh_now_ns() >= deadline)
				return -ETIMEDOUT;
			ts.tv_sec = (time_t)(deadline / 1000000000ull);
			ts.tv_nsec = (long)(deadline % 1000000000ull);
			tsp = &ts;
		}
		/*
		 * Sleeps only while state is still WAITING (checked by the
		 * kernel atomically with queueing us), so a signal between our
		 * CAS and this call is not missed. BITSET takes an absolute
		 * CLOCK_MONOTONIC deadline.
		 */
		if (syscall(SYS_futex, &c->state, FUTEX_WAIT_BITSET_PRIVATE, COMP_WAITING, tsp,
			    NULL, FUTEX_BITSET_MATCH_ANY) < 0 && errno == ETIMEDOUT)
			return uvh_completion_done(c) ? 0 : -ETIMEDOUT;
	}
}

static uint64_t deadline_of(int timeout_ms)
{
	if (timeout_ms < 0)
		return 0;
	return uvh_now_ns() + (uint64_t)timeout_ms * 1000000ull;
}

int uvh_completion_wait(struct uvh_completion *c, int timeout_ms)
{
	if (uvh_completion_done(c))
		return 0;
	if (timeout_ms == 0)
		return -ETIMEDOUT;
	return completion_wait_until(c, deadline_of(timeout_ms));
}

/* ---- dispatcher -------------------------------------------------------- */

struct uvh_dispatcher *uvh_dispatcher_create(unsigned int capacity, unsigned int flags)
{
	struct uvh_dispatcher *d;
	int err;

	if (flags & ~UVH_DISPATCHER_RTE) {
		errno = EINVAL;
		return NULL;
	}
	d = aligned_alloc(64, sizeof(*d));
	if (!d) {
		errno = ENOMEM;
		return NULL;
	}
	memset(d, 0, sizeof(*d));
	d->ring = uvh_ring_create(capacity ? capacity : 256,
				  (flags & UVH_DISPATCHER_RTE) ? UVH_RING_RTE : 0);
	if (!d->ring) {
		err = errno;
		free(d);
		errno = err;
		return NULL;
	}
	d->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (d->efd < 0) {
		err = errno;
		UVH_ERR("dispatcher: eventfd: %s", strerror(err));
		uvh_ring_destroy(d->ring);
		free(d);
		errno = err;
		return NULL;
	}
	atomic_init(&d->sleeping, 0);
	atomic_init(&d->wakeups, 0);
	atomic_init(&d->posted, 0);
	atomic_init(&d->run, 0);
	return d;
}

static void run_req(void *ctx, struct uvh_dispatch_req *req)
{
	/* read before fn: a request without completion may be freed by fn */
	struct uvh_completion *done = req->done;

	req->fn(ctx, req);
	if (done)
		uvh_completion_signal(done);
}

void uvh_dispatcher_destroy(struct uvh_dispatcher *d)
{
	void *batch[DRAIN_BATCH];
	unsigned int n;

	if (!d)
		return;
	while ((n = uvh_ring_dequeue_burst(d->ring, batch, DRAIN_BATCH)) > 0) {
		for (unsigned int i = 0; i < n; i++) {
			struct uvh_dispatch_req *req = batch[i];

			req->result = -ECANCELED;
			run_req(NULL, req);
		}
	}
	close(d->efd);
	uvh_ring_destroy(d->ring);
	free(d);
}

static void wake(struct uvh_dispatcher *d)
{
	uint64_t one = 1;

	atomic_fetch_add_explicit(&d->wakeups, 1, memory_order_relaxed);
	/* EAGAIN only when the count would overflow: it is readable anyway */
	if (write(d->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		UVH_WARN("dispatcher: eventfd write: %s", strerror(errno));
}

int uvh_dispatcher_post(struct uvh_dispatcher *d, struct uvh_dispatch_req *req)
{
	if (!req || !req->fn)
		return -EINVAL;
	/* the ring's release publishes *req (and *req->done) to the owner */
	if (uvh_ring_enqueue(d->ring, req) < 0)
		return -ENOBUFS;
	atomic_fetch_add_explicit(&d->posted, 1, memory_order_relaxed);
	/*
	 * Pairs with the fence in uvh_dispatcher_prepare_sleep(): orders our
	 * enqueue before our look at `sleeping` (see the top of this file).
	 */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&d->sleeping, memory_order_relaxed) &&
	    atomic_exchange_explicit(&d->sleeping, 0, memory_order_relaxed))
		wake(d);
	return 0;
}

unsigned int uvh_dispatcher_drain(struct uvh_dispatcher *d, void *engine_ctx,
				  unsigned int budget)
{
	void *batch[DRAIN_BATCH];
	unsigned int total = 0;

	if (budget == 0)
		budget = uvh_ring_capacity(d->ring);
	while (total < budget) {
		unsigned int want = budget - total < DRAIN_BATCH ? budget - total : DRAIN_BATCH;
		unsigned int n = uvh_ring_dequeue_burst(d->ring, batch, want);

		if (n == 0)
			break;
		for (unsigned int i = 0; i < n; i++) {
			struct uvh_dispatch_req *req = batch[i];

			req->result = 0;
			run_req(engine_ctx, req);
		}
		total += n;
	}
	if (total)
		atomic_store_explicit(&d->run,
				      atomic_load_explicit(&d->run, memory_order_relaxed) + total,
				      memory_order_relaxed);
	return total;
}

unsigned int uvh_dispatcher_pending(const struct uvh_dispatcher *d)
{
	return uvh_ring_count(d->ring);
}

int uvh_dispatcher_wake_fd(const struct uvh_dispatcher *d)
{
	return d->efd;
}

int uvh_dispatcher_prepare_sleep(struct uvh_dispatcher *d)
{
	atomic_store_explicit(&d->sleeping, 1, memory_order_relaxed);
	/*
	 * Pairs with the fence in uvh_dispatcher_post(): orders our store of
	 * `sleeping` before our look at the inbox.
	 */
	atomic_thread_fence(memory_order_seq_cst);
	if (uvh_ring_count(d->ring)) {
		atomic_store_explicit(&d->sleeping, 0, memory_order_relaxed);
		return -EAGAIN;
	}
	return 0;
}

void uvh_dispatcher_woke(struct uvh_dispatcher *d)
{
	uint64_t v;

	/*
	 * Relaxed: a poster that still sees 1 only writes the eventfd once
	 * more (a spurious wake-up); the inbox itself is ordered by the ring.
	 */
	atomic_store_explicit(&d->sleeping, 0, memory_order_relaxed);
	if (read(d->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		UVH_WARN("dispatcher: eventfd read: %s", strerror(errno));
}

void uvh_dispatcher_kick(struct uvh_dispatcher *d)
{
	wake(d);
}

void uvh_dispatcher_get_stats(const struct uvh_dispatcher *d, struct uvh_dispatcher_stats *st)
{
	st->posted = atomic_load_explicit(&d->posted, memory_order_relaxed);
	st->run = atomic_load_explicit(&d->run, memory_order_relaxed);
	st->wakeups = atomic_load_explicit(&d->wakeups, memory_order_relaxed);
}

/* ---- uvh_dispatch_call ------------------------------------------------- */

enum {
	CALL_QUEUED = 0,
	CALL_RUNNING = 1,	/* claimed by the engine: it will signal `done` */
	CALL_CANCELLED = 2,	/* abandoned by the caller: the engine frees it */
};

/*
 * On the heap, not the caller's stack: a caller that times out returns while
 * the request is still in the inbox. Whoever loses the QUEUED race frees:
 * the caller after `done` (engine claimed it), the engine on CANCELLED.
 */
struct dispatch_call {
	struct uvh_dispatch_req req;	/* req.done is NULL: we signal ourselves */
	struct uvh_completion done;
	uvh_dispatch_call_fn fn;
	void *arg;
	int result;
	_Atomic uint32_t state;
};

static void dispatch_call_run(void *engine_ctx, struct uvh_dispatch_req *req)
{
	struct dispatch_call *c = (struct dispatch_call *)req;
	uint32_t expected = CALL_QUEUED;

	/*
	 * acq_rel: pairs with the caller's CAS. Acquire on failure: the caller's
	 * CANCELLED came after its last use of @c, which we may now free.
	 */
	if (!atomic_compare_exchange_strong_explicit(&c->state, &expected, CALL_RUNNING,
						     memory_order_acq_rel,
						     memory_order_acquire)) {
		free(c);
		return;
	}
	c->result = engine_ctx ? c->fn(engine_ctx, c->arg) : -ECANCELED;
	uvh_completion_signal(&c->done);
}

int uvh_dispatch_call(struct uvh_dispatcher *d, uvh_dispatch_call_fn fn, void *arg,
		      int timeout_ms)
{
	uint64_t deadline = deadline_of(timeout_ms);
	struct dispatch_call *c;
	uint32_t expected;
	int ret;

	if (!fn)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->req.fn = dispatch_call_run;
	c->req.arg = c;
	c->fn = fn;
	c->arg = arg;
	uvh_completion_init(&c->done);
	atomic_init(&c->state, CALL_QUEUED);

	while ((ret = uvh_dispatcher_post(d, &c->req)) == -ENOBUFS) {
		struct timespec pause = { .tv_nsec = 20000 };

		/* full inbox: the engine is draining it (posts woke it) */
		if (deadline && uvh_now_ns() >= deadline) {
			free(c);
			return -ETIMEDOUT;
		}
		nanosleep(&pause, NULL);
	}
	if (ret < 0) {
		free(c);
		return ret;
	}

	if (timeout_ms == 0 || completion_wait_until(&c->done, deadline) == -ETIMEDOUT) {
		expected = CALL_QUEUED;
		/*
		 * acq_rel: pairs with the engine's CAS; whoever wins owns the
		 * outcome. Won: fn never runs and the engine frees @c.
		 */
		if (atomic_compare_exchange_strong_explicit(&c->state, &expected, CALL_CANCELLED,
							    memory_order_acq_rel,
							    memory_order_acquire))
			return -ETIMEDOUT;
		/* fn is running: it is short, wait for its result */
		completion_wait_until(&c->done, 0);
	}
	ret = c->result;
	free(c);
	return ret;
}
