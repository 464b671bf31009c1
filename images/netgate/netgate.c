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
 * It also writes the pod's hosts file as the tenant's own kubelet would: with --hosts-file=PATH
 * --hosts-rename=FROM=TO it copies /etc/hosts (the super cluster's kubelet wrote it) to PATH with
 * every name that is FROM or starts with FROM. (the pod's name in the super cluster's namespace)
 * replaced by TO (its name in the tenant's namespace). The pod's own containers mount PATH as their
 * /etc/hosts, so a tenant never sees the super cluster's namespace there.
 *
 * Usage: netgate --deny=HOST:PORT... --allow=HOST:PORT... [--seconds=N]
 *                [--hosts-file=PATH --hosts-rename=FROM=TO]
 * Built static (see the Dockerfile beside it) so the image holds this one file. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
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

/* 1 if the hosts-file field f[0..len) is `from` or starts with `from` and a dot. */
static bool renamed(const char *f, size_t len, const char *from) {
    size_t n = strlen(from);
    return len >= n && !strncmp(f, from, n) && (len == n || f[n] == '.');
}

/* Copy /etc/hosts to `out` (written beside it, then renamed into place), renaming `from` to `to`. */
static int write_hosts(const char *out, const char *from, const char *to) {
    char partial[4096], line[4096];
    if (snprintf(partial, sizeof partial, "%s.partial", out) >= (int)sizeof partial) return -1;
    FILE *in = fopen("/etc/hosts", "r");
    if (!in) { perror("netgate: /etc/hosts"); return -1; }
    FILE *w = fopen(partial, "w");
    if (!w) { perror("netgate: hosts file"); fclose(in); return -1; }
    while (fgets(line, sizeof line, in)) {
        for (const char *p = line; *p;) {
            size_t gap = strspn(p, " \t\r\n");
            fwrite(p, 1, gap, w);
            p += gap;
            size_t len = strcspn(p, " \t\r\n");
            if (len && renamed(p, len, from)) fputs(to, w);
            else fwrite(p, 1, len, w);
            p += len;
        }
    }
    fclose(in);
    if (fchmod(fileno(w), 0644) != 0 || fclose(w) != 0 || rename(partial, out) != 0) {
        perror("netgate: hosts file");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    struct target deny[MAX_TARGETS], allow[MAX_TARGETS];
    int ndeny = 0, nallow = 0;
    double seconds = 120;
    const char *hosts_file = NULL, *rename_from = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strncmp(a, "--deny=", 7) && ndeny < MAX_TARGETS && parse(a + 7, &deny[ndeny]) == 0) ndeny++;
        else if (!strncmp(a, "--allow=", 8) && nallow < MAX_TARGETS && parse(a + 8, &allow[nallow]) == 0) nallow++;
        else if (!strncmp(a, "--seconds=", 10) && atof(a + 10) > 0) seconds = atof(a + 10);
        else if (!strncmp(a, "--hosts-file=", 13) && a[13]) hosts_file = a + 13;
        else if (!strncmp(a, "--hosts-rename=", 15) && strchr(a + 15, '=') > a + 15) rename_from = a + 15;
        else { fprintf(stderr, "netgate: bad argument %s\n", a); return 2; }
    }
    if (!hosts_file != !rename_from) {
        fprintf(stderr, "netgate: --hosts-file and --hosts-rename=FROM=TO go together\n");
        return 2;
    }
    if (hosts_file) {
        char from[1024];
        const char *eq = strchr(rename_from, '=');
        if ((size_t)(eq - rename_from) >= sizeof from || !eq[1]) {
            fprintf(stderr, "netgate: bad --hosts-rename=%s\n", rename_from);
            return 2;
        }
        memcpy(from, rename_from, (size_t)(eq - rename_from));
        from[eq - rename_from] = '\0';
        if (write_hosts(hosts_file, from, eq + 1) != 0) return 1;
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
