/* SPDX-License-Identifier: MIT */
/* A tiny VMM on any struct uvh_vhost: see t_vmm.h. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "util.h"
#include "message.h"
#include "t_vmm.h"

#define NO_GPA		UINT64_MAX
#define POLL_SLICE_MS	5	/* re-check the ring this often while waiting */

#define FAIL(ret, ...) (fprintf(stderr, "t_vmm: " __VA_ARGS__), fputc('\n', stderr), (ret))

/* ---- memory ------------------------------------------------------------------- */

static int mem_init(struct t_vmm_mem *m, uint64_t gpa, uint64_t size)
{
	memset(m, 0, sizeof(*m));
	m->fd = memfd_create("t-vmm", MFD_CLOEXEC);
	if (m->fd < 0)
		return FAIL(-errno, "memfd: %s", strerror(errno));
	if (ftruncate(m->fd, (off_t)size)) {
		int ret = -errno;

		close(m->fd);
		m->fd = -1;
		return FAIL(ret, "ftruncate: %s", strerror(-ret));
	}
	m->hva = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, m->fd, 0);
	if (m->hva == MAP_FAILED) {
		int ret = -errno;

		close(m->fd);
		m->fd = -1;
		m->hva = NULL;
		return FAIL(ret, "mmap: %s", strerror(-ret));
	}
	m->gpa = gpa;
	m->size = size;
	m->next = gpa;
	return 0;
}

static void mem_fini(struct t_vmm_mem *m)
{
	if (m->hva)
		munmap(m->hva, m->size);
	if (m->fd >= 0)
		close(m->fd);
	memset(m, 0, sizeof(*m));
	m->fd = -1;
}

static uint64_t mem_alloc(struct t_vmm_mem *m, uint64_t len)
{
	uint64_t gpa = (m->next + 4095) & ~4095ull;

	if (gpa < m->gpa || gpa - m->gpa > m->size || len > m->size - (gpa - m->gpa))
		return NO_GPA;
	m->next = gpa + len;
	return gpa;
}

void *t_vmm_ptr(struct t_vmm *v, uint64_t gpa, uint64_t len)
{
	for (unsigned int i = 0; i < T_VMM_MAX_MEM; i++) {
		struct t_vmm_mem *m = &v->mem[i];

		if (m->hva && gpa >= m->gpa && gpa - m->gpa < m->size &&
		    len <= m->size - (gpa - m->gpa))
			return m->hva + (gpa - m->gpa);
	}
	return NULL;
}

void t_vmm_region(const struct t_vmm *v, unsigned int idx, struct uvh_vhost_mem_region *r)
{
	const struct t_vmm_mem *m = &v->mem[idx];

	r->gpa = m->gpa;
	r->size = m->size;
	r->hva = m->hva;
	r->fd = m->fd;
	r->fd_offset = 0;
}

/* ---- set-up ------------------------------------------------------------------------ */

int t_vmm_init(struct t_vmm *v, struct uvh_vhost *b, const struct t_vmm_opts *o)
{
	static const struct t_vmm_opts defaults;
	int ret;

	memset(v, 0, sizeof(*v));
	for (unsigned int i = 0; i < T_VMM_MAX_MEM; i++)
		v->mem[i].fd = -1;
	for (unsigned int i = 0; i < 2; i++)
		v->ring[i].kick = v->ring[i].call = -1;
	v->b = b;
	v->o = o ? *o : defaults;
	v->ring_size = v->o.ring_size ? v->o.ring_size : 256;
	if (!v->o.timeout_ms)
		v->o.timeout_ms = 5000;
	ret = mem_init(&v->mem[0], v->o.mem_gpa ? v->o.mem_gpa : 1ull << 20,
		       v->o.mem_size ? v->o.mem_size : 4ull << 20);
	if (ret)
		return ret;
	v->mem[0].in_table = true;
	v->rx_pool = mem_alloc(&v->mem[0], (uint64_t)v->ring_size * T_VMM_BUF);
	v->mem[0].tx_pool = mem_alloc(&v->mem[0], (uint64_t)v->ring_size * T_VMM_BUF);
	if (v->rx_pool == NO_GPA || v->mem[0].tx_pool == NO_GPA) {
		t_vmm_fini(v);
		return FAIL(-ENOMEM, "region 0 too small for %u buffers", v->ring_size);
	}
	for (unsigned int i = 0; i < 2; i++) {
		v->ring[i].kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		v->ring[i].call = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (v->ring[i].kick < 0 || v->ring[i].call < 0) {
			ret = -errno;
			t_vmm_fini(v);
			return FAIL(ret, "eventfd: %s", strerror(-ret));
		}
	}
	return 0;
}

