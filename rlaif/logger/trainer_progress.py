"""TRL's console output, replaced: no raw metric dicts, a step bar only on a terminal.

transformers' Trainer prints every logged dict (``{'loss': '0.6931', ...}``) through its
``ProgressCallback`` (tqdm) or ``PrinterCallback``. :func:`quiet_trainer` removes both and adds
:class:`TrainBar`: a bar of the round's optimisation steps with the latest loss when stderr is a
terminal, nothing otherwise; the loop logs one summary line per round
(:func:`rlaif.logger.progress.dpo_line`). Wiring, in ``rlaif.trainer.dpo.fit`` after the trainer is built::

    quiet_trainer(trainer)
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from rlaif.logger.progress import is_tty


class TrainBar(TrainerCallback):
    """A tqdm bar of the training steps (main process, terminal only), the last loss beside it."""

    def __init__(self) -> None:
        self.bar: Any = None

    def on_train_begin(self, args, state, control, **kw):
        if state.is_world_process_zero and is_tty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, desc="DPO", unit="step", dynamic_ncols=True, leave=False)

    def on_step_end(self, args, state, control, **kw):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kw):
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix_str(f"loss {float(logs['loss']):.4f}", refresh=False)

    def on_train_end(self, args, state, control, **kw):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def quiet_trainer(trainer: Any) -> Any:
    """No raw dicts from ``trainer``: its printing callbacks replaced by :class:`TrainBar`."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(TrainBar())
    return trainer
