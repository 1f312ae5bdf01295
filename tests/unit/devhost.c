/* SPDX-License-Identifier: MIT */
/*
 * The vhost-user device host: uvhost's own front-end (proto/frontend.h)
 * and driver-side rings on memfd guest memory, against a device host hosting an
 * "echo" test device (each chain's readable bytes copied into its writable
 * part) on one or two engines. Chains flow (split and packed), the memory
 * table is replaced and regions added/removed under traffic (old mappings
 * gone only after the engines moved: /proc/self/maps), GET_VRING_BASE
 * stops the ring and returns its base, fds swap, broken rings signal the
 * err fd, dirty log, inflight area, reconnect, watch mode, and no fd leaks.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util.h"
#include "engine.h"
#include "frontend.h"
#include "inflight.h"
#include "log.h"
#include "t_helpers.h"
#include "devhost.h"
#include "listener.h"

#define PF(n)		UVH_BIT(UVH_PROTOCOL_F_##n)
#define GPA_BASE	0x40000000ull
#define MEM_SIZE	(4u << 20)
#define RING_STRIDE	(64u << 10)	/* one ring area per queue */
#define BUF_OFF		(1u << 20)
#define BUF_STRIDE	256u
#define OUT_LEN		100u
#define IN_LEN		128u
#define QSIZE		128u
#define MAXQ		4u
#define BURST		32u
#define EXTRA_GPA	0x80000000ull
#define EXTRA_SIZE	(1u << 20)

/* ---- the echo device ------------------------------------------------------------ */

struct echo_scratch {
	struct uvh_vq_chain chains[BURST];
	struct iovec iov[BURST * 4];
	struct uvh_vq_used used[BURST];
};

struct echo_dev {
	uint32_t nq;
	uint64_t features;
	struct echo_scratch scr[MAXQ];
	_Atomic uint64_t processed[MAXQ];
	_Atomic int starts, stops, resets, errors, wrong_thread, enables;
	_Atomic uint64_t acked;
};

static uint64_t echo_features(void *dev)
{
	return ((struct echo_dev *)dev)->features;
}

static uint32_t echo_num_queues(void *dev)
{
	return ((struct echo_dev *)dev)->nq;
}

static int echo_set_features(void *dev, uint64_t f)
{
	atomic_store(&((struct echo_dev *)dev)->acked, f);
	return 0;
}

static void check_thread(struct echo_dev *d, struct uvh_devhost_queue *q)
{
	struct uvh_engine_stats st;

	uvh_engine_stats(q->engine, &st);
	if (st.running && !uvh_engine_is_current(q->engine))
		atomic_fetch_add(&d->wrong_thread, 1);
}

static int echo_queue_start(void *dev, struct uvh_devhost_queue *q)
{
	struct echo_dev *d = dev;

	if (q->index >= MAXQ)
		return -EINVAL;
	check_thread(d, q);
	q->priv = &d->scr[q->index];
	atomic_fetch_add(&d->starts, 1);
	return 0;
}

static void echo_queue_stop(void *dev, struct uvh_devhost_queue *q)
{
	struct echo_dev *d = dev;

	check_thread(d, q);
	atomic_fetch_add(&d->stops, 1);
}

static void echo_queue_enable(void *dev, struct uvh_devhost_queue *q, bool on)
{
	(void)on;
	check_thread(dev, q);
	atomic_fetch_add(&((struct echo_dev *)dev)->enables, 1);
}

static void echo_queue_error(void *dev, struct uvh_devhost_queue *q, enum uvh_vq_error err)
{
	(void)q;
	(void)err;
	atomic_fetch_add(&((struct echo_dev *)dev)->errors, 1);
}

static void echo_reset(void *dev)
{
	atomic_fetch_add(&((struct echo_dev *)dev)->resets, 1);
}

/* Copy the readable bytes into the writable part, as far as both go. */
static uint32_t echo_chain(const struct uvh_vq_chain *c)
{
	unsigned int ri = 0, wi = c->nout;
	size_t roff = 0, woff = 0;
	uint32_t done = 0;

	while (ri < c->nout && wi < (unsigned int)c->nout + c->nin) {
		const struct iovec *r = &c->iov[ri], *w = &c->iov[wi];
		size_t n = r->iov_len - roff;

		if (n > w->iov_len - woff)
			n = w->iov_len - woff;
		memcpy((uint8_t *)w->iov_base + woff, (uint8_t *)r->iov_base + roff, n);
		done += (uint32_t)n;
		roff += n;
		woff += n;
		if (roff == r->iov_len) {
			ri++;
			roff = 0;
		}
		if (woff == w->iov_len) {
			wi++;
			woff = 0;
		}
	}
	return done;
}

static unsigned int echo_process(struct uvh_engine_queue *eq)
{
	struct uvh_devhost_queue *q = uvh_devhost_queue_of(eq);
	struct echo_dev *d = uvh_devhost_dev(q->dh);
	struct echo_scratch *s = q->priv;
	int n;

	n = uvh_vq_pop(eq->vq, s->chains, BURST, s->iov, BURST * 4);
	if (n <= 0)
		return 0;
	for (int i = 0; i < n; i++) {
		s->used[i].id = s->chains[i].id;
		s->used[i].ndesc = s->chains[i].ndesc;
		/* started but disabled: consume without side effects */
		s->used[i].len = q->enabled ? echo_chain(&s->chains[i]) : 0;
	}
	uvh_vq_push(eq->vq, s->used, (unsigned int)n);
	atomic_fetch_add(&d->processed[q->index], (uint64_t)n);
	return (unsigned int)n;
}

static const struct uvh_devhost_device_ops echo_ops = {
	.features = echo_features,
	.num_queues = echo_num_queues,
	.set_features = echo_set_features,
	.queue_start = echo_queue_start,
	.queue_stop = echo_queue_stop,
	.process = echo_process,
	.queue_enable = echo_queue_enable,
	.queue_error = echo_queue_error,
	.reset = echo_reset,
};

/* ---- the fixture: engines, dh, a control thread, the front-end -------------------- */

struct guest_q {
	struct uvh_vq_driver drv;
	int kick, call, err;
	uint8_t *area;
	uint64_t sent, done;
};

struct fx {
	struct uvh_engine *eng[2];
	unsigned int neng;
	struct echo_dev dev;
	struct uvh_devhost *dh;
	pthread_t thr;
	bool thr_on;
	_Atomic bool stop;
	_Atomic int disconnects;
	_Atomic int last_err;
	/* guest */
	int memfd;
	uint8_t *map;
	struct uvh_frontend *fe;
	bool packed;
	uint32_t nq;
	struct guest_q gq[MAXQ];
	int fds_before;
};

static void *control_thread(void *arg)
{
	struct fx *f = arg;
	int r;

	while (!atomic_load(&f->stop)) {
		if (!uvh_devhost_connected(f->dh)) {
			usleep(1000);
			continue;
		}
		r = uvh_devhost_handle(f->dh, 20);
		if (r < 0) {
			atomic_store(&f->last_err, r);
			uvh_devhost_disconnect(f->dh);
			atomic_fetch_add(&f->disconnects, 1);
		}
	}
	return NULL;
}

static void fx_engines(struct fx *f, unsigned int neng, enum uvh_engine_mode mode)
{
	for (unsigned int i = 0; i < neng; i++) {
		struct uvh_engine_opts o = {
			.name = i ? "devhost-e1" : "devhost-e0", .cpu = -1, .numa_node = -1,
			.mode = mode,
		};

		f->eng[i] = uvh_engine_create(&o);
		cr_assert(f->eng[i]);
		cr_assert_eq(uvh_engine_start(f->eng[i]), 0);
	}
	f->neng = neng;
}

