/* SPDX-License-Identifier: MIT */
/*
 * uvhost benchmarks: the ceiling.
 *
 * A bare shared-memory copy ring between two cores: a ring of packet
 * slots, a 16-byte descriptor per slot, one producer index and one
 * consumer index (each on its own cache line), batches of 32. The producer
 * writes the first 64 bytes of each packet (a driver writing headers) and
 * its descriptor, then publishes; the consumer reads each descriptor,
 * copies the packet out into a local buffer, then publishes its index.
 * That is a split virtqueue with every protocol cost removed: the rate a
 * virtqueue between the same two cores can approach.
 *
 * The producer/consumer steps are exposed so a benchmark can also run them
 * alternately in one thread (for instruction-count profiling).
 */
#ifndef UVHOST_BENCH_CEILING_H
#define UVHOST_BENCH_CEILING_H

#include <stddef.h>
#include <stdint.h>

#define UVHB_BURST 32u

struct uvhb_ceiling_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t id;
};

struct uvhb_ceiling {
	/* shared between the two cores (in one shared mapping) */
	struct uvhb_ceiling_desc *desc;
	_Atomic uint32_t *prod;		/* free-running; own cache line */
	_Atomic uint32_t *cons;		/* free-running; own cache line */
	uint8_t *slots;
	/* fixed */
	uint32_t size;			/* slots, a power of two */
	uint32_t frame;			/* packet bytes */
	uint32_t stride;		/* slot bytes */
	void *map;
	size_t map_len;
	/* producer-private */
	_Alignas(64) uint32_t p_head;
	uint32_t p_room_cons;		/* last cons seen */
	double p_idle;			/* share of the producer loop's time with no room */
	/* consumer-private */
	_Alignas(64) uint32_t c_tail;
	uint32_t c_prod;		/* last prod seen */
	uint64_t c_total;
	double c_idle;			/* share of the consumer loop's time with nothing */
	uint8_t *sink;			/* UVHB_BURST * stride bytes */
};

/** Set up a ring of @size slots of @frame-byte packets. 0 or negative errno. */
int uvhb_ceiling_init(struct uvhb_ceiling *c, uint32_t size, uint32_t frame);
void uvhb_ceiling_fini(struct uvhb_ceiling *c);

/** Producer: publish one batch if there is room. Returns packets published. */
unsigned int uvhb_ceiling_produce(struct uvhb_ceiling *c);
/** Consumer: take up to one batch, copy it out, publish. Returns packets taken. */
unsigned int uvhb_ceiling_consume(struct uvhb_ceiling *c);

/** uvhb_pair loops (arg: the struct uvhb_ceiling). */
struct uvhb_pair;
void uvhb_ceiling_producer_loop(void *arg, struct uvhb_pair *pair);
void uvhb_ceiling_consumer_loop(void *arg, struct uvhb_pair *pair);

#endif
