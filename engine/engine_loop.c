/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the engine loop: sweeps over the queues, guest notifications,
 * calls, the event-mode sleep, and the engine's thread.
 *
 * Calls to the guest are plain eventfd write(2)s collected at the end of
 * each sweep, not IORING_OP_WRITE SQEs. Measured on this machine (kernel
 * 6.18, a DEFER_TASKRUN ring, 200k rounds): N write(2)s of an eventfd
 * cost ~260 ns each (N = 1: 261 ns, 8: 2.0 us); one io_uring_submit() of
 * N eventfd write SQEs (CQE_SKIP_SUCCESS) costs 0.80 us for N = 1, 0.95
 * for 2, 1.5 for 4, 2.7 for 8. Each SQE still costs about a write's worth
 * of kernel work and the shared entry does not win it back: plain writes
 * are cheaper up to at least 8 calls per sweep, more than a per-core
 * engine usually signals at once. A sweep with no call costs nothing.
 */
#include <errno.h>
#include <numa.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/eventfd.h>

#include "util.h"
#include "log.h"
#include "engine_internal.h"

/* ---- queues: notifications, sweep, calls -------------------------------------- */

static void report_broken(struct uvh_engine *e, struct uvh_engine_queue *q)
{
	if (q->error_reported)
		return;
	q->error_reported = true;
	UVH_WARN("%s: queue %u broken (%s): no longer served", e->name, q->index,
		 uvh_vq_strerror(q->vq->error));
	/* VRING_ERR: the front-end learns it through the err eventfd. */
	if (q->err_fd >= 0 && eventfd_write(q->err_fd, 1) < 0)
		UVH_WARN("%s: writing the err eventfd: %s", e->name, strerror(errno));
	if (q->on_error)
		q->on_error(q, q->vq->error);
}

/* A queue whose notifications follow the engine's: not broken, not
 * paused, and consumed by its own bursts (not passive). */
static inline bool queue_live(const struct uvh_engine_queue *q)
{
	return !q->paused && !q->passive && !uvh_vq_broken(q->vq);
}

/* Disable notifications everywhere (paused and passive queues too: always
 * right for them). */
static void notify_disable_all(struct uvh_engine *e)
{
	unsigned int i;

	for (i = 0; i < e->nqueues; i++)
		if (!uvh_vq_broken(e->queues[i]->vq))
			uvh_vq_notify_disable(e->queues[i]->vq);
	e->notify_on = false;
}

/* Enable notifications everywhere; true when some queue already has work
 * (with @batch > 1: at least that many chains, on rings with EVENT_IDX;
 * each ring's share capped at 3/4 of it, a quarter left for late ones).
 * Paused and passive queues keep theirs off and are not work: chains
 * waiting on a disabled ring, or RX buffers waiting for frames, must not
 * keep the engine awake. */
static bool notify_enable_all(struct uvh_engine *e, unsigned int batch)
{
	bool pending = false;
	unsigned int i, n, cap;

	e->batch_cap = 1;
	for (i = 0; i < e->nqueues; i++) {
		struct uvh_vq *vq = e->queues[i]->vq;

		if (!queue_live(e->queues[i]))
			continue;
		n = batch;
		cap = vq->cfg.size / 4 * 3;
		if (cap > e->batch_cap)
			e->batch_cap = cap;
		if (n > cap)
			n = cap ? cap : 1;
		pending |= uvh_vq_notify_enable_after(vq, n);
	}
	e->notify_on = true;
	return pending;
}

/* Can every live queue batch its kicks (EVENT_IDX)? None live: yes. */
bool engine_kicks_batch(const struct uvh_engine *e)
{
	for (unsigned int i = 0; i < e->nqueues; i++)
		if (queue_live(e->queues[i]) && !e->queues[i]->vq->cfg.event_idx)
			return false;
	return true;
}

/* A queue joins the engine's notification state (attached or resumed);
 * chains already there are found by the next sweep. */
