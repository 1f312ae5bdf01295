/* SPDX-License-Identifier: MIT */
/*
 * One session: a plan drawn from (seed, session index), the vhost-user set-up it implies
 * (any order the spec allows), loopback traffic checked frame by frame, and an end.
 * The plan and the frames come from the plan PRNG only, so a session replays exactly;
 * choices that depend on timing (batch sizes, delays under traffic) use a second stream.
 */
#include "conform.h"

#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_FRAMES 300
#define STALL_NS 2000000000ull
#define TX_SLOT 1600 /* header, a 64-byte gap, a full frame */
#define SPIN_NS 20000ull /* polling: yield this long, then pause between looks */

enum { RX_BEFORE, RX_DURING, RX_AFTER, RX_AFTER_TX };
enum { END_CLOSE, END_GVB, END_ABORT_SETUP, END_ABORT_TRAFFIC };
enum { ST_MSG, ST_POST_RX, ST_KICK, ST_READ, ST_READ_ALL };

struct plan {
	bool packed, mrg, event_idx, indirect, net_mq, mq, reply_ack, blind, interleave, delays;
	bool after_replies, kick_always, irq, pingpong, queue_num;
	unsigned qsize, pairs, nregions, mem_mb, rx_buf_len, nframes, rx_when, end;
	unsigned abort_step, abort_frames;
};

struct frame {
	uint16_t pair, seq, len, split; /* split: bytes of header+frame in the 1st descriptor */
	uint8_t layout;                 /* 0 one descriptor, 1 two, 2/3 indirect with 1/2 */
	bool tx_done, may_drop;         /* may_drop: sent while no RX buffer was posted */
};

struct step {
	uint8_t kind, req, ring;
};

static struct {
	uint64_t fseed, rng, trng;
	unsigned k;
	struct plan p;
	struct gmem mem;
	struct vq q[MAX_RINGS];
	unsigned nq, nrings;
	struct vu vu;
	uint64_t features, proto, offered, proto_offered, queue_num, base[MAX_RINGS];
	bool offers_checked;
	struct frame f[MAX_FRAMES];
	struct { uint16_t idx[MAX_FRAMES]; unsigned n, sent, recvd, need; } pr[2];
	unsigned recvd_total, dropped, waits;
	uint64_t sent_at, rtt_sum, rtt_max; /* pingpong round trips */
	bool rx_posted, synced;
	const char *stage;
	char trace[480]; /* the set-up as it went, one short code per step */
} S = {.mem.fd = -1, .vu.sock = -1};
#define P (S.p)

static void plan_make(int pattern)
{
	uint64_t *r = &S.rng;

	P.packed = rng_pct(r, 50);
	P.qsize = rng_pct(r, 70) ? 256 : rng_pct(r, 50) ? 64 : 1024;
	P.mrg = rng_pct(r, 50);
	P.event_idx = rng_pct(r, 50);
	P.indirect = rng_pct(r, 40);
	P.pairs = rng_pct(r, 50) ? 2 : 1;
	P.net_mq = P.pairs == 2;
	P.mq = P.pairs == 2 || rng_pct(r, 50);
	P.queue_num = P.mq && rng_pct(r, 50);
	P.reply_ack = rng_pct(r, 50);
	P.blind = rng_pct(r, 40);
	P.nregions = rng_pct(r, 30) ? 2 : 1;
	P.mem_mb = 16 + 2 * rng_below(r, 25);
	P.interleave = rng_pct(r, 50);
	P.delays = rng_pct(r, 15);
	P.after_replies = rng_pct(r, 35);
	P.rx_when = rng_below(r, 4);
	P.kick_always = rng_pct(r, 40);
	P.irq = rng_pct(r, 50);
	P.pingpong = pattern == PAT_PINGPONG || (pattern == PAT_MIXED && rng_pct(r, 25));
	P.nframes = P.pingpong ? MAX_FRAMES : rng_range(r, 16, 200);
	if (P.mrg && rng_pct(r, 50))
		P.rx_buf_len = rng_range(r, 256, 600); /* a frame spans several buffers */
	else
		P.rx_buf_len = rng_pct(r, 50) ? 2048 : NET_HDR_LEN + FRAME_MAX; /* exact fit */
	unsigned e = rng_below(r, 100);
	P.end = e < 10 ? END_ABORT_SETUP : e < 25 ? END_ABORT_TRAFFIC : e < 65 ? END_GVB : END_CLOSE;
	P.abort_frames = rng_below(r, P.nframes);
	S.nrings = 2 * P.pairs;

	S.features = 1ull << F_VERSION_1 | 1ull << F_PROTOCOL_FEATURES |
		     (uint64_t)P.mrg << F_MRG_RXBUF | (uint64_t)P.event_idx << F_EVENT_IDX |
		     (uint64_t)P.indirect << F_INDIRECT_DESC | (uint64_t)P.packed << F_RING_PACKED |
		     (uint64_t)P.net_mq << F_NET_MQ;
	S.proto = (uint64_t)P.mq << PF_MQ | (uint64_t)P.reply_ack << PF_REPLY_ACK;

	for (unsigned g = 0; g < P.nframes; g++) {
		struct frame *f = &S.f[g];
		f->pair = (uint16_t)(P.pingpong ? g % P.pairs : rng_below(r, P.pairs));
		f->seq = (uint16_t)S.pr[f->pair].n;
		S.pr[f->pair].idx[S.pr[f->pair].n++] = (uint16_t)g;
		f->len = (uint16_t)rng_range(r, FRAME_MIN, FRAME_MAX);
		f->layout = (uint8_t)rng_below(r, P.indirect ? 4 : 2);
		/* Header alone in the first descriptor, or any split (virtio 1.x: the
		 * device must not assume a framing). */
		f->split = rng_pct(r, 80) ? NET_HDR_LEN : (uint16_t)rng_range(r, 1, NET_HDR_LEN + f->len - 1u);
	}
}

