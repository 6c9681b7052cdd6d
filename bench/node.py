"""A real ``diego serve`` for a benchmark: started on a loopback port, stopped after."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import attrs

LISTENING = re.compile(r"api-listening url=(\S+)")
DIEGO = Path(sys.executable).parent / "diego"
QUIET = """\
[converger]
interval = 86400.0

[auction]
retry_interval = 86400.0
"""
"""A quiet node's settings: no converger pass and no auction retry during a run."""


@attrs.frozen
class Node:
    """A running node: where it answers, its process, its log and its files."""

    url: str
    pid: int
    log: Path
    home: Path

    def log_text(self) -> str:
        """What the node has logged so far."""
        return self.log.read_text(errors="replace")


def bench_home() -> Path:
    """A new directory under /var/tmp for one node; its data dir is ``HOME/data``."""
    home = Path(tempfile.mkdtemp(prefix="diego-bench-", dir="/var/tmp"))
    home.chmod(0o711)  # the local backend's container uid walks to the data dir
    return home


@contextlib.contextmanager
def running_node(*args: str, config: str = "") -> Iterator[str]:
    """Run ``diego serve ARGS`` on a fresh data dir under /var/tmp; yield its URL."""
    with started_node(*args, config=config) as node:
        yield node.url


@contextlib.contextmanager
def started_node(*args: str, config: str = "", home: Path | None = None) -> Iterator[Node]:
    """Run ``diego serve ARGS`` on ``HOME/data`` (``home`` may hold a filled store; a
    fresh one by default); yield the Node. ``home`` is removed after."""
    home = home or bench_home()
    log = home / "serve.log"
    command = [str(DIEGO), "serve", "--data-dir", str(home / "data"), "--listen", "127.0.0.1:0"]
    if config:
        (home / "diego.toml").write_text(config)
        command += ["--config", str(home / "diego.toml")]
    try:
        with open(log, "wb") as err:
            proc = subprocess.Popen([*command, *args], stdout=subprocess.DEVNULL, stderr=err)
        try:
            yield Node(_wait_listening(proc, log), proc.pid, log, home)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _wait_listening(proc: subprocess.Popen[bytes], log: Path) -> str:
    end = time.monotonic() + 120
    while time.monotonic() < end:
        found = LISTENING.search(log.read_text(errors="replace"))
        if found:
            return found.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"diego serve did not start:\n{log.read_text(errors='replace')}")


def proc_status(pid: int) -> dict[str, int]:
    """The kB figures of /proc/PID/status (VmRSS, VmHWM, ...)."""
    figures: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if value.strip().endswith(" kB"):
            figures[name] = int(value.split()[0])
    return figures


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds the process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def marked_pids(name: str, value: str) -> list[int]:
    """Pids of host processes whose environment has ``name=value``."""
    needle = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found
