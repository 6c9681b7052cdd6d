"""Fixtures for integration tests: real stores (SQLite files and a private
PostgreSQL cluster started for the session), a real node's API on loopback."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from diego.state.store import Store, sqlite_url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if not found:
        pytest.fail("PostgreSQL is not installed: run scripts/setup.sh")
    return Path(found[0]).parent


def _as_postgres(*command: str) -> list[str]:
    # PostgreSQL refuses to run as root; root runs it as the postgres user.
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"  # PATH may leave out sbin
    return [runuser, "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throw-away PostgreSQL cluster on loopback; its base URL (no database)."""
    bindir = _pg_bin()
    home = Path(tempfile.mkdtemp(prefix="diego-pg-"))
    if os.geteuid() == 0:
        shutil.chown(home, "postgres", "postgres")
    data = home / "data"
    port = _free_port()
    subprocess.run(
        _as_postgres(
            str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "diego", "--no-sync"
        ),
        check=True,
        capture_output=True,
    )
    options = f"-k {home} -c listen_addresses=127.0.0.1 -p {port} -c fsync=off"
    subprocess.run(
        _as_postgres(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-w",
            "-l",
            str(home / "log"),
            "start",
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield f"diego@127.0.0.1:{port}"
    finally:
        subprocess.run(
            _as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"),
            capture_output=True,
        )
        shutil.rmtree(home, ignore_errors=True)


_databases = iter(range(1, 1_000_000))


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    server = request.getfixturevalue("postgres_server")
    host, port = server.split("@")[1].split(":")
    name = f"test_{os.getpid()}_{next(_databases)}"
    createdb = str(_pg_bin() / "createdb")
    subprocess.run([createdb, "-h", host, "-p", port, "-U", "diego", name], check=True)
    return f"postgresql+asyncpg://{server}/{name}"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store: an SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """An open, migrated, empty store."""
    opened = await Store.open(store_url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session, closed after the test."""
    async with aiohttp.ClientSession() as made:
        yield made
