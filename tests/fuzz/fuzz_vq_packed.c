/* SPDX-License-Identifier: MIT */
/* fuzz_vq_packed: packed-ring chain walking on random guest memory (see fuzz_vq.h). */
#define FUZZ_VQ_PACKED	1
#include "fuzz_vq.h"
