/* SPDX-License-Identifier: MIT */
/*
 * The soft backend through uvh_vhost_open("soft:net"): a tiny VMM
 * (t_vmm.h) owns guest memory and the driver side of RX ring 0 and TX
 * ring 1, the device runs on the backend's engine threads in loopback.
 * Frames come back byte for byte (split and packed), the call eventfd
 * fires, the counters are exact, get_vring_base says where each ring
 * stopped; memory regions come and go under running rings; suspend and
 * resume; the spec parser; validation (-EINVAL), ops soft does not have
 * (-EOPNOTSUPP); no fd is left behind.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util.h"
#include "vhost.h"
#include "engine.h"
#include "message.h"
#include "net.h"
#include "devhost.h"
#include "t_helpers.h"
#include "t_vmm.h"

static struct uvh_vhost *open_soft(const struct uvh_vhost_open_opts *o)
{
	struct uvh_vhost *b = NULL;
	int ret = uvh_vhost_open("soft:net", o, &b);

	cr_assert_eq(ret, 0, "open: %s", strerror(-ret));
	cr_assert_not_null(b);
	return b;
}

static void check_stats(struct uvh_vhost *b, uint64_t frames, uint64_t bytes)
{
	struct uvh_net_dev *net = uvh_vhost_soft_net(b);
	struct uvh_net_stats st;

	cr_assert_not_null(net);
	uvh_net_get_stats(net, &st);
	cr_assert_eq(st.rx_packets, frames, "rx_packets %lu, want %lu",
		     (unsigned long)st.rx_packets, (unsigned long)frames);
	cr_assert_eq(st.tx_packets, frames, "tx_packets %lu", (unsigned long)st.tx_packets);
	cr_assert_eq(st.rx_bytes, bytes, "rx_bytes %lu, want %lu", (unsigned long)st.rx_bytes,
		     (unsigned long)bytes);
	cr_assert_eq(st.tx_bytes, bytes);
	cr_assert_eq(st.rx_drops, 0);
	cr_assert_eq(st.tx_drops, 0);
}

/* ---- traffic --------------------------------------------------------------------- */

static void loopback_case(bool packed, bool no_event_idx)
{
	struct t_vmm_opts o = { .packed = packed, .no_event_idx = no_event_idx };
	int fds = t_count_fds();
	struct uvh_vhost *b = open_soft(NULL);
	const unsigned int n = 300;	/* more than a ring: indexes and wrap counters wrap */
	uint64_t bytes = 0;
	uint32_t base[2];
	struct t_vmm v;

	cr_assert_eq(b->type, UVH_VHOST_SOFT);
	cr_assert_str_eq(b->name, "soft:net");
	cr_assert_eq(uvh_vhost_fd(b), -1);
	cr_assert_eq(t_vmm_init(&v, b, &o), 0);
	cr_assert_eq(t_vmm_start(&v), 0);
	cr_assert_eq(!!(v.features & UVH_BIT(UVH_VIRTIO_F_RING_PACKED)), packed);
	cr_assert_eq(t_vmm_loopback(&v, n, 0, 0, &bytes), 0);
	cr_assert_gt(t_vmm_calls(&v, T_VMM_RX), 0, "the RX call eventfd never fired");
	check_stats(b, n, bytes);

	cr_assert_eq(t_vmm_stop(&v, base), 0);
	cr_assert_eq(base[T_VMM_TX], t_vmm_used_base(&v, T_VMM_TX), "TX base 0x%x, want 0x%x",
		     base[T_VMM_TX], t_vmm_used_base(&v, T_VMM_TX));
	cr_assert_eq(base[T_VMM_RX], t_vmm_used_base(&v, T_VMM_RX), "RX base 0x%x, want 0x%x",
		     base[T_VMM_RX], t_vmm_used_base(&v, T_VMM_RX));
	if (!packed)
		cr_assert_eq(base[T_VMM_TX], n, "TX stopped at %u after %u chains",
			     base[T_VMM_TX], n);
	else	/* 300 one-slot chains in a 256-slot ring: lap 2 (wrap 0), slot 44 */
		cr_assert_eq(base[T_VMM_TX], 44u | (44u << 16), "TX base 0x%x", base[T_VMM_TX]);
	uvh_vhost_close(b);
	t_vmm_fini(&v);
	cr_assert_eq(t_count_fds(), fds, "fds leaked");
}

