"""A BFF acts for many users over one TaskClient: `with_token` per request, with the request's metadata."""

from __future__ import annotations

from pathlib import Path

import pytest

from client import NotFound, TaskClient
from tests.e2e.conftest import start_server, stop_server
from tests.support import mint_token

pytestmark = pytest.mark.e2e


def test_one_client_acts_for_each_user_it_is_given_and_for_them_only(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    secret = server.secret.encode()
    try:
        with TaskClient(server.address) as shared:
            alice = shared.with_token(mint_token(secret, "alice"), metadata=[("x-request-id", "bff-alice-1")])
            bob = shared.with_token(mint_token(secret, "bob"))
            alices = alice.create_task("alice's")
            bobs = bob.create_task("bob's")
            assert [task.title for task in alice.iter_tasks()] == ["alice's"]
            assert [task.title for task in bob.iter_tasks()] == ["bob's"]
            with pytest.raises(NotFound):  # bob's id under alice's own name: not hers, so not found
                alice.get_task(bobs.name.rsplit("/", 1)[-1])
            alice.close()  # a per-request client: the shared channel stays open
            assert bob.get_task(bobs.name).title == "bob's"
            with pytest.raises(ValueError, match="with_token"):
                shared.list_tasks()
        with pytest.raises(ValueError, match="closed channel"):  # the shared client closed it for everyone
            bob.get_task(bobs.name)
    finally:
        stop_server(server)
    created = [line for line in server.log().splitlines() if "CreateTask code=OK" in line]
    assert any(" user=alice " in line and line.endswith(" request_id=bff-alice-1") for line in created), created
    assert alices.name.startswith("users/alice/tasks/")


def test_the_token_cannot_be_smuggled_in_as_metadata() -> None:
    with pytest.raises(ValueError, match="token="):
        TaskClient("127.0.0.1:1", metadata=[("Authorization", "Bearer x")])
