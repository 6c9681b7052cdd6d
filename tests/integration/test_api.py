"""The HTTP API of a real node on loopback: every route, every error shape."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from diego.api.app import all_routes, make_app
from diego.api.keys import LOGS_KEY
from diego.api.routes import ANY_METHOD
from diego.bus import Bus
from diego.clock import FakeClock
from diego.config import load
from diego.models.codec import decode
from diego.models.events import Event, TaskCreated
from diego.models.task import Task
from diego.state.bbs import BBS
from diego.state.store import Store, sqlite_url
from tests.unit import test_task_validation as validation

TASK = {
    "task_guid": "t1",
    "domain": "d",
    "stack": "linux",
    "action": {"run": {"path": "/bin/sh", "args": ["-c", "echo hi"]}},
}


class Node:
    """A store, bus and API served on loopback, with an HTTP session to it."""

    def __init__(self, bbs: BBS, server: TestServer, http: aiohttp.ClientSession) -> None:
        self.bbs = bbs
        self.server = server
        self.http = http

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.http.request(method, self.url(path), **kwargs) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None


async def start_node(tmp_path: Path, **overrides: Any) -> AsyncIterator[Node]:
    settings = load(environ={}, overrides={"server.data_dir": str(tmp_path), **overrides})
    store = await Store.open(sqlite_url(tmp_path))
    bus: Bus[Event] = Bus(settings.events.queue_size)
    bbs = BBS(store, bus, FakeClock())
    server = TestServer(make_app(bbs, settings), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            yield Node(bbs, server, http)
    finally:
        await server.close()
        await store.close()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    """A node with default settings."""
    async for n in start_node(tmp_path):
        yield n


async def test_ping(node: Node) -> None:
    """GET /v1/ping says the node is available."""
    status, body = await node.call("GET", "/v1/ping")
    assert status == 200
    assert body["available"] is True


async def test_create_then_get_and_list(node: Node) -> None:
    """A created Task is 201 PENDING, and GET and list return the same Task."""
    status, created = await node.call("POST", "/v1/tasks", json=TASK)
    assert status == 201
    assert created["state"] == "PENDING"
    assert created["action"]["run"]["user"] == "root"
    for key in ("cell_id", "failed", "failure_reason", "result", "created_at", "updated_at"):
        assert key in created
    assert await node.call("GET", "/v1/tasks/t1") == (200, created)
    assert await node.call("GET", "/v1/tasks") == (200, [created])
    assert await node.call("GET", "/v1/tasks?domain=d") == (200, [created])
    assert await node.call("GET", "/v1/tasks?domain=other") == (200, [])


async def test_duplicate_is_409_by_name(node: Node) -> None:
    """Creating an existing guid is 409 TaskGuidAlreadyExists."""
    await node.call("POST", "/v1/tasks", json=TASK)
    status, body = await node.call("POST", "/v1/tasks", json={**TASK, "domain": "other"})
    assert status == 409
    assert body["name"] == "TaskGuidAlreadyExists"
    assert (await node.call("GET", "/v1/tasks/t1"))[1]["domain"] == "d"


async def test_invalid_task_names_every_field_and_writes_nothing(node: Node) -> None:
    """An invalid Task is 400 InvalidTask listing each field path, and nothing is stored."""
    bad = {
        **TASK,
        "task_guid": "no spaces",
        "cpu_weight": 0,
        "action": {"serial": {"actions": [{"run": {"path": "/x"}}, {"run": {}}]}},
        "extra": 1,
    }
    status, body = await node.call("POST", "/v1/tasks", json=bad)
    assert status == 400
    assert body["name"] == "InvalidTask"
    fields = {e["field"] for e in body["errors"]}
    assert fields == {"task_guid", "cpu_weight", "action.serial.actions[1].run.path", "extra"}
    assert "action.serial.actions[1].run.path: required" in body["message"]
    assert await node.call("GET", "/v1/tasks") == (200, [])


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        pytest.param(b"{not json", "InvalidJSON", id="malformed"),
        pytest.param(b"\xff\xfe", "InvalidJSON", id="not-utf8"),
        pytest.param(b"", "InvalidJSON", id="empty"),
        pytest.param(b"[" * 200_000 + b"]" * 200_000, "InvalidJSON", id="nested-too-deep"),
        pytest.param(b"[]", "InvalidTask", id="array-not-object"),
        pytest.param(b'"task"', "InvalidTask", id="string-not-object"),
        pytest.param(json.dumps({**TASK, "memory_mb": "64"}).encode(), "InvalidTask", id="type"),
    ],
)
async def test_bad_bodies_are_400_never_500(node: Node, raw: bytes, name: str) -> None:
    """A body that is not a valid Task is a 400 naming the problem; nothing is written."""
    status, body = await node.call("POST", "/v1/tasks", data=raw)
    assert (status, body["name"]) == (400, name)
    assert body["message"]
    assert await node.call("GET", "/v1/tasks") == (200, [])


async def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    """A body over server.max_body_bytes is 413 RequestTooLarge, and nothing is written."""
    async for node in start_node(tmp_path, **{"server.max_body_bytes": 1000}):
        big = {**TASK, "annotation": "x" * 2000}
        status, body = await node.call("POST", "/v1/tasks", json=big)
        assert (status, body["name"]) == (413, "RequestTooLarge")
        assert "1000" in body["message"]
        assert await node.call("GET", "/v1/tasks") == (200, [])


async def test_unknown_route_and_method_are_json(node: Node) -> None:
    """Unknown paths are 404 and wrong methods 405, both as JSON errors."""
    status, body = await node.call("GET", "/v1/nothing")
    assert (status, body["name"]) == (404, "NotFound")
    status, body = await node.call("PUT", "/v1/tasks")
    assert (status, body["name"]) == (405, "MethodNotAllowed")


async def test_missing_task_is_404_task_not_found(node: Node) -> None:
    """GET, cancel and DELETE of an unknown guid are 404 TaskNotFound."""
    for method, path in (
        ("GET", "/v1/tasks/nope"),
        ("POST", "/v1/tasks/nope/cancel"),
        ("DELETE", "/v1/tasks/nope"),
    ):
        status, body = await node.call(method, path)
        assert (status, body["name"]) == (404, "TaskNotFound"), (method, path)


async def test_cancel_completes_failed_and_only_once(node: Node) -> None:
    """Cancel makes a PENDING Task COMPLETED, failed, "cancelled"; again is 409."""
    await node.call("POST", "/v1/tasks", json=TASK)
    status, body = await node.call("POST", "/v1/tasks/t1/cancel")
    assert status == 200
    assert (body["state"], body["failed"], body["failure_reason"]) == (
        "COMPLETED",
        True,
        "cancelled",
    )
    status, body = await node.call("POST", "/v1/tasks/t1/cancel")
    assert (status, body["name"]) == (409, "InvalidStateTransition")


async def test_cancel_reaches_running_tasks(node: Node) -> None:
    """A RUNNING Task can be cancelled too."""
    await node.call("POST", "/v1/tasks", json=TASK)
    await node.bbs.start_task("t1", "cell-a")
    status, body = await node.call("POST", "/v1/tasks/t1/cancel")
    assert (status, body["failure_reason"]) == (200, "cancelled")


async def test_delete_only_completed(node: Node) -> None:
    """DELETE of a PENDING Task is 409; of a COMPLETED one 204, and then it is gone."""
    await node.call("POST", "/v1/tasks", json=TASK)
    status, body = await node.call("DELETE", "/v1/tasks/t1")
    assert (status, body["name"]) == (409, "InvalidStateTransition")
    await node.call("POST", "/v1/tasks/t1/cancel")
    assert await node.call("DELETE", "/v1/tasks/t1") == (204, None)
    assert (await node.call("GET", "/v1/tasks/t1"))[0] == 404


async def test_delete_of_resolving_task_is_409(node: Node) -> None:
    """A Task already RESOLVING (a callback in flight) cannot be deleted by a consumer."""
    await node.call("POST", "/v1/tasks", json=TASK)
    await node.bbs.cancel_task("t1")
    await node.bbs.resolving_task("t1")
    status, body = await node.call("DELETE", "/v1/tasks/t1")
    assert (status, body["name"]) == (409, "InvalidStateTransition")


async def test_pages_walk_every_task_once(node: Node) -> None:
    """page_size pages through every Task with the next token in a header."""
    for i in range(7):
        await node.call("POST", "/v1/tasks", json={**TASK, "task_guid": f"t{i}"})
        node.bbs.clock.advance(1)  # type: ignore[attr-defined]
    seen: list[str] = []
    token = None
    while True:
        params = {"page_size": "3", **({"page_token": token} if token else {})}
        async with node.http.get(node.url("/v1/tasks"), params=params) as response:
            assert response.status == 200
            seen += [t["task_guid"] for t in await response.json()]
            token = response.headers.get("Diego-Next-Page-Token")
        if token is None:
            break
    assert seen == [f"t{i}" for i in range(7)]


@pytest.mark.parametrize(
    "query", ["page_size=0", "page_size=abc", "page_size=100001", "page_token=%21%21"]
)
async def test_bad_paging_is_400(node: Node, query: str) -> None:
    """A bad page_size or page_token is 400 naming the parameter."""
    status, body = await node.call("GET", f"/v1/tasks?{query}")
    assert (status, body["name"]) == (400, "InvalidRequest")
    assert query.split("=")[0] in body["message"]


async def read_events(response: aiohttp.ClientResponse, count: int) -> list[tuple[str, Any]]:
    """The next ``count`` events of an SSE response, as (type, data)."""
    events: list[tuple[str, Any]] = []
    fields: dict[str, str] = {}
    while len(events) < count:
        line = (await asyncio.wait_for(response.content.readline(), 10)).decode().rstrip("\n")
        if line.startswith(":"):
            continue
        if line:
            key, _, value = line.partition(": ")
            fields[key] = value
        elif fields:
            events.append((fields["event"], json.loads(fields["data"])))
            fields = {}
    return events


async def open_stream(node: Node, query: str = "") -> aiohttp.ClientResponse:
    """An open /v1/events response, returned once the subscription is live."""
    response = await node.http.get(node.url(f"/v1/events{query}"))
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert await response.content.readline() == b": subscribed\n"
    return response


async def test_event_stream_reports_each_change(node: Node) -> None:
    """The stream carries task_created, task_changed (before, after) and task_removed."""
    response = await open_stream(node)
    try:
        await node.call("POST", "/v1/tasks", json=TASK)
        await node.call("POST", "/v1/tasks/t1/cancel")
        await node.call("DELETE", "/v1/tasks/t1")
        events = await read_events(response, 4)
    finally:
        response.close()
    assert [e[0] for e in events] == [
        "task_created",
        "task_changed",
        "task_changed",
        "task_removed",
    ]
    created, cancelled, resolving, removed = (e[1] for e in events)
    assert created["task"]["state"] == "PENDING"
    assert (cancelled["before"]["state"], cancelled["after"]["state"]) == ("PENDING", "COMPLETED")
    assert resolving["after"]["state"] == "RESOLVING"
    assert removed["task"]["task_guid"] == "t1"
    assert decode(Task, removed["task"]).state.value == "RESOLVING"


async def test_event_stream_filters_by_domain(node: Node) -> None:
    """?domain= streams only that domain's events."""
    response = await open_stream(node, "?domain=wanted")
    try:
        await node.call("POST", "/v1/tasks", json={**TASK, "task_guid": "a", "domain": "other"})
        await node.call("POST", "/v1/tasks", json={**TASK, "task_guid": "b", "domain": "wanted"})
        ((kind, data),) = await read_events(response, 1)
    finally:
        response.close()
    assert (kind, data["task"]["task_guid"]) == ("task_created", "b")


