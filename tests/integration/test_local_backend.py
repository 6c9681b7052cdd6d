"""The local backend against the real machine: bubblewrap, cgroups, loop disks."""

# The tests look at host paths directly, to see what a container did to the host;
# a stat or a small read is not worth a thread.
# ruff: noqa: ASYNC240

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from diego.cell.backends.base import BackendError, ContainerSpec, Leftover, ProcessSpec
from diego.cell.backends.local import LocalBackend
from diego.cell.backends.shim import MAX_LINE
from tests.integration.processes import eventually, host_pids_with, sleep_arg, sleeping

PYTHON = "/usr/bin/python3"
CONTAINER_UID = 100_000

# Container guids name machine-wide cgroups: unique to this run, so that another
# test run on the machine cannot collide with them.
RUN = uuid.uuid4().hex[:8]


def gid(name: str) -> str:
    """The guid of the container ``name`` in this run."""
    return f"{name}-{RUN}"


C1, A, B = gid("c1"), gid("a"), gid("b")
LEFT_1, LEFT_2 = gid("left-1"), gid("left-2")
HALF, FULL, LEAST = gid("half"), gid("full"), gid("least")
NEVER_MADE, NOPE = gid("never-made"), gid("nope")


# ---------------------------------------------------------------- helpers


def discard(_line: str) -> None:
    """An output sink that drops the line."""


def token() -> str:
    """A unique name for files and processes of one test."""
    return uuid.uuid4().hex[:12]


def mount_points() -> list[str]:
    """Every mount point on the host, as /proc/self/mountinfo spells it."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4].replace("\\040", " ") for line in lines]


async def sh(
    backend: LocalBackend, guid: str, script: str, **process: object
) -> tuple[int, list[str], list[str]]:
    """Run ``sh -c script`` in the container: its status, stdout and stderr lines."""
    out: list[str] = []
    err: list[str] = []
    spec = ProcessSpec("/bin/sh", ("-c", script), **process)  # type: ignore[arg-type]
    proc = await backend.run(guid, spec, out.append, err.append)
    return await proc.wait(), out, err


def tar_of(entries: dict[str, bytes]) -> bytes:
    """A tar archive holding ``entries`` (names taken literally, '..' and '/' included)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in entries.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            member.mode = 0o644
            tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


async def clean(backend: LocalBackend, made: tuple[str, ...] = ()) -> None:
    """Destroy every container of ``backend`` and remove its root and any cgroup left."""
    guids = sorted({*(c.guid for c in await backend.existing()), *made})
    for guid in guids:
        await backend.destroy(guid)
    shutil.rmtree(backend.root, ignore_errors=True)
    # destroy may leave a cgroup that was still busy (a failure the tests report);
    # do not leak it into the machine.
    leftovers = [d for g in guids for d in backend.cgroup_dirs(g)]

    def removed() -> bool:
        for group in leftovers:
            with contextlib.suppress(OSError):
                group.rmdir()
        return not any(group.exists() for group in leftovers)

    await eventually(removed)
    await backend.close()


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    """A backend with its containers under tmp_path (moved, as tmp_path is private)."""
    made = LocalBackend(tmp_path / "containers", container_uid=CONTAINER_UID)
    try:
        yield made
    finally:
        await clean(made)


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A host directory every user can reach (so a backend's root stays where it is put)."""
    made = Path(tempfile.mkdtemp(prefix="diego-test-", dir="/var/tmp"))
    made.chmod(0o755)
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


@pytest.fixture(autouse=True)
def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the local backend's isolation needs root")


# ---------------------------------------------------------------- processes


async def test_root_moves_out_of_a_private_directory(backend: LocalBackend, tmp_path: Path) -> None:
    """A data dir below a 0700 directory puts the containers under /var/lib/diego."""
    assert backend.root.parent == Path("/var/lib/diego")
    assert backend.root.is_dir()
    assert backend.root.stat().st_mode & 0o777 == 0o711


async def test_exit_status_passes_through(backend: LocalBackend) -> None:
    """A process's exit status is what wait() returns."""
    await backend.create(ContainerSpec(guid=C1))
    assert (await sh(backend, C1, "exit 0"))[0] == 0
    assert (await sh(backend, C1, "exit 3"))[0] == 3
    assert (await sh(backend, C1, "exit 255"))[0] == 255


async def test_killed_by_signal_is_128_plus_n(backend: LocalBackend) -> None:
    """A process killed by signal N (inside, or by kill() outside) exits 128 + N."""
    await backend.create(ContainerSpec(guid=C1))
    assert (await sh(backend, C1, "kill -TERM $$"))[0] == 128 + 15
    assert (await sh(backend, C1, "kill -KILL $$"))[0] == 128 + 9
    arg = sleep_arg()
    proc = await backend.run(C1, ProcessSpec("/bin/sleep", (arg,)), discard, discard)
    assert await eventually(lambda: bool(sleeping(arg)))
    proc.kill()
    assert await asyncio.wait_for(proc.wait(), 2) == 128 + 9


async def test_kill_of_a_running_process_ends_its_tree(backend: LocalBackend) -> None:
    """kill() of a process that is running ends it and everything under it at once."""
    await backend.create(ContainerSpec(guid=C1))
    arg = sleep_arg()
    proc = await backend.run(
        C1, ProcessSpec("/bin/sh", ("-c", f"sleep {arg} & sleep {arg}")), discard, discard
    )
    assert await eventually(lambda: len(sleeping(arg)) == 2)
    proc.kill()
    assert await asyncio.wait_for(proc.wait(), 1.0) == 137
    assert await eventually(lambda: not host_pids_with(arg), within=1.0)


async def test_kill_during_startup_ends_everything(backend: LocalBackend) -> None:
    """kill() at any moment of a process's start (0-40 ms in) still ends the whole sandbox."""
    await backend.create(ContainerSpec(guid=C1))
    survivors = []
    for tenth_ms in range(0, 400, 5):
        arg = sleep_arg()
        proc = await backend.run(C1, ProcessSpec("/bin/sleep", (arg,)), discard, discard)
        await asyncio.sleep(tenth_ms / 10_000)
        proc.kill()
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), 1.0)
        except TimeoutError:
            survivors.append((f"killed {tenth_ms / 10} ms after start", host_pids_with(arg)))
            break
    assert survivors == [], "after kill(), wait() hung and these processes lived on"


