/* SPDX-License-Identifier: MIT */
/*
 * The vdpa backend on the host (which has no /dev/vhost-vdpa): open errors,
 * and everything the backend decides before the kernel is asked. A
 * SOCK_SEQPACKET socketpair stands in for the device fd: its peer receives
 * each IOTLB message exactly as written, one write(2) per packet, so the
 * message stream (batching, one message per write, fields) is checked byte
 * for byte; any ioctl on it fails with ENOTTY, so an op that answers with
 * another errno decided before any ioctl. The kernel side is proven in the
 * vm suite on vdpa_sim.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/vhost.h>

#include "vhost.h"
#include "t_helpers.h"
#include "vdpa.h"

#define V2	(1ull << UVH_VDPA_BACKEND_F_IOTLB_MSG_V2)
#define BATCH	(1ull << UVH_VDPA_BACKEND_F_IOTLB_BATCH)
#define MSG_SZ	sizeof(struct vhost_msg_v2)

struct fake {
	struct uvh_vhost *b;
	int peer;		/* reads what the backend writes */
	int fds_before;
};

static struct uvh_vdpa_info fake_info(uint64_t acked)
{
	struct uvh_vdpa_info i = {
		.device_id = 1, .nvqs = 3, .vq_num_max = 256, .config_size = 24,
		.features = (1ull << 32) | (1ull << 33) | (1ull << 5),
		.backend_features_offered = V2 | BATCH, .backend_features = acked,
		.iova_range = { .first = 0x1000, .last = 0xffffffffull },
	};
	return i;
}

static void fake_open(struct fake *f, uint64_t acked)
{
	struct uvh_vdpa_info info = fake_info(acked);
	int sv[2];

	f->fds_before = t_count_fds();
	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	cr_assert_eq(uvh_vhost_vdpa_open_fd(sv[0], &info, &f->b), 0);
	close(sv[0]);		/* the backend keeps its own dup */
	f->peer = sv[1];
	cr_assert_eq(f->b->type, UVH_VHOST_VDPA);
	cr_assert_geq(f->b->fd, 0);
}

static void fake_close(struct fake *f)
{
	f->b->ops->close(f->b);
	close(f->peer);
	cr_assert_eq(t_count_fds(), f->fds_before, "an fd leaked");
}

/* The next message the backend wrote: exactly one struct vhost_msg_v2. */
static struct vhost_msg_v2 next_msg(struct fake *f)
{
	struct vhost_msg_v2 m;
	uint8_t buf[2 * MSG_SZ];
	ssize_t n = recv(f->peer, buf, sizeof(buf), MSG_DONTWAIT);

	cr_assert_eq(n, (ssize_t)MSG_SZ, "want one %zu-byte message per write, got %zd", MSG_SZ,
		     n);
	memcpy(&m, buf, sizeof(m));
	cr_assert_eq(m.type, VHOST_IOTLB_MSG_V2);
	cr_assert_eq(m.asid, 0u);
	return m;
}

static void expect_nothing(struct fake *f)
{
	uint8_t buf[MSG_SZ];

	cr_assert_eq(recv(f->peer, buf, sizeof(buf), MSG_DONTWAIT), -1, "unexpected message");
	cr_assert_eq(errno, EAGAIN);
}

static void expect_update(struct fake *f, const struct uvh_vhost_mem_region *r)
{
	struct vhost_msg_v2 m = next_msg(f);

	cr_assert_eq(m.iotlb.type, VHOST_IOTLB_UPDATE);
	cr_assert_eq(m.iotlb.iova, r->gpa);
	cr_assert_eq(m.iotlb.size, r->size);
	cr_assert_eq(m.iotlb.uaddr, (uint64_t)(uintptr_t)r->hva);
	cr_assert_eq(m.iotlb.perm, VHOST_ACCESS_RW);
}

