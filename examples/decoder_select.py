"""fastsock.FrameDecoder by hand, in a loop that is not asyncio: a server on the standard
library's selectors and sockets receives each connection's bytes straight into that
connection's decoder (get_buffer, recv_into, buffer_updated: no copy per read) and gets back
every frame they complete. The same calls fit trio, gevent or a loop of your own, and
feed(data) takes bytes that were received elsewhere.

Each client sends frames of many sizes (up to 1 MiB, which arrives over many reads), then
half-closes; the server replies with what it decoded (frames and a digest), which the client
checks. One client leaves in the middle of a frame: eof() says so with IncompleteReadError.

Run: python examples/decoder_select.py   (serves its clients' threads, then exits)
"""

import hashlib
import random
import selectors
import socket
import threading
import time

import fastsock

FRAMING = fastsock.LengthPrefix(4)
CLIENTS = 8
TIMEOUT = 10                     # seconds: the whole run, so that it can never hang


class Connection:
    """One client's socket and decoder, and what was decoded from it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = fastsock.FrameDecoder(FRAMING, max_buffer=4 * 1024 * 1024)
        self.frames = 0
        self.digest = hashlib.sha256()
        self.reads = self.largest = 0

    def receive(self) -> bool:
        """One read; False once the client has finished sending."""
        view = self.decoder.get_buffer()              # free space of the decoder's own buffer
        self.largest = max(self.largest, len(view))   # (sized for the frame being received)
        try:
            n = self.sock.recv_into(view)             # received in place: no copy
        except BlockingIOError:
            return True
        if n == 0:
            return False
        self.reads += 1
        for frame in self.decoder.buffer_updated(n):  # every frame completed by these bytes
            self.frames += 1
            self.digest.update(frame)
        return True

    def finish(self) -> None:
        """The client half-closed: reply with what was decoded, then close."""
        try:
            self.decoder.eof()                        # IncompleteReadError if a frame was cut
            reply = b"%d frames %s" % (self.frames, self.digest.hexdigest().encode())
        except fastsock.IncompleteReadError as exc:
            reply = b"cut after %d of %d bytes" % (len(exc.partial), exc.expected)
        # A few bytes into a send buffer nothing else has used: taken at once.
        self.sock.sendall(b"".join(fastsock.FrameEncoder(FRAMING).encode(reply)))
        self.sock.close()


def serve(listener: socket.socket, connections: int) -> list:
    """Serve until `connections` clients have finished (at most TIMEOUT seconds); returns
    their Connections."""
    deadline = time.monotonic() + TIMEOUT
    open_, finished = [], []
    with selectors.DefaultSelector() as sel:
        sel.register(listener, selectors.EVENT_READ)
        try:
            while connections:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{connections} clients still unfinished after {TIMEOUT} s")
                for key, _events in sel.select(left):
                    if key.fileobj is listener:
                        sock, _ = listener.accept()
                        sock.setblocking(False)
                        conn = Connection(sock)
                        open_.append(conn)
                        sel.register(sock, selectors.EVENT_READ, conn)
                    elif not key.data.receive():
                        sel.unregister(key.fileobj)
                        open_.remove(key.data)
                        key.data.finish()
                        finished.append(key.data)
                        connections -= 1
        finally:
            for conn in open_:
                conn.sock.close()
    return finished


def client(address, n: int, results: dict) -> None:
    rng = random.Random(n)
    payloads = [rng.randbytes(rng.choice((0, 1, 100, 4000, 70000, 200000))) for _ in range(40)]
    payloads.insert(rng.randrange(40), rng.randbytes(1024 * 1024))   # one frame of 1 MiB
    with fastsock.connect(address, framing=FRAMING, timeout=TIMEOUT) as stream:
        stream.write_frames(payloads)
        stream.flush()
        stream.shutdown_write()
        reply = stream.read_frame()
    expected = b"%d frames %s" % (len(payloads), hashlib.sha256(b"".join(payloads)).hexdigest().encode())
    results[n] = (reply, expected)


def client_that_leaves_mid_frame(address, results: dict) -> None:
    with fastsock.connect(address, framing=FRAMING, timeout=TIMEOUT) as stream:
        stream.write_frame(b"a whole frame")
        stream.write((1000).to_bytes(4, "big") + b"only ten b")   # a frame of 1000 bytes, cut
        stream.flush()
        stream.shutdown_write()
        results["cut"] = (stream.read_frame(), b"cut after 14 of 1004 bytes")


def main() -> None:
    results: dict = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = listener.getsockname()
        threads = [threading.Thread(target=client, args=(address, n, results), daemon=True)
                   for n in range(CLIENTS)]
        threads.append(threading.Thread(target=client_that_leaves_mid_frame, args=(address, results),
                                        daemon=True))
        for t in threads:
            t.start()
        served = serve(listener, len(threads))
        for t in threads:
            t.join(TIMEOUT)
    assert len(results) == len(threads), sorted(results, key=str)
    for reply, expected in results.values():
        assert reply == expected, (reply, expected)
    print(f"server: {sum(c.frames for c in served)} frames in {sum(c.reads for c in served)} reads, "
          f"views of up to {max(c.largest for c in served)} bytes")
    print(results["cut"][0].decode())
    print(f"{CLIENTS} clients' frames decoded by hand, 1 cut mid-frame")


if __name__ == "__main__":
    main()
