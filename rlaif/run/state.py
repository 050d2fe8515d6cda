"""Per-round state of a run, saved atomically in the run directory, so a killed run can resume.

Layout (under ``RUN_DIR/state/``)::

    state.json                 rounds: acquired / trained (adapter dir) / metrics; config fingerprint
    round_0000.pairs.jsonl     the candidate pairs acquired in round 0 (``Pair.to_dict()`` per line)

Every file is written to a temporary file, fsynced and renamed over the old one, so a reader
never sees half a file. The loop uses it like this::

    fp = label_fingerprint(cfg)                 # the label-changing part of the config (run.fingerprint)
    state = RunState(run_dir)
    state.check_config(fp, ledger=ledger)       # first start: record; resume: refuse on a change
    budget.restore(ledger)                      # dollars / tokens already paid (resume only)
    for r in rounds:
        pairs = state.pairs(r)
        if pairs is None:
            pairs = acquire(rng=np.random.default_rng(round_seed(cfg.seed, r)))
            state.save_pairs(r, pairs)          # BEFORE labelling
        labels = labeler.label(pairs)           # ledger hits are free
        if not state.trained(r):
            train(...); state.mark_trained(r, adapter_dir)
        state.save_metrics(r, metrics)          # rewrites metrics.jsonl, one line per round
    state.mark_finished()

Randomness is derived from (seed, round) (:func:`round_seed`), so no RNG state is pickled. A
resumed run trains no round twice: :class:`PolicyRestorer` brings the policy in memory to the end
of the round it needs, from that round's saved adapter, when it needs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from rlaif.errors import RlaifError
# label_fingerprint (and its error) live in rlaif.run.fingerprint; importable from here as before
from rlaif.run.fingerprint import ConfigChangedError, label_fingerprint, refuse_changed  # noqa: F401
from rlaif.types import Pair, canonical_json

STATE_VERSION = 1

def round_seed(seed: int, round: int, *tags: Any) -> int:
    """A 63-bit seed derived from (seed, round, tags...): the per-round RNG needs no saved state."""
    h = hashlib.sha256(canonical_json([int(seed), int(round), *tags]).encode()).digest()
    return int.from_bytes(h[:8], "big") >> 1


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temporary file + fsync + rename (+ fsync of the directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class RunStateError(RlaifError, RuntimeError):
    pass


class RunState:
    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / "state"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "state.json"
        if self.path.exists():
            try:
                self.data = json.loads(self.path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise RunStateError(f"{self.path} is not valid JSON ({e}); the run state is damaged") from None
            if self.data.get("version") != STATE_VERSION:
                raise RunStateError(f"{self.path}: run state version {self.data.get('version')} is not "
                                    f"{STATE_VERSION}")
        else:
            self.data = {"version": STATE_VERSION, "created_at": time.time(), "config_fingerprint": None,
                         "rounds": {}, "finished": False, "resumes": 0}
        # wall-clock seconds of the run's earlier processes, up to each one's last save (a kill
        # loses the time since then); every save adds this process's time so far
        self.elapsed_before = float(self.data.get("elapsed_s", 0.0))
        self._clock = time.monotonic()

    @property
    def exists(self) -> bool:
        """True when a previous process saved state here (i.e. this is a resume)."""
        return self.path.exists()

    def elapsed(self) -> float:
        """Wall-clock seconds of the whole run so far, earlier processes included."""
        return self.elapsed_before + time.monotonic() - self._clock

    def _save(self) -> None:
        self.data["elapsed_s"] = round(self.elapsed(), 3)
        atomic_write_text(self.path, json.dumps(self.data, indent=1, sort_keys=True, default=str))

    def _round(self, r: int) -> dict:
        return self.data["rounds"].setdefault(str(int(r)), {})

    # -- config ----------------------------------------------------------------------------------
    def check_config(self, fingerprint: dict, ledger: Any = None, *, allow_changed: bool = False) -> bool:
        """Record the label-changing config on first start; on resume refuse a changed one.

        Also records / checks it in ``ledger``'s meta. Returns True when this is a resume (the run
        state or the ledger had a fingerprint already).
        Raises :class:`~rlaif.run.fingerprint.ConfigChangedError` listing each changed key.
        """
        old = self.data.get("config_fingerprint")
        resumed = old is not None
        if resumed and not allow_changed:
            refuse_changed(self.run_dir, old, fingerprint)
        if ledger is not None and resumed:
            self._check_ledger_kept(ledger)
        if ledger is not None:
            resumed = ledger.check_config(fingerprint, allow_changed=allow_changed) or resumed
        if old is None or allow_changed:
            self.data["config_fingerprint"] = json.loads(canonical_json(fingerprint))
        if resumed:
            self.data["resumes"] = int(self.data.get("resumes", 0)) + 1
        self._save()
        return resumed

    def _check_ledger_kept(self, ledger: Any) -> None:
        """A resume whose run state records acquired rounds needs the ledger those labels are in: an
        empty (zero-byte, recreated) or replaced ledger would buy them again and forget their spend."""
        rounds = self.acquired_rounds()
        labels = max([int(m.get("labels", 0) or 0) for m in self.metrics()] or [0])
        if not rounds and not labels:
            return
        if ledger.meta().get("config_fingerprint") is None or (labels and not ledger.totals()["rows"]):
            raise RunStateError(
                f"refusing to resume {self.run_dir}: its run state records {len(rounds)} acquired round(s)"
                + (f" and {labels} labels" if labels else "") + f" but its ledger {ledger.path} is empty or not "
                "this run's, so labels already paid for would be bought again and the budget would forget them; "
                "restore the run's ledger.sqlite, or start a new run")

    @staticmethod
    def check_unchanged(run_dir: str | Path, fingerprint: dict) -> None:
        """The check :meth:`check_config` makes on resume, without writing anything (a start-up check)."""
        path = Path(run_dir) / "state" / "state.json"
        try:
            old = json.loads(path.read_text()).get("config_fingerprint")
        except FileNotFoundError:
            return
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunStateError(f"{path} is not valid JSON ({e}); the run state is damaged") from None
        if old is not None:
            refuse_changed(Path(run_dir), old, fingerprint)

    # -- pairs -----------------------------------------------------------------------------------
    def pairs_path(self, r: int) -> Path:
        return self.dir / f"round_{int(r):04d}.pairs.jsonl"

    def save_pairs(self, r: int, pairs: Sequence[Pair]) -> None:
        """Save the round's acquired candidates (call BEFORE labelling them). Saving again the same
        pairs is a no-op; saving different pairs for a round that has some is refused."""
        text = "".join(json.dumps(p.to_dict(), sort_keys=True) + "\n" for p in pairs)
        path = self.pairs_path(r)
        if path.exists():
            old = self.pairs(r) or []
            if [p.id for p in old] == [p.id for p in pairs]:
                return
            raise RunStateError(f"round {r} already has {len(old)} acquired pairs saved in {path}; refusing to "
                                f"replace them with different ones (that would change the run's labels)")
        atomic_write_text(path, text)
        d = self._round(r)
        d.update({"pairs": path.name, "n_pairs": len(pairs), "acquired_at": time.time(),
                  "pairs_sha256": hashlib.sha256(text.encode()).hexdigest()})
        self._save()

    def pairs(self, r: int) -> list[Pair] | None:
        """The round's saved candidates, or None when it was not acquired yet."""
        path = self.pairs_path(r)
        if not path.exists():
            return None
        out = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                p = Pair.from_dict(d)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise RunStateError(f"{path}:{n}: damaged pair record ({e})") from None
            if d.get("id") not in (None, p.id):
                raise RunStateError(f"{path}:{n}: pair id {d.get('id')} does not match its content ({p.id})")
            out.append(p)
        return out

    def acquired_rounds(self) -> list[int]:
        return sorted(int(p.name[6:10]) for p in self.dir.glob("round_*.pairs.jsonl"))

    # -- training --------------------------------------------------------------------------------
    def mark_trained(self, r: int, adapter_dir: str | Path | None = None, **extra: Any) -> None:
        """Record that round ``r`` finished training (call after the adapter is fully saved)."""
        rel = None
        if adapter_dir is not None:
            a = Path(adapter_dir).resolve()
            try:
                rel = str(a.relative_to(self.run_dir.resolve()))
            except ValueError:
                rel = str(a)
        self._round(r)["trained"] = {"adapter": rel, "at": time.time(), **extra}
        self._save()

    def trained(self, r: int) -> dict | None:
        """``{"adapter": Path|None, "at": ...}`` when round ``r`` finished training (and its adapter
        directory, if one was recorded, still exists), else None."""
        t = self.data["rounds"].get(str(int(r)), {}).get("trained")
        if not t:
            return None
        t = dict(t)
        if t.get("adapter") is not None:
            p = Path(t["adapter"])
            p = p if p.is_absolute() else self.run_dir / p
            if not p.exists():
                return None
            t["adapter"] = p
        return t

    def last_trained(self) -> tuple[int, dict] | None:
        """The latest round whose training finished (and its record), or None."""
        done = [int(r) for r, d in self.data["rounds"].items() if d.get("trained")]
        for r in sorted(done, reverse=True):
            t = self.trained(r)
            if t is not None:
                return r, t
        return None

    # -- metrics ---------------------------------------------------------------------------------
    def save_metrics(self, r: int, metrics: dict, file: str | None = "metrics.jsonl") -> None:
        """Store round ``r``'s metrics line and rewrite ``RUN_DIR/<file>`` atomically with one line per
        round in round order (a resumed round replaces its line instead of duplicating it)."""
        self._round(r)["metrics"] = json.loads(json.dumps(metrics, default=str))
        self._save()
        if file:
            atomic_write_text(self.run_dir / file,
                              "".join(json.dumps(m, sort_keys=True) + "\n" for m in self.metrics()))

    def metrics(self) -> list[dict]:
        return [d["metrics"] for r, d in sorted(self.data["rounds"].items(), key=lambda kv: int(kv[0]))
                if "metrics" in d]

    def metrics_of(self, r: int) -> dict | None:
        return self.data["rounds"].get(str(int(r)), {}).get("metrics")

    # -- whole run -------------------------------------------------------------------------------
    def mark_finished(self, **info: Any) -> None:
        self.data["finished"] = True
        self.data["finished_at"] = time.time()
        self.data.setdefault("info", {}).update(info)
        self._save()

    @property
    def finished(self) -> bool:
        return bool(self.data.get("finished"))

    def put(self, key: str, value: Any) -> None:
        """Free-form small state (JSON-serialisable) the loop wants to keep across a resume."""
        self.data.setdefault("extra", {})[key] = value
        self._save()

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get("extra", {}).get(key, default)


