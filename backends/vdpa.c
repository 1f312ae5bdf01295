/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the vdpa backend [VhostVdpaBackend], /dev/vhost-vdpa-N.
 *
 * A vDPA device (a NIC's virtqueue engine, or the kernel's vdpa_sim) runs
 * the rings; this file only configures it through the vhost-vdpa ioctls
 * and maps guest memory for its DMA with IOTLB v2 messages written to the
 * fd (iova = gpa, uaddr = hva). Everything the kernel answers is checked
 * before it is used, and every caller argument is checked before anything
 * reaches the kernel. See vdpa.h for what each op does.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/vhost.h>

#include "vhost.h"
#include "vhost_internal.h"
#include "log.h"
#include "vdpa.h"

/* What Debian 12's 6.1 uapi headers lack (values from the kernel's
 * include/uapi/linux/vhost.h and vhost_types.h). */
#ifndef VHOST_BACKEND_F_IOTLB_MSG_V2
#define VHOST_BACKEND_F_IOTLB_MSG_V2	0x1
#endif
#ifndef VHOST_BACKEND_F_IOTLB_BATCH
#define VHOST_BACKEND_F_IOTLB_BATCH	0x2
#endif
#ifndef VHOST_BACKEND_F_SUSPEND
#define VHOST_BACKEND_F_SUSPEND		0x4
#endif
#ifndef VHOST_BACKEND_F_RESUME
#define VHOST_BACKEND_F_RESUME		0x5
#endif
#ifndef VHOST_IOTLB_BATCH_BEGIN
#define VHOST_IOTLB_BATCH_BEGIN		5
#define VHOST_IOTLB_BATCH_END		6
#endif
#ifndef VHOST_VDPA_GET_CONFIG_SIZE
#define VHOST_VDPA_GET_CONFIG_SIZE	_IOR(VHOST_VIRTIO, 0x79, __u32)
#endif
#ifndef VHOST_VDPA_GET_VQS_COUNT
#define VHOST_VDPA_GET_VQS_COUNT	_IOR(VHOST_VIRTIO, 0x80, __u32)
#endif
#ifndef VHOST_VDPA_SUSPEND
#define VHOST_VDPA_SUSPEND		_IO(VHOST_VIRTIO, 0x7D)
#endif
#ifndef VHOST_VDPA_RESUME
#define VHOST_VDPA_RESUME		_IO(VHOST_VIRTIO, 0x7E)
#endif

_Static_assert(UVH_VDPA_BACKEND_F_IOTLB_MSG_V2 == VHOST_BACKEND_F_IOTLB_MSG_V2, "bit");
_Static_assert(UVH_VDPA_BACKEND_F_IOTLB_BATCH == VHOST_BACKEND_F_IOTLB_BATCH, "bit");
_Static_assert(UVH_VDPA_BACKEND_F_SUSPEND == VHOST_BACKEND_F_SUSPEND, "bit");
_Static_assert(UVH_VDPA_BACKEND_F_RESUME == VHOST_BACKEND_F_RESUME, "bit");
/* The kernel consumes exactly this much per write(2) of a v2 message. */
_Static_assert(sizeof(struct vhost_msg_v2) == 72, "vhost_msg_v2");

#define BIT64(n)		(1ULL << (n))
/* The backend features we speak; V2 is required (we only write v2). */
#define WANTED_BACKEND_FEATURES	(BIT64(VHOST_BACKEND_F_IOTLB_MSG_V2) | \
				 BIT64(VHOST_BACKEND_F_IOTLB_BATCH) | \
				 BIT64(VHOST_BACKEND_F_SUSPEND) | \
				 BIT64(VHOST_BACKEND_F_RESUME))
/* IOTLB granule: the kernel pins and maps whole 4 KiB pages, so a region
 * whose gpa and hva disagree inside a page cannot be mapped iova = gpa. */
#define VDPA_PAGE		4096ull
/* Bound of a config access (virtio-net's config is ~40 bytes, block's
 * ~60): keeps a bogus GET_CONFIG_SIZE from sizing our buffers. */
#define VDPA_CONFIG_MAX		4096u
/* Ring index when the kernel has no GET_VQS_COUNT (before Linux 5.18). */
#define VDPA_NVQS_UNKNOWN_MAX	0x10000u

struct vdpa {
	struct uvh_vhost b;		/* first: the ops get &b */
	struct uvh_vdpa_info info;
	uint64_t acked_features;
	bool suspended;
	bool warned_stale_base;
	bool noted_anon;
	/* The memory table as mapped (fds not kept: the device maps by
	 * hva through vhost-vdpa, the caller's fds stay theirs). */
	struct uvh_vhost_mem_region *regions;
	unsigned int nregions;
};

