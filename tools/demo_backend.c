/* SPDX-License-Identifier: MIT */
/*
 * uvhost-demo's back-end (--serve): a vhost-user "net test device".
 *
 * It does not move packets: it maps the guest memory (engine/memory.h),
 * checks that every vring lies inside it, keeps the kick/call fds and
 * reports what the front-end did, one line per request.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend_chan.h"
#include "backend_req.h"
#include "demo.h"
#include "endpoint.h"
#include "listener.h"
#include "log.h"
#include "memory.h"
#include "message.h"

static const uint8_t demo_mac[6] = { 0x02, 0x75, 0x76, 0x68, 0x00, 0x01 };

struct demo_vring {
	uint32_t num;
	uint32_t base;
	bool have_addr;
	struct uvh_vring_addr addr;
	void *desc, *avail, *used;	/* our view; NULL until translated */
	int kick_fd, call_fd, err_fd;
	bool started, enabled, ever_started;
	uint64_t kicks;
};

struct demo_dev {
	uint32_t pairs;
	uint32_t nvrings;
	bool ctrl_vq;
	uint64_t offered, acked;
	uint64_t pf_offered, pf_acked;
	uint8_t status;
	bool offer_shown;
	struct uvh_memory *mem;		/* guest memory in force; NULL before any */
	struct demo_vring vrings[DEMO_MAX_VRINGS];
	uint8_t config[UVH_CONFIG_MAX_SIZE];
	struct uvh_backend_chan *chan;
	unsigned int failures;		/* handler failures this connection */
	unsigned int mem_updates;
	struct uvh_msg msg;		/* receive buffer (4 KiB payload) */
};

