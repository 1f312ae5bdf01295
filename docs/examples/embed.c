/* SPDX-License-Identifier: MIT */
/*
 * The VMM author's example (docs/vmm-guide.md): hand a virtio-net device's
 * two rings to any uvhost backend once the guest driver set DRIVER_OK.
 * Build: cc embed.c $(pkg-config --cflags --libs uvhost)
 * Run:   ./a.out soft:net | kern:/dev/vhost-net | vdpa:/dev/vhost-vdpa-0 | user:/run/net.sock
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>
#include <uvhost/vhost.h>

#define RAM (64u << 20)
#define QSZ 256u

int main(int argc, char **argv)
{
	struct uvh_vhost *b;
	uint64_t features;
	int ram = memfd_create("guest-ram", MFD_CLOEXEC), err, ret = 1;

	if (argc < 2 || ram < 0 || ftruncate(ram, RAM))
		return 2;
	struct uvh_vhost_mem_region region = {
		.gpa = 0, .size = RAM, .fd = ram, .fd_offset = 0,
		.hva = mmap(NULL, RAM, PROT_READ | PROT_WRITE, MAP_SHARED, ram, 0),
	};
	if (region.hva == MAP_FAILED || (err = uvh_vhost_open(argv[1], NULL, &b)))
		return 2;
	/* the life cycle: owner, features (what the guest acked), memory, rings */
	if ((err = uvh_vhost_call(b, set_owner)) ||
	    (err = uvh_vhost_call(b, get_features, &features)) ||
	    (err = uvh_vhost_call(b, set_features, features & (1ull << 32 | 1ull << 28))) ||
	    (err = uvh_vhost_call(b, set_mem_table, &region, 1)))
		goto out;
	for (uint32_t q = 0; q < 2; q++) {	/* RX ring 0, TX ring 1 (split, 256) */
		uint64_t base = 0x100000 + q * 0x4000;	/* where the guest put them */
		struct uvh_vhost_vring_addr addr = { .index = q, .desc_gpa = base,
			.avail_gpa = base + 0x1000, .used_gpa = base + 0x2000 };
		int kick = eventfd(0, EFD_CLOEXEC), call = eventfd(0, EFD_CLOEXEC);

		if ((err = uvh_vhost_call(b, set_vring_num, q, QSZ)) ||
		    (err = uvh_vhost_call(b, set_vring_addr, &addr)) ||
		    (err = uvh_vhost_call(b, set_vring_base, q, 0)) ||
		    (err = uvh_vhost_call(b, set_vring_call, q, call)) ||
		    (err = uvh_vhost_call(b, set_vring_kick, q, kick)))
			goto out;
		/* the backend kept dups: these stay the VMM's (its ioeventfd/irqfd) */
		close(kick);
		close(call);
		err = uvh_vhost_call(b, set_vring_enable, q, true);
		if (err && err != -EOPNOTSUPP)	/* kern has no enable: rings run once kicked */
			goto out;
	}
	printf("%s: 2 rings running (device offered 0x%llx)\n", argv[1], (unsigned long long)features);
	ret = 0;
out:
	if (ret)
		fprintf(stderr, "%s: %s\n", argv[1], strerror(-err));
	uvh_vhost_close(b);
	return ret;
}
