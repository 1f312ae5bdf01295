/* SPDX-License-Identifier: MIT */
/*
 * vm-migrate: runs INSIDE the test guest (gcc -static, by qemu_migrate.sh).
 *
 *   vm-migrate IFACE SECONDS
 *
 * Sends raw Ethernet frames (ethertype 0x88B6, to IFACE's own MAC) without
 * pause for SECONDS while the host live-migrates the guest; the vhost-user
 * back-end (uvhost-net, loopback) echoes them, first the source's, then the
 * destination's. Frame N carries N and a payload and a length (60..1514
 * bytes) both derived from N, so buffers of every size, many crossing a
 * page boundary, are written by the back-end. Each echo is checked byte
 * for byte: an RX page that the source back-end wrote without marking it
 * in the dirty log reaches the destination stale (an older frame: counted
 * dup) or zeroed (counted bad). At the end the frames still in flight get
 * a second to come back, so lost counts frames that never did.
 *
 * Prints "VM-PROGRESS t=<ms> sent=N echoed=N" every 250 ms, then
 *   VM-MIGRATE sent=N echoed=N lost=N dup=N bad=N senderr=N max_gap_ms=N
 * (max_gap_ms: the longest spell without an echo, as the guest's clock saw
 * it). Exit 0 when it ran to the end: the host judges the numbers.
 */
#include <arpa/inet.h>
#include <linux/if_packet.h>
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

#define ETHTYPE		0x88B6
#define MIN_LEN		60
#define MAX_LEN		1514
#define MAGIC		"uvh-migrate"
#define SEQ_OFF		(14 + sizeof(MAGIC) - 1)
#define WINDOW		8
#define GIVE_UP_MS	200
#define DRAIN_MS	1000
#define MAX_SEQ		(1u << 22)

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* 97 is prime to the span: consecutive frames differ in length */
static unsigned int frame_len(uint32_t seq)
{
	return MIN_LEN + (seq * 97u) % (MAX_LEN - MIN_LEN + 1);
}

static void fill(uint8_t *f, const uint8_t mac[6], uint32_t seq)
{
	unsigned int len = frame_len(seq);

	memcpy(f, mac, 6);
	memcpy(f + 6, mac, 6);
	f[12] = ETHTYPE >> 8;
	f[13] = ETHTYPE & 0xff;
	memcpy(f + 14, MAGIC, sizeof(MAGIC) - 1);
	memcpy(f + SEQ_OFF, &seq, sizeof(seq));
	/* never all zero: a zeroed page cannot pass for a frame */
	for (unsigned int i = SEQ_OFF + 4; i < len; i++)
		f[i] = (uint8_t)(seq * 13 + i * 7 + 1) | 1;
}

struct acct {
	uint8_t mac[6];
	uint32_t inflight[WINDOW];
	double sent_at[WINDOW];
	unsigned int nin;
	unsigned long long sent, echoed, dup, bad, senderr;
	double last_echo, max_gap;
};

static uint8_t seen[MAX_SEQ];

/* take every frame waiting on s; wait up to ms for the first one */
static void receive(int s, struct acct *a, int ms)
{
	struct pollfd p = { .fd = s, .events = POLLIN };
	uint8_t r[2048], want[MAX_LEN];
	ssize_t n;

	if (poll(&p, 1, ms) <= 0)
		return;
	while ((n = recv(s, r, sizeof(r), MSG_DONTWAIT)) > 0) {
		uint32_t seq;
		double t;

		if (n < (ssize_t)(SEQ_OFF + 4) || memcmp(r + 14, MAGIC, sizeof(MAGIC) - 1)) {
			/* a frame of ours with its header gone is corrupt too */
			if (n >= 14 && r[12] == (ETHTYPE >> 8) && r[13] == (ETHTYPE & 0xff))
				a->bad++;
			continue;
		}
		memcpy(&seq, r + SEQ_OFF, sizeof(seq));
		if (seq >= a->sent || (size_t)n != frame_len(seq)) {
			a->bad++;
			continue;
		}
		fill(want, a->mac, seq);
		if (memcmp(r, want, (size_t)n)) {
			a->bad++;
			continue;
		}
		if (seen[seq]++) {
			a->dup++;
			continue;
		}
		a->echoed++;
		t = now_ms();
		if (t - a->last_echo > a->max_gap)
			a->max_gap = t - a->last_echo;
		a->last_echo = t;
		for (unsigned int i = 0; i < a->nin; i++)
			if (a->inflight[i] == seq) {
				a->inflight[i] = a->inflight[a->nin - 1];
				a->sent_at[i] = a->sent_at[a->nin - 1];
				a->nin--;
				break;
			}
	}
}

int main(int argc, char **argv)
{
	struct sockaddr_ll sll = { 0 };
	struct ifreq ifr = { 0 };
	struct acct a = { 0 };
	double t0, end, last_print = 0;
	uint8_t f[MAX_LEN];
	int s, secs;

	if (argc != 3)
		return 2;
	secs = atoi(argv[2]);
	s = socket(AF_PACKET, SOCK_RAW, htons(ETHTYPE));
	if (s < 0) {
		perror("socket");
		return 1;
	}
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", argv[1]);
	if (ioctl(s, SIOCGIFINDEX, &ifr) < 0)
		return 1;
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(ETHTYPE);
	sll.sll_ifindex = ifr.ifr_ifindex;
	if (bind(s, (struct sockaddr *)&sll, sizeof(sll)) < 0 || ioctl(s, SIOCGIFHWADDR, &ifr) < 0)
		return 1;
	memcpy(a.mac, ifr.ifr_hwaddr.sa_data, 6);
	t0 = now_ms();
	end = t0 + secs * 1000.0;
	a.last_echo = t0;
	printf("VM-TRAFFIC start\n");
	fflush(stdout);
	while (now_ms() < end && a.sent < MAX_SEQ) {
		double t = now_ms();

		/* echoes overdue leave the window (a late one still counts) */
		for (unsigned int i = 0; i < a.nin;) {
			if (t - a.sent_at[i] > GIVE_UP_MS) {
				a.inflight[i] = a.inflight[a.nin - 1];
				a.sent_at[i] = a.sent_at[a.nin - 1];
				a.nin--;
			} else {
				i++;
			}
		}
		while (a.nin < WINDOW && a.sent < MAX_SEQ) {
			uint32_t seq = (uint32_t)a.sent;
			unsigned int len = frame_len(seq);

			fill(f, a.mac, seq);
			if (send(s, f, len, MSG_DONTWAIT) != (ssize_t)len) {
				a.senderr++;
				break;	/* queue full: try later */
			}
			a.inflight[a.nin] = seq;
			a.sent_at[a.nin++] = t;
			a.sent++;
		}
		receive(s, &a, 10);
		t = now_ms();
		if (t - last_print >= 250) {
			printf("VM-PROGRESS t=%.0f sent=%llu echoed=%llu\n", t - t0, a.sent, a.echoed);
			fflush(stdout);
			last_print = t;
		}
	}
	/* the last frames sent: give their echoes time to come back */
	end = now_ms() + DRAIN_MS;
	while (a.echoed < a.sent && now_ms() < end)
		receive(s, &a, 20);
	printf("VM-MIGRATE sent=%llu echoed=%llu lost=%llu dup=%llu bad=%llu senderr=%llu "
	       "max_gap_ms=%.0f\n", a.sent, a.echoed, a.sent - a.echoed, a.dup, a.bad, a.senderr,
	       a.max_gap);
	return 0;
}
