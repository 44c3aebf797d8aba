from __future__ import annotations

import pytest

from cosgitops.bootdisk import layout as L
from cosgitops.bootdisk.tools import DiskSizeError
from cosgitops.errors import UsageError

MiB, GiB = L.MiB, L.GiB


def sizes(**overrides: int) -> L.ContentSizes:
    base = {"esp": 3 * MiB, "oem": 1 * MiB, "recovery": 400 * MiB, "state": 400 * MiB,
            "persistent": 0, "largest_image": 400 * MiB}  # fmt: skip
    base.update(overrides)
    return L.ContentSizes(**base)


def test_partitions_come_in_cos_order_aligned_and_back_to_back() -> None:
    plan = L.plan_layout(L.minimum_sizes(sizes()))
    assert [p.label for p in plan.partitions] == list(L.LABELS)
    assert [p.number for p in plan.partitions] == [1, 2, 3, 4, 5]
    assert plan.partitions[0].offset == 1 * MiB
    for before, after in zip(plan.partitions, plan.partitions[1:], strict=False):
        assert after.offset == before.end
    for partition in plan.partitions:
        assert partition.offset % MiB == 0 and partition.size % MiB == 0
    assert plan.partitions[0].filesystem == "vfat" and plan.partitions[0].type_code == "EF00"
    assert {p.filesystem for p in plan.partitions[1:]} == {"ext4"}
    # one spare MiB at the end holds the backup GPT
    assert plan.size == plan.partitions[-1].end + MiB == plan.minimum_size
    assert plan.partitions[-1].last_lba == plan.partitions[-1].end // 512 - 1


def test_room_for_later_images() -> None:
    minimum = L.minimum_sizes(sizes())
    image = 400 * MiB
    grown = int(image * L.DEFAULT_POLICY.image_growth)
    # state: the active image now, a passive and a grown transition image later
    assert minimum[L.STATE] >= image + 2 * grown
    # recovery: the recovery image and a grown new one beside it while it is upgraded
    assert minimum[L.RECOVERY] >= image + grown
    assert minimum[L.ESP] == 64 * MiB  # the minimum for a FAT32 ESP
    small = L.minimum_sizes(sizes(recovery=0, state=0, largest_image=0, esp=0))
    assert small[L.STATE] == L.DEFAULT_POLICY.state_min
    assert small[L.OEM] == L.DEFAULT_POLICY.oem_min


def test_ext4_sizes_leave_room_for_the_file_system_itself() -> None:
    for data in (0, 1, 5 * MiB, 300 * MiB, 3 * GiB):
        size = L.ext4_size_for(data)
        assert size % MiB == 0
        assert size >= data * 1.03 + L.ext4_journal_size(size)


def test_an_explicit_size_must_fit_and_grows_the_last_partition() -> None:
    minimum = L.minimum_sizes(sizes())
    fitted = L.plan_layout(minimum)
    bigger = L.plan_layout(minimum, size=8 * GiB)
    assert bigger.size == 8 * GiB
    assert bigger.partitions[:-1] == fitted.partitions[:-1]
    assert bigger.partitions[-1].end == 8 * GiB - MiB
    odd = L.plan_layout(minimum, size=fitted.minimum_size + 8 * 512)
    assert odd.partitions[-1].end == fitted.partitions[-1].end  # rounded down to a MiB
    with pytest.raises(DiskSizeError) as caught:
        L.plan_layout(minimum, size=fitted.minimum_size - MiB)
    message = str(caught.value)
    assert f"needs at least {fitted.minimum_size // MiB} MiB" in message
    assert f"({fitted.minimum_size} bytes)" in message
    assert caught.value.hint and f"--size {fitted.minimum_size // MiB}MiB" in caught.value.hint
    with pytest.raises(DiskSizeError, match="multiple of 512"):
        L.plan_layout(minimum, size=8 * GiB + 1)
    assert L.plan_layout(minimum, size=fitted.minimum_size) == fitted


@pytest.mark.parametrize(
    ("text", "value"),
    [("4096", 4096), ("512M", 512 * MiB), ("512MiB", 512 * MiB), ("8G", 8 * GiB),
     ("8gib", 8 * GiB), ("1.5G", 1536 * MiB), ("2T", 2 * 1024 * GiB), (" 64 MB ", 64 * MiB)],
)  # fmt: skip
def test_parse_size(text: str, value: int) -> None:
    assert L.parse_size(text) == value


@pytest.mark.parametrize("text", ["", "big", "-1G", "1.1", "8X", "G"])
def test_parse_size_refuses_nonsense(text: str) -> None:
    with pytest.raises(UsageError):
        L.parse_size(text)
