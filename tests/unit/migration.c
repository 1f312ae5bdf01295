/* SPDX-License-Identifier: MIT */
/*
 * Live migration support, through uvhost's own front-end and the
 * virtio-net device behind a uvh_devhost on an engine (loopback port):
 *
 * - dirty log: LOG_ALL turned on while the rings run (as QEMU does at
 *   migration start), then traffic both ways with syncs in between, each
 *   one reading and clearing the log first and copying guest memory next
 *   (QEMU's order). Every page that changed between two copies must be
 *   marked by that sync or a later one; the last sync comes after
 *   GET_VRING_BASE stopped the rings. Split and packed, merged RX buffers
 *   on and off. The SET_LOG_FD eventfd counts the log updates.
 * - out-of-order packed completion at the virtq level: a chain written
 *   after a sync is still marked.
 * - GET_VRING_BASE under traffic: the ring stops, all popped chains are
 *   used (RX ones with 0 bytes), the base is what was consumed, the ring
 *   stays quiet, and restarting from the base loses and repeats nothing.
 * - device state: SAVE from one device, LOAD into another (equal state),
 *   and hostile states (truncated, bad magic, bad pairs, bad checksum,
 *   version, too big) refused by CHECK_DEVICE_STATE with nothing changed.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "util.h"
#include "engine.h"
#include "frontend.h"
#include "memory.h"
#include "message.h"
#include "net.h"
#include "t_helpers.h"
#include "devhost.h"
#include "virtq.h"

#define PF(x)		UVH_BIT(UVH_PROTOCOL_F_##x)
#define MEM_SIZE	(16u << 20)
#define PAGES		(MEM_SIZE / UVH_LOG_PAGE)
#define LOG_BYTES	(PAGES / 8)
#define RING_SIZE	256u
#define RX_BUFS		0x200000ull
#define TX_BUFS		0x400000ull
#define SPARE_LOG	0x800000ull	/* log_guest_addr of the TX ring (split) */

#define BASE_FEATURES (UVH_BIT(UVH_VIRTIO_F_VERSION_1) | UVH_BIT(UVH_VIRTIO_F_RING_EVENT_IDX) | \
		       UVH_BIT(UVH_VIRTIO_F_RING_INDIRECT_DESC) | UVH_BIT(UVH_VIRTIO_NET_F_MAC) | \
		       UVH_BIT(UVH_VIRTIO_NET_F_MTU) | UVH_BIT(UVH_VIRTIO_NET_F_CTRL_VQ))

/* ---- a front-end, a net device behind a device host, guest memory, a log ----------- */

struct mig {
	struct uvh_engine *e;
	struct uvh_net_dev *dev;
	struct uvh_devhost *dh;
	atomic_bool stop;
	pthread_t thr;
	struct uvh_frontend *fe;
	int memfd;
	uint8_t *map;
	uint64_t features;
	bool packed, mrg;
	struct uvh_vq_driver drv[2];
	int kick[2], call[2];
	/* log */
	int logfd, logkick;
	_Atomic uint8_t *log;
};

static void *ctl_thread(void *arg)
{
	struct mig *m = arg;

	while (!atomic_load(&m->stop)) {
		int ret = uvh_devhost_handle(m->dh, 20);

		if (ret < 0 && ret != -ENOTCONN) {
			uvh_devhost_disconnect(m->dh);
			break;
		}
	}
	return NULL;
}

static void mig_open(struct mig *m, const struct uvh_net_opts *no, uint64_t features,
		     uint64_t pf)
{
	struct uvh_engine_opts eo = { .name = "mig", .cpu = -1, .numa_node = -1,
				      .mode = UVH_ENGINE_EVENT };
	struct uvh_mem_region r = { .guest_phys_addr = 0, .memory_size = MEM_SIZE };
	int sv[2];

	memset(m, 0, sizeof(*m));
	m->logfd = m->logkick = -1;
	m->e = uvh_engine_create(&eo);
	cr_assert_not_null(m->e);
	cr_assert_eq(uvh_engine_start(m->e), 0);
	m->dev = uvh_net_create(no);
	cr_assert_not_null(m->dev);
	{
		struct uvh_devhost_opts vo = { .name = "mig", .ops = &uvh_net_devhost_ops, .dev = m->dev,
					   .engines = &m->e, .nengines = 1 };

		m->dh = uvh_devhost_new(&vo);
	}
	cr_assert_not_null(m->dh);
	m->memfd = t_memfd("mig-guest", MEM_SIZE);
	m->map = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, m->memfd, 0);
	cr_assert_neq(m->map, MAP_FAILED);
	t_socketpair(sv);
	m->fe = uvh_frontend_from_fd(sv[0]);
	cr_assert_not_null(m->fe);
	uvh_frontend_set_timeout(m->fe, 10000);
	cr_assert_eq(uvh_devhost_connect(m->dh, sv[1]), 0);
	cr_assert_eq(pthread_create(&m->thr, NULL, ctl_thread, m), 0);
	cr_assert_eq(uvh_frontend_negotiate(m->fe, features, pf, &m->features, NULL), 0);
	m->packed = m->features & UVH_BIT(UVH_VIRTIO_F_RING_PACKED);
	m->mrg = m->features & UVH_BIT(UVH_VIRTIO_NET_F_MRG_RXBUF);
	r.userspace_addr = (uint64_t)(uintptr_t)m->map;
	cr_assert_eq(uvh_frontend_set_mem_table(m->fe, &r, &m->memfd, 1), 0);
}

