"""The local backend: containers as namespaced process trees on this machine.

Each process runs under bubblewrap in its own pid, mount, ipc and uts namespaces
(and network namespace, loopback only, unless the work has security group
rules). Its root is bubblewrap's own fresh tmpfs, read-only once made, holding
the host's top-level entries bound read-only (symlinks such as merged-usr's
``/bin -> usr/bin`` recreated as symlinks), with the node's data directory and
/home hidden, and private writable ``/tmp`` and ``/home/vcap`` that live on the
container's own disk. The container's volumes (``ContainerSpec.volumes``) live on
that disk too: one under /tmp or /home/vcap is a directory there; any other is
bound at its path, which must lie under a top-level directory the host lacks,
since a mount point cannot be made inside the host's read-only directories.
Every process of the container sees the same files at these writable paths.
Limits:

- memory_mb and cpu_weight: a cgroup per container (v1 or v2), joined by each
  process before it execs; the kernel OOM-kills a container over its memory.
- max_pids: the container's pids cgroup (v1, or v2's pids controller), counting
  every process and thread of the container, bubblewrap's own included; a fork
  past it fails with EAGAIN, counted in the group's ``pids.events``.
- disk_mb: the writable paths are an ext4 image of that size, loop-mounted, so
  writes past it fail with ENOSPC.
- privileged=false: bubblewrap runs as an unprivileged host uid in a new user
  namespace, so root in the container is that uid outside it. privileged=true:
  bubblewrap runs as host root in the host's user namespace, and the process keeps
  every capability the node has (it can remount the read-only root, read and write
  any host file): host root in namespaces of its own, no more isolated than that.

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
import shlex
import shutil
import signal
import uuid
from collections.abc import Awaitable, Collection, Iterable
from pathlib import Path, PurePosixPath

import attrs

from diego.cell.backends.base import (
    BackendError,
    ContainerSpec,
    GuidLocks,
    Leftover,
    OutputSink,
    ProcessSpec,
)
from diego.cell.backends.cgroups import SPARE_LEAF, SPARE_PREFIX, Cgroups, ContainerGroups
from diego.cell.backends.shim import (
    ProcessFiles,
    ProcessNames,
    any_started,
    live_pid,
    parked_alive,
    reattached,
    record_pid,
    tail,
    unrecorded,
)
from diego.models.cells import Capabilities

log = logging.getLogger("diego.cell.local")

HOME = "/home/vcap"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MADE_BY_SANDBOX = frozenset({"proc", "dev", "tmp", "home"})
"""Top-level directories the sandbox makes itself rather than taking the host's."""
PARKED = ". /dev/stdin"
"""A spare container's parked first process: a shell that runs the command line
written to its stdin, the shim of the container's first process."""
ARGS = '"$@"'
"""The shim's command, when the command is the shell's arguments."""
SPAWN_GRACE = 10.0
"""Seconds a restarted cell waits for a shim it finds alive to record its pid."""
VOLUME_RULE = (
    "a volume must be an absolute path under a top-level directory the host does not have"
    f" (such as /data or /outputs), or under /tmp or {HOME}"
)


@attrs.frozen
class Volume:
    """Where one of a container's volumes lives.

    ``dir`` is relative to the container's rw directory. A volume that is
    ``mounted`` is bound at ``path``; any other is a directory inside a writable
    tree that is already in place (/tmp, /home/vcap or a mounted volume above it),
    so nested volumes need no mounts of their own.
    """

    path: PurePosixPath
    dir: PurePosixPath
    mounted: bool


@attrs.define(eq=False)
class _Spare:
    """Groups and directories made ahead of a container, with its first process
    parked inside the groups."""

    name: str
    dir: Path  # the container's directory, its rw, tmp and home, and an empty spec.json
    proc: asyncio.subprocess.Process
    command: int  # the write end of the parked shell's stdin

    def discard(self) -> None:
        """Let the parked shell go (it runs nothing) and kill it."""
        with contextlib.suppress(OSError):
            os.close(self.command)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()


