/* SPDX-License-Identifier: MIT */
/*
 * restart_peer: a guest's side of a virtio-net device that survives its
 * back-end being killed (restart.sh). uvhost's own front-end with session
 * recording; guest memory is one memfd; ring 0 is the device's RX, ring 1
 * its TX; the device is uvhost-net in loopback mode, so every frame sent
 * comes back. One thread does everything: the rings, and every few
 * milliseconds a look at the socket. When the back-end is gone, it
 * snapshots what was in flight, reconnects (retrying until the new
 * process listens) and replays the session, SET_INFLIGHT_FD included.
 *
 * Accounting, per buffer and per frame (sequence numbers):
 *   TX   every chain made available is given back exactly once (a buffer
 *        returned while not posted is a descriptor used twice); at the end
 *        none is outstanding.
 *   RX   likewise per buffer; at the end, after a flush of 2 x ring size
 *        frames, no buffer posted before the last reconnect is still out.
 *   frames  each sequence number comes back with its exact content, none
 *        lost: loopback makes a frame's RX buffer used before its TX
 *        chain, so a kill between the two leaves the TX chain in flight
 *        and its frame is sent again (twice, allowed only for frames in
 *        flight at a kill); before both, both chains are in flight and
 *        the frame is sent once more; after both, nothing is left.
 * The inflight area is mapped read-only to count the chains marked in
 * flight at each kill (what the new process resubmits).
 *
 * Usage: restart_peer SOCKET split|packed KILLS
 * Prints "restart_peer: ready epoch=E" once traffic flows after connect or
 * reconnect E (the script kills then), PASS/FAIL lines, and "stat" lines.
 * On SIGUSR1 (the script has frozen the back-end with SIGSTOP) it prints
 * "restart_peer: frozen marked=N", the chains the area marks in flight,
 * so that the script kills when there are some to resubmit.
 * Exit 0 when every check passed.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "util.h"
#include "frontend.h"
#include "inflight.h"
#include "message.h"
#include "net.h"
#include "virtq.h"

#define QSIZE		256u
#define FRAME		64u			/* without the virtio-net header */
#define FLEN		(UVH_NET_HDR_LEN + FRAME)
#define STRIDE		2048u
#define BURST		32u
#define GPA_BASE	0x40000000ull
#define SEQ_OFF		(UVH_NET_HDR_LEN + 14u)
#define READY_FRAMES	3000u			/* per epoch before "ready" */
#define TAIL_FRAMES	3000u			/* after the last reconnect */
#define STALL_MS	5000
#define DEADLINE_MS	45000
#define NOT_POSTED	UINT64_MAX

struct ring {
	struct uvh_vq_driver drv;
	int kick_fd, call_fd;
	uint8_t *bufs;
	uint64_t bufs_gpa;
	uint16_t free[QSIZE];
	unsigned int nfree;
	uint64_t posted_seq[QSIZE];	/* TX: frame in it; RX: any value; NOT_POSTED */
	unsigned int posted_epoch[QSIZE];
};

static struct {
	bool packed;
	unsigned int kills;
	struct uvh_frontend *fe;
	int memfd, inflight_fd;
	uint8_t *mem;
	size_t mem_len;
	void *inflight;
	size_t inflight_len;
	struct ring r[2];	/* [0] device RX, [1] device TX */
	unsigned int epoch;	/* reconnects done */
	uint64_t seq_tx;	/* frames made available */
	uint64_t tx_done, rx_frames;
	/* per sequence number: times received; in flight at a kill */
	uint8_t *seen;
	uint8_t *at_kill;
	uint64_t cap;
	/* failures */
	uint64_t tx_twice, rx_twice, bad_frames;
	/* statistics */
	uint64_t marked_total, snap_tx_total, snap_rx_total;
	double resume_ms_max, reconnect_ms_max;
	double lost_at;		/* when the last kill was noticed, 0 once resumed */
} P;

static int failed;

