/* SPDX-License-Identifier: MIT */
/*
 * uvhost: virtqueues, device side and driver side, split and packed.
 *
 * Device side (what a back-end runs): uvh_vq_pop() takes up to a burst of
 * available chains and turns each into iovecs (device-readable first, then
 * device-writable) pointing into guest memory; uvh_vq_push() returns a burst
 * of used chains with one index/flag publish; uvh_vq_need_call() says
 * whether the guest wants an interrupt (EVENT_IDX, NO_INTERRUPT, packed
 * event suppression).
 *
 * Every value read from guest memory is read once (into a local) and
 * validated before use; a ring that breaks a rule is marked broken with a
 * specific uvh_vq_error and is never touched again until re-initialised.
 * No address outside the memory table is ever dereferenced.
 *
 * Driver side (the guest's role: the soft VMM side, the benchmark's traffic
 * generator, tests): uvh_vq_driver lays a ring out in memory it owns, adds
 * chains of guest-physical buffers, publishes them, and collects used ones.
 *
 * One queue, one thread: neither side locks. The other side is another
 * thread or process; the barriers in virtq.c name their pairs.
 */
#ifndef UVHOST_VIRTQ_H
#define UVHOST_VIRTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "memory.h"
#include "virtio.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Bytes of each area of a ring of @size entries (for checking addresses). */
size_t uvh_vring_desc_bytes(uint16_t size, bool packed);
size_t uvh_vring_driver_bytes(uint16_t size, bool packed);	/* avail / driver event */
size_t uvh_vring_device_bytes(uint16_t size, bool packed);	/* used / device event */

/* ---- device side ------------------------------------------------------------ */

/** Why a queue was marked broken. */
enum uvh_vq_error {
	UVH_VQ_OK = 0,
	UVH_VQ_ERR_RING_ADDR,		/**< a ring area is not in guest memory */
	UVH_VQ_ERR_AVAIL_IDX,		/**< avail idx moved by more than the queue size */
	UVH_VQ_ERR_DESC_INDEX,		/**< a head or next index >= queue size */
	UVH_VQ_ERR_DESC_ADDR,		/**< a buffer outside the memory table */
	UVH_VQ_ERR_CHAIN_LOOP,		/**< chain longer than the queue: a loop */
	UVH_VQ_ERR_LEN_OVERFLOW,	/**< chain length over 4 GiB */
	UVH_VQ_ERR_NESTED_INDIRECT,	/**< indirect descriptor inside an indirect table */
	UVH_VQ_ERR_INDIRECT_SIZE,	/**< indirect table empty, not a multiple of 16, or too big */
	UVH_VQ_ERR_INDIRECT_FEATURE,	/**< indirect without INDIRECT_DESC negotiated */
	UVH_VQ_ERR_WRITE_ORDER,		/**< device-readable after device-writable */
	UVH_VQ_ERR_TOO_MANY_SEGMENTS,	/**< more segments than the caller's iovecs */
	UVH_VQ_ERR_BUFFER_ID,		/**< packed buffer id out of range */
	UVH_VQ_ERR_IOTLB,		/**< IOVA translation failed (miss or permission) */
	UVH_VQ_ERR_COUNT
};

/** A short fixed description of @err. */
const char *uvh_vq_strerror(enum uvh_vq_error err);

struct uvh_vq;

/**
 * An IOTLB event (VIRTIO_F_IOMMU_PLATFORM), @type UVH_IOTLB_MISS: @iova,
 * needing @perm, is not in the cache (reported at most once per missing
 * IOVA until the queue makes progress); the owner asks the front-end
 * (BACKEND_IOTLB_MSG type MISS) and, when the update arrives, makes the
 * queue's engine sweep it again. @type UVH_IOTLB_ACCESS_FAIL: @iova is
 * cached without @perm; the ring is being marked broken (UVH_VQ_ERR_IOTLB).
 * Called on the queue's thread; must not call back into @vq.
 */
typedef void (*uvh_vq_iotlb_miss_fn)(void *opaque, struct uvh_vq *vq, uint64_t iova,
				     uint8_t perm, uint8_t type);

