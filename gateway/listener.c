/*
 * listener.c - binding the listening sockets (master, before any fork).
 * Accepts HOST:PORT, [IPv6]:PORT and unix:/path. Every failure prints one
 * "gateway: ..." line naming the address and the reason, and closes what was
 * already opened, so a failed start leaves no socket file behind.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "gateway.h"

#define UNIX_MODE 0660

/* After a binary upgrade the new master owns the unix socket files. */
static int keep_socket_files;
static int gw_reuse_port;   /* cfg->reuse_port for the bind in progress */
void gw_listeners_keep_files(int keep) { keep_socket_files = keep; }

static void addr_format(const struct sockaddr *sa, char *out, size_t n)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s = (const void *)sa;
        inet_ntop(AF_INET, &s->sin_addr, host, sizeof(host));
        snprintf(out, n, "%s:%u", host, ntohs(s->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const void *)sa;
        inet_ntop(AF_INET6, &s->sin6_addr, host, sizeof(host));
        snprintf(out, n, "[%s]:%u", host, ntohs(s->sin6_port));
    } else {
        snprintf(out, n, "unix");
    }
}

/* Which socket a bind error is about: plain listeners keep their
 * historical wording; labelled ones (control socket, metrics) say
 * "cannot bind LABEL NAME: reason". */
static const char *bind_label;

