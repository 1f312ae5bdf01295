/* SPDX-License-Identifier: MIT */
/*
 * A broken loopback back-end, to prove uvhost-bench's loop check can fail:
 * every frame from TX ring 1 comes back on RX ring 0 whole, its length and
 * sequence number right, but with one byte in the middle of the frame
 * flipped. A checker that compares only lengths, headers or sequence
 * numbers passes it; uvhost-bench must count every frame bad.
 *
 *   flip_backend SOCKET_PATH
 *
 * Serves front-ends on SOCKET_PATH one after another (printing what each
 * got) until one second passes with none, then exits 0. Built on the
 * vhost-user device host (host/devhost.h) with a device of its
 * own: one engine, event mode.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "listener.h"
#include "log.h"
#include "message.h"
#include "devhost.h"

#define BURST		32u
#define HDR_LEN		12u	/* virtio-net header with VERSION_1 */

struct flip {
	struct uvh_devhost *dh;
	struct uvh_vq_chain tx[BURST], rx[BURST];
	struct iovec tx_iov[BURST * 8], rx_iov[BURST * 8];
	struct uvh_vq_used tx_used[BURST], rx_used[BURST];
	unsigned long frames;
};

static uint64_t f_features(void *dev)
{
	(void)dev;
	return 1ull << UVH_VIRTIO_F_VERSION_1 | 1ull << UVH_VIRTIO_F_RING_PACKED |
	       1ull << UVH_VIRTIO_F_RING_EVENT_IDX;
}

static uint32_t f_num_queues(void *dev)
{
	(void)dev;
	return 2;	/* RX 0, TX 1 */
}

static int f_queue_start(void *dev, struct uvh_devhost_queue *q)
{
	q->priv = dev;
	q->eq.passive = q->index == 0;	/* RX: filled by TX bursts */
	return 0;
}

/* Copy @len bytes from @src (skipping @skip) into @dst's writable part,
 * after a zeroed header; returns the bytes written. */
static uint32_t copy_frame(const struct uvh_vq_chain *src, const struct uvh_vq_chain *dst)
{
	uint8_t frame[65536 + HDR_LEN];
	uint32_t len = 0, off = 0;

	for (unsigned int i = 0; i < src->nout && len < sizeof(frame); i++) {
		size_t n = src->iov[i].iov_len;

		if (n > sizeof(frame) - len)
			n = sizeof(frame) - len;
		memcpy(frame + len, src->iov[i].iov_base, n);
		len += (uint32_t)n;
	}
	if (len <= HDR_LEN || dst->in_len < len)
		return 0;
	memset(frame, 0, HDR_LEN);
	frame[10] = 1;			/* num_buffers */
	frame[HDR_LEN + (len - HDR_LEN) / 2] ^= 0x10;	/* the fault */
	for (unsigned int i = dst->nout; i < (unsigned int)dst->nout + dst->nin && off < len;
	     i++) {
		size_t n = dst->iov[i].iov_len;

		if (n > len - off)
			n = len - off;
		memcpy(dst->iov[i].iov_base, frame + off, n);
		off += (uint32_t)n;
	}
	return len;
}

static unsigned int f_process(struct uvh_engine_queue *eq)
{
	struct uvh_devhost_queue *q = uvh_devhost_queue_of(eq), *rxq;
	struct flip *f = q->priv;
	int n, m;

	if (q->index != 1)
		return 0;
	rxq = uvh_devhost_queue(f->dh, 0);
	if (!uvh_devhost_queue_running(rxq) || !rxq->enabled)
		return 0;
	m = uvh_vq_pop(&rxq->vq, f->rx, BURST, f->rx_iov, BURST * 8);
	if (m <= 0)
		return 0;
	n = uvh_vq_pop(&q->vq, f->tx, (unsigned int)m, f->tx_iov, BURST * 8);
	if (n < 0)
		n = 0;
	for (int i = 0; i < n; i++) {
		f->rx_used[i] = (struct uvh_vq_used){ .id = f->rx[i].id, .ndesc = f->rx[i].ndesc,
						      .len = copy_frame(&f->tx[i], &f->rx[i]) };
		f->tx_used[i] = (struct uvh_vq_used){ .id = f->tx[i].id, .ndesc = f->tx[i].ndesc };
	}
	/* RX chains taken beyond the frames there were go back unused */
	uvh_vq_unpop(&rxq->vq, f->rx + n, (unsigned int)(m - n));
	if (!n)
		return 0;
	uvh_vq_push(&rxq->vq, f->rx_used, (unsigned int)n);
	uvh_engine_queue_signal(&rxq->eq);
	uvh_vq_push(&q->vq, f->tx_used, (unsigned int)n);
	f->frames += (unsigned long)n;
	return (unsigned int)n;
}

static const struct uvh_devhost_device_ops flip_ops = {
	.features = f_features,
	.num_queues = f_num_queues,
	.queue_start = f_queue_start,
	.process = f_process,
};

int main(int argc, char **argv)
{
	struct uvh_engine_opts eo = { .name = "flip", .cpu = -1, .numa_node = -1,
				      .mode = UVH_ENGINE_EVENT };
	struct uvh_listener_opts lo = { 0 };
	struct uvh_listener *l;
	struct uvh_engine *e;
	struct flip f = { 0 };
	struct uvh_devhost_opts vo = { .name = "flip", .ops = &flip_ops, .dev = &f,
				   .nengines = 1 };
	int fd, ret;

	if (argc != 2) {
		fprintf(stderr, "usage: flip_backend SOCKET_PATH\n");
		return 2;
	}
	e = uvh_engine_create(&eo);
	if (!e || uvh_engine_start(e))
		return 1;
	vo.engines = &e;
	f.dh = uvh_devhost_new(&vo);
	if (!f.dh || uvh_listener_open(argv[1], &lo, &l))
		return 1;
	printf("flip_backend: listening on %s\n", argv[1]);
	fflush(stdout);
	for (int wait_ms = 30000; (fd = uvh_listener_accept(l, wait_ms)) >= 0; wait_ms = 1000) {
		if (uvh_devhost_connect(f.dh, fd))
			return 1;
		f.frames = 0;
		while ((ret = uvh_devhost_handle(f.dh, 1000)) >= 0)
			;
		uvh_devhost_disconnect(f.dh);
		printf("flip_backend: %lu frames looped back with one byte flipped (%s)\n",
		       f.frames, strerror(-ret));
		fflush(stdout);
	}
	uvh_listener_close(l);
	uvh_devhost_free(f.dh);
	uvh_engine_destroy(e);
	return 0;
}
