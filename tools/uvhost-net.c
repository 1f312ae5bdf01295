/* SPDX-License-Identifier: MIT */
/*
 * uvhost-net: the vhost-user-net back-end daemon.
 *
 * One port per --socket-path (or --fd): each is a virtio-net device
 * (devices/net/net.h) hosted by a vhost-user device host (host/devhost.h)
 * whose rings run on the engines given by --cores. Each port has a control
 * thread that accepts (or connects), handles the front-end's requests and,
 * when the front-end goes, tears the session down and waits for the next.
 *
 * Follows the vhost-user spec's back-end program conventions: --socket-path
 * or --fd, --print-capabilities, never daemonizes, SIGTERM/SIGINT stop it
 * promptly (socket files removed), a JSON description for discovery is
 * installed under share/qemu/vhost-user/.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "util.h"
#include "engine.h"
#include "listener.h"
#include "log.h"
#include "net.h"
#include "devhost.h"

#define PROG		"uvhost-net"
#define MAX_PORTS	UVH_NET_SWITCH_MAX_PORTS
#define MAX_CORES	64
#define POLL_MS		200	/* how soon a control thread sees a stop */
#define MAX_ALLOW_UIDS	UVH_LISTENER_MAX_UIDS

/* set by SIGINT/SIGTERM; read by the port threads (and uvh_connect) with
 * atomic loads: STOPPING() */
static volatile int stop_flag;
#define STOPPING()	__atomic_load_n(&stop_flag, __ATOMIC_RELAXED)

struct port {
	unsigned int id;
	const char *path;		/* --socket-path, or NULL for --fd */
	int fd;				/* --fd, else -1 */
	struct uvh_listener *listener;
	struct uvh_net_dev *net;
	struct uvh_devhost *dh;
	pthread_t thread;
	bool thread_on;
	_Atomic bool done;		/* --fd: the one connection ended */
	/* last stats line */
	struct uvh_net_stats last;
	/* --stats-json: the engines serving its data rings (bit i: engines[i]) */
	uint64_t engine_mask;
};

struct config {
	enum uvh_net_port_type mode;
	const char *mode_name;
	const char *paths[MAX_PORTS];
	unsigned int npaths;
	int fds[MAX_PORTS];
	unsigned int nfds;
	bool client;
	unsigned int frame_size;
	const char *tap;
	const char *iface;		/* --iface: xdp mode */
	const char *uplink;		/* --uplink: switch mode */
	unsigned int queues;
	int cores[MAX_CORES];
	unsigned int ncores;
	enum uvh_engine_mode engine_mode;
	unsigned int max_delay_us;
	unsigned int stats_interval;
	bool stats_json;		/* --stats-json: stdout carries only JSON lines */
	mode_t socket_mode;
	bool socket_owner_set;
	uid_t owner;
	gid_t group;
	uid_t allow_uids[MAX_ALLOW_UIDS];	/* --allow-uid; none = anyone */
	unsigned int n_allow_uids;
	bool offer_config;		/* --offer-config */
};

static struct config cfg = {
	.mode = UVH_NET_PORT_LOOPBACK,
	.mode_name = "loopback",
	.engine_mode = UVH_ENGINE_ADAPTIVE,
	.queues = 1,
};

static struct port ports[MAX_PORTS];
static unsigned int nports;
static struct uvh_engine *engines[MAX_CORES];
static unsigned int nengines;
static struct uvh_net_switch *sw;

/* Lines for the operator that are not stats (the banner, a tap's name): on
 * stdout, or on stderr with --stats-json so that stdout is JSON only. */
static FILE *info_out;

/* --stats-json: each engine thread's id and the CPU time it had used at the
 * start and at the last batch of lines (ns; tid 0: its thread was not
 * found, its share is unknown). */
static pid_t engine_tid[MAX_CORES];
static uint64_t engine_cpu_start[MAX_CORES], engine_cpu_last[MAX_CORES];
static uint64_t stats_start_ns;		/* CLOCK_MONOTONIC, as uvh_now_ns() */

