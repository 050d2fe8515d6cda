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

