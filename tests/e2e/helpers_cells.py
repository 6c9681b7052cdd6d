"""Helpers for end-to-end tests of nodes with embedded cells that really run Tasks.

A ``Node`` is a ``Server`` (from conftest) started with a diego.toml of short
timings written into the test's tmp_path; ``restart`` starts it again on the
same data directory with the same settings. ``BackgroundHttp`` is an aiohttp
server on 127.0.0.1 run in a thread of its own, for callbacks and downloads.
Task guids are unique per run: a cell's cgroups are named after them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

from .conftest import Reply, Server, poll

STACK = "linux"
DOMAIN = "e2e-run"
CELL_MEMORY_MB = 1000
"""Each cell's memory capacity in these tests."""

TASK_DEADLINE = 20.0
"""How long an ordinary Task may take from creation to COMPLETED."""

MARK_ENV = "DIEGO_E2E_MARK"
"""An environment variable every marked Task carries, to find its processes on the host."""


def unique(prefix: str) -> str:
    """A guid no other run (or concurrent test process) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")


def write_config(path: Path, file_roots: list[Path], **overrides: dict[str, Any]) -> Path:
    """A diego.toml with short timings (``overrides`` replace settings per section)."""
    sections: dict[str, dict[str, Any]] = {
        "cell": {
            "memory_mb": CELL_MEMORY_MB,
            "poll_interval": 0.5,
            "presence_ttl": 3.0,
            "evacuation_timeout": 1.0,
        },
        "auction": {"retry_interval": 0.2},
        "converger": {
            "interval": 0.2,
            "kick_task_interval": 0.5,
            "expire_completed_task": 30.0,
        },
        "callbacks": {"timeout": 2.0},
        "transfer": {"file_roots": [str(p) for p in file_roots], "timeout": 10.0},
    }
    for section, values in overrides.items():
        sections.setdefault(section, {}).update(values)
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def reachable_dir(prefix: str) -> Path:
    """A fresh directory under /var/tmp that every user may traverse (mode 0711).

    A test's tmp_path lies below a private (0700) directory; see ``CellServer``. Not
    under /tmp either: containers have a /tmp of their own, which would hide the data
    directory from them whether or not the node hides it.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    path.chmod(0o711)
    return path


class CellServer(Server):
    """A ``Server`` whose data directory is ``data_dir`` instead of ``tmp_path/data``.

    Tests of what Tasks do use a data directory that the unprivileged container uid
    can traverse: one below a private directory breaks every Task (a product bug that
    ``test_task_runs_with_a_data_dir_under_a_private_directory`` shows on its own).
    """

    def __init__(self, tmp_path: Path, data_dir: Path, backend: str = "local") -> None:
        super().__init__(tmp_path)
        self.data_dir = data_dir
        self.backend = backend


@contextlib.contextmanager
def cell_server_in(tmp_path: Path, backend: str, prefix: str) -> Iterator[CellServer]:
    """A CellServer of ``backend`` on a fresh reachable data dir; stopped and removed after."""
    data_dir = reachable_dir(prefix)
    helper = CellServer(tmp_path, data_dir / "data", backend)
    try:
        yield helper
    finally:
        helper.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def backend_args(server: Server) -> tuple[str, ...]:
    """The ``serve`` flags choosing the server's cell backend (a CellServer's, else local)."""
    return ("--cell-backend", getattr(server, "backend", "local"))


class Node:
    """A ``diego serve`` with embedded cells and short timings, on one data directory."""

    def __init__(self, server: Server, config: Path, args: tuple[str, ...]) -> None:
        self.server = server
        self.config = config
        self.args = args

    @property
    def url(self) -> str:
        """The API URL of the running process."""
        return self.server.url

    @property
    def data_dir(self) -> Path:
        """The node's data directory."""
        return self.server.data_dir

    def restart(self) -> str:
        """Start again on the same data directory and settings; the new URL."""
        return self.server.start("--config", str(self.config), *self.args)

    def request(self, method: str, path: str, body: Any = None) -> Reply:
        """One request; ``body`` is sent as JSON."""
        return self.server.request(method, path, None if body is None else json.dumps(body))

    def create(self, request: dict[str, Any]) -> dict[str, Any]:
        """Create a Task; the created Task."""
        reply = self.request("POST", "/v1/tasks", request)
        assert reply.status == 201, reply.text
        return dict(reply.body)

    def get(self, guid: str) -> dict[str, Any]:
        """One Task (which must exist)."""
        reply = self.request("GET", f"/v1/tasks/{guid}")
        assert reply.status == 200, reply.text
        return dict(reply.body)

    def wait_state(
        self, guid: str, state: str = "COMPLETED", deadline: float = TASK_DEADLINE
    ) -> dict[str, Any]:
        """Poll until the Task is in ``state``; the Task."""

        def check() -> dict[str, Any] | None:
            task = self.get(guid)
            return task if task["state"] == state else None

        return poll(check, deadline, f"task {guid} to be {state}", interval=0.05)

    def run(self, request: dict[str, Any], deadline: float = TASK_DEADLINE) -> dict[str, Any]:
        """Create a Task and wait until it is COMPLETED; the completed Task."""
        self.create(request)
        return self.wait_state(request["task_guid"], deadline=deadline)

    def logs(self, log_guid: str) -> list[dict[str, Any]]:
        """The lines kept for ``log_guid`` (GET /v1/logs/...?follow=false)."""
        reply = self.request("GET", f"/v1/logs/{log_guid}?follow=false&tail=1000")
        assert reply.status == 200, reply.text
        return parse_log_events(reply.text)

    def cells(self) -> list[dict[str, Any]]:
        """GET /v1/cells."""
        reply = self.request("GET", "/v1/cells")
        assert reply.status == 200, reply.text
        return list(reply.body)