/* Ring @i: set up and started (SET_VRING_KICK); @log_addr with F_LOG, or 0. */
static void ring_start(struct mig *m, unsigned int i, uint32_t base, bool fresh,
		       uint64_t log_addr)
{
	struct uvh_vring_addr a = { .index = i };

	if (fresh) {
		cr_assert_eq(uvh_vq_driver_init(&m->drv[i], RING_SIZE, m->packed,
						m->features & UVH_BIT(UVH_VIRTIO_F_RING_EVENT_IDX),
						m->map + i * 0x10000, i * 0x10000), 0);
		m->kick[i] = t_eventfd();
		m->call[i] = t_eventfd();
	}
	a.desc_user_addr = (uint64_t)(uintptr_t)m->drv[i].desc;
	a.avail_user_addr = (uint64_t)(uintptr_t)m->drv[i].driver_area;
	a.used_user_addr = (uint64_t)(uintptr_t)m->drv[i].device_area;
	if (log_addr) {
		a.flags = UVH_VRING_F_LOG;
		a.log_guest_addr = log_addr;
	}
	cr_assert_eq(uvh_frontend_set_vring_num(m->fe, i, RING_SIZE), 0);
	cr_assert_eq(uvh_frontend_set_vring_addr(m->fe, &a), 0);
	cr_assert_eq(uvh_frontend_set_vring_base(m->fe, i, base), 0);
	cr_assert_eq(uvh_frontend_set_vring_call(m->fe, i, m->call[i]), 0);
	cr_assert_eq(uvh_frontend_set_vring_kick(m->fe, i, m->kick[i]), 0);
	cr_assert_eq(uvh_frontend_set_vring_enable(m->fe, i, true), 0);
}

static void log_open(struct mig *m)
{
	struct uvh_dirty_log_area l = { .mmap_size = LOG_BYTES, .mmap_offset = 0 };

	m->logfd = t_memfd("mig-log", 4096);
	m->log = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, m->logfd, 0);
	cr_assert_neq((void *)m->log, MAP_FAILED);
	m->logkick = t_eventfd();
	cr_assert_eq(uvh_frontend_set_log_base(m->fe, &l, m->logfd), 0);
	cr_assert_eq(uvh_frontend_set_log_fd(m->fe, m->logkick), 0);
}

static void mig_close(struct mig *m, unsigned int nrings)
{
	uvh_frontend_free(m->fe);
	atomic_store(&m->stop, true);
	pthread_join(m->thr, NULL);
	uvh_devhost_free(m->dh);
	uvh_net_destroy(m->dev);
	uvh_engine_destroy(m->e);
	for (unsigned int i = 0; i < nrings; i++) {
		uvh_vq_driver_free(&m->drv[i]);
		close(m->kick[i]);
		close(m->call[i]);
	}
	munmap(m->map, MEM_SIZE);
	close(m->memfd);
	if (m->log) {
		munmap((void *)m->log, 4096);
		close(m->logfd);
		close(m->logkick);
	}
}

static uint64_t eventfd_take(int fd)
{
	eventfd_t v = 0;

	return eventfd_read(fd, &v) ? 0 : v;
}

/* ---- traffic ------------------------------------------------------------------ */

static void make_frame(uint8_t *f, uint32_t len, uint32_t seq)
{
	static const uint8_t dst[6] = { 2, 0, 0, 0, 0, 0xb }, src[6] = { 2, 0, 0, 0, 0, 0xa };

	memcpy(f, dst, 6);
	memcpy(f + 6, src, 6);
	f[12] = 0x88;
	f[13] = 0xb5;
	memcpy(f + 14, &seq, 4);
	for (uint32_t i = 18; i < len; i++)
		f[i] = (uint8_t)(seq * 7 + i);
}

/* RX buffers: 2 KiB each, or 512 bytes with merged buffers (frames span them). */
static uint32_t rx_buf_len(const struct mig *m)
{
	return m->mrg ? 512 : 2048;
}

static unsigned int rx_fill(struct mig *m, uint32_t *next)
{
	unsigned int n = 0;

	while (uvh_vq_driver_free_slots(&m->drv[0])) {
		uint64_t slot = (*next)++ % RING_SIZE;
		struct uvh_vq_buf b = { RX_BUFS + slot * 2048, rx_buf_len(m) };

		if (uvh_vq_driver_add(&m->drv[0], &b, 0, 1, (void *)(uintptr_t)b.gpa))
			break;
		n++;
	}
	uvh_vq_driver_publish(&m->drv[0]);
	eventfd_write(m->kick[0], 1);
	return n;
}

/* Send @n frames (60..1514 bytes) and wait until the device delivered them. */
static void round_trip(struct mig *m, uint32_t *seq, unsigned int n, uint32_t *rx_next)
{
	time_t deadline = time(NULL) + 20;
	struct uvh_net_stats st;
	unsigned int sent = 0;
	uint64_t target;
	void *tok[64];
	uint32_t lens[64];

	uvh_net_get_stats(m->dev, &st);
	while (sent < n) {
		uint32_t len = 60 + (*seq * 97) % 1455;
		uint64_t gpa = TX_BUFS + (*seq % RING_SIZE) * 2048;
		struct uvh_vq_buf b = { gpa, UVH_NET_HDR_LEN + len };

		if (uvh_vq_driver_add(&m->drv[1], &b, 1, 0, NULL))
			break;	/* ring full */
		memset(m->map + gpa, 0, UVH_NET_HDR_LEN);
		make_frame(m->map + gpa + UVH_NET_HDR_LEN, len, *seq);
		(*seq)++;
		sent++;
	}
	target = st.tx_packets + st.tx_drops + sent;
	uvh_vq_driver_publish(&m->drv[1]);
	eventfd_write(m->kick[1], 1);
	for (;;) {
		unsigned int got;

		cr_assert_lt(time(NULL), deadline, "frames not delivered: %" PRIu64 "/%" PRIu64
			     " tx free %u rx free %u", st.tx_packets + st.tx_drops, target,
			     uvh_vq_driver_free_slots(&m->drv[1]),
			     uvh_vq_driver_free_slots(&m->drv[0]));
		while (uvh_vq_driver_get_used(&m->drv[1], tok, lens, 64))
			;
		got = uvh_vq_driver_get_used(&m->drv[0], tok, lens, 64);
		if (got)
			rx_fill(m, rx_next);
		uvh_net_get_stats(m->dev, &st);
		if (st.tx_packets + st.tx_drops >= target &&
		    uvh_vq_driver_free_slots(&m->drv[1]) == RING_SIZE)
			break;
		if (!got)
			usleep(200);
	}
	cr_assert_eq(st.tx_drops, 0, "RX had room");
}

