/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the front-end's session journal and its replay on a new
 * connection (see frontend_session.h and uvh_frontend_reconnect()).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "util.h"
#include "frontend_session.h"
#include "log.h"

#define NRINGS		(UVH_VRING_IDX_MASK + 1u)

struct fe_ring {
	bool num_set, base_set, addr_set, enable_set, enabled;
	bool fd_set[3];			/* kick, call, err */
	uint32_t num, base;
	struct uvh_vring_addr addr;
	int fd[3];			/* our duplicates, -1 = the "no fd" bit */
};

struct fe_mem {
	struct uvh_mem_region r;
	int fd;
};

struct fe_session {
	bool broken;			/* a record was lost: no replay */
	bool replaying;
	bool features_set, pf_set;
	uint64_t features, pf;
	const struct uvh_frontend_req_ops *chan_ops;
	void *chan_opaque;
	/* memory: SET_MEM_TABLE's regions, or what ADD/REM_MEM_REG left */
	struct fe_mem *mem;
	unsigned int nmem, capmem;
	bool mem_by_slots;
	bool inflight_set;
	struct uvh_inflight inflight;
	int inflight_fd;
	bool status_set;
	uint8_t status;
	struct fe_ring *rings[NRINGS];
};

enum { FD_KICK, FD_CALL, FD_ERR };

static void lost(struct fe_session *s, const char *what, int err)
{
	if (!s->broken)
		UVH_ERR("front-end: session journal lost %s (%s): no reconnect possible",
			what, strerror(err));
	s->broken = true;
}

static int dup_fd(struct fe_session *s, int fd, const char *what)
{
	int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);

	if (d < 0)
		lost(s, what, errno);
	return d;
}

struct fe_session *fe_session_new(void)
{
	struct fe_session *s = calloc(1, sizeof(*s));

	if (s)
		s->inflight_fd = -1;
	return s;
}

static void ring_free(struct fe_ring *r)
{
	for (unsigned int k = 0; k < 3; k++)
		uvh_close_fd(&r->fd[k]);
	free(r);
}

static void mem_clear(struct fe_session *s)
{
	for (unsigned int i = 0; i < s->nmem; i++)
		uvh_close_fd(&s->mem[i].fd);
	s->nmem = 0;
}

void fe_session_free(struct fe_session *s)
{
	if (!s)
		return;
	mem_clear(s);
	free(s->mem);
	uvh_close_fd(&s->inflight_fd);
	for (unsigned int i = 0; i < NRINGS; i++)
		if (s->rings[i])
			ring_free(s->rings[i]);
	free(s);
}

bool fe_session_replaying(const struct fe_session *s)
{
	return s && s->replaying;
}

static bool recording(const struct fe_session *s)
{
	return s && !s->replaying && !s->broken;
}

void fe_session_features(struct fe_session *s, uint64_t features)
{
	if (!recording(s))
		return;
	s->features = features;
	s->features_set = true;
}

void fe_session_protocol_features(struct fe_session *s, uint64_t pf)
{
	if (!recording(s))
		return;
	s->pf = pf;
	s->pf_set = true;
}

void fe_session_backend_req(struct fe_session *s, const struct uvh_frontend_req_ops *ops,
			    void *opaque)
{
	if (!recording(s))
		return;
	s->chan_ops = ops;
	s->chan_opaque = opaque;
}

static bool mem_room(struct fe_session *s, unsigned int n)
{
	struct fe_mem *m;
	unsigned int cap;

	if (n <= s->capmem)
		return true;
	cap = n < 8 ? 8 : n * 2;
	m = realloc(s->mem, cap * sizeof(*m));
	if (!m) {
		lost(s, "a memory region", ENOMEM);
		return false;
	}
	s->mem = m;
	s->capmem = cap;
	return true;
}

void fe_session_mem_table(struct fe_session *s, const struct uvh_mem_region *regions,
			  const int *fds, unsigned int n)
{
	if (!recording(s))
		return;
	mem_clear(s);
	s->mem_by_slots = false;
	if (!mem_room(s, n))
		return;
	for (unsigned int i = 0; i < n; i++) {
		int d = dup_fd(s, fds[i], "a memory region fd");

		if (d < 0)
			return;
		s->mem[s->nmem].r = regions[i];
		s->mem[s->nmem].fd = d;
		s->nmem++;
	}
}

void fe_session_add_mem(struct fe_session *s, const struct uvh_mem_region *region, int fd)
{
	int d;

	if (!recording(s) || !mem_room(s, s->nmem + 1))
		return;
	d = dup_fd(s, fd, "a memory region fd");
	if (d < 0)
		return;
	s->mem_by_slots = true;
	s->mem[s->nmem].r = *region;
	s->mem[s->nmem].fd = d;
	s->nmem++;
}

