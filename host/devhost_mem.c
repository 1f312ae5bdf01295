/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the vhost-user device host's guest memory: the memory table
 * handlers (SET_MEM_TABLE, ADD/REM_MEM_REG), host-pointer tables of
 * in-process sessions, and the dirty log (SET_LOG_BASE, SET_LOG_FD).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "util.h"
#include "devhost_internal.h"

/* ---- memory --------------------------------------------------------------------- */

static void set_mem_on_queue(struct uvh_devhost_queue *q, void *arg)
{
	if (uvh_vq_set_memory(&q->vq, arg))
		UVH_ERR("%s: vring %u is not in the new memory table", q->dh->name, q->index);
}

/* Put @mem in force: every engine switches its rings, then the old table
 * goes (and its mappings that @mem does not share). */
static void publish_memory(struct uvh_devhost *v, struct uvh_memory *mem)
{
	struct uvh_memory *old = v->mem;
	uint64_t bytes = 0;

	uvh__devhost_for_each_running(v, set_mem_on_queue, mem);
	v->mem = mem;
	if (old)
		uvh_memory_release(old, mem);
	for (uint32_t i = 0; i < mem->nregions; i++)
		bytes += mem->regions[i].size;
	__atomic_store_n(&v->mem_regions, mem->nregions, __ATOMIC_RELAXED);
	__atomic_store_n(&v->mem_bytes, bytes, __ATOMIC_RELAXED);
	stat_add(&v->mem_updates, 1);
}

void uvh__devhost_drop_memory(struct uvh_devhost *v)
{
	/* Only once no ring runs: nothing reads the table any more. */
	if (v->mem)
		uvh_memory_release(v->mem, NULL);
	v->mem = NULL;
	__atomic_store_n(&v->mem_regions, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&v->mem_bytes, 0, __ATOMIC_RELAXED);
}

int uvh__devhost_h_set_mem_table(void *dev, const struct uvh_mem_region *regions,
			     const int *fds, unsigned int n)
{
	struct uvh_devhost *v = dev;
	struct uvh_memory *mem;
	unsigned int i;
	int ret = 0;

	mem = uvh_memory_new(0);
	if (!mem) {
		ret = -errno;
		i = 0;
		goto close_rest;
	}
	for (i = 0; i < n; i++) {
		ret = uvh_memory_add_fd(mem, &regions[i], fds[i]);	/* consumes fds[i] */
		if (ret) {
			UVH_ERR("%s: memory region %u (gpa 0x%" PRIx64 " size 0x%" PRIx64
				") refused: %s", v->name, i, regions[i].guest_phys_addr,
				regions[i].memory_size, strerror(-ret));
			i++;
			goto close_rest;
		}
	}
	publish_memory(v, mem);
	return 0;

close_rest:
	for (; i < n; i++)
		close(fds[i]);
	if (mem)
		uvh_memory_release(mem, NULL);
	return ret;
}

int uvh__devhost_h_add_mem_reg(void *dev, const struct uvh_mem_region *region, int fd)
{
	struct uvh_devhost *v = dev;
	struct uvh_memory *mem;
	int ret;

	mem = v->mem ? uvh_memory_copy(v->mem) : uvh_memory_new(0);
	if (!mem) {
		close(fd);
		return -ENOMEM;
	}
	ret = uvh_memory_add_fd(mem, region, fd);
	if (ret) {
		UVH_ERR("%s: ADD_MEM_REG gpa 0x%" PRIx64 " refused: %s", v->name,
			region->guest_phys_addr, strerror(-ret));
		uvh_memory_release(mem, v->mem);	/* only its own mappings */
		return ret;
	}
	publish_memory(v, mem);
	return 0;
}

int uvh__devhost_h_rem_mem_reg(void *dev, const struct uvh_mem_region *region)
{
	struct uvh_devhost *v = dev;
	struct uvh_memory *mem;
	int ret;

	if (!v->mem)
		return -ENOENT;
	mem = uvh_memory_copy(v->mem);
	if (!mem)
		return -ENOMEM;
	ret = uvh_memory_remove(mem, region);
	if (ret) {
		uvh_memory_release(mem, v->mem);
		return ret;
	}
	publish_memory(v, mem);
	return 0;
}