Test(vhost_soft, loopback_split) { loopback_case(false, false); }
Test(vhost_soft, loopback_packed) { loopback_case(true, false); }
Test(vhost_soft, loopback_split_no_event_idx) { loopback_case(false, true); }

/* A device of the caller's, through its own ops table: here the net
 * device's ops behind a table that counts the ring starts the backend
 * asks for. The caller owns the device and frees it after the backend. */
static _Atomic int starts_seen;
static struct uvh_devhost_device_ops counting_ops;

static int counting_queue_start(void *dev, struct uvh_devhost_queue *q)
{
	starts_seen++;
	return uvh_net_devhost_ops.queue_start(dev, q);
}

Test(vhost_soft, caller_device_through_its_ops)
{
	struct uvh_net_opts no = { .type = UVH_NET_PORT_LOOPBACK, .name = "mine" };
	struct uvh_net_dev *net = uvh_net_create(&no);
	struct uvh_vhost_open_opts o = { .soft_device_ops = &counting_ops, .soft_device = net,
					 .soft_device_id = 1 };
	struct uvh_vhost *b = NULL;
	uint64_t bytes = 0;
	uint32_t id = 0;
	struct t_vmm v;

	cr_assert_not_null(net);
	counting_ops = uvh_net_devhost_ops;
	counting_ops.queue_start = counting_queue_start;
	cr_assert_eq(uvh_vhost_open("soft:mine", &o, &b), 0);
	cr_assert_str_eq(b->name, "soft:mine");
	cr_assert_eq(uvh_vhost_soft_device(b), net);
	cr_assert_null(uvh_vhost_soft_net(b), "not a device the backend made");
	cr_assert_eq(uvh_vhost_call(b, get_device_id, &id), 0);
	cr_assert_eq(id, 1);
	cr_assert_eq(t_vmm_init(&v, b, NULL), 0);
	cr_assert_eq(t_vmm_start(&v), 0);
	cr_assert_eq(t_vmm_loopback(&v, 50, 0, 0, &bytes), 0);
	cr_assert_eq(starts_seen, 2, "the backend started %d rings through the table", starts_seen);
	uvh_vhost_close(b);
	t_vmm_fini(&v);
	uvh_net_destroy(net);
	cr_assert_eq(uvh_vhost_open("soft:other", NULL, &b), -EINVAL, "no such device");
}

Test(vhost_soft, stopped_ring_stays)
{
	struct uvh_vhost *b = open_soft(NULL);
	uint32_t base[2];
	uint64_t bytes = 0;
	uint8_t f[100];
	struct t_vmm v;

	cr_assert_eq(t_vmm_init(&v, b, NULL), 0);
	cr_assert_eq(t_vmm_start(&v), 0);
	cr_assert_eq(t_vmm_loopback(&v, 40, 0, 0, &bytes), 0);
	cr_assert_eq(t_vmm_stop(&v, base), 0);
	cr_assert_eq(base[T_VMM_TX], 40);
	/* A frame queued on a stopped ring is not taken. */
	t_vmm_make_frame(f, sizeof(f), 7);
	cr_assert_eq(t_vmm_send(&v, f, sizeof(f), 0), 0);
	t_vmm_flush(&v, T_VMM_TX);
	usleep(20000);
	cr_assert_eq(uvh_vhost_call(b, get_vring_base, T_VMM_TX, &base[T_VMM_TX]), 0);
	cr_assert_eq(base[T_VMM_TX], 40, "a stopped ring moved to %u", base[T_VMM_TX]);
	check_stats(b, 40, bytes);
	uvh_vhost_close(b);
	t_vmm_fini(&v);
}

/* ---- memory under running rings ------------------------------------------------------- */

