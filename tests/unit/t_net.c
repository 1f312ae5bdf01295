/* SPDX-License-Identifier: MIT */
/* A guest for the virtio-net tests (t_net.h). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"
#include "t_helpers.h"
#include "t_net.h"

void guest_init(struct guest *g)
{
	struct uvh_mem_region r = {
		.guest_phys_addr = GPA_BASE,
		.memory_size = GUEST_BYTES,
		.userspace_addr = 0x7f0000000000ull,
		.mmap_offset = 0,
	};

	g->fd = t_memfd("uvh-net", GUEST_BYTES);
	g->view = mmap(NULL, GUEST_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, g->fd, 0);
	cr_assert_neq(g->view, MAP_FAILED);
	g->mem = uvh_memory_new(0);
	cr_assert_not_null(g->mem);
	cr_assert_eq(uvh_memory_add_fd(g->mem, &r, dup(g->fd)), 0);
	g->next = GPA_BASE;
}

void guest_fini(struct guest *g)
{
	uvh_memory_release(g->mem, NULL);
	munmap(g->view, GUEST_BYTES);
	close(g->fd);
}

uint64_t galloc(struct guest *g, uint64_t len)
{
	uint64_t gpa = (g->next + 4095) & ~4095ull;

	cr_assert_leq(gpa + len, GPA_BASE + GUEST_BYTES, "guest memory exhausted");
	g->next = gpa + len;
	return gpa;
}

void tdev_init(struct tdev *t, struct guest *g, const struct uvh_net_opts *opts,
	       uint64_t features)
{
	unsigned int i;

	memset(t, 0, sizeof(*t));
	t->g = g;
	t->dev = uvh_net_create(opts);
	cr_assert_not_null(t->dev, "create: %s", strerror(errno));
	t->features = features & uvh_net_features(t->dev);
	cr_assert_eq(uvh_net_set_features(t->dev, t->features), 0);
	t->nrings = uvh_net_num_queues(t->dev);
	cr_assert_leq(t->nrings, 9);
	for (i = 0; i < t->nrings; i++) {
		struct ring *r = &t->rings[i];
		bool packed = t->features & UVH_BIT(UVH_VIRTIO_F_RING_PACKED);
		uint64_t bytes = uvh_vq_driver_area_bytes(RING_SIZE, packed);
		uint64_t gpa = galloc(g, bytes);
		struct uvh_vq_config cfg;
		struct uvh_net_binding b = { .kick_fd = -1, .call_fd = -1, .enabled = true };

		cr_assert_eq(uvh_vq_driver_init(&r->drv, RING_SIZE, packed,
						t->features & UVH_BIT(UVH_VIRTIO_F_RING_EVENT_IDX),
						gva(g, gpa), gpa), 0);
		uvh_vq_driver_config(&r->drv, &cfg);
		cfg.in_order = t->features & UVH_BIT(UVH_VIRTIO_F_IN_ORDER);
		cfg.indirect = t->features & UVH_BIT(UVH_VIRTIO_F_RING_INDIRECT_DESC);
		cr_assert_eq(uvh_vq_init(&r->vq, &cfg, g->mem), 0);
		b.vq = &r->vq;
		cr_assert_eq(uvh_net_queue_start(t->dev, i, &b), 0);
	}
}

void tdev_fini(struct tdev *t)
{
	unsigned int i;

	for (i = 0; i < t->nrings; i++) {
		uvh_net_queue_stop(t->dev, i);
		uvh_vq_driver_free(&t->rings[i].drv);
	}
	uvh_net_destroy(t->dev);
}

void post_rx(struct tdev *t, unsigned int idx, unsigned int n, uint32_t len)
{
	struct ring *r = &t->rings[idx];
	unsigned int i;

	for (i = 0; i < n; i++) {
		struct uvh_vq_buf b = { galloc(t->g, len), len };

		memset(gva(t->g, b.gpa), 0xee, len);
		cr_assert_eq(uvh_vq_driver_add(&r->drv, &b, 0, 1, (void *)(uintptr_t)b.gpa), 0);
	}
	uvh_vq_driver_publish(&r->drv);
}

void send_frame_hdr(struct tdev *t, unsigned int idx, const struct uvh_virtio_net_hdr *hdr,
		    const uint8_t *frame, uint32_t len)
{
	struct ring *r = &t->rings[idx];
	struct uvh_vq_buf b[2];

	b[0].gpa = galloc(t->g, UVH_NET_HDR_LEN);
	b[0].len = UVH_NET_HDR_LEN;
	memcpy(gva(t->g, b[0].gpa), hdr, UVH_NET_HDR_LEN);
	b[1].gpa = galloc(t->g, len);
	b[1].len = len;
	memcpy(gva(t->g, b[1].gpa), frame, len);
	cr_assert_eq(uvh_vq_driver_add(&r->drv, b, 2, 0, (void *)(uintptr_t)b[0].gpa), 0);
}

void send_frame(struct tdev *t, unsigned int idx, const uint8_t *frame, uint32_t len)
{
	static const struct uvh_virtio_net_hdr zero;

	send_frame_hdr(t, idx, &zero, frame, len);
}

unsigned int reap_tx(struct tdev *t, unsigned int idx)
{
	void *tok[RING_SIZE];
	uint32_t lens[RING_SIZE];

	return uvh_vq_driver_get_used(&t->rings[idx].drv, tok, lens, RING_SIZE);
}

/*
 * Take the next received frame from RX ring @idx, merging buffers as
 * num_buffers says. false when none.
 */
bool recv_frame(struct tdev *t, unsigned int idx, struct rxframe *f)
{
	struct ring *r = &t->rings[idx];
	void *tok;
	uint32_t len, nb, k;
	uint8_t *p;

	if (uvh_vq_driver_get_used(&r->drv, &tok, &len, 1) != 1)
		return false;
	cr_assert_geq(len, UVH_NET_HDR_LEN, "used length %u", len);
	p = gva(t->g, (uint64_t)(uintptr_t)tok);
	memcpy(&f->hdr, p, sizeof(f->hdr));
	nb = f->hdr.num_buffers;
	cr_assert_geq(nb, 1);
	f->len = len - UVH_NET_HDR_LEN;
	memcpy(f->data, p + UVH_NET_HDR_LEN, f->len);
	for (k = 1; k < nb; k++) {
		cr_assert_eq(uvh_vq_driver_get_used(&r->drv, &tok, &len, 1), 1,
			     "buffer %u of %u missing", k, nb);
		cr_assert_leq(f->len + len, sizeof(f->data));
		memcpy(f->data + f->len, gva(t->g, (uint64_t)(uintptr_t)tok), len);
		f->len += len;
	}
	return true;
}


int t_tap_up(const char *name)
{
	struct ifreq ifr;
	char path[128];
	int sk, fd, ret;

	snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6", name);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (write(fd, "1", 1) < 0)
			(void)0;	/* IPv6 off is a nicety, not a requirement */
		close(fd);
	}
	sk = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sk < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	ret = ioctl(sk, SIOCGIFFLAGS, &ifr);
	if (!ret) {
		ifr.ifr_flags |= IFF_UP;
		ret = ioctl(sk, SIOCSIFFLAGS, &ifr);
	}
	ret = ret ? -errno : 0;
	close(sk);
	return ret;
}
