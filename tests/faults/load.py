"""Steady write load from several client threads, and the check that every acknowledged write was kept."""

from __future__ import annotations

import collections
import threading
import time
import uuid
from dataclasses import dataclass, field

import grpc
from sqlalchemy import create_engine, text
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc


@dataclass(frozen=True)
class Call:
    """One CreateTask as the client saw it."""

    request_id: str
    title: str
    started: float
    ended: float
    code: grpc.StatusCode
    task_id: str = ""


@dataclass
class LoadResult:
    calls: list[Call] = field(default_factory=list)

    @property
    def acknowledged(self) -> list[Call]:
        return [c for c in self.calls if c.code == grpc.StatusCode.OK]

    @property
    def failed(self) -> list[Call]:
        return [c for c in self.calls if c.code != grpc.StatusCode.OK]

    def codes(self) -> collections.Counter[str]:
        return collections.Counter(c.code.name for c in self.calls)

    def codes_text(self) -> str:
        return ", ".join(f"{name} {count}" for name, count in sorted(self.codes().items()))

    def slowest_failure(self) -> float:
        return max((c.ended - c.started for c in self.failed), default=0.0)

    def recovery_seconds(self, fault_ended: float) -> float | None:
        """From the end of the fault to the first OK after it (None: never recovered)."""
        after = [c.ended for c in self.acknowledged if c.started >= fault_ended]
        return max(0.0, min(after) - fault_ended) if after else None


class WriteLoad:
    """`threads` clients, each calling CreateTask in a loop with a fresh request_id, until `stop()`."""

    def __init__(
        self,
        target: str,
        token: str,
        *,
        threads: int = 4,
        deadline: float = 5.0,
        max_calls: int = 20_000,
        channel_options: list[tuple[str, object]] | None = None,
    ) -> None:
        self._channel = grpc.insecure_channel(target, options=channel_options or [])
        self._stub = pb_grpc.TaskServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._deadline = deadline
        self._max_calls = max_calls  # a bound on the run whatever happens to the clock
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.result = LoadResult()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def __enter__(self) -> WriteLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=self._deadline + 5)
        self._channel.close()
        return self.result

    def wait_for_acks(self, count: int, timeout: float = 20) -> None:
        """Blocks until `count` writes were acknowledged; fails after `timeout` seconds."""
        end = time.monotonic() + timeout
        while len(self.result.acknowledged) < count:
            if time.monotonic() > end:
                acks = len(self.result.acknowledged)
                raise AssertionError(f"only {acks} acks in {timeout}s: {self.result.codes()}")
            time.sleep(0.02)

    def _run(self, thread_number: int) -> None:
        while not self._stopping.is_set() and len(self.result.calls) < self._max_calls:
            request_id = str(uuid.uuid4())
            title = f"load {thread_number} {request_id[:8]}"
            request = pb.CreateTaskRequest(parent="users/me", task=pb.Task(title=title), request_id=request_id)
            started = time.monotonic()
            try:
                task = self._stub.CreateTask(request, metadata=self._metadata, timeout=self._deadline).task
                task_id = task.name.rsplit("/")[-1]
                call = Call(request_id, title, started, time.monotonic(), grpc.StatusCode.OK, task_id)
            except grpc.RpcError as error:
                call = Call(request_id, title, started, time.monotonic(), error.code())
                time.sleep(0.01)  # a failing server is not hammered in a tight loop
            with self._lock:
                self.result.calls.append(call)


@dataclass(frozen=True)
class StoredWrites:
    """What the database holds for the load's user, compared with what the client saw."""

    acknowledged: int
    found: int
    lost: list[str]
    failed_but_stored: int
    mismatched: list[str]


def stored_writes(database_url: str, owner_id: str, result: LoadResult) -> StoredWrites:
    """Reads the rows straight from the database (not through the server) and compares them with `result`."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT id, title, request_id FROM tasks WHERE owner_id = :owner"), {"owner": owner_id}
            ).all()
    finally:
        engine.dispose()
    by_request = {row.request_id: row for row in rows}
    acked = result.acknowledged
    lost = [c.request_id for c in acked if getattr(by_request.get(c.request_id), "id", None) != c.task_id]
    sent = {c.request_id: c.title for c in result.calls}
    # A row is whole when it is exactly what some call sent: no truncated or foreign rows.
    mismatched = [row.id for row in rows if sent.get(row.request_id) != row.title]
    failed_but_stored = sum(1 for c in result.failed if c.request_id in by_request)
    found = sum(1 for c in acked if c.request_id in by_request)
    return StoredWrites(len(acked), found, lost, failed_but_stored, mismatched)