Test(vhost_soft, memory_regions_come_and_go)
{
	int fds = t_count_fds();
	struct uvh_vhost *b = open_soft(NULL);
	struct uvh_vhost_mem_region r, bad;
	uint64_t bytes = 0, slots = 0;
	struct t_vmm v;

	cr_assert_eq(t_vmm_init(&v, b, NULL), 0);
	cr_assert_eq(t_vmm_start(&v), 0);
	cr_assert_eq(uvh_vhost_call(b, get_max_mem_slots, &slots), 0);
	cr_assert_eq(slots, UVH_MAX_MEM_SLOTS);
	cr_assert_eq(t_vmm_loopback(&v, 50, 0, 0, &bytes), 0);

	/* A region the rings did not have: TX buffers in it go through. */
	cr_assert_eq(t_vmm_add_region(&v, 1, 1ull << 30, 1ull << 20), 0);
	cr_assert_eq(t_vmm_loopback(&v, 50, 1, 1000, &bytes), 0);

	/* overlapping, empty, or unknown regions are refused, nothing changes */
	t_vmm_region(&v, 1, &bad);
	bad.gpa += 4096;
	cr_assert_eq(uvh_vhost_call(b, add_mem_region, &bad), -EINVAL);
	bad.size = 0;
	bad.gpa = 1ull << 32;
	cr_assert_eq(uvh_vhost_call(b, add_mem_region, &bad), -EINVAL);
	bad.size = 4096;
	cr_assert_eq(uvh_vhost_call(b, remove_mem_region, &bad), -ENOENT);

	/* gone again; region 0 still carries everything */
	t_vmm_region(&v, 1, &r);
	cr_assert_eq(t_vmm_remove_region(&v, 1), 0);
	cr_assert_eq(uvh_vhost_call(b, remove_mem_region, &r), -ENOENT);
	cr_assert_eq(t_vmm_loopback(&v, 50, 0, 2000, &bytes), 0);

	/* the whole table set again under running rings */
	cr_assert_eq(t_vmm_set_mem(&v), 0);
	cr_assert_eq(t_vmm_loopback(&v, 50, 0, 3000, &bytes), 0);
	check_stats(b, 200, bytes);
	uvh_vhost_close(b);
	t_vmm_fini(&v);
	cr_assert_eq(t_count_fds(), fds, "fds leaked");
}

/* ---- suspend / resume ---------------------------------------------------------------- */

Test(vhost_soft, suspend_resume)
{
	struct uvh_vhost *b = open_soft(NULL);
	struct t_vmm_opts o = { .timeout_ms = 100 };
	uint64_t bytes = 0;
	uint8_t f[200], got[T_VMM_MAX_FRAME];
	uint32_t len, base[2];
	struct t_vmm v;

	cr_assert_eq(t_vmm_init(&v, b, &o), 0);
	cr_assert_eq(t_vmm_start(&v), 0);
	cr_assert_eq(t_vmm_loopback(&v, 20, 0, 0, &bytes), 0);
	cr_assert_eq(uvh_vhost_call(b, suspend), 0);
	/* suspended: a frame waits in the ring */
	t_vmm_make_frame(f, sizeof(f), 99);
	cr_assert_eq(t_vmm_send(&v, f, sizeof(f), 0), 0);
	t_vmm_flush(&v, T_VMM_TX);
	cr_assert_eq(t_vmm_recv(&v, got, sizeof(got), &len), -ETIMEDOUT);
	cr_assert_eq(t_vmm_reap_tx(&v, 1), 1);
	/* resumed where it stopped: the frame comes through, then more */
	cr_assert_eq(uvh_vhost_call(b, resume), 0);
	v.o.timeout_ms = 5000;
	cr_assert_eq(t_vmm_recv(&v, got, sizeof(got), &len), 0);
	cr_assert_eq(len, sizeof(f));
	cr_assert_arr_eq(got, f, sizeof(f));
	cr_assert_eq(t_vmm_reap_tx(&v, 1), 0);
	bytes += sizeof(f);
	cr_assert_eq(t_vmm_loopback(&v, 20, 0, 100, &bytes), 0);
	check_stats(b, 41, bytes);
	cr_assert_eq(t_vmm_stop(&v, base), 0);
	cr_assert_eq(base[T_VMM_TX], 41);
	/* resume with nothing suspended: nothing to do */
	cr_assert_eq(uvh_vhost_call(b, resume), 0);
	uvh_vhost_close(b);
	t_vmm_fini(&v);
}

