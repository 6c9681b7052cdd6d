"""The local backend: containers as namespaced process trees on this machine.

Each process runs under bubblewrap in its own pid, mount, ipc and uts namespaces
(and network namespace, loopback only, unless the work has security group
rules). The container sees the host's root read-only, with the node's data
directory and /home hidden, and private writable ``/tmp`` and ``/home/vcap``
that live on the container's own disk. Limits:

- memory_mb and cpu_weight: a cgroup per container (v1 or v2), joined by each
  process before it execs; the kernel OOM-kills a container over its memory.
- disk_mb: the writable paths are an ext4 image of that size, loop-mounted, so
  writes past it fail with ENOSPC.
- privileged=false: bubblewrap runs as an unprivileged host uid in a new user
  namespace, so root in the container is that uid outside it.

Where a mechanism is missing (no root, no cgroups, no loop devices) the backend
says so in its capabilities and runs without that limit.
"""

# Opening a file to hand to a subprocess as its stdin/stdout does no blocking I/O
# worth a thread.
# ruff: noqa: ASYNC230

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import pwd
import shutil
import signal
from pathlib import Path

import attrs

from diego.cell.backends.base import (
    BackendError,
    Capabilities,
    ContainerSpec,
    GuidLocks,
    Leftover,
    OutputSink,
    ProcessSpec,
)
from diego.cell.backends.cgroups import Cgroups, ContainerGroups

log = logging.getLogger("diego.cell.local")

HOME = "/home/vcap"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PUMP_GRACE = 1.0
"""Seconds the output is still read after the process exited."""
MAX_LINE = 64 * 1024
"""Longer output lines are split; a process cannot make the cell buffer without end."""


@attrs.define(eq=False)
class _Container:
    spec: ContainerSpec
    dir: Path
    groups: ContainerGroups | None
    mounted: bool
    processes: set[LocalProcess] = attrs.Factory(set)
    oom_killed: bool = False

    @property
    def rw(self) -> Path:
        return self.dir / "rw"


