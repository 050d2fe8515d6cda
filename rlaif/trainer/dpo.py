"""The learner: TRL's DPOTrainer on the preferences labelled so far (``(Pair, Label)`` values).

Each round: the reference log-probs of every chosen / rejected completion (from the run-wide cache,
:class:`~rlaif.models.scoring.ReferenceScorer`), the policy reset to the reference (``mode=reset``),
TRL's dataset from the preference rows (:mod:`rlaif.labels.preferences`), one TRL training run.

Two small departures from TRL's defaults, both to train on exactly what was sampled and scored:
- rows carry token ids (``prompt_ids`` / ``chosen_ids`` / ``rejected_ids``), so TRL's own
  re-tokenisation of the texts is skipped (no drift at the prompt/completion boundary);
- rows carry the reference log-probs from the run-wide reference cache, so the frozen reference
  is never run again during training (``precompute_ref_log_probs`` with our values).
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from rlaif.labels.preferences import Preference, chosen_rejected, preference_rows
from rlaif.trainer.dpo_config import DPOConfig

if TYPE_CHECKING:
    from rlaif.models.policy import Policy
    from rlaif.models.scoring import ReferenceScorer

log = logging.getLogger(__name__)


def _token_id_trainer_cls():
    from trl import DPOTrainer

    class TokenIdDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if "prompt_ids" in dataset.column_names:
                return dataset  # already token ids: never re-tokenise
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

        def _precompute_ref_logps(self, dataset, name, batch_size):
            if "ref_chosen_logps" in dataset.column_names:
                return dataset  # reference log-probs from the run-wide cache
            return super()._precompute_ref_logps(dataset, name, batch_size)

    return TokenIdDPOTrainer


def _drop_ref_adapter(model) -> None:
    cfgs = getattr(model, "peft_config", None)
    if cfgs and "ref" in cfgs:
        model.delete_adapter("ref")
        model.set_adapter("default")


def _clear_trainer_patches(model) -> None:
    """Undo what a TRL/accelerate trainer leaves on the model object, so each round starts clean.

    accelerate wraps ``forward`` in its autocast and marks the model prepared; TRL then patches
    ``forward`` with its fused LM head. A second trainer on the same model (every round after the
    first) re-patches ``forward`` but accelerate skips the model it already prepared, so training
    silently loses its autocast (float32 compute from round 2 on) while the wrappers pile up.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    for m in {id(model): model, id(inner): inner}.values():
        for attr in ("forward", "_original_forward", "_is_accelerate_prepared"):
            m.__dict__.pop(attr, None)


def round_metrics(log_history: Sequence[dict], beta: float | None = None) -> dict:
    """DPO's reward accuracy and margin of a round: the last step's and the mean over the last epoch.

    Every step is logged (``logging_steps=1``), so a round of a few steps still has them. With
    ``beta``: ``ref_logratio``, the mean log pi/pi_ref of the last step's chosen and rejected
    completions, (rewards/chosen + rewards/rejected) / (2 beta). Those completions were sampled by
    earlier policies, not the trained one, so it can be negative: it is how far the policy moved on
    the training pairs, not a KL (TRL logs none for the sigmoid loss).
    """
    logs = [h for h in log_history if "rewards/accuracies" in h]
    if not logs:
        return {"reward_accuracy": None, "reward_margin": None}
    last_epoch = [h for h in logs if h.get("epoch", 0) > logs[-1].get("epoch", 0) - 1] or logs
    out = {"reward_accuracy": float(logs[-1]["rewards/accuracies"]),
           "reward_margin": float(logs[-1]["rewards/margins"]),
           "reward_accuracy_epoch": float(np.mean([h["rewards/accuracies"] for h in last_epoch])),
           "reward_margin_epoch": float(np.mean([h["rewards/margins"] for h in last_epoch]))}
    last = logs[-1]
    if beta and "rewards/chosen" in last and "rewards/rejected" in last:
        out["ref_logratio"] = float(last["rewards/chosen"] + last["rewards/rejected"]) / (2 * beta)
    return out


def _dataset(rows: Sequence[dict], ref_logps: Sequence[tuple[float, float]]):
    """TRL's dataset of token ids and reference log-probs, from preference rows."""
    from datasets import Dataset

    return Dataset.from_dict({
        "prompt_ids": [list(r["prompt_input_ids"]) for r in rows],
        "chosen_ids": [list(r["chosen_input_ids"]) for r in rows],
        "rejected_ids": [list(r["rejected_input_ids"]) for r in rows],
        "ref_chosen_logps": [float(c) for c, _ in ref_logps],
        "ref_rejected_logps": [float(r) for _, r in ref_logps],
    })


