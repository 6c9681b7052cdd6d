"""/v1/logs/{log_guid}: container output as server-sent events."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from diego.api.keys import LOGS_KEY
from diego.api.routes import Param, Reply, Route
from diego.api.sse import stream
from diego.models.errors import InvalidRequest
from diego.models.logs import LogLine

DEFAULT_TAIL = 100


async def stream_logs(request: web.Request) -> web.StreamResponse:
    """The last ``tail`` lines of a log_guid, then (with follow) each new one."""
    logs = request.app[LOGS_KEY]
    log_guid = request.match_info["log_guid"]
    tail = _int(request.query.get("tail"), "tail", DEFAULT_TAIL)
    follow = request.query.get("follow", "true").lower() not in ("0", "false", "no")
    subscription = logs.follow(log_guid)  # before the tail: no line falls in between
    return await stream(request, subscription, _render, logs.tail(log_guid, tail), follow)


def _render(line: LogLine) -> tuple[str, Any]:
    return "log", line.data()


def _int(text: str | None, name: str, default: int) -> int:
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()):
        raise InvalidRequest(f"{name}: must be a whole number (0 or more)")
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
                "tail",
                "query",
                f"recent lines to send first (default {DEFAULT_TAIL})",
                "integer",
                {"minimum": 0},
            ),
            Param("follow", "query", "keep streaming new lines (default true)", "boolean"),
        ),
        replies=(
            Reply(200, "the log stream", "text/event-stream"),
            Reply(400, "a bad tail (InvalidRequest)", "Error"),
        ),
    )
]
