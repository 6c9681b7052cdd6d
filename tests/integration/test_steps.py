"""The action tree performed in a real local container, with real transfers."""

# The tests look at host paths directly, to see what a step did to the host; a
# stat is not worth a thread.
# ruff: noqa: ASYNC240

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import shutil
import tarfile
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
from aiohttp import web

from diego.cell.backends.base import ContainerSpec, ProcessSpec
from diego.cell.backends.local import LocalBackend
from diego.cell.steps import StepContext, StepFailed, go_duration, perform
from diego.cell.transfer import Transfers
from diego.models.actions import (
    Action,
    CodependentAction,
    DownloadAction,
    EmitProgressAction,
    EnvironmentVariable,
    ParallelAction,
    ResourceLimits,
    RunAction,
    SerialAction,
    TimeoutAction,
    TryAction,
    UploadAction,
)
from tests.integration.processes import eventually, host_pids_with, sleep_arg

PYTHON = "/usr/bin/python3"
PAYLOAD = bytes(range(256)) * 1200  # 300 KiB: more than one transfer chunk


# ---------------------------------------------------------------- helpers


def sh(script: str, **extra: object) -> RunAction:
    """A run action of ``sh -c script``."""
    return RunAction(path="/bin/sh", args=("-c", script), **extra)  # type: ignore[arg-type]


@attrs.define
class Cell:
    """One container and the context its steps run in, with the log they write."""

    backend: LocalBackend
    guid: str
    ctx: StepContext
    lines: list[tuple[str, str, str]]
    allowed: Path  # a transfer file_root
    outside: Path  # a host directory that is not one

    def messages(self) -> list[str]:
        """Every logged message, in order."""
        return [message for _, _, message in self.lines]

    async def shell(self, script: str) -> tuple[int, list[str]]:
        """Run ``sh -c script`` in the container (not through the steps): status, stdout."""
        out: list[str] = []
        spec = ProcessSpec("/bin/sh", ("-c", script))
        proc = await self.backend.run(self.guid, spec, out.append, lambda _l: None)
        return await proc.wait(), out

    async def exists(self, path: str) -> bool:
        """Whether ``path`` exists in the container."""
        return (await self.shell(f"test -e {path}"))[0] == 0

    async def perform(self, action: Action) -> None:
        """Perform ``action`` in this cell's container."""
        await perform(action, self.ctx)

    async def fails(self, action: Action) -> str:
        """Perform ``action``, which must fail; its reason."""
        with pytest.raises(StepFailed) as failed:
            await perform(action, self.ctx)
        return failed.value.reason


async def make_cell(tmp_path: Path, spec: ContainerSpec, backend: LocalBackend) -> Cell:
    """A container made by ``backend`` with a step context for it."""
    await backend.create(spec)
    allowed = tmp_path / "allowed"
    outside = tmp_path / "outside"
    scratch = tmp_path / "scratch" / spec.guid
    for d in (allowed, outside, scratch):
        d.mkdir(parents=True, exist_ok=True)
    lines: list[tuple[str, str, str]] = []

    def log(source: str, stream: str, message: str) -> None:
        lines.append((source, stream, message))

    ctx = StepContext(backend, spec.guid, log, Transfers([allowed], timeout=10), scratch, "TASK")
    return Cell(backend, spec.guid, ctx, lines, allowed, outside)


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    """A local backend whose containers are removed after the test."""
    made = LocalBackend(tmp_path / "containers")
    try:
        yield made
    finally:
        for leftover in await made.existing():
            await made.destroy(leftover.guid)
        shutil.rmtree(made.root, ignore_errors=True)
        await made.close()


@pytest.fixture
async def cell(tmp_path: Path, backend: LocalBackend) -> Cell:
    """An unprivileged container with a step context."""
    return await make_cell(tmp_path, ContainerSpec(guid=f"steps-{uuid.uuid4().hex[:8]}"), backend)


