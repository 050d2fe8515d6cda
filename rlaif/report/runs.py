"""Finding and reading run directories for ``rlaif report``.

A run directory is any directory holding a ``metrics.jsonl`` (written by ``rlaif run`` after each
round); ``summary.json`` and ``config.json`` are read when present. A multirun directory (or any
folder above run directories) is searched recursively.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rlaif.errors import RlaifError


class ReportError(RlaifError, ValueError):
    """The runs cannot be reported together (none found, mixed tasks, duplicates...)."""


@dataclass
class Run:
    path: Path
    arm: str
    seed: int
    task: str
    policy: str
    oracle: str
    metrics: list[dict]
    summary: dict | None
    config: dict = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.summary is not None

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """(labels, value) at every round that has ``key``."""
        xs, ys = [], []
        for m in self.metrics:
            if m.get(key) is not None:
                xs.append(float(m["labels"]))
                ys.append(float(m[key]))
        return xs, ys

    def cumulative(self, key: str) -> list[float]:
        """Cumulative per-round quantity (``acquisition.generations``, ``spend.dollars`` ...)."""
        out, total = [], 0.0
        for m in self.metrics:
            if key == "generations":
                total += float((m.get("acquisition") or {}).get("generations", 0) or 0)
                out.append(total)
            else:  # spend is already cumulative in metrics
                out.append(float((m.get("spend") or {}).get(key, 0) or 0))
        return out


def _read_jsonl(p: Path) -> list[dict]:
    rows = []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ReportError(f"{p}:{i}: not valid JSON ({e})") from None
    return rows


def _arm_of(config: dict, summary: dict | None, path: Path) -> str:
    if summary and summary.get("arm"):
        return str(summary["arm"])
    target = ((config.get("acquisition") or {}).get("_target_") or "")
    if target:
        name = target.rsplit(".", 1)[-1].removesuffix("Acquisition")
        return {"HybridReuse": "hybrid_reuse"}.get(name, name.lower())
    parts = path.name.split("-")  # hydra subdir: <num>-<arm>-s<seed>
    return parts[-2] if len(parts) >= 3 else path.name


def load_run(path: Path) -> Run:
    path = Path(path)
    metrics = _read_jsonl(path / "metrics.jsonl")
    if not metrics:
        raise ReportError(f"{path}: metrics.jsonl is empty (the run has not finished a round)")
    summary = json.loads((path / "summary.json").read_text()) if (path / "summary.json").exists() else None
    config = json.loads((path / "config.json").read_text()) if (path / "config.json").exists() else {}
    metrics.sort(key=lambda m: m["round"])
    task = (config.get("task") or {}).get("name", "?")
    policy = (summary or {}).get("policy") or (config.get("policy") or {}).get("name_or_path", "?")
    oracle = (summary or {}).get("oracle") or ((config.get("oracle") or {}).get("_target_", "?"))
    seed = (summary or {}).get("seed", config.get("seed", 0))
    return Run(path, _arm_of(config, summary, path), int(seed), str(task), str(policy), str(oracle),
               metrics, summary, config)


def find_run_dirs(paths: list[str | Path]) -> list[Path]:
    found: dict[Path, None] = {}
    for p in paths:
        p = Path(p).expanduser()
        if not p.exists():
            raise ReportError(f"{p}: no such file or directory")
        if (p / "metrics.jsonl").exists():
            found[p.resolve()] = None
            continue
        for m in sorted(p.rglob("metrics.jsonl")):
            d = m.parent.resolve()
            if "report" in d.relative_to(p.resolve()).parts:
                continue
            found[d] = None
    return list(found)


def load_runs(paths: list[str | Path]) -> list[Run]:
    """Every run under ``paths``; refuses runs that cannot be compared on one chart."""
    dirs = find_run_dirs(paths)
    if not dirs:
        raise ReportError(f"no run directories found under {', '.join(map(str, paths))} "
                          f"(a run directory holds metrics.jsonl, written after each round of `rlaif run`)")
    runs = [load_run(d) for d in dirs]
    for what in ("task", "policy", "oracle"):
        values = sorted({getattr(r, what) for r in runs})
        if len(values) > 1:
            by = {v: [str(r.path) for r in runs if getattr(r, what) == v][:2] for v in values}
            raise ReportError(f"mixed {what}s: {', '.join(f'{v!r} ({by[v][0]}...)' for v in values)}. "
                              f"Arms are only comparable on the same {what}: report each group separately.")
    seen: dict[tuple[str, int], Path] = {}
    for r in runs:
        k = (r.arm, r.seed)
        if k in seen:
            raise ReportError(f"two runs of arm {r.arm!r} with seed {r.seed}: {seen[k]} and {r.path}. "
                              f"Pass only one of them.")
        seen[k] = r.path
    return sorted(runs, key=lambda r: (r.arm, r.seed))


def read_preferences(run: Run) -> list[dict]:
    p = run.path / "preferences.jsonl"
    return _read_jsonl(p) if p.exists() else []
