/* W5 pipelined framed RPC under concurrency, C reference.
 *   w5 server <limit_s>
 *       epoll server (non-blocking, level-triggered) for frames with a 4-byte big-endian
 *       length prefix: each read goes into the connection's buffer, every complete frame in
 *       it is parsed in place and answered with a frame carrying the same payload (one reply
 *       per request), and the replies of one read leave in one send. Runs until killed or
 *       the limit.
 *   w5 client <port> <server_pid> <points e.g. 10,100> <seconds> <warmup_s> <depth> <payload> <limit_s>
 *       for each point N: N connections, each keeping <depth> requests in flight: a request
 *       is a frame of <payload> bytes that carry the connection number and the request's
 *       sequence number (and bytes derived from both), so each reply is checked against the
 *       request it answers, in order. Each read's complete replies are checked, and as many
 *       new requests are sent (one send per read). After <warmup_s>, for <seconds>: replies/s,
 *       p50/p99 latency (request sent -> reply received), and the server's CPU over exactly
 *       that window (its CPU-time clock, clock_getcpuclockid; /proc/<server_pid>/stat
 *       otherwise); then the requests in flight are drained (and checked) and the
 *       connections closed.
 */
#include "bench_common.h"

#include <fcntl.h>
#include <sys/epoll.h>

#define IOBUF (64 * 1024)         /* a connection's read buffer (server) */
#define MAX_PAYLOAD (IOBUF - 4)   /* larger frames cannot fit: the server drops the connection */
#define MAX_FD 65536
#define MAX_CONNS 4096
#define MAX_DEPTH 1024

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        die("fcntl");
}

static inline uint32_t get_be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static inline void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* ---------- server ---------- */

struct sconn {
    unsigned char *in;  /* read buffer (IOBUF), allocated at the first read */
    size_t have;        /* bytes in `in` (an unfinished frame after parsing) */
    unsigned char *out; /* replies not yet sent (IOBUF: replies of one read never exceed it) */
    size_t off, len;    /* unsent replies: out[off, len) */
};

static void watch(int ep, int fd, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.fd = fd};
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
}

/* 0: sent or queued; -1: the connection failed */
static int flush(int ep, int fd, struct sconn *c)
{
    while (c->off < c->len) {
        ssize_t w = send(fd, c->out + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) { /* stop reading until the peer takes what is queued */
                watch(ep, fd, EPOLLOUT);
                return 0;
            }
            return -1;
        }
        c->off += (size_t)w;
    }
    c->off = c->len = 0;
    return 0;
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
    static struct sconn conns[MAX_FD];
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
                    int s = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                    if (s < 0)
                        break;
                    if (s >= MAX_FD) {
                        close(s);
                        continue;
                    }
                    set_nodelay(s);
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = s};
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, s, &cev) < 0)
                        die("epoll_ctl");
                }
                continue;
            }
            struct sconn *c = &conns[fd];
            if (c->len > 0) { /* writable again */
                if (flush(ep, fd, c) < 0)
                    goto drop;
                if (c->len == 0)
                    watch(ep, fd, EPOLLIN);
                continue;
            }
            if (!c->in) {
                c->in = malloc(IOBUF);
                c->out = malloc(IOBUF);
                if (!c->in || !c->out)
                    fail("out of memory");
            }
            ssize_t r = recv(fd, c->in + c->have, IOBUF - c->have, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (r <= 0)
                goto drop;
            size_t have = c->have + (size_t)r, pos = 0;
            unsigned char *in = c->in, *out = c->out;
            size_t olen = 0;
            while (have - pos >= 4) { /* every complete frame, parsed where it lies */
                uint32_t len = get_be32(in + pos);
                if (len > MAX_PAYLOAD)
                    goto drop;
                if (have - pos - 4 < len)
                    break;
                put_be32(out + olen, len); /* the reply: a frame with the same payload */
                memcpy(out + olen + 4, in + pos + 4, len);
                olen += 4 + (size_t)len;
                pos += 4 + (size_t)len;
            }
            if (pos > 0 && pos < have)
                memmove(in, in + pos, have - pos);
            c->have = have - pos;
            if (olen > 0) { /* one send for every reply of this read */
                c->off = 0;
                c->len = olen;
                if (flush(ep, fd, c) < 0)
                    goto drop;
            }
            continue;
        drop:
            epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
            close(fd);
            c->have = c->off = c->len = 0;
        }
    }
    return 0;
}

