"""Task benchmarks against a live server, through the real azure-batch client, with Slurm on
the same machine as the peer. Prints its figures.

- end to end: 10,000 trivial tasks (`true`, each a real process on a node) submitted with
  `create_tasks` (collections of 100) to a 4-node pool of 16 slots a node, until all are
  completed, as tasks per second (target: at least 500)
- the same under load: 16 clients (each its own process and SDK client) listing the job's
  first page of 100 tasks again and again for the whole run, each asking its next page as
  soon as it has this one; the ratio to idle (target: at least 0.8) and the requests per
  second they were served. Twice: as clients on other machines would be, in a cgroup of
  idle CPU weight (`cpu.idle`, which takes only CPU nothing else wants), sending the
  request list_tasks sends through the SDK's pipeline and parsing the page, but leaving
  the SDK's models (about 14 ms of CPU a page) to the machine they stand for; and through
  list_tasks itself at normal priority, sharing the two cores, models and all. And a control:
  the same clients listing a second Batchyard (in the same idle cgroup) while the first
  runs the tasks, which says how much of the loss under load is the clients' own rather
  than the service's. (Why a cgroup: on this kernel, 16 processes that only burn CPU at
  SCHED_IDLE still cost the tasks about 35% of their throughput, in an idle cgroup 6%.)
- the CPU each task costs: its own process, the machine's agent, the service; and with each run,
  how busy the machine's CPUs were (near 100%: the run was bound by CPU)
- the same with 4 slots a node instead of 16 (16 concurrent tasks): the ratio (target: at
  least 0.8, so a slot freed by an exit is refilled at once, not at a later pass)
- Ray's throughput for the same 10,000 subprocess tasks (`ray[default]`, installed with
  the bench extra, on this machine with its default CPUs), idle and under the same 16
  listing clients (in the same idle cgroup, each listing 100 tasks through Ray's state API,
  which Ray's dashboard serves), and the ratios idle and under load, each system under its
  own clients (target: Batchyard at least 1.5x Ray); and, stricter, Batchyard under load
  against Ray idle
- dependency latency: a chain of tasks each depending on the one before; the time from a
  task's end to the start of the next, median and worst (target: under 50 ms)
- the same 10,000-job workload through Slurm (Debian's slurm-wlm, single host, set up by
  ../shared/peers/slurm-bench.sh), and the ratio (target: faster than Slurm)

Before the first run it checks that a new file costs what it does on a settled disk, and
when not (anything deleted many files in the last minutes, on an ext4 without a journal),
waits about 6 minutes: see disk_settle.py. It prints what it found.

Usage: bench/task_bench.py [--tasks 10000] [--rounds 3] [--chain 50] [--listers 16] [--no-ray]
[--no-slurm] [--slurm-array-only]
Each figure with a target (idle, under load, 4 slots; Ray idle and under load) is measured
in --rounds rounds, each round one run of each, and the median kept; every run is printed,
and each round's ratios.
(Slurm's side takes about 7 minutes for 10,000 jobs, half with --slurm-array-only.) The
machine's load average is printed with the figures: wall-clock rates on a shared machine
are noisy.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from azure.core.rest import HttpRequest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import Clients, Server, free_port, pool_settled  # noqa: E402
from disk_settle import wait_until_settled  # noqa: E402

from batchyard.runtime import cgroups  # noqa: E402

NODES = 4
VM_SIZE = "standard_d4s_v3"  # 4 cores: up to 16 task slots a node
SLOTS = 16
FEW_SLOTS = 4
READY_SECONDS = 120  # for every listing client's first answer
RETRY_SECONDS = 0.5  # after a listing client's failed request


def make_pool(batch, pool_id: str, slots: int) -> None:
    batch.create_pool({"id": pool_id, "vmSize": VM_SIZE, "targetDedicatedNodes": NODES, "taskSlotsPerNode": slots,
                       "virtualMachineConfiguration": batch_pool_image(batch)})
    pool_settled(batch, pool_id)


def throughput(batch, job_id: str, pool_id: str, count: int) -> float:
    batch.create_job({"id": job_id, "poolInfo": {"poolId": pool_id}})
    return run_tasks(batch, job_id, count)


def run_tasks(batch, job_id: str, count: int) -> float:
    """Tasks per second, from the first collection sent to the last task completed."""
    tasks = [{"id": f"t{i}", "commandLine": "true"} for i in range(count)]
    cpu_before = cpu_times()
    start = time.perf_counter()
    batch.create_tasks(job_id, tasks, max_concurrency=4)
    submitted = time.perf_counter() - start
    while (remaining := count - batch.get_job_task_counts(job_id).task_counts.completed) > 0:
        # the figure ends within 10 ms of the last completion, not up to 0.2 s after it: polls
        # are 0.2 s apart while many are left (each costs the service and this client), then closer
        time.sleep(0.2 if remaining > 2000 else 0.05 if remaining > 200 else 0.01)
    elapsed = time.perf_counter() - start
    busy = busy_share(cpu_before, cpu_times())
    counts = batch.get_job_task_counts(job_id).task_counts
    assert counts.succeeded == count, counts
    print(f"  {job_id}: submitted {count} tasks in {submitted:.2f} s ({count / submitted:.0f}/s), "
          f"all completed in {elapsed:.2f} s, the CPUs {busy:.0%} busy   (load average {os.getloadavg()[0]:.1f})")
    return count / elapsed


def cpu_times() -> tuple[int, int]:
    """The machine's CPU time so far, all of it and the idle part (idle and iowait), in ticks."""
    with open("/proc/stat") as f:
        ticks = [int(t) for t in f.readline().split()[1:]]
    return sum(ticks), ticks[3] + ticks[4]


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """How busy the machine's CPUs were between the two readings: near 1 says a run was
    bound by CPU, not by waiting on something."""
    total, idle = after[0] - before[0], after[1] - before[1]
    return 1 - idle / total if total else 0.0


