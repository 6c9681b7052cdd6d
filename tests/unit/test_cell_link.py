"""The cell link's wire: arguments checked by the verb's table, errors as their class."""

from __future__ import annotations

import pytest

from diego.models import cell_link, errors
from diego.models.cells import CellPresence
from diego.models.work import Resources


def test_an_error_comes_back_as_its_class_with_what_it_keeps() -> None:
    sent = errors.ActualLRPOnDifferentCell(
        "web", 2, owner=("ig-1", "cell-a"), caller=("ig-2", "cell-b"), evacuating=True
    )
    back = cell_link.error_from_data(cell_link.error_data(sent))
    assert type(back) is errors.ActualLRPOnDifferentCell
    assert (back.message, back.index, back.owner_cell_id, back.caller_instance_guid) == (
        sent.message,
        2,
        "cell-a",
        "ig-2",
    )
    unknown = cell_link.error_from_data({"name": "FromANewerNode", "message": "hm"})
    assert (type(unknown), unknown.message) == (errors.DiegoError, "hm")


def test_a_presence_argument_is_decoded_and_a_bad_one_named() -> None:
    presence = CellPresence(cell_id="c", capacity=Resources(1, 1, 1))
    args = cell_link.encode_args("renew_cell_presence", {"presence": presence, "ttl": 30})
    assert cell_link.decode_args("renew_cell_presence", args) == {
        "presence": presence,
        "ttl": 30.0,
    }
    args["presence"]["capacity"]["memory_mb"] = -5
    with pytest.raises(errors.InvalidArguments) as refused:
        cell_link.decode_args("renew_cell_presence", args)
    assert [p.path for p in refused.value.problems] == ["presence.capacity.memory_mb"]
    with pytest.raises(errors.InvalidArguments, match="ttl: must be a number"):
        cell_link.decode_args("renew_cell_presence", {**args, "ttl": True})


def test_optional_arguments_may_be_left_out() -> None:
    assert cell_link.decode_args("tasks", {}) == {"cell_id": None}
    assert cell_link.decode_args("actual_lrps", {"cell_id": "c"}) == {
        "process_guid": None,
        "domain": None,
        "cell_id": "c",
    }