static const struct uvh_vhost_ops vdpa_ops;

static struct vdpa *to_vdpa(struct uvh_vhost *b)
{
	return (struct vdpa *)b;
}

static int xioctl(int fd, unsigned long req, void *arg)
{
	int r;

	do {
		r = ioctl(fd, req, arg);
	} while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : 0;
}

/* ---- IOTLB messages ----------------------------------------------------- */

/* One struct vhost_msg_v2 per write(2): the kernel reads one message per
 * call and ignores what follows it. */
static int iotlb_write(struct vdpa *v, uint8_t type, uint64_t iova, uint64_t size,
		       uint64_t uaddr, uint8_t perm)
{
	struct vhost_msg_v2 m;
	ssize_t n;

	memset(&m, 0, sizeof(m));
	m.type = VHOST_IOTLB_MSG_V2;
	m.asid = 0;
	m.iotlb.iova = iova;
	m.iotlb.size = size;
	m.iotlb.uaddr = uaddr;
	m.iotlb.perm = perm;
	m.iotlb.type = type;
	do {
		n = write(v->b.fd, &m, sizeof(m));
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		int err = -errno;

		UVH_ERR("%s: IOTLB message type %u iova 0x%llx size 0x%llx: %s", v->b.name,
			type, (unsigned long long)iova, (unsigned long long)size, strerror(-err));
		return err;
	}
	if ((size_t)n != sizeof(m)) {
		UVH_ERR("%s: IOTLB message: short write (%zd)", v->b.name, n);
		return -EIO;
	}
	return 0;
}

static bool batching(const struct vdpa *v)
{
	return v->info.backend_features & BIT64(VHOST_BACKEND_F_IOTLB_BATCH);
}

static int map_region(struct vdpa *v, const struct uvh_vhost_mem_region *r)
{
	return iotlb_write(v, VHOST_IOTLB_UPDATE, r->gpa, r->size, (uint64_t)(uintptr_t)r->hva,
			   VHOST_ACCESS_RW);
}

static int unmap_region(struct vdpa *v, const struct uvh_vhost_mem_region *r)
{
	return iotlb_write(v, VHOST_IOTLB_INVALIDATE, r->gpa, r->size, 0, 0);
}

/* Is [iova, iova + size) inside the device's IOVA range? (size > 0, no wrap) */
static bool in_iova_range(const struct vdpa *v, uint64_t iova, uint64_t size)
{
	return iova >= v->info.iova_range.first && iova + size - 1 <= v->info.iova_range.last;
}

/* On top of uvh__region_check: whole pages, ending below 2^64, and inside
 * the device's IOVA range (-ERANGE). */
static int check_region(void *ctx, const struct uvh_vhost_mem_region *r)
{
	const struct vdpa *v = ctx;
	uint64_t hva = (uint64_t)(uintptr_t)r->hva;
	int err = uvh__region_check(v->b.name, r);

	if (err)
		return err;
	if ((r->gpa | r->size | hva) & (VDPA_PAGE - 1))
		return -EINVAL;
	if (r->gpa + r->size < r->gpa || hva + r->size < hva)
		return -EINVAL;
	if (!in_iova_range(v, r->gpa, r->size))
		return -ERANGE;
	return 0;
}

static bool same_region(const struct uvh_vhost_mem_region *a,
			const struct uvh_vhost_mem_region *b)
{
	return a->gpa == b->gpa && a->size == b->size && a->hva == b->hva;
}

/* Devices that map by virtual address (VDUSE, vdpa_sim with use_va, the
 * default since 6.3) map only shared file mappings and skip the rest
 * without an error: say so once when a region comes without its fd. */
static void note_anon(struct vdpa *v, const struct uvh_vhost_mem_region *r)
{
	if (r->fd >= 0 || v->noted_anon)
		return;
	v->noted_anon = true;
	UVH_INFO("%s: region gpa 0x%llx has no fd: a device mapping by virtual address "
		 "ignores memory that is not a MAP_SHARED file mapping", v->b.name,
		 (unsigned long long)r->gpa);
}

/* Invalidate and forget every mapping of the table (after a reset, when
 * the device no longer uses them). */
static void unmap_all(struct vdpa *v)
{
	for (unsigned int i = 0; i < v->nregions; i++)
		if (unmap_region(v, &v->regions[i]))
			UVH_WARN("%s: reset: region gpa 0x%llx left mapped", v->b.name,
				 (unsigned long long)v->regions[i].gpa);
	free(v->regions);
	v->regions = NULL;
	v->nregions = 0;
}

