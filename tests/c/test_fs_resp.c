/* Unit tests of src_c/fs_resp.c: RESP commands through fs_frame_scan (plain C; built and run
 * by tests/test_c_units.py). */
#include "fs_frame.h"
#include "fs_resp.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static fs_framing resp(uint64_t max_size, uint64_t max_args)
{
    fs_framing f;
    memset(&f, 0, sizeof f);
    f.kind = FS_FRAMING_RESP;
    f.max_size = max_size;
    f.max_args = max_args;
    return f;
}

static int scan(const fs_framing *f, const char *data, size_t len, fs_frame *fr)
{
    memset(fr, 0, sizeof *fr);
    return fs_frame_scan(f, data, len, fr);
}

/* The arguments of a whole command joined by '|' into out (NUL-terminated); the count. */
static long long args(const char *cmd, size_t len, char *out, size_t cap)
{
    fs_resp_args it;
    long long n = fs_resp_args_begin(&it, cmd, len);
    size_t at = 0;
    const char *a;
    size_t alen;
    int rc;
    out[0] = 0;
    for (long long i = 0; (rc = fs_resp_args_next(&it, &a, &alen)) == 1; i++) {
        REQUIRE(at + alen + 2 < cap);
        if (i)
            out[at++] = '|';
        memcpy(out + at, a, alen);
        at += alen;
        out[at] = 0;
    }
    CHECK(rc == 0);
    return n;
}

/* Every prefix PARTIAL, scanned fresh and resumed from the previous prefix; the whole OK. */
static void whole(const fs_framing *f, const char *cmd, const char *expect, long long count)
{
    size_t len = strlen(cmd);
    fs_frame fr, step;
    memset(&step, 0, sizeof step);
    for (size_t cut = 0; cut < len; cut++) {
        CHECK(scan(f, cmd, cut, &fr) == FS_FRAME_PARTIAL);
        CHECK(fr.total == 0);
        CHECK(fs_frame_scan(f, cmd, cut, &step) == FS_FRAME_PARTIAL);
    }
    CHECK(fs_frame_scan(f, cmd, len, &step) == FS_FRAME_OK);
    char buf[256];
    memcpy(buf, cmd, len);
    buf[len] = '*'; /* the next command's first byte must not matter */
    CHECK(scan(f, buf, len + 1, &fr) == FS_FRAME_OK);
    CHECK(fr.header == 0 && fr.payload == len && fr.total == len);
    CHECK(step.total == len);
    char got[256];
    CHECK(args(cmd, len, got, sizeof got) == count);
    if (strcmp(got, expect) != 0) {
        printf("args of %s: got '%s', expected '%s'\n", cmd, got, expect);
        CHECK(0);
    }
}

static void test_commands(void)
{
    fs_framing f = resp(1000, 100);
    CHECK(fs_framing_check(&f) == 0);
    whole(&f, "*1\r\n$4\r\nPING\r\n", "PING", 1);
    whole(&f, "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\n", "SET|key|va\r\nl", 3);
    whole(&f, "*2\r\n$3\r\nGET\r\n$0\r\n\r\n", "GET|", 2);
    whole(&f, "*0\r\n", "", 0);
    whole(&f, "*-1\r\n", "", 0);
    whole(&f, "PING\r\n", "PING", 1);
    whole(&f, "  SET \tk  v\n", "SET|k|v", 3);
    whole(&f, "\r\n", "", 0);
    whole(&f, "$x y\r\n", "$x|y", 2); /* inline: any first byte but '*' */
}

static void test_malformed(void)
{
    fs_framing f = resp(1000, 100);
    fs_frame fr;
    const char *bad[] = {
        "*x\r\n", "*\r\n", "*1x", "*1\rx", "*-2\r\n", "*1\r\n:1\r\n", "*1\r\n$-1\r\n",
        "*1\r\n$3\r\nabcd\r\n", "*1\r\n$3\r\nabcX", "*1\r\n$3\r\nabc\rX", "*1\r\n$00000000000000000001\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = scan(&f, bad[i], strlen(bad[i]), &fr);
        if (rc != FS_FRAME_MALFORMED) {
            printf("not malformed: %s (rc %d)\n", bad[i], rc);
            CHECK(0);
        }
    }
}