/* ---- helpers ------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f,
"Usage: " PROG " [OPTIONS]\n"
"A vhost-user-net back-end.\n"
"\n"
"  --socket-path PATH     listen on PATH (repeat for several ports; switch mode)\n"
"  --client               connect to each PATH instead, reconnecting when the\n"
"                         front-end goes (exponential back-off)\n"
"  --fd N                 serve the connected socket N (repeatable)\n"
"  --print-capabilities   print the back-end's capabilities (JSON) and exit\n"
"  --mode MODE            loopback (default), sink, source, switch, tap or xdp\n"
"  --frame-size BYTES     source mode: frame size without the virtio-net header\n"
"                         (default 64)\n"
"  --tap NAME             tap mode: the tap interface (default: kernel's choice)\n"
"  --iface NAME           xdp mode: the network interface; queue pair i uses its\n"
"                         queue i through an AF_XDP socket (needs CAP_NET_ADMIN,\n"
"                         CAP_BPF; the XDP program is detached at exit)\n"
"  --uplink KIND:NAME     switch mode: the switch's uplink to a wire, xdp:IFACE\n"
"                         (AF_XDP on IFACE's first --queues queues) or tap:NAME\n"
"                         (a tap: the kernel's stack, e.g. in a bridge)\n"
"  --queues N             queue pairs per port (default 1)\n"
"  --cores LIST           one engine per core (e.g. 1 or 0,2-3; default: one\n"
"                         engine, not pinned); queue pairs are spread over them\n"
"  --engine-mode MODE     poll, event or adaptive (default)\n"
"  --max-delay-us US      adaptive: the longest a frame may wait while the engine\n"
"                         gathers a batch (default 200; lower: more CPU, less latency)\n"
"  --offer-config         offer VHOST_USER_PROTOCOL_F_CONFIG, for front-ends that\n"
"                         read the MAC and MTU with GET_CONFIG (off by default:\n"
"                         QEMU's vhost-user-net never does and warns when offered)\n"
"  --stats-interval SEC   print one line per port every SEC seconds\n"
"  --stats-json           print the stats as JSON, one object per port per\n"
"                         interval (default 1 s) and a last one per port with\n"
"                         \"final\": true at exit; stdout then carries nothing else\n"
"                         (start-up lines go to stderr, logs are on stderr)\n"
"  --socket-mode OCTAL    mode of the socket files (default 0600)\n"
"  --socket-owner USER[:GROUP]  owner of the socket files\n"
"  --allow-uid UID[,UID...]  serve only front-ends running as these uids\n"
"                         (SO_PEERCRED); others are closed at once with a\n"
"                         logged reason (repeatable, up to %u uids)\n"
"  -v, --verbose          more log lines (repeat for debug)\n"
"  -h, --help             this text\n"
"\n"
"It never daemonizes. SIGTERM or SIGINT stop it (socket files removed), after\n"
"printing the final counters of every port.\n"
"\n"
"Limits on what a front-end can make it allocate (more is refused: a NACK\n"
"with REPLY_ACK, else the connection is closed, with a logged reason):\n"
"  front-ends per port     1; another connection is closed at once (port busy);\n"
"                          listen backlog 16\n"
"  message                 %u bytes of payload, %u fds\n"
"  memory regions          %u (8 per SET_MEM_TABLE); each region is checked\n"
"                          against its file's size, so only the front-end's\n"
"                          own memory is ever mapped\n"
"  rings                   the device's: 2 per queue pair + 1 control\n"
"                          (%u with --queues %u)\n"
"  ring size               32768 (split: a power of 2)\n"
"  inflight area           one per connection, sized for at most those rings\n"
"                          of at most 32768 entries\n"
"  dirty log               one mapping, no larger than the front-end's log file\n"
"  IOTLB entries           2048 cached per connection (older ones evicted)\n"
"  a message in parts      5 s between two parts, then closed\n",
		MAX_ALLOW_UIDS, UVH_MSG_MAX_PAYLOAD, UVH_MSG_MAX_FDS, UVH_MAX_MEM_SLOTS,
		2 * cfg.queues + 1, cfg.queues);
}

static void die_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, PROG ": ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nTry '" PROG " --help'.\n");
	exit(2);
}

static unsigned long parse_ulong(const char *s, const char *what, unsigned long max)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 0);
	if (errno || end == s || *end || v > max || s[0] == '-')
		die_usage("invalid %s", what);
	return v;
}

static void parse_cores(const char *s)
{
	const char *p = s;

	while (*p) {
		char *end;
		long a, b;

		a = strtol(p, &end, 10);
		if (end == p || a < 0 || a > 4095)
			die_usage("invalid --cores list '%s'", s);
		b = a;
		p = end;
		if (*p == '-') {
			p++;
			b = strtol(p, &end, 10);
			if (end == p || b < a || b > 4095)
				die_usage("invalid --cores list '%s'", s);
			p = end;
		}
		for (long c = a; c <= b; c++) {
			if (cfg.ncores == MAX_CORES)
				die_usage("too many cores in '%s'", s);
			cfg.cores[cfg.ncores++] = (int)c;
		}
		if (*p == ',')
			p++;
		else if (*p)
			die_usage("invalid --cores list '%s'", s);
	}
	if (!cfg.ncores)
		die_usage("empty --cores list '%s'", s);
}

static void parse_owner(const char *s)
{
	char buf[256], *colon;
	struct passwd *pw;
	struct group *gr;

	if (strlen(s) >= sizeof(buf))
		die_usage("invalid --socket-owner '%s'", s);
	strcpy(buf, s);
	colon = strchr(buf, ':');
	if (colon)
		*colon++ = '\0';
	pw = getpwnam(buf);
	if (pw) {
		cfg.owner = pw->pw_uid;
		cfg.group = pw->pw_gid;
	} else if (isdigit((unsigned char)buf[0])) {
		cfg.owner = (uid_t)parse_ulong(buf, "--socket-owner user", UINT32_MAX - 1);
		cfg.group = (gid_t)-1;
	} else {
		die_usage("unknown user '%s'", buf);
	}
	if (colon && *colon) {
		gr = getgrnam(colon);
		if (gr)
			cfg.group = gr->gr_gid;
		else if (isdigit((unsigned char)colon[0]))
			cfg.group = (gid_t)parse_ulong(colon, "--socket-owner group", UINT32_MAX - 1);
		else
			die_usage("unknown group '%s'", colon);
	}
	cfg.socket_owner_set = true;
}

/* --allow-uid: numbers or user names, comma separated; repeatable. */
static void parse_allow_uids(const char *s)
{
	char buf[1024], *tok, *save = NULL;

	if (strlen(s) >= sizeof(buf))
		die_usage("invalid --allow-uid '%s'", s);
	strcpy(buf, s);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		struct passwd *pw;
		uid_t uid = 0;	/* die_usage() does not return */

		if (isdigit((unsigned char)tok[0]))
			uid = (uid_t)parse_ulong(tok, "--allow-uid", UINT32_MAX - 1);
		else if ((pw = getpwnam(tok)))
			uid = pw->pw_uid;
		else
			die_usage("unknown user '%s' in --allow-uid", tok);
		if (cfg.n_allow_uids == MAX_ALLOW_UIDS)
			die_usage("too many uids in --allow-uid '%s'", s);
		cfg.allow_uids[cfg.n_allow_uids++] = uid;
	}
	if (!cfg.n_allow_uids)
		die_usage("empty --allow-uid '%s'", s);
}

