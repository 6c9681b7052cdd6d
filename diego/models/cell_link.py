"""The wire of the BBS verbs a cell's rep calls: what each takes and answers, as JSON.

Both sides read this one table: the BBS's internal API (``diego.api.bbs_for_cells``)
decodes a call's arguments and encodes its answer by it, and the rep's HTTP client
(``diego.cell.bbs_http``) the other way round. A verb is ``POST`` to
``/internal/bbs/v1/VERB`` with a JSON object of its arguments; the answer is
``{"result": ...}``, or an error body naming the domain error, which the client
raises as the same class (``error_data`` and ``error_from_data``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from diego.models import errors
from diego.models.cells import CellPresence
from diego.models.codec import InvalidDocument, Problem, decode, encode
from diego.models.logs import LogBatch
from diego.models.lrp import ActualLRP, DesiredLRP
from diego.models.task import Task
from diego.models.tes import TesTask

PREFIX = "/internal/bbs/v1"
"""Where the BBS serves the verbs of its cells."""
REP_PREFIX = "/internal/rep/v1/cells"
"""Where a cell node serves the rep API of each of its cells (``diego.cell.rep_api``)."""


@attrs.frozen
class TaskCancel:
    """The body of the rep API's ``POST cancel_task``: the Task the BBS cancelled."""

    task_guid: str


@attrs.frozen
class Result:
    """How a verb's answer crosses: one model, a list of them, a (before, after) pair
    (``before`` optional when ``maybe_before``), or nothing."""

    model: type | None
    shape: str = "one"  # one, list, change
    maybe_before: bool = False

    def encode(self, value: Any) -> Any:
        if self.model is None:
            return None
        if self.shape == "list":
            return [encode(v) for v in value]
        if self.shape == "change":
            before, after = value
            return {"before": None if before is None else encode(before), "after": encode(after)}
        return encode(value)

    def decode(self, data: Any) -> Any:
        model = self.model
        if model is None:
            return None
        if self.shape == "list":
            return [decode(model, item) for item in _list(data)]
        if self.shape == "change":
            pair = _object(data)
            before = pair.get("before")
            if before is None and not self.maybe_before:
                raise ValueError("change: before is missing")
            return (None if before is None else decode(model, before)), decode(model, pair["after"])
        return decode(model, data)


@attrs.frozen
class Verb:
    """One verb: its arguments (name → type) and its answer."""

    args: Mapping[str, Any]
    result: Result


_STR, _INT, _BOOL, _FLOAT = str, int, bool, float
_OPTIONAL_STR = (str, type(None))

VERBS: dict[str, Verb] = {
    "get_task": Verb({"guid": _STR}, Result(Task)),
    "get_tes_task": Verb({"task_id": _STR}, Result(TesTask)),
    "tasks": Verb({"cell_id": _OPTIONAL_STR}, Result(Task, "list")),
    "start_task": Verb({"guid": _STR, "cell_id": _STR}, Result(Task, "change")),
    "complete_task": Verb(
        {"guid": _STR, "cell_id": _STR, "failed": _BOOL, "failure_reason": _STR, "result": _STR},
        Result(Task, "change"),
    ),
    "renew_cell_presence": Verb({"presence": CellPresence, "ttl": _FLOAT}, Result(None)),
    "remove_cell_presence": Verb({"cell_id": _STR}, Result(None)),
    "get_desired_lrp": Verb({"process_guid": _STR}, Result(DesiredLRP)),
    "actual_lrps": Verb(
        {"process_guid": _OPTIONAL_STR, "domain": _OPTIONAL_STR, "cell_id": _OPTIONAL_STR},
        Result(ActualLRP, "list"),
    ),
    "get_actual_lrp": Verb(
        {"process_guid": _STR, "index": _INT, "evacuating": _BOOL}, Result(ActualLRP)
    ),
    "claim_actual_lrp": Verb(
        {"process_guid": _STR, "index": _INT, "instance_guid": _STR, "cell_id": _STR},
        Result(ActualLRP, "change"),
    ),
    "start_actual_lrp": Verb(
        {
            "process_guid": _STR,
            "index": _INT,
            "domain": _STR,
            "instance_guid": _STR,
            "cell_id": _STR,
        },
        Result(ActualLRP, "change", maybe_before=True),
    ),
    "crash_actual_lrp": Verb(
        {
            "process_guid": _STR,
            "index": _INT,
            "instance_guid": _STR,
            "cell_id": _STR,
            "reason": _STR,
        },
        Result(ActualLRP, "change"),
    ),
    "unclaim_actual_lrp": Verb({"process_guid": _STR, "index": _INT}, Result(ActualLRP, "change")),
    "remove_actual_lrp": Verb(
        {
            "process_guid": _STR,
            "index": _INT,
            "instance_guid": _OPTIONAL_STR,
            "evacuating": _BOOL,
        },
        Result(ActualLRP),
    ),
    "evacuate_actual_lrp": Verb(
        {"process_guid": _STR, "index": _INT, "instance_guid": _STR, "cell_id": _STR},
        Result(ActualLRP, "change"),
    ),
    "remove_evacuating_actual_lrp": Verb(
        {"process_guid": _STR, "index": _INT, "instance_guid": _STR}, Result(ActualLRP)
    ),
    "ship_logs": Verb({"batch": LogBatch}, Result(None)),
}
LOG_VERBS = frozenset({"ship_logs"})
"""The verbs the node's log store answers, not its BBS."""


