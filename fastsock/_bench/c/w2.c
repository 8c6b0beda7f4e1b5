/* W2 ping-pong, C reference.
 *   w2 server <limit_s>   echo one length-prefixed frame (4-byte big-endian) at a time, until EOF
 *   w2 client <port> <round_trips> <warmup> <payload> <limit_s>   latency per round trip
 */
#include "bench_common.h"

#define MAX_FRAME (1 << 20)

static unsigned char buf[4 + MAX_FRAME];

static int server(long limit)
{
    set_limit(limit);
    int lfd = listen_announce();
    int fd = accept_one(lfd);
    set_nodelay(fd);
    double t0 = now_s(), c0 = cpu_s();
    long long frames = 0;
    for (;;) {
        ssize_t r = read_exact(fd, buf, 4);
        if (r == 0)
            break;
        if (r < 0)
            die("recv header");
        uint32_t n = ((uint32_t)buf[0] << 24) | ((uint32_t)buf[1] << 16) | ((uint32_t)buf[2] << 8) | buf[3];
        if (n > MAX_FRAME)
            fail("frame too large");
        if (n > 0 && read_exact(fd, buf + 4, n) != (ssize_t)n)
            die("recv payload");
        if (write_all(fd, buf, 4 + (size_t)n) < 0)
            die("send");
        frames++;
    }
    double secs = now_s() - t0, cpu = cpu_s() - c0;
    printf("RESULT {\"ops\": %lld, \"seconds\": %.9f, \"cpu\": %.6f, \"ok\": true}\n", frames, secs, cpu);
    return 0;
}

static int client(long port, long count, long warmup, long payload, long limit)
{
    set_limit(limit);
    if (payload < 0 || payload > MAX_FRAME || count <= 0 || warmup < 0)
        fail("bad arguments");
    unsigned char *msg = malloc(4 + (size_t)payload);
    unsigned char *in = malloc(4 + (size_t)payload);
    double *lat = malloc(sizeof(double) * (size_t)count);
    if (!msg || !in || !lat)
        fail("out of memory");
    msg[0] = (unsigned char)(payload >> 24);
    msg[1] = (unsigned char)(payload >> 16);
    msg[2] = (unsigned char)(payload >> 8);
    msg[3] = (unsigned char)payload;
    memset(msg + 4, 'p', (size_t)payload);
    size_t len = 4 + (size_t)payload;
    int fd = connect_port(port);
    set_nodelay(fd);
    for (long i = 0; i < warmup; i++) {
        if (write_all(fd, msg, len) < 0 || read_exact(fd, in, len) != (ssize_t)len)
            die("warm-up round trip");
    }
    double t0 = now_s(), c0 = cpu_s();
    for (long i = 0; i < count; i++) {
        double s = now_s();
        if (write_all(fd, msg, len) < 0 || read_exact(fd, in, len) != (ssize_t)len)
            die("round trip");
        lat[i] = now_s() - s;
    }
    double secs = now_s() - t0, cpu = cpu_s() - c0;
    int ok = memcmp(in, msg, len) == 0;
    close(fd);
    qsort(lat, (size_t)count, sizeof(double), cmp_double);
    printf("RESULT {\"ops\": %ld, \"seconds\": %.9f, \"cpu\": %.6f, \"p50_us\": %.3f, \"p99_us\": %.3f, \"ok\": %s}\n",
           count, secs, cpu, quantile(lat, (size_t)count, 0.50) * 1e6, quantile(lat, (size_t)count, 0.99) * 1e6,
           ok ? "true" : "false");
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "server") == 0)
        return server(arg_long(argc, argv, 2));
    if (argc >= 7 && strcmp(argv[1], "client") == 0)
        return client(arg_long(argc, argv, 2), arg_long(argc, argv, 3), arg_long(argc, argv, 4),
                      arg_long(argc, argv, 5), arg_long(argc, argv, 6));
    fail("usage: w2 server <limit_s> | w2 client <port> <round_trips> <warmup> <payload> <limit_s>");
    return 2;
}
