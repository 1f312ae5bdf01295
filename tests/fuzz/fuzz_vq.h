/* SPDX-License-Identifier: MIT */
/*
 * The device side of a virtqueue (engine/virtq.h) walking chains on
 * random guest memory: the body of fuzz_vq_split.c and fuzz_vq_packed.c,
 * which define FUZZ_VQ_PACKED to 0 or 1 and include this file.
 *
 * Guest memory is a 64 KiB area between two PROT_NONE guard pages, given
 * to a memory table as one region or two (adjacent in guest-physical
 * space, so chains cross from one into the other, or with a hole between
 * them). The input sets the queue up and fills the area:
 *
 *   u8  size selector (split: 1 << (v % 11); packed: 1 + v * 4 % 1024...)
 *   u8  flags: event_idx, indirect, in_order, strict_order,
 *       device_reads_only, dirty log, log_used, reverse completion
 *   u8  layout: 0 one region, 1 two adjacent, 2 two with a hole; bit 7:
 *       ring addresses are raw u64 (else offsets from the base)
 *   3 x u16/u64 ring addresses (desc, driver, device)
 *   u16 next_avail, u16 next_used, u8 wrap bits, u8 burst, u8 iov_max,
 *   u8 rounds
 *   the rest: the guest area's bytes (zero past the input's end)
 *
 * Then rounds of: pop a burst, check every iovec lies inside the area,
 * read every readable byte and write every writable one, push them back,
 * ask need_call / notify_enable / avail_pending; finally the base. A
 * broken ring must stay broken and pop nothing.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "memory.h"
#include "virtq.h"

#define AREA		(64u << 10)
#define GPA_BASE	0x10000ull
#define HOLE_GPA	0x80000ull	/* second region's gpa in the "hole" layout */
#define MAX_BURST	64u
#define MAX_IOV		512u

