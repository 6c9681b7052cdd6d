"""Helpers for end-to-end tests of LRPs run by the embedded cells of ``diego serve``.

A node is started (see ``helpers_cells.start_node``) with the short LRP timings of
``LRP_TIMINGS``; DesiredLRP documents carry a marker in their env (``MARK_ENV``), so
a test finds the host processes of its own instances (and of one index, through the
``INSTANCE_INDEX`` every instance gets) in /proc. ``EventRecorder`` follows
/v1/events in a thread of its own, for tests about the order of state changes.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from diego.scheduling.auction import zone_ranking

from .conftest import Server, poll
from .helpers_cells import MARK_ENV, Node, backend_args, marked_processes, unique, write_config

DOMAIN = "apps"
ZONES = ("z0", "z1")
"""The zones of a node started with ``--zones 2``: cells 0 and 2 are in z0, cell 1 in z1."""

SLEEPER = ["sleep", "1000"]
"""The argv of every healthy instance's long-running process."""

LRP_DEADLINE = 20.0
"""How long instances may take from being desired to RUNNING."""

LRP_TIMINGS: dict[str, dict[str, Any]] = {
    "cell": {
        "poll_interval": 0.5,
        "monitor_interval": 0.5,
        "monitor_unhealthy_interval": 0.1,
        "presence_ttl": 2.0,
        "evacuation_timeout": 5.0,
        "evacuation_poll": 0.2,
    },
    "converger": {"interval": 0.3, "kick_lrp_interval": 0.5},
    "auction": {"retry_interval": 0.2},
}


def lrp_config(path: Path, **overrides: dict[str, Any]) -> Path:
    """A diego.toml at ``path`` with the short LRP timings (``overrides`` per section)."""
    sections = {name: dict(values) for name, values in LRP_TIMINGS.items()}
    for section, values in overrides.items():
        sections.setdefault(section, {}).update(values)
    return write_config(path, [path.parent], **sections)


def start_lrp_node(
    server: Server, *args: str, config_name: str = "diego.toml", **overrides: dict[str, Any]
) -> Node:
    """Write an LRP-timing config into the server's tmp_path and start ``diego serve``."""
    config = lrp_config(server.tmp_path / config_name, **overrides)
    node = Node(server, config, (*backend_args(server), *args))
    node.restart()
    return node


# ------------------------------------------------------------------ documents


def sh(script: str) -> dict[str, Any]:
    """A run action of ``/bin/sh -c script``."""
    return {"run": {"path": "/bin/sh", "args": ["-c", script]}}


HEALTHY_ACTION = sh("touch /tmp/ready; exec sleep 1000")
READY_MONITOR = sh("test -f /tmp/ready")


def desired_lrp(
    guid: str,
    marker: str,
    instances: int = 1,
    action: dict[str, Any] | None = None,
    monitor: dict[str, Any] | None = READY_MONITOR,
    **fields: Any,
) -> dict[str, Any]:
    """A DesiredLRP document whose instances carry ``marker`` in their env."""
    document: dict[str, Any] = {
        "process_guid": guid,
        "domain": DOMAIN,
        "stack": "linux",
        "instances": instances,
        "memory_mb": 32,
        "log_guid": f"{guid}-log",
        "env": [{"name": MARK_ENV, "value": marker}],
        "action": action if action is not None else HEALTHY_ACTION,
        **fields,
    }
    if monitor is not None:
        document["monitor"] = monitor
    return document


def guid_preferring(prefix: str, zones: list[str]) -> str:
    """A fresh process guid whose instance ``i`` prefers ``zones[i]`` (with ``ZONES``)."""
    for _ in range(1000):
        guid = unique(prefix)
        if all(zone_ranking(guid, i, ZONES)[0] == z for i, z in enumerate(zones)):
            return guid
    raise AssertionError(f"no guid found whose instances prefer {zones}")


# ------------------------------------------------------------------ the API


def actuals(node: Node, guid: str) -> list[dict[str, Any]]:
    """GET /v1/actual_lrps/{guid}: every ActualLRP of the process, evacuating included."""
    reply = node.request("GET", f"/v1/actual_lrps/{guid}")
    assert reply.status == 200, reply.text
    return list(reply.body)


def instances_of(node: Node, guid: str) -> dict[int, dict[str, Any]]:
    """The non-evacuating ActualLRPs of the process, by index."""
    return {a["index"]: a for a in actuals(node, guid) if not a["evacuating"]}


