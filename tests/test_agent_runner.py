"""The command runner's agent (runtime/commands.py): an agent lives while its machine has
work and leaves after an idle time, so an idle machine costs no process; a command started
within the idle time keeps it; commands started together() reach it in one write. Against
a real process that speaks the agent's protocol (JSON lines in, exits out), without a
machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from batchyard.runtime.commands import AgentRunner, Exit, together

# Answers each request at once with exit 0 (the command "ran"); leaves on {"close"}.
ECHO_AGENT = """
import json, sys
for line in sys.stdin.buffer:
    request = json.loads(line)
    if request.get("close"):
        break
    if "id" in request:
        sys.stdout.buffer.write(json.dumps({"id": request["id"], "exit": 0}).encode() + b"\\n")
        sys.stdout.buffer.flush()
"""


class Agents:
    """Starts agents running `script` (with `args`), and keeps them for the test to wait on."""

    def __init__(self, script: str = ECHO_AGENT, *args: str):
        self.script, self.args = script, args
        self.started: list[subprocess.Popen] = []

    def start(self) -> subprocess.Popen:
        agent = subprocess.Popen([sys.executable, "-c", self.script, *self.args], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE)
        self.started.append(agent)
        return agent


def run_one(runner: AgentRunner, command_id: str) -> Exit:
    ended = threading.Event()
    outcome: list[Exit] = []

    def on_exit(exit_: Exit) -> None:
        outcome.append(exit_)
        ended.set()
    runner.run(command_id, ["true"], {}, "/", None, None, "", "", on_exit)
    assert ended.wait(10), f"{command_id} never ended"
    return outcome[0]


def wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_an_idle_agent_leaves_and_a_busy_one_stays():
    agents = Agents()
    runner = AgentRunner(agents.start, idle_seconds=0.5)
    try:
        assert run_one(runner, "a") == Exit(0)
        first = agents.started[0]
        assert first.poll() is None  # idle for less than its idle time: still there
        assert wait_until(lambda: first.poll() is not None, 10), "the idle agent never left"
        # Commands that keep coming within the idle time keep one agent, past many idle times.
        for i in range(8):
            assert run_one(runner, f"b{i}") == Exit(0)
            time.sleep(0.2)
        assert len(agents.started) == 2 and agents.started[1].poll() is None
        assert wait_until(lambda: agents.started[1].poll() is not None, 10)
        assert run_one(runner, "c") == Exit(0)  # a new agent for the next command
        assert len(agents.started) == 3
    finally:
        runner.close()
        for agent in agents.started:
            agent.wait(timeout=10)


def test_many_runners_go_idle_at_once_and_each_agent_leaves():
    agents = Agents()
    runners = [AgentRunner(agents.start, idle_seconds=0.3) for _ in range(12)]
    try:
        for n, runner in enumerate(runners):
            run_one(runner, f"t{n}")
        assert len(agents.started) == 12
        assert wait_until(lambda: all(a.poll() is not None for a in agents.started), 15)
    finally:
        for runner in runners:
            runner.close()


def test_commands_started_together_go_to_their_agent_at_the_end_of_the_block():
    agents = Agents()
    counts_read = []
    runner = AgentRunner(agents.start, oom_kills=lambda: counts_read.append(1) or 0)
    ended: dict[str, Exit] = {}
    all_ended = threading.Event()

    def on_exit(command_id):
        def record(exit_: Exit) -> None:
            ended[command_id] = exit_
            if len(ended) == 14:
                all_ended.set()
        return record
    # a task's environment is about 1 KiB: twelve of them are more than a pipe writer's buffer
    env = {"AZ_BATCH_TASK_DIR": "x" * 1000}
    try:
        with together():
            for i in range(12):
                runner.run(f"t{i}", ["true"], env, "/", None, None, "", "", on_exit(f"t{i}"))
            with together():  # a block inside another: the outer one sends
                runner.run("t12", ["true"], env, "/", None, None, "", "", on_exit("t12"))
            time.sleep(0.5)
            assert ended == {}  # held back: the agent has not seen them
        runner.run("t13", ["true"], env, "/", None, None, "", "", on_exit("t13"))  # outside: sent at once
        assert all_ended.wait(10), f"only {sorted(ended)} ended"
        assert set(ended.values()) == {Exit(0)}
        # the machine's OOM-kill count: once for the block's 13 commands, once for the last
        assert len(counts_read) == 2
    finally:
        runner.close()
        for agent in agents.started:
            agent.wait(timeout=10)


# Writes what it receives, in order, to the file named by its argument; answers nothing.
RECORDING_AGENT = """
import json, sys
with open(sys.argv[1], "a") as log:
    for line in sys.stdin.buffer:
        request = json.loads(line)
        if request.get("close"):
            break
        log.write(("kill " + request["kill"]) if "kill" in request else ("run " + request["id"]))
        log.write("\\n")
        log.flush()
