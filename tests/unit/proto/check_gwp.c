/*
 * check_gwp.c - unit tests for the wire protocol codec (proto/gwp.c).
 * Round trips of every message, truncation at every byte against a guard
 * page, header and payload rejections with their reasons, back-to-back
 * frames, forward compatibility, and interop with msgpack-c as an
 * independent encoder/decoder. GWP_BENCH=1 makes test_bench print ns/op.
 */
#include "check_main.h"
#include "gwp.h"

#include <errno.h>
#include <inttypes.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers ----------------------------------------------------------- */

#define S(lit) ((gwp_str_t){ (lit), sizeof(lit) - 1 })

static int str_is(gwp_str_t s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && (n == 0 || memcmp(s.ptr, lit, n) == 0);
}

static int str_eq(gwp_str_t a, gwp_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

#define ck_str(s, lit) ck_assert_msg(str_is((s), (lit)), "got \"%.*s\", want \"%s\"", \
                                     (int)(s).len, (s).ptr ? (s).ptr : "", (lit))

/* Bytes placed so that their end touches a PROT_NONE page: any read past
 * len faults, in the plain build as well as under ASan. */
typedef struct {
    uint8_t *map;
    size_t   maplen;
    uint8_t *end;
} guard_t;

static void guard_init(guard_t *g, size_t maxlen)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    size_t data = (maxlen + pg - 1) / pg * pg + pg;
    g->maplen = data + pg;
    g->map = mmap(NULL, g->maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert(g->map != MAP_FAILED);
    ck_assert_int_eq(mprotect(g->map + data, pg, PROT_NONE), 0);
    g->end = g->map + data;
}

static const uint8_t *guard_put(guard_t *g, const void *src, size_t n)
{
    uint8_t *p = g->end - n;
    if (n) memcpy(p, src, n);
    return p;
}

static void guard_done(guard_t *g)
{
    munmap(g->map, g->maplen);
}

/* Write a frame header + payload into out (which must hold 12 + plen). */
static size_t mkframe(uint8_t *out, uint8_t ver, uint8_t type, uint16_t flags,
                      uint32_t stream, const void *payload, uint32_t plen)
{
    out[0] = ver; out[1] = type;
    out[2] = (uint8_t)(flags >> 8); out[3] = (uint8_t)flags;
    out[4] = (uint8_t)(stream >> 24); out[5] = (uint8_t)(stream >> 16);
    out[6] = (uint8_t)(stream >> 8); out[7] = (uint8_t)stream;
    out[8] = (uint8_t)(plen >> 24); out[9] = (uint8_t)(plen >> 16);
    out[10] = (uint8_t)(plen >> 8); out[11] = (uint8_t)plen;
    if (plen && payload) memcpy(out + 12, payload, plen);
    return 12 + (size_t)plen;
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Decode the single frame in b and require that it takes all of b. */
static void decode_all(gwp_decoder_t *d, const gwp_buf_t *b, gwp_msg_t *m)
{
    const char *why = NULL;
    ssize_t n = gwp_decode(d, b->data, b->len, m, &why);
    ck_assert_msg(n == (ssize_t)b->len, "decode returned %zd (len %zu): %s", n, b->len,
                  why ? why : "-");
    ck_assert_uint_eq(m->frame.version, GWP_VERSION);
    ck_assert_uint_eq(m->frame.length, b->len - GWP_HEADER_SIZE);
}

/* Decode a frame built from a raw payload, placed against a guard page;
 * return the result and reason. Everything is freed before returning, so
 * only scalar fields of *m may be looked at afterwards. */
static ssize_t decode_raw(uint8_t type, uint32_t stream, const void *payload, size_t plen,
                          gwp_msg_t *m, const char **why)
{
    uint8_t *f = malloc(12 + plen);
    size_t n = mkframe(f, GWP_VERSION, type, 0, stream, payload, (uint32_t)plen);
    gwp_decoder_t d;
    gwp_decoder_init(&d, 0);
    guard_t g;
    guard_init(&g, n);
    *why = NULL;
    ssize_t rc = gwp_decode(&d, guard_put(&g, f, n), n, m, why);
    if (rc == GWP_ERROR) ck_assert_uint_eq(d.errors, 1);
    gwp_decoder_done(&d);
    guard_done(&g);
    free(f);
    return rc;
}

#define expect_reject(type, stream, payload, plen, want) do {                         \
    gwp_msg_t m_; const char *w_;                                                     \
    ssize_t r_ = decode_raw((type), (stream), (payload), (plen), &m_, &w_);           \
    ck_assert_msg(r_ == GWP_ERROR, "accepted (%zd), wanted \"%s\"", r_, (want));      \
    ck_assert_ptr_nonnull(w_);                                                        \
    ck_assert_msg(strstr(w_, (want)) != NULL, "reason \"%s\", wanted \"%s\"", w_, (want)); \
} while (0)