void session_describe(char *buf, size_t size)
{
	static const char *const rxw[] = {"before-setup", "during-setup", "after-setup", "after-tx"};
	static const char *const ends[] = {"close", "get-vring-base", "abort-setup", "abort-traffic"};
	int n = snprintf(buf, size,
		"  params: %s qsize=%u mrg=%d rxbuf=%u event_idx=%d indirect=%d pairs=%u mq=%d "
		"reply_ack=%d %s regions=%u mem=%uMiB rings=%s delays=%d traffic=%s rx=%s kick=%s "
		"wait=%s pattern=%s frames=%u end=%s", P.packed ? "packed" : "split", P.qsize, P.mrg,
		P.rx_buf_len, P.event_idx, P.indirect, P.pairs, P.mq, P.reply_ack,
		P.blind ? "blind" : "polite", P.nregions, P.mem_mb,
		P.interleave ? "interleaved" : "in-order", P.delays,
		P.after_replies ? "after-replies" : "immediate", rxw[P.rx_when],
		P.kick_always ? "always" : "on-demand", P.irq ? "interrupt" : "poll",
		P.pingpong ? "pingpong" : "burst", P.nframes, ends[P.end]);
	if (P.end == END_ABORT_SETUP)
		n += snprintf(buf + n, size - (size_t)n, " (at step %u)", P.abort_step);
	if (P.end == END_ABORT_TRAFFIC)
		n += snprintf(buf + n, size - (size_t)n, " (after %u frames)", P.abort_frames);
	n += snprintf(buf + n, size - (size_t)n, "\n  set-up:%s", S.trace);
	n += snprintf(buf + n, size - (size_t)n, "\n  stage: %s; replies read %u, outstanding %u; "
		      "traffic started %s\n", S.stage ? S.stage : "-", S.vu.replies,
		      vu_outstanding(&S.vu), S.synced ? "after the back-end acked the whole set-up" :
		      "before the whole set-up was acked");
	for (unsigned p = 0; p < P.pairs; p++)
		n += snprintf(buf + n, size - (size_t)n, "  pair %u: %u frames, %u sent, %u back\n",
			      p, S.pr[p].n, S.pr[p].sent, S.pr[p].recvd);
	if (P.pingpong && S.recvd_total)
		n += snprintf(buf + n, size - (size_t)n, "  round trips: mean %llu us, max %llu us\n",
			      (unsigned long long)(S.rtt_sum / S.recvd_total / 1000),
			      (unsigned long long)(S.rtt_max / 1000));
	for (unsigned i = 0; i < S.nq && (size_t)n < size; i++)
		n += vq_dump(&S.q[i], buf + n, size - (size_t)n);
}

void session_cleanup(void)
{
	vu_close(&S.vu);
	for (unsigned i = 0; i < S.nq; i++)
		vq_free(&S.q[i]);
	S.nq = 0;
	gmem_free(&S.mem);
}

/* Bytes 0-7 stamp the frame (so a wrong one can be named), the rest is PRNG. */
static void frame_bytes(uint8_t *out, const struct frame *f)
{
	uint64_t s = rng_seed(S.fseed, (uint64_t)f->pair << 32 | f->seq);
	for (unsigned i = 0; i < f->len; i += 8) {
		uint64_t v = rng_next(&s);
		memcpy(out + i, &v, f->len - i < 8 ? f->len - i : 8);
	}
	uint8_t stamp[8] = {'c', 'f', (uint8_t)f->pair, (uint8_t)S.k, (uint8_t)f->seq,
			    (uint8_t)(f->seq >> 8), (uint8_t)f->len, (uint8_t)(f->len >> 8)};
	memcpy(out, stamp, sizeof(stamp));
}

