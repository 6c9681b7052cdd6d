"""The in-process bus: fan-out, filters, bounded queues, dropping slow subscribers."""

from __future__ import annotations

import asyncio
import logging

import pytest

from diego.bus import Bus, SubscriberDropped, follow


async def test_every_subscriber_gets_every_event_in_order() -> None:
    """Each subscription sees all events published after it, in publish order."""
    bus: Bus[int] = Bus()
    first, second = bus.subscribe(), bus.subscribe()
    for n in range(5):
        bus.publish(n)
    assert [await first.get() for _ in range(5)] == list(range(5))
    assert [await second.get() for _ in range(5)] == list(range(5))


async def test_events_before_subscribing_are_not_seen() -> None:
    """A subscription starts at the moment it is made."""
    bus: Bus[int] = Bus()
    bus.publish(1)
    sub = bus.subscribe()
    bus.publish(2)
    assert await sub.get() == 2


async def test_filter_keeps_only_accepted_events() -> None:
    """accept= keeps the events it returns True for, and filtered ones use no space."""
    bus: Bus[int] = Bus()
    evens = bus.subscribe(lambda n: n % 2 == 0, maxsize=2)
    for n in range(5):
        bus.publish(n)
    assert [await evens.get() for _ in range(2)] == [0, 2]
    assert bus.statistics().dropped_subscribers == 1  # 4 overflowed the queue of 2


async def test_slow_subscriber_is_dropped_without_blocking(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A full queue drops its subscriber with a log line; others keep receiving."""
    bus: Bus[int] = Bus()
    slow = bus.subscribe(maxsize=3, name="slowpoke")
    fast = bus.subscribe(maxsize=100)
    with caplog.at_level(logging.WARNING, logger="diego.bus"):
        for n in range(10):
            bus.publish(n)  # never awaits: the publisher cannot be held up
    assert "slow-subscriber-dropped name=slowpoke" in caplog.text
    assert [await slow.get() for _ in range(3)] == [0, 1, 2]
    with pytest.raises(SubscriberDropped):
        await slow.get()
    with pytest.raises(SubscriberDropped):
        await slow.get()  # stays ended
    assert [await fast.get() for _ in range(10)] == list(range(10))
    stats = bus.statistics()
    assert (stats.subscribers, stats.published, stats.dropped_subscribers) == (1, 10, 1)


async def test_close_unsubscribes_and_ends_iteration() -> None:
    """close() stops delivery; iteration ends after what was already queued."""
    bus: Bus[int] = Bus()
    sub = bus.subscribe()
    bus.publish(1)
    sub.close()
    bus.publish(2)
    assert [n async for n in sub] == [1]
    assert bus.statistics().subscribers == 0


async def test_bus_close_ends_every_subscription() -> None:
    """Bus.close() ends all subscriptions, as at shutdown."""
    bus: Bus[int] = Bus()
    subs = [bus.subscribe() for _ in range(3)]
    bus.close()
    for sub in subs:
        assert [n async for n in sub] == []


async def test_context_manager_unsubscribes() -> None:
    """Leaving a ``with`` block unsubscribes."""
    bus: Bus[int] = Bus()
    with bus.subscribe():
        assert bus.statistics().subscribers == 1
    assert bus.statistics().subscribers == 0


async def test_a_follower_that_falls_behind_catches_up_and_goes_on() -> None:
    """A part of the node dropped by the bus used to end with SubscriberDropped, and
    took the whole node down with it; now it subscribes again and catches up."""
    bus: Bus[int] = Bus(queue_size=2)
    catch_ups: list[int] = []
    handled: list[int] = []
    gate, caught_up, got_99 = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def catch_up() -> None:
        catch_ups.append(len(handled))
        if len(catch_ups) == 2:
            caught_up.set()

    async def handle(event: int) -> None:
        await gate.wait()
        handled.append(event)
        if event == 99:
            got_99.set()

    follower = asyncio.create_task(follow(bus, lambda e: True, handle, name="t", catch_up=catch_up))
    await asyncio.sleep(0)
    for n in range(10):  # more than the queue holds while the handler waits
        bus.publish(n)
    gate.set()
    await asyncio.wait_for(caught_up.wait(), 10)
    bus.publish(99)
    await asyncio.wait_for(got_99.wait(), 10)
    assert not follower.done()
    follower.cancel()
    assert bus.statistics().dropped_subscribers == 1
