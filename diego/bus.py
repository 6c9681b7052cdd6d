"""In-process publish/subscribe for events.

Publishing never waits: each subscriber has a bounded queue, and a subscriber
whose queue is full is dropped (with a log line) rather than allowed to slow the
publisher. A dropped subscription ends its iteration with ``SubscriberDropped``,
so a stream can tell its client it missed events instead of silently skipping.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

import attrs

log = logging.getLogger("diego.bus")

E = TypeVar("E")

DEFAULT_QUEUE_SIZE = 1024


class SubscriberDropped(Exception):
    """The subscription fell too far behind and was dropped; events were lost."""


class _Closed:
    """Queued to wake a subscriber whose subscription ended."""

    def __init__(self, dropped: bool) -> None:
        self.dropped = dropped


@attrs.frozen
class BusStatistics:
    """A snapshot of the bus: subscribers now, published and dropped so far."""

    subscribers: int
    published: int
    dropped_subscribers: int


class Subscription(Generic[E]):
    """One subscriber's queue of events. Iterate it; ``close()`` unsubscribes."""

    def __init__(
        self, bus: Bus[E], maxsize: int, accept: Callable[[E], bool] | None, name: str
    ) -> None:
        self._bus = bus
        # One slot more than promised, kept for the closing marker.
        self._queue: asyncio.Queue[E | _Closed] = asyncio.Queue(maxsize + 1)
        self._maxsize = maxsize
        self._accept = accept
        self.name = name
        self.closed = False

    def _offer(self, event: E) -> bool:
        """Queue ``event``; False when the queue is full."""
        if self._accept is not None and not self._accept(event):
            return True
        if self._queue.qsize() >= self._maxsize:
            return False
        self._queue.put_nowait(event)
        return True

    def _end(self, dropped: bool) -> None:
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(_Closed(dropped))

    def close(self) -> None:
        """Unsubscribe; iteration ends once the queued events are read."""
        self._bus._remove(self)
        self._end(dropped=False)

    async def get(self) -> E:
        """The next event; StopAsyncIteration at the end, SubscriberDropped if dropped."""
        item = await self._queue.get()
        if isinstance(item, _Closed):
            self._queue.put_nowait(item)  # later calls see the end too
            if item.dropped:
                raise SubscriberDropped(self.name)
            raise StopAsyncIteration
        return item

    def __aiter__(self) -> AsyncIterator[E]:
        return self

    async def __anext__(self) -> E:
        return await self.get()

    def __enter__(self) -> Subscription[E]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Bus(Generic[E]):
    """Fans events out to subscribers, never blocking the publisher."""

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._subscribers: list[Subscription[E]] = []
        self._published = 0
        self._dropped = 0

    def subscribe(
        self,
        accept: Callable[[E], bool] | None = None,
        *,
        maxsize: int | None = None,
        name: str = "subscriber",
    ) -> Subscription[E]:
        """A new subscription to every event from now on (``accept`` filters them)."""
        sub = Subscription(self, maxsize or self.queue_size, accept, name)
        self._subscribers.append(sub)
        return sub

    def publish(self, event: E) -> None:
        """Hand ``event`` to every subscriber; drop those that cannot keep up."""
        self._published += 1
        for sub in tuple(self._subscribers):
            if not sub._offer(event):
                self._dropped += 1
                log.warning("slow-subscriber-dropped name=%s queue=%d", sub.name, sub._maxsize)
                self._remove(sub)
                sub._end(dropped=True)

    def close(self) -> None:
        """End every subscription (at shutdown)."""
        for sub in tuple(self._subscribers):
            sub.close()

    def statistics(self) -> BusStatistics:
        """A snapshot of the bus's counters."""
        return BusStatistics(len(self._subscribers), self._published, self._dropped)

    def _remove(self, sub: Subscription[E]) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)


async def follow(
    bus: Bus[E],
    accept: Callable[[E], bool],
    handle: Callable[[E], Awaitable[None]],
    *,
    name: str,
    catch_up: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Hand each event ``accept`` takes to ``handle``, until cancelled or the bus ends.

    A component that falls behind is dropped by the bus like any subscriber; here
    that is no end: it subscribes again and runs ``catch_up`` (which reads the
    store, the durable source, for whatever the lost events said), so a burst of
    events never stops a node's part. ``catch_up`` also runs once at the start,
    after subscribing, so that nothing falls between the two.
    """
    while True:
        subscription = bus.subscribe(accept, name=name)
        try:
            if catch_up is not None:
                await catch_up()
            async for event in subscription:
                await handle(event)
            return
        except SubscriberDropped:
            log.warning("subscriber-fell-behind name=%s: subscribing again, catching up", name)
        finally:
            subscription.close()
