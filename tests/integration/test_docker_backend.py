"""The Docker backend against the real engine: containers, processes, files, limits, network."""

# The tests look at host paths directly, to see what a container did to the host;
# a stat or a small read is not worth a thread.
# ruff: noqa: ASYNC240

from __future__ import annotations

import asyncio
import contextlib
import io
import tarfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from diego.cell.backends.base import BackendError, ContainerSpec, Leftover, ProcessSpec
from diego.cell.backends.docker import DockerBackend, DockerOptions, remove_strays
from diego.cell.backends.shim import MAX_LINE
from diego.models.task import SecurityGroupRule
from tests.integration.processes import eventually, host_pids_with, sleep_arg, sleeping

SOCKET = Path("/var/run/docker.sock")
DOCKER = "/usr/bin/docker"
IMAGE = "diego/busybox:latest"
PRELOADED = {"linux": IMAGE}

pytestmark = pytest.mark.skipif(
    not SOCKET.exists(),
    reason=f"no Docker engine: {SOCKET} is absent (scripts/docker.sh starts one)",
)


# ---------------------------------------------------------------- helpers


def token() -> str:
    """A unique name for one test's containers, files and processes."""
    return uuid.uuid4().hex[:12]


def discard(_line: str) -> None:
    """An output sink that drops the line."""


async def command(*argv: str) -> tuple[int, str, str]:
    """Run a host command: its status, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def docker(*args: str) -> str:
    """The output of a docker CLI command, which must succeed."""
    code, out, err = await command(DOCKER, *args)
    assert code == 0, f"docker {' '.join(args)}: {err}"
    return out.strip()


async def iptables_rules() -> str:
    """Every rule of the filter table, as ``iptables -S`` prints them."""
    iptables = next(p for p in ("/usr/sbin/iptables", "/sbin/iptables") if Path(p).exists())
    code, out, err = await command(iptables, "-w", "-S")
    assert code == 0, err
    return out


async def containers_of(cell: str) -> list[str]:
    """The ids of every container (running or not) labelled with ``cell``."""
    return (await docker("ps", "-aq", "--filter", f"label=org.diego.cell={cell}")).split()


async def networks_of(cell: str) -> list[str]:
    """The ids of every network labelled with ``cell``."""
    return (await docker("network", "ls", "-q", "--filter", f"label=org.diego.cell={cell}")).split()


async def container_id(cell: str, guid: str) -> str:
    """The engine's full id of the container ``guid`` of ``cell``."""
    found = await docker(
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        f"label=org.diego.cell={cell}",
        "--filter",
        f"label=org.diego.guid={guid}",
    )
    assert len(found.split()) == 1, f"containers of {guid}: {found!r}"
    return found


async def bridge_of(cell: str, guid: str) -> str:
    """The host interface name of the bridge network of container ``guid``."""
    found = await docker(
        "network",
        "ls",
        "-q",
        "--filter",
        f"label=org.diego.cell={cell}",
        "--filter",
        f"label=org.diego.guid={guid}",
    )
    assert len(found.split()) == 1, f"networks of {guid}: {found!r}"
    return await docker(
        "network", "inspect", "-f", '{{index .Options "com.docker.network.bridge.name"}}', found
    )


def in_cgroup_of(pid: int, cid: str) -> bool:
    """Whether host process ``pid`` is in the cgroups of the container ``cid``."""
    try:
        return cid in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


def container_pids_with(arg: str, cid: str) -> list[int]:
    """The host pids of processes of container ``cid`` with ``arg`` among their arguments."""
    return [pid for pid in host_pids_with(arg) if in_cgroup_of(pid, cid)]


def host_uid(pid: int) -> int:
    """The real uid of host process ``pid``, as the host sees it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def write_tar(path: Path, entries: dict[str, bytes]) -> Path:
    """A tar archive at ``path`` of ``entries`` (names taken literally, '..' included)."""
    with tarfile.open(path, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in entries.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            member.mode = 0o644
            tar.addfile(member, io.BytesIO(data))
    return path


def read_tar(path: Path) -> dict[str, bytes | None]:
    """Each entry of the tar at ``path``: a file's bytes, None for anything else."""
    found: dict[str, bytes | None] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            data = tar.extractfile(member) if member.isfile() else None
            found[member.name] = data.read() if data is not None else None
    return found


async def sh(
    backend: DockerBackend,
    guid: str,
    script: str,
    *,
    user: str = "root",
    dir: str = "",
    env: tuple[tuple[str, str], ...] = (),
    nofile: int | None = None,
) -> tuple[int, list[str], list[str]]:
    """Run ``sh -c script`` in the container: its status, stdout and stderr lines."""
    out: list[str] = []
    err: list[str] = []
    spec = ProcessSpec("/bin/sh", ("-c", script), dir=dir, env=env, user=user, nofile=nofile)
    proc = await backend.run(guid, spec, out.append, err.append)
    return await asyncio.wait_for(proc.wait(), 30), out, err


