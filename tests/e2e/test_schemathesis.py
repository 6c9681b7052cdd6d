"""Generated requests from the node's own /v1/openapi.json against a real node.

schemathesis sends what the document allows (and what it forbids) and checks every
answer: no 500, no status or body the document does not declare, refusals where
the document forbids. The node and the client run inside a network namespace of
their own with only loopback, so requests the node makes on their behalf (a
completion callback to a generated host, a TES input URL) reach nothing outside.
The run is bounded in examples and time (40 s of generation, about 50 s in all);
failing cases are not shrunk, for the same reason: the output names each one.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import DIEGO, clean_env

SCHEMATHESIS = DIEGO.parent / "schemathesis"

pytestmark = pytest.mark.skipif(
    shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs unshare and ip (util-linux, iproute2) for a private network namespace",
)

# positive_data_acceptance is left out: the document cannot say which page tokens
# this server gave, nor that a body must fit max_body_bytes, so a "schema-valid"
# request can rightly be refused (400, 413). The event and log streams never end.
COMMAND = """
set -e
ip link set lo up
"{diego}" serve --cells 0 --data-dir "{data}" --listen 127.0.0.1:18890 >/dev/null 2>"{log}" &
node=$!
trap 'kill -9 $node 2>/dev/null || true' EXIT
"{st}" run http://127.0.0.1:18890/v1/openapi.json --wait-for-schema 30 \\
  --max-examples 10 --max-time 40 --seed 1 --workers 1 --request-timeout 20 --no-shrink \\
  --exclude-path-regex '^/v1/(events|logs/)' \\
  --exclude-checks positive_data_acceptance
kill -TERM $node
for _ in $(seq 100); do kill -0 $node 2>/dev/null || exit 0; sleep 0.1; done
echo "the node did not stop within 10 s of SIGTERM" >&2
exit 3
"""

# A generated body that breaks the schema and is also over max_body_bytes gets 413:
# refused, as a rejection should be, though schemathesis's default list lacks it.
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422",
                     "428", "429"]
"""


@pytest.mark.timeout(200)
def test_generated_requests_find_no_500_and_no_undocumented_answer(tmp_path: Path) -> None:
    command = COMMAND.format(
        diego=DIEGO, st=SCHEMATHESIS, data=tmp_path / "data", log=tmp_path / "serve.log"
    )
    (tmp_path / "schemathesis.toml").write_text(CONFIG)  # read from the current directory
    result = subprocess.run(
        ["unshare", "--net", "sh", "-c", command],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
        timeout=180,
        check=False,
    )
    log = (tmp_path / "serve.log").read_text()
    # A failing case can carry a body of megabytes: every line is cut to 400 characters,
    # so the case's name, its check and its answer stay in the message.
    report = "\n".join(line[:400] for line in result.stdout.splitlines())
    out = report[-20000:] + result.stderr[-5000:] + "\nnode log:\n" + log[-5000:]
    assert result.returncode == 0, out
    assert "Traceback" not in log, log[-5000:]
