"""A process's shim and its files: output, exit status and pid kept on the host.

Each process a cell runs on either backend is started under a shim, a shell that
appends the process's stdout and stderr to files in the process's own directory
(``ProcessFiles``) and writes its exit status there as it ends, so that neither
the output nor the end is lost when the node dies meanwhile. The node reads the
output files as they grow (:func:`tail`), waits for the shim by its pid (a pidfd),
and a restarted node finds all of it again: the pid with its start time (a pid
reused by another process has another), the status, and the output not yet freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import itertools
import logging
import os
import shlex
import shutil
import signal
import stat
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import attrs

from diego.cell.backends.base import BackendError, OutputSink

log = logging.getLogger("diego.cell.shim")

MAX_LINE = 64 * 1024
"""Longer output lines are split; a process cannot make the cell buffer without end."""
TAIL_INTERVALS = (0.02, 0.5)
"""Seconds between reads of a process's output files: the least (while output
comes, and for the process's first TAIL_EAGER seconds) and the most (the wait
doubles while none comes)."""
TAIL_EAGER = 1.0
"""Seconds a new process's output is read at the least interval, quiet or not: a
short process's lines arrive as they would through a pipe."""
PUNCH_AT = 1024 * 1024
"""Bytes of an output file read and not yet freed, at most: the node frees the
disk blocks of what it has read (the file keeps its length, as a hole)."""
READ_BUDGET = 16 * MAX_LINE
"""Bytes of one output file read in one go, at most: a process that writes faster
than the node reads cannot hold the event loop."""


@attrs.frozen
class ProcessFiles:
    """Where a process's shim keeps its output and status: ``procs/NAME`` in the
    container's directory (the host's, out of the container's sight)."""

    dir: Path
    kept: bool  # a keyed process's stay (a restarted cell looks for them)
    own: Path | None = None
    """Where the node keeps its own files of the process (the pid it recorded, how far
    it has read): ``dir`` unless the container can write there (Docker's)."""

    @property
    def mine(self) -> Path:
        return self.own or self.dir

    @property
    def out(self) -> Path:
        return self.dir / "out"

    @property
    def err(self) -> Path:
        return self.dir / "err"

    @property
    def exit(self) -> Path:
        return self.dir / "exit"

    @property
    def pid(self) -> Path:
        return self.mine / "pid"

    @property
    def leaf(self) -> Path:
        return self.dir / "leaf"

    def shim(self, command: str, then: str = "") -> str:
        """The shell text that first records the shim's pid and start time (field 22 of
        its /proc stat: a reused pid has another), then runs ``then`` (shell text that
        must succeed, such as cgroup joins) and ``command`` (shell words), and records
        its exit status; builtins only, so no process more is started."""
        pid = shlex.quote(str(self.pid))
        skip = " ".join(["_"] * 21)
        record = f'read -r {skip} t _ </proc/$$/stat; echo "$$ $t" >{pid};'
        # Braced: a failed ``then`` runs nothing, not the command outside its limits.
        return f"{record} {then} {{ {redirected(str(self.dir), command)}; }}"

    def make(self, mode: int = 0o700) -> None:
        """Make the directory (``mode``), afresh, and empty output files the shim may
        append to whichever user it runs as (blocking). Whatever was at the path goes
        first, unfollowed: in a directory the container can write, it may have put a
        symlink or a file there ahead of the node."""
        if self.dir.is_symlink() or self.dir.is_file():
            self.dir.unlink()
        elif self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        self.dir.mkdir()
        self.dir.chmod(mode)
        if self.own is not None:
            self.own.mkdir(parents=True, exist_ok=True)
        for path in (self.out, self.err):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.fchmod(fd, 0o666 if mode & 0o002 else 0o600)
            finally:
                os.close(fd)

    def remove(self) -> None:
        """Remove the process's files, the node's own too (blocking; symlinks unfollowed)."""
        for d in {self.dir, self.mine}:
            shutil.rmtree(d, True)


def redirected(d: str, command: str) -> str:
    """The shell text that runs ``command`` with its output appended to ``d``/out and
    ``d``/err, and writes its exit status to ``d``/exit (``d`` as the shim sees it)."""
    out, err, status = (shlex.quote(f"{d}/{name}") for name in ("out", "err", "exit"))
    return f"{command} </dev/null >>{out} 2>>{err}; s=$?; echo $s >{status}; exit $s"