/* msgpack-c packer helpers: an encoder independent of ours. */
static void pk_s(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pk_b(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_bin(pk, n);
    msgpack_pack_bin_body(pk, s, n);
}

static const gwp_header_t typical_req_hdrs[8] = {
    { S("Host"), S("localhost:8000") },
    { S("User-Agent"), S("Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0") },
    { S("Accept"), S("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8") },
    { S("Accept-Language"), S("en-US,en;q=0.5") },
    { S("Accept-Encoding"), S("gzip, deflate, br") },
    { S("Connection"), S("keep-alive") },
    { S("Cookie"), S("session=0123456789abcdef") },
    { S("Cache-Control"), S("max-age=0") },
};

static gwp_request_t typical_request(void)
{
    gwp_request_t r = {
        .method = S("GET"), .target = S("/hello?name=world"), .path = S("/hello"),
        .query = S("name=world"), .http_minor = 1, .headers = typical_req_hdrs, .nheaders = 8,
        .peer = S("127.0.0.1:54321"), .server = S("127.0.0.1:8000"), .scheme = S("http"),
        .content_length = 0, .keepalive = 1,
    };
    return r;
}

static const gwp_header_t typical_resp_hdrs[2] = {
    { S("Content-Type"), S("text/plain") },
    { S("X-Worker"), S("1") },
};

static gwp_response_t typical_response(void)
{
    gwp_response_t r = {
        .status = 200, .headers = typical_resp_hdrs, .nheaders = 2,
        .body = S("Hello, world!"), .has_body = 1,
    };
    return r;
}

/* One frame of every type, in type order. */
static void encode_all(gwp_buf_t *b)
{
    gwp_hello_t h = { GWP_VERSION, 3, 7, GWP_MAX_PAYLOAD, GWP_DEFAULT_WINDOW, 1000, 5 };
    gwp_ready_t r = { GWP_VERSION, 4242, S("native"), S("libev/epoll"), 4 };
    gwp_request_t q = typical_request();
    gwp_response_t s = typical_response();
    gwp_heartbeat_t hb = { 10, 2, 1, 1 << 20, S("libev/epoll") };
    gwp_quit_t qu = { 1, 30000 };
    gwp_error_t e = { S("app failed to load"), 3 };
    ck_assert_int_eq(gwp_encode_hello(b, &h), 0);
    ck_assert_int_eq(gwp_encode_ready(b, &r), 0);
    ck_assert_int_eq(gwp_encode_request(b, 1, 0, &q), 0);
    ck_assert_int_eq(gwp_encode_data(b, GWP_MSG_BODY, 1, GWP_F_END, "abc", 3), 0);
    ck_assert_int_eq(gwp_encode_response(b, 1, 0, &s), 0);
    ck_assert_int_eq(gwp_encode_data(b, GWP_MSG_RESP_BODY, 1, GWP_F_END, "", 0), 0);
    ck_assert_int_eq(gwp_encode_cancel(b, 1, "client-gone"), 0);
    ck_assert_int_eq(gwp_encode_window(b, 1, 65536), 0);
    ck_assert_int_eq(gwp_encode_heartbeat(b, &hb), 0);
    ck_assert_int_eq(gwp_encode_quit(b, &qu), 0);
    ck_assert_int_eq(gwp_encode_error(b, &e), 0);
}

/* ---- round trips ------------------------------------------------------- */

START_TEST(test_hello_roundtrip)
{
    gwp_hello_t in[2] = {
        { UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX },
        { 0, 0, 0, 0, 1, 0, 0 },
    };
    for (int i = 0; i < 2; i++) {
        gwp_buf_t b; gwp_decoder_t d; gwp_msg_t m;
        gwp_buf_init(&b); gwp_decoder_init(&d, 0);
        ck_assert_int_eq(gwp_encode_hello(&b, &in[i]), 0);
        decode_all(&d, &b, &m);
        ck_assert_uint_eq(m.frame.type, GWP_MSG_HELLO);
        ck_assert_uint_eq(m.frame.stream, 0);
        ck_assert_uint_eq(m.frame.flags, 0);
        ck_assert_mem_eq(&m.u.hello, &in[i], sizeof in[i]);
        ck_assert_uint_eq(d.frames, 1);
        gwp_buf_free(&b); gwp_decoder_done(&d);
    }
}
END_TEST

START_TEST(test_ready_roundtrip)
{
    static char big[70000];
    memset(big, 'x', sizeof big);
    int64_t pids[] = { INT64_MIN, -1, 0, 1, 127, 128, 65536, INT64_MAX };
    for (size_t i = 0; i < sizeof pids / sizeof pids[0]; i++) {
        gwp_ready_t in = { i == 0 ? 0 : UINT32_MAX, pids[i], { "", 0 },
                           { big, i * 10000 % sizeof big }, i == 0 ? 0 : UINT32_MAX };
        gwp_buf_t b; gwp_decoder_t d; gwp_msg_t m;
        gwp_buf_init(&b); gwp_decoder_init(&d, 0);
        ck_assert_int_eq(gwp_encode_ready(&b, &in), 0);
        decode_all(&d, &b, &m);
        ck_assert_uint_eq(m.frame.type, GWP_MSG_READY);
        ck_assert_uint_eq(m.u.ready.version, in.version);
        ck_assert(m.u.ready.pid == pids[i]);
        ck_str(m.u.ready.runtime, "");
        ck_assert(str_eq(m.u.ready.loop, in.loop));
        ck_assert_uint_eq(m.u.ready.capacity, in.capacity);
        gwp_buf_free(&b); gwp_decoder_done(&d);
    }
}
END_TEST

START_TEST(test_request_roundtrip)
{
    gwp_request_t in = typical_request();
    gwp_buf_t b; gwp_decoder_t d; gwp_msg_t m;
    gwp_buf_init(&b); gwp_decoder_init(&d, 0);
    ck_assert_int_eq(gwp_encode_request(&b, 1, GWP_F_END, &in), 0);
    decode_all(&d, &b, &m);
    const gwp_request_t *r = &m.u.request;
    ck_assert_uint_eq(m.frame.type, GWP_MSG_REQUEST);
    ck_assert_uint_eq(m.frame.stream, 1);
    ck_assert_uint_eq(m.frame.flags, GWP_F_END);
    ck_str(r->method, "GET");
    ck_str(r->target, "/hello?name=world");
    ck_str(r->path, "/hello");
    ck_str(r->query, "name=world");
    ck_assert_uint_eq(r->http_minor, 1);
    ck_assert_uint_eq(r->nheaders, 8);
    for (int i = 0; i < 8; i++) {
        ck_assert(str_eq(r->headers[i].name, in.headers[i].name));
        ck_assert(str_eq(r->headers[i].value, in.headers[i].value));
    }
    ck_str(r->peer, "127.0.0.1:54321");
    ck_str(r->server, "127.0.0.1:8000");
    ck_str(r->scheme, "http");
    ck_assert(r->content_length == 0);
    ck_assert_uint_eq(r->keepalive, 1);
    /* Zero-copy: strings point into the frame. */
    ck_assert((const uint8_t *)r->method.ptr > b.data && (const uint8_t *)r->method.ptr < b.data + b.len);
    ck_assert((const uint8_t *)r->headers[7].value.ptr < b.data + b.len);
    gwp_buf_free(&b); gwp_decoder_done(&d);
}
END_TEST

START_TEST(test_request_edges)
{
    gwp_request_t in[3] = {
        /* all empty, NULL pointers with length 0, no headers */
        { .http_minor = 0, .content_length = -1 },
        { .method = S("POST"), .target = S("*"), .path = S("*"), .http_minor = 1,
          .content_length = INT64_MAX, .keepalive = 0, .scheme = S("") },
        { .method = S("X"), .content_length = 1 },
    };
    uint32_t streams[3] = { 1, UINT32_MAX, 0x01020304 };
    for (int i = 0; i < 3; i++) {
        gwp_buf_t b; gwp_decoder_t d; gwp_msg_t m;
        gwp_buf_init(&b); gwp_decoder_init(&d, 0);
        ck_assert_int_eq(gwp_encode_request(&b, streams[i], i == 1 ? GWP_F_END : 0, &in[i]), 0);
        decode_all(&d, &b, &m);
        const gwp_request_t *r = &m.u.request;
        ck_assert_uint_eq(m.frame.stream, streams[i]);
        ck_assert(str_eq(r->method, in[i].method));
        ck_assert(str_eq(r->target, in[i].target));
        ck_assert(str_eq(r->path, in[i].path));
        ck_assert(str_eq(r->query, in[i].query));
        ck_assert(str_eq(r->peer, in[i].peer));
        ck_assert(str_eq(r->server, in[i].server));
        ck_assert(str_eq(r->scheme, in[i].scheme));   /* present-but-empty stays empty */
        ck_assert_ptr_nonnull(r->method.ptr);        /* decoded strings are never NULL */
        ck_assert_uint_eq(r->nheaders, 0);
        ck_assert_uint_eq(r->http_minor, in[i].http_minor);
        ck_assert(r->content_length == in[i].content_length);
        ck_assert_uint_eq(r->keepalive, in[i].keepalive);
        gwp_buf_free(&b); gwp_decoder_done(&d);
    }
}
END_TEST

START_TEST(test_request_many_headers)
{
    static gwp_header_t h[GWP_MAX_HEADERS + 1];
    static char pool[70000];
    for (size_t i = 0; i < sizeof pool; i++) pool[i] = (char)('a' + i % 26);
    for (int i = 0; i <= GWP_MAX_HEADERS; i++) {
        /* lengths cross every str/bin size class: 0, <32, <256, <65536, more */
        h[i].name = (gwp_str_t){ pool + i, (size_t)(i % 40) };
        h[i].value = (gwp_str_t){ pool + 2 * i, (size_t)(i * 37 % 600) };
    }
    h[5].value.len = 65535;
    h[6].value.len = 65536;
    h[7].value.len = 69000;
    gwp_request_t in = typical_request();
    in.headers = h;
    in.nheaders = GWP_MAX_HEADERS;
    gwp_buf_t b; gwp_decoder_t d; gwp_msg_t m;
    gwp_buf_init(&b); gwp_decoder_init(&d, 0);
    ck_assert_int_eq(gwp_encode_request(&b, 9, 0, &in), 0);
    decode_all(&d, &b, &m);
    ck_assert_uint_eq(m.u.request.nheaders, GWP_MAX_HEADERS);
    for (int i = 0; i < GWP_MAX_HEADERS; i++) {
        ck_assert(str_eq(m.u.request.headers[i].name, h[i].name));
        ck_assert(str_eq(m.u.request.headers[i].value, h[i].value));
    }
    ck_str(m.u.request.method, "GET");
    /* One more header is refused by the encoder, leaving b as it was. */
    size_t len = b.len;
    in.nheaders = GWP_MAX_HEADERS + 1;
    ck_assert_int_eq(gwp_encode_request(&b, 9, 0, &in), -EMSGSIZE);
    ck_assert_uint_eq(b.len, len);
    gwp_buf_free(&b); gwp_decoder_done(&d);
}
END_TEST

START_TEST(test_data_roundtrip)
{
    size_t sizes[] = { 0, 1, 31, 32, 255, 256, 65535, 65536, GWP_MAX_DATA + 1,
                       GWP_MAX_PAYLOAD - 11 };
    uint8_t *data = malloc(GWP_MAX_PAYLOAD);
    for (size_t i = 0; i < GWP_MAX_PAYLOAD; i++) data[i] = (uint8_t)(i * 7 + 3);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        for (int t = 0; t < 2; t++) {
            gwp_type_t type = t ? GWP_MSG_RESP_BODY : GWP_MSG_BODY;
            uint16_t flags = (i & 1) ? GWP_F_END : 0;
            gwp_buf_t b; gwp_decoder_t d; gwp_msg_t m;
            gwp_buf_init(&b); gwp_decoder_init(&d, 0);
            ck_assert_int_eq(gwp_encode_data(&b, type, 5, flags, data, sizes[i]), 0);
            decode_all(&d, &b, &m);
            ck_assert_uint_eq(m.frame.type, type);
            ck_assert_uint_eq(m.frame.flags, flags);
            ck_assert_uint_eq(m.u.data.data.len, sizes[i]);
            if (sizes[i]) ck_assert_mem_eq(m.u.data.data.ptr, data, sizes[i]);
            gwp_buf_free(&b); gwp_decoder_done(&d);
        }
    }
    gwp_buf_t b;
    gwp_buf_init(&b);
    ck_assert_int_eq(gwp_encode_data(&b, GWP_MSG_BODY, 1, 0, data, GWP_MAX_PAYLOAD - 10), -EMSGSIZE);
    ck_assert_int_eq(gwp_encode_data(&b, GWP_MSG_BODY, 1, 0, data, SIZE_MAX), -EMSGSIZE);
    ck_assert_uint_eq(b.len, 0);
    gwp_buf_free(&b);
    free(data);
}
END_TEST

START_TEST(test_response_roundtrip)
{
    static char body[200000];
    memset(body, 'b', sizeof body);
    gwp_response_t in[5];
    in[0] = typical_response();
    in[1] = (gwp_response_t){ .status = 100 };                           /* no body key */
    in[2] = (gwp_response_t){ .status = 999, .has_body = 1 };            /* empty body */
    in[3] = (gwp_response_t){ .status = 204, .headers = typical_req_hdrs, .nheaders = 8 };
    in[4] = (gwp_response_t){ .status = 200, .body = { body, sizeof body }, .has_body = 1 };
    for (int i = 0; i < 5; i++) {
        gwp_buf_t b; gwp_decoder_t d; gwp_msg_t m;
        gwp_buf_init(&b); gwp_decoder_init(&d, 0);
        ck_assert_int_eq(gwp_encode_response(&b, 77, i & 1 ? 0 : GWP_F_END, &in[i]), 0);
        decode_all(&d, &b, &m);
        const gwp_response_t *r = &m.u.response;
        ck_assert_uint_eq(m.frame.type, GWP_MSG_RESPONSE);
        ck_assert_uint_eq(m.frame.stream, 77);
        ck_assert_uint_eq(r->status, in[i].status);
        ck_assert_uint_eq(r->has_body, in[i].has_body);
        ck_assert(str_eq(r->body, in[i].body));
        ck_assert_ptr_nonnull(r->body.ptr);
        ck_assert_uint_eq(r->nheaders, in[i].nheaders);
        for (uint32_t j = 0; j < r->nheaders; j++) {
            ck_assert(str_eq(r->headers[j].name, in[i].headers[j].name));
            ck_assert(str_eq(r->headers[j].value, in[i].headers[j].value));
        }
        gwp_buf_free(&b); gwp_decoder_done(&d);
    }
}
END_TEST

START_TEST(test_small_roundtrips)
{
    static char longmsg[300];
    memset(longmsg, 'm', sizeof longmsg);
    gwp_buf_t b; gwp_decoder_t d; gwp_msg_t m;
    gwp_buf_init(&b); gwp_decoder_init(&d, 0);

    const char *reasons[] = { "client-gone", "", NULL };
    for (int i = 0; i < 3; i++) {
        b.len = 0;
        ck_assert_int_eq(gwp_encode_cancel(&b, i == 1 ? UINT32_MAX : 3, reasons[i]), 0);
        decode_all(&d, &b, &m);
        ck_assert_uint_eq(m.frame.type, GWP_MSG_CANCEL);
        ck_assert_uint_eq(m.frame.stream, i == 1 ? UINT32_MAX : 3);
        ck_str(m.u.cancel.reason, reasons[i] ? reasons[i] : "");
    }
    uint32_t credits[] = { 0, 1, 127, 128, 65535, 65536, UINT32_MAX };
    for (size_t i = 0; i < sizeof credits / sizeof credits[0]; i++) {
        b.len = 0;
        ck_assert_int_eq(gwp_encode_window(&b, 2, credits[i]), 0);
        decode_all(&d, &b, &m);
        ck_assert_uint_eq(m.frame.type, GWP_MSG_WINDOW);
        ck_assert_uint_eq(m.u.window.bytes, credits[i]);
    }
    gwp_heartbeat_t hb[2] = {
        { UINT64_MAX, UINT32_MAX, UINT32_MAX, UINT64_MAX, { longmsg, sizeof longmsg } },
        { 0, 0, 0, 0, { NULL, 0 } },
    };
    for (int i = 0; i < 2; i++) {
        b.len = 0;
        ck_assert_int_eq(gwp_encode_heartbeat(&b, &hb[i]), 0);
        decode_all(&d, &b, &m);
        ck_assert_uint_eq(m.frame.type, GWP_MSG_HEARTBEAT);
        ck_assert(m.u.heartbeat.served == hb[i].served);
        ck_assert_uint_eq(m.u.heartbeat.inflight, hb[i].inflight);
        ck_assert_uint_eq(m.u.heartbeat.tasks, hb[i].tasks);
        ck_assert(m.u.heartbeat.rss == hb[i].rss);
        ck_assert(str_eq(m.u.heartbeat.loop, hb[i].loop));
    }
    gwp_quit_t q[3] = { { 1, 0 }, { 0, UINT32_MAX }, { 1, 30000 } };
    for (int i = 0; i < 3; i++) {
        b.len = 0;
        ck_assert_int_eq(gwp_encode_quit(&b, &q[i]), 0);
        decode_all(&d, &b, &m);
        ck_assert_uint_eq(m.frame.type, GWP_MSG_QUIT);
        ck_assert_uint_eq(m.u.quit.graceful, q[i].graceful);
        ck_assert_uint_eq(m.u.quit.timeout_ms, q[i].timeout_ms);
    }
    gwp_error_t e[4] = { { S("boom"), 1 }, { { NULL, 0 }, 0 },
                         { { longmsg, sizeof longmsg }, INT64_MIN }, { S("x"), INT64_MAX } };
    for (int i = 0; i < 4; i++) {
        b.len = 0;
        ck_assert_int_eq(gwp_encode_error(&b, &e[i]), 0);
        decode_all(&d, &b, &m);
        ck_assert_uint_eq(m.frame.type, GWP_MSG_ERROR);
        ck_assert(str_eq(m.u.error.message, e[i].message));
        ck_assert(m.u.error.code == e[i].code);
    }
    ck_assert_uint_eq(d.errors, 0);
    gwp_buf_free(&b); gwp_decoder_done(&d);
}
END_TEST

