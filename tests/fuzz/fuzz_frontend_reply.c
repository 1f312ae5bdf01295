/* SPDX-License-Identifier: MIT */
/*
 * fuzz_frontend_reply: uvhost's front-end (proto/frontend.c) reading a
 * hostile back-end's replies, and serving its back-end channel
 * (proto/frontend_req.c). The fake back-end is the other end of a
 * socketpair: the harness writes the "reply" before making the call (the
 * front-end then finds it waiting; its reply timeout is 0, so a short or
 * missing reply is a timeout, not a hang) and throws the request away.
 *
 * Input: ops until the end.
 *   0x00-0x3f  reply bytes: u8 ctl (bits 0-2 fds, bit 3 memfds instead of
 *              eventfds, bit 4 the harness writes a header {u8 request,
 *              REPLY|VERSION, len} first), u16 len, bytes
 *   0x40-0xbf  a call: (op - 0x40) % NCALLS picks uvh_frontend_*, its
 *              arguments read from the input
 *   0xc0-0xff  a back-end channel request (once SET_BACKEND_REQ_FD went
 *              out): same chunk format, always with a header (the
 *              request id byte is then the back-end request), then
 *              uvh_frontend_poll_backend. Always whole: a message cut
 *              short on the channel blocks the front-end (see README,
 *              tests/fuzz/hangs/).
 *
 * Oracles: no crash or sanitizer report, every call returns (0 or a
 * negative errno), fds the calls hand back are real, none leaks.
 */
#include <poll.h>

#include "frontend.h"
#include "fuzz_common.h"
#include "message.h"

#define MAX_OPS	256u

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_quiet_logs();
	return 0;
}

struct harness {
	struct uvh_frontend *fe;
	int be;		/* the fake back-end's end of the main socket */
	int chan;	/* its end of the back-end channel, or -1 */
	struct fz in;
};

/* Channel callbacks: take fds (close them), answer from one input byte. */
static int cb_verdict(void *opaque)
{
	struct harness *h = opaque;

	return (fz_u8(&h->in) & 7) == 7 ? -EINVAL : 0;
}

static int cb_iotlb(void *o, const struct uvh_iotlb *m)
{
	(void)m;
	return cb_verdict(o);
}

static int cb_config(void *o)
{
	return cb_verdict(o);
}

static int cb_notifier(void *o, const struct uvh_vring_area *a, int fd)
{
	(void)a;
	if (fd >= 0)
		close(fd);
	return cb_verdict(o);
}

static int cb_index(void *o, uint32_t i)
{
	(void)i;
	return cb_verdict(o);
}

static int cb_uuid(void *o, const struct uvh_shared_object *u)
{
	(void)u;
	return cb_verdict(o);
}

static int cb_lookup(void *o, const struct uvh_shared_object *u, int *fd)
{
	(void)u;
	*fd = (fz_u8(&((struct harness *)o)->in) & 1) ? fz_eventfd() : -1;
	return 0;
}

static int cb_map(void *o, const struct uvh_shmem_map *m, int fd)
{
	(void)m;
	if (fd >= 0)
		close(fd);
	return cb_verdict(o);
}

static int cb_unmap(void *o, const struct uvh_shmem_map *m)
{
	(void)m;
	return cb_verdict(o);
}

static const struct uvh_frontend_req_ops chan_ops = {
	.iotlb_msg = cb_iotlb, .config_change = cb_config, .vring_host_notifier = cb_notifier,
	.vring_call = cb_index, .vring_err = cb_index, .shared_object_add = cb_uuid,
	.shared_object_remove = cb_uuid, .shared_object_lookup = cb_lookup,
	.shmem_map = cb_map, .shmem_unmap = cb_unmap,
};

/* A chunk of bytes (with fds) written to @fd. */
static void write_chunk(struct harness *h, int fd, bool framed)
{
	uint8_t ctl = fz_u8(&h->in) | (framed ? 16 : 0);
	uint8_t req = (ctl & 16) ? fz_u8(&h->in) : 0;
	uint16_t len = fz_u16(&h->in);
	unsigned int nfds = ctl & 7;
	int fds[8];

	if (len > h->in.n)
		len = (uint16_t)h->in.n;
	for (unsigned int i = 0; i < nfds; i++)
		fds[i] = (ctl & 8) ? fz_memfd("fuzz-reply", 4096) : fz_eventfd();
	if (ctl & 16) {
		struct uvh_msg_header hdr = {
			.request = req, .size = len,
			/* a reply, or a back-end request (bit 5: NEED_REPLY) */
			.flags = framed ? UVH_FLAG_VERSION | ((ctl & 32) ? UVH_FLAG_NEED_REPLY : 0) :
					  UVH_FLAG_REPLY | UVH_FLAG_VERSION,
		};

		(void)fz_send(fd, &hdr, sizeof(hdr), fds, nfds);
		(void)fz_send(fd, h->in.p, len, NULL, 0);
	} else {
		(void)fz_send(fd, h->in.p, len, fds, nfds);
	}
	for (unsigned int i = 0; i < nfds; i++)
		close(fds[i]);
	h->in.p += len;
	h->in.n -= len;
}

