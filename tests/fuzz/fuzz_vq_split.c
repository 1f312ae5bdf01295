/* SPDX-License-Identifier: MIT */
/* fuzz_vq_split: split-ring chain walking on random guest memory (see fuzz_vq.h). */
#define FUZZ_VQ_PACKED	0
#include "fuzz_vq.h"
