"""Experiment trackers (``logger=``): one tracker run per rlaif run, one point per round at step =
labels bought so far.

A :class:`Logger` is started once (:meth:`Logger.start`: the run's resolved, redacted config as
parameters, its directory, name and group -- a sweep's directory), logs each round's figures
(:meth:`Logger.log`, from the round's ``metrics.jsonl`` line by :func:`round_scalars`) and is
finished at the end (:meth:`Logger.finish`). A resumed run continues the same tracker run where the
tracker allows it: the id it needs is kept in the run directory (:func:`saved_id` / :func:`save_id`).

The tracker's package is checked at start-up, before any label is bought (:meth:`Logger.check`:
``pip install rlaif[trackers]``). ``trainer.report_to`` (transformers' own integrations) logs each
DPO round as a separate run with its own steps; ``logger=`` is the supported way.
"""

from __future__ import annotations

import importlib
import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

from rlaif.errors import RlaifError


class LoggerError(RlaifError, RuntimeError):
    """A tracker that cannot be used (its package is missing, its store cannot be opened)."""


@dataclass
class LoggerConfig:
    """Fields every tracker has. Implementations subclass this dataclass."""

    project: str = field(default="rlaif", metadata={
        "help": "the tracker's project / experiment the runs are logged under"})
    group: Optional[str] = field(default=None, metadata={
        "help": "the group of this run (null: a sweep's runs are grouped by the sweep directory; a single "
                "run has none)"})
    name: Optional[str] = field(default=None, metadata={"help": "the run's name (null: the run directory's name)"})


class Logger(ABC):
    """An experiment tracker: ``start`` once, ``log`` per round, ``finish`` at the end."""

    Config: ClassVar[type] = LoggerConfig
    name: ClassVar[str] = "none"
    packages: ClassVar[tuple[str, ...]] = ()  # modules the tracker needs (checked at start-up)

    def __init__(self, cfg: LoggerConfig, **_: Any) -> None:
        self.cfg = cfg
        self.run_dir: Path | None = None

    @classmethod
    def check(cls) -> None:
        """The tracker's package imports, else one line naming what to install (before any spend)."""
        for module in cls.packages:
            try:
                importlib.import_module(module)
            except ImportError as e:
                raise LoggerError(f"logger={cls.name}: the package {module.split('.')[0]!r} cannot be imported "
                                  f"({e}); pip install rlaif[trackers] (or pip install {module.split('.')[0]}), "
                                  "or choose logger=none") from None

    @abstractmethod
    def start(self, config: dict, run_dir: Path, run_name: str, group: str | None,
              group_dir: Path | None = None) -> None:
        """Open (or, on resume, reopen) the tracker run; ``config`` (plain, redacted) as its parameters.
        ``group``: the sweep's name (its directory) or ``logger.group``; ``group_dir``: a sweep's directory,
        where a local store shared by its runs goes (None: a single run)."""

    @abstractmethod
    def log(self, metrics: dict[str, float], step: int) -> None:
        """One point per metric at ``step`` (labels bought so far)."""

    @abstractmethod
    def finish(self, summary: dict | None = None, failed: bool = False) -> None:
        """Close the tracker run (``failed``: the run stopped with an error)."""


# -- what a round logs ------------------------------------------------------------------------------
def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    return None


def _interval(out: dict, m: dict, key: str, name: str) -> None:
    """``name``, ``name_lo``, ``name_hi`` (95% interval) and ``name_n`` of ``m[key]``, where present."""
    if _num(m.get(key)) is None:
        return
    out[name] = float(m[key])
    ci = m.get(f"{key}_ci")
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        out[f"{name}_lo"], out[f"{name}_hi"] = float(ci[0]), float(ci[1])
    if _num(m.get(f"{key}_n")) is not None:
        out[f"{name}_n"] = float(m[f"{key}_n"])


def _put(out: dict, prefix: str, d: Any, keys: tuple[str, ...] | None = None) -> None:
    """Every number of ``d`` (or of ``keys``) as ``prefix/key``."""
    for k, v in (d or {}).items():
        if (keys is None or k in keys) and (x := _num(v)) is not None:
            out[f"{prefix}/{k}"] = x


def round_scalars(m: dict) -> dict[str, float]:
    """The tracker's scalars of one ``metrics.jsonl`` line: win-rates with their 95% bounds and n,
    labels, spend (training and evaluation), acquisition, stage timings, DPO's statistics."""
    out: dict[str, float] = {"round": float(m["round"])}
    for key, name in (("gold_winrate", "winrate/gold"), ("oracle_winrate", "winrate/oracle"),
                      ("gold_reward", "reward/gold"), ("kl_to_reference", "kl/reference")):
        _interval(out, m, key, name)
    if _num(m.get("reference_gold_reward")) is not None:
        out["reward/reference_gold"] = float(m["reference_gold_reward"])
    _put(out, "labels", {"total": m.get("labels"), "round": m.get("labels_round"), "decisive": m.get("decisive"),
                         "ties": m.get("ties"), "invalid": m.get("invalid"), "cached": m.get("cached")})
    spend, ev = m.get("spend") or {}, m.get("eval_spend") or {}
    _put(out, "spend", {"labels": spend.get("labels"), "dollars": spend.get("dollars"), "tokens": spend.get("tokens"),
                        "round_dollars": m.get("cost_round"), "round_tokens": m.get("tokens_round"),
                        "eval_dollars": ev.get("dollars"), "eval_tokens": ev.get("tokens"),
                        "eval_judgements": ev.get("judgements")})
    acq, n = m.get("acquisition") or {}, m.get("labels_round") or 0
    _put(out, "acquisition", acq, ("seconds", "generations", "tokens", "scored"))
    if n:
        _put(out, "acquisition", {"generations_per_label": (acq.get("generations") or 0) / n,
                                  "seconds_per_label": (acq.get("seconds") or 0.0) / n})
    _put(out, "time", m.get("timings"))
    _put(out, "dpo", m.get("train"))  # loss, reward_accuracy, reward_margin, ref_logratio, logps/chosen, ...
    _put(out, "selected", m.get("selected"))
    _put(out, "judge", {"latency_mean": m.get("latency_mean")})
    return out


def flat_params(config: Any, prefix: str = "") -> dict[str, str]:
    """``{dotted.key: value as text}`` of a plain config (a tracker's parameters)."""
    out: dict[str, str] = {}
    if isinstance(config, dict):
        for k, v in config.items():
            out.update(flat_params(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = json.dumps(config, default=str) if isinstance(config, (list, tuple)) else str(config)
    return out


# -- the tracker run's id, kept for a resume --------------------------------------------------------
def _id_file(run_dir: Path, kind: str) -> Path:
    return Path(run_dir) / "state" / f"tracker_{kind}.json"


def saved_id(run_dir: Path, kind: str) -> str | None:
    """The id of the tracker run this run directory logged to before (None: a new run)."""
    try:
        return json.loads(_id_file(run_dir, kind).read_text()).get("id")
    except (OSError, ValueError):
        return None


def save_id(run_dir: Path, kind: str, run_id: str, **extra: Any) -> None:
    from rlaif.run.state import atomic_write_text

    _id_file(run_dir, kind).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(_id_file(run_dir, kind), json.dumps({"id": run_id, **extra}))