@attrs.define
class FileServer:
    """A loopback server: GET /files/<name> serves ``files``, PUT /put/<name> fills ``received``."""

    base: str
    files: dict[str, bytes]
    received: dict[str, bytes]


@pytest.fixture
async def server() -> AsyncIterator[FileServer]:
    """A file server on loopback for downloads and uploads."""
    files: dict[str, bytes] = {}
    received: dict[str, bytes] = {}

    async def get(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in files:
            raise web.HTTPNotFound()
        return web.Response(body=files[name], content_type="application/octet-stream")

    async def put(request: web.Request) -> web.Response:
        received[request.match_info["name"]] = await request.read()
        return web.Response(status=201)

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_get("/files/{name}", get)
    app.router.add_put("/put/{name}", put)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield FileServer(f"http://{host}:{port}", files, received)
    finally:
        await runner.cleanup()


def tgz(entries: dict[str, bytes]) -> bytes:
    """A gzipped tar of ``entries``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in entries.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            member.mode = 0o644
            tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def zipped(entries: dict[str, bytes]) -> bytes:
    """A zip of ``entries``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


# ---------------------------------------------------------------- run


async def test_run_ok_logs_its_output(cell: Cell) -> None:
    """A run action that exits 0 succeeds and its lines go to the log as OUT and ERR."""
    await cell.perform(sh("echo hello; echo warn >&2"))
    assert ("TASK", "OUT", "hello") in cell.lines
    assert ("TASK", "ERR", "warn") in cell.lines


async def test_run_non_zero_fails_with_status(cell: Cell) -> None:
    """A run action that exits 3 fails with "Exited with status 3"."""
    reason = await cell.fails(sh("echo before; exit 3"))
    assert reason == "Exited with status 3"
    assert "before" in cell.messages()


async def test_run_env_dir_and_nofile(cell: Cell) -> None:
    """A run action's env, dir and nofile limit reach the process."""
    await cell.perform(
        sh(
            'echo "$GREETING"; pwd; ulimit -n',
            env=(EnvironmentVariable(name="GREETING", value="hi there"),),
            dir="/tmp",
            resource_limits=ResourceLimits(nofile=321),
        )
    )
    assert cell.messages() == ["hi there", "/tmp", "321"]


async def test_run_with_unknown_user_fails(cell: Cell) -> None:
    """A run action as a user the machine lacks fails to start, naming the user."""
    reason = await cell.fails(sh("true", user="no-such-user-xyz"))
    assert "no-such-user-xyz" in reason


async def test_run_suppress_log_output(cell: Cell) -> None:
    """suppress_log_output keeps the process's lines (and its exit line) out of the log."""
    await cell.perform(sh("echo secret; echo secret-err >&2", suppress_log_output=True))
    reason = await cell.fails(sh("echo secret; exit 5", suppress_log_output=True))
    assert reason == "Exited with status 5"
    assert cell.lines == []


async def test_run_log_source_override(cell: Cell) -> None:
    """A run's log_source names its lines; a parent's log_source is inherited."""
    await cell.perform(sh("echo mine", log_source="CUSTOM"))
    await cell.perform(SerialAction(actions=(sh("echo inherited"),), log_source="OUTER"))
    await cell.perform(sh("echo plain"))
    assert cell.lines == [
        ("CUSTOM", "OUT", "mine"),
        ("OUTER", "OUT", "inherited"),
        ("TASK", "OUT", "plain"),
    ]


async def test_run_out_of_memory_says_so(tmp_path: Path, backend: LocalBackend) -> None:
    """A process the kernel kills for memory fails "Exited with status 137 (out of memory)"."""
    small = await make_cell(
        tmp_path, ContainerSpec(guid=f"small-{uuid.uuid4().hex[:8]}", memory_mb=48), backend
    )
    reason = await small.fails(
        RunAction(path=PYTHON, args=("-c", "x = b'a' * (200 * 1024 * 1024)"))
    )
    assert reason == "Exited with status 137 (out of memory)"


async def test_run_stopped_by_max_pids_says_so(tmp_path: Path, backend: LocalBackend) -> None:
    """A process whose fork fails at the container's max_pids fails naming the limit."""
    capped = await make_cell(
        tmp_path, ContainerSpec(guid=f"capped-{uuid.uuid4().hex[:8]}", max_pids=20), backend
    )
    script = f"for i in $(seq 200); do sleep {sleep_arg()} & done"
    reason = await capped.fails(RunAction(path="/bin/sh", args=("-c", script)))
    assert reason == "Exited with status 2 (process limit of 20 reached)"


# ---------------------------------------------------------------- timeout


async def test_timeout_fails_and_kills_the_process(cell: Cell) -> None:
    """A run outliving timeout_ms fails "exceeded 1s timeout", and its process dies; the
    timeout does not fire early: the process lives to write a marker at 0.4 s."""
    arg = sleep_arg()
    script = f"sleep 0.4; touch /home/vcap/marker; exec /bin/sleep {arg}"
    reason = await asyncio.wait_for(
        cell.fails(TimeoutAction(action=sh(script), timeout_ms=1000)), 10
    )
    assert reason == "exceeded 1s timeout"
    assert await cell.exists("/home/vcap/marker")
    assert await eventually(lambda: not host_pids_with(arg), within=1.0)
    assert "exceeded 1s timeout" in cell.messages()


async def test_timeout_during_process_start_kills_it(cell: Cell) -> None:
    """A timeout expiring while its process is still starting (1-30 ms) still kills it promptly."""
    problems = []
    for ms in range(1, 31):
        arg = sleep_arg()
        action = TimeoutAction(action=RunAction(path="/bin/sleep", args=(arg,)), timeout_ms=ms)
        try:
            reason = await asyncio.wait_for(cell.fails(action), 2)
        except TimeoutError:
            problems.append((ms, "perform still waiting after 2s", host_pids_with(arg)))
            break
        assert reason == f"exceeded {ms}ms timeout"
        if not await eventually(lambda a=arg: not host_pids_with(a), within=0.5):
            problems.append((ms, "process left running", host_pids_with(arg)))
            break
    assert problems == []


async def test_timeout_not_reached_succeeds(cell: Cell) -> None:
    """A run finishing within timeout_ms succeeds."""
    await cell.perform(TimeoutAction(action=sh("echo quick"), timeout_ms=5000))
    assert cell.messages() == ["quick"]


async def test_timeout_passes_inner_failure_through(cell: Cell) -> None:
    """A run failing before its timeout fails with its own reason."""
    reason = await cell.fails(TimeoutAction(action=sh("exit 6"), timeout_ms=5000))
    assert reason == "Exited with status 6"


# ---------------------------------------------------------------- serial, parallel, codependent


async def test_serial_stops_at_first_failure(cell: Cell) -> None:
    """A serial action runs in order and stops at the first failure; later steps never run."""
    reason = await cell.fails(
        SerialAction(
            actions=(
                sh("echo one"),
                sh("echo two; exit 4"),
                sh("touch /home/vcap/marker; echo three"),
            )
        )
    )
    assert reason == "Exited with status 4"
    assert cell.messages()[:2] == ["one", "two"]
    assert "three" not in cell.messages()
    assert not await cell.exists("/home/vcap/marker")


async def test_serial_runs_all_in_order(cell: Cell) -> None:
    """A serial action of successes runs each once, in order."""
    await cell.perform(
        SerialAction(actions=tuple(sh(f"echo {i} >> /home/vcap/order") for i in range(4)))
    )
    assert await cell.shell("cat /home/vcap/order") == (0, ["0", "1", "2", "3"])


async def test_parallel_runs_all_and_aggregates_failures(cell: Cell) -> None:
    """A parallel action runs every child even when some fail, and names every failure."""
    reason = await cell.fails(
        ParallelAction(
            actions=(
                sh("exit 1"),
                sh("sleep 0.3; exit 2"),
                sh("sleep 0.6; touch /home/vcap/marker"),
            )
        )
    )
    assert "Exited with status 1" in reason
    assert "Exited with status 2" in reason
    assert await cell.exists("/home/vcap/marker")


async def test_parallel_runs_at_once(cell: Cell) -> None:
    """Parallel children run concurrently: each, once started, waits until all three
    have started (which one at a time could never do), then says so."""
    wait_for_all = (
        "touch /tmp/started-{i}; "
        "while [ $(ls /tmp/started-* | wc -l) -lt 3 ]; do sleep 0.05; done; "
        "touch /home/vcap/together-{i}"
    )
    children = tuple(sh(f"timeout 10 sh -c '{wait_for_all.format(i=i)}'") for i in range(3))
    await cell.perform(ParallelAction(actions=children))
    for i in range(3):
        assert await cell.exists(f"/home/vcap/together-{i}")


async def test_codependent_first_failure_cancels_the_rest(cell: Cell) -> None:
    """In a codependent action the first failure kills the siblings and is the reason."""
    arg = sleep_arg()
    reason = await cell.fails(
        CodependentAction(
            actions=(
                RunAction(path="/bin/sleep", args=(arg,)),
                sh("sleep 0.2; exit 7"),
                sh("sleep 1.5; exit 9"),
            )
        )
    )
    assert reason == "Exited with status 7"
    assert await eventually(lambda: not host_pids_with(arg), within=1.0)
    assert "Exited with status 9" not in cell.messages()


async def test_codependent_all_succeed(cell: Cell) -> None:
    """A codependent action whose children all succeed succeeds."""
    await cell.perform(CodependentAction(actions=(sh("echo a"), sh("echo b"))))
    assert sorted(cell.messages()) == ["a", "b"]


# ---------------------------------------------------------------- try, emit_progress


async def test_try_swallows_failure(cell: Cell) -> None:
    """A try action succeeds although its child fails, and what follows it runs."""
    await cell.perform(
        SerialAction(actions=(TryAction(action=sh("exit 3")), sh("touch /home/vcap/after")))
    )
    assert await cell.exists("/home/vcap/after")
    assert any("Exited with status 3" in m for m in cell.messages())


async def test_emit_progress_on_success(cell: Cell) -> None:
    """emit_progress logs its start message, the child's output, then its success message."""
    await cell.perform(
        EmitProgressAction(
            action=sh("echo working"),
            start_message="starting",
            success_message="finished",
            failure_message_prefix="broke",
        )
    )
    assert cell.messages() == ["starting", "working", "finished"]


async def test_emit_progress_on_failure(cell: Cell) -> None:
    """emit_progress on failure logs "<prefix>: <reason>" and no success message."""
    reason = await cell.fails(
        EmitProgressAction(
            action=sh("exit 2"),
            start_message="starting",
            success_message="finished",
            failure_message_prefix="broke",
        )
    )
    assert reason == "Exited with status 2"
    assert cell.messages()[0] == "starting"
    assert ("TASK", "ERR", "broke: Exited with status 2") in cell.lines
    assert "finished" not in cell.messages()


# ---------------------------------------------------------------- download


async def test_download_plain_file_over_http(cell: Cell, server: FileServer) -> None:
    """A plain file downloaded over http lands in `to` under its URL's name."""
    server.files["plain.txt"] = b"plain content\n"
    await cell.perform(
        DownloadAction(from_=f"{server.base}/files/plain.txt", to="/home/vcap/dl", artifact="thing")
    )
    assert await cell.shell("cat /home/vcap/dl/plain.txt") == (0, ["plain content"])
    assert any(m.startswith("Downloaded thing") for m in cell.messages())


async def test_download_large_file_intact(cell: Cell, server: FileServer) -> None:
    """A file bigger than a transfer chunk arrives byte for byte."""
    server.files["big.bin"] = PAYLOAD
    await cell.perform(DownloadAction(from_=f"{server.base}/files/big.bin", to="/tmp/big"))
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    assert await cell.shell("sha256sum /tmp/big/big.bin | cut -d' ' -f1") == (0, [digest])


async def test_download_tgz_is_extracted(cell: Cell, server: FileServer) -> None:
    """A .tgz is extracted into `to`."""
    server.files["bundle.tgz"] = tgz({"dir/a.txt": b"from tgz\n", "b.txt": b"bee\n"})
    await cell.perform(DownloadAction(from_=f"{server.base}/files/bundle.tgz", to="/home/vcap/x"))
    status, out = await cell.shell("cat /home/vcap/x/dir/a.txt /home/vcap/x/b.txt")
    assert (status, out) == (0, ["from tgz", "bee"])
    assert not await cell.exists("/home/vcap/x/bundle.tgz")


async def test_download_zip_is_extracted(cell: Cell, server: FileServer) -> None:
    """A .zip is extracted into `to`."""
    server.files["bundle.zip"] = zipped({"zdir/z.txt": b"from zip\n", "top.txt": b"top\n"})
    await cell.perform(DownloadAction(from_=f"{server.base}/files/bundle.zip", to="/home/vcap/z"))
    status, out = await cell.shell("cat /home/vcap/z/zdir/z.txt /home/vcap/z/top.txt")
    assert (status, out) == (0, ["from zip", "top"])


async def test_download_archive_cannot_escape(cell: Cell, server: FileServer) -> None:
    """A zip or tgz with '..' and absolute entries unpacks nothing outside the container."""
    name = f"slip-{uuid.uuid4().hex[:8]}"
    evil = {f"../../../../../../tmp/{name}": b"x", f"/tmp/{name}-abs": b"x", "ok.txt": b"ok"}
    server.files["evil.zip"] = zipped(evil)
    server.files["evil.tgz"] = tgz(evil)
    for archive in ("evil.zip", "evil.tgz"):
        with contextlib.suppress(StepFailed):
            await cell.perform(
                DownloadAction(from_=f"{server.base}/files/{archive}", to="/home/vcap/e")
            )
    assert not Path(f"/tmp/{name}").exists()
    assert not Path(f"/tmp/{name}-abs").exists()
    assert not Path(f"/{name}").exists()
    assert not (cell.backend.root / name).exists()


async def test_download_file_url_under_allowed_root(cell: Cell) -> None:
    """A file:// URL under transfer.file_roots is copied in."""
    source = cell.allowed / "sub" / "local.txt"
    source.parent.mkdir()
    source.write_text("local content\n")
    await cell.perform(DownloadAction(from_=f"file://{source}", to="/home/vcap/f"))
    assert await cell.shell("cat /home/vcap/f/local.txt") == (0, ["local content"])


async def test_download_file_url_outside_roots_is_refused(cell: Cell) -> None:
    """A file:// URL outside transfer.file_roots is refused with a reason naming file_roots."""
    source = cell.outside / "private.txt"
    source.write_text("private\n")
    for url in (
        f"file://{source}",
        "file:///etc/passwd",
        f"file://{cell.allowed}/../outside/private.txt",
    ):
        reason = await cell.fails(DownloadAction(from_=url, to="/home/vcap/f"))
        assert reason.startswith("Downloading failed")
        assert "file_roots" in reason
    assert not await cell.exists("/home/vcap/f/private.txt")
    assert not await cell.exists("/home/vcap/f/passwd")


async def test_download_checksum_ok(cell: Cell, server: FileServer) -> None:
    """A download whose checksum matches succeeds (algorithm in any case)."""
    server.files["sum.txt"] = b"checked\n"
    for algorithm, value in (
        ("sha256", hashlib.sha256(b"checked\n").hexdigest()),
        ("MD5", hashlib.md5(b"checked\n").hexdigest().upper()),
    ):
        await cell.perform(
            DownloadAction(
                from_=f"{server.base}/files/sum.txt",
                to="/home/vcap/s",
                checksum_algorithm=algorithm,
                checksum_value=value,
            )
        )
    assert await cell.shell("cat /home/vcap/s/sum.txt") == (0, ["checked"])


async def test_download_checksum_mismatch_fails(cell: Cell, server: FileServer) -> None:
    """A download whose checksum does not match fails saying mismatch, and leaves nothing."""
    server.files["sum.txt"] = b"checked\n"
    reason = await cell.fails(
        DownloadAction(
            from_=f"{server.base}/files/sum.txt",
            to="/home/vcap/s",
            checksum_algorithm="sha256",
            checksum_value="0" * 64,
        )
    )
    assert reason.startswith("Downloading failed")
    assert "mismatch" in reason
    assert not await cell.exists("/home/vcap/s/sum.txt")


async def test_download_404_fails(cell: Cell, server: FileServer) -> None:
    """A download answered 404 fails "Downloading failed"."""
    reason = await cell.fails(
        DownloadAction(from_=f"{server.base}/files/missing", to="/home/vcap/m")
    )
    assert reason.startswith("Downloading failed")
    assert "404" in reason


async def test_download_leaves_no_scratch_files(cell: Cell, server: FileServer) -> None:
    """Successful and failed downloads leave nothing in the cell's scratch directory."""
    server.files["plain.txt"] = b"x"
    await cell.perform(DownloadAction(from_=f"{server.base}/files/plain.txt", to="/tmp/d"))
    await cell.fails(DownloadAction(from_=f"{server.base}/files/missing", to="/tmp/d"))
    assert list(cell.ctx.scratch.iterdir()) == []


# ---------------------------------------------------------------- upload


WRITE_PAYLOAD = "import sys; sys.stdout.buffer.write(bytes(range(256)) * 1200)"


async def test_upload_to_http_put(cell: Cell, server: FileServer) -> None:
    """An upload PUTs the container file's bytes to the URL."""
    await cell.perform(
        RunAction(path="/bin/sh", args=("-c", f'{PYTHON} -c "{WRITE_PAYLOAD}" > /tmp/out.bin'))
    )
    await cell.perform(
        UploadAction(from_="/tmp/out.bin", to=f"{server.base}/put/out.bin", artifact="result")
    )
    assert server.received["out.bin"] == PAYLOAD
    assert any(m.startswith("Uploaded result") for m in cell.messages())


async def test_upload_to_file_url_under_allowed_root(cell: Cell) -> None:
    """An upload to a file:// URL under transfer.file_roots writes the host file."""
    await cell.perform(sh("printf 'uploaded\\n' > /home/vcap/up.txt"))
    target = cell.allowed / "results" / "up.txt"
    await cell.perform(UploadAction(from_="/home/vcap/up.txt", to=f"file://{target}"))
    assert target.read_bytes() == b"uploaded\n"


async def test_upload_to_file_url_outside_roots_is_refused(cell: Cell) -> None:
    """An upload to a file:// URL outside transfer.file_roots fails and writes nothing."""
    await cell.perform(sh("echo x > /home/vcap/up.txt"))
    target = cell.outside / "up.txt"
    reason = await cell.fails(UploadAction(from_="/home/vcap/up.txt", to=f"file://{target}"))
    assert reason.startswith("Uploading failed")
    assert "file_roots" in reason
    assert not target.exists()


async def test_upload_of_missing_file_fails(cell: Cell, server: FileServer) -> None:
    """Uploading a file the container lacks fails "Uploading failed"."""
    reason = await cell.fails(
        UploadAction(from_="/home/vcap/nothing-here", to=f"{server.base}/put/x")
    )
    assert reason.startswith("Uploading failed")
    assert server.received == {}


# ---------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (1, "1ms"),
        (500, "500ms"),
        (999, "999ms"),
        (1000, "1s"),
        (1500, "1.5s"),
        (5000, "5s"),
        (61_001, "1m1.001s"),
        (90_000, "1m30s"),
        (3_600_000, "1h0m0s"),
        (7_200_000, "2h0m0s"),
        (5_430_500, "1h30m30.5s"),
    ],
)
def test_go_duration(ms: int, text: str) -> None:
    """Durations are worded as Go's time.Duration prints them."""
    assert go_duration(ms) == text
