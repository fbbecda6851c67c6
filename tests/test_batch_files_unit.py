"""The file rules of task and node directories (services/batch/files.py) on temporary
directories: listings, properties, ranges, containment and deletion."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from batchyard.runtime.machine_files import LocalFiles
from batchyard.services.batch import files
from batchyard.services.errors import Conflict, Forbidden, InvalidInput, NotFound, RangeNotSatisfiable


def at(path):
    """The directory `path` through the file service of the directory that holds it."""
    return files.Place(LocalFiles(path.parent), path.name)


def read_range(root, rel, start=None, end=None):
    """What a download answers: open_file, byte_span and iter_bytes, as the API composes them."""
    handle, info = files.open_file(at(root), rel)
    try:
        first, stop = files.byte_span(None if start is None and end is None else (start, end), info["size"])
        return b"".join(files.iter_bytes(handle, first, stop)), info
    finally:
        handle.close()


@pytest.fixture
def tree(tmp_path):
    """A task directory beside a secret it must never reach."""
    (tmp_path / "secret.txt").write_text("top secret\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "o.txt").write_text("outside\n")
    root = tmp_path / "task"
    (root / "wd" / "out dir").mkdir(parents=True)
    (root / "stdout.txt").write_text("hello world\n")
    (root / "stderr.txt").write_text("")
    (root / "wd" / "out dir" / "result.txt").write_text("0123456789")
    (root / "wd" / "empty").mkdir()
    return root


def names(entries):
    return [e["name"] for e in entries]


def test_listing_top_level_and_recursive(tree):
    top = files.list_files(at(tree))
    assert names(top) == ["stderr.txt", "stdout.txt", "wd"]
    wd = next(e for e in top if e["name"] == "wd")
    assert wd == {"name": "wd", "isDirectory": True}  # Azure lists directories without properties
    out = next(e for e in top if e["name"] == "stdout.txt")
    assert out["isDirectory"] is False
    props = out["properties"]
    assert props["contentLength"] == "12" and props["contentType"] == "application/octet-stream"
    assert props["fileMode"] == oct(os.stat(tree / "stdout.txt").st_mode) and props["fileMode"].startswith("0o100")
    assert props["lastModified"].endswith("Z") and props["creationTime"] <= props["lastModified"]

    everything = files.list_files(at(tree), recursive=True)
    assert names(everything) == ["stderr.txt", "stdout.txt", "wd", "wd/empty", "wd/out dir",
                                 "wd/out dir/result.txt"]
    assert [e["isDirectory"] for e in everything] == [False, False, True, True, True, False]


def test_listing_skips_links_that_leave_and_undecodable_names(tree):
    os.symlink(tree.parent / "secret.txt", tree / "wd" / "leak")
    os.symlink(tree.parent / "outside", tree / "wd" / "leakdir")
    os.symlink("../stdout.txt", tree / "wd" / "inner-link")
    os.symlink("out dir", tree / "wd" / "inner-dir")
    os.symlink("nowhere", tree / "wd" / "dangling")
    with open(os.path.join(os.fsencode(tree / "wd"), b"bad\xffname"), "w"):
        pass
    listed = {e["name"]: e for e in files.list_files(at(tree), recursive=True)}
    assert "wd/leak" not in listed and "wd/leakdir" not in listed and "wd/dangling" not in listed
    assert not any(n.startswith("wd/leakdir/") for n in listed)
    assert not any("bad" in n for n in listed)
    assert listed["wd/inner-link"]["properties"]["contentLength"] == "12"
    assert listed["wd/inner-dir"]["isDirectory"] is True
    assert not any(n.startswith("wd/inner-dir/") for n in listed)  # links are not descended


def test_properties_of_files_and_directories(tree):
    info = files.file_properties(at(tree), "wd/out dir/result.txt")
    assert info["name"] == "wd/out dir/result.txt" and info["isDirectory"] is False
    assert info["size"] == 10 and info["eTag"].startswith("0x")
    assert info["properties"]["fileMode"].startswith("0o100")
    folder = files.file_properties(at(tree), "wd/")
    assert folder["isDirectory"] is True and folder["size"] == 0 and folder["properties"]["fileMode"].startswith("0o40")
    assert files.file_properties(at(tree), "wd/./out dir/../out dir/result.txt")["name"] == "wd/out dir/result.txt"
    before = files.file_properties(at(tree), "stdout.txt")["eTag"]
    (tree / "stdout.txt").write_text("changed, and longer\n")
    assert files.file_properties(at(tree), "stdout.txt")["eTag"] != before


def test_read_whole_and_ranges(tree):
    rel = "wd/out dir/result.txt"
    assert read_range(tree, rel)[0] == b"0123456789"
    assert read_range(tree, rel, 2, 4)[0] == b"234"
    assert read_range(tree, rel, 5)[0] == b"56789"
    assert read_range(tree, rel, 8, 100)[0] == b"89"  # the end is clipped
    assert files.parse_range(None) is None and files.parse_range("") is None
    assert files.parse_range("bytes=0-4") == (0, 4)
    assert files.parse_range("bytes=5-") == (5, None)
    assert files.parse_range("bytes=-3") == (None, 3)
    assert files.byte_span(files.parse_range("bytes=-3"), 10) == (7, 10)
    assert files.byte_span(files.parse_range("bytes=-30"), 10) == (0, 10)
    assert files.byte_span(files.parse_range("bytes=5-"), 10) == (5, 10)
    assert files.byte_span(None, 10) == (0, 10)
    for bad in ("bytes=4-2", "bytes=a-b", "items=0-1", "bytes=-", "bytes=0-1,3-4", "0-1", "bytes=1" + "0" * 40 + "-"):
        with pytest.raises(InvalidInput) as exc:
            files.parse_range(bad)
        assert exc.value.code == "InvalidHeaderValue"
    for spec, size in (((10, None), 10), ((10, 20), 10), ((0, None), 0), ((None, 0), 10), ((None, 5), 0)):
        with pytest.raises(RangeNotSatisfiable) as exc:
            files.byte_span(spec, size)
        assert exc.value.code == "InvalidRange"


def test_big_files_are_read_in_chunks(tree):
    big = tree / "wd" / "big.bin"
    with open(big, "wb") as f:
        f.truncate(64 << 20)  # sparse: 64 MiB that take no room
        f.seek(50 << 20)
        f.write(b"marker")
    handle, info = files.open_file(at(tree), "wd/big.bin")
    assert info["size"] == 64 << 20
    chunks = files.iter_bytes(handle, 50 << 20, (50 << 20) + 6)
    assert b"".join(chunks) == b"marker" and handle.closed
    handle, _ = files.open_file(at(tree), "wd/big.bin")
    sizes = [len(c) for c in files.iter_bytes(handle, 0, 1 << 20)]
    assert max(sizes) <= files.CHUNK and sum(sizes) == 1 << 20


@pytest.mark.parametrize("path", ["../secret.txt", "/etc/passwd", "a/../../secret.txt", "wd/../../secret.txt",
                                  "..", "wd/\x00x", "stdout.txt\x00", "/"])
def test_paths_that_leave_are_refused_before_touching_files(tree, path):
    for operation in (lambda: files.file_properties(at(tree), path), lambda: read_range(tree, path),
                      lambda: files.delete(at(tree), path, recursive=True)):
        with pytest.raises(InvalidInput) as exc:
            operation()
        assert exc.value.code == "InvalidUri"
    assert (tree.parent / "secret.txt").read_text() == "top secret\n"


def test_symlinks_that_leave_are_not_followed(tree):
    os.symlink(tree.parent / "secret.txt", tree / "wd" / "leak")
    os.symlink(tree.parent / "outside", tree / "wd" / "leakdir")
    os.symlink("/etc", tree / "etc")
    for path in ("wd/leak", "wd/leakdir/o.txt", "etc/passwd", "wd/leakdir"):
        with pytest.raises(Forbidden) as exc:
            files.file_properties(at(tree), path)
        assert exc.value.code == "AuthorizationFailure"
        with pytest.raises(Forbidden):
            read_range(tree, path)
    with pytest.raises(Forbidden):  # deleting through a link to outside
        files.delete(at(tree), "wd/leakdir/o.txt")
    assert (tree.parent / "outside" / "o.txt").exists()
    # deleting the link itself removes the link, never its target
    files.delete(at(tree), "wd/leak")
    files.delete(at(tree), "wd/leakdir", recursive=True)
    assert not os.path.lexists(tree / "wd" / "leak") and not os.path.lexists(tree / "wd" / "leakdir")
    assert (tree.parent / "secret.txt").read_text() == "top secret\n"
    assert (tree.parent / "outside" / "o.txt").read_text() == "outside\n"


def test_symlinks_inside_are_followed_for_reads(tree):
    os.symlink("../stdout.txt", tree / "wd" / "inner-link")
    os.symlink("out dir", tree / "wd" / "inner-dir")
    assert read_range(tree, "wd/inner-link")[0] == b"hello world\n"
    assert read_range(tree, "wd/inner-dir/result.txt", 0, 2)[0] == b"012"
    assert files.file_properties(at(tree), "wd/inner-link")["name"] == "wd/inner-link"


def test_missing_directories_and_special_files(tree):
    for path in ("nope.txt", "wd/nope/x", "stdout.txt/x"):
        with pytest.raises(NotFound) as exc:
            read_range(tree, path)
        assert exc.value.code == "FileNotFound" and exc.value.message == "The specified file does not exist."
        with pytest.raises(NotFound):
            files.file_properties(at(tree), path)
        with pytest.raises(NotFound):
            files.delete(at(tree), path)
    with pytest.raises(InvalidInput) as exc:
        read_range(tree, "wd")
    assert exc.value.code == "FileIsDirectory"
    os.mkfifo(tree / "wd" / "pipe")  # opening must not block waiting for a writer
    with pytest.raises(InvalidInput) as exc:
        read_range(tree, "wd/pipe")
    assert exc.value.code == "UnsupportedFileType"
    assert stat.S_ISFIFO(os.stat(tree / "wd" / "pipe").st_mode)
    here = os.getcwd()
    os.chdir(tree / "wd")  # (a socket's path is short)
    try:
        socket.socket(socket.AF_UNIX).bind("sock")  # opening one is ENXIO: it was a 500
    finally:
        os.chdir(here)
    with pytest.raises(InvalidInput) as exc:
        read_range(tree, "wd/sock")
    assert exc.value.code == "UnsupportedFileType"
    with pytest.raises(NotFound):
        files.list_files(at(tree / "missing"))


def test_a_directory_above_the_root_swapped_for_a_link_after_the_look_is_not_followed(tmp_path, monkeypatch):
    """The root was checked for links by path (realpath), then opened by path: a task
    root in its machine could swap a directory above a root for a link to a host directory
    in between, and the service read (or deleted) the host's file there. Every open now
    walks from the disk's base, one name at a time, following nothing."""
    disk = tmp_path / "disk"
    (disk / "jobs" / "job-1" / "task").mkdir(parents=True)
    (disk / "jobs" / "job-1" / "task" / "mine.txt").write_text("mine")
    (tmp_path / "host" / "task").mkdir(parents=True)
    (tmp_path / "host" / "task" / "mine.txt").write_text("the host's")
    place = files.Place(LocalFiles(disk), "jobs/job-1/task")
    assert b"".join(files.iter_bytes(files.open_file(place, "mine.txt")[0], 0, 4)) == b"mine"
    locate = LocalFiles._locate

    def locate_then_swap(self, *args, **kwargs):
        found = locate(self, *args, **kwargs)
        (disk / "jobs" / "job-1").rename(disk / "jobs" / "job-1.real")
        (disk / "jobs" / "job-1").symlink_to(tmp_path / "host")
        return found

    monkeypatch.setattr(LocalFiles, "_locate", locate_then_swap)
    with pytest.raises(NotFound):
        files.open_file(place, "mine.txt")
    with pytest.raises(Forbidden):  # the next look finds the link, as before
        files.file_properties(place, "mine.txt")


