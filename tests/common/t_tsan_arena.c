/* SPDX-License-Identifier: MIT */
/*
 * Linked into the criterion test programs of a ThreadSanitizer build only.
 *
 * criterion's worker arena (boxfort) is a MAP_FIXED mapping at
 * 0x200000000000 + rand_r() * 16 MiB, anywhere below 0x7f0000000000: most
 * of that range is TSan's shadow memory, which refuses the mapping, and
 * criterion aborts before any test runs. This rand_r, found before libc's
 * by the dynamic linker, steers the arena into TSan's middle application
 * range (0x550000000000 + up to 1 TiB); boxfort checks the pages are free
 * and draws again if not. Nothing else in the tests calls rand_r.
 */
#include <stdlib.h>

int rand_r(unsigned int *seed)
{
	*seed = *seed * 1103515245u + 12345u;
	return (int)(0x350000u + ((*seed >> 8) & 0xffffu));
}
