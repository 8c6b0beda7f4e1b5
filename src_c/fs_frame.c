/* fs_frame.c — frame scanners and header encoders; see fs_frame.h for the contract. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* memmem */
#endif
#include "fs_frame.h"
#include "fs_debug.h"
#include "fs_resp.h"

#include <errno.h>
#include <string.h>

static const char COMMA = ',';
static const char CRLF[] = "\r\n";

int fs_framing_check(const fs_framing *f)
{
    if (f->max_size > FS_FRAME_SIZE_LIMIT)
        return -EINVAL;
    switch (f->kind) {
    case FS_FRAMING_LENGTH:
        if (f->width != 1 && f->width != 2 && f->width != 4 && f->width != 8)
            return -EINVAL;
        if (f->width < 8 && f->max_size > ((uint64_t)1 << (8 * f->width)) - 1)
            return -EINVAL;
        return 0;
    case FS_FRAMING_ASCII: {
        if (f->width < 1 || f->width > 20)
            return -EINVAL;
        uint64_t top = 1; /* 10^width - 1 bounds what width digits can say */
        for (unsigned i = 0; i < f->width && top <= FS_FRAME_SIZE_LIMIT; i++)
            top *= 10;
        if (f->max_size > top - 1)
            return -EINVAL;
        return 0;
    }
    case FS_FRAMING_DELIMITER:
        return (f->delim != NULL && f->delim_len > 0) ? 0 : -EINVAL;
    case FS_FRAMING_FIXED:
        return f->max_size >= 1 ? 0 : -EINVAL; /* a 0-byte frame would never consume input */
    case FS_FRAMING_VARINT:
    case FS_FRAMING_NETSTRING:
        return 0;
    case FS_FRAMING_RESP:
        return (f->max_size >= 1 && f->max_size <= FS_RESP_SIZE_LIMIT && f->max_args <= FS_RESP_ARGS_LIMIT)
                   ? 0
                   : -EINVAL;
    default:
        return -EINVAL;
    }
}

static const char *find(const char *hay, size_t hlen, const char *needle, size_t nlen)
{
    if (nlen == 1)
        return memchr(hay, (unsigned char)needle[0], hlen);
    return memmem(hay, hlen, needle, nlen);
}

/* A header announced `size` payload bytes: OK if all are here, else PARTIAL. */
static int sized(const fs_framing *f, size_t header, uint64_t size, size_t trailer, size_t len, fs_frame *fr)
{
    if (size > f->max_size) {
        fr->size = size;
        return FS_FRAME_TOO_LARGE;
    }
    size_t total = header + (size_t)size + trailer; /* max_size <= 2^60: no overflow */
    fr->header = header;
    fr->payload = (size_t)size;
    fr->total = total;
    return len >= total ? FS_FRAME_OK : FS_FRAME_PARTIAL;
}

static int scan_length(const fs_framing *f, const unsigned char *p, size_t len, fs_frame *fr)
{
    unsigned w = f->width;
    if (len < w) {
        fr->total = 0;
        return FS_FRAME_PARTIAL;
    }
    uint64_t v = 0;
    if (f->little) {
        for (unsigned i = w; i-- > 0;)
            v = (v << 8) | p[i];
    } else {
        for (unsigned i = 0; i < w; i++)
            v = (v << 8) | p[i];
    }
    return sized(f, w, v, 0, len, fr);
}

static int scan_varint(const fs_framing *f, const unsigned char *p, size_t len, fs_frame *fr)
{
    uint64_t v = 0;
    for (size_t i = 0; i < 10; i++) {
        if (i >= len) {
            fr->total = 0;
            return FS_FRAME_PARTIAL;
        }
        uint64_t bits = p[i] & 0x7f;
        if (i == 9 && p[i] > 1)
            return FS_FRAME_MALFORMED; /* more than 64 bits */
        v |= bits << (7 * i);
        if (v > f->max_size) { /* refuse as early as the value is known to be too large */
            fr->size = v;
            return FS_FRAME_TOO_LARGE;
        }
        if (!(p[i] & 0x80))
            return sized(f, i + 1, v, 0, len, fr);
    }
    return FS_FRAME_MALFORMED;
}

