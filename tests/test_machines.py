"""What a machine is: isolated from the host and from other machines, built from shared
layers without copies, with snapshots that cost only what changed, and root filesystems
imported from an uploaded archive."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
import requests
from azure.core.exceptions import HttpResponseError

from conftest import base_image_reference, run_script, vm_body

RG = "machines"


def layer_bytes(server) -> int:
    total = 0
    for dirpath, _, files in os.walk(server.data_dir / "runtime" / "layers" / "blobs"):
        total += sum(os.lstat(os.path.join(dirpath, f)).st_blocks * 512 for f in files)
    return total


@pytest.fixture(scope="module")
def pair(clients):
    c = clients.compute
    clients.resource.resource_groups.create_or_update(RG, {"location": clients.location})
    base = base_image_reference(c, clients.location)
    a = c.virtual_machines.begin_create_or_update(RG, "vm-a", vm_body(clients.location, base, data_disks=[
        {"lun": 0, "createOption": "Empty", "diskSizeGB": 4}])).result()
    b = c.virtual_machines.begin_create_or_update(RG, "vm-b", vm_body(clients.location, base)).result()
    run_script(c, RG, "vm-a", "echo secret-of-a > /datadisks/lun0/a.txt")
    return a, b


def test_machine_cannot_see_the_data_directory_or_host_private_files(clients, server, pair):
    data_dir = str(server.data_dir)
    out = run_script(clients.compute, RG, "vm-b",
                     f"test -e '{data_dir}' && echo DATA-DIR-VISIBLE || echo no-data-dir",
                     "ls -A /root | wc -l",
                     "test -e /etc/shadow && echo SHADOW-VISIBLE || echo no-shadow",
                     "test -e /work && echo WORK-VISIBLE || echo no-work",
                     "mount -t tmpfs x /mnt 2>/dev/null && echo MOUNTED || echo mount-refused",
                     "ls /proc | grep -c '^[0-9]'")
    lines = out.split("\n")
    assert lines[:5] == ["no-data-dir", "0", "no-shadow", "no-work", "mount-refused"]
    assert int(lines[5]) < 10  # its own PID namespace: only its own few processes


def test_a_run_command_s_output_of_any_size_costs_the_service_only_its_last_4_kib(clients, server, pair):
    """Azure keeps the last 4 KiB of a run command's stdout and stderr. The service read the
    whole of each into memory first: a script that made its stdout a sparse file of a
    terabyte took the service's memory with it. 2 GiB here, against the server's peak RSS."""
    def peak_rss_kib() -> int:
        status = (Path("/proc") / str(server.proc.pid) / "status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))

    before = peak_rss_kib()
    out = run_script(clients.compute, RG, "vm-b", "truncate -s 2G /proc/self/fd/1", "echo the-end")
    assert out.endswith("the-end\n") and len(out.encode()) <= 4096
    assert peak_rss_kib() - before < 256 * 1024


def test_an_existing_vm_s_size_and_data_disks_are_refused_not_ignored_when_changed(clients, pair):
    """A PUT of an existing VM that added a data disk, or changed its size, answered as if
    it had happened, and nothing did: the VM came back without the disk. Such a change is
    refused (409 PropertyChangeNotAllowed, as Azure names a change it does not allow); the
    VM sent back as it was read, with new tags, goes through."""
    c = clients.compute
    base = base_image_reference(c, clients.location)
    for body in (vm_body(clients.location, base, data_disks=[{"lun": 0, "createOption": "Empty", "diskSizeGB": 1}]),
                 {**vm_body(clients.location, base), "properties": {"hardwareProfile": {"vmSize": "Standard_D4s_v3"}}}):
        with pytest.raises(HttpResponseError) as refused:
            c.virtual_machines.begin_create_or_update(RG, "vm-b", body).result()
        assert refused.value.status_code == 409 and refused.value.error.code == "PropertyChangeNotAllowed"
    assert not c.virtual_machines.get(RG, "vm-b").storage_profile.data_disks
    vm = c.virtual_machines.get(RG, "vm-a")  # one data disk: sent back as read
    vm.tags = {"kept": "yes"}
    again = c.virtual_machines.begin_create_or_update(RG, "vm-a", vm).result()
    assert again.tags == {"kept": "yes"} and [d.lun for d in again.storage_profile.data_disks] == [0]


def test_machine_cannot_see_another_machines_disks(clients, pair):
    out = run_script(clients.compute, RG, "vm-b", "ls /datadisks", "grep -rs secret-of-a /datadisks /mnt /tmp /opt; echo done")
    assert "secret-of-a" not in out
    assert run_script(clients.compute, RG, "vm-a", "cat /datadisks/lun0/a.txt").strip() == "secret-of-a"


def test_temporary_disk_is_not_captured_by_snapshots(clients, pair):
    c = clients.compute
    a, _ = pair
    run_script(c, RG, "vm-a", "echo scratch > /mnt/scratch.txt", "echo kept > /root/kept.txt")
    snap = c.snapshots.begin_create_or_update(RG, "a-os", {"location": clients.location, "properties": {
        "creationData": {"createOption": "Copy", "sourceResourceId": a.storage_profile.os_disk.managed_disk.id}}}).result()
    disk = c.disks.begin_create_or_update(RG, "a-os-copy", {"location": clients.location, "properties": {
        "creationData": {"createOption": "Copy", "sourceResourceId": snap.id}}}).result()
    c.virtual_machines.begin_create_or_update(RG, "vm-a-copy", {"location": clients.location, "properties": {
        "hardwareProfile": {"vmSize": "Standard_D2s_v3"},
        "storageProfile": {"osDisk": {"createOption": "Attach", "osType": "Linux", "managedDisk": {"id": disk.id}}}}}).result()
    out = run_script(c, RG, "vm-a-copy", "cat /root/kept.txt", "test -e /mnt/scratch.txt && echo SCRATCH || echo no-scratch")
    assert out.split("\n")[:2] == ["kept", "no-scratch"]


def test_identical_content_is_stored_once(clients, server, pair):
    c = clients.compute
    a, _ = pair
    run_script(c, RG, "vm-a", "head -c 8388608 /dev/urandom > /datadisks/lun0/blob.bin")
    source = a.storage_profile.data_disks[0].managed_disk.id
    before = layer_bytes(server)
    c.snapshots.begin_create_or_update(RG, "same-1", {"location": clients.location, "properties": {
        "creationData": {"createOption": "Copy", "sourceResourceId": source}}}).result()
    after_first = layer_bytes(server)
    c.snapshots.begin_create_or_update(RG, "same-2", {"location": clients.location, "properties": {
        "creationData": {"createOption": "Copy", "sourceResourceId": source}}}).result()
    after_second = layer_bytes(server)
    assert after_first - before >= 8 * (1 << 20)
    assert after_second - after_first < 64 * 1024


def test_creating_a_vm_copies_nothing(clients, server, pair):
    c = clients.compute
    image = c.images.begin_create_or_update(RG, "from-same", {"location": clients.location, "properties": {
        "storageProfile": {"osDisk": {"osType": "Linux", "osState": "Generalized",
                                      "snapshot": {"id": c.snapshots.get(RG, "a-os").id}},
                           "dataDisks": [{"lun": 0, "snapshot": {"id": c.snapshots.get(RG, "same-1").id}}]}}}).result()
    before = layer_bytes(server)
    c.virtual_machines.begin_create_or_update(RG, "cheap", vm_body(clients.location, {"id": image.id})).result()
    assert layer_bytes(server) == before
    assert run_script(c, RG, "cheap", "wc -c < /datadisks/lun0/blob.bin").strip() == str(8 << 20)


def test_bytes_are_reclaimed_when_nothing_needs_them(clients, server, pair):
    c = clients.compute
    c.virtual_machines.begin_delete(RG, "cheap").result()
    for disk in list(c.disks.list_by_resource_group(RG)):
        if disk.name.startswith("cheap"):
            c.disks.begin_delete(RG, disk.name).result()
    c.images.begin_delete(RG, "from-same").result()
    held = layer_bytes(server)
    c.snapshots.begin_delete(RG, "same-1").result()
    assert layer_bytes(server) == held  # same-2 still holds the same content
    c.snapshots.begin_delete(RG, "same-2").result()
    assert layer_bytes(server) < held - 8 * (1 << 20)


def _tiny_rootfs(escape: bool = False) -> bytes:
    """A root filesystem archive: the host's sh and cat with their libraries, and a program."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in ("/bin/sh", "/bin/cat", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"):
            tar.add(os.path.realpath(path), arcname=path.lstrip("/"))
        script = b"#!/bin/sh\necho imported-tool\n"
        info = tarfile.TarInfo("opt/imported/run")
        info.size, info.mode = len(script), 0o755
        tar.addfile(info, io.BytesIO(script))
        if escape:
            evil = tarfile.TarInfo("../../escape.txt")
            evil.size = 4
            tar.addfile(evil, io.BytesIO(b"evil"))
    return buf.getvalue()


