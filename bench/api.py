"""api: ``GET /v1/tasks/{guid}`` on a node holding 100,000 Tasks, against a bare aiohttp
handler answering the same bytes; and walking every page of ``GET /v1/tasks``.

The store is filled by ``bench.seed`` (100,000 Tasks and about as many ActualLRPs;
``--quick``: 10,000). The node runs with no cells, and with its converger and
auction retries pushed past the run, so nothing but the requests loads it (its
auctioneer takes the stored PENDING Tasks once at start and, with no cell, keeps
them). The bare server (``bench.bare``) runs in its own process like the node, and
answers each guid with the body diego gives for it, read from the same store.

Both are hit by the same aiohttp client in this process: ``--requests`` GETs of
guids drawn from every stored Task with a fixed seed, at concurrency 64, after a
warm-up, in two alternating rounds each (so drift hits both). Figures: req/s of
each and their ratio (target: diego at least 0.3 of bare), the CPU each server
and the client used (a client near 100% would cap the bare figure), and the time
to walk all of ``GET /v1/tasks?page_size=N`` by its page tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.node import QUIET, bench_home, cpu_seconds, started_node
from bench.seed import SEED, seed, size_of

CONCURRENCY = 64
TARGET_RATIO = 0.3
ROUNDS = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options."""
    parser.add_argument("--tasks", type=int, default=0, help="Tasks stored (100,000)")
    parser.add_argument("--requests", type=int, default=20_000, help="GETs of each server")
    parser.add_argument("--page-size", type=int, default=1000, help="page_size of the walk")
    parser.add_argument("--quick", action="store_true", help="10,000 Tasks, 10,000 GETs")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """GET /v1/tasks/{guid} over 100,000 Tasks against a bare aiohttp handler (>= 0.3x)."""
    n = size_of(args)
    count = 10_000 if args.quick else args.requests
    home = bench_home()
    started = time.perf_counter()
    seeded = seed(home / "data", n)
    seed_s = time.perf_counter() - started
    rng = random.Random(SEED + 1)
    guids = [rng.choice(seeded.task_guids) for _ in range(count)]
    warm = [rng.choice(seeded.task_guids) for _ in range(min(1000, count))]
    (home / "guids").write_text("\n".join(guids + warm))
    with (
        started_node("--cells", "0", config=QUIET, home=home) as node,
        _Bare(home) as (bare_url, bare_pid),
    ):
        measured = asyncio.run(
            _measure(node.url, node.pid, bare_url, bare_pid, guids, warm, args.page_size, n)
        )
    diego_rate = count / measured["diego_s"]
    bare_rate = count / measured["bare_s"]
    ratio = diego_rate / bare_rate
    figures: dict[str, Any] = {
        "benchmark": "api",
        "quick": bool(args.quick),
        "tasks_stored": seeded.tasks,
        "actual_lrps_stored": seeded.actuals,
        "requests": count,
        "concurrency": CONCURRENCY,
        "diego_req_per_s": round(diego_rate, 1),
        "bare_req_per_s": round(bare_rate, 1),
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "diego_cpu_share": round(measured["diego_cpu"] / measured["diego_s"], 2),
        "bare_cpu_share": round(measured["bare_cpu"] / measured["bare_s"], 2),
        "client_cpu_share_diego": round(measured["client_cpu_diego"] / measured["diego_s"], 2),
        "client_cpu_share_bare": round(measured["client_cpu_bare"] / measured["bare_s"], 2),
        "same_bodies": measured["same_bodies"],
        "page_size": args.page_size,
        "walk_pages": measured["pages"],
        "walk_tasks": measured["walked"],
        "walk_s": round(measured["walk_s"], 3),
        "seed_s": round(seed_s, 1),
    }
    figures["meets_target"] = ratio >= TARGET_RATIO and measured["same_bodies"]
    print(f"store: {seeded.describe()}" + (" (--quick: 10,000 Tasks)" if args.quick else ""))
    print(f"GET /v1/tasks/{{guid}}: {count} requests each, concurrency {CONCURRENCY}")
    print(
        f"  diego {diego_rate:8.1f} req/s   (server cpu {figures['diego_cpu_share']:.0%},"
        f" client cpu {figures['client_cpu_share_diego']:.0%})"
    )
    print(
        f"  bare  {bare_rate:8.1f} req/s   (server cpu {figures['bare_cpu_share']:.0%},"
        f" client cpu {figures['client_cpu_share_bare']:.0%})"
    )
    print(f"  ratio {ratio:.3f} (target >= {TARGET_RATIO}); same bodies: {figures['same_bodies']}")
    print(
        f"walk of GET /v1/tasks?page_size={args.page_size}: {measured['walked']} Tasks in"
        f" {measured['pages']} pages, {measured['walk_s']:.2f} s"
    )
    print(json.dumps(figures))
    return figures


