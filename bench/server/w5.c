/* W5 pipelined framed RPC under concurrency: the C reference server and the load client
 * of bench/server/measure.py (a self-measurement of fastsock.Server; the official rows
 * are fastsock bench's).
 *
 *   w5 server <limit_s>
 *       epoll, level-triggered; per readable connection ONE recv into its buffer, every
 *       complete frame (4-byte big-endian length prefix) parsed in place and answered
 *       with a frame carrying the same payload, all replies of the read in ONE send.
 *   w5 client <port> <server_pid> <conns> <inflight> <warmup_s> <seconds> <payload> <limit_s>
 *       conns connections, each keeping `inflight` requests in flight: a new request as
 *       each response arrives, the new requests of one read in one send (as fastsock bench's
 *       W5 client; W5_BATCH_SENDS=0: each in its own send), every payload checked. Prints RESULT {"ops": n, "seconds": s, "server_cpu": s} for the measured
 *       part (server CPU from its CPU-time clock, or /proc/<pid>/stat).
 */
#include "../../fastsock/_bench/c/bench_common.h"

#include <fcntl.h>
#include <sys/epoll.h>

#define MAX_CONNS 4096

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        die("fcntl");
}

static uint32_t get_be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* ---------- server ---------- */

#define SBUF (64 * 1024)

struct sconn {
    unsigned char *in; /* SBUF bytes, partial frame kept at the front */
    size_t held;
    unsigned char *out; /* replies the kernel did not take */
    size_t out_len, out_cap;
};

static int server(long limit)
{
    set_limit(limit);
    int lfd = listen_announce();
    set_nonblock(lfd);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    static struct sconn conns[65536];
    static unsigned char reply[2 * SBUF];
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
                    struct sconn *sc = &conns[c];
                    if (!sc->in && !(sc->in = malloc(SBUF)))
                        fail("out of memory");
                    sc->held = sc->out_len = 0;
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            struct sconn *sc = &conns[fd];
            if (events[i].events & EPOLLOUT) {
                ssize_t w = send(fd, sc->out, sc->out_len, MSG_NOSIGNAL);
                if (w > 0) {
                    memmove(sc->out, sc->out + w, sc->out_len - (size_t)w);
                    sc->out_len -= (size_t)w;
                }
                if (sc->out_len == 0) {
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = fd};
                    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
                }
                continue;
            }
            ssize_t r = recv(fd, sc->in + sc->held, SBUF - sc->held, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (r <= 0)
                goto drop;
            size_t end = sc->held + (size_t)r, pos = 0, rlen = 0;
            while (end - pos >= 4) {
                uint32_t size = get_be32(sc->in + pos);
                if (size > SBUF - 4)
                    goto drop;
                if (end - pos < 4 + size)
                    break;
                put_be32(reply + rlen, size); /* the reply: a frame with the same payload */
                memcpy(reply + rlen + 4, sc->in + pos + 4, size);
                rlen += 4 + size;
                pos += 4 + size;
            }
            sc->held = end - pos;
            if (sc->held && pos)
                memmove(sc->in, sc->in + pos, sc->held);
            if (rlen == 0)
                continue;
            if (sc->out_len) { /* still waiting for EPOLLOUT: queue behind */
                if (sc->out_len + rlen > sc->out_cap) {
                    sc->out_cap = (sc->out_len + rlen) * 2;
                    sc->out = realloc(sc->out, sc->out_cap);
                    if (!sc->out)
                        fail("out of memory");
                }
                memcpy(sc->out + sc->out_len, reply, rlen);
                sc->out_len += rlen;
                continue;
            }
            ssize_t w = send(fd, reply, rlen, MSG_NOSIGNAL); /* one send per read */
            if (w < 0 && errno != EAGAIN && errno != EINTR)
                goto drop;
            if (w < 0)
                w = 0;
            if ((size_t)w < rlen) {
                size_t rest = rlen - (size_t)w;
                if (rest > sc->out_cap) {
                    sc->out_cap = rest * 2;
                    sc->out = realloc(sc->out, sc->out_cap);
                    if (!sc->out)
                        fail("out of memory");
                }
                memcpy(sc->out, reply + w, rest);
                sc->out_len = rest;
                struct epoll_event cev = {.events = EPOLLIN | EPOLLOUT, .data.fd = fd};
                epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
            }
            continue;
        drop:
            epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
            close(fd);
            sc->held = sc->out_len = 0;
        }
    }
    return 0;
}

