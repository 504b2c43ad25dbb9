/*
 * fuzz_http1.c - libFuzzer target for the HTTP/1.x request parser
 * (gateway/http1.c). Built by `make build/fuzz/fuzz_http1` with ASan and
 * UBSan; seeds in tools/fuzz/seeds-fuzz_http1/.
 *
 * Every buffer handed to the parser is its own heap block of exactly the
 * input's size, so ASan reports a read one byte past the end. Beyond memory
 * safety it checks the properties the front relies on:
 *   - a head parse consumes at most len bytes and every span lies inside
 *     the head it returned; errors carry a known status and a reason;
 *   - a prefix of the input never gets a different verdict: it is AGAIN,
 *     or the same error, or (if the prefix holds the whole head) the same
 *     head length;
 *   - the chunked decoder consumes at most what it gets, returns data only
 *     from what it consumed, never exceeds the body limit, and gives the
 *     same body and verdict whether the input comes whole or in two pieces.
 * All of it with the default limits and with tiny ones, so the limit paths
 * are reached by short inputs.
 */
#include "http1.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c) \
    do { if (!(c)) { fprintf(stderr, "fuzz_http1: %s (line %d)\n", #c, __LINE__); abort(); } } while (0)

#define MAX_HEADERS 128

static const gw_http1_limits_t tiny_limits = {
    .request_line = 48, .fields = 4, .field_size = 40, .head = 200,
    .body = 100, .chunk_ext = 8, .trailers = 32,
};

static uint64_t
hash(const uint8_t *d, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ d[i]) * 1099511628211ULL;
    return h;
}

static int
inside(gw_str_t s, const char *base, size_t len)
{
    return s.len == 0 || (s.ptr >= base && s.ptr + s.len <= base + len);
}

static int
known_status(int st)
{
    return st == 400 || st == 413 || st == 414 || st == 431 || st == 501 || st == 505;
}

/* Parse data[0..n) from its own exact-size copy. */
static ssize_t
parse_copy(const uint8_t *data, size_t n, const gw_http1_limits_t *lim,
           gw_http1_request_t *req, gw_http1_header_t *hdrs, gw_http1_error_t *err)
{
    char *buf = malloc(n ? n : 1);
    ssize_t r;

    CHECK(buf != NULL);
    memcpy(buf, data, n);
    memset(req, 0, sizeof(*req));
    req->headers = hdrs;
    req->max_headers = MAX_HEADERS;
    err->status = 0;
    err->why = NULL;
    r = gw_http1_parse_request(buf, n, lim, req, err);
    if (r > 0) {
        size_t h = (size_t)r;
        CHECK(h <= n);
        CHECK(inside(req->method, buf, h) && req->method.len > 0);
        CHECK(inside(req->target, buf, h) && req->target.len > 0);
        CHECK(inside(req->path, buf, h));
        CHECK(inside(req->query, buf, h));
        CHECK(inside(req->host, buf, h));
        CHECK(req->minor == 0 || req->minor == 1);
        CHECK(req->nheaders <= req->max_headers && req->nheaders <= lim->fields);
        for (size_t i = 0; i < req->nheaders; i++) {
            CHECK(inside(req->headers[i].name, buf, h) && req->headers[i].name.len > 0);
            CHECK(inside(req->headers[i].value, buf, h));
        }
        CHECK(req->body != GW_HTTP1_BODY_LENGTH
              || (req->content_length > 0 && req->content_length <= lim->body));
        CHECK(req->body != GW_HTTP1_BODY_CHUNKED || req->minor == 1);
        CHECK(req->minor == 0 || req->host.ptr != NULL || req->host.len == 0);
    } else if (r == GW_HTTP1_ERROR) {
        CHECK(known_status(err->status) && err->why != NULL);
    } else {
        CHECK(r == GW_HTTP1_AGAIN);
    }
    free(buf);
    return r;
}

static void
check_head(const uint8_t *data, size_t n, size_t split, const gw_http1_limits_t *lim)
{
    static gw_http1_header_t hdrs[MAX_HEADERS];
    gw_http1_request_t req;
    gw_http1_error_t err, err2;
    ssize_t whole, part;

    whole = parse_copy(data, n, lim, &req, hdrs, &err);
    part = parse_copy(data, split, lim, &req, hdrs, &err2);
    if (whole > 0) {
        if (split >= (size_t)whole)
            CHECK(part == whole);
        else
            CHECK(part == GW_HTTP1_AGAIN);
    } else if (whole == GW_HTTP1_ERROR) {
        CHECK(part == GW_HTTP1_AGAIN
              || (part == GW_HTTP1_ERROR && err2.status == err.status && strcmp(err2.why, err.why) == 0));
    } else {
        CHECK(part == GW_HTTP1_AGAIN);
    }
}

typedef struct {
    int       error;      /* status, 0 if none */
    int       done;
    size_t    consumed;
    uint8_t  *body;
    size_t    blen;
} chunk_run_t;

/* Feed data[0..n) to a fresh decoder in two pieces, [0, split) and
 * [split, n), each from its own exact-size copy. */
static void
decode_pieces(const uint8_t *data, size_t n, size_t split, const gw_http1_limits_t *lim,
              chunk_run_t *out)
{
    gw_http1_chunked_t c;
    size_t bounds[2][2] = { { 0, split }, { split, n } };

    memset(out, 0, sizeof(*out));
    out->body = malloc(n ? n : 1);
    CHECK(out->body != NULL);
    gw_http1_chunked_init(&c);

    for (int k = 0; k < 2 && !c.done && !out->error; k++) {
        size_t len = bounds[k][1] - bounds[k][0], used = 0;
        char *buf = malloc(len ? len : 1);
        CHECK(buf != NULL);
        memcpy(buf, data + bounds[k][0], len);
        for (;;) {
            gw_str_t d;
            gw_http1_error_t err;
            ssize_t r = gw_http1_chunked_decode(&c, buf + used, len - used, lim, &d, &err);
            if (r == GW_HTTP1_ERROR) {
                CHECK((err.status == 400 || err.status == 413) && err.why != NULL);
                out->error = err.status;
                break;
            }
            CHECK(r >= 0 && (size_t)r <= len - used);
            CHECK(d.len <= (size_t)r && inside(d, buf + used, (size_t)r));
            memcpy(out->body + out->blen, d.ptr, d.len);
            out->blen += d.len;
            used += (size_t)r;
            CHECK(c.total == out->blen && c.total <= lim->body);
            if (c.done) {
                /* nothing more is ever consumed */
                gw_str_t d2;
                CHECK(gw_http1_chunked_decode(&c, buf + used, len - used, lim, &d2, &err) == 0);
                break;
            }
            if (r == 0 || used == len) {
                CHECK(used == len);
                break;
            }
        }
        out->consumed += used;
        free(buf);
    }
    out->done = c.done;
}

static void
check_chunked(const uint8_t *data, size_t n, size_t split, const gw_http1_limits_t *lim)
{
    chunk_run_t a, b;

    decode_pieces(data, n, n, lim, &a);
    decode_pieces(data, n, split, lim, &b);
    CHECK(a.error == b.error);
    CHECK(a.done == b.done);
    if (!a.error) {
        CHECK(a.consumed == b.consumed);
        CHECK(a.blen == b.blen && memcmp(a.body, b.body, a.blen) == 0);
        CHECK(a.done || a.consumed == n);
    }
    free(a.body);
    free(b.body);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static gw_http1_header_t hdrs[MAX_HEADERS];
    gw_http1_request_t req;
    gw_http1_error_t err;
    size_t split = size ? (size_t)(hash(data, size) % (size + 1)) : 0;
    ssize_t r;

    check_head(data, size, split, &gw_http1_default_limits);
    check_head(data, size, split, &tiny_limits);

    /* the input as a chunked body straight away... */
    check_chunked(data, size, split, &gw_http1_default_limits);
    check_chunked(data, size, split, &tiny_limits);

    /* ...and as the body after a head that announces chunked */
    r = parse_copy(data, size, &gw_http1_default_limits, &req, hdrs, &err);
    if (r > 0 && req.body == GW_HTTP1_BODY_CHUNKED) {
        size_t rest = size - (size_t)r;
        check_chunked(data + r, rest, rest ? split % (rest + 1) : 0, &gw_http1_default_limits);
    }
    return 0;
}
