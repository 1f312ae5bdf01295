/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the front-end's session journal (internal to proto/frontend*.c).
 *
 * What a front-end told the back-end that a restarted back-end must hear
 * again: features, protocol features, the back-end channel, the memory
 * table, the inflight area, every ring's size, addresses, base, fds and
 * enable state, the device status. Each fd sent is kept as a duplicate, so
 * the very same memory, inflight area and eventfds go to the new process.
 * frontend.c records into it after each request the back-end accepted;
 * uvh_frontend_reconnect() replays it (frontend_session.c).
 *
 * Not thread-safe by itself: recording happens from the front-end's calls,
 * which the caller makes from one control thread (frontend.h).
 */
#ifndef UVHOST_FRONTEND_SESSION_H
#define UVHOST_FRONTEND_SESSION_H

#include <stdbool.h>
#include <stdint.h>

#include "frontend.h"
#include "message.h"

struct fe_session;

/** A fresh journal, or NULL (ENOMEM). */
struct fe_session *fe_session_new(void);
/** Free it, closing every duplicate fd. NULL is fine. */
void fe_session_free(struct fe_session *s);
/** While replaying, the calls must not record (they resend what is there). */
bool fe_session_replaying(const struct fe_session *s);

/* Recorders: no-ops on a NULL journal or while replaying. A failure to keep
 * a record (no memory, no fd) marks the journal unusable, logged once. */
void fe_session_features(struct fe_session *s, uint64_t features);
void fe_session_protocol_features(struct fe_session *s, uint64_t pf);
void fe_session_backend_req(struct fe_session *s, const struct uvh_frontend_req_ops *ops,
			    void *opaque);
void fe_session_mem_table(struct fe_session *s, const struct uvh_mem_region *regions,
			  const int *fds, unsigned int n);
void fe_session_add_mem(struct fe_session *s, const struct uvh_mem_region *region, int fd);
void fe_session_rem_mem(struct fe_session *s, const struct uvh_mem_region *region);
void fe_session_inflight(struct fe_session *s, const struct uvh_inflight *in, int fd);
void fe_session_vring_state(struct fe_session *s, uint32_t request, uint32_t index,
			    uint32_t num);
void fe_session_vring_addr(struct fe_session *s, const struct uvh_vring_addr *addr);
void fe_session_vring_fd(struct fe_session *s, uint32_t request, uint32_t index, int fd);
void fe_session_status(struct fe_session *s, uint8_t status);
/** GET_VRING_BASE stopped ring @index at @base: a replay sets it up again
 *  at that base but does not start it (no kick) until the caller kicks it
 *  again with SET_VRING_KICK. */
void fe_session_vring_stopped(struct fe_session *s, uint32_t index, uint32_t base);
/** RESET_OWNER / RESET_DEVICE: the back-end stopped the rings and forgot
 *  the status and the inflight area; so does the journal. The features,
 *  memory table and back-end channel stay: a replay must still set up a
 *  session the VMM can go on with. */
void fe_session_reset(struct fe_session *s);

/**
 * Replay the journal on @fe, freshly connected. 0, -ENOTRECOVERABLE when a
 * record was lost, -EPROTO when the new back-end no longer offers what was
 * in force, or the failing request's error.
 */
int fe_session_replay(struct fe_session *s, struct uvh_frontend *fe,
		      const struct uvh_frontend_reconnect_opts *opts);

#endif
