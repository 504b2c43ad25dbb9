/*
 * gwp.c - the gateway wire protocol codec (spec: proto/PROTOCOL.md).
 * Linked into the front (master) and into every worker. Pure code: no I/O,
 * no globals except const tables; safe from any thread on distinct objects.
 *
 * Encoding measures the payload first, reserves once, then fills: nothing
 * can fail after the reservation, so a failed encode leaves the buffer as it
 * was, and there is no length to backpatch. Decoding is a hand-rolled
 * zero-copy msgpack reader in one pass that is also the structural check
 * (see decode_payload): bounds and counts checked before use, depth <= 8,
 * exactly one object; strings point into the caller's buffer. The hot
 * messages first try a fast path that matches the exact layout our encoder
 * writes (see fast_request) and hands anything else to decode_payload.
 *
 * Why not msgpack-c: for a typical REQUEST (GET, 8 headers, 524-byte frame)
 * on the project's machine (EPYC, gcc -O2, best of 40 rounds), msgpack-c took
 * ~115 ns to pack and ~500 ns to msgpack_unpack() into a reused zone before
 * any field was even looked at; this codec encodes it in ~43 ns and decodes
 * it in ~45 ns (RESPONSE, 200 + 2 headers + 13-byte body: ~14 / ~13 ns;
 * before the fast paths ~55 / ~100 and ~19 / ~36 ns). GWP_BENCH=1 on the
 * unit tests reprints these. Keeping msgpack-c off untrusted bytes also
 * removes its allocate-by-declared-size hazard; tests and the fuzzer still
 * use it as an independent oracle.
 */
#include "gwp.h"

#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* Deepest container nesting accepted in a payload (the top map is depth 1). */
#define GWP_MAX_DEPTH 8

/* ------------------------------------------------------------------------ */
/* Byte order                                                               */

static inline uint16_t gwp_be16(const uint8_t *p)
{
    return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}

static inline uint32_t gwp_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t gwp_be64(const uint8_t *p)
{
    return (uint64_t)gwp_be32(p) << 32 | gwp_be32(p + 4);
}

/* One bswap and one store each (gcc does not always merge byte stores). */
static inline uint8_t *gwp_put16(uint8_t *p, uint16_t v)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap16(v);
#endif
    memcpy(p, &v, 2);
    return p + 2;
}

static inline uint8_t *gwp_put32(uint8_t *p, uint32_t v)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    memcpy(p, &v, 4);
    return p + 4;
}

static inline uint8_t *gwp_put64(uint8_t *p, uint64_t v)
{
    gwp_put32(p, (uint32_t)(v >> 32));
    return gwp_put32(p + 4, (uint32_t)v);
}

/* ------------------------------------------------------------------------ */
/* Output buffer                                                            */

