"""A cell node's container logs, shipped to the node that serves them.

A cell whose BBS is on another machine keeps no logs of its own: ``GET /v1/logs``
is served by the control node. The executor writes each line here as it would to
the node's ``LogStore``; the shipper sends them on in batches (``ship_logs`` on the
cell link), one batch in flight at a time, and lets a line go only once the node
has taken its batch. Until then it holds it, across a node restart or a lost link,
in a buffer bounded by ``buffer_lines``: past that the oldest lines are dropped and
counted, and the next batch tells the node how many.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from typing import Protocol

import attrs

from diego.clock import Clock
from diego.models.errors import DiegoError
from diego.models.logs import LogBatch, LogLine

log = logging.getLogger("diego.cell.log_shipping")


class LogIntake(Protocol):
    """Where the lines go: the control node's log store, over the cell link."""

    async def ship_logs(self, batch: LogBatch) -> None: ...


@attrs.frozen(kw_only=True)
class ShippingSettings:
    """How lines are batched (timings in seconds)."""

    interval: float = 0.1  # how long a batch gathers lines before it is sent
    batch_lines: int = 500
    buffer_lines: int = 100_000
    retry_interval: float = 1.0  # after a send the node did not take
    final_flush: float = 2.0  # what a stopping cell node spends sending the rest


class LogShipper:
    """Takes lines as the executor writes them; ships them until cancelled."""

    def __init__(self, intake: LogIntake, clock: Clock, settings: ShippingSettings) -> None:
        self._intake = intake
        self._clock = clock
        self._settings = settings
        self._buffer: deque[LogLine] = deque()
        self._waiting = asyncio.Event()
        self._source = uuid.uuid4().hex
        self._seq = 0
        self._dropped = 0

    def emit(self, log_guid: str, source: str, message: str, stream: str = "OUT") -> None:
        """Hold a line for the next batch (lines of Tasks with no log_guid are not kept)."""
        if not log_guid:
            return
        if len(self._buffer) >= self._settings.buffer_lines:
            self._buffer.popleft()
            self._dropped += 1
        self._buffer.append(LogLine(log_guid, source, "0", message, stream, self._clock.now()))
        self._waiting.set()

    @property
    def held(self) -> int:
        """Lines not yet taken by the node."""
        return len(self._buffer)

    async def run(self) -> None:
        """Ship batches until cancelled; then what is held, for as long as
        ``final_flush`` allows (the node stops: its last lines go too)."""
        try:
            while True:
                await self._waiting.wait()
                await asyncio.sleep(self._settings.interval)
                while self._buffer:
                    await self._ship_one()
                self._waiting.clear()
        except asyncio.CancelledError:
            if self._buffer:
                with contextlib.suppress(TimeoutError, DiegoError):
                    async with asyncio.timeout(self._settings.final_flush):
                        while self._buffer:
                            await self._ship_one(retry=False)
            raise

    async def _ship_one(self, retry: bool = True) -> None:
        count = min(len(self._buffer), self._settings.batch_lines)
        lines = tuple(self._buffer.popleft() for _ in range(count))
        batch = LogBatch(source=self._source, seq=self._seq, lines=lines, dropped=self._dropped)
        self._dropped = 0
        failures = 0
        while True:
            try:
                await self._intake.ship_logs(batch)
                break
            except DiegoError as e:
                if not retry:
                    raise
                if failures == 0:
                    log.warning("log-shipping-failed lines=%d reason=%s", len(lines), e)
                failures += 1
                await asyncio.sleep(self._settings.retry_interval)
            if self._dropped:  # the buffer overflowed meanwhile: say so in this batch
                batch = attrs.evolve(batch, dropped=batch.dropped + self._dropped)
                self._dropped = 0
        if failures:
            log.info("log-shipping-resumed after=%d failures", failures)
        self._seq += 1
