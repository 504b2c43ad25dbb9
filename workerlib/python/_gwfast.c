/*
 * _gwfast.c - the GWP protocol work of the Python worker runtime, in C.
 *
 * A CPython extension over proto/gwp.c: the frames are decoded and encoded by
 * the same codec the master uses (so validation and bytes are exactly the C
 * side's), and the PEP 3333 environ is built here, so the Python runtime
 * only calls the application. The pure-Python reference of this API is
 * workerlib/python/gateway_runtime/_proto.py (decode, environ, asgi_headers,
 * response, data_frame, window, cancel, heartbeat); tests/unit/test_gwfast.py
 * compares the two.
 *
 *   decode(buf: bytearray, on_malformed_cls=ValueError) -> list of tuples
 *       Every whole frame at the start of buf (frames a MASTER sends: HELLO,
 *       REQUEST, BODY, CANCEL, WINDOW, QUIT). All or nothing: on success the
 *       consumed bytes are deleted from buf (del buf[:n]); on a malformed
 *       frame anywhere in buf (a bad header is seen as soon as its 12 bytes
 *       are there, before its payload has arrived) on_malformed_cls(message)
 *       is raised and buf is left untouched, so the frames before the bad
 *       one are not consumed either. Tuples:
 *         (3, flags, sid, method, target, path, query, http_minor, headers,
 *          peer, server, scheme, content_length)   headers: [(name, value)]
 *         (4, flags, sid, data)
 *         (7, flags, sid, reason)
 *         (8, flags, sid, nbytes)
 *         (10, flags, 0, graceful, timeout_ms)
 *         (1, flags, 0)                            a second HELLO
 *       "text" fields are str (UTF-8, surrogateescape), "bytes" fields bytes.
 *   environ(req, base: dict) -> dict        base.copy() + the CGI keys
 *   asgi_headers(headers) -> [(name.lower(), value)]
 *   response(sid, status, headers, body, end) -> bytes   one RESPONSE frame
 *   data_frame(type, sid, data, end) -> bytes            BODY / RESP_BODY
 *   window(sid, n), cancel(sid, reason), heartbeat(served, inflight, tasks,
 *   rss, loop) -> bytes
 *   StreamBase(w, sid, req, ended, credit, limit)   an ASGI stream's state as
 *       C fields, with send()'s common case (start, then the whole body in
 *       one frame) done here; everything else goes to the subclass's
 *       send_slow(message) (gateway_runtime/_asgi.py). See "ASGI stream".
 *   step(coro, ctx, loop, task) -> FINISHED or the value coro yielded: coro
 *       run to its first suspension in ctx, task current meanwhile.
 *
 * Differences from the reference: validation is gwp.c's (PROTOCOL.md §3/§5
 * exactly, plus the direction check), which is stricter than msgpack +
 * _proto on some inputs and honours bin map keys; the encoders refuse what
 * the master's decoder would refuse (status outside 100..999, stream 0,
 * more than 1024 headers, a data_frame type other than 4/6, out-of-range
 * ints) and take bytes-like bodies only (no str). tests/unit/test_gwfast.py
 * lists the classes.
 *
 * State is module-global (single-phase init, one interpreter), touched only
 * with the GIL held: a decoder whose header scratch is reused, a scratch
 * output buffer, and bounded caches of the immutable objects that repeat
 * from request to request, so the hot path allocates little: header names
 * (with their environ key and lowercase form), header values and paths
 * (admitted on their second sighting, with their latin-1 str and the
 * (name, value) tuple), short text fields (method, scheme, addresses), the
 * last listener and client address splits, and the environ dict template.
 * Sharing immutable objects between requests cannot be observed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "gwp.h"

#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *Py_NewRef(PyObject *o) { Py_INCREF(o); return o; }
#endif

/* ------------------------------------------------------------------------ */
/* Constants                                                                */

static PyObject *S_empty, *S_80, *S_443, *S_localhost, *S_http11, *S_http10,
                *S_https, *S_sep_comma, *S_sep_cookie;
static PyObject *K_REQUEST_METHOD, *K_PATH_INFO, *K_QUERY_STRING, *K_RAW_URI,
                *K_SERVER_NAME, *K_SERVER_PORT, *K_SERVER_PROTOCOL,
                *K_REMOTE_ADDR, *K_REMOTE_PORT, *K_URL_SCHEME,
                *K_CONTENT_LENGTH, *K_CONTENT_TYPE, *K_HTTP_COOKIE;
static PyObject *I_type[GWP_MSG_MAX];      /* 1..11 as int objects */

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */

static inline int is_ascii(const uint8_t *p, size_t n)
{
    uint64_t acc = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        acc |= w;
    }
    for (; i < n; i++) acc |= p[i];
    return (acc & 0x8080808080808080ull) == 0;
}

/* bytes.decode("latin-1") */
static PyObject *latin1_str(const char *p, size_t n)
{
    if (n == 0) return Py_NewRef(S_empty);
    PyObject *s = PyUnicode_New((Py_ssize_t)n, is_ascii((const uint8_t *)p, n) ? 127 : 255);
    if (s == NULL) return NULL;
    memcpy(PyUnicode_1BYTE_DATA(s), p, n);
    return s;
}

/* A "text" field: UTF-8, errors surrogateescape. */
static PyObject *text_str(const char *p, size_t n)
{
    if (n == 0) return Py_NewRef(S_empty);
    if (is_ascii((const uint8_t *)p, n)) {
        PyObject *s = PyUnicode_New((Py_ssize_t)n, 127);
        if (s == NULL) return NULL;
        memcpy(PyUnicode_1BYTE_DATA(s), p, n);
        return s;
    }
    return PyUnicode_DecodeUTF8(p, (Py_ssize_t)n, "surrogateescape");
}

/* A cheap hash for the caches: the first, middle and last 8 bytes and the
 * length. The caches compare the whole key, so a collision only costs a
 * miss. */
static inline uint32_t short_hash(const uint8_t *p, size_t n)
{
    uint64_t a, b;
    if (n >= 8) {
        uint64_t c;
        memcpy(&a, p, 8);
        memcpy(&b, p + n - 8, 8);
        memcpy(&c, p + n / 2 - 4, 8);
        a ^= c * 0xC2B2AE3D27D4EB4Full;
    } else if (n >= 4) {
        uint32_t x, y;
        memcpy(&x, p, 4);
        memcpy(&y, p + n - 4, 4);
        a = x;
        b = y;
    } else if (n > 0) {
        a = (uint64_t)p[0] | (uint64_t)p[n / 2] << 8 | (uint64_t)p[n - 1] << 16;
        b = 0;
    } else {
        a = b = 0;
    }
    uint64_t h = (a ^ (b * 0x9E3779B97F4A7C15ull) ^ n) * 0xFF51AFD7ED558CCDull;
    return (uint32_t)(h >> 32) ^ (uint32_t)h;
}

/* ------------------------------------------------------------------------ */
/* Text cache: method, server, scheme, cancel reason (few distinct values).  */

#define TC_SIZE 64
#define TC_MAX  48
typedef struct {
    PyObject *s;
    uint8_t   n;
    char      b[TC_MAX];
} tc_ent_t;
static tc_ent_t tcache[TC_SIZE];

static PyObject *cached_text(const char *p, size_t n)
{
    if (n == 0) return Py_NewRef(S_empty);
    if (n > TC_MAX) return text_str(p, n);
    tc_ent_t *e = &tcache[short_hash((const uint8_t *)p, n) & (TC_SIZE - 1)];
    if (e->s != NULL && e->n == n && memcmp(e->b, p, n) == 0) return Py_NewRef(e->s);
    PyObject *s = text_str(p, n);
    if (s == NULL) return NULL;
    PyObject *old = e->s;
    e->s = Py_NewRef(s);
    e->n = (uint8_t)n;
    memcpy(e->b, p, n);
    Py_XDECREF(old);               /* a str: its dealloc runs no Python code */
    return s;
}

/* ------------------------------------------------------------------------ */
/* Header name cache: the bytes object of a name as received, its environ   */
/* key and its lowercase form, computed once per distinct name.             */

enum { NK_UNKNOWN, NK_HTTP, NK_COOKIE, NK_CTYPE, NK_CLEN, NK_DROP };

#define NC_SIZE 256                /* 2-way: a name lives in slot h or h^1 */
#define NC_MAX  64
typedef struct {
    PyObject *name;    /* bytes */
    PyObject *key;     /* str "HTTP_..." (interned), NK_HTTP/NK_COOKIE only */
    PyObject *lower;   /* bytes, name.lower(); NULL until asked */
    uint32_t  h;
    uint8_t   kind;    /* NK_*: NK_UNKNOWN until environ asked */
} nc_ent_t;
static nc_ent_t ncache[NC_SIZE];

static void nc_clear(nc_ent_t *e)
{
    PyObject *a = e->name, *b = e->key, *c = e->lower;
    e->name = e->key = e->lower = NULL;
    e->kind = NK_UNKNOWN;
    Py_XDECREF(a);
    Py_XDECREF(b);
    Py_XDECREF(c);
}

static inline nc_ent_t *nc_find_obj(PyObject *o, const char *p, size_t n, uint32_t h)
{
    nc_ent_t *e = &ncache[h & (NC_SIZE - 1)], *e2 = &ncache[(h ^ 1) & (NC_SIZE - 1)];
    if (e->name == o) return e;
    if (e2->name == o) return e2;
    for (int i = 0; i < 2; i++, e = e2) {
        if (e->name != NULL && e->h == h && (size_t)PyBytes_GET_SIZE(e->name) == n
            && memcmp(PyBytes_AS_STRING(e->name), p, n) == 0)
            return e;
    }
    return NULL;
}

static inline nc_ent_t *nc_find(const char *p, size_t n, uint32_t h)
{
    nc_ent_t *e = &ncache[h & (NC_SIZE - 1)];
    for (int i = 0; i < 2; i++, e = &ncache[(h ^ 1) & (NC_SIZE - 1)]) {
        if (e->name != NULL && e->h == h && (size_t)PyBytes_GET_SIZE(e->name) == n
            && memcmp(PyBytes_AS_STRING(e->name), p, n) == 0)
            return e;
    }
    return NULL;
}

/* Takes a new reference to name (a bytes object). */
static nc_ent_t *nc_insert(PyObject *name, uint32_t h)
{
    nc_ent_t *e = &ncache[h & (NC_SIZE - 1)];
    if (e->name != NULL) {
        nc_ent_t *e2 = &ncache[(h ^ 1) & (NC_SIZE - 1)];
        if (e2->name == NULL || (h >> 20) & 1) e = e2;
    }
    nc_clear(e);
    e->name = Py_NewRef(name);
    e->h = h;
    return e;
}

/* The bytes object for a header name from the wire (new reference). */
static PyObject *name_bytes(const char *p, size_t n)
{
    if (n == 0 || n > NC_MAX) return PyBytes_FromStringAndSize(p, (Py_ssize_t)n);
    uint32_t h = short_hash((const uint8_t *)p, n);
    nc_ent_t *e = nc_find(p, n, h);
    if (e != NULL) return Py_NewRef(e->name);
    PyObject *b = PyBytes_FromStringAndSize(p, (Py_ssize_t)n);
    if (b == NULL) return NULL;
    nc_insert(b, h);
    return b;
}

/*
 * The environ treatment of a header name, as _proto.environ does it:
 *   b"_" in name                      -> NK_DROP
 *   key = name.decode("latin-1").upper().replace("-", "_")
 *   key == "CONTENT_TYPE"             -> NK_CTYPE
 *   key == "CONTENT_LENGTH"           -> NK_CLEN
 *   "HTTP_" + key == "HTTP_COOKIE"    -> NK_COOKIE
 *   else                              -> NK_HTTP with *key = "HTTP_" + key
 * *key gets a new reference for NK_HTTP and NK_COOKIE. -1 on error.
 */
