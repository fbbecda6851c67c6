"""Where the Ray provider puts a machine (runtime/ray_provider.py choose_host), from each
host's room as it reported it less what is placed there: spread or pack."""

from __future__ import annotations

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
