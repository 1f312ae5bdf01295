/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the user backend [Master]. A vhost-user back-end process, driven
 * through the front-end of proto/frontend.h; each op is the request of the
 * same name.
 *
 * What this adds to the bare front-end:
 *   - Memory: regions go with their fds (userspace_addr = hva, mmap_offset
 *     = fd_offset). The table is kept (with a dup of each fd) to translate
 *     ring GPAs to the VMM's virtual addresses for SET_VRING_ADDR (IOVAs go
 *     as they are once IOMMU_PLATFORM is acked), and to set the whole table
 *     again when the back-end has no CONFIGURE_MEM_SLOTS. More than 8
 *     regions: SET_MEM_TABLE with 8, ADD_MEM_REG for the rest (needs
 *     CONFIGURE_MEM_SLOTS, else -E2BIG).
 *   - Negotiation stays what uvh_frontend_negotiate() does: the VMM calls
 *     get_features/set_features, and F_PROTOCOL_FEATURES is acked for it
 *     whenever the back-end offers it (without it no protocol feature, no
 *     SET_VRING_ENABLE), so the VMM's set_protocol_features works, before
 *     or after set_features. Rings then start disabled: the VMM enables
 *     them (set_vring_enable), as QEMU does.
 *   - Protocol features the back-end did not offer are refused (-EINVAL):
 *     the front-end would wait for acks or replies that never come.
 *   - The back-end channel is opened right after SET_PROTOCOL_FEATURES
 *     when BACKEND_REQ is among them. Its requests are served while any op
 *     waits for a reply, and by iotlb_miss (which waits on it): a VMM that
 *     wants config changes promptly calls iotlb_miss(b, &m, 0) from its
 *     poll loop (uvh_vhost_fd is the main socket, not the channel).
 *     CONFIG_CHANGE_MSG writes the set_config_call eventfd; IOTLB misses
 *     and access failures are queued for iotlb_miss.
 *   - suspend: GET_VRING_BASE of every started ring (the back-end stops
 *     it and says where); resume: each such ring is set up again (NUM,
 *     ADDR, BASE with the saved base, CALL, KICK with the kick fd it had,
 *     ENABLE when it was enabled), the sequence QEMU sends on a restart.
 *     The kick, call and err fds given are kept as dups for this.
 *   - get_max_mem_slots without CONFIGURE_MEM_SLOTS: 8 (what SET_MEM_TABLE
 *     takes); get_queue_num without MQ: 1; get_inflight_fd when the
 *     back-end has no inflight area: -EOPNOTSUPP.
 *   - Restart (opened with user_reconnect): the front-end records the
 *     session from the open on; uvh_vhost_user_reconnect() replays it
 *     on the new process (uvh_frontend_reconnect), asking the VMM for
 *     each ring's base (rings the VMM had stopped are set up but not
 *     started: the journal dropped their kick at GET_VRING_BASE).
 *     Ops are never retried by themselves: only the VMM knows whether
 *     one still makes sense after a restart.
 *
 * Errors are the front-end's: -EIO when the back-end refused (connection
 * usable), -ETIMEDOUT / -ECONNRESET / -EPIPE / -ENOTCONN once it is gone,
 * -EOPNOTSUPP for a request whose protocol feature is not in force.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "util.h"
#include "vhost.h"
#include "vhost_internal.h"
#include "frontend.h"
#include "listener.h"
#include "log.h"
#include "virtq.h"

#define PF(name)		UVH_BIT(UVH_PROTOCOL_F_##name)
#define MAX_RINGS		(UVH_VRING_IDX_MASK + 1u)	/* 8-bit index on the wire */
#define DEFAULT_TIMEOUT_MS	5000
#define MISS_QUEUE		64u

struct user_ring {
	uint32_t num;
	uint32_t base;			/* SET_VRING_BASE sent, or GET_VRING_BASE's */
	bool have_addr;
	struct uvh_vhost_vring_addr addr;	/* as the VMM gave it (GPAs) */
	int kick, call, err;		/* dups of the VMM's fds, or -1 */
	bool started;			/* between SET_VRING_KICK and GET_VRING_BASE */
	bool enabled;
	bool suspended;			/* stopped by suspend, to restart */
};

struct user_backend {
	struct uvh_vhost b;		/* first: the ops get a struct uvh_vhost * */
	struct uvh_frontend *fe;
	bool have_offered, have_pf_offered;
	uint64_t offered;		/* GET_FEATURES */
	uint64_t pf_offered;		/* GET_PROTOCOL_FEATURES */
	/* The table the back-end has, with a dup of each fd. */
	struct uvh_vhost_mem_region *regions;
	unsigned int nregions;
	int config_fd;			/* set_config_call's eventfd (dup), or -1 */
	bool chan;			/* the back-end channel is open */
	struct uvh_iotlb misses[MISS_QUEUE];
	unsigned int miss_head, miss_count;
	/* uvh_vhost_user_reconnect(): the session is recorded */
	bool reconnect;
	int (*vring_base)(void *opaque, uint32_t index, uint32_t *base);
	void *vring_opaque;
	struct user_ring rings[MAX_RINGS];
};

