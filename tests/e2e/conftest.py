"""End-to-end helpers: a real ``diego serve`` process and the ``diego`` CLI as subprocesses.

Every process a test starts is ended at teardown. A server's stderr goes to a file
(never a pipe, so a chatty server cannot block on it) which is polled for the
``api-listening`` line; each wait is bounded by a deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

import pytest

DIEGO = Path(sys.executable).parent / "diego"
NO_CELLS = ("--cells", "0")
"""The console script installed next to this interpreter."""

START_DEADLINE = 30.0
STOP_DEADLINE = 10.0
CLI_TIMEOUT = 30.0
POLL_INTERVAL = 0.02

LISTENING = re.compile(r"INFO diego\.node api-listening url=(http://\S+)")

T = TypeVar("T")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any DIEGO_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIEGO_")}
    env.update(extra or {})
    return env


def poll(
    check: Callable[[], T | None], deadline: float, what: str, interval: float = POLL_INTERVAL
) -> T:
    """Call ``check`` until it returns something other than None/False, or fail at the deadline."""
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline:g}s waiting for {what}")
        time.sleep(interval)


class Reply(NamedTuple):
    """An HTTP answer: status, headers and body (parsed when it is JSON)."""

    status: int
    headers: dict[str, str]
    body: Any
    text: str


def http_request(
    url: str,
    method: str,
    path: str,
    body: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    """One HTTP request to the node at ``url``, on a fresh connection."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        sent_headers = dict(headers or {})
        if body is not None:
            sent_headers.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=sent_headers)
        response = conn.getresponse()
        raw = response.read()
        text = raw.decode("utf-8", errors="replace")
        content_type = response.getheader("Content-Type", "")
        parsed = json.loads(text) if text and content_type.startswith("application/json") else None
        return Reply(response.status, dict(response.getheaders()), parsed, text)
    finally:
        conn.close()


