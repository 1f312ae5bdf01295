/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>

Test(roundtrip, placeholder) { cr_assert(1); }
