#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Seed inputs for the fuzz targets, in each target's input format (see the
# comment at the top of each tests/fuzz/fuzz_*.c): the sessions a QEMU-like
# front-end runs (negotiation, memory table, rings started with real
# chains, rings stopped), well-formed rings for the chain walkers, and a
# reply for every front-end call. Writes corpus/<target>/seed-*; run.sh
# then grows the corpora and -merge=1 keeps them small.
#   tests/fuzz/gen_seeds.py [OUTDIR]   (default: tests/fuzz/corpus)
import os
import struct
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), 'corpus')

# vhost-user ids (proto/message.h)
GET_FEATURES, SET_FEATURES, SET_OWNER, RESET_OWNER, SET_MEM_TABLE = 1, 2, 3, 4, 5
SET_LOG_BASE, SET_LOG_FD, SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE = 6, 7, 8, 9, 10
GET_VRING_BASE, SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR = 11, 12, 13, 14
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, SET_VRING_ENABLE = 15, 16, 17, 18
SEND_RARP, NET_SET_MTU, SET_BACKEND_REQ_FD, IOTLB_MSG, GET_CONFIG = 19, 20, 21, 22, 24
GET_INFLIGHT_FD, SET_INFLIGHT_FD, RESET_DEVICE, GET_MAX_MEM_SLOTS = 31, 32, 34, 36
ADD_MEM_REG, REM_MEM_REG, SET_STATUS, GET_STATUS = 37, 38, 39, 40
F_VERSION_1, F_PROTOCOL, F_PACKED, F_EVENT_IDX, F_INDIRECT, F_MRG = 32, 30, 34, 29, 28, 15
PF = {'MQ': 0, 'LOG_SHMFD': 1, 'RARP': 2, 'REPLY_ACK': 3, 'NET_MTU': 4, 'BACKEND_REQ': 5,
      'CONFIG': 9, 'INFLIGHT_SHMFD': 12, 'RESET_DEVICE': 13, 'CONFIGURE_MEM_SLOTS': 15,
      'STATUS': 16}
ALL_PF = sum(1 << b for b in PF.values())
UVA = 0x7f0000000000
MEM = 0x100000


def bit(*bits):
    return sum(1 << b for b in bits)


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'seed-' + name), 'wb') as f:
        f.write(data)


def hdr(req, size, flags=1):
    return struct.pack('<III', req, flags, size)


# ---- ring contents (virtio 1.2 layouts) ---------------------------------------------

def split_ring(size, chains, desc_at, avail_at, used_at, mem):
    """chains: lists of (gpa, len, write) buffers; one chain per avail entry."""
    d = 0
    heads = []
    for ch in chains:
        heads.append(d)
        for k, (gpa, ln, w) in enumerate(ch):
            flags = (1 if k + 1 < len(ch) else 0) | (2 if w else 0)
            struct.pack_into('<QIHH', mem, desc_at + 16 * d, gpa, ln, flags, d + 1)
            d += 1
    struct.pack_into('<HH', mem, avail_at, 0, len(heads))
    for i, h in enumerate(heads):
        struct.pack_into('<H', mem, avail_at + 4 + 2 * i, h)
    return mem


def packed_ring(chains, desc_at, mem, wrap=1):
    s = 0
    for bid, ch in enumerate(chains):
        for k, (gpa, ln, w) in enumerate(ch):
            flags = (1 if k + 1 < len(ch) else 0) | (2 if w else 0)
            flags |= (1 << 7) if wrap else (1 << 15)
            struct.pack_into('<QIHH', mem, desc_at + 16 * s, gpa, ln, bid, flags)
            s += 1
    return mem


def frame(n=60):
    eth = bytes([0xff] * 6 + [2, 0, 0, 0, 0, 1] + [8, 0])
    return bytes(12) + (eth + bytes(range(256)) * 8)[:n]


# ---- fuzz_vq_split / fuzz_vq_packed ----------------------------------------------------