/** How a queue is set up (from SET_VRING_NUM/ADDR/BASE and the features). */
struct uvh_vq_config {
	uint16_t size;			/**< entries; a power of two for split */
	bool packed;			/**< VIRTIO_F_RING_PACKED */
	bool event_idx;			/**< VIRTIO_F_RING_EVENT_IDX */
	bool indirect;			/**< VIRTIO_F_RING_INDIRECT_DESC */
	bool in_order;			/**< VIRTIO_F_IN_ORDER */
	bool strict_order;		/**< refuse readable-after-writable chains */
	/**
	 * Every buffer is device-readable, whatever its WRITE flag says (a
	 * transmit ring). DPDK's virtio driver leaves WRITE set on the header
	 * entry of packed indirect tables for multi-segment frames, and DPDK's
	 * own vhost ignores the flag on transmit rings: so must we.
	 */
	bool device_reads_only;
	uint64_t desc_gpa;		/**< descriptor area, guest-physical */
	uint64_t driver_gpa;		/**< avail ring / driver event area */
	uint64_t device_gpa;		/**< used ring / device event area */
	uint16_t next_avail;		/**< SET_VRING_BASE: split: bits 0-15 */
	bool avail_wrap;		/**< packed: avail wrap counter */
	uint16_t next_used;		/**< packed: used index (split: = next_avail) */
	bool used_wrap;			/**< packed: used wrap counter */
	bool log_used;			/**< VHOST_VRING_F_LOG: log used-ring writes */
	uint64_t log_used_gpa;		/**< where the used ring is, for the log */
	/**
	 * VIRTIO_F_IOMMU_PLATFORM: when set, the ring areas above and every
	 * descriptor address are IOVAs, translated through this cache (which
	 * must outlive the queue) to front-end virtual addresses and then
	 * through the memory table. NULL: they are guest-physical.
	 */
	struct uvh_iotlb_cache *iotlb;
	uvh_vq_iotlb_miss_fn iotlb_miss;	/**< may be NULL */
	void *iotlb_opaque;			/**< for iotlb_miss */
};

/** One chain taken from the ring. */
struct uvh_vq_chain {
	struct iovec *iov;	/**< nout readable then nin writable, in the caller's pool */
	uint16_t nout;
	uint16_t nin;
	uint32_t out_len;	/**< bytes readable */
	uint32_t in_len;	/**< bytes writable */
	uint16_t id;		/**< split: head index; packed: buffer id */
	uint16_t ndesc;		/**< ring slots used (packed needs it to complete) */
};

/** One chain given back. */
struct uvh_vq_used {
	uint16_t id;		/**< from the chain */
	uint16_t ndesc;		/**< from the chain */
	uint32_t len;		/**< bytes written into the chain's writable part */
};

/** Device-side state of one queue. Embed it; use the functions. */
struct uvh_vq {
	struct uvh_vq_config cfg;
	const struct uvh_memory *mem;
	struct uvh_dirty_log *log;		/**< NULL unless LOG_ALL */
	uint32_t mem_hint;
	enum uvh_vq_error error;
	uint16_t write_flag;			/**< UVH_VRING_DESC_F_WRITE, or 0 (device_reads_only) */
	/* split */
	struct uvh_vring_desc *desc;
	struct uvh_vring_avail *avail;
	struct uvh_vring_used *used;
	uint16_t last_avail;			/**< next avail entry to take */
	uint16_t shadow_avail;			/**< last avail->idx read */
	uint16_t used_idx;			/**< next used entry to write */
	uint16_t signalled_used;		/**< used idx at the last call */
	bool signalled_used_valid;
	/* packed */
	struct uvh_vring_packed_desc *pdesc;
	struct uvh_vring_packed_event *driver_event;
	struct uvh_vring_packed_event *device_event;
	bool avail_wrap;
	bool used_wrap;
	uint16_t used_slot;			/**< next slot to write a used desc */
	/* counters */
	uint64_t popped;
	uint64_t pushed;
	void *inflight;				/**< inflight region (GET/SET_INFLIGHT_FD) or NULL */
	/* IOTLB (cfg.iotlb): ring areas waiting for a translation, and the
	 * last miss reported (not reported again until progress) */
	bool rings_pending;
	bool miss_reported;
	uint64_t miss_iova;
};

/**
 * Set @vq up on @mem. Translates and bounds-checks the ring areas.
 * 0, or -EINVAL (bad size) / -EFAULT (ring outside memory: error set).
 *
 * With cfg->iotlb, a ring area whose IOVA is not in the cache yet is not
 * an error: the miss is reported (cfg->iotlb_miss), 0 is returned, and the
 * queue stays idle (pop returns 0, avail_pending/notify_enable false)
 * while every later pop, avail_pending or notify_enable tries the
 * translation again: the owner kicks the queue when the update arrives.
 * A permission failure breaks the ring (UVH_VQ_ERR_IOTLB, -EFAULT).
 */
