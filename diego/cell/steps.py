"""The action tree, performed in a container.

``perform(action, ctx)`` runs one action and its children. Success returns;
failure raises ``StepFailed`` with the reason worded as Diego words it
(``Exited with status 3``, ``exceeded 5s timeout``). Cancellation (a timeout, a
codependent sibling failing, the Task being cancelled) arrives as
``asyncio.CancelledError`` and kills the step's processes on its way out.

With a journal in the context (``diego.cell.journal``) every step is keyed by its
path in the tree and its end recorded, so a restarted cell resumes the tree: the
steps that ended are not performed again, and a run step that had started is
attached to, not started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import attrs

from diego.cell.backends.base import Backend, BackendError, Process, ProcessSpec, kill_and_wait
from diego.cell.journal import Journal
from diego.cell.transfer import TransferError, Transfers, as_tar, extract_first_file, file_name_of
from diego.models.actions import (
    Action,
    CodependentAction,
    DownloadAction,
    EmitProgressAction,
    ParallelAction,
    RunAction,
    SerialAction,
    TimeoutAction,
    TryAction,
    UploadAction,
)

LogFn = Callable[[str, str, str], None]
"""log(source, stream, message): one line into the Task's log."""


class StepFailed(Exception):
    """An action failed; ``reason`` is the failure_reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen
class StepContext:
    """What the steps of one container need."""

    backend: Backend
    guid: str
    log: LogFn
    transfers: Transfers
    scratch: Path  # a host directory for this container's transfers
    source: str  # the default log source
    journal: Journal | None = None  # where a resumable tree records its steps


async def perform(
    action: Action, ctx: StepContext, source: str | None = None, key: str = "0"
) -> None:
    """Run ``action`` (step ``key`` of the tree) in the container; raise StepFailed
    if it fails."""
    journal = ctx.journal
    if journal is None:
        await _perform(action, ctx, source, key)
        return
    ended = journal.outcome(key)
    if ended is not None:  # in an earlier run of the cell
        if ended:
            raise StepFailed(ended)
        return
    try:
        await _perform(action, ctx, source, key)
    except StepFailed as e:
        journal.ended(key, e.reason)
        raise
    journal.ended(key, "")


async def _perform(action: Action, ctx: StepContext, source: str | None, key: str) -> None:
    source = action.log_source or source or ctx.source
    match action:
        case RunAction():
            await _run(action, ctx, source, key)
        case DownloadAction():
            await _download(action, ctx, source)
        case UploadAction():
            await _upload(action, ctx, source)
        case TimeoutAction():
            await _timeout(action, ctx, source, key)
        case SerialAction():
            for i, child in enumerate(action.actions):
                await perform(child, ctx, source, f"{key}.{i}")
        case ParallelAction():
            await _parallel(action, ctx, source, key)
        case CodependentAction():
            await _codependent(action, ctx, source, key)
        case TryAction():
            try:
                await perform(action.action, ctx, source, f"{key}.0")
            except StepFailed as e:
                ctx.log(source, "OUT", f"Failed to run: {e.reason}; carrying on")
        case EmitProgressAction():
            await _emit_progress(action, ctx, source, key)


async def _run(action: RunAction, ctx: StepContext, source: str, key: str) -> None:
    def sink(stream: str) -> Callable[[str], None]:
        if action.suppress_log_output:
            return lambda _line: None
        return functools.partial(ctx.log, source, stream)

    spec = ProcessSpec(
        path=action.path,
        args=action.args,
        dir=action.dir,
        env=tuple((e.name, e.value) for e in action.env),
        user=action.user,
        nofile=action.resource_limits.nofile if action.resource_limits else None,
        key=key if ctx.journal is not None else "",
    )
    # A spawn is never abandoned half way: cancelled inside it, asyncio would
    # kill only the direct child and wait for pipes a surviving sandbox holds.
    spawn = asyncio.ensure_future(_start(ctx, spec, sink("OUT"), sink("ERR")))
    try:
        process = await asyncio.shield(spawn)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await kill_and_wait(await spawn)
        raise
    except StepFailed:
        raise
    except BackendError as e:
        raise StepFailed(f"failed to start {action.path}: {e}") from None
    try:
        status = await process.wait()
    except asyncio.CancelledError:
        await kill_and_wait(process)
        raise
    if status != 0:
        reason = f"Exited with status {status}"
        if ctx.backend.out_of_memory(ctx.guid):
            reason += " (out of memory)"
        max_pids = ctx.backend.pids_limit_reached(ctx.guid)
        if max_pids:
            reason += f" (process limit of {max_pids} reached)"
        if not action.suppress_log_output:
            ctx.log(source, "OUT", reason)
        raise StepFailed(reason)


async def _start(
    ctx: StepContext,
    spec: ProcessSpec,
    stdout: Callable[[str], None],
    stderr: Callable[[str], None],
) -> Process:
    """Start the step's process; or, resuming, find the one an earlier run started."""
    if ctx.journal is not None and ctx.journal.resumed:
        try:
            attached = await ctx.backend.attach(ctx.guid, spec.key, stdout, stderr)
        except BackendError as e:
            raise StepFailed(f"interrupted: {e}") from None
        if attached is not None:
            return attached
    return await ctx.backend.run(ctx.guid, spec, stdout, stderr)


