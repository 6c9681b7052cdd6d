"""The Docker backend: every container in the local Docker engine, through aiodocker.

A container is a Docker container whose main process only keeps it alive: a
static busybox from the host, bind-mounted read-only, sleeping under Docker's
init. Every action runs *in* it by exec, with its own env, dir and user; files
cross by the engine's archive API, whose unpacking is confined to the
container's root. Containers carry labels naming their guid and cell, so a
restarted cell finds what it left (:meth:`DockerBackend.existing`). Each exec runs
under a shim (:mod:`diego.cell.backends.shim`) that appends its output to files in
the cell's state directory on the host, mounted at /.diego/procs, and writes its
exit status there; the engine keeps the container and its execs running when the
node dies, so a restarted cell takes the container back (``reopen``) and finds
each process again (``attach``), running or ended, with its output.

Isolation follows the engine. Started with user-namespace remapping, an
unprivileged container's root is an unprivileged host uid, and a privileged one
opts out (host user namespace, all devices). Without remapping an unprivileged
container drops every capability and may gain none (no-new-privileges).

max_pids is the engine's ``PidsLimit``: the container's pids cgroup, which its
init and keepalive count in (two processes) with every exec and its shim.

Network: none (loopback only) unless the container has security group rules; then
it gets a bridge network of its own whose egress iptables limits to those rules
(:mod:`diego.cell.backends.egress`).
"""

# Opening a tar file of the scratch directory is a local, short, blocking call.
# ruff: noqa: ASYNC230, ASYNC240
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
import signal
import tempfile
from collections.abc import Awaitable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import attrs
from aiodocker.exceptions import DockerError
from aiodocker.execs import Exec

from diego.cell.backends.base import (
    BackendError,
    ContainerSpec,
    GuidLocks,
    Leftover,
    OutputSink,
    Process,
    ProcessSpec,
)
from diego.cell.backends.egress import setup_commands, teardown_commands
from diego.cell.backends.local import HOME, _run, _system_tool
from diego.cell.backends.shim import (
    MAX_LINE,
    ProcessFiles,
    ProcessNames,
    any_started,
    reattached,
    record_pid,
    redirected,
    tail,
    unrecorded,
)
from diego.models.cells import Capabilities

log = logging.getLogger("diego.cell.docker")

SIBLING = "sibling"
"""The node's mark, in a keyed process's own files, that it ran in another image."""


def _mark_sibling(files: ProcessFiles) -> None:
    files.mine.mkdir(parents=True, exist_ok=True)
    (files.mine / SIBLING).write_text("")


PUMP_GRACE = 1.0
"""Seconds an exec's output is still read after the process exited."""

LABEL = "org.diego."
"""The prefix of every label diego puts on a container or network."""

KEEPALIVE = "/.diego/busybox"
"""Where the host's static busybox is mounted in every container."""

PROCS = "/.diego/procs"
"""Where the container's process files (on the host, in the cell's state directory)
are mounted in it: each process's shim appends its output there and writes its exit
status, which outlive the node (:mod:`diego.cell.backends.shim`)."""

SLEEP_FOREVER = (KEEPALIVE, "sleep", "2147483647")
"""The container's main process: it does nothing but keep the container up."""

EXEC_START_GRACE = 10.0
"""Seconds an exec may take to have a process after the engine answered its start."""

KILLED = 128 + signal.SIGKILL
"""The status of a process whose container was removed under it."""

_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")


@attrs.frozen(kw_only=True)
class DockerOptions:
    """How a cell uses the engine (``[docker]`` settings)."""

    url: str = ""  # "": DOCKER_HOST, else the engine's unix socket
    preloaded: Mapping[str, str] = attrs.Factory(dict)  # stack name → image
    keepalive: str = "/bin/busybox"  # a static busybox on the host
    pull_timeout: float = 300.0
    node: str = ""  # the node's identity: its containers are found again by it
    state_dir: str = ""  # its containers' process files; "": a directory of its own, for now


def image_of(root_fs: str, stack: str, preloaded: Mapping[str, str]) -> str:
    """The image reference for a root_fs: ``docker:///org/image#tag`` is ``org/image:tag``;
    ``preloaded:NAME`` (and an empty root_fs, for the stack's own) the configured image."""
    if root_fs.startswith("docker:"):
        rest = root_fs[len("docker:") :].removeprefix("//")
        host, _, path = rest.partition("/")
        repo, _, tag = path.partition("#")
        repo = f"{host}/{repo}" if host else repo
        if not repo:
            raise BackendError(f"root_fs {root_fs!r} names no image")
        if "@" in repo or tag.startswith("sha256:"):
            return f"{repo}@{tag}" if tag else repo
        return f"{repo}:{tag or 'latest'}"
    name = root_fs.removeprefix("preloaded:") if root_fs else stack
    image = preloaded.get(name)
    if not image:
        raise BackendError(f"no image is configured for preloaded:{name} ([docker] preloaded)")
    return image


