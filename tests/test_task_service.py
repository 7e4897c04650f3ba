"""Every TaskService RPC: what it returns when asked well, and the status it gives when asked badly."""

from __future__ import annotations

import base64
import threading
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2
from sqlalchemy import text
from todo.v1 import task_service_pb2 as pb

from server.app import TodoServer
from server.services.task_messages import MAX_PAGE_BYTES
from server.tasks import DESCRIPTION_MAX_LENGTH
from tests.support import User, failure_of


def stamp(when: datetime) -> timestamp_pb2.Timestamp:
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(when)
    return result


# --- CreateTask ---------------------------------------------------------------------------------------


def test_create_returns_the_stored_task(alice: User) -> None:
    due = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    task = alice.create_task(
        "  Buy milk  ", description="2 litres", priority=pb.PRIORITY_HIGH, due_time=stamp(due)
    )
    assert task.name.startswith(f"users/{alice.user_id}/tasks/")
    assert len(task.name.rsplit("/", 1)[1]) == 32
    assert (task.title, task.description, task.priority) == ("Buy milk", "2 litres", pb.PRIORITY_HIGH)
    assert task.due_time.ToDatetime(tzinfo=UTC) == due
    assert task.create_time == task.update_time
    assert not task.completed
    assert not task.HasField("complete_time")
    assert task.etag
    assert alice.get_task(task.name) == task