async def test_slow_stream_is_dropped_and_told(tmp_path: Path) -> None:
    """A stream whose queue overflows gets a final dropped event; the publisher never waits."""
    async for node in start_node(tmp_path, **{"events.queue_size": 2}):
        response = await open_stream(node)
        try:
            task = decode(Task, {**TASK, "state": "PENDING"})
            for _ in range(10):  # in one go: the stream cannot drain in between
                node.bbs.bus.publish(TaskCreated(task))
            events = await read_events(response, 3)
            assert [e[0] for e in events] == ["task_created", "task_created", "dropped"]
            assert await asyncio.wait_for(response.content.read(), 10) == b""
        finally:
            response.close()
        assert node.bbs.bus.statistics().dropped_subscribers == 1


async def test_server_shutdown_ends_open_streams(tmp_path: Path) -> None:
    """Closing the server ends open event streams instead of waiting on them."""
    async for node in start_node(tmp_path):
        response = await open_stream(node)
        await asyncio.wait_for(node.server.close(), 10)
        # What is left is the blank line closing the subscribed comment, then the end.
        assert await asyncio.wait_for(response.content.read(), 10) == b"\n"
        response.close()


async def test_openapi_documents_exactly_the_routes(node: Node) -> None:
    """Every served route is in /v1/openapi.json and every documented one is served."""
    status, document = await node.call("GET", "/v1/openapi.json")
    assert status == 200
    assert document["openapi"].startswith("3.")
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    app = node.server.app
    assert isinstance(app, web.Application)
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method not in ("HEAD", ANY_METHOD) and route.resource is not None
    }
    assert documented == served
    assert {(r.method, r.template) for r in all_routes() if r.method != ANY_METHOD} == served


