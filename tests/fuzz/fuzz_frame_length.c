/* fuzz_frame_length.c — LengthPrefix: a binary length prefix of 1, 2, 4 or 8 bytes, big or
 * little endian (FS_FRAMING_LENGTH). The first input byte picks the width and byte order,
 * the next ones max_size; fz_run_framing (framing_check.c) checks the rest as a stream. */
#include "fuzz.h"

#include <string.h>

/* framing.py's LengthPrefix._scan. */
static void model(const fs_framing *f, const uint8_t *d, size_t len, fz_expect *e)
{
    unsigned w = f->width;
    if (len < w) {
        e->rc = FS_FRAME_PARTIAL;
        return;
    }
    uint64_t size = 0;
    for (unsigned i = 0; i < w; i++) /* d[0] is the most significant byte, big endian */
        size |= (uint64_t)d[f->little ? i : w - 1 - i] << (8 * i);
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
    static const unsigned widths[] = {1, 2, 4, 8};
    fz_in in = {data, size};
    uint8_t how = fz_u8(&in);
    fs_framing f;
    memset(&f, 0, sizeof f);
    f.kind = FS_FRAMING_LENGTH;
    f.width = widths[how & 3];
    f.little = (how >> 2) & 1;
    uint64_t top = f.width == 8 ? FS_FRAME_SIZE_LIMIT : ((uint64_t)1 << (8 * f.width)) - 1;
    f.max_size = fz_upto(&in, top);
    fz_target t = {model, f.width, 1, 0, NULL};
    fz_run_framing(&t, &f, &in);
    return 0;
}
