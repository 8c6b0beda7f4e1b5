/* fuzz_frame_fixed.c — FixedLength: every frame exactly max_size bytes, no header
 * (FS_FRAMING_FIXED). The first input bytes pick the length (>= 1); fz_run_framing checks
 * the rest. */
#include "fuzz.h"

#include <string.h>

/* framing.py's FixedLength._scan. */
static void model(const fs_framing *f, const uint8_t *d, size_t len, fz_expect *e)
{
    (void)d;
    if (len < f->max_size) {
        e->rc = FS_FRAME_PARTIAL;
        e->total = (size_t)f->max_size;
        return;
    }
    e->rc = FS_FRAME_OK;
    e->header = 0;
    e->payload = e->total = (size_t)f->max_size;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    fs_framing f;
    memset(&f, 0, sizeof f);
    f.kind = FS_FRAMING_FIXED;
    f.max_size = 1 + fz_upto(&in, FS_FRAME_SIZE_LIMIT - 1);
    fz_target t = {model, 0, 1, 0, NULL};
    fz_run_framing(&t, &f, &in);
    return 0;
}