def split_image(image: str) -> tuple[str, str]:
    """``repo:tag`` as (repo, tag); a digest reference keeps its digest as the tag."""
    if "@" in image:
        repo, _, digest = image.partition("@")
        return repo, digest
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repo, _, tag = image.rpartition(":")
        return repo, tag
    return image, "latest"


def tagged(image: str) -> str:
    """``image`` as the engine names it: with its tag (``latest`` if none) or digest."""
    repo, tag = split_image(image)
    return f"{repo}@{tag}" if "@" in image else f"{repo}:{tag}"


def cpu_shares(weight: int) -> int:
    """Docker's cpu shares (1024 is a full share) for a cpu_weight of 1-100."""
    return max(2, round(1024 * weight / 100))


def in_container(path: str, workdir: str) -> str:
    """``path`` made absolute against ``workdir``, with ``..`` stopping at the root."""
    return posixpath.normpath(posixpath.join("/", workdir, path))


@attrs.define(eq=False)
class _Container:
    spec: ContainerSpec
    id: str
    workdir: str
    network: str  # "" when it has none
    memory_events: Path | None  # the cgroup file counting its OOM kills
    image: str = ""
    host: dict[str, Any] = attrs.Factory(dict)  # its HostConfig, for its siblings' limits
    env: tuple[str, ...] = ()
    pids_events: Path | None = None  # the cgroup file counting forks failed at max_pids
    processes: set[DockerProcess | SiblingProcess] = attrs.Factory(set)


class DockerProcess:
    """A process exec'd in a container, under a shim that keeps its output and exit
    status in files on the host (so a restarted node finds them again)."""

    def __init__(
        self,
        pid: int,
        status: Awaitable[int],
        files: ProcessFiles,
        container_id: str,
        owner: _Container,
        sinks: tuple[OutputSink, OutputSink],
    ) -> None:
        self._pid = pid
        self._files = files
        self._container_id = container_id
        self._owner = owner
        self._exited = asyncio.Event()
        self._tail = asyncio.create_task(tail(files, sinks, self._exited))
        # Followed once whether anyone waits or not (as on the local backend).
        self._end = asyncio.ensure_future(self._ended(status))

    async def wait(self) -> int:
        """The exit status: 128 + N when killed by signal N (its output all read)."""
        return await asyncio.shield(self._end)

    async def _ended(self, status: Awaitable[int]) -> int:
        try:
            return await status
        finally:
            self._exited.set()
            await self._tail
            self._owner.processes.discard(self)
            if not self._files.kept:
                await asyncio.to_thread(self._files.remove)

    def kill(self) -> None:
        """Kill the process and every process it started (Docker's exec has no kill)."""
        if self._pid > 0:
            kill_tree(self._pid, self._container_id)


async def _exec_status(docker: aiodocker.Docker, exec_id: str, pump: asyncio.Task[None]) -> int:
    """An exec's exit status, once the engine says it has ended: 128 + N when killed by
    signal N, as Docker reports it; KILLED if the container went (destroyed)."""
    # The engine ends the exec's own output (only the shim's errors: the process's
    # goes to its files) once the process has exited, or a moment later if a child
    # still holds it.
    await asyncio.shield(pump)
    try:
        while True:
            state = await docker._query_json(f"exec/{exec_id}/json")
            if not state.get("Running"):
                return int(state.get("ExitCode") or 0)
            await asyncio.sleep(0.05)
    except DockerError as e:
        log.info("exec-gone exec=%s error=%s", exec_id[:12], _message(e))
        return KILLED


CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE",
    "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
    "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ",
)  # fmt: skip
"""Linux capability names by number, as far as Docker 20.10 knows them (PERFMON and
later are refused by it, and not needed by anything diego runs)."""


def held_capabilities(status: str | None = None) -> tuple[list[str], list[str]]:
    """The capabilities this process may hand on (its bounding set) and those it lacks,
    as ``CAP_*`` names; from ``/proc/self/status`` unless ``status`` is given."""
    text = _read("/proc/self/status") if status is None else status
    bounding = next(
        (int(line.split()[1], 16) for line in text.splitlines() if line.startswith("CapBnd:")),
        (1 << len(CAPABILITIES)) - 1,
    )
    held = [f"CAP_{name}" for bit, name in enumerate(CAPABILITIES) if bounding >> bit & 1]
    missing = [f"CAP_{name}" for bit, name in enumerate(CAPABILITIES) if not bounding >> bit & 1]
    return held, missing


class SiblingProcess:
    """A process run in another image: a container of its own beside the container,
    sharing its volumes and network, removed once it has exited."""

    def __init__(
        self, docker: aiodocker.Docker, container_id: str, pump: asyncio.Task[None], owner: Any
    ) -> None:
        self._docker = docker
        self._id = container_id
        self._pump = pump
        self._owner = owner
        self._killing: asyncio.Task[None] | None = None

    async def wait(self) -> int:
        """Its exit status (137 if it was killed or removed under us)."""
        await asyncio.shield(self._pump)
        handle = self._docker.containers.container(self._id)
        try:
            status = int((await handle.wait()).get("StatusCode", KILLED))
        except DockerError:
            status = KILLED
        finally:
            self._owner.processes.discard(self)
            with contextlib.suppress(DockerError):
                await handle.delete(force=True, v=False)
        return status

    def kill(self) -> None:
        """Kill the sibling container (and so everything in it)."""

        async def kill() -> None:
            with contextlib.suppress(DockerError):
                await self._docker.containers.container(self._id).kill(signal="SIGKILL")

        self._killing = asyncio.ensure_future(kill())


