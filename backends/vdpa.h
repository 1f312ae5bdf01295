/* SPDX-License-Identifier: MIT */
/*
 * uvhost: what only the vdpa backend (/dev/vhost-vdpa-N) has, beyond
 * backend.h's ops.
 *
 * Open with uvh_vhost_open("vdpa:/dev/vhost-vdpa-0", ...), or adopt an fd
 * opened elsewhere (a privileged helper, as libvirt does for QEMU) with
 * uvh_vhost_vdpa_open_fd().
 *
 * At open the backend asks the kernel, once, for the device's facts (device
 * id, ring count, ring size limit, config size, IOVA range, features,
 * backend features) and acks the backend features it speaks that the
 * kernel offers: IOTLB_MSG_V2 (required), IOTLB_BATCH, SUSPEND, RESUME.
 * uvh_vhost_vdpa_info() returns what the kernel answered. A device that
 * does not answer VHOST_VDPA_GET_DEVICE_ID (e.g. /dev/null) is refused
 * with -ENOTTY and its fd closed.
 *
 * What the vdpa backend does with backend.h's conventions:
 *   - ring index: 0 .. VHOST_VDPA_GET_VQS_COUNT - 1, else -EINVAL before
 *     any ioctl (virtio-net: rx 0, tx 1, rx 2, tx 3, ..., then ctrl);
 *     ring size a power of 2 up to VHOST_VDPA_GET_VRING_NUM (-EINVAL);
 *   - vring addresses are IOVAs: with set_mem_table the guest-physical
 *     addresses themselves (every region is mapped iova = gpa); they go to
 *     the kernel as given, checked for alignment (desc 16, avail 2, used
 *     4; packed: 16/4/4) and for the IOVA range (-ERANGE);
 *   - memory: set_mem_table checks every region first (size non-zero,
 *     hva set, gpa, size and hva 4 KiB aligned, no wrap, no two
 *     overlapping: -EINVAL; inside the IOVA range: -ERANGE; at most
 *     UVH_VDPA_MAX_REGIONS: -E2BIG), then writes one struct vhost_msg_v2
 *     per write(2): an INVALIDATE for every region of the previous table
 *     that is not in the new one, then an UPDATE (iova = gpa, uaddr = hva,
 *     perm RW) for every new region that was not mapped yet, the whole
 *     inside BATCH_BEGIN/BATCH_END when IOTLB_BATCH was acked. A region
 *     present in both tables (same gpa, size, hva) is left mapped. If an
 *     UPDATE fails, what this call mapped is invalidated again and the
 *     table left holds only the regions kept from before. add_mem_region
 *     is one UPDATE (no overlap with the table), remove_mem_region one
 *     INVALIDATE of a region that must match one in the table (gpa and
 *     size; -ENOENT otherwise). Devices that map by virtual address
 *     (VDUSE; vdpa_sim since Linux 6.3, its use_va parameter) map only
 *     MAP_SHARED file memory (memfd, hugetlbfs) and skip anonymous memory
 *     without an error: give such devices shared file memory (a region
 *     without an fd is noted once in the log). Devices that map physical
 *     pages (6.1's vdpa_sim, most hardware) pin whatever memory it is,
 *     within RLIMIT_MEMLOCK (-EFAULT from the kernel when over it);
 *   - iotlb_msg: the VMM's own vIOMMU mappings (IOMMU_PLATFORM), UPDATE or
 *     INVALIDATE only, checked (size, wrap, perm, IOVA range) and written
 *     as a struct vhost_msg_v2; they are not part of the memory table;
 *   - set_status: the bits are applied one step at a time in the spec's
 *     order, each step a VHOST_VDPA_SET_STATUS: ACKNOWLEDGE, DRIVER,
 *     FEATURES_OK (read back: a device that does not keep it refused the
 *     features: -EIO), DRIVER_OK (read back too). A bit implies the ones
 *     before it, so set_status(UVH_VDPA_S_DRIVER_OK) runs the whole
 *     handshake. Bits already set may not be dropped except by status 0
 *     (-EINVAL), which resets the device: the rings stop, the device
 *     forgets its state and every mapping of the memory table is
 *     invalidated and forgotten (set the table again before restarting;
 *     reset_owner is the same reset). Set the features before FEATURES_OK
 *     and enable the rings before DRIVER_OK (the kernel's rule without
 *     ENABLE_AFTER_DRIVER_OK);
 *   - get_vring_base: on a running device (DRIVER_OK, not suspended) the
 *     device is suspended first when SUSPEND was acked (every ring stops,
 *     as get_vring_base stops its ring); without SUSPEND the value is read
 *     from the running device (a warning says it may be stale);
 *   - suspend/resume: -EOPNOTSUPP unless the kernel offered the backend
 *     feature SUSPEND / RESUME (Linux 6.1 has SUSPEND only: a suspended
 *     device restarts by a reset and a new set-up);
 *   - kick/call/config-call fds: the kernel takes its own reference, the
 *     backend keeps none;
 *   - no dirty log, no busy-loop timeout, no protocol features, no
 *     inflight area, no net_set_backend: those ops are NULL (-EOPNOTSUPP).
 */
