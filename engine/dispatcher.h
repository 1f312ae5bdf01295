/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the dispatcher, an engine's inbox.
 *
 * Whatever must touch a running queue (memory table swap, ring stop for
 * GET_VRING_BASE, enable/disable, kick/call fd swap) is done by the engine
 * that owns the queue, between two bursts. Other threads (the control plane,
 * other engines) post a request on that engine's dispatcher; the engine
 * drains it; the request's completion tells the poster it has been applied,
 * so the protocol layer replies only after the change is live.
 *
 * The inbox is a lock-free multi-producer ring (ring.h). Posting costs no
 * syscall while the engine is awake (polling): the dispatcher's eventfd is
 * written only when the engine has said it is going to sleep. The engine
 * watches that eventfd (an io_uring poll) while it sleeps.
 *
 * The engine's side of the sleep handshake, so no request is left waiting:
 *
 *	for (;;) {
 *		uvh_dispatcher_drain(d, ctx, budget);
 *		...sweep queues...
 *		if (idle && uvh_dispatcher_prepare_sleep(d) == 0) {
 *			...sleep in io_uring (poll armed on uvh_dispatcher_wake_fd(d))...
 *			uvh_dispatcher_woke(d);
 *		}
 *	}
 *
 * Threads: post, uvh_dispatch_call and the completion functions from any
 * thread; drain, prepare_sleep and woke from the owning engine's thread
 * only (one consumer).
 */
#ifndef UVHOST_DISPATCHER_H
#define UVHOST_DISPATCHER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- completion -------------------------------------------------------- */

/**
 * A one-shot event one thread waits on and another signals (a futex word).
 * Initialise with uvh_completion_init() before each use; it may live on the
 * waiter's stack as long as the waiter does not return before it is
 * signalled (or use uvh_dispatch_call(), which handles timeouts safely).
 */
struct uvh_completion {
	_Atomic uint32_t state;	/**< private: pending / pending with a waiter / done */
};

/** Make @c pending. */
void uvh_completion_init(struct uvh_completion *c);

/**
 * Mark @c done and wake its waiter (no syscall when nobody sleeps on it).
 * Everything the signalling thread wrote before is visible to the waiter
 * once uvh_completion_wait() returns 0.
 */
void uvh_completion_signal(struct uvh_completion *c);

/**
 * Wait until @c is signalled, at most @timeout_ms milliseconds (negative:
 * no limit; 0: just check). Returns 0 when signalled, -ETIMEDOUT.
 */
int uvh_completion_wait(struct uvh_completion *c, int timeout_ms);

/** True once @c has been signalled (acquire: the signaller's writes are visible). */
bool uvh_completion_done(const struct uvh_completion *c);

/* ---- requests ---------------------------------------------------------- */

struct uvh_dispatch_req;

/**
 * A request's work, run on the owning engine's thread with that engine's
 * context. It stores its outcome (0 or a negative errno) in @req->result.
 * @engine_ctx is NULL when the dispatcher is being destroyed with @req still
 * queued: then the function must only release what it owns (result is
 * preset to -ECANCELED and the completion is signalled afterwards).
 */
typedef void (*uvh_dispatch_fn)(void *engine_ctx, struct uvh_dispatch_req *req);

/**
 * A request. The poster fills fn, arg and done (and initialises done)
 * before uvh_dispatcher_post(), and owns the memory.
 *
 * With @done set, the dispatcher reads nothing of @req after signalling
 * @done, so the poster may free @req once uvh_completion_wait() returned 0;
 * @req and @done must stay valid until then.
 * With @done NULL (fire and forget), fn owns @req from the moment it runs and
 * may free it; the dispatcher does not touch @req after fn returns.
 */
struct uvh_dispatch_req {
	uvh_dispatch_fn fn;		/**< the work (required) */
	void *arg;			/**< for fn */
	int result;			/**< fn's outcome, read by the poster after done */
	struct uvh_completion *done;	/**< signalled after fn returns; may be NULL */
};

/* ---- dispatcher -------------------------------------------------------- */

/** An engine's inbox (opaque). */
struct uvh_dispatcher;

/** uvh_dispatcher_create() flags. */
enum {
	/** Back the inbox with DPDK's rte_ring (see ring.h; ENOTSUP without DPDK). */
	UVH_DISPATCHER_RTE = 1u << 0,
};

