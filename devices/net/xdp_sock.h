/* SPDX-License-Identifier: MIT */
/*
 * uvhost: one AF_XDP socket with its own UMEM, bound to one queue of a
 * network interface (libxdp's default XDP program redirects the queue's
 * frames to it). Used by the xdp port (a guest's queue pair on a queue) and
 * by a switch's xdp uplink. Not installed.
 *
 * The UMEM is split in two halves with one owner each, so the two
 * directions share nothing:
 *   - RX half (xdp_sock_rx_*): frames live in the fill ring, the kernel or
 *     the RX ring; a frame read goes back to the fill ring in the same burst.
 *   - TX half (xdp_sock_tx_*): a stack of free frames; a frame sent comes
 *     back through the completion ring.
 * Each half has one user at a time (an engine, or the holder of a lock).
 */
#ifndef UVHOST_XDP_SOCK_H
#define UVHOST_XDP_SOCK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>
#include <xdp/xsk.h>

#define XDP_FRAME	4096u		/* one UMEM frame (aligned mode: a power of two) */
#define XDP_HALF	2048u		/* frames per half (RX, TX) */
#define XDP_RING	2048u		/* every ring of the socket */
#define XDP_BURST	32u
/* The kernel puts a received frame XDP_PACKET_HEADROOM into its UMEM frame. */
#define XDP_RX_MAX	(XDP_FRAME - 256u)

/* Multi-buffer (Linux 6.6; Debian 12's uapi headers predate it). */
#ifndef XDP_USE_SG
#define XDP_USE_SG	(1u << 4)
#endif
#ifndef XDP_PKT_CONTD
#define XDP_PKT_CONTD	(1u << 0)
#endif
#define XDP_MAX_FRAGS	18u		/* UMEM frames per packet at most (the kernel's 17 + 1) */

/*
 * The XDP program on an interface. Our own when the interface has none: it
 * redirects each queue's frames to the socket in our map, and is loaded
 * with BPF_F_XDP_HAS_FRAGS, so frames bigger than a UMEM frame come in
 * several (multi-buffer) and the MTU need not be capped. Else (a program
 * there already, or a kernel that refuses ours) libxdp's default program,
 * which has no frags: one UMEM frame per packet. One uvhost-net per
 * interface: a program of ours found at start is taken as left by a killed
 * one and replaced (a second uvhost-net on other queues of the same NIC
 * would lose its frames).
 */
struct xdp_iface {
	unsigned int ifindex;
	int prog_fd, map_fd;		/* ours (-1: libxdp's program) */
	uint32_t attach_flags;		/* how ours is attached (mode) */
	bool frags;			/* sockets bound with XDP_USE_SG */
};

/** Put our program on @iface for queues [0, @queues) (with frags if
 *  @want_frags), else leave it to libxdp. 0 or -ENODEV. */
int xdp_iface_open(struct xdp_iface *xi, const char *who, const char *iface, unsigned int queues,
		   bool want_frags);
/** Detach our program (only if it is still the one attached). */
void xdp_iface_close(struct xdp_iface *xi);

struct xdp_sock {
	struct xsk_umem *umem;
	struct xsk_socket *xsk;
	uint8_t *area;
	int fd;
	unsigned int queue;
	char who[48];			/* "port0: eth1 queue 0", for logs */
	/* RX half */
	struct xsk_ring_cons rx;
	struct xsk_ring_prod fill;
	uint32_t rx_idx, rx_n;		/* this burst's descriptors (xdp_sock_rx_begin) */
	uint16_t rx_end[XDP_BURST];	/* packet i: descriptors [rx_end[i-1], rx_end[i]) */
	unsigned int rx_pkts;
	uint64_t kernel_drops;		/* the kernel's count at the last read */
	/* TX half */
	struct xsk_ring_prod tx;
	struct xsk_ring_cons comp;
	uint64_t free[XDP_HALF];
	unsigned int nfree;
	unsigned int tx_queued;		/* reserved and filled, not submitted */
	unsigned int tx_frags;		/* most UMEM frames a packet takes (1: no frags) */
	bool kick_pending;		/* frames in the TX ring the kernel has not taken */
	bool down;			/* the last kick said the link is down or gone */
	uint64_t down_since;
};

/** Route libbpf's and libxdp's messages through our logger (debug level). */
void xdp_sock_quiet_libs(void);
/** The interface's index and MTU; -ENODEV when there is no such interface. */
int xdp_iface(const char *iface, unsigned int *ifindex, int *mtu);
/** Warn when libxdp's program is on @iface already (a killed process left it). */
void xdp_iface_check_stale(const char *who, const char *iface, unsigned int ifindex);
/** "native XDP, copy mode, need_wakeup" for the interface and socket @s. */
void xdp_sock_describe(const struct xdp_sock *s, unsigned int ifindex, char *buf, size_t size);

/** Open @s on @iface's @queue (its program: @xi): zero-copy if the driver
 *  has it, else copy mode; the RX half goes to the fill ring at once. 0 or
 *  negative errno (logged, naming @who). Close with xdp_sock_close even on
 *  failure. */
int xdp_sock_open(struct xdp_sock *s, const char *who, const char *iface, unsigned int queue,
		  const struct xdp_iface *xi);
/** Close (deleting the interface's last socket detaches the program). */
void xdp_sock_close(struct xdp_sock *s);

/* ---- RX half ---- */
/** Frames the kernel dropped since the last call (RX ring or fill ring full). */
uint64_t xdp_sock_rx_kernel_drops(struct xdp_sock *s);
/** Drop every frame waiting (stale ones); how many. */
uint64_t xdp_sock_rx_flush(struct xdp_sock *s);
/** Peek up to @max whole packets (0: none; the fill ring woken if it asks). */
unsigned int xdp_sock_rx_begin(struct xdp_sock *s, unsigned int max);
/** Packet @i of the burst in @v (at most XDP_MAX_FRAGS iovecs): how many,
 *  0 when a descriptor is out of bounds (count it dropped: not recycled). */
unsigned int xdp_sock_rx_packet(const struct xdp_sock *s, unsigned int i, struct iovec *v,
				 uint32_t *len);
/** End the burst: packets [0, @done) consumed (back to the fill ring), the
 *  rest stay for the next burst. */
void xdp_sock_rx_end(struct xdp_sock *s, unsigned int done);

/* ---- TX half ---- */
/** Frames that can be queued now, each as big as the socket takes
 *  (completions reaped first; while the link is down: @max, they are
 *  dropped by xdp_sock_tx_put). */
unsigned int xdp_sock_tx_room(struct xdp_sock *s, unsigned int max);
/** Queue one frame: @len bytes of @iov after @skip, over several UMEM
 *  frames when the socket has frags. false when it cannot (no room, link
 *  down, longer than a UMEM frame without frags). */
bool xdp_sock_tx_put(struct xdp_sock *s, const struct iovec *iov, unsigned int n, size_t skip,
		     uint32_t len);
/** Hand what was queued to the kernel. */
void xdp_sock_tx_flush(struct xdp_sock *s);

#endif
