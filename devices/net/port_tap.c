/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the tap port. One tap queue fd per queue pair (IFF_MULTI_QUEUE),
 * with the virtio-net header in front of every frame (IFF_VNET_HDR,
 * TUNSETVNETHDRSZ = our header size), so the guest's header reaches the
 * kernel intact and the kernel's reaches the guest.
 *
 * Each ring has its own small io_uring (the engine's ring is private to
 * the engine): TX chains are written with writev straight from the
 * guest's buffers, RX chains are filled with readv straight into them;
 * used entries are pushed only after the CQE, in the order the chains
 * were popped. The guest's kick eventfd is registered as the ring's CQE
 * eventfd, so in event mode a tap completion wakes the engine exactly as
 * a kick does.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "net_internal.h"

#define TAP_SLOTS	32u	/* reads in flight per RX ring (a power of two) */
#define TAP_SLOT_CHAINS	64u	/* a 64 KiB frame (GUEST_TSO) over 1.5 KiB buffers: 44 */
#define TAP_SLOT_IOV	256u
#define TAP_RING	64u
#define TAP_REFUSED	(-EBADMSG)	/* a TX frame we dropped before any write */

/* The port's own state (dev->port_priv). */
struct tap_port {
	char name[16];		/* the interface, as the kernel named it */
	int fds[];		/* one tap queue per pair */
};

static inline struct tap_port *tap_of(const struct uvh_net_dev *dev)
{
	return dev->port_priv;
}

/*
 * A read's buffers: RX chains popped for it. A frame uses the first chains
 * it needs; the others stay with the slot for its next read (a 66-byte ACK
 * must not cost the 44 buffers a 64 KiB segment needs, nor hand them back
 * empty, which a guest counts as errors). Chains are so used out of pop
 * order: IN_ORDER is not offered with a tap.
 */
struct tap_slot {
	struct uvh_vq_chain ch[TAP_SLOT_CHAINS];
	unsigned int nch;
	unsigned int niov;			/* s->iov entries the chains hold */
	struct iovec iov[TAP_SLOT_IOV];		/* what uvh_vq_pop filled */
	struct iovec wiov[TAP_SLOT_IOV];	/* the writable parts, for readv */
	unsigned int nw;
	uint64_t cap;
	bool busy;		/* a read is in flight on it */
};

struct net_tapq {
	struct io_uring ring;
	int fd;
	/* RX: reads in flight */
	struct tap_slot slots[TAP_SLOTS];
	unsigned int count, next;
	struct uvh_vq_used used[TAP_SLOTS * TAP_SLOT_CHAINS];
	unsigned int nused;
	uint64_t rx_frames, rx_bytes, rx_drops;
	/* TX: one burst in flight at a time */
	unsigned int ntx, tx_done;
	int tx_res[UVH_NET_BURST];
};

int net_tap_queue_open(const char *who, char name[16], int flags)
{
	struct ifreq ifr;
	int fd, sz = (int)UVH_NET_HDR_LEN, err;

	fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | flags);
	if (fd < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE;
	memcpy(ifr.ifr_name, name, 16);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0) {
		err = -errno;
		UVH_ERR("%s: tap %s: %s", who, ifr.ifr_name, strerror(-err));
		close(fd);
		return err;
	}
	memcpy(name, ifr.ifr_name, 16);
	return fd;
}

static void tap_close(struct uvh_net_dev *dev);

static int tap_open(struct uvh_net_dev *dev, const struct uvh_net_opts *opts)
{
	const char *name = opts->tap_name;
	struct tap_port *t;
	unsigned int i;
	int fd, err;

	if (name && strlen(name) >= sizeof(t->name))
		return -EINVAL;
	t = malloc(sizeof(*t) + dev->max_pairs * sizeof(t->fds[0]));
	if (!t)
		return -ENOMEM;
	t->name[0] = 0;
	for (i = 0; i < dev->max_pairs; i++)
		t->fds[i] = -1;
	dev->port_priv = t;
	if (name && *name)
		snprintf(t->name, sizeof(t->name), "%s", name);
	for (i = 0; i < dev->max_pairs; i++) {
		/* blocking fd on purpose: io_uring then waits for a frame
		 * (internal poll) instead of failing the read with EAGAIN */
		fd = net_tap_queue_open(dev->name, t->name, 0);
		if (fd < 0) {
			err = fd;
			goto fail;
		}
		t->fds[i] = fd;
	}
	UVH_INFO("%s: tap %s, %u queues", dev->name, t->name, dev->max_pairs);
	return 0;
fail:
	tap_close(dev);
	return err;
}

