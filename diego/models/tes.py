"""GA4GH TES 1.1 tasks as pure models: the document, its validation, its views.

TES (the Task Execution Service, ga4gh/task-execution-schemas v1.1) is the front
door workflow engines speak. This module is its model layer only: attrs classes
whose attribute names are the TES wire names (snake_case, as TES 1.1 writes them;
Funnel's older docs write camelCase), decoded and encoded by the schema-driven
codec, so that a bad document is refused with every problem named by its field
path (``executors[0].image: required``).

What a client POSTs is decoded by ``decode_create``; what a GET returns is one of
the three TES views, built by ``view``; ``service_info`` builds the GA4GH
service-info document. No HTTP and no store here: the endpoints and the
translation to internal Tasks build on this.

Times are RFC 3339 strings, as on the wire (``rfc3339`` writes one from Diego's
nanoseconds since the epoch).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import attrs

from diego.models.codec import Problems, decode, encode, join, map_field
from diego.models.limits import Limits
from diego.models.rules import (
    Rule,
    at_least,
    max_bytes,
    non_empty,
    non_empty_items,
    pattern,
    read_only,
    rule_metadata,
)

TES_VERSION = "1.1.0"

TES_DOMAIN = "tes"
"""The Diego domain of the internal Tasks that run TES tasks."""
"""The version of the TES specification these models follow."""

MAX_CONTENT_BYTES = 128 * 1024
"""The largest ``inputs[].content`` accepted, as UTF-8 bytes.

TES asks servers to accept at least 128 KiB; larger files belong in storage.
"""

SUPPORTED_SCHEMES = ("file", "http", "https", "s3")
"""The URL schemes inputs are fetched from and outputs are stored to."""

WILDCARDS = frozenset("*?[")
"""The characters that make an output path a POSIX pattern (IEEE 1003.1, 2.13)."""

READ_ONLY_FIELDS = ("id", "state", "logs", "creation_time")
"""Task fields only the server sets; ``decode_create`` drops them."""


class TesState(enum.StrEnum):
    """A task's state, as the server defines it."""

    UNKNOWN = "UNKNOWN"
    QUEUED = "QUEUED"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    CANCELED = "CANCELED"
    PREEMPTED = "PREEMPTED"
    CANCELING = "CANCELING"


FINAL_STATES = frozenset(
    {
        TesState.COMPLETE,
        TesState.EXECUTOR_ERROR,
        TesState.SYSTEM_ERROR,
        TesState.CANCELED,
        TesState.PREEMPTED,
    }
)
"""The states a TES task never leaves (and that retention may prune)."""


class TesFileType(enum.StrEnum):
    """Whether an input or output is one file or a directory tree."""

    FILE = "FILE"
    DIRECTORY = "DIRECTORY"


class TesView(enum.StrEnum):
    """How much of a task a GET returns."""

    MINIMAL = "MINIMAL"
    BASIC = "BASIC"
    FULL = "FULL"


DEFAULT_VIEW = TesView.MINIMAL
"""The view of a GET that names none."""


# ---------------------------------------------------------------- rules


def absolute_path() -> Rule:
    """A path inside the container, which TES requires to be absolute."""

    def check(value: str) -> str | None:
        return None if value.startswith("/") else "must be an absolute path"

    return Rule(check, {"pattern": "^/"})


def storage_url() -> Rule:
    """A URL whose scheme is one of SUPPORTED_SCHEMES, naming a host, bucket or path."""
    return Rule(_check_storage_url, {"format": "uri"})


def _check_storage_url(value: str) -> str | None:
    schemes = ", ".join(SUPPORTED_SCHEMES)
    try:
        parts = urlsplit(value)
    except ValueError:
        return f"must be a URL with one of the schemes {schemes}"
    if not parts.scheme:
        return f"must be a URL with one of the schemes {schemes}"
    if parts.scheme not in SUPPORTED_SCHEMES:
        return f"unsupported scheme {parts.scheme!r}; supported: {schemes}"
    if parts.scheme == "file":
        return None if parts.path.startswith("/") else "file URL must have an absolute path"
    if not parts.netloc:
        return f"{parts.scheme} URL must name a {'bucket' if parts.scheme == 's3' else 'host'}"
    return None


def positive() -> Rule:
    """A finite number greater than zero."""

    def check(value: float) -> str | None:
        return None if math.isfinite(value) and value > 0 else "must be > 0"

    # OpenAPI 3.0's form (the API document is 3.0.3): a boolean beside minimum.
    return Rule(check, {"minimum": 0, "exclusiveMinimum": True})


def is_wildcard(path: str) -> bool:
    """Whether ``path`` is a pattern selecting many outputs (``/out/*.txt``)."""
    return any(c in WILDCARDS for c in path)


def _literal_head(path: str) -> str:
    """``path`` up to its first wildcard: the part a path_prefix may cover."""
    for i, c in enumerate(path):
        if c in WILDCARDS:
            return path[:i]
    return path


