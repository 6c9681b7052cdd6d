"""/v1/logs/{log_guid}: container output as server-sent events."""

from __future__ import annotations

import asyncio

from aiohttp import web

from diego.api.events import HEARTBEAT_COMMENT, OPEN_COMMENT, sse
from diego.api.json import dumps
from diego.api.keys import LOGS_KEY, SETTINGS_KEY, STREAMS_KEY
from diego.api.routes import Param, Reply, Route
from diego.bus import SubscriberDropped
from diego.models.errors import InvalidRequest

DEFAULT_TAIL = 100


async def stream_logs(request: web.Request) -> web.StreamResponse:
    """The last ``tail`` lines of a log_guid, then (with follow) each new one."""
    logs = request.app[LOGS_KEY]
    log_guid = request.match_info["log_guid"]
    tail = _int(request.query.get("tail"), "tail", DEFAULT_TAIL)
    follow = request.query.get("follow", "true").lower() not in ("0", "false", "no")
    heartbeat = request.app[SETTINGS_KEY].events.heartbeat_interval
    subscription = logs.follow(log_guid)  # before the tail: no line falls in between
    streams = request.app[STREAMS_KEY]
    streams.subscriptions.add(subscription)
    try:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        await response.write(OPEN_COMMENT)
        line_id = 0
        for line in logs.tail(log_guid, tail):
            line_id += 1
            await response.write(sse(line_id, "log", dumps(line.data())))
        while follow:
            try:
                line = await asyncio.wait_for(subscription.get(), heartbeat)
            except TimeoutError:
                await response.write(HEARTBEAT_COMMENT)
                continue
            except (StopAsyncIteration, SubscriberDropped):
                break
            line_id += 1
            await response.write(sse(line_id, "log", dumps(line.data())))
    finally:
        subscription.close()
        streams.subscriptions.discard(subscription)
    return response


def _int(text: str | None, name: str, default: int) -> int:
    if text is None:
        return default
    if not text.isdigit():
        raise InvalidRequest(f"{name}: must be a whole number")
    return int(text)


ROUTES = [
    Route(
        "GET",
        "/v1/logs/{log_guid}",
        stream_logs,
        "streamLogs",
        "Container output tagged with this log_guid, as server-sent 'log' events: the "
        "last `tail` lines kept, then every new line unless follow=false.",
        params=(
            Param("log_guid", "path", "the Task's log_guid"),
            Param(
                "tail", "query", f"recent lines to send first (default {DEFAULT_TAIL})", "integer"
            ),
            Param("follow", "query", "keep streaming new lines (default true)", "boolean"),
        ),
        replies=(
            Reply(200, "the log stream", "text/event-stream"),
            Reply(400, "a bad tail (InvalidRequest)", "Error"),
        ),
    )
]