START_TEST(test_encode_rejects)
{
    gwp_buf_t b;
    gwp_buf_init(&b);
    encode_all(&b);       /* existing content must survive every failure */
    size_t len = b.len;
    uint8_t *copy = malloc(len);
    memcpy(copy, b.data, len);

    gwp_request_t q = typical_request();
    gwp_response_t s = typical_response();
    gwp_hello_t h = { GWP_VERSION, 0, 0, 0, 0, 0, 0 };
    ck_assert_int_eq(gwp_encode_request(&b, 0, 0, &q), -EINVAL);
    ck_assert_int_eq(gwp_encode_request(&b, 1, 0x0002, &q), -EINVAL);
    q.http_minor = 2;
    ck_assert_int_eq(gwp_encode_request(&b, 1, 0, &q), -EINVAL);
    q = typical_request();
    q.content_length = -2;
    ck_assert_int_eq(gwp_encode_request(&b, 1, 0, &q), -EINVAL);
    q = typical_request();
    q.path.len = GWP_MAX_PAYLOAD;
    ck_assert_int_eq(gwp_encode_request(&b, 1, 0, &q), -EMSGSIZE);
    ck_assert_int_eq(gwp_encode_response(&b, 0, 0, &s), -EINVAL);
    ck_assert_int_eq(gwp_encode_response(&b, 1, 0x8000, &s), -EINVAL);
    s.status = 99;
    ck_assert_int_eq(gwp_encode_response(&b, 1, 0, &s), -EINVAL);
    s.status = 1000;
    ck_assert_int_eq(gwp_encode_response(&b, 1, 0, &s), -EINVAL);
    s = typical_response();
    s.body.len = GWP_MAX_PAYLOAD;
    ck_assert_int_eq(gwp_encode_response(&b, 1, 0, &s), -EMSGSIZE);
    ck_assert_int_eq(gwp_encode_data(&b, GWP_MSG_REQUEST, 1, 0, "x", 1), -EINVAL);
    ck_assert_int_eq(gwp_encode_data(&b, GWP_MSG_BODY, 0, 0, "x", 1), -EINVAL);
    ck_assert_int_eq(gwp_encode_data(&b, GWP_MSG_RESP_BODY, 1, 0x0004, "x", 1), -EINVAL);
    ck_assert_int_eq(gwp_encode_cancel(&b, 0, "x"), -EINVAL);
    ck_assert_int_eq(gwp_encode_window(&b, 0, 1), -EINVAL);
    ck_assert_int_eq(gwp_encode_hello(&b, &h), -EINVAL);          /* window 0 */
    gwp_error_t e = { { "x", GWP_MAX_PAYLOAD }, 1 };
    ck_assert_int_eq(gwp_encode_error(&b, &e), -EMSGSIZE);
    gwp_heartbeat_t hb = { .loop = { "x", SIZE_MAX } };
    ck_assert_int_eq(gwp_encode_heartbeat(&b, &hb), -EMSGSIZE);

    ck_assert_uint_eq(b.len, len);
    ck_assert_mem_eq(b.data, copy, len);
    free(copy);
    gwp_buf_free(&b);
}
END_TEST

/* ---- truncation, limits, garbage -------------------------------------- */

START_TEST(test_truncated_every_offset)
{
    gwp_buf_t b;
    gwp_buf_init(&b);
    encode_all(&b);
    guard_t g;
    guard_init(&g, b.len);
    gwp_decoder_t d;
    gwp_decoder_init(&d, 0);
    size_t off = 0;
    int frames = 0;
    while (off < b.len) {
        size_t flen = GWP_HEADER_SIZE + rd32(b.data + off + 8);
        for (size_t k = 0; k < flen; k++) {
            gwp_msg_t m, sentinel;
            memset(&m, 0xa5, sizeof m);
            memcpy(&sentinel, &m, sizeof m);
            const char *why = NULL;
            const uint8_t *p = guard_put(&g, b.data + off, k);
            ck_assert_int_eq(gwp_decode(&d, p, k, &m, &why), GWP_AGAIN);
            ck_assert_mem_eq(&m, &sentinel, sizeof m);   /* nothing partial */
            gwp_frame_t f;
            ck_assert_int_eq(gwp_frame_peek(&d, p, k, &f, &why),
                             k < GWP_HEADER_SIZE ? GWP_AGAIN : GWP_OK);
        }
        gwp_msg_t m;
        const uint8_t *p = guard_put(&g, b.data + off, flen);
        ck_assert_int_eq(gwp_decode(&d, p, flen, &m, NULL), (ssize_t)flen);
        off += flen;
        frames++;
    }
    ck_assert_int_eq(frames, GWP_MSG_MAX - 1);
    ck_assert_uint_eq(d.errors, 0);
    ck_assert_uint_eq(d.frames, GWP_MSG_MAX - 1);
    guard_done(&g);
    gwp_decoder_done(&d);
    gwp_buf_free(&b);
}
END_TEST

START_TEST(test_oversize_length)
{
    uint8_t hdr[12];
    gwp_decoder_t d;
    gwp_msg_t m;
    const char *why;
    gwp_frame_t f;

    /* Over the default cap: rejected with the header alone, no payload. */
    gwp_decoder_init(&d, 0);
    ck_assert_uint_eq(d.max_payload, GWP_MAX_PAYLOAD);
    uint32_t lens[] = { GWP_MAX_PAYLOAD + 1, 0x7fffffff, UINT32_MAX };
    for (int i = 0; i < 3; i++) {
        mkframe(hdr, GWP_VERSION, GWP_MSG_BODY, 0, 1, NULL, 0);
        hdr[8] = (uint8_t)(lens[i] >> 24); hdr[9] = (uint8_t)(lens[i] >> 16);
        hdr[10] = (uint8_t)(lens[i] >> 8); hdr[11] = (uint8_t)lens[i];
        why = NULL;
        ck_assert_int_eq(gwp_decode(&d, hdr, sizeof hdr, &m, &why), GWP_ERROR);
        ck_assert_str_eq(why, "payload length over the cap");
        ck_assert_int_eq(gwp_frame_peek(&d, hdr, sizeof hdr, &f, &why), GWP_ERROR);
        ck_assert_uint_eq(f.length, lens[i]);
    }
    ck_assert_uint_eq(d.errors, 3);
    gwp_decoder_done(&d);

    /* A lower cap applies exactly; the cap itself is still fine. */
    gwp_decoder_init(&d, 64);
    hdr[8] = 0; hdr[9] = 0; hdr[10] = 0; hdr[11] = 65;
    ck_assert_int_eq(gwp_decode(&d, hdr, sizeof hdr, &m, &why), GWP_ERROR);
    hdr[11] = 64;
    ck_assert_int_eq(gwp_decode(&d, hdr, sizeof hdr, &m, &why), GWP_AGAIN);
    gwp_buf_t b;
    gwp_buf_init(&b);
    gwp_request_t q = typical_request();
    ck_assert_int_eq(gwp_encode_request(&b, 1, 0, &q), 0);
    ck_assert_int_eq(gwp_decode(&d, b.data, b.len, &m, &why), GWP_ERROR);
    ck_assert_str_eq(why, "payload length over the cap");
    gwp_buf_free(&b);
    gwp_decoder_done(&d);

    gwp_decoder_init(&d, UINT32_MAX);      /* clamped */
    ck_assert_uint_eq(d.max_payload, GWP_MAX_PAYLOAD);
    gwp_decoder_done(&d);
    ck_assert_int_eq(gwp_frame_peek(NULL, hdr, sizeof hdr, &f, NULL), GWP_OK);
}
END_TEST

static int field_ok(const char *n, size_t nl, const char *v, size_t vl)
{
    gwp_header_t h = { { n, nl }, { v, vl } };
    return gwp_header_valid(&h);
}

START_TEST(test_header_valid)
{
    /* every byte, as a one-byte name and inside a value */
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        int tok = (b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z')
                  || (b && strchr("!#$%&'*+-.^_`|~", b) != NULL);
        ck_assert_int_eq(field_ok(&c, 1, "v", 1), tok);
        char v[3] = { 'a', c, 'b' };
        int vok = b == '\t' || (b >= 0x20 && b != 0x7f);
        ck_assert_int_eq(field_ok("X", 1, v, 3), vok);
    }
    ck_assert_int_eq(field_ok("", 0, "v", 1), 0);                  /* empty name */
    ck_assert_int_eq(field_ok("X-A", 3, "", 0), 1);                /* empty value */
    ck_assert_int_eq(field_ok("X-A", 3, "a\r\nSet-Cookie: x", 17), 0);
    ck_assert_int_eq(field_ok("Set-Cookie", 10, "a=b; Path=/; \xe9", 14), 1);
}
END_TEST

