/* fs_debug.h — the invariant checks of src_c/, live in debug builds only. No Python here.
 *
 * FS_ASSERT(cond) is assert(cond) without NDEBUG (FASTSOCK_DEBUG=1 builds with -UNDEBUG,
 * and tests/test_c_units.py builds every C unit test that way too) and expands to nothing
 * with NDEBUG (the release build): no code, no evaluation of `cond`, so a release build is
 * the same machine code as without the checks. Because `cond` then vanishes, it must have
 * no side effects, and a variable or helper used only inside checks must itself be under
 * #ifndef NDEBUG (as fs_poll.c's poller_check is), or -Wall -Wextra would warn about it in
 * release builds.
 *
 * Each module keeps its own structure checks next to the structure:
 *   FS_BUFFER_CHECK(b)   fs_buffer.h   0 <= head <= tail <= cap, and data != NULL || cap == 0
 *   POLLER_CHECK(p)      fs_poll.c     the slot table, count and pollfd array agree
 *   WAIT_CHECK(w)        fs_poll.c     a prepared wait's arrays fit what it will be asked
 *   fs_frame_scan()      fs_frame.c    a scanner's result lies inside its input
 *   fs_send_all() etc.   fs_io.c       progress counters stay within their buffers
 */
#ifndef FS_DEBUG_H
#define FS_DEBUG_H

#include <assert.h>

#ifdef NDEBUG
#define FS_ASSERT(cond) ((void)0)
#else
#define FS_ASSERT(cond) assert(cond)
#endif

#endif /* FS_DEBUG_H */
