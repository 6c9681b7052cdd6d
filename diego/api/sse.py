"""Server-sent-event streams of a bus subscription, shared by /v1/events and /v1/logs.

A stream opens with a ``: subscribed`` comment (from then on nothing is missed),
sends ``first`` items, then each new item as it comes, with a keep-alive comment
whenever it has been idle for the heartbeat interval. A subscription the bus
dropped for falling behind ends with a ``dropped`` event, so a client knows it
missed items. Open streams are ended when the server shuts down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from aiohttp import web

from diego.api.json import dumps
from diego.api.keys import SETTINGS_KEY, STREAMS_KEY
from diego.bus import SubscriberDropped, Subscription

T = TypeVar("T")

OPEN_COMMENT = b": subscribed\n\n"
HEARTBEAT_COMMENT = b": keep-alive\n\n"
DROPPED = {"message": "this stream fell behind and missed events"}


def sse(event_id: int, event_type: str, data: str) -> bytes:
    """One server-sent event."""
    return f"id: {event_id}\nevent: {event_type}\ndata: {data}\n\n".encode()


async def stream(
    request: web.Request,
    subscription: Subscription[T],
    render: Callable[[T], tuple[str, Any]],
    first: Iterable[T] = (),
    follow: bool = True,
) -> web.StreamResponse:
    """Stream ``first`` then ``subscription`` to the client, each item as (type, data)."""
    heartbeat = request.app[SETTINGS_KEY].events.heartbeat_interval
    streams = request.app[STREAMS_KEY]
    streams.subscriptions.add(subscription)
    try:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        await response.write(OPEN_COMMENT)
        event_id = 0
        for item in first:
            event_id += 1
            await response.write(sse(event_id, *_rendered(render, item)))
        while follow:
            try:
                # (asyncio.timeout, not wait_for: on 3.11 wait_for loses a
                # cancellation that arrives with an event, and a busy stream
                # would outlive the node's shutdown.)
                async with asyncio.timeout(heartbeat):
                    item = await subscription.get()
            except TimeoutError:
                await response.write(HEARTBEAT_COMMENT)
                continue
            except StopAsyncIteration:
                break
            except SubscriberDropped:
                await response.write(sse(event_id + 1, "dropped", dumps(DROPPED)))
                break
            event_id += 1
            await response.write(sse(event_id, *_rendered(render, item)))
    except ConnectionResetError:
        # The client went away: the usual end of a followed stream, not an error.
        pass
    finally:
        subscription.close()
        streams.subscriptions.discard(subscription)
    return response


def _rendered(render: Callable[[T], tuple[str, Any]], item: T) -> tuple[str, str]:
    event_type, data = render(item)
    return event_type, dumps(data)
