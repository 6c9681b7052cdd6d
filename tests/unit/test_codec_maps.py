"""The codec's string-keyed maps: decoding with field paths, encoding, JSON Schema, FrozenMap."""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diego.models.codec import (
    FrozenMap,
    InvalidDocument,
    Problem,
    decode,
    decode_trusted,
    encode,
    json_schema,
    map_field,
)


@attrs.frozen(kw_only=True)
class Point:
    """A small model, as a map's value."""

    x: int
    y: int = 0


@attrs.frozen(kw_only=True)
class Labelled:
    """A model with every kind of map field the codec knows."""

    tags: Mapping[str, str] = map_field()
    counts: Mapping[str, int] | None = None
    points: Mapping[str, Point] | None = None


@attrs.frozen(kw_only=True, eq=False)
class Plain:
    """A model whose map is a plain, mutable dict."""

    env: dict[str, str]


def problems_of(cls: type, data: object) -> list[Problem]:
    """The problems ``data`` has as a ``cls``; fails if it has none."""
    with pytest.raises(InvalidDocument) as caught:
        decode(cls, data)
    return list(caught.value.problems)


# ---------------------------------------------------------------- decode


def test_trusted_decode_of_maps_is_decode() -> None:
    """decode_trusted makes the same FrozenMaps (and plain dicts) of the same models."""
    wire = {"tags": {"a": "1"}, "counts": {"n": 2}, "points": {"p": {"x": 1}}}
    got = decode_trusted(Labelled, wire)
    assert got == decode(Labelled, wire)
    assert isinstance(got.tags, FrozenMap)
    assert isinstance(got.points, FrozenMap)
    assert got.points["p"] == Point(x=1)
    plain = decode_trusted(Plain, {"env": {"A": "b"}})
    assert type(plain.env) is dict
    assert plain.env == {"A": "b"}


def test_a_mapping_field_decodes_to_a_frozen_map() -> None:
    """A JSON object becomes a FrozenMap that equals the dict it came from."""
    got = decode(Labelled, {"tags": {"a": "1", "b": ""}})
    assert isinstance(got.tags, FrozenMap)
    assert got.tags == {"a": "1", "b": ""}


def test_a_dict_field_decodes_to_a_plain_dict() -> None:
    """A field typed dict[str, str] holds a plain dict."""
    got = decode(Plain, {"env": {"HOME": "/home/vcap"}})
    assert type(got.env) is dict
    assert got.env == {"HOME": "/home/vcap"}


def test_a_missing_map_takes_its_default() -> None:
    """Left out, a factory map is empty and an optional one is None."""
    got = decode(Labelled, {})
    assert got.tags == {}
    assert got.counts is None


def test_every_bad_value_is_named_by_its_key() -> None:
    """Each value of the wrong type is a problem at ``field.KEY``, all of them at once."""
    assert problems_of(Labelled, {"tags": {"ok": "v", "n": 1, "none": None, "list": []}}) == [
        Problem("tags.n", "must be a string"),
        Problem("tags.none", "must be a string"),
        Problem("tags.list", "must be a string"),
    ]


@pytest.mark.parametrize("data", [[], "a=b", 3, True, [["a", "b"]]])
def test_a_map_must_be_an_object(data: object) -> None:
    """Anything but a JSON object is refused at the field's path."""
    assert problems_of(Labelled, {"tags": data}) == [Problem("tags", "must be an object")]


def test_values_of_other_types_are_decoded_as_that_type() -> None:
    """A map of ints refuses strings, and a map of models names the nested field."""
    assert problems_of(Labelled, {"counts": {"a": "1"}}) == [
        Problem("counts.a", "must be an integer")
    ]
    assert problems_of(Labelled, {"points": {"p": {"y": 1, "z": 2}}}) == [
        Problem("points.p.z", "unknown field"),
        Problem("points.p.x", "required"),
    ]
    got = decode(Labelled, {"points": {"p": {"x": 1}}})
    assert got.points == {"p": Point(x=1)}


