"""The Δ between one DesiredLRP and its ActualLRPs: which indices to start, which
instances to stop.

Given a DesiredLRP that asks for ``N`` instances and the ActualLRPs of that process:

    ActualLRP (not evacuating)            action
    ------------------------------------  ------------------------------------
    none at some index ``i < N``          start ``i``
    one at an index ``i >= N``            stop it, whatever its state
    one at an index ``i < N``             nothing: it is wanted
    an evacuating copy, at any index      nothing: evacuation is its cell's business

An index whose only ActualLRP is an evacuating copy is started: the copy is on its
way out. Both the API (on a new or scaled DesiredLRP) and the converger compute Δs
this way; what a stop means for each state is the caller's business (a rep stops a
CLAIMED or RUNNING instance, an UNCLAIMED or CRASHED one is simply deleted).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import attrs

from diego.models.lrp import ActualLRP


def actual_order(actual: ActualLRP) -> tuple[str, int, bool, str, str, str, int]:
    """A total order on ActualLRPs: process, index, then the rest, for sorted output."""
    return (
        actual.process_guid,
        actual.index,
        actual.evacuating,
        actual.instance_guid,
        actual.cell_id,
        actual.state.value,
        actual.since,
    )


@attrs.frozen
class Delta:
    """What to do so that one DesiredLRP's instances match its ActualLRPs."""

    start: tuple[int, ...] = ()
    """Missing indices, ascending: create an UNCLAIMED ActualLRP and auction it."""
    stop: tuple[ActualLRP, ...] = ()
    """Instances at indices no longer desired, by index."""

    @property
    def is_empty(self) -> bool:
        """Whether the instances already match."""
        return not (self.start or self.stop)


def delta(
    desired_instances: int, actuals: Iterable[ActualLRP], max_start: int | None = None
) -> Delta:
    """The Δ between ``desired_instances`` and the ActualLRPs of that one process.

    ``max_start`` bounds ``start`` to the lowest that many missing indices, so that a
    huge count (a record stored under looser limits) costs bounded memory; the rest
    are found by the next Δ, once these exist.

    Raises ValueError for a negative count or ActualLRPs of more than one process.
    """
    if desired_instances < 0:
        raise ValueError(f"desired_instances must be at least 0, not {desired_instances}")
    every = list(actuals)
    guids = sorted({a.process_guid for a in every})
    if len(guids) > 1:
        raise ValueError(f"actuals of more than one process: {guids}")
    present = [a for a in every if not a.evacuating]
    indices = {a.index for a in present}
    missing = (i for i in range(desired_instances) if i not in indices)
    return Delta(
        start=tuple(itertools.islice(missing, max_start)),
        stop=tuple(sorted((a for a in present if a.index >= desired_instances), key=actual_order)),
    )