class ProcessNames:
    """The names of a cell's process directories: ``k-KEY`` for a keyed process (kept:
    a restarted cell looks for it), else a name no other process of this cell has had
    in any of its lives."""

    def __init__(self) -> None:
        self._life = uuid.uuid4().hex[:8]  # names this run's processes apart from others'
        self._count = itertools.count(1)  # next() is atomic: names are taken on threads

    def unique(self) -> str:
        """A name no process of this cell has had."""
        return f"p-{self._life}-{next(self._count)}"

    def of(self, key: str) -> tuple[str, bool]:
        """The name of process ``key`` (unkeyed: a new one) and whether it is kept."""
        return (f"k-{key}", True) if key else (self.unique(), False)


def unrecorded(files: ProcessFiles) -> bool:
    """Whether the process's directory is there but its shim has recorded neither pid
    nor status (blocking): it was being started when the node died, its shim is
    writing its pid file this instant (opened, not yet written), or the node recorded
    a parked shell that has not run its first line (see ``record_pid``)."""
    if not files.dir.is_dir() or exit_status(files) is not None:
        return False
    recorded = recorded_pid(files)
    return recorded is None or recorded[2]


def any_started(procs: Path) -> bool:
    """Whether a process was ever started with its files under ``procs`` (blocking):
    each one's directory is made before its shim starts."""
    try:
        with os.scandir(procs) as entries:
            return any(True for _ in entries)
    except OSError:
        return False


def record_pid(files: ProcessFiles, pid: int, parked: bool = False) -> None:
    """Record ``pid`` (a host pid) and its start time as the shim's (blocking); whole
    or not at all, should the node die as it writes. ``parked``: a shell that will
    become the shim once it reads its text; its shim's first line records it again,
    not parked, so one still parked (and gone) never ran a line of it."""
    record = f"{pid} {start_time(pid)}"
    if parked:  # kept apart too: the shim's own record empties pid as it rewrites it
        _write_whole(files.mine / "parked", record)
    _write_whole(files.pid, record + (" parked" if parked else ""))


def _write_whole(path: Path, text: str) -> None:
    new = path.with_name(path.name + ".new")
    new.write_text(text)
    os.replace(new, path)


def parked_alive(files: ProcessFiles) -> bool:
    """Whether the parked shell the node recorded for the process still runs."""
    try:
        pid, started = (files.mine / "parked").read_text().split()
    except (OSError, ValueError):
        return False
    return start_time(int(pid)) == started


def recorded_pid(files: ProcessFiles) -> tuple[int, str, bool] | None:
    """The shim's pid, start time and whether it is parked as recorded, or None if
    none is (yet)."""
    try:
        pid, started, *rest = files.pid.read_text().split()
        return int(pid), started, rest == ["parked"]
    except (OSError, ValueError):
        return None


def reattached(files: ProcessFiles) -> tuple[Awaitable[int], int] | None:
    """How to follow a process that an earlier run of the node started: its status to
    come and its live pid (0 if it has ended); None if it never started.

    Raises BackendError where that cannot be told: its directory is made before its
    shim starts, so one with neither pid nor status may have run its command (never
    run it twice); and a shim that is gone without a status was killed with it.
    """
    if not files.dir.is_dir():
        return None
    if unrecorded(files):
        raise BackendError("the cell restarted as the process started")
    code = exit_status(files)
    if code is not None:
        return done(code), 0
    live = live_pid(files)
    if live is None:
        raise BackendError("the process ended while the cell was down and left no exit status")
    return status_after(live, files), live


def start_time(pid: int) -> str:
    """When ``pid`` started (clock ticks since boot), or "" if it is gone: a pid
    reused by another process has another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def live_pid(files: ProcessFiles) -> int | None:
    """The shim's pid if it still runs, else None."""
    recorded = recorded_pid(files)
    if recorded is None:
        return None
    pid, started, _ = recorded
    return pid if start_time(pid) == started else None