static int name_kind_compute(const char *p, size_t n, PyObject **key)
{
    *key = NULL;
    if (memchr(p, '_', n) != NULL) return NK_DROP;
    PyObject *k;
    if (is_ascii((const uint8_t *)p, n)) {
        k = PyUnicode_New((Py_ssize_t)(5 + n), 127);
        if (k == NULL) return -1;
        char *d = (char *)PyUnicode_1BYTE_DATA(k);
        memcpy(d, "HTTP_", 5);
        for (size_t i = 0; i < n; i++) {
            char c = p[i];
            d[5 + i] = c == '-' ? '_' : (c >= 'a' && c <= 'z') ? (char)(c - 32) : c;
        }
    } else {
        /* str.upper() is Unicode-aware ("\xdf" -> "SS", "\xff" -> "\u0178"):
         * let Python do exactly that. */
        PyObject *s = PyUnicode_DecodeLatin1(p, (Py_ssize_t)n, NULL);
        if (s == NULL) return -1;
        PyObject *u = PyObject_CallMethod(s, "upper", NULL);
        Py_DECREF(s);
        if (u == NULL) return -1;
        PyObject *dash = PyUnicode_FromString("-"), *us = PyUnicode_FromString("_");
        PyObject *r = dash && us ? PyUnicode_Replace(u, dash, us, -1) : NULL;
        Py_XDECREF(dash);
        Py_XDECREF(us);
        Py_DECREF(u);
        if (r == NULL) return -1;
        PyObject *pre = PyUnicode_FromString("HTTP_");
        k = pre ? PyUnicode_Concat(pre, r) : NULL;
        Py_XDECREF(pre);
        Py_DECREF(r);
        if (k == NULL) return -1;
    }
    /* Compare what follows "HTTP_" with the two CGI names. */
    PyObject *tail = PyUnicode_Substring(k, 5, PyUnicode_GET_LENGTH(k));
    if (tail == NULL) { Py_DECREF(k); return -1; }
    int kind;
    if (PyUnicode_CompareWithASCIIString(tail, "CONTENT_TYPE") == 0) kind = NK_CTYPE;
    else if (PyUnicode_CompareWithASCIIString(tail, "CONTENT_LENGTH") == 0) kind = NK_CLEN;
    else if (PyUnicode_CompareWithASCIIString(tail, "COOKIE") == 0) kind = NK_COOKIE;
    else kind = NK_HTTP;
    Py_DECREF(tail);
    if (kind == NK_CTYPE || kind == NK_CLEN) { Py_DECREF(k); return kind; }
    if (kind == NK_COOKIE) { Py_DECREF(k); k = Py_NewRef(K_HTTP_COOKIE); }
    else PyUnicode_InternInPlace(&k);
    *key = k;
    return kind;
}

/* Kind and key (borrowed, valid until the next cache change; the caller
 * INCREFs before running anything that could change it) of a name. Caches
 * names that fit. */
static int name_kind(PyObject *name, PyObject **key, PyObject **tmp)
{
    const char *p = PyBytes_AS_STRING(name);
    size_t n = (size_t)PyBytes_GET_SIZE(name);
    *tmp = NULL;
    if (n == 0 || n > NC_MAX || !PyBytes_CheckExact(name)) {   /* not cached */
        int kind = name_kind_compute(p, n, tmp);
        *key = *tmp;
        return kind;
    }
    uint32_t h = short_hash((const uint8_t *)p, n);
    nc_ent_t *e = nc_find_obj(name, p, n, h);
    if (e == NULL) e = nc_insert(name, h);
    if (e->kind == NK_UNKNOWN) {
        PyObject *k;
        int kind = name_kind_compute(p, n, &k);
        if (kind < 0) return -1;
        /* name_kind_compute may have run code (the non-ASCII path): look
         * the entry up again rather than trust e. */
        e = nc_find(p, n, h);
        if (e == NULL) { *tmp = k; *key = k; return kind; }
        Py_XSETREF(e->key, k);
        e->kind = (uint8_t)kind;
    }
    *key = e->key;
    return e->kind;
}

/* ------------------------------------------------------------------------ */
/* Value cache: bytes that repeat from request to request (header values,   */
/* paths) as one shared bytes object and, once environ asked, its latin-1  */
/* str. Both are immutable, so sharing them between requests is invisible. */

#define VC_SIZE 256                /* 2-way, like the name cache */
#define VC_MAX  160
typedef struct {
    PyObject *b;       /* bytes (exact type) */
    PyObject *s;       /* b.decode("latin-1"), NULL until asked */
    PyObject *pair;    /* (name, b) as decode last returned it, or NULL */
    uint32_t  h;
} vc_ent_t;
static vc_ent_t vcache[VC_SIZE];

/* o: the bytes object being looked up, if there is one: an entry holding
 * that very object matches without comparing bytes. */
static inline vc_ent_t *vc_find_obj(PyObject *o, const char *p, size_t n, uint32_t h)
{
    vc_ent_t *e = &vcache[h & (VC_SIZE - 1)], *e2 = &vcache[(h ^ 1) & (VC_SIZE - 1)];
    if (e->b == o) return e;
    if (e2->b == o) return e2;
    for (int i = 0; i < 2; i++, e = e2) {
        if (e->b != NULL && e->h == h && (size_t)PyBytes_GET_SIZE(e->b) == n
            && memcmp(PyBytes_AS_STRING(e->b), p, n) == 0)
            return e;
    }
    return NULL;
}

static inline vc_ent_t *vc_find(const char *p, size_t n, uint32_t h)
{
    vc_ent_t *e = &vcache[h & (VC_SIZE - 1)];
    for (int i = 0; i < 2; i++, e = &vcache[(h ^ 1) & (VC_SIZE - 1)]) {
        if (e->b != NULL && e->h == h && (size_t)PyBytes_GET_SIZE(e->b) == n
            && memcmp(PyBytes_AS_STRING(e->b), p, n) == 0)
            return e;
    }
    return NULL;
}

static vc_ent_t *vc_insert(PyObject *b, uint32_t h)
{
    vc_ent_t *e = &vcache[h & (VC_SIZE - 1)];
    if (e->b != NULL) {
        vc_ent_t *e2 = &vcache[(h ^ 1) & (VC_SIZE - 1)];
        if (e2->b == NULL || (h >> 20) & 1) e = e2;
    }
    PyObject *ob = e->b, *os = e->s, *op = e->pair;
    e->b = Py_NewRef(b);
    e->s = NULL;
    e->pair = NULL;
    e->h = h;
    Py_XDECREF(ob);                /* bytes, str and a tuple of two bytes: */
    Py_XDECREF(os);                /* no Python code runs */
    Py_XDECREF(op);
    return e;
}

/* Admission: a value enters the cache the second time its hash is seen
 * here, so one-off values (session cookies, ids in paths) pass through
 * without evicting the ones that do repeat. */
#define VC_SEEN 1024
static uint32_t vc_seen[VC_SEEN];

static inline int vc_admit(uint32_t h)
{
    uint32_t *s = &vc_seen[(h >> 8) & (VC_SEEN - 1)];
    if (*s == h) return 1;
    *s = h;
    return 0;
}

/* bytes for a value from the wire (new reference). */
static PyObject *value_bytes(const char *p, size_t n)
{
    if (n == 0 || n > VC_MAX) return PyBytes_FromStringAndSize(p, (Py_ssize_t)n);
    uint32_t h = short_hash((const uint8_t *)p, n);
    vc_ent_t *e = vc_find(p, n, h);
    if (e != NULL) return Py_NewRef(e->b);
    PyObject *b = PyBytes_FromStringAndSize(p, (Py_ssize_t)n);
    if (b != NULL && vc_admit(h)) vc_insert(b, h);
    return b;
}

/* The (name, value) tuple of a header from the wire; steals name. A header
 * that repeats (same name object, same value) gets the same tuple back:
 * tuples of bytes are immutable, so nobody can tell. */
static PyObject *header_pair(PyObject *name, const char *p, size_t n)
{
    PyObject *v, *pair;
    uint32_t h = 0;
    vc_ent_t *e = NULL;
    if (n == 0 || n > VC_MAX) {
        v = PyBytes_FromStringAndSize(p, (Py_ssize_t)n);
    } else {
        h = short_hash((const uint8_t *)p, n);
        if ((e = vc_find(p, n, h)) != NULL) {
            if (e->pair != NULL && PyTuple_GET_ITEM(e->pair, 0) == name) {
                Py_DECREF(name);
                return Py_NewRef(e->pair);
            }
            v = Py_NewRef(e->b);
        } else if ((v = PyBytes_FromStringAndSize(p, (Py_ssize_t)n)) != NULL) {
            if (!vc_admit(h)) {            /* first sighting: a plain tuple */
                if ((pair = PyTuple_New(2)) == NULL) {
                    Py_DECREF(name);
                    Py_DECREF(v);
                    return NULL;
                }
                PyTuple_SET_ITEM(pair, 0, name);
                PyTuple_SET_ITEM(pair, 1, v);
                return pair;
            }
            vc_insert(v, h);
        }
    }
    if (v == NULL || (pair = PyTuple_New(2)) == NULL) {
        Py_DECREF(name);
        Py_XDECREF(v);
        return NULL;
    }
    PyTuple_SET_ITEM(pair, 0, name);
    PyTuple_SET_ITEM(pair, 1, v);
    if (n != 0 && n <= VC_MAX) {
        /* PyTuple_New may have collected garbage, and a finalizer may have
         * changed the cache: look again instead of trusting e. */
        if ((e = vc_find(p, n, h)) != NULL && e->b == v)
            Py_XSETREF(e->pair, Py_NewRef(pair));
    }
    return pair;
}

/* b.decode("latin-1") for a bytes object b (new reference): kept with b's
 * cache entry if it has one (decode admitted it). */
static PyObject *value_latin1(PyObject *b)
{
    const char *p = PyBytes_AS_STRING(b);
    size_t n = (size_t)PyBytes_GET_SIZE(b);
    if (n == 0 || n > VC_MAX) return latin1_str(p, n);
    vc_ent_t *e = vc_find_obj(b, p, n, short_hash((const uint8_t *)p, n));
    if (e == NULL) return latin1_str(p, n);
    if (e->s == NULL && (e->s = latin1_str(p, n)) == NULL) return NULL;
    return Py_NewRef(e->s);
}

/* ------------------------------------------------------------------------ */
/* decode                                                                   */

static gwp_decoder_t g_dec;
static int g_dec_busy;

static int from_master(unsigned type)
{
    return type == GWP_MSG_HELLO || type == GWP_MSG_REQUEST || type == GWP_MSG_BODY
        || type == GWP_MSG_CANCEL || type == GWP_MSG_WINDOW || type == GWP_MSG_QUIT;
}

/* Tuple slot i = expr, or fail (the partly filled tuple is freed). */
#define SET(t, i, expr)                                                        \
    do {                                                                       \
        PyObject *o_ = (expr);                                                 \
        if (o_ == NULL) goto fail;                                             \
        PyTuple_SET_ITEM((t), (i), o_);                                        \
    } while (0)

