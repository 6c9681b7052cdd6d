"""Time, injected: code that needs the time is handed a Clock and never reads one."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Wall-clock time as nanoseconds since the Unix epoch (Diego's timestamps)."""

    def now(self) -> int:
        """The current time in nanoseconds."""
        ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> int:
        """The current time in nanoseconds."""
        return time.time_ns()


class FakeClock:
    """A clock that moves only when told to; for tests and simulations."""

    def __init__(self, start: int = 1_700_000_000_000_000_000) -> None:
        self._now = start

    def now(self) -> int:
        """The current (fake) time in nanoseconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self._now += int(seconds * 1_000_000_000)
