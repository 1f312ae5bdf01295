/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>

Test(dispatcher, placeholder) { cr_assert(1); }
