/* SPDX-License-Identifier: MIT */
#include "backend_req.h"
