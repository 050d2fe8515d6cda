"""Labels per second of the ``openai`` oracle through the Labeler, against ``rlaif serve-judge``.

    python benchmarks/bench_oracle_throughput.py [--labels 6000] [--backends lean,aiohttp,httpx]
                                                 [--latency-ms 200] [--concurrency 64]
                                                 [--fault-rate 0.1] [--retry-after 0.1]

The server runs as its own process (``rlaif serve-judge``) answering after ``--latency-ms`` with
``--fault-rate`` of requests failing with 429 (Retry-After) or 500. The bound is C/L: with C
requests in flight and L seconds per answer, no client can exceed C/L labels per second. Checked:
every pair gets a label (zero lost), the server answered each pair exactly once (zero duplicate
paid calls), and the ledger has exactly one row per paid answer.

Printed per ``http_backend`` of the oracle: ``lean`` (aiohttp straight), ``aiohttp`` and ``httpx``
(the openai SDK over either transport), overall and in the steady state (10th to 90th percentile
label, without the first wave's ramp-up and the last retries' drain).

The naive baseline is what the paper's code did: a pool of 10 threads each making synchronous
calls and, on any error, sleeping a fixed time before trying again.
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from rlaif.labels.budget import Budget
from rlaif.labels.labeler import Labeler
from rlaif.labels.ledger import Ledger
from rlaif.oracle import parsing, templates
from rlaif.oracle.openai import OpenAIConfig, OpenAIOracle
from rlaif.oracle.server import pair_from_texts
from rlaif.types import Outcome


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(a: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rlaif", "serve-judge", "--port", str(port), "--latency-ms",
                             str(a.latency_ms), "--fault-rate", str(a.fault_rate), "--fault-kinds", "429,500",
                             "--retry-after", str(a.retry_after), "--seed", "0"])
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{base}/stats", timeout=1)
            return proc, base
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("serve-judge did not start")
            time.sleep(0.2)


def server_cpu_s(proc: subprocess.Popen) -> float:
    """User + system CPU seconds of the server process so far (Linux)."""
    try:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def make_pairs(n: int, tag: str):
    words = ["great", "boring", "wonderful", "awful", "fun", "dull"]
    return [pair_from_texts(f"{tag} review {i}:", f"was {words[i % 6]} {i}", f"was {words[(i + 1) % 6]} {i}")
            for i in range(n)]


def bench_oracle(a: argparse.Namespace, base: str, proc: subprocess.Popen, backend: str) -> dict:
    httpx.post(f"{base}/admin/reset")
    pairs = make_pairs(a.labels, f"async-{backend}")
    oracle = OpenAIOracle(OpenAIConfig(
        base_url=f"{base}/v1", model="rlaif-judge", free=True, api_key_env=None, concurrency=a.concurrency,
        http_backend=backend,
        timeout_s=10, max_attempts=6, backoff_initial_s=0.05, backoff_max_s=1.0, backoff_jitter_s=0.05), task=None)
    with tempfile.TemporaryDirectory(dir=a.ledger_dir) as d:
        ledger = Ledger(Path(d) / "ledger.sqlite")
        labeler = Labeler(oracle, Budget(labels=a.labels), ledger, progress=False)
        labeler.check()
        t0, c0, s0 = time.monotonic(), time.process_time(), server_cpu_s(proc)
        labels = labeler.label(pairs)
        took = time.monotonic() - t0
        cpu, scpu = time.process_time() - c0, server_cpu_s(proc) - s0
        labeler.close()
        rows = ledger.totals()["rows"]
        done = sorted(r["committed_at"] for r in ledger.rows())
        ledger.close()
    # steady state: between the 10th and the 90th percentile label (no ramp-up, no drain)
    lo, hi = int(0.1 * len(done)), int(0.9 * len(done)) - 1
    steady = (hi - lo) / (done[hi] - done[lo]) if len(done) > 10 and done[hi] > done[lo] else float("nan")
    stats = httpx.get(f"{base}/stats").json()
    return {"labels": len(labels), "took": took, "rate": len(labels) / took, "steady": steady,
            "lost": sum(l is None for l in labels), "invalid": sum(l is not None and l.outcome is Outcome.INVALID
                                                                   for l in labels),
            "retried": sum(l is not None and l.attempts > 1 for l in labels), "ledger_rows": rows,
            "gave_up": sum(l is not None and l.outcome is Outcome.INVALID and l.raw is None for l in labels),
            "invalid_reasons": sorted({f"{l.reason} (attempts {l.attempts})" for l in labels
                                       if l is not None and l.outcome is Outcome.INVALID}),
            "client_cpu_ms": 1000 * cpu / len(labels), "server_cpu_ms": 1000 * scpu / len(labels), **stats}


def bench_naive(a: argparse.Namespace, base: str) -> dict:
    """10 threads, synchronous calls, a fixed sleep after any error (the paper's code: 30 s)."""
    import openai

    httpx.post(f"{base}/admin/reset")
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="EMPTY", max_retries=0, timeout=10)
    tpl = templates.load("helpfulness")
    pairs = make_pairs(a.naive_labels, "naive")

    def one(p) -> Outcome:
        while True:
            try:
                r = client.chat.completions.create(model="rlaif-judge", temperature=0.05, max_tokens=128, messages=[
                    {"role": "user", "content": tpl.render(p.prompt.text, p.a.text, p.b.text)}])
                return parsing.parse_verdict(r.choices[0].message.content).outcome
            except openai.OpenAIError:
                time.sleep(a.naive_sleep)

    t0 = time.monotonic()
    with ThreadPoolExecutor(10) as pool:
        out = list(pool.map(one, pairs))
    took = time.monotonic() - t0
    stats = httpx.get(f"{base}/stats").json()
    return {"labels": len(out), "took": took, "rate": len(out) / took, **stats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labels", type=int, default=6000)
    ap.add_argument("--backends", default="lean,aiohttp,httpx",
                    help="the openai oracle's http_backend(s) to measure, comma-separated")
    ap.add_argument("--naive-labels", type=int, default=300)
    ap.add_argument("--naive-sleep", type=float, default=1.0, help="fixed sleep after an error (paper: 30 s)")
    ap.add_argument("--latency-ms", type=float, default=200.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--fault-rate", type=float, default=0.1)
    ap.add_argument("--ledger-dir", default=None, help="where the temporary ledger goes (default: $TMPDIR)")
    ap.add_argument("--retry-after", type=float, default=0.1, help="Retry-After of the injected 429s (s)")
    a = ap.parse_args()
    backends = [b for b in a.backends.split(",") if b]
    proc, base = start_server(a)
    # a process that only labels, like serve-judge only answers: the start-up heap (modules,
    # the SDK) lives as long as the process, so keep it out of every garbage collection
    gc.collect()
    gc.freeze()
    try:
        runs = {b: bench_oracle(a, base, proc, b) for b in backends}
        naive = bench_naive(a, base)
    finally:
        proc.terminate()
        proc.wait(10)
    bound = a.concurrency / (a.latency_ms / 1000)
    naive_bound = 10 / (a.latency_ms / 1000)
    w = 16
    print(f"\nserve-judge: latency {a.latency_ms:g} ms, {a.fault_rate:.0%} of requests fail with 429 "
          f"(Retry-After {a.retry_after:g} s) or 500; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print("openai oracle + Labeler + SQLite ledger, by http_backend; the naive baseline: 10 threads\n")

    def row(name: str, cells: list[str], naive_cell: str = "") -> None:
        print(f"{name:28}" + "".join(f"{c:>{w}}" for c in cells) + f"{naive_cell:>{w}}")

    row("", backends, "naive")
    row("concurrency", [str(a.concurrency)] * len(backends), "10")
    row("labels", [str(r["labels"]) for r in runs.values()], str(naive["labels"]))
    row("seconds", [f"{r['took']:.2f}" for r in runs.values()], f"{naive['took']:.2f}")
    row("labels/s", [f"{r['rate']:.1f}" for r in runs.values()], f"{naive['rate']:.1f}")
    row("bound C/L", [f"{bound:.0f}"] * len(backends), f"{naive_bound:.0f}")
    row("ratio to bound", [f"{r['rate'] / bound:.1%}" for r in runs.values()], f"{naive['rate'] / naive_bound:.1%}")
    row("steady labels/s (p10-p90)", [f"{r['steady']:.1f} ({r['steady'] / bound:.0%})" for r in runs.values()])
    row(f"ratio to C/L = {bound:.0f}", [f"{r['rate'] / bound:.1%}" for r in runs.values()], f"{naive['rate'] / bound:.1%}")
    row("requests / faults", [f"{r['requests']} / {r['requests'] - r['paid']}" for r in runs.values()],
        f"{naive['requests']} / {naive['requests'] - naive['paid']}")
    row("labels retried", [str(r["retried"]) for r in runs.values()])
    row("client CPU ms/label", [f"{r['client_cpu_ms']:.2f}" for r in runs.values()])
    row("server CPU ms/label", [f"{r['server_cpu_ms']:.2f}" for r in runs.values()])
    row("lost labels", [str(r["lost"]) for r in runs.values()])
    row("invalid labels", [str(r["invalid"]) for r in runs.values()])
    row("  all attempts failed", [str(r["gave_up"]) for r in runs.values()])
    row("paid answers / ledger rows", [f"{r['paid']} / {r['ledger_rows']}" for r in runs.values()])
    row("duplicate paid calls", [str(r["duplicate_paid"]) for r in runs.values()], str(naive["duplicate_paid"]))
    for b, r in runs.items():
        for why in r["invalid_reasons"][:5]:
            print(f"{b}: invalid: {why}")
    print()
    for b, r in runs.items():
        # every pair got a label (an invalid one, with its reason, where all attempts failed: at 10%
        # faults, 6 in a row happen to about one pair in a million), and every paid answer is in the
        # ledger exactly once
        safe = (r["lost"] == 0 and r["duplicate_paid"] == 0 and r["labels"] == a.labels
                and r["paid"] == r["ledger_rows"] == r["labels"] - r["gave_up"])
        ok = safe and r["rate"] >= 0.95 * bound
        print(f"{b:8} target >= 95% of C/L with zero lost labels and zero duplicate paid calls: "
              f"{'MET' if ok else 'NOT MET'} ({r['rate'] / bound:.1%}{'' if safe else '; LOST OR DUPLICATE LABELS'})")


if __name__ == "__main__":
    main()
