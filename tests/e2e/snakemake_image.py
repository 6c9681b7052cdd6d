"""A Docker image with Snakemake, built from this machine's own files (no registry).

Snakemake's TES executor runs each job as ``python -m snakemake`` inside the task's
image, so the image needs Python, bash and Snakemake with its S3 storage plugin.
No registry is reachable here, so the image is put together from what
``scripts/setup.sh`` installed: Debian's ``/usr/bin/python3.11`` and its standard
library, ``.venv-snakemake`` (made by that Python) copied to ``/opt/venv``, bash,
the shared libraries all of these load (as ``ldd`` finds them), and a wheelhouse
``/opt/wheels`` that pip installs from offline. Snakemake's job script begins with
``pip install --target .snakemake/pip-deployments snakemake-storage-plugin-s3``,
which would need PyPI from inside the task; the image's ``/etc/pip.conf`` points
it at the wheelhouse instead. The image is built FROM the test image
``diego/busybox:latest`` (busybox's applets for the shell commands), tagged by a
hash of the requirements, and built again only when they change.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .conftest import DOCKER

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv-snakemake"
WHEELS = VENV / "wheels"
REQUIREMENTS = Path(__file__).with_name("snakemake") / "requirements.txt"
BASE_IMAGE = "diego/busybox:latest"
IN_IMAGE_VENV = "/opt/venv"
IN_IMAGE_WHEELS = "/opt/wheels"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_LDD_PATH = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")
_BUILD_VERSION = "1"  # bump when the way the image is made changes


def image_tag() -> str:
    """The tag of the image for the current requirements."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes() + _BUILD_VERSION.encode()).hexdigest()
    return f"diego/snakemake:{digest[:12]}"


def ensure_image() -> str:
    """The image's tag, once it exists (built now if it does not)."""
    tag = image_tag()
    exists = subprocess.run(
        [DOCKER, "image", "inspect", tag], capture_output=True, check=False
    ).returncode
    if exists != 0:
        with tempfile.TemporaryDirectory(prefix="diego-snakemake-image-") as work:
            _build(Path(work), tag)
    return tag


def _build(work: Path, tag: str) -> None:
    root = work / "root"
    python = Path(os.path.realpath(VENV / "bin" / "python"))
    stdlib = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    bash = Path(os.path.realpath("/bin/bash"))
    _copy_file(python, root)
    (root / python.parent.relative_to("/") / "python3").symlink_to(python.name)
    shutil.copytree(
        stdlib,
        root / stdlib.relative_to("/"),
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__", "test", "idlelib", "tkinter"),
    )
    _copy_file(bash, root, "/bin/bash")
    venv = root / IN_IMAGE_VENV.lstrip("/")
    shutil.copytree(
        VENV, venv, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "wheels")
    )
    _point_scripts_at(venv / "bin", str(VENV), IN_IMAGE_VENV)
    shutil.copytree(WHEELS, root / IN_IMAGE_WHEELS.lstrip("/"))
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc" / "pip.conf").write_text(
        f"[global]\nno-index = true\nfind-links = {IN_IMAGE_WHEELS}\n"
        "disable-pip-version-check = true\n"
    )
    elves = [python, bash, *_shared_objects(stdlib), *_shared_objects(VENV)]
    for library in sorted(_libraries(elves)):
        _copy_file(Path(os.path.realpath(library)), root, library)
    (work / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE}\nCOPY root/ /\nENV PATH={IN_IMAGE_VENV}/bin:{PATH}\n"
    )
    subprocess.run([DOCKER, "build", "-q", "-t", tag, str(work)], check=True, capture_output=True)


def _copy_file(source: Path, root: Path, at: str | None = None) -> None:
    target = root / (at or str(source)).lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        shutil.copy2(source, target)


def _point_scripts_at(bin_dir: Path, old: str, new: str) -> None:
    """Rewrite the ``#!`` lines of the venv's scripts from its path here to its path there."""
    for script in bin_dir.iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        data = script.read_bytes()
        if data.startswith(f"#!{old}/".encode()):
            script.write_bytes(data.replace(old.encode(), new.encode(), 1))


def _shared_objects(top: Path) -> list[Path]:
    return [p for p in top.rglob("*.so*") if p.is_file() and not p.is_symlink()]


def _libraries(elves: list[Path]) -> set[str]:
    """The paths of the shared libraries (and the loader) that ``elves`` load."""
    found: set[str] = set()
    for elf in elves:
        out = subprocess.run(["ldd", str(elf)], capture_output=True, text=True, check=False)
        for line in out.stdout.splitlines():
            if "not found" in line:
                continue  # a library a wheel bundles beside itself (found by $ORIGIN)
            if match := _LDD_PATH.search(line):
                found.add(match[1])
    return found
