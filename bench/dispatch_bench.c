/* SPDX-License-Identifier: MIT */
/*
 * uvhost-dispatch-bench: our lock-free ring against DPDK's rte_ring, in one
 * run. A producer thread on core 0 pushes N pointers, a consumer thread on
 * core 1 takes them (bursts of 32) and checks each one; the two
 * implementations alternate (A B A B ...) for several repetitions and the
 * table gives the median Mops/s of each and their ratio.
 *
 * The cost here is the cache lines moving between the two cores, so the
 * run starts and ends with a cache-line ping-pong between them: a "far"
 * placement of the vCPUs (see bench/README.md) makes every figure ~3x
 * slower; compare only runs whose ping-pong agrees.
 *
 * Usage: uvhost-dispatch-bench [-n items] [-r reps] [-s ring size] [-p producers]
 *                              [-i uvh|rte]
 *
 * With -p 2 or more the producers share core 0: rte_ring's MP enqueue then
 * spins for a whole time slice whenever the producer ahead of it is
 * preempted between its claim and its tail update (DPDK asks for
 * non-preemptible producers); ours does not wait for other producers.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"
#include "ring.h"

#define MAX_REPS	64
#define MAX_PROD	4
#define CONS_BURST	32

static int pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

/* ---- cache-line ping-pong between core 0 and core 1 ----------------------- */

static alignas(64) _Atomic uint64_t pp_line;
#define PP_ROUNDS	200000

static void *pp_pong(void *arg)
{
	(void)arg;
	pin(1);
	for (uint64_t i = 1; i <= PP_ROUNDS; i++) {
		while (atomic_load_explicit(&pp_line, memory_order_acquire) != 2 * i - 1)
			;
		atomic_store_explicit(&pp_line, 2 * i, memory_order_release);
	}
	return NULL;
}

/* One-way cache-line transfer time between the cores, ns. */
static double pingpong_ns(void)
{
	pthread_t th;
	uint64_t t0, t1;

	atomic_store(&pp_line, 0);
	if (pthread_create(&th, NULL, pp_pong, NULL))
		return -1;
	pin(0);
	t0 = uvh_now_ns();
	for (uint64_t i = 1; i <= PP_ROUNDS; i++) {
		atomic_store_explicit(&pp_line, 2 * i - 1, memory_order_release);
		while (atomic_load_explicit(&pp_line, memory_order_acquire) != 2 * i)
			;
	}
	t1 = uvh_now_ns();
	pthread_join(th, NULL);
	return (double)(t1 - t0) / (2.0 * PP_ROUNDS);
}

/* ---- one measured transfer ------------------------------------------------ */

struct run {
	struct uvh_ring *r;
	unsigned int burst;		/* producer's burst (1: uvh_ring_enqueue) */
	unsigned int nprod;
	uint64_t items;			/* per producer */
	_Atomic unsigned int ready;
	_Atomic int go;
	int bad;
};

struct prod_arg {
	struct run *run;
	unsigned int id;
};

/* item: producer id in the top byte, sequence from 1 below it */
#define ITEM(id, seq)	((void *)(uintptr_t)(((uint64_t)(id) << 56) | (seq)))

static void *producer(void *arg)
{
	struct prod_arg *pa = arg;
	struct run *run = pa->run;
	void *buf[256];
	uint64_t seq = 1;

	pin(0);
	atomic_fetch_add(&run->ready, 1);
	while (!atomic_load_explicit(&run->go, memory_order_acquire))
		;
	if (run->burst == 1) {
		for (; seq <= run->items; seq++)
			while (uvh_ring_enqueue(run->r, ITEM(pa->id, seq)) < 0)
				if (run->nprod > 1)
					sched_yield();	/* producers share core 0 */
		return NULL;
	}
	while (seq <= run->items) {
		unsigned int n = run->burst, got;

		if (n > run->items - seq + 1)
			n = (unsigned int)(run->items - seq + 1);
		for (unsigned int i = 0; i < n; i++)
			buf[i] = ITEM(pa->id, seq + i);
		got = uvh_ring_enqueue_burst(run->r, buf, n);
		seq += got;
		if (!got && run->nprod > 1)
			sched_yield();
	}
	return NULL;
}

static void *consumer(void *arg)
{
	struct run *run = arg;
	uint64_t next[MAX_PROD], left = run->items * run->nprod;
	void *buf[CONS_BURST];

	for (unsigned int p = 0; p < MAX_PROD; p++)
		next[p] = 1;
	pin(1);
	atomic_fetch_add(&run->ready, 1);
	while (!atomic_load_explicit(&run->go, memory_order_acquire))
		;
	while (left) {
		unsigned int n = uvh_ring_dequeue_burst(run->r, buf, CONS_BURST);

		for (unsigned int i = 0; i < n; i++) {
			uint64_t v = (uint64_t)(uintptr_t)buf[i];
			unsigned int p = (unsigned int)(v >> 56);

			if (p >= run->nprod || (v & ((1ull << 56) - 1)) != next[p]) {
				run->bad = 1;
				return NULL;
			}
			next[p]++;
		}
		left -= n;
	}
	return NULL;
}

