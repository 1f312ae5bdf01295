/* SPDX-License-Identifier: MIT */
/*
 * uvhost-demo: a vhost-user back-end (a "net test device") and front-end
 * built on the uvhost library, for showing a negotiation over a real
 * socket and for talking to other implementations (DPDK testpmd, QEMU).
 *
 *   uvhost-demo                  fork a back-end on a temporary socket and
 *                                connect to it (the short demo)
 *   uvhost-demo --serve PATH     back-end: listen on PATH and serve
 *                                connections one after the other
 *   uvhost-demo --connect PATH   front-end: negotiate, share guest memory,
 *                                set up the vrings, then tear down
 *
 * The back-end does not move packets: it maps the guest memory, checks
 * that every vring lies inside it, keeps the kick/call fds and reports
 * what the front-end did, one line per request.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backend_chan.h"
#include "backend_req.h"
#include "endpoint.h"
#include "frontend.h"
#include "listener.h"
#include "log.h"
#include "message.h"

/* ---- virtio-net bits the demo speaks of ---------------------------------- */

#define VNET_F_MTU		3
#define VNET_F_MAC		5
#define VNET_F_MRG_RXBUF	15
#define VNET_F_STATUS		16
#define VNET_F_CTRL_VQ		17
#define VNET_F_MQ		22
#define VNET_S_LINK_UP		1

/* Device status bits (virtio 1.x, 2.1). */
#define VSTAT_ACKNOWLEDGE	1
#define VSTAT_DRIVER		2
#define VSTAT_DRIVER_OK		4
#define VSTAT_FEATURES_OK	8
#define VSTAT_NEEDS_RESET	64
#define VSTAT_FAILED		128

#define BIT(n)			(1ull << (n))

/* The head of struct virtio_net_config (virtio 1.x, 5.1.4), little endian. */
struct demo_net_config {
	uint8_t mac[6];
	uint16_t status;
	uint16_t max_virtqueue_pairs;
	uint16_t mtu;
	uint32_t speed;
	uint8_t duplex;
} __attribute__((packed));
_Static_assert(sizeof(struct demo_net_config) == 17, "virtio_net_config head");

#define DEMO_MAX_PAIRS		8u
#define DEMO_MAX_VRINGS		(2 * DEMO_MAX_PAIRS + 1)	/* + control queue */
#define DEMO_MAX_SLOTS		32u
#define DEMO_MTU		1500
#define DEMO_RING_NUM		256u
#define DEMO_REGION_SIZE	(1u << 20)
#define DEMO_REGION1_OFFSET	(64u << 10)	/* exercises mmap_offset */

static const uint8_t demo_mac[6] = { 0x02, 0x75, 0x76, 0x68, 0x00, 0x01 };

/* ---- output --------------------------------------------------------------- */

static const char *role = "uvhost-demo";

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	printf("%s: ", role);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

static void log_sink(enum uvh_log_level level, const char *line, void *opaque)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };

	(void)opaque;
	fflush(stdout);
	fprintf(stderr, "%s: uvhost %s: %s\n", role,
		(unsigned int)level < 4 ? names[level] : "?", line);
}

static const char *feature_name(unsigned int bit)
{
	static const char *const names[64] = {
		[0] = "CSUM", [1] = "GUEST_CSUM", [2] = "CTRL_GUEST_OFFLOADS",
		[3] = "MTU", [5] = "MAC", [6] = "GSO", [7] = "GUEST_TSO4",
		[8] = "GUEST_TSO6", [9] = "GUEST_ECN", [10] = "GUEST_UFO",
		[11] = "HOST_TSO4", [12] = "HOST_TSO6", [13] = "HOST_ECN",
		[14] = "HOST_UFO", [15] = "MRG_RXBUF", [16] = "STATUS",
		[17] = "CTRL_VQ", [18] = "CTRL_RX", [19] = "CTRL_VLAN",
		[20] = "CTRL_RX_EXTRA", [21] = "GUEST_ANNOUNCE", [22] = "MQ",
		[23] = "CTRL_MAC_ADDR", [24] = "NOTIFY_ON_EMPTY",
		[26] = "LOG_ALL", [27] = "ANY_LAYOUT", [28] = "INDIRECT_DESC",
		[29] = "EVENT_IDX", [30] = "PROTOCOL_FEATURES",
		[32] = "VERSION_1", [33] = "ACCESS_PLATFORM",
		[34] = "RING_PACKED", [35] = "IN_ORDER", [36] = "ORDER_PLATFORM",
		[37] = "SR_IOV", [38] = "NOTIFICATION_DATA",
		[40] = "RING_RESET", [57] = "HASH_REPORT", [60] = "RSS",
		[61] = "RSC_EXT", [62] = "STANDBY", [63] = "SPEED_DUPLEX",
	};

	return bit < 64 ? names[bit] : NULL;
}

