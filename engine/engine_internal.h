/* SPDX-License-Identifier: MIT */
/*
 * uvhost: what the engine's files share (see engine.h). Not installed.
 *
 *   engine.c           life cycle and the control API (requests, queues,
 *                      watches, timers, modes, counters)
 *   engine_ring.c      the engine's io_uring: registered files, ops and
 *                      their completions, ring set-up and teardown
 *   engine_loop.c      the loop: sweeps, guest notifications, calls,
 *                      event-mode sleep, the thread
 *   engine_adaptive.c  the adaptive mode's nap policy
 *
 * Everything the engine watches is an "op": a small engine-owned record
 * whose address is the io_uring user_data. Owners (queues, watches,
 * timers) point at their op; detaching an owner clears op->owner and, when
 * a request is still in flight, cancels it. The op itself is freed only
 * when its last CQE has been seen, so a late CQE never reaches freed
 * memory that the caller owned.
 */
#ifndef UVHOST_ENGINE_INTERNAL_H
#define UVHOST_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include <liburing.h>

#include "engine.h"

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
#define DEF_NAP_MAX_US		200u
#define DEF_IDLE_US_NO_NAP	50u
#define MAX_NAP_US		1000000u
/* Adaptive: idle sweeps in a row (~15 ns each) before the clock is read. */
#define IDLE_SPIN		16u
/* Adaptive: most chains a sleep waits for (each ring's share is capped at
 * 3/4 of its size anyway). */
#define KICK_BATCH_MAX		4096u
/* Event mode: default poll before a sleep (about what a wake-up costs). */
#define DEF_SPIN_US		10u
/* Adaptive: a batching engine's backstop timer fires every this many
 * latency bounds (nap_max_us). */
#define BACKSTOP_BOUNDS		4u
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
	OP_READY,	/* a queue's wake_fd (a device's socket) */
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
	unsigned int kick_batch;	/* chains a sleep waits for (EVENT_IDX) */
	unsigned int batch_cap;		/* the largest a ring takes (3/4 of it) */
	struct uvh_engine_timer backstop;	/* wakes a batching engine (see
						 * engine_adaptive.c) */
	uint64_t slept_ns;		/* the last sleep's length */
	bool slept_timeout;		/* ... ended by its timeout */
	uint64_t spin_ns;		/* event mode: poll this long before a sleep */

	struct {
		_Atomic uint64_t sweeps, idle_sweeps, wakeups, sleeps, kicks, calls,
			calls_suppressed, messages, timer_fires, requests, naps, nap_ns,
			sleep_ns, nap_plan_ns, sleep_timeouts, kick_batch;
	} st;
};

/* Single writer (the engine): a relaxed load and store, no locked RMW. */
#define STAT_ADD(e, f, n)						\
	atomic_store_explicit(&(e)->st.f,				\
		atomic_load_explicit(&(e)->st.f, memory_order_relaxed) + (n), \
		memory_order_relaxed)

/* engine_ring.c (the engine's thread, or with it stopped) */
int engine_slot_alloc(struct uvh_engine *e, int fd);
void engine_slot_free(struct uvh_engine *e, int slot);
struct uvh_engine_op *engine_op_new(struct uvh_engine *e, enum op_type type, void *owner);
void engine_op_free(struct uvh_engine_op *op);
void engine_op_cancel(struct uvh_engine *e, struct uvh_engine_op *op);
void engine_op_release(struct uvh_engine *e, struct uvh_engine_op *op);
int engine_op_arm(struct uvh_engine *e, struct uvh_engine_op *op);
void engine_watch_detach(struct uvh_engine *e, struct uvh_engine_watch *w);
unsigned int engine_reap(struct uvh_engine *e);
void engine_poll_ring(struct uvh_engine *e);
int engine_ring_setup(struct uvh_engine *e);
void engine_ring_teardown(struct uvh_engine *e);
/* engine_loop.c */
void engine_notify_join(struct uvh_engine *e, struct uvh_engine_queue *q);
void engine_apply_mode(struct uvh_engine *e);
/* Sleep until kicked (@batch chains with EVENT_IDX), a message, a request
 * or @timeout_ns (0: none); false when work came first. */
bool engine_sleep(struct uvh_engine *e, unsigned int batch, uint64_t timeout_ns);
bool engine_kicks_batch(const struct uvh_engine *e);
void engine_drain_inbox(struct uvh_engine *e);
int engine_place_thread(struct uvh_engine *e);
void engine_end_run(struct uvh_engine *e, int err);
int engine_main(struct uvh_engine *e);
void *engine_thread(void *arg);
/* engine.c: timers, on the engine's thread */
int engine_timer_add(struct uvh_engine *e, struct uvh_engine_timer *t);
int engine_timer_del(struct uvh_engine *e, struct uvh_engine_timer *t);
/* engine_adaptive.c */
void engine_cycle_begin(struct uvh_engine *e, uint64_t now, bool rested, uint64_t nap_req);
void engine_adaptive_idle(struct uvh_engine *e);
/* Leaving adaptive mode or the loop: no batch, no backstop. */
void engine_adaptive_reset(struct uvh_engine *e);

#endif
