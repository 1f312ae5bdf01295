/* SPDX-License-Identifier: MIT */
/*
 * kern backend on a host without /dev/vhost-net. The real kernel still
 * answers: /dev/null and a pty master are character devices on which
 * every vhost ioctl fails with ENOTTY, so
 *   - a refusal that comes back as -EINVAL/-ENOENT/-EFAULT/-E2BIG (and
 *     leaves no "VHOST_..." line in the log) was decided before any
 *     ioctl, while a valid request comes back as the kernel's -ENOTTY;
 *   - the pty's other side plays the kernel's IOTLB channel: what the
 *     backend writes (struct vhost_msg) is read there byte for byte, and
 *     what is written there is what iotlb_miss reads and must validate.
 * The ioctls themselves against vhost-net run in the VM suite.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <linux/vhost.h>

#include "vhost.h"
#include "kern.h"
#include "log.h"
#include "message.h"
#include "t_helpers.h"

static struct uvh_vhost *open_ok(const char *path)
{
	struct uvh_vhost *b = NULL;
	int r = uvh_vhost_kern_open(path, NULL, &b);

	cr_assert_eq(r, 0, "open %s: %d (%s)", path, r, strerror(-r));
	cr_assert_not_null(b);
	return b;
}

static void close_b(struct uvh_vhost *b)
{
	b->ops->close(b);
}

Test(vhost_kern, open_missing_path)
{
	struct uvh_vhost *b = (struct uvh_vhost *)0x1;
	int before = t_count_fds();

	cr_assert_eq(uvh_vhost_kern_open("/nonexistent-uvh/vhost-net", NULL, &b), -ENOENT);
	cr_assert_null(b);
	cr_assert_eq(t_count_fds(), before);
}

Test(vhost_kern, open_bad_arguments)
{
	struct uvh_vhost_open_opts o = { 0 };
	struct uvh_vhost *b = NULL;
	int before = t_count_fds();

	cr_assert_eq(uvh_vhost_kern_open(NULL, NULL, &b), -EINVAL);
	cr_assert_eq(uvh_vhost_kern_open("", NULL, &b), -EINVAL);
	cr_assert_eq(uvh_vhost_kern_open("/dev/null", NULL, NULL), -EINVAL);
	/* Flags that would create or truncate are not open flags for a device. */
	o.open_flags = O_CREAT;
	cr_assert_eq(uvh_vhost_kern_open("/dev/null", &o, &b), -EINVAL);
	o.open_flags = O_TRUNC;
	cr_assert_eq(uvh_vhost_kern_open("/dev/null", &o, &b), -EINVAL);
	cr_assert_null(b);
	cr_assert_eq(t_count_fds(), before);

	/* O_NONBLOCK is one the caller may add. */
	o.open_flags = O_NONBLOCK;
	cr_assert_eq(uvh_vhost_kern_open("/dev/null", &o, &b), 0);
	cr_assert(fcntl(b->fd, F_GETFL) & O_NONBLOCK);
	close_b(b);
	cr_assert_eq(t_count_fds(), before);
}

Test(vhost_kern, open_regular_file_refused)
{
	char path[] = "/tmp/uvh-kern-XXXXXX";
	struct uvh_vhost *b = NULL;
	int fd = mkstemp(path), before;

	cr_assert_geq(fd, 0);
	close(fd);
	t_log_capture();
	before = t_count_fds();
	cr_assert_eq(uvh_vhost_kern_open(path, NULL, &b), -ENOTTY);
	cr_assert_null(b);
	cr_assert_eq(t_count_fds(), before);
	cr_assert(t_log_contains("not a character device"));
	unlink(path);
}

/* /dev/null opens (a character device) but is no vhost device: the first
 * ioctl says so with -ENOTTY and a plain log line; closing leaks nothing. */