void engine_notify_join(struct uvh_engine *e, struct uvh_engine_queue *q)
{
	if (!e->ring_ok || e->stopping || uvh_vq_broken(q->vq))
		return;
	if (e->notify_on && !q->paused && !q->passive)
		uvh_vq_notify_enable(q->vq);
	else
		uvh_vq_notify_disable(q->vq);
}

void uvh_engine_queue_pause(struct uvh_engine_queue *q, unsigned int reason, bool pause)
{
	uint8_t was = q->paused;

	q->paused = (uint8_t)(pause ? was | reason : was & ~reason);
	if (!was != !q->paused && q->engine)
		engine_notify_join(q->engine, q);
}

static unsigned int sweep(struct uvh_engine *e)
{
	struct uvh_engine_queue *q;
	unsigned int i, n, work = 0, calls = 0, quiet = 0;
	uint32_t size;

	for (i = 0; i < e->nqueues; i++) {
		q = e->queues[i];
		if (__builtin_expect(uvh_vq_broken(q->vq), 0)) {
			report_broken(e, q);
			/* on_error may have removed it: look at slot i again. */
			if (i < e->nqueues && e->queues[i] != q)
				i--;
			continue;
		}
		if (__builtin_expect(q->paused, 0))
			continue;
		q->kicked = false;
		size = q->vq->cfg.size;	/* read before process(), which may detach q */
		n = q->process(q);
		if (n) {
			work += n;
			/* self_signal: the device calls for it, under its lock */
			if (!q->self_signal)
				q->need_signal = true;
			/* the nap is sized for the smallest ring that is busy */
			if (size < e->cyc_min_ring)
				e->cyc_min_ring = size;
		}
		if (i < e->nqueues && e->queues[i] != q) {
			i--;	/* removed from within process(): slot i is another queue now */
			continue;
		}
		/* Report a ring this burst broke now, not at the next sweep that
		 * a sleeping engine may never make. */
		if (__builtin_expect(uvh_vq_broken(q->vq), 0)) {
			report_broken(e, q);
			if (i < e->nqueues && e->queues[i] != q)
				i--;
		}
	}
	/* Calls at sweep end: one eventfd write per queue whose driver wants one. */
	for (i = 0; i < e->nqueues; i++) {
		q = e->queues[i];
		if (!q->need_signal)
			continue;
		q->need_signal = false;
		if (uvh_vq_broken(q->vq))
			continue;
		if (!uvh_vq_need_call(q->vq)) {
			quiet++;
			continue;
		}
		if (q->call_fd >= 0 && eventfd_write(q->call_fd, 1) == 0) {
			q->calls++;
			calls++;
		}
	}
	if (calls)
		STAT_ADD(e, calls, calls);
	if (quiet)
		STAT_ADD(e, calls_suppressed, quiet);
	return work;
}

/* ---- the loop ------------------------------------------------------------------------ */

void engine_apply_mode(struct uvh_engine *e)
{
	engine_adaptive_reset(e);
	e->idle = 0;
	e->sparse = false;
	engine_cycle_begin(e, uvh_now_ns(), false, 0);
	atomic_store_explicit(&e->st.nap_plan_ns, 0, memory_order_relaxed);
	if (!e->ring_ok)
		return;
	notify_disable_all(e);
}

