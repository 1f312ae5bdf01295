/* SPDX-License-Identifier: MIT */
/*
 * The conformance front-end: an independent vhost-user front-end and virtio-net driver.
 * Everything here is written from the specifications alone (QEMU's vhost-user.rst, the
 * virtio 1.x split and packed rings, virtio-net), never from uvhost's own headers: a
 * misreading of the spec in uvhost must not be copied into the tool that checks it.
 * Ring layouts come from the Linux uapi headers, which are the spec's own structs.
 */
#ifndef CONFORM_H
#define CONFORM_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdnoreturn.h>
#include <linux/virtio_ring.h>
#include <linux/virtio_net.h>

/* virtio feature bits (virtio 1.x section 6, virtio-net 5.1.3) */
#define F_MRG_RXBUF 15
#define F_NET_MQ 22
#define F_INDIRECT_DESC 28
#define F_EVENT_IDX 29
#define F_PROTOCOL_FEATURES 30 /* vhost-user's own, in the virtio feature word */
#define F_VERSION_1 32
#define F_RING_PACKED 34
/* vhost-user protocol feature bits */
#define PF_MQ 0
#define PF_REPLY_ACK 3

/* vhost-user front-end requests */
enum {
	VU_GET_FEATURES = 1, VU_SET_FEATURES = 2, VU_SET_OWNER = 3, VU_SET_MEM_TABLE = 5,
	VU_SET_VRING_NUM = 8, VU_SET_VRING_ADDR = 9, VU_SET_VRING_BASE = 10,
	VU_GET_VRING_BASE = 11, VU_SET_VRING_KICK = 12, VU_SET_VRING_CALL = 13,
	VU_GET_PROTOCOL_FEATURES = 15, VU_SET_PROTOCOL_FEATURES = 16, VU_GET_QUEUE_NUM = 17,
	VU_SET_VRING_ENABLE = 18,
};
#define VU_VERSION 0x1u
#define VU_REPLY 0x4u
#define VU_NEED_REPLY 0x8u
#define VU_HDR_SIZE 12
#define VU_MAX_REGIONS 8

#define NET_HDR_LEN 12 /* struct virtio_net_hdr_mrg_rxbuf: VERSION_1 always has num_buffers */
#define FRAME_MIN 60
#define FRAME_MAX 1514
#define MAX_RINGS 4 /* RX0 TX0 RX1 TX1; the control ring (4) is never set up */

/* splitmix64: small, fast, and every stream is fixed by its seed. */
static inline uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}
static inline uint32_t rng_below(uint64_t *s, uint32_t n)
{
	return (uint32_t)(((rng_next(s) >> 32) * n) >> 32);
}
static inline uint32_t rng_range(uint64_t *s, uint32_t lo, uint32_t hi)
{
	return lo + rng_below(s, hi - lo + 1);
}
static inline bool rng_pct(uint64_t *s, unsigned pct)
{
	return rng_below(s, 100) < pct;
}
static inline uint64_t rng_seed(uint64_t a, uint64_t b)
{
	uint64_t s = a ^ (b * 0xd1b54a32d192ed03ull);
	return rng_next(&s);
}

/* Failure: print "FAIL seed=S session=K: ..." with the session's state and unwind to the
 * session loop (conform.c). */
noreturn void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The back-end closed a connection that never got a reply: a reused daemon still busy
 * with the previous session's connection. The session loop retries it. */
noreturn void busy_retry(void);
uint64_t now_ns(void);

/* Guest memory: one memfd, one or two regions mapped separately, with guest-physical
 * addresses chosen independently of where the front-end maps them. */
struct gmem {
	int fd;
	unsigned nregions;
	struct {
		uint8_t *va;
		uint64_t gpa, size, offset, used;
	} r[2];
};
void gmem_init(struct gmem *m, uint64_t *rng, unsigned nregions, uint64_t total);
void gmem_free(struct gmem *m);
void *gmem_alloc(struct gmem *m, uint64_t *rng, size_t size, size_t align, uint64_t *gpa);

