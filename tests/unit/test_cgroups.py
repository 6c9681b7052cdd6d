"""Walking and removing a container's groups, on a plain directory tree standing in
for cgroupfs (whose groups are directories; their files are not walked)."""

from __future__ import annotations

from pathlib import Path

from diego.cell.backends.cgroups import ContainerGroups


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
