/* SPDX-License-Identifier: MIT */
/*
 * Guest memory: tables over memfds, translation edges, region checks,
 * table copy/release, dirty log, IOTLB cache.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "memory.h"
#include "t_helpers.h"

#define PG	4096u

static struct uvh_mem_region reg(uint64_t gpa, uint64_t size, uint64_t uva, uint64_t off)
{
	struct uvh_mem_region r = {
		.guest_phys_addr = gpa, .memory_size = size,
		.userspace_addr = uva, .mmap_offset = off,
	};
	return r;
}

/* Our own view of a memfd, to check what the table's mapping sees. */
static uint8_t *view(int fd, size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	cr_assert_neq(p, MAP_FAILED);
	return p;
}

static bool mapped(const void *p)
{
	/* msync on an unmapped page fails with ENOMEM */
	return msync((void *)((uintptr_t)p & ~(uintptr_t)(PG - 1)), PG, MS_ASYNC) == 0;
}

/* Add a region backed by a fresh memfd of @file_size bytes; returns our view. */
static uint8_t *add_memfd(struct uvh_memory *mem, uint64_t gpa, uint64_t size, uint64_t uva,
			  uint64_t off, size_t file_size)
{
	int fd = t_memfd("uvh-mem", file_size);
	uint8_t *v = view(fd, file_size);
	struct uvh_mem_region r = reg(gpa, size, uva, off);

	cr_assert_eq(uvh_memory_add_fd(mem, &r, fd), 0);
	return v;
}

Test(memory, memfd_content_through_translation)
{
	int fds = t_count_fds();
	struct uvh_memory *mem = uvh_memory_new(0);
	uint8_t *v, *h;

	cr_assert_not_null(mem);
	cr_assert_eq(mem->max_regions, UVH_MAX_MEM_SLOTS);
	v = add_memfd(mem, 0x100000, 4 * PG, 0x7f0000000000, 0, 4 * PG);
	cr_assert_eq(t_count_fds(), fds, "the region's fd is consumed");
	memcpy(v + 100, "written by the front-end", 25);
	h = uvh_memory_gpa_to_hva(mem, 0x100000 + 100, 25, NULL);
	cr_assert_not_null(h);
	cr_assert_str_eq((char *)h, "written by the front-end");
	/* and the other way: a back-end write is what the front-end reads */
	h = uvh_memory_gpa_to_hva(mem, 0x100000 + 3 * PG, 4, NULL);
	memcpy(h, "back", 4);
	cr_assert_eq(memcmp(v + 3 * PG, "back", 4), 0);
	cr_assert_neq((void *)h, (void *)(v + 3 * PG), "the table has its own mapping");
	uvh_memory_release(mem, NULL);
	munmap(v, 4 * PG);
	cr_assert_eq(t_count_fds(), fds);
}

Test(memory, unaligned_mmap_offset)
{
	struct uvh_memory *mem = uvh_memory_new(4);
	uint8_t *v, *h;

	/* front-ends may hand an offset inside a page; DPDK does */
	v = add_memfd(mem, 0x0, 2 * PG, 0x10000, PG + 123, 4 * PG);
	v[PG + 123] = 0xa5;
	v[PG + 123 + 2 * PG - 1] = 0x5a;
	h = uvh_memory_gpa_to_hva(mem, 0, 1, NULL);
	cr_assert_eq(*h, 0xa5);
	h = uvh_memory_gpa_to_hva(mem, 2 * PG - 1, 1, NULL);
	cr_assert_eq(*h, 0x5a);
	uvh_memory_release(mem, NULL);
	munmap(v, 4 * PG);
}

Test(memory, translation_edges)
{
	struct uvh_memory *mem = uvh_memory_new(8);
	uint64_t base = 0x40000, size = 3 * PG;
	uint32_t hint = UINT32_MAX;
	uint8_t *v, *first, *last;

	v = add_memfd(mem, base, size, 0x500000, 0, size);
	first = uvh_memory_gpa_to_hva(mem, base, 1, &hint);
	cr_assert_not_null(first);
	cr_assert_eq(hint, 0);
	last = uvh_memory_gpa_to_hva(mem, base + size - 1, 1, &hint);
	cr_assert_eq(last, first + size - 1, "last byte");
	cr_assert_eq(uvh_memory_gpa_to_hva(mem, base, size, &hint), first, "whole region");
	cr_assert_null(uvh_memory_gpa_to_hva(mem, base + size, 1, &hint), "one past the end");
	cr_assert_null(uvh_memory_gpa_to_hva(mem, base + size - 1, 2, &hint), "last byte + 1");
	cr_assert_null(uvh_memory_gpa_to_hva(mem, base, size + 1, NULL));
	cr_assert_null(uvh_memory_gpa_to_hva(mem, base - 1, 1, NULL), "one before");
	cr_assert_null(uvh_memory_gpa_to_hva(mem, base + 8, UINT64_MAX, &hint), "huge len");
	cr_assert_null(uvh_memory_gpa_to_hva(mem, UINT64_MAX, 1, NULL));
	/* a hint from elsewhere is checked, never trusted */
	hint = 7;
	cr_assert_eq(uvh_memory_gpa_to_hva(mem, base + 5, 1, &hint), first + 5);
	cr_assert_eq(hint, 0);
	hint = 0;
	cr_assert_null(uvh_memory_gpa_to_hva(mem, base + size, 1, &hint));
	/* find_gpa */
	cr_assert_eq(uvh_memory_find_gpa(mem, base + size - 1), &mem->regions[0]);
	cr_assert_null(uvh_memory_find_gpa(mem, base + size));
	cr_assert_null(uvh_memory_find_gpa(mem, 0));
	uvh_memory_release(mem, NULL);
	munmap(v, size);
}

