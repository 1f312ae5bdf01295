/* SPDX-License-Identifier: MIT */
/*
 * kern backend [VhostKernBackend]: the kernel runs the rings. Every op is
 * one ioctl on a /dev/vhost-* character device (vhost-net, vhost-vsock);
 * this file validates what it is given, translates ring addresses from
 * guest-physical to the VMM's virtual addresses through a kept copy of
 * the memory table, and turns failures into -errno.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
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
#include "kern.h"
#include "log.h"
#include "message.h"

/*
 * Linux 6.4 added per-ring workers; Debian 12's 6.1 uapi headers do not
 * have them. Values from include/uapi/linux/vhost.h and vhost_types.h.
 */
#ifndef VHOST_NEW_WORKER
struct vhost_worker_state {
	unsigned int worker_id;
};

struct vhost_vring_worker {
	unsigned int index;
	unsigned int worker_id;
};

#define VHOST_NEW_WORKER		_IOR(VHOST_VIRTIO, 0x8, struct vhost_worker_state)
#define VHOST_FREE_WORKER		_IOW(VHOST_VIRTIO, 0x9, struct vhost_worker_state)
#define VHOST_ATTACH_VRING_WORKER	_IOW(VHOST_VIRTIO, 0x15, struct vhost_vring_worker)
#define VHOST_GET_VRING_WORKER		_IOWR(VHOST_VIRTIO, 0x16, struct vhost_vring_worker)
#endif

_Static_assert(VHOST_NEW_WORKER == 0x8004af08u, "VHOST_NEW_WORKER");
_Static_assert(VHOST_FREE_WORKER == 0x4004af09u, "VHOST_FREE_WORKER");
_Static_assert(VHOST_ATTACH_VRING_WORKER == 0x4008af15u, "VHOST_ATTACH_VRING_WORKER");
_Static_assert(VHOST_GET_VRING_WORKER == 0xc008af16u, "VHOST_GET_VRING_WORKER");
/* Both IOTLB message layouts put the vhost_iotlb_msg at byte 8. */
_Static_assert(sizeof(struct vhost_msg) == 72 && sizeof(struct vhost_msg_v2) == 72, "vhost_msg");
_Static_assert(offsetof(struct vhost_msg, iotlb) == 8 && offsetof(struct vhost_msg_v2, iotlb) == 8,
	       "vhost_msg iotlb");

#define KERN_MAX_MEM_REGIONS_PARAM	"/sys/module/vhost/parameters/max_mem_regions"
/* VIRTIO_F_ACCESS_PLATFORM: ring addresses are IOVAs the kernel translates. */
#define KERN_F_ACCESS_PLATFORM	(1ull << UVH_VIRTIO_F_IOMMU_PLATFORM)
#define KERN_F_EVENT_IDX	(1ull << UVH_VIRTIO_F_RING_EVENT_IDX)

struct kern_backend {
	struct uvh_vhost b;		/* first: ops, type, name, fd */
	/* The table the kernel has, sorted by gpa (fd fields not kept:
	 * the kernel maps by hva, the caller's fds stay theirs). */
	struct uvh_vhost_mem_region *regions;
	unsigned int nregions;
	unsigned int max_regions;
	uint64_t acked_features;
	bool iotlb_v2;			/* VHOST_BACKEND_F_IOTLB_MSG_V2 set */
	bool log_set;
	uint64_t log_size;
	uint32_t vring_num[UVH_KERN_NUM_RINGS];	/* 0 = not set yet */
};

static const struct uvh_vhost_ops kern_ops;

static struct kern_backend *to_kern(struct uvh_vhost *b)
{
	return (struct kern_backend *)b;
}

/*
 * One ioctl; -errno on failure. ENOTTY from a core ioctl means the fd is
 * not a vhost device at all: say so plainly, it is the usual mistake.
 */
