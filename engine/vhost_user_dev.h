/* SPDX-License-Identifier: MIT */
/* placeholder: being written */
#ifndef UVHOST_VHOST_USER_DEV_H
#define UVHOST_VHOST_USER_DEV_H
#endif