int uvh_vq_init(struct uvh_vq *vq, const struct uvh_vq_config *cfg,
		const struct uvh_memory *mem);
/** Switch to a new memory table (ring areas translated again). 0 or -EFAULT. */
int uvh_vq_set_memory(struct uvh_vq *vq, const struct uvh_memory *mem);
/** Log used-ring and buffer writes into @log (NULL stops logging). */
void uvh_vq_set_log(struct uvh_vq *vq, struct uvh_dirty_log *log);

/**
 * Translate the IOVA range [@iova, @iova+@len) of @vq (cfg.iotlb set),
 * needing @perm (UVH_IOTLB_RO for device-readable, WO for device-writable),
 * into up to @max iovecs, split where the IOTLB entries or the memory
 * regions end. Writable ranges are dirty-logged here when a log is set
 * (their guest-physical address is known only now). For the ring
 * implementations (and tests). Returns the iovec count (0 for @len 0),
 * -ENOENT on a miss (reported through cfg.iotlb_miss once), -EACCES on a
 * permission failure (reported as UVH_IOTLB_ACCESS_FAIL), -EINVAL without
 * cfg.iotlb, -EFAULT when the front-end address is not in the
 * memory table, -ENOBUFS when @max is too small. Never marks @vq broken.
 */
int uvh_vq_iova_to_iov(struct uvh_vq *vq, uint64_t iova, uint64_t len, uint8_t perm,
		       struct iovec *iov, unsigned int max);

/**
 * Take up to @max available chains. Each chain's iovecs are carved from
 * @iov (capacity @iov_max, shared by the burst). Returns the number of
 * chains taken (0 when none). On a broken ring the chains taken before the
 * fault are returned and vq->error is set; the next call returns 0.
 * With an IOTLB, a chain with an IOVA missing from the cache ends the
 * burst and stays available (the miss is reported; a later pop retries);
 * a permission failure breaks the ring with UVH_VQ_ERR_IOTLB.
 */
int uvh_vq_pop(struct uvh_vq *vq, struct uvh_vq_chain *chains, unsigned int max,
	       struct iovec *iov, unsigned int iov_max);

/**
 * Give back, unused, the last @n chains popped (@chains, in pop order, none
 * pushed since): they become available again as if never taken, and the
 * base moves back over them. For a device that took chains ahead of use
 * (an RX pool) and stops the ring: handing them back as used with 0 bytes
 * would show the guest empty packets. 0; -EBUSY with inflight tracking on
 * (the chains stay in flight: a restart resubmits them) or on a broken
 * ring; -EINVAL when fewer chains are in flight.
 */
int uvh_vq_unpop(struct uvh_vq *vq, const struct uvh_vq_chain *chains, unsigned int n);

/**
 * Give back @n chains with the bytes written into each; one publish of the
 * used index (split) or of the first descriptor's flags (packed), after
 * the others, so the driver sees the whole burst at once. Written buffers
 * and the used ring are logged when a log is set.
 */
void uvh_vq_push(struct uvh_vq *vq, const struct uvh_vq_used *used, unsigned int n);

/**
 * After a push: does the driver want an interrupt now? (EVENT_IDX's
 * used_event, NO_INTERRUPT, or packed event suppression.) Resets the
 * tracking, so ask once per burst and write the call eventfd when true.
 */
bool uvh_vq_need_call(struct uvh_vq *vq);

/** Ask the driver not to kick (polling). */
void uvh_vq_notify_disable(struct uvh_vq *vq);
/**
 * Ask the driver to kick again (going to sleep). Returns true when chains
 * are already available: the caller must process them instead of
 * sleeping, or a kick may be lost.
 */
bool uvh_vq_notify_enable(struct uvh_vq *vq);
/**
 * Ask the driver to kick only once @n more chains are available (EVENT_IDX:
 * split avail_event, packed descriptor event @n descriptors ahead; without
 * it, as uvh_vq_notify_enable). Returns true when the @n-th is already
 * there (without EVENT_IDX: any): the caller must process instead of
 * sleeping. Fewer may wait until the @n-th comes: pair a sleep on it with
 * a timeout.
 */
bool uvh_vq_notify_enable_after(struct uvh_vq *vq, unsigned int n);
/** Are chains available? (reads the ring; cheap) */
bool uvh_vq_avail_pending(struct uvh_vq *vq);
/** The ring was marked broken. From any thread: a ring another engine
 *  fills (a switch's RX ring) may break in that engine's burst. */
