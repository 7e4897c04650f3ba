"""AsyncTaskClient: TaskClient for asyncio BFFs, over grpc.aio, with the same requests and errors."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

import grpc
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from client.caller import ActsForCaller
from client.channel import ClientCertificate, TlsOption, open_aio_channel
from client.errors import TaskServiceError, from_rpc_error
from client.requests import ME, PriorityLike, create_request, list_request, task_name, update_request
from client.task_client import TOKEN_EXPIRED
from client.write_retries import backoffs, nothing_written

TokenProvider = Callable[[], str] | Callable[[], Awaitable[str]]


class AsyncTaskClient(ActsForCaller[TokenProvider]):
    """Like `TaskClient`, with `await`: `async with AsyncTaskClient(...) as tasks: await tasks.get_task(id)`.

    `token_provider` may be a plain or an async function; it is called again once on TOKEN_EXPIRED.
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        tls: TlsOption = False,
        client_cert: ClientCertificate | None = None,
        default_timeout: float = 10.0,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._set_caller(token, token_provider, metadata, required=False)
        self._default_timeout = default_timeout
        self._channel = open_aio_channel(target, tls=tls, client_cert=client_cert)
        self._owns_channel = True
        self._stub = pb_grpc.TaskServiceStub(self._channel)

    async def __aenter__(self) -> AsyncTaskClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_channel:
            await self._channel.close()

    async def create_task(
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
            return (await self._call(self._stub.CreateTask, request, timeout)).task
        except TaskServiceError as error:
            error.request_id = request.request_id  # to create again without a duplicate
            raise

    async def get_task(self, name: str, *, timeout: float | None = None) -> pb.Task:
        return (await self._call(self._stub.GetTask, pb.GetTaskRequest(name=task_name(name)), timeout)).task

    async def list_tasks(self, *, timeout: float | None = None, **options: Any) -> pb.ListTasksResponse:
        """One page; takes the keyword arguments of `TaskClient.list_tasks`."""
        return await self._call(self._stub.ListTasks, list_request(**options), timeout)

    async def iter_tasks(self, *, timeout: float | None = None, **options: Any) -> AsyncIterator[pb.Task]:
        """Every matching task, page after page (`async for`)."""
        page_token = ""
        while True:
            page = await self.list_tasks(timeout=timeout, page_token=page_token, **options)
            for task in page.tasks:
                yield task
            page_token = page.next_page_token
            if not page_token:
                return

    async def update_task(self, name: str, *, timeout: float | None = None, **changes: Any) -> pb.Task:
        """Changes the fields given; takes the keyword arguments of `TaskClient.update_task`."""
        request = update_request(name, **changes)
        return (await self._call_retrying_unwritten(self._stub.UpdateTask, request, timeout)).task

    async def delete_task(self, name: str, *, etag: str = "", timeout: float | None = None) -> None:
        request = pb.DeleteTaskRequest(name=task_name(name), etag=etag)
        await self._call_retrying_unwritten(self._stub.DeleteTask, request, timeout)

    async def _current_token(self, *, refresh: bool) -> str:
        if self._token_provider is not None and (refresh or self._token is None):
            token = self._token_provider()
            self._token = await token if inspect.isawaitable(token) else token
        if self._token is None:
            raise ValueError("this client acts for no user: call with_token(...) for the user of each request")
        return self._token

    async def _call_retrying_unwritten(
        self, method: Callable[..., Any], request: Any, timeout: float | None
    ) -> Any:
        """As TaskClient's: sent again only while the server says that nothing was written."""
        deadline = time.monotonic() + (self._default_timeout if timeout is None else timeout)
        waits = backoffs()
        while True:
            try:
                return await self._call(method, request, deadline - time.monotonic())
            except TaskServiceError as error:
                wait = next(waits, None)
                if not nothing_written(error) or wait is None or time.monotonic() + wait >= deadline:
                    raise
                await asyncio.sleep(wait)

    async def _call(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        timeout = self._default_timeout if timeout is None else timeout
        try:
            return await self._invoke(method, request, timeout, refresh=False)
        except TaskServiceError as error:
            if error.reason != TOKEN_EXPIRED or self._token_provider is None:
                raise
        return await self._invoke(method, request, timeout, refresh=True)

    async def _invoke(self, method: Callable[..., Any], request: Any, timeout: float, *, refresh: bool) -> Any:
        metadata = (("authorization", f"Bearer {await self._current_token(refresh=refresh)}"), *self._metadata)
        try:
            return await method(request, metadata=metadata, timeout=timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
