"""/v1/cells: the cells of this node (its own, and those on other machines), and
evacuating one."""

from __future__ import annotations

import asyncio

from aiohttp import web

from diego.api.json import json_response
from diego.api.keys import CELLS_KEY
from diego.api.routes import Param, Reply, Route
from diego.models.codec import encode
from diego.models.errors import CellNotFound, DiegoError


async def list_cells(request: web.Request) -> web.Response:
    """Every cell, embedded or on another machine: identity, stacks, capacity, free
    capacity, capabilities; a cell whose presence holds but which does not answer is
    listed as unreachable."""
    cells = await request.app[CELLS_KEY].clients()
    # All at once: a cell that does not answer costs the listing one timeout, not one each.
    reports = await asyncio.gather(*(cell.report() for cell in cells), return_exceptions=True)
    out = []
    for cell, report in zip(cells, reports, strict=True):
        if isinstance(report, DiegoError):
            out.append({"cell_id": cell.cell_id, "reachable": False, "error": str(report)})
        elif isinstance(report, BaseException):
            raise report
        else:
            out.append({**encode(report), "reachable": True})
    return json_response(out)


async def evacuate_cell(request: web.Request) -> web.Response:
    """Start evacuating a cell: it takes no new work; its Tasks get the evacuation
    timeout. A cell on another machine that does not answer is a 503."""
    cell_id = request.match_info["cell_id"]
    cell = await request.app[CELLS_KEY].get(cell_id)
    if cell is None:
        raise CellNotFound(f"cell {cell_id!r} not found")
    await cell.begin_evacuation()
    return json_response({"cell_id": cell_id, "evacuating": True}, status=202)


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
            Reply(503, "the cell, on another machine, did not answer (CellUnreachable)", "Error"),
        ),
    ),
]
