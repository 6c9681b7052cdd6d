"""JSON codec for the attrs models: decode with validation, encode, JSON Schema.

One walker over the attrs fields does all three, so what is accepted, what is
written and what the OpenAPI document says come from the same declarations.

Decoding never stops at the first problem: it collects every one, each with the
dotted path of the field (``action.serial.actions[2].run.path: required``).
Unknown fields are problems too. Encoding leaves out fields whose value is None,
so ``decode(encode(x)) == x`` for every model.

A field typed ``Mapping[str, V]`` or ``dict[str, V]`` is a JSON object with any
keys; each value is decoded as a ``V`` at the path ``field.KEY``. A ``Mapping`` is
held as a FrozenMap (immutable and hashable, so frozen models stay hashable), a
``dict`` as a plain dict.

A field whose type is a union of models each carrying a ``KIND`` class
attribute is written as an object with exactly one key naming the kind, as
Diego's JSON API writes actions: ``{"run": {"path": "/bin/true"}}``.
"""

from __future__ import annotations

import enum
import functools
import json
import keyword
import math
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import attrs

from diego.models.limits import INT64_MAX, INT64_MIN, Limit, Limits
from diego.models.rules import RULES_KEY, Rule

T = TypeVar("T")
V = TypeVar("V")

MAX_DEPTH = 64
"""How deep a document may nest; deeper ones are refused, not recursed into."""


@attrs.frozen
class Problem:
    """One broken rule, at one field path."""

    path: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path or '(body)'}: {self.rule}"


class InvalidDocument(ValueError):
    """A document broke one or more rules; ``problems`` lists each of them."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


class Problems:
    """Collects problems while a document is decoded, against ``limits`` if given."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.items: list[Problem] = []
        self.limits = limits

    def add(self, path: str, rule: str) -> None:
        """Record that the field at ``path`` breaks ``rule``."""
        self.items.append(Problem(path, rule))

    def __bool__(self) -> bool:
        return bool(self.items)


def join(path: str, key: str) -> str:
    """The path of field ``key`` inside the object at ``path``."""
    return f"{path}.{key}" if path else key


class _Invalid:
    """Marks a value that failed to decode (its problems are already recorded)."""


INVALID: Any = _Invalid()


def decode(cls: type[T], data: Any, path: str = "", limits: Limits | None = None) -> T:
    """Build a ``cls`` from JSON data, or raise InvalidDocument naming every problem.

    ``limits`` bounds every count and size of a client's document (see
    ``diego.models.limits``); without them only the models' own rules apply, as
    for a document a node wrote (a client reading answers, the configuration).
    """
    problems = Problems(limits)
    value = _model(cast_type(cls)).decode(data, path, problems, 0)
    if problems or value is INVALID:
        raise InvalidDocument(problems.items)
    return typing.cast(T, value)


def decode_trusted(cls: type[T], data: Any) -> T:
    """Build a ``cls`` from JSON data this program encoded itself (a stored row), with
    no validation: no rules, no unknown-field check, no problem paths. Several times
    faster than ``decode``; on data that ``decode`` would refuse, the result is
    undefined (an exception, or a model no rule checked).
    """
    return typing.cast(T, _model(cast_type(cls)).load(data))


def encode(value: Any) -> Any:
    """The JSON data (dicts, lists, scalars) of a model."""
    return _model(cast_type(type(value))).encode(value)


def cast_type(cls: Any) -> type:
    """``cls`` as a plain (hashable) type, for the model cache."""
    return typing.cast(type, cls)


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(data: Any) -> str:
    """Compact JSON text, as the API writes it (and the store writes Task definitions)."""
    return _ENCODER.encode(data)


def json_schema(
    cls: type, definitions: dict[str, Any], limits: Limits | None = None
) -> dict[str, Any]:
    """A JSON Schema reference to ``cls``; every model it uses lands in ``definitions``,
    stating ``limits`` where given."""
    return _model(cls).schema(_Schemas(definitions, limits))


