/* fuzz_frame_ascii.c — AsciiLength: the payload's length as `width` zero-padded ASCII
 * digits (FS_FRAMING_ASCII). The first input byte picks the width (1 to 20), the next ones
 * max_size (at most what width digits can say); fz_run_framing checks the rest. */
#include "fuzz.h"

#include <string.h>

/* framing.py's AsciiLength._scan: a non-digit is malformed as soon as it shows, even in an
 * incomplete header; an all-digit header above max_size is too large (its size saturated
 * at 2^64 - 1, as 20 digits may not fit). */
static void model(const fs_framing *f, const uint8_t *d, size_t len, fz_expect *e)
{
    size_t w = f->width;
    size_t have = len < w ? len : w;
    for (size_t i = 0; i < have; i++) {
        if (d[i] < '0' || d[i] > '9') {
            e->rc = FS_FRAME_MALFORMED;
            return;
        }
    }
    if (len < w) {
        e->rc = FS_FRAME_PARTIAL;
        return;
    }
    uint64_t size = 0;
    for (size_t i = 0; i < w; i++) {
        uint64_t digit = (uint64_t)(d[i] - '0');
        size = size > (UINT64_MAX - digit) / 10 ? UINT64_MAX : size * 10 + digit;
    }
    if (size > f->max_size) {
        e->rc = FS_FRAME_TOO_LARGE;
        e->size = size;
        return;
    }
    if (len - w < size) {
        e->rc = FS_FRAME_PARTIAL;
        e->total = w + (size_t)size;
        return;
    }
    e->rc = FS_FRAME_OK;
    e->header = w;
    e->payload = (size_t)size;
    e->total = w + (size_t)size;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    fs_framing f;
    memset(&f, 0, sizeof f);
    f.kind = FS_FRAMING_ASCII;
    f.width = 1 + fz_u8(&in) % 20;
    uint64_t top = 1;
    for (unsigned i = 0; i < f.width && top <= FS_FRAME_SIZE_LIMIT; i++)
        top *= 10;
    top -= 1;
    if (top > FS_FRAME_SIZE_LIMIT)
        top = FS_FRAME_SIZE_LIMIT;
    f.max_size = fz_upto(&in, top);
    fz_target t = {model, f.width, 1, 0, NULL};
    fz_run_framing(&t, &f, &in);
    return 0;
}
