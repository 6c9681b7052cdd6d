"""The converger's plan for LRPs: a pure function from a BBS snapshot and ``now``.

Messages get lost, cells die and consumers scale down; the converger brings the
ActualLRPs back in line with the DesiredLRPs. Each pass reads an
:class:`LRPSnapshot`, asks :func:`plan_lrps` what to do, and a separate loop applies
the :class:`LRPPlan` with compare-and-swap, create and compare-and-delete (an
ActualLRP that changed meanwhile simply loses the race).

Evacuating copies are looked at first and apart: the converger only removes those
whose cell is gone (evacuation is otherwise its cell's business). Each other
ActualLRP goes through the rows below top to bottom and the first that matches wins,
so it lands in at most one of ``stop``, ``unclaim`` and ``restart``:

    ActualLRP              condition (older: ``now - t > interval``)     bucket
    ---------------------  --------------------------------------------  -----------------
    evacuating copy        ``cell_id`` is not a live cell                remove_evacuating
    any state              no DesiredLRP, and its domain is fresh        stop
    any state              no DesiredLRP, domain stale                   (none: kept)
    any state              ``index >= instances``, domain fresh          stop
    CLAIMED, RUNNING       ``cell_id`` is not a live cell                unclaim + auction
    CRASHED                the crash policy says restart at ``now``      restart + auction
    UNCLAIMED              ``since`` older than the kick interval        auction
    (none at the index)    ``index < instances`` of a DesiredLRP         create + auction

A domain is fresh while its consumer keeps saying that its desired state is complete;
only then may the converger stop anything, since a stale domain's missing DesiredLRP
or lower instance count may just be a consumer that has not caught up. So an extra
instance of a stale domain goes on through the state rows (it is unclaimed or
restarted like any other, as in Diego), while an instance with no DesiredLRP at all is
left alone until its domain is fresh: there is nothing to auction it with.

A CRASHED instance's backoff counts from its crash: ``last_crashed_at``, or ``since``
if that is later (Diego reads ``since``, which its crash step sets to the moment of the
crash; the two agree when the lifecycle sets both).

What the loop does with each bucket, in this order:

- ``remove_evacuating``: compare-and-delete the evacuating copy.
- ``stop``: a CLAIMED or RUNNING instance is stopped through the rep of its cell (or
  deleted if that cell is gone, as Diego's retire does); an UNCLAIMED or CRASHED one is
  compare-and-deleted.
- ``unclaim``: CAS back to UNCLAIMED (no cell, no instance guid).
- ``restart``: CAS from CRASHED to UNCLAIMED, keeping the crash count.
- ``create``: create the UNCLAIMED ActualLRP, in the DesiredLRP's domain.
- ``auction``: every key to send to the auctioneer once the steps above are done: the
  created, unclaimed and restarted keys (each only if its own step succeeded) and the
  stale UNCLAIMED ones (which need no step).

Times are int nanoseconds since the epoch; the settings are seconds. Every bucket is
sorted by process guid then index, so a plan does not depend on the order of the
snapshot.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import attrs

from diego.models.crash_policy import CrashPolicy
from diego.models.lrp import ActualLRP, ActualLRPKey, ActualLRPState, DesiredLRP, Domain
from diego.models.lrp_delta import actual_order, delta
from diego.scheduling.convergence import to_nanos


def _non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:  # also refuses NaN
        raise ValueError(f"{attribute.name} must be at least 0, not {value!r}")


@attrs.frozen
class LRPConvergerSettings:
    """The converger's LRP timings in seconds and its crash policy, with Diego's defaults."""

    kick_interval_s: float = attrs.field(default=30.0, validator=_non_negative)
    """An UNCLAIMED instance unchanged this long is sent to the auctioneer again."""
    crash_policy: CrashPolicy = attrs.Factory(CrashPolicy)
    """When CRASHED instances are restarted."""
    max_creates: int = attrs.field(default=10_000, validator=attrs.validators.ge(1))
    """Missing instances created in one pass, at most; the rest on the next passes."""


@attrs.frozen
class DesiredLRPView:
    """The fields of a DesiredLRP that the converger decides on."""

    process_guid: str
    domain: str
    instances: int

    @classmethod
    def from_desired(cls, desired: DesiredLRP) -> DesiredLRPView:
        """The converger's view of ``desired``."""
        return cls(
            process_guid=desired.process_guid, domain=desired.domain, instances=desired.instances
        )