/* "0x...: NAME NAME bitN" into @buf. */
static const char *bits_str(char *buf, size_t len, uint64_t bits,
			    const char *(*name)(unsigned int))
{
	size_t n = (size_t)snprintf(buf, len, "0x%" PRIx64 ":", bits);

	for (unsigned int b = 0; b < 64 && n < len; b++) {
		const char *s;

		if (!(bits & BIT(b)))
			continue;
		s = name(b);
		if (s)
			n += (size_t)snprintf(buf + n, len - n, " %s", s);
		else
			n += (size_t)snprintf(buf + n, len - n, " bit%u", b);
	}
	if (bits == 0 && n < len)
		snprintf(buf + n, len - n, " (none)");
	return buf;
}

static const char *status_str(char *buf, size_t len, uint8_t s)
{
	snprintf(buf, len, "0x%02x%s%s%s%s%s%s%s", s, s ? "" : " (reset)",
		 s & VSTAT_ACKNOWLEDGE ? " ACKNOWLEDGE" : "",
		 s & VSTAT_DRIVER ? " DRIVER" : "",
		 s & VSTAT_FEATURES_OK ? " FEATURES_OK" : "",
		 s & VSTAT_DRIVER_OK ? " DRIVER_OK" : "",
		 s & VSTAT_NEEDS_RESET ? " DEVICE_NEEDS_RESET" : "",
		 s & VSTAT_FAILED ? " FAILED" : "");
	return buf;
}

/* A signalfd for SIGINT and SIGTERM (both blocked), so that every wait can
 * see them in its poll set. */
static int signal_fd_open(void)
{
	sigset_t set;
	int fd;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -errno;
	fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	return fd < 0 ? -errno : fd;
}

