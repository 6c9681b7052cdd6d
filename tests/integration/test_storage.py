"""Each storage against a real counterpart on loopback: host files, an aiohttp
server, and moto's S3-compatible server started for the session."""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiobotocore.session import get_session
from aiohttp import web

from diego.cell.transfer import TransferError, Transfers
from diego.config import load
from diego.storage import FileStorage, HttpStorage, S3Storage, StorageError, Storages
from tests.moto_server import FAKE_KEY, FAKE_SECRET, REGION, free_port, moto_server

PAYLOAD = bytes(range(256)) * 1200  # 300 KiB: more than one chunk
OUTSIDE_ROOTS = r"file URLs must be under transfer\.file_roots"


def make_tree(root: Path) -> dict[str, bytes]:
    """A nested directory of files under ``root``; relative path -> content."""
    files = {
        "top.txt": b"top\n",
        "a/one.bin": PAYLOAD,
        "a/b/two.txt": b"two\n" * 100,
        "a/b/c/empty": b"",
        "with space.txt": b"spaced\n",
    }
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return files


def read_tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root``; relative path -> content."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def sizes(files: dict[str, bytes]) -> list[tuple[str, int]]:
    """The (relative path, size) list a get_tree returns for ``files``."""
    return sorted((relative, len(content)) for relative, content in files.items())


