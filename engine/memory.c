/* SPDX-License-Identifier: MIT */
/*
 * Guest memory tables and the dirty-page log.
 *
 * Everything a front-end sends about memory is hostile until checked: sizes
 * that wrap, offsets past the end of the fd (a later access would SIGBUS
 * us), overlapping regions (two translations of one address), a table
 * larger than the slots we advertise.
 */
#include <errno.h>
#include <inttypes.h>
#include <linux/magic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "log.h"
#include "memory.h"

struct uvh_memory *uvh_memory_new(uint32_t max_regions)
{
	struct uvh_memory *mem;

	if (!max_regions)
		max_regions = UVH_MAX_MEM_SLOTS;
	if (max_regions > UVH_MAX_MEM_SLOTS) {
		errno = EINVAL;
		return NULL;
	}
	mem = calloc(1, sizeof(*mem) + (size_t)max_regions * sizeof(mem->regions[0]));
	if (!mem)
		return NULL;
	mem->max_regions = max_regions;
	return mem;
}

struct uvh_memory *uvh_memory_copy(const struct uvh_memory *mem)
{
	struct uvh_memory *copy = uvh_memory_new(mem->max_regions);

	if (!copy)
		return NULL;
	copy->nregions = mem->nregions;
	memcpy(copy->regions, mem->regions, (size_t)mem->nregions * sizeof(mem->regions[0]));
	return copy;
}

/* Index of the last region starting at or below @gpa, or -1. */
static int last_at_or_below(const struct uvh_memory *mem, uint64_t gpa)
{
	uint32_t lo = 0, hi = mem->nregions;

	/* invariant: regions[< lo].gpa <= gpa, regions[>= hi].gpa > gpa */
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (mem->regions[mid].gpa <= gpa)
			lo = mid + 1;
		else
			hi = mid;
	}
	return (int)lo - 1;
}

const struct uvh_memory_region *uvh_memory_find_gpa(const struct uvh_memory *mem, uint64_t gpa)
{
	int i = last_at_or_below(mem, gpa);
	const struct uvh_memory_region *r;

	if (i < 0)
		return NULL;
	r = &mem->regions[i];
	return gpa - r->gpa < r->size ? r : NULL;
}

void uvh_memory_release(struct uvh_memory *old, const struct uvh_memory *keep)
{
	uint32_t i;

	if (!old)
		return;
	for (i = 0; i < old->nregions; i++) {
		const struct uvh_memory_region *r = &old->regions[i], *k;

		if (!r->mmap_base)
			continue;
		/*
		 * Regions are copied verbatim between tables, so a mapping @keep
		 * still uses sits at the same gpa there: one lookup, not a scan.
		 */
		k = keep ? uvh_memory_find_gpa(keep, r->gpa) : NULL;
		if (k && k->mmap_base == r->mmap_base)
			continue;
		if (munmap(r->mmap_base, r->mmap_size))
			UVH_WARN("memory: munmap(%p, %zu): %s", r->mmap_base, r->mmap_size,
				 strerror(errno));
	}
	free(old);
}

/*
 * Where a region [gpa, gpa + size) would go, or -EEXIST if it overlaps one
 * already in the table. Ends never wrap: callers checked that first.
 */
static int insert_pos(const struct uvh_memory *mem, uint64_t gpa, uint64_t size)
{
	int i = last_at_or_below(mem, gpa);

	if (i >= 0 && gpa - mem->regions[i].gpa < mem->regions[i].size)
		return -EEXIST;
	if ((uint32_t)(i + 1) < mem->nregions && mem->regions[i + 1].gpa - gpa < size)
		return -EEXIST;
	return i + 1;
}

/* Front-end virtual ranges are not sorted: a scan, on the control path only. */
static bool uva_overlaps(const struct uvh_memory *mem, uint64_t uva, uint64_t size)
{
	uint32_t i;

	for (i = 0; i < mem->nregions; i++) {
		const struct uvh_memory_region *r = &mem->regions[i];

		/* host-pointer regions have no front-end address */
		if (!r->mmap_base)
			continue;
		if (uva < r->uva + r->size && r->uva < uva + size)
			return true;
	}
	return false;
}

