/*
 * access.c - the access log (master process). See access.h for the atoms.
 * The format is compiled once into a list of pieces (literal text or an
 * atom); each finished request is formatted into one buffer and written
 * with one write(2), so lines never interleave.
 */
#include "access.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define MAX_PIECES 64

typedef enum {
    A_TEXT, A_H, A_L, A_U, A_T, A_R, A_M, A_UPATH, A_Q, A_HPROTO, A_S, A_BIG_B, A_B,
    A_F, A_A, A_SEC, A_MS, A_US, A_P, A_REQ_HDR, A_RESP_HDR, A_X, A_W
} atom_t;

typedef struct {
    atom_t      atom;
    const char *text;   /* A_TEXT: points into fmt_copy */
    size_t      len;
    int         hdr;    /* index into req_names/resp_names */
} piece_t;

static piece_t pieces[MAX_PIECES];
static int     npieces;
static char   *fmt_copy;
static char   *path_copy;
static int     log_fd = -1;
static const char *req_names[GW_ACCESS_MAX_HEADERS];
static size_t      nreq_names;
static const char *resp_names[GW_ACCESS_MAX_HEADERS];
static size_t      nresp_names;

int gw_access_enabled(void) { return log_fd >= 0; }

const char *const *gw_access_req_headers(size_t *n) { *n = nreq_names; return req_names; }
const char *const *gw_access_resp_headers(size_t *n) { *n = nresp_names; return resp_names; }

static int name_index(const char **names, size_t *n, const char *name)
{
    for (size_t i = 0; i < *n; i++)
        if (strcasecmp(names[i], name) == 0) return (int)i;
    if (*n >= GW_ACCESS_MAX_HEADERS) return -1;
    names[*n] = name;
    return (int)(*n)++;
}

static int compile(char *fmt, char *err, size_t errlen)
{
    static const struct { const char *name; atom_t atom; } atoms[] = {
        { "h", A_H }, { "l", A_L }, { "u", A_U }, { "t", A_T }, { "r", A_R }, { "m", A_M },
        { "U", A_UPATH }, { "q", A_Q }, { "H", A_HPROTO }, { "s", A_S }, { "B", A_BIG_B },
        { "b", A_B }, { "f", A_F }, { "a", A_A }, { "T", A_SEC }, { "M", A_MS }, { "D", A_US },
        { "p", A_P }, { "x", A_X }, { "w", A_W },
    };
    npieces = 0;
    nreq_names = nresp_names = 0;
    char *p = fmt;
    while (*p) {
        if (npieces >= MAX_PIECES) { snprintf(err, errlen, "access log format too long"); return -1; }
        piece_t *pc = &pieces[npieces];
        char *open = strstr(p, "%(");
        if (open != p) {                      /* literal text up to the next atom */
            pc->atom = A_TEXT;
            pc->text = p;
            pc->len = open ? (size_t)(open - p) : strlen(p);
            p += pc->len;
            npieces++;
            continue;
        }
        char *close = strstr(p + 2, ")s");
        if (!close) { snprintf(err, errlen, "access log format: unterminated atom at '%.20s'", p); return -1; }
        *close = '\0';
        char *name = p + 2;
        size_t nl = strlen(name);
        p = close + 2;
        if (nl >= 3 && name[0] == '{' && name[nl - 2] == '}' && (name[nl - 1] == 'i' || name[nl - 1] == 'o')) {
            char kind = name[nl - 1];
            name[nl - 2] = '\0';
            name++;
            int idx = kind == 'i' ? name_index(req_names, &nreq_names, name)
                                  : name_index(resp_names, &nresp_names, name);
            if (idx < 0) { snprintf(err, errlen, "access log format: more than %d headers", GW_ACCESS_MAX_HEADERS); return -1; }
            pc->atom = kind == 'i' ? A_REQ_HDR : A_RESP_HDR;
            pc->hdr = idx;
            npieces++;
            continue;
        }
        size_t k;
        for (k = 0; k < sizeof(atoms) / sizeof(atoms[0]); k++)
            if (strcmp(atoms[k].name, name) == 0) break;
        if (k == sizeof(atoms) / sizeof(atoms[0])) {
            snprintf(err, errlen, "access log format: unknown atom '%%(%s)s'", name);
            return -1;
        }
        pc->atom = atoms[k].atom;
        if (pc->atom == A_F) pc->hdr = name_index(req_names, &nreq_names, "Referer");
        if (pc->atom == A_A) pc->hdr = name_index(req_names, &nreq_names, "User-Agent");
        if ((pc->atom == A_F || pc->atom == A_A) && pc->hdr < 0) {
            snprintf(err, errlen, "access log format: more than %d headers", GW_ACCESS_MAX_HEADERS);
            return -1;
        }
        npieces++;
    }
    return 0;
}

