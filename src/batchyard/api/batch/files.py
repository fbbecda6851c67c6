"""Task files and node files on the Batch data plane: list, download (whole or an
ocp-range, streamed), properties (HEAD) and delete, for
`/jobs/{jobId}/tasks/{taskId}/files[/{filePath}]` and
`/pools/{poolId}/nodes/{nodeId}/files[/{filePath}]`. The rules live in
`services/batch/files.py`; this module finds the directory, renders and sets the headers
the SDK reads (§1.7): ETag, Last-Modified, ocp-creation-time, ocp-batch-file-isdirectory,
ocp-batch-file-url, ocp-batch-file-mode, Content-Length.

`filePath` is one raw path segment, percent-encoded ('/' as %2F); the router has already
decoded it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from starlette.responses import Response, StreamingResponse

from ...services.batch import files
from ...services.batch.node_agent import BATCH_DIRS
from ...services.batch.pools import check_conditions
from ...services.errors import InvalidInput, NotFound
from .rendering import listing
from .router import BatchContext, BatchRouter, empty_response, rfc1123

TASK_FILES = "/jobs/{jobId}/tasks/{taskId}/files"
NODE_FILES = "/pools/{poolId}/nodes/{nodeId}/files"
# Not Azure's: output files a task uploaded to this service's own storage, read back the same way.
OUTPUT_FILES = "/outputs/{container}/files"
# The node agent's own directories: their contents may go, they may not.
NODE_PROTECTED = frozenset({*BATCH_DIRS, "startup"})


@dataclass(frozen=True)
class _Scope:
    """Where one family of file operations is rooted and how its files' URLs read."""
    root: Callable[[BatchContext], files.Place]  # runs in a worker thread
    prefix: Callable[[BatchContext], tuple[str, ...]]  # URL segments before "files"
    protected: frozenset[str] = frozenset()

    def url(self, ctx: BatchContext, name: str) -> str:
        return ctx.url(*self.prefix(ctx), "files", name)


def _task_place(ctx: BatchContext) -> files.Place:
    tasks = getattr(ctx.services, "tasks", None)
    if tasks is None:  # no job exists before the task service does
        raise NotFound("JobNotFound", "The specified job does not exist.")
    return tasks.task_directory(ctx.account, ctx.params["jobId"], ctx.params["taskId"])


def _node_place(ctx: BatchContext) -> files.Place:
    return ctx.services.pools.node_directory(ctx.account, ctx.params["poolId"], ctx.params["nodeId"])


def _output_place(ctx: BatchContext) -> files.Place:
    return ctx.services.tasks.output_place(ctx.account, ctx.params["container"])


TASK = _Scope(_task_place, lambda ctx: ("jobs", ctx.params["jobId"], "tasks", ctx.params["taskId"]))
NODE = _Scope(_node_place, lambda ctx: ("pools", ctx.params["poolId"], "nodes", ctx.params["nodeId"]),
              NODE_PROTECTED)


OUTPUT = _Scope(_output_place, lambda ctx: ("outputs", ctx.params["container"]))


def _recursive(ctx: BatchContext) -> bool:
    value = ctx.query.get("recursive")
    if value is None or value.strip() == "":
        return False
    if value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InvalidInput("InvalidQueryParameterValue", "Value for one of the query parameters specified in the "
                       "request URI is invalid.", details=[{"key": "QueryParameterName", "value": "recursive"},
                                                           {"key": "QueryParameterValue", "value": value[:100]}])


def _headers(ctx: BatchContext, scope: _Scope, info: dict, length: int) -> dict[str, str]:
    props = info["properties"]
    return {"Content-Length": str(length), "ETag": info["eTag"], "Last-Modified": rfc1123(props["lastModified"]),
            "ocp-creation-time": rfc1123(props["creationTime"]),
            "ocp-batch-file-isdirectory": "True" if info["isDirectory"] else "False",
            "ocp-batch-file-url": scope.url(ctx, info["name"]), "ocp-batch-file-mode": props["fileMode"]}


def _conditions(info: dict, conditions: dict) -> None:
    check_conditions({"eTag": info["eTag"], "lastModified": info["properties"]["lastModified"]}, conditions)


def _handlers(scope: _Scope):
    async def list_files(ctx: BatchContext) -> Response:
        recursive = _recursive(ctx)
        root = await ctx.call(scope.root, ctx)
        entries = await ctx.call(files.list_files, root, recursive)
        items = [{"name": e["name"], "url": scope.url(ctx, e["name"]),
                  **{k: v for k, v in e.items() if k != "name"}} for e in entries]
        return listing(ctx, "files", items, key=lambda item: item["name"])

    async def download(ctx: BatchContext) -> Response:
        spec = files.parse_range(ctx.request.headers.get("ocp-range"))
        conditions = ctx.conditions()
        root = await ctx.call(scope.root, ctx)
        handle, info = await ctx.call(files.open_file, root, ctx.params["filePath"])
        try:
            _conditions(info, conditions)
            start, stop = files.byte_span(spec, info["size"])
        except BaseException:
            handle.close()
            raise
        # 200 for a range too: the SDK accepts no other status for a download.
        return StreamingResponse(files.iter_bytes(handle, start, stop), status_code=200,
                                 media_type=files.CONTENT_TYPE, headers=_headers(ctx, scope, info, stop - start))

    async def properties(ctx: BatchContext) -> Response:
        conditions = ctx.conditions()
        root = await ctx.call(scope.root, ctx)
        info = await ctx.call(files.file_properties, root, ctx.params["filePath"])
        _conditions(info, conditions)
        headers = _headers(ctx, scope, info, info["size"])
        if not info["isDirectory"]:
            headers["Content-Type"] = files.CONTENT_TYPE
        return Response(status_code=200, headers=headers)

    async def delete(ctx: BatchContext) -> Response:
        recursive = _recursive(ctx)
        root = await ctx.call(scope.root, ctx)
        await ctx.call(files.delete, root, ctx.params["filePath"], recursive, scope.protected)
        return empty_response(200)

    return list_files, download, properties, delete


def register(router: BatchRouter) -> None:
    for template, scope in ((TASK_FILES, TASK), (NODE_FILES, NODE), (OUTPUT_FILES, OUTPUT)):
        list_files, download, properties, delete = _handlers(scope)
        router.add("GET", template, list_files)
        router.add("GET", template + "/{filePath}", download)
        router.add("HEAD", template + "/{filePath}", properties)
        router.add("DELETE", template + "/{filePath}", delete)