static void name_frame(char *buf, size_t size, const uint8_t *d, unsigned len)
{
	if (len >= 8 && d[0] == 'c' && d[1] == 'f')
		snprintf(buf, size, "pair %u frame #%u (len %u) of session ...%u, %u bytes", d[2],
			 d[4] | d[5] << 8, d[6] | d[7] << 8, d[3], len);
	else
		snprintf(buf, size, "%u bytes not from this tool (%02x %02x %02x %02x)", len,
			 len > 0 ? d[0] : 0, len > 1 ? d[1] : 0, len > 2 ? d[2] : 0, len > 3 ? d[3] : 0);
}

static void check_offers(void)
{
	if (S.offers_checked || S.vu.replies < 2)
		return;
	S.offers_checked = true;
	if (S.features & ~S.offered)
		fail("GET_FEATURES offered %#llx: bits %#llx this session set are missing",
		     (unsigned long long)S.offered, (unsigned long long)(S.features & ~S.offered));
	if (S.proto & ~S.proto_offered)
		fail("GET_PROTOCOL_FEATURES offered %#llx: bits %#llx this session set are missing",
		     (unsigned long long)S.proto_offered,
		     (unsigned long long)(S.proto & ~S.proto_offered));
}

static void read_all(void)
{
	vu_read_all(&S.vu);
	check_offers();
}

/* -------- set-up -------- */

static void rx_fill(struct vq *q)
{
	int id;
	while ((id = vq_next_id(q, 1)) >= 0) {
		uint64_t gpa;
		/* Poison: bytes the device claims to write but does not are caught. */
		memset(vq_slot(q, (uint16_t)id, &gpa), 0xa5, q->buf_len);
		vq_add(q, &(struct seg){gpa, q->buf_len}, 1, true, false, id);
	}
	vq_publish(q);
	vq_notify(q, P.kick_always);
}

/* The set-up as it went, for the failure report: GF SO GP SP QN SF MT, then per ring
 * <ring>N A B C K E (SET_VRING_*), <ring>k a kick, <ring>R RX buffers posted; ? replies
 * read, ! all replies read; + NEED_REPLY set. */
static void trace(const struct step *st, bool nr)
{
	static const char *const msg[] = {[VU_GET_FEATURES] = "GF", [VU_SET_OWNER] = "SO",
		[VU_GET_PROTOCOL_FEATURES] = "GP", [VU_SET_PROTOCOL_FEATURES] = "SP",
		[VU_GET_QUEUE_NUM] = "QN", [VU_SET_FEATURES] = "SF", [VU_SET_MEM_TABLE] = "MT",
		[VU_SET_VRING_NUM] = "N", [VU_SET_VRING_ADDR] = "A", [VU_SET_VRING_BASE] = "B",
		[VU_SET_VRING_CALL] = "C", [VU_SET_VRING_KICK] = "K", [VU_SET_VRING_ENABLE] = "E"};
	static const char *const other[] = {[ST_POST_RX] = "R", [ST_KICK] = "k", [ST_READ] = "?",
					    [ST_READ_ALL] = "!"};
	const char *code = st->kind == ST_MSG ? msg[st->req] : other[st->kind];
	char ring[4] = "";
	size_t n = strlen(S.trace);

	if (st->kind == ST_POST_RX || st->kind == ST_KICK || (st->kind == ST_MSG && !code[1]))
		snprintf(ring, sizeof(ring), "%u", st->ring);
	snprintf(S.trace + n, sizeof(S.trace) - n, " %s%s%s", ring, code, nr ? "+" : "");
}