static void tap_close(struct uvh_net_dev *dev)
{
	struct tap_port *t = tap_of(dev);
	unsigned int i;

	if (!t)
		return;
	for (i = 0; i < dev->max_pairs; i++)
		if (t->fds[i] >= 0)
			close(t->fds[i]);
	free(t);
	dev->port_priv = NULL;
}

const char *uvh_net_tap_name(const struct uvh_net_dev *dev)
{
	return dev->port_ops == &net_port_tap && tap_of(dev) ? tap_of(dev)->name : NULL;
}

static int tap_set_features(struct uvh_net_dev *dev)
{
	struct tap_port *t = tap_of(dev);
	unsigned int off = 0, i;
	int sz = (int)dev->hdr_len;

	/* what the kernel may hand us for the guest: only what it acked
	 * (GUEST_TSO implies GUEST_CSUM: uvh_net_set_features checks) */
	if (dev->features & (1ull << UVH_VIRTIO_NET_F_GUEST_CSUM))
		off |= TUN_F_CSUM;
	if (dev->features & (1ull << UVH_VIRTIO_NET_F_GUEST_TSO4))
		off |= TUN_F_TSO4;
	if (dev->features & (1ull << UVH_VIRTIO_NET_F_GUEST_TSO6))
		off |= TUN_F_TSO6;
	if (dev->features & (1ull << UVH_VIRTIO_NET_F_GUEST_ECN))
		off |= TUN_F_TSO_ECN;
	for (i = 0; t && i < dev->max_pairs; i++) {
		if (ioctl(t->fds[i], TUNSETVNETHDRSZ, &sz) < 0 ||
		    ioctl(t->fds[i], TUNSETOFFLOAD, off) < 0) {
			UVH_ERR("%s: tap offloads: %s", dev->name, strerror(errno));
			return -errno;
		}
	}
	return 0;
}

static int tap_start(struct net_ring *r)
{
	struct net_tapq *q;
	int err;

	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->fd = tap_of(r->dev)->fds[r->pair];
	err = io_uring_queue_init(TAP_RING, &q->ring, 0);
	if (err) {
		free(q);
		return err;
	}
	if (r->kick_fd >= 0) {
		err = io_uring_register_eventfd(&q->ring, r->kick_fd);
		if (err)
			UVH_WARN("%s: ring %u: no completion eventfd (%s): poll mode only",
				 r->dev->name, r->index, strerror(-err));
	}
	r->port_priv = q;
	return 0;
}

/*
 * A read ended: its chains become used entries (pushed by rx_push). Reads
 * end in the order frames arrive, not the order they were posted (the
 * last read posted may well get the first frame), so they are completed
 * in CQE order: that keeps the frames in order, and IN_ORDER is not
 * offered with a tap.
 */
static void rx_slot_done(struct net_ring *r, struct tap_slot *s, int res)
{
	struct uvh_net_dev *dev = r->dev;
	struct net_tapq *q = r->port_priv;
	uint32_t rem = 0, l;
	unsigned int j, k = 0, off;

	if (res > (int)dev->hdr_len) {
		uint16_t nb;

		rem = (uint32_t)res;
		for (j = 0; j < s->nch && rem; j++, k++)
			rem -= rem < s->ch[j].in_len ? rem : s->ch[j].in_len;
		nb = (uint16_t)k;
		/* the kernel writes 10 header bytes and skips num_buffers */
		if (dev->hdr_len == UVH_NET_HDR_LEN)
			net_iov_write(s->wiov, s->nw, 10, &nb, 2);
		q->rx_frames++;
		q->rx_bytes += (uint32_t)res - dev->hdr_len;
		rem = (uint32_t)res;
		/* migration: the kernel wrote these pages; mark them now (the
		 * push cannot find packed chains completed out of order) */
		if (__builtin_expect(r->vq->log != NULL, 0))
			uvh_dirty_log_mark_iov(r->vq->log, r->vq->mem, s->wiov, s->nw, rem);
	} else if (res < 0 && res != -ECANCELED) {
		q->rx_drops++;
	}
	/* a stop (cancelled reads) gives every chain back, 0 bytes for the unused */
	if (res == -ECANCELED)
		k = s->nch;
	for (j = 0; j < k; j++) {
		l = rem < s->ch[j].in_len ? rem : s->ch[j].in_len;
		q->used[q->nused].id = s->ch[j].id;
		q->used[q->nused].ndesc = s->ch[j].ndesc;
		q->used[q->nused].len = l;
		q->nused++;
		rem -= l;
	}
	/* the rest stay for the slot's next read, moved to the front */
	off = k < s->nch ? (unsigned int)(s->ch[k].iov - s->iov) : s->niov;
	if (off && off < s->niov)
		memmove(s->iov, s->iov + off, (s->niov - off) * sizeof(s->iov[0]));
	for (j = k; j < s->nch; j++) {
		s->ch[j - k] = s->ch[j];
		s->ch[j - k].iov -= off;
	}
	s->nch -= k;
	s->niov -= off;
	s->busy = false;
	q->count--;
}

