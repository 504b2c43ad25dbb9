/*
 * gatewayctl - the operator's client for a running gateway's control socket.
 *
 *   gatewayctl [-s|--socket PATH] [--json] COMMAND [ARGS]
 *
 * The socket is -s/--socket PATH, else $GATEWAY_CONTROL_SOCKET, else
 * /run/gateway.ctl (the gateway's --control-socket default). The wire format
 * is the one in gateway/ctl.c: one request line ("status --json\n"), then
 * the master's reply text until it closes the connection; a reply starting
 * with "error: " is a failed command.
 *
 * Exit status: 0 ok, 1 error (failed command, socket unreachable, timeout),
 * 2 usage error.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "gwp.h"

#define DEFAULT_SOCKET "/run/gateway.ctl"
#define REQ_MAX        1024               /* the server's CTL_REQ_MAX */
#define REPLY_MAX      (16u << 20)
#define TIMEOUT_MS     15000

/* Mirrors ctl_cmds[] in gateway/ctl.c (`gatewayctl help` asks the server). */
static const struct { const char *syn, *help; } commands[] = {
    { "status [--json]",  "version, uptime, listeners, totals and one row per worker:\n"
                          "pid, state, in flight, busy/capacity (threads), served,\n"
                          "heartbeat age, RSS/PSS, CPU time, age, restarts,\n"
                          "background tasks, loop; the zygote with --preload (Python)" },
    { "scale N|+K|-K",    "set the number of workers (new ones spawn; extra ones\n"
                          "finish their requests and exit)" },
    { "reload",           "like HUP: re-read the configuration, new workers, drain old ones" },
    { "reopen-logs",      "like USR1: reopen the error and access logs" },
    { "upgrade",          "like USR2: start a new master with the listening sockets" },
    { "drain",            "health answers 503, responses close connections (traffic moves away)" },
    { "undrain",          "end a drain" },
    { "stop [--quick]",   "graceful stop (in-flight requests finish), or quick" },
    { "config [--json]",  "the effective settings" },
    { "metrics",          "Prometheus text exposition (as served by --metrics-bind)" },
    { "help",             "the command list, from the running gateway" },
};

static void usage(FILE *f)
{
    fprintf(f,
        "NAME\n"
        "    gatewayctl - inspect and control a running gateway\n\n"
        "SYNOPSIS\n"
        "    gatewayctl [-s|--socket PATH] [--json] COMMAND [ARGS]\n"
        "    gatewayctl -h|--help | --version\n\n"
        "COMMANDS\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        fprintf(f, "    %-18s ", commands[i].syn);
        for (const char *p = commands[i].help; *p; p++) {
            fputc(*p, f);
            if (*p == '\n') fprintf(f, "    %-18s ", "");
        }
        fputc('\n', f);
    }
    fprintf(f,
        "\nOPTIONS\n"
        "    -s, --socket PATH  the control socket (default $GATEWAY_CONTROL_SOCKET,\n"
        "                       else " DEFAULT_SOCKET ")\n"
        "    --json             machine-readable reply (status, config)\n"
        "    -h, --help         print this help and exit\n"
        "    --version          print the version and the wire-protocol version and exit\n\n"
        "EXIT STATUS\n"
        "    0 success, 1 error (failed command or unreachable socket), 2 usage error.\n");
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "gatewayctl: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see gatewayctl --help)\n");
    return 2;
}

static long ms_left(const struct timespec *deadline)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    long ms = (deadline->tv_sec - t.tv_sec) * 1000 + (deadline->tv_nsec - t.tv_nsec) / 1000000;
    return ms > 0 ? ms : 0;
}

/* Wait for fd to be ready for events; 0 ok, -1 timeout or error. */
static int wait_fd(int fd, short events, const struct timespec *deadline)
{
    for (;;) {
        struct pollfd p = { .fd = fd, .events = events };
        int r = poll(&p, 1, (int)ms_left(deadline));
        if (r > 0) return 0;
        if (r == 0) { errno = ETIMEDOUT; return -1; }
        if (errno != EINTR) return -1;
    }
}