void gwp_buf_init(gwp_buf_t *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void gwp_buf_free(gwp_buf_t *b)
{
    free(b->data);
    gwp_buf_init(b);
}

/* A drained buffer bigger than this is given back: one large response must
 * not pin megabytes per channel for the life of the worker. Smaller ones
 * are kept so the steady state does no malloc at all. */
#define GWP_BUF_KEEP (4 * GWP_MAX_DATA)

void gwp_buf_consume(gwp_buf_t *b, size_t n)
{
    assert(n <= b->len);
    if (n >= b->len) {
        b->len = 0;
        if (b->cap > GWP_BUF_KEEP) gwp_buf_free(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

int gwp_buf_reserve(gwp_buf_t *b, size_t n)
{
    if (b->cap - b->len >= n) return 0;
    if (n > SIZE_MAX / 4 - b->len) return -ENOMEM;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < n) cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (p == NULL) return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* msgpack writer: sizes first, then unchecked puts into reserved space.    */

/* Anything longer than a payload can hold is sized as "too big" so that a sum
 * of a few thousand of them can neither overflow nor pass the cap check. */
#define GWP_TOO_BIG ((size_t)GWP_MAX_PAYLOAD + 1)

static inline size_t mp_uint_size(uint64_t v)
{
    return v < 0x80 ? 1 : v <= 0xff ? 2 : v <= 0xffff ? 3 : v <= 0xffffffffu ? 5 : 9;
}

static inline size_t mp_int_size(int64_t v)
{
    if (v >= 0) return mp_uint_size((uint64_t)v);
    return v >= -32 ? 1 : v >= INT8_MIN ? 2 : v >= INT16_MIN ? 3 : v >= INT32_MIN ? 5 : 9;
}

static inline size_t mp_str_size(size_t n)
{
    if (n > GWP_MAX_PAYLOAD) return GWP_TOO_BIG;
    return n + (n < 32 ? 1 : n <= 0xff ? 2 : n <= 0xffff ? 3 : 5);
}

static inline size_t mp_bin_size(size_t n)
{
    if (n > GWP_MAX_PAYLOAD) return GWP_TOO_BIG;
    return n + (n <= 0xff ? 2 : n <= 0xffff ? 3 : 5);
}

/* A map key is always a fixstr literal: sizeof("key") == 1 + strlen. */
#define KEY_SIZE(k)   sizeof(k)
#define PUT_KEY(p, k) mp_put_fix((p), (k), sizeof(k) - 1)

static inline uint8_t *mp_put_fix(uint8_t *p, const char *k, size_t n)
{
    *p++ = (uint8_t)(0xa0 | n);
    memcpy(p, k, n);
    return p + n;
}

static inline uint8_t *mp_put_uint(uint8_t *p, uint64_t v)
{
    if (v < 0x80) { *p++ = (uint8_t)v; return p; }
    if (v <= 0xff) { *p++ = 0xcc; *p++ = (uint8_t)v; return p; }
    if (v <= 0xffff) { *p++ = 0xcd; return gwp_put16(p, (uint16_t)v); }
    if (v <= 0xffffffffu) { *p++ = 0xce; return gwp_put32(p, (uint32_t)v); }
    *p++ = 0xcf;
    return gwp_put64(p, v);
}

static inline uint8_t *mp_put_int(uint8_t *p, int64_t v)
{
    if (v >= 0) return mp_put_uint(p, (uint64_t)v);
    if (v >= -32) { *p++ = (uint8_t)(int8_t)v; return p; }
    if (v >= INT8_MIN) { *p++ = 0xd0; *p++ = (uint8_t)(int8_t)v; return p; }
    if (v >= INT16_MIN) { *p++ = 0xd1; return gwp_put16(p, (uint16_t)(int16_t)v); }
    if (v >= INT32_MIN) { *p++ = 0xd2; return gwp_put32(p, (uint32_t)(int32_t)v); }
    *p++ = 0xd3;
    return gwp_put64(p, (uint64_t)v);
}

/* Most strings in a frame are a few bytes long: copy those with overlapping
 * word moves instead of a memcpy call each (a third of encode time). */
static inline uint8_t *mp_put_bytes(uint8_t *p, const void *src, size_t n)
{
    const uint8_t *s = src;
    if (n > 16) {
        memcpy(p, s, n);
    } else if (n >= 8) {
        uint64_t a, b;
        memcpy(&a, s, 8); memcpy(&b, s + n - 8, 8);
        memcpy(p, &a, 8); memcpy(p + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, s, 4); memcpy(&b, s + n - 4, 4);
        memcpy(p, &a, 4); memcpy(p + n - 4, &b, 4);
    } else if (n) {                     /* s may be NULL only when n == 0 */
        p[0] = s[0]; p[n / 2] = s[n / 2]; p[n - 1] = s[n - 1];
    }
    return p + n;
}

/* "text" fields (ASCII/UTF-8 by contract) go out as msgpack str. */
static inline uint8_t *mp_put_str(uint8_t *p, gwp_str_t s)
{
    size_t n = s.len;
    if (n < 32) *p++ = (uint8_t)(0xa0 | n);
    else if (n <= 0xff) { *p++ = 0xd9; *p++ = (uint8_t)n; }
    else if (n <= 0xffff) { *p++ = 0xda; p = gwp_put16(p, (uint16_t)n); }
    else { *p++ = 0xdb; p = gwp_put32(p, (uint32_t)n); }
    return mp_put_bytes(p, s.ptr, n);
}

/* "bytes" fields (whatever the client or app sent, not necessarily UTF-8)
 * go out as msgpack bin, so strict UTF-8 decoders elsewhere do not choke. */
static inline uint8_t *mp_put_bin(uint8_t *p, const void *s, size_t n)
{
    if (n <= 0xff) { *p++ = 0xc4; *p++ = (uint8_t)n; }
    else if (n <= 0xffff) { *p++ = 0xc5; p = gwp_put16(p, (uint16_t)n); }
    else { *p++ = 0xc6; p = gwp_put32(p, (uint32_t)n); }
    return mp_put_bytes(p, s, n);
}

static inline uint8_t *mp_put_bool(uint8_t *p, int v)
{
    *p++ = v ? 0xc3 : 0xc2;
    return p;
}

/* Headers: array of [name, value] arrays, both bin. */
static inline __attribute__((always_inline)) size_t hdrs_size(const gwp_header_t *h, uint32_t n)
{
    /* Usual case first: every name and value under 256 bytes, so each pair
     * is 0x92 + two bin8 heads; a sum and an OR instead of a size ladder. */
    size_t sum = 0, any = 0;
    for (uint32_t i = 0; i < n; i++) {
        sum += h[i].name.len + h[i].value.len;
        any |= h[i].name.len | h[i].value.len;
    }
    if (any <= 0xff) return (n <= 15 ? 1 : n <= 0xffff ? 3 : 5) + 5 * (size_t)n + sum;
    size_t sz = n <= 15 ? 1 : n <= 0xffff ? 3 : 5;
    for (uint32_t i = 0; i < n; i++)
        sz += 1 + mp_bin_size(h[i].name.len) + mp_bin_size(h[i].value.len);
    return sz;
}

static inline __attribute__((always_inline)) uint8_t *hdrs_put(uint8_t *p, const gwp_header_t *h, uint32_t n)
{
    if (n <= 15) *p++ = (uint8_t)(0x90 | n);
    else if (n <= 0xffff) { *p++ = 0xdc; p = gwp_put16(p, (uint16_t)n); }
    else { *p++ = 0xdd; p = gwp_put32(p, n); }
    for (uint32_t i = 0; i < n; i++) {
        *p++ = 0x92;
        p = mp_put_bin(p, h[i].name.ptr, h[i].name.len);
        p = mp_put_bin(p, h[i].value.ptr, h[i].value.len);
    }
    return p;
}

/* ------------------------------------------------------------------------ */
/* Frame types                                                              */

enum { GWP_S0 = 1, GWP_SN = 2 };   /* stream must be 0 / must not be 0 */

static const struct {
    const char *name;
    uint8_t     stream;   /* GWP_S0 or GWP_SN */
    uint8_t     end_ok;   /* GWP_F_END is meaningful on this type */
} gwp_types[GWP_MSG_MAX] = {
    [GWP_MSG_HELLO]     = { "HELLO",     GWP_S0, 0 },
    [GWP_MSG_READY]     = { "READY",     GWP_S0, 0 },
    [GWP_MSG_REQUEST]   = { "REQUEST",   GWP_SN, 1 },
    [GWP_MSG_BODY]      = { "BODY",      GWP_SN, 1 },
    [GWP_MSG_RESPONSE]  = { "RESPONSE",  GWP_SN, 1 },
    [GWP_MSG_RESP_BODY] = { "RESP_BODY", GWP_SN, 1 },
    [GWP_MSG_CANCEL]    = { "CANCEL",    GWP_SN, 0 },
    [GWP_MSG_WINDOW]    = { "WINDOW",    GWP_SN, 0 },
    [GWP_MSG_HEARTBEAT] = { "HEARTBEAT", GWP_S0, 0 },
    [GWP_MSG_QUIT]      = { "QUIT",      GWP_S0, 0 },
    [GWP_MSG_ERROR]     = { "ERROR",     GWP_S0, 0 },
};
_Static_assert(GWP_MSG_MAX == 12, "new message type: extend gwp_types, gwp_schemas, PROTOCOL.md");

const char *gwp_type_name(unsigned type)
{
    if (type == 0 || type >= GWP_MSG_MAX) return "?";
    return gwp_types[type].name;
}

/* Reserve header + payload, write the header, hand back the payload start.
 * The payload size is known exactly here, so there is no backpatching. */
static inline __attribute__((always_inline))
int frame_open(gwp_buf_t *b, unsigned type, uint16_t flags,
               uint32_t stream, size_t payload, uint8_t **out)
{
    if (payload > GWP_MAX_PAYLOAD) return -EMSGSIZE;
    if (b->cap - b->len < GWP_HEADER_SIZE + payload
        && gwp_buf_reserve(b, GWP_HEADER_SIZE + payload) != 0) return -ENOMEM;
    uint8_t *p = b->data + b->len;
    p[0] = GWP_VERSION;
    p[1] = (uint8_t)type;
    gwp_put16(p + 2, flags);
    gwp_put32(p + 4, stream);
    gwp_put32(p + 8, (uint32_t)payload);
    *out = p + GWP_HEADER_SIZE;
    return 0;
}

static inline int frame_close(gwp_buf_t *b, const uint8_t *end, size_t payload)
{
    size_t total = GWP_HEADER_SIZE + payload;
    /* A sizing bug would otherwise be silent corruption of the stream. */
    assert((size_t)(end - (b->data + b->len)) == total);
    (void)end;
    b->len += total;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Encoders                                                                 */

int gwp_encode_hello(gwp_buf_t *b, const gwp_hello_t *m)
{
    if (m->window == 0) return -EINVAL;
    size_t sz = 1
        + KEY_SIZE("version") + mp_uint_size(m->version)
        + KEY_SIZE("slot") + mp_uint_size(m->slot)
        + KEY_SIZE("generation") + mp_uint_size(m->generation)
        + KEY_SIZE("max_payload") + mp_uint_size(m->max_payload)
        + KEY_SIZE("window") + mp_uint_size(m->window)
        + KEY_SIZE("heartbeat_ms") + mp_uint_size(m->heartbeat_ms)
        + KEY_SIZE("age") + mp_uint_size(m->age);
    uint8_t *p;
    int rc = frame_open(b, GWP_MSG_HELLO, 0, 0, sz, &p);
    if (rc) return rc;
    *p++ = 0x80 | 7;
    p = PUT_KEY(p, "version");      p = mp_put_uint(p, m->version);
    p = PUT_KEY(p, "slot");         p = mp_put_uint(p, m->slot);
    p = PUT_KEY(p, "generation");   p = mp_put_uint(p, m->generation);
    p = PUT_KEY(p, "max_payload");  p = mp_put_uint(p, m->max_payload);
    p = PUT_KEY(p, "window");       p = mp_put_uint(p, m->window);
    p = PUT_KEY(p, "heartbeat_ms"); p = mp_put_uint(p, m->heartbeat_ms);
    p = PUT_KEY(p, "age");          p = mp_put_uint(p, m->age);
    return frame_close(b, p, sz);
}

int gwp_encode_ready(gwp_buf_t *b, const gwp_ready_t *m)
{
    size_t sz = 1
        + KEY_SIZE("version") + mp_uint_size(m->version)
        + KEY_SIZE("pid") + mp_int_size(m->pid)
        + KEY_SIZE("runtime") + mp_str_size(m->runtime.len)
        + KEY_SIZE("loop") + mp_str_size(m->loop.len)
        + KEY_SIZE("capacity") + mp_uint_size(m->capacity);
    uint8_t *p;
    int rc = frame_open(b, GWP_MSG_READY, 0, 0, sz, &p);
    if (rc) return rc;
    *p++ = 0x80 | 5;
    p = PUT_KEY(p, "version"); p = mp_put_uint(p, m->version);
    p = PUT_KEY(p, "pid");     p = mp_put_int(p, m->pid);
    p = PUT_KEY(p, "runtime"); p = mp_put_str(p, m->runtime);
    p = PUT_KEY(p, "loop");    p = mp_put_str(p, m->loop);
    p = PUT_KEY(p, "capacity"); p = mp_put_uint(p, m->capacity);
    return frame_close(b, p, sz);
}

int gwp_encode_request(gwp_buf_t *b, uint32_t stream, uint16_t flags,
                       const gwp_request_t *m)
{
    /* Same range rules as the decoder, so whatever encodes also decodes. */
    if (stream == 0 || (flags & ~GWP_F_END) || m->http_minor > 1 || m->content_length < -1)
        return -EINVAL;
    if (m->nheaders > GWP_MAX_HEADERS) return -EMSGSIZE;
    size_t sz;
    if ((m->method.len | m->peer.len | m->server.len | m->scheme.len) < 32
        && (m->target.len | m->path.len | m->query.len) <= 0xff) {
        /* Usual case: text as fixstr (1-byte head), bytes as bin8 (2). */
        sz = 1 + KEY_SIZE("method") + KEY_SIZE("target") + KEY_SIZE("path")
            + KEY_SIZE("query") + KEY_SIZE("http_minor") + 1 + KEY_SIZE("headers")
            + KEY_SIZE("peer") + KEY_SIZE("server") + KEY_SIZE("scheme")
            + KEY_SIZE("content_length") + KEY_SIZE("keepalive") + 1
            + 4 * 1 + 3 * 2
            + m->method.len + m->peer.len + m->server.len + m->scheme.len
            + m->target.len + m->path.len + m->query.len
            + hdrs_size(m->headers, m->nheaders) + mp_int_size(m->content_length);
    } else sz = 1
        + KEY_SIZE("method") + mp_str_size(m->method.len)
        + KEY_SIZE("target") + mp_bin_size(m->target.len)
        + KEY_SIZE("path") + mp_bin_size(m->path.len)
        + KEY_SIZE("query") + mp_bin_size(m->query.len)
        + KEY_SIZE("http_minor") + 1
        + KEY_SIZE("headers") + hdrs_size(m->headers, m->nheaders)
        + KEY_SIZE("peer") + mp_str_size(m->peer.len)
        + KEY_SIZE("server") + mp_str_size(m->server.len)
        + KEY_SIZE("scheme") + mp_str_size(m->scheme.len)
        + KEY_SIZE("content_length") + mp_int_size(m->content_length)
        + KEY_SIZE("keepalive") + 1;
    uint8_t *p;
    int rc = frame_open(b, GWP_MSG_REQUEST, flags, stream, sz, &p);
    if (rc) return rc;
    *p++ = 0x80 | 11;
    p = PUT_KEY(p, "method");         p = mp_put_str(p, m->method);
    p = PUT_KEY(p, "target");         p = mp_put_bin(p, m->target.ptr, m->target.len);
    p = PUT_KEY(p, "path");           p = mp_put_bin(p, m->path.ptr, m->path.len);
    p = PUT_KEY(p, "query");          p = mp_put_bin(p, m->query.ptr, m->query.len);
    p = PUT_KEY(p, "http_minor");     p = mp_put_uint(p, m->http_minor);
    p = PUT_KEY(p, "headers");        p = hdrs_put(p, m->headers, m->nheaders);
    p = PUT_KEY(p, "peer");           p = mp_put_str(p, m->peer);
    p = PUT_KEY(p, "server");         p = mp_put_str(p, m->server);
    p = PUT_KEY(p, "scheme");         p = mp_put_str(p, m->scheme);
    p = PUT_KEY(p, "content_length"); p = mp_put_int(p, m->content_length);
    p = PUT_KEY(p, "keepalive");      p = mp_put_bool(p, m->keepalive);
    return frame_close(b, p, sz);
}

int gwp_encode_data(gwp_buf_t *b, gwp_type_t type, uint32_t stream,
                    uint16_t flags, const void *data, size_t len)
{
    if ((type != GWP_MSG_BODY && type != GWP_MSG_RESP_BODY) || stream == 0
        || (flags & ~GWP_F_END))
        return -EINVAL;
    size_t sz = 1 + KEY_SIZE("data") + mp_bin_size(len);
    uint8_t *p;
    int rc = frame_open(b, type, flags, stream, sz, &p);
    if (rc) return rc;
    *p++ = 0x80 | 1;
    p = PUT_KEY(p, "data");
    p = mp_put_bin(p, data, len);
    return frame_close(b, p, sz);
}

int gwp_encode_response(gwp_buf_t *b, uint32_t stream, uint16_t flags,
                        const gwp_response_t *m)
{
    if (stream == 0 || (flags & ~GWP_F_END) || m->status < 100 || m->status > 999)
        return -EINVAL;
    if (m->nheaders > GWP_MAX_HEADERS) return -EMSGSIZE;
    /* A body with has_body unset is still sent: dropping data silently
     * would be worse than trusting the length. */
    int body = m->has_body || m->body.len;
    size_t sz = 1
        + KEY_SIZE("status") + mp_uint_size(m->status)
        + KEY_SIZE("headers") + hdrs_size(m->headers, m->nheaders)
        + (body ? KEY_SIZE("body") + mp_bin_size(m->body.len) : 0);
    uint8_t *p;
    int rc = frame_open(b, GWP_MSG_RESPONSE, flags, stream, sz, &p);
    if (rc) return rc;
    *p++ = (uint8_t)(0x80 | (body ? 3 : 2));
    p = PUT_KEY(p, "status");  p = mp_put_uint(p, m->status);
    p = PUT_KEY(p, "headers"); p = hdrs_put(p, m->headers, m->nheaders);
    if (body) { p = PUT_KEY(p, "body"); p = mp_put_bin(p, m->body.ptr, m->body.len); }
    return frame_close(b, p, sz);
}

int gwp_encode_cancel(gwp_buf_t *b, uint32_t stream, const char *reason)
{
    if (stream == 0) return -EINVAL;
    gwp_str_t r = { reason ? reason : "", reason ? strlen(reason) : 0 };
    size_t sz = 1 + KEY_SIZE("reason") + mp_str_size(r.len);
    uint8_t *p;
    int rc = frame_open(b, GWP_MSG_CANCEL, 0, stream, sz, &p);
    if (rc) return rc;
    *p++ = 0x80 | 1;
    p = PUT_KEY(p, "reason");
    p = mp_put_str(p, r);
    return frame_close(b, p, sz);
}

int gwp_encode_window(gwp_buf_t *b, uint32_t stream, uint32_t bytes)
{
    if (stream == 0) return -EINVAL;
    size_t sz = 1 + KEY_SIZE("bytes") + mp_uint_size(bytes);
    uint8_t *p;
    int rc = frame_open(b, GWP_MSG_WINDOW, 0, stream, sz, &p);
    if (rc) return rc;
    *p++ = 0x80 | 1;
    p = PUT_KEY(p, "bytes");
    p = mp_put_uint(p, bytes);
    return frame_close(b, p, sz);
}

int gwp_encode_heartbeat(gwp_buf_t *b, const gwp_heartbeat_t *m)
{
    size_t sz = 1
        + KEY_SIZE("served") + mp_uint_size(m->served)
        + KEY_SIZE("inflight") + mp_uint_size(m->inflight)
        + KEY_SIZE("tasks") + mp_uint_size(m->tasks)
        + KEY_SIZE("rss") + mp_uint_size(m->rss)
        + KEY_SIZE("loop") + mp_str_size(m->loop.len);
    uint8_t *p;
    int rc = frame_open(b, GWP_MSG_HEARTBEAT, 0, 0, sz, &p);
    if (rc) return rc;
    *p++ = 0x80 | 5;
    p = PUT_KEY(p, "served");   p = mp_put_uint(p, m->served);
    p = PUT_KEY(p, "inflight"); p = mp_put_uint(p, m->inflight);
    p = PUT_KEY(p, "tasks");    p = mp_put_uint(p, m->tasks);
    p = PUT_KEY(p, "rss");      p = mp_put_uint(p, m->rss);
    p = PUT_KEY(p, "loop");     p = mp_put_str(p, m->loop);
    return frame_close(b, p, sz);
}

int gwp_encode_quit(gwp_buf_t *b, const gwp_quit_t *m)
{
    size_t sz = 1
        + KEY_SIZE("graceful") + 1
        + KEY_SIZE("timeout_ms") + mp_uint_size(m->timeout_ms);
    uint8_t *p;
    int rc = frame_open(b, GWP_MSG_QUIT, 0, 0, sz, &p);
    if (rc) return rc;
    *p++ = 0x80 | 2;
    p = PUT_KEY(p, "graceful");   p = mp_put_bool(p, m->graceful);
    p = PUT_KEY(p, "timeout_ms"); p = mp_put_uint(p, m->timeout_ms);
    return frame_close(b, p, sz);
}

int gwp_encode_error(gwp_buf_t *b, const gwp_error_t *m)
{
    size_t sz = 1
        + KEY_SIZE("message") + mp_str_size(m->message.len)
        + KEY_SIZE("code") + mp_int_size(m->code);
    uint8_t *p;
    int rc = frame_open(b, GWP_MSG_ERROR, 0, 0, sz, &p);
    if (rc) return rc;
    *p++ = 0x80 | 2;
    p = PUT_KEY(p, "message"); p = mp_put_str(p, m->message);
    p = PUT_KEY(p, "code");    p = mp_put_int(p, m->code);
    return frame_close(b, p, sz);
}

/* ------------------------------------------------------------------------ */
/* msgpack reader                                                           */

enum { MP_NIL, MP_BOOL, MP_INT, MP_STR, MP_ARRAY, MP_MAP, MP_OTHER };

typedef struct {
    uint8_t        kind;  /* MP_*; MP_STR covers str and bin, MP_OTHER float and ext */
    uint8_t        neg;   /* MP_INT: negative, value in i */
    uint64_t       u;     /* MP_INT >= 0: value; MP_BOOL: 0/1; MP_STR: length;
                             MP_ARRAY/MP_MAP: element/pair count */
    int64_t        i;     /* MP_INT < 0 */
    const uint8_t *ptr;   /* MP_STR: first byte */
} mp_item_t;

/*
 * Read the msgpack object head at p, never looking at or past end. Returns
 * the position after the head for arrays and maps (their elements follow),
 * after the whole object for everything else; NULL with *why if the head is
 * cut short, the byte is 0xc1, or a declared length or count cannot fit in
 * what remains (each element takes at least one byte). That last check is
 * what keeps a 5-byte "dd ff ff ff ff" from meaning anything.
 */
static const uint8_t *mp_head_slow(const uint8_t *p, const uint8_t *end,
                                   mp_item_t *it, const char **why)
{
    size_t avail = (size_t)(end - p), hdr, len = 0;
    if (avail == 0) goto trunc;
    uint8_t c = p[0];

    if (c <= 0x7f) { it->kind = MP_INT; it->neg = 0; it->u = c; return p + 1; }
    if (c >= 0xe0) { it->kind = MP_INT; it->neg = 1; it->i = (int8_t)c; return p + 1; }
    if (c <= 0x8f) { it->kind = MP_MAP;   it->u = c & 0x0f; hdr = 1; goto container; }
    if (c <= 0x9f) { it->kind = MP_ARRAY; it->u = c & 0x0f; hdr = 1; goto container; }
    if (c <= 0xbf) { it->kind = MP_STR;   len = c & 0x1f;   hdr = 1; goto data; }

#define NEED(n) do { hdr = (n); if (avail < hdr) goto trunc; } while (0)
    switch (c) {
    case 0xc0: it->kind = MP_NIL; return p + 1;
    case 0xc2: case 0xc3: it->kind = MP_BOOL; it->u = c & 1; return p + 1;
    case 0xc4: NEED(2); it->kind = MP_STR; len = p[1]; goto data;
    case 0xc5: NEED(3); it->kind = MP_STR; len = gwp_be16(p + 1); goto data;
    case 0xc6: NEED(5); it->kind = MP_STR; len = gwp_be32(p + 1); goto data;
    case 0xc7: NEED(3); it->kind = MP_OTHER; len = p[1]; goto data;            /* ext8 */
    case 0xc8: NEED(4); it->kind = MP_OTHER; len = gwp_be16(p + 1); goto data; /* ext16 */
    case 0xc9: NEED(6); it->kind = MP_OTHER; len = gwp_be32(p + 1); goto data; /* ext32 */
    case 0xca: NEED(5); it->kind = MP_OTHER; return p + hdr;                   /* float32 */
    case 0xcb: NEED(9); it->kind = MP_OTHER; return p + hdr;                   /* float64 */
    case 0xcc: NEED(2); it->kind = MP_INT; it->neg = 0; it->u = p[1]; return p + hdr;
    case 0xcd: NEED(3); it->kind = MP_INT; it->neg = 0; it->u = gwp_be16(p + 1); return p + hdr;
    case 0xce: NEED(5); it->kind = MP_INT; it->neg = 0; it->u = gwp_be32(p + 1); return p + hdr;
    case 0xcf: NEED(9); it->kind = MP_INT; it->neg = 0; it->u = gwp_be64(p + 1); return p + hdr;
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        int64_t v;
        if (c == 0xd0) { NEED(2); v = (int8_t)p[1]; }
        else if (c == 0xd1) { NEED(3); v = (int16_t)gwp_be16(p + 1); }
        else if (c == 0xd2) { NEED(5); v = (int32_t)gwp_be32(p + 1); }
        else { NEED(9); v = (int64_t)gwp_be64(p + 1); }
        it->kind = MP_INT;
        it->neg = v < 0;
        if (v < 0) it->i = v; else it->u = (uint64_t)v;
        return p + hdr;
    }
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:                     /* fixext */
        NEED(2 + ((size_t)1 << (c - 0xd4))); it->kind = MP_OTHER; return p + hdr;
    case 0xd9: NEED(2); it->kind = MP_STR; len = p[1]; goto data;
    case 0xda: NEED(3); it->kind = MP_STR; len = gwp_be16(p + 1); goto data;
    case 0xdb: NEED(5); it->kind = MP_STR; len = gwp_be32(p + 1); goto data;
    case 0xdc: NEED(3); it->kind = MP_ARRAY; it->u = gwp_be16(p + 1); goto container;
    case 0xdd: NEED(5); it->kind = MP_ARRAY; it->u = gwp_be32(p + 1); goto container;
    case 0xde: NEED(3); it->kind = MP_MAP; it->u = gwp_be16(p + 1); goto container;
    case 0xdf: NEED(5); it->kind = MP_MAP; it->u = gwp_be32(p + 1); goto container;
    default:   *why = "invalid msgpack byte 0xc1"; return NULL;
    }
#undef NEED

data:
    if (len > avail - hdr) { *why = "msgpack str/bin/ext length exceeds the payload"; return NULL; }
    it->ptr = p + hdr;
    it->u = len;
    return p + hdr + len;

container:
    /* Compare with the byte count divided, not the count multiplied: a
     * map32 count times two must not wrap. */
    if (it->u > (it->kind == MP_MAP ? (avail - hdr) / 2 : avail - hdr)) {
        *why = "msgpack array/map count exceeds the payload";
        return NULL;
    }
    return p + hdr;

trunc:
    *why = "msgpack object truncated";
    return NULL;
}

/*
 * mp_head with the heads a gwp payload is made of (fixstr, bin8, fixint,
 * fixmap, fixarray) decided inline; anything else, and every error, goes
 * through mp_head_slow. Same contract.
 */
static inline const uint8_t *mp_head(const uint8_t *p, const uint8_t *end,
                                     mp_item_t *it, const char **why)
{
    size_t avail = (size_t)(end - p);
    if (avail) {
        uint8_t c = p[0];
        if ((unsigned)c - 0xa0u < 0x20u) {                      /* fixstr */
            size_t len = c & 0x1f;
            if (len < avail) {
                it->kind = MP_STR; it->ptr = p + 1; it->u = len;
                return p + 1 + len;
            }
        } else if (c == 0xc4 && avail >= 2) {                   /* bin8 */
            size_t len = p[1];
            if (len <= avail - 2) {
                it->kind = MP_STR; it->ptr = p + 2; it->u = len;
                return p + 2 + len;
            }
        } else if (c <= 0x7f) {                                 /* positive fixint */
            it->kind = MP_INT; it->neg = 0; it->u = c;
            return p + 1;
        } else if ((unsigned)c - 0x90u < 0x10u) {               /* fixarray */
            if ((size_t)(c & 0x0f) < avail) {
                it->kind = MP_ARRAY; it->u = c & 0x0f;
                return p + 1;
            }
        } else if ((unsigned)c - 0x80u < 0x10u) {               /* fixmap */
            if ((size_t)(c & 0x0f) <= (avail - 1) / 2) {
                it->kind = MP_MAP; it->u = c & 0x0f;
                return p + 1;
            }
        }
    }
    return mp_head_slow(p, end, it, why);
}

/*
 * Walk one object of any shape starting at p, inside containers already
 * `depth` deep, and return the position after it. This is how values under
 * unknown keys are skipped, and it is the structural check for them:
 * containers nested deeper than GWP_MAX_DEPTH are refused, and every head
 * goes through mp_head's bounds and count checks. Iterative, allocates
 * nothing. NULL with *why on error.
 */
static const uint8_t *mp_walk(const uint8_t *p, const uint8_t *end, unsigned depth,
                              const char **why)
{
    uint32_t left[GWP_MAX_DEPTH + 1];   /* objects still due at each level */
    unsigned base = depth;
    mp_item_t it;

    left[depth] = 1;
    for (;;) {
        while (left[depth] == 0) {
            if (depth == base) return p;
            depth--;
        }
        left[depth]--;
        if ((p = mp_head(p, end, &it, why)) == NULL) return NULL;
        if (it.kind == MP_ARRAY || it.kind == MP_MAP) {
            if (depth == GWP_MAX_DEPTH) { *why = "msgpack nesting deeper than 8"; return NULL; }
            /* mp_head bounded the count by the payload size (<= 1 MiB). */
            left[++depth] = (uint32_t)(it.kind == MP_MAP ? it.u * 2 : it.u);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Schemas: one table per message type drives decoding.                     */

enum { F_U8, F_U32, F_U64, F_I64, F_BOOL, F_STR, F_BODY, F_HDRS };

typedef struct {
    char        key[16];   /* zero-padded: key_eq loads whole words */
    uint8_t     klen;
    uint8_t     kind;      /* F_* */
    uint8_t     required;
    uint16_t    off;       /* field in the message struct */
    uint16_t    off2;      /* F_HDRS: nheaders; F_BODY: has_body */
    int64_t     lo;        /* integer range, inclusive */
    uint64_t    hi;
    const char *why_type, *why_range, *why_missing;
} gwp_field_t;

#define FLD(msg, st, k, kind, req, mem, mem2, lo, hi)                          \
    { k, sizeof(k) - 1, kind, req, offsetof(st, mem), offsetof(st, mem2),      \
      lo, hi, msg "." k ": wrong msgpack type", msg "." k ": value out of range", \
      msg ": missing required key \"" k "\"" }
#define REQ 1
#define OPT 0

static const gwp_field_t hello_f[] = {
    FLD("HELLO", gwp_hello_t, "version",      F_U32, REQ, version,      version,      0, UINT32_MAX),
    FLD("HELLO", gwp_hello_t, "slot",         F_U32, REQ, slot,         slot,         0, UINT32_MAX),
    FLD("HELLO", gwp_hello_t, "generation",   F_U32, REQ, generation,   generation,   0, UINT32_MAX),
    FLD("HELLO", gwp_hello_t, "max_payload",  F_U32, OPT, max_payload,  max_payload,  0, UINT32_MAX),
    FLD("HELLO", gwp_hello_t, "window",       F_U32, OPT, window,       window,       1, UINT32_MAX),
    FLD("HELLO", gwp_hello_t, "heartbeat_ms", F_U32, REQ, heartbeat_ms, heartbeat_ms, 0, UINT32_MAX),
    FLD("HELLO", gwp_hello_t, "age",          F_U32, OPT, age,          age,          0, UINT32_MAX),
};
static const gwp_hello_t hello_d = {
    .max_payload = GWP_MAX_PAYLOAD, .window = GWP_DEFAULT_WINDOW,
};

static const gwp_field_t ready_f[] = {
    FLD("READY", gwp_ready_t, "version", F_U32, REQ, version, version, 0, UINT32_MAX),
    FLD("READY", gwp_ready_t, "pid",     F_I64, REQ, pid,     pid,     INT64_MIN, INT64_MAX),
    FLD("READY", gwp_ready_t, "runtime", F_STR, REQ, runtime, runtime, 0, 0),
    FLD("READY", gwp_ready_t, "loop",    F_STR, OPT, loop,    loop,    0, 0),
    FLD("READY", gwp_ready_t, "capacity", F_U32, OPT, capacity, capacity, 0, UINT32_MAX),
};
static const gwp_ready_t ready_d = { .runtime = { "", 0 }, .loop = { "", 0 } };

static const gwp_field_t request_f[] = {
    FLD("REQUEST", gwp_request_t, "method",         F_STR,  REQ, method,     method,     0, 0),
    FLD("REQUEST", gwp_request_t, "target",         F_STR,  REQ, target,     target,     0, 0),
    FLD("REQUEST", gwp_request_t, "path",           F_STR,  REQ, path,       path,       0, 0),
    FLD("REQUEST", gwp_request_t, "query",          F_STR,  OPT, query,      query,      0, 0),
    FLD("REQUEST", gwp_request_t, "http_minor",     F_U8,   REQ, http_minor, http_minor, 0, 1),
    FLD("REQUEST", gwp_request_t, "headers",        F_HDRS, REQ, headers,    nheaders,   0, 0),
    FLD("REQUEST", gwp_request_t, "peer",           F_STR,  OPT, peer,       peer,       0, 0),
    FLD("REQUEST", gwp_request_t, "server",         F_STR,  OPT, server,     server,     0, 0),
    FLD("REQUEST", gwp_request_t, "scheme",         F_STR,  OPT, scheme,     scheme,     0, 0),
    FLD("REQUEST", gwp_request_t, "content_length", F_I64,  OPT, content_length, content_length, -1, INT64_MAX),
    FLD("REQUEST", gwp_request_t, "keepalive",      F_BOOL, OPT, keepalive,  keepalive,  0, 1),
};
static const gwp_request_t request_d = {
    .method = { "", 0 }, .target = { "", 0 }, .path = { "", 0 }, .query = { "", 0 },
    .peer = { "", 0 }, .server = { "", 0 }, .scheme = { "http", 4 },
};

static const gwp_field_t data_f[] = {
    FLD("BODY/RESP_BODY", gwp_data_t, "data", F_STR, REQ, data, data, 0, 0),
};
static const gwp_data_t data_d = { .data = { "", 0 } };

static const gwp_field_t response_f[] = {
    FLD("RESPONSE", gwp_response_t, "status",  F_U32,  REQ, status,  status,   100, 999),
    FLD("RESPONSE", gwp_response_t, "headers", F_HDRS, REQ, headers, nheaders, 0, 0),
    FLD("RESPONSE", gwp_response_t, "body",    F_BODY, OPT, body,    has_body, 0, 0),
};
static const gwp_response_t response_d = { .body = { "", 0 } };

static const gwp_field_t cancel_f[] = {
    FLD("CANCEL", gwp_cancel_t, "reason", F_STR, OPT, reason, reason, 0, 0),
};
static const gwp_cancel_t cancel_d = { .reason = { "", 0 } };

static const gwp_field_t window_f[] = {
    FLD("WINDOW", gwp_window_t, "bytes", F_U32, REQ, bytes, bytes, 0, UINT32_MAX),
};
static const gwp_window_t window_d = { 0 };

static const gwp_field_t heartbeat_f[] = {
    FLD("HEARTBEAT", gwp_heartbeat_t, "served",   F_U64, REQ, served,   served,   0, UINT64_MAX),
    FLD("HEARTBEAT", gwp_heartbeat_t, "inflight", F_U32, REQ, inflight, inflight, 0, UINT32_MAX),
    FLD("HEARTBEAT", gwp_heartbeat_t, "tasks",    F_U32, OPT, tasks,    tasks,    0, UINT32_MAX),
    FLD("HEARTBEAT", gwp_heartbeat_t, "rss",      F_U64, OPT, rss,      rss,      0, UINT64_MAX),
    FLD("HEARTBEAT", gwp_heartbeat_t, "loop",     F_STR, OPT, loop,     loop,     0, 0),
};
static const gwp_heartbeat_t heartbeat_d = { .loop = { "", 0 } };

static const gwp_field_t quit_f[] = {
    FLD("QUIT", gwp_quit_t, "graceful",   F_BOOL, REQ, graceful,   graceful,   0, 1),
    FLD("QUIT", gwp_quit_t, "timeout_ms", F_U32,  OPT, timeout_ms, timeout_ms, 0, UINT32_MAX),
};
static const gwp_quit_t quit_d = { 0 };

static const gwp_field_t error_f[] = {
    FLD("ERROR", gwp_error_t, "message", F_STR, REQ, message, message, 0, 0),
    FLD("ERROR", gwp_error_t, "code",    F_I64, OPT, code,    code,    INT64_MIN, INT64_MAX),
};
static const gwp_error_t error_d = { .message = { "", 0 }, .code = 1 };

typedef struct {
    const gwp_field_t *f;
    uint8_t            n;
    const void        *defaults;   /* template copied over the union member */
    size_t             size;
} gwp_schema_t;

#define SCHEMA(fields, defs) { fields, sizeof(fields) / sizeof(fields[0]), &defs, sizeof(defs) }
static const gwp_schema_t gwp_schemas[GWP_MSG_MAX] = {
    [GWP_MSG_HELLO]     = SCHEMA(hello_f, hello_d),
    [GWP_MSG_READY]     = SCHEMA(ready_f, ready_d),
    [GWP_MSG_REQUEST]   = SCHEMA(request_f, request_d),
    [GWP_MSG_BODY]      = SCHEMA(data_f, data_d),
    [GWP_MSG_RESPONSE]  = SCHEMA(response_f, response_d),
    [GWP_MSG_RESP_BODY] = SCHEMA(data_f, data_d),
    [GWP_MSG_CANCEL]    = SCHEMA(cancel_f, cancel_d),
    [GWP_MSG_WINDOW]    = SCHEMA(window_f, window_d),
    [GWP_MSG_HEARTBEAT] = SCHEMA(heartbeat_f, heartbeat_d),
    [GWP_MSG_QUIT]      = SCHEMA(quit_f, quit_d),
    [GWP_MSG_ERROR]     = SCHEMA(error_f, error_d),
};

/* ------------------------------------------------------------------------ */
/* Decoder                                                                  */

void gwp_decoder_init(gwp_decoder_t *d, uint32_t max_payload)
{
    d->max_payload = (max_payload == 0 || max_payload > GWP_MAX_PAYLOAD)
                     ? GWP_MAX_PAYLOAD : max_payload;
    d->zone = NULL;   /* unused: decoding does not go through msgpack-c */
    d->hdrs = NULL;
    d->hdrs_cap = 0;
    d->frames = 0;
    d->errors = 0;
}

void gwp_decoder_done(gwp_decoder_t *d)
{
    free(d->hdrs);
    d->hdrs = NULL;
    d->hdrs_cap = 0;
}

int gwp_frame_peek(const gwp_decoder_t *d, const uint8_t *buf, size_t len,
                   gwp_frame_t *f, const char **why)
{
    const char *dummy;
    if (why == NULL) why = &dummy;
    if (len < GWP_HEADER_SIZE) return GWP_AGAIN;

    f->version = buf[0];
    f->type = buf[1];
    f->flags = gwp_be16(buf + 2);
    f->stream = gwp_be32(buf + 4);
    f->length = gwp_be32(buf + 8);

    uint32_t cap = d && d->max_payload ? d->max_payload : GWP_MAX_PAYLOAD;
    if (f->version != GWP_VERSION) { *why = "unsupported frame version"; return GWP_ERROR; }
    if (f->type == 0 || f->type >= GWP_MSG_MAX) { *why = "unknown message type"; return GWP_ERROR; }
    if (f->length > cap) { *why = "payload length over the cap"; return GWP_ERROR; }
    if (f->length == 0) { *why = "empty payload"; return GWP_ERROR; }
    if (gwp_types[f->type].stream == GWP_S0 && f->stream != 0) {
        *why = "non-zero stream id on a channel message"; return GWP_ERROR;
    }
    if (gwp_types[f->type].stream == GWP_SN && f->stream == 0) {
        *why = "stream id 0 on a stream message"; return GWP_ERROR;
    }
    if (f->flags & ~GWP_F_END) { *why = "unknown frame flags"; return GWP_ERROR; }
    if ((f->flags & GWP_F_END) && !gwp_types[f->type].end_ok) {
        *why = "END flag on a message type without END"; return GWP_ERROR;
    }
    return GWP_OK;
}

static const char *hdrs_reserve(gwp_decoder_t *d, uint64_t n)
{
    if (n > GWP_MAX_HEADERS) return "too many headers";
    if (n <= d->hdrs_cap) return NULL;
    uint32_t cap = d->hdrs_cap ? d->hdrs_cap : 16;
    while (cap < n) cap *= 2;
    if (cap > GWP_MAX_HEADERS) cap = GWP_MAX_HEADERS;
    gwp_header_t *h = realloc(d->hdrs, cap * sizeof(*h));
    if (h == NULL) return "out of memory for headers";
    d->hdrs = h;
    d->hdrs_cap = cap;
    return NULL;
}

static const uint8_t *decode_hdrs(gwp_decoder_t *d, const uint8_t *p, const uint8_t *end,
                                  uint64_t n, const char **why)
{
    if ((*why = hdrs_reserve(d, n)) != NULL) return NULL;
    for (uint64_t i = 0; i < n; i++) {
        mp_item_t pair, name, value;
        if (p < end && *p == 0x92) {        /* every encoder writes a pair so */
            p++;
        } else {
            if ((p = mp_head(p, end, &pair, why)) == NULL) return NULL;
            if (pair.kind != MP_ARRAY || pair.u != 2) {
                *why = "header is not a [name, value] array";
                return NULL;
            }
        }
        if ((p = mp_head(p, end, &name, why)) == NULL) return NULL;
        if ((p = mp_head(p, end, &value, why)) == NULL) return NULL;
        if (name.kind != MP_STR || value.kind != MP_STR) {
            *why = "header name or value is not str/bin"; return NULL;
        }
        d->hdrs[i].name.ptr = (const char *)name.ptr;
        d->hdrs[i].name.len = name.u;
        d->hdrs[i].value.ptr = (const char *)value.ptr;
        d->hdrs[i].value.len = value.u;
    }
    return p;
}

/* k[0..n) == f->key, n == f->klen <= 16. Inline loads instead of a memcmp
 * call: keys are compared once per map entry on every frame. f->key is a
 * 16-byte array, and the loads on k stay inside [k, k + n). */
static inline int key_eq(const gwp_field_t *f, const uint8_t *k, size_t n)
{
    if (f->klen != n) return 0;
    if (n >= 8) {
        uint64_t a, b, x, y;
        memcpy(&a, k, 8); memcpy(&b, k + n - 8, 8);
        memcpy(&x, f->key, 8); memcpy(&y, f->key + n - 8, 8);
        return a == x && b == y;
    }
    if (n >= 4) {
        uint32_t a, b, x, y;
        memcpy(&a, k, 4); memcpy(&b, k + n - 4, 4);
        memcpy(&x, f->key, 4); memcpy(&y, f->key + n - 4, 4);
        return a == x && b == y;
    }
    for (size_t i = 0; i < n; i++)
        if (k[i] != (uint8_t)f->key[i]) return 0;
    return 1;
}

/* Find the field named k. Our encoder writes keys in table order, so the one
 * after the last match is tried first: one compare per key in practice. */
static inline const gwp_field_t *find_field(const gwp_schema_t *s, const uint8_t *k,
                                            size_t klen, unsigned *hint)
{
    if (*hint < s->n && key_eq(&s->f[*hint], k, klen)) return &s->f[(*hint)++];
    for (unsigned i = 0; i < s->n; i++)
        if (key_eq(&s->f[i], k, klen)) { *hint = i + 1; return &s->f[i]; }
    return NULL;
}

/*
 * Decode the payload [p, end) into the union member out; NULL or a reason.
 * One pass that is also the structural check: every head is bounds- and
 * count-checked by mp_head before it is used, values under unknown keys go
 * through the depth-limited mp_walk, the known shapes are at most 3 deep,
 * and bytes after the map are refused. A separate validation pass would
 * only matter if a general-purpose unpacker (msgpack-c) came next; it does
 * not, and the pass cost about a third of the decode time.
 */
static __attribute__((noinline))
const char *decode_payload(gwp_decoder_t *d, unsigned type, const uint8_t *p,
                           const uint8_t *end, char *out)
{
    const gwp_schema_t *s = &gwp_schemas[type];
    const char *why = NULL;
    mp_item_t it, v;
    uint32_t seen = 0;
    unsigned hint = 0;

    memcpy(out, s->defaults, s->size);
    if ((p = mp_head(p, end, &it, &why)) == NULL) return why;
    if (it.kind != MP_MAP) return "payload is not a msgpack map";

    for (uint64_t i = 0, n = it.u; i < n; i++) {
        mp_item_t k;
        if ((p = mp_head(p, end, &k, &why)) == NULL) return why;
        if (k.kind != MP_STR) return "map key is not str/bin";
        const gwp_field_t *f = find_field(s, k.ptr, k.u, &hint);
        if (f == NULL) {                  /* a newer peer's key: ignore it */
            if ((p = mp_walk(p, end, 1, &why)) == NULL) return why;
            continue;
        }
        uint32_t bit = 1u << (f - s->f);
        if (seen & bit) return "duplicate map key";
        seen |= bit;
        if ((p = mp_head(p, end, &v, &why)) == NULL) return why;

        switch (f->kind) {
        case F_U8: case F_U32: case F_U64:
            if (v.kind != MP_INT) return f->why_type;
            if (v.neg || v.u > f->hi || v.u < (uint64_t)f->lo) return f->why_range;
            if (f->kind == F_U8) *(uint8_t *)(out + f->off) = (uint8_t)v.u;
            else if (f->kind == F_U32) *(uint32_t *)(out + f->off) = (uint32_t)v.u;
            else *(uint64_t *)(out + f->off) = v.u;
            break;
        case F_I64: {
            if (v.kind != MP_INT) return f->why_type;
            if (!v.neg && v.u > (uint64_t)INT64_MAX) return f->why_range;
            int64_t x = v.neg ? v.i : (int64_t)v.u;
            if (x < f->lo || (x >= 0 && (uint64_t)x > f->hi)) return f->why_range;
            *(int64_t *)(out + f->off) = x;
            break;
        }
        case F_BOOL:
            if (v.kind != MP_BOOL) return f->why_type;
            *(uint8_t *)(out + f->off) = (uint8_t)v.u;
            break;
        case F_BODY:
            *(uint8_t *)(out + f->off2) = 1;
            /* fall through */
        case F_STR:
            if (v.kind != MP_STR) return f->why_type;
            ((gwp_str_t *)(out + f->off))->ptr = (const char *)v.ptr;
            ((gwp_str_t *)(out + f->off))->len = v.u;
            break;
        case F_HDRS:
            if (v.kind != MP_ARRAY) return f->why_type;
            if ((p = decode_hdrs(d, p, end, v.u, &why)) == NULL) return why;
            *(const gwp_header_t **)(out + f->off) = d->hdrs;
            *(uint32_t *)(out + f->off2) = (uint32_t)v.u;
            break;
        }
    }

    if (p != end) return "trailing bytes after the payload object";
    if (seen != (1u << s->n) - 1)            /* something absent: required? */
        for (unsigned i = 0; i < s->n; i++)
            if (s->f[i].required && !(seen & (1u << i))) return s->f[i].why_missing;
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Fast paths: the frames our own encoder writes, byte for byte.            */

/*
 * The hot messages (REQUEST, RESPONSE, BODY/RESP_BODY, WINDOW) are matched
 * against the exact layout gwp_encode_*() produces: keys in table order,
 * each compared together with its fixstr head as one or two word loads, the
 * common value heads read inline, every field written straight into the
 * message (no defaults template, no field table, no duplicate bookkeeping:
 * a fixed key sequence cannot repeat or miss a key).
 *
 * A fast decoder returns 1 (message complete and valid) or 0 ("not the
 * canonical shape": a different key order, an unknown key, a non-minimal or
 * rare head, a value out of range, a truncated or malformed payload, ...).
 * On 0 the payload is decoded again from its start by decode_payload, which
 * accepts every valid encoding and owns every error message. So the fast
 * path only has to be right about what it accepts: every head it reads is
 * inside [p, end), every length is checked against the bytes left, nesting
 * is fixed at 3, and it accepts only when the map ends exactly at end.
 */

/* p[0..n) == k[0..n) for a literal k, 2 <= n <= 16; loads stay in [p, p+n).
 * k and n are constants at every call, so the k side folds away. */
static inline __attribute__((always_inline)) int lit_eq(const uint8_t *p, const char *k, size_t n)
{
    if (n >= 8) {
        uint64_t a, b, x, y;
        memcpy(&a, p, 8); memcpy(&b, p + n - 8, 8);
        memcpy(&x, k, 8); memcpy(&y, k + n - 8, 8);
        return ((a ^ x) | (b ^ y)) == 0;
    }
    if (n >= 4) {
        uint32_t a, b, x, y;
        memcpy(&a, p, 4); memcpy(&b, p + n - 4, 4);
        memcpy(&x, k, 4); memcpy(&y, k + n - 4, 4);
        return ((a ^ x) | (b ^ y)) == 0;
    }
    uint16_t a, b, x, y;
    memcpy(&a, p, 2); memcpy(&b, p + n - 2, 2);
    memcpy(&x, k, 2); memcpy(&y, k + n - 2, 2);
    return ((a ^ x) | (b ^ y)) == 0;
}

/* Key literal = fixstr head + name; a value byte must follow it. */
#define FAST_KEY(p, end, lit)                                                  \
    do {                                                                       \
        if ((size_t)((end) - (p)) <= sizeof(lit) - 1                           \
            || !lit_eq((p), (lit), sizeof(lit) - 1)) return 0;                 \
        (p) += sizeof(lit) - 1;                                                \
    } while (0)

/* str or bin with a 1-, 2- or 3-byte head (fixstr, str8/bin8, str16/bin16). */
static const uint8_t *fast_str(const uint8_t *p, const uint8_t *end, gwp_str_t *out)
{
    size_t avail = (size_t)(end - p), hdr, len;
    if (avail == 0) return NULL;
    unsigned c = p[0];
    if (c - 0xa0u < 0x20u) {
        hdr = 1; len = c & 0x1f;
    } else if ((c == 0xc4 || c == 0xd9) && avail >= 2) {
        hdr = 2; len = p[1];
    } else if ((c == 0xc5 || c == 0xda) && avail >= 3) {
        hdr = 3; len = gwp_be16(p + 1);
    } else {
        return NULL;
    }
    if (len > avail - hdr) return NULL;
    out->ptr = (const char *)p + hdr;
    out->len = len;
    return p + hdr + len;
}

/* A "bytes" field: our encoder writes bin8 below 256 bytes. */
static inline __attribute__((always_inline))
const uint8_t *fast_bin(const uint8_t *p, const uint8_t *end, gwp_str_t *out)
{
    size_t avail = (size_t)(end - p);
    if (avail >= 2 && p[0] == 0xc4) {
        size_t len = p[1];
        if (len > avail - 2) return NULL;
        out->ptr = (const char *)p + 2;
        out->len = len;
        return p + 2 + len;
    }
    return fast_str(p, end, out);
}

/* A "text" field: our encoder writes fixstr below 32 bytes. */
static inline __attribute__((always_inline))
const uint8_t *fast_text(const uint8_t *p, const uint8_t *end, gwp_str_t *out)
{
    size_t avail = (size_t)(end - p);
    if (avail >= 1 && p[0] - 0xa0u < 0x20u) {
        size_t len = p[0] & 0x1f;
        if (len >= avail) return NULL;
        out->ptr = (const char *)p + 1;
        out->len = len;
        return p + 1 + len;
    }
    return fast_str(p, end, out);
}

/* Unsigned int in fixint/uint8/uint16/uint32 form; *v <= 2^32-1. */
static inline __attribute__((always_inline))
const uint8_t *fast_u32(const uint8_t *p, const uint8_t *end, uint32_t *v)
{
    size_t avail = (size_t)(end - p);
    if (avail == 0) return NULL;
    unsigned c = p[0];
    if (c <= 0x7f) { *v = c; return p + 1; }
    if (c == 0xcc && avail >= 2) { *v = p[1]; return p + 2; }
    if (c == 0xcd && avail >= 3) { *v = gwp_be16(p + 1); return p + 3; }
    if (c == 0xce && avail >= 5) { *v = gwp_be32(p + 1); return p + 5; }
    return NULL;
}

/* headers: fixarray/array16 of 0x92 [name, value] pairs. */
static inline __attribute__((always_inline))
const uint8_t *fast_hdrs(gwp_decoder_t *d, const uint8_t *p, const uint8_t *end,
                         const gwp_header_t **hdrs, uint32_t *nhdrs)
{
    size_t avail = (size_t)(end - p), n;
    if (avail == 0) return NULL;
    unsigned c = p[0];
    if (c - 0x90u < 0x10u) { n = c & 0x0f; p += 1; avail -= 1; }
    else if (c == 0xdc && avail >= 3) { n = gwp_be16(p + 1); p += 3; avail -= 3; }
    else return NULL;
    /* A pair takes at least 3 bytes (0x92 and two fixstr heads): checked
     * before the scratch is sized by the count. */
    if (n > avail / 3) return NULL;
    if (n > d->hdrs_cap && hdrs_reserve(d, n) != NULL) return NULL;
    gwp_header_t *h = d->hdrs, *he = h + n;
    for (; h < he; h++) {
        /* 92 c4 <nl> name c4 <vl> value, as every encoder writes it: each
         * length is checked against the bytes left before it is used. */
        size_t left = (size_t)(end - p), nl, vl;
        if (left >= 5 && lit_eq(p, "\x92\xc4", 2)) {
            const uint8_t *v;
            if ((nl = p[2]) <= left - 5 && (v = p + 3 + nl)[0] == 0xc4
                && (vl = v[1]) <= left - 5 - nl) {
                h->name.ptr = (const char *)p + 3;
                h->name.len = nl;
                h->value.ptr = (const char *)v + 2;
                h->value.len = vl;
                p = v + 2 + vl;
                continue;
            }
        }
        if (left == 0 || *p != 0x92) return NULL;
        if ((p = fast_str(p + 1, end, &h->name)) == NULL) return NULL;
        if ((p = fast_str(p, end, &h->value)) == NULL) return NULL;
    }
    *hdrs = d->hdrs;
    *nhdrs = (uint32_t)n;
    return p;
}

static int fast_request(gwp_decoder_t *d, const uint8_t *p, const uint8_t *end,
                        gwp_request_t *m)
{
    if (*p++ != (0x80 | 11)) return 0;     /* payload length >= 1 */
    FAST_KEY(p, end, "\xa6" "method");
    if ((p = fast_text(p, end, &m->method)) == NULL) return 0;
    FAST_KEY(p, end, "\xa6" "target");
    if ((p = fast_bin(p, end, &m->target)) == NULL) return 0;
    FAST_KEY(p, end, "\xa4" "path");
    if ((p = fast_bin(p, end, &m->path)) == NULL) return 0;
    FAST_KEY(p, end, "\xa5" "query");
    if ((p = fast_bin(p, end, &m->query)) == NULL) return 0;
    FAST_KEY(p, end, "\xaa" "http_minor");
    if (*p > 1) return 0;                  /* fixint 0 or 1 */
    m->http_minor = *p++;
    FAST_KEY(p, end, "\xa7" "headers");
    if ((p = fast_hdrs(d, p, end, &m->headers, &m->nheaders)) == NULL) return 0;
    FAST_KEY(p, end, "\xa4" "peer");
    if ((p = fast_text(p, end, &m->peer)) == NULL) return 0;
    FAST_KEY(p, end, "\xa6" "server");
    if ((p = fast_text(p, end, &m->server)) == NULL) return 0;
    FAST_KEY(p, end, "\xa6" "scheme");
    if ((p = fast_text(p, end, &m->scheme)) == NULL) return 0;
    FAST_KEY(p, end, "\xae" "content_length");
    unsigned c = *p;
    if (c <= 0x7f) { m->content_length = c; p++; }
    else if (c == 0xff) { m->content_length = -1; p++; }   /* chunked */
    else {
        uint32_t v;
        if ((p = fast_u32(p, end, &v)) == NULL) return 0;
        m->content_length = v;
    }
    FAST_KEY(p, end, "\xa9" "keepalive");
    c = *p++;
    if ((c | 1) != 0xc3) return 0;        /* true / false */
    m->keepalive = c & 1;
    return p == end;
}

static int fast_response(gwp_decoder_t *d, const uint8_t *p, const uint8_t *end,
                         gwp_response_t *m)
{
    unsigned n = *p++;
    if ((n | 1) != 0x83) return 0;         /* map of 2 or 3 */
    FAST_KEY(p, end, "\xa6" "status");
    if ((p = fast_u32(p, end, &m->status)) == NULL) return 0;
    if (m->status - 100u > 899u) return 0;
    FAST_KEY(p, end, "\xa7" "headers");
    if ((p = fast_hdrs(d, p, end, &m->headers, &m->nheaders)) == NULL) return 0;
    if (n == 0x83) {
        FAST_KEY(p, end, "\xa4" "body");
        if ((p = fast_bin(p, end, &m->body)) == NULL) return 0;
        m->has_body = 1;
    } else {
        m->body.ptr = "";
        m->body.len = 0;
        m->has_body = 0;
    }
    return p == end;
}

static int fast_data(const uint8_t *p, const uint8_t *end, gwp_data_t *m)
{
    if (*p++ != (0x80 | 1)) return 0;
    FAST_KEY(p, end, "\xa4" "data");
    return (p = fast_bin(p, end, &m->data)) != NULL && p == end;
}

static int fast_window(const uint8_t *p, const uint8_t *end, gwp_window_t *m)
{
    if (*p++ != (0x80 | 1)) return 0;
    FAST_KEY(p, end, "\xa5" "bytes");
    return (p = fast_u32(p, end, &m->bytes)) != NULL && p == end;
}

#undef FAST_KEY

ssize_t gwp_decode(gwp_decoder_t *d, const uint8_t *buf, size_t len,
                   gwp_msg_t *msg, const char **why)
{
    const char *w;
    gwp_frame_t f;

    if (len < GWP_HEADER_SIZE) return GWP_AGAIN;
    f.version = buf[0];
    f.type = buf[1];
    f.flags = gwp_be16(buf + 2);
    f.stream = gwp_be32(buf + 4);
    f.length = gwp_be32(buf + 8);
    /* The whole of gwp_frame_peek's check for a good header; anything else
     * goes through it for the verdict and the reason. */
    if (!(f.version == GWP_VERSION && f.type - 1u < GWP_MSG_MAX - 1u
          && f.length - 1u < d->max_payload
          && (f.flags & ~(unsigned)gwp_types[f.type].end_ok) == 0
          && (f.stream != 0) + 1 == gwp_types[f.type].stream)) {
        const char *dummy;
        if (gwp_frame_peek(d, buf, len, &f, why ? why : &dummy) != GWP_OK) goto bad;
    }
    if (len - GWP_HEADER_SIZE < f.length) return GWP_AGAIN;

    const uint8_t *p = buf + GWP_HEADER_SIZE, *end = p + f.length;
    int ok;
    switch (f.type) {
    case GWP_MSG_REQUEST:   ok = fast_request(d, p, end, &msg->u.request); break;
    case GWP_MSG_RESPONSE:  ok = fast_response(d, p, end, &msg->u.response); break;
    case GWP_MSG_BODY:
    case GWP_MSG_RESP_BODY: ok = fast_data(p, end, &msg->u.data); break;
    case GWP_MSG_WINDOW:    ok = fast_window(p, end, &msg->u.window); break;
    default:                ok = 0; break;
    }
    if (!ok && (w = decode_payload(d, f.type, p, end, (char *)&msg->u)) != NULL) {
        if (why) *why = w;
        goto bad;
    }
    msg->frame = f;
    d->frames++;
    return (ssize_t)(GWP_HEADER_SIZE + f.length);

bad:
    d->errors++;
    return GWP_ERROR;
}

/* ---- header fields ---- */

/* RFC 9110 5.6.2 tchar. */
static const uint8_t tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1,
    ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
};

int gwp_header_valid(const gwp_header_t *h)
{
    if (h->name.len == 0) return 0;
    for (size_t i = 0; i < h->name.len; i++)
        if (!tchar[(unsigned char)h->name.ptr[i]]) return 0;
    for (size_t i = 0; i < h->value.len; i++) {
        unsigned char ch = (unsigned char)h->value.ptr[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) return 0;
    }
    return 1;
}
