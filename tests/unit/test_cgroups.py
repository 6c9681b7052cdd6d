"""Walking and removing a container's groups, on a plain directory tree standing in
for cgroupfs (whose groups are directories; their files are not walked)."""

from __future__ import annotations

from pathlib import Path

from diego.cell.backends.cgroups import Cgroups, ContainerGroups


def tree(root: Path, procs: bool = True) -> ContainerGroups:
    """A container group with two process leaves, one holding a group of its own
    (with empty cgroup.procs files unless ``procs`` is false)."""
    for leaf in ("p1", "p2/sub"):
        (root / "c" / leaf).mkdir(parents=True)
    for group in ("c", "c/p1", "c/p2", "c/p2/sub"):
        if procs:
            (root / group / "cgroup.procs").write_text("")
    return ContainerGroups([root / "c"], root / "c", 1)


def test_groups_lists_children_before_their_parents(tmp_path: Path) -> None:
    """Every group below the container's, deepest first, the container's own last."""
    groups = tree(tmp_path).groups()
    names = [str(g.relative_to(tmp_path)) for g in groups]
    assert sorted(names) == ["c", "c/p1", "c/p2", "c/p2/sub"]
    assert names[-1] == "c"
    assert names.index("c/p2/sub") < names.index("c/p2")


def test_groups_of_a_removed_container_is_empty_below(tmp_path: Path) -> None:
    """A container whose groups are gone walks to nothing but its own (missing) dirs."""
    assert ContainerGroups([tmp_path / "gone"], None, 1).groups() == [tmp_path / "gone"]


async def test_kill_and_remove_removes_the_whole_tree(tmp_path: Path) -> None:
    """Removal goes children first, so a tree of empty groups is removed in one sweep."""
    # cgroupfs removes a group's files with it; a plain directory must have none.
    groups = tree(tmp_path, procs=False)
    assert await groups.kill_and_remove()
    assert not (tmp_path / "c").exists()


def v1_root(root: Path, *controllers: str) -> Path:
    """A stand-in for a cgroup v1 mount: one plain directory per controller."""
    for controller in controllers:
        (root / controller).mkdir()
    return root


def test_v1_containers_get_a_pids_group_with_their_limit(tmp_path: Path) -> None:
    """With a pids hierarchy, a container's groups include one there, holding its
    max_pids; cpu shares still go to the cpu group."""
    cgroups, notes = Cgroups.detect("cell", v1_root(tmp_path, "memory", "cpu", "pids"))
    assert cgroups is not None
    assert notes == []
    assert cgroups.pids_base is not None
    groups = cgroups.create("c1", memory_mb=64, cpu_weight=50, max_pids=20)
    assert groups.pids_dir == cgroups.pids_base / "c1"
    assert groups.pids_dir in groups.dirs
    assert (groups.pids_dir / "pids.max").read_text() == "20"
    assert cgroups.cpu_base is not None
    assert (cgroups.cpu_base / "c1" / "cpu.shares").read_text() == "512"
    assert groups.leaf("p1").pids_dir == groups.pids_dir / "p1"


def test_v1_without_pids_says_max_pids_is_not_enforced(tmp_path: Path) -> None:
    cgroups, notes = Cgroups.detect("cell", v1_root(tmp_path, "memory", "cpu"))
    assert cgroups is not None
    assert cgroups.pids_base is None
    assert notes == ["no pids cgroup: max_pids is not enforced"]
    groups = cgroups.create("c1", memory_mb=0, cpu_weight=100, max_pids=20)
    assert groups.pids_dir is None
    assert not groups.pids_exhausted()


def test_pids_exhausted_reads_the_max_count_of_pids_events(tmp_path: Path) -> None:
    groups = ContainerGroups([tmp_path], None, 1, tmp_path)
    assert not groups.pids_exhausted()  # no file: no limit was hit
    (tmp_path / "pids.events").write_text("max 0\n")
    assert not groups.pids_exhausted()
    (tmp_path / "pids.events").write_text("max 3\n")
    assert groups.pids_exhausted()