class Cells:
    """The backends a test opens and the containers it makes, all removed at its end."""

    def __init__(self) -> None:
        self.cell = f"test-{token()}"
        self.cells = [self.cell]
        self.backends: list[DockerBackend] = []
        self.guids: list[str] = []

    async def open(
        self, cell: str = "", pull_timeout: float = 60.0, node: str = "", state_dir: str = ""
    ) -> DockerBackend:
        """A backend of ``cell`` (by default the test's own cell) of node ``node``, its
        process files in ``state_dir`` (by default a directory of its own)."""
        cell = cell or self.cell
        if cell not in self.cells:
            self.cells.append(cell)
        options = DockerOptions(
            preloaded=PRELOADED, pull_timeout=pull_timeout, node=node, state_dir=state_dir
        )
        backend = await DockerBackend.open(cell, options)
        self.backends.append(backend)
        return backend

    def new_guid(self) -> str:
        """A container guid unique to this test, destroyed at its end."""
        guid = f"c-{token()}"
        self.guids.append(guid)
        return guid

    async def create(self, backend: DockerBackend, **spec: object) -> str:
        """Make a container with a fresh guid and ``spec`` (stack linux by default); its guid."""
        guid = self.new_guid()
        spec.setdefault("stack", "linux")
        await backend.create(ContainerSpec(guid, **spec))  # type: ignore[arg-type]
        return guid

    async def close(self) -> None:
        """Destroy everything the test made; then no container of its cells may be left."""
        for backend in self.backends:
            if backend.docker.session.closed:  # the test closed it
                pass
            else:
                for leftover in await backend.existing():
                    await backend.destroy(leftover.guid)
                for guid in self.guids:
                    await backend.destroy(guid)
                await backend.close()
            # DockerBackend.close leaves its own connector open (see
            # test_close_releases_the_engine_connection); do not let the leak
            # warn in some later test.
            if not backend.docker.connector.closed:
                await backend.docker.connector.close()
        left = {cell: await containers_of(cell) for cell in self.cells}
        networks = {cell: await networks_of(cell) for cell in self.cells}
        for ids in left.values():
            if ids:
                await command(DOCKER, "rm", "-f", *ids)
        assert not any(left.values()), f"containers left: {left}"
        assert not any(networks.values()), f"networks left: {networks}"


@pytest.fixture
async def cells() -> AsyncIterator[Cells]:
    """The test's backends and containers, destroyed and closed at its end."""
    made = Cells()
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
async def backend(cells: Cells) -> DockerBackend:
    """A backend of the test's own cell."""
    return await cells.open()


# ---------------------------------------------------------------- capabilities


async def test_capabilities(backend: DockerBackend) -> None:
    """The backend names itself, runs docker and preloaded root filesystems, remaps users."""
    caps = backend.capabilities()
    assert caps.backend == "docker"
    assert {"docker", "preloaded"} <= set(caps.rootfs_providers)
    assert caps.user_namespaces, "the engine here runs with --userns-remap"
    assert "user namespace" in caps.unprivileged
    assert caps.memory_limit
    assert caps.network_isolation


async def test_close_releases_the_engine_connection(cells: Cells) -> None:
    """close() lets go of every connection to the engine (nothing left to warn at exit)."""
    backend = await cells.open()
    await backend.close()
    assert backend.docker.connector.closed, "close() left the engine's connector open"


# ---------------------------------------------------------------- processes


async def test_a_restarted_cell_takes_back_a_container_and_its_processes(
    cells: Cells, tmp_path: Path
) -> None:
    """A backend made anew on the same state directory (a restarted node) reopens the
    container the engine kept running, attaches to its keyed processes, running or
    ended, with their output and exit status, and knows one never started."""
    state = str(tmp_path / "state")
    first = await cells.open(state_dir=state)
    guid = await cells.create(first)
    started = asyncio.Event()
    script = "echo before; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo after; exit 3"
    waiting = ProcessSpec("/bin/sh", ("-c", script), key="0")
    await first.run(guid, waiting, lambda line: started.set(), discard)
    quick = ProcessSpec("/bin/sh", ("-c", "echo done"), key="1")
    assert await (await first.run(guid, quick, discard, discard)).wait() == 0
    await asyncio.wait_for(started.wait(), 10)

    second = await cells.open(state_dir=state)
    spec = ContainerSpec(guid, stack="linux")
    assert await second.reopen(spec)
    assert not await second.reopen(spec)  # once
    out: list[str] = []
    running = await second.attach(guid, "0", out.append, discard)
    assert running is not None
    assert (await sh(second, guid, "touch /tmp/go"))[0] == 0
    assert await asyncio.wait_for(running.wait(), 10) == 3
    assert out == ["before", "after"]  # nothing was freed yet: all of it read again
    done_out: list[str] = []
    finished = await second.attach(guid, "1", done_out.append, discard)
    assert finished is not None
    assert await finished.wait() == 0
    assert done_out == ["done"]
    assert await second.attach(guid, "never", discard, discard) is None
    await second.destroy(guid)
    assert not (tmp_path / "state" / guid).exists()