Test(memory, iov_across_adjacent_regions_and_holes)
{
	struct uvh_memory *mem = uvh_memory_new(8);
	struct iovec iov[4];
	uint32_t hint = UINT32_MAX;
	uint8_t *a, *b, *c;

	/* [0x10000, +2 pages) [0x12000, +1 page) hole [0x14000, +1 page) */
	a = add_memfd(mem, 0x10000, 2 * PG, 0x1000000, 0, 2 * PG);
	b = add_memfd(mem, 0x12000, PG, 0x2000000, 0, PG);
	c = add_memfd(mem, 0x14000, PG, 0x3000000, 0, PG);
	a[2 * PG - 2] = 'x';
	a[2 * PG - 1] = 'y';
	b[0] = 'z';

	cr_assert_null(uvh_memory_gpa_to_hva(mem, 0x12000 - 2, 3, NULL),
		       "one-region lookup refuses a span");
	cr_assert_eq(uvh_memory_gpa_to_iov(mem, 0x12000 - 2, 3, iov, 4, &hint), 2);
	cr_assert_eq(iov[0].iov_len, 2);
	cr_assert_eq(iov[1].iov_len, 1);
	cr_assert_eq(((uint8_t *)iov[0].iov_base)[0], 'x');
	cr_assert_eq(((uint8_t *)iov[0].iov_base)[1], 'y');
	cr_assert_eq(((uint8_t *)iov[1].iov_base)[0], 'z');
	cr_assert_eq(hint, 0, "hint names the first region");
	/* the whole of both regions */
	cr_assert_eq(uvh_memory_gpa_to_iov(mem, 0x10000, 3 * PG, iov, 4, &hint), 2);
	cr_assert_eq(iov[0].iov_len, 2 * PG);
	cr_assert_eq(iov[1].iov_len, PG);
	/* too few iovecs */
	cr_assert_eq(uvh_memory_gpa_to_iov(mem, 0x12000 - 2, 3, iov, 1, NULL), -ENOBUFS);
	/* one byte into the hole */
	cr_assert_eq(uvh_memory_gpa_to_iov(mem, 0x12000, PG + 1, iov, 4, &hint), -EFAULT);
	cr_assert_eq(uvh_memory_gpa_to_iov(mem, 0x10000, 5 * PG, iov, 4, NULL), -EFAULT);
	cr_assert_eq(uvh_memory_gpa_to_iov(mem, 0x13000, 1, iov, 4, NULL), -EFAULT);
	cr_assert_eq(uvh_memory_gpa_to_iov(mem, 0xf000, 0x1001, iov, 4, NULL), -EFAULT);
	/* wrap of gpa + len */
	cr_assert_eq(uvh_memory_gpa_to_iov(mem, 0x10000, UINT64_MAX, iov, 4, NULL), -EFAULT);
	/* one region, last byte; zero length */
	cr_assert_eq(uvh_memory_gpa_to_iov(mem, 0x14000 + PG - 1, 1, iov, 4, &hint), 1);
	cr_assert_eq(hint, 2);
	cr_assert_eq(uvh_memory_gpa_to_iov(mem, 0x14000 + PG, 1, iov, 4, &hint), -EFAULT);
	cr_assert_eq(uvh_memory_gpa_to_iov(mem, 0x99999, 0, iov, 4, NULL), 0);
	uvh_memory_release(mem, NULL);
	munmap(a, 2 * PG);
	munmap(b, PG);
	munmap(c, PG);
}

/* Each refused region: the errno, the table unchanged, the fd closed. */
static void refuse(struct uvh_memory *mem, struct uvh_mem_region r, size_t file_size, int err)
{
	int fds = t_count_fds();
	uint32_t n = mem->nregions;
	int fd = t_memfd("uvh-refused", file_size);

	cr_assert_eq(uvh_memory_add_fd(mem, &r, fd), err, "gpa %#lx size %#lx uva %#lx off %#lx",
		     (unsigned long)r.guest_phys_addr, (unsigned long)r.memory_size,
		     (unsigned long)r.userspace_addr, (unsigned long)r.mmap_offset);
	cr_assert_eq(mem->nregions, n);
	cr_assert_eq(t_count_fds(), fds, "fd closed on error");
}

Test(memory, overlap_refused)
{
	struct uvh_memory *mem = uvh_memory_new(8);
	uint8_t *v = add_memfd(mem, 0x10000, 4 * PG, 0x800000, 0, 4 * PG);

	/* gpa: same, inside, straddling either edge, covering */
	refuse(mem, reg(0x10000, PG, 0x900000, 0), PG, -EEXIST);
	refuse(mem, reg(0x12000, PG, 0x900000, 0), PG, -EEXIST);
	refuse(mem, reg(0xf000, 2 * PG, 0x900000, 0), 2 * PG, -EEXIST);
	refuse(mem, reg(0x13000, 2 * PG, 0x900000, 0), 2 * PG, -EEXIST);
	refuse(mem, reg(0x8000, 16 * PG, 0x900000, 0), 16 * PG, -EEXIST);
	/* uva: inside, straddling either edge */
	refuse(mem, reg(0x40000, PG, 0x801000, 0), PG, -EEXIST);
	refuse(mem, reg(0x40000, 2 * PG, 0x7ff000, 0), 2 * PG, -EEXIST);
	refuse(mem, reg(0x40000, 2 * PG, 0x803000, 0), 2 * PG, -EEXIST);
	/* touching is fine, in both */
	uvh_memory_release(mem, NULL);
	mem = uvh_memory_new(8);
	munmap(v, 4 * PG);
	v = add_memfd(mem, 0x10000, 4 * PG, 0x800000, 0, 4 * PG);
	munmap(add_memfd(mem, 0x14000, PG, 0x804000, 0, PG), PG);
	munmap(add_memfd(mem, 0xf000, PG, 0x7ff000, 0, PG), PG);
	cr_assert_eq(mem->nregions, 3);
	cr_assert_eq(mem->regions[0].gpa, 0xf000, "sorted by gpa");
	cr_assert_eq(mem->regions[1].gpa, 0x10000);
	cr_assert_eq(mem->regions[2].gpa, 0x14000);
	/* host regions overlap-check in gpa too */
	cr_assert_eq(uvh_memory_add_host(mem, 0x13000, PG, v), -EEXIST);
	uvh_memory_release(mem, NULL);
	munmap(v, 4 * PG);
}

