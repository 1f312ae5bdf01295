/* SPDX-License-Identifier: MIT */
#include "backend_chan.h"
