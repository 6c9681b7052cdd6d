"""The ActualLRP lifecycle as pure rules: which transitions are allowed, and what
each verb makes of an ActualLRP. Time is passed in, never read.

    UNCLAIMED ─────────────────claim──────────► CLAIMED
    UNCLAIMED, CLAIMED, CRASHED ─start────────► RUNNING
    CLAIMED, RUNNING ──────────crash──────────► UNCLAIMED (new crash_count < 3)
                                                or CRASHED (otherwise)
    CLAIMED, RUNNING ──────────unclaim────────► UNCLAIMED
    CRASHED ───────────────────restart────────► UNCLAIMED
    UNCLAIMED ─────────────────fail_placement─► UNCLAIMED (placement_error set)
    RUNNING ───────────────────evacuate───────► UNCLAIMED, plus an evacuating copy

An instance is named by its ``(instance_guid, cell_id)`` pair. The rules, and the
answers to the cases Diego leaves loose:

- ``claim``: UNCLAIMED → CLAIMED. CLAIMED by the same instance is a no-op (the
  ActualLRP comes back unchanged); CLAIMED by another is ActualLRPOnDifferentCell.
  RUNNING and CRASHED are refused (Diego would let a RUNNING instance claim itself
  again, a step backwards; and a CRASHED one is the converger's to restart).
- ``start``: UNCLAIMED, CLAIMED (by any instance: the rep's "RUNNING | CLAIMED by ω"
  row) or CRASHED → RUNNING. RUNNING by the same instance is a no-op; RUNNING by
  another is ActualLRPOnDifferentCell.
- ``crash``: CLAIMED or RUNNING by that instance; another instance's is
  ActualLRPOnDifferentCell, UNCLAIMED and CRASHED are refused. The count is raised
  *before* it is judged, as Diego's BBS does (``ShouldRestart(crashCount <
  immediateRestarts)`` on the new count): with ``immediate_restarts = 3`` the 1st and
  2nd crash go back to UNCLAIMED at once, the 3rd and later ones to CRASHED. A crash
  of an instance RUNNING for at least ``reset_after_ns`` (``now - since >=``) first
  resets the count to 0, so it counts as crash number 1.
- ``unclaim``: CLAIMED or RUNNING → UNCLAIMED (its cell vanished, or it evacuates);
  the crash count is kept.
- ``restart``: CRASHED → UNCLAIMED, keeping crash_count, crash_reason and
  last_crashed_at (the backoff goes on from there).
- ``fail_placement``: UNCLAIMED → UNCLAIMED with ``placement_error`` set; a claim or a
  start clears it.
- ``evacuate``: a RUNNING instance is copied aside (``evacuating=True``, unchanged
  otherwise: the same process, RUNNING since the same ``since``) and the instance
  itself is unclaimed, to be placed elsewhere.

``since`` is set to ``now`` on every change of state, and by ``fail_placement`` too
(as Diego does: the converger re-emits a start for an UNCLAIMED instance counted
from its last placement attempt). A no-op changes nothing, not even ``since``.
The verbs take the instance row (``evacuating=False``); an evacuating copy is only
ever removed.
"""

from __future__ import annotations

from typing import Any

import attrs

from diego.models.errors import ActualLRPOnDifferentCell, InvalidActualLRPTransition
from diego.models.lrp import ActualLRP, ActualLRPState, DesiredLRP, DesiredLRPUpdate

U, C, R, X = (
    ActualLRPState.UNCLAIMED,
    ActualLRPState.CLAIMED,
    ActualLRPState.RUNNING,
    ActualLRPState.CRASHED,
)

TRANSITIONS: dict[ActualLRPState, frozenset[ActualLRPState]] = {
    U: frozenset({U, C, R}),  # U → U: fail_placement
    C: frozenset({U, R, X}),
    R: frozenset({U, X}),
    X: frozenset({U, R}),
}
"""Every allowed change of state; anything else is refused. No-ops (a claim or start
repeated by the instance that holds it) are not transitions and write nothing."""

IMMEDIATE_RESTARTS = 3
"""Crashes whose new count is below this go straight back to UNCLAIMED."""

CRASH_RESET_AFTER_NS = 5 * 60 * 1_000_000_000
"""An instance RUNNING at least this long has its crash count reset when it crashes."""


def can_transition(before: ActualLRPState, after: ActualLRPState) -> bool:
    """Whether an ActualLRP may go from ``before`` to ``after``."""
    return after in TRANSITIONS[before]


def new_unclaimed(process_guid: str, index: int, domain: str, now: int) -> ActualLRP:
    """A new UNCLAIMED ActualLRP, to be auctioned."""
    return ActualLRP(process_guid=process_guid, index=index, domain=domain, since=now)


def new_running(
    process_guid: str, index: int, domain: str, instance_guid: str, cell_id: str, now: int
) -> ActualLRP:
    """An ActualLRP a cell reports RUNNING where the BBS had none."""
    return ActualLRP(
        process_guid=process_guid,
        index=index,
        domain=domain,
        state=R,
        instance_guid=instance_guid,
        cell_id=cell_id,
        since=now,
    )