static int scan_ascii(const fs_framing *f, const unsigned char *p, size_t len, fs_frame *fr)
{
    unsigned w = f->width;
    if (len < w) {
        for (size_t i = 0; i < len; i++) /* reject garbage as soon as it shows */
            if (p[i] < '0' || p[i] > '9')
                return FS_FRAME_MALFORMED;
        fr->total = 0;
        return FS_FRAME_PARTIAL;
    }
    /* A header that is not all digits is malformed, whatever its digits so far say (the
     * pure twin, framing.py, checks in the same order). */
    for (unsigned i = 0; i < w; i++)
        if (p[i] < '0' || p[i] > '9')
            return FS_FRAME_MALFORMED;
    uint64_t v = 0;
    for (unsigned i = 0; i < w; i++) {
        v = v * 10 + (uint64_t)(p[i] - '0'); /* v <= max_size <= 2^60 before: no overflow */
        if (v > f->max_size) {
            /* Report the whole value, saturated at UINT64_MAX (20 digits may not fit),
             * as framing.py does. */
            for (unsigned j = i + 1; j < w; j++) {
                uint64_t d = (uint64_t)(p[j] - '0');
                v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
            }
            fr->size = v;
            return FS_FRAME_TOO_LARGE;
        }
    }
    return sized(f, w, v, 0, len, fr);
}

static int scan_netstring(const fs_framing *f, const unsigned char *p, size_t len, fs_frame *fr)
{
    uint64_t v = 0;
    /* No leading zeros (the netstring spec forbids them): with them, a peer could send
     * endless "000..." that never exceeds max_size, each read rescanning it all. Without
     * them, a length is over max_size by its (len(str(max_size)) + 1)-th digit. */
    if (len >= 2 && p[0] == '0' && p[1] >= '0' && p[1] <= '9')
        return FS_FRAME_MALFORMED;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = p[i];
        if (c >= '0' && c <= '9') {
            v = v * 10 + (uint64_t)(c - '0');
            if (v > f->max_size) {
                fr->size = v;
                return FS_FRAME_TOO_LARGE;
            }
            continue;
        }
        if (c != ':' || i == 0)
            return FS_FRAME_MALFORMED;
        int r = sized(f, i + 1, v, 1, len, fr);
        if (r == FS_FRAME_OK && p[fr->total - 1] != COMMA)
            return FS_FRAME_MALFORMED;
        return r;
    }
    fr->total = 0;
    return FS_FRAME_PARTIAL;
}

static int scan_delimiter(const fs_framing *f, const char *data, size_t len, fs_frame *fr)
{
    size_t dlen = f->delim_len;
    /* A frame ends within the first max_size + dlen bytes, or it is too large. */
    size_t window = len;
    if (f->max_size + dlen < window)
        window = (size_t)f->max_size + dlen;
    size_t start = fr->resume < window ? (size_t)fr->resume : window;
    /* Too few bytes for a delimiter: no search, so an empty range (data may be NULL, as for
     * a buffer that owns no memory yet) never reaches memchr/memmem, which C forbids a NULL
     * argument even with a 0 length, or forms NULL + 0. */
    const char *hit = window - start >= dlen ? find(data + start, window - start, f->delim, dlen) : NULL;
    if (hit == NULL) {
        if (window < len || len >= f->max_size + dlen) {
            fr->size = len;
            return FS_FRAME_TOO_LARGE;
        }
        /* Resume where a delimiter split across reads could still begin. */
        fr->resume = window >= dlen - 1 ? window - (dlen - 1) : 0;
        fr->total = 0;
        return FS_FRAME_PARTIAL;
    }
    size_t at = (size_t)(hit - data);
    if (at > f->max_size) {
        fr->size = at;
        return FS_FRAME_TOO_LARGE;
    }
    fr->header = 0;
    fr->payload = f->keep ? at + dlen : at;
    fr->total = at + dlen;
    return FS_FRAME_OK;
}

