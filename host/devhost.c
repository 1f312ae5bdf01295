/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the vhost-user device host. See devhost.h.
 *
 * This file: features, config/status, the back-end channel and IOTLB, the
 * session, the handler table and the public API. The rings are in
 * devhost_rings.c, memory and dirty log in devhost_mem.c,
 * device state and inflight area in devhost_state.c; what they
 * share is in devhost_internal.h.
 *
 * Locking: v->lock serialises every control-path entry (a request being
 * handled, connect, disconnect, the end of a watched connection). The
 * data path never takes it: what an engine reads of a running ring (its
 * uvh_vq, fds, enabled) is changed only on that engine's thread, through
 * uvh_engine_call().
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "util.h"
#include "backend_req.h"
#include "devhost_internal.h"

/* Protocol features the device host implements itself. */
#define VUD_PROTOCOL_FEATURES ( \
	UVH_BIT(UVH_PROTOCOL_F_LOG_SHMFD) | \
	UVH_BIT(UVH_PROTOCOL_F_REPLY_ACK) | \
	UVH_BIT(UVH_PROTOCOL_F_BACKEND_REQ) | \
	UVH_BIT(UVH_PROTOCOL_F_BACKEND_SEND_FD) | \
	UVH_BIT(UVH_PROTOCOL_F_INFLIGHT_SHMFD) | \
	UVH_BIT(UVH_PROTOCOL_F_RESET_DEVICE) | \
	UVH_BIT(UVH_PROTOCOL_F_CONFIGURE_MEM_SLOTS) | \
	UVH_BIT(UVH_PROTOCOL_F_STATUS))

/* ---- features --------------------------------------------------------------------- */

static uint64_t offered_features(struct uvh_devhost *v)
{
	uint64_t f = v->ops->features(v->dev);

	/* IOMMU_PLATFORM only if the device offers it: the rings then
	 * translate IOVAs through the IOTLB (misses go out on the back-end
	 * channel, which the front-end must then have set up). */
	return f | UVH_BIT(UVH_F_PROTOCOL_FEATURES) | UVH_BIT(UVH_F_LOG_ALL);
}

static int h_get_features(void *dev, uint64_t *features)
{
	*features = offered_features(dev);
	return 0;
}

static int h_set_features(void *dev, uint64_t features)
{
	struct uvh_devhost *v = dev;
	bool had_log = log_all(v);
	uint64_t changed = features ^ v->features;
	int ret;

	/* Running rings took their features at start (and the device sized
	 * its headers from them): only LOG_ALL, which they get through the
	 * log, may change under them (QEMU's migration start and end). */
	if ((changed & ~UVH_BIT(UVH_F_LOG_ALL)) && uvh__devhost_any_running(v)) {
		UVH_ERR("%s: SET_FEATURES changes 0x%" PRIx64 " while rings run", v->name,
			(uint64_t)(changed & ~UVH_BIT(UVH_F_LOG_ALL)));
		return -EBUSY;
	}
	if (v->ops->set_features) {
		ret = v->ops->set_features(v->dev, features);
		if (ret)
			return ret < 0 ? ret : -EIO;
	}
	v->features = features;
	if (had_log != log_all(v) && v->log)
		uvh__devhost_for_each_running(v, uvh__devhost_set_log_on_queue, log_all(v) ? v->log : NULL);
	/* Without PROTOCOL_FEATURES there is no SET_VRING_ENABLE: every
	 * ring is enabled now (backend_req.c does the same). */
	if (!(features & UVH_BIT(UVH_F_PROTOCOL_FEATURES))) {
		for (uint32_t i = 0; i < v->nq; i++)
			if (!v->qs[i].running)
				v->qs[i].enabled = true;
		uvh__devhost_for_each_running(v, uvh__devhost_set_enabled_on_queue, (void *)1);
	}
	return 0;
}