def wait_all_running(
    node: Node, guid: str, count: int, deadline: float = LRP_DEADLINE
) -> dict[int, dict[str, Any]]:
    """Wait until indices 0..count-1 (and no other, and no evacuating copy) are RUNNING."""

    def check() -> dict[int, dict[str, Any]] | None:
        rows = actuals(node, guid)
        by_index = {a["index"]: a for a in rows if not a["evacuating"]}
        if len(rows) != count or sorted(by_index) != list(range(count)):
            return None
        return by_index if all(a["state"] == "RUNNING" for a in rows) else None

    return poll(check, deadline, f"{count} RUNNING instances of {guid}", interval=0.05)


def create_lrp(node: Node, document: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/desired_lrps; the created DesiredLRP."""
    reply = node.request("POST", "/v1/desired_lrps", document)
    assert reply.status == 201, reply.text
    return dict(reply.body)


def cell_zones(node: Node) -> dict[str, str]:
    """Each cell's zone, by cell id."""
    return {c["cell_id"]: c["zone"] for c in node.cells()}


# ------------------------------------------------------------------ host processes


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (entry.decode(errors="replace").partition("=") for entry in raw.split(b"\0"))
    return {name: value for name, _, value in pairs if name}


def instance_pids(marker: str, argv: list[str] | None = None) -> dict[int, list[int]]:
    """Pids of the marked processes running ``argv`` (``SLEEPER``), by INSTANCE_INDEX."""
    wanted = SLEEPER if argv is None else argv
    found: dict[int, list[int]] = {}
    for pid, found_argv in marked_processes(marker):
        if found_argv != wanted:
            continue
        index = _environ(pid).get("INSTANCE_INDEX")
        if index is not None and index.isdigit():
            found.setdefault(int(index), []).append(pid)
    return found


def kill_marked(marker: str) -> None:
    """SIGKILL every process left over carrying ``marker`` (teardown)."""
    for pid, _ in marked_processes(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------ events


class EventRecorder:
    """Follows GET /v1/events (of a domain) in a thread; ``events`` is what came so far."""

    def __init__(self, url: str, domain: str = DOMAIN) -> None:
        parts = urlsplit(url)
        self._sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        self._sock.sendall(
            f"GET /v1/events?domain={domain} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Accept: text/event-stream\r\nConnection: close\r\n\r\n".encode()
        )
        self._sock.settimeout(None)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        if not self._subscribed.wait(10):
            self.close()
            raise AssertionError("the event stream never said it was subscribed")

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            response = http.client.HTTPResponse(self._sock)
            response.begin()
            event, data = "", ""
            while True:
                raw = response.readline()
                if not raw:
                    break
                line = raw.decode(errors="replace").rstrip("\r\n")
                if line.startswith(": subscribed"):
                    self._subscribed.set()
                elif line.startswith("event:"):
                    event = line.partition(":")[2].strip()
                elif line.startswith("data:"):
                    data = line.partition(":")[2].strip()
                elif not line and data:
                    with self._lock:
                        self.events.append((event, json.loads(data)))
                    event, data = "", ""

    def snapshot(self) -> list[tuple[str, dict[str, Any]]]:
        """The events received so far."""
        with self._lock:
            return list(self.events)

    def until(
        self, done: Callable[[list[tuple[str, dict[str, Any]]]], bool], deadline: float, what: str
    ) -> list[tuple[str, dict[str, Any]]]:
        """The events received once ``done(events)`` holds: a state read over HTTP can be
        ahead of its event, which is still on its way down the stream."""
        end = time.monotonic() + deadline
        while not done(events := self.snapshot()):
            if time.monotonic() > end:
                pytest.fail(f"timed out after {deadline:g}s waiting for {what}: {events[-5:]}")
            time.sleep(0.02)
        return events

    def close(self) -> None:
        """Stop following."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        with contextlib.suppress(OSError):
            self._sock.close()


def sample_until(
    sample: Any, done: Any, deadline: float, what: str, interval: float = 0.05
) -> list[Any]:
    """Call ``sample`` every ``interval`` until ``done(last sample)``; every sample taken."""
    samples = []
    end = time.monotonic() + deadline
    while True:
        samples.append(sample())
        if done(samples[-1]):
            return samples
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline:g}s waiting for {what}: {samples[-1]}")
        time.sleep(interval)