void fe_session_rem_mem(struct fe_session *s, const struct uvh_mem_region *region)
{
	if (!recording(s))
		return;
	for (unsigned int i = 0; i < s->nmem; i++) {
		const struct uvh_mem_region *r = &s->mem[i].r;

		if (r->guest_phys_addr != region->guest_phys_addr ||
		    r->memory_size != region->memory_size ||
		    r->userspace_addr != region->userspace_addr)
			continue;
		uvh_close_fd(&s->mem[i].fd);
		s->mem[i] = s->mem[--s->nmem];
		s->mem_by_slots = true;
		return;
	}
}

void fe_session_inflight(struct fe_session *s, const struct uvh_inflight *in, int fd)
{
	int d;

	if (!recording(s))
		return;
	d = dup_fd(s, fd, "the inflight area fd");
	if (d < 0)
		return;
	uvh_close_fd(&s->inflight_fd);
	s->inflight_fd = d;
	s->inflight = *in;
	s->inflight_set = true;
}

static struct fe_ring *ring_of(struct fe_session *s, uint32_t index)
{
	struct fe_ring *r;

	if (index >= NRINGS)
		return NULL;	/* the back-end refused it already */
	r = s->rings[index];
	if (r)
		return r;
	r = calloc(1, sizeof(*r));
	if (!r) {
		lost(s, "a ring", ENOMEM);
		return NULL;
	}
	r->fd[FD_KICK] = r->fd[FD_CALL] = r->fd[FD_ERR] = -1;
	s->rings[index] = r;
	return r;
}

void fe_session_vring_state(struct fe_session *s, uint32_t request, uint32_t index,
			    uint32_t num)
{
	struct fe_ring *r;

	if (!recording(s) || !(r = ring_of(s, index)))
		return;
	switch (request) {
	case UVH_REQ_SET_VRING_NUM:
		r->num = num;
		r->num_set = true;
		break;
	case UVH_REQ_SET_VRING_BASE:
		r->base = num;
		r->base_set = true;
		break;
	case UVH_REQ_SET_VRING_ENABLE:
		r->enabled = num != 0;
		r->enable_set = true;
		break;
	default:
		break;
	}
}

void fe_session_vring_stopped(struct fe_session *s, uint32_t index, uint32_t base)
{
	struct fe_ring *r;

	if (!recording(s) || index >= NRINGS || !(r = s->rings[index]))
		return;
	r->base = base;
	r->base_set = true;
	uvh_close_fd(&r->fd[FD_KICK]);
	r->fd_set[FD_KICK] = false;
}

void fe_session_reset(struct fe_session *s)
{
	if (!recording(s))
		return;
	for (unsigned int i = 0; i < NRINGS; i++) {
		if (s->rings[i])
			ring_free(s->rings[i]);
		s->rings[i] = NULL;
	}
	s->status_set = false;
	s->inflight_set = false;
	uvh_close_fd(&s->inflight_fd);
}

void fe_session_vring_addr(struct fe_session *s, const struct uvh_vring_addr *addr)
{
	struct fe_ring *r;

	if (!recording(s) || !(r = ring_of(s, addr->index)))
		return;
	r->addr = *addr;
	r->addr_set = true;
}

void fe_session_vring_fd(struct fe_session *s, uint32_t request, uint32_t index, int fd)
{
	struct fe_ring *r;
	int k, d = -1;

	if (!recording(s) || !(r = ring_of(s, index)))
		return;
	k = request == UVH_REQ_SET_VRING_KICK ? FD_KICK :
	    request == UVH_REQ_SET_VRING_CALL ? FD_CALL : FD_ERR;
	if (fd >= 0 && (d = dup_fd(s, fd, "a ring eventfd")) < 0)
		return;
	uvh_close_fd(&r->fd[k]);
	r->fd[k] = d;
	r->fd_set[k] = true;
}

void fe_session_status(struct fe_session *s, uint8_t status)
{
	if (!recording(s))
		return;
	s->status = status;
	s->status_set = true;
}

/* ---- replay ------------------------------------------------------------------ */

#define STEP(call, what)							\
	do {									\
		int r_ = (call);						\
		if (r_) {							\
			UVH_ERR("front-end: replay: %s failed: %s", what,	\
				strerror(-r_));					\
			return r_;						\
		}								\
	} while (0)

/* The new back-end must still offer everything that was in force. */
static int check_offer(const char *what, uint64_t want, uint64_t offered)
{
	if ((want & offered) == want)
		return 0;
	UVH_ERR("front-end: replay: the back-end no longer offers %s 0x%llx", what,
		(unsigned long long)(want & ~offered));
	return -EPROTO;
}

static int replay_negotiation(struct fe_session *s, struct uvh_frontend *fe)
{
	uint64_t offered;

	STEP(uvh_frontend_set_owner(fe), "SET_OWNER");
	if (!s->features_set)
		return 0;
	STEP(uvh_frontend_get_features(fe, &offered), "GET_FEATURES");
	STEP(check_offer("features", s->features, offered), "features");
	STEP(uvh_frontend_set_features(fe, s->features), "SET_FEATURES");
	if (!s->pf_set)
		return 0;
	STEP(uvh_frontend_get_protocol_features(fe, &offered), "GET_PROTOCOL_FEATURES");
	STEP(check_offer("protocol features", s->pf, offered), "protocol features");
	STEP(uvh_frontend_set_protocol_features(fe, s->pf), "SET_PROTOCOL_FEATURES");
	return 0;
}