/* A stopped ring: chains slots kept between reads go back, 0 bytes each. */
static void rx_slots_return(struct net_ring *r)
{
	struct net_tapq *q = r->port_priv;

	for (unsigned int i = 0; i < TAP_SLOTS; i++) {
		struct tap_slot *s = &q->slots[i];

		if (s->busy || !s->nch)
			continue;
		s->busy = true;
		q->count++;
		rx_slot_done(r, s, -ECANCELED);
	}
}

static unsigned int rx_push(struct net_ring *r)
{
	struct net_tapq *q = r->port_priv;
	unsigned int n = q->nused;

	if (n)
		uvh_vq_push(r->vq, q->used, n);
	if (q->rx_frames) {
		net_count(&r->packets, q->rx_frames);
		net_count(&r->bytes, q->rx_bytes);
	}
	if (q->rx_drops)
		net_drop(r, UVH_NET_DROP_PORT, q->rx_drops);
	q->nused = 0;
	q->rx_frames = q->rx_bytes = q->rx_drops = 0;
	return n;
}

static unsigned int reap(struct net_ring *r)
{
	struct net_tapq *q = r->port_priv;
	struct io_uring_cqe *cqe;
	unsigned int head, n = 0;

	io_uring_for_each_cqe(&q->ring, head, cqe) {
		uint64_t ud = cqe->user_data;

		n++;
		if (ud == UINT64_MAX)
			continue;	/* a cancel's own completion */
		if (r->is_rx) {
			if (ud < TAP_SLOTS && q->slots[ud].busy)
				rx_slot_done(r, &q->slots[ud], cqe->res);
		} else if (ud < UVH_NET_BURST) {
			q->tx_res[ud] = cqe->res;
			q->tx_done++;
		}
	}
	io_uring_cq_advance(&q->ring, n);
	return n;
}

/* The biggest frame the kernel may hand the guest: a 64 KiB segment with
 * GUEST_TSO, else the MTU (+ Ethernet header and a VLAN tag). */
static uint64_t rx_want(const struct uvh_net_dev *dev)
{
	if (dev->features & (UVH_BIT(UVH_VIRTIO_NET_F_GUEST_TSO4) |
			     UVH_BIT(UVH_VIRTIO_NET_F_GUEST_TSO6)))
		return dev->hdr_len + UVH_NET_MAX_FRAME + 18u;
	return dev->hdr_len + dev->cfg.mtu + 18u;
}

/* Post a read on slot @idx's chains; false when no SQE (cannot happen). */
static bool rx_post(struct net_ring *r, unsigned int idx)
{
	struct net_tapq *q = r->port_priv;
	struct tap_slot *s = &q->slots[idx];
	struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);
	unsigned int i, j;

	if (!sqe)
		return false;	/* TAP_RING > TAP_SLOTS: the chains stay */
	s->nw = 0;
	for (j = 0; j < s->nch; j++)
		for (i = 0; i < s->ch[j].nin; i++)
			s->wiov[s->nw++] = s->ch[j].iov[s->ch[j].nout + i];
	io_uring_prep_readv(sqe, q->fd, s->wiov, s->nw, 0);
	/* offset 0 on a tap is ignored: it is a stream of frames */
	sqe->user_data = idx;
	s->busy = true;
	q->count++;
	return true;
}

/*
 * Post reads on RX chains: every idle slot is topped up from the ring to
 * the biggest frame's size and posted. A slot still short of it (the ring
 * ran dry: Linux refills only once half its ring is used) waits for more
 * buffers rather than risk a big frame the kernel would drop — unless no
 * read would be left posted at all: then the fullest such slot goes.
 * Returns reads posted.
 */
