/* SPDX-License-Identifier: MIT */
/*
 * uvhost-demo's front-end (--connect): negotiate with a vhost-user
 * back-end, share two memfd regions of "guest" memory, set up split
 * vrings with kick/call eventfds, hold the device up, tear it down.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "demo.h"
#include "frontend.h"
#include "message.h"

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

int run_connect(const char *path, const struct fe_opts *o)
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
