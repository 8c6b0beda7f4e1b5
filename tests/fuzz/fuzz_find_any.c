/* fuzz_find_any.c — fs_find_any, the scanner behind read_until/readline with several
 * delimiters: the earliest occurrence of any of them, the first listed winning a tie, empty
 * ones never matching, each match ending inside the range. Checked against a naive search;
 * and a search resumed where the previous one (on a shorter prefix, with no match) said a
 * match could still begin — the Stream's resume — finds what a search from the start finds.
 * The first input byte picks how many delimiters (1 to 4), then each one's length (0 to
 * 4) and bytes, the search start and a prefix length; the rest is the data. */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#define MAX_DELIMS 4

static long naive(const uint8_t *d, size_t len, size_t start, const char *const *delims, const size_t *lens,
                  size_t n, size_t *which)
{
    for (size_t at = start; at < len; at++)
        for (size_t i = 0; i < n; i++)
            if (lens[i] && lens[i] <= len - at && memcmp(d + at, delims[i], lens[i]) == 0) {
                *which = i;
                return (long)at;
            }
    return -1;
}

static long find(const uint8_t *d, size_t len, size_t start, const char *const *delims, const size_t *lens,
                 size_t n, size_t *which)
{
    /* a read past len is reported */
    return fs_find_any(fz_tail(0, d, len), len, start, delims, lens, n, which);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    size_t n = 1 + fz_u8(&in) % MAX_DELIMS;
    char *delims[MAX_DELIMS];
    size_t lens[MAX_DELIMS], maxlen = 0;
    for (size_t i = 0; i < n; i++) {
        lens[i] = fz_u8(&in) % 5;
        const uint8_t *src = fz_bytes(&in, &lens[i]);
        delims[i] = fz_copy(src, lens[i]);
        if (lens[i] > maxlen)
            maxlen = lens[i];
    }
    size_t start = fz_u16(&in);
    size_t split = fz_u16(&in);
    const uint8_t *d = in.p;
    size_t len = in.n;
    start %= len + 2; /* len + 1: a start past the end finds nothing */
    split %= len + 1;
    const char *const *dl = (const char *const *)delims;

    size_t w1 = 0, w2 = 0;
    long got = find(d, len, start, dl, lens, n, &w1);
    long want = naive(d, len, start, dl, lens, n, &w2);
    FZ_CHECK(got == want);
    FZ_CHECK(got < 0 || w1 == w2);

    /* The prefix d[0 .. split) first, as a Stream sees it before the rest arrives. */
    size_t ws = 0, wf = 0;
    long early = find(d, split, 0, dl, lens, n, &ws);
    long whole = naive(d, len, 0, dl, lens, n, &wf);
    if (early < 0 && maxlen > 0) {
        size_t resume = split >= maxlen - 1 ? split - (maxlen - 1) : 0;
        size_t wr = 0;
        long again = find(d, len, resume, dl, lens, n, &wr);
        FZ_CHECK(again == whole && (again < 0 || wr == wf));
    } else if (early >= 0) {
        /* a match in the prefix is a match in the whole; an earlier one may need bytes
         * past the prefix (delimiters b"abc" and b"b" on b"ab" + b"c") */
        FZ_CHECK(whole >= 0 && whole <= early);
    }
    for (size_t i = 0; i < n; i++)
        free(delims[i]);
    return 0;
}