def test_a_map_in_a_map_path_is_nested_in_a_list_path() -> None:
    """Inside an array the key follows the index: ``items[1].tags.k``."""

    @attrs.frozen
    class Many:
        items: tuple[Labelled, ...]

    assert problems_of(Many, {"items": [{}, {"tags": {"k": 1}}]}) == [
        Problem("items[1].tags.k", "must be a string")
    ]


def test_a_map_keyed_by_anything_but_str_is_a_type_error() -> None:
    """JSON keys are strings: the codec refuses to describe Mapping[int, str]."""

    @attrs.frozen
    class BadKeys:
        m: Mapping[int, str]

    with pytest.raises(TypeError, match="no JSON form"):
        decode(BadKeys, {"m": {}})


# ---------------------------------------------------------------- encode


def test_encode_writes_a_plain_dict() -> None:
    """A FrozenMap is written as a plain dict, an empty one as {} (it is not None)."""
    doc = encode(Labelled(tags={"a": "1"}, points={"p": Point(x=2)}))
    assert doc == {"tags": {"a": "1"}, "points": {"p": {"x": 2, "y": 0}}}
    assert type(doc["tags"]) is dict
    assert encode(Labelled()) == {"tags": {}}


def test_encode_copies_a_dict_field() -> None:
    """The written dict is not the model's own, so changing it changes nothing."""
    model = Plain(env={"A": "1"})
    doc = encode(model)
    doc["env"]["A"] = "2"
    assert model.env == {"A": "1"}


@settings(max_examples=100, deadline=None, database=None)
@given(
    tags=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=5),
    counts=st.none()
    | st.dictionaries(st.text(max_size=8), st.integers(-(2**63), 2**63 - 1), max_size=5),
)
def test_maps_round_trip(tags: dict[str, str], counts: dict[str, int] | None) -> None:
    """decode(encode(x)) == x for any keys, the empty string included."""
    model = Labelled(tags=tags, counts=counts)
    assert decode(Labelled, encode(model)) == model


# ---------------------------------------------------------------- schema


def test_schema_of_a_map() -> None:
    """A map is an object whose additionalProperties are its value's schema."""
    definitions: dict[str, object] = {}
    json_schema(Labelled, definitions)
    props = definitions["Labelled"]["properties"]  # type: ignore[index]
    assert props["tags"] == {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "default": {},
        "nullable": True,
    }
    int64 = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
    assert props["counts"] == {
        "type": "object",
        "additionalProperties": int64,
        "nullable": True,
    }
    assert props["points"] == {
        "type": "object",
        "additionalProperties": {"$ref": "#/components/schemas/Point"},
        "nullable": True,
    }
    assert "Point" in definitions


# ---------------------------------------------------------------- FrozenMap


def test_frozen_map_is_immutable() -> None:
    """It has no way to change: item assignment and deletion fail."""
    m = FrozenMap({"a": "1"})
    with pytest.raises(TypeError):
        m["a"] = "2"  # type: ignore[index]
    with pytest.raises(TypeError):
        del m["a"]  # type: ignore[attr-defined]
    assert m == {"a": "1"}


def test_frozen_map_copies_what_it_is_given() -> None:
    """Changing the source dict afterwards does not change the map."""
    source = {"a": "1"}
    m = FrozenMap(source)
    source["a"] = "2"
    assert m["a"] == "1"


def test_frozen_map_equality_and_hash() -> None:
    """Equal items make equal maps with equal hashes, whatever the order."""
    one = FrozenMap({"a": "1", "b": "2"})
    two = FrozenMap([("b", "2"), ("a", "1")])
    assert one == two
    assert hash(one) == hash(two)
    assert one != FrozenMap({"a": "1"})
    assert one != [("a", "1"), ("b", "2")]
    assert len({one, two}) == 1


def test_a_frozen_model_with_maps_is_hashable() -> None:
    """A frozen model stays hashable: its plain dict argument became a FrozenMap."""
    model = Labelled(tags={"a": "1"})
    assert isinstance(model.tags, FrozenMap)
    assert hash(model) == hash(Labelled(tags={"a": "1"}))
    assert repr(model.tags) == "FrozenMap({'a': '1'})"
