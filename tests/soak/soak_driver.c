/* SPDX-License-Identifier: MIT */
/*
 * The soak's front-end: traffic on every port of a uvhost-net (loopback,
 * two queue pairs) with control-plane churn, for a given time:
 *
 *   enable   SET_VRING_ENABLE off and on again on pair 1 under traffic
 *   region   ADD_MEM_REG of a spare region, REM_MEM_REG of it later
 *   stop     GET_VRING_BASE of pair 1 under traffic, restarted from the base
 *   log      LOG_ALL with a fresh log area on, later off
 *   state    every ring stopped, SET_DEVICE_STATE_FD SAVE + CHECK
 *   reconnect  the connection closed and opened again, set up from scratch
 *   mode     (--inproc port only) its engine switched poll/event/adaptive
 *
 * Frames carry a sequence number per pair: one seen twice or out of order,
 * or a frame whose bytes are wrong, fails the run. Prints the counts of
 * every action and exits 0 (clean) or 1.
 *
 * soak_driver --seconds N [--inproc] PATH...
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "util.h"
#include "engine.h"
#include "frontend.h"
#include "log.h"
#include "message.h"
#include "net.h"
#include "devhost.h"
#include "virtq.h"

#define PF(x)		UVH_BIT(UVH_PROTOCOL_F_##x)
#define MEM_SIZE	(8u << 20)
#define EXTRA_GPA	0x10000000ull
#define EXTRA_SIZE	(2u << 20)
#define LOG_BYTES	(((EXTRA_GPA + EXTRA_SIZE) / UVH_LOG_PAGE) / 8)
#define RING		256u
#define PAIRS		2u
#define MAX_PORTS	8

enum action { A_ENABLE, A_REGION, A_STOP, A_LOG, A_STATE, A_RECONNECT, A_MODE, A_COUNT };
static const char *const action_name[A_COUNT] = {
	"queue disable/enable", "region add/remove", "ring stop/restart", "LOG_ALL on/off",
	"device state save", "reconnect", "engine mode switch",
};

struct pair {
	struct uvh_vq_driver rx, tx;
	int kick[2], call[2];
	bool running, enabled;
	uint32_t seq, expect, rx_next;
};

struct port {
	const char *path;		/* NULL: the in-process port */
	struct uvh_frontend *fe;
	uint64_t features, pf;
	int memfd, extra_fd, logfd;
	uint8_t *map;
	bool extra_on, log_on;
	struct pair p[PAIRS];
	uint64_t next_action_ms;
	unsigned int turn;
	/* in-process */
	struct uvh_engine *e;
	struct uvh_net_dev *dev;
	struct uvh_devhost *dh;
	pthread_t thr;
	atomic_bool stop;
};

static uint64_t counts[A_COUNT], frames, drops_seen, failures, busy_retries;

#define FAIL(...) do { fprintf(stderr, "soak: FAIL: " __VA_ARGS__); fputc('\n', stderr); \
		       failures++; } while (0)