/* ---- the dirty log check ------------------------------------------------------ */

struct logcheck {
	uint8_t *snap;			/* guest memory at the last sync */
	uint8_t owed[PAGES];		/* changed, not marked yet */
	uint8_t exempt[PAGES];		/* guest-only pages, or logged elsewhere */
	uint64_t pages_changed, marks, syncs;
	uint64_t watch[2], watch_marks[2];	/* pages whose marks are counted */
};

static void exempt_set(struct logcheck *c, uint64_t gpa, uint64_t len, uint8_t v)
{
	for (uint64_t p = gpa / UVH_LOG_PAGE; p <= (gpa + len - 1) / UVH_LOG_PAGE; p++)
		c->exempt[p] = v;
}

static void exempt(struct logcheck *c, uint64_t gpa, uint64_t len)
{
	exempt_set(c, gpa, len, 1);
}

static void unexempt(struct logcheck *c, uint64_t gpa, uint64_t len)
{
	exempt_set(c, gpa, len, 0);
}

/*
 * One sync, QEMU's order: read and clear the log, then copy memory. A page
 * that changed since the last copy is owed a mark by this sync or a later
 * one (the device marks after it writes).
 */
static void log_sync(struct mig *m, struct logcheck *c)
{
	uint8_t bits[LOG_BYTES];
	size_t p;

	for (p = 0; p < LOG_BYTES; p++)
		bits[p] = atomic_exchange(&m->log[p], 0);
	for (p = 0; p < PAGES; p++) {
		const uint8_t *now = m->map + p * UVH_LOG_PAGE;

		if (memcmp(c->snap + p * UVH_LOG_PAGE, now, UVH_LOG_PAGE)) {
			if (!c->exempt[p]) {
				c->owed[p] = 1;
				c->pages_changed++;
			}
			memcpy(c->snap + p * UVH_LOG_PAGE, now, UVH_LOG_PAGE);
		}
		if (bits[p / 8] & (1u << (p % 8))) {
			c->marks++;
			c->owed[p] = 0;
			c->watch_marks[0] += p == c->watch[0];
			c->watch_marks[1] += p == c->watch[1];
		}
	}
	c->syncs++;
}

static unsigned int log_owed(const struct logcheck *c, size_t *first)
{
	unsigned int n = 0;

	for (size_t p = PAGES; p--;)
		if (c->owed[p]) {
			n++;
			*first = p;
		}
	return n;
}

