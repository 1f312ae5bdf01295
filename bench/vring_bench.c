/* SPDX-License-Identifier: MIT */
/*
 * uvhost-vring-bench: virtqueue throughput between two cores, against the
 * ceiling of a bare shared-memory copy ring measured in the same run.
 *
 * Driver thread (core A, the guest's role): uvh_vq_driver fills TX chains
 * of one FRAME-byte buffer each (writing its first 64 bytes, as a driver
 * writes headers) with uvh_vq_driver_add_burst (--add single: one
 * uvh_vq_driver_add per chain), publishes bursts of 32 and reclaims used
 * chains when it runs short of room. Device thread (core B, the back-end): uvh_vq_pop
 * bursts of 32, copies each chain's bytes out into a local buffer (a sink
 * that reads the packet), uvh_vq_push the burst. Poll mode: notifications
 * disabled both ways, no kicks, no calls.
 *
 * Guest memory is a memfd: the driver maps it itself (its "guest RAM") and
 * the device side gets it through uvh_memory_add_fd, as a vhost-user
 * back-end would (or --mem host: uvh_memory_add_host on the driver's map).
 *
 * Cases run alternately, rep after rep (ceiling, split, packed for each
 * frame size), each bracketed by a cache-line ping-pong between the two
 * cores: a run where the host placed the vCPUs far apart is flagged, and
 * so is one where either side got less than its whole core (other jobs on
 * a 2-vCPU machine); medians use the clean runs when there are any (see
 * bench/README.md).
 *
 * --inline runs the driver and device steps alternately in one thread:
 * no cache-line transfers, for instruction-count profiling (callgrind).
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "c2c.h"
#include "ceiling.h"
#include "log.h"
#include "memory.h"
#include "virtq.h"

#define MAX_SIZES	8
#define MAX_REPS	1000
#define IOV_CAP		(UVHB_BURST * 4)
#define GPA_BASE	0x40000000ull	/* not 0: a gpa/hva mix-up shows */

enum vb_case { VB_CEILING, VB_SPLIT, VB_PACKED, VB_NCASES };
static const char *const case_name[VB_NCASES] = { "ceiling", "split", "packed" };

struct vb_opts {
	int cpu[2];
	double secs, warmup;
	unsigned int reps;
	uint32_t sizes[MAX_SIZES];
	unsigned int nsizes;
	unsigned int cases;		/* bit per enum vb_case */
	uint32_t qsize;
	double c2c_max;
	double min_share;
	double idle_wait, idle_max;	/* wait up to idle_wait s for < idle_max busy cores */
	unsigned int retries;		/* re-runs of a far or contended run */
	unsigned long c2c_rounds;
	bool json, inline_mode, verify, mem_host;
	bool add_single;		/* uvh_vq_driver_add per chain, not add_burst */
};

/* ---- the vring case -------------------------------------------------------- */

struct vb_vring {
	/* fixed, read by both sides */
	uint32_t frame, stride, qsize;
	bool verify, add_single;
	uint8_t *map;			/* the driver's view of guest memory */
	size_t map_len;
	uint8_t *bufs;			/* driver's pointer to buffer 0 */
	uint64_t bufs_gpa;
	struct uvh_memory *mem;
	/* driver-private */
	_Alignas(64) struct uvh_vq_driver drv;
	uint16_t *fifo;			/* free buffer indexes */
	struct uvh_vq_buf *bufdesc;	/* per buffer: its gpa and FRAME */
	void **tokvals;			/* per buffer: its token (index + 1) */
	uint32_t f_head, f_tail;
	void **tokens;
	uint32_t *lens;
	uint8_t seq;
	int drv_err;
	double drv_idle;		/* share of the driver loop's time with no room */
	/* device-private */
	_Alignas(64) struct uvh_vq vq;
	struct uvh_vq_chain ch[UVHB_BURST];
	struct iovec iov[IOV_CAP];
	struct uvh_vq_used used[UVHB_BURST];
	uint8_t *sink;
	uint8_t expect;
	uint64_t total;
	uint64_t bad;			/* chains of the wrong shape or content */
	double dev_idle;		/* share of the device loop's time with nothing */
};

static void vb_vring_fini(struct vb_vring *v)
{
	if (v->drv.tokens)
		uvh_vq_driver_free(&v->drv);
	if (v->mem)
		uvh_memory_release(v->mem, NULL);
	if (v->map && v->map != MAP_FAILED)
		munmap(v->map, v->map_len);
	free(v->fifo);
	free(v->bufdesc);
	free(v->tokvals);
	free(v->tokens);
	free(v->lens);
	free(v->sink);
}

