/* SPDX-License-Identifier: MIT */
/*
 * uvhost: where vhost-user connections come from (rust-vmm's Listener and
 * BackendListener): listen on a socket path and accept, or connect to one
 * as a client with a reconnect back-off. Both roles (front-end and
 * back-end) use it: either side may be the server.
 */
#ifndef UVHOST_LISTENER_H
#define UVHOST_LISTENER_H

#include <stdbool.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Options of a listening socket. Zeroed = the defaults. */
struct uvh_listener_opts {
	mode_t mode;		/**< socket file mode; 0 = 0600 */
	uid_t owner;		/**< chown to this uid when set_owner */
	gid_t group;		/**< and this gid */
	int set_owner;		/**< apply owner/group */
	int backlog;		/**< listen() backlog; 0 = 16 */
	/**
	 * Allow-list of peer uids (SO_PEERCRED at accept). NULL or 0 entries =
	 * anyone who can open the socket file. A peer whose uid is not listed
	 * is accepted, logged with its uid and pid, and closed at once; the
	 * listener keeps listening. The array is copied (at most
	 * UVH_LISTENER_MAX_UIDS entries, else -EINVAL).
	 */
	const uid_t *allow_uids;
	unsigned int n_allow_uids;
};

/** Most uids an allow-list may hold. */
#define UVH_LISTENER_MAX_UIDS	64u

struct uvh_listener;

/**
 * Listen on @path. A stale socket file (nothing accepting on it) is
 * replaced; a live one gives -EADDRINUSE; a path that is not a socket
 * gives -EEXIST. The socket is non-blocking and close-on-exec.
 * Returns 0 and *out, or a negative errno.
 */
int uvh_listener_open(const char *path, const struct uvh_listener_opts *opts,
		      struct uvh_listener **out);
/** Stop listening, unlink the path, free. */
void uvh_listener_close(struct uvh_listener *l);
/** The listening fd, for a poller. */
int uvh_listener_fd(const struct uvh_listener *l);
/** The path listened on. */
const char *uvh_listener_path(const struct uvh_listener *l);
/**
 * Accept one connection, waiting up to @timeout_ms (-1 forever, 0 none).
 * Returns the connected fd (blocking, close-on-exec) or -ETIMEDOUT /
 * another negative errno.
 */
int uvh_listener_accept(struct uvh_listener *l, int timeout_ms);

/**
 * Refuse every connection waiting in the backlog: accept each, log
 * "refused ... (pid P, uid U): @reason" and close it, without waiting.
 * For a server that already serves its one peer (a vhost-user back-end
 * serves one front-end per socket): the newcomer sees the connection
 * closed at once instead of hanging in the backlog. Returns how many
 * were refused, or a negative errno.
 */
int uvh_listener_refuse_pending(struct uvh_listener *l, const char *reason);

/** Refuse @fd, a connection accepted from @l: log it as refuse_pending
 *  does, close it, count it. */
void uvh_listener_refuse(struct uvh_listener *l, int fd, const char *reason);

/** Connections refused so far (allow-list and refuse_pending). */
unsigned long uvh_listener_refused(const struct uvh_listener *l);

/**
 * Credentials of the peer of connected AF_UNIX socket @fd (SO_PEERCRED:
 * as of its connect() or listen()). Any out pointer may be NULL.
 * 0 or a negative errno.
 */
int uvh_peer_cred(int fd, pid_t *pid, uid_t *uid, gid_t *gid);

/**
 * Is @uid in @uids (@n entries)? An empty list (n 0) allows everyone.
 */
bool uvh_uid_allowed(uid_t uid, const uid_t *uids, unsigned int n);

/** Client reconnect policy. Zeroed = the defaults. */
struct uvh_connect_opts {
	int timeout_ms;		/**< give up after this long; 0 = one try, -1 = never */
	int initial_delay_ms;	/**< first back-off; 0 = 10 ms */
	int max_delay_ms;	/**< back-off cap; 0 = 1000 ms */
	volatile int *stop;	/**< when set and non-zero, give up (-ECANCELED); read
				 *   with atomic loads: set it with an atomic store
				 *   (__atomic_store_n, or from a signal handler) */
};

/**
 * Connect to @path as a client, retrying with exponential back-off while
 * the server is not there (ENOENT, ECONNREFUSED, EAGAIN) until @opts'
 * timeout. Returns the connected fd (blocking, close-on-exec) or a negative
 * errno: -ETIMEDOUT when the timeout ran out, the connect() error itself
 * for a single try (timeout_ms 0) or an error not worth retrying,
 * -ECANCELED when *stop was set.
 */
int uvh_connect(const char *path, const struct uvh_connect_opts *opts);

#ifdef __cplusplus
}
#endif

#endif