static void expect_invalidate(struct fake *f, uint64_t iova, uint64_t size)
{
	struct vhost_msg_v2 m = next_msg(f);

	cr_assert_eq(m.iotlb.type, VHOST_IOTLB_INVALIDATE);
	cr_assert_eq(m.iotlb.iova, iova);
	cr_assert_eq(m.iotlb.size, size);
}

static void expect_type(struct fake *f, uint8_t type)
{
	cr_assert_eq(next_msg(f).iotlb.type, type);
}

static unsigned int mapped(struct fake *f)
{
	unsigned int n = 999;

	cr_assert_eq(uvh_vhost_vdpa_mapped_regions(f->b, &n), 0);
	return n;
}

/* Page-aligned fake hvas: never dereferenced by the backend. */
static struct uvh_vhost_mem_region region(uint64_t gpa, uint64_t size, uintptr_t hva)
{
	struct uvh_vhost_mem_region r = {
		.gpa = gpa, .size = size, .hva = (void *)hva, .fd = -1,
	};
	return r;
}

/* ---- open ------------------------------------------------------------------ */

Test(vhost_vdpa, open_missing_path_is_enoent)
{
	struct uvh_vhost *b = NULL;
	int before = t_count_fds();

	cr_assert_eq(uvh_vhost_vdpa_open("/dev/vhost-vdpa-does-not-exist", NULL, &b), -ENOENT);
	cr_assert_null(b);
	cr_assert_eq(t_count_fds(), before);
}

Test(vhost_vdpa, open_dev_null_is_enotty_without_leak)
{
	struct uvh_vhost *b = NULL;
	int before = t_count_fds();

	/* a character device that answers no vhost ioctl */
	cr_assert_eq(uvh_vhost_vdpa_open("/dev/null", NULL, &b), -ENOTTY);
	cr_assert_null(b);
	cr_assert_eq(t_count_fds(), before);
}

Test(vhost_vdpa, open_by_spec)
{
	struct uvh_vhost *b = NULL;
	int before = t_count_fds();

	cr_assert_eq(uvh_vhost_open("vdpa:/dev/vhost-vdpa-does-not-exist", NULL, &b), -ENOENT);
	cr_assert_eq(uvh_vhost_open("vdpa:/dev/null", NULL, &b), -ENOTTY);
	cr_assert_null(b);
	cr_assert_eq(t_count_fds(), before);
}

Test(vhost_vdpa, open_regular_file_is_enotty_without_leak)
{
	char path[] = "/tmp/uvh-vdpa-XXXXXX";
	struct uvh_vhost *b = NULL;
	int fd = mkstemp(path);
	int before;

	cr_assert_geq(fd, 0);
	close(fd);
	before = t_count_fds();
	cr_assert_eq(uvh_vhost_vdpa_open(path, NULL, &b), -ENOTTY);
	cr_assert_null(b);
	cr_assert_eq(t_count_fds(), before);
	unlink(path);
}

Test(vhost_vdpa, open_fd_of_dev_null_keeps_callers_fd)
{
	struct uvh_vhost *b = NULL;
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	int before = t_count_fds();

	cr_assert_geq(fd, 0);
	cr_assert_eq(uvh_vhost_vdpa_open_fd(fd, NULL, &b), -ENOTTY);
	cr_assert_null(b);
	cr_assert_eq(t_count_fds(), before);
	cr_assert_eq(fcntl(fd, F_GETFD), FD_CLOEXEC, "the caller's fd must stay open");
	close(fd);
}

Test(vhost_vdpa, open_fd_argument_checks)
{
	struct uvh_vdpa_info info = fake_info(V2);
	struct uvh_vhost *b = NULL;
	int before = t_count_fds();

	cr_assert_eq(uvh_vhost_vdpa_open_fd(-1, &info, &b), -EBADF);
	info.backend_features = BATCH;		/* no v2: we cannot speak to it */
	cr_assert_eq(uvh_vhost_vdpa_open_fd(0, &info, &b), -EOPNOTSUPP);
	info = fake_info(V2);
	info.iova_range.first = 0x2000;
	info.iova_range.last = 0x1000;
	cr_assert_eq(uvh_vhost_vdpa_open_fd(0, &info, &b), -EINVAL);
	info = fake_info(V2 | (1ull << UVH_VDPA_BACKEND_F_SUSPEND));	/* acked, not offered */
	cr_assert_eq(uvh_vhost_vdpa_open_fd(0, &info, &b), -EINVAL);
	cr_assert_null(b);
	cr_assert_eq(t_count_fds(), before);
}

