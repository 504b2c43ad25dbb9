/*
 * log.c - see log.h. Runs in the master, in workers and on pool threads.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static gw_log_level_t log_level = GW_LOG_INFO;
static char log_role[32] = "master";
static char *log_path;                       /* --error-logfile, NULL: stderr as given */
static volatile sig_atomic_t reopen_pending;

static int pending_fd = -1;   /* opened, not yet on fd 2 */

int gw_log_open(const char *path)
{
    if (!path || !*path || strcmp(path, "-") == 0) return 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return -errno;
    free(log_path);
    log_path = strdup(path);
    if (!log_path) { close(fd); return -ENOMEM; }
    pending_fd = fd;
    return 0;
}

void gw_log_activate(void)
{
    if (pending_fd < 0) return;
    dup2(pending_fd, STDERR_FILENO);
    close(pending_fd);
    pending_fd = -1;
}

int gw_log_reopen(void)
{
    reopen_pending = 0;
    if (!log_path || pending_fd >= 0) return 0;
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return -errno;
    /* fd 2 keeps its number: inherited by workers, and stray writes to
     * stderr (a crashing app, sanitizers) land in the log too. */
    if (fd != STDERR_FILENO) {
        dup2(fd, STDERR_FILENO);
        close(fd);
    }
    return 0;
}

void gw_log_reopen_later(void) { reopen_pending = 1; }

static const char *const level_names[] = {
    [GW_LOG_DEBUG] = "debug", [GW_LOG_INFO] = "info", [GW_LOG_WARN] = "warning",
    [GW_LOG_ERROR] = "error", [GW_LOG_CRIT] = "critical", [GW_LOG_ALERT] = "alert",
    [GW_LOG_OFF] = "off",
};

void gw_log_set_level(gw_log_level_t level) { log_level = level; }
gw_log_level_t gw_log_get_level(void) { return log_level; }

void gw_log_set_role(const char *role)
{
    snprintf(log_role, sizeof(log_role), "%s", role);
}

int gw_log_level_parse(const char *name)
{
    if (strcasecmp(name, "warn") == 0) return GW_LOG_WARN;
    for (int i = 0; i <= GW_LOG_OFF; i++)
        if (strcasecmp(name, level_names[i]) == 0) return i;
    return -1;
}

const char *gw_log_level_name(gw_log_level_t level)
{
    return (unsigned)level <= GW_LOG_OFF ? level_names[level] : "?";
}

void gw_vlog(gw_log_level_t level, const char *fmt, va_list ap)
{
    if (level < log_level || level >= GW_LOG_OFF) return;
    int saved = errno;
    if (reopen_pending) gw_log_reopen();
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line),
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ [%s] [%ld] %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000),
                     level_names[level], (long)getpid(), log_role);
    if (n < 0) n = 0;
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    if (m < 0) m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof(line) - 2) len = sizeof(line) - 2;
    /* One line per entry, whatever the message held. */
    for (size_t i = (size_t)n; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r') line[i] = ' ';
    line[len++] = '\n';
    ssize_t w;
    do w = write(STDERR_FILENO, line, len); while (w < 0 && errno == EINTR);
    errno = saved;
}

void gw_log(gw_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gw_vlog(level, fmt, ap);
    va_end(ap);
}
