"""TaskClient: the way a Python backend calls todo.v1.TaskService, with tokens, retries and typed errors."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

import grpc
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from client.caller import ActsForCaller
from client.channel import ClientCertificate, TlsOption, open_channel
from client.connectivity import Connection, first_connection
from client.errors import TaskServiceError, from_rpc_error
from client.requests import ME, PriorityLike, create_request, list_request, task_name, update_request
from client.write_retries import backoffs, nothing_written

TOKEN_EXPIRED = "TOKEN_EXPIRED"  # noqa: S105 -- an ErrorInfo reason, not a secret


class TaskClient(ActsForCaller[Callable[[], str]]):
    """A client of one todo-tasks server, acting for the user its token names.

    Pass either `token` (a fixed JWT) or `token_provider` (called for a token, and called again once
    when the server says the token expired). `metadata` goes on every call too (say, an `x-request-id`).
    Calls raise `client.errors.TaskServiceError` subclasses. Use it as a context manager, or call `close()`.
    A BFF acting for many users keeps one TaskClient and calls `with_token` per request.
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        token_provider: Callable[[], str] | None = None,
        tls: TlsOption = False,
        client_cert: ClientCertificate | None = None,
        default_timeout: float = 10.0,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._set_caller(token, token_provider, metadata, required=False)
        self._default_timeout = default_timeout
        self._channel = open_channel(target, tls=tls, client_cert=client_cert)
        self._owns_channel = True
        self._stub = pb_grpc.TaskServiceStub(self._channel)

    def __enter__(self) -> TaskClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_channel:
            self._channel.close()

    def wait_until_connected(self, timeout: float) -> bool:
        """Whether a connection to the server is up, or comes up within `timeout` seconds. Calls need not
        wait for this; it tells "nobody there" apart quickly (a call would retry for several seconds)."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            return False
        return True

    def first_connection(self, timeout: float) -> Connection:
        """How the first attempt to connect ends, within `timeout` seconds: `Connection.READY`, `FAILED` (known
        at once: nothing listening, unresolvable, a TLS mismatch) or `SILENT` (no answer yet). Unlike
        `wait_until_connected`, it does not wait for a server that is not there to come up."""
        return first_connection(self._channel, timeout)

    def create_task(
        self,
        title: str,
        *,
        description: str = "",
        priority: PriorityLike = pb.PRIORITY_UNSPECIFIED,
        due_time: datetime | None = None,
        completed: bool = False,
        parent: str = ME,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.Task:
        """Creates a task. `request_id` defaults to a fresh UUID, so the client's retries never duplicate it."""
        request = create_request(
            title,
            description=description,
            priority=priority,
            due_time=due_time,
            completed=completed,
            parent=parent,
            request_id=request_id,
        )
        try:
            return self._call(self._stub.CreateTask, request, timeout).task
        except TaskServiceError as error:
            error.request_id = request.request_id  # to create again without a duplicate
            raise

    def get_task(self, name: str, *, timeout: float | None = None) -> pb.Task:
        """The task named `name` (`users/me/tasks/{id}`, or just the id)."""
        return self._call(self._stub.GetTask, pb.GetTaskRequest(name=task_name(name)), timeout).task

    def list_tasks(
        self,
        *,
        parent: str = ME,
        page_size: int = 0,
        page_token: str = "",
        completed: bool | None = None,
        query: str = "",
        order_by: str = "",
        timeout: float | None = None,
    ) -> pb.ListTasksResponse:
        """One page of the caller's tasks; pass `next_page_token` back as `page_token` for the next."""
        request = list_request(
            parent=parent,
            page_size=page_size,
            page_token=page_token,
            completed=completed,
            query=query,
            order_by=order_by,
        )
        return self._call(self._stub.ListTasks, request, timeout)

    def iter_tasks(
        self,
        *,
        parent: str = ME,
        page_size: int = 0,
        completed: bool | None = None,
        query: str = "",
        order_by: str = "",
        timeout: float | None = None,
    ) -> Iterator[pb.Task]:
        """Every matching task, fetching page after page as the iteration needs them."""
        page_token = ""
        while True:
            page = self.list_tasks(
                parent=parent,
                page_size=page_size,
                page_token=page_token,
                completed=completed,
                query=query,
                order_by=order_by,
                timeout=timeout,
            )
            yield from page.tasks
            page_token = page.next_page_token
            if not page_token:
                return

    def update_task(
        self,
        name: str,
        *,
        title: str | None = None,
        description: str | None = None,
        completed: bool | None = None,
        priority: PriorityLike | None = None,
        due_time: datetime | None = None,
        etag: str = "",
        clear: Iterable[str] = (),
        timeout: float | None = None,
    ) -> pb.Task:
        """Changes the fields given (and only those); `clear` resets some to empty (`"due_time"`,
        `"priority"`, `"description"`). With `etag`, fails with Aborted if the task changed."""
        request = update_request(
            name,
            title=title,
            description=description,
            completed=completed,
            priority=priority,
            due_time=due_time,
            etag=etag,
            clear=clear,
        )
        return self._call_retrying_unwritten(self._stub.UpdateTask, request, timeout).task

    def delete_task(self, name: str, *, etag: str = "", timeout: float | None = None) -> None:
        """Deletes the task; with `etag`, only if it has not changed since it was read."""
        request = pb.DeleteTaskRequest(name=task_name(name), etag=etag)
        self._call_retrying_unwritten(self._stub.DeleteTask, request, timeout)

    def _current_token(self, *, refresh: bool = False) -> str:
        if self._token_provider is not None and (refresh or self._token is None):
            self._token = self._token_provider()
        if self._token is None:
            raise ValueError("this client acts for no user: call with_token(...) for the user of each request")
        return self._token

    def _call_retrying_unwritten(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        """A write the channel does not retry, sent again (within `timeout`) only while the server says that
        nothing was written (client/write_retries.py)."""
        deadline = time.monotonic() + (self._default_timeout if timeout is None else timeout)
        waits = backoffs()
        while True:
            try:
                return self._call(method, request, deadline - time.monotonic())
            except TaskServiceError as error:
                wait = next(waits, None)
                if not nothing_written(error) or wait is None or time.monotonic() + wait >= deadline:
                    raise
                time.sleep(wait)

    def _call(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        timeout = self._default_timeout if timeout is None else timeout
        try:
            return self._invoke(method, request, timeout, refresh=False)
        except TaskServiceError as error:
            if error.reason != TOKEN_EXPIRED or self._token_provider is None:
                raise
        # The token expired between the provider's answer and the server's check: one fresh try.
        return self._invoke(method, request, timeout, refresh=True)

    def _invoke(self, method: Callable[..., Any], request: Any, timeout: float, *, refresh: bool) -> Any:
        metadata = (("authorization", f"Bearer {self._current_token(refresh=refresh)}"), *self._metadata)
        try:
            return method(request, metadata=metadata, timeout=timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
