/* SPDX-License-Identifier: MIT */
/*
 * uvhost: virtio-net offloads between the guest's TX and another (or the
 * same) guest's RX: the TX header checked against what the sender
 * negotiated, then per receiver the header passed through, a partial
 * checksum completed, or a TSO frame cut into MSS-sized segments.
 *
 * Security model: the header and every byte of the frame are the guest's.
 * A header field is an offset or a size only after it was bounded by the
 * frame it came with (the DPDK CVE-2024-11614 class); the protocol headers
 * a segmentation needs are copied out of guest memory once, parsed from
 * the copy, and the segments are built from that copy plus slices of the
 * guest's buffers, so a guest that rewrites its TX buffers meanwhile can
 * only hurt its own frames. Nothing is ever written into a TX chain.
 */
#include <string.h>

#include "util.h"
#include "net_internal.h"

#define ETH_HLEN	14u
#define VLAN_HLEN	4u
#define ETH_P_IP	0x0800
#define ETH_P_IPV6	0x86dd
#define ETH_P_8021Q	0x8100
#define IPPROTO_TCP_	6
#define TCP_FIN		0x01
#define TCP_PSH		0x08
#define TCP_CWR		0x80

/* ---- checks on the sender's side ------------------------------------------------ */

static inline bool has(const struct uvh_net_dev *dev, unsigned int bit)
{
	return dev->features & UVH_BIT(bit);
}

int net_tx_check_slow(struct net_ring *r, unsigned int i)
{
	struct uvh_net_dev *dev = r->dev;
	struct uvh_virtio_net_hdr *h = &r->thdr[i];
	uint32_t len = r->tlen[i];
	uint8_t gso = h->gso_type & (uint8_t)~UVH_VIRTIO_NET_HDR_GSO_ECN;

	/* RX-only flags from a driver mean nothing here: ignored */
	h->flags &= UVH_VIRTIO_NET_HDR_F_NEEDS_CSUM;
	if (h->flags & UVH_VIRTIO_NET_HDR_F_NEEDS_CSUM) {
		if (!has(dev, UVH_VIRTIO_NET_F_CSUM))
			return UVH_NET_DROP_CSUM_NOT_NEGOTIATED;
		if ((uint32_t)h->csum_start + h->csum_offset + 2u > len)
			return UVH_NET_DROP_BAD_CSUM;
	} else {
		h->csum_start = h->csum_offset = 0;
	}
	if (h->gso_type == UVH_VIRTIO_NET_HDR_GSO_NONE) {
		h->gso_size = h->hdr_len = 0;
		return 0;
	}
	switch (gso) {
	case UVH_VIRTIO_NET_HDR_GSO_TCPV4:
		if (!has(dev, UVH_VIRTIO_NET_F_HOST_TSO4))
			return UVH_NET_DROP_GSO_NOT_NEGOTIATED;
		break;
	case UVH_VIRTIO_NET_HDR_GSO_TCPV6:
		if (!has(dev, UVH_VIRTIO_NET_F_HOST_TSO6))
			return UVH_NET_DROP_GSO_NOT_NEGOTIATED;
		break;
	case UVH_VIRTIO_NET_HDR_GSO_UDP:
	case UVH_VIRTIO_NET_HDR_GSO_UDP_L4:
		return UVH_NET_DROP_GSO_NOT_NEGOTIATED;	/* UFO, USO: never offered */
	default:
		return UVH_NET_DROP_BAD_GSO;
	}
	if ((h->gso_type & UVH_VIRTIO_NET_HDR_GSO_ECN) && !has(dev, UVH_VIRTIO_NET_F_HOST_ECN))
		return UVH_NET_DROP_GSO_NOT_NEGOTIATED;
	/* the spec: a GSO frame MUST come with NEEDS_CSUM and its MSS; hdr_len
	 * is the driver's hint, not trusted for anything but this */
	if (!(h->flags & UVH_VIRTIO_NET_HDR_F_NEEDS_CSUM) || !h->gso_size || h->hdr_len > len)
		return UVH_NET_DROP_BAD_GSO;
	return 0;
}

/* ---- checksums ------------------------------------------------------------------- */

/*
 * Ones' complement sums are kept in memory order (16-bit words loaded as
 * they lie in memory, on any host byte order): folded and stored back the
 * same way they are right, and the pseudo-header's numbers are added as
 * their network-order images.
 */
