/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the vhost-user device host's state that outlives the rings:
 * the device state transfer of a migration (SET_DEVICE_STATE_FD,
 * CHECK_DEVICE_STATE) and the inflight area (GET/SET_INFLIGHT_FD).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"
#include "inflight.h"
#include "state_xfer.h"
#include "devhost_internal.h"

/* ---- device state (migration) ----------------------------------------------------- */

#define STATE_TIMEOUT_MS	10000

void uvh__devhost_xfer_drop(struct uvh_devhost *v)
{
	uvh_state_xfer_free(v->xfer);
	v->xfer = NULL;
}

int uvh__devhost_h_set_device_state_fd(void *dev, uint32_t direction, uint32_t phase, int fd,
				   int *out_fd)
{
	struct uvh_devhost *v = dev;
	uint8_t buf[4096];
	int ret;

	*out_fd = -1;	/* we use the front-end's pipe */
	if (!v->ops->save_state || !v->ops->load_state || phase != UVH_DEVICE_STATE_STOPPED) {
		uvh_close_fd(&fd);
		return -ENOSYS;
	}
	if (uvh__devhost_any_running(v)) {
		UVH_ERR("%s: device state transfer with rings running", v->name);
		uvh_close_fd(&fd);
		return -EBUSY;
	}
	uvh__devhost_xfer_drop(v);	/* a transfer the front-end gave up on */
	v->xfer_result = -EINPROGRESS;
	v->xfer_dir = direction;
	if (direction == UVH_DEVICE_STATE_SAVE) {
		ret = v->ops->save_state(v->dev, buf, sizeof(buf));
		if (ret < 0 || (size_t)ret > sizeof(buf)) {
			uvh_close_fd(&fd);
			v->xfer_result = ret < 0 ? ret : -EOVERFLOW;
			return v->xfer_result;
		}
		ret = uvh_state_xfer_save(&v->xfer, fd, buf, (size_t)ret, STATE_TIMEOUT_MS);
	} else {
		ret = uvh_state_xfer_load(&v->xfer, fd, sizeof(buf), STATE_TIMEOUT_MS);
	}
	if (ret)
		v->xfer_result = ret;
	return ret;
}

int uvh__devhost_h_check_device_state(void *dev)
{
	struct uvh_devhost *v = dev;
	const void *buf;
	size_t len;
	int ret;

	if (!v->xfer)
		return v->xfer_result ? v->xfer_result : -ENODATA;
	ret = uvh_state_xfer_finish(v->xfer, &buf, &len);
	if (!ret && v->xfer_dir == UVH_DEVICE_STATE_LOAD) {
		if (uvh__devhost_any_running(v))
			ret = -EBUSY;
		else
			ret = v->ops->load_state(v->dev, buf, len);
	}
	if (ret)
		UVH_ERR("%s: device state %s failed: %s", v->name,
			v->xfer_dir == UVH_DEVICE_STATE_SAVE ? "save" : "load", strerror(-ret));
	else
		UVH_INFO("%s: device state %s", v->name,
			 v->xfer_dir == UVH_DEVICE_STATE_SAVE ? "saved" : "loaded");
	uvh__devhost_xfer_drop(v);
	v->xfer_result = ret;
	return ret;
}

/* ---- inflight ---------------------------------------------------------------------- */

void uvh__devhost_drop_inflight(struct uvh_devhost *v)
{
	if (v->inflight_base)
		munmap(v->inflight_base, v->inflight_size);
	v->inflight_base = NULL;
	v->inflight_size = 0;
	v->inflight_nq = v->inflight_qs = 0;
}

int uvh__devhost_h_get_inflight_fd(void *dev, const struct uvh_inflight *in,
			       struct uvh_inflight *out, int *fdp)
{
	struct uvh_devhost *v = dev;
	bool packed = v->features & UVH_BIT(UVH_VIRTIO_F_RING_PACKED);
	size_t size;
	void *base;
	int fd;

	if (uvh__devhost_any_running(v))
		return -EBUSY;
	size = uvh_inflight_region_size(in->num_queues, in->queue_size, packed);
	if (!size)
		return -EINVAL;
	fd = memfd_create("uvhost-inflight", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size)) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	uvh_inflight_area_format(base, in->num_queues, in->queue_size, packed);
	uvh__devhost_drop_inflight(v);
	v->inflight_base = base;
	v->inflight_size = size;
	v->inflight_nq = in->num_queues;
	v->inflight_qs = in->queue_size;
	v->inflight_packed = packed;
	memset(out, 0, sizeof(*out));
	out->mmap_size = size;
	out->mmap_offset = 0;
	out->num_queues = in->num_queues;
	out->queue_size = in->queue_size;
	*fdp = fd;	/* the library closes it once sent; our mapping stays */
	return 0;
}

int uvh__devhost_h_set_inflight_fd(void *dev, const struct uvh_inflight *in, int fd)
{
	struct uvh_devhost *v = dev;
	bool packed = v->features & UVH_BIT(UVH_VIRTIO_F_RING_PACKED);
	size_t need = uvh_inflight_region_size(in->num_queues, in->queue_size, packed);
	long page = sysconf(_SC_PAGESIZE);
	struct stat st;
	void *base;
	int ret = 0;

	if (uvh__devhost_any_running(v))
		ret = -EBUSY;
	else if (fd < 0)
		ret = -EBADF;
	else if (!need || in->mmap_size < need || in->mmap_size > SIZE_MAX ||
		 in->mmap_offset % (uint64_t)page)
		ret = -EINVAL;
	else if (fstat(fd, &st))
		ret = -errno;
	else if (!S_ISREG(st.st_mode))
		ret = -EINVAL;
	else if ((uint64_t)st.st_size < in->mmap_offset ||
		 (uint64_t)st.st_size - in->mmap_offset < in->mmap_size)
		ret = -ENXIO;	/* would SIGBUS later */
	if (ret) {
		UVH_ERR("%s: inflight area refused: %s", v->name, strerror(-ret));
		if (fd >= 0)
			close(fd);
		return ret;
	}
	base = mmap(NULL, in->mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		    (off_t)in->mmap_offset);
	ret = base == MAP_FAILED ? -errno : 0;
	close(fd);
	if (ret)
		return ret;
	uvh__devhost_drop_inflight(v);
	v->inflight_base = base;
	v->inflight_size = in->mmap_size;
	v->inflight_nq = in->num_queues;
	v->inflight_qs = in->queue_size;
	v->inflight_packed = packed;
	return 0;
}
