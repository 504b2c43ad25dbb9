/*
 * check_main.h - unit-test registry. Each tests/unit/<dir>/check_<module>.c
 * defines its Suite builder and registers it with GW_TEST_SUITE(builder);
 * check_main.c runs every registered suite (CK_FORK, so a crash stays in
 * its test). No shared list to edit when a test file is added.
 */
#ifndef GW_CHECK_MAIN_H
#define GW_CHECK_MAIN_H

#include <check.h>

typedef Suite *(*gw_suite_fn)(void);
void gw_test_register(gw_suite_fn fn);

#define GW_TEST_SUITE(fn) \
    static void __attribute__((constructor)) fn##_register(void) { gw_test_register(fn); }

#endif
