"""Sweeps through Hydra's launcher plugins (``rlaif run -m hydra/launcher=...``), for real, on the tiny model:
joblib (jobs side by side here), submitit's local executor (SLURM's code path without SLURM), and Ray on a
local cluster that the test starts. Each test is skipped when its plugin is not installed
(``pip install 'rlaif[cluster]'``).

What they check: the task function travels to the worker processes, each job has its own run directory
under the sweep directory (the one ``rlaif report`` reads, whatever the worker's working directory), the
jobs' torch threads are their share of the cores, and a failing job is reported in one line while the
other jobs run to their end.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import helpers
from helpers import ROOT, free_port, kill_group, tiny

# one round of 8 labels, a few prompts: seconds a run (most of a job is loading torch and the models)
FAST = tiny("oracle=simulated", "task.train_prompts=32", "task.eval_prompts=8", "eval.prompts=8",
            "eval.bootstrap=50", "trainer.batch_size=4", "trainer.micro_batch_size=4", "budget.labels=8",
            "budget.labels_per_round=8")
FAST = [o for o in FAST if not o.startswith("threads=")]  # the launcher sets each job's threads


def plugin(name: str) -> None:
    pytest.importorskip(f"hydra_plugins.hydra_{name}_launcher", reason=f"hydra-{name}-launcher not installed")


def env(**extra: str) -> dict[str, str]:
    """For a child started outside the checkout: rlaif importable from it (and from its workers)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return helpers.rlaif_env(full_error=False, PYTHONPATH=path, **extra)


def sweep(cwd: Path, *args: str, timeout: float = 400, child_env: dict | None = None) -> subprocess.CompletedProcess:
    """``rlaif run -m FAST *args`` with ``cwd`` as its working directory (a relative hydra.sweep.dir is there)."""
    cwd.mkdir(parents=True, exist_ok=True)
    return helpers.rlaif("run", "-m", *FAST, *args, timeout=timeout, env=child_env or env(), cwd=cwd)


def runs(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent for p in sweep_dir.rglob("summary.json"))


def check_runs(sweep_dir: Path, n: int, threads: int | None) -> list[dict]:
    got = runs(sweep_dir)
    assert [p.parent for p in got] == [sweep_dir] * n, got
    configs = [json.loads((p / "config.json").read_text()) for p in got]
    if threads is not None:
        assert [c["threads"] for c in configs] == [threads] * n
    for p in got:
        assert (p / ".hydra" / "overrides.yaml").is_file() and (p / "preferences.jsonl").is_file()
    return configs


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def test_joblib_two_jobs_side_by_side(tmp_path):
    plugin("joblib")
    r = sweep(tmp_path, "hydra/launcher=rlaif_joblib", "seed=0,1", "hydra.sweep.dir=mr")  # relative: in cwd
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    configs = check_runs(tmp_path / "mr", 2, threads=max(1, cores() // 2))  # n_jobs=2 share the cores
    assert sorted(c["seed"] for c in configs) == [0, 1]


def test_a_failed_job_is_one_line_and_the_others_finish(tmp_path):
    plugin("joblib")
    r = sweep(tmp_path, "hydra/launcher=rlaif_joblib", "trainer.beta=-1,0.1", "hydra.sweep.dir=mr")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    line = [x for x in r.stderr.splitlines() if x.startswith("rlaif: error: job #")]
    assert len(line) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "job #0 (" in line[0] and "trainer.beta=-1)" in line[0] and "trainer.beta must be positive" in line[0]
    assert str(tmp_path / "mr" / "0-random-s0") in line[0] and "threads=$" not in line[0]
    done = runs(tmp_path / "mr")
    assert [p.name for p in done] == ["1-random-s0"]  # the good job ran to its end
    assert not (tmp_path / "mr" / "0-random-s0" / "config.json").exists()  # refused before writing


def test_submitit_local_two_jobs(tmp_path):
    plugin("submitit")
    r = sweep(tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1",
              "hydra.launcher.timeout_min=10", "seed=0,1", "hydra.sweep.dir=mr")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    check_runs(tmp_path / "mr", 2, threads=1)  # its cpus_per_task
    logs = list((tmp_path / "mr" / ".submitit").rglob("*_log.out"))
    assert len(logs) == 2 and all("rlaif run finished" in p.read_text() for p in logs)


def ray_env() -> dict[str, str]:
    """The cluster's and the driver's: a token of this test's own (Ray 2.5x turns token authentication on when
    ~/.ray/auth_token exists, and a new local Ray writes that file: neither is read nor written here)."""
    return env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))


