/* SPDX-License-Identifier: MIT */
/*
 * fuzz_backend_req: a series of front-end requests, with real fds, fed to
 * a real back-end: uvh_backend_req inside a device host (host/devhost.h)
 * hosting the virtio-net device in loopback (devices/net/net.h), as
 * uvhost-net runs it, in the device host's control style (uvh_devhost_handle). The
 * engine is created but not started, so every ring change runs inline
 * and the harness itself runs the rings' bursts between requests: one
 * thread, deterministic.
 *
 * Input: ops until the end.
 *   0x00-0xbf  a request: id = op % 48 (46, 47: unknown ids), then
 *              u8 f (bit 0 NEED_REPLY, bit 1 raw flags: u32 follows,
 *              bits 4-7 fd count 0-9 beyond what the request wants,
 *              bit 3 no automatic fds), u16 len, len payload bytes.
 *              The harness attaches the fds the request calls for, made
 *              to match its payload (memfds as long as the regions, log
 *              and inflight areas say, an eventfd for a vring, a socket
 *              whose peer is gone for the back-end channel, a pipe for
 *              device state), so that rings can really start.
 *   0xc0-0xdf  poke guest memory: u8 memfd (of those sent so far), u32
 *              offset, u16 len, bytes
 *   0xe0-0xef  run every started ring's burst (op & 3) + 1 times
 *   0xf0-0xff  end the connection and start a new one
 * A request that breaks the connection starts a new one too.
 *
 * Oracles: no crash, no sanitizer report, and no fd left open once the
 * connection ends (checked after every input).
 */
#include <poll.h>

#include "engine.h"
#include "fuzz_common.h"
#include "message.h"
#include "net.h"
#include "devhost.h"

#define MAX_MEMFDS	16u
#define MEMFD_CAP	(16ull << 20)	/* bigger regions get a short file (-ENXIO) */
#define MAX_OPS		512u

static struct uvh_engine *engine;
static struct uvh_net_dev *net;
static struct uvh_devhost *dh;

struct session {
	int fe;				/* our end of the socket, -1 when none */
	int memfds[MAX_MEMFDS];		/* guest memory we sent, to poke */
	uint64_t memsz[MAX_MEMFDS];
	unsigned int nmem;
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct uvh_engine_opts eo = { .name = "fuzz-e0", .cpu = -1, .numa_node = -1,
				      .mode = UVH_ENGINE_POLL };
	/* CONFIG offered, so that GET_CONFIG reaches the device */
	struct uvh_net_opts no = { .type = UVH_NET_PORT_LOOPBACK, .name = "fuzz-net",
				   .queue_pairs = 2, .offer_config = true };
	struct uvh_devhost_opts vo = { .name = "fuzz-dh", .ops = &uvh_net_devhost_ops,
				   .nengines = 1 };

	(void)argc;
	(void)argv;
	fz_quiet_logs();
	engine = uvh_engine_create(&eo);
	net = uvh_net_create(&no);
	if (!engine || !net)
		abort();
	vo.dev = net;
	vo.engines = &engine;
	dh = uvh_devhost_new(&vo);
	if (!dh)
		abort();
	return 0;
}

static void session_open(struct session *s)
{
	int sv[2];

	fz_socketpair(sv);
	if (uvh_devhost_connect(dh, sv[1]))
		abort();
	s->fe = sv[0];
}

static void session_close(struct session *s)
{
	uvh_devhost_disconnect(dh);
	if (s->fe >= 0) {
		fz_drain(s->fe, NULL);
		close(s->fe);
	}
	s->fe = -1;
}

static int memfd_for(struct session *s, uint64_t offset, uint64_t size)
{
	uint64_t end = offset + size;
	int fd;

	if (end < offset || end > MEMFD_CAP || !end)
		end = 4096;
	fd = fz_memfd("fuzz-guest", end);
	if (s->nmem < MAX_MEMFDS) {
		s->memfds[s->nmem] = dup(fd);
		s->memsz[s->nmem++] = end;
	}
	return fd;
}

