"""Shell completion for the ``rlaif`` command (bash, through Hydra's completion plugin).

    eval "$(rlaif -sc install=bash)"        # the same as: eval "$(rlaif run -sc install=bash)"

The installed script completes every word after ``rlaif`` by calling ``rlaif -sc query=bash`` with
the line typed so far in ``COMP_LINE`` (Hydra's ``BashCompletion`` calls back the line's first word).
:func:`complete` answers that call: the subcommand names while the first word is typed; for a
Hydra subcommand, Hydra's own answer for the line without the subcommand word (config groups, their
options, config keys); for an argparse subcommand, its ``--options``.
"""

from __future__ import annotations

import os

from rlaif.cli.commands import COMMANDS, build_parser, call


def complete(args: list[str]) -> int:
    """``rlaif -sc ARGS``: install/uninstall are Hydra's (through ``rlaif run``); a query is answered here."""
    if not any(a.startswith("query=") for a in args):
        return call("run", ["-sc", *args])
    line = os.environ.get("COMP_LINE", "")
    words = line.split()
    if len(words) < 2 or (len(words) == 2 and not line.endswith(" ")):  # still typing the subcommand
        print(" ".join(COMMANDS))
        return 0
    name = words[1]
    if name not in COMMANDS:
        print("")
        return 0
    parser = build_parser(name)
    if parser is None:  # a Hydra app completes the line as if it had been typed to it alone
        os.environ["COMP_LINE"] = " ".join([words[0], *words[2:]]) + (" " if line.endswith(" ") else "")
        return call(name, ["-sc", *args])
    print(" ".join(s for action in parser._actions for s in action.option_strings))
    return 0