#define CHECK(call) do { int r_ = (call); if (r_ < 0) { \
	FAIL("%s:%d %s: %s", __FILE__, __LINE__, #call, strerror(-r_)); return -1; } } while (0)

static void *ctl_thread(void *arg)
{
	struct port *pt = arg;

	while (!atomic_load(&pt->stop)) {
		int r = uvh_devhost_handle(pt->dh, 20);

		if (r == -ENOTCONN)
			usleep(1000);
		else if (r < 0)
			uvh_devhost_disconnect(pt->dh);
	}
	return NULL;
}

/* Connect and negotiate; quiet, the caller retries (a port stays busy until
 * the back-end has seen the previous connection go). */
static int session_try(struct port *pt)
{
	int sv[2], r;

	if (pt->path) {
		struct uvh_connect_opts co = { .timeout_ms = 5000 };

		r = uvh_frontend_connect(pt->path, &co, &pt->fe);
		if (r < 0)
			return r;
	} else {
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
			return -errno;
		r = uvh_devhost_connect(pt->dh, sv[1]);	/* takes sv[1] */
		if (r < 0) {
			close(sv[0]);
			return r;
		}
		pt->fe = uvh_frontend_from_fd(sv[0]);
		if (!pt->fe)
			return -ENOMEM;
	}
	uvh_frontend_set_timeout(pt->fe, 10000);
	r = uvh_frontend_negotiate(pt->fe, UVH_BIT(UVH_VIRTIO_F_VERSION_1) |
				   UVH_BIT(UVH_VIRTIO_F_RING_EVENT_IDX) | UVH_BIT(UVH_VIRTIO_NET_F_MQ) |
				   UVH_BIT(UVH_VIRTIO_NET_F_CTRL_VQ),
				   PF(REPLY_ACK) | PF(MQ) | PF(LOG_SHMFD) |
				   PF(CONFIGURE_MEM_SLOTS) | PF(DEVICE_STATE),
				   &pt->features, &pt->pf);
	if (r < 0) {
		uvh_frontend_free(pt->fe);
		pt->fe = NULL;
	}
	return r;
}

/* Ring @i of @pt (pair i / 2): set up and started from @base. */
static int ring_start(struct port *pt, unsigned int i, uint32_t base)
{
	struct pair *p = &pt->p[i / 2];
	struct uvh_vq_driver *d = i & 1 ? &p->tx : &p->rx;
	struct uvh_vring_addr a = {
		.index = i,
		.desc_user_addr = (uint64_t)(uintptr_t)d->desc,
		.avail_user_addr = (uint64_t)(uintptr_t)d->driver_area,
		.used_user_addr = (uint64_t)(uintptr_t)d->device_area,
	};

	CHECK(uvh_frontend_set_vring_num(pt->fe, i, RING));
	CHECK(uvh_frontend_set_vring_addr(pt->fe, &a));
	CHECK(uvh_frontend_set_vring_base(pt->fe, i, base));
	CHECK(uvh_frontend_set_vring_call(pt->fe, i, p->call[i & 1]));
	CHECK(uvh_frontend_set_vring_kick(pt->fe, i, p->kick[i & 1]));
	CHECK(uvh_frontend_set_vring_enable(pt->fe, i, true));
	return 0;
}

static void rx_fill(struct port *pt, unsigned int k)
{
	struct pair *p = &pt->p[k];

	while (uvh_vq_driver_free_slots(&p->rx)) {
		uint64_t gpa = 0x100000 + k * 0x100000 + (p->rx_next++ % RING) * 2048;
		struct uvh_vq_buf b = { gpa, 2048 };

		if (uvh_vq_driver_add(&p->rx, &b, 0, 1, (void *)(uintptr_t)gpa))
			break;
	}
	uvh_vq_driver_publish(&p->rx);
	eventfd_write(p->kick[0], 1);
}

static int session_open(struct port *pt)
{
	struct uvh_mem_region r = { .guest_phys_addr = 0, .memory_size = MEM_SIZE,
				    .userspace_addr = (uint64_t)(uintptr_t)pt->map };

	int ret, tries = 0;

	while ((ret = session_try(pt)) < 0 && ++tries < 250)
		usleep(20000);
	CHECK(ret);
	busy_retries += (uint64_t)tries;
	CHECK(uvh_frontend_set_mem_table(pt->fe, &r, &pt->memfd, 1));
	pt->extra_on = pt->log_on = false;
	for (unsigned int k = 0; k < PAIRS; k++) {
		struct pair *p = &pt->p[k];
		uint64_t gpa = k * 2 * 0x10000;

		uvh_vq_driver_free(&p->rx);
		uvh_vq_driver_free(&p->tx);
		CHECK(uvh_vq_driver_init(&p->rx, RING, false, true, pt->map + gpa, gpa));
		CHECK(uvh_vq_driver_init(&p->tx, RING, false, true, pt->map + gpa + 0x10000,
					 gpa + 0x10000));
		p->seq = p->expect = 0;
		CHECK(ring_start(pt, 2 * k, 0));
		CHECK(ring_start(pt, 2 * k + 1, 0));
		p->running = p->enabled = true;
		rx_fill(pt, k);
	}
	return 0;
}

static int port_init(struct port *pt, const char *path)
{
	memset(pt, 0, sizeof(*pt));
	pt->path = path;
	pt->extra_fd = pt->logfd = -1;
	pt->memfd = memfd_create("soak-guest", MFD_CLOEXEC);
	if (pt->memfd < 0 || ftruncate(pt->memfd, MEM_SIZE))
		return -errno;
	pt->map = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, pt->memfd, 0);
	if (pt->map == MAP_FAILED)
		return -errno;
	pt->extra_fd = memfd_create("soak-extra", MFD_CLOEXEC);
	if (pt->extra_fd < 0 || ftruncate(pt->extra_fd, EXTRA_SIZE))
		return -errno;
	pt->logfd = memfd_create("soak-log", MFD_CLOEXEC);
	if (pt->logfd < 0 || ftruncate(pt->logfd, LOG_BYTES))
		return -errno;
	for (unsigned int k = 0; k < PAIRS; k++)
		for (unsigned int j = 0; j < 2; j++) {
			pt->p[k].kick[j] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
			pt->p[k].call[j] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		}
	if (!path) {
		struct uvh_engine_opts eo = { .name = "soak-inproc", .cpu = -1, .numa_node = -1,
					      .mode = UVH_ENGINE_ADAPTIVE };
		struct uvh_net_opts no = { .type = UVH_NET_PORT_LOOPBACK, .queue_pairs = PAIRS,
					   .name = "inproc" };
		struct uvh_devhost_opts vo = { .name = "inproc", .ops = &uvh_net_devhost_ops };

		pt->e = uvh_engine_create(&eo);
		if (!pt->e || uvh_engine_start(pt->e))
			return -EIO;
		pt->dev = uvh_net_create(&no);
		if (!pt->dev)
			return -errno;
		vo.dev = pt->dev;
		vo.engines = &pt->e;
		vo.nengines = 1;
		pt->dh = uvh_devhost_new(&vo);
		if (!pt->dh || pthread_create(&pt->thr, NULL, ctl_thread, pt))
			return -EIO;
	}
	return session_open(pt);
}

