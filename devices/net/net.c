/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the virtio-net device: features, config space, control ring,
 * the RX delivery path every port shares, TX bursts, and the glue for
 * devhost.h. Ports are in net_ports.c (switch, source) and
 * net_tap.c (tap).
 *
 * RX delivery: a producer (a TX burst, the source generator, RARP) opens
 * an RX ring with net_rx_begin(), puts frames with net_rx_put() and closes
 * it with net_rx_end(), which pushes every used chain at once and asks for
 * one call. RX chains are popped a burst at a time into a per-ring pool
 * and used in pop order (IN_ORDER holds); chains left over stay in the
 * pool for the next frame, and go back with 0 bytes when the ring stops.
 */
#define UVH_NET_INTERNAL
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>

#include "util.h"
#include "log.h"
#include "message.h"
#include "net.h"
#include "devhost.h"

static _Atomic uint32_t mac_counter;

void net_count(_Atomic uint64_t *c, uint64_t v)
{
	/* single writer: a plain add published with a relaxed store, no lock prefix */
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
			      memory_order_relaxed);
}

/* ---- iovec copies --------------------------------------------------------------- */

/* Read up to @len bytes at byte @off of @iov into @buf; returns bytes read. */
size_t net_iov_read(const struct iovec *iov, unsigned int n, size_t off, void *buf, size_t len)
{
	size_t done = 0, chunk;
	unsigned int i;

	for (i = 0; i < n && done < len; i++) {
		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			continue;
		}
		chunk = iov[i].iov_len - off;
		if (chunk > len - done)
			chunk = len - done;
		memcpy((uint8_t *)buf + done, (uint8_t *)iov[i].iov_base + off, chunk);
		done += chunk;
		off = 0;
	}
	return done;
}

/* A read position in a list of source iovecs. */
struct src_cur {
	const struct iovec *iov;
	unsigned int n;
	size_t off;	/* into iov[0] */
};

static inline void src_init(struct src_cur *s, const struct iovec *iov, unsigned int n, size_t skip)
{
	while (n && skip >= iov->iov_len) {
		skip -= iov->iov_len;
		iov++;
		n--;
	}
	s->iov = iov;
	s->n = n;
	s->off = skip;
}

/*
 * Copy @len bytes from @s into @dst (@nd iovecs) from byte @doff on. The
 * caller made sure both sides hold them (chain lengths were summed by
 * uvh_vq_pop and the source length is known).
 */
static inline void copy_to(struct src_cur *s, const struct iovec *dst, unsigned int nd,
			   size_t doff, size_t len)
{
	size_t room, have, chunk;

	while (nd && doff >= dst->iov_len) {
		doff -= dst->iov_len;
		dst++;
		nd--;
	}
	while (len && nd && s->n) {
		room = dst->iov_len - doff;
		have = s->iov->iov_len - s->off;
		chunk = room < have ? room : have;
		if (chunk > len)
			chunk = len;
		memcpy((uint8_t *)dst->iov_base + doff, (const uint8_t *)s->iov->iov_base + s->off,
		       chunk);
		len -= chunk;
		doff += chunk;
		s->off += chunk;
		if (doff == dst->iov_len) {
			dst++;
			nd--;
			doff = 0;
		}
		if (s->off == s->iov->iov_len) {
			s->iov++;
			s->n--;
			s->off = 0;
		}
	}
}

/* ---- RX delivery --------------------------------------------------------------- */

static void pool_refill(struct net_ring *r, struct net_rxpool *p)
{
	unsigned int room, cap, want, i, off;
	int got;

	if (p->head == p->n) {
		p->head = p->n = p->iov_used = 0;
	} else if (p->head) {
		/* keep the chains of a frame being merged: move them to the front */
		off = (unsigned int)(p->ch[p->head].iov - p->iov);
		memmove(p->iov, p->iov + off, (p->iov_used - off) * sizeof(p->iov[0]));
		for (i = p->head; i < p->n; i++) {
			p->ch[i - p->head] = p->ch[i];
			p->ch[i - p->head].iov -= off;
		}
		p->n -= p->head;
		p->head = 0;
		p->iov_used -= off;
	}
	room = NET_RX_POOL - p->n;
	cap = NET_RX_IOV - p->iov_used;
	/*
	 * uvh_vq_pop marks a ring broken when the first chain of a pop does
	 * not fit the iovecs it is given: pop only with at least half the
	 * pool free, so only a chain of > 512 segments can do that.
	 */
	if (!room || cap < NET_RX_IOV / 2) {
		p->dry = true;
		return;
	}
	/* no more than the frames expected: chains popped and held are
	 * chains another producer (a tap read, the next burst) cannot use */
	want = room < p->hint ? room : p->hint;
	got = uvh_vq_pop(r->vq, p->ch + p->n, want, p->iov + p->iov_used, cap);
	if (got <= 0) {
		p->dry = true;
		return;
	}
	for (i = p->n; i < p->n + (unsigned int)got; i++)
		p->iov_used += p->ch[i].nout + p->ch[i].nin;
	p->n += (unsigned int)got;
}