/* Resident memory of this process in KiB (VmRSS), or 0. Guest memory is
 * mapped shared from the front-end's files: only the pages the device
 * touched count, so this is mostly our own footprint. */
static unsigned long rss_kib(void)
{
	char line[256];
	unsigned long kib = 0;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %lu kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static void print_capabilities(void)
{
	/* VHostUserBackendCapabilities of QEMU's vhost-user.json: the "net"
	 * type defines no feature names. */
	printf("{\n  \"type\": \"net\",\n  \"features\": [\n  ]\n}\n");
}

static void on_signal(int sig)
{
	(void)sig;
	__atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED);	/* lock-free: signal-safe */
}

/* ---- per-port control thread -------------------------------------------------- */

/* Front-ends come and go (uvh_devhost_serve) until a signal stops us. */
static void *port_thread(void *arg)
{
	struct port *p = arg;
	char name[32];
	struct uvh_devhost_serve_opts so = {
		.name = name,
		.listener = p->listener, .client = cfg.client, .path = p->path,
		.allow_uids = cfg.allow_uids, .n_allow_uids = cfg.n_allow_uids,
		.fd = p->fd, .stop = &stop_flag, .poll_ms = POLL_MS,
	};

	snprintf(name, sizeof(name), "port %u", p->id);
	p->fd = -1;	/* the serve loop owns it now */
	uvh_devhost_serve(p->dh, &so);
	if (so.fd >= 0)
		atomic_store(&p->done, true);	/* --fd: the one connection ended */
	return NULL;
}

/* ---- stats ------------------------------------------------------------------- */

/* The drops since @prev by reason, "" when none: " (over-mtu 3, bad-gso 1)". */
static const char *drop_reasons(const struct uvh_net_stats *st, const struct uvh_net_stats *prev,
				char *buf, size_t size)
{
	size_t at = 0;

	buf[0] = 0;
	for (unsigned int w = 0; w < UVH_NET_DROP_REASONS && at + 1 < size; w++) {
		uint64_t n = st->drops_by_reason[w] - (prev ? prev->drops_by_reason[w] : 0);

		int k;

		if (!n)
			continue;
		k = snprintf(buf + at, size - at, "%s%s %" PRIu64, at ? ", " : " (",
			     uvh_net_drop_reason_name(w), n);
		if (k < 0 || (size_t)k >= size - at)
			return buf;	/* cut short: never past the buffer */
		at += (size_t)k;
	}
	if (at && at + 1 < size)
		snprintf(buf + at, size - at, ")");
	return buf;
}

