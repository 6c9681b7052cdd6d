"""The aiohttp application: every route, the JSON error middleware, shutdown."""

from __future__ import annotations

from aiohttp import web

from diego import __version__
from diego.api import events, openapi, tasks
from diego.api.errors import json_errors
from diego.api.json import json_response
from diego.api.keys import BBS_KEY, SETTINGS_KEY, STREAMS_KEY, OpenStreams
from diego.api.routes import Reply, Route, register
from diego.config import Settings
from diego.state.bbs import BBS


async def ping(request: web.Request) -> web.Response:
    """Whether the node answers."""
    return json_response({"available": True, "version": __version__})


async def openapi_json(request: web.Request) -> web.Response:
    """This API as an OpenAPI 3 document."""
    return json_response(openapi.document(all_routes()))


def all_routes() -> list[Route]:
    """Every route the API serves."""
    return [
        Route(
            "GET",
            "/v1/ping",
            ping,
            "ping",
            "Check that the node answers.",
            replies=(Reply(200, '{"available": true, "version": ...}'),),
        ),
        *tasks.ROUTES,
        *events.ROUTES,
        Route(
            "GET",
            "/v1/openapi.json",
            openapi_json,
            "openapi",
            "This document.",
            replies=(Reply(200, "the OpenAPI 3 document of the API"),),
        ),
    ]


def make_app(bbs: BBS, settings: Settings) -> web.Application:
    """The API over ``bbs``."""
    app = web.Application(middlewares=[json_errors], client_max_size=settings.server.max_body_bytes)
    app[BBS_KEY] = bbs
    app[SETTINGS_KEY] = settings
    app[STREAMS_KEY] = OpenStreams()
    register(app, all_routes())

    async def end_streams(app: web.Application) -> None:
        # Event streams end when their subscriptions do; otherwise shutdown
        # would wait on them until its timeout.
        app[STREAMS_KEY].close_all()

    app.on_shutdown.append(end_streams)
    return app