def _refuse(actual: ActualLRP, to: ActualLRPState | None) -> InvalidActualLRPTransition:
    return InvalidActualLRPTransition(actual.process_guid, actual.index, actual.state, to)


def _move(actual: ActualLRP, to: ActualLRPState, now: int, **changes: Any) -> ActualLRP:
    if actual.evacuating or not can_transition(actual.state, to):
        raise _refuse(actual, to)
    return attrs.evolve(actual, state=to, since=now, **changes)


def _held_by(actual: ActualLRP, instance_guid: str, cell_id: str) -> bool:
    return (actual.instance_guid, actual.cell_id) == (instance_guid, cell_id)


def _require_instance(actual: ActualLRP, instance_guid: str, cell_id: str) -> None:
    if not _held_by(actual, instance_guid, cell_id):
        raise ActualLRPOnDifferentCell(
            actual.process_guid,
            actual.index,
            owner=(actual.instance_guid, actual.cell_id),
            caller=(instance_guid, cell_id),
            evacuating=actual.evacuating,
        )


def claim(actual: ActualLRP, instance_guid: str, cell_id: str, now: int) -> ActualLRP:
    """A cell has reserved room for an UNCLAIMED instance and starts it."""
    if actual.state is C and not actual.evacuating:
        _require_instance(actual, instance_guid, cell_id)
        return actual
    if actual.state is not U:
        raise _refuse(actual, C)
    return _move(actual, C, now, instance_guid=instance_guid, cell_id=cell_id, placement_error="")


def start(actual: ActualLRP, instance_guid: str, cell_id: str, now: int) -> ActualLRP:
    """A cell runs the instance: it is RUNNING there, whoever had claimed it."""
    if actual.state is R and not actual.evacuating:
        _require_instance(actual, instance_guid, cell_id)
        return actual
    return _move(actual, R, now, instance_guid=instance_guid, cell_id=cell_id, placement_error="")


def crash(
    actual: ActualLRP,
    instance_guid: str,
    cell_id: str,
    reason: str,
    now: int,
    *,
    immediate_restarts: int = IMMEDIATE_RESTARTS,
    reset_after_ns: int = CRASH_RESET_AFTER_NS,
) -> ActualLRP:
    """The instance's container died on its cell: count the crash, and restart it at
    once (UNCLAIMED) or leave it CRASHED for the converger's backoff."""
    if actual.state not in (C, R) or actual.evacuating:
        raise _refuse(actual, X)
    _require_instance(actual, instance_guid, cell_id)
    count = actual.crash_count
    if actual.state is R and now - actual.since >= reset_after_ns:
        count = 0
    count += 1
    return _move(
        actual,
        U if count < immediate_restarts else X,
        now,
        instance_guid="",
        cell_id="",
        crash_count=count,
        crash_reason=reason,
        last_crashed_at=now,
    )


def unclaim(actual: ActualLRP, now: int) -> ActualLRP:
    """Give up on where a CLAIMED or RUNNING instance is (its cell vanished or left)."""
    if actual.state not in (C, R):
        raise _refuse(actual, U)
    return _move(actual, U, now, instance_guid="", cell_id="")


def restart(actual: ActualLRP, now: int) -> ActualLRP:
    """The converger restarts a CRASHED instance: back to UNCLAIMED, to be auctioned."""
    if actual.state is not X:
        raise _refuse(actual, U)
    return _move(actual, U, now)


def fail_placement(actual: ActualLRP, error: str, now: int) -> ActualLRP:
    """No cell could take an UNCLAIMED instance: say why, and leave it UNCLAIMED."""
    if actual.state is not U:
        raise _refuse(actual, U)
    return _move(actual, U, now, placement_error=error)


def evacuate(
    actual: ActualLRP, instance_guid: str, cell_id: str, now: int
) -> tuple[ActualLRP, ActualLRP]:
    """A RUNNING instance's cell evacuates: its evacuating copy, and the instance
    unclaimed to be started elsewhere.

    The copy equals ``actual`` but for ``evacuating=True``, so ``attrs.evolve(copy,
    evacuating=False)`` is the instance as it was before.
    """
    if actual.state is not R or actual.evacuating:
        raise _refuse(actual, U)
    _require_instance(actual, instance_guid, cell_id)
    return attrs.evolve(actual, evacuating=True), unclaim(actual, now)


def check_removable(actual: ActualLRP, instance_guid: str | None) -> None:
    """Refuse to remove an ActualLRP held by another instance than ``instance_guid``
    (None: whichever holds it; any state may be removed)."""
    if instance_guid is not None and actual.instance_guid != instance_guid:
        raise ActualLRPOnDifferentCell(
            actual.process_guid,
            actual.index,
            owner=(actual.instance_guid, actual.cell_id),
            caller=(instance_guid, None),
            evacuating=actual.evacuating,
        )


def update_desired(desired: DesiredLRP, update: DesiredLRPUpdate, now: int) -> DesiredLRP:
    """``desired`` with the fields ``update`` gives (those not None), updated at ``now``."""
    changes = {
        field.name: value
        for field in attrs.fields(DesiredLRPUpdate)
        if (value := getattr(update, field.name)) is not None
    }
    return attrs.evolve(desired, updated_at=now, **changes)
