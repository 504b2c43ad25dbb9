/*
 * check_main.c - runs every suite registered with GW_TEST_SUITE().
 * Run from tests/unit (data files are found relative to it).
 * Exit status 0 only if every test passed.
 */
#include "check_main.h"

#include <stdio.h>
#include <stdlib.h>

#define MAX_SUITES 64
static gw_suite_fn suites[MAX_SUITES];
static int nsuites;

void gw_test_register(gw_suite_fn fn)
{
    if (nsuites < MAX_SUITES) suites[nsuites++] = fn;
    else { fprintf(stderr, "check_main: too many suites\n"); abort(); }
}

int main(void)
{
    if (nsuites == 0) { fprintf(stderr, "check_main: no suites registered\n"); return 1; }
    SRunner *sr = srunner_create(suites[0]());
    for (int i = 1; i < nsuites; i++) srunner_add_suite(sr, suites[i]());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