def _upload(c, clients, name: str, archive: bytes) -> str:
    disk = c.disks.begin_create_or_update(RG, name, {"location": clients.location, "properties": {
        "osType": "Linux", "creationData": {"createOption": "Upload", "uploadSizeBytes": len(archive)}}}).result()
    assert disk.disk_state == "ReadyToUpload"
    sas = c.disks.begin_grant_access(RG, name, {"access": "Write", "durationInSeconds": 600}).result().access_sas
    r = requests.put(sas, data=archive, headers={"x-ms-blob-type": "BlockBlob"}, verify=clients.info["ca_bundle"])
    assert r.status_code == 201
    c.disks.begin_revoke_access(RG, name).result()
    return sas


def test_archive_escaping_its_root_is_refused(clients, server):
    c = clients.compute
    with pytest.raises(HttpResponseError) as e:
        _upload(c, clients, "evil", _tiny_rootfs(escape=True))
    assert e.value.status_code == 400 and e.value.error.code == "InvalidUploadContent"
    assert str(server.data_dir) not in e.value.error.message
    assert c.disks.get(RG, "evil").disk_state == "ReadyToUpload"
    assert not list(server.data_dir.parent.rglob("escape.txt"))


def test_root_filesystem_uploaded_as_a_disk_becomes_an_image(clients, server):
    c = clients.compute
    sas = _upload(c, clients, "uploaded", _tiny_rootfs())
    assert c.disks.get(RG, "uploaded").disk_state == "Unattached"
    bad = requests.put(sas, data=b"x", verify=clients.info["ca_bundle"])
    assert bad.status_code == 403  # access was revoked
    image = c.images.begin_create_or_update(RG, "imported", {"location": clients.location, "properties": {
        "storageProfile": {"osDisk": {"osType": "Linux", "osState": "Generalized",
                                      "managedDisk": {"id": c.disks.get(RG, "uploaded").id}}}}}).result()
    c.virtual_machines.begin_create_or_update(RG, "minimal", vm_body(clients.location, {"id": image.id})).result()
    assert run_script(c, RG, "minimal", "/opt/imported/run").strip() == "imported-tool"


