/* SPDX-License-Identifier: MIT */
/*
 * uvhost-demo's parts: the back-end (demo_backend.c), the front-end
 * (demo_frontend.c) and what both use (uvhost-demo.c: output, names,
 * signals, main). Private to the tool.
 */
#ifndef UVHOST_DEMO_H
#define UVHOST_DEMO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- virtio-net bits the demo speaks of ---------------------------------- */

#define VNET_F_MTU		3
#define VNET_F_MAC		5
#define VNET_F_MRG_RXBUF	15
#define VNET_F_STATUS		16
#define VNET_F_CTRL_VQ		17
#define VNET_F_MQ		22
#define VNET_S_LINK_UP		1

/* Device status bits (virtio 1.x, 2.1). */
#define VSTAT_ACKNOWLEDGE	1
#define VSTAT_DRIVER		2
#define VSTAT_DRIVER_OK		4
#define VSTAT_FEATURES_OK	8
#define VSTAT_NEEDS_RESET	64
#define VSTAT_FAILED		128

#define BIT(n)			(1ull << (n))

/* The head of struct virtio_net_config (virtio 1.x, 5.1.4), little endian. */
struct demo_net_config {
	uint8_t mac[6];
	uint16_t status;
	uint16_t max_virtqueue_pairs;
	uint16_t mtu;
	uint32_t speed;
	uint8_t duplex;
} __attribute__((packed));
_Static_assert(sizeof(struct demo_net_config) == 17, "virtio_net_config head");

#define DEMO_MAX_PAIRS		8u
#define DEMO_MAX_VRINGS		(2 * DEMO_MAX_PAIRS + 1)	/* + control queue */
#define DEMO_MTU		1500
#define DEMO_RING_NUM		256u
#define DEMO_REGION_SIZE	(1u << 20)
#define DEMO_REGION1_OFFSET	(64u << 10)	/* exercises mmap_offset */

/* ---- shared helpers (uvhost-demo.c) ---------------------------------------- */

/** "backend", "frontend" or "uvhost-demo": the prefix of every line. */
extern const char *role;

/** One line on stdout, prefixed with the role. */
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/** The name of virtio (net) feature bit @bit, or NULL. */
const char *feature_name(unsigned int bit);
/** "0x...: NAME NAME bitN" into @buf. */
const char *bits_str(char *buf, size_t len, uint64_t bits,
		     const char *(*name)(unsigned int));
/** A device status byte with its bit names, into @buf. */
const char *status_str(char *buf, size_t len, uint8_t s);
/** A signalfd for SIGINT and SIGTERM (both blocked), or -errno. */
int signal_fd_open(void);
/** The signal read from @sfd, or 0. */
int signal_fd_read(int sfd);
/** Close *@fd if open and set it to -1. */
void close_fd(int *fd);

/* ---- the two ends ------------------------------------------------------- */

/** Back-end: serve connections on @path (see usage). Exit status. */
int run_serve(const char *path, uint32_t pairs, bool ctrl_vq, bool once);

struct fe_opts {
	uint32_t pairs;
	int timeout_ms;
	int hold_s;
};

/** Front-end: connect to @path, set the device up, tear down. Exit status. */
int run_connect(const char *path, const struct fe_opts *o);

#endif
