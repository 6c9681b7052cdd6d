"""tasks: Tasks running ``/bin/true`` on a real node, against raw process spawns.

A real ``diego serve`` (SQLite, one local cell: bubblewrap sandboxes, cgroups) is
driven over its HTTP API. Each Task runs ``/bin/true`` with a 64 MB memory limit
and no disk (so no loop-mounted disk image); it is POSTed, followed to COMPLETED
on one shared ``/v1/events?domain=bench`` stream (no polling), then DELETEd.

Phases, in this order, on one node:

1. warm-up: a few Tasks, not counted;
2. idle: ``--idle-runs`` Tasks one at a time; latency from POST to COMPLETED;
3. load: ``--tasks`` Tasks at concurrency 64 (64 clients, each POST, wait for
   COMPLETED, DELETE, next); Tasks/s is the number over the phase's wall time,
   and the latency from POST to COMPLETED of every Task of the phase;
4. raw, in this process while the node idles: ``asyncio.create_subprocess_exec
   ('/bin/true')`` one at a time (the latency of one spawn) and as many spawns
   as the load phase's Tasks at concurrency 64 (the raw rate);
5. the cell's part alone, in this process once the node has stopped: as many
   containers as the load phase's Tasks, each made, running ``/bin/true`` and
   destroyed on a LocalBackend set up as the node's (spare containers included),
   at concurrency 64, with no store, HTTP, auction or rep. No target: it is the
   ceiling any design that sandboxes each Task this way has on this machine.

Targets: Tasks/s at least 0.5 of the raw spawn rate; idle p50 at most 20 ms
above one raw spawn's median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import time
import uuid
from typing import Any

import aiohttp

from bench.node import bench_home, running_node
from diego.cell.backends.base import ContainerSpec, ProcessSpec
from diego.cell.backends.local import LocalBackend

CONCURRENCY = 64
TARGET_RATIO = 0.5
TARGET_IDLE_OVERHEAD_MS = 20.0
WARM_UP = 5
DOMAIN = "bench"
SPARES = 2
CONFIG = f"""\
[cell]
count = 1
memory_mb = 16384
disk_mb = 16384
max_containers = 256
spare_containers = {SPARES}
"""
"""The node's settings: one cell, room for far more than 64 such Tasks."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options."""
    parser.add_argument("--tasks", type=int, default=2000, help="Tasks in the load phase")
    parser.add_argument("--idle-runs", type=int, default=20, help="Tasks one at a time")
    parser.add_argument("--quick", action="store_true", help="300 Tasks in the load phase")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Tasks of /bin/true end to end at concurrency 64 against raw spawns (>= 0.5x)."""
    count = 300 if args.quick else args.tasks
    with running_node(config=CONFIG) as url:
        measured = asyncio.run(_measure(url, count, args.idle_runs))
    idle, load, load_s, raw_one, raw_s = measured
    cell_s = asyncio.run(_cell_alone(count))
    rate = count / load_s
    raw_rate = count / raw_s
    cell_rate = count / cell_s
    ratio = rate / raw_rate
    overhead_ms = (statistics.median(idle) - statistics.median(raw_one)) * 1000
    figures: dict[str, Any] = {
        "benchmark": "tasks",
        "tasks": count,
        "concurrency": CONCURRENCY,
        "idle_runs": len(idle),
        "tasks_per_s": round(rate, 1),
        "raw_spawns_per_s": round(raw_rate, 1),
        "ratio": round(ratio, 3),
        "cell_alone_per_s": round(cell_rate, 1),
        "cell_alone_ratio": round(cell_rate / raw_rate, 3),
        "idle_p50_ms": _ms(statistics.median(idle)),
        "idle_p99_ms": _ms(_quantile(idle, 0.99)),
        "load_p50_ms": _ms(statistics.median(load)),
        "load_p99_ms": _ms(_quantile(load, 0.99)),
        "raw_spawn_p50_ms": _ms(statistics.median(raw_one)),
        "idle_overhead_ms": round(overhead_ms, 2),
        "target_ratio": TARGET_RATIO,
        "target_idle_overhead_ms": TARGET_IDLE_OVERHEAD_MS,
        "meets_target": {
            "ratio": ratio >= TARGET_RATIO,
            "idle_overhead": overhead_ms <= TARGET_IDLE_OVERHEAD_MS,
        },
    }
    meets = figures["meets_target"]
    print(f"Tasks running /bin/true on one local cell; {count} at concurrency {CONCURRENCY}")
    print(f"  end to end        {rate:8.1f} Tasks/s")
    print(f"  raw spawns        {raw_rate:8.1f} /s   (create_subprocess_exec, same concurrency)")
    print(f"  ratio             {ratio:8.3f}     (target >= {TARGET_RATIO}: {_ok(meets['ratio'])})")
    print(
        f"  the cell alone    {cell_rate:8.1f} /s   (make, run, destroy on the local backend;"
        f" {cell_rate / raw_rate:.3f} of raw)"
    )
    print(
        f"  POST -> COMPLETED idle p50 {figures['idle_p50_ms']:7.1f} ms"
        f"  p99 {figures['idle_p99_ms']:7.1f} ms ({len(idle)} one at a time)"
    )
    print(
        f"                    load p50 {figures['load_p50_ms']:7.1f} ms"
        f"  p99 {figures['load_p99_ms']:7.1f} ms"
    )
    print(
        f"  one raw spawn     p50 {figures['raw_spawn_p50_ms']:7.2f} ms; idle overhead"
        f" {overhead_ms:.1f} ms (target <= {TARGET_IDLE_OVERHEAD_MS:g}:"
        f" {_ok(meets['idle_overhead'])})"
    )
    print(json.dumps(figures))
    return figures


Measured = tuple[list[float], list[float], float, list[float], float]
"""Idle latencies, load latencies, load seconds, one-spawn latencies, raw seconds."""


async def _measure(url: str, count: int, idle_runs: int) -> Measured:
    connector = aiohttp.TCPConnector(limit=CONCURRENCY + 8)
    async with (
        aiohttp.ClientSession(url, connector=connector) as session,
        _Follower(session) as follower,
    ):
        for _ in range(WARM_UP):
            await follower.task()
        idle = [await follower.task() for _ in range(idle_runs)]
        load, load_s = await _load(follower, count)
    await _spawn_one()  # warm up
    raw_one = [await _spawn_one() for _ in range(max(idle_runs, 20))]
    raw_s = await _spawn_many(count)
    return idle, load, load_s, raw_one, raw_s


async def _load(follower: _Follower, count: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    left = iter(range(count))

    async def client() -> None:
        for _ in left:
            latencies.append(await follower.task())

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(CONCURRENCY):
            group.create_task(client())
    return latencies, time.perf_counter() - started


class _Follower:
    """Runs Tasks and follows them to COMPLETED on one shared event stream."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _Follower:
        events = await self.session.get(
            "/v1/events", params={"domain": DOMAIN}, timeout=aiohttp.ClientTimeout(total=None)
        )
        events.raise_for_status()
        await events.content.readline()  # the comment saying the subscription is live
        self._reader = asyncio.create_task(self._read(events))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._reader is not None
        self._reader.cancel()

    async def _read(self, events: aiohttp.ClientResponse) -> None:
        try:
            async for raw_line in events.content:
                if not raw_line.startswith(b"data:") or b"COMPLETED" not in raw_line:
                    continue
                after = json.loads(raw_line[5:]).get("after") or {}
                if after.get("state") != "COMPLETED":
                    continue
                waiting = self._waiting.pop(after["task_guid"], None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(after)
        finally:
            events.close()
            for waiting in self._waiting.values():
                if not waiting.done():
                    waiting.set_exception(RuntimeError("the event stream ended"))

    async def task(self) -> float:
        """Seconds from POST to the Task's COMPLETED event; the Task is then deleted."""
        guid = f"bench-{uuid.uuid4().hex[:16]}"
        body = {
            "task_guid": guid,
            "domain": DOMAIN,
            "stack": "linux",
            "memory_mb": 64,
            "action": {"run": {"path": "/bin/true"}},
        }
        completed = asyncio.get_running_loop().create_future()
        self._waiting[guid] = completed
        started = time.perf_counter()
        async with self.session.post("/v1/tasks", json=body) as reply:
            reply.raise_for_status()
        after = await asyncio.wait_for(completed, 120)
        elapsed = time.perf_counter() - started
        if after.get("failed"):
            raise RuntimeError(f"Task {guid} failed: {after.get('failure_reason')}")
        async with self.session.delete(f"/v1/tasks/{guid}") as reply:
            reply.raise_for_status()
        return elapsed


async def _spawn_one() -> float:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec("/bin/true")
    await proc.wait()
    return time.perf_counter() - started


async def _spawn_many(count: int) -> float:
    """Seconds to spawn and reap ``count`` /bin/true at concurrency 64."""
    left = iter(range(count))

    async def spawner() -> None:
        for _ in left:
            await _spawn_one()

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(CONCURRENCY):
            group.create_task(spawner())
    return time.perf_counter() - started


async def _cell_alone(count: int) -> float:
    """Seconds to make, run /bin/true in and destroy ``count`` containers at 64 at once."""
    home = bench_home()
    name = f"bench-{uuid.uuid4().hex[:8]}"  # its cgroup scope: not another run's
    backend = LocalBackend(home / "containers", hide=(home,), spares=SPARES, name=name)
    left = iter(range(count))

    async def cycle(guid: str) -> None:
        await backend.create(ContainerSpec(guid=guid, memory_mb=64))
        process = await backend.run(guid, ProcessSpec(path="/bin/true"), _drop, _drop)
        if await process.wait() != 0:
            raise RuntimeError("/bin/true failed in a container")
        await backend.destroy(guid)

    async def worker() -> None:
        for i in left:
            await cycle(f"bench-{i}")

    try:
        await backend.existing()  # as a starting cell does: spares are made from then
        for i in range(WARM_UP):
            await cycle(f"warm-{i}")
        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for _ in range(CONCURRENCY):
                group.create_task(worker())
        return time.perf_counter() - started
    finally:
        await backend.close()
        shutil.rmtree(home, ignore_errors=True)


def _drop(_line: str) -> None:
    """An output sink: /bin/true says nothing, and nothing is kept."""


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _ok(met: bool) -> str:
    return "met" if met else "MISSED"
