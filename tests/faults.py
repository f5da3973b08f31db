"""A real TCP fault between the application and MariaDB: a small threaded proxy on 127.0.0.1 that
forwards to the database server and, on command, cuts every live connection (both sockets closed, as
when a NAT gateway or a failover drops them) or refuses new ones (accepted, then closed at once)."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Self

from sqlalchemy.engine import make_url


class TcpProxy:
    def __init__(self, upstream_host: str = "127.0.0.1", upstream_port: int = 3306) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self._lock = threading.Lock()
        self._live: set[tuple[socket.socket, socket.socket]] = set()
        self._refusing = False
        self._closed = False
        #: Connections accepted and forwarded, connections refused, connections cut.
        self.forwarded = 0
        self.refused = 0
        self.cut_total = 0
        self._acceptor = threading.Thread(target=self._accept_loop, name="tcp-proxy-accept", daemon=True)
        self._acceptor.start()

    @property
    def port(self) -> int:
        return int(self._server.getsockname()[1])

    def url_for(self, database_url: str) -> str:
        """``database_url`` going through this proxy instead of straight to the server."""
        proxied = make_url(database_url).set(host="127.0.0.1", port=self.port)
        return proxied.render_as_string(hide_password=False)

    @property
    def live(self) -> int:
        with self._lock:
            return len(self._live)

    def cut(self) -> int:
        """Close every live connection on both sides; returns how many were cut."""
        with self._lock:
            pairs = list(self._live)
            self._live.clear()
        for pair in pairs:
            _close(*pair)
        self.cut_total += len(pairs)
        return len(pairs)

    def refuse(self, refusing: bool = True) -> None:
        """While refusing, every new connection is closed as soon as it is accepted."""
        self._refusing = refusing

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._server.close()
        self.cut()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self._refusing:
                self.refused += 1
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self._upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            pair = (client, upstream)
            with self._lock:
                self._live.add(pair)
            self.forwarded += 1
            for source, target in (pair, pair[::-1]):
                threading.Thread(target=self._pump, args=(source, target, pair), daemon=True).start()

    def _pump(
        self, source: socket.socket, target: socket.socket, pair: tuple[socket.socket, socket.socket]
    ) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._live.discard(pair)
        _close(*pair)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
