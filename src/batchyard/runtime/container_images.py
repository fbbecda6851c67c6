"""Container images on a host: pulled from OCI registries (oci_registry.py) and unpacked
into the host's content-addressed layer store (layers.py), so a container's root
filesystem is an overlay of shared read-only layers like any machine's disk.

An image is pulled once per host: its record (layer ids, config) is kept by reference and
by manifest digest, and each registry layer by its digest, so an image that shares layers
with another unpacks only what is new. A pull that fails leaves nothing: layers are
published only whole, after their digest checked, and the record only after all of them.

OCI whiteouts become overlay whiteouts: `.wh.NAME` a 0:0 character device NAME, and
`.wh..wh..opq` the directory's `trusted.overlay.opaque` mark.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import stat
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import zstandard

from .confined import remove_path
from .fresh_answers import FreshAnswers
from .layers import LayerStore, check_member, no_link_on_the_way
from .oci_registry import Login, Reference, RegistryClient, RegistryError, checked_digest, parse_reference

log = logging.getLogger("batchyard.runtime")

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_GZIP = ("application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip")
_ZSTD = ("application/vnd.oci.image.layer.v1.tar+zstd",)
_TAR = ("application/vnd.oci.image.layer.v1.tar", "application/vnd.docker.image.rootfs.diff.tar")


@dataclass(frozen=True)
class ContainerImage:
    """What a container needs of its image (the config's defaults, as `docker create` uses them)."""
    reference: str
    digest: str  # the manifest's
    layers: tuple[str, ...]  # layer store ids, bottom first
    env: tuple[str, ...] = ()  # KEY=VALUE
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    anonymous: bool = True  # pulled without credentials: anyone on this host may use it
    named_digest: str = ""  # what the reference named when pulled (an index's digest, or the manifest's)


class ImageStore:
    def __init__(self, layers: LayerStore):
        self.layers = layers
        self.records = layers.root / "images"
        self.blob_layers = layers.root / "oci-layers"  # registry layer digest -> layer store id
        for d in (self.records, self.blob_layers):
            d.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._pulling: dict[str, threading.Lock] = {}
        self._granted: set[tuple[str, str]] = set()  # (image, login digest) the registry let pull
        # Every task start asks whether its tag moved (_still_current); per login: what the
        # registry tells one caller it may not tell another.
        self.tag_checks = FreshAnswers()
        self._checkers: dict[tuple, RegistryClient] = {}  # kept between checks of a tag
        layers.keepers.append(self.stored_layers)

    def stored_layers(self) -> set[str]:
        """Every layer an image on this host uses (each is recorded as soon as it is stored)."""
        found = set()
        for record in self.blob_layers.iterdir():
            try:
                found.add(record.read_text().strip())
            except OSError:
                pass
        return found - {""}

    def _record(self, name: str) -> Path:
        return self.records / hashlib.sha256(name.encode()).hexdigest()

    def local(self, reference: str) -> ContainerImage | None:
        """The image if this host has it (pulled before, all its layers still stored)."""
        try:
            data = json.loads(self._record(str(parse_reference(reference))).read_text())
        except (OSError, ValueError):
            return None
        image = ContainerImage(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
        return image if all(self.layers.exists(layer) for layer in image.layers) else None

    def pull(self, reference: str, login: Login | None, ca_bundle: str | None = None) -> ContainerImage:
        """The image, pulled now unless this host has it; raises RegistryError (or
        ValueError for a reference that is not one) and leaves nothing half-made. HTTPS
        trusts `ca_bundle` (None: the system's CAs)."""
        ref = parse_reference(reference)
        grant = (str(ref), _login_key(login))
        image = self._known(str(ref), grant)
        if image is not None and ref.digest:  # a digest names the same bytes for ever
            return image
        if image is not None and self._still_current(grant, ref, login, ca_bundle, image):
            return image
        with self._lock:
            gate = self._pulling.setdefault(str(ref), threading.Lock())
        with gate:  # two nodes prefetching one image on one host pull it once
            image = self._known(str(ref), grant)
            # An image that needed credentials is had again only by who the registry lets in:
            # the manifest is asked for with this caller's login (the layers stay as they are).
            client = RegistryClient(ref, login, ca_bundle)
            try:
                named, digest, manifest, config = client.manifest()
                if image is None or image.digest != digest:
                    layers = [layer for layer in (self._layer(client, entry) for entry in manifest["layers"])
                              if layer]
                    image = _image(str(ref), digest, layers, config, anonymous=login is None)
                image = replace(image, named_digest=named)
            finally:
                client.close()
            self._granted.add(grant)
            data = json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in asdict(image).items()})
            for name in (str(ref), digest):
                _write_atomically(self._record(name), data, self.layers.tmp)
            return image

    def _known(self, reference: str, grant: tuple[str, str]) -> ContainerImage | None:
        """The host's copy, if this caller may have it without asking the registry for the manifest."""
        image = self.local(reference)
        return image if image is not None and (image.anonymous or grant in self._granted) else None

    def _still_current(self, grant: tuple[str, str], ref: Reference, login: Login | None, ca_bundle: str | None,
                       image: ContainerImage) -> bool:
        """Whether the tag still names what this host has. Azure's node agent pulls a task's
        image as it starts (so a tag pushed again is had again), and a pull that fails
        leaves the task the image the node has (Azure/Batch#122); like `docker pull`, a
        HEAD of the manifest tells, and only a changed digest costs a download. Tasks
        that start together share one HEAD (begun after each of them started), instead of
        queueing one each behind the image's pull lock."""
        key = (*grant, ca_bundle)
        current = self.tag_checks.ask(key, lambda: self._current_digest(key, ref, login, ca_bundle))
        return current is _UNKNOWN or (current is not None and current == image.named_digest)

    def _current_digest(self, key: tuple, ref: Reference, login: Login | None, ca_bundle: str | None):
        """The digest the tag names now, None if the registry does not say, _UNKNOWN if it
        could not be asked. The client is kept for the next check of the same tag and login
        (its connection, its bearer token, and whether a loopback registry speaks plain
        HTTP): the checks of one key never overlap (FreshAnswers), so it is used by one
        thread at a time. A client that failed is dropped: the next check starts afresh."""
        client = self._checkers.pop(key, None) or RegistryClient(ref, login, ca_bundle)
        try:
            current = client.current_digest()
        except RegistryError as exc:
            client.close()
            log.warning("%s: the registry could not say whether the tag moved (%s); using this host's copy", ref, exc)
            return _UNKNOWN
        self._checkers[key] = client
        return current

    def _layer(self, client: RegistryClient, entry: dict) -> str | None:
        if not isinstance(entry, dict):
            raise RegistryError("the manifest lists a layer that is not an object")
        digest, media = checked_digest(entry.get("digest"), "manifest"), entry.get("mediaType", "")
        known = self.blob_layers / digest.replace(":", "-")
        if known.exists():
            layer = known.read_text().strip()
            if layer == "" or self.layers.exists(layer):
                return layer or None
        if media not in _GZIP + _ZSTD + _TAR:
            raise RegistryError(f"layer {digest} has an unsupported media type {media or '(none)'}")
        staging = Path(tempfile.mkdtemp(dir=self.layers.tmp))
        blob = client.blob(digest)
        try:
            try:
                _unpack(_decompressed(blob, media), staging)
            except (tarfile.TarError, zlib.error, zstandard.ZstdError, EOFError, KeyError, ValueError, OSError) as exc:
                for _ in blob:  # a blob that is not what its digest says is reported as that
                    pass
                raise RegistryError(f"layer {digest} could not be unpacked: {exc}") from None
            for _ in blob:  # the tar may end before the blob does: its digest is checked at the end
                pass
            layer = self.layers.freeze(staging)
        finally:
            remove_path(staging, ignore_errors=True)
        _write_atomically(known, layer or "", self.layers.tmp)
        return layer


