"""The server's transport limits: what one client may take, so that it cannot starve the others.

Each is a grpcio channel argument; docs/reliability.md explains how they were chosen and tested.
"""

from __future__ import annotations

from typing import Any

# Four times the largest valid request (an UpdateTask whose 200-character title and 4000-character
# description are all 4-byte characters: about 17 KB). It is also what one call can make the server hold
# before its token is checked: grpc core buffers a request until the whole message is in, so with grpcio's
# default (4 MiB) 1000 calls that send all but a message's last byte, without a token, held 4 GB (measured:
# 200 such calls, +812 MiB). Now they hold at most 64 MB. A message declaring more is refused by grpc core
# with RESOURCE_EXHAUSTED as soon as its length prefix arrives, before any of our code runs.
MAX_RECEIVE_MESSAGE_BYTES = 64 * 1024
# What gRPC clients receive by default. A ListTasks page stops at 3 MiB (MAX_PAGE_BYTES in
# server/services/task_messages.py), so this is a backstop, not a limit callers should meet.
MAX_SEND_MESSAGE_BYTES = 4 * 1024 * 1024
# Request headers: room for the largest token we accept (8 KiB) and then some. Soft and hard limits are equal:
# between them grpcio refuses at random, which made an oversized token sometimes RESOURCE_EXHAUSTED and
# sometimes UNAUTHENTICATED; now a header block up to this size always reaches the auth interceptor.
MAX_METADATA_BYTES = 16 * 1024
# Calls to the public services (health, reflection: no token needed) in flight: at most this share of the
# server's calls in flight, and at most PUBLIC_CALLS_PER_PEER from one address. Health Watch streams and
# calls that never send their message hold their place for up to 31 minutes; without a bound, one client
# without a token held all 1000 and every signed-in user was refused (server/call_limits.py). Per address,
# so that such a client leaves room for the kubelet's health probes; 16, since each channel of a client
# that checks health (gRFC A17) holds a Watch stream.
PUBLIC_CALLS_SHARE = 0.1
PUBLIC_CALLS_PER_PEER = 16
# Calls one signed-in user (one token `sub`) may have in flight: a tenth of the server's, 100 by default.
# A browser user can read their own JWT; with it, calls that never send their message held all 1000. A page
# render makes a handful of calls at once; a hundred is far past what one user's pages need.
CALLER_CALLS_SHARE = 0.1


# Bytes of answers made but not yet read by their clients (grpcio holds each until it is delivered): at most
# UNREAD_ANSWER_BYTES_PER_USER for one signed-in user, and past UNREAD_ANSWER_BYTES over all callers only
# callers with nothing unread are served (server/answer_buffer.py). Without them, one user's 100 unread
# ListTasks pages (3 MiB each) held about 650 MB. 16 MiB is five full pages unread at once, far past what a
# client reading its answers ever has in transit.
UNREAD_ANSWER_BYTES = 256 * 1024 * 1024
UNREAD_ANSWER_BYTES_PER_USER = 16 * 1024 * 1024


# The share of the running turns (`--max-workers`) one signed-in user may hold at once: four users holding
# theirs still leave every other user's calls a turn as soon as one ends (server/running_calls.py). A page
# render's handful of calls fits in it.
CALLER_TURNS_SHARE = 0.25


def public_calls_limits(max_concurrent_rpcs: int) -> tuple[int, int]:
    """(public calls in flight in all, from one address) for a server running `max_concurrent_rpcs`."""
    limit = max(1, int(max_concurrent_rpcs * PUBLIC_CALLS_SHARE))
    return limit, min(PUBLIC_CALLS_PER_PEER, limit)


def caller_calls_limit(max_concurrent_rpcs: int) -> int:
    """Calls one signed-in user may have in flight on a server running `max_concurrent_rpcs`."""
    return max(1, int(max_concurrent_rpcs * CALLER_CALLS_SHARE))


def caller_turns(max_workers: int) -> int:
    """How many of `max_workers` running turns one signed-in user may hold at once."""
    return max(1, int(max_workers * CALLER_TURNS_SHARE))


# Concurrent calls on one HTTP/2 connection; more wait in the client until one ends.
MAX_CONCURRENT_STREAMS = 100
# A connection is closed (GOAWAY) this long after it opened, so load rebalances over replicas and a
# client hoarding stalled calls loses them; calls still running get the grace period to finish.
MAX_CONNECTION_AGE_MS = 30 * 60 * 1000
MAX_CONNECTION_AGE_GRACE_MS = 60 * 1000
# A connection with no call for this long is closed: idle clients do not pin file descriptors forever.
MAX_CONNECTION_IDLE_MS = 5 * 60 * 1000
# Keepalive enforcement: a client may ping at most every 10 s, and only while calls are open; after 2
# pings too soon the server sends GOAWAY (ENHANCE_YOUR_CALM).
MIN_CLIENT_PING_INTERVAL_MS = 10 * 1000
MAX_PING_STRIKES = 2
# The server's own keepalive pings find dead peers (a client host that vanished) within a minute.
KEEPALIVE_TIME_MS = 60 * 1000
KEEPALIVE_TIMEOUT_MS = 20 * 1000


def server_options(*, share_port: bool = False) -> list[tuple[str, Any]]:
    """The grpc.server() options that set the limits above; `share_port` only for --workers."""
    return [
        # A second server on a taken port must fail, not silently share it; only --workers shares on purpose.
        ("grpc.so_reuseport", 1 if share_port else 0),
        ("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_SEND_MESSAGE_BYTES),
        ("grpc.max_metadata_size", MAX_METADATA_BYTES),
        ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
        ("grpc.max_concurrent_streams", MAX_CONCURRENT_STREAMS),
        ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
        ("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_GRACE_MS),
        ("grpc.max_connection_idle_ms", MAX_CONNECTION_IDLE_MS),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
        ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
    ]
