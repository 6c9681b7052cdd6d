"""A stored Task's wire JSON spliced from its definition equals encoding the Task."""

from __future__ import annotations

import json
import types

from hypothesis import given

from diego.api.json import dumps
from diego.models.codec import encode
from diego.models.task import Task
from diego.state.store import WIRE_FORM, _columns, _task_json
from tests.unit.test_codec import PROPERTY, tasks


def row_of(task: Task, **changes: object) -> types.SimpleNamespace:
    """The row the store writes for ``task`` (with ``changes``), as a read gives it back."""
    return types.SimpleNamespace(**{**_columns(task), "version": 1, **changes})


@PROPERTY
@given(tasks)
def test_spliced_wire_json_is_the_encoded_task(task: Task) -> None:
    """For any Task, the definition with the lifecycle columns spliced on is, byte for
    byte, what the API would write by encoding the Task."""
    row = row_of(task)
    assert row.definition_form == WIRE_FORM
    assert _task_json(row) == dumps(encode(task))


@PROPERTY
@given(tasks)
def test_a_definition_of_another_form_is_decoded(task: Task) -> None:
    """A row written in an older form (here: ASCII-escaped, with no form recorded) is
    decoded and encoded, giving the same text."""
    definition = json.dumps(encode(task.request()), separators=(",", ":"))
    row = row_of(task, definition=definition, definition_form="")
    assert _task_json(row) == dumps(encode(task))


def test_the_form_names_the_current_models() -> None:
    """The form is a fixed-length name, the same every time it is computed."""
    from diego.state.store import _wire_form

    assert _wire_form() == WIRE_FORM
    assert len(WIRE_FORM) == 32