int fs_frame_scan(const fs_framing *f, const char *data, size_t len, fs_frame *fr)
{
    const unsigned char *p = (const unsigned char *)data;
    FS_ASSERT(data != NULL || len == 0);
    /* 0, or where a scan of a prefix of this range stopped (RESP packs an offset into it) */
    FS_ASSERT(f->kind == FS_FRAMING_RESP || fr->resume <= len);
    FS_ASSERT(f->kind != FS_FRAMING_RESP || (fr->resume & ((((uint64_t)1) << FS_RESP_OFFSET_BITS) - 1)) <= len);
    fr->over_args = 0;
    int rc;
    switch (f->kind) {
    case FS_FRAMING_LENGTH:
        rc = scan_length(f, p, len, fr);
        break;
    case FS_FRAMING_VARINT:
        rc = scan_varint(f, p, len, fr);
        break;
    case FS_FRAMING_DELIMITER:
        rc = scan_delimiter(f, data, len, fr);
        break;
    case FS_FRAMING_FIXED:
        rc = sized(f, 0, f->max_size, 0, len, fr);
        break;
    case FS_FRAMING_ASCII:
        rc = scan_ascii(f, p, len, fr);
        break;
    case FS_FRAMING_NETSTRING:
        rc = scan_netstring(f, p, len, fr);
        break;
    case FS_FRAMING_RESP:
        rc = fs_resp_scan(f, data, len, fr);
        break;
    default:
        rc = FS_FRAME_MALFORMED;
        break;
    }
    /* The result lies inside the input: a caller slices data with it unchecked. */
    FS_ASSERT(rc == FS_FRAME_OK || rc == FS_FRAME_PARTIAL || rc == FS_FRAME_TOO_LARGE ||
              rc == FS_FRAME_MALFORMED);
    FS_ASSERT(rc != FS_FRAME_OK || (fr->header <= FS_FRAME_HEADER_MAX && fr->header + fr->payload <= fr->total &&
                                    fr->total <= len));
    FS_ASSERT(rc != FS_FRAME_OK ||
              fr->total - fr->header - fr->payload ==
                  (f->kind == FS_FRAMING_NETSTRING ? 1
                   : f->kind == FS_FRAMING_DELIMITER && !f->keep ? f->delim_len
                                                                 : 0)); /* exactly the trailer */
    FS_ASSERT(rc != FS_FRAME_OK ||
              fr->payload <= f->max_size + (f->kind == FS_FRAMING_DELIMITER && f->keep ? f->delim_len : 0));
    FS_ASSERT(rc != FS_FRAME_PARTIAL || fr->total == 0 || fr->total > len); /* more is needed */
    FS_ASSERT(rc != FS_FRAME_PARTIAL || f->kind == FS_FRAMING_RESP || fr->resume <= len);
    FS_ASSERT(rc != FS_FRAME_TOO_LARGE || (fr->over_args ? fr->size > f->max_args : fr->size > f->max_size));
    return rc;
}

/* 1 when the first occurrence of the delimiter in payload + delimiter starts inside the
 * payload: the delimiter is in it, or a tail of it and the delimiter's head make one
 * (b"ab" + b"aba"). Such a frame would be read back shorter than written. */
static int delimiter_inside(const char *payload, size_t plen, const char *delim, size_t dlen)
{
    if (plen >= dlen && find(payload, plen, delim, dlen) != NULL)
        return 1;
    /* Starting k bytes before the end (0 < k < dlen): the payload ends with delim[0 .. k)
     * and the delimiter continues itself, delim[k .. dlen) == delim[0 .. dlen - k). */
    for (size_t k = dlen - 1 < plen ? dlen - 1 : plen; k > 0; k--)
        if (memcmp(payload + plen - k, delim, k) == 0 && memcmp(delim + k, delim, dlen - k) == 0)
            return 1;
    return 0;
}