class LocalProcess:
    """A process in a local container (bubblewrap and everything under it)."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        pumps: list[asyncio.Task[None]],
        owner: _Container,
        leaf: ContainerGroups | None,
    ) -> None:
        self._proc = proc
        self._pumps = pumps
        self._owner = owner
        self._leaf = leaf

    async def wait(self) -> int:
        """The exit status; 128 + N when killed by signal N."""
        code = await self._proc.wait()
        if self._leaf is not None:
            if self._leaf.out_of_memory():
                self._owner.oom_killed = True
            # Whatever is left in the process's own group goes with it.
            await self._leaf.kill_and_remove()
        # The output ends when the last holder of the pipes exits; one that
        # outlives bubblewrap must not hold this wait forever.
        _, late = await asyncio.wait(self._pumps, timeout=PUMP_GRACE)
        for pump in late:
            pump.cancel()
        self._owner.processes.discard(self)
        return 128 - code if code < 0 else code

    def kill(self) -> None:
        """Kill the process group: the wrapper, bubblewrap and its pid namespace's init.

        The init's death takes every process of the pid namespace with it. The
        group is killed, not only our child, because a kill may land while the
        wrapper is still exec'ing its way to bubblewrap, or just after bubblewrap
        forked the namespace's init.
        """
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        if self._leaf is not None:
            self._leaf.kill_all()


class LocalBackend:
    """Runs containers as bubblewrap sandboxes under ``root``."""

    def __init__(
        self,
        root: Path,
        *,
        hide: tuple[Path, ...] = (),
        container_uid: int = 100_000,
        bwrap: str = "bwrap",
        name: str = "",
    ) -> None:
        self.root = _reachable(root.resolve())
        # Every unprivileged container is the same host uid: each must not see
        # the others' directories, wherever the containers root ended up.
        self.hide = (*(p.resolve() for p in hide), self.root, FALLBACK_ROOT)
        self.container_uid = container_uid
        self.bwrap = shutil.which(bwrap) or bwrap
        self._containers: dict[str, _Container] = {}
        self._is_root = os.geteuid() == 0
        # The cell's own cgroup scope: another cell may hold a container of the same guid.
        scope = name or hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
        self._cgroups, notes = Cgroups.detect(scope) if self._is_root else (None, ["not root"])
        self._lock = GuidLocks()
        self._processes_started = 0
        self._loop = self._is_root and Path("/dev/loop-control").exists()
        if not self._loop:
            notes.append("no loop devices: disk_mb is not enforced")
        if not self._is_root:
            notes.append("not root: containers share the node's uid")
        if shutil.which(self.bwrap) is None:
            raise BackendError("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
        self._capabilities = Capabilities(
            backend="local",
            memory_limit=self._cgroups is not None and self._cgroups.memory_base is not None,
            cpu_weight=self._cgroups is not None and self._cgroups.cpu_base is not None,
            disk_limit=self._loop,
            user_namespaces=self._is_root,
            network_isolation=True,
            egress_rules="all-or-nothing: rules give the host's network, none gives loopback",
            notes=tuple(notes),
            rootfs_providers=("preloaded",),
            unprivileged=(
                f"user namespace: root inside is host uid {container_uid}"
                if self._is_root
                else "the node's own uid"
            ),
        )
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)

    def capabilities(self) -> Capabilities:
        """What this backend enforces here."""
        return self._capabilities

    # ------------------------------------------------------------ containers

    async def create(self, spec: ContainerSpec) -> None:
        """Make the container's directory, disk and cgroups.

        Once begun, making a container runs to its end even if the caller is
        cancelled (a mount half made cannot be taken back): a destroy waits for it
        under the guid's lock, and then removes all of it.
        """
        making = asyncio.ensure_future(self._create_locked(spec))
        await asyncio.shield(making)

    async def _create_locked(self, spec: ContainerSpec) -> None:
        async with self._lock(spec.guid):
            await self._create(spec)

    async def _create(self, spec: ContainerSpec) -> None:
        d = self.root / spec.guid
        d.mkdir(mode=0o711, exist_ok=True)
        (d / "spec.json").write_text(json.dumps(attrs.asdict(spec)))
        rw = d / "rw"
        rw.mkdir(mode=0o755, exist_ok=True)
        mounted = False
        if spec.disk_mb and self._loop:
            await self._make_disk(d / "disk.img", rw, spec.disk_mb)
            mounted = True
        for sub, mode in (("tmp", 0o1777), ("home", 0o755)):
            (rw / sub).mkdir(exist_ok=True)
            (rw / sub).chmod(mode)
            if self._unprivileged(spec):
                os.chown(rw / sub, self.container_uid, self.container_uid)
        groups = None
        if self._cgroups is not None:
            groups = self._cgroups.create(spec.guid, spec.memory_mb, spec.cpu_weight)
        self._containers[spec.guid] = _Container(spec, d, groups, mounted)

    async def _make_disk(self, image: Path, mountpoint: Path, size_mb: int) -> None:
        with open(image, "wb") as f:
            f.truncate(size_mb * 1024 * 1024)
        # No reserved blocks and no journal: the container gets all of disk_mb.
        mkfs = _system_tool("mkfs.ext4")
        await _check(mkfs, "-q", "-F", "-m", "0", "-O", "^has_journal", str(image))
        await _check(_system_tool("mount"), "-o", "loop,nodev,nosuid", str(image), str(mountpoint))

    async def destroy(self, guid: str) -> None:
        """Kill every process, unmount the disk, remove the groups and files."""
        async with self._lock(guid):
            await self._destroy(guid)
        self._lock.forget(guid)

    async def _destroy(self, guid: str) -> None:
        container = self._containers.pop(guid, None)
        d = self.root / guid
        groups = container.groups if container else None
        if groups is None and self._cgroups is not None:
            groups = self._cgroups.existing(guid)
        if container is not None:
            for process in tuple(container.processes):
                process.kill()
        if groups is not None:
            await groups.kill_and_remove()
        if (d / "rw").is_mount():
            await _run(_system_tool("umount"), "-l", str(d / "rw"))
        await asyncio.to_thread(shutil.rmtree, d, True)

    async def existing(self) -> list[Leftover]:
        """Containers left on disk by an earlier run of this cell."""
        if not self.root.is_dir():
            return []
        found = []
        for d in sorted(self.root.iterdir()):
            try:
                spec = json.loads((d / "spec.json").read_text())
            except (OSError, ValueError):
                continue
            labels = {str(k): str(v) for k, v in spec.get("labels", ())}
            found.append(Leftover(d.name, spec.get("memory_mb", 0), spec.get("disk_mb", 0), labels))
        return found

    async def close(self) -> None:
        """Remove the containers root and the cell's cgroups if nothing is left in them."""
        with contextlib.suppress(OSError):
            self.root.rmdir()
        if self._cgroups is not None:
            self._cgroups.close()

    def cgroup_dirs(self, guid: str) -> list[Path]:
        """The container's cgroup directories, one per hierarchy (made or not)."""
        if self._cgroups is None:
            return []
        bases = {self._cgroups.memory_base, self._cgroups.cpu_base} - {None}
        return sorted(base / guid for base in bases if base is not None)

    def out_of_memory(self, guid: str) -> bool:
        """Whether the kernel OOM-killed a process of the container."""
        container = self._containers.get(guid)
        if container is None:
            return False
        return container.oom_killed or bool(container.groups and container.groups.out_of_memory())

    # ------------------------------------------------------------ processes

    async def run(
        self, guid: str, process: ProcessSpec, stdout: OutputSink, stderr: OutputSink
    ) -> LocalProcess:
        """Start ``process`` in the container; its output lines go to the sinks."""
        container = self._get(guid)
        leaf = self._leaf(container)
        proc = await asyncio.create_subprocess_exec(
            *self._argv(container, process, leaf),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            limit=MAX_LINE,
        )
        assert proc.stdout is not None
        assert proc.stderr is not None
        pumps = [
            asyncio.create_task(_pump(proc.stdout, stdout)),
            asyncio.create_task(_pump(proc.stderr, stderr)),
        ]
        running = LocalProcess(proc, pumps, container, leaf)
        container.processes.add(running)
        return running

    async def stream_in(self, guid: str, directory: str, tar: Path) -> None:
        """Unpack ``tar`` into ``directory``, with tar running inside the container."""
        script = 'mkdir -p -- "$1" && exec tar -x --no-same-owner -f - -C "$1"'
        with open(tar, "rb") as stdin:
            await self._exec(guid, ("/bin/sh", "-c", script, "sh", directory), stdin, None)

    async def stream_out(self, guid: str, path: str, into: Path) -> None:
        """Pack ``path`` as a tar, with tar running inside the container."""
        script = 'cd -- "$(dirname -- "$1")" && exec tar -c -f - -- "$(basename -- "$1")"'
        with open(into, "wb") as stdout:
            await self._exec(guid, ("/bin/sh", "-c", script, "sh", path), None, stdout)

    async def _exec(
        self, guid: str, command: tuple[str, ...], stdin: object, stdout: object
    ) -> None:
        container = self._get(guid)
        process = ProcessSpec(path=command[0], args=command[1:])
        leaf = self._leaf(container)
        proc = await asyncio.create_subprocess_exec(
            *self._argv(container, process, leaf),
            stdin=stdin if stdin is not None else asyncio.subprocess.DEVNULL,  # type: ignore[arg-type]
            stdout=stdout if stdout is not None else asyncio.subprocess.DEVNULL,  # type: ignore[arg-type]
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            _, err = await proc.communicate()
        finally:
            if leaf is not None:
                await leaf.kill_and_remove()
        if proc.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines()
            message = "; ".join(line for line in lines if "Exiting with failure" not in line)
            raise BackendError(message[:500] or f"exit status {proc.returncode}")

    def _get(self, guid: str) -> _Container:
        try:
            return self._containers[guid]
        except KeyError:
            raise BackendError(f"no container {guid}") from None

    def _unprivileged(self, spec: ContainerSpec) -> bool:
        return self._is_root and not spec.privileged

    def _leaf(self, container: _Container) -> ContainerGroups | None:
        if container.groups is None:
            return None
        self._processes_started += 1
        return container.groups.leaf(f"p{self._processes_started}")

    def _argv(
        self, container: _Container, process: ProcessSpec, leaf: ContainerGroups | None
    ) -> list[str]:
        spec = container.spec
        unprivileged = self._unprivileged(spec)
        uid, gid = _user_ids(process.user)
        bwrap = [self.bwrap, "--die-with-parent", "--new-session"]
        bwrap += ["--unshare-pid", "--unshare-ipc", "--unshare-uts"]
        if not spec.network:
            bwrap.append("--unshare-net")
        if unprivileged:
            bwrap += ["--unshare-user", "--uid", str(uid), "--gid", str(gid)]
        bwrap += ["--ro-bind", "/", "/", "--tmpfs", "/home"]
        for hidden in self.hide:
            # A path the container uid cannot walk to is hidden by its permissions
            # already, and bubblewrap (running as that uid) could not mount over it.
            if hidden.exists() and (not unprivileged or _walkable(hidden)):
                bwrap += ["--tmpfs", str(hidden)]
        bwrap += ["--dev", "/dev", "--proc", "/proc"]
        bwrap += ["--bind", str(container.rw / "tmp"), "/tmp"]
        bwrap += ["--bind", str(container.rw / "home"), HOME]
        bwrap += ["--chdir", process.dir or HOME, "--clearenv"]
        env = {"PATH": PATH, "HOME": HOME, "USER": process.user, "LANG": "C.UTF-8"}
        env.update(spec.env)
        env.update(process.env)
        for name, value in env.items():
            bwrap += ["--setenv", name, value]
        bwrap.append("--")
        if not unprivileged and uid != 0:
            # No user namespace: drop to the user inside, after the mounts are made.
            bwrap += ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
        if process.nofile is not None:
            bwrap += ["prlimit", f"--nofile={process.nofile}:{process.nofile}", "--"]
        bwrap += [process.path, *process.args]
        prefix: list[str] = []
        if unprivileged:
            ids = str(self.container_uid)
            prefix = ["setpriv", f"--reuid={ids}", f"--regid={ids}", "--clear-groups", "--"]
        if leaf is not None:
            # Join the process's groups (under the container's) before exec, so no
            # byte escapes the limits and a kill reaches everything it starts.
            joins = " ".join(f'echo $$ > "{p}" &&' for p in leaf.procs_files)
            return ["/bin/sh", "-c", f'{joins} exec "$@"', "sh", *prefix, *bwrap]
        return [*prefix, *bwrap]


FALLBACK_ROOT = Path("/var/lib/diego")


def _reachable(root: Path) -> Path:
    """``root``, or a stand-in under /var/lib/diego if other users cannot reach it.

    Unprivileged bubblewrap runs as the container uid and must walk to the
    container's directories; a data dir below a private (0700) directory, such as
    a test's temporary directory, would stop it.
    """
    if os.geteuid() != 0 or _walkable(root):
        return root
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    log.info("containers-moved from=%s to=%s", root, FALLBACK_ROOT / digest)
    return FALLBACK_ROOT / digest


def _walkable(path: Path) -> bool:
    """Whether other users may walk down to ``path`` (every existing ancestor has o+x)."""
    return all(not a.exists() or a.stat().st_mode & 0o001 for a in [*reversed(path.parents), path])


def _system_tool(name: str) -> str:
    """A system tool by name, found in the sbin directories even when PATH leaves them out."""
    for directory in ("/usr/sbin", "/sbin", "/usr/bin", "/bin"):
        candidate = Path(directory) / name
        if candidate.exists():
            return str(candidate)
    return shutil.which(name) or name


def _user_ids(user: str) -> tuple[int, int]:
    if user == "root":
        return 0, 0
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise BackendError(f"unknown user {user!r}") from None
    return entry.pw_uid, entry.pw_gid


async def _pump(stream: asyncio.StreamReader, sink: OutputSink) -> None:
    """Hand each line of ``stream`` to ``sink``; over-long lines in pieces."""
    continued = False  # the last piece was cut from a longer line
    while True:
        try:
            line = await stream.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:
            if e.partial:
                sink(e.partial.decode(errors="replace"))
            return
        except asyncio.LimitOverrunError as e:
            sink((await stream.readexactly(e.consumed)).decode(errors="replace"))
            continued = True
            continue
        text = line.decode(errors="replace").rstrip("\n")
        if text or not continued:
            sink(text)
        continued = False


async def _run(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    return proc.returncode or 0, err.decode(errors="replace").strip()


async def _check(*argv: str) -> None:
    code, err = await _run(*argv)
    if code:
        raise BackendError(f"{argv[0]} failed: {err}")
