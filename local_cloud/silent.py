"""An endpoint that never answers: for tests that a client gives up on it, with a clear
error, within a bound (an AWS endpoint, a Jupyter URL, a course repo that hangs).

    with silent_endpoint() as url:          # http://127.0.0.1:PORT
        run_the_thing(endpoint=url)         # must fail, in time, saying why

It accepts every connection and reads what is sent (so a client's request is never
stuck in a full send buffer, which would be a different failure), but writes nothing.
A refused or reset connection fails at once; only an accepted one that stays silent
tests a client's read timeout. When the context ends the listener and every accepted
connection are closed and its thread has stopped: nothing of it outlives the test.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Iterator

# How long a select waits before the loop looks at the stop flag again: the bound on how
# long the context's end waits for the thread.
_POLL_S = 0.05


class SilentEndpoint:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._listener = socket.create_server((host, 0), backlog=64)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]  # kept: still known once closed
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="silent-endpoint", daemon=True)
        self.accepted = 0  # connections taken so far: a test can tell "never reached" apart

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> SilentEndpoint:
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stopping.is_set():
            for key, _ in self._selector.select(timeout=_POLL_S):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                else:
                    self._drain(sock)

    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except BlockingIOError:  # another wake-up took it
            return
        conn.setblocking(False)
        with self._lock:
            self._connections.append(conn)
            self.accepted += 1
        self._selector.register(conn, selectors.EVENT_READ)

    def _drain(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the client gave up and closed: forget it
            self._selector.unregister(conn)
            with self._lock:
                self._connections.remove(conn)
            conn.close()

    def stop(self, timeout: float = 5) -> None:
        self._stopping.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"the silent endpoint's thread did not stop within {timeout} s")
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._selector.close()
        self._listener.close()


@contextlib.contextmanager
def silent_endpoint(host: str = "127.0.0.1") -> Iterator[str]:
    """A listener on host that accepts and never answers; yields its URL."""
    with silent_server(host) as endpoint:
        yield endpoint.url


@contextlib.contextmanager
def silent_server(host: str = "127.0.0.1") -> Iterator[SilentEndpoint]:
    """As silent_endpoint, yielding the endpoint itself (port, connections accepted)."""
    endpoint = SilentEndpoint(host).start()
    try:
        yield endpoint
    finally:
        endpoint.stop()
