/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the engine loop (see engine.h).
 *
 * Everything the engine watches is an "op": a small engine-owned record
 * whose address is the io_uring user_data. Owners (queues, watches,
 * timers) point at their op; detaching an owner clears op->owner and, when
 * a request is still in flight, cancels it. The op itself is freed only
 * when its last CQE has been seen, so a late CQE never reaches freed
 * memory that the caller owned.
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
#include <fcntl.h>
#include <limits.h>
#include <numa.h>
#include <numaif.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>

#include "util.h"
#include "engine.h"
#include "log.h"

#ifndef IORING_SETUP_COOP_TASKRUN
#define IORING_SETUP_COOP_TASKRUN	(1U << 8)
#endif
#ifndef IORING_SETUP_TASKRUN_FLAG
#define IORING_SETUP_TASKRUN_FLAG	(1U << 9)
#endif
#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER	(1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN	(1U << 13)
#endif
#ifndef IORING_SQ_TASKRUN
#define IORING_SQ_TASKRUN		(1U << 2)
#endif

#define DEF_NAP_MIN_US		10u
#define DEF_NAP_MAX_US		100u
#define DEF_IDLE_US_NO_NAP	50u
#define MAX_NAP_US		1000000u
/* Adaptive: idle sweeps in a row (~15 ns each) before the clock is read. */
#define IDLE_SPIN		16u
#define DEF_RING_ENTRIES	256u
#define DEF_MAX_FILES		1024u
#define DEF_INBOX		256u
#define CQE_BATCH		32u
#define INBOX_BUDGET		32u
/* Polling without TASKRUN_FLAG: enter the kernel for completions this often. */
#define POLL_ENTER_MASK		255u
/* A multishot poll that keeps failing is given up after this many tries. */
#define MAX_ARM_ERRORS		8u

enum op_type {
	OP_WAKE = 1,	/* the dispatcher's eventfd */
	OP_KICK,	/* a queue's kick eventfd */
	OP_RECV,	/* a watched endpoint */
	OP_TIMER,	/* a timer */
};

struct uvh_engine_op {
	struct uvh_engine_op *next, *prev;	/* e->ops */
	enum op_type type;
	bool inflight;		/* submitted, last CQE not seen yet */
	bool busy;		/* its callback is running: don't free */
	unsigned int errors;	/* consecutive failed arms */
	void *owner;		/* queue / watch / timer / engine; NULL = detached */
	struct __kernel_timespec ts;
};

enum run_state { ST_IDLE, ST_STARTING, ST_RUNNING };

struct uvh_engine {
	char name[32];
	int cpu;
	int node;			/* -1: no NUMA placement */
	bool numa_alloc;		/* this struct came from numa_alloc_onnode */
	struct uvh_engine_opts opts;

	/* control: start/stop/apply-directly are serialised by ctl */
	pthread_mutex_t ctl;
	pthread_cond_t ctl_cv;
	enum run_state state;		/* under ctl */
	uint64_t run_gen;		/* bumped when a run ends (under ctl) */
	int start_err;
	bool has_thread, joining;
	pthread_t thread;
	_Atomic bool stop_req;
	_Atomic bool in_loop;
	pthread_t owner;		/* valid while in_loop */

	struct uvh_dispatcher *disp;
	struct uvh_engine_op *wake_op;
	int wake_slot;

	/* owned by the running thread from here on */
	struct io_uring ring;
	bool ring_ok;
	bool stopping;			/* tearing the ring down: arm nothing */
	bool fixed;			/* registered files in use */
	bool taskrun_flag;		/* the kernel tells us when to enter */
	unsigned int setup_flags;
	int *slot_fd;			/* registered-file table, -1 = free */
	unsigned int max_files;
	struct uvh_engine_op ops;	/* list head */
	unsigned int ninflight;

	struct uvh_engine_queue **queues;
	unsigned int nqueues, cap_queues;
	_Atomic unsigned int nqueues_pub;

	_Atomic int mode;		/* written by the owner, read by anyone */
	bool notify_on;			/* guest notifications enabled on every queue */
	unsigned int poll_tick;

	/* adaptive mode (see adaptive_idle); times in ns of CLOCK_MONOTONIC */
	bool can_nap;			/* naps allowed and the ring can time its waits */
	bool rested;			/* the cycle began with a nap or a sleep */
	bool sparse;			/* the last sleep outlasted a longest nap */
	unsigned int idle;		/* consecutive idle sweeps */
	uint32_t cyc_min_ring;		/* smallest ring that had work in the cycle */
	uint64_t idle_since;		/* the spell's first idle sweep */
	uint64_t cyc_start;		/* the cycle being measured began */
	uint64_t cyc_work;		/* work done since */
	uint64_t nap_req;		/* what the nap that began the cycle asked for */
	uint64_t need_ns;		/* estimated nap that gathers a batch */
	uint64_t late_ns;		/* a cycle's length beyond the nap it asked for */
	uint64_t nap_min_ns, nap_max_ns, idle_ns, window_ns;

	struct {
		_Atomic uint64_t sweeps, idle_sweeps, wakeups, sleeps, kicks, calls,
			calls_suppressed, messages, timer_fires, requests, naps, nap_ns,
			sleep_ns, nap_plan_ns;
	} st;
};

/* Single writer (the engine): a relaxed load and store, no locked RMW. */
#define STAT_ADD(e, f, n)						\
	atomic_store_explicit(&(e)->st.f,				\
		atomic_load_explicit(&(e)->st.f, memory_order_relaxed) + (n), \
		memory_order_relaxed)

static bool numa_ok(void)
{
	static int avail = -2;

	if (avail == -2)
		avail = numa_available();
	return avail >= 0;
}

/* ---- registered files ------------------------------------------------------ */

static int slot_alloc(struct uvh_engine *e, int fd)
{
	unsigned int i;
	int ret;

	for (i = 0; i < e->max_files; i++)
		if (e->slot_fd[i] < 0)
			break;
	if (i == e->max_files)
		return -ENOSPC;
	if (e->ring_ok && e->fixed) {
		ret = io_uring_register_files_update(&e->ring, i, &fd, 1);
		if (ret < 0) {
			UVH_ERR("%s: registering fd %d: %s", e->name, fd, strerror(-ret));
			return ret;
		}
	}
	e->slot_fd[i] = fd;
	return (int)i;
}

