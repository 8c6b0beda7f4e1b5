"""The HOWTO's non-blocking echo server, multiplexed with fastsock.Selector.

Run: python examples/selector_echo.py   (serves 20 clients from threads, then stops)
"""

import selectors
import threading

import fastsock


def serve(listener: fastsock.socket, clients: int) -> None:
    sel = fastsock.Selector()
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ, data=None)
    finished = 0
    while finished < clients:
        for key, _events in sel.select(timeout=5):
            if key.data is None:                      # the listening socket: accept
                conn, _ = key.fileobj.accept()
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ, data=b"")
                continue
            conn = key.fileobj
            data = conn.recv(4096)
            if data:
                conn.sendall(data)                    # small replies: the kernel buffer takes them
            else:                                     # the peer closed: so do we
                sel.unregister(conn)
                conn.close()
                finished += 1
    sel.close()


def client(address, n: int) -> None:
    with fastsock.create_connection(address, timeout=5) as sock:
        message = f"hello from client {n}".encode()
        sock.sendall(message)
        assert sock.recv_exactly(len(message)) == message


def main() -> None:
    with fastsock.create_server(("127.0.0.1", 0)) as listener:
        address = listener.getsockname()
        server = threading.Thread(target=serve, args=(listener, 20))
        server.start()
        threads = [threading.Thread(target=client, args=(address, n)) for n in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        server.join()
    print("20 clients echoed")


if __name__ == "__main__":
    main()
