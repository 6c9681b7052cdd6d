"""The control node's client of a cell on another machine: ``CellClient`` over HTTP.

It calls the cell's rep API (``diego.cell.rep_api``) with the cell token. A cell
that does not answer, or answers what is not the rep API's, raises
``CellUnreachable``: the auctioneer then leaves its work to the converger (nothing
is started twice), and a snapshot it cannot read is a cell it does not place on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import aiohttp

from diego.api import link_auth
from diego.models.cell_link import REP_PREFIX, TaskCancel
from diego.models.cells import CellPresence, CellReport
from diego.models.codec import decode, encode
from diego.models.errors import CellUnreachable
from diego.models.lrp import ActualLRP
from diego.models.work import CellSnapshot, Work, WorkBatch

M = TypeVar("M")


class HttpCell:
    """One cell's rep, at ``url``."""

    def __init__(
        self,
        cell_id: str,
        url: str,
        token: str,
        session: aiohttp.ClientSession,
        timeout: float = 10.0,
        state_timeout: float = 1.0,
    ) -> None:
        self._cell_id = cell_id
        self.url = f"{url.rstrip('/')}{REP_PREFIX}/{cell_id}"
        self._headers = link_auth.headers(token)
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        # Every auction waits on every cell's snapshot (and a listing of cells on its
        # report): a cell that does not answer (paused, its link lost) must not hold
        # them all up for long (Diego: 1 s).
        self._state_timeout = aiohttp.ClientTimeout(total=min(timeout, state_timeout))

    @property
    def cell_id(self) -> str:
        return self._cell_id

    async def _call(
        self,
        method: str,
        route: str,
        body: Any = None,
        limit: aiohttp.ClientTimeout | None = None,
    ) -> Any:
        try:
            async with self._session.request(
                method,
                f"{self.url}/{route}",
                json=body,
                headers=self._headers,
                timeout=limit or self._timeout,
            ) as reply:
                if reply.status == 204:
                    return None
                if reply.status not in (200, 202):
                    text = await reply.text()
                    raise CellUnreachable(
                        f"cell {self._cell_id} answered {route} with {reply.status}: {text[:200]}"
                    )
                return await reply.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise CellUnreachable(f"cell {self._cell_id} did not answer {route}: {e!r}") from None

    def _decoded(self, model: type[M], data: Any, route: str) -> M:
        try:
            return decode(model, data)
        except ValueError as e:
            raise CellUnreachable(f"cell {self._cell_id} sent a bad {route}: {e}") from None

    async def state(self) -> CellSnapshot:
        data = await self._call("GET", "state", limit=self._state_timeout)
        return self._decoded(CellSnapshot, data, "state")

    async def perform(self, work: Sequence[Work]) -> list[Work]:
        data = await self._call("POST", "work", encode(WorkBatch.of(work)))
        return self._decoded(WorkBatch, data, "work answer").items()

    async def report(self) -> CellReport:
        data = await self._call("GET", "report", limit=self._state_timeout)
        return self._decoded(CellReport, data, "report")

    async def stop_lrp(self, actual: ActualLRP) -> bool:
        data = await self._call("POST", "stop_lrp", encode(actual))
        return isinstance(data, dict) and data.get("stopped") is True

    async def cancel_task(self, guid: str) -> None:
        await self._call("POST", "cancel_task", encode(TaskCancel(task_guid=guid)))

    async def begin_evacuation(self) -> None:
        await self._call("POST", "evacuate")


class HttpCells:
    """Makes the client of each cell on another machine from its presence, all on one
    session and with the cell token."""

    def __init__(
        self, token: str, session: aiohttp.ClientSession, state_timeout: float = 1.0
    ) -> None:
        self._token = token
        self._session = session
        self._state_timeout = state_timeout

    def connect(self, presence: CellPresence) -> HttpCell:
        return HttpCell(
            presence.cell_id,
            presence.url,
            self._token,
            self._session,
            state_timeout=self._state_timeout,
        )
