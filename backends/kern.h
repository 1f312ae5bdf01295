/* SPDX-License-Identifier: MIT */
/*
 * uvhost: what only the kern backend (a /dev/vhost-* character device)
 * has, beyond backend.h's ops.
 *
 * Open with uvh_vhost_open("kern:/dev/vhost-net", ...) (or
 * "kern:/dev/vhost-vsock"); the functions below take that backend. Called
 * with a backend of another type they return -EOPNOTSUPP; on a kernel
 * without the ioctl (ENOTTY) too.
 *
 * What the kern backend does with backend.h's conventions:
 *   - ring index 0 and 1 only (one vhost fd = one queue pair for net, the
 *     rx/tx pair for vsock); anything else is -EINVAL before any ioctl;
 *   - vring desc/avail/used addresses are translated from guest-physical
 *     to the VMM's virtual addresses through the kept copy of the memory
 *     table (each area must lie inside one region, else -EFAULT), unless
 *     VIRTIO_F_ACCESS_PLATFORM (IOMMU_PLATFORM) was acked: then they are
 *     IOVAs and go to the kernel as given (it translates them through the
 *     IOTLB); log_gpa always goes as given (the kernel logs by gpa);
 *   - memory table: every region non-empty, no wrap, hva set, no two
 *     overlapping in gpa (-EINVAL), at most max_mem_regions (-E2BIG), all
 *     checked before the ioctl; the kept copy changes only when the
 *     kernel took the new table. add/remove set the whole table again;
 *     remove of a (gpa, size) that is not in the table is -ENOENT;
 *   - iotlb_msg: uaddr is the VMM's virtual address (as the kernel and
 *     the vhost-user IOTLB_MSG take it), passed on unchanged; written as
 *     struct vhost_msg_v2 once VHOST_BACKEND_F_IOTLB_MSG_V2 was set with
 *     set_backend_features, as struct vhost_msg before that. With
 *     ACCESS_PLATFORM acked, map at least each ring's used ring before
 *     net_set_backend: the kernel writes the used flags when the ring
 *     starts and fails with -EFAULT (after queueing a miss) otherwise;
 *     later misses come through iotlb_miss;
 *   - core ioctls fail with -errno as the kernel says (-ENOTTY: not a
 *     vhost device; -EPERM: SET_OWNER missing or another process owns it).
 */
#ifndef UVHOST_KERN_H
#define UVHOST_KERN_H

#include <stdbool.h>
#include <stdint.h>

#include "vhost.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Rings of one vhost fd (vhost-net: rx 0, tx 1; vhost-vsock: rx 0, tx 1). */
#define UVH_KERN_NUM_RINGS	2u
/** What get_max_mem_slots says when the vhost module's parameter cannot be read. */
#define UVH_KERN_DEFAULT_MEM_REGIONS	64u

/**
 * VHOST_NEW_WORKER (Linux >= 6.5): one more kernel worker thread for this
 * device, its id in *id. After set_owner (before it the kernel says -EPERM
 * or -EINVAL). -EOPNOTSUPP where the kernel does not have it: before 6.5,
 * and on vhost-net and vhost-vsock up to at least 6.12, which leave the
 * worker ioctls to vhost-scsi (one worker serves both of their rings).
 */
int uvh_vhost_kern_new_worker(struct uvh_vhost *b, uint32_t *id);
/** VHOST_FREE_WORKER: free a worker no ring uses any more. */
int uvh_vhost_kern_free_worker(struct uvh_vhost *b, uint32_t id);
/**
 * VHOST_ATTACH_VRING_WORKER: ring @index (0 or 1) is served by worker @id
 * (before the ring is started with net_set_backend). -EOPNOTSUPP on
 * kernels without workers.
 */
int uvh_vhost_kern_attach_worker(struct uvh_vhost *b, uint32_t index, uint32_t id);
/** VHOST_GET_VRING_WORKER: the worker serving ring @index. */
int uvh_vhost_kern_get_worker(struct uvh_vhost *b, uint32_t index, uint32_t *id);

/**
 * vhost-vsock ("kern:/dev/vhost-vsock"): VHOST_VSOCK_SET_GUEST_CID. @cid
 * 3 .. 0xfffffffe (0-2 are reserved, -1 is "any"): -EINVAL otherwise;
 * -EADDRINUSE when another device has it; -EOPNOTSUPP on a vhost device
 * that is not vsock.
 */
int uvh_vhost_kern_vsock_set_guest_cid(struct uvh_vhost *b, uint64_t cid);
/** VHOST_VSOCK_SET_RUNNING: start (after the rings are set up) or stop the device. */
int uvh_vhost_kern_vsock_set_running(struct uvh_vhost *b, bool running);

#ifdef __cplusplus
}
#endif

#endif
