"""What long work shows while it runs: a progress bar on a terminal, periodic log lines elsewhere.

:func:`progress` is a tqdm bar when stderr is a terminal; otherwise (a CI log, a file, a pipe) a
:class:`LogLines` that writes one plain log line every ``RLAIF_PROGRESS_SECONDS`` (30 s) while the
work lasts and one at its end if it lasted that long -- never a carriage return. The labeller
(labels bought / budget, $ spent, invalid answers), the evaluation and ``bench-oracle`` use it;
:func:`dpo_line` is the one line logged per DPO round (instead of TRL's raw dicts, see
:mod:`rlaif.logger.trainer_progress`); :func:`quiet_libraries` turns off the bars of transformers,
datasets and huggingface_hub when stderr is not a terminal.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Callable

log = logging.getLogger("rlaif.progress")


def is_tty() -> bool:
    """Whether stderr is a terminal (bars), rather than a log file or a pipe (log lines)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def every_seconds() -> float:
    return float(os.environ.get("RLAIF_PROGRESS_SECONDS", "30"))


def quiet_libraries() -> None:
    """No progress bars in a log that is not a terminal: transformers', datasets', huggingface_hub's, and
    tqdm's in child processes (``TQDM_DISABLE``: the learner processes of ``trainer.num_processes``).
    Never a log line per HTTP request (httpx's INFO lines; the judge's retries and errors are rlaif's own)."""
    for name in ("httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if is_tty():
        return
    os.environ["TQDM_DISABLE"] = "1"
    for module, fn in (("transformers.utils.logging", "disable_progress_bar"), ("datasets", "disable_progress_bars"),
                       ("huggingface_hub.utils", "disable_progress_bars")):
        try:
            getattr(__import__(module, fromlist=[fn]), fn)()
        except (ImportError, AttributeError):
            pass


class LogLines:
    """A progress display for logs: ``desc: 120/192 pair (62%), <postfix>, 4.1 pair/s`` every
    ``every`` seconds, and at :meth:`close` (if any line was written or the work took that long, and
    the last line does not already show the end)."""

    def __init__(self, total: int | None, desc: str, unit: str, every: float) -> None:
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.n, self.postfix = 0, ""
        self.started = self.last = time.monotonic()
        self.lines, self.shown = 0, -1  # lines written; the count the last one showed

    def _line(self) -> None:
        took = time.monotonic() - self.started
        of = f"/{self.total} {self.unit}" if self.total else f" {self.unit}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        rate = f", {self.n / took:.1f} {self.unit}/s" if took > 0 else ""
        log.info("%s: %d%s%s%s%s, %.0fs", self.desc, self.n, of, pct, f", {self.postfix}" if self.postfix else "",
                 rate, took)
        self.lines, self.shown = self.lines + 1, self.n
        self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= self.every:
            self._line()

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:
        self.postfix = s

    def close(self) -> None:
        if self.n != self.shown and (self.lines or time.monotonic() - self.started >= self.every):
            self._line()


def progress(total: int | None, desc: str, unit: str = "it", enabled: bool = True) -> Any:
    """A bar (terminal) or :class:`LogLines` (anything else) with tqdm's ``update`` /
    ``set_postfix_str`` / ``close``; a silent one when not ``enabled``."""
    if not enabled:
        return LogLines(total, desc, unit, every=float("inf"))
    if is_tty():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)
    return LogLines(total, desc, unit, every=every_seconds())


def budget_text(budget: Any, invalid: int, refused: int = 0) -> str:
    """``24/192 labels, $0.0123, 2 invalid`` of a :class:`~rlaif.labels.budget.Budget` (None: invalid only)."""
    parts = []
    if budget is not None:
        spent, lim = budget.spent, budget.limits
        parts.append(f"{spent.labels}/{lim.labels} labels" if budget.has["labels"] else f"{spent.labels} labels")
        parts.append(f"${spent.dollars:.4f}" + (f"/${lim.dollars:.2f}" if budget.has["dollars"] else ""))
        if budget.has["tokens"]:
            parts.append(f"{spent.tokens}/{lim.tokens} tokens")
    parts.append(f"{invalid} invalid")
    if refused:
        parts.append(f"{refused} refused by the budget")
    return ", ".join(parts)


def _f(v: Any, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else "n/a"


def dpo_line(stats: dict) -> str:
    """The one line of a DPO round: ``DPO 2 steps on 16 pairs in 1.6s: loss 0.6931, reward accuracy
    0.62, margin 0.004, log pi/pi_ref on the training pairs 0.01``."""
    if not stats.get("steps"):
        return f"DPO skipped ({stats.get('skipped', 'no steps')})"
    line = (f"DPO {stats['steps']} step(s) on {stats.get('pairs', '?')} pairs in {_f(stats.get('seconds'), '.1f')}s: "
            f"loss {_f(stats.get('loss'), '.4f')}, reward accuracy {_f(stats.get('reward_accuracy'), '.2f')}, "
            f"margin {_f(stats.get('reward_margin'), '.4f')}")
    lr = stats.get("ref_logratio")
    return line + (f", log pi/pi_ref on the training pairs {_f(lr, '.4f')}" if lr is not None else "")


def counting(bar: Any, postfix: Callable[[], str]) -> Callable[[int], None]:
    """``advance(n)``: ``n`` more done on ``bar``, with ``postfix()`` as its text."""
    def advance(n: int) -> None:
        if n:
            bar.set_postfix_str(postfix(), refresh=False)
            bar.update(n)
    return advance