async def test_openapi_schema_references_resolve(node: Node) -> None:
    """Every $ref in the document points at a schema the document defines."""
    _, document = await node.call("GET", "/v1/openapi.json")
    schemas = document["components"]["schemas"]
    refs: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if "$ref" in value:
                refs.append(value["$ref"])
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(document)
    assert refs
    for ref in refs:
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    task = schemas["TaskCreateRequest"]
    assert task["additionalProperties"] is False
    assert set(task["required"]) == {"task_guid", "domain", "stack", "action"}
    assert task["properties"]["cpu_weight"]["maximum"] == 100


async def test_logs_tail_then_follow(node: Node) -> None:
    """/v1/logs sends the last tail lines kept, then new lines as they are written."""
    app = node.server.app
    assert app is not None
    logs = app[LOGS_KEY]
    for n in range(5):
        logs.emit("g1", "TASK", f"line {n}")
    logs.emit("other", "TASK", "not mine")
    async with node.http.get(node.url("/v1/logs/g1?tail=2&follow=false")) as response:
        assert response.status == 200
        text = await response.text()
    messages = [
        json.loads(line[6:])["message"] for line in text.splitlines() if line.startswith("data: ")
    ]
    assert messages == ["line 3", "line 4"]
    response = await node.http.get(node.url("/v1/logs/g1?tail=0"))
    try:
        assert await response.content.readline() == b": subscribed\n"
        logs.emit("g1", "TASK", "fresh", "ERR")
        ((kind, data),) = await read_events(response, 1)
    finally:
        response.close()
    assert (kind, data["message"], data["stream"], data["log_guid"]) == (
        "log",
        "fresh",
        "ERR",
        "g1",
    )