/* ---------- client ---------- */

struct conn {
    int fd;
    uint32_t id;
    uint64_t sent, recvd; /* requests sent, replies received (and checked) */
    unsigned char *in;    /* replies read, not yet complete */
    size_t have, cap;
    double *sent_at;      /* when request s was sent: sent_at[s % depth] */
};

/* The payload of request `seq` on connection `id`: seq (8 bytes), id (4), then bytes of both. */
static void make_payload(unsigned char *p, size_t size, uint32_t id, uint64_t seq)
{
    memcpy(p, &seq, 8);
    memcpy(p + 8, &id, 4);
    for (size_t i = 12; i < size; i++)
        p[i] = (unsigned char)(seq * 31u + id * 7u + i);
}

/* CPU seconds (user+sys, all threads) of another process (as in w4.c) */
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
    char *p = strrchr(line, ')');
    if (!p)
        return -1.0;
    unsigned long utime = 0, stime = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
        return -1.0;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* send `count` new requests on c in one send; the socket buffer holds them (at most depth
   frames are in flight), so this completes at once in practice */
static void send_requests(struct conn *c, int count, size_t payload, size_t depth, unsigned char *scratch)
{
    size_t frame = 4 + payload, len = 0;
    double t = now_s();
    for (int k = 0; k < count; k++) {
        put_be32(scratch + len, (uint32_t)payload);
        make_payload(scratch + len + 4, payload, c->id, c->sent);
        c->sent_at[c->sent % depth] = t;
        c->sent++;
        len += frame;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = send(c->fd, scratch + off, len - off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            die("send");
        }
        off += (size_t)w;
    }
}

/* latencies are kept as float microseconds: 4 bytes per reply (millions per point) */
static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* q-th quantile (0..1) of a sorted array, as bench_common.h's quantile() */
static double quantile_f(const float *sorted, size_t n, double q)
{
    if (n == 0)
        return 0.0;
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    if (i >= n)
        i = n - 1;
    return (double)sorted[i];
}

enum phase { WARMUP, MEASURE, DRAIN };

