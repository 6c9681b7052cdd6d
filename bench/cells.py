"""cells: the auctioneer placing LRP instances on 100 cells over their rep API.

100 simulated cells (capacity only: ``perform`` reserves and starts nothing) are
served by the real rep API (``diego.cell.rep_api``, the cell token checked on every
call) from a few worker processes on loopback. One real ``Auctioneer`` in this
process reaches them through ``HttpCell`` clients: each auction reads every cell's
snapshot over HTTP, runs ``schedule()``, and posts each cell its work.

Figure: placements per second end to end for 10,000 LRP instances (1,000 processes x
10, of 64 to 256 MB), in one auction (the auctioneer's default batch) and in batches
of 1,000, against ``schedule()`` alone on the same snapshots in the same run.
Target: at least 5,000 placements/s over HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing
import random
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
from aiohttp import web

from diego.api.errors import json_errors
from diego.cell import rep_api
from diego.models.cells import Capabilities, CellPresence, CellReport
from diego.models.lrp import ActualLRP
from diego.models.work import CellSnapshot, LRPWork, Resources, TaskWork, Work
from diego.scheduling.auction import schedule
from diego.scheduling.auctioneer import Auctioneer
from diego.scheduling.cell_http import HttpCells
from diego.scheduling.cells import EmbeddedCells

TOKEN = "bench-cells-token"
STACK = "cflinuxfs4"
ZONES = 3
TOTAL = Resources(memory_mb=32_768, disk_mb=131_072, containers=200)
SIZES_MB = (64, 128, 256)
TARGET_RATE = 5_000


class SimulatedRep:
    """A cell of capacity alone: what the rep API serves, with no containers."""

    def __init__(self, cell_id: str, zone: str) -> None:
        self._cell_id = cell_id
        self.zone = zone
        self._present = asyncio.Event()
        self._present.set()
        self.available = TOTAL
        self.counts: collections.Counter[str] = collections.Counter()

    @property
    def cell_id(self) -> str:
        return self._cell_id

    @property
    def present(self) -> asyncio.Event:
        return self._present

    async def state(self) -> CellSnapshot:
        return CellSnapshot(
            cell_id=self._cell_id,
            zone=self.zone,
            stacks=frozenset({STACK}),
            rootfs_providers=frozenset({"preloaded"}),
            total=TOTAL,
            available=self.available,
            lrp_counts=dict(self.counts),
        )

    async def perform(self, work: list[Work]) -> list[Work]:
        refused: list[Work] = []
        for item in work:
            a = self.available
            if item.memory_mb > a.memory_mb or item.disk_mb > a.disk_mb or a.containers < 1:
                refused.append(item)
                continue
            self.available = Resources(
                memory_mb=a.memory_mb - item.memory_mb,
                disk_mb=a.disk_mb - item.disk_mb,
                containers=a.containers - 1,
            )
            if isinstance(item, LRPWork):
                self.counts[item.process_guid] += 1
        return refused

    async def stop_lrp(self, actual: ActualLRP) -> bool:
        return False

    async def cancel_task(self, guid: str) -> None:
        return None

    async def report(self) -> CellReport:
        return CellReport(
            cell_id=self._cell_id,
            zone=self.zone,
            stacks=(STACK,),
            rootfs_providers=("preloaded",),
            capacity=TOTAL,
            available=self.available,
            containers=sum(self.counts.values()),
            evacuating=False,
            capabilities=Capabilities(
                backend="simulated",
                memory_limit=False,
                cpu_weight=False,
                disk_limit=False,
                user_namespaces=False,
                network_isolation=False,
                egress_rules="none",
            ),
        )

    async def begin_evacuation(self) -> None:
        return None

    def reset(self) -> None:
        self.available = TOTAL
        self.counts.clear()


def _serve(first: int, count: int, conn: Connection) -> None:
    """A worker process: serve cells ``first`` .. ``first+count-1`` until told to stop;
    "reset" empties them."""
    asyncio.run(_serve_async(first, count, conn))


async def _serve_async(first: int, count: int, conn: Connection) -> None:
    reps = [SimulatedRep(f"cell-{i:03d}", f"z{i % ZONES}") for i in range(first, first + count)]
    app = web.Application(middlewares=[json_errors], client_max_size=64 * 1024 * 1024)
    rep_api.add_routes(app, reps, TOKEN)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    host, port = runner.addresses[0][:2]
    conn.send(f"http://{host}:{port}")
    loop = asyncio.get_running_loop()
    while True:
        message = await loop.run_in_executor(None, conn.recv)
        if message == "reset":
            for rep in reps:
                rep.reset()
            conn.send("ok")
        else:
            break
    await runner.cleanup()


class NoBBS:
    """The auctioneer's BBS: nothing fails in this workload; counts it if it does."""

    def __init__(self) -> None:
        self.failures = 0

    async def reject_task(self, guid: str, failure_reason: str) -> Any:
        self.failures += 1

    async def fail_actual_lrp_placement(self, process_guid: str, index: int, error: str) -> Any:
        self.failures += 1