static int h_get_protocol_features(void *dev, uint64_t *pf)
{
	struct uvh_devhost *v = dev;
	uint64_t f = VUD_PROTOCOL_FEATURES;

	if (v->ops->save_state && v->ops->load_state)
		f |= UVH_BIT(UVH_PROTOCOL_F_DEVICE_STATE);
	if (v->nq > 2)
		f |= UVH_BIT(UVH_PROTOCOL_F_MQ);
	if (v->ops->protocol_features)
		f |= v->ops->protocol_features(v->dev);
	/* CONFIG is the device's choice (its protocol_features), not implied
	 * by get_config: a front-end that never reads config space (QEMU's
	 * vhost-user-net) warns about a back-end offering it. Without
	 * get_config there is nothing to answer GET_CONFIG with. */
	if (!v->ops->get_config)
		f &= ~UVH_BIT(UVH_PROTOCOL_F_CONFIG);
	*pf = f;
	return 0;
}

static int h_set_protocol_features(void *dev, uint64_t pf)
{
	struct uvh_devhost *v = dev;

	__atomic_store_n(&v->protocol_features, pf, __ATOMIC_RELAXED);
	if (v->ops->set_protocol_features)
		v->ops->set_protocol_features(v->dev, pf);
	return 0;
}

static int h_set_owner(void *dev)
{
	(void)dev;
	return 0;
}

static int h_get_queue_num(void *dev, uint64_t *num)
{
	struct uvh_devhost *v = dev;

	*num = v->ops->queue_num_reply ? v->ops->queue_num_reply(v->dev) : v->nq;
	return 0;
}

/* ---- config, net, status ---------------------------------------------------------- */

static int h_get_config(void *dev, uint32_t offset, uint32_t size, uint32_t flags, uint8_t *buf)
{
	struct uvh_devhost *v = dev;

	(void)flags;
	if (!v->ops->get_config)
		return -ENOSYS;
	return v->ops->get_config(v->dev, offset, size, buf);
}

static int h_set_config(void *dev, uint32_t offset, uint32_t size, uint32_t flags,
			const uint8_t *buf)
{
	struct uvh_devhost *v = dev;

	(void)flags;
	if (!v->ops->set_config)
		return -ENOSYS;
	return v->ops->set_config(v->dev, offset, size, buf);
}

/* The device's own requests: passed on as they came. */
static int device_request(struct uvh_devhost *v, uint32_t request, const void *payload,
			  uint32_t size)
{
	return v->ops->device_request ? v->ops->device_request(v->dev, request, payload, size) :
					-ENOSYS;
}

static int h_send_rarp(void *dev, const uint8_t mac[6])
{
	return device_request(dev, UVH_REQ_SEND_RARP, mac, 6);
}

static int h_net_set_mtu(void *dev, uint16_t mtu)
{
	uint64_t v = mtu;

	return device_request(dev, UVH_REQ_NET_SET_MTU, &v, sizeof(v));
}

static int h_set_status(void *dev, uint8_t status)
{
	struct uvh_devhost *v = dev;

	__atomic_store_n(&v->status, status, __ATOMIC_RELAXED);
	if (v->ops->set_status)
		v->ops->set_status(v->dev, status);
	return 0;
}

static int h_get_status(void *dev, uint8_t *status)
{
	struct uvh_devhost *v = dev;

	*status = v->status;
	return 0;
}

/* ---- back-end channel, IOTLB ------------------------------------------------------ */

static int h_set_backend_req_fd(void *dev, int fd)
{
	struct uvh_devhost *v = dev;
	struct uvh_backend_chan *chan, *old = v->chan;

	chan = uvh_backend_chan_new(fd, v->protocol_features);	/* fd taken */
	if (!chan)
		return -errno;
	/* pairs with the acquire load of an engine reporting an IOTLB miss;
	 * the old channel goes once no burst can still be using it */
	__atomic_store_n(&v->chan, chan, __ATOMIC_RELEASE);
	if (old) {
		uvh__devhost_quiesce(v);
		uvh_backend_chan_free(old);
	}
	return 0;
}

