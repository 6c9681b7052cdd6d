"""What a TES task's run tells the node that serves it, read on the control side.

The cell's TES job (``diego.cell.tes_job``) writes its executors' output and its own
lines (which executor started, how it exited) to the log, and its report as the
internal Task's result; the TES service (``diego.tes``) reads them back here. Both
sides meet in these formats only.
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Iterable
from typing import Any

from diego.models.logs import LogLine
from diego.models.tes import TesExecutorLog, rfc3339

TES_SOURCE = "TES"
"""The log source of a TES task's own lines: which executor started, how it exited."""


def executor_started(index: int) -> str:
    """The TES source's line when executor ``index`` starts."""
    return f"executor {index} started"


def executor_exited(index: int, status: int) -> str:
    """The TES source's line when executor ``index`` exits with ``status``."""
    return f"executor {index} exited with status {status}"


_STARTED = re.compile(r"executor (\d+) started")
_EXITED = re.compile(r"executor (\d+) exited with status (-?\d+)")
_EXECUTOR_SOURCE = re.compile(r"TES-EXEC-(\d+)")


def executor_source(index: int) -> str:
    """The log source of executor ``index``'s own output."""
    return f"TES-EXEC-{index}"


def logs_of_lines(
    lines: Iterable[LogLine], tail_bytes: int, now: int
) -> tuple[TesExecutorLog, ...]:
    """The executor logs that a TES task's log lines tell, for a task that ended with no
    report (cancelled): one for each executor up to the last that started, with its
    times, its exit code and the end of its stdout and stderr. The one that was killed
    has no exit code and ends ``now``. Lines the log store no longer keeps are missing."""
    started: dict[int, int] = {}
    exited: dict[int, tuple[int, int]] = {}
    output: dict[tuple[int, str], list[str]] = collections.defaultdict(list)
    for line in lines:
        if line.source_type == TES_SOURCE:
            if match := _STARTED.fullmatch(line.message):
                started[int(match[1])] = line.timestamp
            elif match := _EXITED.fullmatch(line.message):
                exited[int(match[1])] = (line.timestamp, int(match[2]))
        elif match := _EXECUTOR_SOURCE.fullmatch(line.source_type):
            index = int(match[1])
            started.setdefault(index, line.timestamp)
            output[index, line.stream].append(line.message)
    if not started:
        return ()

    def log_of(index: int) -> TesExecutorLog:
        end, status = exited.get(index, (now, None))
        start = started.get(index)
        text = {
            stream: "".join(f"{m}\n" for m in output[index, stream])[-tail_bytes:]
            if tail_bytes
            else ""
            for stream in ("OUT", "ERR")
        }
        return TesExecutorLog(
            start_time=rfc3339(start) if start is not None else None,
            end_time=rfc3339(end),
            stdout=text["OUT"],
            stderr=text["ERR"],
            exit_code=status,
        )

    return tuple(log_of(i) for i in range(max(started) + 1))


def report_of(result: str) -> dict[str, Any] | None:
    """A TES report read back from a Task's result, or None if it is not one."""
    try:
        data = json.loads(result)
    except ValueError:
        return None
    return data if isinstance(data, dict) and "state" in data else None