static PyObject *request_tuple(const gwp_msg_t *m)
{
    const gwp_request_t *r = &m->u.request;
    PyObject *t = PyTuple_New(13), *hl;
    if (t == NULL) return NULL;
    PyTuple_SET_ITEM(t, 0, Py_NewRef(I_type[GWP_MSG_REQUEST]));
    SET(t, 1, PyLong_FromLong(m->frame.flags));
    SET(t, 2, PyLong_FromUnsignedLong(m->frame.stream));
    SET(t, 3, cached_text(r->method.ptr, r->method.len));
    SET(t, 4, value_bytes(r->target.ptr, r->target.len));
    SET(t, 5, value_bytes(r->path.ptr, r->path.len));
    SET(t, 6, value_bytes(r->query.ptr, r->query.len));
    SET(t, 7, PyLong_FromLong(r->http_minor));
    SET(t, 8, hl = PyList_New(r->nheaders));
    SET(t, 9, cached_text(r->peer.ptr, r->peer.len));
    SET(t, 10, cached_text(r->server.ptr, r->server.len));
    SET(t, 11, cached_text(r->scheme.ptr, r->scheme.len));
    SET(t, 12, PyLong_FromLongLong(r->content_length));
    for (uint32_t i = 0; i < r->nheaders; i++) {
        const gwp_header_t *h = &r->headers[i];
        PyObject *n = name_bytes(h->name.ptr, h->name.len), *pair;
        if (n == NULL || (pair = header_pair(n, h->value.ptr, h->value.len)) == NULL) goto fail;
        PyList_SET_ITEM(hl, i, pair);
    }
    return t;
fail:
    Py_DECREF(t);     /* tuple/list dealloc tolerate NULL items */
    return NULL;
}

/* (type, flags, sid, x) */
static PyObject *tuple4(unsigned type, const gwp_msg_t *m, PyObject *x)
{
    PyObject *t;
    if (x == NULL || (t = PyTuple_New(4)) == NULL) { Py_XDECREF(x); return NULL; }
    PyTuple_SET_ITEM(t, 0, Py_NewRef(I_type[type]));
    PyTuple_SET_ITEM(t, 3, x);
    SET(t, 1, PyLong_FromLong(m->frame.flags));
    SET(t, 2, PyLong_FromUnsignedLong(m->frame.stream));
    return t;
fail:
    Py_DECREF(t);
    return NULL;
}

static PyObject *msg_tuple(const gwp_msg_t *m)
{
    unsigned type = m->frame.type;
    switch (type) {
    case GWP_MSG_REQUEST:
        return request_tuple(m);
    case GWP_MSG_BODY:
        return tuple4(type, m, PyBytes_FromStringAndSize(m->u.data.data.ptr,
                                                         (Py_ssize_t)m->u.data.data.len));
    case GWP_MSG_WINDOW:
        return tuple4(type, m, PyLong_FromUnsignedLong(m->u.window.bytes));
    case GWP_MSG_CANCEL:
        return tuple4(type, m, cached_text(m->u.cancel.reason.ptr, m->u.cancel.reason.len));
    case GWP_MSG_QUIT:
        return Py_BuildValue("(OiiNk)", I_type[type], (int)m->frame.flags, 0,
                             PyBool_FromLong(m->u.quit.graceful),
                             (unsigned long)m->u.quit.timeout_ms);
    case GWP_MSG_HELLO:
        return Py_BuildValue("(Oii)", I_type[type], (int)m->frame.flags, 0);
    default:          /* from_master() let only the types above through */
        PyErr_SetString(PyExc_SystemError, "_gwfast: unexpected frame type");
        return NULL;
    }
}

/* The message for a malformed frame whose header is at h. */
static PyObject *malformed_msg(const uint8_t *h, const char *why)
{
    return PyUnicode_FromFormat(
        "%s frame (type %u, flags 0x%x, stream %u, length %u): %s",
        gwp_type_name(h[1]), (unsigned)h[1], (unsigned)(h[2] << 8 | h[3]),
        (unsigned)((uint32_t)h[4] << 24 | (uint32_t)h[5] << 16 | (uint32_t)h[6] << 8 | h[7]),
        (unsigned)((uint32_t)h[8] << 24 | (uint32_t)h[9] << 16 | (uint32_t)h[10] << 8 | h[11]),
        why);
}

/* raise cls(msg); steals msg. */
static void raise_malformed(PyObject *cls, PyObject *msg)
{
    if (msg == NULL) return;
    PyObject *exc = PyObject_CallOneArg(cls, msg);
    Py_DECREF(msg);
    if (exc == NULL) return;
    if (!PyExceptionInstance_Check(exc)) {
        PyErr_Format(PyExc_TypeError, "on_malformed_cls returned %.100s, not an exception",
                     Py_TYPE(exc)->tp_name);
        Py_DECREF(exc);
        return;
    }
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
}

static PyObject *gw_decode(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "decode(buf, on_malformed_cls=ValueError)");
        return NULL;
    }
    PyObject *buf = args[0];
    PyObject *cls = nargs > 1 ? args[1] : PyExc_ValueError;
    if (!PyByteArray_Check(buf)) {
        PyErr_Format(PyExc_TypeError, "decode() needs a bytearray, not %.100s",
                     Py_TYPE(buf)->tp_name);
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    if (PyByteArray_GET_SIZE(buf) < GWP_HEADER_SIZE) return out;

    /* The export keeps buf from being resized under us should a garbage
     * collection run a finalizer that touches it. A nested decode() (from
     * such a finalizer) gets a decoder of its own. */
    Py_buffer view;
    if (PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE) < 0) { Py_DECREF(out); return NULL; }
    gwp_decoder_t local, *d = &g_dec;
    if (g_dec_busy) { gwp_decoder_init(&local, 0); d = &local; }
    else g_dec_busy = 1;

    const uint8_t *base = view.buf;
    size_t len = (size_t)view.len, pos = 0;
    const char *why = NULL;
    gwp_msg_t msg;
    while (len - pos >= GWP_HEADER_SIZE) {
        const uint8_t *p = base + pos;
        /* Direction, from the header alone like every other header check:
         * a type the master never sends is malformed before its payload is
         * even there. (Bad versions and unknown types: gwp_decode.) */
        if (p[0] == GWP_VERSION && p[1] >= 1 && p[1] < GWP_MSG_MAX && !from_master(p[1])) {
            why = "message type not sent by the master";
            break;
        }
        ssize_t n = gwp_decode(d, p, len - pos, &msg, &why);
        if (n == GWP_AGAIN) break;
        if (n < 0) {
            if (why == NULL) why = "malformed frame";
            break;
        }
        PyObject *t = msg_tuple(&msg);
        if (t == NULL || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            goto error;
        }
        Py_DECREF(t);
        pos += (size_t)n;
        why = NULL;
    }
    PyObject *err = why != NULL ? malformed_msg(base + pos, why) : NULL;
    if (d == &local) gwp_decoder_done(&local); else g_dec_busy = 0;
    PyBuffer_Release(&view);
    if (why != NULL) {            /* cls runs with buf released and as it was */
        Py_DECREF(out);
        raise_malformed(cls, err);
        return NULL;
    }
    /* del buf[:pos]; when everything went, a resize to 0 does the same
     * without a slice object. */
    if (pos > 0 && (pos == (size_t)PyByteArray_GET_SIZE(buf)
                    ? PyByteArray_Resize(buf, 0) : PySequence_DelSlice(buf, 0, (Py_ssize_t)pos)) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return out;

error:
    if (d == &local) gwp_decoder_done(&local); else g_dec_busy = 0;
    PyBuffer_Release(&view);
    Py_DECREF(out);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* environ                                                                  */

/* s (a str) split at its last ':' -> host.strip("[]"), port; no ':' -> the
 * whole string stripped, "". New references. */
static int split_addr(PyObject *s, PyObject **host, PyObject **port)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    Py_ssize_t i = n > 0 ? PyUnicode_FindChar(s, ':', 0, n, -1) : -1;
    if (i == -2) return -1;
    Py_ssize_t hend = i < 0 ? n : i;
    if (i < 0) *port = Py_NewRef(S_empty);
    else if ((*port = PyUnicode_Substring(s, i + 1, n)) == NULL) return -1;
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    Py_ssize_t a = 0, b = hend;
    while (a < b) {
        Py_UCS4 c = PyUnicode_READ(kind, data, a);
        if (c != '[' && c != ']') break;
        a++;
    }
    while (b > a) {
        Py_UCS4 c = PyUnicode_READ(kind, data, b - 1);
        if (c != '[' && c != ']') break;
        b--;
    }
    if (a == 0 && b == n) *host = Py_NewRef(s);
    else if ((*host = PyUnicode_Substring(s, a, b)) == NULL) { Py_CLEAR(*port); return -1; }
    return 0;
}

/* Exact-content equality of two str objects (canonical representations). */
static inline int str_same(PyObject *a, PyObject *b)
{
    if (a == b) return 1;
    if (a == NULL || b == NULL || !PyUnicode_CheckExact(a) || !PyUnicode_CheckExact(b)) return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(a);
    if (n != PyUnicode_GET_LENGTH(b) || PyUnicode_KIND(a) != PyUnicode_KIND(b)) return 0;
    return memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)n * PyUnicode_KIND(a)) == 0;
}

/* Address cache: "host:port" text -> its parts, computed once per distinct
 * address. The listener's address repeats on every request; a client's on
 * every request of its keep-alive connection, and a worker sees many
 * connections interleaved (a one-entry cache missed on almost every request
 * under load). Direct-mapped on the str's hash; an entry owns its objects. */
#define AC_SIZE 128
typedef struct {
    PyObject *s;       /* the address text (exact str) */
    PyObject *host;    /* str: host with [] stripped */
    PyObject *port;    /* str: the port text, "" if none */
    PyObject *tup;     /* ASGI (host, int port) or None; NULL until asked for */
} ac_ent_t;
static ac_ent_t acache[AC_SIZE];

static void ac_clear(void)
{
    for (size_t i = 0; i < AC_SIZE; i++) {
        Py_CLEAR(acache[i].s); Py_CLEAR(acache[i].host);
        Py_CLEAR(acache[i].port); Py_CLEAR(acache[i].tup);
    }
}

/* The cache entry for s (an exact str), filled; NULL with an exception set. */
static ac_ent_t *addr_entry(PyObject *s)
{
    Py_hash_t h = PyObject_Hash(s);
    if (h == -1) return NULL;
    ac_ent_t *e = &acache[(size_t)h & (AC_SIZE - 1)];
    if (e->s != NULL && str_same(s, e->s)) return e;
    PyObject *host, *port;
    if (split_addr(s, &host, &port) < 0) return NULL;
    PyObject *o1 = e->s, *o2 = e->host, *o3 = e->port, *o4 = e->tup;
    e->s = Py_NewRef(s);
    e->host = host;
    e->port = port;
    e->tup = NULL;
    Py_XDECREF(o1);     /* str and tuples of str/int: no Python code runs */
    Py_XDECREF(o2);
    Py_XDECREF(o3);
    Py_XDECREF(o4);
    return e;
}

/* host and port (new references) of address s. */
static int addr_cached(PyObject *s, PyObject **host, PyObject **port)
{
    if (!PyUnicode_CheckExact(s)) return split_addr(s, host, port);
    ac_ent_t *e = addr_entry(s);
    if (e == NULL) return -1;
    *host = Py_NewRef(e->host);
    *port = Py_NewRef(e->port);
    return 0;
}

static inline int hexval(unsigned c)
{
    if (c - '0' < 10u) return (int)(c - '0');
    if ((c | 0x20) - 'a' < 6u) return (int)((c | 0x20) - 'a' + 10);
    return -1;
}

/* unquote_to_bytes(path).decode("latin-1"): "%XX" (either case) is the
 * byte 0xXX, any other '%' stays. Two passes: size and maximum character,
 * then the characters straight into the str. */
static inline int pct_at(const char *p, size_t n, size_t i)
{
    return p[i] == '%' && i + 2 < n && hexval((uint8_t)p[i + 1]) >= 0
        && hexval((uint8_t)p[i + 2]) >= 0;
}