static int vdpa_set_mem_table(struct uvh_vhost *b, const struct uvh_vhost_mem_region *regions,
			      unsigned int n)
{
	struct vdpa *v = to_vdpa(b);
	struct uvh_vhost_mem_region *res;
	bool *keep = NULL, *have = NULL, batch = false;
	unsigned int nres = 0, first_new, i, j;
	int err = 0, r;

	if (n > UVH_VDPA_MAX_REGIONS)
		return -E2BIG;
	if (n && !regions)
		return -EINVAL;
	err = uvh__regions_check(b->name, regions, n, 0, check_region, v);
	if (err)
		return err;

	/* Every allocation before the first message: a failure changes nothing. */
	res = calloc((size_t)v->nregions + n + 1, sizeof(*res));
	keep = calloc((size_t)v->nregions + 1, sizeof(*keep));
	have = calloc((size_t)n + 1, sizeof(*have));
	if (!res || !keep || !have) {
		err = -ENOMEM;
		goto out_free;
	}
	for (i = 0; i < v->nregions; i++)
		for (j = 0; j < n; j++)
			if (!have[j] && same_region(&v->regions[i], &regions[j])) {
				keep[i] = have[j] = true;
				break;
			}

	/* res: what is mapped; it starts as the old table and follows each
	 * message that succeeds, so it is right whatever fails. */
	for (i = 0; i < v->nregions; i++)
		res[i] = v->regions[i];
	nres = v->nregions;
	for (i = 0; i < v->nregions && !batch; i++)
		batch = !keep[i];
	for (j = 0; j < n && !batch; j++)
		batch = !have[j];
	batch = batch && batching(v);
	if (batch) {
		err = iotlb_write(v, VHOST_IOTLB_BATCH_BEGIN, 0, 0, 0, 0);
		if (err)
			goto out_free;
	}

	/* Invalidate first: a new region may overlap an old one. */
	for (i = 0; i < v->nregions; i++) {
		if (keep[i])
			continue;
		err = unmap_region(v, &v->regions[i]);
		if (err)
			goto out_end;
		res[i].size = 0;	/* gone; compacted below */
	}
	first_new = nres;
	for (j = 0; j < n; j++) {
		if (have[j])
			continue;
		note_anon(v, &regions[j]);
		res[nres] = regions[j];
		res[nres].fd = -1;
		err = map_region(v, &res[nres]);
		if (err)
			break;
		nres++;
	}
	if (err) {
		/* Undo this call's mappings: the caller sees the kept ones only. */
		for (i = first_new; i < nres; i++) {
			r = unmap_region(v, &res[i]);
			if (!r)
				res[i].size = 0;
		}
	}

out_end:
	if (batch) {
		r = iotlb_write(v, VHOST_IOTLB_BATCH_END, 0, 0, 0, 0);
		if (r && !err)
			err = r;
	}
	for (i = 0, j = 0; i < nres; i++)
		if (res[i].size)
			res[j++] = res[i];
	free(v->regions);
	v->regions = res;
	v->nregions = j;
	res = NULL;
	if (!err)
		UVH_DEBUG("%s: memory table of %u regions mapped", b->name, n);
out_free:
	free(res);
	free(keep);
	free(have);
	return err;
}

static int vdpa_add_mem_region(struct uvh_vhost *b, const struct uvh_vhost_mem_region *region)
{
	struct vdpa *v = to_vdpa(b);
	struct uvh_vhost_mem_region *grown;
	int err;

	if (!region)
		return -EINVAL;
	err = check_region(v, region);
	if (!err)
		err = uvh__region_disjoint(b->name, v->regions, v->nregions, region, 0);
	if (err)
		return err;
	if (v->nregions >= UVH_VDPA_MAX_REGIONS)
		return -E2BIG;
	err = uvh__regions_with(v->regions, v->nregions, region, &grown);
	if (err)
		return err;
	grown[v->nregions].fd = -1;
	note_anon(v, region);
	err = map_region(v, &grown[v->nregions]);
	if (err) {
		free(grown);
		return err;
	}
	free(v->regions);
	v->regions = grown;
	v->nregions++;
	return 0;
}

static int vdpa_remove_mem_region(struct uvh_vhost *b,
				  const struct uvh_vhost_mem_region *region)
{
	struct vdpa *v = to_vdpa(b);
	int i, err;

	if (!region)
		return -EINVAL;
	i = uvh__region_find(b->name, v->regions, v->nregions, region);
	if (i < 0)
		return i;
	err = unmap_region(v, &v->regions[i]);
	if (err)
		return err;
	uvh__region_remove_at(v->regions, &v->nregions, (unsigned int)i);
	return 0;
}

