/*
 * example.h - a helper the example apps share: reading a numeric query
 * parameter ("ms=250" in "/?ms=250&n=3"). Not part of workerlib's API.
 */
#ifndef GWL_EXAMPLE_H
#define GWL_EXAMPLE_H

#include <stdlib.h>
#include <string.h>

/* Value of NAME in an a=1&b=2 query, or def if absent, negative or not a number. */
static inline long qparam(const char *query, const char *name, long def)
{
    size_t nl = strlen(name);
    for (const char *p = query; p && *p; p = strchr(p, '&'), p = p ? p + 1 : NULL) {
        if (strncmp(p, name, nl) == 0 && p[nl] == '=') {
            char *end;
            long v = strtol(p + nl + 1, &end, 10);
            return (end != p + nl + 1 && v >= 0) ? v : def;
        }
    }
    return def;
}

#endif