static void slot_free(struct uvh_engine *e, int slot)
{
	int none = -1;

	if (slot < 0 || (unsigned int)slot >= e->max_files)
		return;
	if (e->ring_ok && e->fixed)
		io_uring_register_files_update(&e->ring, (unsigned int)slot, &none, 1);
	e->slot_fd[slot] = -1;
}

/* Point @sqe at the file in @slot (registered, or its plain fd). */
static void sqe_file(struct uvh_engine *e, struct io_uring_sqe *sqe, int slot)
{
	if (e->fixed) {
		sqe->fd = slot;
		sqe->flags |= IOSQE_FIXED_FILE;
	} else {
		sqe->fd = e->slot_fd[slot];
	}
}

/* ---- ops ---------------------------------------------------------------------- */

static struct uvh_engine_op *op_new(struct uvh_engine *e, enum op_type type, void *owner)
{
	struct uvh_engine_op *op = calloc(1, sizeof(*op));

	if (!op)
		return NULL;
	op->type = type;
	op->owner = owner;
	op->next = e->ops.next;
	op->prev = &e->ops;
	e->ops.next->prev = op;
	e->ops.next = op;
	return op;
}

static void op_free(struct uvh_engine_op *op)
{
	op->prev->next = op->next;
	op->next->prev = op->prev;
	free(op);
}

static struct io_uring_sqe *get_sqe(struct uvh_engine *e)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&e->ring);

	if (!sqe) {
		/* SQ full: push it to the kernel and take a fresh one. */
		io_uring_submit(&e->ring);
		sqe = io_uring_get_sqe(&e->ring);
		if (!sqe)
			UVH_ERR("%s: no submission slot: a watch stays unarmed", e->name);
	}
	return sqe;
}

static void op_cancel(struct uvh_engine *e, struct uvh_engine_op *op)
{
	struct io_uring_sqe *sqe;

	if (!op->inflight || !e->ring_ok)
		return;
	sqe = get_sqe(e);
	if (!sqe)
		return;
	io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)op, 0);
	io_uring_sqe_set_data64(sqe, 0);
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
}

/* Detach @op from its owner; freed now or when its last CQE comes. */
static void op_release(struct uvh_engine *e, struct uvh_engine_op *op)
{
	if (!op)
		return;
	op->owner = NULL;
	if (op->inflight)
		op_cancel(e, op);
	else if (!op->busy)
		op_free(op);
}

static void op_submitted(struct uvh_engine *e, struct uvh_engine_op *op,
			 struct io_uring_sqe *sqe)
{
	io_uring_sqe_set_data(sqe, op);
	op->inflight = true;
	e->ninflight++;
}

static int arm_poll(struct uvh_engine *e, struct uvh_engine_op *op, int slot, bool multi)
{
	struct io_uring_sqe *sqe = get_sqe(e);

	if (!sqe)
		return -EBUSY;
	if (multi)
		io_uring_prep_poll_multishot(sqe, 0, POLLIN);
	else
		io_uring_prep_poll_add(sqe, 0, POLLIN);
	sqe_file(e, sqe, slot);
	op_submitted(e, op, sqe);
	return 0;
}

static int arm_recv(struct uvh_engine *e, struct uvh_engine_watch *w)
{
	struct io_uring_sqe *sqe;

	if (w->polling)
		return arm_poll(e, w->op, w->slot, false);
	sqe = get_sqe(e);
	if (!sqe)
		return -EBUSY;
	uvh_endpoint_rx_prepare(w->ep, &w->mh);
	io_uring_prep_recvmsg(sqe, 0, &w->mh, MSG_CMSG_CLOEXEC);
	sqe_file(e, sqe, w->slot);
	op_submitted(e, w->op, sqe);
	return 0;
}

static int arm_timer(struct uvh_engine *e, struct uvh_engine_timer *t)
{
	struct io_uring_sqe *sqe = get_sqe(e);

	if (!sqe)
		return -EBUSY;
	t->op->ts.tv_sec = (long long)(t->period_ns / 1000000000u);
	t->op->ts.tv_nsec = (long long)(t->period_ns % 1000000000u);
	io_uring_prep_timeout(sqe, &t->op->ts, 0, 0);
	op_submitted(e, t->op, sqe);
	return 0;
}

static int op_arm(struct uvh_engine *e, struct uvh_engine_op *op)
{
	struct uvh_engine_queue *q;

	if (!e->ring_ok || e->stopping || op->inflight || !op->owner)
		return 0;
	switch (op->type) {
	case OP_WAKE:
		return arm_poll(e, op, e->wake_slot, true);
	case OP_KICK:
		q = op->owner;
		return arm_poll(e, op, q->kick_slot, true);
	case OP_RECV:
		return arm_recv(e, op->owner);
	case OP_TIMER:
		return arm_timer(e, op->owner);
	}
	return -EINVAL;
}

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

/* Enable notifications everywhere; true when some queue already has work.
 * Paused and passive queues keep theirs off and are not work: chains
 * waiting on a disabled ring, or RX buffers waiting for frames, must not
 * keep the engine awake. */
static bool notify_enable_all(struct uvh_engine *e)
{
	bool pending = false;
	unsigned int i;

	for (i = 0; i < e->nqueues; i++)
		if (queue_live(e->queues[i]))
			pending |= uvh_vq_notify_enable(e->queues[i]->vq);
	e->notify_on = true;
	return pending;
}

/* A queue joins the engine's notification state (attached or resumed);
 * chains already there are found by the next sweep. */
static void notify_join(struct uvh_engine *e, struct uvh_engine_queue *q)
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
		notify_join(q->engine, q);
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

/* ---- completions ------------------------------------------------------------------ */

static void watch_finish_unwatch(struct uvh_engine *e, struct uvh_engine_watch *w);

static void on_kick(struct uvh_engine *e, struct uvh_engine_queue *q, int res)
{
	uint64_t v;
	ssize_t r;

	if (res < 0 || !(res & POLLIN))
		return;
	/* Reset the counter before the queue is swept again: a kick written
	 * after this read raises a new poll event, so none can be lost. */
	if (!q->kicked) {
		r = read(q->kick_fd, &v, sizeof(v));
		(void)r;
	}
	q->kicked = true;
	q->kicks++;
	STAT_ADD(e, kicks, 1);
}

