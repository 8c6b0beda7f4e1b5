/* fuzz_frame_varint.c — Varint: a protobuf base-128 length prefix of 1 to 10 bytes
 * (FS_FRAMING_VARINT). The first input bytes pick max_size; fz_run_framing checks the rest.
 * A decoded header may be longer than needed (0x80 0x00 is 0), so re-encoding it may give
 * a shorter header: the payload must still read back (lax_header). */
#include "fuzz.h"

#include <string.h>

/* framing.py's Varint._scan. */
static void model(const fs_framing *f, const uint8_t *d, size_t len, fz_expect *e)
{
    uint64_t value = 0;
    for (size_t i = 0; i < 10; i++) {
        if (i >= len) {
            e->rc = FS_FRAME_PARTIAL;
            return;
        }
        if (i == 9 && d[i] > 1) {
            e->rc = FS_FRAME_MALFORMED; /* more than 64 bits */
            return;
        }
        value |= (uint64_t)(d[i] & 0x7f) << (7 * i);
        if (value > f->max_size) {
            e->rc = FS_FRAME_TOO_LARGE;
            e->size = value;
            return;
        }
        if (!(d[i] & 0x80)) {
            if (len - (i + 1) < value) {
                e->rc = FS_FRAME_PARTIAL;
                e->total = i + 1 + (size_t)value;
                return;
            }
            e->rc = FS_FRAME_OK;
            e->header = i + 1;
            e->payload = (size_t)value;
            e->total = i + 1 + (size_t)value;
            return;
        }
    }
    e->rc = FS_FRAME_MALFORMED;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    fs_framing f;
    memset(&f, 0, sizeof f);
    f.kind = FS_FRAMING_VARINT;
    f.max_size = fz_upto(&in, FS_FRAME_SIZE_LIMIT);
    fz_target t = {model, 10, 1, 1, NULL};
    fz_run_framing(&t, &f, &in);
    return 0;
}