void t_vmm_fini(struct t_vmm *v)
{
	for (unsigned int i = 0; i < 2; i++) {
		struct t_vmm_ring *r = &v->ring[i];

		uvh_vq_driver_free(&r->drv);
		if (r->kick >= 0)
			close(r->kick);
		if (r->call >= 0)
			close(r->call);
		r->kick = r->call = -1;
	}
	for (unsigned int i = 0; i < T_VMM_MAX_MEM; i++)
		mem_fini(&v->mem[i]);
}

int t_vmm_negotiate(struct t_vmm *v)
{
	struct uvh_vhost *b = v->b;
	uint64_t offered = 0, want, pf;
	int ret;

	ret = uvh_vhost_call(b, set_owner);
	if (ret)
		return FAIL(ret, "set_owner: %s", strerror(-ret));
	ret = uvh_vhost_call(b, get_features, &offered);
	if (ret)
		return FAIL(ret, "get_features: %s", strerror(-ret));
	want = UVH_BIT(UVH_VIRTIO_F_VERSION_1);
	if (!v->o.no_event_idx)
		want |= UVH_BIT(UVH_VIRTIO_F_RING_EVENT_IDX);
	if (v->o.packed)
		want |= UVH_BIT(UVH_VIRTIO_F_RING_PACKED);
	if ((want & offered) != want &&
	    (want & ~offered) != UVH_BIT(UVH_VIRTIO_F_RING_EVENT_IDX))
		return FAIL(-EOPNOTSUPP, "features 0x%llx not offered (0x%llx)",
			    (unsigned long long)(want & ~offered), (unsigned long long)offered);
	/* Protocol features first, as QEMU does. */
	if (uvh_vhost_has(b, set_protocol_features)) {
		ret = uvh_vhost_call(b, get_protocol_features, &pf);
		if (ret && ret != -EOPNOTSUPP)
			return FAIL(ret, "get_protocol_features: %s", strerror(-ret));
		if (!ret) {
			pf &= v->o.protocol_features;
			ret = uvh_vhost_call(b, set_protocol_features, pf);
			if (ret)
				return FAIL(ret, "set_protocol_features: %s", strerror(-ret));
			v->protocol_features = pf;
		}
	}
	v->features = want & offered;
	ret = uvh_vhost_call(b, set_features, v->features);
	if (ret)
		return FAIL(ret, "set_features: %s", strerror(-ret));
	return 0;
}

int t_vmm_set_mem(struct t_vmm *v)
{
	struct uvh_vhost_mem_region r[T_VMM_MAX_MEM];
	unsigned int n = 0;
	int ret;

	for (unsigned int i = 0; i < T_VMM_MAX_MEM; i++)
		if (v->mem[i].in_table)
			t_vmm_region(v, i, &r[n++]);
	ret = uvh_vhost_call(v->b, set_mem_table, r, n);
	if (ret)
		return FAIL(ret, "set_mem_table: %s", strerror(-ret));
	return 0;
}

