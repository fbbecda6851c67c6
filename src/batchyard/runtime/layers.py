"""Immutable, content-addressed filesystem layers.

A layer is a directory tree used as an overlay lower directory. Its id is the sha256 of a
manifest that lists every entry (path, kind, mode, owner, content hash or link target,
overlay markers), so identical trees share one id and are stored once. Regular files are
hard links into a blob store keyed by content and metadata, so identical files are stored
once across all layers too. A blob whose link count falls to one belongs to no layer and
is reclaimed by `collect_garbage`.

The special layer id `host` is the host's own root filesystem, read-only.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

from .confined import CHANGED, remove_path, walk

HOST_LAYER = "host"
# Overlay markers and file capabilities travel with a layer; other xattrs are host noise.
_KEPT_XATTRS = ("trusted.overlay.opaque", "security.capability")
_CHUNK = 1 << 20


class LayerStore:
    def __init__(self, root: Path):
        self.root = root
        self.blobs = root / "blobs"
        self.layers = root / "layers"
        self.tmp = root / "tmp"
        for d in (self.blobs, self.layers, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        # Layers the runtime itself keeps (container images, container_images.py), which no
        # resource of the services names: collect_garbage never takes them.
        self.keepers: list[Callable[[], Iterable[str]]] = []
        self._reclaim_scratch()

    def _reclaim_scratch(self) -> None:
        """A store is opened once, at start, before anything writes to it: whatever is in its
        scratch directory was left by a crash mid-snapshot, mid-import or mid-collection."""
        for entry in self.tmp.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                remove_path(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def path(self, layer_id: str) -> Path:
        if layer_id == HOST_LAYER:
            return Path("/")
        return self.layers / layer_id

    def exists(self, layer_id: str) -> bool:
        return layer_id == HOST_LAYER or self.path(layer_id).is_dir()

    # making layers ------------------------------------------------------------------------

    def freeze(self, source: Path, skip: Iterable[str] = ()) -> str | None:
        """Copy a directory tree (typically a disk's writable overlay layer), less the
        top-level entries named in `skip`, into a new immutable layer. Returns its id, or
        None when the tree is empty."""
        skip = set(skip)
        if not any(entry.name not in skip for entry in source.iterdir()):
            return None
        staging = Path(tempfile.mkdtemp(dir=self.tmp))
        try:
            manifest = self._copy_tree(source, staging, skip)
            return self._publish(staging, manifest)
        finally:
            remove_path(staging, ignore_errors=True)

    def import_archive(self, archive: BinaryIO) -> str:
        """A root filesystem from a tar archive (plain, gzip, bzip2 or xz)."""
        unpacked = Path(tempfile.mkdtemp(dir=self.tmp))
        try:
            with tarfile.open(fileobj=archive, mode="r:*") as tar:
                tar.extractall(unpacked, filter=_rootfs_filter)
            layer = self.freeze(unpacked)
            if layer is None:
                raise ValueError("the archive holds no files")
            return layer
        finally:
            remove_path(unpacked, ignore_errors=True)

    # moving layers between hosts ----------------------------------------------------------

    def export(self, layer_id: str, out: BinaryIO) -> None:
        """The layer as a tar stream (owners, modes, overlay whiteouts and the xattrs a layer
        keeps), for a host that lacks it (see receive)."""
        if not _is_layer_id(layer_id) or not self.exists(layer_id):
            raise KeyError(layer_id)
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            root = self.path(layer_id)
            tar.addfile(_with_marks(tar.gettarinfo(str(root), "."), str(root)))
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for name in sorted(dirnames) + sorted(filenames):
                    path = os.path.join(dirpath, name)
                    info = _with_marks(tar.gettarinfo(path, os.path.relpath(path, root)), path)
                    if info.isreg():
                        with open(path, "rb") as handle:
                            tar.addfile(info, handle)
                    else:
                        tar.addfile(info)

    def receive(self, layer_id: str, stream: BinaryIO) -> str:
        """A layer sent by another host (export), stored under its id only if its content
        hashes to that id: a layer that does not match is dropped, never published."""
        if not _is_layer_id(layer_id):
            raise LayerMismatch(f"{layer_id[:80]!r} is not a layer id")
        if self.exists(layer_id):
            return layer_id
        unpacked = Path(tempfile.mkdtemp(dir=self.tmp))
        staging = Path(tempfile.mkdtemp(dir=self.tmp))
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    _check_layer_member(member, str(unpacked))
                    tar.extract(member, unpacked, set_attrs=True, numeric_owner=True, filter="fully_trusted")
                    marks = _marks_of(member)
                    if marks:
                        _set_xattrs(os.path.join(unpacked, member.name), marks)
            manifest = self._copy_tree(unpacked, staging, set())
            _copy_dir_meta(str(unpacked), str(staging))
            got = hashlib.sha256("\n".join(manifest).encode()).hexdigest()
            if got != layer_id:
                raise LayerMismatch(f"layer {layer_id} arrived with content {got}")
            return self._publish(staging, manifest)
        finally:
            remove_path(unpacked, ignore_errors=True)
            remove_path(staging, ignore_errors=True)

    def _publish(self, staging: Path, manifest: list[str]) -> str:
        layer_id = hashlib.sha256("\n".join(manifest).encode()).hexdigest()
        final = self.layers / layer_id
        if final.exists():
            return layer_id  # identical content already stored: the staging copy is dropped
        try:
            staging.rename(final)
        except OSError:
            if not final.exists():
                raise
        return layer_id

    def _copy_tree(self, source: Path, dest: Path, skip: set[str]) -> list[str]:
        """The tree's entries copied into dest, and its manifest. The tree may be a running
        machine's disk, which changes while it is read: it is walked with confined.walk
        (every directory reached from its parent's descriptor, entered only if it is still
        the one listed), and each entry reached from its directory's descriptor, nothing
        followed. A directory swapped for a link to the host's /dev or /etc mid-walk is not
        entered, and a file swapped for a link or a FIFO is not read (which would copy a
        host file, or wait for ever). An entry that went or changed while it was read is
        left out, as from a snapshot taken at that instant."""
        manifest: list[str] = []
        root = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the service's own path
        try:
            for parts, dirfd, dirnames, filenames in walk(root):
                if not parts:
                    dirnames[:] = [name for name in dirnames if name not in skip]
                    filenames = [name for name in filenames if name not in skip]
                for name in dirnames + filenames:
                    rel = os.path.join(*parts, name)
                    entry = self._copy_entry(dirfd, name, os.path.join(dest, rel), rel)
                    if entry is not None:
                        manifest.append(entry)
                _copy_dir_meta(dirfd, os.path.join(dest, *parts))
        finally:
            os.close(root)
        return manifest

    def _copy_entry(self, dirfd: int, name: str, dst: str, rel: str) -> str | None:
        try:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):
                return self._copy_file(dirfd, name, dst, rel)
            marks = _xattrs(_at(dirfd, name))
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(name, dir_fd=dirfd)
        except OSError as exc:
            if exc.errno in CHANGED:
                return None
            raise
        mode = stat.S_IMODE(st.st_mode)
        owner = f"{st.st_uid}:{st.st_gid}"
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(dst)
            _set_xattrs(dst, marks)
            return f"d {rel} {mode:o} {owner} {sorted(marks.items())}"
        if stat.S_ISLNK(st.st_mode):
            os.symlink(target, dst)
            os.lchown(dst, st.st_uid, st.st_gid)
            return f"l {rel} {owner} {target}"
        if (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0) or stat.S_ISFIFO(st.st_mode):
            # Overlay whiteouts are 0:0 character devices: they must survive as they are. No
            # other device travels in a layer (a machine gets its own /dev), as in a layer
            # another host sends (_check_layer_member).
            os.mknod(dst, st.st_mode, st.st_rdev)
            os.chown(dst, st.st_uid, st.st_gid)
            return f"n {rel} {st.st_mode:o} {st.st_rdev} {owner}"
        return f"s {rel}"  # sockets and devices do not survive a snapshot

    def _copy_file(self, dirfd: int, name: str, dst: str, rel: str) -> str | None:
        """A regular file, opened without following a link or waiting on a FIFO, and judged
        by what was opened."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dirfd)
        except OSError as exc:
            if exc.errno in CHANGED:
                return None
            raise
        with open(fd, "rb", buffering=0) as source:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            blob = self._store_blob(source, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, _xattrs(fd))
        os.link(blob, dst)
        return f"f {rel} {blob.name}"

    def _store_blob(self, source: BinaryIO, mode: int, uid: int, gid: int, marks: dict) -> Path:
        digest = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp)
        try:
            with os.fdopen(fd, "wb") as fout:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    fout.write(chunk)
            extra = hashlib.sha256(repr(sorted(marks.items())).encode()).hexdigest()[:8] if marks else "0"
            key = f"{digest.hexdigest()}-{mode:o}-{uid}-{gid}-{extra}"
            blob = self.blobs / key[:2] / key
            if blob.exists():
                return blob
            blob.parent.mkdir(exist_ok=True)
            os.chown(tmp_name, uid, gid)
            os.chmod(tmp_name, mode)
            _set_xattrs(tmp_name, marks)
            os.replace(tmp_name, blob)
            return blob
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)

    # accounting and reclaiming ----------------------------------------------------------------

    def stored_bytes(self) -> int:
        total = 0
        for dirpath, _, filenames in os.walk(self.blobs):
            for name in filenames:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
        return total

    def collect_garbage(self, needed: Iterable[str]) -> int:
        """Remove layers nobody needs, then blobs no layer links to. Returns layers removed."""
        keep = set(needed)
        for keeper in self.keepers:
            keep.update(keeper())
        removed = 0
        for entry in self.layers.iterdir():
            if entry.name not in keep:
                doomed = self.tmp / f"gc-{uuid.uuid4().hex}"
                entry.rename(doomed)  # atomic: a half-deleted layer is never visible
                remove_path(doomed, ignore_errors=True)
                removed += 1
        for dirpath, _, filenames in os.walk(self.blobs):
            for name in filenames:
                path = os.path.join(dirpath, name)
                if os.lstat(path).st_nlink == 1:
                    os.unlink(path)
        return removed


