"""The typed keys under which the app keeps what its handlers need."""

from __future__ import annotations

from aiohttp import web

from diego.bus import Subscription
from diego.config import Settings
from diego.models.events import Event
from diego.state.bbs import BBS

BBS_KEY = web.AppKey("bbs", BBS)
SETTINGS_KEY = web.AppKey("settings", Settings)


class OpenStreams:
    """The subscriptions of open event streams, ended at shutdown."""

    def __init__(self) -> None:
        self.subscriptions: set[Subscription[Event]] = set()

    def close_all(self) -> None:
        """End every open stream."""
        for subscription in tuple(self.subscriptions):
            subscription.close()


STREAMS_KEY = web.AppKey("streams", OpenStreams)