Test(memory, bad_regions_refused)
{
	struct uvh_memory *mem = uvh_memory_new(8);
	int fds = t_count_fds(), fd;
	struct uvh_mem_region r;

	refuse(mem, reg(0x0, 0, 0x1000, 0), PG, -EINVAL);
	/* past the end of the memfd: by one byte, by the offset */
	refuse(mem, reg(0x0, 2 * PG + 1, 0x1000, 0), 2 * PG, -ENXIO);
	refuse(mem, reg(0x0, 2 * PG, 0x1000, 1), 2 * PG, -ENXIO);
	refuse(mem, reg(0x0, PG, 0x1000, 2 * PG), 2 * PG, -ENXIO);
	/* wraps */
	refuse(mem, reg(UINT64_MAX - PG + 1, PG, 0x1000, 0), PG, -EOVERFLOW);
	refuse(mem, reg(UINT64_MAX - 10, PG, 0x1000, 0), PG, -EOVERFLOW);
	refuse(mem, reg(0x0, PG, UINT64_MAX - 10, 0), PG, -EOVERFLOW);
	refuse(mem, reg(0x0, PG, 0x1000, UINT64_MAX - 10), PG, -EOVERFLOW);
	refuse(mem, reg(0x0, PG, 0x1000, (uint64_t)INT64_MAX), PG, -EOVERFLOW);
	/* not a regular file */
	fd = t_eventfd();
	r = reg(0x0, PG, 0x1000, 0);
	cr_assert_eq(uvh_memory_add_fd(mem, &r, fd), -EINVAL);
	cr_assert_eq(t_count_fds(), fds);
	/* a bad fd, and no table */
	cr_assert_eq(uvh_memory_add_fd(mem, &r, -1), -EBADF);
	fd = t_memfd("uvh-nomem", PG);
	cr_assert_eq(uvh_memory_add_fd(NULL, &r, fd), -EINVAL);
	cr_assert_eq(t_count_fds(), fds);
	/* a read-only fd cannot be mapped writable: mmap's errno */
	fd = t_memfd("uvh-ro", PG);
	{
		char path[64];
		int ro;

		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		ro = open(path, O_RDONLY | O_CLOEXEC);
		cr_assert_geq(ro, 0);
		close(fd);
		cr_assert_eq(uvh_memory_add_fd(mem, &r, ro), -EACCES);
	}
	cr_assert_eq(t_count_fds(), fds);
	cr_assert_eq(mem->nregions, 0);
	/* host regions */
	cr_assert_eq(uvh_memory_add_host(mem, 0, PG, NULL), -EINVAL);
	cr_assert_eq(uvh_memory_add_host(mem, 0, 0, &r), -EINVAL);
	cr_assert_eq(uvh_memory_add_host(mem, UINT64_MAX, 2, &r), -EOVERFLOW);
	cr_assert_eq(uvh_memory_add_host(mem, 0, UINT64_MAX, &r), -EOVERFLOW);
	cr_assert_null(uvh_memory_new(UVH_MAX_MEM_SLOTS + 1));
	uvh_memory_release(mem, NULL);
}

Test(memory, max_slots)
{
	int fds = t_count_fds();
	struct uvh_memory *mem = uvh_memory_new(0);
	int base = t_memfd("uvh-slots", PG);
	struct uvh_mem_region r;
	unsigned int order[UVH_MAX_MEM_SLOTS], i;

	/* insert in a scrambled order: the table must end up sorted */
	for (i = 0; i < UVH_MAX_MEM_SLOTS; i++)
		order[i] = (i * 211u) % UVH_MAX_MEM_SLOTS;	/* 211 is prime to 509 */
	for (i = 0; i < UVH_MAX_MEM_SLOTS; i++) {
		uint64_t k = order[i];

		r = reg(k * 0x10000, PG, 0x10000000 + k * 0x10000, 0);
		cr_assert_eq(uvh_memory_add_fd(mem, &r, dup(base)), 0, "slot %u", i);
	}
	cr_assert_eq(mem->nregions, UVH_MAX_MEM_SLOTS);
	for (i = 1; i < mem->nregions; i++)
		cr_assert_lt(mem->regions[i - 1].gpa, mem->regions[i].gpa);
	for (i = 0; i < UVH_MAX_MEM_SLOTS; i++) {
		cr_assert_eq(uvh_memory_find_gpa(mem, i * 0x10000ull + PG - 1), &mem->regions[i]);
		cr_assert_null(uvh_memory_find_gpa(mem, i * 0x10000ull + PG));
	}
	/* the 510th */
	r = reg(0x40000000, PG, 0x40000000, 0);
	cr_assert_eq(uvh_memory_add_fd(mem, &r, dup(base)), -ENOSPC);
	cr_assert_eq(uvh_memory_add_host(mem, 0x50000000, PG, &r), -ENOSPC);
	close(base);
	cr_assert_eq(t_count_fds(), fds, "509 mapped regions hold no fd");
	uvh_memory_release(mem, NULL);
}

