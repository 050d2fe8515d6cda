"""Errors a user causes (bad config, input, budget, judge, ledger, run directory): reported in one line, exit code 2."""

from __future__ import annotations


def user_errors() -> tuple[type[BaseException], ...]:
    from rlaif.labels.budget import BudgetError
    from rlaif.labels.ledger import ConfigChangedError, LedgerError
    from rlaif.oracle.base import OracleError
    from rlaif.registry import ConfigError
    from rlaif.run.state import RunStateError
    from rlaif.run.startup import RunDirError
    from rlaif.tasks import TaskError

    return (ConfigError, BudgetError, TaskError, OracleError, LedgerError, ConfigChangedError, RunStateError,
            RunDirError, FileNotFoundError)


def user_error_message(e: BaseException, run_dir=None) -> str | None:
    """The line to print for an error the user caused (a run directory that is read-only or full
    included, wherever it shows up); None for any other error (a bug: full traceback)."""
    from rlaif.run.startup import disk_error

    if isinstance(e, user_errors()):
        return str(e)
    return disk_error(e, run_dir)