static void dirty_log_case(bool packed, bool mrg)
{
	struct uvh_net_opts no = { .type = UVH_NET_PORT_LOOPBACK };
	uint64_t features = BASE_FEATURES | (packed ? UVH_BIT(UVH_VIRTIO_F_RING_PACKED) : 0) |
			    (mrg ? UVH_BIT(UVH_VIRTIO_NET_F_MRG_RXBUF) : 0);
	struct logcheck *c = calloc(1, sizeof(*c));
	uint32_t seq = 0, rx_next = 0, base;
	uint64_t kicks, kicks_before;
	struct mig m;
	size_t first = 0;
	unsigned int owed, i;
	int fds = t_count_fds();

	cr_assert_not_null(c);
	c->snap = malloc(MEM_SIZE);
	cr_assert_not_null(c->snap);
	mig_open(&m, &no, features, PF(REPLY_ACK) | PF(LOG_SHMFD) | PF(MQ));
	cr_assert_eq(!!(m.features & UVH_BIT(UVH_VIRTIO_NET_F_MRG_RXBUF)), mrg);
	cr_assert(m.features & UVH_BIT(UVH_VIRTIO_F_RING_INDIRECT_DESC));
	log_open(&m);
	/* split: RX logs its used ring where it is (F_LOG from the start), TX
	 * gets F_LOG at a spare address only once it runs, as QEMU does at
	 * migration start; packed rings start with both wrap counters set */
	ring_start(&m, 0, packed ? 0x8000 : 0, true, packed ? 0 : m.drv[0].device_gpa);
	ring_start(&m, 1, packed ? 0x8000 : 0, true, 0);
	rx_fill(&m, &rx_next);

	/* warm-up without LOG_ALL: nothing is logged, no kick */
	for (i = 0; i < 5; i++)
		round_trip(&m, &seq, 40, &rx_next);
	for (i = 0; i < LOG_BYTES; i++)
		cr_assert_eq(m.log[i], 0, "log byte %u marked without LOG_ALL", i);
	cr_assert_eq(eventfd_take(m.logkick), 0);

	/* migration starts: LOG_ALL on running rings; RX chains are held */
	cr_assert_eq(uvh_frontend_set_features(m.fe, m.features | UVH_BIT(UVH_F_LOG_ALL)), 0);
	if (!packed) {
		struct uvh_vring_addr a = {
			.index = 1, .flags = UVH_VRING_F_LOG, .log_guest_addr = SPARE_LOG,
			.desc_user_addr = (uint64_t)(uintptr_t)m.drv[1].desc,
			.avail_user_addr = (uint64_t)(uintptr_t)m.drv[1].driver_area,
			.used_user_addr = (uint64_t)(uintptr_t)m.drv[1].device_area,
		};
		struct uvh_vring_addr moved = a;

		/* a running ring may get F_LOG, never move */
		moved.used_user_addr += 0x1000;
		cr_assert_eq(uvh_frontend_set_vring_addr(m.fe, &moved), -EIO);
		cr_assert_eq(uvh_frontend_set_vring_addr(m.fe, &a), 0);
		/* until then the TX used ring was logged where it is (nothing
		 * else said where): a sync ends that window */
		for (i = 0; i < LOG_BYTES; i++)
			atomic_exchange(&m.log[i], 0);
	}
	memcpy(c->snap, m.map, MEM_SIZE);
	c->watch[0] = SPARE_LOG / UVH_LOG_PAGE;
	c->watch[1] = m.drv[1].device_gpa / UVH_LOG_PAGE;
	/* what only the guest writes: its TX frames, split descriptor tables
	 * and avail rings, packed driver event areas (a packed descriptor
	 * ring is written by both: it stays checked) */
	exempt(c, TX_BUFS, RING_SIZE * 2048);
	for (i = 0; i < 2; i++) {
		if (!packed)
			exempt(c, m.drv[i].desc_gpa, uvh_vring_desc_bytes(RING_SIZE, false));
		exempt(c, m.drv[i].driver_gpa, uvh_vring_driver_bytes(RING_SIZE, packed));
	}
	for (i = 0; i < 2; i++)	/* pages the device writes stay checked */
		unexempt(c, m.drv[i].device_gpa, uvh_vring_device_bytes(RING_SIZE, packed));
	if (!packed) {
		/* the front-end asked for the TX used ring to be logged at
		 * SPARE_LOG instead (F_LOG): not where it is */
		exempt(c, m.drv[1].device_gpa, uvh_vring_device_bytes(RING_SIZE, false));
	} else {
		for (i = 0; i < 2; i++)
			unexempt(c, m.drv[i].desc_gpa, uvh_vring_desc_bytes(RING_SIZE, true));
	}
	for (i = 0; i < 40; i++) {
		round_trip(&m, &seq, 1 + (i * 13) % 64, &rx_next);
		if (i % 3 == 2)
			log_sync(&m, c);
	}
	kicks_before = eventfd_take(m.logkick);
	cr_assert_gt(kicks_before, 0, "SET_LOG_FD eventfd written after log updates");

	/* stop: the log is complete once GET_VRING_BASE answered */
	cr_assert_eq(uvh_frontend_get_vring_base(m.fe, 1, &base), 0);
	cr_assert_eq(uvh_frontend_get_vring_base(m.fe, 0, &base), 0);
	log_sync(&m, c);
	kicks = eventfd_take(m.logkick);
	log_sync(&m, c);
	owed = log_owed(c, &first);
	fprintf(stderr, "dirty log %s%s: %" PRIu64 " syncs, %" PRIu64 " page changes checked, %"
		PRIu64 " marks, %u missed, %" PRIu64 " log kicks\n", packed ? "packed" : "split",
		mrg ? " mrg" : "", c->syncs, c->pages_changed, c->marks, owed,
		kicks_before + kicks);
	cr_assert_eq(owed, 0, "%u changed pages never marked (first: page %zu, gpa 0x%zx)",
		     owed, first, first * UVH_LOG_PAGE);
	cr_assert_gt(c->pages_changed, 40, "traffic changed pages");
	if (!packed) {
		/* F_LOG: the TX used ring is logged at log_guest_addr, only there */
		cr_assert_geq(c->watch_marks[0], c->syncs - 2, "log_guest_addr marked in %" PRIu64
			      " of %" PRIu64 " syncs", c->watch_marks[0], c->syncs);
		cr_assert_eq(c->watch_marks[1], 0, "TX used ring logged where it is, not at "
			     "log_guest_addr");
	}
	mig_close(&m, 2);
	free(c->snap);
	free(c);
	cr_assert_eq(t_count_fds(), fds);
}

Test(migration, dirty_log_split, .timeout = 60) { dirty_log_case(false, false); }
Test(migration, dirty_log_split_mrg, .timeout = 60) { dirty_log_case(false, true); }
Test(migration, dirty_log_packed, .timeout = 60) { dirty_log_case(true, false); }
Test(migration, dirty_log_packed_mrg, .timeout = 60) { dirty_log_case(true, true); }

/* ---- out-of-order completion at the virtq level --------------------------------- */

/*
 * Four RX chains popped, the log synced (cleared), then each chain written
 * and used in reverse order. A device that marks what it writes when it
 * writes it (uvh_dirty_log_mark_iov, as the net device does) gets every
 * page marked; the figure of what the push alone marks is printed.
 */
