/* Unit tests of src_c/fs_frame.c (plain C; built and run by tests/test_c_units.py). */
#include "fs_frame.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static fs_framing framing(int kind, unsigned width, int little, uint64_t max)
{
    fs_framing f;
    memset(&f, 0, sizeof f);
    f.kind = kind;
    f.width = width;
    f.little = little;
    f.max_size = max;
    return f;
}

static int scan(const fs_framing *f, const char *data, size_t len, fs_frame *fr)
{
    memset(fr, 0, sizeof *fr);
    return fs_frame_scan(f, data, len, fr);
}

/* Encode `payload` with f, then check that every prefix is PARTIAL and the whole is OK. */
static void roundtrip(const fs_framing *f, const char *payload, size_t plen)
{
    char wire[4096];
    size_t hlen, tlen;
    CHECK(fs_frame_header(f, payload, plen, wire, &hlen) == 0);
    const char *trailer = fs_frame_trailer(f, &tlen);
    memcpy(wire + hlen, payload, plen);
    memcpy(wire + hlen + plen, trailer, tlen);
    size_t total = hlen + plen + tlen;
    fs_frame fr;
    for (size_t cut = 0; cut < total; cut++)
        CHECK(scan(f, wire, cut, &fr) == FS_FRAME_PARTIAL);
    wire[total] = 'Z'; /* the start of the next frame must not matter */
    CHECK(scan(f, wire, total + 1, &fr) == FS_FRAME_OK);
    CHECK(fr.total == total);
    size_t expect = plen + ((f->kind == FS_FRAMING_DELIMITER && f->keep) ? tlen : 0);
    CHECK(fr.payload == expect);
    CHECK(memcmp(wire + fr.header, payload, plen) == 0);
}

static void test_length_prefix(void)
{
    unsigned widths[] = {1, 2, 4, 8};
    for (int w = 0; w < 4; w++) {
        for (int little = 0; little < 2; little++) {
            uint64_t max = widths[w] == 1 ? 255 : 1000;
            fs_framing f = framing(FS_FRAMING_LENGTH, widths[w], little, max);
            CHECK(fs_framing_check(&f) == 0);
            roundtrip(&f, "", 0);
            roundtrip(&f, "hello", 5);
            char big[255];
            memset(big, 'q', sizeof big);
            roundtrip(&f, big, sizeof big);
        }
    }
    fs_framing f = framing(FS_FRAMING_LENGTH, 4, 0, 100);
    fs_frame fr;
    CHECK(scan(&f, "\x00\x00\x00\x05", 4, &fr) == FS_FRAME_PARTIAL && fr.total == 9);
    CHECK(scan(&f, "\xff\xff\xff\xff", 4, &fr) == FS_FRAME_TOO_LARGE && fr.size == 0xffffffffu);
    fs_framing le = framing(FS_FRAMING_LENGTH, 2, 1, 1000);
    CHECK(scan(&le, "\x03\x00" "abc", 5, &fr) == FS_FRAME_OK && fr.payload == 3 && fr.header == 2);
    char out[FS_FRAME_HEADER_MAX];
    size_t hlen;
    CHECK(fs_frame_header(&f, NULL, 101, out, &hlen) == FS_FRAME_TOO_LARGE);
    fs_framing bad = framing(FS_FRAMING_LENGTH, 3, 0, 10);
    CHECK(fs_framing_check(&bad) != 0);
    bad = framing(FS_FRAMING_LENGTH, 1, 0, 256);
    CHECK(fs_framing_check(&bad) != 0);
    bad = framing(FS_FRAMING_LENGTH, 8, 0, ((uint64_t)1 << 61));
    CHECK(fs_framing_check(&bad) != 0);
}

