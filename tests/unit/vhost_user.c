/* SPDX-License-Identifier: MIT */
/*
 * The user backend through uvh_vhost_open("user:PATH") against an
 * in-process uvhost back-end: a uvh_devhost hosting a loopback uvh_net on an
 * engine, its socket served by a thread of the test (as uvhost-net serves
 * one). The tiny VMM of t_vmm.h drives it: frames back byte for byte
 * (split and packed, with and without REPLY_ACK), calls, exact counters,
 * ring bases; memory regions added and removed under running rings with
 * ADD/REM_MEM_REG and, without CONFIGURE_MEM_SLOTS, by setting the table
 * again; more than 8 regions; suspend/resume; the back-end channel
 * (config change eventfd, IOTLB misses); errors: no socket, refused
 * connection, peer gone mid-session, refusals; no fd left behind. Restart:
 * the back-end torn down and a new one started on the same path, the
 * session replayed by uvh_vhost_user_reconnect(), traffic resumed.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "util.h"
#include "vhost.h"
#include "backend_chan.h"
#include "engine.h"
#include "listener.h"
#include "message.h"
#include "net.h"
#include "t_helpers.h"
#include "t_vmm.h"
#include "devhost.h"

#define PF(n)	UVH_BIT(UVH_PROTOCOL_F_##n)

/* What a VMM usually asks for. */
#define PF_ALL	(PF(MQ) | PF(LOG_SHMFD) | PF(REPLY_ACK) | PF(CONFIG) | PF(INFLIGHT_SHMFD) | \
		 PF(RESET_DEVICE) | PF(CONFIGURE_MEM_SLOTS) | PF(STATUS) | PF(BACKEND_REQ))

/* ---- the back-end: a device host on an engine, its socket served by a thread ---------------- */

struct server {
	char path[108];
	struct uvh_listener *l;
	struct uvh_engine *e;
	struct uvh_net_dev *net;
	struct uvh_devhost *dh;
	pthread_t th;
	atomic_bool stop;
	atomic_int connections;
	bool running;
};

static void *serve(void *arg)
{
	struct server *s = arg;

	while (!atomic_load(&s->stop)) {
		int fd = uvh_listener_accept(s->l, 20);

		if (fd == -ETIMEDOUT)
			continue;
		if (fd < 0)
			break;
		if (uvh_devhost_connect(s->dh, fd))
			continue;
		atomic_fetch_add(&s->connections, 1);
		while (!atomic_load(&s->stop) && uvh_devhost_handle(s->dh, 20) >= 0)
			;
		uvh_devhost_disconnect(s->dh);
	}
	return NULL;
}

/* The back-end on @path (NULL: a fresh one), as a restarted process would. */
static void server_start_at(struct server *s, const char *path)
{
	struct uvh_engine_opts eo = { .name = "t-user", .cpu = -1, .numa_node = -1,
				      .mode = UVH_ENGINE_ADAPTIVE };
	/* CONFIG offered: the user backend's get_config is tested (queries) */
	struct uvh_net_opts no = { .type = UVH_NET_PORT_LOOPBACK, .name = "t-user",
				   .offer_config = true };
	struct uvh_devhost_opts vo = { .name = "t-user", .ops = &uvh_net_devhost_ops, .nengines = 1 };

	memset(s, 0, sizeof(*s));
	if (path)
		snprintf(s->path, sizeof(s->path), "%s", path);
	else
		t_socket_path(s->path, sizeof(s->path), "user");
	cr_assert_eq(uvh_listener_open(s->path, NULL, &s->l), 0);
	s->e = uvh_engine_create(&eo);
	cr_assert_not_null(s->e);
	cr_assert_eq(uvh_engine_start(s->e), 0);
	s->net = uvh_net_create(&no);
	cr_assert_not_null(s->net);
	vo.dev = s->net;
	vo.engines = &s->e;
	s->dh = uvh_devhost_new(&vo);
	cr_assert_not_null(s->dh);
	cr_assert_eq(pthread_create(&s->th, NULL, serve, s), 0);
	s->running = true;
}

static void server_start(struct server *s)
{
	server_start_at(s, NULL);
}

/* The back-end goes: its thread ends the session (closing the socket). */
static void server_kill(struct server *s)
{
	if (!s->running)
		return;
	atomic_store(&s->stop, true);
	pthread_join(s->th, NULL);
	s->running = false;
}

static void server_stop(struct server *s)
{
	server_kill(s);
	uvh_devhost_free(s->dh);
	uvh_engine_destroy(s->e);
	uvh_net_destroy(s->net);
	uvh_listener_close(s->l);
}

static struct uvh_vhost *open_user(struct server *s)
{
	struct uvh_vhost_open_opts o = { .user_timeout_ms = 2000 };
	char spec[128];
	struct uvh_vhost *b = NULL;
	int ret;

	snprintf(spec, sizeof(spec), "user:%s", s->path);
	ret = uvh_vhost_open(spec, &o, &b);
	cr_assert_eq(ret, 0, "open %s: %s", spec, strerror(-ret));
	cr_assert_eq(b->type, UVH_VHOST_USER);
	cr_assert_str_eq(b->name, spec);
	cr_assert_geq(uvh_vhost_fd(b), 0);
	cr_assert_null(uvh_vhost_soft_net(b));
	return b;
}

