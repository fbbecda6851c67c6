"""Jobs and tasks through the real azure-batch client: tasks run on the nodes of a pool made
from a custom image, with Azure's states, environment, files, retries, timeouts,
dependencies, slots and scheduling policies."""

from __future__ import annotations

import datetime as dt

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from conftest import build_flow, pool_settled, wait_for
from test_batch_pools import base_pool, custom_pool, error_values

RG = "tasksimg"
POOL = "workers"


@pytest.fixture(scope="module")
def pool(clients):
    image = build_flow(clients, RG)["image"]
    clients.batch.create_pool(custom_pool(POOL, image.id, dedicated=2, taskSlotsPerNode=4, startTask={
        "commandLine": "/bin/sh -c 'echo prepared-by-$AZ_BATCH_NODE_ID > $AZ_BATCH_NODE_SHARED_DIR/marker'"}))
    pool_settled(clients.batch, POOL)
    return POOL


def read(batch, job: str, task: str, name: str = "stdout.txt", **kwargs) -> str:
    return b"".join(batch.download_task_file(job, task, name, **kwargs)).decode()


def finished(batch, job: str, task: str):
    return wait_for(lambda: (t := batch.get_task(job, task)).state == "completed" and t, what=f"task {task}")


def job_done(batch, job: str, count: int) -> None:
    wait_for(lambda: batch.get_job_task_counts(job).task_counts.completed == count, timeout=120,
             what=f"{count} tasks of {job}")


def test_task_runs_the_image_program_with_batch_environment(clients, pool):
    batch = clients.batch_key
    batch.create_job({"id": "env", "poolInfo": {"poolId": pool},
                      "commonEnvironmentSettings": [{"name": "COMMON", "value": "from-job"}]})
    batch.create_task("env", {"id": "t1", "environmentSettings": [{"name": "OWN", "value": "from-task"}],
                              "commandLine": "/opt/tool/run in-task && cat /datadisks/lun0/input.txt && "
                                             "echo $AZ_BATCH_TASK_ID $AZ_BATCH_JOB_ID $AZ_BATCH_POOL_ID && "
                                             "echo $COMMON $OWN && pwd && cat $AZ_BATCH_NODE_SHARED_DIR/marker && "
                                             "id -u && echo oops >&2"})
    task = finished(batch, "env", "t1")
    assert task.execution_info.exit_code == 0 and task.execution_info.result == "success"
    lines = read(batch, "env", "t1").splitlines()
    assert lines[:4] == ["tool-v1 in-task", "reference-data", f"t1 env {pool}", "from-job from-task"]
    assert lines[4] == "/mnt/batch/tasks/workitems/env/job-1/t1/wd"
    assert lines[5] == f"prepared-by-{task.node_info.node_id}"  # start task output, through the shared dir
    assert lines[6] != "0"  # not root unless asked
    assert read(batch, "env", "t1", "stderr.txt") == "oops\n"
    assert task.node_info.pool_id == pool and task.node_info.node_id
    admin = {"autoUser": {"scope": "task", "elevationLevel": "admin"}}
    batch.create_task("env", {"id": "admin", "commandLine": "id -u", "userIdentity": admin})
    finished(batch, "env", "admin")
    assert read(batch, "env", "admin").strip() == "0"


def test_a_task_scope_auto_user_is_the_task_s_own(clients, pool, web_files):
    """userIdentity.autoUser.scope task: Azure makes a user for the task. Each such task runs
    as a user no other task has, and its retries as the same one; another task may not change
    its files or signal its processes, nor move its directory (the job's directories stay
    root's, even when a task-scope command's files made them). Pool-scope tasks share
    `_azbatch`; admin is root in either scope. A job's preparation task of task scope has a
    user of its own too."""
    batch = clients.batch_key
    own = {"autoUser": {"scope": "task"}}
    who = "id -u; id -g; echo $AZ_BATCH_TASK_USER $AZ_BATCH_TASK_USER_IDENTITY $USER"
    fetched = [{"httpUrl": f"{web_files}/input.txt", "filePath": "input.txt"}]
    batch.create_job({"id": "users", "poolInfo": {"poolId": pool}, "jobPreparationTask": {
        "commandLine": f"/bin/sh -c '{who}'", "userIdentity": own, "resourceFiles": fetched}})
    shared = "$AZ_BATCH_NODE_SHARED_DIR"
    batch.create_task("users", {"id": "holder", "userIdentity": own, "resourceFiles": fetched, "commandLine":
                                f"/bin/sh -c 'echo mine > mine; echo $$ > {shared}/holder.pid; {who}; sleep 600'"})
    holder = wait_for(lambda: (t := batch.get_task("users", "holder")).state == "running" and t, what="the holder")
    wait_for(lambda: read(batch, "users", "holder").count("\n") == 3, what="the holder's start")
    near = {"affinityId": holder.node_info.affinity_id}  # its node has room: the hint is taken
    job_dir = "/mnt/batch/tasks/workitems/users/job-1"
    mine = f"{job_dir}/holder/wd/mine"
    batch.create_tasks("users", [
        {"id": "other", "userIdentity": own, "affinityInfo": near, "commandLine":
         f"/bin/sh -c '{who}; cat {mine}; {{ echo theirs >> {mine}; }} 2>&1; kill $(cat {shared}/holder.pid) 2>&1; "
         f"mv {job_dir}/holder {job_dir}/moved 2>&1; stat -c %u {job_dir} {job_dir}/holder'"},
        {"id": "again", "userIdentity": own, "constraints": {"maxTaskRetryCount": 1},
         "commandLine": "/bin/sh -c 'id -u; test -e tried || { touch tried; exit 1; }'"},
        {"id": "pooled", "commandLine": f"/bin/sh -c '{who}'"},
        {"id": "root", "userIdentity": {"autoUser": {"scope": "task", "elevationLevel": "admin"}},
         "commandLine": f"/bin/sh -c '{who}'"}])
    other = finished(batch, "users", "other")
    assert other.node_info.node_id == holder.node_info.node_id
    assert batch.get_task("users", "holder").state == "running"  # its kill was refused
    batch.terminate_task("users", "holder")
    lines = {t: read(batch, "users", t).splitlines() for t in ("holder", "other", "pooled", "root")}
    uids = {t: int(lines[t][0]) for t in lines}
    assert uids["holder"] >= 1_000_000 and uids["other"] >= 1_000_000 and uids["holder"] != uids["other"]
    assert lines["holder"][1:3] == ["10001", f"_azbatchtask_{uids['holder'] - 1_000_000} TaskNonAdmin "
                                             f"_azbatchtask_{uids['holder'] - 1_000_000}"]
    said = [line for line in lines["other"][3:] if line]  # (dash's kill ends its message with an empty line)
    assert said[0] == "mine" and "Permission denied" in said[1] and "Operation not permitted" in said[2]
    assert "Permission denied" in said[3] and said[4:] == ["0", str(uids["holder"])]
    assert lines["pooled"] == ["10001", "10001", "_azbatch PoolNonAdmin _azbatch"]
    assert lines["root"][:2] == ["0", "0"] and lines["root"][2].endswith(" TaskAdmin root")
    again = finished(batch, "users", "again")
    assert again.execution_info.retry_count == 1 and again.execution_info.exit_code == 0
    first, second = read(batch, "users", "again").split()
    assert first == second and int(first) >= 1_000_000 and int(first) not in uids.values()
    prep = b"".join(batch.download_node_file(pool, holder.node_info.node_id,
                                             "workitems/users/job-1/jobpreparation/stdout.txt")).decode().split("\n")
    assert int(prep[0]) >= 1_000_000 and int(prep[0]) not in set(uids.values()) | {int(first)}
    assert prep[2].endswith(" TaskNonAdmin " + prep[2].split()[0])


