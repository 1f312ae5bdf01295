/* SPDX-License-Identifier: MIT */
/*
 * uvhost benchmarks: two-core helpers.
 *
 * On the project's 2-vCPU machines the host places the two vCPUs close
 * (a cache line bounces in ~30 ns) or far (~160 ns), and a far placement
 * makes any two-core transfer about 3x slower. Every measured run is
 * therefore bracketed by uvhb_c2c_ns() and far runs are flagged.
 *
 * uvhb_pair_run() is the common harness: one producer thread and one
 * consumer thread, each pinned to its own core, released together, with a
 * warm-up before the measured interval. The consumer reports progress in
 * pair->count; the rate is taken between two samples of it.
 */
#ifndef UVHOST_BENCH_C2C_H
#define UVHOST_BENCH_C2C_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/** Above this one-way latency (ns) the two vCPUs are taken as placed far. */
#define UVHB_C2C_FAR_NS 60.0

/** Pin the calling thread to @cpu. 0 or a negative errno. */
int uvhb_pin_self(int cpu);

/** CLOCK_MONOTONIC in ns. */
uint64_t uvhb_now_ns(void);

/** Spin-wait hint (keeps a polling core from hammering a shared line). */
static inline void uvhb_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ volatile("yield" ::: "memory");
#else
	__asm__ volatile("" ::: "memory");
#endif
}

/** A cheap cycle-ish counter (TSC where there is one) for idle accounting. */
static inline uint64_t uvhb_cycles(void)
{
#if defined(__x86_64__) || defined(__i386__)
	return __builtin_ia32_rdtsc();
#else
	return uvhb_now_ns();
#endif
}

/**
 * Share of a poll loop's time spent finding nothing to do. The clock is
 * read only on empty polls (when the loop has nothing better to do), never
 * on a busy one: an idle streak runs from its first empty poll to its last.
 * The side that is rarely idle is the one that limits the rate.
 */
struct uvhb_idle {
	uint64_t t0, start, last, idle;
	bool in;
};

static inline void uvhb_idle_init(struct uvhb_idle *s)
{
	s->t0 = uvhb_cycles();
	s->start = s->last = s->t0;
	s->idle = 0;
	s->in = false;
}

/** After each poll: @busy = it found work. */
static inline void uvhb_idle_mark(struct uvhb_idle *s, bool busy)
{
	if (!busy) {
		s->last = uvhb_cycles();
		if (!s->in) {
			s->start = s->last;
			s->in = true;
		}
	} else if (s->in) {
		s->idle += s->last - s->start;
		s->in = false;
	}
}

/** The idle share (0..1) since uvhb_idle_init(). */
static inline double uvhb_idle_share(struct uvhb_idle *s)
{
	uint64_t now = uvhb_cycles();

	uvhb_idle_mark(s, true);
	return now > s->t0 ? (double)s->idle / (double)(now - s->t0) : 0;
}

/**
 * One-way cache-line latency between @cpu_a and @cpu_b, in ns: a line
 * bounced @rounds times (round trip / 2), median of three samples.
 * Returns a negative errno (as a double) when a thread cannot be pinned.
 */
double uvhb_c2c_ns(int cpu_a, int cpu_b, unsigned long rounds);

struct uvhb_pair;

/** A side's loop: run until uvhb_pair_stopped(). */
typedef void (*uvhb_side_fn)(void *arg, struct uvhb_pair *pair);

/** One two-thread measurement. Fill the first block, then uvhb_pair_run(). */
struct uvhb_pair {
	int cpu[2];			/**< producer's core, consumer's core */
	uvhb_side_fn fn[2];		/**< producer loop, consumer loop */
	void *arg;			/**< handed to both */
	double warmup_s;		/**< not measured */
	double secs;			/**< measured */
	/* results */
	uint64_t packets;		/**< consumer progress in the measured interval */
	double elapsed_s;		/**< length of the measured interval */
	/** CPU time each side got / wall time it ran: below ~0.97 something
	 * else ran on its core (other jobs on a 2-vCPU machine) */
	double cpu_share[2];
	/* shared control: each on its own cache line */
	_Alignas(64) _Atomic int go;
	_Atomic int stop;
	_Atomic int ready;
	_Atomic int pin_err;
	/** The consumer's running total; it stores it (relaxed) after each burst. */
	_Alignas(64) _Atomic uint64_t count;
	_Alignas(64) char pad_end;
};

/** Has the run been told to stop? (one relaxed load: cheap in a poll loop) */
static inline bool uvhb_pair_stopped(struct uvhb_pair *pair)
{
	return atomic_load_explicit(&pair->stop, memory_order_relaxed);
}

/** Publish the consumer's running total (one relaxed store on its own line). */
static inline void uvhb_pair_count(struct uvhb_pair *pair, uint64_t total)
{
	atomic_store_explicit(&pair->count, total, memory_order_relaxed);
}

/**
 * Start both sides pinned, release them together, wait warmup_s, measure
 * the consumer's progress over secs, stop and join both.
 * 0, or a negative errno (thread creation or pinning failed).
 */
int uvhb_pair_run(struct uvhb_pair *pair);

#endif