static struct user_backend *to_user(struct uvh_vhost *b)
{
	return (struct user_backend *)b;
}

static bool pf_on(struct user_backend *u, uint64_t bit)
{
	return uvh_frontend_protocol_features(u->fe) & bit;
}

static int check_index(struct user_backend *u, uint32_t index)
{
	if (index >= MAX_RINGS) {
		UVH_ERR("%s: vring %u: the protocol has at most %u rings", u->b.name, index,
			MAX_RINGS);
		return -EINVAL;
	}
	return 0;
}

/* ---- features, owner ------------------------------------------------------------ */

static int offered_features(struct user_backend *u, uint64_t *f)
{
	int ret;

	if (!u->have_offered) {
		ret = uvh_frontend_get_features(u->fe, &u->offered);
		if (ret)
			return ret;
		u->have_offered = true;
	}
	*f = u->offered;
	return 0;
}

static int user_get_features(struct uvh_vhost *b, uint64_t *features)
{
	struct user_backend *u = to_user(b);
	int ret;

	if (!features)
		return -EINVAL;
	/* Asked again each time (a back-end may change its offer after a reset). */
	ret = uvh_frontend_get_features(u->fe, &u->offered);
	if (ret)
		return ret;
	u->have_offered = true;
	*features = u->offered;
	return 0;
}

static int user_set_features(struct uvh_vhost *b, uint64_t features)
{
	struct user_backend *u = to_user(b);
	uint64_t offered;
	int ret;

	ret = offered_features(u, &offered);
	/* The back-end closes the connection on bits it did not offer. */
	if (!ret)
		ret = uvh__features_offered(b->name, features, offered);
	if (ret)
		return ret;
	if (offered & UVH_BIT(UVH_F_PROTOCOL_FEATURES))
		features |= UVH_BIT(UVH_F_PROTOCOL_FEATURES);
	return uvh_frontend_set_features(u->fe, features);
}

static int user_set_owner(struct uvh_vhost *b)
{
	return uvh_frontend_set_owner(to_user(b)->fe);
}

static void forget_rings(struct user_backend *u)
{
	for (unsigned int i = 0; i < MAX_RINGS; i++) {
		struct user_ring *r = &u->rings[i];

		uvh_close_fd(&r->kick);
		uvh_close_fd(&r->call);
		uvh_close_fd(&r->err);
		memset(r, 0, sizeof(*r));
		r->kick = r->call = r->err = -1;
	}
}

static int user_reset_owner(struct uvh_vhost *b)
{
	struct user_backend *u = to_user(b);
	int ret;

	if (pf_on(u, PF(RESET_DEVICE)))
		ret = uvh_frontend_reset_device(u->fe);
	else
		ret = uvh_frontend_reset_owner(u->fe);
	if (!ret)
		forget_rings(u);
	return ret;
}

static int pf_offered(struct user_backend *u, uint64_t *pf)
{
	uint64_t f;
	int ret;

	ret = offered_features(u, &f);
	if (ret)
		return ret;
	/* Without the bit the back-end refuses the request by closing. */
	if (!(f & UVH_BIT(UVH_F_PROTOCOL_FEATURES)))
		return -EOPNOTSUPP;
	if (!u->have_pf_offered) {
		ret = uvh_frontend_get_protocol_features(u->fe, &u->pf_offered);
		if (ret)
			return ret;
		u->have_pf_offered = true;
	}
	*pf = u->pf_offered;
	return 0;
}

static int user_get_protocol_features(struct uvh_vhost *b, uint64_t *features)
{
	struct user_backend *u = to_user(b);

	if (!features)
		return -EINVAL;
	u->have_pf_offered = false;	/* ask again */
	return pf_offered(u, features);
}

static int chan_iotlb_msg(void *opaque, const struct uvh_iotlb *msg);
static int chan_config_change(void *opaque);

static const struct uvh_frontend_req_ops chan_ops = {
	.iotlb_msg = chan_iotlb_msg,
	.config_change = chan_config_change,
};

static int user_set_protocol_features(struct uvh_vhost *b, uint64_t features)
{
	struct user_backend *u = to_user(b);
	const uint64_t inband_needs = PF(BACKEND_REQ) | PF(REPLY_ACK);
	uint64_t offered;
	int ret;

	ret = pf_offered(u, &offered);
	if (ret)
		return ret;
	if (features & ~offered) {
		UVH_ERR("%s: protocol features 0x%" PRIx64 " were not offered", b->name,
			features & ~offered);
		return -EINVAL;
	}
	if ((features & PF(INBAND_NOTIFICATIONS)) && (features & inband_needs) != inband_needs) {
		UVH_ERR("%s: INBAND_NOTIFICATIONS needs BACKEND_REQ and REPLY_ACK", b->name);
		return -EINVAL;
	}
	ret = uvh_frontend_set_protocol_features(u->fe, features);
	if (ret || !(features & PF(BACKEND_REQ)) || u->chan)
		return ret;
	ret = uvh_frontend_set_backend_req(u->fe, &chan_ops, u);
	if (ret) {
		UVH_ERR("%s: cannot open the back-end channel: %s", b->name, strerror(-ret));
		return ret;
	}
	u->chan = true;
	return 0;
}

