/* SPDX-License-Identifier: MIT */
/*
 * What the wire tests share (wire.c): a front-end session from the specifications alone,
 * with two queue pairs; test frames; the far side's AF_PACKET socket; the daemon.
 */
#ifndef CONFORM_WIRE_H
#define CONFORM_WIRE_H

#include <sys/types.h>

#include "conform.h"

#define NFRAMES 64
#define RX_NUM 256
#define RX_BUF 2048
#define TX_NUM 64
#define TX_BUF (NET_HDR_LEN + 9216) /* a jumbo frame */
#define ETHERTYPE_TEST 0x88b5 /* local experimental */

/* the test program's: its name, for messages */
extern const char *prog;
/* what fail() cleans up: the daemon, the interface @ifa (deleted: a veth takes its
 * peer @ifb along), the socket directory */
extern pid_t daemon_pid;
extern char dir[64], sock_path[96], ifa[16], ifb[16];

void cleanup(void);
/* SIGTERM the daemon; its wait status (0 unless it failed or a sanitizer spoke) */
int stop_daemon(void);
void start_daemon(char *const argv[]);
/* system(3) or fail */
void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

struct guest {
	struct gmem mem;
	struct vu vu;
	struct vq q[4]; /* RX0 TX0 RX1 TX1 */
	uint64_t rng;
	uint32_t rx_buf;
	bool mrg;
};
/* A session on @path: VERSION_1, MQ (+ PACKED, EVENT_IDX, MRG_RXBUF as asked), four
 * rings, RX buffers of @rx_buf bytes posted if @post; returns once the back-end has
 * started the rings. */
void guest_up(struct guest *g, const char *path, bool packed, bool event_idx, bool mrg,
	      uint32_t rx_buf, bool post);
void guest_down(struct guest *g);
/* post every free RX buffer of ring @r, kick */
void rx_post(struct guest *g, unsigned r);
/* frame_len(k) bytes of @frame on TX ring 1 + 2 * (k & 1); fails if no buffer comes back */
void guest_send(struct guest *g, unsigned k, const uint8_t *frame);
/* @len bytes of @frame on queue pair @pair's TX ring */
void guest_send_len(struct guest *g, unsigned pair, const uint8_t *frame, unsigned len);
/* a frame from RX ring @r (merged buffers joined), its length; -1 when none */
int guest_recv(struct guest *g, unsigned r, uint8_t *out, size_t cap);
/* frames received on either RX ring within @ms */
unsigned guest_drain(struct guest *g, int ms, uint8_t *buf, size_t cap);

/* frame k's size: 60 .. 1514 over NFRAMES frames */
unsigned frame_len(unsigned k);
void mac_of(const char *ifname, uint8_t mac[6]);
/* the test ethertype, k at byte 14, a pattern; frame_len(k) or @len bytes */
void make_out(uint8_t *f, unsigned k, const uint8_t dst[6], const uint8_t src[6]);
void make_out_len(uint8_t *f, unsigned len, unsigned k, const uint8_t dst[6],
		  const uint8_t src[6]);
/* UDP/IPv4 to @dst (NULL: broadcast), k at byte 42, source port 1000 + k */
void make_in(uint8_t *f, unsigned k, const uint8_t dst[6], const uint8_t src[6]);

int packet_socket(const char *ifname);
void wire_send(int ps, const uint8_t *f, unsigned len);
/* the next frame of the test ethertype within @ms: its length, -1 if none */
int wire_recv(int ps, uint8_t *buf, size_t cap, int ms);
/* frames 0..@n-1 of the test ethertype, each once and equal to @make's (frame_len(k)
 * bytes), within 5 s; fails (naming @what) otherwise */
void wire_expect(int ps, unsigned n, void (*make)(uint8_t *f, unsigned k), const char *what);
/* frames of the test ethertype received within @ms */
unsigned wire_count(int ps, int ms, uint8_t *buf, size_t cap);

#endif
