"""Layers travel between hosts by content id (runtime/layers.py export/receive): what
arrives is stored only if it hashes to the id it was sent as, with its owners, modes,
overlay whiteouts and kept xattrs; the layer stores here are two hosts' caches."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from batchyard.runtime.layers import LayerMismatch, LayerStore


@pytest.fixture
def layer(tmp_path):
    src = tmp_path / "src"
    (src / "opt" / "app").mkdir(parents=True)
    (src / "opt" / "app" / "run").write_text("echo hello\n")
    os.chmod(src / "opt" / "app" / "run", 0o4755)
    (src / "same").write_text("echo hello\n")  # same content, other metadata: another blob
    os.chown(src / "same", 10001, 10001)
    os.symlink("/etc/os-release", src / "release")
    os.mknod(src / "gone", 0o20000, os.makedev(0, 0))  # an overlay whiteout
    os.setxattr(src / "opt", "trusted.overlay.opaque", b"y")
    sender = LayerStore(tmp_path / "host-a")
    return sender, sender.freeze(src)


def sent(store: LayerStore, layer_id: str) -> io.BytesIO:
    buffer = io.BytesIO()
    store.export(layer_id, buffer)
    buffer.seek(0)
    return buffer


def test_a_layer_arrives_whole_under_its_id(tmp_path, layer):
    sender, layer_id = layer
    receiver = LayerStore(tmp_path / "host-b")
    assert not receiver.exists(layer_id)
    assert receiver.receive(layer_id, sent(sender, layer_id)) == layer_id
    got = receiver.path(layer_id)
    assert (got / "opt" / "app" / "run").read_text() == "echo hello\n"
    assert os.stat(got / "opt" / "app" / "run").st_mode & 0o7777 == 0o4755
    assert os.stat(got / "same").st_uid == 10001
    assert os.readlink(got / "release") == "/etc/os-release"
    assert os.stat(got / "gone", follow_symlinks=False).st_rdev == os.makedev(0, 0)
    assert os.getxattr(got / "opt", "trusted.overlay.opaque") == b"y"
    assert receiver.receive(layer_id, io.BytesIO(b"")) == layer_id  # cached: nothing is read again


def test_a_layer_that_does_not_hash_to_its_id_is_dropped(tmp_path, layer):
    sender, layer_id = layer
    receiver = LayerStore(tmp_path / "host-b")
    tampered = io.BytesIO()
    with tarfile.open(fileobj=sent(sender, layer_id), mode="r|") as source, \
            tarfile.open(fileobj=tampered, mode="w|", format=tarfile.PAX_FORMAT) as out:
        for member in source:
            data = source.extractfile(member).read() if member.isreg() else None
            if member.name == "same":
                data = b"echo pwned\n"
                member.size = len(data)
            out.addfile(member, io.BytesIO(data) if data is not None else None)
    tampered.seek(0)
    with pytest.raises(LayerMismatch):
        receiver.receive(layer_id, tampered)
    assert not receiver.exists(layer_id) and not list(receiver.tmp.iterdir())
