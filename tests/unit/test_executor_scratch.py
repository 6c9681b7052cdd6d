"""Which containers need a host scratch directory (made and removed only for those)."""

from __future__ import annotations

from typing import Any

import pytest

from diego.cell.executor import RunRequest, _uses_scratch
from diego.models.codec import decode
from diego.models.task import Task, TaskCreateRequest

RUN = {"run": {"path": "/bin/true"}}
DOWNLOAD = {"download": {"from": "http://example.com/a.tgz", "to": "/tmp"}}
UPLOAD = {"upload": {"from": "/tmp/out", "to": "http://example.com/out"}}


def request(action: dict[str, Any], **extra: Any) -> RunRequest:
    """The RunRequest of a Task running ``action``."""
    body = {"task_guid": "t", "domain": "d", "stack": "linux", "action": action, **extra}
    return RunRequest.for_task(Task.new(decode(TaskCreateRequest, body), 1))


@pytest.mark.parametrize(
    "action",
    [
        DOWNLOAD,
        {"serial": {"actions": [RUN, UPLOAD]}},
        {"timeout": {"action": {"try": {"action": DOWNLOAD}}, "timeout_ms": 1000}},
        {"parallel": {"actions": [RUN, {"codependent": {"actions": [RUN, UPLOAD]}}]}},
        {"emit_progress": {"action": DOWNLOAD}},
    ],
)
def test_a_transfer_anywhere_in_the_tree_needs_scratch(action: dict[str, Any]) -> None:
    """Downloads and uploads go through the scratch directory, however deeply nested."""
    assert _uses_scratch(request(action))


def test_a_result_file_needs_scratch() -> None:
    """The result file comes out of the container as a tar in the scratch directory."""
    assert _uses_scratch(request(RUN, result_file="/home/vcap/answer"))


def test_runs_alone_need_no_scratch() -> None:
    """A Task of run actions only makes no directory on the host."""
    assert not _uses_scratch(request({"serial": {"actions": [RUN, {"try": {"action": RUN}}]}}))
