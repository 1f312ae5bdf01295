/* SPDX-License-Identifier: MIT */
/* stub: being written */
int main(void) { return 0; }
