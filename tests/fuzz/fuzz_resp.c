/* fuzz_resp.c — RESP (FS_FRAMING_RESP, src_c/fs_resp.c): client commands of the Redis
 * protocol, as arrays of bulk strings or inline lines. The first input bytes pick max_size
 * and max_args; fz_run_framing (framing_check.c) checks the rest as a stream of commands
 * against the model below, and every command found is also read with fs_resp_args_*:
 * the same arguments as the model's, each inside the command; the command re-encoded as a
 * canonical array reads back as the same arguments (the same bytes when it was canonical).
 * fs_resp_args_* also run on the raw input (bytes no scan accepted): -1 or arguments
 * inside it, never a read outside. And fs_frame_header encodes a bulk string reply. */
#include "fuzz.h"
#include "fs_resp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const uint8_t *p;
    size_t len;
} arg_t;

/* framing.py's RESP._number: the "<type><digits>\r\n" line at b[pos .. end): 1 with
 * *value, *next; 0 while incomplete; -1 with e set for an error. */
static int number(const uint8_t *b, size_t pos, size_t end, uint64_t limit, int null_ok, int args, uint64_t *value,
                  size_t *next, fz_expect *e)
{
    size_t i = pos + 1;
    int neg = null_ok && i < end && b[i] == '-';
    if (neg)
        i++;
    size_t digits = i;
    uint64_t v = 0;
    while (i < end && b[i] >= '0' && b[i] <= '9') {
        if (i - digits == 19) {
            e->rc = FS_FRAME_MALFORMED;
            return -1;
        }
        v = v * 10 + (uint64_t)(b[i] - '0'); /* at most 19 digits: no overflow */
        if (!neg && v > limit) {
            e->rc = FS_FRAME_TOO_LARGE;
            e->size = v;
            e->over_args = args;
            return -1;
        }
        i++;
    }
    if (i == end)
        return 0;
    if (i == digits || b[i] != '\r') {
        e->rc = FS_FRAME_MALFORMED;
        return -1;
    }
    if (i + 1 == end)
        return 0;
    if (b[i + 1] != '\n') {
        e->rc = FS_FRAME_MALFORMED;
        return -1;
    }
    if (neg) {
        if (v != 1) {
            e->rc = FS_FRAME_MALFORMED;
            return -1;
        }
        v = 0;
    }
    *value = v;
    *next = i + 2;
    return 1;
}

static int blank(uint8_t c)
{
    return c == ' ' || c == '\t';
}

/* framing.py's RESP._command on b[0 .. len) from a fresh state; with `args` (room for
 * len + 1 entries), the command's arguments too (*nargs of them). */
