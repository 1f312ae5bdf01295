/* SPDX-License-Identifier: MIT */
/*
 * uvhost: one interface for a VMM's virtqueues, four places to run them
 * (the C form of rust-vmm's VhostBackend trait).
 *
 *   soft  [VhostSoftBackend]  the device runs in the VMM's own process on
 *                             uvhost engines (the virtio-net of devices/net/net.h)
 *   kern  [VhostKernBackend]  /dev/vhost-net: the kernel runs the rings,
 *                             frames go to a tap (uvh_vhost_net_set_backend)
 *   vdpa  [VhostVdpaBackend]  /dev/vhost-vdpa-N: a vDPA device (hardware, or
 *                             the kernel's vdpa_sim) runs the rings
 *   user  [Master]            a vhost-user back-end process, through the
 *                             front-end of proto/frontend.h
 *
 * Open one by name:
 *
 *   struct uvh_vhost *b;
 *   uvh_vhost_open("kern:/dev/vhost-net", NULL, &b);
 *   uvh_vhost_open("vdpa:/dev/vhost-vdpa-0", NULL, &b);
 *   uvh_vhost_open("user:/run/uvhost-net.sock", NULL, &b);
 *   uvh_vhost_open("soft:net", &opts, &b);          (opts.soft: the device)
 *
 * then drive it with uvh_vhost_call(b, op, args...) (below), in the order
 * the virtio/vhost life cycle asks: set_owner, get_features/set_features,
 * set_mem_table, then per ring set_vring_num, set_vring_addr,
 * set_vring_base, set_vring_call, set_vring_kick (and, where the backend
 * needs it, set_vring_enable / set_status DRIVER_OK); get_vring_base
 * stops a ring and returns where it stopped.
 *
 * One convention for every backend:
 *   - every op returns 0 or a negative errno; an op a backend does not
 *     have (the ops table holds NULL) returns -EOPNOTSUPP;
 *   - addresses: memory regions are given as (gpa, size, hva, fd,
 *     fd_offset); vring addresses are always guest-physical addresses
 *     (or IOVAs once VIRTIO_F_IOMMU_PLATFORM is negotiated). Each backend
 *     translates to what its kernel/peer wants (kern and user: the VMM's
 *     virtual addresses through the regions' hva; vdpa: gpa as IOVA with
 *     the regions mapped by IOTLB messages; soft: gpa);
 *   - file descriptors given to an op stay the caller's: a backend that
 *     keeps one keeps a dup() (the same eventfd, so kick/call flow as the
 *     VMM set them up); fds returned by an op are the caller's to close;
 *   - ring index: 0 .. the device's queue count - 1; vhost-net's kernel
 *     device has 2 rings per fd (one queue pair).
 *
 * Thread safety: one backend is driven from one thread at a time (the
 * VMM's device-model thread); the data path never goes through here.
 */
#ifndef UVHOST_VHOST_H
#define UVHOST_VHOST_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "message.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Where the virtqueues run. */
enum uvh_vhost_type {
	UVH_VHOST_SOFT = 0,
	UVH_VHOST_KERN,
	UVH_VHOST_VDPA,
	UVH_VHOST_USER,
};

/** One region of guest memory, as the VMM has it. */
struct uvh_vhost_mem_region {
	uint64_t gpa;		/**< guest-physical start */
	uint64_t size;		/**< bytes (non-zero) */
	void *hva;		/**< where the VMM mapped it (required by every backend) */
	int fd;			/**< the fd backing it (required by user; -1 otherwise is fine) */
	uint64_t fd_offset;	/**< offset of gpa's byte in fd */
};

/** SET_VRING_ADDR: where ring @index lives, as guest-physical addresses. */
struct uvh_vhost_vring_addr {
	uint32_t index;
	uint32_t flags;		/**< UVH_VRING_F_LOG: log used-ring writes at log_gpa */
	uint64_t desc_gpa;	/**< descriptor table (packed: descriptor ring) */
	uint64_t avail_gpa;	/**< avail ring (packed: driver event suppression) */
	uint64_t used_gpa;	/**< used ring (packed: device event suppression) */
	uint64_t log_gpa;	/**< with UVH_VRING_F_LOG: the used ring's gpa for the log */
};

/** SET_LOG_BASE: the dirty-page bitmap (one bit per 4 KiB page from gpa 0). */
struct uvh_vhost_log {
	void *hva;		/**< the bitmap in the VMM (kern: the kernel writes here) */
	uint64_t size;		/**< bytes */
	int fd;			/**< its fd (user, soft: the back-end maps it), or -1 */
	uint64_t fd_offset;
};