class FrozenMap(Mapping[str, V]):
    """An immutable, hashable mapping: the value of a ``Mapping[str, V]`` field.

    It equals any mapping with the same items (a plain dict included), so tests and
    callers may compare it with dict literals.
    """

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[str, V] | Iterable[tuple[str, V]] = ()) -> None:
        self._data: dict[str, V] = dict(data)
        self._hash: int | None = None

    def __getitem__(self, key: str) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return self._data == dict(other.items())

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


def map_field() -> Any:
    """An attrs field for a ``Mapping[str, V]``: empty by default, held as a FrozenMap.

    Any mapping given to the model (a dict literal, say) is converted, so the model
    stays hashable. Typed Any on purpose: the attrs mypy plugin then types the
    ``__init__`` argument as the field's declared Mapping.
    """
    return attrs.field(factory=FrozenMap, converter=FrozenMap)


# ---------------------------------------------------------------- the types


@attrs.frozen
class _Schemas:
    """The component schemas of one document being written, and the limits it states."""

    definitions: dict[str, Any]
    limits: Limits | None


class _Type:
    """How one Python type is decoded, encoded and described."""

    identity_encode = False
    identity_load = False
    """Whether trusted JSON data of this type is already its value (``load`` is x → x)."""

    def decode(self, data: Any, path: str, problems: Problems, depth: int) -> Any:
        raise NotImplementedError

    def load(self, data: Any) -> Any:
        """The value of trusted JSON data: ``decode`` less every check."""
        raise NotImplementedError

    def encode(self, value: Any) -> Any:
        raise NotImplementedError

    def schema(self, out: _Schemas) -> dict[str, Any]:
        raise NotImplementedError


class _Scalar(_Type):
    identity_encode = True
    identity_load = True

    def __init__(self, py: type, json_type: str, words: str) -> None:
        self.py = py
        self.json_type = json_type
        self.words = words

    def decode(self, data: Any, path: str, problems: Problems, depth: int) -> Any:
        # bool is an int to Python, never to JSON.
        kind = type(data)
        if kind is self.py or (self.py is float and kind is int):
            if kind is int and not INT64_MIN <= data <= INT64_MAX:
                problems.add(path, f"must be between {INT64_MIN} and {INT64_MAX}")
                return INVALID
            if kind is float and not math.isfinite(data):
                problems.add(path, "must be a finite number")
                return INVALID
            if kind is str and problems.limits is not None:
                bound = problems.limits.max_string_bytes
                if len(data) * 4 > bound and len(data.encode()) > bound:
                    problems.add(path, f"must be at most {bound} bytes ([limits] max_string_bytes)")
                    return INVALID
            return data
        problems.add(path, self.words)
        return INVALID

    def load(self, data: Any) -> Any:
        return data

    def encode(self, value: Any) -> Any:
        return value

    def schema(self, out: _Schemas) -> dict[str, Any]:
        if self.py is int:
            return {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX}
        if self.py is str and out.limits is not None:
            return {"type": "string", "maxLength": out.limits.max_string_bytes}
        return {"type": self.json_type}


class _Enum(_Type):
    def __init__(self, cls: type[enum.Enum]) -> None:
        self.cls = cls
        self.names = [m.value for m in cls]
        self.by_value = {m.value: m for m in cls}

    def decode(self, data: Any, path: str, problems: Problems, depth: int) -> Any:
        try:
            return self.cls(data)
        except ValueError:
            problems.add(path, "must be one of " + ", ".join(self.names))
            return INVALID

    def load(self, data: Any) -> Any:
        return self.by_value[data]

    def encode(self, value: Any) -> Any:
        return value.value

    def schema(self, out: _Schemas) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.names)}