Test(memory, copy_remove_release)
{
	int fds = t_count_fds();
	struct uvh_memory *t1 = uvh_memory_new(8), *t2, *t3;
	struct uvh_mem_region ra = reg(0x0, PG, 0x100000, 0), rb = reg(0x10000, PG, 0x200000, 0);
	struct uvh_mem_region rc = reg(0x20000, PG, 0x300000, 0);
	void *a, *b, *c;

	cr_assert_eq(uvh_memory_add_fd(t1, &ra, t_memfd("a", PG)), 0);
	cr_assert_eq(uvh_memory_add_fd(t1, &rb, t_memfd("b", PG)), 0);
	a = t1->regions[0].mmap_base;
	b = t1->regions[1].mmap_base;
	memset(t1->regions[1].hva, 0x77, PG);

	/* REM_MEM_REG: copy, remove, publish, release the old table */
	t2 = uvh_memory_copy(t1);
	cr_assert_not_null(t2);
	cr_assert_eq(t2->nregions, 2);
	cr_assert_eq(t2->regions[0].mmap_base, a, "copies share mappings");
	cr_assert_eq(uvh_memory_remove(t2, &(struct uvh_mem_region){ 0x0, 2 * PG, 0x100000, 0 }),
		     -ENOENT, "size must match");
	cr_assert_eq(uvh_memory_remove(t2, &(struct uvh_mem_region){ 0x0, PG, 0x100001, 0 }),
		     -ENOENT, "uva must match");
	cr_assert_eq(uvh_memory_remove(t2, &(struct uvh_mem_region){ 0x800, PG, 0x100000, 0 }),
		     -ENOENT, "gpa must match");
	cr_assert_eq(uvh_memory_remove(t2, &ra), 0);
	cr_assert_eq(uvh_memory_remove(t2, &ra), -ENOENT);
	cr_assert_eq(t2->nregions, 1);
	cr_assert_null(uvh_memory_gpa_to_hva(t2, 0x0, 1, NULL));
	cr_assert_not_null(uvh_memory_gpa_to_hva(t1, 0x0, 1, NULL), "the old table still maps it");
	cr_assert(mapped(a));
	uvh_memory_release(t1, t2);
	cr_assert_not(mapped(a), "removed region unmapped");
	cr_assert(mapped(b), "kept region still mapped");
	cr_assert_eq(*(uint8_t *)uvh_memory_gpa_to_hva(t2, 0x10000 + 5, 1, NULL), 0x77);

	/* a copy that failed to build: releasing it keeps the old one's mappings */
	t3 = uvh_memory_copy(t2);
	cr_assert_eq(uvh_memory_add_fd(t3, &rc, t_memfd("c", PG)), 0);
	c = t3->regions[1].mmap_base;
	cr_assert(mapped(c));
	uvh_memory_release(t3, t2);
	cr_assert_not(mapped(c));
	cr_assert(mapped(b));

	uvh_memory_release(t2, NULL);
	cr_assert_not(mapped(b));
	cr_assert_eq(t_count_fds(), fds);
	uvh_memory_release(NULL, NULL);
}

Test(memory, uva_translation)
{
	struct uvh_memory *mem = uvh_memory_new(8);
	uint8_t host[64], *h;
	uint64_t gpa = 0;
	uint8_t *v;

	v = add_memfd(mem, 0x200000, 2 * PG, 0x7f1234560000, 0, 2 * PG);
	cr_assert_eq(uvh_memory_add_host(mem, 0x0, sizeof(host), host), 0);
	h = uvh_memory_uva_to_hva(mem, 0x7f1234560000 + 10, 16);
	cr_assert_eq(h, uvh_memory_gpa_to_hva(mem, 0x200000 + 10, 16, NULL));
	cr_assert_not_null(uvh_memory_uva_to_hva(mem, 0x7f1234560000 + 2 * PG - 1, 1));
	cr_assert_null(uvh_memory_uva_to_hva(mem, 0x7f1234560000 + 2 * PG - 1, 2));
	cr_assert_null(uvh_memory_uva_to_hva(mem, 0x7f1234560000 + 2 * PG, 1));
	cr_assert_null(uvh_memory_uva_to_hva(mem, 0x7f1234560000 - 1, 1));
	cr_assert_null(uvh_memory_uva_to_hva(mem, 0x7f1234560000, UINT64_MAX));
	cr_assert(uvh_memory_uva_to_gpa(mem, 0x7f1234560000 + PG + 3, &gpa));
	cr_assert_eq(gpa, 0x200000 + PG + 3);
	cr_assert_not(uvh_memory_uva_to_gpa(mem, 0x7f1234560000 + 2 * PG, &gpa));
	/* host regions have no front-end address: uva 0 is not theirs */
	cr_assert_null(uvh_memory_uva_to_hva(mem, 0, 1));
	cr_assert_not(uvh_memory_uva_to_gpa(mem, 5, &gpa));
	cr_assert_eq(uvh_memory_gpa_to_hva(mem, 5, 1, NULL), host + 5);
	uvh_memory_release(mem, NULL);
	munmap(v, 2 * PG);
}