/* An fd a call handed back must be open; then it is ours to close. */
static void take_fd(int r, int fd)
{
	if (r == 0 && fd >= 0) {
		if (fcntl(fd, F_GETFD) < 0)
			abort();
		close(fd);
	} else if (r < 0 && fd >= 0 && fcntl(fd, F_GETFD) >= 0) {
		/* A failed call must not hand out an fd. */
		fprintf(stderr, "fuzz_frontend_reply: fd %d returned with error %d\n", fd, r);
		abort();
	}
}

#define NCALLS	40u

static void do_call(struct harness *h, unsigned int which)
{
	struct uvh_frontend *fe = h->fe;
	struct fz *in = &h->in;
	uint64_t u = 0;
	uint32_t base = 0;
	uint8_t st = 0, buf[256];
	int fd = -1, r = 0, mine = -1;
	bool chan = false;

	switch (which) {
	case 0:
		r = uvh_frontend_negotiate(fe, fz_u64(in), fz_u64(in), &u, &u);
		break;
	case 1: r = uvh_frontend_get_features(fe, &u); break;
	case 2: r = uvh_frontend_set_features(fe, fz_u64(in)); break;
	case 3: r = uvh_frontend_get_protocol_features(fe, &u); break;
	case 4: r = uvh_frontend_set_protocol_features(fe, fz_u64(in)); break;
	case 5: r = uvh_frontend_set_owner(fe); break;
	case 6: r = uvh_frontend_reset_owner(fe); break;
	case 7: {
		struct uvh_mem_region reg[2] = {
			{ 0, 4096, 0x7f0000000000ull, 0 }, { 0x100000, 4096, 0x7f0000100000ull, 0 },
		};
		int fds[2] = { fz_memfd("fuzz-mem", 4096), fz_memfd("fuzz-mem", 4096) };

		r = uvh_frontend_set_mem_table(fe, reg, fds, fz_u8(in) % 3);
		close(fds[0]);
		close(fds[1]);
		break;
	}
	case 8: {
		struct uvh_mem_region reg = { fz_u64(in), 4096, 0x7f0000200000ull, 0 };

		mine = fz_memfd("fuzz-mem", 4096);
		r = uvh_frontend_add_mem_reg(fe, &reg, mine);
		break;
	}
	case 9: {
		struct uvh_mem_region reg = { fz_u64(in), 4096, 0x7f0000200000ull, 0 };

		r = uvh_frontend_rem_mem_reg(fe, &reg);
		break;
	}
	case 10: r = uvh_frontend_get_max_mem_slots(fe, &u); break;
	case 11: {
		struct uvh_dirty_log_area log = { 4096, 0 };

		mine = fz_memfd("fuzz-log", 4096);
		r = uvh_frontend_set_log_base(fe, &log, (fz_u8(in) & 1) ? mine : -1);
		break;
	}
	case 12:
		mine = fz_eventfd();
		r = uvh_frontend_set_log_fd(fe, mine);
		break;
	case 13: r = uvh_frontend_set_vring_num(fe, fz_u8(in), fz_u16(in)); break;
	case 14: {
		struct uvh_vring_addr a = { .index = fz_u8(in), .desc_user_addr = 0x7f0000000000ull };

		r = uvh_frontend_set_vring_addr(fe, &a);
		break;
	}
	case 15: r = uvh_frontend_set_vring_base(fe, fz_u8(in), fz_u32(in)); break;
	case 16: r = uvh_frontend_get_vring_base(fe, fz_u8(in), &base); break;
	case 17: r = uvh_frontend_get_vring_base_skip_drain(fe, fz_u8(in), &base); break;
	case 18:
	case 19:
	case 20: {
		uint8_t i = fz_u8(in);

		mine = (i & 0x80) ? -1 : fz_eventfd();
		i &= 0x7f;
		r = which == 18 ? uvh_frontend_set_vring_kick(fe, i, mine) :
		    which == 19 ? uvh_frontend_set_vring_call(fe, i, mine) :
				  uvh_frontend_set_vring_err(fe, i, mine);
		break;
	}
	case 21: r = uvh_frontend_set_vring_enable(fe, fz_u8(in), fz_u8(in) & 1); break;
	case 22: r = uvh_frontend_set_vring_endian(fe, fz_u8(in), fz_u8(in)); break;
	case 23: r = uvh_frontend_vring_kick(fe, fz_u8(in)); break;
	case 24: r = uvh_frontend_get_queue_num(fe, &u); break;
	case 25: {
		uint32_t off = fz_u8(in), sz = fz_u16(in) % 300u;

		r = uvh_frontend_get_config(fe, off, sz, fz_u8(in), sz <= sizeof(buf) ? buf : NULL);
		break;
	}
	case 26: {
		uint32_t off = fz_u8(in), sz = fz_u16(in) % 257u;

		memset(buf, 0x5a, sizeof(buf));
		r = uvh_frontend_set_config(fe, off, sz, fz_u8(in), buf);
		break;
	}
	case 27: r = uvh_frontend_net_set_mtu(fe, fz_u16(in)); break;
	case 28: {
		uint8_t mac[6] = { 2, 0, 0, 0, 0, 1 };

		r = uvh_frontend_send_rarp(fe, mac);
		break;
	}
	case 29: r = uvh_frontend_set_status(fe, fz_u8(in)); break;
	case 30: r = uvh_frontend_get_status(fe, &st); break;
	case 31: r = uvh_frontend_reset_device(fe); break;
	case 32: {
		struct uvh_inflight q = { .num_queues = fz_u16(in), .queue_size = fz_u16(in) }, out;

		r = uvh_frontend_get_inflight_fd(fe, &q, &out, &fd);
		take_fd(r, fd);
		break;
	}
	case 33: {
		struct uvh_inflight q = { .mmap_size = 4096, .num_queues = 1, .queue_size = 256 };

		mine = fz_memfd("fuzz-inflight", 4096);
		r = uvh_frontend_set_inflight_fd(fe, &q, mine);
		break;
	}
	case 34: {
		struct uvh_iotlb m = { .iova = fz_u64(in), .size = 4096, .uaddr = 0x7f0000000000ull,
				       .perm = UVH_IOTLB_RW, .type = UVH_IOTLB_UPDATE };

		r = uvh_frontend_iotlb_msg(fe, &m);
		break;
	}
	case 35: {
		int pv[2];

		if (pipe2(pv, O_CLOEXEC))
			abort();
		r = uvh_frontend_set_device_state_fd(fe, fz_u8(in) & 1, 0, pv[0], &fd);
		close(pv[0]);
		close(pv[1]);
		take_fd(r, fd);
		break;
	}
	case 36: r = uvh_frontend_check_device_state(fe); break;
	case 37: {
		struct uvh_shared_object uuid = { { 1, 2, 3 } };
		static struct uvh_shmem_config cfg;

		if (fz_u8(in) & 1) {
			r = uvh_frontend_get_shared_object(fe, &uuid, &fd);
			take_fd(r, fd);
		} else {
			r = uvh_frontend_get_shmem_config(fe, &cfg);
		}
		break;
	}
	case 38: {
		uint8_t sel = fz_u8(in) % 4u;

		if (sel == 0) {
			r = uvh_frontend_postcopy_advise(fe, &fd);
			take_fd(r, fd);
		} else if (sel == 1) {
			r = uvh_frontend_postcopy_listen(fe);
		} else if (sel == 2) {
			r = uvh_frontend_postcopy_end(fe);
		} else {
			static uint8_t sess_in[64], sess_out[128];
			uint32_t osz = fz_u8(in);

			r = uvh_frontend_create_crypto_session(fe, sess_in, sizeof(sess_in),
							       sess_out, &osz);
		}
		break;
	}
	case 39:
		if (h->chan < 0) {
			r = uvh_frontend_set_backend_req(fe, &chan_ops, h);
			chan = true;
		} else {
			r = uvh_frontend_poll_backend(fe, 0);
			if (r > 0)
				r = 0;
		}
		break;
	default:
		break;
	}
	if (r > 0) {
		fprintf(stderr, "fuzz_frontend_reply: call %u returned %d\n", which, r);
		abort();
	}
	if (mine >= 0)
		close(mine);
	/* What the front-end sent: dropped, except the channel's socket. */
	fz_drain(h->be, chan ? &h->chan : NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct harness h = { .in = { data, size }, .chan = -1 };
	int fds_before = t_fds_open_count();
	int sv[2];

	fz_socketpair(sv);
	h.fe = uvh_frontend_from_fd(sv[0]);
	if (!h.fe)
		abort();
	h.be = sv[1];
	uvh_frontend_set_timeout(h.fe, 0);
	for (unsigned int ops = 0; !fz_empty(&h.in) && ops < MAX_OPS; ops++) {
		uint8_t op = fz_u8(&h.in);

		if (op < 0x40) {
			write_chunk(&h, h.be, false);
		} else if (op < 0xc0) {
			do_call(&h, (op - 0x40u) % NCALLS);
		} else if (h.chan >= 0) {
			write_chunk(&h, h.chan, true);
			(void)uvh_frontend_poll_backend(h.fe, 0);
			fz_drain(h.chan, NULL);
		}
	}
	uvh_frontend_free(h.fe);
	close(h.be);
	if (h.chan >= 0)
		close(h.chan);
	fz_check_fds(fds_before, "fuzz_frontend_reply");
	return 0;
}
