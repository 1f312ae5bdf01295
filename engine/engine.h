/* SPDX-License-Identifier: MIT */
/* placeholder: being written */
#ifndef UVHOST_ENGINE_H
#define UVHOST_ENGINE_H
#endif
