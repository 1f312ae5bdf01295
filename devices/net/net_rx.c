/* SPDX-License-Identifier: MIT */
/*
 * uvhost: RX delivery into the guest's rings, for every port.
 *
 * A producer (a TX burst, the source generator, RARP) opens an RX ring
 * with net_rx_begin(), puts frames with net_rx_put() and closes it with
 * net_rx_end(), which pushes every used chain at once and asks for one
 * call. RX chains are popped a burst at a time into a per-ring pool and
 * used in pop order (IN_ORDER holds); chains left over stay in the pool
 * for the next frame, and go back to the ring unused when it stops
 * (net_rx_pool_return).
 */
#include <string.h>
#include <sys/eventfd.h>

#include "util.h"
#include "net_internal.h"

/* Copy between a buffer and the bytes at @off of @iov, @len at most, in the
 * direction @to_iov says; returns the bytes copied. */
static size_t iov_copy(const struct iovec *iov, unsigned int n, size_t off, void *buf,
		       size_t len, bool to_iov)
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
		if (to_iov)
			memcpy((uint8_t *)iov[i].iov_base + off, (uint8_t *)buf + done, chunk);
		else
			memcpy((uint8_t *)buf + done, (uint8_t *)iov[i].iov_base + off, chunk);
		done += chunk;
		off = 0;
	}
	return done;
}

size_t net_iov_read(const struct iovec *iov, unsigned int n, size_t off, void *buf, size_t len)
{
	return iov_copy(iov, n, off, buf, len, false);
}

size_t net_iov_write(const struct iovec *iov, unsigned int n, size_t off, const void *buf,
		     size_t len)
{
	return iov_copy(iov, n, off, (void *)buf, len, true);
}

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

void net_rx_begin(struct net_ring *r, unsigned int frames, struct uvh_engine *self)
{
	if (r->shared)
		net_lock(r);
	r->max_frame = net_rx_max_frame(r->dev);	/* once per burst, not per frame */
	if (r->rx) {
		r->rx->self = self;
		r->rx->dry = false;
		r->rx->hint = frames ? (frames < UVH_NET_BURST ? frames : UVH_NET_BURST) : 1;
	}
}

/* Is there a chain for one more frame? (no drop counted) */
bool net_rx_room(struct net_ring *r)
{
	return net_rx_open(r) && pool_get(r, r->rx, 0) != NULL;
}

bool net_rx_put(struct net_ring *r, const struct uvh_virtio_net_hdr *hdr,
		const struct iovec *src, unsigned int nsrc, size_t skip, uint32_t len)
{
	struct uvh_net_dev *dev = r->dev;
	struct net_rxpool *p = r->rx;
	struct uvh_virtio_net_hdr h;
	struct uvh_vq_chain *c;
	struct net_src s, hs;
	struct iovec hv;
	uint32_t need, start, take, left;
	uint64_t cap = 0;
	unsigned int k = 0, j;

	if (unlikely(!net_rx_open(r))) {
		net_drop(r, UVH_NET_DROP_RING_OFF, 1);	/* no pool: counted at once */
		return false;
	}
	/* the receiver's header size: written by its control thread only while
	 * none of its rings runs, so read once this one is known to run */
	need = dev->hdr_len + len;
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
	net_src_init(&s, src, nsrc, skip);
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
				net_copy_to(&s, &c->iov[c->nout], 1, dev->hdr_len, len);
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
			net_src_init(&hs, &hv, 1, 0);
			net_copy_to(&hs, c->iov + c->nout, c->nin, 0, dev->hdr_len);
			start = dev->hdr_len;
		}
		take = c->in_len - start;	/* chain 0 holds the header: checked above */
		if (take > left)
			take = left;
		net_copy_to(&s, c->iov + c->nout, c->nin, start, take);
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
		net_drop(r, UVH_NET_DROP_NO_BUFFER, p->dr);
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

void net_rx_pool_return(struct net_ring *r)
{
	struct net_rxpool *p = r->rx;

	if (!p)
		return;
	rx_flush(r);
	/* Chains popped ahead and not used go back to the ring unused, the
	 * base moving back over them: returned as used with 0 bytes they
	 * would reach the guest as empty packets (Linux counts each as a
	 * length error). With inflight tracking (-EBUSY) they stay in flight
	 * for the restart to resubmit. */
	if (p->n > p->head)
		(void)uvh_vq_unpop(r->vq, &p->ch[p->head], p->n - p->head);
	p->head = p->n = p->iov_used = 0;
}