/* ---- the caller's engines --------------------------------------------------------- */

Test(vhost_soft, caller_engines)
{
	struct uvh_engine_opts eo = { .name = "t-soft", .cpu = -1, .numa_node = -1,
				      .mode = UVH_ENGINE_EVENT };
	struct uvh_net_opts no = { .type = UVH_NET_PORT_LOOPBACK, .queue_pairs = 2 };
	struct uvh_engine *e[2];
	struct uvh_vhost_open_opts o = { .soft_net = &no, .soft_engine_list = e,
					   .soft_engines = 2 };
	struct uvh_engine_stats st;
	struct uvh_vhost *b;
	uint64_t bytes = 0, pairs = 0;
	struct t_vmm v;

	for (int i = 0; i < 2; i++) {
		e[i] = uvh_engine_create(&eo);
		cr_assert_not_null(e[i]);
		cr_assert_eq(uvh_engine_start(e[i]), 0);
	}
	b = open_soft(&o);
	cr_assert_eq(uvh_vhost_call(b, get_queue_num, &pairs), 0);
	cr_assert_eq(pairs, 2);
	cr_assert_eq(t_vmm_init(&v, b, NULL), 0);
	cr_assert_eq(t_vmm_start(&v), 0);
	cr_assert_eq(t_vmm_loopback(&v, 64, 0, 0, &bytes), 0);
	check_stats(b, 64, bytes);
	uvh_engine_stats(e[0], &st);	/* pair 0 runs on the first engine */
	cr_assert_gt(st.kicks + st.sweeps, 0);
	cr_assert_eq(st.queues, 2);
	uvh_vhost_close(b);
	/* the engines are the caller's: still running, rings gone */
	uvh_engine_stats(e[0], &st);
	cr_assert(st.running);
	cr_assert_eq(st.queues, 0);
	t_vmm_fini(&v);
	for (int i = 0; i < 2; i++)
		uvh_engine_destroy(e[i]);
}

/* ---- queries ------------------------------------------------------------------------ */

Test(vhost_soft, queries)
{
	struct uvh_vhost *b = open_soft(NULL);
	struct uvh_virtio_net_config cfg;
	uint64_t f = 0, q = 0, size = 0;
	uint32_t id = 0, num = 0;
	uint8_t st = 0xff;
	int fd = -1;

	cr_assert_eq(uvh_vhost_call(b, get_features, &f), 0);
	cr_assert(f & UVH_BIT(UVH_VIRTIO_F_VERSION_1));
	cr_assert(f & UVH_BIT(UVH_VIRTIO_F_RING_PACKED));
	cr_assert(f & UVH_BIT(UVH_F_LOG_ALL));
	cr_assert_not(f & UVH_BIT(UVH_F_PROTOCOL_FEATURES), "a wire-protocol bit");
	cr_assert_eq(uvh_vhost_call(b, get_device_id, &id), 0);
	cr_assert_eq(id, 1);
	cr_assert_eq(uvh_vhost_call(b, get_queue_num, &q), 0);
	cr_assert_eq(q, 1);
	cr_assert_eq(uvh_vhost_call(b, get_vring_num_max, &num), 0);
	cr_assert_eq(num, 32768);
	cr_assert_eq(uvh_vhost_call(b, get_config, 0, sizeof(cfg), (uint8_t *)&cfg), 0);
	cr_assert_eq(cfg.max_virtqueue_pairs, 1);
	cr_assert_eq(cfg.mtu, 1500);
	cr_assert_eq(cfg.mac[0], 0x02);
	cr_assert_eq(uvh_vhost_call(b, get_status, &st), 0);
	cr_assert_eq(st, 0);
	cr_assert_eq(uvh_vhost_call(b, set_status, 0x0f), 0);
	cr_assert_eq(uvh_vhost_call(b, get_status, &st), 0);
	cr_assert_eq(st, 0x0f);
	/* an inflight area for the two rings: the caller's fd */
	cr_assert_eq(uvh_vhost_call(b, get_inflight_fd, 2, 256, &fd, &size), 0);
	cr_assert_geq(fd, 0);
	cr_assert_gt(size, 0);
	cr_assert_eq(uvh_vhost_call(b, set_inflight_fd, 2, 256, fd, size), 0);
	close(fd);
	cr_assert_eq(uvh_vhost_call(b, set_owner), 0);
	cr_assert_eq(uvh_vhost_call(b, reset_owner), 0);
	uvh_vhost_close(b);
}

