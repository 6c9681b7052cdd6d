"""Control groups for containers: memory, CPU and process limits, OOM and fork-failure
detection, kill-all.

Both cgroup versions are handled. Containers get a group below the node's own,
``<own group>/diego/<scope>/<guid>``, in each hierarchy used (v1: memory, cpu and
pids; v2: the unified one, with the pids controller where it is available). The
scope is the cell's: two cells may hold a container for the same guid (one reserved
it, the other runs it), and one must never touch the other's processes. A process
joins its groups by writing its pid to ``procs_files`` before it execs, so nothing
it does escapes the limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
from pathlib import Path

import attrs

log = logging.getLogger("diego.cell.cgroups")

ROOT = Path("/sys/fs/cgroup")
V1_SHARES_PER_WEIGHT = 1024 / 100  # cpu_weight 100 = the default 1024 shares
SPARE_PREFIX = ".spare-"
"""Spare groups' names: no container guid has a dot (guids are [A-Za-z0-9_-])."""
SPARE_LEAF = "p0"
"""The leaf of a spare's parked process; other processes' leaves are p1, p2, ..."""


@attrs.define
class ContainerGroups:
    """The groups of one container."""

    dirs: list[Path]
    memory: Path | None
    version: int
    pids_dir: Path | None = None  # the group holding the process limit, if any

    @property
    def procs_files(self) -> list[Path]:
        """The files a process writes its pid to, to join every group."""
        return [d / "cgroup.procs" for d in self.dirs]

    def out_of_memory(self) -> bool:
        """Whether the kernel OOM-killed a process in this group.

        cgroup v1 counts the kill in the victim's own group only: a container's
        answer is its own count or one of its processes' leaves (read before the
        leaf is removed).
        """
        if self.memory is None:
            return False
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        try:
            text = (self.memory / name).read_text()
        except OSError:
            return False
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value) > 0
        return False

    def pids_exhausted(self) -> bool:
        """Whether a fork in this group failed at a process limit.

        cgroup v1 counts the failure in the forking process's own group (a leaf:
        read it before the leaf is removed), v2 in the group whose limit it hit.
        """
        if self.pids_dir is None:
            return False
        try:
            text = (self.pids_dir / "pids.events").read_text()
        except OSError:
            return False
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "max" and value.strip().isdigit():
                return int(value) > 0
        return False

    def join(self, pid: int) -> None:
        """Move the process ``pid`` into the groups (slow on cgroup v1: see ``make_spare``)."""
        for procs in self.procs_files:
            procs.write_text(str(pid))

    def leaf(self, name: str) -> ContainerGroups:
        """A child group for one process, under the container's limits (hierarchical).

        Killing everything in a process's own leaf reaches whatever it forked,
        even a sandbox whose parent died before it could arrange to die too.
        """
        dirs = []
        for d in self.dirs:
            child = d / name
            child.mkdir(exist_ok=True)
            dirs.append(child)
        memory = self.memory / name if self.memory is not None else None
        pids = self.pids_dir / name if self.pids_dir is not None else None
        return ContainerGroups(dirs, memory, self.version, pids)

    def groups(self) -> list[Path]:
        """The groups and every group below them, children before their parents.

        Only directories are walked (a group's files, dozens each, are not looked at).
        """
        found: list[Path] = []
        for d in self.dirs:
            found += _below(d)
            found.append(d)
        return found

    def pids(self) -> set[int]:
        """Every process in the groups and their children (v1 lists only direct members)."""
        found: set[int] = set()
        for group in self.groups():
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (group / "cgroup.procs").read_text().split())
        return found

    def kill_all(self) -> None:
        """SIGKILL every process in the groups and their children."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def sweep(self) -> bool:
        """Kill every process, then remove the groups, children first; whether all went.

        Blocking (a few system calls per group): run it on a thread.
        """
        self.kill_all()
        for group in self.groups():
            with contextlib.suppress(FileNotFoundError):
                try:
                    group.rmdir()
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        raise
        return not any(d.exists() for d in self.dirs)

    async def kill_and_remove(self, patience: float = 2.0) -> bool:
        """Kill every process, then remove the groups, children first; False if some stayed.

        A group whose last process has just died can still be busy for a moment:
        removal is retried, soon at first, until ``patience`` runs out. The work is
        done on a thread: the loop never waits on cgroupfs.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        pause = 0.001
        while not await asyncio.to_thread(self.sweep):
            if loop.time() > deadline:
                log.warning("cgroup-not-removed dirs=%s", self.dirs)
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)
        return True