/* Chain @k after the pool's head, popping more when needed; NULL when dry. */
static inline struct uvh_vq_chain *pool_get(struct net_ring *r, struct net_rxpool *p,
					    unsigned int k)
{
	if (likely(p->head + k < p->n))
		return &p->ch[p->head + k];
	if (p->dry || k >= NET_RX_POOL)
		return NULL;
	pool_refill(r, p);
	return p->head + k < p->n ? &p->ch[p->head + k] : NULL;
}

static void rx_flush(struct net_ring *r)
{
	struct net_rxpool *p = r->rx;

	if (p->nused) {
		uvh_vq_push(r->vq, p->used, p->nused);
		p->nused = 0;
	}
}

static inline void rx_used(struct net_ring *r, const struct uvh_vq_chain *c, uint32_t len)
{
	struct net_rxpool *p = r->rx;

	p->used[p->nused].id = c->id;
	p->used[p->nused].ndesc = c->ndesc;
	p->used[p->nused].len = len;
	p->nused++;
	/* migration: mark what we wrote now, not at push, which cannot find
	 * the buffers of packed chains completed out of order */
	if (unlikely(r->vq->log != NULL) && len)
		uvh_dirty_log_mark_iov(r->vq->log, r->vq->mem, c->iov + c->nout, c->nin, len);
}

/* Is the ring there to receive? (switch: read under the ring's lock) */
static inline bool rx_open(const struct net_ring *r)
{
	return r->running && r->enabled && !uvh_vq_broken(r->vq);
}

void net_rx_begin(struct net_ring *r, unsigned int frames, struct uvh_engine *self)
{
	if (r->shared)
		net_lock(r);
	if (r->rx) {
		r->rx->self = self;
		r->rx->dry = false;
		r->rx->hint = frames ? (frames < UVH_NET_BURST ? frames : UVH_NET_BURST) : 1;
	}
}

/* Is there a chain for one more frame? (no drop counted) */
bool net_rx_room(struct net_ring *r)
{
	return rx_open(r) && pool_get(r, r->rx, 0) != NULL;
}

bool net_rx_put(struct net_ring *r, const struct uvh_virtio_net_hdr *hdr,
		const struct iovec *src, unsigned int nsrc, size_t skip, uint32_t len)
{
	struct uvh_net_dev *dev = r->dev;
	struct net_rxpool *p = r->rx;
	struct uvh_virtio_net_hdr h;
	struct uvh_vq_chain *c;
	struct src_cur s, hs;
	struct iovec hv;
	uint32_t need = dev->hdr_len + len, start, take, left;
	uint64_t cap = 0;
	unsigned int k = 0, j;

	if (unlikely(!rx_open(r))) {
		net_count(&r->drops, 1);	/* no pool: counted at once */
		return false;
	}
	/* room for the chains this frame may take, pushed before they overflow */
	if (unlikely(p->nused + NET_RX_POOL > NET_RX_USED))
		rx_flush(r);
	if (!dev->mrg) {
		c = pool_get(r, p, 0);
		if (unlikely(!c))
			goto drop;
		p->head++;
		if (unlikely(c->in_len < need)) {
			rx_used(r, c, 0);
			goto drop;
		}
		k = 1;
	} else {
		while (cap < need) {
			c = pool_get(r, p, k);
			if (unlikely(!c))
				goto drop;	/* the chains stay pooled for a smaller frame */
			if (unlikely(k == 0 && c->in_len < dev->hdr_len)) {
				/* the spec wants the header in the first buffer */
				p->head++;
				rx_used(r, c, 0);
				goto drop;
			}
			cap += c->in_len;
			k++;
		}
		p->head += k;
	}
	if (hdr)
		h = *hdr;
	else
		memset(&h, 0, sizeof(h));
	h.num_buffers = (uint16_t)k;	/* little-endian hosts only (virtq.h) */
	src_init(&s, src, nsrc, skip);
	if (likely(k == 1)) {
		/* the common case: one chain whose first buffer holds it all */
		c = &p->ch[p->head - 1];
		if (likely(c->nin && c->iov[c->nout].iov_len >= need)) {
			uint8_t *dst = c->iov[c->nout].iov_base;

			if (likely(dev->hdr_len == UVH_NET_HDR_LEN))
				memcpy(dst, &h, UVH_NET_HDR_LEN);
			else
				memcpy(dst, &h, 10);
			if (likely(s.n && s.iov->iov_len - s.off >= len))
				memcpy(dst + dev->hdr_len, (const uint8_t *)s.iov->iov_base + s.off,
				       len);
			else
				copy_to(&s, &c->iov[c->nout], 1, dev->hdr_len, len);
			rx_used(r, c, need);
			goto done;
		}
	}
	hv.iov_base = &h;
	hv.iov_len = dev->hdr_len;
	left = len;
	for (j = 0; j < k; j++) {
		c = &p->ch[p->head - k + j];
		start = 0;
		if (j == 0) {
			src_init(&hs, &hv, 1, 0);
			copy_to(&hs, c->iov + c->nout, c->nin, 0, dev->hdr_len);
			start = dev->hdr_len;
		}
		take = c->in_len - start;	/* chain 0 holds the header: checked above */
		if (take > left)
			take = left;
		copy_to(&s, c->iov + c->nout, c->nin, start, take);
		left -= take;
		rx_used(r, c, start + take);
	}
done:
	p->pk++;
	p->by += len;
	return true;
drop:
	p->dr++;
	return false;
}

