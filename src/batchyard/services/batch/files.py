"""Files in a task's directory or under a node's AZ_BATCH_NODE_ROOT_DIR, as Azure Batch's
file operations see them: listing, properties, ranged reads and deletion. Pure: every
function works on a host directory (`root`) and a path relative to it; nothing here knows
about HTTP.

Names are relative to the root and use '/' (e.g. "wd/out/result.txt"). A listing shows
directories too (isDirectory true, no properties, as Azure lists them) and, when recursive,
everything beneath them.

Containment. The caller's path never leaves the root:
- a NUL byte, an absolute path, or '..' that climbs above the root is refused before the
  file system is touched: 400 InvalidUri (the URI names no resource of this directory);
- the path is then resolved with realpath; if a symbolic link takes it outside the root the
  request is refused: 403 AuthorizationFailure (the link is the user's, the target is not);
- the resolved path is opened one component at a time from a descriptor of the root with
  O_NOFOLLOW, so a link swapped in after the check (a task racing the service) is not
  followed either: that ends as 404 FileNotFound.
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
import os
import re
import shutil
import stat
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from ..errors import Conflict, Forbidden, InvalidInput, NotFound, RangeNotSatisfiable, ServiceError

CONTENT_TYPE = "application/octet-stream"
CHUNK = 1 << 16
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NOFOLLOW_DIR = _DIR_FLAGS | os.O_NOFOLLOW


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


def _contained(path: str, root_real: str) -> bool:
    return path == root_real or path.startswith(root_real.rstrip(os.sep) + os.sep)


def _real_root(root: Path) -> str:
    """The root as given, which callers hand over already resolved: a link anywhere in it
    (a task that replaced its own directory with one) is refused, not followed."""
    root_real = os.path.realpath(root)
    if root_real != os.path.abspath(root):
        raise _through_link()
    return root_real


def _locate(root: Path, parts: list[str], follow_last: bool = True) -> tuple[str, list[str]]:
    """(real root, components of the real target below it). Symbolic links are resolved;
    one that leads outside is refused. With follow_last=False the last component itself is
    not resolved (deletion acts on a link, not on what it points to)."""
    root_real = _real_root(root)
    if not parts:
        return root_real, []
    if follow_last:
        target = os.path.realpath(os.path.join(root_real, *parts))
    else:
        target = os.path.join(os.path.realpath(os.path.join(root_real, *parts[:-1])), parts[-1])
    if not _contained(target, root_real):
        raise _through_link()
    inner = os.path.relpath(target, root_real)
    return root_real, [] if inner == "." else inner.split(os.sep)


@contextmanager
def _parent_dir(root_real: str, inner: list[str]) -> Iterator[int]:
    """A descriptor of the directory holding inner[-1] (of the root itself when inner is
    empty), reached without following any link."""
    try:
        fd = os.open(root_real, _NOFOLLOW_DIR)
    except OSError as exc:
        raise _os_error(exc) from None
    try:
        for part in inner[:-1]:
            try:
                child = os.open(part, _NOFOLLOW_DIR, dir_fd=fd)
            except OSError as exc:
                raise _os_error(exc) from None
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _stat_at(fd: int, inner: list[str]) -> os.stat_result:
    try:
        return os.stat(inner[-1], dir_fd=fd, follow_symlinks=False) if inner else os.fstat(fd)
    except OSError as exc:
        raise _os_error(exc) from None


# properties -----------------------------------------------------------------------------------

def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _etag(st: os.stat_result) -> str:
    digest = hashlib.blake2b(f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}".encode(), digest_size=8)
    return "0x" + digest.hexdigest().upper()


def properties(st: os.stat_result) -> dict:
    """FileProperties of the wire format. Linux keeps no creation time that stat shows, so
    the earlier of the change and modification times stands in for it."""
    return {"creationTime": _iso(min(st.st_ctime, st.st_mtime)), "lastModified": _iso(st.st_mtime),
            "contentLength": str(st.st_size if stat.S_ISREG(st.st_mode) else 0),
            "contentType": CONTENT_TYPE, "fileMode": oct(st.st_mode)}


def _describe(name: str, st: os.stat_result) -> dict:
    """A listing entry (BatchNodeFile without its url): directories carry no properties."""
    if stat.S_ISDIR(st.st_mode):
        return {"name": name, "isDirectory": True}
    return {"name": name, "isDirectory": False, "properties": properties(st)}


def _info(name: str, st: os.stat_result) -> dict:
    """What a download or HEAD answers with: the entry, its properties (directories too),
    its ETag and its size in bytes."""
    return {"name": name, "isDirectory": stat.S_ISDIR(st.st_mode), "properties": properties(st),
            "eTag": _etag(st), "size": st.st_size if stat.S_ISREG(st.st_mode) else 0}


# operations -----------------------------------------------------------------------------------

def list_files(root: Path, recursive: bool = False) -> list[dict]:
    """Entries under root, sorted by name: the top level, or with recursive=True everything
    (directories included). Names that are not UTF-8 cannot be addressed, and are left out."""
    root_real = _real_root(root)
    out: list[dict] = []
    try:
        top = os.open(root_real, _NOFOLLOW_DIR)
    except OSError as exc:
        raise _os_error(exc) from None
    pending = [(top, "")]
    try:
        while pending:
            fd, prefix = pending.pop()
            try:
                with os.scandir(fd) as entries:
                    found = list(entries)
            except OSError:
                found = []  # gone or unreadable meanwhile: list what can be listed
            for entry in found:
                name = prefix + entry.name
                try:
                    name.encode("utf-8")
                    st = entry.stat(follow_symlinks=False)
                except (UnicodeEncodeError, OSError):
                    continue
                if stat.S_ISLNK(st.st_mode):
                    target = os.path.realpath(os.path.join(root_real, name))
                    if not _contained(target, root_real):
                        continue
                    try:
                        st = os.stat(target)
                    except OSError:
                        continue  # dangling
                    out.append(_describe(name, st))
                    continue  # not descended: links could loop
                out.append(_describe(name, st))
                if recursive and stat.S_ISDIR(st.st_mode):
                    try:
                        pending.append((os.open(entry.name, _NOFOLLOW_DIR, dir_fd=fd), name + "/"))
                    except OSError:
                        pass
            os.close(fd)
    finally:
        for fd, _ in pending:
            os.close(fd)
    out.sort(key=lambda e: e["name"])
    return out


def file_properties(root: Path, rel: str) -> dict:
    """{name, isDirectory, properties, eTag, size} of a file or directory; name is the
    path as asked for, normalised ('.' and inner '..' folded)."""
    parts = split_path(rel)
    root_real, inner = _locate(root, parts)
    with _parent_dir(root_real, inner) as fd:
        st = _stat_at(fd, inner)
    if stat.S_ISLNK(st.st_mode):  # a link swapped in after it was resolved
        raise _not_found()
    return _info("/".join(parts), st)


def open_file(root: Path, rel: str) -> tuple[io.RawIOBase, dict]:
    """An open, unbuffered binary file and its info (from the open descriptor, so the two
    agree). Directories and special files (FIFOs, sockets, devices) are refused."""
    parts = split_path(rel)
    root_real, inner = _locate(root, parts)
    if not inner:
        raise _is_directory()
    with _parent_dir(root_real, inner) as fd:
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
            handle = os.open(inner[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
        except OSError as exc:
            raise _os_error(exc) from None
    try:
        st = os.fstat(handle)
        if stat.S_ISDIR(st.st_mode):
            raise _is_directory()
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular()
        os.set_blocking(handle, True)
    except BaseException:
        os.close(handle)
        raise
    return open(handle, "rb", buffering=0), _info("/".join(parts), st)


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


def delete(root: Path, rel: str, recursive: bool = False, protected: Collection[str] = ()) -> None:
    """Delete a file, a link (not its target), or a directory: an empty one, or with
    recursive=True everything in it. The root itself and the `protected` paths (relative
    names) are refused (403); a non-empty directory without recursive is 409."""
    parts = split_path(rel)
    if not parts or "/".join(parts) in protected:
        raise _protected()
    root_real, inner = _locate(root, parts, follow_last=False)
    if not inner or "/".join(inner) in protected:
        raise _protected()
    with _parent_dir(root_real, inner) as fd:
        st = _stat_at(fd, inner)
        name = inner[-1]
        try:
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=fd)
            elif recursive:
                shutil.rmtree(name, dir_fd=fd)  # descriptor-based: links inside are removed, not followed
            else:
                os.rmdir(name, dir_fd=fd)
        except OSError as exc:
            raise _os_error(exc) from None


def _protected() -> Forbidden:
    return Forbidden("AuthorizationFailure", "This request is not authorized to perform this operation.",
                     details=[{"key": "Reason", "value": "This directory belongs to the Batch service and cannot "
                                                         "be deleted."}])
