/* SPDX-License-Identifier: MIT */
/*
 * uvhost-bench's traffic generator: the guest's side of a virtio-net
 * device, driven over vhost-user by uvhost's own front-end.
 *
 * It plays a guest with no interrupts: guest memory is one memfd (rings
 * and packet buffers), shared with the back-end through SET_MEM_TABLE;
 * ring 0 is the device's RX (our receive ring), ring 1 its TX. One thread,
 * pinned to one core, polls both rings (driver-side uvh_vq_driver), kicks
 * only when the device asks for it (it sleeps in adaptive or event mode),
 * and never asks for a call.
 *
 * Each buffer holds the 12-byte virtio-net header then the frame.
 *   TX    frames are sent on ring 1; a frame counts once the device has
 *         given its chain back (consumed it).
 *   RX    buffers are posted on ring 0; a frame counts when it comes
 *         back filled (its length is checked).
 *   LOOP  both: every frame carries a sequence number and comes back on
 *         ring 0 (the device's loopback port). Each RX buffer is poisoned
 *         before it is posted, and each frame back is compared whole with
 *         what was sent (the header as the device must write it: zero but
 *         num_buffers 1), its sequence number in order; gaps count as lost.
 *         Each frame also carries its send time: the round trip of every
 *         frame goes into a histogram (bg_rtt_percentile). With
 *         max_inflight 1 it is a ping-pong: one frame on its way at a time.
 */
#ifndef UVHOST_BENCH_GEN_H
#define UVHOST_BENCH_GEN_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "virtq.h"

struct uvh_frontend;

enum bg_dir { BG_TX = 0, BG_RX, BG_LOOP, BG_NDIRS };

/** "tx", "rx", "loop". */
const char *bg_dir_name(enum bg_dir dir);

/** What the generator needs to know. */
struct bg_opts {
	const char *socket_path;	/**< the back-end's socket (we connect) */
	enum bg_dir dir;
	bool packed;			/**< VIRTIO_F_RING_PACKED */
	bool event_idx;			/**< VIRTIO_F_RING_EVENT_IDX */
	uint32_t frame;			/**< frame bytes, virtio-net header not counted */
	uint16_t qsize;			/**< ring entries */
	double rate_pps;		/**< 0: as fast as possible; else paced */
	int cpu;			/**< core of the generator thread (-1: not pinned) */
	int connect_timeout_ms;
	unsigned int max_inflight;	/**< LOOP: frames on their way at most (0: as many
					 *   as RX buffers are posted; 1: ping-pong) */
	/* ---- a TCP stream between two devices (uvhost-bench --tso) ---- */
	uint64_t offloads;		/**< virtio-net features to negotiate as well
					 *   (offloads, MRG_RXBUF): all or bg_open fails */
	uint16_t mss;			/**< TX: frames are one TCP/IPv4 stream with
					 *   this MSS (0: the bench's own frames) */
	bool tso;			/**< ... each frame one TSO segment (a GSO
					 *   header, partial checksum) of frame bytes */
	bool payload_rx;		/**< RX: what arrives is TCP/IPv4, segments or
					 *   whole (merged buffers): count its payload */
};

/** Round-trip histogram: log-linear buckets, 16 per power of two (6 %). */
#define BG_RTT_BUCKETS	640u

/** One ring as the generator drives it. */
struct bg_ring {
	struct uvh_vq_driver drv;
	int kick_fd, call_fd;
	uint8_t *bufs;			/**< our pointer to buffer 0 */
	uint64_t bufs_gpa;
	uint16_t *free;			/**< stack of free buffer indexes */
	unsigned int nfree;
	uint64_t kicks;
};