/* Returns whether the message solicits a reply. */
static bool send_msg(const struct step *st, bool negotiated)
{
	struct vq *q = &S.q[st->ring];
	uint32_t r = st->ring, size = 0, nfds = 0;
	/* NEED_REPLY only once REPLY_ACK is negotiated, on most messages, even on those
	 * with their own reply (where it must change nothing). */
	bool nr = negotiated && P.reply_ack && rng_pct(&S.rng, 70);
	uint64_t *out = NULL, u64 = r;
	const void *payload = NULL;
	int fds[2];
	struct { uint32_t index, num; } state = {r, 0};
	struct { uint32_t index, flags; uint64_t desc, used, avail, log; } addr = {
		r, 0, q->ring_uva[0], q->ring_uva[1], q->ring_uva[2], 0};
	struct { uint32_t n, pad; uint64_t reg[VU_MAX_REGIONS][4]; } mt = {S.mem.nregions, 0, {{0}}};

	switch (st->req) {
	case VU_GET_FEATURES: out = &S.offered; break;
	case VU_GET_PROTOCOL_FEATURES: out = &S.proto_offered; break;
	case VU_GET_QUEUE_NUM: out = &S.queue_num; break;
	case VU_SET_PROTOCOL_FEATURES: payload = &S.proto; size = 8; break;
	case VU_SET_FEATURES: payload = &S.features; size = 8; break;
	case VU_SET_VRING_ADDR: payload = &addr; size = sizeof(addr); break;
	case VU_SET_MEM_TABLE:
		for (unsigned i = 0; i < S.mem.nregions; i++) {
			uint64_t reg[4] = {S.mem.r[i].gpa, S.mem.r[i].size,
					   (uintptr_t)S.mem.r[i].va, S.mem.r[i].offset};
			memcpy(mt.reg[i], reg, sizeof(reg));
			fds[nfds++] = S.mem.fd;
		}
		payload = &mt;
		size = 8 + 32 * S.mem.nregions;
		break;
	case VU_SET_VRING_KICK:
	case VU_SET_VRING_CALL:
		fds[nfds++] = st->req == VU_SET_VRING_KICK ? q->kickfd : q->callfd;
		payload = &u64;
		size = 8;
		break;
	case VU_SET_VRING_NUM:
	case VU_SET_VRING_BASE:
	case VU_SET_VRING_ENABLE:
		/* BASE: split 0; packed avail and used positions 0, both wrap counters 1. */
		state.num = st->req == VU_SET_VRING_NUM ? q->num :
			    st->req == VU_SET_VRING_ENABLE ? 1 : P.packed ? 1u << 15 | 1u << 31 : 0;
		payload = &state;
		size = sizeof(state);
		break;
	}
	if (st->req == VU_SET_OWNER || st->req == VU_SET_PROTOCOL_FEATURES ||
	    st->req == VU_GET_FEATURES || st->req == VU_GET_PROTOCOL_FEATURES)
		nr = false;
	vu_send(&S.vu, st->req, nr, payload, size, fds, nfds, r, out);
	trace(st, nr);
	return nr || out;
}

static unsigned add(struct step *s, unsigned n, uint8_t kind, uint8_t req, unsigned ring)
{
	s[n] = (struct step){kind, req, (uint8_t)ring};
	return n + 1;
}

/* The set-up as a list of steps: the fixed negotiation prefix, then per ring NUM, ADDR,
 * BASE and CALL/KICK/ENABLE in any order, rings one after another or interleaved, with
 * RX buffers and kicks placed anywhere the plan says. */
static unsigned plan_steps(struct step *s)
{
	uint64_t *r = &S.rng;
	struct step ring[MAX_RINGS][12];
	unsigned rn[MAX_RINGS] = {0}, n = 0;

	if (P.rx_when == RX_BEFORE)
		for (unsigned i = 0; i < S.nrings; i += 2)
			n = add(s, n, ST_POST_RX, 0, i);
	n = add(s, n, ST_MSG, VU_GET_FEATURES, 0);
	n = add(s, n, ST_MSG, VU_SET_OWNER, 0);
	n = add(s, n, ST_MSG, VU_GET_PROTOCOL_FEATURES, 0);
	if (!P.blind)
		n = add(s, n, ST_READ_ALL, 0, 0);
	n = add(s, n, ST_MSG, VU_SET_PROTOCOL_FEATURES, 0);
	if (P.queue_num)
		n = add(s, n, ST_MSG, VU_GET_QUEUE_NUM, 0);
	n = add(s, n, ST_MSG, VU_SET_FEATURES, 0);
	n = add(s, n, ST_MSG, VU_SET_MEM_TABLE, 0);
	for (unsigned i = 0; i < S.nrings; i++) {
		uint8_t last[3] = {VU_SET_VRING_CALL, VU_SET_VRING_KICK, VU_SET_VRING_ENABLE};
		for (unsigned j = 2; j > 0; j--) {
			unsigned o = rng_below(r, j + 1);
			uint8_t t = last[j]; last[j] = last[o]; last[o] = t;
		}
		struct step *x = ring[i];
		unsigned m = 0;
		m = add(x, m, ST_MSG, VU_SET_VRING_NUM, i);
		m = add(x, m, ST_MSG, VU_SET_VRING_ADDR, i);
		m = add(x, m, ST_MSG, VU_SET_VRING_BASE, i);
		for (unsigned j = 0; j < 3; j++) {
			/* A kick on the eventfd before the back-end even has it. */
			if (last[j] == VU_SET_VRING_KICK && rng_pct(r, 25))
				m = add(x, m, ST_KICK, 0, i);
			m = add(x, m, ST_MSG, last[j], i);
			/* The kick a front-end SHOULD inject after SET_VRING_KICK. */
			if (last[j] == VU_SET_VRING_KICK && rng_pct(r, 30))
				m = add(x, m, ST_KICK, 0, i);
		}
		if (P.rx_when == RX_DURING && !(i & 1)) {
			unsigned at = rng_below(r, m + 1);
			memmove(x + at + 1, x + at, (m - at) * sizeof(*x));
			x[at] = (struct step){ST_POST_RX, 0, (uint8_t)i};
			m++;
		}
		rn[i] = m;
	}
	unsigned pos[MAX_RINGS] = {0}, left = S.nrings, cur = 0;
	while (left) {
		if (P.interleave)
			cur = rng_below(r, S.nrings);
		if (pos[cur] == rn[cur]) {
			cur = (cur + 1) % S.nrings;
			continue;
		}
		s[n++] = ring[cur][pos[cur]++];
		if (pos[cur] == rn[cur])
			left--;
		if (rng_pct(r, 15))
			n = add(s, n, ST_READ, 0, 0);
	}
	return n;
}