START_TEST(test_bad_header)
{
    gwp_buf_t b;
    gwp_buf_init(&b);
    ck_assert_int_eq(gwp_encode_window(&b, 1, 10), 0);
    size_t wlen = b.len;
    gwp_hello_t h = { GWP_VERSION, 0, 0, 0, 1, 0, 0 };
    ck_assert_int_eq(gwp_encode_hello(&b, &h), 0);
    struct { size_t at; uint8_t byte; int hello; const char *why; } cases[] = {
        { 0, 0, 0, "version" }, { 0, 2, 0, "version" }, { 0, 255, 0, "version" },
        { 1, 0, 0, "unknown message type" }, { 1, GWP_MSG_MAX, 0, "unknown message type" },
        { 1, 255, 0, "unknown message type" },
        { 7, 0, 0, "stream id 0" },                       /* WINDOW on stream 0 */
        { 1, GWP_MSG_HEARTBEAT, 0, "non-zero stream" },   /* window frame retyped */
        { 7, 1, 1, "non-zero stream" },                   /* HELLO on stream 1 */
        { 2, 0x80, 0, "unknown frame flags" }, { 3, 0x02, 0, "unknown frame flags" },
        { 3, 0x01, 0, "END flag" }, { 3, 0x01, 1, "END flag" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t f[256];
        size_t n = cases[i].hello ? b.len - wlen : wlen;
        memcpy(f, b.data + (cases[i].hello ? wlen : 0), n);
        f[cases[i].at] = cases[i].byte;
        gwp_decoder_t d; gwp_msg_t m; const char *why = NULL;
        gwp_decoder_init(&d, 0);
        ck_assert_int_eq(gwp_decode(&d, f, n, &m, &why), GWP_ERROR);
        ck_assert_msg(why && strstr(why, cases[i].why), "case %zu: %s", i, why ? why : "-");
        ck_assert_uint_eq(d.errors, 1);
        ck_assert_uint_eq(d.frames, 0);
        gwp_decoder_done(&d);
    }
    /* Stream 0 on every stream type, non-zero on every channel type. */
    for (unsigned t = 1; t < GWP_MSG_MAX; t++) {
        int stream_type = t == GWP_MSG_REQUEST || t == GWP_MSG_BODY || t == GWP_MSG_RESPONSE
                       || t == GWP_MSG_RESP_BODY || t == GWP_MSG_CANCEL || t == GWP_MSG_WINDOW;
        uint8_t f[13];
        uint8_t empty_map = 0x80;
        mkframe(f, GWP_VERSION, (uint8_t)t, 0, stream_type ? 0 : 5, &empty_map, 1);
        gwp_frame_t fr; const char *why = NULL;
        ck_assert_int_eq(gwp_frame_peek(NULL, f, sizeof f, &fr, &why), GWP_ERROR);
        ck_assert_ptr_nonnull(strstr(why, "stream"));
    }
    /* Zero-length payload. */
    uint8_t f[12];
    mkframe(f, GWP_VERSION, GWP_MSG_QUIT, 0, 0, NULL, 0);
    gwp_frame_t fr; const char *why = NULL;
    ck_assert_int_eq(gwp_frame_peek(NULL, f, sizeof f, &fr, &why), GWP_ERROR);
    ck_assert_str_eq(why, "empty payload");
    gwp_buf_free(&b);
}
END_TEST

START_TEST(test_bad_payload)
{
#define REJ(type, stream, want, ...) do {                                   \
        static const uint8_t p_[] = { __VA_ARGS__ };                        \
        expect_reject((type), (stream), p_, sizeof p_, (want));             \
    } while (0)
    /* declared counts and lengths far beyond the bytes present */
    REJ(GWP_MSG_WINDOW, 1, "count exceeds", 0xdd, 0xff, 0xff, 0xff, 0xff);
    REJ(GWP_MSG_WINDOW, 1, "count exceeds", 0xdf, 0xff, 0xff, 0xff, 0xff);
    REJ(GWP_MSG_WINDOW, 1, "count exceeds", 0xdf, 0x00, 0x00, 0x00, 0x03, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0);
    REJ(GWP_MSG_WINDOW, 1, "count exceeds", 0xdc, 0xff, 0xff);
    REJ(GWP_MSG_WINDOW, 1, "count exceeds", 0xde, 0x00, 0x01);
    REJ(GWP_MSG_WINDOW, 1, "length exceeds", 0xdb, 0xff, 0xff, 0xff, 0xff);
    REJ(GWP_MSG_WINDOW, 1, "length exceeds", 0xc6, 0xff, 0xff, 0xff, 0xff);
    REJ(GWP_MSG_WINDOW, 1, "length exceeds", 0xc9, 0xff, 0xff, 0xff, 0xff, 0x01);
    REJ(GWP_MSG_WINDOW, 1, "length exceeds", 0xc4, 0x02, 'a');
    REJ(GWP_MSG_WINDOW, 1, "length exceeds", 0xa5, 'a', 'b');
    REJ(GWP_MSG_REQUEST, 1, "count exceeds", 0x81, 0xa7, 'h', 'e', 'a', 'd', 'e', 'r', 's',
                                        0xdd, 0xff, 0xff, 0xff, 0xff);
    /* truncated heads */
    REJ(GWP_MSG_WINDOW, 1, "truncated", 0xcf, 0x00);
    REJ(GWP_MSG_WINDOW, 1, "truncated", 0xdd, 0x00);
    REJ(GWP_MSG_WINDOW, 1, "truncated", 0xd8, 0x01, 0x02);
    REJ(GWP_MSG_WINDOW, 1, "truncated", 0x82, 0xa5, 'b', 'y', 't', 'e', 's');
    REJ(GWP_MSG_WINDOW, 1, "truncated", 0x81, 0xa5, 'b', 'y', 't', 'e', 's');
    /* invalid bytes, framing of the object */
    REJ(GWP_MSG_WINDOW, 1, "0xc1", 0xc1);
    REJ(GWP_MSG_WINDOW, 1, "0xc1", 0x81, 0xa1, 'x', 0xc1);
    REJ(GWP_MSG_WINDOW, 1, "trailing", 0x81, 0xa5, 'b', 'y', 't', 'e', 's', 0x01, 0xc0);
    REJ(GWP_MSG_WINDOW, 1, "trailing", 0x80, 0x80);
    REJ(GWP_MSG_WINDOW, 1, "not a msgpack map", 0x91, 0x01);
    REJ(GWP_MSG_WINDOW, 1, "not a msgpack map", 0xc0);
    REJ(GWP_MSG_WINDOW, 1, "map key", 0x81, 0x01, 0x02);
    REJ(GWP_MSG_WINDOW, 1, "map key", 0x81, 0x90, 0x02);
    /* schema */
    REJ(GWP_MSG_WINDOW, 1, "WINDOW: missing required key \"bytes\"", 0x80);
    REJ(GWP_MSG_WINDOW, 1, "duplicate", 0x82, 0xa5, 'b', 'y', 't', 'e', 's', 0x01,
                                       0xa5, 'b', 'y', 't', 'e', 's', 0x02);
    REJ(GWP_MSG_WINDOW, 1, "WINDOW.bytes: wrong msgpack type", 0x81, 0xa5, 'b', 'y', 't', 'e', 's', 0xa1, 'x');
    REJ(GWP_MSG_WINDOW, 1, "wrong msgpack type", 0x81, 0xa5, 'b', 'y', 't', 'e', 's', 0xc3);
    REJ(GWP_MSG_WINDOW, 1, "wrong msgpack type", 0x81, 0xa5, 'b', 'y', 't', 'e', 's', 0xca, 0, 0, 0, 0);
    REJ(GWP_MSG_WINDOW, 1, "out of range", 0x81, 0xa5, 'b', 'y', 't', 'e', 's', 0xff);
    REJ(GWP_MSG_WINDOW, 1, "out of range", 0x81, 0xa5, 'b', 'y', 't', 'e', 's',
                                       0xcf, 0, 0, 0, 1, 0, 0, 0, 0);
    REJ(GWP_MSG_RESPONSE, 1, "RESPONSE.status: value out of range", 0x82, 0xa6, 's', 't', 'a', 't', 'u', 's', 0x63,
                                         0xa7, 'h', 'e', 'a', 'd', 'e', 'r', 's', 0x90);
    REJ(GWP_MSG_RESPONSE, 1, "out of range", 0x82, 0xa6, 's', 't', 'a', 't', 'u', 's', 0xcd, 0x03, 0xe8,
                                         0xa7, 'h', 'e', 'a', 'd', 'e', 'r', 's', 0x90);
    REJ(GWP_MSG_RESPONSE, 1, "missing required key \"headers\"", 0x81, 0xa6, 's', 't', 'a', 't', 'u', 's', 0xcc, 200);
    REJ(GWP_MSG_RESPONSE, 1, "RESPONSE.headers: wrong msgpack type", 0x82, 0xa6, 's', 't', 'a', 't', 'u', 's', 0xcc, 200,
                                         0xa7, 'h', 'e', 'a', 'd', 'e', 'r', 's', 0xa0);
    REJ(GWP_MSG_RESPONSE, 1, "header is not a [name, value] array", 0x82, 0xa6, 's', 't', 'a', 't', 'u', 's', 0xcc, 200,
                                         0xa7, 'h', 'e', 'a', 'd', 'e', 'r', 's', 0x91, 0x93, 0xa0, 0xa0, 0xa0);
    REJ(GWP_MSG_RESPONSE, 1, "header name or value", 0x82, 0xa6, 's', 't', 'a', 't', 'u', 's', 0xcc, 200,
                                         0xa7, 'h', 'e', 'a', 'd', 'e', 'r', 's', 0x91, 0x92, 0x01, 0xa0);
    REJ(GWP_MSG_RESPONSE, 1, "header is not", 0x82, 0xa6, 's', 't', 'a', 't', 'u', 's', 0xcc, 200,
                                         0xa7, 'h', 'e', 'a', 'd', 'e', 'r', 's', 0x91, 0xa0);
    REJ(GWP_MSG_RESPONSE, 1, "RESPONSE.body: wrong msgpack type", 0x83, 0xa6, 's', 't', 'a', 't', 'u', 's', 0xcc, 200,
                                         0xa7, 'h', 'e', 'a', 'd', 'e', 'r', 's', 0x90,
                                         0xa4, 'b', 'o', 'd', 'y', 0x00);
    REJ(GWP_MSG_QUIT, 0, "QUIT.graceful: wrong msgpack type", 0x81, 0xa8, 'g', 'r', 'a', 'c', 'e', 'f', 'u', 'l', 0x01);
    REJ(GWP_MSG_HELLO, 0, "HELLO.window: value out of range", 0x85, 0xa7, 'v', 'e', 'r', 's', 'i', 'o', 'n', 0x01,
                                      0xa4, 's', 'l', 'o', 't', 0x00,
                                      0xaa, 'g', 'e', 'n', 'e', 'r', 'a', 't', 'i', 'o', 'n', 0x00,
                                      0xac, 'h', 'e', 'a', 'r', 't', 'b', 'e', 'a', 't', '_', 'm', 's', 0x00,
                                      0xa6, 'w', 'i', 'n', 'd', 'o', 'w', 0x00);
    REJ(GWP_MSG_HELLO, 0, "HELLO: missing required key \"heartbeat_ms\"", 0x83, 0xa7, 'v', 'e', 'r', 's', 'i', 'o', 'n', 0x01,
                                      0xa4, 's', 'l', 'o', 't', 0x00,
                                      0xaa, 'g', 'e', 'n', 'e', 'r', 'a', 't', 'i', 'o', 'n', 0x00);
    REJ(GWP_MSG_BODY, 1, "BODY/RESP_BODY.data: wrong msgpack type", 0x81, 0xa4, 'd', 'a', 't', 'a', 0x90);
    REJ(GWP_MSG_RESP_BODY, 1, "missing required key \"data\"", 0x81, 0xa4, 'D', 'a', 't', 'a', 0xa0);
#undef REJ
}
END_TEST

