/* SPDX-License-Identifier: MIT */
/*
 * vm-restart: runs INSIDE the test guest (gcc -static, by qemu_restart.sh).
 *
 *   vm-restart IFACE SECONDS
 *
 * Sends raw Ethernet frames (ethertype 0x88B5, to IFACE's own MAC) with a
 * sequence number, a few in flight at a time, for SECONDS, while the host
 * kills and restarts the vhost-user back-end (uvhost-net, loopback mode)
 * under QEMU. Every echo is checked byte for byte and accounted by
 * sequence number: echoed once, twice (dup), or never (lost: allowed for a
 * net device while its back-end is gone). A frame whose echo does not come
 * within 200 ms is given up (counted lost if it never comes).
 *
 * Prints "VM-PROGRESS t=<ms> sent=N echoed=N" every 250 ms, then
 *   VM-RESTART sent=N echoed=N lost=N dup=N bad=N senderr=N stalls=N max_stall_ms=N
 * (a stall: a spell of 300 ms or more without any echo; max_stall_ms the
 * longest one). Exit 0 when it ran to the end (the host judges the numbers).
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

#define ETHTYPE		0x88B5
#define FLEN		128
#define MAGIC		"uvh-restart"
#define SEQ_OFF		(14 + sizeof(MAGIC) - 1)
#define WINDOW		8
#define GIVE_UP_MS	200
#define STALL_MS	300
#define MAX_SEQ		(1u << 22)

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void fill(uint8_t *f, const uint8_t mac[6], uint32_t seq)
{
	memcpy(f, mac, 6);
	memcpy(f + 6, mac, 6);
	f[12] = ETHTYPE >> 8;
	f[13] = ETHTYPE & 0xff;
	memcpy(f + 14, MAGIC, sizeof(MAGIC) - 1);
	memcpy(f + SEQ_OFF, &seq, sizeof(seq));
	for (unsigned int i = SEQ_OFF + 4; i < FLEN; i++)
		f[i] = (uint8_t)(seq * 7 + i);
}

int main(int argc, char **argv)
{
	static uint8_t seen[MAX_SEQ];
	unsigned long long sent = 0, echoed = 0, dup = 0, bad = 0, senderr = 0, stalls = 0;
	double t0, end, last_echo, last_print = 0, max_stall = 0, sent_at[WINDOW];
	uint32_t inflight[WINDOW];
	unsigned int nin = 0;
	struct sockaddr_ll sll = { 0 };
	struct ifreq ifr = { 0 };
	uint8_t mac[6], f[FLEN], r[2048];
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
	memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
	t0 = now_ms();
	end = t0 + secs * 1000.0;
	last_echo = t0;
	printf("VM-TRAFFIC start\n");
	fflush(stdout);
	while (now_ms() < end && sent < MAX_SEQ) {
		struct pollfd p = { .fd = s, .events = POLLIN };
		double t = now_ms();

		/* give up on echoes too old; keep the window moving */
		for (unsigned int i = 0; i < nin;) {
			if (t - sent_at[i] > GIVE_UP_MS) {
				inflight[i] = inflight[nin - 1];
				sent_at[i] = sent_at[nin - 1];
				nin--;
			} else {
				i++;
			}
		}
		while (nin < WINDOW) {
			fill(f, mac, (uint32_t)sent);
			if (send(s, f, FLEN, MSG_DONTWAIT) != FLEN) {
				senderr++;
				break;	/* link down or queue full: try later */
			}
			inflight[nin] = (uint32_t)sent;
			sent_at[nin++] = t;
			sent++;
		}
		if (poll(&p, 1, 10) > 0) {
			ssize_t n;

			while ((n = recv(s, r, sizeof(r), MSG_DONTWAIT)) > 0) {
				uint32_t seq;
				uint8_t want[FLEN];

				if (n < (ssize_t)FLEN || memcmp(r + 14, MAGIC, sizeof(MAGIC) - 1))
					continue;	/* not ours */
				memcpy(&seq, r + SEQ_OFF, sizeof(seq));
				fill(want, mac, seq);
				if (n != FLEN || seq >= sent || memcmp(r, want, FLEN)) {
					bad++;
					continue;
				}
				if (seen[seq]++) {
					dup++;
					continue;
				}
				echoed++;
				t = now_ms();
				if (t - last_echo >= STALL_MS)
					stalls++;
				if (t - last_echo > max_stall)
					max_stall = t - last_echo;
				last_echo = t;
				for (unsigned int i = 0; i < nin; i++)
					if (inflight[i] == seq) {
						inflight[i] = inflight[nin - 1];
						sent_at[i] = sent_at[nin - 1];
						nin--;
						break;
					}
			}
		}
		t = now_ms();
		if (t - last_print >= 250) {
			printf("VM-PROGRESS t=%.0f sent=%llu echoed=%llu\n", t - t0, sent, echoed);
			fflush(stdout);
			last_print = t;
		}
	}
	/* a stall still going on at the end counts too */
	if (now_ms() - last_echo > max_stall)
		max_stall = now_ms() - last_echo;
	printf("VM-RESTART sent=%llu echoed=%llu lost=%llu dup=%llu bad=%llu senderr=%llu "
	       "stalls=%llu max_stall_ms=%.0f\n", sent, echoed, sent - echoed, dup, bad, senderr,
	       stalls, max_stall);
	return 0;
}
