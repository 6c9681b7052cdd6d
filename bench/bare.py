"""The benchmarks' yardstick: a bare aiohttp server answering with the very bytes
diego answers, and doing nothing else.

    python -m bench.bare DATA_DIR GUIDS_FILE
    python -m bench.bare create ANSWER_FILE

The first (the api benchmark's) answers ``GET /v1/tasks/{guid}`` from a dict; it

reads the Tasks named in GUIDS_FILE (one guid a line) from the store in DATA_DIR and
renders each as diego's handler does. The second (the burst benchmark's) answers
``POST /v1/tasks`` by reading and parsing the body, then sending ANSWER_FILE's
bytes. Each listens on a loopback port and prints ``bare-listening url=URL`` on
stdout. It runs in its own process, as the node does,
so neither shares a loop with the benchmark's client.
"""

from __future__ import annotations

import asyncio
import json
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


def create_app(answer: bytes) -> web.Application:
    """The bare create application: parse the body, answer ``answer``."""

    async def create_task(request: web.Request) -> web.Response:
        json.loads(await request.read())
        return web.Response(
            body=answer, status=201, content_type="application/json", charset="utf-8"
        )

    application = web.Application()
    application.router.add_post("/v1/tasks", create_task)
    return application


async def serve(application: web.Application) -> None:
    """Serve ``application`` until killed."""
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"bare-listening url=http://{host}:{port}", flush=True)
    await asyncio.Future()


async def main(argv: list[str], named: str) -> None:
    """Build the application the arguments name (``named``: the file's text), then
    serve it."""
    if argv[0] == "create":
        await serve(create_app(named.encode()))
    else:
        await serve(app(await bodies(Path(argv[0]), sorted(set(named.split())))))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:], Path(sys.argv[2]).read_text()))