async def test_a_stopped_container_is_not_reopened(cells: Cells, tmp_path: Path) -> None:
    """A container the engine stopped (it restarted, say) has lost its processes."""
    state = str(tmp_path / "state")
    first = await cells.open(state_dir=state)
    guid = await cells.create(first)
    await docker("stop", "-t", "0", await container_id(cells.cell, guid))
    second = await cells.open(state_dir=state)
    assert not await second.reopen(ContainerSpec(guid, stack="linux"))


async def test_exit_status_passes_through(cells: Cells, backend: DockerBackend) -> None:
    """A process's exit status is what wait() returns."""
    guid = await cells.create(backend)
    assert (await sh(backend, guid, "exit 0"))[0] == 0
    assert (await sh(backend, guid, "exit 3"))[0] == 3
    assert (await sh(backend, guid, "exit 255"))[0] == 255


async def test_stdout_and_stderr_reach_their_own_sinks(
    cells: Cells, backend: DockerBackend
) -> None:
    """Lines written to stdout and stderr arrive, in order, at the matching sink."""
    guid = await cells.create(backend)
    script = "echo o1; echo e1 >&2; echo o2; echo e2 >&2; printf 'o3'"
    status, out, err = await sh(backend, guid, script)
    assert status == 0
    assert out == ["o1", "o2", "o3"]
    assert err == ["e1", "e2"]


async def test_line_split_over_writes_arrives_whole(cells: Cells, backend: DockerBackend) -> None:
    """A line written in several pieces, apart in time, reaches the sink as one line."""
    guid = await cells.create(backend)
    script = "printf 'ab'; sleep 0.2; printf 'cd\\nef'; sleep 0.2; printf 'gh\\n'; printf 'ij'"
    status, out, _ = await sh(backend, guid, script)
    assert (status, out) == (0, ["abcd", "efgh", "ij"])


async def test_over_long_line_arrives_in_pieces(cells: Cells, backend: DockerBackend) -> None:
    """A line far over 64 KiB comes in pieces of at most 64 KiB, whole and in order."""
    guid = await cells.create(backend)
    size = 4 * MAX_LINE + 1234
    script = f"head -c {size} /dev/zero | tr '\\0' a; echo; echo after"
    status, out, _ = await sh(backend, guid, script)
    assert status == 0
    assert out[-1] == "after"
    pieces = out[:-1]
    assert len(pieces) > 1
    # Bounded by what is buffered when the limit is passed, not by the line.
    assert max(len(piece) for piece in pieces) <= 8 * MAX_LINE
    assert "".join(pieces) == "a" * size


@pytest.mark.parametrize("size", [MAX_LINE, 2 * MAX_LINE])
async def test_over_long_line_gives_no_empty_line(
    cells: Cells, backend: DockerBackend, size: int
) -> None:
    """A line cut at the limit just before its newline yields no spurious empty line."""
    guid = await cells.create(backend)
    script = f"head -c {size} /dev/zero | tr '\\0' a; echo; echo after"
    status, out, _ = await sh(backend, guid, script)
    assert status == 0
    assert out[-1] == "after"
    assert "".join(out[:-1]) == "a" * size
    assert "" not in out, f"pieces delivered: {[len(piece) for piece in out]}"


async def test_env_of_process_and_container(cells: Cells, backend: DockerBackend) -> None:
    """The container's env and the process's are both visible; the process's wins."""
    guid = await cells.create(backend, env=(("ONLY_C", "c"), ("BOTH", "from-c")))
    status, out, _ = await sh(
        backend,
        guid,
        'echo "$ONLY_C $ONLY_P $BOTH $HOME $USER"',
        env=(("ONLY_P", "p"), ("BOTH", "from-p")),
    )
    assert (status, out) == (0, ["c p from-p /home/vcap root"])


async def test_working_directory(cells: Cells, backend: DockerBackend) -> None:
    """dir is /home/vcap by default, relative to it, or absolute."""
    guid = await cells.create(backend)
    assert await sh(backend, guid, "mkdir -p sub && pwd") == (0, ["/home/vcap"], [])
    assert (await sh(backend, guid, "pwd", dir="sub"))[:2] == (0, ["/home/vcap/sub"])
    assert (await sh(backend, guid, "pwd", dir="/tmp"))[:2] == (0, ["/tmp"])
    assert (await sh(backend, guid, "pwd", dir="../../../etc"))[:2] == (0, ["/etc"])


@pytest.mark.parametrize(
    ("user", "ids"),
    [("root", ["0", "0"]), ("nobody", ["65534", "65534"]), ("vcap", ["1000", "1000"])],
)
async def test_user(cells: Cells, backend: DockerBackend, user: str, ids: list[str]) -> None:
    """The process runs as the named user of the image."""
    guid = await cells.create(backend)
    status, out, _ = await sh(backend, guid, "id -u; id -g", user=user)
    assert (status, out) == (0, ids)


