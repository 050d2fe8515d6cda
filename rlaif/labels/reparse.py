"""``rlaif reparse RUN_DIR [--option value | key=value ...]``: re-read stored judge answers with a new or fixed parser.

No judge is called and nothing is paid: every ledger row keeps the judge's raw answer, so a parser
bug (or a better parser) can be applied after the fact. Changed rows are updated in the ledger (the
old outcome is kept in its ``reparses`` table), ``preferences.jsonl`` is rewritten, and what
changed is printed.

Options (``--key value``, or ``key=value`` as in Hydra overrides; ``--dry-run`` is a flag):

``parser=MODULE:FUNC``  the parser (default ``rlaif.oracle.parsing:parse_verdict``; a ``FILE.py:FUNC``
                        path works too). It gets the raw answer text and returns a ``Verdict``, an
                        ``Outcome``, ``"A"``/``"B"``/``"tie"``, or ``(outcome, reason)``, in the order
                        the pair was shown to the judge.
``kinds=openai,...``    judge kinds whose rows are text verdicts to re-parse (default: openai, vllm;
                        a ``local_llm`` judge reads next-token probabilities: its rows hold no text)
``ledger=PATH``         the ledger (default ``RUN_DIR/ledger.sqlite``)
``output=PATH``         the preference file (default ``RUN_DIR/preferences.jsonl``)
``dry_run=true``        print what would change, write nothing
``show=N``              changed rows listed (default 20)

What the parser cannot change: an answer the server cut off (its stored ``finish_reason`` is
``length``: ``max_tokens`` reached) stays INVALID with the live path's reason, whatever it ends
with; a stored body that is not an answer (not a chat completion, or a both-orders ask that got
no answer) is left as it is. Rows from before finish reasons were stored (NULL) are parsed as
before. The default parser on an unchanged ledger changes nothing.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

from rlaif.errors import RlaifError
from rlaif.labels.ledger import Ledger, LedgerError, request_key
from rlaif.labels.preferences import PreferenceSet
from rlaif.oracle.base import BOTH_ORDERS_SEP, merge_both_orders
from rlaif.oracle.parsing import NOT_AN_ANSWER, cut_off, split_finish_reasons
from rlaif.run.state import RunState
from rlaif.types import Label, Outcome, Pair

DEFAULT_PARSER = "rlaif.oracle.parsing:parse_verdict"
DEFAULT_KINDS = ("openai", "vllm")


class ReparseError(RlaifError, RuntimeError):
    pass


def _fallback_parse(text: str | None) -> tuple[Outcome, str | None]:
    """Minimal final-line parser, used only if the oracle package's parser cannot be imported."""
    if not text or not text.strip():
        return Outcome.INVALID, "empty answer"
    last = [ln.strip() for ln in text.strip().splitlines() if ln.strip()][-1]
    m = re.match(r"^(?:[A-Za-z ]+\s*[:=\-]\s*)?\(?\s*([AB]|tie)\s*\)?\.?$", last.strip("*`\"' "), re.I)
    if not m:
        return Outcome.INVALID, f"no verdict on the final line: {last[:80]!r}"
    v = m.group(1)
    return (Outcome.TIE, None) if v.lower() == "tie" else (Outcome(v.upper()), None)


def load_parser(spec: str) -> Callable[[str | None], Any]:
    mod_name, _, func = spec.partition(":")
    if not func:
        raise ReparseError(f"parser={spec!r}: expected MODULE:FUNCTION or FILE.py:FUNCTION")
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            if not path.exists():
                raise ReparseError(f"parser file {path} not found")
            s = importlib.util.spec_from_file_location(f"rlaif_reparse_{path.stem}", path)
            mod = importlib.util.module_from_spec(s)
            assert s.loader is not None
            s.loader.exec_module(mod)
        else:
            mod = importlib.import_module(mod_name)
    except ImportError as e:
        if spec == DEFAULT_PARSER:
            print(f"reparse: {DEFAULT_PARSER} not importable ({e}); using the built-in final-line parser",
                  file=sys.stderr)
            return _fallback_parse
        raise ReparseError(f"parser={spec!r}: cannot import {mod_name}: {e}") from None
    fn = getattr(mod, func, None)
    if not callable(fn):
        raise ReparseError(f"parser={spec!r}: {mod_name} has no function {func!r}")
    return fn


def _normalise(res: Any) -> tuple[Outcome, str | None]:
    if isinstance(res, tuple):
        o, reason = res[0], (res[1] if len(res) > 1 else None)
    elif hasattr(res, "outcome"):
        o, reason = res.outcome, getattr(res, "reason", None)
    else:
        o, reason = res, None
    if isinstance(o, str) and o.lower() == "tie":
        o = Outcome.TIE
    o = Outcome(o.upper() if isinstance(o, str) and o.lower() in ("a", "b") else o)
    if o is Outcome.INVALID and not reason:
        reason = "unparseable answer"
    return o, (reason if o is Outcome.INVALID or reason else None)