static uint64_t csum_add(const uint8_t *p, size_t len, uint64_t s)
{
	uint64_t a = 0, b = 0, ca = 0, cb = 0, w, x;
	uint32_t w32;
	uint16_t v;

	/*
	 * 64-bit words with their carries counted apart: 2^64 - 1 is a
	 * multiple of 0xffff, so a sum kept modulo 2^64 - 1 (the carries added
	 * back) folds to the same 16 bits. Two chains for the pipeline.
	 */
	while (len >= 16) {
		/* the frame was just written by the guest's core: fetch ahead */
		__builtin_prefetch(p + 512);
		memcpy(&w, p, 8);
		memcpy(&x, p + 8, 8);
		a += w;
		ca += a < w;
		b += x;
		cb += b < x;
		p += 16;
		len -= 16;
	}
	a += b;
	ca += (a < b) + cb;
	s = (s & 0xffffffffu) + (s >> 32) + (a & 0xffffffffu) + (a >> 32) + ca;
	if (len >= 8) {
		memcpy(&w, p, 8);
		s += (w & 0xffffffffu) + (w >> 32);
		p += 8;
		len -= 8;
	}
	if (len >= 4) {
		memcpy(&w32, p, 4);
		s += w32;
		p += 4;
		len -= 4;
	}
	if (len >= 2) {
		memcpy(&v, p, 2);
		s += v;
		p += 2;
		len -= 2;
	}
	if (len) {
		uint8_t t[2] = { *p, 0 };

		memcpy(&v, t, 2);
		s += v;
	}
	return s;
}

static uint16_t csum_fold(uint64_t s)
{
	s = (s & 0xffffffffu) + (s >> 32);
	s = (s & 0xffffffffu) + (s >> 32);
	s = (s & 0xffffu) + (s >> 16);
	s = (s & 0xffffu) + (s >> 16);
	s = (s & 0xffffu) + (s >> 16);
	return (uint16_t)s;
}

/* Add the sum of @len bytes at byte @off of @iov; a piece that starts at an
 * odd position of the summed range has its bytes in the other halves. */
static uint64_t csum_iov(const struct iovec *iov, unsigned int n, size_t off, size_t len,
			 uint64_t s)
{
	size_t pos = 0, chunk;
	uint16_t part;

	for (; n && len; iov++, n--) {
		if (off >= iov->iov_len) {
			off -= iov->iov_len;
			continue;
		}
		chunk = iov->iov_len - off;
		if (chunk > len)
			chunk = len;
		part = csum_fold(csum_add((const uint8_t *)iov->iov_base + off, chunk, 0));
		if (pos & 1)
			part = (uint16_t)(part << 8 | part >> 8);
		s += part;
		pos += chunk;
		len -= chunk;
		off = 0;
	}
	return s;
}

static inline uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* A network-order 16-bit number as a memory-order word. */
static inline uint64_t word(uint16_t v)
{
	uint8_t b[2];
	uint16_t w;

	put_be16(b, v);
	memcpy(&w, b, 2);
	return w;
}

/* ---- slices of a frame -------------------------------------------------------------- */

/* @len bytes at @off of @src as iovecs appended at @out[*k] (at most @max):
 * false when they do not fit. */
static bool slice(const struct iovec *src, unsigned int n, size_t off, size_t len,
		  struct iovec *out, unsigned int *k, unsigned int max)
{
	size_t chunk;

	for (; n && len; src++, n--) {
		if (off >= src->iov_len) {
			off -= src->iov_len;
			continue;
		}
		if (*k == max)
			return false;
		chunk = src->iov_len - off;
		if (chunk > len)
			chunk = len;
		out[*k].iov_base = (uint8_t *)src->iov_base + off;
		out[*k].iov_len = chunk;
		(*k)++;
		len -= chunk;
		off = 0;
	}
	return !len;
}

/* ---- one frame to one receiver --------------------------------------------------- */

/* Count a frame refused for @rx (its ring's drops, by reason). */
static void refuse(struct net_ring *rx, enum uvh_net_drop_reason why)
{
	net_count(&rx->drops, 1);
	net_why(rx, why);
}

/* NEEDS_CSUM for a receiver without GUEST_CSUM: the frame with the
 * checksum stored, the one patched field spliced in between two slices. */