static void port_fini(struct port *pt)
{
	uvh_frontend_free(pt->fe);
	pt->fe = NULL;
	if (pt->dh) {
		atomic_store(&pt->stop, true);
		pthread_join(pt->thr, NULL);
		uvh_devhost_free(pt->dh);
		uvh_net_destroy(pt->dev);
		uvh_engine_destroy(pt->e);
	}
	for (unsigned int k = 0; k < PAIRS; k++) {
		uvh_vq_driver_free(&pt->p[k].rx);
		uvh_vq_driver_free(&pt->p[k].tx);
		for (unsigned int j = 0; j < 2; j++) {
			close(pt->p[k].kick[j]);
			close(pt->p[k].call[j]);
		}
	}
	munmap(pt->map, MEM_SIZE);
	close(pt->memfd);
	close(pt->extra_fd);
	close(pt->logfd);
}

/* ---- traffic -------------------------------------------------------------------- */

static void make_frame(uint8_t *f, uint32_t len, uint32_t seq)
{
	memset(f, 0, UVH_NET_HDR_LEN);
	f += UVH_NET_HDR_LEN;
	memset(f, 0xff, 6);
	memcpy(f + 6, "\x02soak", 6);
	f[12] = 0x88;
	f[13] = 0xb5;
	memcpy(f + 14, &seq, 4);
	for (uint32_t i = 18; i < len; i++)
		f[i] = (uint8_t)(seq + i);
}

static uint32_t frame_len(uint32_t seq)
{
	return 60 + (seq * 131) % 1455;
}