async def test_nofile_limit_is_applied(cells: Cells, backend: DockerBackend) -> None:
    """ProcessSpec.nofile sets the process's open-files limit."""
    guid = await cells.create(backend)
    status, out, _ = await sh(backend, guid, "ulimit -n; ulimit -Hn", nofile=123)
    assert (status, out) == (0, ["123", "123"])


async def test_run_in_missing_container_is_a_backend_error(backend: DockerBackend) -> None:
    """Running in a container that was never made raises BackendError."""
    with pytest.raises(BackendError):
        await sh(backend, f"never-{token()}", "true")


@pytest.mark.parametrize(
    "process",
    [
        ProcessSpec("/no/such/program"),
        ProcessSpec("/bin/true", user="no-such-user"),
        ProcessSpec("/bin/true", dir="/no/such/dir"),
    ],
)
async def test_process_that_cannot_start_fails_at_once(
    cells: Cells, backend: DockerBackend, process: ProcessSpec
) -> None:
    """A missing program, user or directory is a BackendError or a failed status, not a hang."""
    guid = await cells.create(backend)
    try:
        proc = await asyncio.wait_for(backend.run(guid, process, discard, discard), 10)
    except BackendError:
        return
    assert await asyncio.wait_for(proc.wait(), 10) != 0


async def test_kill_ends_the_process_tree(cells: Cells, backend: DockerBackend) -> None:
    """kill() ends the process and its children at once: 137, and no process left."""
    guid = await cells.create(backend)
    cid = await container_id(cells.cell, guid)
    arg = sleep_arg()
    proc = await backend.run(
        guid, ProcessSpec("/bin/sh", ("-c", f"sleep {arg} & sleep {arg}")), discard, discard
    )
    assert await eventually(
        lambda: len([p for p in sleeping(arg) if in_cgroup_of(p, cid)]) == 2, within=5
    )
    proc.kill()
    assert await asyncio.wait_for(proc.wait(), 2) == 137
    assert await eventually(lambda: not container_pids_with(arg, cid), within=2)
    # The container itself lives on.
    assert (await sh(backend, guid, "echo alive"))[:2] == (0, ["alive"])


# ---------------------------------------------------------------- memory


async def test_memory_limit_kills_and_is_reported(cells: Cells, backend: DockerBackend) -> None:
    """A process over memory_mb is killed (137) and out_of_memory says so; not elsewhere."""
    small = await cells.create(backend, memory_mb=32)
    roomy = await cells.create(backend)
    script = "dd if=/dev/zero bs=200M count=1 of=/dev/null"
    assert not backend.out_of_memory(small)
    assert (await sh(backend, small, script))[0] == 137
    assert backend.out_of_memory(small)
    assert (await sh(backend, roomy, "echo fine"))[:2] == (0, ["fine"])
    assert not backend.out_of_memory(roomy)
    assert not backend.out_of_memory(f"never-{token()}")


# ---------------------------------------------------------------- processes

FORKS = 200
"""Background sleeps a fork loop tries to start: ten times the limit the tests give."""


def fork_loop(arg: str) -> str:
    """A script starting ``sleep arg`` in the background FORKS times, saying "started"
    after each fork that worked; busybox sh exits 2 at its first failed fork."""
    return f"for i in $(seq {FORKS}); do sleep {arg} & echo started; done"


async def pids_group(cells: Cells, guid: str) -> Path:
    """The host directory of the container's pids cgroup."""
    pid = await docker("inspect", "-f", "{{.State.Pid}}", await container_id(cells.cell, guid))
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            return Path("/sys/fs/cgroup/pids" + path)
        if controllers == "":
            return Path("/sys/fs/cgroup" + path)
    raise AssertionError(f"no pids cgroup for {guid}")


async def test_max_pids_caps_a_fork_loop_and_says_so(cells: Cells, backend: DockerBackend) -> None:
    """max_pids 20 is the container's PidsLimit: a loop starting 200 background sleeps
    sees fork fail, the container never holds more than 20 processes (its init and
    keepalive among them), and pids_limit_reached says so."""
    assert backend.capabilities().pids_limit
    guid = await cells.create(backend, max_pids=20)
    group = await pids_group(cells, guid)
    assert (group / "pids.max").read_text().strip() == "20"
    assert backend.pids_limit_reached(guid) == 0
    arg = sleep_arg()
    status, out, err = await sh(backend, guid, fork_loop(arg))
    assert status != 0
    assert any("fork" in line for line in err), err
    assert 0 < len(out) < 20, out
    if (group / "pids.peak").exists():  # the kernel's own high-water mark (Linux 6.1 on)
        assert 0 < int((group / "pids.peak").read_text()) <= 20
    assert len(container_pids_with(arg, await container_id(cells.cell, guid))) == len(out)
    assert backend.pids_limit_reached(guid) == 20