/* Mops/s of one transfer, or a negative errno. */
static double measure(unsigned int flags, unsigned int size, unsigned int burst,
		      unsigned int nprod, uint64_t items)
{
	struct run run = { .burst = burst, .nprod = nprod, .items = items };
	struct prod_arg pa[MAX_PROD];
	pthread_t pt[MAX_PROD], ct;
	uint64_t t0, t1;

	run.r = uvh_ring_create(size, flags);
	if (!run.r)
		return -errno;
	if (pthread_create(&ct, NULL, consumer, &run))
		return -EAGAIN;
	for (unsigned int p = 0; p < nprod; p++) {
		pa[p] = (struct prod_arg){ .run = &run, .id = p };
		if (pthread_create(&pt[p], NULL, producer, &pa[p]))
			return -EAGAIN;
	}
	while (atomic_load(&run.ready) != nprod + 1)
		sched_yield();
	t0 = uvh_now_ns();
	atomic_store_explicit(&run.go, 1, memory_order_release);
	pthread_join(ct, NULL);
	t1 = uvh_now_ns();
	for (unsigned int p = 0; p < nprod; p++)
		pthread_join(pt[p], NULL);
	uvh_ring_destroy(run.r);
	if (run.bad) {
		fprintf(stderr, "consumer saw a wrong item: ring broken\n");
		exit(1);
	}
	return (double)(items * nprod) / ((double)(t1 - t0) / 1e3);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, unsigned int n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
	static const unsigned int bursts[] = { 1, 8, 32 };
	unsigned int reps = 7, size = 1024, nprod = 1;
	uint64_t items = 5000000;
	unsigned int impls = uvh_ring_rte_available() ? 2 : 1;
	unsigned int flags[2] = { 0, UVH_RING_RTE };
	const char *names[2] = { "uvh", "rte" };
	double pp_before, pp_after;
	int opt;

	while ((opt = getopt(argc, argv, "n:r:s:p:i:h")) != -1) {
		switch (opt) {
		case 'i':
			/* one implementation only */
			if (!strcmp(optarg, "rte")) {
				flags[0] = UVH_RING_RTE;
				names[0] = "rte";
			}
			impls = 1;
			break;
		case 'n':
			items = strtoull(optarg, NULL, 0);
			break;
		case 'r':
			reps = (unsigned int)strtoul(optarg, NULL, 0);
			break;
		case 's':
			size = (unsigned int)strtoul(optarg, NULL, 0);
			break;
		case 'p':
			nprod = (unsigned int)strtoul(optarg, NULL, 0);
			break;
		default:
			fprintf(stderr, "usage: %s [-n items] [-r reps] [-s ring size] [-p producers 1..%d] [-i uvh|rte]\n",
				argv[0], MAX_PROD);
			return opt == 'h' ? 0 : 2;
		}
	}
	if (!items || !reps || reps > MAX_REPS || !nprod || nprod > MAX_PROD ||
	    !size || size > UVH_RING_MAX_COUNT) {
		fprintf(stderr, "bad arguments\n");
		return 2;
	}
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
		fprintf(stderr, "needs two cores\n");
		return 1;
	}

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (nprod > 1 && impls == 2) {
		/* see the top of this file: rte_ring would mostly measure time slices */
		printf("(%u producers share core 0: rte_ring left out, -i rte to force it)\n", nprod);
		impls = 1;
	}
	pp_before = pingpong_ns();
	printf("uvhost-dispatch-bench: %u producer(s) on core 0, consumer on core 1 (bursts of %d),\n"
	       "ring of %u, %llu items per producer, %u alternating reps; Mops/s\n",
	       nprod, CONS_BURST, size, (unsigned long long)items, reps);
	if (!uvh_ring_rte_available())
		printf("(rte_ring: not in this build; configure with -Ddpdk=enabled)\n");
	printf("cache-line one-way core0<->core1 before: %.1f ns\n\n", pp_before);
	printf("%-6s %-5s %9s %9s %9s\n", "burst", "impl", "median", "min", "max");

	for (size_t b = 0; b < sizeof(bursts) / sizeof(bursts[0]); b++) {
		double res[2][MAX_REPS], med[2];

		/* warm-up, not counted */
		for (unsigned int i = 0; i < impls; i++)
			measure(flags[i], size, bursts[b], nprod, items / 10 + 1);
		for (unsigned int rep = 0; rep < reps; rep++) {
			for (unsigned int i = 0; i < impls; i++) {
				/* A B then B A: neither side always runs first */
				unsigned int k = rep % 2 ? impls - 1 - i : i;
				double v = measure(flags[k], size, bursts[b], nprod, items);

				if (v < 0) {
					fprintf(stderr, "%s: %s\n", names[k], strerror((int)-v));
					return 1;
				}
				res[k][rep] = v;
			}
		}
		for (unsigned int i = 0; i < impls; i++) {
			med[i] = median(res[i], reps);
			printf("%-6u %-5s %9.2f %9.2f %9.2f\n", bursts[b], names[i], med[i],
			       res[i][0], res[i][reps - 1]);
		}
		if (impls == 2)
			printf("%-6u %-5s %9.2f\n", bursts[b], "ratio", med[0] / med[1]);
	}
	pp_after = pingpong_ns();
	printf("\ncache-line one-way core0<->core1 after: %.1f ns%s\n", pp_after,
	       (pp_before > 60 || pp_after > 60 ||
		pp_after > 1.5 * pp_before || pp_before > 1.5 * pp_after) ?
	       "  (far or changed placement: discard this run)" : "");
	return 0;
}