static void deliver_csum_done(struct net_ring *rx, struct net_ring *tx, unsigned int i)
{
	const struct uvh_vq_chain *c = &tx->tch[i];
	const struct uvh_virtio_net_hdr *h = &tx->thdr[i];
	size_t skip = tx->dev->hdr_len;
	uint32_t len = tx->tlen[i], at = (uint32_t)h->csum_start + h->csum_offset;
	uint16_t sum;
	unsigned int k = 0;

	/* the field holds the pseudo-header's sum: sum it along (checked:
	 * at + 2 <= len) */
	sum = (uint16_t)~csum_fold(csum_iov(c->iov, c->nout, skip + h->csum_start,
					    len - h->csum_start, 0));
	if (!sum)
		sum = 0xffff;	/* -0: the same to a checker, never "no checksum" for UDP */
	if (!slice(c->iov, c->nout, skip, at, tx->oiov, &k, NET_OUT_IOV - 2)) {
		refuse(rx, UVH_NET_DROP_BAD_CSUM);
		return;
	}
	tx->oiov[k].iov_base = &sum;
	tx->oiov[k].iov_len = 2;
	k++;
	if (!slice(c->iov, c->nout, skip + at + 2, len - at - 2, tx->oiov, &k, NET_OUT_IOV)) {
		refuse(rx, UVH_NET_DROP_BAD_CSUM);
		return;
	}
	net_rx_put(rx, NULL, tx->oiov, k, 0, len);
}

/* Where a TSO frame's headers end, parsed from a copy (@hb, @n bytes of it). */
struct tso_frame {
	uint32_t l3, l4, hlen;
	bool v6;
};

static bool tso_parse(const uint8_t *hb, uint32_t n, uint8_t gso, struct tso_frame *t)
{
	uint32_t l3 = ETH_HLEN, ihl, doff;
	uint16_t type;

	if (n < ETH_HLEN)
		return false;
	type = be16(hb + 12);
	if (type == ETH_P_8021Q) {
		if (n < ETH_HLEN + VLAN_HLEN)
			return false;
		type = be16(hb + 16);
		l3 += VLAN_HLEN;
	}
	if (gso == UVH_VIRTIO_NET_HDR_GSO_TCPV4) {
		if (type != ETH_P_IP || n < l3 + 20 || (hb[l3] >> 4) != 4)
			return false;
		ihl = (hb[l3] & 0xfu) * 4u;
		/* the TCP protocol, no fragment (MF or an offset) */
		if (ihl < 20 || hb[l3 + 9] != IPPROTO_TCP_ || (be16(hb + l3 + 6) & 0x3fff))
			return false;
		t->v6 = false;
		t->l4 = l3 + ihl;
	} else {
		/* IPv6 without extension headers: TCP right after the fixed one */
		if (type != ETH_P_IPV6 || n < l3 + 40 || (hb[l3] >> 4) != 6 ||
		    hb[l3 + 6] != IPPROTO_TCP_)
			return false;
		t->v6 = true;
		t->l4 = l3 + 40;
	}
	if (n < t->l4 + 20)
		return false;
	doff = (hb[t->l4 + 12] >> 4) * 4u;
	if (doff < 20 || n < t->l4 + doff)
		return false;
	t->l3 = l3;
	t->hlen = t->l4 + doff;
	return true;
}

/*
 * A TSO frame for a receiver without the matching GUEST_TSO: MSS-sized
 * segments, each with its own copy of the headers (IPv4 total length, id
 * + k and header checksum; IPv6 payload length; TCP sequence + k * MSS,
 * FIN and PSH on the last segment only, CWR on the first only) and its
 * TCP checksum: left partial (NEEDS_CSUM, the pseudo-header's sum in the
 * field) for a receiver with GUEST_CSUM, complete for one without.
 */
