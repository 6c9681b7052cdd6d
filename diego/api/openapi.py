"""/v1/openapi.json: an OpenAPI 3 document written from the route table and the
models' own declarations."""

from __future__ import annotations

from typing import Any

from diego import __version__
from diego.api.routes import Reply, Route
from diego.models.codec import json_schema

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


def document(routes: list[Route]) -> dict[str, Any]:
    """The OpenAPI 3 document of ``routes``."""
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "operationId": route.operation_id,
            "summary": route.summary,
            "responses": {str(r.status): _reply(r, schemas) for r in route.replies},
        }
        if route.params:
            operation["parameters"] = [
                {
                    "name": p.name,
                    "in": p.where,
                    "required": p.where == "path",
                    "description": p.description,
                    "schema": {"type": p.type},
                }
                for p in route.params
            ]
        if route.request is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": json_schema(route.request, schemas)}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": "diego", "version": __version__},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _reply(reply: Reply, schemas: dict[str, Any]) -> dict[str, Any]:
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
        schema = {"type": "array", "items": json_schema(body[0], schemas)}
    else:
        schema = json_schema(body, schemas)
    out["content"] = {"application/json": {"schema": schema}}
    return out