/** VDPA_GET_IOVA_RANGE: the IOVAs the device can use. */
struct uvh_vhost_iova_range {
	uint64_t first;
	uint64_t last;		/**< inclusive */
};

struct uvh_vhost;

/**
 * What a backend implements. Every op gets the backend first. What each
 * implementation does with each op is said per op; "-" = NULL in its
 * table (the call returns -EOPNOTSUPP).
 */
struct uvh_vhost_ops {
	/** soft: device features + VERSION_1/event idx/indirect/packed/
	 *  IOMMU_PLATFORM/LOG_ALL as the engine offers them; kern, vdpa:
	 *  VHOST_GET_FEATURES; user: GET_FEATURES. */
	int (*get_features)(struct uvh_vhost *b, uint64_t *features);
	/** Acked features (a subset of get_features). */
	int (*set_features)(struct uvh_vhost *b, uint64_t features);
	/** kern, vdpa: VHOST_SET_OWNER (binds the device to this process and
	 *  starts its worker); user: SET_OWNER; soft: marks the session. */
	int (*set_owner)(struct uvh_vhost *b);
	/** kern: VHOST_RESET_OWNER; vdpa: status 0; user: RESET_OWNER (or
	 *  RESET_DEVICE when negotiated); soft: every ring stopped, device reset. */
	int (*reset_owner)(struct uvh_vhost *b);

	/** user: GET_PROTOCOL_FEATURES; -: kern, vdpa, soft. */
	int (*get_protocol_features)(struct uvh_vhost *b, uint64_t *features);
	/** user: SET_PROTOCOL_FEATURES. */
	int (*set_protocol_features)(struct uvh_vhost *b, uint64_t features);
	/** kern, vdpa: VHOST_GET_BACKEND_FEATURES (IOTLB_MSG_V2, BATCH, ...);
	 *  -: user, soft. */
	int (*get_backend_features)(struct uvh_vhost *b, uint64_t *features);
	/** kern, vdpa: VHOST_SET_BACKEND_FEATURES. */
	int (*set_backend_features)(struct uvh_vhost *b, uint64_t features);

	/** The whole memory table (n regions). kern: VHOST_SET_MEM_TABLE
	 *  (gpa -> hva); vdpa: IOTLB v2 updates (iova = gpa, uaddr = hva),
	 *  batched when the kernel has BATCH, the previous table's mappings
	 *  invalidated; user: SET_MEM_TABLE (fds, at most 8 regions); soft:
	 *  a new table with host pointers, swapped under running rings. */
	int (*set_mem_table)(struct uvh_vhost *b, const struct uvh_vhost_mem_region *regions,
			     unsigned int n);
	/** One more region. user: ADD_MEM_REG; vdpa: one IOTLB update; kern,
	 *  soft: the table is set again with it. */
	int (*add_mem_region)(struct uvh_vhost *b, const struct uvh_vhost_mem_region *region);
	/** Region (gpa and size must match one added). user: REM_MEM_REG;
	 *  vdpa: IOTLB invalidate; kern, soft: table set again without it. */
	int (*remove_mem_region)(struct uvh_vhost *b,
				 const struct uvh_vhost_mem_region *region);
	/** Most regions: user GET_MAX_MEM_SLOTS; kern the module's
	 *  max_mem_regions (default 64); soft 509; vdpa -. */
	int (*get_max_mem_slots)(struct uvh_vhost *b, uint64_t *slots);

	/** Dirty log. kern: VHOST_SET_LOG_BASE (log->hva); user:
	 *  SET_LOG_BASE (log->fd, needs LOG_SHMFD); soft: log->fd mapped, or
	 *  log->hva used; vdpa -. */
	int (*set_log_base)(struct uvh_vhost *b, const struct uvh_vhost_log *log);
	/** An eventfd the backend writes after logging. kern: VHOST_SET_LOG_FD;
	 *  user: SET_LOG_FD; soft: kept; vdpa -. */
	int (*set_log_fd)(struct uvh_vhost *b, int fd);