static void fx_devhost(struct fx *f, uint32_t nq, bool thread)
{
	struct uvh_devhost_opts o = {
		.name = "devhost-test", .ops = &echo_ops, .dev = &f->dev,
		.engines = f->eng, .nengines = f->neng,
	};

	f->dev.nq = nq;
	f->dev.features = UVH_BIT(UVH_VIRTIO_F_VERSION_1) | UVH_BIT(UVH_VIRTIO_F_RING_EVENT_IDX) |
			  UVH_BIT(UVH_VIRTIO_F_RING_INDIRECT_DESC) | UVH_BIT(UVH_VIRTIO_F_RING_PACKED);
	f->dh = uvh_devhost_new(&o);
	cr_assert(f->dh);
	if (thread) {
		cr_assert_eq(pthread_create(&f->thr, NULL, control_thread, f), 0);
		f->thr_on = true;
	}
}

static void fx_init(struct fx *f, unsigned int neng, enum uvh_engine_mode mode, uint32_t nq)
{
	memset(f, 0, sizeof(*f));
	f->fds_before = t_count_fds();
	f->memfd = t_memfd("devhost-guest", MEM_SIZE);
	f->map = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
	cr_assert(f->map != MAP_FAILED);
	fx_engines(f, neng, mode);
	fx_devhost(f, nq, true);
}

static struct uvh_mem_region guest_region(const struct fx *f)
{
	struct uvh_mem_region r = {
		.guest_phys_addr = GPA_BASE, .memory_size = MEM_SIZE,
		.userspace_addr = (uint64_t)(uintptr_t)f->map, .mmap_offset = 0,
	};

	return r;
}

/* A fresh connection: negotiate, memory table. */
static void fe_connect(struct fx *f, uint64_t features)
{
	uint64_t fout, pf;
	struct uvh_mem_region r = guest_region(f);
	int sv[2];

	t_socketpair(sv);
	f->fe = uvh_frontend_from_fd(sv[0]);
	cr_assert(f->fe);
	uvh_frontend_set_timeout(f->fe, 5000);
	cr_assert_eq(uvh_devhost_connect(f->dh, sv[1]), 0);
	cr_assert_eq(uvh_frontend_negotiate(f->fe, features,
					    PF(REPLY_ACK) | PF(CONFIGURE_MEM_SLOTS) | PF(LOG_SHMFD) |
					    PF(INFLIGHT_SHMFD) | PF(STATUS) | PF(RESET_DEVICE) |
					    PF(MQ), &fout, &pf), 0);
	cr_assert(pf & PF(REPLY_ACK));
	cr_assert(pf & PF(CONFIGURE_MEM_SLOTS));
	f->packed = fout & UVH_BIT(UVH_VIRTIO_F_RING_PACKED);
	cr_assert_eq(uvh_frontend_set_mem_table(f->fe, &r, &f->memfd, 1), 0);
}

static void ring_addr(const struct guest_q *g, uint32_t i, struct uvh_vring_addr *a)
{
	memset(a, 0, sizeof(*a));
	a->index = i;
	a->desc_user_addr = (uint64_t)(uintptr_t)g->drv.desc;
	a->avail_user_addr = (uint64_t)(uintptr_t)g->drv.driver_area;
	a->used_user_addr = (uint64_t)(uintptr_t)g->drv.device_area;
}

static uint32_t start_base(bool packed)
{
	return packed ? 0x8000u : 0;
}

/* Set queue @i up on the guest side and start it on the back-end. */
static void fe_queue(struct fx *f, uint32_t i)
{
	struct guest_q *g = &f->gq[i];
	struct uvh_vring_addr a;
	bool ev = uvh_frontend_features(f->fe) & UVH_BIT(UVH_VIRTIO_F_RING_EVENT_IDX);

	g->area = f->map + (size_t)i * RING_STRIDE;
	cr_assert(uvh_vq_driver_area_bytes(QSIZE, f->packed) <= RING_STRIDE);
	cr_assert_eq(uvh_vq_driver_init(&g->drv, QSIZE, f->packed, ev, g->area,
					GPA_BASE + (uint64_t)i * RING_STRIDE), 0);
	g->kick = t_eventfd();
	g->call = t_eventfd();
	g->err = t_eventfd();
	g->sent = g->done = 0;
	ring_addr(g, i, &a);
	cr_assert_eq(uvh_frontend_set_vring_num(f->fe, i, QSIZE), 0);
	cr_assert_eq(uvh_frontend_set_vring_addr(f->fe, &a), 0);
	cr_assert_eq(uvh_frontend_set_vring_base(f->fe, i, start_base(f->packed)), 0);
	cr_assert_eq(uvh_frontend_set_vring_call(f->fe, i, g->call), 0);
	cr_assert_eq(uvh_frontend_set_vring_err(f->fe, i, g->err), 0);
	cr_assert_eq(uvh_frontend_set_vring_kick(f->fe, i, g->kick), 0);
	cr_assert_eq(uvh_frontend_set_vring_enable(f->fe, i, true), 0);
	f->nq = i + 1 > f->nq ? i + 1 : f->nq;
}

static void guest_q_free(struct guest_q *g)
{
	if (!g->area)
		return;
	uvh_vq_driver_free(&g->drv);
	close(g->kick);
	close(g->call);
	close(g->err);
	g->area = NULL;
}

static void fe_close(struct fx *f)
{
	uvh_frontend_free(f->fe);
	f->fe = NULL;
	for (uint32_t i = 0; i < MAXQ; i++)
		guest_q_free(&f->gq[i]);
	f->nq = 0;
}

static void fx_fini(struct fx *f)
{
	if (f->fe)
		fe_close(f);
	atomic_store(&f->stop, true);
	if (f->thr_on)
		pthread_join(f->thr, NULL);
	uvh_devhost_free(f->dh);
	for (unsigned int i = 0; i < f->neng; i++)
		uvh_engine_destroy(f->eng[i]);
	munmap(f->map, MEM_SIZE);
	close(f->memfd);
	cr_assert_eq(atomic_load(&f->dev.wrong_thread), 0, "a device op ran on the wrong thread");
	cr_assert_eq(t_count_fds(), f->fds_before, "fd leak: %d before, %d after",
		     f->fds_before, t_count_fds());
}

/* Buffers: queue i, slot s: out then in, in guest memory at BUF_OFF. */
static uint64_t buf_off(uint32_t q, uint32_t slot)
{
	return BUF_OFF + ((uint64_t)q * QSIZE + slot) * BUF_STRIDE;
}

static uint8_t pattern(uint64_t seq, uint32_t q, unsigned int j)
{
	return (uint8_t)(seq * 7u + q * 13u + j);
}

/* Add @n chains to queue @q (one readable, one writable buffer each). */
static unsigned int send_chains(struct fx *f, uint32_t q, unsigned int n)
{
	struct guest_q *g = &f->gq[q];
	unsigned int k;

	for (k = 0; k < n; k++) {
		uint64_t seq = g->sent;
		uint32_t slot = (uint32_t)(seq % QSIZE);
		uint64_t off = buf_off(q, slot);
		struct uvh_vq_buf b[2] = {
			{ .gpa = GPA_BASE + off, .len = OUT_LEN },
			{ .gpa = GPA_BASE + off + OUT_LEN, .len = IN_LEN },
		};

		if (g->sent - g->done >= QSIZE || uvh_vq_driver_free_slots(&g->drv) < 2)
			break;
		for (unsigned int j = 0; j < OUT_LEN; j++)
			f->map[off + j] = pattern(seq, q, j);
		memset(f->map + off + OUT_LEN, 0, IN_LEN);
		cr_assert_eq(uvh_vq_driver_add(&g->drv, b, 1, 1, (void *)(uintptr_t)(seq + 1)), 0);
		g->sent++;
	}
	uvh_vq_driver_publish(&g->drv);
	if (uvh_vq_driver_need_kick(&g->drv))
		eventfd_write(g->kick, 1);
	return k;
}