static int vb_vring_init(struct vb_vring *v, const struct vb_opts *o, bool packed, uint32_t frame)
{
	struct uvh_mem_region reg;
	struct uvh_vq_config cfg;
	size_t ring_bytes;
	int fd, rc;

	memset(v, 0, sizeof(*v));
	v->frame = frame;
	v->qsize = o->qsize;
	v->verify = o->verify;
	v->add_single = o->add_single;
	v->stride = frame <= 2048 ? 2048 : (frame + 63) & ~63u;
	ring_bytes = (uvh_vq_driver_area_bytes((uint16_t)o->qsize, packed) + 4095) & ~(size_t)4095;
	v->map_len = ring_bytes + (size_t)o->qsize * v->stride;
	v->map_len = (v->map_len + 4095) & ~(size_t)4095;

	fd = memfd_create("uvhost-vring-bench", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)v->map_len) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	v->map = mmap(NULL, v->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (v->map == MAP_FAILED) {
		rc = -errno;
		close(fd);
		return rc;
	}
	memset(v->map, 0, v->map_len);	/* fault the driver's view in */
	v->bufs = v->map + ring_bytes;
	v->bufs_gpa = GPA_BASE + ring_bytes;

	v->mem = uvh_memory_new(0);
	if (!v->mem) {
		close(fd);
		return -ENOMEM;
	}
	if (o->mem_host) {
		close(fd);
		rc = uvh_memory_add_host(v->mem, GPA_BASE, v->map_len, v->map);
	} else {
		reg.guest_phys_addr = GPA_BASE;
		reg.memory_size = v->map_len;
		reg.userspace_addr = (uint64_t)(uintptr_t)v->map;
		reg.mmap_offset = 0;
		rc = uvh_memory_add_fd(v->mem, &reg, fd);	/* consumes fd */
	}
	if (rc)
		return rc;
	if (!o->mem_host) {
		/* fault the device's view in too: no page faults while measuring */
		const struct uvh_memory_region *r = uvh_memory_find_gpa(v->mem, GPA_BASE);
		volatile uint8_t sum = 0;

		if (!r)
			return -EFAULT;
		for (size_t off = 0; off < v->map_len; off += 4096)
			sum += r->hva[off];
		(void)sum;
	}

	rc = uvh_vq_driver_init(&v->drv, (uint16_t)o->qsize, packed, false, v->map, GPA_BASE);
	if (rc)
		return rc;
	memset(&cfg, 0, sizeof(cfg));
	uvh_vq_driver_config(&v->drv, &cfg);
	rc = uvh_vq_init(&v->vq, &cfg, v->mem);
	if (rc)
		return rc;
	/* poll mode on both sides */
	uvh_vq_notify_disable(&v->vq);
	uvh_vq_driver_enable_cb(&v->drv, false);

	v->fifo = calloc(o->qsize, sizeof(*v->fifo));
	v->bufdesc = calloc(o->qsize, sizeof(*v->bufdesc));
	v->tokvals = calloc(o->qsize, sizeof(*v->tokvals));
	v->tokens = calloc(o->qsize, sizeof(*v->tokens));
	v->lens = calloc(o->qsize, sizeof(*v->lens));
	v->sink = aligned_alloc(64, (size_t)UVHB_BURST * v->stride);
	if (!v->fifo || !v->bufdesc || !v->tokvals || !v->tokens || !v->lens || !v->sink)
		return -ENOMEM;
	memset(v->sink, 0, (size_t)UVHB_BURST * v->stride);
	for (uint32_t i = 0; i < o->qsize; i++) {
		v->fifo[i] = (uint16_t)i;
		v->bufdesc[i].gpa = v->bufs_gpa + (uint64_t)i * v->stride;
		v->bufdesc[i].len = frame;
		v->tokvals[i] = (void *)(uintptr_t)(i + 1u);
	}
	v->f_tail = o->qsize;
	return 0;
}

/* Driver burst with one uvh_vq_driver_add per chain (--add single). */
static unsigned int vb_driver_add_single(struct vb_vring *v)
{
	struct uvh_vq_driver *d = &v->drv;
	uint32_t mask = v->qsize - 1, hdr = v->frame < 64 ? v->frame : 64;
	uint32_t head = v->f_head;
	uint8_t seq = v->seq;

	for (unsigned int i = 0; i < UVHB_BURST; i++) {
		uint16_t b = v->fifo[head++ & mask];
		uint8_t *p = v->bufs + (size_t)b * v->stride;
		int rc;

		if (hdr == 64)
			memset(p, seq++, 64);
		else
			memset(p, seq++, hdr);
		rc = uvh_vq_driver_add(d, &v->bufdesc[b], 1, 0, v->tokvals[b]);
		if (rc) {
			v->drv_err = rc;
			return 0;
		}
	}
	v->f_head = head;
	v->seq = seq;
	uvh_vq_driver_publish(d);
	return UVHB_BURST;
}