static int signal_fd_read(int sfd)
{
	struct signalfd_siginfo si;

	if (read(sfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
		return 0;
	return (int)si.ssi_signo;
}

/* ======================================================================= */
/* back-end: the net test device                                            */
/* ======================================================================= */

struct demo_region {
	bool used;
	struct uvh_mem_region r;
	uint8_t *map;		/* mapping of the fd from offset 0 */
	size_t map_len;
};

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
	struct demo_region regions[DEMO_MAX_SLOTS];
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

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void region_unmap(struct demo_region *reg)
{
	if (reg->used && reg->map)
		munmap(reg->map, reg->map_len);
	memset(reg, 0, sizeof(*reg));
}

/* Front-end address -> our address, only when [uva, uva + len) lies wholly
 * inside one mapped region. */
static void *uva_to_ptr(const struct demo_dev *d, uint64_t uva, uint64_t len)
{
	for (unsigned int i = 0; i < DEMO_MAX_SLOTS; i++) {
		const struct demo_region *reg = &d->regions[i];
		uint64_t off;

		if (!reg->used || uva < reg->r.userspace_addr)
			continue;
		off = uva - reg->r.userspace_addr;
		if (off >= reg->r.memory_size || len > reg->r.memory_size - off)
			continue;
		return reg->map + reg->r.mmap_offset + off;
	}
	return NULL;
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

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

/* Check @r against the other used regions (the spec: active regions do
 * not overlap, neither in GPA nor in UVA). */
static bool region_overlaps(const struct demo_dev *d, const struct uvh_mem_region *r)
{
	for (unsigned int i = 0; i < DEMO_MAX_SLOTS; i++) {
		const struct uvh_mem_region *o = &d->regions[i].r;

		if (!d->regions[i].used)
			continue;
		if (ranges_overlap(r->guest_phys_addr, r->memory_size,
				   o->guest_phys_addr, o->memory_size) ||
		    ranges_overlap(r->userspace_addr, r->memory_size,
				   o->userspace_addr, o->memory_size))
			return true;
	}
	return false;
}

/* Validate one region and map its fd (which is closed here, mapped or not). */
static int region_map(struct demo_dev *d, const struct uvh_mem_region *r, int fd,
		      struct demo_region *out)
{
	uint64_t end = r->mmap_offset + r->memory_size;
	struct stat st;
	size_t len, align;
	void *p;
	int err;

	memset(out, 0, sizeof(*out));
	if (r->memory_size == 0 ||
	    r->userspace_addr + r->memory_size < r->userspace_addr ||
	    r->guest_phys_addr + r->memory_size < r->guest_phys_addr ||
	    end < r->mmap_offset || end > (uint64_t)SIZE_MAX / 2) {
		err = dev_fail(d, -EINVAL, "region gpa 0x%" PRIx64 " size 0x%" PRIx64
			       " uva 0x%" PRIx64 " offset 0x%" PRIx64 " wraps or is empty",
			       r->guest_phys_addr, r->memory_size, r->userspace_addr,
			       r->mmap_offset);
		goto out;
	}
	if (fstat(fd, &st) < 0) {
		err = dev_fail(d, -errno, "region fd: fstat");
		goto out;
	}
	/* Touching a page past the end of the file would be a SIGBUS. */
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < end) {
		err = dev_fail(d, -EINVAL, "region fd is not a file of at least 0x%"
			       PRIx64 " bytes", end);
		goto out;
	}
	/* hugetlbfs wants whole huge pages; st_blksize is the page size. */
	align = st.st_blksize > 0 && !(st.st_blksize & (st.st_blksize - 1)) &&
		st.st_blksize <= (1 << 30) ? (size_t)st.st_blksize : 4096;
	len = ((size_t)end + align - 1) & ~(align - 1);
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		err = dev_fail(d, -errno, "mmap of region gpa 0x%" PRIx64 " (0x%zx bytes)",
			       r->guest_phys_addr, len);
		goto out;
	}
	out->used = true;
	out->r = *r;
	out->map = p;
	out->map_len = len;
	err = 0;
out:
	close(fd);
	return err;
}

static void region_print(unsigned int slot, const struct demo_region *reg)
{
	printf("%s:   region %u: gpa 0x%" PRIx64 " size 0x%" PRIx64 " uva 0x%"
	       PRIx64 " mmap_offset 0x%" PRIx64 " -> mapped at %p\n", role, slot,
	       reg->r.guest_phys_addr, reg->r.memory_size, reg->r.userspace_addr,
	       reg->r.mmap_offset, (void *)(reg->map + reg->r.mmap_offset));
}

static void dev_unmap_all(struct demo_dev *d)
{
	for (unsigned int i = 0; i < DEMO_MAX_SLOTS; i++)
		region_unmap(&d->regions[i]);
}

/* Forget everything of a connection (the device itself stays). */
static void dev_reset(struct demo_dev *d)
{
	dev_unmap_all(d);
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
	struct demo_region fresh[UVH_MEMORY_MAX_NREGIONS];
	unsigned int i, mapped = 0;
	int err = 0;

	if (n > UVH_MEMORY_MAX_NREGIONS) {
		for (i = 0; i < n; i++)
			close(fds[i]);
		return dev_fail(d, -EINVAL, "%u regions", n);
	}
	/* Map the new table first: on failure the old one stays in force. */
	for (i = 0; i < n; i++) {
		if (err == 0)
			err = region_map(d, &regions[i], fds[i], &fresh[i]);
		else
			close(fds[i]);
		if (err == 0)
			mapped = i + 1;
	}
	for (i = 0; err == 0 && i < n; i++)
		for (unsigned int j = 0; j < i; j++)
			if (ranges_overlap(fresh[i].r.guest_phys_addr, fresh[i].r.memory_size,
					   fresh[j].r.guest_phys_addr, fresh[j].r.memory_size) ||
			    ranges_overlap(fresh[i].r.userspace_addr, fresh[i].r.memory_size,
					   fresh[j].r.userspace_addr, fresh[j].r.memory_size)) {
				err = dev_fail(d, -EINVAL, "regions %u and %u overlap", j, i);
				break;
			}
	if (err) {
		for (i = 0; i < mapped; i++)
			region_unmap(&fresh[i]);
		return err;
	}
	dev_unmap_all(d);
	for (i = 0; i < n; i++) {
		d->regions[i] = fresh[i];
		region_print(i, &d->regions[i]);
	}
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
	bool have_mem = false;

	if (addr->index >= d->nvrings)
		return dev_fail(d, -EINVAL, "vring %u does not exist", addr->index);
	/* Dirty logging is not offered (no LOG_ALL), so no flag is valid. */
	if (addr->flags)
		return dev_fail(d, -EINVAL, "vring %u: flags 0x%x", addr->index,
				addr->flags);
	vr = &d->vrings[addr->index];
	vr->addr = *addr;
	vr->have_addr = true;
	for (unsigned int i = 0; i < DEMO_MAX_SLOTS; i++)
		have_mem |= d->regions[i].used;
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
	*slots = DEMO_MAX_SLOTS;
	return 0;
}

static int be_add_mem_reg(void *dev, const struct uvh_mem_region *region, int fd)
{
	struct demo_dev *d = dev;
	struct demo_region fresh;
	unsigned int slot;
	int err;

	for (slot = 0; slot < DEMO_MAX_SLOTS && d->regions[slot].used; slot++)
		;
	if (slot == DEMO_MAX_SLOTS) {
		close(fd);
		return dev_fail(d, -ENOSPC, "all %u memory slots are in use", DEMO_MAX_SLOTS);
	}
	if (region_overlaps(d, region)) {
		close(fd);
		return dev_fail(d, -EINVAL, "region gpa 0x%" PRIx64 " overlaps another",
				region->guest_phys_addr);
	}
	err = region_map(d, region, fd, &fresh);
	if (err)
		return err;
	d->regions[slot] = fresh;
	region_print(slot, &d->regions[slot]);
	d->mem_updates++;
	vrings_retranslate(d);
	return 0;
}

static int be_rem_mem_reg(void *dev, const struct uvh_mem_region *region)
{
	struct demo_dev *d = dev;

	for (unsigned int i = 0; i < DEMO_MAX_SLOTS; i++) {
		struct demo_region *reg = &d->regions[i];

		if (!reg->used || reg->r.guest_phys_addr != region->guest_phys_addr ||
		    reg->r.memory_size != region->memory_size ||
		    reg->r.userspace_addr != region->userspace_addr)
			continue;
		printf("%s:   region %u removed\n", role, i);
		region_unmap(reg);
		d->mem_updates++;
		vrings_retranslate(d);
		return 0;
	}
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
		for (unsigned int i = 0; i < DEMO_MAX_SLOTS; i++)
			regions += d->regions[i].used;
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

static int run_serve(const char *path, uint32_t pairs, bool ctrl_vq, bool once)
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

/* ======================================================================= */
/* front-end                                                                */
/* ======================================================================= */

struct fe_opts {
	uint32_t pairs;
	int timeout_ms;
	int hold_s;
};

struct fe_vring {
	int kick_fd, call_fd;
	uint64_t desc, avail, used;	/* our (= front-end virtual) addresses */
	unsigned int region;
};

struct fe_state {
	struct uvh_frontend *fe;
	int memfd[2];
	uint8_t *mem[2];
	struct uvh_mem_region region[2];
	struct fe_vring vr[2 * DEMO_MAX_PAIRS];
	uint32_t nvrings;
	unsigned int config_changes;
};

static int fe_config_change(void *opaque)
{
	struct fe_state *s = opaque;

	/* GET_CONFIG would re-enter the front-end: note it and read later. */
	s->config_changes++;
	say("back-end says its config space changed");
	return 0;
}

static const struct uvh_frontend_req_ops fe_chan_ops = {
	.config_change = fe_config_change,
};

static void fe_cleanup(struct fe_state *s)
{
	if (s->fe)
		uvh_frontend_free(s->fe);
	s->fe = NULL;
	for (unsigned int i = 0; i < 2; i++) {
		if (s->mem[i])
			munmap(s->mem[i], DEMO_REGION_SIZE);
		s->mem[i] = NULL;
		close_fd(&s->memfd[i]);
	}
	for (uint32_t i = 0; i < 2 * DEMO_MAX_PAIRS; i++) {
		close_fd(&s->vr[i].kick_fd);
		close_fd(&s->vr[i].call_fd);
	}
}

#define FE_CHECK(call, what)						\
	do {								\
		int r_ = (call);					\
		if (r_ < 0) {						\
			say("error: %s: %s", what, strerror(-r_));	\
			return r_;					\
		}							\
	} while (0)

/* Two memfd regions of guest memory; region 1 starts 64 KiB into its
 * file, so that the back-end has to honour mmap_offset. */
static int fe_make_memory(struct fe_state *s)
{
	static const uint64_t gpa[2] = { 0x0, 0x40000000 };

	for (unsigned int i = 0; i < 2; i++) {
		uint64_t off = i == 1 ? DEMO_REGION1_OFFSET : 0;
		char name[32];
		void *p;

		snprintf(name, sizeof(name), "uvhost-demo-guest%u", i);
		s->memfd[i] = memfd_create(name, MFD_CLOEXEC);
		if (s->memfd[i] < 0)
			return -errno;
		if (ftruncate(s->memfd[i], (off_t)(off + DEMO_REGION_SIZE)) < 0)
			return -errno;
		p = mmap(NULL, DEMO_REGION_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
			 s->memfd[i], (off_t)off);
		if (p == MAP_FAILED)
			return -errno;
		s->mem[i] = p;
		s->region[i] = (struct uvh_mem_region){
			.guest_phys_addr = gpa[i],
			.memory_size = DEMO_REGION_SIZE,
			.userspace_addr = (uint64_t)(uintptr_t)p,
			.mmap_offset = off,
		};
		say("memory: region %u: memfd, gpa 0x%" PRIx64 " size 0x%x uva %p"
		    " mmap_offset 0x%" PRIx64, i, gpa[i], DEMO_REGION_SIZE, p, off);
	}
	return 0;
}

/* Split vring @i: desc, avail and used on their own 4 KiB pages, rings
 * alternating between the two regions. */
static int fe_make_vring(struct fe_state *s, uint32_t i)
{
	struct fe_vring *vr = &s->vr[i];
	unsigned int reg = i % 2;
	uint64_t base = (uint64_t)(uintptr_t)s->mem[reg] + (uint64_t)(i / 2) * 3 * 4096;

	vr->region = reg;
	vr->desc = base;
	vr->avail = base + 4096;
	vr->used = base + 2 * 4096;
	vr->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	vr->call_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vr->kick_fd < 0 || vr->call_fd < 0)
		return -errno;
	return 0;
}

static int fe_setup(struct fe_state *s, const char *path, const struct fe_opts *o)
{
	struct uvh_connect_opts copts = { .timeout_ms = o->timeout_ms };
	uint64_t want, pf_want, feat, pf, offered, pf_offered = 0;
	char buf[512];
	bool status, slots, proto;

	FE_CHECK(uvh_frontend_connect(path, &copts, &s->fe), "connect");
	say("connected to %s", path);

	want = BIT(UVH_VIRTIO_F_VERSION_1) | BIT(VNET_F_MAC) | BIT(VNET_F_MTU) |
	       BIT(VNET_F_STATUS) | BIT(VNET_F_MRG_RXBUF) |
	       BIT(UVH_VIRTIO_F_RING_EVENT_IDX) | BIT(UVH_VIRTIO_F_RING_INDIRECT_DESC) |
	       BIT(UVH_F_PROTOCOL_FEATURES);
	pf_want = BIT(UVH_PROTOCOL_F_MQ) | BIT(UVH_PROTOCOL_F_REPLY_ACK) |
		  BIT(UVH_PROTOCOL_F_CONFIG) | BIT(UVH_PROTOCOL_F_STATUS) |
		  BIT(UVH_PROTOCOL_F_CONFIGURE_MEM_SLOTS) |
		  BIT(UVH_PROTOCOL_F_BACKEND_REQ);
	FE_CHECK(uvh_frontend_negotiate(s->fe, want, pf_want, &feat, &pf), "negotiate");
	/* Asking again is harmless and shows what the back-end had to offer. */
	FE_CHECK(uvh_frontend_get_features(s->fe, &offered), "GET_FEATURES");
	say("back-end offers features %s", bits_str(buf, sizeof(buf), offered, feature_name));
	proto = feat & BIT(UVH_F_PROTOCOL_FEATURES);
	if (proto) {
		FE_CHECK(uvh_frontend_get_protocol_features(s->fe, &pf_offered),
			 "GET_PROTOCOL_FEATURES");
		say("back-end offers protocol features %s",
		    bits_str(buf, sizeof(buf), pf_offered, uvh_protocol_feature_name));
	}
	say("negotiated features %s", bits_str(buf, sizeof(buf), feat, feature_name));
	say("negotiated protocol features %s",
	    bits_str(buf, sizeof(buf), pf, uvh_protocol_feature_name));
	if (!(feat & BIT(UVH_VIRTIO_F_VERSION_1)))
		say("note: the back-end does not offer VERSION_1 (legacy device)");
	status = pf & BIT(UVH_PROTOCOL_F_STATUS);
	slots = pf & BIT(UVH_PROTOCOL_F_CONFIGURE_MEM_SLOTS);

	if (pf & BIT(UVH_PROTOCOL_F_BACKEND_REQ)) {
		FE_CHECK(uvh_frontend_set_backend_req(s->fe, &fe_chan_ops, s),
			 "SET_BACKEND_REQ_FD");
		say("back-end channel open");
	}
	if (status) {
		uint8_t st = VSTAT_ACKNOWLEDGE | VSTAT_DRIVER | VSTAT_FEATURES_OK;

		FE_CHECK(uvh_frontend_set_status(s->fe, st), "SET_STATUS");
		FE_CHECK(uvh_frontend_get_status(s->fe, &st), "GET_STATUS");
		say("device status %s", status_str(buf, sizeof(buf), st));
		if (!(st & VSTAT_FEATURES_OK)) {
			say("error: the back-end did not accept the features");
			return -EPROTO;
		}
	}
	if (pf & BIT(UVH_PROTOCOL_F_MQ)) {
		uint64_t qn;

		FE_CHECK(uvh_frontend_get_queue_num(s->fe, &qn), "GET_QUEUE_NUM");
		say("back-end queues: %" PRIu64, qn);
		/* vhost-user-net counts pairs here (QEMU, DPDK). */
		if (qn < o->pairs) {
			say("error: the back-end has %" PRIu64 " queue pair%s, %u wanted",
			    qn, qn == 1 ? "" : "s", o->pairs);
			return -ERANGE;
		}
	}
	if (pf & BIT(UVH_PROTOCOL_F_CONFIG)) {
		struct demo_net_config c;

		FE_CHECK(uvh_frontend_get_config(s->fe, 0, sizeof(c), 0, (uint8_t *)&c),
			 "GET_CONFIG");
		say("config: mac %02x:%02x:%02x:%02x:%02x:%02x status 0x%x%s"
		    " max_virtqueue_pairs %u mtu %u", c.mac[0], c.mac[1], c.mac[2],
		    c.mac[3], c.mac[4], c.mac[5], le16toh(c.status),
		    le16toh(c.status) & VNET_S_LINK_UP ? " (link up)" : "",
		    le16toh(c.max_virtqueue_pairs), le16toh(c.mtu));
	}

	FE_CHECK(fe_make_memory(s), "guest memory");
	if (slots) {
		uint64_t max;

		FE_CHECK(uvh_frontend_get_max_mem_slots(s->fe, &max), "GET_MAX_MEM_SLOTS");
		say("back-end memory slots: %" PRIu64, max);
		for (unsigned int i = 0; i < 2; i++)
			FE_CHECK(uvh_frontend_add_mem_reg(s->fe, &s->region[i], s->memfd[i]),
				 "ADD_MEM_REG");
		say("memory: 2 regions added (ADD_MEM_REG)");
	} else {
		FE_CHECK(uvh_frontend_set_mem_table(s->fe, s->region, s->memfd, 2),
			 "SET_MEM_TABLE");
		say("memory: table of 2 regions sent (SET_MEM_TABLE)");
	}

	s->nvrings = 2 * o->pairs;
	for (uint32_t i = 0; i < s->nvrings; i++) {
		struct fe_vring *vr = &s->vr[i];
		struct uvh_vring_addr addr;

		FE_CHECK(fe_make_vring(s, i), "eventfd");
		addr = (struct uvh_vring_addr){
			.index = i,
			.desc_user_addr = vr->desc,
			.avail_user_addr = vr->avail,
			.used_user_addr = vr->used,
		};
		/* DPDK's order: the call fd first, the kick fd last. */
		FE_CHECK(uvh_frontend_set_vring_call(s->fe, i, vr->call_fd), "SET_VRING_CALL");
		FE_CHECK(uvh_frontend_set_vring_num(s->fe, i, DEMO_RING_NUM), "SET_VRING_NUM");
		FE_CHECK(uvh_frontend_set_vring_base(s->fe, i, 0), "SET_VRING_BASE");
		FE_CHECK(uvh_frontend_set_vring_addr(s->fe, &addr), "SET_VRING_ADDR");
		FE_CHECK(uvh_frontend_set_vring_kick(s->fe, i, vr->kick_fd), "SET_VRING_KICK");
		say("vring %u: split, num %u, desc 0x%" PRIx64 " avail 0x%" PRIx64
		    " used 0x%" PRIx64 " (region %u), kick and call eventfds", i,
		    DEMO_RING_NUM, vr->desc, vr->avail, vr->used, vr->region);
	}
	for (uint32_t i = 0; proto && i < s->nvrings; i++)
		FE_CHECK(uvh_frontend_set_vring_enable(s->fe, i, true), "SET_VRING_ENABLE");
	say("vrings enabled: %u%s", s->nvrings, proto ? "" : " (enabled by SET_FEATURES)");
	/* The spec asks front-ends to kick once after SET_VRING_KICK. */
	for (uint32_t i = 0; i < s->nvrings; i++) {
		uint64_t one = 1;

		if (write(s->vr[i].kick_fd, &one, sizeof(one)) != (ssize_t)sizeof(one))
			say("warning: kick of vring %u: %s", i, strerror(errno));
	}
	if (status) {
		uint8_t st = VSTAT_ACKNOWLEDGE | VSTAT_DRIVER | VSTAT_FEATURES_OK |
			     VSTAT_DRIVER_OK;

		FE_CHECK(uvh_frontend_set_status(s->fe, st), "SET_STATUS");
		say("status %s", status_str(buf, sizeof(buf), st));
	}
	say("device is set up");
	return 0;
}

/* Keep the device up for @hold_s seconds (or until SIGINT/SIGTERM),
 * serving the back-end channel and noting calls. */
static void fe_hold(struct fe_state *s, int hold_s, int sfd)
{
	struct timespec now, end;

	if (hold_s <= 0)
		return;
	say("holding the device up for %d s", hold_s);
	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_sec += hold_s;
	for (;;) {
		struct pollfd pfd[2 + 2 * DEMO_MAX_PAIRS];
		unsigned int n = 0;
		int chan = uvh_frontend_backend_req_fd(s->fe);
		long ms;

		clock_gettime(CLOCK_MONOTONIC, &now);
		ms = (end.tv_sec - now.tv_sec) * 1000 + (end.tv_nsec - now.tv_nsec) / 1000000;
		if (ms <= 0)
			break;
		pfd[n++] = (struct pollfd){ .fd = sfd, .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = chan, .events = POLLIN };
		for (uint32_t i = 0; i < s->nvrings; i++)
			pfd[n++] = (struct pollfd){ .fd = s->vr[i].call_fd, .events = POLLIN };
		if (poll(pfd, n, (int)ms) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[0].revents & POLLIN) {
			int sig = signal_fd_read(sfd);

			if (sig) {
				say("%s received, tearing down", strsignal(sig));
				break;
			}
		}
		if (chan >= 0 && pfd[1].revents) {
			int r = uvh_frontend_poll_backend(s->fe, 0);

			if (r < 0)
				say("back-end channel closed: %s", strerror(-r));
		}
		for (uint32_t i = 0; i < s->nvrings; i++) {
			uint64_t v;

			if ((pfd[2 + i].revents & POLLIN) &&
			    read(s->vr[i].call_fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
				say("call: vring %u signalled by the back-end", i);
		}
	}
}

static int fe_teardown(struct fe_state *s)
{
	for (uint32_t i = 0; i < s->nvrings; i++) {
		uint32_t base;

		FE_CHECK(uvh_frontend_get_vring_base(s->fe, i, &base), "GET_VRING_BASE");
		say("vring %u stopped, base 0x%x", i, base);
	}
	return 0;
}

static int run_connect(const char *path, const struct fe_opts *o)
{
	struct fe_state s;
	int sfd, r;

	memset(&s, 0, sizeof(s));
	s.memfd[0] = s.memfd[1] = -1;
	for (uint32_t i = 0; i < 2 * DEMO_MAX_PAIRS; i++)
		s.vr[i].kick_fd = s.vr[i].call_fd = -1;
	sfd = signal_fd_open();
	if (sfd < 0) {
		say("error: signalfd: %s", strerror(-sfd));
		return 1;
	}
	r = fe_setup(&s, path, o);
	if (r == 0) {
		fe_hold(&s, o->hold_s, sfd);
		r = fe_teardown(&s);
	}
	fe_cleanup(&s);
	close(sfd);
	if (r < 0) {
		say("failed");
		return 1;
	}
	say("done");
	return 0;
}

/* ======================================================================= */
/* the short demo: both ends over a real socket                             */
/* ======================================================================= */

static int run_demo(uint32_t pairs)
{
	struct fe_opts o = { .pairs = pairs, .timeout_ms = 5000 };
	char dir[] = "/tmp/uvhost-demo.XXXXXX";
	char path[sizeof(dir) + 16];
	int status = 1, wst = 0;
	pid_t pid;

	if (!mkdtemp(dir)) {
		say("error: mkdtemp: %s", strerror(errno));
		return 1;
	}
	snprintf(path, sizeof(path), "%s/vhost.sock", dir);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		say("error: fork: %s", strerror(errno));
		rmdir(dir);
		return 1;
	}
	if (pid == 0) {
		role = "backend";
		fflush(stdout);
		_exit(run_serve(path, pairs, false, true));
	}
	role = "frontend";
	/* The back-end's socket appears when it is ready; connect retries. */
	status = run_connect(path, &o);
	if (status != 0)
		kill(pid, SIGTERM);
	while (waitpid(pid, &wst, 0) < 0) {
		if (errno != EINTR) {
			wst = -1;
			break;
		}
	}
	role = "uvhost-demo";
	if (wst == -1 || !WIFEXITED(wst) || WEXITSTATUS(wst) != 0) {
		say("back-end failed");
		status = 1;
	}
	unlink(path);
	rmdir(dir);
	say(status == 0 ? "front-end and back-end agreed; demo complete"
			: "demo FAILED");
	return status;
}

/* ======================================================================= */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: uvhost-demo [options]                 both ends over a temporary socket\n"
		"       uvhost-demo --serve PATH [options]    back-end: a vhost-user net test device\n"
		"       uvhost-demo --connect PATH [options]  front-end: negotiate and set up vrings\n"
		"\n"
		"options:\n"
		"  -s, --serve PATH     listen on PATH and serve connections one after the other\n"
		"  -c, --connect PATH   connect to the back-end listening on PATH\n"
		"  -q, --queues N       queue pairs (1-%u, default 1)\n"
		"      --ctrl-vq        back-end: also offer a control queue (CTRL_VQ)\n"
		"      --once           back-end: exit when the first connection ends\n"
		"      --hold SECONDS   front-end: keep the device up this long before tearing\n"
		"                       down (SIGINT/SIGTERM end it early)\n"
		"      --timeout MS     front-end: wait this long for the back-end (default 5000)\n"
		"  -v, --verbose        library debug log on stderr\n"
		"  -h, --help           this text\n"
		"\n"
		"Exit status: 0 success, 1 failure, 2 usage error.\n", DEMO_MAX_PAIRS);
}