class _Bare:
    """The bare server in its own process, on the seeded store; (url, pid)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> tuple[str, int]:
        command = [sys.executable, "-m", "bench.bare", str(self.home / "data")]
        self.proc = subprocess.Popen(
            [*command, str(self.home / "guids")], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("bare-listening url="):
            self.proc.kill()
            raise RuntimeError(f"the bare server did not start: {line!r}")
        return line.strip().partition("=")[2], self.proc.pid

    def __exit__(self, *_: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


async def _measure(
    diego: str,
    diego_pid: int,
    bare: str,
    bare_pid: int,
    guids: list[str],
    warm: list[str],
    page_size: int,
    n: int,
) -> dict[str, Any]:
    figures: dict[str, Any] = dict.fromkeys(
        ("diego_s", "bare_s", "diego_cpu", "bare_cpu", "client_cpu_diego", "client_cpu_bare"), 0.0
    )
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        for url in (diego, bare):
            await _hit(session, url, warm)
        sample = guids[:200]
        diego_bodies = await _bodies(session, diego, sample)
        bare_bodies = await _bodies(session, bare, sample)
        figures["same_bodies"] = diego_bodies == bare_bodies
        share = len(guids) // ROUNDS
        for r in range(ROUNDS):
            part = guids[r * share : len(guids) if r == ROUNDS - 1 else (r + 1) * share]
            for name, url, pid in (("diego", diego, diego_pid), ("bare", bare, bare_pid)):
                cpu, client = cpu_seconds(pid), time.process_time()
                figures[f"{name}_s"] += await _hit(session, url, part)
                figures[f"{name}_cpu"] += cpu_seconds(pid) - cpu
                figures[f"client_cpu_{name}"] += time.process_time() - client
        figures["walk_s"], figures["pages"], figures["walked"] = await _walk(
            session, diego, page_size
        )
    if figures["walked"] != n:
        raise RuntimeError(f"the walk saw {figures['walked']} Tasks, not {n}")
    return figures


async def _hit(session: aiohttp.ClientSession, url: str, guids: list[str]) -> float:
    """Seconds to GET every guid, CONCURRENCY at a time."""
    todo = iter(guids)

    async def client() -> None:
        for guid in todo:
            async with session.get(f"{url}/v1/tasks/{guid}") as reply:
                if reply.status != 200:
                    raise RuntimeError(f"GET {guid}: {reply.status} {await reply.text()}")
                await reply.read()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return time.perf_counter() - started


async def _bodies(session: aiohttp.ClientSession, url: str, guids: list[str]) -> list[bytes]:
    found = []
    for guid in guids:
        async with session.get(f"{url}/v1/tasks/{guid}") as reply:
            found.append(await reply.read())
    return found


async def _walk(session: aiohttp.ClientSession, url: str, page_size: int) -> tuple[float, int, int]:
    """Seconds, pages and Tasks of walking every page of GET /v1/tasks."""
    started = time.perf_counter()
    pages = walked = 0
    params = {"page_size": str(page_size)}
    while True:
        async with session.get(f"{url}/v1/tasks", params=params) as reply:
            reply.raise_for_status()
            walked += len(await reply.json())
            token = reply.headers.get("Diego-Next-Page-Token")
        pages += 1
        if not token:
            break
        params = {"page_size": str(page_size), "page_token": token}
    return time.perf_counter() - started, pages, walked