def parse_log_events(text: str) -> list[dict[str, Any]]:
    """The data of every ``log`` event in a server-sent event stream."""
    lines: list[dict[str, Any]] = []
    event, data = "", ""
    for raw in text.splitlines():
        if raw.startswith("event:"):
            event = raw.partition(":")[2].strip()
        elif raw.startswith("data:"):
            data = raw.partition(":")[2].strip()
        elif not raw and data:
            if event == "log":
                lines.append(json.loads(data))
            event, data = "", ""
    if data and event == "log":
        lines.append(json.loads(data))
    return lines


def start_node(
    server: Server,
    *args: str,
    file_roots: list[Path] | None = None,
    **overrides: dict[str, Any],
) -> Node:
    """Write a short-timing config into the server's tmp_path and start ``diego serve``."""
    config = write_config(
        server.tmp_path / "diego.toml",
        file_roots if file_roots is not None else [server.tmp_path],
        **overrides,
    )
    node = Node(server, config, (*backend_args(server), *args))
    node.restart()
    return node


# ------------------------------------------------------------------ Task documents


def task(guid: str, action: dict[str, Any], *, marker: str = "", **fields: Any) -> dict[str, Any]:
    """A TaskCreateRequest for the cells' stack; ``marker`` goes into the Task's env."""
    request: dict[str, Any] = {
        "task_guid": guid,
        "domain": DOMAIN,
        "stack": STACK,
        "action": action,
        **fields,
    }
    if marker:
        request["env"] = [*request.get("env", []), {"name": MARK_ENV, "value": marker}]
    return request


def run(path: str, *args: str, **fields: Any) -> dict[str, Any]:
    """A run action."""
    return {"run": {"path": path, "args": list(args), **fields}}


def sh(script: str) -> dict[str, Any]:
    """A run action of ``/bin/sh -c script``."""
    return run("/bin/sh", "-c", script)


# ------------------------------------------------------------------ host processes


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def marked_processes(marker: str) -> list[tuple[int, list[str]]]:
    """Host processes of a marked Task: (pid, argv) of each whose argv or env names ``marker``.

    The container's own processes carry it in their environment, bubblewrap in its
    arguments (``--setenv``).
    """
    found = []
    needle = marker.encode()
    env_entry = f"{MARK_ENV}={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        cmdline = _read(entry / "cmdline")
        environ = _read(entry / "environ")
        if needle in cmdline or env_entry in environ.split(b"\0"):
            argv = [a.decode(errors="replace") for a in cmdline.split(b"\0") if a]
            if argv:  # zombies have no cmdline
                found.append((int(entry.name), argv))
    return found


def running_command(marker: str, argv: list[str]) -> list[int]:
    """Pids of marked processes running exactly ``argv``."""
    return [pid for pid, found in marked_processes(marker) if found == argv]


# ------------------------------------------------------------------ an HTTP server of the test's


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BackgroundHttp:
    """An aiohttp server on 127.0.0.1 in a thread of its own, with the given routes."""

    def __init__(self, routes: list[tuple[str, str, Handler]]) -> None:
        self.routes = routes
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> str:
        """Start serving; the base URL."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._setup(), self._loop)
        self.url = future.result(10)
        return self.url

    async def _setup(self) -> str:
        app = web.Application()
        for method, path, handler in self.routes:
            app.router.add_route(method, path, handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        """Stop serving and end the thread."""
        if self._thread.is_alive():
            if self._runner is not None:
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()
