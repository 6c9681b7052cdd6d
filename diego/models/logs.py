"""Container log lines, and the batches a cell on another machine ships them in."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class LogLine:
    """One line of output."""

    log_guid: str
    source_type: str  # the log_source: "TASK", or a run action's own
    source_instance: str
    message: str
    stream: str  # "OUT" or "ERR"
    timestamp: int  # ns since the epoch

    def data(self) -> dict[str, Any]:
        """The line as JSON data."""
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class LogBatch:
    """Lines a cell node ships to the node that serves its logs.

    ``source`` names one life of the shipping process and ``seq`` counts its batches
    from 0: a batch sent again (its answer was lost) is known by the pair and taken
    once. ``dropped`` counts the lines the shipper's bounded buffer let go since the
    batch before, because the node took them slower than the cells wrote them.
    """

    source: str
    seq: int
    lines: tuple[LogLine, ...]
    dropped: int = 0