/* Build a REQUEST payload with msgpack-c, mutating one field. */
enum { MUT_NONE, MUT_METHOD_INT, MUT_NO_PATH, MUT_MINOR_2, MUT_CL_M2, MUT_CL_BIG, MUT_KA_INT,
       MUT_HDRS_1025, MUT_TARGET_NIL, MUT_HDR_MAP };

static void pack_request(msgpack_sbuffer *sb, int mut)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, mut == MUT_NO_PATH ? 6 : 7);
    pk_s(&pk, "method");
    if (mut == MUT_METHOD_INT) msgpack_pack_int(&pk, 1); else pk_s(&pk, "GET");
    pk_s(&pk, "target");
    if (mut == MUT_TARGET_NIL) msgpack_pack_nil(&pk); else pk_s(&pk, "/");
    if (mut != MUT_NO_PATH) { pk_s(&pk, "path"); pk_s(&pk, "/"); }
    pk_s(&pk, "http_minor"); msgpack_pack_int(&pk, mut == MUT_MINOR_2 ? 2 : 1);
    pk_s(&pk, "content_length");
    if (mut == MUT_CL_M2) msgpack_pack_int64(&pk, -2);
    else if (mut == MUT_CL_BIG) msgpack_pack_uint64(&pk, (uint64_t)INT64_MAX + 1);
    else msgpack_pack_int64(&pk, -1);
    pk_s(&pk, "keepalive");
    if (mut == MUT_KA_INT) msgpack_pack_int(&pk, 1); else msgpack_pack_false(&pk);
    pk_s(&pk, "headers");
    if (mut == MUT_HDRS_1025) {
        msgpack_pack_array(&pk, GWP_MAX_HEADERS + 1);
        for (int i = 0; i <= GWP_MAX_HEADERS; i++) {
            msgpack_pack_array(&pk, 2); pk_s(&pk, "a"); pk_s(&pk, "b");
        }
    } else if (mut == MUT_HDR_MAP) {
        msgpack_pack_array(&pk, 1);
        msgpack_pack_map(&pk, 1); pk_s(&pk, "a"); pk_s(&pk, "b");
    } else {
        msgpack_pack_array(&pk, 1);
        msgpack_pack_array(&pk, 2); pk_s(&pk, "Host"); pk_s(&pk, "x");
    }
}

START_TEST(test_bad_request_fields)
{
    struct { int mut; const char *why; } cases[] = {
        { MUT_METHOD_INT, "REQUEST.method: wrong msgpack type" },
        { MUT_NO_PATH, "REQUEST: missing required key \"path\"" },
        { MUT_MINOR_2, "REQUEST.http_minor: value out of range" },
        { MUT_CL_M2, "REQUEST.content_length: value out of range" },
        { MUT_CL_BIG, "REQUEST.content_length: value out of range" },
        { MUT_KA_INT, "REQUEST.keepalive: wrong msgpack type" },
        { MUT_HDRS_1025, "too many headers" },
        { MUT_TARGET_NIL, "REQUEST.target: wrong msgpack type" },
        { MUT_HDR_MAP, "header is not" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        pack_request(&sb, cases[i].mut);
        expect_reject(GWP_MSG_REQUEST, 1, sb.data, sb.size, cases[i].why);
        msgpack_sbuffer_destroy(&sb);
    }
    /* The unmutated payload, packed by msgpack-c with str (not bin) for
     * every string and defaults for the absent optional keys, decodes. */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pack_request(&sb, MUT_NONE);
    gwp_msg_t m; const char *why;
    uint8_t *f = malloc(12 + sb.size);
    size_t n = mkframe(f, GWP_VERSION, GWP_MSG_REQUEST, 0, 1, sb.data, (uint32_t)sb.size);
    gwp_decoder_t d;
    gwp_decoder_init(&d, 0);
    ck_assert_int_eq(gwp_decode(&d, f, n, &m, &why), (ssize_t)n);
    ck_str(m.u.request.method, "GET");
    ck_str(m.u.request.target, "/");
    ck_str(m.u.request.query, "");
    ck_str(m.u.request.peer, "");
    ck_str(m.u.request.scheme, "http");
    ck_assert(m.u.request.content_length == -1);
    ck_assert_uint_eq(m.u.request.nheaders, 1);
    ck_str(m.u.request.headers[0].name, "Host");
    gwp_decoder_done(&d);
    free(f);
    msgpack_sbuffer_destroy(&sb);
}
END_TEST

START_TEST(test_deep_nesting)
{
    /* {"x": [[...[nil]...]]} with k arrays: the map is depth 1, so k = 7
     * reaches depth 8 (accepted) and k = 8 reaches 9 (rejected). */
    for (int k = 6; k <= 9; k++) {
        uint8_t p[64];
        size_t n = 0;
        p[n++] = 0x82;
        p[n++] = 0xa1; p[n++] = 'x';
        for (int i = 0; i < k; i++) p[n++] = 0x91;
        p[n++] = 0xc0;
        p[n++] = 0xa5; memcpy(p + n, "bytes", 5); n += 5; p[n++] = 0x07;
        gwp_msg_t m; const char *why;
        ssize_t rc = decode_raw(GWP_MSG_WINDOW, 1, p, n, &m, &why);
        if (k <= 7) {
            ck_assert_int_eq(rc, (ssize_t)(12 + n));
            ck_assert_uint_eq(m.u.window.bytes, 7);
        } else {
            ck_assert_int_eq(rc, GWP_ERROR);
            ck_assert_str_eq(why, "msgpack nesting deeper than 8");
        }
    }
    /* Thousands of levels under an unknown key: rejected at level 9,
     * without recursion. Arrays, then maps nested as map keys. */
    static uint8_t deep[5000];
    deep[0] = 0x81; deep[1] = 0xa1; deep[2] = 'x';
    memset(deep + 3, 0x91, sizeof deep - 3);
    deep[sizeof deep - 1] = 0xc0;
    expect_reject(GWP_MSG_WINDOW, 1, deep, sizeof deep, "nesting deeper than 8");
    memset(deep + 3, 0x81, sizeof deep - 3);
    expect_reject(GWP_MSG_WINDOW, 1, deep, sizeof deep, "nesting deeper than 8");
    /* At the top level the shape check comes first. */
    memset(deep, 0x91, sizeof deep);
    expect_reject(GWP_MSG_WINDOW, 1, deep, sizeof deep, "not a msgpack map");
}
END_TEST

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Decode frame after frame; every outcome must be sane. */
static void decode_stream(gwp_decoder_t *d, const uint8_t *p, size_t len)
{
    size_t off = 0;
    for (;;) {
        gwp_msg_t m;
        const char *why = NULL;
        ssize_t n = gwp_decode(d, p + off, len - off, &m, &why);
        if (n == GWP_AGAIN) return;
        if (n == GWP_ERROR) { ck_assert_ptr_nonnull(why); return; }
        ck_assert(n >= GWP_HEADER_SIZE + 1 && (size_t)n <= len - off);
        ck_assert_uint_eq((size_t)n, GWP_HEADER_SIZE + m.frame.length);
        off += (size_t)n;
    }
}

START_TEST(test_garbage)
{
    gwp_buf_t all;
    gwp_buf_init(&all);
    encode_all(&all);
    guard_t g;
    guard_init(&g, 4096 + all.len);
    gwp_decoder_t d;
    gwp_decoder_init(&d, 0);
    uint8_t buf[4096];

    for (int it = 0; it < 20000; it++) {
        size_t n = rng() % 200;
        for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)rng();
        if (it & 1 && n >= 12) {           /* a plausible header, random payload */
            uint8_t type = (uint8_t)(1 + rng() % (GWP_MSG_MAX - 1));
            int zero = type == GWP_MSG_HELLO || type == GWP_MSG_READY || type == GWP_MSG_HEARTBEAT
                    || type == GWP_MSG_QUIT || type == GWP_MSG_ERROR;
            mkframe(buf, GWP_VERSION, type, 0, zero ? 0 : 1, NULL, (uint32_t)(n - 12));
            if (n > 12) buf[12] = (uint8_t)(0x80 | (rng() & 0x0f));   /* mostly maps */
        }
        decode_stream(&d, guard_put(&g, buf, n), n);
    }
    /* Mutations of a valid stream of every message type. */
    uint8_t *mut = malloc(all.len);
    for (int it = 0; it < 20000; it++) {
        memcpy(mut, all.data, all.len);
        int flips = 1 + (int)(rng() % 4);
        for (int i = 0; i < flips; i++) mut[rng() % all.len] = (uint8_t)rng();
        size_t n = all.len - (it % 3 == 0 ? rng() % all.len : 0);
        decode_stream(&d, guard_put(&g, mut, n), n);
    }
    ck_assert(d.errors > 0 && d.frames > 0);
    free(mut);
    guard_done(&g);
    gwp_decoder_done(&d);
    gwp_buf_free(&all);
}
END_TEST

/* ---- streams of frames, compatibility --------------------------------- */

START_TEST(test_back_to_back)
{
    gwp_buf_t b;
    gwp_buf_init(&b);
    encode_all(&b);
    encode_all(&b);
    gwp_request_t q = typical_request();
    ck_assert_int_eq(gwp_encode_request(&b, 2, 0, &q), 0);
    size_t total = b.len;
    gwp_decoder_t d;
    gwp_decoder_init(&d, 0);
    size_t off = 0;
    unsigned i = 0;
    while (off < total) {
        gwp_msg_t m;
        size_t want = GWP_HEADER_SIZE + rd32(b.data + off + 8);
        ssize_t n = gwp_decode(&d, b.data + off, total - off, &m, NULL);
        ck_assert_int_eq(n, (ssize_t)want);
        ck_assert_uint_eq(m.frame.type, i < 22 ? i % 11 + 1 : GWP_MSG_REQUEST);
        if (m.frame.type == GWP_MSG_REQUEST) ck_str(m.u.request.headers[7].name, "Cache-Control");
        off += (size_t)n;
        i++;
    }
    ck_assert_uint_eq(off, total);
    ck_assert_uint_eq(i, 23);
    /* A partial frame after whole ones: whole ones decode, then AGAIN. */
    ck_assert_int_eq(gwp_encode_window(&b, 3, 1), 0);
    gwp_msg_t m;
    ck_assert_int_eq(gwp_decode(&d, b.data + total, b.len - total - 1, &m, NULL), GWP_AGAIN);
    ck_assert_int_eq(gwp_decode(&d, b.data + total, b.len - total, &m, NULL), (ssize_t)(b.len - total));
    gwp_decoder_done(&d);
    gwp_buf_free(&b);
}
END_TEST

