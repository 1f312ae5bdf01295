/* SPDX-License-Identifier: MIT */
/*
 * uvhost: virtqueues, the part common to split and packed rings: set-up,
 * memory table switches, error marking, and the dispatch to the split
 * (virtq_split.c, virtq_driver_split.c) and packed (virtq_packed.c,
 * virtq_driver_packed.c) implementations.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "virtq_internal.h"

/* Areas of a driver-laid-out ring start on a cache line, so the device's
 * writes (used ring) never share a line with the driver's (avail ring). */
#define DRV_AREA_ALIGN	64u

static size_t align_up(size_t v, size_t a)
{
	return (v + a - 1) & ~(a - 1);
}

size_t uvh_vring_desc_bytes(uint16_t size, bool packed)
{
	(void)packed;	/* both are 16-byte entries */
	return (size_t)size * 16u;
}

size_t uvh_vring_driver_bytes(uint16_t size, bool packed)
{
	if (packed)
		return sizeof(struct uvh_vring_packed_event);
	/* flags, idx, ring[size], used_event */
	return 4u + 2u * (size_t)size + 2u;
}

size_t uvh_vring_device_bytes(uint16_t size, bool packed)
{
	if (packed)
		return sizeof(struct uvh_vring_packed_event);
	/* flags, idx, ring[size], avail_event */
	return 4u + 8u * (size_t)size + 2u;
}

static const char *const vq_errors[UVH_VQ_ERR_COUNT] = {
	[UVH_VQ_OK] = "no error",
	[UVH_VQ_ERR_RING_ADDR] = "ring area not in guest memory",
	[UVH_VQ_ERR_AVAIL_IDX] = "avail index moved by more than the queue size",
	[UVH_VQ_ERR_DESC_INDEX] = "descriptor index out of range",
	[UVH_VQ_ERR_DESC_ADDR] = "buffer outside guest memory",
	[UVH_VQ_ERR_CHAIN_LOOP] = "descriptor chain loops",
	[UVH_VQ_ERR_LEN_OVERFLOW] = "chain length overflows 32 bits",
	[UVH_VQ_ERR_NESTED_INDIRECT] = "indirect descriptor inside an indirect table",
	[UVH_VQ_ERR_INDIRECT_SIZE] = "bad indirect table size",
	[UVH_VQ_ERR_INDIRECT_FEATURE] = "indirect descriptor without INDIRECT_DESC",
	[UVH_VQ_ERR_WRITE_ORDER] = "device-readable descriptor after a writable one",
	[UVH_VQ_ERR_TOO_MANY_SEGMENTS] = "chain has more segments than the iovec pool",
	[UVH_VQ_ERR_BUFFER_ID] = "buffer id out of range",
	[UVH_VQ_ERR_IOTLB] = "IOVA translation failed",
};

const char *uvh_vq_strerror(enum uvh_vq_error err)
{
	if ((unsigned int)err >= UVH_VQ_ERR_COUNT)
		return "unknown virtqueue error";
	return vq_errors[err];
}

int uvh_vq_fail(struct uvh_vq *vq, enum uvh_vq_error err, const char *detail)
{
	/* The first reason is the one worth keeping; later faults are noise
	 * from a ring we no longer touch. */
	if (vq->error == UVH_VQ_OK) {
		__atomic_store_n(&vq->error, err, __ATOMIC_RELAXED);	/* uvh_vq_broken() */
		UVH_ERR("virtq: queue broken: %s%s%s", uvh_vq_strerror(err),
			detail ? ": " : "", detail ? detail : "");
	}
	return -EIO;
}

/* ---- IOTLB (VIRTIO_F_IOMMU_PLATFORM) ---------------------------------------- */

static void iotlb_report_miss(struct uvh_vq *vq, uint64_t iova, uint8_t perm)
{
	/* a queue blocked on one chain is swept again and again: ask once */
	if (vq->miss_reported && vq->miss_iova == iova)
		return;
	vq->miss_reported = true;
	vq->miss_iova = iova;
	if (vq->cfg.iotlb_miss)
		vq->cfg.iotlb_miss(vq->cfg.iotlb_opaque, vq, iova, perm, UVH_IOTLB_MISS);
}

