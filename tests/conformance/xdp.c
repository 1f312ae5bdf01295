/* SPDX-License-Identifier: MIT */
/*
 * conformance-xdp: a front-end written from the specifications alone (this directory's
 * vhost-user and ring code, plain libc, no uvhost code) on `uvhost-net --mode xdp --iface A
 * --queues 2`, where A is one end of a veth pair this test makes (two queues each end,
 * IPv6 off so the kernel sends nothing of its own). The other end, B, is driven through an
 * AF_PACKET socket:
 *   - guest → wire: 64 frames of 60..1514 bytes, alternating between the two TX rings,
 *     must each reach B once, byte for byte;
 *   - wire → guest: 64 UDP/IPv4 frames of 60..1514 bytes sent on B, one flow each (the
 *     kernel spreads flows over A's two queues), must each reach one of the guest's two
 *     RX rings once, byte for byte; both queue pairs must have carried some.
 * Around it, the bad cases (each a front-end session of its own):
 *   - starved: a guest with no RX buffers while 6,000 frames arrive (more than the
 *     socket's ring holds): they wait in the socket, the kernel drops the rest, and once
 *     the guest posts buffers it gets the ones that waited; the next session (the exchange
 *     above) must find every UMEM frame back;
 *   - a frame bigger than the guest's buffers (no MRG_RXBUF, 1 KiB buffers): dropped,
 *     and the small frame after it arrives;
 *   - link down: the guest's frames are consumed (its TX ring never stalls) and dropped;
 *     link up again: they reach the wire again;
 *   - the interface deleted under the daemon: frames consumed, the daemon lives on,
 *     and exits 0 on SIGTERM (under ASan: no leak, no error).
 * The daemon's exit status is checked, and that its XDP program is gone after it.
 * Needs root (veth, XDP): exits 77 (skip) without it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "wire.h"

const char *prog = "conformance-xdp";
static const uint8_t guest_mac[6] = {0x02, 0x75, 0x76, 0x68, 0x00, 0x01};
static uint8_t mac_b[6];	/* the veth peer's */

/* Guest → wire frame k, as the wire must see it. */
static void make_to_b(uint8_t *f, unsigned k)
{
	make_out(f, k, mac_b, guest_mac);
}

/* The daemon's CPU time so far (all its threads), seconds. */
static double daemon_cpu_s(void)
{
	char path[64], buf[1024], *p;
	unsigned long ut, st;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)daemon_pid);
	f = fopen(path, "r");
	if (!f || !fgets(buf, sizeof(buf), f))
		fail("cannot read %s", path);
	fclose(f);
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		fail("cannot parse %s", path);
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/*
 * MTU 9000 on both ends: frames up to 9,014 bytes both ways, byte for byte (XDP
 * multi-buffer: one frame in three UMEM frames; in the guest, merged RX buffers).
 */