def kill_tree(root: int, container_id: str) -> None:
    """SIGKILL ``root`` and its descendants, if ``root`` is still the container's.

    The tree is stopped first, so nothing forks past the walk, then killed.
    """
    if root <= 0 or container_id not in _read(f"/proc/{root}/cgroup"):
        return
    stopped: set[int] = set()
    while True:
        tree = _descendants(root) | {root}
        fresh = tree - stopped
        if not fresh:
            break
        for pid in fresh:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGSTOP)
        stopped |= fresh
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = _read(f"/proc/{entry.name}/stat")
        # The command name may hold spaces and parentheses: fields follow the last ")".
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


class DockerBackend:
    """Runs containers in the Docker engine; open with :meth:`open`."""

    def __init__(
        self,
        docker: aiodocker.Docker,
        cell_id: str,
        options: DockerOptions,
        info: Mapping[str, Any],
    ) -> None:
        self.docker = docker
        self.cell_id = cell_id
        self.options = options
        self._containers: dict[str, _Container] = {}
        self._locks = GuidLocks()
        self._own_state = not options.state_dir
        self.state = Path(options.state_dir or tempfile.mkdtemp(prefix="diego-docker-"))
        self.state.mkdir(parents=True, exist_ok=True)
        self._names = ProcessNames()
        security = " ".join(info.get("SecurityOptions") or ())
        self.remapped = "name=userns" in security
        driver_status = dict(info.get("DriverStatus") or ())
        self._disk_limit = (
            info.get("Driver") == "overlay2" and driver_status.get("Backing Filesystem") == "xfs"
        )
        notes = [f"engine {info.get('ServerVersion', '?')}, storage {info.get('Driver', '?')}"]
        held, missing = held_capabilities()
        # The engine cannot give a container a capability the node lacks itself (in a
        # container of its own, say): privileged is then every capability it has.
        self._privileged: dict[str, Any] = {"Privileged": True}
        if missing:
            self._privileged = {
                "CapAdd": held,
                "SecurityOpt": ["seccomp=unconfined"],
                "MaskedPaths": [],
                "ReadonlyPaths": [],
            }
            notes.append(
                "this node lacks " + ", ".join(missing) + ": privileged containers get "
                "every capability it holds, unconfined, instead of Docker's privileged mode"
            )
        pids_limit = bool(info.get("PidsLimit"))
        if not pids_limit:
            notes.append("the engine has no pids cgroup: max_pids is not enforced")
        if not self._disk_limit:
            notes.append(
                f"storage driver {info.get('Driver', '?')} on "
                f"{driver_status.get('Backing Filesystem', '?')} cannot limit a container's "
                "disk: disk_mb is only counted against the cell's capacity"
            )
        self._capabilities = Capabilities(
            backend="docker",
            memory_limit=True,
            cpu_weight=True,
            disk_limit=self._disk_limit,
            user_namespaces=self.remapped,
            network_isolation=True,
            egress_rules="per rule: a container with rules gets a network of its own "
            "whose egress iptables limits to them; one without has loopback only",
            pids_limit=pids_limit,
            notes=tuple(notes),
            rootfs_providers=("docker", "preloaded"),
            unprivileged=(
                "user namespace: the engine remaps root to an unprivileged host uid"
                if self.remapped
                else "no user namespace (engine without userns-remap): "
                "all capabilities dropped, no-new-privileges"
            ),
        )

    @classmethod
    async def open(cls, cell_id: str, options: DockerOptions) -> DockerBackend:
        """Connect to the engine and learn what it enforces."""
        if not Path(options.keepalive).is_file():
            raise BackendError(
                f"{options.keepalive} is missing: the Docker backend mounts a static busybox "
                "in each container (apt-get install busybox-static)"
            )
        docker = _client(options.url)
        try:
            info = await docker.system.info()
        except (DockerError, aiohttp.ClientError, OSError) as e:
            await _close(docker)
            raise BackendError(f"no Docker engine: {_message(e)}") from None
        return cls(docker, cell_id, options, info)

    def capabilities(self) -> Capabilities:
        """What this backend enforces here."""
        return self._capabilities

    # ------------------------------------------------------------ names

    def _name(self, guid: str) -> str:
        return "diego-" + _NAME_UNSAFE.sub("_", self.cell_id) + "-" + guid

    def _bridge(self, guid: str) -> str:
        digest = hashlib.sha256(f"{self.cell_id}/{guid}".encode()).hexdigest()
        return "dg" + digest[:12]

    # ------------------------------------------------------------ containers

    async def create(self, spec: ContainerSpec) -> None:
        """Make and start the container; a cancelled caller does not stop it half made."""
        await self._locks.make(spec.guid, lambda: self._create_or_undo(spec))

    async def _create_or_undo(self, spec: ContainerSpec) -> None:
        try:
            await self._create(spec)
        except BaseException:
            await self._destroy(spec.guid)
            raise

    async def _create(self, spec: ContainerSpec) -> None:
        image = image_of(spec.root_fs, spec.stack, self.options.preloaded)
        config = await self._image(image)
        network = ""
        if spec.network:
            network = await self._make_network(spec)
        labels = {
            LABEL + "cell": self.cell_id,
            LABEL + "node": self.options.node,
            LABEL + "guid": spec.guid,
            LABEL + "memory_mb": str(spec.memory_mb),
            LABEL + "disk_mb": str(spec.disk_mb),
            **{LABEL + "x." + k: v for k, v in spec.labels},
        }
        workdir = config.get("WorkingDir") or HOME
        procs = self.state / spec.guid / "procs"
        await asyncio.to_thread(_make_procs_dir, procs)
        host: dict[str, Any] = {
            "Init": True,
            "NetworkMode": network or "none",
            "Binds": [f"{self.options.keepalive}:{KEEPALIVE}:ro", f"{procs}:{PROCS}"],
            "CpuShares": cpu_shares(spec.cpu_weight),
        }
        if spec.memory_mb:
            host["Memory"] = host["MemorySwap"] = spec.memory_mb * 1024 * 1024
        if spec.max_pids:
            host["PidsLimit"] = spec.max_pids
        if spec.disk_mb and self._disk_limit:
            host["StorageOpt"] = {"size": f"{spec.disk_mb}m"}
        if spec.privileged:
            host.update(self._privileged)
            if self.remapped:
                host["UsernsMode"] = "host"
        elif not self.remapped:
            host["CapDrop"] = ["ALL"]
            host["SecurityOpt"] = ["no-new-privileges"]
        env = _env(spec, workdir)
        body: dict[str, Any] = {
            "Image": image,
            "Entrypoint": [],
            "Cmd": list(SLEEP_FOREVER),
            # HOME as on the local backend, when it is the working directory.
            "Env": list(env),
            # Docker makes the working directory: HOME exists as on the local backend.
            "WorkingDir": workdir,
            "Labels": labels,
            "HostConfig": host,
            # Real volumes, so that a process run in another image shares them.
            "Volumes": {volume: {} for volume in spec.volumes},
        }
        try:
            container = await self.docker.containers.create(body, name=self._name(spec.guid))
            await container.start()
            shown = await container.show()
        except DockerError as e:
            raise BackendError(f"{image}: {_message(e)}") from None
        pid = int(shown.get("State", {}).get("Pid") or 0)
        made = self._containers[spec.guid] = _Container(
            spec,
            container.id,
            workdir,
            network,
            _memory_events(pid),
            image,
            host,
            env,
            pids_events=_pids_events(pid),
        )
        # One container's filesystem is shared by all its execs: a volume needs no
        # mount, only to exist.
        for volume in spec.volumes:
            await self._mkdir(made, volume)

    async def _image(self, image: str) -> dict[str, Any]:
        """The image's config, pulled first if the engine lacks it."""
        try:
            return dict((await self.docker.images.inspect(image)).get("Config") or {})
        except DockerError as e:
            if e.status != 404:
                raise BackendError(f"image {image}: {_message(e)}") from None
        repo, tag = split_image(image)
        log.info("image-pull image=%s", image)
        try:
            async with asyncio.timeout(self.options.pull_timeout):
                progress = await self.docker.images.pull(repo, tag=tag, timeout=None)
        except TimeoutError:
            raise BackendError(
                f"failed to pull image {image}: no answer in {self.options.pull_timeout:g}s"
            ) from None
        except DockerError as e:
            raise BackendError(f"failed to pull image {image}: {_message(e)}") from None
        errors = [p["error"] for p in progress if isinstance(p, dict) and p.get("error")]
        if errors:
            raise BackendError(f"failed to pull image {image}: {errors[-1]}")
        try:
            return dict((await self.docker.images.inspect(image)).get("Config") or {})
        except DockerError as e:
            raise BackendError(f"failed to pull image {image}: {_message(e)}") from None

    async def _make_network(self, spec: ContainerSpec) -> str:
        bridge = self._bridge(spec.guid)
        name = f"diego-{bridge}"
        await self._remove_network(spec.guid)  # one left by a crash would be in the way
        try:
            await self.docker.networks.create(
                {
                    "Name": name,
                    "Driver": "bridge",
                    "Options": {"com.docker.network.bridge.name": bridge},
                    "Labels": {
                        LABEL + "cell": self.cell_id,
                        LABEL + "node": self.options.node,
                        LABEL + "guid": spec.guid,
                    },
                }
            )
        except DockerError as e:
            raise BackendError(f"network for {spec.guid}: {_message(e)}") from None
        iptables = _system_tool("iptables")
        for args in setup_commands(bridge, spec.rules):
            code, err = await _run(iptables, *args)
            if code:
                raise BackendError(f"iptables {' '.join(args)}: {err}")
        return name

    async def _remove_network(self, guid: str) -> None:
        await _remove_network_named(self.docker, f"diego-{self._bridge(guid)}")

    async def destroy(self, guid: str) -> None:
        """Kill everything in the container and remove it, with its network."""
        await self._locks.remove(guid, lambda: self._destroy(guid))

    async def _destroy(self, guid: str) -> None:
        container = self._containers.pop(guid, None)
        await self._remove_siblings(guid)
        try:
            await self.docker.containers.container(self._name(guid)).delete(force=True, v=True)
        except DockerError as e:
            if e.status != 404:
                raise BackendError(f"removing container {guid}: {_message(e)}") from None
        if container is None or container.network:
            await self._remove_network(guid)
        await asyncio.to_thread(shutil.rmtree, self.state / guid, True)

    async def reopen(self, spec: ContainerSpec) -> bool:
        """Take back a container an earlier run of this cell made: the engine kept it
        running, with its network, and its processes' files are where they were."""
        if spec.guid in self._containers:
            return False
        try:
            shown = await self.docker.containers.container(self._name(spec.guid)).show()
        except (DockerError, aiohttp.ClientError, OSError) as e:
            return _not_reopened(spec.guid, _message(e))
        state, config = shown.get("State") or {}, shown.get("Config") or {}
        host = dict(shown.get("HostConfig") or {})
        binds = [str(b).split(":") for b in host.get("Binds") or ()]
        procs = self.state / spec.guid / "procs"
        if not state.get("Running"):
            return _not_reopened(spec.guid, f"not running ({state.get('Status', '?')})")
        if [str(procs), PROCS] not in (b[:2] for b in binds):
            return _not_reopened(spec.guid, "its process files are not this cell's")
        if (config.get("Labels") or {}).get(LABEL + "node", "") != self.options.node:
            return _not_reopened(spec.guid, "another node's")
        pid = int(state.get("Pid") or 0)
        network = str(host.get("NetworkMode") or "")
        workdir = str(config.get("WorkingDir") or HOME)
        self._containers[spec.guid] = _Container(
            spec,
            str(shown["Id"]),
            workdir,
            network if network.startswith("diego-") else "",
            _memory_events(pid),
            str(config.get("Image") or ""),
            {k: host[k] for k in SIBLING_LIMITS if k in host},
            _env(spec, workdir),
            pids_events=_pids_events(pid),
        )
        return True

    async def began(self, guid: str) -> bool:
        """Whether a process was ever started in container ``guid``: True unless its
        process files are there, and empty (a container without them, from another
        version or state directory, cannot be told about)."""
        procs = self.state / guid / "procs"
        return not procs.is_dir() or await asyncio.to_thread(any_started, procs)

    async def attach(
        self, guid: str, key: str, stdout: OutputSink, stderr: OutputSink
    ) -> Process | None:
        """The process an earlier run started as ``key``, running or exited."""
        container = self._get(guid)
        files = self._process_files(container, key)
        if (files.mine / SIBLING).exists():
            # Run in another image, beside the container: it is not followed across a
            # restart, and it may have run (never run twice).
            raise BackendError("a process in another image cannot be followed after a restart")
        if await asyncio.to_thread(unrecorded, files):
            # The earlier run died before it recorded the exec's pid: the engine knows.
            try:
                exec_id = (files.mine / "exec").read_text().strip()
            except OSError:
                exec_id = ""
            if not exec_id:  # recorded before the exec starts: it never did
                log.info("process-never-started guid=%s key=%s", guid, key)
                return None
            try:
                state = await self.docker._query_json(f"exec/{exec_id}/json")
            except DockerError:
                state = {}
            pid = int(state.get("Pid") or 0)
            if state and not state.get("Running") and state.get("ExitCode") is None and not pid:
                log.info("process-never-started guid=%s key=%s", guid, key)
                return None  # created, never started: nothing can start it now
            if pid and state.get("Running"):
                await asyncio.to_thread(record_pid, files, pid)
        found = await asyncio.to_thread(reattached, files)
        if found is None:
            return None
        status, pid = found
        running = DockerProcess(pid, status, files, container.id, container, (stdout, stderr))
        container.processes.add(running)
        log.info("process-reattached guid=%s key=%s running=%s", guid, key, pid > 0)
        return running

    def _process_files(self, container: _Container, key: str) -> ProcessFiles:
        """The files of process ``key`` (or, unkeyed, of a new name) in ``container``."""
        name, kept = self._names.of(key)
        d = self.state / container.spec.guid
        return ProcessFiles(d / "procs" / name, kept, own=d / "node" / name)

    async def existing(self) -> list[Leftover]:
        """This cell's containers from an earlier run; its networks left without one go.

        Only this node's: nodes on one machine name their cells alike (HOST-0), and
        a node must never take another's live containers for its own leftovers.
        """
        mine = {"label": [f"{LABEL}cell={self.cell_id}"]}
        if self.options.node:
            mine["label"].append(f"{LABEL}node={self.options.node}")
        found = []
        for c in await self.docker.containers.list(all=True, filters=mine):
            labels: Mapping[str, str] = c._container.get("Labels") or {}
            guid = labels.get(LABEL + "guid", "")
            if not guid or guid in self._containers:
                continue
            found.append(
                Leftover(
                    guid,
                    _int(labels.get(LABEL + "memory_mb")),
                    _int(labels.get(LABEL + "disk_mb")),
                    {
                        k[len(LABEL) + 2 :]: v
                        for k, v in labels.items()
                        if k.startswith(LABEL + "x.")
                    },
                )
            )
        guids = {leftover.guid for leftover in found} | set(self._containers)
        for network in await self.docker.networks.list(filters=mine):
            guid = (network.get("Labels") or {}).get(LABEL + "guid", "")
            if guid and guid not in guids:
                await self._remove_network(guid)
        return sorted(found, key=lambda leftover: leftover.guid)

    async def close(self) -> None:
        """Let go of the engine (and remove the state directory if it is its own)."""
        await _close(self.docker)
        if self._own_state:
            await asyncio.to_thread(shutil.rmtree, self.state, True)

    def out_of_memory(self, guid: str) -> bool:
        """Whether the kernel OOM-killed a process of the container."""
        container = self._containers.get(guid)
        if container is None or container.memory_events is None:
            return False
        return _oom_kills(_read(container.memory_events)) > 0

    def pids_limit_reached(self, guid: str) -> int:
        """The container's max_pids if a fork in it failed at that limit, else 0.

        Every exec joins the container's own cgroup, so its ``pids.events`` counts
        the failures (cgroup v1 in the forking group, v2 in the limited one: both
        are that group). A process run in another image has a limit of its own,
        not counted here.
        """
        container = self._containers.get(guid)
        if container is None or container.pids_events is None or not container.spec.max_pids:
            return 0
        return container.spec.max_pids if _event_count(_read(container.pids_events), "max") else 0

    # ------------------------------------------------------------ processes

    def _get(self, guid: str) -> _Container:
        try:
            return self._containers[guid]
        except KeyError:
            raise BackendError(f"no container {guid}") from None

    async def run(
        self, guid: str, process: ProcessSpec, stdout: OutputSink, stderr: OutputSink
    ) -> DockerProcess | SiblingProcess:
        """Exec ``process`` in the container (or, for another image, start it beside the
        container); its output lines go to the sinks."""
        container = self._get(guid)
        if process.image and tagged(process.image) != container.image:
            return await self._run_sibling(container, process, stdout, stderr)
        files = self._process_files(container, process.key)
        await asyncio.to_thread(files.make, 0o777)  # the shim may be any user of the container
        shim = redirected(f"{PROCS}/{files.dir.name}", '"$@"')
        command = [KEEPALIVE, "sh", "-c", shim, "sh", *_command(process)]
        body = {
            "AttachStdin": False,
            "AttachStdout": True,
            "AttachStderr": True,
            "Tty": False,
            "Cmd": command,
            "Env": [f"USER={process.user}", *(f"{k}={v}" for k, v in process.env)],
            "WorkingDir": in_container(process.dir, container.workdir),
            "User": "0" if process.user == "root" else process.user,
        }
        try:
            created = await self.docker._query_json(
                f"containers/{container.id}/exec", method="POST", data=json.dumps(body)
            )
            # Before it starts: a restarted cell that finds no pid asks the engine.
            await asyncio.to_thread((files.mine / "exec").write_text, str(created["Id"]))
            stream = Exec(self.docker, created["Id"], False).start(timeout=None)
            # Started here, not at the first read: the process exists once run returns,
            # so a kill can always find it.
            await stream._init()
            pid = await self._exec_pid(created["Id"])
        except DockerError as e:
            raise BackendError(_message(e)) from None
        if pid:
            await asyncio.to_thread(record_pid, files, pid)
        pump = asyncio.create_task(_pump(stream, stdout, stderr))
        status = _exec_status(self.docker, created["Id"], pump)
        running = DockerProcess(pid, status, files, container.id, container, (stdout, stderr))
        container.processes.add(running)
        return running

    async def _run_sibling(
        self, container: _Container, process: ProcessSpec, stdout: OutputSink, stderr: OutputSink
    ) -> SiblingProcess:
        """Run ``process`` in its own image, in a container sharing the container's
        volumes (and its mounted busybox), network and limits."""
        image = tagged(process.image)
        await self._image(image)
        if process.key:
            # A restarted cell cannot follow a sibling: it must know one may have run.
            files = self._process_files(container, process.key)
            await asyncio.to_thread(_mark_sibling, files)
        host = {
            key: value
            for key, value in container.host.items()
            if key not in ("NetworkMode", "Binds", "StorageOpt")
        }
        host |= {"NetworkMode": f"container:{container.id}", "VolumesFrom": [container.id]}
        body: dict[str, Any] = {
            "Image": image,
            "Entrypoint": [],
            "Cmd": _command(process),
            "Env": [*container.env, f"USER={process.user}"] + [f"{k}={v}" for k, v in process.env],
            "WorkingDir": in_container(process.dir, container.workdir),
            "User": "0" if process.user == "root" else process.user,
            "Labels": {
                LABEL + "cell": self.cell_id,
                LABEL + "node": self.options.node,
                LABEL + "sibling-of": container.spec.guid,
            },
            "HostConfig": host,
        }
        try:
            sibling = await self.docker.containers.create(body)
            stream = sibling.attach(stdout=True, stderr=True, logs=False)
            await stream._init()  # attached before it starts: no output is missed
            await sibling.start()
        except DockerError as e:
            raise BackendError(f"{image}: {_message(e)}") from None
        pump = asyncio.create_task(_pump(stream, stdout, stderr))
        running = SiblingProcess(self.docker, sibling.id, pump, container)
        container.processes.add(running)
        return running

    async def _remove_siblings(self, guid: str) -> None:
        mine = {"label": [f"{LABEL}cell={self.cell_id}", f"{LABEL}sibling-of={guid}"]}
        for sibling in await self.docker.containers.list(all=True, filters=mine):
            with contextlib.suppress(DockerError):
                await sibling.delete(force=True, v=False)

    async def _exec_pid(self, exec_id: str) -> int:
        """The host pid of a started exec: the engine answers the start a moment before
        the process exists. 0 once it has already ended."""
        deadline = asyncio.get_running_loop().time() + EXEC_START_GRACE
        while True:
            state = await self.docker._query_json(f"exec/{exec_id}/json")
            pid = int(state.get("Pid") or 0)
            if pid or (not state.get("Running") and state.get("ExitCode") is not None):
                return pid
            if asyncio.get_running_loop().time() > deadline:
                log.warning("exec-pid-unknown exec=%s: a kill cannot reach it", exec_id[:12])
                return 0
            await asyncio.sleep(0.002)

    async def stream_in(self, guid: str, directory: str, tar: Path) -> None:
        """Unpack ``tar`` into ``directory`` through the archive API (confined to the root)."""
        container = self._get(guid)
        target = in_container(directory, container.workdir)
        handle = self.docker.containers.container(container.id)
        for attempt in range(2):
            try:
                with open(tar, "rb") as data:
                    await handle.put_archive(target, data)  # type: ignore[no-untyped-call]
                return
            except DockerError as e:
                if e.status != 404 or attempt:
                    raise BackendError(f"{directory}: {_message(e)}") from None
            await self._mkdir(container, target)

    async def _mkdir(self, container: _Container, path: str) -> None:
        process = ProcessSpec(path=KEEPALIVE, args=("mkdir", "-p", "--", path))
        errors: list[str] = []
        running = await self.run(container.spec.guid, process, errors.append, errors.append)
        if await running.wait():
            raise BackendError(f"{path}: {'; '.join(errors)[:500]}")

    async def stream_out(self, guid: str, path: str, into: Path) -> None:
        """Write a tar of ``path`` (relative to the working directory) to ``into``."""
        container = self._get(guid)
        source = in_container(path, container.workdir)
        try:
            async with self.docker._query(
                f"containers/{container.id}/archive",
                params={"path": source},
                timeout=None,
            ) as response:
                with open(into, "wb") as out:
                    async for chunk in response.content.iter_chunked(1 << 16):
                        out.write(chunk)
        except DockerError as e:
            if e.status == 404:
                raise BackendError(f"{path}: no such file or directory") from None
            raise BackendError(f"{path}: {_message(e)}") from None


