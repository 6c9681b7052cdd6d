"""Settings: defaults < config file (TOML) < ``DIEGO_*`` environment < flags.

Every setting lives in a section; ``[server] listen`` is ``server.listen`` in
errors and ``DIEGO_SERVER_LISTEN`` in the environment. The settings are decoded by
the same codec as the API's documents, so an unknown or ill-typed setting is
refused with its name, never ignored. ``config/diego.toml`` documents them all.
"""

from __future__ import annotations

import json
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from diego.models.codec import InvalidDocument, decode
from diego.models.crash_policy import CrashPolicy
from diego.models.limits import Limits
from diego.models.rules import (
    INT32_MAX,
    Rule,
    at_least,
    between,
    non_empty,
    one_of,
    rule_metadata,
)
from diego.models.task import SecurityGroupRule
from diego.roles import RoleError, parse_roles

ENV_PREFIX = "DIEGO_"


def _host_port() -> Rule:
    def check(value: str) -> str | None:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            return "must be HOST:PORT"
        return None

    return Rule(check)


def _positive() -> Rule:
    return Rule(lambda v: None if v > 0 else "must be > 0", {"exclusiveMinimum": 0})


@attrs.frozen(kw_only=True)
class ServerSettings:
    """The HTTP API and where the node keeps its files."""

    listen: str = attrs.field(default="127.0.0.1:8889", metadata=rule_metadata(_host_port()))
    data_dir: str = attrs.field(default="./diego-data", metadata=rule_metadata(non_empty()))
    max_body_bytes: int = attrs.field(default=1024 * 1024, metadata=rule_metadata(at_least(1)))
    cell_token_file: str = ""

    @property
    def host(self) -> str:
        """The address to listen on."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """The port to listen on."""
        return int(self.listen.rpartition(":")[2])


@attrs.frozen(kw_only=True)
class NodeSettings:
    """Which roles this process runs (``diego.roles``), and where a cell-only node
    finds the BBS and is found by it."""

    role: str = attrs.field(default="all", metadata=rule_metadata(non_empty()))
    bbs_url: str = ""
    advertise_url: str = ""  # empty: http://HOST:PORT of [server] listen


@attrs.frozen(kw_only=True)
class StoreSettings:
    """The BBS store: empty ``url`` means SQLite in the data directory."""

    url: str = ""


@attrs.frozen(kw_only=True)
class EventsSettings:
    """The event bus and the event stream."""

    queue_size: int = attrs.field(default=1024, metadata=rule_metadata(at_least(1)))
    heartbeat_interval: float = attrs.field(default=15.0, metadata=rule_metadata(_positive()))


@attrs.frozen(kw_only=True)
class CellSettings:
    """The cells a node runs itself (embedded cells)."""

    count: int = attrs.field(default=1, metadata=rule_metadata(at_least(0)))
    zones: int = attrs.field(default=1, metadata=rule_metadata(at_least(1)))
    name_prefix: str = ""  # empty: this machine's host name
    id: str = ""  # the one cell's id (count = 1); empty: NAME_PREFIX-0
    zone: str = ""  # every cell's zone; empty: z0, z1, ... by [cell] zones
    stacks: tuple[str, ...] = ("linux",)
    backend: str = attrs.field(default="local", metadata=rule_metadata(one_of("local", "docker")))
    memory_mb: int = attrs.field(default=0, metadata=rule_metadata(at_least(0)))
    disk_mb: int = attrs.field(default=0, metadata=rule_metadata(at_least(0)))
    max_containers: int = attrs.field(default=256, metadata=rule_metadata(at_least(1)))
    container_uid: int = attrs.field(default=100_000, metadata=rule_metadata(at_least(1)))
    allow_privileged: bool = False
    max_pids: int = attrs.field(default=1024, metadata=rule_metadata(between(0, INT32_MAX)))
    spare_containers: int = attrs.field(default=2, metadata=rule_metadata(at_least(0)))
    poll_interval: float = attrs.field(default=30.0, metadata=rule_metadata(_positive()))
    presence_ttl: float = attrs.field(default=30.0, metadata=rule_metadata(_positive()))
    evacuation_timeout: float = attrs.field(default=600.0, metadata=rule_metadata(at_least(0)))
    evacuation_poll: float = attrs.field(default=1.0, metadata=rule_metadata(_positive()))
    monitor_interval: float = attrs.field(default=30.0, metadata=rule_metadata(_positive()))
    monitor_unhealthy_interval: float = attrs.field(
        default=0.5, metadata=rule_metadata(_positive())
    )


def _stack_images() -> Rule:
    def check(value: tuple[str, ...]) -> str | None:
        for entry in value:
            stack, sep, image = entry.partition("=")
            if not sep or not stack.strip() or not image.strip():
                return f"entries must be STACK=IMAGE, not {entry!r}"
        return None

    return Rule(check)


@attrs.frozen(kw_only=True)
class DockerSettings:
    """The Docker backend (``[cell] backend = "docker"``)."""

    url: str = ""  # "": DOCKER_HOST, else unix:///var/run/docker.sock
    preloaded: tuple[str, ...] = attrs.field(
        default=("linux=diego/busybox:latest",), metadata=rule_metadata(_stack_images())
    )
    keepalive: str = attrs.field(default="/bin/busybox", metadata=rule_metadata(non_empty()))
    pull_timeout: float = attrs.field(default=300.0, metadata=rule_metadata(_positive()))

    def images(self) -> dict[str, str]:
        """``preloaded`` as a map of stack name to image."""
        pairs = (entry.partition("=") for entry in self.preloaded)
        return {stack.strip(): image.strip() for stack, _, image in pairs}


@attrs.frozen(kw_only=True)
class TesSettingsSection:
    """GA4GH TES tasks (/ga4gh/tes/v1)."""

    stack: str = attrs.field(default="linux", metadata=rule_metadata(non_empty()))
    retention: float = attrs.field(default=7 * 24 * 3600.0, metadata=rule_metadata(_positive()))
    prune_interval: float = attrs.field(default=3600.0, metadata=rule_metadata(_positive()))
    local_runs_without_image: bool = True
    tail_bytes: int = attrs.field(default=10 * 1024, metadata=rule_metadata(at_least(0)))
    egress: tuple[SecurityGroupRule, ...] = ()


@attrs.frozen(kw_only=True)
class AuctionSettings:
    """The auctioneer."""

    retry_interval: float = attrs.field(default=1.0, metadata=rule_metadata(_positive()))
    max_batch: int = attrs.field(default=10_000, metadata=rule_metadata(at_least(1)))
    intake_poll: float = attrs.field(default=1.0, metadata=rule_metadata(_positive()))
    cell_state_timeout: float = attrs.field(default=1.0, metadata=rule_metadata(_positive()))


@attrs.frozen(kw_only=True)
class ConvergerSettingsSection:
    """The converger (seconds)."""

    interval: float = attrs.field(default=30.0, metadata=rule_metadata(_positive()))
    kick_task_interval: float = attrs.field(default=30.0, metadata=rule_metadata(at_least(0)))
    expire_pending_task: float = attrs.field(default=1800.0, metadata=rule_metadata(at_least(0)))
    expire_completed_task: float = attrs.field(default=120.0, metadata=rule_metadata(at_least(0)))
    kick_lrp_interval: float = attrs.field(default=30.0, metadata=rule_metadata(at_least(0)))
    max_lrp_creates: int = attrs.field(default=10_000, metadata=rule_metadata(at_least(1)))


@attrs.frozen(kw_only=True)
class CrashSettings:
    """When crashed LRP instances are restarted (Diego's defaults)."""

    immediate_restarts: int = attrs.field(default=3, metadata=rule_metadata(at_least(0)))
    backoff_base: float = attrs.field(default=30.0, metadata=rule_metadata(_positive()))
    max_backoff: float = attrs.field(default=960.0, metadata=rule_metadata(_positive()))
    max_restarts: int = attrs.field(default=200, metadata=rule_metadata(at_least(0)))
    reset_after_running: float = attrs.field(default=300.0, metadata=rule_metadata(at_least(0)))

    def policy(self) -> CrashPolicy:
        """These settings as the pure policy."""
        return CrashPolicy(
            immediate_restarts=self.immediate_restarts,
            backoff_base_s=self.backoff_base,
            max_backoff_s=self.max_backoff,
            max_restarts=self.max_restarts,
            reset_after_running_s=self.reset_after_running,
        )


@attrs.frozen(kw_only=True)
class CallbackSettings:
    """Completion callbacks."""

    timeout: float = attrs.field(default=10.0, metadata=rule_metadata(_positive()))
    immediate_retries: int = attrs.field(default=3, metadata=rule_metadata(at_least(0)))


DEFAULT_FILE_ROOT = "files"
"""The file:// root a node has unless configured: ``files/`` in its data dir."""


@attrs.frozen(kw_only=True)
class TransferSettings:
    """Downloads and uploads."""

    # Relative roots are below the data dir; () refuses every file URL.
    file_roots: tuple[str, ...] = (DEFAULT_FILE_ROOT,)
    timeout: float = attrs.field(default=600.0, metadata=rule_metadata(_positive()))
    s3_endpoint_url: str = ""  # "": AWS's own endpoint for the region
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""  # both "": aiobotocore's default credential chain
    s3_secret_access_key: str = ""


@attrs.frozen(kw_only=True)
class LogsSettings:
    """Container logs kept for GET /v1/logs."""

    keep_lines: int = attrs.field(default=1000, metadata=rule_metadata(at_least(0)))
    keep_guids: int = attrs.field(default=10_000, metadata=rule_metadata(at_least(1)))
    # A cell node ships its lines to the control node: batched for ship_interval
    # seconds, at most ship_batch_lines and ship_batch_bytes each, holding at most
    # ship_buffer_bytes not yet taken (the oldest dropped past it), retried every
    # ship_retry_interval.
    ship_interval: float = attrs.field(default=0.1, metadata=rule_metadata(_positive()))
    ship_batch_lines: int = attrs.field(default=500, metadata=rule_metadata(at_least(1)))
    ship_batch_bytes: int = attrs.field(default=256 * 1024, metadata=rule_metadata(at_least(1)))
    ship_buffer_bytes: int = attrs.field(
        default=64 * 1024 * 1024, metadata=rule_metadata(at_least(1))
    )
    ship_retry_interval: float = attrs.field(default=1.0, metadata=rule_metadata(_positive()))


@attrs.frozen(kw_only=True)
class LogSettings:
    """Logging."""

    level: str = attrs.field(
        default="info", metadata=rule_metadata(one_of("debug", "info", "warning", "error"))
    )


@attrs.frozen(kw_only=True)
class Settings:
    """Every setting of a node."""

    node: NodeSettings = attrs.Factory(NodeSettings)
    server: ServerSettings = attrs.Factory(ServerSettings)
    store: StoreSettings = attrs.Factory(StoreSettings)
    events: EventsSettings = attrs.Factory(EventsSettings)
    cell: CellSettings = attrs.Factory(CellSettings)
    docker: DockerSettings = attrs.Factory(DockerSettings)
    tes: TesSettingsSection = attrs.Factory(TesSettingsSection)
    auction: AuctionSettings = attrs.Factory(AuctionSettings)
    converger: ConvergerSettingsSection = attrs.Factory(ConvergerSettingsSection)
    crash: CrashSettings = attrs.Factory(CrashSettings)
    callbacks: CallbackSettings = attrs.Factory(CallbackSettings)
    transfer: TransferSettings = attrs.Factory(TransferSettings)
    logs: LogsSettings = attrs.Factory(LogsSettings)
    log: LogSettings = attrs.Factory(LogSettings)
    limits: Limits = attrs.Factory(Limits)

    @property
    def data_dir(self) -> Path:
        """The data directory as a path."""
        return Path(self.server.data_dir)


class ConfigError(Exception):
    """A setting is unknown, ill-typed or out of range; the message names it."""


CELL_TOKEN_ENV = "DIEGO_LINK_TOKEN"


def cell_token(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    """The token of the cell link: ``DIEGO_LINK_TOKEN``, else the contents of
    ``[server] cell_token_file`` (its surrounding blanks stripped), else empty. Kept out
    of the settings, so that nothing printing them can show it."""
    env = os.environ if environ is None else environ
    token = env.get(CELL_TOKEN_ENV, "").strip()
    path = settings.server.cell_token_file
    if not token and path:
        try:
            token = Path(path).read_text().strip()
        except OSError as e:
            raise ConfigError(f"server.cell_token_file: {path}: {e.strerror}") from None
        if not token:
            raise ConfigError(f"server.cell_token_file: {path} is empty")
    return token


def load(
    file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from defaults, then ``file``, then ``environ``, then ``overrides``.

    ``overrides`` maps dotted names (``server.listen``) to values, as flags give them.
    """
    layers: dict[str, dict[str, Any]] = {}
    if file is not None:
        try:
            with open(file, "rb") as f:
                document = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"config file {file}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {file}: {e}") from None
        for section, values in document.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{section}: must be a [section] of settings")
            layers.setdefault(section, {}).update(values)
    for name, text in _environment(environ if environ is not None else os.environ).items():
        section, key = name
        layers.setdefault(section, {})[key] = _coerce(section, key, text)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            section, _, key = dotted.partition(".")
            layers.setdefault(section, {})[key] = value
    try:
        settings = decode(Settings, layers)
        settings.crash.policy()  # its own cross-checks (max_backoff >= backoff_base ...)
    except InvalidDocument as e:
        raise ConfigError(str(e)) from None
    except ValueError as e:
        raise ConfigError(f"crash: {e}") from None
    try:
        parse_roles(settings.node.role)
    except RoleError as e:
        raise ConfigError(str(e)) from None
    if settings.cell.id and settings.cell.count != 1:
        raise ConfigError(f"cell.id: names one cell, but cell.count is {settings.cell.count}")
    if len(settings.tes.egress) > settings.limits.max_rules:
        raise ConfigError(
            f"tes.egress: {len(settings.tes.egress)} rules, more than limits.max_rules "
            f"({settings.limits.max_rules}): every TES task would be refused"
        )
    if settings.tes.egress and settings.cell.backend == "local":
        raise ConfigError(
            "tes.egress: local cells honour security group rules all-or-nothing (any rule "
            'gives the host\'s whole network), so TES egress needs [cell] backend = "docker", '
            "whose containers get exactly their rules"
        )
    return settings


def _environment(environ: Mapping[str, str]) -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    sections = {f.name: f.type for f in attrs.fields(Settings)}
    for section in sections:
        prefix = f"{ENV_PREFIX}{section.upper()}_"
        for name, text in environ.items():
            if name.startswith(prefix):
                found[(section, name[len(prefix) :].lower())] = text
    return found


def _coerce(section: str, key: str, text: str) -> Any:
    """An environment string as the type the setting takes (left as text if unknown)."""
    section_type = typing.get_type_hints(Settings)[section]
    kind = typing.get_type_hints(section_type).get(key)
    name = f"{ENV_PREFIX}{section.upper()}_{key.upper()}"
    try:
        if kind is bool:
            if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("1", "true", "yes")
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if typing.get_origin(kind) is tuple and typing.get_args(kind)[0] is not str:
            return json.loads(text)  # a list of tables, as JSON
        if typing.get_origin(kind) is tuple:
            return [item.strip() for item in text.split(",") if item.strip()]
    except ValueError:
        words: dict[Any, str] = {bool: "true or false", int: "an integer", float: "a number"}
        if typing.get_origin(kind) is tuple:
            words[kind] = "a JSON list"
        raise ConfigError(f"{name}: {text!r} is not {words.get(kind, 'valid')}") from None
    return text