void net_rx_end(struct net_ring *r)
{
	bool call = false;
	int fd = -1;

	if (r->rx && (r->rx->pk | r->rx->dr)) {
		struct net_rxpool *p = r->rx;

		net_count(&r->packets, p->pk);
		net_count(&r->bytes, p->by);
		net_count(&r->drops, p->dr);
		p->pk = p->by = p->dr = 0;
	}
	if (r->rx && r->rx->nused && r->running) {
		rx_flush(r);
		if (r->shared) {
			/* another engine may be this ring's producer next: the
			 * call decision is taken under the lock */
			call = uvh_vq_need_call(r->vq);
			if (call && r->engine && r->engine != r->rx->self) {
				/*
				 * The call fd belongs to the serving engine (the host
				 * swaps it on that thread and closes the old one), so
				 * that engine writes it: flag it and wake it through
				 * the kick eventfd, which cannot change while we hold
				 * the lock (a kick fd swap restarts the ring).
				 */
				atomic_store_explicit(&r->call_pending, true, memory_order_release);
				if (r->kick_fd >= 0)
					eventfd_write(r->kick_fd, 1);
				call = false;
			} else {
				fd = r->eq ? r->eq->call_fd : r->call_fd;
			}
		} else if (r->eq) {
			/* same engine (pairs never split): the sweep batches it */
			uvh_engine_queue_signal(r->eq);
		} else {
			call = uvh_vq_need_call(r->vq);
			fd = r->call_fd;
		}
	}
	if (r->shared)
		net_unlock(r);
	if (call && fd >= 0)
		eventfd_write(fd, 1);
}

/*
 * Loopback: a pair's TX ring waits, untouched, while its RX ring cannot
 * take frames (not started yet, or disabled). Its frames can go nowhere
 * else, and a front-end may set the TX ring up before the RX ring with the
 * guest writing frames the instant the last message leaves: consumed then,
 * they would all be dropped. On the pair's engine (both rings' starts,
 * stops and enables run there).
 */
static void loop_hold_tx(struct uvh_net_dev *dev, const struct net_ring *r)
{
	struct net_ring *tx, *rx;

	if (dev->type != UVH_NET_PORT_LOOPBACK || r->is_ctrl)
		return;
	rx = &dev->rings[2 * r->pair];
	tx = &dev->rings[2 * r->pair + 1];
	if (tx->eq)
		uvh_engine_queue_pause(tx->eq, UVH_ENGINE_PAUSE_DEVICE,
				       !(rx->running && rx->enabled));
}

/* ---- RARP ---------------------------------------------------------------------- */

/* The pending RARP: the MAC in bits 0-47, RARP_PENDING set while one waits. */
#define RARP_PENDING	(1ull << 48)

static unsigned int rarp_deliver(struct uvh_net_dev *dev, struct uvh_engine *self)
{
	struct net_ring *rx = &dev->rings[0];
	uint64_t want = atomic_load_explicit(&dev->rarp, memory_order_relaxed);
	uint8_t f[60], mac[6];
	struct iovec v = { f, sizeof(f) };
	bool ok = false;

	if (likely(!(want & RARP_PENDING)))
		return 0;
	for (unsigned int i = 0; i < 6; i++)
		mac[i] = (uint8_t)(want >> (8 * i));
	memset(f, 0, sizeof(f));
	memset(f, 0xff, 6);
	memcpy(f + 6, mac, 6);
	f[12] = 0x80; f[13] = 0x35;		/* ETH_P_RARP */
	f[14] = 0; f[15] = 1;			/* htype Ethernet */
	f[16] = 0x08; f[17] = 0x00;		/* ptype IPv4 */
	f[18] = 6; f[19] = 4;			/* hlen, plen */
	f[20] = 0; f[21] = 3;			/* op: reverse request */
	memcpy(f + 22, mac, 6);			/* sha; spa 0 */
	memcpy(f + 32, mac, 6);			/* tha; tpa 0 */
	net_rx_begin(rx, 1, self);
	if (net_rx_room(rx))
		ok = net_rx_put(rx, NULL, &v, 1, 0, sizeof(f));
	net_rx_end(rx);
	/* done, unless a newer SEND_RARP replaced it meanwhile: that one waits */
	if (ok)
		atomic_compare_exchange_strong_explicit(&dev->rarp, &want, 0,
							memory_order_relaxed, memory_order_relaxed);
	return ok;
}

/* ---- TX and control bursts ------------------------------------------------------- */