static int open_file(const char *path)
{
    if (strcmp(path, "-") == 0) return dup(STDOUT_FILENO);
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

int gw_access_open(const char *path, const char *fmt, char *err, size_t errlen)
{
    gw_access_close();
    if (!path || !*path) return 0;
    fmt_copy = strdup(fmt && *fmt ? fmt : GW_ACCESS_DEFAULT_FORMAT);
    path_copy = strdup(path);
    if (!fmt_copy || !path_copy) { snprintf(err, errlen, "out of memory"); return -1; }
    if (compile(fmt_copy, err, errlen) < 0) { gw_access_close(); return -1; }
    log_fd = open_file(path);
    if (log_fd < 0) {
        snprintf(err, errlen, "cannot open access log %s: %s", path, strerror(errno));
        gw_access_close();
        return -1;
    }
    return 0;
}

int gw_access_reopen(void)
{
    if (log_fd < 0 || !path_copy || strcmp(path_copy, "-") == 0) return 0;
    int fd = open_file(path_copy);
    if (fd < 0) return -errno;
    dup2(fd, log_fd);   /* same number: nothing else needs to know */
    close(fd);
    return 0;
}

void gw_access_close(void)
{
    if (log_fd >= 0) close(log_fd);
    log_fd = -1;
    free(fmt_copy);
    free(path_copy);
    fmt_copy = path_copy = NULL;
    npieces = 0;
}

/* Append with bounds; quotes and control bytes from clients are escaped so
 * a header cannot forge a log line. */
typedef struct { char *p; size_t len, cap; } out_t;

static void put(out_t *o, const char *s, size_t n)
{
    for (size_t i = 0; i < n && o->len + 4 < o->cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f || ch == '"' || ch == '\\') {
            o->len += (size_t)snprintf(o->p + o->len, o->cap - o->len, "\\x%02x", ch);
        } else {
            o->p[o->len++] = (char)ch;
        }
    }
}

static void put_s(out_t *o, const char *s) { put(o, s, strlen(s)); }

static void putf(out_t *o, const char *fmt, unsigned long long v)
{
    char b[32];
    int n = snprintf(b, sizeof(b), fmt, v);
    if (n > 0) put(o, b, (size_t)n);
}

void gw_access_log(const gw_access_entry_t *e)
{
    if (log_fd < 0) return;
    char buf[4096];
    out_t o = { buf, 0, sizeof(buf) - 1 };
    double dur = e->end - e->start;
    if (dur < 0) dur = 0;
    for (int i = 0; i < npieces; i++) {
        const piece_t *pc = &pieces[i];
        switch (pc->atom) {
        case A_TEXT:
            if (o.len + pc->len < o.cap) { memcpy(o.p + o.len, pc->text, pc->len); o.len += pc->len; }
            break;
        case A_H: put(&o, e->peer, e->peer_len); break;
        case A_L: case A_U: put_s(&o, "-"); break;
        case A_T: {
            char t[64];
            time_t sec = (time_t)e->start;
            struct tm tm;
            localtime_r(&sec, &tm);
            size_t n = strftime(t, sizeof(t), "[%d/%b/%Y:%H:%M:%S %z]", &tm);
            put(&o, t, n);
            break;
        }
        case A_R:
            put(&o, e->method, e->method_len);
            put_s(&o, " ");
            put(&o, e->target, e->target_len);
            put_s(&o, e->http_minor ? " HTTP/1.1" : " HTTP/1.0");
            break;
        case A_M: put(&o, e->method, e->method_len); break;
        case A_UPATH: {
            size_t n = 0;
            while (n < e->target_len && e->target[n] != '?' && e->target[n] != '#') n++;
            put(&o, e->target, n);
            break;
        }
        case A_Q: {
            const char *q = memchr(e->target, '?', e->target_len);
            if (q) {
                size_t n = (size_t)(e->target + e->target_len - q - 1);
                const char *h = memchr(q + 1, '#', n);
                put(&o, q + 1, h ? (size_t)(h - q - 1) : n);
            }
            break;
        }
        case A_HPROTO: put_s(&o, e->http_minor ? "HTTP/1.1" : "HTTP/1.0"); break;
        case A_S: putf(&o, "%llu", (unsigned long long)e->status); break;
        case A_BIG_B: putf(&o, "%llu", e->bytes); break;
        case A_B: if (e->bytes) putf(&o, "%llu", e->bytes); else put_s(&o, "-"); break;
        case A_F: case A_A: case A_REQ_HDR:
            if (e->req_val[pc->hdr]) put(&o, e->req_val[pc->hdr], e->req_len[pc->hdr]);
            else put_s(&o, "-");
            break;
        case A_RESP_HDR:
            if (e->resp_val[pc->hdr]) put(&o, e->resp_val[pc->hdr], e->resp_len[pc->hdr]);
            else put_s(&o, "-");
            break;
        case A_SEC: putf(&o, "%llu", (unsigned long long)dur); break;
        case A_MS: putf(&o, "%llu", (unsigned long long)(dur * 1e3)); break;
        case A_US: putf(&o, "%llu", (unsigned long long)(dur * 1e6)); break;
        case A_P: if (e->worker_pid > 0) putf(&o, "%llu", (unsigned long long)e->worker_pid); else put_s(&o, "-"); break;
        case A_W: if (e->worker_slot >= 0) putf(&o, "%llu", (unsigned long long)e->worker_slot); else put_s(&o, "-"); break;
        case A_X: {
            char b[48];
            int n = snprintf(b, sizeof(b), "%llu.%llu", (unsigned long long)e->conn_id,
                             (unsigned long long)e->req_no);
            if (n > 0) put(&o, b, (size_t)n);
            break;
        }
        }
    }
    buf[o.len++] = '\n';
    ssize_t w;
    do w = write(log_fd, buf, o.len); while (w < 0 && errno == EINTR);
}