def vq_seed(packed, flags, sizesel, chains, indirect=None, raw_area=None):
    head = struct.pack('<BBB', sizesel, flags, 0)
    head += struct.pack('<HHH', 0x0000, 0x4000, 0x5000)	 # desc, driver, device offsets
    head += struct.pack('<HHBBBB', 0, 0, 3, 31, 127, 3)	# bases, wraps, burst, iovs, rounds
    area = bytearray(0x10000) if raw_area is None else raw_area
    if packed:
        packed_ring(chains, 0, area)
    else:
        split_ring(256, chains, 0, 0x4000, 0x5000, area)
    if indirect:
        at, table = indirect
        for i, (gpa, ln, w) in enumerate(table):
            fl = (1 if i + 1 < len(table) else 0) | (2 if w else 0)
            struct.pack_into('<QIHH', area, at + 16 * i, gpa, ln, fl, i + 1)
    # trim trailing zeroes: the target zero-fills
    data = bytes(area).rstrip(b'\0')
    return head + data


def gen_vq():
    base = 0x10000
    buf = lambda off, ln, w=False: (base + off, ln, w)
    plain = [[buf(0x8000, 64), buf(0x8100, 128, True)], [buf(0x8200, 100)],
             [buf(0x8300, 16), buf(0x8400, 16), buf(0x8500, 256, True)]]
    cross = [[buf(0x7f00, 0x200)], [buf(0xff00, 0x200, True)]]	# crosses the regions' seam
    # packed size selector: the smallest ring of at least 64 entries
    psel = min((v for v in range(255) if 1 + (v * 37) % 1024 >= 64),
               key=lambda v: 1 + (v * 37) % 1024)
    for packed, sel, name in ((False, 8, 'fuzz_vq_split'), (True, psel, 'fuzz_vq_packed')):
        write(name, 'plain', vq_seed(packed, 0, sel, plain))
        write(name, 'event-idx', vq_seed(packed, 1, sel, plain))
        write(name, 'in-order', vq_seed(packed, 4 | 32, sel, plain))
        write(name, 'reads-only-log', vq_seed(packed, 16 | 32 | 64, sel, plain))
        cs = vq_seed(packed, 0, sel, cross)
        write(name, 'cross-region', cs[:2] + b'\x01' + cs[3:])
        ind = [[(base + 0x9000, 48, False)]]
        s = bytearray(vq_seed(packed, 2, sel, ind,
                              indirect=(0x9000, [(base + 0x8000, 64, False),
                                                 (base + 0x8100, 64, True),
                                                 (base + 0x8200, 64, True)])))
        # mark the head descriptor INDIRECT (flags at +12 split, +14 packed)
        off = 15 + (14 if packed else 12)
        struct.pack_into('<H', s, off, struct.unpack_from('<H', s, off)[0] | 4)
        write(name, 'indirect', bytes(s))


# ---- fuzz_backend_req ------------------------------------------------------------------

def breq(req, payload=b'', need_reply=False, extra_fds=0, auto=True):
    f = (1 if need_reply else 0) | (0 if auto else 8) | (extra_fds << 4)
    return struct.pack('<BBH', req, f, len(payload)) + payload


def poke(memfd, off, data):
    return bytes([0xc0]) + struct.pack('<BIH', memfd, off, len(data)) + data


def ring_gpa(i):
    return i * 0x10000