def test_a_lone_surrogate_in_a_body_is_refused_on_both_planes(clients, pool):
    """JSON's grammar allows a lone surrogate escape (\\udcff) and the json module reads it,
    but no UTF-8 response, file or command line can carry it: stored, every later read of
    the task failed with a 500. It is refused as the malformed body it is, on the Batch and
    the ARM plane, and nothing is stored."""
    batch = clients.batch_key
    batch.create_job({"id": "surrogate", "poolInfo": {"poolId": pool}})
    with pytest.raises(HttpResponseError) as refused:
        batch.create_task("surrogate", {"id": "odd", "commandLine": "printf 'x\udcffy'"})
    assert refused.value.status_code == 400 and refused.value.error.code == "InvalidRequestBody"
    assert "lone surrogate" in str(refused.value)
    assert [t.id for t in batch.list_tasks("surrogate")] == []
    batch.create_task("surrogate", {"id": "paired", "commandLine": "printf '\U0001F600'"})  # a pair is fine
    assert finished(batch, "surrogate", "paired").execution_info.exit_code == 0
    assert read(batch, "surrogate", "paired") == "\U0001F600"
    with pytest.raises(HttpResponseError) as arm_refused:
        clients.resource.resource_groups.create_or_update("surrogate-rg", {"location": clients.location,
                                                                           "tags": {"t": "\udcff"}})
    assert arm_refused.value.status_code == 400 and arm_refused.value.error.code == "InvalidRequestContent"


def test_a_plain_command_line_runs_its_program_without_a_shell(clients, pool):
    """Azure's node agent runs a command line without a shell. A line that is one plain
    program call (no quotes, variables, globs, redirections or separators) runs that
    program directly here too: `echo -e` is /usr/bin/echo's (the shell's builtin echo would
    print "-e plain"), and PWD is set as a shell sets it. A line with shell syntax runs
    through /bin/sh -c, and so does a plain line the kernel will not run as a program (a
    script without a #! line) or whose program is not on the PATH (the shell's message in
    stderr.txt, exit 127)."""
    batch = clients.batch_key
    script = "$AZ_BATCH_NODE_SHARED_DIR/no-hashbang"
    batch.create_job({"id": "plain", "poolInfo": {"poolId": pool}, "jobPreparationTask": {
        "commandLine": f"/bin/sh -c 'echo echo from-a-script > {script} && chmod 755 {script}'"}})
    lines = {"echo": "echo -e plain", "pwd": "printenv PWD", "false": "false", "args": "printf %s,%s, a=1 b",
             "script": "/mnt/batch/tasks/shared/no-hashbang", "missing": "no-such-program x", "shell": "exit 3"}
    batch.create_tasks("plain", [{"id": task_id, "commandLine": line} for task_id, line in lines.items()])
    done = {task_id: finished(batch, "plain", task_id).execution_info for task_id in lines}
    assert read(batch, "plain", "echo") == "plain\n"
    assert read(batch, "plain", "pwd") == "/mnt/batch/tasks/workitems/plain/job-1/pwd/wd\n"
    assert read(batch, "plain", "args") == "a=1,b,"
    assert done["false"].exit_code == 1 and done["echo"].exit_code == 0
    assert read(batch, "plain", "script") == "from-a-script\n"
    assert done["missing"].exit_code == 127 and "not found" in read(batch, "plain", "missing", "stderr.txt")
    assert done["shell"].exit_code == 3