	/** Ring size (split: a power of 2; at most get_vring_num_max). */
	int (*set_vring_num)(struct uvh_vhost *b, uint32_t index, uint32_t num);
	/** vdpa: VHOST_VDPA_GET_VRING_NUM; kern, soft, user: 32768. */
	int (*get_vring_num_max)(struct uvh_vhost *b, uint32_t *num);
	int (*set_vring_addr)(struct uvh_vhost *b, const struct uvh_vhost_vring_addr *addr);
	/** Next avail index (packed: bit 15 = wrap counter, as the spec's
	 *  SET_VRING_BASE). */
	int (*set_vring_base)(struct uvh_vhost *b, uint32_t index, uint32_t base);
	/** Stops ring @index (kern, user, soft; vdpa: read while suspended or
	 *  after reset) and returns the next avail index it would process. */
	int (*get_vring_base)(struct uvh_vhost *b, uint32_t index, uint32_t *base);
	/** @fd an eventfd the driver writes, or -1: kern, soft stop watching. */
	int (*set_vring_kick)(struct uvh_vhost *b, uint32_t index, int fd);
	/** @fd the eventfd the backend writes to interrupt the guest, or -1. */
	int (*set_vring_call)(struct uvh_vhost *b, uint32_t index, int fd);
	/** @fd the eventfd written when the ring breaks, or -1. */
	int (*set_vring_err)(struct uvh_vhost *b, uint32_t index, int fd);
	/** vdpa: VHOST_VDPA_SET_VRING_ENABLE; user: SET_VRING_ENABLE; soft:
	 *  the ring's enable bit; kern: - (rings run once kicked). */
	int (*set_vring_enable)(struct uvh_vhost *b, uint32_t index, bool enable);
	/** kern: VHOST_SET_VRING_BUSYLOOP_TIMEOUT (microseconds the worker
	 *  polls before sleeping); -: others. */
	int (*set_vring_busyloop_timeout)(struct uvh_vhost *b, uint32_t index,
					  uint32_t timeout_us);

	/** Device status byte. vdpa: VHOST_VDPA_GET/SET_STATUS (DRIVER_OK
	 *  starts the device, 0 resets it); user: GET/SET_STATUS when
	 *  negotiated; soft: recorded; kern: -. */
	int (*get_status)(struct uvh_vhost *b, uint8_t *status);
	int (*set_status)(struct uvh_vhost *b, uint8_t status);
	/** Config space. vdpa: VHOST_VDPA_GET/SET_CONFIG; user: GET/SET_CONFIG;
	 *  soft: the device's; kern: -. */
	int (*get_config)(struct uvh_vhost *b, uint32_t offset, uint32_t size, uint8_t *buf);
	int (*set_config)(struct uvh_vhost *b, uint32_t offset, uint32_t size,
			  const uint8_t *buf);
	/** vdpa: VHOST_VDPA_SET_CONFIG_CALL (config-change eventfd); user: the
	 *  back-end channel's CONFIG_CHANGE_MSG writes it; -: kern, soft. */
	int (*set_config_call)(struct uvh_vhost *b, int fd);

	/** An IOTLB message (update/invalidate) when IOMMU_PLATFORM is in
	 *  force; msg->uaddr is the VMM's own address (hva), as in the
	 *  memory table. kern, vdpa: a vhost_msg_v2 written to the fd; user:
	 *  IOTLB_MSG; soft: the rings' IOTLB cache. */
	int (*iotlb_msg)(struct uvh_vhost *b, const struct uvh_iotlb *msg);
	/** Wait up to @timeout_ms for an IOTLB miss from the device (kern,
	 *  vdpa: read from the fd; user: BACKEND_IOTLB_MSG). 0 and *msg filled,
	 *  -ETIMEDOUT, or an error. */
	int (*iotlb_miss)(struct uvh_vhost *b, struct uvh_iotlb *msg, int timeout_ms);

	/** Queues of the device. user: GET_QUEUE_NUM as the back-end answers
	 *  it (virtio-net: queue pairs); soft: queue pairs; vdpa:
	 *  VHOST_VDPA_GET_VQS_COUNT (rings) when the kernel has it; kern: 1
	 *  (one pair per /dev/vhost-net fd). */
	int (*get_queue_num)(struct uvh_vhost *b, uint64_t *num);
	/** vdpa: VHOST_VDPA_GET_DEVICE_ID; soft: 1 (net); user, kern: -. */
	int (*get_device_id)(struct uvh_vhost *b, uint32_t *id);
	/** vdpa: VHOST_VDPA_GET_IOVA_RANGE; -: others. */
	int (*get_iova_range)(struct uvh_vhost *b, struct uvh_vhost_iova_range *range);
	/** vdpa: VHOST_VDPA_SUSPEND / RESUME (backend feature SUSPEND/RESUME);
	 *  user, soft: every ring stopped/restarted with its state kept; kern: -. */
	int (*suspend)(struct uvh_vhost *b);
	int (*resume)(struct uvh_vhost *b);

