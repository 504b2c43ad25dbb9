/*
 * log.h - the error log shared by the master and its workers (one line per
 * write(2), so lines from several processes and threads never interleave).
 * Line format:  2026-11-22T05:40:00.123Z [level] [pid] role: message
 */
#ifndef GW_LOG_H
#define GW_LOG_H

#include <stdarg.h>

typedef enum {
    GW_LOG_DEBUG = 0,
    GW_LOG_INFO,
    GW_LOG_WARN,
    GW_LOG_ERROR,
    GW_LOG_CRIT,       /* a worker is stuck (WORKER TIMEOUT), Gunicorn's "critical" */
    GW_LOG_ALERT,      /* something crashed or was killed: tests fail on it */
    GW_LOG_OFF
} gw_log_level_t;

/* Level at and above which lines are written (default GW_LOG_INFO). */
void gw_log_set_level(gw_log_level_t level);
gw_log_level_t gw_log_get_level(void);
/* Short role shown on each line: "master", "worker 2". Copied. */
void gw_log_set_role(const char *role);
/* "debug".."alert" -> level; -1 if unknown. "warning" == "warn". */
int  gw_log_level_parse(const char *name);
const char *gw_log_level_name(gw_log_level_t level);

/* --error-logfile: open path (appending) so a bad path fails early; "-" or
 * NULL keeps stderr. 0 or -errno. gw_log_activate() then moves stderr (this
 * process's and, through inheritance, every worker's) onto it: called once
 * start-up can no longer fail, so start-up errors still reach the terminal. */
int  gw_log_open(const char *path);
void gw_log_activate(void);
/* USR1: reopen the file now (master), or on the next line (a worker's
 * signal handler calls gw_log_reopen_later: async-signal-safe). */
int  gw_log_reopen(void);
void gw_log_reopen_later(void);

void gw_log(gw_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void gw_vlog(gw_log_level_t level, const char *fmt, va_list ap);

#define gw_debug(...) do { if (gw_log_get_level() <= GW_LOG_DEBUG) gw_log(GW_LOG_DEBUG, __VA_ARGS__); } while (0)
#define gw_info(...)  gw_log(GW_LOG_INFO, __VA_ARGS__)
#define gw_warn(...)  gw_log(GW_LOG_WARN, __VA_ARGS__)
#define gw_error(...) gw_log(GW_LOG_ERROR, __VA_ARGS__)
#define gw_crit(...)  gw_log(GW_LOG_CRIT, __VA_ARGS__)
#define gw_alert(...) gw_log(GW_LOG_ALERT, __VA_ARGS__)

#endif /* GW_LOG_H */