static void pass(const char *what) { printf("restart_peer: PASS: %s\n", what); }
static void fail(const char *what) { printf("restart_peer: FAIL: %s\n", what); failed = 1; }

static double now_msf(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static uint8_t *buf(struct ring *r, unsigned int idx)
{
	return r->bufs + (size_t)idx * STRIDE;
}

static void kick(struct ring *r)
{
	if (uvh_vq_driver_need_kick(&r->drv) && eventfd_write(r->kick_fd, 1) < 0)
		perror("restart_peer: kick");
}

/* ---- set-up ---------------------------------------------------------------------- */

static int make_memory(void)
{
	size_t area = (uvh_vq_driver_area_bytes(QSIZE, P.packed) + 4095) & ~(size_t)4095;
	size_t bufs = (size_t)QSIZE * STRIDE;
	size_t off = 0;

	P.mem_len = 2 * (area + bufs);
	P.memfd = memfd_create("restart-peer-guest", MFD_CLOEXEC);
	if (P.memfd < 0 || ftruncate(P.memfd, (off_t)P.mem_len) < 0)
		return -errno;
	P.mem = mmap(NULL, P.mem_len, PROT_READ | PROT_WRITE, MAP_SHARED, P.memfd, 0);
	if (P.mem == MAP_FAILED)
		return -errno;
	for (unsigned int i = 0; i < 2; i++) {
		struct ring *r = &P.r[i];
		int ret = uvh_vq_driver_init(&r->drv, QSIZE, P.packed, false, P.mem + off,
					     GPA_BASE + off);

		if (ret)
			return ret;
		off += area;
		r->bufs = P.mem + off;
		r->bufs_gpa = GPA_BASE + off;
		off += bufs;
		for (unsigned int b = 0; b < QSIZE; b++) {
			r->free[b] = (uint16_t)(QSIZE - 1 - b);
			r->posted_seq[b] = NOT_POSTED;
		}
		r->nfree = QSIZE;
		uvh_vq_driver_enable_cb(&r->drv, false);	/* we poll */
	}
	return 0;
}

#define CHECK(call, what)							\
	do {									\
		int r_ = (call);						\
		if (r_ < 0) {							\
			fprintf(stderr, "restart_peer: %s: %s\n", what,		\
				strerror(-r_));					\
			return r_;						\
		}								\
	} while (0)

static unsigned int rx_step(void);

static int setup(const char *path)
{
	struct uvh_connect_opts co = { .timeout_ms = 10000 };
	struct uvh_inflight want = { .num_queues = 2, .queue_size = QSIZE }, got;
	uint64_t feat, pf, vf = UVH_BIT(UVH_VIRTIO_F_VERSION_1) | UVH_BIT(UVH_F_PROTOCOL_FEATURES);
	struct uvh_mem_region reg;

	if (P.packed)
		vf |= UVH_BIT(UVH_VIRTIO_F_RING_PACKED);
	CHECK(make_memory(), "guest memory");
	CHECK(uvh_frontend_connect(path, &co, &P.fe), "connect");
	CHECK(uvh_frontend_record_session(P.fe), "record the session");
	CHECK(uvh_frontend_negotiate(P.fe, vf, UVH_BIT(UVH_PROTOCOL_F_REPLY_ACK) |
				     UVH_BIT(UVH_PROTOCOL_F_INFLIGHT_SHMFD), &feat, &pf),
	      "negotiate");
	if ((feat & vf) != vf || !(pf & UVH_BIT(UVH_PROTOCOL_F_INFLIGHT_SHMFD))) {
		fprintf(stderr, "restart_peer: back-end lacks a feature (0x%llx, 0x%llx)\n",
			(unsigned long long)feat, (unsigned long long)pf);
		return -EOPNOTSUPP;
	}
	/* the area lives with us: the next back-end process gets it back */
	CHECK(uvh_frontend_get_inflight_fd(P.fe, &want, &got, &P.inflight_fd), "GET_INFLIGHT_FD");
	if (P.inflight_fd < 0 || got.mmap_size < uvh_inflight_region_size(2, QSIZE, P.packed))
		return -EPROTO;
	P.inflight_len = got.mmap_size;
	P.inflight = mmap(NULL, P.inflight_len, PROT_READ, MAP_SHARED, P.inflight_fd,
			  (off_t)got.mmap_offset);
	if (P.inflight == MAP_FAILED)
		return -errno;
	reg = (struct uvh_mem_region){
		.guest_phys_addr = GPA_BASE, .memory_size = P.mem_len,
		.userspace_addr = (uint64_t)(uintptr_t)P.mem,
	};
	CHECK(uvh_frontend_set_mem_table(P.fe, &reg, &P.memfd, 1), "SET_MEM_TABLE");
	for (uint32_t i = 0; i < 2; i++) {
		struct ring *r = &P.r[i];
		struct uvh_vring_addr a = {
			.index = i,
			.desc_user_addr = (uint64_t)(uintptr_t)r->drv.desc,
			.avail_user_addr = (uint64_t)(uintptr_t)r->drv.driver_area,
			.used_user_addr = (uint64_t)(uintptr_t)r->drv.device_area,
		};
		struct uvh_vq_config cfg;
		uint32_t base;

		r->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		r->call_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (r->kick_fd < 0 || r->call_fd < 0)
			return -errno;
		uvh_vq_driver_config(&r->drv, &cfg);
		base = cfg.next_avail | (P.packed && cfg.avail_wrap ? 0x8000u : 0);
		CHECK(uvh_frontend_set_vring_call(P.fe, i, r->call_fd), "SET_VRING_CALL");
		CHECK(uvh_frontend_set_vring_num(P.fe, i, QSIZE), "SET_VRING_NUM");
		CHECK(uvh_frontend_set_vring_base(P.fe, i, base), "SET_VRING_BASE");
		CHECK(uvh_frontend_set_vring_addr(P.fe, &a), "SET_VRING_ADDR");
		CHECK(uvh_frontend_set_vring_kick(P.fe, i, r->kick_fd), "SET_VRING_KICK");
	}
	for (uint32_t i = 0; i < 2; i++)
		CHECK(uvh_frontend_set_vring_enable(P.fe, i, true), "SET_VRING_ENABLE");
	for (uint32_t i = 0; i < 2; i++)
		eventfd_write(P.r[i].kick_fd, 1);
	/* RX buffers before the first frame, or loopback has nowhere to put it */
	rx_step();
	return 0;
}

/* ---- traffic ----------------------------------------------------------------------- */

static int grow(uint64_t need)
{
	uint64_t cap = P.cap ? P.cap : 65536;
	uint8_t *a, *b;

	if (need <= P.cap)
		return 0;
	while (cap < need)
		cap *= 2;
	a = realloc(P.seen, cap);
	if (!a)
		return -ENOMEM;
	P.seen = a;
	b = realloc(P.at_kill, cap);
	if (!b)
		return -ENOMEM;
	P.at_kill = b;
	memset(P.seen + P.cap, 0, cap - P.cap);
	memset(P.at_kill + P.cap, 0, cap - P.cap);
	P.cap = cap;
	return 0;
}

/* Reclaim TX chains; send up to @budget frames. The window (a quarter of
 * the ring in flight) keeps what the device can fill between two of our
 * RX reclaims below the RX ring's size: no frame finds RX empty. */
static unsigned int tx_step(uint64_t budget)
{
	struct ring *r = &P.r[1];
	struct uvh_vq_buf bufs[BURST];
	void *tok[BURST];
	unsigned int n, i, room, out;

	n = uvh_vq_driver_get_used(&r->drv, tok, NULL, BURST);
	for (i = 0; i < n; i++) {
		unsigned int idx = (unsigned int)((uintptr_t)tok[i] - 1);

		if (idx >= QSIZE || r->posted_seq[idx] == NOT_POSTED) {
			P.tx_twice++;
			continue;
		}
		r->posted_seq[idx] = NOT_POSTED;
		r->free[r->nfree++] = (uint16_t)idx;
		P.tx_done++;
	}
	room = r->nfree < BURST ? r->nfree : BURST;
	out = QSIZE - r->nfree;
	if (out + room > QSIZE / 4)
		room = out >= QSIZE / 4 ? 0 : QSIZE / 4 - out;
	if (room > budget)
		room = (unsigned int)budget;
	if (!room || grow(P.seq_tx + room))
		return n;
	for (i = 0; i < room; i++) {
		unsigned int idx = r->free[r->nfree - 1 - i];
		uint8_t *p = buf(r, idx);
		uint64_t seq = P.seq_tx + i;

		memset(p, 0, UVH_NET_HDR_LEN);
		memset(p + UVH_NET_HDR_LEN, 0x02, 12);		/* dst, src */
		p[UVH_NET_HDR_LEN + 12] = 0x88;
		p[UVH_NET_HDR_LEN + 13] = 0xb5;
		memcpy(p + SEQ_OFF, &seq, sizeof(seq));
		for (unsigned int k = SEQ_OFF + 8; k < FLEN; k++)
			p[k] = (uint8_t)(seq + k);
		bufs[i] = (struct uvh_vq_buf){ r->bufs_gpa + (uint64_t)idx * STRIDE, FLEN };
		tok[i] = (void *)(uintptr_t)(idx + 1);
		r->posted_seq[idx] = seq;
		r->posted_epoch[idx] = P.epoch;
	}
	if (uvh_vq_driver_add_burst(&r->drv, bufs, room, false, tok)) {
		for (i = 0; i < room; i++)
			r->posted_seq[r->free[r->nfree - 1 - i]] = NOT_POSTED;
		return n;
	}
	r->nfree -= room;
	P.seq_tx += room;
	uvh_vq_driver_publish(&r->drv);
	kick(r);
	return n;
}

static void check_frame(const uint8_t *p, uint32_t len)
{
	uint64_t seq;

	if (len != FLEN) {
		P.bad_frames++;
		return;
	}
	memcpy(&seq, p + SEQ_OFF, sizeof(seq));
	if (seq >= P.seq_tx || p[UVH_NET_HDR_LEN + 12] != 0x88) {
		P.bad_frames++;
		return;
	}
	for (unsigned int k = SEQ_OFF + 8; k < FLEN; k++)
		if (p[k] != (uint8_t)(seq + k)) {
			P.bad_frames++;
			return;
		}
	if (P.seen[seq] < 255)
		P.seen[seq]++;
	if (P.seen[seq] == 1)
		P.rx_frames++;
}

static unsigned int rx_step(void)
{
	struct ring *r = &P.r[0];
	struct uvh_vq_buf bufs[BURST];
	void *tok[BURST];
	uint32_t lens[BURST];
	unsigned int n = 0, got, i, room;

	do {
		got = uvh_vq_driver_get_used(&r->drv, tok, lens, BURST);
		for (i = 0; i < got; i++) {
			unsigned int idx = (unsigned int)((uintptr_t)tok[i] - 1);

			if (idx >= QSIZE || r->posted_seq[idx] == NOT_POSTED) {
				P.rx_twice++;
				continue;
			}
			check_frame(buf(r, idx), lens[i]);
			r->posted_seq[idx] = NOT_POSTED;
			r->free[r->nfree++] = (uint16_t)idx;
		}
		n += got;
	} while (got == BURST);
	room = r->nfree < BURST ? r->nfree : BURST;
	if (!room)
		return n;
	for (i = 0; i < room; i++) {
		unsigned int idx = r->free[r->nfree - 1 - i];

		memset(buf(r, idx), 0xee, FLEN);	/* stale data must not pass */
		bufs[i] = (struct uvh_vq_buf){ r->bufs_gpa + (uint64_t)idx * STRIDE, STRIDE };
		tok[i] = (void *)(uintptr_t)(idx + 1);
		r->posted_seq[idx] = 0;
		r->posted_epoch[idx] = P.epoch;
	}
	if (uvh_vq_driver_add_burst(&r->drv, bufs, room, true, tok)) {
		for (i = 0; i < room; i++)
			r->posted_seq[r->free[r->nfree - 1 - i]] = NOT_POSTED;
		return n;
	}
	r->nfree -= room;
	uvh_vq_driver_publish(&r->drv);
	kick(r);
	return n + (r->nfree ? rx_step() : 0);
}

/* ---- the back-end goes away ------------------------------------------------------------ */

static volatile sig_atomic_t count_asked;	/* SIGUSR1 */

static void on_usr1(int sig)
{
	(void)sig;
	count_asked = 1;
}

/* Chains the region says are in flight on queue @q (what gets resubmitted). */
static unsigned int region_marked(uint16_t q)
{
	void *reg = uvh_inflight_queue(P.inflight, q, QSIZE, P.packed);
	unsigned int n = 0;

	for (unsigned int i = 0; i < QSIZE; i++) {
		uint8_t m = P.packed ? ((volatile struct uvh_inflight_packed *)reg)->desc[i].inflight :
				       ((volatile struct uvh_inflight_split *)reg)->desc[i].inflight;

		n += m == 1;
	}
	return n;
}

/* The base a restarted ring starts from: split at used->idx, as QEMU
 * does (the inflight area adds what was taken and not used); packed at
 * the next slot the device would use (the area's own used index wins). */
static int vring_base(void *opaque, uint32_t index, uint32_t *base)
{
	struct ring *r = &P.r[index & 1];

	(void)opaque;
	if (!P.packed) {
		struct uvh_vring_used *u = r->drv.device_area;

		*base = __atomic_load_n(&u->idx, __ATOMIC_ACQUIRE);
	} else {
		*base = r->drv.last_used_slot | (r->drv.used_wrap ? 0x8000u : 0);
	}
	return 0;
}

static int reconnect(void)
{
	struct uvh_frontend_reconnect_opts o = {
		.connect = { .timeout_ms = 15000, .initial_delay_ms = 5, .max_delay_ms = 50 },
		.vring_base = vring_base,
	};
	unsigned int m_rx = region_marked(0), m_tx = region_marked(1), stx = 0, srx = 0;
	double t0 = now_msf(), t1;
	int ret;

	/* the frames of TX chains not given back yet were in flight: they
	 * may be lost on the wire or sent twice */
	for (unsigned int i = 0; i < QSIZE; i++) {
		if (P.r[1].posted_seq[i] != NOT_POSTED) {
			P.at_kill[P.r[1].posted_seq[i]] = 1;
			stx++;
		}
		if (P.r[0].posted_seq[i] != NOT_POSTED)
			srx++;
	}
	P.marked_total += m_rx + m_tx;
	P.snap_tx_total += stx;
	P.snap_rx_total += srx;
	ret = uvh_frontend_reconnect(P.fe, &o);
	t1 = now_msf();
	if (ret) {
		fprintf(stderr, "restart_peer: reconnect: %s\n", strerror(-ret));
		return ret;
	}
	P.epoch++;
	if (t1 - t0 > P.reconnect_ms_max)
		P.reconnect_ms_max = t1 - t0;
	printf("restart_peer: stat kill=%u tx_outstanding=%u rx_outstanding=%u "
	       "marked_inflight_tx=%u marked_inflight_rx=%u reconnect_ms=%.1f\n",
	       P.epoch, stx, srx, m_tx, m_rx, t1 - t0);
	fflush(stdout);
	return 0;
}

/* ---- main ---------------------------------------------------------------------------- */

/* Run the rings, reconnecting as needed. @drain: send frames up to
 * @send_until, return once all came back; else run until the KILLS-th
 * reconnect. 0, or -ETIMEDOUT on a stall / the deadline. */
static int run(uint64_t send_until, bool drain, int64_t deadline)
{
	int64_t last_progress = uvh_now_ms(), last_check = 0;
	uint64_t epoch_start = P.tx_done;
	unsigned int ready_epoch = P.epoch;
	bool ready_said = false;

	for (;;) {
		uint64_t budget = P.seq_tx < send_until ? send_until - P.seq_tx : 0;
		unsigned int n = tx_step(budget) + rx_step();
		int64_t t = uvh_now_ms();

		if (n) {
			last_progress = t;
			if (P.lost_at > 0) {
				double ms = now_msf() - P.lost_at;

				printf("restart_peer: stat kill=%u resume_ms=%.1f\n", P.epoch, ms);
				if (ms > P.resume_ms_max)
					P.resume_ms_max = ms;
				P.lost_at = 0;
			}
		}
		if (count_asked) {
			count_asked = 0;
			printf("restart_peer: frozen marked=%u\n", region_marked(0) + region_marked(1));
			fflush(stdout);
		}
		if (!ready_said && P.tx_done - epoch_start >= READY_FRAMES) {
			printf("restart_peer: ready epoch=%u\n", ready_epoch);
			fflush(stdout);
			ready_said = true;
		}
		/* loopback publishes a burst's RX frames before its TX chains:
		 * with every TX chain back and RX read empty, all is in */
		if (drain && P.seq_tx == send_until && P.tx_done == P.seq_tx && !n)
			return 0;
		if (t - last_check >= 2) {
			last_check = t;
			if (uvh_frontend_check_connection(P.fe, 0) == -ENOTCONN) {
				P.lost_at = now_msf();
				if (reconnect())
					return -ECONNREFUSED;
				last_progress = uvh_now_ms();
				epoch_start = P.tx_done;
				ready_epoch = P.epoch;
				ready_said = false;
				if (!drain && P.epoch >= P.kills)
					return 0;
			}
		}
		if (t - last_progress > STALL_MS || t > deadline) {
			fprintf(stderr, "restart_peer: no progress for %lld ms (sent %llu, done %llu, "
				"received %llu)\n", (long long)(t - last_progress),
				(unsigned long long)P.seq_tx, (unsigned long long)P.tx_done,
				(unsigned long long)P.rx_frames);
			return -ETIMEDOUT;
		}
		if (!n)
			poll(NULL, 0, 0);	/* let the back-end's engine have the core */
	}
}

static void report(void)
{
	uint64_t once = 0, twice = 0, never = 0, twice_bad = 0, never_bad = 0, rx_old = 0;
	char line[160];

	for (uint64_t s = 0; s < P.seq_tx; s++) {
		if (P.seen[s] == 1)
			once++;
		else if (P.seen[s] > 1) {
			twice++;
			twice_bad += !P.at_kill[s];
		} else {
			never++;
			never_bad += !P.at_kill[s];
		}
	}
	for (unsigned int i = 0; i < QSIZE; i++)
		if (P.r[0].posted_seq[i] != NOT_POSTED && P.r[0].posted_epoch[i] < P.epoch)
			rx_old++;
	/* where the frames not seen exactly once are, as ranges */
	for (uint64_t s = 0, k = 0; s < P.seq_tx && k < 8; s++) {
		uint64_t e = s;

		if (P.seen[s] == 1)
			continue;
		while (e + 1 < P.seq_tx && P.seen[e + 1] == P.seen[s] && P.at_kill[e + 1] == P.at_kill[s])
			e++;
		printf("restart_peer: stat frames %llu-%llu seen %u times, in flight at a kill: %s\n",
		       (unsigned long long)s, (unsigned long long)e, P.seen[s],
		       P.at_kill[s] ? "yes" : "no");
		s = e;
		k++;
	}
	printf("restart_peer: stat ring=%s kills=%u frames=%llu tx_completions=%llu "
	       "once=%llu twice=%llu never=%llu marked_inflight=%llu outstanding_at_kills_tx=%llu "
	       "outstanding_at_kills_rx=%llu reconnect_ms_max=%.1f resume_ms_max=%.1f\n",
	       P.packed ? "packed" : "split", P.epoch, (unsigned long long)P.seq_tx,
	       (unsigned long long)P.tx_done, (unsigned long long)once, (unsigned long long)twice,
	       (unsigned long long)never, (unsigned long long)P.marked_total,
	       (unsigned long long)P.snap_tx_total, (unsigned long long)P.snap_rx_total,
	       P.reconnect_ms_max, P.resume_ms_max);
	snprintf(line, sizeof(line), "%u reconnects (by the front-end itself), %u wanted",
		 P.epoch, P.kills);
	(P.epoch == P.kills ? pass : fail)(line);
	snprintf(line, sizeof(line), "every TX chain used exactly once (%llu made available, "
		 "%llu given back, 0 twice: %llu)", (unsigned long long)P.seq_tx,
		 (unsigned long long)P.tx_done, (unsigned long long)P.tx_twice);
	(P.tx_done == P.seq_tx && !P.tx_twice ? pass : fail)(line);
	snprintf(line, sizeof(line), "no RX buffer used twice (%llu)", (unsigned long long)P.rx_twice);
	(!P.rx_twice ? pass : fail)(line);
	snprintf(line, sizeof(line), "no RX buffer posted before the last kill left behind "
		 "after the flush (%llu)", (unsigned long long)rx_old);
	(!rx_old ? pass : fail)(line);
	snprintf(line, sizeof(line), "every frame's content intact (%llu bad)",
		 (unsigned long long)P.bad_frames);
	(!P.bad_frames ? pass : fail)(line);
	snprintf(line, sizeof(line), "frames came back twice only if in flight at a kill "
		 "(%llu twice, %llu not in flight)", (unsigned long long)twice,
		 (unsigned long long)twice_bad);
	(!twice_bad ? pass : fail)(line);
	snprintf(line, sizeof(line), "no frame lost (%llu, %llu of them not in flight at a kill)",
		 (unsigned long long)never, (unsigned long long)never_bad);
	(!never ? pass : fail)(line);
}

int main(int argc, char **argv)
{
	int64_t deadline = uvh_now_ms() + DEADLINE_MS;
	int ret;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc != 4 || (strcmp(argv[2], "split") && strcmp(argv[2], "packed"))) {
		fprintf(stderr, "usage: %s SOCKET split|packed KILLS\n", argv[0]);
		return 2;
	}
	P.packed = !strcmp(argv[2], "packed");
	P.kills = (unsigned int)strtoul(argv[3], NULL, 10);
	signal(SIGUSR1, on_usr1);
	P.memfd = P.inflight_fd = -1;
	P.r[0].kick_fd = P.r[0].call_fd = P.r[1].kick_fd = P.r[1].call_fd = -1;
	ret = setup(argv[1]);
	if (ret) {
		fail("set-up");
		return 1;
	}
	/* traffic until the script has killed the back-end KILLS times */
	if (P.kills)
		ret = run(UINT64_MAX, false, deadline);
	if (ret) {
		fail("traffic kept flowing through the kills");
	} else {
		/* some more after the last one, then stop sending and drain;
		 * then a flush that cycles every RX buffer */
		ret = run(P.seq_tx + TAIL_FRAMES, true, deadline);
		if (!ret)
			ret = run(P.seq_tx + 2 * QSIZE, true, deadline);
		if (ret)
			fail("traffic resumed and drained after the last kill");
		else
			pass("traffic resumed and drained after the last kill");
	}
	report();
	uvh_frontend_free(P.fe);
	return failed;
}