Test(vhost_kern, devnull_first_ioctl_enotty)
{
	int before = t_count_fds();
	struct uvh_vhost *b;
	uint64_t f = 0x1234;

	t_log_capture();
	b = open_ok("/dev/null");
	cr_assert_eq(t_count_fds(), before + 1);
	cr_assert_eq(b->type, UVH_VHOST_KERN);
	cr_assert_str_eq(b->name, "kern:/dev/null");
	cr_assert_geq(b->fd, 0);
	cr_assert(fcntl(b->fd, F_GETFD) & FD_CLOEXEC);
	cr_assert_eq(fcntl(b->fd, F_GETFL) & O_ACCMODE, O_RDWR);

	cr_assert_eq(uvh_vhost_call(b, set_owner), -ENOTTY);
	cr_assert(t_log_contains("kern:/dev/null: VHOST_SET_OWNER: not a vhost device (ENOTTY)"));
	cr_assert_eq(uvh_vhost_call(b, get_features, &f), -ENOTTY);
	cr_assert_eq(f, 0x1234, "features written on failure");
	cr_assert_eq(uvh_vhost_call(b, set_features, 1ull << 32), -ENOTTY);
	cr_assert_eq(uvh_vhost_call(b, get_backend_features, &f), -ENOTTY);
	cr_assert_eq(uvh_vhost_call(b, set_backend_features, 1ull << VHOST_BACKEND_F_IOTLB_MSG_V2),
		     -ENOTTY);
	cr_assert_eq(uvh_vhost_call(b, reset_owner), -ENOTTY);
	cr_assert_eq(uvh_vhost_call(b, net_set_backend, 0, -1), -ENOTTY);
	cr_assert_eq(uvh_vhost_call(b, set_vring_busyloop_timeout, 1, 50), -ENOTTY);
	close_b(b);
	cr_assert_eq(t_count_fds(), before);
}

Test(vhost_kern, ops_kern_lacks)
{
	struct uvh_vhost *b = open_ok("/dev/null");
	struct uvh_vhost_iova_range range;
	uint64_t u64, sz;
	uint32_t u32;
	uint8_t st, buf[8];
	int fd;

	cr_assert_not(uvh_vhost_has(b, set_vring_enable));
	cr_assert_eq(uvh_vhost_call(b, set_vring_enable, 0, true), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(b, get_protocol_features, &u64), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(b, set_protocol_features, 0), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(b, get_status, &st), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(b, set_status, 0), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(b, get_config, 0, 6, buf), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(b, set_config, 0, 6, buf), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(b, set_config_call, -1), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(b, get_device_id, &u32), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(b, get_iova_range, &range), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(b, suspend), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(b, resume), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(b, get_inflight_fd, 2, 256, &fd, &sz), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(b, set_inflight_fd, 2, 256, -1, 0), -EOPNOTSUPP);
	close_b(b);
}

