/* SPDX-License-Identifier: MIT */
/*
 * uvhost: guest memory.
 *
 * A memory table maps every guest region once: from an fd (mmap at the
 * region's mmap_offset, as vhost-user hands them over) or from a host
 * pointer (the soft backend, where the VMM's own memory is the guest's).
 * It translates guest-physical addresses (what descriptors hold) and
 * front-end virtual addresses (what SET_VRING_ADDR holds) to our pointers,
 * refusing any range that is not entirely mapped.
 *
 * Tables are immutable once handed to engines: a change (SET_MEM_TABLE,
 * ADD/REM_MEM_REG) builds a new table with uvh_memory_copy(), edits it,
 * publishes it through the dispatcher, and only after every engine has
 * moved to the new table does uvh_memory_release(old, new) unmap what the
 * new one no longer uses. So a data path never sees an unmapped region.
 *
 * Also here: the dirty-page log (LOG_ALL) and the IOTLB cache
 * (VIRTIO_F_IOMMU_PLATFORM).
 */
#ifndef UVHOST_MEMORY_H
#define UVHOST_MEMORY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "message.h"

#ifdef __cplusplus
extern "C" {
#endif

/** One mapped region. */
struct uvh_memory_region {
	uint64_t gpa;		/**< guest-physical start */
	uint64_t size;		/**< bytes */
	uint64_t uva;		/**< front-end virtual start (0 for host regions) */
	uint8_t *hva;		/**< our address of gpa */
	void *mmap_base;	/**< what munmap() gets; NULL for host-pointer regions */
	size_t mmap_size;
};

/** A memory table: regions sorted by gpa, non-overlapping in gpa and uva. */
struct uvh_memory {
	uint32_t nregions;
	uint32_t max_regions;	/**< capacity (UVH_MAX_MEM_SLOTS by default) */
	struct uvh_memory_region regions[];
};

/**
 * An empty table with room for @max_regions (0 = UVH_MAX_MEM_SLOTS). NULL
 * with errno EINVAL above UVH_MAX_MEM_SLOTS, or ENOMEM.
 */
struct uvh_memory *uvh_memory_new(uint32_t max_regions);
/** A new table with the same regions (sharing their mappings), or NULL. */
struct uvh_memory *uvh_memory_copy(const struct uvh_memory *mem);
/**
 * Free @old and unmap every mapping of it that @keep does not also hold
 * (@keep NULL: unmap all). Call only once no engine can still read @old.
 * Typical uses: release(old, new) after publishing new; release(new, old)
 * to drop a copy that failed to build (only its own new mappings go).
 */
void uvh_memory_release(struct uvh_memory *old, const struct uvh_memory *keep);

/**
 * Map @region from @fd (which is always consumed: closed once mapped or on
 * error; a negative fd gives -EBADF). Checks: size != 0, no overflow of
 * gpa/uva/mmap_offset + size, @fd is a regular file holding
 * mmap_offset + size bytes (no SIGBUS later), no overlap in gpa or uva
 * with the table, room left. mmap_offset need not be page aligned; on
 * hugetlbfs the mapping is aligned and sized to the huge page size.
 * Returns 0, -EINVAL (size 0, not a regular file), -ENXIO (the file is
 * shorter than mmap_offset + size), -EEXIST (overlap), -ENOSPC (table
 * full), -EOVERFLOW (a wrap) or the fstat/mmap error.
 */
int uvh_memory_add_fd(struct uvh_memory *mem, const struct uvh_mem_region *region, int fd);
/**
 * Add a host-pointer region (soft backend): @hva backs [gpa, gpa+size).
 * Nothing is mapped or unmapped for it; it has no front-end virtual
 * address (uva 0), so the uva lookups below never return it.
 * 0, -EINVAL, -EOVERFLOW, -ENOSPC or -EEXIST (gpa overlap).
 */
int uvh_memory_add_host(struct uvh_memory *mem, uint64_t gpa, uint64_t size, void *hva);
/**
 * Drop the region matching @region's gpa, size and uva (-ENOENT if none).
 * The mapping stays until uvh_memory_release() of the table that had it,
 * so remove only regions @mem inherited from a published table (a region
 * added to and removed from the same unpublished copy stays mapped).
 */
int uvh_memory_remove(struct uvh_memory *mem, const struct uvh_mem_region *region);

/** The region containing @gpa, or NULL (binary search). */
const struct uvh_memory_region *uvh_memory_find_gpa(const struct uvh_memory *mem, uint64_t gpa);

/**
 * Translate [gpa, gpa+len) when it lies in one region: the data path's
 * lookup. @hint (may be NULL) caches the index of the last region this
 * caller used (start it at UINT32_MAX; any value is checked before use).
 * Returns our pointer or NULL (not mapped, or spans regions).
 */
static inline void *uvh_memory_gpa_to_hva(const struct uvh_memory *mem, uint64_t gpa,
					  uint64_t len, uint32_t *hint)
{
	const struct uvh_memory_region *r;

	if (hint && *hint < mem->nregions) {
		r = &mem->regions[*hint];
		if (gpa - r->gpa < r->size && len <= r->size - (gpa - r->gpa))
			return r->hva + (gpa - r->gpa);
	}
	r = uvh_memory_find_gpa(mem, gpa);
	if (!r || len > r->size - (gpa - r->gpa))
		return NULL;
	if (hint)
		*hint = (uint32_t)(r - mem->regions);
	return r->hva + (gpa - r->gpa);
}

/**
 * Translate [gpa, gpa+len) into up to @max iovecs, splitting where the
 * range crosses from one region into an adjacent one. Returns the number
 * of iovecs, -EFAULT when any byte is unmapped, -ENOBUFS when @max is too
 * small. len 0 gives 0.
 */
int uvh_memory_gpa_to_iov(const struct uvh_memory *mem, uint64_t gpa, uint64_t len,
			  struct iovec *iov, unsigned int max, uint32_t *hint);

/**
 * Translate a front-end virtual range (SET_VRING_ADDR) in one fd region,
 * or NULL. A scan of the table: for the control path.
 */
void *uvh_memory_uva_to_hva(const struct uvh_memory *mem, uint64_t uva, uint64_t len);
/** The guest-physical address of a front-end virtual one; false if unmapped. */
bool uvh_memory_uva_to_gpa(const struct uvh_memory *mem, uint64_t uva, uint64_t *gpa);

/* ---- dirty-page log (VHOST_F_LOG_ALL) ------------------------------------ */

/** The log: one bit per 4 KiB guest page, from GPA 0. */
struct uvh_dirty_log {
	_Atomic uint8_t *bitmap;
	uint64_t size;		/**< bytes of bitmap */
	void *mmap_base;
	size_t mmap_size;
	/** Set by every mark, cleared by uvh_dirty_log_kick(). */
	atomic_bool pending;
	/** SET_LOG_FD's eventfd plus one (0: none), see uvh_dirty_log_kick(). */
	atomic_int kick_fd1;
};

/**
 * Map the log area from @fd (consumed) at @offset, @size bytes
 * (SET_LOG_BASE); @log starts zeroed. On success a previous log is
 * unmapped (so no engine may be marking it: swap through the dispatcher);
 * on error the previous log stays. 0, -EBADF, -EINVAL (size 0, not a
 * regular file), -ENXIO (past the file's end), -EOVERFLOW, or the
 * fstat/mmap error.
 */
int uvh_dirty_log_map(struct uvh_dirty_log *log, int fd, uint64_t size, uint64_t offset);
/** Unmap the log (and zero @log); a no-op on an unmapped one. */
void uvh_dirty_log_unmap(struct uvh_dirty_log *log);

/**
 * Mark every page of [gpa, gpa+len) dirty (atomic OR per byte, as the spec
 * says). Pages beyond the log are silently ignored (no syscall, no log line
 * on the data path); a range whose end wraps marks nothing.
 */
static inline void uvh_dirty_log_mark(struct uvh_dirty_log *log, uint64_t gpa, uint64_t len)
{
	uint64_t page, last;

	if (!log->bitmap || !len)
		return;
	page = gpa / UVH_LOG_PAGE;
	last = (gpa + len - 1) / UVH_LOG_PAGE;
	for (; page <= last && page / 8 < log->size; page++)
		atomic_fetch_or_explicit(&log->bitmap[page / 8], (uint8_t)(1u << (page % 8)),
					 memory_order_relaxed);
	/* read first: engines marking the same log do not bounce the line */
	if (!atomic_load_explicit(&log->pending, memory_order_relaxed))
		atomic_store_explicit(&log->pending, true, memory_order_relaxed);
}

/**
 * Mark the guest pages behind the first @len bytes of @iov (@n iovecs of
 * our pointers into @mem's regions): for a device marking what it wrote
 * right after writing it, whatever the ring does later. Bytes not in
 * @mem are skipped. A region scan per iovec: for the logging path only.
 */
void uvh_dirty_log_mark_iov(struct uvh_dirty_log *log, const struct uvh_memory *mem,
			    const struct iovec *iov, unsigned int n, uint64_t len);

/**
 * After a batch of marks: if anything was marked since the last kick and
 * a kick fd is set (SET_LOG_FD), write 1 to it, telling the front-end the
 * log changed. Returns true when the fd was written.
 */
bool uvh_dirty_log_kick(struct uvh_dirty_log *log);

/**
 * Set the kick eventfd (-1: none). The caller keeps the fd and must not
 * close the previous one until every engine marking @log has finished its
 * current burst (swap, then sync with the engines, then close).
 */
void uvh_dirty_log_set_kick(struct uvh_dirty_log *log, int fd);

/* ---- IOTLB (VIRTIO_F_IOMMU_PLATFORM) --------------------------------------- */

struct uvh_iotlb_cache;

/*
 * Thread safety: uvh_iotlb_apply() and uvh_iotlb_flush() may be called from
 * any thread (writers are serialised); uvh_iotlb_translate() may run on any
 * number of engines at the same time, without taking a lock (seqlock: a
 * reader that overlapped an update retries).
 */

/** A cache holding at most @max_entries translations (0 = 2048), or NULL. */
struct uvh_iotlb_cache *uvh_iotlb_new(unsigned int max_entries);
/** Free @cache (NULL is a no-op). No translation may be running. */
void uvh_iotlb_free(struct uvh_iotlb_cache *cache);
/**
 * Apply an IOTLB_MSG update or invalidate. An update replaces what it
 * overlaps and merges with a neighbour it continues (same perm, iova and
 * uaddr both contiguous); a full cache forgets older entries to make room.
 * An invalidate removes [iova, iova+size) (splitting entries; a size that
 * wraps means "to the end"). 0, or -EINVAL (bad msg: size 0, wrap on
 * update, perm NONE or unknown, type other than UPDATE/INVALIDATE). Since
 * a full cache evicts, -ENOSPC is not returned for max_entries >= 1.
 */
int uvh_iotlb_apply(struct uvh_iotlb_cache *cache, const struct uvh_iotlb *msg);
/** Drop every entry. */
void uvh_iotlb_flush(struct uvh_iotlb_cache *cache);
/**
 * Translate [iova, iova+len) needing @perm (UVH_IOTLB_RO/WO/RW) to a
 * front-end virtual address. Returns 0 and *uva with *contiguous (bytes
 * valid from iova in one entry, may be less than len), -ENOENT on a miss
 * (the caller asks the front-end with BACKEND_IOTLB_MSG), -EACCES on a
 * permission failure.
 */
int uvh_iotlb_translate(struct uvh_iotlb_cache *cache, uint64_t iova, uint64_t len,
			uint8_t perm, uint64_t *uva, uint64_t *contiguous);

#ifdef __cplusplus
}
#endif

#endif