static void command(const fs_framing *f, const uint8_t *b, size_t len, fz_expect *e, arg_t *args, size_t *nargs)
{
    size_t got = 0;
    if (nargs)
        *nargs = 0;
    if (len == 0) {
        e->rc = FS_FRAME_PARTIAL;
        return;
    }
    uint64_t limit = f->max_size;
    if (b[0] != '*') { /* an inline line */
        size_t window = len < limit ? len : (size_t)limit;
        const uint8_t *nl = memchr(b, '\n', window);
        if (nl == NULL) {
            if (len >= limit) {
                e->rc = FS_FRAME_TOO_LARGE;
                e->size = len > limit ? len : limit + 1;
                return;
            }
            e->rc = FS_FRAME_PARTIAL;
            e->resume = window;
            return;
        }
        size_t at = (size_t)(nl - b);
        size_t stop = at > 0 && b[at - 1] == '\r' ? at - 1 : at;
        uint64_t count = 0;
        for (size_t i = 0; i < stop; i++) {
            if (blank(b[i]))
                continue;
            size_t from = i;
            while (i < stop && !blank(b[i]))
                i++;
            if (args)
                args[count] = (arg_t){b + from, i - from};
            count++;
        }
        if (count > f->max_args) {
            e->rc = FS_FRAME_TOO_LARGE;
            e->size = count;
            e->over_args = 1;
            return;
        }
        e->rc = FS_FRAME_OK;
        e->header = 0;
        e->payload = e->total = at + 1;
        if (nargs)
            *nargs = (size_t)count;
        return;
    }
    uint64_t count;
    size_t pos;
    int r = number(b, 0, len, f->max_args, 1, 1, &count, &pos, e);
    if (r < 0)
        return;
    if (r == 0) {
        e->rc = FS_FRAME_PARTIAL;
        return;
    }
    uint64_t done = 0;
    while (done < count) { /* bounded: each argument takes >= 6 bytes of b */
        if (pos >= len)
            goto partial;
        if (b[pos] != '$') {
            e->rc = FS_FRAME_MALFORMED;
            return;
        }
        uint64_t size;
        size_t body;
        r = number(b, pos, len, limit, 0, 0, &size, &body, e);
        if (r < 0)
            return;
        if (r == 0)
            goto partial;
        uint64_t stop = (uint64_t)body + size;
        if (stop + 2 > limit) {
            e->rc = FS_FRAME_TOO_LARGE;
            e->size = stop + 2;
            return;
        }
        if ((stop < len && b[stop] != '\r') || (stop + 1 < len && b[stop + 1] != '\n')) {
            e->rc = FS_FRAME_MALFORMED;
            return;
        }
        if (stop + 2 > len)
            goto partial;
        if (args)
            args[got++] = (arg_t){b + body, (size_t)size};
        pos = (size_t)stop + 2;
        done++;
    }
    if (pos > limit) {
        e->rc = FS_FRAME_TOO_LARGE;
        e->size = pos;
        return;
    }
    e->rc = FS_FRAME_OK;
    e->header = 0;
    e->payload = e->total = pos;
    if (nargs)
        *nargs = got;
    return;
partial:
    e->rc = FS_FRAME_PARTIAL;
    e->resume = (uint64_t)pos | (done << FS_RESP_OFFSET_BITS);
}

static void model(const fs_framing *f, const uint8_t *d, size_t len, fz_expect *e)
{
    command(f, d, len, e, NULL, NULL);
}

/* The arguments fs_resp_args_* read from d[0 .. len) are args[0 .. n). */
static void check_args(const uint8_t *d, size_t len, const arg_t *args, size_t n)
{
    fs_resp_args it;
    FZ_CHECK(fs_resp_args_begin(&it, (const char *)d, len) == (long long)n);
    for (size_t i = 0; i <= n; i++) {
        const char *arg = NULL;
        size_t alen = 0;
        int r = fs_resp_args_next(&it, &arg, &alen);
        if (i == n) {
            FZ_CHECK(r == 0);
            FZ_CHECK(fs_resp_args_next(&it, &arg, &alen) == 0); /* and stays done */
            break;
        }
        FZ_CHECK(r == 1);
        FZ_CHECK((const uint8_t *)arg >= d && alen <= len && (size_t)((const uint8_t *)arg - d) <= len - alen);
        FZ_CHECK(alen == args[i].len && memcmp(arg, args[i].p, alen) == 0);
    }
}

