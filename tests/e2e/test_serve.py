"""``diego serve`` as a real process: startup, persistence, shutdown, bad input, config."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from diego.models.codec import decode
from diego.models.lrp import DesiredLRP
from diego.state.store import Store, sqlite_url

from .conftest import (
    DIEGO,
    NO_CELLS,
    STOP_DEADLINE,
    Server,
    clean_env,
    free_port,
    no_traceback,
    poll,
    task_request,
)

PROMPT_STOP = 10.0
"""How long to wait for a stop (aiohttp's own graceful limit is 60 s, so a stop that
waits for open connections does not end within it)."""


def stopped_cleanly(log: str) -> bool:
    """Whether the node's log shows a stop that evacuated its (no) cells, then ended."""
    stopping = log.find("node-stopping: evacuating 0 cells")
    return 0 <= stopping < log.find("node-stopped") and no_traceback(log)


def test_ping_answers(server: Server) -> None:
    """A started server answers GET /v1/ping with available: true; its data dir has
    the default file:// root, ``files/``."""
    reply = server.request("GET", "/v1/ping")
    assert reply.status == 200
    assert reply.body["available"] is True
    assert reply.body["version"]
    assert (server.data_dir / "files").is_dir()


def test_task_survives_kill_9_and_restart(server: Server) -> None:
    """A created Task is durable: after kill -9 and a restart on the same data dir it is
    unchanged and still PENDING."""
    created = server.post_json("/v1/tasks", task_request("durable-1", annotation="keep me"))
    assert created.status == 201, created.text
    before = server.request("GET", "/v1/tasks/durable-1").body

    assert server.kill() == -9
    server.start(*NO_CELLS)

    after = server.request("GET", "/v1/tasks/durable-1")
    assert after.status == 200, after.text
    assert after.body == before
    assert after.body["state"] == "PENDING"
    assert after.body["annotation"] == "keep me"
    listed = server.request("GET", "/v1/tasks").body
    assert [t["task_guid"] for t in listed] == ["durable-1"]


def test_sigterm_stops_with_exit_code_zero(server: Server) -> None:
    """SIGTERM makes the server exit 0 (within the wait's deadline; terminate() raises
    past it), after a stop that evacuated its cells and closed the node."""
    assert server.terminate(PROMPT_STOP) == 0
    assert stopped_cleanly(server.stderr), server.stderr


def test_open_event_stream_does_not_block_sigterm(server: Server) -> None:
    """An open /v1/events stream neither delays a SIGTERM stop nor changes its exit code 0,
    and the stream ends when the server stops."""
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=STOP_DEADLINE)
    try:
        conn.request("GET", "/v1/events")
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type", "").startswith("text/event-stream")
        first = response.readline()
        assert first.startswith(b": subscribed")

        # Exits 0 within PROMPT_STOP (terminate() raises past it): well before aiohttp's
        # 60 s graceful limit, so the open stream did not hold the stop up.
        assert server.terminate(PROMPT_STOP) == 0
        assert stopped_cleanly(server.stderr), server.stderr

        # The stream ends (EOF) rather than hanging until the socket timeout.
        rest = response.read()
        assert b"Traceback" not in rest
    finally:
        conn.close()
    assert no_traceback(server.stderr)


def test_a_client_hanging_up_its_event_stream_is_no_error(server: Server) -> None:
    """A client that hangs up on /v1/events ends its stream quietly: the events that
    follow find the connection gone, and the node logs no error or traceback."""
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=STOP_DEADLINE)
    conn.request("GET", "/v1/events")
    response = conn.getresponse()
    assert response.readline().startswith(b": subscribed")
    conn.close()
    response.close()
    for guid in ("after-hangup-1", "after-hangup-2", "after-hangup-3"):
        # Each event is a write to the closed connection; the first may still be buffered.
        assert server.post_json("/v1/tasks", task_request(guid)).status == 201
        time.sleep(0.2)
    assert server.request("GET", "/v1/ping").status == 200
    assert server.terminate(PROMPT_STOP) == 0
    assert " ERROR " not in server.stderr, server.stderr
    assert no_traceback(server.stderr), server.stderr