/* Driver: reclaim when short of room, then add and publish one burst. */
static unsigned int vb_driver_step(struct vb_vring *v)
{
	struct uvh_vq_driver *d = &v->drv;
	uint32_t mask = v->qsize - 1, hdr = v->frame < 64 ? v->frame : 64;

	if (uvh_vq_driver_free_slots(d) < UVHB_BURST) {
		unsigned int n = uvh_vq_driver_get_used(d, v->tokens, v->lens, v->qsize);

		for (unsigned int i = 0; i < n; i++)
			v->fifo[v->f_tail++ & mask] = (uint16_t)((uintptr_t)v->tokens[i] - 1);
		if (uvh_vq_driver_free_slots(d) < UVHB_BURST)
			return 0;
	}
	if (v->add_single)
		return vb_driver_add_single(v);
	/* locals, not fields: they stay in registers across the calls */
	uint32_t head = v->f_head;
	uint8_t seq = v->seq;

	/* Buffers come back in FIFO order, so a burst is one or two runs of
	 * consecutive buffers (prebuilt descriptors and tokens): one
	 * add_burst per run, one publish per burst. */
	for (unsigned int done = 0; done < UVHB_BURST;) {
		uint16_t b0 = v->fifo[head & mask];
		unsigned int run = 1;
		int rc;

		while (done + run < UVHB_BURST && v->fifo[(head + run) & mask] == b0 + run)
			run++;
		for (unsigned int k = 0; k < run; k++) {
			uint8_t *p = v->bufs + (size_t)(b0 + k) * v->stride;

			/* a constant 64 lets the compiler emit plain stores */
			if (hdr == 64)
				memset(p, seq++, 64);
			else
				memset(p, seq++, hdr);
		}
		rc = uvh_vq_driver_add_burst(d, &v->bufdesc[b0], run, false, &v->tokvals[b0]);
		if (rc) {
			v->drv_err = rc;
			return 0;
		}
		head += run;
		done += run;
	}
	v->f_head = head;
	v->seq = seq;
	uvh_vq_driver_publish(d);
	return UVHB_BURST;
}

/* Device: pop a burst, copy every chain out, push the burst. */
static unsigned int vb_device_step(struct vb_vring *v)
{
	int n = uvh_vq_pop(&v->vq, v->ch, UVHB_BURST, v->iov, IOV_CAP);

	if (n <= 0)
		return 0;
	for (int i = 0; i < n; i++) {
		const struct uvh_vq_chain *c = &v->ch[i];
		uint8_t *dst = v->sink + (size_t)i * v->stride;

		if (c->out_len != v->frame || c->nin) {
			v->bad++;
		} else {
			for (unsigned int j = 0; j < c->nout; j++) {
				memcpy(dst, c->iov[j].iov_base, c->iov[j].iov_len);
				dst += c->iov[j].iov_len;
			}
			if (v->verify) {
				dst = v->sink + (size_t)i * v->stride;
				if (dst[0] != v->expect ||
				    dst[(v->frame < 64 ? v->frame : 64) - 1] != v->expect)
					v->bad++;
				v->expect++;
			}
		}
		v->used[i].id = c->id;
		v->used[i].ndesc = c->ndesc;
		v->used[i].len = 0;
	}
	uvh_vq_push(&v->vq, v->used, (unsigned int)n);
	v->total += (unsigned int)n;
	return (unsigned int)n;
}

static void vb_driver_loop(void *arg, struct uvhb_pair *pair)
{
	struct vb_vring *v = arg;
	struct uvhb_idle idle;

	uvhb_idle_init(&idle);
	while (!uvhb_pair_stopped(pair) && !v->drv_err) {
		unsigned int n = vb_driver_step(v);

		uvhb_idle_mark(&idle, n);
		if (!n)
			uvhb_relax();
	}
	v->drv_idle = uvhb_idle_share(&idle);
}

static void vb_device_loop(void *arg, struct uvhb_pair *pair)
{
	struct vb_vring *v = arg;
	struct uvhb_idle idle;

	uvhb_idle_init(&idle);
	while (!uvhb_pair_stopped(pair)) {
		unsigned int n = vb_device_step(v);

		uvhb_idle_mark(&idle, n);
		if (n) {
			uvhb_pair_count(pair, v->total);
		} else {
			if (uvh_vq_broken(&v->vq))
				break;
			uvhb_relax();
		}
	}
	v->dev_idle = uvhb_idle_share(&idle);
}

/* ---- one run ----------------------------------------------------------------- */

struct vb_run {
	unsigned int rep;
	enum vb_case kase;
	uint32_t size;
	bool ok;
	char err[96];
	double mpps, gbps, ratio;	/* ratio to the same rep's ceiling (NAN if none) */
	double c2c_before, c2c_after;
	bool far;			/* c2c before or after above --c2c-max */
	bool contended;			/* a side got less than --min-share of its core */
	bool dirty;			/* far or contended: left out when clean runs exist */
	bool ceil_dirty;		/* the ceiling that @ratio is relative to was */
	double share[2];		/* CPU share of producer and consumer */
	/* share of each side's poll iterations that found nothing to do:
	 * the side that is rarely idle is the one that limits the rate */
	double prod_idle, cons_idle;
	unsigned int tries;
	uint64_t packets;		/* moved in the measured interval */
	double busy_before;		/* other tasks' load (cores) just before */
};

/* Alternate driver and device steps in this thread for @secs. */
static uint64_t vb_inline(unsigned int (*produce)(void *), unsigned int (*consume)(void *),
			  void *arg, double secs, double *elapsed)
{
	uint64_t t0 = uvhb_now_ns(), end = t0 + (uint64_t)(secs * 1e9), now, total = 0;
	unsigned int i = 0;

	do {
		produce(arg);
		total += consume(arg);
		now = (++i & 63) ? 0 : uvhb_now_ns();
	} while (!now || now < end);
	*elapsed = (double)(now - t0) / 1e9;
	return total;
}