class Cgroups:
    """Makes container groups in whichever hierarchy this machine has."""

    def __init__(
        self,
        version: int,
        memory_base: Path | None,
        cpu_base: Path | None,
        pids_base: Path | None = None,
    ) -> None:
        self.version = version
        self.memory_base = memory_base
        self.cpu_base = cpu_base
        self.pids_base = pids_base

    @property
    def bases(self) -> set[Path]:
        """The scope's group in each hierarchy used (one on v2)."""
        return {b for b in (self.memory_base, self.cpu_base, self.pids_base) if b is not None}

    @classmethod
    def detect(cls, scope: str, root: Path = ROOT) -> tuple[Cgroups | None, list[str]]:
        """The cgroups usable here for ``scope``, or None, with notes on what is missing."""
        notes: list[str] = []
        own = _own_groups()
        if (root / "cgroup.controllers").exists():
            parent = root / own.get("", "/").lstrip("/")
            try:
                # v2 hands controllers down level by level: enable them on each.
                for level in (parent, parent / "diego", parent / "diego" / scope):
                    level.mkdir(exist_ok=True)
                    enabled = (level / "cgroup.subtree_control").read_text().split()
                    for wanted in ("memory", "cpu"):
                        if wanted not in enabled:
                            (level / "cgroup.subtree_control").write_text(f"+{wanted}")
            except OSError as e:
                notes.append(f"cgroup v2 not writable: {e.strerror}")
                return None, notes
            base = parent / "diego" / scope
            pids = _v2_pids(parent, scope, notes)
            return cls(2, base, base, base if pids else None), notes
        memory = _v1_base(root, "memory", own, scope, notes)
        cpu = _v1_base(root, "cpu", own, scope, notes)
        pids_base = _v1_base(root, "pids", own, scope, notes, ": max_pids is not enforced")
        if memory is None and cpu is None and pids_base is None:
            return None, notes
        return cls(1, memory, cpu, pids_base), notes

    def create(
        self, guid: str, memory_mb: int, cpu_weight: int, max_pids: int = 0
    ) -> ContainerGroups:
        """Groups for container ``guid`` with its limits (0 memory or pids: no limit)."""
        groups = self.named(guid)
        for d in groups.dirs:
            d.mkdir(exist_ok=True)
        self._limit(groups, memory_mb, cpu_weight, max_pids)
        return groups

    def named(self, name: str) -> ContainerGroups:
        """The groups called ``name`` in this scope, one per hierarchy (made or not)."""
        if self.version == 2:
            assert self.memory_base is not None
            d = self.memory_base / name
            return ContainerGroups([d], d, 2, d if self.pids_base is not None else None)
        memory = self.memory_base / name if self.memory_base is not None else None
        cpu = self.cpu_base / name if self.cpu_base is not None else None
        pids = self.pids_base / name if self.pids_base is not None else None
        dirs = [d for d in (memory, cpu, pids) if d is not None]
        return ContainerGroups(dirs, memory, 1, pids)

    def _limit(
        self, groups: ContainerGroups, memory_mb: int, cpu_weight: int, max_pids: int
    ) -> None:
        if max_pids and groups.pids_dir is not None:
            # Hierarchical: every process below the container's group counts.
            (groups.pids_dir / "pids.max").write_text(str(max_pids))
        if self.version == 2:
            (d,) = groups.dirs
            if memory_mb:
                (d / "memory.max").write_text(str(memory_mb * 1024 * 1024))
                with contextlib.suppress(OSError):
                    (d / "memory.swap.max").write_text("0")
            (d / "cpu.weight").write_text(str(max(1, min(10000, cpu_weight))))
            return
        if groups.memory is not None and memory_mb:
            limit = str(memory_mb * 1024 * 1024)
            (groups.memory / "memory.limit_in_bytes").write_text(limit)
            with contextlib.suppress(OSError):  # absent without swap accounting
                (groups.memory / "memory.memsw.limit_in_bytes").write_text(limit)
        if self.cpu_base is not None:
            shares = max(2, int(cpu_weight * V1_SHARES_PER_WEIGHT))
            (self.cpu_base / groups.dirs[0].name / "cpu.shares").write_text(str(shares))

    # Spare groups: made ahead of a container, with its first process parked inside.
    # Joining a group (writing a pid to cgroup.procs) waits for an RCU grace period
    # on cgroup v1, 10-20 ms on an idle machine; a process forked or parked in a group
    # beforehand starts there at no cost. A spare is renamed to its container's guid.

    def make_spare(self, name: str) -> ContainerGroups:
        """New groups ``name`` and their leaf ``p0``, for a parked process; the leaf."""
        groups = self.named(name)
        for d in groups.dirs:
            d.mkdir()
        return groups.leaf(SPARE_LEAF)

    def claim(
        self, name: str, guid: str, memory_mb: int, cpu_weight: int, max_pids: int = 0
    ) -> ContainerGroups:
        """The spare groups ``name``, renamed to container ``guid`` and limited (as
        ``create``); OSError if they cannot be (then they keep their name)."""
        spare, groups = self.named(name), self.named(guid)
        renamed: list[tuple[Path, Path]] = []
        try:
            for old, new in zip(spare.dirs, groups.dirs, strict=True):
                old.rename(new)
                renamed.append((old, new))
        except OSError:
            for old, new in renamed:
                with contextlib.suppress(OSError):
                    new.rename(old)
            raise
        self._limit(groups, memory_mb, cpu_weight, max_pids)
        return groups

    def spares(self) -> list[ContainerGroups]:
        """Every spare's groups in this scope (those a previous run left, at start)."""
        names = {
            child.name
            for base in self.bases
            if base.is_dir()
            for child in base.iterdir()
            if child.name.startswith(SPARE_PREFIX)
        }
        return [self.named(name) for name in sorted(names)]

    def close(self) -> None:
        """Remove this scope's (empty) groups."""
        for base in self.bases:
            with contextlib.suppress(OSError):
                base.rmdir()

    def existing(self, guid: str) -> ContainerGroups:
        """The groups of a container made earlier (for cleaning up after a restart)."""
        dirs = [b / guid for b in self.bases if (b / guid).exists()]
        memory = self.memory_base / guid if self.memory_base else None
        pids = self.pids_base / guid if self.pids_base else None
        return ContainerGroups(dirs, memory, self.version, pids)


