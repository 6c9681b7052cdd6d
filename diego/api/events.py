"""/v1/events: the bus as a server-sent-event stream.

Each event is ``id: N``, ``event: TYPE`` and ``data: JSON``. A comment line is
sent as soon as the subscription is live (so a client knows it will miss
nothing from then on) and again whenever the stream has been idle for the
heartbeat interval. A client that reads too slowly is dropped by the bus; it is
told so with a final ``dropped`` event before the stream ends.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from diego.api.json import dumps
from diego.api.keys import BBS_KEY, SETTINGS_KEY, STREAMS_KEY
from diego.api.routes import Param, Reply, Route
from diego.bus import SubscriberDropped
from diego.models.events import Event, event_domain

OPEN_COMMENT = b": subscribed\n\n"
HEARTBEAT_COMMENT = b": keep-alive\n\n"


def sse(event_id: int, event_type: str, data: str) -> bytes:
    """One server-sent event."""
    return f"id: {event_id}\nevent: {event_type}\ndata: {data}\n\n".encode()


async def stream_events(request: web.Request) -> web.StreamResponse:
    """Stream every event (of a domain) from now until the client or server goes."""
    bus = request.app[BBS_KEY].bus
    settings = request.app[SETTINGS_KEY].events
    domain = request.query.get("domain")

    def of_domain(event: Event) -> bool:
        return event_domain(event) == domain

    subscription = bus.subscribe(
        of_domain if domain else None, name=f"events-stream remote={request.remote}"
    )
    streams = request.app[STREAMS_KEY]
    streams.subscriptions.add(subscription)
    try:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        await response.write(OPEN_COMMENT)
        event_id = 0
        while True:
            try:
                event = await asyncio.wait_for(subscription.get(), settings.heartbeat_interval)
            except TimeoutError:
                await response.write(HEARTBEAT_COMMENT)
                continue
            except StopAsyncIteration:
                break
            except SubscriberDropped:
                message = dumps({"message": "this stream fell behind and missed events"})
                await response.write(sse(event_id + 1, "dropped", message))
                break
            event_id += 1
            await response.write(sse(event_id, event.TYPE, dumps(event.data())))
    finally:
        subscription.close()
        streams.subscriptions.discard(subscription)
    return response


ROUTES = [
    Route(
        "GET",
        "/v1/events",
        stream_events,
        "streamEvents",
        "A server-sent-event stream of task_created, task_changed (before and after) "
        "and task_removed events.",
        params=(Param("domain", "query", "only the events of this domain's Tasks"),),
        replies=(Reply(200, "the event stream", "text/event-stream"),),
    )
]
