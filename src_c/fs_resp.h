/* fs_resp.h — client commands of the Redis protocol (RESP), as fs_frame's FS_FRAMING_RESP.
 *
 * A frame is one command: an array of bulk strings ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n") or an
 * inline line ("GET k\r\n", arguments split at spaces and tabs, no quoting). "*0\r\n",
 * "*-1\r\n" and an empty line are commands of no arguments. Limits are checked as soon as
 * a header shows them, before a caller reserves memory: a command longer than max_size
 * bytes (headers included) or of more than max_args arguments is FS_FRAME_TOO_LARGE. No
 * Python, no allocation; every read is inside data[0 .. len).
 */
#ifndef FS_RESP_H
#define FS_RESP_H

#include "fs_frame.h"

#include <stddef.h>
#include <stdint.h>

/* A partial scan's resume point packs (offset of the next unscanned argument header,
 * arguments complete before it) into one size_t, so a command trickling in is scanned
 * once, not once per read: offset in the low FS_RESP_OFFSET_BITS bits. */
#define FS_RESP_OFFSET_BITS 40
/* Largest max_size (the offset must fit its bits) and max_args (the count, the rest). */
#define FS_RESP_SIZE_LIMIT ((((uint64_t)1) << FS_RESP_OFFSET_BITS) - 1)
#define FS_RESP_ARGS_LIMIT ((((uint64_t)1) << (64 - FS_RESP_OFFSET_BITS)) - 1)
/* Longest "*<count>\r\n" or "$<length>\r\n" line accepted: sign, 19 digits, CR LF. */
#define FS_RESP_LINE_MAX 23

/* fs_frame_scan for FS_FRAMING_RESP (f->max_size, f->max_args). OK: header 0, payload and
 * total the whole command. TOO_LARGE: fr->size is the command's size in bytes as far as
 * known, or (fr->over_args set) its argument count. */
int fs_resp_scan(const fs_framing *f, const char *data, size_t len, fs_frame *fr);

/* The arguments of one complete command (data[0 .. len) as fs_resp_scan accepted it). */
typedef struct {
    const char *data;
    size_t len;
    size_t pos;    /* next byte to read */
    uint64_t left; /* arguments not yet returned */
    int inline_;   /* an inline line, split at blanks */
} fs_resp_args;

/* Start reading a command's arguments: returns their count, or -1 if data is not one
 * complete command (never for bytes fs_resp_scan accepted whole). */
long long fs_resp_args_begin(fs_resp_args *it, const char *data, size_t len);

/* The next argument: 1 with *arg and *alen set (pointing into data), 0 after the last, -1 for
 * bytes that are not a command. */
int fs_resp_args_next(fs_resp_args *it, const char **arg, size_t *alen);

#endif /* FS_RESP_H */
