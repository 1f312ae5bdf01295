/* SPDX-License-Identifier: MIT */
/*
 * conformance-frontend: drives `uvhost-net --mode loopback` through many randomized, legal
 * vhost-user sessions and checks every frame (see README.md). This file: the command line,
 * the daemon's life (fresh or reused, its exit status and its stderr), the session loop
 * and the failure report.
 */
#include "conform.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { FAILED = 1, BUSY = 2 };
static const char *const mode_names[] = {"poll", "event", "adaptive"};
static const char *const pattern_names[] = {"mixed", "burst", "pingpong"};
static const char *const markers[] = {"AddressSanitizer", "LeakSanitizer", "ThreadSanitizer",
				      "runtime error"};

static int verbose;
static struct {
	const char *daemon;
	int mode; /* 0-2, or 3 = all */
	int pin;  /* -1 random, 0 never, 1 always (--cores 1) */
	int pattern;
	uint64_t seed;
	unsigned sessions, first, min_sessions;
	double time_limit;
	bool only, keep_going;
} opt = {.mode = 3, .pin = -1, .sessions = 1000, .min_sessions = 1};

static struct {
	pid_t pid;
	int mode;
	bool pinned;
	unsigned started_at, served;
	long scanned;
	bool stopping;
	char log[PATH_MAX];
} D;

static char dir[] = "/tmp/conform.XXXXXX", sock_path[PATH_MAX];
static jmp_buf jb;
static bool jb_armed;
static unsigned cur_k, failures;

uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void print_log_tail(void)
{
	char buf[4096];
	int fd = open(D.log, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	off_t end = lseek(fd, 0, SEEK_END), from = end > (off_t)sizeof(buf) - 1 ? end - (off_t)sizeof(buf) + 1 : 0;
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, from);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = 0;
	char *s = buf;
	for (int lines = 0, i = (int)n - 1; i >= 0; i--)
		if (buf[i] == '\n' && ++lines > 25) {
			s = buf + i + 1;
			break;
		}
	printf("  daemon log %s (tail):\n%s%s", D.log, s, s[strlen(s) - 1] == '\n' ? "" : "\n");
}

static void report(const char *msg)
{
	static char desc[8192];
	printf("FAIL seed=%llu session=%u: %s\n", (unsigned long long)opt.seed, cur_k, msg);
	session_describe(desc, sizeof(desc));
	fputs(desc, stdout);
	printf("  daemon: --engine-mode %s%s, started before session %u, %u sessions on it\n",
	       mode_names[D.mode], D.pinned ? " --cores 1" : "", D.started_at, D.served);
	print_log_tail();
	printf("  replay: %s --daemon %s --engine-mode %s --pin %s --pattern %s --seed %llu "
	       "--only-session %u\n", program_invocation_name, opt.daemon, mode_names[D.mode],
	       D.pinned ? "yes" : "no", pattern_names[opt.pattern], (unsigned long long)opt.seed,
	       cur_k);
	if (D.started_at != cur_k)
		printf("  replay with the daemon's history: same with --first-session %u "
		       "--sessions %u instead of --only-session\n", D.started_at,
		       cur_k - D.started_at + 1);
	fflush(stdout);
}

