"""/v1/cells: the cells of this node, and evacuating one."""

from __future__ import annotations

import asyncio

import attrs
from aiohttp import web

from diego.api.json import json_response
from diego.api.keys import CELLS_KEY
from diego.api.routes import Param, Reply, Route
from diego.models.errors import CellNotFound


async def list_cells(request: web.Request) -> web.Response:
    """Every cell: identity, stacks, capacity, free capacity, capabilities."""
    out = []
    for rep in request.app[CELLS_KEY]:
        state = await rep.state()
        out.append(
            {
                "cell_id": rep.cell_id,
                "zone": rep.zone,
                "stacks": list(rep.stacks),
                "rootfs_providers": sorted(state.rootfs_providers),
                "capacity": attrs.asdict(state.total),
                "available": attrs.asdict(state.available),
                "containers": len(rep.executor.containers()),
                "evacuating": rep.evacuating,
                "capabilities": attrs.asdict(rep.executor.backend.capabilities()),
            }
        )
    return json_response(out)


async def evacuate_cell(request: web.Request) -> web.Response:
    """Start evacuating a cell: it takes no new work; its Tasks get the evacuation timeout."""
    cell_id = request.match_info["cell_id"]
    for rep in request.app[CELLS_KEY]:
        if rep.cell_id == cell_id:
            if not rep.evacuating:
                task = asyncio.create_task(rep.evacuate(), name=f"evacuate {cell_id}")
                request.app[EVACUATIONS_KEY].add(task)
                task.add_done_callback(request.app[EVACUATIONS_KEY].discard)
            return json_response({"cell_id": cell_id, "evacuating": True}, status=202)
    raise CellNotFound(f"cell {cell_id!r} not found")


EVACUATIONS_KEY = web.AppKey("evacuations", set[asyncio.Task[None]])

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