/* Collect used chains of queue @q and check every echoed byte. */
static unsigned int reap(struct fx *f, uint32_t q)
{
	struct guest_q *g = &f->gq[q];
	void *tok[BURST];
	uint32_t lens[BURST];
	unsigned int n, total = 0;

	while ((n = uvh_vq_driver_get_used(&g->drv, tok, lens, BURST)) > 0) {
		for (unsigned int i = 0; i < n; i++) {
			uint64_t seq = (uint64_t)(uintptr_t)tok[i] - 1;
			uint64_t off = buf_off(q, (uint32_t)(seq % QSIZE));

			cr_assert_eq(seq, g->done + i, "chains out of order");
			cr_assert_eq(lens[i], OUT_LEN, "echoed %u bytes", lens[i]);
			for (unsigned int j = 0; j < OUT_LEN; j++)
				cr_assert_eq(f->map[off + OUT_LEN + j], pattern(seq, q, j),
					     "queue %u chain %lu byte %u", q,
					     (unsigned long)seq, j);
		}
		g->done += n;
		total += n;
	}
	return total;
}

/* Wait until queue @q has every sent chain back. */
static void wait_done(struct fx *f, uint32_t q, int timeout_ms)
{
	struct guest_q *g = &f->gq[q];

	for (int t = 0; g->done < g->sent; t++) {
		reap(f, q);
		if (g->done >= g->sent)
			break;
		cr_assert(t < timeout_ms * 10, "queue %u: %lu of %lu chains back", q,
			  (unsigned long)g->done, (unsigned long)g->sent);
		usleep(100);
	}
}

static void traffic(struct fx *f, uint32_t q, unsigned int chains)
{
	struct guest_q *g = &f->gq[q];
	uint64_t target = g->sent + chains;

	while (g->done < target) {
		send_chains(f, q, (unsigned int)(target - g->sent < 48 ? target - g->sent : 48));
		wait_done(f, q, 2000);
	}
}

/* Mappings of a memfd named @name in this process. */
static int count_maps(const char *name)
{
	char line[512], needle[128];
	FILE *fp = fopen("/proc/self/maps", "r");
	int n = 0;

	cr_assert(fp);
	snprintf(needle, sizeof(needle), "/memfd:%s ", name);
	while (fgets(line, sizeof(line), fp))
		if (strstr(line, needle))
			n++;
	fclose(fp);
	return n;
}

static bool eventfd_fired(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	eventfd_t v;

	if (poll(&p, 1, timeout_ms) != 1)
		return false;
	return eventfd_read(fd, &v) == 0 && v > 0;
}

static void wait_disconnects(struct fx *f, int n)
{
	for (int t = 0; atomic_load(&f->disconnects) < n; t++) {
		cr_assert(t < 2000, "the device host did not see the disconnect");
		usleep(1000);
	}
}

#define FEAT_SPLIT	(UVH_BIT(UVH_VIRTIO_F_VERSION_1) | UVH_BIT(UVH_VIRTIO_F_RING_EVENT_IDX))
#define FEAT_PACKED	(FEAT_SPLIT | UVH_BIT(UVH_VIRTIO_F_RING_PACKED))

TestSuite(devhost, .timeout = 120);

/* ---- tests -------------------------------------------------------------------------- */

Test(devhost, split_flows_one_engine)
{
	struct fx f;
	struct uvh_devhost_stats st;

	fx_init(&f, 1, UVH_ENGINE_EVENT, 2);
	fe_connect(&f, FEAT_SPLIT);
	fe_queue(&f, 0);
	fe_queue(&f, 1);
	traffic(&f, 0, 1000);
	traffic(&f, 1, 300);
	cr_assert_eq(atomic_load(&f.dev.processed[0]), 1000);
	cr_assert_eq(atomic_load(&f.dev.processed[1]), 300);
	cr_assert(eventfd_fired(f.gq[0].call, 0), "the guest was never called");
	uvh_devhost_stats(f.dh, &st);
	cr_assert_eq(st.queue_starts, 2);
	cr_assert_eq(st.mem_regions, 1);
	cr_assert_eq(st.mem_bytes, MEM_SIZE);
	cr_assert_eq(atomic_load(&f.dev.acked) & FEAT_SPLIT, FEAT_SPLIT);
	fx_fini(&f);
}

Test(devhost, packed_flows_two_engines)
{
	struct fx f;

	fx_init(&f, 2, UVH_ENGINE_ADAPTIVE, 4);
	/* pairs spread: rings 0,1 on engine 0, rings 2,3 on engine 1 */
	cr_assert_eq(uvh_devhost_queue_engine(f.dh, 0), f.eng[0]);
	cr_assert_eq(uvh_devhost_queue_engine(f.dh, 1), f.eng[0]);
	cr_assert_eq(uvh_devhost_queue_engine(f.dh, 2), f.eng[1]);
	cr_assert_eq(uvh_devhost_queue_engine(f.dh, 3), f.eng[1]);
	cr_assert_null(uvh_devhost_queue_engine(f.dh, 4));
	fe_connect(&f, FEAT_PACKED);
	cr_assert(f.packed);
	for (uint32_t i = 0; i < 4; i++)
		fe_queue(&f, i);
	for (int round = 0; round < 20; round++)
		for (uint32_t i = 0; i < 4; i++)
			traffic(&f, i, 50);
	for (uint32_t i = 0; i < 4; i++)
		cr_assert_eq(atomic_load(&f.dev.processed[i]), 1000);
	fx_fini(&f);
}

/* A driver thread keeps two rings busy while the front-end replaces the
 * memory table, adds and removes a region: the poll engines read guest
 * memory all the time, so a mapping unmapped before they moved would
 * fault under ASan. */
struct pump {
	struct fx *f;
	_Atomic bool stop;
	uint64_t rounds;
};

static void *pump_thread(void *arg)
{
	struct pump *p = arg;

	while (!atomic_load(&p->stop)) {
		for (uint32_t q = 0; q < p->f->nq; q++) {
			if (!p->f->gq[q].area)
				continue;
			send_chains(p->f, q, 16);
			reap(p->f, q);
		}
		p->rounds++;
	}
	for (uint32_t q = 0; q < p->f->nq; q++)
		if (p->f->gq[q].area)
			wait_done(p->f, q, 2000);
	return NULL;
}