def test_thousand_tasks_through_create_tasks(clients, pool):
    batch = clients.batch_key
    batch.create_job({"id": "many", "poolInfo": {"poolId": pool}})
    result = batch.create_tasks("many", [{"id": f"m{i}", "commandLine": f"echo out-{i}"} for i in range(1000)])
    assert len(result.result_values) == 1000 and all(r.status == "success" for r in result.result_values)
    # Set only now, as Azure advises: create_tasks adds them 100 at a time, and a job that
    # ends when all its tasks have may end between two of those requests, once the tasks
    # added so far have run (100 `echo`s on 8 slots take about as long as the SDK's turn).
    batch.update_job("many", {"onAllTasksComplete": "terminatejob"})
    wait_for(lambda: batch.get_job("many").state == "completed", timeout=120, what="the job to complete")
    counts = batch.get_job_task_counts("many").task_counts
    assert (counts.completed, counts.succeeded, counts.failed) == (1000, 1000, 0)
    for i in range(1000):
        assert read(batch, "many", f"m{i}") == f"out-{i}\n"
    assert batch.get_job("many").execution_info.termination_reason == "AllTasksComplete"
    states = {t.state for t in batch.list_tasks("many", filter="state eq 'completed'", select=["id", "state"])}
    assert states == {"completed"}
    # keyset pages of 7 in id order, each page continuing from the last id of the one before
    paged = [t.id for t in batch.list_tasks("many", max_results=7, filter="state eq 'Completed' and "
                                            "executionInfo/exitCode eq 0", select=["id"])]
    assert paged == sorted((f"m{i}" for i in range(1000)), key=str.lower)
    assert list(batch.list_tasks("many", filter="state eq 'active'", max_results=3)) == []
    odd = [t.id for t in batch.list_tasks("many", max_results=50, filter="startswith(id,'m99') or id eq 'm5'")]
    assert odd == ["m5", "m99"] + [f"m99{i}" for i in range(10)]
    nodes = list(batch.list_nodes(pool))
    assert sum(n.total_tasks_succeeded for n in nodes) >= 1000 and all(n.running_tasks_count == 0 for n in nodes)


def test_exit_codes_retries_and_failure_info(clients, pool):
    batch = clients.batch_key
    batch.create_job({"id": "fail", "poolInfo": {"poolId": pool}, "constraints": {"maxTaskRetryCount": 1}})
    batch.create_task("fail", {"id": "exit3", "commandLine": "echo try >> $AZ_BATCH_NODE_SHARED_DIR/fail-tries; "
                                                             "exit 3"})
    batch.create_task("fail", {"id": "twice", "commandLine": "exit 1", "constraints": {"maxTaskRetryCount": 2}})
    batch.create_task("fail", {"id": "never", "commandLine": "exit 1", "constraints": {"maxTaskRetryCount": 0}})
    task = finished(batch, "fail", "exit3")
    info = task.execution_info
    assert (info.exit_code, info.retry_count, info.result) == (3, 1, "failure")
    assert info.failure_info.code == "FailureExitCode" and info.failure_info.category == "usererror"
    assert finished(batch, "fail", "twice").execution_info.retry_count == 2
    assert finished(batch, "fail", "never").execution_info.retry_count == 0
    batch.reactivate_task("fail", "never")
    assert batch.get_task("fail", "never").state in ("active", "running", "completed")
    with pytest.raises(ResourceExistsError) as e:
        batch.create_task("fail", {"id": "exit3", "commandLine": "true"})
    assert e.value.error.code == "TaskExists"


def test_wall_clock_timeout_kills_the_task(clients, pool):
    batch = clients.batch_key
    batch.create_job({"id": "slow", "poolInfo": {"poolId": pool}})
    batch.create_task("slow", {"id": "sleeper", "commandLine": "sleep 30",
                               "constraints": {"maxWallClockTime": "PT1S", "maxTaskRetryCount": 3}})
    task = wait_for(lambda: (t := batch.get_task("slow", "sleeper")).state == "completed" and t, timeout=20,
                    what="the timeout")
    info = task.execution_info
    assert info.failure_info.code == "MaxWallClockTimeExpiry" and info.result == "failure"
    assert info.retry_count == 0  # a task past its wall clock is not retried


def test_dependencies_by_ids_and_ranges(clients, pool):
    batch = clients.batch_key
    batch.create_job({"id": "deps", "poolInfo": {"poolId": pool}, "usesTaskDependencies": True})
    tasks = [{"id": str(i), "commandLine": "sleep 0.2"} for i in range(1, 4)]
    tasks.append({"id": "after-range", "commandLine": "true", "dependsOn": {"taskIdRanges": [{"start": 1, "end": 3}]}})
    tasks.append({"id": "after-ids", "commandLine": "echo ok", "dependsOn": {"taskIds": ["after-range"]}})
    tasks.append({"id": "blocked", "commandLine": "echo never", "dependsOn": {"taskIds": ["bad"]}})
    tasks.append({"id": "bad", "commandLine": "exit 2"})
    batch.create_tasks("deps", tasks)
    finished(batch, "deps", "after-ids")
    after = batch.get_task("deps", "after-range").execution_info.start_time
    assert all(batch.get_task("deps", str(i)).execution_info.end_time <= after for i in range(1, 4))
    assert batch.get_task("deps", "after-ids").execution_info.start_time >= \
        batch.get_task("deps", "after-range").execution_info.end_time
    finished(batch, "deps", "bad")
    assert batch.get_task("deps", "blocked").state == "active"  # a failed dependency blocks, as in Azure


def test_slots_and_scheduling_policies(clients):
    batch = clients.batch_key
    batch.create_pool(base_pool(clients, "packed", dedicated=2, taskSlotsPerNode=2,
                                taskSchedulingPolicy={"nodeFillType": "pack"}))
    batch.create_pool(base_pool(clients, "spread", dedicated=2, taskSlotsPerNode=2,
                                taskSchedulingPolicy={"nodeFillType": "spread"}))
    pool_settled(batch, "packed")
    pool_settled(batch, "spread")
    for name in ("packed", "spread"):
        batch.create_job({"id": f"j-{name}", "poolInfo": {"poolId": name}})
        batch.create_tasks(f"j-{name}", [{"id": f"s{i}", "commandLine": "sleep 1"} for i in range(2)])
        batch.create_task(f"j-{name}", {"id": "wide", "commandLine": "true", "requiredSlots": 2})
    for name in ("packed", "spread"):
        job_done(batch, f"j-{name}", 3)
    packed = {batch.get_task("j-packed", f"s{i}").node_info.node_id for i in range(2)}
    spread = {batch.get_task("j-spread", f"s{i}").node_info.node_id for i in range(2)}
    assert len(packed) == 1 and len(spread) == 2
    with pytest.raises(HttpResponseError) as e:
        batch.create_task("j-packed", {"id": "too-wide", "commandLine": "true", "requiredSlots": 0})
    assert e.value.status_code == 400
    for name in ("packed", "spread"):
        batch.begin_delete_job(f"j-{name}", polling_interval=0.1).result()
        batch.begin_delete_pool(name, polling_interval=0.1).result()


