"""What a job or a task asks for: request bodies checked field by field and brought to the
wire shape Batch returns. Rules that need other records live in jobs.py and tasks.py."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache

from . import batch_input as bi, container_spec
from .durations import TIMESPAN_MAX_TEXT, format_duration, parse_duration
from .pool_spec import user_identity

ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_RANGE_TASKS = 10000  # tasks one taskIdRanges entry may name, as a guard on memory
DEFAULT_RETENTION = "P7D"


def entity_id(value, field: str = "id") -> str:
    if value is None:
        raise bi.missing(field)
    if not isinstance(value, str) or not ID.fullmatch(value):
        raise bi.invalid(field, value, "The id may hold letters, digits, hyphens and underscores, at most 64 "
                                       "characters.")
    return value


def no_nul(text: str, field: str) -> str:
    if "\x00" in text:
        raise bi.invalid(field, text, "NUL characters cannot be passed to a program.")
    return text


def duration(body: dict, name: str, field: str, default: str | None = None) -> str | None:
    """An optional duration, returned in Azure's response form."""
    value = body.get(name)
    if value is None:
        return default
    parsed = parse_duration(value, field)
    if parsed <= timedelta(0):
        raise bi.invalid(field, value, "The duration must be positive.")
    return format_duration(parsed)


@lru_cache(maxsize=1024)  # read at every task's start and end; jobs use a handful of durations
def seconds(text: str | None) -> float | None:
    """A duration already checked -> seconds, None for 'unlimited'."""
    if text is None or text == TIMESPAN_MAX_TEXT:
        return None
    return parse_duration(text, "duration").total_seconds()


def job_constraints(body: dict) -> dict:
    constraints = bi.obj(body, "constraints") or {}
    return {
        "maxWallClockTime": duration(constraints, "maxWallClockTime", "constraints.maxWallClockTime",
                                     TIMESPAN_MAX_TEXT),
        "maxTaskRetryCount": bi.integer(constraints, "maxTaskRetryCount", "constraints.maxTaskRetryCount",
                                        minimum=-1, maximum=100, default=0),
    }


def task_constraints(body: dict, job_retries: int) -> dict:
    constraints = bi.obj(body, "constraints") or {}
    return {
        "maxWallClockTime": duration(constraints, "maxWallClockTime", "constraints.maxWallClockTime",
                                     TIMESPAN_MAX_TEXT),
        "retentionTime": duration(constraints, "retentionTime", "constraints.retentionTime", DEFAULT_RETENTION),
        "maxTaskRetryCount": bi.integer(constraints, "maxTaskRetryCount", "constraints.maxTaskRetryCount",
                                        minimum=-1, maximum=100, default=job_retries),
    }


def command_task(body: dict, field: str, job_retries: int = 0, with_id: bool = True) -> dict:
    """The parts every kind of task shares: command line, environment, files, identity."""
    container = container_spec.container_settings(body, field)
    # A container task may leave its command line empty: the image's own command runs.
    command = "" if container is not None and body.get("commandLine") == "" else \
        bi.string(body, "commandLine", f"{field}.commandLine", required_=True, max_len=8192)
    out = {
        "commandLine": no_nul(command, f"{field}.commandLine"),
        "environmentSettings": bi.name_value_pairs(body, "environmentSettings", f"{field}.environmentSettings"),
        "resourceFiles": resource_files(body, f"{field}.resourceFiles"),
        "userIdentity": user_identity(body, f"{field}.userIdentity"),
        "constraints": task_constraints(body, job_retries),
    }
    if container is not None:
        out["containerSettings"] = container
    if with_id:
        out = {"id": entity_id(body.get("id"), f"{field}.id" if field != "task" else "id"), **out}
    return out


SOURCES = ("httpUrl", "storageContainerUrl", "autoStorageContainerName")
CONTAINER_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9](?:[a-z0-9]|-(?!-))*[a-z0-9]$")


