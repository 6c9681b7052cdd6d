"""The action tree: what a container does, as Diego's actions describe it.

On the wire an action is an object with exactly one key naming its kind:
``{"run": {...}}``, ``{"serial": {"actions": [...]}}``. The ``KIND`` class
attribute is that key.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from diego.models.codec import Problems, join
from diego.models.limits import limit
from diego.models.rules import Rule, at_least, non_empty, non_empty_items, rule_metadata

DEFAULT_USER = "root"
"""The user a run, download or upload action acts as inside the container."""

CHECKSUM_ALGORITHMS = ("md5", "sha1", "sha256")


def _algorithm() -> Rule:
    """Empty, or a checksum algorithm in any case (Diego lowercases it)."""
    words = "must be one of " + ", ".join(CHECKSUM_ALGORITHMS)

    def check(value: str) -> str | None:
        return None if not value or value.lower() in CHECKSUM_ALGORITHMS else words

    return Rule(check, {"enum": ["", *CHECKSUM_ALGORITHMS]})


@attrs.frozen(kw_only=True)
class EnvironmentVariable:
    """One environment variable: a non-empty name and a value."""

    name: str = attrs.field(metadata=rule_metadata(non_empty()))
    value: str = ""


@attrs.frozen(kw_only=True)
class ResourceLimits:
    """Limits on the processes of a run action (``nofile``: open files)."""

    nofile: int | None = attrs.field(default=None, metadata=rule_metadata(at_least(0)))
    nproc: int | None = attrs.field(default=None, metadata=rule_metadata(at_least(0)))


@attrs.frozen(kw_only=True)
class RunAction:
    """Run a process in the container; fails when it exits non-zero."""

    KIND: ClassVar[str] = "run"

    path: str = attrs.field(metadata=rule_metadata(non_empty()))
    args: tuple[str, ...] = ()
    dir: str = ""
    env: tuple[EnvironmentVariable, ...] = attrs.field(
        default=(), metadata=rule_metadata(limit("max_env"))
    )
    resource_limits: ResourceLimits | None = None
    user: str = attrs.field(default=DEFAULT_USER, metadata=rule_metadata(non_empty()))
    log_source: str = ""
    suppress_log_output: bool = False


@attrs.frozen(kw_only=True)
class DownloadAction:
    """Fetch ``from`` (http(s) or file URL) into the directory ``to``; archives are
    extracted, and the checksum checked when one is given."""

    KIND: ClassVar[str] = "download"

    artifact: str = ""
    from_: str = attrs.field(metadata=rule_metadata(non_empty()))
    to: str = attrs.field(metadata=rule_metadata(non_empty()))
    cache_key: str = ""
    log_source: str = ""
    user: str = attrs.field(default=DEFAULT_USER, metadata=rule_metadata(non_empty()))
    checksum_algorithm: str = attrs.field(default="", metadata=rule_metadata(_algorithm()))
    checksum_value: str = ""

    def check(self, path: str, problems: Problems) -> None:
        """An algorithm and a value come together or not at all."""
        if self.checksum_algorithm and not self.checksum_value:
            problems.add(join(path, "checksum_value"), "required with checksum_algorithm")
        if self.checksum_value and not self.checksum_algorithm:
            problems.add(join(path, "checksum_algorithm"), "required with checksum_value")


@attrs.frozen(kw_only=True)
class UploadAction:
    """Send the file ``from`` in the container to ``to`` (an http(s) PUT or file URL)."""

    KIND: ClassVar[str] = "upload"

    artifact: str = ""
    from_: str = attrs.field(metadata=rule_metadata(non_empty()))
    to: str = attrs.field(metadata=rule_metadata(non_empty()))
    log_source: str = ""
    user: str = attrs.field(default=DEFAULT_USER, metadata=rule_metadata(non_empty()))


@attrs.frozen(kw_only=True)
class TimeoutAction:
    """Run ``action``; fail it if it has not finished within ``timeout_ms``."""

    KIND: ClassVar[str] = "timeout"

    action: Action
    timeout_ms: int = attrs.field(metadata=rule_metadata(at_least(1)))
    log_source: str = ""


@attrs.frozen(kw_only=True)
class EmitProgressAction:
    """Run ``action``, writing a message into the log before and after it."""

    KIND: ClassVar[str] = "emit_progress"

    action: Action
    start_message: str = ""
    success_message: str = ""
    failure_message_prefix: str = ""
    log_source: str = ""


@attrs.frozen(kw_only=True)
class TryAction:
    """Run ``action`` and succeed whatever it does."""

    KIND: ClassVar[str] = "try"

    action: Action
    log_source: str = ""


@attrs.frozen(kw_only=True)
class SerialAction:
    """Run ``actions`` one after another, stopping at the first failure."""

    KIND: ClassVar[str] = "serial"

    actions: tuple[Action, ...] = attrs.field(metadata=rule_metadata(non_empty_items()))
    log_source: str = ""


@attrs.frozen(kw_only=True)
class ParallelAction:
    """Run ``actions`` at once; fail when any failed, after all have finished."""

    KIND: ClassVar[str] = "parallel"

    actions: tuple[Action, ...] = attrs.field(metadata=rule_metadata(non_empty_items()))
    log_source: str = ""


@attrs.frozen(kw_only=True)
class CodependentAction:
    """Run ``actions`` at once; the first failure cancels the rest."""

    KIND: ClassVar[str] = "codependent"

    actions: tuple[Action, ...] = attrs.field(metadata=rule_metadata(non_empty_items()))
    log_source: str = ""


Action = (
    RunAction
    | DownloadAction
    | UploadAction
    | TimeoutAction
    | EmitProgressAction
    | TryAction
    | SerialAction
    | ParallelAction
    | CodependentAction
)
"""Any action; a union of the kinds above."""

ACTION_KINDS: tuple[type, ...] = (
    RunAction,
    DownloadAction,
    UploadAction,
    TimeoutAction,
    EmitProgressAction,
    TryAction,
    SerialAction,
    ParallelAction,
    CodependentAction,
)
