/* Stockade's network gate: the first init container of every tenant pod.
 *
 * A NetworkPolicy engine programs a new pod's rules a moment after the pod's network exists;
 * whatever runs in that window is unpoliced, and a connection it opens may outlive the policy.
 * This gate runs in the pod's own sandbox and network before any of the tenant's containers and
 * exits 0 only once every --deny destination (one the policy forbids, e.g. the super cluster's API
 * server) no longer accepts a connection while every --allow destination (one the policy allows,
 * e.g. the tenant's API server) does, twice in a row. It exits 1 after --seconds without that, so
 * a pod whose policy never arrives never runs the tenant's code.
 *
 * Usage: netgate --deny=HOST:PORT... --allow=HOST:PORT... [--seconds=N]
 * Built static (see the Dockerfile beside it) so the image holds this one file. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_TARGETS 16
#define CONNECT_MS 500
#define PAUSE_MS 100
#define PASSES 2

struct target { char host[256]; char port[8]; };

static int parse(const char *value, struct target *t) {
    const char *colon = strrchr(value, ':');
    if (!colon || colon == value || strlen(colon + 1) == 0 || strlen(colon + 1) >= sizeof t->port ||
        (size_t)(colon - value) >= sizeof t->host)
        return -1;
    memcpy(t->host, value, (size_t)(colon - value));
    t->host[colon - value] = '\0';
    if (t->host[0] == '[') { /* [v6]:port */
        memmove(t->host, t->host + 1, strlen(t->host));
        t->host[strcspn(t->host, "]")] = '\0';
    }
    strcpy(t->port, colon + 1);
    return 0;
}

/* 1 if a TCP connection to t is accepted within CONNECT_MS, 0 if refused or silent. */
static int connects(const struct target *t) {
    struct sockaddr_in v4 = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(t->port))};
    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6, .sin6_port = htons((unsigned short)atoi(t->port))};
    struct sockaddr *addr;
    socklen_t addrlen;
    if (inet_pton(AF_INET, t->host, &v4.sin_addr) == 1) {
        addr = (struct sockaddr *)&v4;
        addrlen = sizeof v4;
    } else if (inet_pton(AF_INET6, t->host, &v6.sin6_addr) == 1) {
        addr = (struct sockaddr *)&v6;
        addrlen = sizeof v6;
    } else {
        return 0; /* addresses only: a name would need DNS */
    }
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int ok = 0;
    if (fd >= 0) {
        if (connect(fd, addr, addrlen) == 0) {
            ok = 1;
        } else if (errno == EINPROGRESS) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int err = 0;
            socklen_t len = sizeof err;
            if (poll(&p, 1, CONNECT_MS) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0)
                ok = 1;
        }
        close(fd);
    }
    return ok;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    struct target deny[MAX_TARGETS], allow[MAX_TARGETS];
    int ndeny = 0, nallow = 0;
    double seconds = 120;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strncmp(a, "--deny=", 7) && ndeny < MAX_TARGETS && parse(a + 7, &deny[ndeny]) == 0) ndeny++;
        else if (!strncmp(a, "--allow=", 8) && nallow < MAX_TARGETS && parse(a + 8, &allow[nallow]) == 0) nallow++;
        else if (!strncmp(a, "--seconds=", 10) && atof(a + 10) > 0) seconds = atof(a + 10);
        else { fprintf(stderr, "netgate: bad argument %s\n", a); return 2; }
    }
    if (ndeny == 0 || nallow == 0) {
        fprintf(stderr, "netgate: needs at least one --deny and one --allow destination\n");
        return 2;
    }
    double start = now(), deadline = start + seconds;
    int passes = 0;
    const char *why = "no check ran";
    char reason[sizeof(struct target) + 64];
    while (now() < deadline) {
        int ok = 1;
        for (int i = 0; ok && i < nallow; i++)
            if (!connects(&allow[i])) {
                ok = 0;
                snprintf(reason, sizeof reason, "allowed destination %.255s:%.7s not reachable yet", allow[i].host, allow[i].port);
            }
        for (int i = 0; ok && i < ndeny; i++)
            if (connects(&deny[i])) {
                ok = 0;
                snprintf(reason, sizeof reason, "forbidden destination %.255s:%.7s still reachable", deny[i].host, deny[i].port);
            }
        if (ok && ++passes >= PASSES) {
            printf("netgate: network policy in force after %.2fs\n", now() - start);
            return 0;
        }
        if (!ok) { passes = 0; why = reason; }
        struct timespec pause = {0, PAUSE_MS * 1000000L};
        nanosleep(&pause, NULL);
    }
    printf("netgate: network policy not in force after %.0fs: %s\n", seconds, why);
    return 1;
}