static unsigned int sysfs_max_regions(void)
{
	FILE *f = fopen("/sys/module/vhost/parameters/max_mem_regions", "re");
	unsigned int v = 0;

	if (f) {
		if (fscanf(f, "%u", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v ? v : UVH_KERN_DEFAULT_MEM_REGIONS;
}

Test(vhost_kern, fixed_answers)
{
	struct uvh_vhost *b = open_ok("/dev/null");
	uint64_t n = 0;
	uint32_t max = 0;

	cr_assert_eq(uvh_vhost_call(b, get_queue_num, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_eq(uvh_vhost_call(b, get_vring_num_max, &max), 0);
	cr_assert_eq(max, 32768);
	cr_assert_eq(uvh_vhost_call(b, get_max_mem_slots, &n), 0);
	cr_assert_eq(n, sysfs_max_regions());
	cr_assert_eq(uvh_vhost_call(b, get_queue_num, NULL), -EINVAL);
	close_b(b);
}

#define MB	(1ull << 20)

static uint8_t backing[4][4096];

static struct uvh_vhost_mem_region reg(uint64_t gpa, uint64_t size, int i)
{
	struct uvh_vhost_mem_region r = {
		.gpa = gpa, .size = size, .hva = backing[i], .fd = -1,
	};

	return r;
}

Test(vhost_kern, mem_table_refused_before_ioctl)
{
	struct uvh_vhost *b = open_ok("/dev/null");
	struct uvh_vhost_mem_region t[3];
	int before = t_count_fds();

	t_log_capture();
	/* zero size */
	t[0] = reg(0, 0, 0);
	cr_assert_eq(uvh_vhost_call(b, set_mem_table, t, 1), -EINVAL);
	/* no hva */
	t[0] = reg(0, MB, 0);
	t[0].hva = NULL;
	cr_assert_eq(uvh_vhost_call(b, set_mem_table, t, 1), -EINVAL);
	/* gpa range wrapping past 2^64 */
	t[0] = reg(UINT64_MAX - MB + 2, MB, 0);
	cr_assert_eq(uvh_vhost_call(b, set_mem_table, t, 1), -EINVAL);
	/* overlap, found whatever the order the regions come in */
	t[0] = reg(8 * MB, 4 * MB, 0);
	t[1] = reg(0, MB, 1);
	t[2] = reg(11 * MB, MB, 2);
	cr_assert_eq(uvh_vhost_call(b, set_mem_table, t, 3), -EINVAL);
	cr_assert(t_log_contains("overlap"));
	/* the same region twice */
	t[0] = reg(0, MB, 0);
	t[1] = reg(0, MB, 1);
	cr_assert_eq(uvh_vhost_call(b, set_mem_table, t, 2), -EINVAL);
	/* regions but no array */
	cr_assert_eq(uvh_vhost_call(b, set_mem_table, NULL, 2), -EINVAL);
	/* add: zero size, NULL */
	t[0] = reg(0, 0, 0);
	cr_assert_eq(uvh_vhost_call(b, add_mem_region, &t[0]), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, add_mem_region, NULL), -EINVAL);
	/* remove: not in the table / size 0 */
	t[0] = reg(0, MB, 0);
	cr_assert_eq(uvh_vhost_call(b, remove_mem_region, &t[0]), -ENOENT);
	t[0].size = 0;
	cr_assert_eq(uvh_vhost_call(b, remove_mem_region, &t[0]), -EINVAL);
	/* none of these reached the kernel */
	cr_assert_not(t_log_contains("VHOST_SET_MEM_TABLE"));
	cr_assert_eq(t_count_fds(), before);
	close_b(b);
}

Test(vhost_kern, mem_table_too_many_regions)
{
	struct uvh_vhost *b = open_ok("/dev/null");
	uint64_t max = 0;
	struct uvh_vhost_mem_region *t;

	cr_assert_eq(uvh_vhost_call(b, get_max_mem_slots, &max), 0);
	t = calloc(max + 1, sizeof(*t));
	cr_assert_not_null(t);
	for (uint64_t i = 0; i <= max; i++)
		t[i] = reg(i * MB, MB, 0);
	t_log_capture();
	cr_assert_eq(uvh_vhost_call(b, set_mem_table, t, (unsigned int)max + 1), -E2BIG);
	cr_assert_not(t_log_contains("VHOST_SET_MEM_TABLE"));
	/* exactly max, adjacent but disjoint: valid, so it goes to the kernel */
	cr_assert_eq(uvh_vhost_call(b, set_mem_table, t, (unsigned int)max), -ENOTTY);
	cr_assert(t_log_contains("VHOST_SET_MEM_TABLE"));
	free(t);
	close_b(b);
}

/* A table the kernel refused is not kept: removing from it finds nothing,
 * and ring addresses still do not translate. */
Test(vhost_kern, refused_table_not_kept)
{
	struct uvh_vhost *b = open_ok("/dev/null");
	struct uvh_vhost_mem_region t[2] = { reg(0, MB, 0), reg(MB, MB, 1) };
	struct uvh_vhost_vring_addr a = {
		.index = 0, .desc_gpa = 0x1000, .avail_gpa = 0x2000, .used_gpa = 0x3000,
	};

	cr_assert_eq(uvh_vhost_call(b, set_mem_table, t, 2), -ENOTTY);
	cr_assert_eq(uvh_vhost_call(b, remove_mem_region, &t[0]), -ENOENT);
	cr_assert_eq(uvh_vhost_call(b, add_mem_region, &t[1]), -ENOTTY);
	cr_assert_eq(uvh_vhost_call(b, remove_mem_region, &t[1]), -ENOENT);
	cr_assert_eq(uvh_vhost_call(b, set_vring_addr, &a), -EFAULT);
	/* an empty table is a valid table */
	cr_assert_eq(uvh_vhost_call(b, set_mem_table, NULL, 0), -ENOTTY);
	close_b(b);
}

Test(vhost_kern, ring_arguments)
{
	struct uvh_vhost *b = open_ok("/dev/null");
	struct uvh_vhost_vring_addr a = {
		.index = 2, .desc_gpa = 0x1000, .avail_gpa = 0x2000, .used_gpa = 0x3000,
	};
	struct uvh_vhost_log log = { .hva = backing[0], .size = 0, .fd = -1 };
	uint32_t base = 77;
	int before = t_count_fds();

	t_log_capture();
	/* ring index: 0 and 1 only */
	cr_assert_eq(uvh_vhost_call(b, set_vring_num, 2, 256), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, set_vring_num, UINT32_MAX, 256), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, set_vring_addr, &a), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, set_vring_base, 2, 0), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, get_vring_base, 2, &base), -EINVAL);
	cr_assert_eq(base, 77);
	cr_assert_eq(uvh_vhost_call(b, set_vring_kick, 2, -1), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, set_vring_call, 2, -1), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, set_vring_err, 2, -1), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, set_vring_busyloop_timeout, 2, 10), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, net_set_backend, 2, -1), -EINVAL);
	/* sizes: a power of two, 1 .. 32768 */
	cr_assert_eq(uvh_vhost_call(b, set_vring_num, 0, 0), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, set_vring_num, 0, 3), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, set_vring_num, 0, 65536), -EINVAL);
	/* split ring base: 16 bits */
	cr_assert_eq(uvh_vhost_call(b, set_vring_base, 0, 0x10000), -EINVAL);
	/* fds: an fd or -1 */
	cr_assert_eq(uvh_vhost_call(b, set_vring_kick, 0, -2), -EBADF);
	cr_assert_eq(uvh_vhost_call(b, set_vring_call, 1, -7), -EBADF);
	cr_assert_eq(uvh_vhost_call(b, net_set_backend, 0, -3), -EBADF);
	cr_assert_eq(uvh_vhost_call(b, set_log_fd, -2), -EBADF);
	/* addresses: unknown flags, misaligned areas, outside the table */
	a.index = 1;
	a.flags = 2;
	cr_assert_eq(uvh_vhost_call(b, set_vring_addr, &a), -EINVAL);
	a.flags = UVH_VRING_F_LOG;
	a.desc_gpa = 0x1008;
	cr_assert_eq(uvh_vhost_call(b, set_vring_addr, &a), -EINVAL);
	a.desc_gpa = 0x1000;
	a.used_gpa = 0x3002;
	cr_assert_eq(uvh_vhost_call(b, set_vring_addr, &a), -EINVAL);
	a.used_gpa = 0x3000;
	cr_assert_eq(uvh_vhost_call(b, set_vring_addr, &a), -EFAULT);
	cr_assert_eq(uvh_vhost_call(b, set_vring_addr, NULL), -EINVAL);
	/* log: no hva / no size */
	cr_assert_eq(uvh_vhost_call(b, set_log_base, &log), -EINVAL);
	log.size = 4096;
	log.hva = NULL;
	cr_assert_eq(uvh_vhost_call(b, set_log_base, &log), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, set_log_base, NULL), -EINVAL);
	cr_assert_not(t_log_contains("VHOST_"));

	/* and valid ones reach the kernel */
	cr_assert_eq(uvh_vhost_call(b, set_vring_num, 1, 32768), -ENOTTY);
	cr_assert_eq(uvh_vhost_call(b, set_vring_base, 1, 0xffff), -ENOTTY);
	cr_assert_eq(uvh_vhost_call(b, get_vring_base, 0, &base), -ENOTTY);
	cr_assert_eq(base, 77);
	cr_assert_eq(uvh_vhost_call(b, set_vring_kick, 0, -1), -ENOTTY);
	cr_assert_eq(uvh_vhost_call(b, set_vring_call, 0, -1), -ENOTTY);
	cr_assert_eq(uvh_vhost_call(b, set_vring_err, 1, -1), -ENOTTY);
	cr_assert_eq(uvh_vhost_call(b, set_log_fd, -1), -ENOTTY);
	log.hva = backing[0];
	cr_assert_eq(uvh_vhost_call(b, set_log_base, &log), -ENOTTY);
	cr_assert(t_log_contains("VHOST_SET_VRING_NUM"));
	cr_assert(t_log_contains("VHOST_SET_LOG_BASE"));
	cr_assert_eq(t_count_fds(), before);
	close_b(b);
}