Test(vhost_vdpa, info_and_device_facts)
{
	struct fake f;
	struct uvh_vdpa_info info;
	struct uvh_vhost_iova_range range;
	uint64_t u64;
	uint32_t u32;

	fake_open(&f, V2 | BATCH);
	cr_assert_eq(uvh_vhost_vdpa_info(f.b, &info), 0);
	cr_assert_eq(info.device_id, 1u);
	cr_assert_eq(info.backend_features, V2 | BATCH);
	cr_assert_eq(uvh_vhost_call(f.b, get_device_id, &u32), 0);
	cr_assert_eq(u32, 1u);
	cr_assert_eq(uvh_vhost_call(f.b, get_vring_num_max, &u32), 0);
	cr_assert_eq(u32, 256u);
	cr_assert_eq(uvh_vhost_call(f.b, get_queue_num, &u64), 0);
	cr_assert_eq(u64, 3u);
	cr_assert_eq(uvh_vhost_call(f.b, get_iova_range, &range), 0);
	cr_assert_eq(range.first, 0x1000u);
	cr_assert_eq(range.last, 0xffffffffu);
	cr_assert_eq(uvh_vhost_call(f.b, get_backend_features, &u64), 0);
	cr_assert_eq(u64, V2 | BATCH);
	/* the rest goes to the kernel: the stand-in answers ENOTTY */
	cr_assert_eq(uvh_vhost_call(f.b, get_features, &u64), -ENOTTY);
	fake_close(&f);
}

Test(vhost_vdpa, info_of_another_backend_type)
{
	static const struct uvh_vhost_ops other_ops;
	struct uvh_vhost other = { .ops = &other_ops, .type = UVH_VHOST_KERN, .fd = -1 };
	struct uvh_vdpa_info info;
	unsigned int n;

	cr_assert_eq(uvh_vhost_vdpa_info(&other, &info), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_vdpa_mapped_regions(&other, &n), -EOPNOTSUPP);
}

/* ---- memory table ----------------------------------------------------------- */

Test(vhost_vdpa, mem_table_batched_one_message_per_write)
{
	struct uvh_vhost_mem_region r[3] = {
		region(0x100000, 0x200000, 0x7f0000000000),
		region(0x400000, 0x10000, 0x7f1000000000),
		region(0x800000, 0x1000, 0x7f2000000000),
	};
	struct fake f;

	fake_open(&f, V2 | BATCH);
	cr_assert_eq(uvh_vhost_call(f.b, set_mem_table, r, 2), 0);
	expect_type(&f, VHOST_IOTLB_BATCH_BEGIN);
	expect_update(&f, &r[0]);
	expect_update(&f, &r[1]);
	expect_type(&f, VHOST_IOTLB_BATCH_END);
	expect_nothing(&f);
	cr_assert_eq(mapped(&f), 2u);

	/* a new table: the dropped region invalidated first, the kept one untouched */
	cr_assert_eq(uvh_vhost_call(f.b, set_mem_table, &r[1], 2), 0);
	expect_type(&f, VHOST_IOTLB_BATCH_BEGIN);
	expect_invalidate(&f, r[0].gpa, r[0].size);
	expect_update(&f, &r[2]);
	expect_type(&f, VHOST_IOTLB_BATCH_END);
	expect_nothing(&f);
	cr_assert_eq(mapped(&f), 2u);

	/* the same table again: nothing to say */
	cr_assert_eq(uvh_vhost_call(f.b, set_mem_table, &r[1], 2), 0);
	expect_nothing(&f);

	/* the same gpa with another hva is a new mapping */
	r[2].hva = (void *)0x7f3000000000;
	cr_assert_eq(uvh_vhost_call(f.b, set_mem_table, &r[2], 1), 0);
	expect_type(&f, VHOST_IOTLB_BATCH_BEGIN);
	expect_invalidate(&f, r[1].gpa, r[1].size);
	expect_invalidate(&f, r[2].gpa, r[2].size);
	expect_update(&f, &r[2]);
	expect_type(&f, VHOST_IOTLB_BATCH_END);
	expect_nothing(&f);

	/* an empty table unmaps everything */
	cr_assert_eq(uvh_vhost_call(f.b, set_mem_table, NULL, 0), 0);
	expect_type(&f, VHOST_IOTLB_BATCH_BEGIN);
	expect_invalidate(&f, r[2].gpa, r[2].size);
	expect_type(&f, VHOST_IOTLB_BATCH_END);
	cr_assert_eq(mapped(&f), 0u);
	fake_close(&f);
}