START_TEST(test_forward_compat)
{
    /* A RESPONSE from a "newer" peer: keys reordered, unknown keys holding
     * every msgpack type, nested to the depth limit. */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 13);
    pk_s(&pk, "zz_nil");     msgpack_pack_nil(&pk);
    pk_b(&pk, "body");       pk_b(&pk, "hi");           /* bin key is accepted */
    pk_s(&pk, "zz_float");   msgpack_pack_double(&pk, 1.5);
    pk_s(&pk, "zz_f32");     msgpack_pack_float(&pk, 2.5f);
    pk_s(&pk, "zz_ext");     msgpack_pack_ext(&pk, 3, 7); msgpack_pack_ext_body(&pk, "abc", 3);
    pk_s(&pk, "zz_fixext");  msgpack_pack_ext(&pk, 16, 1); msgpack_pack_ext_body(&pk, "0123456789abcdef", 16);
    pk_s(&pk, "headers");
    msgpack_pack_array(&pk, 1); msgpack_pack_array(&pk, 2); pk_s(&pk, "A"); pk_b(&pk, "B");
    pk_s(&pk, "zz_neg");     msgpack_pack_int64(&pk, INT64_MIN);
    pk_s(&pk, "zz_deep");
    for (int i = 0; i < 6; i++) { msgpack_pack_map(&pk, 1); pk_s(&pk, "k"); }
    msgpack_pack_array(&pk, 2); msgpack_pack_true(&pk); pk_b(&pk, "leaf");  /* depth 8 */
    pk_s(&pk, "status");     msgpack_pack_int16(&pk, 404);      /* any int encoding */
    pk_s(&pk, "");           pk_s(&pk, "empty key");
    pk_s(&pk, "zz_bigarr");
    msgpack_pack_array(&pk, 300);
    for (int i = 0; i < 300; i++) msgpack_pack_int(&pk, i);
    pk_s(&pk, "zz_map");
    msgpack_pack_map(&pk, 2); msgpack_pack_int(&pk, 1); msgpack_pack_nil(&pk);
    msgpack_pack_array(&pk, 0); msgpack_pack_map(&pk, 0);

    gwp_msg_t m; const char *why = NULL;
    uint8_t *f = malloc(12 + sb.size);
    size_t n = mkframe(f, GWP_VERSION, GWP_MSG_RESPONSE, 0, 9, sb.data, (uint32_t)sb.size);
    gwp_decoder_t d;
    gwp_decoder_init(&d, 0);
    ssize_t rc = gwp_decode(&d, f, n, &m, &why);
    ck_assert_msg(rc == (ssize_t)n, "rc %zd: %s", rc, why ? why : "-");
    ck_assert_uint_eq(m.u.response.status, 404);
    ck_assert_uint_eq(m.u.response.has_body, 1);
    ck_str(m.u.response.body, "hi");
    ck_assert_uint_eq(m.u.response.nheaders, 1);
    ck_str(m.u.response.headers[0].name, "A");
    ck_str(m.u.response.headers[0].value, "B");
    gwp_decoder_done(&d);
    free(f);
    msgpack_sbuffer_destroy(&sb);
}
END_TEST

START_TEST(test_int_encodings)
{
    /* WINDOW.bytes = 200 in every integer encoding msgpack allows. */
    const uint8_t encs[][10] = {
        { 1, 0x7f }, { 2, 0xcc, 200 }, { 3, 0xcd, 0, 200 }, { 5, 0xce, 0, 0, 0, 200 },
        { 9, 0xcf, 0, 0, 0, 0, 0, 0, 0, 200 }, { 2, 0xd0, 100 }, { 3, 0xd1, 0, 200 },
        { 5, 0xd2, 0, 0, 0, 200 }, { 9, 0xd3, 0, 0, 0, 0, 0, 0, 0, 200 },
    };
    for (size_t i = 0; i < sizeof encs / sizeof encs[0]; i++) {
        uint8_t p[32] = { 0x81, 0xa5, 'b', 'y', 't', 'e', 's' };
        memcpy(p + 7, encs[i] + 1, encs[i][0]);
        gwp_msg_t m; const char *why;
        ck_assert_int_eq(decode_raw(GWP_MSG_WINDOW, 1, p, 7 + encs[i][0], &m, &why),
                         (ssize_t)(12 + 7 + encs[i][0]));
        ck_assert_uint_eq(m.u.window.bytes, i == 0 ? 127 : i == 5 ? 100 : 200);
    }
    /* ERROR.code (int64) from every negative and positive encoding */
    const uint8_t neg[][10] = {
        { 1, 0xe0 }, { 2, 0xd0, 0x80 }, { 3, 0xd1, 0x80, 0 }, { 5, 0xd2, 0x80, 0, 0, 0 },
        { 9, 0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0 }, { 9, 0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff },
    };
    int64_t want[] = { -32, -128, -32768, INT32_MIN, INT64_MIN, INT64_MAX };
    for (size_t i = 0; i < 6; i++) {
        uint8_t p[32] = { 0x82, 0xa7, 'm', 'e', 's', 's', 'a', 'g', 'e', 0xa0, 0xa4, 'c', 'o', 'd', 'e' };
        memcpy(p + 15, neg[i] + 1, neg[i][0]);
        gwp_msg_t m; const char *why;
        ck_assert_int_eq(decode_raw(GWP_MSG_ERROR, 0, p, 15 + neg[i][0], &m, &why),
                         (ssize_t)(12 + 15 + neg[i][0]));
        ck_assert(m.u.error.code == want[i]);
    }
}
END_TEST

START_TEST(test_noncanonical)
{
    /* Wider-than-needed heads are still msgpack: map32, str16 key, array16
     * headers and pair, str32/bin16 strings, uint64 status. */
    static const uint8_t p[] = {
        0xdf, 0, 0, 0, 2,
        0xda, 0, 6, 's', 't', 'a', 't', 'u', 's', 0xcf, 0, 0, 0, 0, 0, 0, 0, 200,
        0xd9, 7, 'h', 'e', 'a', 'd', 'e', 'r', 's', 0xdc, 0, 1,
        0xdc, 0, 2, 0xdb, 0, 0, 0, 1, 'A', 0xc5, 0, 2, 'b', 'c',
    };
    uint8_t f[12 + sizeof p];
    size_t n = mkframe(f, GWP_VERSION, GWP_MSG_RESPONSE, 0, 1, p, sizeof p);
    gwp_decoder_t d;
    gwp_decoder_init(&d, 0);
    gwp_msg_t m; const char *why = NULL;
    ck_assert_int_eq(gwp_decode(&d, f, n, &m, &why), (ssize_t)n);
    ck_assert_uint_eq(m.u.response.status, 200);
    ck_assert_uint_eq(m.u.response.nheaders, 1);
    ck_str(m.u.response.headers[0].name, "A");
    ck_str(m.u.response.headers[0].value, "bc");
    ck_assert_uint_eq(m.u.response.has_body, 0);
    gwp_decoder_done(&d);
}
END_TEST

/*
 * gwp_decode has fast paths for the exact shapes gwp_encode_* writes
 * (REQUEST, RESPONSE, BODY/RESP_BODY, WINDOW) and falls back to the general
 * decoder for anything else. Every variant below must decode to the same
 * message whichever path takes it, and a frame the fast path starts on but
 * cannot finish must get the general decoder's verdict.
 */
static const char long_peer[] = "[2001:db8:1234:5678:9abc:def0:1234:5678]:65535";

static void pack_request_variant(msgpack_packer *pk, int v, int64_t cl, const char *hval)
{
    static const char *const order[11] = { "method", "target", "path", "query", "http_minor",
                                           "headers", "peer", "server", "scheme",
                                           "content_length", "keepalive" };
    msgpack_pack_map(pk, v == 5 ? 12 : 11);
    for (int j = 0; j < 11; j++) {
        const char *k = order[v == 1 ? 10 - j : j];
        pk_s(pk, k);
        if (!strcmp(k, "method")) pk_s(pk, "GET");
        else if (!strcmp(k, "target")) pk_b(pk, "/a?b");
        else if (!strcmp(k, "path")) pk_b(pk, "/a");
        else if (!strcmp(k, "query")) pk_b(pk, "b");
        else if (!strcmp(k, "http_minor")) msgpack_pack_uint8(pk, 1);
        else if (!strcmp(k, "headers")) {
            msgpack_pack_array(pk, 2);
            msgpack_pack_array(pk, 2);
            if (v == 2) { pk_s(pk, "Host"); pk_s(pk, "x"); } else { pk_b(pk, "Host"); pk_b(pk, "x"); }
            msgpack_pack_array(pk, 2);
            pk_b(pk, "Accept"); pk_b(pk, hval);
        }
        else if (!strcmp(k, "peer")) pk_s(pk, v == 3 ? long_peer : "127.0.0.1:5");
        else if (!strcmp(k, "server")) pk_s(pk, "127.0.0.1:8000");
        else if (!strcmp(k, "scheme")) pk_s(pk, "http");
        else if (!strcmp(k, "content_length")) {
            if (v == 4) { msgpack_pack_fix_int64(pk, cl); continue; }   /* d3: wider than needed */
            if (cl < 0) msgpack_pack_int64(pk, cl); else msgpack_pack_uint64(pk, (uint64_t)cl);
        }
        else if (!strcmp(k, "keepalive")) msgpack_pack_true(pk);
    }
    if (v == 5) { pk_s(pk, "zz_new"); msgpack_pack_array(pk, 1); msgpack_pack_nil(pk); }
}

static ssize_t decode_guarded(gwp_decoder_t *d, guard_t *g, uint8_t type, uint16_t flags,
                              const void *payload, size_t plen, gwp_msg_t *m, const char **why)
{
    uint8_t *f = malloc(12 + plen);
    size_t n = mkframe(f, GWP_VERSION, type, flags, 1, payload, (uint32_t)plen);
    *why = NULL;
    ssize_t rc = gwp_decode(d, guard_put(g, f, n), n, m, why);
    free(f);
    ck_assert_msg(rc == GWP_ERROR || rc == (ssize_t)n, "rc %zd of %zu", rc, n);
    return rc;
}