static void jumbo_exchange(struct guest *g, int ps, bool packed)
{
	static const unsigned sizes[] = {1514, 3900, 4096, 4200, 8000, 9014};
	const unsigned nsz = sizeof(sizes) / sizeof(sizes[0]);
	static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	static uint8_t buf[10000], want[10000];
	unsigned k;

	guest_up(g, sock_path, packed, true, true, RX_BUF, true);
	for (k = 0; k < nsz; k++) {
		make_out_len(want, sizes[k], k, mac_b, guest_mac);
		guest_send_len(g, k, want, sizes[k]);
	}
	for (unsigned got = 0; got < nsz;) {
		int len = wire_recv(ps, buf, sizeof(buf), 3000);

		if (len < 0)
			fail("jumbo: %u of %u frames from the guest reached the wire", got, nsz);
		k = buf[14];
		if (k >= nsz)
			fail("jumbo: wire: frame index %u", k);
		make_out_len(want, sizes[k], k, mac_b, guest_mac);
		if ((unsigned)len != sizes[k] || memcmp(buf, want, sizes[k]))
			fail("jumbo: wire: frame %u differs (%d bytes, sent %u)", k, len, sizes[k]);
		got++;
	}
	printf("%s: jumbo: guest -> wire: frames of 1514..9014 bytes, byte for byte\n", prog);
	for (k = 0; k < nsz; k++) {
		make_out_len(want, sizes[k], k + 100, bcast, mac_b);
		wire_send(ps, want, sizes[k]);
	}
	for (unsigned got = 0; got < nsz;) {
		uint64_t end = now_ns() + 3000000000ull;
		int len = -1;

		while (len < 0 && now_ns() < end) {
			len = guest_recv(g, 0, buf, sizeof(buf));
			if (len < 0)
				len = guest_recv(g, 2, buf, sizeof(buf));
			if (len < 0)
				usleep(200);
		}
		if (len < 0)
			fail("jumbo: %u of %u frames from the wire reached the guest", got, nsz);
		if (len < 15 || buf[12] != (ETHERTYPE_TEST >> 8))
			continue;
		k = buf[14] - 100u;
		if (k >= nsz)
			fail("jumbo: guest: frame index %u", buf[14]);
		make_out_len(want, sizes[k], k + 100, bcast, mac_b);
		if ((unsigned)len != sizes[k] || memcmp(buf, want, sizes[k]))
			fail("jumbo: guest: frame %u differs (%d bytes, sent %u)", k, len, sizes[k]);
		got++;
	}
	printf("%s: jumbo: wire -> guest: frames of 1514..9014 bytes, byte for byte\n", prog);
}