/* ---- IOTLB through a pty: its slave side stands in for the kernel ----- */

static int pty_slave(struct uvh_vhost *b)
{
	struct termios tio;
	int s;

	cr_assert_eq(grantpt(b->fd), 0);
	cr_assert_eq(unlockpt(b->fd), 0);
	s = open(ptsname(b->fd), O_RDWR | O_NOCTTY | O_CLOEXEC);
	cr_assert_geq(s, 0);
	/* raw: bytes pass both ways unchanged, nothing echoed */
	cr_assert_eq(tcgetattr(s, &tio), 0);
	cfmakeraw(&tio);
	cr_assert_eq(tcsetattr(s, TCSANOW, &tio), 0);
	return s;
}

static void write_all(int fd, const void *buf, size_t len)
{
	cr_assert_eq(write(fd, buf, len), (ssize_t)len);
}

static bool readable(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

Test(vhost_kern, iotlb_msg_written_as_vhost_msg)
{
	struct uvh_vhost *b = open_ok("/dev/ptmx");
	int s = pty_slave(b);
	struct uvh_iotlb m = {
		.iova = 0x100000, .size = 0x2000, .uaddr = 0x7f0000001000ull, .perm = UVH_IOTLB_RW,
		.type = UVH_IOTLB_UPDATE,
	};
	struct vhost_msg got;

	/* the kernel did not take V2 (here: ENOTTY), so v1 it stays */
	cr_assert_eq(uvh_vhost_call(b, set_backend_features,
				      1ull << VHOST_BACKEND_F_IOTLB_MSG_V2), -ENOTTY);
	cr_assert_eq(uvh_vhost_call(b, iotlb_msg, &m), 0);
	cr_assert(readable(s, 1000));
	memset(&got, 0xee, sizeof(got));
	cr_assert_eq(read(s, &got, sizeof(got)), (ssize_t)sizeof(struct vhost_msg));
	cr_assert_eq(got.type, VHOST_IOTLB_MSG);
	cr_assert_eq(got.iotlb.iova, 0x100000);
	cr_assert_eq(got.iotlb.size, 0x2000);
	cr_assert_eq(got.iotlb.uaddr, 0x7f0000001000ull);
	cr_assert_eq(got.iotlb.perm, VHOST_ACCESS_RW);
	cr_assert_eq(got.iotlb.type, VHOST_IOTLB_UPDATE);

	m.type = UVH_IOTLB_INVALIDATE;
	cr_assert_eq(uvh_vhost_call(b, iotlb_msg, &m), 0);
	cr_assert(readable(s, 1000));
	cr_assert_eq(read(s, &got, sizeof(got)), (ssize_t)sizeof(struct vhost_msg));
	cr_assert_eq(got.iotlb.type, VHOST_IOTLB_INVALIDATE);
	cr_assert_eq(got.iotlb.uaddr, 0);

	/* refused, and nothing written */
	m.type = UVH_IOTLB_UPDATE;
	m.perm = UVH_IOTLB_NONE;
	cr_assert_eq(uvh_vhost_call(b, iotlb_msg, &m), -EINVAL);
	m.perm = UVH_IOTLB_RO;
	m.size = 0;
	cr_assert_eq(uvh_vhost_call(b, iotlb_msg, &m), -EINVAL);
	m.size = 0x2000;
	m.iova = UINT64_MAX - 0x1000;
	cr_assert_eq(uvh_vhost_call(b, iotlb_msg, &m), -EINVAL);
	m.iova = 0;
	m.uaddr = UINT64_MAX - 0x1000;
	cr_assert_eq(uvh_vhost_call(b, iotlb_msg, &m), -EINVAL);
	m.uaddr = 0x1000;
	m.type = UVH_IOTLB_MISS;
	cr_assert_eq(uvh_vhost_call(b, iotlb_msg, &m), -EINVAL);
	m.type = 9;
	cr_assert_eq(uvh_vhost_call(b, iotlb_msg, &m), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, iotlb_msg, NULL), -EINVAL);
	cr_assert_not(readable(s, 50));
	close(s);
	close_b(b);
}