/* Common checks of a new region; the position to insert it at or -errno. */
static int check_new(const struct uvh_memory *mem, uint64_t gpa, uint64_t size)
{
	if (!size)
		return -EINVAL;
	if (size > UINT64_MAX - gpa)
		return -EOVERFLOW;
	if (mem->nregions >= mem->max_regions)
		return -ENOSPC;
	return insert_pos(mem, gpa, size);
}

static void insert_at(struct uvh_memory *mem, int pos, const struct uvh_memory_region *r)
{
	memmove(&mem->regions[pos + 1], &mem->regions[pos],
		(size_t)(mem->nregions - (uint32_t)pos) * sizeof(*r));
	mem->regions[pos] = *r;
	mem->nregions++;
}

/*
 * The page size an fd's mappings use: the huge page size on hugetlbfs (its
 * mmap offsets and lengths must be multiples of it), else the base page.
 */
static uint64_t fd_page_size(int fd)
{
	struct statfs sfs;
	long pg = sysconf(_SC_PAGESIZE);

	if (!fstatfs(fd, &sfs) && (uint32_t)sfs.f_type == (uint32_t)HUGETLBFS_MAGIC &&
	    sfs.f_bsize > 0)
		return (uint64_t)sfs.f_bsize;
	return pg > 0 ? (uint64_t)pg : 4096;
}

/*
 * mmap [offset, offset + size) of @fd, read-write and shared. The offset is
 * aligned down to the fd's page size (front-ends need not align it) and the
 * length rounded up; *ptr gets the address of @offset itself. The caller
 * has checked that the file holds offset + size bytes, so the mapping never
 * covers a page wholly past the end of the file.
 */
static int map_fd(int fd, uint64_t offset, uint64_t size, void **base, size_t *len,
		  uint8_t **ptr)
{
	uint64_t pg = fd_page_size(fd);
	uint64_t start = offset & ~(pg - 1);
	uint64_t delta = offset - start;
	uint64_t map_len;
	void *p;

	/* size + delta + pg cannot wrap: offset + size <= INT64_MAX was checked */
	map_len = (size + delta + pg - 1) & ~(pg - 1);
	if (map_len > SIZE_MAX)
		return -EOVERFLOW;
	p = mmap(NULL, (size_t)map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)start);
	if (p == MAP_FAILED)
		return -errno;
	*base = p;
	*len = (size_t)map_len;
	*ptr = (uint8_t *)p + delta;
	return 0;
}

/*
 * Check that @fd is a regular file (-EINVAL) holding [offset, offset + size)
 * (-ENXIO): a mapping past its end would SIGBUS on first touch. (A front-end that
 * truncates the file after we mapped it can still do that; sealing the
 * memfd against shrinking is the front-end's call, not ours.)
 */
static int check_fd_range(int fd, uint64_t offset, uint64_t size)
{
	struct stat st;

	if (offset > (uint64_t)INT64_MAX || size > (uint64_t)INT64_MAX - offset)
		return -EOVERFLOW;
	if (fstat(fd, &st))
		return -errno;
	if (!S_ISREG(st.st_mode)) {
		UVH_WARN("memory: fd %d is not a regular file (mode %o)", fd,
			 (unsigned int)st.st_mode);
		return -EINVAL;
	}
	if (st.st_size < 0 || offset + size > (uint64_t)st.st_size) {
		/* ENXIO: mmap's own word for a range the object does not have */
		UVH_WARN("memory: range [0x%" PRIx64 ", +0x%" PRIx64 ") past the end of the file "
			 "(0x%jx bytes)", offset, size, (intmax_t)st.st_size);
		return -ENXIO;
	}
	return 0;
}

