"""``logger=``: experiment trackers written by real runs and read back with each tracker's own reader
(TensorBoard's EventAccumulator, the MLflow client, W&B's offline run files, Trackio's local store):
one tracker run per rlaif run, step = labels bought, a resume continues the same tracker run, and a
tracker whose package is missing stops the run in one line before anything is bought."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import ROOT, rlaif, rlaif_env, tiny

RUN = ("budget.labels=24", "budget.labels_per_round=8")


def rlaif_run(run_dir: Path, *overrides: str, env: dict | None = None):
    r = rlaif("run", *tiny(*RUN, *overrides), f"hydra.run.dir={run_dir}", timeout=600,
              env=env or rlaif_env(True, WANDB_MODE="offline"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return r


def resume(run_dir: Path, *overrides: str):
    """The run again to its third round (``budget.max_rounds`` may change on resume)."""
    return rlaif_run(run_dir, *overrides, "budget.max_rounds=3", f"resume={run_dir}")


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_tensorboard_event_files_have_every_round_at_step_labels(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    rlaif_run(run, "logger=tensorboard", "budget.max_rounds=2")
    resume(run, "logger=tensorboard")
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("winrate/gold", "winrate/gold_lo", "winrate/gold_hi", "winrate/gold_n", "winrate/oracle",
                "spend/labels", "spend/dollars", "spend/tokens", "spend/eval_dollars", "labels/total",
                "acquisition/seconds", "acquisition/generations_per_label", "dpo/loss", "dpo/reward_accuracy",
                "dpo/reward_margin"):
        assert tag in tags, (tag, sorted(tags))
    lines = metrics(run)
    gold = acc.Scalars("winrate/gold")
    # one run, three rounds (two before the resume, one after), step = labels bought so far
    assert [e.step for e in gold] == [m["labels"] for m in lines] == [8, 16, 24]
    assert [e.value for e in gold] == pytest.approx([m["gold_winrate"] for m in lines])
    assert [e.value for e in acc.Scalars("spend/labels")] == [8, 16, 24]
    assert [e.value for e in acc.Scalars("dpo/loss")] == pytest.approx([m["train"]["loss"] for m in lines])
    assert "config" in " ".join(acc.Tags()["tensors"])  # the resolved config, as text


def test_mlflow_file_store_has_metrics_per_step_and_the_config_and_a_resume_continues_the_run(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's opt-in to read a file store

    run = tmp_path / "run"
    rlaif_run(run, "logger=mlflow", "budget.max_rounds=2")
    run_id = json.loads((run / "state" / "tracker_mlflow.json").read_text())["id"]
    resume(run, "logger=mlflow")
    client = MlflowClient(tracking_uri=(run / "mlruns").as_uri())
    exp = client.get_experiment_by_name("rlaif")
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]  # the resume continued the same MLflow run
    lines = metrics(run)
    hist = client.get_metric_history(run_id, "winrate/gold")
    assert [h.step for h in hist] == [8, 16, 24]
    assert [h.value for h in hist] == pytest.approx([m["gold_winrate"] for m in lines])
    lo = client.get_metric_history(run_id, "winrate/gold_lo")
    assert [h.value for h in lo] == pytest.approx([m["gold_winrate_ci"][0] for m in lines])
    assert [h.value for h in client.get_metric_history(run_id, "dpo/reward_accuracy")] == \
        pytest.approx([m["train"]["reward_accuracy"] for m in lines])
    data = client.get_run(run_id)
    assert data.info.status == "FINISHED"
    params = data.data.params
    assert params["policy.name_or_path"] == "tiny" and params["budget.labels_per_round"] == "8"
    assert params["logger._target_"] == "rlaif.logger.mlflow.MlflowLogger"
    assert params["oracle._target_"].endswith("RewardModelOracle")


def wandb_records(path: Path):
    """The records of a W&B offline run file (``run-<id>.wandb``: a 7-byte header, then LevelDB-log
    framed chunks in 32 KiB blocks), each parsed as W&B's own protobuf ``Record``."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):  # a whole record, or the last piece of one
            rec = pb.Record()
            rec.ParseFromString(buf)
            yield rec


def test_wandb_offline_run_files_and_a_resume_keeps_the_run_id(tmp_path):
    run = tmp_path / "run"
    rlaif_run(run, "logger=wandb", "budget.max_rounds=2")
    run_id = json.loads((run / "state" / "tracker_wandb.json").read_text())["id"]
    resume(run, "logger=wandb")
    offline = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(d.name.endswith(f"-{run_id}") for d in offline)  # one run id, two sessions
    history, runs, exits = [], [], []
    for d in offline:
        for rec in wandb_records(d / f"run-{run_id}.wandb"):
            kind = rec.WhichOneof("record_type")
            if kind == "history":
                history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
            elif kind == "run":
                runs.append(rec.run)
            elif kind == "exit":
                exits.append(rec.exit.exit_code)
    assert {r.run_id for r in runs} == {run_id} and {r.display_name for r in runs} == {"run"}
    config = {u.key: json.loads(u.value_json) for u in runs[0].config.update}
    assert config["policy"]["name_or_path"] == "tiny" and config["seed"] == 0
    lines = metrics(run)
    assert [h["_step"] for h in history] == [h["labels/total"] for h in history] == [8, 16, 24]
    assert [h["winrate/gold"] for h in history] == pytest.approx([m["gold_winrate"] for m in lines])
    assert [h["spend/labels"] for h in history] == [8, 16, 24] and "dpo/loss" in history[-1]
    assert exits == [0, 0]


