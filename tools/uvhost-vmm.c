/* SPDX-License-Identifier: MIT */
/*
 * uvhost-vmm: a tiny VMM that proves the four backends of backends/vhost.h.
 *
 * It does what a VMM's virtio-net device model does, and nothing more: guest
 * memory in a memfd, the feature handshake (and, for vDPA, the status
 * handshake), RX ring 0 and TX ring 1 laid out by uvhost's driver-side
 * virtqueues (engine/virtq.h), kick/call eventfds, then frames sent on TX
 * that must come back on RX byte for byte and in order:
 *
 *   soft:net               the device runs in this process (loopback port)
 *   user:PATH              uvhost-net --mode loopback on PATH
 *   kern:/dev/vhost-net    frames leave through a tap (--tap); --echo loops
 *                          them back with an AF_PACKET socket on the tap
 *   vdpa:/dev/vhost-vdpa-N vdpa_sim_net loops TX to RX itself
 *
 * The virtio-net header (12 bytes, VERSION_1) with kern: the tap carries it
 * (IFF_VNET_HDR, TUNSETVNETHDRSZ 12) and VHOST_NET_F_VIRTIO_NET_HDR is not
 * acked, so vhost-net passes the header through untouched, as QEMU does.
 *
 * Exit 0 only if every frame came back intact and in order, nothing else
 * arrived, and each ring's GET_VRING_BASE matches what was processed; 77
 * when the backend lacks what was asked (--ring packed on a device without
 * RING_PACKED); 1 otherwise.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <net/if.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "util.h"
#include "vhost.h"
#include "log.h"
#include "message.h"
#include "net.h"
#include "virtq.h"
#include "vmm_tap.h"

/* virtio status bits (virtio 1.2, 2.1) */
#define ST_ACKNOWLEDGE		1u
#define ST_DRIVER		2u
#define ST_DRIVER_OK		4u
#define ST_FEATURES_OK		8u
#define ST_FAILED		128u
/* vhost backend feature bit numbers (linux/vhost_types.h) */
#define VHOST_BF_IOTLB_MSG_V2	1
#define VHOST_BF_IOTLB_BATCH	2
#define VHOST_BF_IOTLB_ASID	3
#define VHOST_BF_SUSPEND	4
#define VHOST_BF_RESUME		5

#define ETHERTYPE_TEST		0x88B5
#define BUF_SIZE		2048u	/* one frame + header per buffer */
#define FRAME_MIN		60u
#define FRAME_MAX		1514u
#define GPA_BASE		0x40000000ULL	/* not 0: gpa and offset must differ */
#define TAG			"UVMM"
/* run() and negotiate(): not an error, the backend lacks what was asked */
#define RUN_SKIP		1

struct opts {
	const char *spec;
	unsigned long frames;
	uint64_t size;
	bool packed;
	bool mrg_rxbuf;
	uint16_t qsize;
	const char *tap;
	bool echo;
	int verbose;
	bool json;
	int timeout_ms;
};

struct ring {
	struct uvh_vq_driver drv;
	bool drv_ready;
	uint8_t *bufs;		/* qsize buffers of BUF_SIZE */
	uint64_t bufs_gpa;
	int kick_fd, call_fd, err_fd;
	uint16_t *free;		/* TX: free buffer indexes (a stack) */
	unsigned int nfree;
	uint64_t calls;		/* eventfd counts read from call_fd */
};

struct vmm {
	struct opts o;
	struct uvh_vhost *b;
	enum uvh_vhost_type type;
	const char *label;	/* "kern/split" */
	int memfd;
	uint8_t *mem;
	uint64_t mem_len;
	struct ring r[2];	/* 0 = RX, 1 = TX */
	int tap_fd;
	struct vmm_echo echo;
	uint64_t offered, acked, backend_features, protocol_features;
	/* results */
	unsigned long sent, received, unexpected, bad;
	uint32_t base[2];
	uint32_t base_want[2];
	bool base_ok[2], base_read[2];
	double seconds;
	char facts[2048];
	size_t facts_len;
	char json[4096];
	size_t json_len;
};

static char label_buf[64];