Test(vhost_vdpa, mem_table_unbatched_without_iotlb_batch)
{
	struct uvh_vhost_mem_region r[2] = {
		region(0x100000, 0x1000, 0x7f0000000000),
		region(0x200000, 0x1000, 0x7f0000100000),
	};
	struct fake f;

	fake_open(&f, V2);
	cr_assert_eq(uvh_vhost_call(f.b, set_mem_table, r, 2), 0);
	expect_update(&f, &r[0]);
	expect_update(&f, &r[1]);
	expect_nothing(&f);
	fake_close(&f);
}

Test(vhost_vdpa, mem_table_checked_before_any_message)
{
	struct uvh_vhost_mem_region good = region(0x100000, 0x2000, 0x7f0000000000);
	struct uvh_vhost_mem_region r[2];
	struct uvh_vhost_mem_region *many;
	struct fake f;

	fake_open(&f, V2 | BATCH);
	cr_assert_eq(uvh_vhost_call(f.b, set_mem_table, &good, 1), 0);
	expect_type(&f, VHOST_IOTLB_BATCH_BEGIN);
	expect_update(&f, &good);
	expect_type(&f, VHOST_IOTLB_BATCH_END);

	/* overlap */
	r[0] = region(0x200000, 0x2000, 0x7f1000000000);
	r[1] = region(0x201000, 0x2000, 0x7f2000000000);
	cr_assert_eq(uvh_vhost_call(f.b, set_mem_table, r, 2), -EINVAL);
	/* zero size */
	r[1] = region(0x400000, 0, 0x7f2000000000);
	cr_assert_eq(uvh_vhost_call(f.b, set_mem_table, r, 2), -EINVAL);
	/* no hva */
	r[1] = region(0x400000, 0x1000, 0);
	cr_assert_eq(uvh_vhost_call(f.b, set_mem_table, r, 2), -EINVAL);
	/* not page aligned: gpa, size, hva */
	r[1] = region(0x400800, 0x1000, 0x7f2000000000);
	cr_assert_eq(uvh_vhost_call(f.b, set_mem_table, r, 2), -EINVAL);
	r[1] = region(0x400000, 0x1800, 0x7f2000000000);
	cr_assert_eq(uvh_vhost_call(f.b, set_mem_table, r, 2), -EINVAL);
	r[1] = region(0x400000, 0x1000, 0x7f2000000800);
	cr_assert_eq(uvh_vhost_call(f.b, set_mem_table, r, 2), -EINVAL);
	/* wraps */
	r[1] = region(0xfffffffffffff000ull, 0x2000, 0x7f2000000000);
	cr_assert_eq(uvh_vhost_call(f.b, set_mem_table, r, 2), -EINVAL);
	/* outside the IOVA range [0x1000, 0xffffffff] */
	r[1] = region(0, 0x1000, 0x7f2000000000);
	cr_assert_eq(uvh_vhost_call(f.b, set_mem_table, r, 2), -ERANGE);
	r[1] = region(0xfffff000, 0x2000, 0x7f2000000000);
	cr_assert_eq(uvh_vhost_call(f.b, set_mem_table, r, 2), -ERANGE);
	/* too many */
	many = calloc(UVH_VDPA_MAX_REGIONS + 1, sizeof(*many));
	cr_assert_not_null(many);
	for (unsigned int i = 0; i <= UVH_VDPA_MAX_REGIONS; i++)
		many[i] = region(0x100000 + i * 0x1000ull, 0x1000, 0x7f0000000000 + i * 0x1000ull);
	cr_assert_eq(uvh_vhost_call(f.b, set_mem_table, many, UVH_VDPA_MAX_REGIONS + 1),
		     -E2BIG);
	free(many);
	cr_assert_eq(uvh_vhost_call(f.b, set_mem_table, NULL, 1), -EINVAL);

	expect_nothing(&f);
	cr_assert_eq(mapped(&f), 1u, "a refused table leaves the old one");
	fake_close(&f);
}

