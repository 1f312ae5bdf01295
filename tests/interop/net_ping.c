/* SPDX-License-Identifier: MIT */
/*
 * interop-net-ping: a minimal ping for the tap test, so the suite does not
 * depend on iputils being installed. Sends COUNT ICMP echo requests to an
 * IPv4 address through a raw socket, one every 200 ms, and counts the
 * replies whose identifier, sequence number and payload all match what was
 * sent (the payload checks that frames crossed the data path intact).
 *
 * Usage: interop-net-ping ADDRESS COUNT [TIMEOUT-SECONDS]
 * Prints "sent N, received M, bad K" and exits 0 when every request was
 * answered, 1 otherwise, 2 on a usage or socket error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define PAYLOAD		56
#define MAX_COUNT	64
#define INTERVAL_MS	200

static uint16_t csum(const void *data, size_t len)
{
	const uint8_t *p = data;
	uint32_t sum = 0;

	for (; len > 1; len -= 2, p += 2)
		sum += (uint32_t)(p[0] << 8 | p[1]);
	if (len)
		sum += (uint32_t)p[0] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return htons((uint16_t)~sum);
}

static void fill_payload(uint8_t *p, uint16_t seq)
{
	for (unsigned int i = 0; i < PAYLOAD; i++)
		p[i] = (uint8_t)(i * 7 + seq);
}

int main(int argc, char **argv)
{
	uint8_t pkt[sizeof(struct icmphdr) + PAYLOAD], buf[2048];
	bool answered[MAX_COUNT] = { false };
	struct sockaddr_in to = { .sin_family = AF_INET };
	unsigned int count, sent = 0, received = 0, bad = 0;
	int64_t deadline, next_send;
	uint16_t ident = (uint16_t)getpid();
	int fd, timeout_s = 5;

	if (argc < 3 || argc > 4 || inet_pton(AF_INET, argv[1], &to.sin_addr) != 1) {
		fprintf(stderr, "usage: %s ADDRESS COUNT [TIMEOUT-SECONDS]\n", argv[0]);
		return 2;
	}
	count = (unsigned int)atoi(argv[2]);
	if (argc == 4)
		timeout_s = atoi(argv[3]);
	if (!count || count > MAX_COUNT || timeout_s <= 0) {
		fprintf(stderr, "%s: COUNT 1..%d, TIMEOUT > 0\n", argv[0], MAX_COUNT);
		return 2;
	}
	fd = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
	if (fd < 0) {
		fprintf(stderr, "%s: raw socket: %s\n", argv[0], strerror(errno));
		return 2;
	}

	next_send = uvh_now_ms();
	deadline = next_send + (int64_t)count * INTERVAL_MS + (int64_t)timeout_s * 1000;
	while (received < count && uvh_now_ms() < deadline) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int64_t t = uvh_now_ms(), wait;

		if (sent < count && t >= next_send) {
			struct icmphdr *h = (struct icmphdr *)pkt;

			memset(pkt, 0, sizeof(pkt));
			h->type = ICMP_ECHO;
			h->un.echo.id = htons(ident);
			h->un.echo.sequence = htons((uint16_t)sent);
			fill_payload(pkt + sizeof(*h), (uint16_t)sent);
			h->checksum = csum(pkt, sizeof(pkt));
			if (sendto(fd, pkt, sizeof(pkt), 0, (struct sockaddr *)&to, sizeof(to)) < 0)
				fprintf(stderr, "sendto: %s\n", strerror(errno));
			sent++;
			next_send = t + INTERVAL_MS;
		}
		wait = (sent < count ? next_send : deadline) - uvh_now_ms();
		if (wait < 0)
			wait = 0;
		if (poll(&pfd, 1, (int)wait) <= 0)
			continue;

		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		const struct iphdr *ip = (const struct iphdr *)buf;
		const struct icmphdr *r;
		uint8_t want[PAYLOAD];
		size_t ihl;
		uint16_t seq;

		if (n < (ssize_t)sizeof(*ip))
			continue;
		ihl = (size_t)ip->ihl * 4;
		if (ihl < sizeof(*ip) || (size_t)n < ihl + sizeof(*r))
			continue;
		r = (const struct icmphdr *)(buf + ihl);
		if (r->type != ICMP_ECHOREPLY || ntohs(r->un.echo.id) != ident ||
		    ip->saddr != to.sin_addr.s_addr)
			continue;	/* someone else's, or our own request */
		seq = ntohs(r->un.echo.sequence);
		fill_payload(want, seq);
		if (seq >= sent || answered[seq] || (size_t)n != ihl + sizeof(pkt) ||
		    memcmp((const uint8_t *)r + sizeof(*r), want, PAYLOAD) ||
		    csum(r, sizeof(pkt)) != 0) {
			bad++;
			continue;
		}
		answered[seq] = true;
		received++;
	}
	close(fd);
	printf("sent %u, received %u, bad %u\n", sent, received, bad);
	return received == count && !bad ? 0 : 1;
}