def _not_reopened(guid: str, reason: str) -> bool:
    log.info("container-not-reopened guid=%s reason=%s", guid, reason)
    return False


SIBLING_LIMITS = ("Memory", "MemorySwap", "PidsLimit", "CpuShares", "StorageOpt", "Init")
"""The HostConfig settings a container's siblings share."""


def _env(spec: ContainerSpec, workdir: str) -> tuple[str, ...]:
    """The container's environment: HOME as on the local backend, when it is the
    working directory, and the spec's."""
    return (*(["HOME=" + HOME] if workdir == HOME else []), *(f"{k}={v}" for k, v in spec.env))


def _make_procs_dir(procs: Path) -> None:
    """The container's process files directory: every user of the container may reach
    (not list) the per-process directories in it."""
    procs.mkdir(parents=True, exist_ok=True)
    procs.chmod(0o711)


def _command(process: ProcessSpec) -> list[str]:
    """The argv of ``process``; under the mounted busybox's ulimit when it has a nofile."""
    command = [process.path, *process.args]
    if process.nofile is not None:
        limit = 'ulimit -n "$0" && exec "$@"'
        command = [KEEPALIVE, "sh", "-c", limit, str(process.nofile), *command]
    return command


async def remove_strays(options: DockerOptions, cells: Collection[str]) -> list[str]:
    """Remove the node's containers whose cell it no longer runs; their names.

    A node restarted with fewer cells, or with cells of other names, would
    otherwise leave its old cells' containers running for ever: no cell of its
    would adopt them, and the engine keeps them past the node's death.
    """
    if not options.node:
        return []
    docker = _client(options.url)
    removed = []
    try:
        ours = {"label": [f"{LABEL}node={options.node}"]}
        for c in await docker.containers.list(all=True, filters=ours):
            labels = c._container.get("Labels") or {}
            if labels.get(LABEL + "cell") in cells:
                continue
            with contextlib.suppress(DockerError):
                await c.delete(force=True, v=True)
                removed.append(str((c._container.get("Names") or [c.id])[0]).lstrip("/"))
        for network in await docker.networks.list(filters=ours):
            if (network.get("Labels") or {}).get(LABEL + "cell") not in cells:
                await _remove_network_named(docker, network["Name"])
    finally:
        await _close(docker)
    return removed