/* ---- the spec ----------------------------------------------------------------------- */

Test(vhost_soft, spec_parsing)
{
	static const char *const bad[] = {
		"", "soft", "soft:", ":net", "bogus:net", "softx:net", "sof:net", "SOFT:net",
		"soft:disk", "user:", "kern:", "vdpa:",
	};
	struct uvh_vhost_open_opts quick = { .user_timeout_ms = 20 };
	char longspec[200];
	struct uvh_vhost *b = (void *)1;
	int fds = t_count_fds();

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		b = (void *)1;
		cr_assert_eq(uvh_vhost_open(bad[i], NULL, &b), -EINVAL, "'%s' accepted", bad[i]);
		cr_assert_null(b, "'%s' left *out set", bad[i]);
	}
	cr_assert_eq(uvh_vhost_open(NULL, NULL, &b), -EINVAL);
	cr_assert_eq(uvh_vhost_open("soft:net", NULL, NULL), -EINVAL);
	memset(longspec, 'a', sizeof(longspec));
	memcpy(longspec, "user:/", 6);
	longspec[sizeof(longspec) - 1] = 0;
	cr_assert_eq(uvh_vhost_open(longspec, NULL, &b), -EINVAL);
	longspec[111] = 0;	/* 111 bytes: the longest kept whole */
	cr_assert_eq(uvh_vhost_open(longspec, &quick, &b), -ENOENT);
	cr_assert_str_eq(uvh_vhost_type_name(UVH_VHOST_SOFT), "soft");
	cr_assert_str_eq(uvh_vhost_type_name(UVH_VHOST_KERN), "kern");
	cr_assert_str_eq(uvh_vhost_type_name(UVH_VHOST_VDPA), "vdpa");
	cr_assert_str_eq(uvh_vhost_type_name(UVH_VHOST_USER), "user");
	cr_assert_eq(uvh_vhost_fd(NULL), -1);
	cr_assert_null(uvh_vhost_soft_net(NULL));
	uvh_vhost_close(NULL);
	cr_assert_eq(t_count_fds(), fds);
}

/* ---- refusals --------------------------------------------------------------------------- */

