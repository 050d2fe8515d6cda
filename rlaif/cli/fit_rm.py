"""rlaif fit-rm: a reward model from the labels runs bought, with its held-out agreement.

Reads the decisive train labels of every run's ledger.sqlite, splits them by prompt (seeded) into a
training set and a held-out set, fits a reward model on the first and reports how often it agrees
with the oracle on the held-out prompts (95% Wilson interval; --out/report.json). Two trainers:

  --trainer ensemble (default)  K small Bradley-Terry heads (each on a bootstrap resample, its own
      seed) on the frozen base policy's features of both completions (pooled hidden states; cached
      in --out/features.pt): seconds on a CPU. Saved as ensemble.pt + rm.json.
  --trainer trl  a whole sequence-classification model (one output) initialised from the base
      policy, trained with TRL's RewardTrainer on the prompt text + completion text: minutes.
      Saved as a Hugging Face model directory (weights, tokenizer, rm.json, README.md).

Either directory is a free stand-in judge:  rlaif run oracle=fitted_rm oracle.path=OUT
(a TRL model also as  oracle=reward_model oracle.model=OUT oracle.score_text=prompt+completion)

    rlaif fit-rm runs/random-s0 runs/random-s1 --out rm/ --k 8
    rlaif fit-rm runs/random-s0 --out rm-trl/ --trainer trl --epochs 1 --batch-size 8
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
    ap.add_argument("--out", required=True, help="where the reward model goes (with rm.json and report.json)")
    ap.add_argument("--trainer", choices=("ensemble", "trl"), default="ensemble",
                    help="heads on frozen features (default) or a whole model trained with TRL's RewardTrainer")
    ap.add_argument("--model", default=None,
                    help="the frozen feature model (ensemble) or the initial weights (trl): a policy name "
                         "(smollm2, tiny) or a model directory (default: the runs' base policy)")
    ap.add_argument("--held-out", type=float, default=0.2, help="share of prompts held out (default 0.2)")
    ap.add_argument("--seed", type=int, default=0)
    ens = ap.add_argument_group("--trainer ensemble")
    ens.add_argument("--layer", type=int, default=-1, help="hidden-state layer (0: embeddings; default -1: last)")
    ens.add_argument("--pooling", choices=("mean", "last"), default="mean", help="over completion tokens")
    ens.add_argument("--k", type=int, default=8, help="heads in the ensemble (default 8)")
    ens.add_argument("--hidden", type=int, default=0, help="hidden units per head (default 0: linear)")
    ens.add_argument("--steps", type=int, default=200, help="Adam steps per head (default 200)")
    trl = ap.add_argument_group("--trainer trl")
    trl.add_argument("--epochs", type=float, default=1.0, help="passes over the training pairs (default 1)")
    trl.add_argument("--batch-size", type=int, default=8, help="pairs per optimisation step (default 8)")
    trl.add_argument("--lr", type=float, default=5e-5, help="AdamW learning rate, decayed linearly (default 5e-5)")
    trl.add_argument("--max-length", type=int, default=256,
                     help="longest prompt + completion in tokens; longer pairs are not trained on (default 256)")
    return ap


def fit(args: argparse.Namespace, model: str) -> dict:
    """The chosen trainer's fit -> its report."""
    from rlaif.reward.fit import fit_rm, preferences_of

    if args.trainer == "trl":
        from rlaif.reward.trl_rm import TRLFitConfig, fit_trl_rm

        cfg = TRLFitConfig(model=model, held_out=args.held_out, seed=args.seed, epochs=args.epochs,
                           batch_size=args.batch_size, learning_rate=args.lr, max_length=args.max_length)
        return fit_trl_rm(preferences_of(args.runs), args.out, cfg, runs=args.runs)
    from rlaif.reward.ensemble import EnsembleConfig
    from rlaif.reward.features import FeatureConfig
    from rlaif.reward.fit import FitConfig

    cfg = FitConfig(held_out=args.held_out, seed=args.seed,
                    ensemble=EnsembleConfig(k=args.k, hidden=args.hidden, steps=args.steps, seed=args.seed),
                    features=FeatureConfig(model=model, layer=args.layer, pooling=args.pooling))
    return fit_rm(args.runs, args.out, cfg)


def main(argv: list[str] | None = None) -> int:
    from rlaif.reward.fit import base_policy

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    model = args.model or base_policy(args.runs)
    if model is None:
        print("rlaif fit-rm: error: the runs name no single base policy (config.json); give --model", file=sys.stderr)
        return 2
    try:
        rep = fit(args, model)
    except (RlaifError, FileNotFoundError, ValueError) as e:
        print(f"rlaif fit-rm: error: {e}", file=sys.stderr)
        return 2
    ho = rep["held_out"]
    line = (f"held-out agreement {ho['agreement']:.3f} (95% CI {ho['ci95'][0]:.3f}-{ho['ci95'][1]:.3f}, n={ho['n']})"
            if ho.get("agreement") is not None else "no held-out labels")
    print(f"fit-rm ({args.trainer}): {rep['labels']} decisive labels, {rep['train']} to fit, {line}; "
          f"{rep['seconds']:.1f}s; saved in {args.out}")
    print(json.dumps(rep))
    return 0