async def _pump(stream: Any, stdout: OutputSink, stderr: OutputSink) -> None:
    """Hand each line of the exec's output to its sink; over-long lines in pieces."""
    lines = {1: _Lines(stdout), 2: _Lines(stderr)}
    try:
        while True:
            message = await stream.read_out()
            if message is None:
                break
            lines.get(message.stream, lines[1]).feed(message.data)
    except (aiohttp.ClientError, DockerError, OSError) as e:
        log.info("exec-output-lost error=%s", e)
    finally:
        for stream_lines in lines.values():
            stream_lines.flush()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(PUMP_GRACE):
                await stream.close()


class _Lines:
    """Cuts one stream's chunks into lines for a sink, as the local backend does: a line
    longer than MAX_LINE arrives in pieces, and the newline ending the last piece
    makes no empty line of its own."""

    def __init__(self, sink: OutputSink) -> None:
        self.sink = sink
        self.buffer = bytearray()
        self.continued = False  # the last thing sent was a piece cut from a longer line

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\n", 0, MAX_LINE + 1)
            if end < 0:
                if len(self.buffer) < MAX_LINE:
                    return
                self._send(bytes(self.buffer[:MAX_LINE]))
                del self.buffer[:MAX_LINE]
                self.continued = True
                continue
            if end or not self.continued:
                self._send(bytes(self.buffer[:end]))
            del self.buffer[: end + 1]
            self.continued = False

    def flush(self) -> None:
        if self.buffer:
            self._send(bytes(self.buffer))
            self.buffer.clear()

    def _send(self, line: bytes) -> None:
        self.sink(line.decode(errors="replace"))