@attrs.frozen(order=True)
class MissingInstance:
    """An index of a DesiredLRP with no ActualLRP: create it UNCLAIMED in ``domain``."""

    process_guid: str
    index: int
    domain: str

    @property
    def key(self) -> ActualLRPKey:
        """Which instance this is."""
        return ActualLRPKey(process_guid=self.process_guid, index=self.index)


def key_order(key: ActualLRPKey) -> tuple[str, int]:
    """The order of keys in every bucket: process guid, then index."""
    return (key.process_guid, key.index)


def _views(desired: Iterable[DesiredLRPView]) -> tuple[DesiredLRPView, ...]:
    return tuple(desired)


def _actuals(actuals: Iterable[ActualLRP]) -> tuple[ActualLRP, ...]:
    return tuple(actuals)


def _names(names: Iterable[str]) -> frozenset[str]:
    return frozenset(names)


def _unique_processes(
    instance: object,
    attribute: attrs.Attribute[tuple[DesiredLRPView, ...]],
    value: tuple[DesiredLRPView, ...],
) -> None:
    repeated = sorted(g for g, n in Counter(d.process_guid for d in value).items() if n > 1)
    if repeated:
        raise ValueError(f"{attribute.name}: process guids appear more than once: {repeated}")
    negative = sorted(d.process_guid for d in value if d.instances < 0)
    if negative:
        raise ValueError(f"{attribute.name}: negative instances: {negative}")


def _unique_instances(
    instance: object,
    attribute: attrs.Attribute[tuple[ActualLRP, ...]],
    value: tuple[ActualLRP, ...],
) -> None:
    keys = [(a.process_guid, a.index, a.evacuating) for a in value]
    if len(set(keys)) == len(keys):
        return  # the usual case, found without counting
    repeated = sorted(k for k, n in Counter(keys).items() if n > 1)
    if repeated:
        raise ValueError(
            f"{attribute.name}: (process guid, index, evacuating) more than once: {repeated}"
        )


@attrs.frozen
class LRPSnapshot:
    """Every DesiredLRP and ActualLRP in the BBS, the live cells and the fresh domains,
    read at one moment.

    An index has at most one ActualLRP and at most one evacuating copy.
    """

    desired: tuple[DesiredLRPView, ...] = attrs.field(
        default=(), converter=_views, validator=_unique_processes
    )
    actuals: tuple[ActualLRP, ...] = attrs.field(
        default=(), converter=_actuals, validator=_unique_instances
    )
    live_cells: frozenset[str] = attrs.field(default=frozenset(), converter=_names)
    fresh_domains: frozenset[str] = attrs.field(default=frozenset(), converter=_names)

    @classmethod
    def of(
        cls,
        desired: Iterable[DesiredLRP],
        actuals: Iterable[ActualLRP],
        live_cells: Iterable[str],
        domains: Iterable[Domain],
        now: int,
    ) -> LRPSnapshot:
        """A snapshot of whole models, as a store lists them; domains fresh at ``now``."""
        return cls(
            desired=tuple(DesiredLRPView.from_desired(d) for d in desired),
            actuals=actuals,
            live_cells=live_cells,
            fresh_domains=frozenset(d.name for d in domains if d.fresh(now)),
        )


