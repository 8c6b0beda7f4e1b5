# C declarations of src_c/fs_frame.h (frame scanners and header encoders).
from libc.stdint cimport uint64_t

cdef extern from "fs_frame.h" nogil:
    enum:
        FS_FRAMING_LENGTH
        FS_FRAMING_VARINT
        FS_FRAMING_DELIMITER
        FS_FRAMING_FIXED
        FS_FRAMING_ASCII
        FS_FRAMING_NETSTRING
        FS_FRAMING_RESP
        FS_FRAME_PARTIAL
        FS_FRAME_OK
        FS_FRAME_TOO_LARGE
        FS_FRAME_HEADER_MAX

    ctypedef struct fs_framing:
        int kind
        unsigned width
        int little
        int keep
        uint64_t max_size
        const char *delim
        size_t delim_len
        uint64_t max_args

    ctypedef struct fs_frame:
        size_t header
        size_t payload
        size_t total
        uint64_t size
        size_t resume
        int over_args

    int fs_framing_check(const fs_framing *f)
    int fs_frame_scan(const fs_framing *f, const char *data, size_t len, fs_frame *fr)
    int fs_frame_header(const fs_framing *f, const char *payload, size_t plen, char *out, size_t *hlen)
    const char *fs_frame_trailer(const fs_framing *f, size_t *tlen)
    long fs_find_any(const char *data, size_t len, size_t start, const char *const *delims,
                     const size_t *lens, size_t n, size_t *which)

cdef extern from "fs_resp.h" nogil:
    ctypedef struct fs_resp_args:
        pass

    long long fs_resp_args_begin(fs_resp_args *it, const char *data, size_t len)
    int fs_resp_args_next(fs_resp_args *it, const char **arg, size_t *alen)
