/*
 * check_http1.c - unit tests for the strict HTTP/1.x request parser
 * (gateway/http1.c): the three request corpora (generated headers from
 * tests/unit/gen_corpus.py), every corpus case split at every byte offset
 * and fed one byte at a time, and one explicit test per RFC 9112 smuggling
 * rule and per case of deps.md "Cases the parser must pass".
 *
 * Every parser call sees its input copied so that it ends right before a
 * PROT_NONE page: reading one byte too far is a SIGSEGV, not a silent pass.
 */
#include "check_main.h"
#include "http1.h"

#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "corpus_gunicorn-requests.h"
#include "corpus_llhttp-requests.h"
#include "corpus_desync-guardian.h"

/* Check's ck_assert_* records its location with a write(2) even when the
 * check passes; the feeding loops below make millions of checks, so they
 * only call into Check on failure. */
#define REQUIRE(cond, ...) \
    do { if (!(cond)) ck_abort_msg(__VA_ARGS__); } while (0)

/* ---- guard page -------------------------------------------------------- */

#define GUARD_CAP  (4u << 20)     /* largest input a test feeds at once */

static unsigned char *guard_end;  /* first byte of the PROT_NONE page */

/* Copy src so that its last byte sits right before the guard page. The
 * region is per process, and Check forks each test, so no sharing. */