int main(int argc, char **argv)
{
    const char *path = getenv("GATEWAY_CONTROL_SOCKET");
    if (!path || !*path) path = DEFAULT_SOCKET;
    int json = 0, i = 1;

    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { usage(stdout); return 0; }
        if (strcmp(a, "--version") == 0) {
            printf("gatewayctl %s (protocol %d)\n", GW_VERSION_STRING, GWP_VERSION);
            return 0;
        }
        if (strcmp(a, "--json") == 0) { json = 1; continue; }
        if (strcmp(a, "-s") == 0 || strcmp(a, "--socket") == 0) {
            if (i + 1 >= argc) return usage_error("%s needs a PATH", a);
            path = argv[++i];
            continue;
        }
        if (strncmp(a, "--socket=", 9) == 0) { path = a + 9; continue; }
        if (strcmp(a, "--") == 0) { i++; break; }
        return usage_error("unknown option '%s'", a);
    }
    if (i >= argc) return usage_error("%s", "missing COMMAND");
    if (!*path) return usage_error("%s", "empty socket path");

    /* the request line: COMMAND ARGS [--json] */
    char req[REQ_MAX];
    size_t len = 0;
    for (int k = i; k < argc; k++) {
        if (!*argv[k] || strpbrk(argv[k], " \t\r\n"))
            return usage_error("argument '%s' is empty or contains blanks", argv[k]);
        int n = snprintf(req + len, sizeof(req) - len, "%s%s", k > i ? " " : "", argv[k]);
        if (n < 0 || (size_t)n >= sizeof(req) - len) return usage_error("%s", "request too long");
        len += (size_t)n;
    }
    int has_json = 0;
    for (int k = i + 1; k < argc; k++) has_json |= strcmp(argv[k], "--json") == 0;
    if (json && !has_json) {
        if (len + 8 >= sizeof(req)) return usage_error("%s", "request too long");
        len += (size_t)snprintf(req + len, sizeof(req) - len, " --json");
    }
    req[len++] = '\n';

    struct sockaddr_un sun;
    if (strlen(path) >= sizeof(sun.sun_path)) {
        fprintf(stderr, "gatewayctl: %s: socket path too long\n", path);
        return 1;
    }
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    strcpy(sun.sun_path, path);

    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += TIMEOUT_MS / 1000;

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        int e = errno;
        fprintf(stderr, "gatewayctl: cannot connect to %s: %s%s\n", path, strerror(e),
                e == ENOENT || e == ECONNREFUSED ? " (is the gateway running? see -s PATH)" : "");
        return 1;
    }
    size_t off = 0;
    while (off < len) {
        if (wait_fd(fd, POLLOUT, &deadline) < 0) goto io_error;
        ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n < 0) goto io_error;
        off += (size_t)n;
    }
    shutdown(fd, SHUT_WR);

    char *reply = NULL;
    size_t rlen = 0, cap = 0;
    for (;;) {
        if (rlen + 4096 > cap) {
            cap = cap ? cap * 2 : 65536;
            if (cap > REPLY_MAX) { errno = EMSGSIZE; goto io_error; }
            char *p = realloc(reply, cap + 1);
            if (!p) goto io_error;
            reply = p;
        }
        if (wait_fd(fd, POLLIN, &deadline) < 0) goto io_error;
        ssize_t n = recv(fd, reply + rlen, cap - rlen, MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n < 0) {
            if (errno == ECONNRESET && rlen > 0) break;
            goto io_error;
        }
        if (n == 0) break;
        rlen += (size_t)n;
    }
    close(fd);
    if (rlen == 0) {
        fprintf(stderr, "gatewayctl: %s: connection closed without a reply\n", path);
        free(reply);
        return 1;
    }
    reply[rlen] = '\0';
    if (strncmp(reply, "error:", 6) == 0) {
        const char *msg = reply + 6;
        while (*msg == ' ') msg++;
        size_t m = strcspn(msg, "\n");
        fprintf(stderr, "gatewayctl: %.*s\n", (int)m, msg);
        free(reply);
        return 1;
    }
    fwrite(reply, 1, rlen, stdout);
    free(reply);
    return fflush(stdout) == 0 ? 0 : 1;

io_error:
    fprintf(stderr, "gatewayctl: %s: %s\n", path, strerror(errno));
    close(fd);
    return 1;
}