def test_get_answers_exactly_what_the_last_write_returned(alice: User) -> None:
    """GetTask reads without the ORM (Database.fetch_owned): every field must convert as the write path's."""
    due = datetime(2031, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
    created = alice.create_task("all fields", description="d", priority=pb.PRIORITY_LOW, due_time=stamp(due))
    assert alice.get_task(created.name) == created
    completed = alice.update_task(pb.Task(name=created.name, completed=True), ["completed"])
    assert completed.HasField("complete_time")
    assert completed.etag != created.etag
    assert alice.get_task(created.name) == completed


def test_create_under_explicit_own_parent(alice: User) -> None:
    task = alice.create_task("mine", parent=f"users/{alice.user_id}")
    assert task.name.startswith(f"users/{alice.user_id}/tasks/")


def test_create_completed_sets_complete_time(alice: User) -> None:
    task = alice.create_task("done already", completed=True)
    assert task.completed
    assert task.complete_time == task.create_time


def test_task_ids_are_unique_and_unguessable(alice: User) -> None:
    ids = {alice.create_task(f"t{i}").name.rsplit("/", 1)[1] for i in range(20)}
    assert len(ids) == 20
    assert all(int(task_id, 16) for task_id in ids)


def test_output_only_fields_are_ignored_on_create(alice: User) -> None:
    forged_time = stamp(datetime(2001, 1, 1, tzinfo=UTC))
    task = alice.create_task(
        "x", name="users/someone/tasks/0123", etag="forged", create_time=forged_time, update_time=forged_time
    )
    assert task.name.startswith(f"users/{alice.user_id}/tasks/")
    assert task.etag != "forged"
    assert task.create_time != forged_time


@pytest.mark.parametrize(
    ("task", "field", "needle"),
    [
        pytest.param(pb.Task(title=""), "task.title", "required", id="empty-title"),
        pytest.param(pb.Task(title="   \t "), "task.title", "required", id="blank-title"),
        pytest.param(pb.Task(title="x" * 201), "task.title", "201 characters", id="long-title"),
        pytest.param(pb.Task(title="a\nb"), "task.title", "one line", id="title-newline"),
        pytest.param(pb.Task(title="a\x00b"), "task.title", "control", id="title-nul"),
        pytest.param(pb.Task(title="ok", description="d" * 4001), "task.description", "4001", id="long-desc"),
        pytest.param(pb.Task(title="ok", description="a\x00b"), "task.description", "control", id="desc-nul"),
        pytest.param(pb.Task(title="ok", priority=7), "task.priority", "not a Priority", id="bad-priority"),
        pytest.param(
            pb.Task(title="ok", due_time=timestamp_pb2.Timestamp(seconds=10**12)),
            "task.due_time",
            "timestamp",
            id="due-out-of-range",
        ),
    ],
)
def test_create_refuses_invalid_fields(alice: User, task: pb.Task, field: str, needle: str) -> None:
    request = pb.CreateTaskRequest(parent="users/me", task=task)
    failure = failure_of(lambda: alice.stub.CreateTask(request, metadata=alice.metadata, timeout=10))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in failure.violations[field]
    assert alice.list_tasks().total_size == 0  # nothing half-written


def test_title_of_200_characters_after_trimming_is_accepted(alice: User) -> None:
    assert alice.create_task("  " + "é" * 200 + "  ").title == "é" * 200


def test_create_without_task_lists_every_problem(alice: User) -> None:
    request = pb.CreateTaskRequest(parent="users/me", request_id="not-a-uuid")
    failure = failure_of(lambda: alice.stub.CreateTask(request, metadata=alice.metadata, timeout=10))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(failure.violations) == {"task", "task.title", "request_id"}


@pytest.mark.parametrize("parent", ["", "users", "users/", "users/me/tasks", "projects/x", "users/me/"])
def test_create_refuses_malformed_parent(alice: User, parent: str) -> None:
    failure = failure_of(lambda: alice.create_task("x", parent=parent))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "parent" in failure.violations


def test_create_with_same_request_id_returns_the_first_task(alice: User) -> None:
    request_id = str(uuid.uuid4())
    first = alice.create_task("once", request_id=request_id)
    again = alice.create_task("once", request_id=request_id)
    assert again == first
    assert alice.list_tasks().total_size == 1


def test_a_request_id_reused_for_another_task_is_refused_and_keeps_the_first(alice: User) -> None:
    """AIP-155 promises that a request_id names one request: a second, different one sent with it is a client bug
    (a reused UUID), and answering with the first task would tell it that its task was saved when it was not."""
    request_id = str(uuid.uuid4())
    first = alice.create_task("buy milk", request_id=request_id)
    failure = failure_of(lambda: alice.create_task("pay rent", request_id=request_id))
    assert (failure.code, failure.reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    assert request_id in failure.message
    assert [task.name for task in alice.all_tasks()] == [first.name]
    assert alice.get_task(first.name) == first


@pytest.mark.parametrize(
    "other",
    [
        pytest.param({"description": "with oat milk"}, id="description"),
        pytest.param({"completed": True}, id="completed"),
        pytest.param({"priority": pb.PRIORITY_HIGH}, id="priority"),
        pytest.param({"due_time": stamp(datetime(2030, 1, 1, tzinfo=UTC))}, id="due_time"),
    ],
)
def test_a_request_id_reused_with_any_field_changed_is_refused(alice: User, other: dict) -> None:
    request_id = str(uuid.uuid4())
    alice.create_task("buy milk", request_id=request_id)
    failure = failure_of(lambda: alice.create_task("buy milk", request_id=request_id, **other))
    assert (failure.code, failure.reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    assert alice.list_tasks().total_size == 1


def test_a_retry_written_differently_but_meaning_the_same_task_returns_it(alice: User) -> None:
    """What is compared is the task the request asks for, not its bytes: the parent's alias, the white space
    trimmed from the title, nanoseconds below the microsecond stored and output-only fields change nothing."""
    request_id = str(uuid.uuid4())
    due = timestamp_pb2.Timestamp(seconds=1_900_000_000, nanos=123_456_000)
    first = alice.create_task("buy milk", request_id=request_id, due_time=due)
    retried_due = timestamp_pb2.Timestamp(seconds=1_900_000_000, nanos=123_456_789)
    again = alice.create_task(
        "  buy milk ",
        parent=f"users/{alice.user_id}",
        request_id=request_id.upper(),
        due_time=retried_due,
        etag="anything",
        name="users/me/tasks/whatever",
    )
    assert again == first


def test_a_retry_after_the_task_changed_returns_it_as_it_is_now(alice: User) -> None:
    """AIP-155's stale success: the retry is compared with the request that made the task, not with the task."""
    request_id = str(uuid.uuid4())
    first = alice.create_task("buy milk", request_id=request_id)
    changed = alice.update_task(pb.Task(name=first.name, title="buy oat milk", completed=True), ["*"])
    assert alice.create_task("buy milk", request_id=request_id) == changed
    failure = failure_of(lambda: alice.create_task("buy oat milk", request_id=request_id, completed=True))
    assert failure.code == grpc.StatusCode.ALREADY_EXISTS


def test_concurrent_creates_with_one_request_id_make_one_task_and_refuse_the_other_bodies(alice: User) -> None:
    request_id = str(uuid.uuid4())
    titles = ["first", "second"] * 6
    outcomes: dict[int, object] = {}

    def create(index: int) -> None:
        try:
            outcomes[index] = alice.create_task(titles[index], request_id=request_id)
        except grpc.RpcError as error:
            outcomes[index] = error.code()

    threads = [threading.Thread(target=create, args=(index,)) for index in range(len(titles))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [task] = alice.all_tasks()
    for index, outcome in outcomes.items():
        expected = task if titles[index] == task.title else grpc.StatusCode.ALREADY_EXISTS
        assert outcome == expected, (titles[index], outcome)


def test_a_task_made_before_requests_were_remembered_is_returned_to_any_retry(
    todo_server: TodoServer, alice: User
) -> None:
    """Tasks created before migration 0002 (or by a replica still on 0001) have no fingerprint: their retries
    are answered as before the check, not refused."""
    request_id = str(uuid.uuid4())
    first = alice.create_task("buy milk", request_id=request_id)
    with todo_server.database.engine.begin() as connection:
        forgotten = connection.execute(
            text("UPDATE tasks SET request_fingerprint = NULL WHERE request_id = :request_id"),
            {"request_id": request_id},
        )
        assert forgotten.rowcount == 1
    assert alice.create_task("pay rent", request_id=request_id) == first


def test_request_ids_are_per_user(alice: User, bob: User) -> None:
    request_id = str(uuid.uuid4())
    mine, theirs = alice.create_task("a", request_id=request_id), bob.create_task("b", request_id=request_id)
    assert mine.name != theirs.name
    assert bob.get_task(theirs.name).title == "b"


# --- GetTask ------------------------------------------------------------------------------------------


def test_get_by_me_alias(alice: User) -> None:
    task = alice.create_task("x")
    task_id = task.name.rsplit("/", 1)[1]
    assert alice.get_task(f"users/me/tasks/{task_id}") == task


def test_get_missing_own_task_is_not_found(alice: User) -> None:
    failure = failure_of(lambda: alice.get_task(f"users/me/tasks/{'0' * 32}"))
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "TASK_NOT_FOUND")


@pytest.mark.parametrize(
    "name", ["", "tasks/1", "users/me/tasks/", "users/me/tasks/UPPER", "users/me/tasks/a/b", "users/me/t/x"]
)
def test_get_malformed_name_is_invalid(alice: User, name: str) -> None:
    failure = failure_of(lambda: alice.get_task(name))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "name" in failure.violations


# --- ListTasks ----------------------------------------------------------------------------------------


def test_list_defaults_to_newest_first(alice: User) -> None:
    names = [alice.create_task(f"t{i}").name for i in range(3)]
    response = alice.list_tasks()
    assert [t.name for t in response.tasks] == names[::-1]
    assert response.total_size == 3
    assert response.next_page_token == ""


def test_list_pages_through_everything_once(alice: User) -> None:
    names = {alice.create_task(f"t{i}").name for i in range(23)}
    first = alice.list_tasks(page_size=10)
    assert len(first.tasks) == 10
    assert first.total_size == 23
    assert first.next_page_token
    assert {t.name for t in alice.all_tasks(page_size=10)} == names
    assert len(alice.all_tasks(page_size=10)) == 23


def test_page_size_over_1000_is_coerced(alice: User) -> None:
    for i in range(3):
        alice.create_task(f"t{i}")
    assert len(alice.list_tasks(page_size=5000).tasks) == 3


def test_a_page_of_long_tasks_ends_before_a_client_could_not_read_it(alice: User) -> None:
    # 16 KB each (4-byte characters): 260 of them are over the 4 MiB a gRPC client receives by default.
    long_description = "\U0001f600" * DESCRIPTION_MAX_LENGTH
    names = {alice.create_task(f"t{i}", description=long_description).name for i in range(260)}
    first = alice.list_tasks(page_size=1000)
    assert first.next_page_token, "the page ended early, so a token must say more follow"
    assert 0 < first.ByteSize() <= MAX_PAGE_BYTES
    walked = alice.all_tasks(page_size=1000)
    assert sorted(task.name for task in walked) == sorted(names)
    assert all(task.description == long_description for task in walked)


def test_negative_page_size_is_invalid(alice: User) -> None:
    failure = failure_of(lambda: alice.list_tasks(page_size=-1))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_size" in failure.violations


def test_list_filters_by_completed(alice: User) -> None:
    done = alice.create_task("done", completed=True)
    open_task = alice.create_task("open")
    assert [t.name for t in alice.list_tasks(completed=True).tasks] == [done.name]
    assert [t.name for t in alice.list_tasks(completed=False).tasks] == [open_task.name]
    assert alice.list_tasks().total_size == 2


def test_list_query_matches_title_or_description_ignoring_case(alice: User) -> None:
    milk = alice.create_task("Buy MILK")
    notes = alice.create_task("groceries", description="also milk and eggs")
    alice.create_task("walk the dog")
    matches = alice.list_tasks(query="milk")
    assert {t.name for t in matches.tasks} == {milk.name, notes.name}
    assert matches.total_size == 2


@pytest.mark.parametrize("query", ["ärger", "ÄRGER", "Ärger"])
def test_list_query_ignores_case_beyond_ascii(alice: User, query: str) -> None:
    # SQLite's own lower() and LIKE fold only A-Z: "ärger" found "ärger..." but not "Ärger...".
    upper = alice.create_task("Ärger mit dem Vermieter")
    lower = alice.create_task("ärger notieren")
    alice.create_task("Arger, not a match")
    assert {t.name for t in alice.list_tasks(query=query).tasks} == {upper.name, lower.name}


def test_list_query_treats_like_wildcards_literally(alice: User) -> None:
    alice.create_task("100% done")
    alice.create_task("1000 things")
    alice.create_task("snake_case")
    alice.create_task("snakeXcase")
    assert [t.title for t in alice.list_tasks(query="0%").tasks] == ["100% done"]
    assert [t.title for t in alice.list_tasks(query="e_c").tasks] == ["snake_case"]


@pytest.mark.parametrize("direction", ["asc", "desc"])
@pytest.mark.parametrize("field", ["title", "priority", "due_time", "create_time", "update_time"])
def test_list_order_by_every_field_pages_in_order(alice: User, field: str, direction: str) -> None:
    base = datetime(2030, 1, 1, tzinfo=UTC)
    for i in range(7):
        fields = {"priority": i % 4}
        if i % 3:  # some tasks have no due time: they come last ascending and first descending
            fields["due_time"] = stamp(base + timedelta(days=i % 2))
        alice.create_task(f"task {i % 3}", **fields)
    order = f"{field} {direction}"
    listed = alice.all_tasks(order_by=order, page_size=2)
    assert len({t.name for t in listed}) == 7

    descending = direction == "desc"

    def sort_value(task: pb.Task):  # type: ignore[no-untyped-def]
        value = getattr(task, field)
        return value.ToDatetime() if isinstance(value, timestamp_pb2.Timestamp) else value

    task_id = lambda task: task.name.rsplit("/", 1)[1]  # noqa: E731
    if field == "due_time":  # no due time: last ascending, first descending; ties by id
        with_due = sorted(
            (t for t in listed if t.HasField("due_time")),
            key=lambda t: (sort_value(t), task_id(t)),
            reverse=descending,
        )
        without = sorted((t for t in listed if not t.HasField("due_time")), key=task_id, reverse=descending)
        expected = without + with_due if descending else with_due + without
    else:
        expected = sorted(listed, key=lambda t: (sort_value(t), task_id(t)), reverse=descending)
    assert [t.name for t in listed] == [t.name for t in expected]


@pytest.mark.parametrize("order_by", ["name", "title sideways", "title asc, priority", "TITLE", "title; drop"])
def test_unsupported_order_by_is_invalid(alice: User, order_by: str) -> None:
    failure = failure_of(lambda: alice.list_tasks(order_by=order_by))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "order_by" in failure.violations


def test_edited_page_token_is_invalid(alice: User) -> None:
    for i in range(3):
        alice.create_task(f"t{i}")
    token = alice.list_tasks(page_size=1).next_page_token
    edited = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    for bad in (edited, "garbage!", "A" * 2000):
        failure = failure_of(lambda bad=bad: alice.list_tasks(page_size=1, page_token=bad))
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in failure.violations


@pytest.mark.parametrize("change", [{"completed": False}, {"query": "t"}, {"order_by": "title"}])
def test_page_token_is_bound_to_its_query(alice: User, change: dict) -> None:
    for i in range(3):
        alice.create_task(f"t{i}")
    token = alice.list_tasks(page_size=1).next_page_token
    failure = failure_of(lambda: alice.list_tasks(page_size=1, page_token=token, **change))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "different query" in failure.violations["page_token"]


@pytest.mark.parametrize(
    "character",
    [
        pytest.param("\U0001f600", id="emoji"),  # 4 bytes in UTF-8
        pytest.param("\u8cb7", id="cjk"),  # 3 bytes
        pytest.param("\u00e9", id="accented"),  # 2 bytes
        pytest.param('"', id="quote"),  # escaped in JSON
    ],
)
def test_pages_ordered_by_title_walk_past_the_longest_titles(alice: User, character: str) -> None:
    # A page ending on such a title once made a token longer than the server would read back.
    titles = [character * 200, character * 199 + "a", character * 199 + "b"]
    for title in titles:
        alice.create_task(title)
    walked = alice.all_tasks(page_size=1, order_by="title")
    assert [task.title for task in walked] == sorted(titles)


def test_a_page_token_shows_neither_the_title_it_ends_on_nor_the_caller(alice: User) -> None:
    # Page tokens travel in URLs (history, proxy logs, referrers); a title there is content leaked.
    for title in ("Call oncologist re: biopsy", "Zz last"):
        alice.create_task(title)
    token = alice.list_tasks(page_size=1, order_by="title").next_page_token
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for secret in ("oncologist", "biopsy", alice.user_id):
        assert secret.encode() not in raw
        assert secret not in token


def test_page_size_may_change_between_pages(alice: User) -> None:
    for i in range(5):
        alice.create_task(f"t{i}")
    token = alice.list_tasks(page_size=1).next_page_token
    assert len(alice.list_tasks(page_size=10, page_token=token).tasks) == 4


# --- UpdateTask ---------------------------------------------------------------------------------------


def test_update_changes_only_masked_fields(alice: User) -> None:
    task = alice.create_task("old", description="keep me")
    changed = pb.Task(name=task.name, title="new", description="ignored")
    updated = alice.update_task(changed, ["title"])
    assert (updated.title, updated.description) == ("new", "keep me")
    assert updated.etag != task.etag
    assert updated.update_time.ToDatetime() > task.update_time.ToDatetime()
    assert updated.create_time == task.create_time


def test_update_star_replaces_all_writable_fields(alice: User) -> None:
    task = alice.create_task("old", description="gone", priority=pb.PRIORITY_HIGH)
    updated = alice.update_task(pb.Task(name=task.name, title="new"), ["*"])
    assert (updated.title, updated.description, updated.priority) == ("new", "", pb.PRIORITY_UNSPECIFIED)


def test_update_without_mask_changes_the_fields_that_are_set(alice: User) -> None:
    task = alice.create_task("old", description="kept")
    updated = alice.update_task(pb.Task(name=task.name, priority=pb.PRIORITY_LOW))
    assert (updated.title, updated.description, updated.priority) == ("old", "kept", pb.PRIORITY_LOW)


def test_completing_and_reopening_sets_and_clears_complete_time(alice: User) -> None:
    task = alice.create_task("x")
    done = alice.update_task(pb.Task(name=task.name, completed=True), ["completed"])
    assert done.completed
    assert done.HasField("complete_time")
    reopened = alice.update_task(pb.Task(name=task.name, completed=False), ["completed"])
    assert not reopened.completed
    assert not reopened.HasField("complete_time")


def test_update_can_clear_the_due_time(alice: User) -> None:
    task = alice.create_task("x", due_time=stamp(datetime(2030, 1, 1, tzinfo=UTC)))
    assert not alice.update_task(pb.Task(name=task.name), ["due_time"]).HasField("due_time")


def test_update_ignores_output_only_paths_named_beside_writable_ones(alice: User) -> None:
    """AIP-161: an output-only field named in the mask is ignored, so that a client can send back the mask it
    read with (`title,update_time`); its value is the server's, whatever the request says."""
    task = alice.create_task("old")
    sent = pb.Task(name=task.name, title="new", update_time=stamp(datetime(2001, 1, 1, tzinfo=UTC)))
    updated = alice.update_task(sent, ["title", "update_time", "create_time", "complete_time", "name", "etag"])
    assert updated.title == "new"
    assert updated.update_time.ToDatetime() > task.update_time.ToDatetime()
    assert (updated.create_time, updated.name) == (task.create_time, task.name)
    assert alice.get_task(task.name) == updated


@pytest.mark.parametrize(
    "paths",
    [["title", "title"], ["title", "etag", "title", "etag"], ["*", "*"]],
    ids=["title-twice", "etag-twice-beside-title", "star-twice"],
)
def test_update_takes_a_path_named_twice_as_named_once(alice: User, paths: list[str]) -> None:
    """A FieldMask is a set of paths (field_mask.proto; its canonical form drops repeats), and AIP-161 refuses
    only paths that name no field: `title,title` changes the title, as `title` does."""
    task = alice.create_task("old")
    updated = alice.update_task(pb.Task(name=task.name, title="new"), paths)
    assert updated.title == "new"
    assert alice.get_task(task.name) == updated


def test_update_refuses_star_beside_named_paths_and_says_why(alice: User) -> None:
    task = alice.create_task("old", description="kept?")
    failure = failure_of(lambda: alice.update_task(pb.Task(name=task.name, title="new"), ["*", "title"]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.violations == {"update_mask": "'*' names every field: send it alone, or name the fields"}
    assert alice.get_task(task.name) == task


@pytest.mark.parametrize(
    ("paths", "task_fields", "field"),
    [
        pytest.param(["name"], {}, "update_mask", id="output-only-path"),
        pytest.param(["etag"], {}, "update_mask", id="etag-path"),
        pytest.param(["titel"], {}, "update_mask", id="typo"),
        pytest.param(["title"], {"title": ""}, "task.title", id="empty-title"),
        pytest.param([], {}, "update_mask", id="nothing-to-change"),
    ],
)
def test_update_refuses_bad_masks_and_values(alice: User, paths: list, task_fields: dict, field: str) -> None:
    task = alice.create_task("before")
    failure = failure_of(lambda: alice.update_task(pb.Task(name=task.name, **task_fields), paths))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in failure.violations
    assert alice.get_task(task.name) == task


def test_update_with_current_etag_succeeds_and_stale_etag_is_aborted(alice: User) -> None:
    task = alice.create_task("v1")
    v2 = alice.update_task(pb.Task(name=task.name, title="v2", etag=task.etag), ["title"])
    failure = failure_of(lambda: alice.update_task(pb.Task(name=task.name, title="v3", etag=task.etag), ["title"]))
    assert (failure.code, failure.reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    assert alice.get_task(task.name) == v2


def test_update_missing_task_is_not_found(alice: User) -> None:
    failure = failure_of(
        lambda: alice.update_task(pb.Task(name=f"users/me/tasks/{'a' * 32}", title="x"), ["title"])
    )
    assert failure.code == grpc.StatusCode.NOT_FOUND


# --- DeleteTask ---------------------------------------------------------------------------------------


def test_delete_removes_the_task(alice: User) -> None:
    task = alice.create_task("x")
    alice.delete_task(task.name)
    assert failure_of(lambda: alice.get_task(task.name)).code == grpc.StatusCode.NOT_FOUND
    assert failure_of(lambda: alice.delete_task(task.name)).code == grpc.StatusCode.NOT_FOUND


def test_delete_with_stale_etag_is_aborted_and_keeps_the_task(alice: User) -> None:
    task = alice.create_task("x")
    current = alice.update_task(pb.Task(name=task.name, title="y"), ["title"])
    failure = failure_of(lambda: alice.delete_task(task.name, etag=task.etag))
    assert failure.code == grpc.StatusCode.ABORTED
    assert alice.get_task(task.name) == current
    alice.delete_task(task.name, etag=current.etag)
    assert alice.list_tasks().total_size == 0
