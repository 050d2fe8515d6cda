"""rlaif export: the preference pairs of one or more runs as one ``datasets`` dataset, with its card.

Every run's ``preferences.jsonl`` rows (TRL's prompt / chosen / rejected, conversational for a chat
task, with the sampled token ids, the judge's outcome, cost and the arm's scores as JSON text) plus
``run``, ``arm`` and ``seed`` columns, in one fixed schema whatever the arm and judge, so runs of
different arms combine. OUT holds the dataset as ``datasets.load_from_disk(OUT)`` reads it, as parquet
in the hub's layout (``OUT/data/train-00000-of-00001.parquet``) and with a dataset card (``OUT/README.md``:
per run the judge, its template hash, the arm, seed, labels and cost, and the command).

Examples:
  rlaif export outputs/2025-01-01/12-00-00-random-s0 outputs/2025-01-01/12-30-00-hybrid-s0 --out prefs/
  rlaif export multirun/apl_vs_random/2025-01-01/12-00-00 --out prefs/ --push-to-hub me/apl-prefs
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from rlaif.errors import RlaifError
from rlaif.labels.preferences import features, is_chat, normalise_row
from rlaif.run.facts import facts

PARQUET = "data/train-00000-of-00001.parquet"


class ExportError(RlaifError, ValueError):
    pass


def find_runs(paths: list[str]) -> list[Path]:
    """Run directories (holding preferences.jsonl) at or under ``paths``, in the order given."""
    found: dict[Path, None] = {}
    for p in map(lambda x: Path(x).expanduser(), paths):
        if not p.exists():
            raise ExportError(f"{p}: no such file or directory")
        hits = [p / "preferences.jsonl"] if (p / "preferences.jsonl").exists() else sorted(p.rglob("preferences.jsonl"))
        if not hits:
            raise ExportError(f"{p}: no run directory there (a run directory holds preferences.jsonl)")
        for h in hits:
            found[h.parent.resolve()] = None
    return list(found)


def read_rows(run: Path, name: str) -> list[dict]:
    """A run's rows in the fixed schema, with ``run`` / ``arm`` / ``seed`` columns."""
    f = facts(run)
    rows = []
    for i, line in enumerate((run / "preferences.jsonl").read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ExportError(f"{run}/preferences.jsonl:{i}: not valid JSON ({e.msg})") from None
        rows.append({**normalise_row(row), "run": name, "arm": f["arm"], "seed": int(f["seed"] or 0)})
    return rows


def _names(runs: list[Path]) -> list[str]:
    """A short distinct name per run: its directory name, with its parent's where two share it."""
    names = [r.name for r in runs]
    return [f"{r.parent.name}/{r.name}" if names.count(r.name) > 1 else r.name for r in runs]


def card(runs: list[Path], names: list[str], counts: list[int], chat: bool) -> str:
    """The dataset card (README.md, with the hub's data_files header)."""
    lines = ["---", "configs:", "- config_name: default", "  data_files:", "  - split: train",
             f"    path: {PARQUET}", "tags: [rlaif, dpo, preferences, active-preference-learning]", "---", "",
             f"# Preference pairs of {len(runs)} rlaif run{'s' * (len(runs) != 1)}", "",
             f"{sum(counts)} decisive preferences in TRL's {'conversational ' if chat else ''}prompt / chosen / "
             "rejected format, with the sampled token ids (`prompt_input_ids`, `chosen_input_ids`, "
             "`rejected_input_ids`), the judge's `outcome`, `p_a` (NaN where the judge gives no probability), "
             "`cost` in US$, the arm's `scores` as JSON text, and `run` / `arm` / `seed`.", "",
             "| run | arm | seed | judge | template hash | labels bought | preferences | judge cost | gold win-rate |",
             "|---|---|---|---|---|---|---|---|---|"]
    commands = []
    for run, name, n in zip(runs, names, counts):
        f = facts(run)
        cost = f"${f['dollars']:.4f}" if f["dollars"] is not None else "?"
        lines.append(f"| {name} | {f['arm']} | {f['seed']} | {f['judge'] or '?'} | {f['template_hash'] or '-'} | "
                     f"{f['labels'] if f['labels'] is not None else '?'} | {n} | {cost} | "
                     f"{f['gold_winrate'] or '-'} |")
        commands.append(f"# {name}\n{f['command']}")
    lines += ["", "## Commands", "", "```bash", *commands, "```", "", "## Load", "", "```python",
              "from datasets import load_dataset, load_from_disk", "ds = load_from_disk(\"OUT\")",
              f"ds = load_dataset(\"parquet\", data_files=\"OUT/{PARQUET}\", split=\"train\")   # the same rows",
              "```", ""]
    return "\n".join(lines)


def export(paths: list[str], out: str | Path, overwrite: bool = False):
    """Write the runs' preferences to ``out`` (save_to_disk + parquet + README.md); the dataset."""
    from datasets import Dataset, disable_progress_bars

    disable_progress_bars()
    runs = find_runs(paths)
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(f"--out {out}: the directory is not empty (add --overwrite to replace it)")
        shutil.rmtree(out)
    names = _names(runs)
    per_run = [read_rows(r, n) for r, n in zip(runs, names)]
    rows = [row for rs in per_run for row in rs]
    if not rows:
        raise ExportError(f"no preferences in {', '.join(map(str, runs))} (the runs have no decisive label yet)")
    kinds = {is_chat(r) for r in rows}
    if len(kinds) > 1:
        chat = [n for n, rs in zip(names, per_run) if rs and is_chat(rs[0])]
        raise ExportError(f"chat runs ({', '.join(chat)}) and plain-text runs cannot share one dataset: export "
                          "them apart")
    ds = Dataset.from_list(rows, features=features(kinds.pop(), {"run": "string", "arm": "string",
                                                                 "seed": "int64"}))
    ds.save_to_disk(str(out))
    (out / PARQUET).parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(out / PARQUET))
    (out / "README.md").write_text(card(runs, names, [len(rs) for rs in per_run], is_chat(rows[0])))
    return ds