async def test_without_max_pids_the_same_loop_runs_to_its_end(
    cells: Cells, backend: DockerBackend
) -> None:
    """The limit is what stopped the loop: with none, all 200 sleeps start."""
    guid = await cells.create(backend)
    status, out, _ = await sh(backend, guid, fork_loop(sleep_arg()))
    assert (status, len(out)) == (0, FORKS)
    assert backend.pids_limit_reached(guid) == 0


# ---------------------------------------------------------------- files


async def test_stream_in_makes_the_directory_and_stream_out_reads_back(
    cells: Cells, backend: DockerBackend, tmp_path: Path
) -> None:
    """stream_in unpacks into a directory it makes; stream_out tars it under its basename."""
    guid = await cells.create(backend)
    tar = write_tar(tmp_path / "in.tar", {"hello.txt": b"hello\n", "sub/deep.txt": b"deep\n"})
    await backend.stream_in(guid, "/data/new/dir", tar)
    status, out, _ = await sh(backend, guid, "cat /data/new/dir/hello.txt /data/new/dir/sub/*")
    assert (status, out) == (0, ["hello", "deep"])
    await backend.stream_out(guid, "/data/new/dir", tmp_path / "out.tar")
    entries = read_tar(tmp_path / "out.tar")
    assert entries["dir/hello.txt"] == b"hello\n"
    assert entries["dir/sub/deep.txt"] == b"deep\n"
    assert all(name == "dir" or name.startswith("dir/") for name in entries)
    await backend.stream_out(guid, "/data/new/dir/hello.txt", tmp_path / "file.tar")
    assert read_tar(tmp_path / "file.tar") == {"hello.txt": b"hello\n"}


async def test_relative_paths_are_under_home(
    cells: Cells, backend: DockerBackend, tmp_path: Path
) -> None:
    """A relative directory of stream_in and path of stream_out is under /home/vcap."""
    guid = await cells.create(backend)
    await backend.stream_in(guid, "app", write_tar(tmp_path / "in.tar", {"a.txt": b"A"}))
    assert (await sh(backend, guid, "cat /home/vcap/app/a.txt"))[:2] == (0, ["A"])
    await backend.stream_in(guid, "", write_tar(tmp_path / "top.tar", {"b.txt": b"B"}))
    assert (await sh(backend, guid, "cat /home/vcap/b.txt"))[:2] == (0, ["B"])
    await backend.stream_out(guid, "app/a.txt", tmp_path / "out.tar")
    assert read_tar(tmp_path / "out.tar") == {"a.txt": b"A"}


async def test_stream_out_of_a_missing_path_is_a_backend_error(
    cells: Cells, backend: DockerBackend, tmp_path: Path
) -> None:
    """stream_out of a path that does not exist raises BackendError naming it."""
    guid = await cells.create(backend)
    with pytest.raises(BackendError, match="no/such/file"):
        await backend.stream_out(guid, "no/such/file", tmp_path / "out.tar")


async def test_files_of_a_missing_container_are_a_backend_error(
    backend: DockerBackend, tmp_path: Path
) -> None:
    """stream_in and stream_out in a container never made raise BackendError."""
    tar = write_tar(tmp_path / "in.tar", {"a.txt": b"A"})
    with pytest.raises(BackendError):
        await backend.stream_in(f"never-{token()}", "/tmp", tar)
    with pytest.raises(BackendError):
        await backend.stream_out(f"never-{token()}", "/tmp", tmp_path / "out.tar")


async def test_dot_dot_stays_inside_the_container(
    cells: Cells, backend: DockerBackend, tmp_path: Path
) -> None:
    """Neither a '..' tar entry nor a '..' target directory writes to the host."""
    guid = await cells.create(backend)
    name = token()
    evil = write_tar(tmp_path / "evil.tar", {f"../../etc/evil-{name}": b"evil\n"})
    with contextlib.suppress(BackendError):  # refusing the entry is as good as confining it
        await backend.stream_in(guid, "/home/vcap", evil)
    assert not Path(f"/etc/evil-{name}").exists()
    assert not Path(f"/home/etc/evil-{name}").exists()

    good = write_tar(tmp_path / "good.tar", {"f.txt": b"inside\n"})
    await backend.stream_in(guid, f"../../../../tmp/x-{name}", good)
    assert not Path(f"/tmp/x-{name}").exists()
    assert (await sh(backend, guid, f"cat /tmp/x-{name}/f.txt"))[:2] == (0, ["inside"])
    await backend.stream_out(guid, f"../../../../tmp/x-{name}/f.txt", tmp_path / "out.tar")
    assert read_tar(tmp_path / "out.tar") == {"f.txt": b"inside\n"}


# ---------------------------------------------------------------- users