static void setup_rings(void)
{
	for (unsigned i = 0; i < S.nrings; i++) {
		vq_init(&S.q[i], &S.mem, &S.rng, i, (uint16_t)P.qsize, P.packed, P.event_idx,
			i & 1 ? TX_SLOT : P.rx_buf_len);
		S.nq = i + 1;
		vq_disarm(&S.q[i]);
	}
}

/* -------- traffic -------- */

/* RX buffers a frame takes: with MRG_RXBUF the device fills each before the next. */
static unsigned bufs(const struct frame *f)
{
	return P.mrg ? (NET_HDR_LEN + f->len + P.rx_buf_len - 1) / P.rx_buf_len : 1;
}

static bool tx_send(unsigned pair)
{
	struct vq *q = &S.q[2 * pair + 1];
	struct frame *f = &S.f[S.pr[pair].idx[S.pr[pair].sent]];
	unsigned two = f->layout == 1 || f->layout == 3, total = NET_HDR_LEN + f->len;
	unsigned need = S.pr[pair].need + bufs(f);
	int id = vq_next_id(q, f->layout == 1 ? 2 : 1);
	uint64_t gpa;

	/* Flow control: like a NIC, the loopback drops a frame it has no RX buffer for, so
	 * the frames in flight never need more than the RX buffers posted. Before any is
	 * posted (rx after-tx) frames may be dropped: at most half a ring's worth, never a
	 * pair's last frame. */
	if (id < 0 || (S.rx_posted ? need > S.q[2 * pair].inflight :
		       need > P.qsize / 2 || S.pr[pair].sent + 1 >= S.pr[pair].n))
		return false;
	f->may_drop = !S.rx_posted;
	S.pr[pair].need = need;
	uint8_t *b = vq_slot(q, (uint16_t)id, &gpa);
	uint8_t tmp[NET_HDR_LEN + FRAME_MAX];
	unsigned cut = two ? f->split : total;
	memset(tmp, 0, NET_HDR_LEN); /* flags, gso NONE, num_buffers 0 on TX */
	frame_bytes(tmp + NET_HDR_LEN, f);
	/* The second part after a 64-byte gap of garbage: a device that assumes the parts
	 * are contiguous reads the garbage. */
	memcpy(b, tmp, cut);
	memset(b + cut, 0xee, 64);
	memcpy(b + cut + 64, tmp + cut, total - cut);
	struct seg sg[2] = {{gpa, cut}, {gpa + cut + 64, total - cut}};
	vq_add(q, sg, two ? 2 : 1, false, f->layout >= 2, (int32_t)f->seq);
	S.pr[pair].sent++;
	return true;
}

static bool tx_reclaim(unsigned pair)
{
	struct vq *q = &S.q[2 * pair + 1];
	uint16_t id;
	uint32_t len;
	int32_t seq;
	bool any = false;

	while (vq_get(q, &id, &len, &seq)) {
		/* Packed: the length of a used read-only buffer is reserved. */
		if (!q->packed && len)
			fail("TX ring %u: frame #%d returned with used len %u, expected 0", q->index,
			     seq, len);
		S.f[S.pr[pair].idx[seq]].tx_done = true;
		any = true;
	}
	return any;
}

