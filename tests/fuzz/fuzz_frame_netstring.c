/* fuzz_frame_netstring.c — Netstring: "<decimal length>:<payload>," (FS_FRAMING_NETSTRING).
 * The first input bytes pick max_size; fz_run_framing checks the rest. */
#include "fuzz.h"

#include <string.h>

/* framing.py's Netstring._scan: no leading zeros; a length is too large at the digit that
 * takes it past max_size (so at most 20 header bytes are read to refuse it). */
static void model(const fs_framing *f, const uint8_t *d, size_t len, fz_expect *e)
{
    if (len >= 2 && d[0] == '0' && d[1] >= '0' && d[1] <= '9') {
        e->rc = FS_FRAME_MALFORMED;
        return;
    }
    uint64_t size = 0;
    for (size_t i = 0; i < len; i++) {
        if (d[i] >= '0' && d[i] <= '9') {
            size = size * 10 + (uint64_t)(d[i] - '0'); /* size <= max_size <= 2^60 before */
            if (size > f->max_size) {
                e->rc = FS_FRAME_TOO_LARGE;
                e->size = size;
                return;
            }
            continue;
        }
        if (d[i] != ':' || i == 0) {
            e->rc = FS_FRAME_MALFORMED;
            return;
        }
        size_t total = i + 1 + (size_t)size + 1;
        if (len < total) {
            e->rc = FS_FRAME_PARTIAL;
            e->total = total;
            return;
        }
        if (d[total - 1] != ',') {
            e->rc = FS_FRAME_MALFORMED;
            return;
        }
        e->rc = FS_FRAME_OK;
        e->header = i + 1;
        e->payload = (size_t)size;
        e->total = total;
        return;
    }
    e->rc = FS_FRAME_PARTIAL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    fs_framing f;
    memset(&f, 0, sizeof f);
    f.kind = FS_FRAMING_NETSTRING;
    f.max_size = fz_upto(&in, FS_FRAME_SIZE_LIMIT);
    /* 2^60 has 19 digits: a 20th always passes max_size */
    fz_target t = {model, 20, 1, 0, NULL};
    fz_run_framing(&t, &f, &in);
    return 0;
}
