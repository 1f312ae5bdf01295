/* SPDX-License-Identifier: MIT */
/*
 * vm-rawecho: runs INSIDE the test guest (built with gcc -static by
 * tests/vm/qemu_net.sh, not by meson: the guest has no libc of its own).
 *
 *   vm-rawecho IFACE [PINGPONG BURST]
 *
 * Sends raw Ethernet frames (ethertype 0x88B5, "local experimental", no IP)
 * through IFACE with an AF_PACKET socket and expects each one back unchanged:
 * uvhost-net in loopback mode returns every frame the guest transmits on the
 * guest's own RX queue. The destination MAC is the interface's own, so the
 * echo is a PACKET_HOST frame that no MAC filter may drop.
 *
 * First PINGPONG frames one at a time (send, wait for the echo), sizes
 * cycling from the 60-byte minimum to the 1514-byte maximum, then BURST
 * frames back to back before reading any echo (ring full, batching, order).
 * Every echo must match its frame byte for byte. Then IFACE's counters must
 * have grown by exactly what was sent and echoed: the test disabled IPv6 on
 * IFACE and set no address, so nothing else travels.
 *
 * Prints "VM-RESULT PASS" or "VM-RESULT FAIL <why>"; exit status 0 on PASS.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ETHTYPE 0x88B5
#define MAX_FRAME 1514
#define MAGIC "uvhost-vm"
#define HDR_LEN 14
#define SEQ_OFF (HDR_LEN + sizeof(MAGIC) - 1)
#define MAX_BURST 256

static const unsigned int sizes[] = { 60, 64, 100, 128, 333, 512, 1000, 1400, 1514 };

struct counters {
	unsigned long long rx_packets, tx_packets, rx_bytes, tx_bytes;
	unsigned long long rx_errors, tx_errors, rx_dropped, tx_dropped;
};

static const char *ifname;
static unsigned char mymac[6];

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int fail(const char *fmt, const char *detail)
{
	printf("VM-RESULT FAIL ");
	printf(fmt, detail);
	printf("\n");
	return 1;
}

static unsigned long long read_stat(const char *name)
{
	char path[128], buf[64];
	unsigned long long v = ~0ULL;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/class/net/%s/statistics/%s", ifname, name);
	f = fopen(path, "r");
	if (!f)
		return v;
	if (fgets(buf, sizeof(buf), f))
		v = strtoull(buf, NULL, 10);
	fclose(f);
	return v;
}

static void read_counters(struct counters *c)
{
	c->rx_packets = read_stat("rx_packets");
	c->tx_packets = read_stat("tx_packets");
	c->rx_bytes = read_stat("rx_bytes");
	c->tx_bytes = read_stat("tx_bytes");
	c->rx_errors = read_stat("rx_errors");
	c->tx_errors = read_stat("tx_errors");
	c->rx_dropped = read_stat("rx_dropped");
	c->tx_dropped = read_stat("tx_dropped");
}

/* Frame seq: our MAC twice, the ethertype, MAGIC, seq, then a pattern that
 * depends on seq and position so a stale or shifted buffer cannot match. */
static unsigned int build(unsigned char *f, uint32_t seq)
{
	unsigned int len = sizes[seq % (sizeof(sizes) / sizeof(sizes[0]))];
	uint32_t nseq = htonl(seq);

	memcpy(f, mymac, 6);
	memcpy(f + 6, mymac, 6);
	f[12] = ETHTYPE >> 8;
	f[13] = ETHTYPE & 0xff;
	memcpy(f + HDR_LEN, MAGIC, sizeof(MAGIC) - 1);
	memcpy(f + SEQ_OFF, &nseq, 4);
	for (unsigned int i = SEQ_OFF + 4; i < len; i++)
		f[i] = (unsigned char)(seq * 31 + i * 7 + 1);
	return len;
}

