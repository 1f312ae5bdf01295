/* SPDX-License-Identifier: MIT */
/*
 * uvhost-bench: how fast uvhost-net moves frames.
 *
 * uvhost's own vhost-user front-end and driver-side virtqueues play the
 * guest (bench_gen.c), pinned to one core; uvhost-net runs as a child
 * process pinned to the other core. For each case (direction, frame size,
 * ring layout, engine mode) a fresh uvhost-net is started in the matching
 * mode (tx: sink, rx: source, loop: loopback), the generator connects,
 * runs a warm-up, then a timed window in which the frames completed on the
 * generator's side are counted. CPU use comes from the kernel: the
 * generator thread's CPU clock and uvhost-net's utime + stime in
 * /proc/PID/stat, over the same window.
 *
 * Two-vCPU machines place their vCPUs close or far from each other (see
 * bench/README.md); a cache-line ping-pong between the two cores before
 * and after each case flags the far ones, and a generator that did not
 * get its whole core flags the case as contended.
 *
 * Output: a live rate line while a case runs (stderr), then a table
 * (stdout); --json prints the results as JSON instead; --svg FILE writes a
 * chart of Mpps by frame size.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "c2c.h"
#include "log.h"

#define MAX_ATTEMPTS	24
/* A side that waited on its core's run queue this share of the window was
 * contended: something else ran there (the kernel's own work stays well
 * under it on an idle machine). */

const char *const ring_names[NRINGS] = { "split", "packed" };
const char *const mode_names[NMODES] = { "poll", "event", "adaptive" };
const char *const svg_colors[12] = {
	"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
	"#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939",
};

/* uvhost-net's mode for each direction */
static const char *const dev_mode[BG_NDIRS] = { "sink", "source", "loopback" };

struct opts o = {
	.secs = 0.5, .warmup = 0.25,
	.sizes = { 64, 256, 1518 }, .nsizes = 3,
	.dirs = 7, .rings = 3, .modes = 1 << MODE_POLL,
	.cpu_gen = 0, .cpu_dev = 1,
	.qsize = 256,
	.c2c = true,
	.repeat = 1, .retries = 2,
	.event_idx = true,
	.points = { 5, 10, 25, 50, 75, 90 }, .npoints = 6,
};

struct result results[MAX_CASES];
unsigned int nresults;
volatile sig_atomic_t interrupted;
char tmpdir[64];
static char net_path[PATH_MAX];
static bool live_tty;

/* ---- small helpers ---------------------------------------------------------- */

double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void sleep_s(double s)
{
	struct timespec ts;

	if (s <= 0)
		return;
	ts.tv_sec = (time_t)s;
	ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) && errno == EINTR && !interrupted)
		;
}

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

/* utime + stime of a whole process, in seconds; < 0 when unreadable. */
double proc_cpu_s(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long ut, st;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	/* the command name may hold anything: fields restart after the last ')' */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
			 &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/*
 * Seconds the thread @tid of @pid (every thread of @pid when @tid is 0)
 * waited on a run queue, ready but not running (schedstat's second field),
 * or -1.
 */
double runq_wait_s(pid_t pid, int tid)
{
	char path[64 + NAME_MAX], buf[128];
	unsigned long long run, wait, sum = 0;
	bool any = false;
	DIR *d = NULL;
	struct dirent *de;
	FILE *f;

	if (!tid) {
		snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
		d = opendir(path);
		if (!d)
			return -1;
	}
	for (;;) {
		if (d) {
			de = readdir(d);
			if (!de)
				break;
			if (de->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "/proc/%d/task/%s/schedstat", (int)pid,
				 de->d_name);
		} else {
			snprintf(path, sizeof(path), "/proc/%d/task/%d/schedstat", (int)pid, tid);
		}
		f = fopen(path, "re");
		if (f && fgets(buf, sizeof(buf), f) && sscanf(buf, "%llu %llu", &run, &wait) == 2) {
			sum += wait;
			any = true;
		}
		if (f)
			fclose(f);
		if (!d)
			break;
	}
	if (d)
		closedir(d);
	return any ? (double)sum * 1e-9 : -1;
}

double clock_s(clockid_t clk)
{
	struct timespec ts;

	if (clock_gettime(clk, &ts))
		return -1;
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int pin_self(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set) ? -errno : 0;
}

/* ---- finding and running uvhost-net ------------------------------------------------ */

static bool executable(const char *p)
{
	struct stat st;

	return !stat(p, &st) && S_ISREG(st.st_mode) && !access(p, X_OK);
}

/* --uvhost-net, else next to us (installed), else the build tree's
 * tools/, else $PATH. */
static int find_uvhost_net(void)
{
	char self[PATH_MAX - 64], *slash;
	const char *path_env;
	ssize_t n;

	if (o.uvhost_net) {
		if (!executable(o.uvhost_net))
			return -ENOENT;
		snprintf(net_path, sizeof(net_path), "%s", o.uvhost_net);
		return 0;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			snprintf(net_path, sizeof(net_path), "%s/uvhost-net", self);
			if (executable(net_path))
				return 0;
			snprintf(net_path, sizeof(net_path), "%s/../tools/uvhost-net", self);
			if (executable(net_path))
				return 0;
		}
	}
	path_env = getenv("PATH");
	while (path_env && *path_env) {
		const char *end = strchr(path_env, ':');
		size_t len = end ? (size_t)(end - path_env) : strlen(path_env);

		if (len && len < sizeof(net_path) - 12) {
			snprintf(net_path, sizeof(net_path), "%.*s/uvhost-net", (int)len, path_env);
			if (executable(net_path))
				return 0;
		}
		path_env += len + (end ? 1 : 0);
	}
	return -ENOENT;
}

