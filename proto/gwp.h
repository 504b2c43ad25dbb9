/*
 * gwp.h - the gateway wire protocol: frames and messages between the front
 * (master process) and its workers. Linked by both sides; the only code that
 * knows the byte layout. The normative spec is proto/PROTOCOL.md; this header
 * is its C binding. Pure code: no I/O, no globals, callable from any thread.
 *
 * A frame is a 12-byte header followed by a msgpack payload:
 *
 *     0       1       2               4                               8
 *     +-------+-------+---------------+-------------------------------+
 *     |version| type  |  flags (be16) |       stream id (be32)        |
 *     +-------+-------+---------------+-------------------------------+
 *     |    payload length (be32)      |  payload: one msgpack object  |
 *     +-------------------------------+-------------------------------+
 *
 * The payload length is checked against the decoder's cap before a single
 * payload byte is looked at. The payload is read by gwp.c's own zero-copy
 * msgpack reader, which checks every array/map/str/bin count against the
 * bytes that remain before using it and limits nesting to 8; msgpack-c, which
 * allocates by declared sizes, never sees untrusted bytes (it was also 3-5x
 * slower here, see gwp.c).
 */
#ifndef GWP_H
#define GWP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define GWP_VERSION          1
#define GWP_HEADER_SIZE      12
/* Largest payload either side may send; a decoder may be given a lower cap. */
#define GWP_MAX_PAYLOAD      (1u << 20)
/* Largest data (bin) size a sender should put in one BODY/RESP_BODY frame. */
#define GWP_MAX_DATA         (64u * 1024)
/* Default per-stream flow-control window, each direction (bytes of data). */
#define GWP_DEFAULT_WINDOW   (256u * 1024)
/* Most headers a REQUEST or RESPONSE may carry. */
#define GWP_MAX_HEADERS      1024

/* Status codes shared by proto and gateway (nginx style). */
#define GWP_OK      0
#define GWP_ERROR  (-1)
#define GWP_AGAIN  (-2)

/* Message types. Order is wire-visible: append only. */
typedef enum {
    GWP_MSG_HELLO = 1,     /* M->W  stream 0: version, slot, limits          */
    GWP_MSG_READY,         /* W->M  stream 0: startup hooks done             */
    GWP_MSG_REQUEST,       /* M->W  opens stream s                           */
    GWP_MSG_BODY,          /* M->W  request body data on s                   */
    GWP_MSG_RESPONSE,      /* W->M  status + headers (+ body) on s           */
    GWP_MSG_RESP_BODY,     /* W->M  response body data on s                  */
    GWP_MSG_CANCEL,        /* both  abandon stream s                         */
    GWP_MSG_WINDOW,        /* both  grant data credit on s                   */
    GWP_MSG_HEARTBEAT,     /* W->M  stream 0: counters, periodic             */
    GWP_MSG_QUIT,          /* M->W  stream 0: stop (graceful or not)         */
    GWP_MSG_ERROR,         /* W->M  stream 0: fatal worker error, then exit  */
    GWP_MSG_MAX
} gwp_type_t;

/* Frame flags. */
#define GWP_F_END   0x0001  /* last frame of this direction of the stream   */

/* Borrowed byte string: points into the decoded frame, not NUL-terminated. */
typedef struct {
    const char *ptr;
    size_t      len;
} gwp_str_t;

typedef struct {
    gwp_str_t name;
    gwp_str_t value;
} gwp_header_t;

/* 1 if h may go on the HTTP wire as a response field: the name a non-empty
 * RFC 9110 token, the value free of control bytes other than HTAB (no CR,
 * LF, NUL). The master refuses a RESPONSE with any other field (502); the
 * Python runtime checks the same before encoding, so the app gets the error. */
int gwp_header_valid(const gwp_header_t *h);

typedef struct {
    uint8_t  version;
    uint8_t  type;
    uint16_t flags;
    uint32_t stream;
    uint32_t length;
} gwp_frame_t;