static int vdpa_iotlb_msg(struct uvh_vhost *b, const struct uvh_iotlb *msg)
{
	struct vdpa *v = to_vdpa(b);

	if (!msg || !msg->size || msg->iova + msg->size - 1 < msg->iova)
		return -EINVAL;
	switch (msg->type) {
	case UVH_IOTLB_UPDATE:
		if (msg->perm < UVH_IOTLB_RO || msg->perm > UVH_IOTLB_RW ||
		    !msg->uaddr || msg->uaddr + msg->size - 1 < msg->uaddr)
			return -EINVAL;
		break;
	case UVH_IOTLB_INVALIDATE:
		break;
	default:
		return -EINVAL;
	}
	if (!in_iova_range(v, msg->iova, msg->size))
		return -ERANGE;
	return iotlb_write(v, msg->type, msg->iova, msg->size,
			   msg->type == UVH_IOTLB_UPDATE ? msg->uaddr : 0,
			   msg->type == UVH_IOTLB_UPDATE ? msg->perm : 0);
}

static int vdpa_iotlb_miss(struct uvh_vhost *b, struct uvh_iotlb *msg, int timeout_ms)
{
	struct pollfd p = { .fd = b->fd, .events = POLLIN };
	struct vhost_msg_v2 m;
	ssize_t n;
	int r;

	if (!msg)
		return -EINVAL;
	do {
		r = poll(&p, 1, timeout_ms);
	} while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	if (r == 0)
		return -ETIMEDOUT;
	if (p.revents & (POLLERR | POLLNVAL))
		return -EIO;
	do {
		n = read(b->fd, &m, sizeof(m));
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	/* Only a whole v2 message carrying a miss or an access failure. */
	if ((size_t)n != sizeof(m) || m.type != VHOST_IOTLB_MSG_V2 ||
	    (m.iotlb.type != VHOST_IOTLB_MISS && m.iotlb.type != VHOST_IOTLB_ACCESS_FAIL) ||
	    m.iotlb.perm > VHOST_ACCESS_RW)
		return -EIO;
	memset(msg, 0, sizeof(*msg));
	msg->iova = m.iotlb.iova;
	msg->size = m.iotlb.size;
	msg->uaddr = m.iotlb.uaddr;
	msg->perm = m.iotlb.perm;
	msg->type = m.iotlb.type;
	return 0;
}

/* ---- features, owner, status ------------------------------------------- */

static int vdpa_get_features(struct uvh_vhost *b, uint64_t *features)
{
	if (!features)
		return -EINVAL;
	return xioctl(b->fd, VHOST_GET_FEATURES, features);
}

static int vdpa_set_features(struct uvh_vhost *b, uint64_t features)
{
	struct vdpa *v = to_vdpa(b);
	int err;

	if (features & ~v->info.features)
		return -EINVAL;
	err = xioctl(b->fd, VHOST_SET_FEATURES, &features);
	if (err)
		return err;
	v->acked_features = features;
	return 0;
}

static int vdpa_set_owner(struct uvh_vhost *b)
{
	return xioctl(b->fd, VHOST_SET_OWNER, NULL);
}

static int vdpa_get_backend_features(struct uvh_vhost *b, uint64_t *features)
{
	if (!features)
		return -EINVAL;
	*features = to_vdpa(b)->info.backend_features_offered;
	return 0;
}

static int vdpa_set_backend_features(struct uvh_vhost *b, uint64_t features)
{
	struct vdpa *v = to_vdpa(b);
	int err;

	if (features & ~v->info.backend_features_offered)
		return -EOPNOTSUPP;
	if (!(features & BIT64(VHOST_BACKEND_F_IOTLB_MSG_V2)))
		return -EINVAL;		/* we write nothing but v2 messages */
	err = xioctl(b->fd, VHOST_SET_BACKEND_FEATURES, &features);
	if (err)
		return err;
	v->info.backend_features = features;
	return 0;
}

static int vdpa_get_status(struct uvh_vhost *b, uint8_t *status)
{
	if (!status)
		return -EINVAL;
	return xioctl(b->fd, VHOST_VDPA_GET_STATUS, status);
}

static int put_status(struct vdpa *v, uint8_t status)
{
	return xioctl(v->b.fd, VHOST_VDPA_SET_STATUS, &status);
}

static int vdpa_reset(struct vdpa *v)
{
	int err = put_status(v, 0);

	if (err)
		return err;
	v->suspended = false;
	v->acked_features = 0;
	/* The device dropped its DMA state with the reset (6.1's vdpa_sim
	 * empties its IOTLB) while vhost-vdpa still holds the pinned
	 * mappings: invalidate them so the next table maps afresh. */
	unmap_all(v);
	UVH_DEBUG("%s: device reset", v->b.name);
	return 0;
}

static int vdpa_set_status(struct uvh_vhost *b, uint8_t status)
{
	static const uint8_t steps[] = {
		UVH_VDPA_S_ACKNOWLEDGE, UVH_VDPA_S_DRIVER, UVH_VDPA_S_FEATURES_OK,
		UVH_VDPA_S_DRIVER_OK,
	};
	struct vdpa *v = to_vdpa(b);
	uint8_t cur, back;
	int err;

	if (status == 0)
		return vdpa_reset(v);
	if (status & UVH_VDPA_S_DRIVER_OK)
		status |= UVH_VDPA_S_FEATURES_OK;
	if (status & UVH_VDPA_S_FEATURES_OK)
		status |= UVH_VDPA_S_DRIVER;
	if (status & UVH_VDPA_S_DRIVER)
		status |= UVH_VDPA_S_ACKNOWLEDGE;
	err = vdpa_get_status(b, &cur);
	if (err)
		return err;
	if (cur & ~status)
		return -EINVAL;		/* only a reset clears bits */
	for (size_t i = 0; i < sizeof(steps); i++) {
		if (!(status & steps[i]) || (cur & steps[i]))
			continue;
		cur |= steps[i];
		err = put_status(v, cur);
		if (err)
			return err;
		if (steps[i] != UVH_VDPA_S_FEATURES_OK && steps[i] != UVH_VDPA_S_DRIVER_OK)
			continue;
		err = vdpa_get_status(b, &back);
		if (err)
			return err;
		if (!(back & steps[i])) {
			UVH_ERR("%s: device did not keep status %s (0x%02x)", b->name,
				steps[i] == UVH_VDPA_S_FEATURES_OK ? "FEATURES_OK" : "DRIVER_OK",
				back);
			return -EIO;
		}
	}
	if (cur != status)
		err = put_status(v, status);	/* FAILED and the like, last */
	return err;
}

static int vdpa_reset_owner(struct uvh_vhost *b)
{
	return vdpa_reset(to_vdpa(b));
}

/* The ioctl argument for a config access, once the range is checked. */
static int config_arg(struct vdpa *v, uint32_t offset, uint32_t size, const uint8_t *buf,
		      struct vhost_vdpa_config **out)
{
	struct vhost_vdpa_config *c;

	if (!buf || !size || size > VDPA_CONFIG_MAX || offset > VDPA_CONFIG_MAX - size)
		return -EINVAL;
	if (v->info.config_size && offset + size > v->info.config_size)
		return -EINVAL;
	c = calloc(1, sizeof(*c) + size);
	if (!c)
		return -ENOMEM;
	c->off = offset;
	c->len = size;
	*out = c;
	return 0;
}

static int vdpa_get_config(struct uvh_vhost *b, uint32_t offset, uint32_t size, uint8_t *buf)
{
	struct vhost_vdpa_config *c;
	int err = config_arg(to_vdpa(b), offset, size, buf, &c);

	if (err)
		return err;
	err = xioctl(b->fd, VHOST_VDPA_GET_CONFIG, c);
	if (!err)
		memcpy(buf, c->buf, size);
	free(c);
	return err;
}

static int vdpa_set_config(struct uvh_vhost *b, uint32_t offset, uint32_t size,
			   const uint8_t *buf)
{
	struct vhost_vdpa_config *c;
	int err = config_arg(to_vdpa(b), offset, size, buf, &c);

	if (err)
		return err;
	memcpy(c->buf, buf, size);
	err = xioctl(b->fd, VHOST_VDPA_SET_CONFIG, c);
	free(c);
	return err;
}

static int vdpa_set_config_call(struct uvh_vhost *b, int fd)
{
	if (fd < -1)
		return -EBADF;
	return xioctl(b->fd, VHOST_VDPA_SET_CONFIG_CALL, &fd);
}

static int vdpa_suspend(struct uvh_vhost *b)
{
	struct vdpa *v = to_vdpa(b);
	int err;

	if (!(v->info.backend_features & BIT64(VHOST_BACKEND_F_SUSPEND)))
		return -EOPNOTSUPP;
	err = xioctl(b->fd, VHOST_VDPA_SUSPEND, NULL);
	if (!err)
		v->suspended = true;
	return err;
}

static int vdpa_resume(struct uvh_vhost *b)
{
	struct vdpa *v = to_vdpa(b);
	int err;

	if (!(v->info.backend_features & BIT64(VHOST_BACKEND_F_RESUME)))
		return -EOPNOTSUPP;
	err = xioctl(b->fd, VHOST_VDPA_RESUME, NULL);
	if (!err)
		v->suspended = false;
	return err;
}

/* ---- rings ---------------------------------------------------------------- */

static int check_index(const struct vdpa *v, uint32_t index)
{
	uint32_t n = v->info.nvqs ? v->info.nvqs : VDPA_NVQS_UNKNOWN_MAX;

	return index < n ? 0 : -EINVAL;
}

static int vdpa_set_vring_num(struct uvh_vhost *b, uint32_t index, uint32_t num)
{
	struct vdpa *v = to_vdpa(b);
	struct vhost_vring_state s = { .index = index, .num = num };

	if (check_index(v, index))
		return -EINVAL;
	if (!num || (num & (num - 1)) || num > v->info.vq_num_max)
		return -EINVAL;
	return xioctl(b->fd, VHOST_SET_VRING_NUM, &s);
}

static int vdpa_get_vring_num_max(struct uvh_vhost *b, uint32_t *num)
{
	if (!num)
		return -EINVAL;
	*num = to_vdpa(b)->info.vq_num_max;
	return 0;
}

static int vdpa_set_vring_addr(struct uvh_vhost *b, const struct uvh_vhost_vring_addr *addr)
{
	struct vdpa *v = to_vdpa(b);
	struct vhost_vring_addr a;
	bool packed = v->acked_features & BIT64(UVH_VIRTIO_F_RING_PACKED);

	if (!addr || check_index(v, addr->index))
		return -EINVAL;
	if (addr->flags & UVH_VRING_F_LOG)
		return -EOPNOTSUPP;	/* vDPA devices keep no dirty log here */
	if (addr->flags)
		return -EINVAL;
	if ((addr->desc_gpa & 15) || (addr->avail_gpa & (packed ? 3 : 1)) ||
	    (addr->used_gpa & 3))
		return -EINVAL;
	if (!in_iova_range(v, addr->desc_gpa, 1) || !in_iova_range(v, addr->avail_gpa, 1) ||
	    !in_iova_range(v, addr->used_gpa, 1))
		return -ERANGE;
	memset(&a, 0, sizeof(a));
	a.index = addr->index;
	a.desc_user_addr = addr->desc_gpa;
	a.avail_user_addr = addr->avail_gpa;
	a.used_user_addr = addr->used_gpa;
	return xioctl(b->fd, VHOST_SET_VRING_ADDR, &a);
}

static int vdpa_set_vring_base(struct uvh_vhost *b, uint32_t index, uint32_t base)
{
	struct vdpa *v = to_vdpa(b);
	struct vhost_vring_state s = { .index = index, .num = base };

	if (check_index(v, index) || base > 0xffff)
		return -EINVAL;
	return xioctl(b->fd, VHOST_SET_VRING_BASE, &s);
}

static int vdpa_get_vring_base(struct uvh_vhost *b, uint32_t index, uint32_t *base)
{
	struct vdpa *v = to_vdpa(b);
	struct vhost_vring_state s = { .index = index, .num = 0 };
	uint8_t status = 0;
	int err;

	if (!base || check_index(v, index))
		return -EINVAL;
	err = vdpa_get_status(b, &status);
	if (err)
		return err;
	if ((status & UVH_VDPA_S_DRIVER_OK) && !v->suspended) {
		if (v->info.backend_features & BIT64(VHOST_BACKEND_F_SUSPEND)) {
			err = vdpa_suspend(b);
			if (err)
				return err;
		} else if (!v->warned_stale_base) {
			UVH_WARN("%s: device cannot suspend: ring bases read from a running device",
				 b->name);
			v->warned_stale_base = true;
		}
	}
	err = xioctl(b->fd, VHOST_GET_VRING_BASE, &s);
	if (err)
		return err;
	if (s.num > 0xffff)
		return -EIO;
	*base = s.num;
	return 0;
}

static int vring_file(struct uvh_vhost *b, unsigned long req, uint32_t index, int fd)
{
	struct vhost_vring_file f = { .index = index, .fd = fd };

	if (check_index(to_vdpa(b), index))
		return -EINVAL;
	if (fd < -1)
		return -EBADF;
	return xioctl(b->fd, req, &f);
}

static int vdpa_set_vring_kick(struct uvh_vhost *b, uint32_t index, int fd)
{
	return vring_file(b, VHOST_SET_VRING_KICK, index, fd);
}

static int vdpa_set_vring_call(struct uvh_vhost *b, uint32_t index, int fd)
{
	return vring_file(b, VHOST_SET_VRING_CALL, index, fd);
}

static int vdpa_set_vring_err(struct uvh_vhost *b, uint32_t index, int fd)
{
	return vring_file(b, VHOST_SET_VRING_ERR, index, fd);
}

static int vdpa_set_vring_enable(struct uvh_vhost *b, uint32_t index, bool enable)
{
	struct vhost_vring_state s = { .index = index, .num = enable ? 1 : 0 };

	if (check_index(to_vdpa(b), index))
		return -EINVAL;
	return xioctl(b->fd, VHOST_VDPA_SET_VRING_ENABLE, &s);
}

/* ---- device facts ---------------------------------------------------------- */

static int vdpa_get_queue_num(struct uvh_vhost *b, uint64_t *num)
{
	struct vdpa *v = to_vdpa(b);

	if (!num)
		return -EINVAL;
	if (!v->info.nvqs)
		return -EOPNOTSUPP;
	*num = v->info.nvqs;
	return 0;
}

static int vdpa_get_device_id(struct uvh_vhost *b, uint32_t *id)
{
	if (!id)
		return -EINVAL;
	*id = to_vdpa(b)->info.device_id;
	return 0;
}

static int vdpa_get_iova_range(struct uvh_vhost *b, struct uvh_vhost_iova_range *range)
{
	if (!range)
		return -EINVAL;
	*range = to_vdpa(b)->info.iova_range;
	return 0;
}

static void vdpa_close(struct uvh_vhost *b)
{
	struct vdpa *v = to_vdpa(b);

	/* Closing the fd resets the device and drops every mapping. */
	if (b->fd >= 0)
		close(b->fd);
	free(v->regions);
	free(v);
}

static const struct uvh_vhost_ops vdpa_ops = {
	.get_features = vdpa_get_features,
	.set_features = vdpa_set_features,
	.set_owner = vdpa_set_owner,
	.reset_owner = vdpa_reset_owner,
	.get_backend_features = vdpa_get_backend_features,
	.set_backend_features = vdpa_set_backend_features,
	.set_mem_table = vdpa_set_mem_table,
	.add_mem_region = vdpa_add_mem_region,
	.remove_mem_region = vdpa_remove_mem_region,
	.set_vring_num = vdpa_set_vring_num,
	.get_vring_num_max = vdpa_get_vring_num_max,
	.set_vring_addr = vdpa_set_vring_addr,
	.set_vring_base = vdpa_set_vring_base,
	.get_vring_base = vdpa_get_vring_base,
	.set_vring_kick = vdpa_set_vring_kick,
	.set_vring_call = vdpa_set_vring_call,
	.set_vring_err = vdpa_set_vring_err,
	.set_vring_enable = vdpa_set_vring_enable,
	.get_status = vdpa_get_status,
	.set_status = vdpa_set_status,
	.get_config = vdpa_get_config,
	.set_config = vdpa_set_config,
	.set_config_call = vdpa_set_config_call,
	.iotlb_msg = vdpa_iotlb_msg,
	.iotlb_miss = vdpa_iotlb_miss,
	.get_queue_num = vdpa_get_queue_num,
	.get_device_id = vdpa_get_device_id,
	.get_iova_range = vdpa_get_iova_range,
	.suspend = vdpa_suspend,
	.resume = vdpa_resume,
	.close = vdpa_close,
};

/* ---- open -------------------------------------------------------------------- */

/* Ask the kernel what the device is, and ack the backend features we speak. */
static int query_device(int fd, const char *name, struct uvh_vdpa_info *info)
{
	struct vhost_vdpa_iova_range range;
	uint64_t bf = 0, ack;
	uint32_t u32;
	uint16_t num;
	int err;

	memset(info, 0, sizeof(*info));
	err = xioctl(fd, VHOST_VDPA_GET_DEVICE_ID, &u32);
	if (err) {
		UVH_ERR("%s: not a vhost-vdpa device (VHOST_VDPA_GET_DEVICE_ID: %s)", name,
			strerror(-err));
		return err;
	}
	info->device_id = u32;
	err = xioctl(fd, VHOST_GET_FEATURES, &info->features);
	if (err)
		return err;
	err = xioctl(fd, VHOST_VDPA_GET_VRING_NUM, &num);
	if (err)
		return err;
	info->vq_num_max = num;
	/* Added over time (5.9 .. 5.18): missing ones leave a default. */
	if (!xioctl(fd, VHOST_VDPA_GET_VQS_COUNT, &u32))
		info->nvqs = u32;
	if (!xioctl(fd, VHOST_VDPA_GET_CONFIG_SIZE, &u32))
		info->config_size = u32;
	if (info->nvqs > VDPA_NVQS_UNKNOWN_MAX || info->config_size > VDPA_CONFIG_MAX) {
		UVH_ERR("%s: implausible device: %u rings, %u bytes of config", name,
			info->nvqs, info->config_size);
		return -EIO;
	}
	info->iova_range.first = 0;
	info->iova_range.last = UINT64_MAX;
	if (!xioctl(fd, VHOST_VDPA_GET_IOVA_RANGE, &range)) {
		if (range.first > range.last) {
			UVH_ERR("%s: empty IOVA range", name);
			return -EIO;
		}
		info->iova_range.first = range.first;
		info->iova_range.last = range.last;
	}
	err = xioctl(fd, VHOST_GET_BACKEND_FEATURES, &bf);
	if (err)
		return err;
	info->backend_features_offered = bf;
	if (!(bf & BIT64(VHOST_BACKEND_F_IOTLB_MSG_V2))) {
		UVH_ERR("%s: kernel offers no IOTLB_MSG_V2", name);
		return -EOPNOTSUPP;
	}
	ack = bf & WANTED_BACKEND_FEATURES;
	err = xioctl(fd, VHOST_SET_BACKEND_FEATURES, &ack);
	if (err)
		return err;
	info->backend_features = ack;
	return 0;
}

static int adopt(int fd, const struct uvh_vdpa_info *known, const char *name,
		 struct uvh_vhost **out)
{
	struct vdpa *v;
	int err;

	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->b.ops = &vdpa_ops;
	v->b.type = UVH_VHOST_VDPA;
	v->b.fd = fd;
	snprintf(v->b.name, sizeof(v->b.name), "%s", name);
	if (known) {
		v->info = *known;
	} else {
		err = query_device(fd, v->b.name, &v->info);
		if (err) {
			free(v);
			return err;
		}
	}
	UVH_INFO("%s: device id %u, %u rings of at most %u, config %u bytes, "
		 "features 0x%llx, backend features 0x%llx (acked 0x%llx), "
		 "IOVA 0x%llx-0x%llx", v->b.name, v->info.device_id, v->info.nvqs,
		 v->info.vq_num_max, v->info.config_size, (unsigned long long)v->info.features,
		 (unsigned long long)v->info.backend_features_offered,
		 (unsigned long long)v->info.backend_features,
		 (unsigned long long)v->info.iova_range.first,
		 (unsigned long long)v->info.iova_range.last);
	*out = &v->b;
	return 0;
}

int uvh_vhost_vdpa_open(const char *path, const struct uvh_vhost_open_opts *opts,
			  struct uvh_vhost **out)
{
	char name[sizeof(((struct uvh_vhost *)0)->name)];
	struct stat st;
	int fd, err;

	if (!path || !*path || !out)
		return -EINVAL;
	fd = open(path, O_RDWR | O_CLOEXEC | (opts ? opts->open_flags : 0));
	if (fd < 0) {
		err = -errno;
		UVH_ERR("vdpa: open %s: %s", path, strerror(-err));
		return err;
	}
	if (fstat(fd, &st) < 0 || !S_ISCHR(st.st_mode)) {
		UVH_ERR("vdpa: %s is not a character device", path);
		close(fd);
		return -ENOTTY;
	}
	snprintf(name, sizeof(name), "vdpa:%s", path);
	err = adopt(fd, NULL, name, out);
	if (err)
		close(fd);
	return err;
}

int uvh_vhost_vdpa_open_fd(int fd, const struct uvh_vdpa_info *known,
			     struct uvh_vhost **out)
{
	char name[32];
	int own, err;

	if (!out)
		return -EINVAL;
	if (fd < 0)
		return -EBADF;
	if (known) {
		if (!(known->backend_features & BIT64(VHOST_BACKEND_F_IOTLB_MSG_V2)))
			return -EOPNOTSUPP;
		if ((known->backend_features & ~known->backend_features_offered) ||
		    known->iova_range.first > known->iova_range.last ||
		    known->config_size > VDPA_CONFIG_MAX || known->nvqs > VDPA_NVQS_UNKNOWN_MAX)
			return -EINVAL;
	}
	own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (own < 0)
		return -errno;
	snprintf(name, sizeof(name), "vdpa:fd%d", fd);
	err = adopt(own, known, name, out);
	if (err)
		close(own);
	return err;
}

int uvh_vhost_vdpa_info(const struct uvh_vhost *b, struct uvh_vdpa_info *info)
{
	if (!b || !info)
		return -EINVAL;
	if (b->ops != &vdpa_ops)
		return -EOPNOTSUPP;
	*info = ((const struct vdpa *)b)->info;
	return 0;
}

int uvh_vhost_vdpa_mapped_regions(const struct uvh_vhost *b, unsigned int *n)
{
	if (!b || !n)
		return -EINVAL;
	if (b->ops != &vdpa_ops)
		return -EOPNOTSUPP;
	*n = ((const struct vdpa *)b)->nregions;
	return 0;
}