/* Decimal digits of v into out, zero-padded to at least `width`; returns the count. */
static size_t decimal(uint64_t v, unsigned width, char *out)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v && n < sizeof tmp);
    size_t pad = width > n ? width - n : 0;
    memset(out, '0', pad);
    for (size_t i = 0; i < n; i++)
        out[pad + i] = tmp[n - 1 - i];
    return pad + n;
}

int fs_frame_header(const fs_framing *f, const char *payload, size_t plen, char *out, size_t *hlen)
{
    uint64_t v = (uint64_t)plen;
    *hlen = 0;
    if (f->kind == FS_FRAMING_FIXED)
        return v == f->max_size ? 0 : FS_FRAME_MALFORMED;
    if (v > f->max_size)
        return FS_FRAME_TOO_LARGE;
    switch (f->kind) {
    case FS_FRAMING_LENGTH:
        for (unsigned i = 0; i < f->width; i++) {
            unsigned shift = 8 * (f->little ? i : f->width - 1 - i);
            out[i] = (char)((v >> shift) & 0xff);
        }
        *hlen = f->width;
        return 0;
    case FS_FRAMING_VARINT: {
        size_t n = 0;
        while (v >= 0x80) {
            out[n++] = (char)((v & 0x7f) | 0x80);
            v >>= 7;
        }
        out[n++] = (char)v;
        *hlen = n;
        FS_ASSERT(n <= 10); /* 64 bits in 7-bit groups */
        return 0;
    }
    case FS_FRAMING_ASCII:
        *hlen = decimal(v, f->width, out);
        FS_ASSERT(*hlen == f->width); /* fs_framing_check: max_size has at most width digits */
        return 0;
    case FS_FRAMING_NETSTRING: {
        size_t n = decimal(v, 1, out);
        out[n++] = ':';
        *hlen = n;
        FS_ASSERT(n <= FS_FRAME_HEADER_MAX);
        return 0;
    }
    case FS_FRAMING_RESP: { /* a bulk string */
        out[0] = '$';
        size_t n = 1 + decimal(v, 1, out + 1);
        out[n++] = '\r';
        out[n++] = '\n';
        *hlen = n;
        FS_ASSERT(n <= FS_FRAME_HEADER_MAX);
        return 0;
    }
    case FS_FRAMING_DELIMITER:
        return delimiter_inside(payload, plen, f->delim, f->delim_len) ? FS_FRAME_MALFORMED : 0;
    default:
        return FS_FRAME_MALFORMED;
    }
}

const char *fs_frame_trailer(const fs_framing *f, size_t *tlen)
{
    if (f->kind == FS_FRAMING_DELIMITER) {
        *tlen = f->delim_len;
        return f->delim;
    }
    if (f->kind == FS_FRAMING_NETSTRING) {
        *tlen = 1;
        return &COMMA;
    }
    if (f->kind == FS_FRAMING_RESP) {
        *tlen = 2;
        return CRLF;
    }
    *tlen = 0;
    return "";
}

long fs_find_any(const char *data, size_t len, size_t start, const char *const *delims,
                 const size_t *lens, size_t n, size_t *which)
{
    long best = -1;
    size_t end = len;
    for (size_t i = 0; i < n; i++) {
        if (lens[i] == 0 || start >= end)
            continue;
        /* Only a match starting before the best so far can win; it may extend past it. */
        size_t stop = end + lens[i] - 1 < len ? end + lens[i] - 1 : len;
        if (stop - start < lens[i])
            continue;
        const char *hit = find(data + start, stop - start, delims[i], lens[i]);
        if (hit != NULL) {
            best = (long)(hit - data);
            end = (size_t)best;
            *which = i;
        }
    }
    /* a hit starts at or after `start` and ends inside the range */
    FS_ASSERT(best == -1 || ((size_t)best >= start && lens[*which] <= len - (size_t)best));
    return best;
}