/* One ring, driver side (vring.c). Buffer ids index slots (data, indirect tables). */
struct vq {
	unsigned index;
	bool packed, event_idx, tx;
	uint16_t num;
	int kickfd, callfd;
	struct vring_desc *desc; /* split */
	struct vring_avail *avail;
	struct vring_used *used;
	struct vring_packed_desc *pdesc; /* packed */
	struct vring_packed_desc_event *drv_ev, *dev_ev;
	uint16_t next_avail, next_used; /* split: free-running; packed: ring position */
	bool avail_wrap, used_wrap;
	uint16_t kick_old;   /* linear avail index at the last notification check */
	uint16_t nfree;      /* free descriptors (split) / ring positions (packed) */
	uint16_t *freelist;  /* split: descriptor indexes; packed: buffer ids */
	uint16_t nfreeids;   /* packed: free buffer ids */
	uint16_t *ndesc;     /* per id: descriptors used, 0 = not in flight */
	int32_t *tag;        /* per id: the caller's tag */
	uint16_t inflight;
	bool armed;          /* used-buffer notifications requested and not yet seen */
	uint8_t *slots;      /* per id: buf_len bytes */
	uint64_t slots_gpa;
	uint32_t buf_len;
	uint8_t *ind;        /* per id: a 2-entry indirect table */
	uint64_t ind_gpa;
	uint64_t ring_uva[3]; /* desc, used/device area, avail/driver area */
};
struct seg { uint64_t gpa; uint32_t len; };
void vq_init(struct vq *q, struct gmem *m, uint64_t *rng, unsigned index, uint16_t num,
	     bool packed, bool event_idx, uint32_t buf_len);
void vq_free(struct vq *q);
int vq_next_id(const struct vq *q, unsigned need);
int vq_add(struct vq *q, const struct seg *s, unsigned n, bool write, bool indirect, int32_t tag);
void vq_publish(struct vq *q);
void vq_notify(struct vq *q, bool always);
bool vq_pending(struct vq *q);
bool vq_get(struct vq *q, uint16_t *id, uint32_t *len, int32_t *tag);
bool vq_arm(struct vq *q);
void vq_disarm(struct vq *q);
uint32_t vq_base(const struct vq *q); /* the vring base the device must report now */
int vq_dump(const struct vq *q, char *buf, size_t size);
static inline uint8_t *vq_slot(const struct vq *q, uint16_t id, uint64_t *gpa)
{
	if (gpa)
		*gpa = q->slots_gpa + (uint64_t)id * q->buf_len;
	return q->slots + (size_t)id * q->buf_len;
}

/* The vhost-user connection (vu.c): requests are sent at once; the replies they solicit are
 * queued and read (and checked) whenever the session chooses, in order. */
struct vu_pending {
	uint32_t req, ring;
	uint64_t *out;
};
struct vu {
	int sock;
	unsigned replies;          /* replies read on this connection */
	struct vu_pending pend[256];
	unsigned head, tail;
};
void vu_connect(struct vu *v, const char *path);
void vu_close(struct vu *v);
void vu_send(struct vu *v, uint32_t req, bool need_reply, const void *payload, uint32_t size,
	     const int *fds, unsigned nfds, uint32_t ring, uint64_t *out);
bool vu_read_reply(struct vu *v, int timeout_ms);
void vu_read_all(struct vu *v);
void vu_check_hangup(struct vu *v);
static inline unsigned vu_outstanding(const struct vu *v)
{
	return v->tail - v->head;
}

/* One session (session.c) */
struct stats {
	unsigned long sessions, frames, dropped, split, packed, burst, pingpong, aborted, busy_retries;
	unsigned long by_mode[3];
};
void session_run(uint64_t seed, unsigned k, const char *sock_path, int pattern,
		 struct stats *st);
void session_cleanup(void);
void session_describe(char *buf, size_t size);
enum { PAT_MIXED, PAT_BURST, PAT_PINGPONG };

#endif
