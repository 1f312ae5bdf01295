/* SPDX-License-Identifier: MIT */
/*
 * uvhost: an AF_XDP socket and its UMEM (xdp_sock.h).
 *
 * Kernel facts this relies on (Linux 6.x, libxdp 1.3):
 *   - copy-mode transmit sends a batch per sendto() and answers EAGAIN when
 *     more is queued: we call again (tx_kick);
 *   - with XDP_USE_NEED_WAKEUP the TX ring asks for a kick in copy mode, the
 *     fill ring only in zero-copy mode (when the driver ran dry);
 *   - xsk_ring_cons__peek moves our cached position: frames not consumed
 *     must be cancelled, or they are skipped and their UMEM frames lost;
 *   - a link down fails sendto() with ENETDOWN, a deleted interface (the
 *     socket unbound) with ENXIO; the TX ring then keeps what it holds.
 */
#include <errno.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/libxdp.h>

#include "log.h"
#include "util.h"
#include "net_internal.h"
#include "xdp_sock.h"

#define DOWN_RETRY_NS	100000000ull	/* a link down: try the wire again every 100 ms */
#define UMEM_BYTES	((size_t)2 * XDP_HALF * XDP_FRAME)
#define RX_END		((uint64_t)XDP_HALF * XDP_FRAME)	/* RX half: [0, RX_END) */

static int lib_print(const char *fmt, va_list ap)
{
	char buf[256];

	vsnprintf(buf, sizeof(buf), fmt, ap);
	buf[strcspn(buf, "\n")] = 0;
	UVH_DEBUG("xdp: %s", buf);
	return 0;
}

static int lib_print_bpf(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	(void)level;
	return lib_print(fmt, ap);
}

static int lib_print_xdp(enum libxdp_print_level level, const char *fmt, va_list ap)
{
	(void)level;
	return lib_print(fmt, ap);
}

/* They print to stderr by default, and are chatty about a missing bpffs
 * (libxdp then loads its program without the dispatcher, which is fine). */
void xdp_sock_quiet_libs(void)
{
	libbpf_set_print(lib_print_bpf);
	libxdp_set_print(lib_print_xdp);
}

int xdp_iface(const char *iface, unsigned int *ifindex, int *mtu)
{
	struct ifreq ifr;
	int fd;

	*ifindex = if_nametoindex(iface);
	*mtu = -1;
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd >= 0) {
		memset(&ifr, 0, sizeof(ifr));
		snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", iface);
		if (ioctl(fd, SIOCGIFMTU, &ifr) == 0)
			*mtu = ifr.ifr_mtu;
		close(fd);
	}
	return *ifindex && *mtu > 0 ? 0 : -ENODEV;
}

/* An fd of program @id when it is uvhost's own ("uvh_xsk"), else -1. */
static int our_stale_prog(uint32_t id)
{
	struct bpf_prog_info info;
	__u32 len = sizeof(info);
	int fd = bpf_prog_get_fd_by_id(id);

	if (fd < 0)
		return -1;
	memset(&info, 0, sizeof(info));
	if (!bpf_obj_get_info_by_fd(fd, &info, &len) && !strcmp(info.name, "uvh_xsk"))
		return fd;
	close(fd);
	return -1;
}