def trl_args(cfg: DPOConfig, *, seed: int, round_: int, output_dir: str, on_cuda: bool, compute_dtype,
             world: int = 1):
    """TRL's DPOConfig for one round (seeded by (seed, round)) on ``world`` processes: each takes
    ``batch_size / world`` pairs a step, as micro-batches x gradient accumulation, so the global
    batch stays ``batch_size`` (micro x accumulation x world)."""
    import torch
    from trl import DPOConfig as TRLDPOConfig

    per_process = max(1, cfg.batch_size // world)
    micro = max(1, min(cfg.micro_batch_size, per_process))
    accum = max(1, math.ceil(per_process / micro))
    return TRLDPOConfig(
        output_dir=output_dir,
        beta=cfg.beta,
        loss_type=[cfg.loss_type],
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant_with_warmup" if cfg.warmup_steps else "constant",
        warmup_steps=cfg.warmup_steps,
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accum,
        optim=cfg.optimizer,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        precompute_ref_log_probs=True,
        gradient_checkpointing=cfg.gradient_checkpointing,
        max_length=None,
        report_to=cfg.report_to,
        logging_steps=1,  # every step: a round is often fewer steps than any larger interval
        save_strategy="no",
        seed=seed * 1000 + round_,
        data_seed=seed * 1000 + round_,
        use_cpu=not on_cuda,
        # mixed precision in the policy's compute dtype (over float32 masters for full fine-tuning)
        bf16=on_cuda and torch.cuda.is_bf16_supported() and compute_dtype == torch.bfloat16,
        fp16=on_cuda and compute_dtype == torch.float16,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=False,
    )


def fit(model, tokenizer, data, args, save_to: str | None = None):
    """One TRL training run on ``model`` -> (TrainOutput, the trainer's log history).

    ``save_to``: the trained adapter (LoRA) or model is saved there by the trainer itself
    (:mod:`rlaif.trainer.worker`: every rank calls it, rank 0 writes; FSDP / DeepSpeed gather first).
    """
    _drop_ref_adapter(model)
    _clear_trainer_patches(model)
    model.train()
    from rlaif.logger.trainer_progress import quiet_trainer

    # no raw metric dicts on the console: a step bar on a terminal, one line per round from the loop
    trainer = quiet_trainer(_token_id_trainer_cls()(model=model, ref_model=None, args=args,
                                                    train_dataset=data, processing_class=tokenizer))
    try:
        out = trainer.train()
        if save_to is not None:
            trainer.save_model(save_to)
    finally:
        _clear_trainer_patches(model)
    # TRL copies the adapter as "ref" for PEFT models; our reference log-probs come from the
    # frozen base (the paper's pi_ref), so the copy is never used: drop it.
    _drop_ref_adapter(model)
    model.eval()
    return out, trainer.state.log_history


class DPOLearner:
    """Trains the policy with DPO; ``mode=reset`` restarts from the reference each round (paper)."""

    def __init__(self, cfg: DPOConfig, policy: Policy, reference_logprobs: ReferenceScorer, seed: int = 0,
                 output_dir: str | None = None) -> None:
        self.cfg, self.policy, self.reference_logprobs, self.seed = cfg, policy, reference_logprobs, seed
        self.output_dir = output_dir or tempfile.mkdtemp(prefix="rlaif-dpo-")
        # num_processes > 1: each round's job for the learner processes (state/round_XXXX.learner/ in a run)
        self.work_dir = Path(self.output_dir).parent if output_dir else Path(self.output_dir)
        self.history: list[dict] = []

    def train(self, prefs: Sequence[Preference], round_: int) -> dict:
        """Train on ``prefs`` (decisively labelled pairs) -> training stats."""
        # scored before the policy is reset: the reference is the frozen base either way
        ref_logps = self.reference_logprobs.pairs([chosen_rejected(pair, lab) for pair, lab in prefs])
        if not prefs:
            return {"steps": 0, "loss": None, "skipped": "no decisive labels"}
        if self.cfg.mode == "reset":
            self.policy.reset(round_=round_)
        data = _dataset(preference_rows(prefs), ref_logps)
        if self.cfg.num_processes > 1:  # a child `accelerate launch` of N ranks trains; the weights come back
            from rlaif.trainer.launch import fit_elsewhere

            out, log_history = fit_elsewhere(self.policy, self.cfg, data, seed=self.seed, round_=round_,
                                             job_dir=self.work_dir / f"round_{round_:04d}.learner")
        else:
            out, log_history = self._fit(data, self._trl_args(round_))
        self.policy.version += 1
        stats = {
            "steps": int(out.global_step),
            "loss": float(out.training_loss),
            "pairs": len(prefs),
            "seconds": float(out.metrics.get("train_runtime", 0.0)),
            **round_metrics(log_history, self.cfg.beta),
        }
        self.history.append(stats)
        return stats

    def _trl_args(self, round_: int):
        """TRL's DPOConfig for one round (seeded by (seed, round))."""
        return trl_args(self.cfg, seed=self.seed, round_=round_, output_dir=self.output_dir,
                        on_cuda=self.policy.device == "cuda", compute_dtype=self.policy.compute_dtype)

    def _fit(self, data, args):
        """One TRL training run on the policy's model -> (TrainOutput, the trainer's log history)."""
        return fit(self.policy.model, self.policy.tokenizer, data, args)
