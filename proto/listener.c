/* SPDX-License-Identifier: MIT */
#include "listener.h"
