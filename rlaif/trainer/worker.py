"""One rank of the learner of ``trainer.num_processes > 1``, started by :mod:`rlaif.trainer.launch`::

    accelerate launch --num_processes N ... -m rlaif.trainer.worker JOB_DIR

Every rank builds the policy from the job's policy config (and nothing else of the run: no oracle,
ledger, generator or evaluator -- the judge is only ever called by the rlaif process), loads the
starting weights and the round's rows, and runs the in-process learner's own TRL training
(:func:`rlaif.trainer.dpo.fit`) with its share of the batch (:func:`rlaif.trainer.dpo.trl_args`
with ``world=N``). Then rank 0 has the trainer save the trained adapter / model in ``out/``
(FSDP / DeepSpeed gather it first) and writes ``result.json``. Each rank also writes
``ranks/<rank>.json`` (its pid, and at the end the rlaif modules it loaded).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def _rank_record(job_dir: Path, rank: int, **extra) -> None:
    d = job_dir / "ranks"
    d.mkdir(exist_ok=True)
    (d / f"{rank}.json").write_text(json.dumps({"pid": os.getpid(), "time": time.time(), **extra}))


def _load_policy(job: dict, job_dir: Path, local_rank: int):
    import torch
    from omegaconf import OmegaConf

    from rlaif.models.policy import Policy, pick_device

    policy_cfg, trainer_cfg = OmegaConf.create(job["policy"]), OmegaConf.create(job["trainer"])
    if pick_device(policy_cfg.device) == "cuda":
        torch.cuda.set_device(local_rank)  # "cuda" is this rank's GPU from here on
    policy = Policy(policy_cfg, trainer_cfg, seed=job["seed"])
    if job.get("start"):
        policy.load_trained(job_dir / job["start"])
    return policy, trainer_cfg


def _write_result(job_dir: Path, out, log_history) -> None:
    res = {"global_step": int(out.global_step), "training_loss": float(out.training_loss),
           "metrics": dict(out.metrics or {}), "log_history": list(log_history)}
    tmp = job_dir / "result.json.tmp"
    tmp.write_text(json.dumps(res, indent=1, default=float))
    tmp.replace(job_dir / "result.json")


def main(argv: list[str]) -> int:
    import torch
    from datasets import load_from_disk

    from rlaif.trainer.dpo import fit, trl_args

    job_dir = Path(argv[0])
    job = json.loads((job_dir / "job.json").read_text())
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    _rank_record(job_dir, rank)
    torch.set_num_threads(job["threads"])
    policy, trainer_cfg = _load_policy(job, job_dir, local_rank)
    data = load_from_disk(str(job_dir / "data"))
    args = trl_args(trainer_cfg, seed=job["seed"], round_=job["round"], output_dir=str(job_dir / "trainer"),
                    on_cuda=policy.device == "cuda", compute_dtype=policy.compute_dtype, world=world)
    out, log_history = fit(policy.model, policy.tokenizer, data, args, save_to=str(job_dir / "out"))
    _rank_record(job_dir, rank, world=world, rlaif_modules=sorted(m for m in sys.modules if m.startswith("rlaif")))
    if rank == 0:
        _write_result(job_dir, out, log_history)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