Test(devhost, memory_replaced_while_running)
{
	struct fx f;
	struct pump p = { .f = &f };
	struct uvh_mem_region r;
	struct uvh_mem_region extra = {
		.guest_phys_addr = EXTRA_GPA, .memory_size = EXTRA_SIZE, .mmap_offset = 0,
	};
	struct uvh_devhost_stats st;
	pthread_t thr;
	int xfd;
	void *xmap;
	uint64_t slots;

	fx_init(&f, 2, UVH_ENGINE_POLL, 4);
	fe_connect(&f, FEAT_SPLIT);
	fe_queue(&f, 0);
	fe_queue(&f, 2);
	/* the pump skips ring 1: never started */
	r = guest_region(&f);
	cr_assert_eq(uvh_frontend_get_max_mem_slots(f.fe, &slots), 0);
	cr_assert_eq(slots, 509);
	/* ours + the device host's */
	cr_assert_eq(count_maps("devhost-guest"), 2);

	xfd = t_memfd("devhost-extra", EXTRA_SIZE);
	xmap = mmap(NULL, EXTRA_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, xfd, 0);
	cr_assert(xmap != MAP_FAILED);
	extra.userspace_addr = (uint64_t)(uintptr_t)xmap;

	cr_assert_eq(pthread_create(&thr, NULL, pump_thread, &p), 0);
	for (int i = 0; i < 40; i++) {
		cr_assert_eq(uvh_frontend_set_mem_table(f.fe, &r, &f.memfd, 1), 0);
		/* the old table is unmapped before the reply: never 3 */
		cr_assert_eq(count_maps("devhost-guest"), 2);
		cr_assert_eq(uvh_frontend_add_mem_reg(f.fe, &extra, xfd), 0);
		cr_assert_eq(count_maps("devhost-extra"), 2);
		cr_assert_eq(uvh_frontend_rem_mem_reg(f.fe, &extra), 0);
		cr_assert_eq(count_maps("devhost-extra"), 1, "removed region still mapped");
		usleep(500);
	}
	atomic_store(&p.stop, true);
	pthread_join(thr, NULL);
	cr_assert(p.rounds > 10);
	cr_assert(f.gq[0].done > 100 && f.gq[2].done > 100);
	uvh_devhost_stats(f.dh, &st);
	cr_assert_eq(st.mem_updates, 1 + 40 * 3);
	cr_assert_eq(st.queue_errors, 0);

	/* a removal of a region never added is refused, nothing leaks */
	cr_assert_eq(uvh_frontend_rem_mem_reg(f.fe, &extra), -EIO);
	munmap(xmap, EXTRA_SIZE);
	close(xfd);
	fe_close(&f);
	wait_disconnects(&f, 1);
	cr_assert_eq(count_maps("devhost-guest"), 1, "guest memory mapped after disconnect");
	fx_fini(&f);
}

/* Chains in an added region flow; the ring lives in the first one. */
Test(devhost, added_region_carries_buffers)
{
	struct fx f;
	struct uvh_mem_region extra = {
		.guest_phys_addr = EXTRA_GPA, .memory_size = EXTRA_SIZE, .mmap_offset = 0,
	};
	struct guest_q *g;
	void *tok[4];
	uint32_t lens[4];
	uint8_t *xmap;
	int xfd;

	fx_init(&f, 1, UVH_ENGINE_EVENT, 2);
	fe_connect(&f, FEAT_SPLIT);
	fe_queue(&f, 0);
	g = &f.gq[0];
	xfd = t_memfd("devhost-extra", EXTRA_SIZE);
	xmap = mmap(NULL, EXTRA_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, xfd, 0);
	cr_assert(xmap != MAP_FAILED);
	extra.userspace_addr = (uint64_t)(uintptr_t)xmap;
	cr_assert_eq(uvh_frontend_add_mem_reg(f.fe, &extra, xfd), 0);
	memset(xmap, 0xab, 64);
	{
		struct uvh_vq_buf b[2] = {
			{ .gpa = EXTRA_GPA, .len = 64 },
			{ .gpa = EXTRA_GPA + 4096, .len = 64 },
		};
		cr_assert_eq(uvh_vq_driver_add(&g->drv, b, 1, 1, (void *)1), 0);
		uvh_vq_driver_publish(&g->drv);
		eventfd_write(g->kick, 1);
	}
	for (int t = 0; uvh_vq_driver_get_used(&g->drv, tok, lens, 4) == 0; t++) {
		cr_assert(t < 20000);
		usleep(100);
	}
	cr_assert_eq(lens[0], 64);
	cr_assert_eq(xmap[4096], 0xab);
	cr_assert_eq(xmap[4096 + 63], 0xab);
	munmap(xmap, EXTRA_SIZE);
	close(xfd);
	fx_fini(&f);
}

static void check_get_base(bool packed)
{
	struct fx f;
	uint32_t base = 0xdead;
	uint64_t before;
	int kick2;

	fx_init(&f, 1, UVH_ENGINE_EVENT, 2);
	fe_connect(&f, packed ? FEAT_PACKED : FEAT_SPLIT);
	fe_queue(&f, 0);
	traffic(&f, 0, 100);
	cr_assert_eq(uvh_frontend_get_vring_base(f.fe, 0, &base), 0);
	if (packed) {
		/* 200 descriptors on 128 slots: slot 72, wrap flipped to 0,
		 * used side the same (nothing in flight) */
		uint32_t slot = f.gq[0].drv.next_slot, w = f.gq[0].drv.avail_wrap;

		cr_assert_eq(slot, 72);
		cr_assert_eq(w, 0);
		cr_assert_eq(base, slot | (w << 15) | (slot << 16) | (w << 31), "base 0x%x", base);
	} else
		cr_assert_eq(base, 100u, "base 0x%x", base);
	cr_assert_eq(atomic_load(&f.dev.stops), 1);
	/* stopped: kicked chains stay where they are */
	before = atomic_load(&f.dev.processed[0]);
	send_chains(&f, 0, 10);
	eventfd_write(f.gq[0].kick, 1);
	usleep(50000);
	cr_assert_eq(reap(&f, 0), 0);
	cr_assert_eq(atomic_load(&f.dev.processed[0]), before);
	/* a stopped ring's size may change now; a started one refuses */
	cr_assert_eq(uvh_frontend_set_vring_base(f.fe, 0, base), 0);
	/* restart from the base with a new kick fd: the waiting chains flow */
	kick2 = t_eventfd();
	cr_assert_eq(uvh_frontend_set_vring_kick(f.fe, 0, kick2), 0);
	close(f.gq[0].kick);
	f.gq[0].kick = kick2;
	wait_done(&f, 0, 2000);
	cr_assert_eq(f.gq[0].done, 110);
	cr_assert_eq(atomic_load(&f.dev.starts), 2);
	cr_assert_eq(uvh_frontend_set_vring_num(f.fe, 0, QSIZE), -EIO);
	fx_fini(&f);
}

Test(devhost, get_vring_base_stops_split)
{
	check_get_base(false);
}

Test(devhost, get_vring_base_stops_packed)
{
	check_get_base(true);
}

Test(devhost, reconnect)
{
	struct fx f;
	int fds;

	fx_init(&f, 2, UVH_ENGINE_EVENT, 4);
	fds = t_count_fds();
	for (int round = 0; round < 3; round++) {
		fe_connect(&f, round == 1 ? FEAT_PACKED : FEAT_SPLIT);
		fe_queue(&f, 0);
		fe_queue(&f, 3);
		traffic(&f, 0, 200);
		traffic(&f, 3, 200);
		fe_close(&f);	/* the front-end goes without a word */
		wait_disconnects(&f, round + 1);
		cr_assert_eq(atomic_load(&f.last_err), -ECONNRESET);
		cr_assert(!uvh_devhost_connected(f.dh));
		cr_assert_eq(atomic_load(&f.dev.resets), round + 1);
		cr_assert_eq(atomic_load(&f.dev.stops), 2 * (round + 1));
		cr_assert_eq(count_maps("devhost-guest"), 1);
		cr_assert_eq(t_count_fds(), fds, "fds left after connection %d", round);
	}
	cr_assert_eq(atomic_load(&f.dev.processed[0]), 600);
	fx_fini(&f);
}

Test(devhost, second_connection_refused)
{
	struct fx f;
	int sv[2], fds;

	fx_init(&f, 1, UVH_ENGINE_EVENT, 2);
	fe_connect(&f, FEAT_SPLIT);
	fds = t_count_fds();
	t_socketpair(sv);
	cr_assert_eq(uvh_devhost_connect(f.dh, sv[1]), -EBUSY);
	close(sv[0]);
	cr_assert_eq(t_count_fds(), fds);
	fx_fini(&f);
}

