"""A GA4GH TES task's life in its container: inputs in, executors in order, outputs out.

The cell runs a TES task from its TES document, not from a Diego action tree: TES
needs what an action tree cannot say (a file put at an exact path, stdin and
stdout redirected to files, a failing executor that may be ignored, outputs
matched by wildcard) and what it cannot report (each executor's times, exit code
and output tails, each output file's size). The outcome is a :class:`TesReport`,
which the executor stores as the internal Task's result for the TES layer to read.

Every file crosses the container boundary as a tar stream through the backend,
as Diego's download and upload actions do, and every URL goes through the same
storage (file, http(s), s3).

With a journal (``diego.cell.journal``) the job records each part as it ends: an
input put in place, an executor's log, an output's file logs. A cell killed and
restarted runs the job again with that journal: what ended is not done again (an
executor's log is read back), an executor that had started is attached to, never
started twice, and the rest runs as it would have.
"""

# Scratch files are the cell's own disk, written in chunks: cheaper than threads.
# ruff: noqa: ASYNC240

from __future__ import annotations

import asyncio
import collections
import fnmatch
import json
import posixpath
import shutil
import tarfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from diego.cell.backends.base import Backend, BackendError, Process, ProcessSpec, kill_and_wait
from diego.cell.journal import Journal
from diego.cell.transfer import TransferError, Transfers, extract_first_file, tar_as
from diego.models.codec import decode_trusted, encode
from diego.models.tes import (
    TesExecutor,
    TesExecutorLog,
    TesFileType,
    TesInput,
    TesOutput,
    TesOutputFileLog,
    TesState,
    TesTask,
    is_wildcard,
    rfc3339,
)
from diego.models.tes_report import (
    TES_SOURCE,
    executor_exited,
    executor_source,
    executor_started,
)

DEFAULT_TAIL_BYTES = 10 * 1024
"""How much of an executor's stdout and stderr its log keeps (the end)."""

SHELLS = {"docker": ("/.diego/busybox", "sh"), "local": ("/bin/sh",)}
"""The shell each backend offers every container, for redirections."""

REDIRECT = (
    'in="$1" out="$2" err="$3"; shift 3; '
    '[ -z "$out" ] || exec >"$out"; [ -z "$err" ] || exec 2>"$err"; '
    'exec "$@" <"${in:-/dev/null}"'
)
"""Redirects only the streams named, so a stream left alone stays the pipe the cell
reads: reopening /dev/stderr inside a sandbox of another uid is refused."""


@attrs.frozen
class TesReport:
    """What a TES task's run came to: its end state and the logs of the attempt."""

    state: TesState
    start_time: str
    end_time: str
    logs: tuple[TesExecutorLog, ...] = ()
    outputs: tuple[TesOutputFileLog, ...] = ()
    system_logs: tuple[str, ...] = ()
    failure_reason: str = ""

    def to_json(self) -> str:
        """The report as the internal Task's result."""
        return json.dumps(
            {
                "state": self.state.value,
                "start_time": self.start_time,
                "end_time": self.end_time,
                "logs": [encode(log) for log in self.logs],
                "outputs": [encode(out) for out in self.outputs],
                "system_logs": list(self.system_logs),
                "failure_reason": self.failure_reason,
            }
        )


class _SystemError(Exception):
    """The task cannot go on for a reason that is not its executors' doing."""


