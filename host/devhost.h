/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the vhost-user device host (device-agnostic).
 *
 * A struct uvh_devhost serves one vhost-user connection at a time for one
 * device (a virtio-net port, a test device...). It implements struct
 * uvh_backend_handler_ops (proto/backend_req.h) and maps the protocol onto
 * uvhost's engines: guest memory (engine/memory.h), device-side rings
 * (engine/virtq.h) attached to engines (engine/engine.h), dirty log,
 * inflight area, IOTLB cache, back-end channel. The device itself only
 * sees the small struct uvh_devhost_device_ops below.
 *
 * Ring life cycle, as the device sees it:
 *   SET_VRING_NUM/ADDR/BASE   recorded (ADDR's front-end virtual
 *                             addresses become guest-physical ones when
 *                             the ring starts)
 *   SET_VRING_KICK            the ring starts: uvh_vq_init on the memory
 *                             in force, ops->queue_start on the serving
 *                             engine's thread, then the queue is attached
 *                             to that engine (kick fd "no fd" = swept only)
 *                             and processed at once (a front-end SHOULD
 *                             kick after a start; we do not count on it).
 *   SET_VRING_ENABLE          q->enabled flips on the engine's thread
 *                             (ops->queue_enable told). A started but
 *                             disabled ring is attached but not processed:
 *                             its chains wait, untouched, until it is
 *                             enabled (the spec's "no side effects"; not
 *                             its TX-dropping example, which loses the
 *                             frames a driver publishes right after the
 *                             enable was sent: see devhost_rings.c).
 *   GET_VRING_BASE            the queue is detached (the engine is waited
 *                             for), ops->queue_stop runs on its thread, the
 *                             ring's base (uvh_vq_base) is returned.
 *   disconnect/RESET_DEVICE   every started ring is stopped as above, then
 *                             ops->reset(); the device host is ready for the next
 *                             connection.
 *
 * Memory: SET_MEM_TABLE / ADD_MEM_REG / REM_MEM_REG build a new table
 * (uvh_memory_copy + edit), every engine serving a started ring of this
 * device switches that ring to it between two bursts (uvh_engine_call),
 * and only then is the old table released (its mappings unmapped): no
 * data path ever reads an unmapped region. GET_MAX_MEM_SLOTS: 509.
 *
 * Threads: the device ops marked "control" run on the thread that handles
 * the connection's requests (uvh_devhost_handle()'s caller, or the watching
 * engine's thread, see uvh_devhost_watch()); those marked "engine" run on the
 * thread of the engine serving the queue (q->engine), so a device's
 * per-engine state needs no lock as long as the queues that share it are
 * served by the same engine (the default policy keeps both queues of a
 * pair on one engine).
 *
 * IOMMU (VIRTIO_F_IOMMU_PLATFORM, offered only if the device offers it):
 * IOTLB_MSG updates and invalidates go into one cache per connection;
 * the rings (ring areas and descriptors) translate IOVAs through it. A
 * miss is sent as BACKEND_IOTLB_MSG type MISS on the back-end channel
 * from the serving engine's thread (the chain stays available, the ring
 * idles), and an update kicks every running ring's engine (an eventfd
 * write on its kick fd) so it retries; a permission failure breaks the
 * ring and is sent as ACCESS_FAIL. Caveats: the miss is sent and its
 * REPLY_ACK waited for on the engine's thread, so with REPLY_ACK the
 * engine serving an IOMMU ring must not also be the one watching the
 * connection (the front-end answers the miss only after we ack its
 * update: the two would wait for each other until the channel's
 * timeout); ring areas are translated once at start, so an invalidate
 * of a ring area's IOVA takes effect at the next start. A new
 * SET_BACKEND_REQ_FD replaces the channel between two bursts of every
 * running ring.
 *
 * Migration: with LOG_ALL acked and a log area (SET_LOG_BASE), every ring
 * logs what it writes (buffers, used ring, event areas); after each push
 * the SET_LOG_FD eventfd, if any, is written when the log changed. Device
 * state (DEVICE_STATE, when the device has save_state and load_state):
 * SET_DEVICE_STATE_FD with every ring stopped starts a transfer on a
 * thread of its own (SAVE writes the state into the pipe and closes it;
 * LOAD reads to EOF), CHECK_DEVICE_STATE waits for it (10 s at most) and
 * for a LOAD checks and applies the state, answering the verdict.
 *
 * Not done: postcopy, shared objects and crypto sessions are refused
 * (-ENOSYS).
 */