static void run_point(long port, long pid, int nconns, double seconds, double warmup, size_t depth,
                      size_t payload, int first)
{
    size_t frame = 4 + payload;
    unsigned char *scratch = malloc(depth * frame), *expect = malloc(payload);
    struct conn *conns = calloc((size_t)nconns, sizeof *conns);
    size_t cap = 1 << 20, nlat = 0;
    float *lat = malloc(cap * sizeof(float));
    if (!scratch || !expect || !conns || !lat)
        fail("out of memory");
    int ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        c->fd = connect_port(port);
        c->id = (uint32_t)i;
        c->cap = (depth + 1) * frame; /* more than that unread would be replies nobody asked for */
        c->in = malloc(c->cap);
        c->sent_at = malloc(depth * sizeof(double));
        if (!c->in || !c->sent_at)
            fail("out of memory");
        set_nodelay(c->fd);
        set_nonblock(c->fd);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
            die("epoll_ctl");
    }
    double t0 = now_s(), m0 = t0 + warmup, m1 = m0 + seconds;
    double s0 = 0, s1 = 0, c0 = 0, c1 = 0, tm0 = 0, tm1 = 0, last = t0;
    long long ops = 0, checked = 0;
    enum phase phase = WARMUP;
    for (int i = 0; i < nconns; i++)
        send_requests(&conns[i], (int)depth, payload, depth, scratch);
    int active = nconns;
    struct epoll_event events[256];
    while (active > 0) {
        int n = epoll_wait(ep, events, 256, 1000);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        double t = now_s();
        if (n == 0 && t - last > 5.0)
            fail("server stopped answering");
        if (phase == WARMUP && t >= m0) {
            phase = MEASURE;
            tm0 = t;
            s0 = proc_cpu(pid);
            c0 = cpu_s();
        }
        if (phase == MEASURE && t >= m1) {
            phase = DRAIN;
            tm1 = t;
            s1 = proc_cpu(pid);
            c1 = cpu_s();
        }
        for (int k = 0; k < n; k++) {
            struct conn *c = &conns[events[k].data.u32];
            if (c->have == c->cap)
                fail("more replies than requests");
            ssize_t r = recv(c->fd, c->in + c->have, c->cap - c->have, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (r <= 0)
                fail("server closed a connection");
            double tr = now_s();
            last = tr;
            size_t have = c->have + (size_t)r, pos = 0;
            int done = 0;
            while (have - pos >= frame) {
                if (get_be32(c->in + pos) != (uint32_t)payload)
                    fail("reply with a wrong length prefix");
                if (c->recvd >= c->sent)
                    fail("more replies than requests");
                make_payload(expect, payload, c->id, c->recvd);
                if (memcmp(c->in + pos + 4, expect, payload) != 0)
                    fail("reply payload does not match its request");
                if (phase == MEASURE) {
                    if (nlat == cap) {
                        cap *= 2;
                        lat = realloc(lat, cap * sizeof(float));
                        if (!lat)
                            fail("out of memory");
                    }
                    lat[nlat++] = (float)((tr - c->sent_at[c->recvd % depth]) * 1e6);
                    ops++;
                }
                c->recvd++;
                checked++;
                done++;
                pos += frame;
            }
            if (pos > 0 && pos < have)
                memmove(c->in, c->in + pos, have - pos);
            c->have = have - pos;
            if (phase != DRAIN) {
                if (done > 0)
                    send_requests(c, done, payload, depth, scratch);
            } else if (c->recvd == c->sent) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                active--;
            }
        }
    }
    if (phase != DRAIN)
        fail("the measured window never ended");
    for (int i = 0; i < nconns; i++) {
        close(conns[i].fd);
        free(conns[i].in);
        free(conns[i].sent_at);
    }
    close(ep);
    qsort(lat, nlat, sizeof(float), cmp_float);
    printf("%s{\"conns\": %d, \"ops\": %lld, \"seconds\": %.9f, \"cpu\": %.6f, \"server_cpu\": %.6f, "
           "\"p50_us\": %.3f, \"p99_us\": %.3f, \"checked\": %lld, \"depth\": %zu}",
           first ? "" : ", ", nconns, ops, tm1 - tm0, c1 - c0, (s0 < 0 || s1 < 0) ? -1.0 : s1 - s0,
           quantile_f(lat, nlat, 0.50), quantile_f(lat, nlat, 0.99), checked, depth);
    free(lat);
    free(conns);
    free(scratch);
    free(expect);
}

static int client(long port, long pid, const char *points, double seconds, double warmup, long depth,
                  long payload, long limit)
{
    set_limit(limit);
    if (payload < 12 || payload > MAX_PAYLOAD || depth < 1 || depth > MAX_DEPTH || seconds <= 0 || warmup < 0)
        fail("bad arguments");
    /* the requests in flight must fit the socket buffers: the client writes them blocking
       (spinning), and a server that stops reading while its replies wait would deadlock it */
    if ((size_t)depth * (size_t)(4 + payload) > IOBUF)
        fail("bad arguments: depth x (4 + payload) above 64 KiB");
    printf("RESULT {\"points\": [");
    const char *p = points;
    int first = 1;
    while (*p) {
        long n = strtol(p, (char **)&p, 10);
        if (n <= 0 || n > MAX_CONNS)
            fail("bad number of connections");
        run_point(port, pid, (int)n, seconds, warmup, (size_t)depth, (size_t)payload, first);
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
    if (argc >= 10 && strcmp(argv[1], "client") == 0)
        return client(arg_long(argc, argv, 2), arg_long(argc, argv, 3), argv[4], strtod(argv[5], NULL),
                      strtod(argv[6], NULL), arg_long(argc, argv, 7), arg_long(argc, argv, 8),
                      arg_long(argc, argv, 9));
    fail("usage: w5 server <limit_s> | w5 client <port> <server_pid> <points> <seconds> <warmup_s> <depth> "
         "<payload> <limit_s>");
    return 2;
}
