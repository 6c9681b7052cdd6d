"""A cell node's logs shipped over the cell link to a real aiohttp server on loopback:
in batches, held while the node is away, taken once, bounded."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web

from diego.api import bbs_for_cells
from diego.cell.bbs_http import HttpBBS
from diego.cell.log_shipping import LogShipper, ShippingSettings
from diego.clock import FakeClock
from diego.logs import LogStore
from diego.models.logs import LogBatch, LogLine

TOKEN = "log-link-token"
FAST = ShippingSettings(interval=0.01, batch_lines=3, retry_interval=0.05, final_flush=1.0)


class Node:
    """A control node's log store behind its internal API, which can be stopped and
    started again on the same port (a node restart)."""

    def __init__(self) -> None:
        self.logs = LogStore(FakeClock())
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self.logs = LogStore(FakeClock())  # a restarted node remembers nothing
        app = web.Application()
        bbs_for_cells.add_routes(app, object(), TOKEN, self.logs)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def messages(self, guid: str) -> list[str]:
        return [line.message for line in self.logs.tail(guid, 1000)]


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    made = Node()
    await made.start()
    try:
        yield made
    finally:
        await made.stop()


@contextlib.asynccontextmanager
async def shipping(shipper: LogShipper) -> AsyncIterator[asyncio.Task[None]]:
    running = asyncio.create_task(shipper.run())
    try:
        yield running
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "never happened"
        await asyncio.sleep(0.01)


async def test_lines_arrive_in_order_in_batches(node: Node, session: aiohttp.ClientSession) -> None:
    shipper = LogShipper(HttpBBS(node.url, TOKEN, session), FakeClock(), FAST)
    async with shipping(shipper):
        for i in range(10):
            shipper.emit("g", "TASK", f"line {i}", "ERR" if i == 3 else "OUT")
        shipper.emit("", "TASK", "no guid: not kept")
        await until(lambda: len(node.messages("g")) == 10)
    assert node.messages("g") == [f"line {i}" for i in range(10)]
    assert node.logs.tail("g", 10)[3].stream == "ERR"
    assert shipper.held == 0


async def test_lines_wait_out_a_node_restart(node: Node, session: aiohttp.ClientSession) -> None:
    """Lines written while the node is down are held, and taken once it is back."""
    shipper = LogShipper(HttpBBS(node.url, TOKEN, session, timeout=1), FakeClock(), FAST)
    async with shipping(shipper):
        shipper.emit("g", "TASK", "before")
        await until(lambda: node.messages("g") == ["before"])
        await node.stop()
        for i in range(5):
            shipper.emit("g", "TASK", f"while down {i}")
        await asyncio.sleep(0.2)  # several sends fail meanwhile
        assert shipper.held >= 2  # what is not in flight waits in the buffer
        await node.start()
        await until(lambda: len(node.messages("g")) == 5)
    assert node.messages("g") == [f"while down {i}" for i in range(5)]


async def test_a_batch_sent_again_is_taken_once() -> None:
    logs = LogStore(FakeClock())
    line = LogLine("g", "TASK", "0", "once", "OUT", 1)
    batch = LogBatch(source="s", seq=0, lines=(line,))
    await logs.ship_logs(batch)
    await logs.ship_logs(batch)
    await logs.ship_logs(LogBatch(source="other", seq=0, lines=(line,)))
    assert [x.message for x in logs.tail("g", 10)] == ["once", "once"]


async def test_the_buffer_is_bounded_and_says_what_it_dropped(
    node: Node, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ShippingSettings(interval=0.01, batch_lines=100, buffer_lines=4)
    shipper = LogShipper(HttpBBS(node.url, TOKEN, session), FakeClock(), settings)
    for i in range(10):
        shipper.emit("g", "TASK", f"line {i}")
    assert shipper.held == 4
    async with shipping(shipper):
        await until(lambda: len(node.messages("g")) == 4)
    assert node.messages("g") == ["line 6", "line 7", "line 8", "line 9"]
    assert "log-lines-dropped" in caplog.text
    assert "count=6" in caplog.text


async def test_a_stopping_shipper_sends_what_it_holds(
    node: Node, session: aiohttp.ClientSession
) -> None:
    slow = ShippingSettings(interval=30.0, final_flush=2.0)
    shipper = LogShipper(HttpBBS(node.url, TOKEN, session), FakeClock(), slow)
    async with shipping(shipper):
        await asyncio.sleep(0.05)
        shipper.emit("g", "TASK", "last words")
    assert node.messages("g") == ["last words"]


async def test_a_shipper_with_the_wrong_token_is_refused(
    node: Node, session: aiohttp.ClientSession
) -> None:
    shipper = LogShipper(HttpBBS(node.url, "wrong", session), FakeClock(), FAST)
    async with shipping(shipper):
        shipper.emit("g", "TASK", "x")
        await asyncio.sleep(0.2)
    assert node.messages("g") == []
    assert shipper.held == 0  # in flight, retried, never taken