def test_task_files(clients, pool):
    batch = clients.batch_key
    batch.create_job({"id": "files", "poolInfo": {"poolId": pool}})
    batch.create_task("files", {"id": "writer", "commandLine": "mkdir -p 'out dir' && printf 0123456789 > "
                                                              "'out dir/result.txt' && echo done"})
    finished(batch, "files", "writer")
    names = {f.name: f for f in batch.list_task_files("files", "writer", recursive=True)}
    assert {"stdout.txt", "stderr.txt", "wd/out dir/result.txt"} <= set(names)
    assert not names["wd/out dir/result.txt"].is_directory
    assert read(batch, "files", "writer", "wd/out dir/result.txt", ocp_range="bytes=2-5") == "2345"
    props = batch.get_task_file_properties("files", "writer", "wd/out dir/result.txt")
    assert props.content_length == 10 and props.is_directory is False
    with pytest.raises(HttpResponseError) as e:
        read(batch, "files", "writer", "../../../../../../etc/passwd")
    assert e.value.status_code in (400, 403, 404)
    with pytest.raises(ResourceNotFoundError):
        read(batch, "files", "writer", "missing.txt")
    batch.delete_task_file("files", "writer", "wd/out dir/result.txt")
    assert "wd/out dir/result.txt" not in {f.name for f in batch.list_task_files("files", "writer", recursive=True)}


def test_terminate_and_delete_jobs_and_tasks(clients, pool):
    batch = clients.batch_key
    batch.create_job({"id": "stop", "poolInfo": {"poolId": pool}})
    batch.create_task("stop", {"id": "long", "commandLine": "sleep 60"})
    wait_for(lambda: batch.get_task("stop", "long").state == "running", what="the task to run")
    batch.terminate_task("stop", "long")
    task = finished(batch, "stop", "long")
    assert task.execution_info.failure_info.code == "TaskEnded"
    batch.create_task("stop", {"id": "long2", "commandLine": "sleep 60"})
    wait_for(lambda: batch.get_task("stop", "long2").state == "running", what="the task to run")
    batch.begin_terminate_job("stop", {"terminateReason": "enough"}, polling_interval=0.1).result()
    job = batch.get_job("stop")
    assert job.state == "completed" and job.execution_info.termination_reason == "enough"
    assert batch.get_task("stop", "long2").state == "completed"
    with pytest.raises(ResourceExistsError) as e:
        batch.create_task("stop", {"id": "late", "commandLine": "true"})
    assert e.value.error.code == "JobCompleted"
    batch.delete_task("stop", "long")
    with pytest.raises(ResourceNotFoundError):
        batch.get_task("stop", "long")
    batch.begin_delete_job("stop", polling_interval=0.1).result()
    with pytest.raises(ResourceNotFoundError) as e:
        batch.get_job("stop")
    assert e.value.error.code == "JobNotFound"


def test_bad_task_input(clients, pool):
    batch = clients.batch_key
    with pytest.raises(ResourceNotFoundError) as e:
        batch.create_task("no-such-job", {"id": "t", "commandLine": "true"})
    assert e.value.error.code == "JobNotFound"
    batch.create_job({"id": "bad", "poolInfo": {"poolId": pool}})
    with pytest.raises(ResourceExistsError) as e:
        batch.create_job({"id": "bad", "poolInfo": {"poolId": pool}})
    assert e.value.error.code == "JobExists"
    with pytest.raises(HttpResponseError) as e:
        batch.create_task("bad", {"id": "d", "commandLine": "true", "dependsOn": {"taskIds": ["x"]}})
    assert e.value.status_code == 400 and e.value.error.code == "TaskDependenciesNotSpecifiedOnJob"
    batch.create_job({"id": "bad-deps", "poolInfo": {"poolId": pool}, "usesTaskDependencies": True})
    with pytest.raises(HttpResponseError) as e:
        batch.create_task("bad-deps", {"id": "r", "commandLine": "true",
                                       "dependsOn": {"taskIdRanges": [{"start": 5, "end": 2}]}})
    assert e.value.status_code == 400 and e.value.error.code == "TaskDependencyRangeInvalid"
    with pytest.raises(HttpResponseError) as e:
        batch.create_task_collection("bad", {"value": [{"id": f"c{i}", "commandLine": "true"} for i in range(101)]})
    assert e.value.status_code == 400 and error_values(e)["PropertyName"] == "value"
    results = batch.create_task_collection("bad", {"value": [{"id": "ok", "commandLine": "true"},
                                                             {"id": "bad id!", "commandLine": "true"},
                                                             {"id": "ok", "commandLine": "true"}]})
    statuses = [(r.task_id, r.status) for r in results.result_values]
    assert statuses == [("ok", "success"), ("bad id!", "clienterror"), ("ok", "clienterror")]
    assert results.result_values[2].error.code == "TaskExists"
    with pytest.raises(HttpResponseError) as e:
        batch.create_task("bad", {"id": "no-command"})
    assert e.value.error.code == "MissingRequiredProperty"
    with pytest.raises(HttpResponseError) as e:
        batch.create_task("bad", {"id": "t", "commandLine": "true", "constraints": {"maxWallClockTime": "soon"}})
    assert e.value.error.code == "InvalidPropertyValue"