# ---------------------------------------------------------------- file://


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    """An allowed file root and a directory outside it."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    return allowed, outside


async def test_file_get_and_put_under_roots(tmp_path: Path, roots: tuple[Path, Path]) -> None:
    """A file under the roots is read (feeding the digest) and written, parents made."""
    allowed, _ = roots
    (allowed / "in.bin").write_bytes(PAYLOAD)
    storage = FileStorage([allowed])
    digest = hashlib.sha256()
    size = await storage.get(f"file://{allowed}/in.bin", tmp_path / "got", digest)
    assert size == len(PAYLOAD)
    assert (tmp_path / "got").read_bytes() == PAYLOAD
    assert digest.hexdigest() == hashlib.sha256(PAYLOAD).hexdigest()
    assert await storage.put(tmp_path / "got", f"file://{allowed}/new/dir/out.bin") == len(PAYLOAD)
    assert (allowed / "new" / "dir" / "out.bin").read_bytes() == PAYLOAD


async def test_file_outside_roots_refused(tmp_path: Path, roots: tuple[Path, Path]) -> None:
    """A file URL outside the roots, or with none configured, is refused naming the rule."""
    allowed, outside = roots
    (outside / "secret").write_bytes(b"no")
    url = f"file://{outside}/secret"
    with pytest.raises(StorageError) as refused:
        await FileStorage([allowed]).get(url, tmp_path / "got")
    assert str(refused.value) == (
        f"{url}: file URLs must be under transfer.file_roots ({allowed.resolve()})"
    )
    with pytest.raises(StorageError, match=r"file_roots \(none configured\)"):
        await FileStorage().put(outside / "secret", f"file://{allowed}/x")
    with pytest.raises(StorageError, match="must name a local path"):
        await FileStorage([allowed]).get(f"file://elsewhere{allowed}/x", tmp_path / "got")
    with pytest.raises(StorageError, match=r"\.\./outside/secret: file URLs must be under"):
        await FileStorage([allowed]).get(f"file://{allowed}/../outside/secret", tmp_path / "g")
    assert not (tmp_path / "got").exists()


async def test_file_symlink_cannot_escape_roots(tmp_path: Path, roots: tuple[Path, Path]) -> None:
    """A link under the roots that leads out is refused, reading and writing."""
    allowed, outside = roots
    (outside / "secret").write_bytes(b"no")
    (allowed / "link").symlink_to(outside / "secret")
    (allowed / "door").symlink_to(outside, target_is_directory=True)
    storage = FileStorage([allowed])
    with pytest.raises(StorageError, match=OUTSIDE_ROOTS):
        await storage.get(f"file://{allowed}/link", tmp_path / "got")
    (tmp_path / "payload").write_bytes(PAYLOAD)
    with pytest.raises(StorageError, match=OUTSIDE_ROOTS):
        await storage.put(tmp_path / "payload", f"file://{allowed}/door/planted")
    assert not (outside / "planted").exists()
    with pytest.raises(StorageError, match=OUTSIDE_ROOTS):
        await storage.put_tree(tmp_path / "nowhere", f"file://{allowed}/door")


async def test_file_trees_round_trip(tmp_path: Path, roots: tuple[Path, Path]) -> None:
    """put_tree copies a nested directory under a file URL; get_tree copies it back."""
    allowed, outside = roots
    source = tmp_path / "source"
    files = make_tree(source)
    (outside / "secret").write_bytes(b"no")
    (source / "a" / "leak").symlink_to(outside / "secret")  # links are not carried out
    storage = FileStorage([allowed])
    base = f"file://{allowed}/out"
    sent = await storage.put_tree(source, base)
    assert [size for _, size in sent] == [size for _, size in sizes(files)]
    assert sent[-1] == (f"{base}/with%20space.txt", len(b"spaced\n"))
    assert read_tree(allowed / "out") == files
    got = await storage.get_tree(f"{base}/", tmp_path / "back")
    assert got == sizes(files)
    assert read_tree(tmp_path / "back") == files


async def test_file_tree_errors(tmp_path: Path, roots: tuple[Path, Path]) -> None:
    """A tree with a link out of the roots, or a URL that is no directory, is refused."""
    allowed, outside = roots
    (outside / "secret").write_bytes(b"no")
    (allowed / "dir").mkdir()
    (allowed / "dir" / "ok").write_bytes(b"ok")
    (allowed / "dir" / "link").symlink_to(outside / "secret")
    storage = FileStorage([allowed])
    with pytest.raises(StorageError, match=r"dir/link: file URLs must be under"):
        await storage.get_tree(f"file://{allowed}/dir", tmp_path / "back")
    with pytest.raises(StorageError, match="not a directory"):
        await storage.get_tree(f"file://{allowed}/dir/ok", tmp_path / "back")
    with pytest.raises(StorageError, match="not a directory"):
        await storage.get_tree(f"file://{allowed}/missing", tmp_path / "back")
    with pytest.raises(StorageError, match="missing is not a directory"):
        await storage.put_tree(tmp_path / "missing", f"file://{allowed}/out")


# ---------------------------------------------------------------- http(s)://


@pytest.fixture
async def http_server() -> AsyncIterator[tuple[str, dict[str, bytes]]]:
    """An aiohttp server on 127.0.0.1: GET and PUT /files/NAME, 403 for PUT /locked/*."""
    files: dict[str, bytes] = {}

    async def get(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in files:
            raise web.HTTPNotFound()
        return web.Response(body=files[name])

    async def put(request: web.Request) -> web.Response:
        files[request.match_info["name"]] = await request.read()
        return web.Response(status=201)

    async def locked(request: web.Request) -> web.Response:
        raise web.HTTPForbidden()

    app = web.Application(client_max_size=10 * 1024 * 1024)
    app.router.add_get("/files/{name}", get)
    app.router.add_put("/files/{name}", put)
    app.router.add_put("/locked/{name}", locked)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", files
    finally:
        await runner.cleanup()


async def test_http_get_and_put(tmp_path: Path, http_server: tuple[str, dict[str, bytes]]) -> None:
    """PUT sends the file's bytes; GET brings them back, feeding the digest."""
    base, files = http_server
    (tmp_path / "up").write_bytes(PAYLOAD)
    storage = HttpStorage(timeout=10)
    assert await storage.put(tmp_path / "up", f"{base}/files/x") == len(PAYLOAD)
    assert files["x"] == PAYLOAD
    digest = hashlib.md5()
    assert await storage.get(f"{base}/files/x", tmp_path / "down", digest) == len(PAYLOAD)
    assert (tmp_path / "down").read_bytes() == PAYLOAD
    assert digest.hexdigest() == hashlib.md5(PAYLOAD).hexdigest()


async def test_http_errors_name_the_status(
    tmp_path: Path, http_server: tuple[str, dict[str, bytes]]
) -> None:
    """A 404 GET, a 403 PUT and a refused connection each fail naming the URL and why."""
    base, _ = http_server
    storage = HttpStorage(timeout=10)
    with pytest.raises(StorageError) as missing:
        await storage.get(f"{base}/files/missing", tmp_path / "down")
    assert str(missing.value) == f"{base}/files/missing: HTTP 404"
    (tmp_path / "up").write_bytes(b"x")
    with pytest.raises(StorageError) as forbidden:
        await storage.put(tmp_path / "up", f"{base}/locked/x")
    assert str(forbidden.value) == f"{base}/locked/x: HTTP 403"
    closed = f"http://127.0.0.1:{free_port()}/x"
    with pytest.raises(StorageError, match=rf"^{re.escape(closed)}: "):
        await storage.get(closed, tmp_path / "down")


async def test_http_trees_refused(
    tmp_path: Path, http_server: tuple[str, dict[str, bytes]]
) -> None:
    """Directories cannot be listed over HTTP: both tree operations say so."""
    base, _ = http_server
    storage = HttpStorage(timeout=10)
    with pytest.raises(StorageError, match="directories are not supported over http"):
        await storage.get_tree(f"{base}/files/", tmp_path)
    with pytest.raises(StorageError, match="directories are not supported over http"):
        await storage.put_tree(tmp_path, f"{base}/files/")


# ---------------------------------------------------------------- s3://


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3-compatible server on 127.0.0.1, for the session; its endpoint URL."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(autouse=True)
def no_real_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """No AWS configuration of this machine, no instance-metadata lookups, no proxy."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")


@pytest.fixture
async def bucket(moto_endpoint: str) -> str:
    """A new, empty bucket on the moto server."""
    name = f"diego-{uuid.uuid4().hex[:12]}"
    async with get_session().create_client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name=REGION,
        aws_access_key_id=FAKE_KEY,
        aws_secret_access_key=FAKE_SECRET,
    ) as client:
        await client.create_bucket(Bucket=name)
    return name


@pytest.fixture
async def s3(moto_endpoint: str) -> AsyncIterator[S3Storage]:
    """An S3 storage of the moto server (closed after the test)."""
    storage = S3Storage(moto_endpoint, REGION, FAKE_KEY, FAKE_SECRET, timeout=30)
    try:
        yield storage
    finally:
        await storage.close()


async def test_s3_put_and_get_a_file(tmp_path: Path, s3: S3Storage, bucket: str) -> None:
    """An object put from a file comes back byte for byte, feeding the digest."""
    (tmp_path / "up").write_bytes(PAYLOAD)
    url = f"s3://{bucket}/some/key.bin"
    assert await s3.put(tmp_path / "up", url) == len(PAYLOAD)
    digest = hashlib.sha1()
    assert await s3.get(url, tmp_path / "down", digest) == len(PAYLOAD)
    assert (tmp_path / "down").read_bytes() == PAYLOAD
    assert digest.hexdigest() == hashlib.sha1(PAYLOAD).hexdigest()


async def test_s3_big_file_goes_in_parts(tmp_path: Path, moto_endpoint: str, bucket: str) -> None:
    """A file larger than a part is uploaded as a multipart upload and reads back whole."""
    content = os.urandom(1024 * 1024) * 11  # 11 MiB: parts of 5, 5 and 1 MiB
    (tmp_path / "big").write_bytes(content)
    storage = S3Storage(
        moto_endpoint, REGION, FAKE_KEY, FAKE_SECRET, part_size=5 * 1024 * 1024, timeout=60
    )
    try:
        url = f"s3://{bucket}/big"
        assert await storage.put(tmp_path / "big", url) == len(content)
        assert await storage.get(url, tmp_path / "back") == len(content)
        assert (tmp_path / "back").read_bytes() == content
    finally:
        await storage.close()


async def test_s3_missing_key_names_no_such_key(tmp_path: Path, s3: S3Storage, bucket: str) -> None:
    """Getting a key that is not there fails naming the URL and NoSuchKey."""
    url = f"s3://{bucket}/not/there"
    with pytest.raises(StorageError, match=rf"^{re.escape(url)}: S3 NoSuchKey"):
        await s3.get(url, tmp_path / "down")


async def test_s3_trees_round_trip(tmp_path: Path, s3: S3Storage, bucket: str) -> None:
    """put_tree uploads a nested directory under a prefix; get_tree brings it back."""
    source = tmp_path / "source"
    files = make_tree(source)
    (source / "a" / "leak").symlink_to(tmp_path / "source" / "top.txt")  # not uploaded
    base = f"s3://{bucket}/runs/1/out"
    sent = await s3.put_tree(source, base)
    assert sent == sorted((f"{base}/{relative}", size) for relative, size in sizes(files))
    (tmp_path / "other").write_bytes(b"beside")
    await s3.put(tmp_path / "other", f"s3://{bucket}/runs/1/outside")  # a sibling prefix
    got = await s3.get_tree(base, tmp_path / "back")
    assert got == sizes(files)
    assert read_tree(tmp_path / "back") == files
    assert await s3.get_tree(f"{base}/a/", tmp_path / "a") == [
        ("b/c/empty", 0),
        ("b/two.txt", 400),
        ("one.bin", len(PAYLOAD)),
    ]


async def test_s3_empty_prefix_is_missing(tmp_path: Path, s3: S3Storage, bucket: str) -> None:
    """A prefix with no objects under it is reported, not read as an empty directory."""
    with pytest.raises(StorageError, match="no objects under this prefix"):
        await s3.get_tree(f"s3://{bucket}/nothing", tmp_path / "back")
    with pytest.raises(StorageError, match="missing is not a directory"):
        await s3.put_tree(tmp_path / "missing", f"s3://{bucket}/nothing")


async def test_s3_wrong_bucket(tmp_path: Path, s3: S3Storage) -> None:
    """Every operation on a bucket that does not exist names NoSuchBucket."""
    (tmp_path / "up").write_bytes(b"x")
    url = "s3://no-such-bucket-here/key"
    with pytest.raises(StorageError, match=rf"^{re.escape(url)}: S3 NoSuchBucket"):
        await s3.get(url, tmp_path / "down")
    with pytest.raises(StorageError, match=rf"^{re.escape(url)}: S3 NoSuchBucket"):
        await s3.put(tmp_path / "up", url)
    with pytest.raises(StorageError, match=rf"^{re.escape(url)}: S3 NoSuchBucket"):
        await s3.get_tree(url, tmp_path / "back")
    with pytest.raises(StorageError, match="must name a key"):
        await s3.get("s3://bucket-only", tmp_path / "down")


async def test_s3_unreachable_endpoint(tmp_path: Path) -> None:
    """A refused connection fails naming the URL and the error."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    storage = S3Storage(endpoint, REGION, FAKE_KEY, FAKE_SECRET, retries=1, timeout=10)
    try:
        url = "s3://bucket/key"
        with pytest.raises(StorageError, match=rf"^{re.escape(url)}: S3 EndpointConnectionError"):
            await storage.get(url, tmp_path / "down")
    finally:
        await storage.close()


# ---------------------------------------------------------------- Storages and Transfers


async def test_storages_route_by_scheme(tmp_path: Path, roots: tuple[Path, Path]) -> None:
    """Each URL goes to the storage of its scheme; an unknown one names those supported."""
    allowed, _ = roots
    settings = load(environ={"DIEGO_TRANSFER_FILE_ROOTS": str(allowed)}).transfer
    storages = Storages.from_settings(settings, tmp_path)
    try:
        assert storages.schemes == ("file", "http", "https", "s3")
        assert isinstance(storages.storage_for("S3://b/k"), S3Storage)
        assert isinstance(storages.storage_for("https://example.test/x"), HttpStorage)
        (allowed / "f").write_bytes(b"abc")
        assert await storages.get(f"file://{allowed}/f", tmp_path / "g") == 3
        with pytest.raises(StorageError) as unknown:
            await storages.get("ftp://host/x", tmp_path / "g")
        assert str(unknown.value) == (
            "ftp://host/x: unsupported URL scheme; supported are file, http, https, s3"
        )
    finally:
        await storages.close()


async def test_s3_settings_from_the_environment(
    tmp_path: Path, moto_endpoint: str, bucket: str
) -> None:
    """DIEGO_TRANSFER_S3_* settings reach the S3 storage: endpoint, region, keys."""
    settings = load(
        environ={
            "DIEGO_TRANSFER_S3_ENDPOINT_URL": moto_endpoint,
            "DIEGO_TRANSFER_S3_REGION": REGION,
            "DIEGO_TRANSFER_S3_ACCESS_KEY_ID": FAKE_KEY,
            "DIEGO_TRANSFER_S3_SECRET_ACCESS_KEY": FAKE_SECRET,
        }
    ).transfer
    storages = Storages.from_settings(settings, tmp_path)
    try:
        (tmp_path / "up").write_bytes(b"settings")
        assert await storages.put(tmp_path / "up", f"s3://{bucket}/k") == len(b"settings")
        assert await storages.get(f"s3://{bucket}/k", tmp_path / "down") == len(b"settings")
    finally:
        await storages.close()


@pytest.fixture
async def transfers(moto_endpoint: str, tmp_path: Path) -> AsyncIterator[Transfers]:
    """Transfers as a node builds them, with S3 settings naming the moto server."""
    settings = load(
        overrides={
            "transfer.s3_endpoint_url": moto_endpoint,
            "transfer.s3_access_key_id": FAKE_KEY,
            "transfer.s3_secret_access_key": FAKE_SECRET,
        },
        environ={},
    ).transfer
    made = Transfers.from_settings(settings, tmp_path)
    try:
        yield made
    finally:
        await made.close()


async def test_transfers_download_and_upload_over_s3(
    tmp_path: Path, transfers: Transfers, bucket: str
) -> None:
    """The upload and download actions' path: send, then fetch with its checksum checked."""
    (tmp_path / "up").write_bytes(PAYLOAD)
    url = f"s3://{bucket}/droplet.tgz"
    assert await transfers.send(tmp_path / "up", url) == len(PAYLOAD)
    good = hashlib.sha256(PAYLOAD).hexdigest()
    assert await transfers.fetch(url, tmp_path / "down", "sha256", good.upper()) == len(PAYLOAD)
    assert (tmp_path / "down").read_bytes() == PAYLOAD
    with pytest.raises(TransferError) as mismatch:
        await transfers.fetch(url, tmp_path / "again", "sha256", "0" * 64)
    assert str(mismatch.value) == (
        f"{url}: sha256 checksum mismatch: expected {'0' * 64}, got {good}"
    )
    with pytest.raises(TransferError, match=rf"^s3://{bucket}/nope: S3 NoSuchKey"):
        await transfers.fetch(f"s3://{bucket}/nope", tmp_path / "down")


async def test_transfers_trees_over_s3(tmp_path: Path, transfers: Transfers, bucket: str) -> None:
    """fetch_tree and send_tree pass through to the storage; its errors become TransferErrors."""
    files = make_tree(tmp_path / "source")
    base = f"s3://{bucket}/tree"
    sent = await transfers.send_tree(tmp_path / "source", base)
    assert len(sent) == len(files)
    assert await transfers.fetch_tree(base, tmp_path / "back") == sizes(files)
    assert read_tree(tmp_path / "back") == files
    with pytest.raises(TransferError, match="no objects under this prefix"):
        await transfers.fetch_tree(f"s3://{bucket}/none", tmp_path / "none")


async def test_transfers_keep_the_file_roots_rule(tmp_path: Path) -> None:
    """Transfers built as before (file_roots, timeout) still refuse files outside the roots."""
    transfers = Transfers([tmp_path / "allowed"], timeout=10)
    try:
        with pytest.raises(TransferError, match=OUTSIDE_ROOTS):
            await transfers.fetch(f"file://{tmp_path}/x", tmp_path / "y")
    finally:
        await transfers.close()


async def test_relative_file_roots_are_below_the_data_dir_and_the_default_is_files(
    tmp_path: Path,
) -> None:
    """With no [transfer] file_roots, file URLs under ``DATA_DIR/files`` are served
    and others are refused naming that root; an empty list refuses every file URL."""
    settings = load(environ={}).transfer
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "in.txt").write_bytes(b"default root")
    (tmp_path / "elsewhere.txt").write_bytes(b"no")
    storages = Storages.from_settings(settings, tmp_path)
    try:
        got = tmp_path / "got"
        assert await storages.get(f"file://{tmp_path}/files/in.txt", got) == 12
        with pytest.raises(StorageError, match=f"under transfer.file_roots \\({tmp_path}/files\\)"):
            await storages.get(f"file://{tmp_path}/elsewhere.txt", got)
    finally:
        await storages.close()
    none = Storages.from_settings(
        load(overrides={"transfer.file_roots": []}, environ={}).transfer, tmp_path
    )
    try:
        with pytest.raises(StorageError, match="none configured"):
            await none.get(f"file://{tmp_path}/files/in.txt", tmp_path / "got")
    finally:
        await none.close()