static void put_miss(int s, uint32_t type, uint32_t asid, uint8_t iotype, uint8_t perm,
		     uint64_t iova)
{
	struct vhost_msg_v2 m;

	memset(&m, 0, sizeof(m));
	m.type = type;
	m.asid = asid;
	m.iotlb.iova = iova;
	m.iotlb.perm = perm;
	m.iotlb.type = iotype;
	write_all(s, &m, sizeof(m));
}

Test(vhost_kern, iotlb_miss_validated)
{
	int before = t_count_fds();
	struct uvh_vhost *b = open_ok("/dev/ptmx");
	int s = pty_slave(b);
	struct uvh_iotlb m;
	uint8_t junk[100];

	/* what vhost_iotlb_miss() writes, v2 and v1 */
	put_miss(s, VHOST_IOTLB_MSG_V2, 0, VHOST_IOTLB_MISS, VHOST_ACCESS_WO, 0xabc000);
	memset(&m, 0xff, sizeof(m));
	cr_assert_eq(uvh_vhost_call(b, iotlb_miss, &m, 1000), 0);
	cr_assert_eq(m.iova, 0xabc000);
	cr_assert_eq(m.perm, UVH_IOTLB_WO);
	cr_assert_eq(m.type, UVH_IOTLB_MISS);
	cr_assert_eq(m.size, 0);
	cr_assert_eq(m.uaddr, 0);
	put_miss(s, VHOST_IOTLB_MSG, 0x5a5a5a5a, VHOST_IOTLB_MISS, VHOST_ACCESS_RO, 0x1000);
	cr_assert_eq(uvh_vhost_call(b, iotlb_miss, &m, 1000), 0);
	cr_assert_eq(m.iova, 0x1000);
	cr_assert_eq(m.perm, UVH_IOTLB_RO);

	/* refused: unknown message type, an asid, a type the kernel never
	 * sends this way, no permission, short and long messages */
	put_miss(s, 7, 0, VHOST_IOTLB_MISS, VHOST_ACCESS_RO, 0);
	cr_assert_eq(uvh_vhost_call(b, iotlb_miss, &m, 1000), -EPROTO);
	put_miss(s, VHOST_IOTLB_MSG_V2, 1, VHOST_IOTLB_MISS, VHOST_ACCESS_RO, 0);
	cr_assert_eq(uvh_vhost_call(b, iotlb_miss, &m, 1000), -EPROTO);
	put_miss(s, VHOST_IOTLB_MSG_V2, 0, VHOST_IOTLB_UPDATE, VHOST_ACCESS_RO, 0);
	cr_assert_eq(uvh_vhost_call(b, iotlb_miss, &m, 1000), -EPROTO);
	put_miss(s, VHOST_IOTLB_MSG_V2, 0, VHOST_IOTLB_MISS, 0, 0);
	cr_assert_eq(uvh_vhost_call(b, iotlb_miss, &m, 1000), -EPROTO);
	memset(junk, 0, sizeof(junk));
	junk[0] = VHOST_IOTLB_MSG_V2;
	write_all(s, junk, 10);
	cr_assert_eq(uvh_vhost_call(b, iotlb_miss, &m, 1000), -EPROTO);
	write_all(s, junk, sizeof(junk));
	cr_assert_eq(uvh_vhost_call(b, iotlb_miss, &m, 1000), -EPROTO);
	while (readable(b->fd, 20))
		cr_assert_gt(read(b->fd, junk, sizeof(junk)), 0);

	/* nothing there: a timeout, after about the time asked */
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	cr_assert_eq(uvh_vhost_call(b, iotlb_miss, &m, 60), -ETIMEDOUT);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	cr_assert_geq(ms, 50, "returned after %ld ms", ms);
	cr_assert_eq(uvh_vhost_call(b, iotlb_miss, NULL, 10), -EINVAL);
	close(s);
	close_b(b);
	cr_assert_eq(t_count_fds(), before);
}

