/* SPDX-License-Identifier: MIT */
/*
 * uvhost-demo: a vhost-user back-end (a "net test device") and front-end
 * built on the uvhost library, for showing a negotiation over a real
 * socket and for talking to other implementations (DPDK testpmd, QEMU).
 *
 *   uvhost-demo                  fork a back-end on a temporary socket and
 *                                connect to it (the short demo)
 *   uvhost-demo --serve PATH     back-end: listen on PATH and serve
 *                                connections one after the other
 *   uvhost-demo --connect PATH   front-end: negotiate, share guest memory,
 *                                set up the vrings, then tear down
 *
 * This file: output, names, signals, the short demo and main. The back-end
 * is demo_backend.c, the front-end demo_frontend.c.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>
#include <inttypes.h>

#include "demo.h"
#include "log.h"

/* ---- output --------------------------------------------------------------- */

const char *role = "uvhost-demo";

void say(const char *fmt, ...)
{
	va_list ap;

	printf("%s: ", role);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

static void log_sink(enum uvh_log_level level, const char *line, void *opaque)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };

	(void)opaque;
	fflush(stdout);
	fprintf(stderr, "%s: uvhost %s: %s\n", role,
		(unsigned int)level < 4 ? names[level] : "?", line);
}

const char *feature_name(unsigned int bit)
{
	static const char *const names[64] = {
		[0] = "CSUM", [1] = "GUEST_CSUM", [2] = "CTRL_GUEST_OFFLOADS",
		[3] = "MTU", [5] = "MAC", [6] = "GSO", [7] = "GUEST_TSO4",
		[8] = "GUEST_TSO6", [9] = "GUEST_ECN", [10] = "GUEST_UFO",
		[11] = "HOST_TSO4", [12] = "HOST_TSO6", [13] = "HOST_ECN",
		[14] = "HOST_UFO", [15] = "MRG_RXBUF", [16] = "STATUS",
		[17] = "CTRL_VQ", [18] = "CTRL_RX", [19] = "CTRL_VLAN",
		[20] = "CTRL_RX_EXTRA", [21] = "GUEST_ANNOUNCE", [22] = "MQ",
		[23] = "CTRL_MAC_ADDR", [24] = "NOTIFY_ON_EMPTY",
		[26] = "LOG_ALL", [27] = "ANY_LAYOUT", [28] = "INDIRECT_DESC",
		[29] = "EVENT_IDX", [30] = "PROTOCOL_FEATURES",
		[32] = "VERSION_1", [33] = "ACCESS_PLATFORM",
		[34] = "RING_PACKED", [35] = "IN_ORDER", [36] = "ORDER_PLATFORM",
		[37] = "SR_IOV", [38] = "NOTIFICATION_DATA",
		[40] = "RING_RESET", [57] = "HASH_REPORT", [60] = "RSS",
		[61] = "RSC_EXT", [62] = "STANDBY", [63] = "SPEED_DUPLEX",
	};

	return bit < 64 ? names[bit] : NULL;
}

const char *bits_str(char *buf, size_t len, uint64_t bits,
		     const char *(*name)(unsigned int))
{
	size_t n = (size_t)snprintf(buf, len, "0x%" PRIx64 ":", bits);

	for (unsigned int b = 0; b < 64 && n < len; b++) {
		const char *s;

		if (!(bits & BIT(b)))
			continue;
		s = name(b);
		if (s)
			n += (size_t)snprintf(buf + n, len - n, " %s", s);
		else
			n += (size_t)snprintf(buf + n, len - n, " bit%u", b);
	}
	if (bits == 0 && n < len)
		snprintf(buf + n, len - n, " (none)");
	return buf;
}

const char *status_str(char *buf, size_t len, uint8_t s)
{
	snprintf(buf, len, "0x%02x%s%s%s%s%s%s%s", s, s ? "" : " (reset)",
		 s & VSTAT_ACKNOWLEDGE ? " ACKNOWLEDGE" : "",
		 s & VSTAT_DRIVER ? " DRIVER" : "",
		 s & VSTAT_FEATURES_OK ? " FEATURES_OK" : "",
		 s & VSTAT_DRIVER_OK ? " DRIVER_OK" : "",
		 s & VSTAT_NEEDS_RESET ? " DEVICE_NEEDS_RESET" : "",
		 s & VSTAT_FAILED ? " FAILED" : "");
	return buf;
}

/* Signals come through a signalfd so that every wait can see them in its
 * poll set. */
int signal_fd_open(void)
{
	sigset_t set;
	int fd;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -errno;
	fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	return fd < 0 ? -errno : fd;
}