@attrs.define
class TesJob:
    """One TES task in one container."""

    task: TesTask
    backend: Backend
    guid: str
    transfers: Transfers
    scratch: Path
    use_images: bool
    log: Callable[[str, str, str], None] = lambda _source, _stream, _line: None
    tail_bytes: int = DEFAULT_TAIL_BYTES
    clock: Callable[[], int] = time.time_ns
    journal: Journal | None = None
    """Where the job records what of it has ended, for a restarted cell to go on."""
    system_logs: list[str] = attrs.Factory(list)

    async def run(self) -> TesReport:
        """Inputs, executors and outputs; the report (never raises for the task's faults)."""
        start = rfc3339(self._began("tes"))
        if not self.use_images:
            images = ", ".join(sorted({e.image for e in self.task.executors}))
            self.system_logs.append(
                f"this cell has no Docker: executors ran on the cell's own root, "
                f"not in their images ({images})"
            )
        logs: list[TesExecutorLog] = []
        outputs: list[TesOutputFileLog] = []
        state, reason = TesState.COMPLETE, ""
        try:
            for i, item in enumerate(self.task.inputs):
                await self._input(i, item)
            state, reason = await self._executors(logs)
            if state is TesState.COMPLETE:
                for i, out in enumerate(self.task.outputs):
                    outputs += await self._output(i, out)
        except _SystemError as e:
            state, reason = TesState.SYSTEM_ERROR, str(e)
            self.system_logs.append(reason)
        return TesReport(
            state=state,
            start_time=start,
            end_time=rfc3339(self.clock()),
            logs=tuple(logs),
            outputs=tuple(outputs),
            system_logs=tuple(self.system_logs),
            failure_reason=reason,
        )

    # ------------------------------------------------------------ inputs

    def _began(self, key: str) -> int:
        """When part ``key`` first began: now, or when an earlier life of the cell began it."""
        now = self.clock()
        return now if self.journal is None else int(self.journal.began(key, now))

    def _recorded(self, key: str) -> Any:
        """What part ``key`` recorded as it ended (JSON data), or None if it has not."""
        outcome = None if self.journal is None else self.journal.outcome(key)
        return None if outcome is None else json.loads(outcome)

    def _record(self, key: str, data: Any) -> None:
        if self.journal is not None:
            self.journal.ended(key, json.dumps(data))

    async def _input(self, index: int, item: TesInput) -> None:
        key = f"tes.in.{index}"
        if self._recorded(key) is not None:
            return  # put in place before the cell restarted
        where = f"inputs[{index}] ({item.url or 'content'} -> {item.path})"
        token = uuid.uuid4().hex
        fetched = self.scratch / f"in-{token}"
        tar = self.scratch / f"in-{token}.tar"
        name = posixpath.basename(item.path.rstrip("/")) or "input"
        try:
            if item.content is not None:
                fetched.write_text(item.content)
            elif item.type is TesFileType.DIRECTORY:
                fetched.mkdir()
                await self.transfers.fetch_tree(str(item.url), fetched)
            else:
                await self.transfers.fetch(str(item.url), fetched)
            await asyncio.to_thread(tar_as, fetched, name, tar)
            await self.backend.stream_in(self.guid, posixpath.dirname(item.path) or "/", tar)
        except (TransferError, BackendError, OSError) as e:
            raise _SystemError(f"{where}: {e}") from None
        finally:
            _remove(tar, fetched)
        self._record(key, True)

    # ------------------------------------------------------------ executors

    async def _executors(self, logs: list[TesExecutorLog]) -> tuple[TesState, str]:
        for index, executor in enumerate(self.task.executors):
            recorded = self._recorded(f"tes.exec.{index}")
            if recorded is not None:  # it ended before the cell restarted
                log = decode_trusted(TesExecutorLog, recorded)
            else:
                log = await self._execute(index, executor)
            logs.append(log)
            if log.exit_code and not executor.ignore_error:
                return TesState.EXECUTOR_ERROR, (
                    f"executor {index} ({executor.image}) exited with status {log.exit_code}"
                )
        return TesState.COMPLETE, ""

    async def _execute(self, index: int, executor: TesExecutor) -> TesExecutorLog:
        tails = {"OUT": _Tail(self.tail_bytes), "ERR": _Tail(self.tail_bytes)}
        source = executor_source(index)

        def sink(stream: str) -> Callable[[str], None]:
            def take(line: str) -> None:
                tails[stream].add(line)
                self.log(source, stream, line)

            return take

        key = f"tes.exec.{index}"
        process = self._process(executor, key if self.journal is not None else "")
        start = rfc3339(self._began(key))
        self.log(TES_SOURCE, "OUT", executor_started(index))
        running = await self._start(index, process, sink("OUT"), sink("ERR"))
        try:
            status = await running.wait()
        except asyncio.CancelledError:
            await kill_and_wait(running)  # its output up to the kill is its log
            raise
        end = rfc3339(self.clock())
        self.log(TES_SOURCE, "OUT", executor_exited(index, status))
        stdout = await self._tail_of(executor.stdout) if executor.stdout else tails["OUT"].text()
        stderr = await self._tail_of(executor.stderr) if executor.stderr else tails["ERR"].text()
        log = TesExecutorLog(
            start_time=start, end_time=end, stdout=stdout, stderr=stderr, exit_code=status
        )
        self._record(key, encode(log))
        return log

    async def _start(
        self,
        index: int,
        process: ProcessSpec,
        stdout: Callable[[str], None],
        stderr: Callable[[str], None],
    ) -> Process:
        """Start executor ``index``; or, resuming, find the one an earlier life started."""
        resumed = self.journal is not None and self.journal.resumed
        try:
            if resumed:
                attached = await self.backend.attach(self.guid, process.key, stdout, stderr)
                if attached is not None:
                    return attached
            return await self.backend.run(self.guid, process, stdout, stderr)
        except BackendError as e:
            verb = "interrupted" if resumed else "failed to start"
            raise _SystemError(f"executors[{index}]: {verb}: {e}") from None

    def _process(self, executor: TesExecutor, key: str) -> ProcessSpec:
        command = list(executor.command)
        if executor.stdin or executor.stdout or executor.stderr:
            shell = SHELLS.get(self.backend.capabilities().backend, ("/bin/sh",))
            command = [
                *shell,
                "-c",
                REDIRECT,
                "tes",
                executor.stdin or "",
                executor.stdout or "",
                executor.stderr or "",
                *command,
            ]
        return ProcessSpec(
            path=command[0],
            args=tuple(command[1:]),
            dir=executor.workdir or "",
            env=tuple(executor.env.items()),
            image=executor.image if self.use_images else "",
            key=key,
        )

    async def _tail_of(self, path: str) -> str:
        """The end of a file an executor redirected its output to ("" if unreadable)."""
        tar = self.scratch / f"tail-{uuid.uuid4().hex}.tar"
        try:
            await self.backend.stream_out(self.guid, path, tar)
            return await asyncio.to_thread(_tail_of_tar, tar, self.tail_bytes)
        except (BackendError, OSError, tarfile.TarError):
            return ""
        finally:
            tar.unlink(missing_ok=True)

    # ------------------------------------------------------------ outputs

    async def _output(self, index: int, out: TesOutput) -> list[TesOutputFileLog]:
        key = f"tes.out.{index}"
        recorded = self._recorded(key)
        if recorded is not None:  # stored before the cell restarted
            return [decode_trusted(TesOutputFileLog, sent) for sent in recorded]
        sent = await self._send_output(index, out)
        self._record(key, [encode(log) for log in sent])
        return sent

    async def _send_output(self, index: int, out: TesOutput) -> list[TesOutputFileLog]:
        where = f"outputs[{index}] ({out.path} -> {out.url})"
        token = uuid.uuid4().hex
        tar = self.scratch / f"out-{token}.tar"
        tree = self.scratch / f"out-{token}"
        source = _literal_dir(out.path) if is_wildcard(out.path) else out.path
        try:
            await self.backend.stream_out(self.guid, source, tar)
            if out.type is TesFileType.FILE and not is_wildcard(out.path):
                await asyncio.to_thread(extract_first_file, tar, tree)
                size = await self.transfers.send(tree, out.url)
                return [TesOutputFileLog(url=out.url, path=out.path, size_bytes=str(size))]
            tree.mkdir()
            await asyncio.to_thread(_extract_tree, tar, tree)
            top = tree / posixpath.basename(source.rstrip("/"))
            if is_wildcard(out.path):
                return await self._send_matches(out, source, top)
            sent = await self.transfers.send_tree(top, out.url)
            return [
                TesOutputFileLog(url=url, path=_path_of(out, url), size_bytes=str(size))
                for url, size in sent
            ]
        except (TransferError, BackendError, OSError, tarfile.TarError) as e:
            raise _SystemError(f"{where}: {e}") from None
        finally:
            _remove(tar, tree)

    async def _send_matches(self, out: TesOutput, source: str, top: Path) -> list[TesOutputFileLog]:
        """Upload every file below ``top`` whose container path matches ``out.path``: to
        ``out.url`` + its path less ``path_prefix``."""
        prefix = out.path_prefix or ""
        sent = []
        for file in sorted(p for p in top.rglob("*") if p.is_file() and not p.is_symlink()):
            inside = posixpath.join(source, file.relative_to(top).as_posix())
            if not fnmatch.fnmatchcase(inside, out.path):
                continue
            url = out.url.rstrip("/") + "/" + inside.removeprefix(prefix).lstrip("/")
            size = await self.transfers.send(file, url)
            sent.append(TesOutputFileLog(url=url, path=inside, size_bytes=str(size)))
        return sent


