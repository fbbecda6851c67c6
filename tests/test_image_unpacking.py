"""A registry layer is untrusted input unpacked as root (runtime/container_images.py
_unpack): whatever its entries say, nothing is written, removed or linked outside the
layer being made, and what is inside keeps its modes (setuid included) and whiteouts."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
import tarfile

import pytest

from batchyard.runtime.container_images import _unpack
from batchyard.runtime.layers import LayerStore


def layer(*entries) -> Iterator[bytes]:
    """A layer tar from (name, kind, extra) entries: kind "f" (extra: bytes), "d", "l"
    (symlink, extra: target), "h" (hard link, extra: target), "c" (character device)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, extra, *mode in entries:
            info = tarfile.TarInfo(name)
            info.mode = mode[0] if mode else 0o644
            if kind == "f":
                info.size = len(extra)
                tar.addfile(info, io.BytesIO(extra))
                continue
            info.type = {"d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE, "h": tarfile.LNKTYPE,
                         "c": tarfile.CHRTYPE}[kind]
            if kind in "lh":
                info.linkname = extra
            if kind == "c":
                info.devmajor, info.devminor = 1, 3
            tar.addfile(info)
    return iter([buffer.getvalue()])


@pytest.fixture
def place(tmp_path):
    """dest inside a directory with a bystander file and directory the layer must not touch."""
    (tmp_path / "bystander").write_text("keep me")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file").write_text("keep me too")
    dest = tmp_path / "dest"
    dest.mkdir()
    return tmp_path, dest


def untouched(tmp_path) -> bool:
    return (tmp_path / "bystander").read_text() == "keep me" and \
        (tmp_path / "other" / "file").read_text() == "keep me too"


@pytest.mark.parametrize("whiteout", [".wh.", ".wh..", ".wh...", "sub/.wh...", "sub/.wh.."])
def test_whiteouts_that_name_no_entry_are_refused(place, whiteout):
    tmp_path, dest = place
    (dest / "sub").mkdir()
    (dest / "sub" / "kept").write_text("x")
    with pytest.raises(tarfile.TarError):
        _unpack(layer(("sub/kept", "f", b"x"), (whiteout, "f", b"")), dest)
    assert untouched(tmp_path) and dest.is_dir() and (dest / "sub" / "kept").exists()


@pytest.mark.parametrize("entries", [
    [("/../bystander", "f", b"pwned")],
    [("../bystander", "f", b"pwned")],
    [("a/../../bystander", "f", b"pwned")],
    [("out", "l", "../other"), ("out/file", "f", b"pwned")],  # through a symlink made just before
    [("out", "l", "/"), ("out/bystander", "f", b"pwned")],
    [("out", "l", "../other"), ("out/.wh.file", "f", b"")],  # a whiteout through a symlink
    [("out", "l", "../other"), ("out/.wh..wh..opq", "f", b"")],
    [("hard", "h", "../bystander")],  # a hard link to a file outside
    [("out", "l", "../bystander"), ("hard", "h", "out")],  # a hard link through a symlink
    [("in", "d", None, 0o755), ("in/out", "l", "../../other"), ("in/out/file", "f", b"pwned")],
])
def test_nothing_lands_outside_the_layer(place, entries):
    tmp_path, dest = place
    with pytest.raises(tarfile.TarError):
        _unpack(layer(*entries), dest)
    assert untouched(tmp_path)
    assert os.stat(tmp_path / "bystander").st_nlink == 1
    assert "trusted.overlay.opaque" not in os.listxattr(tmp_path / "other")


def test_sparse_files_that_declare_any_size_are_refused(place):
    """A GNU sparse entry of a few bytes may declare a terabyte, which the layer's copy
    would write out whole."""
    _, dest = place
    payload = b"1\n0\n1\n".ljust(512, b"\0") + b"x".ljust(512, b"\0")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("GNUSparseFile.0/big")
        info.size = len(payload)
        info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "big",
                            "GNU.sparse.realsize": str(1 << 40)}
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(tarfile.TarError, match="sparse"):
        _unpack(iter([buffer.getvalue()]), dest)
    assert not (dest / "big").exists()


def test_what_a_layer_may_hold_arrives_as_it_is(place):
    tmp_path, dest = place
    _unpack(layer(("bin", "d", None, 0o755), ("bin/su", "f", b"#!", 0o4755), ("bin/sh", "l", "/bin/busybox"),
                  ("bin/ash", "h", "bin/su", 0o4755), ("abs", "l", "/etc/passwd"), ("dev/null", "c", None),
                  ("lib", "l", "bin"), ("lib", "d", None, 0o700), ("lib64", "l", "lib"), ("lib/ld.so", "f", b"x"),
                  ("etc", "d", None, 0o755), ("etc/.wh.old", "f", b""), ("etc/.wh..wh..opq", "f", b"")), dest)
    assert stat.S_IMODE(os.stat(dest / "bin" / "su").st_mode) == 0o4755
    assert os.readlink(dest / "bin" / "sh") == "/bin/busybox" and os.readlink(dest / "abs") == "/etc/passwd"
    assert os.stat(dest / "bin" / "ash").st_ino == os.stat(dest / "bin" / "su").st_ino
    assert not (dest / "dev" / "null").exists()  # a container gets its machine's /dev
    assert os.path.isdir(dest / "bin") and not os.path.islink(dest / "lib")  # an entry replaces a link
    assert os.readlink(dest / "lib64") == "lib" and (dest / "lib" / "ld.so").exists()
    whiteout = os.lstat(dest / "etc" / "old")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == os.makedev(0, 0)
    assert os.getxattr(dest / "etc", "trusted.overlay.opaque") == b"y"
    assert untouched(tmp_path)


@pytest.mark.parametrize("entries", [
    [("hard", "h", "../bystander")],
    [("out", "l", "../bystander"), ("hard", "h", "out")],
    [("out", "l", "../other"), ("out/file", "f", b"pwned")],
])
def test_archives_and_received_layers_keep_inside_too(place, entries):
    """The layer store's two other ways in (a root filesystem archive, a layer from another
    host) refuse the same entries."""
    tmp_path, _ = place
    store = LayerStore(tmp_path / "store")
    with pytest.raises(tarfile.TarError):
        store.import_archive(io.BytesIO(next(layer(*entries))))
    with pytest.raises(tarfile.TarError):
        store.receive("0" * 64, io.BytesIO(next(layer(*entries))))
    assert untouched(tmp_path) and os.stat(tmp_path / "bystander").st_nlink == 1


def test_layers_move_between_hosts_only_by_content_id(place):
    tmp_path, _ = place
    store = LayerStore(tmp_path / "store")
    for name in ("../../other", "host", "/etc"):
        with pytest.raises(KeyError):
            store.export(name, io.BytesIO())
        with pytest.raises(ValueError):
            store.receive(name, io.BytesIO(next(layer(("f", "f", b"x")))))
    assert untouched(tmp_path)
