/*
 * http1.c - strict HTTP/1.0 and HTTP/1.1 request parser (RFC 9112) used by
 * the front in the master process: a stateless head parser that borrows the
 * connection buffer (picohttpparser style) and an incremental chunked-body
 * decoder. Pure code: no I/O, no allocation, no mutable globals.
 *
 * Every check happens at the first byte that decides it, scanning left to
 * right, so feeding a request in pieces gives AGAIN for every prefix and
 * then exactly the verdict the whole request gets. The tests rely on that.
 *
 * Cost note for callers: the head parser rescans from the start on every
 * call. Call it again only when the new bytes contain a '\n' or push the
 * buffer past a limit; that bounds the rescans by the number of lines.
 */
#include "http1.h"

#include <string.h>

const gw_http1_limits_t gw_http1_default_limits = {
    .request_line = 4094,
    .fields       = 100,
    .field_size   = 8190,
    .head         = 65536,
    .body         = (uint64_t)1 << 30,
    .chunk_ext    = 1024,
    .trailers     = 8192,
};

/*
 * Byte classes, one table so the hot loops do one load per byte.
 *   C_TCHAR   tchar (RFC 9110 5.6.2): header names, methods, coding names
 *   C_FVALUE  field-vchar, SP, HTAB, obs-text: header values (no CTL/DEL)
 *   C_TARGET  VCHAR 0x21-0x7e: request-target (no SP, CTL, DEL, 8-bit)
 *   C_HEX     hex digit: chunk sizes
 *   C_QDTEXT  qdtext (RFC 9110 5.6.4): quoted chunk-extension values
 *   C_METHOD  tchar but not a lowercase letter (Gunicorn's default rule)
 *   C_REGNAME unreserved / sub-delims / '%' (RFC 3986 reg-name): Host
 *   C_NAME    tchar but not '_': header names, so '_' stops the fast loop
 */
#define C_TCHAR    1
#define C_FVALUE   2
#define C_TARGET   4
#define C_HEX      8
#define C_QDTEXT   16
#define C_METHOD   32
#define C_REGNAME  64
#define C_NAME     128

static const unsigned char cls[256] = {
      0,   0,   0,   0,   0,   0,   0,   0,   0,  18,   0,   0,   0,   0,   0,   0,  /* 00-0f */
      0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,  /* 10-1f */
     18, 247,   6, 183, 247, 247, 247, 247,  86,  86, 247, 247,  86, 247, 247,  22,  /* 20-2f */
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255,  22,  86,  22,  86,  22,  22,  /* 30-3f */
     22, 255, 255, 255, 255, 255, 255, 247, 247, 247, 247, 247, 247, 247, 247, 247,  /* 40-4f */
    247, 247, 247, 247, 247, 247, 247, 247, 247, 247, 247,  22,   6,  22, 183, 119,  /* 50-5f */
    183, 223, 223, 223, 223, 223, 223, 215, 215, 215, 215, 215, 215, 215, 215, 215,  /* 60-6f */
    215, 215, 215, 215, 215, 215, 215, 215, 215, 215, 215,  22, 183,  22, 247,   0,  /* 70-7f */
     18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  /* 80-8f */
     18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  /* 90-9f */
     18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  /* a0-af */
     18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  /* b0-bf */
     18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  /* c0-cf */
     18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  /* d0-df */
     18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  /* e0-ef */
     18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  18,  /* f0-ff */
};

#define IS(c, k)   (cls[(unsigned char)(c)] & (k))
#define IS_WS(c)   ((c) == ' ' || (c) == '\t')

/*
 * Targets and values are most of a head, so they are scanned 8 bytes at a
 * time (plain C, no SSE4.2: valgrind must run it). A word with any byte
 * that might stop the scan falls back to the byte loop for those 8 bytes;
 * the word tests may flag too much, never too little. Never reads at or
 * past `cap`.
 */
#define ONES   0x0101010101010101ULL
#define HIGHS  0x8080808080808080ULL
/* some byte < n (n <= 0x80), exact as a yes/no */
#define HAS_LESS(x, n)  (((x) - ONES * (n)) & ~(x) & HIGHS)

static inline uint64_t
load8(const unsigned char *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
}

/*
 * Index of the first flagged byte of a non-zero HAS_LESS mask: borrows only
 * run towards higher bytes, so the lowest flag is exact. Little-endian
 * only; elsewhere the byte loop finds it.
 */
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define FIRST_FLAGGED(m)  ((size_t)__builtin_ctzll(m) >> 3)
#else
#define FIRST_FLAGGED(m)  ((size_t)0)
#endif