static unsigned int ceil_produce(void *a) { return uvhb_ceiling_produce(a); }
static unsigned int ceil_consume(void *a) { return uvhb_ceiling_consume(a); }
static unsigned int vring_produce(void *a) { return vb_driver_step(a); }
static unsigned int vring_consume(void *a) { return vb_device_step(a); }

static void vb_measure(const struct vb_opts *o, struct vb_run *r)
{
	struct uvhb_pair *pair;
	void *state;
	uint64_t packets = 0;
	double elapsed = 0;
	int rc;

	r->ok = false;
	r->mpps = r->gbps = r->ratio = NAN;
	r->prod_idle = r->cons_idle = NAN;
	pair = aligned_alloc(64, sizeof(*pair));
	state = aligned_alloc(64, r->kase == VB_CEILING ? sizeof(struct uvhb_ceiling)
							 : sizeof(struct vb_vring));
	if (!pair || !state) {
		snprintf(r->err, sizeof(r->err), "out of memory");
		goto out_free;
	}
	memset(pair, 0, sizeof(*pair));
	if (r->kase == VB_CEILING)
		rc = uvhb_ceiling_init(state, o->qsize, r->size);
	else
		rc = vb_vring_init(state, o, r->kase == VB_PACKED, r->size);
	if (rc) {
		snprintf(r->err, sizeof(r->err), "setup: %s", strerror(-rc));
		goto out_fini;
	}

	if (o->inline_mode) {
		rc = uvhb_pin_self(o->cpu[0]);
		if (!rc && r->kase == VB_CEILING)
			packets = vb_inline(ceil_produce, ceil_consume, state, o->secs, &elapsed);
		else if (!rc)
			packets = vb_inline(vring_produce, vring_consume, state, o->secs, &elapsed);
	} else {
		pair->cpu[0] = o->cpu[0];
		pair->cpu[1] = o->cpu[1];
		pair->arg = state;
		pair->warmup_s = o->warmup;
		pair->secs = o->secs;
		if (r->kase == VB_CEILING) {
			pair->fn[0] = uvhb_ceiling_producer_loop;
			pair->fn[1] = uvhb_ceiling_consumer_loop;
		} else {
			pair->fn[0] = vb_driver_loop;
			pair->fn[1] = vb_device_loop;
		}
		r->c2c_before = uvhb_c2c_ns(o->cpu[0], o->cpu[1], o->c2c_rounds);
		rc = uvhb_pair_run(pair);
		r->c2c_after = uvhb_c2c_ns(o->cpu[0], o->cpu[1], o->c2c_rounds);
		r->far = !(r->c2c_before <= o->c2c_max && r->c2c_after <= o->c2c_max);
		r->share[0] = pair->cpu_share[0];
		r->share[1] = pair->cpu_share[1];
		r->contended = r->share[0] < o->min_share || r->share[1] < o->min_share;
		r->dirty = r->far || r->contended;
		packets = pair->packets;
		elapsed = pair->elapsed_s;
	}
	if (rc) {
		snprintf(r->err, sizeof(r->err), "run: %s", strerror(-rc));
		goto out_fini;
	}
	if (r->kase == VB_CEILING && !o->inline_mode) {
		struct uvhb_ceiling *c = state;

		r->prod_idle = c->p_idle;
		r->cons_idle = c->c_idle;
	}
	if (r->kase != VB_CEILING) {
		struct vb_vring *v = state;

		if (!o->inline_mode) {
			r->prod_idle = v->drv_idle;
			r->cons_idle = v->dev_idle;
		}
		if (uvh_vq_broken(&v->vq)) {
			snprintf(r->err, sizeof(r->err), "ring broken: %s",
				 uvh_vq_strerror(v->vq.error));
			goto out_fini;
		}
		if (v->drv_err) {
			snprintf(r->err, sizeof(r->err), "driver add: %s", strerror(-v->drv_err));
			goto out_fini;
		}
		if (v->bad) {
			snprintf(r->err, sizeof(r->err), "%llu chains of the wrong length/content",
				 (unsigned long long)v->bad);
			goto out_fini;
		}
	}
	if (!packets || elapsed <= 0) {
		snprintf(r->err, sizeof(r->err), "no packets moved");
		goto out_fini;
	}
	r->ok = true;
	r->packets = packets;
	r->mpps = (double)packets / elapsed / 1e6;
	r->gbps = r->mpps * r->size * 8 / 1e3;
out_fini:
	if (r->kase == VB_CEILING)
		uvhb_ceiling_fini(state);
	else
		vb_vring_fini(state);
out_free:
	free(state);
	free(pair);
}