/*
 * Go to sleep if nothing is pending; true when it slept. Why no kick is
 * lost:
 *
 *   engine (here)                          driver
 *   notify_enable: store flag/avail_event  store avail->idx
 *   full fence                             full fence
 *   load avail->idx                        load flag/avail_event, kick if enabled
 *
 * (uvh_vq_notify_enable and the driver's need_kick hold the fences.) In
 * this store-buffering pattern at least one side sees the other's store:
 * either notify_enable returns true (we sweep instead of sleeping) or the
 * driver sees notifications on and writes the kick eventfd. The multishot
 * poll on that eventfd is armed for the whole run (and re-armed at once
 * if the kernel ends it; arming a poll on an eventfd whose count is
 * non-zero completes at once), and on_kick() reads the count before the
 * queue's next sweep, so a kick written at any time leaves a CQE or task
 * work that makes io_uring_submit_and_wait() below return. The dispatcher
 * has the same handshake for requests (prepare_sleep / woke), and a stop
 * writes its eventfd after setting stop_req.
 *
 * With a batch (adaptive mode, EVENT_IDX) the driver kicks once that many
 * chains are there; fewer wait for the timeout, which the caller gives
 * (the latency bound).
 *
 * A nap (adaptive mode) needs none of this: it is a wait with a timeout,
 * notifications stay disabled and the queues are swept when it ends, so
 * whatever the driver published meanwhile is found then. It does not
 * announce itself to the dispatcher either: a request waits for the end
 * of the nap (nap_max_us at most), while a stop, which writes the wake
 * eventfd unconditionally, ends it at once.
 */
bool engine_sleep(struct uvh_engine *e, unsigned int batch, uint64_t timeout_ns)
{
	struct __kernel_timespec ts = {
		.tv_sec = (long long)(timeout_ns / 1000000000u),
		.tv_nsec = (long long)(timeout_ns % 1000000000u),
	};
	struct io_uring_cqe *cqe;
	uint64_t t0, t1;
	int ret;

	e->slept_timeout = false;
	if (notify_enable_all(e, batch)) {
		/* Work arrived while we were deciding: keep going. */
		notify_disable_all(e);
		e->idle = 0;
		return false;
	}
	if (atomic_load_explicit(&e->stop_req, memory_order_acquire) ||
	    uvh_dispatcher_prepare_sleep(e->disp) != 0) {
		notify_disable_all(e);
		return false;
	}
	/* The devices' own fds (wake_fd): polled while we sleep only, for a
	 * queue that waits on its device (passive), not on its driver (frames
	 * waiting for RX buffers keep its fd readable: polling it then would
	 * wake us at once, every time). Armed after the sweep that found them
	 * idle, and a poll checks readiness when armed: frames that came in
	 * between complete it at once. */
	for (unsigned int i = 0; i < e->nqueues; i++) {
		struct uvh_engine_queue *q = e->queues[i];

		if (q->wake_op && !q->wake_op->inflight && q->passive && !q->paused &&
		    q->wake_op->errors < MAX_ARM_ERRORS)
			engine_op_arm(e, q->wake_op);
	}
	STAT_ADD(e, sleeps, 1);
	t0 = uvh_now_ns();
	if (timeout_ns && e->can_nap)
		ret = io_uring_submit_and_wait_timeout(&e->ring, &cqe, 1, &ts, NULL);
	else
		ret = io_uring_submit_and_wait(&e->ring, 1);
	if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY && ret != -ETIME)
		UVH_WARN("%s: io_uring wait: %s", e->name, strerror(-ret));
	t1 = uvh_now_ns();
	e->slept_ns = t1 - t0;
	e->slept_timeout = ret == -ETIME;
	STAT_ADD(e, sleep_ns, e->slept_ns);
	if (e->slept_timeout)
		STAT_ADD(e, sleep_timeouts, 1);
	uvh_dispatcher_woke(e->disp);
	STAT_ADD(e, wakeups, 1);
	engine_reap(e);
	e->idle = 0;
	/* Awake: the sweeps find what comes, the driver need not kick (and
	 * with EVENT_IDX the avail_event left behind asks for one kick at
	 * most) */
	notify_disable_all(e);
	return true;
}

/*
 * Event mode, a sweep found no work: poll on for spin_ns (a wake-up costs
 * about that much CPU: frames closer together than that are cheaper to
 * wait for awake, so a driver sending faster than wake-ups go never costs
 * one per frame), then sleep until kicked.
 */