Test(devhost, start_refused_cases)
{
	struct fx f;
	struct uvh_vring_addr a = { .index = 0 };
	struct uvh_mem_region r;
	int kick, fds, small;

	fx_init(&f, 1, UVH_ENGINE_EVENT, 2);
	{
		/* a kick before any memory table: NACK, the fd is not kept */
		int sv[2];
		uint64_t fo, pf;

		t_socketpair(sv);
		f.fe = uvh_frontend_from_fd(sv[0]);
		cr_assert_eq(uvh_devhost_connect(f.dh, sv[1]), 0);
		cr_assert_eq(uvh_frontend_negotiate(f.fe, FEAT_SPLIT,
						    PF(REPLY_ACK) | PF(CONFIGURE_MEM_SLOTS), &fo, &pf), 0);
	}
	fds = t_count_fds();
	kick = t_eventfd();
	cr_assert_eq(uvh_frontend_set_vring_num(f.fe, 0, QSIZE), 0);
	cr_assert_eq(uvh_frontend_set_vring_kick(f.fe, 0, kick), -EIO);
	r = guest_region(&f);
	cr_assert_eq(uvh_frontend_set_mem_table(f.fe, &r, &f.memfd, 1), 0);
	/* no SET_VRING_ADDR yet */
	cr_assert_eq(uvh_frontend_set_vring_kick(f.fe, 0, kick), -EIO);
	/* ring addresses outside guest memory */
	a.desc_user_addr = 0x1000;
	a.avail_user_addr = 0x2000;
	a.used_user_addr = 0x3000;
	cr_assert_eq(uvh_frontend_set_vring_addr(f.fe, &a), 0);
	cr_assert_eq(uvh_frontend_set_vring_kick(f.fe, 0, kick), -EIO);
	/* a used ring that runs past the end of the region */
	a.desc_user_addr = (uint64_t)(uintptr_t)f.map;
	a.avail_user_addr = (uint64_t)(uintptr_t)f.map + 8192;
	a.used_user_addr = (uint64_t)(uintptr_t)f.map + MEM_SIZE - 16;
	cr_assert_eq(uvh_frontend_set_vring_addr(f.fe, &a), 0);
	cr_assert_eq(uvh_frontend_set_vring_kick(f.fe, 0, kick), -EIO);
	cr_assert_eq(atomic_load(&f.dev.starts), 0);
	/* a memory region bigger than its file: refused, no mapping, no fd kept */
	small = t_memfd("devhost-small", 4096);
	r.memory_size = 8192;
	r.guest_phys_addr = EXTRA_GPA;
	r.userspace_addr = 0x7f0000000000ull;
	cr_assert_eq(uvh_frontend_add_mem_reg(f.fe, &r, small), -EIO);
	cr_assert_eq(uvh_frontend_set_mem_table(f.fe, &r, &small, 1), -EIO);
	cr_assert_eq(count_maps("devhost-small"), 0);
	/* the first table is still in force */
	cr_assert_eq(count_maps("devhost-guest"), 2);
	close(small);
	close(kick);
	cr_assert_eq(t_count_fds(), fds, "an fd of a refused request was kept");
	fx_fini(&f);
}

/* A ring with a descriptor outside guest memory: the err fd fires. */
Test(devhost, broken_ring_signals_err_fd)
{
	struct fx f;
	struct uvh_vq_buf b = { .gpa = 0x10, .len = 64 };

	fx_init(&f, 1, UVH_ENGINE_EVENT, 2);
	fe_connect(&f, FEAT_SPLIT);
	fe_queue(&f, 0);
	fe_queue(&f, 1);
	cr_assert_eq(uvh_vq_driver_add(&f.gq[0].drv, &b, 1, 0, (void *)1), 0);
	uvh_vq_driver_publish(&f.gq[0].drv);
	eventfd_write(f.gq[0].kick, 1);
	cr_assert(eventfd_fired(f.gq[0].err, 2000), "VRING_ERR not signalled");
	for (int t = 0; atomic_load(&f.dev.errors) == 0; t++) {
		cr_assert(t < 2000);
		usleep(1000);
	}
	/* the other ring is unaffected */
	traffic(&f, 1, 50);
	fx_fini(&f);
}

/* SET_VRING_CALL on a running ring: calls go to the new eventfd. */
Test(devhost, call_fd_swapped_while_running)
{
	struct fx f;
	int call2;
	eventfd_t v;

	fx_init(&f, 1, UVH_ENGINE_EVENT, 2);
	fe_connect(&f, UVH_BIT(UVH_VIRTIO_F_VERSION_1));	/* no EVENT_IDX: a call per burst */
	fe_queue(&f, 0);
	traffic(&f, 0, 10);
	cr_assert(eventfd_fired(f.gq[0].call, 0));
	call2 = t_eventfd();
	cr_assert_eq(uvh_frontend_set_vring_call(f.fe, 0, call2), 0);
	traffic(&f, 0, 10);
	cr_assert(eventfd_fired(call2, 1000), "the new call fd was not written");
	cr_assert_eq(eventfd_read(f.gq[0].call, &v), -1, "the old call fd was written");
	close(f.gq[0].call);
	f.gq[0].call = call2;
	fx_fini(&f);
}

/*
 * Started but disabled: chains wait untouched (and the engine sleeps: a
 * waiting ring is no work), then the enable alone, with no kick after it,
 * gets every one of them echoed. A device that consumed them while
 * disabled would lose what a driver publishes right after its front-end
 * sent the enable.
 */
Test(devhost, disabled_ring_waits_for_enable)
{
	struct fx f;
	struct guest_q *g;
	struct uvh_engine_stats st0, st1;

	fx_init(&f, 1, UVH_ENGINE_EVENT, 2);
	fe_connect(&f, FEAT_SPLIT);
	fe_queue(&f, 0);
	g = &f.gq[0];
	cr_assert_eq(atomic_load(&f.dev.enables), 1);	/* fe_queue enabled it */
	cr_assert_eq(uvh_frontend_set_vring_enable(f.fe, 0, false), 0);
	cr_assert_eq(atomic_load(&f.dev.enables), 2);
	uvh_engine_stats(f.eng[0], &st0);
	send_chains(&f, 0, 4);
	eventfd_write(g->kick, 1);	/* kicked anyway: still nothing */
	usleep(50 * 1000);
	cr_assert_eq(reap(&f, 0), 0, "a disabled ring was consumed");
	cr_assert_eq(atomic_load(&f.dev.processed[0]), 0);
	uvh_engine_stats(f.eng[0], &st1);
	/* event mode polls spin_us (10) after a wake-up; spinning on the ring
	 * for the 50 ms would be a million sweeps */
	cr_assert_lt(st1.sweeps - st0.sweeps, 20000, "the engine spun on a disabled ring: %lu sweeps",
		     (unsigned long)(st1.sweeps - st0.sweeps));
	cr_assert_eq(uvh_frontend_set_vring_enable(f.fe, 0, true), 0);
	wait_done(&f, 0, 2000);
	traffic(&f, 0, 20);
	fx_fini(&f);
}

/*
 * A ring started and enabled before it has a call fd (SET_VRING_CALL last,
 * legal) uses buffers whose calls go nowhere: the call fd, when it comes,
 * is written once, so a driver waiting for an interrupt is not left behind.
 */