int t_vmm_start_ring(struct t_vmm *v, unsigned int idx)
{
	struct t_vmm_ring *r = &v->ring[idx];
	bool packed = v->features & UVH_BIT(UVH_VIRTIO_F_RING_PACKED);
	bool event_idx = v->features & UVH_BIT(UVH_VIRTIO_F_RING_EVENT_IDX);
	size_t bytes = uvh_vq_driver_area_bytes(v->ring_size, packed);
	uint64_t gpa = mem_alloc(&v->mem[0], bytes);
	struct uvh_vhost_vring_addr addr = { .index = idx };
	struct uvh_vq_config cfg;
	uint32_t base;
	int ret;

	if (gpa == NO_GPA)
		return FAIL(-ENOMEM, "no room for ring %u", idx);
	uvh_vq_driver_free(&r->drv);
	ret = uvh_vq_driver_init(&r->drv, v->ring_size, packed, event_idx,
				 t_vmm_ptr(v, gpa, bytes), gpa);
	if (ret)
		return FAIL(ret, "driver ring %u: %s", idx, strerror(-ret));
	uvh_vq_driver_config(&r->drv, &cfg);
	base = packed ? (uint32_t)cfg.next_avail | ((uint32_t)cfg.avail_wrap << 15) :
			cfg.next_avail;
	addr.desc_gpa = cfg.desc_gpa;
	addr.avail_gpa = cfg.driver_gpa;
	addr.used_gpa = cfg.device_gpa;

	ret = uvh_vhost_call(v->b, set_vring_num, idx, v->ring_size);
	if (ret)
		return FAIL(ret, "set_vring_num %u: %s", idx, strerror(-ret));
	ret = uvh_vhost_call(v->b, set_vring_addr, &addr);
	if (ret)
		return FAIL(ret, "set_vring_addr %u: %s", idx, strerror(-ret));
	ret = uvh_vhost_call(v->b, set_vring_base, idx, base);
	if (ret)
		return FAIL(ret, "set_vring_base %u: %s", idx, strerror(-ret));
	ret = uvh_vhost_call(v->b, set_vring_call, idx, r->call);
	if (ret)
		return FAIL(ret, "set_vring_call %u: %s", idx, strerror(-ret));
	ret = uvh_vhost_call(v->b, set_vring_kick, idx, r->kick);
	if (ret)
		return FAIL(ret, "set_vring_kick %u: %s", idx, strerror(-ret));
	/* Where the backend has it (kern runs rings once kicked). */
	ret = uvh_vhost_call(v->b, set_vring_enable, idx, true);
	if (ret && ret != -EOPNOTSUPP)
		return FAIL(ret, "set_vring_enable %u: %s", idx, strerror(-ret));
	r->started = true;
	return 0;
}

static int post_rx(struct t_vmm *v, uint64_t gpa)
{
	struct uvh_vq_buf buf = { .gpa = gpa, .len = T_VMM_BUF };

	return uvh_vq_driver_add(&v->ring[T_VMM_RX].drv, &buf, 0, 1, (void *)(uintptr_t)gpa);
}

int t_vmm_start(struct t_vmm *v)
{
	int ret;

	ret = t_vmm_negotiate(v);
	if (!ret)
		ret = t_vmm_set_mem(v);
	if (!ret)
		ret = t_vmm_start_ring(v, T_VMM_RX);
	if (!ret)
		ret = t_vmm_start_ring(v, T_VMM_TX);
	if (ret)
		return ret;
	for (unsigned int i = 0; i < v->ring_size; i++) {
		ret = post_rx(v, v->rx_pool + (uint64_t)i * T_VMM_BUF);
		if (ret)
			return FAIL(ret, "posting RX buffer %u: %s", i, strerror(-ret));
	}
	t_vmm_flush(v, T_VMM_RX);
	return 0;
}

/* ---- traffic ----------------------------------------------------------------------- */

void t_vmm_make_frame(uint8_t *f, uint32_t len, uint32_t seq)
{
	static const uint8_t dst[6] = { 0x02, 0x75, 0x76, 0x68, 0x00, 0x02 };
	static const uint8_t src[6] = { 0x02, 0x75, 0x76, 0x68, 0x00, 0x01 };

	memcpy(f, dst, 6);
	memcpy(f + 6, src, 6);
	f[12] = 0x88;
	f[13] = 0xb5;
	for (uint32_t i = 14; i < len; i++)
		f[i] = (uint8_t)(seq * 131 + i * 7 + (seq >> 8));
	if (len >= 18)
		memcpy(f + 14, &seq, 4);	/* every frame differs from the others */
}

int t_vmm_send(struct t_vmm *v, const uint8_t *frame, uint32_t len, unsigned int mem_idx)
{
	struct t_vmm_mem *m = &v->mem[mem_idx];
	struct uvh_vq_buf buf;
	uint8_t *p;
	int ret;

	if (mem_idx >= T_VMM_MAX_MEM || !m->hva || !m->tx_pool || len > T_VMM_MAX_FRAME)
		return -EINVAL;
	/* The net device completes TX in order: a pool as deep as the ring,
	 * used round-robin, never hands out a buffer still in flight. */
	buf.gpa = m->tx_pool + (uint64_t)(m->tx_next++ % v->ring_size) * T_VMM_BUF;
	buf.len = T_VMM_HDR + len;
	p = t_vmm_ptr(v, buf.gpa, buf.len);
	if (!p)
		return -EFAULT;
	memset(p, 0, T_VMM_HDR);
	memcpy(p + T_VMM_HDR, frame, len);
	ret = uvh_vq_driver_add(&v->ring[T_VMM_TX].drv, &buf, 1, 0, (void *)(uintptr_t)buf.gpa);
	if (ret) {
		m->tx_next--;
		return ret;
	}
	v->tx_pending++;
	return 0;
}

