"""converge: one converger pass over a store of 100,000 Tasks and 100,000 ActualLRPs.

The store is filled by ``bench.seed`` (mixed states, one cell of twenty just died;
``--quick``: 10,000 of each) at a fixed ``now``, and the node's own ``Converger``
runs in this process on a BBS of that store, with the clock stopped at ``now``:
one Task pass (``converge``) then one LRP pass (``converge_lrps``), the reads and
every write they decide included. What a pass hands to other parts (Tasks and LRP
instances to auction, callbacks to kick, instances to stop on their cells) is
collected, not acted on. Each run starts from a fresh copy of the seeded file;
the figure is the median of ``--runs``.

The BBS is wrapped to time each of its calls: the seconds spent in the calls that
only read and in those that write (the pass runs some at once, so these may
overlap and add up to more than the pass). Target: the whole pass at most 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, cast

from bench.seed import seed, size_of
from diego.bus import Bus
from diego.clock import FakeClock
from diego.models.events import Event
from diego.models.lrp import ActualLRP
from diego.scheduling.convergence import ConvergerSettings
from diego.scheduling.converger import Converger
from diego.state.bbs import BBS
from diego.state.store import Store, sqlite_url

TARGET_S = 2.0
NOW = 1_800_000_000_000_000_000
"""The seeded store's ``now`` and the stopped clock's: every run sees the same ages."""

READS = frozenset(
    {
        "task_summaries",
        "tasks",
        "tasks_by_guid",
        "definition_fields",
        "get_task",
        "cell_presences",
        "desired_lrp_summaries",
        "desired_lrps",
        "get_desired_lrp",
        "actual_lrps",
        "actual_lrps_versioned",
        "get_actual_lrp",
        "domains",
    }
)
"""The BBS calls that only read; any other call the converger makes is a write."""


TASK_BUCKETS = ("fail", "auction", "resolve", "demote", "delete")
LRP_BUCKETS = ("unclaim", "remove_evacuating", "create", "stop", "restart", "auction")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options."""
    parser.add_argument("--tasks", type=int, default=0, help="Tasks stored (100,000)")
    parser.add_argument("--runs", type=int, default=3, help="passes, each on a fresh copy")
    parser.add_argument("--quick", action="store_true", help="10,000 Tasks and ActualLRPs")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One converger pass over 100,000 Tasks and 100,000 ActualLRPs (target <= 2 s)."""
    n = size_of(args)
    home = Path(tempfile.mkdtemp(prefix="diego-bench-converge-", dir="/var/tmp"))
    try:
        seeded = seed(home / "seeded", n, NOW)
        passes = [asyncio.run(_pass(home, i)) for i in range(args.runs)]
    finally:
        shutil.rmtree(home, ignore_errors=True)
    middle = sorted(passes, key=lambda p: p["total_s"])[len(passes) // 2]
    figures: dict[str, Any] = {
        "benchmark": "converge",
        "quick": bool(args.quick),
        "tasks_stored": seeded.tasks,
        "actual_lrps_stored": seeded.actuals,
        "desired_lrps_stored": seeded.desired,
        "runs": args.runs,
        "pass_s": round(middle["total_s"], 3),
        "pass_s_all": [round(p["total_s"], 3) for p in passes],
        "tasks_pass_s": round(middle["tasks_s"], 3),
        "lrps_pass_s": round(middle["lrps_s"], 3),
        "read_s": round(middle["read_s"], 3),
        "write_s": round(middle["write_s"], 3),
        "task_plan": middle["task_plan"],
        "lrp_plan": middle["lrp_plan"],
        "handed_over": middle["handed"],
        "calls": middle["calls"],
        "target_s": TARGET_S,
    }
    figures["meets_target"] = middle["total_s"] <= TARGET_S
    print(f"store: {seeded.describe()}" + (" (--quick: 10,000 Tasks)" if args.quick else ""))
    print(f"one converger pass, median of {args.runs} (each on a fresh copy of the store):")
    print(
        f"  total {figures['pass_s']:.3f} s  (Tasks {figures['tasks_pass_s']:.3f} s,"
        f" LRPs {figures['lrps_pass_s']:.3f} s; target <= {TARGET_S} s)"
    )
    print(
        f"  in BBS reads {figures['read_s']:.3f} s, in BBS writes {figures['write_s']:.3f} s"
        " (calls may overlap)"
    )
    print("  Task plan: " + " ".join(f"{k}={v}" for k, v in figures["task_plan"].items()))
    print("  LRP plan:  " + " ".join(f"{k}={v}" for k, v in figures["lrp_plan"].items()))
    print("  BBS calls: " + " ".join(f"{k}={v[0]}/{v[1]:.3f}s" for k, v in middle["calls"].items()))
    print(json.dumps(figures))
    return figures


class _Timed:
    """The BBS, with the count and seconds of every call kept by name."""

    def __init__(self, bbs: BBS) -> None:
        self._bbs = bbs
        self.calls: dict[str, list[float]] = {}

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._bbs, name)
        if not callable(found):
            return found

        def timed(*args: Any, **kwargs: Any) -> Any:
            result = found(*args, **kwargs)
            if not asyncio.iscoroutine(result):
                return result
            return self._time(name, result)

        return timed

    async def _time(self, name: str, call: Awaitable[Any]) -> Any:
        started = time.perf_counter()
        try:
            return await call
        finally:
            count = self.calls.setdefault(name, [0, 0.0])
            count[0] += 1
            count[1] += time.perf_counter() - started


async def _pass(home: Path, i: int) -> dict[str, Any]:
    data = home / f"run-{i}"
    shutil.copytree(home / "seeded", data)
    store = await Store.open(sqlite_url(data))
    try:
        bus: Bus[Event] = Bus()
        timed = _Timed(BBS(store, bus, FakeClock(NOW)))
        handed: dict[str, int] = {"auction": 0, "resolve": 0, "start_lrps": 0, "stop_lrp": 0}

        def count(name: str) -> Callable[[Any], None]:
            def add(items: Any) -> None:
                handed[name] += len(items) if isinstance(items, Sequence) else 1

            return add

        async def stop_lrp(actual: ActualLRP) -> None:
            handed["stop_lrp"] += 1

        converger = Converger(
            cast(BBS, timed),
            ConvergerSettings(),
            30.0,
            count("auction"),
            count("resolve"),
            start_lrps=count("start_lrps"),
            stop_lrp=stop_lrp,
        )
        started = time.perf_counter()
        task_plan = await converger.converge()
        middle = time.perf_counter()
        lrp_plan = await converger.converge_lrps()
        ended = time.perf_counter()
    finally:
        await store.close()
        shutil.rmtree(data, ignore_errors=True)
    calls = {k: (int(v[0]), round(v[1], 4)) for k, v in sorted(timed.calls.items())}
    return {
        "total_s": ended - started,
        "tasks_s": middle - started,
        "lrps_s": ended - middle,
        "read_s": sum(t for name, (_, t) in calls.items() if name in READS),
        "write_s": sum(t for name, (_, t) in calls.items() if name not in READS),
        "task_plan": {k: len(getattr(task_plan, k)) for k in TASK_BUCKETS},
        "lrp_plan": {k: len(getattr(lrp_plan, k)) for k in LRP_BUCKETS},
        "handed": handed,
        "calls": calls,
    }
