"""Files of a node or a task as the portal shows them: the list, stdout/stderr, and a
viewer of one file (its end, where a running task writes). Reached through the same file
service as the Batch file API, which keeps every path inside its node or task."""

from __future__ import annotations

from urllib.parse import quote

from starlette.responses import Response

from ...services.batch import files
from ...services.errors import ServiceError
from . import access
from .web import PortalContext

VIEW_BYTES = 256 * 1024
FILES_SHOWN = 1000


def read_tail(place, rel: str) -> str | None:
    """The last VIEW_BYTES of a file as text (None when it is not there)."""
    try:
        handle, info = files.open_file(place, rel)
    except ServiceError:
        return None
    start = max(0, info["size"] - VIEW_BYTES)
    return b"".join(files.iter_bytes(handle, start, info["size"])).decode("utf-8", errors="replace")


def files_and_output(place_of, directory: str = "") -> tuple[list[dict], dict]:
    """(the first FILES_SHOWN files, {stdout.txt / stderr.txt: text}) below a place; none
    while there is no place yet (a node being made, a task not yet on a node)."""
    try:
        place = place_of()
        listed = [f for f in files.list_files(place, recursive=True) if not f["isDirectory"]][:FILES_SHOWN]
        return listed, {name: read_tail(place, directory + name) for name in ("stdout.txt", "stderr.txt")}
    except ServiceError:
        return [], {}


async def file_page(ctx: PortalContext, segments: tuple[str, ...], place_of) -> Response:
    """One file below `segments` (e.g. jobs/{job}/tasks/{task}), read as
    `GET .../files/{path}` is, with the same permission."""
    rel = ctx.params["path"]

    def load():
        found = access.page_account(ctx, "GET", *segments, "files", rel)
        place = place_of(found)
        files.file_properties(place, rel)  # NotFound for a file that is not there
        return found, read_tail(place, rel)
    found, text = await ctx.call(load)
    back = "/".join(quote(s, safe="") for s in ("accounts", found.name, *segments))
    return ctx.render("file.html", account=found, title=" / ".join((*segments[1::2], rel)), text=text,
                      back="/" + back)