Test(memory, hugetlbfs_region)
{
	const size_t huge = 2u << 20;
	struct uvh_memory *mem;
	struct uvh_mem_region r;
	int fds = t_count_fds();
	int fd = memfd_create("uvh-huge", MFD_CLOEXEC | MFD_HUGETLB);
	void *probe;

	if (fd < 0 || ftruncate(fd, huge)) {
		if (fd >= 0)
			close(fd);
		cr_skip_test("no hugetlbfs memfd here");
	}
	probe = mmap(NULL, huge, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (probe == MAP_FAILED) {
		close(fd);
		cr_skip_test("no free huge page here");
	}
	munmap(probe, huge);
	mem = uvh_memory_new(4);
	/* a 4 KiB region of a huge page: mapped as the whole page */
	r = reg(0x0, PG, 0x1000, PG);
	cr_assert_eq(uvh_memory_add_fd(mem, &r, fd), 0);
	cr_assert_eq(mem->regions[0].mmap_size, huge);
	cr_assert_eq((uint8_t *)mem->regions[0].hva - (uint8_t *)mem->regions[0].mmap_base, PG);
	uvh_memory_release(mem, NULL);
	cr_assert_eq(t_count_fds(), fds);
}

/* ---- dirty log ----------------------------------------------------------- */

static void expect_bits(const uint8_t *bm, size_t bytes, const uint8_t *want)
{
	size_t i;

	for (i = 0; i < bytes; i++)
		cr_assert_eq(bm[i], want[i], "log byte %zu: %#x, want %#x", i, bm[i], want[i]);
}

static void set_pages(uint8_t *want, uint64_t first, uint64_t last)
{
	for (; first <= last; first++)
		want[first / 8] |= (uint8_t)(1u << (first % 8));
}

Test(memory, dirty_log_bits)
{
	int fds = t_count_fds();
	const size_t bytes = 64, off = 2 * PG;
	struct uvh_dirty_log log = { 0 };
	int fd = t_memfd("uvh-log", off + PG);
	uint8_t *v = view(fd, off + PG), *bm = v + off;
	uint8_t want[64] = { 0 };

	/* the log sits at an offset in the fd, as QEMU may place it */
	cr_assert_eq(uvh_dirty_log_map(&log, fd, bytes, off), 0);
	cr_assert_eq(t_count_fds(), fds);

	uvh_dirty_log_mark(&log, 0, 1);			/* first byte of page 0 */
	set_pages(want, 0, 0);
	uvh_dirty_log_mark(&log, PG - 1, 1);		/* last byte of page 0 */
	expect_bits(bm, bytes, want);
	uvh_dirty_log_mark(&log, 2 * PG - 1, 2);	/* pages 1 and 2 by one byte each */
	set_pages(want, 1, 2);
	expect_bits(bm, bytes, want);
	uvh_dirty_log_mark(&log, 5 * PG, PG);		/* exactly page 5 */
	set_pages(want, 5, 5);
	expect_bits(bm, bytes, want);
	uvh_dirty_log_mark(&log, 8 * PG - 1, 2 * PG);	/* 7..9: across a bitmap byte */
	set_pages(want, 7, 9);
	expect_bits(bm, bytes, want);
	uvh_dirty_log_mark(&log, 20 * PG + 5, 30 * PG);	/* 20..50 */
	set_pages(want, 20, 50);
	expect_bits(bm, bytes, want);
	uvh_dirty_log_mark(&log, 100 * PG, 0);		/* empty */
	expect_bits(bm, bytes, want);
	/* the last page of the log, and pages past it are ignored */
	uvh_dirty_log_mark(&log, (bytes * 8 - 1) * PG, 4 * PG);
	set_pages(want, bytes * 8 - 1, bytes * 8 - 1);
	expect_bits(bm, bytes, want);
	uvh_dirty_log_mark(&log, bytes * 8 * PG, PG);
	uvh_dirty_log_mark(&log, UINT64_MAX - 10, 100);	/* wraps: nothing */
	expect_bits(bm, bytes, want);
	for (size_t i = 0; i < off; i++)
		cr_assert_eq(v[i], 0, "nothing before the log's offset");
	for (size_t i = off + bytes; i < off + PG; i++)
		cr_assert_eq(v[i], 0, "nothing after the log");

	uvh_dirty_log_unmap(&log);
	cr_assert_null(log.bitmap);
	uvh_dirty_log_mark(&log, 0, PG);		/* unmapped: no-op */
	uvh_dirty_log_unmap(&log);
	munmap(v, off + PG);
	cr_assert_eq(t_count_fds(), fds);
}

Test(memory, dirty_log_map_checks)
{
	int fds = t_count_fds();
	struct uvh_dirty_log log = { 0 };
	int fd;
	void *first;

	cr_assert_eq(uvh_dirty_log_map(&log, -1, PG, 0), -EBADF);
	cr_assert_eq(uvh_dirty_log_map(&log, t_memfd("l", PG), 0, 0), -EINVAL);
	cr_assert_eq(uvh_dirty_log_map(&log, t_memfd("l", PG), PG + 1, 0), -ENXIO);
	cr_assert_eq(uvh_dirty_log_map(&log, t_memfd("l", PG), 8, PG - 7), -ENXIO);
	cr_assert_eq(uvh_dirty_log_map(&log, t_memfd("l", PG), 16, UINT64_MAX - 8), -EOVERFLOW);
	cr_assert_eq(uvh_dirty_log_map(&log, t_eventfd(), 8, 0), -EINVAL);
	cr_assert_null(log.bitmap);
	cr_assert_eq(t_count_fds(), fds);
	/* a second log replaces the first; a refused one leaves it in place */
	cr_assert_eq(uvh_dirty_log_map(&log, t_memfd("l", PG), PG, 0), 0);
	first = log.mmap_base;
	cr_assert_eq(uvh_dirty_log_map(&log, t_memfd("l", PG), 2 * PG, 0), -ENXIO);
	cr_assert_eq(log.mmap_base, first);
	cr_assert(mapped(first));
	fd = t_memfd("l", 2 * PG);
	cr_assert_eq(uvh_dirty_log_map(&log, fd, 2 * PG, 0), 0);
	cr_assert_eq(log.size, 2 * PG);
	cr_assert_not(mapped(first), "the old log is unmapped");
	uvh_dirty_log_unmap(&log);
	cr_assert_eq(t_count_fds(), fds);
}

#define MARK_ROUNDS	200
#define MARK_BYTES	512u

struct marker {
	struct uvh_dirty_log *log;
	pthread_barrier_t *go;
	unsigned int parity;
};

static void *mark_thread(void *arg)
{
	struct marker *m = arg;
	unsigned int round, p;

	for (round = 0; round < MARK_ROUNDS; round++) {
		pthread_barrier_wait(m->go);	/* the log is clear: both start */
		/* the two threads hit the same bytes at the same time, different bits */
		for (p = m->parity; p < MARK_BYTES * 8; p += 2)
			uvh_dirty_log_mark(m->log, (uint64_t)p * PG + 17, 1);
		pthread_barrier_wait(m->go);	/* done: the main thread checks */
	}
	return NULL;
}

Test(memory, dirty_log_concurrent_marks)
{
	struct uvh_dirty_log log = { 0 };
	int fd = t_memfd("uvh-log", MARK_BYTES);
	uint8_t *bm = view(fd, MARK_BYTES);
	pthread_barrier_t go;
	struct marker m0 = { &log, &go, 0 }, m1 = { &log, &go, 1 };
	pthread_t t0, t1;
	unsigned int round, i, lost = 0;

	cr_assert_eq(uvh_dirty_log_map(&log, fd, MARK_BYTES, 0), 0);
	cr_assert_eq(pthread_barrier_init(&go, NULL, 3), 0);
	cr_assert_eq(pthread_create(&t0, NULL, mark_thread, &m0), 0);
	cr_assert_eq(pthread_create(&t1, NULL, mark_thread, &m1), 0);
	for (round = 0; round < MARK_ROUNDS; round++) {
		memset(bm, 0, MARK_BYTES);
		pthread_barrier_wait(&go);
		pthread_barrier_wait(&go);
		for (i = 0; i < MARK_BYTES; i++)
			lost += (unsigned int)__builtin_popcount((uint8_t)~bm[i]);
	}
	pthread_join(t0, NULL);
	pthread_join(t1, NULL);
	cr_assert_eq(lost, 0, "%u bits lost over %d rounds", lost, MARK_ROUNDS);
	pthread_barrier_destroy(&go);
	uvh_dirty_log_unmap(&log);
	munmap(bm, MARK_BYTES);
}

/* ---- IOTLB ----------------------------------------------------------------- */

static int iotlb_upd(struct uvh_iotlb_cache *c, uint64_t iova, uint64_t size, uint64_t uaddr,
		     uint8_t perm)
{
	struct uvh_iotlb m = { .iova = iova, .size = size, .uaddr = uaddr, .perm = perm,
			       .type = UVH_IOTLB_UPDATE };

	return uvh_iotlb_apply(c, &m);
}

static int iotlb_inv(struct uvh_iotlb_cache *c, uint64_t iova, uint64_t size)
{
	struct uvh_iotlb m = { .iova = iova, .size = size, .type = UVH_IOTLB_INVALIDATE };

	return uvh_iotlb_apply(c, &m);
}

/* Expect a hit at @iova giving @uva with @contig bytes of @len. */
static void hit(struct uvh_iotlb_cache *c, uint64_t iova, uint64_t len, uint8_t perm,
		uint64_t uva, uint64_t contig)
{
	uint64_t u = 0, n = 0;
	int ret = uvh_iotlb_translate(c, iova, len, perm, &u, &n);

	cr_assert_eq(ret, 0, "iova %#lx: %d", (unsigned long)iova, ret);
	cr_assert_eq(u, uva, "iova %#lx -> %#lx, want %#lx", (unsigned long)iova,
		     (unsigned long)u, (unsigned long)uva);
	cr_assert_eq(n, contig, "iova %#lx: %lu contiguous, want %lu", (unsigned long)iova,
		     (unsigned long)n, (unsigned long)contig);
}

static int miss(struct uvh_iotlb_cache *c, uint64_t iova, uint8_t perm)
{
	uint64_t u, n;

	return uvh_iotlb_translate(c, iova, 1, perm, &u, &n);
}

Test(iotlb, update_translate_partial)
{
	struct uvh_iotlb_cache *c = uvh_iotlb_new(0);

	cr_assert_not_null(c);
	cr_assert_eq(miss(c, 0x1000, UVH_IOTLB_RO), -ENOENT, "empty cache");
	cr_assert_eq(iotlb_upd(c, 0x10000, 0x2000, 0x7f0000000000, UVH_IOTLB_RW), 0);
	hit(c, 0x10000, 64, UVH_IOTLB_RO, 0x7f0000000000, 64);
	hit(c, 0x11ff0, 64, UVH_IOTLB_WO, 0x7f0000001ff0, 16);	/* partial: 16 of 64 */
	hit(c, 0x11fff, 1, UVH_IOTLB_RW, 0x7f0000001fff, 1);	/* last byte */
	cr_assert_eq(miss(c, 0x12000, UVH_IOTLB_RO), -ENOENT, "one past");
	cr_assert_eq(miss(c, 0xffff, UVH_IOTLB_RO), -ENOENT, "one before");
	/* a range that goes on in a second, non-contiguous entry: stops at the first */
	cr_assert_eq(iotlb_upd(c, 0x12000, 0x1000, 0x5000000, UVH_IOTLB_RW), 0);
	hit(c, 0x11000, 0x2000, UVH_IOTLB_RW, 0x7f0000001000, 0x1000);
	hit(c, 0x12000, 0x2000, UVH_IOTLB_RW, 0x5000000, 0x1000);
	uvh_iotlb_free(c);
	uvh_iotlb_free(NULL);
}

Test(iotlb, permissions)
{
	struct uvh_iotlb_cache *c = uvh_iotlb_new(16);

	cr_assert_eq(iotlb_upd(c, 0x0, 0x1000, 0x100000, UVH_IOTLB_RO), 0);
	cr_assert_eq(iotlb_upd(c, 0x1000, 0x1000, 0x200000, UVH_IOTLB_WO), 0);
	hit(c, 0x10, 8, UVH_IOTLB_RO, 0x100010, 8);
	cr_assert_eq(miss(c, 0x10, UVH_IOTLB_WO), -EACCES);
	cr_assert_eq(miss(c, 0x10, UVH_IOTLB_RW), -EACCES);
	hit(c, 0x1010, 8, UVH_IOTLB_WO, 0x200010, 8);
	cr_assert_eq(miss(c, 0x1010, UVH_IOTLB_RO), -EACCES);
	/* an update upgrades the permission of what it covers */
	cr_assert_eq(iotlb_upd(c, 0x0, 0x1000, 0x100000, UVH_IOTLB_RW), 0);
	hit(c, 0x10, 8, UVH_IOTLB_RW, 0x100010, 8);
	uvh_iotlb_free(c);
}

Test(iotlb, invalidate_splits)
{
	struct uvh_iotlb_cache *c = uvh_iotlb_new(16);

	cr_assert_eq(iotlb_upd(c, 0x10000, 0x10000, 0x900000, UVH_IOTLB_RW), 0);
	/* a hole in the middle: two entries remain, their uaddr shifted right */
	cr_assert_eq(iotlb_inv(c, 0x14000, 0x2000), 0);
	hit(c, 0x13fff, 16, UVH_IOTLB_RW, 0x903fff, 1);
	cr_assert_eq(miss(c, 0x14000, UVH_IOTLB_RO), -ENOENT);
	cr_assert_eq(miss(c, 0x15fff, UVH_IOTLB_RO), -ENOENT);
	hit(c, 0x16000, 0x10000, UVH_IOTLB_RW, 0x906000, 0xa000);
	hit(c, 0x10000, 0x10000, UVH_IOTLB_RW, 0x900000, 0x4000);
	/* invalidate an edge of each remaining entry, and a range covering nothing */
	cr_assert_eq(iotlb_inv(c, 0xf000, 0x2000), 0);
	cr_assert_eq(miss(c, 0x10fff, UVH_IOTLB_RO), -ENOENT);
	hit(c, 0x11000, 0x10, UVH_IOTLB_RO, 0x901000, 0x10);
	cr_assert_eq(iotlb_inv(c, 0x1f000, 0x5000), 0);
	cr_assert_eq(miss(c, 0x1f000, UVH_IOTLB_RO), -ENOENT);
	hit(c, 0x1efff, 8, UVH_IOTLB_RO, 0x90efff, 1);
	cr_assert_eq(iotlb_inv(c, 0x100000, 0x1000), 0);
	/* a size that wraps drops everything from iova on */
	cr_assert_eq(iotlb_inv(c, 0x18000, UINT64_MAX), 0);
	cr_assert_eq(miss(c, 0x18000, UVH_IOTLB_RO), -ENOENT);
	hit(c, 0x17fff, 8, UVH_IOTLB_RO, 0x907fff, 1);
	uvh_iotlb_flush(c);
	cr_assert_eq(miss(c, 0x11000, UVH_IOTLB_RO), -ENOENT);
	uvh_iotlb_free(c);
}

Test(iotlb, update_replaces_and_merges)
{
	struct uvh_iotlb_cache *c = uvh_iotlb_new(16);

	cr_assert_eq(iotlb_upd(c, 0x0, 0x3000, 0xa00000, UVH_IOTLB_RW), 0);
	/* remap the middle page elsewhere: three pieces */
	cr_assert_eq(iotlb_upd(c, 0x1000, 0x1000, 0xb00000, UVH_IOTLB_RW), 0);
	hit(c, 0x0, 0x3000, UVH_IOTLB_RW, 0xa00000, 0x1000);
	hit(c, 0x1800, 0x3000, UVH_IOTLB_RW, 0xb00800, 0x800);
	hit(c, 0x2000, 0x3000, UVH_IOTLB_RW, 0xa02000, 0x1000);
	/* put it back: the three merge into one entry again */
	cr_assert_eq(iotlb_upd(c, 0x1000, 0x1000, 0xa01000, UVH_IOTLB_RW), 0);
	hit(c, 0x0, 0x3000, UVH_IOTLB_RW, 0xa00000, 0x3000);
	/* contiguous in iova and uaddr but another perm: no merge */
	cr_assert_eq(iotlb_upd(c, 0x3000, 0x1000, 0xa03000, UVH_IOTLB_RO), 0);
	hit(c, 0x0, 0x4000, UVH_IOTLB_RO, 0xa00000, 0x3000);
	/* contiguous in iova only: no merge */
	cr_assert_eq(iotlb_upd(c, 0x4000, 0x1000, 0xc00000, UVH_IOTLB_RO), 0);
	hit(c, 0x3000, 0x2000, UVH_IOTLB_RO, 0xa03000, 0x1000);
	/* one update over all of it */
	cr_assert_eq(iotlb_upd(c, 0x0, 0x10000, 0xd00000, UVH_IOTLB_WO), 0);
	hit(c, 0x4100, 0x10000, UVH_IOTLB_WO, 0xd04100, 0xbf00);
	cr_assert_eq(miss(c, 0x4100, UVH_IOTLB_RO), -EACCES);
	uvh_iotlb_free(c);
}

Test(iotlb, bad_messages)
{
	struct uvh_iotlb_cache *c = uvh_iotlb_new(4);
	struct uvh_iotlb m = { .iova = 0, .size = 0x1000, .uaddr = 0x1000,
			       .perm = UVH_IOTLB_RW, .type = UVH_IOTLB_MISS };

	cr_assert_eq(uvh_iotlb_apply(c, &m), -EINVAL, "MISS goes the other way");
	m.type = UVH_IOTLB_ACCESS_FAIL;
	cr_assert_eq(uvh_iotlb_apply(c, &m), -EINVAL);
	m.type = 77;
	cr_assert_eq(uvh_iotlb_apply(c, &m), -EINVAL);
	cr_assert_eq(iotlb_upd(c, 0x0, 0, 0x1000, UVH_IOTLB_RW), -EINVAL);
	cr_assert_eq(iotlb_upd(c, UINT64_MAX - 10, 0x1000, 0x1000, UVH_IOTLB_RW), -EINVAL);
	cr_assert_eq(iotlb_upd(c, 0x0, 0x1000, UINT64_MAX - 10, UVH_IOTLB_RW), -EINVAL);
	cr_assert_eq(iotlb_upd(c, 0x0, 0x1000, 0x1000, UVH_IOTLB_NONE), -EINVAL);
	cr_assert_eq(iotlb_upd(c, 0x0, 0x1000, 0x1000, 4), -EINVAL);
	cr_assert_eq(iotlb_inv(c, 0x0, 0), -EINVAL);
	cr_assert_eq(uvh_iotlb_apply(c, NULL), -EINVAL);
	cr_assert_eq(miss(c, 0x0, UVH_IOTLB_RO), -ENOENT, "nothing was added");
	cr_assert_null(uvh_iotlb_new(1u << 30));
	uvh_iotlb_free(c);
}

Test(iotlb, full_cache_evicts)
{
	struct uvh_iotlb_cache *c = uvh_iotlb_new(4);
	unsigned int i, hits = 0;

	/* 4 separate entries fill it; a 5th forgets one, never the new one */
	for (i = 0; i < 4; i++)
		cr_assert_eq(iotlb_upd(c, i * 0x10000, 0x1000, 0x100000 + i * 0x10000,
				       UVH_IOTLB_RW), 0);
	cr_assert_eq(iotlb_upd(c, 0x80000, 0x1000, 0x900000, UVH_IOTLB_RW), 0);
	hit(c, 0x80000, 0x1000, UVH_IOTLB_RW, 0x900000, 0x1000);
	for (i = 0; i < 4; i++)
		hits += miss(c, i * 0x10000, UVH_IOTLB_RO) == 0;
	cr_assert_eq(hits, 3);
	/* a split of a full cache still works: it forgets instead */
	cr_assert_eq(iotlb_inv(c, 0x80400, 0x100), 0);
	cr_assert_eq(miss(c, 0x80400, UVH_IOTLB_RO), -ENOENT);
	/* a one-entry cache: an update that would split its entry in three */
	uvh_iotlb_free(c);
	c = uvh_iotlb_new(1);
	cr_assert_eq(iotlb_upd(c, 0x0, 0x3000, 0x100000, UVH_IOTLB_RW), 0);
	cr_assert_eq(iotlb_upd(c, 0x1000, 0x1000, 0x200000, UVH_IOTLB_RW), 0);
	hit(c, 0x1000, 0x1000, UVH_IOTLB_RW, 0x200000, 0x1000);
	uvh_iotlb_free(c);
}

struct iotlb_reader {
	struct uvh_iotlb_cache *c;
	atomic_bool stop;
	atomic_ulong reads;
	unsigned long hits, bad;
};

/*
 * Entries 1..IOTLB_FIXED sit at k * 0x2000 and are never touched; entry 0
 * is updated and invalidated over and over, which moves every slot of the
 * sorted list each time. A reader must always find the fixed ones, with
 * their own translation, whatever the writer is doing.
 */
#define IOTLB_FIXED	1000u

static uint64_t fixed_shift(uint64_t k)
{
	return k & 1 ? 0x100000 : 0x200000;
}

static void *iotlb_read_thread(void *arg)
{
	struct iotlb_reader *r = arg;
	uint64_t k = 0;

	while (!atomic_load(&r->stop)) {
		uint64_t iova, u = 0, n = 0;
		int ret;

		k = (k + 7) % (IOTLB_FIXED + 1);
		iova = k * 0x2000 + 0x10;
		atomic_fetch_add_explicit(&r->reads, 1, memory_order_relaxed);
		ret = uvh_iotlb_translate(r->c, iova, 0x10000, UVH_IOTLB_RO, &u, &n);
		if (!k) {
			/* the moving entry: absent, or one of its two mappings */
			if (!ret && (n != 0xff0 || (u - iova != 0x100000 && u - iova != 0x200000)))
				r->bad++;
			continue;
		}
		if (ret || u - iova != fixed_shift(k) || n != 0xff0)
			r->bad++;
		else
			r->hits++;
	}
	return NULL;
}

Test(iotlb, concurrent_translate_during_updates)
{
	struct uvh_iotlb_cache *c = uvh_iotlb_new(2048);
	struct iotlb_reader r = { .c = c };
	pthread_t t;
	unsigned int i;

	for (i = 1; i <= IOTLB_FIXED; i++)
		cr_assert_eq(iotlb_upd(c, i * 0x2000, 0x1000, i * 0x2000 + fixed_shift(i),
				       UVH_IOTLB_RO), 0);
	cr_assert_eq(pthread_create(&t, NULL, iotlb_read_thread, &r), 0);
	/*
	 * Keep the writer going until the reader has run a good while
	 * alongside (it may start late), with a cap in case it gets no core.
	 */
	for (i = 0; i < 20000 || (atomic_load(&r.reads) < 200000 && i < 5000000); i++) {
		if (i & 1)
			cr_assert_eq(iotlb_inv(c, 0, 0x1000), 0);
		else
			cr_assert_eq(iotlb_upd(c, 0, 0x1000, i & 2 ? 0x100000 : 0x200000,
					       UVH_IOTLB_RW), 0);
	}
	atomic_store(&r.stop, true);
	pthread_join(t, NULL);
	cr_assert_eq(r.bad, 0, "%lu wrong or missed translations (%lu right)", r.bad, r.hits);
	cr_assert_gt(r.hits, 0);
	uvh_iotlb_free(c);
}
