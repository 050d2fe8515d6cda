"""The one ``rlaif`` command: every subcommand's --help (usage, exit 0, no work), Hydra help pages with
each config field's help text, argparse ``reparse`` with its old key=value words, bash completion."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from rlaif.cli.commands import COMMANDS
from rlaif.cli.help import annotated_yaml, field_help
from rlaif.config import BudgetConfig, RunConfig
from rlaif.labels.reparse import DEFAULT_PARSER, _parse_args

from helpers import ROOT, rlaif


def squash(text: str) -> str:
    return " ".join(text.split())


def test_top_level_help_lists_every_subcommand():
    for flag in ("--help", "-h", "help"):
        r = rlaif(flag)
        assert r.returncode == 0, r.stderr
        assert all(name in r.stdout for name in COMMANDS)
    assert rlaif().returncode == 2
    r = rlaif("nope")
    assert r.returncode == 2 and "unknown command 'nope'" in r.stderr


@pytest.mark.parametrize("name", [n for n, c in COMMANDS.items() if not c.hydra])
def test_argparse_subcommand_help(name):
    for args in ([name, "--help"], [name, "-h"], ["help", name]):
        r = rlaif(*args)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"usage: rlaif {name}")


def test_prepare_help_does_not_prepare(monkeypatch, capsys):
    import rlaif.assets
    from rlaif.cli.prepare import main

    monkeypatch.setattr(rlaif.assets, "smollm2_dir", lambda: pytest.fail("--help must not build assets"))
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "usage: rlaif prepare" in capsys.readouterr().out


def test_run_help_shows_config_fields_help():
    r = rlaif("run", "--help")
    assert r.returncode == 0, r.stderr
    out = squash(r.stdout)
    assert "usage: rlaif run" in out and re.search(r"oracle: [a-z_, ]*local_llm, openai", out)
    for name, text in field_help(BudgetConfig).items():
        assert f"{name}:" in out and squash(text) in out
    # an override picks what the page shows: the openai judge's own fields and their help
    from rlaif.oracle.openai import OpenAIOracle

    r = rlaif("run", "oracle=openai", "-h")
    assert r.returncode == 0, r.stderr
    section = re.split(r"\noracle:(?: +#.*)?\n", r.stdout, maxsplit=1)[1].split("\ntrainer:", 1)[0]  # the config, not the group list
    shown = {k: t for k, t in field_help(OpenAIOracle.Config).items() if f"  {k}: " in section}
    assert len(shown) > 10 and all(squash(t) in squash(section) for t in shown.values())
    assert "price_input_per_mtok: null" in r.stdout


def test_bench_oracle_help_and_sweep_words():
    r = rlaif("bench-oracle", "--help")
    assert r.returncode == 0, r.stderr
    assert "usage: rlaif bench-oracle" in r.stdout and "n_pairs: 200" in r.stdout
    from rlaif.oracle.simulated import SimulatedOracle

    assert squash(field_help(SimulatedOracle.Config)["flip_rate"]) in squash(r.stdout)


def test_annotated_yaml_keeps_values_and_adds_help():
    lines = annotated_yaml({"threads": None, "seed": 3, "budget": {"labels": 5, "max_rounds": None},
                            "eval": {"tags": ["a", "b"]}, "task": {"rubric": "two\nlines"}}, RunConfig)
    text = "\n".join(lines)
    assert "threads: null" in text and "# " + squash(field_help(RunConfig)["threads"]) in text
    assert "  labels: 5" in text and "  max_rounds: null" in text
    import yaml

    assert yaml.safe_load(text) == {"threads": None, "seed": 3, "budget": {"labels": 5, "max_rounds": None},
                                    "eval": {"tags": ["a", "b"]}, "task": {"rubric": "two\nlines"}}


def test_reparse_options_and_old_key_value_words(tmp_path):
    run, opts = _parse_args([str(tmp_path)])
    assert run == tmp_path and opts == {"parser": DEFAULT_PARSER, "kinds": ("openai", "vllm"), "ledger_path": None,
                                        "output": None, "dry_run": False, "show": 20}
    old = _parse_args([str(tmp_path), "parser=m:f", "dry_run=true", "show=3", "kinds=openai", "oracle.ledger=L"])
    new = _parse_args([str(tmp_path), "--parser", "m:f", "--dry-run", "--show", "3", "--kinds", "openai",
                       "--ledger=L"])
    assert old == new and new[1]["dry_run"] is True and new[1]["show"] == 3 and new[1]["ledger_path"] == "L"
    for bad in (["show=x"], ["colour=red"], ["loose"]):
        with pytest.raises(SystemExit) as e:
            _parse_args([str(tmp_path), *bad])
        assert e.value.code == 2


def test_reparse_cli_errors():
    r = rlaif("reparse")
    assert r.returncode == 2 and "RUN_DIR" in r.stderr
    r = rlaif("reparse", "/nonexistent/run", "dry_run=true")
    assert r.returncode == 2 and "not a run directory" in r.stderr


# -- bash completion, run the way the installed script runs it ------------------------------------
@pytest.fixture(scope="module")
def completion(tmp_path_factory):
    """``complete_line(LINE)``: what bash completes for LINE after ``eval "$(rlaif run -sc install=bash)"``."""
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    shim = tmp_path_factory.mktemp("bin") / "rlaif"  # `rlaif` on PATH, as an installed entry point is
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m rlaif \"$@\"\n")
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}"}
    script = subprocess.run(["rlaif", "run", "-sc", "install=bash"], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=120)
    assert script.returncode == 0, script.stderr
    assert "complete -o nospace -o default -F hydra_bash_completion rlaif" in script.stdout

    def complete_line(line: str) -> list[str]:
        words = line.split()
        cword = len(words) if line.endswith(" ") else len(words) - 1
        body = (f"{script.stdout}\nCOMP_LINE={line!r}; COMP_POINT=${{#COMP_LINE}}; COMP_CWORD={cword}\n"
                'hydra_bash_completion; printf "%s\\n" "${COMPREPLY[@]}"\n')
        r = subprocess.run(["bash", "-c", body], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
        assert r.returncode == 0, r.stderr
        return [w for w in r.stdout.split("\n") if w]

    return complete_line


def test_completion_of_run_overrides(completion):
    oracles = sorted(p.stem for p in (ROOT / "conf" / "oracle").glob("*.yaml"))
    assert completion("rlaif run oracle=") == [f"oracle={o}" for o in oracles]
    assert "budget.labels=" in completion("rlaif run budget.lab")
    assert completion("rlaif bench-oracle -m oracle=sim") == ["oracle=simulated"]


def test_completion_of_subcommands_and_options(completion):
    assert completion("rlaif re") == ["reparse", "report"]
    assert completion("rlaif report --bo") == ["--bootstrap"]