Test(devhost, call_fd_after_use_gets_a_call)
{
	struct fx f;
	struct guest_q *g;
	struct uvh_vring_addr a;
	struct pollfd pfd;
	int late;

	fx_init(&f, 1, UVH_ENGINE_EVENT, 2);
	fe_connect(&f, FEAT_SPLIT);
	g = &f.gq[0];
	g->area = f.map;
	cr_assert_eq(uvh_vq_driver_init(&g->drv, QSIZE, f.packed, true, g->area, GPA_BASE), 0);
	g->kick = t_eventfd();
	g->call = -1;
	g->err = t_eventfd();
	ring_addr(g, 0, &a);
	cr_assert_eq(uvh_frontend_set_vring_num(f.fe, 0, QSIZE), 0);
	cr_assert_eq(uvh_frontend_set_vring_addr(f.fe, &a), 0);
	cr_assert_eq(uvh_frontend_set_vring_base(f.fe, 0, start_base(f.packed)), 0);
	cr_assert_eq(uvh_frontend_set_vring_enable(f.fe, 0, true), 0);
	cr_assert_eq(uvh_frontend_set_vring_kick(f.fe, 0, g->kick), 0);
	f.nq = 1;
	uvh_vq_driver_enable_cb(&g->drv, true);
	send_chains(&f, 0, 4);
	wait_done(&f, 0, 2000);		/* used, with nobody to call */
	late = t_eventfd();
	g->call = late;
	cr_assert_eq(uvh_frontend_set_vring_call(f.fe, 0, late), 0);
	pfd = (struct pollfd){ .fd = late, .events = POLLIN };
	cr_assert_eq(poll(&pfd, 1, 2000), 1, "no call on the new call fd");
	traffic(&f, 0, 20);
	fx_fini(&f);
}

/*
 * Running rings took their features at start: a SET_FEATURES that changes
 * anything but LOG_ALL under them is refused (the session goes on), while
 * LOG_ALL on and off is taken (QEMU's migration start and end).
 */
Test(devhost, features_fixed_while_rings_run)
{
	struct fx f;
	uint64_t acked;

	fx_init(&f, 1, UVH_ENGINE_EVENT, 2);
	fe_connect(&f, FEAT_SPLIT);
	fe_queue(&f, 0);
	traffic(&f, 0, 10);
	acked = atomic_load(&f.dev.acked);
	cr_assert_neq(uvh_frontend_set_features(f.fe, acked & ~UVH_BIT(UVH_VIRTIO_F_RING_EVENT_IDX)),
		      0);
	cr_assert_eq(atomic_load(&f.dev.acked), acked);
	cr_assert_eq(uvh_frontend_set_features(f.fe, acked | UVH_BIT(UVH_F_LOG_ALL)), 0);
	cr_assert_eq(uvh_frontend_set_features(f.fe, acked), 0);
	traffic(&f, 0, 10);
	fx_fini(&f);
}

/* LOG_ALL: the pages the device wrote are marked; GET_VRING_BASE kicks
 * the log fd. */
Test(devhost, dirty_log)
{
	struct fx f;
	struct uvh_dirty_log_area lg = { .mmap_size = 0, .mmap_offset = 0 };
	size_t log_bytes = (GPA_BASE + MEM_SIZE) / UVH_LOG_PAGE / 8 + 1;
	uint8_t *bm;
	uint64_t page;
	uint32_t base;
	int logfd, logev;

	fx_init(&f, 1, UVH_ENGINE_EVENT, 2);
	fe_connect(&f, FEAT_SPLIT | UVH_BIT(UVH_F_LOG_ALL));
	cr_assert(uvh_frontend_protocol_features(f.fe) & PF(LOG_SHMFD));
	cr_assert(uvh_devhost_features(f.dh) & UVH_BIT(UVH_F_LOG_ALL));
	logfd = t_memfd("devhost-log", log_bytes);
	lg.mmap_size = log_bytes;
	bm = mmap(NULL, log_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, logfd, 0);
	cr_assert(bm != MAP_FAILED);
	cr_assert_eq(uvh_frontend_set_log_base(f.fe, &lg, logfd), 0);
	logev = t_eventfd();
	cr_assert_eq(uvh_frontend_set_log_fd(f.fe, logev), 0);
	fe_queue(&f, 0);
	traffic(&f, 0, 4);
	page = (GPA_BASE + buf_off(0, 0) + OUT_LEN) / UVH_LOG_PAGE;
	cr_assert(bm[page / 8] & (1u << (page % 8)), "written buffer page not logged");
	cr_assert_eq(uvh_frontend_get_vring_base(f.fe, 0, &base), 0);
	cr_assert(eventfd_fired(logev, 0), "log fd not kicked");
	munmap(bm, log_bytes);
	close(logfd);
	close(logev);
	fx_fini(&f);
}

/* GET_INFLIGHT_FD hands out a formatted area; chains in flight at a
 * restart are handed out again. */
Test(devhost, inflight_area)
{
	struct fx f;
	struct uvh_inflight in = { .num_queues = 2, .queue_size = QSIZE }, out;
	int ifd = -1;
	void *area;

	fx_init(&f, 1, UVH_ENGINE_EVENT, 2);
	fe_connect(&f, FEAT_SPLIT);
	cr_assert_eq(uvh_frontend_get_inflight_fd(f.fe, &in, &out, &ifd), 0);
	cr_assert(ifd >= 0);
	cr_assert_eq(out.mmap_size, uvh_inflight_region_size(2, QSIZE, false));
	cr_assert_eq(out.num_queues, 2);
	area = mmap(NULL, out.mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, ifd, 0);
	cr_assert(area != MAP_FAILED);
	cr_assert_eq(uvh_frontend_set_inflight_fd(f.fe, &out, ifd), 0);
	fe_queue(&f, 0);
	traffic(&f, 0, 64);
	{
		struct uvh_inflight_split *r = uvh_inflight_queue(area, 0, QSIZE, false);

		cr_assert_eq(r->version, UVH_INFLIGHT_VERSION, "the ring did not use the area");
		cr_assert_eq(r->used_idx, 64);
		for (unsigned int i = 0; i < QSIZE; i++)
			cr_assert_eq(r->desc[i].inflight, 0);
	}
	/* a bad area: shorter than it claims */
	out.mmap_size = 1ull << 30;
	cr_assert_eq(uvh_frontend_set_inflight_fd(f.fe, &out, ifd), -EIO);
	munmap(area, uvh_inflight_region_size(2, QSIZE, false));
	close(ifd);
	fx_fini(&f);
}

/* Status, config (not offered: -EOPNOTSUPP before sending), queue num,
 * RESET_DEVICE stops the rings and keeps the connection. */
Test(devhost, status_and_reset_device)
{
	struct fx f;
	uint8_t s = 0, buf[8];
	uint64_t n = 0;

	fx_init(&f, 1, UVH_ENGINE_EVENT, 4);
	fe_connect(&f, FEAT_SPLIT);
	cr_assert(uvh_frontend_protocol_features(f.fe) & PF(MQ), "4 rings: MQ offered");
	cr_assert_eq(uvh_frontend_get_queue_num(f.fe, &n), 0);
	cr_assert_eq(n, 4);
	cr_assert_eq(uvh_frontend_set_status(f.fe, 0x0f), 0);
	cr_assert_eq(uvh_frontend_get_status(f.fe, &s), 0);
	cr_assert_eq(s, 0x0f);
	cr_assert_eq(uvh_devhost_status(f.dh), 0x0f);
	cr_assert_eq(uvh_frontend_get_config(f.fe, 0, 8, 0, buf), -EOPNOTSUPP);
	fe_queue(&f, 0);
	traffic(&f, 0, 10);
	cr_assert_eq(uvh_frontend_reset_device(f.fe), 0);
	cr_assert_eq(atomic_load(&f.dev.stops), 1);
	cr_assert_eq(atomic_load(&f.dev.resets), 1);
	cr_assert_eq(uvh_devhost_status(f.dh), 0);
	cr_assert(uvh_devhost_connected(f.dh));
	fx_fini(&f);
}

/* Watch mode: the engine that serves the rings reads the socket too. */
struct watch_ctx {
	_Atomic int gone;
	_Atomic int err;
};

static void on_gone(struct uvh_devhost *v, int err, void *opaque)
{
	struct watch_ctx *w = opaque;

	(void)v;
	atomic_store(&w->err, err);
	atomic_fetch_add(&w->gone, 1);
}