/* Busy cores over @window_s from /proc/stat (all tasks; ours sleep meanwhile). */
static double machine_busy(double window_s)
{
	unsigned long long v[2][10];
	double total = 0, idle = 0;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	for (int i = 0; i < 2; i++) {
		FILE *f = fopen("/proc/stat", "r");
		int n;

		if (!f)
			return NAN;
		memset(v[i], 0, sizeof(v[i]));
		n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[i][0],
			   &v[i][1], &v[i][2], &v[i][3], &v[i][4], &v[i][5], &v[i][6], &v[i][7],
			   &v[i][8], &v[i][9]);
		fclose(f);
		if (n < 5)
			return NAN;
		if (!i) {
			struct timespec ts = { 0, (long)(window_s * 1e9) };

			nanosleep(&ts, NULL);
		}
	}
	/* user nice system idle iowait irq softirq steal (guest* are in user) */
	for (int j = 0; j < 8; j++)
		total += (double)(v[1][j] - v[0][j]);
	idle = (double)(v[1][3] - v[0][3]) + (double)(v[1][4] - v[0][4]);
	if (total <= 0)
		return NAN;
	return (total - idle) / total * (double)(ncpu > 0 ? ncpu : 1);
}

/* Wait (up to --idle-wait) until other tasks use less than --idle-max cores. */
static double wait_quiet(const struct vb_opts *o)
{
	uint64_t end = uvhb_now_ns() + (uint64_t)(o->idle_wait * 1e9);
	double busy;

	if (o->idle_wait <= 0)
		return NAN;
	do {
		busy = machine_busy(0.1);
	} while (!(busy <= o->idle_max) && uvhb_now_ns() < end);
	return busy;
}

/* ---- statistics and output ----------------------------------------------------- */

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *x, unsigned int n)
{
	if (!n)
		return NAN;
	qsort(x, n, sizeof(*x), cmp_d);
	return n & 1 ? x[n / 2] : (x[n / 2 - 1] + x[n / 2]) / 2;
}

struct vb_summary {
	enum vb_case kase;
	uint32_t size;
	unsigned int runs, clean, used;	/* ok runs, ok clean runs, runs in the medians */
	bool clean_basis;
	double mpps, gbps, ratio, paired;
};

/* Medians for (@kase, @size): over clean runs (close placement, cores not
 * shared) when this case and its ceiling both have some, else over every
 * successful run (flagged). */
static void vb_summarise(const struct vb_run *runs, unsigned int nruns, enum vb_case kase,
			 uint32_t size, bool inline_mode, struct vb_summary *s)
{
	double *m = calloc(nruns + 1, sizeof(double));
	double *c = calloc(nruns + 1, sizeof(double));
	double *p = calloc(nruns + 1, sizeof(double));
	unsigned int nm = 0, nc = 0, np = 0, ceil_clean = 0, ceil_runs = 0;

	memset(s, 0, sizeof(*s));
	s->kase = kase;
	s->size = size;
	s->mpps = s->gbps = s->ratio = s->paired = NAN;
	if (!m || !c || !p)
		goto out;
	for (unsigned int i = 0; i < nruns; i++) {
		if (runs[i].size != size || !runs[i].ok)
			continue;
		if (runs[i].kase == kase) {
			s->runs++;
			s->clean += !runs[i].dirty;
		}
		if (runs[i].kase == VB_CEILING) {
			ceil_runs++;
			ceil_clean += !runs[i].dirty;
		}
	}
	/* no ceiling measured at all: nothing to pair, clean runs suffice */
	s->clean_basis = !inline_mode && s->clean &&
			 (kase == VB_CEILING || ceil_clean || !ceil_runs);
	for (unsigned int i = 0; i < nruns; i++) {
		const struct vb_run *r = &runs[i];

		if (r->size != size || !r->ok || (s->clean_basis && r->dirty))
			continue;
		if (r->kase == kase) {
			m[nm++] = r->mpps;
			/* paired: this rep's ceiling must be in the basis too */
			if (!isnan(r->ratio) && !(s->clean_basis && r->ceil_dirty))
				p[np++] = r->ratio;
		}
		if (r->kase == VB_CEILING)
			c[nc++] = r->mpps;
	}
	s->used = nm;
	s->mpps = median(m, nm);
	s->gbps = s->mpps * size * 8 / 1e3;
	if (kase != VB_CEILING) {
		s->ratio = s->mpps / median(c, nc);
		s->paired = median(p, np);
	}
out:
	free(m);
	free(c);
	free(p);
}

static void json_num(FILE *f, const char *key, double v, bool comma)
{
	if (isnan(v) || isinf(v))
		fprintf(f, "\"%s\":null%s", key, comma ? "," : "");
	else
		fprintf(f, "\"%s\":%.4f%s", key, v, comma ? "," : "");
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: uvhost-vring-bench [options]\n"
		"  --cpus A,B        driver (A) and device (B) cores (default 0,1)\n"
		"  --seconds S       measured seconds per run (default 1)\n"
		"  --warmup S        unmeasured seconds before each run (default 0.2)\n"
		"  --reps N          alternating repetitions (default 3)\n"
		"  --sizes L         frame sizes, comma separated (default 64,1518)\n"
		"  --cases L         of ceiling,split,packed (default all three)\n"
		"  --queue N         queue size, a power of two (default 256)\n"
		"  --mem fd|host     device sees guest memory through add_fd (default) or add_host\n"
		"  --c2c-max NS      one-way ping-pong latency above which a run is 'far' (default %.0f)\n"
		"  --c2c-rounds N    ping-pong round trips per sample (default 20000)\n"
		"  --min-share F     a side with less CPU share than this was contended (default 0.97)\n"
		"  --retries N       re-run a far or contended run up to N times (default 2)\n"
		"  --idle-wait S     before a run, wait up to S s for the machine to go quiet (default 2)\n"
		"  --verify          device checks each packet's header bytes (slower)\n"
		"  --add burst|single  driver adds with uvh_vq_driver_add_burst (default) or\n"
		"                    uvh_vq_driver_add per chain\n"
		"  --inline          driver and device alternate in one thread (profiling)\n"
		"  --json            JSON on stdout (the table goes to stderr)\n",
		UVHB_C2C_FAR_NS);
}