def tree_cpu(root: int) -> dict[str, float]:
    """CPU seconds so far of the service (its own), its machines' agents (the launcher
    processes, their own) and the commands the agents ran and reaped (the agents' children)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents, figures = {}, {"service": 0.0, "agents": 0.0, "tasks": 0.0}
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
            stats[int(entry.name)] = ([int(f) / tick for f in fields[11:15]], b"launcher.py" in cmdline)
    figures["service"] = sum(stats[root][0][:2])
    todo = list(parents.get(root, []))
    while todo:
        pid = todo.pop()
        todo.extend(parents.get(pid, []))
        times, launcher = stats.get(pid, ([0, 0, 0, 0], False))
        if launcher:
            figures["agents"] += times[0] + times[1]
            figures["tasks"] += times[2] + times[3]
    return figures


@contextmanager
def idle_cgroup():
    """A cgroup of idle CPU weight (`cpu.idle`, Linux 5.15) for processes standing in for
    other machines: they get only CPU nothing else on this one wants. Yields its
    cgroup.procs file, or None where it cannot be made (then they run at SCHED_IDLE)."""
    v1, v2 = cgroups.mounts()
    base = v1.get("cpu") or v2
    group = base / f"batchyard-bench-clients-{os.getpid()}" if base else None
    try:
        if group is None:
            raise OSError("no cpu controller mounted")
        group.mkdir()
        try:
            (group / "cpu.idle").write_text("1")
        except OSError:
            group.rmdir()
            raise
    except OSError as exc:
        print(f"  (no idle cgroup: {exc}; the clients run at SCHED_IDLE instead)")
        yield None
        return
    try:
        yield str(group / "cgroup.procs")
    finally:
        for pid in (group / "cgroup.procs").read_text().split():  # what is left goes back
            try:
                (base / "cgroup.procs").write_text(pid)
            except OSError:
                pass
        group.rmdir()


def as_another_machine(procs: str | None, pid: int = 0) -> None:
    """Process `pid` (0: this one) and its later children take only CPU nothing else wants."""
    if procs:
        Path(procs).write_text(str(pid or os.getpid()))
    else:
        for thread in Path(f"/proc/{pid or os.getpid()}/task").iterdir():
            os.sched_setscheduler(int(thread.name), os.SCHED_IDLE, os.sched_param(0))


def _lister(info: dict, job_id: str, remote: str | bool | None, ready, stop, served) -> None:
    """One listing client in its own process: the job's first page of 100 tasks, again and
    again, until told to stop. False: at normal priority, through the SDK's list_tasks,
    whose decoding of each page of 100 tasks into models (about 14 ms of CPU) then shares
    this machine's two cores with the service's tasks. Otherwise as a client on another
    machine: in the idle cgroup (`remote` is its cgroup.procs; None: SCHED_IDLE), sending
    the request list_tasks sends through the SDK's own pipeline (SharedKey signing, TLS,
    retries) and parsing the page's JSON, but leaving the models to the machine it stands
    for: a real one would ask its next page as soon as it had decoded this one on its own
    CPU, so its pages come at least as often as here."""
    if remote is not False:
        as_another_machine(remote)
    client = Clients(info).batch_key
    request = HttpRequest("GET", f"/jobs/{quote(job_id, safe='')}/tasks",
                          params={"api-version": client._config.api_version, "maxresults": 100})

    def one_page() -> None:
        if remote is False:
            list(next(iter(client.list_tasks(job_id, max_results=100).by_page())))
        else:
            response = client.send_request(request)
            response.raise_for_status()
            response.json()
    _list_until_stopped(one_page, ready, stop, served)


def _ray_lister(dashboard: str, remote: str | None, ready, stop, served) -> None:
    """Ray's counterpart of _lister, as a client on another machine (the same idle cgroup):
    100 of the cluster's tasks through Ray's state API (`ray.util.state.list_tasks`, served
    by Ray's dashboard from its GCS), again and again."""
    as_another_machine(remote)
    from ray.util.state import list_tasks
    _list_until_stopped(lambda: list_tasks(address=dashboard, limit=100, raise_on_missing_output=False),
                 ready, stop, served)


def _list_until_stopped(one_page, ready, stop, served) -> None:
    """A client's loop: one list after another, counted; `ready` once the first is answered.
    A list that fails (Ray's dashboard timed out on one, under the tasks' load) is not
    counted and is asked again, as a polling client would: a client that ended instead
    would take its load off the system measured."""
    first = True
    while not stop.is_set():
        try:
            one_page()
        except Exception as exc:  # noqa: BLE001 - said, then asked again
            print(f"  (a listing client's request failed, asked again: {type(exc).__name__})", flush=True)
            stop.wait(RETRY_SECONDS)  # a server that fails at once is not asked in a tight loop
            continue
        with served.get_lock():
            served.value += 1
        if first:
            ready.release()
            first = False


@contextmanager
def listing_clients(target, args: tuple, listers: int):
    """`listers` clients, each its own process (as separate clients are: they share no
    interpreter with each other or with this one), running target(*args, ready, stop,
    served) until the block ends. Yields once every client has been answered once (their
    start-up is not measured): a function that says how many lists were served so far."""
    spawn = multiprocessing.get_context("spawn")
    ready, stop, served = spawn.Semaphore(0), spawn.Event(), spawn.Value("q", 0)
    clients = [spawn.Process(target=target, args=(*args, ready, stop, served), daemon=True)
               for _ in range(listers)]
    for client in clients:
        client.start()
    try:
        for _ in clients:
            if not ready.acquire(timeout=READY_SECONDS):
                raise RuntimeError(f"a listing client had no answer in {READY_SECONDS} s")
        yield lambda: served.value
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=30)
            if client.is_alive():
                client.kill()