static void deliver(struct uvh_engine *e, struct uvh_engine_watch *w, struct uvh_msg *msg)
{
	STAT_ADD(e, messages, 1);
	if (w->on_msg)
		w->on_msg(w, msg);
	else
		uvh_msg_close_fds(msg);
}

/* Detach a watch for good (no read in flight). */
static void watch_detach(struct uvh_engine *e, struct uvh_engine_watch *w)
{
	struct uvh_engine_op *op = w->op;

	w->op = NULL;
	w->engine = NULL;
	w->closing = false;
	slot_free(e, w->slot);
	w->slot = -1;
	op_release(e, op);
}

static void watch_finish_unwatch(struct uvh_engine *e, struct uvh_engine_watch *w)
{
	struct uvh_completion *done = w->unwatch_done;

	w->unwatch_done = NULL;
	watch_detach(e, w);
	if (done)
		uvh_completion_signal(done);
	else if (w->on_close)
		w->on_close(w, -ECANCELED);
}

static void on_recv(struct uvh_engine *e, struct uvh_engine_op *op, int res)
{
	struct uvh_engine_watch *w = op->owner;
	struct uvh_msg msg;
	int r;

	if (w->polling) {
		/* The socket said readable (or the poll was cancelled). */
		w->polling = false;
		if (w->closing) {
			watch_finish_unwatch(e, w);
			return;
		}
		if (res < 0 && res != -ECANCELED)
			UVH_WARN("%s: poll on endpoint fd %d: %s", e->name, w->ep->fd,
				 strerror(-res));
		op_arm(e, op);
		return;
	}
	if (res == -ECANCELED) {
		/* Nothing consumed: a partial message stays in the endpoint. */
		if (w->closing)
			watch_finish_unwatch(e, w);
		return;
	}
	if (w->closing && res <= 0) {
		watch_finish_unwatch(e, w);
		return;
	}
	memset(&msg, 0, sizeof(msg));
	r = uvh_endpoint_rx_complete(w->ep, &w->mh, res, &msg);
	if (r == 1) {
		op->busy = true;
		deliver(e, w, &msg);
		op->busy = false;
		if (!op->owner) {
			/* on_msg unwatched (and maybe freed) it. */
			op_free(op);
			return;
		}
	}
	if (w->closing) {
		watch_finish_unwatch(e, w);
		return;
	}
	if (r == 1 || r == 0 || r == -EINTR) {
		op_arm(e, op);
		return;
	}
	if (r == -EAGAIN) {
		/* A non-blocking socket with nothing to read: wait for POLLIN. */
		w->polling = true;
		op_arm(e, op);
		return;
	}
	watch_detach(e, w);
	if (w->on_close)
		w->on_close(w, r);
}

static void on_timer(struct uvh_engine *e, struct uvh_engine_op *op, int res)
{
	struct uvh_engine_timer *t = op->owner;

	if (res != -ETIME) {
		if (res != -ECANCELED)
			UVH_WARN("%s: timer: %s", e->name, strerror(-res));
		else
			return;	/* stopping: re-armed by the next run */
	} else {
		t->fired++;
		STAT_ADD(e, timer_fires, 1);
		op->busy = true;
		t->fn(t);
		op->busy = false;
		if (!op->owner) {
			op_free(op);
			return;
		}
	}
	op_arm(e, op);
}

static void handle_cqe(struct uvh_engine *e, struct uvh_engine_op *op, int res, unsigned int flags)
{
	bool more = flags & IORING_CQE_F_MORE;

	if (!more) {
		op->inflight = false;
		e->ninflight--;
	}
	if (!op->owner) {
		if (!op->inflight && !op->busy)
			op_free(op);
		return;
	}
	switch (op->type) {
	case OP_WAKE:
	case OP_KICK:
		if (op->type == OP_KICK)
			on_kick(e, op->owner, res);
		if (more || res == -ECANCELED)
			break;
		/* The kernel ended the multishot poll (overflow, error): re-arm,
		 * unless it keeps failing. */
		if (res < 0 && ++op->errors > MAX_ARM_ERRORS) {
			UVH_ERR("%s: poll keeps failing (%s): given up", e->name, strerror(-res));
			break;
		}
		if (res >= 0)
			op->errors = 0;
		op_arm(e, op);
		break;
	case OP_RECV:
		on_recv(e, op, res);
		break;
	case OP_TIMER:
		on_timer(e, op, res);
		break;
	}
}

/* Take what the CQ holds (no syscall when nothing is there). */
static unsigned int reap(struct uvh_engine *e)
{
	struct {
		uint64_t data;
		int res;
		unsigned int flags;
	} batch[CQE_BATCH];
	struct io_uring_cqe *cqe;
	unsigned int head, n, i, total = 0;

	do {
		n = 0;
		io_uring_for_each_cqe(&e->ring, head, cqe) {
			batch[n].data = cqe->user_data;
			batch[n].res = cqe->res;
			batch[n].flags = cqe->flags;
			if (++n == CQE_BATCH)
				break;
		}
		/* Release the slots first: handlers may submit and call back. */
		io_uring_cq_advance(&e->ring, n);
		for (i = 0; i < n; i++)
			/* 0: a cancel; LIBURING_UDATA_TIMEOUT: liburing's own timeout
			 * SQE for a timed wait on a kernel without EXT_ARG */
			if (batch[i].data && batch[i].data != LIBURING_UDATA_TIMEOUT)
				handle_cqe(e, (struct uvh_engine_op *)(uintptr_t)batch[i].data,
					   batch[i].res, batch[i].flags);
		total += n;
	} while (n == CQE_BATCH);
	return total;
}

/*
 * Between sweeps while awake: flush SQEs and run deferred completions only
 * when the kernel says there are some (IORING_SQ_TASKRUN), so a polling
 * sweep costs two loads here, not a syscall.
 */
static void poll_ring(struct uvh_engine *e)
{
	unsigned int kflags = __atomic_load_n(e->ring.sq.kflags, __ATOMIC_RELAXED);
	bool enter = kflags & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW);

	if (!e->taskrun_flag && !(++e->poll_tick & POLL_ENTER_MASK))
		enter = true;
	if (io_uring_sq_ready(&e->ring))
		io_uring_submit(&e->ring);
	if (enter)
		io_uring_get_events(&e->ring);
	if (io_uring_cq_ready(&e->ring))
		reap(e);
}

