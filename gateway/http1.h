/*
 * http1.h - strict HTTP/1.0 and HTTP/1.1 request parser (RFC 9112), used by
 * the front in the master process. Pure code: no I/O, no allocation, no
 * globals. The head parser borrows the caller's buffer (picohttpparser
 * style): every string in gw_http1_request_t points into it and is valid only
 * as long as those bytes are. The chunked decoder is incremental and also
 * borrows: data spans point into the input it was given.
 *
 * Policy (stricter than RFC 9112 where the RFC allows leniency, because any
 * parser difference with a proxy in front of us is a smuggling vector):
 * bare LF and bare CR are errors, obs-fold is an error, whitespace between a
 * field name and ':' is an error, Content-Length together with
 * Transfer-Encoding is an error, duplicate Content-Length is an error even if
 * equal, any Transfer-Encoding other than exactly one final "chunked" is an
 * error (501 for an unknown coding), HTTP/1.1 without exactly one Host is an
 * error, only HTTP/1.0 and HTTP/1.1 are accepted (505 for other versions).
 * Header names containing '_' are dropped from the header list (Gunicorn's
 * default; they would alias '-' names in CGI-style environs) and counted,
 * except look-alikes of Content-Length/Transfer-Encoding (Transfer_Encoding,
 * Content--Length), which are an error. A second Content-Type is an error.
 * Targets: origin-form, absolute-form (http/https only), "*" for OPTIONS;
 * bytes outside VCHAR are an error. Trailer fields that could change
 * framing, routing or auth (Content-Length, Transfer-Encoding, Host, ...)
 * are an error.
 */
#ifndef GW_HTTP1_H
#define GW_HTTP1_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define GW_HTTP1_OK      0
#define GW_HTTP1_ERROR  (-1)
#define GW_HTTP1_AGAIN  (-2)

typedef struct {
    const char *ptr;
    size_t      len;
} gw_str_t;

typedef struct {
    gw_str_t name;   /* as received (case preserved), never empty */
    gw_str_t value;  /* leading/trailing OWS removed; may be empty */
} gw_http1_header_t;

/* Limits, Gunicorn names where they exist. 0 is never "unlimited". */
typedef struct {
    size_t   request_line;  /* limit_request_line: bytes before CRLF (4094) -> 414 */
    size_t   fields;        /* limit_request_fields: header count (100) -> 431   */
    size_t   field_size;    /* limit_request_field_size: one field line with its
                               CRLF, as Gunicorn counts (8190) -> 431 */
    size_t   head;          /* whole head incl. final CRLF (65536) -> 431        */
    uint64_t body;          /* limit_request_body (1 GiB) -> 413                 */
    size_t   chunk_ext;     /* bytes of chunk extensions per chunk line (1024) -> 400 */
    size_t   trailers;      /* bytes of the trailer section (8192) -> 400 (431 ok) */
} gw_http1_limits_t;

/* Defaults above, for callers and tests. */
extern const gw_http1_limits_t gw_http1_default_limits;

typedef enum {
    GW_HTTP1_BODY_NONE = 0,   /* no body (no CL/TE, or CL: 0) */
    GW_HTTP1_BODY_LENGTH,     /* content_length bytes follow */
    GW_HTTP1_BODY_CHUNKED     /* chunked coding follows */
} gw_http1_body_t;

/* Parse error: the HTTP status to answer and a static reason for logs and
 * the response body ("invalid header name", "request line too long"...). */
typedef struct {
    int         status;   /* 400, 413, 414, 431, 501, 505 */
    const char *why;
} gw_http1_error_t;

typedef struct {
    gw_str_t          method;
    gw_str_t          target;       /* raw request-target */
    gw_str_t          path;         /* target up to the first '?' or '#'; for
                                       absolute-form the path after the
                                       authority (may be empty: means "/") */
    gw_str_t          query;        /* between '?' and '#', without '?' */
    int               minor;        /* HTTP/1.<minor>: 0 or 1 */
    gw_http1_header_t *headers;     /* caller's array, filled in wire order */
    size_t            nheaders;     /* out: headers kept */
    size_t            max_headers;  /* in: capacity of headers[] (>= limits.fields) */
    size_t            dropped;      /* out: headers dropped by policy ('_' names) */
    gw_http1_body_t   body;
    uint64_t          content_length; /* valid when body == GW_HTTP1_BODY_LENGTH */
    unsigned          keepalive:1;  /* per version default and Connection tokens */
    unsigned          expect_continue:1; /* Expect: 100-continue */
    unsigned          upgrade:1;    /* Connection: upgrade + Upgrade present */
    gw_str_t          host;         /* the Host value (empty for 1.0 without Host);
                                       for absolute-form the target's authority
                                       without userinfo (RFC 9112 3.2.2) */
} gw_http1_request_t;

/*
 * Parse a request head from buf[0..len). Empty lines (CRLF) before the
 * request line are skipped (RFC 9112 2.2) and count towards the head limit.
 * Returns:
 *   > 0               the head's length in bytes including the final CRLF
 *                     (and any skipped leading CRLF); *req is filled.
 *   GW_HTTP1_AGAIN    the head is incomplete and no limit is exceeded yet;
 *                     call again with more bytes (same buf start).
 *   GW_HTTP1_ERROR    *err is set; the connection's framing is unknown, the
 *                     caller answers err->status and closes.
 * Limits are enforced on incomplete input too: a request line longer than
 * request_line answers 414 before its CRLF arrives, a head longer than
 * head answers 431, a field line longer than field_size answers 431.
 * A method other than a token, or with lowercase letters (Gunicorn's
 * default), answers 400; CONNECT answers 501 (not supported); any other
 * token method is accepted. The body limit is checked here against
 * Content-Length (413). The parser rescans from buf on every call: call it
 * again when new bytes hold a '\n' or pass a limit, not on every byte.
 */
ssize_t gw_http1_parse_request(const char *buf, size_t len,
                               const gw_http1_limits_t *limits,
                               gw_http1_request_t *req, gw_http1_error_t *err);

/* Incremental chunked-body decoder. Zero-initialise, or call _init. */
typedef struct {
    int      state;        /* private */
    uint64_t remaining;    /* private: data bytes left in the current chunk */
    uint64_t total;        /* data bytes decoded so far */
    size_t   line;         /* private: bytes of the current size/trailer line */
    size_t   ext;          /* private: extension bytes of the current line */
    size_t   trailer_bytes;/* private */
    unsigned done:1;       /* last chunk and trailer section consumed */
} gw_http1_chunked_t;

void gw_http1_chunked_init(gw_http1_chunked_t *c);

/*
 * Consume chunked-coded bytes from buf[0..len). Returns the number of bytes
 * consumed (0..len) and sets *data to the body bytes found among them (a
 * span inside buf, possibly empty). At most one data span is returned per
 * call, so callers loop until the return is 0 or c->done. Trailer fields are
 * checked for syntax and size and then discarded: they never change framing
 * (names listed in the policy above answer 400).
 * Bytes after the end of the body are never consumed.
 * Returns GW_HTTP1_ERROR with *err set (400; 413 when total would exceed
 * limits->body) on malformed input; the caller closes the connection.
 */
ssize_t gw_http1_chunked_decode(gw_http1_chunked_t *c, const char *buf,
                                size_t len, const gw_http1_limits_t *limits,
                                gw_str_t *data, gw_http1_error_t *err);

/* Reason phrase for a status code ("Bad Request"), "Unknown" if none. */
const char *gw_http1_reason(int status);

#endif /* GW_HTTP1_H */