static inline bool uvh_vq_broken(const struct uvh_vq *vq)
{
	return __atomic_load_n(&vq->error, __ATOMIC_RELAXED) != UVH_VQ_OK;
}
/** GET_VRING_BASE's value: split next avail; packed avail/used with wrap bits. */
uint32_t uvh_vq_base(const struct uvh_vq *vq);

/* ---- driver side ------------------------------------------------------------ */

/** One guest buffer. */
struct uvh_vq_buf {
	uint64_t gpa;
	uint32_t len;
};

/** Driver-side bookkeeping of one buffer id (split: head descriptor), 8 bytes. */
struct uvh_vq_driver_id {
	uint16_t next_free;	/**< free list link (split: per descriptor; packed: per id) */
	uint16_t ndesc;		/**< descriptors of the chain in flight; 0 = not in flight */
	uint16_t last;		/**< split: the chain's last descriptor; packed: its last slot */
	uint16_t pad;
};

/** Driver-side state of one queue. */
struct uvh_vq_driver {
	uint16_t size;
	bool packed, event_idx, indirect;
	/* ring areas as our pointers and as guest-physical addresses */
	void *desc, *driver_area, *device_area;
	uint64_t desc_gpa, driver_gpa, device_gpa;
	/* split */
	uint16_t free_head, num_free, avail_idx, last_used, kicked_avail;
	/* packed */
	uint16_t next_slot, last_used_slot;
	bool avail_wrap, used_wrap;
	uint16_t next_id;
	/* per id: one 8-byte entry each, so adding or freeing a chain
	 * touches one line of bookkeeping besides the token */
	void **tokens;
	struct uvh_vq_driver_id *ids;
};

/**
 * Lay out a ring of @size entries in @area (guest memory we own, at guest
 * physical @gpa, at least uvh_vq_driver_area_bytes() long, 4 KiB aligned).
 * The three areas are placed one after the other with the alignment the
 * spec wants. Allocates the per-id bookkeeping (uvh_vq_driver_free).
 */
int uvh_vq_driver_init(struct uvh_vq_driver *drv, uint16_t size, bool packed,
		       bool event_idx, void *area, uint64_t gpa);
void uvh_vq_driver_free(struct uvh_vq_driver *drv);
/** Bytes needed for a ring of @size entries. */
size_t uvh_vq_driver_area_bytes(uint16_t size, bool packed);
/** The config a device needs to serve this ring (addresses and bases). */
void uvh_vq_driver_config(const struct uvh_vq_driver *drv, struct uvh_vq_config *cfg);

/**
 * Add one chain: @nout device-readable then @nin device-writable buffers,
 * @token given back when it is used. Not visible to the device until
 * uvh_vq_driver_publish(). 0, or -ENOSPC when the ring is full.
 */
int uvh_vq_driver_add(struct uvh_vq_driver *drv, const struct uvh_vq_buf *bufs,
		      unsigned int nout, unsigned int nin, void *token);
/**
 * Add @n chains of one buffer each (@bufs[i], device-writable if
 * @device_writable, else device-readable), chain i given back with
 * @tokens[i]: the fast path of a driver that adds packets in bursts. All
 * or nothing: 0 (also for @n 0), or -ENOSPC when fewer than @n slots (split:
 * descriptors; packed: ring slots and ids) are free, nothing added then.
 * Not visible to the device until uvh_vq_driver_publish().
 */
int uvh_vq_driver_add_burst(struct uvh_vq_driver *drv, const struct uvh_vq_buf *bufs,
			    unsigned int n, bool device_writable, void *const *tokens);
/** Make the added chains visible (one index/flags publish). */
void uvh_vq_driver_publish(struct uvh_vq_driver *drv);
/** After publish: does the device want a kick? (EVENT_IDX / NO_NOTIFY) */
bool uvh_vq_driver_need_kick(struct uvh_vq_driver *drv);
/**
 * Collect up to @max used chains: tokens and written lengths. Returns how
 * many. Their slots become free for uvh_vq_driver_add().
 */
unsigned int uvh_vq_driver_get_used(struct uvh_vq_driver *drv, void **tokens,
				    uint32_t *lens, unsigned int max);
/** Free slots (split: descriptors; packed: ring slots). */
unsigned int uvh_vq_driver_free_slots(const struct uvh_vq_driver *drv);
/** Ask for / suppress interrupts (used_event / packed driver event). */
void uvh_vq_driver_enable_cb(struct uvh_vq_driver *drv, bool enable);

#ifdef __cplusplus
}
#endif

#endif