/* Check one received frame: header, num_buffers, length and every byte. */
static void rx_frame(unsigned pair, struct vq *q, uint16_t id, uint32_t len)
{
	uint8_t got[NET_HDR_LEN + FRAME_MAX + 1], want[FRAME_MAX], *b = vq_slot(q, id, NULL);
	struct virtio_net_hdr_mrg_rxbuf h;
	char what[160];
	int32_t tag;

	if (len == 0)
		fail("RX ring %u: buffer id %u returned empty (used len 0, no frame)%s", q->index, id,
		     P.end == END_GVB && S.vu.replies ? " by GET_VRING_BASE's drain" : "");
	if (len < NET_HDR_LEN || len > q->buf_len || len > sizeof(got))
		fail("RX ring %u: used len %u for a %u-byte buffer (frames sent are at most %u)",
		     q->index, len, q->buf_len, NET_HDR_LEN + FRAME_MAX);
	memcpy(&h, b, sizeof(h));
	if (h.hdr.flags || h.hdr.gso_type || h.hdr.hdr_len || h.hdr.gso_size ||
	    h.hdr.csum_start || h.hdr.csum_offset)
		fail("RX ring %u: virtio-net header flags %#x gso_type %u hdr_len %u gso_size %u "
		     "csum %u/%u, expected all 0", q->index, h.hdr.flags, h.hdr.gso_type,
		     h.hdr.hdr_len, h.hdr.gso_size, h.hdr.csum_start, h.hdr.csum_offset);
	if (h.num_buffers == 0 || (!P.mrg && h.num_buffers != 1) || h.num_buffers > q->inflight + 1)
		fail("RX ring %u: num_buffers %u (MRG_RXBUF %d, %u buffers posted)", q->index,
		     h.num_buffers, P.mrg, q->inflight + 1);
	unsigned total = len;
	memcpy(got, b, len);
	for (unsigned i = 1; i < h.num_buffers; i++) {
		/* A multi-buffer packet is made used as a whole (virtio-net 5.1.6.4). */
		if (!vq_get(q, &id, &len, &tag))
			fail("RX ring %u: num_buffers %u but only %u buffers used so far", q->index,
			     h.num_buffers, i);
		if (len > q->buf_len || total + len > sizeof(got))
			fail("RX ring %u: buffer %u of %u has used len %u (buffer %u, frame so far %u)",
			     q->index, i + 1, h.num_buffers, len, q->buf_len, total);
		memcpy(got + total, vq_slot(q, id, NULL), len);
		total += len;
	}
	total -= NET_HDR_LEN;
	name_frame(what, sizeof(what), got + NET_HDR_LEN, total);
	struct frame *f;
	bool match;
	for (;;) {
		if (S.pr[pair].recvd >= S.pr[pair].sent)
			fail("RX ring %u: unexpected frame (%u of %u sent are back already): %s",
			     q->index, S.pr[pair].recvd, S.pr[pair].sent, what);
		f = &S.f[S.pr[pair].idx[S.pr[pair].recvd]];
		frame_bytes(want, f);
		match = total == f->len && !memcmp(got + NET_HDR_LEN, want, f->len);
		if (match || !f->may_drop)
			break;
		S.pr[pair].recvd++; /* dropped, legitimately: no RX buffer when it was sent */
		S.pr[pair].need -= bufs(f);
		S.dropped++;
	}
	if (!match) {
		unsigned at = 0;
		while (at < total && at < f->len && got[NET_HDR_LEN + at] == want[at])
			at++;
		fail("RX ring %u: expected pair %u frame #%u (len %u, TX chain %s), got %s; "
		     "first difference at byte %u (num_buffers %u)", q->index, pair, f->seq, f->len,
		     f->tx_done ? "returned" : "not returned", what, at, h.num_buffers);
	}
	S.pr[pair].recvd++;
	S.pr[pair].need -= bufs(f);
	S.recvd_total++;
	if (P.pingpong) {
		uint64_t rtt = now_ns() - S.sent_at;
		S.rtt_sum += rtt;
		S.rtt_max = rtt > S.rtt_max ? rtt : S.rtt_max;
	}
}

static bool rx_collect(unsigned pair, bool refill)
{
	struct vq *q = &S.q[2 * pair];
	uint16_t id;
	uint32_t len;
	int32_t tag;
	bool any = false;

	while (vq_get(q, &id, &len, &tag)) {
		rx_frame(pair, q, id, len);
		any = true;
	}
	if (any && refill)
		rx_fill(q);
	return any;
}

/* What is missing, pair by pair, for a stall or a missed interrupt. */
static void missing(char *msg, size_t size)
{
	int n = 0;
	for (unsigned p = 0; p < P.pairs; p++)
		tx_reclaim(p); /* TX completions nobody waited for */
	for (unsigned p = 0; p < P.pairs && (size_t)n < size; p++) {
		if (S.pr[p].recvd == S.pr[p].n)
			continue;
		if (S.pr[p].recvd == S.pr[p].sent) {
			n += snprintf(msg + n, size - (size_t)n, "; pair %u: %u of %u back, none in "
				      "flight", p, S.pr[p].recvd, S.pr[p].n);
			continue;
		}
		struct frame *f = &S.f[S.pr[p].idx[S.pr[p].recvd]];
		n += snprintf(msg + n, size - (size_t)n,
			      "; pair %u: frame #%u (len %u) never came back on RX ring %u, its TX "
			      "chain %s (%u sent, %u back)", p, f->seq, f->len, 2 * p,
			      f->tx_done ? "was returned used (frame dropped)" : "was not consumed",
			      S.pr[p].sent, S.pr[p].recvd);
	}
}

