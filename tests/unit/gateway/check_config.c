/*
 * check_config.c - option parsing (gateway/config.c): defaults, values,
 * APP splitting, and refusal of bad input with a non-zero result; the
 * config file, GATEWAY_CMD_ARGS, WEB_CONCURRENCY and PORT, their precedence,
 * error lines naming their source, and --print-config read back with -c.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

static void clear_env(void);

START_TEST(defaults)
{
    static gw_config_t cfg;
    clear_env();
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

/* ---- sources: file, environment, precedence */

static void clear_env(void)
{
    unsetenv("WEB_CONCURRENCY");
    unsetenv("GATEWAY_CMD_ARGS");
    unsetenv("PORT");
}

/* A temporary config file holding text; the path is static storage. */
static const char *write_conf(const char *text)
{
    static char path[64];
    strcpy(path, "/tmp/gw-check-config-XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (int)strlen(text));
    close(fd);
    return path;
}

/* parse() with stderr captured into err (the one error line, if any). */
static int parse_err(gw_config_t *cfg, const char *const *args, char *err, size_t n)
{
    char path[] = "/tmp/gw-check-stderr-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    int rc = parse(cfg, args);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    ssize_t r = pread(fd, err, n - 1, 0);
    err[r > 0 ? r : 0] = '\0';
    close(fd);
    unlink(path);
    return rc;
}

START_TEST(file_syntax)
{
    static gw_config_t cfg;
    clear_env();
    const char *f = write_conf(
        "# a comment\n"
        "\n"
        "   workers   =   4   \n"
        "bind = 127.0.0.1:9001\n"
        "bind=\"unix:/tmp/a b.sock\"   # a comment after a quoted value\n"
        "  # indented comment\n"
        "preload = yes\n"
        "health_path = '/hz #1'\n"
        "control-socket = /tmp/ctl # inline comment\n"
        "balance = rr\r\n"
        "keep-alive = 2.5\n"
        "umask = 027\n"
        "pid = /tmp/gw.pid\n"
        "app = dir/app.so:entry\n");
    const char *a[] = { "-c", f, NULL };
    ck_assert_int_eq(parse(&cfg, a), 0);
    ck_assert_uint_eq(cfg.workers, 4);
    ck_assert_uint_eq(cfg.nbinds, 2);
    ck_assert_str_eq(cfg.binds[0], "127.0.0.1:9001");
    ck_assert_str_eq(cfg.binds[1], "unix:/tmp/a b.sock");
    ck_assert_int_eq(cfg.preload, 1);
    ck_assert_str_eq(cfg.health_path, "/hz #1");
    ck_assert_str_eq(cfg.control_socket, "/tmp/ctl");
    ck_assert_int_eq(cfg.balance, GW_BALANCE_RR);
    ck_assert(cfg.keepalive == 2.5);
    ck_assert_int_eq(cfg.umask, 027);
    ck_assert_str_eq(cfg.pidfile, "/tmp/gw.pid");
    ck_assert_str_eq(cfg.app_path, "dir/app.so");
    ck_assert_str_eq(cfg.app_symbol, "entry");
    ck_assert_str_eq(cfg.config_file, f);
    unlink(f);

    /* booleans both ways; the APP argument beats the file's app */
    const char *bools[][2] = { { "true", "1" }, { "1", "1" }, { "on", "1" }, { "YES", "1" },
                               { "false", "0" }, { "no", "0" }, { "0", "0" }, { "off", "0" } };
    for (size_t i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
        char text[128];
        snprintf(text, sizeof(text), "preload = %s\napp = file.so\n", bools[i][0]);
        f = write_conf(text);
        const char *b[] = { "-c", f, "arg.so", NULL };
        ck_assert_int_eq(parse(&cfg, b), 0);
        ck_assert_int_eq(cfg.preload, atoi(bools[i][1]));
        ck_assert_str_eq(cfg.app_path, "arg.so");
        unlink(f);
    }
}
END_TEST

START_TEST(file_errors_name_file_and_line)
{
    static gw_config_t cfg;
    char err[2048], want[256];
    clear_env();
    static const struct { const char *text, *msg; } cases[] = {
        { "# c\n\nworkers = 2\nbind = 127.0.0.1:1\n\nworkers = many\n",
          ":6: invalid value 'many' for workers" },
        { "nope = 1\n", ":1: unknown key 'nope'" },
        { "\nworkers\n", ":2: expected 'key = value', got 'workers'" },
        { "workers =\n", ":1: missing value for workers" },
        { "preload = maybe\n", ":1: invalid value 'maybe' for preload" },
        { "bind = \"127.0.0.1:1\n", ":1: unterminated quote" },
        { "bind = '127.0.0.1:1' x\n", ":1: unexpected text" },
        { "config = other.conf\n", ":1: 'config' is a command-line option" },
        { "help = true\n", ":1: 'help' is a command-line option" },
        { "bind = 1.2.3.4\n", ":1: invalid value '1.2.3.4' for bind" },
        { "umask = 8\n", ":1: invalid value '8' for umask" },
        { "app = x.so:9bad\n", ":1: invalid symbol name '9bad' in APP" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *f = write_conf(cases[i].text);
        const char *a[] = { "-c", f, "app.so", NULL };
        ck_assert_msg(parse_err(&cfg, a, err, sizeof(err)) == -1, "case %zu accepted", i);
        snprintf(want, sizeof(want), "gateway: %s%s", f, cases[i].msg);
        ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "case %zu: got '%s', want '%s'",
                      i, err, want);
        ck_assert_msg(strchr(err, '\n') == err + strlen(err) - 1, "case %zu: not one line: %s",
                      i, err);
        unlink(f);
    }
    const char *m[] = { "-c", "/nonexistent/gw.conf", "app.so", NULL };
    ck_assert_int_eq(parse_err(&cfg, m, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/gw.conf"));
}
END_TEST

START_TEST(precedence)
{
    static gw_config_t cfg;
    clear_env();
    const char *f = write_conf("workers = 2\nbalance = rr\nkeep-alive = 7\nbacklog = 10\n"
                               "max-queue = 11\nbind = 127.0.0.1:1\nbind = 127.0.0.1:2\n");
    /* file over defaults */
    const char *a[] = { "-c", f, "app.so", NULL };
    ck_assert_int_eq(parse(&cfg, a), 0);
    ck_assert_uint_eq(cfg.workers, 2);
    ck_assert_int_eq(cfg.backlog, 10);
    ck_assert_uint_eq(cfg.max_inflight, 0);            /* default: auto */
    ck_assert_uint_eq(cfg.nbinds, 2);
    /* WEB_CONCURRENCY over the file */
    setenv("WEB_CONCURRENCY", "3", 1);
    ck_assert_int_eq(parse(&cfg, a), 0);
    ck_assert_uint_eq(cfg.workers, 3);
    /* GATEWAY_CMD_ARGS over WEB_CONCURRENCY and the file; its bind replaces
     * the file's two */
    setenv("GATEWAY_CMD_ARGS", "-w 4 --keep-alive 8 --backlog=12 -b 127.0.0.1:3", 1);
    ck_assert_int_eq(parse(&cfg, a), 0);
    ck_assert_uint_eq(cfg.workers, 4);
    ck_assert(cfg.keepalive == 8);
    ck_assert_int_eq(cfg.backlog, 12);
    ck_assert_uint_eq(cfg.nbinds, 1);
    ck_assert_str_eq(cfg.binds[0], "127.0.0.1:3");
    ck_assert_int_eq(cfg.balance, GW_BALANCE_RR);      /* still the file's */
    ck_assert_uint_eq(cfg.max_queue, 11);
    /* real flags over everything; their binds replace the env's */
    const char *b[] = { "-w", "5", "-b", "127.0.0.1:4", "--bind", "127.0.0.1:5", "-c", f,
                        "--keep-alive", "9", "app.so", NULL };
    ck_assert_int_eq(parse(&cfg, b), 0);
    ck_assert_uint_eq(cfg.workers, 5);
    ck_assert(cfg.keepalive == 9);
    ck_assert_int_eq(cfg.backlog, 12);
    ck_assert_uint_eq(cfg.nbinds, 2);
    ck_assert_str_eq(cfg.binds[0], "127.0.0.1:4");
    ck_assert_str_eq(cfg.binds[1], "127.0.0.1:5");
    /* without a bind in the higher sources, the file's binds stand */
    unsetenv("GATEWAY_CMD_ARGS");
    const char *c[] = { "-w", "6", "-c", f, "app.so", NULL };
    ck_assert_int_eq(parse(&cfg, c), 0);
    ck_assert_uint_eq(cfg.workers, 6);
    ck_assert_uint_eq(cfg.nbinds, 2);
    ck_assert_str_eq(cfg.binds[1], "127.0.0.1:2");
    unlink(f);
    clear_env();
}
END_TEST

START_TEST(config_path_sources)
{
    static gw_config_t cfg;
    clear_env();
    char f1[64], f2[64];
    strcpy(f1, write_conf("workers = 7\n"));
    strcpy(f2, write_conf("workers = 8\n"));
    char env[200];
    snprintf(env, sizeof(env), "--config %s", f1);
    setenv("GATEWAY_CMD_ARGS", env, 1);
    const char *a[] = { "app.so", NULL };
    ck_assert_int_eq(parse(&cfg, a), 0);
    ck_assert_uint_eq(cfg.workers, 7);                 /* -c from the environment */
    const char *b[] = { "-c", f2, "app.so", NULL };
    ck_assert_int_eq(parse(&cfg, b), 0);
    ck_assert_uint_eq(cfg.workers, 8);                 /* the command line's -c wins */
    unlink(f1);
    unlink(f2);
    clear_env();
}
END_TEST

START_TEST(port_env)
{
    static gw_config_t cfg;
    clear_env();
    setenv("PORT", "5000", 1);
    const char *a[] = { "app.so", NULL };
    ck_assert_int_eq(parse(&cfg, a), 0);
    ck_assert_uint_eq(cfg.nbinds, 1);
    ck_assert_str_eq(cfg.binds[0], "0.0.0.0:5000");
    /* any bind anywhere beats PORT */
    const char *f = write_conf("bind = unix:/tmp/p.sock\n");
    const char *b[] = { "-c", f, "app.so", NULL };
    ck_assert_int_eq(parse(&cfg, b), 0);
    ck_assert_uint_eq(cfg.nbinds, 1);
    ck_assert_str_eq(cfg.binds[0], "unix:/tmp/p.sock");
    unlink(f);
    setenv("GATEWAY_CMD_ARGS", "-b 127.0.0.1:6000", 1);
    ck_assert_int_eq(parse(&cfg, a), 0);
    ck_assert_str_eq(cfg.binds[0], "127.0.0.1:6000");
    unsetenv("GATEWAY_CMD_ARGS");
    const char *c[] = { "-b", "127.0.0.1:7000", "app.so", NULL };
    ck_assert_int_eq(parse(&cfg, c), 0);
    ck_assert_str_eq(cfg.binds[0], "127.0.0.1:7000");
    /* a bad PORT is named */
    char err[512];
    setenv("PORT", "http", 1);
    ck_assert_int_eq(parse_err(&cfg, a, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "gateway: PORT: invalid value '0.0.0.0:http' for bind\n");
    clear_env();
}
END_TEST

START_TEST(cmd_args_env)
{
    static gw_config_t cfg;
    char err[512];
    clear_env();
    setenv("GATEWAY_CMD_ARGS", "  --health-path '/a b'\t--control-socket \"/tmp/c \\\"d\\\"\" "
                               "--pid /tmp/x\\ y.pid --preload --umask=0077 ", 1);
    const char *a[] = { "app.so", NULL };
    ck_assert_int_eq(parse(&cfg, a), 0);
    ck_assert_str_eq(cfg.health_path, "/a b");
    ck_assert_str_eq(cfg.control_socket, "/tmp/c \"d\"");
    ck_assert_str_eq(cfg.pidfile, "/tmp/x y.pid");
    ck_assert_int_eq(cfg.preload, 1);
    ck_assert_int_eq(cfg.umask, 077);

    static const struct { const char *env, *msg; } cases[] = {
        { "--nope", "gateway: GATEWAY_CMD_ARGS: unknown option '--nope'\n" },
        { "-w x", "gateway: GATEWAY_CMD_ARGS: invalid value 'x' for --workers\n" },
        { "--workers", "gateway: GATEWAY_CMD_ARGS: option '--workers' needs a value\n" },
        { "-w 2 other.so", "gateway: GATEWAY_CMD_ARGS: unexpected argument 'other.so' "
                           "(only options belong here)\n" },
        { "--pid 'x", "gateway: GATEWAY_CMD_ARGS: unterminated quote in '--pid 'x'\n" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        setenv("GATEWAY_CMD_ARGS", cases[i].env, 1);
        ck_assert_msg(parse_err(&cfg, a, err, sizeof(err)) == -1, "case %zu accepted", i);
        ck_assert_str_eq(err, cases[i].msg);
    }
    unsetenv("GATEWAY_CMD_ARGS");
    setenv("WEB_CONCURRENCY", "lots", 1);
    ck_assert_int_eq(parse_err(&cfg, a, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "gateway: WEB_CONCURRENCY: invalid value 'lots' for workers\n");
    unsetenv("WEB_CONCURRENCY");
    const char *b[] = { "--workers", "x", "app.so", NULL };
    ck_assert_int_eq(parse_err(&cfg, b, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "gateway: --workers: invalid value 'x' (see gateway --help)\n");
    clear_env();
}
END_TEST

static char *print_to_string(const gw_config_t *cfg)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    ck_assert_ptr_nonnull(f);
    gw_config_print(f, cfg);
    fclose(f);
    return buf;
}

START_TEST(print_config_round_trip)
{
    static gw_config_t cfg, again;
    clear_env();
    const char *a[] = { "-w", "3", "-b", "127.0.0.1:8123", "-b", "unix:/tmp/sp ace.sock",
                        "--preload", "--balance", "rr", "--keep-alive", "0.1",
                        "--health-path", "/h#x", "--umask", "022", "--pid", "/tmp/g.pid",
                        "--limit-request-line", "100", "dir/app.so:entry", NULL };
    ck_assert_int_eq(parse(&cfg, a), 0);
    char *first = print_to_string(&cfg);
    ck_assert_ptr_nonnull(strstr(first, "\nworkers = 3\n"));
    ck_assert_ptr_nonnull(strstr(first, "\nbind = 127.0.0.1:8123\nbind = \"unix:/tmp/sp ace.sock\"\n"));
    ck_assert_ptr_nonnull(strstr(first, "\npreload = true\n"));
    ck_assert_ptr_nonnull(strstr(first, "\numask = 0022\n"));
    ck_assert_ptr_nonnull(strstr(first, "\napp = dir/app.so:entry\n"));
    ck_assert_ptr_null(strstr(first, "check-config"));
    ck_assert_ptr_null(strstr(first, "\nhelp"));
    const char *f = write_conf(first);
    const char *b[] = { "-c", f, NULL };
    ck_assert_int_eq(parse(&again, b), 0);
    char *second = print_to_string(&again);
    ck_assert_str_eq(first, second);
    ck_assert(again.keepalive == 0.1);
    ck_assert_str_eq(again.binds[1], "unix:/tmp/sp ace.sock");
    unlink(f);
    free(first);
    free(second);
}
END_TEST

START_TEST(actions_and_new_options)
{
    static gw_config_t cfg;
    clear_env();
    const char *a[] = { "app.so", NULL };
    ck_assert_int_eq(parse(&cfg, a), 0);
    ck_assert_int_eq(cfg.umask, -1);
    ck_assert_ptr_null(cfg.pidfile);
    ck_assert_int_eq(cfg.check_config, 0);
    ck_assert_int_eq(cfg.print_config, 0);
    const char *b[] = { "--check-config", "--print-config", "--umask", "0", "--pid", "p",
                        "app.so", NULL };
    ck_assert_int_eq(parse(&cfg, b), 0);
    ck_assert_int_eq(cfg.check_config, 1);
    ck_assert_int_eq(cfg.print_config, 1);
    ck_assert_int_eq(cfg.umask, 0);
    ck_assert_str_eq(cfg.pidfile, "p");
    const char *bad[][4] = { { "--umask", "8", "app.so", NULL }, { "--umask", "-1", "app.so", NULL },
                             { "--umask", "01000", "app.so", NULL }, { "--pid", "", "app.so", NULL },
                             { "-c", NULL } };
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
    tcase_add_test(tc, file_syntax);
    tcase_add_test(tc, file_errors_name_file_and_line);
    tcase_add_test(tc, precedence);
    tcase_add_test(tc, config_path_sources);
    tcase_add_test(tc, port_env);
    tcase_add_test(tc, cmd_args_env);
    tcase_add_test(tc, print_config_round_trip);
    tcase_add_test(tc, actions_and_new_options);
    suite_add_tcase(s, tc);
    return s;
}
GW_TEST_SUITE(config_suite)