	/** kern: VHOST_NET_SET_BACKEND, ring @index to a tap (or packet
	 *  socket) @fd; -1 detaches (the ring stops). -: others. */
	int (*net_set_backend)(struct uvh_vhost *b, uint32_t index, int fd);

	/** user: GET_INFLIGHT_FD (the region for @num_queues rings of
	 *  @queue_size; *fd and its *mmap_size returned); soft: the same, from
	 *  uvhost's inflight area; -: kern, vdpa. */
	int (*get_inflight_fd)(struct uvh_vhost *b, uint16_t num_queues, uint16_t queue_size,
			       int *fd, uint64_t *mmap_size);
	/** user: SET_INFLIGHT_FD with what get_inflight_fd returned. */
	int (*set_inflight_fd)(struct uvh_vhost *b, uint16_t num_queues, uint16_t queue_size,
			       int fd, uint64_t mmap_size);

	/** Free the backend (closes the device fd / the connection; a soft
	 *  device's rings are stopped and its engines joined). */
	void (*close)(struct uvh_vhost *b);
};

/** The part every backend shares (the first member of each). */
struct uvh_vhost {
	const struct uvh_vhost_ops *ops;
	enum uvh_vhost_type type;
	/** What it was opened with ("kern:/dev/vhost-net"), for logs. */
	char name[112];
	/** kern, vdpa: the character device; user: the socket; soft: -1. */
	int fd;
};

struct uvh_net_opts;
struct uvh_net_dev;
struct uvh_engine;
struct uvh_devhost_device_ops;

/** uvh_vhost_open() options; NULL or zeroed = defaults. */
struct uvh_vhost_open_opts {
	/** soft: a device of the caller's, hosted through its ops table
	 *  (host/devhost.h; table and device outlive the backend); the spec's
	 *  ARG then only names it in logs. NULL: "soft:net". */
	const struct uvh_devhost_device_ops *soft_device_ops;
	/** soft: that device (the ops' dev). */
	void *soft_device;
	/** soft: its virtio device id for get_device_id (0: -ENOTSUP). */
	uint32_t soft_device_id;
	/** soft:net: the virtio-net device to make (net.h; NULL = loopback, 1 pair). */
	const struct uvh_net_opts *soft_net;
	/** soft: engines to run the rings on (NULL = the backend starts
	 *  soft_engines engines of its own, each in its own thread). */
	struct uvh_engine *const *soft_engine_list;
	/** soft: how many in soft_engine_list, or how many to start (0 = 1). */
	unsigned int soft_engines;
	/** soft: CPU of the first own engine (-1 or 0 with no pin = not pinned). */
	int soft_cpu;
	/** user: milliseconds to wait for the back-end's socket and for each
	 *  reply (0 = 5000). */
	int user_timeout_ms;
	/** kern, vdpa: open flags added to O_RDWR (e.g. O_CLOEXEC is always set). */
	int open_flags;
	/** user: record the session from the open on (every request the
	 *  back-end accepted, with dups of the fds it carried), so that
	 *  uvh_vhost_user_reconnect() can replay it on a restarted
	 *  back-end. Costs one dup per memory region, ring eventfd and
	 *  inflight area for the backend's life. */
	bool user_reconnect;
	/**
	 * user, with user_reconnect: where ring @index restarts on the new
	 * back-end (SET_VRING_BASE of the replay); *base holds what the
	 * backend knows (the last set_vring_base, or where get_vring_base /
	 * suspend stopped the ring). The VMM's driver knows better: split
	 * rings restart at used->idx (the chains in flight are the inflight
	 * area's business, as QEMU does); packed at the next used slot, bit
	 * 15 its wrap counter. NULL keeps *base, which for a ring that ran
	 * since its set_vring_base is stale (chains lost or used twice).
	 * Negative errno aborts the reconnect. Called from
	 * uvh_vhost_user_reconnect(), in the caller's thread.
	 */
	int (*user_vring_base)(void *opaque, uint32_t index, uint32_t *base);
	/** user: handed to user_vring_base. */
	void *user_opaque;
};

/**
 * Open a backend. @spec is "TYPE:ARG":
 *   soft:net              a virtio-net device in this process (opts->soft_*)
 *   soft:NAME             the caller's device, opts->soft_device_ops
 *   kern:PATH             a vhost character device (/dev/vhost-net)
 *   vdpa:PATH             a vhost-vdpa character device (/dev/vhost-vdpa-0)
 *   user:PATH             a vhost-user back-end listening on PATH
 * 0 with *out set, -EINVAL (bad spec), -ENOENT/-EACCES/... from open or
 * connect, -ENOMEM.
 */
