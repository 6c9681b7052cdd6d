"""The pure helpers of a TES task's run on a cell, and the TES service's naming helpers.

Output tails, wildcard directories, tars in and out of the container (what a
container sends back is not trusted), the report a cell stores as its Task's
result, image references as Diego root_fs URLs, and time-ordered TES task ids.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import types
from pathlib import Path

import pytest

from diego import tes as tes_service
from diego.cell.backends.docker import image_of
from diego.cell.tes_job import (
    REDIRECT,
    TesReport,
    _extract_tree,
    _literal_dir,
    _path_of,
    _Tail,
    _tail_of_tar,
)
from diego.cell.transfer import tar_as
from diego.models.codec import decode
from diego.models.task import GUID_PATTERN, TaskCreateRequest
from diego.models.tes import (
    TesExecutorLog,
    TesFileType,
    TesOutput,
    TesOutputFileLog,
    TesState,
    rfc3339,
)
from diego.models.tes_report import report_of

# ---------------------------------------------------------------- _Tail


def test_tail_keeps_every_line_while_they_fit() -> None:
    """Lines within the limit are all kept, each ended by a newline."""
    tail = _Tail(100)
    for line in ("one", "two", "three"):
        tail.add(line)
    assert tail.text() == "one\ntwo\nthree\n"


def test_tail_drops_the_oldest_lines_past_the_limit() -> None:
    """Past the limit the oldest whole lines go; what is kept is at most the limit."""
    tail = _Tail(10)
    tail.add("abc")  # 4 bytes with its newline
    tail.add("defg")  # 9
    assert tail.text() == "abc\ndefg\n"
    tail.add("hij")  # 13: "abc" goes
    assert tail.text() == "defg\nhij\n"
    assert list(tail.lines) == ["defg", "hij"]
    for i in range(100):
        tail.add(f"{i:03d}")
    assert tail.text() == "098\n099\n"
    assert len(tail.text()) <= 10


def test_tail_of_one_long_line_is_its_end() -> None:
    """A single line longer than the limit is cut to its last ``limit`` bytes."""
    tail = _Tail(10)
    tail.add("0123456789abcdefghij")
    assert tail.text() == "bcdefghij\n"
    tail.add("0123456789abcdefghij")
    assert tail.text() == "bcdefghij\n"


def test_tail_of_nothing_is_empty() -> None:
    """No lines, no text."""
    assert _Tail(10).text() == ""


# ---------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("pattern", "directory"),
    [
        ("/out/*.txt", "/out"),
        ("/a/b*/c", "/a"),
        ("/x?", "/"),
        ("/*", "/"),
        ("/data/run[0-9]/log", "/data"),
        ("/deep/er/path/f?.csv", "/deep/er/path"),
    ],
)
def test_literal_dir_is_the_directory_before_the_first_wildcard(
    pattern: str, directory: str
) -> None:
    """The directory streamed out for a wildcard output holds everything it can match."""
    assert _literal_dir(pattern) == directory


def test_path_of_maps_a_directory_output_url_back_to_its_container_path() -> None:
    """A file of a DIRECTORY output sent to ``url/rel`` was at ``path/rel``."""
    out = TesOutput(url="s3://bucket/results/", path="/data/out", type=TesFileType.DIRECTORY)
    assert _path_of(out, "s3://bucket/results/a.txt") == "/data/out/a.txt"
    assert _path_of(out, "s3://bucket/results/sub/b.txt") == "/data/out/sub/b.txt"
    assert _path_of(out, "s3://bucket/results") == "/data/out/"


def test_path_of_a_url_elsewhere_is_the_url() -> None:
    """A URL not below the output's URL is given back as it is."""
    out = TesOutput(url="file:///srv/out", path="/data/out", type=TesFileType.DIRECTORY)
    assert _path_of(out, "file:///elsewhere/a.txt") == "file:///elsewhere/a.txt"


def test_redirect_takes_stdin_stdout_stderr_then_the_command() -> None:
    """The redirecting shell script reads its three files, then execs the command."""
    assert REDIRECT.startswith('in="$1" out="$2" err="$3"; shift 3; ')
    assert REDIRECT.endswith('exec "$@" <"${in:-/dev/null}"')


# ---------------------------------------------------------------- tars


