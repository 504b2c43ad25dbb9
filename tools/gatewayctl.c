/*
 * gatewayctl - the operator's client for a running gateway's control socket.
 * This release knows its version and help; the control socket (status,
 * scale, reload, drain) arrives with the operations work and will speak the
 * framed protocol of proto/ (gwp.h), which this tool already links.
 */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "gwp.h"

static void usage(FILE *out)
{
    fprintf(out,
        "NAME\n"
        "    gatewayctl - inspect and control a running gateway\n\n"
        "SYNOPSIS\n"
        "    gatewayctl [-h|--help] [--version] COMMAND\n\n"
        "COMMANDS\n"
        "    status     every worker's pid, state, in-flight and served requests,\n"
        "               memory, heartbeat age, restarts (not yet available)\n"
        "    scale N    set the number of workers (not yet available)\n"
        "    reload     start new workers, drain old ones (not yet available)\n"
        "    drain      stop taking new connections (not yet available)\n\n"
        "OPTIONS\n"
        "    -h, --help   print this help and exit\n"
        "    --version    print the version and the wire-protocol version and exit\n\n"
        "EXIT STATUS\n"
        "    0 success, 1 error, 2 usage error.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) { usage(stderr); return 2; }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) { usage(stdout); return 0; }
    if (strcmp(argv[1], "--version") == 0) {
        printf("gatewayctl %s (protocol %d)\n", GW_VERSION_STRING, GWP_VERSION);
        return 0;
    }
    fprintf(stderr, "gatewayctl: '%s': the control socket is not available in this release\n", argv[1]);
    return 1;
}