def test_second_server_sees_tasks_after_clean_stop(server: Server) -> None:
    """After a clean stop, a new server on the same data dir serves the same Tasks in
    the same states."""
    for guid in ("kept-a", "kept-b"):
        assert server.post_json("/v1/tasks", task_request(guid)).status == 201
    assert server.request("POST", "/v1/tasks/kept-b/cancel").status == 200
    before = server.request("GET", "/v1/tasks").body

    assert server.terminate() == 0
    server.start(*NO_CELLS)

    after = server.request("GET", "/v1/tasks").body
    assert after == before
    states = {t["task_guid"]: (t["state"], t["failure_reason"]) for t in after}
    assert states == {"kept-a": ("PENDING", ""), "kept-b": ("COMPLETED", "cancelled")}


BAD_BODIES = {
    "malformed JSON": (b'{"task_guid": "x", ', 400),
    "wrong type": (json.dumps(task_request("wrong-type", cpu_weight="heavy")).encode(), 400),
    "unknown field": (json.dumps(task_request("unknown-field", colour="blue")).encode(), 400),
    "over 1 MiB": (
        json.dumps(task_request("too-big", annotation="x" * (1024 * 1024 + 1))).encode(),
        413,
    ),
}


def test_bad_input_costs_nothing(server: Server) -> None:
    """Malformed JSON, a wrong type, an unknown field and a body over 1 MiB each get a 4xx
    with a JSON {name, message} body; nothing is stored and nothing is traced."""
    for what, (body, status) in BAD_BODIES.items():
        reply = server.request("POST", "/v1/tasks", body)
        assert reply.status == status, f"{what}: {reply.status} {reply.text[:300]}"
        assert reply.headers.get("Content-Type", "").startswith("application/json"), what
        assert isinstance(reply.body, dict), f"{what}: {reply.text[:300]}"
        assert isinstance(reply.body.get("name"), str), what
        assert reply.body["name"], what
        assert isinstance(reply.body.get("message"), str), what
        assert reply.body["message"], what

    assert server.request("GET", "/v1/tasks").body == []
    assert server.request("GET", "/v1/ping").status == 200
    assert no_traceback(server.stderr), server.stderr


def test_openapi_document_lists_paths(server: Server) -> None:
    """GET /v1/openapi.json is an OpenAPI document whose paths include /v1/tasks and
    /v1/events."""
    reply = server.request("GET", "/v1/openapi.json")
    assert reply.status == 200
    assert str(reply.body["openapi"]).startswith("3.")
    assert {"/v1/tasks", "/v1/events"} <= set(reply.body["paths"])


# ------------------------------------------------------------------ configuration


def body_of_size(guid: str, size: int) -> bytes:
    """A valid TaskCreateRequest exactly ``size`` bytes long."""
    base = len(json.dumps(task_request(guid, annotation="")))
    body = json.dumps(task_request(guid, annotation="x" * (size - base))).encode()
    assert len(body) == size
    return body


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "diego.toml"
    path.write_text(text)
    return path


LIMITED = '[server]\nlisten = "127.0.0.1:0"\nmax_body_bytes = 2000\n'


def test_config_file_sets_body_limit(server_proc: Server, tmp_path: Path) -> None:
    """A --config file's [server] listen and max_body_bytes take effect: a 3000-byte body
    gets 413 while a small one is accepted."""
    config = write_config(tmp_path, LIMITED)
    server_proc.start("--config", str(config), listen=None)

    too_big = server_proc.request("POST", "/v1/tasks", body_of_size("big", 3000))
    assert too_big.status == 413, too_big.text
    assert too_big.body["name"] == "RequestTooLarge"
    assert "2000" in too_big.body["message"]
    assert server_proc.request("POST", "/v1/tasks", body_of_size("small", 1500)).status == 201


def test_env_overrides_config_file(server_proc: Server, tmp_path: Path) -> None:
    """DIEGO_SERVER_MAX_BODY_BYTES beats the config file: with 5000 in the environment a
    3000-byte body is accepted."""
    config = write_config(tmp_path, LIMITED)
    server_proc.start(
        "--config", str(config), listen=None, env={"DIEGO_SERVER_MAX_BODY_BYTES": "5000"}
    )

    reply = server_proc.request("POST", "/v1/tasks", body_of_size("big", 3000))
    assert reply.status == 201, reply.text


