# The spec calls this cell α and any other cell ω; we keep its notation, so the ambiguous-
# character rules are off in this file.
# ruff: noqa: RUF001, RUF002, RUF003
"""The rep's reconciliation of ActualLRPs with its containers, as a pure table.

This is the spec's table "Harmonizing ActualLRPs with Container State: Rep"
(``spec/diego-big-picture.md``): given one container on this cell (α) and the
ActualLRP of the same process and index in the BBS, say what α must do: nothing,
delete the container, CAS the ActualLRP to CLAIMED by α, CAS (or CREATE) it
RUNNING on α, perform the ``RepCrashDance`` and then delete the container, CAD the
ActualLRP and then delete the container, or CAD the ActualLRP alone. Every row of
the spec's table is one entry of :data:`TABLE`, keyed by the container's kind
(:class:`LRPContainerKind`) and the ActualLRP as seen from α
(:class:`LRPRelation`); the table covers every pair, so :func:`decide_lrp` is total
(for a container and an ActualLRP of the same process and index).

How α sees an ActualLRP (:func:`lrp_relation`):

* **Cell and instance.** A CLAIMED or RUNNING ActualLRP is α's only if its
  ``cell_id`` is α *and* its ``instance_guid`` is the container's. The spec's note:
  "when processing a container whose InstanceGuid is *not* in the BBS, the Rep
  treats the ActualLRP as if it were on some other Cell (the ω cases)". So with
  two running containers ``ig1`` and ``ig2`` and the BBS holding ``ig1`` RUNNING on
  α, ``ig1`` is left alone and ``ig2`` is deleted. Without a container (the "No
  Container" rows) there is no instance to compare and ``cell_id`` alone decides.
* **UNCLAIMED and CRASHED** ActualLRPs are on no cell: their ``cell_id`` and
  ``instance_guid`` (stale, if set at all) are ignored.

The two flavours of a ``COMPLETED`` container (:attr:`LRPContainerView.shutdown`):
*crashed* means it died unexpectedly; *shutdown* means α was asked to stop it.

The rows are the spec's, word for word, including the ones that look odd:

* ``RUNNING`` + ``CLAIMED by ω`` (or ``UNCLAIMED``, or ``CRASHED``) CASes the
  ActualLRP to RUNNING on α: α really is running it, so nothing need start it
  elsewhere. This is the one place α writes over an ActualLRP that is not its own.
* ``COMPLETED (shutdown)`` + no ActualLRP performs the ``RepCrashDance`` like the
  crashed flavour does: the BBS may have been purged, so α writes what it knows.
  ``CRASH_THEN_DELETE`` on a missing ActualLRP therefore means *create* it as the
  dance would leave it (UNCLAIMED or CRASHED, with the crash counted).

One extension: the spec lists only two "No Container" rows (CLAIMED by α, RUNNING
on α). Without a container, every other ActualLRP is nothing of α's — an
UNCLAIMED one belongs to the auction, a CRASHED one to the converger, one on ω to
ω — so those rows do nothing. :func:`pair_lrps` never produces them anyway.

**Evacuation is handled separately.** The table is about the ActualLRP stored
under ``/v1/actual/:process_guid/:index/instance``; an evacuating copy (under
``.../evacuating``) is not a row of it. :func:`decide_lrp` refuses one, and
:func:`pair_lrps` ignores them: a container is paired with the non-evacuating
ActualLRP of its index, and only non-evacuating ActualLRPs get "No Container"
rows. While α evacuates, the rep must keep the containers it is evacuating out of
this reconciliation: paired with their (non-evacuating) replacement, a RUNNING one
would CAS the replacement to RUNNING on α.

A decision is only as fresh as the snapshot it was made from. As the spec's
"Polling vs Events" says, the rep must validate a decision before acting on it:
every ActualLRP change is a compare-and-swap (or compare-and-delete) that fails if
the ActualLRP has moved on, and a container should be looked up again before it is
deleted.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import attrs

from diego.cell.reconcile import ContainerState
from diego.models.lrp import ActualLRP, ActualLRPState


@attrs.frozen
class LRPContainerView:
    """What reconciliation needs of one LRP instance's container on this cell.

    ``shutdown`` tells the two flavours of a COMPLETED container apart: True if α
    asked it to stop, False if it crashed. ``crash_reason`` is why it crashed.
    """

    instance_guid: str
    process_guid: str
    index: int
    state: ContainerState
    shutdown: bool = False
    crash_reason: str = ""


class LRPAction(enum.Enum):
    """What the rep does about one container and its ActualLRP (the spec's "Action" column)."""

    NOTHING = "do nothing"
    DELETE_CONTAINER = "delete container"
    CLAIM = "CAS the ActualLRP to CLAIMED by this cell"
    START = "CAS (or CREATE) the ActualLRP RUNNING on this cell"
    CRASH_THEN_DELETE = "perform the RepCrashDance, then delete container"
    REMOVE_THEN_DELETE = "CAD the ActualLRP, then delete container"
    REMOVE = "CAD the ActualLRP"

    @property
    def changes_actual(self) -> bool:
        """Whether the action writes the ActualLRP in the BBS (CAS, CREATE or CAD)."""
        return self in (
            LRPAction.CLAIM,
            LRPAction.START,
            LRPAction.CRASH_THEN_DELETE,
            LRPAction.REMOVE_THEN_DELETE,
            LRPAction.REMOVE,
        )

    @property
    def deletes_container(self) -> bool:
        """Whether the action ends by deleting the container."""
        return self in (
            LRPAction.DELETE_CONTAINER,
            LRPAction.CRASH_THEN_DELETE,
            LRPAction.REMOVE_THEN_DELETE,
        )


@attrs.frozen
class LRPDecision:
    """One row's verdict: the action, why (the spec's "Reason"), and whether to log loudly.

    ``crash_reason`` is the container's, for ``CRASH_THEN_DELETE`` (what to record
    on the ActualLRP); it is empty otherwise.
    """

    action: LRPAction
    reason: str
    loud: bool = False
    crash_reason: str = ""


class LRPContainerKind(enum.Enum):
    """The container column of the spec's table: states the table does not tell apart are one."""

    RESERVED = "RESERVED"
    STARTING = "INITIALIZING|CREATED"
    RUNNING = "RUNNING"
    CRASHED = "COMPLETED (crashed)"
    SHUTDOWN = "COMPLETED (shutdown)"
    NONE = "No Container"


class LRPRelation(enum.Enum):
    """The ActualLRP column of the spec's table: an ActualLRP's state as seen from this cell (α)."""

    NO_LRP = "No ActualLRP"
    UNCLAIMED = "UNCLAIMED"
    CLAIMED_HERE = "CLAIMED by α"
    CLAIMED_ELSEWHERE = "CLAIMED by ω"
    RUNNING_HERE = "RUNNING on α"
    RUNNING_ELSEWHERE = "RUNNING on ω"
    CRASHED = "CRASHED"


def lrp_container_kind(container: LRPContainerView | None) -> LRPContainerKind:
    """The table's container column for ``container`` (None: no container)."""
    if container is None:
        return LRPContainerKind.NONE
    match container.state:
        case ContainerState.RESERVED:
            return LRPContainerKind.RESERVED
        case ContainerState.INITIALIZING | ContainerState.CREATED:
            return LRPContainerKind.STARTING
        case ContainerState.RUNNING:
            return LRPContainerKind.RUNNING
        case ContainerState.COMPLETED:
            return LRPContainerKind.SHUTDOWN if container.shutdown else LRPContainerKind.CRASHED


def lrp_relation(
    cell_id: str, actual: ActualLRP | None, container: LRPContainerView | None = None
) -> LRPRelation:
    """The table's ActualLRP column for ``actual`` as the cell ``cell_id`` sees it.

    A CLAIMED or RUNNING ActualLRP is here (α) only if it names ``cell_id`` and,
    when there is a ``container``, the container's instance_guid; otherwise it is
    elsewhere (ω). UNCLAIMED and CRASHED ActualLRPs are on no cell.
    """
    if actual is None:
        return LRPRelation.NO_LRP
    here = actual.cell_id == cell_id and (
        container is None or container.instance_guid == actual.instance_guid
    )
    match actual.state:
        case ActualLRPState.UNCLAIMED:
            return LRPRelation.UNCLAIMED
        case ActualLRPState.CLAIMED:
            return LRPRelation.CLAIMED_HERE if here else LRPRelation.CLAIMED_ELSEWHERE
        case ActualLRPState.RUNNING:
            return LRPRelation.RUNNING_HERE if here else LRPRelation.RUNNING_ELSEWHERE
        case ActualLRPState.CRASHED:
            return LRPRelation.CRASHED


@attrs.frozen
class LRPRow:
    """One row of :data:`TABLE`: the action, its reason, and whether to log loudly."""

    action: LRPAction
    reason: str
    loud: bool = False


_K = LRPContainerKind
_R = LRPRelation
_A = LRPAction

_PURGED = (
    "α just saw a crash but the BBS is empty. Perhaps BBS was accidentally purged? "
    "In that case: update it with what we know to be true"
)

TABLE: dict[tuple[LRPContainerKind, LRPRelation], LRPRow] = {
    # RESERVED: α merely holds room for the instance.
    **{
        (_K.RESERVED, relation): LRPRow(
            _A.NOTHING, "α merely has a reservation for the ActualLRP, no need to act yet"
        )
        for relation in LRPRelation
    },
    # INITIALIZING|CREATED: α is starting the container.
    (_K.STARTING, _R.NO_LRP): LRPRow(
        _A.DELETE_CONTAINER,
        "the consumer likely stopped desiring this ActualLRP while it was being auctioned",
    ),
    (_K.STARTING, _R.UNCLAIMED): LRPRow(_A.CLAIM, "α is starting this ActualLRP"),
    (_K.STARTING, _R.CLAIMED_HERE): LRPRow(
        _A.NOTHING, "α is starting this ActualLRP, no need to write to the BBS"
    ),
    (_K.STARTING, _R.CLAIMED_ELSEWHERE): LRPRow(
        _A.DELETE_CONTAINER, "the ActualLRP is starting on ω, stop starting it on α"
    ),
    (_K.STARTING, _R.RUNNING_HERE): LRPRow(_A.NOTHING, "this should not be possible", loud=True),
    (_K.STARTING, _R.RUNNING_ELSEWHERE): LRPRow(
        _A.DELETE_CONTAINER, "the ActualLRP is running on ω, stop starting it on α"
    ),
    (_K.STARTING, _R.CRASHED): LRPRow(
        _A.DELETE_CONTAINER,
        "α is incorrectly starting the instance - some other cell will pick this up later",
    ),
    # RUNNING: α is running the container.
    (_K.RUNNING, _R.NO_LRP): LRPRow(
        _A.START,
        "α is running this ActualLRP, let Diego know so it can take action appropriately "
        "(blank ActualLRPs must not shut down containers: the BBS may have been purged)",
    ),
    (_K.RUNNING, _R.UNCLAIMED): LRPRow(
        _A.START, "α is running this ActualLRP, no need to start it elsewhere"
    ),
    (_K.RUNNING, _R.CLAIMED_HERE): LRPRow(_A.START, "α is running this ActualLRP"),
    (_K.RUNNING, _R.CLAIMED_ELSEWHERE): LRPRow(
        _A.START, "α is running this ActualLRP, no need to start it elsewhere"
    ),
    (_K.RUNNING, _R.RUNNING_HERE): LRPRow(
        _A.NOTHING, "α is running this ActualLRP, no need to write to the BBS"
    ),
    (_K.RUNNING, _R.RUNNING_ELSEWHERE): LRPRow(
        _A.DELETE_CONTAINER, "the instance is running on ω, stop running it on α", loud=True
    ),
    (_K.RUNNING, _R.CRASHED): LRPRow(
        _A.START,
        "α is successfully running this ActualLRP: it has not crashed and need not be restarted",
    ),
    # COMPLETED (crashed): the container died unexpectedly.
    (_K.CRASHED, _R.NO_LRP): LRPRow(_A.CRASH_THEN_DELETE, _PURGED, loud=True),
    (_K.CRASHED, _R.UNCLAIMED): LRPRow(
        _A.DELETE_CONTAINER, "the instance will be scheduled elsewhere"
    ),
    (_K.CRASHED, _R.CLAIMED_HERE): LRPRow(
        _A.CRASH_THEN_DELETE, "the instance crashed on α while starting"
    ),
    (_K.CRASHED, _R.CLAIMED_ELSEWHERE): LRPRow(
        _A.DELETE_CONTAINER, "the instance is starting elsewhere, leave it be"
    ),
    (_K.CRASHED, _R.RUNNING_HERE): LRPRow(
        _A.CRASH_THEN_DELETE, "the instance crashed on α while running"
    ),
    (_K.CRASHED, _R.RUNNING_ELSEWHERE): LRPRow(
        _A.DELETE_CONTAINER, "the instance is running elsewhere, leave it be"
    ),
    (_K.CRASHED, _R.CRASHED): LRPRow(_A.DELETE_CONTAINER, "the crash has already been noted"),
    # COMPLETED (shutdown): α asked the container to stop.
    (_K.SHUTDOWN, _R.NO_LRP): LRPRow(_A.CRASH_THEN_DELETE, _PURGED, loud=True),
    (_K.SHUTDOWN, _R.UNCLAIMED): LRPRow(_A.DELETE_CONTAINER, "nothing to be done"),
    (_K.SHUTDOWN, _R.CLAIMED_HERE): LRPRow(
        _A.REMOVE_THEN_DELETE, "α was told to stop and should now clean up the BBS"
    ),
    (_K.SHUTDOWN, _R.CLAIMED_ELSEWHERE): LRPRow(
        _A.DELETE_CONTAINER, "the instance is starting elsewhere, leave it be"
    ),
    (_K.SHUTDOWN, _R.RUNNING_HERE): LRPRow(
        _A.REMOVE_THEN_DELETE, "α was told to stop and should now clean up the BBS"
    ),
    (_K.SHUTDOWN, _R.RUNNING_ELSEWHERE): LRPRow(
        _A.DELETE_CONTAINER, "the instance is running elsewhere, leave it be"
    ),
    (_K.SHUTDOWN, _R.CRASHED): LRPRow(_A.DELETE_CONTAINER, "nothing to do"),
    # No container (and no reservation) on α.
    (_K.NONE, _R.NO_LRP): LRPRow(_A.NOTHING, "neither a container nor an ActualLRP"),
    (_K.NONE, _R.UNCLAIMED): LRPRow(_A.NOTHING, "the auction owns an UNCLAIMED ActualLRP"),
    (_K.NONE, _R.CLAIMED_HERE): LRPRow(
        _A.REMOVE,
        "there is no matching container: delete the ActualLRP and allow the converger "
        "to determine whether it is still desired",
    ),
    (_K.NONE, _R.CLAIMED_ELSEWHERE): LRPRow(_A.NOTHING, "the ActualLRP is another cell's"),
    (_K.NONE, _R.RUNNING_HERE): LRPRow(
        _A.REMOVE,
        "there is no matching container: delete the ActualLRP and allow the converger "
        "to determine whether it is still desired",
    ),
    (_K.NONE, _R.RUNNING_ELSEWHERE): LRPRow(_A.NOTHING, "the ActualLRP is another cell's"),
    (_K.NONE, _R.CRASHED): LRPRow(_A.NOTHING, "the converger restarts a CRASHED ActualLRP"),
}
"""The spec's table, extended to every pair; see the module docstring."""


def decide_lrp(
    cell_id: str, container: LRPContainerView | None, actual: ActualLRP | None
) -> LRPDecision:
    """What the cell ``cell_id`` must do about ``container`` and ``actual`` (either may be None).

    Raises ValueError only if ``actual`` is evacuating (evacuation is handled
    separately), or if the container and the ActualLRP are of different processes
    or indices.
    """
    if actual is not None:
        if actual.evacuating:
            raise ValueError(
                f"ActualLRP {actual.process_guid!r}/{actual.index} is evacuating: "
                "evacuation is not reconciled here"
            )
        if container is not None and (
            container.process_guid != actual.process_guid or container.index != actual.index
        ):
            raise ValueError(
                f"container {container.instance_guid!r} of "
                f"{container.process_guid!r}/{container.index} is not an instance of "
                f"ActualLRP {actual.process_guid!r}/{actual.index}"
            )
    row = TABLE[lrp_container_kind(container), lrp_relation(cell_id, actual, container)]
    if row.action is LRPAction.CRASH_THEN_DELETE:
        assert container is not None  # only COMPLETED containers crash
        return LRPDecision(
            action=row.action, reason=row.reason, loud=row.loud, crash_reason=container.crash_reason
        )
    return LRPDecision(action=row.action, reason=row.reason, loud=row.loud)


def pair_lrps(
    cell_id: str, containers: Iterable[LRPContainerView], actuals: Iterable[ActualLRP]
) -> list[tuple[LRPContainerView | None, ActualLRP | None]]:
    """Pair every container with its ActualLRP, and add the ActualLRPs α has no container for.

    Each container comes once, in the order given, with the non-evacuating
    ActualLRP of its process and index, or None. Then come, in the order given and
    with no container, the non-evacuating ActualLRPs CLAIMED by or RUNNING on
    ``cell_id`` that no container here is an instance of (same process, index and
    instance_guid): those are the spec's "No Container" rows. An ActualLRP of α
    whose index has a container of another instance gets both rows: the container
    judges it as on ω, and it has no container of its own.

    Evacuating ActualLRPs are ignored: evacuation is handled separately (see the
    module docstring). Instance guids are unique among containers (the executor
    keys containers by them) and there is at most one non-evacuating ActualLRP per
    process and index (the BBS keys them so); a repeat of either raises ValueError.
    """
    by_key: dict[tuple[str, int], ActualLRP] = {}
    for actual in actuals:
        if actual.evacuating:
            continue
        key = (actual.process_guid, actual.index)
        if key in by_key:
            raise ValueError(f"ActualLRP {key[0]!r}/{key[1]} given twice")
        by_key[key] = actual
    pairs: list[tuple[LRPContainerView | None, ActualLRP | None]] = []
    seen: set[str] = set()
    instances: set[tuple[str, int, str]] = set()
    for container in containers:
        if container.instance_guid in seen:
            raise ValueError(f"container {container.instance_guid!r} given twice")
        seen.add(container.instance_guid)
        instances.add((container.process_guid, container.index, container.instance_guid))
        pairs.append((container, by_key.get((container.process_guid, container.index))))
    for actual in by_key.values():
        if (
            actual.cell_id == cell_id
            and actual.state in (ActualLRPState.CLAIMED, ActualLRPState.RUNNING)
            and (actual.process_guid, actual.index, actual.instance_guid) not in instances
        ):
            pairs.append((None, actual))
    return pairs


def reconcile_lrps(
    cell_id: str, containers: Iterable[LRPContainerView], actuals: Iterable[ActualLRP]
) -> list[tuple[LRPContainerView | None, ActualLRP | None, LRPDecision]]:
    """Every pair of :func:`pair_lrps` with its decision."""
    return [
        (container, actual, decide_lrp(cell_id, container, actual))
        for container, actual in pair_lrps(cell_id, containers, actuals)
    ]
