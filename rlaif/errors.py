"""Errors a user causes (bad config, input, budget, judge, ledger, run directory): reported in one line, exit code 2.

Every such error class subclasses :class:`RlaifError` (next to the builtin it always was, e.g.
``class ConfigError(RlaifError, ValueError)``), so :func:`user_errors` needs no list of them.
"""

from __future__ import annotations

import errno
import sqlite3
from typing import Any

# the errors of a file system that is full, read-only or not ours to write
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)


class RlaifError(Exception):
    """Base of the errors a user can fix (config, input, budget, judge, ledger, run directory)."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types reported in one line (a missing file the user named included)."""
    return (RlaifError, FileNotFoundError)


def user_error_message(e: BaseException, run_dir=None) -> str | None:
    """The line to print for an error the user caused (a run directory that is read-only or full
    included, wherever it shows up); None for any other error (a bug: full traceback)."""
    if isinstance(e, user_errors()):
        return str(e)
    return disk_error(e, run_dir)


def disk_error(e: BaseException, run_dir: Any = None) -> str | None:
    """One line for a file system that is read-only, full or not ours to write (None for any other error)."""
    resume = (f"continue the run with resume={run_dir}" if run_dir else "continue the run with resume=RUN_DIR") + \
        " (every label bought so far is kept)"
    if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
        where = f" ({e.filename})" if e.filename else ""
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return f"{e.strerror or 'no space left'}{where}: free some space, then {resume}"
        return f"{e.strerror or e}{where}: make it writable or choose another run directory (hydra.run.dir=...)"
    cause = e.__cause__ or e.__context__
    if not isinstance(e, OSError) and isinstance(cause, BaseException) and cause is not e:
        inner = disk_error(cause, run_dir)  # e.g. a RuntimeError from torch / safetensors around the OSError
        if inner is not None:
            return inner
    text = str(e)
    for words, err in (("No space left on device", errno.ENOSPC), ("Disk quota exceeded", errno.EDQUOT),
                       ("Read-only file system", errno.EROFS)):
        if words in text and not isinstance(e, OSError):
            return disk_error(OSError(err, words), run_dir)
    if isinstance(e, sqlite3.OperationalError):
        msg = str(e)
        if "full" in msg:
            return f"the ledger cannot be written ({msg}): free some space, then {resume}"
        if "readonly" in msg or "read-only" in msg:
            return f"the ledger cannot be written ({msg}): make the run directory writable"
    return None
