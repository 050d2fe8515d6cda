"""What several test files share, defined once: pair builders, two fake judges, the tiny model's run
overrides, and ``rlaif`` (and ``serve-judge``) in a child process.

Fixtures live in ``conftest.py``; this is a plain module (``from helpers import ...``: pytest puts
``tests/`` on ``sys.path``, and a child process that needs it adds it itself).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import httpx
import pytest
from hydra import compose, initialize_config_dir

from rlaif.config import register
from rlaif.oracle.base import Oracle, OracleConfig
from rlaif.types import Completion, Label, Outcome, Pair, Prompt, Spend

ROOT = Path(__file__).resolve().parent.parent


# -- pairs ------------------------------------------------------------------------------------------
def make_pairs(n: int, tag: str = "") -> list[Pair]:
    """``n`` distinct pairs, A "great and good", B "bad" (one to three times), rounds 0-2; ``tag``
    makes another set."""
    out = []
    for i in range(n):
        p = Prompt(f"p{tag}{i}", f"Review {tag}{i}: the film", (7, i))
        out.append(Pair(p, Completion(p, f"was great and good {i}{tag}", (1, i)),
                        Completion(p, f"was bad {i}{tag}" + " bad" * (i % 3), (2, i)), round=i % 3))
    return out


def review_pairs(n: int, seed: int = 1234, rnd: int = 0) -> list[Pair]:
    """``n`` pairs of seeded random review words with a few sentiment words each: a keyword judge
    prefers either side, and the texts (so the request sizes) vary."""
    rng = random.Random(seed)
    pos, neg = ["great", "good", "wonderful", "fun", "moving"], ["bad", "boring", "awful", "dull", "weak"]
    filler = ["the", "plot", "acting", "film", "was", "and", "really", "quite", "story", "ending"]
    out = []
    for i in range(n):
        ptext = f"Review {i}: I watched this movie and"
        p = Prompt(f"p{seed}-{i}", ptext, tuple(ptext.encode()))

        def text() -> str:
            words = [rng.choice(filler) for _ in range(8)] + [rng.choice(pos if rng.random() < 0.5 else neg)
                                                               for _ in range(rng.randint(1, 3))]
            rng.shuffle(words)
            return " ".join(words)

        a, b = text(), text()
        out.append(Pair(p, Completion(p, a, tuple(a.encode())), Completion(p, b, tuple(b.encode())), round=rnd))
    return out


# -- fake judges ------------------------------------------------------------------------------------
@dataclass
class CountingConfig(OracleConfig):
    latency_s: float = 0.005
    invalid_every: int = 0  # every n-th request answers garbage (a paid, unparseable answer)
    fail_first: int = 0  # the first n requests get no answer at all (retries exhausted)
    raise_on: str = ""  # a completion text that makes the call raise


class CountingOracle(Oracle):
    """A free local judge that counts every request it receives, per shown pair."""

    Config = CountingConfig
    kind = "counting"

    def __init__(self, cfg: CountingConfig, **kw) -> None:
        super().__init__(cfg, **kw)
        self.requests: collections.Counter = collections.Counter()
        self.n = 0

    def worst_case(self, pair: Pair) -> Spend:
        return Spend(labels=1, dollars=0.0, tokens=100)

    async def judge_shown(self, shown: Sequence[Pair]) -> list[Label]:
        await asyncio.sleep(self.cfg.latency_s)
        out = []
        for p in shown:
            if self.cfg.raise_on and self.cfg.raise_on in (p.a.text + p.b.text):
                raise ConnectionError("judge went away")
            self.n += 1
            self.requests[(p.prompt.text, p.a.text, p.b.text)] += 1
            if self.n <= self.cfg.fail_first:
                out.append(Label.invalid("gave up after 5 attempts: HTTP 503", attempts=5))
            elif self.cfg.invalid_every and self.n % self.cfg.invalid_every == 0:
                out.append(Label.invalid("no verdict on the final line", raw="hmm, hard to say",
                                         tokens_in=40, tokens_out=5))
            else:
                good = lambda t: t.count("good") - t.count("bad")  # noqa: E731
                out.append(Label(outcome=Outcome.A if good(p.a.text) >= good(p.b.text) else Outcome.B,
                                 raw="Preferred: A" if good(p.a.text) >= good(p.b.text) else "Preferred: B",
                                 tokens_in=40, tokens_out=5))
        return out


@dataclass
class CostlyConfig(OracleConfig):
    max_cost: float = 0.01  # US$ per label, worst case
    max_tokens: int = 500
    latency_s: float = 0.02


class CostlyOracle(Oracle):
    """A paid async judge with random latency and random cost up to its declared worst case."""

    Config = CostlyConfig
    kind = "costly"
    free = False

    def __init__(self, cfg: CostlyConfig, **kw) -> None:
        super().__init__(cfg, **kw)
        self.rng = random.Random(cfg.seed)
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def prices(self) -> dict:
        return {"input": 1.0, "output": 2.0}

    def worst_case(self, pair: Pair) -> Spend:
        return Spend(labels=1, dollars=self.cfg.max_cost, tokens=self.cfg.max_tokens)

    async def judge_shown(self, shown: Sequence[Pair]) -> list[Label]:
        self.calls += len(shown)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.rng.uniform(0, self.cfg.latency_s))
            return [Label(outcome=self.rng.choice([Outcome.A, Outcome.B]), raw="Preferred: A",
                          cost=self.rng.uniform(0.1, 1.0) * self.cfg.max_cost,
                          tokens_in=self.rng.randint(50, 300), tokens_out=self.rng.randint(1, 200))
                    for _ in shown]
        finally:
            self.in_flight -= 1


# -- the config and the tiny model's runs -----------------------------------------------------------
def cfg(*overrides: str):
    """The run's config as ``rlaif run *overrides`` composes it (in this process, nothing run)."""
    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose(config_name="config", overrides=list(overrides))


