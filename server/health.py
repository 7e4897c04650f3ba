"""The health service: grpc_health's servicer, with Watch calls that leave nothing behind once they end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from grpc_health.v1 import health

SendResponse = Callable[[Any], None]


class HealthServicer(health.HealthServicer):
    """grpc_health's HealthServicer, except that an ended Watch no longer holds the service name it watched.

    grpc_health keeps the open watches of each service name in a set, and never drops a set once it is empty:
    every Watch of a new name kept that name, up to a whole 64 KiB request, for the server's life. Health
    needs no token, so anyone could grow the server without bound (8 client threads: +580 MB in 20 s).
    """

    def _on_close_callback(self, send_response_callback: SendResponse, service: str) -> Callable[[], None]:
        def forget() -> None:
            with self._lock:
                watches = self._send_response_callbacks.get(service)
                if watches is not None:
                    watches.discard(send_response_callback)
                    if not watches:
                        del self._send_response_callbacks[service]
            send_response_callback(None)  # grpc_health's way to end a watch

        return forget

    def watched_services(self) -> frozenset[str]:
        """The service names that open Watch calls are watching."""
        with self._lock:
            return frozenset(self._send_response_callbacks)

    def end_watches(self) -> None:
        """Ends every open Watch (call enter_graceful_shutdown first, which sends them NOT_SERVING), so that a
        drain lasts as long as the in-flight calls, not the whole grace period: grpcio would otherwise wait out
        the grace for these never-ending streams."""
        with self._lock:
            watches = [watch for per_service in self._send_response_callbacks.values() for watch in per_service]
        for send_response in watches:
            send_response(None)
