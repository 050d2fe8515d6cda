"""Fixtures shared by the test files. Plain helpers (pair builders, fake judges, child processes) are in
``helpers.py``."""

from __future__ import annotations

import pytest


@pytest.fixture
def open_labeler(tmp_path):
    """``open_labeler(oracle, budget, path=None, **kw) -> (labeler, ledger)``: a Labeler over a new
    ledger (``tmp_path/ledger.sqlite`` unless ``path``); both are closed after the test (closing
    twice is harmless, so a test may close and reopen)."""
    # imported here: every test file loads this conftest, and most never label anything
    from rlaif.labels.labeler import Labeler
    from rlaif.labels.ledger import Ledger

    labelers: list[Labeler] = []
    ledgers: list[Ledger] = []

    def open_(oracle, budget, path=None, **kw) -> tuple[Labeler, Ledger]:
        ledgers.append(Ledger(path or tmp_path / "ledger.sqlite"))
        labelers.append(Labeler(oracle, budget, ledgers[-1], **kw))
        return labelers[-1], ledgers[-1]

    yield open_
    for labeler in reversed(labelers):
        labeler.close()
    for ledger in reversed(ledgers):
        ledger.close()