/* ---- ring setup / teardown ------------------------------------------------------- */

static int ring_setup(struct uvh_engine *e)
{
	static const unsigned int tries[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
			IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
			IORING_SETUP_TASKRUN_FLAG,
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN |
			IORING_SETUP_TASKRUN_FLAG,
		IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
		0,
	};
	struct io_uring_params p;
	unsigned int i, first = e->opts.no_setup_flags ? 4 : 0;
	int ret = -EINVAL;

	for (i = first; i < sizeof(tries) / sizeof(tries[0]); i++) {
		memset(&p, 0, sizeof(p));
		p.flags = tries[i];
		ret = io_uring_queue_init_params(e->opts.ring_entries, &e->ring, &p);
		if (ret != -EINVAL)
			break;
		/* An older kernel refuses flags it does not know: try fewer. */
	}
	if (ret < 0) {
		UVH_ERR("%s: io_uring setup: %s", e->name, strerror(-ret));
		return ret;
	}
	e->setup_flags = tries[i];
	e->taskrun_flag = tries[i] & IORING_SETUP_TASKRUN_FLAG;
	/* Naps are timed waits: without EXT_ARG liburing would need an SQE
	 * for each, so such a kernel gets no naps (poll, then sleep). */
	e->can_nap = !e->opts.no_nap && (p.features & IORING_FEAT_EXT_ARG);
	e->ring_ok = true;
	e->stopping = false;
	e->ninflight = 0;
	io_uring_register_ring_fd(&e->ring);	/* cheaper enters; optional */

	e->fixed = io_uring_register_files_sparse(&e->ring, e->max_files) == 0;
	if (e->fixed) {
		ret = io_uring_register_files_update(&e->ring, 0, e->slot_fd, e->max_files);
		if (ret < 0) {
			UVH_WARN("%s: registered files unusable (%s): plain fds", e->name,
				 strerror(-ret));
			io_uring_unregister_files(&e->ring);
			e->fixed = false;
		}
	}
	UVH_DEBUG("%s: io_uring flags 0x%x, %s files", e->name, e->setup_flags,
		  e->fixed ? "registered" : "plain");
	return 0;
}

static void ring_teardown(struct uvh_engine *e)
{
	struct __kernel_timespec ts = { .tv_sec = 0, .tv_nsec = 10 * 1000 * 1000 };
	struct io_uring_cqe *cqe;
	struct uvh_engine_op *op;
	unsigned int rounds;

	e->stopping = true;
	for (op = e->ops.next; op != &e->ops; op = op->next)
		op_cancel(e, op);
	io_uring_submit(&e->ring);
	/* Wait for every request to end: recvmsg buffers live in endpoints the
	 * caller owns, and a read that brought data must be accounted. */
	for (rounds = 0; e->ninflight && rounds < 200; rounds++) {
		io_uring_submit_and_wait_timeout(&e->ring, &cqe, 1, &ts, NULL);
		reap(e);
	}
	if (e->ninflight)
		UVH_ERR("%s: %u requests still in flight at teardown", e->name, e->ninflight);
	io_uring_queue_exit(&e->ring);
	e->ring_ok = false;
	e->fixed = false;
	/* Whatever had not completed is gone with the ring. */
	for (op = e->ops.next; op != &e->ops;) {
		struct uvh_engine_op *next = op->next;

		if (op->inflight) {
			op->inflight = false;
			if (op->type == OP_RECV && op->owner) {
				struct uvh_engine_watch *w = op->owner;

				w->polling = false;
				if (w->closing)
					watch_finish_unwatch(e, w);
			} else if (!op->owner) {
				op_free(op);
			}
		}
		op = next;
	}
	e->ninflight = 0;
}

/* ---- the loop ------------------------------------------------------------------------ */

/* A new measuring cycle for the adaptive policy begins at @now. */
static void cycle_begin(struct uvh_engine *e, uint64_t now, bool rested, uint64_t nap_req)
{
	e->cyc_start = now;
	e->cyc_work = 0;
	e->cyc_min_ring = UINT32_MAX;
	e->rested = rested;
	e->nap_req = nap_req;
}

static void apply_mode(struct uvh_engine *e)
{
	e->idle = 0;
	e->sparse = false;
	cycle_begin(e, uvh_now_ns(), false, 0);
	atomic_store_explicit(&e->st.nap_plan_ns, 0, memory_order_relaxed);
	if (!e->ring_ok)
		return;
	notify_disable_all(e);
	if (atomic_load_explicit(&e->mode, memory_order_relaxed) == UVH_ENGINE_EVENT)
		notify_enable_all(e);	/* a pending chain is found by the next sweep */
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
 * A nap (adaptive mode) needs none of this: it is a wait with a timeout,
 * notifications stay disabled and the queues are swept when it ends, so
 * whatever the driver published meanwhile is found then. It does not
 * announce itself to the dispatcher either: a request waits for the end
 * of the nap (nap_max_us at most), while a stop, which writes the wake
 * eventfd unconditionally, ends it at once.
 */
static bool try_sleep(struct uvh_engine *e, enum uvh_engine_mode mode)
{
	uint64_t t0;
	int ret;

	if (notify_enable_all(e)) {
		/* Work arrived while we were deciding: keep going. */
		if (mode == UVH_ENGINE_ADAPTIVE)
			notify_disable_all(e);
		e->idle = 0;
		return false;
	}
	if (atomic_load_explicit(&e->stop_req, memory_order_acquire))
		return false;
	if (uvh_dispatcher_prepare_sleep(e->disp) != 0)
		return false;
	STAT_ADD(e, sleeps, 1);
	t0 = uvh_now_ns();
	ret = io_uring_submit_and_wait(&e->ring, 1);
	if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY && ret != -ETIME)
		UVH_WARN("%s: io_uring wait: %s", e->name, strerror(-ret));
	STAT_ADD(e, sleep_ns, uvh_now_ns() - t0);
	uvh_dispatcher_woke(e->disp);
	STAT_ADD(e, wakeups, 1);
	reap(e);
	e->idle = 0;
	if (mode == UVH_ENGINE_ADAPTIVE)
		notify_disable_all(e);	/* back to polling */
	return true;
}

