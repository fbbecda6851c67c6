"""Jobs, their task state counts, tasks and their stdout/stderr: Batch data-plane reads
(`GET /jobs`, `/jobs/{id}/taskcounts`, `/jobs/{id}/tasks/{id}/files/...`) on the principal's
behalf, so they need the Batch data actions the API needs."""

from __future__ import annotations

from itertools import islice

from starlette.responses import Response

from . import access
from .viewers import file_page, files_and_output
from .web import PortalContext, page

TASKS_SHOWN = 1000


@page
async def jobs(ctx: PortalContext) -> Response:
    def load():
        found = access.page_account(ctx, "GET", "jobs")
        listed = ctx.services.jobs.list(found)
        return found, [(j.body, ctx.services.jobs.task_counts(found, j.name)) for j in listed]
    found, listed = await ctx.call(load)
    return ctx.render("jobs.html", account=found, jobs=listed)


@page
async def job(ctx: PortalContext) -> Response:
    job_id = ctx.params["job"]

    def load():
        found = access.page_account(ctx, "GET", "jobs", job_id)
        got = ctx.services.jobs.get(found, job_id)
        counts = ctx.services.jobs.task_counts(found, job_id)
        tasks = [t.body for t in islice(ctx.services.tasks.in_id_order(found, job_id, None), TASKS_SHOWN)]
        return found, got.body, counts, tasks
    found, body, counts, tasks = await ctx.call(load)
    return ctx.render("job.html", account=found, job=body, counts=counts, tasks=tasks, shown=TASKS_SHOWN)


@page
async def task(ctx: PortalContext) -> Response:
    job_id, task_id = ctx.params["job"], ctx.params["task"]

    def load():
        found = access.page_account(ctx, "GET", "jobs", job_id, "tasks", task_id, "files")
        got = ctx.services.tasks.get(found, job_id, task_id)
        listed, output = files_and_output(lambda: ctx.services.tasks.task_directory(found, job_id, task_id))
        return found, got.body, output, listed
    found, body, output, listed = await ctx.call(load)
    return ctx.render("task.html", account=found, job_id=job_id, task=body, output=output, files=listed)


@page
async def task_file(ctx: PortalContext) -> Response:
    job_id, task_id = ctx.params["job"], ctx.params["task"]
    return await file_page(ctx, ("jobs", job_id, "tasks", task_id),
                           lambda account: ctx.services.tasks.task_directory(account, job_id, task_id))