noreturn void fail(const char *fmt, ...)
{
	char msg[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	report(msg);
	if (jb_armed)
		longjmp(jb, FAILED);
	exit(1);
}

noreturn void busy_retry(void)
{
	if (jb_armed)
		longjmp(jb, BUSY);
	fail("back-end closed the connection before any reply");
}

/* New lines of the daemon's stderr since the last look: any sanitizer report fails the
 * session that was running. */
static void scan_log(void)
{
	static char buf[1 << 16];
	int fd = open(D.log, O_RDONLY | O_CLOEXEC);
	ssize_t n;
	if (fd < 0)
		fail("open %s: %m", D.log);
	while ((n = pread(fd, buf, sizeof(buf) - 1, D.scanned)) > 0) {
		buf[n] = 0;
		char *nl = strrchr(buf, '\n');
		if (!nl)
			break;
		nl[1] = 0;
		for (unsigned i = 0; i < sizeof(markers) / sizeof(markers[0]); i++)
			if (strstr(buf, markers[i])) {
				close(fd);
				fail("daemon stderr has \"%s\"%s", markers[i],
				     D.stopping ? " (when stopped by SIGTERM)" : "");
			}
		D.scanned += nl + 1 - buf;
	}
	close(fd);
}

static void check_status(int status)
{
	if (WIFSIGNALED(status))
		fail("daemon killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
	if (WEXITSTATUS(status))
		fail("daemon exited with status %d", WEXITSTATUS(status));
}

static void daemon_start(int mode, bool pinned, unsigned k)
{
	memset(&D, 0, sizeof(D));
	D.mode = mode;
	D.pinned = pinned;
	D.started_at = k;
	snprintf(D.log, sizeof(D.log), "%s/daemon-%u.log", dir, k);
	unlink(sock_path); /* left by a daemon we had to kill -9 */
	const char *argv[] = {opt.daemon, "--socket-path", sock_path, "--mode", "loopback",
			      "--queues", "2", "--engine-mode", mode_names[mode],
			      pinned ? "--cores" : NULL, "1", NULL};
	pid_t pid = fork();
	if (pid < 0)
		fail("fork: %m");
	if (pid == 0) {
		/* The daemon must not outlive us, whatever kills us. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		int fd = open(D.log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
			_exit(127);
		execv(opt.daemon, (char **)argv);
		_exit(127);
	}
	D.pid = pid;
	for (uint64_t deadline = now_ns() + 20000000000ull;;) {
		struct stat st;
		int status;
		if (stat(sock_path, &st) == 0 && S_ISSOCK(st.st_mode))
			return;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			D.pid = 0;
			check_status(status);
			fail("daemon exited at start-up with status 0");
		}
		if (now_ns() > deadline)
			fail("daemon's socket %s did not appear in 20 s", sock_path);
		nanosleep(&(struct timespec){0, 1000000}, NULL);
	}
}

static void daemon_alive(void)
{
	int status;
	bool gone = waitpid(D.pid, &status, WNOHANG) == D.pid;
	if (gone)
		D.pid = 0;
	scan_log();
	if (gone) {
		check_status(status);
		fail("daemon exited with status 0 while serving");
	}
}

/* SIGTERM, then a clean exit 0 within 10 s; kill -9 otherwise. */
static void daemon_stop(bool check)
{
	int status = 0;
	if (!D.pid)
		return;
	D.stopping = true;
	kill(D.pid, SIGTERM);
	for (uint64_t deadline = now_ns() + 10000000000ull;
	     waitpid(D.pid, &status, WNOHANG) != D.pid;) {
		if (now_ns() < deadline) {
			nanosleep(&(struct timespec){0, 1000000}, NULL);
			continue;
		}
		kill(D.pid, SIGKILL);
		waitpid(D.pid, &status, 0);
		D.pid = 0;
		if (check)
			fail("daemon still running 10 s after SIGTERM (killed)");
		return;
	}
	D.pid = 0;
	if (check) {
		scan_log();
		check_status(status);
		unlink(D.log);
	}
}

static noreturn void usage(int code)
{
	printf("Usage: conformance-frontend --daemon PATH [OPTIONS]\n"
	       "Drives uvhost-net --mode loopback through randomized legal vhost-user sessions.\n\n"
	       "  --daemon PATH          the uvhost-net binary\n"
	       "  --engine-mode MODE     poll, event, adaptive or all (default all: each daemon\n"
	       "                         started picks one)\n"
	       "  --sessions N           sessions to run (default 1000)\n"
	       "  --seed S               the run's seed (default: random, printed)\n"
	       "  --only-session K       run session K alone on a fresh daemon (replay)\n"
	       "  --first-session K      start at session K (K on a fresh daemon)\n"
	       "  --pattern P            mixed (default), burst or pingpong\n"
	       "  --pin yes|no|random    pass --cores 1 to each daemon (default random)\n"
	       "  --time-limit SEC       start no session after SEC seconds\n"
	       "  --min-sessions N       fail if fewer ran (default 1)\n"
	       "  --keep-going           after a failure, restart the daemon and go on\n"
	       "  -v                     describe every session\n");
	exit(code);
}

static int pick(const char *arg, const char *const *names, int n)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(arg, names[i]))
			return i;
	fprintf(stderr, "conformance-frontend: unknown value '%s'\n", arg);
	usage(2);
}

static void parse(int argc, char **argv)
{
	static const struct option lo[] = {
		{"daemon", 1, 0, 'd'}, {"engine-mode", 1, 0, 'm'}, {"sessions", 1, 0, 'n'},
		{"seed", 1, 0, 's'}, {"only-session", 1, 0, 'o'}, {"first-session", 1, 0, 'f'},
		{"pattern", 1, 0, 'p'}, {"pin", 1, 0, 'P'}, {"time-limit", 1, 0, 't'},
		{"min-sessions", 1, 0, 'M'}, {"keep-going", 0, 0, 'k'}, {"help", 0, 0, 'h'}, {0}};
	static const char *const modes[] = {"poll", "event", "adaptive", "all"};
	static const char *const pins[] = {"no", "yes", "random"};
	bool seeded = false;
	int c;

	while ((c = getopt_long(argc, argv, "vh", lo, NULL)) != -1) {
		switch (c) {
		case 'd': opt.daemon = optarg; break;
		case 'm': opt.mode = pick(optarg, modes, 4); break;
		case 'n': opt.sessions = (unsigned)strtoul(optarg, NULL, 0); break;
		case 's': opt.seed = strtoull(optarg, NULL, 0); seeded = true; break;
		case 'o': opt.first = (unsigned)strtoul(optarg, NULL, 0); opt.only = true; break;
		case 'f': opt.first = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'p': opt.pattern = pick(optarg, pattern_names, 3); break;
		case 'P': opt.pin = pick(optarg, pins, 3); opt.pin = opt.pin == 2 ? -1 : opt.pin; break;
		case 't': opt.time_limit = strtod(optarg, NULL); break;
		case 'M': opt.min_sessions = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'k': opt.keep_going = true; break;
		case 'v': verbose++; break;
		case 'h': usage(0);
		default: usage(2);
		}
	}
	if (!opt.daemon || optind != argc)
		usage(2);
	if (opt.only)
		opt.sessions = 1;
	if (!seeded)
		opt.seed = rng_seed(now_ns(), (uint64_t)getpid());
}

/* Core 1 for the engine only where we may run on it. */
static bool can_pin(void)
{
	cpu_set_t set;
	return sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_ISSET(1, &set) &&
	       CPU_COUNT(&set) >= 2;
}

int main(int argc, char **argv)
{
	static struct stats st;
	static unsigned k, tries, daemons;
	char desc[8192];

	setvbuf(stdout, NULL, _IOLBF, 0);
	parse(argc, argv);
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(sock_path, sizeof(sock_path), "%s/sock", dir);
	bool pin_ok = can_pin();
	uint64_t t0 = now_ns();
	printf("conformance: seed=%llu sessions=%u from %u engine-mode=%s pattern=%s daemon=%s\n",
	       (unsigned long long)opt.seed, opt.sessions, opt.first,
	       opt.mode == 3 ? "all" : mode_names[opt.mode], pattern_names[opt.pattern], opt.daemon);

	for (k = opt.first; k < opt.first + opt.sessions; k++) {
		if (opt.time_limit > 0 && (double)(now_ns() - t0) / 1e9 > opt.time_limit)
			break;
		/* The daemon's fate is drawn from the session too, so a run replays. */
		uint64_t dr = rng_seed(opt.seed ^ 0x5eed0fda3e3011ull, k);
		static bool fresh, pinned;
		static int mode;
		fresh = rng_pct(&dr, 5) || !D.pid || k == opt.first;
		mode = (int)rng_below(&dr, 3);
		pinned = rng_pct(&dr, 40) && pin_ok;
		mode = opt.mode == 3 ? mode : opt.mode;
		pinned = opt.pin < 0 ? pinned : opt.pin;
		cur_k = k;
		tries = 0;
		static uint64_t ts;
		ts = now_ns();
		switch (setjmp(jb)) {
		case 0:
			jb_armed = true;
			if (fresh) {
				cur_k = k - 1; /* a failure at SIGTERM is the last session's */
				daemon_stop(true);
				cur_k = k;
				daemon_start(mode, pinned, k);
				daemons++;
			}
			break;
		case BUSY:
			/* The daemon still holds the previous connection (or is gone). */
			session_cleanup();
			daemon_alive();
			st.busy_retries++;
			if (++tries > 2000) {
				jb_armed = false;
				report("back-end closed 2000 connections in a row before any reply");
				failures++;
				goto failed;
			}
			nanosleep(&(struct timespec){0, 1000000}, NULL);
			break;
		case FAILED:
			jb_armed = false;
			failures++;
			goto failed;
		}
		session_run(opt.seed, k, sock_path, opt.pattern, &st);
		D.served++;
		daemon_alive();
		jb_armed = false;
		st.sessions++;
		st.by_mode[D.mode]++;
		if (verbose) {
			session_describe(desc, sizeof(desc));
			printf("session %u ok in %.1f ms (daemon %s%s%s)\n%s", k, (now_ns() - ts) / 1e6,
			       mode_names[D.mode], D.pinned ? " --cores 1" : "",
			       fresh ? ", fresh" : "", desc);
		}
		continue;
failed:
		session_cleanup();
		daemon_stop(false);
		if (!opt.keep_going)
			break;
	}
	cur_k = k - 1;
	if (setjmp(jb) == 0) {
		jb_armed = true;
		daemon_stop(true);
	} else {
		failures++;
	}
	jb_armed = false;
	double secs = (double)(now_ns() - t0) / 1e9;
	printf("conformance: %lu sessions in %.1f s (%.0f/min): poll %lu, event %lu, adaptive %lu; "
	       "split %lu, packed %lu; burst %lu, pingpong %lu, aborted %lu; %lu frames checked "
	       "(%lu sent before any RX buffer were dropped); %u daemons; %lu busy retries; "
	       "%u failures\n", st.sessions, secs, secs > 0 ? st.sessions * 60.0 / secs : 0.0,
	       st.by_mode[0], st.by_mode[1], st.by_mode[2], st.split, st.packed, st.burst,
	       st.pingpong, st.aborted, st.frames, st.dropped, daemons, st.busy_retries, failures);
	if (!failures && st.sessions < opt.min_sessions) {
		printf("FAIL seed=%llu: only %lu sessions ran in %.0f s, at least %u required\n",
		       (unsigned long long)opt.seed, st.sessions, opt.time_limit, opt.min_sessions);
		failures++;
	}
	if (failures) {
		printf("conformance: logs kept in %s\n", dir);
	} else {
		unlink(sock_path);
		rmdir(dir);
	}
	return failures ? 1 : 0;
}
