"""outputFiles' `filePattern`, matched as Azure Batch documents it for Linux nodes:

- relative to the task's working directory, or absolute (on the node: here only inside
  AZ_BATCH_NODE_ROOT_DIR); `$VAR` and `${VAR}` are expanded from the task's environment first;
- `*` matches any characters but `/`, `?` one such character, `[abc]`, `[a-c]` and `[!abc]`
  one character of (or not of) the set, and `**` as a whole path segment any number of
  directories (none included);
- a name starting with `.` is matched only by a segment that starts with `.` itself
  (`*.gif` does not match `.a.gif`, `.*.gif` does); a wildcard is escaped in brackets (`abc[*]`).

A pattern with no wildcard names one file, uploaded as `path` (or its own name). A pattern
with wildcards names files under its literal leading directories; each is uploaded under
`path` with its name relative to those directories, so the structure below is kept.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from ...runtime.machine_files import MachineFiles

WILDCARDS = re.compile(r"[*?\[]")
ENV_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
MAX_MATCHES = 100_000


def expand(pattern: str, env: dict[str, str]) -> str:
    return ENV_VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), pattern)


def has_wildcards(pattern: str) -> bool:
    return bool(WILDCARDS.search(pattern))


def _segment_regex(segment: str) -> str:
    """One path segment of a pattern -> a regex for one name."""
    out, i = [], 0
    while i < len(segment):
        c = segment[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = segment.find("]", i + 2 if segment[i + 1:i + 2] in ("!", "]") else i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = segment[i + 1:end]
                negate = body.startswith("!")
                body = body[1:] if negate else body
                chars = "".join("\\" + ch if ch in "\\]^[" else ch for ch in body)
                out.append(f"[{'^/' if negate else ''}{chars}]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    # Wildcards never match a leading dot: a name starting with "." must be asked for.
    guard = "" if segment.startswith(".") else r"(?!\.)"
    return guard + "".join(out)


def compile_pattern(relative: str) -> re.Pattern:
    """A wildcard pattern relative to its base directory -> a regex for relative file names."""
    parts = []
    segments = relative.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            parts.append(r"(?:(?!\.)[^/]+/)*" if not last else r"(?:(?!\.)[^/]+/)*(?!\.)[^/]+")
        else:
            parts.append(_segment_regex(segment) + ("" if last else "/"))
    return re.compile("".join(parts))


@dataclass(frozen=True)
class Selection:
    """Where a pattern looks: `base` (an absolute node path, no wildcards) and, for a
    wildcard pattern, the regex the names below it must match."""
    base: str
    regex: re.Pattern | None  # None: base is the one file named


def select(pattern: str, working_dir: str, node_root: str, env: dict[str, str]) -> Selection | None:
    """None when the pattern points outside the node's Batch directories."""
    expanded = expand(pattern, env)
    absolute = posixpath.normpath(posixpath.join(working_dir, expanded))
    if not (absolute + "/").startswith(node_root.rstrip("/") + "/") or absolute == node_root.rstrip("/"):
        return None
    if not has_wildcards(absolute):
        return Selection(absolute, None)
    segments = absolute.split("/")
    first = next(i for i, s in enumerate(segments) if has_wildcards(s))
    return Selection("/".join(segments[:first]), compile_pattern("/".join(segments[first:])))


def walk(node: MachineFiles, rel: str, regex: re.Pattern) -> list[str]:
    """Regular files below a directory of a node (its file service's rel) whose relative
    names match; links are neither followed nor matched (the walk stays where it started)."""
    return sorted(n for n in node.walk_files(rel, MAX_MATCHES) if regex.fullmatch(n))[:MAX_MATCHES]


def blob_name(selection: Selection, relative: str | None, path: str | None) -> str:
    """The destination blob of one matched file (relative: its name below the base)."""
    if selection.regex is None:
        return path or posixpath.basename(selection.base)
    return f"{path.rstrip('/')}/{relative}" if path else relative
