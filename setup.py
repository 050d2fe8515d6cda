"""Only what pyproject.toml cannot say: a built wheel carries ``conf/`` and ``prompts/``.

They live beside the package in the repository (Hydra's config groups, the judge templates); a
wheel gets copies under ``rlaif/_data/`` (found by :mod:`rlaif.paths`), so an installed rlaif runs
without a checkout.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        for name in ("conf", "prompts"):
            dst = Path(self.build_lib) / "rlaif" / "_data" / name
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(ROOT / name, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithData})
