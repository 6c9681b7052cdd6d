"""Bounds over HTTP: what is over a limit is a 400 naming it, never stored, never a 500;
and the node's real answers agree with its own OpenAPI document."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from diego.models.events import EVENT_DATA
from tests.integration.test_api import TASK, Node, start_node

LRP = {
    "process_guid": "web",
    "domain": "apps",
    "stack": "linux",
    "action": {"run": {"path": "/bin/sleep", "args": ["1000"]}},
}


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async for n in start_node(tmp_path):
        yield n


async def test_a_billion_instances_is_refused_and_nothing_is_stored(node: Node) -> None:
    """It used to be stored, and the node then grew past 20 GB on every start."""
    status, body = await node.call("POST", "/v1/desired_lrps", json={**LRP, "instances": 10**9})
    assert (status, body["name"]) == (400, "InvalidDesiredLRP")
    assert body["errors"] == [
        {"field": "instances", "rule": "must be at most 10000 ([limits] max_instances)"}
    ]
    assert await node.call("GET", "/v1/desired_lrps") == (200, [])
    assert await node.call("GET", "/v1/actual_lrps") == (200, [])


async def test_scaling_past_the_limit_is_refused(node: Node) -> None:
    assert (await node.call("POST", "/v1/desired_lrps", json={**LRP, "instances": 1}))[0] == 201
    status, body = await node.call("PUT", "/v1/desired_lrps/web", json={"instances": 10_001})
    assert (status, body["errors"][0]["field"]) == (400, "instances")
    assert len((await node.call("GET", "/v1/actual_lrps"))[1]) == 1


async def test_the_limits_are_the_node_settings(tmp_path: Path) -> None:
    async for node in start_node(tmp_path, **{"limits.max_instances": 2}):
        status, _ = await node.call("POST", "/v1/desired_lrps", json={**LRP, "instances": 3})
        assert status == 400
        _, document = await node.call("GET", "/v1/openapi.json")
        props = document["components"]["schemas"]["DesiredLRP"]["properties"]
        assert props["instances"]["maximum"] == 2


async def test_a_long_task_guid_is_refused(node: Node) -> None:
    status, body = await node.call("POST", "/v1/tasks", json={**TASK, "task_guid": "g" * 10_000})
    assert (status, body["errors"][0]["field"]) == (400, "task_guid")
    assert await node.call("GET", "/v1/tasks") == (200, [])


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/v1/domains/d", {"ttl": 136090644449}),
        ("GET", "/v1/actual_lrps/x/index/99999999999999999999999", None),
        ("DELETE", "/v1/actual_lrps/x/index/99999999999999999999999", None),
        ("GET", "/v1/actual_lrps/x/index/²", None),
        ("GET", "/v1/tasks?page_size=²", None),
        ("GET", "/v1/logs/g?tail=²", None),
        ("POST", "/v1/tasks", {**TASK, "memory_mb": 2**64}),
        ("GET", "/ga4gh/tes/v1/tasks?page_size=²", None),
    ],
    ids=["ttl", "get-index", "kill-index", "unicode-index", "page", "tail", "memory", "tes-page"],
)
async def test_out_of_range_numbers_are_400_not_500(
    node: Node, method: str, path: str, body: Any
) -> None:
    status, answer = await node.call(method, path, json=body)
    assert status == 400, answer


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft7Validator:
    """A validator of ``schema`` whose $refs resolve in the OpenAPI ``document``."""
    whole = {**schema, "components": document["components"]}
    return jsonschema.Draft7Validator(whole, format_checker=jsonschema.FormatChecker())


def _reply_schema(document: dict[str, Any], path: str, method: str, status: int) -> Any:
    reply = document["paths"][path][method]["responses"][str(status)]
    return reply["content"]["application/json"]["schema"]


async def test_real_answers_match_the_openapi_document(node: Node) -> None:
    """A Task's JSON (with its empty root_fs and callback URL), a DesiredLRP, its
    ActualLRPs and an error each validate against the schema the node publishes."""
    _, document = await node.call("GET", "/v1/openapi.json")
    answers: list[tuple[str, str, int, Any]] = []
    status, task = await node.call("POST", "/v1/tasks", json=TASK)
    answers.append(("/v1/tasks", "post", status, task))
    assert task["root_fs"] == ""
    assert task["completion_callback_url"] == ""
    status, got = await node.call("GET", "/v1/tasks/t1")
    answers.append(("/v1/tasks/{task_guid}", "get", status, got))
    status, listed = await node.call("GET", "/v1/tasks?page_size=1")
    answers.append(("/v1/tasks", "get", status, listed))
    status, desired = await node.call("POST", "/v1/desired_lrps", json=LRP)
    answers.append(("/v1/desired_lrps", "post", status, desired))
    status, actuals = await node.call("GET", "/v1/actual_lrps/web")
    answers.append(("/v1/actual_lrps/{process_guid}", "get", status, actuals))
    status, missing = await node.call("GET", "/v1/tasks/nope")
    answers.append(("/v1/tasks/{task_guid}", "get", status, missing))
    status, refused = await node.call("POST", "/v1/tasks", json={**TASK, "task_guid": ""})
    answers.append(("/v1/tasks", "post", status, refused))
    for path, method, code, answer in answers:
        _validator(document, _reply_schema(document, path, method, code)).validate(answer)


async def test_event_data_matches_its_documented_schema(node: Node) -> None:
    """Every event on /v1/events carries the data of its documented Event.TYPE schema."""
    _, document = await node.call("GET", "/v1/openapi.json")
    seen: dict[str, Any] = {}
    response = await node.http.get(node.url("/v1/events"))
    try:
        assert await response.content.readline() == b": subscribed\n"
        await node.call("POST", "/v1/tasks", json=TASK)
        await node.call("POST", "/v1/tasks/t1/cancel")
        await node.call("POST", "/v1/desired_lrps", json=LRP)
        await node.call("PUT", "/v1/desired_lrps/web", json={"instances": 0})
        await node.call("DELETE", "/v1/desired_lrps/web")
        kind = ""
        while "desired_lrp_removed" not in seen:
            line = (await response.content.readline()).decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                seen[kind] = json.loads(line[6:])
    finally:
        response.close()
    assert {"task_created", "task_changed", "desired_lrp_created", "actual_lrp_created"} <= set(
        seen
    )
    for kind, data in seen.items():
        assert kind in EVENT_DATA
        ref = {"$ref": f"#/components/schemas/Event.{kind}"}
        _validator(document, ref).validate(data)


async def test_parameters_the_document_allows_are_served(node: Node) -> None:
    """Values inside the documented bounds are answered, those outside are 400."""
    assert (await node.call("GET", "/v1/tasks?page_size=1"))[0] == 200
    assert (await node.call("GET", "/v1/tasks?page_size=0"))[0] == 400
    _, document = await node.call("GET", "/v1/openapi.json")
    params = {p["name"]: p["schema"] for p in document["paths"]["/v1/tasks"]["get"]["parameters"]}
    assert params["page_size"]["minimum"] == 1
    tes = document["paths"]["/ga4gh/tes/v1/tasks"]["get"]["parameters"]
    assert {p["name"]: p["schema"] for p in tes}["view"]["enum"] == ["MINIMAL", "BASIC", "FULL"]
    logs = document["paths"]["/v1/logs/{log_guid}"]["get"]["parameters"]
    assert {p["name"]: p["schema"] for p in logs}["tail"]["minimum"] == 0
