"""``hf``: prompts from anything ``datasets`` opens -- parquet, arrow, jsonl / json and csv files (a glob
too), a directory of them, a ``save_to_disk`` directory (a Dataset or a DatasetDict), or a hub dataset id
where a hub is reachable.

The prompt column (``task.column``; default ``messages`` if the data has one, else ``prompt``) holds a
plain string or a chat (a list of ``{role, content}``, or its JSON text in a CSV); the policy answers the
chat's last user turn. The evaluation prompts come from ``task.eval_split`` (another split), from
``task.split_column`` (rows marked train vs eval / test / validation) or from a seeded shuffle
(``task.eval_fraction`` of the rows, at most ``task.eval_prompts``). Plain prompts of this task are
instructions: ``task.chat_template=auto`` renders them as one user turn when the tokenizer has a
template. Duplicate prompts are kept once (in eval first); too-long ones are dropped with a count or
refused (``task.long_prompts``).

:func:`check` is the start-up check (no rows read, no model loaded): the dataset is there, readable, and
has the columns the task names; the hub only when a path is not a local one.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
import random
import re
from pathlib import Path
from typing import Any

from rlaif.tasks.base import Encoder, PromptSet, TaskError, parse_messages

log = logging.getLogger("rlaif.tasks")

BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".jsonl": "json", ".json": "json", ".csv": "csv"}
EVAL_VALUES = ("eval", "test", "validation", "valid", "dev")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def _data_files(p: Path) -> list[str]:
    return sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix in BUILDERS
                  and not any(part.startswith(".") for part in f.relative_to(p).parts))


def locate(task: Any) -> tuple[str, Any]:
    """Where the dataset is: ("disk", dir) | (builder, [files]) | ("hub", id); a one-line error if nowhere."""
    raw = str(task.path or "")
    if not raw:
        raise TaskError("task=hf needs the dataset: add task.path=DATA.parquet (or .jsonl / .csv / .arrow, a "
                        "directory of them, a save_to_disk directory, or a hub id)")
    p = Path(raw).expanduser()
    if p.is_dir():
        if (p / "dataset_dict.json").exists() or (p / "state.json").exists():
            return "disk", p
        files = _data_files(p)
    elif glob.has_magic(raw):
        files = sorted(glob.glob(str(p)))
    elif p.exists():
        files = [str(p)]
    elif _HUB_ID.fullmatch(raw) and Path(raw).suffix not in BUILDERS:
        return "hub", raw
    else:
        raise TaskError(f"task.path: {raw!r} does not exist")
    if not files:
        raise TaskError(f"task.path: {raw!r} holds no data files ({', '.join(BUILDERS)}) and no save_to_disk dataset")
    kinds = {BUILDERS.get(Path(f).suffix) for f in files}
    if None in kinds or len(kinds) != 1:
        raise TaskError(f"task.path: {raw!r}: the files must all be one of {', '.join(BUILDERS)} "
                        f"(got {', '.join(sorted({Path(f).suffix or '(no suffix)' for f in files}))})")
    return kinds.pop(), files


def _disk_columns(p: Path, task: Any) -> list[str]:
    """The columns of a save_to_disk dataset, from its metadata (and the splits the task reads exist)."""
    if (p / "dataset_dict.json").exists():
        splits = json.loads((p / "dataset_dict.json").read_text()).get("splits", [])
        for s in (task.split, task.eval_split):
            if s is not None and s not in splits:
                raise TaskError(f"task.path: {str(p)!r} has no split {s!r} (splits: {', '.join(splits)}); set "
                                "task.split / task.eval_split")
        p = p / task.split
    elif task.eval_split is not None:
        raise TaskError(f"task.eval_split={task.eval_split}: {str(p)!r} is one split; use task.split_column or "
                        "task.eval_fraction")
    info = json.loads((p / "dataset_info.json").read_text())
    return list((info.get("features") or {}).keys())


def _file_columns(builder: str, f: str) -> list[str] | None:
    """The columns of one data file, read from its head (None where the head does not tell)."""
    if builder == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(f).names)
    if builder == "arrow":
        import pyarrow as pa

        try:
            with pa.memory_map(f) as src:
                return list(pa.ipc.open_stream(src).schema.names)
        except pa.ArrowInvalid:
            with pa.memory_map(f) as src:
                return list(pa.ipc.open_file(src).schema.names)
    with open(f, encoding="utf-8", newline="") as fh:
        if builder == "csv":
            return next(csv.reader(fh), [])
        line = next((x for x in fh if x.strip()), "")
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None  # a .json file holding one document: its columns are checked when it is loaded
    return list(obj) if isinstance(obj, dict) else None


def check_columns(task: Any, names: list[str], where: str) -> str:
    """The prompt column the task reads (every column it names exists); a one-line error if not."""
    for key in ("column", "id_column", "split_column"):
        name = getattr(task, key)
        if name is not None and name not in names:
            raise TaskError(f"task.{key}={name}: {where} has no column {name!r} (columns: {', '.join(names)})")
    col = task.column or ("messages" if "messages" in names else "prompt" if "prompt" in names else None)
    if col is None:
        raise TaskError(f"{where} has neither a 'prompt' nor a 'messages' column (columns: {', '.join(names)}); "
                        "set task.column=NAME")
    return col


def check(task: Any) -> None:
    """Start-up: the dataset exists, is readable and has the task's columns (nothing loaded)."""
    kind, where = locate(task)
    if kind == "hub":
        return _check_hub(where)
    if kind != "disk" and task.eval_split is not None:
        raise TaskError(f"task.eval_split={task.eval_split}: data files have one split; use task.split_column or "
                        "task.eval_fraction (or a save_to_disk DatasetDict)")
    try:
        names = _disk_columns(where, task) if kind == "disk" else _file_columns(kind, where[0])
    except TaskError:
        raise
    except (OSError, ValueError, StopIteration) as e:
        src = where if kind == "disk" else where[0]
        raise TaskError(f"task.path: cannot read {str(src)!r} ({getattr(e, 'strerror', None) or e})") from None
    except Exception as e:  # noqa: BLE001 -- pyarrow's errors on a broken file: one line
        src = where if kind == "disk" else where[0]
        raise TaskError(f"task.path: cannot read {str(src)!r} ({type(e).__name__}: {e})") from None
    if names is not None:
        check_columns(task, names, repr(str(task.path)))


