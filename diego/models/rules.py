"""Field rules: a check and the JSON Schema fragment that says the same thing.

A rule is attached to an attrs field with ``rule_metadata(...)``. The codec runs
each rule after the value has the right type, and the OpenAPI generator merges
each rule's ``schema`` into the field's schema, so the documentation and the
validation cannot drift apart.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs

if TYPE_CHECKING:
    from diego.models.limits import Limit

RULES_KEY = "diego.rules"


@attrs.frozen
class Rule:
    """One constraint on a value: ``check`` returns the broken rule in words, or None."""

    check: Callable[[Any], str | None]
    schema: Mapping[str, Any] = attrs.field(factory=dict)


def rule_metadata(*rules: Rule | Limit) -> dict[str, Any]:
    """The attrs ``metadata`` that attaches ``rules`` (and configured limits) to a field."""
    return {RULES_KEY: rules}


def read_only() -> Rule:
    """A field the server writes: a client may send it back, and it is ignored."""
    return Rule(lambda v: None, {"readOnly": True})


def non_empty() -> Rule:
    """A string or sequence that must not be empty."""
    return Rule(lambda v: None if len(v) else "must not be empty", {"minLength": 1})


def non_empty_items() -> Rule:
    """A list that must hold at least one item."""
    return Rule(lambda v: None if len(v) else "must not be empty", {"minItems": 1})


def distinct_names() -> Rule:
    """A list of non-empty strings, none twice."""

    def check(value: tuple[str, ...]) -> str | None:
        if any(not item for item in value):
            return "must hold no empty names"
        return None if len(set(value)) == len(value) else "must not name anything twice"

    return Rule(check, {"uniqueItems": True, "items": {"minLength": 1}})


def pattern(regex: str, words: str) -> Rule:
    """A string matching ``regex`` in full; ``words`` says what is allowed."""
    compiled = re.compile(regex)

    def check(value: str) -> str | None:
        return None if compiled.fullmatch(value) else words

    return Rule(check, {"pattern": f"^{regex}$"})


def between(low: int, high: int) -> Rule:
    """An integer from ``low`` to ``high``, both included."""

    def check(value: int) -> str | None:
        return None if low <= value <= high else f"must be between {low} and {high}"

    return Rule(check, {"minimum": low, "maximum": high})


INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1
"""Diego's BBS keeps memory_mb and disk_mb as int32, ttls and timeouts in ms as uint32."""


def at_least(low: int) -> Rule:
    """An integer no smaller than ``low``."""

    def check(value: int) -> str | None:
        return None if value >= low else f"must be >= {low}"

    return Rule(check, {"minimum": low})


def max_bytes(limit: int) -> Rule:
    """A string whose UTF-8 encoding is at most ``limit`` bytes."""

    def check(value: str) -> str | None:
        size = len(value.encode())
        return None if size <= limit else f"must be at most {limit} bytes (is {size})"

    # JSON Schema counts characters, not bytes: the nearest honest statement.
    return Rule(check, {"maxLength": limit, "description": f"at most {limit} bytes as UTF-8"})


def one_of(*choices: str) -> Rule:
    """A string that is one of ``choices``."""
    allowed = frozenset(choices)
    words = "must be one of " + ", ".join(choices)
    return Rule(lambda v: None if v in allowed else words, {"enum": list(choices)})


def http_url() -> Rule:
    """Empty, or an absolute http(s) URL with a host."""

    def check(value: str) -> str | None:
        if not value:
            return None
        try:
            parts = urlsplit(value)
        except ValueError:
            return "must be an absolute http(s) URL"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "must be an absolute http(s) URL"
        return None

    # Empty is allowed (no URL): the schema says so, as a Task's JSON carries "".
    return Rule(check, {"anyOf": [{"maxLength": 0}, {"format": "uri"}]})


def root_fs_url() -> Rule:
    """Empty (the cell's default), ``docker:///org/image#tag`` or ``preloaded:NAME``."""

    def check(value: str) -> str | None:
        if not value:
            return None
        words = "must be a docker:///org/image#tag or preloaded:NAME URL"
        try:
            parts = urlsplit(value)
        except ValueError:
            return words
        if parts.scheme == "preloaded":
            return None if parts.path and not parts.netloc else words
        if parts.scheme == "docker":
            return None if parts.path.strip("/") and not parts.query else words
        return words

    return Rule(check, {"pattern": "^(|docker://[^?]*/[^?]+|preloaded:[^/].*)$"})


def destination() -> Rule:
    """An IP address, a CIDR network, or a range ``first-last`` with first <= last."""
    return Rule(_check_destination)


def _check_destination(value: str) -> str | None:
    words = "must be an IP address, a CIDR or a range ip-ip"
    try:
        if "/" in value:
            ipaddress.ip_network(value, strict=False)
        elif "-" in value:
            first_text, last_text = value.split("-", 1)
            first = ipaddress.ip_address(first_text.strip())
            last = ipaddress.ip_address(last_text.strip())
            if first.version != last.version:
                return words
            if int(first) > int(last):
                return "range start must not be after its end"
        else:
            ipaddress.ip_address(value)
    except ValueError:
        return words
    return None
