"""docker: a no-op Task on the Docker backend against a raw ``docker run`` of the image.

In the same run, one after the other and alternating so that drift hits both:
diego's time from ``POST /v1/tasks`` to the Task being COMPLETED (seen on the
event stream, no polling), for a Task running ``true`` in diego/busybox on a
node with one Docker cell; and ``docker run --rm --network none diego/busybox
true`` by the engine's own CLI. Target: diego's median at most 1.2x the raw one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import time
import uuid
from typing import Any

import aiohttp

from bench.node import running_node

IMAGE = "diego/busybox:latest"
DOCKER = "/usr/bin/docker"
TARGET = 1.2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options."""
    parser.add_argument("--runs", type=int, default=30, help="Tasks and raw runs each")
    parser.add_argument("--quick", action="store_true", help="10 runs each")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """A no-op Task on a Docker cell against a raw docker run (target <= 1.2x)."""
    runs = 10 if args.quick else args.runs
    config = '[cell]\nbackend = "docker"\n'
    with running_node("--cells", "1", config=config) as url:
        diego, raw = asyncio.run(_measure(url, runs))
    ratio = statistics.median(diego) / statistics.median(raw)
    figures: dict[str, Any] = {
        "benchmark": "docker",
        "runs": runs,
        "diego_median_s": round(statistics.median(diego), 4),
        "diego_p90_s": round(_quantile(diego, 0.9), 4),
        "raw_median_s": round(statistics.median(raw), 4),
        "raw_p90_s": round(_quantile(raw, 0.9), 4),
        "ratio": round(ratio, 3),
        "target_ratio": TARGET,
    }
    figures["meets_target"] = ratio <= TARGET
    print(f"no-op Task on a Docker cell, {runs} runs each, one at a time")
    print(f"  diego POST -> COMPLETED  median {figures['diego_median_s'] * 1000:7.1f} ms")
    print(f"  docker run --rm          median {figures['raw_median_s'] * 1000:7.1f} ms")
    print(f"  ratio {figures['ratio']:.3f} (target <= {TARGET})")
    print(json.dumps(figures))
    return figures


async def _measure(url: str, runs: int) -> tuple[list[float], list[float]]:
    diego: list[float] = []
    raw: list[float] = []
    async with aiohttp.ClientSession(url) as session:
        await _task(session)  # warm up: the image, the engine's caches, the node
        _raw()
        for _ in range(runs):
            diego.append(await _task(session))
            raw.append(await asyncio.to_thread(_raw))
    return diego, raw


async def _task(session: aiohttp.ClientSession) -> float:
    """Seconds from POST to the Task's COMPLETED event; the Task is then deleted."""
    guid = f"bench-{uuid.uuid4().hex[:12]}"
    body = {
        "task_guid": guid,
        "domain": "bench",
        "stack": "linux",
        "root_fs": "docker:///diego/busybox#latest",
        "log_guid": guid,
        "action": {"run": {"path": "true"}},
    }
    async with session.get("/v1/events", timeout=aiohttp.ClientTimeout(total=60)) as events:
        await events.content.readline()  # the comment saying the subscription is live
        started = time.perf_counter()
        async with session.post("/v1/tasks", json=body) as reply:
            reply.raise_for_status()
        async for raw_line in events.content:
            line = raw_line.decode()
            if line.startswith("data:") and guid in line:
                data = json.loads(line[5:])
                after = data.get("after") or {}
                if after.get("state") == "COMPLETED":
                    elapsed = time.perf_counter() - started
                    if after.get("failed"):
                        async with session.get(f"/v1/logs/{guid}") as logs:
                            said = await logs.text()
                        raise RuntimeError(
                            f"the Task failed: {after.get('failure_reason')}\n{said}"
                        )
                    break
    async with session.delete(f"/v1/tasks/{guid}") as reply:
        reply.raise_for_status()
    return elapsed


def _raw() -> float:
    started = time.perf_counter()
    subprocess.run(
        [DOCKER, "run", "--rm", "--network", "none", IMAGE, "true"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
