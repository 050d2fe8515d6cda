"""Figures a researcher reads: the judge leaderboard on a log cost axis, labels in the frame; no empty or
repeated panels in ``rlaif report``; the DPO learner per round."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlaif.bench_oracle.leaderboard import quality_vs_cost_figure, write
from rlaif.report import build_report


def _judge(name: str, dollars: float, seconds: float, agreement: float) -> dict:
    return {"judge": name, "gold_agreement": agreement, "gold_agreement_ci": [agreement - 0.05, agreement + 0.05],
            "self_consistency": 0.9, "dollars_per_1k": dollars, "seconds_per_1k": seconds, "pairs": 100,
            "pairs_source": "test", "gold": "imdb_sentiment"}


def _labels_inside(fig) -> None:
    fig.canvas.draw()
    ax = fig.axes[0]
    frame = ax.get_window_extent()
    texts = [t for t in ax.texts]
    assert texts
    for t in texts:
        box = t.get_window_extent()
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, t.get_text()


def test_quality_vs_cost_is_on_a_log_axis_with_labels_inside():
    rows = [_judge("gpt-4o-mini-long-name", 0.21, 900, 0.91), _judge("gpt-4o", 3.5, 1500, 0.95),
            _judge("local-judge-with-a-long-name", 0.0004, 40, 0.70)]
    fig = quality_vs_cost_figure(rows)
    assert fig.axes[0].get_xscale() == "log"
    _labels_inside(fig)
    # a free judge (0 US$) among paid ones: still a log axis (symlog, 0 shown)
    fig = quality_vs_cost_figure(rows + [_judge("free-one", 0.0, 30, 0.6)])
    assert fig.axes[0].get_xscale() == "symlog"
    _labels_inside(fig)
    # all free: seconds per 1,000 labels, log
    fig = quality_vs_cost_figure([_judge("a", 0.0, 30, 0.6), _judge("b", 0.0, 3000, 0.8)])
    assert fig.axes[0].get_xscale() == "log" and "seconds" in fig.axes[0].get_xlabel()
    _labels_inside(fig)


def test_leaderboard_writes_the_figure(tmp_path):
    for r in (_judge("a", 0.1, 30, 0.6), _judge("b", 2.0, 3000, 0.8)):
        (tmp_path / "judges" / r["judge"]).mkdir(parents=True)
        (tmp_path / "judges" / r["judge"] / "result.json").write_text(json.dumps(r))
    write(tmp_path)
    assert (tmp_path / "quality_vs_cost.png").stat().st_size > 0


def _run(d: Path, arm: str, seed: int, *, dollars: float = 0.0, per_label: int = 2, train: dict | None = None,
         selected: dict | None = None) -> None:
    d.mkdir(parents=True)
    rows = []
    for r in (1, 2, 3):
        labels = 8 * r
        rows.append({"round": r, "labels": labels, "labels_round": 8, "gold_winrate": 0.5 + 0.03 * r + 0.01 * seed,
                     "gold_winrate_ci": [0.4, 0.7], "spend": {"dollars": dollars * labels, "tokens": 0},
                     "acquisition": {"generations": per_label * 8}, "selected": selected or {},
                     "train": {k: v * r for k, v in (train or {}).items()}})
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    (d / "config.json").write_text(json.dumps({"seed": seed, "acquisition": {"_target_": f"x.{arm}"},
                                               "task": {"name": "imdb"}, "policy": {"name_or_path": "tiny"},
                                               "oracle": {"_target_": "x.Free"}}))
    (d / "summary.json").write_text(json.dumps({"arm": arm, "seed": seed, "labels": 24}))


def _report(tmp_path: Path, **kw) -> tuple[set[str], str]:
    for arm in ("random", "other"):
        for seed in (0, 1):
            _run(tmp_path / "runs" / f"{arm}-{seed}", arm, seed, **kw)
    out = build_report([tmp_path / "runs"], tmp_path / "rep", n_boot=50)["out"]
    return {p.name for p in out.glob("*.png")}, (out / "report.md").read_text()


def test_a_free_judge_and_equal_compute_draw_no_spend_plot_and_no_empty_panels(tmp_path):
    files, md = _report(tmp_path)
    assert "learning_curves.png" in files
    assert "spend_curves.png" not in files and "spend_curves.png" not in md  # it would repeat the learning curve
    assert "acquired_data.png" not in files and "acquired_data.png" not in md  # nothing measured: no empty panels
    assert "dpo_metrics.png" not in files  # no train stats recorded


def test_dpo_metrics_and_spend_when_they_say_something(tmp_path):
    files, md = _report(tmp_path, dollars=0.01, train={"loss": 0.6, "reward_accuracy": 0.3, "kl": 0.01},
                        selected={"mean_certainty": 0.2})
    assert {"learning_curves.png", "spend_curves.png", "acquired_data.png", "dpo_metrics.png"} <= files
    assert "## DPO per round" in md and "dpo_metrics.png" in md


def test_panels_follow_what_was_recorded(tmp_path):
    import matplotlib.pyplot as plt

    from rlaif.report import plots
    from rlaif.report.runs import load_runs

    _run(tmp_path / "a", "random", 0, train={"loss": 0.5, "reward_accuracy": 0.5})
    _run(tmp_path / "b", "certainty", 0, per_label=8, selected={"mean_certainty": 0.1})
    runs = load_runs([tmp_path / "a", tmp_path / "b"])
    titles = []
    real_close = plt.close
    try:
        plt.close = lambda fig=None: titles.extend(ax.get_title() for ax in fig.axes) or real_close(fig)
        assert plots.dpo_metrics(runs, tmp_path / "dpo.png") is not None
        assert titles == ["DPO loss", "reward accuracy"]
        titles.clear()
        assert plots.characteristics(runs, tmp_path / "acq.png") is not None
        assert titles == ["certainty |r_a - r_b|"]
        titles.clear()
        path, key = plots.spend_curves(runs, tmp_path / "spend.png")  # free, but the arms' compute differs
        assert path is not None and key == "labels" and titles == ["win-rate vs acquisition compute"]
    finally:
        plt.close = real_close
