/* SPDX-License-Identifier: MIT */
#include "frontend_req.h"
