"""The cells the control node reaches: Diego's rep client, and where to find cells.

The auctioneer reads a cell's snapshot and gives it work; the LRP controller asks
the cell that runs an instance to stop it; the cancels part tells a cell of a Task
the BBS cancelled; the API reports cells and evacuates one. All find cells in a
``CellDirectory``. An embedded cell's rep is its own client (in-process); a cell on
another machine is reached over HTTP by a client of the same protocol.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from diego.models.cells import CellPresence, CellReport
from diego.models.lrp import ActualLRP
from diego.models.work import CellSnapshot, Work


class CellClient(Protocol):
    """What the scheduling loops need of one cell."""

    @property
    def cell_id(self) -> str: ...

    async def state(self) -> CellSnapshot:
        """What the auction needs to know of the cell now."""
        ...

    async def perform(self, work: Sequence[Work]) -> list[Work]:
        """Take the work that fits; the rest is returned."""
        ...

    async def stop_lrp(self, actual: ActualLRP) -> bool:
        """Stop the instance ``actual``; False if it is not this cell's."""
        ...

    async def cancel_task(self, guid: str) -> None:
        """The BBS cancelled the Task ``guid``: stop its container if it runs here."""
        ...

    async def report(self) -> CellReport:
        """What an operator is shown of the cell."""
        ...

    async def begin_evacuation(self) -> None:
        """Start evacuating (once): take no new work, move the cell's instances away,
        let its Tasks finish; return once it has begun."""
        ...


class CellDirectory(Protocol):
    """Where the scheduling loops find cells."""

    async def clients(self) -> Sequence[CellClient]:
        """Every cell there is to place work on."""
        ...

    async def get(self, cell_id: str) -> CellClient | None:
        """The cell ``cell_id``, or None if there is none of that id."""
        ...

    async def rootfs_providers(self) -> frozenset[str]:
        """The root_fs schemes some cell can run now."""
        ...


class EmbeddedCells:
    """The cells a node runs itself, each reached in-process."""

    def __init__(self, cells: Iterable[CellClient]) -> None:
        self._cells = {cell.cell_id: cell for cell in cells}
        self._clients = tuple(self._cells.values())

    async def clients(self) -> Sequence[CellClient]:
        return self._clients

    async def get(self, cell_id: str) -> CellClient | None:
        return self._cells.get(cell_id)

    async def rootfs_providers(self) -> frozenset[str]:
        return await _providers(self._clients)


class Presences(Protocol):
    """Where the cells that are alive say so: the BBS."""

    async def cell_presences(self) -> list[CellPresence]: ...


class CellConnector(Protocol):
    """Makes the client of a cell on another machine from its presence."""

    def connect(self, presence: CellPresence) -> CellClient: ...


class PresentCells:
    """A node's own cells, and every cell on another machine whose presence the BBS
    holds now (with the URL of its rep API), as Diego's auctioneer finds its cells."""

    def __init__(
        self, embedded: Iterable[CellClient], presences: Presences, connector: CellConnector
    ) -> None:
        self._embedded = {cell.cell_id: cell for cell in embedded}
        self._presences = presences
        self._connector = connector
        self._remote: dict[tuple[str, str], CellClient] = {}

    async def clients(self) -> Sequence[CellClient]:
        found = list(self._embedded.values())
        live: dict[tuple[str, str], CellClient] = {}
        for presence in await self._presences.cell_presences():
            if presence.cell_id in self._embedded or not presence.url:
                continue
            key = (presence.cell_id, presence.url)
            client = self._remote.get(key) or self._connector.connect(presence)
            live[key] = client
            found.append(client)
        self._remote = live  # a cell gone (or moved to another URL) is forgotten
        return found

    async def get(self, cell_id: str) -> CellClient | None:
        if cell_id in self._embedded:
            return self._embedded[cell_id]
        return next((c for c in await self.clients() if c.cell_id == cell_id), None)

    async def rootfs_providers(self) -> frozenset[str]:
        found = set(await _providers(self._embedded.values()))
        for presence in await self._presences.cell_presences():
            found.update(presence.rootfs_providers)
        return frozenset(found)


async def _providers(cells: Iterable[CellClient]) -> frozenset[str]:
    found: set[str] = set()
    for cell in cells:
        found.update((await cell.state()).rootfs_providers)
    return frozenset(found)
