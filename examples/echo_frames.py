"""A framed echo service: the HOWTO's "length prefix" pattern with fastsock.Stream.

Run: python examples/echo_frames.py   (starts a server thread on 127.0.0.1, then a client)
"""

import threading

import fastsock
from fastsock import LengthPrefix


def serve(listener: fastsock.socket) -> None:
    conn, _ = listener.accept()
    with fastsock.Stream(conn, framing=LengthPrefix(4)) as stream:
        for frame in stream:             # ends at the client's clean EOF
            stream.write_frame(frame.upper())
            stream.flush()


def main() -> None:
    with fastsock.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=serve, args=(listener,))
        server.start()
        with fastsock.connect(listener.getsockname(), framing=LengthPrefix(4), timeout=5) as client:
            client.write_frames([b"stream sockets", b"carry bytes,", b"not messages"])
            client.flush()
            for _ in range(3):
                print(client.read_frame().decode())
            client.shutdown_write()      # "I will send no more, but I still listen"
            assert client.read_frames() == []   # the server closed after our EOF
        server.join()


if __name__ == "__main__":
    main()
