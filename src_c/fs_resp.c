/* fs_resp.c — RESP command scanner and argument reader; see fs_resp.h for the contract. */
#include "fs_resp.h"
#include "fs_debug.h"

#include <string.h>

_Static_assert(sizeof(size_t) >= sizeof(uint64_t), "the resume point packs 64 bits into a size_t");

#define OFFSET_MASK ((((size_t)1) << FS_RESP_OFFSET_BITS) - 1)

static int is_blank(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* The "<type><digits>\r\n" line at p[0 .. len): FS_FRAME_OK with *value and *next (the
 * offset after its '\n'), PARTIAL, MALFORMED, or TOO_LARGE (fr->size set) as soon as the
 * digits pass `limit`. `negative_one`: "-1" is accepted (as *value 0, *null set). */
static int number_line(const unsigned char *p, size_t len, int negative_one, uint64_t limit, uint64_t *value,
                       int *null, size_t *next, fs_frame *fr)
{
    size_t i = 1; /* p[0], the type byte, was checked by the caller */
    int neg = 0;
    *null = 0;
    if (negative_one && i < len && p[i] == '-') {
        neg = 1;
        i++;
    }
    size_t digits = i;
    uint64_t v = 0;
    while (i < len && p[i] >= '0' && p[i] <= '9') {
        if (i - digits == 19)
            return FS_FRAME_MALFORMED; /* 20 digits: longer than any count we could take */
        v = v * 10 + (uint64_t)(p[i] - '0');
        if (!neg && v > limit) { /* refused as soon as the digits say so */
            fr->size = v;
            return FS_FRAME_TOO_LARGE;
        }
        i++;
    }
    if (i == len)
        return FS_FRAME_PARTIAL;
    if (i == digits || p[i] != '\r')
        return FS_FRAME_MALFORMED;
    if (i + 1 == len)
        return FS_FRAME_PARTIAL;
    if (p[i + 1] != '\n')
        return FS_FRAME_MALFORMED;
    if (neg) {
        if (v != 1)
            return FS_FRAME_MALFORMED; /* "*-1" is a null array; no other negative count */
        *null = 1;
        v = 0;
    }
    *value = v;
    *next = i + 2;
    FS_ASSERT(*next <= FS_RESP_LINE_MAX && *next <= len);
    return FS_FRAME_OK;
}

/* Arguments of the inline line data[0 .. end) (its '\n' excluded, a '\r' before it too). */
static uint64_t count_blank_separated(const unsigned char *p, size_t end)
{
    uint64_t n = 0;
    for (size_t i = 0; i < end; i++)
        if (!is_blank(p[i]) && (i == 0 || is_blank(p[i - 1])))
            n++;
    return n;
}

static size_t line_end(const unsigned char *p, size_t nl)
{
    return nl > 0 && p[nl - 1] == '\r' ? nl - 1 : nl;
}

static int scan_inline(const fs_framing *f, const unsigned char *p, size_t len, fs_frame *fr)
{
    /* The line, '\n' included, fits in max_size bytes, or it is too large. */
    size_t window = len;
    if (f->max_size < window)
        window = (size_t)f->max_size;
    size_t start = fr->resume < window ? fr->resume : window;
    const unsigned char *hit = memchr(p + start, '\n', window - start);
    if (hit == NULL) {
        if (len >= f->max_size) {
            fr->size = len > f->max_size ? len : f->max_size + 1; /* the line needs more */
            return FS_FRAME_TOO_LARGE;
        }
        fr->resume = window;
        fr->total = 0;
        return FS_FRAME_PARTIAL;
    }
    size_t nl = (size_t)(hit - p);
    uint64_t args = count_blank_separated(p, line_end(p, nl));
    if (args > f->max_args) {
        fr->size = args;
        fr->over_args = 1;
        return FS_FRAME_TOO_LARGE;
    }
    fr->header = 0;
    fr->payload = fr->total = nl + 1;
    return FS_FRAME_OK;
}

static int scan_array(const fs_framing *f, const unsigned char *p, size_t len, fs_frame *fr)
{
    uint64_t count;
    int null;
    size_t pos;
    int rc = number_line(p, len, 1, f->max_args, &count, &null, &pos, fr);
    if (rc != FS_FRAME_OK) {
        if (rc == FS_FRAME_TOO_LARGE)
            fr->over_args = 1;
        fr->resume = 0;
        fr->total = 0;
        return rc;
    }
    uint64_t done = 0;
    if (fr->resume != 0) { /* a previous scan of this command stopped at an argument */
        pos = fr->resume & OFFSET_MASK;
        done = fr->resume >> FS_RESP_OFFSET_BITS;
        FS_ASSERT(pos <= len && done <= count);
    }
    for (; done < count; done++) {
        if (pos >= len)
            goto partial;
        if (p[pos] != '$')
            return FS_FRAME_MALFORMED;
        uint64_t size;
        size_t body;
        rc = number_line(p + pos, len - pos, 0, f->max_size, &size, &null, &body, fr);
        if (rc == FS_FRAME_PARTIAL)
            goto partial;
        if (rc != FS_FRAME_OK)
            return rc;
        /* pos + body <= max_size + FS_RESP_LINE_MAX and size <= max_size <= 2^40: exact */
        uint64_t end = (uint64_t)pos + body + size + 2;
        if (end > f->max_size) {
            fr->size = end;
            return FS_FRAME_TOO_LARGE;
        }
        size_t stop = pos + body + (size_t)size; /* where "\r\n" must follow the body */
        if ((stop < len && p[stop] != '\r') || (stop + 1 < len && p[stop + 1] != '\n'))
            return FS_FRAME_MALFORMED; /* said as soon as the byte is here */
        if (end > len)
            goto partial;
        pos = (size_t)end;
    }
    if (pos > f->max_size) { /* only a header: "*0\r\n" with max_size below 4 */
        fr->size = pos;
        return FS_FRAME_TOO_LARGE;
    }
    fr->header = 0;
    fr->payload = fr->total = pos;
    return FS_FRAME_OK;
partial:
    fr->resume = pos | ((size_t)done << FS_RESP_OFFSET_BITS);
    fr->total = 0;
    return FS_FRAME_PARTIAL;
}

int fs_resp_scan(const fs_framing *f, const char *data, size_t len, fs_frame *fr)
{
    const unsigned char *p = (const unsigned char *)data;
    fr->over_args = 0;
    if (len == 0) {
        fr->resume = 0;
        fr->total = 0;
        return FS_FRAME_PARTIAL;
    }
    return p[0] == '*' ? scan_array(f, p, len, fr) : scan_inline(f, p, len, fr);
}

long long fs_resp_args_begin(fs_resp_args *it, const char *data, size_t len)
{
    const unsigned char *p = (const unsigned char *)data;
    memset(it, 0, sizeof *it);
    it->data = data;
    it->len = len;
    if (len == 0 || p[len - 1] != '\n')
        return -1;
    if (p[0] != '*') {
        it->inline_ = 1;
        it->left = count_blank_separated(p, line_end(p, len - 1));
        return (long long)it->left;
    }
    fs_frame fr;
    int null;
    size_t next;
    if (number_line(p, len, 1, FS_RESP_ARGS_LIMIT, &it->left, &null, &next, &fr) != FS_FRAME_OK)
        return -1;
    it->pos = next;
    return (long long)it->left;
}

int fs_resp_args_next(fs_resp_args *it, const char **arg, size_t *alen)
{
    const unsigned char *p = (const unsigned char *)it->data;
    size_t len = it->len;
    if (it->left == 0)
        return 0;
    if (it->inline_) {
        size_t end = line_end(p, len - 1);
        size_t i = it->pos;
        while (i < end && is_blank(p[i]))
            i++;
        size_t from = i;
        while (i < end && !is_blank(p[i]))
            i++;
        if (i == from)
            return -1;
        *arg = it->data + from;
        *alen = i - from;
        it->pos = i;
        it->left--;
        return 1;
    }
    if (it->pos >= len || p[it->pos] != '$')
        return -1;
    fs_frame fr;
    uint64_t size;
    int null;
    size_t body;
    if (number_line(p + it->pos, len - it->pos, 0, FS_RESP_SIZE_LIMIT, &size, &null, &body, &fr) != FS_FRAME_OK)
        return -1;
    size_t at = it->pos + body;
    if (size > len - at || len - at - (size_t)size < 2)
        return -1;
    *arg = it->data + at;
    *alen = (size_t)size;
    it->pos = at + (size_t)size + 2;
    it->left--;
    return 1;
}