def ray_head(port: int, cwd: Path, temp: str, env: dict[str, str]) -> subprocess.Popen:
    """``ray start --head --block`` on loopback, 2 CPUs, in its own process group; returns once it is up."""
    ray = Path(sys.executable).with_name("ray")
    log = open(cwd / "ray.log", "w+")
    proc = subprocess.Popen([str(ray), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                             f"--temp-dir={temp}", f"--ray-client-server-port={free_port()}"],
                            cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while "Ray runtime started" not in (cwd / "ray.log").read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            kill_group(proc.pid)
            pytest.fail(f"ray start failed: {(cwd / 'ray.log').read_text()[-3000:]}")
        time.sleep(0.5)
    return proc


def test_ray_two_jobs_on_a_local_cluster_then_report(tmp_path):
    plugin("ray")
    pytest.importorskip("ray")
    head_cwd, driver_cwd = tmp_path / "head", tmp_path / "driver"
    head_cwd.mkdir()
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths live under it
    cluster_env = ray_env()
    head = ray_head(port, head_cwd, temp, cluster_env)
    try:
        # a relative sweep dir: the workers start in the head's directory, the runs must land in the driver's
        r = sweep(driver_cwd, "hydra/launcher=rlaif_ray", f"hydra.launcher.ray.init.address=127.0.0.1:{port}",
                  "hydra.launcher.ray.remote.num_cpus=1", "seed=0,1", "hydra.sweep.dir=mr", child_env=cluster_env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    finally:
        kill_group(head.pid)
        head.wait(30)
        subprocess.run(["rm", "-rf", temp])
    assert not (head_cwd / "mr").exists()
    check_runs(driver_cwd / "mr", 2, threads=1)  # its ray.remote.num_cpus
    rep = helpers.rlaif("report", str(driver_cwd / "mr"), "--bootstrap", "50", timeout=120, env=env())
    assert rep.returncode == 0, rep.stdout[-2000:] + rep.stderr[-2000:]
    rows = list(csv.DictReader((driver_cwd / "mr" / "report" / "runs.csv").open()))
    assert len(rows) == 2 and "(2 runs)" in rep.stdout, rows


# -- without the plugins ----------------------------------------------------------------------------
BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "ray" or name.startswith("hydra_plugins.hydra_ray_launcher"):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Block())
from rlaif.cli import main
sys.argv = ["rlaif", *sys.argv[1:]]
main()
"""


def test_a_missing_launcher_plugin_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-c", BLOCK, "run", "-m", "hydra/launcher=ray", "seed=0,1",
                        f"hydra.sweep.dir={tmp_path}/mr"], capture_output=True, text=True, timeout=120, env=env(),
                       cwd=tmp_path)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stderr.strip().splitlines() == [
        "rlaif: error: hydra/launcher=ray needs the hydra-ray-launcher plugin (No module named "
        "'hydra_plugins.hydra_ray_launcher'); install the launchers with: pip install 'rlaif[cluster]'"]
    assert not (tmp_path / "mr").exists()


def test_launcher_overrides():
    from rlaif.cli.common import with_launcher_overrides as w

    pin = "+hydra.callbacks.rlaif_pin_sweep_dir={_target_:rlaif.cli.common.PinSweepDir}"
    assert w(["-m", "hydra/launcher=ray", "seed=0,1"]) == [
        "-m", "hydra/launcher=ray", pin, "threads=${rlaif.job_threads:}", "seed=0,1"]
    assert w(["-m", "hydra/launcher=joblib", "threads=3"]) == ["-m", "hydra/launcher=joblib", pin, "threads=3"]
    for args in (["hydra/launcher=ray", "seed=0"], ["-m", "hydra/launcher=basic"], ["-m", "seed=0,1"]):
        assert w(args) == args  # a single run, Hydra's basic launcher: nothing added
