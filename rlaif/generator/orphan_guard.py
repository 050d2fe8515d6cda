"""Stop vLLM's engine processes when the process that started them dies without stopping them.

vLLM runs its engine core in child processes that do not watch their parent: when the parent is
killed with SIGKILL (``kill -9``, the kernel's OOM killer), the engines keep running, holding
their memory (about 2 GB each on CPU) until someone kills them by hand. A scheduler that kills the
whole process group takes them along; a kill of the main process alone does not.

So after the engine starts, :func:`guard` starts a small watcher process (its own session, so a
signal to the job's process group does not reach it first) with the engines' pids and start
times. Every half second it checks whether its parent is still the process that started it. When
it is not, it sends SIGTERM to the engines that are still the same processes (a pid can be reused:
the start time must match), waits, then SIGKILLs what is left, and exits. A normal shutdown stops
the watcher first (:meth:`Guard.stop`).

    python -m rlaif.generator.orphan_guard PARENT_PID PID:START_TIME ...
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

POLL_S = 0.5
GRACE_S = 5.0


class Guard:
    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def guard(before: set[int]) -> Guard | None:
    """Watch this process's children that were not in ``before`` (the pids of the children it
    had before starting the engine). None when it started none."""
    me = psutil.Process()
    procs = [p for p in me.children(recursive=True) if p.pid not in before]
    if not procs:
        return None
    args = []
    for p in procs:
        try:
            args.append(f"{p.pid}:{p.create_time()!r}")
        except psutil.Error:
            continue
    proc = subprocess.Popen([sys.executable, "-m", "rlaif.generator.orphan_guard", str(os.getpid()), *args],
                            stdin=subprocess.DEVNULL, start_new_session=True)
    return Guard(proc)


def children_pids() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _same(pid: int, started: float) -> psutil.Process | None:
    try:
        p = psutil.Process(pid)
        return p if abs(p.create_time() - started) < 1e-3 and p.is_running() else None
    except psutil.Error:
        return None


def main(argv: list[str]) -> int:
    parent = int(argv[0])
    watched = [(int(pid), float(t)) for pid, _, t in (a.partition(":") for a in argv[1:])]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a normal shutdown: nothing to do
    while os.getppid() == parent:
        time.sleep(POLL_S)
    alive = [p for pid, t in watched if (p := _same(pid, t)) is not None]
    for p in alive:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(alive, timeout=GRACE_S)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
