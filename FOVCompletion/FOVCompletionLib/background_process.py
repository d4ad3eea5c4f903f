"""A child process whose output is read without blocking the caller: reader thread + queue + `poll()`.

The Slicer widget calls `poll()` from a QTimer, so lines are handled on the GUI thread while the thread only
reads. The child's stdin is a pipe kept open for its whole life: `cancel()` first asks politely (a `cancel` line,
then end-of-file), and a child that watches its stdin (the engine's `--watch-stdin`) also stops by itself when
this process dies and the pipe closes. After a short grace period the whole process tree is killed: `PythonSlicer`
is a launcher that starts the real Python as a child, so killing only the direct child would leave the computation
running. `requestCancel()` does this without blocking (the kill, if needed, happens in a later `poll()`), so the GUI
stays responsive while the child stops; `cancel()` blocks until the child is gone, for callers that must not
return before (a scene that closes, a module that unloads).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence

_LINE = "line"
_EXIT = "exit"
CANCEL_REQUEST = "cancel\n"
GRACE_PERIOD_S = 3.0  # how long a cancelled child may take to stop by itself before its tree is killed


def childProcessOptions() -> dict:
    """subprocess options for an engine process: no console window on Windows, and a process group of its own
    everywhere, so that a cancel can kill the whole tree (`killProcessTree`)."""
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NO_WINDOW | subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def killProcessTree(process: subprocess.Popen) -> None:
    """Kill a process and every descendant (its process group on POSIX, `taskkill /T` on Windows)."""
    descendants = []
    try:
        import psutil  # optional: also catches descendants that left the process group

        try:
            descendants = psutil.Process(process.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
    except ImportError:
        psutil = None
    if os.name == "nt":
        subprocess.run(
            ["taskkill", "/F", "/T", "/PID", str(process.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
    else:
        try:
            if os.getpgid(process.pid) == process.pid:  # started with start_new_session: its own group
                os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for child in descendants:
        with contextlib.suppress(psutil.Error):
            child.kill()
    if process.poll() is None:
        with contextlib.suppress(OSError):
            process.kill()


class BackgroundProcess:
    """Runs `args`; `poll()` returns the output lines (stdout and stderr merged) that arrived since last time."""

    def __init__(
        self,
        args: Sequence[str],
        environment: Mapping[str, str] | None = None,
        workingDirectory: str | os.PathLike | None = None,
    ) -> None:
        self.args = [str(a) for a in args]
        self.environment = dict(environment) if environment is not None else None
        self.workingDirectory = workingDirectory
        self.process: subprocess.Popen | None = None
        self.returnCode: int | None = None
        self.cancelled = False
        self._killDeadline: float | None = None  # set by requestCancel(): when poll() kills the tree
        self._queue: queue.Queue = queue.Queue()
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError("the process was already started")
        options = childProcessOptions()
        self.process = subprocess.Popen(
            self.args,
            stdin=subprocess.PIPE,  # kept open: closing it (or our death) tells the child to stop
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.environment,
            cwd=self.workingDirectory,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **options,
        )
        self._reader = threading.Thread(
            target=self._readOutput, name="FOVCompletion output reader", daemon=True
        )
        self._reader.start()

    def _readOutput(self) -> None:
        process = self.process
        try:
            for line in iter(process.stdout.readline, ""):
                self._queue.put((_LINE, line.rstrip("\r\n")))
        except (OSError, ValueError):  # pipe closed under us (killed): nothing more to read
            pass
        finally:
            self._queue.put((_EXIT, process.wait()))

    @property
    def running(self) -> bool:
        return self.process is not None and self.returnCode is None

    def poll(self) -> list[str]:
        """Lines received since the last call; sets `returnCode` once the process ended and all output is read.
        After `requestCancel()`, also kills the process tree once its grace period is over."""
        self._killIfOverdue()
        lines = []
        while True:
            try:
                kind, value = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind == _LINE:
                lines.append(value)
            else:
                self.returnCode = int(value)
                self._closeStdin()
        return lines

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> list[str]:
        """Block until the process ended (or `timeout` seconds); returns the lines read meanwhile."""
        deadline = None if timeout is None else time.monotonic() + timeout
        lines = []
        while self.running:
            lines += self.poll()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the process did not end within {timeout} s")
            if self.running:
                time.sleep(interval)
        return lines

    def _closeStdin(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.process.stdin.close()

    def requestStop(self) -> None:
        """Ask the child to stop: a `cancel` line on its stdin, then end-of-file (it may already be gone)."""
        with contextlib.suppress(OSError, ValueError):  # BrokenPipeError when the child ended already
            self.process.stdin.write(CANCEL_REQUEST)
            self.process.stdin.flush()
        self._closeStdin()

    def requestCancel(self, gracePeriod: float = GRACE_PERIOD_S) -> None:
        """Ask the child to stop and return at once; a child still running `gracePeriod` seconds later has its
        process tree killed by the next `poll()`. `returnCode` is set, as always, by the `poll()` that reads
        the end of the output."""
        if self.process is None or self.returnCode is not None or self.cancelled:
            return
        self.cancelled = True
        self.requestStop()
        self._killDeadline = time.monotonic() + gracePeriod

    def _killIfOverdue(self) -> None:
        if self._killDeadline is None or time.monotonic() < self._killDeadline:
            return
        self._killDeadline = None
        if self.process.poll() is None:
            killProcessTree(self.process)

    def cancel(self, gracePeriod: float = GRACE_PERIOD_S, timeout: float = 10.0) -> None:
        """Ask the child to stop, give it `gracePeriod` seconds (at most what an earlier `requestCancel()` left),
        then kill the process tree and wait (briefly) until it is gone; the output read so far stays queued."""
        if self.process is None or self.returnCode is not None:
            return
        self.requestCancel(gracePeriod)
        deadline = min(self._killDeadline or 0.0, time.monotonic() + gracePeriod)
        while self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        self._killDeadline = None
        if self.process.poll() is None:
            killProcessTree(self.process)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