@pytest.mark.parametrize("privileged", [False, True])
async def test_container_root_on_the_host(
    cells: Cells, backend: DockerBackend, privileged: bool
) -> None:
    """Root of an unprivileged container is an unprivileged host uid; of a privileged one, 0."""
    guid = await cells.create(backend, privileged=privileged)
    cid = await container_id(cells.cell, guid)
    assert (await sh(backend, guid, "id -u"))[:2] == (0, ["0"])
    arg = sleep_arg()
    await backend.run(guid, ProcessSpec("/bin/sleep", (arg,)), discard, discard)
    try:
        assert await eventually(lambda: bool(container_pids_with(arg, cid)), within=5)
        uids = {host_uid(pid) for pid in container_pids_with(arg, cid)}
        if privileged:
            assert uids == {0}
        else:
            assert uids, "no process found"
            assert 0 not in uids, f"host uids {uids}"
    finally:
        await backend.destroy(guid)
        assert await eventually(lambda: not container_pids_with(arg, cid), within=2)


# ---------------------------------------------------------------- network


@pytest.fixture
async def target() -> AsyncIterator[str]:
    """A container on a network of the test's own serving "ok" on ports 8001 and 8002; its IP."""
    name = f"diego-test-{token()}"
    await docker("network", "create", name)
    server = ""
    try:
        script = (
            "echo ok > /tmp/index.html && httpd -p 8001 -h /tmp && httpd -p 8002 -h /tmp "
            "&& sleep 1000"
        )
        server = await docker("run", "-d", "--network", name, IMAGE, "sh", "-c", script)
        ip = await docker(
            "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", server
        )
        deadline = time.monotonic() + 10
        while True:
            code, out, _ = await command(
                DOCKER, "exec", server, "wget", "-q", "-O", "-", "http://127.0.0.1:8002/index.html"
            )
            if code == 0 and out.strip() == "ok":
                break
            assert time.monotonic() < deadline, "the target's httpd never answered"
            await asyncio.sleep(0.1)
        yield ip
    finally:
        if server:
            await command(DOCKER, "rm", "-f", server)
        await command(DOCKER, "network", "rm", name)


def fetch(ip: str, port: int) -> str:
    """A script fetching index.html from ``ip:port``, giving up after 5 seconds.

    (busybox 1.35's ``wget -T`` crashes with a segfault: ``timeout`` bounds it instead.)
    """
    return f"timeout 5 wget -q -O - http://{ip}:{port}/index.html"


async def test_no_network_means_loopback_only(cells: Cells, backend: DockerBackend) -> None:
    """network=False: the container has only a loopback interface."""
    guid = await cells.create(backend, network=False)
    status, out, _ = await sh(backend, guid, "tail -n +3 /proc/net/dev | cut -d: -f1")
    assert status == 0
    assert [line.strip() for line in out] == ["lo"]


async def test_egress_follows_the_rules(cells: Cells, backend: DockerBackend, target: str) -> None:
    """With a rule for tcp port 8001 the target answers there; 8002 is refused at once.

    Destroying the container removes its bridge network and its iptables chain.
    """
    rule = SecurityGroupRule(protocol="tcp", destination=target, ports=(8001,))
    guid = await cells.create(backend, network=True, rules=(rule,))
    bridge = await bridge_of(cells.cell, guid)
    assert f"DIEGO-{bridge}" in await iptables_rules()

    status, out, _ = await sh(backend, guid, fetch(target, 8001))
    assert (status, out) == (0, ["ok"])

    # Refused (a reset), not dropped: the client does not sit out its timeout.
    status, out, err = await sh(backend, guid, fetch(target, 8002))
    assert status != 0
    assert out == []
    assert any("Connection refused" in line for line in err), err

    await backend.destroy(guid)
    assert await networks_of(cells.cell) == []
    assert f"DIEGO-{bridge}" not in await iptables_rules()
    assert bridge not in Path("/proc/net/dev").read_text()


async def test_network_without_rules_reaches_nothing(
    cells: Cells, backend: DockerBackend, target: str
) -> None:
    """network=True with no rules: the container has a network, but every connection is refused."""
    guid = await cells.create(backend, network=True)
    status, out, _ = await sh(backend, guid, "tail -n +3 /proc/net/dev | cut -d: -f1")
    assert status == 0
    assert sorted(line.strip() for line in out) == ["eth0", "lo"]
    status, out, err = await sh(backend, guid, fetch(target, 8001))
    assert (status, out) == (1, [])
    assert any("Connection refused" in line for line in err), err


# ---------------------------------------------------------------- images


async def test_image_that_cannot_be_pulled(cells: Cells) -> None:
    """An image the engine lacks and cannot pull makes create raise BackendError naming it."""
    backend = await cells.open(pull_timeout=20)
    guid = cells.new_guid()
    with pytest.raises(BackendError, match="nosuch/image:v1"):
        await backend.create(ContainerSpec(guid, root_fs="docker:///nosuch/image#v1"))
    assert await containers_of(cells.cell) == []
    with pytest.raises(BackendError):
        await sh(backend, guid, "true")