static void deliver_segments(struct net_ring *rx, struct net_ring *tx, unsigned int i)
{
	struct uvh_net_dev *rdev = rx->dev;
	const struct uvh_vq_chain *c = &tx->tch[i];
	const struct uvh_virtio_net_hdr *h = &tx->thdr[i];
	uint8_t gso = h->gso_type & (uint8_t)~UVH_VIRTIO_NET_HDR_GSO_ECN;
	size_t skip = tx->dev->hdr_len;
	uint32_t len = tx->tlen[i], mss = h->gso_size, n, payload, nseg, k, off, seg;
	uint32_t seq, l4len;
	uint16_t id = 0;
	uint8_t *hb = tx->ohdr, tcpflags;
	bool partial = has(rdev, UVH_VIRTIO_NET_F_GUEST_CSUM);
	struct uvh_virtio_net_hdr oh;
	struct tso_frame t;
	uint64_t ps;

	n = len < NET_GSO_HDRS_MAX ? len : NET_GSO_HDRS_MAX;
	if (net_iov_read(c->iov, c->nout, skip, hb, n) != n || !tso_parse(hb, n, gso, &t) ||
	    t.hlen >= len) {
		refuse(rx, UVH_NET_DROP_BAD_GSO);
		return;
	}
	payload = len - t.hlen;
	nseg = (payload + mss - 1) / mss;
	if (nseg > NET_GSO_MAX_SEGS) {
		refuse(rx, UVH_NET_DROP_BAD_GSO);
		return;
	}
	/* every segment but the last is the biggest: it must fit the receiver */
	if (t.hlen + (mss < payload ? mss : payload) > rx->max_frame) {
		refuse(rx, UVH_NET_DROP_OVERSIZE);
		return;
	}
	memset(&oh, 0, sizeof(oh));
	if (partial) {
		oh.flags = UVH_VIRTIO_NET_HDR_F_NEEDS_CSUM;
		oh.csum_start = (uint16_t)t.l4;
		oh.csum_offset = 16;
	}
	seq = (uint32_t)be16(hb + t.l4 + 4) << 16 | be16(hb + t.l4 + 6);
	tcpflags = hb[t.l4 + 13];
	if (!t.v6)
		id = be16(hb + t.l3 + 4);
	for (k = 0, off = t.hlen; k < nseg; k++, off += seg) {
		unsigned int q = 1;
		uint8_t *tcp = hb + t.l4;
		uint16_t sum;

		seg = payload - k * mss < mss ? payload - k * mss : mss;
		l4len = t.hlen - t.l4 + seg;
		if (!t.v6) {
			uint8_t *ip = hb + t.l3;
			uint32_t ihl = t.l4 - t.l3;

			put_be16(ip + 2, (uint16_t)(ihl + l4len));
			put_be16(ip + 4, (uint16_t)(id + k));
			ip[10] = ip[11] = 0;
			sum = (uint16_t)~csum_fold(csum_add(ip, ihl, 0));
			memcpy(ip + 10, &sum, 2);
			/* pseudo-header: addresses, protocol, TCP length */
			ps = csum_add(ip + 12, 8, 0);
		} else {
			put_be16(hb + t.l3 + 4, (uint16_t)l4len);
			ps = csum_add(hb + t.l3 + 8, 32, 0);
		}
		ps += word(IPPROTO_TCP_) + word((uint16_t)l4len);
		put_be16(tcp + 4, (uint16_t)((seq + k * mss) >> 16));
		put_be16(tcp + 6, (uint16_t)(seq + k * mss));
		tcp[13] = tcpflags;
		if (k + 1 < nseg)
			tcp[13] &= (uint8_t)~(TCP_FIN | TCP_PSH);
		if (k)
			tcp[13] &= (uint8_t)~TCP_CWR;
		tcp[16] = tcp[17] = 0;
		if (partial) {
			sum = csum_fold(ps);
		} else {
			ps = csum_add(tcp, t.hlen - t.l4, ps);
			ps = csum_iov(c->iov, c->nout, skip + off, seg, ps);
			sum = (uint16_t)~csum_fold(ps);
		}
		memcpy(tcp + 16, &sum, 2);
		tx->oiov[0].iov_base = hb;
		tx->oiov[0].iov_len = t.hlen;
		if (!slice(c->iov, c->nout, skip + off, seg, tx->oiov, &q, NET_OUT_IOV)) {
			refuse(rx, UVH_NET_DROP_BAD_GSO);
			return;
		}
		net_rx_put(rx, &oh, tx->oiov, q, 0, t.hlen + seg);
	}
}