@attrs.define(eq=False)
class _Container:
    spec: ContainerSpec
    dir: Path
    groups: ContainerGroups | None
    mounted: bool
    volumes: tuple[Volume, ...] = ()
    processes: set[LocalProcess] = attrs.Factory(set)
    oom_killed: bool = False
    pids_exhausted: bool = False  # a fork of one of its processes failed at max_pids
    spare: _Spare | None = None  # until its first process runs

    @property
    def rw(self) -> Path:
        return self.dir / "rw"

    def mounts(self) -> list[tuple[Path, str]]:
        """The (host directory, container path) binds of the mounted volumes, parents first."""
        return [(self.rw / v.dir, str(v.path)) for v in self.volumes if v.mounted]


class LocalProcess:
    """A process in a local container (its shim, bubblewrap and everything under it).

    The shim is a shell in a session of its own, the process's parent: it sends the
    output to files in the process's directory and writes the exit status there,
    so the process neither dies with the node nor loses its end. The node reads
    the files as they grow (``_tail``).
    """

    def __init__(
        self,
        pid: int,
        status: Awaitable[int],
        files: ProcessFiles,
        owner: _Container,
        leaf: ContainerGroups | None,
        sinks: tuple[OutputSink, OutputSink],
    ) -> None:
        self._pid = pid
        self._files = files
        self._owner = owner
        self._leaf = leaf
        self._reaped = False  # the shim is gone: its pid may be another's now
        self._exited = asyncio.Event()  # and so is all else in its group: output is complete
        self._tail = asyncio.create_task(tail(files, sinks, self._exited))
        # Its end is followed whether anyone waits or not, once: a wait cancelled
        # (a cancelled step, which then kills and waits again) leaves it running.
        self._end = asyncio.ensure_future(self._ended(status))

    async def wait(self) -> int:
        """The exit status; 128 + N when killed by signal N (its output all read)."""
        return await asyncio.shield(self._end)

    async def _ended(self, status: Awaitable[int]) -> int:
        try:
            code = await status
        finally:
            self._reaped = True
            try:
                await self._sweep()
            finally:
                self._exited.set()
        await self._tail  # the files' last bytes: there is no pipe to wait on
        self._owner.processes.discard(self)
        if not self._files.kept:
            await asyncio.to_thread(self._files.remove)
        return code

    async def _sweep(self) -> None:
        leaf = self._leaf
        if leaf is not None:
            # Whatever is left in the process's own group goes with it (read the OOM
            # and fork failure counts first: they go with the group), on a thread, in
            # one go if it can.
            oom, forks, gone = await asyncio.to_thread(
                lambda: (leaf.out_of_memory(), leaf.pids_exhausted(), leaf.sweep())
            )
            if oom:
                self._owner.oom_killed = True
            if forks:
                self._owner.pids_exhausted = True
            if not gone:
                await leaf.kill_and_remove()

    def kill(self) -> None:
        """Kill the process group: the shim, bubblewrap and its pid namespace's init.

        The init's death takes every process of the pid namespace with it. The
        group is killed, not only the shim, because a kill may land while the
        shim is still exec'ing its way to bubblewrap, or just after bubblewrap
        forked the namespace's init.
        """
        if self._pid > 0 and not self._reaped:  # 0: attached, already ended
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._pid, signal.SIGKILL)
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
        spares: int = 0,
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
        self._locks = GuidLocks()
        self._names = ProcessNames()
        # Containers made ahead (see Cgroups.make_spare): only worth it with cgroups.
        self.spares = spares if self._cgroups is not None else 0
        self._spares: list[_Spare] = []
        self._making_spares: asyncio.Task[None] | None = None
        self._discarding: set[asyncio.Task[None]] = set()
        self._closing = False
        if self._cgroups is not None:
            for leftover in self._cgroups.spares():  # a previous run's
                leftover.sweep()
        self._loop = self._is_root and Path("/dev/loop-control").exists()
        # The host root can be the sandbox's own only where it has the mount points.
        self._host_root_has_mount_points = all(
            Path("/", name).is_dir() and not Path("/", name).is_symlink()
            for name in MADE_BY_SANDBOX
        )
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
            pids_limit=self._cgroups is not None and self._cgroups.pids_base is not None,
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
        for spare_dir in self.root.glob(f"{SPARE_PREFIX}*"):  # a previous run's spares
            shutil.rmtree(spare_dir, True)

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
        await self._locks.make(spec.guid, lambda: self._create(spec))

    async def _create(self, spec: ContainerSpec) -> None:
        volumes = plan_volumes(spec.volumes)  # refused before anything is made
        d = self.root / spec.guid
        # The files and groups are made on threads: cgroupfs and the disk can be slow,
        # and the loop serves every other container meanwhile.
        mounted = bool(spec.disk_mb and self._loop)
        if mounted:
            await asyncio.to_thread(_make_dir, spec, d)
            await self._make_disk(d / "disk.img", d / "rw", spec.disk_mb)
        spare = self._take_spare()
        try:
            container = await asyncio.to_thread(self._lay_out, spec, d, mounted, volumes, spare)
        except BaseException:
            if spare is not None:
                await self._discard(spare)
            raise
        self._containers[spec.guid] = container

    def _lay_out(
        self,
        spec: ContainerSpec,
        d: Path,
        mounted: bool,
        volumes: tuple[Volume, ...],
        spare: _Spare | None = None,
    ) -> _Container:
        """The directories, volumes and groups of a container (blocking); its groups
        and directories are ``spare``'s when given and they can be claimed."""
        if spare is not None:
            # Renamed into place: no new inode, and inodes are slow to find on a
            # filesystem where many were freed lately (ext4 skips those for a while).
            try:
                if mounted:
                    raise FileExistsError(d)  # the disk is mounted on d/rw already
                spare.dir.rename(d)
            except OSError:
                shutil.rmtree(spare.dir, True)
        _make_dir(spec, d)
        rw = d / "rw"
        for sub, mode in (("tmp", 0o1777), ("home", 0o755)):
            (rw / sub).mkdir(exist_ok=True)
            (rw / sub).chmod(mode)
            if self._unprivileged(spec):
                os.chown(rw / sub, self.container_uid, self.container_uid)
        owner = self.container_uid if self._unprivileged(spec) else None
        for volume in volumes:
            _make_dirs(rw, volume.dir, owner)
        groups = None
        if self._cgroups is not None and spare is not None:
            try:
                groups = self._cgroups.claim(
                    spare.name, spec.guid, spec.memory_mb, spec.cpu_weight, spec.max_pids
                )
            except OSError as e:
                log.warning("spare-not-claimed guid=%s error=%s", spec.guid, e)
                spare.discard()
                self._cgroups.named(spare.name).sweep()
                spare = None
        if self._cgroups is not None and groups is None:
            groups = self._cgroups.create(spec.guid, spec.memory_mb, spec.cpu_weight, spec.max_pids)
        return _Container(spec, d, groups, mounted, volumes, spare=spare)

    async def _make_disk(self, image: Path, mountpoint: Path, size_mb: int) -> None:
        with open(image, "wb") as f:
            f.truncate(size_mb * 1024 * 1024)
        # No reserved blocks and no journal: the container gets all of disk_mb.
        mkfs = _system_tool("mkfs.ext4")
        await _check(mkfs, "-q", "-F", "-m", "0", "-O", "^has_journal", str(image))
        await _check(_system_tool("mount"), "-o", "loop,nodev,nosuid", str(image), str(mountpoint))

    async def destroy(self, guid: str) -> None:
        """Kill every process, unmount the disk, remove the groups and files."""
        await self._locks.remove(guid, lambda: self._destroy(guid))

    async def _destroy(self, guid: str) -> None:
        container = self._containers.pop(guid, None)
        d = self.root / guid
        if container is not None:
            for process in tuple(container.processes):
                process.kill()
            if container.spare is not None:
                container.spare.discard()
        groups, removed, mounted = await asyncio.to_thread(self._tear_down, guid, container)
        if groups is not None and not removed:
            await groups.kill_and_remove()
        if container is not None and container.spare is not None:
            await container.spare.proc.wait()  # killed above; reaped here
        if mounted:
            await _run(_system_tool("umount"), "-l", str(d / "rw"))
            await asyncio.to_thread(shutil.rmtree, d, True)
        self._replenish()  # for a container that took a spare and never ran

    def _tear_down(
        self, guid: str, container: _Container | None
    ) -> tuple[ContainerGroups | None, bool, bool]:
        """In one go on a thread: kill and remove the groups, and the files unless a
        disk is mounted on them; (the groups, whether they went, whether mounted)."""
        groups = container.groups if container else None
        if groups is None and self._cgroups is not None:
            groups = self._cgroups.existing(guid)
        d = self.root / guid
        _kill_recorded_shims(d / "procs")  # an earlier run's: no cgroup may hold them
        removed = groups.sweep() if groups is not None else True
        mounted = (d / "rw").is_mount()
        if not mounted:
            shutil.rmtree(d, True)
        return groups, removed, mounted

    async def existing(self) -> list[Leftover]:
        """Containers left on disk by an earlier run of this cell."""
        self._replenish()  # called as the cell starts: the first container finds a spare
        if not self.root.is_dir():
            return []
        found = []
        for d in sorted(self.root.iterdir()):
            if d.name.startswith(SPARE_PREFIX):
                continue
            try:
                spec = json.loads((d / "spec.json").read_text())
            except (OSError, ValueError):
                continue
            labels = {str(k): str(v) for k, v in spec.get("labels", ())}
            found.append(Leftover(d.name, spec.get("memory_mb", 0), spec.get("disk_mb", 0), labels))
        return found

    async def close(self) -> None:
        """Remove the containers root and the cell's cgroups if nothing is left in them."""
        self._closing = True
        if self._making_spares is not None:
            self._making_spares.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._making_spares
        while self._spares:
            await self._discard(self._spares.pop())
        with contextlib.suppress(OSError):
            self.root.rmdir()
        if self._cgroups is not None:
            self._cgroups.close()

    def cgroup_dirs(self, guid: str) -> list[Path]:
        """The container's cgroup directories, one per hierarchy (made or not)."""
        if self._cgroups is None:
            return []
        return sorted(base / guid for base in self._cgroups.bases)

    def out_of_memory(self, guid: str) -> bool:
        """Whether the kernel OOM-killed a process of the container."""
        container = self._containers.get(guid)
        if container is None:
            return False
        return container.oom_killed or bool(container.groups and container.groups.out_of_memory())

    def pids_limit_reached(self, guid: str) -> int:
        """The container's max_pids if a fork of one of its processes failed at it, else 0."""
        container = self._containers.get(guid)
        if container is None or not container.spec.max_pids:
            return 0
        groups = container.groups
        hit = container.pids_exhausted or bool(groups and groups.pids_exhausted())
        return container.spec.max_pids if hit else 0

    # ------------------------------------------------------------ processes

    async def run(
        self, guid: str, process: ProcessSpec, stdout: OutputSink, stderr: OutputSink
    ) -> LocalProcess:
        """Start ``process`` in the container; its output lines go to the sinks."""
        container = self._get(guid)
        spare, container.spare = container.spare, None
        files = self._process_files(container, process.key)  # made on the thread below
        if spare is not None:
            # The parked shell, in the container's groups already, becomes the shim.
            leaf = await asyncio.to_thread(self._hand_over, spare, container, process, files)
            proc = spare.proc
            self._replenish()
        else:
            leaf, argv = await asyncio.to_thread(self._prepare, container, process, files)
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        running = LocalProcess(proc.pid, _status_of(proc), files, container, leaf, (stdout, stderr))
        container.processes.add(running)
        return running

    async def reopen(self, spec: ContainerSpec) -> bool:
        """Take back a container an earlier run of this cell made: its directory, disk
        and groups are where that run left them, and its processes run on."""
        d = self.root / spec.guid
        if spec.guid in self._containers or not (d / "spec.json").is_file():
            return False
        try:
            volumes = plan_volumes(spec.volumes)
        except BackendError:
            return False
        groups = self._cgroups.existing(spec.guid) if self._cgroups is not None else None
        mounted = (d / "rw").is_mount()
        if spec.disk_mb and self._loop and not mounted:
            return False  # its disk is gone (the machine restarted): no limit, no files
        if groups is not None and not any(g.is_dir() for g in groups.dirs):
            return False  # so are its groups: no limits, and nothing of it can be running
        self._containers[spec.guid] = _Container(spec, d, groups, mounted, volumes)
        return True

    async def began(self, guid: str) -> bool:
        """Whether a process was ever started in container ``guid``."""
        return await asyncio.to_thread(any_started, self.root / guid / "procs")

    async def attach(
        self, guid: str, key: str, stdout: OutputSink, stderr: OutputSink
    ) -> LocalProcess | None:
        """The process an earlier run started as ``key``, running or exited."""
        container = self._get(guid)
        files = self._process_files(container, key)
        if await asyncio.to_thread(unrecorded, files):
            # Its shim records its pid before anything else: with none recorded and no
            # shim of it alive, it never ran its first line, so neither did the command.
            if not await asyncio.to_thread(_shim_alive, files):
                log.info("process-never-started guid=%s key=%s", guid, key)
                return None
            for _ in range(int(SPAWN_GRACE / 0.02)):  # then reattached() refuses it
                if not await asyncio.to_thread(unrecorded, files):
                    break
                await asyncio.sleep(0.02)
        found = reattached(files)
        if found is None:
            return None
        status, pid = found
        leaf = None
        if container.groups is not None and files.leaf.is_file():
            leaf = container.groups.leaf(files.leaf.read_text().strip())
        running = LocalProcess(pid, status, files, container, leaf, (stdout, stderr))
        container.processes.add(running)
        log.info("process-reattached guid=%s key=%s running=%s", guid, key, pid > 0)
        return running

    def _process_files(self, container: _Container, key: str) -> ProcessFiles:
        """The files of process ``key`` (or, unkeyed, of a new name) in ``container``."""
        name, kept = self._names.of(key)
        return ProcessFiles(container.dir / "procs" / name, kept)

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
        leaf, argv = await asyncio.to_thread(self._prepare, container, process, None)
        proc = await asyncio.create_subprocess_exec(
            *argv,
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

    def _prepare(
        self, container: _Container, process: ProcessSpec, files: ProcessFiles | None
    ) -> tuple[ContainerGroups | None, list[str]]:
        """A new process's own group and command line (blocking: cgroupfs, stat): under
        a shim keeping ``files``, or (None) exec'd with the node's own stdio."""
        if files is not None:
            files.dir.mkdir(parents=True, exist_ok=True)
        leaf = None
        if container.groups is not None:
            name = files.dir.name if files is not None else self._names.unique()
            if files is not None:
                files.leaf.write_text(name)
            leaf = container.groups.leaf(name)
        command = self._argv(container, process)
        joins = ""
        if leaf is not None:
            # Join the process's groups (under the container's) before it starts, so
            # no byte escapes the limits and a kill reaches everything it starts.
            joins = " ".join(f'echo $$ > "{p}" &&' for p in leaf.procs_files)
        if files is not None:
            script = files.shim(ARGS, then=joins)
        else:  # braced: a failed join runs nothing, not the command outside its limits
            script = f"{joins} {{ exec {ARGS}; }}"
        return leaf, ["/bin/sh", "-c", script, "sh", *command]

    def _hand_over(
        self, spare: _Spare, container: _Container, process: ProcessSpec, files: ProcessFiles
    ) -> ContainerGroups | None:
        """Have a spare's parked shell run ``process`` as its shim (blocking); the leaf
        it is in.

        Its stdin is /dev/null once it runs, as a process started anew has. A shell
        that died meanwhile runs nothing and the process fails to start; that is
        what a process killed at once would do too.
        """
        argv = self._argv(container, process)
        # A function called on the last line: a node killed mid-write leaves a text
        # that defines nothing or calls nothing, never a command cut short.
        command = f"shim() {{ {files.shim(shlex.join(argv))}; }}\nshim\n".encode()
        files.dir.mkdir(parents=True, exist_ok=True)
        # Recorded before the command is written: the parked shell's command line does
        # not name the files, so a restarted cell could not find it by them.
        record_pid(files, spare.proc.pid, parked=True)
        files.leaf.write_text(SPARE_LEAF)
        try:
            view = memoryview(command)
            while view:
                view = view[os.write(spare.command, view) :]
        except OSError as e:
            log.warning("spare-shell-gone guid=%s error=%s", container.spec.guid, e)
        finally:
            os.close(spare.command)
        return container.groups.leaf(SPARE_LEAF) if container.groups is not None else None

    # ------------------------------------------------------------ spares

    def ready_spares(self) -> int:
        """Spare containers made and waiting to be claimed."""
        return len(self._spares)

    def _take_spare(self) -> _Spare | None:
        """A spare ready to be claimed, if any.

        Another is made in its place once the container's first process runs (or
        the container is destroyed), not now: making one (a fork, cgroupfs, a thread)
        would compete with this container's own making. With none left, making more
        starts now.
        """
        spare = None
        while self._spares and spare is None:
            candidate = self._spares.pop(0)
            if candidate.proc.returncode is None:
                spare = candidate
            else:  # died parked (someone killed it): its groups go in the background
                discarding = asyncio.create_task(self._discard(candidate))
                self._discarding.add(discarding)
                discarding.add_done_callback(self._discarding.discard)
        if spare is None:
            self._replenish()
        return spare

    def _replenish(self) -> None:
        """Start making spares, unless enough are made or being made."""
        if self._closing or len(self._spares) >= self.spares:
            return
        if self._making_spares is None or self._making_spares.done():
            self._making_spares = asyncio.create_task(self._make_spares())

    async def _make_spares(self) -> None:
        """Make spares, one at a time, until there are ``spares`` of them."""
        while not self._closing and len(self._spares) < self.spares:
            try:
                spare = await self._make_spare()
            except (OSError, BackendError) as e:
                log.warning("spare-not-made error=%s", e)
                return
            if self._closing:
                await self._discard(spare)
                return
            self._spares.append(spare)

    async def _make_spare(self) -> _Spare:
        assert self._cgroups is not None
        cgroups = self._cgroups
        name = f"{SPARE_PREFIX}{uuid.uuid4().hex[:16]}"
        d = self.root / name
        leaf = await asyncio.to_thread(_make_spare, cgroups, name, d)
        read, command = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                PARKED,
                stdin=read,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            os.close(command)
            await asyncio.to_thread(cgroups.named(name).sweep)
            await asyncio.to_thread(shutil.rmtree, d, True)
            raise
        finally:
            os.close(read)
        spare = _Spare(name, d, proc, command)
        try:
            await asyncio.to_thread(leaf.join, proc.pid)  # the slow part, ahead of time
        except BaseException:
            await self._discard(spare)
            raise
        return spare

    async def _discard(self, spare: _Spare) -> None:
        """Kill a spare not claimed, reap its shell and remove its groups."""
        spare.discard()
        await spare.proc.wait()
        if self._cgroups is not None:
            await self._cgroups.named(spare.name).kill_and_remove()
        await asyncio.to_thread(shutil.rmtree, spare.dir, True)

    def _argv(self, container: _Container, process: ProcessSpec) -> list[str]:
        """The command that runs ``process`` in the sandbox, as the container's user."""
        spec = container.spec
        unprivileged = self._unprivileged(spec)
        uid, gid = _user_ids(process.user)
        bwrap = [self.bwrap, "--die-with-parent", "--new-session"]
        bwrap += ["--unshare-pid", "--unshare-ipc", "--unshare-uts"]
        if not spec.network:
            bwrap.append("--unshare-net")
        if unprivileged:
            bwrap += ["--unshare-user", "--uid", str(uid), "--gid", str(gid)]
        bwrap += self._filesystem(container, unprivileged)
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
        return [*prefix, *bwrap]

    def _filesystem(self, container: _Container, unprivileged: bool) -> list[str]:
        """bubblewrap arguments building the sandbox's filesystem, in mount order.

        A container with mounted volumes has bubblewrap's fresh tmpfs as its root,
        the host's top-level entries bound into it one by one, so that a mount point
        can be made at any new top-level path; it is made read-only last, once every
        mount point is in. Any other has the host's root itself, bound read-only in
        one recursive bind (a quarter cheaper to start: fewer mounts to make and
        remount), with the same things covered and bound over it.
        """
        hidden = self._hidden(unprivileged)
        mounts = container.mounts()
        if not mounts and self._host_root_has_mount_points:
            args = ["--ro-bind", "/", "/", "--tmpfs", "/home"]
            for covered in hidden:
                args += ["--tmpfs", str(covered)]
            args += ["--dev", "/dev", "--proc", "/proc"]
            args += ["--bind", str(container.rw / "tmp"), "/tmp"]
            return [*args, "--bind", str(container.rw / "home"), HOME]
        skip = {
            *MADE_BY_SANDBOX,
            *(p.name for p in self.hide if p.parent == Path("/")),
            *(PurePosixPath(path).parts[1] for _, path in mounts),
        }
        args = _host_top_level(skip)
        args += ["--tmpfs", "/home"]
        for covered in hidden:
            args += ["--tmpfs", str(covered)]
        args += ["--dev", "/dev", "--proc", "/proc"]
        args += ["--bind", str(container.rw / "tmp"), "/tmp"]
        args += ["--bind", str(container.rw / "home"), HOME]
        for source, path in mounts:
            args += ["--bind", str(source), path]
        return [*args, "--remount-ro", "/"]

    def _hidden(self, unprivileged: bool) -> list[Path]:
        """The hidden host paths to cover with an empty tmpfs.

        A path the container uid cannot walk to is hidden by its permissions
        already, and bubblewrap (running as that uid) could not mount over it. One
        under a directory the sandbox makes itself is not in the sandbox at all.
        """
        return [
            path
            for path in self.hide
            if path.parts[1:2]
            and path.parts[1] not in MADE_BY_SANDBOX
            and path.exists()
            and (not unprivileged or _walkable(path))
        ]


FALLBACK_ROOT = Path("/var/lib/diego")


async def remove_strays(
    cells: Path, keep: Collection[str], hide: tuple[Path, ...], container_uid: int
) -> list[str]:
    """Destroy the containers of the cells under ``cells`` (``cells/CELL/containers``)
    not named in ``keep``: an earlier run's cells, under other names. Their processes
    outlive the node that started them, and no cell of this one would ever end them.
    The guids destroyed."""
    removed: list[str] = []
    for home in await asyncio.to_thread(_other_cells, cells, keep):
        backend = LocalBackend(
            home / "containers", hide=hide, container_uid=container_uid, name=home.name
        )
        for leftover in await backend.existing():
            await backend.destroy(leftover.guid)
            removed.append(leftover.guid)
        await backend.close()
    return removed


def _other_cells(cells: Path, keep: Collection[str]) -> list[Path]:
    if not cells.is_dir():
        return []
    # Not only cells whose containers/ is there: an unreachable data dir has its
    # containers under FALLBACK_ROOT, which the cell's backend finds again.
    return [home for home in sorted(cells.iterdir()) if home.name not in keep and home.is_dir()]


def plan_volumes(paths: Iterable[str]) -> tuple[Volume, ...]:
    """Where each volume path lives, parents first; BackendError for one that cannot be.

    A mount point can only be made where the sandbox's root is its own tmpfs: at a
    top-level name the host does not have. /tmp and /home/vcap are the container's
    own writable directories already, so a volume there is a directory in them.
    """
    normalized = sorted({_volume_path(raw) for raw in paths})
    planned: list[Volume] = []
    for path in normalized:
        own = _own_dir(path)
        if own is not None:
            planned.append(Volume(path, own, mounted=False))
            continue
        _check_top_level(path)
        under = [v for v in planned if v.mounted and path.is_relative_to(v.path)]
        planned.append(Volume(path, PurePosixPath("volumes", *path.parts[1:]), not under))
    return tuple(planned)


def _volume_path(raw: str) -> PurePosixPath:
    """``raw`` as a normalized absolute container path, or BackendError."""
    if not raw.startswith("/"):
        raise BackendError(f"volume {raw!r} is not an absolute path; {VOLUME_RULE}")
    parts = PurePosixPath(raw).parts[1:]  # "//x" keeps its "//" as the root part
    if ".." in parts:
        raise BackendError(f"volume {raw!r} has a '..'; {VOLUME_RULE}")
    if not parts:
        raise BackendError(f"volume {raw!r} is the root; {VOLUME_RULE}")
    return PurePosixPath("/", *parts)


def _own_dir(path: PurePosixPath) -> PurePosixPath | None:
    """The directory below the rw dir holding ``path`` if it lies in /tmp or /home/vcap."""
    for mounted_at, own in ((PurePosixPath("/tmp"), "tmp"), (PurePosixPath(HOME), "home")):
        if path.is_relative_to(mounted_at):
            return PurePosixPath(own, path.relative_to(mounted_at))
    return None


def _check_top_level(path: PurePosixPath) -> None:
    """BackendError unless ``path``'s top-level directory is one the sandbox can make."""
    top = "/" + path.parts[1]
    if path.parts[1] in MADE_BY_SANDBOX:
        raise BackendError(f"volume {path}: {top} is made by the sandbox; {VOLUME_RULE}")
    if os.path.lexists(top):
        raise BackendError(
            f"volume {path}: {top} exists on the host, read-only in the container,"
            f" so no mount point can be made in it; {VOLUME_RULE}"
        )


def _make_spare(cgroups: Cgroups, name: str, d: Path) -> ContainerGroups:
    """A spare's groups and directories (blocking); the leaf of its parked process."""
    d.mkdir(mode=0o711)
    (d / "spec.json").touch()  # written at claim: an existing file takes no new inode
    (d / "rw").mkdir(mode=0o755)
    for sub in ("tmp", "home"):
        (d / "rw" / sub).mkdir()
    return cgroups.make_spare(name)


def _make_dir(spec: ContainerSpec, d: Path) -> None:
    """The container's directory, its spec (for a restarted cell) and its rw directory."""
    d.mkdir(mode=0o711, exist_ok=True)
    (d / "spec.json").write_text(json.dumps(attrs.asdict(spec)))
    (d / "rw").mkdir(mode=0o755, exist_ok=True)


def _make_dirs(rw: Path, relative: PurePosixPath, owner: int | None) -> None:
    """Make ``rw/relative`` and its missing parents, each 0755 and owned by ``owner``.

    The first part (tmp, home or volumes) exists or is the host-side parent of the
    volumes and stays root's. A symlink on the way is refused rather than followed:
    it could only be one a container left behind, pointing anywhere on the host.
    """
    path = rw / relative.parts[0]
    if not path.exists():
        path.mkdir()
        path.chmod(0o755)  # whatever the umask: the container uid must walk through it
    for part in relative.parts[1:]:
        path = path / part
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o755)
        if path.is_symlink() or not path.is_dir():
            raise BackendError(f"volume directory {path} is not a directory")
        path.chmod(0o755)
        if owner is not None:
            os.lchown(path, owner, owner)