Test(devhost, watched_by_engine)
{
	struct fx f;
	struct watch_ctx w = { 0 };
	int sv[2];
	uint64_t fo, pf;
	struct uvh_mem_region r;

	memset(&f, 0, sizeof(f));
	f.fds_before = t_count_fds();
	f.memfd = t_memfd("devhost-guest", MEM_SIZE);
	f.map = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, f.memfd, 0);
	cr_assert(f.map != MAP_FAILED);
	fx_engines(&f, 1, UVH_ENGINE_EVENT);
	fx_devhost(&f, 2, false);
	r = guest_region(&f);
	for (int round = 0; round < 2; round++) {
		t_socketpair(sv);
		f.fe = uvh_frontend_from_fd(sv[0]);
		cr_assert_eq(uvh_devhost_connect(f.dh, sv[1]), 0);
		cr_assert_eq(uvh_devhost_watch(f.dh, f.eng[0], on_gone, &w), 0);
		cr_assert_eq(uvh_devhost_watch(f.dh, f.eng[0], on_gone, &w), -EBUSY);
		cr_assert_eq(uvh_devhost_handle(f.dh, 0), -EBUSY);
		cr_assert_eq(uvh_frontend_negotiate(f.fe, FEAT_SPLIT, PF(REPLY_ACK), &fo, &pf), 0);
		cr_assert_eq(uvh_frontend_set_mem_table(f.fe, &r, &f.memfd, 1), 0);
		fe_queue(&f, 0);
		fe_queue(&f, 1);
		traffic(&f, 0, 100);
		traffic(&f, 1, 100);
		/* replaced while served from the same engine: applied directly */
		cr_assert_eq(uvh_frontend_set_mem_table(f.fe, &r, &f.memfd, 1), 0);
		traffic(&f, 0, 100);
		fe_close(&f);
		for (int t = 0; atomic_load(&w.gone) < round + 1; t++) {
			cr_assert(t < 2000);
			usleep(1000);
		}
		cr_assert_eq(atomic_load(&w.err), -ECONNRESET);
		cr_assert(!uvh_devhost_connected(f.dh));
	}
	/* disconnect from outside while watched */
	t_socketpair(sv);
	f.fe = uvh_frontend_from_fd(sv[0]);
	cr_assert_eq(uvh_devhost_connect(f.dh, sv[1]), 0);
	cr_assert_eq(uvh_devhost_watch(f.dh, f.eng[0], on_gone, &w), 0);
	cr_assert_eq(uvh_frontend_negotiate(f.fe, FEAT_SPLIT, PF(REPLY_ACK), &fo, &pf), 0);
	uvh_devhost_disconnect(f.dh);
	cr_assert(!uvh_devhost_connected(f.dh));
	/* the front-end sees the connection gone */
	cr_assert(uvh_frontend_set_owner(f.fe) < 0);
	fx_fini(&f);
}

Test(devhost, bad_options)
{
	struct uvh_devhost_opts o = { .ops = &echo_ops };
	struct echo_dev d = { .nq = 0 };
	struct uvh_engine_opts eo = { .cpu = -1, .numa_node = -1 };
	struct uvh_engine *e = uvh_engine_create(&eo);

	cr_assert(e);
	cr_assert_null(uvh_devhost_new(NULL));
	cr_assert_eq(errno, EINVAL);
	cr_assert_null(uvh_devhost_new(&o));	/* no engines */
	o.engines = &e;
	o.nengines = 1;
	o.dev = &d;
	cr_assert_null(uvh_devhost_new(&o));	/* 0 rings */
	d.nq = 300;
	cr_assert_null(uvh_devhost_new(&o));	/* too many */
	cr_assert_eq(errno, EINVAL);
	d.nq = 2;
	{
		struct uvh_devhost *v = uvh_devhost_new(&o);

		cr_assert(v);
		cr_assert_eq(uvh_devhost_handle(v, 0), -ENOTCONN);
		cr_assert_eq(uvh_devhost_watch(v, e, NULL, NULL), -ENOTCONN);
		cr_assert_eq(uvh_devhost_fd(v), -1);
		uvh_devhost_disconnect(v);
		uvh_devhost_free(v);
	}
	uvh_engine_destroy(e);
}

/* ---- IOMMU_PLATFORM: IOVAs, misses over the back-end channel ------------------- */

#define IOVA_BASE	0x900000000ull	/* the guest's IOVA of guest memory offset 0 */

struct miss_rec {
	_Atomic int misses, others;
	_Atomic uint64_t iova;
	_Atomic uint8_t perm;
};

static int fe_on_iotlb(void *opaque, const struct uvh_iotlb *msg)
{
	struct miss_rec *r = opaque;

	if (msg->type == UVH_IOTLB_MISS) {
		atomic_store(&r->iova, msg->iova);
		atomic_store(&r->perm, msg->perm);
		atomic_fetch_add(&r->misses, 1);
	} else {
		atomic_fetch_add(&r->others, 1);
	}
	return 0;
}

/* The front-end's IOTLB update: [off, off+size) of guest memory at its IOVA. */
static void fe_iotlb_update(struct fx *f, uint64_t off, uint64_t size)
{
	struct uvh_iotlb m = {
		.iova = IOVA_BASE + off, .size = size,
		.uaddr = (uint64_t)(uintptr_t)f->map + off,
		.perm = UVH_IOTLB_RW, .type = UVH_IOTLB_UPDATE,
	};

	cr_assert_eq(uvh_frontend_iotlb_msg(f->fe, &m), 0);
}