def _client(url: str) -> aiodocker.Docker:
    """A client with no limit on connections: every running process holds one."""
    target = url or os.environ.get("DOCKER_HOST", "") or "unix:///var/run/docker.sock"
    if target.startswith("unix://"):
        socket_path = target[len("unix://") :]
        # aiodocker's own stand-in host for URLs over a unix socket.
        return aiodocker.Docker(
            url="unix://localhost", connector=aiohttp.UnixConnector(socket_path, limit=0)
        )
    base = re.sub(r"^tcp://", "http://", target)
    return aiodocker.Docker(url=base, connector=aiohttp.TCPConnector(limit=0))


async def _remove_network_named(docker: aiodocker.Docker, name: str) -> None:
    """Remove a container's network ``diego-BRIDGE`` and its egress rules, if there."""
    iptables = _system_tool("iptables")
    for args in teardown_commands(name.removeprefix("diego-")):
        await _run(iptables, *args)
    with contextlib.suppress(DockerError):
        await (await docker.networks.get(name)).delete()


async def _close(docker: aiodocker.Docker) -> None:
    """Close the client and the connector :func:`_client` gave it (aiodocker leaves it)."""
    connector = docker.session.connector
    await docker.close()
    if connector is not None:
        await connector.close()


def _memory_events(pid: int) -> Path | None:
    """The file counting OOM kills in the memory cgroup of process ``pid``."""
    for line in _read(f"/proc/{pid}/cgroup").splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory" + path) / "memory.oom_control"
        if controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
            return Path("/sys/fs/cgroup" + path) / "memory.events"
    return None


def _pids_events(pid: int) -> Path | None:
    """The file counting forks that failed at the limit of process ``pid``'s pids cgroup."""
    for line in _read(f"/proc/{pid}/cgroup").splitlines():
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            return Path("/sys/fs/cgroup/pids" + path) / "pids.events"
        if controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
            return Path("/sys/fs/cgroup" + path) / "pids.events"
    return None


def _oom_kills(text: str) -> int:
    return _event_count(text, "oom_kill")


def _event_count(text: str, key: str) -> int:
    """The count of ``key`` in a cgroup events file (``KEY N`` lines)."""
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return _int(value)
    return 0


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def _message(e: BaseException) -> str:
    if isinstance(e, DockerError):
        return str(e.message).strip()
    return str(e).strip() or type(e).__name__


__all__: Sequence[str] = ("DockerBackend", "DockerOptions", "DockerProcess", "image_of")