static uint8_t *area;
static struct uvh_memory *tables[3];
static uint8_t log_bits[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	long page = sysconf(_SC_PAGESIZE);
	uint8_t *m;

	(void)argc;
	(void)argv;
	fz_quiet_logs();
	m = mmap(NULL, AREA + 2 * (size_t)page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		abort();
	area = m + page;
	if (mprotect(area, AREA, PROT_READ | PROT_WRITE))
		abort();
	for (int i = 0; i < 3; i++) {
		tables[i] = uvh_memory_new(4);
		if (!tables[i])
			abort();
	}
	if (uvh_memory_add_host(tables[0], GPA_BASE, AREA, area) ||
	    uvh_memory_add_host(tables[1], GPA_BASE, AREA / 2, area) ||
	    uvh_memory_add_host(tables[1], GPA_BASE + AREA / 2, AREA / 2, area + AREA / 2) ||
	    uvh_memory_add_host(tables[2], GPA_BASE, AREA / 2, area) ||
	    uvh_memory_add_host(tables[2], HOLE_GPA, AREA / 2, area + AREA / 2))
		abort();
	return 0;
}

static void check_iov(const struct iovec *v)
{
	const uint8_t *b = v->iov_base;

	if (!v->iov_len)
		return;
	if (b < area || v->iov_len > AREA || b > area + AREA - v->iov_len) {
		fprintf(stderr, "fuzz_vq: iovec %p+%zu outside the guest area %p+%u\n",
			v->iov_base, v->iov_len, (void *)area, AREA);
		abort();
	}
}

static uint64_t ring_gpa(struct fz *in, bool raw)
{
	return raw ? fz_u64(in) : GPA_BASE + fz_u16(in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct uvh_vq_chain chains[MAX_BURST];
	static struct iovec iov[MAX_IOV];
	static struct uvh_vq_used used[MAX_BURST];
	struct fz in = { data, size };
	struct uvh_dirty_log log = { .bitmap = (_Atomic uint8_t *)log_bits,
				     .size = sizeof(log_bits) };
	struct uvh_vq_config cfg;
	struct uvh_vq vq;
	uint8_t sizesel = fz_u8(&in), flags = fz_u8(&in), layout = fz_u8(&in);
	uint8_t wraps, burst, iov_max, rounds;
	volatile uint8_t sink = 0;
	bool raw = layout & 0x80;

	if (!area)
		LLVMFuzzerInitialize(NULL, NULL);
	memset(&cfg, 0, sizeof(cfg));
	cfg.packed = FUZZ_VQ_PACKED;
	if (FUZZ_VQ_PACKED)
		cfg.size = (uint16_t)(1 + (sizesel * 37u) % 1024u);
	else
		cfg.size = (uint16_t)(1u << (sizesel % 11u));
	/* Now and then a size the queue must refuse. */
	if (sizesel == 0xff)
		cfg.size = FUZZ_VQ_PACKED ? 0 : 3;
	cfg.event_idx = flags & 1;
	cfg.indirect = flags & 2;
	cfg.in_order = flags & 4;
	cfg.strict_order = flags & 8;
	cfg.device_reads_only = flags & 16;
	cfg.desc_gpa = ring_gpa(&in, raw);
	cfg.driver_gpa = ring_gpa(&in, raw);
	cfg.device_gpa = ring_gpa(&in, raw);
	cfg.next_avail = fz_u16(&in);
	cfg.next_used = fz_u16(&in);
	wraps = fz_u8(&in);
	cfg.avail_wrap = wraps & 1;
	cfg.used_wrap = wraps & 2;
	cfg.log_used = flags & 64;
	cfg.log_used_gpa = cfg.device_gpa;
	burst = fz_u8(&in);
	iov_max = fz_u8(&in);
	rounds = fz_u8(&in) % 4 + 1;

	memset(area, 0, AREA);
	fz_take(&in, area, in.n < AREA ? in.n : AREA);

	memset(&vq, 0, sizeof(vq));
	if (uvh_vq_init(&vq, &cfg, tables[(layout & 3) % 3]) < 0) {
		if (uvh_vq_pop(&vq, chains, MAX_BURST, iov, MAX_IOV) > 0 && !uvh_vq_broken(&vq))
			abort();
		return 0;
	}
	if (flags & 32)
		uvh_vq_set_log(&vq, &log);

	for (unsigned int r = 0; r < rounds; r++) {
		unsigned int max = burst % MAX_BURST + 1;
		unsigned int imax = (unsigned int)iov_max * 2 % MAX_IOV + 1;
		bool was_broken = uvh_vq_broken(&vq);
		int n;

		(void)uvh_vq_avail_pending(&vq);
		n = uvh_vq_pop(&vq, chains, max, iov, imax);
		if (n < 0 || (unsigned int)n > max || (was_broken && n))
			abort();
		if (vq.error >= UVH_VQ_ERR_COUNT)
			abort();
		(void)uvh_vq_strerror(vq.error);
		for (int i = 0; i < n; i++) {
			const struct uvh_vq_chain *c = &chains[i];
			uint64_t out = 0, inl = 0;

			if (c->iov < iov || c->iov + c->nout + c->nin > iov + imax)
				abort();
			for (unsigned int k = 0; k < c->nout; k++) {
				const uint8_t *b = c->iov[k].iov_base;

				check_iov(&c->iov[k]);
				for (size_t j = 0; j < c->iov[k].iov_len; j += 61)
					sink ^= b[j];
				if (c->iov[k].iov_len)
					sink ^= b[c->iov[k].iov_len - 1];
				out += c->iov[k].iov_len;
			}
			for (unsigned int k = c->nout; k < (unsigned int)c->nout + c->nin; k++) {
				check_iov(&c->iov[k]);
				memset(c->iov[k].iov_base, 0xa5, c->iov[k].iov_len);
				inl += c->iov[k].iov_len;
			}
			if (out != c->out_len || inl != c->in_len)
				abort();
			used[i].id = c->id;
			used[i].ndesc = c->ndesc;
			used[i].len = c->in_len;
		}
		if (n > 1 && (flags & 128) && !cfg.in_order) {
			/* Completed out of order: the device may do that. */
			for (int i = 0; i < n / 2; i++) {
				struct uvh_vq_used t = used[i];

				used[i] = used[n - 1 - i];
				used[n - 1 - i] = t;
			}
		}
		if (n > 0)
			uvh_vq_push(&vq, used, (unsigned int)n);
		(void)uvh_vq_need_call(&vq);
		if (r & 1)
			uvh_vq_notify_disable(&vq);
		else
			(void)uvh_vq_notify_enable(&vq);
	}
	(void)uvh_vq_base(&vq);
	/* A new table under a live ring, as a memory update does. */
	(void)uvh_vq_set_memory(&vq, tables[(layout + 1) % 3]);
	if (!uvh_vq_broken(&vq))
		(void)uvh_vq_pop(&vq, chains, MAX_BURST, iov, MAX_IOV);
	(void)sink;
	return 0;
}
