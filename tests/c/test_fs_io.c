/* Unit tests of src_c/fs_io.c on its own (no Python): run by tests/test_c_units.py. */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fs_io.h"

#include "check.h"

static void pair(int sv[2], int nonblocking)
{
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    if (nonblocking) {
        for (int i = 0; i < 2; i++)
            REQUIRE(fcntl(sv[i], F_SETFL, fcntl(sv[i], F_GETFL) | O_NONBLOCK) == 0);
    }
    int small = 4096;
    for (int i = 0; i < 2; i++) {
        REQUIRE(setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
        REQUIRE(setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof small) == 0);
    }
}

static void test_send_recv_roundtrip(void)
{
    int sv[2];
    pair(sv, 0);
    const char msg[] = "hello, fs_io";
    size_t sent = 0, got = 0;
    char buf[sizeof msg];
    CHECK(fs_send_all(sv[0], msg, sizeof msg, 0, FS_BLOCK, &sent) == 0 && sent == sizeof msg);
    CHECK(fs_recv_exact(sv[1], buf, sizeof buf, 0, FS_BLOCK, 0, &got) == 0 && got == sizeof msg);
    CHECK(memcmp(buf, msg, sizeof msg) == 0);
    close(sv[0]);
    close(sv[1]);
}

static void test_eof_reports_partial(void)
{
    int sv[2];
    pair(sv, 0);
    size_t sent = 0, got = 0;
    char buf[10];
    CHECK(fs_send_all(sv[0], "abc", 3, 0, FS_BLOCK, &sent) == 0);
    close(sv[0]);
    CHECK(fs_recv_exact(sv[1], buf, sizeof buf, 0, FS_BLOCK, 0, &got) == -EINTR || got == 3);
    /* A short MSG_WAITALL read returns -EINTR ("check signals, call again"); the next call
     * sees EOF with the progress intact. */
    CHECK(fs_recv_exact(sv[1], buf, sizeof buf, 0, FS_BLOCK, 0, &got) == FS_ERR_EOF);
    CHECK(got == 3 && memcmp(buf, "abc", 3) == 0);
    close(sv[1]);
}

static void test_nonblocking_would_block_keeps_progress(void)
{
    int sv[2];
    pair(sv, 1);
    static char big[1 << 20];
    memset(big, 'x', sizeof big);
    size_t sent = 0;
    CHECK(fs_send_all(sv[0], big, sizeof big, 0, FS_NONBLOCK, &sent) == -EAGAIN);
    CHECK(sent > 0 && sent < sizeof big);
    size_t got = 0;
    char *buf = malloc(sent + 1);
    REQUIRE(buf != NULL);
    CHECK(fs_recv_exact(sv[1], buf, sent + 1, 0, FS_NONBLOCK, 0, &got) == -EAGAIN);
    CHECK(got == sent); /* everything queued was received, nothing lost */
    free(buf);
    close(sv[0]);
    close(sv[1]);
}

static void test_deadline_times_out(void)
{
    int sv[2];
    pair(sv, 1);
    char c;
    size_t got = 0;
    int64_t start = fs_now_ns();
    CHECK(fs_recv_exact(sv[1], &c, 1, 0, fs_deadline_from_timeout(0.05), 0, &got) == FS_ERR_TIMEOUT);
    CHECK(fs_now_ns() - start >= 50 * 1000000LL);
    CHECK(fs_wait_fd(sv[1], POLLIN, fs_deadline_from_timeout(0.01)) == FS_ERR_TIMEOUT);
    CHECK(fs_wait_fd(sv[0], POLLOUT, FS_NONBLOCK) == -EAGAIN);
    close(sv[0]);
    close(sv[1]);
}

static void test_sendv_resumes_mid_buffer(void)
{
    int sv[2];
    pair(sv, 1);
    enum { N = 3000 };
    static char data[N][7];
    static struct iovec iov[N];
    size_t total = 0;
    for (int i = 0; i < N; i++) {
        memset(data[i], 'a' + i % 26, sizeof data[i]);
        iov[i].iov_base = data[i];
        iov[i].iov_len = (size_t)(i % 8); /* includes empty entries */
        total += iov[i].iov_len;
    }
    char *out = malloc(total);
    REQUIRE(out != NULL);
    size_t sent = 0, got = 0;
    while (sent < total) {
        int r = fs_sendv_all(sv[0], iov, N, 0, FS_NONBLOCK, &sent);
        REQUIRE(r == 0 || r == -EAGAIN);
        size_t before = got;
        int rr = fs_recv_exact(sv[1], out, sent, 0, FS_NONBLOCK, 0, &got);
        REQUIRE(rr == 0 || rr == -EAGAIN);
        CHECK(got >= before);
    }
    CHECK(fs_recv_exact(sv[1], out, total, 0, fs_deadline_from_timeout(1.0), 0, &got) == 0);
    size_t pos = 0;
    for (int i = 0; i < N; i++) {
        CHECK(memcmp(out + pos, data[i], iov[i].iov_len) == 0);
        pos += iov[i].iov_len;
        CHECK(iov[i].iov_base == data[i] && iov[i].iov_len == (size_t)(i % 8)); /* restored */
    }
    free(out);
    close(sv[0]);
    close(sv[1]);
}

static void test_errors_are_negative_errno(void)
{
    int sv[2];
    pair(sv, 0);
    close(sv[1]);
    size_t sent = 0;
    CHECK(fs_send_all(sv[0], "x", 1, 0, FS_BLOCK, &sent) == -EPIPE); /* no SIGPIPE: MSG_NOSIGNAL */
    close(sv[0]);
    char c;
    CHECK(fs_recv_some(-1, &c, 1, 0, FS_BLOCK) == -EBADF);
    CHECK(fs_deadline_from_timeout(-1) == FS_BLOCK && fs_deadline_from_timeout(0) == FS_NONBLOCK);
    CHECK(fs_deadline_from_timeout(1e-12) > 0);
}

int main(void)
{
    test_send_recv_roundtrip();
    test_eof_reports_partial();
    test_nonblocking_would_block_keeps_progress();
    test_deadline_times_out();
    test_sendv_resumes_mid_buffer();
    test_errors_are_negative_errno();
    return check_report("test_fs_io");
}
