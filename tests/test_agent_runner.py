"""The command runner's agent (runtime/commands.py): an agent lives while its machine has
work and leaves after an idle time, so an idle machine costs no process; a command started
within the idle time keeps it; commands started together() reach it in one write. Against
a real process that speaks the agent's protocol (JSON lines in, exits out), without a
machine."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

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