def test_trackio_logs_to_its_local_store(tmp_path, monkeypatch):
    """The Trackio logger on its own (a run of the loop is the same calls), read back from Trackio's store."""
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    code = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from rlaif.logger.trackio import TrackioConfig, TrackioLogger
        from rlaif.logger.base import round_scalars
        lines = [{{"round": 1, "labels": 8, "gold_winrate": 0.625, "gold_winrate_ci": [0.5, 0.75]}},
                 {{"round": 2, "labels": 16, "gold_winrate": 0.5, "gold_winrate_ci": [0.375, 0.625]}}]
        lg = TrackioLogger(TrackioConfig(project="rlaif-test"))
        lg.start({{"seed": 0, "policy": {{"name_or_path": "tiny"}}}}, Path({str(tmp_path)!r}), "run-a", "sweep-1")
        for m in lines:
            lg.log(round_scalars(m), step=m["labels"])
        lg.finish()
        from trackio.sqlite_storage import SQLiteStorage
        logs = SQLiteStorage.get_logs("rlaif-test", "run-a")
        print("LOGS", json.dumps([[l.get("step"), l.get("winrate/gold")] for l in logs]))
    """)
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("LOGS "))[5:])
    assert got == [[8, 0.625], [16, 0.5]]


# sitecustomize of a child in which one package is not installed: Python's path finder no longer finds
# it (``import`` and ``importlib.util.find_spec`` both see nothing, as on a machine without it)
BLOCK = """
import importlib.machinery as _m
_find = _m.PathFinder.find_spec.__func__
def _find_spec(cls, name, path=None, target=None):
    if name.split(".")[0] == {name!r}:
        return None
    return _find(cls, name, path, target)
_m.PathFinder.find_spec = classmethod(_find_spec)
"""


@pytest.mark.parametrize("name", ["wandb", "mlflow", "tensorboard", "trackio"])
def test_a_missing_tracker_package_is_one_line_before_any_spend(tmp_path, name):
    """The package hidden from the child (a sitecustomize that refuses its import, as if not installed)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK.format(name=name))
    env = rlaif_env(False, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]))
    run = tmp_path / "run"
    r = rlaif("run", *tiny(*RUN, f"logger={name}"), f"hydra.run.dir={run}", env=env, timeout=300)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-3000:]
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("rlaif: error: logger="), r.stderr
    assert "pip install rlaif[trackers]" in err[0] and repr(name) in err[0]
    assert not (run / "ledger.sqlite").exists() and not (run / "config.yaml").exists()  # nothing bought or written


def test_report_to_without_its_package_is_refused_at_start_up(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK.format(name="wandb"))
    env = rlaif_env(False, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]))
    r = rlaif("run", *tiny(*RUN, "trainer.report_to=wandb"), f"hydra.run.dir={tmp_path / 'run'}", env=env)
    assert r.returncode == 2 and "trainer.report_to=wandb" in r.stderr, r.stderr[-3000:]
    assert not (tmp_path / "run" / "ledger.sqlite").exists()


def test_the_logger_is_not_part_of_the_label_fingerprint():
    """A resume may change or add the tracker: it changes no label."""
    from omegaconf import OmegaConf

    from helpers import cfg
    from rlaif import registry
    from rlaif.run.fingerprint import label_fingerprint

    a, b = cfg("oracle=simulated"), cfg("oracle=simulated", "logger=wandb", "logger.project=other")
    oracle = registry.build(a.oracle, "oracle", task=a.task)
    assert dict(label_fingerprint(OmegaConf.to_container(a, resolve=True), oracle)) == \
        dict(label_fingerprint(OmegaConf.to_container(b, resolve=True), oracle))


def test_a_sweeps_runs_share_one_mlflow_store_grouped_by_the_sweep(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    sweep = tmp_path / "sweep"
    r = rlaif("run", "-m", *tiny("budget.labels=8", "budget.labels_per_round=8", "logger=mlflow", "seed=0,1"),
              f"hydra.sweep.dir={sweep}", timeout=600, env=rlaif_env(True))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    client = MlflowClient(tracking_uri=(sweep / "mlruns").as_uri())
    runs = client.search_runs([client.get_experiment_by_name("rlaif").experiment_id])
    assert len(runs) == 2 and {r.data.tags["rlaif.group"] for r in runs} == {str(sweep)}
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1"]
    assert all([h.step for h in client.get_metric_history(r.info.run_id, "winrate/gold")] == [8] for r in runs)