async def test_stdout_and_stderr_reach_their_own_sinks(backend: LocalBackend) -> None:
    """Lines written to stdout and stderr arrive, in order, at the matching sink."""
    await backend.create(ContainerSpec(guid=C1))
    status, out, err = await sh(backend, C1, "echo o1; echo e1 >&2; echo o2; echo e2 >&2")
    assert status == 0
    assert out == ["o1", "o2"]
    assert err == ["e1", "e2"]


async def test_last_line_without_newline_is_delivered(backend: LocalBackend) -> None:
    """A final line with no newline still reaches the sink."""
    await backend.create(ContainerSpec(guid=C1))
    _, out, _ = await sh(backend, C1, "printf 'one\\ntwo'")
    assert out == ["one", "two"]


async def test_over_long_line_arrives_in_pieces(backend: LocalBackend) -> None:
    """A line far over 64 KiB comes in bounded pieces, whole and in order, without hanging."""
    await backend.create(ContainerSpec(guid=C1))
    size = 16 * MAX_LINE + 1234
    script = f"head -c {size} /dev/zero | tr '\\0' a; echo; echo after"
    status, out, _ = await asyncio.wait_for(sh(backend, C1, script), 10)
    assert status == 0
    assert out[-1] == "after"
    pieces = out[:-1]
    assert len(pieces) > 1
    # Bounded by what is buffered when the limit is passed, not by the line.
    assert max(len(piece) for piece in pieces) <= 8 * MAX_LINE
    assert "".join(pieces) == "a" * size


async def test_over_long_line_read_whole_gives_no_empty_line(backend: LocalBackend) -> None:
    """An over-long line whose newline arrives with it yields no spurious empty line."""
    await backend.create(ContainerSpec(guid=C1))
    size = MAX_LINE + 500
    write = f"import sys; sys.stdout.write('a' * {size} + '\\nafter\\n')"
    out: list[str] = []
    proc = await backend.run(C1, ProcessSpec(PYTHON, ("-c", write)), out.append, discard)
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    assert out[-1] == "after"
    assert "".join(out[:-1]) == "a" * size
    assert "" not in out, f"pieces delivered: {[len(p) for p in out]}"


async def test_over_long_output_without_newline_arrives(backend: LocalBackend) -> None:
    """Output over 64 KiB with no newline at all arrives whole, in pieces."""
    await backend.create(ContainerSpec(guid=C1))
    size = 2 * MAX_LINE + 77
    status, out, _ = await asyncio.wait_for(
        sh(backend, C1, f"head -c {size} /dev/zero | tr '\\0' b"), 10
    )
    assert status == 0
    assert "".join(out) == "b" * size


async def test_nofile_limit_is_applied(backend: LocalBackend) -> None:
    """ProcessSpec.nofile sets the process's open-files limit."""
    await backend.create(ContainerSpec(guid=C1))
    status, out, _ = await sh(backend, C1, "ulimit -n; ulimit -Hn", nofile=123)
    assert (status, out) == (0, ["123", "123"])


async def test_env_of_process_wins_over_container(backend: LocalBackend) -> None:
    """Both envs are visible; a name in both takes the ProcessSpec's value."""
    await backend.create(ContainerSpec(guid=C1, env=(("ONLY_C", "c"), ("BOTH", "from-c"))))
    status, out, _ = await sh(
        backend,
        C1,
        'echo "$ONLY_C $ONLY_P $BOTH $HOME"',
        env=(("ONLY_P", "p"), ("BOTH", "from-p")),
    )
    assert (status, out) == (0, ["c p from-p /home/vcap"])