int child_spawn(struct child *c, unsigned int id, const char *const *args)
{
	char cores[16];
	const char *argv[24];
	unsigned int n = 0;
	pid_t parent;
	int logfd;

	snprintf(c->log, sizeof(c->log), "%s/net%u.log", tmpdir, id);
	snprintf(cores, sizeof(cores), "%d", o.cpu_dev);
	argv[n++] = net_path;
	while (*args && n < 20)
		argv[n++] = *args++;
	argv[n++] = "--cores";
	argv[n++] = cores;
	argv[n] = NULL;
	logfd = open(c->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (logfd < 0)
		return -errno;
	fflush(stdout);
	fflush(stderr);
	parent = getpid();
	c->pid = fork();
	if (c->pid < 0) {
		close(logfd);
		return -errno;
	}
	if (c->pid == 0) {
		/* no orphan polling a core if we die (crash, SIGKILL) */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(127);
		/* every thread of the back-end on its core, not only the engine */
		pin_self(o.cpu_dev);
		dup2(logfd, STDOUT_FILENO);
		dup2(logfd, STDERR_FILENO);
		execv(net_path, (char *const *)argv);
		fprintf(stderr, PROG ": exec %s: %s\n", net_path, strerror(errno));
		_exit(127);
	}
	close(logfd);
	return 0;
}

static int child_start(struct child *c, const struct result *r, unsigned int id)
{
	char frame[16];
	const char *args[12];
	unsigned int n = 0;

	snprintf(c->sock, sizeof(c->sock), "%s/net%u.sock", tmpdir, id);
	snprintf(frame, sizeof(frame), "%u", r->frame);
	args[n++] = "--socket-path";
	args[n++] = c->sock;
	args[n++] = "--mode";
	args[n++] = dev_mode[r->dir];
	if (r->dir == BG_RX) {
		args[n++] = "--frame-size";
		args[n++] = frame;
	}
	args[n++] = "--engine-mode";
	args[n++] = mode_names[r->mode];
	args[n] = NULL;
	unlink(c->sock);
	return child_spawn(c, id, args);
}

/* Has the child exited? (reaps it) */
bool child_gone(struct child *c)
{
	int st;

	if (c->pid <= 0)
		return true;
	if (waitpid(c->pid, &st, WNOHANG) == c->pid) {
		c->pid = 0;
		return true;
	}
	return false;
}

void child_stop(struct child *c)
{
	int st;

	if (c->pid <= 0)
		return;
	kill(c->pid, SIGTERM);
	for (int i = 0; i < 50; i++) {
		if (waitpid(c->pid, &st, WNOHANG) == c->pid) {
			c->pid = 0;
			return;
		}
		sleep_s(0.02);
	}
	kill(c->pid, SIGKILL);
	waitpid(c->pid, &st, 0);
	c->pid = 0;
}

void child_log_tail(const struct child *c)
{
	char line[512];
	FILE *f = fopen(c->log, "r");
	long lines = 0;

	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		lines++;
	rewind(f);
	fprintf(stderr, PROG ": uvhost-net's output (%s):\n", c->log);
	for (long i = 0; fgets(line, sizeof(line), f); i++)
		if (i >= lines - 15)
			fprintf(stderr, "  | %s", line);
	fclose(f);
}

/* ---- one case ----------------------------------------------------------------------- */

static void case_label(const struct result *r, char *buf, size_t len)
{
	snprintf(buf, len, "%s %uB %s %s", bg_dir_name(r->dir), r->frame, ring_names[r->ring],
		 o.connect ? "ext" : mode_names[r->mode]);
}

static void live(const char *label, double mpps, double t, double total, bool warm)
{
	if (o.json && !live_tty)
		return;
	if (live_tty)
		fprintf(stderr, "\r\033[K  %-28s %8.2f Mpps  %s %4.1f/%.1f s", label, mpps,
			warm ? "warm-up" : "measure", t, total);
	else
		fprintf(stderr, "  %-28s %8.2f Mpps  (%s, %.1f s)\n", label, mpps,
			warm ? "warm-up" : "measure", t);
}

/* Frames @iface has received (its kernel counter), or -1. */
static double wire_frames(const char *iface)
{
	char path[128];
	unsigned long long v;
	FILE *f;
	int ok;

	snprintf(path, sizeof(path), "/sys/class/net/%s/statistics/rx_packets", iface);
	f = fopen(path, "r");
	if (!f)
		return -1;
	ok = fscanf(f, "%llu", &v) == 1;
	fclose(f);
	return ok ? (double)v : -1;
}

static void run_case(struct result *r, unsigned int id)
{
	struct bg_opts bo = {
		.dir = r->dir, .packed = r->ring == RING_PACKED, .event_idx = o.event_idx,
		.frame = r->frame, .qsize = o.qsize, .rate_pps = r->rate_pps,
		.cpu = o.cpu_gen, .connect_timeout_ms = 5000, .max_inflight = r->inflight,
	};
	static uint32_t h0[BG_RTT_BUCKETS], h1[BG_RTT_BUCKETS];
	struct child ch = { 0 };
	struct bg g;
	clockid_t gclk;
	char label[64];
	pid_t dev_pid = 0;
	double t_start, t_next, t0 = 0, t1, g0 = -1, g1, d0 = -1, d1;
	double wg0 = -1, wg1 = -1, wd0 = -1, wd1 = -1, w0 = -1, w1 = -1;
	uint64_t f0 = 0, f1, last_f = 0;
	double last_t;
	bool clk_ok;
	int ret;

	case_label(r, label, sizeof(label));
	r->ok = false;
	r->err[0] = '\0';
	r->frames = r->lost = r->bad = 0;
	r->mpps = r->gbps = r->secs = 0;
	r->far = r->contended = false;
	r->dev_cpu = r->gen_cpu = -1;
	r->gen_wait = r->dev_wait = -1;
	r->c2c_before = r->c2c_after = -1;
	r->rtt_p50 = r->rtt_p99 = r->rtt_p999 = -1;
	r->wire_mpps = -1;
	r->wire_frames = 0;
	if (o.c2c)
		r->c2c_before = uvhb_c2c_ns(o.cpu_gen, o.cpu_dev, 100000);

	if (o.connect) {
		bo.socket_path = o.connect;
		dev_pid = o.backend_pid;
	} else {
		ret = child_start(&ch, r, id);
		if (ret) {
			snprintf(r->err, sizeof(r->err), "cannot start uvhost-net: %s", strerror(-ret));
			return;
		}
		bo.socket_path = ch.sock;
		dev_pid = ch.pid;
	}
	ret = bg_open(&g, &bo);
	if (!ret)
		ret = bg_start(&g);
	if (ret) {
		snprintf(r->err, sizeof(r->err), "set-up failed: %s", strerror(-ret));
		bg_close(&g);
		if (!o.connect) {
			if (child_gone(&ch))
				snprintf(r->err, sizeof(r->err), "uvhost-net exited early");
			child_stop(&ch);
			child_log_tail(&ch);
		}
		return;
	}
	clk_ok = bg_cpu_clock(&g, &gclk) == 0;

	/* warm-up, then the window; a rate sample every 250 ms on a tty,
	 * every second otherwise */
	t_start = last_t = now_s();
	t_next = t_start + (live_tty ? 0.25 : 1.0);
	for (bool measuring = false;;) {
		double now = now_s(), until = measuring ? t0 + o.secs : t_start + o.warmup;
		double wake = t_next < until ? t_next : until;

		if (interrupted)
			break;
		if (now < wake) {
			sleep_s(wake - now);
			continue;
		}
		if (now >= t_next) {
			uint64_t f = bg_frames(&g);

			live(label, (double)(f - last_f) / (now - last_t) / 1e6, now - t_start,
			     o.warmup + o.secs, !measuring);
			last_f = f;
			last_t = now;
			t_next += live_tty ? 0.25 : 1.0;
		}
		if (now >= until) {
			if (measuring)
				break;
			measuring = true;
			t0 = now_s();
			f0 = bg_frames(&g);
			w0 = o.wire ? wire_frames(o.wire) : -1;
			g0 = clk_ok ? clock_s(gclk) : -1;
			d0 = dev_pid > 0 ? proc_cpu_s(dev_pid) : -1;
			wg0 = runq_wait_s(getpid(), atomic_load(&g.tid));
			wd0 = dev_pid > 0 ? runq_wait_s(dev_pid, 0) : -1;
			bg_rtt_snapshot(&g, h0);
		}
		if (!o.connect && child_gone(&ch))
			break;
	}
	t1 = now_s();
	f1 = bg_frames(&g);
	w1 = o.wire ? wire_frames(o.wire) : -1;
	g1 = clk_ok ? clock_s(gclk) : -1;
	d1 = dev_pid > 0 ? proc_cpu_s(dev_pid) : -1;
	wg1 = runq_wait_s(getpid(), atomic_load(&g.tid));
	wd1 = dev_pid > 0 ? runq_wait_s(dev_pid, 0) : -1;
	bg_rtt_snapshot(&g, h1);
	for (unsigned int i = 0; i < BG_RTT_BUCKETS; i++)
		h1[i] -= h0[i];
	r->rtt_p50 = bg_rtt_percentile(h1, 0.5);
	r->rtt_p99 = bg_rtt_percentile(h1, 0.99);
	r->rtt_p999 = bg_rtt_percentile(h1, 0.999);
	if (live_tty && !(o.json && !live_tty))
		fprintf(stderr, "\r\033[K");
	r->lost = atomic_load(&g.lost);
	r->bad = atomic_load(&g.bad);
	if (g.thread_err)
		snprintf(r->err, sizeof(r->err), "cannot pin the generator to core %d: %s",
			 o.cpu_gen, strerror(-g.thread_err));
	bg_stop(&g);
	r->nb_wrong = g.nb_wrong;
	bg_close(&g);
	if (!o.connect) {
		if (child_gone(&ch)) {
			snprintf(r->err, sizeof(r->err), "uvhost-net exited during the run");
			child_log_tail(&ch);
		}
		child_stop(&ch);
		if (!o.keep_logs)
			unlink(ch.log);
		unlink(ch.sock);
	}
	if (o.c2c)
		r->c2c_after = uvhb_c2c_ns(o.cpu_gen, o.cpu_dev, 100000);
	if (interrupted) {
		snprintf(r->err, sizeof(r->err), "interrupted");
		return;
	}
	if (r->err[0] || t0 == 0)
		return;
	r->secs = t1 - t0;
	r->frames = f1 - f0;
	r->mpps = (double)r->frames / r->secs / 1e6;
	r->gbps = r->mpps * r->frame * 8 / 1e3;
	if (w0 >= 0 && w1 >= w0) {
		r->wire_frames = (uint64_t)(w1 - w0);
		r->wire_mpps = (w1 - w0) / r->secs / 1e6;
	}
	if (g0 >= 0 && g1 >= 0)
		r->gen_cpu = (g1 - g0) / r->secs;
	if (d0 >= 0 && d1 >= 0)
		r->dev_cpu = (d1 - d0) / r->secs;
	r->far = (r->c2c_before > UVHB_C2C_FAR_NS) || (r->c2c_after > UVHB_C2C_FAR_NS);
	/* either side kept waiting for its core: something else ran there */
	r->gen_wait = wg0 >= 0 && wg1 >= 0 ? (wg1 - wg0) / r->secs : -1;
	r->dev_wait = wd0 >= 0 && wd1 >= 0 ? (wd1 - wd0) / r->secs : -1;
	r->contended = r->gen_wait > CONTENDED_SHARE || r->dev_wait > CONTENDED_SHARE;
	/* the generator polls without pause: less of its core than this and
	 * it was held up (the host took the vCPU, a neighbour ran), which the
	 * run queue does not show */
	if (r->gen_cpu >= 0 && r->gen_cpu < 1 - 2 * CONTENDED_SHARE)
		r->contended = true;
	if (r->frames == 0)
		snprintf(r->err, sizeof(r->err), "no frames moved");
	else if (r->bad)
		snprintf(r->err, sizeof(r->err), "%" PRIu64 " bad frames", r->bad);
	else if (r->lost)	/* never more frames out than RX buffers posted */
		snprintf(r->err, sizeof(r->err), "%" PRIu64 " frames lost", r->lost);
	r->ok = !r->err[0];
}

struct result *new_case(enum bg_dir dir, enum ring_kind ring, enum eng_mode mode, uint32_t frame)
{
	struct result *r;

	if (nresults == MAX_CASES)
		return NULL;
	r = &results[nresults++];
	memset(r, 0, sizeof(*r));
	r->dir = dir;
	r->ring = ring;
	r->mode = mode;
	r->frame = frame;
	r->load = -1;
	r->rtt_p50 = r->rtt_p99 = r->rtt_p999 = -1;
	return r;
}

/*
 * One case, as many attempts as it takes: until o.repeat clean ones (the
 * cores close, neither side contended) or o.repeat + o.retries in all. The
 * figure is the median of the clean attempts; flagged ones are dropped, and
 * a case with no clean attempt keeps no figure. An attempt that fails
 * (frames bad, lost or not moving, the back-end gone) fails the case.
 */
void run_attempts(struct result *r, unsigned int *ncases)
{
	static struct result tries[MAX_ATTEMPTS];
	unsigned int n = 0, clean = 0, order[MAX_ATTEMPTS];
	unsigned int limit = o.repeat + o.retries;

	if (limit > MAX_ATTEMPTS)
		limit = MAX_ATTEMPTS;
	while (n < limit && clean < o.repeat && !interrupted) {
		tries[n] = *r;
		run_case(&tries[n], (*ncases)++);
		if (!tries[n].ok) {
			*r = tries[n];
			r->attempts = n + 1;
			return;
		}
		if (!tries[n].far && !tries[n].contended)
			order[clean++] = n;
		n++;
	}
	if (!n)
		return;
	if (!clean) {
		*r = tries[n - 1];
		r->no_figure = true;
	} else {
		/* clean attempts by rate; the middle one (the lower for an even count) */
		for (unsigned int i = 1; i < clean; i++)
			for (unsigned int j = i; j > 0 && tries[order[j]].mpps < tries[order[j - 1]].mpps;
			     j--) {
				unsigned int t = order[j];

				order[j] = order[j - 1];
				order[j - 1] = t;
			}
		*r = tries[order[(clean - 1) / 2]];
	}
	r->attempts = n;
	r->clean = clean;
}

/* ---- output --------------------------------------------------------------------------- */

static void fmt_c2c(const struct result *r, char *buf, size_t len)
{
	if (r->c2c_before < 0 && r->c2c_after < 0)
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%.0f/%.0f", r->c2c_before, r->c2c_after);
}

static void print_table(void)
{
	bool any_far = false, any_cont = false, any_none = false;

	printf("\n%-5s %6s %-7s %-9s %9s %9s %8s %8s %9s %20s  %s\n", "dir", "frame", "ring",
	       o.connect ? "back-end" : "engine", "Mpps", "Gbit/s", "gen CPU",
	       o.connect ? "dev CPU" : "net CPU", "c2c ns", "RTT us p50/p99/p99.9", "notes");
	for (unsigned int i = 0; i < nresults; i++) {
		const struct result *r = &results[i];
		char c2c[32], gc[16], dc[16], mpps[16], gbps[16], rtt[48], notes[200] = "";

		fmt_c2c(r, c2c, sizeof(c2c));
		if (!r->ok && r->frames == 0) {
			printf("%-5s %6u %-7s %-9s %9s %9s %8s %8s %9s %20s  FAILED: %s\n",
			       bg_dir_name(r->dir), r->frame, ring_names[r->ring],
			       o.connect ? "external" : mode_names[r->mode], "-", "-", "-", "-", c2c,
			       "-", r->err);
			continue;
		}
		snprintf(gc, sizeof(gc), r->gen_cpu >= 0 ? "%.0f%%" : "-", r->gen_cpu * 100);
		snprintf(dc, sizeof(dc), r->dev_cpu >= 0 ? "%.0f%%" : "-", r->dev_cpu * 100);
		/* a flagged attempt's rate is no figure: it measured the placement */
		snprintf(mpps, sizeof(mpps), r->no_figure ? "-" : "%.2f", r->mpps);
		snprintf(gbps, sizeof(gbps), r->no_figure ? "-" : "%.2f", r->gbps);
		if (r->rtt_p50 >= 0 && !r->no_figure)
			snprintf(rtt, sizeof(rtt), "%.1f/%.1f/%.1f", r->rtt_p50, r->rtt_p99,
				 r->rtt_p999);
		else
			snprintf(rtt, sizeof(rtt), "-");
		if (r->wire_mpps >= 0 && !r->no_figure)
			snprintf(notes + strlen(notes), sizeof(notes) - strlen(notes),
				 "wire %.2f Mpps ", r->wire_mpps);
		if (r->far) {
			strcat(notes, "FAR ");
			any_far = true;
		}
		if (r->contended) {
			strcat(notes, "CONTENDED ");
			any_cont = true;
		}
		if (r->no_figure) {
			snprintf(notes + strlen(notes), sizeof(notes) - strlen(notes),
				 "on all %u attempts: no figure ", r->attempts);
			any_none = true;
		}
		if (r->err[0])
			snprintf(notes + strlen(notes), sizeof(notes) - strlen(notes), "%s ", r->err);
		if (r->nb_wrong)
			snprintf(notes + strlen(notes), sizeof(notes) - strlen(notes),
				 "num_buffers not 1 in %" PRIu64 " frames (spec: MUST) ", r->nb_wrong);
		if (r->clean > 1)
			snprintf(notes + strlen(notes), sizeof(notes) - strlen(notes),
				 "median of %u", r->clean);
		if (r->attempts > r->clean && !r->no_figure)
			snprintf(notes + strlen(notes), sizeof(notes) - strlen(notes),
				 "%s%u flagged attempt%s dropped", r->clean > 1 ? ", " : "",
				 r->attempts - r->clean, r->attempts - r->clean > 1 ? "s" : "");
		printf("%-5s %6u %-7s %-9s %9s %9s %8s %8s %9s %20s  %s\n", bg_dir_name(r->dir),
		       r->frame, ring_names[r->ring], o.connect ? "external" : mode_names[r->mode],
		       mpps, gbps, gc, dc, c2c, rtt, notes);
	}
	printf("\nMpps: frames completed per second on the generator's side (tx: consumed by "
	       "the device,\nrx/loop: received); Gbit/s counts frame bytes; CPU: share of one "
	       "core over the window.\n");
	printf("RTT: loop frames' round trip (sent to received back, on the generator's clock)%s.\n",
	       o.latency ? ", one frame in flight (ping-pong)" : ", under the case's load");
	if (o.rate_pps > 0)
		printf("Paced: the generator offered %.3f Mpps.\n", o.rate_pps / 1e6);
	if (any_far)
		printf("FAR: the two cores were placed far apart (cache-line latency > %.0f ns): "
		       "such an attempt is ~3x slower and is dropped.\n", UVHB_C2C_FAR_NS);
	if (any_cont)
		printf("CONTENDED: the generator or the back-end waited for its core more than "
		       "%.0f%% of the window,\nor the polling generator got less than %.0f%% of its "
		       "core (something else ran there); such an\nattempt is dropped.\n",
		       CONTENDED_SHARE * 100, (1 - 2 * CONTENDED_SHARE) * 100);
	if (any_none)
		printf("no figure: every attempt was flagged; run again (--retries N) on a quieter "
		       "machine.\n");
}

void json_num(const char *key, double v, bool last)
{
	if (v < 0 || !isfinite(v))
		printf("\"%s\": null%s", key, last ? "" : ", ");
	else
		printf("\"%s\": %.4f%s", key, v, last ? "" : ", ");
}

void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

static void print_json(void)
{
	printf("{\n  \"tool\": \"uvhost-bench\",\n  \"cpus\": [%d, %d],\n  \"seconds\": %.3f,\n"
	       "  \"warmup\": %.3f,\n  \"queue_size\": %u,\n  \"event_idx\": %s,\n",
	       o.cpu_gen, o.cpu_dev, o.secs, o.warmup, o.qsize, o.event_idx ? "true" : "false");
	printf("  \"backend\": ");
	json_str(o.connect ? o.connect : net_path);
	printf(",\n  \"rate_pps\": ");
	if (o.rate_pps > 0)
		printf("%.0f", o.rate_pps);
	else
		printf("null");
	printf(",\n  \"results\": [\n");
	for (unsigned int i = 0; i < nresults; i++) {
		const struct result *r = &results[i];

		printf("    {\"dir\": \"%s\", \"frame\": %u, \"ring\": \"%s\", \"engine\": \"%s\", "
		       "\"ok\": %s, ", bg_dir_name(r->dir), r->frame, ring_names[r->ring],
		       o.connect ? "external" : mode_names[r->mode], r->ok ? "true" : "false");
		json_num("mpps", r->frames && !r->no_figure ? r->mpps : -1, false);
		json_num("gbps", r->frames && !r->no_figure ? r->gbps : -1, false);
		json_num("gen_runq_wait", r->gen_wait, false);
		json_num("dev_runq_wait", r->dev_wait, false);
		json_num("gen_cpu", r->gen_cpu, false);
		json_num("dev_cpu", r->dev_cpu, false);
		json_num("c2c_before_ns", r->c2c_before, false);
		json_num("c2c_after_ns", r->c2c_after, false);
		json_num("rtt_p50_us", r->no_figure ? -1 : r->rtt_p50, false);
		json_num("rtt_p99_us", r->no_figure ? -1 : r->rtt_p99, false);
		json_num("rtt_p999_us", r->no_figure ? -1 : r->rtt_p999, false);
		json_num("wire_mpps", r->no_figure ? -1 : r->wire_mpps, false);
		/* raw, like frames: a script may keep flagged attempts (compare-uplink) */
		printf("\"wire_frames\": %" PRIu64 ", ", r->wire_frames);
		printf("\"inflight\": %u, \"num_buffers_wrong\": %" PRIu64 ", ", r->inflight,
		       r->nb_wrong);
		printf("\"frames\": %" PRIu64 ", \"seconds\": %.4f, \"lost\": %" PRIu64
		       ", \"bad\": %" PRIu64 ", \"far\": %s, \"contended\": %s, \"attempts\": %u, "
		       "\"clean_attempts\": %u, \"error\": ", r->frames, r->secs, r->lost, r->bad,
		       r->far ? "true" : "false", r->contended ? "true" : "false", r->attempts,
		       r->clean);
		json_str(r->err);
		printf("}%s\n", i + 1 < nresults ? "," : "");
	}
	printf("  ]\n}\n");
}

/* A "nice" axis step for a range of @span over about @n ticks. */
double nice_step(double span, int n)
{
	double raw = span / n, mag = pow(10, floor(log10(raw))), f = raw / mag;

	return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

static int write_svg(const char *path)
{
	const char *const *colors = svg_colors;
	const double W = 760, H = 440, L = 70, R = 210, T = 50, B = 60;
	const double pw = W - L - R, ph = H - T - B;
	uint32_t sizes[MAX_SIZES];
	unsigned int nsizes = 0, nseries = 0;
	unsigned int series_key[64];
	double ymax = 0, step;
	bool multi_mode = __builtin_popcount(o.modes) > 1 && !o.connect;
	FILE *f;

	/* frame sizes on the x axis, in increasing order */
	for (unsigned int i = 0; i < nresults; i++) {
		unsigned int k;

		for (k = 0; k < nsizes && sizes[k] != results[i].frame; k++)
			;
		if (k == nsizes && nsizes < MAX_SIZES)
			sizes[nsizes++] = results[i].frame;
		if (results[i].frames && results[i].mpps > ymax)
			ymax = results[i].mpps;
	}
	for (unsigned int i = 1; i < nsizes; i++)
		for (unsigned int k = i; k > 0 && sizes[k - 1] > sizes[k]; k--) {
			uint32_t t = sizes[k];

			sizes[k] = sizes[k - 1];
			sizes[k - 1] = t;
		}
	/* one series per direction / ring (/ engine mode when several) */
	for (unsigned int i = 0; i < nresults; i++) {
		unsigned int key = results[i].dir * 100 + results[i].ring * 10 +
				   (multi_mode ? results[i].mode : 0), k;

		for (k = 0; k < nseries && series_key[k] != key; k++)
			;
		if (k == nseries && nseries < 64)
			series_key[nseries++] = key;
	}
	if (ymax <= 0)
		ymax = 1;
	ymax *= 1.05;	/* headroom above the highest point */
	step = nice_step(ymax, 5);
	ymax = ceil(ymax / step) * step;

	f = fopen(path, "w");
	if (!f)
		return -errno;
	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
		"viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n",
		W, H, W, H);
	fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
	fprintf(f, "<text x=\"%.0f\" y=\"24\" font-size=\"16\" font-weight=\"bold\">"
		"uvhost-net: Mpps by frame size</text>\n", L);
	fprintf(f, "<text x=\"%.0f\" y=\"40\" fill=\"#555\">uvhost-bench, generator on core %d, "
		"%s on core %d, queue size %u%s</text>\n", L, o.cpu_gen,
		o.connect ? "back-end" : "uvhost-net", o.cpu_dev, o.qsize,
		o.rate_pps > 0 ? ", paced" : "");
	/* y grid and labels */
	for (double y = 0; y <= ymax + step / 2; y += step) {
		double py = T + ph - y / ymax * ph;

		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n",
			L, py, L + pw, py);
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", L - 6,
			py + 4, y);
	}
	fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n",
		L, T + ph, L + pw, T + ph);
	fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n",
		L, T, L, T + ph);
	fprintf(f, "<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\">"
		"Mpps</text>\n", T + ph / 2);
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">frame size (bytes)"
		"</text>\n", L + pw / 2, H - 16);
	/* x: sizes evenly spaced (they are categories, not a scale) */
	for (unsigned int i = 0; i < nsizes; i++) {
		double px = L + pw * (i + 0.5) / nsizes;

		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%u</text>\n", px,
			T + ph + 18, sizes[i]);
	}
	for (unsigned int s = 0; s < nseries; s++) {
		const char *color = colors[s % 12];
		unsigned int key = series_key[s];
		enum bg_dir dir = (enum bg_dir)(key / 100);
		enum ring_kind ring = (enum ring_kind)(key / 10 % 10);
		char name[64];
		bool first = true;
		double ly = T + 10 + s * 20;

		snprintf(name, sizeof(name), "%s %s%s%s", bg_dir_name(dir), ring_names[ring],
			 multi_mode ? " " : "", multi_mode ? mode_names[key % 10] : "");
		fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"",
			color, ring == RING_PACKED ? " stroke-dasharray=\"6 3\"" : "");
		for (unsigned int i = 0; i < nsizes; i++)
			for (unsigned int k = 0; k < nresults; k++) {
				const struct result *r = &results[k];
				unsigned int rk = r->dir * 100 + r->ring * 10 +
						  (multi_mode ? r->mode : 0);

				if (rk != key || r->frame != sizes[i] || !r->frames)
					continue;
				fprintf(f, "%s%.1f,%.1f", first ? "" : " ",
					L + pw * (i + 0.5) / nsizes, T + ph - r->mpps / ymax * ph);
				first = false;
				break;
			}
		fprintf(f, "\"/>\n");
		for (unsigned int k = 0; k < nresults; k++) {
			const struct result *r = &results[k];
			unsigned int rk = r->dir * 100 + r->ring * 10 + (multi_mode ? r->mode : 0);
			unsigned int i;

			if (rk != key || !r->frames)
				continue;
			for (i = 0; i < nsizes && sizes[i] != r->frame; i++)
				;
			fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\">"
				"<title>%s %uB: %.2f Mpps, %.2f Gbit/s%s</title></circle>\n",
				L + pw * (i + 0.5) / nsizes, T + ph - r->mpps / ymax * ph, color,
				name, r->frame, r->mpps, r->gbps, r->far ? " (far placement)" : "");
		}
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
			"stroke-width=\"2\"%s/>\n", L + pw + 16, ly, L + pw + 40, ly, color,
			ring == RING_PACKED ? " stroke-dasharray=\"6 3\"" : "");
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", L + pw + 46, ly + 4, name);
	}
	fprintf(f, "</svg>\n");
	if (fclose(f))
		return -errno;
	return 0;
}

