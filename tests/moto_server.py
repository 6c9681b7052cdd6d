"""moto's S3-compatible server on loopback, for the tests of s3:// storage.

``moto_server()`` runs ``python -m moto.server`` on a free port of 127.0.0.1 and
yields its endpoint URL once it answers; the process ends when the block does.
moto takes any credentials: tests use FAKE_KEY and FAKE_SECRET in REGION.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

import boto3
import pytest

FAKE_KEY = "diego-test-key"  # moto takes any credentials
FAKE_SECRET = "diego-test-secret"
REGION = "us-east-1"
START_DEADLINE = 30.0


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client of the moto server at ``endpoint``."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=FAKE_KEY,
        aws_secret_access_key=FAKE_SECRET,
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with direct.open(url, timeout=1) as response:
            return int(response.status) < 500
    except OSError:
        return False


@contextlib.contextmanager
def moto_server(host: str = "127.0.0.1", wrap: Sequence[str] = ()) -> Iterator[str]:
    """moto's S3-compatible server on ``host`` while the block runs; its endpoint URL.

    ``wrap`` goes before the server's command line: ``ip netns exec NAME`` runs it in a
    network namespace of the test's own (where ``host`` is then an address).
    """
    port = free_port()
    endpoint = f"http://{host}:{port}"
    server = subprocess.Popen(
        [*wrap, sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + START_DEADLINE
        while not _answers(f"{endpoint}/moto-api/"):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"moto server did not start on {endpoint}")
            time.sleep(0.1)
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