int uvh_memory_add_fd(struct uvh_memory *mem, const struct uvh_mem_region *region, int fd)
{
	struct uvh_memory_region r = { 0 };
	int pos, ret;

	if (fd < 0)
		return -EBADF;
	if (!mem || !region) {
		ret = -EINVAL;
		goto out;
	}
	r.gpa = region->guest_phys_addr;
	r.size = region->memory_size;
	r.uva = region->userspace_addr;
	pos = check_new(mem, r.gpa, r.size);
	if (pos < 0) {
		ret = pos;
		goto refused;
	}
	if (r.size > UINT64_MAX - r.uva) {
		ret = -EOVERFLOW;
		goto refused;
	}
	if (uva_overlaps(mem, r.uva, r.size)) {
		ret = -EEXIST;
		goto refused;
	}
	ret = check_fd_range(fd, region->mmap_offset, r.size);
	if (ret)
		goto refused;
	ret = map_fd(fd, region->mmap_offset, r.size, &r.mmap_base, &r.mmap_size, &r.hva);
	if (ret)
		goto refused;
	insert_at(mem, pos, &r);
	UVH_DEBUG("memory: region gpa 0x%" PRIx64 " size 0x%" PRIx64 " uva 0x%" PRIx64
		  " -> %p (%u regions)", r.gpa, r.size, r.uva, (void *)r.hva, mem->nregions);
	goto out;
refused:
	UVH_WARN("memory: region gpa 0x%" PRIx64 " size 0x%" PRIx64 " uva 0x%" PRIx64
		 " offset 0x%" PRIx64 " refused: %s", r.gpa, r.size, r.uva, region->mmap_offset,
		 strerror(-ret));
out:
	/* the mapping, if any, holds its own reference to the file */
	close(fd);
	return ret;
}

int uvh_memory_add_host(struct uvh_memory *mem, uint64_t gpa, uint64_t size, void *hva)
{
	struct uvh_memory_region r = { 0 };
	int pos;

	if (!mem || !hva)
		return -EINVAL;
	pos = check_new(mem, gpa, size);
	if (pos < 0)
		return pos;
	if (size > UINTPTR_MAX - (uintptr_t)hva)
		return -EOVERFLOW;
	r.gpa = gpa;
	r.size = size;
	r.hva = hva;
	insert_at(mem, pos, &r);
	return 0;
}

int uvh_memory_remove(struct uvh_memory *mem, const struct uvh_mem_region *region)
{
	int i;

	if (!mem || !region)
		return -EINVAL;
	i = last_at_or_below(mem, region->guest_phys_addr);
	if (i < 0 || mem->regions[i].gpa != region->guest_phys_addr ||
	    mem->regions[i].size != region->memory_size ||
	    mem->regions[i].uva != region->userspace_addr)
		return -ENOENT;
	memmove(&mem->regions[i], &mem->regions[i + 1],
		(size_t)(mem->nregions - (uint32_t)i - 1) * sizeof(mem->regions[0]));
	mem->nregions--;
	return 0;
}

int uvh_memory_gpa_to_iov(const struct uvh_memory *mem, uint64_t gpa, uint64_t len,
			  struct iovec *iov, unsigned int max, uint32_t *hint)
{
	const struct uvh_memory_region *r;
	unsigned int n = 0;

	if (len > UINT64_MAX - gpa)
		return -EFAULT;
	while (len) {
		uint64_t off, chunk;

		/* the first piece goes through the hint; later ones are rare */
		if (!n && hint && *hint < mem->nregions &&
		    gpa - mem->regions[*hint].gpa < mem->regions[*hint].size) {
			r = &mem->regions[*hint];
		} else {
			r = uvh_memory_find_gpa(mem, gpa);
			if (!r)
				return -EFAULT;
			if (!n && hint)
				*hint = (uint32_t)(r - mem->regions);
		}
		if (n == max)
			return -ENOBUFS;
		off = gpa - r->gpa;
		chunk = r->size - off < len ? r->size - off : len;
		iov[n].iov_base = r->hva + off;
		iov[n].iov_len = (size_t)chunk;
		n++;
		gpa += chunk;
		len -= chunk;
	}
	return (int)n;
}

