"""Two runs at once on one shared label store: how many judge calls are paid, and how many twice.

    python benchmarks/shared_store.py                 # PostgreSQL (pgserver) and SQLite, de-dup on and off
    python benchmarks/shared_store.py --pairs 64 --latency 0.2 --concurrency 8

Each run is its own process (a Labeler over its own run ledger, ``shared=`` the store) labelling
the SAME pairs with a judge that answers after ``--latency`` seconds and logs every request it
receives (one line per request, appended by every process to one file: the judge's own count,
whatever the ledgers say). Both start at the same instant. Printed per store: judge calls, distinct
requests, requests paid twice, labels taken from the store, wall time. "off" is the store without
in-flight claims (a plain cache: what rlaif did before).

The ``worker`` subcommand is one run (``tests/test_inflight_dedup.py`` starts it too).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlaif.labels.budget import Budget  # noqa: E402
from rlaif.labels.labeler import Labeler, open_shared  # noqa: E402
from rlaif.labels.ledger import Ledger  # noqa: E402
from rlaif.oracle.base import Oracle, OracleConfig  # noqa: E402
from rlaif.types import Completion, Label, Outcome, Pair, Prompt, Spend  # noqa: E402


@dataclass
class SlowConfig(OracleConfig):
    latency_s: float = 0.2
    calls_log: str = ""  # every request received, one line each (appended by every process)
    hang: bool = False  # never answer (a holder to kill -9)


class SlowJudge(Oracle):
    """A free judge with latency that logs each request before answering it (prefers the longer text)."""

    Config = SlowConfig
    kind = "slow-bench-judge"

    def worst_case(self, pair: Pair) -> Spend:
        return Spend(labels=1, dollars=0.0, tokens=100)

    async def judge_shown(self, shown: Sequence[Pair]) -> list[Label]:
        if self.cfg.calls_log:
            fd = os.open(self.cfg.calls_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, "".join(f"{os.getpid()}\t{p.prompt.text}\t{p.a.text}\t{p.b.text}\n"
                                     for p in shown).encode())
            finally:
                os.close(fd)
        await asyncio.sleep(1e6 if self.cfg.hang else self.cfg.latency_s)
        return [Label(outcome=Outcome.A if len(p.a.text) >= len(p.b.text) else Outcome.B,
                      raw="A" if len(p.a.text) >= len(p.b.text) else "B", tokens_in=40, tokens_out=5) for p in shown]


class NoClaims:
    """A store as it was before in-flight de-duplication: a plain cache (every claim is granted)."""

    def __init__(self, store) -> None:
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def acquire(self, keys):
        return {}, set(keys)  # nothing waited for: every miss of the look-up is bought

    def release(self, keys) -> None:
        pass


def pairs(n: int) -> list[Pair]:
    out = []
    for i in range(n):
        p = Prompt(f"p{i}", f"Review {i}: the film", (7, i))
        out.append(Pair(p, Completion(p, f"was great and good {i}", (1, i)),
                        Completion(p, f"was bad {i}" + " bad" * (i % 3), (2, i)), round=0))
    return out


def worker(a: argparse.Namespace) -> None:
    """One run: label the pairs, then print its figures as one JSON line."""
    store = open_shared(a.store)
    if a.no_dedup:
        store = NoClaims(store)
    oracle = SlowJudge(SlowConfig(latency_s=a.latency, calls_log=a.calls_log, hang=a.hang,
                                  concurrency=a.concurrency))
    ledger = Ledger(Path(a.run_dir) / "ledger.sqlite")
    labeler = Labeler(oracle, Budget(labels=10_000), ledger, progress=False)
    labeler.shared = store  # after construction: a NoClaims wrapper is not a SharedStore
    if a.go_file:  # ready; start when every run is (a file the parent creates)
        Path(f"{a.go_file}.ready.{os.getpid()}").touch()
        while not os.path.exists(a.go_file):
            time.sleep(0.002)
    while time.time() < a.start_at:
        time.sleep(0.005)
    t0 = time.time()
    got = labeler.label(pairs(a.pairs))
    wall = time.time() - t0
    t = ledger.totals()
    labeler.close()
    ledger.close()
    print(json.dumps({"pid": os.getpid(), "labelled": sum(g is not None for g in got), "paid": t["paid"],
                      "cached": t["cached"], "wall_s": round(wall, 3), "t0": t0}), flush=True)


def start_worker(store: str, run_dir: Path, calls_log: Path, *, n: int, latency: float, concurrency: int,
                 start_at: float = 0.0, go_file: str = "", no_dedup: bool = False,
                 hang: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, str(Path(__file__).resolve()), "worker", "--store", store, "--run-dir", str(run_dir),
           "--calls-log", str(calls_log), "--pairs", str(n), "--latency", str(latency),
           "--concurrency", str(concurrency), "--start-at", repr(start_at), "--go-file", go_file]
    cmd += ["--no-dedup"] * no_dedup + ["--hang"] * hang
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def calls(calls_log: Path) -> collections.Counter:
    """Requests the judge received: (prompt, first, second) -> how many times."""
    if not calls_log.exists():
        return collections.Counter()
    return collections.Counter(tuple(line.split("\t")[1:]) for line in calls_log.read_text().splitlines())


def two_runs(store: str, workdir: Path, *, n: int = 64, latency: float = 0.2, concurrency: int = 8,
             no_dedup: bool = False, timeout: float = 120) -> dict:
    """Two runs at once on ``store``: the judge's figures and each run's."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "calls.log"
    go = workdir / "go"  # both import and open their stores first, then start together
    procs = [start_worker(store, workdir / f"run{i}", log, n=n, latency=latency, concurrency=concurrency,
                          go_file=str(go), no_dedup=no_dedup) for i in range(2)]
    deadline = time.monotonic() + timeout
    while len(list(workdir.glob("go.ready.*"))) < 2:
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            for p in procs:
                p.kill()
            raise RuntimeError(f"a worker did not start: {[p.communicate()[1][-2000:] for p in procs]}")
        time.sleep(0.01)
    go.touch()
    runs = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"worker failed ({p.returncode}): {err[-3000:]}")
        runs.append(json.loads(out.strip().splitlines()[-1]))
    c = calls(log)
    return {"judge_calls": sum(c.values()), "distinct": len(c), "paid_twice": sum(1 for v in c.values() if v > 1),
            "from_store": sum(r["cached"] for r in runs), "labelled": [r["labelled"] for r in runs],
            "wall_s": max(r["wall_s"] for r in runs), "runs": runs}