static unsigned int tx_process(struct net_ring *r)
{
	struct uvh_net_dev *dev = r->dev;
	struct net_ring *rx = NULL;
	uint64_t bytes = 0;
	unsigned int i, n, good = 0, bad = 0;
	int got;

	got = uvh_vq_pop(r->vq, r->tch, UVH_NET_BURST, r->tiov, NET_TX_IOV);
	if (got <= 0)
		return r->pair == 0 ? rarp_deliver(dev, r->engine) : 0;
	n = (unsigned int)got;
	if (unlikely(!r->enabled)) {
		/* a host that processes a disabled ring: consume without effect */
		bad = n;
	} else if (dev->type == UVH_NET_PORT_SWITCH) {
		good = net_switch_tx(r, n);	/* counts into r itself */
	} else {
		if (dev->type == UVH_NET_PORT_LOOPBACK) {
			rx = &dev->rings[r->index - 1];
			net_rx_begin(rx, n, r->engine);
		}
		for (i = 0; i < n; i++) {
			const struct uvh_vq_chain *c = &r->tch[i];

			if (unlikely(c->out_len < dev->hdr_len ||
				     c->out_len - dev->hdr_len > NET_MAX_TX)) {
				bad++;
				continue;
			}
			good++;
			bytes += c->out_len - dev->hdr_len;
			if (rx)
				net_rx_put(rx, NULL, c->iov, c->nout, dev->hdr_len,
					   c->out_len - dev->hdr_len);
		}
		if (rx)
			net_rx_end(rx);
	}
	for (i = 0; i < n; i++) {
		r->tused[i].id = r->tch[i].id;
		r->tused[i].ndesc = r->tch[i].ndesc;
		r->tused[i].len = 0;	/* nothing written into a TX chain */
	}
	uvh_vq_push(r->vq, r->tused, n);
	if (dev->type != UVH_NET_PORT_SWITCH) {
		net_count(&r->packets, good);
		net_count(&r->bytes, bytes);
	}
	if (bad)
		net_count(&r->drops, bad);
	if (r->pair == 0)
		rarp_deliver(dev, r->engine);
	return n;
}

static uint8_t ctrl_cmd(struct uvh_net_dev *dev, const struct uvh_vq_chain *c)
{
	uint8_t b[8];
	size_t got = net_iov_read(c->iov, c->nout, 0, b, sizeof(b));
	uint16_t pairs;

	if (got < 2)
		return UVH_VIRTIO_NET_ERR;
	switch (b[0]) {
	case UVH_VIRTIO_NET_CTRL_RX:
		/* promisc, allmulti, alluni, nomulti, nouni, nobcast: we filter
		 * nothing, so every mode is already in force (kept for the
		 * device state a migration carries) */
		if (b[1] <= 5 && got >= 3) {
			uint8_t bit = (uint8_t)(1u << b[1]);

			dev->rx_mode = b[2] ? (uint8_t)(dev->rx_mode | bit) :
					      (uint8_t)(dev->rx_mode & ~bit);
			return UVH_VIRTIO_NET_OK;
		}
		break;
	case UVH_VIRTIO_NET_CTRL_MAC:
		if (b[1] == UVH_VIRTIO_NET_CTRL_MAC_TABLE_SET ||
		    (b[1] == UVH_VIRTIO_NET_CTRL_MAC_ADDR_SET && got >= 8))
			return UVH_VIRTIO_NET_OK;
		break;
	case UVH_VIRTIO_NET_CTRL_MQ:
		if (b[1] != UVH_VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET || got < 4 ||
		    !(dev->features & UVH_BIT(UVH_VIRTIO_NET_F_MQ)))
			break;
		pairs = (uint16_t)(b[2] | b[3] << 8);
		if (pairs < 1 || pairs > dev->max_pairs)
			break;
		atomic_store_explicit(&dev->active_pairs, pairs, memory_order_relaxed);
		UVH_DEBUG("%s: %u queue pairs active", dev->name, pairs);
		return UVH_VIRTIO_NET_OK;
	case UVH_VIRTIO_NET_CTRL_ANNOUNCE:
		return UVH_VIRTIO_NET_OK;
	}
	return UVH_VIRTIO_NET_ERR;
}

static unsigned int ctrl_process(struct net_ring *r)
{
	struct uvh_net_dev *dev = r->dev;
	unsigned int i, n;
	uint8_t ack;
	struct iovec v = { &ack, 1 };
	struct src_cur s;
	int got;

	got = uvh_vq_pop(r->vq, r->tch, UVH_NET_BURST, r->tiov, NET_TX_IOV);
	if (got <= 0)
		return 0;
	n = (unsigned int)got;
	for (i = 0; i < n; i++) {
		const struct uvh_vq_chain *c = &r->tch[i];

		ack = ctrl_cmd(dev, c);
		r->tused[i].id = c->id;
		r->tused[i].ndesc = c->ndesc;
		r->tused[i].len = 0;
		/* the ack is the last writable byte (the spec's layout puts it alone there) */
		if (c->in_len >= 1) {
			src_init(&s, &v, 1, 0);
			copy_to(&s, c->iov + c->nout, c->nin, c->in_len - 1, 1);
			r->tused[i].len = c->in_len;
		}
	}
	uvh_vq_push(r->vq, r->tused, n);
	net_count(&dev->ctrl_cmds, n);
	return n;
}

