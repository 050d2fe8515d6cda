"""``logger=mlflow``: an MLflow run per rlaif run, in a local file store by default.

The store: ``logger.tracking_uri`` (any MLflow tracking URI: ``http://host:5000``, ``file:///path``),
else ``MLFLOW_TRACKING_URI``, else a file store ``mlruns/`` in the sweep directory (a sweep's runs
share it) or in the run directory (a single run). Runs go to the experiment ``logger.project``,
tagged with their group; the redacted config is the run's parameters; a resumed run reopens the
same MLflow run (its id is kept in ``state/tracker_mlflow.json``). ``mlflow ui --backend-store-uri
<store>`` shows them (MLflow 3 opens a file store only with ``MLFLOW_ALLOW_FILE_STORE=true``, which
rlaif sets for it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from rlaif.logger.base import Logger, LoggerConfig, flat_params, save_id, saved_id


@dataclass
class MlflowConfig(LoggerConfig):
    tracking_uri: Optional[str] = field(default=None, metadata={
        "help": "MLflow tracking URI (null: $MLFLOW_TRACKING_URI, else a file store mlruns/ in the sweep "
                "directory, or in the run directory for a single run)"})


class MlflowLogger(Logger):
    Config = MlflowConfig
    name = "mlflow"
    packages = ("mlflow",)

    def __init__(self, cfg: MlflowConfig, **kw: Any) -> None:
        super().__init__(cfg, **kw)
        self.client = None
        self.run_id: str | None = None

    def _uri(self, run_dir: Path, group_dir: Path | None) -> str:
        if self.cfg.tracking_uri:
            return str(self.cfg.tracking_uri)
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        return (Path(group_dir or run_dir).resolve() / "mlruns").as_uri()

    def _experiment(self) -> str:
        exp = self.client.get_experiment_by_name(self.cfg.project)
        if exp is not None:
            return exp.experiment_id
        try:
            return self.client.create_experiment(self.cfg.project)
        except Exception:  # noqa: BLE001 -- another run of the sweep created it meanwhile
            return self.client.get_experiment_by_name(self.cfg.project).experiment_id

    def start(self, config: dict, run_dir: Path, run_name: str, group: str | None,
              group_dir: Path | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.run_dir = Path(run_dir)
        uri = self._uri(self.run_dir, group_dir)
        if uri.startswith("file:") or "://" not in uri:
            # MLflow 3 keeps its file store behind this opt-in (mlflow-skinny has no SQL store)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        self.run_id = saved_id(self.run_dir, self.name)
        logged: dict = {}
        if self.run_id is not None:  # a resume: the same run, running again
            logged = dict(self.client.get_run(self.run_id).data.params)
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            tags = {"rlaif.run_dir": str(self.run_dir), **({"rlaif.group": group} if group else {})}
            run = self.client.create_run(self._experiment(), run_name=run_name, tags=tags)
            self.run_id = run.info.run_id
            save_id(self.run_dir, self.name, self.run_id, tracking_uri=self.client.tracking_uri)
        from mlflow.entities import Param

        params = [Param(k, v[:6000]) for k, v in flat_params(config).items() if k not in logged]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[i:i + 1000])

    def finish(self, summary: dict | None = None, failed: bool = False) -> None:
        if self.client is None or self.run_id is None:
            return
        if summary is not None and summary.get("stopped_by"):
            self.client.set_tag(self.run_id, "rlaif.stopped_by", str(summary["stopped_by"]))
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")
        self.client = None