class _Optional(_Type):
    def __init__(self, inner: _Type) -> None:
        self.inner = inner
        self.identity_encode = inner.identity_encode
        self.identity_load = inner.identity_load

    def decode(self, data: Any, path: str, problems: Problems, depth: int) -> Any:
        return None if data is None else self.inner.decode(data, path, problems, depth)

    def load(self, data: Any) -> Any:
        return None if data is None else self.inner.load(data)

    def encode(self, value: Any) -> Any:
        return None if value is None else self.inner.encode(value)

    def schema(self, out: _Schemas) -> dict[str, Any]:
        return self.inner.schema(out)


class _Sequence(_Type):
    """A JSON array, held as a tuple so that frozen models stay immutable."""

    def __init__(self, item: _Type) -> None:
        self.item = item

    def decode(self, data: Any, path: str, problems: Problems, depth: int) -> Any:
        if not isinstance(data, list):
            problems.add(path, "must be an array")
            return INVALID
        if _too_many(data, path, problems):
            return INVALID
        items = [
            self.item.decode(element, f"{path}[{i}]", problems, depth + 1)
            for i, element in enumerate(data)
        ]
        return INVALID if any(i is INVALID for i in items) else tuple(items)

    def load(self, data: Any) -> Any:
        if self.item.identity_load:
            return tuple(data)
        return tuple(map(self.item.load, data))

    def encode(self, value: Any) -> Any:
        if self.item.identity_encode:
            return list(value)
        return [self.item.encode(v) for v in value]

    def schema(self, out: _Schemas) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "array", "items": self.item.schema(out)}
        if out.limits is not None:
            schema["maxItems"] = out.limits.max_items
        return schema


class _Set(_Sequence):
    """A JSON array of distinct items, held as a frozenset; encoded sorted, so that the
    same set is always the same JSON."""

    def decode(self, data: Any, path: str, problems: Problems, depth: int) -> Any:
        items = super().decode(data, path, problems, depth)
        return items if items is INVALID else frozenset(items)

    def load(self, data: Any) -> Any:
        return frozenset(super().load(data))

    def encode(self, value: Any) -> Any:
        return sorted(super().encode(value))

    def schema(self, out: _Schemas) -> dict[str, Any]:
        return {**super().schema(out), "uniqueItems": True}


class _Map(_Type):
    """A JSON object with any keys and values of one type: a FrozenMap, or a dict."""

    def __init__(self, value: _Type, frozen: bool) -> None:
        self.value = value
        self.frozen = frozen

    def decode(self, data: Any, path: str, problems: Problems, depth: int) -> Any:
        if not isinstance(data, dict):
            problems.add(path, "must be an object")
            return INVALID
        if _too_many(data, path, problems):
            return INVALID
        items = {
            key: self.value.decode(element, join(path, key), problems, depth + 1)
            for key, element in data.items()
        }
        if any(v is INVALID for v in items.values()):
            return INVALID
        return FrozenMap(items) if self.frozen else items

    def load(self, data: Any) -> Any:
        if self.value.identity_load:
            items = dict(data)
        else:
            load = self.value.load
            items = {k: load(v) for k, v in data.items()}
        return FrozenMap(items) if self.frozen else items

    def encode(self, value: Any) -> Any:
        if self.value.identity_encode:
            return dict(value)
        return {k: self.value.encode(v) for k, v in value.items()}

    def schema(self, out: _Schemas) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "object", "additionalProperties": self.value.schema(out)}
        if out.limits is not None:
            schema["maxProperties"] = out.limits.max_items
        return schema


def _merge(schema: dict[str, Any], more: Mapping[str, Any]) -> None:
    """Add ``more`` to ``schema``; an ``items`` schema in both is merged, not replaced."""
    for key, value in more.items():
        if key == "items" and isinstance(schema.get(key), dict):
            schema[key] = {**schema[key], **value}
        else:
            schema[key] = value


def _too_many(data: list[Any] | dict[str, Any], path: str, problems: Problems) -> bool:
    """Whether ``data`` has more entries than any array or object may (a problem then)."""
    if problems.limits is None or len(data) <= problems.limits.max_items:
        return False
    bound = problems.limits.max_items
    problems.add(path, f"must have at most {bound} entries ([limits] max_items)")
    return True