static int kern_ioctl(struct kern_backend *k, unsigned long req, void *arg, const char *what,
		      bool quiet)
{
	int r;

	do {
		r = ioctl(k->b.fd, req, arg);
	} while (r < 0 && errno == EINTR);
	if (r >= 0)
		return 0;
	r = -errno;
	if (quiet)
		UVH_DEBUG("%s: %s: %s", k->b.name, what, strerror(-r));
	else if (r == -ENOTTY)
		UVH_ERR("%s: %s: not a vhost device (ENOTTY)", k->b.name, what);
	else
		UVH_ERR("%s: %s: %s", k->b.name, what, strerror(-r));
	return r;
}

static bool ring_ok(uint32_t index)
{
	return index < UVH_KERN_NUM_RINGS;
}

/* An fd argument: an fd or -1 (VHOST_FILE_UNBIND). */
static bool fd_arg_ok(int fd)
{
	return fd >= 0 || fd == VHOST_FILE_UNBIND;
}

/* ---- features, owner --------------------------------------------------- */

static int kern_get_features(struct uvh_vhost *b, uint64_t *features)
{
	uint64_t f = 0;
	int r;

	if (!features)
		return -EINVAL;
	r = kern_ioctl(to_kern(b), VHOST_GET_FEATURES, &f, "VHOST_GET_FEATURES", false);
	if (!r)
		*features = f;
	return r;
}

static int kern_set_features(struct uvh_vhost *b, uint64_t features)
{
	struct kern_backend *k = to_kern(b);
	int r;

	r = kern_ioctl(k, VHOST_SET_FEATURES, &features, "VHOST_SET_FEATURES", false);
	if (!r)
		k->acked_features = features;
	return r;
}

static int kern_set_owner(struct uvh_vhost *b)
{
	return kern_ioctl(to_kern(b), VHOST_SET_OWNER, NULL, "VHOST_SET_OWNER", false);
}

static int kern_reset_owner(struct uvh_vhost *b)
{
	struct kern_backend *k = to_kern(b);
	int r;

	r = kern_ioctl(k, VHOST_RESET_OWNER, NULL, "VHOST_RESET_OWNER", false);
	if (r)
		return r;
	/* The kernel dropped the table, the log, the rings and the acked
	 * (backend) features: forget ours so nothing stale is used. */
	free(k->regions);
	k->regions = NULL;
	k->nregions = 0;
	k->acked_features = 0;
	k->iotlb_v2 = false;
	k->log_set = false;
	k->log_size = 0;
	memset(k->vring_num, 0, sizeof(k->vring_num));
	return 0;
}

static int kern_get_backend_features(struct uvh_vhost *b, uint64_t *features)
{
	uint64_t f = 0;
	int r;

	if (!features)
		return -EINVAL;
	r = kern_ioctl(to_kern(b), VHOST_GET_BACKEND_FEATURES, &f, "VHOST_GET_BACKEND_FEATURES",
		       false);
	if (!r)
		*features = f;
	return r;
}

static int kern_set_backend_features(struct uvh_vhost *b, uint64_t features)
{
	struct kern_backend *k = to_kern(b);
	int r;

	r = kern_ioctl(k, VHOST_SET_BACKEND_FEATURES, &features, "VHOST_SET_BACKEND_FEATURES",
		       false);
	if (!r)
		k->iotlb_v2 = !!(features & (1ull << VHOST_BACKEND_F_IOTLB_MSG_V2));
	return r;
}

/* ---- memory table ------------------------------------------------------- */

static int region_cmp(const void *a, const void *b)
{
	const struct uvh_vhost_mem_region *x = a, *y = b;

	return x->gpa < y->gpa ? -1 : x->gpa > y->gpa;
}

/*
 * Sort @t (n regions, a private copy) and check it as a whole: every
 * region valid, none overlapping another in gpa, not more than the
 * kernel takes. Before any ioctl, so a refused table changes nothing.
 */
static int table_check(struct kern_backend *k, struct uvh_vhost_mem_region *t, unsigned int n)
{
	if (n > k->max_regions) {
		UVH_ERR("%s: %u memory regions, the kernel takes at most %u", k->b.name, n,
			k->max_regions);
		return -E2BIG;
	}
	for (unsigned int i = 0; i < n; i++) {
		t[i].fd = -1;
		t[i].fd_offset = 0;
	}
	/* Sorted, the overlap check is one look at each neighbour, and
	 * the ring translation finds regions in gpa order. */
	if (n > 1)
		qsort(t, n, sizeof(*t), region_cmp);
	return uvh__regions_check(k->b.name, t, n, UVH__REGIONS_SORTED, NULL, NULL);
}

