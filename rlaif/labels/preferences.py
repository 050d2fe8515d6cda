"""The preference set: every decisive label of a run, in acquisition order, as DPO trains on it.

The one builder of the run's ``preferences.jsonl``, shared by the loop (which adds each round's
labels as they come) and ``rlaif reparse`` (which rebuilds the set from the ledger)::

    prefs = PreferenceSet()
    new = prefs.add(zip(pairs, labels))     # ties, invalid and unbought (None) labels make no preference
    prefs.write(run_dir / "preferences.jsonl")

Each preference is a ``(Pair, Label)``; its row in TRL's prompt/chosen/rejected format (with the
sampled token ids) is made here, by :func:`rlaif.types.preference_row`, once per label.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from rlaif.run.state import atomic_write_text
from rlaif.types import Completion, Label, Outcome, Pair, preference_row

Preference = tuple[Pair, Label]  # a decisive label and the pair it judged


def preference_rows(prefs: Iterable[Preference]) -> list[dict]:
    """TRL prompt/chosen/rejected rows (with token ids and the label's provenance), one per preference."""
    return [preference_row(pair, lab) for pair, lab in prefs]


def chosen_rejected(pair: Pair, label: Label) -> tuple[Completion, Completion]:
    """The preferred and the other completion of a decisively labelled pair."""
    return (pair.a, pair.b) if label.outcome is Outcome.A else (pair.b, pair.a)


@dataclass
class PreferenceSet:
    """Every decisive label so far, in order, and its rows (made once, when the label is added)."""

    items: list[Preference] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)

    @classmethod
    def of(cls, labelled: Iterable[tuple[Pair, Label | None]]) -> "PreferenceSet":
        """The preference set of ``labelled`` all at once (e.g. rebuilt from the ledger)."""
        prefs = cls()
        prefs.add(labelled)
        return prefs

    def add(self, labelled: Iterable[tuple[Pair, Label | None]]) -> list[Preference]:
        """Add the decisive ones of ``labelled`` (outcome A or B), in order; returns what was added."""
        new = [(pair, lab) for pair, lab in labelled if lab is not None and lab.outcome.decisive]
        self.items += new
        self.rows += preference_rows(new)
        return new

    def __len__(self) -> int:
        return len(self.items)

    def write(self, path: str | Path, sort_keys: bool = False) -> None:
        """Rewrite ``path`` atomically, one JSON row per line.

        ``sort_keys``: the loop writes each row's keys in :func:`preference_row`'s order, ``rlaif
        reparse`` sorted -- two spellings of the same rows, kept as they were.
        """
        atomic_write_text(path, "".join(json.dumps(r, sort_keys=sort_keys) + "\n" for r in self.rows))



# -- the rows as a `datasets` table -----------------------------------------------------------------
ROW_KEYS = ("prompt", "chosen", "rejected", "prompt_input_ids", "chosen_input_ids", "rejected_input_ids", "pair_id",
            "prompt_id", "round", "scores", "outcome", "p_a", "swapped", "judge", "cost", "tokens_in", "tokens_out",
            "cached")


def is_chat(row: dict) -> bool:
    """Whether a row is in TRL's conversational format (messages, not strings)."""
    return isinstance(row.get("prompt"), list)


def normalise_row(row: dict) -> dict:
    """A preferences.jsonl row in the fixed schema, also one written before it (``scores`` a dict,
    ``p_a`` null): scores as JSON text, p_a and cost floats, the keys in :data:`ROW_KEYS` order."""
    from rlaif.types import canonical_json

    out = {k: row.get(k) for k in ROW_KEYS}
    if not isinstance(out["scores"], str):
        out["scores"] = canonical_json(dict(out["scores"] or {}))
    out["p_a"] = float("nan") if out["p_a"] is None else float(out["p_a"])
    out["cost"] = float(out["cost"] or 0.0)
    return out


def row_texts(row: dict) -> tuple[str, str, str]:
    """The readable prompt, chosen and rejected texts of a row, plain or conversational (the prompt of a
    chat: its last user message, what the judge saw)."""
    if not is_chat(row):
        return row["prompt"], row["chosen"], row["rejected"]
    user = [m["content"] for m in row["prompt"] if m.get("role") == "user"]
    return (user[-1] if user else ""), row["chosen"][-1]["content"], row["rejected"][-1]["content"]


def features(chat: bool, extra: dict | None = None):
    """The ``datasets.Features`` of the rows (conversational ``prompt`` / ``chosen`` / ``rejected`` for a
    chat task), plus ``extra`` columns ({name: Value dtype})."""
    from datasets import Features, List, Value

    text = List({"role": Value("string"), "content": Value("string")}) if chat else Value("string")
    ids = List(Value("int64"))
    cols = {"prompt": text, "chosen": text, "rejected": text, "prompt_input_ids": ids, "chosen_input_ids": ids,
            "rejected_input_ids": ids, "pair_id": Value("string"), "prompt_id": Value("string"),
            "round": Value("int64"), "scores": Value("string"), "outcome": Value("string"), "p_a": Value("float64"),
            "swapped": Value("bool"), "judge": Value("string"), "cost": Value("float64"),
            "tokens_in": Value("int64"), "tokens_out": Value("int64"), "cached": Value("bool")}
    return Features({**cols, **{k: Value(v) for k, v in (extra or {}).items()}})
