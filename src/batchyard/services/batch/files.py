"""Files in a task's directory or under a node's AZ_BATCH_NODE_ROOT_DIR, as Azure Batch's
file operations see them: listing, properties, ranged reads and deletion. Every function
works on a `Place`: a machine's file service (runtime/machine_files.py, wherever the
machine runs) and a directory in it; nothing here knows about HTTP or host paths.

Names are relative to the root and use '/' (e.g. "wd/out/result.txt"). A listing shows
directories too (isDirectory true, no properties, as Azure lists them) and, when recursive,
everything beneath them.

Containment. The caller's path never leaves the root:
- a NUL byte, an absolute path, or '..' that climbs above the root is refused before the
  file system is touched: 400 InvalidUri (the URI names no resource of this directory);
- the file service resolves it; if a symbolic link takes it outside the root the request is
  refused: 403 AuthorizationFailure (the link is the user's, the target is not);
- the resolved path is opened one component at a time from a descriptor of the root
  without following links, so a link swapped in after the check (a task racing the
  service) is not followed either: that ends as 404 FileNotFound.
Symbolic links that stay inside the root are followed for reads and listed with their
target's properties; recursive listings do not descend through them (no loops), listings
leave out links that lead outside, and deletion removes a link itself, never its target.
A machine's absolute links (to /mnt/batch/...) resolve on the host, so they are treated as
leading outside.
"""

from __future__ import annotations

import errno
import hashlib
import io
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from ...runtime.machine_files import FileStat, LeavesTree, MachineFiles, NotRegular, Protected
from ..errors import Conflict, Forbidden, InvalidInput, NotFound, RangeNotSatisfiable, ServiceError

CONTENT_TYPE = "application/octet-stream"
CHUNK = 1 << 16


@dataclass(frozen=True)
class Place:
    """A directory of a machine (or of the service's own storage), as its file service names it."""
    files: MachineFiles
    root: str


# errors ---------------------------------------------------------------------------------------

def _not_found() -> NotFound:
    return NotFound("FileNotFound", "The specified file does not exist.")


def _outside(reason: str) -> InvalidInput:
    return InvalidInput("InvalidUri", "The requested URI does not represent any resource on the server.",
                        details=[{"key": "Reason", "value": reason}])


def _through_link() -> Forbidden:
    return Forbidden("AuthorizationFailure", "This request is not authorized to perform this operation.",
                     details=[{"key": "Reason", "value": "The path leads through a symbolic link to outside the "
                                                         "directory."}])


def _is_directory() -> InvalidInput:
    return InvalidInput("FileIsDirectory", "The specified path is a directory; only files can be downloaded.")


def _not_regular() -> InvalidInput:
    return InvalidInput("UnsupportedFileType", "The specified path is neither a regular file nor a directory.")


def _os_error(exc: OSError) -> ServiceError:
    """The errors a path walk meets, as Batch answers them; others stay internal errors."""
    if isinstance(exc, LeavesTree):
        return _through_link()
    if isinstance(exc, NotRegular):
        return _not_regular()
    if isinstance(exc, Protected):
        return _protected()
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG):
        return _not_found()
    if exc.errno in (errno.EACCES, errno.EPERM):
        return Forbidden("AuthorizationFailure", "This request is not authorized to perform this operation.")
    if exc.errno == errno.ENOTEMPTY:
        return Conflict("DirectoryNotEmpty", "The specified directory is not empty.")
    if exc.errno == errno.EISDIR:
        return _is_directory()
    raise exc


# paths ----------------------------------------------------------------------------------------

def split_path(rel: str) -> list[str]:
    """A caller's relative path -> its components, '.' and inner '..' folded lexically.
    Refuses NUL bytes, absolute paths and '..' that climbs above the root (400 InvalidUri)."""
    if not isinstance(rel, str):
        raise _outside("The file path must be a string.")
    if "\x00" in rel:
        raise _outside("The file path contains a NUL character.")
    if rel.startswith("/"):
        raise _outside("The file path must be relative to the directory.")
    parts: list[str] = []
    for part in rel.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise _outside("The file path climbs out of the directory.")
            parts.pop()
            continue
        parts.append(part)
    return parts


# properties -----------------------------------------------------------------------------------

def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _etag(st: FileStat) -> str:
    digest = hashlib.blake2b(f"{st.dev}:{st.ino}:{st.size}:{st.mtime_ns}".encode(), digest_size=8)
    return "0x" + digest.hexdigest().upper()


def properties(st: FileStat) -> dict:
    """FileProperties of the wire format. Linux keeps no creation time that stat shows, so
    the earlier of the change and modification times stands in for it."""
    return {"creationTime": _iso(min(st.ctime, st.mtime)), "lastModified": _iso(st.mtime),
            "contentLength": str(st.size if st.is_file else 0),
            "contentType": CONTENT_TYPE, "fileMode": oct(st.mode)}


