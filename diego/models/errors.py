"""The errors of the domain, each with the name Diego's API gives it.

The API turns them into ``{"name": ..., "message": ...}`` bodies; the CLI and
clients turn such bodies back into these classes.
"""

from __future__ import annotations

from diego.models.codec import Problem


class DiegoError(Exception):
    """An error a caller can act on; ``name`` is its stable, machine-readable name."""

    name = "UnknownError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(DiegoError):
    """The request body is not what the endpoint takes (bad JSON, wrong shape)."""

    name = "InvalidRequest"


class InvalidJSON(InvalidRequest):
    """The request body is not JSON."""

    name = "InvalidJSON"


class InvalidTask(InvalidRequest):
    """A TaskCreateRequest broke one or more rules; ``problems`` names each."""

    name = "InvalidTask"

    def __init__(self, problems: tuple[Problem, ...]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


class TaskNotFound(DiegoError):
    """No Task has that guid."""

    name = "TaskNotFound"

    def __init__(self, task_guid: str) -> None:
        super().__init__(f"task {task_guid!r} not found")
        self.task_guid = task_guid


class TaskGuidAlreadyExists(DiegoError):
    """A Task with that guid exists already."""

    name = "TaskGuidAlreadyExists"

    def __init__(self, task_guid: str) -> None:
        super().__init__(f"a task with guid {task_guid!r} already exists")
        self.task_guid = task_guid


class InvalidStateTransition(DiegoError):
    """The Task is not in a state the verb may move it from."""

    name = "InvalidStateTransition"

    def __init__(self, task_guid: str, before: str, after: str | None) -> None:
        target = f"move to {after}" if after else "be removed"
        super().__init__(f"task {task_guid!r} is {before} and cannot {target}")
        self.task_guid = task_guid
        self.before = before
        self.after = after


class RunningOnDifferentCell(DiegoError):
    """The Task belongs to another cell than the one acting on it."""

    name = "RunningOnDifferentCell"

    def __init__(self, task_guid: str, owner: str, caller: str) -> None:
        super().__init__(f"task {task_guid!r} is on cell {owner!r}, not {caller!r}")
        self.task_guid = task_guid
        self.owner = owner
        self.caller = caller
