"""``logger=none`` (the default): no tracker; the run directory's metrics.jsonl has every figure."""

from __future__ import annotations

from pathlib import Path

from rlaif.logger.base import Logger, LoggerConfig


class NoLogger(Logger):
    Config = LoggerConfig
    name = "none"

    def start(self, config: dict, run_dir: Path, run_name: str, group: str | None,
              group_dir: Path | None = None) -> None:
        self.run_dir = run_dir

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def finish(self, summary: dict | None = None, failed: bool = False) -> None:
        pass
