/*
 * parser_bench.c - micro-benchmark of the HTTP/1.x head parser
 * (gateway/http1.c) on a typical 324-byte GET with 8 header lines, the
 * request deps.md measured the candidate parsers with. Not part of the build:
 *
 *   cc -O2 -Igateway tools/bench/parser_bench.c gateway/http1.c -o /tmp/parser_bench
 *   /tmp/parser_bench [iterations]
 *
 * Prints the best and median of 7 rounds in ns per request. Scalar code, so
 * `valgrind --tool=callgrind /tmp/parser_bench 100000` gives a stable
 * instruction count on a busy machine.
 */
#include "http1.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char request[] =
    "GET /api/v1/users/12345/profile?fields=name,email HTTP/1.1\r\n"
    "Host: www.example.com\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/115.0\r\n"
    "Accept: text/html,application/xhtml+xml\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Connection: keep-alive\r\n"
    "Cookie: session=a1\r\n"
    "Cache-Control: max-age=0\r\n"
    "\r\n";

static double
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int
cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 1000000;
    gw_http1_header_t hdrs[100];
    gw_http1_request_t req;
    gw_http1_error_t err;
    double rounds[7];
    size_t len = sizeof(request) - 1, sink = 0;

    for (int r = 0; r < 7; r++) {
        double t0 = now_ns();
        for (long i = 0; i < iters; i++) {
            req.headers = hdrs;
            req.max_headers = 100;
            ssize_t n = gw_http1_parse_request(request, len, &gw_http1_default_limits, &req, &err);
            if (n != (ssize_t)len) {
                fprintf(stderr, "parse failed: %zd %s\n", n, n == GW_HTTP1_ERROR ? err.why : "");
                return 1;
            }
            /* use the result, as a caller would */
            sink += req.nheaders + req.headers[req.nheaders - 1].value.len + req.path.len;
            __asm__ volatile("" ::: "memory");
        }
        rounds[r] = (now_ns() - t0) / (double)iters;
    }
    qsort(rounds, 7, sizeof(rounds[0]), cmp);
    printf("%zu-byte GET, %zu header lines: min %.1f ns/req, median %.1f ns/req (%.2f GB/s) [%zu]\n",
           len, (size_t)8, rounds[0], rounds[3], len / rounds[0], sink % 10);
    return 0;
}