@attrs.frozen
class LRPPlan:
    """What one convergence pass should do, each bucket sorted by process guid and index."""

    unclaim: tuple[ActualLRPKey, ...] = ()
    """CLAIMED or RUNNING instances whose cell is gone: CAS back to UNCLAIMED."""
    remove_evacuating: tuple[ActualLRPKey, ...] = ()
    """Evacuating copies whose cell is gone: compare-and-delete."""
    create: tuple[MissingInstance, ...] = ()
    """Desired indices with no ActualLRP: create them UNCLAIMED."""
    stop: tuple[ActualLRP, ...] = ()
    """Instances no longer desired, in fresh domains: stop or delete, by state."""
    restart: tuple[ActualLRPKey, ...] = ()
    """CRASHED instances whose backoff has passed: CAS to UNCLAIMED."""
    auction: tuple[ActualLRPKey, ...] = ()
    """Every key to send to the auctioneer after the steps above (see the module)."""

    @property
    def is_empty(self) -> bool:
        """Whether the pass has nothing to do."""
        return not (
            self.unclaim
            or self.remove_evacuating
            or self.create
            or self.stop
            or self.restart
            or self.auction
        )


def crashed_at(actual: ActualLRP) -> int:
    """When ``actual`` crashed, as its backoff counts: the later of its two times."""
    return max(actual.last_crashed_at, actual.since)


def _complete(instances: int, actuals: Iterable[ActualLRP]) -> bool:
    """Whether ``actuals`` of one process are exactly one of each index below
    ``instances`` (evacuating copies aside), so that their delta is empty. Indices
    are unique within a snapshot, so ``instances`` of them all below it are those."""
    count = 0
    for actual in actuals:
        if actual.evacuating:
            return False  # rare: let delta() decide
        if actual.index >= instances:
            return False
        count += 1
    return count == instances


def plan_lrps(snapshot: LRPSnapshot, now: int, settings: LRPConvergerSettings) -> LRPPlan:
    """What to do about every LRP in ``snapshot`` at ``now`` (int nanoseconds)."""
    kick = to_nanos(settings.kick_interval_s)
    policy = settings.crash_policy
    live = snapshot.live_cells
    desired = {d.process_guid: d for d in snapshot.desired}

    by_process: dict[str, list[ActualLRP]] = {}
    for actual in snapshot.actuals:
        by_process.setdefault(actual.process_guid, []).append(actual)

    create: list[MissingInstance] = []
    extra: set[ActualLRPKey] = set()
    for view in snapshot.desired:
        actuals = by_process.get(view.process_guid, ())
        if _complete(view.instances, actuals):
            continue  # the usual case: exactly indices 0..instances-1, nothing to do
        found = delta(view.instances, actuals, max(settings.max_creates - len(create), 0))
        create += (MissingInstance(view.process_guid, i, view.domain) for i in found.start)
        extra.update(a.key for a in found.stop)

    remove_evacuating: list[ActualLRPKey] = []
    stop: list[ActualLRP] = []
    unclaim: list[ActualLRPKey] = []
    restart: list[ActualLRPKey] = []
    stale: list[ActualLRPKey] = []

    # A key is made only for an instance that lands in a bucket: most need nothing.
    extra_pairs = {(k.process_guid, k.index) for k in extra}
    for actual in snapshot.actuals:
        if actual.evacuating:
            if actual.cell_id not in live:
                remove_evacuating.append(actual.key)
            continue
        is_desired = actual.process_guid in desired
        unwanted = not is_desired or (actual.process_guid, actual.index) in extra_pairs
        if unwanted and actual.domain in snapshot.fresh_domains:
            stop.append(actual)
            continue
        if not is_desired:
            continue  # kept until its domain is fresh; nothing to auction it with
        match actual.state:
            case ActualLRPState.CLAIMED | ActualLRPState.RUNNING:
                if actual.cell_id not in live:
                    unclaim.append(actual.key)
            case ActualLRPState.CRASHED:
                if policy.should_restart(actual.crash_count, crashed_at(actual), now):
                    restart.append(actual.key)
            case ActualLRPState.UNCLAIMED:
                if now - actual.since > kick:
                    stale.append(actual.key)

    auction = [m.key for m in create] + unclaim + restart + stale
    return LRPPlan(
        unclaim=tuple(sorted(unclaim, key=key_order)),
        remove_evacuating=tuple(sorted(remove_evacuating, key=key_order)),
        create=tuple(sorted(create)),
        stop=tuple(sorted(stop, key=actual_order)),
        restart=tuple(sorted(restart, key=key_order)),
        auction=tuple(sorted(auction, key=key_order)),
    )