static void test_varint(void)
{
    fs_framing f = framing(FS_FRAMING_VARINT, 0, 0, 100000);
    char payload[300];
    memset(payload, 'v', sizeof payload);
    roundtrip(&f, payload, 0);
    roundtrip(&f, payload, 127);
    roundtrip(&f, payload, 128);
    roundtrip(&f, payload, 300);
    char out[FS_FRAME_HEADER_MAX];
    size_t hlen;
    CHECK(fs_frame_header(&f, payload, 300, out, &hlen) == 0 && hlen == 2);
    CHECK((unsigned char)out[0] == 0xac && out[1] == 0x02); /* protobuf's own example */
    fs_frame fr;
    /* 4 GiB announced: refused from the header alone */
    CHECK(scan(&f, "\x80\x80\x80\x80\x10", 5, &fr) == FS_FRAME_TOO_LARGE);
    fs_framing wide = framing(FS_FRAMING_VARINT, 0, 0, FS_FRAME_SIZE_LIMIT);
    CHECK(scan(&wide, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", 10, &fr) != FS_FRAME_OK);
    fs_framing zero = framing(FS_FRAMING_VARINT, 0, 0, 0);
    CHECK(scan(&zero, "\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00", 11, &fr) == FS_FRAME_MALFORMED);
}

static void test_delimiter(void)
{
    fs_framing f = framing(FS_FRAMING_DELIMITER, 0, 0, 10);
    f.delim = "\r\n";
    f.delim_len = 2;
    CHECK(fs_framing_check(&f) == 0);
    roundtrip(&f, "", 0);
    roundtrip(&f, "abc\r", 4);
    roundtrip(&f, "0123456789", 10);
    f.keep = 1;
    roundtrip(&f, "abc", 3);
    f.keep = 0;
    fs_frame fr;
    CHECK(scan(&f, "0123456789a\r\n", 13, &fr) == FS_FRAME_TOO_LARGE);
    CHECK(scan(&f, "0123456789ab", 12, &fr) == FS_FRAME_TOO_LARGE); /* no delimiter within 12 */
    CHECK(scan(&f, "0123456789a", 11, &fr) == FS_FRAME_PARTIAL);
    /* resume: a delimiter split across two scans is still found */
    memset(&fr, 0, sizeof fr);
    CHECK(fs_frame_scan(&f, "abc\r", 4, &fr) == FS_FRAME_PARTIAL);
    CHECK(fr.resume == 3);
    CHECK(fs_frame_scan(&f, "abc\r\n", 5, &fr) == FS_FRAME_OK && fr.payload == 3);
    char out[FS_FRAME_HEADER_MAX];
    size_t hlen;
    CHECK(fs_frame_header(&f, "a\r\nb", 4, out, &hlen) == FS_FRAME_MALFORMED);
    fs_framing empty = framing(FS_FRAMING_DELIMITER, 0, 0, 10);
    CHECK(fs_framing_check(&empty) != 0);
}

static void test_fixed(void)
{
    fs_framing f = framing(FS_FRAMING_FIXED, 0, 0, 5);
    roundtrip(&f, "12345", 5);
    char out[FS_FRAME_HEADER_MAX];
    size_t hlen;
    CHECK(fs_frame_header(&f, "1234", 4, out, &hlen) == FS_FRAME_MALFORMED);
    fs_frame fr;
    CHECK(scan(&f, "123", 3, &fr) == FS_FRAME_PARTIAL && fr.total == 5);
    fs_framing empty = framing(FS_FRAMING_FIXED, 0, 0, 0); /* would never consume input */
    CHECK(fs_framing_check(&empty) != 0);
    CHECK(fs_framing_check(&f) == 0);
}

static void test_ascii(void)
{
    fs_framing f = framing(FS_FRAMING_ASCII, 5, 0, 99999);
    CHECK(fs_framing_check(&f) == 0);
    roundtrip(&f, "", 0);
    roundtrip(&f, "hello", 5);
    char out[FS_FRAME_HEADER_MAX];
    size_t hlen;
    CHECK(fs_frame_header(&f, "hello", 5, out, &hlen) == 0 && hlen == 5 && memcmp(out, "00005", 5) == 0);
    fs_frame fr;
    CHECK(scan(&f, "00x05", 5, &fr) == FS_FRAME_MALFORMED);
    CHECK(scan(&f, "0x", 2, &fr) == FS_FRAME_MALFORMED);
    fs_framing small = framing(FS_FRAMING_ASCII, 5, 0, 100);
    CHECK(scan(&small, "00101", 5, &fr) == FS_FRAME_TOO_LARGE && fr.size == 101);
    fs_framing bad = framing(FS_FRAMING_ASCII, 2, 0, 100);
    CHECK(fs_framing_check(&bad) != 0);
    fs_framing wide = framing(FS_FRAMING_ASCII, 20, 0, FS_FRAME_SIZE_LIMIT);
    CHECK(fs_framing_check(&wide) == 0);
    CHECK(scan(&wide, "99999999999999999999", 20, &fr) == FS_FRAME_TOO_LARGE && fr.size == UINT64_MAX);
    CHECK(scan(&wide, "18446744073709551615", 20, &fr) == FS_FRAME_TOO_LARGE && fr.size == UINT64_MAX);
    CHECK(scan(&wide, "01152921504606846977", 20, &fr) == FS_FRAME_TOO_LARGE &&
          fr.size == FS_FRAME_SIZE_LIMIT + 1);
    /* Not all digits: malformed, even when the digits before already exceed max_size. */
    fs_framing tiny = framing(FS_FRAMING_ASCII, 2, 0, 5);
    CHECK(scan(&tiny, "9x", 2, &fr) == FS_FRAME_MALFORMED);
    CHECK(scan(&tiny, "99", 2, &fr) == FS_FRAME_TOO_LARGE && fr.size == 99);
    CHECK(scan(&small, "99999", 5, &fr) == FS_FRAME_TOO_LARGE && fr.size == 99999);
}

static void test_netstring(void)
{
    fs_framing f = framing(FS_FRAMING_NETSTRING, 0, 0, 1000);
    roundtrip(&f, "", 0);
    roundtrip(&f, "hello world!", 12);
    fs_frame fr;
    CHECK(scan(&f, "12:hello world!,", 16, &fr) == FS_FRAME_OK && fr.header == 3 && fr.payload == 12);
    CHECK(scan(&f, "5:hello;", 8, &fr) == FS_FRAME_MALFORMED);
    CHECK(scan(&f, ":", 1, &fr) == FS_FRAME_MALFORMED);
    CHECK(scan(&f, "1x", 2, &fr) == FS_FRAME_MALFORMED);
    CHECK(scan(&f, "1001", 4, &fr) == FS_FRAME_TOO_LARGE);
    CHECK(scan(&f, "99999999999999999999999999", 26, &fr) == FS_FRAME_TOO_LARGE);
    /* No leading zeros: "0" may still become "0:,", but "00" never is a netstring. */
    CHECK(scan(&f, "0", 1, &fr) == FS_FRAME_PARTIAL);
    CHECK(scan(&f, "0:,", 3, &fr) == FS_FRAME_OK && fr.payload == 0 && fr.total == 3);
    CHECK(scan(&f, "00", 2, &fr) == FS_FRAME_MALFORMED);
    CHECK(scan(&f, "01:a,", 5, &fr) == FS_FRAME_MALFORMED);
    char zeros[4096];
    memset(zeros, '0', sizeof zeros);
    CHECK(scan(&f, zeros, sizeof zeros, &fr) == FS_FRAME_MALFORMED);
    /* A length longer than max_size in digits is refused at the digit that exceeds it. */
    CHECK(scan(&f, "10000", 5, &fr) == FS_FRAME_TOO_LARGE && fr.size == 10000);
    fs_framing zero = framing(FS_FRAMING_NETSTRING, 0, 0, 0);
    CHECK(scan(&zero, "0:,", 3, &fr) == FS_FRAME_OK);
    CHECK(scan(&zero, "1", 1, &fr) == FS_FRAME_TOO_LARGE);
}

static void test_find_any(void)
{
    const char *d[] = {"\r\n", "\n", ""};
    size_t l[] = {2, 1, 0};
    size_t which = 99;
    const char *data = "ab\ncd\r\n";
    CHECK(fs_find_any(data, 7, 0, d, l, 3, &which) == 2 && which == 1);
    CHECK(fs_find_any(data, 7, 3, d, l, 3, &which) == 5 && which == 0); /* tie at 5? no: \r at 5 */
    CHECK(fs_find_any(data, 2, 0, d, l, 3, &which) == -1);
    CHECK(fs_find_any(data, 7, 7, d, l, 3, &which) == -1);
    const char *e[] = {"cd", "d\r"};
    size_t el[] = {2, 2};
    CHECK(fs_find_any(data, 7, 0, e, el, 2, &which) == 3 && which == 0);
}

/* A delimiter scan told to resume past the end of its range: a caller lost track of the
 * range it scans. With assertions on, fs_frame_scan refuses it. */
static void scan_resuming_past_the_end(void *unused)
{
    (void)unused;
    fs_framing f = framing(FS_FRAMING_DELIMITER, 0, 0, 10);
    f.delim = "\n";
    f.delim_len = 1;
    fs_frame fr;
    memset(&fr, 0, sizeof fr);
    fr.resume = 100;
    (void)fs_frame_scan(&f, "abc", 3, &fr);
}

/* A scan of no memory that claims bytes. */
static void scan_null_with_length(void *unused)
{
    (void)unused;
    fs_framing f = framing(FS_FRAMING_LENGTH, 4, 0, 100);
    fs_frame fr;
    memset(&fr, 0, sizeof fr);
    (void)fs_frame_scan(&f, NULL, 0, &fr); /* fine: nothing held */
    (void)fs_frame_scan(&f, NULL, 3, &fr); /* PARTIAL without reading: harmless unchecked */
}

static void test_invariant_checks_fire(void)
{
    CHECK(check_aborts(scan_resuming_past_the_end, NULL, "fr->resume <= len"));
    CHECK(check_aborts(scan_null_with_length, NULL, "|| len == 0"));
}

int main(void)
{
    test_length_prefix();
    test_varint();
    test_delimiter();
    test_fixed();
    test_ascii();
    test_netstring();
    test_find_any();
    test_invariant_checks_fire();
    return check_report("test_fs_frame");
}