def _describe(name: str, st: FileStat) -> dict:
    """A listing entry (BatchNodeFile without its url): directories carry no properties."""
    if st.is_dir:
        return {"name": name, "isDirectory": True}
    return {"name": name, "isDirectory": False, "properties": properties(st)}


def _info(name: str, st: FileStat) -> dict:
    """What a download or HEAD answers with: the entry, its properties (directories too),
    its ETag and its size in bytes."""
    return {"name": name, "isDirectory": st.is_dir, "properties": properties(st),
            "eTag": _etag(st), "size": st.size if st.is_file else 0}


# operations -----------------------------------------------------------------------------------

def list_files(place: Place, recursive: bool = False) -> list[dict]:
    """Entries under the place, sorted by name: the top level, or with recursive=True
    everything (directories included). Names that are not UTF-8 cannot be addressed, and
    are left out."""
    try:
        entries = place.files.list(place.root, recursive)
    except OSError as exc:
        raise _os_error(exc) from None
    return sorted((_describe(name, st) for name, st in entries), key=lambda e: e["name"])


def file_properties(place: Place, rel: str) -> dict:
    """{name, isDirectory, properties, eTag, size} of a file or directory; name is the
    path as asked for, normalised ('.' and inner '..' folded)."""
    parts = split_path(rel)
    try:
        st = place.files.stat(place.root, parts)
    except OSError as exc:
        raise _os_error(exc) from None
    return _info("/".join(parts), st)


def open_file(place: Place, rel: str) -> tuple[io.RawIOBase, dict]:
    """An open, unbuffered binary file and its info (from the open file, so the two agree).
    Directories and special files (FIFOs, sockets, devices) are refused."""
    parts = split_path(rel)
    if not parts:
        raise _is_directory()
    try:
        st, handle = place.files.open(place.root, parts)
    except OSError as exc:
        raise _os_error(exc) from None
    return handle, _info("/".join(parts), st)


def parse_range(header: str | None) -> tuple[int | None, int | None] | None:
    """ocp-range "bytes=a-b" (inclusive), "bytes=a-" or "bytes=-n" (the last n bytes) ->
    (a, b), (a, None) or (None, n); None when absent. Anything else, several ranges
    included, is a 400 InvalidHeaderValue."""
    if header is None or not header.strip():
        return None
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d{0,18})\s*-\s*(\d{0,18})\s*", header, re.IGNORECASE)
    start = end = None
    if match and (match[1] or match[2]):
        start = int(match[1]) if match[1] else None
        end = int(match[2]) if match[2] else None
    if not match or (start is None and end is None) or (start is not None and end is not None and end < start):
        raise InvalidInput("InvalidHeaderValue", "The value for one of the HTTP headers is not in the correct "
                           "format.", details=[{"key": "HeaderName", "value": "ocp-range"},
                                               {"key": "HeaderValue", "value": header[:100]}])
    return start, end


def byte_span(spec: tuple[int | None, int | None] | None, size: int) -> tuple[int, int]:
    """A parsed range against a file of `size` bytes -> [start, stop). The end is clipped to
    the file; a range that starts at or past the end (any range of an empty file) is 416."""
    if spec is None:
        return 0, size
    start, end = spec
    if start is None:  # the last `end` bytes
        if end == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - end), size
    if start >= size:
        raise _unsatisfiable(size)
    return start, size if end is None else min(end + 1, size)


def _unsatisfiable(size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable("InvalidRange", "The range specified is invalid for the current size of the "
                               "resource.", details=[{"key": "ContentLength", "value": str(size)}])


def iter_bytes(handle: io.RawIOBase, start: int, stop: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """[start, stop) of an open file in chunks; closes the file when done or abandoned."""
    try:
        handle.seek(start)
        remaining = stop - start
        while remaining > 0:
            data = handle.read(min(chunk, remaining))
            if not data:
                break  # the file shrank meanwhile
            remaining -= len(data)
            yield data
    finally:
        handle.close()


def delete(place: Place, rel: str, recursive: bool = False, protected: Collection[str] = ()) -> None:
    """Delete a file, a link (not its target), or a directory: an empty one, or with
    recursive=True everything in it. The root itself and the `protected` paths (relative
    names) are refused (403); a non-empty directory without recursive is 409."""
    parts = split_path(rel)
    try:
        place.files.delete(place.root, parts, recursive, protected)
    except OSError as exc:
        raise _os_error(exc) from None


def _protected() -> Forbidden:
    return Forbidden("AuthorizationFailure", "This request is not authorized to perform this operation.",
                     details=[{"key": "Reason", "value": "This directory belongs to the Batch service and cannot "
                                                         "be deleted."}])
