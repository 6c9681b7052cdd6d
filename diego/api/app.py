"""The aiohttp application: every route, the JSON error middleware, shutdown."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from diego import __version__
from diego.api import bbs_for_cells, events, lrps, openapi, tasks
from diego.api import cells as cells_api
from diego.api import logs as logs_api
from diego.api import tes as tes_api
from diego.api.errors import json_errors
from diego.api.json import json_response
from diego.api.keys import (
    BBS_KEY,
    CELLS_KEY,
    LOGS_KEY,
    LRPS_KEY,
    SETTINGS_KEY,
    STREAMS_KEY,
    OpenStreams,
)
from diego.api.routes import Reply, Route, register
from diego.config import Settings
from diego.logs import LogStore
from diego.models.work import LRPWork
from diego.scheduling.cells import CellDirectory, EmbeddedCells
from diego.scheduling.lrps import LRPController
from diego.state.bbs import BBS
from diego.tes import TesService, TesSettings


async def ping(request: web.Request) -> web.Response:
    """Whether the node answers."""
    return json_response({"available": True, "version": __version__})


async def openapi_json(request: web.Request) -> web.Response:
    """This API as an OpenAPI 3 document."""
    return json_response(openapi.document(all_routes(), request.app[SETTINGS_KEY].limits))


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
        *lrps.ROUTES,
        *events.ROUTES,
        *cells_api.ROUTES,
        *logs_api.ROUTES,
        *tes_api.ROUTES,
        Route(
            "GET",
            "/v1/openapi.json",
            openapi_json,
            "openapi",
            "This document.",
            replies=(Reply(200, "the OpenAPI 3 document of the API"),),
        ),
    ]


def make_app(
    bbs: BBS,
    settings: Settings,
    cells: CellDirectory | None = None,
    logs: LogStore | None = None,
    lrp_controller: LRPController | None = None,
    tes: TesService | None = None,
    cell_token: str = "",
) -> web.Application:
    """The API over ``bbs``, the node's ``cells`` and their ``logs``; with a
    ``cell_token``, the BBS's internal API for cells on other machines too."""
    app = web.Application(middlewares=[json_errors], client_max_size=settings.server.max_body_bytes)
    app[BBS_KEY] = bbs
    app[SETTINGS_KEY] = settings
    app[STREAMS_KEY] = OpenStreams()
    app[CELLS_KEY] = cells = cells or EmbeddedCells(())
    app[LOGS_KEY] = logs = logs if logs is not None else LogStore(bbs.clock)
    app[LRPS_KEY] = lrp_controller or LRPController(bbs, _no_auction, cells)
    app[tes_api.TES_KEY] = tes or TesService(bbs, TesSettings(), cells, logs)
    register(app, all_routes())
    if cell_token:
        bbs_for_cells.add_routes(app, bbs, cell_token, logs)

    async def end_streams(app: web.Application) -> None:
        # Event streams end when their subscriptions do; otherwise shutdown
        # would wait on them until its timeout.
        app[STREAMS_KEY].close_all()

    app.on_shutdown.append(end_streams)
    return app


def _no_auction(_work: Sequence[LRPWork]) -> None:
    """A node with no auctioneer starts nothing."""
