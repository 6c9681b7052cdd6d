"""The cells the scheduling loops reach, as the narrow protocol each needs of one.

The auctioneer reads a cell's snapshot and gives it work; the LRP controller asks
the cell that runs an instance to stop it. Both find cells in a ``CellDirectory``.
An embedded cell's rep is its own client (in-process); a cell on another machine
is reached over HTTP by a client of the same protocol.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

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


class CellDirectory(Protocol):
    """Where the scheduling loops find cells."""

    def clients(self) -> Sequence[CellClient]:
        """Every cell there is to place work on."""
        ...

    def get(self, cell_id: str) -> CellClient | None:
        """The cell ``cell_id``, or None if there is none of that id."""
        ...


class EmbeddedCells:
    """The cells a node runs itself, each reached in-process."""

    def __init__(self, cells: Iterable[CellClient]) -> None:
        self._cells = {cell.cell_id: cell for cell in cells}
        self._clients = tuple(self._cells.values())

    def clients(self) -> Sequence[CellClient]:
        return self._clients

    def get(self, cell_id: str) -> CellClient | None:
        return self._cells.get(cell_id)