unsigned int uvh_net_queue_process(struct uvh_net_dev *dev, uint32_t index)
{
	struct net_ring *r;
	unsigned int work = 0;

	if (unlikely(index >= dev->nrings))
		return 0;
	r = &dev->rings[index];
	if (unlikely(!r->running))
		return 0;
	if (r->is_ctrl)
		return ctrl_process(r);
	if (dev->type == UVH_NET_PORT_TAP)
		work = net_tap_process(r);
	else if (!r->is_rx)
		return tx_process(r);
	else if (dev->type == UVH_NET_PORT_SOURCE)
		work = net_source_rx(r);
	if (r->is_rx && index == 0)
		work += rarp_deliver(dev, r->engine);
	/* pairs with the release in net_rx_end: a producer on another engine
	 * decided the guest wants a call on this ring */
	if (r->shared && atomic_load_explicit(&r->call_pending, memory_order_relaxed) &&
	    atomic_exchange_explicit(&r->call_pending, false, memory_order_acquire)) {
		int fd = r->eq ? r->eq->call_fd : r->call_fd;

		if (fd >= 0)
			eventfd_write(fd, 1);
	}
	return work;
}

/* ---- device ------------------------------------------------------------------------ */

struct uvh_net_dev *uvh_net_create(const struct uvh_net_opts *opts)
{
	static const uint8_t zero[6];
	struct uvh_net_dev *dev;
	unsigned int pairs, i;
	uint32_t id;
	int err;

	if (!opts || opts->type > UVH_NET_PORT_TAP)
		goto inval;
	pairs = opts->queue_pairs ? opts->queue_pairs : 1;
	if (pairs > UVH_NET_MAX_PAIRS)
		goto inval;
	if (opts->mtu && (opts->mtu < 68 || opts->mtu > UVH_NET_MAX_FRAME - 14))
		goto inval;
	if (opts->frame_size && (opts->frame_size < 60 || opts->frame_size > UVH_NET_MAX_FRAME))
		goto inval;
	if (opts->type == UVH_NET_PORT_SWITCH && !opts->sw)
		goto inval;
	if (opts->tap_name && strlen(opts->tap_name) > 15)
		goto inval;
	dev = calloc(1, sizeof(*dev) + (2 * pairs + 1) * sizeof(dev->rings[0]));
	if (!dev)
		return NULL;
	snprintf(dev->name, sizeof(dev->name), "%s", opts->name ? opts->name : "net");
	dev->type = opts->type;
	dev->max_pairs = pairs;
	dev->nrings = 2 * pairs + 1;
	atomic_init(&dev->active_pairs, 1);
	dev->hdr_len = UVH_NET_HDR_LEN;
	dev->frame_size = opts->frame_size ? opts->frame_size : 64;
	dev->port = -1;
	if (memcmp(opts->mac, zero, 6)) {
		memcpy(dev->cfg.mac, opts->mac, 6);
	} else {
		id = atomic_fetch_add(&mac_counter, 1) + 1;
		dev->cfg.mac[0] = 0x02; dev->cfg.mac[1] = 0x75;
		dev->cfg.mac[2] = 0x76; dev->cfg.mac[3] = 0x68;
		dev->cfg.mac[4] = (uint8_t)(id >> 8); dev->cfg.mac[5] = (uint8_t)id;
	}
	dev->cfg.status = UVH_VIRTIO_NET_S_LINK_UP;
	dev->cfg.max_virtqueue_pairs = (uint16_t)pairs;
	dev->cfg.mtu = opts->mtu ? opts->mtu : 1500;
	for (i = 0; i < dev->nrings; i++) {
		struct net_ring *r = &dev->rings[i];

		r->dev = dev;
		r->index = i;
		r->pair = i / 2;
		r->is_ctrl = i == 2 * pairs;
		r->is_rx = !r->is_ctrl && !(i & 1);
		r->kick_fd = r->call_fd = -1;
		atomic_init(&r->lock, 0);
		r->shared = r->is_rx && opts->type == UVH_NET_PORT_SWITCH;
	}
	if (opts->type == UVH_NET_PORT_SWITCH) {
		err = net_switch_join(opts->sw, dev);
		if (err)
			goto fail;
	}
	if (opts->type == UVH_NET_PORT_TAP) {
		err = net_tap_open(dev, opts->tap_name);
		if (err)
			goto fail;
	}
	return dev;
fail:
	uvh_net_destroy(dev);
	errno = -err;
	return NULL;
inval:
	errno = EINVAL;
	return NULL;
}

