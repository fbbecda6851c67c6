"""Slurm as a peer for task-throughput benchmarks: the same trivial-job workload through
Debian's slurm-wlm on this host, for a side-by-side ratio with Batchyard.

It runs the shared script ``slurm-bench.sh`` (kept beside the repo in ``shared/peers/``,
not copied here; override its path with env ``BATCHYARD_SLURM_BENCH``). The script installs
slurm-wlm and munge with apt if missing, starts a fresh single-host cluster under ``base``,
runs ``n`` jobs of ``true`` twice -- ``n`` separate ``sbatch`` calls ("loop") and one job
array of ``n`` tasks ("array") -- measures single-job submit-to-completed latency, and
stops its daemons. ``run_slurm`` parses what it prints and always stops the daemons
afterwards (``STOP=1`` mode), also on failure or timeout.

Needs root (or password-less ``sudo``). Uses ports 6817/6818 on loopback.

Usage: bench/slurm_peer.py [--n 10000] [--profile oversub] [--lat 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PROFILES = ("default", "tuned", "oversub", "multi")
DEFAULT_BASE = Path(tempfile.gettempdir()) / "batchyard-slurm-peer"


def script_path() -> Path:
    override = os.environ.get("BATCHYARD_SLURM_BENCH")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "shared" / "peers" / "slurm-bench.sh"


_NUM = r"([0-9.]+|inf)"
_TEST_RE = re.compile(
    rf"^\[(?P<profile>[^\]]+)\] (?P<test>loop|array)\s+N=(?P<n>\d+)\s+"
    rf"submit={_NUM}s \({_NUM} jobs/s\)\s+all-completed={_NUM}s \({_NUM} jobs/s end-to-end\)\s+"
    rf"completed=(?P<completed>\d+) failed=(?P<failed>\d+)", re.MULTILINE)
_LAT_RE = re.compile(r"^\[[^\]]+\] latency single job submit->completed \(s\):(.*)$", re.MULTILINE)
_START_RE = re.compile(r"^=== PROFILE=\S+\s+slurm-wlm (\S+)\s+nodes: (.*?)\s+daemons start->node idle: ([0-9.]+)s",
                       re.MULTILINE)
_MACHINE_RE = re.compile(r"^machine: (.*)$", re.MULTILINE)
_SDIAG_RE = re.compile(r"^\[[^\]]+\] sdiag: (.*)$", re.MULTILINE)
_EXIT_RE = re.compile(r"^\[[^\]]+\] slurmctld\.log: (\d+) jobs exited 0, (\d+) non-zero", re.MULTILINE)


def _f(text: str) -> float:
    return float("inf") if text == "inf" else float(text)


def parse_output(text: str) -> dict:
    """The figures slurm-bench.sh prints for one profile, as a flat dict (missing parts absent).

    ``<test>_{submit_s,submit_per_s,end_to_end_s,end_to_end_per_s,completed,failed}`` for
    test ``loop`` and ``array``, rates in jobs/s as the script rounds them."""
    out: dict = {}
    if m := _MACHINE_RE.search(text):
        out["machine"] = m.group(1).strip()
    if m := _START_RE.search(text):
        out["slurm_version"] = m.group(1)
        out["daemon_start_s"] = float(m.group(3))
    for m in _TEST_RE.finditer(text):
        g, test = m.groups(), m.group("test")
        out.update({
            f"{test}_submit_s": _f(g[3]), f"{test}_submit_per_s": _f(g[4]),
            f"{test}_end_to_end_s": _f(g[5]), f"{test}_end_to_end_per_s": _f(g[6]),
            f"{test}_completed": int(m.group("completed")), f"{test}_failed": int(m.group("failed")),
        })
    if m := _LAT_RE.search(text):
        samples = [float(x) for x in m.group(1).split()]
        out["latency_s"] = samples
        if samples:
            out["latency_median_s"] = statistics.median(samples)
            out["latency_mean_s"] = statistics.fmean(samples)
    if m := _SDIAG_RE.search(text):
        out["sdiag"] = m.group(1).strip()
    if m := _EXIT_RE.search(text):
        out["exited_zero"], out["exited_nonzero"] = int(m.group(1)), int(m.group(2))
    return out


def _command(script: Path, env: dict[str, str]) -> list[str]:
    if os.geteuid() == 0:
        return ["bash", str(script)]
    if shutil.which("sudo"):   # non-root developer: password-less sudo, env passed explicitly
        return ["sudo", "-n", "env", *(f"{k}={v}" for k, v in env.items()), "bash", str(script)]
    raise RuntimeError("slurm-bench.sh must run as root (and sudo is not available)")


def _run(script: Path, env: dict[str, str], timeout: float, echo: bool,
         start_timeout: float | None = None) -> tuple[int | str, str]:
    """Run the script in its own process group; return (exit code, or "timeout" / "start" if it
    was stopped for running past ``timeout`` or for not having a cluster up ``start_timeout``
    seconds after its install step, output)."""
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("STOP", "KEEP", "SKIP_LOOP", "SKIP_ARRAY", "PROFILES", "N", "LAT", "OUT")}
    full_env.update(env)
    proc = subprocess.Popen(_command(script, env), env=full_env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", start_new_session=True, cwd=tempfile.gettempdir())
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if echo:
                sys.stderr.write(line)
                sys.stderr.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    installed_at: float | None = None   # when the "machine:" line (printed after install) came
    rc: int | str | None = None
    try:
        while (rc := proc.poll()) is None:
            now = time.monotonic()
            if now > deadline:
                rc = "timeout"
                break
            if start_timeout is not None:
                text = "".join(lines)
                if installed_at is None and "\nmachine: " in "\n" + text:
                    installed_at = now
                if "=== PROFILE=" in text:
                    start_timeout = None   # the cluster is up
                elif installed_at is not None and now - installed_at > start_timeout:
                    rc = "start"
                    break
            time.sleep(0.2)
    finally:
        if proc.poll() is None:   # timeout or interrupt: end the script's own process group
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
            except (ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
        reader.join(timeout=10)
    return rc, "".join(lines)


def stop_slurm(base: Path | str = DEFAULT_BASE, script: Path | None = None) -> None:
    """Stop the munged/slurmctld/slurmd started under ``base`` (by their pid files)."""
    rc, text = _run(script or script_path(), {"STOP": "1", "BASE": str(base)}, timeout=120, echo=False)
    if rc != 0:
        print(f"warning: stopping Slurm daemons under {base} failed ({rc}):\n{text}", file=sys.stderr)


def run_slurm(n: int = 10000, profile: str = "oversub", timeout: float = 1800, *,
              lat: int = 5, loop: bool = True, array: bool = True,
              base: Path | str = DEFAULT_BASE, echo: bool = False, start_timeout: float = 90) -> dict:
    """Run ``n`` trivial Slurm jobs as a loop of ``sbatch`` calls and as one job array.

    Returns a flat dict: ``n``, ``profile``, ``wall_s`` (the whole script: install check,
    daemon start, both tests, latency samples, stop), ``slurm_version``, ``machine``,
    ``daemon_start_s``; for ``loop`` (n separate ``sbatch`` calls) and ``array`` (one job
    array of n tasks) each ``<test>_submit_s``, ``<test>_submit_per_s``,
    ``<test>_end_to_end_s``, ``<test>_end_to_end_per_s`` (jobs/s from the first submit to the
    last job completed), ``<test>_completed``, ``<test>_failed``; ``latency_s`` (samples of
    single-job submit->completed on an idle cluster), ``latency_median_s``,
    ``latency_mean_s``, ``sdiag``, ``exited_zero``, ``exited_nonzero``.
    Raises RuntimeError (with the tail of the output) if Slurm cannot be installed/started
    (no idle node ``start_timeout`` s after the install step), the run takes more than
    ``timeout`` s, or not every job completed. Daemons are stopped in every case.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    if profile.removesuffix("-cg") not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; one of {PROFILES} (optionally with -cg)")
    script = script_path()
    if not script.is_file():
        raise RuntimeError(f"slurm-bench.sh not found at {script} (set BATCHYARD_SLURM_BENCH)")
    env = {"N": str(n), "PROFILES": profile, "LAT": str(lat), "BASE": str(base), "OUT": "/dev/null",
           "KEEP": "0", "SKIP_LOOP": "0" if loop else "1", "SKIP_ARRAY": "0" if array else "1"}
    start = time.perf_counter()
    try:
        rc, text = _run(script, env, timeout, echo, start_timeout)
    finally:
        stop_slurm(base, script)
    wall = time.perf_counter() - start

    def fail(why: str) -> RuntimeError:
        tail = "\n".join(text.splitlines()[-40:])
        return RuntimeError(f"Slurm peer ({script}, profile {profile}, N={n}): {why}\n--- output tail ---\n{tail}")

    if rc == "timeout":
        raise fail(f"timed out after {timeout:.0f} s")
    if rc == "start":
        raise fail(f"Slurm could not be started: no idle node {start_timeout:.0f} s after install "
                   f"(logs in {base}/log; is port 6817/6818 taken?)")
    result = {"n": n, "profile": profile, "wall_s": round(wall, 3), **parse_output(text)}
    if "slurm_version" not in result:
        raise fail(f"Slurm could not be installed or started (exit code {rc})")
    if rc != 0:
        raise fail(f"script failed with exit code {rc}")
    for test, wanted in (("loop", loop), ("array", array)):
        if not wanted:
            continue
        if f"{test}_completed" not in result:
            raise fail(f"no figures for the {test} test")
        if result[f"{test}_completed"] != n:
            raise fail(f"{test}: only {result[f'{test}_completed']} of {n} jobs completed "
                       f"({result[f'{test}_failed']} failed)")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--profile", default="oversub")
    parser.add_argument("--lat", type=int, default=5, help="single-job latency samples")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--no-loop", action="store_true", help="skip the loop of sbatch calls")
    parser.add_argument("--no-array", action="store_true", help="skip the job array")
    parser.add_argument("--quiet", action="store_true", help="do not echo the script's output")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    r = run_slurm(args.n, args.profile, args.timeout, lat=args.lat, loop=not args.no_loop,
                  array=not args.no_array, echo=not args.quiet)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"Slurm {r['slurm_version']} profile={r['profile']} N={r['n']} on {r.get('machine', '?')}")
    for test in ("loop", "array"):
        if f"{test}_completed" in r:
            print(f"  {test:5}: submit {r[f'{test}_submit_s']:.3f} s ({r[f'{test}_submit_per_s']} jobs/s), "
                  f"end to end {r[f'{test}_end_to_end_s']:.3f} s ({r[f'{test}_end_to_end_per_s']} jobs/s), "
                  f"completed {r[f'{test}_completed']}, failed {r[f'{test}_failed']}")
    if "latency_s" in r:
        print(f"  latency submit->completed: median {r['latency_median_s']:.3f} s, "
              f"samples {' '.join(f'{x:.3f}' for x in r['latency_s'])}")
    print(f"  whole run (setup, both tests, latency, stop): {r['wall_s']:.1f} s")


if __name__ == "__main__":
    main()