async def _download(action: DownloadAction, ctx: StepContext, source: str) -> None:
    token = uuid.uuid4().hex  # parallel transfers must not share files
    fetched = ctx.scratch / f"download-{token}"
    tar = ctx.scratch / f"download-{token}.tar"
    try:
        size = await ctx.transfers.fetch(
            action.from_, fetched, action.checksum_algorithm, action.checksum_value
        )
        await asyncio.to_thread(as_tar, fetched, file_name_of(action.from_), tar)
        await ctx.backend.stream_in(ctx.guid, action.to, tar)
    except (TransferError, BackendError, OSError) as e:
        raise StepFailed(f"Downloading failed: {e}") from None
    finally:
        for path in (fetched, tar):
            path.unlink(missing_ok=True)
    if action.artifact:
        ctx.log(source, "OUT", f"Downloaded {action.artifact} ({_size(size)})")


async def _upload(action: UploadAction, ctx: StepContext, source: str) -> None:
    token = uuid.uuid4().hex
    tar = ctx.scratch / f"upload-{token}.tar"
    single = ctx.scratch / f"upload-{token}"
    try:
        await ctx.backend.stream_out(ctx.guid, action.from_, tar)
        await asyncio.to_thread(extract_first_file, tar, single)
        size = await ctx.transfers.send(single, action.to)
    except (TransferError, BackendError, OSError) as e:
        raise StepFailed(f"Uploading failed: {e}") from None
    finally:
        for path in (tar, single):
            path.unlink(missing_ok=True)
    if action.artifact:
        ctx.log(source, "OUT", f"Uploaded {action.artifact} ({_size(size)})")


async def _timeout(action: TimeoutAction, ctx: StepContext, source: str, key: str) -> None:
    seconds = action.timeout_ms / 1000
    if ctx.journal is not None:  # a resumed timeout keeps the deadline it began with
        now = time.time()
        seconds -= now - ctx.journal.began(key, now)
    limit = asyncio.timeout(max(0.0, seconds))
    try:
        async with limit:
            await perform(action.action, ctx, source, f"{key}.0")
    except TimeoutError:
        if not limit.expired():
            raise
        reason = f"exceeded {go_duration(action.timeout_ms)} timeout"
        ctx.log(source, "OUT", reason)
        raise StepFailed(reason) from None


async def _parallel(action: ParallelAction, ctx: StepContext, source: str, key: str) -> None:
    results = await asyncio.gather(
        *(perform(child, ctx, source, f"{key}.{i}") for i, child in enumerate(action.actions)),
        return_exceptions=True,
    )
    reasons = []
    for result in results:
        if isinstance(result, StepFailed):
            reasons.append(result.reason)
        elif isinstance(result, BaseException):
            raise result
    if reasons:
        raise StepFailed("; ".join(reasons))


async def _codependent(action: CodependentAction, ctx: StepContext, source: str, key: str) -> None:
    first: BaseException | None = None
    try:
        async with asyncio.TaskGroup() as group:
            for i, child in enumerate(action.actions):
                group.create_task(perform(child, ctx, source, f"{key}.{i}"))
    except* StepFailed as failures:
        # The first failure cancelled the rest; it is the reason.
        first = failures.exceptions[0]
    # Raised here, not inside except*: Python before 3.11.4 wraps an exception
    # raised in an except* block in a new ExceptionGroup.
    if isinstance(first, StepFailed):
        raise StepFailed(first.reason)


async def _emit_progress(
    action: EmitProgressAction, ctx: StepContext, source: str, key: str
) -> None:
    if action.start_message:
        ctx.log(source, "OUT", action.start_message)
    try:
        await perform(action.action, ctx, source, f"{key}.0")
    except StepFailed as e:
        if action.failure_message_prefix:
            ctx.log(source, "ERR", f"{action.failure_message_prefix}: {e.reason}")
        raise
    if action.success_message:
        ctx.log(source, "OUT", action.success_message)


def go_duration(ms: int) -> str:
    """A duration as Go prints it (Diego's messages do): 500ms, 5s, 1m30s, 2h0m0s."""
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{minutes}m{seconds}"
    return seconds


def _size(n: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n}B"