static void out_of_order_case(bool packed)
{
	const size_t size = 1u << 20;
	struct uvh_mem_region r = { .guest_phys_addr = 0, .memory_size = size,
				    .userspace_addr = 0x10000000 };
	uint8_t bits[(size / UVH_LOG_PAGE) / 8];
	struct uvh_dirty_log log = { .bitmap = (_Atomic uint8_t *)bits, .size = sizeof(bits) };
	unsigned int marked[2] = { 0, 0 };
	int fd = t_memfd("ooo", size), fds;
	struct uvh_memory *mem = uvh_memory_new(0);
	uint8_t *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	cr_assert_not_null(mem);
	cr_assert_neq(map, MAP_FAILED);
	cr_assert_eq(uvh_memory_add_fd(mem, &r, dup(fd)), 0);
	fds = t_count_fds();
	for (int pass = 0; pass < 2; pass++) {
		struct uvh_vq_driver drv;
		struct uvh_vq_config cfg;
		struct uvh_vq vq;
		struct uvh_vq_chain ch[4];
		struct iovec iov[8];
		void *tok[4];
		uint32_t lens[4];

		cr_assert_eq(uvh_vq_driver_init(&drv, 16, packed, false, map, 0), 0);
		uvh_vq_driver_config(&drv, &cfg);
		cr_assert_eq(uvh_vq_init(&vq, &cfg, mem), 0);
		for (unsigned int i = 0; i < 4; i++) {
			struct uvh_vq_buf b = { 0x10000 + i * 0x2000, 1500 };

			void *t = (void *)(uintptr_t)(i + 1);

			cr_assert_eq(uvh_vq_driver_add(&drv, &b, 0, 1, t), 0);
		}
		uvh_vq_driver_publish(&drv);
		uvh_vq_set_log(&vq, &log);
		cr_assert_eq(uvh_vq_pop(&vq, ch, 4, iov, 8), 4);
		memset(bits, 0, sizeof(bits));	/* the front-end syncs here */
		for (int i = 3; i >= 0; i--) {
			struct uvh_vq_used u = { ch[i].id, ch[i].ndesc, 100 };

			memset(ch[i].iov[ch[i].nout].iov_base, 0xa0 + i, 100);
			if (pass == 1)
				uvh_dirty_log_mark_iov(&log, mem, ch[i].iov + ch[i].nout, ch[i].nin,
						       100);
			uvh_vq_push(&vq, &u, 1);
		}
		cr_assert_eq(uvh_vq_driver_get_used(&drv, tok, lens, 4), 4);
		cr_assert_eq((uintptr_t)tok[0], 4, "used in reverse order");
		for (unsigned int i = 0; i < 4; i++) {
			uint64_t page = (0x10000 + i * 0x2000) / UVH_LOG_PAGE;

			marked[pass] += !!(bits[page / 8] & (1u << (page % 8)));
		}
		uvh_vq_driver_free(&drv);
	}
	fprintf(stderr, "out of order %s: written after a sync, 4 pages: push alone marks %u, "
		"with the device's write-time marks %u\n", packed ? "packed" : "split",
		marked[0], marked[1]);
	cr_assert_eq(marked[1], 4);
	if (!packed)
		cr_assert_eq(marked[0], 4, "split push finds the descriptors again");
	cr_assert_eq(t_count_fds(), fds);
	uvh_memory_release(mem, NULL);
	munmap(map, size);
	close(fd);
}

Test(migration, out_of_order_split) { out_of_order_case(false); }
Test(migration, out_of_order_packed) { out_of_order_case(true); }

/* ---- GET_VRING_BASE: stop and drain under traffic ---------------------------------- */

static uint32_t used_view(const struct mig *m, unsigned int i)
{
	/* split: the used index as the guest sees it */
	struct uvh_vring_used *u = m->drv[i].device_area;

	return atomic_load((_Atomic uint16_t *)&u->idx);
}

/* The guest under traffic: sends, reaps, refills and checks RX order. */
struct guest_run {
	struct mig *m;
	atomic_bool stop;
	uint32_t sent, next_rx, expect, dropped_seen, zero, rx_next;
};

static void guest_rx(struct guest_run *g)
{
	void *tok[64];
	uint32_t lens[64], n;

	while ((n = uvh_vq_driver_get_used(&g->m->drv[0], tok, lens, 64))) {
		for (uint32_t k = 0; k < n; k++) {
			uint32_t s;

			if (!lens[k]) {
				g->zero++;
				continue;
			}
			memcpy(&s, g->m->map + (uintptr_t)tok[k] + UVH_NET_HDR_LEN + 14, 4);
			cr_assert_geq(s, g->expect, "frame %u again or out of order (%u due)", s,
				      g->expect);
			g->dropped_seen += s - g->expect;
			g->expect = s + 1;
		}
	}
	rx_fill(g->m, &g->rx_next);
}

static bool guest_tx(struct guest_run *g, unsigned int max)
{
	void *tok[64];
	uint32_t lens[64];
	bool added = false;

	while (uvh_vq_driver_get_used(&g->m->drv[1], tok, lens, 64))
		;
	for (unsigned int i = 0; i < max; i++) {
		uint32_t len = 60 + (g->sent * 97) % 1455;
		uint64_t gpa = TX_BUFS + (g->sent % RING_SIZE) * 2048;
		struct uvh_vq_buf b = { gpa, UVH_NET_HDR_LEN + len };

		if (!uvh_vq_driver_free_slots(&g->m->drv[1]))
			break;
		memset(g->m->map + gpa, 0, UVH_NET_HDR_LEN);
		make_frame(g->m->map + gpa + UVH_NET_HDR_LEN, len, g->sent);
		cr_assert_eq(uvh_vq_driver_add(&g->m->drv[1], &b, 1, 0, NULL), 0);
		g->sent++;
		added = true;
	}
	if (added) {
		uvh_vq_driver_publish(&g->m->drv[1]);
		eventfd_write(g->m->kick[1], 1);
	}
	return added;
}

static void *guest_thread(void *arg)
{
	struct guest_run *g = arg;

	while (!atomic_load(&g->stop)) {
		guest_tx(g, 32);
		guest_rx(g);
	}
	return NULL;
}