static void traffic(struct port *pt, unsigned int k)
{
	struct pair *p = &pt->p[k];
	void *tok[64];
	uint32_t lens[64], n;
	bool added = false;

	while (uvh_vq_driver_get_used(&p->tx, tok, lens, 64))
		;
	for (unsigned int i = 0; i < 32 && uvh_vq_driver_free_slots(&p->tx); i++) {
		uint64_t gpa = 0x400000 + k * 0x100000 + (p->seq % RING) * 2048;
		uint32_t len = frame_len(p->seq);
		struct uvh_vq_buf b = { gpa, UVH_NET_HDR_LEN + len };

		make_frame(pt->map + gpa, len, p->seq);
		if (uvh_vq_driver_add(&p->tx, &b, 1, 0, NULL))
			break;
		p->seq++;
		added = true;
	}
	if (added) {
		uvh_vq_driver_publish(&p->tx);
		eventfd_write(p->kick[1], 1);
	}
	while ((n = uvh_vq_driver_get_used(&p->rx, tok, lens, 64))) {
		for (uint32_t i = 0; i < n; i++) {
			const uint8_t *f = pt->map + (uintptr_t)tok[i] + UVH_NET_HDR_LEN;
			uint32_t seq;

			if (!lens[i])
				continue;	/* a held chain given back at a stop */
			memcpy(&seq, f + 14, 4);
			if (seq < p->expect || lens[i] != UVH_NET_HDR_LEN + frame_len(seq) ||
			    f[lens[i] - UVH_NET_HDR_LEN - 1] !=
			    (uint8_t)(seq + lens[i] - UVH_NET_HDR_LEN - 1)) {
				FAIL("%s pair %u: frame %u (len %u) where %u was due",
				     pt->path ? pt->path : "inproc", k, seq, lens[i], p->expect);
				p->expect = seq + 1;
				continue;
			}
			drops_seen += seq - p->expect;
			p->expect = seq + 1;
			frames++;
		}
		rx_fill(pt, k);
	}
	if (p->running)
		eventfd_write(p->kick[0], 1);
}

/* ---- churn ------------------------------------------------------------------------ */

static int pair_stop(struct port *pt, unsigned int k, uint32_t *base)
{
	CHECK(uvh_frontend_get_vring_base(pt->fe, 2 * k + 1, &base[1]));
	CHECK(uvh_frontend_get_vring_base(pt->fe, 2 * k, &base[0]));
	pt->p[k].running = false;
	return 0;
}

static int act(struct port *pt, enum action a)
{
	struct pair *p1 = &pt->p[1];
	uint32_t base[2];

	switch (a) {
	case A_ENABLE:
		if (!p1->running)
			return 0;
		p1->enabled = !p1->enabled;
		CHECK(uvh_frontend_set_vring_enable(pt->fe, 2, p1->enabled));
		CHECK(uvh_frontend_set_vring_enable(pt->fe, 3, p1->enabled));
		break;
	case A_REGION: {
		struct uvh_mem_region r = { .guest_phys_addr = EXTRA_GPA, .memory_size = EXTRA_SIZE,
					    .userspace_addr = 0x7e0000000000ull };

		if (pt->extra_on)
			CHECK(uvh_frontend_rem_mem_reg(pt->fe, &r));
		else
			CHECK(uvh_frontend_add_mem_reg(pt->fe, &r, pt->extra_fd));
		pt->extra_on = !pt->extra_on;
		break;
	}
	case A_STOP:
		if (!p1->running)
			return 0;
		CHECK(pair_stop(pt, 1, base));
		for (unsigned int i = 0; i < 5; i++)
			traffic(pt, 0);	/* pair 0 goes on meanwhile */
		CHECK(ring_start(pt, 2, base[0]));
		CHECK(ring_start(pt, 3, base[1]));
		p1->running = p1->enabled = true;
		break;
	case A_LOG:
		if (!pt->log_on) {
			struct uvh_dirty_log_area l = { .mmap_size = LOG_BYTES };

			CHECK(uvh_frontend_set_log_base(pt->fe, &l, pt->logfd));
			CHECK(uvh_frontend_set_features(pt->fe, pt->features | UVH_BIT(UVH_F_LOG_ALL)));
		} else {
			CHECK(uvh_frontend_set_features(pt->fe, pt->features));
		}
		pt->log_on = !pt->log_on;
		break;
	case A_STATE: {
		int pp[2], out;
		uint8_t buf[256];
		ssize_t r;

		if (!(pt->pf & PF(DEVICE_STATE)))
			return 0;
		for (unsigned int k = 0; k < PAIRS; k++)
			if (pt->p[k].running)
				CHECK(pair_stop(pt, k, base));
		if (pipe2(pp, O_CLOEXEC))
			return -1;
		r = uvh_frontend_set_device_state_fd(pt->fe, UVH_DEVICE_STATE_SAVE,
						     UVH_DEVICE_STATE_STOPPED, pp[1], &out);
		close(pp[1]);
		if (!r)
			while ((r = read(pp[0], buf, sizeof(buf))) > 0)
				;
		close(pp[0]);
		if (r)
			FAIL("device state SAVE: %zd", r);
		CHECK(uvh_frontend_check_device_state(pt->fe));
		counts[A_STATE]++;
	}
		/* a reconnect sets everything up again */
		__attribute__((fallthrough));
	case A_RECONNECT:
		uvh_frontend_free(pt->fe);
		pt->fe = NULL;
		counts[A_RECONNECT] += a == A_RECONNECT;
		CHECK(session_open(pt));
		return 0;
	case A_MODE: {
		static const enum uvh_engine_mode modes[] = {
			UVH_ENGINE_POLL, UVH_ENGINE_EVENT, UVH_ENGINE_ADAPTIVE };

		if (!pt->e)
			return 0;
		CHECK(uvh_engine_set_mode(pt->e, modes[counts[A_MODE] % 3]));
		break;
	}
	default:
		return 0;
	}
	counts[a]++;
	return 0;
}