/* Hand table @t (checked, sorted; ownership passes here) to the kernel and
 * keep it when the kernel took it. */
static int table_commit(struct kern_backend *k, struct uvh_vhost_mem_region *t, unsigned int n)
{
	struct vhost_memory *m;
	uint64_t last = 0;
	int r;

	m = calloc(1, sizeof(*m) + (size_t)n * sizeof(m->regions[0]));
	if (!m) {
		free(t);
		return -ENOMEM;
	}
	m->nregions = n;
	for (unsigned int i = 0; i < n; i++) {
		m->regions[i].guest_phys_addr = t[i].gpa;
		m->regions[i].memory_size = t[i].size;
		m->regions[i].userspace_addr = (uint64_t)(uintptr_t)t[i].hva;
		if (t[i].gpa + (t[i].size - 1) > last)
			last = t[i].gpa + (t[i].size - 1);
	}
	r = kern_ioctl(k, VHOST_SET_MEM_TABLE, m, "VHOST_SET_MEM_TABLE", false);
	free(m);
	if (r) {
		free(t);
		return r;
	}
	free(k->regions);
	k->regions = t;
	k->nregions = n;
	/* One bit per 4 KiB page from gpa 0: the kernel writes there for
	 * any gpa in the table, so say when the log no longer covers it. */
	if (k->log_set && n && last / UVH_LOG_PAGE / 8 >= k->log_size)
		UVH_WARN("%s: the dirty log (%" PRIu64 " bytes) does not cover the new memory table"
			 " (up to gpa 0x%" PRIx64 "); set a larger log before logging", k->b.name,
			 k->log_size, last);
	return 0;
}

static int kern_set_mem_table(struct uvh_vhost *b, const struct uvh_vhost_mem_region *regions,
			      unsigned int n)
{
	struct kern_backend *k = to_kern(b);
	struct uvh_vhost_mem_region *t;
	int r;

	if (n && !regions)
		return -EINVAL;
	if (n > k->max_regions)
		return table_check(k, NULL, n);
	t = malloc((size_t)(n ? n : 1) * sizeof(*t));
	if (!t)
		return -ENOMEM;
	if (n)
		memcpy(t, regions, (size_t)n * sizeof(*t));
	r = table_check(k, t, n);
	if (r) {
		free(t);
		return r;
	}
	return table_commit(k, t, n);
}

static int kern_add_mem_region(struct uvh_vhost *b, const struct uvh_vhost_mem_region *region)
{
	struct kern_backend *k = to_kern(b);
	struct uvh_vhost_mem_region *t;
	unsigned int n = k->nregions + 1;
	int r;

	if (!region)
		return -EINVAL;
	if (n > k->max_regions)
		return table_check(k, NULL, n);
	r = uvh__regions_with(k->regions, k->nregions, region, &t);
	if (r)
		return r;
	r = table_check(k, t, n);
	if (r) {
		free(t);
		return r;
	}
	return table_commit(k, t, n);
}

static int kern_remove_mem_region(struct uvh_vhost *b,
				  const struct uvh_vhost_mem_region *region)
{
	struct kern_backend *k = to_kern(b);
	struct uvh_vhost_mem_region *t;
	unsigned int n = k->nregions;
	int i;

	if (!region || !region->size)
		return -EINVAL;
	i = uvh__region_find(k->b.name, k->regions, n, region);
	if (i < 0)
		return i;
	/* A copy: the kept table stays until the kernel took the new one. */
	t = malloc((size_t)n * sizeof(*t));
	if (!t)
		return -ENOMEM;
	memcpy(t, k->regions, (size_t)n * sizeof(*t));
	uvh__region_remove_at(t, &n, (unsigned int)i);
	/* Still sorted and still disjoint: no need to check again. */
	return table_commit(k, t, n);
}

