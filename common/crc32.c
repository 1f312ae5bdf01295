/* SPDX-License-Identifier: MIT */
/* uvhost: CRC-32 (see crc32.h). */
#include "crc32.h"

uint32_t uvh_crc32(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint32_t c = 0xffffffffu;

	while (n--) {
		c ^= *b++;
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
	}
	return ~c;
}
