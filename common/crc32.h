/* SPDX-License-Identifier: MIT */
/* uvhost: CRC-32 (IEEE 802.3, reflected, as zlib's crc32()). Not installed. */
#ifndef UVHOST_CRC32_H
#define UVHOST_CRC32_H

#include <stddef.h>
#include <stdint.h>

/** CRC-32 of @n bytes at @p, bit by bit: for small records (a device's
 *  migration state), not for packets. */
uint32_t uvh_crc32(const void *p, size_t n);

#endif