def under_load(info: dict, batch, job_id: str, pool_id: str, count: int, listers: int,
               remote: str | bool | None, listed: tuple[dict, str] | None = None) -> tuple[float, float]:
    """Throughput while `listers` clients list the job's first page of 100 tasks without
    pause (remote: as _lister's); returns (tasks/s, list requests/s served).
    listed: (connection info, job id) of another service for the clients to list instead."""
    batch.create_job({"id": job_id, "poolInfo": {"poolId": pool_id}})
    target_info, target_job = listed or (info, job_id)
    with listing_clients(_lister, (target_info, target_job, remote), listers) as served:
        before, start = served(), time.perf_counter()
        rate = run_tasks(batch, job_id, count)
        return rate, (served() - before) / (time.perf_counter() - start)


def listing_elsewhere(tmp: Path, info: dict, batch, count: int, listers: int,
                      remote: str | None) -> tuple[float, float]:
    """The control for the figure under load: the same clients, in the same idle cgroup,
    list a second Batchyard on this machine (a job of 100 tasks; it too in the idle cgroup,
    as a service on another machine) while the first runs the tasks. Its loss is what the
    clients cost on this shared machine, apart from the service's handling of them."""
    with Server(tmp / "elsewhere") as other:
        as_another_machine(remote, other.proc.pid)  # its later threads and readers inherit it
        other_batch = Clients(other.info).batch_key
        other_batch.create_pool({"id": "empty", "vmSize": VM_SIZE, "targetDedicatedNodes": 0,
                                 "virtualMachineConfiguration": batch_pool_image(other_batch)})
        other_batch.create_job({"id": "listed", "poolInfo": {"poolId": "empty"}})
        other_batch.create_tasks("listed", [{"id": f"t{i}", "commandLine": "true"} for i in range(100)])
        return under_load(info, batch, "loaded-elsewhere", "bench", count, listers, remote,
                          listed=(other.info, "listed"))


