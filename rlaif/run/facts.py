"""What a run directory says about itself, for the cards that travel with its artefacts (the model card
of ``model/``, the dataset card of ``rlaif export``): the arm, the judge and its template hash, the seed,
the labels and their cost, the final win-rates with their intervals, and the command that ran it.

Read from the run's own files only (``config.json``, ``metrics.jsonl``, ``.hydra/overrides.yaml``, the
ledger's judge identities, read-only), so it works while the run is finishing and long after.
"""

from __future__ import annotations

import json
import shlex
import sqlite3
from pathlib import Path
from typing import Any



def _json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def _metrics(run_dir: Path) -> list[dict]:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return sorted(out, key=lambda m: m.get("round", 0))


def judges(run_dir: Path) -> list[dict]:
    """The judges that labelled the run's training pairs: name, kind, model, template and template hash."""
    db = run_dir / "ledger.sqlite"
    if not db.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            rows = con.execute("SELECT DISTINCT judge, judge_identity FROM labels WHERE purpose = 'train'").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return []
    out = {}
    for name, ident in rows:
        ident = _json_text(ident)
        out[name] = {"name": name, "kind": ident.get("kind"), "model": ident.get("model"),
                     "template": ident.get("template"), "template_hash": ident.get("template_hash")}
    return list(out.values())


def _json_text(text: str) -> dict:
    try:
        v = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return v if isinstance(v, dict) else {}


def arm_of(config: dict) -> str:
    target = str((config.get("acquisition") or {}).get("_target_") or "")
    name = target.rsplit(".", 1)[-1].removesuffix("Acquisition")
    return {"HybridReuse": "hybrid_reuse"}.get(name, name.lower()) or "?"


def command(run_dir: Path) -> str:
    """The ``rlaif run`` command line of the run (its Hydra overrides)."""
    try:
        import yaml

        overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or []
    except (OSError, ImportError, ValueError):
        overrides = []
    return "rlaif run" + "".join(" " + shlex.quote(str(o)) for o in overrides)


def winrate(m: dict, key: str) -> str | None:
    """``61.3% [55.1, 67.2] (n=256)`` of a round's ``key`` (gold_winrate / oracle_winrate); None if absent."""
    v, ci = m.get(key), m.get(f"{key}_ci")
    if v is None:
        return None
    text = f"{100 * v:.1f}%"
    if ci and len(ci) == 2:
        text += f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    n = m.get(f"{key}_n")
    return text + (f" (n={n})" if n is not None else "")


def facts(run_dir: str | Path) -> dict:
    """The run's card facts (missing ones None): see the module's docstring."""
    from rlaif.assets import hub_id

    run_dir = Path(run_dir)
    config = _json(run_dir / "config.json", {})
    metrics = _metrics(run_dir)
    last = metrics[-1] if metrics else {}
    evaluated = [m for m in metrics if m.get("gold_winrate") is not None or m.get("oracle_winrate") is not None]
    ev = evaluated[-1] if evaluated else {}
    spend = last.get("spend") or {}
    policy = config.get("policy") or {}
    js = judges(run_dir)
    return {
        "run_dir": str(run_dir), "arm": arm_of(config), "seed": config.get("seed"),
        "task": (config.get("task") or {}).get("name"), "policy": policy.get("name_or_path"),
        "base_model": hub_id(policy.get("name_or_path") or "", policy.get("hub_id")),
        "judge": ", ".join(j["name"] for j in js) or None,
        "template_hash": ", ".join(sorted({j["template_hash"] for j in js if j.get("template_hash")})) or None,
        "judges": js, "rounds": last.get("round"), "labels": last.get("labels"), "decisive": last.get("decisive"),
        "dollars": spend.get("dollars"), "tokens": spend.get("tokens"),
        "gold_winrate": winrate(ev, "gold_winrate"), "oracle_winrate": winrate(ev, "oracle_winrate"),
        "evaluated_round": ev.get("round"), "command": command(run_dir),
    }
