/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>

Test(message, placeholder) { cr_assert(1); }