static PyObject *path_info(const char *p, size_t n)
{
    size_t o = 0;
    unsigned any = 0;
    for (size_t i = 0; i < n; i++, o++) {
        if (pct_at(p, n, i)) {
            any |= (unsigned)(hexval((uint8_t)p[i + 1]) << 4);
            i += 2;
        } else {
            any |= (uint8_t)p[i];
        }
    }
    if (o == 0) return Py_NewRef(S_empty);
    PyObject *s = PyUnicode_New((Py_ssize_t)o, any & 0x80 ? 255 : 127);
    if (s == NULL) return NULL;
    Py_UCS1 *d = PyUnicode_1BYTE_DATA(s);
    for (size_t i = 0; i < n; i++) {
        if (pct_at(p, n, i)) {
            *d++ = (Py_UCS1)(hexval((uint8_t)p[i + 1]) << 4 | hexval((uint8_t)p[i + 2]));
            i += 2;
        } else {
            *d++ = (Py_UCS1)p[i];
        }
    }
    return s;
}

static inline int set_new(PyObject *d, PyObject *k, PyObject *v)
{
    if (v == NULL) return -1;
    int rc = PyDict_SetItem(d, k, v);
    Py_DECREF(v);
    return rc;
}

static int env_header(PyObject *env, PyObject *name, PyObject *value)
{
    if (!PyBytes_Check(name) || !PyBytes_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "environ(): header names and values must be bytes");
        return -1;
    }
    PyObject *key, *tmp;
    int kind = name_kind(name, &key, &tmp);
    if (kind < 0) return -1;
    if (kind == NK_DROP || kind == NK_CLEN) return 0;
    if (tmp == NULL && key != NULL) Py_INCREF(key);       /* own it from here */
    else key = tmp;
    PyObject *v = value_latin1(value);
    if (v == NULL) { Py_XDECREF(key); return -1; }
    int rc;
    if (kind == NK_CTYPE) {
        rc = PyDict_SetItem(env, K_CONTENT_TYPE, v);
    } else {
        PyObject *old = PyDict_GetItemWithError(env, key);
        if (old == NULL && PyErr_Occurred()) {
            rc = -1;
        } else if (old == NULL) {
            rc = PyDict_SetItem(env, key, v);
        } else {
            /* env[key] += ("; " if key == "HTTP_COOKIE" else ",") + value */
            Py_INCREF(old);
            PyObject *sv = PyUnicode_Concat(kind == NK_COOKIE ? S_sep_cookie : S_sep_comma, v);
            PyObject *nv = sv ? PyNumber_InPlaceAdd(old, sv) : NULL;
            Py_XDECREF(sv);
            Py_DECREF(old);
            rc = nv ? PyDict_SetItem(env, key, nv) : -1;
            Py_XDECREF(nv);
        }
    }
    Py_DECREF(v);
    Py_XDECREF(key);
    return rc;
}

/*
 * base.copy(), with room for what environ adds. The copy is cloned from a
 * template: base's items followed by the ten keys every environ sets, in
 * the order it sets them (placeholder values), in a table big enough for
 * the usual number of headers. Cloning copies the table in one go; setting
 * the ten keys then only replaces values, and nothing has to grow. (A plain
 * base.copy() would be cloned at base's size and resized twice on the way.)
 * The template follows base: another dict, or a change to it (its version
 * tag), rebuilds it. The ten keys end up where base.copy() + assignments in
 * the reference order would put them, also when base already has some.
 */
/* A dict template: base's items plus the fixed keys (values None), cloned
 * per request (a same-size clone is a memcpy; setting the fixed keys then
 * never resizes). Rebuilt when base is another dict or has changed. */
typedef struct {
    PyObject *base, *dict;
    uint64_t  version;
} tmpl_t;

static PyObject *tmpl_new(tmpl_t *t, PyObject *base, PyObject *const *fixed, size_t nfixed,
                          Py_ssize_t room, Py_ssize_t hint)
{
    if (!PyDict_CheckExact(base)) {
        PyObject *d = _PyDict_NewPresized(PyDict_GET_SIZE(base) + (Py_ssize_t)nfixed + hint);
        if (d != NULL && PyDict_Update(d, base) < 0) Py_CLEAR(d);
        return d;
    }
_Py_COMP_DIAG_PUSH
_Py_COMP_DIAG_IGNORE_DEPR_DECLS
    uint64_t version = ((PyDictObject *)base)->ma_version_tag;
_Py_COMP_DIAG_POP
    if (t->dict == NULL || base != t->base || version != t->version) {
        PyObject *d = _PyDict_NewPresized(PyDict_GET_SIZE(base) + (Py_ssize_t)nfixed + room);
        if (d == NULL) return NULL;
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        Py_hash_t hash;
        while (_PyDict_Next(base, &pos, &k, &v, &hash)) {
            if (!PyUnicode_CheckExact(k)) {  /* its __eq__ could run: no template */
                Py_DECREF(d);
                Py_CLEAR(t->dict);
                Py_CLEAR(t->base);
                d = _PyDict_NewPresized(PyDict_GET_SIZE(base) + (Py_ssize_t)nfixed + hint);
                if (d != NULL && PyDict_Update(d, base) < 0) Py_CLEAR(d);
                return d;
            }
            if (_PyDict_SetItem_KnownHash(d, k, v, hash) < 0) { Py_DECREF(d); return NULL; }
        }
        for (size_t i = 0; i < nfixed; i++)
            if (PyDict_SetItem(d, fixed[i], Py_None) < 0) { Py_DECREF(d); return NULL; }
        /* Building d ran no Python code (exact str keys, hashes known), so
         * base is still the version read above. */
        Py_XSETREF(t->dict, d);
        Py_XSETREF(t->base, Py_NewRef(base));
        t->version = version;
    }
    return PyDict_Copy(t->dict);
}

static tmpl_t env_tmpl;
/* Room for CONTENT_LENGTH, CONTENT_TYPE and headers. With a WSGI base of
 * ~10 keys this makes a 64-slot table: a bigger one costs more to clone
 * than the rare resize it saves. */
#define ENV_ROOM 16

static PyObject *env_new(PyObject *base, Py_ssize_t nh)   /* nh: headers, a hint */
{
    PyObject *const fixed[] = {
        K_REQUEST_METHOD, K_PATH_INFO, K_QUERY_STRING, K_RAW_URI, K_SERVER_NAME,
        K_SERVER_PORT, K_SERVER_PROTOCOL, K_REMOTE_ADDR, K_REMOTE_PORT, K_URL_SCHEME,
    };
    return tmpl_new(&env_tmpl, base, fixed, sizeof(fixed) / sizeof(fixed[0]), ENV_ROOM, 2 + nh);
}

static PyObject *gw_environ(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "environ(req, base)");
        return NULL;
    }
    PyObject *req = args[0], *base = args[1];
    if (!PyTuple_Check(req) || PyTuple_GET_SIZE(req) < 13) {
        PyErr_SetString(PyExc_TypeError, "environ(): req must be a REQUEST tuple from decode()");
        return NULL;
    }
    if (!PyDict_Check(base)) {
        PyErr_SetString(PyExc_TypeError, "environ(): base must be a dict");
        return NULL;
    }
    PyObject *method = PyTuple_GET_ITEM(req, 3), *target = PyTuple_GET_ITEM(req, 4),
             *path = PyTuple_GET_ITEM(req, 5), *query = PyTuple_GET_ITEM(req, 6),
             *minor = PyTuple_GET_ITEM(req, 7), *headers = PyTuple_GET_ITEM(req, 8),
             *peer = PyTuple_GET_ITEM(req, 9), *server = PyTuple_GET_ITEM(req, 10),
             *scheme = PyTuple_GET_ITEM(req, 11), *cl = PyTuple_GET_ITEM(req, 12);
    if (!PyBytes_Check(target) || !PyBytes_Check(path) || !PyBytes_Check(query)
        || !PyUnicode_Check(peer) || !PyUnicode_Check(server) || !PyLong_Check(cl)
        || !(PyList_Check(headers) || PyTuple_Check(headers))) {
        PyErr_SetString(PyExc_TypeError, "environ(): req must be a REQUEST tuple from decode()");
        return NULL;
    }
    int minor_true = PyObject_IsTrue(minor);
    if (minor_true < 0) return NULL;

    Py_ssize_t nh = PyList_Check(headers) ? PyList_GET_SIZE(headers) : PyTuple_GET_SIZE(headers);
    PyObject *env = env_new(base, nh);
    if (env == NULL) return NULL;
    PyObject *host = NULL, *port = NULL, *phost = NULL, *pport = NULL;
    if (addr_cached(server, &host, &port) < 0 || addr_cached(peer, &phost, &pport) < 0)
        goto fail;

    const char *pp = PyBytes_AS_STRING(path), *tp = PyBytes_AS_STRING(target);
    size_t pn = (size_t)PyBytes_GET_SIZE(path), tn = (size_t)PyBytes_GET_SIZE(target);
    int pct = memchr(pp, '%', pn) != NULL;
    PyObject *pi = pct ? path_info(pp, pn) : value_latin1(path);
    if (pi == NULL) goto fail;
    PyObject *raw = (!pct && tn == pn && memcmp(tp, pp, pn) == 0)
                    ? Py_NewRef(pi) : value_latin1(target);
    if (PyDict_SetItem(env, K_REQUEST_METHOD, method) < 0
        || set_new(env, K_PATH_INFO, pi) < 0
        || set_new(env, K_QUERY_STRING, value_latin1(query)) < 0
        || set_new(env, K_RAW_URI, raw) < 0)
        goto fail;
    if (PyDict_SetItem(env, K_SERVER_NAME,
                       PyUnicode_GET_LENGTH(host) ? host : S_localhost) < 0)
        goto fail;
    PyObject *sp = port;
    if (PyUnicode_GET_LENGTH(port) == 0) {
        int https = PyUnicode_Check(scheme) && str_same(scheme, S_https);
        if (!https && PyUnicode_Check(scheme) && !PyUnicode_CheckExact(scheme))
            https = PyUnicode_Compare(scheme, S_https) == 0;
        sp = https ? S_443 : S_80;
    }
    if (PyDict_SetItem(env, K_SERVER_PORT, sp) < 0
        || PyDict_SetItem(env, K_SERVER_PROTOCOL, minor_true ? S_http11 : S_http10) < 0
        || PyDict_SetItem(env, K_REMOTE_ADDR, phost) < 0
        || PyDict_SetItem(env, K_REMOTE_PORT, pport) < 0
        || PyDict_SetItem(env, K_URL_SCHEME, scheme) < 0)
        goto fail;
    int overflow;
    long long cv = PyLong_AsLongLongAndOverflow(cl, &overflow);
    if (cv == -1 && PyErr_Occurred()) goto fail;
    if (overflow > 0 || cv > 0) {
        if (set_new(env, K_CONTENT_LENGTH, PyObject_Str(cl)) < 0) goto fail;
    }
    Py_CLEAR(host);
    Py_CLEAR(port);
    Py_CLEAR(phost);
    Py_CLEAR(pport);

    /* Bounds re-read each time round: a non-ASCII name runs str.upper(),
     * and anything that allocates may run a finalizer. */
    for (Py_ssize_t i = 0;; i++) {
        PyObject *it;
        if (PyList_Check(headers)) {
            if (i >= PyList_GET_SIZE(headers)) break;
            it = PyList_GET_ITEM(headers, i);
        } else {
            if (i >= PyTuple_GET_SIZE(headers)) break;
            it = PyTuple_GET_ITEM(headers, i);
        }
        PyObject *n, *v;
        if (PyTuple_Check(it) && PyTuple_GET_SIZE(it) == 2) {
            n = PyTuple_GET_ITEM(it, 0);
            v = PyTuple_GET_ITEM(it, 1);
        } else if (PyList_Check(it) && PyList_GET_SIZE(it) == 2) {
            n = PyList_GET_ITEM(it, 0);
            v = PyList_GET_ITEM(it, 1);
        } else {
            PyErr_SetString(PyExc_TypeError, "environ(): headers must be (name, value) pairs");
            goto fail;
        }
        Py_INCREF(n);
        Py_INCREF(v);
        int rc = env_header(env, n, v);
        Py_DECREF(n);
        Py_DECREF(v);
        if (rc < 0) goto fail;
    }
    return env;