static int h_iotlb_msg(void *dev, const struct uvh_iotlb *msg)
{
	struct uvh_devhost *v = dev;

	int ret;

	if (!v->iotlb) {
		v->iotlb = uvh_iotlb_new(0);
		if (!v->iotlb)
			return -ENOMEM;
	}
	ret = uvh_iotlb_apply(v->iotlb, msg);
	if (ret || msg->type != UVH_IOTLB_UPDATE ||
	    !(v->features & UVH_BIT(UVH_VIRTIO_F_IOMMU_PLATFORM)))
		return ret;
	/* A ring may be waiting for this entry (it idles after a miss):
	 * make its engine sweep it, as a guest kick would. A kick that
	 * finds nothing new costs one empty burst. */
	for (uint32_t i = 0; i < v->nq; i++) {
		struct uvh_devhost_queue *q = &v->qs[i];

		if (q->running && q->kick_fd >= 0 && eventfd_write(q->kick_fd, 1) < 0)
			UVH_WARN("%s: vring %u: kick after IOTLB update: %s", v->name, i,
				 strerror(errno));
	}
	return 0;
}

/* ---- session ------------------------------------------------------------------------ */

/* Back to a fresh device, keeping the connection (RESET_DEVICE). */
static void device_reset(struct uvh_devhost *v)
{
	uvh__devhost_stop_all(v);
	for (uint32_t i = 0; i < v->nq; i++)
		uvh__devhost_queue_clear(&v->qs[i]);
	if (v->ops->reset)
		v->ops->reset(v->dev);
	v->features = 0;
	__atomic_store_n(&v->status, 0, __ATOMIC_RELAXED);
	uvh__devhost_drop_inflight(v);
	if (v->iotlb)
		uvh_iotlb_flush(v->iotlb);
}

static int h_reset_device(void *dev)
{
	device_reset(dev);
	return 0;
}

static int h_reset_owner(void *dev)
{
	device_reset(dev);
	return 0;
}

/* The whole session goes: device state and the connection's resources. */
static void session_end(struct uvh_devhost *v)
{
	device_reset(v);
	uvh__devhost_drop_memory(v);
	uvh__devhost_drop_log(v);
	uvh__devhost_xfer_drop(v);
	v->xfer_result = 0;
	uvh_iotlb_free(v->iotlb);
	v->iotlb = NULL;
	uvh_backend_chan_free(v->chan);
	v->chan = NULL;
	__atomic_store_n(&v->protocol_features, 0, __ATOMIC_RELAXED);
	uvh_backend_req_free(v->req);	/* closes the socket */
	__atomic_store_n(&v->req, NULL, __ATOMIC_RELAXED);
	__atomic_store_n(&v->local, false, __ATOMIC_RELAXED);
}

static const struct uvh_backend_handler_ops dh_handler_ops = {
	.set_owner = h_set_owner,
	.reset_owner = h_reset_owner,
	.get_features = h_get_features,
	.set_features = h_set_features,
	.get_protocol_features = h_get_protocol_features,
	.set_protocol_features = h_set_protocol_features,
	.set_mem_table = uvh__devhost_h_set_mem_table,
	.set_log_base = uvh__devhost_h_set_log_base,
	.set_log_fd = uvh__devhost_h_set_log_fd,
	.set_vring_num = uvh__devhost_h_set_vring_num,
	.set_vring_addr = uvh__devhost_h_set_vring_addr,
	.set_vring_base = uvh__devhost_h_set_vring_base,
	.get_vring_base = uvh__devhost_h_get_vring_base,
	.get_vring_base_skip_drain = uvh__devhost_h_get_vring_base,	/* nothing is ever held back */
	.set_device_state_fd = uvh__devhost_h_set_device_state_fd,
	.check_device_state = uvh__devhost_h_check_device_state,
	.set_vring_kick = uvh__devhost_h_set_vring_kick,
	.set_vring_call = uvh__devhost_h_set_vring_call,
	.set_vring_err = uvh__devhost_h_set_vring_err,
	.get_queue_num = h_get_queue_num,
	.set_vring_enable = uvh__devhost_h_set_vring_enable,
	.send_rarp = h_send_rarp,
	.net_set_mtu = h_net_set_mtu,
	.set_backend_req_fd = h_set_backend_req_fd,
	.iotlb_msg = h_iotlb_msg,
	.get_config = h_get_config,
	.set_config = h_set_config,
	.get_inflight_fd = uvh__devhost_h_get_inflight_fd,
	.set_inflight_fd = uvh__devhost_h_set_inflight_fd,
	.reset_device = h_reset_device,
	.get_max_mem_slots = uvh__devhost_h_get_max_mem_slots,
	.add_mem_reg = uvh__devhost_h_add_mem_reg,
	.rem_mem_reg = uvh__devhost_h_rem_mem_reg,
	.set_status = h_set_status,
	.get_status = h_get_status,
};

