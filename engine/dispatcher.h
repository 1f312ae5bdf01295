/* SPDX-License-Identifier: MIT */
/* placeholder: being written */
#ifndef UVHOST_DISPATCHER_H
#define UVHOST_DISPATCHER_H
#endif
