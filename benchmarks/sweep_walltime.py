"""Wall time of one sweep run one job at a time vs two side by side (Hydra launchers), same results.

    python benchmarks/sweep_walltime.py                # 4 tiny-model runs: joblib n_jobs=1, then n_jobs=2
    python benchmarks/sweep_walltime.py --ray          # and a local Ray (2 CPUs, 1 per job) as a third
    python benchmarks/sweep_walltime.py --runs 8 --labels 32

Each setting runs the same sweep (``seed=0..N-1``, the tiny random GPT-2, the simulated judge, DPO with
LoRA) into its own directory under --out, with threads=1 in every job so the arithmetic is the same in
all settings. It prints each setting's wall time, the speed-up over one job at a time, and whether every
run's results are identical across settings (the sha256 of its preferences.jsonl and the win-rates in its
summary.json). Needs ``pip install 'rlaif[cluster]'``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAST = ["policy=tiny", "generator=hf", "oracle=simulated", "task.train_prompts=48", "task.eval_prompts=12",
        "eval.prompts=12", "eval.bootstrap=200", "task.max_new_tokens=8", "task.min_new_tokens=4",
        "trainer.epochs=1", "trainer.batch_size=8", "trainer.micro_batch_size=8", "threads=1"]
SETTINGS = {  # name -> launcher overrides
    "joblib, 1 job at a time": ["hydra/launcher=rlaif_joblib", "hydra.launcher.n_jobs=1"],
    "joblib, 2 jobs at a time": ["hydra/launcher=rlaif_joblib", "hydra.launcher.n_jobs=2"],
}
RAY = {"ray (local), 2 jobs at a time": ["hydra/launcher=rlaif_ray", "hydra.launcher.ray.remote.num_cpus=1",
                                         "+hydra.launcher.ray.init.num_cpus=2"]}


def run_sweep(out: Path, launcher: list[str], n: int, labels: int) -> float:
    """One sweep of ``n`` seeds into ``out``; its wall time in seconds (the whole command: start-up too)."""
    cmd = [sys.executable, "-m", "rlaif", "run", "-m", *launcher, *FAST, f"budget.labels={labels}",
           f"budget.labels_per_round={max(1, labels // 2)}", f"seed={','.join(map(str, range(n)))}",
           f"hydra.sweep.dir={out}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    if "RAY_AUTH_MODE" not in env:  # a token of its own: a new local Ray would otherwise write ~/.ray/auth_token
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    took = time.perf_counter() - t
    if r.returncode:
        sys.exit(f"the sweep {out} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    return took


def results(sweep_dir: Path) -> dict[str, tuple]:
    """Each run (by its directory name): the hash of its labelled pairs and its win-rates and rewards."""
    out = {}
    for s in sorted(sweep_dir.rglob("summary.json")):
        summary = json.loads(s.read_text())
        prefs = hashlib.sha256((s.parent / "preferences.jsonl").read_bytes()).hexdigest()[:16]
        out[s.parent.name] = (prefs, summary["labels"], summary["decisive_labels"], summary.get("gold_winrate"),
                              summary.get("gold_reward"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=4, help="runs in the sweep (seeds 0..N-1)")
    ap.add_argument("--labels", type=int, default=16, help="labels per run, in two rounds")
    ap.add_argument("--ray", action="store_true", help="also through the Ray launcher (a local Ray, ~1 min more)")
    ap.add_argument("--out", default=None, help="where the sweeps go (default: multirun/sweep_walltime/<time>)")
    a = ap.parse_args()
    out = Path(a.out or ROOT / "multirun" / "sweep_walltime" / time.strftime("%Y-%m-%d_%H-%M-%S")).resolve()
    print(f"{a.runs} runs (tiny model, {a.labels} labels in 2 rounds, threads=1 each) on {os.cpu_count()} cores "
          f"-> {out}")
    settings = dict(SETTINGS)
    if a.ray:  # its session files in a short directory of its own (Ray's socket paths must stay short)
        temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
        settings.update({k: v + [f"+hydra.launcher.ray.init._temp_dir={temp}"] for k, v in RAY.items()})
    times, res = {}, {}
    try:
        for i, (name, launcher) in enumerate(settings.items()):
            times[name] = run_sweep(out / f"s{i}", launcher, a.runs, a.labels)
            res[name] = results(out / f"s{i}")
            print(f"  {name:<32} {times[name]:7.1f} s   ({len(res[name])} runs)", flush=True)
    finally:
        if a.ray:
            shutil.rmtree(temp, ignore_errors=True)
    base = next(iter(settings))
    for name in list(settings)[1:]:
        print(f"  speed-up of '{name}' over '{base}': {times[base] / times[name]:.2f}x")
    ok = True
    for name in list(settings)[1:]:
        same = res[name] == res[base] and len(res[base]) == a.runs
        ok &= same
        print(f"  results of '{name}' identical to '{base}': {'yes' if same else 'NO'}")
    for run, r in res[base].items():
        print(f"    {run}: preferences.jsonl sha256 {r[0]}, {r[1]} labels ({r[2]} decisive), gold win-rate "
              f"{r[3] if r[3] is None else f'{100 * r[3]:.1f}%'}, gold reward {r[4]}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