static void say(const struct vmm *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const struct vmm *v, const char *fmt, ...)
{
	va_list ap;

	printf("uvhost-vmm[%s]: ", v->label);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

/* A fact is printed and kept for --json ("key": "value" pairs). */
static void fact(struct vmm *v, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void fact(struct vmm *v, const char *key, const char *fmt, ...)
{
	char val[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	vsnprintf(val, sizeof(val), fmt, ap);
	va_end(ap);
	say(v, "%s: %s", key, val);
	n = snprintf(v->json + v->json_len, sizeof(v->json) - v->json_len, ", \"%s\": \"%s\"",
		     key, val);
	if (n > 0 && (size_t)n < sizeof(v->json) - v->json_len)
		v->json_len += (size_t)n;
}

static const char *err_str(int ret)
{
	return ret == -EOPNOTSUPP ? "n/a (not an op of this backend)" : strerror(-ret);
}

/* ---- feature names ----------------------------------------------------------- */

static const struct {
	unsigned int bit;
	const char *name;
} feature_names[] = {
	{ UVH_VIRTIO_NET_F_CSUM, "CSUM" },
	{ UVH_VIRTIO_NET_F_GUEST_CSUM, "GUEST_CSUM" },
	{ UVH_VIRTIO_NET_F_MTU, "MTU" },
	{ UVH_VIRTIO_NET_F_MAC, "MAC" },
	{ UVH_VIRTIO_NET_F_GUEST_TSO4, "GUEST_TSO4" },
	{ UVH_VIRTIO_NET_F_HOST_TSO4, "HOST_TSO4" },
	{ UVH_VIRTIO_NET_F_MRG_RXBUF, "MRG_RXBUF" },
	{ UVH_VIRTIO_NET_F_STATUS, "STATUS" },
	{ UVH_VIRTIO_NET_F_CTRL_VQ, "CTRL_VQ" },
	{ UVH_VIRTIO_NET_F_CTRL_RX, "CTRL_RX" },
	{ UVH_VIRTIO_NET_F_MQ, "MQ" },
	{ UVH_VIRTIO_NET_F_CTRL_MAC_ADDR, "CTRL_MAC_ADDR" },
	{ 24, "NOTIFY_ON_EMPTY" },
	{ UVH_F_LOG_ALL, "LOG_ALL" },
	{ 27, "ANY_LAYOUT/VHOST_NET_HDR" },
	{ UVH_VIRTIO_F_RING_INDIRECT_DESC, "INDIRECT_DESC" },
	{ UVH_VIRTIO_F_RING_EVENT_IDX, "EVENT_IDX" },
	{ UVH_F_PROTOCOL_FEATURES, "PROTOCOL_FEATURES" },
	{ UVH_VIRTIO_F_VERSION_1, "VERSION_1" },
	{ UVH_VIRTIO_F_IOMMU_PLATFORM, "ACCESS_PLATFORM" },
	{ UVH_VIRTIO_F_RING_PACKED, "RING_PACKED" },
	{ UVH_VIRTIO_F_IN_ORDER, "IN_ORDER" },
	{ 40, "RING_RESET" },
};

static void feature_list(uint64_t f, char *out, size_t len)
{
	size_t used = 0;

	out[0] = '\0';
	for (size_t i = 0; i < sizeof(feature_names) / sizeof(feature_names[0]); i++) {
		if (!(f & UVH_BIT(feature_names[i].bit)))
			continue;
		f &= ~UVH_BIT(feature_names[i].bit);
		used += (size_t)snprintf(out + used, len - used, "%s%s", used ? " " : "",
					 feature_names[i].name);
		if (used >= len)
			return;
	}
	for (unsigned int bit = 0; f && bit < 64; bit++) {
		if (!(f & UVH_BIT(bit)))
			continue;
		f &= ~UVH_BIT(bit);
		used += (size_t)snprintf(out + used, len - used, "%sbit%u", used ? " " : "", bit);
		if (used >= len)
			return;
	}
}

/* ---- options ------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: uvhost-vmm --backend SPEC [options]\n"
		"  --backend SPEC      soft:net | user:PATH | kern:/dev/vhost-net | vdpa:/dev/vhost-vdpa-N\n"
		"  --frames N          frames to send (default 256)\n"
		"  --size BYTES        guest memory (default 4 MiB; K/M/G suffixes)\n"
		"  --ring split|packed ring layout (default split)\n"
		"  --queue-size N      entries per ring (default 256)\n"
		"  --mrg-rxbuf         negotiate VIRTIO_NET_F_MRG_RXBUF (off by default)\n"
		"  --tap NAME          kern: create tap NAME (IFF_VNET_HDR) as rings 0 and 1's backend\n"
		"  --echo              kern: loop the tap's frames back (AF_PACKET on NAME)\n"
		"  --timeout MS        longest wait for progress (default 5000)\n"
		"  -v                  more log (-vv: debug)\n"
		"  --json              one JSON line with the facts and the result at the end\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || s[0] == '-')
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	default: break;
	}
	if (*end)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "backend", required_argument, NULL, 'b' },
		{ "frames", required_argument, NULL, 'n' },
		{ "size", required_argument, NULL, 's' },
		{ "ring", required_argument, NULL, 'r' },
		{ "queue-size", required_argument, NULL, 'q' },
		{ "mrg-rxbuf", no_argument, NULL, 'm' },
		{ "tap", required_argument, NULL, 't' },
		{ "echo", no_argument, NULL, 'e' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "json", no_argument, NULL, 'j' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t v;
	int c;

	*o = (struct opts){ .frames = 256, .size = 4u << 20, .qsize = 256, .timeout_ms = 5000 };
	while ((c = getopt_long(argc, argv, "vh", lo, NULL)) != -1) {
		switch (c) {
		case 'b':
			o->spec = optarg;
			break;
		case 'n':
			if (parse_u64(optarg, &v) || !v || v > 100000000)
				goto bad;
			o->frames = (unsigned long)v;
			break;
		case 's':
			if (parse_u64(optarg, &v) || v < 65536 || v > (1ULL << 32))
				goto bad;
			o->size = v;
			break;
		case 'r':
			if (!strcmp(optarg, "split"))
				o->packed = false;
			else if (!strcmp(optarg, "packed"))
				o->packed = true;
			else
				goto bad;
			break;
		case 'q':
			if (parse_u64(optarg, &v) || v < 2 || v > UVH_VRING_MAX_SIZE)
				goto bad;
			o->qsize = (uint16_t)v;
			break;
		case 'm':
			o->mrg_rxbuf = true;
			break;
		case 't':
			if (strlen(optarg) >= IFNAMSIZ || !optarg[0])
				goto bad;
			o->tap = optarg;
			break;
		case 'e':
			o->echo = true;
			break;
		case 'T':
			if (parse_u64(optarg, &v) || !v || v > 600000)
				goto bad;
			o->timeout_ms = (int)v;
			break;
		case 'j':
			o->json = true;
			break;
		case 'v':
			o->verbose++;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			goto bad;
		}
	}
	if (optind != argc || !o->spec)
		goto bad;
	if (!o->packed && (o->qsize & (o->qsize - 1)))
		goto bad;
	if (o->echo && !o->tap)
		goto bad;
	return 0;
bad:
	usage(stderr);
	return -EINVAL;
}

/* ---- guest memory and rings ---------------------------------------------------- */

static size_t page_up(size_t n)
{
	return (n + 4095) & ~(size_t)4095;
}

static int make_memory(struct vmm *v)
{
	size_t area = page_up(uvh_vq_driver_area_bytes(v->o.qsize, v->o.packed));
	size_t bufs = page_up((size_t)v->o.qsize * BUF_SIZE);
	size_t off = 0;

	if (2 * (area + bufs) > v->o.size) {
		fprintf(stderr, "uvhost-vmm: --size %" PRIu64 " is too small: the rings and buffers need %zu bytes\n",
			v->o.size, 2 * (area + bufs));
		return -EINVAL;
	}
	v->mem_len = v->o.size;
	v->memfd = memfd_create("uvhost-vmm-guest", MFD_CLOEXEC);
	if (v->memfd < 0)
		return -errno;
	if (ftruncate(v->memfd, (off_t)v->mem_len) < 0)
		return -errno;
	v->mem = mmap(NULL, v->mem_len, PROT_READ | PROT_WRITE, MAP_SHARED, v->memfd, 0);
	if (v->mem == MAP_FAILED) {
		v->mem = NULL;
		return -errno;
	}
	for (int i = 0; i < 2; i++) {
		struct ring *r = &v->r[i];
		int ret;

		ret = uvh_vq_driver_init(&r->drv, v->o.qsize, v->o.packed,
					 !!(v->acked & UVH_BIT(UVH_VIRTIO_F_RING_EVENT_IDX)),
					 v->mem + off, GPA_BASE + off);
		if (ret)
			return ret;
		r->drv_ready = true;
		off += area;
		r->bufs = v->mem + off;
		r->bufs_gpa = GPA_BASE + off;
		off += bufs;
	}
	v->r[1].free = calloc(v->o.qsize, sizeof(uint16_t));
	if (!v->r[1].free)
		return -ENOMEM;
	for (unsigned int i = 0; i < v->o.qsize; i++)
		v->r[1].free[i] = (uint16_t)(v->o.qsize - 1 - i);
	v->r[1].nfree = v->o.qsize;
	return 0;
}

/* Post RX buffer @idx (token idx + 1: tokens are never NULL). */
static int post_rx(struct vmm *v, unsigned int idx)
{
	struct uvh_vq_buf buf = {
		.gpa = v->r[0].bufs_gpa + (uint64_t)idx * BUF_SIZE,
		.len = BUF_SIZE,
	};

	return uvh_vq_driver_add(&v->r[0].drv, &buf, 0, 1, (void *)(uintptr_t)(idx + 1));
}

static void kick(struct ring *r)
{
	uint64_t one = 1;

	if (uvh_vq_driver_need_kick(&r->drv))
		/* EAGAIN (a full counter) still wakes the device */
		(void)!write(r->kick_fd, &one, sizeof(one));
}

/* ---- frames ------------------------------------------------------------------- */

static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
static const uint8_t src_mac[6] = { 0x02, 0x75, 0x76, 0x6d, 0x6d, 0x01 };

static unsigned int frame_len(unsigned long seq)
{
	return FRAME_MIN + (unsigned int)((seq * 97) % (FRAME_MAX - FRAME_MIN + 1));
}

/*
 * Frame @seq: broadcast destination (vdpa_sim_net drops frames that are
 * not for its MAC, broadcast or multicast), ethertype 0x88B5, "UVMM", the
 * sequence number, then a pattern that depends on both.
 */
static void build_frame(uint8_t *p, unsigned long seq, unsigned int len)
{
	uint32_t s = htonl((uint32_t)seq);

	memcpy(p, bcast, 6);
	memcpy(p + 6, src_mac, 6);
	p[12] = ETHERTYPE_TEST >> 8;
	p[13] = ETHERTYPE_TEST & 0xff;
	memcpy(p + 14, TAG, 4);
	memcpy(p + 18, &s, 4);
	for (unsigned int i = 22; i < len; i++)
		p[i] = (uint8_t)(seq * 7 + i);
}

static int send_frames(struct vmm *v, unsigned int window)
{
	struct ring *t = &v->r[1];
	unsigned int added = 0;

	while (v->sent < v->o.frames && v->sent - v->received < window && t->nfree) {
		uint16_t idx = t->free[--t->nfree];
		uint8_t *p = t->bufs + (size_t)idx * BUF_SIZE;
		unsigned int len = frame_len(v->sent);
		struct uvh_vq_buf buf = {
			.gpa = t->bufs_gpa + (uint64_t)idx * BUF_SIZE,
			.len = UVH_NET_HDR_LEN + len,
		};
		int ret;

		memset(p, 0, UVH_NET_HDR_LEN);
		build_frame(p + UVH_NET_HDR_LEN, v->sent, len);
		ret = uvh_vq_driver_add(&t->drv, &buf, 1, 0, (void *)(uintptr_t)(idx + 1));
		if (ret) {
			t->free[t->nfree++] = idx;
			break;
		}
		v->sent++;
		added++;
	}
	if (added) {
		uvh_vq_driver_publish(&t->drv);
		kick(t);
	}
	return (int)added;
}

/* TX chains the device is done with: their buffers are free again. */
static unsigned int reap_tx(struct vmm *v)
{
	struct ring *t = &v->r[1];
	void *tok[32];
	uint32_t lens[32];
	unsigned int n, total = 0;

	while ((n = uvh_vq_driver_get_used(&t->drv, tok, lens, 32)) > 0) {
		for (unsigned int i = 0; i < n; i++) {
			uintptr_t idx = (uintptr_t)tok[i] - 1;

			if (idx < v->o.qsize && t->nfree < v->o.qsize)
				t->free[t->nfree++] = (uint16_t)idx;
		}
		total += n;
	}
	return total;
}

/* Check one received buffer against the next expected frame. */
static void check_rx(struct vmm *v, const uint8_t *p, uint32_t len)
{
	uint8_t want[FRAME_MAX];
	unsigned long seq = v->received;
	unsigned int flen = frame_len(seq);
	const struct uvh_virtio_net_hdr *h = (const void *)p;
	uint32_t got_seq;

	if (len < UVH_NET_HDR_LEN + 22 || len > BUF_SIZE || p[UVH_NET_HDR_LEN + 12] != 0x88 ||
	    p[UVH_NET_HDR_LEN + 13] != 0xB5 || memcmp(p + UVH_NET_HDR_LEN + 14, TAG, 4)) {
		if (v->unexpected++ < 5)
			say(v, "unexpected frame of %u bytes (not one of ours)", len);
		return;
	}
	memcpy(&got_seq, p + UVH_NET_HDR_LEN + 18, 4);
	got_seq = ntohl(got_seq);
	if (got_seq != (uint32_t)seq) {
		if (v->bad++ < 5)
			say(v, "frame %lu expected, frame %u arrived (lost or reordered)", seq, got_seq);
		v->received++;
		return;
	}
	build_frame(want, seq, flen);
	if (len != UVH_NET_HDR_LEN + flen || memcmp(p + UVH_NET_HDR_LEN, want, flen)) {
		if (v->bad++ < 5)
			say(v, "frame %lu came back damaged: %u bytes, %u expected", seq, len,
			    UVH_NET_HDR_LEN + flen);
	} else if ((v->acked & UVH_BIT(UVH_VIRTIO_NET_F_MRG_RXBUF)) && h->num_buffers != 1) {
		if (v->bad++ < 5)
			say(v, "frame %lu: num_buffers %u with MRG_RXBUF (one buffer expected)",
			    seq, h->num_buffers);
	}
	v->received++;
}

static unsigned int reap_rx(struct vmm *v)
{
	struct ring *r = &v->r[0];
	void *tok[32];
	uint32_t lens[32];
	unsigned int n, total = 0;

	while ((n = uvh_vq_driver_get_used(&r->drv, tok, lens, 32)) > 0) {
		for (unsigned int i = 0; i < n; i++) {
			uintptr_t idx = (uintptr_t)tok[i] - 1;

			if (idx >= v->o.qsize) {
				v->bad++;
				continue;
			}
			check_rx(v, r->bufs + idx * BUF_SIZE, lens[i]);
			/* give the buffer back: RX stays full */
			memset(r->bufs + idx * BUF_SIZE, 0, BUF_SIZE);
			if (post_rx(v, (unsigned int)idx))
				v->bad++;
		}
		total += n;
	}
	if (total) {
		uvh_vq_driver_publish(&r->drv);
		kick(r);
	}
	return total;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wait for a call (or an error eventfd) up to @ms; reads the counters. */
static int wait_call(struct vmm *v, int ms)
{
	struct pollfd pfd[4];
	int n = 0, ret;
	uint64_t c;

	for (int i = 0; i < 2; i++) {
		pfd[n++] = (struct pollfd){ .fd = v->r[i].call_fd, .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = v->r[i].err_fd, .events = POLLIN };
	}
	ret = poll(pfd, (nfds_t)n, ms);
	if (ret < 0)
		return errno == EINTR ? 0 : -errno;
	for (int i = 0; i < 2; i++) {
		if ((pfd[2 * i].revents & POLLIN) &&
		    read(v->r[i].call_fd, &c, sizeof(c)) == (ssize_t)sizeof(c))
			v->r[i].calls += c;
		if (pfd[2 * i + 1].revents & POLLIN) {
			say(v, "ring %d: the backend signalled an error (vring err eventfd)", i);
			return -EIO;
		}
	}
	return ret;
}

static int run_traffic(struct vmm *v)
{
	/* frames in flight: at most half the RX ring, so RX never runs dry */
	unsigned int window = v->o.qsize / 2 < 64 ? v->o.qsize / 2 : 64;
	double t0 = now(), last = t0;
	int ret;

	if (!window)
		window = 1;
	uvh_vq_driver_enable_cb(&v->r[0].drv, true);
	uvh_vq_driver_enable_cb(&v->r[1].drv, true);
	while (v->received < v->o.frames) {
		unsigned int got;

		send_frames(v, window);
		reap_tx(v);
		got = reap_rx(v);
		if (got) {
			last = now();
			continue;
		}
		/* going to sleep: ask for calls again, then look once more
		 * (a used entry written before the ask raises no call) */
		uvh_vq_driver_enable_cb(&v->r[0].drv, true);
		uvh_vq_driver_enable_cb(&v->r[1].drv, true);
		if (reap_rx(v)) {
			last = now();
			continue;
		}
		if (reap_tx(v))
			continue;
		if ((now() - last) * 1000 > v->o.timeout_ms) {
			say(v, "no progress for %d ms: %lu sent, %lu received; TX %u free", v->o.timeout_ms,
			    v->sent, v->received, v->r[1].nfree);
			return -ETIMEDOUT;
		}
		ret = wait_call(v, 100);
		if (ret < 0)
			return ret;
	}
	v->seconds = now() - t0;
	/* anything more that arrives is unexpected: give it a moment */
	for (int i = 0; i < 3; i++) {
		unsigned long before = v->received;

		reap_tx(v);
		if (wait_call(v, 50) < 0)
			return -EIO;
		reap_rx(v);
		if (v->received != before) {
			v->unexpected += v->received - before;
			say(v, "%lu frames more than sent arrived", v->received - before);
			v->received = before;
		}
	}
	reap_tx(v);
	return 0;
}

/* ---- the backend ----------------------------------------------------------------- */

#define CALL(v, what, expr)								\
	do {										\
		int r_ = (expr);							\
		if (r_ < 0) {								\
			say(v, "FAIL: %s: %s", what, strerror(-r_));			\
			return r_;							\
		}									\
	} while (0)

/* What this driver can use, as the device type asks. */
static uint64_t driver_features(const struct vmm *v)
{
	uint64_t f = UVH_BIT(UVH_VIRTIO_F_VERSION_1) | UVH_BIT(UVH_VIRTIO_F_RING_EVENT_IDX) |
		     UVH_BIT(UVH_VIRTIO_F_RING_INDIRECT_DESC) | UVH_BIT(UVH_VIRTIO_NET_F_MAC);

	if (v->o.packed)
		f |= UVH_BIT(UVH_VIRTIO_F_RING_PACKED);
	if (v->o.mrg_rxbuf)
		f |= UVH_BIT(UVH_VIRTIO_NET_F_MRG_RXBUF);
	/* vdpa: ring and buffer addresses are IOVAs (= gpa) the backend maps
	 * with IOTLB messages; vdpa_sim refuses a driver without it */
	if (v->type == UVH_VHOST_VDPA)
		f |= UVH_BIT(UVH_VIRTIO_F_IOMMU_PLATFORM);
	/* user: the vhost-user protocol features (rings start disabled) */
	if (v->type == UVH_VHOST_USER)
		f |= UVH_BIT(UVH_F_PROTOCOL_FEATURES);
	return f;
}

static void print_facts(struct vmm *v)
{
	struct uvh_vhost_iova_range range;
	uint8_t cfg[10];
	uint32_t id, num;
	uint64_t q;
	int ret;

	ret = uvh_vhost_call(v->b, get_device_id, &id);
	if (!ret)
		fact(v, "device_id", "%u%s", id, id == 1 ? " (net)" : "");
	else
		fact(v, "device_id", "%s", err_str(ret));
	ret = uvh_vhost_call(v->b, get_vring_num_max, &num);
	if (!ret)
		fact(v, "vring_num_max", "%u", num);
	else
		fact(v, "vring_num_max", "%s", err_str(ret));
	ret = uvh_vhost_call(v->b, get_queue_num, &q);
	if (!ret)
		fact(v, "queue_num", "%" PRIu64, q);
	else
		fact(v, "queue_num", "%s", err_str(ret));
	ret = uvh_vhost_call(v->b, get_max_mem_slots, &q);
	if (!ret)
		fact(v, "max_mem_slots", "%" PRIu64, q);
	else
		fact(v, "max_mem_slots", "%s", err_str(ret));
	ret = uvh_vhost_call(v->b, get_iova_range, &range);
	if (!ret)
		fact(v, "iova_range", "0x%" PRIx64 "-0x%" PRIx64, range.first, range.last);
	else
		fact(v, "iova_range", "%s", err_str(ret));
	memset(cfg, 0, sizeof(cfg));
	ret = uvh_vhost_call(v->b, get_config, 0, 8, cfg);
	if (!ret)
		fact(v, "config", "mac %02x:%02x:%02x:%02x:%02x:%02x status 0x%x", cfg[0], cfg[1],
		     cfg[2], cfg[3], cfg[4], cfg[5], (unsigned int)(cfg[6] | cfg[7] << 8));
	else
		fact(v, "config", "%s", err_str(ret));
}

static int negotiate(struct vmm *v)
{
	char names[512];
	uint64_t want;
	uint8_t st = 0;
	int ret;

	CALL(v, "set_owner", uvh_vhost_call(v->b, set_owner));
	CALL(v, "get_features", uvh_vhost_call(v->b, get_features, &v->offered));
	feature_list(v->offered, names, sizeof(names));
	fact(v, "features_offered", "0x%016" PRIx64 " %s", v->offered, names);

	ret = uvh_vhost_call(v->b, get_backend_features, &v->backend_features);
	if (!ret) {
		uint64_t bf = v->backend_features &
			      (UVH_BIT(VHOST_BF_IOTLB_MSG_V2) | UVH_BIT(VHOST_BF_IOTLB_BATCH) |
			       UVH_BIT(VHOST_BF_SUSPEND));

		fact(v, "backend_features", "0x%" PRIx64 "%s%s%s%s%s", v->backend_features,
		     v->backend_features & UVH_BIT(VHOST_BF_IOTLB_MSG_V2) ? " IOTLB_MSG_V2" : "",
		     v->backend_features & UVH_BIT(VHOST_BF_IOTLB_BATCH) ? " IOTLB_BATCH" : "",
		     v->backend_features & UVH_BIT(VHOST_BF_IOTLB_ASID) ? " IOTLB_ASID" : "",
		     v->backend_features & UVH_BIT(VHOST_BF_SUSPEND) ? " SUSPEND" : "",
		     v->backend_features & UVH_BIT(VHOST_BF_RESUME) ? " RESUME" : "");
		CALL(v, "set_backend_features", uvh_vhost_call(v->b, set_backend_features, bf));
		v->backend_features = bf;
	} else if (ret != -EOPNOTSUPP) {
		say(v, "FAIL: get_backend_features: %s", strerror(-ret));
		return ret;
	}

	if (v->o.packed && !(v->offered & UVH_BIT(UVH_VIRTIO_F_RING_PACKED))) {
		say(v, "SKIP: the backend does not offer VIRTIO_F_RING_PACKED");
		return RUN_SKIP;
	}
	want = driver_features(v);
	v->acked = v->offered & want;
	if (!(v->acked & UVH_BIT(UVH_VIRTIO_F_VERSION_1))) {
		say(v, "FAIL: the backend does not offer VIRTIO_F_VERSION_1");
		return -EPROTO;
	}
	if (v->type == UVH_VHOST_VDPA && !(v->acked & UVH_BIT(UVH_VIRTIO_F_IOMMU_PLATFORM)))
		say(v, "note: no ACCESS_PLATFORM offered: ring addresses are still gpa = IOVA");

	if (v->acked & UVH_BIT(UVH_F_PROTOCOL_FEATURES)) {
		uint64_t pf;

		CALL(v, "get_protocol_features", uvh_vhost_call(v->b, get_protocol_features, &pf));
		fact(v, "protocol_features_offered", "0x%" PRIx64, pf);
		pf &= UVH_BIT(UVH_PROTOCOL_F_MQ) | UVH_BIT(UVH_PROTOCOL_F_REPLY_ACK) |
		      UVH_BIT(UVH_PROTOCOL_F_CONFIG);
		CALL(v, "set_protocol_features", uvh_vhost_call(v->b, set_protocol_features, pf));
		v->protocol_features = pf;
	}

	if (v->type == UVH_VHOST_VDPA) {
		/* a device that someone used before starts from reset */
		CALL(v, "set_status(0)", uvh_vhost_call(v->b, set_status, 0));
		CALL(v, "set_status(ACKNOWLEDGE)", uvh_vhost_call(v->b, set_status, ST_ACKNOWLEDGE));
		CALL(v, "set_status(DRIVER)",
		     uvh_vhost_call(v->b, set_status, ST_ACKNOWLEDGE | ST_DRIVER));
	}
	CALL(v, "set_features", uvh_vhost_call(v->b, set_features, v->acked));
	feature_list(v->acked, names, sizeof(names));
	fact(v, "features_acked", "0x%016" PRIx64 " %s", v->acked, names);
	if (v->type == UVH_VHOST_VDPA) {
		CALL(v, "set_status(FEATURES_OK)",
		     uvh_vhost_call(v->b, set_status, ST_ACKNOWLEDGE | ST_DRIVER | ST_FEATURES_OK));
		CALL(v, "get_status", uvh_vhost_call(v->b, get_status, &st));
		fact(v, "status_after_features_ok", "0x%02x", st);
		/* the device may refuse the features by clearing the bit */
		if (!(st & ST_FEATURES_OK)) {
			say(v, "FAIL: FEATURES_OK did not stick (status 0x%02x)", st);
			return -EPROTO;
		}
	}
	return 0;
}

static int setup_ring(struct vmm *v, uint32_t index)
{
	struct ring *r = &v->r[index];
	struct uvh_vq_config cfg;
	struct uvh_vhost_vring_addr addr = { .index = index };
	uint32_t base;
	int ret;

	r->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	r->call_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	r->err_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (r->kick_fd < 0 || r->call_fd < 0 || r->err_fd < 0)
		return -errno;
	uvh_vq_driver_config(&r->drv, &cfg);
	addr.desc_gpa = cfg.desc_gpa;
	addr.avail_gpa = cfg.driver_gpa;
	addr.used_gpa = cfg.device_gpa;
	/* split: next avail; packed: next avail, wrap counter in bit 15 */
	base = cfg.next_avail | (v->o.packed && cfg.avail_wrap ? 0x8000u : 0);
	CALL(v, "set_vring_num", uvh_vhost_call(v->b, set_vring_num, index, v->o.qsize));
	CALL(v, "set_vring_addr", uvh_vhost_call(v->b, set_vring_addr, &addr));
	CALL(v, "set_vring_base", uvh_vhost_call(v->b, set_vring_base, index, base));
	CALL(v, "set_vring_call", uvh_vhost_call(v->b, set_vring_call, index, r->call_fd));
	CALL(v, "set_vring_kick", uvh_vhost_call(v->b, set_vring_kick, index, r->kick_fd));
	ret = uvh_vhost_call(v->b, set_vring_err, index, r->err_fd);
	if (ret && ret != -EOPNOTSUPP) {
		say(v, "FAIL: set_vring_err: %s", strerror(-ret));
		return ret;
	}
	return 0;
}

static int start_device(struct vmm *v)
{
	struct uvh_vhost_mem_region reg = {
		.gpa = GPA_BASE,
		.size = v->mem_len,
		.hva = v->mem,
		.fd = v->memfd,
		.fd_offset = 0,
	};
	uint32_t max;
	int ret;

	ret = uvh_vhost_call(v->b, get_vring_num_max, &max);
	if (!ret && max < v->o.qsize) {
		say(v, "FAIL: --queue-size %u is over the device's maximum %u", v->o.qsize, max);
		return -EINVAL;
	}
	CALL(v, "set_mem_table", uvh_vhost_call(v->b, set_mem_table, &reg, 1));
	for (uint32_t i = 0; i < 2; i++) {
		ret = setup_ring(v, i);
		if (ret)
			return ret;
	}
	/* RX is full before the device starts (after SET_VRING_BASE: the
	 * base is where the device begins, the empty ring's index) */
	for (unsigned int i = 0; i < v->o.qsize; i++)
		CALL(v, "posting RX buffers", post_rx(v, i));
	uvh_vq_driver_publish(&v->r[0].drv);
	if (v->type == UVH_VHOST_KERN) {
		for (uint32_t i = 0; i < 2; i++)
			CALL(v, "net_set_backend", uvh_vhost_call(v->b, net_set_backend, i, v->tap_fd));
	}
	for (uint32_t i = 0; i < 2; i++) {
		ret = uvh_vhost_call(v->b, set_vring_enable, i, true);
		if (ret && ret != -EOPNOTSUPP) {
			say(v, "FAIL: set_vring_enable(%u): %s", i, strerror(-ret));
			return ret;
		}
	}
	if (v->type == UVH_VHOST_VDPA || v->type == UVH_VHOST_SOFT) {
		uint8_t st = 0;

		CALL(v, "set_status(DRIVER_OK)",
		     uvh_vhost_call(v->b, set_status,
				      ST_ACKNOWLEDGE | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK));
		ret = uvh_vhost_call(v->b, get_status, &st);
		if (!ret)
			fact(v, "status_after_driver_ok", "0x%02x", st);
		if (!ret && (st & (ST_FAILED | ST_DRIVER_OK)) != ST_DRIVER_OK) {
			say(v, "FAIL: the device did not take DRIVER_OK (status 0x%02x)", st);
			return -EPROTO;
		}
	}
	/* the device may have found RX buffers already: let it know */
	kick(&v->r[0]);
	return 0;
}

/* What GET_VRING_BASE must say after @n chains of one slot each. */
static uint32_t expected_base(const struct vmm *v, unsigned long n)
{
	uint32_t idx;

	if (!v->o.packed)
		return (uint32_t)(n & 0xffff);
	idx = (uint32_t)(n % v->o.qsize);
	/* the wrap counter starts at 1 and flips on each lap */
	return idx | (((n / v->o.qsize) & 1) ? 0 : 0x8000u);
}

static void check_bases(struct vmm *v)
{
	const unsigned long done[2] = { v->received + v->unexpected, v->sent };

	/* vdpa: a running device's state is only stable once suspended */
	if (v->type == UVH_VHOST_VDPA && (v->backend_features & UVH_BIT(VHOST_BF_SUSPEND))) {
		int ret = uvh_vhost_call(v->b, suspend);

		if (ret)
			say(v, "suspend: %s", strerror(-ret));
	}
	for (uint32_t i = 0; i < 2; i++) {
		uint32_t base = 0, lo, hi;
		int ret = uvh_vhost_call(v->b, get_vring_base, i, &base);

		v->base_want[i] = expected_base(v, done[i]);
		if (ret) {
			say(v, "get_vring_base(%u): %s", i, strerror(-ret));
			continue;
		}
		v->base_read[i] = true;
		v->base[i] = base;
		lo = base & 0xffff;
		hi = base >> 16;
		/* packed: the high half (used index and wrap) where the
		 * backend gives it must match too: every chain was used */
		v->base_ok[i] = lo == v->base_want[i] && (!v->o.packed || !hi || hi == lo);
	}
}

static void teardown(struct vmm *v)
{
	if (v->b) {
		if (v->type == UVH_VHOST_KERN && v->tap_fd >= 0) {
			uvh_vhost_call(v->b, net_set_backend, 0, -1);
			uvh_vhost_call(v->b, net_set_backend, 1, -1);
		}
		if (v->type == UVH_VHOST_VDPA)
			uvh_vhost_call(v->b, set_status, 0);
		uvh_vhost_close(v->b);
		v->b = NULL;
	}
	vmm_echo_stop(&v->echo);
	for (int i = 0; i < 2; i++) {
		struct ring *r = &v->r[i];

		if (r->drv_ready)
			uvh_vq_driver_free(&r->drv);
		r->drv_ready = false;
		free(r->free);
		r->free = NULL;
		if (r->kick_fd >= 0)
			close(r->kick_fd);
		if (r->call_fd >= 0)
			close(r->call_fd);
		if (r->err_fd >= 0)
			close(r->err_fd);
		r->kick_fd = r->call_fd = r->err_fd = -1;
	}
	if (v->tap_fd >= 0)
		close(v->tap_fd);
	v->tap_fd = -1;
	if (v->mem)
		munmap(v->mem, v->mem_len);
	v->mem = NULL;
	if (v->memfd >= 0)
		close(v->memfd);
	v->memfd = -1;
}

static int run(struct vmm *v)
{
	struct uvh_vhost_open_opts bo = { .user_timeout_ms = v->o.timeout_ms };
	int ret;

	ret = uvh_vhost_open(v->o.spec, &bo, &v->b);
	if (ret) {
		v->b = NULL;
		say(v, "FAIL: uvh_vhost_open(\"%s\"): %s", v->o.spec, strerror(-ret));
		return ret;
	}
	v->type = v->b->type;
	fact(v, "backend", "%s (%s)", uvh_vhost_type_name(v->type), v->b->name);
	if (v->type == UVH_VHOST_KERN && !v->o.tap) {
		say(v, "FAIL: kern needs --tap NAME (the frames leave through it)");
		return -EINVAL;
	}
	ret = negotiate(v);
	if (ret)
		return ret;
	print_facts(v);
	ret = make_memory(v);
	if (ret) {
		say(v, "FAIL: guest memory: %s", strerror(-ret));
		return ret;
	}
	fact(v, "guest_memory", "%" PRIu64 " bytes memfd at gpa 0x%llx, rings of %u (%s)",
	     v->mem_len, GPA_BASE, v->o.qsize, v->o.packed ? "packed" : "split");
	if (v->o.tap) {
		ret = vmm_tap_open(v->o.tap, UVH_NET_HDR_LEN, &v->tap_fd);
		if (ret) {
			say(v, "FAIL: tap %s: %s", v->o.tap, strerror(-ret));
			return ret;
		}
		if (v->o.echo) {
			ret = vmm_echo_start(&v->echo, v->o.tap, ETHERTYPE_TEST);
			if (ret) {
				say(v, "FAIL: echo on %s: %s", v->o.tap, strerror(-ret));
				return ret;
			}
		}
	}
	ret = start_device(v);
	if (ret)
		return ret;
	ret = run_traffic(v);
	if (v->echo.running) {
		fact(v, "echo", "%lu frames looped back through %s%s", atomic_load(&v->echo.looped),
		     v->o.tap, atomic_load(&v->echo.error) ? " (with errors)" : "");
	}
	check_bases(v);
	return ret;
}

int main(int argc, char **argv)
{
	struct vmm *v;
	bool pass;
	int ret;

	v = calloc(1, sizeof(*v));
	if (!v)
		return 1;
	v->memfd = v->tap_fd = -1;
	v->echo.sock = v->echo.stop_fd = -1;
	for (int i = 0; i < 2; i++)
		v->r[i].kick_fd = v->r[i].call_fd = v->r[i].err_fd = -1;
	if (parse_opts(argc, argv, &v->o)) {
		free(v);
		return 2;
	}
	snprintf(label_buf, sizeof(label_buf), "%.*s/%s", (int)strcspn(v->o.spec, ":"),
		 v->o.spec, v->o.packed ? "packed" : "split");
	v->label = label_buf;
	uvh_log_set_level(v->o.verbose >= 2 ? UVH_LOG_DEBUG :
			  v->o.verbose ? UVH_LOG_INFO : UVH_LOG_WARN);

	ret = run(v);
	pass = !ret && v->received == v->o.frames && !v->bad && !v->unexpected &&
	       v->base_ok[0] && v->base_ok[1];
	if (ret != RUN_SKIP) {
		for (int i = 0; i < 2; i++) {
			if (v->base_read[i])
				say(v, "vring %d (%s) base 0x%x, expected 0x%x: %s", i, i ? "TX" : "RX",
				    v->base[i], v->base_want[i], v->base_ok[i] ? "ok" : "MISMATCH");
		}
		say(v, "calls: RX %" PRIu64 ", TX %" PRIu64, v->r[0].calls, v->r[1].calls);
		say(v, "%s: %lu/%lu frames back intact and in order, %lu damaged or out of order, "
		    "%lu unexpected, vring bases %s, %.0f frames/s",
		    pass ? "PASS" : "FAIL", pass ? v->received : v->received - v->bad, v->o.frames,
		    v->bad, v->unexpected,
		    v->base_ok[0] && v->base_ok[1] ? "as expected" : "WRONG",
		    v->seconds > 0 ? (double)v->received / v->seconds : 0.0);
	}
	if (v->o.json)
		printf("{\"label\": \"%s\", \"result\": \"%s\", \"sent\": %lu, \"received\": %lu, "
		       "\"bad\": %lu, \"unexpected\": %lu, \"seconds\": %.6f%s}\n",
		       v->label, ret == RUN_SKIP ? "SKIP" : pass ? "PASS" : "FAIL", v->sent,
		       v->received, v->bad, v->unexpected, v->seconds, v->json);
	teardown(v);
	free(v);
	if (ret == RUN_SKIP)
		return 77;
	return pass ? 0 : 1;
}