def exit_status(files: ProcessFiles) -> int | None:
    """The status the shim wrote, or None if it wrote none (yet)."""
    try:
        fd = open_regular(files.exit, os.O_RDONLY)
    except OSError:
        return None
    try:
        return int(os.read(fd, 32))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def open_regular(path: Path, flags: int, mode: int = 0o600) -> int:
    """An fd of ``path`` if it is a regular file, never following a symlink nor blocking
    on a FIFO: what a container can write, it may have replaced."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path} is not a regular file")
    return fd


async def done(code: int) -> int:
    return code


async def status_after(pid: int, files: ProcessFiles) -> int:
    """The status of a shim this node did not start, once it exits (a pidfd tells)."""
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        pidfd = -1
    if pidfd >= 0:
        gone: asyncio.Future[None] = loop.create_future()
        loop.add_reader(pidfd, lambda: None if gone.done() else gone.set_result(None))
        try:
            await gone
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
    code = exit_status(files)
    return 128 + signal.SIGKILL if code is None else code  # killed before it could write


class Lines:
    """Reads one output file as it grows and hands each line to a sink.

    What it has read it frees (``punch``) every PUNCH_AT bytes, always up to the
    start of a line, and records that offset in ``at`` (the node's own file). A
    restarted node, whose log store starts empty, reads the file again from
    there: the output not yet freed comes back whole, no line torn.
    """

    def __init__(self, path: Path, at: Path, sink: OutputSink) -> None:
        # Read and written: freeing blocks (a punched hole) needs a writable fd.
        self.fd = open_regular(path, os.O_RDWR | os.O_CREAT)
        try:
            self.at_fd = os.open(at, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError:
            os.close(self.fd)
            raise
        self.sink = sink
        self.pending = b""
        self.unfreed = 0
        try:
            start = int(os.pread(self.at_fd, 32, 0) or b"0")
        except ValueError:
            start = 0
        os.lseek(self.fd, start, os.SEEK_SET)

    def read(self) -> bool:
        """Hand over what was written since the last read (READ_BUDGET bytes at most);
        whether there was any."""
        got = 0
        while got < READ_BUDGET and (chunk := os.read(self.fd, MAX_LINE)):
            got += len(chunk)
            *lines, self.pending = (self.pending + chunk).split(b"\n")
            for line in lines:
                self.sink(line.decode(errors="replace"))
            while len(self.pending) > MAX_LINE:
                self.sink(self.pending[:MAX_LINE].decode(errors="replace"))
                self.pending = self.pending[MAX_LINE:]
        self.unfreed += got
        if self.unfreed >= PUNCH_AT:
            line_start = os.lseek(self.fd, 0, os.SEEK_CUR) - len(self.pending)
            os.pwrite(self.at_fd, b"%020d" % line_start, 0)  # first, then free
            punch(self.fd, line_start)
            self.unfreed = 0
        return bool(got)

    def close(self, final: bool) -> None:
        """Stop reading; ``final``: the file is complete, so its unended last line is
        handed over (else whoever reads on gets it whole)."""
        if final and self.pending:
            self.sink(self.pending.decode(errors="replace"))
        os.close(self.fd)
        os.close(self.at_fd)


async def tail(
    files: ProcessFiles, sinks: tuple[OutputSink, OutputSink], exited: asyncio.Event
) -> None:
    """Hand the lines of the process's output files to the sinks until it has exited
    and they are read to their end."""
    readers: list[Lines] = []
    try:
        readers += [
            Lines(files.out, files.mine / "out.at", sinks[0]),
            Lines(files.err, files.mine / "err.at", sinks[1]),
        ]
    except OSError as e:  # the container went while the process started
        log.info("output-not-read dir=%s error=%s", files.dir, e)
        for reader in readers:
            reader.close(final=False)
        return
    least, most = TAIL_INTERVALS
    loop = asyncio.get_running_loop()
    eager_until = loop.time() + TAIL_EAGER
    delay = least
    complete = False
    try:
        while True:
            finished = exited.is_set()
            got = [r.read() for r in readers]
            if finished:
                if not any(got):
                    complete = True
                    return
                await asyncio.sleep(0)  # read to the end, a budget at a time
                continue
            quiet = not any(got) and loop.time() > eager_until
            delay = min(delay * 2, most) if quiet else least
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await exited.wait()
    finally:
        for reader in readers:
            reader.close(final=complete)


_FALLOC_PUNCH = 0x01 | 0x02  # FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE


def punch(fd: int, upto: int) -> None:
    """Free the disk blocks of the first ``upto`` bytes of ``fd`` (best effort)."""
    length = upto - upto % 4096
    fallocate = _libc_fallocate()
    nothing = length <= 0 or fallocate is None
    if not nothing and fallocate(fd, _FALLOC_PUNCH, ctypes.c_long(0), ctypes.c_long(length)):
        log.info("output-not-freed error=%s", os.strerror(ctypes.get_errno()))


@functools.cache
def _libc_fallocate() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