def test_a_namespace_two_stops_unmount_at_once_is_no_error(tmp_path):
    """A VM's PUT and DELETE racing stopped its machine twice at once: both found its
    namespace file mounted, and the second unmount (EINVAL: no longer a mount point) was a
    500. linux.unmount_lazily takes a mount point that has gone, or never was, as done."""
    from batchyard.runtime import linux

    target = tmp_path / "ns"
    target.touch()
    linux.mount("/proc/self/ns/net", str(target), None, linux.MS_BIND)  # as a namespace file is bound
    assert os.path.ismount(target)
    linux.unmount_lazily(str(target))
    assert not os.path.ismount(target)
    linux.unmount_lazily(str(target))  # the second stop: nothing mounted there any more
    linux.unmount_lazily(str(tmp_path / "never-made"))
    with pytest.raises(OSError):
        linux.unmount_lazily(str(tmp_path / ("x" * 5000)))  # other errors (ENAMETOOLONG) still raise


def test_a_fifo_where_the_service_expects_a_file_is_refused_at_once(tmp_path):
    """What the service opens on a machine's disk as root (resource files written, output
    files and node files read, remote writes) goes through confined.open_file. A command
    may leave a FIFO there, and opening a FIFO waits for its other end: the service's
    thread stopped for good. Each open is refused at once; a regular file comes back
    blocking, as the service reads and writes it."""
    import errno
    import queue
    import threading

    from batchyard.runtime import confined

    def open_aside(rel, flags):
        """confined.open_file in a daemon thread: a regression hangs that thread, not the suite."""
        answers = queue.Queue()

        def opening():
            try:
                answers.put(confined.open_file(tmp_path, rel, flags))
            except OSError as exc:
                answers.put(exc)
        threading.Thread(target=opening, daemon=True).start()
        return answers.get(timeout=10)

    (tmp_path / "wd").mkdir()
    os.mkfifo(tmp_path / "wd" / "x.txt")
    (tmp_path / "wd" / "ok.txt").write_bytes(b"ok")
    for flags in (os.O_RDONLY, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, os.O_WRONLY | os.O_APPEND):
        refused = open_aside("wd/x.txt", flags)
        assert isinstance(refused, OSError) and refused.errno == errno.EINVAL, refused
        assert "not a regular file" in str(refused)
    fd = open_aside("wd/ok.txt", os.O_RDONLY)
    try:
        assert os.get_blocking(fd) and os.read(fd, 10) == b"ok"
    finally:
        os.close(fd)


