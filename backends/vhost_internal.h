/* SPDX-License-Identifier: MIT */
/*
 * uvhost: what the four backends (kern.c, soft.c, user.c, vdpa.c) share,
 * implemented in regions.c: checking a memory table, finding and removing
 * one of its regions, translating a ring's guest-physical areas to the
 * VMM's addresses, and a few small helpers. Each backend keeps its own
 * rules on top (limits, alignment, fds). Not installed.
 */
#ifndef UVHOST_VHOST_INTERNAL_H
#define UVHOST_VHOST_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "vhost.h"

/* Internal to the library: kept out of its dynamic symbol table. */
#define UVH__BACKEND_INTERNAL	__attribute__((visibility("hidden")))

/* The largest split/packed ring the kern, user and soft backends take. */
#define UVH__VRING_NUM_MAX	32768u

/* Does [start, start + len - 1] (len > 0) wrap past 2^64? */
static inline bool uvh__wraps(uint64_t start, uint64_t len)
{
	return start + (len - 1) < start;
}

/* Do two non-empty, non-wrapping ranges share a byte? */
static inline bool uvh__overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a <= b + (blen - 1) && b <= a + (alen - 1);
}

/* uvh__regions_check() flags. */
#define UVH__REGIONS_SORTED	0x1u	/* sorted by gpa: only neighbours can overlap */
#define UVH__REGIONS_HVA	0x2u	/* the hva ranges must be disjoint too */

/* A backend's own check of one region; 0 or -errno (logged). */
typedef int uvh__region_check_fn(void *ctx, const struct uvh_vhost_mem_region *r);

/*
 * One region on its own: a size, an hva, neither range wrapping. 0 or
 * -EINVAL, logged under @name.
 */
UVH__BACKEND_INTERNAL int uvh__region_check(const char *name,
					    const struct uvh_vhost_mem_region *r);

/* @r against the @n regions of @t: no shared gpa (nor hva with
 * UVH__REGIONS_HVA). 0 or -EINVAL, logged. */
UVH__BACKEND_INTERNAL int uvh__region_disjoint(const char *name,
					       const struct uvh_vhost_mem_region *t,
					       unsigned int n,
					       const struct uvh_vhost_mem_region *r,
					       unsigned int flags);

/*
 * A whole table, region by region in order: @check (uvh__region_check
 * when NULL), then no overlap with the regions before it. The first
 * failure is returned (logged).
 */
UVH__BACKEND_INTERNAL int uvh__regions_check(const char *name,
					     const struct uvh_vhost_mem_region *t,
					     unsigned int n, unsigned int flags,
					     uvh__region_check_fn *check, void *ctx);

/* The index of the region of @t with @r's gpa and size, or -ENOENT
 * (logged: nothing to remove). */
UVH__BACKEND_INTERNAL int uvh__region_find(const char *name,
					   const struct uvh_vhost_mem_region *t,
					   unsigned int n,
					   const struct uvh_vhost_mem_region *r);

/* Drop @t[@i], keeping the order of the rest; *@n shrinks by one. */
UVH__BACKEND_INTERNAL void uvh__region_remove_at(struct uvh_vhost_mem_region *t,
						 unsigned int *n, unsigned int i);

/* A new array: the @n regions of @t, then @r. -ENOMEM or 0. The caller
 * frees @t once the new table is in force. */
UVH__BACKEND_INTERNAL int uvh__regions_with(const struct uvh_vhost_mem_region *t,
					    unsigned int n,
					    const struct uvh_vhost_mem_region *r,
					    struct uvh_vhost_mem_region **out);

/* The VMM's address of [gpa, gpa + len), inside one region of @t;
 * -EFAULT when no region holds it all (or len is 0 or wraps). */
UVH__BACKEND_INTERNAL int uvh__gpa_to_hva(const struct uvh_vhost_mem_region *t, unsigned int n,
					  uint64_t gpa, uint64_t len, uint64_t *hva);

/*
 * A ring's three areas (desc, driver, device; @len bytes each) to the
 * VMM's addresses in @hva. -EFAULT, logged under @name, when one is not
 * inside the table.
 */
UVH__BACKEND_INTERNAL int uvh__vring_to_hva(const char *name,
					    const struct uvh_vhost_mem_region *t,
					    unsigned int n,
					    const struct uvh_vhost_vring_addr *addr,
					    const uint64_t len[3], uint64_t hva[3]);

/* @features within @offered; else -EINVAL, the extra bits logged. */
UVH__BACKEND_INTERNAL int uvh__features_offered(const char *name, uint64_t features,
						uint64_t offered);

/* get_vring_num_max for the backends that take UVH__VRING_NUM_MAX. */
UVH__BACKEND_INTERNAL int uvh__get_vring_num_max(struct uvh_vhost *b, uint32_t *num);

/* A config access inside UVH_CONFIG_MAX_SIZE, with a buffer. */
UVH__BACKEND_INTERNAL bool uvh__config_range_ok(uint32_t offset, uint32_t size,
						const void *buf);

/* A close-on-exec dup of the caller's fd to keep (-1 stays -1); -errno. */
UVH__BACKEND_INTERNAL int uvh__dup_fd(int fd);

/* CLOCK_MONOTONIC in milliseconds, for deadlines. */
UVH__BACKEND_INTERNAL int64_t uvh__now_ms(void);

#endif
