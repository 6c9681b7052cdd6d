"""crash: ``kill -9`` of a node with Tasks in flight, then a restart on its data dir.

A real ``diego serve`` with one local cell takes ``--tasks`` Tasks (POSTed at
concurrency 50). Each runs three steps: the first appends ``a`` to /tmp/steps,
the second naps (a few seconds, spread over the Tasks, so that some naps end
while the node is down and some after it is back; run a second time, it exits 3)
and appends ``b``, the third appends ``c``; its result_file is /tmp/steps. Once
every Task is RUNNING (or the placement deadline passed) and processes of half of
them run (or their number stopped growing), the node is killed -9,
the Tasks' processes on the host are counted (they must outlive it), and the node
is started again on the same data dir. Then every Task is followed to COMPLETED.

Counted: lost (no longer known to the node), run twice (a step ran again: exit 3,
or a result other than ``a b c``), failed otherwise, and host processes of the
Tasks left once all are done and deleted. Target: 0 of each, every Task succeeded.

``--tes`` does the same with GA4GH TES tasks: three executors doing the three steps
in a volume (/data), the last printing /data/steps; a task succeeded if it is
COMPLETE and that executor printed ``a b c``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.node import DIEGO, _wait_listening, bench_home, marked_pids

CONCURRENCY = 50
DOMAIN = "crash"
MARK = "DIEGO_CRASH_BENCH"
CONFIG = """\
[cell]
backend = "{backend}"
count = 1
memory_mb = 65536
disk_mb = 65536
max_containers = {count}
spare_containers = 2
presence_ttl = 10.0
"""
STEP_2 = "[ ! -e /tmp/ran ] || exit 3; touch /tmp/ran; sleep $NAP; echo b >> /tmp/steps"
TES_IMAGE = "diego/busybox:latest"
"""The executors' image on Docker cells (``scripts/docker.sh`` builds it)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options."""
    parser.add_argument("--tasks", type=int, default=1000, help="Tasks in flight at the kill")
    parser.add_argument("--quick", action="store_true", help="200 Tasks")
    parser.add_argument(
        "--backend", choices=("local", "docker"), default="local", help="the cell's backend"
    )
    parser.add_argument("--tes", action="store_true", help="TES tasks, not Diego Tasks")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Tasks in flight through kill -9 and a restart: 0 lost, 0 twice, 0 failed, 0 left."""
    count = 200 if args.quick else args.tasks
    home = bench_home()
    marker = f"m{os.getpid()}"
    try:
        (home / "diego.toml").write_text(CONFIG.format(count=count, backend=args.backend))
        first, url = _start(home, "serve-1.log")
        guids, placed_s = asyncio.run(_submit(url, count, marker, args.tes))
        _settle(marker, count)
        alive_before = len(_marked(marker))
        first.send_signal(signal.SIGKILL)
        first.wait()
        time.sleep(0.5)
        alive_after = len(_marked(marker))
        second, url = _start(home, "serve-2.log")
        try:
            outcome = asyncio.run((_follow_tes if args.tes else _follow)(url, guids))
            deadline = time.monotonic() + 30
            while _marked(marker) and time.monotonic() < deadline:
                time.sleep(0.2)
            left = len(_marked(marker))
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(60)
        log = (home / "serve-2.log").read_text(errors="replace")
        resumed = log.count("container-resumed")
        refusals = collections.Counter(
            line.partition(" reason=")[2]
            for line in log.splitlines()
            if "container-not-reopened" in line
        )
    finally:
        if not os.environ.get("DIEGO_BENCH_KEEP"):
            shutil.rmtree(home, ignore_errors=True)
    figures: dict[str, Any] = {
        "benchmark": "crash",
        "backend": args.backend,
        "kind": "TES tasks" if args.tes else "Tasks",
        "tasks": count,
        "seconds_to_running": round(placed_s, 1),
        "processes_before_kill": alive_before,
        "processes_after_kill": alive_after,
        "resumed": resumed,
        **outcome,
        "left_on_host": left,
        "target": "0 lost, 0 twice, 0 failed, 0 left",
    }
    figures["meets_target"] = (
        not (figures["lost"] or figures["twice"] or figures["failed"] or left)
        and figures["succeeded"] == count
    )
    print(f"kill -9 of a node with {count} {figures['kind']} in flight, then a restart")
    print(f"  their processes: {alive_before} before the kill, {alive_after} after it")
    print(
        f"  after the restart: {resumed} resumed; {figures['succeeded']} succeeded,"
        f" {figures['lost']} lost, {figures['twice']} run twice, {figures['failed']} failed"
    )
    print(f"  left on the host once done: {left} processes")
    for reason, times in refusals.most_common():
        print(f"  not reopened, {times}: {reason}")
    print(json.dumps(figures))
    return figures


def _start(home: Path, log_name: str) -> tuple[subprocess.Popen[bytes], str]:
    log = home / log_name
    command = [str(DIEGO), "serve", "--data-dir", str(home / "data"), "--listen", "127.0.0.1:0"]
    command += ["--config", str(home / "diego.toml")]
    with open(log, "wb") as err:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
    return proc, _wait_listening(proc, log)


def _request(guid: str, marker: str, nap: str) -> dict[str, Any]:
    steps = ["echo a >> /tmp/steps", STEP_2, "echo c >> /tmp/steps"]
    return {
        "task_guid": guid,
        "domain": DOMAIN,
        "stack": "linux",
        "memory_mb": 32,
        "env": [{"name": MARK, "value": marker}, {"name": "NAP", "value": nap}],
        "action": {
            "serial": {"actions": [{"run": {"path": "/bin/sh", "args": ["-c", s]}} for s in steps]}
        },
        "result_file": "/tmp/steps",
    }


def _tes_request(marker: str, nap: str) -> dict[str, Any]:
    steps = [
        "echo a >> /data/steps",
        STEP_2.replace("/tmp/", "/data/"),
        "echo c >> /data/steps; cat /data/steps",
    ]
    env = {MARK: marker, "NAP": nap}
    return {
        "executors": [{"image": TES_IMAGE, "command": ["sh", "-c", s], "env": env} for s in steps],
        "volumes": ["/data"],
        "resources": {"ram_gb": 0.03125},
    }


async def _submit(url: str, count: int, marker: str, tes: bool) -> tuple[list[str], float]:
    """POST the Tasks (or TES tasks), wait until all are RUNNING (at most 120 s); their
    guids (ids), seconds."""
    guids: list[str] = []
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        queue = list(range(count))

        async def client() -> None:
            while queue:
                i = queue.pop()
                nap = str(3 + (i % 5) * 2)  # 3 to 11 s
                if tes:
                    body, path = _tes_request(marker, nap), "/ga4gh/tes/v1/tasks"
                else:
                    body, path = _request(f"crash-{i}", marker, nap), "/v1/tasks"
                async with session.post(f"{url}{path}", json=body) as reply:
                    assert reply.status in (200, 201), await reply.text()
                    created = await reply.json()
                guids.append(created["id"] if tes else created["task_guid"])

        await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
        domain = "tes" if tes else DOMAIN
        while time.monotonic() - started < 120:
            async with session.get(f"{url}/v1/tasks?domain={domain}") as reply:
                tasks = await reply.json()
            if sum(t["state"] in ("RUNNING", "COMPLETED") for t in tasks) == count:
                break
            await asyncio.sleep(0.2)
    return guids, time.monotonic() - started


async def _follow(url: str, guids: list[str]) -> dict[str, int]:
    """Wait (at most 300 s) until every Task is COMPLETED; count what became of them."""
    counts = {"succeeded": 0, "lost": 0, "twice": 0, "failed": 0, "unfinished": 0}
    deadline = time.monotonic() + 300
    async with aiohttp.ClientSession() as session:
        for guid in guids:
            while True:
                async with session.get(f"{url}/v1/tasks/{guid}") as reply:
                    task = await reply.json() if reply.status == 200 else None
                if task is None:
                    counts["lost"] += 1
                    break
                if task["state"] == "COMPLETED":
                    if not task["failed"] and task["result"] == "a\nb\nc\n":
                        counts["succeeded"] += 1
                    elif not task["failed"] or "status 3" in task["failure_reason"]:
                        counts["twice"] += 1
                    else:
                        counts["failed"] += 1
                        print(f"  failed: {guid} {task['failure_reason']}")
                    async with session.delete(f"{url}/v1/tasks/{guid}"):
                        pass
                    break
                if time.monotonic() > deadline:
                    counts["unfinished"] += 1
                    break
                await asyncio.sleep(0.2)
    return counts


async def _follow_tes(url: str, ids: list[str]) -> dict[str, int]:
    """Wait (at most 300 s) until every TES task is final; count what became of them."""
    counts = {"succeeded": 0, "lost": 0, "twice": 0, "failed": 0, "unfinished": 0}
    deadline = time.monotonic() + 300
    async with aiohttp.ClientSession() as session:
        for task_id in ids:
            while True:
                path = f"{url}/ga4gh/tes/v1/tasks/{task_id}?view=FULL"
                async with session.get(path) as reply:
                    task = await reply.json() if reply.status == 200 else None
                if task is None:
                    counts["lost"] += 1
                    break
                state = task["state"]
                if state not in ("QUEUED", "INITIALIZING", "RUNNING", "CANCELING"):
                    logs = [e for attempt in task.get("logs", []) for e in attempt.get("logs", [])]
                    codes = [e.get("exit_code") for e in logs]
                    if state == "COMPLETE" and logs and logs[-1].get("stdout") == "a\nb\nc\n":
                        counts["succeeded"] += 1
                    elif state == "COMPLETE" or 3 in codes:
                        counts["twice"] += 1
                    else:
                        counts["failed"] += 1
                        said = [
                            line for a in task.get("logs", []) for line in a.get("system_logs", [])
                        ]
                        print(f"  failed: {task_id} {state} {said}")
                    break
                if time.monotonic() > deadline:
                    counts["unfinished"] += 1
                    break
                await asyncio.sleep(0.2)
    return counts


def _settle(marker: str, count: int, deadline: float = 60.0) -> None:
    """Wait until processes of half the Tasks run, or their number has stopped growing
    for a second (the first have ended by then), at most ``deadline`` seconds: a Task
    is RUNNING in the BBS before its container is made, and a kill before any runs
    would test only the containers made again."""
    end = time.monotonic() + deadline
    most, since = 0, time.monotonic()
    while time.monotonic() < end:
        running = len(_marked(marker))
        if running >= count // 2 or (most and time.monotonic() - since > 1.0):
            return
        if running > most:
            most, since = running, time.monotonic()
        time.sleep(0.2)


def _marked(marker: str) -> list[int]:
    return marked_pids(MARK, marker)