fail:
    Py_XDECREF(host);
    Py_XDECREF(port);
    Py_XDECREF(phost);
    Py_XDECREF(pport);
    Py_DECREF(env);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* asgi_headers                                                             */

static PyObject *lower_bytes(PyObject *name)
{
    const char *p = PyBytes_AS_STRING(name);
    Py_ssize_t n = PyBytes_GET_SIZE(name), i;
    for (i = 0; i < n; i++)
        if (p[i] >= 'A' && p[i] <= 'Z') break;
    if (i == n) {
        if (PyBytes_CheckExact(name)) return Py_NewRef(name);
        return PyBytes_FromStringAndSize(p, n);
    }
    PyObject *r = PyBytes_FromStringAndSize(NULL, n);
    if (r == NULL) return NULL;
    char *d = PyBytes_AS_STRING(r);
    for (i = 0; i < n; i++) d[i] = (p[i] >= 'A' && p[i] <= 'Z') ? (char)(p[i] + 32) : p[i];
    return r;
}

static PyObject *name_lower(PyObject *name)
{
    const char *p = PyBytes_AS_STRING(name);
    size_t n = (size_t)PyBytes_GET_SIZE(name);
    if (n == 0 || n > NC_MAX || !PyBytes_CheckExact(name)) return lower_bytes(name);
    uint32_t h = short_hash((const uint8_t *)p, n);
    nc_ent_t *e = nc_find_obj(name, p, n, h);
    if (e == NULL) e = nc_insert(name, h);
    if (e->lower == NULL && (e->lower = lower_bytes(name)) == NULL) return NULL;
    return Py_NewRef(e->lower);
}

static PyObject *gw_asgi_headers(PyObject *self, PyObject *headers)
{
    if (!PyList_Check(headers) && !PyTuple_Check(headers)) {
        PyErr_Format(PyExc_TypeError, "asgi_headers() needs a list, not %.100s",
                     Py_TYPE(headers)->tp_name);
        return NULL;
    }
    Py_ssize_t n = PyList_Check(headers) ? PyList_GET_SIZE(headers) : PyTuple_GET_SIZE(headers);
    PyObject *out = PyList_New(n);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *it, *nm, *v, *low;
        if (PyList_Check(headers)) {
            if (i >= PyList_GET_SIZE(headers)) {   /* shrunk by code run below */
                PyErr_SetString(PyExc_RuntimeError, "headers changed size during asgi_headers()");
                goto fail;
            }
            it = PyList_GET_ITEM(headers, i);
        } else {
            it = PyTuple_GET_ITEM(headers, i);
        }
        if (PyTuple_CheckExact(it) && PyTuple_GET_SIZE(it) == 2) {
            nm = Py_NewRef(PyTuple_GET_ITEM(it, 0));
            v = Py_NewRef(PyTuple_GET_ITEM(it, 1));
        } else {
            /* it is borrowed from a list that code run by iterating it
             * could change: hold it meanwhile. */
            Py_INCREF(it);
            PyObject *t = PySequence_Tuple(it);
            Py_DECREF(it);
            if (t == NULL) goto fail;
            if (PyTuple_GET_SIZE(t) != 2) {
                PyErr_Format(PyExc_ValueError, "header must be a (name, value) pair, got %zd items",
                             PyTuple_GET_SIZE(t));
                Py_DECREF(t);
                goto fail;
            }
            nm = Py_NewRef(PyTuple_GET_ITEM(t, 0));
            v = Py_NewRef(PyTuple_GET_ITEM(t, 1));
            Py_DECREF(t);
        }
        low = PyBytes_Check(nm) ? name_lower(nm) : PyObject_CallMethod(nm, "lower", NULL);
        Py_DECREF(nm);
        if (low == NULL) { Py_DECREF(v); goto fail; }
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) { Py_DECREF(low); Py_DECREF(v); goto fail; }
        PyTuple_SET_ITEM(pair, 0, low);
        PyTuple_SET_ITEM(pair, 1, v);
        PyList_SET_ITEM(out, i, pair);
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* asgi_scope                                                               */

static PyObject *K_http_version, *K_method, *K_scheme, *K_path, *K_raw_path,
                *K_query_string, *K_headers, *K_client, *K_server, *K_state,
                *K_extensions, *S_v11, *S_v10;
static tmpl_t scope_tmpl;

/* (host, int port or None) from split_addr's parts (borrowed). */
static PyObject *host_port_tuple(PyObject *host, PyObject *port)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(port), i = 0;
    if (PyUnicode_IS_ASCII(port))
        for (; i < n; i++)
            if ((unsigned)(PyUnicode_1BYTE_DATA(port)[i] - (unsigned)'0') > 9u) break;
    PyObject *pn = (n > 0 && i == n) ? PyLong_FromUnicodeObject(port, 10) : Py_NewRef(Py_None);
    if (pn == NULL) return NULL;
    PyObject *t = PyTuple_New(2);
    if (t == NULL) { Py_DECREF(pn); return NULL; }
    PyTuple_SET_ITEM(t, 0, Py_NewRef(host));
    PyTuple_SET_ITEM(t, 1, pn);
    return t;
}

/* "" and "unix" (a Unix socket) carry no address. */
static int no_addr(PyObject *s)
{
    return PyUnicode_GET_LENGTH(s) == 0 || PyUnicode_CompareWithASCIIString(s, "unix") == 0;
}

/* split_hostport: "host:port" / "[v6]:port" -> (host, int port or None);
 * "" and "unix" -> None. The tuple is immutable, so the cache shares it. */
static PyObject *host_port_cached(PyObject *s)
{
    if (!PyUnicode_CheckExact(s)) {
        if (no_addr(s)) return Py_NewRef(Py_None);
        PyObject *host, *port;
        if (split_addr(s, &host, &port) < 0) return NULL;
        PyObject *t = host_port_tuple(host, port);
        Py_DECREF(host);
        Py_DECREF(port);
        return t;
    }
    ac_ent_t *e = addr_entry(s);    /* the answer, None included, is cached */
    if (e == NULL) return NULL;
    if (e->tup == NULL
        && (e->tup = no_addr(s) ? Py_NewRef(Py_None) : host_port_tuple(e->host, e->port)) == NULL)
        return NULL;
    return Py_NewRef(e->tup);
}

/* unquote_to_bytes(path).decode("utf-8", "replace") */
static PyObject *asgi_path(PyObject *path)
{
    const char *p = PyBytes_AS_STRING(path);
    size_t n = (size_t)PyBytes_GET_SIZE(path);
    int pct = memchr(p, '%', n) != NULL;
    if (!pct && is_ascii((const uint8_t *)p, n)) return value_latin1(path);
    if (!pct) return PyUnicode_DecodeUTF8(p, (Py_ssize_t)n, "replace");
    char small[512], *d = n <= sizeof(small) ? small : PyMem_Malloc(n);
    if (d == NULL) return PyErr_NoMemory();
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (pct_at(p, n, i)) {
            d[o++] = (char)(hexval((uint8_t)p[i + 1]) << 4 | hexval((uint8_t)p[i + 2]));
            i += 2;
        } else {
            d[o++] = p[i];
        }
    }
    PyObject *s = PyUnicode_DecodeUTF8(d, (Py_ssize_t)o, "replace");
    if (d != small) PyMem_Free(d);
    return s;
}

static PyObject *gw_asgi_scope(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "asgi_scope(req, base, state)");
        return NULL;
    }
    PyObject *req = args[0], *base = args[1], *state = args[2];
    if (!PyTuple_Check(req) || PyTuple_GET_SIZE(req) < 13) {
        PyErr_SetString(PyExc_TypeError, "asgi_scope(): req must be a REQUEST tuple from decode()");
        return NULL;
    }
    if (!PyDict_Check(base) || !PyDict_Check(state)) {
        PyErr_SetString(PyExc_TypeError, "asgi_scope(): base and state must be dicts");
        return NULL;
    }
    PyObject *method = PyTuple_GET_ITEM(req, 3), *path = PyTuple_GET_ITEM(req, 5),
             *query = PyTuple_GET_ITEM(req, 6), *minor = PyTuple_GET_ITEM(req, 7),
             *headers = PyTuple_GET_ITEM(req, 8), *peer = PyTuple_GET_ITEM(req, 9),
             *server = PyTuple_GET_ITEM(req, 10), *scheme = PyTuple_GET_ITEM(req, 11);
    if (!PyBytes_Check(path) || !PyBytes_Check(query) || !PyUnicode_Check(peer)
        || !PyUnicode_Check(server)) {
        PyErr_SetString(PyExc_TypeError, "asgi_scope(): req must be a REQUEST tuple from decode()");
        return NULL;
    }
    int minor_true = PyObject_IsTrue(minor);
    if (minor_true < 0) return NULL;
    PyObject *const fixed[] = {
        K_http_version, K_method, K_scheme, K_path, K_raw_path, K_query_string,
        K_headers, K_client, K_server, K_state, K_extensions,
    };
    PyObject *sc = tmpl_new(&scope_tmpl, base, fixed, sizeof(fixed) / sizeof(fixed[0]), 0, 0);
    if (sc == NULL) return NULL;
    if (PyDict_SetItem(sc, K_http_version, minor_true ? S_v11 : S_v10) < 0
        || PyDict_SetItem(sc, K_method, method) < 0
        || PyDict_SetItem(sc, K_scheme, scheme) < 0
        || set_new(sc, K_path, asgi_path(path)) < 0
        || PyDict_SetItem(sc, K_raw_path, path) < 0
        || PyDict_SetItem(sc, K_query_string, query) < 0
        || set_new(sc, K_headers, gw_asgi_headers(NULL, headers)) < 0
        || set_new(sc, K_client, host_port_cached(peer)) < 0
        || set_new(sc, K_server, host_port_cached(server)) < 0
        || set_new(sc, K_state, PyDict_Copy(state)) < 0
        || set_new(sc, K_extensions, PyDict_New()) < 0) {
        Py_DECREF(sc);
        return NULL;
    }
    return sc;
}

/* ------------------------------------------------------------------------ */
/* Encoders                                                                 */

static gwp_buf_t g_out;     /* scratch for the small frames */

static int get_u32(PyObject *o, const char *what, uint32_t *v)
{
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", what, Py_TYPE(o)->tp_name);
        return -1;
    }
    unsigned long long x = PyLong_AsUnsignedLongLong(o);
    if (x == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    if (x > 0xFFFFFFFFull) {
        PyErr_Format(PyExc_OverflowError, "%s out of range 0..2**32-1", what);
        return -1;
    }
    *v = (uint32_t)x;
    return 0;
}

static int get_u64(PyObject *o, const char *what, uint64_t *v)
{
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", what, Py_TYPE(o)->tp_name);
        return -1;
    }
    unsigned long long x = PyLong_AsUnsignedLongLong(o);
    if (x == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    *v = x;
    return 0;
}

static int get_sid(PyObject *o, uint32_t *sid)
{
    if (get_u32(o, "stream id", sid) < 0) return -1;
    if (*sid == 0) {
        PyErr_SetString(PyExc_ValueError, "stream id 0 on a stream message");
        return -1;
    }
    return 0;
}

