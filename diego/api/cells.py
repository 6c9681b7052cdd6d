"""/v1/cells: the cells of this node (its own, and those on other machines), and
evacuating one."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from diego.api.json import json_response
from diego.api.keys import CELLS_KEY
from diego.api.routes import Param, Reply, Route
from diego.models.codec import encode
from diego.models.errors import CellNotFound, DiegoError
from diego.scheduling.cells import CellClient

log = logging.getLogger("diego.api.cells")


async def list_cells(request: web.Request) -> web.Response:
    """Every cell, embedded or on another machine: identity, stacks, capacity, free
    capacity, capabilities; a cell whose presence holds but which does not answer is
    listed as unreachable."""
    out = []
    for cell in await request.app[CELLS_KEY].clients():
        try:
            report = await cell.report()
        except DiegoError as e:
            out.append({"cell_id": cell.cell_id, "reachable": False, "error": str(e)})
            continue
        out.append({**encode(report), "reachable": True})
    return json_response(out)


async def evacuate_cell(request: web.Request) -> web.Response:
    """Start evacuating a cell: it takes no new work; its Tasks get the evacuation timeout."""
    cell_id = request.match_info["cell_id"]
    cell = await request.app[CELLS_KEY].get(cell_id)
    if cell is None:
        raise CellNotFound(f"cell {cell_id!r} not found")
    evacuations = request.app[EVACUATIONS_KEY]
    if cell_id not in evacuations:
        # Kept once done too: a cell evacuates once.
        evacuations[cell_id] = asyncio.create_task(_evacuate(cell), name=f"evacuate {cell_id}")
    return json_response({"cell_id": cell_id, "evacuating": True}, status=202)


async def _evacuate(cell: CellClient) -> None:
    try:
        await cell.evacuate()
    except DiegoError as e:
        log.warning("evacuation-not-started cell=%s reason=%s", cell.cell_id, e)


EVACUATIONS_KEY = web.AppKey("evacuations", dict[str, asyncio.Task[None]])
"""The evacuations this API started, by cell id."""

ROUTES = [
    Route(
        "GET",
        "/v1/cells",
        list_cells,
        "listCells",
        "The cells of this node: id, zone, stacks, capacity, free capacity, capabilities.",
        replies=(Reply(200, "the cells"),),
    ),
    Route(
        "POST",
        "/v1/cells/{cell_id}/evacuate",
        evacuate_cell,
        "evacuateCell",
        "Evacuate a cell: it refuses new work, and after its evacuation timeout fails its "
        'RUNNING Tasks "timed out during cell evacuation".',
        params=(Param("cell_id", "path", "the cell's id"),),
        replies=(
            Reply(202, "evacuation started"),
            Reply(404, "no cell has that id (CellNotFound)", "Error"),
        ),
    ),
]
