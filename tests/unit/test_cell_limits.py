"""max_pids and allow_privileged: the fields' rules, the settings, what reaches a container."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from diego.api.policy import PRIVILEGED_REFUSED, check_policy
from diego.cell.executor import RunRequest, lrp_request
from diego.config import ConfigError, load
from diego.models.codec import InvalidDocument, Problem, decode, encode
from diego.models.errors import InvalidDesiredLRP, InvalidTask
from diego.models.lrp import DesiredLRP
from diego.models.rules import INT32_MAX
from diego.models.task import Task, TaskCreateRequest

TASK: dict[str, Any] = {
    "task_guid": "t1",
    "domain": "tests",
    "stack": "linux",
    "action": {"run": {"path": "/bin/true"}},
}
LRP: dict[str, Any] = {
    "process_guid": "p1",
    "domain": "tests",
    "stack": "linux",
    "action": {"run": {"path": "/bin/true"}},
}
MODELS = [pytest.param(TaskCreateRequest, TASK, id="task"), pytest.param(DesiredLRP, LRP, id="lrp")]


def problems(cls: type[Any], body: dict[str, Any]) -> tuple[Problem, ...]:
    """The problems decoding ``body`` as ``cls`` gives (none if it decodes)."""
    try:
        decode(cls, body)
    except InvalidDocument as e:
        return e.problems
    return ()


@pytest.mark.parametrize(("cls", "base"), MODELS)
@pytest.mark.parametrize(
    ("value", "rule"),
    [
        pytest.param(-1, f"must be between 0 and {INT32_MAX}", id="negative"),
        pytest.param(INT32_MAX + 1, f"must be between 0 and {INT32_MAX}", id="past-int32"),
        pytest.param("20", "must be an integer", id="string"),
        pytest.param(2.5, "must be an integer", id="float"),
        pytest.param(True, "must be an integer", id="bool"),
    ],
)
def test_a_bad_max_pids_is_refused_by_name(
    cls: type[Any], base: dict[str, Any], value: Any, rule: str
) -> None:
    """max_pids is a non-negative int32, as Diego's; anything else is named."""
    assert problems(cls, {**base, "max_pids": value}) == (Problem("max_pids", rule),)


@pytest.mark.parametrize(("cls", "base"), MODELS)
@pytest.mark.parametrize("value", [0, 1, 20, INT32_MAX])
def test_a_max_pids_in_range_is_kept(cls: type[Any], base: dict[str, Any], value: int) -> None:
    """0 (the cell's default) up to the int32 maximum decode, and encode back the same."""
    decoded = decode(cls, {**base, "max_pids": value})
    assert decoded.max_pids == value
    assert decode(cls, encode(decoded)) == decoded


@pytest.mark.parametrize(("cls", "base"), MODELS)
def test_max_pids_absent_is_the_cell_default(cls: type[Any], base: dict[str, Any]) -> None:
    """A document without max_pids (any stored before the field existed) decodes to 0."""
    assert decode(cls, base).max_pids == 0


def test_max_pids_reaches_the_container_spec() -> None:
    """A Task's and an LRP instance's max_pids is their container's; 0 stays 0 for the
    cell to fill with its default."""
    task = Task.new(decode(TaskCreateRequest, {**TASK, "max_pids": 20}), now=1)
    assert RunRequest.for_task(task).spec.max_pids == 20
    desired = decode(DesiredLRP, {**LRP, "max_pids": 30})
    assert lrp_request(desired, 0, "ig").spec.max_pids == 30
    assert lrp_request(decode(DesiredLRP, LRP), 0, "ig").spec.max_pids == 0


def test_cell_settings_default_to_no_privileged_and_1024_pids() -> None:
    """Diego's rep allows no privileged containers unless told to."""
    settings = load(environ={})
    assert settings.cell.allow_privileged is False
    assert settings.cell.max_pids == 1024


def test_cell_settings_from_the_environment() -> None:
    """DIEGO_CELL_ALLOW_PRIVILEGED and DIEGO_CELL_MAX_PIDS take their settings' types."""
    environ = {"DIEGO_CELL_ALLOW_PRIVILEGED": "true", "DIEGO_CELL_MAX_PIDS": "0"}
    settings = load(environ=environ)
    assert settings.cell.allow_privileged is True
    assert settings.cell.max_pids == 0


def test_a_negative_cell_max_pids_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"cell\.max_pids: must be between 0"):
        load(environ={}, overrides={"cell.max_pids": -1})


@pytest.mark.parametrize("error", [InvalidTask, InvalidDesiredLRP])
def test_privileged_work_is_refused_unless_allowed(
    error: type[InvalidTask | InvalidDesiredLRP],
) -> None:
    """Privileged and not allowed: the error names the field and the setting."""
    with pytest.raises(error) as caught:
        check_policy(_Work(True, 0), _Cell(False, 1024), error)
    assert caught.value.problems == (Problem("privileged", PRIVILEGED_REFUSED),)
    assert "[cell] allow_privileged = false" in caught.value.message
    check_policy(_Work(True, 0), _Cell(True, 1024), error)
    check_policy(_Work(False, 0), _Cell(False, 1024), error)


@pytest.mark.parametrize("error", [InvalidTask, InvalidDesiredLRP])
def test_max_pids_over_the_cells_is_refused_naming_both(
    error: type[InvalidTask | InvalidDesiredLRP],
) -> None:
    """Over the cell's max_pids: the error names the field and the setting; at it, or
    with a cell of no limit, it passes; both problems are named at once."""
    with pytest.raises(error) as caught:
        check_policy(_Work(True, 2000), _Cell(False, 1024), error)
    assert caught.value.problems == (
        Problem("privileged", PRIVILEGED_REFUSED),
        Problem("max_pids", "must be at most 1024 ([cell] max_pids)"),
    )
    check_policy(_Work(False, 1024), _Cell(False, 1024), error)
    check_policy(_Work(False, 10**6), _Cell(False, 0), error)


@attrs.frozen
class _Work:
    privileged: bool
    max_pids: int


@attrs.frozen
class _Cell:
    allow_privileged: bool
    max_pids: int