def resource_files(body: dict, field: str) -> list[dict]:
    """Azure's ResourceFile: exactly one source; with httpUrl, filePath is the file (required),
    with a container it is the directory the blobs go to (optional)."""
    files = []
    for index, item in enumerate(bi.array(body, "resourceFiles", field, max_items=100)):
        where = f"{field}[{index}]"
        if not isinstance(item, dict):
            raise bi.invalid(where, item, "An object is required.")
        given = [name for name in SOURCES if item.get(name)]
        if len(given) != 1:
            raise bi.invalid(where, ", ".join(given) or "none", "Exactly one of autoStorageContainerName, "
                             "storageContainerUrl and httpUrl must be given.")
        source = given[0]
        out: dict = {}
        if source == "autoStorageContainerName":
            name = bi.string(item, source, f"{where}.{source}")
            if not CONTAINER_NAME.fullmatch(name):
                raise bi.invalid(f"{where}.{source}", name, "A container name has 3-63 lower-case letters, digits "
                                                             "and single hyphens.")
            out[source] = name
        else:
            url = bi.string(item, source, f"{where}.{source}", max_len=8192)
            if not url.lower().startswith(("http://", "https://")):
                raise bi.invalid(f"{where}.{source}", url, "An http or https URL is required.")
            out[source] = url
        prefix = bi.string(item, "blobPrefix", f"{where}.blobPrefix", max_len=1024)
        if prefix and source == "httpUrl":
            raise bi.invalid(f"{where}.blobPrefix", prefix, "blobPrefix applies to a container, not to httpUrl.")
        path = bi.string(item, "filePath", f"{where}.filePath", required_=source == "httpUrl", max_len=1024)
        if path:
            out["filePath"] = relative_path(path, f"{where}.filePath")
        if prefix:
            out["blobPrefix"] = prefix
        mode = item.get("fileMode")
        if mode is not None and (not isinstance(mode, str) or not re.fullmatch(r"0?[0-7]{3}", mode)):
            raise bi.invalid(f"{where}.fileMode", mode, "An octal file mode such as '0755' is required.")
        if mode:
            out["fileMode"] = mode
        identity = bi.obj(item, "identityReference", f"{where}.identityReference")
        if identity:
            out["identityReference"] = {"resourceId": bi.string(identity, "resourceId",
                                                                f"{where}.identityReference.resourceId")}
        files.append(out)
    return files


def token_settings(body: dict, field: str = "authenticationTokenSettings") -> dict | None:
    """authenticationTokenSettings: the task gets AZ_BATCH_AUTHENTICATION_TOKEN, a token for
    its job's operations (task_tokens.py); `job` is the one access Azure offers."""
    settings = bi.obj(body, "authenticationTokenSettings", field)
    if settings is None:
        return None
    access = bi.array(settings, "access", f"{field}.access")
    if any(not isinstance(a, str) or a.lower() != "job" for a in access):
        raise bi.invalid(f"{field}.access", access, "Allowed values: job.")
    return {"access": [a.lower() for a in access]}


def relative_path(path: str, field: str) -> str:
    parts = path.replace("\\", "/").split("/")
    if path.startswith("/") or ".." in parts or "\x00" in path or not path.strip():
        raise bi.invalid(field, path, "The path must be relative and stay inside the task's working directory.")
    return path