Test(vhost_vdpa, add_and_remove_region)
{
	struct uvh_vhost_mem_region a = region(0x100000, 0x2000, 0x7f0000000000);
	struct uvh_vhost_mem_region b = region(0x300000, 0x1000, 0x7f0000100000);
	struct uvh_vhost_mem_region over = region(0x101000, 0x2000, 0x7f0000200000);
	struct uvh_vhost_mem_region unknown = region(0x300000, 0x2000, 0x7f0000100000);
	struct fake f;

	fake_open(&f, V2 | BATCH);
	cr_assert_eq(uvh_vhost_call(f.b, add_mem_region, &a), 0);
	expect_update(&f, &a);			/* one message, no batch around it */
	expect_nothing(&f);
	cr_assert_eq(uvh_vhost_call(f.b, add_mem_region, &b), 0);
	expect_update(&f, &b);
	cr_assert_eq(uvh_vhost_call(f.b, add_mem_region, &over), -EINVAL);
	cr_assert_eq(uvh_vhost_call(f.b, remove_mem_region, &unknown), -ENOENT);
	expect_nothing(&f);
	cr_assert_eq(mapped(&f), 2u);
	cr_assert_eq(uvh_vhost_call(f.b, remove_mem_region, &a), 0);
	expect_invalidate(&f, a.gpa, a.size);
	expect_nothing(&f);
	cr_assert_eq(uvh_vhost_call(f.b, remove_mem_region, &a), -ENOENT);
	cr_assert_eq(mapped(&f), 1u);
	/* a table set afterwards knows what add_mem_region mapped */
	cr_assert_eq(uvh_vhost_call(f.b, set_mem_table, &a, 1), 0);
	expect_type(&f, VHOST_IOTLB_BATCH_BEGIN);
	expect_invalidate(&f, b.gpa, b.size);
	expect_update(&f, &a);
	expect_type(&f, VHOST_IOTLB_BATCH_END);
	fake_close(&f);
}

Test(vhost_vdpa, write_error_leaves_table_as_it_was)
{
	struct uvh_vhost_mem_region r[2] = {
		region(0x100000, 0x1000, 0x7f0000000000),
		region(0x200000, 0x1000, 0x7f0000100000),
	};
	struct fake f;

	signal(SIGPIPE, SIG_IGN);
	fake_open(&f, V2 | BATCH);
	cr_assert_eq(uvh_vhost_call(f.b, set_mem_table, r, 1), 0);
	expect_type(&f, VHOST_IOTLB_BATCH_BEGIN);
	expect_update(&f, &r[0]);
	expect_type(&f, VHOST_IOTLB_BATCH_END);
	close(f.peer);		/* drained, then gone: every write fails with EPIPE */
	f.peer = open("/dev/null", O_RDONLY | O_CLOEXEC);
	cr_assert_eq(uvh_vhost_call(f.b, set_mem_table, &r[1], 1), -EPIPE);
	cr_assert_eq(mapped(&f), 1u);
	cr_assert_eq(uvh_vhost_call(f.b, add_mem_region, &r[1]), -EPIPE);
	cr_assert_eq(mapped(&f), 1u);
	cr_assert_eq(uvh_vhost_call(f.b, remove_mem_region, &r[0]), -EPIPE);
	cr_assert_eq(mapped(&f), 1u);
	fake_close(&f);
}