static void stop_drain_case(bool packed)
{
	struct uvh_net_opts no = { .type = UVH_NET_PORT_LOOPBACK };
	uint64_t features = BASE_FEATURES | (packed ? UVH_BIT(UVH_VIRTIO_F_RING_PACKED) : 0);
	uint32_t tx_base, rx_base, consumed;
	size_t dbytes = uvh_vring_device_bytes(RING_SIZE, packed);
	uint8_t *before = malloc(dbytes), *after = malloc(dbytes);
	struct guest_run g = { 0 };
	struct uvh_net_stats st;
	time_t deadline;
	pthread_t thr;
	struct mig m;
	int fds = t_count_fds();

	cr_assert(before && after);
	mig_open(&m, &no, features, PF(REPLY_ACK) | PF(MQ));
	g.m = &m;
	ring_start(&m, 0, packed ? 0x8000 : 0, true, 0);
	ring_start(&m, 1, packed ? 0x8000 : 0, true, 0);
	rx_fill(&m, &g.rx_next);
	cr_assert_eq(pthread_create(&thr, NULL, guest_thread, &g), 0);
	usleep(100000);		/* traffic flowing */

	cr_assert_eq(uvh_frontend_get_vring_base(m.fe, 1, &tx_base), 0);
	/* stopped: every chain taken was used, nothing more gets written */
	if (packed) {
		cr_assert_eq(tx_base & 0xffff, tx_base >> 16, "avail 0x%x used 0x%x: chains held",
			     tx_base & 0xffff, tx_base >> 16);
	} else {
		cr_assert_eq(used_view(&m, 1), tx_base, "used idx %u, base %u", used_view(&m, 1),
			     tx_base);
	}
	/* the device area (used ring, device event) is ours alone to write */
	memcpy(before, m.drv[1].device_area, dbytes);
	usleep(50000);		/* the guest goes on sending and kicking */
	memcpy(after, m.drv[1].device_area, dbytes);
	cr_assert_arr_eq(before, after, dbytes, "a stopped ring was written");
	cr_assert_eq(uvh_frontend_get_vring_base(m.fe, 0, &rx_base), 0);
	atomic_store(&g.stop, true);
	pthread_join(thr, NULL);
	if (packed)
		cr_assert_eq(rx_base & 0xffff, rx_base >> 16, "RX chains held after the stop");
	else
		cr_assert_eq(used_view(&m, 0), rx_base, "RX used idx = base");
	uvh_net_get_stats(m.dev, &st);
	consumed = (uint32_t)(st.tx_packets + st.tx_drops);
	guest_rx(&g);
	fprintf(stderr, "stop and drain %s: stopped under traffic after %u frames (%u sent), "
		"TX base 0x%x, RX base 0x%x, %u held RX chains given back empty\n",
		packed ? "packed" : "split", consumed, g.sent, tx_base, rx_base, g.zero);
	/* the base is the next chain the device would take: all it consumed
	 * (packed: slot and wrap counter, which starts at 1) */
	if (!packed)
		cr_assert_eq((uint16_t)consumed, (uint16_t)tx_base, "base = frames consumed");
	else
		cr_assert_eq(consumed % (2 * RING_SIZE),
			     (tx_base & 0x7fff) + ((tx_base >> 15) & 1 ? 0 : RING_SIZE),
			     "base 0x%x, %u consumed", tx_base, consumed);
	/* frames dropped at the tail (RX dry) show as a gap only later */
	cr_assert_leq(g.expect, consumed, "%u frames back, %u consumed", g.expect, consumed);

	/* the destination's view: restart from the bases, nothing lost or repeated */
	ring_start(&m, 0, rx_base, false, 0);
	ring_start(&m, 1, tx_base, false, 0);
	deadline = time(NULL) + 20;
	while (g.expect < g.sent) {
		cr_assert_lt(time(NULL), deadline, "%u of %u frames back", g.expect, g.sent);
		guest_rx(&g);
		if (g.expect < g.sent)
			usleep(500);
		eventfd_write(m.kick[1], 1);
	}
	uvh_net_get_stats(m.dev, &st);
	cr_assert_eq(st.tx_packets + st.tx_drops, g.sent, "each frame consumed once");
	cr_assert_eq(g.dropped_seen, st.tx_drops);
	fprintf(stderr, "stop and drain %s: all %u frames back in order after the restart "
		"(%" PRIu64 " dropped for want of RX room)\n", packed ? "packed" : "split", g.sent,
		st.tx_drops);
	mig_close(&m, 2);
	free(before);
	free(after);
	cr_assert_eq(t_count_fds(), fds);
}

Test(migration, stop_drain_split, .timeout = 60) { stop_drain_case(false); }
Test(migration, stop_drain_packed, .timeout = 60) { stop_drain_case(true); }

/* ---- device state ----------------------------------------------------------------- */

/* CRC-32 (IEEE), written again here so the test does not trust the device's. */
static uint32_t t_crc32(const uint8_t *p, size_t n)
{
	uint32_t c = ~0u;

	for (size_t i = 0; i < n; i++) {
		c ^= p[i];
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0xedb88320u : c >> 1;
	}
	return ~c;
}

/* SAVE through the front-end: read the pipe to EOF, then CHECK. */
static size_t state_save(struct mig *m, uint8_t *buf, size_t max)
{
	int p[2], out = -2;
	size_t len = 0;
	ssize_t r;

	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	cr_assert_eq(uvh_frontend_set_device_state_fd(m->fe, UVH_DEVICE_STATE_SAVE,
						      UVH_DEVICE_STATE_STOPPED, p[1], &out), 0);
	cr_assert_eq(out, -1, "the back-end uses our pipe");
	close(p[1]);
	while ((r = read(p[0], buf + len, max - len)) > 0)
		len += (size_t)r;
	cr_assert_eq(r, 0, "EOF after the state");
	close(p[0]);
	cr_assert_eq(uvh_frontend_check_device_state(m->fe), 0);
	return len;
}

/* LOAD through the front-end: write @len bytes, close, CHECK's verdict. */
static int state_load(struct mig *m, const uint8_t *buf, size_t len)
{
	int p[2], out = -2;

	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	cr_assert_eq(uvh_frontend_set_device_state_fd(m->fe, UVH_DEVICE_STATE_LOAD,
						      UVH_DEVICE_STATE_STOPPED, p[0], &out), 0);
	cr_assert_eq(out, -1);
	close(p[0]);
	cr_assert_eq(write(p[1], buf, len), (ssize_t)len);	/* < a pipe's capacity */
	close(p[1]);
	return uvh_frontend_check_device_state(m->fe);
}