/** Counters (read from any thread; approximate while running). */
struct uvh_dispatcher_stats {
	uint64_t posted;	/**< requests accepted by post */
	uint64_t run;		/**< requests run by drain */
	uint64_t wakeups;	/**< eventfd writes (posts that found the engine asleep, kicks) */
};

/**
 * A dispatcher whose inbox holds at least @capacity requests (rounded up to
 * a power of two; 0 picks 256), with its own eventfd (non-blocking,
 * close-on-exec). @flags: 0 or UVH_DISPATCHER_RTE. Returns NULL with errno
 * set (EINVAL, ENOTSUP, ENOMEM, or the eventfd error).
 */
struct uvh_dispatcher *uvh_dispatcher_create(unsigned int capacity, unsigned int flags);

/**
 * Free @d and close its eventfd (NULL is fine). The owning engine must have
 * stopped draining. Requests still queued are cancelled: result -ECANCELED,
 * fn called with a NULL engine context (so fire-and-forget ones can free
 * themselves), completion signalled.
 */
void uvh_dispatcher_destroy(struct uvh_dispatcher *d);

/**
 * Queue @req for the owning engine and wake it if it sleeps. Any thread
 * except the owner's (the owner would only see it at its next drain).
 * Returns 0, -EINVAL (@req or its fn NULL), or -ENOBUFS when the inbox is
 * full (nothing queued; retry later).
 */
int uvh_dispatcher_post(struct uvh_dispatcher *d, struct uvh_dispatch_req *req);

/**
 * Owner's thread: run up to @budget queued requests (0: until the inbox is
 * empty, at most its capacity) with @engine_ctx, in posting order per
 * poster. Each request's result is preset to 0, then fn runs, then its
 * completion is signalled. Returns how many ran.
 */
unsigned int uvh_dispatcher_drain(struct uvh_dispatcher *d, void *engine_ctx,
				  unsigned int budget);

/** Requests queued (a snapshot). */
unsigned int uvh_dispatcher_pending(const struct uvh_dispatcher *d);

/**
 * The eventfd the owner watches while asleep (readable after a wake-up).
 * Owned by @d: do not close it.
 */
int uvh_dispatcher_wake_fd(const struct uvh_dispatcher *d);

/**
 * Owner's thread, before sleeping: announce the sleep, then look at the
 * inbox once more. Returns 0 when the engine may sleep (from now on every
 * post writes the eventfd), or -EAGAIN when requests are already waiting
 * (the announcement is withdrawn: drain instead of sleeping).
 */
int uvh_dispatcher_prepare_sleep(struct uvh_dispatcher *d);

/**
 * Owner's thread, after a sleep that prepare_sleep allowed (whatever woke
 * it): withdraw the announcement and consume the eventfd's count (one
 * non-blocking read), so the next sleep is not cut short by a stale wake-up.
 * Call it after every such sleep: reading an empty eventfd is harmless.
 */
void uvh_dispatcher_woke(struct uvh_dispatcher *d);

/**
 * Write the eventfd whether or not the owner sleeps: to make it leave a
 * sleep for another reason (a stop, another engine's event). Any thread.
 */
void uvh_dispatcher_kick(struct uvh_dispatcher *d);

/** Copy @d's counters into @st. */
void uvh_dispatcher_get_stats(const struct uvh_dispatcher *d, struct uvh_dispatcher_stats *st);

/** The work of a uvh_dispatch_call(): returns 0 or a negative errno. */
typedef int (*uvh_dispatch_call_fn)(void *engine_ctx, void *arg);

/**
 * Run @fn(engine_ctx, @arg) on @d's engine and wait for it, at most
 * @timeout_ms milliseconds (negative: no limit). Not from the owning
 * engine's thread (it would wait for itself).
 * Returns what @fn returned; -ETIMEDOUT when @fn had not started by the
 * deadline (it is cancelled: it will never run, @arg may be freed; if it
 * had started, the call waits for it to finish and returns its result);
 * -ECANCELED when @d was destroyed first; -ENOMEM. A full inbox is retried
 * until the deadline.
 */
int uvh_dispatch_call(struct uvh_dispatcher *d, uvh_dispatch_call_fn fn, void *arg,
		      int timeout_ms);

#ifdef __cplusplus
}
#endif

#endif
