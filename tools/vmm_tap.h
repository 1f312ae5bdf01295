/* SPDX-License-Identifier: MIT */
/*
 * uvhost-vmm's kern side: the tap vhost-net sends its frames into, and the
 * echo that loops them back (the far end of the tap's wire).
 */
#ifndef UVHOST_VMM_TAP_H
#define UVHOST_VMM_TAP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/**
 * Create tap @name (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR) with a virtio-net
 * header of @hdr_len bytes (TUNSETVNETHDRSZ) and bring it up. 0 with *fd
 * set (the caller closes it; the tap goes away with it), or -errno.
 */
int vmm_tap_open(const char *name, int hdr_len, int *fd);

/** The echo thread of one tap. Zero it, then set sock and stop_fd to -1. */
struct vmm_echo {
	pthread_t thread;
	bool running;
	int sock;		/**< AF_PACKET, bound to the tap, one ethertype */
	int stop_fd;		/**< eventfd: written to stop the thread */
	atomic_ulong looped;	/**< frames written back */
	atomic_int error;	/**< last errno of the thread, 0 if none */
};

/**
 * Start looping every frame of @ethertype that arrives on interface
 * @ifname back out of it (frames we wrote are not looped again).
 * 0, or -errno (then vmm_echo_stop() still cleans up).
 */
int vmm_echo_start(struct vmm_echo *e, const char *ifname, uint16_t ethertype);
/** Stop the thread (if started) and close the fds. */
void vmm_echo_stop(struct vmm_echo *e);

#endif