int uvh_vhost_open(const char *spec, const struct uvh_vhost_open_opts *opts,
		     struct uvh_vhost **out);
/** Close and free (NULL is a no-op). */
void uvh_vhost_close(struct uvh_vhost *b);
/** "soft", "kern", "vdpa" or "user". */
const char *uvh_vhost_type_name(enum uvh_vhost_type type);

/** The implementations' constructors (uvh_vhost_open() calls them). */
int uvh_vhost_soft_open(const char *arg, const struct uvh_vhost_open_opts *opts,
			  struct uvh_vhost **out);
int uvh_vhost_kern_open(const char *path, const struct uvh_vhost_open_opts *opts,
			  struct uvh_vhost **out);
int uvh_vhost_vdpa_open(const char *path, const struct uvh_vhost_open_opts *opts,
			  struct uvh_vhost **out);
int uvh_vhost_user_open(const char *path, const struct uvh_vhost_open_opts *opts,
			  struct uvh_vhost **out);

/** soft:net: its device (to read its counters), NULL otherwise. */
struct uvh_net_dev *uvh_vhost_soft_net(struct uvh_vhost *b);
/** soft: the device hosted (soft_device, or soft:net's), NULL otherwise. */
void *uvh_vhost_soft_device(struct uvh_vhost *b);
/** kern, vdpa: the character device's fd; user: the socket; soft: -1. */
int uvh_vhost_fd(const struct uvh_vhost *b);

/*
 * user: surviving a back-end restart. While the back-end process is gone,
 * every op that talks to it fails (-ENOTCONN, -EPIPE, -ECONNRESET or
 * -ETIMEDOUT), nothing crashes, and the guest's rings are left as they
 * are: the driver may go on adding buffers. The VMM notices (an op's
 * error, or uvh_vhost_user_check() from its poll loop: uvh_vhost_fd()
 * turns readable/hung up) and calls uvh_vhost_user_reconnect(). Ops are
 * not retried behind the VMM's back: only it knows its rings' positions
 * and whether an op (get_vring_base, set_status...) makes sense again.
 */

/**
 * user: has the back-end gone? Waits up to @timeout_ms (0: just look).
 * 0 when it is up, -ENOTCONN when it closed the connection (or an earlier
 * error left it unusable), -EOPNOTSUPP for another backend type.
 */
int uvh_vhost_user_check(struct uvh_vhost *b, int timeout_ms);

/**
 * user, opened with user_reconnect: drop the connection, connect again to
 * the same path (retrying for @timeout_ms while the new process is not
 * listening yet; 0 = one try, -1 = forever) and replay the session:
 * features, protocol features, the back-end channel, the memory table,
 * the inflight area (SET_INFLIGHT_FD: the new process resubmits what the
 * old one had in flight), each ring's size, base (user_vring_base),
 * addresses, fds and enable state, the status, then a kick per ring. A
 * ring the VMM had stopped (get_vring_base, suspend) is stopped again
 * right after the replay (the replay starts every ring it set up; the
 * new back-end may run it for that moment, the base read back says how
 * far). uvh_vhost_fd() changes. Not replayed: the dirty log
 * (set_log_base/set_log_fd), config space writes, IOTLB entries (the
 * device asks again by iotlb_miss); IOTLB misses queued from the old
 * process are dropped.
 *
 * 0, -EOPNOTSUPP (not a user backend), -EINVAL (opened without
 * user_reconnect), -ETIMEDOUT or the connect error (-ENOENT,
 * -ECONNREFUSED with @timeout_ms 0), -EPROTO (the new back-end lacks a
 * feature in force), -ENOTRECOVERABLE (the session could not be recorded),
 * or a replayed request's error. On failure the backend stays unusable
 * (ops: -ENOTCONN) and may be reconnected again.
 */
int uvh_vhost_user_reconnect(struct uvh_vhost *b, int timeout_ms);

/**
 * Call op @op of @b with the arguments that follow:
 *   ret = uvh_vhost_call(b, set_vring_num, 0, 256);
 * -EOPNOTSUPP when @b does not have @op.
 */
#define uvh_vhost_call(b, op, ...) \
	((b)->ops->op ? (b)->ops->op((b), ##__VA_ARGS__) : -EOPNOTSUPP)

/** Does @b have @op? */
#define uvh_vhost_has(b, op) ((b)->ops->op != NULL)

#ifdef __cplusplus
}
#endif

#endif