static void print_stats(double secs, bool final)
{
	char why[512];

	unsigned long rss = rss_kib();

	for (unsigned int i = 0; i < nports; i++) {
		struct port *p = &ports[i];
		struct uvh_net_stats st;
		double rx_pps, tx_pps, rx_bps, tx_bps;

		uvh_net_get_stats(p->net, &st);
		if (final) {
			printf(PROG ": port %u %s: total rx %" PRIu64 " pkts %" PRIu64
			       " bytes, tx %" PRIu64 " pkts %" PRIu64 " bytes, drops rx %"
			       PRIu64 " tx %" PRIu64 "%s, ctrl %" PRIu64 "\n",
			       p->id, uvh_net_name(p->net), st.rx_packets, st.rx_bytes,
			       st.tx_packets, st.tx_bytes, st.rx_drops, st.tx_drops,
			       drop_reasons(&st, NULL, why, sizeof(why)), st.ctrl_cmds);
			continue;
		}
		rx_pps = (double)(st.rx_packets - p->last.rx_packets) / secs;
		tx_pps = (double)(st.tx_packets - p->last.tx_packets) / secs;
		rx_bps = (double)(st.rx_bytes - p->last.rx_bytes) * 8 / secs;
		tx_bps = (double)(st.tx_bytes - p->last.tx_bytes) * 8 / secs;
		printf(PROG ": port %u %s: rx %.3f Mpps %.3f Gbit/s, tx %.3f Mpps %.3f Gbit/s,"
		       " drops rx %" PRIu64 " tx %" PRIu64 "%s, %s, rss %lu KiB\n",
		       p->id, uvh_net_name(p->net), rx_pps / 1e6, rx_bps / 1e9, tx_pps / 1e6,
		       tx_bps / 1e9, st.rx_drops - p->last.rx_drops, st.tx_drops - p->last.tx_drops,
		       drop_reasons(&st, &p->last, why, sizeof(why)),
		       uvh_devhost_connected(p->dh) ? "connected" : "waiting", rss);
		p->last = st;
	}
	if (sw && uvh_net_switch_uplink_info(sw)) {
		static struct uvh_net_stats last;
		struct uvh_net_stats st, d;

		/* the wire's side: rx taken from the guests to the wire, tx to them */
		uvh_net_switch_uplink_stats(sw, &st);
		d = st;
		if (!final) {
			d.rx_packets -= last.rx_packets;
			d.tx_packets -= last.tx_packets;
			d.rx_drops -= last.rx_drops;
			d.tx_drops -= last.tx_drops;
		}
		printf(PROG ": uplink: %sto the wire %" PRIu64 " pkts (%" PRIu64 " dropped), from "
		       "the wire %" PRIu64 " pkts (%" PRIu64 " lost in the kernel)\n",
		       final ? "total " : "", d.rx_packets, d.rx_drops, d.tx_packets, d.tx_drops);
		last = st;
	}
	if (final)
		printf(PROG ": rss %lu KiB\n", rss);
	/* where an engine's time goes: what adaptive and event mode are tuned by */
	for (unsigned int i = 0; !final && i < nengines; i++) {
		static struct uvh_engine_stats prev[MAX_CORES];
		struct uvh_engine_stats st, *p = &prev[i];

		uvh_engine_stats(engines[i], &st);
		printf(PROG ": engine %u: %.0f sweeps/s (%.0f%% busy), %.0f naps/s (%.1f us each),"
		       " %.0f sleeps/s (%.1f us each, %.0f timed out), batch %" PRIu64 ", %.0f kicks/s,"
		       " %.0f calls/s\n", i,
		       (double)(st.sweeps - p->sweeps) / secs,
		       st.sweeps > p->sweeps ? 100.0 * (double)(st.busy_sweeps - p->busy_sweeps) /
					       (double)(st.sweeps - p->sweeps) : 0.0,
		       (double)(st.naps - p->naps) / secs,
		       st.naps > p->naps ? (double)(st.nap_ns - p->nap_ns) / 1e3 /
					   (double)(st.naps - p->naps) : 0.0,
		       (double)(st.sleeps - p->sleeps) / secs,
		       st.sleeps > p->sleeps ? (double)(st.sleep_ns - p->sleep_ns) / 1e3 /
					       (double)(st.sleeps - p->sleeps) : 0.0,
		       (double)(st.sleep_timeouts - p->sleep_timeouts) / secs, st.kick_batch,
		       (double)(st.kicks - p->kicks) / secs, (double)(st.calls - p->calls) / secs);
		*p = st;
	}
	fflush(stdout);
}

static const char *engine_mode_name(void)
{
	return cfg.engine_mode == UVH_ENGINE_POLL ? "poll" :
	       cfg.engine_mode == UVH_ENGINE_EVENT ? "event" : "adaptive";
}

/* The id of the thread named @name in this process, or 0. The engines do
 * not tell their thread ids; uvhost-net names their threads (make_engines)
 * and nothing else here takes those names. */
static pid_t find_thread(const char *name)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	pid_t tid = 0;

	if (!d)
		return 0;
	while (!tid && (de = readdir(d))) {
		char path[300], comm[32];
		FILE *f;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", de->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(comm, sizeof(comm), f)) {
			comm[strcspn(comm, "\n")] = 0;
			if (!strcmp(comm, name))
				tid = (pid_t)atoi(de->d_name);
		}
		fclose(f);
	}
	closedir(d);
	return tid;
}

/* CPU time thread @tid has used, in ns: schedstat's run time (ns exact),
 * else utime + stime of its stat (clock ticks); 0 when neither reads. */
static uint64_t thread_cpu_ns(pid_t tid)
{
	char path[64], buf[1024], *p;
	unsigned long long run, ut, st;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/self/task/%d/schedstat", (int)tid);
	f = fopen(path, "r");
	if (f) {
		int ok = fscanf(f, "%llu", &run) == 1;

		fclose(f);
		if (ok)
			return run;
	}
	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	/* the name, in parentheses, may hold spaces: fields 14 and 15 are
	 * counted from the last ')' */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
			 &ut, &st) != 2)
		return 0;
	return (ut + st) * (1000000000ull / (unsigned long long)sysconf(_SC_CLK_TCK));
}

/* --stats-json: find the engines' threads, note where their CPU time starts. */
static void stats_json_start(void)
{
	stats_start_ns = uvh_now_ns();
	for (unsigned int i = 0; i < nengines; i++) {
		char name[32];

		snprintf(name, sizeof(name), "uvh-net-%u", i);
		engine_tid[i] = find_thread(name);
		if (!engine_tid[i])
			UVH_WARN("engine %u: thread %s not found: cpu_pct will be null", i, name);
		else
			engine_cpu_start[i] = engine_cpu_last[i] = thread_cpu_ns(engine_tid[i]);
	}
}

/* @s as a JSON string (names here are plain, but a port name is the user's). */
static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

