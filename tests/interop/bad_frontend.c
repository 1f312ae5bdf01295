/* SPDX-License-Identifier: MIT */
/*
 * interop-bad-frontend: a front-end that asks a back-end for things it
 * must refuse, to check that uvhost-net validates what arrives: vring
 * addresses outside the memory table or misaligned, a ring started
 * without addresses, a region larger than its file (a SIGBUS waiting to
 * happen), overlapping regions, bad ring sizes. Each must come back as a
 * NACK (REPLY_ACK) with the connection still usable (bad vring addresses
 * at SET_VRING_ADDR or at the ring's start, SET_VRING_KICK: the spec lets
 * a back-end check them at either), and a correct set-up must work
 * afterwards on the same connection.
 *
 * usage: interop-bad-frontend PATH    exit 0 when every check passed
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util.h"
#include "frontend.h"
#include "message.h"

#define REGION_SIZE	(1u << 20)

static int failed;

static void check(bool ok, const char *what, int r)
{
	printf("bad-frontend: %s: %s (%s)\n", ok ? "PASS" : "FAIL", what,
	       r ? strerror(-r) : "accepted");
	if (!ok)
		failed = 1;
}

/* The back-end must say no (a NACK is -EIO) and stay connected. */
static void expect_nack(int r, const char *what)
{
	check(r == -EIO, what, r);
}

static void expect_ok(int r, const char *what)
{
	check(r == 0, what, r);
}

/* Bad vring addresses: refused when sent, or when the ring would start. */
static void expect_addr_refused(struct uvh_frontend *fe, const struct uvh_vring_addr *addr,
				int kick, const char *what)
{
	int r = uvh_frontend_set_vring_addr(fe, addr);

	if (r == 0)
		r = uvh_frontend_set_vring_kick(fe, addr->index, kick);
	expect_nack(r, what);
}

int main(int argc, char **argv)
{
	struct uvh_connect_opts copts = { .timeout_ms = 5000 };
	struct uvh_frontend *fe = NULL;
	struct uvh_mem_region reg, big;
	struct uvh_vring_addr addr;
	uint64_t feat, pf, base;
	int memfd = -1, kick = -1, call = -1, r;
	uint32_t vbase;
	uint8_t *mem;

	if (argc != 2) {
		fprintf(stderr, "usage: interop-bad-frontend PATH\n");
		return 2;
	}
	r = uvh_frontend_connect(argv[1], &copts, &fe);
	if (r < 0) {
		printf("bad-frontend: FAIL: connect: %s\n", strerror(-r));
		return 1;
	}
	r = uvh_frontend_negotiate(fe, UVH_BIT(UVH_VIRTIO_F_VERSION_1) | UVH_BIT(UVH_F_PROTOCOL_FEATURES),
				   UVH_BIT(UVH_PROTOCOL_F_REPLY_ACK), &feat, &pf);
	expect_ok(r, "negotiate VERSION_1 and REPLY_ACK");
	if (r < 0 || !(pf & UVH_BIT(UVH_PROTOCOL_F_REPLY_ACK))) {
		printf("bad-frontend: FAIL: REPLY_ACK is needed to see refusals\n");
		uvh_frontend_free(fe);
		return 1;
	}

	memfd = memfd_create("bad-frontend", MFD_CLOEXEC);
	kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	call = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (memfd < 0 || kick < 0 || call < 0 || ftruncate(memfd, REGION_SIZE) < 0) {
		printf("bad-frontend: FAIL: memfd/eventfd: %s\n", strerror(errno));
		return 1;
	}
	mem = mmap(NULL, REGION_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (mem == MAP_FAILED) {
		printf("bad-frontend: FAIL: mmap: %s\n", strerror(errno));
		return 1;
	}
	base = (uint64_t)(uintptr_t)mem;
	reg = (struct uvh_mem_region){ .guest_phys_addr = 0, .memory_size = REGION_SIZE,
				       .userspace_addr = base };

	/* A region claiming more than the file holds. */
	big = reg;
	big.memory_size = 2 * REGION_SIZE;
	expect_nack(uvh_frontend_set_mem_table(fe, &big, &memfd, 1),
		    "region larger than its memfd refused");
	big = reg;
	big.mmap_offset = REGION_SIZE / 2;
	expect_nack(uvh_frontend_set_mem_table(fe, &big, &memfd, 1),
		    "region past the end of its memfd (mmap_offset) refused");
	{
		struct uvh_mem_region two[2] = { reg, reg };
		int fds[2] = { memfd, memfd };

		two[1].guest_phys_addr = REGION_SIZE / 2;
		expect_nack(uvh_frontend_set_mem_table(fe, two, fds, 2),
			    "overlapping regions refused");
	}
	big = reg;
	big.memory_size = 0;
	expect_nack(uvh_frontend_set_mem_table(fe, &big, &memfd, 1),
		    "empty region refused");

	/* Rings before any memory: a kick without addresses. */
	expect_ok(uvh_frontend_set_vring_num(fe, 0, 256), "SET_VRING_NUM 256");
	expect_nack(uvh_frontend_set_vring_kick(fe, 0, kick),
		    "vring started without SET_VRING_ADDR refused");
	expect_nack(uvh_frontend_set_vring_num(fe, 0, 100),
		    "split ring size 100 (not a power of 2) refused");
	expect_nack(uvh_frontend_set_vring_num(fe, 0, 65536),
		    "ring size 65536 refused");
	expect_nack(uvh_frontend_set_vring_base(fe, 0, 0x10000),
		    "split ring base with reserved bits refused");

	expect_ok(uvh_frontend_set_mem_table(fe, &reg, &memfd, 1), "a good memory table");
	expect_ok(uvh_frontend_set_vring_num(fe, 0, 256), "SET_VRING_NUM 256");
	addr = (struct uvh_vring_addr){ .index = 0, .desc_user_addr = base,
					.avail_user_addr = base + 4096,
					.used_user_addr = base + 8192 };

	addr.desc_user_addr = base + REGION_SIZE;
	expect_addr_refused(fe, &addr, kick, "descriptor table outside guest memory refused");
	addr.desc_user_addr = base + REGION_SIZE - 16;
	expect_addr_refused(fe, &addr, kick,
			    "descriptor table crossing the end of guest memory refused");
	addr.desc_user_addr = base;
	addr.used_user_addr = base - 4096;
	expect_addr_refused(fe, &addr, kick, "used ring below guest memory refused");
	addr.used_user_addr = base + 8192 + 2;
	expect_addr_refused(fe, &addr, kick, "misaligned used ring refused");
	addr.used_user_addr = base + 8192;
	addr.flags = 0x2;
	expect_nack(uvh_frontend_set_vring_addr(fe, &addr), "unknown vring address flag refused");
	addr.flags = 0;

	/* And now the right way, on the same connection. */
	expect_ok(uvh_frontend_set_vring_addr(fe, &addr), "good vring addresses");
	expect_ok(uvh_frontend_set_vring_base(fe, 0, 0), "SET_VRING_BASE 0");
	expect_ok(uvh_frontend_set_vring_call(fe, 0, call), "SET_VRING_CALL");
	expect_ok(uvh_frontend_set_vring_kick(fe, 0, kick), "vring 0 started");
	r = uvh_frontend_get_vring_base(fe, 0, &vbase);
	check(r == 0 && vbase == 0, "GET_VRING_BASE answers 0", r);

	uvh_frontend_free(fe);
	munmap(mem, REGION_SIZE);
	close(memfd);
	close(kick);
	close(call);
	printf("bad-frontend: %s\n", failed ? "FAILED" : "all checks passed");
	return failed;
}