def encode_args(verb: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """A call's arguments as JSON."""
    spec = VERBS[verb].args
    return {k: encode(v) if attrs.has(type(v)) else v for k, v in values.items() if k in spec}


def decode_args(verb: str, data: Any) -> dict[str, Any]:
    """A call's arguments from JSON; ``errors.InvalidArguments`` naming each one wrong."""
    spec = VERBS[verb].args
    if not isinstance(data, dict):
        raise errors.InvalidArguments((Problem("", "must be an object"),))
    problems = [Problem(key, "unknown argument") for key in data if key not in spec]
    values: dict[str, Any] = {}
    for name, kind in spec.items():
        raw = data.get(name)
        if raw is None and kind is not _OPTIONAL_STR:
            problems.append(Problem(name, "required"))
        elif attrs.has(kind):
            try:
                values[name] = decode(kind, raw, name)
            except InvalidDocument as e:
                problems.extend(e.problems)
            except ValueError as e:  # a model's own check, past its rules
                problems.append(Problem(name, str(e)))
        elif kind is _FLOAT and isinstance(raw, int | float) and not isinstance(raw, bool):
            values[name] = float(raw)
        elif kind is _INT and not (isinstance(raw, int) and not isinstance(raw, bool)):
            problems.append(Problem(name, "must be an integer"))
        elif kind is _BOOL and not isinstance(raw, bool):
            problems.append(Problem(name, "must be true or false"))
        elif kind in (_STR, _OPTIONAL_STR) and raw is not None and not isinstance(raw, str):
            problems.append(Problem(name, "must be a string"))
        elif kind is _FLOAT:
            problems.append(Problem(name, "must be a number"))
        else:
            values[name] = raw
    if problems:
        raise errors.InvalidArguments(tuple(problems))
    return values


# ------------------------------------------------------------------ errors


def error_data(error: errors.DiegoError) -> dict[str, Any]:
    """A domain error as JSON, with what its class keeps (guids, states, problems)."""
    fields = {
        k: v
        for k, v in vars(error).items()
        if k != "message" and (v is None or isinstance(v, str | int | bool))
    }
    data: dict[str, Any] = {"name": error.name, "message": error.message, "fields": fields}
    if isinstance(error, errors.InvalidFields):
        data["errors"] = [{"field": p.path, "rule": p.rule} for p in error.problems]
    return data


def _classes() -> dict[str, type[errors.DiegoError]]:
    found: dict[str, type[errors.DiegoError]] = {}
    todo: list[type[errors.DiegoError]] = [errors.DiegoError]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.name, cls)
        todo.extend(cls.__subclasses__())
    return found


def error_from_data(data: Any) -> errors.DiegoError:
    """The domain error ``error_data`` wrote, as the same class (DiegoError if the name
    is unknown here)."""
    body = _object(data)
    cls = _classes().get(str(body.get("name")), errors.DiegoError)
    message = str(body.get("message", ""))
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.message = message
    fields = body.get("fields")
    if isinstance(fields, dict):
        for key, value in fields.items():
            setattr(error, str(key), value)
    if isinstance(error, errors.InvalidFields):
        given = body.get("errors")
        listed: list[Any] = given if isinstance(given, list) else []
        error.problems = tuple(
            Problem(str(p.get("field", "")), str(p.get("rule", "")))
            for p in listed
            if isinstance(p, dict)
        )
    return error


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError("must be an object")
    return data


def _list(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise ValueError("must be an array")
    return data
