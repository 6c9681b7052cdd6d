"""Settings: defaults < file < environment < flags, every bad setting named."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from diego.config import ConfigError, Settings, cell_token, load
from diego.models.codec import encode
from diego.models.task import SecurityGroupRule

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "diego.toml"
    path.write_text(text)
    return path


def test_defaults_are_diego_defaults() -> None:
    """With nothing given, a node listens on 127.0.0.1:8889 with data in ./diego-data."""
    settings = load(environ={})
    assert settings.server.listen == "127.0.0.1:8889"
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8889)
    assert settings.server.data_dir == "./diego-data"
    assert settings.server.max_body_bytes == 1024 * 1024


def test_shipped_config_file_states_every_default() -> None:
    """config/diego.toml names every setting, each with its default value."""
    with open(REPO / "config" / "diego.toml", "rb") as f:
        document = tomllib.load(f)
    assert document == encode(Settings())


def test_precedence_file_then_environment_then_flags(tmp_path: Path) -> None:
    """A flag beats the environment, which beats the file, which beats the default."""
    path = write(
        tmp_path,
        '[server]\nlisten = "127.0.0.1:1"\ndata_dir = "/file"\nmax_body_bytes = 10\n',
    )
    environ = {"DIEGO_SERVER_LISTEN": "127.0.0.1:2", "DIEGO_SERVER_DATA_DIR": "/env"}
    settings = load(path, environ, {"server.listen": "127.0.0.1:3", "server.data_dir": None})
    assert settings.server.listen == "127.0.0.1:3"  # flag
    assert settings.server.data_dir == "/env"  # environment (the flag was not given)
    assert settings.server.max_body_bytes == 10  # file


def test_environment_values_take_the_setting_type() -> None:
    """Environment strings become integers and numbers where the setting is one."""
    settings = load(
        environ={"DIEGO_EVENTS_QUEUE_SIZE": "7", "DIEGO_EVENTS_HEARTBEAT_INTERVAL": "0.5"}
    )
    assert settings.events.queue_size == 7
    assert settings.events.heartbeat_interval == 0.5


@pytest.mark.parametrize(
    ("text", "named"),
    [
        pytest.param("[server]\nbogus = 1\n", "server.bogus: unknown field", id="unknown-key"),
        pytest.param("[nope]\nx = 1\n", "nope: unknown field", id="unknown-section"),
        pytest.param(
            '[server]\nlisten = "nohost"\n', "server.listen: must be HOST:PORT", id="listen"
        ),
        pytest.param(
            '[server]\nmax_body_bytes = "big"\n',
            "server.max_body_bytes: must be an integer",
            id="type",
        ),
        pytest.param(
            "[server]\nmax_body_bytes = 0\n", "server.max_body_bytes: must be >= 1", id="range"
        ),
        pytest.param('[log]\nlevel = "loud"\n', "log.level: must be one of", id="choice"),
        pytest.param(
            "[events]\nheartbeat_interval = 0\n",
            "events.heartbeat_interval: must be > 0",
            id="positive",
        ),
        pytest.param("server = 3\n", "server: must be a [section]", id="not-a-section"),
        pytest.param("[server\n", "config file", id="not-toml"),
    ],
)
def test_bad_file_settings_are_named(tmp_path: Path, text: str, named: str) -> None:
    """A bad setting in the file is refused with its dotted name and the rule."""
    with pytest.raises(ConfigError, match=named.replace("[", r"\[")):
        load(write(tmp_path, text), environ={})


def test_bad_environment_value_names_the_variable() -> None:
    """An environment value of the wrong type names the variable."""
    with pytest.raises(ConfigError, match="DIEGO_EVENTS_QUEUE_SIZE: 'many' is not an integer"):
        load(environ={"DIEGO_EVENTS_QUEUE_SIZE": "many"})


def test_tes_egress_is_rules_from_the_file_or_json_in_the_environment(tmp_path: Path) -> None:
    """``[tes] egress`` takes security group rules as tables (DIEGO_TES_EGRESS as a JSON
    list), checked like a Task's; with local cells it is refused, naming why."""
    text = (
        '[cell]\nbackend = "docker"\n[tes]\n'
        'egress = [{ protocol = "tcp", destination = "10.0.0.5", ports = [9000] }]\n'
    )
    rule = SecurityGroupRule(protocol="tcp", destination="10.0.0.5", ports=(9000,))
    assert load(write(tmp_path, text), environ={}).tes.egress == (rule,)
    env = {
        "DIEGO_CELL_BACKEND": "docker",
        "DIEGO_TES_EGRESS": '[{"protocol": "tcp", "destination": "10.0.0.5", "ports": [9000]}]',
    }
    assert load(environ=env).tes.egress == (rule,)
    with pytest.raises(ConfigError, match=r"tes\.egress\[0\]\.port_range: required"):
        load(environ={**env, "DIEGO_TES_EGRESS": '[{"protocol": "tcp", "destination": "1.2.3.4"}]'})
    with pytest.raises(ConfigError, match="DIEGO_TES_EGRESS: '\\[' is not a JSON list"):
        load(environ={**env, "DIEGO_TES_EGRESS": "["})
    with pytest.raises(ConfigError, match=r"tes\.egress: local cells .* all-or-nothing"):
        load(environ={**env, "DIEGO_CELL_BACKEND": "local"})
    with pytest.raises(ConfigError, match=r"tes\.egress: 1 rules, more than limits\.max_rules"):
        load(environ={**env, "DIEGO_LIMITS_MAX_RULES": "0"})


def test_missing_file_is_named(tmp_path: Path) -> None:
    """A config file that does not exist is an error naming it."""
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        load(tmp_path / "missing.toml", environ={})


def test_unrelated_environment_is_ignored() -> None:
    """Variables outside the DIEGO_<SECTION>_ scheme (like DIEGO_API) are not settings."""
    assert load(environ={"DIEGO_API": "http://x", "PATH": "/bin"}) == Settings()


def test_the_cell_token_comes_from_the_environment_or_its_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("  from-the-file\n")
    settings = load(overrides={"server.cell_token_file": str(token_file)}, environ={})
    assert cell_token(settings, {}) == "from-the-file"
    assert cell_token(settings, {"DIEGO_LINK_TOKEN": "from-env"}) == "from-env"
    assert cell_token(load(environ={}), {}) == ""
    token_file.write_text("\n")
    with pytest.raises(ConfigError, match=r"server\.cell_token_file: .* is empty"):
        cell_token(settings, {})