static void iommu_case(bool packed)
{
	uint64_t feat = (packed ? FEAT_PACKED : FEAT_SPLIT) | UVH_BIT(UVH_VIRTIO_F_IOMMU_PLATFORM);
	static struct fx fxs;
	struct fx *f = &fxs;
	struct uvh_frontend_req_ops ops = { .iotlb_msg = fe_on_iotlb };
	struct miss_rec rec = { 0 };
	struct uvh_mem_region r;
	struct guest_q *g;
	struct uvh_vring_addr a;
	struct uvh_vq_buf b[2];
	uint64_t fout, pf, off = BUF_OFF;
	void *tok;
	uint32_t len;
	int sv[2], t;

	fx_init(f, 1, UVH_ENGINE_EVENT, 1);
	f->dev.features |= UVH_BIT(UVH_VIRTIO_F_IOMMU_PLATFORM);
	r = guest_region(f);
	t_socketpair(sv);
	f->fe = uvh_frontend_from_fd(sv[0]);
	cr_assert(f->fe);
	uvh_frontend_set_timeout(f->fe, 5000);
	cr_assert_eq(uvh_devhost_connect(f->dh, sv[1]), 0);
	cr_assert_eq(uvh_frontend_negotiate(f->fe, feat, PF(REPLY_ACK) | PF(BACKEND_REQ),
					    &fout, &pf), 0);
	cr_assert_eq(fout & feat, feat, "IOMMU_PLATFORM not negotiated");
	cr_assert(pf & PF(BACKEND_REQ));
	f->packed = packed;
	cr_assert_eq(uvh_frontend_set_mem_table(f->fe, &r, &f->memfd, 1), 0);
	cr_assert_eq(uvh_frontend_set_backend_req(f->fe, &ops, &rec), 0);
	/* the ring area is cached; the buffers are not yet */
	fe_iotlb_update(f, 0, RING_STRIDE);

	g = &f->gq[0];
	g->area = f->map;
	cr_assert_eq(uvh_vq_driver_init(&g->drv, QSIZE, packed, true, g->area, IOVA_BASE), 0);
	g->kick = t_eventfd();
	g->call = t_eventfd();
	g->err = t_eventfd();
	memset(&a, 0, sizeof(a));
	a.desc_user_addr = g->drv.desc_gpa;	/* IOVAs, as the ring itself uses */
	a.avail_user_addr = g->drv.driver_gpa;
	a.used_user_addr = g->drv.device_gpa;
	cr_assert_eq(uvh_frontend_set_vring_num(f->fe, 0, QSIZE), 0);
	cr_assert_eq(uvh_frontend_set_vring_addr(f->fe, &a), 0);
	cr_assert_eq(uvh_frontend_set_vring_base(f->fe, 0, start_base(packed)), 0);
	cr_assert_eq(uvh_frontend_set_vring_call(f->fe, 0, g->call), 0);
	cr_assert_eq(uvh_frontend_set_vring_err(f->fe, 0, g->err), 0);
	cr_assert_eq(uvh_frontend_set_vring_kick(f->fe, 0, g->kick), 0);
	cr_assert_eq(uvh_frontend_set_vring_enable(f->fe, 0, true), 0);
	f->nq = 1;

	/* one chain at IOVAs the back-end cannot translate yet */
	for (unsigned int j = 0; j < OUT_LEN; j++)
		f->map[off + j] = pattern(1, 0, j);
	memset(f->map + off + OUT_LEN, 0, IN_LEN);
	b[0] = (struct uvh_vq_buf){ .gpa = IOVA_BASE + off, .len = OUT_LEN };
	b[1] = (struct uvh_vq_buf){ .gpa = IOVA_BASE + off + OUT_LEN, .len = IN_LEN };
	cr_assert_eq(uvh_vq_driver_add(&g->drv, b, 1, 1, g), 0);
	uvh_vq_driver_publish(&g->drv);
	eventfd_write(g->kick, 1);

	/* the miss comes over the back-end channel */
	for (t = 0; atomic_load(&rec.misses) == 0; t++) {
		cr_assert(t < 200, "no IOTLB miss request");
		uvh_frontend_poll_backend(f->fe, 10);
	}
	cr_assert_eq(atomic_load(&rec.iova), IOVA_BASE + off);
	cr_assert_eq(atomic_load(&rec.perm), UVH_IOTLB_RO);
	cr_assert_eq(uvh_vq_driver_get_used(&g->drv, &tok, &len, 1), 0);
	cr_assert_eq(atomic_load(&f->dev.errors), 0);

	/* the answer: the chain flows, echoed byte for byte */
	fe_iotlb_update(f, BUF_OFF, 0x10000);
	for (t = 0; uvh_vq_driver_get_used(&g->drv, &tok, &len, 1) == 0; t++) {
		cr_assert(t < 2000, "the chain never came back after the update");
		uvh_frontend_poll_backend(f->fe, 1);
	}
	cr_assert_eq(tok, g);
	cr_assert_eq(len, OUT_LEN);
	for (unsigned int j = 0; j < OUT_LEN; j++)
		cr_assert_eq(f->map[off + OUT_LEN + j], pattern(1, 0, j), "byte %u", j);
	/* asked once (a ring blocked on a miss does not flood the channel) */
	uvh_frontend_poll_backend(f->fe, 0);
	cr_assert_eq(atomic_load(&rec.misses), 1);
	cr_assert_eq(atomic_load(&rec.others), 0);
	cr_assert_eq(atomic_load(&f->dev.errors), 0);
	fx_fini(f);
}

Test(devhost, iommu_miss_then_update_split) { iommu_case(false); }
Test(devhost, iommu_miss_then_update_packed) { iommu_case(true); }

/* ---- uvh_devhost_serve: the daemon's control loop --------------------------------- */

struct serve_run {
	struct uvh_devhost *dh;
	struct uvh_devhost_serve_opts o;
	int stop;
	int ret;
};

static void *serve_thread(void *arg)
{
	struct serve_run *s = arg;

	s->ret = uvh_devhost_serve(s->dh, &s->o);
	return NULL;
}

/* A front-end on @path that the loop answers (a request round trip). */
static struct uvh_frontend *serve_client(const char *path)
{
	struct uvh_connect_opts co = { .timeout_ms = 5000 };
	struct uvh_frontend *fe;
	uint64_t f = 0;
	int fd = uvh_connect(path, &co);

	cr_assert_geq(fd, 0, "connect: %s", strerror(-fd));
	fe = uvh_frontend_from_fd(fd);
	cr_assert(fe);
	uvh_frontend_set_timeout(fe, 5000);
	cr_assert_eq(uvh_frontend_get_features(fe, &f), 0);
	cr_assert(f & UVH_BIT(UVH_VIRTIO_F_VERSION_1));
	return fe;
}

Test(devhost, serve_loop_takes_front_ends_in_turn)
{
	char dir[] = "/tmp/uvh-serve.XXXXXX", path[64];
	struct uvh_listener_opts lo = { 0 };
	struct uvh_listener *l;
	struct serve_run s = { 0 };
	struct uvh_frontend *fe;
	pthread_t thr;
	struct fx f;
	char b;
	int fds, sv;

	memset(&f, 0, sizeof(f));
	f.fds_before = t_count_fds();
	f.memfd = t_memfd("devhost-guest", MEM_SIZE);
	f.map = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, f.memfd, 0);
	fx_engines(&f, 1, UVH_ENGINE_EVENT);
	fx_devhost(&f, 2, false);	/* no control thread: the serve loop is it */
	cr_assert(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/sock", dir);
	cr_assert_eq(uvh_listener_open(path, &lo, &l), 0);
	s.o.fd = -1;
	cr_assert_eq(uvh_devhost_serve(f.dh, &s.o), -EINVAL, "no source of front-ends");
	fds = t_count_fds();

	s.dh = f.dh;
	s.o = (struct uvh_devhost_serve_opts){
		.listener = l, .path = path, .fd = -1, .stop = &s.stop, .poll_ms = 20,
	};
	cr_assert_eq(pthread_create(&thr, NULL, serve_thread, &s), 0);
	for (int round = 0; round < 3; round++) {
		fe = serve_client(path);
		/* a second front-end while one is served: closed at once */
		struct uvh_connect_opts co = { .timeout_ms = 5000 };

		sv = uvh_connect(path, &co);
		cr_assert_geq(sv, 0);
		cr_assert_leq(read(sv, &b, 1), 0, "a second front-end was not refused");
		close(sv);
		uvh_frontend_free(fe);	/* gone without a word: the next may come */
	}
	__atomic_store_n(&s.stop, 1, __ATOMIC_RELAXED);
	cr_assert_eq(pthread_join(thr, NULL), 0);
	cr_assert_eq(s.ret, 0);
	cr_assert(!uvh_devhost_connected(f.dh));
	cr_assert_eq(atomic_load(&f.dev.resets), 3, "every session was torn down");
	cr_assert_eq(t_count_fds(), fds, "fds left by the serve loop");

	/* --fd: one connection, served until it ends */
	int pair[2];

	t_socketpair(pair);
	s.stop = 0;
	s.o = (struct uvh_devhost_serve_opts){ .fd = pair[1], .stop = &s.stop, .poll_ms = 20 };
	cr_assert_eq(pthread_create(&thr, NULL, serve_thread, &s), 0);
	fe = uvh_frontend_from_fd(pair[0]);
	uint64_t feat = 0;

	uvh_frontend_set_timeout(fe, 5000);
	cr_assert_eq(uvh_frontend_get_features(fe, &feat), 0);
	uvh_frontend_free(fe);
	cr_assert_eq(pthread_join(thr, NULL), 0);
	cr_assert_eq(s.ret, 0);
	cr_assert_eq(t_count_fds(), fds);

	uvh_listener_close(l);
	rmdir(dir);
	fx_fini(&f);
}