static PyObject *enc_error(int rc)
{
    if (rc == -ENOMEM) return PyErr_NoMemory();
    if (rc == -EMSGSIZE) PyErr_SetString(PyExc_ValueError, "payload exceeds the cap (1 MiB) or more than 1024 headers");
    else PyErr_SetString(PyExc_ValueError, "value outside the range the protocol allows");
    return NULL;
}

/* Take the frame gwp just appended to g_out as a bytes object. */
static PyObject *take_out(int rc)
{
    if (rc != 0) { gwp_buf_consume(&g_out, g_out.len); return enc_error(rc); }
    PyObject *r = PyBytes_FromStringAndSize((const char *)g_out.data, (Py_ssize_t)g_out.len);
    gwp_buf_consume(&g_out, g_out.len);
    return r;
}

static inline size_t bin_size(size_t n)
{
    return n + (n <= 0xff ? 2 : n <= 0xffff ? 3 : 5);
}

static inline size_t uint_size(uint64_t v)
{
    return v < 0x80 ? 1 : v <= 0xff ? 2 : v <= 0xffff ? 3 : v <= 0xffffffffu ? 5 : 9;
}

/* A header item -> pointer + length, keeping the object that owns the bytes
 * in *own (a new reference): bytes and latin-1 str as they are, bytearray
 * copied, anything else through bytes() (which may run Python code). */
static int hdr_part(PyObject *o, gwp_str_t *s, PyObject **own)
{
    if (PyBytes_Check(o)) {
        *own = Py_NewRef(o);
    } else if (PyUnicode_Check(o)) {
        if (PyUnicode_READY(o) < 0) return -1;
        if (PyUnicode_KIND(o) == PyUnicode_1BYTE_KIND) {
            *own = Py_NewRef(o);   /* 1-byte kind: the data IS the latin-1 */
            s->ptr = (const char *)PyUnicode_1BYTE_DATA(o);
            s->len = (size_t)PyUnicode_GET_LENGTH(o);
            return 0;
        }
        if ((*own = PyUnicode_AsLatin1String(o)) == NULL) return -1;   /* raises */
    } else if (PyByteArray_Check(o)) {
        if ((*own = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(o),
                                              PyByteArray_GET_SIZE(o))) == NULL) return -1;
    } else if (PyLong_Check(o)) {     /* bytes(5) would be five NULs */
        PyErr_Format(PyExc_TypeError, "header name or value must be bytes or str, not %.100s",
                     Py_TYPE(o)->tp_name);
        return -1;
    } else {          /* bytes(o), as the reference does: __bytes__, buffers, ... */
        if ((*own = PyObject_CallOneArg((PyObject *)&PyBytes_Type, o)) == NULL) return -1;
    }
    s->ptr = PyBytes_AS_STRING(*own);
    s->len = (size_t)PyBytes_GET_SIZE(*own);
    return 0;
}

#define HSTACK 32

/* The master would refuse the field (gwp_header_valid): raise here instead,
 * while the app can still see it (PEP 3333: errors in headers are raised to
 * the app), rather than have the client get a 502. Same text as _proto. */
static void header_invalid(const gwp_header_t *h)
{
    PyObject *n = PyBytes_FromStringAndSize(h->name.ptr, (Py_ssize_t)h->name.len);
    if (n == NULL) return;
    gwp_header_t name_only = { h->name, { "", 0 } };
    if (!gwp_header_valid(&name_only))
        PyErr_Format(PyExc_ValueError, "invalid response header name %R: not an RFC 9110 token", n);
    else
        PyErr_Format(PyExc_ValueError, "invalid response header %R: control byte in its value", n);
    Py_DECREF(n);
}

static PyObject *encode_response(uint32_t sid, uint32_t status, PyObject *headers, PyObject *body,
                                 int end);

static PyObject *gw_response(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "response(sid, status, headers, body, end)");
        return NULL;
    }
    uint32_t sid, status;
    if (get_sid(args[0], &sid) < 0 || get_u32(args[1], "status", &status) < 0) return NULL;
    int end = PyObject_IsTrue(args[4]);
    if (end < 0) return NULL;
    return encode_response(sid, status, args[2], args[3], end);
}

/* One RESPONSE frame (the work of response(); also the ASGI stream's
 * one-frame send). */
static PyObject *encode_response(uint32_t sid, uint32_t status, PyObject *headers, PyObject *body,
                                 int end)
{
    if (status < 100 || status > 999) {
        PyErr_Format(PyExc_ValueError, "status %u out of range 100..999", status);
        return NULL;
    }
    PyObject *hlist = NULL;
    if (!PyList_Check(headers) && !PyTuple_Check(headers)) {
        /* Any iterable of pairs, like the reference's comprehension. */
        if ((hlist = PySequence_List(headers)) == NULL) return NULL;
        headers = hlist;
    }
    Py_ssize_t nh = PyList_Check(headers) ? PyList_GET_SIZE(headers) : PyTuple_GET_SIZE(headers);
    if (nh > GWP_MAX_HEADERS) { Py_XDECREF(hlist); return enc_error(-EMSGSIZE); }

    gwp_header_t hstack[HSTACK], *hs = hstack;
    PyObject *ostack[2 * HSTACK], **own = ostack;
    Py_ssize_t nown = 0;
    PyObject *res = NULL;
    Py_buffer bv;
    int have_bv = 0;
    if (nh > HSTACK) {
        hs = PyMem_Malloc((size_t)nh * sizeof(*hs));
        own = PyMem_Malloc((size_t)nh * 2 * sizeof(*own));
        if (hs == NULL || own == NULL) { PyErr_NoMemory(); goto done; }
    }
    Py_ssize_t i;
    for (i = 0; i < nh; i++) {
        /* Size re-read: converting an item may run Python code. */
        Py_ssize_t cur = PyList_Check(headers) ? PyList_GET_SIZE(headers) : PyTuple_GET_SIZE(headers);
        if (i >= cur) break;
        PyObject *it = PyList_Check(headers) ? PyList_GET_ITEM(headers, i) : PyTuple_GET_ITEM(headers, i);
        PyObject *n, *v;
        Py_INCREF(it);
        if ((PyTuple_CheckExact(it) && PyTuple_GET_SIZE(it) == 2)) {
            n = Py_NewRef(PyTuple_GET_ITEM(it, 0));
            v = Py_NewRef(PyTuple_GET_ITEM(it, 1));
            Py_DECREF(it);
        } else {
            PyObject *t = PySequence_Tuple(it);
            Py_DECREF(it);
            if (t == NULL) goto done;
            if (PyTuple_GET_SIZE(t) != 2) {
                PyErr_Format(PyExc_ValueError, "header must be a (name, value) pair, got %zd items",
                             PyTuple_GET_SIZE(t));
                Py_DECREF(t);
                goto done;
            }
            n = Py_NewRef(PyTuple_GET_ITEM(t, 0));
            v = Py_NewRef(PyTuple_GET_ITEM(t, 1));
            Py_DECREF(t);
        }
        int rc = hdr_part(n, &hs[i].name, &own[nown]);
        Py_DECREF(n);
        if (rc < 0) { Py_DECREF(v); goto done; }
        nown++;
        rc = hdr_part(v, &hs[i].value, &own[nown]);
        Py_DECREF(v);
        if (rc < 0) goto done;
        nown++;
        if (!gwp_header_valid(&hs[i])) { header_invalid(&hs[i]); goto done; }
    }
    nh = i;

    gwp_response_t m;
    m.status = status;
    m.headers = hs;
    m.nheaders = (uint32_t)nh;
    m.body.ptr = "";
    m.body.len = 0;
    m.has_body = 0;
    if (body != Py_None) {
        /* The ref sends the body key only when `if body:` is true; for the
         * buffer types that means non-empty. */
        if (PyObject_GetBuffer(body, &bv, PyBUF_SIMPLE) < 0) goto done;
        have_bv = 1;
        m.body.ptr = bv.buf;
        m.body.len = (size_t)bv.len;
    }

    size_t hsz = nh <= 15 ? 1 : 3;
    for (i = 0; i < nh; i++)
        hsz += 1 + bin_size(hs[i].name.len) + bin_size(hs[i].value.len);
    size_t total = GWP_HEADER_SIZE + 1 + sizeof("status") + uint_size(status)
        + sizeof("headers") + hsz + (m.body.len ? sizeof("body") + bin_size(m.body.len) : 0);
    if (total - GWP_HEADER_SIZE > GWP_MAX_PAYLOAD) { enc_error(-EMSGSIZE); goto done; }
    {
        res = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
        if (res == NULL) goto done;
        gwp_buf_t b = { (uint8_t *)PyBytes_AS_STRING(res), 0, total };
        int rc = gwp_encode_response(&b, sid, end ? GWP_F_END : 0, &m);
        if (rc != 0 || b.len != total) {
            Py_CLEAR(res);
            if (rc != 0) enc_error(rc);
            else PyErr_SetString(PyExc_SystemError, "_gwfast: RESPONSE size mismatch");
        }
    }
done:
    if (have_bv) PyBuffer_Release(&bv);
    for (i = 0; i < nown; i++) Py_DECREF(own[i]);
    Py_XDECREF(hlist);
    if (hs != hstack) PyMem_Free(hs);
    if (own != ostack) PyMem_Free(own);
    return res;
}

static PyObject *gw_data_frame(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "data_frame(type, sid, data, end)");
        return NULL;
    }
    uint32_t type, sid;
    if (get_u32(args[0], "type", &type) < 0) return NULL;
    if (type != GWP_MSG_BODY && type != GWP_MSG_RESP_BODY) {
        PyErr_Format(PyExc_ValueError, "data_frame type must be 4 (BODY) or 6 (RESP_BODY), not %u", type);
        return NULL;
    }
    if (get_sid(args[1], &sid) < 0) return NULL;
    int end = PyObject_IsTrue(args[3]);
    if (end < 0) return NULL;
    Py_buffer bv;
    if (PyObject_GetBuffer(args[2], &bv, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *res = NULL;
    size_t total = GWP_HEADER_SIZE + 1 + sizeof("data") + bin_size((size_t)bv.len);
    if (total - GWP_HEADER_SIZE > GWP_MAX_PAYLOAD) {
        enc_error(-EMSGSIZE);
    } else if ((res = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total)) != NULL) {
        gwp_buf_t b = { (uint8_t *)PyBytes_AS_STRING(res), 0, total };
        int rc = gwp_encode_data(&b, (gwp_type_t)type, sid, end ? GWP_F_END : 0, bv.buf, (size_t)bv.len);
        if (rc != 0 || b.len != total) {
            Py_CLEAR(res);
            if (rc != 0) enc_error(rc);
            else PyErr_SetString(PyExc_SystemError, "_gwfast: data frame size mismatch");
        }
    }
    PyBuffer_Release(&bv);
    return res;
}

static PyObject *gw_window(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint32_t sid, n;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "window(sid, n)");
        return NULL;
    }
    if (get_sid(args[0], &sid) < 0 || get_u32(args[1], "window bytes", &n) < 0) return NULL;
    return take_out(gwp_encode_window(&g_out, sid, n));
}

static PyObject *gw_cancel(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint32_t sid;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "cancel(sid, reason)");
        return NULL;
    }
    if (get_sid(args[0], &sid) < 0) return NULL;
    if (!PyUnicode_Check(args[1])) {
        PyErr_Format(PyExc_TypeError, "reason must be str, not %.100s", Py_TYPE(args[1])->tp_name);
        return NULL;
    }
    Py_ssize_t n;
    const char *r = PyUnicode_AsUTF8AndSize(args[1], &n);
    if (r == NULL) return NULL;
    if ((size_t)n != strlen(r)) {   /* gwp_encode_cancel takes a C string */
        PyErr_SetString(PyExc_ValueError, "cancel reason contains a NUL character");
        return NULL;
    }
    return take_out(gwp_encode_cancel(&g_out, sid, r));
}

