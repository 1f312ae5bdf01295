/* SPDX-License-Identifier: MIT */
/*
 * uvhost benchmarks: the bare shared-memory copy ring (see ceiling.h).
 * Deliberately minimal: no validation, no protocol, the same batching and
 * the same copy-out as the vring benchmark's device side.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "c2c.h"
#include "ceiling.h"

#define CL 64u

int uvhb_ceiling_init(struct uvhb_ceiling *c, uint32_t size, uint32_t frame)
{
	size_t desc_bytes, slot_bytes;
	uint8_t *m;

	memset(c, 0, sizeof(*c));
	if (!size || (size & (size - 1)) || size < UVHB_BURST || !frame || frame > 65536)
		return -EINVAL;
	c->size = size;
	c->frame = frame;
	c->stride = frame <= 2048 ? 2048 : (frame + CL - 1) & ~(CL - 1);
	desc_bytes = (size_t)size * sizeof(struct uvhb_ceiling_desc);
	slot_bytes = (size_t)size * c->stride;
	/* descriptors | prod line | cons line | slots: one shared mapping */
	c->map_len = desc_bytes + 2 * CL + slot_bytes;
	c->map_len = (c->map_len + 4095) & ~(size_t)4095;
	m = mmap(NULL, c->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return -errno;
	memset(m, 0, c->map_len);	/* fault every page in before measuring */
	c->map = m;
	c->desc = (struct uvhb_ceiling_desc *)m;
	c->prod = (_Atomic uint32_t *)(m + desc_bytes);
	c->cons = (_Atomic uint32_t *)(m + desc_bytes + CL);
	c->slots = m + desc_bytes + 2 * CL;
	c->sink = aligned_alloc(CL, (size_t)UVHB_BURST * c->stride);
	if (!c->sink) {
		munmap(m, c->map_len);
		c->map = NULL;
		return -ENOMEM;
	}
	memset(c->sink, 0, (size_t)UVHB_BURST * c->stride);
	return 0;
}

void uvhb_ceiling_fini(struct uvhb_ceiling *c)
{
	if (c->map)
		munmap(c->map, c->map_len);
	free(c->sink);
	c->map = NULL;
	c->sink = NULL;
}

unsigned int uvhb_ceiling_produce(struct uvhb_ceiling *c)
{
	uint32_t head = c->p_head, mask = c->size - 1;
	uint32_t hdr = c->frame < 64 ? c->frame : 64;

	if (c->size - (head - c->p_room_cons) < UVHB_BURST) {
		/* acquire pairs with the consumer's release store of cons:
		 * it has finished reading the slots it gives back */
		c->p_room_cons = atomic_load_explicit(c->cons, memory_order_acquire);
		if (c->size - (head - c->p_room_cons) < UVHB_BURST)
			return 0;
	}
	for (uint32_t i = 0; i < UVHB_BURST; i++) {
		uint32_t s = (head + i) & mask;
		uint8_t *b = c->slots + (size_t)s * c->stride;

		/* a constant 64 lets the compiler emit plain stores */
		if (hdr == 64)
			memset(b, (uint8_t)(head + i), 64);
		else
			memset(b, (uint8_t)(head + i), hdr);
		c->desc[s].addr = (uint64_t)(uintptr_t)b;
		c->desc[s].len = c->frame;
		c->desc[s].id = (uint16_t)s;
	}
	c->p_head = head + UVHB_BURST;
	/* release pairs with the consumer's acquire load of prod */
	atomic_store_explicit(c->prod, c->p_head, memory_order_release);
	return UVHB_BURST;
}

unsigned int uvhb_ceiling_consume(struct uvhb_ceiling *c)
{
	uint32_t tail = c->c_tail, mask = c->size - 1, n;

	if (c->c_prod == tail) {
		/* acquire pairs with the producer's release store of prod */
		c->c_prod = atomic_load_explicit(c->prod, memory_order_acquire);
		if (c->c_prod == tail)
			return 0;
	}
	n = c->c_prod - tail;
	if (n > UVHB_BURST)
		n = UVHB_BURST;
	for (uint32_t i = 0; i < n; i++) {
		const struct uvhb_ceiling_desc *d = &c->desc[(tail + i) & mask];

		memcpy(c->sink + (size_t)i * c->stride, (const void *)(uintptr_t)d->addr, d->len);
	}
	c->c_tail = tail + n;
	/* release pairs with the producer's acquire load of cons */
	atomic_store_explicit(c->cons, c->c_tail, memory_order_release);
	c->c_total += n;
	return n;
}

void uvhb_ceiling_producer_loop(void *arg, struct uvhb_pair *pair)
{
	struct uvhb_ceiling *c = arg;
	struct uvhb_idle idle;

	uvhb_idle_init(&idle);
	while (!uvhb_pair_stopped(pair)) {
		unsigned int n = uvhb_ceiling_produce(c);

		uvhb_idle_mark(&idle, n);
		if (!n)
			uvhb_relax();
	}
	c->p_idle = uvhb_idle_share(&idle);
}

void uvhb_ceiling_consumer_loop(void *arg, struct uvhb_pair *pair)
{
	struct uvhb_ceiling *c = arg;
	struct uvhb_idle idle;

	uvhb_idle_init(&idle);
	while (!uvhb_pair_stopped(pair)) {
		unsigned int n = uvhb_ceiling_consume(c);

		uvhb_idle_mark(&idle, n);
		if (n)
			uvhb_pair_count(pair, c->c_total);
		else
			uvhb_relax();
	}
	c->c_idle = uvhb_idle_share(&idle);
}