/*
 * One JSON object per port on one line, for graphs: the counters of the
 * last @secs (the final line: totals since start, @secs the whole run),
 * and cpu_pct, the CPU time the engines serving the port's data rings used
 * meanwhile in % of one core (an engine serving several ports counts in
 * full for each; "engines" says which). Flushed after the batch.
 */
static void print_stats_json(double secs, bool final)
{
	double cpu[MAX_CORES];
	bool cpu_known[MAX_CORES];
	struct timespec ts;
	uint64_t now = uvh_now_ns();

	clock_gettime(CLOCK_REALTIME, &ts);
	for (unsigned int i = 0; i < nengines; i++) {
		uint64_t used = engine_tid[i] ? thread_cpu_ns(engine_tid[i]) : 0;
		uint64_t from = final ? engine_cpu_start[i] : engine_cpu_last[i];
		uint64_t wall = final ? now - stats_start_ns : (uint64_t)(secs * 1e9);

		cpu_known[i] = engine_tid[i] && used >= from && wall;
		cpu[i] = cpu_known[i] ? 100.0 * (double)(used - from) / (double)wall : 0;
		if (!final && used)
			engine_cpu_last[i] = used;
	}
	for (unsigned int i = 0; i < nports; i++) {
		static const struct uvh_net_stats zero;
		struct port *p = &ports[i];
		const struct uvh_net_stats *b = final ? &zero : &p->last;
		struct uvh_net_stats st;
		double pct = 0;
		bool known = true;
		bool first = true;

		uvh_net_get_stats(p->net, &st);
		printf("{\"ts\":%lld.%03ld,\"port\":%u,\"name\":", (long long)ts.tv_sec,
		       ts.tv_nsec / 1000000, p->id);
		json_str(stdout, uvh_net_name(p->net));
		printf(",\"mode\":\"%s\",\"engine_mode\":\"%s\",\"interval_s\":%.3f,"
		       "\"connected\":%s,"
		       "\"rx_packets\":%" PRIu64 ",\"rx_bytes\":%" PRIu64 ","
		       "\"tx_packets\":%" PRIu64 ",\"tx_bytes\":%" PRIu64 ","
		       "\"rx_drops\":%" PRIu64 ",\"tx_drops\":%" PRIu64 ",\"ctrl_cmds\":%" PRIu64 ","
		       "\"drops_by_reason\":{",
		       cfg.mode_name, engine_mode_name(), secs,
		       uvh_devhost_connected(p->dh) ? "true" : "false",
		       st.rx_packets - b->rx_packets, st.rx_bytes - b->rx_bytes,
		       st.tx_packets - b->tx_packets, st.tx_bytes - b->tx_bytes,
		       st.rx_drops - b->rx_drops, st.tx_drops - b->tx_drops,
		       st.ctrl_cmds - b->ctrl_cmds);
		for (unsigned int w = 0; w < UVH_NET_DROP_REASONS; w++)
			printf("%s\"%s\":%" PRIu64, w ? "," : "", uvh_net_drop_reason_name(w),
			       st.drops_by_reason[w] - b->drops_by_reason[w]);
		printf("},\"engines\":[");
		for (unsigned int e = 0; e < nengines; e++) {
			if (!(p->engine_mask & (1ull << e)))
				continue;
			printf("%s%u", first ? "" : ",", e);
			first = false;
			pct += cpu[e];
			known &= cpu_known[e];
		}
		if (known && !first)
			printf("],\"cpu_pct\":%.1f", pct);
		else
			printf("],\"cpu_pct\":null");
		printf(",\"final\":%s}\n", final ? "true" : "false");
		if (!final)
			p->last = st;
	}
	if (sw && uvh_net_switch_uplink_info(sw)) {
		/* the switch's uplink, as one more port: rx from the guests to the
		 * wire, tx from the wire to them; served by every port's engines */
		static struct uvh_net_stats last;
		const struct uvh_net_stats *b = final ? &(struct uvh_net_stats){ 0 } : &last;
		struct uvh_net_stats st;

		uvh_net_switch_uplink_stats(sw, &st);
		printf("{\"ts\":%lld.%03ld,\"port\":\"uplink\",\"name\":", (long long)ts.tv_sec,
		       ts.tv_nsec / 1000000);
		json_str(stdout, cfg.uplink);
		printf(",\"mode\":\"uplink\",\"engine_mode\":\"%s\",\"interval_s\":%.3f,"
		       "\"rx_packets\":%" PRIu64 ",\"rx_bytes\":%" PRIu64 ","
		       "\"tx_packets\":%" PRIu64 ",\"tx_bytes\":%" PRIu64 ","
		       "\"rx_drops\":%" PRIu64 ",\"tx_drops\":%" PRIu64 ",\"drops_by_reason\":{",
		       engine_mode_name(), secs, st.rx_packets - b->rx_packets,
		       st.rx_bytes - b->rx_bytes, st.tx_packets - b->tx_packets,
		       st.tx_bytes - b->tx_bytes, st.rx_drops - b->rx_drops, st.tx_drops - b->tx_drops);
		for (unsigned int w = 0; w < UVH_NET_DROP_REASONS; w++)
			printf("%s\"%s\":%" PRIu64, w ? "," : "", uvh_net_drop_reason_name(w),
			       st.drops_by_reason[w] - b->drops_by_reason[w]);
		printf("},\"cpu_pct\":null,\"final\":%s}\n", final ? "true" : "false");
		if (!final)
			last = st;
	}
	fflush(stdout);
}

