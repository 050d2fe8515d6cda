"""``rlaif fit-rm --trainer trl``: a whole reward model trained with TRL's RewardTrainer on bought labels.

An ``AutoModelForSequenceClassification`` with one output (``num_labels=1``), initialised from the
runs' base policy or ``--model`` (``smollm2``, ``tiny``, a model directory: resolved like the
policy, :func:`rlaif.assets.resolve_model`), trained on the Bradley-Terry loss
-log sigmoid(r(chosen) - r(rejected)) over the training split of the prompts (the seeded
:func:`rlaif.reward.fit.split` the ensemble uses). What it scores is the text the judge saw, the
prompt's text followed by the completion's (:data:`SCORE_TEXT`, ``oracle.score_text=prompt+completion``),
tokenised as ``oracle=reward_model`` tokenises it when it serves the model: no EOS appended; a pair
with a side longer than ``max_length`` tokens is left out of training and counted.

The model and its tokenizer are saved in the output directory with ``rm.json`` (the scored text,
base model, fit settings and report), ``report.json`` and a ``README.md``. The agreement reported is
measured by loading that directory through the judge that serves it, so it is the served judge's own::

    rlaif run oracle=reward_model oracle.model=OUT oracle.score_text=prompt+completion
    rlaif run oracle=fitted_rm oracle.path=OUT      # reads score_text from rm.json
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from rlaif.labels.preferences import chosen_rejected
from rlaif.reward.ensemble import META, wilson
from rlaif.reward.fit import split, write_report
from rlaif.types import Label, Pair

SCORE_TEXT = "prompt+completion"  # oracle=reward_model's oracle.score_text of what the model scores


@dataclass
class TRLFitConfig:
    model: str = field(default="smollm2", metadata={"help": "initial weights: a policy name or a model directory"})
    held_out: float = field(default=0.2, metadata={"help": "share of prompts held out for the agreement"})
    seed: int = field(default=0, metadata={"help": "seed of the split, the new head and the data order"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the training pairs"})
    batch_size: int = field(default=8, metadata={"help": "pairs per optimisation step"})
    learning_rate: float = field(default=5e-5, metadata={"help": "AdamW learning rate (linear decay)"})
    max_length: int = field(default=256, metadata={"help": "longest text in tokens; longer pairs are not trained on"})


def text_scorer(path: str | Path, meta: dict) -> Callable[[Sequence[Pair]], list[float]]:
    """``gaps(pairs)``: score(a) - score(b) per pair under the model saved in ``path``, scored by
    ``oracle=reward_model`` on the text ``meta`` names (``score_text``)."""
    from rlaif.oracle.reward_model import RewardModelConfig, RewardModelOracle

    judge = RewardModelOracle(RewardModelConfig(model=str(path), score_text=meta.get("score_text", SCORE_TEXT)))

    def gaps(pairs: Sequence[Pair]) -> list[float]:
        sa, sb = judge.scores(pairs)
        return [float(a - b) for a, b in zip(sa, sb)]

    return gaps


def _rows(prefs: Sequence[tuple[Pair, Label]], tok, max_length: int) -> tuple[dict, int]:
    """TRL's tokenised preference rows (``chosen_ids`` / ``rejected_ids``) and how many pairs were too long."""
    rows: dict[str, list] = {"chosen_ids": [], "rejected_ids": []}
    too_long = 0
    for pair, lab in prefs:
        ids = [tok(pair.prompt.text + c.text)["input_ids"] for c in chosen_rejected(pair, lab)]
        if max(map(len, ids)) > max_length:
            too_long += 1
            continue
        rows["chosen_ids"].append(ids[0])
        rows["rejected_ids"].append(ids[1])
    return rows, too_long


def _agreement(gaps: Callable[[Sequence[Pair]], list[float]], prefs: Sequence[tuple[Pair, Label]]) -> dict:
    """How often the model scores the labelled side higher, with a 95% Wilson interval."""
    if not prefs:
        return wilson(0, 0)
    shown = [Pair(p.prompt, *chosen_rejected(p, lab)) for p, lab in prefs]
    return wilson(sum(g > 0 for g in gaps(shown)), len(shown))


def fit_trl_rm(prefs: Sequence[tuple[Pair, Label]], out: str | Path, cfg: TRLFitConfig,
               runs: Sequence[str | Path] = ()) -> dict:
    """Train on the training split of ``prefs``, save model + tokenizer to ``out``, report the held-out
    agreement (also ``out/report.json``)."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging
    from trl import RewardConfig, RewardTrainer

    from rlaif.assets import resolve_model
    from rlaif.logger.trainer_progress import quiet_trainer

    out, started = Path(out), time.perf_counter()
    train, test = split(prefs, cfg.held_out, cfg.seed)
    model_dir = resolve_model(cfg.model)
    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    rows, too_long = _rows(train, tok, cfg.max_length)
    if not rows["chosen_ids"]:
        raise ValueError(f"none of the {len(train)} training pairs fits in max_length={cfg.max_length} tokens")
    on_cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory(prefix="rlaif-rm-") as tmp:
        args = RewardConfig(
            output_dir=tmp, num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate, max_length=None,  # rows are filtered above, counted
            gradient_checkpointing=False, bf16=on_cuda and torch.cuda.is_bf16_supported(), fp16=False,
            use_cpu=not on_cuda, report_to="none", save_strategy="no", logging_steps=1,
            seed=cfg.seed, data_seed=cfg.seed, dataloader_num_workers=0, disable_tqdm=True)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # not the expected "score.weight MISSING" load report of a new head
        try:
            trainer = quiet_trainer(RewardTrainer(model=model_dir, args=args, train_dataset=Dataset.from_dict(rows),
                                                  processing_class=tok))
        finally:
            hf_logging.set_verbosity(verbosity)
        result = trainer.train()
        trainer.model.save_pretrained(out)
        tok.save_pretrained(out)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    meta = {"trainer": "trl", "score_text": SCORE_TEXT, "model": cfg.model, "fit": asdict(cfg)}
    gaps = text_scorer(out, meta)
    report = {"trainer": "trl", "runs": [str(d) for d in runs], "labels": len(prefs), "train": len(train),
              "held_out": _agreement(gaps, test), "train_agreement": _agreement(gaps, train),
              "too_long": too_long, "steps": int(result.global_step), "train_loss": float(result.training_loss),
              "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
              "train_seconds": float(result.metrics.get("train_runtime", 0.0)),
              "seconds": time.perf_counter() - started}
    (out / META).write_text(json.dumps({**meta, "report": report}, indent=2, sort_keys=True) + "\n")
    (out / "README.md").write_text(
        f"# A reward model fitted by `rlaif fit-rm --trainer trl`\n\n"
        f"Initialised from `{cfg.model}`, trained on {len(rows['chosen_ids'])} preference pairs; held-out "
        f"agreement with the oracle: {report['held_out']}.\n\nIt scores the prompt's text followed by the "
        f"completion's (`{SCORE_TEXT}`). Serve it as a judge with\n\n"
        f"    rlaif run oracle=reward_model oracle.model={out} oracle.score_text={SCORE_TEXT}\n"
        f"    rlaif run oracle=fitted_rm oracle.path={out}\n")
    return write_report(out, report)