def net_session(packed, pf=ALL_PF, stop=True):
    feats = bit(F_VERSION_1, F_PROTOCOL, F_EVENT_IDX, F_INDIRECT, F_MRG)
    if packed:
        feats |= bit(F_PACKED)
    s = breq(GET_FEATURES) + breq(GET_PROTOCOL_FEATURES)
    s += breq(SET_FEATURES, struct.pack('<Q', feats))
    s += breq(SET_PROTOCOL_FEATURES, struct.pack('<Q', pf))
    s += breq(SET_OWNER)
    s += breq(SET_MEM_TABLE, struct.pack('<II', 1, 0) + struct.pack('<QQQQ', 0, MEM, UVA, 0),
              need_reply=True)
    for i in (0, 1):
        g = ring_gpa(i)
        s += breq(SET_VRING_NUM, struct.pack('<II', i, 256))
        s += breq(SET_VRING_ADDR, struct.pack('<IIQQQQ', i, 0, UVA + g, UVA + g + 0x2000,
                                              UVA + g + 0x1000, 0))
        s += breq(SET_VRING_BASE, struct.pack('<II', i, 0x8000 if packed else 0))
        s += breq(SET_VRING_CALL, struct.pack('<Q', i))
        s += breq(SET_VRING_ERR, struct.pack('<Q', i))
        s += breq(SET_VRING_KICK, struct.pack('<Q', i), need_reply=True)
        s += breq(SET_VRING_ENABLE, struct.pack('<II', i, 1))
    # RX ring 0: 8 writable buffers; TX ring 1: 3 frames
    mem = bytearray(0x20000)
    rx = [[(0x80000 + k * 0x800, 0x800, True)] for k in range(8)]
    tx = [[(0x90000 + k * 0x100, 72, False)] for k in range(3)]
    if packed:
        packed_ring(rx, ring_gpa(0), mem)
        packed_ring(tx, ring_gpa(1), mem)
    else:
        split_ring(256, rx, ring_gpa(0), ring_gpa(0) + 0x1000, ring_gpa(0) + 0x2000, mem)
        split_ring(256, tx, ring_gpa(1), ring_gpa(1) + 0x1000, ring_gpa(1) + 0x2000, mem)
    for i in (0, 1):
        blob = bytes(mem[ring_gpa(i):ring_gpa(i) + 0x1100]).rstrip(b'\0')
        s += poke(0, ring_gpa(i), blob)
    for k in range(3):
        s += poke(0, 0x90000 + k * 0x100, frame())
    s += bytes([0xe3])
    if stop:
        s += breq(GET_VRING_BASE, struct.pack('<II', 1, 0))
        s += breq(GET_VRING_BASE, struct.pack('<II', 0, 0))
    return s


def gen_backend_req():
    write('fuzz_backend_req', 'split-loopback', net_session(False))
    write('fuzz_backend_req', 'packed-loopback', net_session(True))
    write('fuzz_backend_req', 'no-reply-ack', net_session(False, pf=bit(PF['MQ'])))
    extra = net_session(False, stop=False)
    extra += breq(GET_CONFIG, struct.pack('<III', 0, 12, 0) + bytes(12))
    extra += breq(GET_QUEUE_NUM) + breq(GET_MAX_MEM_SLOTS) + breq(GET_STATUS)
    extra += breq(SET_STATUS, struct.pack('<Q', 0xf), need_reply=True)
    extra += breq(SET_LOG_BASE, struct.pack('<QQ', 0x1000, 0))
    extra += breq(SET_FEATURES, struct.pack('<Q', bit(F_VERSION_1, F_PROTOCOL, 26)))
    extra += breq(GET_INFLIGHT_FD, struct.pack('<QQHHI', 0, 0, 3, 256, 0))
    extra += breq(ADD_MEM_REG, struct.pack('<QQQQQ', 0, 0x200000, 0x10000, UVA + 0x200000, 0),
                  need_reply=True)
    extra += breq(REM_MEM_REG, struct.pack('<QQQQQ', 0, 0x200000, 0x10000, UVA + 0x200000, 0),
                  need_reply=True)
    extra += breq(SEND_RARP, struct.pack('<Q', 0x010000000002))
    extra += breq(NET_SET_MTU, struct.pack('<Q', 9000))
    extra += breq(SET_BACKEND_REQ_FD)
    extra += breq(RESET_DEVICE)
    write('fuzz_backend_req', 'control-plane', extra)
    inflight = net_session(False, stop=False)
    inflight = inflight.replace(breq(SET_OWNER), breq(SET_OWNER) + breq(
        SET_INFLIGHT_FD, struct.pack('<QQHHI', 0x4000, 0, 3, 256, 0)))
    write('fuzz_backend_req', 'inflight', inflight + bytes([0xf0]) + net_session(True))


# ---- fuzz_message ------------------------------------------------------------------------

