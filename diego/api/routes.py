"""Routes described once: the app registers them and the OpenAPI document is
written from them, so the two cannot disagree."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@attrs.frozen
class Param:
    """A query or path parameter."""

    name: str
    where: str  # "query" or "path"
    description: str
    type: str = "string"
    bounds: Mapping[str, Any] = attrs.field(factory=dict)
    """More of the value's JSON Schema: minimum, maximum, enum."""


@attrs.frozen
class Reply:
    """One possible answer: its status, what it means and its body.

    ``body`` is an attrs model, a one-element list of one (an array of them), a
    media type string (a non-JSON body), the name of a component schema, or None.
    """

    status: int
    description: str
    body: type | list[type] | str | None = None


@attrs.frozen
class Route:
    """One endpoint."""

    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    request: type | None = None
    params: tuple[Param, ...] = ()
    replies: tuple[Reply, ...] = ()

    @property
    def template(self) -> str:
        """The path as OpenAPI writes it: ``{id}`` for aiohttp's ``{id:regex}``."""
        return _PATTERN.sub(r"{\1}", self.path)


_PATTERN = re.compile(r"\{(\w+):[^}]*\}")
ANY_METHOD = "*"
"""A route of every method the path's documented routes leave (405s): not documented."""


def register(app: web.Application, routes: list[Route]) -> None:
    """Add ``routes`` to ``app``'s router."""
    for route in routes:
        app.router.add_route(route.method, route.path, route.handler)