def _check_hub(repo: str) -> None:
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise TaskError(f"task.path={repo!r} is not a local file or directory and the hub is offline "
                        "(HF_HUB_OFFLINE=1); give a local parquet / jsonl / csv / arrow file or a save_to_disk directory")
    try:
        from huggingface_hub import HfApi

        HfApi().dataset_info(repo, timeout=10)
    except Exception as e:  # noqa: BLE001 -- unreachable, unknown or gated: one line, before anything is loaded
        raise TaskError(f"task.path={repo!r} is not a local file or directory, and the hub cannot give it "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def _open(task: Any) -> tuple[Any, Any]:
    """(the split the task reads, the eval split or None) as ``datasets.Dataset``; one line if it fails."""
    import datasets

    kind, where = locate(task)
    try:
        if kind == "disk":
            ds = datasets.load_from_disk(str(where))
            if isinstance(ds, datasets.DatasetDict):
                return ds[task.split], (ds[task.eval_split] if task.eval_split else None)
            return ds, None
        from rlaif.assets import cache_dir

        kw = {"cache_dir": str(cache_dir() / "datasets")}
        if kind == "hub":
            return (datasets.load_dataset(where, split=task.split, **kw),
                    datasets.load_dataset(where, split=task.eval_split, **kw) if task.eval_split else None)
        return datasets.load_dataset(kind, data_files={"train": where}, split="train", **kw), None
    except Exception as e:  # noqa: BLE001 -- whatever datasets raises: one line
        msg = str(e).splitlines()[0] if str(e) else ""
        raise TaskError(f"task.path: datasets cannot open {str(task.path)!r} ({type(e).__name__}: {msg})") from None


def _pools(task: Any, ds: Any, ev: Any) -> tuple[list[tuple[Any, int]], list[tuple[Any, int]]]:
    """The (dataset, row) candidates of the eval and the train prompts, in the order they are taken."""
    if ev is not None:
        return [(ev, i) for i in range(len(ev))], [(ds, i) for i in range(len(ds))]
    if task.split_column:
        marks = [str(v).strip().lower() for v in ds[task.split_column]]
        return ([(ds, i) for i, m in enumerate(marks) if m in EVAL_VALUES],
                [(ds, i) for i, m in enumerate(marks) if m == "train"])
    if not 0 < task.eval_fraction < 1:
        raise TaskError(f"task.eval_fraction must be between 0 and 1, got {task.eval_fraction}")
    order = list(range(len(ds)))
    random.Random(task.split_seed).shuffle(order)
    n_eval = min(task.eval_prompts, max(1, round(len(order) * task.eval_fraction)))
    return [(ds, i) for i in order[:n_eval]], [(ds, i) for i in order[n_eval:]]


class _Taker:
    """Rows -> prompts, each distinct prompt once over both sets; empty rows skipped and counted."""

    def __init__(self, task: Any, enc: Encoder, col: str) -> None:
        self.task, self.enc, self.col = task, enc, col
        self.seen: set[tuple[int, ...]] = set()
        self.duplicates = self.empty = 0

    def prompt(self, ds: Any, i: int):
        row = ds[i]
        value, where = row.get(self.col), f"{self.task.path} row {i}"
        pid = row.get(self.task.id_column or "id")
        pid = str(pid) if pid is not None else f"{ds.split or self.task.split}-{i}"
        if isinstance(value, (list, tuple)) or (isinstance(value, str) and self.col == "messages"):
            return self.enc.prompt(pid, messages=parse_messages(value, where), where=where)
        if not isinstance(value, str) or not value.strip():
            self.empty += 1
            return None
        return self.enc.prompt(pid, text=value, where=where)

    def take(self, pool: list[tuple[Any, int]], n: int) -> list:
        out = []
        for ds, i in pool:
            if len(out) >= n:
                break
            p = self.prompt(ds, i)
            if p is None:
                continue
            if p.token_ids in self.seen:
                self.duplicates += 1
                continue
            self.seen.add(p.token_ids)
            out.append(p)
        return out


def load(cfg: Any, tokenizer: Any) -> PromptSet:
    check(cfg)
    ds, ev = _open(cfg)
    col = check_columns(cfg, list(ds.column_names), repr(str(cfg.path)))
    if ev is not None:
        check_columns(cfg, list(ev.column_names), f"{str(cfg.path)!r} split {cfg.eval_split!r}")
    taker = _Taker(cfg, Encoder(cfg, tokenizer, plain_is_instruction=True), col)
    eval_pool, train_pool = _pools(cfg, ds, ev)
    ps = PromptSet(eval=taker.take(eval_pool, cfg.eval_prompts), train=taker.take(train_pool, cfg.train_prompts))
    taker.enc.report(repr(str(cfg.path)))
    log.info("task: %s: %d train / %d eval prompts from column %r (chat template: %s; %d duplicate, %d empty "
             "rows skipped)", cfg.path, len(ps.train), len(ps.eval), col, "yes" if taker.enc.chat else "no",
             taker.duplicates, taker.empty)
    if not ps.train and not ps.eval and taker.enc.dropped:
        raise TaskError(f"task.path: every prompt of {str(cfg.path)!r} read is longer than task.max_prompt_tokens="
                        f"{cfg.max_prompt_tokens}")
    return ps