static unsigned int rx_refill(struct net_ring *r)
{
	struct uvh_net_dev *dev = r->dev;
	struct net_tapq *q = r->port_priv;
	uint64_t want = rx_want(dev), best_cap = 0;
	unsigned int posted = 0, k, j, best = TAP_SLOTS;
	bool dry = false;
	int got;

	for (k = 0; k < TAP_SLOTS && q->count < TAP_SLOTS; k++) {
		unsigned int idx = (q->next + k) & (TAP_SLOTS - 1);
		struct tap_slot *s = &q->slots[idx];

		if (s->busy)
			continue;
		s->cap = 0;
		for (j = 0; j < s->nch; j++)
			s->cap += s->ch[j].in_len;
		/* one chain, or (merged buffers) as many as the biggest frame needs */
		while (!dry && (!s->nch || (dev->mrg && s->cap < want)) &&
		       s->nch < TAP_SLOT_CHAINS) {
			struct uvh_vq_chain *c = &s->ch[s->nch];

			if (TAP_SLOT_IOV - s->niov < TAP_SLOT_IOV / 2 && s->nch)
				break;	/* keep a lone pop safe: see net_rx.c's pool */
			got = uvh_vq_pop(r->vq, c, 1, s->iov + s->niov, TAP_SLOT_IOV - s->niov);
			if (got <= 0) {
				dry = true;
				break;
			}
			s->niov += c->nout + c->nin;
			s->cap += c->in_len;
			s->nch++;
		}
		if (!s->nch)
			continue;
		if (dev->mrg && s->cap < want && s->nch < TAP_SLOT_CHAINS &&
		    TAP_SLOT_IOV - s->niov >= TAP_SLOT_IOV / 2) {
			if (s->cap > best_cap) {
				best_cap = s->cap;
				best = idx;
			}
			continue;	/* short: waits for buffers */
		}
		if (!rx_post(r, idx))
			break;
		posted++;
	}
	if (!q->count && best < TAP_SLOTS && rx_post(r, best))
		posted++;
	q->next = (q->next + 1) & (TAP_SLOTS - 1);
	if (posted)
		io_uring_submit(&q->ring);
	return posted;
}

static unsigned int tx_complete(struct net_ring *r)
{
	struct uvh_net_dev *dev = r->dev;
	struct net_tapq *q = r->port_priv;
	unsigned int i, n = q->ntx, good = 0, bad = 0;
	uint64_t bytes = 0;

	for (i = 0; i < n; i++) {
		r->tused[i].id = r->tch[i].id;
		r->tused[i].ndesc = r->tch[i].ndesc;
		r->tused[i].len = 0;
		if (q->tx_res[i] > (int)dev->hdr_len) {
			good++;
			bytes += (uint32_t)q->tx_res[i] - dev->hdr_len;
		} else {
			bad++;
			/* the kernel failed the write (a frame refused before
			 * it has its reason counted already) */
			if (q->tx_res[i] != TAP_REFUSED)
				net_count(&r->why[UVH_NET_DROP_PORT], 1);
		}
	}
	uvh_vq_push(r->vq, r->tused, n);
	net_count(&r->packets, good);
	net_count(&r->bytes, bytes);
	if (bad)
		net_count(&r->drops, bad);
	q->ntx = q->tx_done = 0;
	return n;
}

static unsigned int tx_burst(struct net_ring *r)
{
	struct uvh_net_dev *dev = r->dev;
	struct net_tapq *q = r->port_priv;
	struct io_uring_sqe *sqe;
	unsigned int i, n, sub = 0;
	int got, why;

	got = uvh_vq_pop(r->vq, r->tch, UVH_NET_BURST, r->tiov, NET_TX_IOV);
	if (got <= 0)
		return 0;
	n = (unsigned int)got;
	q->ntx = n;
	q->tx_done = 0;
	r->toff = 0;
	for (i = 0; i < n; i++) {
		const struct uvh_vq_chain *c = &r->tch[i];

		sqe = NULL;
		why = UVH_NET_DROP_RING_OFF;
		if (r->enabled && c->out_len > dev->hdr_len) {
			/* the kernel checks a header too, but not against what
			 * this guest negotiated */
			r->tlen[i] = c->out_len - dev->hdr_len;
			why = c->out_len - dev->hdr_len > NET_MAX_TX ? UVH_NET_DROP_MALFORMED :
								       net_tx_check(r, i);
			if (!why)
				sqe = io_uring_get_sqe(&q->ring);
		} else if (r->enabled) {
			why = UVH_NET_DROP_MALFORMED;
		}
		if (!sqe) {
			q->tx_res[i] = TAP_REFUSED;	/* dropped, completed now */
			q->tx_done++;
			net_why(r, why ? why : UVH_NET_DROP_PORT);
			continue;
		}
		/* the header goes along, as the guest wrote it */
		io_uring_prep_writev(sqe, q->fd, c->iov, c->nout, 0);
		sqe->user_data = i;
		sub++;
	}
	if (sub)
		io_uring_submit(&q->ring);
	return n;
}