static void put16le(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void fix_crc(uint8_t *s)
{
	uint32_t c = t_crc32(s, 44);

	memcpy(s + 44, &c, 4);	/* little-endian host */
}

Test(migration, device_state_save_load_and_hostile, .timeout = 60)
{
	/* CONFIG offered: the config spaces are compared through GET_CONFIG */
	struct uvh_net_opts na = { .type = UVH_NET_PORT_LOOPBACK, .queue_pairs = 2,
				   .mac = { 2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee }, .offer_config = true };
	struct uvh_net_opts nb = { .type = UVH_NET_PORT_LOOPBACK, .queue_pairs = 2,
				   .mac = { 2, 1, 1, 1, 1, 1 }, .offer_config = true };
	uint64_t features = BASE_FEATURES | UVH_BIT(UVH_VIRTIO_NET_F_MRG_RXBUF) |
			    UVH_BIT(UVH_VIRTIO_NET_F_MQ);
	uint64_t pf = PF(REPLY_ACK) | PF(MQ) | PF(NET_MTU) | PF(DEVICE_STATE) | PF(CONFIG);
	uint8_t saved[8192], check[64], check2[64], bad[8192], cfg_a[12], cfg_b[12];
	struct mig a, b;
	size_t len;
	int fds = t_count_fds(), ret;
	struct {
		const char *what;
		size_t off, len;	/* byte to change (len: bytes to send) */
		uint8_t xor;
		bool crc;
	} hostile[] = {
		{ "truncated", 0, 30, 0, false },
		{ "empty", 0, 0, 0, false },
		{ "wrong magic", 0, 48, 0x01, true },
		{ "bad checksum", 26, 48, 0x10, false },
		{ "version 2", 4, 48, 0x03, true },
		{ "length field", 6, 48, 0x40, true },
		{ "active pairs 3 of 2", 18, 48, 0, true },
		{ "max pairs 200", 16, 48, 0, true },
		{ "zero pairs", 18, 48, 0, true },
		{ "multicast MAC", 20, 48, 0x01, true },
		{ "MTU 20", 26, 48, 0, true },
		{ "unknown feature", 15, 48, 0x80, true },
		{ "reserved byte", 35, 48, 0x01, true },
		{ "status bits", 29, 48, 0x80, true },
		{ "trailing bytes", 0, 49, 0, true },
		{ "8 KiB", 0, 8192, 0, false },
	};

	signal(SIGPIPE, SIG_IGN);
	mig_open(&a, &na, features, pf);
	cr_assert(uvh_frontend_protocol_features(a.fe) & PF(DEVICE_STATE), "DEVICE_STATE offered");
	cr_assert_eq(uvh_frontend_net_set_mtu(a.fe, 9000), 0);
	len = state_save(&a, saved, sizeof(saved));
	cr_assert_eq(len, UVH_NET_STATE_SIZE);
	cr_assert_eq(saved[0] | saved[1] << 8 | saved[2] << 16 | (uint32_t)saved[3] << 24,
		     UVH_NET_STATE_MAGIC);
	{
		uint32_t c;

		memcpy(&c, saved + 44, 4);
		cr_assert_eq(c, t_crc32(saved, 44), "checksum");
	}
	cr_assert_arr_eq(saved + 20, na.mac, 6);
	cr_assert_eq(saved[26] | saved[27] << 8, 9000);

	/* into another device: the same state */
	mig_open(&b, &nb, features, pf);
	cr_assert_eq(uvh_net_state_save(b.dev, check, sizeof(check)), UVH_NET_STATE_SIZE);
	cr_assert_arr_neq(check, saved, UVH_NET_STATE_SIZE);
	cr_assert_eq(state_load(&b, saved, len), 0);
	cr_assert_eq(uvh_net_state_save(b.dev, check, sizeof(check)), UVH_NET_STATE_SIZE);
	cr_assert_arr_eq(check, saved, UVH_NET_STATE_SIZE, "state equal after the load");
	cr_assert_eq(uvh_frontend_get_config(a.fe, 0, 12, 0, cfg_a), 0);
	cr_assert_eq(uvh_frontend_get_config(b.fe, 0, 12, 0, cfg_b), 0);
	cr_assert_arr_eq(cfg_a, cfg_b, 12, "config space equal (MAC, status, pairs, MTU)");

	/* hostile states: refused at CHECK, the device untouched, no fd left */
	for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
		memset(bad, 0, sizeof(bad));
		memcpy(bad, saved, len);
		bad[hostile[i].off] ^= hostile[i].xor;
		if (!strcmp(hostile[i].what, "active pairs 3 of 2"))
			put16le(bad + 18, 3);
		if (!strcmp(hostile[i].what, "max pairs 200"))
			put16le(bad + 16, 200);
		if (!strcmp(hostile[i].what, "zero pairs"))
			put16le(bad + 18, 0);
		if (!strcmp(hostile[i].what, "MTU 20"))
			put16le(bad + 26, 20);
		if (hostile[i].crc)
			fix_crc(bad);
		ret = state_load(&b, bad, hostile[i].len);
		cr_assert_eq(ret, -EIO, "%s: CHECK_DEVICE_STATE said %d", hostile[i].what, ret);
		cr_assert_eq(uvh_net_state_save(b.dev, check2, sizeof(check2)), UVH_NET_STATE_SIZE);
		cr_assert_arr_eq(check2, saved, UVH_NET_STATE_SIZE, "%s changed the device",
				 hostile[i].what);
	}
	fprintf(stderr, "device state: %zu-byte state saved and loaded; %zu hostile states "
		"refused, device unchanged\n", len, sizeof(hostile) / sizeof(hostile[0]));

	/* not while a ring runs; CHECK with no transfer fails */
	ring_start(&b, 0, 0, true, 0);
	{
		int p[2], out;

		cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
		cr_assert_eq(uvh_frontend_set_device_state_fd(b.fe, UVH_DEVICE_STATE_SAVE,
							      UVH_DEVICE_STATE_STOPPED, p[1], &out),
			     -EIO);
		close(p[0]);
		close(p[1]);
	}
	cr_assert_eq(uvh_frontend_check_device_state(b.fe), -EIO);
	cr_assert_eq(uvh_frontend_set_device_state_fd(b.fe, UVH_DEVICE_STATE_SAVE, 1, 0, &ret),
		     -EINVAL, "phase checked before sending");
	mig_close(&b, 1);
	mig_close(&a, 0);
	cr_assert_eq(t_count_fds(), fds);
}