static PyObject *gw_heartbeat(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "heartbeat(served, inflight, tasks, rss, loop)");
        return NULL;
    }
    gwp_heartbeat_t m;
    if (get_u64(args[0], "served", &m.served) < 0 || get_u32(args[1], "inflight", &m.inflight) < 0
        || get_u32(args[2], "tasks", &m.tasks) < 0 || get_u64(args[3], "rss", &m.rss) < 0)
        return NULL;
    if (!PyUnicode_Check(args[4])) {
        PyErr_Format(PyExc_TypeError, "loop must be str, not %.100s", Py_TYPE(args[4])->tp_name);
        return NULL;
    }
    Py_ssize_t n;
    const char *l = PyUnicode_AsUTF8AndSize(args[4], &n);
    if (l == NULL) return NULL;
    m.loop.ptr = l;
    m.loop.len = (size_t)n;
    return take_out(gwp_encode_heartbeat(&g_out, &m));
}

/* ------------------------------------------------------------------------ */
/* ASGI stream                                                              */
/*
 * StreamBase holds an ASGI request's state as C fields (the attributes the
 * runtime and StreamFrames read and write) and does send()'s common case in
 * C: http.response.start with an int status, then one http.response.body
 * whose bytes fit the credit and one frame. That send completes at once, so
 * it returns an already-finished awaitable instead of a coroutine. Anything
 * else (a second start, streaming, flow control, errors) goes to the
 * subclass's send_slow(message), the full behaviour (_asgi.AStream); the
 * pure-Python twin in _proto.py sends everything there.
 */

typedef struct {
    PyObject_HEAD
    PyObject *w, *req, *body, *headers, *waiter, *task;
    long long sid, buffered, credit, unreturned, sent_bytes, limit;
    int status;
    char req_ended, body_done, cancelled, started, head_sent, done;
} StreamObject;

static PyObject *K_type, *K_status, *K_body, *K_more_body, *S_resp_start, *S_resp_body,
                *A_streams, *A_served, *A_put, *A_send_slow, *A_done, *A_set_result;
static PyObject *g_deque;       /* collections.deque, imported on first use */
static PyObject *g_ready;       /* the finished awaitable send() returns */
static PyObject *S_emptyb;      /* b"" */

/* The finished awaitable: `await` on it returns None at once. */
static PyObject *ready_await(PyObject *self) { return Py_NewRef(self); }
static PyObject *ready_next(PyObject *self) { return NULL; }   /* StopIteration(None) */
static PyObject *ready_send(PyObject *self, PyObject *v)
{
    PyErr_SetNone(PyExc_StopIteration);
    return NULL;
}
static PyObject *ready_throw(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw(type[, value[, tb]])");
        return NULL;
    }
    PyObject *typ = args[0], *val = nargs > 1 ? args[1] : Py_None;
    if (PyExceptionInstance_Check(typ)) PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
    else PyErr_SetObject(typ, val);
    return NULL;
}
static PyObject *ready_close(PyObject *self, PyObject *unused) { Py_RETURN_NONE; }

static PyMethodDef ready_methods[] = {
    {"send", (PyCFunction)ready_send, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))ready_throw, METH_FASTCALL, NULL},
    {"close", (PyCFunction)ready_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};
static PyAsyncMethods ready_async = { ready_await, NULL, NULL, NULL };
static PyTypeObject ReadyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_gwfast.Ready",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An awaitable that is already finished (its result is None).",
    .tp_as_async = &ready_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = ready_next,
    .tp_methods = ready_methods,
};

static PyObject *stream_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    PyObject *w, *sid, *req, *ended, *credit, *limit;
    if (kw != NULL && PyDict_GET_SIZE(kw) != 0) {
        PyErr_SetString(PyExc_TypeError, "StreamBase takes positional arguments only");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "StreamBase", 6, 6, &w, &sid, &req, &ended, &credit, &limit))
        return NULL;
    long long s = PyLong_AsLongLong(sid), c, l;
    if (s == -1 && PyErr_Occurred()) return NULL;
    if ((c = PyLong_AsLongLong(credit)) == -1 && PyErr_Occurred()) return NULL;
    if ((l = PyLong_AsLongLong(limit)) == -1 && PyErr_Occurred()) return NULL;
    int e = PyObject_IsTrue(ended);
    if (e < 0) return NULL;
    PyObject *body;
    if (e) {
        body = PyTuple_New(0);      /* no body coming: never filled */
    } else {
        if (g_deque == NULL) {
            PyObject *mod = PyImport_ImportModule("collections");
            if (mod == NULL) return NULL;
            g_deque = PyObject_GetAttrString(mod, "deque");
            Py_DECREF(mod);
            if (g_deque == NULL) return NULL;
        }
        body = PyObject_CallNoArgs(g_deque);
    }
    if (body == NULL) return NULL;
    StreamObject *st = (StreamObject *)type->tp_alloc(type, 0);
    if (st == NULL) { Py_DECREF(body); return NULL; }
    st->w = Py_NewRef(w);
    st->req = Py_NewRef(req);
    st->body = body;
    st->sid = s;
    st->credit = c;
    st->limit = l;
    st->req_ended = (char)e;
    return (PyObject *)st;
}

static int stream_traverse(StreamObject *st, visitproc visit, void *arg)
{
    Py_VISIT(st->w);
    Py_VISIT(st->req);
    Py_VISIT(st->body);
    Py_VISIT(st->headers);
    Py_VISIT(st->waiter);
    Py_VISIT(st->task);
    return 0;
}

static int stream_clear(StreamObject *st)
{
    Py_CLEAR(st->w);
    Py_CLEAR(st->req);
    Py_CLEAR(st->body);
    Py_CLEAR(st->headers);
    Py_CLEAR(st->waiter);
    Py_CLEAR(st->task);
    return 0;
}

static void stream_dealloc(StreamObject *st)
{
    PyObject_GC_UnTrack(st);
    stream_clear(st);
    Py_TYPE(st)->tp_free((PyObject *)st);
}

/* wake(): resolve the future a waiting receive()/send() sleeps on. */
static int stream_wake_(StreamObject *st)
{
    PyObject *f = st->waiter;
    if (f == NULL || f == Py_None) return 0;
    st->waiter = NULL;
    PyObject *r = PyObject_CallMethodNoArgs(f, A_done);
    int done = r == NULL ? -1 : PyObject_IsTrue(r);
    Py_XDECREF(r);
    if (done == 0) {
        r = PyObject_CallMethodOneArg(f, A_set_result, Py_None);
        done = r == NULL ? -1 : 0;
        Py_XDECREF(r);
    }
    Py_DECREF(f);
    return done < 0 ? -1 : 0;
}

/* finish(): the response direction is complete; the stream leaves the
 * worker's table (w.streams) and counts as served if it was still there. */
static int stream_finish_(StreamObject *st)
{
    st->done = 1;
    PyObject *streams = PyObject_GetAttr(st->w, A_streams);
    if (streams == NULL) return -1;
    PyObject *key = PyDict_Check(streams) ? PyLong_FromLongLong(st->sid) : NULL;
    int found = -1;
    if (key != NULL) {
        PyObject *v = PyDict_GetItemWithError(streams, key);
        if (v != NULL) found = PyDict_DelItem(streams, key) < 0 ? -1 : 1;
        else found = PyErr_Occurred() ? -1 : 0;
        Py_DECREF(key);
    } else if (!PyErr_Occurred()) {
        PyErr_SetString(PyExc_TypeError, "StreamBase: w.streams must be a dict");
    }
    Py_DECREF(streams);
    if (found < 0) return -1;
    if (found) {
        PyObject *n = PyObject_GetAttr(st->w, A_served), *n1 = NULL;
        if (n != NULL) n1 = PyNumber_Add(n, I_type[1]);
        Py_XDECREF(n);
        if (n1 == NULL) return -1;
        int rc = PyObject_SetAttr(st->w, A_served, n1);
        Py_DECREF(n1);
        if (rc < 0) return -1;
    }
    return stream_wake_(st);
}

static PyObject *stream_finish(StreamObject *st, PyObject *unused)
{
    if (stream_finish_(st) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *stream_wake(StreamObject *st, PyObject *unused)
{
    if (stream_wake_(st) < 0) return NULL;
    Py_RETURN_NONE;
}

static inline int str_is(PyObject *a, PyObject *b)   /* b: an interned ASCII constant */
{
    if (a == b) return 1;
    if (!PyUnicode_CheckExact(a) || PyUnicode_READY(a) < 0) return 0;
    return PyUnicode_KIND(a) == PyUnicode_1BYTE_KIND && PyUnicode_GET_LENGTH(a) == PyUnicode_GET_LENGTH(b)
        && memcmp(PyUnicode_1BYTE_DATA(a), PyUnicode_1BYTE_DATA(b), (size_t)PyUnicode_GET_LENGTH(b)) == 0;
}

/* send(message): the common case here, everything else in send_slow(). */
static PyObject *stream_send(StreamObject *st, PyObject *msg)
{
    if (!PyDict_CheckExact(msg) || st->done) goto slow;
    PyObject *t = PyDict_GetItemWithError(msg, K_type);
    if (t == NULL) { if (PyErr_Occurred()) return NULL; goto slow; }
    if (!st->started && str_is(t, S_resp_start)) {
        PyObject *status = PyDict_GetItemWithError(msg, K_status);
        if (status == NULL || !PyLong_Check(status)) { if (PyErr_Occurred()) return NULL; goto slow; }
        int overflow;
        long v = PyLong_AsLongAndOverflow(status, &overflow);
        if (overflow || v < 100 || v > 999) goto slow;     /* which raises */
        PyObject *h = PyDict_GetItemWithError(msg, K_headers);
        if (h == NULL && PyErr_Occurred()) return NULL;
        int truth = h == NULL ? 0 : PyObject_IsTrue(h);
        if (truth < 0) return NULL;
        PyObject *hv = truth ? Py_NewRef(h) : PyList_New(0);   /* the ref's `or []` */
        if (hv == NULL) return NULL;
        st->started = 1;
        st->status = (int)v;
        Py_XSETREF(st->headers, hv);
        return Py_NewRef(g_ready);
    }
    if (st->started && !st->head_sent && str_is(t, S_resp_body)) {
        PyObject *body = PyDict_GetItemWithError(msg, K_body);
        if (body == NULL) {
            if (PyErr_Occurred()) return NULL;
            body = S_emptyb;
        }
        if (!PyBytes_CheckExact(body)) goto slow;
        PyObject *more = PyDict_GetItemWithError(msg, K_more_body);
        if (more == NULL && PyErr_Occurred()) return NULL;
        int truth = more == NULL ? 0 : PyObject_IsTrue(more);
        if (truth < 0) return NULL;
        long long n = PyBytes_GET_SIZE(body);
        if (truth || n > st->credit || n > st->limit) goto slow;
        /* The frame first: if the headers do not encode, nothing changed
         * and the error reaches the app (then a 500). */
        PyObject *frame = encode_response((uint32_t)st->sid, (uint32_t)st->status,
                                          st->headers ? st->headers : Py_None, body, 1);
        if (frame == NULL) return NULL;
        st->head_sent = 1;
        st->credit -= n;
        st->sent_bytes = n;
        PyObject *r = NULL;
        if (stream_finish_(st) == 0) r = PyObject_CallMethodOneArg(st->w, A_put, frame);
        Py_DECREF(frame);
        if (r == NULL) return NULL;
        Py_DECREF(r);
        return Py_NewRef(g_ready);
    }
slow:
    return PyObject_CallMethodOneArg((PyObject *)st, A_send_slow, msg);
}

/* step(coro, ctx, loop, task): run coroutine coro up to its first suspension
 * or its end, in context ctx, with task as the loop's current task (what
 * asyncio.current_task() returns meanwhile). Returns FINISHED when it ran to
 * the end (its return value is dropped), else what it yielded (the future it
 * waits on); its exception propagates. The ASGI worker starts a request
 * this way, so one that never waits costs no Task of its own. */
static PyObject *g_enter_task, *g_leave_task;
static PyObject *g_finished;    /* step()'s "ran to the end" */

static PyObject *gw_step(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "step(coro, ctx, loop, task)");
        return NULL;
    }
    PyObject *coro = args[0], *ctx = args[1];
    if (!PyContext_CheckExact(ctx)) {
        PyErr_SetString(PyExc_TypeError, "step: ctx must be a contextvars.Context");
        return NULL;
    }
    if (g_enter_task == NULL) {
        PyObject *mod = PyImport_ImportModule("asyncio.tasks");
        if (mod == NULL) return NULL;
        g_enter_task = PyObject_GetAttrString(mod, "_enter_task");
        g_leave_task = g_enter_task ? PyObject_GetAttrString(mod, "_leave_task") : NULL;
        Py_DECREF(mod);
        if (g_leave_task == NULL) { Py_CLEAR(g_enter_task); return NULL; }
    }
    PyObject *r = PyObject_Vectorcall(g_enter_task, args + 2, 2, NULL);
    if (r == NULL) return NULL;
    Py_DECREF(r);
    PyObject *res = NULL;
    PySendResult sr = PYGEN_ERROR;
    if (PyContext_Enter(ctx) == 0) {
        sr = PyIter_Send(coro, Py_None, &res);
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        if (PyContext_Exit(ctx) < 0) { Py_XDECREF(et); Py_XDECREF(ev); Py_XDECREF(tb); Py_CLEAR(res); sr = PYGEN_ERROR; }
        else PyErr_Restore(et, ev, tb);
    }
    /* _leave_task, with the coroutine's exception (if any) kept aside */
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    r = PyObject_Vectorcall(g_leave_task, args + 2, 2, NULL);
    if (r == NULL) {
        Py_XDECREF(et); Py_XDECREF(ev); Py_XDECREF(tb);
        Py_XDECREF(res);
        return NULL;
    }
    Py_DECREF(r);
    PyErr_Restore(et, ev, tb);
    if (sr == PYGEN_ERROR) return NULL;
    if (sr == PYGEN_RETURN) {
        Py_DECREF(res);
        return Py_NewRef(g_finished);
    }
    return res;
}