void uvh_net_destroy(struct uvh_net_dev *dev)
{
	unsigned int i;

	if (!dev)
		return;
	for (i = 0; i < dev->nrings; i++) {
		struct net_ring *r = &dev->rings[i];

		if (r->running) {
			UVH_WARN("%s: destroyed with ring %u running", dev->name, i);
			uvh_net_queue_stop(dev, i);
		}
		free(r->tch);
		free(r->tiov);
		free(r->tused);
		free(r->rx);
		free(r->frame);
	}
	if (dev->sw && dev->port >= 0)
		net_switch_leave(dev->sw, dev);
	if (dev->type == UVH_NET_PORT_TAP)
		net_tap_close(dev);
	free(dev);
}

const char *uvh_net_name(const struct uvh_net_dev *dev)
{
	return dev->name;
}

enum uvh_net_port_type uvh_net_type(const struct uvh_net_dev *dev)
{
	return dev->type;
}

const char *uvh_net_tap_name(const struct uvh_net_dev *dev)
{
	return dev->type == UVH_NET_PORT_TAP ? dev->tap_name : NULL;
}

uint64_t uvh_net_features(const struct uvh_net_dev *dev)
{
	uint64_t f = UVH_BIT(UVH_VIRTIO_F_VERSION_1) | UVH_BIT(UVH_VIRTIO_NET_F_MRG_RXBUF) |
		     UVH_BIT(UVH_VIRTIO_NET_F_MAC) | UVH_BIT(UVH_VIRTIO_NET_F_STATUS) |
		     UVH_BIT(UVH_VIRTIO_NET_F_MTU) | UVH_BIT(UVH_VIRTIO_NET_F_CTRL_VQ) |
		     UVH_BIT(UVH_VIRTIO_NET_F_CTRL_RX) | UVH_BIT(UVH_VIRTIO_F_RING_EVENT_IDX) |
		     UVH_BIT(UVH_VIRTIO_F_RING_INDIRECT_DESC) | UVH_BIT(UVH_VIRTIO_F_RING_PACKED);

	if (dev->max_pairs > 1)
		f |= UVH_BIT(UVH_VIRTIO_NET_F_MQ);
	if (dev->type == UVH_NET_PORT_TAP) {
		/*
		 * Offloads the tap understands in the header we pass through.
		 * No GUEST_TSO/UFO: a 64 KiB frame from the tap would need RX
		 * chains merged before its size is known. No IN_ORDER: a RARP
		 * can overtake the tap reads in flight.
		 */
		f |= UVH_BIT(UVH_VIRTIO_NET_F_CSUM) | UVH_BIT(UVH_VIRTIO_NET_F_GUEST_CSUM) |
		     UVH_BIT(UVH_VIRTIO_NET_F_HOST_TSO4) | UVH_BIT(UVH_VIRTIO_NET_F_HOST_TSO6) |
		     UVH_BIT(UVH_VIRTIO_NET_F_HOST_ECN);
	} else {
		f |= UVH_BIT(UVH_VIRTIO_F_IN_ORDER);
	}
	return f;
}

int uvh_net_set_features(struct uvh_net_dev *dev, uint64_t features)
{
	features &= uvh_net_features(dev);
	/* again while rings run (LOG_ALL toggled): write nothing they read */
	if (dev->features_set && features == dev->features)
		return 0;
	dev->features_set = true;
	dev->features = features;
	dev->mrg = !!(dev->features & UVH_BIT(UVH_VIRTIO_NET_F_MRG_RXBUF));
	dev->hdr_len = (dev->mrg || (dev->features & UVH_BIT(UVH_VIRTIO_F_VERSION_1))) ?
		       UVH_NET_HDR_LEN : 10;
	if (dev->type == UVH_NET_PORT_TAP)
		return net_tap_set_offloads(dev);
	return 0;
}

uint32_t uvh_net_num_queues(const struct uvh_net_dev *dev)
{
	return dev->nrings;
}

uint32_t uvh_net_max_pairs(const struct uvh_net_dev *dev)
{
	return dev->max_pairs;
}

uint32_t uvh_net_active_pairs(const struct uvh_net_dev *dev)
{
	return atomic_load_explicit(&((struct uvh_net_dev *)dev)->active_pairs,
				    memory_order_relaxed);
}

int uvh_net_get_config(const struct uvh_net_dev *dev, uint32_t offset, uint32_t size,
		       uint8_t *buf)
{
	uint8_t space[UVH_CONFIG_MAX_SIZE];

	if (offset > UVH_CONFIG_MAX_SIZE || size > UVH_CONFIG_MAX_SIZE - offset)
		return -EINVAL;
	memset(space, 0, sizeof(space));
	/* the struct is packed little-endian, as the spec lays it out */
	memcpy(space, &dev->cfg, sizeof(dev->cfg));
	memcpy(buf, space + offset, size);
	return 0;
}

int uvh_net_send_rarp(struct uvh_net_dev *dev, const uint8_t mac[6])
{
	uint64_t v = RARP_PENDING;

	/* the MAC and the request in one word: an engine takes both or neither */
	for (unsigned int i = 0; i < 6; i++)
		v |= (uint64_t)mac[i] << (8 * i);
	atomic_store_explicit(&dev->rarp, v, memory_order_relaxed);
	return 0;
}