/* Field value bytes: no CTL but HTAB, no DEL. Stops at the first byte
 * that is not one (normally the CR), or at cap. */
static inline const unsigned char *
scan_value(const unsigned char *p, const unsigned char *cap)
{
    while (cap - p >= 8) {
        uint64_t x = load8(p);
        uint64_t m = HAS_LESS(x, 0x20) | HAS_LESS(x ^ (ONES * 0x7f), 1);
        if (m == 0) {
            p += 8;
            continue;
        }
        p += FIRST_FLAGGED(m);
        if (*p != '\t')
            break;
        p++;
    }
    while (p < cap && IS(*p, C_FVALUE))
        p++;
    return p;
}

/* Request-target bytes: VCHAR only. */
static inline const unsigned char *
scan_target(const unsigned char *p, const unsigned char *cap)
{
    while (cap - p >= 8) {
        uint64_t x = load8(p);
        uint64_t m = HAS_LESS(x, 0x21) | HAS_LESS(x ^ (ONES * 0x7f), 1) | (x & HIGHS);
        if (m != 0) {
            p += FIRST_FLAGGED(m);
            break;
        }
        p += 8;
    }
    while (p < cap && IS(*p, C_TARGET))
        p++;
    return p;
}

/* Header-name bytes but '_', unrolled: names are short and irregular. */
static inline const unsigned char *
scan_name(const unsigned char *p, const unsigned char *cap)
{
    while (cap - p >= 4) {
        if (!IS(p[0], C_NAME))
            return p;
        if (!IS(p[1], C_NAME))
            return p + 1;
        if (!IS(p[2], C_NAME))
            return p + 2;
        if (!IS(p[3], C_NAME))
            return p + 3;
        p += 4;
    }
    while (p < cap && IS(*p, C_NAME))
        p++;
    return p;
}

/*
 * Case-insensitive compare of a received token with a lowercase literal.
 * (c | 0x20) folds only ASCII letters onto the literal: the other bytes
 * that tokens may hold never land on a lowercase letter or '-'.
 */
static inline int
ieq(const unsigned char *s, size_t n, const char *lit, size_t litlen)
{
    if (n != litlen || (s[0] | 0x20) != (unsigned char)lit[0])
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((s[i] | 0x20) != (unsigned char)lit[i])
            return 0;
    return 1;
}

#define IEQ(s, n, lit)  ieq((s), (n), lit, sizeof(lit) - 1)

static void
trim_ows(const unsigned char **s, const unsigned char **e)
{
    while (*s < *e && IS_WS(**s))
        (*s)++;
    while (*e > *s && IS_WS((*e)[-1]))
        (*e)--;
}

/*
 * A name that folds to a framing header once '-' and '_' are ignored
 * (Transfer_Encoding, Content---Length, TransferEncoding) but is not that
 * header: some intermediaries normalise such names, so one side would frame
 * by it and the other not. Refused rather than dropped or passed on.
 */
static int
framing_lookalike_slow(const unsigned char *s, size_t n)
{
    static const char *const names[] = { "contentlength", "transferencoding" };

    size_t e = n;

    /* cheap filter first: a look-alike starts with c/t and its last
     * letter is the 'h' of length or the 'g' of encoding */
    while (e > 0 && (s[e - 1] == '-' || s[e - 1] == '_'))
        e--;
    if (e < 13 || ((s[0] | 0x20) != 'c' && (s[0] | 0x20) != 't')
        || ((s[e - 1] | 0x20) != 'h' && (s[e - 1] | 0x20) != 'g'))
        return 0;
    for (size_t k = 0; k < 2; k++) {
        const char *w = names[k];
        size_t j = 0, i;
        for (i = 0; i < n; i++) {
            if (s[i] == '-' || s[i] == '_')
                continue;
            if (w[j] == '\0' || (s[i] | 0x20) != (unsigned char)w[j])
                break;
            j++;
        }
        if (i == n && w[j] == '\0')
            return 1;
    }
    return 0;
}

static inline int
framing_lookalike(const unsigned char *s, size_t n)
{
    return n >= 13 && framing_lookalike_slow(s, n);
}

/*
 * Host = uri-host [ ":" port ] (RFC 9110 7.2, RFC 3986 3.2.2). IP-literals
 * are only checked for their bracket shape and character set; the value is
 * used for routing, so what matters is that it cannot smuggle '/', '@', SP
 * or CTLs. Empty is valid (RFC 9110 7.2: no authority in the target).
 */
