"""``rlaif bench-oracle``: a judge leaderboard -- quality, bias, cost and speed -- from one command.

    rlaif bench-oracle oracle=simulated,reward_model,local_llm n_pairs=200 out=bench/judges
    rlaif bench-oracle -m oracle=openai oracle.model=gpt-4o-mini,gpt-4.1-mini \
        oracle.price_input_per_mtok=0.15 oracle.price_output_per_mtok=0.6 budget.dollars=2 pairs=RUN_DIR

A Hydra app (conf/bench_oracle.yaml): each judge is one job (a comma list sweeps, ``-m`` is added
for you); all judges of one ``out=`` see the same pairs (``pairs=reviews|policy|RUN_DIR``, saved to
``<out>/pairs.jsonl``) and the same gold answers. Every pair is asked in both orders. Each judge's
labels are bought through the Labeler into its own ledger (``<out>/judges/<judge>/ledger.sqlite``)
under a Budget (``budget.labels`` defaults to exactly 2 per pair). After every judge the
leaderboard (``leaderboard.csv``, ``leaderboard.md``, ``quality_vs_cost.png``) is rebuilt from all
the judges under ``out``. See :mod:`rlaif.bench_oracle.measure` for what each column means.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from pathlib import Path

from rlaif.bench_oracle.pairs import BenchError, load_pairs

log = logging.getLogger("rlaif.bench")

__all__ = ["BenchError", "bench_judge", "main"]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=,+-]+", "_", name).strip("_")[:120] or "judge"


def _judge_name(cfg) -> str:
    """oracle.name, else the oracle option plus its overrides: ``simulated(flip_rate=0.2)``."""
    if cfg.oracle.get("name"):
        return str(cfg.oracle.name)
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        choice = hc.runtime.choices.get("oracle") or "oracle"
        extra = [o.split(".", 1)[1] for o in hc.overrides.task if o.startswith("oracle.")]
    except ValueError:  # not under Hydra
        choice, extra = cfg.oracle._target_.rsplit(".", 1)[-1], []
    return choice + (f"({','.join(extra)})" if extra else "")


def _gold_node(cfg):
    """The gold judge's config node, or None. ``auto``: the task's gold scorer as an oracle."""
    from omegaconf import OmegaConf

    from rlaif.cli.common import CONF_DIR
    from rlaif.config import load_option

    g = cfg.get("gold")
    if g is None or g == "none":
        return None
    if g == "auto":
        if cfg.task.get("gold") == "imdb_sentiment":
            return OmegaConf.create({"_target_": "rlaif.oracle.reward_model.RewardModelOracle",
                                     "model": "imdb_sentiment"})
        return None
    if isinstance(g, str):
        f = Path(CONF_DIR) / "oracle" / f"{g}.yaml"
        if not f.exists():
            raise BenchError(f"gold={g!r}: not auto, null, an oracle node or one of conf/oracle/*.yaml")
        return load_option(f)
    return g


def _label(oracle, budget, ledger_path: Path, pairs) -> tuple[list, dict, float, str | None, list]:
    """The labels of ``pairs``, the ledger's totals, the wall time, what stopped the budget, and each
    label's parts (a composite judge's members' answers, from the ledger; None where not labelled)."""
    from rlaif.labels.labeler import Labeler
    from rlaif.labels.ledger import Ledger

    ledger = Ledger(ledger_path)
    labeler = Labeler(oracle, budget, ledger, progress=True)  # a bar (terminal) or a log line every 30 s
    try:
        log.info("%s: %d requests (ledger %s)", oracle.name, len(pairs), ledger_path)
        labeler.check()
        t = time.perf_counter()
        labels = labeler.label(pairs, purpose="train")
        wall = time.perf_counter() - t
        totals = ledger.totals()
        keys = [labeler.key(p) for p in pairs]
        stored, rows = ledger.parts(keys), ledger.get_many(keys)
        # each part as the asking pair sees it (a stored label is in the order of the pair that bought it)
        parts = [None if lab is None or k not in rows else
                 tuple(p.flipped() if rows[k].swapped != oracle.swap_for(pair) else p for p in stored.get(k, ()))
                 for lab, k, pair in zip(labels, keys, pairs)]
    finally:
        labeler.close()
        ledger.close()
    return labels, totals, wall, (budget.stopped_by if budget is not None else None), parts


def _unswap(lab):
    """An answer about ``pair.swapped()``, expressed in ``pair``'s own (a, b) order."""
    return None if lab is None else lab.flipped()


def gold_labels(cfg, pairs, out: Path) -> tuple[list | None, str | None]:
    from rlaif import registry

    node = _gold_node(cfg)
    if node is None:
        return None, None
    gold = registry.build(node, "gold", task=cfg.task)
    gold.cfg.swap_p = 0.0
    labels, *_ = _label(gold, None, out / "gold" / f"{gold.identity_hash()}.sqlite", pairs)
    return labels, gold.name