static int send_frame(int s, const struct sockaddr_ll *sll, uint32_t seq, unsigned long long *bytes)
{
	unsigned char f[MAX_FRAME];
	unsigned int len = build(f, seq);

	if (sendto(s, f, len, 0, (const struct sockaddr *)sll, sizeof(*sll)) != (ssize_t)len) {
		printf("VM sendto seq=%u len=%u: %s\n", seq, len, strerror(errno));
		return -1;
	}
	*bytes += len;
	return 0;
}

/*
 * Wait until @deadline for one of our frames coming in (not our own
 * outgoing copy). Returns its seq after checking every byte, -1 on timeout,
 * -2 on a frame of ours that came back changed.
 */
static long recv_echo(int s, double deadline)
{
	unsigned char r[2048], want[MAX_FRAME];

	for (;;) {
		struct pollfd p = { .fd = s, .events = POLLIN };
		struct sockaddr_ll from;
		socklen_t fl = sizeof(from);
		int ms = (int)((deadline - now()) * 1000);
		uint32_t nseq, seq;
		unsigned int len;
		ssize_t n;

		if (ms <= 0)
			return -1;
		if (poll(&p, 1, ms) <= 0)
			continue;
		n = recvfrom(s, r, sizeof(r), MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
		if (n < 0 || from.sll_pkttype == PACKET_OUTGOING)
			continue;
		if (n < (ssize_t)(SEQ_OFF + 4) || memcmp(r + HDR_LEN, MAGIC, sizeof(MAGIC) - 1)) {
			printf("VM stray frame len=%zd pkttype=%u\n", n, from.sll_pkttype);
			continue;
		}
		memcpy(&nseq, r + SEQ_OFF, 4);
		seq = ntohl(nseq);
		len = build(want, seq);
		if ((size_t)n != len || memcmp(r, want, len)) {
			unsigned int i = 0;

			while (i < len && i < (size_t)n && r[i] == want[i])
				i++;
			printf("VM echo seq=%u differs: len %zd want %u, first bad byte %u\n", seq, n,
			       len, i);
			return -2;
		}
		if (from.sll_pkttype != PACKET_HOST)
			printf("VM note: echo seq=%u pkttype=%u\n", seq, from.sll_pkttype);
		return seq;
	}
}

static int check_delta(const char *what, unsigned long long before, unsigned long long after,
		       unsigned long long want)
{
	unsigned long long d = after - before;

	printf("VM counter %-10s +%llu (want +%llu)\n", what, d, want);
	return d == want ? 0 : -1;
}

int main(int argc, char **argv)
{
	unsigned int pingpong = 20, burst = 64, got_pp = 0, got_burst = 0;
	unsigned long long sent_bytes = 0;
	static unsigned char seen[MAX_BURST];
	struct counters c0, c1;
	struct sockaddr_ll sll;
	struct ifreq ifr;
	double t0, t1, deadline;
	int s, bad = 0, misses = 0, rcvbuf = 4 << 20;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc != 2 && argc != 4) {
		fprintf(stderr, "usage: %s IFACE [PINGPONG BURST]\n", argv[0]);
		return 2;
	}
	ifname = argv[1];
	if (argc == 4) {
		pingpong = (unsigned int)atoi(argv[2]);
		burst = (unsigned int)atoi(argv[3]);
		if (burst > MAX_BURST)
			return fail("burst above %s", "256");
	}

	s = socket(AF_PACKET, SOCK_RAW, htons(ETHTYPE));
	if (s < 0)
		return fail("socket(AF_PACKET): %s", strerror(errno));
	/* the burst's echoes queue up here before we read them */
	setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf));
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	if (ioctl(s, SIOCGIFINDEX, &ifr) < 0)
		return fail("SIOCGIFINDEX: %s", strerror(errno));
	memset(&sll, 0, sizeof(sll));
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(ETHTYPE);
	sll.sll_ifindex = ifr.ifr_ifindex;
	if (ioctl(s, SIOCGIFHWADDR, &ifr) < 0)
		return fail("SIOCGIFHWADDR: %s", strerror(errno));
	memcpy(mymac, ifr.ifr_hwaddr.sa_data, 6);
	if (bind(s, (struct sockaddr *)&sll, sizeof(sll)) < 0)
		return fail("bind: %s", strerror(errno));
	sll.sll_halen = 6;
	memcpy(sll.sll_addr, mymac, 6);

	read_counters(&c0);
	t0 = now();

	/* one at a time: each echo must be this frame */
	for (uint32_t seq = 0; seq < pingpong; seq++) {
		long r;

		if (send_frame(s, &sll, seq, &sent_bytes))
			return fail("%s", "sendto failed");
		r = recv_echo(s, now() + 3.0);
		if (r == -1) {
			printf("VM pingpong seq=%u: no echo within 3 s\n", seq);
			bad = 1;
			/* a dead data path: do not wait out every frame */
			if (++misses == 3)
				return fail("%s", "no echo for 3 frames in a row");
			continue;
		}
		misses = 0;
		if (r < 0 || (uint32_t)r != seq) {
			printf("VM pingpong seq=%u: got %ld\n", seq, r);
			bad = 1;
			continue;
		}
		got_pp++;
	}
	t1 = now();
	printf("VM pingpong sent=%u echoed=%u in %.3f s\n", pingpong, got_pp, t1 - t0);

	/* back to back: all echoes, each once, in order */
	for (uint32_t i = 0; i < burst; i++)
		if (send_frame(s, &sll, pingpong + i, &sent_bytes))
			return fail("%s", "sendto failed");
	deadline = now() + 5.0;
	for (uint32_t i = 0; i < burst; i++) {
		long r = recv_echo(s, deadline);

		if (r == -1)
			break;
		if (r < (long)pingpong || r >= (long)(pingpong + burst) || seen[r - pingpong]) {
			printf("VM burst: unexpected echo %ld\n", r);
			bad = 1;
			continue;
		}
		if ((uint32_t)r != pingpong + i)
			printf("VM burst: echo %ld arrived as #%u (reordered)\n", r, i);
		seen[r - pingpong] = 1;
		got_burst++;
	}
	printf("VM burst sent=%u echoed=%u in %.3f s\n", burst, got_burst, now() - t1);

	/* TX completions (and so tx counters) may trail the echoes a little */
	deadline = now() + 3.0;
	do {
		read_counters(&c1);
		if (c1.tx_packets - c0.tx_packets >= pingpong + burst &&
		    c1.rx_packets - c0.rx_packets >= got_pp + got_burst)
			break;
		usleep(50000);
	} while (now() < deadline);
	if (check_delta("tx_packets", c0.tx_packets, c1.tx_packets, pingpong + burst) |
	    check_delta("rx_packets", c0.rx_packets, c1.rx_packets, pingpong + burst) |
	    check_delta("tx_bytes", c0.tx_bytes, c1.tx_bytes, sent_bytes) |
	    check_delta("rx_bytes", c0.rx_bytes, c1.rx_bytes, sent_bytes) |
	    check_delta("rx_errors", c0.rx_errors, c1.rx_errors, 0) |
	    check_delta("tx_errors", c0.tx_errors, c1.tx_errors, 0) |
	    check_delta("rx_dropped", c0.rx_dropped, c1.rx_dropped, 0) |
	    check_delta("tx_dropped", c0.tx_dropped, c1.tx_dropped, 0))
		bad = 1;
	close(s);

	if (got_pp != pingpong || got_burst != burst)
		return fail("%s", "frames missing (see VM lines above)");
	if (bad)
		return fail("%s", "corrupt or unexpected echoes, or counters off (see above)");
	printf("VM-RESULT PASS %u frames (%llu bytes) echoed intact\n", pingpong + burst,
	       sent_bytes);
	return 0;
}
