/* Regression tests for what the sanitizer run of the extension (`make asan`) found in src_c
 * (plain C; built and run by tests/test_c_units.py under ASan + UBSan with halt_on_error=1,
 * so undefined behaviour fails them even where the result looks right, and by
 * tests/test_valgrind.py under memcheck). One function per finding. */
#include "fs_frame.h"

#include <stdint.h>
#include <string.h>

#include "check.h"

static fs_framing delimiter(const char *delim, size_t dlen, uint64_t max)
{
    fs_framing f;
    memset(&f, 0, sizeof f);
    f.kind = FS_FRAMING_DELIMITER;
    f.delim = delim;
    f.delim_len = dlen;
    f.max_size = max;
    return f;
}

/* A Delimiter scan of an empty range whose pointer is NULL (a buffer that owns no memory:
 * FrameDecoder's and Stream's first scan, for the bytes a framing needs before its first
 * byte) passed NULL to memchr/memmem: undefined even with a 0 length (UBSan: "null pointer
 * passed as argument 1, which is declared to never be null"). Ranges shorter than the
 * delimiter are not searched at all now; the results are unchanged. */
static void test_delimiter_scan_of_nothing(void)
{
    const char *delims[] = {"\n", "\r\n", "END!"};
    for (size_t i = 0; i < sizeof delims / sizeof delims[0]; i++) {
        fs_framing f = delimiter(delims[i], strlen(delims[i]), 100);
        REQUIRE(fs_framing_check(&f) == 0);
        fs_frame fr;
        memset(&fr, 0, sizeof fr);
        CHECK(fs_frame_scan(&f, NULL, 0, &fr) == FS_FRAME_PARTIAL);
        CHECK(fr.total == 0 && fr.resume == 0);
        /* no delimiter in (or shorter than the delimiter), and a resume point at the end */
        memset(&fr, 0, sizeof fr);
        CHECK(fs_frame_scan(&f, "EN", 2, &fr) == FS_FRAME_PARTIAL);
        memset(&fr, 0, sizeof fr);
        fr.resume = 1;
        CHECK(fs_frame_scan(&f, "x", 1, &fr) == FS_FRAME_PARTIAL);
    }
    /* the search still finds a delimiter that exactly fills the range */
    fs_framing f = delimiter("\r\n", 2, 100);
    fs_frame fr;
    memset(&fr, 0, sizeof fr);
    CHECK(fs_frame_scan(&f, "\r\n", 2, &fr) == FS_FRAME_OK);
    CHECK(fr.total == 2 && fr.payload == 0);
    memset(&fr, 0, sizeof fr);
    fr.resume = 1;
    CHECK(fs_frame_scan(&f, "ab\r\n", 4, &fr) == FS_FRAME_OK);
    CHECK(fr.total == 4 && fr.payload == 2);
}

int main(void)
{
    test_delimiter_scan_of_nothing();
    return check_report("test_sanitizer_findings");
}