def _below(group: Path) -> list[Path]:
    """The groups below ``group``, deepest first (empty if it is gone)."""
    found: list[Path] = []
    try:
        with os.scandir(group) as entries:
            children = [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:
        return found
    for child in children:
        found += _below(child)
        found.append(child)
    return found


def _own_groups() -> dict[str, str]:
    """This process's group per v1 controller ('' for the v2 hierarchy)."""
    groups: dict[str, str] = {}
    try:
        text = Path("/proc/self/cgroup").read_text()
    except OSError:
        return groups
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            groups[controller] = path
    return groups


def _v1_base(
    root: Path,
    controller: str,
    own: dict[str, str],
    scope: str,
    notes: list[str],
    unless: str = "",
) -> Path | None:
    mount = root / controller
    if not mount.is_dir():
        notes.append(f"no {controller} cgroup{unless}")
        return None
    base = mount / own.get(controller, "/").lstrip("/") / "diego" / scope
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        notes.append(f"{controller} cgroup not writable: {e.strerror}{unless}")
        return None
    return base


def _v2_pids(parent: Path, scope: str, notes: list[str]) -> bool:
    """Whether the v2 pids controller is handed down to ``scope``'s groups (enabled here)."""
    try:
        if "pids" not in (parent / "cgroup.controllers").read_text().split():
            notes.append("no pids controller in this cgroup: max_pids is not enforced")
            return False
        for level in (parent, parent / "diego", parent / "diego" / scope):
            if "pids" not in (level / "cgroup.subtree_control").read_text().split():
                (level / "cgroup.subtree_control").write_text("+pids")
    except OSError as e:
        notes.append(f"pids controller not enabled: {e.strerror}: max_pids is not enforced")
        return False
    return True
