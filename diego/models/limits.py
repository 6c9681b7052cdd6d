"""Limits: how many and how big, for every count and size a client sends.

A document within the body size can still ask for a billion instances or carry a
guid that no file system can name. Every such count and size has a bound here,
set by configuration (``[limits]``), and the codec checks them while it decodes
a client's document: a field over its bound is a problem naming the field and
the bound, like any other broken rule, and nothing is written.

Two kinds of bound:

- **general**, applied by the codec to every value of a kind: each string at most
  ``max_string_bytes``, each array and object at most ``max_items`` entries;
- **named**, attached to one field with ``limit(NAME)``: a guid's length, an LRP's
  ``instances``, the ``env`` entries, the ``ports``, the security group rules, the
  actions of one tree.

The OpenAPI document states the same bounds, taken from the node's settings, so
what is published and what is refused agree. Stored records are not decoded
through these checks; the converger and the auctioneer work in bounded batches
instead, so that a record stored under looser limits still costs bounded memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from diego.models.rules import between, rule_metadata

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
"""Every integer of a document fits a signed 64-bit column, whatever its field."""


@attrs.frozen(kw_only=True)
class Limits:
    """The bounds of one node (``[limits]``); each is a count or a size in bytes."""

    max_guid_bytes: int = attrs.field(default=128, metadata=rule_metadata(between(1, 200)))
    """task_guid, process_guid and log_guid; they name files and directories on the
    cells, whose names may be at most 255 bytes."""
    max_instances: int = attrs.field(default=10_000, metadata=rule_metadata(between(0, 1_000_000)))
    """Instances of one DesiredLRP."""
    max_env: int = attrs.field(default=1024, metadata=rule_metadata(between(0, 100_000)))
    """Environment variables of one Task, LRP or run action."""
    max_ports: int = attrs.field(default=64, metadata=rule_metadata(between(0, 65535)))
    """Container ports of one DesiredLRP."""
    max_rules: int = attrs.field(default=256, metadata=rule_metadata(between(0, 100_000)))
    """Security group rules of one Task or DesiredLRP."""
    max_actions: int = attrs.field(default=1024, metadata=rule_metadata(between(1, 100_000)))
    """Actions in one action tree, every nested one counted."""
    max_items: int = attrs.field(default=10_000, metadata=rule_metadata(between(1, 1_000_000)))
    """Entries of any other array or object (args, zones, tags, TES inputs, ...)."""
    max_string_bytes: int = attrs.field(
        default=128 * 1024, metadata=rule_metadata(between(1, 16 * 1024**2))
    )
    """Bytes (UTF-8) of any one string; fields with a bound of their own (annotation,
    guids) have theirs."""

    def of(self, name: str) -> int:
        """The bound called ``name``."""
        return int(getattr(self, name))


_UNITS: Mapping[str, tuple[str, str]] = {
    # the measure a named bound counts, and the JSON Schema keyword that says it
    "max_guid_bytes": ("bytes", "maxLength"),
    "max_instances": ("value", "maximum"),
    "max_env": ("items", "maxItems"),
    "max_ports": ("items", "maxItems"),
    "max_rules": ("items", "maxItems"),
    "max_actions": ("actions", "x-max-actions"),
}


@attrs.frozen
class Limit:
    """A field's bound whose number is configuration: the ``Limits`` field ``name``."""

    name: str

    def __attrs_post_init__(self) -> None:
        if self.name not in _UNITS:
            raise ValueError(f"no such limit: {self.name}")

    def check(self, value: Any, limits: Limits) -> str | None:
        """The broken bound in words, or None."""
        bound = limits.of(self.name)
        measure, _ = _UNITS[self.name]
        if measure == "bytes":
            size = len(value.encode())
            return None if size <= bound else f"must be at most {bound} bytes (is {size})"
        if measure == "value":
            return None if value <= bound else f"must be at most {bound} ([limits] {self.name})"
        if measure == "items":
            n = len(value)
            return None if n <= bound else f"must have at most {bound} entries (has {n})"
        n = count_actions(value)
        return None if n <= bound else f"must hold at most {bound} actions (holds {n})"

    def schema(self, limits: Limits) -> dict[str, Any]:
        """The JSON Schema fragment that states the bound."""
        bound = limits.of(self.name)
        measure, keyword = _UNITS[self.name]
        if measure == "actions":
            return {"description": f"an action tree of at most {bound} actions"}
        return {keyword: bound}


def limit(name: str) -> Limit:
    """The configured bound ``name`` of ``Limits``, for a field's rules."""
    return Limit(name)


def count_actions(action: Any) -> int:
    """How many actions the tree ``action`` holds, itself included."""
    count = 0
    stack = [action]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        count += 1
        inner = getattr(node, "action", None)
        if inner is not None:
            stack.append(inner)
        stack.extend(getattr(node, "actions", ()))
    return count
