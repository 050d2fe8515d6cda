"""DPO on several processes (``trainer.num_processes=N``): each round's training run in a child
``accelerate launch`` of N ranks, while acquisition and labelling stay in the rlaif process -- so
only that one process ever talks to the judge (the ranks load no oracle, ledger or generator).

Each round :func:`fit_elsewhere` writes the job to ``state/round_XXXX.learner/``::

    job.json     the policy and trainer config, the seed, the round, threads per rank
    data/        TRL's rows (token ids + reference log-probs): what the in-process learner trains on
    start/       the starting weights: the freshly reset adapter (mode=reset) or the previous round's
                 adapter / model (mode=continue); none for full fine-tuning from the reference

runs ``python -m accelerate.commands.launch --config_file CONF --num_processes N
--main_process_port PORT -m rlaif.trainer.worker DIR`` (CONF: ``trainer.accelerate_config``,
default ``conf/accelerate/ddp.yaml``), then loads what rank 0 saved (``out/``: the adapter or the
model; ``result.json``: steps, loss, TRL's log history) into the policy. The child's output is shown
as it comes and kept in ``learner.log``. A failed child is one :class:`LearnerError` line (every
label bought is in the ledger already: a resume loses nothing). The child has its own process
group, and an orphan guard (:mod:`rlaif.generator.orphan_guard`) stops it if rlaif dies, even by
SIGKILL.

accelerate's ``--cpu`` is not used: with it ``accelerate launch`` starts one process whatever
``--num_processes`` says. The MULTI_GPU launcher (torchrun) on a machine without CUDA gives DDP
over gloo, which is how the CPU tests run it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rlaif.errors import RlaifError
from rlaif.trainer.dpo_config import DPOConfig, accelerate_config_path

if TYPE_CHECKING:
    from rlaif.models.policy import Policy

log = logging.getLogger(__name__)

WORKER = "rlaif.trainer.worker"


class LearnerError(RlaifError, RuntimeError):
    """The learner processes of ``trainer.num_processes > 1`` failed (or were never started)."""


def refuse_distributed_launch(env: dict | None = None) -> None:
    """``rlaif run`` itself started under ``accelerate launch`` / ``torchrun`` (WORLD_SIZE > 1): every
    rank would run the whole loop and buy every label N times. Refused, in one line."""
    env = os.environ if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        world = 1
    if world > 1:
        raise LearnerError(f"rlaif run was started as one of {world} processes (WORLD_SIZE={world}, e.g. by "
                           "accelerate launch or torchrun), so each would buy every label: start it once, "
                           f"as a plain command, with trainer.num_processes={world} -- rlaif launches the "
                           "learner processes itself")


def _plain(node) -> dict:
    from omegaconf import OmegaConf

    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    import dataclasses

    return dataclasses.asdict(node) if dataclasses.is_dataclass(node) else dict(node)


def write_job(job_dir: Path, policy: Policy, cfg: DPOConfig, data, *, seed: int, round_: int) -> None:
    """The round's job for the learner ranks (see the module's docstring)."""
    import torch

    if job_dir.exists():
        shutil.rmtree(job_dir)  # a resumed run trains this round again, from scratch
    job_dir.mkdir(parents=True)
    data.save_to_disk(str(job_dir / "data"))
    start = None
    if policy.lora or cfg.mode == "continue":  # full fine-tuning from the reference: each rank has it
        start = "start"
        policy.save_trained(job_dir / start)
    job = {"policy": _plain(policy.cfg), "trainer": _plain(cfg), "seed": seed, "round": round_, "start": start,
           "threads": max(1, torch.get_num_threads() // cfg.num_processes)}
    (job_dir / "job.json").write_text(json.dumps(job, indent=2))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(job_dir: Path, cfg: DPOConfig) -> list[str]:
    """The ``accelerate launch`` command line of a round's learner."""
    return [sys.executable, "-m", "accelerate.commands.launch",
            "--config_file", str(accelerate_config_path(cfg.accelerate_config)),
            "--num_processes", str(cfg.num_processes), "--num_machines", "1",
            "--main_process_port", str(_free_port()), "-m", WORKER, str(job_dir)]


