/* SPDX-License-Identifier: MIT */
/* placeholder: being written */
#include "log.h"