def batch_pool_image(batch) -> dict:
    image = next(iter(batch.list_supported_images()))
    ref = image.image_reference
    return {"imageReference": {"publisher": ref.publisher, "offer": ref.offer, "sku": ref.sku},
            "nodeAgentSKUId": image.node_agent_sku_id}


def ray_throughput(count: int, listers: int = 0, remote: str | None = None) -> tuple[float, float]:
    """The same trivial tasks as Ray tasks that each run `true` as a subprocess, on a local
    Ray started with its defaults (one worker per CPU), its node bound to 127.0.0.2 as the
    tests bind theirs; from the first submit to the last result, workers warmed up first as
    the pool's nodes are. Returns (tasks/s, lists/s served). With `listers`: under the same
    load as Batchyard's, clients (remote: as _lister's) listing 100 tasks through Ray's
    state API without pause; Ray's dashboard serves them, so it runs only then (idle, Ray
    runs without it, as lean as it gets)."""
    import ray

    options = {"include_dashboard": bool(listers), "_node_ip_address": "127.0.0.2"}
    if listers:
        options["dashboard_port"] = free_port()
    context = ray.init(logging_level="ERROR", log_to_driver=False, **options)
    try:
        @ray.remote
        def trivial() -> int:
            return subprocess.run(["true"]).returncode

        ray.get([trivial.remote() for _ in range(100)])
        with listing_clients(_ray_lister, (f"http://{context.dashboard_url}", remote), listers) as served:
            before, start = served(), time.perf_counter()
            codes = ray.get([trivial.remote() for _ in range(count)])
            elapsed = time.perf_counter() - start
            lists = (served() - before) / elapsed
        assert codes == [0] * count
        print(f"  ray {ray.__version__} ({int(ray.cluster_resources().get('CPU', 0))} CPUs): {count} tasks in "
              f"{elapsed:.2f} s{f' under {listers} listing clients' if listers else ''}   "
              f"(load average {os.getloadavg()[0]:.1f})")
        return count / elapsed, lists
    finally:
        ray.shutdown()


