"""The composition root: builds every part a node runs and runs them together.

Each part exposes ``async run()`` and stops cleanly when cancelled; the node
runs them under one TaskGroup, so a part that fails stops the node rather than
leaving it half alive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web

from diego.api.app import make_app
from diego.bus import Bus
from diego.clock import SystemClock
from diego.config import Settings
from diego.models.events import Event
from diego.state.bbs import BBS
from diego.state.store import Store, sqlite_url

log = logging.getLogger("diego.node")


class ApiServer:
    """The HTTP API on its listening address."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.url = ""

    async def run(self, on_listening: Callable[[str], None] | None = None) -> None:
        """Serve until cancelled."""
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            host, port = runner.addresses[0][:2]
            self.url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
            log.info("api-listening url=%s", self.url)
            if on_listening is not None:
                on_listening(self.url)
            await asyncio.Future()  # until cancelled
        finally:
            await runner.cleanup()


async def serve(settings: Settings, on_listening: Callable[[str], None] | None = None) -> None:
    """Run a whole node until cancelled."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = await Store.open(settings.store.url or sqlite_url(settings.data_dir))
    try:
        bus: Bus[Event] = Bus(settings.events.queue_size)
        bbs = BBS(store, bus, SystemClock())
        api = ApiServer(make_app(bbs, settings), settings.server.host, settings.server.port)
        async with asyncio.TaskGroup() as parts:
            parts.create_task(api.run(on_listening), name="api")
    finally:
        await store.close()
        log.info("node-stopped")