static int kern_get_max_mem_slots(struct uvh_vhost *b, uint64_t *slots)
{
	if (!slots)
		return -EINVAL;
	*slots = to_kern(b)->max_regions;
	return 0;
}

/*
 * The vhost module's max_mem_regions parameter (a ushort, default 64):
 * what VHOST_SET_MEM_TABLE accepts. Not there (vhost built in without
 * sysfs, or not loaded yet): the default.
 */
static unsigned int read_max_mem_regions(void)
{
	char buf[32];
	unsigned long v;
	char *end;
	ssize_t n;
	int fd;

	fd = open(KERN_MAX_MEM_REGIONS_PARAM, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return UVH_KERN_DEFAULT_MEM_REGIONS;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return UVH_KERN_DEFAULT_MEM_REGIONS;
	buf[n] = '\0';
	errno = 0;
	v = strtoul(buf, &end, 10);
	if (errno || end == buf || (*end && *end != '\n') || v == 0 || v > USHRT_MAX)
		return UVH_KERN_DEFAULT_MEM_REGIONS;
	return (unsigned int)v;
}

/* ---- dirty log ---------------------------------------------------------- */

static int kern_set_log_base(struct uvh_vhost *b, const struct uvh_vhost_log *log)
{
	struct kern_backend *k = to_kern(b);
	uint64_t base, need = 0;
	int r;

	if (!log || !log->hva || !log->size)
		return -EINVAL;
	/* The kernel writes one bit per page for every gpa of the table and
	 * is not told the size: a short log would be VMM memory overwritten. */
	for (unsigned int i = 0; i < k->nregions; i++) {
		uint64_t last = k->regions[i].gpa + (k->regions[i].size - 1);
		uint64_t bytes = last / UVH_LOG_PAGE / 8 + 1;

		if (bytes > need)
			need = bytes;
	}
	if (log->size < need) {
		UVH_ERR("%s: dirty log of %" PRIu64 " bytes, the memory table needs %" PRIu64,
			k->b.name, log->size, need);
		return -EINVAL;
	}
	base = (uint64_t)(uintptr_t)log->hva;
	r = kern_ioctl(k, VHOST_SET_LOG_BASE, &base, "VHOST_SET_LOG_BASE", false);
	if (!r) {
		k->log_set = true;
		k->log_size = log->size;
	}
	return r;
}

static int kern_set_log_fd(struct uvh_vhost *b, int fd)
{
	if (!fd_arg_ok(fd))
		return -EBADF;
	/* The kernel takes its own reference: @fd stays the caller's. */
	return kern_ioctl(to_kern(b), VHOST_SET_LOG_FD, &fd, "VHOST_SET_LOG_FD", false);
}

/* ---- rings -------------------------------------------------------------- */

static int kern_set_vring_num(struct uvh_vhost *b, uint32_t index, uint32_t num)
{
	struct kern_backend *k = to_kern(b);
	struct vhost_vring_state s = { .index = index, .num = num };
	int r;

	if (!ring_ok(index))
		return -EINVAL;
	/* vhost rings are split rings: a power of 2. */
	if (!num || num > UVH__VRING_NUM_MAX || (num & (num - 1)))
		return -EINVAL;
	r = kern_ioctl(k, VHOST_SET_VRING_NUM, &s, "VHOST_SET_VRING_NUM", false);
	if (!r)
		k->vring_num[index] = num;
	return r;
}

static int kern_set_vring_addr(struct uvh_vhost *b, const struct uvh_vhost_vring_addr *addr)
{
	struct kern_backend *k = to_kern(b);
	struct vhost_vring_addr a;
	uint64_t num, ev, hva[3];
	int r;

	if (!addr || !ring_ok(addr->index) || (addr->flags & ~UVH_VRING_F_LOG))
		return -EINVAL;
	/* The alignments the split ring layout requires (the kernel checks
	 * them too, but on the translated addresses). */
	if ((addr->desc_gpa & 15) || (addr->avail_gpa & 1) || (addr->used_gpa & 3))
		return -EINVAL;
	hva[0] = addr->desc_gpa;
	hva[1] = addr->avail_gpa;
	hva[2] = addr->used_gpa;
	if (!(k->acked_features & KERN_F_ACCESS_PLATFORM)) {
		/* Before set_vring_num the ring's size is unknown: check
		 * the first byte only (the kernel checks the rest). */
		num = k->vring_num[addr->index];
		ev = (k->acked_features & KERN_F_EVENT_IDX) ? 2 : 0;
		const uint64_t len[3] = {
			num ? 16 * num : 1, num ? 4 + 2 * num + ev : 1, num ? 4 + 8 * num + ev : 1,
		};

		r = uvh__vring_to_hva(k->b.name, k->regions, k->nregions, addr, len, hva);
		if (r)
			return r;
	}
	memset(&a, 0, sizeof(a));
	a.index = addr->index;
	a.flags = (addr->flags & UVH_VRING_F_LOG) ? 1u << VHOST_VRING_F_LOG : 0;
	a.desc_user_addr = hva[0];
	a.avail_user_addr = hva[1];
	a.used_user_addr = hva[2];
	a.log_guest_addr = addr->log_gpa;
	r = kern_ioctl(k, VHOST_SET_VRING_ADDR, &a, "VHOST_SET_VRING_ADDR", false);
	return r;
}

static int kern_set_vring_base(struct uvh_vhost *b, uint32_t index, uint32_t base)
{
	struct vhost_vring_state s = { .index = index, .num = base };

	/* Split rings only (vhost-net/vsock): a 16-bit avail index. */
	if (!ring_ok(index) || base > 0xffff)
		return -EINVAL;
	return kern_ioctl(to_kern(b), VHOST_SET_VRING_BASE, &s, "VHOST_SET_VRING_BASE", false);
}

static int kern_get_vring_base(struct uvh_vhost *b, uint32_t index, uint32_t *base)
{
	struct vhost_vring_state s = { .index = index };
	int r;

	if (!ring_ok(index) || !base)
		return -EINVAL;
	r = kern_ioctl(to_kern(b), VHOST_GET_VRING_BASE, &s, "VHOST_GET_VRING_BASE", false);
	if (!r)
		*base = s.num;
	return r;
}

static int vring_file(struct uvh_vhost *b, unsigned long req, const char *what, uint32_t index,
		      int fd)
{
	struct vhost_vring_file f = { .index = index, .fd = fd };

	if (!ring_ok(index))
		return -EINVAL;
	if (!fd_arg_ok(fd))
		return -EBADF;
	/* The kernel takes its own reference to the file: @fd stays the
	 * caller's, and the same eventfd is what the kernel signals/watches. */
	return kern_ioctl(to_kern(b), req, &f, what, false);
}

static int kern_set_vring_kick(struct uvh_vhost *b, uint32_t index, int fd)
{
	return vring_file(b, VHOST_SET_VRING_KICK, "VHOST_SET_VRING_KICK", index, fd);
}

static int kern_set_vring_call(struct uvh_vhost *b, uint32_t index, int fd)
{
	return vring_file(b, VHOST_SET_VRING_CALL, "VHOST_SET_VRING_CALL", index, fd);
}

static int kern_set_vring_err(struct uvh_vhost *b, uint32_t index, int fd)
{
	return vring_file(b, VHOST_SET_VRING_ERR, "VHOST_SET_VRING_ERR", index, fd);
}

static int kern_set_vring_busyloop_timeout(struct uvh_vhost *b, uint32_t index,
					   uint32_t timeout_us)
{
	struct vhost_vring_state s = { .index = index, .num = timeout_us };

	if (!ring_ok(index))
		return -EINVAL;
	return kern_ioctl(to_kern(b), VHOST_SET_VRING_BUSYLOOP_TIMEOUT, &s,
			  "VHOST_SET_VRING_BUSYLOOP_TIMEOUT", false);
}

static int kern_net_set_backend(struct uvh_vhost *b, uint32_t index, int fd)
{
	return vring_file(b, VHOST_NET_SET_BACKEND, "VHOST_NET_SET_BACKEND", index, fd);
}

/* ---- IOTLB -------------------------------------------------------------- */

static bool perm_ok(uint8_t perm)
{
	return perm == UVH_IOTLB_RO || perm == UVH_IOTLB_WO || perm == UVH_IOTLB_RW;
}

static int kern_iotlb_msg(struct uvh_vhost *b, const struct uvh_iotlb *msg)
{
	struct kern_backend *k = to_kern(b);
	union {
		struct vhost_msg v1;
		struct vhost_msg_v2 v2;
	} m;
	struct vhost_iotlb_msg *io;
	size_t len;
	ssize_t n;

	if (!msg || !msg->size || msg->iova + (msg->size - 1) < msg->iova)
		return -EINVAL;
	switch (msg->type) {
	case UVH_IOTLB_UPDATE:
		if (!perm_ok(msg->perm) || msg->uaddr + (msg->size - 1) < msg->uaddr)
			return -EINVAL;
		break;
	case UVH_IOTLB_INVALIDATE:
		break;
	default:
		return -EINVAL;		/* MISS/ACCESS_FAIL travel the other way */
	}
	memset(&m, 0, sizeof(m));
	if (k->iotlb_v2) {
		m.v2.type = VHOST_IOTLB_MSG_V2;
		m.v2.asid = 0;
		io = &m.v2.iotlb;
		len = sizeof(m.v2);
	} else {
		m.v1.type = VHOST_IOTLB_MSG;
		io = &m.v1.iotlb;
		len = sizeof(m.v1);
	}
	io->iova = msg->iova;
	io->size = msg->size;
	io->uaddr = msg->type == UVH_IOTLB_UPDATE ? msg->uaddr : 0;
	io->perm = msg->type == UVH_IOTLB_UPDATE ? msg->perm : 0;
	io->type = msg->type == UVH_IOTLB_UPDATE ? VHOST_IOTLB_UPDATE : VHOST_IOTLB_INVALIDATE;
	do {
		n = write(k->b.fd, &m, len);
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		int r = -errno;

		UVH_ERR("%s: IOTLB %s iova 0x%" PRIx64 ": %s", k->b.name,
			msg->type == UVH_IOTLB_UPDATE ? "update" : "invalidate", msg->iova,
			strerror(-r));
		return r;
	}
	if ((size_t)n != len)
		return -EIO;
	return 0;
}

/* A message the kernel wrote (vhost_iotlb_miss): checked field by field. */
static int iotlb_parse(struct kern_backend *k, const uint8_t *buf, size_t n, struct uvh_iotlb *msg)
{
	struct vhost_iotlb_msg io;
	uint32_t type, asid;

	if (n != sizeof(struct vhost_msg)) {
		UVH_ERR("%s: IOTLB message of %zu bytes from the kernel", k->b.name, n);
		return -EPROTO;
	}
	memcpy(&type, buf, sizeof(type));
	memcpy(&asid, buf + sizeof(type), sizeof(asid));
	/* v1's int type is followed by 4 bytes of padding, v2's by the asid. */
	if ((type != VHOST_IOTLB_MSG && type != VHOST_IOTLB_MSG_V2) ||
	    (type == VHOST_IOTLB_MSG_V2 && asid != 0)) {
		UVH_ERR("%s: IOTLB message type %u asid %u from the kernel", k->b.name, type, asid);
		return -EPROTO;
	}
	memcpy(&io, buf + offsetof(struct vhost_msg_v2, iotlb), sizeof(io));
	if ((io.type != VHOST_IOTLB_MISS && io.type != VHOST_IOTLB_ACCESS_FAIL) ||
	    !perm_ok(io.perm)) {
		UVH_ERR("%s: IOTLB message iotlb.type %u perm %u from the kernel", k->b.name,
			io.type, io.perm);
		return -EPROTO;
	}
	memset(msg, 0, sizeof(*msg));
	msg->iova = io.iova;
	msg->size = io.size;
	msg->uaddr = io.uaddr;
	msg->perm = io.perm;
	msg->type = io.type == VHOST_IOTLB_MISS ? UVH_IOTLB_MISS : UVH_IOTLB_ACCESS_FAIL;
	return 0;
}

static int kern_iotlb_miss(struct uvh_vhost *b, struct uvh_iotlb *msg, int timeout_ms)
{
	struct kern_backend *k = to_kern(b);
	int64_t deadline = timeout_ms >= 0 ? uvh__now_ms() + timeout_ms : -1;
	uint8_t buf[sizeof(struct vhost_msg) + 8];
	ssize_t n;

	if (!msg)
		return -EINVAL;
	for (;;) {
		struct pollfd p = { .fd = k->b.fd, .events = POLLIN };
		int wait = -1, r;

		if (deadline >= 0) {
			int64_t left = deadline - uvh__now_ms();

			wait = left > 0 ? (left > INT_MAX ? INT_MAX : (int)left) : 0;
		}
		r = poll(&p, 1, wait);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ETIMEDOUT;
		if (p.revents & POLLNVAL)
			return -EBADF;
		if (!(p.revents & POLLIN))
			return -EIO;
		/* One message per read; a larger buffer shows a peer that
		 * is not the kernel's vhost (a wrong size is refused). */
		n = read(k->b.fd, buf, sizeof(buf));
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return -errno;
		return iotlb_parse(k, buf, (size_t)n, msg);
	}
}

/* ---- the rest ------------------------------------------------------------ */

static int kern_get_queue_num(struct uvh_vhost *b, uint64_t *num)
{
	(void)b;
	if (!num)
		return -EINVAL;
	*num = 1;	/* one queue pair per vhost fd */
	return 0;
}

static void kern_close(struct uvh_vhost *b)
{
	struct kern_backend *k = to_kern(b);

	if (k->b.fd >= 0)
		close(k->b.fd);
	free(k->regions);
	free(k);
}

static const struct uvh_vhost_ops kern_ops = {
	.get_features = kern_get_features,
	.set_features = kern_set_features,
	.set_owner = kern_set_owner,
	.reset_owner = kern_reset_owner,
	.get_backend_features = kern_get_backend_features,
	.set_backend_features = kern_set_backend_features,
	.set_mem_table = kern_set_mem_table,
	.add_mem_region = kern_add_mem_region,
	.remove_mem_region = kern_remove_mem_region,
	.get_max_mem_slots = kern_get_max_mem_slots,
	.set_log_base = kern_set_log_base,
	.set_log_fd = kern_set_log_fd,
	.set_vring_num = kern_set_vring_num,
	.get_vring_num_max = uvh__get_vring_num_max,
	.set_vring_addr = kern_set_vring_addr,
	.set_vring_base = kern_set_vring_base,
	.get_vring_base = kern_get_vring_base,
	.set_vring_kick = kern_set_vring_kick,
	.set_vring_call = kern_set_vring_call,
	.set_vring_err = kern_set_vring_err,
	.set_vring_busyloop_timeout = kern_set_vring_busyloop_timeout,
	.iotlb_msg = kern_iotlb_msg,
	.iotlb_miss = kern_iotlb_miss,
	.get_queue_num = kern_get_queue_num,
	.net_set_backend = kern_net_set_backend,
	.close = kern_close,
};

int uvh_vhost_kern_open(const char *path, const struct uvh_vhost_open_opts *opts,
			  struct uvh_vhost **out)
{
	/* Flags that only change how the fd behaves; O_CREAT, O_TRUNC and
	 * access modes have no business on a device node. */
	const int allowed = O_NONBLOCK | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW;
	int flags = opts ? opts->open_flags : 0;
	struct kern_backend *k;
	struct stat st;
	int fd, r;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!path || !*path || (flags & ~allowed))
		return -EINVAL;
	k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	/* O_NOCTTY: a mistyped path naming a tty must not become ours. */
	fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY | flags);
	if (fd < 0) {
		r = -errno;
		UVH_ERR("kern:%s: open: %s", path, strerror(-r));
		free(k);
		return r;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		close(fd);
		free(k);
		return r;
	}
	if (!S_ISCHR(st.st_mode)) {
		UVH_ERR("kern:%s: not a character device, so not a vhost device", path);
		close(fd);
		free(k);
		return -ENOTTY;
	}
	k->b.ops = &kern_ops;
	k->b.type = UVH_VHOST_KERN;
	k->b.fd = fd;
	snprintf(k->b.name, sizeof(k->b.name), "kern:%s", path);
	k->max_regions = read_max_mem_regions();
	*out = &k->b;
	return 0;
}