async def test_logs_bad_tail_is_400(node: Node) -> None:
    """A tail that is not a whole number is 400 naming it."""
    status, body = await node.call("GET", "/v1/logs/g1?tail=-3")
    assert (status, body["name"]) == (400, "InvalidRequest")
    assert "tail" in body["message"]


@pytest.mark.parametrize(("overrides", "path", "rule"), validation.REFUSED)
async def test_every_validation_rule_is_a_400_naming_the_field(
    node: Node, overrides: dict[str, Any], path: str, rule: str
) -> None:
    """Each broken rule of the validation table, sent over HTTP, is a 400 naming its field."""
    status, body = await node.call("POST", "/v1/tasks", json=validation.request(**overrides))
    assert (status, body["name"]) == (400, "InvalidTask")
    assert any(e["field"] == path and rule in e["rule"] for e in body["errors"]), body
    assert f"{path}: " in body["message"]


async def test_nothing_invalid_was_written(node: Node) -> None:
    """After the whole validation table is refused, the store holds no Task."""
    for overrides, _path, _rule in (p.values for p in validation.REFUSED):
        await node.call("POST", "/v1/tasks", json=validation.request(**overrides))
    assert await node.call("GET", "/v1/tasks") == (200, [])


LRP = {
    "process_guid": "web",
    "domain": "apps",
    "stack": "linux",
    "instances": 2,
    "action": {"run": {"path": "/bin/sleep", "args": ["1000"]}},
}


async def test_desired_lrp_creates_its_unclaimed_instances(node: Node) -> None:
    """POST /v1/desired_lrps is 201 and creates one UNCLAIMED ActualLRP per index."""
    status, created = await node.call("POST", "/v1/desired_lrps", json=LRP)
    assert status == 201
    assert created["instances"] == 2
    assert await node.call("GET", "/v1/desired_lrps/web") == (200, created)
    assert (await node.call("GET", "/v1/desired_lrps?domain=apps"))[1] == [created]
    _, actuals = await node.call("GET", "/v1/actual_lrps/web")
    assert [(a["index"], a["state"]) for a in actuals] == [(0, "UNCLAIMED"), (1, "UNCLAIMED")]
    status, body = await node.call("POST", "/v1/desired_lrps", json=LRP)
    assert (status, body["name"]) == (409, "DesiredLRPAlreadyExists")