def _parse_one(parse: Callable, raw: str, finish_reason: str | None) -> tuple[Outcome, str | None]:
    why = cut_off(finish_reason, raw)  # cut off at max_tokens: invalid whatever the parser reads
    return (Outcome.INVALID, why) if why is not None else _normalise(parse(raw))


def parse_shown(parse: Callable, raw: str, identity: dict,
                finish_reason: str | None = None) -> tuple[Outcome, str | None] | None:
    """Outcome in the order shown to the judge, or None where the stored text is not an answer (left
    as it is). The openai judge's both-orders answers are merged again by the judge's own rule
    (:func:`~rlaif.oracle.base.merge_both_orders`)."""
    if identity.get("both_orders") and BOTH_ORDERS_SEP in raw:
        f1, f2 = split_finish_reasons(finish_reason, 2)
        if NOT_AN_ANSWER in (f1, f2):  # one order got no answer: invalid whatever the other says
            return None
        # each order in its own shown order, as the judge had them (the merge flips the second back)
        first, second = (Label(*_parse_one(parse, text, f), raw=text, finish_reason=f)
                         for text, f in zip(raw.split(BOTH_ORDERS_SEP, 1), (f1, f2)))
        merged = merge_both_orders(first, second, identity.get("on_disagreement") or "tie")
        return merged.outcome, merged.reason
    if finish_reason == NOT_AN_ANSWER:
        return None
    return _parse_one(parse, raw, finish_reason)


def _label_of(row: dict) -> Label:
    return Label(outcome=row["outcome"], reason=row["reason"], p_a=row["p_a"], raw=row["raw"],
                 swapped=bool(row["swapped"]), tokens_in=row["tokens_in"], tokens_out=row["tokens_out"],
                 cost=row["cost"], latency=row["latency"], attempts=row["attempts"], cached=not row["paid"],
                 judge=row["judge"])


def preference_set(ledger: Ledger, run_dir: Path) -> PreferenceSet:
    """The run's preference set from the ledger: train labels, in acquisition order when the run
    state has the acquired pairs (else in ledger order), decisive ones only."""
    rows = ledger.rows(purpose="train")
    by_pair: dict[str, dict] = {}
    by_key = {r["key"]: r for r in rows}
    for r in rows:
        by_pair.setdefault(r["pair_id"], r)
    state_dir = run_dir / "state"
    rounds = RunState(run_dir).acquired_rounds() if (state_dir / "state.json").exists() else []
    if rounds:
        state = RunState(run_dir)
        identities = {r["identity_hash"]: json.loads(r["judge_identity"]) for r in rows}
        labelled: list[tuple[Pair, Label | None]] = []
        for rnd in rounds:
            for pair in state.pairs(rnd) or []:
                row, lab = by_pair.get(pair.id), None
                if row is not None:
                    lab = _label_of(row)
                else:  # answered through the reversed pair's request
                    for ident in identities.values():
                        for s in (False, True):
                            hit = by_key.get(request_key(ident, pair, s))
                            if hit is not None:
                                lab = _label_of(hit).oriented(s)
                                break
                        if lab is not None:
                            break
                labelled.append((pair, lab))
        return PreferenceSet.of(labelled)
    return PreferenceSet.of((Pair.from_dict(json.loads(r["pair_json"])), _label_of(r))
                            for r in sorted(rows, key=lambda r: (r["round"] if r["round"] is not None else -1, r["id"])))


def preference_rows(ledger: Ledger, run_dir: Path) -> list[dict]:
    """The rows of :func:`preference_set` (TRL's prompt/chosen/rejected format)."""
    return preference_set(ledger, run_dir).rows


def write_preferences(ledger: Ledger, run_dir: Path, output: Path) -> int:
    prefs = preference_set(ledger, run_dir)
    prefs.write(output, sort_keys=True)
    return len(prefs)


OPTIONS = ("parser", "kinds", "ledger", "output", "dry_run", "show")


def build_parser() -> argparse.ArgumentParser:
    intro, rest = __doc__.split("\n\n", 1)
    ap = argparse.ArgumentParser(prog="rlaif reparse", description=intro, epilog=rest,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run directory")
    ap.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE",
                    help="any option below as key=value (parser=..., dry_run=true, show=5)")
    ap.add_argument("--parser", default=DEFAULT_PARSER, help="MODULE:FUNC or FILE.py:FUNC (default: %(default)s)")
    ap.add_argument("--kinds", default=",".join(DEFAULT_KINDS), help="judge kinds to re-parse (default: %(default)s)")
    ap.add_argument("--ledger", default=None, help="the ledger (default: RUN_DIR/ledger.sqlite)")
    ap.add_argument("--output", default=None, help="the preference file (default: RUN_DIR/preferences.jsonl)")
    ap.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_const", const="true", default="false",
                    help="print what would change, write nothing")
    ap.add_argument("--show", default="20", metavar="N", help="changed rows listed (default: %(default)s)")
    return ap


