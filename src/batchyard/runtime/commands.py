"""Running many commands in one machine without waiting on each: what a node needs to run
tasks. `CommandRunner.run` starts a command and returns at once; `on_exit(Exit)` is called
(from a runner thread) when it ends; `kill` ends it.

Two ways to do it:
- `AgentRunner`: one long-lived agent process inside the machine (launcher.py in agent
  mode) forks each command, so starting one costs a fork, not a new interpreter. The agent
  lives while the machine has work and leaves after a short idle time, so an idle machine
  still costs no process.
- `SpawningRunner`: one `provider.spawn` per command and a thread that waits for it; for
  providers without an agent (the directory fallback).

Paths given for stdout, stderr and the directories to make are paths inside the machine;
the directories are made before the command starts, owned by the command's user.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import subprocess
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson

from . import confined

log = logging.getLogger("batchyard.runtime")
IDLE_SECONDS = 5.0
# How long agents let go (abandon) are waited for: their own grace for running commands
# (launcher.py's EXIT_GRACE, 2 s), and a second to journal and end.
AGENT_GRACE_SECONDS = 3.0

KILLED = 128 + signal.SIGKILL


@dataclass(frozen=True)
class Exit:
    code: int  # 128 + N for a command ended by signal N, as a shell reports it
    out_of_memory: bool = False  # the machine's memory limit killed it


ExitCallback = Callable[[Exit], None]


def killed_by_memory_limit(code: int, kills_before: int, kills_now: Callable[[], int]) -> bool:
    """The kernel's memory cgroup OOM killer ends a process with SIGKILL and counts it: a
    command that died of SIGKILL (itself, or the program its shell ran) while the count
    went up was over the machine's memory. The count is read only for such a command, not
    (a file read) for every exit."""
    return code in (KILLED, -signal.SIGKILL) and kills_now() > kills_before


_together = threading.local()  # .runners: in a together() block, {runner: its OOM-kill count}


@contextmanager
def together() -> Iterator[None]:
    """The commands this thread starts in the block go to each machine's agent in one write,
    at the block's end, and each machine's OOM-kill count is read once for them. A refill
    starts several commands on the same machines at once: a write and a flush for each (its
    agent woken for each), and a file read for each count, were most of the refiller's CPU."""
    if getattr(_together, "runners", None) is not None:  # within another block: that one sends
        yield
        return
    _together.runners = {}
    try:
        yield
    finally:
        runners, _together.runners = _together.runners, None
        for runner in runners:
            runner.send_written()