/* ---- memory ---------------------------------------------------------------------- */

/* On top of uvh__region_check: the back-end maps each region's fd. */
static int check_region(void *ctx, const struct uvh_vhost_mem_region *r)
{
	struct user_backend *u = ctx;
	int ret;

	if (r->fd < 0) {
		UVH_ERR("%s: region at gpa 0x%" PRIx64 " has no fd", u->b.name, r->gpa);
		return -EBADF;
	}
	ret = uvh__region_check(u->b.name, r);
	if (!ret && uvh__wraps(r->fd_offset, r->size)) {
		UVH_ERR("%s: region gpa 0x%" PRIx64 " mmap offset 0x%" PRIx64 " wraps",
			u->b.name, r->gpa, r->fd_offset);
		ret = -EINVAL;
	}
	return ret;
}

static void to_wire(const struct uvh_vhost_mem_region *r, struct uvh_mem_region *w)
{
	w->guest_phys_addr = r->gpa;
	w->memory_size = r->size;
	w->userspace_addr = (uint64_t)(uintptr_t)r->hva;
	w->mmap_offset = r->fd_offset;
}

static void drop_table(struct uvh_vhost_mem_region *t, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++)
		uvh_close_fd(&t[i].fd);
	free(t);
}

/* A copy of @n regions with their own fds (dups). */
static int copy_table(const struct uvh_vhost_mem_region *regions, unsigned int n,
		      unsigned int room, struct uvh_vhost_mem_region **out)
{
	struct uvh_vhost_mem_region *t = calloc(room ? room : 1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	for (unsigned int i = 0; i < n; i++) {
		t[i] = regions[i];
		t[i].fd = uvh__dup_fd(regions[i].fd);
		if (t[i].fd < 0) {
			int ret = t[i].fd;

			t[i].fd = -1;
			drop_table(t, i);
			return ret;
		}
	}
	*out = t;
	return 0;
}

/* SET_MEM_TABLE with the first (at most 8) of @t's @n regions. */
static int send_table(struct user_backend *u, const struct uvh_vhost_mem_region *t,
		      unsigned int n)
{
	struct uvh_mem_region w[UVH_MEMORY_MAX_NREGIONS];
	int fds[UVH_MEMORY_MAX_NREGIONS];

	if (n > UVH_MEMORY_MAX_NREGIONS)
		n = UVH_MEMORY_MAX_NREGIONS;
	for (unsigned int i = 0; i < n; i++) {
		to_wire(&t[i], &w[i]);
		fds[i] = t[i].fd;
	}
	return uvh_frontend_set_mem_table(u->fe, w, fds, n);
}

static int add_region(struct user_backend *u, const struct uvh_vhost_mem_region *r)
{
	struct uvh_mem_region w;

	to_wire(r, &w);
	return uvh_frontend_add_mem_reg(u->fe, &w, r->fd);
}

static int user_get_max_mem_slots(struct uvh_vhost *b, uint64_t *slots)
{
	struct user_backend *u = to_user(b);

	if (!slots)
		return -EINVAL;
	if (!pf_on(u, PF(CONFIGURE_MEM_SLOTS))) {
		*slots = UVH_MEMORY_MAX_NREGIONS;
		return 0;
	}
	return uvh_frontend_get_max_mem_slots(u->fe, slots);
}

static int user_set_mem_table(struct uvh_vhost *b, const struct uvh_vhost_mem_region *regions,
			      unsigned int n)
{
	struct user_backend *u = to_user(b);
	struct uvh_vhost_mem_region *t;
	unsigned int sent;
	uint64_t slots;
	int ret;

	if (n && !regions)
		return -EINVAL;
	ret = uvh__regions_check(b->name, regions, n, UVH__REGIONS_HVA, check_region, u);
	if (ret)
		return ret;
	if (n > UVH_MEMORY_MAX_NREGIONS) {
		if (!pf_on(u, PF(CONFIGURE_MEM_SLOTS))) {
			UVH_ERR("%s: %u regions need CONFIGURE_MEM_SLOTS (at most %u without)",
				b->name, n, UVH_MEMORY_MAX_NREGIONS);
			return -E2BIG;
		}
		ret = user_get_max_mem_slots(b, &slots);
		if (ret)
			return ret;
		if (n > slots) {
			UVH_ERR("%s: %u regions, the back-end takes %" PRIu64, b->name, n, slots);
			return -E2BIG;
		}
	}
	ret = copy_table(regions, n, n, &t);
	if (ret)
		return ret;
	ret = send_table(u, t, n);
	sent = ret ? 0 : (n < UVH_MEMORY_MAX_NREGIONS ? n : UVH_MEMORY_MAX_NREGIONS);
	if (ret) {
		drop_table(t, n);
		return ret;
	}
	for (; sent < n; sent++) {
		ret = add_region(u, &t[sent]);
		if (ret)
			break;
	}
	/* What we keep is what the back-end has, even after a failure. */
	for (unsigned int i = sent; i < n; i++)
		uvh_close_fd(&t[i].fd);
	drop_table(u->regions, u->nregions);
	u->regions = t;
	u->nregions = sent;
	return ret;
}

static int user_add_mem_region(struct uvh_vhost *b, const struct uvh_vhost_mem_region *region)
{
	struct user_backend *u = to_user(b);
	struct uvh_vhost_mem_region *t;
	unsigned int n = u->nregions;
	int ret;

	if (!region)
		return -EINVAL;
	ret = check_region(u, region);
	if (!ret)
		ret = uvh__region_disjoint(b->name, u->regions, n, region, UVH__REGIONS_HVA);
	if (ret)
		return ret;
	if (!pf_on(u, PF(CONFIGURE_MEM_SLOTS)) && n + 1 > UVH_MEMORY_MAX_NREGIONS) {
		UVH_ERR("%s: a region past %u needs CONFIGURE_MEM_SLOTS", b->name,
			UVH_MEMORY_MAX_NREGIONS);
		return -E2BIG;
	}
	/* The new table: the kept fds move over, the new region gets a dup. */
	ret = uvh__regions_with(u->regions, n, region, &t);
	if (ret)
		return ret;
	t[n].fd = uvh__dup_fd(region->fd);
	if (t[n].fd < 0) {
		ret = t[n].fd;
		free(t);
		return ret;
	}
	if (pf_on(u, PF(CONFIGURE_MEM_SLOTS)))
		ret = add_region(u, &t[n]);
	else
		ret = send_table(u, t, n + 1);	/* the whole table again */
	if (ret) {
		uvh_close_fd(&t[n].fd);
		free(t);
		return ret;
	}
	free(u->regions);
	u->regions = t;
	u->nregions = n + 1;
	return 0;
}

static int user_remove_mem_region(struct uvh_vhost *b,
				  const struct uvh_vhost_mem_region *region)
{
	struct user_backend *u = to_user(b);
	struct uvh_vhost_mem_region gone;
	struct uvh_mem_region w;
	unsigned int n = u->nregions, left = n;
	int i, ret;

	if (!region)
		return -EINVAL;
	i = uvh__region_find(b->name, u->regions, n, region);
	if (i < 0)
		return i;
	gone = u->regions[i];
	if (pf_on(u, PF(CONFIGURE_MEM_SLOTS))) {
		to_wire(&gone, &w);
		ret = uvh_frontend_rem_mem_reg(u->fe, &w);
		if (ret)
			return ret;
		u->regions[i] = u->regions[n - 1];
	} else {
		/* The table without it, in the same order. */
		uvh__region_remove_at(u->regions, &left, (unsigned int)i);
		ret = send_table(u, u->regions, left);
		if (ret) {
			memmove(&u->regions[i + 1], &u->regions[i], (left - i) * sizeof(gone));
			u->regions[i] = gone;
			return ret;
		}
	}
	u->nregions = n - 1;
	uvh_close_fd(&gone.fd);
	return 0;
}

static int user_set_log_base(struct uvh_vhost *b, const struct uvh_vhost_log *log)
{
	struct user_backend *u = to_user(b);
	struct uvh_dirty_log_area l;

	if (!log)
		return -EINVAL;
	/* Only the shared-memory log: the back-end maps log->fd. */
	if (!pf_on(u, PF(LOG_SHMFD))) {
		UVH_ERR("%s: set_log_base needs LOG_SHMFD", b->name);
		return -EOPNOTSUPP;
	}
	if (log->fd < 0 || !log->size || uvh__wraps(log->fd_offset, log->size)) {
		UVH_ERR("%s: set_log_base needs the bitmap's fd and a size", b->name);
		return -EINVAL;
	}
	l.mmap_size = log->size;
	l.mmap_offset = log->fd_offset;
	return uvh_frontend_set_log_base(u->fe, &l, log->fd);
}

static int user_set_log_fd(struct uvh_vhost *b, int fd)
{
	return uvh_frontend_set_log_fd(to_user(b)->fe, fd);
}

/* ---- rings ----------------------------------------------------------------------- */

static bool acked(struct user_backend *u, unsigned int bit)
{
	return uvh_frontend_features(u->fe) & UVH_BIT(bit);
}

static int send_vring_addr(struct user_backend *u, const struct uvh_vhost_vring_addr *a)
{
	const struct user_ring *r = &u->rings[a->index];
	bool packed = acked(u, UVH_VIRTIO_F_RING_PACKED);
	uint16_t num = r->num <= UVH__VRING_NUM_MAX ? (uint16_t)r->num : 0;
	struct uvh_vring_addr w;
	int ret = 0;

	memset(&w, 0, sizeof(w));
	w.index = a->index;
	w.flags = a->flags;
	w.log_guest_addr = a->log_gpa;	/* the log is indexed by GPA */
	if (acked(u, UVH_VIRTIO_F_IOMMU_PLATFORM)) {
		w.desc_user_addr = a->desc_gpa;
		w.avail_user_addr = a->avail_gpa;
		w.used_user_addr = a->used_gpa;
	} else {
		/* Each area must be inside one region (a size not known yet:
		 * its first byte). */
		const uint64_t len[3] = {
			num ? uvh_vring_desc_bytes(num, packed) : 1,
			num ? uvh_vring_driver_bytes(num, packed) : 1,
			num ? uvh_vring_device_bytes(num, packed) : 1,
		};
		uint64_t hva[3] = { 0, 0, 0 };

		ret = uvh__vring_to_hva(u->b.name, u->regions, u->nregions, a, len, hva);
		if (ret)
			return ret;
		w.desc_user_addr = hva[0];
		w.avail_user_addr = hva[1];
		w.used_user_addr = hva[2];
	}
	return uvh_frontend_set_vring_addr(u->fe, &w);
}

static int user_set_vring_num(struct uvh_vhost *b, uint32_t index, uint32_t num)
{
	struct user_backend *u = to_user(b);
	int ret = check_index(u, index);

	if (ret)
		return ret;
	ret = uvh_frontend_set_vring_num(u->fe, index, num);
	if (!ret)
		u->rings[index].num = num;
	return ret;
}

static int user_set_vring_addr(struct uvh_vhost *b, const struct uvh_vhost_vring_addr *addr)
{
	struct user_backend *u = to_user(b);
	int ret;

	if (!addr)
		return -EINVAL;
	ret = check_index(u, addr->index);
	if (ret)
		return ret;
	ret = send_vring_addr(u, addr);
	if (!ret) {
		u->rings[addr->index].addr = *addr;
		u->rings[addr->index].have_addr = true;
	}
	return ret;
}

static int user_set_vring_base(struct uvh_vhost *b, uint32_t index, uint32_t base)
{
	struct user_backend *u = to_user(b);
	int ret = check_index(u, index);

	if (ret)
		return ret;
	ret = uvh_frontend_set_vring_base(u->fe, index, base);
	if (!ret)
		u->rings[index].base = base;
	return ret;
}

static int user_get_vring_base(struct uvh_vhost *b, uint32_t index, uint32_t *base)
{
	struct user_backend *u = to_user(b);
	struct user_ring *r;
	int ret = check_index(u, index);

	if (ret)
		return ret;
	if (!base)
		return -EINVAL;
	r = &u->rings[index];
	ret = uvh_frontend_get_vring_base(u->fe, index, base);
	if (!ret) {
		r->base = *base;
		r->started = false;
		r->suspended = false;
	}
	return ret;
}

/* Send a ring's fd, and keep a dup of it in *@slot when the back-end took it. */
static int vring_fd(struct user_backend *u, int (*send)(struct uvh_frontend *, uint32_t, int),
		    uint32_t index, int fd, int *slot)
{
	int ret = check_index(u, index), kept;

	if (ret)
		return ret;
	kept = uvh__dup_fd(fd);
	if (fd >= 0 && kept < 0)
		return kept;
	ret = send(u->fe, index, fd);
	if (ret) {
		uvh_close_fd(&kept);
		return ret;
	}
	uvh_close_fd(slot);
	*slot = kept;
	return 0;
}

static int user_set_vring_kick(struct uvh_vhost *b, uint32_t index, int fd)
{
	struct user_backend *u = to_user(b);
	int ret;

	if (check_index(u, index))
		return -EINVAL;
	ret = vring_fd(u, uvh_frontend_set_vring_kick, index, fd, &u->rings[index].kick);
	if (!ret) {
		u->rings[index].started = true;	/* the spec: it starts on this message */
		u->rings[index].suspended = false;
	}
	return ret;
}

static int user_set_vring_call(struct uvh_vhost *b, uint32_t index, int fd)
{
	struct user_backend *u = to_user(b);

	if (check_index(u, index))
		return -EINVAL;
	return vring_fd(u, uvh_frontend_set_vring_call, index, fd, &u->rings[index].call);
}

static int user_set_vring_err(struct uvh_vhost *b, uint32_t index, int fd)
{
	struct user_backend *u = to_user(b);

	if (check_index(u, index))
		return -EINVAL;
	return vring_fd(u, uvh_frontend_set_vring_err, index, fd, &u->rings[index].err);
}

static int user_set_vring_enable(struct uvh_vhost *b, uint32_t index, bool enable)
{
	struct user_backend *u = to_user(b);
	int ret = check_index(u, index);

	if (ret)
		return ret;
	ret = uvh_frontend_set_vring_enable(u->fe, index, enable);
	if (!ret)
		u->rings[index].enabled = enable;
	return ret;
}

/* ---- status, config, IOTLB ------------------------------------------------------------ */

static int user_get_status(struct uvh_vhost *b, uint8_t *status)
{
	return uvh_frontend_get_status(to_user(b)->fe, status);
}

static int user_set_status(struct uvh_vhost *b, uint8_t status)
{
	return uvh_frontend_set_status(to_user(b)->fe, status);
}

static int user_get_config(struct uvh_vhost *b, uint32_t offset, uint32_t size, uint8_t *buf)
{
	if (!uvh__config_range_ok(offset, size, buf))
		return -EINVAL;
	return uvh_frontend_get_config(to_user(b)->fe, offset, size, 0, buf);
}

static int user_set_config(struct uvh_vhost *b, uint32_t offset, uint32_t size,
			   const uint8_t *buf)
{
	if (!uvh__config_range_ok(offset, size, buf))
		return -EINVAL;
	return uvh_frontend_set_config(to_user(b)->fe, offset, size, 0, buf);
}

/* [channel, front-end locked] The device's config space changed. */
static int chan_config_change(void *opaque)
{
	struct user_backend *u = opaque;

	if (u->config_fd >= 0 && eventfd_write(u->config_fd, 1)) {
		UVH_WARN("%s: config eventfd write: %s", u->b.name, strerror(errno));
		return -errno;
	}
	return 0;
}

/* [channel, front-end locked] A miss or an access failure, for iotlb_miss. */
static int chan_iotlb_msg(void *opaque, const struct uvh_iotlb *msg)
{
	struct user_backend *u = opaque;

	if (msg->type != UVH_IOTLB_MISS && msg->type != UVH_IOTLB_ACCESS_FAIL)
		return -EINVAL;
	if (u->miss_count == MISS_QUEUE) {
		/* Nobody collects them: the oldest goes (the device asks again). */
		UVH_WARN("%s: IOTLB miss queue full, dropping 0x%" PRIx64, u->b.name,
			 u->misses[u->miss_head].iova);
		u->miss_head = (u->miss_head + 1) % MISS_QUEUE;
		u->miss_count--;
	}
	u->misses[(u->miss_head + u->miss_count) % MISS_QUEUE] = *msg;
	u->miss_count++;
	return 0;
}

static int user_set_config_call(struct uvh_vhost *b, int fd)
{
	struct user_backend *u = to_user(b);
	int kept;

	if (!u->chan) {
		UVH_ERR("%s: config changes come on the back-end channel (BACKEND_REQ)",
			b->name);
		return -EOPNOTSUPP;
	}
	kept = uvh__dup_fd(fd);
	if (fd >= 0 && kept < 0)
		return kept;
	uvh_close_fd(&u->config_fd);
	u->config_fd = kept;
	return 0;
}

static int user_iotlb_msg(struct uvh_vhost *b, const struct uvh_iotlb *msg)
{
	return uvh_frontend_iotlb_msg(to_user(b)->fe, msg);
}

static int user_iotlb_miss(struct uvh_vhost *b, struct uvh_iotlb *msg, int timeout_ms)
{
	struct user_backend *u = to_user(b);
	int64_t deadline = timeout_ms >= 0 ? uvh__now_ms() + timeout_ms : -1;
	int ret;

	if (!msg)
		return -EINVAL;
	if (!u->chan)
		return -EOPNOTSUPP;
	for (;;) {
		int wait = -1;

		if (u->miss_count) {
			*msg = u->misses[u->miss_head];
			u->miss_head = (u->miss_head + 1) % MISS_QUEUE;
			u->miss_count--;
			return 0;
		}
		if (deadline >= 0) {
			int64_t left = deadline - uvh__now_ms();

			if (left < 0)
				return -ETIMEDOUT;
			wait = (int)left;
		}
		ret = uvh_frontend_poll_backend(u->fe, wait);
		if (ret < 0) {
			if (ret == -ENOTCONN)
				u->chan = false;	/* the channel failed and is gone */
			return ret;
		}
		if (ret == 0 && !u->miss_count && deadline >= 0 && uvh__now_ms() >= deadline)
			return -ETIMEDOUT;
	}
}

/* ---- queues, suspend, inflight --------------------------------------------------------- */

static int user_get_queue_num(struct uvh_vhost *b, uint64_t *num)
{
	struct user_backend *u = to_user(b);

	if (!num)
		return -EINVAL;
	if (!pf_on(u, PF(MQ))) {
		*num = 1;
		return 0;
	}
	return uvh_frontend_get_queue_num(u->fe, num);
}

static int user_suspend(struct uvh_vhost *b)
{
	struct user_backend *u = to_user(b);
	uint32_t base;
	int ret;

	for (uint32_t i = 0; i < MAX_RINGS; i++) {
		struct user_ring *r = &u->rings[i];

		if (!r->started)
			continue;
		ret = uvh_frontend_get_vring_base(u->fe, i, &base);
		if (ret) {
			UVH_ERR("%s: vring %u cannot be suspended: %s", b->name, i,
				strerror(-ret));
			return ret;
		}
		r->base = base;
		r->started = false;
		r->suspended = true;
	}
	return 0;
}

static int resume_ring(struct user_backend *u, uint32_t i)
{
	struct user_ring *r = &u->rings[i];
	int ret;

	ret = uvh_frontend_set_vring_num(u->fe, i, r->num);
	if (!ret && r->have_addr)
		ret = send_vring_addr(u, &r->addr);
	if (!ret)
		ret = uvh_frontend_set_vring_base(u->fe, i, r->base);
	if (!ret && r->call >= 0)
		ret = uvh_frontend_set_vring_call(u->fe, i, r->call);
	if (!ret && r->err >= 0)
		ret = uvh_frontend_set_vring_err(u->fe, i, r->err);
	if (!ret)
		ret = uvh_frontend_set_vring_kick(u->fe, i, r->kick);
	if (!ret)
		r->started = true;
	if (!ret && r->enabled && acked(u, UVH_F_PROTOCOL_FEATURES))
		ret = uvh_frontend_set_vring_enable(u->fe, i, true);
	return ret;
}

static int user_resume(struct uvh_vhost *b)
{
	struct user_backend *u = to_user(b);
	int ret;

	for (uint32_t i = 0; i < MAX_RINGS; i++) {
		if (!u->rings[i].suspended)
			continue;
		u->rings[i].suspended = false;
		ret = resume_ring(u, i);
		if (ret) {
			UVH_ERR("%s: vring %u cannot resume: %s", b->name, i, strerror(-ret));
			return ret;
		}
	}
	return 0;
}

static int user_get_inflight_fd(struct uvh_vhost *b, uint16_t num_queues, uint16_t queue_size,
				int *fd, uint64_t *mmap_size)
{
	struct uvh_inflight in = { .num_queues = num_queues, .queue_size = queue_size };
	struct uvh_inflight out;
	int got = -1, ret;

	if (!fd || !mmap_size || !num_queues || !queue_size)
		return -EINVAL;
	ret = uvh_frontend_get_inflight_fd(to_user(b)->fe, &in, &out, &got);
	if (ret)
		return ret;
	if (got < 0 || !out.mmap_size) {
		uvh_close_fd(&got);
		return -EOPNOTSUPP;	/* the back-end keeps no inflight area */
	}
	if (out.mmap_offset) {
		/* Our callers map from offset 0 (the op has no offset). */
		UVH_ERR("%s: inflight area at offset 0x%" PRIx64 " is not supported", b->name,
			out.mmap_offset);
		uvh_close_fd(&got);
		return -EPROTO;
	}
	*fd = got;
	*mmap_size = out.mmap_size;
	return 0;
}

static int user_set_inflight_fd(struct uvh_vhost *b, uint16_t num_queues, uint16_t queue_size,
				int fd, uint64_t mmap_size)
{
	struct uvh_inflight in = {
		.mmap_size = mmap_size, .num_queues = num_queues, .queue_size = queue_size,
	};

	if (!num_queues || !queue_size || !mmap_size)
		return -EINVAL;
	return uvh_frontend_set_inflight_fd(to_user(b)->fe, &in, fd);
}

/* ---- life cycle -------------------------------------------------------------------------- */

static void user_close(struct uvh_vhost *b)
{
	struct user_backend *u = to_user(b);

	uvh_frontend_free(u->fe);	/* closes the socket and the channel */
	forget_rings(u);
	drop_table(u->regions, u->nregions);
	uvh_close_fd(&u->config_fd);
	free(u);
}

static const struct uvh_vhost_ops user_ops = {
	.get_features = user_get_features,
	.set_features = user_set_features,
	.set_owner = user_set_owner,
	.reset_owner = user_reset_owner,
	.get_protocol_features = user_get_protocol_features,
	.set_protocol_features = user_set_protocol_features,
	.set_mem_table = user_set_mem_table,
	.add_mem_region = user_add_mem_region,
	.remove_mem_region = user_remove_mem_region,
	.get_max_mem_slots = user_get_max_mem_slots,
	.set_log_base = user_set_log_base,
	.set_log_fd = user_set_log_fd,
	.set_vring_num = user_set_vring_num,
	.get_vring_num_max = uvh__get_vring_num_max,
	.set_vring_addr = user_set_vring_addr,
	.set_vring_base = user_set_vring_base,
	.get_vring_base = user_get_vring_base,
	.set_vring_kick = user_set_vring_kick,
	.set_vring_call = user_set_vring_call,
	.set_vring_err = user_set_vring_err,
	.set_vring_enable = user_set_vring_enable,
	.get_status = user_get_status,
	.set_status = user_set_status,
	.get_config = user_get_config,
	.set_config = user_set_config,
	.set_config_call = user_set_config_call,
	.iotlb_msg = user_iotlb_msg,
	.iotlb_miss = user_iotlb_miss,
	.get_queue_num = user_get_queue_num,
	.suspend = user_suspend,
	.resume = user_resume,
	.get_inflight_fd = user_get_inflight_fd,
	.set_inflight_fd = user_set_inflight_fd,
	.close = user_close,
};

int uvh_vhost_user_open(const char *path, const struct uvh_vhost_open_opts *opts,
			  struct uvh_vhost **out)
{
	struct uvh_connect_opts co = { 0 };
	struct uvh_vhost_open_opts none = { 0 };
	struct user_backend *u;
	int timeout, ret;

	if (!path || !*path || !out)
		return -EINVAL;
	if (!opts)
		opts = &none;
	timeout = opts->user_timeout_ms ? opts->user_timeout_ms : DEFAULT_TIMEOUT_MS;
	if (timeout < 0)
		timeout = -1;
	co.timeout_ms = timeout;
	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	/* connected through uvh_frontend_connect: the front-end keeps the
	 * path, so uvh_frontend_reconnect() works on it */
	ret = uvh_frontend_connect(path, &co, &u->fe);
	/* Waiting ran out: say why the socket is not there (ENOENT,
	 * ECONNREFUSED) rather than that we waited. */
	if (ret == -ETIMEDOUT) {
		co.timeout_ms = 0;
		ret = uvh_frontend_connect(path, &co, &u->fe);
	}
	if (ret < 0) {
		UVH_ERR("user: cannot connect to %s: %s", path, strerror(-ret));
		free(u);
		return ret;
	}
	uvh_frontend_set_timeout(u->fe, timeout);
	/* before the first request: the replay needs all of them */
	if (opts->user_reconnect) {
		ret = uvh_frontend_record_session(u->fe);
		if (ret) {
			uvh_frontend_free(u->fe);
			free(u);
			return ret;
		}
		u->reconnect = true;
		u->vring_base = opts->user_vring_base;
		u->vring_opaque = opts->user_opaque;
	}
	u->b.ops = &user_ops;
	u->b.type = UVH_VHOST_USER;
	u->b.fd = uvh_frontend_fd(u->fe);
	snprintf(u->b.name, sizeof(u->b.name), "user:%s", path);
	u->config_fd = -1;
	for (unsigned int i = 0; i < MAX_RINGS; i++)
		u->rings[i].kick = u->rings[i].call = u->rings[i].err = -1;
	*out = &u->b;
	return 0;
}

/* ---- surviving a back-end restart ------------------------------------------------------ */

static struct user_backend *as_user(struct uvh_vhost *b)
{
	return b && b->type == UVH_VHOST_USER && b->ops == &user_ops ? to_user(b) : NULL;
}

int uvh_vhost_user_check(struct uvh_vhost *b, int timeout_ms)
{
	struct user_backend *u = as_user(b);

	if (!u)
		return -EOPNOTSUPP;
	return uvh_frontend_check_connection(u->fe, timeout_ms);
}

/* [replay] The base ring @index restarts from: the VMM's word, else ours. */
static int replay_base(void *opaque, uint32_t index, uint32_t *base)
{
	struct user_backend *u = opaque;
	struct user_ring *r;
	int ret;

	if (index >= MAX_RINGS)
		return -EINVAL;
	r = &u->rings[index];
	*base = r->base;	/* the last sent, or where the ring was stopped */
	if (u->vring_base) {
		ret = u->vring_base(u->vring_opaque, index, base);
		if (ret) {
			UVH_ERR("%s: vring %u: no base for the replay: %s", u->b.name, index,
				strerror(ret < 0 ? -ret : EIO));
			return ret < 0 ? ret : -EIO;
		}
	}
	r->base = *base;
	return 0;
}

int uvh_vhost_user_reconnect(struct uvh_vhost *b, int timeout_ms)
{
	struct user_backend *u = as_user(b);
	struct uvh_frontend_reconnect_opts o = {
		.connect = { .timeout_ms = timeout_ms < 0 ? -1 : timeout_ms,
			     .initial_delay_ms = 5, .max_delay_ms = 100 },
		.vring_base = replay_base,
	};
	int ret;

	if (!u)
		return -EOPNOTSUPP;
	if (!u->reconnect)
		return -EINVAL;
	o.opaque = u;
	/* what the old process queued is about mappings that went with it */
	u->miss_head = u->miss_count = 0;
	ret = uvh_frontend_reconnect(u->fe, &o);
	u->b.fd = uvh_frontend_fd(u->fe);
	u->chan = uvh_frontend_backend_req_fd(u->fe) >= 0;
	/* a new process may offer otherwise: ask again when needed */
	u->have_offered = u->have_pf_offered = false;
	if (ret) {
		UVH_ERR("%s: reconnect failed: %s", b->name, strerror(-ret));
		return ret;
	}
	UVH_INFO("%s: reconnected, session replayed", b->name);
	return 0;
}
