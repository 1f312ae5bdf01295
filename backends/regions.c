/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the memory-table logic and small helpers the four backends share
 * (backend_internal.h). Nothing here talks to a device: each backend checks
 * with these before its first ioctl or message, so a refused table changes
 * nothing.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vhost_internal.h"
#include "log.h"

int uvh__region_check(const char *name, const struct uvh_vhost_mem_region *r)
{
	if (!r->size || !r->hva || uvh__wraps(r->gpa, r->size) ||
	    uvh__wraps((uint64_t)(uintptr_t)r->hva, r->size) || r->size - 1 > UINTPTR_MAX) {
		UVH_ERR("%s: memory region gpa 0x%" PRIx64 " size 0x%" PRIx64
			" hva %p: empty, wrapping or without hva", name, r->gpa, r->size, r->hva);
		return -EINVAL;
	}
	return 0;
}

int uvh__region_disjoint(const char *name, const struct uvh_vhost_mem_region *t,
			 unsigned int n, const struct uvh_vhost_mem_region *r, unsigned int flags)
{
	for (unsigned int i = 0; i < n; i++) {
		if (uvh__overlap(t[i].gpa, t[i].size, r->gpa, r->size)) {
			UVH_ERR("%s: memory regions at gpa 0x%" PRIx64 " and 0x%" PRIx64
				" overlap", name, t[i].gpa, r->gpa);
			return -EINVAL;
		}
		/* Two guest ranges on one mapping: the back-end would see
		 * one page under two gpas, and the dirty log miss one. */
		if ((flags & UVH__REGIONS_HVA) &&
		    uvh__overlap((uintptr_t)t[i].hva, t[i].size, (uintptr_t)r->hva, r->size)) {
			UVH_ERR("%s: memory regions at gpa 0x%" PRIx64 " and 0x%" PRIx64
				" overlap in hva", name, t[i].gpa, r->gpa);
			return -EINVAL;
		}
	}
	return 0;
}

int uvh__regions_check(const char *name, const struct uvh_vhost_mem_region *t, unsigned int n,
		       unsigned int flags, uvh__region_check_fn *check, void *ctx)
{
	int ret;

	for (unsigned int i = 0; i < n; i++) {
		ret = check ? check(ctx, &t[i]) : uvh__region_check(name, &t[i]);
		if (ret)
			return ret;
		/* Sorted by gpa, a region overlapping any earlier one
		 * overlaps the one just before it. */
		if (flags & UVH__REGIONS_SORTED)
			ret = i ? uvh__region_disjoint(name, &t[i - 1], 1, &t[i], flags) : 0;
		else
			ret = uvh__region_disjoint(name, t, i, &t[i], flags);
		if (ret)
			return ret;
	}
	return 0;
}

int uvh__region_find(const char *name, const struct uvh_vhost_mem_region *t, unsigned int n,
		     const struct uvh_vhost_mem_region *r)
{
	for (unsigned int i = 0; i < n; i++)
		if (t[i].gpa == r->gpa && t[i].size == r->size)
			return (int)i;
	UVH_ERR("%s: no memory region at gpa 0x%" PRIx64 " size 0x%" PRIx64 " to remove", name,
		r->gpa, r->size);
	return -ENOENT;
}

void uvh__region_remove_at(struct uvh_vhost_mem_region *t, unsigned int *n, unsigned int i)
{
	memmove(&t[i], &t[i + 1], (size_t)(*n - i - 1) * sizeof(*t));
	(*n)--;
}

int uvh__regions_with(const struct uvh_vhost_mem_region *t, unsigned int n,
		      const struct uvh_vhost_mem_region *r, struct uvh_vhost_mem_region **out)
{
	struct uvh_vhost_mem_region *grown = malloc(((size_t)n + 1) * sizeof(*grown));

	if (!grown)
		return -ENOMEM;
	if (n)
		memcpy(grown, t, (size_t)n * sizeof(*grown));
	grown[n] = *r;
	*out = grown;
	return 0;
}

int uvh__gpa_to_hva(const struct uvh_vhost_mem_region *t, unsigned int n, uint64_t gpa,
		    uint64_t len, uint64_t *hva)
{
	if (!len || uvh__wraps(gpa, len))
		return -EFAULT;
	for (unsigned int i = 0; i < n; i++) {
		const struct uvh_vhost_mem_region *r = &t[i];

		if (gpa >= r->gpa && gpa - r->gpa < r->size &&
		    len - 1 <= r->size - 1 - (gpa - r->gpa)) {
			*hva = (uint64_t)(uintptr_t)r->hva + (gpa - r->gpa);
			return 0;
		}
	}
	return -EFAULT;
}

int uvh__vring_to_hva(const char *name, const struct uvh_vhost_mem_region *t, unsigned int n,
		      const struct uvh_vhost_vring_addr *addr, const uint64_t len[3],
		      uint64_t hva[3])
{
	const uint64_t gpa[3] = { addr->desc_gpa, addr->avail_gpa, addr->used_gpa };

	for (unsigned int i = 0; i < 3; i++) {
		if (uvh__gpa_to_hva(t, n, gpa[i], len[i], &hva[i])) {
			UVH_ERR("%s: vring %u areas (desc 0x%" PRIx64 ", avail 0x%" PRIx64
				", used 0x%" PRIx64 ") are not inside the memory table", name,
				addr->index, gpa[0], gpa[1], gpa[2]);
			return -EFAULT;
		}
	}
	return 0;
}

int uvh__features_offered(const char *name, uint64_t features, uint64_t offered)
{
	if (features & ~offered) {
		UVH_ERR("%s: features 0x%" PRIx64 " were not offered", name, features & ~offered);
		return -EINVAL;
	}
	return 0;
}

int uvh__get_vring_num_max(struct uvh_vhost *b, uint32_t *num)
{
	(void)b;
	if (!num)
		return -EINVAL;
	*num = UVH__VRING_NUM_MAX;
	return 0;
}

bool uvh__config_range_ok(uint32_t offset, uint32_t size, const void *buf)
{
	return buf && size && offset <= UVH_CONFIG_MAX_SIZE && size <= UVH_CONFIG_MAX_SIZE - offset;
}

int uvh__dup_fd(int fd)
{
	int d;

	if (fd < 0)
		return -1;
	d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	return d < 0 ? -errno : d;
}

int64_t uvh__now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