int signal_fd_read(int sfd)
{
	struct signalfd_siginfo si;

	if (read(sfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
		return 0;
	return (int)si.ssi_signo;
}

void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* ======================================================================= */
/* the short demo: both ends over a real socket                             */
/* ======================================================================= */

static int run_demo(uint32_t pairs)
{
	struct fe_opts o = { .pairs = pairs, .timeout_ms = 5000 };
	char dir[] = "/tmp/uvhost-demo.XXXXXX";
	char path[sizeof(dir) + 16];
	int status = 1, wst = 0;
	pid_t pid;

	if (!mkdtemp(dir)) {
		say("error: mkdtemp: %s", strerror(errno));
		return 1;
	}
	snprintf(path, sizeof(path), "%s/vhost.sock", dir);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		say("error: fork: %s", strerror(errno));
		rmdir(dir);
		return 1;
	}
	if (pid == 0) {
		role = "backend";
		fflush(stdout);
		_exit(run_serve(path, pairs, false, true));
	}
	role = "frontend";
	/* The back-end's socket appears when it is ready; connect retries. */
	status = run_connect(path, &o);
	if (status != 0)
		kill(pid, SIGTERM);
	while (waitpid(pid, &wst, 0) < 0) {
		if (errno != EINTR) {
			wst = -1;
			break;
		}
	}
	role = "uvhost-demo";
	if (wst == -1 || !WIFEXITED(wst) || WEXITSTATUS(wst) != 0) {
		say("back-end failed");
		status = 1;
	}
	unlink(path);
	rmdir(dir);
	say(status == 0 ? "front-end and back-end agreed; demo complete"
			: "demo FAILED");
	return status;
}

/* ======================================================================= */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: uvhost-demo [options]                 both ends over a temporary socket\n"
		"       uvhost-demo --serve PATH [options]    back-end: a vhost-user net test device\n"
		"       uvhost-demo --connect PATH [options]  front-end: negotiate and set up vrings\n"
		"\n"
		"options:\n"
		"  -s, --serve PATH     listen on PATH and serve connections one after the other\n"
		"  -c, --connect PATH   connect to the back-end listening on PATH\n"
		"  -q, --queues N       queue pairs (1-%u, default 1)\n"
		"      --ctrl-vq        back-end: also offer a control queue (CTRL_VQ)\n"
		"      --once           back-end: exit when the first connection ends\n"
		"      --hold SECONDS   front-end: keep the device up this long before tearing\n"
		"                       down (SIGINT/SIGTERM end it early)\n"
		"      --timeout MS     front-end: wait this long for the back-end (default 5000)\n"
		"  -v, --verbose        library debug log on stderr\n"
		"  -h, --help           this text\n"
		"\n"
		"Exit status: 0 success, 1 failure, 2 usage error.\n", DEMO_MAX_PAIRS);
}

static bool parse_uint(const char *s, unsigned long min, unsigned long max,
		       unsigned long *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < min || v > max)
		return false;
	*out = v;
	return true;
}

int main(int argc, char **argv)
{
	enum { OPT_ONCE = 256, OPT_HOLD, OPT_TIMEOUT, OPT_CTRL_VQ };
	static const struct option longopts[] = {
		{ "serve", required_argument, NULL, 's' },
		{ "connect", required_argument, NULL, 'c' },
		{ "queues", required_argument, NULL, 'q' },
		{ "once", no_argument, NULL, OPT_ONCE },
		{ "hold", required_argument, NULL, OPT_HOLD },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "ctrl-vq", no_argument, NULL, OPT_CTRL_VQ },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *serve = NULL, *connect_path = NULL;
	struct fe_opts o = { .pairs = 1, .timeout_ms = 5000 };
	bool once = false, ctrl_vq = false;
	unsigned long v;
	int c;

	setvbuf(stdout, NULL, _IOLBF, 0);
	uvh_log_set_sink(log_sink, NULL);
	while ((c = getopt_long(argc, argv, "s:c:q:vh", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			serve = optarg;
			break;
		case 'c':
			connect_path = optarg;
			break;
		case 'q':
			if (!parse_uint(optarg, 1, DEMO_MAX_PAIRS, &v)) {
				fprintf(stderr, "uvhost-demo: --queues wants 1 to %u\n",
					DEMO_MAX_PAIRS);
				return 2;
			}
			o.pairs = (uint32_t)v;
			break;
		case OPT_ONCE:
			once = true;
			break;
		case OPT_HOLD:
			if (!parse_uint(optarg, 0, 86400, &v)) {
				fprintf(stderr, "uvhost-demo: --hold wants seconds\n");
				return 2;
			}
			o.hold_s = (int)v;
			break;
		case OPT_TIMEOUT:
			if (!parse_uint(optarg, 0, INT_MAX, &v)) {
				fprintf(stderr, "uvhost-demo: --timeout wants milliseconds\n");
				return 2;
			}
			o.timeout_ms = (int)v;
			break;
		case OPT_CTRL_VQ:
			ctrl_vq = true;
			break;
		case 'v':
			uvh_log_set_level(UVH_LOG_DEBUG);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "uvhost-demo: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (serve && connect_path) {
		fprintf(stderr, "uvhost-demo: --serve and --connect exclude each other\n");
		return 2;
	}
	if (serve) {
		role = "backend";
		return run_serve(serve, o.pairs, ctrl_vq, once);
	}
	if (connect_path) {
		role = "frontend";
		return run_connect(connect_path, &o);
	}
	return run_demo(o.pairs);
}
