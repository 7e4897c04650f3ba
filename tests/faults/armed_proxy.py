"""A TCP proxy on 127.0.0.1 that relays to one upstream and, once armed, loses one reply: the base of the
proxies that cut a connection right after the far side did its work (lost_call_reply, lost_commit_reply)."""

from __future__ import annotations

import abc
import socket
import threading


class ArmedProxy(abc.ABC):
    """Listens on 127.0.0.1:`port` and relays each connection to `upstream`; `arm()` asks for one reply to be
    lost, and the subclass sets `reply_lost` when it has cut that connection."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._armed = threading.Event()
        self.reply_lost = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self) -> None:
        self.reply_lost.clear()
        self._armed.set()

    def close(self) -> None:
        self._listener.close()

    def _disarm(self) -> bool:
        """Whether the proxy was armed; it is not any more."""
        if not self._armed.is_set():
            return False
        self._armed.clear()
        return True

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self._upstream)
            except OSError:
                client.close()  # the upstream is gone: so is this connection
                continue
            self._relay(client, upstream)

    @abc.abstractmethod
    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        """Starts relaying between `client` and `upstream` (on threads of its own)."""