static noreturn void stall(void)
{
	char msg[600] = "";
	missing(msg, sizeof(msg));
	fail("stall: no progress in %llu s%s", STALL_NS / 1000000000ull, msg);
}

/* Wait for the device: spin on the rings, or sleep on the call eventfds with
 * notifications requested on the rings we wait for. */
static void wait_device(uint64_t since)
{
	uint64_t now = now_ns();
	if (now - since > STALL_NS)
		stall();
	if (!P.irq) {
		/* Polling the used rings: yield at first, then pause 20 us between looks, so
		 * that a polling daemon on a 2-core machine is not starved. */
		if (++S.waits % 256 == 0)
			vu_check_hangup(&S.vu);
		if (now - since < SPIN_NS)
			sched_yield();
		else
			nanosleep(&(struct timespec){0, 20000}, NULL);
		return;
	}
	struct pollfd pf[MAX_RINGS + 1];
	struct vq *armed[MAX_RINGS];
	unsigned n = 0;
	for (unsigned i = 0; i < S.nrings; i++) {
		struct vq *q = &S.q[i];
		unsigned p = i / 2;
		bool want = q->tx ? S.pr[p].sent < S.pr[p].n && q->inflight
				  : S.pr[p].recvd < S.pr[p].sent;
		if (!want)
			continue;
		armed[n] = q;
		pf[n++] = (struct pollfd){q->callfd, POLLIN, 0};
		if (vq_arm(q))
			goto out;
	}
	if (!n)
		return;
	pf[n] = (struct pollfd){S.vu.sock, POLLRDHUP, 0};
	int r = poll(pf, n + 1, (int)((since + STALL_NS - now) / 1000000) + 1);
	if (r == 0) {
		char msg[600] = "";
		for (unsigned i = 0; i < n; i++)
			if (vq_pending(armed[i])) {
				missing(msg, sizeof(msg));
				fail("missed interrupt: ring %u has a used buffer since notifications "
				     "were requested, and no call in %llu s%s", armed[i]->index,
				     STALL_NS / 1000000000ull, msg);
			}
		stall();
	}
	for (unsigned i = 0; i < n; i++) {
		uint64_t c;
		if (pf[i].revents & POLLIN && read(pf[i].fd, &c, 8) < 0)
			fail("read call eventfd: %m");
	}
	if (pf[n].revents)
		vu_check_hangup(&S.vu);
out:
	for (unsigned i = 0; i < n; i++)
		vq_disarm(armed[i]);
}

/* Nothing in flight but frames that may have been dropped and whose TX chain is back. */
static bool idle(unsigned p)
{
	for (unsigned i = S.pr[p].recvd; i < S.pr[p].sent; i++)
		if (!S.f[S.pr[p].idx[i]].may_drop || !S.f[S.pr[p].idx[i]].tx_done)
			return false;
	return true;
}

/* Returns false if the plan aborts in the middle. */
static bool traffic(void)
{
	uint64_t since = now_ns();

	S.stage = "traffic";
	for (;;) {
		bool progress = false, done = true;
		for (unsigned p = 0; p < P.pairs; p++) {
			progress |= tx_reclaim(p);
			progress |= rx_collect(p, true);
			done &= S.pr[p].recvd == S.pr[p].n;
		}
		if (P.end == END_ABORT_TRAFFIC && S.recvd_total >= P.abort_frames)
			return false;
		if (done)
			return true;
		if (P.delays && rng_pct(&S.trng, 5))
			nanosleep(&(struct timespec){0, (long)rng_below(&S.trng, 2000000)}, NULL);
		for (unsigned p = 0; p < P.pairs; p++) {
			unsigned batch, sent = 0, total = S.pr[0].sent + S.pr[1].sent;
			if (P.pingpong) /* the next frame, once nothing is in flight */
				batch = total < P.nframes && S.f[total].pair == p && idle(0) &&
					idle(1);
			else
				batch = rng_range(&S.trng, 1, 32);
			while (sent < batch && S.pr[p].sent < S.pr[p].n && tx_send(p))
				sent++;
			if (!sent)
				continue;
			vq_publish(&S.q[2 * p + 1]);
			vq_notify(&S.q[2 * p + 1], P.kick_always);
			S.sent_at = now_ns();
			progress = true;
		}
		if (!S.rx_posted) { /* the RX buffers come after the first frames */
			for (unsigned i = 0; i < S.nrings; i += 2)
				rx_fill(&S.q[i]);
			S.rx_posted = true;
		}
		if (progress)
			since = now_ns();
		else
			wait_device(since);
	}
}

