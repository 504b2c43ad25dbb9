/*
 * access.h - the access log (master process): one line per finished
 * request, formatted from a Gunicorn-style format string, e.g.
 *
 *   %(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"
 *
 * Atoms (Gunicorn's meanings): h remote address, l "-", u "-", t date in
 * [common log format], r request line, m method, U path, q query, H
 * protocol, s status, B response body bytes, b the same or "-" for 0,
 * f Referer, a User-Agent, T seconds, M milliseconds, D microseconds,
 * p the worker's pid, {Name}i a request header, {Name}o a response header;
 * ours: x the request id ("#connection.request"), w the worker slot.
 * Unknown atoms are a configuration error. The format is compiled once.
 */
#ifndef GW_ACCESS_H
#define GW_ACCESS_H

#include <stddef.h>
#include <stdint.h>

#define GW_ACCESS_DEFAULT_FORMAT \
    "%(h)s %(l)s %(u)s %(t)s \"%(r)s\" %(s)s %(b)s \"%(f)s\" \"%(a)s\""

#define GW_ACCESS_MAX_HEADERS 8   /* distinct {Name}i (and {Name}o) per format */

/* What the front knows about a finished request. Strings need not be
 * NUL-terminated; absent ones have len 0. */
typedef struct {
    const char *peer;        size_t peer_len;
    const char *method;      size_t method_len;
    const char *target;      size_t target_len;
    int         http_minor;
    int         status;
    uint64_t    bytes;       /* response body bytes sent */
    double      start, end;  /* ev_now() seconds */
    long        worker_pid;  /* 0 if the front answered itself */
    int         worker_slot; /* -1 likewise */
    uint64_t    conn_id;
    uint64_t    req_no;      /* request number on the connection */
    /* values of the headers named by gw_access_req_headers() /
     * gw_access_resp_headers(), same order; NULL when absent */
    const char *req_val[GW_ACCESS_MAX_HEADERS];
    size_t      req_len[GW_ACCESS_MAX_HEADERS];
    const char *resp_val[GW_ACCESS_MAX_HEADERS];
    size_t      resp_len[GW_ACCESS_MAX_HEADERS];
} gw_access_entry_t;

/*
 * Compile fmt and open path ("-" for stdout, NULL/"" to disable). Returns
 * 0, or -1 with a one-line reason in err (bad atom, cannot open).
 */
int  gw_access_open(const char *path, const char *fmt, char *err, size_t errlen);
/* Is the access log on? (callers skip collecting data when it is not) */
int  gw_access_enabled(void);
/* Header names the format needs ({Name}i, and Referer/User-Agent for f/a;
 * {Name}o), for the front to capture. Counts via *n. */
const char *const *gw_access_req_headers(size_t *n);
const char *const *gw_access_resp_headers(size_t *n);
/* Format and write one line (one write(2)). */
void gw_access_log(const gw_access_entry_t *e);
/* USR1: reopen the file (after rotation). 0 or -errno. */
int  gw_access_reopen(void);
void gw_access_close(void);

#endif /* GW_ACCESS_H */
