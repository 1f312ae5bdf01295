/* SPDX-License-Identifier: MIT */
/*
 * conformance-uplink: two front-ends written from the specifications alone (wire.c: this
 * directory's vhost-user and ring code, no uvhost code) on one `uvhost-net --mode switch
 * --queues 2 --uplink KIND:NAME`, and the far side of the uplink driven through an
 * AF_PACKET socket:
 *   xdp   the uplink is one end of a veth pair this test makes (two queues); the far
 *         side is the other end;
 *   tap   the uplink is a tap the daemon makes; the far side is the tap itself (what the
 *         daemon writes, the kernel receives on it; what is sent on it, the daemon reads).
 * An L2 switch with one more port, checked frame by frame, byte for byte:
 *   1. a broadcast from the wire reaches both guests (and teaches the switch the far MAC);
 *   2. 64 frames from the guests (32 each, over both TX rings) to the far MAC reach the
 *      wire once each, and no guest;
 *   3. 64 frames from the wire, 32 to each guest's MAC, reach that guest only;
 *   4. 16 frames from one guest to the other do not leak to the wire.
 * With an xdp uplink the ports must not offer CSUM or HOST_TSO4 (the wire wants whole
 * frames); with a tap they do. Needs root: exits 77 (skip) without it.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "wire.h"

#define F_CSUM 0
#define F_HOST_TSO4 11

const char *prog = "conformance-uplink";

static const uint8_t mac_g[2][6] = {{0x02, 0x75, 0x76, 0x68, 0x00, 0x10},
				    {0x02, 0x75, 0x76, 0x68, 0x00, 0x11}};
static const uint8_t mac_far[6] = {0x02, 0x75, 0x76, 0x68, 0xfe, 0xee};

/* Guest k & 1's frame k to the far MAC, as the wire must see it. */
static void make_to_far(uint8_t *f, unsigned k)
{
	make_out(f, k, mac_far, mac_g[k & 1]);
}

/* Frames of ours (IPv4 from make_in, or the test ethertype) guest @g got within @ms;
 * each index's count goes to seen[] (by kind), every frame checked whole. */
static unsigned recv_checked(struct guest *g, int ms, unsigned char seen_in[NFRAMES],
			     unsigned char seen_out[NFRAMES], const uint8_t *dst_in)
{
	static uint8_t buf[4096], want[4096];
	uint64_t end = now_ns() + (uint64_t)ms * 1000000u;
	unsigned n = 0;

	while (now_ns() < end) {
		bool any = false;

		for (unsigned r = 0; r < 4; r += 2) {
			int len = guest_recv(g, r, buf, sizeof(buf));
			unsigned k;

			if (len < 0)
				continue;
			any = true;
			if (len >= 43 && buf[12] == 0x08 && buf[13] == 0x00 && buf[23] == 17) {
				k = buf[42];
				if (k >= NFRAMES)
					fail("a frame from the wire with index %u", k);
				make_in(want, k, buf[0] & 1 ? NULL : dst_in, mac_far);
				if ((unsigned)len != frame_len(k) || memcmp(buf, want, frame_len(k)))
					fail("frame %u from the wire differs (%d bytes)", k, len);
				seen_in[k]++;
				n++;
			} else if (len >= 15 && buf[12] == (ETHERTYPE_TEST >> 8) &&
				   buf[13] == (ETHERTYPE_TEST & 0xff)) {
				k = buf[14];
				if (k >= NFRAMES)
					fail("a guest's frame with index %u", k);
				seen_out[k]++;
				n++;
			}
		}
		if (!any)
			usleep(200);
	}
	return n;
}