class Server:
    """Runs ``diego serve`` processes on one data directory, one at a time.

    ``start`` launches a process and waits for its api-listening line; ``kill``
    sends SIGKILL, ``terminate`` SIGTERM; ``start`` again restarts on the same
    data directory. ``close`` (run at teardown) ends whatever is still running.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "data"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.prefix: tuple[str, ...] = ()
        """What the command runs under, e.g. ``ip netns exec NAME`` (which execs it:
        the pid is diego's own)."""
        self.log_path: Path | None = None
        self._all: list[subprocess.Popen[bytes]] = []
        self._logs: list[Path] = []

    # ------------------------------------------------------------ lifecycle

    def start(
        self,
        *extra_args: str,
        listen: str | None = "127.0.0.1:0",
        env: Mapping[str, str] | None = None,
    ) -> str:
        """Start ``diego serve`` and wait until it listens; its URL."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("a server is already running; stop it first")
        args = [*self.prefix, str(DIEGO), "serve", "--data-dir", str(self.data_dir)]
        if listen is not None:
            args += ["--listen", listen]
        args += extra_args
        self.log_path = self.tmp_path / f"serve-{len(self._logs) + 1}.stderr"
        self._logs.append(self.log_path)
        with open(self.log_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=clean_env(env),
            )
        self._all.append(self.proc)
        self.url = self._wait_listening(self.proc, self.log_path)
        return self.url

    def _wait_listening(self, proc: subprocess.Popen[bytes], log_path: Path) -> str:
        end = time.monotonic() + START_DEADLINE
        while True:
            text = log_path.read_text(errors="replace")
            found = LISTENING.search(text)
            if found:
                return found.group(1)
            if proc.poll() is not None:
                pytest.fail(f"diego serve exited {proc.returncode} before listening:\n{text}")
            if time.monotonic() > end:
                pytest.fail(f"diego serve not listening after {START_DEADLINE:g}s:\n{text}")
            time.sleep(POLL_INTERVAL)

    def kill(self) -> int:
        """SIGKILL the running server; its exit status."""
        proc = self._running()
        proc.send_signal(signal.SIGKILL)
        return proc.wait(STOP_DEADLINE)

    def terminate(self, deadline: float = STOP_DEADLINE) -> int:
        """SIGTERM the running server and wait (at most ``deadline``) for it to exit."""
        proc = self._running()
        proc.send_signal(signal.SIGTERM)
        return proc.wait(deadline)

    def close(self) -> None:
        """End every process this helper started (teardown)."""
        for proc in self._all:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(STOP_DEADLINE)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def _running(self) -> subprocess.Popen[bytes]:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError("no server is running")
        return self.proc

    # ------------------------------------------------------------ what it said

    @property
    def port(self) -> int:
        """The port the current server listens on."""
        port = urlsplit(self.url).port
        assert port is not None
        return port

    @property
    def stderr(self) -> str:
        """Everything every server process of this helper wrote on stderr."""
        return "".join(p.read_text(errors="replace") for p in self._logs if p.exists())

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """One HTTP request to the current server."""
        return http_request(self.url, method, path, body, headers)

    def post_json(self, path: str, data: Any) -> Reply:
        """POST ``data`` as JSON."""
        return self.request("POST", path, json.dumps(data))


class CliResult(NamedTuple):
    """A finished CLI run: (exit code, stdout, stderr)."""

    code: int
    out: str
    err: str


def run_cli(
    *args: str,
    api: str | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float = CLI_TIMEOUT,
) -> CliResult:
    """Run ``diego [--api API] ARGS...`` to completion."""
    argv = [str(DIEGO)]
    if api is not None:
        argv += ["--api", api]
    argv += args
    done = subprocess.run(
        argv,
        input=input,
        capture_output=True,
        text=True,
        env=clean_env(env),
        timeout=timeout,
        check=False,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


class Background:
    """A CLI process left running; its stdout and stderr go to files."""

    def __init__(self, proc: subprocess.Popen[bytes], out: Path, err: Path) -> None:
        self.proc = proc
        self.out_path = out
        self.err_path = err

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def out(self) -> str:
        """Its stdout so far."""
        return self.out_path.read_text(errors="replace")

    def err(self) -> str:
        """Its stderr so far."""
        return self.err_path.read_text(errors="replace")

    def wait(self, deadline: float = CLI_TIMEOUT) -> int:
        """Wait (at most ``deadline``) for it to exit; its exit code."""
        try:
            return self.proc.wait(deadline)
        except subprocess.TimeoutExpired:
            pytest.fail(f"background CLI did not exit within {deadline:g}s: {self.proc.args}")

    def terminate(self) -> int:
        """SIGTERM it (if still running) and wait; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


class Spawner:
    """Starts background CLI processes and ends them all at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[Background] = []

    def __call__(
        self, *args: str, api: str | None = None, env: Mapping[str, str] | None = None
    ) -> Background:
        argv = [str(DIEGO)]
        if api is not None:
            argv += ["--api", api]
        argv += args
        n = len(self.started) + 1
        out, err = self.tmp_path / f"bg-{n}.stdout", self.tmp_path / f"bg-{n}.stderr"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=clean_env(env)
            )
        bg = Background(proc, out, err)
        self.started.append(bg)
        return bg

    def close(self) -> None:
        """End every process still running."""
        for bg in self.started:
            bg.terminate()


def connections_to(pid: int, port: int) -> int:
    """How many ESTABLISHED loopback TCP connections process ``pid`` has to ``port``.

    Read from /proc, so Linux only.
    """
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                remote, state, inode = fields[2], fields[3], fields[9]
                if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port and inode in inodes:
                    count += 1
    return count


def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections while the generator is suspended."""
    # Bound but not listening: the port is ours (no one else can take it) and a
    # connection to it is refused.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def free_port() -> int:
    """A loopback port that nothing was using a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def task_request(guid: str, domain: str = "e2e", **extra: Any) -> dict[str, Any]:
    """A valid TaskCreateRequest document."""
    return {
        "task_guid": guid,
        "domain": domain,
        "stack": "cflinuxfs4",
        "action": {"run": {"path": "/bin/echo", "args": ["hello"]}},
        **extra,
    }


def no_traceback(text: str) -> bool:
    """Whether ``text`` carries no Python traceback."""
    return "Traceback" not in text


# ------------------------------------------------------------------ fixtures


DOCKER = "/usr/bin/docker"
"""The engine's own client (a bare client elsewhere on PATH may have no engine)."""


def diego_containers() -> list[str]:
    """Names of every container diego labelled, running or not."""
    listed = subprocess.run(
        [DOCKER, "ps", "-a", "--filter", "label=org.diego.cell", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.split()


@pytest.fixture(params=["local", "docker"])
def backend(request: pytest.FixtureRequest) -> str:
    """Each cell backend in turn: tests of what cells do run on both."""
    return str(request.param)


@pytest.fixture(scope="session", autouse=True)
def no_container_left_behind() -> Iterator[None]:
    """After the whole e2e suite, ``docker ps -a`` holds no container of diego's."""
    yield
    if Path("/var/run/docker.sock").exists():
        left = diego_containers()
        assert not left, f"containers left behind by the suite: {left}"


@pytest.fixture
def server_proc(tmp_path: Path) -> Iterator[Server]:
    """A Server helper, not started yet; every process it starts ends at teardown."""
    helper = Server(tmp_path)
    try:
        yield helper
    finally:
        helper.close()


@pytest.fixture
def server(server_proc: Server) -> Server:
    """A running ``diego serve`` on 127.0.0.1 with a fresh data directory and no cells.

    With no cell, Tasks stay PENDING until cancelled: the API and store tests
    drive every state change themselves.
    """
    server_proc.start(*NO_CELLS)
    return server_proc


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawner]:
    """Starts background CLI processes; ends them at teardown."""
    spawner = Spawner(tmp_path)
    try:
        yield spawner
    finally:
        spawner.close()


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port on which connections are refused for the whole test."""
    yield from closed_port()


@pytest.fixture
def cli(server: Server) -> Callable[..., CliResult]:
    """Run the CLI against the running server (``--api URL``)."""

    def run(*args: str, input: str | None = None) -> CliResult:
        return run_cli(*args, api=server.url, input=input)

    return run
