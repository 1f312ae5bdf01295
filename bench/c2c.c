/* SPDX-License-Identifier: MIT */
/*
 * uvhost benchmarks: pinning, the cache-line ping-pong probe and the
 * two-thread measurement harness (see c2c.h).
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "c2c.h"

int uvhb_pin_self(int cpu)
{
	cpu_set_t set;
	int rc;

	if (cpu < 0 || cpu >= CPU_SETSIZE)
		return -EINVAL;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	rc = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	return rc ? -rc : 0;
}

uint64_t uvhb_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_s(double s)
{
	struct timespec ts;

	if (s <= 0)
		return;
	ts.tv_sec = (time_t)s;
	ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* ---- ping-pong ------------------------------------------------------------ */

struct c2c_probe {
	/* the bounced line: odd values written by A, even ones by B */
	_Alignas(64) _Atomic uint64_t line;
	_Alignas(64) int cpu;
	unsigned long rounds;
	unsigned int samples;
	int err;
};

static void *c2c_pong(void *arg)
{
	struct c2c_probe *pr = arg;
	unsigned long total = (pr->rounds + 1000) * pr->samples;
	uint64_t want = 1;

	/* an unpinned ponger still answers (no hang); the result is refused */
	pr->err = uvhb_pin_self(pr->cpu);
	for (unsigned long i = 0; i < total; i++, want += 2) {
		/* acquire pairs with the pinger's release store of @want */
		while (atomic_load_explicit(&pr->line, memory_order_acquire) != want)
			;
		/* release pairs with the pinger's acquire load of want + 1 */
		atomic_store_explicit(&pr->line, want + 1, memory_order_release);
	}
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

double uvhb_c2c_ns(int cpu_a, int cpu_b, unsigned long rounds)
{
	struct c2c_probe *pr;
	cpu_set_t saved;
	pthread_t t;
	double ns[3];
	uint64_t v = 0;
	int rc;

	pr = aligned_alloc(64, sizeof(*pr));
	if (!pr)
		return -ENOMEM;
	memset(pr, 0, sizeof(*pr));
	pr->cpu = cpu_b;
	pr->rounds = rounds ? rounds : 1;
	pr->samples = 3;
	/* the caller's thread plays A: restore its affinity afterwards */
	pthread_getaffinity_np(pthread_self(), sizeof(saved), &saved);
	rc = uvhb_pin_self(cpu_b);	/* is B a usable core at all? */
	if (!rc)
		rc = uvhb_pin_self(cpu_a);
	if (rc) {
		pthread_setaffinity_np(pthread_self(), sizeof(saved), &saved);
		free(pr);
		return rc;
	}
	rc = pthread_create(&t, NULL, c2c_pong, pr);
	if (rc) {
		pthread_setaffinity_np(pthread_self(), sizeof(saved), &saved);
		free(pr);
		return -rc;
	}
	for (unsigned int s = 0; s < pr->samples; s++) {
		uint64_t t0 = 0;

		/* 1000 untimed rounds first: both threads running, line warm */
		for (unsigned long i = 0; i < pr->rounds + 1000; i++) {
			if (i == 1000)
				t0 = uvhb_now_ns();
			/* release pairs with the ponger's acquire load */
			atomic_store_explicit(&pr->line, v + 1, memory_order_release);
			/* acquire pairs with the ponger's release store of v + 2 */
			while (atomic_load_explicit(&pr->line, memory_order_acquire) != v + 2)
				;
			v += 2;
		}
		ns[s] = (double)(uvhb_now_ns() - t0) / (double)pr->rounds / 2.0;
	}
	pthread_join(t, NULL);
	pthread_setaffinity_np(pthread_self(), sizeof(saved), &saved);
	rc = pr->err;
	free(pr);
	if (rc)
		return rc;
	qsort(ns, 3, sizeof(ns[0]), cmp_double);
	return ns[1];
}

/* ---- two-thread harness ---------------------------------------------------- */

struct side {
	struct uvhb_pair *pair;
	int which;
};

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *side_main(void *arg)
{
	struct side *s = arg;
	struct uvhb_pair *p = s->pair;
	int rc = uvhb_pin_self(p->cpu[s->which]);
	uint64_t c0, w0, c1, w1;

	if (rc)
		atomic_store_explicit(&p->pin_err, rc, memory_order_relaxed);
	/* release pairs with the acquire loads of ready in uvhb_pair_run() */
	atomic_fetch_add_explicit(&p->ready, 1, memory_order_release);
	/* acquire pairs with the release store of go: setup is visible */
	while (!atomic_load_explicit(&p->go, memory_order_acquire))
		uvhb_relax();
	if (atomic_load_explicit(&p->stop, memory_order_relaxed))
		return NULL;
	c0 = thread_cpu_ns();
	w0 = uvhb_now_ns();
	p->fn[s->which](p->arg, p);
	c1 = thread_cpu_ns();
	w1 = uvhb_now_ns();
	p->cpu_share[s->which] = w1 > w0 ? (double)(c1 - c0) / (double)(w1 - w0) : 0;
	return NULL;
}

int uvhb_pair_run(struct uvhb_pair *p)
{
	struct side sides[2] = { { p, 0 }, { p, 1 } };
	pthread_t th[2];
	uint64_t t0, t1, c0, c1;
	int rc, started = 0;

	atomic_store(&p->go, 0);
	atomic_store(&p->stop, 0);
	atomic_store(&p->ready, 0);
	atomic_store(&p->pin_err, 0);
	atomic_store(&p->count, 0);
	p->packets = 0;
	p->elapsed_s = 0;
	p->cpu_share[0] = p->cpu_share[1] = 0;
	/* consumer first, so it is polling when the producer starts */
	for (int i = 1; i >= 0; i--) {
		rc = pthread_create(&th[i], NULL, side_main, &sides[i]);
		if (rc) {
			rc = -rc;
			goto out;
		}
		started |= 1 << i;
	}
	while (atomic_load_explicit(&p->ready, memory_order_acquire) < 2)
		uvhb_relax();
	rc = atomic_load_explicit(&p->pin_err, memory_order_relaxed);
	if (rc)
		goto out;
	/* release pairs with the sides' acquire loads of go */
	atomic_store_explicit(&p->go, 1, memory_order_release);
	sleep_s(p->warmup_s);
	t0 = uvhb_now_ns();
	c0 = atomic_load_explicit(&p->count, memory_order_relaxed);
	sleep_s(p->secs);
	c1 = atomic_load_explicit(&p->count, memory_order_relaxed);
	t1 = uvhb_now_ns();
	p->packets = c1 - c0;
	p->elapsed_s = (double)(t1 - t0) / 1e9;
out:
	atomic_store_explicit(&p->stop, 1, memory_order_relaxed);
	/* a side that never saw go (error path) must still leave its wait */
	atomic_store_explicit(&p->go, 1, memory_order_release);
	for (int i = 0; i < 2; i++)
		if (started & (1 << i))
			pthread_join(th[i], NULL);
	return rc;
}