def _is_layer_id(layer_id: str) -> bool:
    """A content id, as another host names one: never a path (nor the host's own root)."""
    return isinstance(layer_id, str) and len(layer_id) == 64 and all(c in "0123456789abcdef" for c in layer_id)


class LayerMismatch(ValueError):
    """A layer's content did not hash to the id it was sent as."""


_MARK = "BATCHYARD.xattr."  # pax header carrying a kept xattr, its value in hex


def _with_marks(info: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
    info.uname = info.gname = ""  # numeric owners only: names differ between hosts
    for name, value in _xattrs(path).items():
        info.pax_headers[_MARK + name] = value.hex()
    return info


def _marks_of(member: tarfile.TarInfo) -> dict[str, bytes]:
    return {key[len(_MARK):]: bytes.fromhex(value) for key, value in member.pax_headers.items()
            if key.startswith(_MARK) and key[len(_MARK):] in _KEPT_XATTRS}


def check_member(member: tarfile.TarInfo, dest: str, replaces: bool = False) -> None:
    """Raises tarfile.FilterError for an entry that would write outside `dest`. tarfile's
    'tar' filter checks the entry's own path (with realpath), but not where a hard link
    points (only the 'data' filter does, which also changes modes), and realpath gives up on
    paths longer than PATH_MAX (CVE-2025-4517, fixed in Python 3.11.13): so every directory
    an entry goes through, and a hard link's target, is also checked without following
    anything. Archives of a tree (`docker save`, `tar -C root .`) never need a link on the way.
    `replaces`: the caller removes whatever is at the entry's own path first."""
    tarfile.tar_filter(member, dest)
    if member.issparse():
        # a few bytes sent, a file of any size made: the layer's copy (freeze) writes it all out
        raise tarfile.FilterError(f"{member.name}: a sparse file ({member.size} bytes declared)")
    name = member.name.rstrip("/")
    no_link_on_the_way(dest, name.rpartition("/")[0] if replaces else name)
    if member.islnk():
        if os.path.isabs(member.linkname):
            raise tarfile.AbsoluteLinkError(member)
        no_link_on_the_way(dest, member.linkname)


def no_link_on_the_way(root: str, rel: str) -> None:
    """Every existing component of `rel` below `root` is a real entry, none a symbolic link
    and none `..`; nothing is followed."""
    path = root
    for part in rel.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise tarfile.FilterError(f"{rel}: goes up out of the archive")
        path = os.path.join(path, part)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return  # nothing further exists yet: extraction makes real directories
        if stat.S_ISLNK(mode):
            raise tarfile.FilterError(f"{rel}: goes through the symbolic link {os.path.relpath(path, root)}")


def _check_layer_member(member: tarfile.TarInfo, dest: str) -> None:
    """check_member, without tarfile's changes to modes: a layer must arrive as it left.
    Devices other than overlay whiteouts (0:0 character devices) are refused."""
    check_member(member, dest)
    if member.isblk() or (member.ischr() and (member.devmajor, member.devminor) != (0, 0)):
        raise tarfile.FilterError(f"{member.name}: a device in a layer")


def _xattrs(path: str | int) -> dict[str, bytes]:
    """The kept xattrs of a path (not followed if a link) or of an open file."""
    found = {}
    for name in _KEPT_XATTRS:
        try:
            found[name] = os.getxattr(path, name, follow_symlinks=False) if isinstance(path, str) \
                else os.getxattr(path, name)
        except OSError:
            pass
    return found


def _at(dirfd: int, name: str) -> str:
    """A path to `name` in the directory open as `dirfd` whose directory part follows no
    link a machine could have put there (the kernel's own link to that open directory)."""
    return f"/proc/self/fd/{dirfd}/{name}"


def _set_xattrs(path: str, marks: dict[str, bytes]) -> None:
    for name, value in marks.items():
        os.setxattr(path, name, value, follow_symlinks=False)


def _copy_dir_meta(src: str | int, dst: str) -> None:
    """The owner, mode and kept xattrs of the directory src (a path, or one open) given to dst."""
    st = os.lstat(src) if isinstance(src, str) else os.fstat(src)
    os.chown(dst, st.st_uid, st.st_gid)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    _set_xattrs(dst, _xattrs(src))


def _rootfs_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tarfile's 'tar' filter and check_member (nothing lands outside the destination, even
    through links already extracted; absolute symlinks are kept, as a root filesystem needs them: they
    resolve inside the machine), minus device files: a machine gets its own /dev."""
    if member.isdev():
        return None
    check_member(member, dest)
    return tarfile.tar_filter(member, dest)