static void check_stats(struct server *s, uint64_t frames, uint64_t bytes)
{
	struct uvh_net_stats st;

	uvh_net_get_stats(s->net, &st);
	cr_assert_eq(st.rx_packets, frames, "rx_packets %lu, want %lu",
		     (unsigned long)st.rx_packets, (unsigned long)frames);
	cr_assert_eq(st.tx_packets, frames);
	cr_assert_eq(st.rx_bytes, bytes);
	cr_assert_eq(st.tx_bytes, bytes);
	cr_assert_eq(st.rx_drops, 0);
	cr_assert_eq(st.tx_drops, 0);
}

static uint32_t dh_regions(struct server *s)
{
	struct uvh_devhost_stats st;

	uvh_devhost_stats(s->dh, &st);
	return st.mem_regions;
}

/* ---- traffic ----------------------------------------------------------------------- */

static void loopback_case(bool packed, uint64_t pf)
{
	int fds = t_count_fds();
	struct t_vmm_opts o = { .packed = packed, .protocol_features = pf };
	static struct server s;	/* outlives a failed assertion */
	struct uvh_vhost *b;
	const unsigned int n = 300;
	uint64_t bytes = 0, f;
	uint32_t base[2];
	struct t_vmm v;

	server_start(&s);
	b = open_user(&s);
	cr_assert_eq(t_vmm_init(&v, b, &o), 0);
	cr_assert_eq(t_vmm_start(&v), 0);
	cr_assert_eq(v.protocol_features, pf, "protocol features 0x%lx in force",
		     (unsigned long)v.protocol_features);
	/* A request with a reply: the back-end has handled every one before it
	 * (without REPLY_ACK the others are not waited for). */
	cr_assert_eq(uvh_vhost_call(b, get_features, &f), 0);
	cr_assert_eq(!!(uvh_devhost_features(s.dh) & UVH_BIT(UVH_VIRTIO_F_RING_PACKED)), packed);
	cr_assert(uvh_devhost_features(s.dh) & UVH_BIT(UVH_F_PROTOCOL_FEATURES),
		  "PROTOCOL_FEATURES is acked for the VMM");
	cr_assert_eq(t_vmm_loopback(&v, n, 0, 0, &bytes), 0);
	cr_assert_gt(t_vmm_calls(&v, T_VMM_RX), 0, "the RX call eventfd never fired");
	check_stats(&s, n, bytes);
	cr_assert_eq(t_vmm_stop(&v, base), 0);
	cr_assert_eq(base[T_VMM_TX], t_vmm_used_base(&v, T_VMM_TX), "TX base 0x%x, want 0x%x",
		     base[T_VMM_TX], t_vmm_used_base(&v, T_VMM_TX));
	cr_assert_eq(base[T_VMM_RX], t_vmm_used_base(&v, T_VMM_RX), "RX base 0x%x, want 0x%x",
		     base[T_VMM_RX], t_vmm_used_base(&v, T_VMM_RX));
	cr_assert_eq(base[T_VMM_TX], packed ? 44u | (44u << 16) : n);
	uvh_vhost_close(b);
	t_vmm_fini(&v);
	server_stop(&s);
	cr_assert_eq(t_count_fds(), fds, "fds leaked");
}

Test(vhost_user, loopback_split) { loopback_case(false, PF_ALL); }
Test(vhost_user, loopback_packed) { loopback_case(true, PF_ALL); }
Test(vhost_user, loopback_split_bare_protocol) { loopback_case(false, 0); }

/* ---- memory ------------------------------------------------------------------------- */

static void regions_case(uint64_t pf)
{
	int fds = t_count_fds();
	struct t_vmm_opts o = { .protocol_features = pf };
	struct uvh_vhost_mem_region bad;
	static struct server s;	/* outlives a failed assertion */
	struct uvh_vhost *b;
	uint64_t bytes = 0, slots = 0;
	struct t_vmm v;

	server_start(&s);
	b = open_user(&s);
	cr_assert_eq(t_vmm_init(&v, b, &o), 0);
	cr_assert_eq(t_vmm_start(&v), 0);
	cr_assert_eq(uvh_vhost_call(b, get_max_mem_slots, &slots), 0);
	cr_assert_eq(slots, pf & PF(CONFIGURE_MEM_SLOTS) ? UVH_MAX_MEM_SLOTS : 8);
	cr_assert_eq(t_vmm_loopback(&v, 50, 0, 0, &bytes), 0);
	cr_assert_eq(dh_regions(&s), 1);

	cr_assert_eq(t_vmm_add_region(&v, 1, 1ull << 30, 1ull << 20), 0);
	cr_assert_eq(dh_regions(&s), 2);
	cr_assert_eq(t_vmm_loopback(&v, 50, 1, 1000, &bytes), 0);
	t_vmm_region(&v, 1, &bad);
	bad.gpa += 4096;
	cr_assert_eq(uvh_vhost_call(b, add_mem_region, &bad), -EINVAL, "overlap");
	bad.gpa = 1ull << 40;
	cr_assert_eq(uvh_vhost_call(b, remove_mem_region, &bad), -ENOENT);
	cr_assert_eq(t_vmm_remove_region(&v, 1), 0);
	cr_assert_eq(dh_regions(&s), 1);
	cr_assert_eq(t_vmm_loopback(&v, 50, 0, 2000, &bytes), 0);
	check_stats(&s, 150, bytes);
	uvh_vhost_close(b);
	t_vmm_fini(&v);
	server_stop(&s);
	cr_assert_eq(t_count_fds(), fds, "fds leaked");
}