typedef struct {
    uint32_t version;      /* GWP_VERSION of the master */
    uint32_t slot;         /* worker slot index, stable across respawns */
    uint32_t generation;   /* bumps on reload */
    uint32_t max_payload;  /* the master's decoder cap */
    uint32_t window;       /* initial per-stream window, both directions */
    uint32_t heartbeat_ms; /* how often the worker sends HEARTBEAT */
    uint32_t age;          /* spawn counter of the master: younger workers have more */
} gwp_hello_t;

typedef struct {
    uint32_t  version;     /* GWP_VERSION of the worker */
    int64_t   pid;
    gwp_str_t runtime;     /* "native", "python", ... */
    gwp_str_t loop;        /* identity of the worker's event loop */
    uint32_t  capacity;    /* requests it runs at once (threads, ...); 0 = no fixed number */
} gwp_ready_t;

typedef struct {
    gwp_str_t           method;
    gwp_str_t           target;   /* raw request-target */
    gwp_str_t           path;     /* target up to '?' (no decoding) */
    gwp_str_t           query;    /* after '?', without it; may be empty */
    uint8_t             http_minor; /* HTTP/1.<minor>: 0 or 1 */
    const gwp_header_t *headers;  /* in wire order; names as received */
    uint32_t            nheaders;
    gwp_str_t           peer;     /* "ip:port", "[ip6]:port" or "unix" */
    gwp_str_t           server;   /* listener address, same forms */
    gwp_str_t           scheme;   /* "http" */
    int64_t             content_length; /* -1: chunked, length unknown */
    uint8_t             keepalive;      /* client asked to keep the connection */
} gwp_request_t;

typedef struct {
    uint32_t            status;   /* 100..999 */
    const gwp_header_t *headers;
    uint32_t            nheaders;
    gwp_str_t           body;     /* may be empty; counts against the window */
    uint8_t             has_body; /* the "body" key was present */
} gwp_response_t;

typedef struct {          /* BODY and RESP_BODY */
    gwp_str_t data;
} gwp_data_t;

typedef struct {
    gwp_str_t reason;      /* "client-gone", "timeout", "shutdown", ... */
} gwp_cancel_t;

typedef struct {
    uint32_t bytes;        /* credit added to the stream's window */
} gwp_window_t;

typedef struct {
    uint64_t served;       /* requests completed since spawn */
    uint32_t inflight;     /* requests not yet completed */
    uint32_t tasks;        /* background tasks running */
    uint64_t rss;          /* resident bytes, 0 if unknown */
    gwp_str_t loop;        /* same identity as in READY */
} gwp_heartbeat_t;

typedef struct {
    uint8_t  graceful;     /* 1: finish in-flight first; 0: exit now */
    uint32_t timeout_ms;   /* graceful budget; the master kills after it */
} gwp_quit_t;

typedef struct {
    gwp_str_t message;     /* one line, for the master's log */
    int64_t   code;        /* exit status the worker will use */
} gwp_error_t;

typedef struct {
    gwp_frame_t frame;
    union {
        gwp_hello_t     hello;
        gwp_ready_t     ready;
        gwp_request_t   request;
        gwp_data_t      data;
        gwp_response_t  response;
        gwp_cancel_t    cancel;
        gwp_window_t    window;
        gwp_heartbeat_t heartbeat;
        gwp_quit_t      quit;
        gwp_error_t     error;
    } u;
} gwp_msg_t;

/*
 * Growable output buffer owned by one channel. Encoders append whole frames;
 * the owner writes out data[0..len) and calls gwp_buf_consume().
 */
typedef struct {
    uint8_t *data;
    size_t   len;
    size_t   cap;
} gwp_buf_t;

void gwp_buf_init(gwp_buf_t *b);
void gwp_buf_free(gwp_buf_t *b);
/* Drop the first n bytes (n <= len). */
void gwp_buf_consume(gwp_buf_t *b, size_t n);
/* Make room for n more bytes. 0 or -ENOMEM. */
int  gwp_buf_reserve(gwp_buf_t *b, size_t n);

