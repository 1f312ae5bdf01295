/* SPDX-License-Identifier: MIT */
/*
 * uvhost: what virtq.c dispatches to: the split and packed implementations
 * of the device side (virtq_split.c, virtq_packed.c) and of the driver side
 * (virtq_driver_split.c, virtq_driver_packed.c). Not installed.
 */
#ifndef UVHOST_VIRTQ_INTERNAL_H
#define UVHOST_VIRTQ_INTERNAL_H

#include "log.h"
#include "virtq.h"

/*
 * Guest memory is shared with a driver in another thread or process that
 * may touch it at any moment. Every load and store of a ring field is a
 * relaxed atomic: on x86-64 and arm64 the same plain instruction a
 * volatile access gives, and what C11 (and ThreadSanitizer) need in order
 * to see these accesses as intended rather than as data races. Ordering
 * comes from the acquire/release operations and fences named at each use.
 * Naturally aligned accesses only.
 */
static inline uint8_t uvh_shm_load8(const void *p)
{
	return __atomic_load_n((const uint8_t *)p, __ATOMIC_RELAXED);
}

static inline uint16_t uvh_shm_load16(const void *p)
{
	return __atomic_load_n((const uint16_t *)p, __ATOMIC_RELAXED);
}

static inline uint32_t uvh_shm_load32(const void *p)
{
	return __atomic_load_n((const uint32_t *)p, __ATOMIC_RELAXED);
}

static inline uint64_t uvh_shm_load64(const void *p)
{
	return __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED);
}

static inline void uvh_shm_store16(void *p, uint16_t v)
{
	__atomic_store_n((uint16_t *)p, v, __ATOMIC_RELAXED);
}

static inline void uvh_shm_store32(void *p, uint32_t v)
{
	__atomic_store_n((uint32_t *)p, v, __ATOMIC_RELAXED);
}

static inline void uvh_shm_store64(void *p, uint64_t v)
{
	__atomic_store_n((uint64_t *)p, v, __ATOMIC_RELAXED);
}

/* Move the last @k of @n iovecs to the front, the others keeping their
 * order (three reversals): a readable buffer found after writable ones is
 * put back in front of them when strict_order is off. Not a hot path. */
static inline void uvh_iov_reverse(struct iovec *v, unsigned int n)
{
	for (unsigned int i = 0; i < n / 2; i++) {
		struct iovec t = v[i];

		v[i] = v[n - 1 - i];
		v[n - 1 - i] = t;
	}
}

static inline void uvh_iov_rotate_tail(struct iovec *v, unsigned int n, unsigned int k)
{
	uvh_iov_reverse(v, n - k);
	uvh_iov_reverse(v + n - k, k);
	uvh_iov_reverse(v, n);
}

/* Mark @vq broken with @err (logged once, with @detail); returns -EIO. */
int uvh_vq_fail(struct uvh_vq *vq, enum uvh_vq_error err, const char *detail);

/* device side: set up ring pointers from cfg + mem (0 or -EFAULT) */
int uvh_vq_split_map(struct uvh_vq *vq);
int uvh_vq_split_pop(struct uvh_vq *vq, struct uvh_vq_chain *chains, unsigned int max,
		     struct iovec *iov, unsigned int iov_max);
void uvh_vq_split_push(struct uvh_vq *vq, const struct uvh_vq_used *used, unsigned int n);
bool uvh_vq_split_need_call(struct uvh_vq *vq);
bool uvh_vq_split_notify(struct uvh_vq *vq, bool enable);
bool uvh_vq_split_notify_after(struct uvh_vq *vq, unsigned int n);
bool uvh_vq_split_avail_pending(struct uvh_vq *vq);
uint32_t uvh_vq_split_base(const struct uvh_vq *vq);
int uvh_vq_split_unpop(struct uvh_vq *vq, unsigned int n);

int uvh_vq_packed_map(struct uvh_vq *vq);
int uvh_vq_packed_pop(struct uvh_vq *vq, struct uvh_vq_chain *chains, unsigned int max,
		      struct iovec *iov, unsigned int iov_max);
void uvh_vq_packed_push(struct uvh_vq *vq, const struct uvh_vq_used *used, unsigned int n);
bool uvh_vq_packed_need_call(struct uvh_vq *vq);
bool uvh_vq_packed_notify(struct uvh_vq *vq, bool enable);
bool uvh_vq_packed_notify_after(struct uvh_vq *vq, unsigned int n);
bool uvh_vq_packed_avail_pending(struct uvh_vq *vq);
uint32_t uvh_vq_packed_base(const struct uvh_vq *vq);
int uvh_vq_packed_unpop(struct uvh_vq *vq, unsigned int slots);

/* driver side */
int uvh_vq_driver_split_init(struct uvh_vq_driver *drv);
int uvh_vq_driver_split_add(struct uvh_vq_driver *drv, const struct uvh_vq_buf *bufs,
			    unsigned int nout, unsigned int nin, void *token);
int uvh_vq_driver_split_add_burst(struct uvh_vq_driver *drv, const struct uvh_vq_buf *bufs,
				  unsigned int n, bool device_writable, void *const *tokens);
void uvh_vq_driver_split_publish(struct uvh_vq_driver *drv);
bool uvh_vq_driver_split_need_kick(struct uvh_vq_driver *drv);
unsigned int uvh_vq_driver_split_get_used(struct uvh_vq_driver *drv, void **tokens,
					  uint32_t *lens, unsigned int max);
void uvh_vq_driver_split_enable_cb(struct uvh_vq_driver *drv, bool enable);

int uvh_vq_driver_packed_init(struct uvh_vq_driver *drv);
int uvh_vq_driver_packed_add(struct uvh_vq_driver *drv, const struct uvh_vq_buf *bufs,
			     unsigned int nout, unsigned int nin, void *token);
int uvh_vq_driver_packed_add_burst(struct uvh_vq_driver *drv, const struct uvh_vq_buf *bufs,
				   unsigned int n, bool device_writable, void *const *tokens);
void uvh_vq_driver_packed_publish(struct uvh_vq_driver *drv);
bool uvh_vq_driver_packed_need_kick(struct uvh_vq_driver *drv);
unsigned int uvh_vq_driver_packed_get_used(struct uvh_vq_driver *drv, void **tokens,
					   uint32_t *lens, unsigned int max);
void uvh_vq_driver_packed_enable_cb(struct uvh_vq_driver *drv, bool enable);

#endif