/* ---- IOTLB ------------------------------------------------------------------- */

Test(vhost_vdpa, iotlb_msg_checked_and_written_as_v2)
{
	struct uvh_iotlb m = {
		.iova = 0x40000000, .size = 0x3000, .uaddr = 0x7f0000000000,
		.perm = UVH_IOTLB_RO, .type = UVH_IOTLB_UPDATE,
	};
	struct vhost_msg_v2 got;
	struct fake f;

	fake_open(&f, V2 | BATCH);
	cr_assert_eq(uvh_vhost_call(f.b, iotlb_msg, &m), 0);
	got = next_msg(&f);
	cr_assert_eq(got.iotlb.type, VHOST_IOTLB_UPDATE);
	cr_assert_eq(got.iotlb.iova, m.iova);
	cr_assert_eq(got.iotlb.size, m.size);
	cr_assert_eq(got.iotlb.uaddr, m.uaddr);
	cr_assert_eq(got.iotlb.perm, VHOST_ACCESS_RO);
	m.type = UVH_IOTLB_INVALIDATE;
	cr_assert_eq(uvh_vhost_call(f.b, iotlb_msg, &m), 0);
	expect_invalidate(&f, m.iova, m.size);

	m.type = UVH_IOTLB_MISS;		/* the device's to send, not ours */
	cr_assert_eq(uvh_vhost_call(f.b, iotlb_msg, &m), -EINVAL);
	m.type = UVH_IOTLB_UPDATE;
	m.perm = UVH_IOTLB_NONE;
	cr_assert_eq(uvh_vhost_call(f.b, iotlb_msg, &m), -EINVAL);
	m.perm = 7;
	cr_assert_eq(uvh_vhost_call(f.b, iotlb_msg, &m), -EINVAL);
	m.perm = UVH_IOTLB_RW;
	m.size = 0;
	cr_assert_eq(uvh_vhost_call(f.b, iotlb_msg, &m), -EINVAL);
	m.size = 0x2000;
	m.iova = 0xfffffffffffff000ull;
	cr_assert_eq(uvh_vhost_call(f.b, iotlb_msg, &m), -EINVAL);
	m.iova = 0xffffff000ull;		/* past last = 0xffffffff */
	cr_assert_eq(uvh_vhost_call(f.b, iotlb_msg, &m), -ERANGE);
	cr_assert_eq(uvh_vhost_call(f.b, iotlb_msg, NULL), -EINVAL);
	expect_nothing(&f);
	cr_assert_eq(mapped(&f), 0u, "vIOMMU mappings are not the memory table");
	fake_close(&f);
}

Test(vhost_vdpa, iotlb_miss_read_and_checked)
{
	struct vhost_msg_v2 m;
	struct uvh_iotlb got;
	struct fake f;

	fake_open(&f, V2);
	cr_assert_eq(uvh_vhost_call(f.b, iotlb_miss, &got, 20), -ETIMEDOUT);

	memset(&m, 0, sizeof(m));
	m.type = VHOST_IOTLB_MSG_V2;
	m.iotlb.iova = 0x5000;
	m.iotlb.perm = VHOST_ACCESS_WO;
	m.iotlb.type = VHOST_IOTLB_MISS;
	cr_assert_eq(write(f.peer, &m, sizeof(m)), (ssize_t)sizeof(m));
	cr_assert_eq(uvh_vhost_call(f.b, iotlb_miss, &got, 1000), 0);
	cr_assert_eq(got.iova, 0x5000u);
	cr_assert_eq(got.perm, UVH_IOTLB_WO);
	cr_assert_eq(got.type, UVH_IOTLB_MISS);

	/* short, wrong framing, or a type the device never sends */
	cr_assert_eq(write(f.peer, &m, 10), 10);
	cr_assert_eq(uvh_vhost_call(f.b, iotlb_miss, &got, 1000), -EIO);
	m.type = VHOST_IOTLB_MSG;
	cr_assert_eq(write(f.peer, &m, sizeof(m)), (ssize_t)sizeof(m));
	cr_assert_eq(uvh_vhost_call(f.b, iotlb_miss, &got, 1000), -EIO);
	m.type = VHOST_IOTLB_MSG_V2;
	m.iotlb.type = VHOST_IOTLB_UPDATE;
	cr_assert_eq(write(f.peer, &m, sizeof(m)), (ssize_t)sizeof(m));
	cr_assert_eq(uvh_vhost_call(f.b, iotlb_miss, &got, 1000), -EIO);
	fake_close(&f);
}