class CommandRunner:
    def run(self, command_id: str, argv: list[str], env: dict[str, str], cwd: str, uid: int | None,
            gid: int | None, stdout: str, stderr: str, on_exit: ExitCallback, mkdirs: tuple[str, ...] = (),
            container=None) -> None:
        """container: a provider.ContainerRun, for a command in a container."""
        raise NotImplementedError

    def kill(self, command_id: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """End the runner and every command it started."""

    def abandon(self) -> list[subprocess.Popen]:
        """Let the runner go as the service's death would, with no close asked; the agents to
        wait for. By default a close."""
        self.close()
        return []


class AgentRunner(CommandRunner):
    # Whether together() may hold this runner's request lines back (see ContainerRunner).
    holds_lines = True

    def __init__(self, start_agent: Callable[[], subprocess.Popen], idle_seconds: float = IDLE_SECONDS,
                 oom_kills: Callable[[], int] = lambda: 0):
        self._start_agent = start_agent
        self._oom_kills = oom_kills
        self._idle_seconds = idle_seconds
        self._lock = threading.RLock()
        self._agent: subprocess.Popen | None = None
        # by command: its agent, its callback, and the machine's OOM kills when it started
        self._callbacks: dict[str, tuple[subprocess.Popen, ExitCallback, int]] = {}
        self._idle_since = 0  # which idle moment the closer may end the agent for (0: none)
        # Lines held back by together() for the current agent: written in one write at the
        # block's end (a write through the pipe's buffer would go out every 8 KiB, a handful
        # of commands, each write waking the agent).
        self._held = bytearray()

    def run(self, command_id, argv, env, cwd, uid, gid, stdout, stderr, on_exit, mkdirs=(), container=None) -> None:
        """container: for an agent that runs containers (launcher.py), the request's part
        that says which (the provider makes it)."""
        request = {"id": command_id, "argv": argv, "env": env, "cwd": cwd, "uid": uid, "gid": gid,
                   "stdout": stdout, "stderr": stderr, "mkdirs": list(mkdirs)}
        if container is not None:
            request["container"] = container
        line = _line(request)
        batch = getattr(_together, "runners", None) if self.holds_lines else None
        if batch is None:
            kills = self._oom_kills()
        elif self in batch:
            kills = batch[self]
        else:
            kills = batch[self] = self._oom_kills()
        with self._lock:
            agent = self._ensure_agent()
            self._callbacks[command_id] = (agent, on_exit, kills)
            self._idle_since = 0  # busy again: an idle close due for the last idle moment is off
            try:
                self._before_request()
                if batch is None:
                    self._send(agent, line)
                else:
                    self._held += line
            except (OSError, ValueError):
                self._callbacks.pop(command_id, None)
                raise OSError("the machine's agent is gone")

    def send_written(self) -> None:
        """Sends what together() held back. An agent that has gone meanwhile took those
        commands with it: its reader ends them, as every command of an agent that ends."""
        with self._lock:
            if self._agent is None or not self._held:
                return
            try:
                self._send(self._agent, b"")
            except (OSError, ValueError):
                pass

    def _send(self, agent: subprocess.Popen, line: bytes) -> None:
        """Writes the held lines, then `line`: whatever else goes to the agent (a kill, a
        command outside a block) goes after the commands held before it. Lock held."""
        data, self._held = bytes(self._held) + line, bytearray()
        agent.stdin.write(data)
        agent.stdin.flush()

    def _before_request(self) -> None:
        """What goes to the agent before a request's line (nothing here)."""

    def kill(self, command_id: str) -> None:
        with self._lock:
            if self._agent is None or command_id not in self._callbacks:
                return
            if self._callbacks[command_id][0] is not self._agent:
                return  # its agent is gone, and the command with it
            try:
                self._send(self._agent, _line({"kill": command_id}))
            except (BrokenPipeError, ValueError):
                pass

    def close(self) -> None:
        agent = self._let_go()
        if agent is not None:
            _end(agent)

    def abandon(self) -> list[subprocess.Popen]:
        """The service's death as the agent sees it on one host: its stdin closes with no
        close asked, so it gives its running commands their grace, journals the exits of those
        that end and ends, its journal kept for the next service (launcher.finish_running).
        No idle close follows (it would end the commands at once, their exits unjournaled)."""
        agent = self._let_go()
        if agent is None:
            return []
        try:
            agent.stdin.close()
        except (OSError, ValueError):
            pass
        return [agent]

    def _let_go(self) -> subprocess.Popen | None:
        """The agent, taken from the runner: no idle close is due for it any more."""
        with self._lock:
            agent, self._agent = self._agent, None
            self._idle_since = 0
            self._held.clear()
        return agent

    def _ensure_agent(self) -> subprocess.Popen:
        if self._agent is None or self._agent.poll() is not None:
            self._held.clear()  # the gone agent's: its reader ends those commands
            agent = self._start_agent()
            self._agent = agent
            threading.Thread(target=self._read_events, args=(agent,), daemon=True,
                             name="machine-agent").start()
        return self._agent

    def _read_events(self, agent: subprocess.Popen) -> None:
        for line in agent.stdout:
            try:
                event = orjson.loads(line)
            except ValueError:
                continue
            with self._lock:
                entry = self._callbacks.pop(event.get("id"), None)
                if not self._callbacks and self._agent is agent:
                    self._schedule_idle_close(agent)
            if entry is not None:
                code = int(event["exit"])
                _call(entry[1], Exit(code, killed_by_memory_limit(code, entry[2], self._oom_kills)))
        # The agent ended (closed, or the machine was stopped): whatever it ran is gone.
        with self._lock:
            orphans = [cid for cid, (owner, _, _) in self._callbacks.items() if owner is agent]
            callbacks = [self._callbacks.pop(cid)[1] for cid in orphans]
            if self._agent is agent:
                self._agent = None
        for callback in callbacks:
            _call(callback, Exit(KILLED))

    def _schedule_idle_close(self, agent: subprocess.Popen) -> None:
        """Called with the lock held, when the agent's last command ended."""
        moment = next(_idle_moments)
        self._idle_since = moment
        IDLE_CLOSER.close_at(time.monotonic() + self._idle_seconds, lambda: self._close_if_idle(agent, moment))

    def _close_if_idle(self, agent: subprocess.Popen, moment: int) -> None:
        with self._lock:
            if self._agent is not agent or self._callbacks or self._idle_since != moment:
                return  # it ran something since, or it is gone
            self._agent = None
            self._idle_since = 0
        _end(agent)


class IdleCloser:
    """One thread that ends idle agents when their idle time is up, for every runner. An
    agent goes idle, for an instant, between the commands of a burst, hundreds of times a
    second: a timer thread for each such moment, made and then cancelled by the next
    command, cost the service a thread's start and end each time. When a close comes due,
    its runner checks whether it is still the same idle moment."""

    def __init__(self):
        self._due: list[tuple[float, int, Callable[[], None]]] = []  # a heap by time
        self._wake = threading.Condition()
        self._order = 0  # ties in time go in order of asking, never comparing callables
        self._thread: threading.Thread | None = None

    def close_at(self, when: float, close: Callable[[], None]) -> None:
        with self._wake:
            self._order += 1
            heapq.heappush(self._due, (when, self._order, close))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True, name="idle-agents")
                self._thread.start()
            elif self._due[0][1] == self._order:  # due before everything else: wait less
                self._wake.notify()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._wake.wait(timeout=self._due[0][0] - time.monotonic() if self._due else None)
                _, _, close = heapq.heappop(self._due)
            try:
                close()
            except Exception:  # one agent's trouble must not stop the others' closes
                log.exception("closing an idle machine agent failed")