/*
 * The translation behind uvh_vq_iova_to_iov() and the ring areas: IOVA ->
 * front-end virtual (IOTLB entry by entry) -> guest-physical -> our
 * pointer (region by region). @log marks writable pieces dirty.
 */
static int iova_translate(struct uvh_vq *vq, uint64_t iova, uint64_t len, uint8_t perm,
			  struct iovec *iov, unsigned int max, bool log)
{
	unsigned int n = 0;

	if (iova + len < iova)
		return -EFAULT;
	while (len) {
		uint64_t uva, contig, gpa;
		int ret;

		ret = uvh_iotlb_translate(vq->cfg.iotlb, iova, len, perm, &uva, &contig);
		if (ret == -ENOENT) {
			iotlb_report_miss(vq, iova, perm);
			return ret;
		}
		if (ret == -EACCES && vq->cfg.iotlb_miss)
			vq->cfg.iotlb_miss(vq->cfg.iotlb_opaque, vq, iova, perm,
					   UVH_IOTLB_ACCESS_FAIL);
		if (ret < 0)
			return ret;
		if (!contig)
			return -EFAULT;	/* a cache bug, never loop on it */
		/* the entry's front-end range may still span memory regions */
		while (contig) {
			const struct uvh_memory_region *r;
			uint64_t piece;

			if (!uvh_memory_uva_to_gpa(vq->mem, uva, &gpa))
				return -EFAULT;
			r = uvh_memory_find_gpa(vq->mem, gpa);
			if (!r)
				return -EFAULT;
			piece = r->size - (gpa - r->gpa);
			if (piece > contig)
				piece = contig;
			if (n >= max)
				return -ENOBUFS;
			iov[n].iov_base = r->hva + (gpa - r->gpa);
			iov[n].iov_len = piece;
			n++;
			if (log && vq->log && (perm & UVH_IOTLB_WO))
				uvh_dirty_log_mark(vq->log, gpa, piece);
			uva += piece;
			iova += piece;
			len -= piece;
			contig -= piece;
		}
	}
	return (int)n;
}

int uvh_vq_iova_to_iov(struct uvh_vq *vq, uint64_t iova, uint64_t len, uint8_t perm,
		       struct iovec *iov, unsigned int max)
{
	if (!vq->cfg.iotlb)
		return -EINVAL;
	return iova_translate(vq, iova, len, perm, iov, max, true);
}

/* One ring area: it must be one piece of our memory (we index it). */
static int iotlb_area(struct uvh_vq *vq, uint64_t iova, uint64_t len, uint8_t perm,
		      uintptr_t align, void **out)
{
	struct iovec piece[8];
	int n, i;

	n = iova_translate(vq, iova, len, perm, piece, 8, false);
	if (n == -ENOBUFS)
		n = -EFAULT;
	if (n < 0)
		return n;
	/* entries or regions may end inside the area: fine if they are
	 * contiguous in our address space too */
	for (i = 1; i < n; i++)
		if ((uint8_t *)piece[i - 1].iov_base + piece[i - 1].iov_len != piece[i].iov_base)
			return -EFAULT;
	if ((uintptr_t)piece[0].iov_base & (align - 1))
		return -EFAULT;
	*out = piece[0].iov_base;
	return 0;
}

/*
 * Ring areas through the IOTLB. A miss is no fault: the areas stay
 * unset (rings_pending) and the next sweep tries again. The permissions
 * are what the device does to each area.
 */
