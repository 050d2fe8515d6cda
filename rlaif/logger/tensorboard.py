"""``logger=tensorboard``: TensorBoard event files in the run directory (``<run_dir>/tensorboard``).

One run directory is one TensorBoard run, its steps the labels bought so far; a resumed run adds
event files to the same directory and its steps go on. A sweep's runs are subdirectories of the
sweep directory: ``tensorboard --logdir multirun/<date>/<time>`` shows them side by side. The
resolved config is the run's ``config`` text (TEXT tab).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from rlaif.logger.base import Logger, LoggerConfig, save_id, saved_id


@dataclass
class TensorBoardConfig(LoggerConfig):
    log_dir: Optional[str] = field(default=None, metadata={
        "help": "the event files' directory (null: <run_dir>/tensorboard)"})
    flush_secs: int = field(default=10, metadata={"help": "seconds between writes of the event file"})


class TensorBoardLogger(Logger):
    Config = TensorBoardConfig
    name = "tensorboard"
    packages = ("tensorboard",)

    def __init__(self, cfg: TensorBoardConfig, **kw: Any) -> None:
        super().__init__(cfg, **kw)
        self.writer = None

    def start(self, config: dict, run_dir: Path, run_name: str, group: str | None,
              group_dir: Path | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        log_dir = Path(self.cfg.log_dir) if self.cfg.log_dir else self.run_dir / "tensorboard"
        resumed = saved_id(self.run_dir, self.name) is not None
        self.writer = SummaryWriter(log_dir=str(log_dir), flush_secs=self.cfg.flush_secs)
        if not resumed:
            text = json.dumps({"run": run_name, "group": group, "config": config}, indent=2, default=str)
            self.writer.add_text("config", "```\n" + text + "\n```", global_step=0)
            save_id(self.run_dir, self.name, run_name, log_dir=str(log_dir))
        self.writer.flush()

    def log(self, metrics: dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, global_step=step)
        self.writer.flush()

    def finish(self, summary: dict | None = None, failed: bool = False) -> None:
        if self.writer is None:
            return
        if summary is not None:
            self.writer.add_text("summary", "```\n" + json.dumps(summary, indent=2, default=str) + "\n```",
                                 global_step=int(summary.get("labels") or 0))
        self.writer.close()
        self.writer = None