def test_job_preparation_and_release_tasks(clients, pool):
    batch = clients.batch_key
    marker = "$AZ_BATCH_NODE_SHARED_DIR/prep-$AZ_BATCH_JOB_ID"
    batch.create_job({"id": "prepped", "poolInfo": {"poolId": pool},
                      "jobPreparationTask": {"commandLine": f"echo prepared > {marker}"},
                      "jobReleaseTask": {"commandLine": f"rm {marker}", "maxWallClockTime": "PT5M"}})
    release_spec = batch.get_job("prepped").job_release_task  # Azure's shape: no constraints, its own limits
    assert (release_spec.max_wall_clock_time, release_spec.retention_time) == (dt.timedelta(minutes=5),
                                                                              dt.timedelta(days=7))
    for too_long in ("PT16M", "P10675199DT2H48M5.4775807S"):  # the second, TimeSpan.MaxValue, was a 500
        with pytest.raises(HttpResponseError) as e:
            batch.create_job({"id": "slow-release", "poolInfo": {"poolId": pool}, "jobPreparationTask": {
                "commandLine": "true"}, "jobReleaseTask": {"commandLine": "true", "maxWallClockTime": too_long}})
        assert e.value.error.code == "InvalidPropertyValue"
    batch.create_task("prepped", {"id": "uses", "commandLine": f"cat {marker}"})
    task = finished(batch, "prepped", "uses")
    assert read(batch, "prepped", "uses") == "prepared\n"
    statuses = list(batch.list_job_preparation_and_release_task_status("prepped"))
    node_ids = [s.node_id for s in statuses]
    assert task.node_info.node_id in node_ids
    prep = next(s for s in statuses if s.node_id == task.node_info.node_id).job_preparation_task_execution_info
    assert prep.exit_code == 0 and prep.state == "completed"
    batch.begin_terminate_job("prepped", {"terminateReason": "done"}, polling_interval=0.1).result()
    statuses = list(batch.list_job_preparation_and_release_task_status("prepped"))
    release = next(s for s in statuses if s.node_id == task.node_info.node_id).job_release_task_execution_info
    assert release.exit_code == 0 and release.state == "completed"
    with pytest.raises(ResourceNotFoundError):  # the release task removed what the preparation made
        b"".join(batch.download_node_file(pool, task.node_info.node_id, "shared/prep-prepped"))
    batch.create_job({"id": "bad-prep", "poolInfo": {"poolId": pool},
                      "jobPreparationTask": {"commandLine": "exit 4"}})
    batch.create_task("bad-prep", {"id": "waits", "commandLine": "true"})
    wait_for(lambda: all(s.job_preparation_task_execution_info.state == "completed"
                         for s in batch.list_job_preparation_and_release_task_status("bad-prep")) and
             len(list(batch.list_job_preparation_and_release_task_status("bad-prep"))) == 2, what="preparations")
    assert batch.get_task("bad-prep", "waits").state == "active"  # never runs where preparation failed


def test_priority_parallelism_exit_conditions_and_retention(clients):
    batch = clients.batch_key
    batch.create_pool(base_pool(clients, "single", dedicated=1, taskSlotsPerNode=2))
    pool_settled(batch, "single")
    batch.create_job({"id": "blocker", "poolInfo": {"poolId": "single"}})
    batch.create_tasks("blocker", [{"id": f"b{i}", "commandLine": "sleep 1"} for i in range(2)])
    wait_for(lambda: batch.get_job_task_counts("blocker").task_counts.running == 2, what="the blockers")
    batch.create_job({"id": "low", "poolInfo": {"poolId": "single"}, "priority": 0})
    batch.create_tasks("low", [{"id": f"l{i}", "commandLine": "true"} for i in range(2)])
    batch.create_job({"id": "high", "poolInfo": {"poolId": "single"}, "priority": 500, "maxParallelTasks": 1})
    batch.create_tasks("high", [{"id": f"h{i}", "commandLine": "sleep 0.3"} for i in range(3)])
    job_done(batch, "high", 3)
    job_done(batch, "low", 2)
    high = sorted((batch.get_task("high", f"h{i}").execution_info for i in range(3)), key=lambda e: e.start_time)
    low_start = min(batch.get_task("low", f"l{i}").execution_info.start_time for i in range(2))
    assert high[0].start_time <= low_start  # the higher priority job got the first free slot
    assert all(a.end_time <= b.start_time for a, b in zip(high, high[1:]))  # maxParallelTasks 1: one at a time

    batch.create_job({"id": "exits", "poolInfo": {"poolId": "single"}, "usesTaskDependencies": True,
                      "onTaskFailure": "performexitoptionsjobaction"})
    batch.create_task("exits", {"id": "soft", "commandLine": "exit 5", "exitConditions": {
        "exitCodes": [{"code": 5, "exitOptions": {"dependencyAction": "satisfy"}}]}})
    batch.create_task("exits", {"id": "after-soft", "commandLine": "true", "dependsOn": {"taskIds": ["soft"]},
                                "constraints": {"retentionTime": "PT1S"}})
    assert finished(batch, "exits", "after-soft").execution_info.result == "success"
    wait_for(lambda: not _task_files(batch, "exits", "after-soft"), timeout=10, what="retention to remove files")
    batch.create_task("exits", {"id": "fatal", "commandLine": "exit 7", "exitConditions": {
        "exitCodeRanges": [{"start": 6, "end": 8, "exitOptions": {"jobAction": "terminate"}}]}})
    wait_for(lambda: batch.get_job("exits").state == "completed", what="the job action")
    assert batch.get_job("exits").execution_info.termination_reason == "TaskFailed"
    for job in ("blocker", "low", "high", "exits"):
        batch.begin_delete_job(job, polling_interval=0.1).result()
    batch.begin_delete_pool("single", polling_interval=0.1).result()


def _task_files(batch, job: str, task: str) -> list[str]:
    try:
        return [f.name for f in batch.list_task_files(job, task, recursive=True)]
    except HttpResponseError:
        return []