void t_vmm_flush(struct t_vmm *v, unsigned int idx)
{
	struct t_vmm_ring *r = &v->ring[idx];

	uvh_vq_driver_publish(&r->drv);
	if (uvh_vq_driver_need_kick(&r->drv) && eventfd_write(r->kick, 1) == 0)
		r->kicks++;
}

uint64_t t_vmm_calls(struct t_vmm *v, unsigned int idx)
{
	struct t_vmm_ring *r = &v->ring[idx];
	eventfd_t n;

	if (eventfd_read(r->call, &n) == 0)
		r->calls += n;
	return r->calls;
}

/* Wait for ring @idx's call for at most @ms (a slice: the ring is
 * re-checked in any case). */
static void wait_call(struct t_vmm *v, unsigned int idx, int ms)
{
	struct pollfd pfd = { .fd = v->ring[idx].call, .events = POLLIN };

	if (ms > POLL_SLICE_MS)
		ms = POLL_SLICE_MS;
	if (poll(&pfd, 1, ms < 0 ? 0 : ms) == 1)
		t_vmm_calls(v, idx);
}

int t_vmm_recv(struct t_vmm *v, uint8_t *buf, uint32_t max, uint32_t *len)
{
	int64_t deadline = uvh_now_ms() + v->o.timeout_ms;
	struct t_vmm_ring *r = &v->ring[T_VMM_RX];
	void *tok;
	uint32_t used;
	uint8_t *p;
	uint64_t gpa;
	int ret;

	while (uvh_vq_driver_get_used(&r->drv, &tok, &used, 1) != 1) {
		int64_t left = deadline - uvh_now_ms();

		if (left <= 0)
			return -ETIMEDOUT;
		wait_call(v, T_VMM_RX, (int)left);
	}
	gpa = (uint64_t)(uintptr_t)tok;
	if (used < T_VMM_HDR || used > T_VMM_BUF || used - T_VMM_HDR > max)
		ret = FAIL(-EPROTO, "RX used length %u", used);
	else if (!(p = t_vmm_ptr(v, gpa, used)))
		ret = FAIL(-EFAULT, "RX buffer 0x%llx", (unsigned long long)gpa);
	else {
		memcpy(buf, p + T_VMM_HDR, used - T_VMM_HDR);
		*len = used - T_VMM_HDR;
		ret = 0;
	}
	/* The buffer goes back whatever it held. */
	if (post_rx(v, gpa) == 0)
		t_vmm_flush(v, T_VMM_RX);
	return ret;
}

unsigned int t_vmm_reap_tx(struct t_vmm *v, unsigned int n)
{
	int64_t deadline = uvh_now_ms() + v->o.timeout_ms;
	struct t_vmm_ring *r = &v->ring[T_VMM_TX];
	unsigned int got = 0;
	void *tok[64];
	uint32_t lens[64];

	for (;;) {
		unsigned int k = uvh_vq_driver_get_used(&r->drv, tok, lens, 64);
		int64_t left;

		got += k;
		v->tx_pending -= k < v->tx_pending ? k : v->tx_pending;
		if (got >= n)
			return 0;
		if (k)
			continue;
		left = deadline - uvh_now_ms();
		if (left <= 0)
			return n - got;
		wait_call(v, T_VMM_TX, (int)left);
	}
}

static uint32_t frame_len(uint32_t seq)
{
	static const uint32_t sizes[] = { 60, 64, 61, 128, 255, 512, 1000, 1500, 1514, 77 };

	return sizes[seq % (sizeof(sizes) / sizeof(sizes[0]))];
}

