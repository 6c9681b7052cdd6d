"""A cell's rep API, for the control node: Diego's rep routes, over HTTP.

Under ``/internal/rep/v1/cells/CELL_ID`` (a cell node may run several cells):

- ``GET state``: the cell's snapshot, as the auction reads it;
- ``GET report``: what an operator is shown of it (``GET /v1/cells`` on the node);
- ``POST work``: a ``WorkBatch`` to perform; the answer is the batch it refused;
- ``POST stop_lrp``: an ActualLRP to stop; ``{"stopped": bool}``;
- ``POST cancel_task``: ``{"task_guid": ...}``, a Task the BBS cancelled (204);
- ``POST evacuate``: start evacuating (202; again: still 202, one evacuation);
- ``GET ping``: whether the cell answers, and whether it has announced itself.

Every call bears the cell token (``diego.api.link_auth``); the control node's
client of these routes is ``diego.scheduling.cell_http.HttpCell``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from aiohttp import web

from diego.api import link_auth
from diego.api.json import decode_model, json_response, read_json
from diego.models.cell_link import REP_PREFIX, TaskCancel
from diego.models.cells import CellReport
from diego.models.codec import encode
from diego.models.errors import InvalidArguments
from diego.models.limits import Limits
from diego.models.lrp import ActualLRP
from diego.models.work import CellSnapshot, Work, WorkBatch

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ServedRep(Protocol):
    """What the rep API serves of one rep."""

    @property
    def cell_id(self) -> str: ...

    @property
    def present(self) -> asyncio.Event: ...

    async def state(self) -> CellSnapshot: ...

    async def perform(self, work: list[Work]) -> list[Work]: ...

    async def stop_lrp(self, actual: ActualLRP) -> bool: ...

    async def cancel_task(self, guid: str) -> None: ...

    async def report(self) -> CellReport: ...

    async def begin_evacuation(self) -> None: ...


def add_routes(
    app: web.Application, reps: Iterable[ServedRep], token: str, limits: Limits | None = None
) -> None:
    """Serve the rep API of each of ``reps`` on ``app`` (whose ``json_errors`` middleware
    answers a bad body 400, naming each field), to callers bearing ``token``; bodies
    are held to ``limits``."""
    limits = limits or Limits()
    by_id = {rep.cell_id: rep for rep in reps}

    def rep_of(request: web.Request) -> ServedRep:
        rep = by_id.get(request.match_info["cell_id"])
        if rep is None:
            raise web.HTTPNotFound(text=f"no cell {request.match_info['cell_id']!r} here")
        return rep

    def guarded(handler: Handler) -> Handler:
        async def checked(request: web.Request) -> web.StreamResponse:
            refused = link_auth.refusal(request, token)
            return refused if refused is not None else await handler(request)

        return checked

    async def state(request: web.Request) -> web.Response:
        return json_response(encode(await rep_of(request).state()))

    async def report(request: web.Request) -> web.Response:
        return json_response(encode(await rep_of(request).report()))

    async def work(request: web.Request) -> web.Response:
        rep = rep_of(request)
        batch = decode_model(await read_json(request), WorkBatch, InvalidArguments, limits)
        refused = await rep.perform(batch.items())
        return json_response(encode(WorkBatch.of(refused)))

    async def stop_lrp(request: web.Request) -> web.Response:
        rep = rep_of(request)
        actual = decode_model(await read_json(request), ActualLRP, InvalidArguments, limits)
        return json_response({"stopped": await rep.stop_lrp(actual)})

    async def cancel_task(request: web.Request) -> web.Response:
        rep = rep_of(request)
        cancel = decode_model(await read_json(request), TaskCancel, InvalidArguments, limits)
        await rep.cancel_task(cancel.task_guid)
        return web.Response(status=204)

    async def evacuate(request: web.Request) -> web.Response:
        rep = rep_of(request)
        await rep.begin_evacuation()
        return json_response({"cell_id": rep.cell_id, "evacuating": True}, status=202)

    async def ping(request: web.Request) -> web.Response:
        rep = rep_of(request)
        return json_response({"cell_id": rep.cell_id, "present": rep.present.is_set()})

    cell = REP_PREFIX + "/{cell_id}"
    app.router.add_get(cell + "/state", guarded(state))
    app.router.add_post(cell + "/work", guarded(work))
    app.router.add_get(cell + "/report", guarded(report))
    app.router.add_post(cell + "/stop_lrp", guarded(stop_lrp))
    app.router.add_post(cell + "/cancel_task", guarded(cancel_task))
    app.router.add_post(cell + "/evacuate", guarded(evacuate))
    app.router.add_get(cell + "/ping", guarded(ping))