int main(int argc, char **argv)
{
	const char *daemon = NULL, *engine_mode = "event";
	bool packed = false, jumbo = false;
	static struct guest g;
	static uint8_t buf[4096], want[4096];
	uint8_t mac_a[6];
	bool seen[NFRAMES] = {false};
	unsigned got = 0, per_ring[2] = {0, 0}, n;
	uint64_t end;
	int ps, i, st;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--daemon") && i + 1 < argc)
			daemon = argv[++i];
		else if (!strcmp(argv[i], "--engine-mode") && i + 1 < argc)
			engine_mode = argv[++i];
		else if (!strcmp(argv[i], "--packed"))
			packed = true;
		else if (!strcmp(argv[i], "--jumbo"))
			jumbo = true;
		else
			fail("usage: %s --daemon PATH [--engine-mode M] [--packed] [--jumbo]", prog);
	}
	if (!daemon)
		fail("usage: %s --daemon PATH [--engine-mode M] [--packed] [--jumbo]", prog);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (geteuid() != 0) {
		printf("%s: SKIP: needs root (veth, XDP)\n", prog);
		return 77;
	}
	snprintf(ifa, sizeof(ifa), "uvxa%u", (unsigned)getpid() % 100000);
	snprintf(ifb, sizeof(ifb), "uvxb%u", (unsigned)getpid() % 100000);
	if (system("ip link help >/dev/null 2>&1") == 32512)
		fail("no ip(8) (iproute2)");
	sh("ip link add %s numtxqueues 2 numrxqueues 2 type veth peer name %s "
	   "numtxqueues 2 numrxqueues 2", ifa, ifb);
	if (jumbo) {
		sh("ip link set %s mtu 9000", ifa);
		sh("ip link set %s mtu 9000", ifb);
	}
	for (int k = 0; k < 2; k++) {
		const char *nm = k ? ifb : ifa;

		sh("sysctl -qw net.ipv6.conf.%s.disable_ipv6=1", nm);
		sh("ip link set %s up", nm);
	}
	mac_of(ifa, mac_a);
	mac_of(ifb, mac_b);
	snprintf(dir, sizeof(dir), "/tmp/uvh-xdp.XXXXXX");
	if (!mkdtemp(dir))
		fail("mkdtemp: %m");
	snprintf(sock_path, sizeof(sock_path), "%s/s", dir);
	start_daemon((char *const[]){(char *)daemon, "--mode", "xdp", "--iface", ifa, "--queues",
				     "2", "--engine-mode", (char *)engine_mode, "--socket-path",
				     sock_path, NULL});
	ps = packet_socket(ifb);

	if (jumbo) {
		jumbo_exchange(&g, ps, packed);
		guest_down(&g);
		/* killed: its program stays on the interface; the next one
		 * replaces it and takes frames, and removes it at exit */
		kill(daemon_pid, SIGKILL);
		waitpid(daemon_pid, NULL, 0);
		unlink(sock_path);
		start_daemon((char *const[]){(char *)daemon, "--mode", "xdp", "--iface", ifa,
					     "--queues", "2", "--engine-mode", (char *)engine_mode,
					     "--socket-path", sock_path, NULL});
		jumbo_exchange(&g, ps, packed);
		printf("%s: restarted after SIGKILL: the program left behind replaced\n", prog);
		guest_down(&g);
		close(ps);
		st = stop_daemon();
		if (!WIFEXITED(st) || WEXITSTATUS(st))
			fail("the daemon's exit status is %#x", st);
		{
			char cmd[96];

			/* SIGTERM: the program goes with the daemon */
			snprintf(cmd, sizeof(cmd), "ip link show %s | grep -q ' xdp'", ifa);
			if (system(cmd) == 0)
				fail("%s still has an XDP program after the daemon's exit", ifa);
		}
		cleanup();
		printf("%s: PASS (jumbo, %s ring, %s mode)\n", prog, packed ? "packed" : "split",
		       engine_mode);
		return 0;
	}

	/* starved: no RX buffers while more frames arrive than the socket holds */
	guest_up(&g, sock_path, packed, true, true, RX_BUF, false);
	for (unsigned k = 0; k < 6000; k++) {
		make_in(want, k % NFRAMES, NULL, mac_b);
		wire_send(ps, want, 60);
	}
	usleep(100000);
	/* frames wait for buffers: the guest's kick is what the engine waits for now,
	 * not its socket (readable all along); event and adaptive engines sleep */
	if (strcmp(engine_mode, "poll")) {
		double cpu = daemon_cpu_s();

		usleep(500000);
		cpu = daemon_cpu_s() - cpu;
		if (cpu > 0.25)
			fail("starved: the daemon used %.0f %% of a core while frames waited for "
			     "buffers (%s mode)", cpu / 0.5 * 100, engine_mode);
		printf("%s: starved guest: the daemon used %.0f %% of a core meanwhile\n", prog,
		       cpu / 0.5 * 100);
	}
	rx_post(&g, 0);
	rx_post(&g, 2);
	n = guest_drain(&g, 500, buf, sizeof(buf));
	/* each queue's socket holds 2 x 2,048 (its RX ring and fill ring): no more */
	if (!n || n > 2 * 2 * 2048)
		fail("starved: %u of the 6000 frames reached the guest", n);
	printf("%s: starved guest: %u of 6000 frames waited in the socket for its buffers "
	       "(the kernel dropped the rest)\n", prog, n);
	guest_down(&g);

	/* the exchange: a new session, every UMEM frame must be back */
	guest_up(&g, sock_path, packed, true, true, RX_BUF, true);
	for (unsigned k = 0; k < NFRAMES; k++) {
		make_out(want, k, mac_b, guest_mac);
		guest_send(&g, k, want);
	}
	wire_expect(ps, NFRAMES, make_to_b, "wire");
	printf("%s: guest -> wire: %u frames of 60..1514 bytes over 2 TX rings, byte for byte\n",
	       prog, NFRAMES);

	for (unsigned k = 0; k < NFRAMES; k++) {
		make_in(want, k, NULL, mac_b);
		wire_send(ps, want, frame_len(k));
	}
	end = now_ns() + 5000000000ull;
	while (got < NFRAMES && now_ns() < end) {
		bool any = false;

		for (unsigned r = 0; r < 2; r++) {
			int len = guest_recv(&g, 2 * r, buf, sizeof(buf));
			unsigned k;

			if (len < 0)
				continue;
			any = true;
			if (len < 43 || buf[12] != 0x08 || buf[13] != 0x00 || buf[23] != 17)
				continue; /* not ours (the kernel's own) */
			k = buf[42];
			if (k >= NFRAMES)
				fail("guest: frame with index %u", k);
			if (seen[k])
				fail("guest: frame %u came twice", k);
			make_in(want, k, NULL, mac_b);
			if ((unsigned)len != frame_len(k) || memcmp(buf, want, frame_len(k)))
				fail("guest: frame %u differs (%d bytes, sent %u)", k, len,
				     frame_len(k));
			seen[k] = true;
			per_ring[r]++;
			got++;
		}
		if (!any)
			usleep(200);
	}
	if (got < NFRAMES)
		fail("guest: %u of %u frames from the wire arrived", got, NFRAMES);
	if (!per_ring[0] || !per_ring[1])
		fail("guest: the frames all came on one queue pair (%u / %u)", per_ring[0],
		     per_ring[1]);
	printf("%s: wire -> guest: %u frames of 60..1514 bytes, %u on pair 0 and %u on pair 1, "
	       "byte for byte\n", prog, got, per_ring[0], per_ring[1]);

	/* link down: consumed and dropped, never stalled; up: through again */
	sh("ip link set %s down", ifa);
	for (unsigned k = 0; k < 3 * TX_NUM; k++) {
		make_out(want, k % NFRAMES, mac_b, guest_mac);
		guest_send(&g, k % NFRAMES, want); /* fails if the TX ring stalls */
	}
	sh("ip link set %s up", ifa);
	usleep(300000);
	wire_count(ps, 100, buf, sizeof(buf)); /* whatever was queued */
	for (unsigned k = 0; k < 16; k++) {
		make_out(want, 2 * k, mac_b, guest_mac);
		guest_send(&g, 2 * k, want); /* pair 0 */
	}
	n = wire_count(ps, 1500, buf, sizeof(buf));
	if (n < 16)
		fail("link up again: %u of 16 frames reached the wire", n);
	printf("%s: link down: %u frames consumed, none stalled; up again: 16 of 16 on the "
	       "wire\n", prog, 3 * TX_NUM);
	guest_down(&g);

	/* a frame bigger than the guest's buffers, then a small one */
	guest_up(&g, sock_path, packed, true, false, 1024, true);
	make_in(want, 63, NULL, mac_b); /* 1514 bytes */
	wire_send(ps, want, frame_len(63));
	make_in(want, 5, NULL, mac_b);
	wire_send(ps, want, frame_len(5));
	end = now_ns() + 2000000000ull;
	for (got = 0; !got && now_ns() < end;) {
		for (unsigned r = 0; r < 4; r += 2) {
			int len = guest_recv(&g, r, buf, sizeof(buf));

			if (len < 0 || len < 43 || buf[23] != 17)
				continue;
			if (buf[42] != 5 || (unsigned)len != frame_len(5) ||
			    memcmp(buf, want, frame_len(5)))
				fail("small buffers: got frame %u (%d bytes): only frame 5 fits",
				     buf[42], len);
			got = 1;
		}
		usleep(200);
	}
	if (!got)
		fail("small buffers: the frame that fits did not arrive after the one that did not");
	printf("%s: a 1514-byte frame for 1 KiB buffers dropped, the next one delivered\n", prog);

	/* the interface goes away under the daemon */
	sh("ip link del %s", ifa);
	for (unsigned k = 0; k < 2 * TX_NUM; k++) {
		make_out(want, k % NFRAMES, mac_b, guest_mac);
		guest_send(&g, k % NFRAMES, want);
	}
	if (waitpid(daemon_pid, &st, WNOHANG) != 0)
		fail("the daemon died when its interface was deleted");
	printf("%s: interface deleted: %u frames consumed, the daemon lives on\n", prog,
	       2 * TX_NUM);
	guest_down(&g);
	close(ps);
	st = stop_daemon();
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		fail("the daemon's exit status is %#x", st);
	cleanup();
	printf("%s: PASS (%s ring, %s mode)\n", prog, packed ? "packed" : "split", engine_mode);
	return 0;
}