/* Would @rdev take this GSO type as is? */
static bool takes_gso(const struct uvh_net_dev *rdev, uint8_t gso_type)
{
	uint8_t gso = gso_type & (uint8_t)~UVH_VIRTIO_NET_HDR_GSO_ECN;

	if ((gso_type & UVH_VIRTIO_NET_HDR_GSO_ECN) && !has(rdev, UVH_VIRTIO_NET_F_GUEST_ECN))
		return false;
	if (gso == UVH_VIRTIO_NET_HDR_GSO_TCPV4)
		return has(rdev, UVH_VIRTIO_NET_F_GUEST_TSO4);
	return gso == UVH_VIRTIO_NET_HDR_GSO_TCPV6 && has(rdev, UVH_VIRTIO_NET_F_GUEST_TSO6);
}

void net_deliver_slow(struct net_ring *rx, struct net_ring *tx, unsigned int i)
{
	struct uvh_net_dev *rdev = rx->dev;
	const struct uvh_vq_chain *c = &tx->tch[i];
	const struct uvh_virtio_net_hdr *h = &tx->thdr[i];
	uint32_t len = tx->tlen[i];
	struct uvh_virtio_net_hdr oh;

	/* the receiver's features decide below: read only while its ring runs */
	if (unlikely(!net_rx_open(rx))) {
		net_drop(rx, UVH_NET_DROP_RING_OFF, 1);	/* as net_rx_put counts it */
		return;
	}
	if (!(tx->toff & (1u << i))) {
		/* no offload: too big for the receiver */
		refuse(rx, UVH_NET_DROP_OVERSIZE);
		return;
	}

	if (h->gso_type != UVH_VIRTIO_NET_HDR_GSO_NONE) {
		if (!takes_gso(rdev, h->gso_type)) {
			deliver_segments(rx, tx, i);
			return;
		}
		/* whole, header and all: GUEST_TSO implies GUEST_CSUM */
		oh = *h;
		net_rx_put(rx, &oh, c->iov, c->nout, tx->dev->hdr_len, len);
		return;
	}
	if (len > rx->max_frame) {
		refuse(rx, UVH_NET_DROP_OVERSIZE);
		return;
	}
	if (!(h->flags & UVH_VIRTIO_NET_HDR_F_NEEDS_CSUM)) {
		net_rx_put(rx, NULL, c->iov, c->nout, tx->dev->hdr_len, len);
		return;
	}
	if (!has(rdev, UVH_VIRTIO_NET_F_GUEST_CSUM)) {
		deliver_csum_done(rx, tx, i);
		return;
	}
	memset(&oh, 0, sizeof(oh));
	oh.flags = UVH_VIRTIO_NET_HDR_F_NEEDS_CSUM;
	oh.csum_start = h->csum_start;
	oh.csum_offset = h->csum_offset;
	net_rx_put(rx, &oh, c->iov, c->nout, tx->dev->hdr_len, len);
}

/* ---- features --------------------------------------------------------------------- */

int net_features_check(uint64_t f)
{
	const uint64_t guest_gso = UVH_BIT(UVH_VIRTIO_NET_F_GUEST_TSO4) |
				   UVH_BIT(UVH_VIRTIO_NET_F_GUEST_TSO6) |
				   UVH_BIT(UVH_VIRTIO_NET_F_GUEST_UFO);
	const uint64_t host_gso = UVH_BIT(UVH_VIRTIO_NET_F_HOST_TSO4) |
				  UVH_BIT(UVH_VIRTIO_NET_F_HOST_TSO6) |
				  UVH_BIT(UVH_VIRTIO_NET_F_HOST_UFO);

	/* the virtio spec's dependencies (5.1.3.1) */
	if ((f & guest_gso) && !(f & UVH_BIT(UVH_VIRTIO_NET_F_GUEST_CSUM)))
		return -1;
	if ((f & host_gso) && !(f & UVH_BIT(UVH_VIRTIO_NET_F_CSUM)))
		return -1;
	if ((f & UVH_BIT(UVH_VIRTIO_NET_F_GUEST_ECN)) &&
	    !(f & (UVH_BIT(UVH_VIRTIO_NET_F_GUEST_TSO4) | UVH_BIT(UVH_VIRTIO_NET_F_GUEST_TSO6))))
		return -1;
	if ((f & UVH_BIT(UVH_VIRTIO_NET_F_HOST_ECN)) &&
	    !(f & (UVH_BIT(UVH_VIRTIO_NET_F_HOST_TSO4) | UVH_BIT(UVH_VIRTIO_NET_F_HOST_TSO6))))
		return -1;
	return 0;
}
