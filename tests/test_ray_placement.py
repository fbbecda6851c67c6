"""Where the Ray provider puts a machine (runtime/ray_provider.py choose_host), from each
host's room as it reported it less what is placed there: spread or pack; and the addresses
it chooses for machines on networks that span hosts (runtime/address_plan.py)."""

from __future__ import annotations

from batchyard.runtime.address_plan import AddressPlan
from batchyard.runtime.ray_provider import choose_host

ROOMS = {"a": (4, 8192), "b": (2, 4096), "c": (1, 2048)}


def test_spread_takes_the_host_with_the_most_room():
    assert choose_host(ROOMS, (1, 2048), pack=False) == "a"
    assert choose_host({"a": (2, 1024), "b": (2, 4096)}, (1, 512), pack=False) == "b"  # then memory


def test_pack_takes_the_fullest_host_that_still_fits():
    assert choose_host(ROOMS, (1, 2048), pack=True) == "c"
    assert choose_host(ROOMS, (2, 2048), pack=True) == "b"
    assert choose_host(ROOMS, (2, 8192), pack=True) == "a"  # memory counts too


def test_with_no_host_that_fits_the_one_with_the_most_room():
    assert choose_host(ROOMS, (8, 1024), pack=True) == "a"
    assert choose_host(ROOMS, (8, 1024), pack=False) == "a"


def test_placing_spreads_a_pool_over_every_host():
    rooms = {"a": [4, 8192], "b": [4, 8192], "c": [4, 8192]}
    placed = []
    for _ in range(6):
        host = choose_host({n: tuple(r) for n, r in rooms.items()}, (1, 2048), pack=False)
        rooms[host][0] -= 1
        rooms[host][1] -= 2048
        placed.append(host)
    assert sorted(placed) == ["a", "a", "b", "b", "c", "c"]


def test_placement_and_addresses_survive_a_restart_and_a_torn_journal_line(tmp_path):
    """Kept as a snapshot and a journal of changes (runtime/journal.py), one line a change."""
    plan = AddressPlan(tmp_path)
    first, second = plan.assign("m1", "pool:a"), plan.assign("m2", "pool:a")
    other = plan.assign("v1", "rg:b")
    assert first[0] == second[0] != other[0] and first[1] != second[1]
    plan.release("m1")
    with open(tmp_path / "addresses.log", "a") as journal:
        journal.write('["m9", ["pool:a"')  # a crash in the middle of a line
    again = AddressPlan(tmp_path)
    assert again.address("m1") is None and again.address("m2") == plan.address("m2")
    assert again.assign("m2", "pool:a") == second and again.assign("m3", "pool:a") == first  # m1's, freed
    assert again.assign("v1", "rg:b") == other
    assert (tmp_path / "addresses.log").read_text().count("\n") == 1  # compacted at load: m3's line since
