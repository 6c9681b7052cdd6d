"""A store filled for the scale benchmarks (api, converge, memory): Tasks, DesiredLRPs,
ActualLRPs, cell presences and a domain, in mixed states, written straight into the
SQLite file by bulk inserts through the store's own column encoders.

The workload is fixed by ``SEED`` and the sizes alone, so figures compare across
commits. Every time is an offset from ``now`` (nanoseconds), given by the caller: a
node benchmark seeds at the wall clock's now, the converge benchmark at a fixed one.

The picture is a busy cluster on a bad day: 20 cells, of which ``bench-cell-19`` has
just died (its presence expired), so a converger pass has real work on about 6% of
the rows. Of N Tasks (domain ``bench``, stack ``bench``, each a download then a run,
about 900 bytes of JSON):

    state       share   times                                   a converger pass
    ---------   -----   --------------------------------------  ----------------------------
    PENDING     20%     created 0-25 min ago (1 in 100: 35-40)  re-auction (expired: fail)
    CLAIMED      5%     on a random cell                        fail if on the dead cell
    RUNNING     40%     on a random cell                        fail if on the dead cell
    COMPLETED   33%     completed 0-125 s ago, 3% with a        delete if > 120 s; kick the
                        callback URL                            callback if > 30 s
    RESOLVING    2%     completed 0-125 s ago, 0-60 s since     delete if > 120 s; demote if
                        the resolver took it                    > 30 s

and N/10 DesiredLRPs (domain ``bench-lrp``, fresh) of 10 instances (1 in 100 scaled
down to 8, 1 in 100 up to 11), whose ActualLRPs are RUNNING 85%, CLAIMED 3%, UNCLAIMED
4% (0-120 s old), CRASHED 7% (3-12 crashes, 0-20 min ago); 1 in 200 indices has none
and 1 in 100 is being evacuated (the instance UNCLAIMED, its evacuating copy RUNNING).
No cell anywhere serves the stack ``bench``: a node's own cells never run this work.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs

from diego.models.actions import (
    DownloadAction,
    EnvironmentVariable,
    ResourceLimits,
    RunAction,
    SerialAction,
)
from diego.models.cells import CellPresence
from diego.models.lrp import ActualLRP, ActualLRPState, DesiredLRP
from diego.models.task import Task, TaskCreateRequest, TaskState
from diego.models.work import Resources
from diego.state.schema import actual_lrps, desired_lrps, tasks
from diego.state.store import (
    Store,
    _actual_columns,
    _columns,
    _desired_columns,
    sqlite_url,
)

SEED = 7
"""The random seed of every workload: change it and figures no longer compare."""

FULL = 100_000
"""Tasks, and ActualLRPs (about), of a full run."""

QUICK = 10_000
"""Tasks, and ActualLRPs (about), of a --quick run."""

INSTANCES = 10
CELLS = 20
DEAD_CELL = f"bench-cell-{CELLS - 1:02d}"
TASK_DOMAIN = "bench"
LRP_DOMAIN = "bench-lrp"
STACK = "bench"
CALLBACK_URL = "http://127.0.0.1:9/bench-callback"
"""Nothing listens on the discard port: a kicked callback fails at once."""

SECOND = 1_000_000_000
MINUTE = 60 * SECOND
CHUNK = 5_000


@attrs.frozen
class Seeded:
    """What a seeding wrote: counts by kind and state, and every Task guid."""

    now: int
    task_states: dict[str, int]
    actual_states: dict[str, int]
    desired: int
    evacuating: int
    task_guids: tuple[str, ...]

    @property
    def tasks(self) -> int:
        """Tasks stored."""
        return sum(self.task_states.values())

    @property
    def actuals(self) -> int:
        """ActualLRPs stored, evacuating copies included."""
        return sum(self.actual_states.values())

    def describe(self) -> str:
        """One line of what the store holds."""
        t = " ".join(f"{k}={v}" for k, v in sorted(self.task_states.items()))
        a = " ".join(f"{k}={v}" for k, v in sorted(self.actual_states.items()))
        return (
            f"{self.tasks} Tasks ({t}); {self.desired} DesiredLRPs; "
            f"{self.actuals} ActualLRPs ({a}, {self.evacuating} of them evacuating copies)"
        )


def size_of(args: Any) -> int:
    """The Task count a benchmark's ``--quick`` and ``--tasks`` options ask for."""
    if getattr(args, "tasks", None):
        return int(args.tasks)
    return QUICK if args.quick else FULL