/* A reader that never reads: CHECK answers within the transfer's timeout
 * only if the back-end gives up; a disconnect cancels it at once. */
Test(migration, device_state_abandoned_transfer, .timeout = 30)
{
	struct uvh_net_opts no = { .type = UVH_NET_PORT_LOOPBACK };
	struct mig m;
	int p[2], out, fds = t_count_fds();
	struct timespec t0, t1;

	mig_open(&m, &no, BASE_FEATURES, PF(REPLY_ACK) | PF(DEVICE_STATE));
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	/* LOAD from a pipe nobody writes or closes: the transfer waits */
	cr_assert_eq(uvh_frontend_set_device_state_fd(m.fe, UVH_DEVICE_STATE_LOAD,
						      UVH_DEVICE_STATE_STOPPED, p[0], &out), 0);
	close(p[0]);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	mig_close(&m, 0);	/* disconnect: the transfer is cancelled */
	clock_gettime(CLOCK_MONOTONIC, &t1);
	cr_assert_lt(t1.tv_sec - t0.tv_sec, 3, "disconnect waited for the transfer");
	close(p[1]);
	cr_assert_eq(t_count_fds(), fds);
}

/* ---- indirect chains --------------------------------------------------------------- */

/*
 * One RX chain through an indirect table of two writable buffers on
 * different pages, written after a sync: the push finds them through the
 * table (split and packed), and so does the write-time mark.
 */
static void indirect_case(bool packed)
{
	const size_t size = 1u << 20;
	struct uvh_mem_region r = { .guest_phys_addr = 0, .memory_size = size,
				    .userspace_addr = 0x20000000 };
	uint8_t bits[(size / UVH_LOG_PAGE) / 8];
	struct uvh_dirty_log log = { .bitmap = (_Atomic uint8_t *)bits, .size = sizeof(bits) };
	const uint64_t table = 0x8000, buf[2] = { 0x20000, 0x31000 };
	int fd = t_memfd("indirect", size);
	struct uvh_memory *mem = uvh_memory_new(0);
	uint8_t *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	struct uvh_vq_driver drv;
	struct uvh_vq_config cfg;
	struct uvh_vq vq;
	struct uvh_vq_chain ch;
	struct iovec iov[4];

	cr_assert_not_null(mem);
	cr_assert_neq(map, MAP_FAILED);
	cr_assert_eq(uvh_memory_add_fd(mem, &r, dup(fd)), 0);
	cr_assert_eq(uvh_vq_driver_init(&drv, 16, packed, false, map, 0), 0);
	uvh_vq_driver_config(&drv, &cfg);
	cfg.indirect = true;
	cr_assert_eq(uvh_vq_init(&vq, &cfg, mem), 0);
	/* the guest's side, by hand: the driver API adds no indirect chains */
	if (!packed) {
		struct uvh_vring_desc *t = (void *)(map + table), *d = drv.desc;
		struct uvh_vring_avail *a = drv.driver_area;

		t[0] = (struct uvh_vring_desc){ buf[0], 1000, UVH_VRING_DESC_F_WRITE |
						UVH_VRING_DESC_F_NEXT, 1 };
		t[1] = (struct uvh_vring_desc){ buf[1], 1000, UVH_VRING_DESC_F_WRITE, 0 };
		d[0] = (struct uvh_vring_desc){ table, 32, UVH_VRING_DESC_F_INDIRECT, 0 };
		a->ring[0] = 0;
		atomic_store((_Atomic uint16_t *)&a->idx, 1);
	} else {
		struct uvh_vring_packed_desc *t = (void *)(map + table), *d = drv.desc;

		t[0] = (struct uvh_vring_packed_desc){ buf[0], 1000, 0, UVH_VRING_DESC_F_WRITE };
		t[1] = (struct uvh_vring_packed_desc){ buf[1], 1000, 0, UVH_VRING_DESC_F_WRITE };
		d[0] = (struct uvh_vring_packed_desc){ table, 32, 0, 0 };
		atomic_store((_Atomic uint16_t *)&d[0].flags,
			     UVH_VRING_DESC_F_INDIRECT | UVH_VRING_PACKED_DESC_F_AVAIL);
	}
	uvh_vq_set_log(&vq, &log);
	cr_assert_eq(uvh_vq_pop(&vq, &ch, 1, iov, 4), 1, "error %d", vq.error);
	cr_assert_eq(ch.nin, 2);
	memset(bits, 0, sizeof(bits));	/* sync */
	for (int pass = 0; pass < 2; pass++) {
		memset(ch.iov[0].iov_base, 0x5a, 1000);
		memset(ch.iov[1].iov_base, 0x5b, 500);
		if (pass == 0) {
			struct uvh_vq_used u = { ch.id, ch.ndesc, 1500 };

			uvh_vq_push(&vq, &u, 1);	/* in order: the push re-walks */
		} else {
			uvh_dirty_log_mark_iov(&log, mem, ch.iov, ch.nin, 1500);
		}
		for (int i = 0; i < 2; i++) {
			uint64_t page = buf[i] / UVH_LOG_PAGE;

			cr_assert(bits[page / 8] & (1u << (page % 8)), "%s pass %d: page 0x%" PRIx64
				  " not marked", packed ? "packed" : "split", pass, buf[i]);
		}
		memset(bits, 0, sizeof(bits));
	}
	uvh_vq_driver_free(&drv);
	uvh_memory_release(mem, NULL);
	munmap(map, size);
	close(fd);
}

Test(migration, indirect_split) { indirect_case(false); }
Test(migration, indirect_packed) { indirect_case(true); }