IDLE_CLOSER = IdleCloser()
_idle_moments = itertools.count(1)


class SpawningRunner(CommandRunner):
    def __init__(self, spawn: Callable[..., subprocess.Popen], temporary_disk: Callable[[], Path]):
        self._spawn = spawn
        self._temporary_disk = temporary_disk  # the host directory the machine sees as /mnt
        self._lock = threading.Lock()
        self._procs: dict[str, subprocess.Popen] = {}

    def _on_mnt(self, path: str) -> str:
        if not path.startswith("/mnt/"):
            raise OSError(f"{path} is not on the temporary disk")
        return path.removeprefix("/mnt/")

    def run(self, command_id, argv, env, cwd, uid, gid, stdout, stderr, on_exit, mkdirs=(), container=None) -> None:
        if container is not None:
            raise OSError("containers need isolated machines (mount namespaces), which this host has not")
        # Made from the host, so never through a link a command left there (confined.py).
        base = self._temporary_disk()
        for path in mkdirs:
            with confined.directory(base, self._on_mnt(path), create=True, uid=uid, gid=gid) as fd:
                if uid is not None:
                    os.fchown(fd, uid, gid if gid is not None else -1)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        out = confined.open_file(base, self._on_mnt(stdout), flags, uid, gid)
        try:
            err = confined.open_file(base, self._on_mnt(stderr), flags, uid, gid)
            try:
                proc = self._spawn(argv, env=env, cwd=cwd, uid=uid, gid=gid, stdout=out, stderr=err)
            finally:
                os.close(err)
        finally:
            os.close(out)
        with self._lock:
            self._procs[command_id] = proc

        def wait():
            code = proc.wait()
            with self._lock:
                self._procs.pop(command_id, None)
            _call(on_exit, Exit(code if code >= 0 else 128 - code))

        threading.Thread(target=wait, daemon=True, name="command-wait").start()

    def kill(self, command_id: str) -> None:
        with self._lock:
            proc = self._procs.get(command_id)
        if proc is not None:
            from .machines import kill_group
            kill_group(proc)

    def close(self) -> None:
        with self._lock:
            ids = list(self._procs)
        for command_id in ids:
            self.kill(command_id)


class SplitRunner(CommandRunner):
    """Plain commands through the machine's agent; container commands through its
    container agent, which may make their mounts (the machine's agent runs under the
    seccomp filter that forbids mounting)."""

    def __init__(self, agent: CommandRunner, containers: CommandRunner):
        self._agent, self._containers = agent, containers

    def run(self, command_id, argv, env, cwd, uid, gid, stdout, stderr, on_exit, mkdirs=(), container=None) -> None:
        if container is None:
            self._agent.run(command_id, argv, env, cwd, uid, gid, stdout, stderr, on_exit, mkdirs)
        else:
            self._containers.run(command_id, argv, env, cwd, uid, gid, stdout, stderr, on_exit, mkdirs, container)

    def kill(self, command_id: str) -> None:
        self._agent.kill(command_id)  # each ignores an id it did not start
        self._containers.kill(command_id)

    def close(self) -> None:
        self._agent.close()
        self._containers.close()

    def abandon(self) -> list[subprocess.Popen]:
        return self._agent.abandon() + self._containers.abandon()


def _end(agent: subprocess.Popen) -> None:
    """A close asked for (not the service vanishing): the agent ends its commands at once;
    its exit journal stays for the next agent of the machine to write on (launcher.py)."""
    try:
        agent.stdin.write(b'{"close":true}\n')
        agent.stdin.close()
    except (OSError, ValueError):
        pass
    try:
        agent.wait(timeout=5)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait()


def _line(message: dict) -> bytes:
    """A request as the agent reads it: a JSON line. orjson refuses a lone surrogate (a byte
    of a command line that is not UTF-8, kept by surrogateescape); json escapes it, and the
    agent's json reads it back."""
    try:
        return orjson.dumps(message) + b"\n"
    except TypeError:
        return json.dumps(message).encode() + b"\n"


def _call(callback: ExitCallback, outcome: Exit) -> None:
    try:
        callback(outcome)
    except Exception:  # a caller's bug must not kill the runner's thread
        log.exception("command exit callback failed")