class _JSON(_Type):
    """Opaque JSON, kept as it came."""

    identity_encode = True
    identity_load = True

    def decode(self, data: Any, path: str, problems: Problems, depth: int) -> Any:
        return data

    def load(self, data: Any) -> Any:
        return data

    def encode(self, value: Any) -> Any:
        return value

    def schema(self, out: _Schemas) -> dict[str, Any]:
        return {}


@attrs.frozen
class _Field:
    name: str  # the attribute
    key: str  # the JSON key: the attribute less a trailing "_" that avoids a keyword
    type: _Type
    required: bool
    default: Any
    rules: tuple[Rule | Limit, ...]


class _Model(_Type):
    """An attrs class as a JSON object with exactly its fields."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self._fields: dict[str, _Field] | None = None
        self._loaders: tuple[tuple[str, str, Callable[[Any], Any] | None], ...] | None = None

    @property
    def fields(self) -> dict[str, _Field]:
        # Built on first use: models refer to each other (and to themselves).
        if self._fields is None:
            hints = typing.get_type_hints(self.cls)
            fields = (_field(f, hints[f.name]) for f in attrs.fields(self.cls))
            self._fields = {f.key: f for f in fields}
        return self._fields

    def decode(self, data: Any, path: str, problems: Problems, depth: int) -> Any:
        if depth > MAX_DEPTH:
            problems.add(path, f"nested more than {MAX_DEPTH} levels deep")
            return INVALID
        if not isinstance(data, dict):
            problems.add(path, "must be an object")
            return INVALID
        fields = self.fields
        kwargs: dict[str, Any] = {}
        ok = True
        for key in data:
            if key not in fields:
                problems.add(join(path, key), "unknown field")
                ok = False
        for key, field in fields.items():
            field_path = join(path, key)
            raw = data.get(key)
            if raw is None:
                if field.required:
                    problems.add(field_path, "required")
                    ok = False
                continue
            value = field.type.decode(raw, field_path, problems, depth + 1)
            if value is INVALID:
                ok = False
                continue
            for rule in field.rules:
                if isinstance(rule, Limit):
                    if problems.limits is None:
                        continue
                    broken = rule.check(value, problems.limits)
                else:
                    broken = rule.check(value)
                if broken:
                    problems.add(field_path, broken)
                    ok = False
            kwargs[field.name] = value
        if not ok:
            return INVALID
        obj = self.cls(**kwargs)
        check = getattr(obj, "check", None)
        if check is not None:
            before = len(problems.items)
            check(path, problems)
            if len(problems.items) > before:
                return INVALID
        return obj

    def load(self, data: Any) -> Any:
        loaders = self._loaders
        if loaders is None:
            loaders = self._loaders = tuple(
                (f.key, f.name, None if f.type.identity_load else f.type.load)
                for f in self.fields.values()
            )
        kwargs: dict[str, Any] = {}
        get = data.get
        for key, name, load in loaders:
            raw = get(key)
            if raw is not None:
                kwargs[name] = raw if load is None else load(raw)
        return self.cls(**kwargs)

    def encode(self, value: Any) -> Any:
        out: dict[str, Any] = {}
        for key, field in self.fields.items():
            v = getattr(value, field.name)
            if v is None:
                continue
            out[key] = v if field.type.identity_encode else field.type.encode(v)
        return out

    def schema(self, out: _Schemas) -> dict[str, Any]:
        name = self.cls.__name__
        definitions = out.definitions
        if name not in definitions:
            definitions[name] = {}  # placeholder: stops recursion
            properties: dict[str, Any] = {}
            for field in self.fields.values():
                prop = dict(field.type.schema(out))
                for rule in field.rules:
                    if isinstance(rule, Limit):
                        if out.limits is not None:
                            prop.update(rule.schema(out.limits))
                    else:
                        _merge(prop, rule.schema)
                if not field.required:
                    # null is taken for absent, as Diego's JSON decoding takes it
                    prop["nullable"] = True
                    if field.default is not None:
                        prop["default"] = field.type.encode(field.default)
                properties[field.key] = prop
            body: dict[str, Any] = {
                "type": "object",
                "properties": properties,
                "additionalProperties": False,
            }
            required = [f.key for f in self.fields.values() if f.required]
            if required:
                body["required"] = required
            doc = (self.cls.__doc__ or "").strip()
            if doc:
                body["description"] = doc.split("\n\n")[0]
            definitions[name] = body
        return {"$ref": f"#/components/schemas/{name}"}


class _OneOf(_Type):
    """A union of models, written as ``{kind: body}`` with exactly one key."""

    def __init__(self, classes: Iterable[type]) -> None:
        self.by_kind: dict[str, _Model] = {c.KIND: _model(c) for c in classes}  # type: ignore[attr-defined]
        self.kinds = ", ".join(self.by_kind)

    def decode(self, data: Any, path: str, problems: Problems, depth: int) -> Any:
        if not isinstance(data, dict) or len(data) != 1:
            problems.add(path, f"must be an object with exactly one of: {self.kinds}")
            return INVALID
        ((kind, body),) = data.items()
        model = self.by_kind.get(kind)
        if model is None:
            problems.add(join(path, kind), f"unknown action; expected one of: {self.kinds}")
            return INVALID
        return model.decode(body, join(path, kind), problems, depth + 1)

    def load(self, data: Any) -> Any:
        ((kind, body),) = data.items()
        return self.by_kind[kind].load(body)

    def encode(self, value: Any) -> Any:
        kind = type(value).KIND
        return {kind: self.by_kind[kind].encode(value)}

    def schema(self, out: _Schemas) -> dict[str, Any]:
        return {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {kind: model.schema(out)},
                    "required": [kind],
                    "additionalProperties": False,
                }
                for kind, model in self.by_kind.items()
            ]
        }


_SCALARS: dict[Any, _Type] = {
    str: _Scalar(str, "string", "must be a string"),
    int: _Scalar(int, "integer", "must be an integer"),
    bool: _Scalar(bool, "boolean", "must be true or false"),
    float: _Scalar(float, "number", "must be a number"),
    Any: _JSON(),
}


@functools.cache
def _model(cls: type) -> _Model:
    if not attrs.has(cls):
        raise TypeError(f"{cls!r} is not an attrs class")
    return _Model(cls)


def _type_for(tp: Any) -> _Type:
    if tp in _SCALARS:
        return _SCALARS[tp]
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) < len(args):
            inner = members[0] if len(members) == 1 else typing.Union[tuple(members)]  # noqa: UP007
            return _Optional(_type_for(inner))
        return _OneOf(members)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _Sequence(_type_for(args[0]))
    if origin is frozenset and len(args) == 1:
        return _Set(_type_for(args[0]))
    if origin in (Mapping, dict) and len(args) == 2 and args[0] is str:
        return _Map(_type_for(args[1]), frozen=origin is Mapping)
    if origin is typing.Annotated:
        return _type_for(args[0])
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _Enum(tp)
    if isinstance(tp, type) and attrs.has(tp):
        return _model(tp)
    raise TypeError(f"the codec has no JSON form for {tp!r}")


def _field(field: attrs.Attribute, tp: Any) -> _Field:  # type: ignore[type-arg]
    default = field.default
    required = default is attrs.NOTHING
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        default = typing.cast(Any, default).factory()
    name = field.name
    stem = name[:-1]
    return _Field(
        name=name,
        key=stem if name.endswith("_") and keyword.iskeyword(stem) else name,
        type=_type_for(tp),
        required=required,
        default=None if required else default,
        rules=tuple(field.metadata.get(RULES_KEY, ())),
    )