async def test_unconfigured_preloaded_name(cells: Cells, backend: DockerBackend) -> None:
    """A preloaded root_fs with no image configured is a BackendError naming it."""
    with pytest.raises(BackendError, match="preloaded:nosuch"):
        await backend.create(ContainerSpec(cells.new_guid(), root_fs="preloaded:nosuch"))
    assert await containers_of(cells.cell) == []


@pytest.mark.parametrize(
    ("root_fs", "stack"),
    [("preloaded:linux", ""), ("", "linux"), ("docker:///diego/busybox#latest", "")],
)
async def test_root_fs_runs(cells: Cells, backend: DockerBackend, root_fs: str, stack: str) -> None:
    """preloaded:linux, the stack's own root and a docker:// image the engine has all run."""
    guid = await cells.create(backend, root_fs=root_fs, stack=stack)
    assert (await sh(backend, guid, "echo ok; cat /etc/hostname >/dev/null"))[:2] == (0, ["ok"])


# ---------------------------------------------------------------- leftovers


async def test_restarted_cell_finds_its_leftovers(cells: Cells) -> None:
    """A second backend of the same cell finds the first's containers; another cell does not."""
    first = await cells.open()
    labels = (("lrp.process_guid", "p"), ("lrp.index", "2"), ("lrp.domain", "d"))
    guid = await cells.create(first, memory_mb=64, disk_mb=128, labels=labels)
    with_network = await cells.create(first, network=True)
    bridge = await bridge_of(cells.cell, with_network)
    assert await first.existing() == []  # its own containers are not leftovers

    second = await cells.open()
    found = await second.existing()
    assert found == sorted(
        [Leftover(guid, 64, 128, dict(labels)), Leftover(with_network, 0, 0, {})],
        key=lambda leftover: leftover.guid,
    )
    other = await cells.open(f"other-{token()}")
    assert await other.existing() == []
    await other.destroy(guid)  # not its container: left alone
    assert len(await second.existing()) == 2

    for leftover in found:
        await second.destroy(leftover.guid)
    assert await second.existing() == []
    assert await containers_of(cells.cell) == []
    assert await networks_of(cells.cell) == []
    assert f"DIEGO-{bridge}" not in await iptables_rules()


async def test_a_cell_of_the_same_name_on_another_node_sees_no_leftovers(cells: Cells) -> None:
    """Nodes on one machine name their cells alike: a cell finds only its own node's
    containers, never another node's live ones."""
    first = await cells.open(node="node-a")
    guid = await cells.create(first)
    assert await (await cells.open(node="node-b")).existing() == []
    assert [c.guid for c in await (await cells.open(node="node-a")).existing()] == [guid]


async def test_remove_strays_takes_only_the_nodes_containers_of_cells_it_lost(
    cells: Cells,
) -> None:
    """remove_strays removes the node's containers whose cell it no longer runs, and
    leaves its other cells' and other nodes' containers alone."""
    node = f"node-{token()}"
    kept_cell, lost_cell = cells.cell, f"lost-{token()}"
    kept = await cells.create(await cells.open(node=node))
    lost = await cells.create(await cells.open(lost_cell, node=node))
    elsewhere = await cells.create(await cells.open(lost_cell, node=f"other-{token()}"))
    removed = await remove_strays(DockerOptions(node=node), {kept_cell})
    assert removed == [f"diego-{lost_cell}-{lost}"]
    assert await containers_of(kept_cell)
    remaining = await containers_of(lost_cell)
    assert len(remaining) == 1  # the other node's
    del kept, elsewhere


async def test_destroy_is_idempotent(cells: Cells, backend: DockerBackend) -> None:
    """Destroying twice, or a guid never made, is no error."""
    guid = await cells.create(backend, network=True)
    await backend.destroy(guid)
    await backend.destroy(guid)
    await backend.destroy(f"never-{token()}")
    assert await containers_of(cells.cell) == []
    with pytest.raises(BackendError):
        await sh(backend, guid, "true")


async def test_destroy_kills_running_processes(cells: Cells, backend: DockerBackend) -> None:
    """destroy ends the container's processes; their wait() returns."""
    guid = await cells.create(backend)
    cid = await container_id(cells.cell, guid)
    arg = sleep_arg()
    proc = await backend.run(guid, ProcessSpec("/bin/sleep", (arg,)), discard, discard)
    assert await eventually(lambda: bool(container_pids_with(arg, cid)), within=5)
    await backend.destroy(guid)
    assert await eventually(lambda: not container_pids_with(arg, cid), within=2)
    # As the local backend: a process ended by destroy was killed by SIGKILL.
    assert await asyncio.wait_for(proc.wait(), 5) == 137


# ---------------------------------------------------------------- other images