int main(int argc, char **argv)
{
	struct port ports[MAX_PORTS];
	unsigned int nports = 0, seconds = 20;
	bool inproc = false;
	uint64_t end, t;

	signal(SIGPIPE, SIG_IGN);
	if (!getenv("UVH_LOG_LEVEL"))
		uvh_log_set_level(UVH_LOG_WARN);	/* a connect line per reconnect is noise */
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			seconds = (unsigned int)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--inproc"))
			inproc = true;
		else if (nports < MAX_PORTS - 1)
			ports[nports++].path = argv[i];
	}
	for (unsigned int i = 0; i < nports; i++) {
		int r = port_init(&ports[i], ports[i].path);

		if (r < 0) {
			fprintf(stderr, "soak: FAIL: port %s: %s\n", ports[i].path, strerror(-r));
			return 1;
		}
	}
	if (inproc) {
		int r = port_init(&ports[nports], NULL);

		if (r < 0) {
			fprintf(stderr, "soak: FAIL: in-process port: %s\n", strerror(-r));
			return 1;
		}
		nports++;
	}
	end = uvh_now_ms() + seconds * 1000ull;
	while ((t = uvh_now_ms()) < end && failures < 10) {
		for (unsigned int i = 0; i < nports; i++) {
			struct port *pt = &ports[i];

			for (unsigned int k = 0; k < PAIRS; k++)
				if (pt->p[k].running)
					traffic(pt, k);
			if (t >= pt->next_action_ms) {
				/* most often the cheap actions, a reconnect now and then */
				static const enum action plan[] = {
					A_ENABLE, A_REGION, A_STOP, A_MODE, A_ENABLE, A_LOG,
					A_REGION, A_STOP, A_MODE, A_ENABLE, A_LOG, A_STATE,
					A_REGION, A_STOP, A_ENABLE, A_RECONNECT,
				};

				size_t n = sizeof(plan) / sizeof(plan[0]);

				if (act(pt, plan[pt->turn++ % n]) < 0)
					break;
				pt->next_action_ms = t + 20;
			}
		}
		usleep(200);
	}
	for (unsigned int i = 0; i < nports; i++)
		port_fini(&ports[i]);
	printf("soak driver: %u ports (%s), %u s: %" PRIu64 " frames checked, %" PRIu64
	       " dropped (ring disabled/stopped or RX dry)\n", nports,
	       inproc ? "one in-process" : "all uvhost-net", seconds, frames, drops_seen);
	for (unsigned int a = 0; a < A_COUNT; a++)
		printf("  %-22s %" PRIu64 "\n", action_name[a], counts[a]);
	printf("  %-22s %" PRIu64 "\n", "(connects while busy)", busy_retries);
	if (!frames)
		FAIL("no frame went through");
	if (failures)
		printf("soak driver: FAIL (%" PRIu64 " failures)\n", failures);
	return failures ? 1 : 0;
}