/* /dev/zero reads back a stream of zero bytes: no valid message. */
Test(vhost_kern, iotlb_miss_garbage_device)
{
	struct uvh_vhost *b = open_ok("/dev/zero");
	struct uvh_iotlb m;

	cr_assert_eq(uvh_vhost_call(b, iotlb_miss, &m, 100), -EPROTO);
	close_b(b);
}

static const struct uvh_vhost_ops other_ops = { 0 };

Test(vhost_kern, workers_and_vsock_where_missing)
{
	struct uvh_vhost *b = open_ok("/dev/null");
	struct uvh_vhost other = { .ops = &other_ops, .type = UVH_VHOST_SOFT, .fd = -1 };
	uint32_t id = 99;

	/* a kernel (here: a device) without the ioctls: -EOPNOTSUPP */
	cr_assert_eq(uvh_vhost_kern_new_worker(b, &id), -EOPNOTSUPP);
	cr_assert_eq(id, 99);
	cr_assert_eq(uvh_vhost_kern_free_worker(b, 1), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_kern_attach_worker(b, 1, 1), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_kern_get_worker(b, 0, &id), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_kern_vsock_set_guest_cid(b, 3), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_kern_vsock_set_running(b, true), -EOPNOTSUPP);
	/* arguments */
	cr_assert_eq(uvh_vhost_kern_new_worker(b, NULL), -EINVAL);
	cr_assert_eq(uvh_vhost_kern_new_worker(NULL, &id), -EINVAL);
	cr_assert_eq(uvh_vhost_kern_attach_worker(b, 2, 1), -EINVAL);
	cr_assert_eq(uvh_vhost_kern_get_worker(b, 2, &id), -EINVAL);
	cr_assert_eq(uvh_vhost_kern_get_worker(b, 0, NULL), -EINVAL);
	cr_assert_eq(uvh_vhost_kern_vsock_set_guest_cid(b, 2), -EINVAL);
	cr_assert_eq(uvh_vhost_kern_vsock_set_guest_cid(b, 0xffffffffull), -EINVAL);
	cr_assert_eq(uvh_vhost_kern_vsock_set_guest_cid(b, 1ull << 32), -EINVAL);
	/* another backend type has none of them */
	cr_assert_eq(uvh_vhost_kern_new_worker(&other, &id), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_kern_attach_worker(&other, 0, 1), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_kern_vsock_set_running(&other, false), -EOPNOTSUPP);
	close_b(b);
}