static int replay_memory(struct fe_session *s, struct uvh_frontend *fe)
{
	struct uvh_mem_region regions[UVH_MEMORY_MAX_NREGIONS];
	int fds[UVH_MEMORY_MAX_NREGIONS];

	if (!s->nmem)
		return 0;
	if (!s->mem_by_slots && s->nmem <= UVH_MEMORY_MAX_NREGIONS) {
		for (unsigned int i = 0; i < s->nmem; i++) {
			regions[i] = s->mem[i].r;
			fds[i] = s->mem[i].fd;
		}
		STEP(uvh_frontend_set_mem_table(fe, regions, fds, s->nmem), "SET_MEM_TABLE");
		return 0;
	}
	for (unsigned int i = 0; i < s->nmem; i++)
		STEP(uvh_frontend_add_mem_reg(fe, &s->mem[i].r, s->mem[i].fd), "ADD_MEM_REG");
	return 0;
}

/* A ring's set-up up to its kick (which starts it: replay_kick). */
static int replay_ring(struct fe_session *s, struct uvh_frontend *fe, uint32_t index,
		       const struct uvh_frontend_reconnect_opts *opts)
{
	struct fe_ring *r = s->rings[index];
	uint32_t base = r->base;

	if (r->num_set)
		STEP(uvh_frontend_set_vring_num(fe, index, r->num), "SET_VRING_NUM");
	if (opts->vring_base)
		STEP(opts->vring_base(opts->opaque, index, &base), "the ring's base");
	if (r->base_set || opts->vring_base)
		STEP(uvh_frontend_set_vring_base(fe, index, base), "SET_VRING_BASE");
	if (r->addr_set)
		STEP(uvh_frontend_set_vring_addr(fe, &r->addr), "SET_VRING_ADDR");
	if (r->fd_set[FD_ERR])
		STEP(uvh_frontend_set_vring_err(fe, index, r->fd[FD_ERR]), "SET_VRING_ERR");
	if (r->fd_set[FD_CALL])
		STEP(uvh_frontend_set_vring_call(fe, index, r->fd[FD_CALL]), "SET_VRING_CALL");
	return 0;
}

static int replay(struct fe_session *s, struct uvh_frontend *fe,
		  const struct uvh_frontend_reconnect_opts *opts)
{
	int ret;

	ret = replay_negotiation(s, fe);
	if (ret)
		return ret;
	if (s->chan_ops)
		STEP(uvh_frontend_set_backend_req(fe, s->chan_ops, s->chan_opaque),
		     "SET_BACKEND_REQ_FD");
	ret = replay_memory(s, fe);
	if (ret)
		return ret;
	/* the same area: the new process finds what the old one left in flight */
	if (s->inflight_set)
		STEP(uvh_frontend_set_inflight_fd(fe, &s->inflight, s->inflight_fd),
		     "SET_INFLIGHT_FD");
	for (uint32_t i = 0; i < NRINGS; i++) {
		if (!s->rings[i])
			continue;
		ret = replay_ring(s, fe, i, opts);
		if (ret)
			return ret;
	}
	/*
	 * Enable before the kicks that start the rings: a ring started while
	 * disabled is consumed without side effects (the spec), which for
	 * net drops every frame the driver queued while nobody listened.
	 */
	for (uint32_t i = 0; i < NRINGS; i++)
		if (s->rings[i] && s->rings[i]->enable_set)
			STEP(uvh_frontend_set_vring_enable(fe, i, s->rings[i]->enabled),
			     "SET_VRING_ENABLE");
	for (uint32_t i = 0; i < NRINGS; i++)
		if (s->rings[i] && s->rings[i]->fd_set[FD_KICK])
			STEP(uvh_frontend_set_vring_kick(fe, i, s->rings[i]->fd[FD_KICK]),
			     "SET_VRING_KICK");
	if (s->status_set)
		STEP(uvh_frontend_set_status(fe, s->status), "SET_STATUS");
	/* The spec: front-ends SHOULD kick after SET_VRING_KICK; the driver
	 * may have made buffers available while nobody listened. */
	for (uint32_t i = 0; i < NRINGS; i++) {
		struct fe_ring *r = s->rings[i];

		if (r && r->fd[FD_KICK] >= 0 && eventfd_write(r->fd[FD_KICK], 1) < 0)
			UVH_WARN("front-end: replay: kick of ring %u: %s", i, strerror(errno));
	}
	return 0;
}

int fe_session_replay(struct fe_session *s, struct uvh_frontend *fe,
		      const struct uvh_frontend_reconnect_opts *opts)
{
	int ret;

	if (!s || s->replaying)
		return -EINVAL;
	if (s->broken)
		return -ENOTRECOVERABLE;
	s->replaying = true;
	ret = replay(s, fe, opts);
	s->replaying = false;
	return ret;
}