/* ---- options ------------------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f,
"Usage: " PROG " [OPTIONS]\n"
"Measure uvhost-net: uvhost's own front-end and virtqueues generate traffic on one\n"
"core, uvhost-net (started for each case) serves it on the other.\n"
"\n"
"What happens to the frame bytes, by direction:\n"
"  tx    the generator writes each frame (virtio-net header, Ethernet header, its\n"
"        sequence number); uvhost-net's sink copies every byte of it into a host\n"
"        buffer, as a NIC's DMA would, and gives the chain back\n"
"  rx    uvhost-net's source writes every byte of each frame into the guest's\n"
"        buffers; the generator checks its length\n"
"  loop  uvhost-net copies each frame from the guest's TX buffers into its RX\n"
"        buffers; the generator compares every byte with what it sent\n"
"\n"
"  --dirs LIST         tx (guest->device, sink), rx (source->guest), loop\n"
"                      (loopback, frames checked); default tx,rx,loop\n"
"  --sizes LIST        frame sizes in bytes (60-9000; default 64,256,1518)\n"
"  --rings LIST        split, packed (default split,packed)\n"
"  --modes LIST        uvhost-net's engine mode: poll, event, adaptive (default poll)\n"
"  --seconds S         measured window per case (default 0.5)\n"
"  --warmup S          warm-up before it (default 0.25)\n"
"  --quick             64-byte tx, rx and loop, split, poll, 0.3 s\n"
"  --full              every direction, size, ring and mode (poll, adaptive), 1 s\n"
"  --rate PPS          pace the generator (e.g. 4M, 2.5e6); default: flat out\n"
"  --qsize N           ring size (default 256)\n"
"  --no-event-idx      do not negotiate RING_EVENT_IDX (negotiated by default, as\n"
"                      every Linux guest does)\n"
"  --latency           loop cases are ping-pongs: one frame in flight, its round\n"
"                      trip's p50/p99/p99.9 in the table and the JSON (rtt_*_us)\n"
"  --load-sweep        for each ring and engine mode (default all three), offer the\n"
"                      --load-points shares of the in-run poll peak (loop, 64 B):\n"
"                      back-end CPU and round-trip p99 against load; --svg charts it\n"
"  --load-points LIST  percents of the peak (default 5,10,25,50,75,90)\n"
"  --tso               a TCP stream from one port of uvhost-net --mode switch to\n"
"                      another, Gbit/s of payload: 1,502-byte frames (offloads\n"
"                      off), 64 KiB TSO frames to a GUEST_TSO4 receiver (passed\n"
"                      whole), to a plain one (segmented, checksums computed) and\n"
"                      to a GUEST_CSUM one (segmented, checksums left partial)\n"
"  --cpus A,B          generator core, back-end core (default 0,1)\n"
"  --repeat N          clean attempts per case, the figure their median (default 1)\n"
"  --retries N         extra attempts when one is flagged FAR (the cores placed far\n"
"                      apart) or CONTENDED (either side waited for its core): those\n"
"                      are dropped; a case with no clean attempt has no figure\n"
"                      (default 2)\n"
"  --no-c2c            skip the cache-line latency check around each case\n"
"  --c2c-only          print the two cores' cache-line latency (ns) and exit\n"
"  --uvhost-net PATH   the uvhost-net binary (default: next to this one, the build\n"
"                      tree's tools/, or $PATH)\n"
"  --connect PATH      use the back-end already listening on PATH instead\n"
"  --backend-pid PID   ... and account its CPU use\n"
"  --wire-count IFACE  also count the frames IFACE receives over each window (the far\n"
"                      end of an uplink: the wire rate, bench/compare-uplink)\n"
"  --json              print the results as JSON (stdout) instead of the table\n"
"  --svg FILE          write an SVG chart of Mpps by frame size (with --load-sweep:\n"
"                      CPU share and p99 round trip against offered load)\n"
"  --keep-logs         keep uvhost-net's output (printed on failure anyway)\n"
"  -v, --verbose       uvhost library log on stderr\n"
"  -h, --help          this text\n"
"\n"
"Exit status: 0 all cases ran, 1 a case failed, 2 usage error.\n");
}

static void die_usage(const char *what, const char *arg)
{
	fprintf(stderr, PROG ": %s '%s'\nTry '" PROG " --help'.\n", what, arg);
	exit(2);
}

static double parse_double(const char *s, const char *what, double min, double max)
{
	char *end;
	double v, mul = 1;

	errno = 0;
	v = strtod(s, &end);
	if (end != s && (*end == 'k' || *end == 'K'))
		mul = 1e3, end++;
	else if (end != s && *end == 'M')
		mul = 1e6, end++;
	else if (end != s && *end == 'G')
		mul = 1e9, end++;
	v *= mul;
	if (errno || end == s || *end || !isfinite(v) || v < min || v > max)
		die_usage(what, s);
	return v;
}

/* A comma list of names from @names into a bit set. */
static unsigned int parse_set(const char *s, const char *const *names, unsigned int n,
			      const char *what)
{
	char buf[256], *save = NULL, *tok;
	unsigned int set = 0, i;

	if (strlen(s) >= sizeof(buf))
		die_usage(what, s);
	strcpy(buf, s);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		for (i = 0; i < n && strcmp(tok, names[i]); i++)
			;
		if (i == n)
			die_usage(what, tok);
		set |= 1u << i;
	}
	if (!set)
		die_usage(what, s);
	return set;
}