/* ---------- client ---------- */

struct cconn {
    int fd;
    unsigned char buf[64 * 1024];
    size_t held;
};

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
    unsigned long utime = 0, stime = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
        return -1.0;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static int batch_sends = 1; /* W5_BATCH_SENDS=0 in the environment: one send per request */

static int client(long port, long pid, int nconns, int inflight, double warmup, double seconds, size_t psize,
                  long limit)
{
    const char *bs = getenv("W5_BATCH_SENDS");
    batch_sends = bs == NULL || strcmp(bs, "0") != 0;
    set_limit(limit);
    if (nconns <= 0 || nconns > MAX_CONNS || inflight <= 0 || inflight > 256 || psize > 1024)
        fail("bad arguments");
    size_t fsize = 4 + psize;
    unsigned char *req = malloc(fsize * (size_t)inflight);
    struct cconn *conns = calloc((size_t)nconns, sizeof *conns);
    if (!req || !conns)
        fail("out of memory");
    for (int k = 0; k < inflight; k++) {
        put_be32(req + k * fsize, (uint32_t)psize);
        for (size_t j = 0; j < psize; j++)
            req[k * fsize + 4 + j] = (unsigned char)('a' + (j % 26));
    }
    int ep = epoll_create1(0);
    for (int i = 0; i < nconns; i++) {
        conns[i].fd = connect_port(port);
        set_nodelay(conns[i].fd);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
    }
    for (int i = 0; i < nconns; i++) { /* blocking sockets: the first window goes at once */
        if (write_all(conns[i].fd, req, fsize * (size_t)inflight) < 0)
            die("send");
        set_nonblock(conns[i].fd);
    }
    double t0 = now_s(), start = t0 + warmup, stop = start + seconds, s0 = -1;
    long long ops = 0, counted = 0;
    int measuring = 0;
    struct epoll_event events[256];
    for (;;) {
        double t = now_s();
        if (!measuring && t >= start) {
            measuring = 1;
            s0 = proc_cpu(pid);
            counted = ops;
            start = t;
        }
        if (t >= stop)
            break;
        int n = epoll_wait(ep, events, 256, 1000);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            fail("the server stopped answering");
        for (int k = 0; k < n; k++) {
            struct cconn *c = &conns[events[k].data.u32];
            ssize_t r = recv(c->fd, c->buf + c->held, sizeof c->buf - c->held, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (r <= 0)
                fail("the server closed a connection");
            size_t end = c->held + (size_t)r, pos = 0;
            int done = 0;
            while (end - pos >= fsize) {
                if (get_be32(c->buf + pos) != psize || memcmp(c->buf + pos + 4, req + 4, psize) != 0)
                    fail("wrong reply");
                pos += fsize;
                done++;
            }
            c->held = end - pos;
            if (c->held && pos)
                memmove(c->buf, c->buf + pos, c->held);
            if (done) {
                ops += done;
                if (batch_sends) { /* the new requests of one read in one send */
                    if (write_all(c->fd, req, fsize * (size_t)done) < 0)
                        die("send");
                } else { /* a new request, in its own send, as each response arrives */
                    for (int d = 0; d < done; d++)
                        if (write_all(c->fd, req, fsize) < 0)
                            die("send");
                }
            }
        }
    }
    double secs = now_s() - start, s1 = proc_cpu(pid);
    printf("RESULT {\"ops\": %lld, \"seconds\": %.6f, \"server_cpu\": %.6f}\n", ops - counted, secs,
           (s0 < 0 || s1 < 0) ? -1.0 : s1 - s0);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "server") == 0)
        return server(arg_long(argc, argv, 2));
    if (argc >= 10 && strcmp(argv[1], "client") == 0)
        return client(arg_long(argc, argv, 2), arg_long(argc, argv, 3), (int)arg_long(argc, argv, 4),
                      (int)arg_long(argc, argv, 5), strtod(argv[6], NULL), strtod(argv[7], NULL),
                      (size_t)arg_long(argc, argv, 8), arg_long(argc, argv, 9));
    fail("usage: w5 server <limit_s> | w5 client <port> <pid> <conns> <inflight> <warmup> <seconds> <payload> "
         "<limit_s>");
    return 2;
}
