"""Job schedules on the Batch data plane: add, get, list, exists, patch, update, disable,
enable, terminate, delete, and the jobs a schedule made. Each handler parses, calls one
service method, renders."""

from __future__ import annotations

from starlette.responses import Response

from ...services.batch.container_spec import withheld
from ...services.batch.pools import check_conditions
from .views import job_view
from .rendering import listing, single
from .router import BatchContext, BatchRouter, empty_response

SCHEDULE = "/jobschedules/{jobScheduleId}"


def schedule_view(ctx: BatchContext, schedule) -> dict:
    body = {"url": ctx.url("jobschedules", schedule.name), **withheld(schedule.body)}
    recent = body.get("executionInfo", {}).get("recentJob")
    if recent:
        body["executionInfo"] = {**body["executionInfo"], "recentJob": {**recent, "url": ctx.url("jobs", recent["id"])}}
    return body


async def create_schedule(ctx: BatchContext) -> Response:
    schedule = await ctx.call(ctx.services.job_schedules.create, ctx.account, await ctx.json(), ctx.auth)
    return empty_response(201, schedule.body["eTag"], schedule.body["lastModified"],
                          ctx.url("jobschedules", schedule.name))


async def list_schedules(ctx: BatchContext) -> Response:
    schedules = await ctx.call(ctx.services.job_schedules.list, ctx.account)
    return listing(ctx, "jobschedules", [schedule_view(ctx, s) for s in schedules])


async def get_schedule(ctx: BatchContext) -> Response:
    schedule = await ctx.call(ctx.services.job_schedules.get, ctx.account, ctx.params["jobScheduleId"])
    return single(ctx, "jobschedules", schedule_view(ctx, schedule), schedule.body)


async def schedule_exists(ctx: BatchContext) -> Response:
    schedule = await ctx.call(ctx.services.job_schedules.get, ctx.account, ctx.params["jobScheduleId"])
    check_conditions(schedule.body, ctx.conditions())
    return empty_response(200, schedule.body["eTag"], schedule.body["lastModified"])


def _change(status: int, method: str, with_body: bool = False, extra: tuple = ()):
    async def handler(ctx: BatchContext) -> Response:
        args = [ctx.account, ctx.params["jobScheduleId"]]
        if with_body:
            args.append(await ctx.json())
        schedule = await ctx.call(getattr(ctx.services.job_schedules, method), *args, *extra, ctx.conditions())
        if schedule is None:
            return empty_response(status)
        return empty_response(status, schedule.body["eTag"], schedule.body["lastModified"],
                              ctx.url("jobschedules", schedule.name))
    return handler


async def list_schedule_jobs(ctx: BatchContext) -> Response:
    jobs = await ctx.call(ctx.services.job_schedules.jobs_of, ctx.account, ctx.params["jobScheduleId"])
    return listing(ctx, "jobs", [job_view(ctx, j) for j in jobs])


def register(router: BatchRouter) -> None:
    router.add("POST", "/jobschedules", create_schedule)
    router.add("GET", "/jobschedules", list_schedules)
    router.add("GET", SCHEDULE, get_schedule)
    router.add("HEAD", SCHEDULE, schedule_exists)
    router.add("PATCH", SCHEDULE, _change(200, "update", True, (False,)))
    router.add("PUT", SCHEDULE, _change(200, "update", True, (True,)))
    router.add("DELETE", SCHEDULE, _change(202, "delete"))
    router.add("POST", SCHEDULE + "/disable", _change(204, "disable"))
    router.add("POST", SCHEDULE + "/enable", _change(204, "enable"))
    router.add("POST", SCHEDULE + "/terminate", _change(202, "terminate"))
    router.add("GET", SCHEDULE + "/jobs", list_schedule_jobs)
