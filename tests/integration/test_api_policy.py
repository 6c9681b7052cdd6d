"""What a node refuses at create time, with a 400 naming the field and the rule and
nothing stored: privileged work unless ``[cell] allow_privileged`` is on, and Tasks
in the domain of TES's own Tasks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from diego.api.policy import PRIVILEGED_REFUSED
from diego.api.tasks import TES_DOMAIN_RESERVED
from tests.integration.test_api import TASK, Node, start_node

LRP = {
    "process_guid": "web",
    "domain": "apps",
    "stack": "linux",
    "action": {"run": {"path": "/bin/sleep", "args": ["1000"]}},
}
REFUSED = [{"field": "privileged", "rule": PRIVILEGED_REFUSED}]


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    """A node with default settings: no privileged containers."""
    async for n in start_node(tmp_path):
        yield n


async def test_a_privileged_task_is_refused_and_not_stored(node: Node) -> None:
    status, body = await node.call("POST", "/v1/tasks", json={**TASK, "privileged": True})
    assert (status, body["name"], body["errors"]) == (400, "InvalidTask", REFUSED)
    assert body["message"] == f"privileged: {PRIVILEGED_REFUSED}"
    assert "[cell] allow_privileged = false" in body["message"]
    assert await node.call("GET", "/v1/tasks") == (200, [])
    assert (await node.call("GET", "/v1/tasks/t1"))[0] == 404


async def test_a_privileged_lrp_is_refused_and_not_stored(node: Node) -> None:
    status, body = await node.call("POST", "/v1/desired_lrps", json={**LRP, "privileged": True})
    assert (status, body["name"], body["errors"]) == (400, "InvalidDesiredLRP", REFUSED)
    assert await node.call("GET", "/v1/desired_lrps") == (200, [])
    assert await node.call("GET", "/v1/actual_lrps") == (200, [])


async def test_unprivileged_work_is_accepted(node: Node) -> None:
    status, body = await node.call("POST", "/v1/tasks", json={**TASK, "privileged": False})
    assert (status, body["privileged"]) == (201, False)
    assert (await node.call("POST", "/v1/desired_lrps", json=LRP))[0] == 201


async def test_privileged_work_is_accepted_where_the_cells_allow_it(tmp_path: Path) -> None:
    async for node in start_node(tmp_path, **{"cell.allow_privileged": True}):
        status, body = await node.call("POST", "/v1/tasks", json={**TASK, "privileged": True})
        assert (status, body["privileged"]) == (201, True)
        status, body = await node.call("POST", "/v1/desired_lrps", json={**LRP, "privileged": True})
        assert (status, body["privileged"]) == (201, True)
        assert [t["task_guid"] for t in (await node.call("GET", "/v1/tasks"))[1]] == ["t1"]


async def test_max_pids_over_the_cells_is_refused_naming_the_setting(node: Node) -> None:
    """The cell's max_pids (1024 by default) is the most work may ask for: a Task or
    LRP over it is a 400 naming the field and the setting, and nothing is stored."""
    for path, body in (("/v1/tasks", TASK), ("/v1/desired_lrps", LRP)):
        status, answer = await node.call("POST", path, json={**body, "max_pids": 1025})
        assert status == 400, answer
        [problem] = answer["errors"]
        assert problem == {"field": "max_pids", "rule": "must be at most 1024 ([cell] max_pids)"}
    assert await node.call("GET", "/v1/tasks") == (200, [])
    assert await node.call("GET", "/v1/desired_lrps") == (200, [])
    status, body = await node.call("POST", "/v1/tasks", json={**TASK, "max_pids": 1024})
    assert (status, body["max_pids"]) == (201, 1024)


async def test_max_pids_is_stored_and_range_checked(node: Node) -> None:
    """max_pids comes back as given; a negative one is a 400 naming it, not stored."""
    status, body = await node.call("POST", "/v1/tasks", json={**TASK, "max_pids": 20})
    assert (status, body["max_pids"]) == (201, 20)
    assert (await node.call("GET", "/v1/tasks/t1"))[1]["max_pids"] == 20
    status, body = await node.call("POST", "/v1/desired_lrps", json={**LRP, "max_pids": -1})
    assert (status, body["errors"][0]["field"]) == (400, "max_pids")
    assert await node.call("GET", "/v1/desired_lrps") == (200, [])


async def test_a_task_in_the_tes_domain_is_refused_and_not_stored(node: Node) -> None:
    # A cell runs such a Task as a TES job, and the TES service follows it as a TES task.
    status, body = await node.call("POST", "/v1/tasks", json={**TASK, "domain": "tes"})
    refused = [{"field": "domain", "rule": TES_DOMAIN_RESERVED}]
    assert (status, body["name"], body["errors"]) == (400, "InvalidTask", refused)
    assert "reserved" in body["message"]
    assert await node.call("GET", "/v1/tasks") == (200, [])