static int dev_fail(struct demo_dev *d, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int dev_fail(struct demo_dev *d, int err, const char *fmt, ...)
{
	va_list ap;

	d->failures++;
	printf("%s: refused: ", role);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf(" (%s)\n", strerror(-err));
	return err;
}

static bool dev_packed(const struct demo_dev *d)
{
	return d->acked & BIT(UVH_VIRTIO_F_RING_PACKED);
}

/* Our address of the front-end's [uva, uva + len), when wholly inside one
 * mapped region. */
static void *uva_to_ptr(const struct demo_dev *d, uint64_t uva, uint64_t len)
{
	return d->mem ? uvh_memory_uva_to_hva(d->mem, uva, len) : NULL;
}

/* Translate the three parts of vring @i; the sizes follow the ring format
 * (virtio 1.x 2.7 and 2.8). Returns 0 or -EINVAL naming the bad part. */
static int vring_translate(struct demo_dev *d, uint32_t i, bool quiet)
{
	struct demo_vring *vr = &d->vrings[i];
	uint64_t n = vr->num, dsz, asz, usz;
	unsigned int aalign, ualign;
	void *desc, *avail, *used;
	const char *what = NULL;

	vr->desc = vr->avail = vr->used = NULL;
	if (!vr->have_addr)
		return -EINVAL;
	if (n == 0) {
		if (!quiet)
			printf("%s:   vring %u: SET_VRING_NUM missing\n", role, i);
		return -EINVAL;
	}
	if (dev_packed(d)) {
		dsz = 16 * n;
		asz = usz = 4;		/* driver / device event suppression */
		aalign = ualign = 4;
	} else {
		uint64_t ev = d->acked & BIT(UVH_VIRTIO_F_RING_EVENT_IDX) ? 2 : 0;

		dsz = 16 * n;
		asz = 4 + 2 * n + ev;
		usz = 4 + 8 * n + ev;
		aalign = 2;
		ualign = 4;
	}
	desc = uva_to_ptr(d, vr->addr.desc_user_addr, dsz);
	avail = uva_to_ptr(d, vr->addr.avail_user_addr, asz);
	used = uva_to_ptr(d, vr->addr.used_user_addr, usz);
	if (vr->addr.desc_user_addr % 16)
		what = "descriptor table is not 16-byte aligned";
	else if (vr->addr.avail_user_addr % aalign)
		what = "driver area is misaligned";
	else if (vr->addr.used_user_addr % ualign)
		what = "device area is misaligned";
	else if (!desc)
		what = "descriptor table lies outside the memory table";
	else if (!avail)
		what = "driver area lies outside the memory table";
	else if (!used)
		what = "device area lies outside the memory table";
	if (what) {
		if (!quiet)
			printf("%s:   vring %u: %s (desc 0x%" PRIx64 " avail 0x%"
			       PRIx64 " used 0x%" PRIx64 ", num %u)\n", role, i, what,
			       vr->addr.desc_user_addr, vr->addr.avail_user_addr,
			       vr->addr.used_user_addr, vr->num);
		return -EINVAL;
	}
	vr->desc = desc;
	vr->avail = avail;
	vr->used = used;
	return 0;
}

/* After the memory changed: rings that no longer translate lose their
 * pointers (they are not touched until they translate again). */
static void vrings_retranslate(struct demo_dev *d)
{
	for (uint32_t i = 0; i < d->nvrings; i++) {
		if (!d->vrings[i].have_addr)
			continue;
		if (vring_translate(d, i, true) < 0 && d->vrings[i].started)
			printf("%s:   vring %u: rings no longer inside guest memory\n",
			       role, i);
	}
}

/* ---- guest memory (engine/memory.h) ---------------------------------------- */

/* Say why a region was refused, in terms the front-end's author can act on. */
static int region_fail(struct demo_dev *d, const struct uvh_mem_region *r, int err)
{
	switch (err) {
	case -ENXIO:	/* SIGBUS waiting to happen */
		return dev_fail(d, err, "region gpa 0x%" PRIx64 ": region fd is not a file of at"
				" least 0x%" PRIx64 " bytes", r->guest_phys_addr,
				r->mmap_offset + r->memory_size);
	case -EEXIST:
		return dev_fail(d, err, "region gpa 0x%" PRIx64 " size 0x%" PRIx64 " uva 0x%"
				PRIx64 " overlaps another", r->guest_phys_addr, r->memory_size,
				r->userspace_addr);
	case -ENOSPC:
		return dev_fail(d, err, "all %u memory slots are in use", UVH_MAX_MEM_SLOTS);
	case -EINVAL:
		return dev_fail(d, err, "region gpa 0x%" PRIx64 " size 0x%" PRIx64
				" is empty or its fd is not a regular file",
				r->guest_phys_addr, r->memory_size);
	case -EOVERFLOW:
		return dev_fail(d, err, "region gpa 0x%" PRIx64 " size 0x%" PRIx64 " uva 0x%"
				PRIx64 " offset 0x%" PRIx64 " wraps", r->guest_phys_addr,
				r->memory_size, r->userspace_addr, r->mmap_offset);
	default:
		return dev_fail(d, err, "mapping region gpa 0x%" PRIx64 " size 0x%" PRIx64,
				r->guest_phys_addr, r->memory_size);
	}
}

/* A region of the table in force, as the front-end described it. */
static void region_print(const struct demo_dev *d, const struct uvh_mem_region *r)
{
	const struct uvh_memory_region *m = uvh_memory_find_gpa(d->mem, r->guest_phys_addr);

	printf("%s:   region %u: gpa 0x%" PRIx64 " size 0x%" PRIx64 " uva 0x%"
	       PRIx64 " mmap_offset 0x%" PRIx64 " -> mapped at %p\n", role,
	       (unsigned int)(m - d->mem->regions), r->guest_phys_addr, r->memory_size,
	       r->userspace_addr, r->mmap_offset, (void *)m->hva);
}

/* A copy of the table in force to edit (an empty table before the first). */
static struct uvh_memory *mem_edit(const struct demo_dev *d)
{
	return d->mem ? uvh_memory_copy(d->mem) : uvh_memory_new(0);
}

/*
 * Put @mem in force; mappings of the old table that @mem does not share
 * go. No other thread reads guest memory here, so the old table can go at
 * once; a back-end with engines publishes @mem to them first (memory.h).
 */
static void mem_commit(struct demo_dev *d, struct uvh_memory *mem)
{
	uvh_memory_release(d->mem, mem);
	d->mem = mem;
}

/* Forget everything of a connection (the device itself stays). */
static void dev_reset(struct demo_dev *d)
{
	uvh_memory_release(d->mem, NULL);
	d->mem = NULL;
	for (uint32_t i = 0; i < DEMO_MAX_VRINGS; i++) {
		struct demo_vring *vr = &d->vrings[i];

		close_fd(&vr->kick_fd);
		close_fd(&vr->call_fd);
		close_fd(&vr->err_fd);
		memset(vr, 0, sizeof(*vr));
		vr->kick_fd = vr->call_fd = vr->err_fd = -1;
	}
	uvh_backend_chan_free(d->chan);
	d->chan = NULL;
	d->acked = 0;
	d->pf_acked = 0;
	d->status = 0;
	d->offer_shown = false;
	d->failures = 0;
	d->mem_updates = 0;
}

static void dev_init(struct demo_dev *d, uint32_t pairs, bool ctrl_vq)
{
	struct demo_net_config cfg = { 0 };

	memset(d, 0, sizeof(*d));
	for (uint32_t i = 0; i < DEMO_MAX_VRINGS; i++)
		d->vrings[i].kick_fd = d->vrings[i].call_fd = d->vrings[i].err_fd = -1;
	d->pairs = pairs;
	d->ctrl_vq = ctrl_vq;
	d->nvrings = 2 * pairs + (ctrl_vq ? 1 : 0);
	d->offered = BIT(UVH_VIRTIO_F_VERSION_1) | BIT(VNET_F_MAC) |
		     BIT(VNET_F_MTU) | BIT(VNET_F_MRG_RXBUF) | BIT(VNET_F_STATUS) |
		     BIT(UVH_F_PROTOCOL_FEATURES) | BIT(UVH_VIRTIO_F_RING_EVENT_IDX) |
		     BIT(UVH_VIRTIO_F_RING_INDIRECT_DESC) |
		     BIT(UVH_VIRTIO_F_RING_PACKED) | BIT(UVH_VIRTIO_F_IN_ORDER);
	if (ctrl_vq)
		d->offered |= BIT(VNET_F_CTRL_VQ);
	if (ctrl_vq && pairs > 1)
		d->offered |= BIT(VNET_F_MQ);
	d->pf_offered = BIT(UVH_PROTOCOL_F_MQ) | BIT(UVH_PROTOCOL_F_REPLY_ACK) |
			BIT(UVH_PROTOCOL_F_CONFIG) | BIT(UVH_PROTOCOL_F_STATUS) |
			BIT(UVH_PROTOCOL_F_CONFIGURE_MEM_SLOTS) |
			BIT(UVH_PROTOCOL_F_BACKEND_REQ);
	memcpy(cfg.mac, demo_mac, sizeof(cfg.mac));
	cfg.status = htole16(VNET_S_LINK_UP);
	cfg.max_virtqueue_pairs = htole16((uint16_t)pairs);
	cfg.mtu = htole16(DEMO_MTU);
	cfg.speed = htole32(UINT32_MAX);	/* unknown */
	cfg.duplex = 0xff;			/* unknown */
	memcpy(d->config, &cfg, sizeof(cfg));
}

/* ---- uvh_backend_handler_ops ---------------------------------------------- */

static int be_set_owner(void *dev)
{
	(void)dev;
	return 0;
}

static int be_get_features(void *dev, uint64_t *features)
{
	struct demo_dev *d = dev;
	char buf[512];

	*features = d->offered;
	/* The request handler also asks when it checks SET_FEATURES. */
	if (!d->offer_shown)
		printf("%s:   offering features %s\n", role,
		       bits_str(buf, sizeof(buf), d->offered, feature_name));
	d->offer_shown = true;
	return 0;
}

static int be_set_features(void *dev, uint64_t features)
{
	struct demo_dev *d = dev;
	char buf[512];

	if (features & ~d->offered)
		return dev_fail(d, -EINVAL, "features 0x%" PRIx64 " were not offered",
				features & ~d->offered);
	d->acked = features;
	printf("%s:   features acked %s\n", role,
	       bits_str(buf, sizeof(buf), features, feature_name));
	/* Without PROTOCOL_FEATURES rings are enabled as soon as they start. */
	if (!(features & BIT(UVH_F_PROTOCOL_FEATURES)))
		for (uint32_t i = 0; i < d->nvrings; i++)
			d->vrings[i].enabled = true;
	return 0;
}

static int be_get_protocol_features(void *dev, uint64_t *pf)
{
	struct demo_dev *d = dev;

	*pf = d->pf_offered;
	return 0;
}

static int be_set_protocol_features(void *dev, uint64_t pf)
{
	struct demo_dev *d = dev;
	char buf[512];

	d->pf_acked = pf;
	printf("%s:   protocol features acked %s\n", role,
	       bits_str(buf, sizeof(buf), pf, uvh_protocol_feature_name));
	return 0;
}

static int be_set_mem_table(void *dev, const struct uvh_mem_region *regions,
			    const int *fds, unsigned int n)
{
	struct demo_dev *d = dev;
	struct uvh_memory *mem = NULL;
	unsigned int i;
	int err;

	if (n > UVH_MEMORY_MAX_NREGIONS)
		err = dev_fail(d, -EINVAL, "%u regions", n);
	else if (!(mem = uvh_memory_new(0)))
		err = dev_fail(d, -ENOMEM, "memory table");
	else
		err = 0;
	/* Build the new table aside: on failure the old one stays in force. */
	for (i = 0; i < n; i++) {
		if (err) {
			close(fds[i]);
			continue;
		}
		err = uvh_memory_add_fd(mem, &regions[i], fds[i]);	/* fd consumed */
		if (err)
			region_fail(d, &regions[i], err);
	}
	if (err) {
		uvh_memory_release(mem, NULL);
		return err;
	}
	mem_commit(d, mem);
	for (i = 0; i < n; i++)
		region_print(d, &regions[i]);
	d->mem_updates++;
	vrings_retranslate(d);
	return 0;
}

static int be_set_vring_num(void *dev, uint32_t index, uint32_t num)
{
	struct demo_dev *d = dev;

	if (index >= d->nvrings)
		return dev_fail(d, -EINVAL, "vring %u does not exist", index);
	if (num == 0 || num > 32768 || (!dev_packed(d) && (num & (num - 1))))
		return dev_fail(d, -EINVAL, "vring %u: size %u", index, num);
	d->vrings[index].num = num;
	return 0;
}

static int be_set_vring_addr(void *dev, const struct uvh_vring_addr *addr)
{
	struct demo_dev *d = dev;
	struct demo_vring *vr;
	bool have_mem = d->mem && d->mem->nregions;

	if (addr->index >= d->nvrings)
		return dev_fail(d, -EINVAL, "vring %u does not exist", addr->index);
	/* Dirty logging is not offered (no LOG_ALL), so no flag is valid. */
	if (addr->flags)
		return dev_fail(d, -EINVAL, "vring %u: flags 0x%x", addr->index,
				addr->flags);
	vr = &d->vrings[addr->index];
	vr->addr = *addr;
	vr->have_addr = true;
	/* QEMU and DPDK send the memory table first; tolerate the other order
	 * and check again when the ring starts. */
	if (!have_mem) {
		printf("%s:   vring %u: addresses kept, no memory table yet\n", role,
		       addr->index);
		return 0;
	}
	if (vring_translate(d, addr->index, false) < 0) {
		vr->have_addr = false;
		return dev_fail(d, -EINVAL, "vring %u: addresses", addr->index);
	}
	printf("%s:   vring %u: desc 0x%" PRIx64 " avail 0x%" PRIx64 " used 0x%" PRIx64
	       " inside guest memory\n", role, addr->index, addr->desc_user_addr,
	       addr->avail_user_addr, addr->used_user_addr);
	return 0;
}

static int be_set_vring_base(void *dev, uint32_t index, uint32_t base)
{
	struct demo_dev *d = dev;

	if (index >= d->nvrings)
		return dev_fail(d, -EINVAL, "vring %u does not exist", index);
	/* Split rings: bits 16-31 are reserved. */
	if (!dev_packed(d) && base > 0xffff)
		return dev_fail(d, -EINVAL, "vring %u: split ring base 0x%x", index, base);
	d->vrings[index].base = base;
	return 0;
}

/* Count the kicks waiting on vring @i's eventfd without blocking. */
static void drain_kick(struct demo_dev *d, uint32_t i)
{
	struct demo_vring *vr = &d->vrings[i];
	struct pollfd pfd = { .fd = vr->kick_fd, .events = POLLIN };
	uint64_t v;

	if (vr->kick_fd < 0 || poll(&pfd, 1, 0) != 1 || !(pfd.revents & POLLIN) ||
	    read(vr->kick_fd, &v, sizeof(v)) != (ssize_t)sizeof(v))
		return;
	if (vr->kicks == 0)
		printf("%s: kick: vring %u (first kick received)\n", role, i);
	vr->kicks += v;
}

static int be_get_vring_base(void *dev, uint32_t index, uint32_t *base)
{
	struct demo_dev *d = dev;
	struct demo_vring *vr;

	if (index >= d->nvrings)
		return dev_fail(d, -EINVAL, "vring %u does not exist", index);
	vr = &d->vrings[index];
	/* Nothing was consumed, so the next index is the one we were given. */
	*base = vr->base;
	vr->started = false;
	drain_kick(d, index);	/* kicks sent before the stop still count */
	close_fd(&vr->kick_fd);
	printf("%s:   stopped: vring %u (base 0x%x, kicks %" PRIu64 ")\n", role, index,
	       vr->base, vr->kicks);
	return 0;
}

static const char *fd_str(char *buf, size_t len, int fd)
{
	if (fd < 0)
		snprintf(buf, len, "none");
	else
		snprintf(buf, len, "%d", fd);
	return buf;
}

static int be_set_vring_kick(void *dev, uint32_t index, int fd)
{
	struct demo_dev *d = dev;
	struct demo_vring *vr;
	char kb[16], cb[16];

	if (index >= d->nvrings) {
		if (fd >= 0)
			close(fd);
		return dev_fail(d, -EINVAL, "vring %u does not exist", index);
	}
	vr = &d->vrings[index];
	/* The ring starts now (the spec's current rule): it must be usable. */
	if (vring_translate(d, index, false) < 0) {
		if (fd >= 0)
			close(fd);
		return dev_fail(d, -EINVAL, "vring %u cannot start: %s", index,
				vr->have_addr ? "addresses outside guest memory"
					      : "no SET_VRING_ADDR");
	}
	close_fd(&vr->kick_fd);
	vr->kick_fd = fd;
	vr->started = true;
	vr->ever_started = true;
	if (!(d->acked & BIT(UVH_F_PROTOCOL_FEATURES)))
		vr->enabled = true;
	printf("%s: ready: vring %u started (%s ring, num %u, base 0x%x, kick fd %s,"
	       " call fd %s, %s)\n", role, index, dev_packed(d) ? "packed" : "split",
	       vr->num, vr->base, fd_str(kb, sizeof(kb), fd),
	       fd_str(cb, sizeof(cb), vr->call_fd),
	       vr->enabled ? "enabled" : "disabled");
	return 0;
}

static int be_set_vring_call(void *dev, uint32_t index, int fd)
{
	struct demo_dev *d = dev;

	if (index >= d->nvrings) {
		if (fd >= 0)
			close(fd);
		return dev_fail(d, -EINVAL, "vring %u does not exist", index);
	}
	close_fd(&d->vrings[index].call_fd);
	d->vrings[index].call_fd = fd;
	return 0;
}

static int be_set_vring_err(void *dev, uint32_t index, int fd)
{
	struct demo_dev *d = dev;

	if (index >= d->nvrings) {
		if (fd >= 0)
			close(fd);
		return dev_fail(d, -EINVAL, "vring %u does not exist", index);
	}
	close_fd(&d->vrings[index].err_fd);
	d->vrings[index].err_fd = fd;
	return 0;
}

static int be_get_queue_num(void *dev, uint64_t *num)
{
	struct demo_dev *d = dev;

	/* vhost-user-net counts queue pairs here (QEMU and DPDK do). */
	*num = d->pairs;
	return 0;
}

static int be_set_vring_enable(void *dev, uint32_t index, bool enable)
{
	struct demo_dev *d = dev;

	if (index >= d->nvrings)
		return dev_fail(d, -EINVAL, "vring %u does not exist", index);
	d->vrings[index].enabled = enable;
	printf("%s:   vring %u %s\n", role, index, enable ? "enabled" : "disabled");
	return 0;
}

static int be_set_backend_req_fd(void *dev, int fd)
{
	struct demo_dev *d = dev;
	struct uvh_backend_chan *chan;

	chan = uvh_backend_chan_new(fd, d->pf_acked);
	if (!chan)
		return dev_fail(d, -errno, "back-end channel");
	uvh_backend_chan_free(d->chan);
	d->chan = chan;
	printf("%s:   back-end channel open\n", role);
	return 0;
}

static int be_get_config(void *dev, uint32_t offset, uint32_t size, uint32_t flags,
			 uint8_t *buf)
{
	struct demo_dev *d = dev;

	(void)flags;
	if ((uint64_t)offset + size > sizeof(d->config))
		return dev_fail(d, -EINVAL, "config offset %u size %u", offset, size);
	/* Past virtio_net_config the space reads as zeros. */
	memcpy(buf, d->config + offset, size);
	return 0;
}

static int be_set_config(void *dev, uint32_t offset, uint32_t size, uint32_t flags,
			 const uint8_t *buf)
{
	struct demo_dev *d = dev;

	(void)flags;
	/* Only the MAC is writable (as on most net devices). */
	if (offset != offsetof(struct demo_net_config, mac) || size != 6)
		return dev_fail(d, -EPERM, "config write at %u size %u", offset, size);
	memcpy(d->config, buf, 6);
	printf("%s:   MAC set to %02x:%02x:%02x:%02x:%02x:%02x\n", role, buf[0],
	       buf[1], buf[2], buf[3], buf[4], buf[5]);
	return 0;
}

static int be_get_max_mem_slots(void *dev, uint64_t *slots)
{
	(void)dev;
	*slots = UVH_MAX_MEM_SLOTS;	/* what engine/memory holds */
	return 0;
}

static int be_add_mem_reg(void *dev, const struct uvh_mem_region *region, int fd)
{
	struct demo_dev *d = dev;
	struct uvh_memory *mem = mem_edit(d);
	int err;

	if (!mem) {
		close(fd);
		return dev_fail(d, -ENOMEM, "memory table");
	}
	err = uvh_memory_add_fd(mem, region, fd);	/* fd consumed */
	if (err) {
		uvh_memory_release(mem, d->mem);	/* the old table keeps its mappings */
		return region_fail(d, region, err);
	}
	mem_commit(d, mem);
	region_print(d, region);
	d->mem_updates++;
	vrings_retranslate(d);
	return 0;
}

static int be_rem_mem_reg(void *dev, const struct uvh_mem_region *region)
{
	struct demo_dev *d = dev;
	const struct uvh_memory_region *m;
	struct uvh_memory *mem;

	m = d->mem ? uvh_memory_find_gpa(d->mem, region->guest_phys_addr) : NULL;
	if (!m)
		goto none;
	mem = uvh_memory_copy(d->mem);
	if (!mem)
		return dev_fail(d, -ENOMEM, "memory table");
	if (uvh_memory_remove(mem, region) < 0) {
		uvh_memory_release(mem, d->mem);
		goto none;
	}
	printf("%s:   region %u removed\n", role, (unsigned int)(m - d->mem->regions));
	mem_commit(d, mem);
	d->mem_updates++;
	vrings_retranslate(d);
	return 0;
none:
	return dev_fail(d, -ENOENT, "no region at gpa 0x%" PRIx64 " size 0x%" PRIx64,
			region->guest_phys_addr, region->memory_size);
}

static int be_set_status(void *dev, uint8_t status)
{
	struct demo_dev *d = dev;
	char buf[128];

	d->status = status;
	printf("%s:   status %s\n", role, status_str(buf, sizeof(buf), status));
	return 0;
}

static int be_get_status(void *dev, uint8_t *status)
{
	struct demo_dev *d = dev;

	*status = d->status;
	return 0;
}

static const struct uvh_backend_handler_ops demo_ops = {
	.set_owner = be_set_owner,
	.get_features = be_get_features,
	.set_features = be_set_features,
	.get_protocol_features = be_get_protocol_features,
	.set_protocol_features = be_set_protocol_features,
	.set_mem_table = be_set_mem_table,
	.set_vring_num = be_set_vring_num,
	.set_vring_addr = be_set_vring_addr,
	.set_vring_base = be_set_vring_base,
	.get_vring_base = be_get_vring_base,
	.set_vring_kick = be_set_vring_kick,
	.set_vring_call = be_set_vring_call,
	.set_vring_err = be_set_vring_err,
	.get_queue_num = be_get_queue_num,
	.set_vring_enable = be_set_vring_enable,
	.set_backend_req_fd = be_set_backend_req_fd,
	.get_config = be_get_config,
	.set_config = be_set_config,
	.get_max_mem_slots = be_get_max_mem_slots,
	.add_mem_reg = be_add_mem_reg,
	.rem_mem_reg = be_rem_mem_reg,
	.set_status = be_set_status,
	.get_status = be_get_status,
};

/* ---- the serving loop --------------------------------------------------- */

struct serve_totals {
	unsigned int connections;
	unsigned long requests;
	unsigned int errors;
};

/*
 * Serve one connection until the front-end closes it, a request is
 * refused in a way that ends the connection, or a signal arrives.
 * Returns 0 (peer closed), 1 (signal) or a negative errno.
 */
static int serve_connection(struct demo_dev *d, int cfd, int sfd,
			    struct serve_totals *tot)
{
	struct pollfd pfd[2 + DEMO_MAX_VRINGS];
	uint32_t kick_of[DEMO_MAX_VRINGS];
	unsigned long requests = 0;
	struct uvh_backend_req *req;
	struct uvh_endpoint *ep;
	int ret = 0, flags;

	req = uvh_backend_req_new(cfd, &demo_ops, d, d->nvrings);
	if (!req) {
		ret = -errno;
		say("error: cannot handle the connection: %s", strerror(-ret));
		tot->errors++;
		return ret;
	}
	ep = uvh_backend_req_endpoint(req);
	/* Non-blocking, so that a peer stalling mid-message cannot keep a
	 * signal from being seen. */
	flags = fcntl(ep->fd, F_GETFL);
	if (flags < 0 || fcntl(ep->fd, F_SETFL, flags | O_NONBLOCK) < 0) {
		ret = -errno;
		say("error: fcntl: %s", strerror(errno));
		goto out;
	}
	ep->nonblocking = true;

	for (;;) {
		unsigned int n = 2, nk = 0;

		pfd[0] = (struct pollfd){ .fd = ep->fd, .events = POLLIN };
		pfd[1] = (struct pollfd){ .fd = sfd, .events = POLLIN };
		for (uint32_t i = 0; i < d->nvrings; i++) {
			if (!d->vrings[i].started || d->vrings[i].kick_fd < 0)
				continue;
			kick_of[nk++] = i;
			pfd[n++] = (struct pollfd){ .fd = d->vrings[i].kick_fd,
						    .events = POLLIN };
		}
		if (poll(pfd, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			break;
		}
		if (pfd[1].revents & POLLIN) {
			int sig = signal_fd_read(sfd);

			if (sig) {
				say("%s received, stopping", strsignal(sig));
				ret = 1;
				break;
			}
		}
		for (unsigned int k = 0; k < nk; k++)
			if (pfd[2 + k].revents & POLLIN)
				drain_kick(d, kick_of[k]);
		if (!pfd[0].revents)
			continue;
		/* Every whole message that is in, one line each. */
		for (;;) {
			struct uvh_msg *msg = &d->msg;
			uint32_t request;
			int r;

			r = uvh_endpoint_recv(ep, msg);
			if (r == -EAGAIN)
				break;
			if (r == -ECONNRESET) {
				say("front-end closed the connection");
				goto out;
			}
			if (r < 0) {
				say("error: receive: %s; closing the connection", strerror(-r));
				ret = r;
				goto out;
			}
			request = msg->hdr.request;
			requests++;
			say("request %s (%u bytes%s, %u fd%s)",
			    uvh_frontend_request_name(request), msg->hdr.size,
			    msg->hdr.flags & UVH_FLAG_NEED_REPLY ? ", ack wanted" : "",
			    msg->nfds, msg->nfds == 1 ? "" : "s");
			r = uvh_backend_req_process(req, msg);
			if (r < 0) {
				say("error: %s refused: %s; closing the connection",
				    uvh_frontend_request_name(request), strerror(-r));
				ret = r;
				goto out;
			}
		}
	}
out:
	{
		unsigned int started = 0, regions = 0;
		uint64_t kicks = 0;
		char fb[512], pb[512], sb[128];

		for (uint32_t i = 0; i < d->nvrings; i++) {
			started += d->vrings[i].ever_started;
			kicks += d->vrings[i].kicks;
		}
		regions = d->mem ? d->mem->nregions : 0;
		say("connection summary: %lu requests, %u refused, features %s",
		    requests, d->failures, bits_str(fb, sizeof(fb), d->acked, feature_name));
		say("connection summary: protocol features %s",
		    bits_str(pb, sizeof(pb), d->pf_acked, uvh_protocol_feature_name));
		say("connection summary: vrings started: %u of %u, kicks %" PRIu64
		    ", %u memory update%s, %u region%s mapped at the end, status %s",
		    started, d->nvrings, kicks, d->mem_updates,
		    d->mem_updates == 1 ? "" : "s", regions, regions == 1 ? "" : "s",
		    status_str(sb, sizeof(sb), d->status));
	}
	tot->requests += requests;
	if (ret < 0)
		tot->errors++;
	uvh_backend_req_free(req);
	dev_reset(d);
	return ret;
}

/* Serve connections on @l until a signal (or, with @once, the first
 * connection's end). Returns the exit status. */
static int serve_listener(struct uvh_listener *l, uint32_t pairs, bool ctrl_vq,
			  bool once, int sfd)
{
	struct serve_totals tot = { 0 };
	struct demo_dev *d;
	bool stop = false;
	int status = 0;

	d = malloc(sizeof(*d));
	if (!d) {
		say("error: out of memory");
		return 1;
	}
	dev_init(d, pairs, ctrl_vq);
	say("listening on %s (%u queue pair%s%s)", uvh_listener_path(l), pairs,
	    pairs == 1 ? "" : "s", ctrl_vq ? " + control queue" : "");
	while (!stop) {
		struct pollfd pfd[2] = {
			{ .fd = uvh_listener_fd(l), .events = POLLIN },
			{ .fd = sfd, .events = POLLIN },
		};
		int fd, r;

		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			say("error: poll: %s", strerror(errno));
			status = 1;
			break;
		}
		if (pfd[1].revents & POLLIN) {
			int sig = signal_fd_read(sfd);

			if (sig) {
				say("%s received, stopping", strsignal(sig));
				break;
			}
		}
		if (!(pfd[0].revents & POLLIN))
			continue;
		fd = uvh_listener_accept(l, 0);
		if (fd == -ETIMEDOUT || fd == -EAGAIN || fd == -EINTR)
			continue;
		if (fd < 0) {
			say("error: accept: %s", strerror(-fd));
			status = 1;
			break;
		}
		tot.connections++;
		say("connection %u accepted", tot.connections);
		r = serve_connection(d, fd, sfd, &tot);
		if (r == 1)
			stop = true;
		if (once) {
			stop = true;
			if (r < 0)
				status = 1;
		}
	}
	say("summary: %u connection%s served, %lu requests, %u ended in error",
	    tot.connections, tot.connections == 1 ? "" : "s", tot.requests, tot.errors);
	dev_reset(d);
	free(d);
	return status;
}

int run_serve(const char *path, uint32_t pairs, bool ctrl_vq, bool once)
{
	struct uvh_listener *l;
	int sfd, r, status;

	sfd = signal_fd_open();
	if (sfd < 0) {
		say("error: signalfd: %s", strerror(-sfd));
		return 1;
	}
	r = uvh_listener_open(path, NULL, &l);
	if (r < 0) {
		say("error: cannot listen on %s: %s", path, strerror(-r));
		close(sfd);
		return 1;
	}
	status = serve_listener(l, pairs, ctrl_vq, once, sfd);
	uvh_listener_close(l);
	close(sfd);
	return status;
}