static int vq_map_iotlb(struct uvh_vq *vq)
{
	const struct uvh_vq_config *c = &vq->cfg;
	bool packed = c->packed;
	void *desc = NULL, *drv = NULL, *dev = NULL;
	int ret;

	ret = iotlb_area(vq, c->desc_gpa, uvh_vring_desc_bytes(c->size, packed),
			 packed ? UVH_IOTLB_RW : UVH_IOTLB_RO, 16, &desc);
	if (!ret)
		ret = iotlb_area(vq, c->driver_gpa, uvh_vring_driver_bytes(c->size, packed),
				 UVH_IOTLB_RO, packed ? 4 : 2, &drv);
	if (!ret)
		ret = iotlb_area(vq, c->device_gpa, uvh_vring_device_bytes(c->size, packed),
				 UVH_IOTLB_WO, 4, &dev);
	if (ret == -ENOENT) {
		vq->rings_pending = true;
		return 0;
	}
	if (ret < 0) {
		vq->rings_pending = false;
		uvh_vq_fail(vq, ret == -EACCES ? UVH_VQ_ERR_IOTLB : UVH_VQ_ERR_RING_ADDR,
			    ret == -EACCES ? "ring area permission" : "ring area (IOVA)");
		return -EFAULT;
	}
	if (packed) {
		vq->pdesc = desc;
		vq->driver_event = drv;
		vq->device_event = dev;
	} else {
		vq->desc = desc;
		vq->avail = drv;
		vq->used = dev;
	}
	vq->rings_pending = false;
	vq->miss_reported = false;
	return 0;
}

/* Rings still waiting for a translation: try again. True when usable. */
static __attribute__((noinline)) bool vq_rings_retry(struct uvh_vq *vq)
{
	if (uvh_vq_broken(vq))
		return false;
	vq_map_iotlb(vq);
	return !vq->rings_pending && !uvh_vq_broken(vq);
}

static int vq_map(struct uvh_vq *vq)
{
	if (vq->cfg.iotlb)
		return vq_map_iotlb(vq);
	return vq->cfg.packed ? uvh_vq_packed_map(vq) : uvh_vq_split_map(vq);
}

int uvh_vq_init(struct uvh_vq *vq, const struct uvh_vq_config *cfg,
		const struct uvh_memory *mem)
{
	if (!vq || !cfg || !mem)
		return -EINVAL;
	memset(vq, 0, sizeof(*vq));
	/* A queue that failed here has no ring pointers: mark it broken so
	 * that a pop or push on it is a no-op, not a NULL dereference. */
	if (cfg->size == 0 || cfg->size > UVH_VRING_MAX_SIZE ||
	    (!cfg->packed && (cfg->size & (cfg->size - 1))) ||	/* split: masked */
	    /* packed: the bases are slots (SET_VRING_BASE is the peer's word) */
	    (cfg->packed && (cfg->next_avail >= cfg->size || cfg->next_used >= cfg->size))) {
		vq->error = UVH_VQ_ERR_RING_ADDR;
		return -EINVAL;
	}
	vq->cfg = *cfg;
	vq->write_flag = cfg->device_reads_only ? 0 : UVH_VRING_DESC_F_WRITE;
	vq->mem = mem;
	vq->mem_hint = UINT32_MAX;
	vq->last_avail = cfg->next_avail;
	vq->shadow_avail = cfg->next_avail;
	if (cfg->packed) {
		vq->avail_wrap = cfg->avail_wrap;
		vq->used_wrap = cfg->used_wrap;
		vq->used_slot = cfg->next_used;
		vq->used_idx = cfg->next_used;
	} else {
		vq->used_idx = cfg->next_avail;
	}
	if (vq_map(vq) < 0)
		return -EFAULT;
	return 0;
}

int uvh_vq_set_memory(struct uvh_vq *vq, const struct uvh_memory *mem)
{
	vq->mem = mem;
	vq->mem_hint = UINT32_MAX;
	if (vq_map(vq) < 0)
		return -EFAULT;
	return 0;
}

void uvh_vq_set_log(struct uvh_vq *vq, struct uvh_dirty_log *log)
{
	vq->log = log;
}

int uvh_vq_pop(struct uvh_vq *vq, struct uvh_vq_chain *chains, unsigned int max,
	       struct iovec *iov, unsigned int iov_max)
{
	if (__builtin_expect(uvh_vq_broken(vq), 0) || !max)
		return 0;
	if (__builtin_expect(vq->rings_pending, 0) && !vq_rings_retry(vq))
		return 0;
	if (vq->cfg.packed)
		return uvh_vq_packed_pop(vq, chains, max, iov, iov_max);
	return uvh_vq_split_pop(vq, chains, max, iov, iov_max);
}

