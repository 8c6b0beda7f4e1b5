/* fuzz_frame_delimiter.c — Delimiter: the payload, then a delimiter of 1 to 8 bytes, which
 * the frame read keeps or not (FS_FRAMING_DELIMITER; one byte is found with memchr, more
 * with memmem). The first input byte picks the delimiter's length and `keep`, the next
 * ones the delimiter and max_size; fz_run_framing checks the rest. */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

/* framing.py's Delimiter._scan (fresh: resume 0), with a naive search: the first
 * occurrence that lies within max_size + len(delimiter) bytes. */
static void model(const fs_framing *f, const uint8_t *d, size_t len, fz_expect *e)
{
    size_t dlen = f->delim_len;
    size_t window = len;
    if (f->max_size + dlen < window)
        window = (size_t)f->max_size + dlen;
    for (size_t at = 0; at + dlen <= window; at++) {
        if (memcmp(d + at, f->delim, dlen) != 0)
            continue;
        if (at > f->max_size) {
            e->rc = FS_FRAME_TOO_LARGE;
            e->size = at;
            return;
        }
        e->rc = FS_FRAME_OK;
        e->header = 0;
        e->payload = f->keep ? at + dlen : at;
        e->total = at + dlen;
        return;
    }
    if (window < len || len >= f->max_size + dlen) {
        e->rc = FS_FRAME_TOO_LARGE;
        e->size = len;
        return;
    }
    e->rc = FS_FRAME_PARTIAL;
    e->resume = window >= dlen - 1 ? window - (dlen - 1) : 0; /* a delimiter may start there */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    uint8_t how = fz_u8(&in);
    size_t dlen = 1 + (how & 7);
    const uint8_t *src = fz_bytes(&in, &dlen);
    if (dlen == 0)
        return 0; /* no delimiter byte left in the input */
    char *delim = fz_copy(src, dlen); /* exactly its bytes: a read past them is reported */
    fs_framing f;
    memset(&f, 0, sizeof f);
    f.kind = FS_FRAMING_DELIMITER;
    f.keep = (how >> 3) & 1;
    f.delim = delim;
    f.delim_len = dlen;
    f.max_size = fz_upto(&in, FS_FRAME_SIZE_LIMIT);
    fz_target t = {model, 0, 1, 0, NULL};
    fz_run_framing(&t, &f, &in);
    free(delim);
    return 0;
}