def _members(tar: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(tar) as archive:
        return archive.getmembers()


def test_tar_as_names_a_file_and_owns_it_by_root(tmp_path: Path) -> None:
    """A file is tarred as one member with the given name, uid and gid 0, its bytes intact."""
    source = tmp_path / "fetched-123"
    source.write_bytes(b"hello\n")
    tar = tmp_path / "in.tar"
    tar_as(source, "input.txt", tar)
    members = _members(tar)
    assert [m.name for m in members] == ["input.txt"]
    assert (members[0].uid, members[0].gid, members[0].uname, members[0].gname) == (0, 0, "", "")
    with tarfile.open(tar) as archive:
        data = archive.extractfile("input.txt")
        assert data is not None
        assert data.read() == b"hello\n"


def test_tar_as_names_a_nested_directory_under_the_name(tmp_path: Path) -> None:
    """A directory is tarred with every entry below the given name, all owned by root."""
    source = tmp_path / "fetched-dir"
    (source / "sub" / "deeper").mkdir(parents=True)
    (source / "a.txt").write_text("a")
    (source / "sub" / "b.txt").write_text("bb")
    (source / "sub" / "deeper" / "c.txt").write_text("ccc")
    tar = tmp_path / "in.tar"
    tar_as(source, "data", tar)
    members = _members(tar)
    assert sorted(m.name for m in members) == [
        "data",
        "data/a.txt",
        "data/sub",
        "data/sub/b.txt",
        "data/sub/deeper",
        "data/sub/deeper/c.txt",
    ]
    assert all((m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "") for m in members)
    sizes = {m.name: m.size for m in members if m.isfile()}
    assert sizes == {"data/a.txt": 1, "data/sub/b.txt": 2, "data/sub/deeper/c.txt": 3}


def _add(archive: tarfile.TarFile, name: str, data: bytes = b"", **kind: object) -> None:
    info = tarfile.TarInfo(name)
    for key, value in kind.items():
        setattr(info, key, value)
    if info.isfile():
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    else:
        archive.addfile(info)


def test_extract_tree_takes_files_and_directories_and_skips_the_rest(tmp_path: Path) -> None:
    """Regular files and directories land below the target; names climbing out
    (``../x``, absolute, through ``..``) and links (symbolic, hard) are skipped."""
    outside = tmp_path / "outside"
    outside.mkdir()
    tar = tmp_path / "from-container.tar"
    with tarfile.open(tar, "w") as archive:
        _add(archive, "top", type=tarfile.DIRTYPE)
        _add(archive, "top/a.txt", b"a-data")
        _add(archive, "top/empty", type=tarfile.DIRTYPE)
        _add(archive, "top/sub/b.txt", b"b-data")  # its directory is not a member
        _add(archive, "../escape.txt", b"evil")
        _add(archive, "top/../../climb.txt", b"evil")
        _add(archive, str(outside / "absolute.txt"), b"evil")
        _add(archive, "top/link", type=tarfile.SYMTYPE, linkname=str(outside / "target"))
        _add(archive, "top/hard", type=tarfile.LNKTYPE, linkname="top/a.txt")
        _add(archive, "top/fifo", type=tarfile.FIFOTYPE)
    into = tmp_path / "into"
    into.mkdir()
    _extract_tree(tar, into)

    found = sorted(p.relative_to(into).as_posix() for p in into.rglob("*"))
    assert found == ["top", "top/a.txt", "top/empty", "top/sub", "top/sub/b.txt"]
    assert (into / "top" / "a.txt").read_bytes() == b"a-data"
    assert (into / "top" / "sub" / "b.txt").read_bytes() == b"b-data"
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "climb.txt").exists()
    assert list(outside.iterdir()) == []
    assert not (into / "top" / "link").is_symlink()


def test_extract_tree_round_trips_what_tar_as_made(tmp_path: Path) -> None:
    """A tree tarred by ``tar_as`` comes back whole under its name."""
    source = tmp_path / "src"
    (source / "x").mkdir(parents=True)
    (source / "x" / "y.txt").write_text("why")
    tar = tmp_path / "t.tar"
    tar_as(source, "out", tar)
    into = tmp_path / "into"
    into.mkdir()
    _extract_tree(tar, into)
    assert (into / "out" / "x" / "y.txt").read_text() == "why"


def test_tail_of_tar_is_the_last_bytes_of_its_first_file(tmp_path: Path) -> None:
    """The tail of a redirected output file: its last ``limit`` bytes, or all of a short one."""
    tar = tmp_path / "t.tar"
    with tarfile.open(tar, "w") as archive:
        _add(archive, "dir", type=tarfile.DIRTYPE)
        _add(archive, "dir/stdout", b"".join(b"line %03d\n" % i for i in range(100)))
        _add(archive, "dir/other", b"not this one")
    assert _tail_of_tar(tar, 18) == "line 098\nline 099\n"
    assert _tail_of_tar(tar, 1_000_000).startswith("line 000\n")
    assert len(_tail_of_tar(tar, 1_000_000)) == 900


def test_tail_of_tar_without_a_file_is_empty(tmp_path: Path) -> None:
    """A tar holding no regular file has no tail."""
    tar = tmp_path / "t.tar"
    with tarfile.open(tar, "w") as archive:
        _add(archive, "dir", type=tarfile.DIRTYPE)
    assert _tail_of_tar(tar, 10) == ""


def test_tail_of_tar_replaces_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    """Binary output, or a tail cut inside a character, decodes with replacement marks."""
    tar = tmp_path / "t.tar"
    with tarfile.open(tar, "w") as archive:
        _add(archive, "out", "ééé".encode())
    assert _tail_of_tar(tar, 3) == "\ufffdé"


# ---------------------------------------------------------------- reports


def test_report_of_reads_a_report() -> None:
    """A JSON object with a state is a report, returned as it is."""
    assert report_of('{"state": "COMPLETE", "logs": []}') == {"state": "COMPLETE", "logs": []}