def gen_message():
    msgs = [(hdr(GET_FEATURES, 0), 0), (hdr(SET_FEATURES, 8) + struct.pack('<Q', 1 << 32), 0),
            (hdr(SET_MEM_TABLE, 40) + struct.pack('<IIQQQQ', 1, 0, 0, MEM, UVA, 0), 1),
            (hdr(SET_VRING_ADDR, 40) + bytes(40), 0),
            (hdr(SET_VRING_KICK, 8) + struct.pack('<Q', 1), 1),
            (hdr(SET_VRING_KICK, 8, 9) + struct.pack('<Q', 0x100), 0),
            (hdr(GET_CONFIG, 16) + struct.pack('<III', 0, 4, 0) + bytes(4), 0),
            (hdr(IOTLB_MSG, 26) + bytes(26), 0), (hdr(SET_LOG_BASE, 16) + bytes(16), 1),
            (hdr(GET_INFLIGHT_FD, 24) + bytes(24), 0)]
    for mode in range(4):
        body = struct.pack('<BQ', mode, ALL_PF)
        for m, nfds in msgs:
            body += struct.pack('<BH', nfds, len(m)) + m
        write('fuzz_message', 'session-mode%d' % mode, body)
    # a message split over several writes, fds on the first byte
    m = hdr(SET_MEM_TABLE, 72) + struct.pack('<II', 2, 0) + bytes(64)
    body = struct.pack('<BQ', 2, 0) + struct.pack('<BH', 2, 5) + m[:5] + \
        struct.pack('<BH', 0, len(m) - 5) + m[5:]
    write('fuzz_message', 'split-writes', body)


# ---- fuzz_frontend_reply -------------------------------------------------------------------

def reply(req, payload=b'', nfds=0, memfd=False):
    return bytes([0x10 | nfds | (8 if memfd else 0), req]) + struct.pack('<H', len(payload)) + payload


def ack(req):
    return reply(req, struct.pack('<Q', 0))


def call(n, args=b''):
    return bytes([0x40 + n]) + args


def gen_frontend():
    feats = (1 << 64) - 1
    nego = reply(GET_FEATURES, struct.pack('<Q', feats)) + \
        reply(GET_PROTOCOL_FEATURES, struct.pack('<Q', ALL_PF | (1 << 19) | (1 << 14) |
                                                 (1 << 22) | (1 << 18) | (1 << 8) | (1 << 7))) + \
        ack(SET_OWNER) + ack(SET_FEATURES) + ack(SET_PROTOCOL_FEATURES) + \
        call(0, struct.pack('<QQ', feats, feats))
    u64 = lambda v=0: struct.pack('<Q', v)
    cases = {
        1: reply(GET_FEATURES, u64(1 << 32)) + call(1),
        7: ack(SET_MEM_TABLE) + call(7, b'\x02'),
        8: ack(ADD_MEM_REG) + call(8, u64(0x200000)),
        10: reply(GET_MAX_MEM_SLOTS, u64(509)) + call(10),
        11: reply(SET_LOG_BASE, u64()) + call(11, b'\x01'),
        13: ack(SET_VRING_NUM) + call(13, b'\x00\x00\x01'),
        16: reply(GET_VRING_BASE, struct.pack('<II', 0, 5)) + call(16, b'\x00'),
        18: ack(SET_VRING_KICK) + call(18, b'\x00'),
        24: reply(GET_QUEUE_NUM, u64(2)) + call(24),
        25: reply(GET_CONFIG, struct.pack('<III', 0, 8, 0) + bytes(8)) + call(25, b'\x00\x08\x00\x00'),
        30: reply(GET_STATUS, u64(0xf)) + call(30),
        32: reply(GET_INFLIGHT_FD, struct.pack('<QQHHI', 4096, 0, 1, 256, 0), 1, True) +
            call(32, b'\x01\x00\x00\x01'),
        34: reply(IOTLB_MSG, u64()) + call(34, u64(0x1000)),
        35: reply(42, u64(0x100)) + call(35, b'\x00'),
        36: reply(43, u64()) + call(36),
        37: reply(41, u64(), 1) + call(37, b'\x01'),
        38: reply(28, u64(), 1, True) + call(38, b'\x00'),
    }
    write('fuzz_frontend_reply', 'negotiate', nego)
    for n, body in cases.items():
        write('fuzz_frontend_reply', 'call-%02d' % n, nego + body)
    # the back-end channel: open it, then a config change and an IOTLB miss
    chan = nego + ack(SET_BACKEND_REQ_FD) + call(39)
    chan += bytes([0xc0, 0x20, 2]) + struct.pack('<H', 0)
    chan += bytes([0xc0, 0x20, 1]) + struct.pack('<H', 32) + struct.pack('<QQQBB6x', 0x1000, 0, 0, 3, 1)
    chan += bytes([0xc0, 0x00, 4]) + struct.pack('<H', 8) + struct.pack('<II', 0, 0)
    write('fuzz_frontend_reply', 'backend-channel', chan)


