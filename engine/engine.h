/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the engine, one data-plane thread with one io_uring.
 *
 * An engine is a loop that serves a set of virtqueues (struct
 * uvh_engine_queue) and watches, all through its own io_uring:
 *   - the queues' kick eventfds (multishot poll, re-armed when the kernel
 *     ends it; the eventfd is read to reset it),
 *   - vhost-user sockets (IORING_OP_RECVMSG driven by uvh_endpoint_rx_*;
 *     whole messages with their fds go to a callback),
 *   - its dispatcher inbox (requests from other threads, with a wake
 *     eventfd),
 *   - timers (IORING_OP_TIMEOUT, re-armed).
 * Every fd it watches sits in the ring's registered-file table.
 *
 * Each turn of the loop is a sweep: every queue's process() callback runs
 * one burst, then the calls the guest asked for (uvh_vq_need_call) are
 * written to the call eventfds, all at the end of the sweep, then the
 * completion queue is reaped. Modes (per engine, switchable at run time):
 *   UVH_ENGINE_POLL      sweep forever, guest notifications disabled;
 *   UVH_ENGINE_EVENT     notifications enabled, sleep in io_uring whenever
 *                        a sweep finds nothing to do;
 *   UVH_ENGINE_ADAPTIVE  poll at high load; at partial load nap between
 *                        bursts so that work gathers into fuller ones
 *                        (interrupt moderation); sleep until kicked after
 *                        an idle spell (with the enable-and-recheck that
 *                        makes a lost kick impossible; see engine.c).
 *
 * Threads: an engine is owned by the thread that runs it, either its own
 * (uvh_engine_start) or the caller's (uvh_engine_run, for a VMM that owns
 * its threads). Its io_uring is created by that thread when the loop
 * starts (SINGLE_ISSUER) and torn down when it returns. Everything that
 * changes a running engine (queues, watches, timers, mode) goes through
 * its dispatcher: the owning thread applies the change between two sweeps
 * and completes the request, so these calls are safe from any thread.
 * When no thread runs the engine (before start/run, after stop) they are
 * applied directly by the caller, under a control lock that start/run
 * also take. Called on the engine's own thread (from a callback or a
 * request) they are applied at once. The control path may block and
 * allocate; the data path (sweeps) never does.
 *
 * Calls are plain eventfd write(2)s collected at the end of the sweep: on
 * this project's machines one write costs ~260 ns while an io_uring
 * submit of eventfd-write SQEs costs ~800 ns for one and ~2.7 us for
 * eight, so SQEs only pay off past eight calls per sweep (see engine.c).
 *
 * Several engines may live in one process; a queue, watch or timer
 * belongs to one engine at a time.
 */
#ifndef UVHOST_ENGINE_H
#define UVHOST_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "dispatcher.h"
#include "endpoint.h"
#include "virtq.h"