/* ---- public API ---------------------------------------------------------------------- */

struct uvh_devhost *uvh_devhost_new(const struct uvh_devhost_opts *opts)
{
	const struct uvh_devhost_device_ops *ops;
	struct uvh_devhost *v;
	uint32_t nq, idx;

	if (!opts || !(ops = opts->ops) || !ops->features || !ops->num_queues ||
	    !ops->queue_start || !ops->process || !opts->engines || !opts->nengines ||
	    opts->nengines > MAX_ENGINES) {
		UVH_ERR("dh: invalid options");
		errno = EINVAL;
		return NULL;
	}
	for (unsigned int k = 0; k < opts->nengines; k++)
		if (!opts->engines[k]) {
			errno = EINVAL;
			return NULL;
		}
	nq = ops->num_queues(opts->dev);
	if (!nq || nq > UVH_DEVHOST_MAX_QUEUES) {
		UVH_ERR("dh: the device declares %u rings", nq);
		errno = EINVAL;
		return NULL;
	}
	v = calloc(1, sizeof(*v));
	if (!v)
		goto nomem;
	v->qs = calloc(nq, sizeof(*v->qs));
	v->name = strdup(opts->name ? opts->name : "dh");
	if (!v->qs || !v->name)
		goto nomem;
	v->ops = ops;
	v->dev = opts->dev;
	v->nengines = opts->nengines;
	memcpy(v->engines, opts->engines, opts->nengines * sizeof(v->engines[0]));
	v->strict_order = opts->strict_order;
	v->nq = nq;
	v->log_fd = -1;
	pthread_mutex_init(&v->lock, NULL);
	for (uint32_t i = 0; i < nq; i++) {
		struct uvh_devhost_queue *q = &v->qs[i];

		q->dh = v;
		q->index = i;
		q->kick_fd = q->call_fd = q->err_fd = -1;
		idx = ops->engine_for_queue ? ops->engine_for_queue(v->dev, i, v->nengines) :
					      (i / 2) % v->nengines;
		if (idx >= v->nengines) {
			UVH_WARN("%s: engine %u for vring %u is out of range: using 0",
				 v->name, idx, i);
			idx = 0;
		}
		q->engine = v->engines[idx];
	}
	return v;

nomem:
	if (v) {
		free(v->qs);
		free(v->name);
		free(v);
	}
	errno = ENOMEM;
	return NULL;
}

void uvh_devhost_free(struct uvh_devhost *v)
{
	if (!v)
		return;
	uvh_devhost_disconnect(v);
	pthread_mutex_destroy(&v->lock);
	free(v->qs);
	free(v->name);
	free(v);
}

int uvh_devhost_connect(struct uvh_devhost *v, int fd)
{
	struct uvh_backend_req *req;

	if (!v || fd < 0) {
		if (fd >= 0)
			close(fd);
		return -EINVAL;
	}
	pthread_mutex_lock(&v->lock);
	if (v->req) {
		pthread_mutex_unlock(&v->lock);
		close(fd);
		return -EBUSY;
	}
	req = uvh_backend_req_new(fd, &dh_handler_ops, v, v->nq);
	if (!req) {
		int ret = -errno;

		pthread_mutex_unlock(&v->lock);
		return ret;
	}
	/* pairs with the acquire in uvh_devhost_handle(): another thread may
	 * serve the connection; it sees the request handler whole */
	__atomic_store_n(&v->req, req, __ATOMIC_RELEASE);
	stat_add(&v->connections, 1);
	pthread_mutex_unlock(&v->lock);
	UVH_INFO("%s: front-end connected", v->name);
	return 0;
}