/* ---- kern.h ------------------------------------------------------------- */

static struct kern_backend *kern_of(struct uvh_vhost *b)
{
	return b && b->ops == &kern_ops ? to_kern(b) : NULL;
}

/* Ioctls a kernel may not have: ENOTTY is "not here", not a failure. */
static int kern_optional(struct kern_backend *k, unsigned long req, void *arg, const char *what)
{
	int r = kern_ioctl(k, req, arg, what, true);

	if (r == -ENOTTY)
		return -EOPNOTSUPP;
	if (r)
		UVH_ERR("%s: %s: %s", k->b.name, what, strerror(-r));
	return r;
}

int uvh_vhost_kern_new_worker(struct uvh_vhost *b, uint32_t *id)
{
	struct kern_backend *k = kern_of(b);
	struct vhost_worker_state w = { 0 };
	int r;

	if (!b || !id)
		return -EINVAL;
	if (!k)
		return -EOPNOTSUPP;
	r = kern_optional(k, VHOST_NEW_WORKER, &w, "VHOST_NEW_WORKER");
	if (!r)
		*id = w.worker_id;
	return r;
}

int uvh_vhost_kern_free_worker(struct uvh_vhost *b, uint32_t id)
{
	struct kern_backend *k = kern_of(b);
	struct vhost_worker_state w = { .worker_id = id };

	if (!b)
		return -EINVAL;
	if (!k)
		return -EOPNOTSUPP;
	return kern_optional(k, VHOST_FREE_WORKER, &w, "VHOST_FREE_WORKER");
}