_UNKNOWN = object()  # the registry could not say


def _login_key(login: Login | None) -> str:
    """A login as a digest: the password itself is never kept."""
    return "" if login is None else hashlib.sha256(f"{login.username}\0{login.password}".encode()).hexdigest()


def _image(reference: str, digest: str, layers: list[str], config: dict, anonymous: bool) -> ContainerImage:
    settings = config.get("config") or {}
    if (config.get("os") or "linux") != "linux":
        raise RegistryError(f"{reference} is not a Linux image")
    def strings(value) -> tuple[str, ...]:
        return tuple(str(item) for item in value) if isinstance(value, list) else ()
    return ContainerImage(reference, digest, tuple(layers), strings(settings.get("Env")),
                          strings(settings.get("Entrypoint")), strings(settings.get("Cmd")),
                          str(settings.get("WorkingDir") or ""), str(settings.get("User") or ""), anonymous)


def _decompressed(chunks: Iterator[bytes], media: str) -> Iterator[bytes]:
    if media in _TAR:
        yield from chunks
    elif media in _GZIP:
        inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
        for chunk in chunks:
            yield inflater.decompress(chunk)
        yield inflater.flush()
    else:
        reader = zstandard.ZstdDecompressor().decompressobj()
        for chunk in chunks:
            yield reader.decompress(chunk)


class _Stream(io.RawIOBase):
    """An iterator of bytes as a file, for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks, self._rest = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._rest:
            try:
                self._rest = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._rest))
        buffer[:n], self._rest = self._rest[:n], self._rest[n:]
        return n


def _unpack(chunks: Iterator[bytes], dest: Path) -> None:
    """A layer's tar into `dest`, whiteouts made overlay's. Members are checked (check_member:
    nothing lands outside `dest`, even through a link), but modes and
    owners are kept as they are (setuid programs included): an image must arrive whole.
    Device files are left out: a container gets its machine's /dev."""
    stream = io.BufferedReader(_Stream(chunks), 1 << 20)
    root = str(dest)
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            member.name = member.name.lstrip("/") or "."
            head, _, name = member.name.rstrip("/").rpartition("/")
            if name.startswith(_WHITEOUT):
                tarfile.tar_filter(member, root)  # a whiteout must not point outside either
                if name != _OPAQUE and name[len(_WHITEOUT):] in ("", ".", ".."):
                    # `.wh..` would remove the directory itself, `.wh...` its parent
                    raise tarfile.FilterError(f"{member.name}: a whiteout that names no entry")
                no_link_on_the_way(root, head)
                parent = os.path.join(root, head)
                os.makedirs(parent, exist_ok=True)
                if name == _OPAQUE:
                    os.setxattr(parent, "trusted.overlay.opaque", b"y")
                else:
                    target = os.path.join(parent, name[len(_WHITEOUT):])
                    _remove(target)
                    os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
                continue
            if member.isdev():
                continue
            check_member(member, root, replaces=True)
            path = os.path.join(root, member.name)
            if not member.isdir() or os.path.islink(path):
                _remove(path)  # a later entry replaces an earlier one (a directory keeps what it holds)
            tar.extract(member, root, set_attrs=True, numeric_owner=True, filter="fully_trusted")


def _remove(path: str) -> None:
    if os.path.lexists(path):
        if os.path.isdir(path) and not os.path.islink(path):
            remove_path(path)
        else:
            os.unlink(path)


def _write_atomically(path: Path, text: str, scratch: Path) -> None:
    fd, name = tempfile.mkstemp(dir=scratch)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(name, path)