int uvh_net_set_mtu(struct uvh_net_dev *dev, uint16_t mtu)
{
	if (mtu < 68 || mtu > UVH_NET_MAX_FRAME - 14)
		return -EINVAL;
	dev->cfg.mtu = mtu;
	return 0;
}

void uvh_net_reset(struct uvh_net_dev *dev)
{
	dev->features = 0;
	dev->features_set = false;
	dev->mrg = false;
	dev->hdr_len = UVH_NET_HDR_LEN;
	dev->rx_mode = 0;
	atomic_store(&dev->active_pairs, 1);
	atomic_store(&dev->rarp, 0);
}

/* ---- rings ------------------------------------------------------------------------- */

int uvh_net_queue_start(struct uvh_net_dev *dev, uint32_t index, const struct uvh_net_binding *b)
{
	struct net_ring *r;
	int err;

	if (index >= dev->nrings || !b || !b->vq)
		return -EINVAL;
	r = &dev->rings[index];
	if (r->running)
		return -EBUSY;
	if (r->is_rx) {
		if (!r->rx && !(r->rx = calloc(1, sizeof(*r->rx))))
			return -ENOMEM;
		if (dev->type == UVH_NET_PORT_SOURCE && !r->frame) {
			r->frame = malloc(dev->frame_size);
			if (!r->frame)
				return -ENOMEM;
			net_source_init(dev, r->frame, index);
		}
		memset(r->rx, 0, sizeof(*r->rx));
	} else if (!r->tch) {
		r->tch = calloc(UVH_NET_BURST, sizeof(*r->tch));
		r->tiov = calloc(NET_TX_IOV, sizeof(*r->tiov));
		r->tused = calloc(UVH_NET_BURST, sizeof(*r->tused));
		if (!r->tch || !r->tiov || !r->tused) {
			free(r->tch);
			free(r->tiov);
			free(r->tused);
			r->tch = NULL;
			r->tiov = NULL;
			r->tused = NULL;
			return -ENOMEM;
		}
	}
	/* RX rings that TX bursts fill on demand (loopback, switch; sink's
	 * only get RARPs): buffers posted there are not work for the engine,
	 * and the guest need not kick them */
	if (b->eq)
		b->eq->passive = r->is_rx && (dev->type == UVH_NET_PORT_LOOPBACK ||
					      dev->type == UVH_NET_PORT_SWITCH ||
					      dev->type == UVH_NET_PORT_SINK);
	if (r->shared)
		net_lock(r);
	r->vq = b->vq;
	r->eq = b->eq;
	r->engine = b->engine;
	r->kick_fd = b->kick_fd;
	r->call_fd = b->call_fd;
	r->enabled = b->enabled;
	if (dev->type == UVH_NET_PORT_TAP && !r->is_ctrl) {
		err = net_tap_start(r);
		if (err) {
			if (r->shared)
				net_unlock(r);
			return err;
		}
	}
	r->running = true;
	if (r->shared)
		net_unlock(r);
	loop_hold_tx(dev, r);
	return 0;
}

void uvh_net_queue_stop(struct uvh_net_dev *dev, uint32_t index)
{
	struct net_ring *r;
	struct net_rxpool *p;

	if (index >= dev->nrings)
		return;
	r = &dev->rings[index];
	if (!r->running)
		return;
	if (r->shared)
		net_lock(r);
	if (dev->type == UVH_NET_PORT_TAP && !r->is_ctrl)
		net_tap_stop(r);
	p = r->rx;
	if (p) {
		rx_flush(r);
		/* Chains popped ahead and not used go back to the ring unused,
		 * the base moving back over them: returned as used with 0 bytes
		 * they would reach the guest as empty packets (Linux counts each
		 * as a length error). With inflight tracking (-EBUSY) they stay
		 * in flight for the restart to resubmit. */
		if (p->n > p->head)
			(void)uvh_vq_unpop(r->vq, &p->ch[p->head], p->n - p->head);
		p->head = p->n = p->iov_used = 0;
	}
	r->running = false;
	atomic_store(&r->call_pending, false);
	if (r->is_rx)
		loop_hold_tx(dev, r);
	r->vq = NULL;
	r->eq = NULL;
	r->engine = NULL;
	if (r->shared)
		net_unlock(r);
}

void uvh_net_queue_enable(struct uvh_net_dev *dev, uint32_t index, bool enable)
{
	struct net_ring *r;

	if (index >= dev->nrings)
		return;
	r = &dev->rings[index];
	if (r->shared)
		net_lock(r);
	r->enabled = enable;
	if (r->shared)
		net_unlock(r);
	if (r->is_rx)
		loop_hold_tx(dev, r);
}