"""


def test_a_kill_in_a_block_follows_the_commands_held_before_it(tmp_path):
    log = tmp_path / "received"
    agents = Agents(RECORDING_AGENT, str(log))
    runner = AgentRunner(agents.start)
    try:
        with together():
            runner.run("t0", ["sleep", "9"], {}, "/", None, None, "", "", lambda exit_: None)
            runner.run("t1", ["sleep", "9"], {}, "/", None, None, "", "", lambda exit_: None)
            runner.kill("t0")  # goes now, and after t0 and t1: never before the command it ends
        assert wait_until(lambda: log.exists() and len(log.read_text().split("\n")) > 3, 10)
        assert log.read_text().split("\n")[:3] == ["run t0", "run t1", "kill t0"]
    finally:
        runner.close()
        for agent in agents.started:
            agent.wait(timeout=10)


def test_a_runner_that_may_not_hold_lines_sends_each_at_once():
    """A container agent's runner: each request's root filesystem goes at once beside it."""
    class AtOnce(AgentRunner):
        holds_lines = False
    agents = Agents()
    runner = AtOnce(agents.start)
    ended = threading.Event()
    try:
        with together():
            runner.run("t0", ["true"], {}, "/", None, None, "", "", lambda exit_: ended.set())
            assert ended.wait(10), "held back in the block"
    finally:
        runner.close()
        for agent in agents.started:
            agent.wait(timeout=10)


# Imports the machine agent's own module (runtime/launcher.py), starts 60 commands that end
# at once with codes 0 - 59, waits until every one has ended, then reaps them as the agent's
# loop does, with its journal on two files and stdout a pipe whose writes are counted and cut
# to at most 1,000 bytes each (as a signal may cut a write to a pipe past 4 KiB).
REAPING_AGENT = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
import launcher
journal = [os.open(sys.argv[i], os.O_WRONLY | os.O_APPEND | os.O_CREAT) for i in (2, 3)]
launcher.JOURNAL = launcher.Journal(journal)
running = {os.posix_spawn("/bin/sh", ["/bin/sh", "-c", "exit %d" % code], {}): "cmd-%d" % code
           for code in range(60)}
time.sleep(0.5)
while any(os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None for pid in running):
    time.sleep(0.05)
writes = []
real_write = os.write
def cut_write(fd, data):
    writes.append(fd)
    return real_write(fd, bytes(data[:1000]))
os.write = cut_write
launcher.reap(running)
os.write = real_write
sys.stderr.write("%d %d" % (writes.count(1), len(running)))
"""


def test_the_agent_reports_the_exits_of_one_reap_together_and_whole(tmp_path):
    """An agent reaps every command that ended since it last looked, and reports their
    exits in one write to the service (each write wakes the service's reader) after one
    to the exit journal, not two writes an exit. 60 exits make some 11 KB: the write is
    finished however often a signal cuts it short."""
    from batchyard.runtime import launcher

    files = [tmp_path / "exits-a", tmp_path / "exits-b"]
    done = subprocess.run([sys.executable, "-c", REAPING_AGENT, str(Path(launcher.__file__).parent), *map(str, files)],
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    reported = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted((e["id"], e["exit"]) for e in reported) == sorted((f"cmd-{c}", c) for c in range(60))
    assert files[0].read_bytes() + files[1].read_bytes() == done.stdout  # journaled first, the same lines
    writes, left = map(int, done.stderr.split())
    assert left == 0
    assert writes == -(-len(done.stdout) // 1000)  # one write, cut short and finished


def test_an_agent_writes_on_the_journal_earlier_agents_left_and_keeps_it_small(tmp_path):
    """A machine's agents come and go (each closed once it idled) and its exit journal
    outlives them. What the journal's files hold was written when they last changed, not
    when an agent opened them: the file in use is switched once it is full and the other's
    exits are a minute old, however short each agent's life; until then both are kept."""
    from batchyard.runtime import launcher

    full, other = tmp_path / "exits.0", tmp_path / "exits.1"
    filled = b'{"id": "job|task|1", "exit": 0}\n' * (launcher.JOURNAL_SWITCH_BYTES // 30)
    full.write_bytes(filled)
    other.write_bytes(b'{"id": "job|other|1", "exit": 0}\n')

    def next_agent_writes(line: bytes) -> None:
        fds = [os.open(path, os.O_WRONLY | os.O_APPEND) for path in (full, other)]
        try:
            launcher.Journal(fds).write(line)
        finally:
            for fd in fds:
                os.close(fd)

    recent = time.time() - launcher.JOURNAL_KEEP_SECONDS / 2
    os.utime(other, (recent, recent))
    next_agent_writes(b'{"id": "job|new|1", "exit": 1}\n')  # the other's exits may not be recorded yet
    assert full.read_bytes() == filled + b'{"id": "job|new|1", "exit": 1}\n'
    assert other.read_bytes() == b'{"id": "job|other|1", "exit": 0}\n'

    long_ago = time.time() - launcher.JOURNAL_KEEP_SECONDS - 5
    os.utime(other, (long_ago, long_ago))
    next_agent_writes(b'{"id": "job|newer|1", "exit": 2}\n')
    assert other.read_bytes() == b'{"id": "job|newer|1", "exit": 2}\n'  # emptied, and in use
    assert full.read_bytes() == filled + b'{"id": "job|new|1", "exit": 1}\n'