Test(vhost_user, regions_add_rem_mem_reg) { regions_case(PF_ALL); }
Test(vhost_user, regions_set_again) { regions_case(PF(REPLY_ACK)); }

#define NEXTRA	11

static void many_regions_case(uint64_t pf)
{
	struct t_vmm_opts o = { .protocol_features = pf };
	struct uvh_vhost_mem_region r[NEXTRA + 1];
	static struct server s;	/* outlives a failed assertion */
	struct uvh_vhost *b;
	uint64_t bytes = 0;
	struct t_vmm v;
	int fds = t_count_fds();

	server_start(&s);
	b = open_user(&s);
	cr_assert_eq(t_vmm_init(&v, b, &o), 0);
	cr_assert_eq(t_vmm_start(&v), 0);
	t_vmm_region(&v, 0, &r[0]);
	for (int i = 1; i <= NEXTRA; i++) {
		r[i].size = 64 << 10;
		r[i].gpa = (2ull << 30) + (uint64_t)i * (1 << 20);
		r[i].fd = t_memfd("t-extra", r[i].size);
		r[i].fd_offset = 0;
		r[i].hva = mmap(NULL, r[i].size, PROT_READ | PROT_WRITE, MAP_SHARED, r[i].fd, 0);
		cr_assert_neq(r[i].hva, MAP_FAILED);
	}
	if (pf & PF(CONFIGURE_MEM_SLOTS)) {
		cr_assert_eq(uvh_vhost_call(b, set_mem_table, r, NEXTRA + 1), 0);
		cr_assert_eq(dh_regions(&s), NEXTRA + 1);
	} else {
		cr_assert_eq(uvh_vhost_call(b, set_mem_table, r, NEXTRA + 1), -E2BIG);
		cr_assert_eq(dh_regions(&s), 1, "nothing sent");
		cr_assert_eq(uvh_vhost_call(b, set_mem_table, r, 8), 0);
		cr_assert_eq(dh_regions(&s), 8);
		cr_assert_eq(uvh_vhost_call(b, add_mem_region, &r[8]), -E2BIG);
	}
	/* rings translated through the table kept: traffic unchanged */
	cr_assert_eq(t_vmm_loopback(&v, 20, 0, 0, &bytes), 0);
	for (int i = 1; i <= NEXTRA; i++) {
		munmap(r[i].hva, r[i].size);
		close(r[i].fd);	/* the backend keeps its own */
	}
	cr_assert_eq(t_vmm_loopback(&v, 20, 0, 100, &bytes), 0);
	uvh_vhost_close(b);
	t_vmm_fini(&v);
	server_stop(&s);
	cr_assert_eq(t_count_fds(), fds, "fds leaked");
}

Test(vhost_user, more_than_8_regions) { many_regions_case(PF_ALL); }
Test(vhost_user, more_than_8_regions_refused) { many_regions_case(PF(REPLY_ACK)); }

/* ---- suspend / resume ----------------------------------------------------------------- */

Test(vhost_user, suspend_resume)
{
	struct t_vmm_opts o = { .protocol_features = PF_ALL, .timeout_ms = 100 };
	uint8_t f[300], got[T_VMM_MAX_FRAME];
	static struct server s;	/* outlives a failed assertion */
	struct uvh_vhost *b;
	uint64_t bytes = 0;
	uint32_t len, base[2];
	struct t_vmm v;

	server_start(&s);
	b = open_user(&s);
	cr_assert_eq(t_vmm_init(&v, b, &o), 0);
	cr_assert_eq(t_vmm_start(&v), 0);
	cr_assert_eq(t_vmm_loopback(&v, 30, 0, 0, &bytes), 0);
	cr_assert_eq(uvh_vhost_call(b, suspend), 0);
	cr_assert_not(uvh_devhost_queue_running(uvh_devhost_queue(s.dh, 1)));
	t_vmm_make_frame(f, sizeof(f), 5);
	cr_assert_eq(t_vmm_send(&v, f, sizeof(f), 0), 0);
	t_vmm_flush(&v, T_VMM_TX);
	cr_assert_eq(t_vmm_recv(&v, got, sizeof(got), &len), -ETIMEDOUT);
	cr_assert_eq(uvh_vhost_call(b, resume), 0);
	cr_assert(uvh_devhost_queue_running(uvh_devhost_queue(s.dh, 1)));
	cr_assert(uvh_devhost_queue(s.dh, 1)->enabled);
	v.o.timeout_ms = 5000;
	cr_assert_eq(t_vmm_recv(&v, got, sizeof(got), &len), 0);
	cr_assert_eq(len, sizeof(f));
	cr_assert_arr_eq(got, f, sizeof(f));
	cr_assert_eq(t_vmm_reap_tx(&v, 1), 0);
	bytes += sizeof(f);
	cr_assert_eq(t_vmm_loopback(&v, 30, 0, 100, &bytes), 0);
	check_stats(&s, 61, bytes);
	cr_assert_eq(t_vmm_stop(&v, base), 0);
	cr_assert_eq(base[T_VMM_TX], 61);
	uvh_vhost_close(b);
	t_vmm_fini(&v);
	server_stop(&s);
}

