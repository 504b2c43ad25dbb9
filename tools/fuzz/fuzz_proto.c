/*
 * fuzz_proto.c - libFuzzer target for the wire protocol decoder (proto/gwp.c).
 * Decodes consecutive frames from arbitrary bytes, as a channel reader would.
 * Every frame that decodes must also: be AGAIN one byte short; match
 * gwp_frame_peek; be accepted by msgpack-c (an independent parser) as one
 * whole object; re-encode to a frame that decodes to the same message; and
 * re-encode from that to the identical bytes (the C encoder is canonical).
 *
 * Build and run: make build/fuzz/fuzz_proto &&
 *   build/fuzz/fuzz_proto -max_total_time=60 -rss_limit_mb=1024 tools/fuzz/seeds-fuzz_proto
 * Regenerate the seeds (one valid frame of each type, plus a few extra):
 *   cc -DGWP_FUZZ_GEN_SEEDS -Iproto tools/fuzz/fuzz_proto.c proto/gwp.c -lmsgpackc -o /tmp/gen &&
 *   /tmp/gen tools/fuzz/seeds-fuzz_proto
 */
#include "gwp.h"

#include <errno.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef GWP_FUZZ_GEN_SEEDS

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); abort(); } } while (0)

static int str_eq(gwp_str_t a, gwp_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static int hdrs_eq(const gwp_header_t *a, uint32_t na, const gwp_header_t *b, uint32_t nb)
{
    if (na != nb) return 0;
    for (uint32_t i = 0; i < na; i++)
        if (!str_eq(a[i].name, b[i].name) || !str_eq(a[i].value, b[i].value)) return 0;
    return 1;
}

/* Field-by-field equality (frame length aside: encodings may differ). */
static int msg_eq(const gwp_msg_t *a, const gwp_msg_t *b)
{
    if (a->frame.type != b->frame.type || a->frame.flags != b->frame.flags
        || a->frame.stream != b->frame.stream || a->frame.version != b->frame.version)
        return 0;
    switch (a->frame.type) {
    case GWP_MSG_HELLO:
        return memcmp(&a->u.hello, &b->u.hello, sizeof a->u.hello) == 0;
    case GWP_MSG_READY:
        return a->u.ready.version == b->u.ready.version && a->u.ready.pid == b->u.ready.pid
            && str_eq(a->u.ready.runtime, b->u.ready.runtime) && str_eq(a->u.ready.loop, b->u.ready.loop);
    case GWP_MSG_REQUEST: {
        const gwp_request_t *x = &a->u.request, *y = &b->u.request;
        return str_eq(x->method, y->method) && str_eq(x->target, y->target)
            && str_eq(x->path, y->path) && str_eq(x->query, y->query)
            && x->http_minor == y->http_minor
            && hdrs_eq(x->headers, x->nheaders, y->headers, y->nheaders)
            && str_eq(x->peer, y->peer) && str_eq(x->server, y->server)
            && str_eq(x->scheme, y->scheme) && x->content_length == y->content_length
            && x->keepalive == y->keepalive;
    }
    case GWP_MSG_BODY: case GWP_MSG_RESP_BODY:
        return str_eq(a->u.data.data, b->u.data.data);
    case GWP_MSG_RESPONSE: {
        const gwp_response_t *x = &a->u.response, *y = &b->u.response;
        return x->status == y->status && x->has_body == y->has_body && str_eq(x->body, y->body)
            && hdrs_eq(x->headers, x->nheaders, y->headers, y->nheaders);
    }
    case GWP_MSG_CANCEL:
        return str_eq(a->u.cancel.reason, b->u.cancel.reason);
    case GWP_MSG_WINDOW:
        return a->u.window.bytes == b->u.window.bytes;
    case GWP_MSG_HEARTBEAT: {
        const gwp_heartbeat_t *x = &a->u.heartbeat, *y = &b->u.heartbeat;
        return x->served == y->served && x->inflight == y->inflight && x->tasks == y->tasks
            && x->rss == y->rss && str_eq(x->loop, y->loop);
    }
    case GWP_MSG_QUIT:
        return a->u.quit.graceful == b->u.quit.graceful && a->u.quit.timeout_ms == b->u.quit.timeout_ms;
    case GWP_MSG_ERROR:
        return str_eq(a->u.error.message, b->u.error.message) && a->u.error.code == b->u.error.code;
    }
    return 0;
}

/* Re-encode a decoded message. CANCEL takes a C string, so a reason with a
 * NUL in it is cut there: the caller compares only what survives. */
static int encode_msg(gwp_buf_t *b, const gwp_msg_t *m, char *scratch, size_t scratch_len)
{
    switch (m->frame.type) {
    case GWP_MSG_HELLO:     return gwp_encode_hello(b, &m->u.hello);
    case GWP_MSG_READY:     return gwp_encode_ready(b, &m->u.ready);
    case GWP_MSG_REQUEST:   return gwp_encode_request(b, m->frame.stream, m->frame.flags, &m->u.request);
    case GWP_MSG_BODY:
    case GWP_MSG_RESP_BODY:
        return gwp_encode_data(b, (gwp_type_t)m->frame.type, m->frame.stream, m->frame.flags,
                               m->u.data.data.ptr, m->u.data.data.len);
    case GWP_MSG_RESPONSE:  return gwp_encode_response(b, m->frame.stream, m->frame.flags, &m->u.response);
    case GWP_MSG_CANCEL: {
        size_t n = m->u.cancel.reason.len < scratch_len - 1 ? m->u.cancel.reason.len : scratch_len - 1;
        if (n) memcpy(scratch, m->u.cancel.reason.ptr, n);
        scratch[n] = '\0';
        return gwp_encode_cancel(b, m->frame.stream, scratch);
    }
    case GWP_MSG_WINDOW:    return gwp_encode_window(b, m->frame.stream, m->u.window.bytes);
    case GWP_MSG_HEARTBEAT: return gwp_encode_heartbeat(b, &m->u.heartbeat);
    case GWP_MSG_QUIT:      return gwp_encode_quit(b, &m->u.quit);
    case GWP_MSG_ERROR:     return gwp_encode_error(b, &m->u.error);
    }
    return -EINVAL;
}

/* The payload of an accepted frame is one well-formed msgpack map; msgpack-c
 * must agree. Safe to hand it over only because gwp_decode accepted it:
 * every count is bounded by the payload size, so msgpack-c's allocation is. */
static void check_with_msgpack_c(const uint8_t *payload, size_t len)
{
    msgpack_zone z;
    msgpack_object o;
    size_t off = 0;
    CHECK(msgpack_zone_init(&z, 4096));
    int rc = msgpack_unpack((const char *)payload, len, &off, &z, &o);
    CHECK(rc == MSGPACK_UNPACK_SUCCESS);
    CHECK(off == len);
    CHECK(o.type == MSGPACK_OBJECT_MAP);
    msgpack_zone_destroy(&z);
}

static void roundtrip(const gwp_msg_t *m1, const uint8_t *frame, size_t flen)
{
    static char scratch[GWP_MAX_PAYLOAD + 1];
    gwp_buf_t b2, b3;
    gwp_decoder_t d2, d3;
    gwp_msg_t m2, m3;
    const char *why = NULL;

    gwp_buf_init(&b2);
    gwp_buf_init(&b3);
    gwp_decoder_init(&d2, 0);
    gwp_decoder_init(&d3, 0);

    int rc = encode_msg(&b2, m1, scratch, sizeof scratch);
    /* Re-encoding may grow a frame (absent optional keys are written, str
     * becomes bin), so only a frame near the cap may fail to fit. */
    if (rc == -EMSGSIZE) {
        CHECK(flen > GWP_MAX_PAYLOAD / 2);
        goto out;
    }
    CHECK(rc == 0);
    ssize_t n = gwp_decode(&d2, b2.data, b2.len, &m2, &why);
    if (n != (ssize_t)b2.len) {
        fprintf(stderr, "re-encoded %s does not decode: %zd %s\n",
                gwp_type_name(m1->frame.type), n, why ? why : "-");
        abort();
    }
    if (m1->frame.type == GWP_MSG_CANCEL) {
        size_t cut = strlen(scratch);
        CHECK(m2.u.cancel.reason.len == cut);
        CHECK(cut == 0 || memcmp(m2.u.cancel.reason.ptr, m1->u.cancel.reason.ptr, cut) == 0);
    } else {
        CHECK(msg_eq(m1, &m2));
    }
    /* Canonical: encoding what we decoded from our own output is a no-op. */
    CHECK(encode_msg(&b3, &m2, scratch, sizeof scratch) == 0);
    CHECK(b3.len == b2.len && memcmp(b3.data, b2.data, b2.len) == 0);
    CHECK(gwp_decode(&d3, b3.data, b3.len, &m3, &why) == (ssize_t)b3.len);
    CHECK(msg_eq(&m2, &m3));
out:
    gwp_decoder_done(&d2);
    gwp_decoder_done(&d3);
    gwp_buf_free(&b2);
    gwp_buf_free(&b3);
    (void)frame;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gwp_decoder_t d;
    gwp_decoder_init(&d, 0);
    size_t off = 0;
    for (;;) {
        gwp_msg_t m;
        const char *why = NULL;
        ssize_t n = gwp_decode(&d, data + off, size - off, &m, &why);
        if (n == GWP_AGAIN) break;
        if (n == GWP_ERROR) {
            CHECK(why != NULL && why[0] != '\0');
            break;
        }
        CHECK(n > GWP_HEADER_SIZE && (size_t)n <= size - off);
        CHECK((size_t)n == GWP_HEADER_SIZE + m.frame.length);

        gwp_frame_t f;
        CHECK(gwp_frame_peek(&d, data + off, size - off, &f, &why) == GWP_OK);
        CHECK(memcmp(&f, &m.frame, sizeof f) == 0);

        /* One byte short is never a message. A second decoder keeps m's
         * header scratch intact. */
        gwp_decoder_t dshort;
        gwp_msg_t mshort;
        gwp_decoder_init(&dshort, 0);
        CHECK(gwp_decode(&dshort, data + off, (size_t)n - 1, &mshort, &why) == GWP_AGAIN);
        gwp_decoder_done(&dshort);

        check_with_msgpack_c(data + off + GWP_HEADER_SIZE, m.frame.length);
        roundtrip(&m, data + off, (size_t)n);
        off += (size_t)n;
    }
    CHECK(d.errors <= 1);
    gwp_decoder_done(&d);
    return 0;
}

#else /* GWP_FUZZ_GEN_SEEDS: write one seed file per frame type, and more */

#define S(lit) ((gwp_str_t){ (lit), sizeof(lit) - 1 })

static void put(const char *dir, const char *name, const gwp_buf_t *b)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(b->data, 1, b->len, f) != b->len || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) { fprintf(stderr, "usage: %s DIR\n", argv[0]); return 2; }
    const char *dir = argv[1];
    gwp_buf_t b, all;
    gwp_buf_init(&b);
    gwp_buf_init(&all);
    static const gwp_header_t rq[] = {
        { S("Host"), S("localhost:8000") }, { S("User-Agent"), S("curl/7.88.1") },
        { S("Accept"), S("*/*") }, { S("Content-Type"), S("application/json") },
    };
    static const gwp_header_t rs[] = { { S("Content-Type"), S("text/plain") }, { S("X-A"), S("") } };
    gwp_hello_t hello = { GWP_VERSION, 1, 2, GWP_MAX_PAYLOAD, GWP_DEFAULT_WINDOW, 1000 };
    gwp_ready_t ready = { GWP_VERSION, 4242, S("native"), S("libev/epoll") };
    gwp_request_t req = { .method = S("POST"), .target = S("/api/items?id=7&x"), .path = S("/api/items"),
                          .query = S("id=7&x"), .http_minor = 1, .headers = rq, .nheaders = 4,
                          .peer = S("[::1]:40000"), .server = S("127.0.0.1:8000"), .scheme = S("http"),
                          .content_length = -1, .keepalive = 1 };
    gwp_response_t resp = { .status = 200, .headers = rs, .nheaders = 2, .body = S("Hello, world!"),
                            .has_body = 1 };
    gwp_heartbeat_t hb = { 123456, 3, 1, 50u << 20, S("libev/epoll") };
    gwp_quit_t quit = { 1, 30000 };
    gwp_error_t err = { S("import failed: no module named app"), 78 };

