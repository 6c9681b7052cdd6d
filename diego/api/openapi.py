"""/v1/openapi.json: an OpenAPI 3 document written from the route table and the
models' own declarations."""

from __future__ import annotations

from typing import Any

from diego import __version__
from diego.api.routes import ANY_METHOD, Reply, Route
from diego.models.codec import json_schema
from diego.models.events import EVENT_DATA
from diego.models.limits import Limits

_SCALAR_SCHEMAS: dict[type, dict[str, Any]] = {int: {"type": "integer"}, str: {"type": "string"}}

ERROR_SCHEMA = {
    "type": "object",
    "required": ["name", "message"],
    "properties": {
        "name": {"type": "string", "description": "the error's stable name"},
        "message": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "for invalid documents: each broken rule and its field path",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "rule": {"type": "string"}},
            },
        },
    },
}


def document(routes: list[Route], limits: Limits) -> dict[str, Any]:
    """The OpenAPI 3 document of ``routes``, stating the node's ``limits``.

    The event stream's data lines are described as component schemas too, one per
    event type, named ``Event.TYPE``.
    """
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    for kind, fields in EVENT_DATA.items():
        schemas[f"Event.{kind}"] = {
            "type": "object",
            "required": list(fields),
            "properties": {
                key: _SCALAR_SCHEMAS.get(tp) or json_schema(tp, schemas, limits)
                for key, tp in fields.items()
            },
        }
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if route.method == ANY_METHOD:
            continue
        responses = {str(r.status): _reply(r, schemas, limits) for r in route.replies}
        checked = route.request is not None or any(
            p.bounds or p.type != "string" for p in route.params
        )
        if checked:
            responses.setdefault("400", {"description": "a bad body or parameter, named"})
        if route.request is not None:
            responses.setdefault("413", {"description": "the body is over max_body_bytes"})
        operation: dict[str, Any] = {
            "operationId": route.operation_id,
            "summary": route.summary,
            "responses": responses,
        }
        if route.params:
            operation["parameters"] = [
                {
                    "name": p.name,
                    "in": p.where,
                    "required": p.where == "path",
                    "description": p.description,
                    "schema": {"type": p.type, **p.bounds},
                }
                for p in route.params
            ]
        if route.request is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": json_schema(route.request, schemas, limits)}
                },
            }
        paths.setdefault(route.template, {})[route.method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": "diego", "version": __version__},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _reply(reply: Reply, schemas: dict[str, Any], limits: Limits) -> dict[str, Any]:
    out: dict[str, Any] = {"description": reply.description}
    body = reply.body
    if body is None:
        return out
    if isinstance(body, str) and body in schemas:
        schema: dict[str, Any] = {"$ref": f"#/components/schemas/{body}"}
    elif isinstance(body, str):
        out["content"] = {body: {"schema": {"type": "string"}}}
        return out
    elif isinstance(body, list):
        schema = {"type": "array", "items": json_schema(body[0], schemas, limits)}
    else:
        schema = json_schema(body, schemas, limits)
    out["content"] = {"application/json": {"schema": schema}}
    return out