static void event_idle(struct uvh_engine *e)
{
	uint64_t now;

	e->idle++;
	if (e->idle < IDLE_SPIN)
		return;
	now = uvh_now_ns();
	if (e->idle == IDLE_SPIN)
		e->idle_since = now;
	if (now - e->idle_since >= e->spin_ns)
		engine_sleep(e, 1, 0);
}

void engine_drain_inbox(struct uvh_engine *e)
{
	unsigned int n = uvh_dispatcher_drain(e->disp, e, INBOX_BUDGET);

	if (n)
		STAT_ADD(e, requests, n);
}

static void loop(struct uvh_engine *e)
{
	struct uvh_engine_op *op;
	enum uvh_engine_mode mode;
	unsigned int work;

	for (op = e->ops.next; op != &e->ops; op = op->next)
		engine_op_arm(e, op);
	io_uring_submit(&e->ring);
	engine_apply_mode(e);

	while (!atomic_load_explicit(&e->stop_req, memory_order_acquire)) {
		engine_drain_inbox(e);
		work = sweep(e);
		engine_poll_ring(e);
		STAT_ADD(e, sweeps, 1);
		if (work) {
			e->idle = 0;
			e->cyc_work += work;
			continue;
		}
		STAT_ADD(e, idle_sweeps, 1);
		mode = (enum uvh_engine_mode)atomic_load_explicit(&e->mode, memory_order_relaxed);
		if (mode == UVH_ENGINE_ADAPTIVE)
			engine_adaptive_idle(e);
		else if (mode == UVH_ENGINE_EVENT)
			event_idle(e);
	}
}

/* Pin the calling thread and prefer the engine's memory node. */
int engine_place_thread(struct uvh_engine *e)
{
	cpu_set_t set;
	int ret;

	if (e->cpu >= 0) {
		CPU_ZERO(&set);
		CPU_SET(e->cpu, &set);
		ret = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
		if (ret) {
			UVH_ERR("%s: pinning to core %d: %s", e->name, e->cpu, strerror(ret));
			return -ret;
		}
	}
	if (e->node >= 0)
		numa_set_preferred(e->node);
	return 0;
}

/*
 * Under ctl: the loop is over (or never began). Posters saw the engine
 * starting or running while holding ctl, so whatever they queued is in the
 * inbox now: run it here, with no ring, rather than strand it.
 */
void engine_end_run(struct uvh_engine *e, int err)
{
	atomic_store(&e->in_loop, false);
	e->state = ST_IDLE;
	e->start_err = err;
	while (uvh_dispatcher_pending(e->disp))
		engine_drain_inbox(e);
	e->run_gen++;
	pthread_cond_broadcast(&e->ctl_cv);
}

int engine_main(struct uvh_engine *e)
{
	int ret = engine_ring_setup(e);

	pthread_mutex_lock(&e->ctl);
	if (ret) {
		engine_end_run(e, ret);
		pthread_mutex_unlock(&e->ctl);
		return ret;
	}
	e->owner = pthread_self();
	atomic_store(&e->in_loop, true);
	e->state = ST_RUNNING;
	e->start_err = 0;
	pthread_cond_broadcast(&e->ctl_cv);
	pthread_mutex_unlock(&e->ctl);

	loop(e);
	engine_ring_teardown(e);

	pthread_mutex_lock(&e->ctl);
	engine_end_run(e, 0);
	pthread_mutex_unlock(&e->ctl);
	return 0;
}

void *engine_thread(void *arg)
{
	struct uvh_engine *e = arg;
	char tname[16];
	int ret;

	/* Thread names hold 15 characters. */
	memcpy(tname, e->name, sizeof(tname) - 1);
	tname[sizeof(tname) - 1] = '\0';
	pthread_setname_np(pthread_self(), tname);
	ret = engine_place_thread(e);
	if (ret) {
		pthread_mutex_lock(&e->ctl);
		engine_end_run(e, ret);
		pthread_mutex_unlock(&e->ctl);
		return NULL;
	}
	engine_main(e);
	return NULL;
}