/* GET_VRING_BASE stops each ring after draining it: what it reports must be exactly
 * what was made used, and every TX chain must have come back. */
static void stop_rings(void)
{
	S.stage = "GET_VRING_BASE";
	for (unsigned i = 0; i < S.nrings; i++) {
		struct { uint32_t index, num; } st = {i, 0};
		vu_send(&S.vu, VU_GET_VRING_BASE, P.reply_ack && rng_pct(&S.rng, 50), &st,
			sizeof(st), NULL, 0, i, &S.base[i]);
	}
	read_all();
	for (unsigned i = 0; i < S.nrings; i++) {
		struct vq *q = &S.q[i];
		if (q->tx)
			tx_reclaim(i / 2);
		else
			rx_collect(i / 2, false);
		if (S.base[i] != vq_base(q))
			fail("GET_VRING_BASE ring %u: %#llx, expected %#x (the used position)", i,
			     (unsigned long long)S.base[i], vq_base(q));
		if (q->tx && q->inflight)
			fail("TX ring %u stopped with %u chains not returned", i, q->inflight);
	}
}

/* The set-up steps, the traffic and the end; false when the plan closes in the middle. */
static bool run(const struct step *steps, unsigned nsteps)
{
	bool negotiated = false, last_acked = false;

	S.stage = "set-up";
	for (unsigned i = 0; i < nsteps; i++) {
		const struct step *s = &steps[i];
		if (P.end == END_ABORT_SETUP && i == P.abort_step)
			return false;
		if (P.delays && rng_pct(&S.rng, 20))
			nanosleep(&(struct timespec){0, (long)rng_below(&S.rng, 2000000)}, NULL);
		if (s->kind != ST_MSG)
			trace(s, false);
		switch (s->kind) {
		case ST_MSG:
			last_acked = send_msg(s, negotiated);
			negotiated |= s->req == VU_SET_PROTOCOL_FEATURES;
			break;
		case ST_POST_RX:
			rx_fill(&S.q[s->ring]);
			break;
		case ST_KICK:
			if (write(S.q[s->ring].kickfd, &(uint64_t){1}, 8) != 8)
				fail("kick: %m");
			break;
		case ST_READ:
			while (vu_read_reply(&S.vu, 0))
				check_offers();
			break;
		case ST_READ_ALL:
			read_all();
			break;
		}
	}
	if (P.rx_when == RX_AFTER)
		for (unsigned i = 0; i < S.nrings; i += 2)
			rx_fill(&S.q[i]);
	if (P.after_replies)
		read_all();
	S.rx_posted = P.rx_when != RX_AFTER_TX;
	/* Replies come in order: the last message's reply read means all were processed. */
	S.synced = !vu_outstanding(&S.vu) && S.vu.replies && last_acked;
	if (!traffic())
		return false;
	if (P.end == END_GVB)
		stop_rings();
	for (unsigned p = 0; p < P.pairs; p++)
		rx_collect(p, false); /* exactly once: nothing more may have come */
	S.stage = "end";
	read_all();
	if (P.queue_num && S.queue_num < P.pairs)
		fail("GET_QUEUE_NUM: %llu, this session uses %u queue pairs",
		     (unsigned long long)S.queue_num, P.pairs);
	return true;
}

void session_run(uint64_t seed, unsigned k, const char *sock_path, int pattern,
		 struct stats *st)
{
	struct step steps[160];
	unsigned nsteps;

	session_cleanup();
	memset(&S, 0, sizeof(S));
	S.mem.fd = S.vu.sock = -1;
	S.k = k;
	S.rng = rng_seed(seed, k);
	S.fseed = rng_next(&S.rng);
	S.trng = rng_next(&S.rng);
	S.stage = "plan";
	plan_make(pattern);
	nsteps = plan_steps(steps);
	P.abort_step = rng_below(&S.rng, nsteps);
	gmem_init(&S.mem, &S.rng, P.nregions, (uint64_t)P.mem_mb << 20);
	setup_rings();
	vu_connect(&S.vu, sock_path);
	/* A close in the middle checks nothing more, but the next session must pass. */
	bool whole = run(steps, nsteps);
	session_cleanup();
	st->aborted += !whole;
	st->burst += whole && !P.pingpong;
	st->pingpong += whole && P.pingpong;
	st->frames += S.recvd_total;
	st->dropped += S.dropped;
	st->packed += P.packed;
	st->split += !P.packed;
}
