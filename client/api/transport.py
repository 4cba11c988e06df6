"""Abortable HTTP connections: every socket the pool opens is remembered, so ``abort`` (a
failed or interrupted run) can shut them down; a thread blocked reading an answer then wakes at
once with an error instead of holding the process for up to the read timeout."""

from __future__ import annotations

import contextlib
import socket
import threading
import weakref
from typing import Any

import httpcore
import httpx


class AbortableBackend(httpcore.SyncBackend):
    """httpcore's socket backend, remembering the sockets it opens so ``abort`` can shut them
    down (waking any thread blocked on one) and refusing new connections afterwards."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._aborted = False

    def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        """Open a TCP connection like httpcore, and remember its socket."""
        if self._aborted:
            raise httpcore.ConnectError("the run was stopped")
        stream = super().connect_tcp(*args, **kwargs)
        sock = stream.get_extra_info("socket")
        with self._lock:
            aborted = self._aborted
            if sock is not None and not aborted:
                self._sockets.add(sock)
        if aborted:
            stream.close()
            raise httpcore.ConnectError("the run was stopped")
        return stream

    def abort(self) -> None:
        """Shut down every open socket: blocked reads and writes fail at once."""
        with self._lock:
            self._aborted = True
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def abortable_transport(limits: httpx.Limits, backend: AbortableBackend) -> httpx.HTTPTransport:
    """httpx's own transport over a connection pool that uses ``backend`` for its sockets."""
    transport = httpx.HTTPTransport(limits=limits)
    # httpx does not take a network backend; its pool (a plain httpcore.ConnectionPool when no
    # proxy is set) is rebuilt with the same limits and ours.
    transport._pool = httpcore.ConnectionPool(
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=backend,
    )
    return transport