/* A complete command d[0 .. len), as fs_resp_scan accepted it. */
static void on_frame(const fs_framing *f, const uint8_t *d, size_t len)
{
    const uint8_t *b = (const uint8_t *)fz_tail(2, d, len);
    arg_t *args = fz_scratch(2, (len + 1) * sizeof *args);
    size_t n = 0;
    fz_expect e;
    memset(&e, 0, sizeof e);
    command(f, b, len, &e, args, &n);
    FZ_CHECK(e.rc == FS_FRAME_OK && e.total == len);
    FZ_CHECK(n <= f->max_args);
    check_args(b, len, args, n);

    /* The canonical array: "*<n>\r\n" then "$<len>\r\n<arg>\r\n" per argument. */
    size_t cap = 24;
    for (size_t i = 0; i < n; i++)
        cap += args[i].len + 26;
    char *wire = fz_scratch(3, cap);
    size_t w = (size_t)snprintf(wire, cap, "*%zu\r\n", n);
    for (size_t i = 0; i < n; i++) {
        w += (size_t)snprintf(wire + w, cap - w, "$%zu\r\n", args[i].len);
        memcpy(wire + w, args[i].p, args[i].len);
        w += args[i].len;
        memcpy(wire + w, "\r\n", 2);
        w += 2;
    }
    FZ_CHECK(w <= cap);
    fs_framing big = *f; /* an inline line re-encoded as an array grows */
    if (b[0] != '*')
        big.max_size = FS_RESP_SIZE_LIMIT;
    else
        FZ_CHECK(w <= len); /* no longer than the array it came from */
    const char *again = fz_tail(3, wire, w);
    fs_frame fr;
    memset(&fr, 0, sizeof fr);
    FZ_CHECK(fs_frame_scan(&big, again, w, &fr) == FS_FRAME_OK && fr.total == w);
    check_args((const uint8_t *)again, w, args, n);
    if (b[0] == '*' && w == len)
        FZ_CHECK(memcmp(wire, b, len) == 0); /* as long as canonical: the same bytes */
}

/* fs_resp_args_* on bytes nothing checked: -1, or arguments inside them. */
static void raw_args(const uint8_t *d, size_t n)
{
    const char *exact = fz_tail(2, d, n);
    fs_resp_args it;
    long long count = fs_resp_args_begin(&it, exact, n);
    FZ_CHECK(count >= -1);
    for (size_t i = 0; count >= 0 && i <= n + 1; i++) { /* each argument takes >= 1 byte */
        const char *arg;
        size_t alen;
        int r = fs_resp_args_next(&it, &arg, &alen);
        if (r != 1) {
            FZ_CHECK(r == 0 || r == -1);
            FZ_CHECK(r == -1 || i == (size_t)count); /* 0 only after all the count said */
            break;
        }
        FZ_CHECK(i < (size_t)count);
        FZ_CHECK(arg >= exact && alen <= n && (size_t)(arg - exact) <= n - alen);
    }
}

/* fs_frame_header encodes a bulk string reply: "$<size>\r\n", payload, "\r\n". */
static void reply_header(const fs_framing *f, const uint8_t *d, size_t n)
{
    char hdr[FS_FRAME_HEADER_MAX], want[32];
    size_t hlen, tlen;
    size_t sizes[] = {0, n / 2, n};
    for (size_t i = 0; i < 3; i++) {
        int rc = fs_frame_header(f, (const char *)d, sizes[i], hdr, &hlen);
        if (sizes[i] > f->max_size) {
            FZ_CHECK(rc == FS_FRAME_TOO_LARGE);
            continue;
        }
        FZ_CHECK(rc == 0);
        int w = snprintf(want, sizeof want, "$%zu\r\n", sizes[i]);
        FZ_CHECK(hlen == (size_t)w && memcmp(hdr, want, hlen) == 0);
    }
    FZ_CHECK(fs_frame_header(f, NULL, (size_t)f->max_size + 1, hdr, &hlen) == FS_FRAME_TOO_LARGE);
    FZ_CHECK(memcmp(fs_frame_trailer(f, &tlen), "\r\n", 2) == 0 && tlen == 2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    fs_framing f;
    memset(&f, 0, sizeof f);
    f.kind = FS_FRAMING_RESP;
    f.max_size = 1 + fz_upto(&in, FS_RESP_SIZE_LIMIT - 1);
    f.max_args = fz_upto(&in, FS_RESP_ARGS_LIMIT);
    fz_target t = {model, 0, 0, 0, on_frame};
    fz_run_framing(&t, &f, &in);
    raw_args(in.p, in.n); /* fz_run_framing left `in` at the stream */
    reply_header(&f, in.p, in.n);
    return 0;
}
