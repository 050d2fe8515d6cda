"""The ``rlaif`` command.

    rlaif run [hydra overrides...]        the APL loop (Hydra app: -m for multirun sweeps)
    rlaif serve-judge [options]           an OpenAI-compatible judge server backed by a local oracle
    rlaif reparse RUN_DIR [overrides]     re-parse stored judge answers at zero cost
    rlaif report RUN_DIR...               learning curves, spend curves, label-efficiency table
    rlaif bench-oracle [hydra overrides]  judge leaderboard: agreement, consistency, cost, latency
    rlaif prepare                         build the offline assets (policy, gold model) once
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "run": ("rlaif.cli.run", "main"),
    "serve-judge": ("rlaif.oracle.server", "main"),
    "reparse": ("rlaif.labels.reparse", "main"),
    "report": ("rlaif.report", "main"),
    "bench-oracle": ("rlaif.bench_oracle", "main"),
    "prepare": ("rlaif.cli.prepare", "main"),
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        sys.exit(0 if argv else 2)
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"rlaif: unknown command {cmd!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    module, func = COMMANDS[cmd]
    # Hydra apps read sys.argv themselves
    sys.argv = [f"rlaif {cmd}"] + rest
    result = getattr(importlib.import_module(module), func)(rest)
    if isinstance(result, int):
        sys.exit(result)
