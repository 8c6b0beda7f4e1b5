/* Unit tests of src_c/fs_server.c (plain C; built and run by tests/test_c_units.py): the
 * Server's loop driven over loopback TCP and AF_UNIX sockets, without Python. */
#include "fs_server.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

/* -- a fake clock ----------------------------------------------------------------------- */

static int64_t fake_now = 1000000000;
static int64_t fake_clock(void *arg)
{
    (void)arg;
    return fake_now;
}
#define SEC 1000000000LL

/* -- sockets ---------------------------------------------------------------------------- */

static int listen_tcp(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    REQUIRE(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    REQUIRE(listen(fd, 64) == 0);
    socklen_t len = sizeof a;
    REQUIRE(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static int connect_tcp(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    REQUIRE(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    struct timeval tv = {.tv_sec = 3, .tv_usec = 0}; /* a broken test fails, never hangs */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        REQUIRE(w > 0);
        c += w;
        n -= (size_t)w;
    }
}

/* A frame with a 4-byte big-endian length prefix. */
static size_t frame4(char *out, const char *payload, size_t n)
{
    out[0] = (char)((n >> 24) & 0xff);
    out[1] = (char)((n >> 16) & 0xff);
    out[2] = (char)((n >> 8) & 0xff);
    out[3] = (char)(n & 0xff);
    memcpy(out + 4, payload, n);
    return n + 4;
}

/* Receive exactly n bytes (3 s at most). Returns the count received. */
static size_t recv_n(int fd, char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(fd, buf + got, n - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    return got;
}

/* -- the application side --------------------------------------------------------------- */

typedef struct {
    int accepted, closed, data, wakeups, accept_errors, watched, watch_slot;
    uint64_t need;
    int reason, err;
    uint64_t size;
    fs_conn *conn; /* the last accepted */
    uint64_t id;
    int echo;           /* framed: echo every frame; raw: echo and consume everything */
    int frames;         /* frames seen */
    size_t raw_keep;    /* raw mode: leave this many bytes unconsumed */
    int close_after;    /* framed: fs_conn_close after this many frames (0: never) */
} app;

static fs_server_config config(int kind)
{
    fs_server_config c;
    memset(&c, 0, sizeof c);
    if (kind) {
        c.framing.kind = FS_FRAMING_LENGTH;
        c.framing.width = 4;
        c.framing.max_size = 1 << 20;
    }
    c.read_size = 65536;
    c.max_buffer = (1 << 20) + 65536;
    c.high_water = 1 << 20;
    c.low_water = 1 << 18;
    c.write_limit = 16 << 20;
    return c;
}

static int stop_reasons[16]; /* CLOSED reasons seen so far */

static int turn(fs_server *s, app *a, int timeout_ms, int raw)
{
    int n = fs_server_run_once(s, timeout_ms);
    REQUIRE(n >= 0);
    const fs_server_event *ev = fs_server_events(s);
    for (int i = 0; i < n; i++) {
        fs_conn *c = ev[i].conn;
        switch (ev[i].type) {
        case FS_EV_ACCEPTED:
            a->accepted++;
            a->conn = c;
            a->id = fs_conn_id(c);
            break;
        case FS_EV_DATA:
            if (raw) {
                const char *p;
                size_t len;
                a->data++;
                if (fs_conn_raw_data(s, c, &p, &len)) {
                    size_t use = len > a->raw_keep ? len - a->raw_keep : 0;
                    if (a->echo && use)
                        CHECK(fs_conn_write(s, c, p, use) == 0);
                    fs_conn_raw_consume(s, c, use);
                }
            } else {
                const char *p;
                size_t len;
                a->data++;
                while (fs_conn_next_frame(s, c, &p, &len)) {
                    a->frames++;
                    if (a->echo)
                        CHECK(fs_conn_send_frame(s, c, p, len) == 0);
                    if (a->close_after && a->frames == a->close_after)
                        fs_conn_close(s, c);
                }
            }
            break;
        case FS_EV_CLOSED:
            a->closed++;
            if (ev[i].reason >= 0 && ev[i].reason < 16)
                stop_reasons[ev[i].reason]++;
            a->reason = ev[i].reason;
            a->err = ev[i].err;
            a->size = ev[i].size;
            a->need = ev[i].need;
            break;
        case FS_EV_WAKEUP:
            a->wakeups++;
            break;
        case FS_EV_WATCH:
            a->watched++;
            a->watch_slot = ev[i].listener;
            break;
        case FS_EV_ACCEPT_ERROR:
            a->accept_errors++;
            a->err = ev[i].err;
            break;
        default:
            CHECK(!"unknown event");
        }
    }
    return n;
}

/* Run turns (20 ms waits) until cond holds, 300 turns at most. */
#define UNTIL(s, a, raw, cond)                                   \
    do {                                                         \
        for (int turn_i_ = 0; turn_i_ < 300 && !(cond); turn_i_++) \
            turn((s), (a), 20, (raw));                           \
        CHECK(cond);                                             \
    } while (0)

static fs_server *server(const fs_server_config *cfg, int *port, int *lfd)
{
    fs_server *s = NULL;
    int rc = fs_server_new(&s, cfg);
    if (rc != 0)
        fprintf(stderr, "fs_server_new: %d\n", rc);
    REQUIRE(rc == 0);
    *lfd = listen_tcp(port);
    REQUIRE(fs_server_add_listener(s, *lfd, 1) == 0);
    return s;
}

static void finish(fs_server *s, int lfd)
{
    fs_server_free(s);
    close(lfd);
}

/* -- tests ------------------------------------------------------------------------------ */

static void test_config_checked(void)
{
    fs_server *s = (fs_server *)1;
    fs_server_config c = config(1);
    c.low_water = c.high_water + 1;
    CHECK(fs_server_new(&s, &c) == -EINVAL && s == NULL);
    c = config(1);
    c.framing.width = 3;
    CHECK(fs_server_new(&s, &c) == -EINVAL);
    c = config(0);
    c.max_buffer = c.read_size - 1;
    CHECK(fs_server_new(&s, &c) == -EINVAL);
}

/* Frames pipelined in one write are answered in one send. */
static void test_echo_one_send(void)
{
    fs_server_config cfg = config(1);
    int port, lfd;
    fs_server *s = server(&cfg, &port, &lfd);
    app a = {.echo = 1};
    int cl = connect_tcp(port);
    UNTIL(s, &a, 0, a.accepted == 1);
    CHECK(fs_server_get_stats(s)->connections == 1);
    char msg[3 * 68];
    size_t n = 0;
    for (int i = 0; i < 3; i++) {
        char payload[64];
        memset(payload, 'a' + i, sizeof payload);
        n += frame4(msg + n, payload, sizeof payload);
    }
    send_all(cl, msg, n);
    UNTIL(s, &a, 0, a.frames == 3);
    uint64_t writes = fs_server_get_stats(s)->writes;
    CHECK(fs_conn_pending(a.conn) == n);
    turn(s, &a, 0, 0); /* flush */
    CHECK(fs_server_get_stats(s)->writes == writes + 1);
    char back[sizeof msg];
    CHECK(recv_n(cl, back, n) == n && memcmp(back, msg, n) == 0);
    const fs_server_stats *st = fs_server_get_stats(s);
    CHECK(st->frames_in == 3 && st->frames_out == 3 && st->bytes_in == n && st->bytes_out == n);
    /* The emptied buffers went back: an idle connection holds no memory block. */
    CHECK(fs_conn_buffered(a.conn) == 0 && fs_conn_pending(a.conn) == 0);
    close(cl);
    UNTIL(s, &a, 0, a.closed == 1);
    CHECK(a.reason == FS_CLOSE_EOF && a.size == 0);
    CHECK(fs_server_get_stats(s)->connections == 0 && fs_server_get_stats(s)->closed == 1);
    finish(s, lfd);
}

/* The inline length-prefix paths: every width and byte order, partial headers too. */
static void test_length_prefix_widths(void)
{
    static const unsigned widths[] = {1, 2, 4, 8};
    for (int little = 0; little < 2; little++)
        for (int k = 0; k < 4; k++) {
            fs_server_config cfg = config(1);
            unsigned w = widths[k];
            cfg.framing.width = w;
            cfg.framing.little = little;
            cfg.framing.max_size = w == 1 ? 255 : 1000;
            int port, lfd;
            fs_server *s = server(&cfg, &port, &lfd);
            app a = {.echo = 1};
            int c = connect_tcp(port);
            UNTIL(s, &a, 0, a.accepted == 1);
            char msg[64];
            size_t n = 0;
            for (int f = 0; f < 2; f++) { /* "abc" then "" */
                size_t plen = f == 0 ? 3 : 0;
                for (unsigned i = 0; i < w; i++) {
                    unsigned shift = 8 * (little ? i : w - 1 - i);
                    msg[n + i] = (char)(shift < 64 ? (plen >> shift) & 0xff : 0);
                }
                memcpy(msg + n + w, "abc", plen);
                n += w + plen;
            }
            send_all(c, msg, 1); /* a partial header first */
            for (int i = 0; i < 3; i++)
                turn(s, &a, 5, 0);
            send_all(c, msg + 1, n - 1);
            UNTIL(s, &a, 0, a.frames == 2);
            turn(s, &a, 0, 0);
            char back[64];
            CHECK(recv_n(c, back, n) == n && memcmp(back, msg, n) == 0);
            close(c);
            UNTIL(s, &a, 0, a.closed == 1);
            finish(s, lfd);
        }
}

/* A message of several frames split in two writes at every position. */
static void test_partial_frames_every_split(void)
{
    fs_server_config cfg = config(1);
    cfg.read_size = 7; /* small reads: frames straddle recv calls too */
    int port, lfd;
    fs_server *s = server(&cfg, &port, &lfd);
    app a = {.echo = 1};
    int cl = connect_tcp(port);
    UNTIL(s, &a, 0, a.accepted == 1);
    char msg[64];
    size_t n = 0;
    n += frame4(msg + n, "hello", 5);
    n += frame4(msg + n, "", 0);
    n += frame4(msg + n, "world!!", 7);
    int want = 0;
    for (size_t k = 1; k < n; k++) {
        send_all(cl, msg, k);
        for (int i = 0; i < 3; i++)
            turn(s, &a, 5, 0);
        send_all(cl, msg + k, n - k);
        want += 3;
        UNTIL(s, &a, 0, a.frames == want);
        turn(s, &a, 0, 0);
        char back[64];
        CHECK(recv_n(cl, back, n) == n && memcmp(back, msg, n) == 0);
    }
    close(cl);
    UNTIL(s, &a, 0, a.closed == 1);
    CHECK(a.reason == FS_CLOSE_EOF);
    finish(s, lfd);
}

/* Above high_water a connection stops delivering held frames until its output drains. */
static void test_backpressure_holds_frames(void)
{
    fs_server_config cfg = config(1);
    cfg.high_water = 100;
    cfg.low_water = 10;
    cfg.write_limit = 1000;
    int port, lfd;
    fs_server *s = server(&cfg, &port, &lfd);
    app a = {.echo = 1};
    int cl = connect_tcp(port);
    UNTIL(s, &a, 0, a.accepted == 1);
    char msg[10 * 68], payload[64];
    memset(payload, 'x', sizeof payload);
    size_t n = 0;
    for (int i = 0; i < 10; i++)
        n += frame4(msg + n, payload, sizeof payload);
    send_all(cl, msg, n);
    UNTIL(s, &a, 0, a.frames >= 2);
    /* Two replies (136 bytes) pass high_water: the other eight frames are held. */
    CHECK(a.frames == 2);
    CHECK(fs_conn_paused(a.conn) == 2 && fs_server_get_stats(s)->paused == 1);
    const char *p;
    size_t len;
    CHECK(fs_conn_next_frame(s, a.conn, &p, &len) == 0);
    /* write_limit: nothing queued past it */
    char big[1000];
    memset(big, 'y', sizeof big);
    CHECK(fs_conn_write(s, a.conn, big, sizeof big) == -ENOBUFS);
    CHECK(fs_conn_pending(a.conn) == 136);
    /* The flush empties the queue (the kernel takes it): held frames come back without a
     * new byte from the peer. */
    UNTIL(s, &a, 0, a.frames == 10);
    turn(s, &a, 0, 0);
    char back[sizeof msg];
    CHECK(recv_n(cl, back, n) == n && memcmp(back, msg, n) == 0);
    CHECK(fs_server_get_stats(s)->paused == 0);
    close(cl);
    UNTIL(s, &a, 0, a.closed == 1);
    finish(s, lfd);
}

/* A peer that reads nothing: output stays pending, EPOLLOUT finishes it later. */
static void test_partial_send_then_writable(void)
{
    fs_server_config cfg = config(0);
    int port, lfd;
    fs_server *s = server(&cfg, &port, &lfd);
    app a = {0};
    int cl = connect_tcp(port);
    UNTIL(s, &a, 1, a.accepted == 1);
    int small = 4096;
    setsockopt(fs_conn_fd(a.conn), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    size_t total = 4 << 20;
    char *big = malloc(total);
    REQUIRE(big != NULL);
    for (size_t i = 0; i < total; i++)
        big[i] = (char)(i * 7);
    CHECK(fs_conn_write(s, a.conn, big, total) == 0);
    turn(s, &a, 0, 1);
    CHECK(fs_conn_pending(a.conn) > 0);                /* the kernel took part of it */
    CHECK(fs_conn_paused(a.conn) == 2);                /* and the rest is above high_water */
    char *back = malloc(total);
    REQUIRE(back != NULL);
    size_t got = 0;
    while (got < total) {
        turn(s, &a, 1, 1);
        ssize_t r = recv(cl, back + got, total - got, MSG_DONTWAIT);
        if (r > 0)
            got += (size_t)r;
        else if (r == 0 || (errno != EAGAIN && errno != EINTR))
            break;
    }
    CHECK(got == total && memcmp(back, big, total) == 0);
    CHECK(fs_conn_pending(a.conn) == 0 && fs_conn_paused(a.conn) == 0);
    CHECK(fs_server_get_stats(s)->writes > 1 && fs_server_get_stats(s)->bytes_out == total);
    free(big);
    free(back);
    close(cl);
    UNTIL(s, &a, 1, a.closed == 1);
    finish(s, lfd);
}

static void test_idle_and_frame_timeouts(void)
{
    fs_server_config cfg = config(1);
    cfg.idle_timeout_ns = 10 * SEC;
    cfg.frame_timeout_ns = 3 * SEC;
    int port, lfd;
    fs_server *s = server(&cfg, &port, &lfd);
    fs_server_set_clock(s, fake_clock, NULL);
    app a = {.echo = 1};

    /* idle: nothing in or out for 10 s */
    int c1 = connect_tcp(port);
    UNTIL(s, &a, 0, a.accepted == 1);
    fake_now += 9 * SEC;
    turn(s, &a, 0, 0);
    CHECK(a.closed == 0);
    char f[16];
    size_t n = frame4(f, "ping", 4);
    send_all(c1, f, n); /* activity: the idle clock starts again */
    UNTIL(s, &a, 0, a.frames == 1);
    turn(s, &a, 0, 0); /* the echo leaves now (at the next turn's start): the clock starts again */
    fake_now += 9 * SEC;
    turn(s, &a, 0, 0);
    CHECK(a.closed == 0);
    fake_now += 2 * SEC;
    turn(s, &a, 0, 0);
    UNTIL(s, &a, 0, a.closed == 1);
    CHECK(a.reason == FS_CLOSE_IDLE && fs_server_get_stats(s)->timeouts == 1);
    close(c1);

    /* frame: a frame begun must be complete in 3 s, whatever else arrives */
    int c2 = connect_tcp(port);
    UNTIL(s, &a, 0, a.accepted == 2);
    send_all(c2, f, 2); /* half a header */
    UNTIL(s, &a, 0, fs_conn_buffered(a.conn) == 2);
    turn(s, &a, 0, 0);
    fake_now += 2 * SEC;
    send_all(c2, f + 2, 2); /* more of the same frame: the clock keeps running */
    UNTIL(s, &a, 0, fs_conn_buffered(a.conn) == 4);
    turn(s, &a, 0, 0);
    fake_now += 1 * SEC + 1;
    turn(s, &a, 0, 0);
    UNTIL(s, &a, 0, a.closed == 2);
    CHECK(a.reason == FS_CLOSE_FRAME_TIMEOUT && a.size == 4);
    CHECK(fs_server_get_stats(s)->timeouts == 2);
    close(c2);

    /* complete frames stop the frame clock */
    int c3 = connect_tcp(port);
    UNTIL(s, &a, 0, a.accepted == 3);
    for (int i = 0; i < 4; i++) {
        send_all(c3, f, n);
        int want = a.frames + 1;
        UNTIL(s, &a, 0, a.frames == want);
        turn(s, &a, 0, 0);
        fake_now += 2 * SEC;
        turn(s, &a, 0, 0);
    }
    CHECK(a.closed == 2);
    char back[16];
    for (int i = 0; i < 4; i++)
        CHECK(recv_n(c3, back, n) == n);
    close(c3);
    UNTIL(s, &a, 0, a.closed == 3);
    CHECK(a.reason == FS_CLOSE_EOF);
    finish(s, lfd);
}

/* Timeouts and a stop's grace past what now + timeout holds in int64: "never", not a
 * deadline wrapped into the past. */
static void test_deadlines_saturate(void)
{
    fs_server_config cfg = config(1);
    cfg.idle_timeout_ns = INT64_MAX - 1;
    cfg.frame_timeout_ns = INT64_MAX;
    int port, lfd;
    fs_server *s = server(&cfg, &port, &lfd);
    fs_server_set_clock(s, fake_clock, NULL);
    app a = {.echo = 1};
    int c1 = connect_tcp(port);
    UNTIL(s, &a, 0, a.accepted == 1);
    char f[16];
    send_all(c1, f, frame4(f, "ab", 2) - 1); /* a frame begun: the frame clock runs */
    UNTIL(s, &a, 0, fs_conn_buffered(a.conn) == 5);
    fake_now += 1000 * SEC;
    for (int i = 0; i < 3; i++)
        turn(s, &a, 0, 0);
    CHECK(a.closed == 0 && fs_server_get_stats(s)->timeouts == 0);
    fs_server_stop(s, INT64_MAX); /* graceful, for as long as it takes */
    fake_now += 1000 * SEC;
    for (int i = 0; i < 3; i++)
        turn(s, &a, 0, 0);
    CHECK(a.closed == 0 && !fs_server_stopped(s));
    close(c1);
    UNTIL(s, &a, 0, a.closed == 1);
    CHECK(a.reason == FS_CLOSE_STOP);
    memset(stop_reasons, 0, sizeof stop_reasons); /* test_graceful_stop counts from 0 */
    finish(s, lfd);
}

/* A slow handler batch: the reply leaves at the next turn's start, and the idle clock
 * restarts then (with the clock read then), not at the read before the batch. */
static void test_idle_clock_restarts_when_the_reply_leaves(void)
{
    fs_server_config cfg = config(1);
    cfg.idle_timeout_ns = 10 * SEC;
    int port, lfd;
    fs_server *s = server(&cfg, &port, &lfd);
    fs_server_set_clock(s, fake_clock, NULL);
    app a = {.echo = 1};
    int c1 = connect_tcp(port);
    UNTIL(s, &a, 0, a.accepted == 1);
    char f[16], back[16];
    size_t n = frame4(f, "ping", 4);
    send_all(c1, f, n);
    UNTIL(s, &a, 0, a.frames == 1); /* the echo is queued ... */
    fake_now += 9 * SEC;            /* ... by a handler batch that took 9 s */
    turn(s, &a, 0, 0);              /* the echo leaves now: idle until 19 s from here */
    CHECK(recv_n(c1, back, n) == n && memcmp(back, f, n) == 0);
    fake_now += 5 * SEC; /* 14 s after the read, 5 s after the reply */
    turn(s, &a, 0, 0);
    turn(s, &a, 0, 0);
    CHECK(a.closed == 0);
    fake_now += 6 * SEC; /* 11 s after the reply */
    UNTIL(s, &a, 0, a.closed == 1);
    CHECK(a.reason == FS_CLOSE_IDLE);
    close(c1);
    finish(s, lfd);
}

/* read_size 1: a partial frame held must still let the buffer grow past its first block. */
static void test_read_size_one_grows(void)
{
    fs_server_config cfg = config(1);
    cfg.read_size = 1;
    int port, lfd;
    fs_server *s = server(&cfg, &port, &lfd);
    app a = {.echo = 1};
    int c1 = connect_tcp(port);
    UNTIL(s, &a, 0, a.accepted == 1);
    size_t len = 10 * 1024;
    char *f = malloc(len + 4), *back = malloc(len + 4);
    REQUIRE(f != NULL && back != NULL);
    char *payload = malloc(len);
    REQUIRE(payload != NULL);
    for (size_t i = 0; i < len; i++)
        payload[i] = (char)(i * 13);
    size_t n = frame4(f, payload, len);
    send_all(c1, f, n);
    for (int i = 0; i < 20000 && a.frames == 0 && a.closed == 0; i++)
        turn(s, &a, 1, 0); /* one byte per read */
    CHECK(a.frames == 1 && a.closed == 0);
    turn(s, &a, 0, 0);
    CHECK(recv_n(c1, back, n) == n && memcmp(back, f, n) == 0);
    free(f);
    free(back);
    free(payload);
    close(c1);
    UNTIL(s, &a, 0, a.closed == 1);
    finish(s, lfd);
}

/* Raw mode's frame clock: bytes left unconsumed start it; it keeps running while bytes
 * that arrived before remain, and starts anew when only this turn's bytes are left. */
static void test_raw_frame_clock(void)
{
    fs_server_config cfg = config(0);
    cfg.frame_timeout_ns = 3 * SEC;
    int port, lfd;
    fs_server *s = server(&cfg, &port, &lfd);
    fs_server_set_clock(s, fake_clock, NULL);
    app a = {.raw_keep = 3};
    int c = connect_tcp(port);
    UNTIL(s, &a, 1, a.accepted == 1);
    send_all(c, "abcd", 4); /* consumes "a", holds "bcd": the clock starts */
    UNTIL(s, &a, 1, fs_server_get_stats(s)->bytes_in == 4);
    turn(s, &a, 0, 1);
    fake_now += 2 * SEC;
    send_all(c, "e", 1); /* consumes "b", holds "cde": "cd" came before, the clock runs on */
    UNTIL(s, &a, 1, fs_server_get_stats(s)->bytes_in == 5);
    turn(s, &a, 0, 1);
    fake_now += SEC + 1;
    UNTIL(s, &a, 1, a.closed == 1);
    CHECK(a.reason == FS_CLOSE_FRAME_TIMEOUT);
    close(c);

    c = connect_tcp(port);
    UNTIL(s, &a, 1, a.accepted == 2);
    a.raw_keep = 2;
    send_all(c, "abcd", 4); /* holds "cd" */
    UNTIL(s, &a, 1, fs_server_get_stats(s)->bytes_in == 9);
    turn(s, &a, 0, 1);
    fake_now += 2 * SEC;
    send_all(c, "ef", 2); /* consumes "cd": only this turn's "ef" is left, the clock starts anew */
    UNTIL(s, &a, 1, fs_server_get_stats(s)->bytes_in == 11);
    turn(s, &a, 0, 1);
    fake_now += 2 * SEC;
    turn(s, &a, 0, 1);
    CHECK(a.closed == 1);
    fake_now += SEC + 1;
    UNTIL(s, &a, 1, a.closed == 2);
    CHECK(a.reason == FS_CLOSE_FRAME_TIMEOUT);
    close(c);
    finish(s, lfd);
}

static void test_close_reasons(void)
{
    fs_server_config cfg = config(1);
    cfg.framing.max_size = 1000;
    cfg.read_size = 2000;
    cfg.max_buffer = 2000;
    int port, lfd;
    fs_server *s = server(&cfg, &port, &lfd);
    app a = {.echo = 1};
    char f[64] = {0}; /* zeros after the frame: the "3 bytes of the next" sent below are defined */
    size_t n = frame4(f, "data", 4);

    /* EOF in the middle of a frame: the incomplete bytes are reported */
    int c = connect_tcp(port);
    UNTIL(s, &a, 0, a.accepted == 1);
    send_all(c, f, n + 3); /* a frame, then 3 bytes of the next */
    UNTIL(s, &a, 0, a.frames == 1);
    shutdown(c, SHUT_WR);
    UNTIL(s, &a, 0, a.closed == 1);
    CHECK(a.reason == FS_CLOSE_EOF && a.size == 3 && a.need == 0); /* 3 bytes: the header is not whole */
    char back[64];
    CHECK(recv_n(c, back, n) == n); /* the reply left before the close */
    CHECK(recv(c, back, 1, 0) == 0);
    close(c);

    /* ... with its header whole: the frame's size is known, and the bytes are kept */
    c = connect_tcp(port);
    UNTIL(s, &a, 0, a.accepted == 2);
    char part[16];
    size_t plen = frame4(part, "partial", 7);
    send_all(c, part, 6);
    UNTIL(s, &a, 0, fs_server_get_stats(s)->bytes_in == n + 3 + 6);
    shutdown(c, SHUT_WR);
    for (int i = 0; i < 300 && a.closed < 2; i++) {
        int k = fs_server_run_once(s, 20);
        const fs_server_event *ev = fs_server_events(s);
        for (int j = 0; j < k; j++)
            if (ev[j].type == FS_EV_CLOSED) {
                a.closed++;
                const char *held;
                CHECK(ev[j].reason == FS_CLOSE_EOF && ev[j].size == 6 && ev[j].need == plen);
                CHECK(fs_conn_held(ev[j].conn, &held) == 6 && memcmp(held, part, 6) == 0);
            }
    }
    CHECK(a.closed == 2);
    close(c);

    /* a length prefix above max_size: refused from the header */
    c = connect_tcp(port);
    UNTIL(s, &a, 0, a.accepted == 3);
    char hostile[4] = {0x7f, 0, 0, 0};
    send_all(c, hostile, 4);
    UNTIL(s, &a, 0, a.closed == 3);
    CHECK(a.reason == FS_CLOSE_TOO_LARGE && a.size == ((uint64_t)0x7f << 24));
    CHECK(fs_server_get_stats(s)->errors == 1);
    close(c);

    /* fs_conn_close after queued replies: they leave first */
    a.close_after = a.frames + 2;
    c = connect_tcp(port);
    UNTIL(s, &a, 0, a.accepted == 4);
    char three[3 * 8];
    for (int i = 0; i < 3; i++)
        frame4(three + 8 * i, "data", 4);
    send_all(c, three, sizeof three);
    UNTIL(s, &a, 0, a.closed == 4);
    CHECK(a.reason == FS_CLOSE_LOCAL);
    CHECK(recv_n(c, back, 16) == 16);  /* two replies, the third frame was never delivered */
    CHECK(recv(c, back, 1, 0) == 0);
    a.close_after = 0;
    close(c);

    /* abort drops queued output */
    c = connect_tcp(port);
    UNTIL(s, &a, 0, a.accepted == 5);
    CHECK(fs_conn_send_frame(s, a.conn, "zzz", 3) == 0);
    fs_conn_abort(s, a.conn);
    CHECK(fs_conn_closing(a.conn));
    CHECK(fs_conn_send_frame(s, a.conn, "zzz", 3) == -EPIPE);
    UNTIL(s, &a, 0, a.closed == 5);
    CHECK(a.reason == FS_CLOSE_ABORT);
    CHECK(recv(c, back, 1, 0) == 0);
    close(c);

    /* a reset by the peer */
    c = connect_tcp(port);
    UNTIL(s, &a, 0, a.accepted == 6);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(c);
    UNTIL(s, &a, 0, a.closed == 6);
    CHECK(a.reason == FS_CLOSE_ERROR && a.err == ECONNRESET);

    /* reply framing errors are the caller's to report */
    c = connect_tcp(port);
    UNTIL(s, &a, 0, a.accepted == 7);
    char toobig[1001];
    memset(toobig, 0, sizeof toobig);
    CHECK(fs_conn_send_frame(s, a.conn, toobig, sizeof toobig) == -EMSGSIZE);
    CHECK(fs_conn_pending(a.conn) == 0);
    close(c);
    UNTIL(s, &a, 0, a.closed == 7);
    finish(s, lfd);
}

/* fs_conn_next_frame_deferred: the frames before a refused one are handed out, the refusal
 * waits for fs_conn_refuse_pending, and replies queued meanwhile leave before the close. */
static void test_deferred_refusal(void)
{
    fs_server_config cfg = config(1);
    cfg.framing.max_size = 100;
    int port, lfd;
    fs_server *s = server(&cfg, &port, &lfd);
    app a = {0};
    int c = connect_tcp(port);
    UNTIL(s, &a, 0, a.accepted == 1);
    char wire[32];
    size_t n = frame4(wire, "one", 3);
    n += frame4(wire + n, "two", 3);
    const char hostile[4] = {0, 0, 0x10, 0}; /* 4096 > max_size */
    memcpy(wire + n, hostile, 4);
    send_all(c, wire, n + 4);
    int frames = 0, refused = 0;
    for (int i = 0; i < 300 && !refused; i++) {
        int k = fs_server_run_once(s, 20);
        const fs_server_event *ev = fs_server_events(s);
        for (int j = 0; j < k; j++) {
            if (ev[j].type != FS_EV_DATA)
                continue;
            const char *p;
            size_t len;
            while (fs_conn_next_frame_deferred(s, ev[j].conn, &p, &len))
                frames++;
            CHECK(!fs_conn_closing(ev[j].conn)); /* the refusal is only remembered */
            CHECK(fs_conn_next_frame_deferred(s, ev[j].conn, &p, &len) == 0); /* and holds */
            CHECK(fs_conn_send_frame(s, ev[j].conn, "reply", 5) == 0);
            fs_conn_refuse_pending(s, ev[j].conn);
            CHECK(fs_conn_closing(ev[j].conn));
            fs_conn_refuse_pending(s, ev[j].conn); /* once only */
            refused = 1;
        }
    }
    CHECK(frames == 2 && refused);
    UNTIL(s, &a, 0, a.closed == 1);
    CHECK(a.reason == FS_CLOSE_TOO_LARGE && a.size == 4096);
    CHECK(fs_server_get_stats(s)->errors == 1);
    char back[16];
    CHECK(recv_n(c, back, 9) == 9 && memcmp(back + 4, "reply", 5) == 0); /* before the close */
    CHECK(recv(c, back, 1, 0) == 0);
    close(c);
    finish(s, lfd);
}

static void test_malformed_and_buffer_bound(void)
{
    fs_server_config cfg = config(0);
    cfg.framing.kind = FS_FRAMING_ASCII;
    cfg.framing.width = 5;
    cfg.framing.max_size = 99999;
    cfg.read_size = 1000;
    cfg.max_buffer = 1000; /* smaller than max_size: a frame announced above it can never fit */
    int port, lfd;
    fs_server *s = server(&cfg, &port, &lfd);
    app a = {.echo = 1};
    int c = connect_tcp(port);
    UNTIL(s, &a, 0, a.accepted == 1);
    send_all(c, "00002ok00x", 10);
    UNTIL(s, &a, 0, a.closed == 1);
    CHECK(a.frames == 1 && a.reason == FS_CLOSE_MALFORMED);
    close(c);
    c = connect_tcp(port);
    UNTIL(s, &a, 0, a.accepted == 2);
    send_all(c, "05000abc", 8);
    UNTIL(s, &a, 0, a.closed == 2);
    CHECK(a.reason == FS_CLOSE_BUFFER_FULL && a.size == 5005);
    close(c);
    CHECK(fs_server_get_stats(s)->errors == 2);
    finish(s, lfd);
}

/* An id stays stale once its slot is reused. */
static void test_stale_ids(void)
{
    fs_server_config cfg = config(1);
    int port, lfd;
    fs_server *s = server(&cfg, &port, &lfd);
    app a = {.echo = 1};
    int c = connect_tcp(port);
    UNTIL(s, &a, 0, a.accepted == 1);
    uint64_t old = a.id;
    fs_conn *oldc = a.conn;
    CHECK(fs_server_conn(s, old) == oldc);
    fs_conn_close(s, oldc);
    UNTIL(s, &a, 0, a.closed == 1);
    CHECK(fs_server_conn(s, old) == oldc); /* still valid while its CLOSED batch is handled */
    close(c);
    c = connect_tcp(port);
    UNTIL(s, &a, 0, a.accepted == 2);
    CHECK(a.conn == oldc);                  /* the slot was reused ... */
    CHECK(a.id != old);                     /* ... under a new generation */
    CHECK(fs_server_conn(s, old) == NULL);
    CHECK(fs_server_conn(s, a.id) == a.conn);
    CHECK(fs_server_conn(s, UINT64_C(0x12345678)) == NULL);
    close(c);
    UNTIL(s, &a, 0, a.closed == 2);
    finish(s, lfd);
}

static void test_max_connections(void)
{
    fs_server_config cfg = config(1);
    cfg.max_connections = 1;
    int port, lfd;
    fs_server *s = server(&cfg, &port, &lfd);
    app a = {.echo = 1};
    int c1 = connect_tcp(port);
    int c2 = connect_tcp(port); /* completes in the backlog */
    UNTIL(s, &a, 0, a.accepted == 1);
    for (int i = 0; i < 5; i++)
        turn(s, &a, 5, 0);
    CHECK(a.accepted == 1);
    close(c1);
    UNTIL(s, &a, 0, a.accepted == 2);
    CHECK(a.closed == 1);
    close(c2);
    UNTIL(s, &a, 0, a.closed == 2);
    finish(s, lfd);
}

static void test_pause_resume(void)
{
    fs_server_config cfg = config(1);
    int port, lfd;
    fs_server *s = server(&cfg, &port, &lfd);
    app a = {.echo = 1};
    int c = connect_tcp(port);
    UNTIL(s, &a, 0, a.accepted == 1);
    char f[32];
    size_t n = frame4(f, "one", 3);
    send_all(c, f, n);
    UNTIL(s, &a, 0, a.frames == 1);
    fs_conn_pause(s, a.conn, 1);
    CHECK(fs_conn_paused(a.conn) == 1);
    send_all(c, f, n);
    for (int i = 0; i < 5; i++)
        turn(s, &a, 5, 0);
    CHECK(a.frames == 1); /* not read */
    fs_conn_pause(s, a.conn, 0);
    UNTIL(s, &a, 0, a.frames == 2);
    /* held frames are delivered on resume without a new byte */
    send_all(c, f, n);
    send_all(c, f, n);
    UNTIL(s, &a, 0, fs_conn_buffered(a.conn) == 2 * n || a.frames == 4);
    if (a.frames < 4) { /* both frames arrived before delivery: pause before handling */
        fs_conn_pause(s, a.conn, 1);
        turn(s, &a, 5, 0);
        fs_conn_pause(s, a.conn, 0);
        UNTIL(s, &a, 0, a.frames == 4);
    }
    turn(s, &a, 0, 0);
    char back[128];
    CHECK(recv_n(c, back, 4 * n) == 4 * n);
    close(c);
    UNTIL(s, &a, 0, a.closed == 1);
    finish(s, lfd);
}

static void test_raw_mode(void)
{
    fs_server_config cfg = config(0);
    cfg.max_buffer = 100;
    cfg.read_size = 100;
    int port, lfd;
    fs_server *s = server(&cfg, &port, &lfd);
    app a = {.echo = 1, .raw_keep = 2};
    int c = connect_tcp(port);
    UNTIL(s, &a, 1, a.accepted == 1);
    send_all(c, "abcdef", 6);
    UNTIL(s, &a, 1, fs_conn_buffered(a.conn) == 2);
    turn(s, &a, 0, 1);
    char back[16];
    CHECK(recv_n(c, back, 4) == 4 && memcmp(back, "abcd", 4) == 0);
    /* handing the block over: the held bytes move to new memory */
    const char *p;
    size_t len;
    CHECK(fs_conn_raw_data(s, a.conn, &p, &len) == 1 && len == 2);
    char *block = fs_conn_raw_detach(s, a.conn);
    CHECK(block != NULL && p >= block);
    CHECK(memcmp(p, "ef", 2) == 0); /* still ours to read */
    free(block);
    CHECK(fs_conn_raw_data(s, a.conn, &p, &len) == 1 && len == 2 && memcmp(p, "ef", 2) == 0);
    send_all(c, "gh", 2);
    UNTIL(s, &a, 1, fs_server_get_stats(s)->bytes_in == 8);
    turn(s, &a, 0, 1);
    CHECK(recv_n(c, back, 2) == 2 && memcmp(back, "ef", 2) == 0);
    /* a handler that never consumes a full buffer: FrameTooLarge */
    a.echo = 0;
    a.raw_keep = 1000;
    char junk[200];
    memset(junk, 'j', sizeof junk);
    send_all(c, junk, sizeof junk);
    UNTIL(s, &a, 1, a.closed == 1);
    CHECK(a.reason == FS_CLOSE_BUFFER_FULL && a.size == 100);
    CHECK(fs_conn_send_frame(s, a.conn, "x", 1) == -ENOTSUP);
    close(c);
    finish(s, lfd);
}

/* Graceful stop: replies to every received frame leave, then a half-close; the peer's EOF
 * closes. A peer that never closes is aborted at the deadline. */
static void test_graceful_stop(void)
{
    fs_server_config cfg = config(1);
    int port, lfd;
    fs_server *s = server(&cfg, &port, &lfd);
    fs_server_set_clock(s, fake_clock, NULL);
    app a = {.echo = 1};
    int c1 = connect_tcp(port), c2 = connect_tcp(port), c3 = connect_tcp(port);
    UNTIL(s, &a, 0, a.accepted == 3);
    fs_conn_pause(s, a.conn, 1); /* c3: paused by the application, never half-closed */
    char f[16];
    size_t n = frame4(f, "last", 4);
    send_all(c1, f, n);
    send_all(c2, f, n);
    /* both frames sit in the kernel: the stop's sweep reads and answers them */
    usleep(20000);
    CHECK(fs_server_remove_listener(s, 0) == 0);
    fs_server_stop(s, 5 * SEC);
    CHECK(fs_server_stopping(s) && !fs_server_stopped(s));
    UNTIL(s, &a, 0, a.frames == 2);
    for (int i = 0; i < 5; i++)
        turn(s, &a, 5, 0);
    char back[16];
    CHECK(recv_n(c1, back, n) == n && memcmp(back, f, n) == 0);
    CHECK(recv(c1, back, 1, 0) == 0); /* the half-close */
    CHECK(recv_n(c2, back, n) == n);
    CHECK(recv(c2, back, 1, 0) == 0);
    /* bytes after the half-close are read and discarded; EOF closes */
    send_all(c1, "ignored", 7);
    close(c1);
    UNTIL(s, &a, 0, a.closed == 1);
    CHECK(a.reason == FS_CLOSE_STOP && a.frames == 2);
    /* c2 never closes: aborted when the grace period ends, reported orderly (every reply
     * was delivered before its half-close); c3, still paused, was not done */
    fake_now += 5 * SEC;
    UNTIL(s, &a, 0, a.closed == 3);
    CHECK(a.reason == FS_CLOSE_STOP_TIMEOUT || a.reason == FS_CLOSE_STOP);
    CHECK(stop_reasons[FS_CLOSE_STOP] == 2 && stop_reasons[FS_CLOSE_STOP_TIMEOUT] == 1);
    turn(s, &a, 0, 0);
    CHECK(fs_server_stopped(s));
    close(c2);
    close(c3);
    finish(s, lfd);
}

static void test_wakeup_and_signal_fd(void)
{
    fs_server_config cfg = config(1);
    fs_server *s = NULL;
    REQUIRE(fs_server_new(&s, &cfg) == 0);
    app a = {0};
    CHECK(fs_server_wakeup(s) == 0);
    CHECK(fs_server_wakeup(s) == 0);
    turn(s, &a, 1000, 0);
    CHECK(a.wakeups == 1);
    CHECK(turn(s, &a, 0, 0) == 0); /* drained */
    int p[2];
    REQUIRE(pipe(p) == 0);
    CHECK(fs_server_watch_fd(s, 2, p[0]) == -EINVAL);
    CHECK(fs_server_watch_fd(s, 1, p[0]) == 0);
    CHECK(write(p[1], "\2", 1) == 1);
    turn(s, &a, 1000, 0);
    CHECK(a.watched == 1 && a.watch_slot == 1);
    turn(s, &a, 0, 0);
    CHECK(a.watched == 2); /* the owner drains it: level-triggered until then */
    char b;
    CHECK(read(p[0], &b, 1) == 1);
    turn(s, &a, 0, 0);
    CHECK(a.watched == 2 && !fs_server_interrupted(s));
    CHECK(fs_server_watch_fd(s, 1, -1) == 0);
    CHECK(write(p[1], "\2", 1) == 1);
    turn(s, &a, 0, 0);
    CHECK(a.watched == 2);
    close(p[0]);
    close(p[1]);
    fs_server_free(s);
}

/* EMFILE: the listener rests, the error is reported once, the loop never spins. */
static void test_emfile_backoff(void)
{
    fs_server_config cfg = config(1);
    int port, lfd;
    fs_server *s = server(&cfg, &port, &lfd);
    fs_server_set_clock(s, fake_clock, NULL);
    app a = {0};
    int c1 = connect_tcp(port), c2 = connect_tcp(port);
    struct rlimit old;
    REQUIRE(getrlimit(RLIMIT_NOFILE, &old) == 0);
    int top = dup(0); /* the lowest free descriptor: the limit goes just below it */
    REQUIRE(top >= 0);
    close(top);
    struct rlimit low = {.rlim_cur = (rlim_t)top, .rlim_max = old.rlim_max};
    REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0);
    int n = 0;
    for (int i = 0; i < 20; i++)
        n += turn(s, &a, 0, 0);
    CHECK(a.accept_errors == 1 && a.err == EMFILE);
    CHECK(n == 1); /* 19 turns without an event: the listener is not watched */
    REQUIRE(setrlimit(RLIMIT_NOFILE, &old) == 0);
    fake_now += SEC / 5; /* the back-off ends */
    UNTIL(s, &a, 0, a.accepted == 2);
    CHECK(a.accept_errors == 1);
    close(c1);
    close(c2);
    UNTIL(s, &a, 0, a.closed == 2);
    finish(s, lfd);
}

/* Listeners over AF_UNIX, the peer address, and abort_all. */
static void test_unix_and_abort_all(void)
{
    fs_server_config cfg = config(1);
    fs_server *s = NULL;
    REQUIRE(fs_server_new(&s, &cfg) == 0);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    snprintf(un.sun_path + 1, sizeof un.sun_path - 1, "fs-server-test-%d", (int)getpid());
    socklen_t ulen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(un.sun_path + 1));
    REQUIRE(bind(lfd, (struct sockaddr *)&un, ulen) == 0 && listen(lfd, 8) == 0);
    REQUIRE(fs_server_add_listener(s, lfd, 0) == 0);
    CHECK(fs_server_listeners(s) == 1);
    app a = {.echo = 1};
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    REQUIRE(connect(c, (struct sockaddr *)&un, ulen) == 0);
    UNTIL(s, &a, 0, a.accepted == 1);
    socklen_t len = 0;
    const struct sockaddr *peer = fs_conn_peer(a.conn, &len);
    CHECK(peer->sa_family == AF_UNIX);
    const struct sockaddr *me = fs_conn_sockname(a.conn, &len);
    CHECK(me->sa_family == AF_UNIX && len == ulen);
    fs_server_abort_all(s);
    UNTIL(s, &a, 0, a.closed == 1);
    CHECK(a.reason == FS_CLOSE_SERVER);
    me = fs_conn_sockname(a.conn, &len); /* known after the close too */
    CHECK(me->sa_family == AF_UNIX && len == ulen);
    CHECK(fs_server_remove_listener(s, 0) == 0 && fs_server_remove_listener(s, 0) == -ENOENT);
    close(c);
    fs_server_free(s);
    close(lfd);
}

#ifndef NDEBUG
static void consume_too_much(void *arg)
{
    (void)arg;
    fs_server_config cfg = config(0);
    int port, lfd;
    fs_server *s = server(&cfg, &port, &lfd);
    app a = {0};
    int c = connect_tcp(port);
    UNTIL(s, &a, 1, a.accepted == 1);
    fs_conn_raw_consume(s, a.conn, 5); /* more than is held */
    close(c);
    finish(s, lfd);
}
#else
static void consume_too_much(void *arg)
{
    (void)arg;
}
#endif

int main(void)
{
    test_config_checked();
    test_echo_one_send();
    test_length_prefix_widths();
    test_partial_frames_every_split();
    test_backpressure_holds_frames();
    test_partial_send_then_writable();
    test_idle_and_frame_timeouts();
    test_raw_frame_clock();
    test_deadlines_saturate();
    test_idle_clock_restarts_when_the_reply_leaves();
    test_read_size_one_grows();
    test_close_reasons();
    test_deferred_refusal();
    test_malformed_and_buffer_bound();
    test_stale_ids();
    test_max_connections();
    test_pause_resume();
    test_raw_mode();
    test_graceful_stop();
    test_wakeup_and_signal_fd();
    test_emfile_backoff();
    test_unix_and_abort_all();
    CHECK(check_aborts(consume_too_much, NULL, "n <= held"));
    return check_report("test_fs_server");
}
