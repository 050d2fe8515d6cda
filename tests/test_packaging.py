"""A built wheel runs without the repository: it carries conf/ and prompts/ (setup.py, rlaif.paths)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

from helpers import ROOT, rlaif


def test_an_installed_wheel_has_the_configs_and_templates(tmp_path):
    src = tmp_path / "src"  # built from a copy: an in-tree build would leave build/ in the checkout
    src.mkdir()
    for f in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(ROOT / f, src / f)
    for d in ("rlaif", "conf", "prompts"):
        shutil.copytree(ROOT / d, src / d, ignore=shutil.ignore_patterns("__pycache__", "_data"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src),
                    "-w", str(tmp_path / "dist")], check=True)
    wheel = next((tmp_path / "dist").glob("rlaif-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for d in ("conf", "prompts"):
        for f in (ROOT / d).rglob("*"):
            if f.is_file() and "__pycache__" not in f.parts:
                assert f"rlaif/_data/{d}/{f.relative_to(ROOT / d)}" in names

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("RLAIF_CONF", None)
    code = ("import rlaif, rlaif.paths as p\n"
            "from rlaif.oracle import templates\n"
            "print(rlaif.__file__, p.CONF_DIR, p.PROMPTS_DIR, templates.load('imdb').name)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0].startswith(str(target)) and out[1] == str(target / "rlaif/_data/conf")
    assert out[2] == str(target / "rlaif/_data/prompts") and out[3] == "imdb"
    # Hydra composes the run's config from the installed copy, away from the checkout
    cfg = rlaif("run", "--cfg", "job", "oracle=openai", cwd=tmp_path, env=env, timeout=120)
    assert cfg.returncode == 0, cfg.stderr[-2000:]
    assert "_target_: rlaif.oracle.openai.OpenAIOracle" in cfg.stdout