#define SEED(name, call) do { b.len = 0; if ((call) != 0) { fprintf(stderr, "%s\n", name); return 1; } \
                              put(dir, name, &b); gwp_buf_reserve(&all, b.len);                \
                              memcpy(all.data + all.len, b.data, b.len); all.len += b.len; } while (0)
    SEED("01-hello", gwp_encode_hello(&b, &hello));
    SEED("02-ready", gwp_encode_ready(&b, &ready));
    SEED("03-request", gwp_encode_request(&b, 1, 0, &req));
    SEED("04-body", gwp_encode_data(&b, GWP_MSG_BODY, 1, GWP_F_END, "{\"a\":1}", 7));
    SEED("05-response", gwp_encode_response(&b, 1, GWP_F_END, &resp));
    SEED("06-resp-body", gwp_encode_data(&b, GWP_MSG_RESP_BODY, 2, GWP_F_END, "tail", 4));
    SEED("07-cancel", gwp_encode_cancel(&b, 3, "client-gone"));
    SEED("08-window", gwp_encode_window(&b, 2, 65536));
    SEED("09-heartbeat", gwp_encode_heartbeat(&b, &hb));
    SEED("10-quit", gwp_encode_quit(&b, &quit));
    SEED("11-error", gwp_encode_error(&b, &err));
    put(dir, "20-all-back-to-back", &all);
    /* A frame with unknown keys of every kind, for the skip path. */
    static const uint8_t extra[] = {
        0x01, GWP_MSG_WINDOW, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00,
        0x84, 0xa5, 'b', 'y', 't', 'e', 's', 0xcd, 0x10, 0x00,
        0xa1, 'x', 0x92, 0x81, 0xa1, 'k', 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0xc0,
        0xa1, 'y', 0xd6, 0x01, 1, 2, 3, 4,
        0xa1, 'z', 0xc7, 0x01, 0x05, 0xff,
    };
    b.len = 0;
    gwp_buf_reserve(&b, sizeof extra);
    memcpy(b.data, extra, sizeof extra);
    b.data[11] = (uint8_t)(sizeof extra - GWP_HEADER_SIZE);   /* payload length */
    b.len = sizeof extra;
    put(dir, "21-unknown-keys", &b);
    gwp_buf_free(&b);
    gwp_buf_free(&all);
    return 0;
}

#endif
