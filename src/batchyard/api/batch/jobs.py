"""Jobs and their tasks on the Batch data plane. Each handler parses, calls one service
method, renders."""

from __future__ import annotations

from starlette.responses import Response

from ...services.errors import ServiceError
from .rendering import listing, read_listing, single
from .router import ODATA_JSON, BatchContext, BatchJSON, BatchRouter, empty_response, error_values
from .views import job_view, task_view

JOB = "/jobs/{jobId}"
TASK = JOB + "/tasks/{taskId}"


# jobs ---------------------------------------------------------------------------------------------

async def create_job(ctx: BatchContext) -> Response:
    job = await ctx.call(ctx.services.jobs.create, ctx.account, await ctx.json(), ctx.auth)
    return empty_response(201, job.body["eTag"], job.body["lastModified"], ctx.url("jobs", job.name))


async def list_jobs(ctx: BatchContext) -> Response:
    return await read_listing(ctx, "jobs", ctx.services.jobs.key_prefix(ctx.account))


async def get_job(ctx: BatchContext) -> Response:
    job = await ctx.call(ctx.services.jobs.get, ctx.account, ctx.params["jobId"])
    return single(ctx, "jobs", job_view(ctx, job), job.body)


def _job_change(status: int, method: str, with_body: bool, extra: tuple = ()):
    async def handler(ctx: BatchContext) -> Response:
        args = [ctx.account, ctx.params["jobId"]]
        if with_body:
            args.append(await ctx.json(required=False))
        args.extend(extra)
        job = await ctx.call(getattr(ctx.services.jobs, method), *args, ctx.conditions())
        if job is None:
            return empty_response(status)
        return empty_response(status, job.body["eTag"], job.body["lastModified"], ctx.url("jobs", job.name))
    return handler


async def delete_job(ctx: BatchContext) -> Response:
    await ctx.call(ctx.services.jobs.delete, ctx.account, ctx.params["jobId"], ctx.conditions())
    return empty_response(202)


async def task_counts(ctx: BatchContext) -> Response:
    counts = await ctx.call(ctx.services.jobs.task_counts, ctx.account, ctx.params["jobId"])
    return BatchJSON({"odata.metadata": f"{ctx.endpoint}/$metadata#taskcountsresult/@Element", **counts},
                     media_type=ODATA_JSON)


# tasks --------------------------------------------------------------------------------------------

async def create_task(ctx: BatchContext) -> Response:
    task = await ctx.call(ctx.services.tasks.create, ctx.account, ctx.params["jobId"], await ctx.json())
    return empty_response(201, task.body["eTag"], task.body["lastModified"],
                          ctx.url("jobs", ctx.params["jobId"], "tasks", task.id))


async def add_task_collection(ctx: BatchContext) -> Response:
    raw = await ctx.body()
    body = await ctx.json()
    results = await ctx.call(ctx.services.tasks.create_collection, ctx.account, ctx.params["jobId"], body, len(raw))
    task_url = ctx.url_of_each("jobs", ctx.params["jobId"], "tasks")
    return BatchJSON({"odata.metadata": f"{ctx.endpoint}/$metadata#taskaddresult",
                      "value": [_add_result(task_url, item, outcome) for item, outcome
                                in zip(body.get("value", []), results)]}, media_type=ODATA_JSON)


def _add_result(task_url, item, outcome) -> dict:
    task_id = item.get("id") if isinstance(item, dict) else None
    if isinstance(outcome, ServiceError):
        return {"status": "clienterror", "taskId": task_id,
                "error": {"code": outcome.code, "message": {"lang": "en-US", "value": outcome.message},
                          "values": error_values(outcome)}}
    return {"status": "success", "taskId": outcome.id, "eTag": outcome.body["eTag"],
            "lastModified": outcome.body["lastModified"], "location": task_url(outcome.id)}


async def list_tasks(ctx: BatchContext) -> Response:
    job_id = ctx.params["jobId"]
    return await read_listing(ctx, "tasks", ctx.services.jobs.key(ctx.account, job_id), job_id,
                              lambda: ctx.services.jobs.get(ctx.account, job_id))


async def get_task(ctx: BatchContext) -> Response:
    task = await ctx.call(ctx.services.tasks.get, ctx.account, ctx.params["jobId"], ctx.params["taskId"])
    return single(ctx, "tasks", task_view(ctx, ctx.params["jobId"], task), task.body)


def _task_change(status: int, method: str, with_body: bool = False):
    async def handler(ctx: BatchContext) -> Response:
        args = [ctx.account, ctx.params["jobId"], ctx.params["taskId"]]
        if with_body:
            args.append(await ctx.json())
        task = await ctx.call(getattr(ctx.services.tasks, method), *args, ctx.conditions())
        if task is None:
            return empty_response(status)
        return empty_response(status, task.body["eTag"], task.body["lastModified"],
                              ctx.url("jobs", ctx.params["jobId"], "tasks", task.id))
    return handler


async def prep_release_status(ctx: BatchContext) -> Response:
    entries = await ctx.call(ctx.services.jobs.preparation_status, ctx.account, ctx.params["jobId"])
    for entry in entries:
        entry["nodeUrl"] = ctx.url("pools", entry["poolId"], "nodes", entry["nodeId"])
    return listing(ctx, "jobpreparationandreleasetaskstatuslist", entries, key=lambda e: e["nodeId"])


async def list_subtasks(ctx: BatchContext) -> Response:
    """A multi-instance task's subtasks 1..N-1 (none for any other task)."""
    task = await ctx.call(ctx.services.tasks.get, ctx.account, ctx.params["jobId"], ctx.params["taskId"])
    subtasks = []
    for record in task.internal.get("subtasks", []):
        node = record["nodeInfo"]
        node_url = ctx.url("pools", node["poolId"], "nodes", node["nodeId"])
        subtasks.append({**record, "nodeInfo": {**node, "nodeUrl": node_url,
                                                "taskRootDirectoryUrl": f"{node_url}/files/{node['taskRootDirectory']}"}})
    return BatchJSON({"odata.metadata": f"{ctx.endpoint}/$metadata#subtaskinfo", "value": subtasks},
                     media_type=ODATA_JSON)


def register(router: BatchRouter) -> None:
    router.add("POST", "/jobs", create_job)
    router.add("GET", "/jobs", list_jobs)
    router.add("GET", JOB, get_job)
    router.add("PATCH", JOB, _job_change(200, "update", True, (False,)))
    router.add("PUT", JOB, _job_change(200, "update", True, (True,)))
    router.add("DELETE", JOB, delete_job)
    router.add("POST", JOB + "/disable", _job_change(202, "disable", True))
    router.add("POST", JOB + "/enable", _job_change(202, "enable", False))
    router.add("POST", JOB + "/terminate", _job_change(202, "terminate", True))
    router.add("GET", JOB + "/taskcounts", task_counts)
    router.add("GET", JOB + "/jobpreparationandreleasetaskstatus", prep_release_status)
    router.add("POST", JOB + "/tasks", create_task)
    router.add("GET", JOB + "/tasks", list_tasks)
    router.add("POST", JOB + "/addtaskcollection", add_task_collection)
    router.add("GET", TASK, get_task)
    router.add("PUT", TASK, _task_change(200, "update", with_body=True))
    router.add("DELETE", TASK, _task_change(200, "delete"))
    router.add("POST", TASK + "/terminate", _task_change(204, "terminate"))
    router.add("POST", TASK + "/reactivate", _task_change(204, "reactivate"))
    router.add("GET", TASK + "/subtasksinfo", list_subtasks)
