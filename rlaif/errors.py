"""Errors a user causes (bad config, input, budget, judge, ledger): reported in one line, exit code 2."""

from __future__ import annotations


def user_errors() -> tuple[type[BaseException], ...]:
    from rlaif.budget import BudgetError
    from rlaif.ledger import ConfigChangedError, LedgerError
    from rlaif.oracle.base import OracleError
    from rlaif.registry import ConfigError
    from rlaif.run_state import RunStateError
    from rlaif.tasks import TaskError

    return (ConfigError, BudgetError, TaskError, OracleError, LedgerError, ConfigChangedError, RunStateError,
            FileNotFoundError)