def output_files(body: dict, field: str = "outputFiles") -> list[dict]:
    out = []
    for index, item in enumerate(bi.array(body, "outputFiles", field, max_items=100)):
        where = f"{field}[{index}]"
        if not isinstance(item, dict):
            raise bi.invalid(where, item, "An object is required.")
        pattern = bi.string(item, "filePattern", f"{where}.filePattern", required_=True, max_len=1024)
        no_nul(pattern, f"{where}.filePattern")
        destination = bi.obj(item, "destination", f"{where}.destination", required_=True)
        container = bi.obj(destination, "container", f"{where}.destination.container", required_=True)
        url = bi.string(container, "containerUrl", f"{where}.destination.container.containerUrl", required_=True,
                        max_len=8192)
        if not url.lower().startswith(("https://", "http://")):
            raise bi.invalid(f"{where}.destination.container.containerUrl", url, "An http or https URL is required: "
                             "a container SAS URL, or {account endpoint}/outputs/{container} for this service's "
                             "own output store.")
        wire: dict = {"containerUrl": url}
        if container.get("path") is not None:
            wire["path"] = relative_path(bi.string(container, "path", f"{where}.destination.container.path"),
                                         f"{where}.destination.container.path")
        identity = bi.obj(container, "identityReference", f"{where}.destination.container.identityReference")
        if identity:
            wire["identityReference"] = {"resourceId": bi.string(
                identity, "resourceId", f"{where}.destination.container.identityReference.resourceId")}
        headers = bi.name_value_pairs(container, "uploadHeaders", f"{where}.destination.container.uploadHeaders")
        if headers:
            wire["uploadHeaders"] = headers
        options = bi.obj(item, "uploadOptions", f"{where}.uploadOptions", required_=True)
        condition = bi.choice(options, "uploadCondition", ("tasksuccess", "taskfailure", "taskcompletion"),
                              f"{where}.uploadOptions.uploadCondition", default="taskcompletion")
        out.append({"filePattern": pattern, "destination": {"container": wire},
                    "uploadOptions": {"uploadCondition": condition}})
    return out


OUTPUT_CONTAINER = re.compile(r"/outputs/([a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])?)/?$")


def output_container(url: str, field: str) -> str:
    """The service's own destination for output files: `{account endpoint}/outputs/{container}`
    (read back with the file operations under that path)."""
    match = own_output_container(url)
    if match is None:
        raise bi.invalid(field, url, "This service's own output store is {account endpoint}/outputs/{container} "
                                     "(3-63 lower-case letters, digits, hyphens).")
    return match


def own_output_container(url: str) -> str | None:
    match = OUTPUT_CONTAINER.search(url.split("?", 1)[0]) if url.lower().startswith(("https://", "http://")) else None
    return match.group(1) if match else None


def depends_on(body: dict, uses_dependencies: bool) -> tuple[dict | None, list[str]]:
    """(wire dependsOn, every task id it names)."""
    deps = bi.obj(body, "dependsOn")
    if not deps:
        return None, []
    from ..errors import InvalidInput
    if not uses_dependencies:
        raise InvalidInput("TaskDependenciesNotSpecifiedOnJob", "The task has dependencies, but the job does not "
                           "have usesTaskDependencies set to true.",
                           details=[{"key": "PropertyName", "value": "dependsOn"}])
    ids = [entity_id(t, f"dependsOn.taskIds[{i}]") for i, t in enumerate(bi.array(deps, "taskIds", "dependsOn.taskIds"))]
    ranges = []
    for index, item in enumerate(bi.array(deps, "taskIdRanges", "dependsOn.taskIdRanges")):
        where = f"dependsOn.taskIdRanges[{index}]"
        if not isinstance(item, dict):
            raise bi.invalid(where, item, "An object with start and end is required.")
        start = bi.integer(item, "start", f"{where}.start", minimum=0)
        end = bi.integer(item, "end", f"{where}.end", minimum=0)
        if start is None or end is None:
            raise bi.missing(f"{where}.start" if start is None else f"{where}.end")
        if end < start:
            raise InvalidInput("TaskDependencyRangeInvalid", "The task dependency range is invalid: its end is less "
                               "than its start.", details=[{"key": "PropertyName", "value": where},
                                                          {"key": "Start", "value": str(start)},
                                                          {"key": "End", "value": str(end)}])
        if end - start + 1 > MAX_RANGE_TASKS:
            raise bi.invalid(where, f"{start}-{end}", f"A range may name at most {MAX_RANGE_TASKS} tasks.")
        ranges.append({"start": start, "end": end})
        ids.extend(str(n) for n in range(start, end + 1))
        if len(ids) > MAX_RANGE_TASKS:
            raise bi.invalid("dependsOn", len(ids), f"A task may depend on at most {MAX_RANGE_TASKS} tasks.")
    wire = {"taskIds": [t for t in bi.array(deps, "taskIds")], "taskIdRanges": ranges}
    return wire, list(dict.fromkeys(ids))