/*
 * Encoders. Each appends exactly one frame to b, or nothing on failure.
 * Return 0, -ENOMEM, -EMSGSIZE (payload would exceed GWP_MAX_PAYLOAD) or
 * -EINVAL (stream 0 where a stream is required, unknown flag bits, or a field
 * outside the range the decoder accepts: status 100..999, http_minor 0..1,
 * content_length >= -1, HELLO window > 0), so whatever encodes also decodes.
 * More than GWP_MAX_HEADERS headers is -EMSGSIZE.
 * Strings are copied; the caller keeps ownership of its inputs.
 */
int gwp_encode_hello(gwp_buf_t *b, const gwp_hello_t *m);
int gwp_encode_ready(gwp_buf_t *b, const gwp_ready_t *m);
int gwp_encode_request(gwp_buf_t *b, uint32_t stream, uint16_t flags,
                       const gwp_request_t *m);
/* type is GWP_MSG_BODY or GWP_MSG_RESP_BODY; len <= GWP_MAX_PAYLOAD - 11
 * (map, "data" key and bin32 head take 11 bytes). */
int gwp_encode_data(gwp_buf_t *b, gwp_type_t type, uint32_t stream,
                    uint16_t flags, const void *data, size_t len);
int gwp_encode_response(gwp_buf_t *b, uint32_t stream, uint16_t flags,
                        const gwp_response_t *m);
int gwp_encode_cancel(gwp_buf_t *b, uint32_t stream, const char *reason);
int gwp_encode_window(gwp_buf_t *b, uint32_t stream, uint32_t bytes);
int gwp_encode_heartbeat(gwp_buf_t *b, const gwp_heartbeat_t *m);
int gwp_encode_quit(gwp_buf_t *b, const gwp_quit_t *m);
int gwp_encode_error(gwp_buf_t *b, const gwp_error_t *m);

/*
 * Decoder: one per channel direction. Holds the scratch a decoded message
 * borrows (the header array), so a gwp_msg_t stays valid until the
 * next gwp_decode() on the same decoder or gwp_decoder_done().
 * Fields are private.
 */
typedef struct {
    uint32_t      max_payload;
    void         *zone;       /* unused, always NULL (kept for layout) */
    gwp_header_t *hdrs;
    uint32_t      hdrs_cap;
    uint64_t      frames;     /* decoded successfully */
    uint64_t      errors;     /* rejected frames */
} gwp_decoder_t;

/* max_payload 0 means GWP_MAX_PAYLOAD; larger values are clamped to it. */
void gwp_decoder_init(gwp_decoder_t *d, uint32_t max_payload);
void gwp_decoder_done(gwp_decoder_t *d);

/*
 * Decode the frame header only. Returns GWP_OK, GWP_AGAIN (fewer than
 * GWP_HEADER_SIZE bytes) or GWP_ERROR with *why set (bad version, unknown
 * type, length over the cap or 0, stream id 0/non-0 where the type forbids
 * it, unknown flag bits, END on a type without END). *f is filled whenever
 * 12 bytes are there, even on error (for the log). d NULL means the default
 * cap; why may be NULL.
 */
int gwp_frame_peek(const gwp_decoder_t *d, const uint8_t *buf, size_t len,
                   gwp_frame_t *f, const char **why);

/*
 * Decode one whole frame from buf[0..len). Returns the number of bytes the
 * frame occupies (> 0) and fills *msg; GWP_AGAIN if the frame is not all
 * there yet (nothing consumed); GWP_ERROR with *why (a static string) if the
 * frame is malformed. After GWP_ERROR the byte stream cannot be trusted:
 * the caller closes the channel. Strings in *msg point into buf (never
 * NULL; an absent optional string is ""), headers into the decoder's
 * scratch. On GWP_AGAIN *msg is untouched; on GWP_ERROR it is unspecified.
 * why may be NULL. Never allocates more than a small multiple of len.
 */
ssize_t gwp_decode(gwp_decoder_t *d, const uint8_t *buf, size_t len,
                   gwp_msg_t *msg, const char **why);

/* Name of a message type for logs ("REQUEST"), "?" if unknown. */
const char *gwp_type_name(unsigned type);

#endif /* GWP_H */
