/* W1 bulk, C reference.
 *   w1 server <expected_bytes> <limit_s>   receiver: recv into a preallocated 256 KiB buffer, discard
 *                                          (SO_RCVLOWAT = 256 KiB: one wake-up per chunk)
 *   w1 client <port> <total_bytes> <limit_s>  sender: send 256 KiB chunks, then close
 */
#include "bench_common.h"

#define CHUNK (256 * 1024)

static unsigned char buf[CHUNK];

static int server(long long expected, long limit)
{
    set_limit(limit);
    int lfd = listen_announce();
    int fd = accept_one(lfd);
    /* Wake up only when a whole chunk is there: one wake-up and one recv per 256 KiB instead of
       one per segment. This is what C achieves on loopback (about 2x a plain recv loop); the
       same option is open to any implementation, Python included. */
    int lowat = CHUNK;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat) < 0)
        die("SO_RCVLOWAT");
    double t0 = now_s(), c0 = cpu_s();
    long long total = 0;
    for (;;) {
        ssize_t r = recv(fd, buf, CHUNK, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die("recv");
        }
        if (r == 0)
            break;
        total += r;
    }
    double secs = now_s() - t0, cpu = cpu_s() - c0;
    printf("RESULT {\"ops\": %lld, \"bytes\": %lld, \"seconds\": %.9f, \"cpu\": %.6f, \"ok\": %s}\n",
           total, total, secs, cpu, total == expected ? "true" : "false");
    return total == expected ? 0 : 1;
}

static int client(long port, long long total, long limit)
{
    set_limit(limit);
    memset(buf, 'x', sizeof buf);
    int fd = connect_port(port);
    double t0 = now_s(), c0 = cpu_s();
    long long sent = 0;
    while (sent < total) {
        size_t n = total - sent < CHUNK ? (size_t)(total - sent) : CHUNK;
        if (write_all(fd, buf, n) < 0)
            die("send");
        sent += (long long)n;
    }
    shutdown(fd, SHUT_WR);
    /* wait for the receiver to close, so the window covers the whole transfer */
    while (recv(fd, buf, sizeof buf, 0) > 0) {
    }
    double secs = now_s() - t0, cpu = cpu_s() - c0;
    close(fd);
    printf("RESULT {\"bytes\": %lld, \"seconds\": %.9f, \"cpu\": %.6f}\n", sent, secs, cpu);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[1], "server") == 0)
        return server(strtoll(argv[2], NULL, 10), arg_long(argc, argv, 3));
    if (argc >= 5 && strcmp(argv[1], "client") == 0)
        return client(arg_long(argc, argv, 2), strtoll(argv[3], NULL, 10), arg_long(argc, argv, 4));
    fail("usage: w1 server <expected_bytes> <limit_s> | w1 client <port> <total_bytes> <limit_s>");
    return 2;
}