static int parse_list(const char *s, uint32_t *out, unsigned int max, unsigned int *n)
{
	char *end;

	*n = 0;
	while (*s) {
		unsigned long v = strtoul(s, &end, 0);

		if (end == s || *n == max || !v || v > 65536)
			return -EINVAL;
		out[(*n)++] = (uint32_t)v;
		s = *end == ',' ? end + 1 : end;
		if (*end && *end != ',')
			return -EINVAL;
	}
	return *n ? 0 : -EINVAL;
}

static int parse_cases(const char *s, unsigned int *mask)
{
	char buf[128], *tok, *save;

	*mask = 0;
	snprintf(buf, sizeof(buf), "%s", s);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		int k;

		for (k = 0; k < VB_NCASES; k++)
			if (!strcmp(tok, case_name[k]))
				break;
		if (k == VB_NCASES)
			return -EINVAL;
		*mask |= 1u << k;
	}
	return *mask ? 0 : -EINVAL;
}

static int parse_opts(int argc, char **argv, struct vb_opts *o)
{
	static const struct option lo[] = {
		{ "cpus", required_argument, NULL, 'c' },
		{ "seconds", required_argument, NULL, 's' },
		{ "warmup", required_argument, NULL, 'w' },
		{ "reps", required_argument, NULL, 'r' },
		{ "sizes", required_argument, NULL, 'z' },
		{ "cases", required_argument, NULL, 'k' },
		{ "queue", required_argument, NULL, 'q' },
		{ "mem", required_argument, NULL, 'm' },
		{ "c2c-max", required_argument, NULL, 'M' },
		{ "c2c-rounds", required_argument, NULL, 'R' },
		{ "min-share", required_argument, NULL, 'S' },
		{ "retries", required_argument, NULL, 'T' },
		{ "idle-wait", required_argument, NULL, 'W' },
		{ "verify", no_argument, NULL, 'V' },
		{ "add", required_argument, NULL, 'A' },
		{ "inline", no_argument, NULL, 'I' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	*o = (struct vb_opts){
		.cpu = { 0, 1 }, .secs = 1.0, .warmup = 0.2, .reps = 3,
		.sizes = { 64, 1518 }, .nsizes = 2,
		.cases = (1u << VB_CEILING) | (1u << VB_SPLIT) | (1u << VB_PACKED),
		.qsize = 256, .c2c_max = UVHB_C2C_FAR_NS, .c2c_rounds = 20000, .min_share = 0.97,
		.idle_wait = 2.0, .idle_max = 0.2, .retries = 2,
	};
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'c':
			if (sscanf(optarg, "%d,%d", &o->cpu[0], &o->cpu[1]) != 2 ||
			    o->cpu[0] < 0 || o->cpu[1] < 0)
				return -EINVAL;
			break;
		case 's':
			o->secs = atof(optarg);
			if (!(o->secs > 0 && o->secs <= 3600))
				return -EINVAL;
			break;
		case 'w':
			o->warmup = atof(optarg);
			if (!(o->warmup >= 0 && o->warmup <= 60))
				return -EINVAL;
			break;
		case 'r':
			o->reps = (unsigned int)strtoul(optarg, NULL, 0);
			if (!o->reps || o->reps > MAX_REPS)
				return -EINVAL;
			break;
		case 'z':
			if (parse_list(optarg, o->sizes, MAX_SIZES, &o->nsizes))
				return -EINVAL;
			break;
		case 'k':
			if (parse_cases(optarg, &o->cases))
				return -EINVAL;
			break;
		case 'q':
			o->qsize = (uint32_t)strtoul(optarg, NULL, 0);
			if (o->qsize < UVHB_BURST || o->qsize > UVH_VRING_MAX_SIZE ||
			    (o->qsize & (o->qsize - 1)))
				return -EINVAL;
			break;
		case 'm':
			if (!strcmp(optarg, "host"))
				o->mem_host = true;
			else if (strcmp(optarg, "fd"))
				return -EINVAL;
			break;
		case 'M':
			o->c2c_max = atof(optarg);
			if (!(o->c2c_max > 0))
				return -EINVAL;
			break;
		case 'R':
			o->c2c_rounds = strtoul(optarg, NULL, 0);
			if (!o->c2c_rounds || o->c2c_rounds > 100000000ul)
				return -EINVAL;
			break;
		case 'S':
			o->min_share = atof(optarg);
			if (!(o->min_share >= 0 && o->min_share <= 1))
				return -EINVAL;
			break;
		case 'T':
			o->retries = (unsigned int)strtoul(optarg, NULL, 0);
			if (o->retries > 100)
				return -EINVAL;
			break;
		case 'W':
			o->idle_wait = atof(optarg);
			if (!(o->idle_wait >= 0 && o->idle_wait <= 3600))
				return -EINVAL;
			break;
		case 'V':
			o->verify = true;
			break;
		case 'A':
			if (!strcmp(optarg, "single"))
				o->add_single = true;
			else if (strcmp(optarg, "burst"))
				return -EINVAL;
			break;
		case 'I':
			o->inline_mode = true;
			break;
		case 'j':
			o->json = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			return -EINVAL;
		}
	}
	if (optind != argc)
		return -EINVAL;
	return 0;
}

