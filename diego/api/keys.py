"""The typed keys under which the app keeps what its handlers need."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from diego.bus import Subscription
from diego.config import Settings
from diego.logs import LogStore
from diego.scheduling.cells import CellDirectory
from diego.scheduling.lrps import LRPController
from diego.state.bbs import BBS

BBS_KEY = web.AppKey("bbs", BBS)
SETTINGS_KEY = web.AppKey("settings", Settings)


class OpenStreams:
    """The subscriptions of open event streams, ended at shutdown."""

    def __init__(self) -> None:
        self.subscriptions: set[Subscription[Any]] = set()

    def close_all(self) -> None:
        """End every open stream."""
        for subscription in tuple(self.subscriptions):
            subscription.close()


STREAMS_KEY = web.AppKey("streams", OpenStreams)
CELLS_KEY = web.AppKey("cells", CellDirectory)
"""The cells of this node: its own, and those on other machines."""

LOGS_KEY = web.AppKey("logs", LogStore)
"""Container logs."""

LRPS_KEY = web.AppKey("lrps", LRPController)
"""Desires, scales and stops LRPs."""
