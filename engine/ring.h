/* SPDX-License-Identifier: MIT */
/* placeholder: being written */
#ifndef UVHOST_RING_H
#define UVHOST_RING_H
#endif