@pytest.fixture
async def marked_image(tmp_path: Path) -> AsyncIterator[str]:
    """An image of the test's own, built offline from diego/busybox: it holds /marker."""
    name = f"diego/test-marked:{token()}"
    (tmp_path / "Dockerfile").write_text(f"FROM {IMAGE}\nRUN echo marked > /marker\n")
    await docker("build", "-q", "-t", name, str(tmp_path))
    try:
        yield name
    finally:
        await command(DOCKER, "rmi", "-f", name)


async def test_a_process_in_another_image_shares_the_volumes(
    cells: Cells, backend: DockerBackend, marked_image: str
) -> None:
    """A process given another image runs in it, beside the container: it sees the
    container's volumes, writes what the container then reads, and is removed after."""
    guid = await cells.create(backend, volumes=("/data",))
    assert (await sh(backend, guid, "echo from-main > /data/x"))[0] == 0
    out: list[str] = []
    script = "cat /data/x /marker; echo from-sibling > /data/y"
    process = ProcessSpec("/bin/sh", ("-c", script), image=marked_image)
    running = await backend.run(guid, process, out.append, out.append)
    assert await asyncio.wait_for(running.wait(), 30) == 0
    assert out == ["from-main", "marked"]
    status, seen, _ = await sh(backend, guid, "cat /data/y; test -e /marker || echo no-marker")
    assert (status, seen) == (0, ["from-sibling", "no-marker"])
    siblings = await docker("ps", "-aq", "--filter", f"label=org.diego.sibling-of={guid}")
    assert siblings.split() == []


async def test_a_process_in_another_image_is_killed_and_removed_by_destroy(
    cells: Cells, backend: DockerBackend, marked_image: str
) -> None:
    """Killing a process of another image ends it with 137; destroying the container
    removes any such process still running."""
    guid = await cells.create(backend)
    sleeper = ProcessSpec("/bin/sleep", ("1000",), image=marked_image)
    running = await backend.run(guid, sleeper, discard, discard)
    running.kill()
    assert await asyncio.wait_for(running.wait(), 30) == 137
    await backend.run(guid, sleeper, discard, discard)
    await backend.destroy(guid)
    siblings = await docker("ps", "-aq", "--filter", f"label=org.diego.sibling-of={guid}")
    assert siblings.split() == []


async def test_a_process_whose_pid_was_not_recorded_is_found_by_its_exec(
    cells: Cells, tmp_path: Path
) -> None:
    """The cell died after starting an exec but before recording its pid: a restarted
    cell asks the engine for the exec's pid, and follows the process to its end."""
    state = str(tmp_path / "state")
    first = await cells.open(state_dir=state)
    guid = await cells.create(first)
    script = "while [ ! -e /tmp/go ]; do sleep 0.05; done; echo after"
    await first.run(guid, ProcessSpec("/bin/sh", ("-c", script), key="0"), discard, discard)
    (tmp_path / "state" / guid / "node" / "k-0" / "pid").unlink()  # as if never written
    second = await cells.open(state_dir=state)
    assert await second.reopen(ContainerSpec(guid, stack="linux"))
    out: list[str] = []
    running = await second.attach(guid, "0", out.append, discard)
    assert running is not None
    assert (await sh(second, guid, "touch /tmp/go"))[0] == 0
    assert await asyncio.wait_for(running.wait(), 10) == 0
    assert out == ["after"]


async def test_a_process_whose_exec_was_never_recorded_never_started(
    cells: Cells, tmp_path: Path
) -> None:
    """The cell died after making a process's directory but before recording its exec
    (so before starting it): a restarted cell finds it never started, and the step
    runs, rather than failing as a process that may have run."""
    state = str(tmp_path / "state")
    first = await cells.open(state_dir=state)
    guid = await cells.create(first)
    await first.run(guid, ProcessSpec("/bin/true", key="0"), discard, discard)
    for name in ("pid", "exec"):
        (tmp_path / "state" / guid / "node" / "k-0" / name).unlink()  # as if never written
    (tmp_path / "state" / guid / "procs" / "k-0" / "exit").unlink()
    second = await cells.open(state_dir=state)
    assert await second.reopen(ContainerSpec(guid, stack="linux"))
    assert await second.attach(guid, "0", discard, discard) is None


async def test_a_keyed_process_in_another_image_is_not_taken_for_never_started(
    cells: Cells, tmp_path: Path, marked_image: str
) -> None:
    """A keyed process run in another image (beside the container) cannot be followed
    by a restarted cell, which must not start it again: attach says so."""
    state = str(tmp_path / "state")
    first = await cells.open(state_dir=state)
    guid = await cells.create(first)
    sibling = ProcessSpec("/bin/true", image=marked_image, key="tes.exec.1")
    await (await first.run(guid, sibling, discard, discard)).wait()
    second = await cells.open(state_dir=state)
    assert await second.reopen(ContainerSpec(guid, stack="linux"))
    with pytest.raises(BackendError, match="another image"):
        await second.attach(guid, "tes.exec.1", discard, discard)