void uvh_net_get_stats(const struct uvh_net_dev *dev, struct uvh_net_stats *st)
{
	unsigned int i;

	memset(st, 0, sizeof(*st));
	for (i = 0; i < dev->nrings; i++) {
		const struct net_ring *r = &dev->rings[i];
		uint64_t pk = atomic_load_explicit(&r->packets, memory_order_relaxed);
		uint64_t by = atomic_load_explicit(&r->bytes, memory_order_relaxed);
		uint64_t dr = atomic_load_explicit(&r->drops, memory_order_relaxed);

		if (r->is_ctrl)
			continue;
		if (r->is_rx) {
			st->tx_packets += pk;
			st->tx_bytes += by;
			st->tx_drops += dr;
		} else {
			st->rx_packets += pk;
			st->rx_bytes += by;
			st->rx_drops += dr;
		}
	}
	st->ctrl_cmds = atomic_load_explicit(&dev->ctrl_cmds, memory_order_relaxed);
}

/* ---- devhost.h glue ------------------------------------------------------------ */

static uint64_t dh_features(void *dev)
{
	return uvh_net_features(dev);
}

static uint64_t dh_protocol_features(void *dev)
{
	(void)dev;
	return UVH_BIT(UVH_PROTOCOL_F_MQ) | UVH_BIT(UVH_PROTOCOL_F_RARP) | UVH_BIT(UVH_PROTOCOL_F_NET_MTU);
}

static int dh_set_features(void *dev, uint64_t features)
{
	return uvh_net_set_features(dev, features);
}

static uint32_t dh_num_queues(void *dev)
{
	return uvh_net_num_queues(dev);
}

static uint64_t dh_queue_num_reply(void *dev)
{
	return uvh_net_max_pairs(dev);
}

static uint32_t dh_engine_for_queue(void *dev, uint32_t index, uint32_t nengines)
{
	struct uvh_net_dev *d = dev;

	if (index >= 2 * d->max_pairs || !nengines)
		return 0;	/* the control ring: rare, anywhere */
	return (index / 2) % nengines;	/* both rings of a pair together */
}

/* Transmit rings (odd, below the control ring) carry only frames to read. */
static bool dh_queue_device_reads_only(void *dev, uint32_t index)
{
	struct uvh_net_dev *d = dev;

	return index < 2 * d->max_pairs && (index & 1);
}

static int dh_get_config(void *dev, uint32_t offset, uint32_t size, uint8_t *buf)
{
	return uvh_net_get_config(dev, offset, size, buf);
}

static int dh_queue_start(void *dev, struct uvh_devhost_queue *q)
{
	struct uvh_net_dev *d = dev;
	struct uvh_net_binding b = {
		.vq = &q->vq,
		.eq = &q->eq,
		.engine = q->engine,
		.kick_fd = q->eq.kick_fd,
		.call_fd = q->eq.call_fd,
		.enabled = q->enabled,
	};
	int err = uvh_net_queue_start(d, q->index, &b);

	if (!err)
		q->priv = &d->rings[q->index];
	return err;
}

static void dh_queue_stop(void *dev, struct uvh_devhost_queue *q)
{
	uvh_net_queue_stop(dev, q->index);
	q->priv = NULL;
}

static unsigned int dh_process(struct uvh_engine_queue *eq)
{
	struct uvh_devhost_queue *q = uvh_devhost_queue_of(eq);
	struct net_ring *r = q->priv;

	if (unlikely(!r))
		return 0;
	return uvh_net_queue_process(r->dev, r->index);
}

static void dh_queue_enable(void *dev, struct uvh_devhost_queue *q, bool enable)
{
	uvh_net_queue_enable(dev, q->index, enable);
}

static void dh_reset(void *dev)
{
	uvh_net_reset(dev);
}

static int dh_device_request(void *dev, uint32_t request, const void *payload, uint32_t size)
{
	uint64_t mtu;

	switch (request) {
	case UVH_REQ_SEND_RARP:
		return size >= 6 ? uvh_net_send_rarp(dev, payload) : -EINVAL;
	case UVH_REQ_NET_SET_MTU:
		if (size < sizeof(mtu))
			return -EINVAL;
		memcpy(&mtu, payload, sizeof(mtu));
		return mtu > UINT16_MAX ? -EINVAL : uvh_net_set_mtu(dev, (uint16_t)mtu);
	}
	return -ENOSYS;
}

static int dh_save_state(void *dev, void *buf, size_t size)
{
	return uvh_net_state_save(dev, buf, size);
}

static int dh_load_state(void *dev, const void *buf, size_t len)
{
	return uvh_net_state_load(dev, buf, len);
}

const struct uvh_devhost_device_ops uvh_net_devhost_ops = {
	.features = dh_features,
	.protocol_features = dh_protocol_features,
	.set_features = dh_set_features,
	.num_queues = dh_num_queues,
	.queue_num_reply = dh_queue_num_reply,
	.engine_for_queue = dh_engine_for_queue,
	.queue_device_reads_only = dh_queue_device_reads_only,
	.get_config = dh_get_config,
	.queue_start = dh_queue_start,
	.queue_stop = dh_queue_stop,
	.process = dh_process,
	.queue_enable = dh_queue_enable,
	.reset = dh_reset,
	.device_request = dh_device_request,
	.save_state = dh_save_state,
	.load_state = dh_load_state,
};
