"""The Docker backend's pure helpers: image names, cpu shares, paths, OOM counters."""

from __future__ import annotations

import pytest

from diego.cell.backends.base import BackendError
from diego.cell.backends.docker import _oom_kills, cpu_shares, image_of, in_container, split_image

PRELOADED = {"linux": "diego/busybox:latest", "cflinuxfs4": "cloudfoundry/cflinuxfs4:1.0"}


# ---------------------------------------------------------------- image_of


@pytest.mark.parametrize(
    ("root_fs", "image"),
    [
        ("docker:///org/image#tag", "org/image:tag"),
        ("docker:///image", "image:latest"),
        ("docker:///org/image", "org/image:latest"),
        ("docker://registry:5000/org/image#v1", "registry:5000/org/image:v1"),
        ("docker://registry.example.com/image", "registry.example.com/image:latest"),
        ("docker:///org/image#sha256:abc123", "org/image@sha256:abc123"),
    ],
)
def test_docker_root_fs_names_its_image(root_fs: str, image: str) -> None:
    """A docker:// root_fs is the image it names, with the tag after '#' (else latest)."""
    assert image_of(root_fs, "linux", PRELOADED) == image


def test_docker_root_fs_without_an_image_is_an_error() -> None:
    """docker:/// with nothing after it names no image."""
    with pytest.raises(BackendError, match="names no image"):
        image_of("docker:///", "linux", PRELOADED)


@pytest.mark.parametrize(
    ("root_fs", "stack", "image"),
    [
        ("preloaded:linux", "other", "diego/busybox:latest"),
        ("preloaded:cflinuxfs4", "linux", "cloudfoundry/cflinuxfs4:1.0"),
        ("", "linux", "diego/busybox:latest"),
        ("", "cflinuxfs4", "cloudfoundry/cflinuxfs4:1.0"),
    ],
)
def test_preloaded_and_empty_root_fs_use_the_configured_image(
    root_fs: str, stack: str, image: str
) -> None:
    """preloaded:NAME is NAME's configured image; an empty root_fs is the stack's."""
    assert image_of(root_fs, stack, PRELOADED) == image


@pytest.mark.parametrize(
    ("root_fs", "stack", "named"),
    [
        ("preloaded:windows", "linux", "preloaded:windows"),
        ("", "windows", "preloaded:windows"),
    ],
)
def test_unconfigured_preloaded_name_is_an_error(root_fs: str, stack: str, named: str) -> None:
    """A preloaded name with no configured image raises BackendError naming it."""
    with pytest.raises(BackendError, match=named):
        image_of(root_fs, stack, PRELOADED)


def test_no_preloaded_images_at_all() -> None:
    """With nothing configured even the stack's own root is an error."""
    with pytest.raises(BackendError, match="preloaded:linux"):
        image_of("", "linux", {})


# ---------------------------------------------------------------- split_image


@pytest.mark.parametrize(
    ("image", "parts"),
    [
        ("org/image:tag", ("org/image", "tag")),
        ("image", ("image", "latest")),
        ("image:latest", ("image", "latest")),
        ("registry:5000/org/image:v1", ("registry:5000/org/image", "v1")),
        ("registry:5000/org/image", ("registry:5000/org/image", "latest")),
        ("org/image@sha256:abc123", ("org/image", "sha256:abc123")),
    ],
)
def test_split_image(image: str, parts: tuple[str, str]) -> None:
    """A reference splits into repository and tag; a registry's port is not a tag."""
    assert split_image(image) == parts


@pytest.mark.parametrize(
    "root_fs",
    ["docker:///org/image#tag", "docker:///image", "docker://registry:5000/org/image#v1"],
)
def test_split_image_undoes_image_of(root_fs: str) -> None:
    """Joining split_image's parts with ':' gives back image_of's reference."""
    image = image_of(root_fs, "linux", {})
    repo, tag = split_image(image)
    assert f"{repo}:{tag}" == image


# ---------------------------------------------------------------- cpu_shares


def test_cpu_shares() -> None:
    """A weight of 100 is a full share (1024); 1 about a hundredth; never below 2."""
    assert cpu_shares(100) == 1024
    assert cpu_shares(50) == 512
    assert 9 <= cpu_shares(1) <= 11
    assert cpu_shares(0) >= 2
    assert all(cpu_shares(w) >= 2 for w in range(-5, 101))
    assert [cpu_shares(w) for w in range(1, 101)] == sorted(cpu_shares(w) for w in range(1, 101))


# ---------------------------------------------------------------- in_container


@pytest.mark.parametrize(
    ("path", "absolute"),
    [
        ("", "/home/vcap"),
        (".", "/home/vcap"),
        ("app", "/home/vcap/app"),
        ("app/bin/", "/home/vcap/app/bin"),
        ("./app/../lib", "/home/vcap/lib"),
        ("/tmp/x", "/tmp/x"),
        ("/", "/"),
        ("..", "/home"),
        ("../../etc", "/etc"),
        ("../../../../etc", "/etc"),
        ("../../../../tmp/x", "/tmp/x"),
        ("/../../etc/passwd", "/etc/passwd"),
    ],
)
def test_in_container(path: str, absolute: str) -> None:
    """Paths are made absolute against the working directory; '..' stops at the root."""
    assert in_container(path, "/home/vcap") == absolute


def test_in_container_with_root_workdir() -> None:
    """A working directory of / (or none) works the same way."""
    assert in_container("", "/") == "/"
    assert in_container("a/b", "") == "/a/b"
    assert in_container("../x", "/") == "/x"


# ---------------------------------------------------------------- _oom_kills

V1_OOM_CONTROL = "oom_kill_disable 0\nunder_oom 0\noom_kill {n}\n"
V2_MEMORY_EVENTS = "low 0\nhigh 0\nmax 17\noom 3\noom_kill {n}\noom_group_kill 0\n"


@pytest.mark.parametrize("template", [V1_OOM_CONTROL, V2_MEMORY_EVENTS])
@pytest.mark.parametrize("n", [0, 1, 42])
def test_oom_kills_from_cgroup_files(template: str, n: int) -> None:
    """The oom_kill count of cgroup v1's memory.oom_control and v2's memory.events."""
    assert _oom_kills(template.format(n=n)) == n


def test_oom_group_kill_is_not_oom_kill() -> None:
    """Only the oom_kill line counts, not oom_group_kill or oom."""
    assert _oom_kills("oom 5\noom_group_kill 7\noom_kill 0\n") == 0


@pytest.mark.parametrize("text", ["", "oom_kill_disable 0\nunder_oom 0\n", "oom_kill x\n"])
def test_oom_kills_without_a_count_is_zero(text: str) -> None:
    """An unreadable (empty), older or garbled file counts no kill."""
    assert _oom_kills(text) == 0