async def test_host_env_does_not_leak(
    backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cell's own environment is not passed into the container."""
    monkeypatch.setenv("DIEGO_TEST_SECRET", "s3cret")
    await backend.create(ContainerSpec(guid=C1))
    _, out, _ = await sh(backend, C1, "env")
    assert not any("s3cret" in line for line in out)


@pytest.mark.parametrize("privileged", [False, True])
async def test_user_nobody_is_uid_65534(backend: LocalBackend, privileged: bool) -> None:
    """user="nobody" runs as uid 65534 inside, privileged or not."""
    await backend.create(ContainerSpec(guid=C1, privileged=privileged))
    status, out, _ = await sh(backend, C1, "id -u; id -g", user="nobody")
    assert (status, out) == (0, ["65534", "65534"])


async def test_unknown_user_is_a_backend_error(backend: LocalBackend) -> None:
    """A user the machine does not know makes run() raise BackendError."""
    await backend.create(ContainerSpec(guid=C1))
    with pytest.raises(BackendError, match="no-such-user-xyz"):
        await sh(backend, C1, "true", user="no-such-user-xyz")


async def test_run_in_missing_container_is_a_backend_error(backend: LocalBackend) -> None:
    """Running in a container that was never made raises BackendError."""
    with pytest.raises(BackendError):
        await sh(backend, NOPE, "true")


# ---------------------------------------------------------------- users


async def test_unprivileged_root_is_not_host_root(backend: LocalBackend) -> None:
    """Root in an unprivileged container is container_uid on the host, with no host powers."""
    await backend.create(ContainerSpec(guid=C1))
    status, out, _ = await sh(backend, C1, "id -u; touch /home/vcap/made; cat /proc/self/uid_map")
    assert status == 0
    assert out[0] == "0"
    assert out[1].split() == ["0", str(CONTAINER_UID), "1"]
    made = backend.root / C1 / "rw" / "home" / "made"
    assert made.stat().st_uid == CONTAINER_UID
    assert (await sh(backend, C1, "ls /root"))[0] != 0
    assert (await sh(backend, C1, "cat /root/.bashrc"))[0] != 0
    name = f"diego-test-{token()}"
    assert (await sh(backend, C1, f"echo x > /etc/{name}"))[0] != 0
    assert (await sh(backend, C1, "cat /etc/shadow"))[0] != 0
    assert not Path(f"/etc/{name}").exists()


async def test_unprivileged_root_cannot_read_host_private_files(
    backend: LocalBackend, public_dir: Path
) -> None:
    """A root-owned 0600 file on the host (outside any hidden dir) is unreadable inside."""
    secret = public_dir / "secret"
    secret.write_text("host secret")
    secret.chmod(0o600)
    await backend.create(ContainerSpec(guid=C1))
    status, out, _ = await sh(backend, C1, f"cat {secret}")
    assert status != 0
    assert "host secret" not in out


async def test_privileged_root_is_host_root(backend: LocalBackend, public_dir: Path) -> None:
    """In a privileged container root is host root: files it makes are owned by uid 0."""
    secret = public_dir / "secret"
    secret.write_text("host secret")
    secret.chmod(0o600)
    await backend.create(ContainerSpec(guid=C1, privileged=True))
    status, out, _ = await sh(backend, C1, f"id -u; touch /home/vcap/made; cat {secret}")
    assert (status, out) == (0, ["0", "host secret"])
    assert (backend.root / C1 / "rw" / "home" / "made").stat().st_uid == 0


# ---------------------------------------------------------------- network


@pytest.fixture
async def loopback_server() -> AsyncIterator[int]:
    """A TCP server on the host's 127.0.0.1 that answers "hello"; its port."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


CONNECT = (
    "import socket, sys\n"
    "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=2)\n"
    "print(s.recv(100).decode().strip())\n"
)


async def test_no_network_means_loopback_only(backend: LocalBackend) -> None:
    """network=False: the container's network namespace has only a loopback interface."""
    await backend.create(ContainerSpec(guid=C1, network=False))
    status, out, _ = await sh(backend, C1, "tail -n +3 /proc/net/dev | cut -d: -f1")
    assert status == 0
    assert [line.strip() for line in out] == ["lo"]


async def test_network_reaches_the_hosts_loopback(
    backend: LocalBackend, loopback_server: int
) -> None:
    """network=True: the container shares the host's network and reaches its 127.0.0.1."""
    await backend.create(ContainerSpec(guid=C1, network=True))
    out: list[str] = []
    proc = await backend.run(
        C1,
        ProcessSpec(PYTHON, ("-c", CONNECT, str(loopback_server))),
        out.append,
        discard,
    )
    assert await proc.wait() == 0
    assert out == ["hello"]


async def test_no_network_cannot_connect_to_host_loopback(
    backend: LocalBackend, loopback_server: int
) -> None:
    """network=False: the same connection to the host's 127.0.0.1 server fails."""
    await backend.create(ContainerSpec(guid=C1, network=False))
    out: list[str] = []
    proc = await backend.run(
        C1,
        ProcessSpec(PYTHON, ("-c", CONNECT, str(loopback_server))),
        out.append,
        discard,
    )
    assert await proc.wait() != 0
    assert out == []


# ---------------------------------------------------------------- limits


def own_cgroup(controller: str) -> Path:
    """This process's cgroup directory in the v1 ``controller`` hierarchy."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return Path("/sys/fs/cgroup") / controller / path.lstrip("/")
    pytest.skip(f"no v1 {controller} cgroup")


def allocate(mb: int) -> tuple[str, ...]:
    """Arguments to python3 that touch ``mb`` MiB of memory, then print "done"."""
    return ("-c", f"x = b'a' * ({mb} * 1024 * 1024); print('done')")


async def test_memory_limit_kills_and_reports_oom(backend: LocalBackend) -> None:
    """A process allocating past memory_mb is killed (137) and out_of_memory() says so."""
    await backend.create(ContainerSpec(guid=C1, memory_mb=48))
    assert not backend.out_of_memory(C1)
    out: list[str] = []
    proc = await backend.run(C1, ProcessSpec(PYTHON, allocate(200)), out.append, discard)
    assert await asyncio.wait_for(proc.wait(), 10) == 137
    assert out == []
    assert backend.out_of_memory(C1)


async def test_memory_under_limit_is_fine(backend: LocalBackend) -> None:
    """A process staying under memory_mb completes and no OOM is reported."""
    await backend.create(ContainerSpec(guid=C1, memory_mb=128))
    out: list[str] = []
    proc = await backend.run(C1, ProcessSpec(PYTHON, allocate(16)), out.append, discard)
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    assert out == ["done"]
    assert not backend.out_of_memory(C1)


async def test_memory_limit_is_in_the_cgroup(backend: LocalBackend) -> None:
    """memory_mb is written to the container's memory cgroup."""
    await backend.create(ContainerSpec(guid=C1, memory_mb=48))
    (group,) = [d for d in backend.cgroup_dirs(C1) if own_cgroup("memory") in d.parents]
    assert int((group / "memory.limit_in_bytes").read_text()) == 48 * 1024 * 1024
    status, out, _ = await sh(backend, C1, "cat /proc/self/cgroup")
    assert status == 0
    # Each process sits in its own leaf below the container's group.
    assert any(line.split(":")[1] == "memory" and f"/{C1}/" in line for line in out)


# ---------------------------------------------------------------- processes

FORKS = 200
"""Background sleeps a fork loop tries to start: ten times the limit the tests give."""


def fork_loop(arg: str) -> str:
    """A script starting ``sleep arg`` in the background FORKS times, saying "started"
    after each fork that worked; a shell whose fork fails exits 2 at once."""
    return f"for i in $(seq {FORKS}); do sleep {arg} & echo started; done"


def pids_group(backend: LocalBackend, guid: str) -> Path:
    """The container's group holding its process limit (v1 pids, or v2's unified one)."""
    (group,) = [d for d in backend.cgroup_dirs(guid) if (d / "pids.max").exists()]
    return group


async def assert_forks_capped(backend: LocalBackend, guid: str, max_pids: int) -> None:
    """A fork loop in ``guid`` is stopped by a failing fork, never passing ``max_pids``."""
    arg = sleep_arg()
    status, out, err = await sh(backend, guid, fork_loop(arg))
    assert status != 0
    assert any("fork" in line for line in err), err
    # Every sleep started is alive at once (each sleeps 1000 s): fewer than the limit,
    # which the shell, bubblewrap and the container's helpers share.
    assert 0 < len(out) < max_pids, out
    assert out == ["started"] * len(out)
    peak = pids_group(backend, guid) / "pids.peak"
    if peak.exists():  # the kernel's own high-water mark (Linux 6.1 on)
        assert 0 < int(peak.read_text()) <= max_pids
    assert backend.pids_limit_reached(guid) == max_pids


async def test_max_pids_caps_a_fork_loop_and_says_so(backend: LocalBackend) -> None:
    """max_pids 20: a loop starting 200 background sleeps sees fork fail, the container
    never holds more than 20 processes, and pids_limit_reached says so."""
    assert backend.capabilities().pids_limit
    await backend.create(ContainerSpec(guid=C1, max_pids=20))
    assert (pids_group(backend, C1) / "pids.max").read_text().strip() == "20"
    assert backend.pids_limit_reached(C1) == 0
    await assert_forks_capped(backend, C1, 20)


async def test_without_max_pids_the_same_loop_runs_to_its_end(backend: LocalBackend) -> None:
    """The limit is what stopped the loop: with none, all 200 sleeps start."""
    await backend.create(ContainerSpec(guid=C1))
    status, out, _ = await sh(backend, C1, fork_loop(sleep_arg()))
    assert (status, len(out)) == (0, FORKS)
    assert backend.pids_limit_reached(C1) == 0


async def test_max_pids_holds_for_a_spare_container(spared: LocalBackend) -> None:
    """A container made from a spare (groups made ahead, renamed) gets its limit too."""
    await spared.create(ContainerSpec(guid=C1, max_pids=20))
    assert (pids_group(spared, C1) / "pids.max").read_text().strip() == "20"
    await assert_forks_capped(spared, C1, 20)


async def test_max_pids_counts_every_process_of_the_container(backend: LocalBackend) -> None:
    """The limit is the container's, not one process's: sleeps kept running by one
    process use up what another may start."""
    await backend.create(ContainerSpec(guid=C1, max_pids=20))
    arg = sleep_arg()
    holder = await backend.run(
        C1,
        ProcessSpec("/bin/sh", ("-c", f"for i in $(seq 10); do sleep {arg} & done; wait")),
        discard,
        discard,
    )
    try:
        assert await eventually(lambda: len(sleeping(arg)) == 10)
        status, out, _ = await sh(backend, C1, fork_loop(sleep_arg()))
        assert status != 0
        assert len(out) < 20 - 10
    finally:
        holder.kill()
        await holder.wait()


async def test_disk_limit_gives_enospc_and_df_shows_size(backend: LocalBackend) -> None:
    """disk_mb: writing past it fails with ENOSPC inside, and df shows about that size."""
    await backend.create(ContainerSpec(guid=C1, disk_mb=16))
    status, out, _ = await sh(
        backend, C1, "dd if=/dev/zero of=/home/vcap/big bs=1M count=40 2>&1; echo rc=$?"
    )
    assert status == 0
    assert any("No space left on device" in line for line in out), out
    assert out[-1] != "rc=0"
    status, out, _ = await sh(backend, C1, "df -k -P /home/vcap /tmp | tail -n +2")
    assert status == 0
    for line in out:
        total_kb = int(line.split()[1])
        assert 12 * 1024 <= total_kb <= 16 * 1024, line
    # /tmp shares the same small disk.
    status, out, _ = await sh(
        backend, C1, "rm /home/vcap/big; dd if=/dev/zero of=/tmp/big bs=1M count=40"
    )
    assert status != 0


async def test_cpu_weight_sets_cpu_shares(backend: LocalBackend) -> None:
    """cpu_weight is the container cgroup's cpu.shares, 100 being the default 1024."""
    await backend.create(ContainerSpec(guid=HALF, cpu_weight=50))
    await backend.create(ContainerSpec(guid=FULL, cpu_weight=100))
    await backend.create(ContainerSpec(guid=LEAST, cpu_weight=1))

    def shares(guid: str) -> str:
        (group,) = [d for d in backend.cgroup_dirs(guid) if own_cgroup("cpu") in d.parents]
        return (group / "cpu.shares").read_text().strip()

    assert shares(HALF) == "512"
    assert shares(FULL) == "1024"
    assert int(shares(LEAST)) < 512
    status, out, _ = await sh(backend, HALF, "cat /proc/self/cgroup")
    assert status == 0
    assert any("cpu" in line.split(":")[1].split(",") and f"/{HALF}/" in line for line in out)


# ---------------------------------------------------------------- spare containers


@pytest.fixture
async def spared(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    """A backend keeping one spare container, made once it has started."""
    made = LocalBackend(tmp_path / "containers", container_uid=CONTAINER_UID, spares=1)
    try:
        await made.existing()  # what a starting cell calls: spares are made from then
        assert await eventually(lambda: made.ready_spares() == 1)
        yield made
    finally:
        await clean(made)


def spare_groups(backend: LocalBackend, guid: str) -> list[Path]:
    """The spare groups in the scope of ``backend`` (the parents of ``guid``'s groups)."""
    return [
        child
        for base in {d.parent for d in backend.cgroup_dirs(guid)}
        if base.is_dir()
        for child in base.iterdir()
        if child.name.startswith(".spare-")
    ]


async def test_first_process_runs_in_the_spare_made_ahead(spared: LocalBackend) -> None:
    """A container takes the spare: its groups (limits set), with the first process
    already in their leaf p0, which runs the process as a fresh start would."""
    await spared.create(ContainerSpec(guid=C1, memory_mb=48))
    (group,) = [d for d in spared.cgroup_dirs(C1) if own_cgroup("memory") in d.parents]
    assert int((group / "memory.limit_in_bytes").read_text()) == 48 * 1024 * 1024
    # Its directories were the spare's, renamed: laid out as any container's.
    assert (await spared.existing())[0].guid == C1
    home = spared.root / C1 / "rw" / "home"
    assert (home.stat().st_uid, home.stat().st_mode & 0o777) == (CONTAINER_UID, 0o755)
    script = 'cat /proc/self/cgroup; readlink /proc/self/fd/0; id -u; echo "$A"; exit 3'
    status, out, _ = await sh(spared, C1, script, env=(("A", "x 'y'\nz"),))
    assert status == 3
    memory = [line for line in out if line.split(":")[1:2] == ["memory"]]
    assert memory
    assert all(line.endswith(f"/{C1}/p0") for line in memory)
    assert out[-4:] == ["/dev/null", "0", "x 'y'", "z"]
    # The next process starts as any other, in a leaf of its own.
    status, out, _ = await sh(spared, C1, "cat /proc/self/cgroup")
    assert status == 0
    assert any(f"/{C1}/p" in line and not line.endswith("/p0") for line in out)
    assert await eventually(lambda: spared.ready_spares() == 1)  # made again


def parked_in(groups: list[Path]) -> set[int]:
    """The pids in the leaves p0 of ``groups``."""
    pids: set[int] = set()
    for group in groups:
        with contextlib.suppress(OSError):
            pids |= {int(p) for p in (group / "p0" / "cgroup.procs").read_text().split()}
    return pids


async def test_a_spare_never_run_goes_with_its_container(spared: LocalBackend) -> None:
    """Destroying a container whose spare never ran kills the parked shell and removes
    every group; closing the backend removes the spares it still keeps."""
    await spared.create(ContainerSpec(guid=C1))
    (shell,) = parked_in(spared.cgroup_dirs(C1))
    assert spared.ready_spares() == 0
    await spared.destroy(C1)
    assert not any(d.exists() for d in spared.cgroup_dirs(C1))
    assert not (spared.root / C1).exists()
    assert not Path(f"/proc/{shell}").exists()
    assert await eventually(lambda: spared.ready_spares() == 1)  # made again
    (kept,) = parked_in(spare_groups(spared, C1))
    assert len(list(spared.root.glob(".spare-*"))) == 1  # its directories too
    await spared.close()
    assert spare_groups(spared, C1) == []
    assert list(spared.root.glob(".spare-*")) == []
    assert not Path(f"/proc/{kept}").exists()


# ---------------------------------------------------------------- isolation


async def test_hidden_data_dir_is_empty_inside(public_dir: Path) -> None:
    """A host directory given in ``hide`` is empty inside, even to privileged root."""
    (public_dir / "secret").write_text("cell data")
    made = LocalBackend(public_dir / "containers", hide=(public_dir,))
    try:
        assert made.root == public_dir / "containers"
        for guid, privileged in ((gid("u"), False), (gid("p"), True)):
            await made.create(ContainerSpec(guid=guid, privileged=privileged))
            status, out, _ = await sh(
                made,
                guid,
                f"find {public_dir} ! -type d; ls -A {public_dir}; cat {public_dir}/secret",
            )
            assert status != 0
            # At most the empty mount point of the (also hidden) containers root shows.
            assert set(out) <= {"containers"}, out
    finally:
        await clean(made)


@pytest.mark.parametrize("privileged", [False, True])
async def test_hiding_a_data_dir_below_a_private_directory_works(
    tmp_path: Path, privileged: bool
) -> None:
    """A node whose data dir is below a 0700 directory (its root moved) still runs processes."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "secret").write_text("cell data")
    made = LocalBackend(data_dir / "containers", hide=(data_dir,))
    try:
        assert made.root.parent == Path("/var/lib/diego")
        await made.create(ContainerSpec(guid=C1, privileged=privileged))
        status, out, err = await sh(made, C1, f"echo ran; cat {data_dir}/secret; true")
        assert (status, out) == (0, ["ran"]), err
    finally:
        await clean(made)


async def test_containers_root_is_invisible_inside(backend: LocalBackend) -> None:
    """Container B cannot find or read container A's files, by any path, privileged or not."""
    secret = f"secret-{token()}"
    await backend.create(ContainerSpec(guid=A))
    status, _, _ = await sh(
        backend, A, f"echo {secret} > /home/vcap/{secret}; cp /home/vcap/{secret} /tmp/"
    )
    assert status == 0
    host_file = backend.root / A / "rw" / "home" / secret
    assert host_file.read_text().strip() == secret
    candidates = [
        host_file,
        backend.root / A / "rw" / "tmp" / secret,
        Path("/home/vcap") / secret,
        Path("/tmp") / secret,
    ]
    search = f"{backend.root} /home /tmp /var/tmp"
    for guid, privileged in ((B, False), (gid("bp"), True)):
        await backend.create(ContainerSpec(guid=guid, privileged=privileged))
        status, out, _ = await sh(
            backend,
            guid,
            f"ls -A {backend.root}; "
            + "; ".join(f"cat {p}" for p in candidates)
            + f"; find {search} -name {secret} 2>/dev/null; "
            + f"grep -rl {secret} {backend.root} 2>/dev/null",
        )
        assert not any(secret in line for line in out), (guid, out)
        assert not any(A in line or B in line for line in out), (guid, out)


async def test_another_cells_containers_are_invisible(tmp_path: Path) -> None:
    """A container of one backend cannot read a container of another backend on the machine."""
    secret = f"secret-{token()}"
    one = LocalBackend(tmp_path / "cell-1" / "containers")
    two = LocalBackend(tmp_path / "cell-2" / "containers")
    try:
        await one.create(ContainerSpec(guid=A))
        assert (await sh(one, A, f"echo {secret} > /home/vcap/{secret}"))[0] == 0
        target = one.root / A / "rw" / "home" / secret
        assert target.exists()
        await two.create(ContainerSpec(guid=B))
        status, out, _ = await sh(two, B, f"cat {target}")
        assert status != 0
        assert secret not in out
    finally:
        await clean(one)
        await clean(two)


async def test_processes_of_other_containers_are_invisible(backend: LocalBackend) -> None:
    """Each container has its own pid namespace: another container's sleep is not in its ps."""
    arg = sleep_arg()
    await backend.create(ContainerSpec(guid=A))
    await backend.create(ContainerSpec(guid=B))
    sleeper = await backend.run(A, ProcessSpec("/bin/sleep", (arg,)), discard, discard)
    try:
        assert await eventually(lambda: bool(sleeping(arg)))
        status, out, _ = await sh(backend, B, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
        assert status == 0
        assert not any(arg in line for line in out)
    finally:
        sleeper.kill()
        await sleeper.wait()


# ---------------------------------------------------------------- files in and out


async def test_stream_in_and_out_round_trip(backend: LocalBackend, tmp_path: Path) -> None:
    """A tar streamed in lands in the directory; stream_out gives it back as a tar."""
    await backend.create(ContainerSpec(guid=C1))
    archive = tmp_path / "in.tar"
    archive.write_bytes(tar_of({"dir/hello.txt": b"hello\n"}))
    await backend.stream_in(C1, "/home/vcap/app", archive)
    status, out, _ = await sh(backend, C1, "cat /home/vcap/app/dir/hello.txt")
    assert (status, out) == (0, ["hello"])
    back = tmp_path / "out.tar"
    await backend.stream_out(C1, "/home/vcap/app/dir/hello.txt", back)
    with tarfile.open(back) as tar:
        member = tar.next()
        assert member is not None
        assert member.name == "hello.txt"
        data = tar.extractfile(member)
        assert data is not None
        assert data.read() == b"hello\n"


async def test_stream_in_cannot_escape_the_container(backend: LocalBackend, tmp_path: Path) -> None:
    """'..' and absolute entries in a tar create nothing on the host outside the container."""
    name = f"escape-{token()}"
    await backend.create(ContainerSpec(guid=C1))
    archive = tmp_path / "evil.tar"
    archive.write_bytes(
        tar_of(
            {
                f"../../{name}": b"dotdot",
                f"../../../../../../../../{name}-deep": b"deep",
                f"/etc/{name}": b"abs",
                f"/tmp/{name}-abs": b"abs-tmp",
                f"ok/../../{name}-mid": b"mid",
            }
        )
    )
    for directory in ("/home/vcap", "/home/vcap/a/b", "/tmp"):
        with contextlib.suppress(BackendError):
            await backend.stream_in(C1, directory, archive)
    container_dir = backend.root / C1
    outside = [
        Path("/") / name,
        Path("/") / f"{name}-deep",
        Path("/etc") / name,
        Path("/tmp") / f"{name}-abs",
        Path("/tmp") / name,
        Path("/home") / name,
        backend.root / name,
        backend.root.parent / name,
        container_dir / name,
        container_dir / f"{name}-mid",
        tmp_path / name,
    ]
    assert [p for p in outside if p.exists()] == []
    # Whatever was unpacked stayed in the container's writable dirs.
    leaked = [
        p for p in container_dir.rglob(f"{name}*") if not p.is_relative_to(container_dir / "rw")
    ]
    assert leaked == []


async def test_stream_in_directory_with_dotdot_stays_inside(
    backend: LocalBackend, tmp_path: Path
) -> None:
    """directory='../../../../tmp/escape-dir' resolves in the container, not on the host."""
    name = f"escape-dir-{token()}"
    await backend.create(ContainerSpec(guid=C1))
    archive = tmp_path / "ok.tar"
    archive.write_bytes(tar_of({"file.txt": b"inside"}))
    await backend.stream_in(C1, f"../../../../tmp/{name}", archive)
    assert not Path(f"/tmp/{name}").exists()
    assert (backend.root / C1 / "rw" / "tmp" / name / "file.txt").read_bytes() == b"inside"
    status, out, _ = await sh(backend, C1, f"cat /tmp/{name}/file.txt")
    assert (status, out) == (0, ["inside"])


async def test_stream_in_to_read_only_path_fails(backend: LocalBackend, tmp_path: Path) -> None:
    """Unpacking into a path the container cannot write raises BackendError."""
    name = f"ro-{token()}"
    await backend.create(ContainerSpec(guid=C1))
    archive = tmp_path / "ok.tar"
    archive.write_bytes(tar_of({"file.txt": b"x"}))
    with pytest.raises(BackendError):
        await backend.stream_in(C1, f"/usr/{name}", archive)
    assert not Path(f"/usr/{name}").exists()


async def test_stream_out_of_missing_path_is_a_backend_error(
    backend: LocalBackend, tmp_path: Path
) -> None:
    """stream_out of a path that does not exist raises BackendError."""
    await backend.create(ContainerSpec(guid=C1))
    with pytest.raises(BackendError):
        await backend.stream_out(C1, "/home/vcap/no-such-file", tmp_path / "out.tar")


# ---------------------------------------------------------------- volumes

VOLUMES = ("/data", "/data/in", "/outputs")


@pytest.fixture
def new_top_level() -> None:
    """The volume tests make /data and /outputs in containers: the host must lack them."""
    present = [p for p in ("/data", "/outputs") if os.path.lexists(p)]
    if present:
        pytest.skip(f"the host has {present}: they cannot be volumes here")


@pytest.mark.usefixtures("new_top_level")
@pytest.mark.parametrize("privileged", [False, True])
async def test_volumes_are_shared_by_every_process(backend: LocalBackend, privileged: bool) -> None:
    """Files one process writes in the volumes, nested ones too, another process reads."""
    await backend.create(ContainerSpec(guid=C1, volumes=VOLUMES, privileged=privileged))
    status, _, err = await sh(backend, C1, "echo x > /data/in/x && echo y > /outputs/y")
    assert status == 0, err
    status, out, err = await sh(backend, C1, "cat /data/in/x /outputs/y; ls -A /data")
    assert (status, out) == (0, ["x", "y", "in"]), err
    rw = backend.root / C1 / "rw"
    assert (rw / "volumes" / "data" / "in" / "x").read_text() == "x\n"
    assert (rw / "volumes" / "outputs" / "y").read_text() == "y\n"
    owner = 0 if privileged else CONTAINER_UID
    for made in ("data", "data/in", "outputs", "data/in/x", "outputs/y"):
        assert (rw / "volumes" / made).stat().st_uid == owner, made
    assert not os.path.lexists("/data")
    assert not os.path.lexists("/outputs")


@pytest.mark.usefixtures("new_top_level")
async def test_stream_in_and_out_of_volumes(backend: LocalBackend, tmp_path: Path) -> None:
    """stream_in unpacks into a nested volume and stream_out packs a file of another."""
    await backend.create(ContainerSpec(guid=C1, volumes=VOLUMES))
    archive = tmp_path / "in.tar"
    archive.write_bytes(tar_of({"in.txt": b"input\n"}))
    await backend.stream_in(C1, "/data/in", archive)
    status, _, err = await sh(backend, C1, "tr a-z A-Z < /data/in/in.txt > /outputs/y")
    assert status == 0, err
    back = tmp_path / "out.tar"
    await backend.stream_out(C1, "/outputs/y", back)
    with tarfile.open(back) as tar:
        member = tar.next()
        assert member is not None
        assert member.name == "y"
        data = tar.extractfile(member)
        assert data is not None
        assert data.read() == b"INPUT\n"
    rw = backend.root / C1 / "rw"
    assert (rw / "volumes" / "data" / "in" / "in.txt").read_bytes() == b"input\n"
    assert not os.path.lexists("/data")
    assert not os.path.lexists("/outputs")


@pytest.mark.parametrize("privileged", [False, True])
async def test_without_volumes_the_root_is_the_hosts_read_only(
    backend: LocalBackend, privileged: bool
) -> None:
    """A container with no mounted volumes sees the host's root read-only, with its
    own /tmp and /home/vcap, /home holding only that, and /proc its own."""
    name = f"diego-test-{token()}"
    await backend.create(ContainerSpec(guid=C1, privileged=privileged))
    for target in (f"/usr/{name}", f"/etc/{name}", f"/{name}", f"/var/{name}"):
        status, _, err = await sh(backend, C1, f"echo x > {target}")
        assert status != 0, target
        assert any("Read-only" in line for line in err), (target, err)
    script = "ls -A /; echo --; ls -A /home; echo --; echo x > /tmp/f && echo x > ~/f && ls /proc"
    status, out, err = await sh(backend, C1, script)
    assert status == 0, err
    top, home, proc = "\n".join(out).split("\n--\n")
    assert set(top.split()) == set(os.listdir("/"))
    assert home.split() == ["vcap"]
    assert len([p for p in proc.split() if p.isdigit()]) <= 4  # bwrap's init, sh, ls
    assert not any(os.path.lexists(p) for p in (f"/usr/{name}", f"/etc/{name}", f"/{name}"))


@pytest.mark.usefixtures("new_top_level")
async def test_root_stays_read_only_around_volumes(backend: LocalBackend) -> None:
    """Besides its volumes, /tmp and /home/vcap, a container writes nowhere: not in the
    host's directories, not at a new top-level path, not beside a volume."""
    name = f"diego-test-{token()}"
    await backend.create(ContainerSpec(guid=C1, volumes=VOLUMES))
    for target in (f"/usr/{name}", f"/etc/{name}", f"/{name}", f"/var/{name}"):
        status, _, err = await sh(backend, C1, f"echo x > {target}")
        assert status != 0, target
        assert any("Read-only" in line for line in err), (target, err)
    assert (await sh(backend, C1, f"mkdir /{name}"))[0] != 0
    assert not any(os.path.lexists(p) for p in (f"/usr/{name}", f"/etc/{name}", f"/{name}"))


@pytest.mark.usefixtures("new_top_level")
async def test_root_has_the_hosts_top_level_and_the_volumes(backend: LocalBackend) -> None:
    """The sandbox's / lists the host's entries plus the volumes; symlinks keep their targets."""
    await backend.create(ContainerSpec(guid=C1, volumes=VOLUMES))
    status, out, err = await sh(backend, C1, "ls -A /; readlink /bin || echo not-a-link")
    assert status == 0, err
    *names, bin_link = out
    assert set(names) == {*os.listdir("/"), "data", "outputs"}
    assert bin_link == (os.readlink("/bin") if os.path.islink("/bin") else "not-a-link")


@pytest.mark.parametrize("privileged", [False, True])
async def test_volumes_under_tmp_and_home_are_directories_there(
    backend: LocalBackend, privileged: bool
) -> None:
    """A volume below /tmp or /home/vcap is a directory in the container's own, made at create."""
    volumes = ("/tmp/work/a", "/home/vcap/out", "/tmp")
    await backend.create(ContainerSpec(guid=C1, volumes=volumes, privileged=privileged))
    status, _, err = await sh(backend, C1, "echo a > /tmp/work/a/f && echo o > /home/vcap/out/f")
    assert status == 0, err
    status, out, _ = await sh(backend, C1, "cat /tmp/work/a/f /home/vcap/out/f")
    assert (status, out) == (0, ["a", "o"])
    rw = backend.root / C1 / "rw"
    assert (rw / "tmp" / "work" / "a" / "f").read_text() == "a\n"
    assert (rw / "home" / "out" / "f").read_text() == "o\n"
    owner = 0 if privileged else CONTAINER_UID
    assert (rw / "tmp" / "work").stat().st_uid == owner
    assert not (rw / "volumes").exists()


@pytest.mark.parametrize(
    ("volume", "named"),
    [
        ("/usr/local/diego-test", "/usr"),
        ("/var/diego-test", "/var"),
        ("/bin/diego-test", "/bin"),
        ("/home/other", "/home"),
        ("/proc/diego-test", "/proc"),
        ("/", "root"),
        ("data", "absolute"),
        ("/data/../etc/x", "'..'"),
    ],
)
async def test_volume_where_no_mount_point_can_be_made_is_refused(
    backend: LocalBackend, volume: str, named: str
) -> None:
    """create refuses a volume inside an existing host directory (or not a plain absolute
    path), naming it and the rule, and makes nothing."""
    spec = ContainerSpec(guid=C1, volumes=("/outputs", volume))
    with pytest.raises(BackendError) as raised:
        await backend.create(spec)
    message = str(raised.value)
    assert repr(volume) in message or volume in message
    assert named in message
    assert "top-level directory the host does not have" in message
    assert not (backend.root / C1).exists()
    assert await backend.existing() == []


@pytest.mark.usefixtures("new_top_level")
async def test_volumes_live_on_the_disk_and_destroy_removes_them(backend: LocalBackend) -> None:
    """Volumes count against disk_mb; destroy unmounts and removes them with the container."""
    await backend.create(ContainerSpec(guid=C1, volumes=VOLUMES, disk_mb=16))
    status, out, _ = await sh(
        backend, C1, "dd if=/dev/zero of=/outputs/big bs=1M count=40 2>&1; echo rc=$?"
    )
    assert status == 0
    assert any("No space left on device" in line for line in out), out
    assert (await sh(backend, C1, "echo kept > /data/in/x"))[0] == 0
    await backend.destroy(C1)
    assert not (backend.root / C1).exists()
    assert not any(m.startswith(str(backend.root / C1)) for m in mount_points())
    assert not os.path.lexists("/data")
    assert not os.path.lexists("/outputs")
    assert await backend.existing() == []


# ---------------------------------------------------------------- destroy and restart


async def test_destroy_kills_unmounts_removes_and_is_idempotent(backend: LocalBackend) -> None:
    """destroy kills the processes, unmounts the disk, removes the dir; and again is fine."""
    arg = sleep_arg()
    await backend.create(ContainerSpec(guid=C1, disk_mb=8, memory_mb=64))
    rw = backend.root / C1 / "rw"
    assert str(rw) in mount_points()
    proc = await backend.run(C1, ProcessSpec("/bin/sleep", (arg,)), discard, discard)
    assert await eventually(lambda: bool(sleeping(arg)))
    await backend.destroy(C1)
    assert await eventually(lambda: not host_pids_with(arg), within=1.0)
    assert await asyncio.wait_for(proc.wait(), 2) == 137
    assert await eventually(
        lambda: not any(m.startswith(str(backend.root / C1)) for m in mount_points())
    )
    assert not (backend.root / C1).exists()
    assert await eventually(lambda: not any(d.exists() for d in backend.cgroup_dirs(C1)))
    assert await backend.existing() == []
    await backend.destroy(C1)
    await backend.destroy(NEVER_MADE)
    with pytest.raises(BackendError):
        await sh(backend, C1, "true")


async def test_destroy_during_startup_leaves_nothing(backend: LocalBackend) -> None:
    """destroy at any moment of a process's start (0-30 ms in) leaves no process and no cgroup."""
    problems = []
    for ms in range(31):
        guid, arg = gid(f"startup-{ms}"), sleep_arg()
        await backend.create(ContainerSpec(guid=guid, memory_mb=64))
        proc = await backend.run(guid, ProcessSpec("/bin/sleep", (arg,)), discard, discard)
        await asyncio.sleep(ms / 1000)
        await backend.destroy(guid)
        groups = backend.cgroup_dirs(guid)
        if not await eventually(lambda g=groups: not any(x.exists() for x in g), within=0.5):
            problems.append((f"destroyed {ms} ms after start", "cgroups left", groups))
        if not await eventually(lambda a=arg: not host_pids_with(a), within=0.5):
            problems.append((f"destroyed {ms} ms after start", "processes left", arg))
        try:
            await asyncio.wait_for(proc.wait(), 1.0)
        except TimeoutError:
            problems.append((f"destroyed {ms} ms after start", "wait() hung", arg))
        if problems:
            await clean(backend, made=(guid,))
            break
    assert problems == []


async def test_destroy_kills_processes_that_left_the_session(backend: LocalBackend) -> None:
    """A background child that daemonizes inside the container dies with destroy too."""
    arg = sleep_arg()
    await backend.create(ContainerSpec(guid=C1))
    proc = await backend.run(
        C1,
        ProcessSpec(
            "/bin/sh", ("-c", f"setsid sleep {arg} </dev/null >/dev/null 2>&1 & sleep {arg}")
        ),
        discard,
        discard,
    )
    assert await eventually(lambda: len(sleeping(arg)) >= 2)
    await backend.destroy(C1)
    assert await eventually(lambda: not host_pids_with(arg), within=1.0)
    await asyncio.wait_for(proc.wait(), 2)


async def test_destroy_elsewhere_leaves_another_backends_container_alone(tmp_path: Path) -> None:
    """Destroying a guid this backend never made does not touch another backend's container."""
    arg = sleep_arg()
    one = LocalBackend(tmp_path / "cell-1" / "containers")
    two = LocalBackend(tmp_path / "cell-2" / "containers")
    await one.create(ContainerSpec(guid=C1, memory_mb=64))
    proc = await one.run(C1, ProcessSpec("/bin/sleep", (arg,)), discard, discard)
    try:
        assert await eventually(lambda: bool(sleeping(arg)))
        await two.destroy(C1)  # e.g. a reservation the BBS refused to start
        killed = await eventually(lambda: not host_pids_with(arg), within=0.3)
        assert not killed, "the other cell's process was killed"
        assert all(d.exists() for d in one.cgroup_dirs(C1))
        assert (await sh(one, C1, "echo still-here"))[1] == ["still-here"]
    finally:
        await clean(one, made=(C1,))
        await clean(two)
        await asyncio.wait_for(proc.wait(), 2)


async def test_existing_lists_leftovers_and_destroy_cleans_them(tmp_path: Path) -> None:
    """A new backend on the same root lists the old one's containers and destroys them fully."""
    arg = sleep_arg()
    old = LocalBackend(tmp_path / "containers")
    try:
        await old.create(ContainerSpec(guid=LEFT_1, disk_mb=8, memory_mb=64))
        await old.create(ContainerSpec(guid=LEFT_2, labels=(("lrp.index", "3"),)))
        proc = await old.run(LEFT_1, ProcessSpec("/bin/sleep", (arg,)), discard, discard)
        assert await eventually(lambda: bool(sleeping(arg)))
        new = LocalBackend(tmp_path / "containers")
        assert new.root == old.root
        assert await new.existing() == [
            Leftover(LEFT_1, memory_mb=64, disk_mb=8),
            Leftover(LEFT_2, labels={"lrp.index": "3"}),
        ]
        for leftover in await new.existing():
            await new.destroy(leftover.guid)
        assert await eventually(lambda: not host_pids_with(arg), within=1.0)
        await asyncio.wait_for(proc.wait(), 2)
        assert await new.existing() == []
        assert not any(m.startswith(str(new.root)) for m in mount_points())
        assert await eventually(lambda: not any(d.exists() for d in new.cgroup_dirs(LEFT_1)))
        assert list(new.root.iterdir()) == []
    finally:
        await clean(old, made=(LEFT_1, LEFT_2))
