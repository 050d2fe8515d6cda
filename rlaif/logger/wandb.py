"""``logger=wandb``: a Weights & Biases run per rlaif run, offline by default.

``logger.mode=offline`` (the default) writes the run under ``<run_dir>/wandb/offline-run-*``;
``wandb sync <run_dir>/wandb/offline-run-*`` uploads it later. ``online`` needs ``WANDB_API_KEY``
in the environment (never in the config). A sweep's runs share their group (the sweep directory);
the redacted config is the run's config; a resumed run continues the same run id (kept in
``state/tracker_wandb.json``): online, W&B appends to it; offline, ``wandb sync`` of both
directories fills the one run.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from rlaif.logger.base import Logger, LoggerConfig, save_id, saved_id


@dataclass
class WandbConfig(LoggerConfig):
    mode: str = field(default="offline", metadata={
        "help": "offline (files in the run directory, `wandb sync` later) | online (WANDB_API_KEY) | disabled"})
    entity: Optional[str] = field(default=None, metadata={"help": "W&B entity (team or user; null: the default)"})
    dir: Optional[str] = field(default=None, metadata={"help": "where wandb/ goes (null: the run directory)"})
    tags: list[str] = field(default_factory=list, metadata={"help": "the run's tags"})

    def __post_init__(self) -> None:
        from rlaif.registry import ConfigError

        if self.mode not in ("offline", "online", "disabled"):
            raise ConfigError(f"logger.mode must be offline, online or disabled, got {self.mode!r}")


class WandbLogger(Logger):
    Config = WandbConfig
    name = "wandb"
    packages = ("wandb",)

    def __init__(self, cfg: WandbConfig, **kw: Any) -> None:
        super().__init__(cfg, **kw)
        self.run = None

    def start(self, config: dict, run_dir: Path, run_name: str, group: str | None,
              group_dir: Path | None = None) -> None:
        import wandb

        self.run_dir = Path(run_dir)
        run_id = saved_id(self.run_dir, self.name) or uuid.uuid4().hex[:8]
        os.environ.setdefault("WANDB_SILENT", "true")  # its banner lines, not its warnings
        self.run = wandb.init(project=self.cfg.project, entity=self.cfg.entity, group=group, name=run_name,
                              id=run_id, resume="allow", config=config, mode=self.cfg.mode,
                              dir=str(self.cfg.dir or self.run_dir), tags=list(self.cfg.tags) or None,
                              settings=wandb.Settings(console="off", x_disable_stats=True))
        save_id(self.run_dir, self.name, run_id)
        self.run.define_metric("labels/total")
        self.run.define_metric("*", step_metric="labels/total")  # the x axis: labels bought

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log({**metrics, "labels/total": float(step)}, step=step)

    def finish(self, summary: dict | None = None, failed: bool = False) -> None:
        if self.run is None:
            return
        if summary is not None:
            self.run.summary["stopped_by"] = summary.get("stopped_by")
        self.run.finish(exit_code=1 if failed else 0)
        self.run = None