def _parse_args(argv: list[str]) -> tuple[Path, dict]:
    """RUN_DIR and :func:`reparse`'s keyword arguments; ``key=value`` words override the ``--options``."""
    ap = build_parser()
    a = ap.parse_intermixed_args(argv)
    o = {k: getattr(a, k) for k in OPTIONS}
    for word in a.overrides:
        k, eq, v = word.partition("=")
        k = k.replace("-", "_").removeprefix("oracle.")
        if not eq:
            ap.error(f"unexpected argument {word!r}: options are key=value or --key value")
        if k not in OPTIONS:
            ap.error(f"unknown option {k!r}; known: {', '.join(OPTIONS)}")
        o[k] = v
    try:
        show = int(o["show"])
    except ValueError:
        ap.error(f"show={o['show']!r}: expected a whole number")
    return a.run_dir, {"parser": o["parser"], "kinds": tuple(k for k in o["kinds"].split(",") if k),
                       "ledger_path": o["ledger"], "output": o["output"],
                       "dry_run": o["dry_run"].lower() in ("1", "true", "yes"), "show": show}


def reparse(run_dir: str | Path, parser: str = DEFAULT_PARSER, kinds: tuple[str, ...] = DEFAULT_KINDS,
            ledger_path: str | Path | None = None, output: str | Path | None = None, dry_run: bool = False,
            show: int = 20, out=None) -> dict:
    """Re-parse every stored raw answer of a text judge; returns a summary dict."""
    out = out or sys.stdout
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReparseError(f"{run_dir} is not a run directory")
    lp = Path(ledger_path) if ledger_path else run_dir / "ledger.sqlite"
    if not lp.exists():
        raise ReparseError(f"no ledger at {lp}")
    parse = load_parser(parser)
    ledger = Ledger(lp, readonly=dry_run)
    try:
        changes: collections.Counter = collections.Counter()
        changed: list[tuple[dict, Outcome, str | None]] = []
        seen = skipped = 0
        for row in ledger.rows():
            ident = json.loads(row["judge_identity"])
            parsed = (parse_shown(parse, row["raw"], ident, row.get("finish_reason"))
                      if ident.get("kind") in kinds and row["raw"] is not None else None)
            if parsed is None:
                skipped += 1
                continue
            seen += 1
            shown, reason = parsed
            new = shown.flipped() if row["swapped"] else shown
            old = Outcome(row["outcome"])
            if new is old and (reason or None) == (row["reason"] or None):
                continue
            if new is not old:
                changes[f"{old.value}->{new.value}"] += 1
            changed.append((row, new, reason))
        if not dry_run:
            for row, new, reason in changed:
                p_a = row["p_a"] if new is Outcome(row["outcome"]) else None
                ledger.update_outcome(row["key"], new, reason, p_a, parser)
        n_out = None
        outp = Path(output) if output else run_dir / "preferences.jsonl"
        if not dry_run:
            n_out = write_preferences(ledger, run_dir, outp)
        n_changed = sum(changes.values())
        print(f"reparse {run_dir} with {parser}: {seen} stored answers re-parsed ({skipped} rows of other judges "
              f"or without an answer left alone), {n_changed} outcomes changed"
              + (f": {', '.join(f'{k} x{v}' for k, v in sorted(changes.items()))}" if changes else "")
              + ("" if n_changed == len(changed) else f", {len(changed) - n_changed} reasons changed")
              + (" (dry run: nothing written)" if dry_run else f"; {n_out} preference rows written to {outp}")
              + "; no judge was called, nothing was paid.", file=out)
        for row, new, reason in [c for c in changed if c[1] is not Outcome(c[0]["outcome"])][:show]:
            print(f"  {row['pair_id'][:12]} round {row['round']} {row['purpose']}: {row['outcome']} -> {new.value}"
                  + (f" ({reason})" if reason else ""), file=out)
        return {"reparsed": seen, "skipped": skipped, "changed": n_changed, "changes": dict(changes),
                "preference_rows": n_out, "output": str(outp)}
    finally:
        ledger.close()


def main(argv: list[str]) -> int:
    run_dir, options = _parse_args(argv)
    try:
        reparse(run_dir, **options)
    except (ReparseError, LedgerError) as e:
        print(f"rlaif reparse: {e}", file=sys.stderr)
        return 2
    return 0
