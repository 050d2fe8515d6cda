"""``logger=trackio``: a Trackio run per rlaif run, in Trackio's local store (``$TRACKIO_DIR``, by
default ``~/.cache/huggingface/trackio``; ``trackio show`` opens the dashboard), or a Hugging Face
Space (``logger.space_id``). A sweep's runs share their group; the redacted config is the run's
config; a resumed run continues the run of the same name."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from rlaif.logger.base import Logger, LoggerConfig, save_id


@dataclass
class TrackioConfig(LoggerConfig):
    space_id: Optional[str] = field(default=None, metadata={
        "help": "a Hugging Face Space to log to (null: the local store only)"})


class TrackioLogger(Logger):
    Config = TrackioConfig
    name = "trackio"
    packages = ("trackio",)

    def __init__(self, cfg: TrackioConfig, **kw: Any) -> None:
        super().__init__(cfg, **kw)
        self.run = None

    def start(self, config: dict, run_dir: Path, run_name: str, group: str | None,
              group_dir: Path | None = None) -> None:
        import trackio

        self.run_dir = Path(run_dir)
        self.run = trackio.init(project=self.cfg.project, name=run_name, group=group, config=config,
                                space_id=self.cfg.space_id, resume="allow", embed=False,
                                auto_log_gpu=False, auto_log_cpu=False)
        save_id(self.run_dir, self.name, run_name, project=self.cfg.project)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self, summary: dict | None = None, failed: bool = False) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