# a run of the tiny random model that takes seconds a round on a CPU: short completions, one epoch
TINY = ["policy=tiny", "generator=hf", "task.train_prompts=48", "task.eval_prompts=12", "eval.prompts=12",
        "eval.bootstrap=200", "task.max_new_tokens=8", "task.min_new_tokens=4", "trainer.epochs=1",
        "trainer.batch_size=8", "trainer.micro_batch_size=8", "threads=2"]


def tiny(*changes: str) -> list[str]:
    """:data:`TINY` with ``changes`` (``key=value``) in place of its own value of the same key (each key
    once on the command line), other keys added."""
    keys = {c.split("=", 1)[0] for c in changes}
    return [o for o in TINY if o.split("=", 1)[0] not in keys] + list(changes)


# -- child processes --------------------------------------------------------------------------------
def rlaif_env(full_error: bool | None = None, **extra: str) -> dict[str, str]:
    """This process's environment with unbuffered output and ``extra``, for an ``rlaif`` child.

    ``full_error``: Hydra's whole traceback (True: to debug a run that should succeed) or its short
    form (False: what a test of the one-line errors expects, whatever the caller's shell says)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
    if full_error is not None:
        env["HYDRA_FULL_ERROR"] = "1" if full_error else "0"
    return env


def rlaif(*args: str, timeout: float = 300, full_error: bool | None = None, env: dict | None = None,
          cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``python -m rlaif *args`` in a child process, run to its end, output captured as text.
    ``env`` is its whole environment (:func:`rlaif_env` by default)."""
    return subprocess.run([sys.executable, "-m", "rlaif", *args], capture_output=True, text=True, timeout=timeout,
                          env=rlaif_env(full_error) if env is None else env, cwd=cwd)


def rlaif_popen(*args: str, full_error: bool | None = None, env: dict | None = None,
                **popen) -> subprocess.Popen:
    """``python -m rlaif *args`` started in the background from the repository root, text pipes;
    ``popen``: ``stdout``, ``stderr``, ``start_new_session`` ..."""
    return subprocess.Popen([sys.executable, "-m", "rlaif", *args], cwd=ROOT, text=True,
                            env=rlaif_env(full_error) if env is None else env, **popen)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_group(pid: int) -> None:
    """SIGKILL to the process group of ``pid`` (started with ``start_new_session``), if any is left."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextlib.contextmanager
def serve_judge(*flags: str, env: dict | None = None, start_s: float = 60) -> Iterator[str]:
    """``rlaif serve-judge --model-name judge *flags`` on a free port, in a child process; yields its
    base URL (``http://127.0.0.1:PORT``) once it answers, and stops it afterwards."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: a chatty server never blocks on it
        proc = rlaif_popen("serve-judge", "--port", str(port), "--model-name", "judge", *flags, env=env,
                           stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + start_s
            while True:
                try:
                    httpx.get(f"{base}/stats", timeout=1)
                    break
                except httpx.HTTPError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        pytest.fail(f"serve-judge did not start: {log.read()[-2000:]}")
                    time.sleep(0.2)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
