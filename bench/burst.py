"""burst: 10,000 ``POST /v1/tasks`` at concurrency 50, against a bare aiohttp server
answering the same bytes.

A workflow engine submits its jobs in bursts. The node runs with no cells and its
converger and auction retries pushed past the run, so what is measured is the
create path: decode and validate, the store's insert, the event, the auctioneer
taking each new Task (with no cell it keeps them PENDING). The bare server
(``bench.bare create``) runs in its own process like the node; it reads and
parses each request body and answers the bytes diego answered for the first
create. Both are hit by the same aiohttp client in this process, after a warm-up.
Figures: each create's latency (p50, p99, max), creates/s, errors, for diego and
bare. Target: diego's p99 at most 250 ms, 0 errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.node import QUIET, bench_home, cpu_seconds, started_node

CONCURRENCY = 50
TARGET_P99_MS = 250.0
WARM = 200


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options."""
    parser.add_argument("--creates", type=int, default=10_000, help="Tasks created (10,000)")
    parser.add_argument("--quick", action="store_true", help="2,000 creates")


def task_request(guid: str) -> dict[str, Any]:
    """A Task like a workflow engine's job: a script, env, a result file, a callback-less
    run; about 1 KB of JSON."""
    return {
        "task_guid": guid,
        "domain": "burst",
        "stack": "linux",
        "log_guid": guid,
        "memory_mb": 64,
        "disk_mb": 64,
        "result_file": "/home/vcap/result",
        "annotation": "a job of a burst",
        "env": [{"name": f"VAR_{i}", "value": f"value-{i}"} for i in range(8)],
        "action": {
            "serial": {
                "actions": [
                    {"run": {"path": "/bin/sh", "args": ["-c", "echo start; sleep 1"]}},
                    {"run": {"path": "/bin/sh", "args": ["-c", "echo done > result"]}},
                ]
            }
        },
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """POST /v1/tasks at concurrency 50: diego's p99 ≤ 250 ms, 0 errors; bare beside it."""
    count = 2_000 if args.quick else args.creates
    home = bench_home()
    with started_node("--cells", "0", config=QUIET, home=home) as node:
        sample = asyncio.run(_sample(node.url))
        (home / "answer").write_bytes(sample)
        with _Bare(home / "answer") as (bare_url, bare_pid):
            measured = asyncio.run(_measure(node.url, node.pid, bare_url, bare_pid, count))
    figures: dict[str, Any] = {"benchmark": "burst", "quick": bool(args.quick)}
    figures.update(creates=count, concurrency=CONCURRENCY, target_p99_ms=TARGET_P99_MS)
    for name in ("diego", "bare"):
        m = measured[name]
        figures[f"{name}_p50_ms"] = round(_quantile(m["latencies"], 0.50) * 1000, 1)
        figures[f"{name}_p99_ms"] = round(_quantile(m["latencies"], 0.99) * 1000, 1)
        figures[f"{name}_max_ms"] = round(max(m["latencies"]) * 1000, 1)
        figures[f"{name}_creates_per_s"] = round(count / m["seconds"], 1)
        figures[f"{name}_errors"] = m["errors"]
        figures[f"{name}_cpu_share"] = round(m["cpu"] / m["seconds"], 2)
    figures["meets_target"] = (
        figures["diego_p99_ms"] <= TARGET_P99_MS and figures["diego_errors"] == 0
    )
    print(f"POST /v1/tasks: {count} creates each, concurrency {CONCURRENCY}")
    for name in ("diego", "bare"):
        print(
            f"  {name:5} p50 {figures[f'{name}_p50_ms']:7.1f} ms  p99 "
            f"{figures[f'{name}_p99_ms']:7.1f} ms  max {figures[f'{name}_max_ms']:7.1f} ms  "
            f"{figures[f'{name}_creates_per_s']:7.1f}/s  errors {figures[f'{name}_errors']}"
            f"  (server cpu {figures[f'{name}_cpu_share']:.0%})"
        )
    print(f"  target: diego p99 <= {TARGET_P99_MS:.0f} ms, 0 errors: {figures['meets_target']}")
    print(json.dumps(figures))
    return figures


class _Bare:
    """The bare create server in its own process; (url, pid)."""

    def __init__(self, answer: Path) -> None:
        self.answer = answer
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> tuple[str, int]:
        command = [sys.executable, "-m", "bench.bare", "create", str(self.answer)]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
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


async def _sample(url: str) -> bytes:
    """The bytes diego answers for one create."""
    request = task_request("burst-sample")
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/tasks", json=request) as reply,
    ):
        body = await reply.read()
        if reply.status != 201:
            raise RuntimeError(f"the sample create failed: {reply.status} {body!r}")
        return body


async def _measure(diego: str, diego_pid: int, bare: str, bare_pid: int, count: int) -> Any:
    measured: dict[str, Any] = {}
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        for name, url, pid in (("diego", diego, diego_pid), ("bare", bare, bare_pid)):
            await _burst(session, url, [f"warm-{name}-{i}" for i in range(WARM)])
            cpu = cpu_seconds(pid)
            started = time.perf_counter()
            latencies, errors = await _burst(session, url, [f"burst-{i}" for i in range(count)])
            seconds = time.perf_counter() - started
            measured[name] = {
                "latencies": latencies,
                "errors": errors,
                "seconds": seconds,
                "cpu": cpu_seconds(pid) - cpu,
            }
    return measured


async def _burst(
    session: aiohttp.ClientSession, url: str, guids: list[str]
) -> tuple[list[float], int]:
    """Each create's seconds, and how many failed, CONCURRENCY at a time."""
    todo = iter(guids)
    latencies: list[float] = []
    errors = 0
    bodies = {guid: json.dumps(task_request(guid)).encode() for guid in guids}
    headers = {"Content-Type": "application/json"}

    async def client() -> None:
        nonlocal errors
        for guid in todo:
            started = time.perf_counter()
            try:
                async with session.post(
                    f"{url}/v1/tasks", data=bodies[guid], headers=headers
                ) as reply:
                    await reply.read()
                    if reply.status != 201:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return latencies, errors


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
