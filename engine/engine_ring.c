/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the engine's io_uring: registered files, ops (see
 * engine_internal.h) armed and completed, the ring's set-up and teardown.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"
#include "log.h"
#include "engine_internal.h"

/* ---- registered files ------------------------------------------------------ */

int engine_slot_alloc(struct uvh_engine *e, int fd)
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

void engine_slot_free(struct uvh_engine *e, int slot)
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

struct uvh_engine_op *engine_op_new(struct uvh_engine *e, enum op_type type, void *owner)
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

void engine_op_free(struct uvh_engine_op *op)
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

void engine_op_cancel(struct uvh_engine *e, struct uvh_engine_op *op)
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
void engine_op_release(struct uvh_engine *e, struct uvh_engine_op *op)
{
	if (!op)
		return;
	op->owner = NULL;
	if (op->inflight)
		engine_op_cancel(e, op);
	else if (!op->busy)
		engine_op_free(op);
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

int engine_op_arm(struct uvh_engine *e, struct uvh_engine_op *op)
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
	case OP_READY:
		/* one-shot, armed before each sleep (engine_sleep): a waiter on
		 * the device's socket costs it a wake-up per batch of frames,
		 * which a polling engine would pay for nothing */
		q = op->owner;
		return arm_poll(e, op, q->wake_slot, false);
	case OP_RECV:
		return arm_recv(e, op->owner);
	case OP_TIMER:
		return arm_timer(e, op->owner);
	}
	return -EINVAL;
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
void engine_watch_detach(struct uvh_engine *e, struct uvh_engine_watch *w)
{
	struct uvh_engine_op *op = w->op;

	w->op = NULL;
	w->engine = NULL;
	w->closing = false;
	engine_slot_free(e, w->slot);
	w->slot = -1;
	engine_op_release(e, op);
}

static void watch_finish_unwatch(struct uvh_engine *e, struct uvh_engine_watch *w)
{
	struct uvh_completion *done = w->unwatch_done;

	w->unwatch_done = NULL;
	engine_watch_detach(e, w);
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
		engine_op_arm(e, op);
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
			engine_op_free(op);
			return;
		}
	}
	if (w->closing) {
		watch_finish_unwatch(e, w);
		return;
	}
	if (r == 1 || r == 0 || r == -EINTR) {
		engine_op_arm(e, op);
		return;
	}
	if (r == -EAGAIN) {
		/* A non-blocking socket with nothing to read: wait for POLLIN. */
		w->polling = true;
		engine_op_arm(e, op);
		return;
	}
	engine_watch_detach(e, w);
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
			engine_op_free(op);
			return;
		}
	}
	engine_op_arm(e, op);
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
			engine_op_free(op);
		return;
	}
	switch (op->type) {
	case OP_WAKE:
	case OP_KICK:
	case OP_READY:
		/* OP_READY: the device's fd is readable; its CQE has woken the
		 * loop, whose next sweep runs the device's burst: nothing to read */
		if (op->type == OP_KICK)
			on_kick(e, op->owner, res);
		if (op->type == OP_READY) {
			/* the next sleep arms it again, unless the fd only reports
			 * an error (a deleted tap: POLLERR at once, every time) */
			if (res < 0 || (res & (POLLERR | POLLHUP | POLLNVAL))) {
				if (++op->errors == MAX_ARM_ERRORS)
					UVH_WARN("%s: queue %u: its device's fd reports %s: no longer "
						 "waited on", e->name, ((struct uvh_engine_queue *)
						 op->owner)->index, res < 0 ? strerror(-res) :
						 "an error");
			} else if (res > 0) {
				op->errors = 0;
			}
			break;
		}
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
		engine_op_arm(e, op);
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
unsigned int engine_reap(struct uvh_engine *e)
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
void engine_poll_ring(struct uvh_engine *e)
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
		engine_reap(e);
}

/* ---- ring setup / teardown ------------------------------------------------------- */

int engine_ring_setup(struct uvh_engine *e)
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

void engine_ring_teardown(struct uvh_engine *e)
{
	struct __kernel_timespec ts = { .tv_sec = 0, .tv_nsec = 10 * 1000 * 1000 };
	struct io_uring_cqe *cqe;
	struct uvh_engine_op *op;
	unsigned int rounds;

	e->stopping = true;
	for (op = e->ops.next; op != &e->ops; op = op->next)
		engine_op_cancel(e, op);
	io_uring_submit(&e->ring);
	/* Wait for every request to end: recvmsg buffers live in endpoints the
	 * caller owns, and a read that brought data must be accounted. */
	for (rounds = 0; e->ninflight && rounds < 200; rounds++) {
		io_uring_submit_and_wait_timeout(&e->ring, &cqe, 1, &ts, NULL);
		engine_reap(e);
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
				engine_op_free(op);
			}
		}
		op = next;
	}
	e->ninflight = 0;
}