/* The fds request @id wants given its payload; then @extra eventfds. */
static unsigned int make_fds(struct session *s, uint32_t id, const union uvh_msg_payload *p,
			     uint32_t len, bool automatic, unsigned int extra, int *fds)
{
	unsigned int n = 0;

	if (automatic) {
		switch (id) {
		case UVH_REQ_SET_MEM_TABLE:
			for (uint32_t i = 0; len >= 8 && i < p->mem_table.nregions &&
			     i < UVH_MEMORY_MAX_NREGIONS && 8 + 32 * (i + 1) <= len; i++)
				fds[n++] = memfd_for(s, p->mem_table.regions[i].mmap_offset,
						     p->mem_table.regions[i].memory_size);
			break;
		case UVH_REQ_ADD_MEM_REG:
			if (len >= sizeof(p->mem_single))
				fds[n++] = memfd_for(s, p->mem_single.region.mmap_offset,
						     p->mem_single.region.memory_size);
			break;
		case UVH_REQ_SET_LOG_BASE:
			if (len >= sizeof(p->log))
				fds[n++] = memfd_for(s, p->log.mmap_offset, p->log.mmap_size);
			break;
		case UVH_REQ_SET_INFLIGHT_FD:
			if (len >= 16)
				fds[n++] = memfd_for(s, p->inflight.mmap_offset,
						     p->inflight.mmap_size);
			break;
		case UVH_REQ_SET_VRING_KICK:
		case UVH_REQ_SET_VRING_CALL:
		case UVH_REQ_SET_VRING_ERR:
			if (len < 8 || !(p->u64 & UVH_VRING_NOFD_MASK))
				fds[n++] = fz_eventfd();
			break;
		case UVH_REQ_SET_BACKEND_REQ_FD:
		case UVH_REQ_GPU_SET_SOCKET: {
			int sv[2];

			/* Its peer is gone: a back-end request fails at once
			 * (EPIPE) rather than waiting for an ack. */
			fz_socketpair(sv);
			close(sv[1]);
			fds[n++] = sv[0];
			break;
		}
		case UVH_REQ_SET_DEVICE_STATE_FD: {
			int pv[2];

			if (pipe2(pv, O_CLOEXEC | O_NONBLOCK))
				abort();
			close(pv[1]);
			fds[n++] = pv[0];
			break;
		}
		case UVH_REQ_SET_LOG_FD:
			fds[n++] = fz_eventfd();
			break;
		default:
			break;
		}
	}
	while (extra-- && n < 12)
		fds[n++] = fz_eventfd();
	return n;
}

/* Every started ring's burst, as its engine would run it. */
static void run_rings(unsigned int times)
{
	uint32_t nq = uvh_devhost_num_queues(dh);

	for (unsigned int t = 0; t < times; t++)
		for (uint32_t i = 0; i < nq; i++) {
			struct uvh_devhost_queue *q = uvh_devhost_queue(dh, i);

			if (q && q->running && q->eq.process)
				q->eq.process(&q->eq);
		}
}

static void do_request(struct session *s, struct fz *in, uint8_t op)
{
	static union uvh_msg_payload payload;
	struct uvh_msg_header hdr = { .request = op % 48u, .flags = UVH_FLAG_VERSION };
	uint8_t f = fz_u8(in);
	uint16_t len;
	int fds[16];
	unsigned int nfds;
	bool ok;
	int r;

	if (f & 1)
		hdr.flags |= UVH_FLAG_NEED_REPLY;
	if (f & 2)
		hdr.flags = fz_u32(in);
	len = fz_u16(in);
	/* The header says what was sent, past 4 KiB too (refused unread). */
	if (len > in->n)
		len = (uint16_t)in->n;
	memset(&payload, 0, sizeof(payload));
	memcpy(&payload, in->p, len < sizeof(payload) ? len : sizeof(payload));
	hdr.size = len;
	nfds = make_fds(s, hdr.request, &payload, len, !(f & 8), (f >> 4) % 10u, fds);

	/* One message: header and payload, fds on the header's first byte. */
	ok = fz_send(s->fe, &hdr, sizeof(hdr), fds, nfds) &&
	     fz_send(s->fe, in->p, len, NULL, 0);
	for (unsigned int i = 0; i < nfds; i++)
		close(fds[i]);
	in->p += len;
	in->n -= len;
	if (!ok)
		abort();	/* our socket buffer is far bigger than any message */

	r = uvh_devhost_handle(dh, 0);
	if (r == 0) {
		/* Never: the whole message is there. */
		fprintf(stderr, "fuzz_backend_req: request %u not handled\n", hdr.request);
		abort();
	}
	if (r < 0) {
		session_close(s);
		session_open(s);
		return;
	}
	run_rings(1);
	fz_drain(s->fe, NULL);
}

static void do_poke(struct session *s, struct fz *in)
{
	uint8_t which = fz_u8(in);
	uint32_t off = fz_u32(in);
	uint16_t len = fz_u16(in);

	if (len > in->n)
		len = (uint16_t)in->n;
	if (s->nmem) {
		unsigned int i = which % s->nmem;

		off = (uint32_t)(off % s->memsz[i]);
		if (pwrite(s->memfds[i], in->p, len, off) < 0)
			abort();
	}
	in->p += len;
	in->n -= len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz in = { data, size };
	struct session s = { .fe = -1 };
	int fds_before;

	if (!dh)
		LLVMFuzzerInitialize(NULL, NULL);
	fds_before = t_fds_open_count();
	session_open(&s);
	for (unsigned int ops = 0; !fz_empty(&in) && ops < MAX_OPS; ops++) {
		uint8_t op = fz_u8(&in);

		if (op < 0xc0)
			do_request(&s, &in, op);
		else if (op < 0xe0)
			do_poke(&s, &in);
		else if (op < 0xf0)
			run_rings((op & 3u) + 1);
		else {
			session_close(&s);
			session_open(&s);
		}
	}
	session_close(&s);
	for (unsigned int i = 0; i < s.nmem; i++)
		close(s.memfds[i]);
	fz_check_fds(fds_before, "fuzz_backend_req");
	return 0;
}