/* ---- set-up and tear-down ------------------------------------------------------ */

static int make_engines(void)
{
	unsigned int n = cfg.ncores ? cfg.ncores : 1;

	for (unsigned int i = 0; i < n; i++) {
		char name[32];
		struct uvh_engine_opts o = {
			.name = name, .cpu = cfg.ncores ? cfg.cores[i] : -1, .numa_node = -1,
			.mode = cfg.engine_mode, .nap_max_us = cfg.max_delay_us,
		};
		int ret;

		snprintf(name, sizeof(name), "uvh-net-%u", i);
		engines[i] = uvh_engine_create(&o);
		if (!engines[i]) {
			UVH_ERR("engine %u (core %d): %s", i, o.cpu, strerror(errno));
			return -errno;
		}
		nengines = i + 1;
		ret = uvh_engine_start(engines[i]);
		if (ret) {
			UVH_ERR("engine %u: cannot start: %s", i, strerror(-ret));
			return ret;
		}
	}
	return 0;
}

static int make_port(struct port *p, unsigned int id, const char *path, int fd)
{
	char name[32];
	struct uvh_net_opts no = {
		.type = cfg.mode, .name = name, .queue_pairs = cfg.queues,
		.frame_size = cfg.frame_size, .tap_name = cfg.tap, .sw = sw,
		.iface = cfg.iface, .offer_config = cfg.offer_config,
	};
	struct uvh_devhost_opts vo = {
		.name = name, .ops = &uvh_net_devhost_ops, .engines = engines,
		.nengines = nengines,
	};
	struct uvh_listener_opts lo = {
		.mode = cfg.socket_mode, .owner = cfg.owner, .group = cfg.group,
		.set_owner = cfg.socket_owner_set,
		.allow_uids = cfg.allow_uids, .n_allow_uids = cfg.n_allow_uids,
	};
	int ret;

	memset(p, 0, sizeof(*p));
	p->id = id;
	p->path = path;
	p->fd = fd;
	snprintf(name, sizeof(name), "port%u", id);
	p->net = uvh_net_create(&no);
	if (!p->net) {
		ret = -errno;
		UVH_ERR("port %u: cannot create the %s device: %s", id, cfg.mode_name,
			strerror(-ret));
		return ret;
	}
	vo.dev = p->net;
	p->dh = uvh_devhost_new(&vo);
	if (!p->dh)
		return -errno;
	if (path && !cfg.client) {
		ret = uvh_listener_open(path, &lo, &p->listener);
		if (ret) {
			UVH_ERR("port %u: cannot listen on %s: %s", id, path, strerror(-ret));
			return ret;
		}
	}
	if (cfg.mode == UVH_NET_PORT_TAP && uvh_net_tap_name(p->net))
		fprintf(info_out, PROG ": port %u: tap %s\n", id, uvh_net_tap_name(p->net));
	if (uvh_net_xdp_mode(p->net))
		fprintf(info_out, PROG ": port %u: xdp %s: %s\n", id, cfg.iface,
			uvh_net_xdp_mode(p->net));
	/* the engines of its data rings (the control ring's is rarely busy) */
	for (uint32_t q = 0; q < 2 * uvh_net_max_pairs(p->net); q++) {
		struct uvh_engine *e = uvh_devhost_queue_engine(p->dh, q);

		for (unsigned int i = 0; i < nengines; i++)
			if (engines[i] == e)
				p->engine_mask |= 1ull << i;
	}
	return 0;
}

/* Stop the control threads: each disconnects its front-end, so every
 * ring of every port is stopped when this returns. */
static void stop_ports(void)
{
	__atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED);
	for (unsigned int i = 0; i < nports; i++)
		if (ports[i].thread_on)
			pthread_join(ports[i].thread, NULL);
	for (unsigned int i = 0; i < nports; i++)
		ports[i].thread_on = false;
}

static void teardown(void)
{
	stop_ports();
	for (unsigned int i = 0; i < nports; i++) {
		uvh_devhost_free(ports[i].dh);
		ports[i].dh = NULL;
	}
	/* no ring runs any more: the devices and the switch may go */
	for (unsigned int i = 0; i < nports; i++) {
		if (ports[i].listener)
			uvh_listener_close(ports[i].listener);	/* unlinks the path */
		if (ports[i].fd >= 0)
			close(ports[i].fd);
		uvh_net_destroy(ports[i].net);
	}
	uvh_net_switch_destroy(sw);
	for (unsigned int i = 0; i < nengines; i++)
		uvh_engine_destroy(engines[i]);
}

/* ---- main ------------------------------------------------------------------------ */

enum {
	OPT_SOCKET_PATH = 256, OPT_CLIENT, OPT_FD, OPT_PRINT_CAPS, OPT_MODE, OPT_FRAME_SIZE,
	OPT_TAP, OPT_QUEUES, OPT_CORES, OPT_ENGINE_MODE, OPT_MAX_DELAY, OPT_STATS, OPT_SOCKET_MODE,
	OPT_SOCKET_OWNER, OPT_ALLOW_UID, OPT_IFACE, OPT_UPLINK, OPT_OFFER_CONFIG, OPT_STATS_JSON,
};