def test_a_tree_something_keeps_adding_to_is_not_removed_for_ever(tmp_path, monkeypatch):
    """A task's directory is removed inside the scheduler's pass. A process the task left
    behind that makes directories in it as fast as they go kept the removal (and every
    pass after it) going for good; it now gives up after REMOVE_SECONDS (EBUSY). The
    process is played by a wrapper that adds a directory each time the removal has looked."""
    import errno
    import itertools
    import time

    from batchyard.runtime import confined

    monkeypatch.setattr(confined, "REMOVE_SECONDS", 0.5, raising=False)
    (tmp_path / "task" / "a").mkdir(parents=True)
    look, added, until = confined._remove_all_but_directories, itertools.count(), time.monotonic() + 10

    def look_then_add(fd):
        found = look(fd)
        if time.monotonic() < until:  # (a regression ends after this, and fails below)
            os.mkdir(f"new-{next(added)}", dir_fd=fd)
        return found

    monkeypatch.setattr(confined, "_remove_all_but_directories", look_then_add)
    with pytest.raises(OSError) as busy:
        confined.remove_tree(tmp_path, "task")
    assert busy.value.errno == errno.EBUSY and time.monotonic() < until


def test_a_snapshot_of_a_running_disk_never_follows_what_the_machine_swaps_in(tmp_path, monkeypatch):
    """A snapshot copies a disk's writable layer while its machine runs. The copy looked
    each entry up by path: a file swapped for a link to a host file after it was listed was
    read through the link (the host's file in the snapshot, for anyone who makes a VM of
    it), and a directory swapped for a link to a host directory (/dev, say) was entered.
    Both swaps are made here at the worst moment, from inside the copy itself."""
    from batchyard.runtime.layers import LayerStore

    host = tmp_path / "host"
    (host / "dir").mkdir(parents=True)
    (host / "secret.txt").write_bytes(b"the host's secret")
    (host / "dir" / "secret.txt").write_bytes(b"the host's secret")
    disk = tmp_path / "disk"
    (disk / "d").mkdir(parents=True)
    (disk / "d" / "inner.txt").write_bytes(b"inner")
    (disk / "a.txt").write_bytes(b"mine")
    store = LayerStore(tmp_path / "layers")
    swapped = set()
    copy_entry, store_blob = store._copy_entry, store._store_blob

    def copy_entry_then_swap_the_directory(*args):
        entry = copy_entry(*args)
        if args[-1] == "d" and "d" not in swapped:  # listed and copied as a directory, not yet entered
            swapped.add("d")
            (disk / "d").rename(disk / "d.real")
            (disk / "d").symlink_to(host / "dir")
        return entry

    def swap_the_file_then_store(*args):
        if "a.txt" not in swapped:  # found to be a regular file, not yet read
            swapped.add("a.txt")
            (disk / "a.txt").unlink()
            (disk / "a.txt").symlink_to(host / "secret.txt")
        return store_blob(*args)

    monkeypatch.setattr(store, "_copy_entry", copy_entry_then_swap_the_directory)
    monkeypatch.setattr(store, "_store_blob", swap_the_file_then_store)
    layer = store.path(store.freeze(disk))
    assert swapped == {"d", "a.txt"}
    assert not (layer / "d" / "secret.txt").exists()
    copied = [path.read_bytes() for path in layer.rglob("*") if path.is_file() and not path.is_symlink()]
    assert b"the host's secret" not in copied
    assert (layer / "a.txt").read_bytes() == b"mine"  # opened before the swap, it is what was copied