def seed(data_dir: Path, n: int, now: int | None = None) -> Seeded:
    """Fill a new store in ``data_dir`` with ``n`` Tasks and about ``n`` ActualLRPs."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(seed_async(data_dir, n, time.time_ns() if now is None else now))


async def seed_async(data_dir: Path, n: int, now: int) -> Seeded:
    """``seed`` into an existing ``data_dir``, inside a running event loop."""
    store = await Store.open(sqlite_url(data_dir))
    try:
        rng = random.Random(SEED)
        task_rows, task_states, guids = _tasks(rng, n, now)
        desired_rows, actual_rows, actual_states, evacuating = _lrps(rng, max(1, n // 10), now)
        async with store.engine.begin() as conn:
            for table, rows in (
                (tasks, task_rows),
                (desired_lrps, desired_rows),
                (actual_lrps, actual_rows),
            ):
                for i in range(0, len(rows), CHUNK):
                    await conn.execute(table.insert(), rows[i : i + CHUNK])
        for i in range(CELLS):
            cell = f"bench-cell-{i:02d}"
            expires = now - MINUTE if cell == DEAD_CELL else now + 24 * 60 * MINUTE
            await store.renew_cell_presence(_presence(cell), expires)
        await store.upsert_domain(LRP_DOMAIN, 0, now)
    finally:
        await store.close()
    return Seeded(
        now=now,
        task_states=dict(task_states),
        actual_states=dict(actual_states),
        desired=len(desired_rows),
        evacuating=evacuating,
        task_guids=tuple(guids),
    )


def _presence(cell_id: str) -> CellPresence:
    return CellPresence(
        cell_id=cell_id,
        zone=f"z{int(cell_id[-2:]) % 2}",
        stacks=(STACK,),
        capacity=Resources(memory_mb=64 * 1024, disk_mb=512 * 1024, containers=256),
        url=f"http://{cell_id}.bench.invalid:1801",
    )


def _hex(rng: random.Random, bits: int = 64) -> str:
    return f"{rng.getrandbits(bits):0{bits // 4}x}"


def _cell(rng: random.Random) -> str:
    return f"bench-cell-{rng.randrange(CELLS):02d}"


def _request(rng: random.Random, guid: str, i: int) -> TaskCreateRequest:
    env = (
        EnvironmentVariable(name="LANG", value="en_US.UTF-8"),
        EnvironmentVariable(name="JOB_ID", value=f"job-{i}"),
        EnvironmentVariable(name="BATCH", value=f"batch-{i // 1000}"),
    )
    fetch = DownloadAction(
        from_=f"http://blobs.bench.invalid/inputs/{guid}.tgz",
        to="/home/vcap/in",
        cache_key=f"inputs-{i // 1000}",
        checksum_algorithm="sha256",
        checksum_value=_hex(rng, 256),
    )
    work = RunAction(
        path="/bin/sh",
        args=("-c", "./run-job --input /home/vcap/in --output /home/vcap/out"),
        dir="/home/vcap",
        env=(EnvironmentVariable(name="THREADS", value=str(1 + i % 8)),),
        resource_limits=ResourceLimits(nofile=1024),
    )
    callback = CALLBACK_URL if rng.random() < 0.03 else ""
    return TaskCreateRequest(
        task_guid=guid,
        domain=TASK_DOMAIN,
        stack=STACK,
        env=env,
        memory_mb=256,
        disk_mb=1024,
        cpu_weight=10,
        action=SerialAction(actions=(fetch, work)),
        result_file="/home/vcap/out/result.json",
        completion_callback_url=callback,
        log_guid=guid,
        log_source="TASK",
        annotation=f'{{"job":"job-{i}","owner":"team-{i % 37}","queue":"default"}}',
    )


def _tasks(
    rng: random.Random, n: int, now: int
) -> tuple[list[dict[str, Any]], Counter[str], list[str]]:
    rows: list[dict[str, Any]] = []
    states: Counter[str] = Counter()
    guids: list[str] = []
    for i in range(n):
        guid = f"task-{_hex(rng, 96)}"
        request = _request(rng, guid, i)
        draw = rng.random()
        life: dict[str, Any]
        if draw < 0.20:
            age = rng.uniform(35, 40) if rng.random() < 0.01 else rng.uniform(0, 25)
            created = now - int(age * MINUTE)
            life = {"state": TaskState.PENDING, "created_at": created, "updated_at": created}
        elif draw < 0.65:
            created = now - int(rng.uniform(1, 60) * MINUTE)
            life = {
                "state": TaskState.CLAIMED if draw < 0.25 else TaskState.RUNNING,
                "cell_id": _cell(rng),
                "created_at": created,
                "updated_at": created + (now - created) // 2,
            }
        else:
            completed = now - int(rng.uniform(0, 125) * SECOND)
            failed = rng.random() < 0.1
            resolving = draw >= 0.98
            since = min(now, completed + int(rng.uniform(0, 60) * SECOND))
            life = {
                "state": TaskState.RESOLVING if resolving else TaskState.COMPLETED,
                "cell_id": _cell(rng),
                "created_at": completed - int(rng.uniform(1, 30) * MINUTE),
                "updated_at": since if resolving else completed,
                "first_completed_at": completed,
                "failed": failed,
                "failure_reason": "Exited with status 1" if failed else "",
                "result": "" if failed else f'{{"rows":{i},"checksum":"{_hex(rng)}"}}',
            }
        task = Task.from_request(request, **life)
        rows.append({**_columns(task), "version": 1})
        states[task.state.value] += 1
        guids.append(guid)
    return rows, states, guids


def _desired(process_guid: str, i: int, instances: int) -> DesiredLRP:
    start = RunAction(
        path="/home/vcap/app/start",
        args=("--port", "8080"),
        env=(EnvironmentVariable(name="PORT", value="8080"),),
    )
    check = RunAction(path="/bin/healthcheck", args=("-port=8080",), suppress_log_output=True)
    return DesiredLRP(
        process_guid=process_guid,
        domain=LRP_DOMAIN,
        stack=STACK,
        instances=instances,
        env=(
            EnvironmentVariable(name="LANG", value="en_US.UTF-8"),
            EnvironmentVariable(name="APP_NAME", value=f"app-{i}"),
        ),
        action=start,
        monitor=check,
        start_timeout_ms=60_000,
        ports=(8080,),
        routes={"cf-router": [{"hostnames": [f"app-{i}.bench.invalid"], "port": 8080}]},
        log_guid=process_guid,
        metrics_guid=process_guid,
        memory_mb=512,
        disk_mb=1024,
    )


def _lrps(
    rng: random.Random, processes: int, now: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Counter[str], int]:
    desired_rows: list[dict[str, Any]] = []
    actual_rows: list[dict[str, Any]] = []
    states: Counter[str] = Counter()
    evacuating = 0
    for i in range(processes):
        process_guid = f"app-{_hex(rng, 96)}"
        draw = rng.random()
        instances = 8 if draw < 0.01 else 11 if draw < 0.02 else INSTANCES
        created = now - int(rng.uniform(60, 24 * 60) * MINUTE)
        desired = attrs.evolve(
            _desired(process_guid, i, instances), created_at=created, updated_at=created
        )
        desired_rows.append({**_desired_columns(desired), "version": 1})
        for index in range(INSTANCES):
            if rng.random() < 0.005:
                continue  # a lost instance: the converger creates it
            base = ActualLRP(process_guid=process_guid, index=index, domain=LRP_DOMAIN)
            actuals = _instance(rng, base, now)
            for actual in actuals:
                actual_rows.append(_actual_columns(actual))
                states[actual.state.value] += 1
                evacuating += actual.evacuating
    return desired_rows, actual_rows, states, evacuating


def _instance(rng: random.Random, base: ActualLRP, now: int) -> list[ActualLRP]:
    draw = rng.random()
    running_since = now - int(rng.uniform(1, 24 * 60) * MINUTE)
    if draw < 0.01:
        copy = attrs.evolve(
            base,
            state=ActualLRPState.RUNNING,
            instance_guid=_hex(rng),
            cell_id=_cell(rng),
            since=running_since,
            evacuating=True,
        )
        moved = now - int(rng.uniform(0, 60) * SECOND)
        return [attrs.evolve(base, state=ActualLRPState.UNCLAIMED, since=moved), copy]
    if draw < 0.86:
        state = ActualLRPState.RUNNING
        return [
            attrs.evolve(
                base, state=state, instance_guid=_hex(rng), cell_id=_cell(rng), since=running_since
            )
        ]
    if draw < 0.89:
        claimed = now - int(rng.uniform(0, 60) * SECOND)
        return [
            attrs.evolve(
                base,
                state=ActualLRPState.CLAIMED,
                instance_guid=_hex(rng),
                cell_id=_cell(rng),
                since=claimed,
            )
        ]
    if draw < 0.93:
        waiting = now - int(rng.uniform(0, 120) * SECOND)
        return [attrs.evolve(base, state=ActualLRPState.UNCLAIMED, since=waiting)]
    crashed = now - int(rng.uniform(0, 20) * MINUTE)
    return [
        attrs.evolve(
            base,
            state=ActualLRPState.CRASHED,
            crash_count=rng.randint(3, 12),
            crash_reason="Exited with status 137 (out of memory)",
            last_crashed_at=crashed,
            since=crashed,
        )
    ]