static void parse_sizes(const char *s)
{
	char buf[256], *save = NULL, *tok;

	if (strlen(s) >= sizeof(buf))
		die_usage("invalid --sizes", s);
	strcpy(buf, s);
	o.nsizes = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (o.nsizes == MAX_SIZES)
			die_usage("too many --sizes", s);
		o.sizes[o.nsizes++] = (uint32_t)parse_double(tok, "invalid frame size", 60, 9000);
	}
	if (!o.nsizes)
		die_usage("invalid --sizes", s);
}

static void parse_args(int argc, char **argv)
{
	enum {
		OPT_DIRS = 256, OPT_SIZES, OPT_RINGS, OPT_MODES, OPT_SECONDS, OPT_WARMUP,
		OPT_QUICK, OPT_FULL, OPT_RATE, OPT_QSIZE, OPT_EVENT_IDX, OPT_CPUS, OPT_RETRIES, OPT_REPEAT,
		OPT_NO_C2C, OPT_NET, OPT_CONNECT, OPT_WIRE, OPT_BACKEND_PID, OPT_JSON, OPT_SVG,
		OPT_KEEP_LOGS, OPT_C2C_ONLY, OPT_NO_EVENT_IDX, OPT_LATENCY, OPT_SWEEP, OPT_POINTS,
		OPT_TSO,
	};
	static const struct option lo[] = {
		{ "dirs", required_argument, NULL, OPT_DIRS },
		{ "sizes", required_argument, NULL, OPT_SIZES },
		{ "rings", required_argument, NULL, OPT_RINGS },
		{ "modes", required_argument, NULL, OPT_MODES },
		{ "seconds", required_argument, NULL, OPT_SECONDS },
		{ "warmup", required_argument, NULL, OPT_WARMUP },
		{ "quick", no_argument, NULL, OPT_QUICK },
		{ "full", no_argument, NULL, OPT_FULL },
		{ "rate", required_argument, NULL, OPT_RATE },
		{ "qsize", required_argument, NULL, OPT_QSIZE },
		{ "event-idx", no_argument, NULL, OPT_EVENT_IDX },
		{ "no-event-idx", no_argument, NULL, OPT_NO_EVENT_IDX },
		{ "latency", no_argument, NULL, OPT_LATENCY },
		{ "load-sweep", no_argument, NULL, OPT_SWEEP },
		{ "load-points", required_argument, NULL, OPT_POINTS },
		{ "tso", no_argument, NULL, OPT_TSO },
		{ "cpus", required_argument, NULL, OPT_CPUS },
		{ "retries", required_argument, NULL, OPT_RETRIES },
		{ "repeat", required_argument, NULL, OPT_REPEAT },
		{ "no-c2c", no_argument, NULL, OPT_NO_C2C },
		{ "c2c-only", no_argument, NULL, OPT_C2C_ONLY },
		{ "uvhost-net", required_argument, NULL, OPT_NET },
		{ "connect", required_argument, NULL, OPT_CONNECT },
		{ "wire-count", required_argument, NULL, OPT_WIRE },
		{ "backend-pid", required_argument, NULL, OPT_BACKEND_PID },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "svg", required_argument, NULL, OPT_SVG },
		{ "keep-logs", no_argument, NULL, OPT_KEEP_LOGS },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static const char *const dir_names[BG_NDIRS] = { "tx", "rx", "loop" };
	bool dirs_given = false, sizes_given = false, rings_given = false, modes_given = false;
	int c, a, b;
	char tail;

	while ((c = getopt_long(argc, argv, "vh", lo, NULL)) != -1) {
		switch (c) {
		case OPT_DIRS:
			dirs_given = true;
			o.dirs = parse_set(optarg, dir_names, BG_NDIRS, "unknown direction");
			break;
		case OPT_SIZES:
			sizes_given = true;
			parse_sizes(optarg);
			break;
		case OPT_RINGS:
			rings_given = true;
			o.rings = parse_set(optarg, ring_names, NRINGS, "unknown ring layout");
			break;
		case OPT_MODES:
			modes_given = true;
			o.modes = parse_set(optarg, mode_names, NMODES, "unknown engine mode");
			break;
		case OPT_SECONDS:
			o.secs = parse_double(optarg, "invalid --seconds", 0.05, 3600);
			break;
		case OPT_WARMUP:
			o.warmup = parse_double(optarg, "invalid --warmup", 0, 3600);
			break;
		case OPT_QUICK:
			o.dirs = 1 << BG_TX | 1 << BG_RX | 1 << BG_LOOP;
			o.sizes[0] = 64;
			o.nsizes = 1;
			o.rings = 1 << RING_SPLIT;
			o.modes = 1 << MODE_POLL;
			o.secs = 0.3;
			o.warmup = 0.2;
			break;
		case OPT_FULL:
			o.dirs = 7;
			o.sizes[0] = 64, o.sizes[1] = 256, o.sizes[2] = 1518;
			o.nsizes = 3;
			o.rings = 3;
			o.modes = 1 << MODE_POLL | 1 << MODE_ADAPTIVE;
			o.secs = 1;
			o.warmup = 0.5;
			break;
		case OPT_RATE:
			o.rate_pps = parse_double(optarg, "invalid --rate", 1, 1e10);
			break;
		case OPT_QSIZE:
			o.qsize = (uint16_t)parse_double(optarg, "invalid --qsize", 2, 32768);
			break;
		case OPT_EVENT_IDX:
			o.event_idx = true;
			break;
		case OPT_NO_EVENT_IDX:
			o.event_idx = false;
			break;
		case OPT_LATENCY:
			o.latency = true;
			break;
		case OPT_SWEEP:
			o.sweep = true;
			break;
		case OPT_TSO:
			o.tso = true;
			break;
		case OPT_POINTS: {
			char *save = NULL, *copy = strdup(optarg), *tok;

			o.npoints = 0;
			for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
				if (o.npoints == MAX_POINTS)
					die_usage("too many --load-points", optarg);
				o.points[o.npoints++] = parse_double(tok, "invalid --load-points",
								     0.1, 100);
			}
			free(copy);
			break;
		}
		case OPT_CPUS:
			if (sscanf(optarg, "%d,%d%c", &a, &b, &tail) != 2 || a < 0 || b < 0 ||
			    a == b || a >= CPU_SETSIZE || b >= CPU_SETSIZE)
				die_usage("invalid --cpus (want two different cores A,B)", optarg);
			o.cpu_gen = a;
			o.cpu_dev = b;
			break;
		case OPT_REPEAT:
			o.repeat = (unsigned int)parse_double(optarg, "invalid --repeat", 1, 9);
			break;
		case OPT_RETRIES:
			o.retries = (unsigned int)parse_double(optarg, "invalid --retries", 0, 20);
			break;
		case OPT_NO_C2C:
			o.c2c = false;
			break;
		case OPT_C2C_ONLY:
			o.c2c_only = true;
			break;
		case OPT_NET:
			o.uvhost_net = optarg;
			break;
		case OPT_WIRE:
			o.wire = optarg;
			break;
		case OPT_CONNECT:
			o.connect = optarg;
			break;
		case OPT_BACKEND_PID:
			o.backend_pid = (pid_t)parse_double(optarg, "invalid --backend-pid", 1,
							    INT_MAX);
			break;
		case OPT_JSON:
			o.json = true;
			break;
		case OPT_SVG:
			o.svg = optarg;
			break;
		case OPT_KEEP_LOGS:
			o.keep_logs = true;
			break;
		case 'v':
			o.verbose = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(2);
		}
	}
	if (optind < argc)
		die_usage("unexpected argument", argv[optind]);
	/* a ping-pong and a sweep are loop measurements, by default at 64 B;
	 * a sweep compares the engine modes */
	if ((o.latency || o.sweep) && !dirs_given)
		o.dirs = 1 << BG_LOOP;
	if ((o.latency || o.sweep) && !sizes_given) {
		o.sizes[0] = 64;
		o.nsizes = 1;
	}
	if (o.sweep && !modes_given)
		o.modes = 1 << MODE_POLL | 1 << MODE_EVENT | 1 << MODE_ADAPTIVE;
	if (o.sweep && !rings_given)
		o.rings = 1 << RING_SPLIT;
	if (o.sweep && !(o.dirs & 1 << BG_LOOP))
		die_usage("--load-sweep measures the loop direction", NULL);
	if (o.connect)
		o.modes = 1 << MODE_POLL;	/* not ours to choose: one pass */
	if (o.tso && !rings_given)
		o.rings = 1 << RING_SPLIT;
	if (o.tso && (o.connect || o.sweep || o.latency))
		die_usage("--tso runs uvhost-net itself, alone", NULL);
}

