"""The ``rlaif`` command: one entry point, one subcommand per job (table: :mod:`rlaif.cli.commands`).

    rlaif run [overrides...]              the APL loop (Hydra: group=option, key=value, -m sweeps)
    rlaif bench-oracle [overrides...]     judge leaderboard (Hydra, like run)
    rlaif serve-judge [options]           an OpenAI-compatible judge server backed by a local oracle
    rlaif reparse RUN_DIR [options]       re-parse stored judge answers at zero cost
    rlaif report RUN_DIR... [options]     learning curves, spend curves, label-efficiency table
    rlaif prepare                         build the offline assets (policy, gold model) once

``rlaif COMMAND --help`` (or ``-h``, or ``rlaif help COMMAND``) prints that command's usage and
does nothing else; for the Hydra commands it lists the config groups and every config field with
its help text. ``rlaif -sc install=bash`` prints a bash completion script (:mod:`rlaif.cli.completion`).
"""

from __future__ import annotations

import sys

from rlaif.cli.commands import COMMANDS, call
from rlaif.cli.common import SHELL_COMPLETION_FLAGS

HELP_FLAGS = ("-h", "--help")


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: rlaif COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {c.summary}" for name, c in COMMANDS.items()]
    lines += ["", "rlaif COMMAND --help   that command's usage (Hydra commands: every config field and its help)",
              'eval "$(rlaif -sc install=bash)"   bash completion of commands and overrides']
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in HELP_FLAGS or argv == ["help"]:
        print(usage())
        sys.exit(0 if argv else 2)
    if argv[0] in SHELL_COMPLETION_FLAGS:
        from rlaif.cli.completion import complete

        sys.exit(complete(argv[1:]))
    if argv[0] == "help":  # rlaif help COMMAND = rlaif COMMAND --help
        argv = [argv[1], "--help"]
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"rlaif: unknown command {cmd!r}; commands: {', '.join(COMMANDS)} (rlaif --help)", file=sys.stderr)
        sys.exit(2)
    sys.exit(call(cmd, rest))
