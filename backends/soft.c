/* SPDX-License-Identifier: MIT */
/* stub: being written */
#include "backend.h"