int xdp_iface_open(struct xdp_iface *xi, const char *who, const char *iface, unsigned int queues,
		   bool want_frags)
{
	LIBBPF_OPTS(bpf_prog_load_opts, po, .prog_flags = want_frags ? BPF_F_XDP_HAS_FRAGS : 0);
	struct bpf_xdp_query_opts q = { .sz = sizeof(q) };
	int mtu, err, stale_fd = -1;

	xi->prog_fd = xi->map_fd = -1;
	xi->frags = false;
	xi->attach_flags = 0;
	if (xdp_iface(iface, &xi->ifindex, &mtu))
		return -ENODEV;
	if (!bpf_xdp_query((int)xi->ifindex, 0, &q) && q.prog_id) {
		stale_fd = our_stale_prog(q.prog_id);
		if (stale_fd < 0) {
			/* someone's program (or libxdp's, left by a killed process):
			 * ours would replace it; libxdp's default program shares */
			xdp_iface_check_stale(who, iface, xi->ifindex);
			UVH_INFO("%s: %s has an XDP program: libxdp's default program, no frags",
				 who, iface);
			return 0;
		}
		/* ours, left by a uvhost-net that was killed (one per interface):
		 * replaced, its map and sockets are gone with that process */
		UVH_WARN("%s: %s has uvhost's XDP program (id %u) of a process that did not "
			 "exit cleanly: replaced", who, iface, q.prog_id);
	}
	xi->map_fd = bpf_map_create(BPF_MAP_TYPE_XSKMAP, "uvh_xsks", 4, 4, queues, NULL);
	if (xi->map_fd >= 0) {
		/* r2 = ctx->rx_queue_index; r1 = map; r3 = XDP_PASS (the action
		 * when the queue has no socket); return bpf_redirect_map() */
		const struct bpf_insn prog[] = {
			{ .code = BPF_LDX | BPF_MEM | BPF_W, .dst_reg = BPF_REG_2,
			  .src_reg = BPF_REG_1, .off = 16 },
			{ .code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = BPF_REG_1,
			  .src_reg = BPF_PSEUDO_MAP_FD, .imm = xi->map_fd },
			{ .code = 0 },
			{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_3, .imm = XDP_PASS },
			{ .code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_redirect_map },
			{ .code = BPF_JMP | BPF_EXIT },
		};

		xi->prog_fd = bpf_prog_load(BPF_PROG_TYPE_XDP, "uvh_xsk", "GPL", prog,
					    sizeof(prog) / sizeof(prog[0]), &po);
	}
	err = xi->prog_fd < 0 ? xi->prog_fd : -1;
	if (xi->prog_fd >= 0) {
		LIBBPF_OPTS(bpf_xdp_attach_opts, ao, .old_prog_fd = stale_fd);
		/* a stale one of ours is replaced (in its mode), else none may be there */
		uint32_t how = stale_fd >= 0 ? XDP_FLAGS_REPLACE : XDP_FLAGS_UPDATE_IF_NOEXIST;

		/* native first, generic (skb) mode where the driver has none */
		xi->attach_flags = how | XDP_FLAGS_DRV_MODE;
		err = bpf_xdp_attach((int)xi->ifindex, xi->prog_fd, xi->attach_flags,
				     stale_fd >= 0 ? &ao : NULL);
		if (err) {
			xi->attach_flags = how | XDP_FLAGS_SKB_MODE;
			err = bpf_xdp_attach((int)xi->ifindex, xi->prog_fd, xi->attach_flags,
					     stale_fd >= 0 ? &ao : NULL);
		}
	}
	if (stale_fd >= 0)
		close(stale_fd);
	if (err) {
		UVH_INFO("%s: %s: our XDP program not attached (%s): libxdp's, no frags", who,
			 iface, strerror(err < 0 ? -err : EINVAL));
		xdp_iface_close(xi);
		return 0;
	}
	xi->frags = want_frags;
	return 0;
}

void xdp_iface_close(struct xdp_iface *xi)
{
	if (xi->prog_fd >= 0 && xi->attach_flags) {
		LIBBPF_OPTS(bpf_xdp_attach_opts, ao, .old_prog_fd = xi->prog_fd);

		/* only ours: an administrator may have put another one there */
		bpf_xdp_detach((int)xi->ifindex, (xi->attach_flags & XDP_FLAGS_MODES) |
			       XDP_FLAGS_REPLACE, &ao);
	}
	if (xi->prog_fd >= 0)
		close(xi->prog_fd);
	if (xi->map_fd >= 0)
		close(xi->map_fd);
	xi->prog_fd = xi->map_fd = -1;
	xi->attach_flags = 0;
	xi->frags = false;
}

void xdp_iface_check_stale(const char *who, const char *iface, unsigned int ifindex)
{
	struct bpf_xdp_query_opts q = { .sz = sizeof(q) };
	struct bpf_prog_info info;
	__u32 len = sizeof(info);
	int fd;

	if (bpf_xdp_query((int)ifindex, 0, &q) || !q.prog_id)
		return;
	fd = bpf_prog_get_fd_by_id(q.prog_id);
	if (fd < 0)
		return;
	memset(&info, 0, sizeof(info));
	if (!bpf_obj_get_info_by_fd(fd, &info, &len) && !strcmp(info.name, "xsk_def_prog"))
		/* libxdp detaches only what it loaded in this process: a program
		 * left by a killed process is used, and stays after we exit */
		UVH_WARN("%s: %s already has libxdp's AF_XDP program (id %u), left by a process "
			 "that did not exit cleanly? It stays after this one exits; "
			 "'ip link set dev %s xdp off' removes it", who, iface, q.prog_id, iface);
	close(fd);
}