/* Adaptive: sleep until kicked; the sleep begins the next cycle. */
static void adaptive_sleep(struct uvh_engine *e, uint64_t now)
{
	uint64_t woke;

	if (!try_sleep(e, UVH_ENGINE_ADAPTIVE)) {
		/* work came (or a stop or request): traffic is not sparse */
		e->sparse = false;
		return;
	}
	woke = uvh_now_ns();
	/* A kick that took longer than a longest nap: the driver sends less
	 * than a burst per nap, so after this burst sleep again at once
	 * (one wake-up per burst) rather than nap and find nothing. */
	e->sparse = woke - now > e->nap_max_ns;
	cycle_begin(e, now, true, 0);
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
	reap(e);
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

/*
 * Adaptive mode, a sweep found no work. Free for the first IDLE_SPIN idle
 * sweeps of a spell (at peak load the gaps between bursts are that short,
 * and a clock read there costs rate), then a clock read and a compare;
 * one decision per cycle (see plan_nap).
 */
static void adaptive_idle(struct uvh_engine *e)
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
	cycle_begin(e, now, req != 0, req);
	if (req)
		nap(e, req);
}

static void drain_inbox(struct uvh_engine *e)
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
		op_arm(e, op);
	io_uring_submit(&e->ring);
	apply_mode(e);

	while (!atomic_load_explicit(&e->stop_req, memory_order_acquire)) {
		drain_inbox(e);
		work = sweep(e);
		poll_ring(e);
		STAT_ADD(e, sweeps, 1);
		if (work) {
			e->idle = 0;
			e->cyc_work += work;
			continue;
		}
		STAT_ADD(e, idle_sweeps, 1);
		mode = (enum uvh_engine_mode)atomic_load_explicit(&e->mode, memory_order_relaxed);
		if (mode == UVH_ENGINE_ADAPTIVE)
			adaptive_idle(e);
		else if (mode == UVH_ENGINE_EVENT)
			try_sleep(e, mode);
	}
}

/* Pin the calling thread and prefer the engine's memory node. */
static int place_thread(struct uvh_engine *e)
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
static void end_run(struct uvh_engine *e, int err)
{
	atomic_store(&e->in_loop, false);
	e->state = ST_IDLE;
	e->start_err = err;
	while (uvh_dispatcher_pending(e->disp))
		drain_inbox(e);
	e->run_gen++;
	pthread_cond_broadcast(&e->ctl_cv);
}

static int engine_main(struct uvh_engine *e)
{
	int ret = ring_setup(e);

	pthread_mutex_lock(&e->ctl);
	if (ret) {
		end_run(e, ret);
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
	ring_teardown(e);

	pthread_mutex_lock(&e->ctl);
	end_run(e, 0);
	pthread_mutex_unlock(&e->ctl);
	return 0;
}

static void *engine_thread(void *arg)
{
	struct uvh_engine *e = arg;
	char tname[16];
	int ret;

	/* Thread names hold 15 characters. */
	memcpy(tname, e->name, sizeof(tname) - 1);
	tname[sizeof(tname) - 1] = '\0';
	pthread_setname_np(pthread_self(), tname);
	ret = place_thread(e);
	if (ret) {
		pthread_mutex_lock(&e->ctl);
		end_run(e, ret);
		pthread_mutex_unlock(&e->ctl);
		return NULL;
	}
	engine_main(e);
	return NULL;
}

/* ---- lifecycle ---------------------------------------------------------------------- */

struct uvh_engine *uvh_engine_create(const struct uvh_engine_opts *opts)
{
	struct uvh_engine_opts o = { .cpu = -1, .numa_node = -1 };
	pthread_mutexattr_t ma;
	struct uvh_engine *e;
	int node = -1, ncpu = get_nprocs_conf(), err;
	unsigned int i;

	if (opts)
		o = *opts;
	if (o.cpu < -1 || o.cpu >= ncpu || o.cpu >= CPU_SETSIZE || o.numa_node < -1 ||
	    (unsigned int)o.mode > UVH_ENGINE_ADAPTIVE) {
		errno = EINVAL;
		return NULL;
	}
	if (numa_ok()) {
		if (o.numa_node > numa_max_node()) {
			errno = EINVAL;
			return NULL;
		}
		node = o.numa_node >= 0 ? o.numa_node : (o.cpu >= 0 ? numa_node_of_cpu(o.cpu) : -1);
	} else if (o.numa_node > 0) {
		UVH_WARN("engine: NUMA unavailable, node %d ignored", o.numa_node);
	}
	if (!o.name || !o.name[0])
		o.name = "uvh-engine";
	if (!o.nap_max_us)
		o.nap_max_us = DEF_NAP_MAX_US;
	if (!o.nap_min_us)
		o.nap_min_us = o.nap_max_us < DEF_NAP_MIN_US ? o.nap_max_us : DEF_NAP_MIN_US;
	if (!o.idle_us)
		o.idle_us = o.no_nap ? DEF_IDLE_US_NO_NAP : o.nap_max_us;
	if (o.nap_batch > 32768)
		o.nap_batch = 32768;	/* no ring is larger */
	if (!o.ring_entries)
		o.ring_entries = DEF_RING_ENTRIES;
	if (!o.max_files)
		o.max_files = DEF_MAX_FILES;
	if (!o.inbox_size)
		o.inbox_size = DEF_INBOX;
	if (o.max_files > 65536 || o.ring_entries > 32768 || o.nap_max_us > MAX_NAP_US ||
	    o.nap_min_us > o.nap_max_us) {
		errno = EINVAL;
		return NULL;
	}

	e = NULL;
	if (node >= 0) {
		e = numa_alloc_onnode(sizeof(*e), node);	/* zeroed pages */
		if (e)
			e->numa_alloc = true;
	}
	if (!e)
		e = calloc(1, sizeof(*e));	/* no node, or the node is full */
	if (!e) {
		errno = ENOMEM;
		return NULL;
	}
	snprintf(e->name, sizeof(e->name), "%s", o.name);
	e->opts = o;
	e->opts.name = e->name;
	e->cpu = o.cpu;
	e->node = node;
	e->nap_min_ns = (uint64_t)o.nap_min_us * 1000u;
	e->nap_max_ns = (uint64_t)o.nap_max_us * 1000u;
	e->idle_ns = (uint64_t)o.idle_us * 1000u;
	/* polling: long enough to hold several of a paced driver's bursts */
	e->window_ns = e->nap_max_ns / 2;
	e->ops.next = e->ops.prev = &e->ops;
	e->wake_slot = -1;
	atomic_store(&e->mode, (int)o.mode);
	pthread_mutexattr_init(&ma);
	/* Recursive: a request run while the engine winds down may call back in. */
	pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&e->ctl, &ma);
	pthread_mutexattr_destroy(&ma);
	pthread_cond_init(&e->ctl_cv, NULL);

	e->max_files = o.max_files;
	e->slot_fd = malloc(sizeof(int) * e->max_files);
	e->disp = uvh_dispatcher_create(o.inbox_size, 0);
	if (!e->slot_fd || !e->disp) {
		err = e->disp ? ENOMEM : errno;
		goto fail;
	}
	for (i = 0; i < e->max_files; i++)
		e->slot_fd[i] = -1;
	e->wake_slot = slot_alloc(e, uvh_dispatcher_wake_fd(e->disp));
	e->wake_op = op_new(e, OP_WAKE, e);
	if (e->wake_slot < 0 || !e->wake_op) {
		err = ENOMEM;
		goto fail;
	}
	return e;
fail:
	uvh_engine_destroy(e);
	errno = err;
	return NULL;
}