int uvh_vq_unpop(struct uvh_vq *vq, const struct uvh_vq_chain *chains, unsigned int n)
{
	unsigned int slots = 0;
	int ret;

	if (!n)
		return 0;
	if (uvh_vq_broken(vq) || vq->rings_pending || vq->inflight)
		return -EBUSY;
	for (unsigned int i = 0; i < n; i++)
		slots += chains[i].ndesc;
	ret = vq->cfg.packed ? uvh_vq_packed_unpop(vq, slots) : uvh_vq_split_unpop(vq, n);
	if (!ret)
		vq->popped -= n;
	return ret;
}

void uvh_vq_push(struct uvh_vq *vq, const struct uvh_vq_used *used, unsigned int n)
{
	/* nothing was popped while the rings were pending */
	if (__builtin_expect(uvh_vq_broken(vq) || vq->rings_pending, 0) || !n)
		return;
	if (vq->cfg.packed)
		uvh_vq_packed_push(vq, used, n);
	else
		uvh_vq_split_push(vq, used, n);
	/* the used entries are logged: tell SET_LOG_FD's reader */
	if (__builtin_expect(vq->log != NULL, 0))
		uvh_dirty_log_kick(vq->log);
}

bool uvh_vq_need_call(struct uvh_vq *vq)
{
	if (uvh_vq_broken(vq) || vq->rings_pending)
		return false;
	return vq->cfg.packed ? uvh_vq_packed_need_call(vq) : uvh_vq_split_need_call(vq);
}

void uvh_vq_notify_disable(struct uvh_vq *vq)
{
	if (uvh_vq_broken(vq) || vq->rings_pending)
		return;
	if (vq->cfg.packed)
		uvh_vq_packed_notify(vq, false);
	else
		uvh_vq_split_notify(vq, false);
}

bool uvh_vq_notify_enable(struct uvh_vq *vq)
{
	if (uvh_vq_broken(vq))
		return false;
	if (vq->rings_pending && !vq_rings_retry(vq))
		return false;
	return vq->cfg.packed ? uvh_vq_packed_notify(vq, true) : uvh_vq_split_notify(vq, true);
}

bool uvh_vq_notify_enable_after(struct uvh_vq *vq, unsigned int n)
{
	if (n <= 1 || !vq->cfg.event_idx)
		return uvh_vq_notify_enable(vq);
	if (uvh_vq_broken(vq))
		return false;
	if (vq->rings_pending && !vq_rings_retry(vq))
		return false;
	if (n > vq->cfg.size)
		n = vq->cfg.size;
	return vq->cfg.packed ? uvh_vq_packed_notify_after(vq, n) :
				uvh_vq_split_notify_after(vq, n);
}

bool uvh_vq_avail_pending(struct uvh_vq *vq)
{
	if (uvh_vq_broken(vq))
		return false;
	if (vq->rings_pending && !vq_rings_retry(vq))
		return false;
	return vq->cfg.packed ? uvh_vq_packed_avail_pending(vq) : uvh_vq_split_avail_pending(vq);
}

uint32_t uvh_vq_base(const struct uvh_vq *vq)
{
	return vq->cfg.packed ? uvh_vq_packed_base(vq) : uvh_vq_split_base(vq);
}

/* ---- driver side ---------------------------------------------------------- */

/* Layout: descriptors at 0, driver area right after, device area on the
 * next cache line after the driver area. */
static size_t drv_driver_off(uint16_t size, bool packed)
{
	return uvh_vring_desc_bytes(size, packed);
}

static size_t drv_device_off(uint16_t size, bool packed)
{
	return align_up(drv_driver_off(size, packed) + uvh_vring_driver_bytes(size, packed),
			DRV_AREA_ALIGN);
}

size_t uvh_vq_driver_area_bytes(uint16_t size, bool packed)
{
	return drv_device_off(size, packed) + uvh_vring_device_bytes(size, packed);
}