static int
host_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;

    if (n == 0)
        return 1;
    if (s[0] == '[') {
        for (i = 1; i < n && s[i] != ']'; i++)
            if (!(IS(s[i], C_HEX) || s[i] == ':' || s[i] == '.'
                  || ((cls[s[i]] & C_REGNAME) && s[i] != '%')))
                return 0;
        if (i == n || i == 1)
            return 0;
        i++;
    } else {
        while (i < n && IS(s[i], C_REGNAME))
            i++;
        if (i == 0)
            return 0;
    }
    if (i == n)
        return 1;
    if (s[i++] != ':')
        return 0;
    for (; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/*
 * Transfer-Encoding verdict for a single header line: 0 when the value is
 * exactly "chunked" (any case, OWS around), 501 when it is a well-formed
 * list whose only chunked is the final, parameterless one (we decode no
 * other coding), else 400 (chunked not final or repeated, empty element,
 * parameters on chunked: RFC 9112 6.3 and 7).
 */
static int
te_verdict(const unsigned char *v, const unsigned char *ve)
{
    const unsigned char *s = v;
    int n = 0, chunked_at = -1;

    if (IEQ(v, (size_t)(ve - v), "chunked"))
        return 0;
    while (s <= ve) {
        const unsigned char *e = s, *t, *te;
        while (e < ve && *e != ',')
            e++;
        t = s, te = e;
        trim_ows(&t, &te);
        if (t == te)
            return 400;
        if (IEQ(t, (size_t)(te - t), "chunked")) {
            if (chunked_at >= 0)
                return 400;
            chunked_at = n;
        } else {
            const unsigned char *q = t;
            while (q < te && IS(*q, C_TCHAR))
                q++;
            if (q == t)
                return 400;
            if (q < te) {
                /* transfer-parameters: only their shape matters, the
                 * coding is refused either way */
                while (q < te && IS_WS(*q))
                    q++;
                if (*q != ';')
                    return 400;
            }
        }
        n++;
        s = e + 1;
    }
    return chunked_at == n - 1 ? 501 : 400;
}

/* Connection is a comma list of tokens; only three of them matter here. */
#define CONN_CLOSE      1
#define CONN_KEEPALIVE  2
#define CONN_UPGRADE    4

static unsigned
connection_tokens(const unsigned char *v, const unsigned char *ve)
{
    unsigned f = 0;
    const unsigned char *s = v;

    while (s < ve) {
        const unsigned char *e = s, *t, *te;
        while (e < ve && *e != ',')
            e++;
        t = s, te = e;
        trim_ows(&t, &te);
        if (IEQ(t, (size_t)(te - t), "close"))
            f |= CONN_CLOSE;
        else if (IEQ(t, (size_t)(te - t), "keep-alive"))
            f |= CONN_KEEPALIVE;
        else if (IEQ(t, (size_t)(te - t), "upgrade"))
            f |= CONN_UPGRADE;
        s = e + 1;
    }
    return f;
}

/*
 * Splits the target into path and query and checks its form (RFC 9112
 * 3.2): origin-form "/...", asterisk-form "*" for OPTIONS only, absolute-
 * form with an http or https scheme (its authority then replaces Host,
 * RFC 9112 3.2.2). Authority-form only exists for CONNECT, refused earlier.
 * Returns the error reason or NULL.
 */
static const char *
split_target(const unsigned char *t, size_t n, const unsigned char *m, size_t mlen,
             gw_http1_request_t *req, gw_str_t *authority)
{
    const unsigned char *e = t + n, *p = t, *q, *f;

    authority->ptr = NULL;
    authority->len = 0;
    if (t[0] == '*') {
        if (n != 1 || !(mlen == 7 && memcmp(m, "OPTIONS", 7) == 0))
            return "asterisk-form target is only for OPTIONS";
    } else if (t[0] != '/') {
        const unsigned char *a, *h;
        if (n >= 7 && IEQ(t, 7, "http://"))
            a = t + 7;
        else if (n >= 8 && IEQ(t, 8, "https://"))
            a = t + 8;
        else
            return "invalid request-target";
        for (p = a; p < e && *p != '/' && *p != '?' && *p != '#'; p++)
            ;
        /* userinfo ends at the last '@' of the authority */
        for (h = p; h > a && h[-1] != '@'; h--)
            ;
        if (h == p || !host_valid(h, (size_t)(p - h)))
            return "invalid authority in request-target";
        authority->ptr = (const char *)h;
        authority->len = (size_t)(p - h);
    }
    /* path ends at the first '?' or '#'; the query runs from '?' to '#' */
    f = memchr(p, '#', (size_t)(e - p));
    if (f == NULL)
        f = e;
    q = memchr(p, '?', (size_t)(f - p));
    req->path.ptr = (const char *)p;
    req->path.len = (size_t)((q ? q : f) - p);
    req->query.ptr = (const char *)(q ? q + 1 : f);
    req->query.len = q ? (size_t)(f - q - 1) : 0;
    return NULL;
}

#define FAIL(st, msg) \
    do { err->status = (st); err->why = (msg); return GW_HTTP1_ERROR; } while (0)

/* Out of bytes at `end`: either the head limit cut the buffer (431) or the
 * head is simply not complete yet. */
#define NEED_MORE() \
    do { \
        if (len > lim->head) FAIL(431, "request head too large"); \
        return GW_HTTP1_AGAIN; \
    } while (0)

ssize_t
gw_http1_parse_request(const char *buf, size_t len, const gw_http1_limits_t *lim,
                       gw_http1_request_t *req, gw_http1_error_t *err)
{
    const unsigned char *p = (const unsigned char *)buf;
    /* Never read at or past `end`: limits hold on partial input too. */
    const unsigned char *end = p + (len < lim->head ? len : lim->head);
    const unsigned char *line, *cap, *m, *t;
    size_t room, nfields = 0, mlen, tlen, fcap;
    gw_str_t authority;
    const char *why;
    uint64_t cl = 0;
    unsigned conn = 0;
    int host_seen = 0, cl_seen = 0, te_seen = 0, te_status = 0, ctype_seen = 0;
    int upgrade_seen = 0, expect_continue = 0;

    req->nheaders = 0;
    req->dropped = 0;

    /* RFC 9112 2.2: ignore empty lines before the request line. Each must
     * be a real CRLF; they count towards the head limit only. */
    while (p < end && *p == '\r') {
        if (p + 1 == end)
            NEED_MORE();
        if (p[1] != '\n')
            FAIL(400, "bare CR before request line");
        p += 2;
    }

    /* request-line = method SP request-target SP HTTP-version CRLF. The CR
     * may sit at most request_line bytes after the line start: scan up to
     * `cap`, and running into `cap` means the line is too long. */
    line = p;
    room = (size_t)(end - p);
    cap = room > lim->request_line ? p + lim->request_line + 1 : end;
#define LINE_OUT() \
    do { \
        if ((size_t)(p - line) == lim->request_line + 1) FAIL(414, "request line too long"); \
        NEED_MORE(); \
    } while (0)

    m = p;
    while (p < cap && IS(*p, C_METHOD))
        p++;
    if (p == cap)
        LINE_OUT();
    if (*p != ' ' || p == m)
        FAIL(400, "invalid method");
    mlen = (size_t)(p - m);
    /* No tunnels: the gateway forwards requests to workers, not streams. */
    if (mlen == 7 && memcmp(m, "CONNECT", 7) == 0)
        FAIL(501, "CONNECT not supported");
    req->method.ptr = (const char *)m;
    req->method.len = mlen;

    t = ++p;
    p = scan_target(p, cap);
    if (p == cap)
        LINE_OUT();
    if (*p != ' ' || p == t)
        FAIL(400, "invalid request-target");
    tlen = (size_t)(p - t);
    if ((why = split_target(t, tlen, m, mlen, req, &authority)) != NULL)
        FAIL(400, why);
    req->target.ptr = (const char *)t;
    req->target.len = tlen;
    p++;

    /* HTTP-version = "HTTP/" DIGIT "." DIGIT. A well-formed version other
     * than 1.0 or 1.1 is 505, decided at its first wrong digit. */
    for (const char *h = "HTTP/"; *h; h++, p++) {
        if (p == cap)
            LINE_OUT();
        if (*p != (unsigned char)*h)
            FAIL(400, "invalid HTTP version");
    }
    if (p == cap)
        LINE_OUT();
    if (*p < '0' || *p > '9')
        FAIL(400, "invalid HTTP version");
    if (*p != '1')
        FAIL(505, "HTTP version not supported");
    if (++p == cap)
        LINE_OUT();
    if (*p != '.')
        FAIL(400, "invalid HTTP version");
    if (++p == cap)
        LINE_OUT();
    if (*p < '0' || *p > '9')
        FAIL(400, "invalid HTTP version");
    if (*p > '1')
        FAIL(505, "HTTP version not supported");
    req->minor = *p - '0';
    if (++p == cap)
        LINE_OUT();
    if (*p != '\r')
        FAIL(400, "invalid request line");
    if (++p == end)
        NEED_MORE();
    if (*p != '\n')
        FAIL(400, "bare CR in request line");
    p++;
#undef LINE_OUT

    req->host.ptr = NULL;
    req->host.len = 0;
    fcap = lim->field_size >= 2 ? lim->field_size - 1 : 0;

    /* field-line = field-name ":" OWS field-value OWS CRLF, one per line.
     * A field line may take field_size bytes with its CRLF (Gunicorn's
     * accounting), so its CR sits at most field_size - 2 bytes in. */
    for (;;) {
        const unsigned char *name, *v, *ve;
        size_t nlen;
        int underscore = 0;

        if (p == end)
            NEED_MORE();
        if (*p == '\r') {
            if (++p == end)
                NEED_MORE();
            if (*p != '\n')
                FAIL(400, "bare CR in header section");
            p++;
            break;
        }
        if (IS_WS(*p))
            FAIL(400, "obsolete line folding");
        if (nfields == lim->fields)
            FAIL(431, "too many header fields");

        line = name = p;
        room = (size_t)(end - p);
        cap = room >= fcap ? p + fcap : end;
#define FIELD_OUT() \
    do { if ((size_t)(p - line) == fcap) FAIL(431, "header field too large"); NEED_MORE(); } while (0)

        for (;;) {
            p = scan_name(p, cap);
            if (p == cap || *p != '_')
                break;
            underscore = 1;
            p++;
        }
        if (p == cap)
            FIELD_OUT();
        if (*p != ':') {
            if (IS_WS(*p) && p != name)
                FAIL(400, "whitespace before colon");
            if (*p == '\n')
                FAIL(400, "bare LF in header section");
            FAIL(400, "invalid header name");
        }
        if (p == name)
            FAIL(400, "empty header name");
        nlen = (size_t)(p - name);
        p++;
        while (p < cap && IS_WS(*p))
            p++;
        v = p;
        p = scan_value(p, cap);
        if (p == cap)
            FIELD_OUT();
        if (*p != '\r')
            FAIL(400, *p == '\n' ? "bare LF in header section" : "invalid character in header value");
        ve = p;
        while (ve > v && IS_WS(ve[-1]))
            ve--;
        if (++p == end)
            NEED_MORE();
        if (*p != '\n')
            FAIL(400, "bare CR in header section");
        p++;
        nfields++;
#undef FIELD_OUT

        if (underscore) {
            /* Gunicorn drops '_' names: in a CGI-style environ they would
             * alias the '-' spelling. A framing look-alike is refused. */
            if (framing_lookalike(name, nlen))
                FAIL(400, "ambiguous header name");
            req->dropped++;
            continue;
        }

        switch (nlen) {
        case 4:
            if (IEQ(name, nlen, "host")) {
                if (host_seen++)
                    FAIL(400, "duplicate Host");
                if (!host_valid(v, (size_t)(ve - v)))
                    FAIL(400, "invalid Host");
                req->host.ptr = (const char *)v;
                req->host.len = (size_t)(ve - v);
            }
            break;
        case 6:
            if (IEQ(name, nlen, "expect") && IEQ(v, (size_t)(ve - v), "100-continue"))
                expect_continue = 1;
            break;
        case 7:
            if (IEQ(name, nlen, "upgrade"))
                upgrade_seen = 1;
            break;
        case 10:
            if (IEQ(name, nlen, "connection"))
                conn |= connection_tokens(v, ve);
            break;
        case 12:
            /* A second Content-Type leaves the app guessing (Gunicorn). */
            if (IEQ(name, nlen, "content-type") && ctype_seen++)
                FAIL(400, "duplicate Content-Type");
            break;
        case 14:
            if (IEQ(name, nlen, "content-length")) {
                const unsigned char *d = v;
                size_t digits = 0;
                /* Even an equal duplicate is refused: some peers take the
                 * first, some the last, some join them with ", ". */
                if (cl_seen++)
                    FAIL(400, "duplicate Content-Length");
                if (d == ve)
                    FAIL(400, "empty Content-Length");
                while (d < ve && *d == '0')
                    d++;
                for (; d < ve; d++) {
                    if (*d < '0' || *d > '9')
                        FAIL(400, "invalid Content-Length");
                    /* 18 digits cannot overflow an int64 anywhere */
                    if (++digits > 18)
                        FAIL(400, "Content-Length too large");
                    cl = cl * 10 + (uint64_t)(*d - '0');
                }
                break;
            }
            goto lookalike;
        case 17:
            if (IEQ(name, nlen, "transfer-encoding")) {
                /* Two TE lines can be read as one list or as "last wins". */
                if (te_seen++)
                    FAIL(400, "multiple Transfer-Encoding fields");
                if (v == ve)
                    FAIL(400, "empty Transfer-Encoding");
                te_status = te_verdict(v, ve);
                break;
            }
            goto lookalike;
        default:
        lookalike:
            if (framing_lookalike(name, nlen))
                FAIL(400, "ambiguous header name");
            break;
        }
        if (req->nheaders == req->max_headers)
            FAIL(431, "too many header fields");
        req->headers[req->nheaders].name.ptr = (const char *)name;
        req->headers[req->nheaders].name.len = nlen;
        req->headers[req->nheaders].value.ptr = (const char *)v;
        req->headers[req->nheaders].value.len = (size_t)(ve - v);
        req->nheaders++;
    }

    /* Whole-head rules, in a fixed order so the status is deterministic. */
    if (req->minor == 1 && !host_seen)
        FAIL(400, "missing Host");
    if (authority.ptr != NULL)
        req->host = authority;
    req->content_length = 0;
    req->body = GW_HTTP1_BODY_NONE;
    if (te_seen) {
        if (cl_seen)
            FAIL(400, "both Content-Length and Transfer-Encoding");
        if (req->minor == 0)
            FAIL(400, "Transfer-Encoding in HTTP/1.0");
        if (te_status == 501)
            FAIL(501, "unsupported transfer coding");
        if (te_status != 0)
            FAIL(400, "invalid Transfer-Encoding");
        req->body = GW_HTTP1_BODY_CHUNKED;
    } else if (cl > 0) {
        if (cl > lim->body)
            FAIL(413, "request body too large");
        req->body = GW_HTTP1_BODY_LENGTH;
        req->content_length = cl;
    }
    if (req->minor == 1)
        req->keepalive = !(conn & CONN_CLOSE);
    else
        req->keepalive = (conn & CONN_KEEPALIVE) && !(conn & CONN_CLOSE);
    /* RFC 9110 10.1.1 and 7.8: HTTP/1.0 ignores Expect and Upgrade. */
    req->expect_continue = req->minor == 1 && expect_continue;
    req->upgrade = req->minor == 1 && upgrade_seen && (conn & CONN_UPGRADE);
    return (ssize_t)(p - (const unsigned char *)buf);
}

/*
 * Chunked decoder (RFC 9112 7.1). One state per position in the grammar;
 * the struct is the whole memory, so input may be split anywhere.
 *
 *   chunk-size [ chunk-ext ] CRLF  chunk-data CRLF  ...  "0" [ext] CRLF
 *   *( field-line CRLF )  CRLF
 *
 * chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )
 * BWS is taken after ';', around '=' and before the next ';', never right
 * after the size or before the CRLF: "5 " and "5;a " are errors, like in
 * llhttp's strict mode, because lenient parsers disagree on them.
 */
enum {
    CH_SIZE0 = 0,       /* first hex digit of a size line */
    CH_SIZE,            /* more digits, ';' or CR */
    CH_EXT_PRE_NAME,    /* after ';': BWS, then an extension name */
    CH_EXT_NAME,
    CH_EXT_NAME_WS,     /* BWS after a name: '=' or ';' */
    CH_EXT_PRE_VAL,     /* after '=': BWS, then token or quoted-string */
    CH_EXT_TOKEN,
    CH_EXT_QUOTED,
    CH_EXT_QPAIR,       /* after a backslash inside quotes */
    CH_EXT_AFTER_VAL,   /* ';', BWS or CR after a value */
    CH_EXT_VAL_WS,      /* BWS after a value: only ';' may follow */
    CH_SIZE_LF,
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TRAILER_START,   /* a trailer field line or the final CRLF */
    CH_TRAILER_NAME,
    CH_TRAILER_VALUE,
    CH_TRAILER_LF,
    CH_END_LF,
    CH_DONE,
    CH_ERROR
};

/*
 * Trailer fields that could change framing, routing or authentication if
 * anything downstream ever merged trailers into the header section (RFC
 * 9110 6.5.1): refused with 400, as Gunicorn does. Matched incrementally,
 * one bit per name, because a name may arrive split across calls.
 */
static const char *const forbidden_trailers[] = {
    "content-length", "transfer-encoding", "host", "trailer", "te",
    "connection", "keep-alive", "upgrade", "expect", "authorization",
    "proxy-authorization", "content-encoding", "content-range",
};
#define N_FORBIDDEN (sizeof(forbidden_trailers) / sizeof(forbidden_trailers[0]))

/* In trailer names `remaining` holds the candidate bits and `line` the
 * position in the name: neither is needed for anything else there. */
static void
trailer_name_byte(gw_http1_chunked_t *c, unsigned char ch)
{
    for (size_t k = 0; k < N_FORBIDDEN; k++)
        if ((c->remaining >> k & 1)
            && (c->line >= strlen(forbidden_trailers[k])
                || (ch | 0x20) != (unsigned char)forbidden_trailers[k][c->line]))
            c->remaining &= ~((uint64_t)1 << k);
    c->line++;
}

void
gw_http1_chunked_init(gw_http1_chunked_t *c)
{
    memset(c, 0, sizeof(*c));
}

#define CH_FAIL(st, msg) \
    do { c->state = CH_ERROR; err->status = (st); err->why = (msg); return GW_HTTP1_ERROR; } while (0)

ssize_t
gw_http1_chunked_decode(gw_http1_chunked_t *c, const char *buf, size_t len,
                        const gw_http1_limits_t *lim, gw_str_t *data,
                        gw_http1_error_t *err)
{
    const unsigned char *p = (const unsigned char *)buf, *end = p + len;

    data->ptr = buf;
    data->len = 0;
    if (c->state == CH_ERROR) {
        err->status = 400;
        err->why = "chunked decoder already failed";
        return GW_HTTP1_ERROR;
    }

    while (p < end && c->state != CH_DONE) {
        unsigned char ch = *p;

        /* Extension bytes, counted from the ';', per size line. */
        if (c->state >= CH_EXT_PRE_NAME && c->state <= CH_EXT_VAL_WS
            && ch != '\r' && ++c->ext > lim->chunk_ext)
            CH_FAIL(400, "chunk extension too long");
        /* The trailer section, last-chunk line excluded. */
        if (c->state >= CH_TRAILER_START && c->state <= CH_END_LF
            && ++c->trailer_bytes > lim->trailers)
            CH_FAIL(400, "trailer section too large");

        switch (c->state) {
        case CH_SIZE0:
        case CH_SIZE: {
            unsigned d;
            if (IS(ch, C_HEX)) {
                if (++c->line > 16)
                    CH_FAIL(400, "chunk size too long");
                d = ch <= '9' ? ch - '0' : (ch | 0x20) - 'a' + 10;
                c->remaining = c->remaining * 16 + d;
                /* total <= body always holds, so this cannot wrap */
                if (c->remaining > lim->body - c->total)
                    CH_FAIL(413, "request body too large");
                c->state = CH_SIZE;
            } else if (c->state == CH_SIZE0) {
                CH_FAIL(400, "invalid chunk size");
            } else if (ch == ';') {
                c->ext = 1;
                c->state = CH_EXT_PRE_NAME;
            } else if (ch == '\r') {
                c->state = CH_SIZE_LF;
            } else {
                CH_FAIL(400, "invalid chunk size");
            }
            break;
        }
        case CH_EXT_PRE_NAME:
            if (IS(ch, C_TCHAR))
                c->state = CH_EXT_NAME;
            else if (!IS_WS(ch))
                CH_FAIL(400, "invalid chunk extension");
            break;
        case CH_EXT_NAME:
            if (IS(ch, C_TCHAR))
                break;
            /* fall through */
        case CH_EXT_NAME_WS:
            if (ch == '=')
                c->state = CH_EXT_PRE_VAL;
            else if (ch == ';')
                c->state = CH_EXT_PRE_NAME;
            else if (IS_WS(ch))
                c->state = CH_EXT_NAME_WS;
            else if (ch == '\r' && c->state == CH_EXT_NAME)
                c->state = CH_SIZE_LF;
            else
                CH_FAIL(400, "invalid chunk extension");
            break;
        case CH_EXT_PRE_VAL:
            if (IS(ch, C_TCHAR))
                c->state = CH_EXT_TOKEN;
            else if (ch == '"')
                c->state = CH_EXT_QUOTED;
            else if (!IS_WS(ch))
                CH_FAIL(400, "invalid chunk extension");
            break;
        case CH_EXT_QUOTED:
            if (ch == '"')
                c->state = CH_EXT_AFTER_VAL;
            else if (ch == '\\')
                c->state = CH_EXT_QPAIR;
            else if (!IS(ch, C_QDTEXT))
                CH_FAIL(400, "invalid chunk extension");
            break;
        case CH_EXT_QPAIR:
            /* quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ) */
            if (!IS(ch, C_FVALUE))
                CH_FAIL(400, "invalid chunk extension");
            c->state = CH_EXT_QUOTED;
            break;
        case CH_EXT_TOKEN:
            if (IS(ch, C_TCHAR))
                break;
            /* fall through */
        case CH_EXT_AFTER_VAL:
        case CH_EXT_VAL_WS:
            if (ch == ';')
                c->state = CH_EXT_PRE_NAME;
            else if (IS_WS(ch))
                c->state = CH_EXT_VAL_WS;
            else if (ch == '\r' && c->state != CH_EXT_VAL_WS)
                c->state = CH_SIZE_LF;
            else
                CH_FAIL(400, "invalid chunk extension");
            break;
        case CH_SIZE_LF:
            if (ch != '\n')
                CH_FAIL(400, "bare CR in chunk size line");
            c->line = 0;
            c->ext = 0;
            if (c->remaining == 0) {
                c->state = CH_TRAILER_START;
            } else {
                c->state = CH_DATA;
            }
            break;
        case CH_DATA: {
            size_t n = (size_t)(end - p);
            if ((uint64_t)n > c->remaining)
                n = (size_t)c->remaining;
            data->ptr = (const char *)p;
            data->len = n;
            p += n;
            c->remaining -= n;
            c->total += n;
            if (c->remaining == 0)
                c->state = CH_DATA_CR;
            /* one data span per call: hand it over now */
            return (ssize_t)(p - (const unsigned char *)buf);
        }
        case CH_DATA_CR:
            /* Anything else here means the size lied; reading on would
             * let the chunk's tail be parsed as the next request. */
            if (ch != '\r')
                CH_FAIL(400, "chunk data not followed by CRLF");
            c->state = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (ch != '\n')
                CH_FAIL(400, "chunk data not followed by CRLF");
            c->state = CH_SIZE0;
            break;
        case CH_TRAILER_START:
            if (ch == '\r') {
                c->state = CH_END_LF;
            } else if (IS(ch, C_TCHAR)) {
                c->remaining = ((uint64_t)1 << N_FORBIDDEN) - 1;
                c->line = 0;
                trailer_name_byte(c, ch);
                c->state = CH_TRAILER_NAME;
            } else if (IS_WS(ch)) {
                CH_FAIL(400, "obsolete line folding in trailer");
            } else {
                CH_FAIL(400, "invalid trailer field");
            }
            break;
        case CH_TRAILER_NAME:
            if (IS(ch, C_TCHAR)) {
                trailer_name_byte(c, ch);
            } else if (ch == ':') {
                for (size_t k = 0; k < N_FORBIDDEN; k++)
                    if ((c->remaining >> k & 1) && strlen(forbidden_trailers[k]) == c->line)
                        CH_FAIL(400, "forbidden trailer field");
                c->remaining = 0;
                c->state = CH_TRAILER_VALUE;
            } else {
                CH_FAIL(400, IS_WS(ch) ? "whitespace before colon in trailer" : "invalid trailer field");
            }
            break;
        case CH_TRAILER_VALUE:
            if (ch == '\r')
                c->state = CH_TRAILER_LF;
            else if (!IS(ch, C_FVALUE))
                CH_FAIL(400, "invalid character in trailer");
            break;
        case CH_TRAILER_LF:
            if (ch != '\n')
                CH_FAIL(400, "bare CR in trailer");
            c->state = CH_TRAILER_START;
            break;
        case CH_END_LF:
            if (ch != '\n')
                CH_FAIL(400, "bare CR after trailer section");
            c->state = CH_DONE;
            c->done = 1;
            break;
        default:
            CH_FAIL(400, "chunked decoder in bad state");
        }
        p++;
    }
    return (ssize_t)(p - (const unsigned char *)buf);
}

const char *
gw_http1_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default:  return "Unknown";
    }
}
