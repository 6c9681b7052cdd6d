"""Container logs: every line a process writes, tagged with its log_guid and source.

The store keeps the most recent lines of each log_guid (bounded per guid and in
the number of guids, least recently written dropped first) for ``?tail=N``, and
publishes each line on its own bus for followers.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque

from diego.bus import Bus, Subscription
from diego.clock import Clock
from diego.models.logs import LogBatch, LogLine

log = logging.getLogger("diego.logs")


MAX_SHIPPERS = 10_000
"""Shipping sources remembered (the least recently heard forgotten first): each cell
node's life is one."""


class LogStore:
    """Recent lines per log_guid, and a live feed of new ones."""

    def __init__(self, clock: Clock, keep_lines: int = 1000, keep_guids: int = 10_000) -> None:
        self.clock = clock
        self.keep_lines = keep_lines
        self.keep_guids = keep_guids
        self.bus: Bus[LogLine] = Bus()
        self._recent: OrderedDict[str, deque[LogLine]] = OrderedDict()
        self._shipped: OrderedDict[str, int] = OrderedDict()
        """A shipping source → the last seq taken (in memory: a batch sent again across
        a restart of this node is taken twice)."""

    def emit(self, log_guid: str, source: str, message: str, stream: str = "OUT") -> None:
        """Record a line (lines of Tasks with no log_guid are not kept)."""
        if not log_guid:
            return
        self.record(LogLine(log_guid, source, "0", message, stream, self.clock.now()))

    def record(self, line: LogLine) -> None:
        """Keep ``line`` (made here, or on a cell on another machine) and publish it."""
        log_guid = line.log_guid
        recent = self._recent.get(log_guid)
        if recent is None:
            recent = self._recent[log_guid] = deque(maxlen=self.keep_lines)
            while len(self._recent) > self.keep_guids:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(log_guid)
        recent.append(line)
        self.bus.publish(line)

    async def ship_logs(self, batch: LogBatch) -> None:
        """Take the lines a cell node shipped, once: a batch sent again is known by its
        source and seq."""
        if batch.seq <= self._shipped.get(batch.source, -1):
            return
        self._shipped[batch.source] = batch.seq
        self._shipped.move_to_end(batch.source)
        while len(self._shipped) > MAX_SHIPPERS:
            self._shipped.popitem(last=False)
        if batch.dropped:
            log.warning("log-lines-dropped source=%s count=%d", batch.source, batch.dropped)
        for line in batch.lines:
            if line.log_guid:
                self.record(line)

    def tail(self, log_guid: str, count: int) -> list[LogLine]:
        """The last ``count`` lines of ``log_guid`` kept."""
        recent = self._recent.get(log_guid)
        if recent is None or count <= 0:
            return []
        return list(recent)[-count:]

    def follow(self, log_guid: str) -> Subscription[LogLine]:
        """A subscription to the new lines of ``log_guid``."""
        return self.bus.subscribe(lambda line: line.log_guid == log_guid, name=f"logs {log_guid}")