class _Tail:
    """The last ``limit`` bytes of a stream of lines."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lines: collections.deque[str] = collections.deque()
        self.size = 0

    def add(self, line: str) -> None:
        self.lines.append(line)
        self.size += len(line) + 1
        while self.size > self.limit and len(self.lines) > 1:
            self.size -= len(self.lines.popleft()) + 1

    def text(self) -> str:
        return "".join(f"{line}\n" for line in self.lines)[-self.limit :]


def _remove(*paths: Path) -> None:
    """Remove scratch files and directories, whichever each is, if they exist."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _extract_tree(tar: Path, into: Path) -> None:
    """Unpack the regular files and directories of ``tar`` below ``into``; links and
    names climbing out are skipped (what a container sends is not trusted)."""
    root = into.resolve()
    with tarfile.open(tar) as archive:
        for member in archive:
            target = (root / member.name).resolve()
            if target != root and root not in target.parents:
                continue
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                data = archive.extractfile(member)
                assert data is not None
                with open(target, "wb") as out:
                    shutil.copyfileobj(data, out)


def _tail_of_tar(tar: Path, limit: int) -> str:
    with tarfile.open(tar) as archive:
        for member in archive:
            if member.isfile():
                data = archive.extractfile(member)
                assert data is not None
                if member.size > limit:
                    data.seek(member.size - limit)
                return data.read().decode(errors="replace")
    return ""


def _literal_dir(path: str) -> str:
    """The directory holding the part of a wildcard path before its first wildcard."""
    head = path[: min(path.index(c) for c in "*?[" if c in path)]
    return posixpath.dirname(head) or "/"


def _path_of(out: TesOutput, url: str) -> str:
    """The container path of a file of a DIRECTORY output, from the URL it went to."""
    base = out.url.rstrip("/")
    return posixpath.join(out.path, url[len(base) :].lstrip("/")) if url.startswith(base) else url
