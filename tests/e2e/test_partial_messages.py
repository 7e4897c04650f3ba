"""Calls without a token that send most of a large request message and then wait must not pin memory.

grpc core buffers a request until its whole message is in, and only then does our code (the token check
included) run, so the receive limit is what one such call can make the server hold.
"""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import ServerProcess, start_server, stop_server
from tests.raw_h2 import partial_messages

_CALLS = 100  # one connection's worth (MAX_CONCURRENT_STREAMS)
_GRPC_DEFAULT_RECEIVE_LIMIT = 4 * 1024 * 1024  # what grpcio allows unless told otherwise
_ALLOWED_GROWTH = 32 * 1024 * 1024


def _rss_bytes(server: ServerProcess) -> int:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/<pid>/status")


def test_unauthenticated_calls_holding_nearly_whole_messages_do_not_pin_memory(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        before = _rss_bytes(server)
        declared = _GRPC_DEFAULT_RECEIVE_LIMIT - 5  # the largest message grpcio's default would take in
        with partial_messages(server.port, "/todo.v1.TaskService/GetTask", calls=_CALLS, declared_length=declared):
            growth = _rss_bytes(server) - before
        # With grpcio's default limit the server held all of it: +400 MiB for these 100 calls, 4 GB for 1000.
        assert growth < _ALLOWED_GROWTH, f"server RSS grew {growth / 2**20:.0f} MiB"
    finally:
        assert stop_server(server) == 0