/* Under ctl: join an own thread whose loop has ended (a stop asked from a
 * callback leaves it unjoined). */
static void reap_thread(struct uvh_engine *e)
{
	if (e->state == ST_IDLE && e->has_thread && !e->joining) {
		e->joining = true;
		pthread_mutex_unlock(&e->ctl);
		pthread_join(e->thread, NULL);
		pthread_mutex_lock(&e->ctl);
		e->has_thread = false;
		e->joining = false;
	}
}

int uvh_engine_start(struct uvh_engine *e)
{
	int ret;

	pthread_mutex_lock(&e->ctl);
	reap_thread(e);
	if (e->state != ST_IDLE || e->has_thread) {
		pthread_mutex_unlock(&e->ctl);
		return -EALREADY;
	}
	e->state = ST_STARTING;
	atomic_store(&e->stop_req, false);
	ret = pthread_create(&e->thread, NULL, engine_thread, e);
	if (ret) {
		e->state = ST_IDLE;
		pthread_mutex_unlock(&e->ctl);
		return -ret;
	}
	e->has_thread = true;
	while (e->state == ST_STARTING)
		pthread_cond_wait(&e->ctl_cv, &e->ctl);
	if (e->state == ST_IDLE) {
		/* Setup failed: the thread has ended. */
		ret = e->start_err;
		e->has_thread = false;
		pthread_mutex_unlock(&e->ctl);
		pthread_join(e->thread, NULL);
		return ret ? ret : -EIO;
	}
	pthread_mutex_unlock(&e->ctl);
	return 0;
}

int uvh_engine_run(struct uvh_engine *e)
{
	cpu_set_t saved;
	bool have_saved, have_policy = false;
	unsigned long nodemask[16];
	int policy = 0, ret;

	pthread_mutex_lock(&e->ctl);
	reap_thread(e);
	if (e->state != ST_IDLE || e->has_thread) {
		pthread_mutex_unlock(&e->ctl);
		return -EALREADY;
	}
	e->state = ST_STARTING;
	atomic_store(&e->stop_req, false);
	pthread_mutex_unlock(&e->ctl);

	/* The VMM's thread: put its placement back afterwards. */
	have_saved = pthread_getaffinity_np(pthread_self(), sizeof(saved), &saved) == 0;
	if (e->node >= 0)
		have_policy = get_mempolicy(&policy, nodemask, sizeof(nodemask) * 8, NULL, 0) == 0;
	ret = place_thread(e);
	if (ret) {
		pthread_mutex_lock(&e->ctl);
		end_run(e, ret);
		pthread_mutex_unlock(&e->ctl);
	} else {
		ret = engine_main(e);
	}
	if (have_saved)
		pthread_setaffinity_np(pthread_self(), sizeof(saved), &saved);
	if (have_policy)
		set_mempolicy(policy, nodemask, sizeof(nodemask) * 8);
	return ret;
}

int uvh_engine_stop(struct uvh_engine *e)
{
	uint64_t gen;

	if (uvh_engine_is_current(e)) {
		/* From a callback: just ask; the loop ends after this sweep. */
		atomic_store_explicit(&e->stop_req, true, memory_order_release);
		return 0;
	}
	pthread_mutex_lock(&e->ctl);
	if (e->state == ST_IDLE) {
		bool had = e->has_thread && !e->joining;

		reap_thread(e);
		pthread_mutex_unlock(&e->ctl);
		return had ? 0 : -EALREADY;
	}
	while (e->state == ST_STARTING)
		pthread_cond_wait(&e->ctl_cv, &e->ctl);
	if (e->state == ST_RUNNING) {
		gen = e->run_gen;
		/* stop_req before the wake: the woken loop sees it (release pairs
		 * with the loop's acquire load). */
		atomic_store_explicit(&e->stop_req, true, memory_order_release);
		uvh_dispatcher_kick(e->disp);
		while (e->run_gen == gen)
			pthread_cond_wait(&e->ctl_cv, &e->ctl);
	}
	reap_thread(e);
	pthread_mutex_unlock(&e->ctl);
	return 0;
}

void uvh_engine_destroy(struct uvh_engine *e)
{
	struct uvh_engine_op *op, *next;
	unsigned int i;

	if (!e)
		return;
	if (uvh_engine_is_current(e)) {
		/* The loop is on this very stack: freeing it here would crash. */
		UVH_ERR("%s: uvh_engine_destroy from the engine's own thread refused", e->name);
		return;
	}
	uvh_engine_stop(e);
	/* Detach everything without callbacks. */
	for (i = 0; i < e->nqueues; i++) {
		e->queues[i]->engine = NULL;
		e->queues[i]->kick_op = NULL;
		e->queues[i]->kick_slot = -1;
	}
	for (op = e->ops.next; op && op != &e->ops; op = next) {
		next = op->next;
		if (op->type == OP_RECV && op->owner) {
			struct uvh_engine_watch *w = op->owner;

			w->engine = NULL;
			w->op = NULL;
			w->slot = -1;
		} else if (op->type == OP_TIMER && op->owner) {
			struct uvh_engine_timer *t = op->owner;

			t->engine = NULL;
			t->op = NULL;
		}
		op_free(op);
	}
	uvh_dispatcher_destroy(e->disp);
	free(e->queues);
	free(e->slot_fd);
	pthread_cond_destroy(&e->ctl_cv);
	pthread_mutex_destroy(&e->ctl);
	if (e->numa_alloc)
		numa_free(e, sizeof(*e));
	else
		free(e);
}