static void log_sink(enum uvh_log_level level, const char *line, void *opaque)
{
	(void)opaque;
	if (level <= UVH_LOG_WARN || o.verbose)
		fprintf(stderr, PROG ": %s\n", line);
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_signal };
	unsigned int ncases = 0, failed = 0;
	double t_begin;
	int ret;

	parse_args(argc, argv);
	uvh_log_set_sink(log_sink, NULL);
	if (o.verbose)
		uvh_log_set_level(UVH_LOG_DEBUG);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	live_tty = isatty(STDERR_FILENO);
	if (o.c2c_only) {
		double ns = uvhb_c2c_ns(o.cpu_gen, o.cpu_dev, 200000);

		if (ns < 0) {
			fprintf(stderr, PROG ": cores %d and %d: %s\n", o.cpu_gen, o.cpu_dev,
				strerror((int)-ns));
			return 1;
		}
		printf("%.1f\n", ns);
		return 0;
	}

	if (!o.connect && find_uvhost_net()) {
		fprintf(stderr, PROG ": uvhost-net not found%s%s (give --uvhost-net PATH)\n",
			o.uvhost_net ? ": " : "", o.uvhost_net ? o.uvhost_net : "");
		return 2;
	}
	/* the controlling thread sleeps on the generator's core: the other
	 * core is the back-end's alone */
	if (pin_self(o.cpu_gen)) {
		fprintf(stderr, PROG ": cannot use core %d: %s\n", o.cpu_gen, strerror(errno));
		return 2;
	}
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/uvhost-bench.XXXXXX");
	if (!mkdtemp(tmpdir)) {
		fprintf(stderr, PROG ": mkdtemp: %s\n", strerror(errno));
		return 1;
	}
	if (!o.json) {
		printf(PROG ": generator on core %d, %s on core %d, %.2f s per case after %.2f s "
		       "warm-up\n", o.cpu_gen, o.connect ? o.connect : net_path, o.cpu_dev, o.secs,
		       o.warmup);
		fflush(stdout);
	}

	t_begin = now_s();
	if (o.tso) {
		failed = tso_run();
		o.json ? tso_print_json() : tso_print_table();
		if (!o.keep_logs)
			rmdir(tmpdir);
		return failed || interrupted ? 1 : 0;
	}
	if (o.sweep)
		failed += sweep_run(&ncases);
	for (unsigned int d = 0; d < BG_NDIRS && !interrupted && !o.sweep; d++) {
		if (!(o.dirs & 1u << d))
			continue;
		for (unsigned int ri = 0; ri < NRINGS && !interrupted; ri++) {
			if (!(o.rings & 1u << ri))
				continue;
			for (unsigned int m = 0; m < NMODES && !interrupted; m++) {
				if (!(o.modes & 1u << m))
					continue;
				for (unsigned int s = 0; s < o.nsizes && !interrupted; s++) {
					struct result *r = new_case((enum bg_dir)d, (enum ring_kind)ri,
								    (enum eng_mode)m, o.sizes[s]);

					if (!r)
						break;
					r->rate_pps = o.rate_pps;
					r->inflight = o.latency && d == BG_LOOP ? 1 : 0;
					run_attempts(r, &ncases);
					if (!r->ok)
						failed++;
				}
			}
		}
	}
	if (!o.json && !interrupted)
		printf(PROG ": %u case%s in %.1f s\n", nresults, nresults == 1 ? "" : "s",
		       now_s() - t_begin);
	if (o.json)
		o.sweep ? sweep_print_json() : print_json();
	else
		o.sweep ? sweep_print_table() : print_table();
	if (o.svg) {
		ret = o.sweep ? sweep_write_svg(o.svg) : write_svg(o.svg);
		if (ret)
			fprintf(stderr, PROG ": %s: %s\n", o.svg, strerror(-ret));
		else if (!o.json)
			printf("Chart: %s\n", o.svg);
	}
	if (!o.keep_logs)
		rmdir(tmpdir);
	else if (!o.json)
		printf("uvhost-net logs: %s\n", tmpdir);
	return failed || interrupted ? 1 : 0;
}