def test_delete_files_and_directories(tree):
    files.delete(at(tree), "stderr.txt")
    assert not (tree / "stderr.txt").exists()
    files.delete(at(tree), "wd/empty")  # an empty directory goes without recursive
    assert not (tree / "wd" / "empty").exists()
    with pytest.raises(Conflict) as exc:
        files.delete(at(tree), "wd")
    assert exc.value.code == "DirectoryNotEmpty"
    assert (tree / "wd" / "out dir" / "result.txt").exists()
    files.delete(at(tree), "wd", recursive=True)
    assert names(files.list_files(at(tree), recursive=True)) == ["stdout.txt"]
    for path in ("", ".", "wd/.."):
        with pytest.raises(Forbidden):  # never the directory itself
            files.delete(at(tree), path, recursive=True)
    (tree / "shared").mkdir()
    (tree / "shared" / "s.txt").write_text("s")
    with pytest.raises(Forbidden):
        files.delete(at(tree), "shared", recursive=True, protected={"shared"})
    files.delete(at(tree), "shared/s.txt", protected={"shared"})
    assert (tree / "shared").is_dir() and (tree / "stdout.txt").exists()


def test_transfers_operations_never_follow_links(tree):
    """What resource-file downloads and output uploads use (write, open_file, walk_files):
    a link the task made, to a file or a directory, is neither read, written through nor walked."""
    disk = LocalFiles(tree.parent)
    os.symlink(tree.parent / "secret.txt", tree / "wd" / "leak")
    os.symlink(tree.parent / "outside", tree / "wd" / "leakdir")
    for rel in ("task/wd/leak", "task/wd/leakdir/o.txt"):
        with pytest.raises(OSError):
            disk.open_file(rel)
        with pytest.raises(OSError):
            disk.write(rel, [b"overwritten"])
    assert (tree.parent / "secret.txt").read_text() == "top secret\n"
    assert (tree.parent / "outside" / "o.txt").read_text() == "outside\n"
    assert disk.walk_files("task/wd") == ["out dir/result.txt"]
    status, handle = disk.open_file("task/wd/out dir/result.txt")
    with handle:
        assert (status.size, handle.read()) == (10, b"0123456789")


def test_a_package_marker_a_task_made_huge_is_read_no_further_than_an_etag(tmp_path):
    """A node keeps an installed package's etag in a marker file in the package's
    directory, which a task can reach: made a sparse file of a terabyte, the service read
    all of it into memory on the node's next start. It reads an etag's worth."""
    import tracemalloc

    from batchyard.services.batch.package_install import MARKER, PackageInstaller

    (tmp_path / "app").mkdir()
    with open(tmp_path / "app" / MARKER, "wb") as marker:
        marker.write(b'"0x8D1"\n')
        marker.truncate(1 << 30)
    tracemalloc.start()
    try:
        etag = PackageInstaller._installed_etag(LocalFiles(tmp_path), "app")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert etag.startswith('"0x8D1"') and peak < 16 << 20
