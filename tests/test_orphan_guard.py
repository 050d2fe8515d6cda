"""The orphan guard: children a process started (vLLM's engines) do not outlive its kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from helpers import kill_group, rlaif_popen, tiny

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
        kill_group(p.pid)


def test_a_stopped_guard_kills_nothing():
    p, old, engine, watcher = _start("stop")
    try:
        assert p.stdout.readline().strip() == "stopped"
        assert _gone(watcher, 5.0)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        assert not _gone(engine, 2.0)
    finally:
        kill_group(p.pid)


EARLY = textwrap.dedent("""
    import subprocess, sys, time
    from rlaif.generator import orphan_guard
    old = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # not the engine's
    g = orphan_guard.guard()  # before the engine's processes exist, as the vLLM generator does now
    time.sleep(float(sys.argv[1]))
    # an "engine core" that starts its own "worker", as vLLM's does
    engine = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               "w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
                               "print(w.pid, flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    worker = int(engine.stdout.readline())
    print(old.pid, engine.pid, worker, g.proc.pid, flush=True)
    time.sleep(600)
""")


@pytest.mark.parametrize("delay", [0.0, 1.5])
def test_a_kill_during_start_up_leaves_nothing_behind(delay):
    """The guard runs from before the engine exists: a kill -9 right after its processes appear
    (before the watcher has looked, or after) stops the engine core and its worker."""
    p = subprocess.Popen([sys.executable, "-c", EARLY, str(delay)], stdout=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        old, engine, worker, watcher = map(int, p.stdout.readline().split())
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        assert _gone(engine, 20.0) and _gone(worker, 20.0), "the engine outlived its killed parent"
        assert _gone(watcher, 20.0)
        assert not _gone(old, 0.5)  # a child started before the guard is not its business
    finally:
        kill_group(p.pid)


def _group(pgid: int) -> list[psutil.Process]:
    out = []
    for q in psutil.process_iter():
        try:
            if os.getpgid(q.pid) == pgid and q.status() != psutil.STATUS_ZOMBIE:
                out.append(q)
        except (OSError, psutil.Error):
            continue
    return out


@pytest.mark.slow
@pytest.mark.vllm
def test_rlaif_run_killed_while_the_vllm_engine_starts_leaves_nothing(tmp_path):
    """kill -9 of `rlaif run` during vLLM's engine start-up (engine core and worker up, engine not
    ready): nothing of the run's process tree survives 20 s."""
    pytest.importorskip("vllm")
    run = tiny("generator=vllm", "oracle=simulated", "budget.labels=8", "budget.labels_per_round=8",
               "task.train_prompts=16", "task.eval_prompts=4", "eval.prompts=4", "task.gold=null", "threads=1")
    p = rlaif_popen("run", *run, f"hydra.run.dir={tmp_path}/run", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                    start_new_session=True)
    try:
        deadline = time.time() + 400
        while True:  # the engine core (a child of the run) has started its worker (a grandchild)
            assert p.poll() is None, p.stderr.read()[-3000:]
            assert time.time() < deadline, "the vLLM engine did not start"
            try:
                kids = psutil.Process(p.pid).children()
                if any(k.children() for k in kids if "orphan_guard" not in " ".join(k.cmdline())):
                    break
            except psutil.Error:
                pass
            time.sleep(0.05)
        assert not (tmp_path / "run" / "eval_reference.jsonl").exists()  # the engine is not serving yet
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        deadline = time.time() + 20
        while _group(p.pid):
            assert time.time() < deadline, f"outlived the killed run by 20 s: {[q.name() for q in _group(p.pid)]}"
            time.sleep(0.2)
    finally:
        kill_group(p.pid)