/* ---- rings, config, features ---------------------------------------------------- */

Test(vhost_vdpa, ring_arguments_checked_before_ioctl)
{
	struct uvh_vhost_vring_addr a = {
		.index = 3, .desc_gpa = 0x100000, .avail_gpa = 0x101000, .used_gpa = 0x102000,
	};
	uint32_t base;
	struct fake f;

	fake_open(&f, V2);
	/* index 3 with 3 rings */
	cr_assert_eq(uvh_vhost_call(f.b, set_vring_num, 3, 256), -EINVAL);
	cr_assert_eq(uvh_vhost_call(f.b, set_vring_addr, &a), -EINVAL);
	cr_assert_eq(uvh_vhost_call(f.b, set_vring_base, 3, 0), -EINVAL);
	cr_assert_eq(uvh_vhost_call(f.b, get_vring_base, 3, &base), -EINVAL);
	cr_assert_eq(uvh_vhost_call(f.b, set_vring_kick, 3, -1), -EINVAL);
	cr_assert_eq(uvh_vhost_call(f.b, set_vring_call, 3, -1), -EINVAL);
	cr_assert_eq(uvh_vhost_call(f.b, set_vring_err, 3, -1), -EINVAL);
	cr_assert_eq(uvh_vhost_call(f.b, set_vring_enable, 3, true), -EINVAL);
	cr_assert_eq(uvh_vhost_call(f.b, set_vring_num, UINT32_MAX, 256), -EINVAL);
	/* size: zero, not a power of 2, over the device's 256 */
	cr_assert_eq(uvh_vhost_call(f.b, set_vring_num, 0, 0), -EINVAL);
	cr_assert_eq(uvh_vhost_call(f.b, set_vring_num, 0, 96), -EINVAL);
	cr_assert_eq(uvh_vhost_call(f.b, set_vring_num, 0, 512), -EINVAL);
	cr_assert_eq(uvh_vhost_call(f.b, set_vring_base, 0, 0x10000), -EINVAL);
	cr_assert_eq(uvh_vhost_call(f.b, set_vring_kick, 0, -2), -EBADF);
	cr_assert_eq(uvh_vhost_call(f.b, set_config_call, -5), -EBADF);
	/* addresses: alignment, range, the log */
	a.index = 0;
	a.desc_gpa = 0x100008;
	cr_assert_eq(uvh_vhost_call(f.b, set_vring_addr, &a), -EINVAL);
	a.desc_gpa = 0x100000;
	a.used_gpa = 0x102002;
	cr_assert_eq(uvh_vhost_call(f.b, set_vring_addr, &a), -EINVAL);
	a.used_gpa = 0x102000;
	a.avail_gpa = 0x101001;
	cr_assert_eq(uvh_vhost_call(f.b, set_vring_addr, &a), -EINVAL);
	a.avail_gpa = 0x101000;
	a.desc_gpa = 0x100000000ull;		/* past 0xffffffff */
	cr_assert_eq(uvh_vhost_call(f.b, set_vring_addr, &a), -ERANGE);
	a.desc_gpa = 0x100000;
	a.flags = UVH_VRING_F_LOG;
	cr_assert_eq(uvh_vhost_call(f.b, set_vring_addr, &a), -EOPNOTSUPP);
	a.flags = 0;

	/* good arguments reach the kernel: the stand-in says ENOTTY */
	cr_assert_eq(uvh_vhost_call(f.b, set_vring_num, 2, 256), -ENOTTY);
	cr_assert_eq(uvh_vhost_call(f.b, set_vring_addr, &a), -ENOTTY);
	cr_assert_eq(uvh_vhost_call(f.b, set_vring_base, 0, 0xffff), -ENOTTY);
	cr_assert_eq(uvh_vhost_call(f.b, set_vring_kick, 0, -1), -ENOTTY);
	cr_assert_eq(uvh_vhost_call(f.b, set_vring_enable, 1, true), -ENOTTY);
	fake_close(&f);
}

