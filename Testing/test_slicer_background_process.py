"""The background process runner: non-blocking output, exit codes, cancel asking through stdin first and then
killing the whole tree, blocking (`cancel`) or from later polls (`requestCancel`)."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FOVCompletion"))
from FOVCompletionLib.background_process import BackgroundProcess

SCRIPT = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    mode = sys.argv[1]
    print(json.dumps({"event": "start", "total_steps": 3, "slices": 1, "windows": 1, "device": "cpu"}), flush=True)
    print("a log line on stderr", file=sys.stderr, flush=True)
    if mode == "watch":
        # like the engine's --watch-stdin: stop on a "cancel" line or when stdin closes
        print(json.dumps({"event": "progress", "step": 1, "total": 3}), flush=True)
        line = sys.stdin.readline()
        print("stdin said " + (line.strip() or "EOF"), flush=True)
        sys.exit(130)
    if mode == "hang":
        # a grandchild, as behind the PythonSlicer launcher; it records its pid and sleeps
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open(sys.argv[2], "w").write(str(child.pid))
        print(json.dumps({"event": "progress", "step": 1, "total": 3}), flush=True)
        time.sleep(60)
    for step in (1, 2, 3):
        print(json.dumps({"event": "progress", "step": step, "total": 3}), flush=True)
    sys.exit(int(mode))
    """
)


@pytest.fixture()
def script(tmp_path) -> Path:
    path = tmp_path / "engine.py"
    path.write_text(SCRIPT)
    return path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a killed child of a still-running parent is a zombie until reaped: count it as dead
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def test_output_and_exit_code(script):
    process = BackgroundProcess([sys.executable, str(script), "3"])
    assert not process.running
    process.start()
    lines = process.wait(timeout=30)
    assert process.returnCode == 3 and not process.running and not process.cancelled
    assert lines[0].startswith('{"event": "start"')
    assert "a log line on stderr" in lines  # stderr merged into the log
    assert sum('"progress"' in line for line in lines) == 3
    with pytest.raises(RuntimeError):
        process.start()


def test_poll_never_blocks(script, tmp_path):
    process = BackgroundProcess([sys.executable, str(script), "hang", str(tmp_path / "pid")])
    process.start()
    try:
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            before = time.monotonic()
            process.poll()
            assert time.monotonic() - before < 0.2  # the child is sleeping; poll must return at once
            time.sleep(0.05)
        assert process.running
    finally:
        process.cancel(gracePeriod=0)  # this child ignores its stdin


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="uses /proc to observe the grandchild")
def test_cancel_kills_the_process_tree(script, tmp_path):
    pid_file = tmp_path / "pid"
    process = BackgroundProcess([sys.executable, str(script), "hang", str(pid_file)])
    process.start()
    wait_for_progress(process)
    grandchild = int(pid_file.read_text())
    assert alive(grandchild)
    started = time.monotonic()
    process.cancel(gracePeriod=0.5)  # this child ignores its stdin: killed once the grace period is over
    assert 0.5 <= time.monotonic() - started < 5
    assert process.cancelled
    assert process.process.poll() is not None
    deadline = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild)
    process.wait(timeout=5)  # the reader sees the end of output and reports the exit
    assert process.returnCode != 0


def test_wait_times_out(script, tmp_path):
    process = BackgroundProcess([sys.executable, str(script), "hang", str(tmp_path / "pid")])
    process.start()
    try:
        with pytest.raises(TimeoutError):
            process.wait(timeout=0.3)
    finally:
        process.cancel(gracePeriod=0)  # this child ignores its stdin


def wait_for_progress(process) -> list[str]:
    lines = []
    deadline = time.monotonic() + 30
    while not any('"progress"' in line for line in lines):
        assert time.monotonic() < deadline, lines
        lines += process.poll()
        time.sleep(0.05)
    return lines


def test_cancel_asks_through_stdin_first(script):
    process = BackgroundProcess([sys.executable, str(script), "watch"])
    process.start()
    wait_for_progress(process)
    assert not process.process.stdin.closed  # kept open while the child runs
    started = time.monotonic()
    process.cancel()
    assert time.monotonic() - started < 2  # it stopped by itself: no grace period spent, nothing killed
    lines = process.wait(timeout=5)
    assert "stdin said cancel" in lines and process.returnCode == 130 and process.cancelled
    assert process.process.stdin.closed


def test_a_closed_stdin_stops_a_watching_child(script):
    """What the child sees when Slicer dies: the end of its stdin."""
    process = BackgroundProcess([sys.executable, str(script), "watch"])
    process.start()
    wait_for_progress(process)
    process.process.stdin.close()
    lines = process.wait(timeout=10)
    assert "stdin said EOF" in lines and process.returnCode == 130 and not process.cancelled


def test_stdin_is_closed_when_the_child_ends(script):
    process = BackgroundProcess([sys.executable, str(script), "0"])
    process.start()
    process.wait(timeout=30)
    assert process.returnCode == 0 and process.process.stdin.closed
    process.cancel()  # after the end: nothing to do, no error
    assert not process.cancelled


def test_request_cancel_returns_while_the_child_stops_by_itself(script):
    process = BackgroundProcess([sys.executable, str(script), "watch"])
    process.start()
    wait_for_progress(process)
    process.requestCancel(gracePeriod=60)  # it obeys: no kill is ever needed
    assert process.cancelled
    lines = process.wait(timeout=10)
    assert "stdin said cancel" in lines and process.returnCode == 130


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="uses /proc to observe the grandchild")
def test_request_cancel_leaves_the_kill_to_a_poll_after_the_grace_period(script, tmp_path):
    pid_file = tmp_path / "pid"
    process = BackgroundProcess([sys.executable, str(script), "hang", str(pid_file)])
    process.start()
    wait_for_progress(process)
    grandchild = int(pid_file.read_text())
    process.requestCancel(gracePeriod=0.5)  # this child ignores its stdin
    # returned without waiting: the child still runs until a poll after the grace period kills its tree
    assert process.cancelled and process.running and process.process.poll() is None
    process.requestCancel(gracePeriod=0)  # a second request does not move the first one's deadline
    process.poll()
    assert process.process.poll() is None
    process.wait(timeout=10)
    assert process.returnCode != 0 and process.returnCode != 130
    deadline = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild)


def test_cancel_after_a_request_kills_without_a_second_grace_period(script, tmp_path):
    process = BackgroundProcess([sys.executable, str(script), "hang", str(tmp_path / "pid")])
    process.start()
    wait_for_progress(process)
    process.requestCancel(gracePeriod=60)
    process.cancel(gracePeriod=0)  # e.g. the scene closes while a cancel is pending: stop now
    assert process.process.poll() is not None
    process.wait(timeout=10)
    assert process.cancelled and process.returnCode not in (0, 130)
