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
from diego.api.errors import Handler, json_errors
from diego.api.keys import SETTINGS_KEY
from diego.cell.bbs_http import HttpBBS
from diego.cell.log_shipping import LogShipper, ShippingSettings
from diego.clock import FakeClock
from diego.config import Settings
from diego.logs import LogStore
from diego.models.logs import LogBatch, LogLine

TOKEN = "log-link-token"
FAST = ShippingSettings(interval=0.01, batch_lines=3, retry_interval=0.05, final_flush=1.0)


class Node:
    """A control node's log store behind its internal API, which can be stopped and
    started again on the same port (a node restart); its answers come ``slow`` seconds
    after it has taken a batch."""

    def __init__(self, max_body: int = 1024 * 1024) -> None:
        self.max_body = max_body
        self.slow = 0.0
        self.logs = LogStore(FakeClock())
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self.logs = LogStore(FakeClock())  # a restarted node remembers nothing
        app = web.Application(
            middlewares=[json_errors, self._slowly], client_max_size=self.max_body
        )
        app[SETTINGS_KEY] = Settings()
        bbs_for_cells.add_routes(app, object(), TOKEN, self.logs)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    @web.middleware
    async def _slowly(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        await asyncio.sleep(self.slow)
        return response

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
    settings = ShippingSettings(interval=0.01, batch_lines=100, buffer_bytes=4 * 111)
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
    assert shipper.held == 1  # kept, sent again and again: a 401 is a link not yet right


async def test_batches_are_bounded_in_bytes_under_the_nodes_body_limit(
    session: aiohttp.ClientSession,
) -> None:
    """Long lines (a container's 60 KB lines) go in batches small enough for the node."""
    node = Node(max_body=200 * 1024)
    await node.start()
    try:
        settings = ShippingSettings(interval=0.01, batch_bytes=150 * 1024)
        shipper = LogShipper(HttpBBS(node.url, TOKEN, session), FakeClock(), settings)
        async with shipping(shipper):
            for i in range(20):
                shipper.emit("g", "TASK", f"{i:02d}" + "x" * 60_000)
            await until(lambda: len(node.messages("g")) == 20)
        assert [m[:2] for m in node.messages("g")] == [f"{i:02d}" for i in range(20)]
    finally:
        await node.stop()


async def test_a_batch_the_node_refuses_is_dropped_counted_and_shipping_goes_on(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    node = Node(max_body=4096)
    await node.start()
    try:
        settings = ShippingSettings(interval=0.01, batch_lines=1, retry_interval=0.05)
        shipper = LogShipper(HttpBBS(node.url, TOKEN, session), FakeClock(), settings)
        async with shipping(shipper):
            shipper.emit("g", "TASK", "y" * 10_000)  # over the node's limit
            shipper.emit("g", "TASK", "after")
            await until(lambda: node.messages("g") == ["after"])
        assert "log-batch-refused lines=1" in caplog.text
        assert "log-lines-dropped" in caplog.text
    finally:
        await node.stop()


async def test_a_stopping_shipper_sends_its_batch_in_flight_and_the_rest(
    node: Node, session: aiohttp.ClientSession
) -> None:
    """Stopped while a batch's answer is on its way: the batch is sent again under its
    own seq (the node takes it once) and the lines after it follow."""
    node.slow = 0.5
    settings = ShippingSettings(interval=0.01, final_flush=5.0)
    shipper = LogShipper(HttpBBS(node.url, TOKEN, session), FakeClock(), settings)
    async with shipping(shipper):
        shipper.emit("g", "TASK", "b")
        await until(lambda: node.messages("g") == ["b"])  # taken; its answer still coming
        shipper.emit("g", "TASK", "c")
    assert node.messages("g") == ["b", "c"]