def _print(name: str, r: dict) -> None:
    print(f"{name:<28} {r['judge_calls']:>10} {r['distinct']:>9} {r['paid_twice']:>10} {r['from_store']:>10} "
          f"{str(r['labelled']):>10} {r['wall_s']:>7.2f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, default=8)
    a = ap.parse_args(argv)
    import pgserver

    with tempfile.TemporaryDirectory() as d:
        server = pgserver.get_server(Path(d) / "pg", cleanup_mode="stop")
        print(f"{a.pairs} shared pairs, judge latency {a.latency} s, {a.concurrency} calls in flight per run, "
              "2 runs at once\n")
        print(f"{'store / in-flight de-dup':<28} {'judge calls':>10} {'distinct':>9} {'paid twice':>10} "
              f"{'from store':>10} {'labelled':>10} {'wall s':>7}")
        for i, (kind, dedup) in enumerate([("PostgreSQL", True), ("PostgreSQL", False), ("SQLite", True),
                                           ("SQLite", False)]):
            if kind == "PostgreSQL":
                db = f"bench{i}"
                with __import__("psycopg").connect(server.get_uri(), autocommit=True) as c:
                    c.execute(f"CREATE DATABASE {db}")
                store = server.get_uri(db)
            else:
                store = str(Path(d) / f"cache{i}.sqlite")
            r = two_runs(store, Path(d) / f"w{i}", n=a.pairs, latency=a.latency, concurrency=a.concurrency,
                         no_dedup=not dedup)
            _print(f"{kind} / {'on' if dedup else 'off (before)'}", r)
        server.cleanup()


def _worker_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    for name, typ in (("--store", str), ("--run-dir", str), ("--calls-log", str), ("--pairs", int),
                      ("--latency", float), ("--concurrency", int)):
        ap.add_argument(name, type=typ, required=True)
    ap.add_argument("--start-at", type=float, default=0.0)
    ap.add_argument("--go-file", default="")
    ap.add_argument("--no-dedup", action="store_true")
    ap.add_argument("--hang", action="store_true")
    return ap.parse_args(argv)


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker(_worker_args(sys.argv[2:]))
    else:
        main()