void xdp_sock_describe(const struct xdp_sock *s, unsigned int ifindex, char *buf, size_t size)
{
	struct bpf_xdp_query_opts q = { .sz = sizeof(q) };
	struct xdp_options xo;
	socklen_t len = sizeof(xo);
	bool zero_copy = false;

	if (bpf_xdp_query((int)ifindex, 0, &q))
		q.attach_mode = 0;
	if (getsockopt(s->fd, SOL_XDP, XDP_OPTIONS, &xo, &len) == 0)
		zero_copy = xo.flags & XDP_OPTIONS_ZEROCOPY;
	snprintf(buf, size, "%s XDP, %s, need_wakeup",
		 q.attach_mode == XDP_ATTACHED_DRV ? "native" :
		 q.attach_mode == XDP_ATTACHED_SKB ? "generic (skb)" :
		 q.attach_mode == XDP_ATTACHED_HW ? "offloaded" :
		 q.attach_mode == XDP_ATTACHED_MULTI ? "multi-mode" : "unknown",
		 zero_copy ? "zero-copy" : "copy mode");
}

void xdp_sock_close(struct xdp_sock *s)
{
	if (s->xsk)
		xsk_socket__delete(s->xsk);
	if (s->umem)
		xsk_umem__delete(s->umem);
	if (s->area)
		munmap(s->area, UMEM_BYTES);
	s->xsk = NULL;
	s->umem = NULL;
	s->area = NULL;
	s->fd = -1;
}