int t_vmm_loopback(struct t_vmm *v, unsigned int n, unsigned int mem_idx, uint32_t seq0,
		   uint64_t *bytes)
{
	/* Half a ring per burst: RX always has room for a whole burst. */
	unsigned int burst = v->ring_size / 2 ? v->ring_size / 2 : 1;
	static uint8_t want[T_VMM_MAX_FRAME], got[T_VMM_MAX_FRAME];
	unsigned int done = 0;
	int ret;

	while (done < n) {
		unsigned int k = n - done < burst ? n - done : burst, missing;

		for (unsigned int i = 0; i < k; i++) {
			uint32_t seq = seq0 + done + i;

			t_vmm_make_frame(want, frame_len(seq), seq);
			ret = t_vmm_send(v, want, frame_len(seq), mem_idx);
			if (ret)
				return FAIL(ret, "send frame %u: %s", seq, strerror(-ret));
		}
		t_vmm_flush(v, T_VMM_TX);
		for (unsigned int i = 0; i < k; i++) {
			uint32_t seq = seq0 + done + i, len = 0;

			ret = t_vmm_recv(v, got, sizeof(got), &len);
			if (ret)
				return FAIL(ret, "frame %u not received: %s", seq, strerror(-ret));
			t_vmm_make_frame(want, frame_len(seq), seq);
			if (len != frame_len(seq) || memcmp(got, want, len))
				return FAIL(-EBADMSG, "frame %u: %u bytes back, %u sent%s", seq,
					    len, frame_len(seq), len == frame_len(seq) ?
					    ", contents differ" : "");
			if (bytes)
				*bytes += len;
		}
		missing = t_vmm_reap_tx(v, k);
		if (missing)
			return FAIL(-ETIMEDOUT, "%u of %u TX chains not given back", missing, k);
		done += k;
	}
	return 0;
}

/* ---- stop ----------------------------------------------------------------------------- */

uint32_t t_vmm_used_base(const struct t_vmm *v, unsigned int idx)
{
	const struct uvh_vq_driver *d = &v->ring[idx].drv;
	uint32_t p;

	if (!d->packed)
		return d->last_used;
	p = (uint32_t)d->last_used_slot | ((uint32_t)d->used_wrap << 15);
	return p | (p << 16);
}

int t_vmm_stop(struct t_vmm *v, uint32_t base[2])
{
	int ret = 0;

	for (unsigned int idx = 0; idx < 2; idx++) {
		struct t_vmm_ring *r = &v->ring[idx];
		uint32_t got = 0;
		void *tok[64];
		int err;

		if (!r->started)
			continue;
		err = uvh_vhost_call(v->b, get_vring_base, idx, &got);
		if (err && !ret)
			ret = FAIL(err, "get_vring_base %u: %s", idx, strerror(-err));
		if (base)
			base[idx] = got;
		r->started = false;
		/* Whatever the device held came back before it stopped. */
		while (uvh_vq_driver_get_used(&r->drv, tok, NULL, 64))
			;
	}
	v->tx_pending = 0;
	return ret;
}

/* ---- more memory ------------------------------------------------------------------------- */

int t_vmm_add_region(struct t_vmm *v, unsigned int idx, uint64_t gpa, uint64_t size)
{
	struct t_vmm_mem *m = &v->mem[idx];
	struct uvh_vhost_mem_region r;
	int ret;

	if (!idx || idx >= T_VMM_MAX_MEM || m->hva)
		return -EINVAL;
	ret = mem_init(m, gpa, size);
	if (ret)
		return ret;
	m->tx_pool = mem_alloc(m, (uint64_t)v->ring_size * T_VMM_BUF);
	if (m->tx_pool == NO_GPA) {
		mem_fini(m);
		return FAIL(-ENOMEM, "region %u too small for a TX pool", idx);
	}
	t_vmm_region(v, idx, &r);
	ret = uvh_vhost_call(v->b, add_mem_region, &r);
	if (ret) {
		mem_fini(m);
		return FAIL(ret, "add_mem_region %u: %s", idx, strerror(-ret));
	}
	m->in_table = true;
	return 0;
}

int t_vmm_remove_region(struct t_vmm *v, unsigned int idx)
{
	struct uvh_vhost_mem_region r;
	int ret;

	if (!idx || idx >= T_VMM_MAX_MEM || !v->mem[idx].hva)
		return -EINVAL;
	t_vmm_region(v, idx, &r);
	ret = uvh_vhost_call(v->b, remove_mem_region, &r);
	if (ret)
		return FAIL(ret, "remove_mem_region %u: %s", idx, strerror(-ret));
	mem_fini(&v->mem[idx]);
	return 0;
}