/* ---- queries, the back-end channel ------------------------------------------------------ */

Test(vhost_user, queries)
{
	struct t_vmm_opts o = { .protocol_features = PF_ALL };
	struct uvh_virtio_net_config cfg;
	static struct server s;	/* outlives a failed assertion */
	struct uvh_vhost *b;
	uint64_t pf = 0, q = 0, size = 0;
	uint32_t num = 0;
	uint8_t st = 0;
	int fd = -1;
	struct t_vmm v;

	server_start(&s);
	b = open_user(&s);
	cr_assert_eq(t_vmm_init(&v, b, &o), 0);
	cr_assert_eq(t_vmm_negotiate(&v), 0);
	cr_assert_eq(uvh_vhost_call(b, get_protocol_features, &pf), 0);
	cr_assert_eq(pf & PF_ALL, PF_ALL);
	cr_assert_eq(uvh_devhost_protocol_features(s.dh), PF_ALL);
	cr_assert_eq(uvh_vhost_call(b, get_queue_num, &q), 0);
	cr_assert_eq(q, 1);
	cr_assert_eq(uvh_vhost_call(b, get_vring_num_max, &num), 0);
	cr_assert_eq(num, 32768);
	cr_assert_eq(uvh_vhost_call(b, get_config, 0, sizeof(cfg), (uint8_t *)&cfg), 0);
	cr_assert_eq(cfg.max_virtqueue_pairs, 1);
	cr_assert_eq(cfg.mtu, 1500);
	cr_assert_eq(uvh_vhost_call(b, set_status, 0x07), 0);
	cr_assert_eq(uvh_vhost_call(b, get_status, &st), 0);
	cr_assert_eq(st, 0x07);
	cr_assert_eq(uvh_devhost_status(s.dh), 0x07);
	cr_assert_eq(uvh_vhost_call(b, get_inflight_fd, 2, 256, &fd, &size), 0);
	cr_assert_geq(fd, 0);
	cr_assert_gt(size, 0);
	cr_assert_eq(uvh_vhost_call(b, set_inflight_fd, 2, 256, fd, size), 0);
	close(fd);
	cr_assert_eq(uvh_vhost_call(b, reset_owner), 0, "RESET_DEVICE");
	cr_assert_eq(uvh_devhost_status(s.dh), 0);
	uvh_vhost_close(b);
	t_vmm_fini(&v);
	server_stop(&s);
}

struct chan_sender {
	struct server *s;
	int what;	/* 0: config change, 1: IOTLB miss */
	int ret;
};

static void *send_on_chan(void *arg)
{
	struct chan_sender *c = arg;
	struct uvh_backend_chan *chan = uvh_devhost_backend_chan(c->s->dh);
	struct uvh_iotlb miss = { .iova = 0x1000, .perm = UVH_IOTLB_RO, .type = UVH_IOTLB_MISS };

	c->ret = c->what ? uvh_backend_chan_iotlb_msg(chan, &miss) :
			   uvh_backend_chan_config_change(chan);
	return NULL;
}

Test(vhost_user, backend_channel)
{
	struct t_vmm_opts o = { .protocol_features = PF_ALL };
	struct chan_sender c = { 0 };
	struct uvh_iotlb m;
	static struct server s;	/* outlives a failed assertion */
	struct uvh_vhost *b;
	eventfd_t n = 0;
	pthread_t th;
	struct t_vmm v;
	int efd = t_eventfd();

	server_start(&s);
	b = open_user(&s);
	cr_assert_eq(t_vmm_init(&v, b, &o), 0);
	cr_assert_eq(t_vmm_negotiate(&v), 0);
	cr_assert_not_null(uvh_devhost_backend_chan(s.dh), "SET_BACKEND_REQ_FD sent");
	cr_assert_eq(uvh_vhost_call(b, set_config_call, efd), 0);
	cr_assert_eq(uvh_vhost_call(b, iotlb_miss, &m, 0), -ETIMEDOUT);

	/* config change: served while the VMM waits on the channel */
	c.s = &s;
	cr_assert_eq(pthread_create(&th, NULL, send_on_chan, &c), 0);
	for (int i = 0; i < 100 && eventfd_read(efd, &n); i++)
		uvh_vhost_call(b, iotlb_miss, &m, 20);
	pthread_join(th, NULL);
	cr_assert_eq(c.ret, 0, "config change: %s", strerror(-c.ret));
	cr_assert_eq(n, 1, "the config eventfd was not written");

	/* an IOTLB miss: handed out by iotlb_miss */
	c.what = 1;
	cr_assert_eq(pthread_create(&th, NULL, send_on_chan, &c), 0);
	cr_assert_eq(uvh_vhost_call(b, iotlb_miss, &m, 3000), 0);
	pthread_join(th, NULL);
	cr_assert_eq(c.ret, 0);
	cr_assert_eq(m.type, UVH_IOTLB_MISS);
	cr_assert_eq(m.iova, 0x1000);
	cr_assert_eq(m.perm, UVH_IOTLB_RO);

	uvh_vhost_close(b);
	t_vmm_fini(&v);
	server_stop(&s);
	close(efd);
}