static void bind_fail(const gw_listener_t *l, const char *kind, const char *fmt, ...)
{
    char reason[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    if (bind_label)
        fprintf(stderr, "gateway: cannot bind %s %s: %s\n", bind_label, l->name, reason);
    else if (strcmp(kind, "invalid") == 0)
        fprintf(stderr, "gateway: invalid bind address '%s': %s\n", l->name, reason);
    else
        fprintf(stderr, "gateway: cannot %s %s: %s\n", kind, l->name, reason);
}

static int open_unix(gw_listener_t *l, const char *path, int backlog, mode_t mode)
{
    struct sockaddr_un sun;
    if (*path != '/' || strlen(path) >= sizeof(sun.sun_path)) {
        bind_fail(l, "invalid", "unix socket path must be absolute and shorter than %zu bytes",
                  sizeof(sun.sun_path));
        return -1;
    }
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    strcpy(sun.sun_path, path);

    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            bind_fail(l, "bind", "%s exists and is not a socket", path);
            return -1;
        }
        /* A socket file: in use if someone accepts on it, else stale. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
            close(probe);
            bind_fail(l, "bind", "address already in use");
            return -1;
        }
        if (probe >= 0) close(probe);
        unlink(path);
    }

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        bind_fail(l, "bind", "socket: %s", strerror(errno));
        return -1;
    }
    /* Create the file with no more than `mode` from the first moment. */
    mode_t old = umask((mode_t)(~mode & 0777));
    int rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
    int err = errno;
    umask(old);
    if (rc < 0) {
        bind_fail(l, "bind", "%s", err == EADDRINUSE ? "address already in use" : strerror(err));
        close(fd);
        return -1;
    }
    l->unix_path = strdup(path);
    chmod(path, mode);
    if (listen(fd, backlog) < 0) {
        bind_fail(l, "listen on", "%s", strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    l->fd = fd;
    l->is_unix = 1;
    snprintf(l->addr, sizeof(l->addr), "unix:%s", path);
    return 0;
}

static int open_inet(gw_listener_t *l, const char *spec, int backlog)
{
    char host[256];
    const char *port;
    if (spec[0] == '[') {
        const char *end = strchr(spec, ']');
        if (!end || end[1] != ':' || (size_t)(end - spec - 1) >= sizeof(host)) goto bad;
        memcpy(host, spec + 1, (size_t)(end - spec - 1));
        host[end - spec - 1] = '\0';
        port = end + 2;
    } else {
        const char *colon = strrchr(spec, ':');
        if (!colon || (size_t)(colon - spec) >= sizeof(host)) goto bad;
        if (memchr(spec, ':', (size_t)(colon - spec))) goto bad;  /* bare IPv6 */
        memcpy(host, spec, (size_t)(colon - spec));
        host[colon - spec] = '\0';
        port = colon + 1;
    }
    if (!*port || strlen(port) > 5 || strspn(port, "0123456789") != strlen(port) || atoi(port) > 65535)
        goto bad;

    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV }, *res = NULL;
    int gai = getaddrinfo(*host ? host : NULL, port, &hints, &res);
    if (gai != 0) {
        bind_fail(l, "invalid", "%s", gai_strerror(gai));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        bind_fail(l, "bind", "socket: %s", strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (gw_reuse_port) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (res->ai_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0) {
        int err = errno;
        bind_fail(l, "bind", "%s", err == EADDRINUSE ? "address already in use" : strerror(err));
        close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    if (listen(fd, backlog) < 0) {
        bind_fail(l, "listen on", "%s", strerror(errno));
        close(fd);
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    addr_format((struct sockaddr *)&ss, l->addr, sizeof(l->addr));
    l->fd = fd;
    return 0;
bad:
    bind_fail(l, "invalid", "expected HOST:PORT, [IPv6]:PORT or unix:/path");
    return -1;
}

/*
 * Adopt already-listening sockets instead of binding: fds handed over by
 * the previous master on USR2 (GATEWAY_LISTEN_FDS="3,4") or by systemd
 * socket activation (LISTEN_FDS=N, LISTEN_PID=ours: fds 3..3+N-1). Each must
 * be a listening stream socket; its address is read back from the kernel.
 */
int gw_listeners_adopt(const int *fds, size_t nfds, gw_listener_t **out, size_t *n)
{
    gw_listener_t *ls = calloc(nfds ? nfds : 1, sizeof(*ls));
    if (!ls) { fprintf(stderr, "gateway: out of memory\n"); return -1; }
    for (size_t i = 0; i < nfds; i++) {
        gw_listener_t *l = &ls[i];
        int fd = fds[i], listening = 0, type = 0;
        socklen_t sl = sizeof(listening);
        l->fd = -1;
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &sl) < 0 || !listening ||
            (sl = sizeof(type), getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &sl) < 0) ||
            type != SOCK_STREAM) {
            fprintf(stderr, "gateway: inherited fd %d is not a listening stream socket\n", fd);
            gw_listeners_close(ls, i);
            return -1;
        }
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        struct sockaddr_storage ss;
        sl = sizeof(ss);
        getsockname(fd, (struct sockaddr *)&ss, &sl);
        l->fd = fd;
        if (ss.ss_family == AF_UNIX) {
            const struct sockaddr_un *sun = (const void *)&ss;
            l->is_unix = 1;
            l->unix_path = strdup(sun->sun_path);
            snprintf(l->addr, sizeof(l->addr), "unix:%.120s", sun->sun_path);
        } else {
            addr_format((struct sockaddr *)&ss, l->addr, sizeof(l->addr));
        }
        snprintf(l->name, sizeof(l->name), "%s", l->addr);
    }
    *out = ls;
    *n = nfds;
    return 0;
}

int gw_listener_bind(gw_listener_t *l, const char *spec, const char *name, int backlog,
                     unsigned unix_mode, const char *label)
{
    l->fd = -1;
    l->unix_path = NULL;
    l->is_unix = 0;
    snprintf(l->name, sizeof(l->name), "%s", name);
    bind_label = label;
    int rc = strncmp(spec, "unix:", 5) == 0 ? open_unix(l, spec + 5, backlog, (mode_t)unix_mode)
                                            : open_inet(l, spec, backlog);
    bind_label = NULL;
    return rc;
}

void gw_listener_close(gw_listener_t *l)
{
    if (l->fd >= 0) close(l->fd);
    l->fd = -1;
    if (l->unix_path) {
        if (!keep_socket_files) unlink(l->unix_path);
        free(l->unix_path);
        l->unix_path = NULL;
    }
}

int gw_listeners_open(const gw_config_t *cfg, gw_listener_t **out, size_t *n)
{
    gw_reuse_port = cfg->reuse_port;
    gw_listener_t *ls = calloc(cfg->nbinds, sizeof(*ls));
    if (!ls) {
        fprintf(stderr, "gateway: out of memory\n");
        return -1;
    }
    for (size_t i = 0; i < cfg->nbinds; i++) {
        gw_listener_t *l = &ls[i];
        const char *spec = cfg->binds[i];
        l->fd = -1;
        snprintf(l->name, sizeof(l->name), "%s", spec);
        int rc = gw_listener_bind(l, spec, spec, cfg->backlog, UNIX_MODE, NULL);
        if (rc < 0) {
            gw_listeners_close(ls, i);
            return -1;
        }
    }
    *out = ls;
    *n = cfg->nbinds;
    return 0;
}

void gw_listeners_close(gw_listener_t *ls, size_t n)
{
    if (!ls) return;
    for (size_t i = 0; i < n; i++) gw_listener_close(&ls[i]);
    free(ls);
}