def dependency_latency(batch, length: int) -> list[float]:
    batch.create_job({"id": "chain", "poolInfo": {"poolId": "bench"}, "usesTaskDependencies": True})
    tasks = [{"id": "c0", "commandLine": "true"}]
    tasks += [{"id": f"c{i}", "commandLine": "true", "dependsOn": {"taskIds": [f"c{i - 1}"]}}
              for i in range(1, length)]
    batch.create_tasks("chain", tasks)
    while batch.get_job_task_counts("chain").task_counts.completed < length:
        time.sleep(0.2)
    info = {t.id: t.execution_info for t in batch.list_tasks("chain")}
    return [(info[f"c{i}"].start_time - info[f"c{i - 1}"].end_time).total_seconds() for i in range(1, length)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each figure with a target; medians are kept")
    parser.add_argument("--chain", type=int, default=50)
    parser.add_argument("--listers", type=int, default=16)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--no-slurm", action="store_true")
    parser.add_argument("--slurm-array-only", action="store_true", help="skip Slurm's loop of sbatch (halves its time)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    idle, loaded, requests, few = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="batchyard-bench-") as tmp, \
            Server(wait_until_settled(Path(tmp)) / "data") as server:
        batch = Clients(server.info).batch_key
        make_pool(batch, "bench", SLOTS)
        make_pool(batch, "bench4", FEW_SLOTS)
        with idle_cgroup() as elsewhere_procs:
            # A run of 10,000 tasks lasts seconds, and its figure moves with whatever else the
            # machine did in those seconds: the figures with targets are measured in rounds
            # (each round one run of each) and their medians kept.
            for round_ in range(1, args.rounds + 1):
                before = tree_cpu(server.proc.pid)
                idle.append(throughput(batch, f"idle-{round_}", "bench", args.tasks))
                if round_ == 1:
                    # the first round's only: later, agents of the other pool that end (idle)
                    # during a run would take their CPU out of the tree's sum
                    cpu = {kind: used - before[kind] for kind, used in tree_cpu(server.proc.pid).items()}
                rate, served = under_load(server.info, batch, f"loaded-{round_}", "bench", args.tasks, args.listers,
                                          remote=elsewhere_procs)
                loaded.append(rate)
                requests.append(served)
                few.append(throughput(batch, f"few-slots-{round_}", "bench4", args.tasks))
            elsewhere, elsewhere_requests = listing_elsewhere(Path(tmp), server.info, batch, args.tasks,
                                                              args.listers, elsewhere_procs)
        shared, shared_requests = under_load(server.info, batch, "loaded-shared", "bench", args.tasks, args.listers,
                                             remote=False)
        gaps = dependency_latency(batch, args.chain)
    rate, under, slots4 = statistics.median(idle), statistics.median(loaded), statistics.median(few)
    print(f"Batchyard: {args.tasks} tasks end to end, {NODES} nodes of {SLOTS} slots: {rate:.0f} tasks/s   "
          f"target >= 500   (median of {_runs(idle)})")
    print("  CPU per task (first round): " + ", ".join(
        f"{kind} {cpu[kind] * 1000 / args.tasks:.2f} ms" for kind in ("tasks", "agents", "service")))
    print(f"  under {args.listers} clients listing tasks, as clients on other machines (an idle cgroup here; "
          f"{statistics.median(requests):.0f} pages of 100 served a second): {under:.0f} tasks/s = "
          f"{under / rate:.2f} of idle   target >= 0.8   (median of {_runs(loaded)}; each round's ratio: "
          f"{', '.join(f'{b / a:.2f}' for a, b in zip(idle, loaded))})")
    print(f"  control: the same clients listing another Batchyard on this machine, also in the idle cgroup "
          f"({elsewhere_requests:.0f} pages "
          f"a second): {elsewhere:.0f} tasks/s = {elsewhere / rate:.2f} of idle: the clients' own CPU here; "
          f"the service's own loss to the listing is {under / elsewhere:.2f}")
    print(f"  the same clients at normal priority, their SDK decoding sharing this machine's cores "
          f"({shared_requests:.0f} pages a second): {shared:.0f} tasks/s = {shared / rate:.2f} of idle")
    print(f"  {FEW_SLOTS} slots a node instead of {SLOTS}: {slots4:.0f} tasks/s = {slots4 / rate:.2f}   "
          f"target >= 0.8   (median of {_runs(few)}; each round's ratio: "
          f"{', '.join(f'{b / a:.2f}' for a, b in zip(idle, few))})")
    print(f"dependency latency over a chain of {args.chain}: median {statistics.median(gaps) * 1000:.1f} ms, "
          f"worst {max(gaps) * 1000:.1f} ms   target < 50 ms")
    if not args.no_ray:
        ray_idle, ray_loaded = [], []
        for _ in range(args.rounds):
            ray_idle.append(ray_throughput(args.tasks)[0])
            with idle_cgroup() as elsewhere_procs:
                ray_rate, ray_lists = ray_throughput(args.tasks, args.listers, elsewhere_procs)
            ray_loaded.append(ray_rate)
        ray_rate, ray_under = statistics.median(ray_idle), statistics.median(ray_loaded)
        print(f"Ray: {args.tasks} subprocess tasks: idle {ray_rate:.0f} tasks/s (median of {_runs(ray_idle)}); "
              f"under the same {args.listers} listing clients (Ray's state API through its dashboard, "
              f"{ray_lists:.1f} lists of 100 served a second in the last run): {ray_under:.0f} tasks/s "
              f"(median of {_runs(ray_loaded)})")
        print(f"Batchyard / Ray: idle {rate / ray_rate:.2f}x, under load {under / ray_under:.2f}x (each under "
              f"its own listing clients)   target >= 1.5x; Batchyard under load against Ray idle: "
              f"{under / ray_rate:.2f}x")
    if args.no_slurm:
        return
    from slurm_peer import run_slurm
    # A job array is Slurm's match for tasks submitted in collections.
    figures = run_slurm(args.tasks, loop=not args.slurm_array_only, lat=3)
    for variant in ("loop", "array"):
        if figures.get(f"{variant}_end_to_end_per_s"):
            print(f"Slurm {figures['slurm_version']} ({figures['profile']} profile, this machine), {variant}: "
                  f"{args.tasks} jobs end to end in {figures[f'{variant}_end_to_end_s']:.1f} s = "
                  f"{figures[f'{variant}_end_to_end_per_s']:.1f} jobs/s")
    slurm_rate = max(v for k, v in figures.items() if k.endswith("end_to_end_per_s") and v)
    print(f"Slurm single-job latency (submit to completed): median {figures['latency_median_s'] * 1000:.0f} ms")
    print(f"Batchyard / Slurm end-to-end throughput: {rate / slurm_rate:.1f}x   target > 1")


def _runs(rates: list[float]) -> str:
    return " / ".join(f"{r:.0f}" for r in rates)


if __name__ == "__main__":
    main()