/* ---- errors ------------------------------------------------------------------------------ */

Test(vhost_user, no_such_socket)
{
	struct uvh_vhost_open_opts o = { .user_timeout_ms = 30 };
	struct uvh_vhost *b = (void *)1;
	char path[108], spec[128];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fds = t_count_fds(), sfd;

	t_socket_path(path, sizeof(path), "none");
	snprintf(spec, sizeof(spec), "user:%s", path);
	cr_assert_eq(uvh_vhost_open(spec, &o, &b), -ENOENT);
	cr_assert_null(b);
	/* a socket file nobody listens on */
	sfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(sfd, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	cr_assert_eq(bind(sfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(uvh_vhost_open(spec, &o, &b), -ECONNREFUSED);
	close(sfd);
	unlink(path);
	cr_assert_eq(t_count_fds(), fds, "fds leaked");
}

Test(vhost_user, peer_gone_mid_session)
{
	struct t_vmm_opts o = { .protocol_features = PF_ALL };
	static struct server s;	/* outlives a failed assertion */
	struct uvh_vhost *b;
	uint64_t bytes = 0, f;
	uint32_t base;
	struct t_vmm v;
	int fds = t_count_fds(), ret;

	server_start(&s);
	b = open_user(&s);
	cr_assert_eq(t_vmm_init(&v, b, &o), 0);
	cr_assert_eq(t_vmm_start(&v), 0);
	cr_assert_eq(t_vmm_loopback(&v, 20, 0, 0, &bytes), 0);
	server_kill(&s);	/* the back-end ends the session: socket closed */
	ret = uvh_vhost_call(b, get_features, &f);
	cr_assert(ret == -ECONNRESET || ret == -EPIPE || ret == -ENOTCONN,
		  "get_features after the peer went: %d (%s)", ret, strerror(-ret));
	cr_assert_eq(uvh_vhost_call(b, get_vring_base, 0, &base), -ENOTCONN);
	cr_assert_eq(uvh_vhost_call(b, set_vring_num, 0, 256), -ENOTCONN);
	cr_assert_lt(uvh_vhost_call(b, suspend), 0);
	uvh_vhost_close(b);
	t_vmm_fini(&v);
	server_stop(&s);
	cr_assert_eq(t_count_fds(), fds, "fds leaked");
}

Test(vhost_user, refusals)
{
	struct t_vmm_opts o = { .protocol_features = PF(REPLY_ACK) };
	struct uvh_vhost_mem_region r;
	struct uvh_vhost_log log = { .size = 4096, .fd = -1 };
	static struct server s;	/* outlives a failed assertion */
	struct uvh_vhost *b;
	uint64_t f = 0, u64;
	uint32_t u32;
	struct t_vmm v;
	int fds = t_count_fds(), efd = t_eventfd();

	server_start(&s);
	b = open_user(&s);
	cr_assert_eq(t_vmm_init(&v, b, &o), 0);
	cr_assert_eq(uvh_vhost_call(b, get_features, &f), 0);
	cr_assert_eq(uvh_vhost_call(b, set_features, f | UVH_BIT(63)), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, get_protocol_features, &u64), 0);
	cr_assert_eq(uvh_vhost_call(b, set_protocol_features, u64 | UVH_BIT(62)), -EINVAL);
	cr_assert_eq(t_vmm_start(&v), 0);
	/* refused before anything is sent */
	cr_assert_eq(uvh_vhost_call(b, set_vring_num, 256, 256), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, set_vring_kick, 1000, efd), -EINVAL);
	t_vmm_region(&v, 0, &r);
	r.fd = -1;
	cr_assert_eq(uvh_vhost_call(b, set_mem_table, &r, 1), -EBADF);
	r.fd = v.mem[0].fd;
	r.size = 0;
	cr_assert_eq(uvh_vhost_call(b, add_mem_region, &r), -EINVAL);
	cr_assert_eq(uvh_vhost_call(b, set_log_base, &log), -EOPNOTSUPP, "no LOG_SHMFD");
	cr_assert_eq(uvh_vhost_call(b, set_config_call, efd), -EOPNOTSUPP, "no channel");
	cr_assert_eq(uvh_vhost_call(b, set_status, 1), -EOPNOTSUPP, "no STATUS");
	/* refused by the back-end (a NACK with REPLY_ACK): the session goes on */
	cr_assert_eq(uvh_vhost_call(b, set_vring_num, 99, 256), -EIO);
	cr_assert_eq(uvh_vhost_call(b, set_vring_num, 0, 100), -EIO);
	/* ops user does not have */
	cr_assert_eq(uvh_vhost_call(b, get_device_id, &u32), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(b, net_set_backend, 0, efd), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(b, get_backend_features, &u64), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_call(b, set_vring_busyloop_timeout, 0, 1), -EOPNOTSUPP);
	cr_assert_eq(t_vmm_loopback(&v, 10, 0, 0, NULL), 0, "refusals broke the session");
	uvh_vhost_close(b);
	t_vmm_fini(&v);
	close(efd);
	server_stop(&s);
	cr_assert_eq(t_count_fds(), fds, "fds leaked");
}

/* ---- surviving a back-end restart ---------------------------------------------------------- */

/* The driver's word on where a ring restarts (split: used->idx, as QEMU;
 * packed: the next used slot and its wrap counter). */
static int vmm_base(void *opaque, uint32_t index, uint32_t *base)
{
	struct t_vmm *v = opaque;
	struct uvh_vq_driver *d;

	if (index > T_VMM_TX)
		return -EINVAL;
	d = &v->ring[index].drv;
	if (!v->o.packed) {
		struct uvh_vring_used *u = d->device_area;

		*base = __atomic_load_n(&u->idx, __ATOMIC_ACQUIRE);
	} else {
		*base = d->last_used_slot | (d->used_wrap ? 0x8000u : 0);
	}
	return 0;
}

static struct uvh_vhost *open_reconnect(struct server *s, struct t_vmm *v)
{
	struct uvh_vhost_open_opts o = {
		.user_timeout_ms = 2000, .user_reconnect = true,
		.user_vring_base = vmm_base, .user_opaque = v,
	};
	char spec[128];
	struct uvh_vhost *b = NULL;
	int ret;

	snprintf(spec, sizeof(spec), "user:%s", s->path);
	ret = uvh_vhost_open(spec, &o, &b);
	cr_assert_eq(ret, 0, "open %s: %s", spec, strerror(-ret));
	return b;
}

/* Negotiate, take the back-end's inflight area (before the rings, as QEMU
 * does: the session keeps it for the next process), then start. */
static void start_with_inflight(struct t_vmm *v, struct uvh_vhost *b)
{
	uint64_t size = 0;
	int ifd = -1;

	cr_assert_eq(t_vmm_negotiate(v), 0);
	cr_assert_eq(uvh_vhost_call(b, get_inflight_fd, 2, v->ring_size, &ifd, &size), 0);
	cr_assert_geq(ifd, 0);
	cr_assert_gt(size, 0);
	close(ifd);
	cr_assert_eq(t_vmm_start(v), 0);
}

static bool peer_gone_err(int ret)
{
	return ret == -ENOTCONN || ret == -EPIPE || ret == -ECONNRESET;
}

#define GONE_FRAMES	40u

/* @inflight: the back-end's inflight area taken (the new process finds its
 * position there); without, the base the VMM gives is all it has. */
static void restart_case(bool packed, bool inflight)
{
	int fds = t_count_fds(), ret;
	struct t_vmm_opts o = { .packed = packed, .protocol_features = PF_ALL };
	uint8_t f[GONE_FRAMES][256], got[T_VMM_MAX_FRAME];
	static struct server s;	/* outlives a failed assertion */
	static struct t_vmm v;
	struct uvh_vhost *b;
	uint64_t bytes = 0, fe;
	uint32_t len, base[2];
	char path[108];

	server_start(&s);
	snprintf(path, sizeof(path), "%s", s.path);
	b = open_reconnect(&s, &v);
	cr_assert_eq(t_vmm_init(&v, b, &o), 0);
	if (inflight)
		start_with_inflight(&v, b);
	else
		cr_assert_eq(t_vmm_start(&v), 0);
	cr_assert_eq(t_vmm_loopback(&v, 200, 0, 0, &bytes), 0);
	check_stats(&s, 200, bytes);
	cr_assert_eq(uvh_vhost_user_check(b, 0), 0, "the back-end is up");

	/* the back-end process goes: its session and listener torn down */
	server_stop(&s);
	cr_assert_eq(uvh_vhost_user_check(b, 2000), -ENOTCONN);
	ret = uvh_vhost_call(b, get_features, &fe);
	cr_assert(peer_gone_err(ret), "get_features while gone: %d", ret);
	cr_assert(peer_gone_err(uvh_vhost_call(b, set_vring_enable, 0, true)));
	/* the driver goes on: frames queued while nobody listens */
	for (uint32_t i = 0; i < GONE_FRAMES; i++) {
		t_vmm_make_frame(f[i], sizeof(f[i]) - i, 5000 + i);
		cr_assert_eq(t_vmm_send(&v, f[i], sizeof(f[i]) - i, 0), 0);
	}
	t_vmm_flush(&v, T_VMM_TX);

	/* a new process on the same path; the session is replayed to it */
	server_start_at(&s, path);
	ret = uvh_vhost_user_reconnect(b, 3000);
	cr_assert_eq(ret, 0, "reconnect: %s", strerror(-ret));
	cr_assert_geq(uvh_vhost_fd(b), 0);
	cr_assert_eq(uvh_vhost_user_check(b, 0), 0);
	cr_assert_eq(!!(uvh_devhost_features(s.dh) & UVH_BIT(UVH_VIRTIO_F_RING_PACKED)), packed);
	cr_assert_eq(uvh_devhost_protocol_features(s.dh), PF_ALL, "protocol features replayed");
	cr_assert_not_null(uvh_devhost_backend_chan(s.dh), "back-end channel reopened");
	cr_assert(uvh_devhost_queue_running(uvh_devhost_queue(s.dh, T_VMM_TX)));
	cr_assert(uvh_devhost_queue(s.dh, T_VMM_RX)->enabled);

	/* what the driver queued meanwhile comes back, byte for byte, in order */
	v.o.timeout_ms = 5000;
	for (uint32_t i = 0; i < GONE_FRAMES; i++) {
		cr_assert_eq(t_vmm_recv(&v, got, sizeof(got), &len), 0, "frame %u", i);
		cr_assert_eq(len, sizeof(f[i]) - i, "frame %u: %u bytes", i, len);
		cr_assert_arr_eq(got, f[i], len, "frame %u differs", i);
		bytes += len;
	}
	cr_assert_eq(t_vmm_reap_tx(&v, GONE_FRAMES), 0, "TX chains not given back");
	cr_assert_eq(t_vmm_loopback(&v, 200, 0, 1000, &bytes), 0);
	{
		struct uvh_net_stats st;

		uvh_net_get_stats(s.net, &st);
		cr_assert_eq(st.tx_packets, GONE_FRAMES + 200, "the new process sent %lu",
			     (unsigned long)st.tx_packets);
		cr_assert_eq(st.rx_packets, GONE_FRAMES + 200);
		cr_assert_eq(st.rx_drops + st.tx_drops, 0);
	}
	/* no chain lost or used twice over both processes */
	cr_assert_eq(t_vmm_stop(&v, base), 0);
	cr_assert_eq(base[T_VMM_TX], t_vmm_used_base(&v, T_VMM_TX), "TX base 0x%x, want 0x%x",
		     base[T_VMM_TX], t_vmm_used_base(&v, T_VMM_TX));
	cr_assert_eq(base[T_VMM_RX], t_vmm_used_base(&v, T_VMM_RX), "RX base 0x%x, want 0x%x",
		     base[T_VMM_RX], t_vmm_used_base(&v, T_VMM_RX));
	uvh_vhost_close(b);
	t_vmm_fini(&v);
	server_stop(&s);
	cr_assert_eq(t_count_fds(), fds, "fds leaked");
}

Test(vhost_user, restart_split) { restart_case(false, true); }
Test(vhost_user, restart_packed) { restart_case(true, true); }
Test(vhost_user, restart_split_no_inflight) { restart_case(false, false); }
Test(vhost_user, restart_packed_no_inflight) { restart_case(true, false); }

Test(vhost_user, restart_suspended_ring_stays_stopped)
{
	struct t_vmm_opts o = { .protocol_features = PF_ALL, .timeout_ms = 100 };
	uint8_t f[300], got[T_VMM_MAX_FRAME];
	static struct server s;	/* outlives a failed assertion */
	static struct t_vmm v;
	struct uvh_vhost *b;
	uint64_t bytes = 0;
	uint32_t len;
	char path[108];
	int fds = t_count_fds();

	server_start(&s);
	snprintf(path, sizeof(path), "%s", s.path);
	b = open_reconnect(&s, &v);
	cr_assert_eq(t_vmm_init(&v, b, &o), 0);
	start_with_inflight(&v, b);
	cr_assert_eq(t_vmm_loopback(&v, 30, 0, 0, &bytes), 0);
	cr_assert_eq(uvh_vhost_call(b, suspend), 0);
	server_stop(&s);
	server_start_at(&s, path);
	cr_assert_eq(uvh_vhost_user_reconnect(b, 3000), 0);
	cr_assert_not(uvh_devhost_queue_running(uvh_devhost_queue(s.dh, T_VMM_TX)), "suspended ring restarted");
	cr_assert_not(uvh_devhost_queue_running(uvh_devhost_queue(s.dh, T_VMM_RX)));
	t_vmm_make_frame(f, sizeof(f), 7);
	cr_assert_eq(t_vmm_send(&v, f, sizeof(f), 0), 0);
	t_vmm_flush(&v, T_VMM_TX);
	cr_assert_eq(t_vmm_recv(&v, got, sizeof(got), &len), -ETIMEDOUT);
	cr_assert_eq(uvh_vhost_call(b, resume), 0);
	cr_assert(uvh_devhost_queue_running(uvh_devhost_queue(s.dh, T_VMM_TX)));
	v.o.timeout_ms = 5000;
	cr_assert_eq(t_vmm_recv(&v, got, sizeof(got), &len), 0);
	cr_assert_eq(len, sizeof(f));
	cr_assert_arr_eq(got, f, sizeof(f));
	cr_assert_eq(t_vmm_reap_tx(&v, 1), 0);
	cr_assert_eq(t_vmm_loopback(&v, 30, 0, 100, &bytes), 0);
	uvh_vhost_close(b);
	t_vmm_fini(&v);
	server_stop(&s);
	cr_assert_eq(t_count_fds(), fds, "fds leaked");
}

/* A reset device's rings are forgotten by the journal: the restarted
 * back-end starts none until the VMM sets them up again. */
Test(vhost_user, restart_after_reset_replays_no_rings)
{
	struct t_vmm_opts o = { .protocol_features = PF_ALL, .timeout_ms = 100 };
	static struct server s;	/* outlives a failed assertion */
	static struct t_vmm v;
	struct uvh_vhost *b;
	char path[108];
	int fds = t_count_fds();

	server_start(&s);
	snprintf(path, sizeof(path), "%s", s.path);
	b = open_reconnect(&s, &v);
	cr_assert_eq(t_vmm_init(&v, b, &o), 0);
	start_with_inflight(&v, b);
	cr_assert_eq(t_vmm_loopback(&v, 20, 0, 0, NULL), 0);
	cr_assert_eq(uvh_vhost_call(b, reset_owner), 0);
	cr_assert_not(uvh_devhost_queue_running(uvh_devhost_queue(s.dh, T_VMM_TX)), "reset left the ring running");
	server_stop(&s);
	server_start_at(&s, path);
	cr_assert_eq(uvh_vhost_user_reconnect(b, 3000), 0);
	cr_assert_not(uvh_devhost_queue_running(uvh_devhost_queue(s.dh, T_VMM_TX)), "a reset ring was replayed");
	cr_assert_not(uvh_devhost_queue_running(uvh_devhost_queue(s.dh, T_VMM_RX)), "a reset ring was replayed");
	/* and the VMM can set them up again on the new process */
	start_with_inflight(&v, b);
	cr_assert_eq(t_vmm_loopback(&v, 20, 0, 100, NULL), 0);
	uvh_vhost_close(b);
	t_vmm_fini(&v);
	server_stop(&s);
	cr_assert_eq(t_count_fds(), fds, "fds leaked");
}

Test(vhost_user, reconnect_to_nothing)
{
	struct t_vmm_opts o = { .protocol_features = PF_ALL };
	static struct server s;	/* outlives a failed assertion */
	static struct t_vmm v;
	struct uvh_vhost *b;
	uint64_t f;
	char path[108];
	int fds = t_count_fds(), gone_fds;

	server_start(&s);
	snprintf(path, sizeof(path), "%s", s.path);
	b = open_reconnect(&s, &v);
	cr_assert_eq(t_vmm_init(&v, b, &o), 0);
	start_with_inflight(&v, b);
	cr_assert_eq(t_vmm_loopback(&v, 20, 0, 0, NULL), 0);
	server_stop(&s);	/* the socket file goes too */
	cr_assert_eq(uvh_vhost_user_reconnect(b, 0), -ENOENT, "one try");
	cr_assert_eq(uvh_vhost_fd(b), -1);
	gone_fds = t_count_fds();
	cr_assert_eq(uvh_vhost_user_reconnect(b, 150), -ETIMEDOUT);
	cr_assert_eq(uvh_vhost_user_reconnect(b, 0), -ENOENT);
	cr_assert_eq(t_count_fds(), gone_fds, "failed reconnects leak fds");
	cr_assert_eq(uvh_vhost_user_check(b, 0), -ENOTCONN);
	cr_assert_eq(uvh_vhost_call(b, get_features, &f), -ENOTCONN);
	cr_assert_eq(uvh_vhost_call(b, set_vring_num, 0, 256), -ENOTCONN);
	/* it comes back: the next try succeeds */
	server_start_at(&s, path);
	cr_assert_eq(uvh_vhost_user_reconnect(b, 3000), 0);
	cr_assert_eq(t_vmm_loopback(&v, 20, 0, 100, NULL), 0);
	uvh_vhost_close(b);
	t_vmm_fini(&v);
	server_stop(&s);
	cr_assert_eq(t_count_fds(), fds, "fds leaked");
}

Test(vhost_user, reconnect_needs_user_reconnect)
{
	static const struct uvh_vhost_ops no_ops;
	struct uvh_vhost kern = { .ops = &no_ops, .type = UVH_VHOST_KERN, .fd = -1 };
	static struct server s;	/* outlives a failed assertion */
	struct uvh_vhost *b;
	int fds = t_count_fds();

	cr_assert_eq(uvh_vhost_user_reconnect(NULL, 0), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_user_reconnect(&kern, 0), -EOPNOTSUPP);
	cr_assert_eq(uvh_vhost_user_check(&kern, 0), -EOPNOTSUPP);
	server_start(&s);
	b = open_user(&s);	/* without user_reconnect */
	cr_assert_eq(uvh_vhost_user_check(b, 0), 0);
	cr_assert_eq(uvh_vhost_user_reconnect(b, 100), -EINVAL);
	/* accepted before the kill, or the connection waits in the backlog */
	for (int i = 0; i < 200 && !atomic_load(&s.connections); i++)
		usleep(10000);
	cr_assert_eq(atomic_load(&s.connections), 1);
	server_kill(&s);
	cr_assert_eq(uvh_vhost_user_check(b, 2000), -ENOTCONN);
	cr_assert_eq(uvh_vhost_user_reconnect(b, 100), -EINVAL);
	uvh_vhost_close(b);
	server_stop(&s);
	cr_assert_eq(t_count_fds(), fds, "fds leaked");
}
