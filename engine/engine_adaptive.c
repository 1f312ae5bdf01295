/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the adaptive mode's policy: after an idle sweep, poll on or
 * sleep, so that the CPU follows the load.
 *
 * What a sleep costs decides everything. In this project's VMs a timed
 * wait costs ~25 us of CPU however it is made (io_uring, nanosleep,
 * epoll: the guest's timer is emulated), a wait ended by a kick from the
 * other core 5-15 us, and a timeout that does not fire adds ~7 us
 * (tools: the engine's stats in uvhost-net --stats-interval). So:
 *
 *  - rings with EVENT_IDX (every Linux guest's) batch kicks: the engine
 *    sleeps with avail_event set @kick_batch chains ahead, so the driver
 *    kicks once per batch, not per burst; the batch doubles while a
 *    wake-up finds more than it waited for and, at the rate it saw, twice
 *    the batch would still come within the latency bound (nap_max_us),
 *    and halves when the wait outlasted that bound. A frame left behind
 *    when the traffic stops mid-batch is found by the backstop, a periodic
 *    timer (BACKSTOP_BOUNDS latency bounds) that runs only while the
 *    batch is above one: a timeout on every sleep would cost ~10 us each,
 *    the backstop a wake-up per period at most. A driver with one frame
 *    in flight never finds more than one: it is woken per frame, with no
 *    timer at all (the lowest latency and cost a sleep can have).
 *  - rings without it: timed naps with notifications off (plan_nap), then
 *    a sleep until kicked once the traffic stops.
 */
#include <errno.h>
#include <string.h>

#include "util.h"
#include "log.h"
#include "engine_internal.h"

/* A new measuring cycle for the adaptive policy begins at @now. */
void engine_cycle_begin(struct uvh_engine *e, uint64_t now, bool rested, uint64_t nap_req)
{
	e->cyc_start = now;
	e->cyc_work = 0;
	e->cyc_min_ring = UINT32_MAX;
	e->rested = rested;
	e->nap_req = nap_req;
}

/* Adaptive: sleep until kicked; the sleep begins the next cycle. */
static void adaptive_sleep(struct uvh_engine *e, uint64_t now)
{
	uint64_t woke;

	if (!engine_sleep(e, 1, 0)) {
		/* work came (or a stop or request): traffic is not sparse */
		e->sparse = false;
		return;
	}
	woke = uvh_now_ns();
	/* A kick that took longer than a longest nap: the driver sends less
	 * than a burst per nap, so after this burst sleep again at once
	 * (one wake-up per burst) rather than nap and find nothing. */
	e->sparse = woke - now > e->nap_max_ns;
	engine_cycle_begin(e, now, true, 0);
}

/* Adaptive: a timed wait with notifications off (see try_sleep). */
static void nap(struct uvh_engine *e, uint64_t ns)
{
	struct __kernel_timespec ts = {
		.tv_sec = (long long)(ns / 1000000000u),
		.tv_nsec = (long long)(ns % 1000000000u),
	};
	struct io_uring_cqe *cqe;
	uint64_t t0 = uvh_now_ns();
	int ret;

	ret = io_uring_submit_and_wait_timeout(&e->ring, &cqe, 1, &ts, NULL);
	if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
		UVH_WARN("%s: io_uring timed wait: %s", e->name, strerror(-ret));
	STAT_ADD(e, naps, 1);
	STAT_ADD(e, nap_ns, uvh_now_ns() - t0);
	engine_reap(e);
}

/*
 * Adaptive: how long to nap now, from the cycle that just ended (0: poll).
 *
 * A cycle runs from one decision to the next: a nap (or a sleep) and the
 * sweeps that drain what gathered during it, or a spell of polling. Its
 * work over its length is the arrival rate, so the nap that lets a batch
 * gather is batch * length / work. The wait itself runs late (timer and
 * wake-up latency, ~15 us in this project's VMs) and the drain takes time
 * too: both are learnt as the cycle's length beyond the nap it asked for,
 * and taken off. The estimate drops at once when the rate rises (a full
 * ring must not wait) and grows smoothly when it falls.
 */
static uint64_t plan_nap(struct uvh_engine *e, uint64_t now)
{
	uint64_t span = now - e->cyc_start, need, late, req;
	uint32_t batch = e->opts.nap_batch;

	/* after a sleep of hours: keep batch * span far from overflowing */
	if (span > 10000000000ull)
		span = 10000000000ull;

	if (!batch)
		batch = e->cyc_min_ring == UINT32_MAX ? 1 : e->cyc_min_ring / 4 * 3;
	if (!batch)
		batch = 1;
	/* nothing came: as if the rate were so low that only the cap matters */
	need = e->cyc_work ? batch * span / e->cyc_work : 2 * e->nap_max_ns;
	if (need > 2 * e->nap_max_ns)
		need = 2 * e->nap_max_ns;
	e->need_ns = need < e->need_ns ? need : (3 * e->need_ns + need) / 4;
	if (e->nap_req) {
		late = span > e->nap_req ? span - e->nap_req : 0;
		if (late > e->nap_max_ns)
			late = e->nap_max_ns;	/* a preemption, not the timer */
		e->late_ns = (3 * e->late_ns + late) / 4;
	} else if (!e->rested) {
		/* Polling: forget old lateness slowly, so that a nap is tried
		 * again once in a while rather than never. */
		e->late_ns -= e->late_ns / 8;
	}
	req = e->need_ns > e->late_ns ? e->need_ns - e->late_ns : 0;
	if (req < e->nap_min_ns)
		return 0;
	return req < e->nap_max_ns ? req : e->nap_max_ns;
}

/* The backstop's expiry needs no action: the wake-up it causes is all. */
static void backstop_fired(struct uvh_engine_timer *t)
{
	(void)t;
}

void engine_adaptive_reset(struct uvh_engine *e)
{
	e->kick_batch = 1;
	if (e->backstop.engine)
		engine_timer_del(e, &e->backstop);
}

/*
 * Adaptive, EVENT_IDX everywhere: sleep until @kick_batch chains came (or
 * the latency bound), the batch adapted from the last wait (see top).
 */
static void batch_sleep(struct uvh_engine *e, uint64_t now)
{
	unsigned int b = e->kick_batch ? e->kick_batch : 1;
	uint64_t found = e->cyc_work;

	if (e->rested) {
		if (e->slept_timeout || e->slept_ns > e->nap_max_ns)
			b = b > 1 ? b / 2 : 1;
		else if (found > b && b < e->batch_cap && b < KICK_BATCH_MAX &&
			 2 * b * e->slept_ns <= found * e->nap_max_ns)
			b *= 2;	/* at the rate seen, twice the batch comes in time */
	}
	e->kick_batch = b;
	atomic_store_explicit(&e->st.kick_batch, b, memory_order_relaxed);
	/* the backstop runs while a batch > 1 may leave chains waiting */
	if (b > 1 && !e->backstop.engine) {
		e->backstop.fn = backstop_fired;
		e->backstop.period_ns = BACKSTOP_BOUNDS * e->nap_max_ns;
		engine_timer_add(e, &e->backstop);
	} else if (b == 1 && e->backstop.engine) {
		engine_timer_del(e, &e->backstop);
	}
	if (!engine_sleep(e, b, 0)) {
		engine_cycle_begin(e, now, false, 0);
		return;
	}
	engine_cycle_begin(e, uvh_now_ns(), true, 0);
}

/*
 * Adaptive mode, a sweep found no work. Free for the first IDLE_SPIN idle
 * sweeps of a spell (at peak load the gaps between bursts are that short,
 * and a clock read there costs rate), then a clock read and a compare;
 * one decision per cycle (see plan_nap).
 */
void engine_adaptive_idle(struct uvh_engine *e)
{
	uint64_t now, req;

	e->idle++;
	if (e->opts.idle_sweeps && e->idle >= e->opts.idle_sweeps) {
		adaptive_sleep(e, uvh_now_ns());
		return;
	}
	if (e->idle < IDLE_SPIN)
		return;
	now = uvh_now_ns();
	if (e->idle == IDLE_SPIN)
		e->idle_since = now;	/* late by a few hundred ns: no matter */
	if (e->can_nap && !e->opts.no_nap && engine_kicks_batch(e)) {
		batch_sleep(e, now);
		return;
	}
	if (e->sparse || now - e->idle_since >= e->idle_ns) {
		adaptive_sleep(e, now);
		return;
	}
	if (!e->can_nap)
		return;
	/* Polling: judge the rate over a window of several bursts. */
	if (!e->rested && now - e->cyc_start < e->window_ns)
		return;
	req = plan_nap(e, now);
	atomic_store_explicit(&e->st.nap_plan_ns, req, memory_order_relaxed);
	engine_cycle_begin(e, now, req != 0, req);
	if (req)
		nap(e, req);
}