static PyMethodDef stream_methods[] = {
    {"send", (PyCFunction)stream_send, METH_O,
     "send(message) -> awaitable: the ASGI send (its common case in C, else send_slow)."},
    {"finish", (PyCFunction)stream_finish, METH_NOARGS,
     "finish(): the response is complete; leave w.streams (counted in w.served), wake."},
    {"wake", (PyCFunction)stream_wake, METH_NOARGS,
     "wake(): resolve the waiter future, if any."},
    {NULL, NULL, 0, NULL},
};

#define SM(name, type, field, flags) {name, type, offsetof(StreamObject, field), flags, NULL}
static PyMemberDef stream_members[] = {
    SM("w", T_OBJECT, w, READONLY), SM("sid", T_LONGLONG, sid, READONLY),
    SM("req", T_OBJECT, req, 0), SM("body", T_OBJECT, body, 0),
    SM("headers", T_OBJECT, headers, 0), SM("waiter", T_OBJECT, waiter, 0),
    SM("task", T_OBJECT, task, 0), SM("buffered", T_LONGLONG, buffered, 0),
    SM("credit", T_LONGLONG, credit, 0), SM("unreturned", T_LONGLONG, unreturned, 0),
    SM("sent_bytes", T_LONGLONG, sent_bytes, 0), SM("limit", T_LONGLONG, limit, READONLY),
    SM("status", T_INT, status, 0), SM("req_ended", T_BOOL, req_ended, 0),
    SM("body_done", T_BOOL, body_done, 0), SM("cancelled", T_BOOL, cancelled, 0),
    SM("started", T_BOOL, started, 0), SM("head_sent", T_BOOL, head_sent, 0),
    SM("done", T_BOOL, done, 0),
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject StreamType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_gwfast.StreamBase",
    .tp_basicsize = sizeof(StreamObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "StreamBase(w, sid, req, ended, credit, limit): an ASGI stream's state; send()'s\n"
              "common case in C, the rest in the subclass's send_slow(message).",
    .tp_new = stream_new,
    .tp_dealloc = (destructor)stream_dealloc,
    .tp_traverse = (traverseproc)stream_traverse,
    .tp_clear = (inquiry)stream_clear,
    .tp_methods = stream_methods,
    .tp_members = stream_members,
};

/* ------------------------------------------------------------------------ */
/* Module                                                                   */

static PyMethodDef gw_methods[] = {
    {"decode", (PyCFunction)(void (*)(void))gw_decode, METH_FASTCALL,
     "decode(buf: bytearray, on_malformed_cls=ValueError) -> list of frame tuples.\n"
     "Consumes the whole frames at the start of buf; all or nothing: on a\n"
     "malformed frame raises on_malformed_cls(message) and leaves buf as it was."},
    {"environ", (PyCFunction)(void (*)(void))gw_environ, METH_FASTCALL,
     "environ(req, base) -> base.copy() plus the PEP 3333 CGI keys of REQUEST tuple req."},
    {"asgi_headers", (PyCFunction)gw_asgi_headers, METH_O,
     "asgi_headers(headers) -> [(name.lower(), value), ...]"},
    {"asgi_scope", (PyCFunction)(void (*)(void))gw_asgi_scope, METH_FASTCALL,
     "asgi_scope(req, base, state) -> base.copy() plus the ASGI http scope keys of REQUEST\n"
     "tuple req; scope['state'] is a shallow copy of state."},
    {"response", (PyCFunction)(void (*)(void))gw_response, METH_FASTCALL,
     "response(sid, status, headers, body, end) -> bytes: one RESPONSE frame."},
    {"data_frame", (PyCFunction)(void (*)(void))gw_data_frame, METH_FASTCALL,
     "data_frame(type, sid, data, end) -> bytes: one BODY (4) or RESP_BODY (6) frame."},
    {"window", (PyCFunction)(void (*)(void))gw_window, METH_FASTCALL,
     "window(sid, n) -> bytes: one WINDOW frame."},
    {"cancel", (PyCFunction)(void (*)(void))gw_cancel, METH_FASTCALL,
     "cancel(sid, reason) -> bytes: one CANCEL frame."},
    {"heartbeat", (PyCFunction)(void (*)(void))gw_heartbeat, METH_FASTCALL,
     "heartbeat(served, inflight, tasks, rss, loop) -> bytes: one HEARTBEAT frame."},
    {"step", (PyCFunction)(void (*)(void))gw_step, METH_FASTCALL,
     "step(coro, ctx, loop, task) -> FINISHED or what coro yielded: coro run to its first\n"
     "suspension in context ctx with task as the loop's current task."},
    {NULL, NULL, 0, NULL},
};

static void gw_free(void *unused)
{
    for (int i = 0; i < NC_SIZE; i++) nc_clear(&ncache[i]);
    for (int i = 0; i < TC_SIZE; i++) Py_CLEAR(tcache[i].s);
    for (int i = 0; i < VC_SIZE; i++) {
        Py_CLEAR(vcache[i].b);
        Py_CLEAR(vcache[i].s);
        Py_CLEAR(vcache[i].pair);
    }
    Py_CLEAR(env_tmpl.base);
    Py_CLEAR(env_tmpl.dict);
    Py_CLEAR(scope_tmpl.base);
    Py_CLEAR(scope_tmpl.dict);
    ac_clear();
    Py_CLEAR(g_deque);
    Py_CLEAR(g_enter_task);
    Py_CLEAR(g_leave_task);
    gwp_decoder_done(&g_dec);
    gwp_buf_free(&g_out);
}

static struct PyModuleDef gw_module = {
    PyModuleDef_HEAD_INIT, "_gwfast",
    "The GWP codec (proto/gwp.c) and the WSGI environ builder for the Python worker runtime.",
    -1, gw_methods, NULL, NULL, NULL, gw_free,
};

static int intern(PyObject **slot, const char *s)
{
    *slot = PyUnicode_InternFromString(s);
    return *slot == NULL ? -1 : 0;
}

PyMODINIT_FUNC PyInit__gwfast(void)
{
    if (intern(&S_empty, "") || intern(&S_80, "80") || intern(&S_443, "443")
        || intern(&S_localhost, "localhost") || intern(&S_http11, "HTTP/1.1")
        || intern(&S_http10, "HTTP/1.0") || intern(&S_https, "https")
        || intern(&S_sep_comma, ",") || intern(&S_sep_cookie, "; ")
        || intern(&K_REQUEST_METHOD, "REQUEST_METHOD") || intern(&K_PATH_INFO, "PATH_INFO")
        || intern(&K_QUERY_STRING, "QUERY_STRING") || intern(&K_RAW_URI, "RAW_URI")
        || intern(&K_SERVER_NAME, "SERVER_NAME") || intern(&K_SERVER_PORT, "SERVER_PORT")
        || intern(&K_SERVER_PROTOCOL, "SERVER_PROTOCOL") || intern(&K_REMOTE_ADDR, "REMOTE_ADDR")
        || intern(&K_REMOTE_PORT, "REMOTE_PORT") || intern(&K_URL_SCHEME, "wsgi.url_scheme")
        || intern(&K_CONTENT_LENGTH, "CONTENT_LENGTH") || intern(&K_CONTENT_TYPE, "CONTENT_TYPE")
        || intern(&K_HTTP_COOKIE, "HTTP_COOKIE")
        || intern(&K_http_version, "http_version") || intern(&K_method, "method")
        || intern(&K_scheme, "scheme") || intern(&K_path, "path")
        || intern(&K_raw_path, "raw_path") || intern(&K_query_string, "query_string")
        || intern(&K_headers, "headers") || intern(&K_client, "client")
        || intern(&K_server, "server") || intern(&K_state, "state")
        || intern(&K_extensions, "extensions") || intern(&S_v11, "1.1")
        || intern(&S_v10, "1.0") || intern(&K_type, "type") || intern(&K_status, "status")
        || intern(&K_body, "body") || intern(&K_more_body, "more_body")
        || intern(&S_resp_start, "http.response.start") || intern(&S_resp_body, "http.response.body")
        || intern(&A_streams, "streams") || intern(&A_served, "served") || intern(&A_put, "put")
        || intern(&A_send_slow, "send_slow") || intern(&A_done, "done")
        || intern(&A_set_result, "set_result"))
        return NULL;
    if ((S_emptyb = PyBytes_FromStringAndSize("", 0)) == NULL
        || PyType_Ready(&ReadyType) < 0 || PyType_Ready(&StreamType) < 0
        || (g_ready = (PyObject *)PyObject_New(PyObject, &ReadyType)) == NULL
        || (g_finished = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type)) == NULL)
        return NULL;
    for (int i = 1; i < GWP_MSG_MAX; i++)
        if ((I_type[i] = PyLong_FromLong(i)) == NULL) return NULL;
    gwp_decoder_init(&g_dec, 0);
    gwp_buf_init(&g_out);

    PyObject *m = PyModule_Create(&gw_module);
    if (m == NULL) return NULL;
    if (PyModule_AddStringConstant(m, "name", "c") < 0
        || PyModule_AddIntConstant(m, "CAP", GWP_MAX_PAYLOAD) < 0
        || PyModule_AddObjectRef(m, "StreamBase", (PyObject *)&StreamType) < 0
        || PyModule_AddObjectRef(m, "FINISHED", g_finished) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
