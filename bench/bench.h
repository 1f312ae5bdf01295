/* SPDX-License-Identifier: MIT */
/*
 * uvhost-bench's parts (uvhost-bench.c: cases, table, JSON, size chart;
 * sweep.c: --load-sweep). Not installed.
 */
#ifndef UVHOST_BENCH_H
#define UVHOST_BENCH_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "bench_gen.h"

#define PROG		"uvhost-bench"
#define MAX_SIZES	8
#define MAX_CASES	512
#define MAX_POINTS	16
/* a side that waited this share of the window for its core was contended */
#define CONTENDED_SHARE	0.05

enum ring_kind { RING_SPLIT = 0, RING_PACKED, NRINGS };
extern const char *const ring_names[NRINGS];

enum eng_mode { MODE_POLL = 0, MODE_EVENT, MODE_ADAPTIVE, NMODES };
extern const char *const mode_names[NMODES];


struct opts {
	double secs, warmup;
	uint32_t sizes[MAX_SIZES];
	unsigned int nsizes;
	unsigned int dirs, rings, modes;	/* bit sets */
	int cpu_gen, cpu_dev;
	uint16_t qsize;
	double rate_pps;
	bool event_idx;
	bool json;
	const char *svg;
	const char *uvhost_net;
	const char *connect;		/* external back-end: no child */
	const char *wire;		/* --wire-count: an interface whose received
					 * frames count too (an uplink's far end) */
	pid_t backend_pid;		/* its pid, for CPU use (or 0) */
	unsigned int repeat;		/* clean attempts whose median is the figure */
	unsigned int retries;		/* extra attempts for far or contended ones */
	bool c2c;
	bool verbose;
	bool keep_logs;
	bool c2c_only;			/* print the cache-line latency and exit */
	bool latency;			/* loop cases are ping-pongs (one frame in flight) */
	bool sweep;			/* --load-sweep */
	double points[MAX_POINTS];	/* its loads, % of the poll peak */
	unsigned int npoints;
	bool tso;			/* --tso */
};

struct result {
	enum bg_dir dir;
	enum ring_kind ring;
	enum eng_mode mode;
	uint32_t frame;
	bool ok;
	char err[160];
	double secs;			/* measured window */
	uint64_t frames;
	double mpps, gbps;
	double gen_cpu, dev_cpu;	/* cores (1.0 = one whole core); dev < 0: unknown */
	uint64_t lost, bad;
	uint64_t nb_wrong;		/* LOOP: frames whose num_buffers was not 1 */
	double c2c_before, c2c_after;	/* ns; < 0: not measured */
	double gen_wait, dev_wait;	/* share of the window waiting for a core; < 0: unknown */
	bool far, contended;
	unsigned int attempts, clean;	/* made; neither FAR nor CONTENDED */
	bool no_figure;			/* every attempt was flagged: no figure kept */
	double rate_pps;		/* offered (0: flat out) */
	unsigned int inflight;		/* LOOP: most frames on their way (0: no limit) */
	double load;			/* sweep: % of the poll peak offered (< 0: none) */
	double rtt_p50, rtt_p99, rtt_p999;	/* LOOP: round trip, us (< 0: none) */
	double wire_mpps;		/* --wire-count: frames the interface received
					 * per second over the window (< 0: none) */
	uint64_t wire_frames;		/* ... and how many */
};

extern struct opts o;
extern struct result results[MAX_CASES];
extern unsigned int nresults;
extern volatile sig_atomic_t interrupted;

/* A uvhost-net child process. */
struct child {
	pid_t pid;
	char sock[128];
	char log[128];
};

/* uvhost-bench.c */
extern char tmpdir[64];		/* sockets and logs */
double now_s(void);
void sleep_s(double s);
double clock_s(clockid_t clk);
/* a process's CPU time; the run-queue wait of one thread (@tid) or all (0); -1 unknown */
double proc_cpu_s(pid_t pid);
double runq_wait_s(pid_t pid, int tid);
/* uvhost-net with @args (NULL-ended; --cores is added), pinned to the back-end's
 * core, its output in tmpdir/net@id.log */
int child_spawn(struct child *c, unsigned int id, const char *const *args);
bool child_gone(struct child *c);
void child_stop(struct child *c);
void child_log_tail(const struct child *c);
void run_attempts(struct result *r, unsigned int *ncases);
/* A fresh case in results[] (NULL when full), its rate and load unset. */
struct result *new_case(enum bg_dir dir, enum ring_kind ring, enum eng_mode mode, uint32_t frame);
void json_num(const char *key, double v, bool last);
void json_str(const char *s);
double nice_step(double span, int n);
extern const char *const svg_colors[12];

/* tso.c: --tso; the number of cases that failed */
unsigned int tso_run(void);
void tso_print_table(void);
void tso_print_json(void);

/* sweep.c */
/* Run the sweep's cases (appended to results[]); the number that failed. */
unsigned int sweep_run(unsigned int *ncases);
void sweep_print_table(void);
void sweep_print_json(void);
int sweep_write_svg(const char *path);

#endif
