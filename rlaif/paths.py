"""Where the configs (``conf/``) and the judge prompt templates (``prompts/``) are.

In a checkout (and an editable install) they are the repository's own ``conf/`` and ``prompts/``,
beside the package. A built wheel carries copies inside the package (``rlaif/_data/``, put there
by ``setup.py`` at build time), so ``pip install rlaif`` works without the repository.
``RLAIF_CONF`` points the run at another config directory.
"""

from __future__ import annotations

import os
from pathlib import Path

_PKG = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """``conf`` or ``prompts``: the installed copy if the package carries one, else the checkout's."""
    packaged = _PKG / "_data" / name
    return packaged if packaged.is_dir() else _PKG.parent / name


CONF_DIR = Path(os.environ["RLAIF_CONF"]) if os.environ.get("RLAIF_CONF") else data_dir("conf")
PROMPTS_DIR = data_dir("prompts")
