"""memory: the peak RSS of a node holding 100,000 Tasks and 100,000 ActualLRPs.

The store is filled by ``bench.seed`` (``--quick``: 10,000 of each) at the wall
clock's now, then a real ``diego serve`` starts on it: the default node (SQLite,
one local cell, here named ``memnode-0``), with its converger every 5 s instead of
30 s. Its peak RSS (VmHWM of /proc/PID/status) is read once two converger passes
have ended (the node logs ``convergence-pass-done``).

No seeded work can run here: it is all of the stack ``bench``, which the node's
cell does not serve, and the Tasks and instances placed on cells are placed on the
seeded ``bench-cell-NN``, which exist only as presence rows. What the node does
with it, all of which the peak includes:

- at start, the auctioneer is given every PENDING Task (about 20%) and rejects
  each (no cell serves its stack): each is failed, ``found no compatible cell``;
- each converger pass reads every Task, DesiredLRP and ActualLRP; the first fails
  the CLAIMED and RUNNING Tasks of the dead ``bench-cell-19``, reaps the Tasks
  completed over 2 min ago, demotes RESOLVING ones, kicks the few callbacks (to
  a closed port), unclaims the instances of the dead cell, restarts the CRASHED
  ones whose backoff has passed, creates the missing ones and removes the extra
  ones (asking for the RUNNING ones to be stopped on a cell it does not have);
- every instance it auctions is left unplaced (no cell for the stack), and the
  auctioneer records that on each once.

Target: at most 500 MB.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bench.node import bench_home, proc_status, started_node
from bench.seed import seed, size_of

TARGET_MB = 500.0
PASSES = 2
DONE = "convergence-pass-done"
CONFIG = """\
[cell]
name_prefix = "memnode"

[converger]
interval = 5.0
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options."""
    parser.add_argument("--tasks", type=int, default=0, help="Tasks stored (100,000)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for passes")
    parser.add_argument("--quick", action="store_true", help="10,000 Tasks and ActualLRPs")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The node's peak RSS with 100,000 Tasks and 100,000 ActualLRPs stored (<= 500 MB)."""
    n = size_of(args)
    home = bench_home()
    seeded = seed(home / "data", n)
    with started_node(config=CONFIG, home=home) as node:
        started = time.monotonic()
        listening_kb = proc_status(node.pid)["VmRSS"]
        samples: list[tuple[float, int]] = []
        while node.log_text().count(DONE) < PASSES:
            if time.monotonic() - started > args.timeout:
                raise RuntimeError(f"no {PASSES} converger passes in {args.timeout} s")
            samples.append((time.monotonic() - started, proc_status(node.pid)["VmRSS"]))
            time.sleep(0.2)
        status = proc_status(node.pid)
        waited = time.monotonic() - started
        passes = [
            float(line.rpartition("seconds=")[2])
            for line in node.log_text().splitlines()
            if DONE in line
        ]
    peak_mb = status["VmHWM"] / 1024
    figures: dict[str, Any] = {
        "benchmark": "memory",
        "quick": bool(args.quick),
        "tasks_stored": seeded.tasks,
        "actual_lrps_stored": seeded.actuals,
        "desired_lrps_stored": seeded.desired,
        "peak_rss_mb": round(peak_mb, 1),
        "rss_after_mb": round(status["VmRSS"] / 1024, 1),
        "rss_listening_mb": round(listening_kb / 1024, 1),
        "seconds_to_two_passes": round(waited, 1),
        "pass_seconds": passes,
        "target_mb": TARGET_MB,
    }
    figures["meets_target"] = peak_mb <= TARGET_MB
    peak_at = max(samples, key=lambda s: s[1])[0] if samples else 0.0
    print(f"store: {seeded.describe()}" + (" (--quick: 10,000 Tasks)" if args.quick else ""))
    print(
        f"node RSS: {figures['rss_listening_mb']} MB once listening, peak"
        f" {figures['peak_rss_mb']} MB (about {peak_at:.0f} s in), {figures['rss_after_mb']} MB"
        f" after {PASSES} converger passes ({', '.join(f'{p:.1f} s' for p in passes)});"
        f" target <= {TARGET_MB:.0f} MB"
    )
    print(json.dumps(figures))
    return figures