Test(vhost_vdpa, config_and_features_checked_before_ioctl)
{
	uint8_t buf[64];
	struct fake f;

	fake_open(&f, V2 | BATCH);
	cr_assert_eq(uvh_vhost_call(f.b, get_config, 0, 0, buf), -EINVAL);
	cr_assert_eq(uvh_vhost_call(f.b, get_config, 20, 6, buf), -EINVAL);	/* 24 bytes */
	cr_assert_eq(uvh_vhost_call(f.b, get_config, UINT32_MAX, 2, buf), -EINVAL);
	cr_assert_eq(uvh_vhost_call(f.b, get_config, 0, 6, NULL), -EINVAL);
	cr_assert_eq(uvh_vhost_call(f.b, set_config, 0, 25, buf), -EINVAL);
	cr_assert_eq(uvh_vhost_call(f.b, get_config, 0, 6, buf), -ENOTTY);

	/* features the device did not offer */
	cr_assert_eq(uvh_vhost_call(f.b, set_features, 1ull << 63), -EINVAL);
	cr_assert_eq(uvh_vhost_call(f.b, set_features, 1ull << 32), -ENOTTY);
	/* backend features: only offered ones, and never without v2 */
	cr_assert_eq(uvh_vhost_call(f.b, set_backend_features,
				      V2 | (1ull << UVH_VDPA_BACKEND_F_RESUME)), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(f.b, set_backend_features, BATCH), -EINVAL);
	fake_close(&f);
}

Test(vhost_vdpa, unsupported_ops_are_eopnotsupp)
{
	struct uvh_vhost_log log = { .hva = NULL, .size = 4096, .fd = -1 };
	uint64_t u64;
	int fd = -1;
	struct uvh_vdpa_info info = fake_info(V2);
	struct uvh_vhost *b;
	struct fake f;

	fake_open(&f, V2 | BATCH);
	cr_assert_eq(uvh_vhost_call(f.b, get_protocol_features, &u64), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(f.b, set_protocol_features, 0), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(f.b, get_max_mem_slots, &u64), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(f.b, set_log_base, &log), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(f.b, set_log_fd, -1), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(f.b, set_vring_busyloop_timeout, 0, 50), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(f.b, net_set_backend, 0, -1), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(f.b, get_inflight_fd, 2, 256, &fd, &u64), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(f.b, set_inflight_fd, 2, 256, -1, 0), -EOPNOTSUPP);
	/* SUSPEND / RESUME were not acked */
	cr_assert_eq(uvh_vhost_call(f.b, suspend), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(f.b, resume), -EOPNOTSUPP);
	cr_assert_eq(fd, -1);
	fake_close(&f);

	/* a kernel without GET_VQS_COUNT: no queue count to give */
	info.nvqs = 0;
	fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(uvh_vhost_vdpa_open_fd(fd, &info, &b), 0);
	cr_assert_eq(uvh_vhost_call(b, get_queue_num, &u64), -EOPNOTSUPP);
	b->ops->close(b);
	close(fd);
}
