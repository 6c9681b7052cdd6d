"""A real ``diego serve`` for a benchmark: started on a loopback port, stopped after."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

LISTENING = re.compile(r"api-listening url=(\S+)")
DIEGO = Path(sys.executable).parent / "diego"


@contextlib.contextmanager
def running_node(*args: str, config: str = "") -> Iterator[str]:
    """Run ``diego serve ARGS`` on a fresh data dir under /var/tmp; yield its URL."""
    home = Path(tempfile.mkdtemp(prefix="diego-bench-", dir="/var/tmp"))
    home.chmod(0o711)  # the local backend's container uid walks to the data dir
    log = home / "serve.log"
    command = [str(DIEGO), "serve", "--data-dir", str(home / "data"), "--listen", "127.0.0.1:0"]
    if config:
        (home / "diego.toml").write_text(config)
        command += ["--config", str(home / "diego.toml")]
    with open(log, "wb") as err:
        proc = subprocess.Popen([*command, *args], stdout=subprocess.DEVNULL, stderr=err)
    try:
        yield _wait_listening(proc, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(home, ignore_errors=True)


def _wait_listening(proc: subprocess.Popen[bytes], log: Path) -> str:
    end = time.monotonic() + 60
    while time.monotonic() < end:
        found = LISTENING.search(log.read_text(errors="replace"))
        if found:
            return found.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"diego serve did not start:\n{log.read_text(errors='replace')}")
