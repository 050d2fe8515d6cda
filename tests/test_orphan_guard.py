"""The orphan guard: children a process started (vLLM's engines) do not outlive its kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil

PARENT = textwrap.dedent("""
    import subprocess, sys, time
    from rlaif.generator import orphan_guard
    old = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # not the engine's
    before = orphan_guard.children_pids()
    engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    g = orphan_guard.guard(before)
    print(old.pid, engine.pid, g.proc.pid, flush=True)
    if sys.argv[1] == "stop":
        g.stop()
        print("stopped", flush=True)
    time.sleep(600)
""")


def _start(mode: str):
    p = subprocess.Popen([sys.executable, "-c", PARENT, mode], stdout=subprocess.PIPE, text=True,
                         start_new_session=True)
    old, engine, watcher = map(int, p.stdout.readline().split())
    return p, old, engine, watcher


def _gone(pid: int, within: float) -> bool:
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_kill_9_of_the_parent_stops_the_guarded_children_only():
    p, old, engine, watcher = _start("run")
    try:
        assert not _gone(engine, 1.0)  # the guard leaves a living parent's children alone
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        assert _gone(engine, 10.0), "the guarded child outlived its killed parent"
        assert _gone(watcher, 10.0)
        assert not _gone(old, 0.5)  # a child started before the guard is not its business
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_stopped_guard_kills_nothing():
    p, old, engine, watcher = _start("stop")
    try:
        assert p.stdout.readline().strip() == "stopped"
        assert _gone(watcher, 5.0)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        assert not _gone(engine, 2.0)
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
