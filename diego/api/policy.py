"""What the node's operator allows, checked at create time before anything is stored."""

from __future__ import annotations

from typing import Protocol

from diego.models.codec import Problem
from diego.models.errors import InvalidFields

PRIVILEGED_REFUSED = (
    "not allowed: this node's cells run no privileged containers ([cell] allow_privileged = false)"
)


class Work(Protocol):
    """What the policy reads of a Task or an LRP."""

    @property
    def privileged(self) -> bool: ...

    @property
    def max_pids(self) -> int: ...


class CellPolicy(Protocol):
    """What the operator allows, of the ``[cell]`` settings."""

    @property
    def allow_privileged(self) -> bool: ...

    @property
    def max_pids(self) -> int: ...


def check_policy(work: Work, cell: CellPolicy, error: type[InvalidFields]) -> None:
    """``error`` naming each field the operator does not allow, before anything is stored.

    A privileged container's root is the cell machine's root; the operator decides
    with ``[cell] allow_privileged`` (off by default, as Diego's rep). ``[cell]
    max_pids`` is the process limit of work that names none and the most any may
    name: a submitter cannot lift it.
    """
    problems = []
    if work.privileged and not cell.allow_privileged:
        problems.append(Problem("privileged", PRIVILEGED_REFUSED))
    if cell.max_pids and work.max_pids > cell.max_pids:
        rule = f"must be at most {cell.max_pids} ([cell] max_pids)"
        problems.append(Problem("max_pids", rule))
    if problems:
        raise error(tuple(problems))
