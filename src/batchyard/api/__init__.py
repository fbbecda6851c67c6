"""HTTP adapters only: parse, authenticate, call a service, render Azure-shaped answers."""

from starlette.convertors import PathConvertor, register_url_convertor


class _PathWithNewlines(PathConvertor):
    """Starlette's `path`, matching a newline too (its ".*" does not): a file a task named
    with one is listed by the files API, so its name must reach it, percent-encoded."""

    regex = "[\\s\\S]*"


# Before any route is made: every `{...:path}` below, the Batch, ARM and portal ones, is this.
register_url_convertor("path", _PathWithNewlines())
