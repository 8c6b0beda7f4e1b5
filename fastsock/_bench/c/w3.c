/* W3 pipelined frames, C reference.
 *   w3 server <expected_frames> <payload> <limit_s>   parse 4-byte big-endian length-prefixed frames, count them
 *   w3 client <port> <frames> <payload> <limit_s>     write the frames in large batches, then close
 */
#include "bench_common.h"

#define BUF (256 * 1024)
#define BATCH_BYTES (128 * 1024)

static unsigned char buf[BUF];

static int server(long long expected, long payload, long limit)
{
    set_limit(limit);
    int lfd = listen_announce();
    int fd = accept_one(lfd);
    double t0 = now_s(), c0 = cpu_s();
    long long frames = 0, bytes = 0;
    size_t head = 0, tail = 0; /* unparsed bytes are buf[head:tail] */
    for (;;) {
        if (head > 0) { /* compact: keep the start of the next frame */
            memmove(buf, buf + head, tail - head);
            tail -= head;
            head = 0;
        }
        if (tail == BUF)
            fail("frame larger than the buffer");
        ssize_t r = recv(fd, buf + tail, BUF - tail, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die("recv");
        }
        if (r == 0)
            break;
        tail += (size_t)r;
        while (tail - head >= 4) {
            const unsigned char *p = buf + head;
            size_t n = ((size_t)p[0] << 24) | ((size_t)p[1] << 16) | ((size_t)p[2] << 8) | p[3];
            if (n > BUF - 4)
                fail("frame too large");
            if (tail - head < 4 + n)
                break;
            frames++;
            bytes += (long long)n;
            head += 4 + n;
        }
    }
    double secs = now_s() - t0, cpu = cpu_s() - c0;
    int ok = frames == expected && bytes == expected * payload && head == tail;
    printf("RESULT {\"ops\": %lld, \"bytes\": %lld, \"seconds\": %.9f, \"cpu\": %.6f, \"ok\": %s}\n", frames, bytes, secs,
           cpu, ok ? "true" : "false");
    return ok ? 0 : 1;
}

static int client(long port, long long frames, long payload, long limit)
{
    set_limit(limit);
    size_t flen = 4 + (size_t)payload;
    if (payload < 0 || flen > BATCH_BYTES)
        fail("bad payload size");
    size_t per_batch = BATCH_BYTES / flen;
    unsigned char *batch = malloc(per_batch * flen);
    if (!batch)
        fail("out of memory");
    for (size_t i = 0; i < per_batch; i++) {
        unsigned char *p = batch + i * flen;
        p[0] = (unsigned char)(payload >> 24);
        p[1] = (unsigned char)(payload >> 16);
        p[2] = (unsigned char)(payload >> 8);
        p[3] = (unsigned char)payload;
        memset(p + 4, 'f', (size_t)payload);
    }
    int fd = connect_port(port);
    double t0 = now_s(), c0 = cpu_s();
    long long sent = 0;
    while (sent < frames) {
        long long n = frames - sent < (long long)per_batch ? frames - sent : (long long)per_batch;
        if (write_all(fd, batch, (size_t)n * flen) < 0)
            die("send");
        sent += n;
    }
    shutdown(fd, SHUT_WR);
    while (recv(fd, buf, sizeof buf, 0) > 0) { /* until the server closes */
    }
    double secs = now_s() - t0, cpu = cpu_s() - c0;
    close(fd);
    printf("RESULT {\"ops\": %lld, \"seconds\": %.9f, \"cpu\": %.6f}\n", sent, secs, cpu);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 5 && strcmp(argv[1], "server") == 0)
        return server(strtoll(argv[2], NULL, 10), arg_long(argc, argv, 3), arg_long(argc, argv, 4));
    if (argc >= 6 && strcmp(argv[1], "client") == 0)
        return client(arg_long(argc, argv, 2), strtoll(argv[3], NULL, 10), arg_long(argc, argv, 4),
                      arg_long(argc, argv, 5));
    fail("usage: w3 server <expected_frames> <payload> <limit_s> | w3 client <port> <frames> <payload> <limit_s>");
    return 2;
}