const char *uvh_engine_name(const struct uvh_engine *e)
{
	return e->name;
}

bool uvh_engine_is_current(const struct uvh_engine *e)
{
	return atomic_load(&((struct uvh_engine *)e)->in_loop) &&
	       pthread_equal(e->owner, pthread_self());
}

/* ---- requests ------------------------------------------------------------------------ */

int uvh_engine_post(struct uvh_engine *e, struct uvh_dispatch_req *req)
{
	int ret;

	if (!req || !req->fn)
		return -EINVAL;
	/* Under ctl so that a winding-down loop drains it (see engine_main). */
	pthread_mutex_lock(&e->ctl);
	ret = uvh_dispatcher_post(e->disp, req);
	pthread_mutex_unlock(&e->ctl);
	return ret;
}

struct engine_call {
	uvh_dispatch_call_fn fn;
	void *arg;
};

static void call_trampoline(void *ctx, struct uvh_dispatch_req *req)
{
	struct engine_call *c = req->arg;

	req->result = ctx ? c->fn(ctx, c->arg) : -ECANCELED;
}

int uvh_engine_call(struct uvh_engine *e, uvh_dispatch_call_fn fn, void *arg)
{
	struct engine_call c = { .fn = fn, .arg = arg };
	struct uvh_completion done;
	struct uvh_dispatch_req req = {
		.fn = call_trampoline, .arg = &c, .result = 0, .done = &done,
	};
	unsigned int tries;
	int ret;

	if (uvh_engine_is_current(e))
		return fn(e, arg);
	uvh_completion_init(&done);
	pthread_mutex_lock(&e->ctl);
	for (tries = 0;; tries++) {
		if (e->state == ST_IDLE) {
			/* Nobody runs the loop: we are its owner for this call. */
			ret = fn(e, arg);
			pthread_mutex_unlock(&e->ctl);
			return ret;
		}
		ret = uvh_dispatcher_post(e->disp, &req);
		if (ret != -ENOBUFS || tries >= 10000)
			break;
		pthread_mutex_unlock(&e->ctl);
		usleep(100);
		pthread_mutex_lock(&e->ctl);
	}
	pthread_mutex_unlock(&e->ctl);
	if (ret)
		return ret;
	uvh_completion_wait(&done, -1);
	return req.result;
}

/* ---- queues ------------------------------------------------------------------------ */

static bool is_eventfd(int fd)
{
	char path[64], link[64];
	ssize_t n;

	if (fcntl(fd, F_GETFD) < 0)
		return false;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return true;	/* no /proc: the fd exists, trust it */
	link[n] = '\0';
	return strcmp(link, "anon_inode:[eventfd]") == 0;
}

static int do_add_queue(void *ctx, void *arg)
{
	struct uvh_engine *e = ctx;
	struct uvh_engine_queue *q = arg, **nq;
	unsigned int cap;
	int slot = -1;

	if (q->engine)
		return -EBUSY;
	if (e->nqueues == e->cap_queues) {
		cap = e->cap_queues ? e->cap_queues * 2 : 8;
		nq = realloc(e->queues, cap * sizeof(*nq));
		if (!nq)
			return -ENOMEM;
		e->queues = nq;
		e->cap_queues = cap;
	}
	if (q->kick_fd >= 0) {
		slot = slot_alloc(e, q->kick_fd);
		if (slot < 0)
			return slot;
		q->kick_op = op_new(e, OP_KICK, q);
		if (!q->kick_op) {
			slot_free(e, slot);
			return -ENOMEM;
		}
	} else {
		q->kick_op = NULL;
	}
	q->kick_slot = slot;
	q->engine = e;
	q->index = e->nqueues;
	q->need_signal = false;
	q->error_reported = false;
	q->kicked = false;
	e->queues[e->nqueues++] = q;
	atomic_store_explicit(&e->nqueues_pub, e->nqueues, memory_order_relaxed);
	if (e->ring_ok && !e->stopping && q->kick_op)
		op_arm(e, q->kick_op);
	notify_join(e, q);
	return 0;
}

int uvh_engine_add_queue(struct uvh_engine *e, struct uvh_engine_queue *q)
{
	int fl;

	if (!e || !q || !q->vq || !q->process)
		return -EINVAL;
	if ((q->kick_fd < -1 || (q->kick_fd >= 0 && !is_eventfd(q->kick_fd))) ||
	    (q->call_fd < -1 || (q->call_fd >= 0 && !is_eventfd(q->call_fd))) ||
	    (q->err_fd < -1 || (q->err_fd >= 0 && !is_eventfd(q->err_fd))))
		return -EINVAL;
	if (q->engine)
		return -EBUSY;
	if (q->kick_fd >= 0) {
		/* A stale poll event must find the count empty, not block. */
		fl = fcntl(q->kick_fd, F_GETFL);
		if (fl >= 0 && !(fl & O_NONBLOCK))
			fcntl(q->kick_fd, F_SETFL, fl | O_NONBLOCK);
	}
	return uvh_engine_call(e, do_add_queue, q);
}

static int do_remove_queue(void *ctx, void *arg)
{
	struct uvh_engine *e = ctx;
	struct uvh_engine_queue *q = arg;
	unsigned int i;

	if (q->engine != e)
		return -ENOENT;
	i = q->index;
	if (i >= e->nqueues || e->queues[i] != q)
		return -ENOENT;
	e->queues[i] = e->queues[--e->nqueues];
	e->queues[i]->index = i;
	atomic_store_explicit(&e->nqueues_pub, e->nqueues, memory_order_relaxed);
	op_release(e, q->kick_op);
	q->kick_op = NULL;
	slot_free(e, q->kick_slot);
	q->kick_slot = -1;
	q->engine = NULL;
	q->need_signal = false;
	if (e->ring_ok)
		io_uring_submit(&e->ring);	/* the cancel goes out now */
	return 0;
}

int uvh_engine_remove_queue(struct uvh_engine *e, struct uvh_engine_queue *q)
{
	if (!e || !q)
		return -EINVAL;
	return uvh_engine_call(e, do_remove_queue, q);
}

