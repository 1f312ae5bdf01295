/* SPDX-License-Identifier: MIT */
/*
 * A guest for the virtio-net tests: memfd memory, a bump allocator, and a
 * device whose rings are driver-side rings (uvh_vq_driver) in that memory,
 * each ring's process() called directly by the test.
 */
#ifndef UVH_T_NET_H
#define UVH_T_NET_H

#include <stdbool.h>
#include <stdint.h>

#include "memory.h"
#include "net.h"
#include "virtq.h"

#define GPA_BASE	0x100000ull
#define GUEST_BYTES	(48ull << 20)
#define RING_SIZE	256

struct guest {
	int fd;
	uint8_t *view;
	struct uvh_memory *mem;
	uint64_t next;
};

void guest_init(struct guest *g);
void guest_fini(struct guest *g);
/* @len bytes of guest memory, page-aligned: the guest-physical address */
uint64_t galloc(struct guest *g, uint64_t len);

static inline uint8_t *gva(struct guest *g, uint64_t gpa)
{
	return g->view + (gpa - GPA_BASE);
}

struct ring {
	struct uvh_vq_driver drv;
	struct uvh_vq vq;
};

struct tdev {
	struct guest *g;
	struct uvh_net_dev *dev;
	uint64_t features;
	unsigned int nrings;
	struct ring rings[2 * 4 + 1];
};

/* A device with @features (masked by what it offers) and every ring started. */
void tdev_init(struct tdev *t, struct guest *g, const struct uvh_net_opts *opts,
	       uint64_t features);
void tdev_fini(struct tdev *t);
/* Post @n RX buffers of @len bytes on ring @idx. */
void post_rx(struct tdev *t, unsigned int idx, unsigned int n, uint32_t len);
/* Queue one frame on TX ring @idx: a zeroed header alone, then the frame. */
void send_frame(struct tdev *t, unsigned int idx, const uint8_t *frame, uint32_t len);
/* The same with the header @hdr (10 or 12 bytes as negotiated, num_buffers 0). */
void send_frame_hdr(struct tdev *t, unsigned int idx, const struct uvh_virtio_net_hdr *hdr,
		    const uint8_t *frame, uint32_t len);
/* Collect every used TX chain of ring @idx; returns how many. */
unsigned int reap_tx(struct tdev *t, unsigned int idx);

struct rxframe {
	uint8_t data[70000];
	uint32_t len;
	struct uvh_virtio_net_hdr hdr;
};

/* Bring interface @name up, IPv6 off on it (no router solicitations among the
 * test's frames): 0 or a negative errno. */
int t_tap_up(const char *name);

/* The next received frame of RX ring @idx, buffers merged as num_buffers says. */
bool recv_frame(struct tdev *t, unsigned int idx, struct rxframe *f);

#endif