#ifndef UVHOST_DEVHOST_H
#define UVHOST_DEVHOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "backend_chan.h"
#include "engine.h"
#include "message.h"
#include "virtq.h"

#ifdef __cplusplus
extern "C" {
#endif

struct uvh_devhost;

/** Most rings one device may declare (vring indexes are 8-bit on the wire). */
#define UVH_DEVHOST_MAX_QUEUES	256u

/**
 * One ring of the device. The device host owns these (an array allocated by
 * uvh_devhost_new(), so a pointer to one stays valid for the device host's lifetime:
 * a device may keep pointers to them, e.g. to reach the RX ring of a pair
 * from the TX ring's process()).
 *
 * q->eq is the struct uvh_engine_queue attached to the engine; its opaque
 * field points back to this struct (uvh_devhost_queue_of()).
 *
 * Ownership: "control" fields belong to the thread handling the
 * connection's requests. The ring's running state (eq, vq, enabled,
 * running, priv) belongs to the serving engine from the start of the ring
 * to its stop: the control thread hands it over and takes it back through
 * uvh_engine_call(), which orders everything before it on one side with
 * everything after it on the other; while the ring is stopped it is the
 * control thread's again.
 */
struct uvh_devhost_queue {
	/** The engine's view: vq = &this->vq, process = ops->process (the
	 *  device may change process in queue_start), opaque = this. */
	struct uvh_engine_queue eq;
	/** The device-side ring; valid between queue_start and queue_stop
	 *  (set up by the control thread before the hand-over). */
	struct uvh_vq vq;
	/** The device host this ring belongs to. */
	struct uvh_devhost *dh;
	/** The engine serving this ring (from the engine_for_queue policy),
	 *  fixed at uvh_devhost_new(). */
	struct uvh_engine *engine;
	/** Ring index (0 .. num_queues - 1). */
	uint32_t index;
	/** SET_VRING_ENABLE state; read it in process() (only changed on the
	 *  serving engine's thread while the ring runs; a disabled ring's
	 *  process() is not called, see SET_VRING_ENABLE above). */
	bool enabled;
	/** Between queue_start and queue_stop (written on the engine's thread
	 *  inside the hand-over; read by control ops; from other threads
	 *  through uvh_devhost_queue_running()). */
	bool running;
	/** The device's own per-ring pointer (set in queue_start; the device host
	 *  never touches it). */
	void *priv;

	/* -- internal: owned by the device host's control thread -- */
	uint32_t num;			/**< SET_VRING_NUM */
	uint32_t base;			/**< SET_VRING_BASE; where the ring stopped */
	bool have_addr;
	struct uvh_vring_addr addr;	/**< SET_VRING_ADDR as received */
	int kick_fd, call_fd, err_fd;	/**< owned fds, -1 when none (the engine
					 *   uses its copies in eq, swapped on its
					 *   thread; an old fd is closed after) */
	void *inflight;			/**< struct uvh_inflight_vq while running, or NULL */
	uint64_t starts;		/**< times this ring was started */
};

/** The ring that @eq is (from a process()/on_error callback). */
static inline struct uvh_devhost_queue *uvh_devhost_queue_of(struct uvh_engine_queue *eq)
{
	return (struct uvh_devhost_queue *)eq->opaque;
}

/**
 * What a device implements. @dev is opts->dev. Required: features,
 * num_queues, queue_start, process. Every other op may be NULL.
 */
struct uvh_devhost_device_ops {
	/**
	 * [control] Virtio feature bits the device offers, ring features
	 * included (VERSION_1, RING_EVENT_IDX, RING_INDIRECT_DESC,
	 * RING_PACKED, IN_ORDER: only those the device's process() copes
	 * with). The device host adds F_PROTOCOL_FEATURES and F_LOG_ALL.
	 */
	uint64_t (*features)(void *dev);
	/**
	 * [control] Device-specific protocol feature bits to offer on top of
	 * the ones the device host implements itself (LOG_SHMFD, REPLY_ACK,
	 * BACKEND_REQ, BACKEND_SEND_FD, INFLIGHT_SHMFD, RESET_DEVICE,
	 * CONFIGURE_MEM_SLOTS, STATUS; DEVICE_STATE when save_state and
	 * load_state are set; MQ when num_queues > 2). A net device adds MQ,
	 * RARP, NET_MTU here.
	 *
	 * CONFIG is offered only when it is returned here (and get_config is
	 * set; without it the bit is dropped): having get_config is not
	 * enough. Offer it when the device's front-ends read config space
	 * through GET_CONFIG (vhost-user-blk, a VMM reading a MAC): QEMU's
	 * vhost-user-net never does and logs "vhost-user backend supports
	 * VHOST_USER_PROTOCOL_F_CONFIG but QEMU does not" for a back-end that
	 * offers it, so the net device leaves it off unless asked
	 * (uvh_net_opts.offer_config).
	 */
	uint64_t (*protocol_features)(void *dev);
	/**
	 * [control] SET_FEATURES: the bits the front-end acked (already
	 * checked against what was offered). May come again while rings run
	 * (LOG_ALL toggled for migration). A negative errno refuses them.
	 */
	int (*set_features)(void *dev, uint64_t features);
	/** [control] The protocol features in force (offered & acked). */
	void (*set_protocol_features)(void *dev, uint64_t protocol_features);
	/**
	 * Number of rings the device has (1 .. UVH_DEVHOST_MAX_QUEUES), fixed for
	 * the device host's lifetime: read once by uvh_devhost_new(). A net device with N
	 * pairs and a control ring says 2N + 1.
	 */
	uint32_t (*num_queues)(void *dev);
	/**
	 * [control] GET_QUEUE_NUM's value. NULL = num_queues. (A net device
	 * answers its number of queue pairs, as QEMU and DPDK read it.)
	 */
	uint64_t (*queue_num_reply)(void *dev);
	/**
	 * Engine index (< @nengines) for ring @index. Called by uvh_devhost_new()
	 * once per ring. NULL = (index / 2) % nengines: both rings of a pair
	 * on one engine, pairs spread round-robin.
	 */
	uint32_t (*engine_for_queue)(void *dev, uint32_t index, uint32_t nengines);
	/**
	 * Is ring @index one the device only reads (a transmit ring)? Its
	 * buffers are then all taken as readable, whatever their WRITE flag
	 * (see uvh_vq_config.device_reads_only). NULL = no such ring.
	 */
	bool (*queue_device_reads_only)(void *dev, uint32_t index);
	/** [control] GET_CONFIG: @size bytes at @offset into @buf (bounds of
	 * the wire already checked: offset + size <= 256). Reached over a
	 * socket only when CONFIG was offered (protocol_features) and acked;
	 * an in-process session (uvh_devhost_connect_local) may call it
	 * anyway. NULL = CONFIG never offered. */
	int (*get_config)(void *dev, uint32_t offset, uint32_t size, uint8_t *buf);
	/** [control] SET_CONFIG. NULL = refused with -ENOSYS. */
	int (*set_config)(void *dev, uint32_t offset, uint32_t size, const uint8_t *buf);
	/**
	 * [engine] Ring @q is about to be attached to q->engine: q->vq is
	 * initialised (features, addresses, base, memory, inflight), q->enabled
	 * is the current enable state. Set q->priv, optionally q->eq.process.
	 * May allocate. A negative errno refuses the start (SET_VRING_KICK is
	 * NACKed, the ring stays stopped).
	 */
	int (*queue_start)(void *dev, struct uvh_devhost_queue *q);
	/**
	 * [engine] Ring @q was detached: its process() will not run again until
	 * the next queue_start. Forget it (q->vq stays readable for its base).
	 */
	void (*queue_stop)(void *dev, struct uvh_devhost_queue *q);
	/**
	 * [engine] The per-ring burst: the engine's uvh_engine_queue.process
	 * (see engine.h; return the work done, 0 = nothing). Reach the ring
	 * with uvh_devhost_queue_of(eq). Never blocks, never allocates.
	 */
	unsigned int (*process)(struct uvh_engine_queue *eq);
	/** [engine] SET_VRING_ENABLE changed q->enabled on a running ring. */
	void (*queue_enable)(void *dev, struct uvh_devhost_queue *q, bool enable);
	/** [engine] Ring @q was found broken (the err fd was already written). */
	void (*queue_error)(void *dev, struct uvh_devhost_queue *q, enum uvh_vq_error err);
	/**
	 * [control] Every ring is stopped and the session is over (disconnect,
	 * RESET_OWNER, RESET_DEVICE): go back to the state of a fresh device.
	 */
	void (*reset)(void *dev);
	/**
	 * [control] A request for the device itself, which the device host
	 * passes on as it came: SEND_RARP (payload: the MAC, 6 bytes),
	 * NET_SET_MTU (the u64). A front-end sends them only when the device
	 * offered their protocol feature (protocol_features). NULL, or
	 * -ENOSYS: refused.
	 */
	int (*device_request)(void *dev, uint32_t request, const void *payload, uint32_t size);
	/** [control] SET_STATUS seen (the device host stores it for GET_STATUS). */
	void (*set_status)(void *dev, uint8_t status);
	/**
	 * [control] DEVICE_STATE (offered when both are set): write the
	 * device's own state into @buf (@size bytes, 4096) and return its
	 * length, or a negative errno. Called with every ring stopped.
	 */
	int (*save_state)(void *dev, void *buf, size_t size);
	/**
	 * [control] Check @len bytes of a saved state completely and apply
	 * it, or refuse it (negative errno) leaving the device untouched.
	 * Called with every ring stopped, at CHECK_DEVICE_STATE.
	 */
	int (*load_state)(void *dev, const void *buf, size_t len);
};

/** uvh_devhost_new() options. */
struct uvh_devhost_opts {
	/** Log prefix (default "dh"); copied. */
	const char *name;
	/** The device. */
	const struct uvh_devhost_device_ops *ops;
	void *dev;
	/** Engines serving the rings (1 .. 64; the array is copied, the engines
	 *  must outlive the device host). They may be running or not. */
	struct uvh_engine *const *engines;
	unsigned int nengines;
	/** Refuse chains with a device-readable part after a writable one
	 *  (uvh_vq_config.strict_order). */
	bool strict_order;
};

/** A new dh, not connected. NULL with errno (EINVAL, ENOMEM). */
struct uvh_devhost *uvh_devhost_new(const struct uvh_devhost_opts *opts);
/** Disconnect (if connected) and free. NULL is a no-op. Not from a watching
 *  engine's callback. */
void uvh_devhost_free(struct uvh_devhost *v);

/**
 * Serve the connected socket @fd (ownership taken, closed on error).
 * 0, -EBUSY (a connection is being served; @fd closed), -ENOMEM.
 */
int uvh_devhost_connect(struct uvh_devhost *v, int fd);

/**
 * Control-thread style: wait up to @timeout_ms (-1 forever) for a request,
 * handle it and reply. Returns 1 when a request was handled, 0 on timeout,
 * -ENOTCONN when not connected, or another negative errno: the connection
 * is over (the peer went, or it broke the protocol) and the caller must
 * call uvh_devhost_disconnect(). A request whose first byte arrived is read
 * to its end (blocking).
 */
int uvh_devhost_handle(struct uvh_devhost *v, int timeout_ms);

/**
 * Engine style: let @e watch the connection's socket and handle every
 * request on its thread; when the connection ends the device host disconnects
 * itself there and then calls @on_disconnect(v, err, opaque) (may be NULL;
 * it may call uvh_devhost_connect() for the next connection, not
 * uvh_devhost_free()). Requests that must wait for an engine apply the change
 * directly when that engine is @e. @e must not also be an engine that can
 * wait for another engine watching a device host (two watching engines waiting
 * for each other would deadlock): use one engine for every ring and watch,
 * or a control engine that serves no ring. 0, -ENOTCONN, -EBUSY (already
 * watched) or uvh_engine_watch()'s error.
 */
int uvh_devhost_watch(struct uvh_devhost *v, struct uvh_engine *e,
		  void (*on_disconnect)(struct uvh_devhost *v, int err, void *opaque),
		  void *opaque);

/**
 * End the connection: stop every ring (waiting for their engines), call
 * ops->reset, release memory, log, inflight area, IOTLB entries and the
 * back-end channel, close every fd. The device host is then ready for
 * uvh_devhost_connect(). A no-op when not connected. From a thread other than
 * a watching engine's; a watched connection is unwatched first.
 */
void uvh_devhost_disconnect(struct uvh_devhost *v);

struct uvh_listener;

/** uvh_devhost_serve() options: where front-ends come from. */
struct uvh_devhost_serve_opts {
	/** Server mode: an open listener (proto/listener.h; not closed here).
	 *  While a front-end is served, others that connect are refused at
	 *  once (one front-end per socket). */
	struct uvh_listener *listener;
	/** Client mode: connect to @path (retrying with back-off while the
	 *  front-end's server is not there); also named in logs. */
	bool client;
	const char *path;
	/** Client mode: the server's uid must be one of these (none: any). */
	const uid_t *allow_uids;
	unsigned int n_allow_uids;
	/** A connected socket (the spec's --fd): served once, ownership
	 *  taken; -1 for none (0 is a socket: set -1 with a listener or
	 *  client mode, where fd is ignored anyway). */
	int fd;
	/** Non-zero: end at once (read with atomic loads: set it with an
	 *  atomic store or from a signal handler). NULL: never. */
	const volatile int *stop;
	/** How soon *stop is seen, in ms (0 = 200). */
	unsigned int poll_ms;
	/** Log prefix of the loop's own lines (NULL: the device host's name). */
	const char *name;
};

/**
 * A device daemon's control loop, on the calling thread: take a front-end
 * (from the listener, by connecting, or the given fd), handle its requests
 * until it goes or breaks the protocol, end the session
 * (uvh_devhost_disconnect: every ring stopped, every fd closed), take the
 * next. Returns 0 when *stop is set, or (with @fd) when that one
 * connection ended; -EINVAL when @opts names no source of front-ends.
 */
int uvh_devhost_serve(struct uvh_devhost *v, const struct uvh_devhost_serve_opts *opts);

/** True while a connection is being served. */
bool uvh_devhost_connected(const struct uvh_devhost *v);
/** The connection's socket fd (for the caller's poller), or -1. */
int uvh_devhost_fd(const struct uvh_devhost *v);
/** The device host's name. */
const char *uvh_devhost_name(const struct uvh_devhost *v);
/** The device pointer (opts->dev). */
void *uvh_devhost_dev(const struct uvh_devhost *v);

/** Number of rings (ops->num_queues). */
uint32_t uvh_devhost_num_queues(const struct uvh_devhost *v);
/** Ring @index (NULL out of range); the struct is valid for the device host's life. */
struct uvh_devhost_queue *uvh_devhost_queue(struct uvh_devhost *v, uint32_t index);
/** Is ring @q started? From any thread (a relaxed read: a snapshot). */
bool uvh_devhost_queue_running(const struct uvh_devhost_queue *q);
/** The engine serving ring @index (NULL out of range). */
struct uvh_engine *uvh_devhost_queue_engine(const struct uvh_devhost *v, uint32_t index);

/** Virtio features acked by the front-end (0 before SET_FEATURES). */
uint64_t uvh_devhost_features(const struct uvh_devhost *v);
/** Protocol features in force. */
uint64_t uvh_devhost_protocol_features(const struct uvh_devhost *v);
/** Device status from SET_STATUS (0 before). */
uint8_t uvh_devhost_status(const struct uvh_devhost *v);

/**
 * The back-end channel (SET_BACKEND_REQ_FD), or NULL. Valid until the
 * connection ends; its calls are thread-safe (e.g. a config-change
 * notification from a control op).
 */
struct uvh_backend_chan *uvh_devhost_backend_chan(struct uvh_devhost *v);

/* ---- in-process sessions (the soft backend of backends/soft.c) ------------------------ */

/**
 * Start a session with no socket: the VMM's own process is the front-end
 * and calls the request handlers directly (uvh_devhost_local_call() with
 * uvh_devhost_handler_ops()). In such a session vring addresses
 * (SET_VRING_ADDR) are guest-physical, and memory comes as host pointers
 * (uvh_devhost_set_mem_local). uvh_devhost_disconnect() ends it as it ends a
 * connection. 0, -EINVAL, -EBUSY (a session is on).
 */
int uvh_devhost_connect_local(struct uvh_devhost *v);

/**
 * The device host's request handlers; call them with dev = the struct uvh_devhost *
 * through uvh_devhost_local_call(). The validation uvh_backend_req does for a
 * socket (sizes, ring index < uvh_devhost_num_queues(), feature gates) is the
 * caller's; fds given to a handler are taken (closed on error).
 */
const struct uvh_backend_handler_ops *uvh_devhost_handler_ops(void);

/** Run @fn(v, @arg) under the device host's lock, in a local session only
 *  (-ENOTCONN otherwise); returns what @fn returns. */
int uvh_devhost_local_call(struct uvh_devhost *v, int (*fn)(void *dev, void *arg), void *arg);

/** A guest memory region the VMM mapped itself. */
struct uvh_devhost_local_region {
	uint64_t gpa;
	uint64_t size;
	void *hva;
};

/**
 * Local session: put a new memory table of @n host regions in force
 * (running rings switch to it between two bursts). 0, -ENOTCONN, or the
 * error of uvh_memory_add_host() (then the old table stays).
 */
int uvh_devhost_set_mem_local(struct uvh_devhost *v, const struct uvh_devhost_local_region *regions,
			 unsigned int n);
/** Local session: the table in force plus @region. Removing one is the
 *  rem_mem_reg handler with userspace_addr 0. */
int uvh_devhost_add_mem_local(struct uvh_devhost *v, const struct uvh_devhost_local_region *region);

/** Counters of one dh (since uvh_devhost_new). */
struct uvh_devhost_stats {
	uint64_t connections;		/**< connections served */
	uint64_t requests;		/**< requests handled */
	uint64_t mem_updates;		/**< memory tables put in force */
	uint64_t queue_starts;		/**< rings started */
	uint64_t queue_errors;		/**< rings found broken */
	uint32_t mem_regions;		/**< regions in the table in force */
	uint64_t mem_bytes;		/**< guest bytes mapped (not resident) */
};

/** Fill @st (read without locks: not one snapshot). */
void uvh_devhost_stats(const struct uvh_devhost *v, struct uvh_devhost_stats *st);

#ifdef __cplusplus
}
#endif

#endif