int uvh_devhost_handle(struct uvh_devhost *v, int timeout_ms)
{
	struct uvh_backend_req *req;
	struct uvh_endpoint *ep;
	int ret;

	if (!v)
		return -ENOTCONN;
	/* the serving thread may not be the one that connected (acquire:
	 * pairs with uvh_devhost_connect); only it ends the connection */
	req = __atomic_load_n(&v->req, __ATOMIC_ACQUIRE);
	if (!req)
		return -ENOTCONN;
	if (__atomic_load_n(&v->watcher, __ATOMIC_RELAXED))
		return -EBUSY;
	ep = uvh_backend_req_endpoint(req);
	ret = uvh_endpoint_wait(ep, timeout_ms);
	if (ret <= 0)
		return ret;
	pthread_mutex_lock(&v->lock);
	ret = uvh_backend_req_handle(req);
	pthread_mutex_unlock(&v->lock);
	if (ret < 0)
		return ret;
	stat_add(&v->requests, 1);
	return 1;
}

/* A watched connection ended: tear it down on the watching engine. */
static void watched_end(struct uvh_devhost *v, int err)
{
	void (*cb)(struct uvh_devhost *, int, void *);
	void *opaque;

	pthread_mutex_lock(&v->lock);
	cb = v->on_disconnect;
	opaque = v->on_disconnect_opaque;
	__atomic_store_n(&v->watcher, NULL, __ATOMIC_RELAXED);
	if (v->req)
		session_end(v);
	pthread_mutex_unlock(&v->lock);
	UVH_INFO("%s: front-end gone (%s)", v->name, strerror(-err));
	if (cb)
		cb(v, err, opaque);
}

static void watch_on_msg(struct uvh_engine_watch *w, struct uvh_msg *msg)
{
	struct uvh_devhost *v = w->opaque;
	int ret;

	pthread_mutex_lock(&v->lock);
	ret = v->req ? uvh_backend_req_process(v->req, msg) : -ENOTCONN;
	if (ret == -ENOTCONN)
		uvh_msg_close_fds(msg);
	pthread_mutex_unlock(&v->lock);
	if (ret >= 0) {
		stat_add(&v->requests, 1);
		return;
	}
	/* From inside on_msg the unwatch is immediate. */
	uvh_engine_unwatch(w->engine, w);
	watched_end(v, ret);
}

static void watch_on_close(struct uvh_engine_watch *w, int err)
{
	watched_end(w->opaque, err);
}

int uvh_devhost_watch(struct uvh_devhost *v, struct uvh_engine *e,
		  void (*on_disconnect)(struct uvh_devhost *v, int err, void *opaque),
		  void *opaque)
{
	int ret;

	if (!v || !e)
		return -EINVAL;
	pthread_mutex_lock(&v->lock);
	if (!v->req) {
		pthread_mutex_unlock(&v->lock);
		return -ENOTCONN;
	}
	if (v->watcher) {
		pthread_mutex_unlock(&v->lock);
		return -EBUSY;
	}
	memset(&v->watch, 0, sizeof(v->watch));
	v->watch.ep = uvh_backend_req_endpoint(v->req);
	v->watch.on_msg = watch_on_msg;
	v->watch.on_close = watch_on_close;
	v->watch.opaque = v;
	v->on_disconnect = on_disconnect;
	v->on_disconnect_opaque = opaque;
	__atomic_store_n(&v->watcher, e, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&v->lock);
	/* Not under the lock: the engine's first message takes it. */
	ret = uvh_engine_watch(e, &v->watch);
	if (ret) {
		pthread_mutex_lock(&v->lock);
		__atomic_store_n(&v->watcher, NULL, __ATOMIC_RELAXED);
		pthread_mutex_unlock(&v->lock);
	}
	return ret;
}

void uvh_devhost_disconnect(struct uvh_devhost *v)
{
	struct uvh_engine *w;

	if (!v)
		return;
	w = __atomic_load_n(&v->watcher, __ATOMIC_ACQUIRE);
	/* Unwatch before taking the lock: the engine may be inside on_msg,
	 * waiting for it. -ENOENT: the watch already ended on its own. */
	if (w && uvh_engine_unwatch(w, &v->watch) == 0) {
		pthread_mutex_lock(&v->lock);
		__atomic_store_n(&v->watcher, NULL, __ATOMIC_RELAXED);
		pthread_mutex_unlock(&v->lock);
	}
	pthread_mutex_lock(&v->lock);
	if (v->req || v->local) {
		session_end(v);
		UVH_INFO("%s: disconnected", v->name);
	}
	pthread_mutex_unlock(&v->lock);
}