static bool parse_uint(const char *s, unsigned long min, unsigned long max,
		       unsigned long *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < min || v > max)
		return false;
	*out = v;
	return true;
}

int main(int argc, char **argv)
{
	enum { OPT_ONCE = 256, OPT_HOLD, OPT_TIMEOUT, OPT_CTRL_VQ };
	static const struct option longopts[] = {
		{ "serve", required_argument, NULL, 's' },
		{ "connect", required_argument, NULL, 'c' },
		{ "queues", required_argument, NULL, 'q' },
		{ "once", no_argument, NULL, OPT_ONCE },
		{ "hold", required_argument, NULL, OPT_HOLD },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "ctrl-vq", no_argument, NULL, OPT_CTRL_VQ },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *serve = NULL, *connect_path = NULL;
	struct fe_opts o = { .pairs = 1, .timeout_ms = 5000 };
	bool once = false, ctrl_vq = false;
	unsigned long v;
	int c;

	setvbuf(stdout, NULL, _IOLBF, 0);
	uvh_log_set_sink(log_sink, NULL);
	while ((c = getopt_long(argc, argv, "s:c:q:vh", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			serve = optarg;
			break;
		case 'c':
			connect_path = optarg;
			break;
		case 'q':
			if (!parse_uint(optarg, 1, DEMO_MAX_PAIRS, &v)) {
				fprintf(stderr, "uvhost-demo: --queues wants 1 to %u\n",
					DEMO_MAX_PAIRS);
				return 2;
			}
			o.pairs = (uint32_t)v;
			break;
		case OPT_ONCE:
			once = true;
			break;
		case OPT_HOLD:
			if (!parse_uint(optarg, 0, 86400, &v)) {
				fprintf(stderr, "uvhost-demo: --hold wants seconds\n");
				return 2;
			}
			o.hold_s = (int)v;
			break;
		case OPT_TIMEOUT:
			if (!parse_uint(optarg, 0, INT_MAX, &v)) {
				fprintf(stderr, "uvhost-demo: --timeout wants milliseconds\n");
				return 2;
			}
			o.timeout_ms = (int)v;
			break;
		case OPT_CTRL_VQ:
			ctrl_vq = true;
			break;
		case 'v':
			uvh_log_set_level(UVH_LOG_DEBUG);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "uvhost-demo: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (serve && connect_path) {
		fprintf(stderr, "uvhost-demo: --serve and --connect exclude each other\n");
		return 2;
	}
	if (serve) {
		role = "backend";
		return run_serve(serve, o.pairs, ctrl_vq, once);
	}
	if (connect_path) {
		role = "frontend";
		return run_connect(connect_path, &o);
	}
	return run_demo(o.pairs);
}
