/* W4 echo under concurrency, C reference.
 *   w4 server <limit_s>
 *       epoll echo server (non-blocking, level-triggered); runs until killed or the limit.
 *   w4 client <port> <server_pid> <points e.g. 1,10,100> <seconds_per_point> <msg_size> <limit_s>
 *       for each point N: N connections, each sends msg_size bytes and waits for the whole
 *       echo before sending the next; requests/s, p50/p99 latency, and the server's CPU over
 *       the point (its CPU-time clock, clock_getcpuclockid; /proc/<server_pid>/stat otherwise).
 */
#include "bench_common.h"

#include <fcntl.h>
#include <sys/epoll.h>

#define IOBUF (64 * 1024)
#define MAX_CONNS 4096

/* ---------- server ---------- */

struct pending {
    unsigned char *data; /* bytes read but not yet echoed */
    size_t len;
};

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        die("fcntl");
}

static int server(long limit)
{
    set_limit(limit);
    int lfd = listen_announce();
    set_nonblock(lfd);
    int ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
        die("epoll_ctl");
    static struct pending pend[65536];
    static unsigned char buf[IOBUF];
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                for (;;) {
                    int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                    if (c < 0)
                        break;
                    if (c >= 65536) {
                        close(c);
                        continue;
                    }
                    set_nodelay(c);
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev) < 0)
                        die("epoll_ctl");
                }
                continue;
            }
            struct pending *p = &pend[fd];
            if (p->len > 0) { /* writable again: flush what is pending first */
                ssize_t w = send(fd, p->data, p->len, MSG_NOSIGNAL);
                if (w < 0 && errno != EAGAIN && errno != EINTR)
                    goto drop;
                if (w > 0) {
                    memmove(p->data, p->data + w, p->len - (size_t)w);
                    p->len -= (size_t)w;
                }
                if (p->len == 0) {
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = fd};
                    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
                }
                continue;
            }
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (r <= 0)
                goto drop;
            ssize_t w = send(fd, buf, (size_t)r, MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN && errno != EINTR)
                goto drop;
            if (w < 0)
                w = 0;
            if (w < r) { /* keep the rest, wait until writable */
                if (!p->data && !(p->data = malloc(IOBUF)))
                    fail("out of memory");
                memcpy(p->data, buf + w, (size_t)(r - w));
                p->len = (size_t)(r - w);
                struct epoll_event cev = {.events = EPOLLOUT, .data.fd = fd};
                epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
            }
            continue;
        drop:
            epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
            close(fd);
            p->len = 0;
        }
    }
    return 0;
}

/* ---------- client ---------- */

struct conn {
    int fd;
    size_t got;  /* echo bytes received for the current request */
    double sent; /* when the current request was sent */
};

/* CPU seconds (user+sys, all threads) of another process: its POSIX CPU-time clock
   (nanoseconds), else /proc/<pid>/stat (clock ticks, 10 ms) */
static double proc_cpu(long pid)
{
    clockid_t cid;
    struct timespec ts;
    if (clock_getcpuclockid((pid_t)pid, &cid) == 0 && clock_gettime(cid, &ts) == 0)
        return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1.0;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = 0;
    char *p = strrchr(line, ')'); /* the command name may contain spaces */
    if (!p)
        return -1.0;
    unsigned long utime = 0, stime = 0;
    /* after ')': state(3) ppid(4) ... utime is field 14, stime field 15 */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
        return -1.0;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static int send_request(struct conn *c, const unsigned char *msg, size_t len)
{
    size_t off = 0;
    c->got = 0;
    c->sent = now_s();
    while (off < len) { /* the socket buffer is empty: this completes at once in practice */
        ssize_t w = send(c->fd, msg + off, len - off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -1;
        }
        off += (size_t)w;
    }
    return 0;
}

static int run_point(long port, long pid, int nconns, double seconds, size_t msg_size, int first)
{
    static unsigned char buf[IOBUF];
    unsigned char *msg = malloc(msg_size);
    struct conn *conns = calloc((size_t)nconns, sizeof *conns);
    size_t cap = 1 << 16, nlat = 0;
    double *lat = malloc(cap * sizeof(double));
    if (!msg || !conns || !lat)
        fail("out of memory");
    memset(msg, 'e', msg_size);
    int ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    for (int i = 0; i < nconns; i++) {
        conns[i].fd = connect_port(port);
        set_nodelay(conns[i].fd);
        set_nonblock(conns[i].fd);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0)
            die("epoll_ctl");
    }
    double s0 = proc_cpu(pid), c0 = cpu_s(), t0 = now_s(), deadline = t0 + seconds;
    for (int i = 0; i < nconns; i++)
        if (send_request(&conns[i], msg, msg_size) < 0)
            die("send");
    int active = nconns;
    long long requests = 0;
    struct epoll_event events[256];
    while (active > 0) {
        int n = epoll_wait(ep, events, 256, 1000);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        if (n == 0 && now_s() > deadline + 5.0)
            fail("server stopped answering");
        double t = now_s();
        for (int k = 0; k < n; k++) {
            struct conn *c = &conns[events[k].data.u32];
            ssize_t r = recv(c->fd, buf, sizeof buf, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (r <= 0)
                fail("server closed a connection");
            c->got += (size_t)r;
            if (c->got < msg_size)
                continue;
            if (c->got > msg_size)
                fail("echo longer than the request");
            requests++;
            if (nlat == cap) {
                cap *= 2;
                lat = realloc(lat, cap * sizeof(double));
                if (!lat)
                    fail("out of memory");
            }
            lat[nlat++] = t - c->sent;
            if (t < deadline) {
                if (send_request(c, msg, msg_size) < 0)
                    die("send");
            } else {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                active--;
            }
        }
    }
    double secs = now_s() - t0, cpu = cpu_s() - c0, s1 = proc_cpu(pid);
    for (int i = 0; i < nconns; i++)
        close(conns[i].fd);
    close(ep);
    qsort(lat, nlat, sizeof(double), cmp_double);
    printf("%s{\"conns\": %d, \"ops\": %lld, \"seconds\": %.9f, \"cpu\": %.6f, \"server_cpu\": %.6f, "
           "\"p50_us\": %.3f, \"p99_us\": %.3f}",
           first ? "" : ", ", nconns, requests, secs, cpu, (s0 < 0 || s1 < 0) ? -1.0 : s1 - s0,
           quantile(lat, nlat, 0.50) * 1e6, quantile(lat, nlat, 0.99) * 1e6);
    free(lat);
    free(conns);
    free(msg);
    return 0;
}

static int client(long port, long pid, const char *points, double seconds, long msg_size, long limit)
{
    set_limit(limit);
    if (msg_size <= 0 || msg_size > IOBUF || seconds <= 0)
        fail("bad arguments");
    printf("RESULT {\"points\": [");
    const char *p = points;
    int first = 1;
    while (*p) {
        long n = strtol(p, (char **)&p, 10);
        if (n <= 0 || n > MAX_CONNS)
            fail("bad number of connections");
        run_point(port, pid, (int)n, seconds, (size_t)msg_size, first);
        first = 0;
        while (*p == ',')
            p++;
    }
    printf("]}\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "server") == 0)
        return server(arg_long(argc, argv, 2));
    if (argc >= 8 && strcmp(argv[1], "client") == 0)
        return client(arg_long(argc, argv, 2), arg_long(argc, argv, 3), argv[4], strtod(argv[5], NULL),
                      arg_long(argc, argv, 6), arg_long(argc, argv, 7));
    fail("usage: w4 server <limit_s> | w4 client <port> <server_pid> <points> <seconds> <msg_size> <limit_s>");
    return 2;
}
