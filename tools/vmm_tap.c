/* SPDX-License-Identifier: MIT */
/*
 * uvhost-vmm's tap and echo (vmm_tap.h). With the kern backend, vhost-net
 * writes the guest's TX frames into the tap's fd: they arrive on the tap
 * interface as if received from a wire. The echo reads them there with an
 * AF_PACKET socket and sends them back out of the interface, which hands
 * them to the tap's fd, where vhost-net's RX reads them for the guest.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vmm_tap.h"

int vmm_tap_open(const char *name, int hdr_len, int *out)
{
	struct ifreq ifr;
	int s, fd, ret;

	if (strlen(name) >= IFNAMSIZ)
		return -EINVAL;
	fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	/* the tap carries the virtio-net header: vhost-net passes it through */
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETVNETHDRSZ, &hdr_len) < 0)
		goto fail;
	/* a tap that is down refuses the frames vhost-net writes (EIO) */
	s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		goto fail;
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
		ret = -errno;
		close(s);
		close(fd);
		return ret;
	}
	ifr.ifr_flags |= IFF_UP;
	ret = ioctl(s, SIOCSIFFLAGS, &ifr) < 0 ? -errno : 0;
	close(s);
	if (ret) {
		close(fd);
		return ret;
	}
	*out = fd;
	return 0;
fail:
	ret = -errno;
	close(fd);
	return ret;
}

static void *echo_main(void *arg)
{
	struct vmm_echo *e = arg;
	uint8_t buf[65536];

	for (;;) {
		struct pollfd pfd[2] = {
			{ .fd = e->sock, .events = POLLIN },
			{ .fd = e->stop_fd, .events = POLLIN },
		};
		struct sockaddr_ll sll;
		socklen_t sl = sizeof(sll);
		ssize_t n;

		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			atomic_store(&e->error, errno);
			break;
		}
		if (pfd[1].revents)
			break;
		n = recvfrom(e->sock, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&sll, &sl);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			atomic_store(&e->error, errno);
			break;
		}
		/* our own writes come back to us as outgoing: not again */
		if (sll.sll_pkttype == PACKET_OUTGOING)
			continue;
		if (send(e->sock, buf, (size_t)n, 0) != n) {
			atomic_store(&e->error, errno);
			continue;
		}
		atomic_fetch_add(&e->looped, 1);
	}
	return NULL;
}

int vmm_echo_start(struct vmm_echo *e, const char *ifname, uint16_t ethertype)
{
	struct sockaddr_ll sll = {
		.sll_family = AF_PACKET,
		.sll_protocol = htons(ethertype),
	};
	int ret;

	e->sock = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ethertype));
	if (e->sock < 0)
		return -errno;
	sll.sll_ifindex = (int)if_nametoindex(ifname);
	if (!sll.sll_ifindex)
		return -errno;
	if (bind(e->sock, (struct sockaddr *)&sll, sizeof(sll)) < 0)
		return -errno;
	e->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (e->stop_fd < 0)
		return -errno;
	ret = pthread_create(&e->thread, NULL, echo_main, e);
	if (ret)
		return -ret;
	e->running = true;
	return 0;
}

void vmm_echo_stop(struct vmm_echo *e)
{
	uint64_t one = 1;

	if (e->running) {
		/* an eventfd write cannot fail here: the counter was 0 */
		(void)!write(e->stop_fd, &one, sizeof(one));
		pthread_join(e->thread, NULL);
		e->running = false;
	}
	if (e->sock >= 0)
		close(e->sock);
	if (e->stop_fd >= 0)
		close(e->stop_fd);
	e->sock = e->stop_fd = -1;
}
