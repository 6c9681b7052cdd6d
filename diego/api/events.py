"""/v1/events: the bus as a server-sent-event stream.

Each event is ``id: N``, ``event: TYPE`` and ``data: JSON``. A comment line is
sent as soon as the subscription is live (so a client knows it will miss
nothing from then on) and again whenever the stream has been idle for the
heartbeat interval. A client that reads too slowly is dropped by the bus; it is
told so with a final ``dropped`` event before the stream ends.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from diego.api.keys import BBS_KEY
from diego.api.routes import Param, Reply, Route
from diego.api.sse import stream
from diego.models.events import EVENT_TYPES, Event, event_domain


async def stream_events(request: web.Request) -> web.StreamResponse:
    """Stream every event (of a domain) from now until the client or server goes."""
    domain = request.query.get("domain")

    def of_domain(event: Event) -> bool:
        return event_domain(event) == domain

    subscription = request.app[BBS_KEY].bus.subscribe(
        of_domain if domain else None, name=f"events-stream remote={request.remote}"
    )
    return await stream(request, subscription, _render)


def _render(event: Event) -> tuple[str, Any]:
    return event.TYPE, event.data()


ROUTES = [
    Route(
        "GET",
        "/v1/events",
        stream_events,
        "streamEvents",
        "A server-sent-event stream of every change: each event's `event:` line is its "
        "type and its `data:` line the JSON of the component schema `Event.TYPE`: "
        + ", ".join(EVENT_TYPES)
        + ".",
        params=(Param("domain", "query", "only the events of this domain's work"),),
        replies=(Reply(200, "the event stream", "text/event-stream"),),
    )
]
