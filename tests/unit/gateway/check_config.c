/*
 * check_config.c - option parsing (gateway/config.c): defaults, values,
 * APP splitting, and refusal of bad input with a non-zero result.
 */
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "config.h"

static int parse(gw_config_t *cfg, const char *const *args)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = "gateway";
    for (; *args; args++) argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    return gw_config_parse(cfg, argc, argv);
}

START_TEST(defaults)
{
    static gw_config_t cfg;
    unsetenv("WEB_CONCURRENCY");
    const char *a[] = { "app.so", NULL };
    ck_assert_int_eq(parse(&cfg, a), 0);
    ck_assert_uint_eq(cfg.workers, 1);
    ck_assert_int_eq(cfg.balance, GW_BALANCE_LEASTCONN);
    ck_assert_int_eq(cfg.backlog, 2048);
    ck_assert_uint_eq(cfg.limits.request_line, 4094);
    ck_assert_uint_eq(cfg.limits.fields, 100);
    ck_assert_uint_eq(cfg.limits.field_size, 8190);
    ck_assert_uint_eq(cfg.limits.body, 1073741824ull);
    ck_assert_uint_eq(cfg.nbinds, 1);
    ck_assert_str_eq(cfg.binds[0], "127.0.0.1:8000");
    ck_assert_str_eq(cfg.app_path, "app.so");
    ck_assert_str_eq(cfg.app_symbol, "gateway_app");
}
END_TEST

START_TEST(values_and_env)
{
    static gw_config_t cfg;
    setenv("WEB_CONCURRENCY", "3", 1);
    const char *a[] = { "-b", "unix:/tmp/x.sock", "--bind", "[::1]:9000", "--balance", "rr",
                        "--preload", "--max-inflight", "7", "--keep-alive", "2.5",
                        "--limit-request-body", "1000", "dir/app.so:my_entry", NULL };
    ck_assert_int_eq(parse(&cfg, a), 0);
    ck_assert_uint_eq(cfg.workers, 3);
    ck_assert_uint_eq(cfg.nbinds, 2);
    ck_assert_str_eq(cfg.binds[1], "[::1]:9000");
    ck_assert_int_eq(cfg.balance, GW_BALANCE_RR);
    ck_assert_int_eq(cfg.preload, 1);
    ck_assert_uint_eq(cfg.max_inflight, 7);
    ck_assert(cfg.keepalive == 2.5);
    ck_assert_uint_eq(cfg.limits.body, 1000);
    ck_assert_str_eq(cfg.app_path, "dir/app.so");
    ck_assert_str_eq(cfg.app_symbol, "my_entry");
    const char *b[] = { "-w", "5", "app.so", NULL };
    ck_assert_int_eq(parse(&cfg, b), 0);
    ck_assert_uint_eq(cfg.workers, 5);    /* the flag beats the environment */
    unsetenv("WEB_CONCURRENCY");
}
END_TEST

START_TEST(rejects)
{
    static gw_config_t cfg;
    const char *bad[][4] = {
        { "--nope", "app.so", NULL },
        { "-w", "0", "app.so", NULL },
        { "-w", "-3", "app.so", NULL },
        { "-w", "many", "app.so", NULL },
        { "--balance", "random", "app.so", NULL },
        { "--log-level", "loud", "app.so", NULL },
        { "--keep-alive", "0", "app.so", NULL },
        { "app.so", "extra", NULL },
        { "app.so:1bad", NULL },
        { "-w", NULL },
        { NULL },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(parse(&cfg, bad[i]) == -1, "case %zu accepted", i);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("parse");
    tcase_add_test(tc, defaults);
    tcase_add_test(tc, values_and_env);
    tcase_add_test(tc, rejects);
    suite_add_tcase(s, tc);
    return s;
}
GW_TEST_SUITE(config_suite)
