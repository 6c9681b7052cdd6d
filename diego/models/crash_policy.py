"""When a crashed ActualLRP is started again: Diego's restart calculator.

A crash is counted before it is judged: the lifecycle's crash step adds one to the
instance's ``crash_count`` (see "Reset" below), then asks :meth:`CrashPolicy.restart_now`.
A count below ``immediate_restarts`` goes straight back to UNCLAIMED and is auctioned
at once; any other count leaves the instance CRASHED, and the converger restarts it
once :meth:`CrashPolicy.should_restart` says its backoff has passed, counted from the
crash. Because the count is raised first, ``immediate_restarts = 3`` means the first
two crashes restart at once and the third waits (exactly as Diego's BBS counts).

With the defaults (a 30 s base doubling per crash, capped at 16 min, 200 restarts)
the wait after the crash that brings the count to ``n`` is::

    crash_count n   state after the crash   wait before the restart
    -------------   ---------------------   -----------------------
    0               (never crashed)         0 (at once)
    1               UNCLAIMED               0 (at once, by the crash step)
    2               UNCLAIMED               0 (at once, by the crash step)
    3               CRASHED                 30 s
    4               CRASHED                 1 min
    5               CRASHED                 2 min
    6               CRASHED                 4 min
    7               CRASHED                 8 min
    8 ... 199       CRASHED                 16 min
    200 and more    CRASHED                 never

As in Diego the doubling stops after ``floor(log2(ceil(max_backoff / base)))``
doublings (5 with the defaults) and the result is then capped at ``max_backoff``, and
a CRASHED instance may be restarted from the moment ``last_crashed_at + wait`` is
reached (inclusive: ``now - last_crashed_at >= wait``).

Reset: a policy never resets a count; that is the lifecycle's crash step, which reads
``reset_after_running_s`` from here. When an instance crashes after it has been
RUNNING for more than that long (``now - since > reset_after_running_s``), its new
count is 1 (as if reset to 0, then counted), else its old count plus one.

Times are int nanoseconds since the epoch, durations in the policy are seconds.
"""

from __future__ import annotations

import math

import attrs

NANOS_PER_SECOND = 1_000_000_000


def _nanos(seconds: float) -> int:
    return int(seconds * NANOS_PER_SECOND)


def _at_least_zero(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:  # also refuses NaN
        raise ValueError(f"{attribute.name} must be at least 0, not {value!r}")


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:  # also refuses NaN
        raise ValueError(f"{attribute.name} must be more than 0, not {value!r}")


def _not_below_base(instance: CrashPolicy, attribute: attrs.Attribute[float], value: float) -> None:
    # Diego's RestartCalculator.Validate: the cap cannot be below the first wait.
    if not value >= instance.backoff_base_s:
        raise ValueError(
            f"{attribute.name} must be at least backoff_base_s "
            f"({instance.backoff_base_s!r}), not {value!r}"
        )


def _not_below_immediate(
    instance: CrashPolicy, attribute: attrs.Attribute[int], value: int
) -> None:
    # With fewer restarts than immediate ones, "never" and "at once" would overlap.
    if value < instance.immediate_restarts:
        raise ValueError(
            f"{attribute.name} must be at least immediate_restarts "
            f"({instance.immediate_restarts}), not {value}"
        )


@attrs.frozen
class CrashPolicy:
    """How soon, and how often, a crashed instance is restarted (Diego's defaults)."""

    immediate_restarts: int = attrs.field(default=3, validator=attrs.validators.ge(0))
    """A crash count below this is restarted at once, by the crash step itself."""
    backoff_base_s: float = attrs.field(default=30.0, validator=_positive)
    """The wait after the first crash that is not restarted at once."""
    max_backoff_s: float = attrs.field(default=16 * 60.0, validator=_not_below_base)
    """No wait is longer than this."""
    max_restarts: int = attrs.field(default=200, validator=_not_below_immediate)
    """A crash count of this or more is never restarted."""
    reset_after_running_s: float = attrs.field(default=5 * 60.0, validator=_at_least_zero)
    """Applied by the lifecycle, not here: an instance that crashes after RUNNING longer
    than this starts counting again from 1."""

    @property
    def max_backoff_doublings(self) -> int:
        """How many times the base wait doubles at most (Diego's MaxBackoffCount)."""
        ratio = -(-_nanos(self.max_backoff_s) // _nanos(self.backoff_base_s))  # ceil
        return max(ratio.bit_length() - 1, 0)  # floor(log2), as Go's math.Logb

    def restart_now(self, crash_count: int) -> bool:
        """Whether the crash step puts the instance straight back to UNCLAIMED.

        ``crash_count`` is the count including the crash being handled.
        """
        return crash_count < self.immediate_restarts

    def backoff_ns(self, crash_count: int) -> int:
        """The wait, in nanoseconds after the crash, before a restart (0: at once).

        This is the wait alone; whether a restart happens at all is
        :meth:`should_restart`'s business (see ``max_restarts``).
        """
        if self.restart_now(crash_count):
            return 0
        doublings = min(crash_count - self.immediate_restarts, self.max_backoff_doublings)
        return min(_nanos(self.backoff_base_s) << doublings, _nanos(self.max_backoff_s))

    def should_restart(self, crash_count: int, last_crashed_at: int, now: int) -> bool:
        """Whether the converger restarts a CRASHED instance at ``now`` (nanoseconds)."""
        if self.restart_now(crash_count):
            return True
        if crash_count >= self.max_restarts:
            return False
        return last_crashed_at + self.backoff_ns(crash_count) <= now

    def restart_at(self, crash_count: int, last_crashed_at: int) -> int | None:
        """The first moment (nanoseconds) at which the instance may be restarted; None:
        never."""
        if not self.restart_now(crash_count) and crash_count >= self.max_restarts:
            return None
        return last_crashed_at + self.backoff_ns(crash_count)

    def schedule(self, n: int) -> list[float]:
        """The waits in seconds after crashes 1 to ``n`` (``math.inf``: never restarted)."""
        waits: list[float] = []
        for crash_count in range(1, n + 1):
            at = self.restart_at(crash_count, 0)
            waits.append(math.inf if at is None else at / NANOS_PER_SECOND)
        return waits
