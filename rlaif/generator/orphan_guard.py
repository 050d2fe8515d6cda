"""Stop vLLM's engine processes when the process that started them dies without stopping them.

vLLM runs its engine core in child processes that do not watch their parent: when the parent is
killed with SIGKILL (``kill -9``, the kernel's OOM killer), the engines keep running, holding
their memory (about 2 GB each on CPU) until someone kills them by hand. A scheduler that kills the
whole process group takes them along; a kill of the main process alone does not.

So *before* the engine starts, :func:`guard` starts a small watcher process (its own session, so a
signal to the job's process group does not reach it first). Every :data:`POLL_S` it records the
processes its parent started since (pid and start time; those it had before are not its business)
and checks whether its parent is still the process that started it. When it is not, it sends
SIGTERM to those processes and their descendants, and to the parent's orphans it had no time to
see yet (same process group, started since the last look, now children of the same reaper as the
watcher), waits, then SIGKILLs what is left, and exits. A kill during the engine's start-up (the
engine core up, its worker not yet) is covered too: the engine core's children are found from it.
A normal shutdown stops the watcher first (:meth:`Guard.stop`).

    python -m rlaif.generator.orphan_guard PARENT_PID --track EXCLUDED_PID,... PGID
    python -m rlaif.generator.orphan_guard PARENT_PID PID:START_TIME ...     (a fixed list)
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


def guard(before: set[int] | None = None) -> Guard:
    """Start the watcher now: it stops every process this one starts from now on (and their
    descendants) if this process dies without stopping it. ``before``: the pids of the children
    this process had already (default: those it has now); they are left alone."""
    if before is None:
        before = children_pids()
    me = os.getpid()
    proc = subprocess.Popen([sys.executable, "-m", "rlaif.generator.orphan_guard", str(me), "--track",
                             ",".join(map(str, sorted(before))) or "-", str(os.getpgid(0))],
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


def _stop(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=GRACE_S)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


def _tree(procs: list[psutil.Process]) -> list[psutil.Process]:
    """``procs`` (those still the same processes) and all their descendants."""
    out: dict[int, psutil.Process] = {}
    for p in procs:
        try:
            if not p.is_running():
                continue
            out[p.pid] = p
            for c in p.children(recursive=True):
                out.setdefault(c.pid, c)
        except psutil.Error:
            continue
    return list(out.values())


class _Tracker:
    """The parent's descendants started since ``t0``, outside the subtrees of ``exclude``."""

    def __init__(self, parent: int, exclude: set[int], pgid: int | None) -> None:
        self.parent, self.exclude, self.pgid = parent, exclude, pgid
        self.seen: dict[int, psutil.Process] = {}
        # times on psutil's clock (process start times; it can be a second off time.time()): the
        # watcher started before anything it guards, and the clock runs on from its start (late by
        # the interpreter's start-up, which only widens the window of orphans it considers)
        self.t0 = psutil.Process().create_time()
        self._mono0 = time.monotonic()
        self.last_look = self.t0

    def now(self) -> float:
        return self.t0 + time.monotonic() - self._mono0

    def look(self) -> None:
        t = self.now()
        kids: dict[int, list[psutil.Process]] = {}
        for p in psutil.process_iter(["ppid"]):  # one pass over /proc
            kids.setdefault(p.info["ppid"], []).append(p)
        me, todo = os.getpid(), [self.parent]
        found: dict[int, psutil.Process] = {}
        while todo:
            for c in kids.get(todo.pop(), []):
                if c.pid in self.exclude or c.pid == me or c.pid in found:
                    continue
                found[c.pid] = c
                todo.append(c.pid)
        # keep what is still running (a long run starts and ends many short-lived processes)
        self.seen = {pid: p for pid, p in self.seen.items() if pid in found or p.is_running()}
        for pid, p in found.items():
            self.seen.setdefault(pid, p)
        self.last_look = t

    def orphans(self) -> list[psutil.Process]:
        """The dead parent's children started after the last look: they are the watcher's siblings now
        (the same reaper adopted them), in the parent's process group."""
        if self.pgid is None:
            return []
        reaper, out = os.getppid(), []
        for p in psutil.process_iter(["ppid", "create_time"]):
            try:
                if (p.pid != os.getpid() and p.info["ppid"] == reaper and p.info["create_time"] >= self.t0
                        and p.info["create_time"] >= self.last_look - 0.5 and os.getpgid(p.pid) == self.pgid
                        and p.pid not in self.exclude):
                    out.append(p)
            except (psutil.Error, OSError):
                continue
        return out


def main(argv: list[str]) -> int:
    parent = int(argv[0])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a normal shutdown: nothing to do
    if len(argv) >= 2 and argv[1] == "--track":
        exclude = {int(x) for x in argv[2].split(",") if x.strip().isdigit()} if len(argv) > 2 else set()
        tracker = _Tracker(parent, exclude, int(argv[3]) if len(argv) > 3 else None)
        while os.getppid() == parent:
            tracker.look()
            time.sleep(POLL_S)
        # the parent is gone: its processes, the orphans it left since the last look, all their
        # descendants -- again until none is left (one may have been starting a child meanwhile)
        for _ in range(5):
            procs = _tree(list(tracker.seen.values()) + tracker.orphans())
            if not procs:
                break
            _stop(procs)
        return 0
    watched = [(int(pid), float(t)) for pid, _, t in (a.partition(":") for a in argv[1:])]
    while os.getppid() == parent:
        time.sleep(POLL_S)
    _stop([p for pid, t in watched if (p := _same(pid, t)) is not None])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