int xdp_sock_open(struct xdp_sock *s, const char *who, const char *iface, unsigned int queue,
		  const struct xdp_iface *xi)
{
	uint32_t sg = xi->frags ? XDP_USE_SG : 0;
	struct xsk_umem_config uc = {
		.fill_size = XDP_RING, .comp_size = XDP_RING,
		.frame_size = XDP_FRAME, .frame_headroom = 0,
	};
	struct xsk_socket_config sc = {
		.rx_size = XDP_RING, .tx_size = XDP_RING,
		/* our program: libxdp loads none, the socket goes into our map */
		.libxdp_flags = xi->prog_fd >= 0 ? XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD : 0,
	};
	uint32_t idx;
	unsigned int i;
	int err;

	memset(s, 0, sizeof(*s));
	s->fd = -1;
	s->queue = queue;
	snprintf(s->who, sizeof(s->who), "%s: %s queue %u", who, iface, queue);
	s->area = mmap(NULL, UMEM_BYTES, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (s->area == MAP_FAILED) {
		s->area = NULL;
		return -ENOMEM;
	}
	err = xsk_umem__create(&s->umem, s->area, UMEM_BYTES, &s->fill, &s->comp, &uc);
	if (err) {
		s->umem = NULL;
		UVH_ERR("%s: UMEM: %s", s->who, strerror(-err));
		return err;
	}
	/* Zero-copy first; copy mode when the driver has none (veth, most).
	 * EBUSY: the queue still has a socket's pool, which the kernel lets go
	 * of in deferred work after that socket closed (a restart right after
	 * an exit): wait for it, up to a second. */
	for (unsigned int tries = 0;; tries++) {
		sc.bind_flags = (uint16_t)(XDP_USE_NEED_WAKEUP | XDP_ZEROCOPY | sg);
		err = xsk_socket__create(&s->xsk, iface, queue, s->umem, &s->rx, &s->tx, &sc);
		if (!err)
			break;
		UVH_DEBUG("%s: no zero-copy (%s): copy mode", s->who, strerror(-err));
		sc.bind_flags = (uint16_t)(XDP_USE_NEED_WAKEUP | XDP_COPY | sg);
		err = xsk_socket__create(&s->xsk, iface, queue, s->umem, &s->rx, &s->tx, &sc);
		if (err != -EBUSY || tries == 20)
			break;
		usleep(50000);
	}
	if (err) {
		s->xsk = NULL;
		UVH_ERR("%s: AF_XDP socket: %s%s", s->who, strerror(-err),
			err == -EINVAL ? " (has the interface that many queues?)" :
			err == -ENOSPC ? " (a veth: as many RX queues as its peer has TX queues?)" :
			err == -EBUSY ? " (another XDP program on it?)" : "");
		return err;
	}
	s->fd = xsk_socket__fd(s->xsk);
	if (xi->map_fd >= 0 && bpf_map_update_elem(xi->map_fd, &queue, &s->fd, 0)) {
		err = -errno;
		UVH_ERR("%s: into the program's map: %s", s->who, strerror(-err));
		return err;
	}
	s->tx_frags = xi->frags ? XDP_MAX_FRAGS : 1;
	/* the RX half goes to the kernel at once: frames are taken from now on */
	if (xsk_ring_prod__reserve(&s->fill, XDP_HALF, &idx) != XDP_HALF)
		return -EIO;
	for (i = 0; i < XDP_HALF; i++)
		*xsk_ring_prod__fill_addr(&s->fill, idx + i) = (uint64_t)i * XDP_FRAME;
	xsk_ring_prod__submit(&s->fill, XDP_HALF);
	for (i = 0; i < XDP_HALF; i++)
		s->free[i] = RX_END + (uint64_t)i * XDP_FRAME;
	s->nfree = XDP_HALF;
	return 0;
}

/* ---- RX half ---------------------------------------------------------------- */

uint64_t xdp_sock_rx_kernel_drops(struct xdp_sock *s)
{
	struct xdp_statistics st;
	socklen_t len = sizeof(st);
	uint64_t now, d;

	if (getsockopt(s->fd, SOL_XDP, XDP_STATISTICS, &st, &len))
		return 0;
	now = st.rx_dropped + st.rx_ring_full;
	d = now > s->kernel_drops ? now - s->kernel_drops : 0;
	s->kernel_drops = now;
	return d;
}

/* Give @n addresses back to the kernel's fill ring: the RX half's frames
 * number the fill ring's size, so there is always room. */
static void fill(struct xdp_sock *s, const uint64_t *addr, unsigned int n)
{
	uint32_t idx;

	if (!n || xsk_ring_prod__reserve(&s->fill, n, &idx) != n)
		return;
	for (unsigned int i = 0; i < n; i++)
		*xsk_ring_prod__fill_addr(&s->fill, idx + i) = addr[i];
	xsk_ring_prod__submit(&s->fill, n);
}

/* The UMEM frame of RX descriptor @d, or UINT64_MAX when it is not one of
 * the RX half's (never recycled then: never twice in the fill ring). */
static uint64_t rx_base(const struct xdp_desc *d)
{
	uint64_t base = xsk_umem__extract_addr(d->addr);

	if (base >= RX_END || xsk_umem__extract_offset(d->addr) + d->len > XDP_FRAME)
		return UINT64_MAX;
	return base;
}

void xdp_sock_rx_end(struct xdp_sock *s, unsigned int done)
{
	uint64_t rec[XDP_BURST];
	unsigned int k = 0, ndesc = done ? s->rx_end[done - 1] : 0;

	for (unsigned int i = 0; i < ndesc; i++) {
		uint64_t b = rx_base(xsk_ring_cons__rx_desc(&s->rx, s->rx_idx + i));

		if (b != UINT64_MAX)
			rec[k++] = b;
	}
	/* peek moved our cached position past all rx_n: the packets left (and
	 * a last one cut short by the peek) wait there for the next burst */
	if (ndesc < s->rx_n)
		xsk_ring_cons__cancel(&s->rx, s->rx_n - ndesc);
	xsk_ring_cons__release(&s->rx, ndesc);
	fill(s, rec, k);
	s->rx_n = 0;
	s->rx_pkts = 0;
}

unsigned int xdp_sock_rx_begin(struct xdp_sock *s, unsigned int max)
{
	unsigned int i, n = 0;

	if (max > XDP_BURST)
		max = XDP_BURST;
	s->rx_pkts = 0;
	s->rx_n = xsk_ring_cons__peek(&s->rx, XDP_BURST, &s->rx_idx);
	if (!s->rx_n && xsk_ring_prod__needs_wakeup(&s->fill))
		recvfrom(s->fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
	/* whole packets only: a packet's descriptors but its last carry
	 * XDP_PKT_CONTD (multi-buffer); one longer than XDP_MAX_FRAGS is cut
	 * there (the kernel sends no more than 17 frags) */
	for (i = 0; i < s->rx_n && s->rx_pkts < max; i++) {
		const struct xdp_desc *d = xsk_ring_cons__rx_desc(&s->rx, s->rx_idx + i);

		n++;
		if (!(d->options & XDP_PKT_CONTD) || n == XDP_MAX_FRAGS) {
			s->rx_end[s->rx_pkts++] = (uint16_t)(i + 1);
			n = 0;
		}
	}
	if (!s->rx_pkts && s->rx_n == XDP_BURST) {
		/* a burst's worth of one packet's frags: cut it there */
		s->rx_end[s->rx_pkts++] = (uint16_t)s->rx_n;
	}
	return s->rx_pkts;
}

unsigned int xdp_sock_rx_packet(const struct xdp_sock *s, unsigned int i, struct iovec *v,
				 uint32_t *len)
{
	unsigned int from = i ? s->rx_end[i - 1] : 0, n = 0;

	*len = 0;
	for (unsigned int j = from; j < s->rx_end[i]; j++) {
		const struct xdp_desc *d = xsk_ring_cons__rx_desc(&s->rx, s->rx_idx + j);

		/* the kernel wrote it, but it is ours to bound: inside the RX half */
		if (rx_base(d) == UINT64_MAX)
			return 0;
		v[n].iov_base = s->area + d->addr;
		v[n].iov_len = d->len;
		*len += d->len;
		n++;
	}
	return n;
}

uint64_t xdp_sock_rx_flush(struct xdp_sock *s)
{
	uint64_t dropped = 0;
	unsigned int n;

	while ((n = xdp_sock_rx_begin(s, XDP_BURST)) > 0) {
		xdp_sock_rx_end(s, n);
		dropped += n;
	}
	return dropped;
}

/* ---- TX half ---------------------------------------------------------------- */

/* Hand the TX ring to the kernel; in copy mode it sends a batch per call. */
static void tx_kick(struct xdp_sock *s)
{
	int tries = 8;

	s->kick_pending = false;
	if (!xsk_ring_prod__needs_wakeup(&s->tx))
		return;
	while (sendto(s->fd, NULL, 0, MSG_DONTWAIT, NULL, 0) < 0) {
		if (errno == EAGAIN && --tries)
			continue;
		if (errno == EAGAIN || errno == EBUSY || errno == ENOBUFS) {
			s->kick_pending = true;	/* the driver is full: again next time */
		} else if (!s->down) {
			/* ENETDOWN: the link is down; ENXIO: the interface is gone */
			s->down = true;
			s->down_since = uvh_now_ns();
			UVH_WARN("%s: %s: frames to the wire are dropped", s->who,
				 errno == ENXIO ? "the interface is gone" : strerror(errno));
		}
		return;
	}
	if (s->down) {
		s->down = false;
		UVH_INFO("%s: the wire takes frames again", s->who);
	}
}

/* Frames the kernel has sent come back free. */
static void tx_reap(struct xdp_sock *s)
{
	uint32_t idx;
	unsigned int n = xsk_ring_cons__peek(&s->comp, XDP_RING, &idx);

	for (unsigned int i = 0; i < n; i++) {
		uint64_t a = xsk_umem__extract_addr(*xsk_ring_cons__comp_addr(&s->comp, idx + i));

		/* only addresses of the TX half, and never more than it has */
		if (a >= RX_END && a < (uint64_t)UMEM_BYTES && s->nfree < XDP_HALF)
			s->free[s->nfree++] = a;
	}
	if (n)
		xsk_ring_cons__release(&s->comp, n);
}

unsigned int xdp_sock_tx_room(struct xdp_sock *s, unsigned int max)
{
	unsigned int room;

	tx_reap(s);
	if (s->down) {
		/* frames are dropped meanwhile; look at the wire now and then */
		if (uvh_now_ns() - s->down_since > DOWN_RETRY_NS) {
			s->down_since = uvh_now_ns();
			tx_kick(s);
		}
		return max;
	}
	if (s->kick_pending)
		tx_kick(s);
	room = xsk_prod_nb_free(&s->tx, max * s->tx_frags);
	if (room > s->nfree)
		room = s->nfree;
	room /= s->tx_frags;	/* every frame may be as big as the socket takes */
	if (room > max)
		room = max;
	if (!room)
		tx_kick(s);	/* completions come back once the kernel sends */
	return room;
}

bool xdp_sock_tx_put(struct xdp_sock *s, const struct iovec *iov, unsigned int n, size_t skip,
		     uint32_t len)
{
	unsigned int k = (len + XDP_FRAME - 1) / XDP_FRAME, j;
	uint32_t idx, off = 0;

	if (!k)
		k = 1;
	if (s->down || k > s->tx_frags || k > s->nfree || xsk_ring_prod__reserve(&s->tx, k, &idx) != k)
		return false;
	/* a frame bigger than a UMEM frame goes in several, XDP_PKT_CONTD on
	 * all but the last (multi-buffer) */
	for (j = 0; j < k; j++) {
		struct xdp_desc *d = xsk_ring_prod__tx_desc(&s->tx, idx + j);
		uint32_t l = len - off < XDP_FRAME ? len - off : XDP_FRAME;
		uint64_t a = s->free[--s->nfree];

		d->addr = a;
		d->len = (uint32_t)net_iov_read(iov, n, skip + off, s->area + a, l);
		d->options = j + 1 < k ? XDP_PKT_CONTD : 0;
		off += l;
	}
	s->tx_queued += k;
	return true;
}

void xdp_sock_tx_flush(struct xdp_sock *s)
{
	if (!s->tx_queued)
		return;
	xsk_ring_prod__submit(&s->tx, s->tx_queued);
	s->tx_queued = 0;
	tx_kick(s);
}