static const struct option long_opts[] = {
	{ "socket-path", required_argument, NULL, OPT_SOCKET_PATH },
	{ "client", no_argument, NULL, OPT_CLIENT },
	{ "fd", required_argument, NULL, OPT_FD },
	{ "print-capabilities", no_argument, NULL, OPT_PRINT_CAPS },
	{ "mode", required_argument, NULL, OPT_MODE },
	{ "frame-size", required_argument, NULL, OPT_FRAME_SIZE },
	{ "tap", required_argument, NULL, OPT_TAP },
	{ "iface", required_argument, NULL, OPT_IFACE },
	{ "uplink", required_argument, NULL, OPT_UPLINK },
	{ "queues", required_argument, NULL, OPT_QUEUES },
	{ "cores", required_argument, NULL, OPT_CORES },
	{ "engine-mode", required_argument, NULL, OPT_ENGINE_MODE },
	{ "max-delay-us", required_argument, NULL, OPT_MAX_DELAY },
	{ "offer-config", no_argument, NULL, OPT_OFFER_CONFIG },
	{ "stats-interval", required_argument, NULL, OPT_STATS },
	{ "stats-json", no_argument, NULL, OPT_STATS_JSON },
	{ "socket-mode", required_argument, NULL, OPT_SOCKET_MODE },
	{ "socket-owner", required_argument, NULL, OPT_SOCKET_OWNER },
	{ "allow-uid", required_argument, NULL, OPT_ALLOW_UID },
	{ "verbose", no_argument, NULL, 'v' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static void parse_args(int argc, char **argv)
{
	/* in enum uvh_net_port_type's order */
	static const char *const modes[] = { "loopback", "sink", "source", "switch", "tap", "xdp" };
	const unsigned int nmodes = sizeof(modes) / sizeof(modes[0]);
	int c, verbose = 0;
	unsigned int i;

	while ((c = getopt_long(argc, argv, "vh", long_opts, NULL)) != -1) {
		switch (c) {
		case OPT_SOCKET_PATH:
			if (cfg.npaths == MAX_PORTS)
				die_usage("too many ports (%s)", optarg);
			cfg.paths[cfg.npaths++] = optarg;
			break;
		case OPT_CLIENT:
			cfg.client = true;
			break;
		case OPT_FD:
			if (cfg.nfds == MAX_PORTS)
				die_usage("too many ports (%s)", optarg);
			cfg.fds[cfg.nfds++] = (int)parse_ulong(optarg, "--fd", INT32_MAX);
			break;
		case OPT_PRINT_CAPS:
			print_capabilities();
			exit(0);
		case OPT_MODE:
			for (i = 0; i < nmodes && strcmp(optarg, modes[i]); i++)
				;
			if (i == nmodes)
				die_usage("unknown mode '%s'", optarg);
			cfg.mode = (enum uvh_net_port_type)i;
			cfg.mode_name = modes[i];
			break;
		case OPT_FRAME_SIZE:
			cfg.frame_size = (unsigned int)parse_ulong(optarg, "--frame-size",
								   UVH_NET_MAX_FRAME);
			if (cfg.frame_size < 60)
				die_usage("--frame-size %s is below 60", optarg);
			break;
		case OPT_TAP:
			if (strlen(optarg) > 15)
				die_usage("tap name '%s' is too long", optarg);
			cfg.tap = optarg;
			break;
		case OPT_UPLINK:
			if (strncmp(optarg, "xdp:", 4) && strncmp(optarg, "tap:", 4))
				die_usage("--uplink %s: xdp:IFACE or tap:NAME", optarg);
			if (strlen(optarg + 4) > 15 || !optarg[4])
				die_usage("--uplink %s: bad interface name", optarg);
			cfg.uplink = optarg;
			break;
		case OPT_IFACE:
			if (strlen(optarg) > 15)
				die_usage("interface name '%s' is too long", optarg);
			cfg.iface = optarg;
			break;
		case OPT_QUEUES:
			cfg.queues = (unsigned int)parse_ulong(optarg, "--queues", UVH_NET_MAX_PAIRS);
			if (!cfg.queues)
				die_usage("--queues %s: at least 1", optarg);
			break;
		case OPT_CORES:
			parse_cores(optarg);
			break;
		case OPT_MAX_DELAY:
			cfg.max_delay_us = (unsigned int)parse_ulong(optarg, "--max-delay-us", 1000000);
			if (!cfg.max_delay_us)
				die_usage("--max-delay-us must be at least 1", NULL);
			break;
		case OPT_ENGINE_MODE:
			if (!strcmp(optarg, "poll"))
				cfg.engine_mode = UVH_ENGINE_POLL;
			else if (!strcmp(optarg, "event"))
				cfg.engine_mode = UVH_ENGINE_EVENT;
			else if (!strcmp(optarg, "adaptive"))
				cfg.engine_mode = UVH_ENGINE_ADAPTIVE;
			else
				die_usage("unknown engine mode '%s'", optarg);
			break;
		case OPT_STATS:
			cfg.stats_interval = (unsigned int)parse_ulong(optarg, "--stats-interval",
								       86400);
			break;
		case OPT_SOCKET_MODE:
			cfg.socket_mode = (mode_t)strtoul(optarg, NULL, 8);
			if (!cfg.socket_mode || cfg.socket_mode > 0777)
				die_usage("invalid --socket-mode '%s'", optarg);
			break;
		case OPT_SOCKET_OWNER:
			parse_owner(optarg);
			break;
		case OPT_ALLOW_UID:
			parse_allow_uids(optarg);
			break;
		case OPT_OFFER_CONFIG:
			cfg.offer_config = true;
			break;
		case OPT_STATS_JSON:
			cfg.stats_json = true;
			break;
		case 'v':
			verbose++;
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
		die_usage("unexpected argument '%s'", argv[optind]);
	if (!cfg.npaths && !cfg.nfds)
		die_usage("%s", "give --socket-path PATH or --fd N");
	if (cfg.client && !cfg.npaths)
		die_usage("%s", "--client needs --socket-path");
	if (cfg.mode == UVH_NET_PORT_SWITCH && cfg.npaths + cfg.nfds < 2)
		UVH_WARN("switch mode with one port: frames are only flooded back to nobody");
	if (cfg.mode == UVH_NET_PORT_TAP && cfg.npaths + cfg.nfds > 1)
		die_usage("%s", "tap mode serves one port");
	if (cfg.mode == UVH_NET_PORT_XDP && cfg.npaths + cfg.nfds > 1)
		die_usage("%s", "xdp mode serves one port");
	if (cfg.mode == UVH_NET_PORT_XDP && !cfg.iface)
		die_usage("%s", "xdp mode needs --iface NAME");
	if (cfg.uplink && cfg.mode != UVH_NET_PORT_SWITCH)
		die_usage("%s", "--uplink is for switch mode");
	if (cfg.stats_json && !cfg.stats_interval)
		cfg.stats_interval = 1;	/* JSON lines are for graphs: every second */
	if (verbose)
		uvh_log_set_level(verbose > 1 ? UVH_LOG_DEBUG : UVH_LOG_INFO);
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_signal };
	sigset_t block, old;
	uint64_t last, now;
	int ret = 0;

	parse_args(argc, argv);
	info_out = cfg.stats_json ? stderr : stdout;

	/* Signals go to the main thread only: the others inherit the mask. */
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	pthread_sigmask(SIG_BLOCK, &block, &old);

	if (cfg.mode == UVH_NET_PORT_SWITCH) {
		sw = uvh_net_switch_create();
		if (!sw) {
			fprintf(stderr, PROG ": cannot create the switch\n");
			return 1;
		}
		if (cfg.uplink) {
			ret = uvh_net_switch_set_uplink(sw, cfg.uplink, cfg.queues);
			if (ret) {
				fprintf(stderr, PROG ": uplink %s: %s\n", cfg.uplink, strerror(-ret));
				uvh_net_switch_destroy(sw);
				return 1;
			}
			fprintf(info_out, PROG ": uplink %s\n", uvh_net_switch_uplink_info(sw));
		}
	}
	ret = make_engines();
	for (unsigned int i = 0; !ret && i < cfg.npaths + cfg.nfds; i++) {
		bool is_path = i < cfg.npaths;

		ret = make_port(&ports[i], i, is_path ? cfg.paths[i] : NULL,
				is_path ? -1 : cfg.fds[i - cfg.npaths]);
		nports = i + 1;
	}
	for (unsigned int i = 0; !ret && i < nports; i++) {
		ret = -pthread_create(&ports[i].thread, NULL, port_thread, &ports[i]);
		ports[i].thread_on = !ret;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret) {
		teardown();
		return 1;
	}

	fprintf(info_out, PROG ": mode %s, %u port%s, %u queue pair%s, %u engine%s (%s),"
		" rss %lu KiB\n",
		cfg.mode_name, nports, nports > 1 ? "s" : "", cfg.queues,
		cfg.queues > 1 ? "s" : "", nengines, nengines > 1 ? "s" : "",
		engine_mode_name(), rss_kib());
	for (unsigned int i = 0; i < nports; i++)
		fprintf(info_out, PROG ": port %u: %s %s\n", i,
			ports[i].path ? (cfg.client ? "connecting to" : "listening on") : "fd",
			ports[i].path ? ports[i].path : "given");
	fflush(info_out);
	if (cfg.stats_json)
		stats_json_start();

	last = uvh_now_ns();
	while (!STOPPING()) {
		bool all_done = cfg.nfds && !cfg.npaths;

		usleep(POLL_MS * 1000);
		for (unsigned int i = 0; i < nports; i++)
			all_done &= atomic_load(&ports[i].done);
		if (all_done)
			break;	/* --fd only: nothing more will come */
		now = uvh_now_ns();
		if (cfg.stats_interval && now - last >= (uint64_t)cfg.stats_interval * 1000000000u) {
			if (cfg.stats_json)
				print_stats_json((double)(now - last) / 1e9, false);
			else
				print_stats((double)(now - last) / 1e9, false);
			last = now;
		}
	}
	stop_ports();
	if (cfg.stats_json)
		print_stats_json((double)(uvh_now_ns() - stats_start_ns) / 1e9, true);
	else
		print_stats(0, true);
	teardown();
	return 0;
}
