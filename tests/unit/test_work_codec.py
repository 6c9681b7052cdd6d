"""The wire types between the auctioneer and the cells go through the one codec."""

from __future__ import annotations

import pytest

from diego.models.cells import CellPresence
from diego.models.codec import InvalidDocument, decode, encode
from diego.models.work import CellSnapshot, LRPWork, Resources, TaskWork

SNAPSHOT = CellSnapshot(
    cell_id="cell-b",
    zone="z1",
    stacks=frozenset({"linux", "cflinuxfs4"}),
    rootfs_providers=frozenset({"preloaded", "docker"}),
    total=Resources(1024, 2048, 10),
    available=Resources(512, 1024, 9),
    lrp_counts={"web": 1},
)


def test_a_snapshot_and_work_round_trip_and_sets_encode_sorted() -> None:
    data = encode(SNAPSHOT)
    assert data["stacks"] == ["cflinuxfs4", "linux"]
    assert data["rootfs_providers"] == ["docker", "preloaded"]
    assert decode(CellSnapshot, data) == SNAPSHOT
    task = TaskWork("t1", "d", "linux", "", 32, 0, frozenset({"z2", "z1"}))
    assert encode(task)["zones"] == ["z1", "z2"]
    assert decode(TaskWork, encode(task)) == task
    lrp = LRPWork("web", 3, "d", "linux", "docker:///busybox", 64, 16)
    assert decode(LRPWork, encode(lrp)) == lrp


def test_a_negative_count_is_refused_naming_the_field() -> None:
    data = encode(SNAPSHOT)
    data["available"]["memory_mb"] = -1
    with pytest.raises(InvalidDocument, match=r"available\.memory_mb"):
        decode(CellSnapshot, data)
    with pytest.raises(InvalidDocument, match="index"):
        decode(LRPWork, {**encode(LRPWork("web", 0, "d", "linux", "", 1, 1)), "index": -2})


def test_a_set_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(InvalidDocument, match="zones"):
        decode(TaskWork, {**encode(TaskWork("t", "d", "linux", "", 1, 1)), "zones": "z1"})


def test_a_presence_carries_its_capacity_as_resources() -> None:
    presence = CellPresence(cell_id="c", capacity=Resources(1, 2, 3))
    assert encode(presence)["capacity"] == {"memory_mb": 1, "disk_mb": 2, "containers": 3}
    assert decode(CellPresence, encode(presence)) == presence
