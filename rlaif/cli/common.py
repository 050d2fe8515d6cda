"""What the Hydra subcommands (``rlaif run``, ``rlaif bench-oracle``) share: the environment they set,
the config folder, secret redaction before a config is saved, and running a ``@hydra.main`` app
the way the ``rlaif`` command does (its exit code returned, not raised).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

from rlaif.cli import help
from rlaif.paths import CONF_DIR as _CONF
from rlaif.run.startup import SECRET_WORDS  # one list of secret-looking key names

CONF_DIR = str(_CONF)
SHELL_COMPLETION_FLAGS = ("-sc", "--shell-completion")


def setup_env() -> None:
    """Offline, quiet defaults for the libraries under the loop (each one can still be set by the user)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")


def redact(obj):
    """Drop any literal secret from a config before it is saved (keys are read from the env)."""
    if isinstance(obj, dict):
        return {k: ("<redacted>" if any(w in str(k).lower() for w in SECRET_WORDS) and not str(k).endswith("_env")
                    and v not in (None, "") else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def run_hydra(app: Callable[[], Any], prog: str, args: list[str], config_name: str) -> int:
    """Run a ``@hydra.main`` app on ``args``; returns its exit code (Hydra itself exits, e.g. after --help).

    Hydra reads ``sys.argv``. Its program name is ``prog`` (``rlaif run``: usage lines and errors name
    the subcommand), except for shell completion, where it must be the bare ``rlaif`` command that the
    installed completion script registers and calls back (see :mod:`rlaif.cli.completion`).
    """
    if SHELL_COMPLETION_FLAGS[0] in args or SHELL_COMPLETION_FLAGS[1] in args:
        prog = "rlaif"
    elif "-h" in args or "--help" in args:  # the help page that lists each config field's help text
        help.register()
        # beside the user's overrides: Hydra's argparse takes its overrides as one run of words
        at = next((i for i, a in enumerate(args) if "=" in a and not a.startswith("-")), len(args))
        args = args[:at] + [help.help_override(config_name)] + args[at:]
    sys.argv = [prog] + list(args)
    try:
        app()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (2 if e.code else 0)
    return 0
