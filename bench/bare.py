"""The api benchmark's yardstick: a bare aiohttp server answering ``GET /v1/tasks/{guid}``
with the very bytes diego answers, from a dict, and nothing else.

    python -m bench.bare DATA_DIR GUIDS_FILE

reads the Tasks named in GUIDS_FILE (one guid a line) from the store in DATA_DIR,
renders each as diego's handler does, then listens on a loopback port and prints
``bare-listening url=URL`` on stdout. It runs in its own process, as the node does,
so neither shares a loop with the benchmark's client.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import sqlalchemy as sa
from aiohttp import web

from diego.api.json import dumps
from diego.models.codec import encode
from diego.state.schema import tasks
from diego.state.store import Store, _task, sqlite_url


async def bodies(data_dir: Path, guids: list[str]) -> dict[str, bytes]:
    """The body diego's ``GET /v1/tasks/{guid}`` gives for each guid."""
    store = await Store.open(sqlite_url(data_dir))
    found: dict[str, bytes] = {}
    try:
        async with store.engine.connect() as conn:
            for i in range(0, len(guids), 500):
                query = sa.select(tasks).where(tasks.c.guid.in_(guids[i : i + 500]))
                for row in await conn.execute(query):
                    found[row.guid] = dumps(encode(_task(row))).encode()
    finally:
        await store.close()
    return found


def app(by_guid: dict[str, bytes]) -> web.Application:
    """The bare application: one route, a dict lookup."""

    async def get_task(request: web.Request) -> web.Response:
        body = by_guid.get(request.match_info["task_guid"])
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="application/json", charset="utf-8")

    application = web.Application()
    application.router.add_get("/v1/tasks/{task_guid}", get_task)
    return application


async def serve(data_dir: Path, guids: list[str]) -> None:
    """Load the bodies, then serve them until killed."""
    runner = web.AppRunner(app(await bodies(data_dir, guids)), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"bare-listening url=http://{host}:{port}", flush=True)
    await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1]), sorted(set(Path(sys.argv[2]).read_text().split()))))
