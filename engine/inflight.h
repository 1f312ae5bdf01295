/* SPDX-License-Identifier: MIT */
/* placeholder: being written */
#ifndef UVHOST_INFLIGHT_H
#define UVHOST_INFLIGHT_H
#endif
