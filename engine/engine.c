/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the engine: its life cycle and control API (see engine.h;
 * engine_internal.h says which file holds what).
 */
#include <errno.h>
#include <fcntl.h>
#include <numa.h>
#include <numaif.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <liburing.h>

#include "util.h"
#include "engine_internal.h"
#include "log.h"

static bool numa_ok(void)
{
	static int avail = -2;

	if (avail == -2)
		avail = numa_available();
	return avail >= 0;
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
	    o.spin_us > MAX_NAP_US ||
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
	e->spin_ns = (uint64_t)(o.spin_us ? o.spin_us : DEF_SPIN_US) * 1000u;
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
	e->wake_slot = engine_slot_alloc(e, uvh_dispatcher_wake_fd(e->disp));
	e->wake_op = engine_op_new(e, OP_WAKE, e);
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
	ret = engine_place_thread(e);
	if (ret) {
		pthread_mutex_lock(&e->ctl);
		engine_end_run(e, ret);
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
		e->queues[i]->wake_op = NULL;
		e->queues[i]->wake_slot = -1;
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
		engine_op_free(op);
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
		slot = engine_slot_alloc(e, q->kick_fd);
		if (slot < 0)
			return slot;
		q->kick_op = engine_op_new(e, OP_KICK, q);
		if (!q->kick_op) {
			engine_slot_free(e, slot);
			return -ENOMEM;
		}
	} else {
		q->kick_op = NULL;
	}
	q->kick_slot = slot;
	q->wake_op = NULL;
	q->wake_slot = -1;
	if (q->wake_fd > 0) {
		q->wake_slot = engine_slot_alloc(e, q->wake_fd);
		q->wake_op = q->wake_slot >= 0 ? engine_op_new(e, OP_READY, q) : NULL;
		if (!q->wake_op) {
			int err = q->wake_slot < 0 ? q->wake_slot : -ENOMEM;

			engine_slot_free(e, q->wake_slot);
			q->wake_slot = -1;
			engine_op_release(e, q->kick_op);
			q->kick_op = NULL;
			engine_slot_free(e, q->kick_slot);
			q->kick_slot = -1;
			return err;
		}
	}
	q->engine = e;
	q->index = e->nqueues;
	q->need_signal = false;
	q->error_reported = false;
	q->kicked = false;
	e->queues[e->nqueues++] = q;
	atomic_store_explicit(&e->nqueues_pub, e->nqueues, memory_order_relaxed);
	if (e->ring_ok && !e->stopping && q->kick_op)
		engine_op_arm(e, q->kick_op);
	/* wake_op: armed by the first sleep (engine_sleep) */
	engine_notify_join(e, q);
	return 0;
}

int uvh_engine_add_queue(struct uvh_engine *e, struct uvh_engine_queue *q)
{
	int fl;

	if (!e || !q || !q->vq || !q->process)
		return -EINVAL;
	if ((q->kick_fd < -1 || (q->kick_fd >= 0 && !is_eventfd(q->kick_fd))) ||
	    (q->call_fd < -1 || (q->call_fd >= 0 && !is_eventfd(q->call_fd))) ||
	    (q->err_fd < -1 || (q->err_fd >= 0 && !is_eventfd(q->err_fd))) ||
	    (q->wake_fd > 0 && fcntl(q->wake_fd, F_GETFD) < 0))
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
	engine_op_release(e, q->kick_op);
	q->kick_op = NULL;
	engine_slot_free(e, q->kick_slot);
	q->kick_slot = -1;
	engine_op_release(e, q->wake_op);
	q->wake_op = NULL;
	engine_slot_free(e, q->wake_slot);
	q->wake_slot = -1;
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
	slot = engine_slot_alloc(e, w->ep->fd);
	if (slot < 0)
		return slot;
	w->op = engine_op_new(e, OP_RECV, w);
	if (!w->op) {
		engine_slot_free(e, slot);
		return -ENOMEM;
	}
	w->slot = slot;
	w->engine = e;
	w->polling = false;
	w->closing = false;
	w->unwatch_done = NULL;
	if (e->ring_ok && !e->stopping)
		engine_op_arm(e, w->op);
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
		engine_op_cancel(e, w->op);
		io_uring_submit(&e->ring);
		return 1;
	}
	engine_watch_detach(e, w);
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

int engine_timer_add(struct uvh_engine *e, struct uvh_engine_timer *t)
{
	if (t->engine)
		return -EBUSY;
	t->op = engine_op_new(e, OP_TIMER, t);
	if (!t->op)
		return -ENOMEM;
	t->engine = e;
	if (e->ring_ok && !e->stopping)
		engine_op_arm(e, t->op);
	return 0;
}

static int do_add_timer(void *ctx, void *arg)
{
	return engine_timer_add(ctx, arg);
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

int engine_timer_del(struct uvh_engine *e, struct uvh_engine_timer *t)
{
	if (t->engine != e)
		return -ENOENT;
	engine_op_release(e, t->op);
	t->op = NULL;
	t->engine = NULL;
	if (e->ring_ok)
		io_uring_submit(&e->ring);
	return 0;
}

static int do_del_timer(void *ctx, void *arg)
{
	return engine_timer_del(ctx, arg);
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
	engine_apply_mode(e);
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
	st->sleep_timeouts = LD(sleep_timeouts);
	st->kick_batch = LD(kick_batch);
#undef LD
	st->busy_sweeps = st->sweeps > st->idle_sweeps ? st->sweeps - st->idle_sweeps : 0;
	st->busy_ratio = st->sweeps ? (double)st->busy_sweeps / (double)st->sweeps : 0.0;
	st->mode = uvh_engine_get_mode(e);
	st->queues = atomic_load_explicit(&e->nqueues_pub, memory_order_relaxed);
	st->running = atomic_load(&e->in_loop);
	st->setup_flags = e->setup_flags;
}