@pytest.mark.parametrize(
    "result",
    ["", "done", "{not json", '{"logs": []}', '["state"]', '"COMPLETE"', "42", "null"],
)
def test_report_of_anything_else_is_none(result: str) -> None:
    """Text that is not JSON, or JSON that is not an object with a state, is no report."""
    assert report_of(result) is None


def test_report_round_trips_through_its_json() -> None:
    """``TesReport.to_json`` is read back by ``report_of`` with every field, decodable."""
    report = TesReport(
        state=TesState.EXECUTOR_ERROR,
        start_time=rfc3339(1_000_000_000),
        end_time=rfc3339(2_500_000_000),
        logs=(
            TesExecutorLog(
                start_time=rfc3339(1_000_000_000),
                end_time=rfc3339(2_000_000_000),
                stdout="hi\n",
                stderr="",
                exit_code=0,
            ),
            TesExecutorLog(start_time=rfc3339(2_000_000_000), exit_code=3),
        ),
        outputs=(TesOutputFileLog(url="s3://b/o.txt", path="/o.txt", size_bytes="12"),),
        system_logs=("a note",),
        failure_reason="executor 1 (alpine) exited with status 3",
    )
    data = report_of(report.to_json())
    assert data is not None
    assert data["state"] == "EXECUTOR_ERROR"
    assert (data["start_time"], data["end_time"]) == (report.start_time, report.end_time)
    assert tuple(decode(TesExecutorLog, x) for x in data["logs"]) == report.logs
    assert tuple(decode(TesOutputFileLog, x) for x in data["outputs"]) == report.outputs
    assert data["system_logs"] == ["a note"]
    assert data["failure_reason"] == report.failure_reason
    assert TesState(data["state"]) is report.state


def test_empty_report_is_still_a_report() -> None:
    """A report with no logs or outputs still reads back as one."""
    report = TesReport(state=TesState.COMPLETE, start_time="s", end_time="e")
    assert report_of(report.to_json()) == {
        "state": "COMPLETE",
        "start_time": "s",
        "end_time": "e",
        "logs": [],
        "outputs": [],
        "system_logs": [],
        "failure_reason": "",
    }
    assert json.loads(report.to_json())["state"] == "COMPLETE"


# ---------------------------------------------------------------- docker URLs


@pytest.mark.parametrize(
    ("image", "url", "back"),
    [
        ("alpine", "docker:///alpine", "alpine:latest"),
        ("python:3.11-slim", "docker:///python#3.11-slim", "python:3.11-slim"),
        ("library/ubuntu:22.04", "docker:///library/ubuntu#22.04", "library/ubuntu:22.04"),
        ("ghcr.io/org/img:tag", "docker:///ghcr.io/org/img#tag", "ghcr.io/org/img:tag"),
        ("localhost:5000/img", "docker:///localhost:5000/img", "localhost:5000/img:latest"),
        ("localhost:5000/img:v2", "docker:///localhost:5000/img#v2", "localhost:5000/img:v2"),
        (
            "alpine@sha256:" + "a" * 64,
            "docker:///alpine#sha256:" + "a" * 64,
            "alpine@sha256:" + "a" * 64,
        ),
        (
            "localhost:5000/img@sha256:" + "b" * 64,
            "docker:///localhost:5000/img#sha256:" + "b" * 64,
            "localhost:5000/img@sha256:" + "b" * 64,
        ),
    ],
)
def test_docker_url_of_an_image_reference(image: str, url: str, back: str) -> None:
    """An image reference becomes ``docker:///repo#tag`` (a registry port is no tag, a
    digest is kept), a valid root_fs that the Docker backend reads back as the image."""
    assert tes_service._docker_url(image) == url
    assert image_of(url, "linux", {}) == back
    request = {
        "task_guid": "t",
        "domain": "tes",
        "stack": "linux",
        "root_fs": url,
        "action": {"run": {"path": "true"}},
    }
    assert decode(TaskCreateRequest, request).root_fs == url


# ---------------------------------------------------------------- ids


def test_new_ids_sort_by_creation_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids made later sort later, whatever their random parts; each is a valid Task guid."""
    now = [0]
    monkeypatch.setattr(tes_service, "time", types.SimpleNamespace(time_ns=lambda: now[0]))
    made = []
    for ms in (1, 2, 15, 16, 255, 256, 1_700_000_000_000, 1_700_000_000_001, 16**12 - 1):
        now[0] = ms * 1_000_000 + 999_999
        made += [tes_service._new_id() for _ in range(5)]
    groups = [sorted(made[i : i + 5]) for i in range(0, len(made), 5)]
    assert sorted(made) == [x for group in groups for x in group]
    assert len(set(made)) == len(made)


def test_new_id_shape() -> None:
    """An id is 24 lowercase hex digits: fit for an internal Task's guid."""
    made = {tes_service._new_id() for _ in range(50)}
    assert len(made) == 50
    assert all(re.fullmatch(r"[0-9a-f]{24}", x) for x in made)
    assert all(re.fullmatch(GUID_PATTERN, x) for x in made)