def _host_top_level(skip: Collection[str]) -> list[str]:
    """bubblewrap arguments recreating the host's top-level entries but ``skip``, read-only.

    Directories and files are bound (with their submounts); symlinks, such as
    merged-usr's ``/bin -> usr/bin``, are made anew with the same target. An entry
    gone by the time bubblewrap runs is passed over (``--ro-bind-try``).
    """
    args: list[str] = []
    with os.scandir("/") as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            path = "/" + entry.name
            if entry.name in skip:
                continue
            if entry.is_symlink():
                with contextlib.suppress(OSError):
                    args += ["--symlink", os.readlink(path), path]
            elif entry.is_dir(follow_symlinks=False) or entry.is_file(follow_symlinks=False):
                args += ["--ro-bind-try", path, path]
    return args


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


def _shim_alive(files: ProcessFiles) -> bool:
    """Whether a process of this machine runs the process's shim: the parked shell
    recorded for it, or one whose command line names the process's pid file
    (blocking: reads every /proc/PID/cmdline)."""
    if live_pid(files) is not None or parked_alive(files):
        return True
    needle = str(files.pid).encode()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    if needle in f.read():
                        return True
            except OSError:
                continue
    return False


def _kill_recorded_shims(procs: Path) -> None:
    """Kill the process group of every shim under ``procs`` that still runs (its pid
    and start time as it recorded them), whichever run of the node started it."""
    try:
        dirs = list(procs.iterdir())
    except OSError:
        return
    for d in dirs:
        pid = live_pid(ProcessFiles(d, kept=True))
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


async def _status_of(proc: asyncio.subprocess.Process) -> int:
    """The shim's exit status: the process's, or 128 + N if the shim was killed."""
    code = await proc.wait()
    return 128 - code if code < 0 else code


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
