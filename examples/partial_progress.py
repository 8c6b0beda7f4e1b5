"""Nothing is lost when a transfer stops part-way: fastsock says how far it got.

Run: python examples/partial_progress.py
"""

import fastsock


def main() -> None:
    a, b = fastsock.socketpair()
    with a, b:
        a.settimeout(0.2)
        payload = bytes(8 * 1024 * 1024)           # far more than the kernel buffers hold
        try:
            a.sendall(payload)                     # nobody reads: the deadline passes
        except TimeoutError as exc:
            print(f"timed out after sending {exc.bytes_sent} of {len(payload)} bytes")
            sent = exc.bytes_sent
        b.settimeout(5)
        assert b.recv_exactly(sent) == payload[:sent]   # exactly those bytes arrived

        a.sendall_many([b"only ", b"part"])
        a.close()
        try:
            b.recv_exactly(100)
        except fastsock.IncompleteReadError as exc:
            print(f"peer left after {len(exc.partial)} of {exc.expected} bytes: {exc.partial!r}")


if __name__ == "__main__":
    main()