def test_leaving_and_rebooting_nodes_requeue_their_tasks(clients):
    batch = clients.batch_key
    batch.create_pool(base_pool(clients, "shrinking", dedicated=2))
    pool_settled(batch, "shrinking")
    batch.create_job({"id": "moving", "poolInfo": {"poolId": "shrinking"}})
    batch.create_tasks("moving", [{"id": f"r{i}", "commandLine": "sleep 2; echo finished"} for i in range(2)])
    wait_for(lambda: batch.get_job_task_counts("moving").task_counts.running == 2, what="both tasks to run")
    batch.begin_resize_pool("shrinking", {"targetDedicatedNodes": 1, "nodeDeallocationOption": "requeue"},
                            polling_interval=0.1).result()
    job_done(batch, "moving", 2)
    tasks = list(batch.list_tasks("moving"))
    assert all(t.execution_info.result == "success" for t in tasks)
    assert sorted(t.execution_info.requeue_count for t in tasks) == [0, 1]
    node = next(iter(batch.list_nodes("shrinking")))
    batch.create_task("moving", {"id": "rebooted", "commandLine": "sleep 2; echo finished"})
    wait_for(lambda: batch.get_task("moving", "rebooted").state == "running", what="the task to run")
    batch.begin_reboot_node("shrinking", node.id, {"nodeRebootOption": "requeue"}, polling_interval=0.1).result()
    task = finished(batch, "moving", "rebooted")
    assert task.execution_info.requeue_count == 1 and task.execution_info.result == "success"
    batch.create_task("moving", {"id": "waited-for", "commandLine": "sleep 1; echo finished"})
    wait_for(lambda: batch.get_task("moving", "waited-for").state == "running", what="the task to run")
    batch.begin_resize_pool("shrinking", {"targetDedicatedNodes": 0, "nodeDeallocationOption": "taskcompletion"},
                            polling_interval=0.1).result()
    task = batch.get_task("moving", "waited-for")
    assert task.state == "completed" and task.execution_info.requeue_count == 0
    batch.begin_delete_job("moving", polling_interval=0.1).result()
    batch.begin_delete_pool("shrinking", polling_interval=0.1).result()