def push(ds, repo: str, out: Path) -> None:
    """``--push-to-hub``: the dataset and its card to ``repo``; one line when the hub cannot be reached."""
    try:
        ds.push_to_hub(repo)
        from huggingface_hub import HfApi

        HfApi().upload_file(path_or_fileobj=str(out / "README.md"), path_in_repo="README.md", repo_id=repo,
                            repo_type="dataset")
    except Exception as e:  # noqa: BLE001 -- unreachable, no token, no rights: one line, the local copy stays
        msg = str(e).splitlines()[0] if str(e) else ""
        raise ExportError(f"--push-to-hub {repo}: the hub refused or cannot be reached ({type(e).__name__}: "
                          f"{msg}); the dataset is written locally in {out}") from None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="rlaif export", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="run directories, or folders above them (a multirun directory)")
    ap.add_argument("--out", required=True, help="the output directory (created; must be empty)")
    ap.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    ap.add_argument("--push-to-hub", metavar="REPO", default=None,
                    help="also push the dataset and its card to this hub dataset repo (needs a reachable hub "
                         "and a token)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        ds = export(args.paths, args.out, overwrite=args.overwrite)
        n_runs = len(set(ds["run"]))
        print(f"export: {len(ds)} preferences of {n_runs} run{'s' * (n_runs != 1)} in {args.out} "
              f"(load_from_disk, {PARQUET}, README.md)")
        if args.push_to_hub:
            push(ds, args.push_to_hub, Path(args.out).expanduser())
            print(f"export: pushed to the hub as {args.push_to_hub}")
    except RlaifError as e:
        print(f"rlaif export: error: {e}", file=sys.stderr)
        return 2
    return 0