#ifdef __cplusplus
extern "C" {
#endif

struct uvh_engine;

/** How an engine waits for work. */
enum uvh_engine_mode {
	UVH_ENGINE_POLL = 0,	/**< busy-poll the queues, never sleep */
	UVH_ENGINE_EVENT,	/**< sleep until a kick, message, timer or request */
	UVH_ENGINE_ADAPTIVE,	/**< poll while busy, sleep after an idle spell */
};

/** Creation options; zero-initialised fields take the defaults. */
struct uvh_engine_opts {
	const char *name;		/**< thread name and log prefix (default "uvh-engine") */
	int cpu;			/**< core to pin the thread to; -1 = not pinned */
	int numa_node;			/**< memory node; -1 = the node of @cpu (none if unpinned) */
	enum uvh_engine_mode mode;	/**< initial mode (default UVH_ENGINE_POLL) */
	/*
	 * Adaptive mode: the CPU follows the load (engine_adaptive.c says how
	 * and why). After a short spell of sweeps without work the engine
	 * sleeps. On rings with EVENT_IDX it sleeps until a batch of chains is
	 * there (the driver kicks once per batch): the batch grows while, at
	 * the rate seen, it comes within nap_max_us, and shrinks when it did
	 * not; a backstop timer (4 x nap_max_us) finds chains left behind when
	 * traffic stops mid-batch, and runs only while the batch is above
	 * one. On rings without EVENT_IDX it naps instead (a timed wait with
	 * notifications off, long enough for about nap_batch chains, at least
	 * nap_min_us, at most nap_max_us), and sleeps until kicked after idle_us
	 * (or idle_sweeps) without work or when the traffic is sparse.
	 */
	unsigned int idle_sweeps;	/**< adaptive: sleep after this many idle sweeps in a
					 *   row (default 0: no count limit, idle_us decides) */
	unsigned int idle_us;		/**< adaptive: sleep after this long without work
					 *   (default nap_max_us; with no_nap, 50) */
	unsigned int nap_min_us;	/**< adaptive: shortest nap worth taking (default 10,
					 *   or nap_max_us when smaller: a sleep and its
					 *   wake-up cost ~12 us of CPU and run ~15 us late in
					 *   this project's VMs) */
	unsigned int nap_max_us;	/**< adaptive: the latency bound the moderation may
					 *   add while the rate holds: longest nap, longest a
					 *   batch may take (default 200, at most 1000000) */
	unsigned int nap_batch;		/**< adaptive: chains a nap lets gather, all queues
					 *   together (default 3/4 of the smallest ring that had
					 *   work: fewer wake-ups, a quarter left for a late one;
					 *   a wake-up costs far more than a chain) */
	bool no_nap;			/**< adaptive: never nap or batch kicks (poll, then
					 *   sleep until kicked) */
	unsigned int spin_us;		/**< event mode: poll this long without work before
					 *   sleeping (default 10, about a wake-up's cost:
					 *   frames closer than that never cost a wake-up
					 *   each) */
	unsigned int ring_entries;	/**< io_uring SQ size (default 256) */
	unsigned int max_files;		/**< registered-file slots (default 1024) */
	unsigned int inbox_size;	/**< dispatcher inbox entries (default 256) */
	bool no_setup_flags;		/**< don't try SINGLE_ISSUER/DEFER_TASKRUN/COOP_TASKRUN */
};

/**
 * Create an engine (no thread yet). @opts may be NULL for the defaults;
 * opts->cpu and opts->numa_node should be -1 when unused (a zeroed struct
 * pins to core 0, on purpose: 0 is a valid core). The engine's own
 * structures are allocated on its NUMA node when libnuma can (the machine
 * is treated as one node when it cannot). Returns NULL with errno set
 * (ENOMEM, EINVAL for a core or node that does not exist, a mode out of
 * range, nap_min_us above nap_max_us or nap_max_us above a second).
 */
struct uvh_engine *uvh_engine_create(const struct uvh_engine_opts *opts);

/**
 * Start the engine's own thread (pinned, NUMA-local) and wait until its
 * io_uring is set up. 0, -EALREADY when running, or the setup error.
 */
int uvh_engine_start(struct uvh_engine *e);

/**
 * Run the loop in the caller's thread until uvh_engine_stop(). The thread
 * is pinned as opts->cpu says (its affinity is restored on return) and the
 * io_uring is created here, so this thread is its single issuer. Returns 0
 * after a stop, -EALREADY when already running, or a setup error.
 */
int uvh_engine_run(struct uvh_engine *e);

/**
 * Ask the loop to return and wait for it (joining the engine's own thread
 * when it has one). Prompt in every mode: a sleeping engine is woken.
 * Safe from any thread, including from a callback on the engine itself
 * (then it only asks: the loop returns after the current sweep).
 * Queues, watches and timers stay attached; a later start/run serves them
 * again. 0, or -EALREADY when not running.
 */
int uvh_engine_stop(struct uvh_engine *e);

/**
 * Stop if running, detach everything (no callbacks) and free. NULL is a
 * no-op. Not from the engine's own thread (refused with an error log).
 * Requests still in the inbox are cancelled (see uvh_dispatcher_destroy).
 */
void uvh_engine_destroy(struct uvh_engine *e);

/** The engine's name (opts->name). */
const char *uvh_engine_name(const struct uvh_engine *e);

/** True when the calling thread is the one running @e's loop. */
bool uvh_engine_is_current(const struct uvh_engine *e);

/* ---- queues ------------------------------------------------------------------ */

/** Why a queue is paused (uvh_engine_queue.paused holds a set of these). */
enum uvh_engine_pause {
	/** The ring's host: started but not enabled (vhost-user SET_VRING_ENABLE). */
	UVH_ENGINE_PAUSE_HOST = 1u << 0,
	/** The device: what the ring carries has nowhere to go yet. */
	UVH_ENGINE_PAUSE_DEVICE = 1u << 1,
};

/**
 * One virtqueue served by an engine. The caller owns the struct and fills
 * the public fields before uvh_engine_add_queue(); they must not change
 * while the queue is attached (remove it, change, add it again: that is
 * also how a kick/call fd swap or a memory table change is done, or post
 * a request that edits them on the engine's thread).
 */
struct uvh_engine_queue {
	/** The device side of the ring (set up with uvh_vq_init). */
	struct uvh_vq *vq;
	/** Eventfd the driver kicks, or -1 (then the queue is only swept). Switched
	 *  to O_NONBLOCK when attached. Not closed by the engine. */
	int kick_fd;
	/** Eventfd to call the driver, or -1 (no interrupts). Not closed by the engine. */
	int call_fd;
	/** Eventfd for VRING_ERR, or -1. Written once when the queue breaks. */
	int err_fd;
	/**
	 * The device: do one burst (uvh_vq_pop / work / uvh_vq_push) and return
	 * how much work was done (0 = nothing available). A non-zero return
	 * also marks the queue as having used buffers, so that the engine asks
	 * uvh_vq_need_call() at the end of the sweep. Runs on the engine's
	 * thread; must not block.
	 */
	unsigned int (*process)(struct uvh_engine_queue *q);
	/** Optional: called once when the queue is found broken (uvh_vq_broken),
	 *  after err_fd was written; the queue is skipped from then on. */
	void (*on_error)(struct uvh_engine_queue *q, enum uvh_vq_error err);
	/** The device's own pointer. */
	void *opaque;
	/**
	 * Why the queue is paused (a set of enum uvh_engine_pause bits; 0:
	 * served). A paused queue is not processed (its chains wait,
	 * untouched, and are not counted as work waiting). Set before attach;
	 * while attached, only uvh_engine_queue_pause() on the engine's
	 * thread changes it.
	 */
	uint8_t paused;
	/**
	 * The device does not consume this ring in its own bursts: other
	 * queues' bursts pull chains from it when they have something for it
	 * (a net device's RX ring filled by a TX burst, maybe on another
	 * engine). The engine then never reads its notification state or its
	 * available chains (they are not work: buffers posted and waiting
	 * must not keep it awake) and keeps the driver's kicks off; process()
	 * still runs every sweep. Set before attach, or changed by process()
	 * (the engine's thread: a tap's RX ring is passive while every read
	 * is posted); the engine reads it before each sleep.
	 */
	bool passive;
	/**
	 * An fd of the device's own whose readability is work for this queue,
	 * polled (POLLIN, one-shot, armed before each sleep while the queue is
	 * passive and not paused) in the engine's ring next to the kick: an
	 * AF_XDP socket whose RX ring got frames wakes a sleeping engine as a
	 * kick does. A queue not passive waits on its driver instead (frames
	 * waiting for RX buffers leave the fd readable); an engine that does
	 * not sleep leaves no waiter on it; an fd that reports only errors is
	 * given up (logged). Nothing is read from it. 0 or negative: none (so
	 * a zeroed queue has none; fd 0 is never a device's socket). Set
	 * before attach.
	 */
	int wake_fd;
	/**
	 * The device decides this ring's calls itself, under a lock of its own
	 * (a net switch port's RX ring, filled by other engines): work done by
	 * process() (frames it put elsewhere) never makes the engine read the
	 * ring's notification state. Set before attach.
	 */
	bool self_signal;

	/* -- internal: owned by the engine while attached -- */
	struct uvh_engine *engine;	/**< the engine it is attached to, or NULL */
	struct uvh_engine_op *kick_op;	/**< the multishot poll on kick_fd */
	int kick_slot;			/**< registered-file slot of kick_fd, -1 */
	struct uvh_engine_op *wake_op;	/**< the one-shot poll on wake_fd */
	int wake_slot;			/**< registered-file slot of wake_fd, -1 */
	uint32_t index;			/**< position in the engine's queue array */
	bool need_signal;		/**< used buffers this sweep: ask need_call */
	bool error_reported;		/**< on_error / err_fd done */
	bool kicked;			/**< a kick arrived since the last sweep */
	uint64_t kicks;			/**< kicks seen on this queue */
	uint64_t calls;			/**< calls written for this queue */
};

/**
 * Attach @q to @e. Checks the public fields (vq, process; fds are eventfds
 * or -1) and registers kick_fd. 0, -EINVAL, -EBUSY (already attached),
 * -ENOSPC (registered-file table full), -ENOMEM.
 */
int uvh_engine_add_queue(struct uvh_engine *e, struct uvh_engine_queue *q);

/**
 * Detach @q: when this returns (0), the engine will not touch @q or its
 * ring again and its kick poll is cancelled. -ENOENT when not attached to @e.
 * From the engine's own thread it is detached at once.
 */
int uvh_engine_remove_queue(struct uvh_engine *e, struct uvh_engine_queue *q);

/**
 * The device used buffers of @q outside process() (e.g. completed them
 * asynchronously): ask uvh_vq_need_call() at the end of the sweep. Only
 * on the engine's thread.
 */
static inline void uvh_engine_queue_signal(struct uvh_engine_queue *q)
{
	q->need_signal = true;
}

/**
 * Add (@pause) or clear @reason (enum uvh_engine_pause) in @q's pause set.
 * Only on the engine's thread (a request, or a callback), or before the
 * queue is attached. A paused queue is skipped from the next sweep on and
 * its guest notifications are disabled (a kick would only wake the engine
 * for nothing); one whose last reason goes joins the engine's notification
 * state and is processed by the next sweep whether or not it was kicked,
 * so chains published while it was paused are not stranded.
 */
void uvh_engine_queue_pause(struct uvh_engine_queue *q, unsigned int reason, bool pause);

/* ---- sockets ------------------------------------------------------------------- */

struct uvh_engine_watch;

/**
 * A watched endpoint: the engine keeps one IORING_OP_RECVMSG (with
 * MSG_CMSG_CLOEXEC) in flight on it, feeding uvh_endpoint_rx_complete(),
 * and hands every whole message to on_msg.
 */
struct uvh_engine_watch {
	/** The endpoint (its fd is registered, not closed, by the engine). */
	struct uvh_endpoint *ep;
	/**
	 * A whole message arrived; @msg is on the engine's stack and owns
	 * its fds: the callback takes them (or uvh_msg_close_fds). May call
	 * uvh_engine_unwatch() on itself.
	 */
	void (*on_msg)(struct uvh_engine_watch *w, struct uvh_msg *msg);
	/**
	 * The watch ended: on an error (-ECONNRESET when the peer closed, or an
	 * endpoint receive error), or -ECANCELED after an -EINPROGRESS
	 * unwatch. The watch is already detached: the callback may close the
	 * endpoint and free @w.
	 */
	void (*on_close)(struct uvh_engine_watch *w, int err);
	void *opaque;

	/* -- internal -- */
	struct uvh_engine *engine;
	struct uvh_engine_op *op;	/**< the recvmsg (or poll) in flight */
	int slot;			/**< registered-file slot of ep->fd */
	bool polling;			/**< waiting for POLLIN after -EAGAIN */
	bool closing;			/**< unwatch waits for the read in flight */
	struct msghdr mh;		/**< the read in flight (points into ep) */
	struct uvh_completion *unwatch_done;	/**< signalled when the read ends */
};

/**
 * Watch @w->ep on @e. 0, -EINVAL, -EBUSY (already watched), -ENOSPC, -ENOMEM.
 */
int uvh_engine_watch(struct uvh_engine *e, struct uvh_engine_watch *w);

/**
 * Stop watching: when this returns 0 no read is in flight on the endpoint
 * and no callback will run any more. If the read being cancelled had
 * already received bytes they are accounted to the endpoint (a whole
 * message is still handed to on_msg before the return); a message half
 * received stays in the endpoint's receive state, so plain
 * uvh_endpoint_recv() can carry on. -ENOENT when not watched by @e.
 *
 * From the engine's own thread: inside this watch's on_msg (no read is in
 * flight then) or while the engine is not running, 0 as above. From any
 * other callback on the engine, while this watch's read is in flight, the
 * read is cancelled and -EINPROGRESS returned: @w and the endpoint must
 * stay valid until on_close(w, -ECANCELED) says the read has ended.
 */
int uvh_engine_unwatch(struct uvh_engine *e, struct uvh_engine_watch *w);

/* ---- timers -------------------------------------------------------------------- */

/** A periodic timer (IORING_OP_TIMEOUT, re-armed after each expiry). */
struct uvh_engine_timer {
	/** Runs on the engine's thread every period. May delete the timer. */
	void (*fn)(struct uvh_engine_timer *t);
	void *opaque;

	/* -- internal -- */
	struct uvh_engine *engine;
	struct uvh_engine_op *op;
	uint64_t period_ns;
	uint64_t fired;		/**< expiries so far */
};

/**
 * Fire @fn every @ms milliseconds (from now) on @e's thread until deleted.
 * 0, -EINVAL (ms 0 or fn NULL), -EBUSY (already added), -ENOMEM.
 */
int uvh_engine_add_timer(struct uvh_engine *e, struct uvh_engine_timer *t, unsigned int ms,
			 void (*fn)(struct uvh_engine_timer *t));
/** Stop @t: it does not fire after this returns. 0 or -ENOENT. */
int uvh_engine_del_timer(struct uvh_engine *e, struct uvh_engine_timer *t);

/* ---- modes, requests, counters ------------------------------------------------- */

/** Switch mode (applied between sweeps). 0 or -EINVAL. */
int uvh_engine_set_mode(struct uvh_engine *e, enum uvh_engine_mode mode);
/** The current mode. */
enum uvh_engine_mode uvh_engine_get_mode(const struct uvh_engine *e);

/**
 * Post @req to @e's inbox (asynchronous; see dispatcher.h for the request
 * and its completion). The engine runs it between two sweeps on its
 * thread, with the struct uvh_engine * as engine_ctx; a sleeping engine is
 * woken. When the engine is not running the request waits for the next
 * start/run (or is cancelled by uvh_engine_destroy). 0, -EINVAL, or
 * -ENOBUFS when the inbox is full.
 */
int uvh_engine_post(struct uvh_engine *e, struct uvh_dispatch_req *req);

/**
 * Run @fn(engine_ctx = @e, @arg) on @e's thread and return its result:
 * posts a request and waits for its completion. On the engine's own
 * thread, or while no thread runs the engine, @fn runs directly. Returns
 * fn's value, or -ENOBUFS when the inbox stayed full for a second.
 */
int uvh_engine_call(struct uvh_engine *e, uvh_dispatch_call_fn fn, void *arg);

/** Counters (each read atomically; the set is not one snapshot). */
struct uvh_engine_stats {
	uint64_t sweeps;	/**< loop turns */
	uint64_t idle_sweeps;	/**< turns where no queue had work */
	uint64_t busy_sweeps;	/**< turns with work (sweeps - idle_sweeps) */
	uint64_t wakeups;	/**< returns from a sleep in io_uring */
	uint64_t sleeps;	/**< times the engine went to sleep (until kicked) */
	uint64_t naps;		/**< adaptive: timed naps taken (notifications off) */
	uint64_t nap_ns;	/**< adaptive: time spent in them */
	uint64_t sleep_ns;	/**< time spent in sleeps */
	uint64_t nap_plan_ns;	/**< adaptive: the nap planned at the last decision
				 *   (0: polling, the load is too high to nap) */
	uint64_t sleep_timeouts;	/**< sleeps ended by their timeout (adaptive with
				 *   batched kicks: the batch did not come in time) */
	uint64_t kick_batch;	/**< adaptive with EVENT_IDX: chains the last sleep
				 *   waited for */
	uint64_t kicks;		/**< kick CQEs seen */
	uint64_t calls;		/**< call eventfd writes */
	uint64_t calls_suppressed;	/**< signalled queues whose driver wanted no call */
	uint64_t messages;	/**< whole messages delivered to watches */
	uint64_t timer_fires;	/**< timer expiries */
	uint64_t requests;	/**< dispatcher requests run */
	double busy_ratio;	/**< busy_sweeps / sweeps (0 when no sweep) */
	enum uvh_engine_mode mode;
	unsigned int queues;	/**< queues attached */
	bool running;
	unsigned int setup_flags;	/**< IORING_SETUP_* flags the ring got */
};

/** Fill @st with @e's counters. Safe from any thread. */
void uvh_engine_stats(const struct uvh_engine *e, struct uvh_engine_stats *st);

#ifdef __cplusplus
}
#endif

#endif