static void print_c2c(FILE *f, double ns)
{
	if (ns < 0)
		fprintf(f, "%6s", "?");
	else
		fprintf(f, "%6.1f", ns);
}

int main(int argc, char **argv)
{
	struct vb_opts o;
	struct vb_run *runs;
	struct vb_summary sum[VB_NCASES * MAX_SIZES];
	unsigned int nruns = 0, nsum = 0, failed = 0, far = 0, contended = 0;
	FILE *tab;
	int rc = 0;

	if (parse_opts(argc, argv, &o)) {
		usage(stderr);
		return 2;
	}
	tab = o.json ? stderr : stdout;
	uvh_log_set_level(UVH_LOG_WARN);
	runs = calloc((size_t)o.reps * o.nsizes * VB_NCASES, sizeof(*runs));
	if (!runs)
		return 1;

	fprintf(tab, "uvhost-vring-bench: %s, cpus %d,%d, queue %u, burst %u, %.2f s x %u reps, "
		"guest memory via %s, driver %s, far above %.0f ns\n"
		"(idle%% = share of each side's loop time that found nothing to do: the busy side limits)\n",
		o.inline_mode ? "INLINE (one thread)" : "two threads", o.cpu[0], o.cpu[1], o.qsize,
		UVHB_BURST, o.secs, o.reps, o.mem_host ? "add_host" : "memfd + add_fd",
		o.add_single ? "add per chain" : "add_burst", o.c2c_max);
	fprintf(tab, "%3s %-8s %5s %9s %9s %6s %11s %13s  %s\n", "rep", "case", "size", "Mpps",
		"Gbit/s", "ratio", "idle% p/c", "c2c ns b/a", "placement");
	for (unsigned int rep = 1; rep <= o.reps; rep++) {
		for (unsigned int si = 0; si < o.nsizes; si++) {
			double ceil_mpps = NAN;
			bool ceil_dirty = true;

			for (int k = 0; k < VB_NCASES; k++) {
				struct vb_run *r = &runs[nruns];

				if (!(o.cases & (1u << k)))
					continue;
				for (unsigned int t = 0;; t++) {
					double busy = wait_quiet(&o);

					memset(r, 0, sizeof(*r));
					r->rep = rep;
					r->kase = (enum vb_case)k;
					r->size = o.sizes[si];
					r->tries = t + 1;
					r->busy_before = busy;
					vb_measure(&o, r);
					if (!r->ok || !r->dirty || t >= o.retries || o.inline_mode)
						break;
					fprintf(tab, "%3u %-8s %5u %9.2f  (discarded: %s%s, machine busy %.2f cores before; retrying)\n",
						rep, case_name[k], r->size, r->mpps, r->far ? "far" : "",
						r->contended ? " contended" : "", busy);
				}
				nruns++;
				if (k == VB_CEILING && r->ok) {
					ceil_mpps = r->mpps;
					ceil_dirty = r->dirty;
				}
				if (k != VB_CEILING && r->ok) {
					r->ratio = r->mpps / ceil_mpps;
					r->ceil_dirty = ceil_dirty;
				}
				fprintf(tab, "%3u %-8s %5u ", rep, case_name[k], r->size);
				if (r->ok)
					fprintf(tab, "%9.2f %9.2f ", r->mpps, r->gbps);
				else
					fprintf(tab, "%9s %9s ", "FAILED", "-");
				if (isnan(r->ratio))
					fprintf(tab, "%6s ", "-");
				else
					fprintf(tab, "%6.3f ", r->ratio);
				if (isnan(r->prod_idle) || isnan(r->cons_idle))
					fprintf(tab, "%11s ", "-");
				else
					fprintf(tab, "%5.1f/%5.1f ", 100 * r->prod_idle,
						100 * r->cons_idle);
				if (o.inline_mode) {
					fprintf(tab, "%13s  -", "-");
				} else {
					print_c2c(tab, r->c2c_before);
					fputc('/', tab);
					print_c2c(tab, r->c2c_after);
					fprintf(tab, "  %s", r->far ? "FAR" : "close");
					if (r->contended)
						fprintf(tab, " CONTENDED (cpu %.2f/%.2f)",
							r->share[0], r->share[1]);
				}
				if (!r->ok)
					fprintf(tab, "  [%s]", r->err);
				fputc('\n', tab);
				fflush(tab);
				failed += !r->ok;
				far += r->ok && r->far;
				contended += r->ok && r->contended;
			}
		}
	}

	fprintf(tab, "\nsummary: medians; ratio = median / median of the ceiling (same size), "
		"paired = median of per-rep ratios\n");
	fprintf(tab, "%-8s %5s %9s %9s %7s %7s %5s %6s  %s\n", "case", "size", "Mpps", "Gbit/s",
		"ratio", "paired", "runs", "clean", "basis");
	for (unsigned int si = 0; si < o.nsizes; si++) {
		for (int k = 0; k < VB_NCASES; k++) {
			struct vb_summary *s = &sum[nsum];

			if (!(o.cases & (1u << k)))
				continue;
			vb_summarise(runs, nruns, (enum vb_case)k, o.sizes[si], o.inline_mode, s);
			nsum++;
			fprintf(tab, "%-8s %5u %9.2f %9.2f ", case_name[k], s->size, s->mpps, s->gbps);
			if (isnan(s->ratio))
				fprintf(tab, "%7s %7s ", "-", "-");
			else
				fprintf(tab, "%7.3f %7.3f ", s->ratio, s->paired);
			fprintf(tab, "%5u %6u  %s\n", s->runs, s->clean,
				o.inline_mode ? "inline" :
				s->clean_basis ? "clean runs" : "ALL runs (no clean pair: far or contended)");
		}
	}
	for (unsigned int i = 0; i < nsum; i++) {
		if (sum[i].kase == VB_SPLIT && sum[i].size == 64 && !isnan(sum[i].ratio))
			fprintf(tab, "target: split 64 B >= 0.60 of the ceiling: %.3f %s%s\n",
				sum[i].ratio, sum[i].ratio >= 0.6 ? "MET" : "NOT MET",
				o.inline_mode ? " (inline mode: not a throughput comparison)" :
				sum[i].clean_basis ? "" : " (unreliable: no clean runs)");
	}
	if (far)
		fprintf(tab, "note: %u run(s) had the vCPUs placed far (c2c > %.0f ns)\n", far,
			o.c2c_max);
	if (contended)
		fprintf(tab, "note: %u run(s) shared a core with another task (cpu share < %.2f)\n",
			contended, o.min_share);

	if (o.json) {
		printf("{\"cpus\":[%d,%d],\"queue\":%u,\"burst\":%u,\"seconds\":%.3f,\"reps\":%u,"
		       "\"inline\":%s,\"mem\":\"%s\",\"c2c_max_ns\":%.1f,\"runs\":[",
		       o.cpu[0], o.cpu[1], o.qsize, UVHB_BURST, o.secs, o.reps,
		       o.inline_mode ? "true" : "false", o.mem_host ? "host" : "fd", o.c2c_max);
		for (unsigned int i = 0; i < nruns; i++) {
			const struct vb_run *r = &runs[i];

			printf("%s{\"rep\":%u,\"case\":\"%s\",\"size\":%u,\"ok\":%s,", i ? "," : "",
			       r->rep, case_name[r->kase], r->size, r->ok ? "true" : "false");
			printf("\"packets\":%llu,\"tries\":%u,", (unsigned long long)r->packets,
			       r->tries);
			json_num(stdout, "busy_cores_before", r->busy_before, true);
			json_num(stdout, "mpps", r->mpps, true);
			json_num(stdout, "gbps", r->gbps, true);
			json_num(stdout, "ratio", r->ratio, true);
			json_num(stdout, "c2c_before_ns", o.inline_mode ? NAN : r->c2c_before, true);
			json_num(stdout, "c2c_after_ns", o.inline_mode ? NAN : r->c2c_after, true);
			json_num(stdout, "producer_idle", r->prod_idle, true);
			json_num(stdout, "consumer_idle", r->cons_idle, true);
			json_num(stdout, "producer_cpu_share", o.inline_mode ? NAN : r->share[0], true);
			json_num(stdout, "consumer_cpu_share", o.inline_mode ? NAN : r->share[1], true);
			printf("\"placement\":\"%s\",\"contended\":%s",
			       o.inline_mode ? "inline" : r->far ? "far" : "close",
			       r->contended ? "true" : "false");
			if (!r->ok)
				printf(",\"error\":\"%s\"", r->err);	/* fixed texts: no escaping needed */
			printf("}");
		}
		printf("],\"summary\":[");
		for (unsigned int i = 0; i < nsum; i++) {
			const struct vb_summary *s = &sum[i];

			printf("%s{\"case\":\"%s\",\"size\":%u,", i ? "," : "", case_name[s->kase],
			       s->size);
			json_num(stdout, "median_mpps", s->mpps, true);
			json_num(stdout, "median_gbps", s->gbps, true);
			json_num(stdout, "ratio", s->ratio, true);
			json_num(stdout, "paired_ratio", s->paired, true);
			printf("\"runs\":%u,\"clean_runs\":%u,\"basis\":\"%s\"}", s->runs, s->clean,
			       o.inline_mode ? "inline" : s->clean_basis ? "clean" : "all");
		}
		printf("]}\n");
	}
	if (failed) {
		fprintf(stderr, "uvhost-vring-bench: %u run(s) failed\n", failed);
		rc = 1;
	}
	free(runs);
	return rc;
}