START_TEST(test_fast_path_shapes)
{
    char big[301];
    memset(big, 'v', 300);
    big[300] = '\0';
    const int64_t cls[] = { 0, 127, 128, 70000, -1, (int64_t)1 << 40 };
    gwp_decoder_t d;
    gwp_decoder_init(&d, 0);
    guard_t g;
    guard_init(&g, 4096);
    for (int v = 0; v <= 6; v++) {
        for (size_t c = 0; c < sizeof cls / sizeof cls[0]; c++) {
            const char *hval = v == 6 ? big : "*/*";
            msgpack_sbuffer sb;
            msgpack_sbuffer_init(&sb);
            msgpack_packer pk;
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            pack_request_variant(&pk, v, cls[c], hval);
            gwp_msg_t m; const char *why;
            ssize_t rc = decode_guarded(&d, &g, GWP_MSG_REQUEST, GWP_F_END, sb.data, sb.size, &m, &why);
            ck_assert_msg(rc > 0, "variant %d cl %" PRId64 ": %s", v, cls[c], why ? why : "-");
            const gwp_request_t *q = &m.u.request;
            ck_str(q->method, "GET"); ck_str(q->target, "/a?b"); ck_str(q->path, "/a");
            ck_str(q->query, "b"); ck_assert_uint_eq(q->http_minor, 1);
            ck_assert_uint_eq(q->nheaders, 2);
            ck_str(q->headers[0].name, "Host"); ck_str(q->headers[0].value, "x");
            ck_str(q->headers[1].name, "Accept"); ck_str(q->headers[1].value, hval);
            ck_str(q->peer, v == 3 ? long_peer : "127.0.0.1:5");
            ck_str(q->server, "127.0.0.1:8000"); ck_str(q->scheme, "http");
            ck_assert(q->content_length == cls[c]);
            ck_assert_uint_eq(q->keepalive, 1);
            ck_assert_uint_eq(m.frame.flags, GWP_F_END);
            msgpack_sbuffer_destroy(&sb);
        }
    }

    /* Our own encoder's REQUEST, then the same bytes spoiled late, after
     * the fast path has filled most of the message. */
    gwp_buf_t b;
    gwp_buf_init(&b);
    gwp_request_t q0 = typical_request();
    ck_assert_int_eq(gwp_encode_request(&b, 1, 0, &q0), 0);
    size_t plen = b.len - 12;
    uint8_t *pl = malloc(plen + 1);
    gwp_msg_t m; const char *why;
    memcpy(pl, b.data + 12, plen);
    ck_assert_int_gt(decode_guarded(&d, &g, GWP_MSG_REQUEST, 0, pl, plen, &m, &why), 0);
    ck_assert_uint_eq(m.u.request.nheaders, 8);
    ck_assert_uint_eq(pl[plen - 1], 0xc3);
    pl[plen - 1] = 0x01;                                  /* keepalive: int, not bool */
    ck_assert_int_eq(decode_guarded(&d, &g, GWP_MSG_REQUEST, 0, pl, plen, &m, &why), GWP_ERROR);
    ck_assert_ptr_nonnull(strstr(why, "keepalive: wrong msgpack type"));
    pl[plen - 1] = 0xc3;
    pl[plen] = 0xc0;                                      /* one byte too many */
    ck_assert_int_eq(decode_guarded(&d, &g, GWP_MSG_REQUEST, 0, pl, plen + 1, &m, &why), GWP_ERROR);
    ck_assert_ptr_nonnull(strstr(why, "trailing bytes"));
    for (size_t i = 0; i + 11 < plen; i++)                /* http_minor 1 -> 2 */
        if (memcmp(pl + i, "\xaahttp_minor\x01", 12) == 0) pl[i + 11] = 2;
    ck_assert_int_eq(decode_guarded(&d, &g, GWP_MSG_REQUEST, 0, pl, plen, &m, &why), GWP_ERROR);
    ck_assert_ptr_nonnull(strstr(why, "http_minor: value out of range"));
    free(pl);

    /* RESPONSE: with and without body, status in each uint width, str
     * body, and an empty body that is present (has_body 1). */
    static const struct { uint8_t p[48]; size_t n; uint32_t status; int has_body; size_t blen; } rs[] = {
        { { 0x82, 0xa6, 's', 't', 'a', 't', 'u', 's', 0x64, 0xa7, 'h', 'e', 'a', 'd', 'e', 'r', 's', 0x90 },
          18, 100, 0, 0 },
        { { 0x83, 0xa6, 's', 't', 'a', 't', 'u', 's', 0xcc, 0xc8, 0xa7, 'h', 'e', 'a', 'd', 'e', 'r', 's',
            0x91, 0x92, 0xa1, 'A', 0xc4, 0x01, 'b', 0xa4, 'b', 'o', 'd', 'y', 0xa2, 'h', 'i' },
          33, 200, 1, 2 },
        { { 0x83, 0xa6, 's', 't', 'a', 't', 'u', 's', 0xcd, 0x03, 0xe7, 0xa7, 'h', 'e', 'a', 'd', 'e', 'r', 's',
            0x90, 0xa4, 'b', 'o', 'd', 'y', 0xc4, 0x00 },
          27, 999, 1, 0 },
        { { 0x82, 0xa6, 's', 't', 'a', 't', 'u', 's', 0xd1, 0x01, 0xf4, 0xa7, 'h', 'e', 'a', 'd', 'e', 'r', 's',
            0x90 },
          20, 500, 0, 0 },
    };
    for (size_t i = 0; i < sizeof rs / sizeof rs[0]; i++) {
        ssize_t rc = decode_guarded(&d, &g, GWP_MSG_RESPONSE, GWP_F_END, rs[i].p, rs[i].n, &m, &why);
        ck_assert_msg(rc > 0, "response %zu: %s", i, why ? why : "-");
        ck_assert_uint_eq(m.u.response.status, rs[i].status);
        ck_assert_uint_eq(m.u.response.has_body, rs[i].has_body);
        ck_assert_uint_eq(m.u.response.body.len, rs[i].blen);
        ck_assert_ptr_nonnull(m.u.response.body.ptr);
    }
    static const uint8_t st99[] = { 0x82, 0xa6, 's', 't', 'a', 't', 'u', 's', 0x63,
                                    0xa7, 'h', 'e', 'a', 'd', 'e', 'r', 's', 0x90 };
    static const uint8_t st1000[] = { 0x82, 0xa6, 's', 't', 'a', 't', 'u', 's', 0xcd, 0x03, 0xe8,
                                      0xa7, 'h', 'e', 'a', 'd', 'e', 'r', 's', 0x90 };
    static const uint8_t hdr_short[] = { 0x82, 0xa6, 's', 't', 'a', 't', 'u', 's', 0xcc, 0xc8,
                                         0xa7, 'h', 'e', 'a', 'd', 'e', 'r', 's', 0x92,
                                         0x92, 0xc4, 0x01, 'a', 0xc4, 0x05, 'b' };
    ck_assert_int_eq(decode_guarded(&d, &g, GWP_MSG_RESPONSE, 0, st99, sizeof st99, &m, &why), GWP_ERROR);
    ck_assert_ptr_nonnull(strstr(why, "status: value out of range"));
    ck_assert_int_eq(decode_guarded(&d, &g, GWP_MSG_RESPONSE, 0, st1000, sizeof st1000, &m, &why), GWP_ERROR);
    ck_assert_ptr_nonnull(strstr(why, "status: value out of range"));
    ck_assert_int_eq(decode_guarded(&d, &g, GWP_MSG_RESPONSE, 0, hdr_short, sizeof hdr_short, &m, &why),
                     GWP_ERROR);

    /* BODY data as bin8, str, bin16 and empty. */
    static const struct { uint8_t p[16]; size_t n; size_t dlen; } ds[] = {
        { { 0x81, 0xa4, 'd', 'a', 't', 'a', 0xc4, 0x02, 'h', 'i' }, 10, 2 },
        { { 0x81, 0xa4, 'd', 'a', 't', 'a', 0xa2, 'h', 'i' }, 9, 2 },
        { { 0x81, 0xa4, 'd', 'a', 't', 'a', 0xc5, 0x00, 0x02, 'h', 'i' }, 11, 2 },
        { { 0x81, 0xa4, 'd', 'a', 't', 'a', 0xc4, 0x00 }, 8, 0 },
    };
    for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++) {
        ck_assert_int_gt(decode_guarded(&d, &g, GWP_MSG_BODY, 0, ds[i].p, ds[i].n, &m, &why), 0);
        ck_assert_uint_eq(m.u.data.data.len, ds[i].dlen);
    }
    static const uint8_t dlong[] = { 0x81, 0xa4, 'd', 'a', 't', 'a', 0xc4, 0x03, 'h', 'i' };
    ck_assert_int_eq(decode_guarded(&d, &g, GWP_MSG_BODY, 0, dlong, sizeof dlong, &m, &why), GWP_ERROR);

    gwp_buf_free(&b);
    guard_done(&g);
    gwp_decoder_done(&d);
}
END_TEST

START_TEST(test_msgpack_c_reads_our_frames)
{
    /* msgpack-c, an independent decoder, sees exactly the documented shape. */
    gwp_buf_t b;
    gwp_buf_init(&b);
    gwp_request_t q = typical_request();
    ck_assert_int_eq(gwp_encode_request(&b, 1, 0, &q), 0);
    msgpack_zone z;
    msgpack_zone_init(&z, 2048);
    msgpack_object o;
    size_t off = 0;
    ck_assert_int_eq(msgpack_unpack((const char *)b.data + 12, b.len - 12, &off, &z, &o),
                     MSGPACK_UNPACK_SUCCESS);
    ck_assert_uint_eq(off, b.len - 12);
    ck_assert_int_eq(o.type, MSGPACK_OBJECT_MAP);
    ck_assert_uint_eq(o.via.map.size, 11);
    const char *keys[] = { "method", "target", "path", "query", "http_minor", "headers",
                           "peer", "server", "scheme", "content_length", "keepalive" };
    int types[] = { MSGPACK_OBJECT_STR, MSGPACK_OBJECT_BIN, MSGPACK_OBJECT_BIN, MSGPACK_OBJECT_BIN,
                    MSGPACK_OBJECT_POSITIVE_INTEGER, MSGPACK_OBJECT_ARRAY, MSGPACK_OBJECT_STR,
                    MSGPACK_OBJECT_STR, MSGPACK_OBJECT_STR, MSGPACK_OBJECT_POSITIVE_INTEGER,
                    MSGPACK_OBJECT_BOOLEAN };
    for (int i = 0; i < 11; i++) {
        msgpack_object_kv *kv = &o.via.map.ptr[i];
        ck_assert_int_eq(kv->key.type, MSGPACK_OBJECT_STR);
        ck_assert_uint_eq(kv->key.via.str.size, strlen(keys[i]));
        ck_assert_mem_eq(kv->key.via.str.ptr, keys[i], strlen(keys[i]));
        ck_assert_int_eq(kv->val.type, types[i]);
    }
    msgpack_object h = o.via.map.ptr[5].val;
    ck_assert_uint_eq(h.via.array.size, 8);
    ck_assert_int_eq(h.via.array.ptr[0].type, MSGPACK_OBJECT_ARRAY);
    ck_assert_uint_eq(h.via.array.ptr[0].via.array.size, 2);
    ck_assert_int_eq(h.via.array.ptr[0].via.array.ptr[0].type, MSGPACK_OBJECT_BIN);
    msgpack_zone_destroy(&z);
    gwp_buf_free(&b);
}
END_TEST