async def test_scaling_creates_and_removes_instances(node: Node) -> None:
    """PUT instances up adds indices; down removes the extra (unclaimed) ones."""
    await node.call("POST", "/v1/desired_lrps", json=LRP)
    status, body = await node.call("PUT", "/v1/desired_lrps/web", json={"instances": 4})
    assert (status, body["instances"]) == (200, 4)
    _, actuals = await node.call("GET", "/v1/actual_lrps/web")
    assert [a["index"] for a in actuals] == [0, 1, 2, 3]
    await node.call("PUT", "/v1/desired_lrps/web", json={"instances": 1})
    _, actuals = await node.call("GET", "/v1/actual_lrps/web")
    assert [a["index"] for a in actuals] == [0]


async def test_only_instances_routes_and_annotation_may_change(node: Node) -> None:
    """PUT of any other DesiredLRP field is a 400 naming it; a bad value too; nothing changes."""
    await node.call("POST", "/v1/desired_lrps", json=LRP)
    status, body = await node.call(
        "PUT", "/v1/desired_lrps/web", json={"stack": "windows", "memory_mb": 5}
    )
    assert (status, body["name"]) == (400, "InvalidDesiredLRP")
    assert {e["field"] for e in body["errors"]} == {"stack", "memory_mb"}
    status, body = await node.call("PUT", "/v1/desired_lrps/web", json={"instances": -1})
    assert (status, body["errors"][0]["field"]) == (400, "instances")
    status, body = await node.call("PUT", "/v1/desired_lrps/web", json={"routes": [1]})
    assert (status, body["errors"][0]["field"]) == (400, "routes")
    assert (await node.call("GET", "/v1/desired_lrps/web"))[1]["stack"] == "linux"


async def test_invalid_desired_lrp_names_each_field(node: Node) -> None:
    """An invalid DesiredLRP is 400 InvalidDesiredLRP naming every field, and nothing is stored."""
    bad = {**LRP, "process_guid": "a b", "instances": -2, "ports": [0], "extra": True}
    status, body = await node.call("POST", "/v1/desired_lrps", json=bad)
    assert (status, body["name"]) == (400, "InvalidDesiredLRP")
    assert {e["field"] for e in body["errors"]} == {"process_guid", "instances", "ports", "extra"}
    assert await node.call("GET", "/v1/desired_lrps") == (200, [])
    assert await node.call("GET", "/v1/actual_lrps") == (200, [])


async def test_deleting_a_desired_lrp_removes_its_instances(node: Node) -> None:
    """DELETE is 204 and takes the (unclaimed) instances with it; a second DELETE is 404."""
    await node.call("POST", "/v1/desired_lrps", json=LRP)
    assert await node.call("DELETE", "/v1/desired_lrps/web") == (204, None)
    assert await node.call("GET", "/v1/actual_lrps/web") == (200, [])
    status, body = await node.call("DELETE", "/v1/desired_lrps/web")
    assert (status, body["name"]) == (404, "DesiredLRPNotFound")


async def test_actual_lrp_lookups_and_errors(node: Node) -> None:
    """One instance by index; a missing index is 404 ActualLRPNotFound; a bad index 400."""
    await node.call("POST", "/v1/desired_lrps", json=LRP)
    status, body = await node.call("GET", "/v1/actual_lrps/web/index/1")
    assert (status, body["index"], body["state"]) == (200, 1, "UNCLAIMED")
    status, body = await node.call("GET", "/v1/actual_lrps/web/index/7")
    assert (status, body["name"]) == (404, "ActualLRPNotFound")
    status, body = await node.call("GET", "/v1/actual_lrps/web/index/x")
    assert (status, body["name"]) == (400, "InvalidRequest")
    _, all_actuals = await node.call("GET", "/v1/actual_lrps?domain=apps")
    assert len(all_actuals) == 2


async def test_domains_are_fresh_until_their_ttl(node: Node) -> None:
    """PUT /v1/domains/{d} with a ttl makes it fresh; ttl 0 is forever; a bad ttl is 400."""
    assert (await node.call("PUT", "/v1/domains/apps", json={"ttl": 0}))[0] == 204
    assert (await node.call("PUT", "/v1/domains/short", json={"ttl": 10}))[0] == 204
    assert sorted((await node.call("GET", "/v1/domains"))[1]) == ["apps", "short"]
    clock = node.bbs.clock
    assert isinstance(clock, FakeClock)
    clock.advance(11)
    assert (await node.call("GET", "/v1/domains"))[1] == ["apps"]
    status, body = await node.call("PUT", "/v1/domains/apps", json={"ttl": -1})
    assert (status, body["errors"][0]["field"]) == (400, "ttl")
