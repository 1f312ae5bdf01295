/* SPDX-License-Identifier: MIT */
/* placeholder: being written */
#ifndef UVHOST_NET_H
#define UVHOST_NET_H
#endif