static unsigned int tap_process(struct net_ring *r)
{
	struct net_tapq *q = r->port_priv;
	unsigned int work = 0;

	if (!q)
		return 0;
	reap(r);
	if (r->is_rx) {
		work = rx_push(r);
		if (r->enabled)
			rx_refill(r);
		/* With every read posted, buffers the guest posts are not work:
		 * they must not keep a sleeping engine awake (it polled the
		 * ring at 99 % of a core for an idle guest). A read's end wakes
		 * it through the kick eventfd its completions are written to. */
		if (r->eq)
			r->eq->passive = q->count == TAP_SLOTS;
		return work;
	}
	if (q->ntx && q->tx_done == q->ntx)
		work = tx_complete(r);
	if (!q->ntx && tx_burst(r)) {
		/* tap writes normally complete at submit: finish in the same call */
		reap(r);
		if (q->tx_done == q->ntx)
			work += tx_complete(r);
		else
			work++;
	}
	return work;
}

static void tap_stop(struct net_ring *r)
{
	struct net_tapq *q = r->port_priv;
	struct io_uring_sqe *sqe;
	struct __kernel_timespec ts = { .tv_sec = 1 };
	struct io_uring_cqe *cqe;

	if (!q)
		return;
	if ((r->is_rx && q->count) || (!r->is_rx && q->ntx > q->tx_done)) {
		sqe = io_uring_get_sqe(&q->ring);
		if (sqe) {
			io_uring_prep_cancel_fd(sqe, q->fd, IORING_ASYNC_CANCEL_ALL);
			sqe->user_data = UINT64_MAX;
			io_uring_submit(&q->ring);
		}
	}
	/* the buffers are the guest's: wait until the kernel is done with them */
	for (;;) {
		reap(r);
		if (r->is_rx) {
			if (!q->count) {
				rx_slots_return(r);
				rx_push(r);
				break;
			}
			rx_push(r);
		} else if (q->tx_done == q->ntx) {
			if (q->ntx)
				tx_complete(r);
			break;
		}
		if (io_uring_wait_cqe_timeout(&q->ring, &cqe, &ts) == -ETIME) {
			UVH_ERR("%s: ring %u: tap I/O did not end", r->dev->name, r->index);
			break;
		}
	}
	io_uring_queue_exit(&q->ring);
	free(q);
	r->port_priv = NULL;
}

/*
 * Offloads the tap understands in the header we pass through, both ways:
 * the kernel takes TSO frames from the guest as they are, and hands it 64
 * KiB segments (GUEST_TSO4/6, TUNSETOFFLOAD) read across merged buffers.
 * No UFO/USO. No IN_ORDER: a RARP can overtake the tap reads in flight,
 * and slots use their chains out of pop order.
 */
const struct net_port_ops net_port_tap = {
	.name = "tap",
	.features_add = UVH_BIT(UVH_VIRTIO_NET_F_CSUM) | UVH_BIT(UVH_VIRTIO_NET_F_GUEST_CSUM) |
			UVH_BIT(UVH_VIRTIO_NET_F_HOST_TSO4) | UVH_BIT(UVH_VIRTIO_NET_F_HOST_TSO6) |
			UVH_BIT(UVH_VIRTIO_NET_F_HOST_ECN) | UVH_BIT(UVH_VIRTIO_NET_F_GUEST_TSO4) |
			UVH_BIT(UVH_VIRTIO_NET_F_GUEST_TSO6) | UVH_BIT(UVH_VIRTIO_NET_F_GUEST_ECN),
	.features_drop = UVH_BIT(UVH_VIRTIO_F_IN_ORDER),
	.open = tap_open,
	.close = tap_close,
	.set_features = tap_set_features,
	.start = tap_start,
	.stop = tap_stop,
	.process = tap_process,
};