bool uvh_devhost_connected(const struct uvh_devhost *v)
{
	return v && (__atomic_load_n(&v->req, __ATOMIC_ACQUIRE) != NULL ||
		     __atomic_load_n(&v->local, __ATOMIC_RELAXED));
}

/* ---- in-process sessions (the soft backend) ---------------------------------------- */

int uvh_devhost_connect_local(struct uvh_devhost *v)
{
	if (!v)
		return -EINVAL;
	pthread_mutex_lock(&v->lock);
	if (v->req || v->local) {
		pthread_mutex_unlock(&v->lock);
		return -EBUSY;
	}
	__atomic_store_n(&v->local, true, __ATOMIC_RELAXED);
	stat_add(&v->connections, 1);
	pthread_mutex_unlock(&v->lock);
	return 0;
}

const struct uvh_backend_handler_ops *uvh_devhost_handler_ops(void)
{
	return &dh_handler_ops;
}

int uvh_devhost_local_call(struct uvh_devhost *v, int (*fn)(void *dev, void *arg), void *arg)
{
	int ret;

	if (!v || !fn)
		return -EINVAL;
	pthread_mutex_lock(&v->lock);
	ret = v->local ? fn(v, arg) : -ENOTCONN;
	pthread_mutex_unlock(&v->lock);
	return ret;
}

int uvh_devhost_fd(const struct uvh_devhost *v)
{
	struct uvh_backend_req *req = v ? __atomic_load_n(&v->req, __ATOMIC_RELAXED) : NULL;

	return req ? uvh_backend_req_endpoint(req)->fd : -1;
}

const char *uvh_devhost_name(const struct uvh_devhost *v)
{
	return v->name;
}

void *uvh_devhost_dev(const struct uvh_devhost *v)
{
	return v->dev;
}

uint32_t uvh_devhost_num_queues(const struct uvh_devhost *v)
{
	return v->nq;
}

struct uvh_devhost_queue *uvh_devhost_queue(struct uvh_devhost *v, uint32_t index)
{
	return v && index < v->nq ? &v->qs[index] : NULL;
}

bool uvh_devhost_queue_running(const struct uvh_devhost_queue *q)
{
	return __atomic_load_n(&q->running, __ATOMIC_RELAXED);
}

struct uvh_engine *uvh_devhost_queue_engine(const struct uvh_devhost *v, uint32_t index)
{
	return v && index < v->nq ? v->qs[index].engine : NULL;
}

uint64_t uvh_devhost_features(const struct uvh_devhost *v)
{
	return __atomic_load_n(&v->features, __ATOMIC_RELAXED);
}

uint64_t uvh_devhost_protocol_features(const struct uvh_devhost *v)
{
	return __atomic_load_n(&v->protocol_features, __ATOMIC_RELAXED);
}

uint8_t uvh_devhost_status(const struct uvh_devhost *v)
{
	return __atomic_load_n(&v->status, __ATOMIC_RELAXED);
}

struct uvh_backend_chan *uvh_devhost_backend_chan(struct uvh_devhost *v)
{
	return v->chan;
}

void uvh_devhost_stats(const struct uvh_devhost *v, struct uvh_devhost_stats *st)
{
	st->connections = __atomic_load_n(&v->connections, __ATOMIC_RELAXED);
	st->requests = __atomic_load_n(&v->requests, __ATOMIC_RELAXED);
	st->mem_updates = __atomic_load_n(&v->mem_updates, __ATOMIC_RELAXED);
	st->queue_starts = __atomic_load_n(&v->queue_starts, __ATOMIC_RELAXED);
	st->queue_errors = __atomic_load_n(&v->queue_errors, __ATOMIC_RELAXED);
	st->mem_regions = __atomic_load_n(&v->mem_regions, __ATOMIC_RELAXED);
	st->mem_bytes = __atomic_load_n(&v->mem_bytes, __ATOMIC_RELAXED);
}
