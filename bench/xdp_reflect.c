/* SPDX-License-Identifier: MIT */
/*
 * uvhost-xdp-reflect: the far end of a benchmark's wire. Attaches to an
 * interface an XDP program that sends every frame straight back out
 * (XDP_TX, unchanged), runs until SIGTERM or SIGINT, then detaches it.
 *
 * On one end of a veth pair it turns the pair into a loop with no thread of
 * its own: a frame sent into the other end comes back to it, reflected in
 * the kernel's softirq of whoever sent it. uvhost-bench's loop direction
 * then checks every frame whole across guest → uplink → wire → uplink →
 * guest, the same for every uplink compared (bench/compare-uplink).
 *
 * With --pass it attaches XDP_PASS instead: frames go on to the stack as
 * usual, but a veth then has NAPI, without which it drops the frames its
 * peer sends back with XDP_TX (compare-uplink's tap arm: the uplink end of
 * the pair is in a bridge, with no XDP program of its own).
 *
 * The program is two instructions, assembled here: no BPF compiler needed.
 */
#include <errno.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

int main(int argc, char **argv)
{
	bool pass = argc == 3 && !strcmp(argv[1], "--pass");
	const char *iface = argv[argc - 1];
	/* r0 = XDP_TX (or XDP_PASS); exit */
	const struct bpf_insn prog[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0,
		  .imm = pass ? XDP_PASS : XDP_TX },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	struct sigaction sa = { .sa_handler = on_signal };
	unsigned int ifindex;
	int fd, err;

	if ((argc != 2 && !pass) || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		bool help = argc == 2;

		fprintf(help ? stdout : stderr,
			"Usage: uvhost-xdp-reflect [--pass] IFACE\n"
			"Send every frame IFACE receives straight back out (XDP_TX, native\n"
			"mode) until SIGTERM or SIGINT; then detach. --pass: XDP_PASS instead\n"
			"(gives a veth the NAPI it needs to take its peer's XDP_TX frames).\n");
		return help ? 0 : 2;
	}
	ifindex = if_nametoindex(iface);
	if (!ifindex) {
		fprintf(stderr, "uvhost-xdp-reflect: no interface %s\n", iface);
		return 1;
	}
	fd = bpf_prog_load(BPF_PROG_TYPE_XDP, "uvh_reflect", "GPL", prog, 2, NULL);
	if (fd < 0) {
		fprintf(stderr, "uvhost-xdp-reflect: loading the program: %s\n", strerror(-fd));
		return 1;
	}
	err = bpf_xdp_attach((int)ifindex, fd, XDP_FLAGS_DRV_MODE, NULL);
	if (err) {
		fprintf(stderr, "uvhost-xdp-reflect: attaching to %s (native): %s\n", iface,
			strerror(-err));
		return 1;
	}
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	printf("uvhost-xdp-reflect: %s %s every frame\n", iface, pass ? "passes" : "reflects");
	fflush(stdout);
	while (!stop)
		pause();
	bpf_xdp_detach((int)ifindex, XDP_FLAGS_DRV_MODE, NULL);
	close(fd);
	return 0;
}