def exit_conditions(body: dict) -> dict | None:
    conditions = bi.obj(body, "exitConditions")
    if conditions is None:
        return None
    out: dict = {}
    codes = []
    for index, item in enumerate(bi.array(conditions, "exitCodes", "exitConditions.exitCodes")):
        where = f"exitConditions.exitCodes[{index}]"
        code = bi.integer(item if isinstance(item, dict) else {}, "code", f"{where}.code")
        if code is None:
            raise bi.missing(f"{where}.code")
        codes.append({"code": code, "exitOptions": _exit_options(item.get("exitOptions") or {}, where)})
    ranges = []
    for index, item in enumerate(bi.array(conditions, "exitCodeRanges", "exitConditions.exitCodeRanges")):
        where = f"exitConditions.exitCodeRanges[{index}]"
        item = item if isinstance(item, dict) else {}
        start, end = bi.integer(item, "start", f"{where}.start"), bi.integer(item, "end", f"{where}.end")
        if start is None or end is None or end < start:
            raise bi.invalid(where, item, "start and end are required, and end may not be less than start.")
        ranges.append({"start": start, "end": end, "exitOptions": _exit_options(item.get("exitOptions") or {},
                                                                                   where)})
    if codes:
        out["exitCodes"] = codes
    if ranges:
        out["exitCodeRanges"] = ranges
    for name in ("default", "preProcessingError", "fileUploadError"):
        if conditions.get(name) is not None:
            out[name] = _exit_options(conditions[name], f"exitConditions.{name}")
    return out


def _exit_options(options: dict, field: str) -> dict:
    if not isinstance(options, dict):
        raise bi.invalid(field, options, "An object is required.")
    return {
        "jobAction": bi.choice(options, "jobAction", ("none", "disable", "terminate"), f"{field}.jobAction",
                               default="none"),
        # unset: Azure satisfies dependents on exit code 0 and blocks them otherwise
        "dependencyAction": bi.choice(options, "dependencyAction", ("satisfy", "block"),
                                      f"{field}.dependencyAction"),
    }


def exit_options_for(conditions: dict | None, exit_code: int | None, pre_processing_error: bool,
                     file_upload_error: bool = False) -> dict:
    """Which exitOptions apply to how a task ended (Azure's order: exact code, range, default;
    an exit code listed in exitCodes or exitCodeRanges wins over a file upload error)."""
    conditions = conditions or {}
    failed = pre_processing_error or file_upload_error or exit_code != 0
    chosen = {"jobAction": "none", "dependencyAction": None}
    listed = exit_code is not None and (
        any(item["code"] == exit_code for item in conditions.get("exitCodes", []))
        or any(item["start"] <= exit_code <= item["end"] for item in conditions.get("exitCodeRanges", [])))
    if pre_processing_error:
        chosen = conditions.get("preProcessingError", conditions.get("default", chosen))
    elif file_upload_error and not listed:
        chosen = conditions.get("fileUploadError", conditions.get("default", chosen))
    elif exit_code is None:  # ended before it ran (terminated, or its files never came)
        chosen = conditions.get("default", chosen) if failed else chosen
    elif any(item["code"] == exit_code for item in conditions.get("exitCodes", [])):
        chosen = next(item["exitOptions"] for item in conditions["exitCodes"] if item["code"] == exit_code)
    elif any(item["start"] <= exit_code <= item["end"] for item in conditions.get("exitCodeRanges", [])):
        chosen = next(item["exitOptions"] for item in conditions["exitCodeRanges"]
                      if item["start"] <= exit_code <= item["end"])
    elif failed and "default" in conditions:
        chosen = conditions["default"]
    return {"jobAction": chosen.get("jobAction") or "none",
            "dependencyAction": chosen.get("dependencyAction") or ("block" if failed else "satisfy")}