int main(int argc, char **argv)
{
	const char *daemon = NULL, *kind = NULL, *engine_mode = "event", *cores = "";
	static struct guest g[2];
	static uint8_t buf[4096], want[4096];
	static unsigned char in[2][NFRAMES], out[2][NFRAMES];
	char spec[32], s0[80], s1[80], far_if[16];
	uint64_t offered, end;
	unsigned got;
	int ps, st;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--daemon") && i + 1 < argc)
			daemon = argv[++i];
		else if (!strcmp(argv[i], "--uplink") && i + 1 < argc)
			kind = argv[++i];
		else if (!strcmp(argv[i], "--engine-mode") && i + 1 < argc)
			engine_mode = argv[++i];
		else if (!strcmp(argv[i], "--cores") && i + 1 < argc)
			cores = argv[++i];	/* engines on several threads: the locks meet */
		else
			kind = NULL, i = argc;
	}
	if (!daemon || !kind || (strcmp(kind, "xdp") && strcmp(kind, "tap")))
		fail("usage: %s --daemon PATH --uplink xdp|tap [--engine-mode M] [--cores LIST]",
		     prog);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (geteuid() != 0) {
		printf("%s: SKIP: needs root (veth, XDP, tap)\n", prog);
		return 77;
	}
	snprintf(dir, sizeof(dir), "/tmp/uvh-uplink.XXXXXX");
	if (!mkdtemp(dir))
		fail("mkdtemp: %m");
	snprintf(s0, sizeof(s0), "%s/s0", dir);
	snprintf(s1, sizeof(s1), "%s/s1", dir);
	snprintf(sock_path, sizeof(sock_path), "%s", s0);
	snprintf(ifa, sizeof(ifa), "uvua%u", (unsigned)getpid() % 100000);
	if (!strcmp(kind, "xdp")) {
		snprintf(ifb, sizeof(ifb), "uvub%u", (unsigned)getpid() % 100000);
		sh("ip link add %s numtxqueues 2 numrxqueues 2 type veth peer name %s "
		   "numtxqueues 2 numrxqueues 2", ifa, ifb);
		sh("sysctl -qw net.ipv6.conf.%s.disable_ipv6=1", ifa);
		sh("sysctl -qw net.ipv6.conf.%s.disable_ipv6=1", ifb);
		sh("ip link set %s up", ifa);
		sh("ip link set %s up", ifb);
		snprintf(far_if, sizeof(far_if), "%s", ifb);
	} else {
		snprintf(far_if, sizeof(far_if), "%s", ifa);
	}
	snprintf(spec, sizeof(spec), "%s:%s", kind, ifa);
	start_daemon((char *const[]){(char *)daemon, "--mode", "switch", "--queues", "2",
				     "--uplink", spec, "--engine-mode", (char *)engine_mode,
				     "--socket-path", s0, "--socket-path", s1,
				     *cores ? "--cores" : NULL, (char *)cores, NULL});
	guest_up(&g[0], s0, false, true, true, RX_BUF, true);
	guest_up(&g[1], s1, false, true, true, RX_BUF, true);
	if (!strcmp(kind, "tap")) {
		/* the daemon made the tap (it listens, so it has): bring it up */
		sh("sysctl -qw net.ipv6.conf.%s.disable_ipv6=1", ifa);
		sh("ip link set %s up", ifa);
	}
	ps = packet_socket(far_if);

	/* the offloads the ports offer */
	vu_send(&g[0].vu, VU_GET_FEATURES, false, NULL, 0, NULL, 0, 0, &offered);
	vu_read_all(&g[0].vu);
	if (!strcmp(kind, "xdp") && (offered & (1ull << F_CSUM | 1ull << F_HOST_TSO4)))
		fail("xdp uplink: the ports offer CSUM or HOST_TSO4 (%#llx)",
		     (unsigned long long)offered);
	if (!strcmp(kind, "tap") && !(offered & 1ull << F_HOST_TSO4))
		fail("tap uplink: the ports do not offer HOST_TSO4 (%#llx)",
		     (unsigned long long)offered);

	/* 1. a broadcast from the wire: both guests */
	make_in(want, 0, NULL, mac_far);
	wire_send(ps, want, frame_len(0));
	for (int k = 0; k < 2; k++) {
		end = now_ns() + 3000000000ull;
		while (!in[k][0] && now_ns() < end)
			recv_checked(&g[k], 20, in[k], out[k], mac_g[k]);
		if (in[k][0] != 1)
			fail("the broadcast from the wire reached guest %d %u times", k, in[k][0]);
	}
	printf("%s: %s uplink: a broadcast from the wire reached both guests\n", prog, kind);

	/* 2. guests -> the far MAC */
	/* guest 0 sends the even frames on its pair 0, guest 1 the odd ones on its pair 1 */
	for (unsigned k = 0; k < NFRAMES; k++) {
		make_out(want, k, mac_far, mac_g[k & 1]);
		guest_send(&g[k & 1], k, want);
	}
	wire_expect(ps, NFRAMES, make_to_far, "wire");
	for (int k = 0; k < 2; k++) {
		recv_checked(&g[k], 200, in[k], out[k], mac_g[k]);
		for (unsigned i = 0; i < NFRAMES; i++)
			if (out[k][i])
				fail("guest %d got frame %u meant for the wire", k, i);
	}
	printf("%s: guests -> wire: %u frames over both pairs, byte for byte, none to a "
	       "guest\n", prog, NFRAMES);

	/* 3. the wire -> each guest's MAC */
	for (unsigned k = 0; k < NFRAMES; k++) {
		make_in(want, k, mac_g[k & 1], mac_far);
		wire_send(ps, want, frame_len(k));
	}
	memset(in, 0, sizeof(in));
	end = now_ns() + 5000000000ull;
	for (got = 0; got < NFRAMES && now_ns() < end;) {
		got += recv_checked(&g[0], 10, in[0], out[0], mac_g[0]);
		got += recv_checked(&g[1], 10, in[1], out[1], mac_g[1]);
	}
	recv_checked(&g[0], 100, in[0], out[0], mac_g[0]);
	recv_checked(&g[1], 100, in[1], out[1], mac_g[1]);
	for (unsigned k = 0; k < NFRAMES; k++)
		if (in[k & 1][k] != 1 || in[!(k & 1)][k])
			fail("frame %u from the wire to guest %u: got %u times there, %u at the "
			     "other", k, k & 1, in[k & 1][k], in[!(k & 1)][k]);
	printf("%s: wire -> guests: %u frames, each to its guest only, byte for byte\n", prog,
	       NFRAMES);

	/* 4. guest to guest: not to the wire */
	memset(out, 0, sizeof(out));
	for (unsigned k = 0; k < 16; k++) {
		make_out(want, k, mac_g[1], mac_g[0]);
		guest_send(&g[0], k, want);
	}
	recv_checked(&g[1], 500, in[1], out[1], mac_g[1]);
	for (unsigned k = 0; k < 16; k++)
		if (out[1][k] != 1)
			fail("guest 1 got frame %u from guest 0 %u times", k, out[1][k]);
	if ((got = wire_count(ps, 300, buf, sizeof(buf))))
		fail("%u frames between the guests leaked to the wire", got);
	printf("%s: guest -> guest: 16 frames, none on the wire\n", prog);

	close(ps);
	guest_down(&g[0]);
	guest_down(&g[1]);
	st = stop_daemon();
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		fail("the daemon's exit status is %#x", st);
	cleanup();
	unlink(s1);
	printf("%s: PASS (%s uplink, %s mode%s%s)\n", prog, kind, engine_mode,
	       *cores ? ", engines on cores " : "", cores);
	return 0;
}