int uvh__devhost_h_get_max_mem_slots(void *dev, uint64_t *slots)
{
	(void)dev;
	*slots = UVH_MAX_MEM_SLOTS;
	return 0;
}

/* ---- host-pointer memory (in-process sessions) ----------------------------------- */

/* A table of host-pointer regions: the old table's fd mappings that it
 * does not keep are unmapped once no ring reads them (publish_memory). */
static int set_mem_host(struct uvh_devhost *v, const struct uvh_devhost_local_region *regions,
			unsigned int n, const struct uvh_memory *base)
{
	struct uvh_memory *mem = base ? uvh_memory_copy(base) : uvh_memory_new(0);
	int ret;

	if (!mem)
		return -ENOMEM;
	for (unsigned int i = 0; i < n; i++) {
		ret = uvh_memory_add_host(mem, regions[i].gpa, regions[i].size, regions[i].hva);
		if (ret) {
			UVH_ERR("%s: host region gpa 0x%" PRIx64 " size 0x%" PRIx64
				" refused: %s", v->name, regions[i].gpa, regions[i].size,
				strerror(-ret));
			uvh_memory_release(mem, base);
			return ret;
		}
	}
	publish_memory(v, mem);
	return 0;
}

int uvh_devhost_set_mem_local(struct uvh_devhost *v, const struct uvh_devhost_local_region *regions,
			 unsigned int n)
{
	int ret;

	if (!v || (n && !regions))
		return -EINVAL;
	pthread_mutex_lock(&v->lock);
	ret = v->local ? set_mem_host(v, regions, n, NULL) : -ENOTCONN;
	pthread_mutex_unlock(&v->lock);
	return ret;
}

int uvh_devhost_add_mem_local(struct uvh_devhost *v, const struct uvh_devhost_local_region *region)
{
	int ret;

	if (!v || !region)
		return -EINVAL;
	pthread_mutex_lock(&v->lock);
	ret = v->local ? set_mem_host(v, region, 1, v->mem) : -ENOTCONN;
	pthread_mutex_unlock(&v->lock);
	return ret;
}

/* ---- dirty log ------------------------------------------------------------------- */

void uvh__devhost_set_log_on_queue(struct uvh_devhost_queue *q, void *arg)
{
	uvh_vq_set_log(&q->vq, arg);
}

int uvh__devhost_h_set_log_base(void *dev, const struct uvh_dirty_log_area *log, int fd)
{
	struct uvh_devhost *v = dev;
	struct uvh_dirty_log *nl, *old = v->log;
	int ret;

	if (fd < 0)
		return -EBADF;	/* LOG_SHMFD is always offered: no fd, no log */
	nl = calloc(1, sizeof(*nl));
	if (!nl) {
		close(fd);
		return -ENOMEM;
	}
	ret = uvh_dirty_log_map(nl, fd, log->mmap_size, log->mmap_offset);
	if (ret) {
		UVH_ERR("%s: log area refused: %s", v->name, strerror(-ret));
		free(nl);
		return ret;
	}
	uvh_dirty_log_set_kick(nl, v->log_fd);
	if (log_all(v))
		uvh__devhost_for_each_running(v, uvh__devhost_set_log_on_queue, nl);
	v->log = nl;
	if (old) {
		uvh_dirty_log_unmap(old);
		free(old);
	}
	return 0;
}

int uvh__devhost_h_set_log_fd(void *dev, int fd)
{
	struct uvh_devhost *v = dev;
	int old = v->log_fd;

	v->log_fd = fd;
	if (v->log) {
		/* engines kick the new fd from their next push; the old one
		 * is closed only once none can be writing it */
		uvh_dirty_log_set_kick(v->log, fd);
		uvh__devhost_quiesce(v);
	}
	uvh_close_fd(&old);
	return 0;
}

void uvh__devhost_log_kick(struct uvh_devhost *v)
{
	if (v->log_fd >= 0 && log_all(v) && eventfd_write(v->log_fd, 1))
		UVH_WARN("%s: log fd write failed: %s", v->name, strerror(errno));
}

void uvh__devhost_drop_log(struct uvh_devhost *v)
{
	if (v->log) {
		uvh_dirty_log_unmap(v->log);
		free(v->log);
		v->log = NULL;
	}
	uvh_close_fd(&v->log_fd);
}