#ifndef UVHOST_VDPA_H
#define UVHOST_VDPA_H

#include <stdint.h>

#include "vhost.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Virtio device status bits (virtio 1.2, 2.1). */
#define UVH_VDPA_S_ACKNOWLEDGE	0x01u
#define UVH_VDPA_S_DRIVER	0x02u
#define UVH_VDPA_S_DRIVER_OK	0x04u
#define UVH_VDPA_S_FEATURES_OK	0x08u
#define UVH_VDPA_S_NEEDS_RESET	0x40u
#define UVH_VDPA_S_FAILED	0x80u

/** vhost backend feature bit numbers (as VHOST_BACKEND_F_*: the mask of
 *  IOTLB_MSG_V2 is 1 << 1 = 0x2). */
#define UVH_VDPA_BACKEND_F_IOTLB_MSG_V2			1
#define UVH_VDPA_BACKEND_F_IOTLB_BATCH			2
#define UVH_VDPA_BACKEND_F_IOTLB_ASID			3
#define UVH_VDPA_BACKEND_F_SUSPEND			4
#define UVH_VDPA_BACKEND_F_RESUME			5
#define UVH_VDPA_BACKEND_F_ENABLE_AFTER_DRIVER_OK	6
#define UVH_VDPA_BACKEND_F_IOTLB_PERSIST		8

/** Most regions one memory table may hold (the kernel's IOTLB holds 2048
 * entries by default, and one region may take several). */
#define UVH_VDPA_MAX_REGIONS	509u

/** What the kernel said about a vhost-vdpa device. */
struct uvh_vdpa_info {
	uint32_t device_id;		/**< virtio device id (1 = net, 2 = block) */
	uint32_t nvqs;			/**< rings (VHOST_VDPA_GET_VQS_COUNT) */
	uint16_t vq_num_max;		/**< largest ring (VHOST_VDPA_GET_VRING_NUM) */
	uint32_t config_size;		/**< bytes of config space */
	uint64_t features;		/**< device features (VHOST_GET_FEATURES) */
	uint64_t backend_features_offered;	/**< 1 << UVH_VDPA_BACKEND_F_* */
	uint64_t backend_features;	/**< acked (set at open or by set_backend_features) */
	struct uvh_vhost_iova_range iova_range;
};

/**
 * Adopt a vhost-vdpa fd opened elsewhere; the backend works on a dup() of
 * @fd (yours stays yours). @known NULL: the device's facts are asked of
 * the kernel and the backend features acked as at open. @known non-NULL:
 * nothing is asked at open; the facts, and the backend features already
 * acked on this fd, are taken from *known (for a helper that set the fd up
 * and for tests). 0 with *out set, or -EBADF, -ENOTTY (not vhost-vdpa),
 * -EOPNOTSUPP (no IOTLB_MSG_V2), -EINVAL (bad @known), -ENOMEM.
 */
int uvh_vhost_vdpa_open_fd(int fd, const struct uvh_vdpa_info *known,
			     struct uvh_vhost **out);

/** What the kernel answered at open (backend features: as acked now).
 *  -EOPNOTSUPP for a backend of another type. */
int uvh_vhost_vdpa_info(const struct uvh_vhost *b, struct uvh_vdpa_info *info);

/** Regions of the memory table as mapped now (0 after a reset);
 *  -EOPNOTSUPP for a backend of another type. */
int uvh_vhost_vdpa_mapped_regions(const struct uvh_vhost *b, unsigned int *n);

#ifdef __cplusplus
}
#endif

#endif
