"""A cell node's container logs, shipped to the node that serves them.

A cell whose BBS is on another machine keeps no logs of its own: ``GET /v1/logs``
is served by the control node. The executor writes each line here as it would to
the node's ``LogStore``; the shipper sends them on in batches (``ship_logs`` on the
cell link), one batch in flight at a time, and lets a line go only once the node
has taken its batch. Until then it holds it, across a node restart or a lost link,
in a buffer bounded by ``buffer_bytes``: past that the oldest lines are dropped and
counted, and the next batch tells the node how many. A batch is bounded in lines
and in bytes (under the node's body limit); one the node refuses outright (not
unheard: answered with an error) is dropped and counted likewise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from typing import Protocol

import attrs

from diego.cell.bbs_http import BBSUnreachable
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
    batch_bytes: int = 256 * 1024  # well under the node's [server] max_body_bytes
    buffer_bytes: int = 64 * 1024 * 1024  # held, not yet taken, at most
    retry_interval: float = 1.0  # after a send the node did not take
    final_flush: float = 2.0  # what a stopping cell node spends sending the rest


LINE_OVERHEAD = 100
"""Bytes a line costs on the wire beyond its message (its guid, source, stamps)."""


def _size(line: LogLine) -> int:
    return len(line.message) + len(line.log_guid) + len(line.source_type) + LINE_OVERHEAD


class LogShipper:
    """Takes lines as the executor writes them; ships them until cancelled."""

    def __init__(self, intake: LogIntake, clock: Clock, settings: ShippingSettings) -> None:
        self._intake = intake
        self._clock = clock
        self._settings = settings
        self._buffer: deque[LogLine] = deque()
        self._buffered_bytes = 0
        self._in_flight: LogBatch | None = None
        """The batch sent and not yet taken: sent again, whole and under its seq,
        until it is (or is refused)."""
        self._waiting = asyncio.Event()
        self._source = uuid.uuid4().hex
        self._seq = 0
        self._dropped = 0

    def emit(self, log_guid: str, source: str, message: str, stream: str = "OUT") -> None:
        """Hold a line for the next batch (lines of Tasks with no log_guid are not kept)."""
        if not log_guid:
            return
        line = LogLine(log_guid, source, "0", message, stream, self._clock.now())
        size = _size(line)
        while self._buffer and self._buffered_bytes + size > self._settings.buffer_bytes:
            self._buffered_bytes -= _size(self._buffer.popleft())
            self._dropped += 1
        self._buffer.append(line)
        self._buffered_bytes += size
        self._waiting.set()

    @property
    def held(self) -> int:
        """Lines not yet taken by the node."""
        in_flight = len(self._in_flight.lines) if self._in_flight is not None else 0
        return len(self._buffer) + in_flight

    async def run(self) -> None:
        """Ship batches until cancelled; then what is held, for as long as
        ``final_flush`` allows (the node stops: its last lines go too)."""
        try:
            while True:
                await self._waiting.wait()
                await asyncio.sleep(self._settings.interval)
                while self.held:
                    await self._ship_one()
                self._waiting.clear()
        except asyncio.CancelledError:
            if self.held:
                with contextlib.suppress(TimeoutError, DiegoError):
                    async with asyncio.timeout(self._settings.final_flush):
                        while self.held:
                            await self._ship_one(retry=False)
            raise

    def _next_batch(self) -> LogBatch:
        lines: list[LogLine] = []
        size = 0
        while self._buffer and len(lines) < self._settings.batch_lines:
            line_size = _size(self._buffer[0])
            if lines and size + line_size > self._settings.batch_bytes:
                break
            lines.append(self._buffer.popleft())
            self._buffered_bytes -= line_size
            size += line_size
        batch = LogBatch(
            source=self._source, seq=self._seq, lines=tuple(lines), dropped=self._dropped
        )
        self._seq += 1  # a seq names these lines only, whatever becomes of them
        self._dropped = 0
        return batch

    async def _ship_one(self, retry: bool = True) -> None:
        if self._in_flight is None:
            self._in_flight = self._next_batch()
        batch = self._in_flight
        failures = 0
        while True:
            try:
                await self._intake.ship_logs(batch)
                break
            except BBSUnreachable as e:  # not heard: the same batch again, later
                if not retry:
                    raise
                if failures == 0:
                    log.warning("log-shipping-failed lines=%d reason=%s", len(batch.lines), e)
                failures += 1
                await asyncio.sleep(self._settings.retry_interval)
            except DiegoError as e:  # heard and refused: sending it again cannot help
                log.warning("log-batch-refused lines=%d reason=%s", len(batch.lines), e)
                self._dropped += len(batch.lines)
                break
        self._in_flight = None
        if failures:
            log.info("log-shipping-resumed after=%d failures", failures)