def gen_net_offload():
    # sender bits CSUM|TSO4|TSO6|ECN, receiver bits GUEST_CSUM|TSO4|TSO6|ECN|MTU|MRG,
    # pieces, MTU (68 + v % 9000), the virtio-net header, the frame
    def seed(name, stx, srx, pieces, mtu, vhdr, fr):
        write('fuzz_net_offload', name, bytes([stx, srx, pieces]) +
              struct.pack('<H', mtu - 68) + vhdr + fr)

    def vnet(flags=0, gso=0, hdr_len=0, gso_size=0, start=0, off=0):
        return struct.pack('<BBHHHHH', flags, gso, hdr_len, gso_size, start, off, 0)

    eth4 = b'\x02' * 6 + b'\x02\0\0\0\0\x0a' + b'\x08\x00'
    eth6 = b'\x02' * 6 + b'\x02\0\0\0\0\x0a' + b'\x86\xdd'
    pay = bytes((i * 7) & 0xff for i in range(6000))
    ip4 = struct.pack('>BBHHHBBH4s4s', 0x45, 0, 40 + len(pay), 1, 0x4000, 64, 6, 0,
                      b'\x0a\0\0\x01', b'\x0a\0\0\x02')
    tcp = struct.pack('>HHIIBBHHH', 1, 2, 0xfffff000, 0, 0x50, 0x19, 1000, 0, 0)
    tcpo = struct.pack('>HHIIBBHHH', 1, 2, 5, 0, 0x80, 0x98, 1000, 0, 0) + b'\x01\x01\x08\x0a' + bytes(8)
    ip6 = struct.pack('>IHBB16s16s', 0x60000000, 32 + len(pay), 6, 64, bytes(range(16)),
                      bytes(range(16, 32)))
    seed('tso4-plain', 0x3, 0x20, 3, 1500, vnet(1, 1, 54, 1448, 34, 16), eth4 + ip4 + tcp + pay)
    seed('tso4-passed', 0x3, 0x23, 1, 1500, vnet(1, 1, 54, 1448, 34, 16), eth4 + ip4 + tcp + pay)
    seed('tso4-csum-rx', 0x3, 0x31, 7, 1500, vnet(1, 1, 54, 1000, 34, 16), eth4 + ip4 + tcp + pay)
    seed('tso6-opts-ecn', 0xf, 0x20, 5, 1500, vnet(1, 0x84, 86, 1200, 54, 16), eth6 + ip6 + tcpo + pay)
    seed('csum-udp', 0x1, 0x00, 2, 1500, vnet(1, 0, 0, 0, 34, 6), eth4 + ip4[:9] + b'\x11' + ip4[10:] + pay[:800])
    seed('oversize', 0x0, 0x30, 1, 1500, vnet(), eth4 + pay)
    seed('bad-csum-start', 0x1, 0x20, 1, 1500, vnet(1, 0, 0, 0, 9000, 16), eth4 + pay[:100])


gen_vq()
gen_net_offload()
gen_backend_req()
gen_message()
gen_frontend()