@pytest.fixture(scope="module")
def web_files(tmp_path_factory):
    """A plain HTTP server on loopback holding files for resourceFiles."""
    import functools
    import http.server
    import threading
    root = tmp_path_factory.mktemp("web")
    (root / "input.txt").write_text("downloaded-input\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_resource_files_and_output_files(clients, pool, web_files):
    batch = clients.batch_key
    outputs = f"{clients.info['batch_endpoint']}/outputs/results"
    batch.create_job({"id": "io", "poolInfo": {"poolId": pool}})
    batch.create_task("io", {
        "id": "convert", "commandLine": "tr a-z A-Z < in/input.txt > result.txt",
        "resourceFiles": [{"httpUrl": f"{web_files}/input.txt", "filePath": "in/input.txt"}],
        "outputFiles": [{"filePattern": "result.txt", "destination": {"container": {"containerUrl": outputs,
                                                                                    "path": "convert/out.txt"}},
                         "uploadOptions": {"uploadCondition": "tasksuccess"}},
                        {"filePattern": "../std*.txt", "destination": {"container": {"containerUrl": outputs,
                                                                                     "path": "logs"}},
                         "uploadOptions": {"uploadCondition": "taskcompletion"}}]})
    assert finished(batch, "io", "convert").execution_info.result == "success"
    assert read(batch, "io", "convert", "wd/result.txt") == "DOWNLOADED-INPUT\n"
    from azure.core.rest import HttpRequest as request
    listed = batch.send_request(request("GET", "/outputs/results/files", params={"api-version": "2025-06-01",
                                                                                  "recursive": "true"})).json()
    assert {"convert/out.txt", "logs/stdout.txt", "logs/stderr.txt"} <= {f["name"] for f in listed["value"]}
    content = batch.send_request(request("GET", "/outputs/results/files/convert%2Fout.txt",
                                         params={"api-version": "2025-06-01"}), stream=True)
    assert content.read() == b"DOWNLOADED-INPUT\n"
    batch.create_task("io", {"id": "missing-input", "commandLine": "true",
                             "resourceFiles": [{"httpUrl": f"{web_files}/nope.txt", "filePath": "nope.txt"}]})
    task = finished(batch, "io", "missing-input")
    assert task.execution_info.failure_info.code == "BlobNotFound"  # Azure's code for a 404
    assert {d.name: d.value for d in task.execution_info.failure_info.details}["HttpStatusCode"] == "404"
    with pytest.raises(HttpResponseError) as e:
        batch.create_task("io", {"id": "escape", "commandLine": "true",
                                 "resourceFiles": [{"httpUrl": f"{web_files}/input.txt", "filePath": "../../x"}]})
    assert e.value.error.code == "InvalidPropertyValue"
    with pytest.raises(HttpResponseError) as e:
        batch.create_task("io", {"id": "elsewhere", "commandLine": "true", "outputFiles": [{
            "filePattern": "*", "destination": {"container": {"containerUrl": "ftp://acct.example/c"}},
            "uploadOptions": {"uploadCondition": "taskcompletion"}}]})
    assert e.value.error.code == "InvalidPropertyValue"
    assert list(batch.list_subtasks("io", "convert")) == []


def test_oversized_collections_are_refused_and_create_tasks_splits_them(clients, pool):
    batch = clients.batch_key
    batch.create_job({"id": "big", "poolInfo": {"poolId": pool}})
    bulky = [{"id": f"b{i}", "commandLine": "true", "environmentSettings": [{"name": "PAD", "value": "x" * 12000}]}
             for i in range(100)]
    with pytest.raises(HttpResponseError) as e:
        batch.create_task_collection("big", {"value": bulky})
    assert e.value.status_code == 413 and e.value.error.code == "RequestBodyTooLarge"
    result = batch.create_tasks("big", bulky)  # the SDK halves the chunk on RequestBodyTooLarge
    assert len(result.result_values) == 100 and {r.status for r in result.result_values} == {"success"}
    job_done(batch, "big", 100)


def test_disable_enable_update_and_job_wall_clock(clients, pool):
    batch = clients.batch_key
    batch.create_job({"id": "paused", "poolInfo": {"poolId": pool}, "priority": 10,
                      "metadata": [{"name": "team", "value": "a"}]})
    batch.create_task("paused", {"id": "cut", "commandLine": "sleep 30"})
    wait_for(lambda: batch.get_task("paused", "cut").state == "running", what="the task to run")
    batch.begin_disable_job("paused", {"disableTasks": "requeue"}, polling_interval=0.1).result()
    assert batch.get_job("paused").state == "disabled"
    task = batch.get_task("paused", "cut")
    assert task.state == "active" and task.execution_info.requeue_count == 1
    batch.create_task("paused", {"id": "queued", "commandLine": "echo later"})
    assert batch.get_task("paused", "queued").state == "active"  # a disabled job runs nothing
    batch.update_job("paused", {"priority": 100, "metadata": [{"name": "team", "value": "b"}]})
    job = batch.get_job("paused")
    assert job.priority == 100 and job.metadata[0].value == "b" and job.previous_state == "disabling"
    batch.replace_task("paused", "cut", {"constraints": {"maxWallClockTime": "PT1S", "maxTaskRetryCount": 0}})
    assert batch.get_task("paused", "cut").constraints.max_task_retry_count == 0
    batch.begin_enable_job("paused", polling_interval=0.1).result()
    assert finished(batch, "paused", "queued").execution_info.result == "success"
    assert finished(batch, "paused", "cut").execution_info.failure_info.code == "MaxWallClockTimeExpiry"
    batch.create_job({"id": "timeboxed", "poolInfo": {"poolId": pool}, "constraints": {"maxWallClockTime": "PT1S"}})
    batch.create_task("timeboxed", {"id": "long", "commandLine": "sleep 30"})
    wait_for(lambda: batch.get_job("timeboxed").state == "completed", timeout=20, what="the job's wall clock")
    assert batch.get_job("timeboxed").execution_info.termination_reason == "MaxWallClockTimeExpiry"
    assert batch.get_task("timeboxed", "long").state == "completed"
    batch.create_job({"id": "replaced", "poolInfo": {"poolId": pool}, "priority": 5})
    batch.replace_job("replaced", batch.get_job("replaced"))  # the unchanged poolInfo comes back: Azure accepts it
    assert batch.get_job("replaced").priority == 5
    with pytest.raises(ResourceExistsError) as e:  # a new pool only while the job is disabled
        batch.replace_job("replaced", {"poolInfo": {"poolId": "elsewhere"}})
    assert e.value.error.code == "JobNotDisabled"


def test_links_left_by_tasks_never_steer_the_service(clients, pool, web_files, tmp_path):
    batch = clients.batch_key
    canary = tmp_path / "canary.txt"
    canary.write_text("untouched\n")
    batch.create_job({"id": "links", "poolInfo": {"poolId": pool}})
    # first attempt: replace the downloaded file with a link to a host file, and fail
    batch.create_task("links", {
        "id": "swap", "constraints": {"maxTaskRetryCount": 1},
        "resourceFiles": [{"httpUrl": f"{web_files}/input.txt", "filePath": "x.txt"}],
        "commandLine": f"if [ -L x.txt ]; then exit 0; fi; rm x.txt; ln -s {canary} x.txt; exit 1"})
    task = finished(batch, "links", "swap")
    assert canary.read_text() == "untouched\n"
    assert task.execution_info.failure_info.code == "ResourceFileCreateFailed"  # the link is not followed
    # an admin task replaces its node's Batch root with a link to the host's /
    admin = {"autoUser": {"scope": "task", "elevationLevel": "admin"}}
    batch.create_task("links", {"id": "root-swap", "userIdentity": admin, "commandLine":
                                "mv $AZ_BATCH_NODE_ROOT_DIR/shared $AZ_BATCH_NODE_ROOT_DIR/shared.real && "
                                "ln -s / $AZ_BATCH_NODE_ROOT_DIR/shared && "
                                "echo 0 > /proc/sys/kernel/core_uses_pid; echo proc-exit=$?"})
    task = finished(batch, "links", "root-swap")
    node = task.node_info.node_id
    with pytest.raises(HttpResponseError) as e:
        batch.get_node_file_properties(pool, node, "shared/etc/hostname")
    assert e.value.status_code == 403
    names = [f.name for f in batch.list_node_files(pool, node, recursive=True)]
    assert not any(name.startswith("shared/") for name in names)  # the link is not followed
    assert "proc-exit=0" not in read(batch, "links", "root-swap")  # /proc/sys is read-only in a machine
    batch.create_task("links", {"id": "fix", "userIdentity": admin, "commandLine":
                                "rm $AZ_BATCH_NODE_ROOT_DIR/shared && "
                                "mv $AZ_BATCH_NODE_ROOT_DIR/shared.real $AZ_BATCH_NODE_ROOT_DIR/shared"})
    finished(batch, "links", "fix")


def test_a_job_directory_a_task_moved_or_replaced_with_a_link_is_walked_to_again(clients, pool):
    """A node's agent keeps a job's directory open between the job's tasks (the launcher's
    KeptDirs), and lends it to the next task only while its path still names it. After a
    task moves the job's directory away, the next task gets a new one where the service
    reads it; after a task replaces it with a link, the next task does not start, and
    nothing is made through the link."""
    batch = clients.batch_key
    admin = {"autoUser": {"scope": "task", "elevationLevel": "admin"}}
    jobs = "$(dirname $(dirname $AZ_BATCH_TASK_DIR))"  # .../workitems/<job>, which holds job-1
    nodes = sorted(n.id for n in batch.list_nodes(pool))
    batch.disable_node_scheduling(pool, nodes[1], {"nodeDisableSchedulingOption": "taskcompletion"})

    def run(job: str, task_id: str, command: str, **task):
        batch.create_task(job, {"id": task_id, "commandLine": f"/bin/sh -c '{command}'", **task})
        done = finished(batch, job, task_id)
        assert done.node_info.node_id == nodes[0]
        return done

    try:
        batch.create_job({"id": "kept", "poolInfo": {"poolId": pool}})
        batch.create_job({"id": "kept-look", "poolInfo": {"poolId": pool}})
        assert run("kept", "first", "echo first").execution_info.exit_code == 0
        run("kept", "move", f"mv {jobs}/job-1 {jobs}/job-1.moved", userIdentity=admin)
        assert run("kept", "after-move", "echo after-move").execution_info.exit_code == 0
        assert read(batch, "kept", "after-move") == "after-move\n"

        run("kept", "link", f"mkdir /tmp/elsewhere && mv {jobs}/job-1 {jobs}/job-1.real && "
                            f"ln -s /tmp/elsewhere {jobs}/job-1", userIdentity=admin)
        assert run("kept", "after-link", "echo after-link").execution_info.exit_code == 126
        run("kept-look", "look", "ls -A /tmp/elsewhere; w=/mnt/batch/tasks/workitems/kept; "
                                        "rm $w/job-1 && mv $w/job-1.real $w/job-1 && echo restored", userIdentity=admin)
        assert read(batch, "kept-look", "look") == "restored\n"  # /tmp/elsewhere is empty
        assert run("kept", "after-restore", "echo after-restore").execution_info.exit_code == 0
    finally:
        batch.enable_node_scheduling(pool, nodes[1])


def test_a_fifo_a_task_left_in_its_directory_never_holds_up_its_node(clients, pool, web_files):
    """A node's agent opens a task's stdout.txt and stderr.txt for each attempt, and a
    task owns its directory: one that replaced its stdout.txt with a FIFO before failing
    must not stop the agent at its retry (opening a FIFO to write waits for a reader,
    forever here). The retry does not start, as when its directory is replaced with a link
    (exit code 126), and the node goes on running tasks. The same for the service's own
    writes there: a FIFO where a retry's resource file goes fails that file."""
    batch = clients.batch_key
    nodes = sorted(n.id for n in batch.list_nodes(pool))
    batch.disable_node_scheduling(pool, nodes[1], {"nodeDisableSchedulingOption": "taskcompletion"})
    try:
        batch.create_job({"id": "fifo", "poolInfo": {"poolId": pool}})
        batch.create_task("fifo", {"id": "swap", "constraints": {"maxTaskRetryCount": 1}, "commandLine":
                                   "/bin/sh -c 'rm $AZ_BATCH_TASK_DIR/stdout.txt && "
                                   "mkfifo $AZ_BATCH_TASK_DIR/stdout.txt && exit 1; exit 2'"})
        # and one a process the task left holds open (so opening it does not fail)
        batch.create_task("fifo", {"id": "held", "constraints": {"maxTaskRetryCount": 1}, "commandLine":
                                   "/bin/sh -c 'F=$AZ_BATCH_TASK_DIR/stdout.txt; rm $F && mkfifo $F && "
                                   "(setsid sleep 20 3<>$F >/dev/null 2>&1 &) && exit 1; exit 2'"})
        for task_id in ("swap", "held"):
            task = finished(batch, "fifo", task_id)
            assert (task.execution_info.retry_count, task.execution_info.exit_code) == (1, 126), task_id
            assert task.node_info.node_id == nodes[0]
        # the service's own writes into a task's directory: its resource files, as root
        batch.create_task("fifo", {
            "id": "input", "constraints": {"maxTaskRetryCount": 1},
            "resourceFiles": [{"httpUrl": f"{web_files}/input.txt", "filePath": "x.txt"}],
            "commandLine": "/bin/sh -c 'rm x.txt && mkfifo x.txt && exit 1; exit 2'"})
        task = finished(batch, "fifo", "input")
        assert task.execution_info.retry_count == 1
        assert task.execution_info.failure_info.code == "ResourceFileCreateFailed"
        batch.create_task("fifo", {"id": "after", "commandLine": "echo after"})
        after = finished(batch, "fifo", "after")
        assert after.node_info.node_id == nodes[0]
        assert (after.execution_info.exit_code, read(batch, "fifo", "after")) == (0, "after\n")
    finally:
        batch.enable_node_scheduling(pool, nodes[1])


@pytest.mark.parametrize("task, field", [
    ({"id": "nul", "commandLine": "echo \u0000"}, "task.commandLine"),
    ({"id": "eq", "commandLine": "true", "environmentSettings": [{"name": "A=B", "value": "1"}]},
     "task.environmentSettings[0].name"),
    ({"id": "mode", "commandLine": "true",
      "resourceFiles": [{"httpUrl": "http://127.0.0.1/x", "filePath": "x", "fileMode": 755}]},
     "task.resourceFiles[0].fileMode"),
])
def test_unrunnable_task_input_is_refused(clients, pool, task, field):
    batch = clients.batch_key
    if not any(j.id == "refusals" for j in batch.list_jobs()):
        batch.create_job({"id": "refusals", "poolInfo": {"poolId": pool}})
    with pytest.raises(HttpResponseError) as e:
        batch.create_task("refusals", task)
    assert e.value.status_code == 400 and error_values(e)["PropertyName"] == field


def test_preparation_and_release_tasks_end_at_their_max_wall_clock_time(clients, pool):
    """A job preparation task's constraints.maxWallClockTime and a release task's own
    maxWallClockTime (15 minutes at most and by default) end them as a task's ends it: killed,
    MaxWallClockTimeExpiry, not retried; the job moves on (a release task past its time no
    longer keeps its job terminating)."""
    batch = clients.batch_key
    batch.create_job({"id": "slow-sides", "poolInfo": {"poolId": pool},
                      "jobPreparationTask": {"commandLine": "sleep 600", "waitForSuccess": False,
                                             "constraints": {"maxWallClockTime": "PT2S", "maxTaskRetryCount": 3}},
                      "jobReleaseTask": {"commandLine": "sleep 600", "maxWallClockTime": "PT2S"}})
    batch.create_task("slow-sides", {"id": "t", "commandLine": "true"})
    node_id = finished(batch, "slow-sides", "t").node_info.node_id

    def side(kind: str):
        status = next(s for s in batch.list_job_preparation_and_release_task_status("slow-sides")
                      if s.node_id == node_id)
        info = getattr(status, f"job_{kind}_task_execution_info")
        return info if info is not None and info.state == "completed" else None

    prep = wait_for(lambda: side("preparation"), timeout=60, what="the preparation task to time out")
    assert (prep.result, prep.failure_info.code, prep.retry_count) == ("failure", "MaxWallClockTimeExpiry", 0)
    batch.begin_terminate_job("slow-sides", {"terminateReason": "done"}, polling_interval=0.1).result(timeout=60)
    release = side("release")
    assert (release.result, release.failure_info.code) == ("failure", "MaxWallClockTimeExpiry")
    assert batch.get_job("slow-sides").state == "completed"
