"""rlaif fit-rm: a reward-model ensemble from the labels runs bought, with its held-out agreement.

Reads the decisive train labels of every run's ledger.sqlite, extracts the frozen base policy's
features of both completions (pooled hidden states; cached in --out/features.pt), fits K small
Bradley-Terry heads (each on a bootstrap resample, its own seed) on a training split of the prompts
and reports how often the ensemble agrees with the oracle on the held-out prompts (95% interval).

The ensemble is saved in --out (ensemble.pt + rm.json: heads, feature extractor, report), ready as
a free stand-in judge:  rlaif run oracle=fitted_rm oracle.path=OUT

    rlaif fit-rm runs/random-s0 runs/random-s1 --out rm/ --k 8
"""

from __future__ import annotations

import argparse
import json
import sys

from rlaif.errors import RlaifError


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="rlaif fit-rm", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run directories (each with its ledger.sqlite)")
    ap.add_argument("--out", required=True, help="where the ensemble goes (ensemble.pt, rm.json, report.json)")
    ap.add_argument("--model", default=None, help="the frozen feature model (default: the runs' base policy)")
    ap.add_argument("--layer", type=int, default=-1, help="hidden-state layer (0: embeddings; default -1: last)")
    ap.add_argument("--pooling", choices=("mean", "last"), default="mean", help="over completion tokens")
    ap.add_argument("--k", type=int, default=8, help="heads in the ensemble (default 8)")
    ap.add_argument("--hidden", type=int, default=0, help="hidden units per head (default 0: linear)")
    ap.add_argument("--steps", type=int, default=200, help="Adam steps per head (default 200)")
    ap.add_argument("--held-out", type=float, default=0.2, help="share of prompts held out (default 0.2)")
    ap.add_argument("--seed", type=int, default=0)
    return ap


def main(argv: list[str] | None = None) -> int:
    from rlaif.reward.ensemble import EnsembleConfig
    from rlaif.reward.features import FeatureConfig
    from rlaif.reward.fit import FitConfig, base_policy, fit_rm

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    model = args.model or base_policy(args.runs)
    if model is None:
        print("rlaif fit-rm: error: the runs name no single base policy (config.json); give --model", file=sys.stderr)
        return 2
    cfg = FitConfig(held_out=args.held_out, seed=args.seed,
                    ensemble=EnsembleConfig(k=args.k, hidden=args.hidden, steps=args.steps, seed=args.seed),
                    features=FeatureConfig(model=model, layer=args.layer, pooling=args.pooling))
    try:
        rep = fit_rm(args.runs, args.out, cfg)
    except (RlaifError, FileNotFoundError, ValueError) as e:
        print(f"rlaif fit-rm: error: {e}", file=sys.stderr)
        return 2
    ho = rep["held_out"]
    line = (f"held-out agreement {ho['agreement']:.3f} (95% CI {ho['ci95'][0]:.3f}-{ho['ci95'][1]:.3f}, n={ho['n']})"
            if ho.get("agreement") is not None else "no held-out labels")
    print(f"fit-rm: {rep['labels']} decisive labels, {rep['train']} to fit, {line}; saved in {args.out}")
    print(json.dumps(rep))
    return 0
