"""W3's parsing loop in one process, for comparing two builds (timing or callgrind).

A forked child writes N 100-byte length-prefixed frames into a socketpair; the parent reads
them with `Stream.read_frames` (read_size 256 KiB, as W3's server) and prints its own CPU
time per frame. Instruction counts, steadier than time on a shared VM:

    valgrind --tool=callgrind python bench/read_frames_loop.py 200000
    FASTSOCK_PURE=1 python bench/read_frames_loop.py 3000000   # the pure backend
"""

import os
import socket
import struct
import sys
import time

import fastsock

FRAME = struct.pack(">I", 100) + b"x" * 100
BATCH = 1000  # frames per sendall in the writer


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    n -= n % BATCH
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the writer: N frames, then EOF
        try:
            a.close()
            blob = FRAME * BATCH
            for _ in range(n // BATCH):
                b.sendall(blob)
            b.close()
        finally:
            os._exit(0)
    b.close()
    try:
        stream = fastsock.Stream(fastsock.socket(fileno=a.detach()),
                                 framing=fastsock.LengthPrefix(4, "big"), read_size=256 * 1024)
        got = 0
        t = time.process_time()
        while got < n:
            batch = stream.read_frames(max_frames=1 << 16)
            if not batch:
                break
            got += len(batch)
        t = time.process_time() - t
        stream.close()
    finally:
        os.waitpid(pid, 0)
    print(f"{fastsock.BACKEND} backend: {got} frames, {t / max(got, 1) * 1e9:.1f} ns/frame of CPU")


if __name__ == "__main__":
    main()