static const struct uvh_memory_region *find_uva(const struct uvh_memory *mem, uint64_t uva)
{
	uint32_t i;

	/* control path only (SET_VRING_ADDR): a scan is fine */
	for (i = 0; i < mem->nregions; i++) {
		const struct uvh_memory_region *r = &mem->regions[i];

		if (r->mmap_base && uva - r->uva < r->size)
			return r;
	}
	return NULL;
}

void *uvh_memory_uva_to_hva(const struct uvh_memory *mem, uint64_t uva, uint64_t len)
{
	const struct uvh_memory_region *r = find_uva(mem, uva);

	if (!r || len > r->size - (uva - r->uva))
		return NULL;
	return r->hva + (uva - r->uva);
}

bool uvh_memory_uva_to_gpa(const struct uvh_memory *mem, uint64_t uva, uint64_t *gpa)
{
	const struct uvh_memory_region *r = find_uva(mem, uva);

	if (!r)
		return false;
	*gpa = r->gpa + (uva - r->uva);
	return true;
}

/* ---- dirty-page log ------------------------------------------------------ */

int uvh_dirty_log_map(struct uvh_dirty_log *log, int fd, uint64_t size, uint64_t offset)
{
	void *base;
	size_t len;
	uint8_t *ptr;
	int ret, kick;

	if (fd < 0)
		return -EBADF;
	if (!log || !size) {
		ret = -EINVAL;
		goto out;
	}
	ret = check_fd_range(fd, offset, size);
	if (ret)
		goto out;
	ret = map_fd(fd, offset, size, &base, &len, &ptr);
	if (ret)
		goto out;
	/* only now drop the old log: a refused SET_LOG_BASE leaves it working */
	kick = atomic_load(&log->kick_fd1);
	uvh_dirty_log_unmap(log);
	atomic_store(&log->kick_fd1, kick);
	log->bitmap = (_Atomic uint8_t *)ptr;
	log->size = size;
	log->mmap_base = base;
	log->mmap_size = len;
out:
	if (ret)
		UVH_WARN("memory: dirty log of 0x%" PRIx64 " bytes at 0x%" PRIx64 " refused: %s",
			 size, offset, strerror(-ret));
	close(fd);
	return ret;
}

void uvh_dirty_log_unmap(struct uvh_dirty_log *log)
{
	if (log->mmap_base && munmap(log->mmap_base, log->mmap_size))
		UVH_WARN("memory: munmap of the dirty log: %s", strerror(errno));
	memset(log, 0, sizeof(*log));
}

void uvh_dirty_log_mark_iov(struct uvh_dirty_log *log, const struct uvh_memory *mem,
			    const struct iovec *iov, unsigned int n, uint64_t len)
{
	for (unsigned int i = 0; i < n && len; i++) {
		uintptr_t p = (uintptr_t)iov[i].iov_base;
		uint64_t l = iov[i].iov_len < len ? iov[i].iov_len : len;

		len -= l;
		/* an iovec from the ring lies in one region (pop splits them) */
		for (uint32_t r = 0; r < mem->nregions && l; r++) {
			const struct uvh_memory_region *reg = &mem->regions[r];
			uintptr_t start = (uintptr_t)reg->hva;

			if (p - start < reg->size && l <= reg->size - (p - start)) {
				uvh_dirty_log_mark(log, reg->gpa + (p - start), l);
				break;
			}
		}
	}
}

bool uvh_dirty_log_kick(struct uvh_dirty_log *log)
{
	int fd;

	if (!atomic_load_explicit(&log->pending, memory_order_relaxed))
		return false;
	fd = atomic_load_explicit(&log->kick_fd1, memory_order_acquire) - 1;
	if (fd < 0)
		return false;	/* stays pending: the first kick after SET_LOG_FD tells */
	atomic_store_explicit(&log->pending, false, memory_order_relaxed);
	/* a full counter (EAGAIN) still wakes the reader: nothing to do */
	return eventfd_write(fd, 1) == 0;
}

void uvh_dirty_log_set_kick(struct uvh_dirty_log *log, int fd)
{
	atomic_store_explicit(&log->kick_fd1, fd >= 0 ? fd + 1 : 0, memory_order_release);
}