static const char *
guarded(const void *src, size_t len)
{
    if (guard_end == NULL) {
        long pg = sysconf(_SC_PAGESIZE);
        unsigned char *m = mmap(NULL, GUARD_CAP + (size_t)pg, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        REQUIRE(m != MAP_FAILED, "mmap failed");
        REQUIRE(mprotect(m + GUARD_CAP, (size_t)pg, PROT_NONE) == 0, "mprotect failed");
        guard_end = m + GUARD_CAP;
    }
    REQUIRE(len <= GUARD_CAP, "input too large for the guard region");
    if (len > 0)
        memmove(guard_end - len, src, len);
    return (const char *)(guard_end - len);
}

/* ---- driver: feeds a byte string the way the front would ----------------- */

#define MAX_MSGS     8
#define MAX_HEADERS  256

typedef struct {
    size_t off, len;              /* into result_t.arena */
} span_t;

typedef struct {
    span_t   method, target, path, query, host;
    int      minor;
    size_t   nheaders, dropped;
    span_t   hname[MAX_HEADERS], hvalue[MAX_HEADERS];
    int      body_type;
    uint64_t content_length;
    unsigned keepalive, expect_continue, upgrade;
    span_t   body;                /* grows as body bytes arrive */
    int      complete;            /* body fully received */
    size_t   end;                 /* offset just past the message */
    size_t   head_len;
} rmsg_t;

enum { R_END, R_INCOMPLETE, R_CLOSED, R_UPGRADE, R_ERROR };
static const char *const r_names[] = { "end", "incomplete", "closed", "upgrade", "error" };

typedef struct {
    rmsg_t      msgs[MAX_MSGS];
    size_t      nmsgs;            /* messages whose head parsed */
    int         end;
    int         status;
    const char *why;
    size_t      pos;              /* bytes consumed */
    char       *arena;
    size_t      used, cap;
} result_t;

enum { FEED_WHOLE, FEED_SPLIT, FEED_BYTES };

static span_t
keep(result_t *r, const char *p, size_t n)
{
    span_t s = { r->used, n };
    REQUIRE(r->used + n <= r->cap, "test arena full");
    if (n > 0)
        memcpy(r->arena + r->used, p, n);
    r->used += n;
    return s;
}

static const char *
at(const result_t *r, span_t s)
{
    return r->arena + s.off;
}

/* A span the parser returned must lie inside what it was given. */
static void
check_inside(gw_str_t s, const char *base, size_t len, const char *what)
{
    if (s.len == 0)
        return;
    REQUIRE(s.ptr >= base && s.ptr + s.len <= base + len,
                  "%s span outside the buffer", what);
}

static void
result_init(result_t *r, size_t rawlen)
{
    memset(r, 0, sizeof(*r));
    r->cap = 3 * rawlen + 1024;
    r->arena = malloc(r->cap);
    REQUIRE(r->arena != NULL, "out of memory");
}

static void
result_free(result_t *r)
{
    free(r->arena);
    r->arena = NULL;
}

/*
 * Parse raw[0..len) as a connection would receive it: FEED_WHOLE gets all
 * bytes at once, FEED_SPLIT gets raw[0..split) and then the rest, FEED_BYTES
 * one more byte per step. The head parser is re-called from the message
 * start with the grown buffer; the chunked decoder gets the new bytes only.
 */
static void
drive(const char *raw, size_t len, const gw_http1_limits_t *lim, int mode, size_t split,
      result_t *res)
{
    size_t avail = mode == FEED_WHOLE ? len : mode == FEED_SPLIT ? split : (len ? 1 : 0);
    size_t pos = 0;
    static gw_http1_header_t hdrs[MAX_HEADERS];

#define GROW() (avail = (mode == FEED_BYTES) ? avail + 1 : len)

    for (;;) {
        gw_http1_request_t req;
        gw_http1_error_t err;
        rmsg_t *m;
        ssize_t r;

        for (;;) {
            const char *g = guarded(raw + pos, avail - pos);
            memset(&req, 0xa5, sizeof(req));
            req.headers = hdrs;
            req.max_headers = MAX_HEADERS;
            err.status = 0;
            err.why = NULL;
            r = gw_http1_parse_request(g, avail - pos, lim, &req, &err);
            if (r == GW_HTTP1_AGAIN) {
                if (avail == len) {
                    res->end = R_INCOMPLETE;
                    res->pos = pos;
                    return;
                }
                GROW();
                continue;
            }
            if (r == GW_HTTP1_ERROR) {
                REQUIRE(err.status == 400 || err.status == 413 || err.status == 414
                              || err.status == 431 || err.status == 501 || err.status == 505,
                              "unexpected status %d", err.status);
                REQUIRE(err.why != NULL, "error without a reason");
                res->end = R_ERROR;
                res->status = err.status;
                res->why = err.why;
                res->pos = pos;
                return;
            }
            REQUIRE(r > 0 && (size_t)r <= avail - pos, "bad head length %zd", r);
            check_inside(req.method, g, (size_t)r, "method");
            check_inside(req.target, g, (size_t)r, "target");
            check_inside(req.path, g, (size_t)r, "path");
            check_inside(req.query, g, (size_t)r, "query");
            check_inside(req.host, g, (size_t)r, "host");
            REQUIRE(req.nheaders <= MAX_HEADERS, "nheaders over capacity");
            REQUIRE(req.minor == 0 || req.minor == 1, "minor %d", req.minor);
            REQUIRE(req.method.len > 0, "empty method");
            REQUIRE(req.target.len > 0, "empty target");
            if (res->nmsgs == MAX_MSGS) {
                res->end = R_ERROR;
                res->status = -1;
                res->why = "too many messages for the test driver";
                return;
            }
            m = &res->msgs[res->nmsgs++];
            memset(m, 0, sizeof(*m));
            m->method = keep(res, req.method.ptr, req.method.len);
            m->target = keep(res, req.target.ptr, req.target.len);
            m->path = keep(res, req.path.ptr, req.path.len);
            m->query = keep(res, req.query.ptr, req.query.len);
            m->host = keep(res, req.host.ptr, req.host.len);
            m->minor = req.minor;
            m->nheaders = req.nheaders;
            m->dropped = req.dropped;
            for (size_t i = 0; i < req.nheaders; i++) {
                check_inside(req.headers[i].name, g, (size_t)r, "header name");
                check_inside(req.headers[i].value, g, (size_t)r, "header value");
                REQUIRE(req.headers[i].name.len > 0, "empty header name");
                m->hname[i] = keep(res, req.headers[i].name.ptr, req.headers[i].name.len);
                m->hvalue[i] = keep(res, req.headers[i].value.ptr, req.headers[i].value.len);
            }
            m->body_type = req.body;
            m->content_length = req.body == GW_HTTP1_BODY_LENGTH ? req.content_length : 0;
            m->keepalive = req.keepalive;
            m->expect_continue = req.expect_continue;
            m->upgrade = req.upgrade;
            m->head_len = (size_t)r;
            pos += (size_t)r;
            break;
        }

        m->body.off = res->used;
        if (req.body == GW_HTTP1_BODY_LENGTH) {
            uint64_t left = req.content_length;
            REQUIRE(left > 0, "BODY_LENGTH with length 0");
            for (;;) {
                size_t n = avail - pos;
                if ((uint64_t)n > left)
                    n = (size_t)left;
                keep(res, raw + pos, n);
                m->body.len += n;
                pos += n;
                left -= n;
                if (left == 0)
                    break;
                if (avail == len) {
                    res->end = R_INCOMPLETE;
                    res->pos = pos;
                    return;
                }
                GROW();
            }
        } else if (req.body == GW_HTTP1_BODY_CHUNKED) {
            gw_http1_chunked_t c;
            gw_http1_chunked_init(&c);
            while (!c.done) {
                gw_str_t data;
                const char *g = guarded(raw + pos, avail - pos);
                ssize_t n = gw_http1_chunked_decode(&c, g, avail - pos, lim, &data, &err);
                if (n == GW_HTTP1_ERROR) {
                    REQUIRE(err.status == 400 || err.status == 413, "chunked status %d", err.status);
                    res->end = R_ERROR;
                    res->status = err.status;
                    res->why = err.why;
                    res->pos = pos;
                    return;
                }
                REQUIRE(n >= 0 && (size_t)n <= avail - pos, "bad consumed %zd", n);
                check_inside(data, g, (size_t)n, "chunk data");
                keep(res, data.ptr, data.len);
                m->body.len += data.len;
                REQUIRE(c.total == m->body.len, "chunked total %llu", (unsigned long long)c.total);
                pos += (size_t)n;
                if (c.done)
                    break;
                if (pos == avail) {
                    if (avail == len) {
                        res->end = R_INCOMPLETE;
                        res->pos = pos;
                        return;
                    }
                    GROW();
                } else {
                    REQUIRE(n > 0, "no progress");   /* or we would spin */
                }
            }
        }
        m->complete = 1;
        m->end = pos;
        res->pos = pos;
        if (!req.keepalive) {
            res->end = R_CLOSED;
            return;
        }
        if (req.upgrade) {
            res->end = R_UPGRADE;
            return;
        }
        if (pos == len) {
            res->end = R_END;
            return;
        }
        if (pos == avail)
            GROW();
    }
#undef GROW
}

static int
span_eq(const result_t *a, span_t x, const result_t *b, span_t y)
{
    return x.len == y.len && memcmp(at(a, x), at(b, y), x.len) == 0;
}

/* Two runs over the same bytes must agree on everything observable. */
static const char *
result_diff(const result_t *a, const result_t *b)
{
    if (a->end != b->end)
        return "end state";
    if (a->status != b->status)
        return "status";
    if ((a->why == NULL) != (b->why == NULL) || (a->why && strcmp(a->why, b->why) != 0))
        return "error reason";
    /* after an error the front closes: where the bytes stopped is moot */
    if (a->end != R_ERROR && a->pos != b->pos)
        return "bytes consumed";
    if (a->nmsgs != b->nmsgs)
        return "message count";
    for (size_t i = 0; i < a->nmsgs; i++) {
        const rmsg_t *x = &a->msgs[i], *y = &b->msgs[i];
        if (!span_eq(a, x->method, b, y->method) || !span_eq(a, x->target, b, y->target)
            || !span_eq(a, x->path, b, y->path) || !span_eq(a, x->query, b, y->query)
            || !span_eq(a, x->host, b, y->host))
            return "request line or host";
        if (x->minor != y->minor || x->nheaders != y->nheaders || x->dropped != y->dropped
            || x->body_type != y->body_type || x->content_length != y->content_length
            || x->keepalive != y->keepalive || x->upgrade != y->upgrade
            || x->expect_continue != y->expect_continue || x->complete != y->complete
            || x->end != y->end || x->head_len != y->head_len)
            return "message fields";
        for (size_t h = 0; h < x->nheaders; h++)
            if (!span_eq(a, x->hname[h], b, y->hname[h]) || !span_eq(a, x->hvalue[h], b, y->hvalue[h]))
                return "headers";
        if (!span_eq(a, x->body, b, y->body))
            return "body";
    }
    return NULL;
}

static void
result_reset(result_t *r)
{
    char *arena = r->arena;
    size_t cap = r->cap;
    memset(r, 0, sizeof(*r));
    r->arena = arena;
    r->cap = cap;
}

/*
 * Run raw whole, then split at every offset, then (when small enough) one
 * byte at a time, and require identical results. The whole-input result is
 * left in *out for the caller's own checks. Every corpus case is at most
 * 16 KiB and gets every offset; the few larger unit-test inputs (64 KiB
 * heads) get about 4096 offsets spread over their length, plus the last 64.
 */
#define EVERY_OFFSET_MAX 16384
#define BYTEWISE_MAX     4096

static void
run_feeds(const char *raw, size_t len, const gw_http1_limits_t *lim, result_t *out,
          const char *label)
{
    size_t step = len <= EVERY_OFFSET_MAX ? 1 : len / 4096 + 1;
    result_t r;

    result_init(out, len);
    drive(raw, len, lim, FEED_WHOLE, 0, out);
    result_init(&r, len);
    for (size_t k = 0; k <= len; k += (len - k <= 64 ? 1 : step)) {
        const char *d;
        result_reset(&r);
        drive(raw, len, lim, FEED_SPLIT, k, &r);
        d = result_diff(out, &r);
        REQUIRE(d == NULL, "%s: split at %zu of %zu differs from whole input: %s"
                      " (whole: %s %d %s; split: %s %d %s)", label, k, len, d,
                      r_names[out->end], out->status, out->why ? out->why : "",
                      r_names[r.end], r.status, r.why ? r.why : "");
    }
    if (len <= BYTEWISE_MAX) {
        const char *d;
        result_reset(&r);
        drive(raw, len, lim, FEED_BYTES, 0, &r);
        d = result_diff(out, &r);
        REQUIRE(d == NULL, "%s: byte-at-a-time differs from whole input: %s", label, d);
    }
    result_free(&r);
}

/* ---- corpus cases ------------------------------------------------------------ */

/*
 * Where our policy and a corpus verdict differ and no generic rule covers
 * it. `variant` NULL means both variants. Each entry says what we do.
 */
enum { DEV_ACCEPT, DEV_REJECT };

typedef struct {
    const char *corpus, *name_prefix, *variant;
    int         outcome, status;
    const char *why;
} deviation_t;

static const deviation_t deviations[] = {
    /* llhttp ties methods to protocols (ANNOUNCE is RTSP) and has a fixed
     * method list (MKCOLA): its strict verdict is "invalid method". */
    { "llhttp", "invalid.md:66 ", NULL, DEV_ACCEPT, 0,
      "any token method is accepted (http1.h; deps.md: 'any token method ... is not a parse error')" },
    { "llhttp", "invalid.md:356 ", "+Host", DEV_ACCEPT, 0,
      "any token method is accepted (http1.h; deps.md)" },
    /* desync-guardian calls a body on GET/HEAD ambiguous. Our framing never
     * depends on the method (CL or chunked is read the same way for every
     * request), and deps.md requires accepting "a GET with a CL body", as
     * the gunicorn and llhttp corpora do. The raw variants lack Host and
     * are refused for that. */
    { "desync", "ambiguous.yaml#12 ", "+Host", DEV_ACCEPT, 0, "framing does not depend on the method" },
    { "desync", "ambiguous.yaml#13 ", "+Host", DEV_ACCEPT, 0, "framing does not depend on the method" },
    { "desync", "ambiguous.yaml#14 ", "+Host", DEV_ACCEPT, 0, "framing does not depend on the method" },
    { "desync", "ambiguous.yaml#15 ", "+Host", DEV_ACCEPT, 0, "framing does not depend on the method" },
    { "desync", "real-life-test-cases.yaml#0 ", "+Host", DEV_ACCEPT, 0, "framing does not depend on the method" },
    { "desync", "real-life-test-cases.yaml#1 ", "+Host", DEV_ACCEPT, 0, "framing does not depend on the method" },
    /* RFC 9112 7: "The chunked coding does not define any parameters.
     * Their presence SHOULD be treated as an error." */
    { "desync", "more-compliant-tests.yaml#9 ", "+Host", DEV_REJECT, 400,
      "parameters on chunked are an error (RFC 9112 7)" },
};

static const deviation_t *
find_deviation(const char *corpus, const gw_corpus_case_t *k)
{
    for (size_t i = 0; i < sizeof(deviations) / sizeof(deviations[0]); i++) {
        const deviation_t *d = &deviations[i];
        if (strcmp(d->corpus, corpus) == 0
            && strncmp(k->name, d->name_prefix, strlen(d->name_prefix)) == 0
            && (d->variant == NULL || strcmp(d->variant, k->variant) == 0))
            return d;
    }
    return NULL;
}

enum { OK_EXACT, OK_POLICY, OK_EITHER, OK_DEVIATION, BAD };

static int
status_in(int st, const int *list, size_t n)
{
    for (size_t i = 0; i < n && list[i] != 0; i++)
        if (list[i] == st)
            return 1;
    return 0;
}

static int
headers_match(const result_t *r, const rmsg_t *m, const gw_corpus_msg_t *x, char *why, size_t wl)
{
    if (m->nheaders != x->nheaders) {
        snprintf(why, wl, "%zu headers kept, corpus has %zu", m->nheaders, x->nheaders);
        return 0;
    }
    for (size_t h = 0; h < x->nheaders; h++) {
        const gw_corpus_hdr_t *e = &x->headers[h];
        if (m->hname[h].len != e->name_len
            || strncasecmp(at(r, m->hname[h]), e->name, e->name_len) != 0
            || m->hvalue[h].len != e->value_len
            || memcmp(at(r, m->hvalue[h]), e->value, e->value_len) != 0) {
            snprintf(why, wl, "header %zu is '%.*s: %.*s', corpus '%s: %s'", h,
                     (int)m->hname[h].len, at(r, m->hname[h]), (int)m->hvalue[h].len,
                     at(r, m->hvalue[h]), e->name, e->value);
            return 0;
        }
    }
    return 1;
}

static int
message_matches(const result_t *r, const rmsg_t *m, const gw_corpus_msg_t *x, char *why, size_t wl)
{
    if (m->method.len != x->method_len || memcmp(at(r, m->method), x->method, x->method_len) != 0
        || m->target.len != x->target_len || memcmp(at(r, m->target), x->target, x->target_len) != 0) {
        snprintf(why, wl, "request line '%.*s %.*s', corpus '%s %s'", (int)m->method.len,
                 at(r, m->method), (int)m->target.len, at(r, m->target), x->method, x->target);
        return 0;
    }
    if (m->minor != x->minor) {
        snprintf(why, wl, "HTTP/1.%d, corpus minor %d", m->minor, x->minor);
        return 0;
    }
    if (x->check_headers && !headers_match(r, m, x, why, wl))
        return 0;
    if (x->complete) {
        if (!m->complete || m->body.len != x->body_len
            || memcmp(at(r, m->body), x->body, x->body_len) != 0) {
            snprintf(why, wl, "body %zu bytes (complete %d), corpus %zu", m->body.len, m->complete,
                     x->body_len);
            return 0;
        }
        if (x->end >= 0 && (long)m->end != x->end) {
            snprintf(why, wl, "message ends at %zu, corpus framing says %ld", m->end, x->end);
            return 0;
        }
    } else if (m->body.len > x->body_len || memcmp(at(r, m->body), x->body, m->body.len) != 0) {
        snprintf(why, wl, "partial body differs");
        return 0;
    }
    return 1;
}

/* Judge one whole-input result against the corpus expectation. */
static int
judge(const char *corpus, const gw_corpus_case_t *k, const result_t *r, char *why, size_t wl)
{
    const deviation_t *dev = find_deviation(corpus, k);
    size_t i;

    if (dev != NULL) {
        if (dev->outcome == DEV_ACCEPT && r->end != R_ERROR && r->nmsgs >= 1)
            return OK_DEVIATION;
        if (dev->outcome == DEV_REJECT && r->end == R_ERROR && r->status == dev->status)
            return OK_DEVIATION;
        snprintf(why, wl, "listed deviation (%s) not met: %s %d %s", dev->why,
                 r_names[r->end], r->status, r->why ? r->why : "");
        return BAD;
    }
    if (k->kind == GW_CORPUS_EITHER)
        return OK_EITHER;

    for (i = 0; i < k->nmsgs; i++) {
        const gw_corpus_msg_t *x = &k->msgs[i];
        if (i >= r->nmsgs) {
            /* Policy notes: our stricter policy may refuse this message
             * (HTTP/1.1 without Host, codings other than chunked, CONNECT,
             * ...). Refusing it with one of the listed statuses is right. */
            if (r->end == R_ERROR && status_in(r->status, x->policy, 4))
                return OK_POLICY;
            if (!x->head_complete && r->end == R_INCOMPLETE && i + 1 == k->nmsgs)
                return OK_EXACT;
            snprintf(why, wl, "message %zu not parsed: %s %d %s%s%s", i + 1, r_names[r->end],
                     r->status, r->why ? r->why : "", x->policy_why ? "; policy: " : "",
                     x->policy_why ? x->policy_why : "");
            return BAD;
        }
        if (!message_matches(r, &r->msgs[i], x, why, wl))
            return BAD;
    }
    if (k->dropped >= 0 && r->nmsgs >= 1 && (long)r->msgs[0].dropped != k->dropped) {
        snprintf(why, wl, "%zu '_' headers dropped, expected %ld", r->msgs[0].dropped, k->dropped);
        return BAD;
    }

    if (k->kind == GW_CORPUS_VALID) {
        const gw_corpus_msg_t *last = &k->msgs[k->nmsgs - 1];
        if (r->nmsgs != k->nmsgs) {
            snprintf(why, wl, "%zu messages parsed, corpus has %zu (%s %d %s)", r->nmsgs, k->nmsgs,
                     r_names[r->end], r->status, r->why ? r->why : "");
            return BAD;
        }
        if (!last->complete) {
            if (r->end != R_INCOMPLETE) {
                snprintf(why, wl, "last message should be incomplete, got %s", r_names[r->end]);
                return BAD;
            }
        } else if (r->end == R_ERROR) {
            /* trailing bytes after the last expected message */
            snprintf(why, wl, "error after the last message: %d %s", r->status, r->why);
            return BAD;
        }
        return OK_EXACT;
    }

    /* INVALID: the messages before the error matched; now the verdict. */
    if (r->nmsgs > k->nmsgs + 1) {
        snprintf(why, wl, "%zu messages parsed, only %zu expected before the error", r->nmsgs, k->nmsgs);
        return BAD;
    }
    switch (k->end_kind) {
    case GW_CORPUS_END_CLOSED:
        if (r->end == R_CLOSED && r->nmsgs == k->nmsgs)
            return OK_EXACT;
        break;
    case GW_CORPUS_END_INCOMPLETE:
        if (r->end == R_INCOMPLETE)
            return OK_EXACT;
        break;
    default:
        if (r->end == R_ERROR && (r->status == k->status || status_in(r->status, k->alt_status, 3)))
            return OK_EXACT;
        break;
    }
    snprintf(why, wl, "expected %s %d (%s), got %s %d %s",
             k->end_kind == GW_CORPUS_END_CLOSED ? "close" :
             k->end_kind == GW_CORPUS_END_INCOMPLETE ? "incomplete" : "error", k->status,
             k->note ? k->note : "", r_names[r->end], r->status, r->why ? r->why : "");
    return BAD;
}

static void
run_corpus(const char *corpus, const gw_corpus_case_t *cases, size_t n)
{
    size_t counts[BAD + 1] = { 0 }, skipped = 0;
    char why[512];

    for (size_t i = 0; i < n; i++) {
        const gw_corpus_case_t *k = &cases[i];
        gw_http1_limits_t lim = gw_http1_default_limits;
        char label[256];
        result_t r;
        int v;

        if (k->skip != NULL) {
            printf("http1 %s: skip %s [%s]: %s\n", corpus, k->name, k->variant, k->skip);
            skipped++;
            continue;
        }
        if (k->limit_request_line)
            lim.request_line = k->limit_request_line;
        if (k->limit_request_fields)
            lim.fields = k->limit_request_fields;
        if (k->limit_request_field_size)
            lim.field_size = k->limit_request_field_size;
        snprintf(label, sizeof(label), "%s %s [%s]", corpus, k->name, k->variant);

        run_feeds(k->raw, k->raw_len, &lim, &r, label);
        why[0] = '\0';
        v = judge(corpus, k, &r, why, sizeof(why));
        counts[v]++;
        if (v == BAD)
            printf("http1 FAIL %s: %s\n", label, why);
        else if (getenv("GW_TEST_VERBOSE") != NULL && (v != OK_EXACT || k->kind == GW_CORPUS_INVALID))
            printf("http1 %s %s: %s %d %s (%s)\n", v == OK_POLICY ? "policy" : v == OK_EITHER ? "either"
                   : v == OK_DEVIATION ? "deviation" : "exact", label, r_names[r.end], r.status,
                   r.why ? r.why : "", k->note ? k->note : "");
        result_free(&r);
    }
    printf("http1 %s: %zu cases: %zu exact, %zu refused under a policy note, %zu either-way,"
           " %zu listed deviations, %zu skipped, %zu failed\n", corpus, n, counts[OK_EXACT],
           counts[OK_POLICY], counts[OK_EITHER], counts[OK_DEVIATION], skipped, counts[BAD]);
    fflush(stdout);
    ck_assert_msg(counts[BAD] == 0, "%s: %zu corpus cases failed (see output)", corpus, counts[BAD]);
}

START_TEST(corpus_gunicorn)
{
    run_corpus("gunicorn", gw_corpus_gunicorn_requests, GW_CORPUS_GUNICORN_REQUESTS_COUNT);
}
END_TEST

START_TEST(corpus_llhttp)
{
    run_corpus("llhttp", gw_corpus_llhttp_requests, GW_CORPUS_LLHTTP_REQUESTS_COUNT);
}
END_TEST

START_TEST(corpus_desync)
{
    run_corpus("desync", gw_corpus_desync_guardian, GW_CORPUS_DESYNC_GUARDIAN_COUNT);
}
END_TEST

/* ---- helpers for the explicit cases ------------------------------------------- */

#define S(lit) lit, sizeof(lit) - 1

/* Parse under all feeds with default limits; return the whole-input result. */
static void
run(const char *raw, size_t len, result_t *r)
{
    run_feeds(raw, len, &gw_http1_default_limits, r, raw);
}

static void
expect_reject_lim(const char *raw, size_t len, const gw_http1_limits_t *lim, int status)
{
    result_t r;
    run_feeds(raw, len, lim, &r, raw);
    ck_assert_msg(r.end == R_ERROR && r.status == status,
                  "'%.*s': expected %d, got %s %d %s", (int)(len > 200 ? 200 : len), raw, status,
                  r_names[r.end], r.status, r.why ? r.why : "");
    result_free(&r);
}

static void
expect_reject(const char *raw, size_t len, int status)
{
    expect_reject_lim(raw, len, &gw_http1_default_limits, status);
}

/* Accepted: every message parsed and nothing left over but an allowed end. */
static void
expect_accept(const char *raw, size_t len, size_t nmsgs, result_t *r)
{
    run(raw, len, r);
    ck_assert_msg(r->end != R_ERROR && r->nmsgs == nmsgs,
                  "'%.*s': expected %zu messages, got %zu, %s %d %s", (int)(len > 200 ? 200 : len),
                  raw, nmsgs, r->nmsgs, r_names[r->end], r->status, r->why ? r->why : "");
}

#define REJECT(lit, st)  expect_reject(S(lit), st)

static int
str_is(const result_t *r, span_t s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(at(r, s), lit, s.len) == 0;
}

#define GET11 "GET / HTTP/1.1\r\nHost: a\r\n"
#define POST11 "POST /p HTTP/1.1\r\nHost: a\r\n"
#define CHUNKED_HEAD POST11 "Transfer-Encoding: chunked\r\n\r\n"

/* ---- request line --------------------------------------------------------- */

START_TEST(request_line_rejects)
{
    REJECT("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400);             /* double SP */
    REJECT("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400);             /* SP before CRLF */
    REJECT("GET /\r\n\r\n", 400);                                   /* HTTP/0.9 */
    REJECT("GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1.1\r\nHost: a\r\n\r\n", 400);
    REJECT("GET / HTTP/11\r\nHost: a\r\n\r\n", 400);
    REJECT("GET / http/1.1\r\nHost: a\r\n\r\n", 400);
    REJECT("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505);
    REJECT("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505);
    REJECT("GET / HTTP/0.9\r\n\r\n", 505);
    REJECT("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400);               /* not a token */
    REJECT("GET: / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    REJECT("get / HTTP/1.1\r\nHost: a\r\n\r\n", 400);               /* lowercase: Gunicorn's rule */
    REJECT(" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    REJECT("GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400);          /* CTL in target */
    REJECT("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400);          /* DEL in target */
    REJECT("GET /a\xff HTTP/1.1\r\nHost: a\r\n\r\n", 400);          /* 8-bit in target */
    REJECT("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    REJECT("GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400);             /* relative */
    REJECT("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400);               /* '*' only for OPTIONS */
    REJECT("GET a.example:443 HTTP/1.1\r\nHost: a\r\n\r\n", 400);   /* authority-form */
    REJECT("GET ftp://a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    REJECT("GET http:///b HTTP/1.1\r\nHost: a\r\n\r\n", 400);       /* empty host */
    REJECT("GET http://a b/ HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\nHost: a\r\n\r\n", 400);                 /* bare LF */
    REJECT("GET / HTTP/1.1\rHost: a\r\n\r\n", 400);                 /* bare CR */
    REJECT("\r\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    REJECT("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}
END_TEST

START_TEST(request_line_accepts)
{
    result_t r;

    expect_accept(S("GET /a/b?x=1&y=2#frag HTTP/1.1\r\nHost: example.com\r\n\r\n"), 1, &r);
    ck_assert(str_is(&r, r.msgs[0].method, "GET"));
    ck_assert(str_is(&r, r.msgs[0].target, "/a/b?x=1&y=2#frag"));
    ck_assert(str_is(&r, r.msgs[0].path, "/a/b"));
    ck_assert(str_is(&r, r.msgs[0].query, "x=1&y=2"));
    ck_assert(str_is(&r, r.msgs[0].host, "example.com"));
    ck_assert_int_eq(r.msgs[0].minor, 1);
    ck_assert_int_eq(r.end, R_END);
    result_free(&r);

    /* one leading CRLF (RFC 9112 2.2), and more: all count as head bytes */
    expect_accept(S("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 1, &r);
    ck_assert_uint_eq(r.msgs[0].head_len, 29);
    result_free(&r);
    expect_accept(S("\r\n\r\nGET / HTTP/1.0\r\n\r\n"), 1, &r);
    result_free(&r);

    /* any token method: routing or 501 is the app's business, not ours */
    expect_accept(S("FOO-BAR_9 /x HTTP/1.1\r\nHost: a\r\n\r\n"), 1, &r);
    ck_assert(str_is(&r, r.msgs[0].method, "FOO-BAR_9"));
    result_free(&r);

    expect_accept(S("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), 1, &r);
    ck_assert(str_is(&r, r.msgs[0].path, "*"));
    result_free(&r);

    /* absolute-form: the target's authority is the host (RFC 9112 3.2.2) */
    expect_accept(S("GET http://u:p@Example.com:8080?q=1 HTTP/1.1\r\nHost: other\r\n\r\n"), 1, &r);
    ck_assert(str_is(&r, r.msgs[0].host, "Example.com:8080"));
    ck_assert(str_is(&r, r.msgs[0].path, ""));
    ck_assert(str_is(&r, r.msgs[0].query, "q=1"));
    result_free(&r);
    expect_accept(S("GET HTTPS://[::1]:443/a/b HTTP/1.1\r\nHost: x\r\n\r\n"), 1, &r);
    ck_assert(str_is(&r, r.msgs[0].host, "[::1]:443"));
    ck_assert(str_is(&r, r.msgs[0].path, "/a/b"));
    result_free(&r);

    /* quotes and other visible ASCII are allowed in the target */
    expect_accept(S("GET /with_\"quotes\"?foo=\"bar\"|~ HTTP/1.1\r\nHost: a\r\n\r\n"), 1, &r);
    result_free(&r);
}
END_TEST

START_TEST(connect_is_501)
{
    REJECT("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501);
    REJECT("CONNECT [::1]:443 HTTP/1.0\r\n\r\n", 501);
}
END_TEST

/* ---- header section ------------------------------------------------------------ */

START_TEST(header_syntax_rejects)
{
    REJECT(POST11 "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400);
    REJECT(POST11 "Content-Length\t: 5\r\n\r\nhello", 400);
    REJECT(POST11 " Content-Length: 5\r\n\r\nhello", 400);            /* obs-fold after Host */
    REJECT(POST11 "Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400);                 /* SP right after request line */
    REJECT("GET / HTTP/1.1\r\n\tHost: a\r\n\r\n", 400);
    REJECT(GET11 "X-Long: one\r\n two\r\n\r\n", 400);
    REJECT(GET11 "NoColon\r\n\r\n", 400);
    REJECT(GET11 ": value\r\n\r\n", 400);
    REJECT(GET11 "X\"A: b\r\n\r\n", 400);
    REJECT(GET11 "X\xc3\x9f: b\r\n\r\n", 400);
    REJECT(GET11 "X\x80: b\r\n\r\n", 400);
    REJECT(GET11 "Content-Length\xc3\x9f: 3\r\n\r\n", 400);
    expect_reject(S(GET11 "X\0A: b\r\n\r\n"), 400);
    expect_reject(S(GET11 "X: a\0b\r\n\r\n"), 400);
    REJECT(GET11 "X: a\rb\r\n\r\n", 400);                              /* bare CR in value */
    REJECT(GET11 "X: a\x07" "b\r\n\r\n", 400);
    REJECT(GET11 "X: a\x7f" "b\r\n\r\n", 400);
    REJECT(GET11 "X: a\x0c\r\n\r\n", 400);
    REJECT(GET11 "X: a\nContent-Length: 5\r\n\r\nhello", 400);        /* bare LF */
    REJECT(GET11 "X: a\r\n\n", 400);
    REJECT(GET11 "\n", 400);
    REJECT(GET11 "X: a\r\n\rZGET / HTTP/1.1\r\n\r\n", 400);
}
END_TEST

START_TEST(header_values_trimmed_and_obs_text)
{
    result_t r;

    expect_accept(S(GET11 "Name: \t value \t \r\nUtf: caf\xc3\xa9\r\nEmpty:\r\nEmpty2:   \r\n\r\n"), 1, &r);
    ck_assert_uint_eq(r.msgs[0].nheaders, 5);
    ck_assert(str_is(&r, r.msgs[0].hname[1], "Name"));
    ck_assert(str_is(&r, r.msgs[0].hvalue[1], "value"));
    ck_assert(str_is(&r, r.msgs[0].hvalue[2], "caf\xc3\xa9"));
    ck_assert(str_is(&r, r.msgs[0].hvalue[3], ""));
    ck_assert(str_is(&r, r.msgs[0].hvalue[4], ""));
    ck_assert(str_is(&r, r.msgs[0].hvalue[0], "a"));
    result_free(&r);
}
END_TEST

START_TEST(underscore_headers)
{
    result_t r;

    /* dropped and counted (Gunicorn's default header_map=drop) */
    expect_accept(S(GET11 "X_Forwarded_For: 1.2.3.4\r\nX-Ok: 1\r\nmy_h: v\r\n\r\n"), 1, &r);
    ck_assert_uint_eq(r.msgs[0].nheaders, 2);
    ck_assert_uint_eq(r.msgs[0].dropped, 2);
    ck_assert(str_is(&r, r.msgs[0].hname[1], "X-Ok"));
    result_free(&r);
    /* a '_' or doubled '-' spelling of a framing field is refused */
    REJECT(POST11 "Transfer_Encoding: chunked\r\n\r\n", 400);
    REJECT(POST11 "Content_Length: 5\r\n\r\nhello", 400);
    REJECT(POST11 "Transfer---Encoding: chunked\r\n\r\n", 400);
    REJECT(POST11 "content__length: 5\r\n\r\nhello", 400);
    REJECT(POST11 "TransferEncoding: chunked\r\n\r\n", 400);
}
END_TEST

START_TEST(host_rules)
{
    result_t r;

    REJECT("GET / HTTP/1.1\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400);
    REJECT("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: a:80x\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400);

    expect_accept(S("GET / HTTP/1.0\r\n\r\n"), 1, &r);
    ck_assert_uint_eq(r.msgs[0].host.len, 0);          /* 1.0 without Host */
    result_free(&r);
    expect_accept(S("GET / HTTP/1.1\r\nHOST:   [::1]:8080  \r\n\r\n"), 1, &r);
    ck_assert(str_is(&r, r.msgs[0].host, "[::1]:8080"));
    result_free(&r);
    expect_accept(S("GET / HTTP/1.1\r\nHost:\r\n\r\n"), 1, &r);   /* RFC 9110 7.2: empty is valid */
    ck_assert_uint_eq(r.msgs[0].host.len, 0);
    result_free(&r);
    expect_accept(S("GET / HTTP/1.1\r\nHost: 0.0.0.0=5000\r\n\r\n"), 1, &r);
    result_free(&r);
}
END_TEST

START_TEST(duplicate_content_type)
{
    REJECT(GET11 "Content-Type: a/b\r\nContent-Type: c/d\r\n\r\n", 400);
}
END_TEST

/* ---- framing: Content-Length and Transfer-Encoding --------------------------------- */

START_TEST(framing_conflicts)
{
    /* CL with TE, either order, including CL: 0 */
    REJECT(POST11 "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
    REJECT(POST11 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400);
    REJECT(POST11 "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
    REJECT(POST11 "Transfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello", 400);
    /* two CL, equal or not */
    REJECT(POST11 "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400);
    REJECT(POST11 "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400);
}
END_TEST

START_TEST(content_length_values)
{
    result_t r;

    REJECT(POST11 "Content-Length: 5, 5\r\n\r\nhello", 400);
    REJECT(POST11 "Content-Length: 5,5\r\n\r\nhello", 400);
    REJECT(POST11 "Content-Length: +5\r\n\r\nhello", 400);
    REJECT(POST11 "Content-Length: -1\r\n\r\n", 400);
    REJECT(POST11 "Content-Length: -0\r\n\r\n", 400);
    REJECT(POST11 "Content-Length: 0x5\r\n\r\nhello", 400);
    REJECT(POST11 "Content-Length: \r\n\r\n", 400);
    REJECT(POST11 "Content-Length: 5 5\r\n\r\nhello", 400);
    REJECT(POST11 "Content-Length: 5.0\r\n\r\nhello", 400);
    REJECT(POST11 "Content-Length: 0_1\r\n\r\n", 400);
    REJECT(POST11 "Content-Length: 9223372036854775808\r\n\r\n", 400);     /* 2^63 */
    REJECT(POST11 "Content-Length: 18446744073709551616\r\n\r\n", 400);    /* 2^64 */
    REJECT(POST11 "Content-Length: 1000000000000000000\r\n\r\n", 400);     /* 19 digits */
    /* 18 digits parse, then the body limit answers */
    REJECT(POST11 "Content-Length: 999999999999999999\r\n\r\n", 413);
    REJECT(POST11 "Content-Length: 1073741825\r\n\r\n", 413);

    expect_accept(S(POST11 "Content-Length: 005\r\n\r\nhello"), 1, &r);
    ck_assert_uint_eq(r.msgs[0].content_length, 5);
    ck_assert(str_is(&r, r.msgs[0].body, "hello"));
    result_free(&r);
    expect_accept(S(POST11 "Content-Length: 5 \t\r\n\r\nhello"), 1, &r);  /* trailing OWS */
    ck_assert_uint_eq(r.msgs[0].content_length, 5);
    result_free(&r);
    expect_accept(S(POST11 "Content-Length: 0000000000000000000000005\r\n\r\nhello"), 1, &r);
    result_free(&r);
    expect_accept(S(POST11 "Content-Length: 0\r\n\r\n"), 1, &r);
    ck_assert_int_eq(r.msgs[0].body_type, GW_HTTP1_BODY_NONE);
    result_free(&r);
    expect_accept(S(POST11 "Content-Length: 1073741824\r\n\r\n"), 1, &r); /* exactly the limit */
    ck_assert_int_eq(r.end, R_INCOMPLETE);
    result_free(&r);
}
END_TEST

START_TEST(transfer_encoding_values)
{
    result_t r;

    REJECT(POST11 "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400);
    REJECT(POST11 "Transfer-Encoding: identity\r\n\r\n", 400);
    REJECT(POST11 "Transfer-Encoding: xchunked\r\n\r\n", 400);
    REJECT(POST11 "Transfer-Encoding: chunkedchunked\r\n\r\n", 400);
    REJECT(POST11 "Transfer-Encoding: chunked\v\r\n\r\n", 400);
    REJECT(POST11 "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400);
    REJECT(POST11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
    REJECT(POST11 "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
    REJECT(POST11 "Transfer-Encoding: \r\n\r\n", 400);
    REJECT(POST11 "Transfer-Encoding: , chunked\r\n\r\n0\r\n\r\n", 400);
    REJECT(POST11 "Transfer-Encoding: chunked;a=b\r\n\r\n0\r\n\r\n", 400);
    REJECT(POST11 "Transfer-Encoding: \x01" "chunked\r\n\r\n", 400);
    REJECT("POST /p HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
    /* a coding we do not decode before a final chunked: Not Implemented */
    REJECT(POST11 "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501);
    REJECT(POST11 "Transfer-Encoding: deflate , identity,chunked\r\n\r\n0\r\n\r\n", 501);

    expect_accept(S(POST11 "Transfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n"), 1, &r);
    ck_assert_int_eq(r.msgs[0].body_type, GW_HTTP1_BODY_CHUNKED);
    result_free(&r);
    expect_accept(S(POST11 "Transfer-Encoding:  ChUnKeD \t\r\n\r\n0\r\n\r\n"), 1, &r);
    result_free(&r);
}
END_TEST

START_TEST(pipelining_exact_bytes)
{
    static const char two_gets[] = GET11 "\r\n" "GET /b HTTP/1.1\r\nHost: a\r\n\r\n";
    static const char post_get[] = POST11 "Content-Length: 5\r\n\r\nhello" GET11 "\r\n";
    static const char chunk_get[] = POST11 "Transfer-Encoding: chunked\r\n\r\n"
                                    "5\r\nhello\r\n0\r\n\r\n" "GET /c HTTP/1.1\r\nHost: a\r\n\r\n";
    result_t r;

    expect_accept(S(two_gets), 2, &r);
    ck_assert_uint_eq(r.msgs[0].end, sizeof(GET11 "\r\n") - 1);
    ck_assert_uint_eq(r.msgs[1].end, sizeof(two_gets) - 1);
    ck_assert(str_is(&r, r.msgs[1].target, "/b"));
    result_free(&r);

    expect_accept(S(post_get), 2, &r);
    ck_assert(str_is(&r, r.msgs[0].body, "hello"));
    ck_assert_uint_eq(r.msgs[0].end, sizeof(POST11 "Content-Length: 5\r\n\r\nhello") - 1);
    ck_assert_uint_eq(r.pos, sizeof(post_get) - 1);
    result_free(&r);

    expect_accept(S(chunk_get), 2, &r);
    ck_assert(str_is(&r, r.msgs[0].body, "hello"));
    ck_assert(str_is(&r, r.msgs[1].target, "/c"));
    ck_assert_uint_eq(r.pos, sizeof(chunk_get) - 1);
    result_free(&r);
}
END_TEST

/* deps.md "must accept": a baseline GET and a GET with a Content-Length
 * body (framing never depends on the method). */
START_TEST(get_baseline_and_with_body)
{
    result_t r;

    expect_accept(S(GET11 "\r\n"), 1, &r);
    ck_assert_int_eq(r.msgs[0].body_type, GW_HTTP1_BODY_NONE);
    ck_assert(r.msgs[0].keepalive);
    result_free(&r);
    expect_accept(S("GET /q HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" GET11 "\r\n"), 2, &r);
    ck_assert_int_eq(r.msgs[0].body_type, GW_HTTP1_BODY_LENGTH);
    ck_assert(str_is(&r, r.msgs[0].body, "hello"));
    result_free(&r);
}
END_TEST

/* design.md 4, "missing final CRLF": a head without its empty line is never
 * a request, and a last-chunk without the final CRLF never ends the body:
 * the next request's line cannot pass for the end of the trailers. */
START_TEST(missing_final_crlf)
{
    result_t r;

    run(S(GET11 "X: 1\r\n"), &r);
    ck_assert_int_eq(r.end, R_INCOMPLETE);
    ck_assert_uint_eq(r.nmsgs, 0);
    result_free(&r);
    run(S(CHUNKED_HEAD "5\r\nhello\r\n0\r\n"), &r);
    ck_assert_int_eq(r.end, R_INCOMPLETE);
    ck_assert_uint_eq(r.nmsgs, 1);
    ck_assert(!r.msgs[0].complete);
    result_free(&r);
    REJECT(CHUNKED_HEAD "5\r\nhello\r\n0\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    REJECT(CHUNKED_HEAD "5\r\nhello\r\n0\r\n\r\r\n", 400);
}
END_TEST

/* ---- chunked body ------------------------------------------------------------- */


START_TEST(chunk_size_rejects)
{
    REJECT(CHUNKED_HEAD "zz\r\nhello\r\n0\r\n\r\n", 400);
    REJECT(CHUNKED_HEAD "0x5\r\nhello\r\n0\r\n\r\n", 400);
    REJECT(CHUNKED_HEAD "00000000000000005\r\nhello\r\n0\r\n\r\n", 400);  /* 17 digits */
    REJECT(CHUNKED_HEAD "5 \r\nhello\r\n0\r\n\r\n", 400);
    REJECT(CHUNKED_HEAD "5 xyz\r\nhello\r\n0\r\n\r\n", 400);
    REJECT(CHUNKED_HEAD " 5\r\nhello\r\n0\r\n\r\n", 400);
    REJECT(CHUNKED_HEAD "-5\r\nhello\r\n0\r\n\r\n", 400);
    REJECT(CHUNKED_HEAD "+5\r\nhello\r\n0\r\n\r\n", 400);
    REJECT(CHUNKED_HEAD "\r\nhello\r\n0\r\n\r\n", 400);
    REJECT(CHUNKED_HEAD "6_0\r\nhello\r\n0\r\n\r\n", 400);
    REJECT(CHUNKED_HEAD "5\nhello\r\n0\r\n\r\n", 400);             /* bare LF */
    REJECT(CHUNKED_HEAD "5\rhello\r\n0\r\n\r\n", 400);             /* bare CR */
    REJECT(CHUNKED_HEAD "5\r\r\nhello\r\n0\r\n\r\n", 400);
    REJECT(CHUNKED_HEAD "5\r\nhello\r\n0\n\r\n", 400);
    REJECT(CHUNKED_HEAD "5\r\nhello\r\n0\r\n\n", 400);
    REJECT(CHUNKED_HEAD "3\r\nfoo\r\n\r\n", 400);                  /* missing last-chunk */
    /* the size alone is checked against the body limit */
    REJECT(CHUNKED_HEAD "40000001\r\n", 413);
    REJECT(CHUNKED_HEAD "FFFFFFFFFFFFFFFF\r\n", 413);
}
END_TEST

START_TEST(chunk_ext_rules)
{
    result_t r;
    char big[2200];
    size_t n;

    REJECT(CHUNKED_HEAD "5;a\nb\r\nhello\r\n0\r\n\r\n", 400);      /* LF inside extension */
    REJECT(CHUNKED_HEAD "5;ext=val\rue\r\nhello\r\n0\r\n\r\n", 400); /* bare CR inside */
    REJECT(CHUNKED_HEAD "5;\r\nhello\r\n0\r\n\r\n", 400);          /* no name */
    REJECT(CHUNKED_HEAD "5;a \r\nhello\r\n0\r\n\r\n", 400);        /* BWS before CRLF */
    REJECT(CHUNKED_HEAD "5 ;a\r\nhello\r\n0\r\n\r\n", 400);        /* BWS after the size */
    REJECT(CHUNKED_HEAD "5;a=\"b\r\nhello\r\n0\r\n\r\n", 400);     /* unbalanced quote */
    REJECT(CHUNKED_HEAD "5;a=b c\r\nhello\r\n0\r\n\r\n", 400);
    REJECT(CHUNKED_HEAD "5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n", 400);

    expect_accept(S(CHUNKED_HEAD "5; some; parameters=stuff\r\nhello\r\n"
                    "6;a=\"I \\\"q\\\"; \\\\x\";b = c ;d\r\n world\r\n0;last\r\n\r\n"), 1, &r);
    ck_assert(str_is(&r, r.msgs[0].body, "hello world"));
    result_free(&r);

    /* 1024 bytes of extension pass, 1025 do not */
    n = (size_t)snprintf(big, sizeof(big), "%s1;", CHUNKED_HEAD);
    memset(big + n, 'e', 1023);
    n += 1023;
    n += (size_t)snprintf(big + n, sizeof(big) - n, "\r\nx\r\n0\r\n\r\n");
    expect_accept(big, n, 1, &r);
    result_free(&r);
    n = (size_t)snprintf(big, sizeof(big), "%s1;", CHUNKED_HEAD);
    memset(big + n, 'e', 1024);
    n += 1024;
    n += (size_t)snprintf(big + n, sizeof(big) - n, "\r\nx\r\n0\r\n\r\n");
    expect_reject(big, n, 400);
    /* ...and the limit holds before the line ends */
    expect_reject(big, n - 10, 400);
}
END_TEST

START_TEST(chunk_data_without_crlf)
{
    static const char smuggle[] = CHUNKED_HEAD "3\r\nabcXX0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    result_t r;

    run(S(smuggle), &r);
    ck_assert_int_eq(r.end, R_ERROR);
    ck_assert_int_eq(r.status, 400);
    ck_assert_uint_eq(r.nmsgs, 1);              /* never a second request */
    result_free(&r);
    REJECT(CHUNKED_HEAD "5\r\nhello\n0\r\n\r\n", 400);
    REJECT(CHUNKED_HEAD "5\r\nhello\r0\r\n\r\n", 400);
}
END_TEST

START_TEST(trailers)
{
    result_t r;
    gw_http1_limits_t lim = gw_http1_default_limits;
    char big[10000];
    size_t n;

    expect_accept(S(CHUNKED_HEAD "5\r\nhello\r\n0\r\nVary: *\r\nContent-Type: text/plain\r\n\r\n"
                    GET11 "\r\n"), 2, &r);
    ck_assert(str_is(&r, r.msgs[0].body, "hello"));
    result_free(&r);

    /* framing fields in trailers never change framing: they are refused */
    REJECT(CHUNKED_HEAD "5\r\nhello\r\n0\r\nContent-Length: 99\r\n\r\n", 400);
    REJECT(CHUNKED_HEAD "5\r\nhello\r\n0\r\ntransfer-encoding: chunked\r\n\r\n", 400);
    REJECT(CHUNKED_HEAD "5\r\nhello\r\n0\r\nHOST: evil\r\n\r\n", 400);
    /* ...and names that merely start like one are fine */
    expect_accept(S(CHUNKED_HEAD "0\r\nContent-Lengthy: 1\r\nHosts: 2\r\nT: 3\r\n\r\n"), 1, &r);
    result_free(&r);
    /* trailer syntax */
    REJECT(CHUNKED_HEAD "0\r\nX : y\r\n\r\n", 400);
    REJECT(CHUNKED_HEAD "0\r\nX: y\r\n z\r\n\r\n", 400);
    REJECT(CHUNKED_HEAD "0\r\n : y\r\n\r\n", 400);
    REJECT(CHUNKED_HEAD "0\r\nX: a\x01\r\n\r\n", 400);
    REJECT(CHUNKED_HEAD "0\r\nX: a\nY: b\r\n\r\n", 400);
    REJECT(CHUNKED_HEAD "0\r\nNoColon\r\n\r\n", 400);

    /* trailer section over the limit, also before it ends */
    n = (size_t)snprintf(big, sizeof(big), "%s0\r\nX: ", CHUNKED_HEAD);
    memset(big + n, 'v', 8200);
    n += 8200;
    n += (size_t)snprintf(big + n, sizeof(big) - n, "\r\n\r\n");
    expect_reject(big, n, 400);
    expect_reject(big, n - 4, 400);
    lim.trailers = 16;
    expect_reject_lim(S(CHUNKED_HEAD "0\r\nX: 0123456789\r\n\r\n"), &lim, 400);
    lim.trailers = 17;
    {
        result_t r2;
        run_feeds(S(CHUNKED_HEAD "0\r\nX: 0123456789\r\n\r\n"), &lim, &r2, "trailer limit");
        ck_assert_int_eq(r2.end, R_END);
        result_free(&r2);
    }
}
END_TEST

START_TEST(chunked_many_one_byte_chunks)
{
    const size_t nchunks = 100000;
    size_t head = sizeof(CHUNKED_HEAD) - 1, len = head + nchunks * 6 + 5, pos;
    char *raw = malloc(len);
    gw_http1_request_t req;
    gw_http1_header_t hdrs[8];
    gw_http1_error_t err;
    gw_http1_chunked_t c;
    gw_str_t data;
    const char *g;
    size_t got = 0, calls;
    ssize_t r;

    ck_assert_ptr_nonnull(raw);
    memcpy(raw, CHUNKED_HEAD, head);
    for (size_t i = 0; i < nchunks; i++)
        memcpy(raw + head + i * 6, "1\r\nx\r\n", 6);
    memcpy(raw + head + nchunks * 6, "0\r\n\r\n", 5);

    g = guarded(raw, len);
    req.headers = hdrs;
    req.max_headers = 8;
    r = gw_http1_parse_request(g, len, &gw_http1_default_limits, &req, &err);
    ck_assert_int_eq(r, (ssize_t)head);
    ck_assert_int_eq(req.body, GW_HTTP1_BODY_CHUNKED);

    /* all at once */
    gw_http1_chunked_init(&c);
    for (pos = head, calls = 0; !c.done; calls++) {
        ssize_t n = gw_http1_chunked_decode(&c, g + pos, len - pos, &gw_http1_default_limits, &data, &err);
        ck_assert_int_gt(n, 0);
        ck_assert(data.len == 0 || (data.len == 1 && data.ptr[0] == 'x'));
        got += data.len;
        pos += (size_t)n;
    }
    ck_assert_uint_eq(got, nchunks);
    ck_assert_uint_eq(c.total, nchunks);
    ck_assert_uint_eq(pos, len);
    ck_assert_uint_ge(calls, nchunks);          /* one data span per call */

    /* in 7-byte pieces, each against the guard page */
    gw_http1_chunked_init(&c);
    for (pos = head, got = 0; !c.done;) {
        size_t piece = len - pos < 7 ? len - pos : 7, used = 0;
        const char *q = guarded(raw + pos, piece);
        while (used < piece && !c.done) {
            ssize_t n = gw_http1_chunked_decode(&c, q + used, piece - used, &gw_http1_default_limits,
                                                &data, &err);
            ck_assert_int_gt(n, 0);
            got += data.len;
            used += (size_t)n;
        }
        pos += used;
    }
    ck_assert_uint_eq(got, nchunks);
    ck_assert_uint_eq(pos, len);
    free(raw);
}
END_TEST

START_TEST(chunked_decoder_contract)
{
    gw_http1_chunked_t c;
    gw_http1_error_t err;
    gw_str_t data;
    static const char body[] = "5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
    const char *g = guarded(body, sizeof(body) - 1);
    gw_http1_limits_t lim = gw_http1_default_limits;
    ssize_t n;

    gw_http1_chunked_init(&c);
    n = gw_http1_chunked_decode(&c, g, sizeof(body) - 1, &lim, &data, &err);
    ck_assert_int_eq(n, 8);                     /* size line and data, then stop */
    ck_assert_uint_eq(data.len, 5);
    ck_assert_ptr_eq(data.ptr, g + 3);
    n = gw_http1_chunked_decode(&c, g + 8, sizeof(body) - 9, &lim, &data, &err);
    ck_assert_int_eq(n, 7);                     /* CRLF, last chunk, final CRLF; never beyond */
    ck_assert(c.done);
    ck_assert_uint_eq(data.len, 0);
    n = gw_http1_chunked_decode(&c, g + 15, sizeof(body) - 16, &lim, &data, &err);
    ck_assert_int_eq(n, 0);
    n = gw_http1_chunked_decode(&c, g, 0, &lim, &data, &err);
    ck_assert_int_eq(n, 0);

    /* an error sticks */
    gw_http1_chunked_init(&c);
    g = guarded("zz", 2);
    ck_assert_int_eq(gw_http1_chunked_decode(&c, g, 2, &lim, &data, &err), GW_HTTP1_ERROR);
    ck_assert_int_eq(err.status, 400);
    g = guarded("0\r\n\r\n", 5);
    ck_assert_int_eq(gw_http1_chunked_decode(&c, g, 5, &lim, &data, &err), GW_HTTP1_ERROR);

    /* body limit over several chunks */
    lim.body = 8;
    gw_http1_chunked_init(&c);
    g = guarded("5\r\nhello\r\n4\r\n", 13);
    ck_assert_int_eq(gw_http1_chunked_decode(&c, g, 13, &lim, &data, &err), 8);
    ck_assert_int_eq(gw_http1_chunked_decode(&c, g + 8, 5, &lim, &data, &err), GW_HTTP1_ERROR);
    ck_assert_int_eq(err.status, 413);      /* 5 + 4 > 8, known at the '4' */
}
END_TEST

/* ---- limits ------------------------------------------------------------------ */

static char *
repeat(const char *pre, char ch, size_t n, const char *post, size_t *len)
{
    size_t a = strlen(pre), b = strlen(post);
    char *s = malloc(a + n + b + 1);
    ck_assert_ptr_nonnull(s);
    memcpy(s, pre, a);
    memset(s + a, ch, n);
    memcpy(s + a + n, post, b + 1);
    *len = a + n + b;
    return s;
}

START_TEST(limits_complete_input)
{
    gw_http1_limits_t lim = gw_http1_default_limits;
    size_t len;
    char *s;
    result_t r;

    /* request line: 4094 bytes before CRLF pass, 4095 answer 414 */
    s = repeat("GET /", 'a', 4094 - 14, " HTTP/1.1\r\nHost: a\r\n\r\n", &len);
    expect_accept(s, len, 1, &r);
    result_free(&r);
    free(s);
    s = repeat("GET /", 'a', 4095 - 14, " HTTP/1.1\r\nHost: a\r\n\r\n", &len);
    expect_reject(s, len, 414);
    free(s);

    /* one field line: 8190 bytes with its CRLF pass, 8191 answer 431 */
    s = repeat(GET11 "X: ", 'v', 8190 - 5, "\r\n\r\n", &len);
    expect_accept(s, len, 1, &r);
    result_free(&r);
    free(s);
    s = repeat(GET11 "X: ", 'v', 8190 - 4, "\r\n\r\n", &len);
    expect_reject(s, len, 431);
    free(s);

    /* 100 fields pass, 101 answer 431 (before the missing-Host check) */
    {
        char buf[4096];
        size_t n = (size_t)snprintf(buf, sizeof(buf), GET11);
        for (int i = 1; i < 100; i++)
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, "H%d: %d\r\n", i, i);
        memcpy(buf + n, "\r\n", 3);
        expect_accept(buf, n + 2, 1, &r);
        ck_assert_uint_eq(r.msgs[0].nheaders, 100);
        result_free(&r);
        memcpy(buf + n, "X: 1\r\n\r\n", 9);
        expect_reject(buf, n + 8, 431);
        memcpy(buf + 16, "Xost", 4);
        expect_reject(buf, n + 8, 431);
    }

    /* whole head over 64 KiB: 431, even with a generous field count */
    {
        char *h = malloc(70000);
        size_t n = (size_t)snprintf(h, 70000, GET11);
        ck_assert_ptr_nonnull(h);
        lim.fields = 10000;
        while (n < 66000)
            n += (size_t)snprintf(h + n, 70000 - n, "X: %0100zu\r\n", n);
        memcpy(h + n, "\r\n", 2);
        expect_reject_lim(h, n + 2, &lim, 431);
        free(h);
    }

    /* body over the limit by Content-Length: 413 at the head */
    lim = gw_http1_default_limits;
    lim.body = 4;
    expect_reject_lim(S(POST11 "Content-Length: 5\r\n\r\nhello"), &lim, 413);
    expect_reject_lim(S(CHUNKED_HEAD "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), &lim, 413);
}
END_TEST

/* Limits hold before the line or head ends: no waiting for a CRLF that a
 * slow client may never send. */
START_TEST(limits_incomplete_input)
{
    gw_http1_request_t req;
    gw_http1_header_t hdrs[8];
    gw_http1_error_t err;
    size_t len;
    char *s;

    req.headers = hdrs;
    req.max_headers = 8;

    s = repeat("GET /", 'a', 5000, "", &len);
    ck_assert_int_eq(gw_http1_parse_request(guarded(s, len), len, &gw_http1_default_limits, &req, &err),
                     GW_HTTP1_ERROR);
    ck_assert_int_eq(err.status, 414);
    /* exactly at the limit it still waits */
    ck_assert_int_eq(gw_http1_parse_request(guarded(s, 4094), 4094, &gw_http1_default_limits, &req, &err),
                     GW_HTTP1_AGAIN);
    ck_assert_int_eq(gw_http1_parse_request(guarded(s, 4095), 4095, &gw_http1_default_limits, &req, &err),
                     GW_HTTP1_ERROR);
    free(s);

    s = repeat(GET11 "X: ", 'v', 9000, "", &len);
    ck_assert_int_eq(gw_http1_parse_request(guarded(s, len), len, &gw_http1_default_limits, &req, &err),
                     GW_HTTP1_ERROR);
    ck_assert_int_eq(err.status, 431);
    free(s);

    /* a head that never ends: 431 once it passes the head limit */
    {
        gw_http1_limits_t lim = gw_http1_default_limits;
        size_t n = 0;
        char *h = malloc(70000);
        lim.fields = 100000;
        n = (size_t)snprintf(h, 70000, GET11);
        while (n < 65600)
            n += (size_t)snprintf(h + n, 70000 - n, "X: %0100zu\r\n", n);
        ck_assert_int_eq(gw_http1_parse_request(guarded(h, n), n, &lim, &req, &err), GW_HTTP1_ERROR);
        ck_assert_int_eq(err.status, 431);
        free(h);
    }
}
END_TEST

START_TEST(limits_custom)
{
    gw_http1_limits_t lim = gw_http1_default_limits;

    lim.request_line = 10;
    expect_reject_lim(S("GET /12345 HTTP/1.1\r\nHost: a\r\n\r\n"), &lim, 414);
    lim = gw_http1_default_limits;
    lim.fields = 2;
    expect_reject_lim(S("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n"), &lim, 431);
    lim = gw_http1_default_limits;
    lim.field_size = 10;
    expect_reject_lim(S("GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n"), &lim, 431);
    lim.field_size = 13;       /* "Accept: x/y" is 11 bytes, 13 with CRLF */
    {
        result_t r;
        run_feeds(S("GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n"), &lim, &r, "field size 13");
        ck_assert_int_eq(r.end, R_END);
        result_free(&r);
    }
    lim = gw_http1_default_limits;
    lim.head = 20;
    expect_reject_lim(S("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), &lim, 431);
    lim.head = 27;
    {
        result_t r;
        run_feeds(S("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), &lim, &r, "head 27");
        ck_assert_int_eq(r.end, R_END);
        result_free(&r);
    }
}
END_TEST

/* ---- connection semantics ---------------------------------------------------- */

static void
flags_of(const char *raw, size_t len, unsigned *ka, unsigned *ec, unsigned *up)
{
    result_t r;
    run(raw, len, &r);
    ck_assert_msg(r.nmsgs == 1, "'%s' not parsed: %s", raw, r.why ? r.why : "");
    *ka = r.msgs[0].keepalive;
    *ec = r.msgs[0].expect_continue;
    *up = r.msgs[0].upgrade;
    result_free(&r);
}

START_TEST(keepalive_expect_upgrade)
{
    unsigned ka, ec, up;

    flags_of(S(GET11 "\r\n"), &ka, &ec, &up);
    ck_assert(ka && !ec && !up);
    flags_of(S(GET11 "Connection: close\r\n\r\n"), &ka, &ec, &up);
    ck_assert(!ka);
    flags_of(S(GET11 "Connection: Keep-Alive, CLOSE\r\n\r\n"), &ka, &ec, &up);
    ck_assert(!ka);
    flags_of(S(GET11 "Connection: keep-alive\r\nConnection: close\r\n\r\n"), &ka, &ec, &up);
    ck_assert(!ka);
    flags_of(S(GET11 "Connection: closed\r\n\r\n"), &ka, &ec, &up);
    ck_assert(ka);
    flags_of(S("GET / HTTP/1.0\r\n\r\n"), &ka, &ec, &up);
    ck_assert(!ka);
    flags_of(S("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), &ka, &ec, &up);
    ck_assert(ka);
    flags_of(S("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"), &ka, &ec, &up);
    ck_assert(!ka);

    flags_of(S(POST11 "Expect: 100-Continue\r\nContent-Length: 5\r\n\r\n"), &ka, &ec, &up);
    ck_assert(ec);
    flags_of(S(POST11 "Expect: something-else\r\nContent-Length: 5\r\n\r\n"), &ka, &ec, &up);
    ck_assert(!ec);
    flags_of(S("POST /p HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"), &ka, &ec, &up);
    ck_assert(!ec);     /* RFC 9110 10.1.1: ignored in HTTP/1.0 */

    flags_of(S(GET11 "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"), &ka, &ec, &up);
    ck_assert(up && ka);
    flags_of(S(GET11 "Upgrade: websocket\r\n\r\n"), &ka, &ec, &up);
    ck_assert(!up);
    flags_of(S(GET11 "Connection: upgrade\r\n\r\n"), &ka, &ec, &up);
    ck_assert(!up);
    flags_of(S("GET / HTTP/1.0\r\nConnection: upgrade, keep-alive\r\nUpgrade: h2c\r\n\r\n"), &ka, &ec, &up);
    ck_assert(!up && ka);
}
END_TEST

/* Expect: 100-continue, the body arriving later: the head parses alone. */
START_TEST(expect_continue_body_later)
{
    static const char head[] = POST11 "Expect: 100-continue\r\nContent-Length: 5\r\n\r\n";
    gw_http1_request_t req;
    gw_http1_header_t hdrs[8];
    gw_http1_error_t err;
    ssize_t r;

    req.headers = hdrs;
    req.max_headers = 8;
    r = gw_http1_parse_request(guarded(head, sizeof(head) - 1), sizeof(head) - 1,
                               &gw_http1_default_limits, &req, &err);
    ck_assert_int_eq(r, (ssize_t)sizeof(head) - 1);
    ck_assert(req.expect_continue);
    ck_assert_int_eq(req.body, GW_HTTP1_BODY_LENGTH);
    ck_assert_uint_eq(req.content_length, 5);
}
END_TEST

/* ---- byte classes, checked one byte at a time ----------------------------------- */

static int
accepted(const char *raw, size_t len)
{
    gw_http1_request_t req;
    gw_http1_header_t hdrs[8];
    gw_http1_error_t err;
    req.headers = hdrs;
    req.max_headers = 8;
    return gw_http1_parse_request(guarded(raw, len), len, &gw_http1_default_limits, &req, &err) > 0;
}

START_TEST(byte_classes)
{
    static const char tchar[] = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                                "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    char buf[128];

    for (int b = 0; b < 256; b++) {
        int is_tchar = b != 0 && strchr(tchar, b) != NULL;
        int n;

        /* header name: tchar only ('_' names are dropped, still accepted;
         * a ':' just ends the name early) */
        n = snprintf(buf, sizeof(buf), GET11 "X%cY: v\r\n\r\n", b ? b : '!');
        if (b == 0)
            buf[sizeof(GET11)] = '\0';
        ck_assert_msg(accepted(buf, (size_t)n) == (is_tchar || b == ':'), "name byte 0x%02x", b);

        /* method: tchar without lowercase letters */
        n = snprintf(buf, sizeof(buf), "G%cT / HTTP/1.1\r\nHost: a\r\n\r\n", b ? b : '!');
        if (b == 0)
            buf[1] = '\0';
        ck_assert_msg(accepted(buf, (size_t)n) == (is_tchar && !(b >= 'a' && b <= 'z')),
                      "method byte 0x%02x", b);

        /* Values (HTAB, SP, VCHAR, obs-text) and targets (VCHAR) are
         * scanned 8 bytes at a time: put the byte at every position of a
         * word and of the tail. */
        for (int k = 0; k < 20; k++) {
            int value_ok = b == '\t' || b == ' ' || (b > 0x20 && b != 0x7f);
            int target_ok = b > 0x20 && b < 0x7f;

            n = snprintf(buf, sizeof(buf), GET11 "X: a%.*s%c%.*sb\r\n\r\n", k,
                         "aaaaaaaaaaaaaaaaaaaa", b ? b : '!', 19 - k, "aaaaaaaaaaaaaaaaaaaa");
            if (b == 0)
                buf[sizeof(GET11) + 3 + k] = '\0';
            ck_assert_msg(accepted(buf, (size_t)n) == value_ok, "value byte 0x%02x at %d", b, k);

            n = snprintf(buf, sizeof(buf), "GET /%.*s%c%.*s HTTP/1.1\r\nHost: a\r\n\r\n", k,
                         "aaaaaaaaaaaaaaaaaaaa", b ? b : '!', 19 - k, "aaaaaaaaaaaaaaaaaaaa");
            if (b == 0)
                buf[5 + k] = '\0';
            ck_assert_msg(accepted(buf, (size_t)n) == target_ok, "target byte 0x%02x at %d", b, k);
        }
    }
}
END_TEST

START_TEST(reasons_and_defaults)
{
    ck_assert_str_eq(gw_http1_reason(400), "Bad Request");
    ck_assert_str_eq(gw_http1_reason(413), "Content Too Large");
    ck_assert_str_eq(gw_http1_reason(414), "URI Too Long");
    ck_assert_str_eq(gw_http1_reason(431), "Request Header Fields Too Large");
    ck_assert_str_eq(gw_http1_reason(501), "Not Implemented");
    ck_assert_str_eq(gw_http1_reason(505), "HTTP Version Not Supported");
    ck_assert_str_eq(gw_http1_reason(200), "OK");
    ck_assert_str_eq(gw_http1_reason(799), "Unknown");
    ck_assert_uint_eq(gw_http1_default_limits.request_line, 4094);
    ck_assert_uint_eq(gw_http1_default_limits.fields, 100);
    ck_assert_uint_eq(gw_http1_default_limits.field_size, 8190);
    ck_assert_uint_eq(gw_http1_default_limits.head, 65536);
    ck_assert_uint_eq(gw_http1_default_limits.body, (uint64_t)1 << 30);
    ck_assert_uint_eq(gw_http1_default_limits.chunk_ext, 1024);
    ck_assert_uint_eq(gw_http1_default_limits.trailers, 8192);
}
END_TEST

/* A caller array smaller than the field limit is never overrun. */
START_TEST(small_header_array)
{
    static const char raw[] = GET11 "A: 1\r\nB: 2\r\n\r\n";
    gw_http1_request_t req;
    gw_http1_header_t hdrs[3];
    gw_http1_error_t err;

    req.headers = hdrs;
    req.max_headers = 2;
    ck_assert_int_eq(gw_http1_parse_request(guarded(raw, sizeof(raw) - 1), sizeof(raw) - 1,
                                            &gw_http1_default_limits, &req, &err), GW_HTTP1_ERROR);
    ck_assert_int_eq(err.status, 431);
    req.max_headers = 3;
    ck_assert_int_eq(gw_http1_parse_request(guarded(raw, sizeof(raw) - 1), sizeof(raw) - 1,
                                            &gw_http1_default_limits, &req, &err), (ssize_t)sizeof(raw) - 1);
}
END_TEST

/* The guard page itself: one byte past a guarded copy must fault, or the
 * over-read protection of every test above would be an illusion. The
 * fault is caught here (ASan's abort_on_error would turn it into SIGABRT). */
static sigjmp_buf guard_jmp;

static void
guard_on_segv(int sig)
{
    (void)sig;
    siglongjmp(guard_jmp, 1);
}

START_TEST(guard_page_faults)
{
    struct sigaction sa, old;
    const volatile char *g = guarded("GET", 3);
    volatile int faulted = 0;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = guard_on_segv;
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGSEGV, &sa, &old), 0);
    if (sigsetjmp(guard_jmp, 1) == 0)
        (void)g[3];
    else
        faulted = 1;
    sigaction(SIGSEGV, &old, NULL);
    ck_assert_msg(faulted, "reading past a guarded buffer did not fault");
    ck_assert_int_eq(g[2], 'T');
}
END_TEST

static Suite *
http1_suite(void)
{
    Suite *s = suite_create("http1");
    TCase *tc = tcase_create("corpus");
    /* every offset of every case, under ASan too */
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, corpus_gunicorn);
    tcase_add_test(tc, corpus_llhttp);
    tcase_add_test(tc, corpus_desync);
    suite_add_tcase(s, tc);

    tc = tcase_create("rules");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, request_line_rejects);
    tcase_add_test(tc, request_line_accepts);
    tcase_add_test(tc, connect_is_501);
    tcase_add_test(tc, header_syntax_rejects);
    tcase_add_test(tc, header_values_trimmed_and_obs_text);
    tcase_add_test(tc, underscore_headers);
    tcase_add_test(tc, host_rules);
    tcase_add_test(tc, duplicate_content_type);
    tcase_add_test(tc, framing_conflicts);
    tcase_add_test(tc, content_length_values);
    tcase_add_test(tc, transfer_encoding_values);
    tcase_add_test(tc, pipelining_exact_bytes);
    tcase_add_test(tc, get_baseline_and_with_body);
    tcase_add_test(tc, missing_final_crlf);
    tcase_add_test(tc, chunk_size_rejects);
    tcase_add_test(tc, chunk_ext_rules);
    tcase_add_test(tc, chunk_data_without_crlf);
    tcase_add_test(tc, trailers);
    tcase_add_test(tc, chunked_many_one_byte_chunks);
    tcase_add_test(tc, chunked_decoder_contract);
    tcase_add_test(tc, limits_complete_input);
    tcase_add_test(tc, limits_incomplete_input);
    tcase_add_test(tc, limits_custom);
    tcase_add_test(tc, keepalive_expect_upgrade);
    tcase_add_test(tc, expect_continue_body_later);
    tcase_add_test(tc, byte_classes);
    tcase_add_test(tc, reasons_and_defaults);
    tcase_add_test(tc, small_header_array);
    tcase_add_test(tc, guard_page_faults);
    suite_add_tcase(s, tc);
    return s;
}

GW_TEST_SUITE(http1_suite)
