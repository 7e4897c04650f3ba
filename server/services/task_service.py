"""TaskService: turns todo.v1 requests into repository calls. Never decodes a token, never runs SQL."""

from __future__ import annotations

import grpc
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

from server.db.repository import TaskRepository
from server.errors import COMMIT_OUTCOME_UNKNOWN, CommitOutcomeUnknown, Unavailable
from server.services import task_messages as messages
from server.services.page_tokens import PageTokenCodec
from server.services.resource_names import parse_parent, parse_task_name


class TaskService(pb_grpc.TaskServiceServicer):
    def __init__(self, repository: TaskRepository, page_tokens: PageTokenCodec) -> None:
        self._tasks = repository
        self._page_tokens = page_tokens

    def CreateTask(self, request: pb.CreateTaskRequest, context: grpc.ServicerContext) -> pb.CreateTaskResponse:
        parse_parent(request.parent)
        violations = messages.Violations()
        if not request.HasField("task"):
            violations.add("task", "is required")
        fields = messages.task_fields(request.task, field="task", violations=violations)
        request_id = messages.request_id(request.request_id, violations)
        violations.raise_if_any()
        try:
            record = self._tasks.create(fields=fields, request_id=request_id)
        except CommitOutcomeUnknown:
            if request_id is None:
                raise
            # A retry with this request_id returns the task if the lost commit did save it: safe to retry, and
            # the reason still says what happened, for a caller that retries by hand.
            raise Unavailable(
                "the connection to the database was lost while saving the task: it may have been saved; "
                "retry with the same request_id",
                reason=COMMIT_OUTCOME_UNKNOWN,
            ) from None
        return pb.CreateTaskResponse(task=messages.task_to_proto(record))

    def GetTask(self, request: pb.GetTaskRequest, context: grpc.ServicerContext) -> pb.GetTaskResponse:
        record = self._tasks.get(task_id=parse_task_name(request.name))
        return pb.GetTaskResponse(task=messages.task_to_proto(record))

    def ListTasks(self, request: pb.ListTasksRequest, context: grpc.ServicerContext) -> pb.ListTasksResponse:
        user_id = parse_parent(request.parent)
        violations = messages.Violations()
        limit = messages.page_size(request.page_size, violations)
        task_filter = messages.task_filter(request, violations)
        violations.raise_if_any()
        after = None
        if request.page_token:
            after = self._page_tokens.decode(request.page_token, user_id=user_id, task_filter=task_filter)
        page = self._tasks.list(task_filter=task_filter, after=after, limit=limit)
        tasks, next_cursor = messages.page_to_protos(page, task_filter.sort)
        next_token = ""
        if next_cursor is not None:
            next_token = self._page_tokens.encode(next_cursor, user_id=user_id, task_filter=task_filter)
        return pb.ListTasksResponse(
            tasks=tasks,
            next_page_token=next_token,
            total_size=page.total_size,
        )

    def UpdateTask(self, request: pb.UpdateTaskRequest, context: grpc.ServicerContext) -> pb.UpdateTaskResponse:
        task_id = parse_task_name(request.task.name, field="task.name")
        violations = messages.Violations()
        changes = messages.task_changes(request.task, request.update_mask, violations)
        violations.raise_if_any()
        record = self._tasks.update(task_id=task_id, changes=changes, etag=request.task.etag or None)
        return pb.UpdateTaskResponse(task=messages.task_to_proto(record))

    def DeleteTask(self, request: pb.DeleteTaskRequest, context: grpc.ServicerContext) -> pb.DeleteTaskResponse:
        self._tasks.delete(task_id=parse_task_name(request.name), etag=request.etag or None)
        return pb.DeleteTaskResponse()