class PolicyRestorer:
    """Which round's trained policy is in memory, and bringing it to the end of a round on resume.

    A fresh process holds the reference (round 0). Rounds an earlier process finished are not
    trained again, so before the policy is next *used* it is restored from the adapter of the round
    it should be at (``restore(round, adapter_dir)``: the caller's loading of the weights):

    - before acquiring round r (the arm samples from the policy of round r - 1): ``bring_to(r - 1)``;
    - before training round r in ``continue`` mode (it trains on from round r - 1): ``bring_to(r - 1)``;
    - after training round r: ``trained(r)``;
    - when the run stops at round r: ``at_end(r)`` (the saved model is the last trained round's).

    A round with no saved adapter is left as it is (nothing to restore).
    """

    def __init__(self, state: RunState, restore: Callable[[int, Path], None]) -> None:
        self.state, self._restore = state, restore
        self.round = 0

    def bring_to(self, r: int) -> None:
        if self.round < r:
            self._load(r)
            self.round = r

    def trained(self, r: int) -> None:
        self.round = r

    def at_end(self, r: int) -> None:
        if self.round < r - 1 and (last := self.state.last_trained()) is not None:
            self._load(last[0])

    def _load(self, r: int) -> None:
        t = self.state.trained(r)
        if t is not None and t.get("adapter") is not None:
            self._restore(r, t["adapter"])