def workload(processes: int, instances: int, seed: int = 1) -> list[LRPWork]:
    rng = random.Random(seed)
    work = []
    for p in range(processes):
        memory_mb = rng.choice(SIZES_MB)
        work += [
            LRPWork(f"p{p:04d}", i, "bench", STACK, "", memory_mb, 2 * memory_mb)
            for i in range(instances)
        ]
    return work


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options."""
    parser.add_argument("--cells", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="processes serving the cells")
    parser.add_argument("--processes", type=int, default=1_000)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each case; the best counts")
    parser.add_argument("--quick", action="store_true", help="one run of each case")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Placements/s over HTTP on 100 cells (target >= 5,000/s)."""
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    repeat = 1 if args.quick else args.repeat
    context = multiprocessing.get_context("spawn")
    workers, conns, urls = [], [], []
    share = -(-args.cells // args.workers)
    for w in range(args.workers):
        first = w * share
        count = min(share, args.cells - first)
        ours, theirs = context.Pipe()
        process = context.Process(target=_serve, args=(first, count, theirs), daemon=True)
        process.start()
        workers.append(process)
        conns.append(ours)
        urls.append((first, count, ours.recv()))
    try:
        work = workload(args.processes, args.instances)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0)
        ) as session:
            connector = HttpCells(TOKEN, session)
            clients = [
                connector.connect(CellPresence(cell_id=f"cell-{i:03d}", capacity=TOTAL, url=url))
                for first, count, url in urls
                for i in range(first, first + count)
            ]
            directory = EmbeddedCells(clients)
            figures: dict[str, Any] = {
                "benchmark": "cells",
                "cells": args.cells,
                "workers": args.workers,
                "instances": len(work),
                "repeat": repeat,
            }
            for name, batch in (("one_batch", len(work)), ("batches_of_1000", 1_000)):
                best = None
                for _ in range(repeat):
                    _reset(conns)
                    seconds, placed, failures = await _auction(directory, work, batch)
                    if best is None or seconds < best[0]:
                        best = (seconds, placed, failures)
                assert best is not None
                seconds, placed, failures = best
                figures[name] = {
                    "seconds": round(seconds, 3),
                    "placed": placed,
                    "failures": failures,
                    "per_s": round(placed / seconds),
                }
                print(
                    f"over HTTP, {name.replace('_', ' ')}: {placed:,} placed in {seconds:.3f} s "
                    f"= {placed / seconds:,.0f}/s (failures {failures})",
                    flush=True,
                )
            _reset(conns)
            snapshots = list(await asyncio.gather(*(c.state() for c in clients)))
        in_process = _schedule_rate(snapshots, work, repeat)
        figures["schedule_alone_per_s"] = round(in_process)
        figures["target_per_s"] = TARGET_RATE
        rate = figures["one_batch"]["per_s"]
        figures["ratio_to_schedule"] = round(rate / in_process, 3)
        figures["met"] = rate >= TARGET_RATE and figures["one_batch"]["placed"] == len(work)
        print(
            f"schedule() alone on the same snapshots: {in_process:,.0f}/s; over HTTP is "
            f"{figures['ratio_to_schedule']:.2f} of it; target >= {TARGET_RATE:,}/s over "
            f"HTTP: {'met' if figures['met'] else 'NOT met'}"
        )
        print(json.dumps(figures))
        return figures
    finally:
        for conn in conns:
            conn.send("stop")
        for process in workers:
            process.join(10)
            if process.is_alive():
                process.kill()


def _reset(conns: Sequence[Connection]) -> None:
    for conn in conns:
        conn.send("reset")
    for conn in conns:
        assert conn.recv() == "ok"


async def _auction(
    directory: EmbeddedCells, work: list[LRPWork], batch: int
) -> tuple[float, int, int]:
    """Submit ``work`` and auction it ``batch`` at a time; (seconds, placed, failures)."""
    bbs = NoBBS()
    auctioneer = Auctioneer(bbs, directory, max_batch=batch)
    started = time.perf_counter()
    auctioneer.submit_work(work)
    while auctioneer.waiting() and auctioneer.batches < 10 * len(work) // batch + 10:
        before = auctioneer.waiting()
        await auctioneer.auction(with_carried=True)
        if auctioneer.waiting() >= before:
            break  # nothing more fits
    seconds = time.perf_counter() - started
    placed = 0
    for client in await directory.clients():
        state = await client.state()
        placed += sum(state.lrp_counts.values())
    return seconds, placed, bbs.failures


def _schedule_rate(cells: list[CellSnapshot], work: list[LRPWork], repeat: int) -> float:
    items: list[TaskWork | LRPWork] = list(work)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        result = schedule(cells, items)
        best = min(best, time.perf_counter() - started)
    assert len(result.placements) == len(work), "the simulated cells are too small"
    return len(work) / best