static void test_limits(void)
{
    fs_framing f = resp(1000, 100);
    fs_frame fr;
    /* A hostile count or length is refused from its digits, before the rest arrives. */
    CHECK(scan(&f, "*99999999", 9, &fr) == FS_FRAME_TOO_LARGE);
    CHECK(fr.over_args == 1 && fr.size > 100);
    CHECK(scan(&f, "*101\r\n", 6, &fr) == FS_FRAME_TOO_LARGE && fr.over_args && fr.size == 101);
    CHECK(scan(&f, "*100\r\n", 6, &fr) == FS_FRAME_PARTIAL);
    CHECK(scan(&f, "*1\r\n$4294967295", 15, &fr) == FS_FRAME_TOO_LARGE);
    CHECK(fr.over_args == 0 && fr.size > 1000);
    /* The whole command counts: 4 + 6 + 988 + 2 = 1000 fits, one byte more does not. */
    CHECK(scan(&f, "*1\r\n$988\r\n", 10, &fr) == FS_FRAME_PARTIAL);
    CHECK(scan(&f, "*1\r\n$989\r\n", 10, &fr) == FS_FRAME_TOO_LARGE && fr.size == 1001);
    /* An inline line must end within max_size bytes, and not pass max_args. */
    fs_framing small = resp(8, 2);
    CHECK(scan(&small, "GET abcd", 8, &fr) == FS_FRAME_TOO_LARGE && fr.size == 9);
    CHECK(scan(&small, "GET abc", 7, &fr) == FS_FRAME_PARTIAL);
    CHECK(scan(&small, "GET abc\n", 8, &fr) == FS_FRAME_OK && fr.total == 8);
    CHECK(scan(&small, "a b c\n", 6, &fr) == FS_FRAME_TOO_LARGE && fr.over_args && fr.size == 3);
    /* The framing's own limits. */
    fs_framing wide = resp(FS_RESP_SIZE_LIMIT + 1, 1);
    CHECK(fs_framing_check(&wide) != 0);
    fs_framing many = resp(100, FS_RESP_ARGS_LIMIT + 1);
    CHECK(fs_framing_check(&many) != 0);
    fs_framing none = resp(0, 1);
    CHECK(fs_framing_check(&none) != 0);
}

/* A command of many arguments trickling in byte by byte is scanned once: resuming from the
 * packed point gives the same answer as a fresh scan at every length. */
static void test_resume_matches_fresh_scans(void)
{
    char cmd[4096];
    size_t len = (size_t)snprintf(cmd, sizeof cmd, "*200\r\n");
    for (int i = 0; i < 200; i++)
        len += (size_t)snprintf(cmd + len, sizeof cmd - len, "$%d\r\n%.*s\r\n", i % 13, i % 13, "abcdefghijklm");
    fs_framing f = resp(sizeof cmd, 1000);
    fs_frame step, fresh;
    memset(&step, 0, sizeof step);
    for (size_t cut = 0; cut < len; cut++) {
        CHECK(fs_frame_scan(&f, cmd, cut, &step) == FS_FRAME_PARTIAL);
        CHECK(scan(&f, cmd, cut, &fresh) == FS_FRAME_PARTIAL);
        CHECK(step.resume == fresh.resume);
    }
    CHECK(fs_frame_scan(&f, cmd, len, &step) == FS_FRAME_OK && step.total == len);
    char got[4096];
    CHECK(args(cmd, len, got, sizeof got) == 200);
}

static void test_reply_header(void)
{
    fs_framing f = resp(1000, 10);
    char out[FS_FRAME_HEADER_MAX];
    size_t hlen, tlen;
    CHECK(fs_frame_header(&f, "hello", 5, out, &hlen) == 0);
    CHECK(hlen == 4 && memcmp(out, "$5\r\n", 4) == 0);
    const char *t = fs_frame_trailer(&f, &tlen);
    CHECK(tlen == 2 && memcmp(t, "\r\n", 2) == 0);
    CHECK(fs_frame_header(&f, NULL, 1001, out, &hlen) == FS_FRAME_TOO_LARGE);
}

static void test_args_refuse_non_commands(void)
{
    fs_resp_args it;
    const char *a;
    size_t alen;
    CHECK(fs_resp_args_begin(&it, "", 0) == -1);
    CHECK(fs_resp_args_begin(&it, "*1\r\n$3\r\nab", 10) == -1); /* no final '\n' */
    CHECK(fs_resp_args_begin(&it, "*2\r\n$1\r\na\r\n", 11) == 2);
    CHECK(fs_resp_args_next(&it, &a, &alen) == 1 && alen == 1 && a[0] == 'a');
    CHECK(fs_resp_args_next(&it, &a, &alen) == -1); /* the second argument is missing */
    CHECK(fs_resp_args_begin(&it, "*1\r\n$9\r\nab\r\n", 12) == 1);
    CHECK(fs_resp_args_next(&it, &a, &alen) == -1); /* a length past the end */
}

int main(void)
{
    test_commands();
    test_malformed();
    test_limits();
    test_resume_matches_fresh_scans();
    test_reply_header();
    test_args_refuse_non_commands();
    return check_report("test_fs_resp");
}