def bench_judge(cfg, out: Path, name: str | None = None) -> dict:
    """Benchmark the judge ``cfg.oracle`` on the benchmark's pairs; writes ``judges/<name>/result.json``."""
    from omegaconf import OmegaConf

    from rlaif import registry
    from rlaif.bench_oracle import leaderboard
    from rlaif.bench_oracle.measure import cost, members, quality
    from rlaif.labels.budget import Budget
    from rlaif.cli.common import redact

    out = Path(out)
    name = name or _judge_name(cfg)
    pairs = load_pairs(cfg, out)
    gold, gold_name = gold_labels(cfg, pairs, out)
    oracle = registry.build(cfg.oracle, "oracle", task=cfg.task)
    oracle.cfg.swap_p = 0.0  # the benchmark shows both orders itself
    b = cfg.budget
    budget = Budget(labels=b.get("labels") or 2 * len(pairs), dollars=b.get("dollars"), tokens=b.get("tokens"))
    jdir = out / "judges" / _safe(name)
    jdir.mkdir(parents=True, exist_ok=True)
    both = list(pairs) + [p.swapped() for p in pairs]
    labels, totals, wall, stopped, parts = _label(oracle, budget, jdir / "ledger.sqlite", both)
    fwd, rev = labels[:len(pairs)], [_unswap(lab) for lab in labels[len(pairs):]]
    res = {"judge": name, "oracle": oracle.name, **quality(fwd, rev, gold), **cost(totals, labels, wall),
           "cached_answers": sum(1 for lab in labels if lab is not None and lab.cached),
           "stopped_by": stopped, "pairs_source": str(cfg.pairs), "gold": gold_name,
           "ledger": str(jdir / "ledger.sqlite"), "identity": oracle.identity(),
           "config": redact(OmegaConf.to_container(cfg.oracle, resolve=True))}
    if any(parts):  # a panel or a cascade: each member on its own answers, beside the whole
        n = len(pairs)
        res["members"] = members(parts[:n], [None if x is None else tuple(p.flipped() for p in x) for x in parts[n:]],
                                 gold)
    with open(jdir / "answers.jsonl", "w") as f:
        for i, p in enumerate(pairs):
            f.write(json.dumps({"pair_id": p.id, "ab": fwd[i].outcome.value if fwd[i] else None,
                                "ba": rev[i].outcome.value if rev[i] else None,
                                "gold": gold[i].outcome.value if gold and gold[i] else None}) + "\n")
    (jdir / "result.json").write_text(json.dumps(res, indent=2, default=str))
    leaderboard.write(out)
    return res


def _print(res: dict, out: Path) -> None:
    def p(k):
        v = res.get(k)
        return "n/a" if v is None else f"{100 * v:.1f}%"

    print(f"judge {res['judge']}: gold agreement {p('gold_agreement')}, self-consistency {p('self_consistency')}, "
          f"first-position share {p('first_share')}, ties {p('tie_rate')}, invalid {p('invalid_rate')}; "
          f"${res['dollars_per_1k']:.4f} and {res['seconds_per_1k']:.1f} s per 1k labels"
          + (f" (budget stopped it: {res['stopped_by']})" if res.get("stopped_by") else ""))
    print(f"leaderboard: {out / 'leaderboard.md'}")


def _needs_multirun(args: list[str]) -> bool:
    """A comma list in an override (``oracle=a,b``) is a sweep: run it as a multirun."""
    for a in args:
        if a.startswith("-") or "=" not in a or a.startswith("hydra."):
            continue
        v = a.split("=", 1)[1]
        if "," in v and v[:1] not in "[{'\"":
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    import hydra
    from omegaconf import OmegaConf

    from rlaif.cli.common import CONF_DIR, run_hydra, setup_env
    from rlaif.config import register

    setup_env()
    register()
    args = list(sys.argv[1:] if argv is None else argv)
    if _needs_multirun(args) and not {"-m", "--multirun"} & set(args):
        args = ["-m"] + args

    @hydra.main(config_path=CONF_DIR, config_name="bench_oracle", version_base=None)
    def app(cfg) -> float | None:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        out = Path(hc.sweep.dir if str(hc.mode) == "RunMode.MULTIRUN" else hc.runtime.output_dir)
        logging.getLogger("httpx").setLevel(logging.WARNING)
        from rlaif.errors import user_errors
        from rlaif.logger.progress import quiet_libraries

        quiet_libraries()

        try:
            res = bench_judge(cfg, out)
        except (BenchError, *user_errors()) as e:
            print(f"rlaif bench-oracle: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        _print(res, out)
        OmegaConf.set_readonly(cfg, False)
        return res.get("gold_agreement")

    return run_hydra(app, "rlaif bench-oracle", args, "bench_oracle")