# ---------------------------------------------------------------- the document


@attrs.frozen(kw_only=True)
class TesInput:
    """An input file or directory: fetched from ``url``, or written from ``content``.

    Exactly one of ``url`` and ``content`` is given; ``content`` (a file's text,
    at most MAX_CONTENT_BYTES) makes a FILE.
    """

    name: str | None = None
    description: str | None = None
    url: str | None = attrs.field(default=None, metadata=rule_metadata(storage_url()))
    path: str = attrs.field(metadata=rule_metadata(absolute_path()))
    type: TesFileType = TesFileType.FILE
    content: str | None = attrs.field(
        default=None, metadata=rule_metadata(max_bytes(MAX_CONTENT_BYTES))
    )
    streamable: bool = False

    def check(self, path: str, problems: Problems) -> None:
        """One source, url or content; content is a file."""
        if self.url is None and self.content is None:
            problems.add(path, "give url or content")
        elif self.url is not None and self.content is not None:
            problems.add(path, "give url or content, not both")
        if self.content is not None and self.type is not TesFileType.FILE:
            problems.add(join(path, "type"), "must be FILE when content is given")


@attrs.frozen(kw_only=True)
class TesOutput:
    """An output file or directory, stored at ``url`` after the executors ran.

    A ``path`` with wildcards selects many outputs; each is stored at ``url`` plus
    its path less ``path_prefix``, which such a path needs (and only such a path).
    """

    name: str | None = None
    description: str | None = None
    url: str = attrs.field(metadata=rule_metadata(storage_url()))
    path: str = attrs.field(metadata=rule_metadata(absolute_path()))
    path_prefix: str | None = None
    type: TesFileType = TesFileType.FILE

    def check(self, path: str, problems: Problems) -> None:
        """A wildcard path has a path_prefix covering its literal head; no other has one."""
        where = join(path, "path_prefix")
        if not is_wildcard(self.path):
            if self.path_prefix is not None:
                problems.add(where, "only allowed when path has a wildcard (*, ? or [)")
        elif self.path_prefix is None:
            problems.add(where, "required when path has a wildcard")
        elif not _literal_head(self.path).startswith(self.path_prefix):
            problems.add(where, "must be a prefix of path before its first wildcard")


@attrs.frozen(kw_only=True)
class TesResources:
    """What the task asks of the machine it runs on."""

    cpu_cores: int | None = attrs.field(default=None, metadata=rule_metadata(at_least(1)))
    preemptible: bool | None = None
    ram_gb: float | None = attrs.field(default=None, metadata=rule_metadata(positive()))
    disk_gb: float | None = attrs.field(default=None, metadata=rule_metadata(positive()))
    zones: tuple[str, ...] = ()
    backend_parameters: Mapping[str, str] = map_field()
    backend_parameters_strict: bool = False


@attrs.frozen(kw_only=True)
class TesExecutor:
    """One command in one container image; a task's executors run in order."""

    image: str = attrs.field(metadata=rule_metadata(non_empty()))
    command: tuple[str, ...] = attrs.field(metadata=rule_metadata(non_empty_items()))
    workdir: str | None = attrs.field(default=None, metadata=rule_metadata(absolute_path()))
    stdin: str | None = attrs.field(default=None, metadata=rule_metadata(absolute_path()))
    stdout: str | None = attrs.field(default=None, metadata=rule_metadata(absolute_path()))
    stderr: str | None = attrs.field(default=None, metadata=rule_metadata(absolute_path()))
    env: Mapping[str, str] = map_field()
    ignore_error: bool = False

    def check(self, path: str, problems: Problems) -> None:
        """The program is named; environment names are names: not empty, no ``=``."""
        if not self.command[0]:
            problems.add(f"{join(path, 'command')}[0]", "the program must not be empty")
        for name in self.env:
            if not name or "=" in name:
                problems.add(join(join(path, "env"), name), "name must not be empty or hold =")


@attrs.frozen(kw_only=True)
class TesExecutorLog:
    """What one executor did.

    TES marks ``exit_code`` required; it is left out while the executor runs,
    rather than reported as a made-up 0.
    """

    start_time: str | None = None
    end_time: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    exit_code: int | None = None


@attrs.frozen(kw_only=True)
class TesOutputFileLog:
    """One file stored by the task; ``size_bytes`` is a decimal string, as TES has it."""

    url: str
    path: str
    size_bytes: str = attrs.field(metadata=rule_metadata(pattern("[0-9]+", "must be digits")))


