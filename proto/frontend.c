/* SPDX-License-Identifier: MIT */
#include "frontend.h"