/* ---- watches ------------------------------------------------------------------------ */

static int do_watch(void *ctx, void *arg)
{
	struct uvh_engine *e = ctx;
	struct uvh_engine_watch *w = arg;
	int slot;

	if (w->engine)
		return -EBUSY;
	slot = slot_alloc(e, w->ep->fd);
	if (slot < 0)
		return slot;
	w->op = op_new(e, OP_RECV, w);
	if (!w->op) {
		slot_free(e, slot);
		return -ENOMEM;
	}
	w->slot = slot;
	w->engine = e;
	w->polling = false;
	w->closing = false;
	w->unwatch_done = NULL;
	if (e->ring_ok && !e->stopping)
		op_arm(e, w->op);
	return 0;
}

int uvh_engine_watch(struct uvh_engine *e, struct uvh_engine_watch *w)
{
	if (!e || !w || !w->ep || w->ep->fd < 0)
		return -EINVAL;
	if (w->engine)
		return -EBUSY;
	return uvh_engine_call(e, do_watch, w);
}

struct unwatch_arg {
	struct uvh_engine_watch *w;
	struct uvh_completion *done;
};

/* 0: detached; 1: a read is being cancelled, ->done (or on_close) follows. */
static int do_unwatch(void *ctx, void *arg)
{
	struct uvh_engine *e = ctx;
	struct unwatch_arg *a = arg;
	struct uvh_engine_watch *w = a->w;

	if (w->engine != e)
		return -ENOENT;
	if (w->closing)
		return -EALREADY;
	if (w->op && w->op->inflight && e->ring_ok) {
		w->closing = true;
		w->unwatch_done = a->done;
		op_cancel(e, w->op);
		io_uring_submit(&e->ring);
		return 1;
	}
	watch_detach(e, w);
	return 0;
}

int uvh_engine_unwatch(struct uvh_engine *e, struct uvh_engine_watch *w)
{
	struct uvh_completion done;
	struct unwatch_arg a = { .w = w, .done = &done };
	int ret;

	if (!e || !w)
		return -EINVAL;
	if (uvh_engine_is_current(e)) {
		a.done = NULL;
		ret = do_unwatch(e, &a);
		return ret == 1 ? -EINPROGRESS : ret;
	}
	uvh_completion_init(&done);
	ret = uvh_engine_call(e, do_unwatch, &a);
	if (ret == 1) {
		uvh_completion_wait(&done, -1);
		ret = 0;
	}
	return ret;
}

/* ---- timers ------------------------------------------------------------------------ */

static int do_add_timer(void *ctx, void *arg)
{
	struct uvh_engine *e = ctx;
	struct uvh_engine_timer *t = arg;

	if (t->engine)
		return -EBUSY;
	t->op = op_new(e, OP_TIMER, t);
	if (!t->op)
		return -ENOMEM;
	t->engine = e;
	if (e->ring_ok && !e->stopping)
		op_arm(e, t->op);
	return 0;
}

int uvh_engine_add_timer(struct uvh_engine *e, struct uvh_engine_timer *t, unsigned int ms,
			 void (*fn)(struct uvh_engine_timer *t))
{
	if (!e || !t || !fn || !ms)
		return -EINVAL;
	if (t->engine)
		return -EBUSY;
	t->fn = fn;
	t->period_ns = (uint64_t)ms * 1000000u;
	t->fired = 0;
	return uvh_engine_call(e, do_add_timer, t);
}

static int do_del_timer(void *ctx, void *arg)
{
	struct uvh_engine *e = ctx;
	struct uvh_engine_timer *t = arg;

	if (t->engine != e)
		return -ENOENT;
	op_release(e, t->op);
	t->op = NULL;
	t->engine = NULL;
	if (e->ring_ok)
		io_uring_submit(&e->ring);
	return 0;
}

int uvh_engine_del_timer(struct uvh_engine *e, struct uvh_engine_timer *t)
{
	if (!e || !t)
		return -EINVAL;
	return uvh_engine_call(e, do_del_timer, t);
}

/* ---- modes and counters ----------------------------------------------------------- */

static int do_set_mode(void *ctx, void *arg)
{
	struct uvh_engine *e = ctx;

	atomic_store_explicit(&e->mode, (int)(intptr_t)arg, memory_order_relaxed);
	apply_mode(e);
	return 0;
}

int uvh_engine_set_mode(struct uvh_engine *e, enum uvh_engine_mode mode)
{
	if (!e || (unsigned int)mode > UVH_ENGINE_ADAPTIVE)
		return -EINVAL;
	return uvh_engine_call(e, do_set_mode, (void *)(intptr_t)mode);
}

enum uvh_engine_mode uvh_engine_get_mode(const struct uvh_engine *e)
{
	return (enum uvh_engine_mode)atomic_load_explicit(&((struct uvh_engine *)e)->mode,
							  memory_order_relaxed);
}

void uvh_engine_stats(const struct uvh_engine *ce, struct uvh_engine_stats *st)
{
	struct uvh_engine *e = (struct uvh_engine *)ce;

	memset(st, 0, sizeof(*st));
#define LD(f) atomic_load_explicit(&e->st.f, memory_order_relaxed)
	st->sweeps = LD(sweeps);
	st->idle_sweeps = LD(idle_sweeps);
	st->wakeups = LD(wakeups);
	st->sleeps = LD(sleeps);
	st->kicks = LD(kicks);
	st->calls = LD(calls);
	st->calls_suppressed = LD(calls_suppressed);
	st->messages = LD(messages);
	st->timer_fires = LD(timer_fires);
	st->requests = LD(requests);
	st->naps = LD(naps);
	st->nap_ns = LD(nap_ns);
	st->sleep_ns = LD(sleep_ns);
	st->nap_plan_ns = LD(nap_plan_ns);
#undef LD
	st->busy_sweeps = st->sweeps > st->idle_sweeps ? st->sweeps - st->idle_sweeps : 0;
	st->busy_ratio = st->sweeps ? (double)st->busy_sweeps / (double)st->sweeps : 0.0;
	st->mode = uvh_engine_get_mode(e);
	st->queues = atomic_load_explicit(&e->nqueues_pub, memory_order_relaxed);
	st->running = atomic_load(&e->in_loop);
	st->setup_flags = e->setup_flags;
}
