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


class InvalidFields(InvalidRequest):
    """A document broke one or more rules; ``problems`` names each, by field path."""

    def __init__(self, problems: tuple[Problem, ...]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


class InvalidTask(InvalidFields):
    """A TaskCreateRequest broke one or more rules."""

    name = "InvalidTask"


class InvalidDesiredLRP(InvalidFields):
    """A DesiredLRP, or an update of one, broke one or more rules."""

    name = "InvalidDesiredLRP"


class InvalidDomain(InvalidFields):
    """A domain's freshness (its ttl) broke a rule."""

    name = "InvalidDomain"


class InvalidArguments(InvalidFields):
    """A call of the BBS's internal API for cells broke the verb's arguments."""

    name = "InvalidArguments"


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


class DesiredLRPNotFound(DiegoError):
    """No DesiredLRP has that process guid."""

    name = "DesiredLRPNotFound"

    def __init__(self, process_guid: str) -> None:
        super().__init__(f"desired lrp {process_guid!r} not found")
        self.process_guid = process_guid


class DesiredLRPAlreadyExists(DiegoError):
    """A DesiredLRP with that process guid exists already."""

    name = "DesiredLRPAlreadyExists"

    def __init__(self, process_guid: str) -> None:
        super().__init__(f"a desired lrp with process guid {process_guid!r} already exists")
        self.process_guid = process_guid


def _instance(process_guid: str, index: int, evacuating: bool) -> str:
    return f"actual lrp {process_guid!r} index {index}" + (" (evacuating)" if evacuating else "")


class ActualLRPNotFound(DiegoError):
    """No ActualLRP at that process guid and index (or no evacuating one there)."""

    name = "ActualLRPNotFound"

    def __init__(self, process_guid: str, index: int, evacuating: bool = False) -> None:
        super().__init__(f"{_instance(process_guid, index, evacuating)} not found")
        self.process_guid = process_guid
        self.index = index
        self.evacuating = evacuating


class ActualLRPAlreadyExists(DiegoError):
    """An ActualLRP exists already at that process guid and index."""

    name = "ActualLRPAlreadyExists"

    def __init__(self, process_guid: str, index: int, evacuating: bool = False) -> None:
        super().__init__(f"{_instance(process_guid, index, evacuating)} already exists")
        self.process_guid = process_guid
        self.index = index
        self.evacuating = evacuating


class InvalidActualLRPTransition(DiegoError):
    """The ActualLRP is not in a state the verb may move it from."""

    name = "InvalidActualLRPTransition"

    def __init__(self, process_guid: str, index: int, before: str, after: str | None) -> None:
        target = f"move to {after}" if after else "be removed"
        super().__init__(f"{_instance(process_guid, index, False)} is {before} and cannot {target}")
        self.process_guid = process_guid
        self.index = index
        self.before = before
        self.after = after


class ActualLRPOnDifferentCell(DiegoError):
    """The ActualLRP belongs to another instance (instance guid and cell) than the caller's."""

    name = "ActualLRPOnDifferentCell"

    def __init__(
        self,
        process_guid: str,
        index: int,
        *,
        owner: tuple[str, str],
        caller: tuple[str, str | None],
        evacuating: bool = False,
    ) -> None:
        """``owner`` and ``caller`` are (instance_guid, cell_id); a None cell was not asked."""

        def who(instance_guid: str, cell_id: str | None) -> str:
            where = "" if cell_id is None else f" on cell {cell_id!r}"
            return f"instance {instance_guid!r}{where}"

        super().__init__(
            f"{_instance(process_guid, index, evacuating)} is {who(*owner)}, not {who(*caller)}"
        )
        self.process_guid = process_guid
        self.index = index
        self.evacuating = evacuating
        self.owner_instance_guid, self.owner_cell_id = owner
        self.caller_instance_guid, self.caller_cell_id = caller


class CellNotFound(DiegoError):
    """No cell has that id."""

    name = "CellNotFound"


class TesTaskNotFound(DiegoError):
    """No GA4GH TES task has that id."""

    name = "TesTaskNotFound"

    def __init__(self, task_id: str) -> None:
        super().__init__(f"tes task {task_id!r} not found")
        self.task_id = task_id


class TesTaskAlreadyExists(DiegoError):
    """A GA4GH TES task with that id exists already."""

    name = "TesTaskAlreadyExists"

    def __init__(self, task_id: str) -> None:
        super().__init__(f"a tes task with id {task_id!r} already exists")
        self.task_id = task_id


class CellUnreachable(DiegoError):
    """A cell on another machine did not answer, or answered what is not its rep
    API's answer."""

    name = "CellUnreachable"