def _out_stream():
    return getattr(sys.stderr, "buffer", None)


def _tee(stream, log_path: Path) -> None:
    """Copy the child's output to our stderr (progress bars included: chunks, not lines) and to the log."""
    out = _out_stream()
    with open(log_path, "wb") as logf:
        while chunk := stream.read1(65536):
            logf.write(chunk)
            logf.flush()
            try:
                if out is not None:
                    out.write(chunk)
                    out.flush()
                else:
                    sys.stderr.write(chunk.decode(errors="replace"))
            except (OSError, ValueError):
                pass  # our stderr is gone: the log still has it


def _stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the child's process group (the launcher and every rank), SIGKILL after ``grace_s``."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_child(cmd: list[str], log_path: Path) -> int:
    """Run ``cmd`` in its own process group, guarded against being orphaned; -> its exit code.
    Interrupted (Ctrl-C, SIGTERM), the whole group is stopped before the interruption goes on."""
    from rlaif.generator.orphan_guard import guard

    watcher = guard()
    try:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
        try:
            _tee(proc.stdout, log_path)
            return proc.wait()
        finally:
            if proc.poll() is None:
                _stop_group(proc)
            proc.stdout.close()
    finally:
        watcher.stop()


# the launcher's own report of a failed rank: never the cause
_LAUNCHER_LINES = ("ChildFailedError", "CalledProcessError", "torch.distributed.elastic")
_EXCEPTION = re.compile(r"^(\[rank\d+\]:\s*)?[\w.]*(Error|Exception|Interrupt)\b")


def _why(log_path: Path) -> str:
    """The child's last exception line (else its last line), for the one-line error."""
    try:
        lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no output"
    errors = [ln for ln in lines if _EXCEPTION.match(ln) and not any(w in ln for w in _LAUNCHER_LINES)]
    text = (errors or lines or ["no output"])[-1]
    return text if len(text) <= 300 else text[:297] + "..."


def read_result(job_dir: Path, policy: Policy):
    """What rank 0 saved: the trained weights into ``policy``; -> (TrainOutput, TRL's log history)."""
    from transformers.trainer_utils import TrainOutput

    res = json.loads((job_dir / "result.json").read_text())
    policy.load_trained(job_dir / "out")
    out = TrainOutput(int(res["global_step"]), float(res["training_loss"]), res.get("metrics") or {})
    return out, res.get("log_history") or []


def fit_elsewhere(policy: Policy, cfg: DPOConfig, data, *, seed: int, round_: int, job_dir: Path):
    """One round's DPO on ``cfg.num_processes`` processes -> (TrainOutput, TRL's log history), as the
    in-process learner's ``_fit``; the policy ends with the trained weights."""
    job_dir = Path(job_dir)
    write_job(job_dir, policy, cfg, data, seed=seed, round_=round_)
    cmd = command(job_dir, cfg)
    log.info("round %d: DPO on %d processes: %s", round_, cfg.num_processes, " ".join(cmd[1:]))
    log_path = job_dir / "learner.log"
    try:
        code = run_child(cmd, log_path)
    except OSError as e:
        raise LearnerError(f"round {round_}: the learner processes could not be started ({e})") from e
    if code != 0 or not (job_dir / "result.json").exists():
        raise LearnerError(f"round {round_}: DPO on {cfg.num_processes} processes failed (exit code {code}: "
                           f"{_why(log_path)}); its output is in {log_path}. Every label bought is in the "
                           "ledger: fix the cause, then resume the run (resume=RUN_DIR) to train this round again")
    result = read_result(job_dir, policy)
    for weights in ("start", "out"):  # the round's adapter is saved by the loop (round_XXXX.model)
        shutil.rmtree(job_dir / weights, ignore_errors=True)
    return result