/* The two examples in PROTOCOL.md ("Examples"), byte for byte. */
static const uint8_t example_request[] = {
    0x01, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0xac,
    0x8b, 0xa6, 'm', 'e', 't', 'h', 'o', 'd', 0xa3, 'G', 'E', 'T',
    0xa6, 't', 'a', 'r', 'g', 'e', 't', 0xc4, 0x08, '/', 'h', 'i', '?', 'x', '=', '1', '2',
    0xa4, 'p', 'a', 't', 'h', 0xc4, 0x03, '/', 'h', 'i',
    0xa5, 'q', 'u', 'e', 'r', 'y', 0xc4, 0x04, 'x', '=', '1', '2',
    0xaa, 'h', 't', 't', 'p', '_', 'm', 'i', 'n', 'o', 'r', 0x01,
    0xa7, 'h', 'e', 'a', 'd', 'e', 'r', 's', 0x91, 0x92,
    0xc4, 0x04, 'H', 'o', 's', 't', 0xc4, 0x09, 'e', 'x', 'a', 'm', 'p', 'l', 'e', '.', 'o',
    0xa4, 'p', 'e', 'e', 'r', 0xaf, '1', '2', '7', '.', '0', '.', '0', '.', '1', ':', '4', '0', '0', '0', '0',
    0xa6, 's', 'e', 'r', 'v', 'e', 'r', 0xae, '1', '2', '7', '.', '0', '.', '0', '.', '1', ':', '8', '0', '0', '0',
    0xa6, 's', 'c', 'h', 'e', 'm', 'e', 0xa4, 'h', 't', 't', 'p',
    0xae, 'c', 'o', 'n', 't', 'e', 'n', 't', '_', 'l', 'e', 'n', 'g', 't', 'h', 0x00,
    0xa9, 'k', 'e', 'e', 'p', 'a', 'l', 'i', 'v', 'e', 0xc3,
};
static const uint8_t example_response[] = {
    0x01, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x41,
    0x83, 0xa6, 's', 't', 'a', 't', 'u', 's', 0xcc, 0xc8,
    0xa7, 'h', 'e', 'a', 'd', 'e', 'r', 's', 0x91, 0x92,
    0xc4, 0x0c, 'C', 'o', 'n', 't', 'e', 'n', 't', '-', 'T', 'y', 'p', 'e',
    0xc4, 0x0a, 't', 'e', 'x', 't', '/', 'p', 'l', 'a', 'i', 'n',
    0xa4, 'b', 'o', 'd', 'y', 0xc4, 0x0c, 'H', 'e', 'l', 'l', 'o', ',', ' ', 'w', 'o', 'r', 'l', 'd',
};

START_TEST(test_protocol_examples)
{
    gwp_buf_t b;
    gwp_buf_init(&b);
    gwp_header_t h = { S("Host"), S("example.o") };
    gwp_request_t q = { .method = S("GET"), .target = S("/hi?x=12"), .path = S("/hi"),
                        .query = S("x=12"), .http_minor = 1, .headers = &h, .nheaders = 1,
                        .peer = S("127.0.0.1:40000"), .server = S("127.0.0.1:8000"),
                        .scheme = S("http"), .content_length = 0, .keepalive = 1 };
    ck_assert_int_eq(gwp_encode_request(&b, 1, GWP_F_END, &q), 0);
    ck_assert_uint_eq(b.len, sizeof example_request);
    ck_assert_mem_eq(b.data, example_request, sizeof example_request);
    b.len = 0;
    gwp_header_t rh = { S("Content-Type"), S("text/plain") };
    gwp_response_t r = { .status = 200, .headers = &rh, .nheaders = 1,
                         .body = S("Hello, world"), .has_body = 1 };
    ck_assert_int_eq(gwp_encode_response(&b, 1, GWP_F_END, &r), 0);
    ck_assert_uint_eq(b.len, sizeof example_response);
    ck_assert_mem_eq(b.data, example_response, sizeof example_response);
    gwp_buf_free(&b);
}
END_TEST

/* ---- small API pieces -------------------------------------------------- */

START_TEST(test_buf)
{
    gwp_buf_t b;
    gwp_buf_init(&b);
    ck_assert_int_eq(gwp_buf_reserve(&b, 10), 0);
    ck_assert(b.cap >= 10);
    memcpy(b.data, "0123456789", 10);
    b.len = 10;
    gwp_buf_consume(&b, 3);
    ck_assert_uint_eq(b.len, 7);
    ck_assert_mem_eq(b.data, "3456789", 7);
    gwp_buf_consume(&b, 7);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_int_eq(gwp_buf_reserve(&b, SIZE_MAX), -ENOMEM);
    /* a big buffer is returned to malloc once drained */
    ck_assert_int_eq(gwp_encode_data(&b, GWP_MSG_BODY, 1, 0, NULL, 0), 0);
    ck_assert_int_eq(gwp_buf_reserve(&b, 1 << 20), 0);
    gwp_buf_consume(&b, b.len);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.cap, 0);
    gwp_buf_free(&b);
    gwp_buf_free(&b);
}
END_TEST

START_TEST(test_type_names)
{
    ck_assert_str_eq(gwp_type_name(GWP_MSG_HELLO), "HELLO");
    ck_assert_str_eq(gwp_type_name(GWP_MSG_REQUEST), "REQUEST");
    ck_assert_str_eq(gwp_type_name(GWP_MSG_RESP_BODY), "RESP_BODY");
    ck_assert_str_eq(gwp_type_name(GWP_MSG_ERROR), "ERROR");
    ck_assert_str_eq(gwp_type_name(0), "?");
    ck_assert_str_eq(gwp_type_name(GWP_MSG_MAX), "?");
    ck_assert_str_eq(gwp_type_name(1000), "?");
}
END_TEST

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* Encode and decode of the typical frames. With GWP_BENCH=1 prints ns/op,
 * the best of 40 short rounds: the minimum is the figure that survives a
 * shared, noisy machine. Without it, a quick smoke run. */
START_TEST(test_bench)
{
    int bench = getenv("GWP_BENCH") != NULL;
    int iters = bench ? 25000 : 500, rounds = bench ? 40 : 2;
    gwp_buf_t b;
    gwp_decoder_t d;
    gwp_buf_init(&b);
    gwp_decoder_init(&d, 0);
    gwp_request_t q = typical_request();
    gwp_response_t r = typical_response();
    double best[6] = { 1e18, 1e18, 1e18, 1e18, 1e18, 1e18 };
    size_t flen[2] = { 0, 0 };
    volatile size_t sink = 0;
    gwp_msg_t m;

    for (int round = 0; round < rounds; round++) {
        for (int which = 0; which < 2; which++) {
            double t0 = now_ns();
            for (int i = 0; i < iters; i++) {
                b.len = 0;
                if (which == 0) gwp_encode_request(&b, (uint32_t)i + 1, GWP_F_END, &q);
                else gwp_encode_response(&b, (uint32_t)i + 1, GWP_F_END, &r);
            }
            double t1 = now_ns();
            for (int i = 0; i < iters; i++) {
                ssize_t n = gwp_decode(&d, b.data, b.len, &m, NULL);
                sink += (size_t)n + m.frame.length;
            }
            double t2 = now_ns();
            for (int i = 0; i < iters; i++) {
                b.len = 0;
                if (which == 0) gwp_encode_request(&b, (uint32_t)i + 1, GWP_F_END, &q);
                else gwp_encode_response(&b, (uint32_t)i + 1, GWP_F_END, &r);
                sink += (size_t)gwp_decode(&d, b.data, b.len, &m, NULL);
            }
            double t3 = now_ns();
            double *o = best + which * 3;
            if ((t1 - t0) / iters < o[0]) o[0] = (t1 - t0) / iters;
            if ((t2 - t1) / iters < o[1]) o[1] = (t2 - t1) / iters;
            if ((t3 - t2) / iters < o[2]) o[2] = (t3 - t2) / iters;
            flen[which] = b.len;
        }
    }
    ck_assert_uint_eq(d.errors, 0);
    ck_assert_uint_eq(d.frames, (uint64_t)rounds * iters * 4);
    if (bench) {
        printf("gwp bench: REQUEST (GET, 8 headers, %zu B frame): encode %.1f ns, decode %.1f ns, "
               "encode+decode %.1f ns\n", flen[0], best[0], best[1], best[2]);
        printf("gwp bench: RESPONSE (200, 2 headers, 13 B body, %zu B frame): encode %.1f ns, "
               "decode %.1f ns, encode+decode %.1f ns\n", flen[1], best[3], best[4], best[5]);
    }
    (void)sink;
    gwp_decoder_done(&d);
    gwp_buf_free(&b);
}
END_TEST

Suite *gwp_suite(void)
{
    Suite *s = suite_create("gwp");
    TCase *tc = tcase_create("roundtrip");
    tcase_add_test(tc, test_hello_roundtrip);
    tcase_add_test(tc, test_ready_roundtrip);
    tcase_add_test(tc, test_request_roundtrip);
    tcase_add_test(tc, test_request_edges);
    tcase_add_test(tc, test_request_many_headers);
    tcase_add_test(tc, test_data_roundtrip);
    tcase_add_test(tc, test_response_roundtrip);
    tcase_add_test(tc, test_small_roundtrips);
    tcase_add_test(tc, test_encode_rejects);
    tcase_add_test(tc, test_protocol_examples);
    tcase_add_test(tc, test_msgpack_c_reads_our_frames);
    tcase_set_timeout(tc, 30);
    suite_add_tcase(s, tc);

    tc = tcase_create("reject");
    tcase_add_test(tc, test_truncated_every_offset);
    tcase_add_test(tc, test_oversize_length);
    tcase_add_test(tc, test_bad_header);
    tcase_add_test(tc, test_header_valid);
    tcase_add_test(tc, test_bad_payload);
    tcase_add_test(tc, test_bad_request_fields);
    tcase_add_test(tc, test_deep_nesting);
    tcase_add_test(tc, test_garbage);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);

    tc = tcase_create("stream");
    tcase_add_test(tc, test_back_to_back);
    tcase_add_test(tc, test_forward_compat);
    tcase_add_test(tc, test_int_encodings);
    tcase_add_test(tc, test_noncanonical);
    tcase_add_test(tc, test_fast_path_shapes);
    tcase_add_test(tc, test_buf);
    tcase_add_test(tc, test_type_names);
    tcase_add_test(tc, test_bench);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    return s;
}

GW_TEST_SUITE(gwp_suite)
