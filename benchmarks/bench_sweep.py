"""Does active selection pay at this size? Run the apl_vs_random sweep and print label efficiency.

    python benchmarks/bench_sweep.py                      # tiny model, 5 arms x 5 seeds (~15-25 min, 2 cores)
    python benchmarks/bench_sweep.py --seeds 3 --arms random,certainty
    python benchmarks/bench_sweep.py --smollm2            # the real CPU-scale experiment (hours)

Runs ``rlaif run -m +experiment=apl_vs_random`` (conf/experiment/apl_vs_random.yaml) -- with the
tiny random GPT-2 and a small budget unless --smollm2 -- then ``rlaif report`` on the multirun
directory, and prints each arm's label-efficiency ratio against random with its 95% bootstrap
interval over seeds. The tiny model is an untrained network: its numbers exercise the pipeline,
they say nothing about SmolLM2 or the paper.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARMS = "random,entropy,certainty,hybrid,hybrid_reuse"
TINY = ["policy=tiny", "task.train_prompts=400", "task.eval_prompts=16", "eval.prompts=16", "eval.bootstrap=200",
        "task.max_new_tokens=8", "task.min_new_tokens=4", "trainer.epochs=1", "trainer.batch_size=8",
        "trainer.micro_batch_size=8", "budget.labels=24", "budget.labels_per_round=8"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smollm2", action="store_true", help="SmolLM2-135M at the experiment's CPU scale (hours)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--arms", default=ARMS)
    ap.add_argument("--out", default=None, help="multirun directory (default: multirun/bench_sweep/<time>)")
    ap.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    ap.add_argument("--report-only", action="store_true", help="skip the sweep: report an existing --out")
    ap.add_argument("overrides", nargs="*", help="extra rlaif run overrides")
    a = ap.parse_args()
    if "random" not in a.arms.split(","):
        ap.error("--arms must include random (the reference)")
    out = Path(a.out or ROOT / "multirun" / "bench_sweep" / time.strftime("%Y-%m-%d_%H-%M-%S")).resolve()
    cmd = [sys.executable, "-m", "rlaif", "run", "-m", "+experiment=apl_vs_random", f"+cpu_arm={a.arms}",
           f"seed={','.join(map(str, range(a.seeds)))}", f"threads={a.threads}", f"hydra.sweep.dir={out}",
           *([] if a.smollm2 else TINY), *a.overrides]
    if not a.report_only:
        print("$", " ".join(cmd), flush=True)
        t = time.time()
        r = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL if not os.environ.get("VERBOSE") else None)
        if r.returncode:
            print(f"the sweep failed (exit {r.returncode}); rerun with VERBOSE=1 to see its log", file=sys.stderr)
            return r.returncode
        print(f"sweep: {len(a.arms.split(','))} arms x {a.seeds} seeds in {(time.time() - t) / 60:.1f} min -> {out}")
    from rlaif.report import build_report

    res = build_report([out])
    effs = res["efficiency"]
    print(f"\nlabel efficiency vs random ({res['metric']}; target = random's final mean "
          f"{100 * effs[0].target:.1f}%; policy {res['runs'][0].policy}; {a.seeds} seeds per arm):")
    print(f"  {'arm':<14}{'labels needed':>14}  ratio [95% bootstrap CI over seeds]")
    for e in effs:
        need = "never" if e.labels_needed is None else f"{e.labels_needed:.1f}"
        if e.arm == "random":
            cell = "1.00 (reference)"
        elif e.ratio is None:
            cell = f"never reached the target ({100 * e.never_share:.0f}% of resamples never do)"
        else:
            hi = "inf" if e.hi == float("inf") else f"{e.hi:.2f}"
            cell = f"{e.ratio:.2f} [{e.lo:.2f}, {hi}]" + (f"  ({100 * e.never_share:.0f}% of resamples never reach)"
                                                          if e.never_share else "")
        print(f"  {e.arm:<14}{need:>14}  {cell}")
    ref = max((p for p in res["points"][res["metric"]] if p.arm == "random"), key=lambda p: p.labels)
    if ref.lo <= 0.5:
        print(f"\nCAUTION: random's final win-rate {100 * ref.mean:.1f}% [{100 * ref.lo:.1f}, {100 * ref.hi:.1f}] does "
              f"not clear 50%: the target is noise, so these ratios say nothing about the arms.")
    print(f"\nreport: {res['out'] / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