@attrs.frozen(kw_only=True)
class TesTaskLog:
    """One attempt at the task: its executors' logs and the files it stored."""

    logs: tuple[TesExecutorLog, ...] = ()
    metadata: Mapping[str, str] = map_field()
    start_time: str | None = None
    end_time: str | None = None
    outputs: tuple[TesOutputFileLog, ...] = ()
    system_logs: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class TesTask:
    """A TES task: what the client asked for, and (read-only) how it went."""

    id: str | None = attrs.field(default=None, metadata=rule_metadata(read_only()))
    state: TesState = attrs.field(default=TesState.UNKNOWN, metadata=rule_metadata(read_only()))
    name: str | None = None
    description: str | None = None
    inputs: tuple[TesInput, ...] = ()
    outputs: tuple[TesOutput, ...] = ()
    resources: TesResources | None = None
    executors: tuple[TesExecutor, ...] = attrs.field(metadata=rule_metadata(non_empty_items()))
    volumes: tuple[str, ...] = ()
    tags: Mapping[str, str] = map_field()
    logs: tuple[TesTaskLog, ...] = attrs.field(default=(), metadata=rule_metadata(read_only()))
    creation_time: str | None = attrs.field(default=None, metadata=rule_metadata(read_only()))

    def check(self, path: str, problems: Problems) -> None:
        """Volumes are absolute paths, like every other path in the container."""
        for i, volume in enumerate(self.volumes):
            if not volume.startswith("/"):
                problems.add(f"{join(path, 'volumes')}[{i}]", "must be an absolute path")


# ---------------------------------------------------------------- create


def decode_create(data: Any, limits: Limits | None = None) -> TesTask:
    """The task a client POSTs, validated; raises InvalidDocument naming every problem.

    The read-only fields (READ_ONLY_FIELDS: id, state, logs, creation_time) are
    ignored, as Funnel ignores them: a client may send back a task it fetched.
    They are dropped before decoding, never trusted, so the result has none of
    them; the server fills them in (``attrs.evolve(task, id=..., state=...)``).
    """
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in READ_ONLY_FIELDS}
    return decode(TesTask, data, limits=limits)


# ---------------------------------------------------------------- views


def view(task: TesTask, kind: str) -> dict[str, Any]:
    """``task`` as the TES view ``kind`` (MINIMAL, BASIC or FULL) shows it.

    MINIMAL is the id and state only; BASIC is everything but the potentially
    large fields (executor logs' stdout and stderr, inputs' content, task logs'
    system_logs); FULL is everything. Raises ValueError for any other ``kind``.
    """
    try:
        chosen = TesView(kind)
    except ValueError:
        names = ", ".join(TesView)
        raise ValueError(f"view must be one of {names}, not {kind!r}") from None
    if chosen is TesView.MINIMAL:
        return _minimal(task)
    doc: dict[str, Any] = encode(task)
    return _basic(doc) if chosen is TesView.BASIC else doc


def _minimal(task: TesTask) -> dict[str, Any]:
    doc: dict[str, Any] = {"state": task.state.value}
    return doc if task.id is None else {"id": task.id, **doc}


def _without(doc: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in keys}


def _basic(doc: dict[str, Any]) -> dict[str, Any]:
    out = dict(doc)
    if "inputs" in out:
        out["inputs"] = [_without(i, "content") for i in out["inputs"]]
    if "logs" in out:
        out["logs"] = [_basic_task_log(log) for log in out["logs"]]
    return out


def _basic_task_log(log: dict[str, Any]) -> dict[str, Any]:
    out = _without(log, "system_logs")
    out["logs"] = [_without(e, "stdout", "stderr") for e in out.get("logs", [])]
    return out


# ---------------------------------------------------------------- service-info

SERVICE_ID = "org.diego.tes"
SERVICE_NAME = "diego TES"
ORGANIZATION_NAME = "diego"
ORGANIZATION_URL = "https://github.com/cloudfoundry/diego-release"
"""GA4GH requires an organization URL; this names the project diego re-makes."""


def service_info(
    version: str,
    storage: list[str],
    backend_parameters: list[str],
    *,
    organization_name: str = ORGANIZATION_NAME,
    organization_url: str = ORGANIZATION_URL,
) -> dict[str, Any]:
    """The GA4GH service-info document of this TES server.

    ``version`` is diego's own version, ``storage`` some of the storage locations
    tasks may use (URLs), ``backend_parameters`` every resources.backend_parameters
    key the backend supports.
    """
    return {
        "id": SERVICE_ID,
        "name": SERVICE_NAME,
        "type": {"group": "org.ga4gh", "artifact": "tes", "version": TES_VERSION},
        "description": "Cloud Foundry's Diego scheduler re-made in Python, serving GA4GH TES.",
        "organization": {"name": organization_name, "url": organization_url},
        "version": version,
        "storage": list(storage),
        "tesResources_backend_parameters": list(backend_parameters),
    }


# ---------------------------------------------------------------- times


def rfc3339(nanoseconds: int) -> str:
    """Nanoseconds since the Unix epoch (Diego's timestamps) as RFC 3339 in UTC."""
    seconds, fraction = divmod(nanoseconds, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{fraction:09d}Z"
