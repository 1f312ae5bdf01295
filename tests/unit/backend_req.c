/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>

Test(backend_req, placeholder) { cr_assert(1); }