int uvh_vq_driver_init(struct uvh_vq_driver *drv, uint16_t size, bool packed,
		       bool event_idx, void *area, uint64_t gpa)
{
	int ret;

	if (!drv || !area)
		return -EINVAL;
	memset(drv, 0, sizeof(*drv));
	if (size == 0 || size > UVH_VRING_MAX_SIZE)
		return -EINVAL;
	if (!packed && (size & (size - 1)))
		return -EINVAL;
	drv->size = size;
	drv->packed = packed;
	drv->event_idx = event_idx;
	drv->desc = area;
	drv->driver_area = (uint8_t *)area + drv_driver_off(size, packed);
	drv->device_area = (uint8_t *)area + drv_device_off(size, packed);
	drv->desc_gpa = gpa;
	drv->driver_gpa = gpa + drv_driver_off(size, packed);
	drv->device_gpa = gpa + drv_device_off(size, packed);
	drv->tokens = calloc(size, sizeof(*drv->tokens));
	drv->ids = calloc(size, sizeof(*drv->ids));
	if (!drv->tokens || !drv->ids) {
		uvh_vq_driver_free(drv);
		return -ENOMEM;
	}
	memset(area, 0, uvh_vq_driver_area_bytes(size, packed));
	ret = packed ? uvh_vq_driver_packed_init(drv) : uvh_vq_driver_split_init(drv);
	if (ret < 0)
		uvh_vq_driver_free(drv);
	return ret;
}

void uvh_vq_driver_free(struct uvh_vq_driver *drv)
{
	if (!drv)
		return;
	free(drv->tokens);
	free(drv->ids);
	drv->tokens = NULL;
	drv->ids = NULL;
}

void uvh_vq_driver_config(const struct uvh_vq_driver *drv, struct uvh_vq_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->size = drv->size;
	cfg->packed = drv->packed;
	cfg->event_idx = drv->event_idx;
	cfg->indirect = drv->indirect;
	cfg->desc_gpa = drv->desc_gpa;
	cfg->driver_gpa = drv->driver_gpa;
	cfg->device_gpa = drv->device_gpa;
	if (drv->packed) {
		/* the device starts where the driver will publish next */
		cfg->next_avail = drv->next_slot;
		cfg->avail_wrap = drv->avail_wrap;
		cfg->next_used = drv->next_slot;
		cfg->used_wrap = drv->avail_wrap;
	} else {
		cfg->next_avail = drv->avail_idx;
		cfg->next_used = drv->avail_idx;
	}
}

int uvh_vq_driver_add(struct uvh_vq_driver *drv, const struct uvh_vq_buf *bufs,
		      unsigned int nout, unsigned int nin, void *token)
{
	if (drv->packed)
		return uvh_vq_driver_packed_add(drv, bufs, nout, nin, token);
	return uvh_vq_driver_split_add(drv, bufs, nout, nin, token);
}

int uvh_vq_driver_add_burst(struct uvh_vq_driver *drv, const struct uvh_vq_buf *bufs,
			    unsigned int n, bool device_writable, void *const *tokens)
{
	if (drv->packed)
		return uvh_vq_driver_packed_add_burst(drv, bufs, n, device_writable, tokens);
	return uvh_vq_driver_split_add_burst(drv, bufs, n, device_writable, tokens);
}

void uvh_vq_driver_publish(struct uvh_vq_driver *drv)
{
	if (drv->packed)
		uvh_vq_driver_packed_publish(drv);
	else
		uvh_vq_driver_split_publish(drv);
}

bool uvh_vq_driver_need_kick(struct uvh_vq_driver *drv)
{
	if (drv->packed)
		return uvh_vq_driver_packed_need_kick(drv);
	return uvh_vq_driver_split_need_kick(drv);
}

unsigned int uvh_vq_driver_get_used(struct uvh_vq_driver *drv, void **tokens,
				    uint32_t *lens, unsigned int max)
{
	if (drv->packed)
		return uvh_vq_driver_packed_get_used(drv, tokens, lens, max);
	return uvh_vq_driver_split_get_used(drv, tokens, lens, max);
}

unsigned int uvh_vq_driver_free_slots(const struct uvh_vq_driver *drv)
{
	/* Both implementations keep num_free: free descriptors (split) or
	 * free ring slots (packed). */
	return drv->num_free;
}

void uvh_vq_driver_enable_cb(struct uvh_vq_driver *drv, bool enable)
{
	if (drv->packed)
		uvh_vq_driver_packed_enable_cb(drv, enable);
	else
		uvh_vq_driver_split_enable_cb(drv, enable);
}
