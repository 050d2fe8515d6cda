"""The table of ``rlaif`` subcommands: where each lives and what kind of command line it reads.

A Hydra subcommand (``run``, ``bench-oracle``) reads Hydra overrides (``key=value``, ``group=option``,
``-m`` sweeps, ``-sc`` completion); every other one is an argparse command whose module has a
``build_parser()``. Every module has ``main(argv) -> int``. Modules are imported only when their
command runs, so ``rlaif --help`` and shell completion stay fast.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    module: str
    summary: str
    hydra: bool = False


COMMANDS = {
    "run": Command("rlaif.cli.run", "the APL loop (Hydra overrides; -m for sweeps)", hydra=True),
    "serve-judge": Command("rlaif.oracle.server", "an OpenAI-compatible judge server backed by a local oracle"),
    "reparse": Command("rlaif.labels.reparse", "re-parse stored judge answers at zero cost"),
    "report": Command("rlaif.report", "learning curves, spend curves, label-efficiency table"),
    "export": Command("rlaif.cli.export", "the preferences of runs as one `datasets` dataset (+ card, parquet, hub)"),
    "bench-oracle": Command("rlaif.bench_oracle", "judge leaderboard: agreement, consistency, cost, latency "
                            "(Hydra overrides)", hydra=True),
    "prepare": Command("rlaif.cli.prepare", "build the offline assets (policy, gold model) once"),
    "fit-rm": Command("rlaif.cli.fit_rm", "a reward model (head ensemble or TRL) from runs' labels, with held-out agreement"),
}


def call(name: str, args: list[str]) -> int:
    """Run subcommand ``name`` on ``args``; its exit code."""
    result = importlib.import_module(COMMANDS[name].module).main(list(args))
    return result if isinstance(result, int) else 0


def build_parser(name: str) -> argparse.ArgumentParser | None:
    """The argparse parser of an argparse subcommand; None for a Hydra one."""
    if COMMANDS[name].hydra:
        return None
    return importlib.import_module(COMMANDS[name].module).build_parser()