def test_a_snapshot_walks_any_depth_and_never_waits_on_a_fifo_swapped_in(tmp_path, monkeypatch):
    """os.fwalk, which the copy used for a while, entered a directory by opening it without
    O_NOFOLLOW or O_NONBLOCK: one swapped for a FIFO after it was listed held the copy (and
    every disk operation behind it) for good; and it recursed, a frame and a descriptor a
    level. The copy's walk (confined.walk) reaches a directory without following a link or
    waiting, and goes any depth."""
    import queue
    import threading

    from batchyard.runtime import confined
    from batchyard.runtime.layers import LayerStore

    disk = tmp_path / "disk"
    (disk / "b").mkdir(parents=True)
    (disk / "b" / "x.txt").write_bytes(b"x")
    (disk / "deep").mkdir()
    fd = os.open(disk / "deep", os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1200):  # as a task makes it: mkdir d; cd d
        os.mkdir("d", dir_fd=fd)
        fd, parent = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
        os.close(parent)
    os.close(os.open("bottom.txt", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    os.close(fd)
    store = LayerStore(tmp_path / "layers")
    copy_entry = store._copy_entry

    def copy_entry_then_swap(*args):
        entry = copy_entry(*args)
        if args[-1] == "b":  # listed and copied as a directory, not yet entered
            (disk / "b").rename(disk / "b.real")
            os.mkfifo(disk / "b")
        return entry

    monkeypatch.setattr(store, "_copy_entry", copy_entry_then_swap)
    answers = queue.Queue()
    threading.Thread(target=lambda: answers.put(store.freeze(disk)), daemon=True).start()
    layer = store.path(answers.get(timeout=120))  # (a thread: a regression hangs it, not the suite)
    try:
        assert (layer / "b").is_dir() and not (layer / "b" / "x.txt").exists()
        assert layer.joinpath("deep", *["d"] * 1200, "bottom.txt").exists()
    finally:
        # pytest removes old temporary directories with shutil.rmtree, which recurses and
        # cannot take a tree this deep: the run would end in a RecursionError
        for deep in (disk / "deep", layer / "deep"):
            confined.remove_path(deep)


def test_an_upload_is_held_to_its_size_and_page_writes_to_azure_s_pages(clients, server):
    """An upload address took a write at any offset (a 1 TiB offset made a sparse file of that
    size, and the import at revoke then read it all, for hours, holding the storage lock),
    an offset past 2**63 was a 500, and a page write's body need not match its range."""
    c = clients.compute
    clients.resource.resource_groups.create_or_update(RG, {"location": clients.location})
    c.disks.begin_create_or_update(RG, "paged", {"location": clients.location, "properties": {
        "osType": "Linux", "creationData": {"createOption": "Upload", "uploadSizeBytes": 1024}}}).result()
    sas = c.disks.begin_grant_access(RG, "paged", {"access": "Write", "durationInSeconds": 600}).result().access_sas

    def put(first_last: str, body: bytes = b"", write: str | None = None, page: bool = True) -> requests.Response:
        headers = {"x-ms-range": f"bytes={first_last}", **({"x-ms-page-write": write} if write else {})}
        return requests.put(sas + ("&comp=page" if page else ""), data=body, headers=headers,
                            verify=clients.info["ca_bundle"])

    assert put("0-511", b"a" * 512).status_code == 201
    assert put("512-1023", write="clear").status_code == 201
    for first_last, body, write, status in [
            ("1024-1535", b"b" * 512, None, 416),  # past the upload's 1024 bytes
            ("1099511627776-1099511628287", b"b" * 512, None, 416),
            ("9223372036854775808-9223372036854776319", b"b" * 512, None, 416),
            ("5-516", b"b" * 512, None, 400),  # not on a page
            ("512-511", b"", None, 400),
            ("0-511", b"b" * 10, None, 400),  # the body is not the range's length
            ("0-511", b"b" * 512, "bogus", 400),
            ("0-511", b"b" * 512, "clear", 400)]:  # a clear has no body
        response = put(first_last, body, write)
        assert response.status_code == status, (first_last, response.text)
        assert response.json()["error"]["code"], response.text
    assert put("", b"c" * 2048, page=False).status_code == 416  # a whole blob longer than the upload
    assert max(p.stat().st_size for p in (server.data_dir / "uploads").glob("*.upload")) <= 1024