Test(vhost_soft, refusals)
{
	int fds = t_count_fds();
	struct uvh_vhost *b = open_soft(NULL);
	struct uvh_vhost_mem_region r[2];
	struct uvh_vhost_vring_addr a = { .index = 3 };
	struct uvh_vhost_log log = { .fd = -1 };
	struct uvh_iotlb msg = { 0 };
	uint8_t buf[8];
	uint64_t f, u64;
	uint32_t u32;
	int efd = t_eventfd();
	struct t_vmm v;

	cr_assert_eq(t_vmm_init(&v, b, NULL), 0);
	/* ring index: 3 rings (RX, TX, control) */
	cr_assert_eq(uvh_vhost_call(b, set_vring_num, 3, 256), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, set_vring_addr, &a), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, set_vring_base, 200, 0), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, get_vring_base, 3, &u32), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, set_vring_kick, 3, efd), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, set_vring_call, UINT32_MAX, efd), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, set_vring_err, 3, efd), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, set_vring_enable, 3, true), -EINVAL);
	/* values */
	cr_assert_eq(uvh_vhost_call(b, get_features, &f), 0);
	cr_assert_eq(uvh_vhost_call(b, set_features, f | UVH_BIT(UVH_F_PROTOCOL_FEATURES)),
		     -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, set_features, UVH_BIT(UVH_VIRTIO_F_VERSION_1)), 0);
	cr_assert_eq(uvh_vhost_call(b, set_vring_num, 0, 0), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, set_vring_num, 0, 100), -EINVAL, "split: power of 2");
	cr_assert_eq(uvh_vhost_call(b, set_vring_num, 0, 65536), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, set_vring_base, 0, 0x10000), -EINVAL);
	a.index = 0;
	a.flags = 2;
	cr_assert_eq(uvh_vhost_call(b, set_vring_addr, &a), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, get_config, 250, 8, buf), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, get_config, 0, 0, buf), -EINVAL);
	msg.type = UVH_IOTLB_MISS;
	msg.perm = UVH_IOTLB_RW;
	msg.size = 4096;
	cr_assert_eq(uvh_vhost_call(b, iotlb_msg, &msg), -EINVAL, "a miss goes the other way");
	cr_assert_eq(uvh_vhost_call(b, get_inflight_fd, 4, 256, &efd, &u64), -EINVAL);
	log.size = 4096;
	log.hva = buf;
	cr_assert_eq(uvh_vhost_call(b, set_log_base, &log), -EINVAL, "no fd, no log");
	t_vmm_region(&v, 0, &r[0]);
	r[1] = r[0];
	r[1].gpa += 4096;
	cr_assert_eq(uvh_vhost_call(b, set_mem_table, r, 2), -EINVAL, "overlap");
	r[1].size = 0;
	r[1].gpa = 1ull << 40;
	cr_assert_eq(uvh_vhost_call(b, set_mem_table, r, 2), -EINVAL, "empty region");
	r[0].hva = NULL;
	cr_assert_eq(uvh_vhost_call(b, set_mem_table, r, 1), -EINVAL, "no host pointer");
	/* ops soft does not have */
	cr_assert_eq(uvh_vhost_call(b, get_protocol_features, &u64), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(b, set_protocol_features, 0), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(b, get_backend_features, &u64), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(b, net_set_backend, 0, efd), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(b, set_vring_busyloop_timeout, 0, 50), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(b, set_config_call, efd), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(b, iotlb_miss, &msg, 0), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(b, get_iova_range, NULL), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(b, set_config, 0, 6, buf), -EOPNOTSUPP,
		     "the device's config space is read-only");
	cr_assert_not(uvh_vhost_has(b, set_config_call));

	/* started ring: its size may not change under it */
	cr_assert_eq(t_vmm_start(&v), 0);
	cr_assert_eq(uvh_vhost_call(b, set_vring_num, 0, 128), -EBUSY);
	cr_assert_eq(uvh_vhost_call(b, set_vring_base, 1, 0), -EBUSY);
	cr_assert_eq(t_vmm_loopback(&v, 10, 0, 0, NULL), 0, "refusals changed nothing");

	close(efd);
	uvh_vhost_close(b);
	t_vmm_fini(&v);
	cr_assert_eq(t_count_fds(), fds, "fds leaked");
}

/* A log area given by fd: the device maps it. */
Test(vhost_soft, dirty_log)
{
	struct uvh_vhost *b = open_soft(NULL);
	struct uvh_vhost_log log = { .size = 4096, .fd = t_memfd("t-log", 4096) };
	uint64_t bytes = 0;
	uint8_t *bitmap;
	struct t_vmm v;
	bool any = false;
	int lfd = t_eventfd();

	bitmap = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, log.fd, 0);
	cr_assert_neq(bitmap, MAP_FAILED);
	cr_assert_eq(t_vmm_init(&v, b, NULL), 0);
	cr_assert_eq(t_vmm_start(&v), 0);
	cr_assert_eq(uvh_vhost_call(b, set_log_base, &log), 0);
	cr_assert_eq(uvh_vhost_call(b, set_log_fd, lfd), 0);
	close(log.fd);		/* the backend keeps its own */
	/* LOG_ALL on: what the device writes into RX buffers gets marked */
	cr_assert_eq(uvh_vhost_call(b, set_features, v.features | UVH_BIT(UVH_F_LOG_ALL)), 0);
	cr_assert_eq(t_vmm_loopback(&v, 10, 0, 0, &bytes), 0);
	for (int i = 0; i < 4096 && !any; i++)
		any = bitmap[i];
	cr_assert(any, "nothing logged");
	munmap(bitmap, 4096);
	uvh_vhost_close(b);
	t_vmm_fini(&v);
	close(lfd);
}