def test_listen_flag_overrides_env_and_env_overrides_file(
    server_proc: Server, tmp_path: Path
) -> None:
    """For [server] listen, the environment beats the file and --listen beats the
    environment."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]  # a server that tried this port would fail to start

        config = write_config(tmp_path, f'[server]\nlisten = "127.0.0.1:{taken}"\n')
        server_proc.start(
            "--config", str(config), listen=None, env={"DIEGO_SERVER_LISTEN": "127.0.0.1:0"}
        )
        assert server_proc.port != taken
        assert server_proc.terminate() == 0

        wanted = free_port()
        server_proc.start(
            "--config",
            str(config),
            listen=f"127.0.0.1:{wanted}",
            env={"DIEGO_SERVER_LISTEN": f"127.0.0.1:{taken}"},
        )
        assert server_proc.port == wanted
        assert server_proc.request("GET", "/v1/ping").status == 200


@pytest.mark.parametrize("where", ["file", "env"])
def test_unknown_setting_is_refused_by_name(tmp_path: Path, where: str) -> None:
    """An unknown setting (in the config file or the environment) makes diego serve exit
    non-zero with a message naming it, and no traceback."""
    config = write_config(tmp_path, '[server]\nlisten = "127.0.0.1:0"\n')
    env = {}
    if where == "file":
        config.write_text('[server]\nlisten = "127.0.0.1:0"\nbogus_setting = 1\n')
    else:
        env["DIEGO_SERVER_BOGUS_SETTING"] = "1"
    done = subprocess.run(
        [str(DIEGO), "serve", "--config", str(config), "--data-dir", str(tmp_path / "data")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=clean_env(env),
        timeout=30,
        check=False,
    )
    assert done.returncode != 0
    assert "bogus_setting" in done.stderr
    assert no_traceback(done.stderr), done.stderr
    assert "api-listening" not in done.stderr


def test_a_node_starts_and_stays_up_whatever_its_store_holds(tmp_path: Path) -> None:
    """A DesiredLRP of a billion instances, stored before limits existed, used to grow
    the node past 20 GB on every start. Now each pass creates a bounded batch."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    huge = decode(
        DesiredLRP,
        {
            "process_guid": "huge",
            "domain": "old",
            "stack": "linux",
            "instances": 10**9,
            "action": {"run": {"path": "/bin/sleep", "args": ["1000"]}},
        },
    )

    async def store_it() -> None:
        store = await Store.open(sqlite_url(data_dir))
        try:
            await store.desire_lrp(huge, time.time_ns())
        finally:
            await store.close()

    asyncio.run(store_it())
    server = Server(tmp_path)
    try:
        env = {"DIEGO_CONVERGER_MAX_LRP_CREATES": "25", "DIEGO_CONVERGER_INTERVAL": "0.5"}
        server.start(*NO_CELLS, env=env)

        def created() -> int | None:
            found = server.request("GET", "/v1/actual_lrps/huge").body
            return len(found) if len(found) >= 50 else None

        poll(created, 30, "two passes' instances")
        assert server.request("GET", "/v1/ping").status == 200
        assert server.proc is not None
        status = Path(f"/proc/{server.proc.pid}/status").read_text()
        peak_kb = int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1])
        assert peak_kb < 1024 * 1024, f"the node's peak RSS is {peak_kb} kB"
        assert server.request("GET", "/v1/desired_lrps/huge").status == 200
    finally:
        server.close()


def test_the_bbs_serves_cells_only_with_a_token(server_proc: Server, tmp_path: Path) -> None:
    """With DIEGO_LINK_TOKEN the node serves the BBS's internal API for cells: a call
    without the token gets 401, one with it the verb's answer (here a TaskNotFound).
    Without a token the internal API is not there; an unreadable token file stops the
    node at start, naming the setting."""
    verb = "/internal/bbs/v1/get_task"
    server_proc.start(env={"DIEGO_LINK_TOKEN": "t0ken"})
    assert server_proc.post_json(verb, {"guid": "nope"}).status == 401
    answer = server_proc.request(
        "POST", verb, json.dumps({"guid": "nope"}), headers={"Authorization": "Bearer t0ken"}
    )
    assert (answer.status, answer.body["name"]) == (404, "TaskNotFound"), answer.text
    assert "t0ken" not in server_proc.stderr
    assert server_proc.terminate() == 0

    server_proc.start()
    assert server_proc.post_json(verb, {"guid": "nope"}).status == 404
    assert server_proc.terminate() == 0

    config = write_config(tmp_path, f'[server]\ncell_token_file = "{tmp_path / "absent"}"\n')
    done = subprocess.run(
        [str(DIEGO), "serve", "--config", str(config), "--data-dir", str(tmp_path / "data")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=30,
        check=False,
    )
    assert done.returncode != 0
    assert "server.cell_token_file" in done.stderr
    assert no_traceback(done.stderr), done.stderr