int uvh_vhost_kern_attach_worker(struct uvh_vhost *b, uint32_t index, uint32_t id)
{
	struct kern_backend *k = kern_of(b);
	struct vhost_vring_worker w = { .index = index, .worker_id = id };

	if (!b || !ring_ok(index))
		return -EINVAL;
	if (!k)
		return -EOPNOTSUPP;
	return kern_optional(k, VHOST_ATTACH_VRING_WORKER, &w, "VHOST_ATTACH_VRING_WORKER");
}

int uvh_vhost_kern_get_worker(struct uvh_vhost *b, uint32_t index, uint32_t *id)
{
	struct kern_backend *k = kern_of(b);
	struct vhost_vring_worker w = { .index = index };
	int r;

	if (!b || !id || !ring_ok(index))
		return -EINVAL;
	if (!k)
		return -EOPNOTSUPP;
	r = kern_optional(k, VHOST_GET_VRING_WORKER, &w, "VHOST_GET_VRING_WORKER");
	if (!r)
		*id = w.worker_id;
	return r;
}

int uvh_vhost_kern_vsock_set_guest_cid(struct uvh_vhost *b, uint64_t cid)
{
	struct kern_backend *k = kern_of(b);

	/* 0 hypervisor, 1 local, 2 host; -1 (U32_MAX) is VMADDR_CID_ANY. */
	if (!b || cid < 3 || cid >= UINT32_MAX)
		return -EINVAL;
	if (!k)
		return -EOPNOTSUPP;
	return kern_optional(k, VHOST_VSOCK_SET_GUEST_CID, &cid, "VHOST_VSOCK_SET_GUEST_CID");
}

int uvh_vhost_kern_vsock_set_running(struct uvh_vhost *b, bool running)
{
	struct kern_backend *k = kern_of(b);
	int start = running ? 1 : 0;

	if (!b)
		return -EINVAL;
	if (!k)
		return -EOPNOTSUPP;
	return kern_optional(k, VHOST_VSOCK_SET_RUNNING, &start, "VHOST_VSOCK_SET_RUNNING");
}