/** A generator: set up with bg_open(), run with bg_start()/bg_stop(). */
struct bg {
	struct bg_opts o;
	struct uvh_frontend *fe;
	int memfd;
	uint8_t *mem;
	size_t mem_len;
	uint32_t stride;		/**< bytes per buffer */
	uint8_t *expect;		/**< LOOP: a frame as it must come back (its
					 *   sequence number aside) */
	struct bg_ring ring[2];		/**< [0] device RX, [1] device TX */
	uint64_t features;		/**< in force */
	pthread_t thread;
	_Atomic int tid;		/**< the generator thread's id (0 before it runs) */
	bool running;
	int thread_err;			/**< pinning failed (negative errno) */
	/* written by the generator thread only; its own cache line */
	_Alignas(64) _Atomic uint64_t frames;	/**< completed (see top of file) */
	_Atomic uint64_t lost;		/**< LOOP: sequence gaps */
	_Atomic uint64_t bad;		/**< wrong length, content or order */
	uint64_t nb_wrong;		/**< LOOP: num_buffers not 1 (read after bg_stop) */
	uint64_t stall_since;		/**< LOOP: frames missing, every TX chain back */
	_Atomic uint32_t rtt[BG_RTT_BUCKETS];	/**< LOOP: round trips, by bucket (ns) */
	uint64_t seq_tx, seq_rx;
	uint64_t rx_out;		/**< RX buffers posted and not reaped yet */
	struct bg *rx_peer;		/**< TCP stream: the receiving device's generator,
					 *   driven by this one's thread (bg_pair) */
	_Atomic uint64_t payload;	/**< TCP stream: payload bytes received */
	uint64_t payload_sent, payload_got;	/**< ... by this thread */
	unsigned int rx_left;		/**< payload_rx: buffers left of the frame */
	uint8_t tcp_head[12 + 54];	/**< TCP stream: virtio-net, Ethernet, IPv4, TCP */
	/* written by the controlling thread only */
	_Alignas(64) _Atomic int stop;
	_Alignas(64) char pad_end;
};

/**
 * Connect to the back-end and set the device up: negotiate (VERSION_1,
 * RING_PACKED / EVENT_IDX as asked, PROTOCOL_FEATURES with REPLY_ACK),
 * share guest memory, lay out and hand over both rings, enable them.
 * 0, or a negative errno (a message on stderr says what failed).
 */
int bg_open(struct bg *g, const struct bg_opts *o);
/** Start the generator thread. 0 or a negative errno. */
int bg_start(struct bg *g);
/**
 * A TCP stream from @tx's device (opened with mss set) to @rx's (opened
 * with payload_rx): @tx's thread sends on the one and receives on the
 * other, never more payload on its way than @rx's posted buffers take at
 * one MSS each, so the device never drops for want of a buffer. The
 * frames and payload bytes received are @tx's counters (bg_frames,
 * bg_payload). Before bg_start(@tx); @rx is never started.
 */
void bg_pair(struct bg *tx, struct bg *rx);
/** TCP stream: payload bytes received so far (any thread; relaxed). */
static inline uint64_t bg_payload(struct bg *g)
{
	return atomic_load_explicit(&g->payload, memory_order_relaxed);
}
/** Frames completed so far (any thread; relaxed). */
static inline uint64_t bg_frames(struct bg *g)
{
	return atomic_load_explicit(&g->frames, memory_order_relaxed);
}
/** Snapshot the round-trip histogram into @h (any thread). */
void bg_rtt_snapshot(struct bg *g, uint32_t h[BG_RTT_BUCKETS]);
/**
 * The @q quantile (0..1) in microseconds of the round trips counted in
 * @h (a difference of two snapshots), or -1 when there are none.
 */
double bg_rtt_percentile(const uint32_t h[BG_RTT_BUCKETS], double q);
/** The generator thread's CPU clock (for CPU use), or -1. */
int bg_cpu_clock(struct bg *g, clockid_t *clk);
/** Stop and join the generator thread (no-op when not running). */
void bg_stop(struct bg *g);
/**
 * Stop the rings (GET_VRING_BASE: the back-end lets go of them), close the
 * connection and free everything. Safe on a half-opened @g.
 */
void bg_close(struct bg *g);

#endif
